//! The log on NATS JetStream: one stream, optimistic appends with
//! `Nats-Expected-Last-Subject-Sequence`, de-duplication with `Nats-Msg-Id`, and ordered
//! consumers for reading and following.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, context::PublishErrorKind, stream};
use futures::StreamExt;

use crate::{AppendOutcome, EventLog, EventStream, Headers, LogError, NewEvent, RecordedEvent, check_subject};

#[derive(Clone, Debug)]
pub struct NatsLogConfig {
    pub stream: String,
    pub subjects: Vec<String>,
    /// 3 on a production cluster.
    pub replicas: usize,
}

impl Default for NatsLogConfig {
    fn default() -> Self {
        NatsLogConfig { stream: "CORRAL".into(), subjects: vec!["corral.>".into()], replicas: 1 }
    }
}

#[derive(Clone)]
pub struct NatsLog {
    js: jetstream::Context,
    stream: stream::Stream,
}

fn unavailable(e: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(e.to_string())
}

fn user_headers(h: Option<&HeaderMap>) -> Headers {
    let mut out: Headers = h
        .map(|h| {
            h.iter()
                .filter(|(k, _)| !k.to_string().starts_with("Nats-"))
                .flat_map(|(k, vs)| vs.iter().map(move |v| (k.to_string(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn recorded(m: &jetstream::Message) -> Result<RecordedEvent, LogError> {
    let info = m.info().map_err(|e| LogError::Storage(format!("message without stream info: {e}")))?;
    Ok(RecordedEvent {
        seq: info.stream_sequence,
        subject: m.message.subject.to_string(),
        headers: user_headers(m.message.headers.as_ref()),
        payload: m.message.payload.clone(),
        time: info.published,
    })
}

impl NatsLog {
    pub async fn connect(url: &str, config: NatsLogConfig) -> Result<NatsLog, LogError> {
        let client = async_nats::connect(url).await.map_err(unavailable)?;
        Self::new(client, config).await
    }

    /// Opens the stream, creating it if missing: file storage, the configured replicas, a
    /// 2-minute duplicate window and direct gets.
    pub async fn new(client: async_nats::Client, config: NatsLogConfig) -> Result<NatsLog, LogError> {
        let js = jetstream::new(client);
        let stream = js
            .get_or_create_stream(stream::Config {
                name: config.stream.clone(),
                subjects: config.subjects.clone(),
                storage: stream::StorageType::File,
                num_replicas: config.replicas,
                duplicate_window: Duration::from_secs(120),
                allow_direct: true,
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        Ok(NatsLog { js, stream })
    }

    async fn ordered_from(&self, from_seq: u64) -> Result<consumer::pull::Ordered, LogError> {
        let consumer = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: from_seq.max(1) },
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        consumer.messages().await.map_err(unavailable)
    }
}

#[async_trait::async_trait]
impl EventLog for NatsLog {
    async fn append(&self, event: NewEvent) -> Result<AppendOutcome, LogError> {
        check_subject(&event.subject)?;
        let mut headers = HeaderMap::new();
        for (k, v) in &event.headers {
            headers.insert(k.as_str(), v.as_str());
        }
        if !event.msg_id.is_empty() {
            headers.insert("Nats-Msg-Id", event.msg_id.as_str());
        }
        if let Some(expected) = event.expected_subject_seq {
            headers.insert("Nats-Expected-Last-Subject-Sequence", expected.to_string());
        }
        let ack = self
            .js
            .publish_with_headers(event.subject.clone(), headers, event.payload)
            .await
            .map_err(unavailable)?
            .await;
        match ack {
            Ok(a) => Ok(AppendOutcome { seq: a.sequence, duplicate: a.duplicate }),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Err(LogError::Conflict {
                subject: event.subject,
                expected: event.expected_subject_seq.unwrap_or_default(),
            }),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn last_seq(&self) -> Result<u64, LogError> {
        Ok(self.stream.get_info().await.map_err(unavailable)?.state.last_sequence)
    }

    async fn last_subject_seq(&self, subject: &str) -> Result<u64, LogError> {
        match self.stream.get_last_raw_message_by_subject(subject).await {
            Ok(m) => Ok(m.sequence),
            Err(e) if matches!(e.kind(), stream::LastRawMessageErrorKind::NoMessageFound) => Ok(0),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn read(&self, from_seq: u64, max: usize) -> Result<Vec<RecordedEvent>, LogError> {
        let upto = self.last_seq().await?;
        let from = from_seq.max(1);
        if from > upto || max == 0 {
            return Ok(Vec::new());
        }
        let mut messages = self.ordered_from(from).await?;
        let mut out = Vec::new();
        while let Some(m) = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .map_err(|_| LogError::Unavailable("timed out reading the stream".into()))?
        {
            let ev = recorded(&m.map_err(unavailable)?)?;
            let seq = ev.seq;
            if seq > upto {
                break;
            }
            out.push(ev);
            if seq >= upto || out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    async fn subscribe(&self, from_seq: u64) -> Result<EventStream, LogError> {
        let messages = self.ordered_from(from_seq).await?;
        Ok(messages.map(|m| m.map_err(unavailable).and_then(|m| recorded(&m))).boxed())
    }
}

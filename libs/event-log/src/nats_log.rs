//! The log on NATS JetStream: one stream, optimistic appends with
//! `Nats-Expected-Last-Subject-Sequence`, de-duplication with `Nats-Msg-Id`, and ordered
//! consumers for reading and following.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, context::PublishErrorKind, stream};
use futures::StreamExt;
use tracing::Instrument as _;

use crate::{AppendOutcome, EventLog, EventStream, Headers, LogError, NewEvent, RecordedEvent, check_subject};

#[derive(Clone, Debug)]
pub struct NatsLogConfig {
    pub stream: String,
    pub subjects: Vec<String>,
    /// 3 on a production cluster.
    pub replicas: usize,
    /// Events older than this are removed; `None` keeps every event.
    pub max_age: Option<Duration>,
}

impl Default for NatsLogConfig {
    fn default() -> Self {
        NatsLogConfig { stream: "CORRAL".into(), subjects: vec!["corral.>".into()], replicas: 1, max_age: None }
    }
}

/// How long a JetStream request or publish waits for its answer. While a stream elects a new
/// leader nothing answers; a short wait lets the caller retry (appends carry ids, so a retry of
/// one that landed is dropped as a duplicate) as soon as the new leader serves, instead of
/// waiting out async-nats' 5 s default per attempt.
pub const JETSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one pull of a follower's consumer waits on the server (its heartbeat is half).
const FOLLOW_PULL_EXPIRY: Duration = Duration::from_secs(3);

/// The duplicate window JetStream keeps message ids for; never longer than the retention.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct NatsLog {
    js: jetstream::Context,
    stream: stream::Stream,
    /// `$JS.API.STREAM.INFO.<stream>`: asked by every linearizable read.
    info_subject: async_nats::Subject,
}

/// The part of a stream info answer that [`EventLog::last_seq`] reads.
#[derive(serde::Deserialize)]
struct StreamInfoLastSeq {
    state: Option<StreamLastSeq>,
    error: Option<ApiError>,
}

#[derive(serde::Deserialize)]
struct StreamLastSeq {
    last_seq: u64,
    #[serde(default)]
    first_seq: u64,
}

#[derive(serde::Deserialize)]
struct ApiError {
    #[serde(default)]
    code: u64,
    #[serde(default)]
    description: String,
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

/// The message's headers: the event's own, with the current span's trace context (the append's
/// producer span) in place of theirs, so that whoever applies the event can link to the append.
fn publish_headers(event: &NewEvent) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (k, v) in &event.headers {
        headers.insert(k.as_str(), v.as_str());
    }
    corral_telemetry::trace::inject_nats(&tracing::Span::current(), &mut headers);
    if !event.msg_id.is_empty() {
        headers.insert("Nats-Msg-Id", event.msg_id.as_str());
    }
    if let Some(expected) = event.expected_subject_seq {
        headers.insert("Nats-Expected-Last-Subject-Sequence", expected.to_string());
    }
    headers
}

fn publish_error(e: jetstream::context::PublishError, subject: &str, expected: Option<u64>) -> LogError {
    /// The server's code for an atomic batch holding an id it has already stored.
    const BATCH_DUPLICATE_MSG_ID: u64 = 10201;
    /// The server's code for a message whose id another publisher is storing at this moment.
    const DUPLICATE_MSG_ID_IN_PROCESS: u64 = 10158;
    let code =
        std::error::Error::source(&e).and_then(|s| s.downcast_ref::<jetstream::Error>()).map(|j| j.error_code().0);
    // Another writer storing the same message now is a lost race, like a wrong last sequence.
    if e.kind() == PublishErrorKind::WrongLastSequence || code == Some(DUPLICATE_MSG_ID_IN_PROCESS) {
        LogError::Conflict { subject: subject.to_string(), expected: expected.unwrap_or_default() }
    } else if code == Some(BATCH_DUPLICATE_MSG_ID) {
        LogError::DuplicateBatch
    } else {
        unavailable(e)
    }
}

impl NatsLog {
    /// The stream's state, from its leader.
    async fn state(&self) -> Result<StreamLastSeq, LogError> {
        let request = async_nats::Request::new().timeout(Some(JETSTREAM_TIMEOUT));
        let reply = self.js.client().send_request(self.info_subject.clone(), request).await.map_err(unavailable)?;
        let info: StreamInfoLastSeq = serde_json::from_slice(&reply.payload)
            .map_err(|e| LogError::Unavailable(format!("unreadable stream info: {e}")))?;
        match (info.state, info.error) {
            (_, Some(e)) => Err(LogError::Unavailable(format!("stream info: {} (code {})", e.description, e.code))),
            (Some(state), None) => Ok(state),
            (None, None) => Err(LogError::Unavailable("stream info without a state".into())),
        }
    }

    pub async fn connect(url: &str, config: NatsLogConfig) -> Result<NatsLog, LogError> {
        let client = async_nats::connect(url).await.map_err(unavailable)?;
        Self::new(client, config).await
    }

    /// Opens the stream, creating it if missing: file storage, the configured replicas, a
    /// 2-minute duplicate window, direct gets and atomic batches.
    pub async fn new(client: async_nats::Client, config: NatsLogConfig) -> Result<NatsLog, LogError> {
        crate::metrics::register();
        let js = jetstream::ContextBuilder::new().timeout(JETSTREAM_TIMEOUT).build(client);
        // JetStream's "no limit" is zero.
        let max_age = config.max_age.unwrap_or(Duration::ZERO);
        let mut stream = js
            .get_or_create_stream(stream::Config {
                name: config.stream.clone(),
                subjects: config.subjects.clone(),
                storage: stream::StorageType::File,
                num_replicas: config.replicas,
                duplicate_window: DUPLICATE_WINDOW.min(max_age.max(Duration::from_secs(1))),
                max_age,
                allow_direct: true,
                allow_atomic_publish: true,
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        // A stream made before atomic batches were used gets them switched on, and one made with
        // another retention gets the configured one.
        let current = &stream.cached_info().config;
        if !current.allow_atomic_publish || current.max_age != max_age {
            let mut updated = current.clone();
            updated.allow_atomic_publish = true;
            updated.max_age = max_age;
            updated.duplicate_window = DUPLICATE_WINDOW.min(max_age.max(Duration::from_secs(1)));
            js.update_stream(updated).await.map_err(unavailable)?;
            stream = js.get_stream(&config.stream).await.map_err(unavailable)?;
        }
        let info_subject = format!("$JS.API.STREAM.INFO.{}", config.stream).into();
        Ok(NatsLog { js, stream, info_subject })
    }

    /// The stored events from `from_seq` on, then the new ones, of the subjects in `filters`
    /// (all when empty).
    async fn follow(&self, from_seq: u64, filters: &[String]) -> Result<EventStream, LogError> {
        let messages = self.ordered_from(from_seq, filters).await?;
        Ok(messages.map(|m| m.map_err(unavailable).and_then(|m| recorded(&m))).boxed())
    }

    /// An ordered consumer from `from_seq`, of the subjects in `filters` (all when empty).
    async fn ordered_from(&self, from_seq: u64, filters: &[String]) -> Result<consumer::pull::Ordered, LogError> {
        let consumer = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: from_seq.max(1) },
                filter_subjects: filters.to_vec(),
                // The client asks the server for a heartbeat every half of a pull's expiry and
                // makes the consumer again after two are missed: with async-nats' 30 s pulls a
                // follower whose consumer was on a node that died stood still for half a
                // minute; with these it resumes within seconds.
                max_expires: FOLLOW_PULL_EXPIRY,
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        consumer.messages().await.map_err(unavailable)
    }

    /// The producer span of an append: one message (its id) or a batch (its size).
    fn send_span(&self, message_id: Option<&str>, count: usize) -> tracing::Span {
        let stream = &self.stream.cached_info().config.name;
        let span = tracing::info_span!(
            "send",
            otel.name = %format_args!("send {stream}"),
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.operation.type = "send",
            messaging.operation.name = "publish",
            messaging.destination.name = stream.as_str(),
            messaging.message.id = tracing::field::Empty,
            messaging.batch.message_count = tracing::field::Empty,
        );
        match message_id {
            Some(id) => span.record("messaging.message.id", id),
            None => span.record("messaging.batch.message_count", corral_telemetry::trace::int(count)),
        };
        span
    }

    async fn publish_one(&self, event: NewEvent) -> Result<AppendOutcome, LogError> {
        let _timer = crate::metrics::AppendTimer::start("jetstream");
        check_subject(&event.subject)?;
        let headers = publish_headers(&event);
        let ack = self
            .js
            .publish_with_headers(event.subject.clone(), headers, event.payload)
            .await
            .map_err(unavailable)?
            .await;
        ack.map(|a| AppendOutcome { seq: a.sequence, duplicate: a.duplicate })
            .map_err(|e| publish_error(e, &event.subject, event.expected_subject_seq))
    }

    async fn publish_batch(&self, mut events: Vec<NewEvent>) -> Result<Vec<AppendOutcome>, LogError> {
        if events.len() <= 1 {
            return match events.pop() {
                Some(e) => Ok(vec![self.publish_one(e).await?]),
                None => Ok(Vec::new()),
            };
        }
        let _timer = crate::metrics::AppendTimer::start("jetstream");
        for e in &events {
            check_subject(&e.subject)?;
        }
        // An atomic batch (ADR-50): the server stages every message and answers only the commit,
        // with the sequence of the last one. Earlier messages go out as plain publishes on the
        // same connection, which keeps them in order ahead of the commit.
        let batch_id = uuid::Uuid::new_v4().simple().to_string();
        let count = events.len();
        let (first_subject, first_expected) = (events[0].subject.clone(), events[0].expected_subject_seq);
        let batch_headers = |event: &NewEvent, i: usize| {
            let mut headers = publish_headers(event);
            headers.insert("Nats-Batch-Id", batch_id.as_str());
            headers.insert("Nats-Batch-Sequence", (i + 1).to_string());
            headers
        };
        let commit = events.pop().ok_or_else(|| LogError::Invalid("empty batch".into()))?;
        let client = self.js.client();
        for (i, event) in events.into_iter().enumerate() {
            let headers = batch_headers(&event, i);
            client.publish_with_headers(event.subject, headers, event.payload).await.map_err(unavailable)?;
        }
        let mut headers = batch_headers(&commit, count - 1);
        headers.insert("Nats-Batch-Commit", "1");
        let pending =
            self.js.publish_with_headers(commit.subject, headers, commit.payload).await.map_err(unavailable)?;
        let ack = pending.await.map_err(|e| publish_error(e, &first_subject, first_expected))?;
        // A batch repeating a stored id is refused (DuplicateBatch), so an answer means stored.
        let stored = ack.batch_size.unwrap_or(count as u64);
        if stored != count as u64 {
            return Err(LogError::Storage(format!("batch of {count} stored as {stored}")));
        }
        let first = ack.sequence + 1 - count as u64;
        Ok((first..=ack.sequence).map(|seq| AppendOutcome { seq, duplicate: false }).collect())
    }

    /// Pipelined: every message goes out before the first acknowledgement is awaited; the server
    /// checks each against the one before it, in order.
    async fn publish_expecting(&self, expected_last_seq: u64, events: Vec<NewEvent>) -> Result<(), LogError> {
        let _timer = crate::metrics::AppendTimer::start("jetstream");
        let mut acks = Vec::with_capacity(events.len());
        for (i, event) in events.into_iter().enumerate() {
            check_subject(&event.subject)?;
            let mut headers = publish_headers(&event);
            headers.insert("Nats-Expected-Last-Sequence", (expected_last_seq + i as u64).to_string());
            let ack = self
                .js
                .publish_with_headers(event.subject.clone(), headers, event.payload)
                .await
                .map_err(unavailable)?;
            acks.push((event.subject, ack));
        }
        for (i, (subject, ack)) in acks.into_iter().enumerate() {
            ack.await.map_err(|e| publish_error(e, &subject, Some(expected_last_seq + i as u64)))?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl EventLog for NatsLog {
    async fn append(&self, event: NewEvent) -> Result<AppendOutcome, LogError> {
        let span = self.send_span(Some(&event.msg_id), 1);
        self.publish_one(event).instrument(span).await
    }

    async fn append_batch(&self, events: Vec<NewEvent>) -> Result<Vec<AppendOutcome>, LogError> {
        let span = match events.as_slice() {
            [one] => self.send_span(Some(&one.msg_id), 1),
            _ => self.send_span(None, events.len()),
        };
        self.publish_batch(events).instrument(span).await
    }

    async fn append_expecting(&self, expected_last_seq: u64, events: Vec<NewEvent>) -> Result<(), LogError> {
        let span = self.send_span(None, events.len());
        self.publish_expecting(expected_last_seq, events).instrument(span).await
    }

    /// A subscriber still behind after subscribing again may be on a connection that no longer
    /// carries anything (a frozen server keeps its sockets open): a new connection, to a server
    /// the client picks at random, is the one other thing it can try.
    async fn reconnect(&self) {
        if let Err(e) = self.js.client().force_reconnect().await {
            tracing::warn!(error = %e, "cannot reconnect to NATS");
        }
    }

    /// The server stages an atomic batch in memory, except on a one-replica file stream, where
    /// it makes a file store per batch: a few milliseconds each.
    fn batches_are_cheap(&self) -> bool {
        let config = &self.stream.cached_info().config;
        config.num_replicas > 1 || config.storage == stream::StorageType::Memory
    }

    /// From the stream's leader, which answers stream info. Only the last sequence is read out
    /// of the answer: parsing all of it (configuration, state, cluster) was a third of a
    /// gateway's work for a Get.
    async fn last_seq(&self) -> Result<u64, LogError> {
        Ok(self.state().await?.last_seq)
    }

    /// JetStream answers 0 for a stream that never held a message.
    async fn first_seq(&self) -> Result<u64, LogError> {
        let state = self.state().await?;
        Ok(if state.last_seq == 0 { 1 } else { state.first_seq.max(1) })
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
        if max == 1 {
            // One event: asked of the stream's leader, with no consumer to create (a watch
            // looks up where to start this way, and a thousand at once must not make a thousand).
            return match self.stream.get_first_raw_message_by_subject(">", from).await {
                Ok(m) => Ok(vec![RecordedEvent {
                    seq: m.sequence,
                    subject: m.subject.to_string(),
                    headers: user_headers(Some(&m.headers)),
                    payload: m.payload,
                    time: m.time,
                }]),
                Err(e) if matches!(e.kind(), stream::RawMessageErrorKind::NoMessageFound) => Ok(Vec::new()),
                Err(e) => Err(unavailable(e)),
            };
        }
        let mut messages = self.ordered_from(from, &[]).await?;
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
        self.follow(from_seq, &[]).await
    }

    async fn subscribe_matching(&self, from_seq: u64, filters: &[String]) -> Result<EventStream, LogError> {
        crate::check_filters(filters)?;
        self.follow(from_seq, filters).await
    }

    /// The last message of each filter (wildcards included), read from the stream's leader, so
    /// every acknowledged append is seen.
    async fn last_seq_matching(&self, filters: &[String]) -> Result<u64, LogError> {
        crate::check_filters(filters)?;
        let mut last = 0;
        for filter in filters {
            last = last.max(self.last_subject_seq(filter).await?);
        }
        Ok(last)
    }
}

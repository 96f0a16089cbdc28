use std::sync::Arc;

use corral_event_log::{EventLog, NatsLog, NatsLogConfig};
use corral_test_harness::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_log_passes_the_conformance_suite() {
    let nats = NatsServer::start().await.expect("nats-server");
    let url = nats.url();
    let counter = std::sync::atomic::AtomicUsize::new(0);
    corral_event_log::conformance::run_all(|| {
        // A fresh stream per property, on the test's own server.
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let url = url.clone();
        async move {
            let config = NatsLogConfig {
                stream: format!("T{n}"),
                subjects: vec![format!("s{n}.>")],
                replicas: 1,
                max_age: None,
            };
            Arc::new(Prefixed { inner: NatsLog::connect(&url, config).await.expect("log"), prefix: format!("s{n}") })
                as Arc<dyn EventLog>
        }
    })
    .await;
}

/// The last sequence is read from the stream's own answer; a stream that is gone is an error
/// that names the cause, not a sequence of 0.
#[tokio::test]
async fn last_seq_follows_appends_and_reports_a_missing_stream() {
    use corral_event_log::NewEvent;
    let nats = NatsServer::start().await.expect("nats-server");
    let config = NatsLogConfig { stream: "LASTSEQ".into(), subjects: vec!["ls.>".into()], replicas: 1, max_age: None };
    let log = NatsLog::connect(&nats.url(), config).await.expect("log");
    assert_eq!(log.last_seq().await.expect("last_seq"), 0);
    for i in 1..=3u64 {
        let event = NewEvent {
            subject: format!("ls.{i}"),
            msg_id: format!("m{i}"),
            expected_subject_seq: None,
            headers: Vec::new(),
            payload: bytes::Bytes::from_static(b"x"),
        };
        assert_eq!(log.append(event).await.expect("append").seq, i);
        assert_eq!(log.last_seq().await.expect("last_seq"), i);
    }
    let client = async_nats::connect(nats.url()).await.expect("connect");
    async_nats::jetstream::new(client).delete_stream("LASTSEQ").await.expect("delete");
    let err = log.last_seq().await.expect_err("a deleted stream has no last sequence");
    assert!(err.to_string().contains("stream not found"), "{err}");
}

/// Maps the suite's subjects (`t.*`) into this stream's subject space, so each property gets a
/// stream of its own on one server.
struct Prefixed {
    inner: NatsLog,
    prefix: String,
}

impl Prefixed {
    fn map(&self, s: &str) -> String {
        format!("{}.{}", self.prefix, s)
    }
    fn unmap(&self, mut e: corral_event_log::RecordedEvent) -> corral_event_log::RecordedEvent {
        if let Some(rest) = e.subject.strip_prefix(&format!("{}.", self.prefix)) {
            e.subject = rest.to_string();
        }
        e
    }
}

#[async_trait::async_trait]
impl EventLog for Prefixed {
    async fn append(
        &self,
        mut event: corral_event_log::NewEvent,
    ) -> Result<corral_event_log::AppendOutcome, corral_event_log::LogError> {
        event.subject = self.map(&event.subject);
        self.inner.append(event).await
    }
    async fn append_batch(
        &self,
        events: Vec<corral_event_log::NewEvent>,
    ) -> Result<Vec<corral_event_log::AppendOutcome>, corral_event_log::LogError> {
        let events = events.into_iter().map(|mut e| {
            e.subject = self.map(&e.subject);
            e
        });
        self.inner.append_batch(events.collect()).await
    }
    fn batches_are_cheap(&self) -> bool {
        self.inner.batches_are_cheap()
    }
    async fn last_seq(&self) -> Result<u64, corral_event_log::LogError> {
        self.inner.last_seq().await
    }
    async fn first_seq(&self) -> Result<u64, corral_event_log::LogError> {
        self.inner.first_seq().await
    }
    async fn append_expecting(
        &self,
        expected_last_seq: u64,
        events: Vec<corral_event_log::NewEvent>,
    ) -> Result<(), corral_event_log::LogError> {
        let events = events.into_iter().map(|mut e| {
            e.subject = self.map(&e.subject);
            e
        });
        self.inner.append_expecting(expected_last_seq, events.collect()).await
    }
    async fn last_subject_seq(&self, subject: &str) -> Result<u64, corral_event_log::LogError> {
        self.inner.last_subject_seq(&self.map(subject)).await
    }
    async fn read(
        &self,
        from_seq: u64,
        max: usize,
    ) -> Result<Vec<corral_event_log::RecordedEvent>, corral_event_log::LogError> {
        Ok(self.inner.read(from_seq, max).await?.into_iter().map(|e| self.unmap(e)).collect())
    }
    async fn subscribe(&self, from_seq: u64) -> Result<corral_event_log::EventStream, corral_event_log::LogError> {
        Ok(self.unmap_stream(self.inner.subscribe(from_seq).await?))
    }
    async fn subscribe_matching(
        &self,
        from_seq: u64,
        filters: &[String],
    ) -> Result<corral_event_log::EventStream, corral_event_log::LogError> {
        let filters: Vec<String> = filters.iter().map(|f| self.map(f)).collect();
        Ok(self.unmap_stream(self.inner.subscribe_matching(from_seq, &filters).await?))
    }
    async fn last_seq_matching(&self, filters: &[String]) -> Result<u64, corral_event_log::LogError> {
        let filters: Vec<String> = filters.iter().map(|f| self.map(f)).collect();
        self.inner.last_seq_matching(&filters).await
    }
}

impl Prefixed {
    fn unmap_stream(&self, events: corral_event_log::EventStream) -> corral_event_log::EventStream {
        use futures::StreamExt;
        let prefix = format!("{}.", self.prefix);
        events
            .map(move |r| {
                r.map(|mut e| {
                    if let Some(rest) = e.subject.strip_prefix(&prefix) {
                        e.subject = rest.to_string();
                    }
                    e
                })
            })
            .boxed()
    }
}

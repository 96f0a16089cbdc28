//! The event log: an ordered, durable sequence of events, each on a subject naming its
//! aggregate, with optimistic per-subject appends and de-duplication by message id.
//!
//! Two backends implement [`EventLog`]: [`NatsLog`] on NATS JetStream (the distributed engine)
//! and [`SledLog`], an embedded log for a single process. [`conformance`] holds the one test
//! suite both must pass whole.

pub mod conformance;
mod nats_log;
mod sled_log;

use chrono::{DateTime, Utc};

pub use nats_log::{NatsLog, NatsLogConfig};
pub use sled_log::SledLog;

pub type Headers = Vec<(String, String)>;

#[derive(Clone, Debug)]
pub struct NewEvent {
    /// e.g. `corral.cluster.<id>`: dot-separated tokens of `[A-Za-z0-9_-]`.
    pub subject: String,
    /// De-duplication id: a second append with the same id within the window is dropped and
    /// answers the first one's sequence with `duplicate = true`.
    pub msg_id: String,
    /// `Some(n)`: append only if the last sequence stored on this subject is `n` (0 = none),
    /// as JetStream's `Nats-Expected-Last-Subject-Sequence`. `None`: no check.
    pub expected_subject_seq: Option<u64>,
    /// Headers kept with the event (not the log's own `Nats-*` ones).
    pub headers: Headers,
    pub payload: bytes::Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendOutcome {
    pub seq: u64,
    pub duplicate: bool,
}

#[derive(Clone, Debug)]
pub struct RecordedEvent {
    /// Stream sequence: from 1, strictly increasing, never reused.
    pub seq: u64,
    pub subject: String,
    /// The headers given at append; the log's own `Nats-*` headers are left out.
    pub headers: Headers,
    pub payload: bytes::Bytes,
    pub time: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("append conflict on {subject}: expected last sequence {expected}")]
    Conflict { subject: String, expected: u64 },
    #[error("batch repeats an event id already stored: nothing stored")]
    DuplicateBatch,
    #[error("event log unavailable: {0}")]
    Unavailable(String),
    #[error("event log storage error: {0}")]
    Storage(String),
    #[error("invalid request to event log: {0}")]
    Invalid(String),
}

pub type EventStream = futures::stream::BoxStream<'static, Result<RecordedEvent, LogError>>;

#[async_trait::async_trait]
pub trait EventLog: Send + Sync + 'static {
    async fn append(&self, event: NewEvent) -> Result<AppendOutcome, LogError>;
    /// Appends `events` atomically, in order, on consecutive sequences: all are stored or none.
    /// Every expectation is checked against the log as it was before the batch, so two events of
    /// one batch must not share a subject when either carries an expectation. A conflict on any
    /// event refuses the whole batch. A batch of several events that repeats an id stored within
    /// the duplicate window is refused whole with [`LogError::DuplicateBatch`]; a batch of one
    /// behaves as [`EventLog::append`].
    async fn append_batch(&self, events: Vec<NewEvent>) -> Result<Vec<AppendOutcome>, LogError>;
    /// Whether a batch costs about what one append does. Where it costs more, a writer may
    /// prefer appending step by step when it can live with a partial write.
    fn batches_are_cheap(&self) -> bool {
        true
    }
    /// Sequence of the last stored event (0 if none). Reflects every append acknowledged
    /// before the call.
    async fn last_seq(&self) -> Result<u64, LogError>;
    /// Sequence of the last event stored on `subject` (0 if none).
    async fn last_subject_seq(&self, subject: &str) -> Result<u64, LogError>;
    /// Up to `max` events with `seq >= from_seq`, in order; empty when there are none.
    async fn read(&self, from_seq: u64, max: usize) -> Result<Vec<RecordedEvent>, LogError>;
    /// Every event from `from_seq` on, in order, then new ones as they are appended. Ends only
    /// with an error.
    async fn subscribe(&self, from_seq: u64) -> Result<EventStream, LogError>;
}

pub(crate) fn check_subject(subject: &str) -> Result<(), LogError> {
    let ok = !subject.is_empty()
        && subject
            .split('.')
            .all(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
    if ok { Ok(()) } else { Err(LogError::Invalid(format!("invalid subject {subject:?}"))) }
}

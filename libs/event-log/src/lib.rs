//! The event log: an ordered, durable sequence of events, each on a subject naming its
//! aggregate, with optimistic per-subject appends and de-duplication by message id.
//!
//! Two backends implement [`EventLog`]: [`NatsLog`] on NATS JetStream (the distributed engine)
//! and [`SledLog`], an embedded log for a single process. [`conformance`] holds the one test
//! suite both must pass whole.

pub mod conformance;
mod metrics;
mod nats_log;
mod sled_log;

use chrono::{DateTime, Utc};

pub use nats_log::{JETSTREAM_TIMEOUT, NatsLog, NatsLogConfig};
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

/// Tells a subscriber that stands still behind the log. Events a server delivered to a
/// connection lost on the way (a NATS node cut off) are gone; an ordered consumer notices such a
/// gap only when a later event arrives, which may not happen while nothing more is written.
/// Fed at a steady pace with the log's last sequence and what the subscriber has taken, it says
/// "subscribe again" once two looks in a row found it behind with nothing taken between them.
#[derive(Debug, Default)]
pub struct StallWatch {
    behind_at: Option<u64>,
}

impl StallWatch {
    /// One look: `last`, the log's last sequence (of the subscribed subjects); `taken`, the last
    /// sequence the subscriber took. True: it is stalled.
    pub fn stalled(&mut self, last: u64, taken: u64) -> bool {
        if last <= taken {
            self.behind_at = None;
            false
        } else if self.behind_at == Some(taken) {
            self.behind_at = None;
            true
        } else {
            self.behind_at = Some(taken);
            false
        }
    }
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
    /// Called by a subscriber that stayed behind the log through subscribing again
    /// ([`StallWatch`]): a log reached over a network connects again, if it can elsewhere.
    async fn reconnect(&self) {}
    /// Sequence of the last stored event (0 if none). Reflects every append acknowledged
    /// before the call.
    async fn last_seq(&self) -> Result<u64, LogError>;
    /// Sequence of the oldest event still stored: 1 until retention removes one, and
    /// `last_seq() + 1` when every event is gone.
    async fn first_seq(&self) -> Result<u64, LogError>;
    /// Appends `events` in order, each only if the log's last sequence is then the one before
    /// it, the first expecting `expected_last_seq` (as JetStream's `Nats-Expected-Last-Sequence`):
    /// a writer that is not alone finds out, instead of interleaving. A refused event refuses
    /// the ones after it with [`LogError::Conflict`]; the ones before it may be stored.
    async fn append_expecting(&self, expected_last_seq: u64, events: Vec<NewEvent>) -> Result<(), LogError>;
    /// Sequence of the last event stored on `subject` (0 if none).
    async fn last_subject_seq(&self, subject: &str) -> Result<u64, LogError>;
    /// Up to `max` events with `seq >= from_seq`, in order; empty when there are none.
    async fn read(&self, from_seq: u64, max: usize) -> Result<Vec<RecordedEvent>, LogError>;
    /// Every event from `from_seq` on, in order, then new ones as they are appended. Ends only
    /// with an error.
    async fn subscribe(&self, from_seq: u64) -> Result<EventStream, LogError>;
    /// As [`EventLog::subscribe`], for the events whose subject matches one of `filters` (NATS
    /// subject filters: `*` stands for one token, a final `>` for one or more). A follower that
    /// needs a few subjects is not woken by every other event.
    async fn subscribe_matching(&self, from_seq: u64, filters: &[String]) -> Result<EventStream, LogError>;
    /// Sequence of the last stored event whose subject matches one of `filters` (0 if none).
    /// Reflects every append acknowledged before the call: what a follower of those subjects
    /// must have applied to have seen them all.
    async fn last_seq_matching(&self, filters: &[String]) -> Result<u64, LogError>;
}

/// Whether `subject` matches the NATS subject filter `filter`.
pub fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    let mut filter_tokens = filter.split('.').peekable();
    while let Some(f) = filter_tokens.next() {
        if f == ">" && filter_tokens.peek().is_none() {
            return subject_tokens.next().is_some();
        }
        match subject_tokens.next() {
            Some(t) if f == "*" || f == t => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

/// Refuses an empty filter list or a filter that is not a valid subject filter.
pub(crate) fn check_filters(filters: &[String]) -> Result<(), LogError> {
    let valid = |f: &String| {
        let tokens: Vec<&str> = f.split('.').collect();
        let last = tokens.len() - 1;
        tokens.iter().enumerate().all(|(i, t)| (*t == ">" && i == last) || *t == "*" || is_subject_token(t))
    };
    if filters.is_empty() {
        return Err(LogError::Invalid("no subject filter".into()));
    }
    match filters.iter().find(|f| !valid(f)) {
        Some(f) => Err(LogError::Invalid(format!("invalid subject filter {f:?}"))),
        None => Ok(()),
    }
}

/// One token of a subject an event may be stored on.
fn is_subject_token(t: &str) -> bool {
    !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

pub(crate) fn check_subject(subject: &str) -> Result<(), LogError> {
    if subject.split('.').all(is_subject_token) {
        Ok(())
    } else {
        Err(LogError::Invalid(format!("invalid subject {subject:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscriber_is_stalled_when_two_looks_find_it_behind_without_progress() {
        let mut watch = StallWatch::default();
        // caught up: never stalled
        assert!(!watch.stalled(5, 5));
        assert!(!watch.stalled(5, 5));
        // behind but moving: not stalled
        assert!(!watch.stalled(9, 6));
        assert!(!watch.stalled(9, 8));
        // behind and still: stalled at the second look, then it starts over
        assert!(watch.stalled(9, 8));
        assert!(!watch.stalled(9, 8));
        assert!(watch.stalled(9, 8));
        // caught up in between: starts over
        assert!(!watch.stalled(10, 9));
        assert!(!watch.stalled(10, 10));
        assert!(!watch.stalled(11, 10));
    }

    #[test]
    fn subject_filters_match_as_in_nats() {
        for (filter, subject, expected) in [
            ("a.b", "a.b", true),
            ("a.b", "a.b.c", false),
            ("a.*", "a.b", true),
            ("a.*", "a.b.c", false),
            ("a.>", "a.b.c", true),
            ("a.>", "a", false),
            ("*.b.>", "x.b.c", true),
            ("*.b.>", "x.c.c", false),
            (">", "a", true),
            ("a.b.c", "a.b", false),
        ] {
            assert_eq!(subject_matches(filter, subject), expected, "{filter} ~ {subject}");
        }
    }
}

//! Writes the public stream from the log, exactly once whatever publishers come and go.
//!
//! Every publisher folds the cluster subjects of the log from the start, in memory, and turns
//! each event past the last one already announced into its public event ([`diff`]). The public
//! event of a revision is a pure function of the log, so two publishers compute the same one;
//! each append expects the public stream's last sequence to be what the publisher last saw, so
//! only one of them lands it. The other is refused, reads where the stream now ends, drops what
//! is already there and waits a moment before trying again: a standby that takes over at its next
//! look when the active publisher stops, with no election to lose events in.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use corral_cluster_model::change::diff;
use corral_cluster_model::read_model::{self, ClusterSubject};
use corral_event_log::{EventLog, LogError, NewEvent, RecordedEvent, StallWatch};
use corral_proto::registry::ClusterRecord;
use futures::{FutureExt as _, StreamExt as _};

use crate::error::WatchError;
use crate::public::{self, Announcement};

/// Most public events appended in one go.
const MAX_BATCH: usize = 256;
/// How long a publisher that found another one ahead of it waits before looking again.
const STANDBY: Duration = Duration::from_millis(250);
/// How often a publisher compares the last log event it took with where the log ends.
const STALL_LOOK_EVERY: Duration = Duration::from_secs(2);

/// Where the public stream ends: its last sequence and the revision of its last event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicHead {
    pub last_seq: u64,
    pub revision: u64,
}

/// Reads where the public stream ends. When retention has emptied it (no change for longer than
/// it keeps), or it is new beside an older log, every change older than the retention counts as
/// announced (it would be removed at once): the head is the last event of the log older than that.
pub async fn public_head(
    internal: &dyn EventLog,
    public: &dyn EventLog,
    max_age: Duration,
) -> Result<PublicHead, WatchError> {
    let last_seq = public.last_seq().await?;
    if last_seq > 0 && public.first_seq().await? <= last_seq {
        let last = public.read(last_seq, 1).await?;
        let ev =
            last.first().ok_or_else(|| WatchError::Unavailable("the public stream's last event is gone".into()))?;
        return Ok(PublicHead { last_seq, revision: public::revision_of(ev)? });
    }
    Ok(PublicHead { last_seq, revision: last_older_than(internal, max_age).await? })
}

/// The sequence of the last event of `log` older than `age` (0 if none), by bisection.
async fn last_older_than(log: &dyn EventLog, age: Duration) -> Result<u64, WatchError> {
    let cutoff = Utc::now() - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
    let (mut lo, mut hi) = (0u64, log.last_seq().await?);
    // Invariant: the event at lo (if any) is older than the cutoff, the ones after hi are not.
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        match log.read(mid, 1).await?.first() {
            Some(ev) if ev.time < cutoff => lo = ev.seq.max(mid),
            _ => hi = mid - 1,
        }
    }
    Ok(lo)
}

/// The fold of the cluster subjects, and the public event of each change.
#[derive(Default)]
struct Clusters {
    records: HashMap<String, ClusterRecord>,
}

impl Clusters {
    /// Folds `ev`; with `announce`, the public event of its change, if it makes one.
    fn apply(
        &mut self,
        ev: &RecordedEvent,
        previous_revision: u64,
        announce: bool,
    ) -> Result<Option<NewEvent>, WatchError> {
        let Some((id, on)) = read_model::cluster_subject(&ev.subject) else { return Ok(None) };
        let env = read_model::decode_envelope(ev)?;
        let before = self.records.remove(id);
        let after = match read_model::fold_cluster_event(before.clone(), id, on, ev, &env) {
            Ok(after) => after,
            Err(e) => {
                if let Some(rec) = before {
                    self.records.insert(id.to_string(), rec);
                }
                return Err(e.into());
            }
        };
        let announcement = if announce {
            let now = after.as_ref().or(before.as_ref());
            diff(&env.event_type, before.as_ref(), now).map(|change| {
                let traceparent =
                    ev.headers.iter().find(|(k, _)| k == corral_events::TRACEPARENT_HEADER).map(|(_, v)| v.as_str());
                Announcement {
                    change: &change,
                    cluster_id: id,
                    revision: ev.seq,
                    previous_revision,
                    internal_event_id: &env.event_id,
                    occurred_at: Utc.timestamp_nanos(env.occurred_at_unix_nanos),
                    traceparent,
                }
                .to_event()
            })
        } else {
            None
        };
        // A credential rotation's own events change nothing in the record.
        let kept = if on == ClusterSubject::Credentials { before } else { after.or(before) };
        if let Some(rec) = kept {
            self.records.insert(id.to_string(), rec);
        }
        Ok(announcement)
    }
}

/// Publishes until `shutdown` resolves. Trouble with either log is retried with backoff from
/// where the public stream ends; nothing is skipped.
pub async fn run(
    internal: Arc<dyn EventLog>,
    public: Arc<dyn EventLog>,
    max_age: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = Duration::from_millis(100);
    loop {
        let session = publish(internal.as_ref(), public.as_ref(), max_age);
        tokio::select! {
            _ = &mut shutdown => return,
            result = session => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "public event publisher interrupted");
                }
            }
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One publishing session: from the start of the log, announcing what comes after the public
/// stream's head. Ends only with an error.
async fn publish(internal: &dyn EventLog, public: &dyn EventLog, max_age: Duration) -> Result<(), WatchError> {
    let mut head = public_head(internal, public, max_age).await?;
    let filters = read_model::cluster_subject_filters();
    let mut events = internal.subscribe_matching(1, &filters).await?;
    let mut clusters = Clusters::default();
    // The revision the next announcement follows, and the announcements not yet stored.
    let mut previous_revision = head.revision;
    let mut pending: Vec<(u64, NewEvent)> = Vec::new();
    // Set while another publisher is ahead: until then, fold and wait rather than append.
    let mut standby_until: Option<tokio::time::Instant> = None;
    let ended = || WatchError::Unavailable("the log subscription ended".into());
    // The last log event taken, and a regular look at where the log ends (see StallWatch).
    let mut taken = 0;
    let mut look = tokio::time::interval(STALL_LOOK_EVERY);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stall = StallWatch::default();
    loop {
        let look_again = async {
            match standby_until {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let mut batch = Vec::new();
        tokio::select! {
            first = events.next() => batch.push(first.ok_or_else(ended)??),
            _ = look_again => {}
            _ = look.tick() => {
                if internal.last_seq_matching(&filters).await.is_ok_and(|last| stall.stalled(last, taken)) {
                    tracing::warn!(taken, "behind the log with nothing delivered; resubscribing");
                    events = internal.subscribe_matching(taken + 1, &filters).await?;
                }
                continue;
            }
        }
        while !batch.is_empty() && batch.len() < MAX_BATCH {
            match events.next().now_or_never() {
                Some(Some(ev)) => batch.push(ev?),
                Some(None) => return Err(ended()),
                None => break,
            }
        }
        for ev in &batch {
            taken = ev.seq;
            if let Some(new) = clusters.apply(ev, previous_revision, ev.seq > head.revision)? {
                previous_revision = ev.seq;
                pending.push((ev.seq, new));
            }
        }
        if let Some(at) = standby_until {
            if tokio::time::Instant::now() < at {
                continue;
            }
            standby_until = None;
            head = public_head(internal, public, max_age).await?;
            pending.retain(|(revision, _)| *revision > head.revision);
        }
        while !pending.is_empty() {
            let take = pending.len().min(MAX_BATCH);
            let events: Vec<NewEvent> = pending[..take].iter().map(|(_, e)| e.clone()).collect();
            match public.append_expecting(head.last_seq, events).await {
                Ok(()) => {
                    head = PublicHead { last_seq: head.last_seq + take as u64, revision: pending[take - 1].0 };
                    pending.drain(..take);
                }
                Err(LogError::Conflict { .. }) => {
                    // Another publisher is ahead: keep only what it has not stored yet, and
                    // look again in a moment.
                    head = public_head(internal, public, max_age).await?;
                    pending.retain(|(revision, _)| *revision > head.revision);
                    standby_until = Some(tokio::time::Instant::now() + STANDBY);
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

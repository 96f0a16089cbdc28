//! The one way a process follows the log: from where its state stopped, the events of its
//! subjects only, each burst of events already delivered applied at once, log trouble retried
//! with backoff. A sled projection ([`crate::run`]) and the states kept in memory (the
//! authentication state, the observers' fleets) all follow through it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use corral_event_log::{EventLog, LogError, RecordedEvent, StallWatch};
use futures::{FutureExt as _, StreamExt as _};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The largest burst applied at once.
pub const MAX_EVENTS_PER_APPLY: usize = 512;

/// A state folded from the log.
pub trait Follower: Send {
    /// What ends the following: an event the state refuses, or a store that fails. Retrying the
    /// same event would fail the same way.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Names the follower in log lines.
    fn name(&self) -> &str;
    /// The sequence of the last event applied (0: none): following resumes after it.
    fn last_applied(&self) -> u64;
    /// Applies events delivered together, in order, each after [`Follower::last_applied`].
    fn apply(&mut self, events: &[RecordedEvent]) -> Result<(), Self::Error>;
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FollowerLabel {
    follower: String,
}

static LAG: LazyLock<Family<FollowerLabel, Gauge>> = LazyLock::new(|| {
    corral_telemetry::metrics::register(
        "corral_projection_lag_events",
        "How far a follower is behind the log: the last sequence of the subjects it follows less the last it applied, sampled every 2 s",
        Family::default(),
    )
});

/// How often a follower's lag is measured: one stream-info request to the log each time.
pub(crate) const LAG_SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// Sets the lag gauge of `name` every [`LAG_SAMPLE_EVERY`] from the log's last sequence (of
/// `filters`' subjects) and what the follower has applied. A log that does not answer leaves
/// the last figure. A subscription that stands still behind the log ([`StallWatch`]) is named
/// in `stalled`, so that the follower subscribes again: writers waiting for it to catch up may
/// never write the event that would reveal the gap to its consumer. Each subscription
/// (`subscription` counts them) is given two looks of its own.
async fn sample_lag(
    log: Arc<dyn EventLog>,
    filters: Vec<String>,
    name: String,
    applied: Arc<AtomicU64>,
    subscription: Arc<AtomicU64>,
    stalled: tokio::sync::watch::Sender<u64>,
) {
    let gauge = LAG.get_or_create(&FollowerLabel { follower: name }).clone();
    let mut every = tokio::time::interval(LAG_SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watch = StallWatch::default();
    let mut watching = 0;
    loop {
        every.tick().await;
        let current = subscription.load(Ordering::Acquire);
        if current != watching {
            watch = StallWatch::default();
            watching = current;
        }
        let last = if filters.is_empty() { log.last_seq().await } else { log.last_seq_matching(&filters).await };
        if let Ok(last) = last {
            let now = applied.load(Ordering::Relaxed);
            gauge.set(i64::try_from(last.saturating_sub(now)).unwrap_or(i64::MAX));
            if watch.stalled(last, now) {
                stalled.send_replace(watching);
            }
        }
    }
}

/// At most this many events of a burst are linked from the span that applies it.
const MAX_LINKS: usize = 32;

/// The consumer span in which a follower applies `events`, linked to the spans that appended
/// them (their trace context is in the events' headers).
fn process_span(name: &str, events: &[RecordedEvent]) -> tracing::Span {
    let span = tracing::info_span!(
        "process",
        otel.name = %format_args!("process {name}"),
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.operation.type = "process",
        messaging.consumer.group.name = name,
        messaging.batch.message_count = corral_telemetry::trace::int(events.len()),
        first_seq = corral_telemetry::trace::int(events.first().map_or(0, |e| e.seq)),
    );
    if corral_telemetry::trace::exporting() {
        for event in events.iter().take(MAX_LINKS) {
            corral_telemetry::trace::add_link(&span, &corral_telemetry::trace::from_pairs(&event.headers));
        }
    }
    span
}

/// Ends the lag sampler with the follow.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn log_stream_end(name: &str, end: Option<Result<RecordedEvent, LogError>>) {
    match end {
        Some(Err(e)) => tracing::warn!(follower = name, error = %e, "event stream failed; resubscribing"),
        _ => tracing::debug!(follower = name, "event stream ended; resubscribing"),
    }
}

/// Follows `log` into `follower` until `shutdown` resolves: the events whose subjects match
/// `filters` (all of them when `filters` is empty), from `last_applied + 1`. A failed subscribe
/// or a stream that fails or ends is retried from the last applied event, with backoff, since
/// the log may come back; an apply error ends the run with `Err`.
pub async fn follow<F: Follower>(
    log: Arc<dyn EventLog>,
    filters: &[String],
    follower: &mut F,
    shutdown: impl Future<Output = ()>,
) -> Result<(), F::Error> {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = MIN_BACKOFF;
    let mut burst: Vec<RecordedEvent> = Vec::new();
    let progress = Arc::new(AtomicU64::new(follower.last_applied()));
    // The subscription the sampler last found stalled, of those counted in `subscription`: one
    // found stalled before the current one was made (during a backoff) is not acted on, since
    // resubscribing at once drops the new consumer before its first pull request has gone out.
    let subscription = Arc::new(AtomicU64::new(0));
    let (stalled_tx, mut stalled) = tokio::sync::watch::channel(0);
    // Where the follower stood at the last stall.
    let mut stalled_at: Option<u64> = None;
    let _sampler = AbortOnDrop(tokio::spawn(sample_lag(
        log.clone(),
        filters.to_vec(),
        follower.name().to_string(),
        progress.clone(),
        subscription.clone(),
        stalled_tx,
    )));
    loop {
        let from = follower.last_applied() + 1;
        let subscribed = tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            s = async {
                if filters.is_empty() { log.subscribe(from).await } else { log.subscribe_matching(from, filters).await }
            } => s,
        };
        // Counted once made, so that looks taken while subscribing count for the one before.
        match subscribed.map(|stream| (stream, subscription.fetch_add(1, Ordering::AcqRel) + 1)) {
            Ok((mut stream, current)) => loop {
                let item = tokio::select! {
                    biased;
                    () = &mut shutdown => return Ok(()),
                    item = stream.next() => item,
                    Ok(()) = stalled.changed() => {
                        if *stalled.borrow_and_update() != current {
                            continue;
                        }
                        // A second stall in a row, with nothing applied in between: the new
                        // subscription is no better, so the connection moves too.
                        let last_applied = follower.last_applied();
                        let again = stalled_at == Some(last_applied);
                        stalled_at = Some(last_applied);
                        tracing::warn!(
                            follower = follower.name(),
                            last_applied,
                            reconnecting = again,
                            "behind the log with nothing delivered; resubscribing"
                        );
                        if again {
                            log.reconnect().await;
                        }
                        // Not the log's failure: subscribing again is the remedy, after the
                        // shortest wait.
                        backoff = MIN_BACKOFF;
                        break;
                    }
                };
                let Some(Ok(first)) = item else {
                    log_stream_end(follower.name(), item);
                    break;
                };
                backoff = MIN_BACKOFF;
                // Everything already delivered goes into one apply: under a stream of appends
                // the cost per apply (a store's write) is paid once per burst.
                burst.clear();
                let applied = follower.last_applied();
                let mut next = Some(first);
                let mut stream_end = None;
                while let Some(event) = next.take() {
                    // Redelivered after a resubscribe: already in the state.
                    if event.seq > burst.last().map_or(applied, |e| e.seq) {
                        burst.push(event);
                    }
                    if burst.len() >= MAX_EVENTS_PER_APPLY {
                        break;
                    }
                    match stream.next().now_or_never() {
                        Some(Some(Ok(e))) => next = Some(e),
                        Some(end) => stream_end = Some(end),
                        None => {}
                    }
                }
                if !burst.is_empty() {
                    let span = process_span(follower.name(), &burst);
                    let _entered = span.enter();
                    follower.apply(&burst)?;
                    progress.store(follower.last_applied(), Ordering::Relaxed);
                }
                if let Some(end) = stream_end {
                    log_stream_end(follower.name(), end);
                    break;
                }
            },
            Err(e) => tracing::warn!(follower = follower.name(), error = %e, "subscribe failed; retrying"),
        }
        tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

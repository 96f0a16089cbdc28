use std::future::Future;
use std::sync::Arc;

use corral_event_log::{EventLog, RecordedEvent};

use crate::{Changes, Follower, Projection, ProjectionError, Staged};

/// A projection and the fold that makes it, as a [`Follower`].
struct Folding<F> {
    projection: Projection,
    fold: F,
}

impl<F, E> Follower for Folding<F>
where
    F: FnMut(&Staged<'_>, &RecordedEvent) -> Result<Changes, E> + Send,
    E: std::error::Error + Send + Sync + 'static,
{
    type Error = ProjectionError;

    fn name(&self) -> &str {
        self.projection.name()
    }

    fn last_applied(&self) -> u64 {
        self.projection.last_applied()
    }

    /// Folds each event on the changes of the ones before it and writes them all in one batch.
    /// The events before a refused one are kept; the run stops at the refused one.
    fn apply(&mut self, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        let mut pending = Changes::new();
        let mut staged_upto = None;
        let mut failed = None;
        for event in events {
            match (self.fold)(&Staged::new(&self.projection, &pending), event) {
                Ok(changes) => {
                    pending.extend(changes);
                    staged_upto = Some(event.seq);
                }
                Err(e) => {
                    failed = Some(ProjectionError::Fold { seq: event.seq, source: Box::new(e) });
                    break;
                }
            }
        }
        if let Some(seq) = staged_upto {
            self.projection.apply(seq, pending)?;
        }
        failed.map_or(Ok(()), Err)
    }
}

/// Follows the log from last_applied+1 and applies each event through `fold` until `shutdown`
/// resolves. `fold(&Staged, &RecordedEvent) -> Result<Changes, E>` reads current state and
/// returns the changes; events delivered together are written together.
///
/// Log trouble (a failed subscribe, a stream error or end) is retried with backoff from the
/// last applied event, since the log may come back. A fold error or a storage error ends the
/// run with `Err`: retrying the same event would fail the same way.
pub async fn run<F, E>(
    log: Arc<dyn EventLog>,
    projection: Projection,
    fold: F,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProjectionError>
where
    F: FnMut(&Staged<'_>, &RecordedEvent) -> Result<Changes, E> + Send,
    E: std::error::Error + Send + Sync + 'static,
{
    crate::follow(log, &[], &mut Folding { projection, fold }, shutdown).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use std::time::Duration;

    use corral_event_log::{AppendOutcome, EventStream, LogError, NewEvent};
    use futures::StreamExt as _;

    use crate::follow::{LAG_SAMPLE_EVERY, MAX_EVENTS_PER_APPLY as MAX_EVENTS_PER_WRITE};
    use tokio::sync::watch;

    use super::*;

    /// An in-memory log: a subscription replays from `from_seq` and then follows appends.
    /// `end_after` makes every stream end after that many events, like a dropped connection.
    struct FakeLog {
        events: Arc<Mutex<Vec<RecordedEvent>>>,
        appended: watch::Sender<usize>,
        subscribes: Mutex<Vec<u64>>,
        end_after: usize,
        failing_subscribes: AtomicUsize,
        /// The first `deaf_subscribes` subscriptions deliver nothing from `deaf_from` on and stay
        /// open, as when what the server sent went to a connection lost on the way.
        deaf_from: std::sync::atomic::AtomicU64,
        deaf_subscribes: AtomicUsize,
        reconnects: AtomicUsize,
        /// Every subscription delivers only this long (ms) after it was made, as a JetStream
        /// consumer does once its first pull request has gone out.
        start_after_ms: std::sync::atomic::AtomicU64,
    }

    impl FakeLog {
        fn new() -> Arc<FakeLog> {
            FakeLog::with(usize::MAX, 0)
        }

        fn with(end_after: usize, failing_subscribes: usize) -> Arc<FakeLog> {
            Arc::new(FakeLog {
                events: Arc::new(Mutex::new(Vec::new())),
                appended: watch::channel(0).0,
                subscribes: Mutex::new(Vec::new()),
                end_after,
                failing_subscribes: AtomicUsize::new(failing_subscribes),
                deaf_from: Default::default(),
                deaf_subscribes: AtomicUsize::new(0),
                reconnects: AtomicUsize::new(0),
                start_after_ms: Default::default(),
            })
        }

        fn append(&self, payload: &str) -> u64 {
            let mut events = self.events.lock().unwrap();
            let seq = events.len() as u64 + 1;
            events.push(RecordedEvent {
                seq,
                subject: "test.subject".into(),
                headers: vec![],
                payload: bytes::Bytes::copy_from_slice(payload.as_bytes()),
                time: chrono::Utc::now(),
            });
            self.appended.send_replace(events.len());
            seq
        }

        fn subscribes(&self) -> Vec<u64> {
            self.subscribes.lock().unwrap().clone()
        }
    }

    #[async_trait::async_trait]
    impl EventLog for FakeLog {
        async fn append(&self, event: NewEvent) -> Result<AppendOutcome, LogError> {
            let seq = self.append(&String::from_utf8_lossy(&event.payload));
            Ok(AppendOutcome { seq, duplicate: false })
        }

        async fn append_batch(&self, events: Vec<NewEvent>) -> Result<Vec<AppendOutcome>, LogError> {
            Ok(events
                .iter()
                .map(|e| AppendOutcome { seq: self.append(&String::from_utf8_lossy(&e.payload)), duplicate: false })
                .collect())
        }

        async fn last_seq(&self) -> Result<u64, LogError> {
            Ok(self.events.lock().unwrap().len() as u64)
        }

        async fn first_seq(&self) -> Result<u64, LogError> {
            Ok(1)
        }

        async fn append_expecting(&self, _expected: u64, events: Vec<NewEvent>) -> Result<(), LogError> {
            self.append_batch(events).await.map(|_| ())
        }

        async fn last_subject_seq(&self, _subject: &str) -> Result<u64, LogError> {
            self.last_seq().await
        }

        async fn read(&self, from_seq: u64, max: usize) -> Result<Vec<RecordedEvent>, LogError> {
            let events = self.events.lock().unwrap();
            let start = usize::try_from(from_seq.saturating_sub(1)).unwrap();
            Ok(events.iter().skip(start).take(max).cloned().collect())
        }

        async fn subscribe(&self, from_seq: u64) -> Result<EventStream, LogError> {
            self.subscribes.lock().unwrap().push(from_seq);
            let failing =
                self.failing_subscribes.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            if failing.is_ok() {
                return Err(LogError::Unavailable("test outage".into()));
            }
            let events = Arc::clone(&self.events);
            let rx = self.appended.subscribe();
            let next = usize::try_from(from_seq.saturating_sub(1)).unwrap();
            let limit = self.end_after;
            let deaf = self.deaf_subscribes.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            let deaf_from = if deaf.is_ok() { self.deaf_from.load(Ordering::SeqCst) } else { 0 };
            let stream = futures::stream::unfold((next, rx, 0usize), move |(next, mut rx, sent)| {
                let events = Arc::clone(&events);
                async move {
                    if sent >= limit {
                        return None;
                    }
                    if deaf_from > 0 && next as u64 + 1 >= deaf_from {
                        return std::future::pending().await;
                    }
                    loop {
                        let got = events.lock().unwrap().get(next).cloned();
                        if let Some(ev) = got {
                            return Some((Ok(ev), (next + 1, rx, sent + 1)));
                        }
                        rx.changed().await.ok()?;
                    }
                }
            });
            let start_after = Duration::from_millis(self.start_after_ms.load(Ordering::SeqCst));
            let starting = futures::stream::once(tokio::time::sleep(start_after))
                .filter_map(|()| std::future::ready(None::<Result<RecordedEvent, LogError>>));
            Ok(starting.chain(stream).boxed())
        }

        async fn reconnect(&self) {
            self.reconnects.fetch_add(1, Ordering::SeqCst);
        }

        // The runner follows every subject; these serve the trait only.
        async fn subscribe_matching(&self, from_seq: u64, _filters: &[String]) -> Result<EventStream, LogError> {
            self.subscribe(from_seq).await
        }

        async fn last_seq_matching(&self, _filters: &[String]) -> Result<u64, LogError> {
            self.last_seq().await
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("bad event: {0}")]
    struct BadEvent(String);

    /// Keeps the last payload under "last" and counts events under "count".
    fn counting_fold(
        calls: Arc<AtomicUsize>,
    ) -> impl FnMut(&Staged<'_>, &RecordedEvent) -> Result<Changes, BadEvent> + Send {
        move |p, ev| {
            calls.fetch_add(1, Ordering::SeqCst);
            let payload = String::from_utf8_lossy(&ev.payload).into_owned();
            if payload == "poison" {
                return Err(BadEvent(payload));
            }
            let count = crate::Read::get(p, b"count")
                .unwrap()
                .map_or(0, |v| u64::from_be_bytes(v.as_ref().try_into().unwrap()));
            let mut c = Changes::new();
            c.put(b"count".to_vec(), (count + 1).to_be_bytes().to_vec());
            c.put(b"last".to_vec(), payload.into_bytes());
            Ok(c)
        }
    }

    fn last(p: &Projection) -> String {
        String::from_utf8(p.get(b"last").unwrap().unwrap().to_vec()).unwrap()
    }

    fn count(p: &Projection) -> u64 {
        u64::from_be_bytes(p.get(b"count").unwrap().unwrap().as_ref().try_into().unwrap())
    }

    const WAIT: Duration = Duration::from_secs(5);

    #[test]
    fn run_future_is_send_for_spawning() {
        fn assert_send<T: Send>(_: &T) {}
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let p = Projection::open(&db, "t").unwrap();
        let log: Arc<dyn EventLog> = FakeLog::new();
        let fut = run(log, p, counting_fold(Arc::new(AtomicUsize::new(0))), std::future::ready(()));
        assert_send(&fut);
    }

    #[tokio::test]
    async fn a_backlog_applied_in_bursts_folds_each_event_on_the_one_before() {
        // given a backlog of events, more than one write takes
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let p = Projection::open(&db, "t").unwrap();
        let log = FakeLog::new();
        let n = MAX_EVENTS_PER_WRITE as u64 * 2 + 7;
        for i in 0..n {
            log.append(&format!("e{i}"));
        }
        let mut applied = p.subscribe_applied();
        let calls = Arc::new(AtomicUsize::new(0));
        let runner = tokio::spawn(run(log.clone(), p.clone(), counting_fold(calls.clone()), std::future::pending()));
        // then each fold read the count its predecessors staged, so the total is exact
        while *applied.borrow_and_update() < n {
            tokio::time::timeout(WAIT, applied.changed()).await.unwrap().unwrap();
        }
        assert_eq!(count(&p), n);
        assert_eq!(last(&p), format!("e{}", n - 1));
        assert_eq!(calls.load(Ordering::SeqCst) as u64, n);
        runner.abort();
    }

    #[tokio::test]
    async fn run_applies_events_and_follows_the_log_until_shutdown() {
        // given a log with two events and a fresh projection
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let p = Projection::open(&db, "t").unwrap();
        let log = FakeLog::new();
        log.append("a");
        log.append("b");
        let calls = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // when the runner starts
        let runner = tokio::spawn(run(log.clone(), p.clone(), counting_fold(calls.clone()), async move {
            let _ = stopped.await;
        }));
        // then it catches up, then follows new events
        p.wait_for(2, WAIT).await.unwrap();
        assert_eq!(last(&p), "b");
        let seq = log.append("c");
        p.wait_for(seq, WAIT).await.unwrap();
        assert_eq!((last(&p), count(&p)), ("c".to_owned(), 3));
        // and it stops cleanly on shutdown
        stop.send(()).unwrap();
        runner.await.unwrap().unwrap();
        assert_eq!(log.subscribes(), vec![1]);
    }

    #[tokio::test]
    async fn a_follower_whose_last_events_never_arrive_subscribes_again() {
        // given a log of three events whose first subscription loses the last two on the way
        // and then delivers nothing more
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let p = Projection::open(&db, "t").unwrap();
        let log = FakeLog::new();
        for e in ["a", "b", "c"] {
            log.append(e);
        }
        log.deaf_from.store(2, Ordering::SeqCst);
        log.deaf_subscribes.store(1, Ordering::SeqCst);
        // when the runner follows it and nothing more is appended
        let runner = tokio::spawn(run(
            log.clone(),
            p.clone(),
            counting_fold(Arc::new(AtomicUsize::new(0))),
            std::future::pending(),
        ));
        // then, found behind at two lag samples with nothing applied between, it subscribes
        // again after what it applied and gets the rest
        p.wait_for(3, LAG_SAMPLE_EVERY * 3).await.unwrap();
        assert_eq!((last(&p), count(&p)), ("c".to_owned(), 3));
        assert_eq!(log.subscribes(), vec![1, 2]);
        assert_eq!(log.reconnects.load(Ordering::SeqCst), 0);
        runner.abort();
    }

    #[tokio::test]
    async fn a_follower_still_stalled_after_subscribing_again_reconnects() {
        // given a log whose first two subscriptions lose everything from the second event on
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let p = Projection::open(&db, "t").unwrap();
        let log = FakeLog::new();
        for e in ["a", "b"] {
            log.append(e);
        }
        log.deaf_from.store(2, Ordering::SeqCst);
        log.deaf_subscribes.store(2, Ordering::SeqCst);
        let runner = tokio::spawn(run(
            log.clone(),
            p.clone(),
            counting_fold(Arc::new(AtomicUsize::new(0))),
            std::future::pending(),
        ));
        // then the second stall also reconnects the log, and the third subscription delivers
        p.wait_for(2, LAG_SAMPLE_EVERY * 6).await.unwrap();
        assert_eq!(log.subscribes(), vec![1, 2, 2]);
        assert_eq!(log.reconnects.load(Ordering::SeqCst), 1);
        runner.abort();
    }

    #[tokio::test]
    async fn a_follower_found_behind_during_an_outage_gives_its_next_subscription_time_to_start() {
        // given a log of two events that refuses subscriptions for about 6 s (the follower's
        // backoff, through two lag samples that find it behind), then takes 200 ms to start
        // delivering on each subscription
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let p = Projection::open(&db, "t").unwrap();
        let log = FakeLog::with(usize::MAX, 7);
        for e in ["a", "b"] {
            log.append(e);
        }
        log.start_after_ms.store(200, Ordering::SeqCst);
        let runner = tokio::spawn(run(
            log.clone(),
            p.clone(),
            counting_fold(Arc::new(AtomicUsize::new(0))),
            std::future::pending(),
        ));
        // then the first subscription that succeeds is not dropped for the stall found before
        // it was made: it delivers both events
        p.wait_for(2, LAG_SAMPLE_EVERY * 6).await.unwrap();
        assert_eq!(log.subscribes(), vec![1; 8]);
        assert_eq!(log.reconnects.load(Ordering::SeqCst), 0);
        runner.abort();
    }

    #[tokio::test]
    async fn run_follows_the_embedded_sled_log() {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn EventLog> = Arc::new(corral_event_log::SledLog::open(&dir.path().join("log")).unwrap());
        let db = sled::open(dir.path().join("projection")).unwrap();
        let p = Projection::open(&db, "t").unwrap();
        let new_event = |payload: &str| NewEvent {
            subject: "corral.test.x".into(),
            msg_id: payload.into(),
            expected_subject_seq: None,
            headers: vec![],
            payload: bytes::Bytes::copy_from_slice(payload.as_bytes()),
        };
        log.append(new_event("a")).await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runner =
            tokio::spawn(run(log.clone(), p.clone(), counting_fold(Arc::new(AtomicUsize::new(0))), async move {
                let _ = stopped.await;
            }));
        let seq = log.append(new_event("b")).await.unwrap().seq;
        p.wait_for(seq, WAIT).await.unwrap();
        assert_eq!((last(&p), count(&p)), ("b".to_owned(), 2));
        stop.send(()).unwrap();
        runner.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn run_resumes_after_restart_without_refolding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let log = FakeLog::new();
        for x in ["a", "b", "c"] {
            log.append(x);
        }
        let calls = Arc::new(AtomicUsize::new(0));
        {
            let db = sled::open(&path).unwrap();
            let p = Projection::open(&db, "t").unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let runner = tokio::spawn(run(log.clone(), p.clone(), counting_fold(calls.clone()), async move {
                let _ = stopped.await;
            }));
            p.wait_for(3, WAIT).await.unwrap();
            stop.send(()).unwrap();
            runner.await.unwrap().unwrap();
            p.flush().unwrap();
        }
        // given more events while stopped
        log.append("d");
        log.append("e");
        // when the runner starts again on the reopened database
        let db = sled::open(&path).unwrap();
        let p = Projection::open(&db, "t").unwrap();
        assert_eq!(p.last_applied(), 3);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runner = tokio::spawn(run(log.clone(), p.clone(), counting_fold(calls.clone()), async move {
            let _ = stopped.await;
        }));
        p.wait_for(5, WAIT).await.unwrap();
        // then it subscribed after the last applied event and folded each event once
        assert_eq!(log.subscribes(), vec![1, 4]);
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        assert_eq!((last(&p), count(&p)), ("e".to_owned(), 5));
        stop.send(()).unwrap();
        runner.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn run_resubscribes_after_stream_end_and_outage() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let p = Projection::open(&db, "t").unwrap();
        // given a log whose streams end after two events and whose first subscribe fails
        let log = FakeLog::with(2, 1);
        for x in ["a", "b", "c", "d", "e"] {
            log.append(x);
        }
        let calls = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runner = tokio::spawn(run(log.clone(), p.clone(), counting_fold(calls.clone()), async move {
            let _ = stopped.await;
        }));
        // then the runner gets through all of it, resuming each time after the last event
        p.wait_for(5, WAIT).await.unwrap();
        assert_eq!(count(&p), 5);
        assert_eq!(log.subscribes()[..4], [1, 1, 3, 5]);
        stop.send(()).unwrap();
        runner.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn run_stops_with_an_error_when_fold_fails() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let p = Projection::open(&db, "t").unwrap();
        let log = FakeLog::new();
        log.append("a");
        log.append("poison");
        log.append("c");
        let calls = Arc::new(AtomicUsize::new(0));
        let result =
            tokio::time::timeout(WAIT, run(log.clone(), p.clone(), counting_fold(calls), std::future::pending()))
                .await
                .unwrap();
        assert!(matches!(result, Err(ProjectionError::Fold { seq: 2, .. })), "{result:?}");
        // the event before the poison one is applied, the poison one is not
        assert_eq!(p.last_applied(), 1);
    }
}

//! The one test suite every backend must pass whole. Each function takes a fresh, empty log.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use crate::{EventLog, LogError, NewEvent};

fn ev(subject: &str, id: &str, expected: Option<u64>, payload: &str) -> NewEvent {
    NewEvent {
        subject: subject.to_string(),
        msg_id: id.to_string(),
        expected_subject_seq: expected,
        headers: vec![("Corral-Event-Type".into(), "Test".into()), ("traceparent".into(), format!("tp-{id}"))],
        payload: Bytes::from(payload.to_string()),
    }
}

/// Runs every property in turn, each on a fresh log made by `make`.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn EventLog>>,
{
    append_assigns_increasing_sequences(make().await.as_ref()).await;
    expected_sequence_is_checked(make().await.as_ref()).await;
    duplicate_message_ids_are_dropped(make().await.as_ref()).await;
    read_from_a_sequence(make().await.as_ref()).await;
    subscribe_from_a_sequence_then_live(make().await.as_ref()).await;
    headers_and_payload_round_trip(make().await.as_ref()).await;
    racing_appenders_on_one_subject_one_wins(make().await).await;
    batches_are_atomic(make().await.as_ref()).await;
    subject_filters_select_events(make().await.as_ref()).await;
    appends_expecting_the_last_sequence(make().await.as_ref()).await;
    first_sequence_of_a_log_that_keeps_everything(make().await.as_ref()).await;
}

pub async fn appends_expecting_the_last_sequence(log: &dyn EventLog) {
    let batch = |ids: &[&str]| ids.iter().map(|id| ev("t.x", id, None, id)).collect::<Vec<_>>();
    log.append_expecting(0, batch(&["x1", "x2", "x3"])).await.expect("expected 0 on an empty log");
    assert_eq!(log.last_seq().await.expect("last"), 3);
    let err = log.append_expecting(2, batch(&["x4"])).await.expect_err("stale expectation");
    assert!(matches!(err, LogError::Conflict { .. }), "{err:?}");
    let err = log.append_expecting(7, batch(&["x5", "x6"])).await.expect_err("expectation ahead of the log");
    assert!(matches!(err, LogError::Conflict { .. }), "{err:?}");
    assert_eq!(log.last_seq().await.expect("last"), 3, "refused appends stored nothing");
    log.append(ev("t.y", "y1", None, "y")).await.expect("another writer");
    let err = log.append_expecting(3, batch(&["x7"])).await.expect_err("another writer came first");
    assert!(matches!(err, LogError::Conflict { .. }), "{err:?}");
    log.append_expecting(4, batch(&["x8", "x9"])).await.expect("after the other writer");
    let payloads: Vec<_> = log.read(1, 10).await.expect("read").into_iter().map(|e| e.payload).collect();
    assert_eq!(payloads, ["x1", "x2", "x3", "y", "x8", "x9"].map(|s: &'static str| Bytes::from_static(s.as_bytes())));
}

pub async fn first_sequence_of_a_log_that_keeps_everything(log: &dyn EventLog) {
    assert_eq!(log.first_seq().await.expect("first"), 1);
    log.append(ev("t.f", "f1", None, "f")).await.expect("append");
    log.append(ev("t.f", "f2", None, "f")).await.expect("append");
    assert_eq!(log.first_seq().await.expect("first"), 1);
}

pub async fn append_assigns_increasing_sequences(log: &dyn EventLog) {
    assert_eq!(log.last_seq().await.expect("last"), 0);
    for i in 1..=5u64 {
        let subject = if i % 2 == 0 { "t.a" } else { "t.b" };
        let out = log.append(ev(subject, &format!("inc-{i}"), None, "x")).await.expect("append");
        assert_eq!(out.seq, i);
        assert!(!out.duplicate);
    }
    assert_eq!(log.last_seq().await.expect("last"), 5);
    assert_eq!(log.last_subject_seq("t.a").await.expect("subject"), 4);
    assert_eq!(log.last_subject_seq("t.b").await.expect("subject"), 5);
    assert_eq!(log.last_subject_seq("t.none").await.expect("subject"), 0);
}

pub async fn expected_sequence_is_checked(log: &dyn EventLog) {
    let first = log.append(ev("t.agg", "e1", Some(0), "one")).await.expect("expected 0 on empty subject");
    let err = log.append(ev("t.agg", "e2", Some(0), "stale")).await.expect_err("stale expectation");
    assert!(matches!(err, LogError::Conflict { .. }), "{err:?}");
    log.append(ev("t.other", "o1", None, "other")).await.expect("other subject");
    let err = log.append(ev("t.agg", "e3", Some(first.seq + 5), "future")).await.expect_err("wrong expectation");
    assert!(matches!(err, LogError::Conflict { .. }), "{err:?}");
    let second = log.append(ev("t.agg", "e4", Some(first.seq), "two")).await.expect("right expectation");
    assert_eq!(second.seq, 3, "conflicting appends stored nothing");
    let all = log.read(1, 100).await.expect("read");
    let payloads: Vec<_> = all.iter().map(|e| String::from_utf8_lossy(&e.payload).to_string()).collect();
    assert_eq!(payloads, vec!["one", "other", "two"]);
}

pub async fn duplicate_message_ids_are_dropped(log: &dyn EventLog) {
    let a = log.append(ev("t.d", "same-id", None, "first")).await.expect("append");
    let b = log.append(ev("t.d", "same-id", None, "second")).await.expect("duplicate");
    assert_eq!(b.seq, a.seq);
    assert!(b.duplicate);
    assert_eq!(log.last_seq().await.expect("last"), a.seq, "stored once");
    let c = log.append(ev("t.d", "other-id", None, "third")).await.expect("append");
    assert_eq!(c.seq, a.seq + 1);
}

pub async fn read_from_a_sequence(log: &dyn EventLog) {
    for i in 1..=10 {
        log.append(ev(&format!("t.r{}", i % 3), &format!("r{i}"), None, &i.to_string())).await.expect("append");
    }
    let from4 = log.read(4, 100).await.expect("read");
    assert_eq!(from4.iter().map(|e| e.seq).collect::<Vec<_>>(), (4..=10).collect::<Vec<_>>());
    assert_eq!(from4[0].payload, Bytes::from("4"));
    assert_eq!(from4[0].subject, "t.r1");
    let limited = log.read(2, 3).await.expect("read");
    assert_eq!(limited.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 3, 4]);
    assert!(log.read(11, 10).await.expect("read").is_empty());
    assert_eq!(log.read(0, 1).await.expect("read")[0].seq, 1, "0 reads from the start");
}

async fn next_event(sub: &mut crate::EventStream) -> crate::RecordedEvent {
    tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("event in time")
        .expect("stream open")
        .expect("event")
}

pub async fn subscribe_from_a_sequence_then_live(log: &dyn EventLog) {
    for i in 1..=3 {
        log.append(ev("t.s", &format!("s{i}"), None, &i.to_string())).await.expect("append");
    }
    let mut sub = log.subscribe(2).await.expect("subscribe");
    assert_eq!(next_event(&mut sub).await.seq, 2);
    assert_eq!(next_event(&mut sub).await.seq, 3);
    for i in 4..=6 {
        log.append(ev("t.s2", &format!("s{i}"), None, &i.to_string())).await.expect("append");
    }
    for want in 4..=6 {
        let e = next_event(&mut sub).await;
        assert_eq!(e.seq, want, "in order, no gaps or repeats");
        assert_eq!(e.payload, Bytes::from(want.to_string()));
    }
    let quiet = tokio::time::timeout(Duration::from_millis(300), sub.next()).await;
    assert!(quiet.is_err(), "nothing more than was appended");
}

pub async fn headers_and_payload_round_trip(log: &dyn EventLog) {
    let payload: Vec<u8> = (0..=255u8).collect();
    let mut e = ev("t.h", "h1", None, "");
    e.payload = Bytes::from(payload.clone());
    log.append(e).await.expect("append");
    let got = log.read(1, 1).await.expect("read").remove(0);
    assert_eq!(got.payload.as_ref(), payload.as_slice());
    let mut headers = got.headers.clone();
    headers.sort();
    assert_eq!(
        headers,
        vec![("Corral-Event-Type".to_string(), "Test".to_string()), ("traceparent".to_string(), "tp-h1".to_string())]
    );
    let age = chrono::Utc::now() - got.time;
    assert!(age.num_seconds().abs() < 60, "event time is the append time");
}

pub async fn racing_appenders_on_one_subject_one_wins(log: Arc<dyn EventLog>) {
    let base = log.append(ev("t.race", "base", None, "base")).await.expect("append").seq;
    for round in 0..3u64 {
        let expected = log.last_subject_seq("t.race").await.expect("subject");
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move {
                    log.append(ev("t.race", &format!("race-{round}-{i}"), Some(expected), "x")).await
                })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            match t.await.expect("task") {
                Ok(_) => wins += 1,
                Err(LogError::Conflict { .. }) => {}
                Err(e) => panic!("unexpected error {e:?}"),
            }
        }
        assert_eq!(wins, 1, "round {round}: exactly one appender wins");
    }
    assert_eq!(log.last_seq().await.expect("last"), base + 3);
}

pub async fn batches_are_atomic(log: &dyn EventLog) {
    log.append(ev("t.b1", "pre", None, "pre")).await.expect("append");
    let mut sub = log.subscribe(1).await.expect("subscribe");
    let batch =
        || vec![ev("t.b1", "b-1", Some(1), "one"), ev("t.b2", "b-2", Some(0), "two"), ev("t.b3", "b-3", None, "three")];
    let out = log.append_batch(batch()).await.expect("batch");
    assert_eq!(out.iter().map(|o| (o.seq, o.duplicate)).collect::<Vec<_>>(), vec![(2, false), (3, false), (4, false)]);
    assert_eq!(log.last_subject_seq("t.b1").await.expect("subject"), 2);
    assert_eq!(log.last_subject_seq("t.b2").await.expect("subject"), 3);
    for want in 1..=4 {
        assert_eq!(next_event(&mut sub).await.seq, want, "subscribers see the whole batch, in order");
    }

    let again = log.append_batch(batch()).await.expect_err("a retried batch");
    assert!(matches!(again, LogError::DuplicateBatch), "{again:?}");
    assert_eq!(log.last_seq().await.expect("last"), 4, "a retried batch is stored once");
    let one = log.append_batch(vec![ev("t.b1", "b-1", None, "again")]).await.expect("a batch of one");
    assert_eq!(one.iter().map(|o| (o.seq, o.duplicate)).collect::<Vec<_>>(), vec![(2, true)], "as append");

    // One stale expectation refuses the whole batch, whichever event carries it.
    let stale = vec![ev("t.b4", "s-1", Some(0), "fresh"), ev("t.b2", "s-2", Some(0), "stale")];
    let err = log.append_batch(stale).await.expect_err("stale expectation");
    assert!(matches!(err, LogError::Conflict { .. }), "{err:?}");
    assert_eq!(log.last_seq().await.expect("last"), 4, "nothing of a refused batch is stored");
    assert_eq!(log.last_subject_seq("t.b4").await.expect("subject"), 0);

    let fresh = vec![ev("t.b4", "f-1", Some(0), "fresh"), ev("t.b2", "f-2", Some(3), "next")];
    let out = log.append_batch(fresh).await.expect("batch");
    assert_eq!(out.iter().map(|o| o.seq).collect::<Vec<_>>(), vec![5, 6]);
    let payloads: Vec<_> =
        log.read(1, 100).await.expect("read").iter().map(|e| String::from_utf8_lossy(&e.payload).to_string()).collect();
    assert_eq!(payloads, vec!["pre", "one", "two", "three", "fresh", "next"]);
    assert!(log.append_batch(Vec::new()).await.expect("empty batch").is_empty());
}

pub async fn subject_filters_select_events(log: &dyn EventLog) {
    let filters = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut seq = std::collections::HashMap::new();
    for (i, subject) in ["t.a.x1", "t.b.y", "t.a.x2", "t.a.z.deep", "t.c"].iter().enumerate() {
        let o = log.append(ev(subject, &format!("f{i}"), None, subject)).await.expect("append");
        seq.insert(*subject, o.seq);
    }
    // The last event of the subjects a filter selects.
    assert_eq!(log.last_seq_matching(&filters(&["t.a.*"])).await.expect("last matching"), seq["t.a.x2"]);
    assert_eq!(log.last_seq_matching(&filters(&["t.a.>"])).await.expect("last matching"), seq["t.a.z.deep"]);
    assert_eq!(log.last_seq_matching(&filters(&["t.b.y", "t.c"])).await.expect("last matching"), seq["t.c"]);
    assert_eq!(log.last_seq_matching(&filters(&["t.*.y"])).await.expect("last matching"), seq["t.b.y"]);
    assert_eq!(log.last_seq_matching(&filters(&["t.none.>"])).await.expect("last matching"), 0);
    assert!(matches!(log.last_seq_matching(&[]).await, Err(LogError::Invalid(_))));
    assert!(matches!(log.last_seq_matching(&filters(&["t..a"])).await, Err(LogError::Invalid(_))));
    assert!(matches!(log.subscribe_matching(1, &filters(&["t.>.a"])).await, Err(LogError::Invalid(_))));

    // A subscription delivers those events only, in order, from a sequence and then live.
    let mut sub = log.subscribe_matching(seq["t.a.x1"] + 1, &filters(&["t.a.>", "t.c"])).await.expect("subscribe");
    for subject in ["t.a.x2", "t.a.z.deep", "t.c"] {
        let e = next_event(&mut sub).await;
        assert_eq!((e.subject.as_str(), e.seq), (subject, seq[subject]));
    }
    log.append(ev("t.b.live", "f5", None, "skipped")).await.expect("append");
    let live = log.append(ev("t.a.live", "f6", None, "live")).await.expect("append");
    let e = next_event(&mut sub).await;
    assert_eq!((e.subject.as_str(), e.seq, e.payload.as_ref()), ("t.a.live", live.seq, &b"live"[..]));
    assert_eq!(log.last_seq_matching(&filters(&["t.a.>"])).await.expect("last matching"), live.seq);
}

use std::sync::Arc;

use corral_event_log::{EventLog, NewEvent, SledLog};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_log_passes_the_conformance_suite() {
    let dirs = std::sync::Mutex::new(Vec::new());
    corral_event_log::conformance::run_all(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = SledLog::open(dir.path()).expect("open");
        dirs.lock().expect("dirs").push(dir);
        async move { Arc::new(log) as Arc<dyn EventLog> }
    })
    .await;
}

#[tokio::test]
async fn sled_log_continues_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = SledLog::open(dir.path()).expect("open");
        for i in 0..3 {
            log.append(NewEvent {
                subject: "t.x".into(),
                msg_id: format!("m{i}"),
                expected_subject_seq: None,
                headers: vec![],
                payload: "p".into(),
            })
            .await
            .expect("append");
        }
    }
    let log = SledLog::open(dir.path()).expect("reopen");
    assert_eq!(log.last_seq().await.expect("last"), 3);
    assert_eq!(log.last_subject_seq("t.x").await.expect("subject"), 3);
    let dup = log
        .append(NewEvent {
            subject: "t.x".into(),
            msg_id: "m2".into(),
            expected_subject_seq: None,
            headers: vec![],
            payload: "p".into(),
        })
        .await
        .expect("dup");
    assert!(dup.duplicate, "message ids survive a reopen");
    let next = log
        .append(NewEvent {
            subject: "t.x".into(),
            msg_id: "m9".into(),
            expected_subject_seq: Some(3),
            headers: vec![],
            payload: "p".into(),
        })
        .await
        .expect("append");
    assert_eq!(next.seq, 4);
}

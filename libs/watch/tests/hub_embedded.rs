//! The publisher and the hub on two embedded logs, with a ring of eight events so that watches
//! read the stream itself: racing publishers store each change once, and a watch that resumes
//! far behind, or stops reading, gets every change in order.

use std::sync::Arc;
use std::time::Duration;

use corral_cluster_model::codec::encode_event;
use corral_domain::{ClusterEvent, ClusterSpec};
use corral_event_log::{EventLog, SledLog};
use corral_proto::v1alpha1::Cluster;
use corral_watch::{Hub, HubConfig, WatchError, WatchRequest, Watcher};
use tokio::sync::mpsc;

struct Everyone;

#[async_trait::async_trait]
impl Watcher for Everyone {
    fn may_see(&self, _: &Cluster) -> bool {
        true
    }
    async fn still_authorised(&self) -> Result<(), String> {
        Ok(())
    }
}

struct Logs {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    internal: Arc<dyn EventLog>,
    public: Arc<dyn EventLog>,
    key: corral_secrets::SealingKey,
}

fn logs() -> Logs {
    let (a, b) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let internal: Arc<dyn EventLog> = Arc::new(SledLog::open(a.path()).expect("internal log"));
    let public: Arc<dyn EventLog> =
        Arc::new(SledLog::open_with_retention(b.path(), Duration::from_secs(3600)).expect("public log"));
    Logs { _dirs: (a, b), internal, public, key: corral_secrets::SealingKey::generate() }
}

/// Registers cluster `i` in the internal log, as the registry would; its revision.
async fn register(logs: &Logs, i: usize) -> u64 {
    let spec = ClusterSpec { server: format!("https://c{i}.example"), name: format!("c{i}"), ..Default::default() };
    let id = corral_domain::cluster_id(&spec.server);
    let (event_type, payload) = encode_event(&ClusterEvent::Registered { spec }, &id, &logs.key);
    let draft = corral_events::Draft {
        subject: corral_events::subject::cluster(&id),
        aggregate_id: id.clone(),
        aggregate_version: 1,
        expected_subject_seq: Some(0),
        event_type,
        payload,
        msg_id: None,
    };
    let (event, _) = corral_events::write(draft, &corral_events::Origin::default());
    logs.internal.append(event).await.expect("append").seq
}

async fn hub(logs: &Logs) -> Arc<Hub> {
    let view = corral_cluster_model::start_view(logs.internal.clone(), Duration::from_secs(10), std::future::pending())
        .await
        .expect("view");
    let config = HubConfig { ring: 8, ..Default::default() };
    Hub::start_with(logs.internal.clone(), logs.public.clone(), view, config, std::future::pending())
        .await
        .expect("hub")
}

fn publish(logs: &Logs) {
    let run = corral_watch::publisher::run(
        logs.internal.clone(),
        logs.public.clone(),
        Duration::from_secs(3600),
        std::future::pending(),
    );
    tokio::spawn(run);
}

async fn revisions(rx: &mut mpsc::Receiver<Result<Arc<corral_watch::Rendered>, WatchError>>, n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    while out.len() < n {
        let e = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an event in time")
            .expect("the watch runs")
            .expect("no error");
        out.push(e.event.resource_version.parse().expect("decimal"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_publishers_store_each_change_once_and_far_behind_watches_miss_nothing() {
    let logs = logs();
    // Three publishers, all racing for every event.
    publish(&logs);
    publish(&logs);
    publish(&logs);
    let mut expected = Vec::new();
    for i in 0..100 {
        expected.push(register(&logs, i).await);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while logs.public.last_seq().await.expect("last") < 100 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stored = logs.public.read(1, 1000).await.expect("read");
    let announced: Vec<u64> =
        stored.iter().map(|e| corral_watch::public::revision_of(e).expect("a revision")).collect();
    assert_eq!(announced, expected, "each change once, in order");

    // A hub started now holds the last eight; a watch from the start reads the rest from the stream.
    let hub = hub(&logs).await;
    let from_start = WatchRequest { resource_version: "0".into(), ..Default::default() };
    let watch = hub.open(from_start.clone(), Arc::new(Everyone)).await.expect("open");
    let (tx, mut rx) = mpsc::channel(4);
    tokio::spawn(watch.run(tx));
    assert_eq!(revisions(&mut rx, 100).await, expected);

    // A watch that reads nothing while a hundred more changes go by gets them all afterwards.
    let now = WatchRequest { send_initial_events: Some(false), ..Default::default() };
    let watch = hub.open(now, Arc::new(Everyone)).await.expect("open");
    let (tx, mut slow) = mpsc::channel(1);
    tokio::spawn(watch.run(tx));
    let mut more = Vec::new();
    for i in 100..200 {
        more.push(register(&logs, i).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(revisions(&mut slow, 100).await, more, "the slow watch caught up from the stream");

    // From the middle: exactly what came after.
    let middle = WatchRequest { resource_version: expected[49].to_string(), ..Default::default() };
    let watch = hub.open(middle, Arc::new(Everyone)).await.expect("open");
    let (tx, mut rx) = mpsc::channel(16);
    tokio::spawn(watch.run(tx));
    let after: Vec<u64> = expected[50..].iter().chain(&more).copied().collect();
    assert_eq!(revisions(&mut rx, after.len()).await, after);
}

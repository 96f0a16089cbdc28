//! The public stream on NATS under the faults and loads a deployment sees: registry replicas (the
//! publishers) killed with SIGKILL during writes, a gateway replaced, a thousand watchers on one
//! gateway, and a watcher that stops reading while thousands of changes go by.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::suite::grpc_cluster;
use common::{Api, DeploymentApi as _};
use corral_proto::cluster::{ClusterCreateRequest, ClusterId, ClusterQuery, ClusterUpdateRequest};
use corral_proto::watch::cluster_watch_client::ClusterWatchClient;
use corral_proto::watch::{ClusterEvent, WatchClustersRequest};
use futures::StreamExt as _;

async fn watch(api: &Api, req: WatchClustersRequest) -> tonic::Streaming<ClusterEvent> {
    let mut client = ClusterWatchClient::with_interceptor(api.channel.clone(), api.interceptor());
    client.watch(req).await.expect("watch").into_inner()
}

fn from(revision: u64) -> WatchClustersRequest {
    WatchClustersRequest { resource_version: revision.to_string(), ..Default::default() }
}

/// The revisions of the next `n` change events (bookmarks left out).
async fn revisions(events: &mut tonic::Streaming<ClusterEvent>, n: usize) -> Vec<u64> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let e = tokio::time::timeout(Duration::from_secs(30), events.message())
            .await
            .expect("an event in time")
            .expect("the stream is open")
            .expect("an event");
        if e.r#type != "BOOKMARK" {
            out.push(e.resource_version.parse().expect("decimal"));
        }
    }
    out
}

/// Creates, relabels and deletes clusters from `tasks` writers until `stop`; errors (a registry
/// being killed) are counted and the writer goes on.
fn start_writers(
    api: &Api,
    tasks: usize,
    tag: &'static str,
    stop: Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<usize>> {
    (0..tasks)
        .map(|t| {
            let mut grpc = api.grpc.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut refused = 0;
                let mut i = 0;
                while stop.load(Ordering::Relaxed) == 0 {
                    i += 1;
                    let server = format!("https://{tag}-{t}-{i}.example");
                    let created = grpc
                        .create(ClusterCreateRequest {
                            cluster: Some(grpc_cluster(&server, &format!("{tag}-{t}-{i}"))),
                            upsert: false,
                        })
                        .await;
                    if created.is_err() {
                        refused += 1;
                        continue;
                    }
                    if i % 3 == 0 {
                        let mut c = grpc_cluster(&server, "");
                        c.labels = [("n".to_string(), i.to_string())].into();
                        let id = Some(ClusterId { r#type: "server".into(), value: server.clone() });
                        let req = ClusterUpdateRequest { cluster: Some(c), updated_fields: vec!["labels".into()], id };
                        refused += usize::from(grpc.update(req).await.is_err());
                    }
                    if i % 5 == 0 {
                        let q = ClusterQuery { server, ..Default::default() };
                        refused += usize::from(grpc.delete(q).await.is_err());
                    }
                }
                refused
            })
        })
        .collect()
}

/// The revision of every event on the internal cluster subjects, in log order: each makes exactly
/// one public event.
async fn internal_cluster_revisions(js: &async_nats::jetstream::Context) -> Vec<u64> {
    stream_values(js, "CORRAL", "corral.cluster.>", |m| Some(m.info().ok()?.stream_sequence)).await
}

/// `ce-sequence` of every message of `CORRAL_EVENTS`, in stream order.
async fn public_revisions(js: &async_nats::jetstream::Context) -> Vec<u64> {
    stream_values(js, "CORRAL_EVENTS", "corral-events.v1.>", |m| {
        m.headers.as_ref()?.get("ce-sequence")?.as_str().parse().ok()
    })
    .await
}

async fn stream_values(
    js: &async_nats::jetstream::Context,
    stream: &str,
    filter: &str,
    value: impl Fn(&async_nats::jetstream::Message) -> Option<u64>,
) -> Vec<u64> {
    let mut s = js.get_stream(stream).await.expect("stream");
    let last = s.info().await.expect("info").state.last_sequence;
    let consumer = s
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: filter.into(),
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut out = Vec::new();
    loop {
        let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(2), messages.next()).await else { break };
        let m = m.expect("message");
        let seq = m.info().expect("info").stream_sequence;
        out.push(value(&m).expect("a value"));
        if seq >= last {
            break;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_stream_is_exactly_once_whatever_publishers_die() {
    let mut d = common::Deployment::start(2, 1).await;
    let api = d.api(0).await;
    let mut watcher = watch(&api, from(0)).await;
    let stop = Arc::new(AtomicUsize::new(0));
    let writers = start_writers(&api, 4, "once", stop.clone());
    // Each registry replica in turn dies with SIGKILL mid-stream and a new one takes its place.
    for i in [0, 1, 0] {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        d.registries[i].kill_9().await;
        let dir = tempfile::tempdir().expect("tempdir");
        d.registries[i] = d.spawn_registry(dir.path()).await;
        d.registry_dirs[i] = dir;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(1, Ordering::Relaxed);
    let mut refused = 0;
    for w in writers {
        refused += w.await.expect("writer");
    }

    let client = d.client().await;
    let js = async_nats::jetstream::new(client);
    let internal = internal_cluster_revisions(&js).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let public = loop {
        let public = public_revisions(&js).await;
        if public.len() >= internal.len() || Instant::now() > deadline {
            break public;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "{} changes while 3 publishers were killed ({refused} writes refused meanwhile): {} public events",
        internal.len(),
        public.len()
    );
    assert_eq!(public, internal, "CORRAL_EVENTS holds each change once, in order, with no gap");
    let seen = revisions(&mut watcher, internal.len()).await;
    assert_eq!(seen, internal, "the watch saw the same");

    // A new gateway (its memory empty) resumes from the middle exactly, reading the stream.
    d.gateways[0].kill_9().await;
    let (g, addr) = d.spawn_gateway().await;
    d.gateways[0] = g;
    d.gateway_addrs[0] = addr;
    let api = d.api(0).await;
    let middle = internal.len() / 2;
    let mut resumed = watch(&api, from(internal[middle - 1])).await;
    assert_eq!(revisions(&mut resumed, internal.len() - middle).await, internal[middle..]);
}

/// Creates `per_task` clusters from each of `tasks` writers; the revisions they answered with,
/// in order.
async fn create_many(api: &Api, tag: &str, tasks: usize, per_task: usize) -> Vec<u64> {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let mut grpc = api.grpc.clone();
        let tag = tag.to_string();
        handles.push(tokio::spawn(async move {
            let mut revisions = Vec::with_capacity(per_task);
            for i in 0..per_task {
                let server = format!("https://{tag}-{t}-{i}.example");
                let cluster = grpc_cluster(&server, &format!("{tag}-{t}-{i}"));
                let r =
                    grpc.create(ClusterCreateRequest { cluster: Some(cluster), upsert: false }).await.expect("create");
                let revision = r.metadata().get("x-corral-revision").expect("revision").to_str().expect("ascii");
                revisions.push(revision.parse::<u64>().expect("decimal"));
            }
            revisions
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("writer"));
    }
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_watchers_and_a_slow_one_miss_nothing() {
    let d = common::Deployment::start(1, 1).await;
    let api = d.api(0).await;
    // Several connections, as many clients would open; each carries a share of the watches.
    let mut apis = Vec::new();
    for _ in 0..10 {
        apis.push(common::wait_for_api(d.gateway_addrs[0]).await);
    }
    let now = WatchClustersRequest { send_initial_events: Some(false), ..Default::default() };
    let opened = Instant::now();
    let mut watchers = Vec::new();
    for i in 0..1000 {
        watchers.push(watch(&apis[i % apis.len()], now.clone()).await);
    }
    println!("1000 watches opened in {} ms", opened.elapsed().as_millis());
    let expected = create_many(&api, "many", 4, 5).await;
    let all = futures::future::join_all(watchers.iter_mut().map(|w| revisions(w, expected.len()))).await;
    let dropped: usize = all.iter().map(|got| expected.iter().filter(|r| !got.contains(r)).count()).sum();
    println!("1000 watchers, {} changes: {dropped} events dropped", expected.len());
    assert_eq!(dropped, 0);
    assert!(all.iter().all(|got| got == &expected), "every watcher, every change, in order");
    drop(watchers);

    // 4,500 changes, more than a gateway keeps in memory for its watches, while one watcher reads
    // nothing: it catches up from the stream, in order, nothing dropped.
    let mut slow = watch(&api, now.clone()).await;
    let started = Instant::now();
    let expected = create_many(&api, "slow", 16, 282).await;
    println!("{} creates in {} ms", expected.len(), started.elapsed().as_millis());
    let slow_started = Instant::now();
    assert_eq!(revisions(&mut slow, expected.len()).await, expected, "the slow watcher caught up");
    println!("the slow watcher read them all in {} ms", slow_started.elapsed().as_millis());
}

//! The stream of cluster changes under load: how long a change takes from the answer to the
//! command that made it to its event at a watcher, with 1, 100 and 1,000 watchers, beside the
//! floor measured in the same run (a bare JetStream publish delivered to an ordered consumer);
//! and Create's throughput with 1,000 idle watchers attached against without.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_proto::cluster::ClusterCreateRequest;
use corral_proto::watch::WatchClustersRequest;
use futures::StreamExt as _;
use tonic::transport::Channel;

use crate::{BearerToken, Client, Stats, cluster, drive, report, us};

type Watcher = tonic::client::Grpc<tonic::service::interceptor::InterceptedService<Channel, BearerToken>>;

/// The two fields of a `ClusterEvent` the watchers here read: they measure when events arrive,
/// not what parsing a cluster costs a client.
#[derive(Clone, PartialEq, prost::Message)]
struct ThinEvent {
    #[prost(string, tag = "1")]
    r#type: String,
    #[prost(string, tag = "3")]
    resource_version: String,
}

async fn open(w: &mut Watcher, req: WatchClustersRequest) -> anyhow::Result<tonic::Streaming<ThinEvent>> {
    w.ready().await?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/corral.watch.v1.ClusterWatch/Watch");
    let codec = tonic_prost::ProstCodec::<WatchClustersRequest, ThinEvent>::default();
    Ok(w.server_streaming(tonic::Request::new(req), path, codec).await?.into_inner())
}

/// Publish → delivery to an ordered consumer, one message at a time: what any event stream on
/// JetStream costs from a write to a reader.
pub async fn delivery_floor(nats_url: &str, samples: usize) -> anyhow::Result<Stats> {
    let nats = async_nats::connect(nats_url).await?;
    let js = async_nats::jetstream::new(nats);
    let _ = js.delete_stream("LOADEVENTS").await;
    let stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "LOADEVENTS".into(),
            subjects: vec!["loadevents.>".into()],
            ..Default::default()
        })
        .await?;
    let consumer = stream.create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default()).await?;
    let mut messages = consumer.messages().await?;
    let mut out = Vec::with_capacity(samples);
    let started = Instant::now();
    for i in 0..samples {
        let t0 = Instant::now();
        js.publish(format!("loadevents.{i}"), bytes::Bytes::from_static(&[0u8; 256])).await?.await?;
        messages.next().await.ok_or_else(|| anyhow::anyhow!("consumer ended"))??;
        out.push(t0.elapsed());
    }
    let elapsed = started.elapsed();
    let _ = js.delete_stream("LOADEVENTS").await;
    out.sort();
    Ok(Stats { name: "floor: jetstream pub -> consumer".into(), samples: out, elapsed, errors: 0, cpu: Vec::new() })
}

async fn watchers(addr: SocketAddr, n: usize, auth: &BearerToken) -> anyhow::Result<Vec<Watcher>> {
    // As many clients would: a connection for every hundred watches.
    let conns = n.div_ceil(100).max(1);
    let mut channels = Vec::new();
    for _ in 0..conns {
        channels.push(Channel::from_shared(format!("http://{addr}"))?.connect().await?);
    }
    Ok((0..n)
        .map(|i| {
            let service =
                tonic::service::interceptor::InterceptedService::new(channels[i % conns].clone(), auth.clone());
            tonic::client::Grpc::new(service)
        })
        .collect())
}

fn from_now(selector: &str) -> WatchClustersRequest {
    WatchClustersRequest { selector: selector.into(), send_initial_events: Some(false), ..Default::default() }
}

/// Opens a watch on every client; tasks that note when each event arrives until `stop` turns true.
async fn attach(
    clients: Vec<Watcher>,
    selector: &str,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<Vec<(u64, Instant)>>>> {
    let mut tasks = Vec::new();
    for mut w in clients {
        let mut events = open(&mut w, from_now(selector)).await?;
        let mut stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                tokio::select! {
                    e = events.message() => match e {
                        Ok(Some(e)) if e.r#type != "BOOKMARK" => {
                            if let Ok(rv) = e.resource_version.parse::<u64>() {
                                seen.push((rv, Instant::now()));
                            }
                        }
                        Ok(Some(_)) => {}
                        _ => break,
                    },
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
            seen
        }));
    }
    Ok(tasks)
}

/// From each create's answer to its event at every watcher, with `watchers_count` watching; the
/// events that never arrived are counted as errors.
pub async fn latency(
    addr: SocketAddr,
    auth: &BearerToken,
    gw: &[Client],
    watchers_count: usize,
    creates: usize,
    first: usize,
    pause: Duration,
) -> anyhow::Result<Stats> {
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let tasks = attach(watchers(addr, watchers_count, auth).await?, "", &stop).await?;
    let mut answered: HashMap<u64, Instant> = HashMap::new();
    let started = Instant::now();
    let mut errors = 0;
    let mut g = gw[0].clone();
    for i in 0..creates {
        let request = ClusterCreateRequest { cluster: Some(cluster(first + i)), upsert: false };
        match g.create(request).await {
            Ok(r) => {
                let at = Instant::now();
                match r.metadata().get("x-corral-revision").and_then(|v| v.to_str().ok()?.parse().ok()) {
                    Some(rv) => drop(answered.insert(rv, at)),
                    None => errors += 1,
                }
            }
            Err(_) => errors += 1,
        }
        // One change at a time, apart enough for its events to reach every watcher before the
        // next one: latency, not queueing.
        tokio::time::sleep(pause).await;
    }
    // Time for the last event to reach every watcher.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let elapsed = started.elapsed();
    let _ = stop_tx.send(true);
    let mut samples = Vec::with_capacity(answered.len() * watchers_count);
    for t in tasks {
        let seen: HashMap<u64, Instant> = t.await.unwrap_or_default().into_iter().collect();
        for (rv, at) in &answered {
            match seen.get(rv) {
                // An event may reach a watcher before the answer reaches the client: no wait.
                Some(arrived) => samples.push(arrived.saturating_duration_since(*at)),
                None => errors += 1,
            }
        }
    }
    samples.sort();
    Ok(Stats { name: format!("event latency, {watchers_count} watcher(s)"), samples, elapsed, errors, cpu: Vec::new() })
}

/// Create with `clients` tasks, `count` new clusters from `first`, with `idle` watchers attached
/// whose selector matches none of them.
pub async fn creates_beside_idle_watchers(
    addr: SocketAddr,
    auth: &BearerToken,
    gw: Arc<Vec<Client>>,
    clients: usize,
    idle: usize,
    count: usize,
    first: usize,
) -> anyhow::Result<Stats> {
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let tasks = attach(watchers(addr, idle, auth).await?, "bench-idle=none", &stop).await?;
    let name = format!("Create, {idle} idle watchers");
    let stats = drive(&name, clients, Some(count), 0, move |i| {
        let mut g = gw[i % gw.len()].clone();
        async move { g.create(ClusterCreateRequest { cluster: Some(cluster(first + i)), upsert: false }).await.is_ok() }
    })
    .await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    Ok(stats)
}

/// The event phases, printed with their floor and targets.
pub async fn measure(
    nats_url: &str,
    addr: SocketAddr,
    auth: &BearerToken,
    gw: Arc<Vec<Client>>,
    concurrency: usize,
    first: usize,
) -> anyhow::Result<()> {
    let floor = delivery_floor(nats_url, 500).await?;
    report(&floor, None);
    let floor_p50 = floor.pct(0.5);
    let mut next = first;
    for (watchers, creates, pause_ms) in [(1usize, 300usize, 2u64), (100, 200, 10), (1000, 100, 50)] {
        let stats = latency(addr, auth, &gw, watchers, creates, next, Duration::from_millis(pause_ms)).await?;
        next += creates;
        report(&stats, Some(("pub->consumer", floor_p50)));
    }
    let count = 3000;
    let without = creates_beside_idle_watchers(addr, auth, gw.clone(), concurrency, 0, count, next).await?;
    next += count;
    let with = creates_beside_idle_watchers(addr, auth, gw.clone(), concurrency, 1000, count, next).await?;
    report(&without, None);
    report(&with, None);
    println!(
        "Create throughput with 1000 idle watchers: {:.0}% of without ({:.0} vs {:.0} ops/s; p50 {:.1}us vs {:.1}us)",
        with.ops() / without.ops().max(0.001) * 100.0,
        with.ops(),
        without.ops(),
        us(with.pct(0.5)),
        us(without.pct(0.5)),
    );
    Ok(())
}

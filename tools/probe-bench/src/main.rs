//! Probe benchmark: registers N clusters (spread over a few fake Kubernetes API servers, each
//! cluster under its own URL) on a private nats-server, starts R health-probe replicas, and
//! prints how long the first full round takes (every cluster observed once), how many events a
//! steady healthy fleet appends per minute (target: zero), and the process's peak memory.
//!
//! The registry and the probe replicas are the service binaries (`corral-registry`,
//! `corral-health-probe`, built beside this one), each a process of its own on real NATS
//! JetStream; the fake API servers run in a child process too (`fake-kube-servers`), so client
//! and server connections do not share one file-descriptor limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use corral_event_log::{EventLog, NatsLog};
use corral_proto::cluster::ClusterCreateRequest;
use corral_proto::registry::{Command, command, reply};
use corral_proto::v1alpha1::{Cluster, ClusterConfig, TlsClientConfig};
use corral_service_api::ClusterCommands;
use corral_test_harness::ServiceProcess;
use futures::StreamExt;

#[derive(Parser, Debug)]
#[command(about = "Health-probe benchmark over a large fleet")]
struct Args {
    /// Fleet sizes to measure, one fresh deployment each.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    clusters: Vec<usize>,
    /// Fake API servers the fleet is spread over.
    #[arg(long, default_value_t = 4)]
    servers: usize,
    /// Health-probe replicas.
    #[arg(long, default_value_t = 2)]
    replicas: usize,
    /// Seconds between probe rounds.
    #[arg(long, default_value_t = 10.0)]
    interval: f64,
    /// Probes running at once per replica.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds of steady state over which appended events are counted.
    #[arg(long, default_value_t = 60.0)]
    steady_seconds: f64,
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A service binary built beside this one.
fn sibling(name: &str) -> std::path::PathBuf {
    std::env::current_exe().map(|e| e.with_file_name(name)).unwrap_or_else(|_| name.into())
}

/// The peak resident memory of process `pid`.
fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

async fn observed(log: &NatsLog) -> anyhow::Result<usize> {
    let mut n = 0;
    let mut from = 1;
    loop {
        let batch = log.read(from, 10_000).await?;
        let Some(last) = batch.last() else { break };
        from = last.seq + 1;
        n += batch.iter().filter(|e| e.subject.starts_with("corral.clusterstate.")).count();
    }
    Ok(n)
}

async fn run_size(args: &Args, n: usize) -> anyhow::Result<()> {
    let nats = corral_test_harness::NatsServer::start().await?;
    let client = async_nats::connect(nats.url()).await?;
    let seal_key = corral_secrets::SealingKey::generate().to_base64();
    let env = vec![("CORRAL_SEAL_KEY".to_string(), seal_key)];
    let fakes = FakeServers::start(args.servers.max(1)).await?;
    let data = std::env::temp_dir().join(format!("corral-probe-bench-{}", std::process::id()));
    let registry_args = ["--nats-url".to_string(), nats.url(), "--data-dir".into(), data.display().to_string()];
    let ready = |name: &str| corral_process::ready_line(name, None);
    let registry_process = ServiceProcess::spawn(
        &sibling("corral-registry"),
        &registry_args,
        &env,
        &ready("corral-registry"),
        Duration::from_secs(60),
    )
    .await?;
    let registry = Arc::new(corral_service_api::nats::NatsClient::new(client.clone(), Duration::from_secs(30)));
    let started = Instant::now();
    let configs: Vec<ClusterConfig> = fakes
        .servers
        .iter()
        .map(|(_, ca)| ClusterConfig {
            bearer_token: "bench-token".into(),
            tls_client_config: Some(TlsClientConfig { ca_data: ca.as_bytes().to_vec(), ..Default::default() }),
            ..Default::default()
        })
        .collect();
    let urls: Vec<String> = fakes.servers.iter().map(|(u, _)| u.clone()).collect();
    let created = futures::stream::iter(0..n)
        .map(|i| {
            let (registry, config, url) =
                (registry.clone(), configs[i % configs.len()].clone(), urls[i % urls.len()].clone());
            async move {
                let cluster = Cluster {
                    server: format!("{url}/k/c{i}"),
                    name: format!("c{i}"),
                    config: Some(config),
                    ..Default::default()
                };
                let cmd = Command {
                    kind: Some(command::Kind::Create(ClusterCreateRequest { cluster: Some(cluster), upsert: false })),
                    ..Default::default()
                };
                !matches!(registry.command(cmd).await.result, Some(reply::Result::Error(_)))
            }
        })
        .buffer_unordered(64)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await;
    anyhow::ensure!(created == n, "only {created} of {n} clusters registered");
    println!("{n} clusters registered in {:.1} s", started.elapsed().as_secs_f64());

    // The replicas start together; the round measured is split between them.
    let probe_args = [
        "--nats-url".to_string(),
        nats.url(),
        "--probe-interval-seconds".into(),
        args.interval.to_string(),
        "--probe-concurrency".into(),
        args.concurrency.to_string(),
    ];
    let (probe_bin, probe_ready) = (sibling("corral-health-probe"), ready("corral-health-probe"));
    let round_started = Instant::now();
    let mut probes = Vec::new();
    for _ in 0..args.replicas.max(1) {
        probes.push(ServiceProcess::spawn(&probe_bin, &probe_args, &env, &probe_ready, Duration::from_secs(60)).await?);
    }
    let reader = NatsLog::new(client.clone(), Default::default()).await?;
    loop {
        // The in-cluster entry is not probed outside a pod.
        if observed(&reader).await? >= n {
            break;
        }
        anyhow::ensure!(
            round_started.elapsed() < Duration::from_secs(600),
            "the first round did not finish in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let round = round_started.elapsed();
    let pids: Vec<u32> = probes.iter().chain([&registry_process]).filter_map(ServiceProcess::pid).collect();
    let events_before = reader.last_seq().await?;
    let steady = Duration::from_secs_f64(args.steady_seconds);
    tokio::time::sleep(steady).await;
    let appended = reader.last_seq().await? - events_before;
    println!(
        "{n} clusters, {} replicas, interval {:.0} s, concurrency {}: first full round {:.2} s ({:.0} probes/s); \
         steady state: {} events appended in {:.0} s = {:.1} per minute; peak RSS of the registry and probes {:.0} MiB",
        args.replicas,
        args.interval,
        args.concurrency,
        round.as_secs_f64(),
        n as f64 / round.as_secs_f64(),
        appended,
        steady.as_secs_f64(),
        appended as f64 * 60.0 / steady.as_secs_f64(),
        pids.iter().map(|p| peak_rss_mib(*p)).sum::<f64>()
    );
    if appended > 0 {
        // What changed in a fleet that should be steady: the observations, grouped.
        use prost::Message;
        let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
        for e in reader.read(events_before + 1, 100_000).await? {
            if let Ok(env) = corral_proto::events::EventEnvelope::decode(e.payload.as_ref())
                && let Ok(o) = corral_proto::events::ClusterConnectionObserved::decode(env.payload.as_slice())
            {
                *kinds
                    .entry(format!("{} {}", o.status, o.message.chars().take(120).collect::<String>()))
                    .or_default() += 1;
            }
        }
        for (k, v) in kinds {
            println!("  {v:>6} × {k}");
        }
    }
    drop(probes);
    drop(registry_process);
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}

/// Fake API servers in a child process: (URL, CA PEM) each.
struct FakeServers {
    servers: Vec<(String, String)>,
    _child: tokio::process::Child,
}

impl FakeServers {
    async fn start(count: usize) -> anyhow::Result<FakeServers> {
        use tokio::io::AsyncBufReadExt;
        let exe = std::env::current_exe()?.with_file_name("fake-kube-servers");
        let mut child = tokio::process::Command::new(exe)
            .arg(count.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut servers = Vec::new();
        while let Some(line) = lines.next_line().await? {
            if line == "ready" {
                return Ok(FakeServers { servers, _child: child });
            }
            let (url, ca) = line.split_once('\t').ok_or_else(|| anyhow::anyhow!("bad line {line:?}"))?;
            servers.push((url.to_string(), std::fs::read_to_string(ca)?));
        }
        anyhow::bail!("fake-kube-servers ended before it was ready")
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for n in args.clusters.clone() {
        run_size(&args, n).await?;
    }
    Ok(())
}

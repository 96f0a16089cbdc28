//! Drives a gateway over gRPC with N concurrent clients and prints, for Create, Get, List (at 1k
//! and 10k clusters) and Update, p50 / p99 / operations per second, beside the floors measured in
//! the same run: a bare tonic unary round trip (an in-process echo server on loopback) and a bare
//! JetStream publish-with-ack on the given NATS server; then the stream of cluster changes: event
//! latency with 1, 100 and 1,000 watchers beside its floor, and Create beside idle watchers.

mod cpu;
mod durable;
mod events;
mod flow;
mod tracing_cost;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use corral_proto::cluster::cluster_service_client::ClusterServiceClient;
use corral_proto::cluster::cluster_service_server::{ClusterService, ClusterServiceServer};
use corral_proto::cluster::{ClusterCreateRequest, ClusterId, ClusterQuery, ClusterResponse, ClusterUpdateRequest};
use corral_proto::v1alpha1::{Cluster, ClusterList};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

#[derive(Parser, Debug)]
#[command(about = "Load tool for the corral gateway")]
struct Args {
    /// Gateway address (gRPC).
    #[arg(long, default_value = "127.0.0.1:8080")]
    gateway: SocketAddr,
    /// NATS URL for the publish-with-ack floor.
    #[arg(long, required_unless_present = "otlp_sink", default_value = "")]
    nats_url: String,
    /// Concurrent clients for Create, Get and Update.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Concurrent clients for List.
    #[arg(long, default_value_t = 4)]
    list_concurrency: usize,
    /// Seconds each Get / Update / floor phase runs.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Cluster counts at which List is measured.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    list_sizes: Vec<usize>,
    /// Authenticated mode: a second gateway on the same deployment with authentication on.
    /// Get is then measured through both, in turns, and the cost of authentication + RBAC per
    /// request is printed beside the figures of `--gateway` (which should run --disable-auth).
    #[arg(long)]
    auth_gateway: Option<SocketAddr>,
    /// Only the floors and the authentication comparison, on the clusters an earlier run of this
    /// tool registered (as many as the largest of --list-sizes).
    #[arg(long)]
    auth_only: bool,
    /// Account to log in as on the gateways that require it.
    #[arg(long, default_value = "admin")]
    username: String,
    /// Its password.
    #[arg(long, env = "CORRAL_LOAD_PASSWORD", default_value = "")]
    password: String,
    /// A process of the deployment, as NAME=PID, whose CPU time per operation is printed with
    /// each phase (this tool's own always is). Repeat for each process.
    #[arg(long = "cpu-of", value_parser = cpu::parse_named_pid)]
    cpu_of: Vec<(String, u32)>,
    /// Only the floors and the stream of cluster changes (event latency, Create beside idle
    /// watchers).
    #[arg(long)]
    events_only: bool,
    /// Durable writes on a three-node cluster (--nats-url lists the three): the floor of one
    /// create's event on an R3 stream (publish-with-ack expecting its subject empty), then
    /// Create, Update and Get through the gateway against it. Nothing else is measured.
    #[arg(long)]
    durable: bool,
    /// Tracing cost: `--gateway` belongs to a deployment that exports no spans, this one to a
    /// deployment (its own nats-server and registry) that samples and exports every trace.
    /// Create and Get are measured through both, in turns. Nothing else is measured.
    #[arg(long)]
    traced_gateway: Option<SocketAddr>,
    /// Creates per turn in the tracing comparison with `--concurrency` clients (a tenth of it
    /// with one client).
    #[arg(long, default_value_t = 3000)]
    creates_per_turn: usize,
    /// Run only an OTLP trace receiver on this address (for the traced deployment), until
    /// SIGTERM; it prints how many spans it received.
    #[arg(long)]
    otlp_sink: Option<SocketAddr>,
}

/// Sends the session token with every call, as an Argo CD client does.
#[derive(Clone, Default)]
struct BearerToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

type Client = ClusterServiceClient<tonic::service::interceptor::InterceptedService<Channel, BearerToken>>;

/// Logs in over gRPC and returns the bearer interceptor for the session.
async fn login(addr: SocketAddr, username: &str, password: &str) -> anyhow::Result<BearerToken> {
    use corral_proto::session::SessionCreateRequest;
    use corral_proto::session::session_service_client::SessionServiceClient;
    let channel = Channel::from_shared(format!("http://{addr}"))?.connect().await?;
    let req = SessionCreateRequest { username: username.into(), password: password.into(), token: String::new() };
    let token = SessionServiceClient::new(channel).create(req).await?.into_inner().token;
    Ok(BearerToken(Some(format!("Bearer {token}").parse()?)))
}

struct Stats {
    name: String,
    samples: Vec<Duration>,
    elapsed: Duration,
    errors: usize,
    /// CPU time each watched process spent during the phase.
    cpu: Vec<(String, Duration)>,
}

impl Stats {
    fn pct(&self, p: f64) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.samples.len() as f64 - 1.0) * p).round() as usize;
        self.samples[i]
    }
    fn ops(&self) -> f64 {
        self.samples.len() as f64 / self.elapsed.as_secs_f64()
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Runs `op` from `clients` tasks until `total` operations are done or `deadline` passes.
async fn drive<F, Fut>(name: &str, clients: usize, total: Option<usize>, seconds: u64, op: F) -> Stats
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let counter = Arc::new(AtomicUsize::new(0));
    let cpu_before = cpu::snapshot();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (op, counter) = (op.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut errors = 0;
            loop {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                if total.is_some_and(|t| i >= t) || (total.is_none() && Instant::now() >= deadline) {
                    break;
                }
                let t0 = Instant::now();
                if op(i).await {
                    samples.push(t0.elapsed());
                } else {
                    errors += 1;
                }
            }
            (samples, errors)
        }));
    }
    let mut samples = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((s, e)) = t.await {
            samples.extend(s);
            errors += e;
        }
    }
    let elapsed = started.elapsed();
    let cpu = cpu::spent(&cpu_before, &cpu::snapshot());
    samples.sort();
    Stats { name: name.to_string(), samples, elapsed, errors, cpu }
}

struct Echo;

#[tonic::async_trait]
impl ClusterService for Echo {
    async fn list(&self, _: Request<ClusterQuery>) -> Result<Response<ClusterList>, Status> {
        Ok(Response::new(ClusterList::default()))
    }
    async fn create(&self, r: Request<ClusterCreateRequest>) -> Result<Response<Cluster>, Status> {
        Ok(Response::new(r.into_inner().cluster.unwrap_or_default()))
    }
    async fn get(&self, r: Request<ClusterQuery>) -> Result<Response<Cluster>, Status> {
        Ok(Response::new(Cluster { server: r.into_inner().server, ..Default::default() }))
    }
    async fn update(&self, r: Request<ClusterUpdateRequest>) -> Result<Response<Cluster>, Status> {
        Ok(Response::new(r.into_inner().cluster.unwrap_or_default()))
    }
    async fn delete(&self, _: Request<ClusterQuery>) -> Result<Response<ClusterResponse>, Status> {
        Ok(Response::new(ClusterResponse {}))
    }
    async fn rotate_auth(&self, _: Request<ClusterQuery>) -> Result<Response<ClusterResponse>, Status> {
        Ok(Response::new(ClusterResponse {}))
    }
    async fn invalidate_cache(&self, _: Request<ClusterQuery>) -> Result<Response<Cluster>, Status> {
        Ok(Response::new(Cluster::default()))
    }
}

async fn clients(addr: SocketAddr, n: usize, auth: BearerToken) -> anyhow::Result<Vec<Client>> {
    // A few HTTP/2 connections shared by the clients, as a real client pool would.
    let conns = n.clamp(1, 8);
    let mut channels = Vec::new();
    for _ in 0..conns {
        channels.push(Channel::from_shared(format!("http://{addr}"))?.connect().await?);
    }
    Ok((0..n).map(|i| ClusterServiceClient::with_interceptor(channels[i % conns].clone(), auth.clone())).collect())
}

fn server_url(i: usize) -> String {
    format!("https://load-{i}.bench.example.com")
}

fn cluster(i: usize) -> Cluster {
    Cluster {
        server: server_url(i),
        name: format!("load-{i}"),
        labels: [("bench".to_string(), "yes".to_string())].into(),
        ..Default::default()
    }
}

fn report(stats: &Stats, floor: Option<(&str, Duration)>) {
    let ratio =
        floor.map(|(n, f)| format!("  p50/{n} = {:.2}x", us(stats.pct(0.5)) / us(f).max(0.001))).unwrap_or_default();
    println!(
        "{:<28} n={:<8} p50={:>9.1}us p99={:>9.1}us {:>10.0} ops/s errors={}{}",
        stats.name,
        stats.samples.len(),
        us(stats.pct(0.5)),
        us(stats.pct(0.99)),
        stats.ops(),
        stats.errors,
        ratio
    );
    if let Some(line) = cpu::per_op_line(&stats.cpu, stats.samples.len() + stats.errors, stats.elapsed) {
        println!("{line}");
    }
}

// The same allocator as the services, so the client takes no more of the shared cores than it must.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(addr) = args.otlp_sink {
        return tracing_cost::sink(addr).await;
    }
    cpu::watch(args.cpu_of.clone());
    let c = args.concurrency;
    if let Some(traced) = args.traced_gateway {
        return tracing_cost::measure(args.gateway, traced, c, args.seconds.min(3), args.creates_per_turn).await;
    }
    if args.durable {
        let nats = corral_process::connect(&args.nats_url, "corral-load", &Default::default()).await?;
        let token = if args.password.is_empty() {
            BearerToken::default()
        } else {
            login(args.gateway, &args.username, &args.password).await?
        };
        let gw = Arc::new(clients(args.gateway, c, token).await?);
        return durable::measure(nats, &args.nats_url, gw, c, args.seconds).await;
    }

    // Floors, measured on this machine in this run.
    let echo_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let echo_addr = echo_listener.local_addr()?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ClusterServiceServer::new(Echo))
            // TCP_NODELAY as on the gateway, or a quiet connection's replies wait for delayed ACKs.
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(echo_listener).with_nodelay(Some(true))),
    );
    let echo_clients = Arc::new(clients(echo_addr, c, BearerToken::default()).await?);
    let echo = {
        let cl = echo_clients.clone();
        drive("floor: tonic echo", c, None, args.seconds, move |i| {
            let mut g = cl[i % cl.len()].clone();
            async move { g.get(ClusterQuery { server: "x".into(), ..Default::default() }).await.is_ok() }
        })
        .await
    };
    let echo_single = {
        let cl = echo_clients.clone();
        drive("floor: tonic echo (1 client)", 1, None, args.seconds.min(3), move |_| {
            let mut g = cl[0].clone();
            async move { g.get(ClusterQuery { server: "x".into(), ..Default::default() }).await.is_ok() }
        })
        .await
    };
    let nats = async_nats::connect(&args.nats_url).await?;
    let js = async_nats::jetstream::new(nats);
    let _ = js.delete_stream("LOADFLOOR").await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "LOADFLOOR".into(),
        subjects: vec!["loadfloor.>".into()],
        ..Default::default()
    })
    .await?;
    let js = Arc::new(js);
    let publish = publish_floor("floor: jetstream pub+ack", js.clone(), c, args.seconds).await;
    let publish_single = publish_floor("floor: jetstream pub+ack (1 client)", js.clone(), 1, args.seconds.min(3)).await;
    let _ = js.delete_stream("LOADFLOOR").await;
    report(&echo, None);
    report(&echo_single, None);
    report(&publish, None);
    report(&publish_single, None);
    let single_create_floor = echo_single.pct(0.5) + publish_single.pct(0.5);
    let create_floor = echo.pct(0.5) + publish.pct(0.5);
    if !args.auth_only && !args.events_only {
        create_flow_floor(&args, create_floor, single_create_floor).await?;
    }

    // A gateway running --disable-auth needs no login; one that requires it gets the session.
    let gw_auth = if args.password.is_empty() {
        BearerToken::default()
    } else {
        login(args.gateway, &args.username, &args.password).await?
    };
    let gw = Arc::new(clients(args.gateway, c, gw_auth.clone()).await?);
    if args.events_only && args.auth_only {
        return Ok(());
    }
    if !args.auth_only {
        if !args.events_only {
            measure_the_api(&args, gw.clone(), &echo, &echo_single, create_floor, single_create_floor).await?;
        }
        // New clusters past every one the phases above may have registered, or an earlier run.
        let first = args.list_sizes.iter().copied().max().unwrap_or(0) + 10_000 + std::process::id() as usize * 10_000;
        events::measure(&args.nats_url, args.gateway, &gw_auth, gw.clone(), c, first).await?;
    }

    if let Some(auth_addr) = args.auth_gateway {
        // The clusters the main run registered.
        let n = args.list_sizes.iter().copied().max().unwrap_or(1).max(1);
        let token = login(auth_addr, &args.username, &args.password).await?;
        let authed = Arc::new(clients(auth_addr, c, token).await?);
        // Turns, so that both see the same machine; then the difference of the p50s.
        for clients in [1usize, c] {
            // Each side against the floor with as many clients.
            let floor = if clients == 1 { ("echo 1 client", echo_single.pct(0.5)) } else { ("echo", echo.pct(0.5)) };
            let mut plain = Vec::new();
            let mut auth = Vec::new();
            for round in 0..3 {
                let p = run_get(
                    &format!("Get, no auth, {clients} client(s) #{round}"),
                    gw.clone(),
                    clients,
                    n,
                    args.seconds.min(3),
                )
                .await;
                let a = run_get(
                    &format!("Get, authenticated, {clients} client(s) #{round}"),
                    authed.clone(),
                    clients,
                    n,
                    args.seconds.min(3),
                )
                .await;
                report(&p, Some(floor));
                report(&a, Some(floor));
                plain.push(us(p.pct(0.5)));
                auth.push(us(a.pct(0.5)));
            }
            let median = |v: &mut Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            // Each turn against the one just before it: the machine's speed drifts between
            // turns, and a median of each side alone would mix turns run at different speeds.
            let mut costs: Vec<f64> = plain.iter().zip(&auth).map(|(p, a)| (a - p) / p * 100.0).collect();
            let turns = costs.iter().map(|c| format!("{c:+.1}%")).collect::<Vec<_>>().join(", ");
            let cost = median(&mut costs);
            let (p, a) = (median(&mut plain), median(&mut auth));
            println!(
                "authentication + RBAC ({clients} client(s)): Get p50 {p:.1}us -> {a:.1}us (medians); \
                 turn by turn {turns}: median {cost:+.1}% of Get p50"
            );
        }
    }
    Ok(())
}

/// What the messages of a create alone cost (see `flow`), against the Create floors: the part
/// of Create's ratio that no implementation of this deployment's design removes; and the same
/// without the name claim.
async fn create_flow_floor(args: &Args, create_floor: Duration, single_create_floor: Duration) -> anyhow::Result<()> {
    let c = args.concurrency;
    let runs = [
        ("floor: a create's messages", true, c, args.seconds, create_floor),
        ("floor: a create's messages (1 client)", true, 1, args.seconds.min(3), single_create_floor),
        ("floor: a create's messages, no name claim", false, c, args.seconds, create_floor),
    ];
    let mut phases = Vec::new();
    for (name, with_claim, clients, seconds, floor) in runs {
        let flow = flow::start(&args.nats_url, with_claim, 1, false).await?;
        let cl = Arc::new(self::clients(flow.addr, clients, BearerToken::default()).await?);
        let stats = drive(name, clients, None, seconds, move |i| {
            let mut g = cl[i % cl.len()].clone();
            async move { g.create(ClusterCreateRequest { cluster: Some(cluster(i)), upsert: false }).await.is_ok() }
        })
        .await;
        flow.stop().await;
        phases.push((stats, floor, clients));
    }
    for (stats, floor, clients) in &phases {
        let label = if *clients == 1 { "(echo+pub, 1 client)" } else { "(echo+pub)" };
        report(stats, Some((label, *floor)));
    }
    Ok(())
}

/// Create, List, Get and Update through the gateway, with 64 clients and with one.
async fn measure_the_api(
    args: &Args,
    gw: Arc<Vec<Client>>,
    echo: &Stats,
    echo_single: &Stats,
    create_floor: Duration,
    single_create_floor: Duration,
) -> anyhow::Result<()> {
    let c = args.concurrency;
    let echo_p50 = echo.pct(0.5);
    let mut registered = 0usize;
    for size in args.list_sizes.iter().copied() {
        if size <= registered {
            continue;
        }
        let base = registered;
        let cl = gw.clone();
        let create =
            drive(&format!("Create (to {size})"), c, Some(size - base), 0, move |i| {
                let mut g = cl[i % cl.len()].clone();
                async move {
                    g.create(ClusterCreateRequest { cluster: Some(cluster(base + i)), upsert: false }).await.is_ok()
                }
            })
            .await;
        registered = size;
        report(&create, Some(("(echo+pub)", create_floor)));
        let cl = gw.clone();
        let list = drive(&format!("List ({size} clusters)"), args.list_concurrency, None, args.seconds, move |i| {
            let mut g = cl[i % cl.len()].clone();
            async move { g.list(ClusterQuery::default()).await.is_ok_and(|r| r.into_inner().items.len() > size) }
        })
        .await;
        report(&list, Some(("echo", echo_p50)));
        let cl = gw.clone();
        let list_single = drive(&format!("List ({size} clusters, 1 client)"), 1, None, args.seconds, move |_| {
            let mut g = cl[0].clone();
            async move { g.list(ClusterQuery::default()).await.is_ok_and(|r| r.into_inner().items.len() > size) }
        })
        .await;
        report(&list_single, Some(("echo 1 client", echo_single.pct(0.5))));
    }
    let n = registered.max(1);
    let get = run_get("Get", gw.clone(), c, n, args.seconds).await;
    report(&get, Some(("echo", echo_p50)));
    let cl = gw.clone();
    let update = drive("Update (labels)", c, None, args.seconds, move |i| {
        let mut g = cl[i % cl.len()].clone();
        async move {
            let mut c = cluster(i % n);
            c.labels.insert("round".into(), i.to_string());
            let req = ClusterUpdateRequest { cluster: Some(c), updated_fields: vec!["labels".into()], id: None };
            g.update(req).await.is_ok()
        }
    })
    .await;
    report(&update, Some(("(echo+pub)", create_floor)));

    // The same calls one at a time: latency without queueing, against the one-client floors.
    let cl = gw.clone();
    let base = registered;
    let create_single = drive("Create (1 client)", 1, Some(500), 0, move |i| {
        let mut g = cl[0].clone();
        async move { g.create(ClusterCreateRequest { cluster: Some(cluster(base + i)), upsert: false }).await.is_ok() }
    })
    .await;
    report(&create_single, Some(("(echo+pub, 1 client)", single_create_floor)));
    let get_single = run_get("Get (1 client)", gw.clone(), 1, n, args.seconds.min(3)).await;
    report(&get_single, Some(("echo 1 client", echo_single.pct(0.5))));
    // The registry's share of a Create: the same command sent to it over NATS, past the gateway,
    // alone and with as many clients as above.
    let nats = async_nats::connect(&args.nats_url).await?;
    if let Err(e) = nats.request(corral_service_api::nats::QUERY_SUBJECT, bytes::Bytes::new()).await
        && e.kind() == async_nats::RequestErrorKind::NoResponders
    {
        println!("no registry answers over NATS (the all-in-one binary?): its share of Create not measured");
        return Ok(());
    }
    let direct = registry_creates("Create, registry only (1 client)", &nats, 1, 500, registered + 500).await;
    report(&direct, Some(("(echo+pub, 1 client)", single_create_floor)));
    let label = format!("Create, registry only ({c} clients)");
    let direct = registry_creates(&label, &nats, c, 5000, registered + 1000).await;
    report(&direct, Some(("(echo+pub)", create_floor)));
    Ok(())
}

/// `count` Creates of new clusters (numbered from `first`) sent to the registry replicas over
/// NATS by `clients` tasks, as the gateway sends them.
async fn registry_creates(name: &str, nats: &async_nats::Client, clients: usize, count: usize, first: usize) -> Stats {
    let nats = nats.clone();
    drive(name, clients, Some(count), 0, move |i| {
        let nats = nats.clone();
        async move {
            use prost::Message;
            let kind = corral_proto::registry::command::Kind::Create(ClusterCreateRequest {
                cluster: Some(cluster(first + i)),
                upsert: false,
            });
            let command = corral_proto::registry::Command { kind: Some(kind), ..Default::default() };
            match nats.request(corral_service_api::nats::COMMAND_SUBJECT, command.encode_to_vec().into()).await {
                Ok(m) => corral_proto::registry::Reply::decode(m.payload.as_ref())
                    .is_ok_and(|r| !matches!(r.result, Some(corral_proto::registry::reply::Result::Error(_)))),
                Err(_) => false,
            }
        }
    })
    .await
}

/// Publish-with-ack of 256 bytes from `clients` tasks on the floor stream.
async fn publish_floor(name: &str, js: Arc<async_nats::jetstream::Context>, clients: usize, seconds: u64) -> Stats {
    drive(name, clients, None, seconds, move |i| {
        let js = js.clone();
        async move {
            match js.publish(format!("loadfloor.{}", i % 1024), bytes::Bytes::from_static(&[0u8; 256])).await {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            }
        }
    })
    .await
}

async fn run_get(name: &str, cl: Arc<Vec<Client>>, clients: usize, n: usize, seconds: u64) -> Stats {
    run_get_from(name, cl, clients, 0, n, seconds).await
}

/// Gets of the clusters numbered `base..base + n`, round robin.
async fn run_get_from(name: &str, cl: Arc<Vec<Client>>, clients: usize, base: usize, n: usize, seconds: u64) -> Stats {
    drive(name, clients, None, seconds, move |i| {
        let mut g = cl[i % cl.len()].clone();
        async move {
            let q = ClusterQuery {
                id: Some(ClusterId { r#type: "server".into(), value: server_url(base + i % n) }),
                ..Default::default()
            };
            g.get(q).await.is_ok()
        }
    })
    .await
}

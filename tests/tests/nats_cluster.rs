//! The production shape under faults: three clustered nats-server nodes (`sync_interval: always`),
//! the stream at three replicas, two registries and two gateways given all three URLs. Writers
//! create and update clusters through both gateways, retrying what a client may retry, while a
//! node is killed, two are stopped, all are restarted in turn, or one is frozen. Afterwards every
//! acknowledged write is on every replica and every projection equals a rebuild from the stream.
//! Each test prints what the callers saw.

mod common;

use common::DeploymentApi as _;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::suite::{escape, rest_get, rest_post};
use serde_json::{Value, json};

/// How one attempt of a write ended, as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Ok,
    /// An HTTP status with the gRPC code in the body.
    Status(u16, i64),
    /// No answer within the client's time-out.
    TimedOut,
    /// The connection failed.
    Connection,
}

impl Outcome {
    /// What a client may simply send again: Unavailable, DeadlineExceeded, a time-out, a
    /// dropped connection.
    fn retriable(&self) -> bool {
        match self {
            Outcome::Ok => false,
            Outcome::Status(503, 14) | Outcome::Status(504, 4) => true,
            Outcome::Status(..) => false,
            Outcome::TimedOut | Outcome::Connection => true,
        }
    }
}

#[derive(Default)]
struct Record {
    /// Acknowledged creates, and the label value of the last acknowledged update of each.
    acked: BTreeMap<String, u32>,
    outcomes: BTreeMap<Outcome, usize>,
    /// When each write was acknowledged, from the start of the load.
    acks: Vec<Duration>,
    /// The same, with the gateway that answered.
    gateway_acks: Vec<(Duration, usize)>,
    /// The slowest acknowledged attempt.
    slowest: Duration,
    /// Writes that needed more than one attempt.
    retried: usize,
}

/// Writers each creating a cluster and then updating its labels, through gateway `w % 2`,
/// every write sent again until acknowledged as long as its failures are retriable.
struct Load {
    record: Arc<Mutex<Record>>,
    stop: Arc<AtomicBool>,
    started: Instant,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

async fn attempt(req: reqwest::RequestBuilder) -> Outcome {
    match req.send().await {
        Ok(r) if r.status().is_success() => Outcome::Ok,
        Ok(r) => {
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            Outcome::Status(status, body["code"].as_i64().unwrap_or(-1))
        }
        Err(e) if e.is_timeout() => Outcome::TimedOut,
        Err(_) => Outcome::Connection,
    }
}

impl Load {
    fn start(gateways: &[std::net::SocketAddr], token: String, writers: usize, tag: &'static str) -> Load {
        let record: Arc<Mutex<Record>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let tasks = (0..writers)
            .map(|w| {
                let gateway = w % gateways.len();
                let base = format!("http://{}", gateways[gateway]);
                let (record, stop, token) = (record.clone(), stop.clone(), token.clone());
                tokio::spawn(async move {
                    let http = reqwest::Client::builder().timeout(CLIENT_TIMEOUT).build().expect("client");
                    let mut n = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        let server = format!("https://{tag}-{w}-{n}.example.com");
                        let create = json!({"server": server, "name": format!("{tag}-{w}-{n}")});
                        let update = format!("{base}/api/v1/clusters/{}?updatedFields=labels", escape(&server));
                        'write: for step in 0..2 {
                            let mut attempts = 0;
                            loop {
                                let req = if step == 0 {
                                    http.post(format!("{base}/api/v1/clusters")).json(&create)
                                } else {
                                    http.put(&update).json(&json!({"labels": {"v": "1"}}))
                                };
                                let sent = Instant::now();
                                let outcome = attempt(req.bearer_auth(&token)).await;
                                attempts += 1;
                                let acked = {
                                    let mut r = record.lock().expect("record");
                                    *r.outcomes.entry(outcome.clone()).or_default() += 1;
                                    if outcome == Outcome::Ok {
                                        r.slowest = r.slowest.max(sent.elapsed());
                                        r.acks.push(started.elapsed());
                                        r.gateway_acks.push((started.elapsed(), gateway));
                                        r.acked.insert(server.clone(), step);
                                        if attempts > 1 {
                                            r.retried += 1;
                                        }
                                    }
                                    outcome == Outcome::Ok
                                };
                                if acked {
                                    break;
                                }
                                if !outcome.retriable() || stop.load(Ordering::Relaxed) && step == 0 {
                                    break 'write;
                                }
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                        n += 1;
                    }
                })
            })
            .collect();
        Load { record, stop, started, tasks }
    }

    fn acked(&self) -> usize {
        self.record.lock().expect("record").acks.len()
    }

    /// Waits until `more` further writes are acknowledged.
    async fn wait_for_more(&self, more: usize) {
        let target = self.acked() + more;
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.acked() < target {
            assert!(Instant::now() < deadline, "no write acknowledged for 120 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// As `wait_for_more`, but after 30 s without an acknowledgement it prints what the
    /// deployment looks like ([`Load::explain`]), so a stall can be told apart.
    async fn wait_for_more_explained(&self, more: usize, d: &mut common::Deployment) {
        let target = self.acked() + more;
        let deadline = Instant::now() + Duration::from_secs(120);
        let (mut last, mut since, mut explained) = (self.acked(), Instant::now(), false);
        while self.acked() < target {
            assert!(Instant::now() < deadline, "no write acknowledged for 120 s");
            if self.acked() != last {
                (last, since) = (self.acked(), Instant::now());
            } else if !explained && since.elapsed() > Duration::from_secs(30) {
                explained = true;
                self.explain("no acknowledgement for 30 s", d).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Prints each node's connections and consumers, the services' projection lag and their
    /// last log lines, and the outcomes so far.
    async fn explain(&self, what: &str, d: &mut common::Deployment) {
        eprintln!("---- {what} at {:.1?} ----", self.now());
        eprintln!("outcomes so far: {:?}", self.record.lock().expect("record").outcomes);
        eprintln!("{}", d.nats.cluster().describe().await);
        for (kind, processes) in [("registry", &d.registries), ("gateway", &d.gateways)] {
            for (i, p) in processes.iter().enumerate() {
                if let Some(ops) = p.ops_addr() {
                    let lag: Vec<String> = common::scrape(ops)
                        .await
                        .iter()
                        .filter(|s| s.name.starts_with("corral_projection_lag"))
                        .map(|s| format!("{:?}={:?}", s.labels, s.value))
                        .collect();
                    eprintln!("{kind} {i} projection lag: {lag:?}");
                }
                let logs = p.logs();
                eprintln!("{kind} {i} last log lines:\n{}", logs[logs.len().saturating_sub(15)..].join("\n"));
            }
        }
    }

    /// Stops the writers once each has its last write acknowledged or refused; a writer still
    /// retrying after 60 s fails the test, after [`Load::explain`].
    async fn finish_explained(self, d: &mut common::Deployment) -> Record {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.tasks.iter().any(|t| !t.is_finished()) {
            if Instant::now() > deadline {
                self.explain("writers still retrying 60 s after the load stopped", d).await;
                panic!("writers still retrying 60 s after the load stopped");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.finish().await
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits until gateway `g` has acknowledged a write after `since`; when it did.
    async fn wait_for_gateway(&self, g: usize, since: Duration, limit: Duration) -> Duration {
        let deadline = Instant::now() + limit;
        loop {
            let first = self
                .record
                .lock()
                .expect("record")
                .gateway_acks
                .iter()
                .find(|(t, w)| *w == g && *t > since)
                .map(|(t, _)| *t);
            if let Some(t) = first {
                return t;
            }
            assert!(Instant::now() < deadline, "gateway {g} acknowledged nothing for {limit:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn finish(self) -> Record {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        Arc::try_unwrap(self.record).ok().expect("writers done").into_inner().expect("record")
    }
}

impl Record {
    /// The longest time within `window` in which no write was acknowledged.
    fn longest_gap(&self, window: (Duration, Duration)) -> Duration {
        let mut acks: Vec<Duration> = self.acks.iter().copied().filter(|t| *t >= window.0 && *t <= window.1).collect();
        acks.sort();
        let mut edges = vec![window.0];
        edges.extend(acks);
        edges.push(window.1);
        edges.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
    }

    fn print(&self, test: &str, window: (Duration, Duration)) {
        println!(
            "{test}: {} writes acknowledged ({} clusters), {} needed a retry; longest time without an \
             acknowledgement from the fault on: {:.1} s; slowest acknowledged attempt {:.1} s; attempts by \
             outcome: {:?}",
            self.acks.len(),
            self.acked.len(),
            self.retried,
            self.longest_gap(window).as_secs_f64(),
            self.slowest.as_secs_f64(),
            self.outcomes
        );
    }

    /// No attempt failed in a way a client could not retry.
    fn assert_all_retriable(&self) {
        let bad: Vec<_> = self.outcomes.keys().filter(|o| **o != Outcome::Ok && !o.retriable()).collect();
        assert!(bad.is_empty(), "answers a client cannot retry: {bad:?} in {:?}", self.outcomes);
    }
}

/// Every acknowledged write is in `list`: each cluster there, with the label of its update
/// when that was acknowledged.
fn assert_holds(list: &corral_proto::v1alpha1::ClusterList, acked: &BTreeMap<String, u32>, whose: &str) {
    let stored: BTreeMap<&str, &corral_proto::v1alpha1::Cluster> =
        list.items.iter().map(|c| (c.server.as_str(), c)).collect();
    let mut lost = Vec::new();
    for (server, step) in acked {
        match stored.get(server.as_str()) {
            None => lost.push(format!("{server} (created)")),
            Some(c) if *step == 1 && c.labels.get("v").map(String::as_str) != Some("1") => {
                lost.push(format!("{server} (updated)"))
            }
            Some(_) => {}
        }
    }
    assert!(lost.is_empty(), "{whose}: acknowledged but lost: {} of {}: {lost:?}", lost.len(), acked.len());
}

/// Every replica's projection, the gateways' views and a registry rebuilt from an empty folder
/// agree, and hold every acknowledged write: compared as soon as the writes stop, while NATS
/// may still be electing leaders, so the registries restarted here start on a cluster healing.
async fn assert_every_replica_holds(d: &mut common::Deployment, acked: &BTreeMap<String, u32>) {
    for (kind, processes) in [("registry", &mut d.registries), ("gateway", &mut d.gateways)] {
        for (i, p) in processes.iter_mut().enumerate() {
            assert_eq!(p.exited(), None, "{kind} {i} exited during the fault: {:?}", p.logs());
        }
    }
    // The registries' projections, one at a time: with the other one stopped, queries reach it.
    let mut lists = Vec::new();
    for r in 0..d.registries.len() {
        for other in 0..d.registries.len() {
            d.registries[other].terminate().await;
        }
        let dir = d.registry_dirs[r].path().to_path_buf();
        d.registries[r] = d.spawn_registry(&dir).await;
        lists.push(common::registry_list(d).await);
    }
    for r in &mut d.registries {
        r.terminate().await;
    }
    let fresh = tempfile::tempdir().expect("tempdir");
    let mut rebuilt_registry = d.spawn_registry(fresh.path()).await;
    let rebuilt = common::registry_list(d).await;
    rebuilt_registry.terminate().await;
    assert_holds(&rebuilt, acked, "a registry rebuilt from the stream");
    for (r, list) in lists.iter().enumerate() {
        assert_eq!(list, &rebuilt, "registry {r}'s projection differs from a rebuild from the stream");
    }
    for g in 0..d.gateways.len() {
        let api = d.api(g).await;
        let view =
            api.grpc.clone().list(corral_proto::cluster::ClusterQuery::default()).await.expect("list").into_inner();
        assert_eq!(view, rebuilt, "gateway {g}'s view differs from a rebuild from the stream");
    }
    // The deployment goes on with its registries.
    for r in 0..d.registries.len() {
        let dir = d.registry_dirs[r].path().to_path_buf();
        d.registries[r] = d.spawn_registry(&dir).await;
    }
}

async fn clustered() -> (common::Deployment, String) {
    let d = common::Deployment::start_clustered(2, 2, &[]).await;
    let token = d.api(0).await.token.clone().expect("logged in");
    (d, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_suite_passes_on_a_three_node_cluster() {
    let (d, _) = clustered().await;
    let _rotation = d.spawn_auth_rotation(300.0).await;
    common::suite::run_all(&d.api(0).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_stream_leader_loses_no_acknowledged_write() {
    let (mut d, token) = clustered().await;
    let load = Load::start(&d.gateway_addrs, token, 8, "leader");
    load.wait_for_more(200).await;
    let leader = d.nats.cluster().stream_leader("CORRAL").await.expect("the stream has a leader");
    let fault = load.now();
    d.nats.cluster().kill(leader).await;
    load.wait_for_more(300).await;
    d.nats.cluster().restart(leader).await.expect("node back");
    load.wait_for_more(200).await;
    let end = load.now();
    let record = load.finish_explained(&mut d).await;
    record.print(&format!("kill -9 of the stream leader (node {})", leader + 1), (fault, end));
    record.assert_all_retriable();
    assert_every_replica_holds(&mut d, &record.acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quorum_writes_are_refused_as_unavailable_and_reads_still_answer() {
    let (mut d, token) = clustered().await;
    let api = d.api(0).await;
    let (s, body) =
        rest_post(&api, "/api/v1/clusters", json!({"server": "https://before.example.com", "name": "b"})).await;
    assert!(s.is_success(), "{body}");
    d.nats.cluster().stop(1).await;
    d.nats.cluster().stop(2).await;
    let refused_at = Instant::now();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let gw = format!("http://{}", d.gateway_addrs[0]);
    let outcome = attempt(
        http.post(format!("{gw}/api/v1/clusters"))
            .bearer_auth(&token)
            .json(&json!({"server": "https://during.example.com", "name": "during"})),
    )
    .await;
    println!("a create without a quorum: {outcome:?} after {:.1} s", refused_at.elapsed().as_secs_f64());
    assert_eq!(outcome, Outcome::Status(503, 14), "a write without a quorum is Unavailable");
    for g in 0..2 {
        let (s, got) =
            rest_get(&d.api(g).await, &format!("/api/v1/clusters/{}", escape("https://before.example.com"))).await;
        assert!(s.is_success(), "gateway {g} cannot read what it has without a quorum: {got}");
        // What it lacks may have been written elsewhere a moment ago: not a 404 unless the stream
        // leader (which answers until it sees it has lost its quorum) still says how far it goes.
        let (s, got) =
            rest_get(&d.api(g).await, &format!("/api/v1/clusters/{}", escape("https://never.example.com"))).await;
        println!("gateway {g}: a missing cluster without a quorum: {}", s.as_u16());
        assert!(matches!(s.as_u16(), 404 | 503), "gateway {g} without a quorum: {got}");
    }
    d.nats.cluster().restart(1).await.expect("node 2 back");
    d.nats.cluster().restart(2).await.expect("node 3 back");
    // Writes resume with no service restarted (each retried while the stream elects a leader).
    let resumed = Instant::now();
    let mut last = Outcome::TimedOut;
    while resumed.elapsed() < Duration::from_secs(60) {
        last = attempt(
            http.post(format!("{gw}/api/v1/clusters"))
                .bearer_auth(&token)
                .json(&json!({"server": "https://after.example.com", "name": "after"})),
        )
        .await;
        if last == Outcome::Ok || !last.retriable() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("writes accepted again {:.1} s after the two nodes were started", resumed.elapsed().as_secs_f64());
    assert_eq!(last, Outcome::Ok);
    let expected =
        BTreeMap::from([("https://before.example.com".to_string(), 0), ("https://after.example.com".into(), 0)]);
    assert_every_replica_holds(&mut d, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_node_under_load_loses_nothing() {
    let (mut d, token) = clustered().await;
    let load = Load::start(&d.gateway_addrs, token, 8, "rolling");
    load.wait_for_more(200).await;
    let fault = load.now();
    for node in 0..3 {
        d.nats.cluster().stop(node).await;
        d.nats.cluster().restart(node).await.expect("node back");
        load.wait_for_more(150).await;
    }
    let end = load.now();
    let record = load.finish_explained(&mut d).await;
    record.print("a rolling restart of the three nodes", (fault, end));
    record.assert_all_retriable();
    assert_every_replica_holds(&mut d, &record.acked).await;
}

/// A node cut off as by a partition (frozen with SIGSTOP: its sockets stay open, nothing
/// answers), the one a gateway is connected to: the majority keeps accepting writes, the
/// services on the frozen node move to another, and after it runs again every projection equals
/// a rebuild from the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_loses_its_clients_to_the_others_and_catches_up_after() {
    let (mut d, token) = clustered().await;
    let load = Load::start(&d.gateway_addrs, token, 8, "frozen");
    load.wait_for_more(200).await;
    let frozen = *d.nats.cluster().nodes_with_client("corral-gateway").await.first().expect("a node with a gateway");
    let fault = load.now();
    d.nats.cluster().freeze(frozen);
    // Fail-over: each gateway acknowledges writes again while the node is still frozen.
    let mut resumed = Vec::new();
    for g in 0..2 {
        let t = load.wait_for_gateway(g, fault + Duration::from_millis(500), Duration::from_secs(60)).await;
        resumed.push(format!("gateway {g} after {:.1} s", (t - fault).as_secs_f64()));
    }
    load.wait_for_more_explained(200, &mut d).await;
    let during = load.now();
    d.nats.cluster().thaw(frozen);
    load.wait_for_more_explained(200, &mut d).await;
    let end = load.now();
    let record = load.finish_explained(&mut d).await;
    let frozen_for = (during - fault).as_secs_f64();
    record.print(
        &format!(
            "node {} (a gateway's) frozen for {frozen_for:.1} s; writes again: {}",
            frozen + 1,
            resumed.join(", ")
        ),
        (fault, end),
    );
    record.assert_all_retriable();
    assert_every_replica_holds(&mut d, &record.acked).await;
}

/// A create whose first attempt timed out on the client is sent again: it is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_sent_again_after_a_client_time_out_is_applied_once() {
    let (d, token) = clustered().await;
    let gw = format!("http://{}", d.gateway_addrs[0]);
    // A client that gives up long before the answer comes.
    let impatient = reqwest::Client::builder().timeout(Duration::from_micros(300)).build().expect("client");
    let patient = reqwest::Client::new();
    let mut timed_out = 0;
    for i in 0..20 {
        let body = json!({"server": format!("https://again-{i}.example.com"), "name": format!("again-{i}")});
        let first = attempt(impatient.post(format!("{gw}/api/v1/clusters")).bearer_auth(&token).json(&body)).await;
        if first == Outcome::TimedOut {
            timed_out += 1;
        }
        let again = attempt(patient.post(format!("{gw}/api/v1/clusters")).bearer_auth(&token).json(&body)).await;
        assert_eq!(again, Outcome::Ok, "the create sent again");
    }
    println!("{timed_out} of 20 first attempts timed out on the client");
    assert!(timed_out > 0, "no first attempt timed out: the test sent nothing again after a time-out");
    let client = d.client().await;
    let log = corral_event_log::NatsLog::new(client, Default::default()).await.expect("log");
    let mut registered: BTreeMap<String, usize> = BTreeMap::new();
    let mut from = 1;
    loop {
        let batch = corral_event_log::EventLog::read(&log, from, 1000).await.expect("read");
        let Some(last) = batch.last() else { break };
        from = last.seq + 1;
        for e in &batch {
            if e.headers.iter().any(|(k, v)| k == "Corral-Event-Type" && v == "ClusterRegistered") {
                *registered.entry(e.subject.clone()).or_default() += 1;
            }
        }
    }
    let servers: BTreeSet<String> = (0..20)
        .map(|i| format!("corral.cluster.{}", corral_domain::cluster_id(&format!("https://again-{i}.example.com"))))
        .collect();
    for s in &servers {
        assert_eq!(registered.get(s), Some(&1), "{s} registered {:?} times", registered.get(s));
    }
}

/// TLS between every service and NATS, each service its own least-privilege user
/// (nats/authorization.conf): the API suite passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_suite_passes_over_tls_with_a_least_privilege_user_per_service() {
    let mut d = common::Deployment::start_secured(2, 2, &[]).await;
    let _rotation = d.spawn_auth_rotation(300.0).await;
    common::suite::run_all(&d.api(0).await).await;
    let (s, body) = rest_get(&d.api(1).await, "/api/v1/clusters").await;
    assert!(s.is_success(), "{body}");
    let expected = BTreeMap::new();
    assert_every_replica_holds(&mut d, &expected).await;
}

/// What the server said to a connection about what it refused.
async fn connect_as(
    d: &mut common::Deployment,
    service: &str,
) -> (async_nats::Client, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let auth = d.nats.cluster().auth_for(service);
    let urls = d.nats.url();
    let options = async_nats::ConnectOptions::new()
        .add_root_certificates(auth.nats_tls_ca.clone().expect("ca"))
        .require_tls(true)
        .user_and_password(auth.nats_user.clone().expect("user"), auth.nats_password.clone().expect("password"))
        .custom_inbox_prefix(format!("_INBOX.{service}"))
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = tx.send(e.to_string());
                }
            }
        });
    let addrs: Vec<async_nats::ServerAddr> = urls.split(',').map(|u| u.parse().expect("url")).collect();
    (options.connect(addrs).await.expect("connect"), rx)
}

async fn refusal(errors: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(10), errors.recv()).await.ok().flatten().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_is_refused_outside_its_subjects() {
    let mut d = common::Deployment::start_secured(1, 1, &[]).await;
    let log = corral_event_log::NatsLog::new(d.client().await, Default::default()).await.expect("log");
    let before = corral_event_log::EventLog::last_seq(&log).await.expect("last seq");
    let spec_subject = format!("corral.cluster.{}", corral_domain::cluster_id("https://forged.example.com"));

    // The health probe may append observed state, not a cluster's spec, and may not command.
    let (probe, mut errors) = connect_as(&mut d, "corral-health-probe").await;
    let js = async_nats::jetstream::new(probe.clone());
    let forged = js.publish(spec_subject.clone(), "forged".into()).await.expect("sent");
    assert!(forged.await.is_err(), "the health probe appended a cluster spec event");
    let said = refusal(&mut errors).await;
    assert!(said.contains("Permissions Violation for Publish"), "{said}");
    let command = probe.request(corral_service_api::nats::COMMAND_SUBJECT, "x".into()).await;
    assert!(command.is_err(), "the health probe sent a registry command");
    let said = refusal(&mut errors).await;
    assert!(said.contains("Permissions Violation for Publish"), "{said}");
    // Nor read another service's replies.
    let _ = probe.subscribe("_INBOX.corral-gateway.>").await;
    let said = refusal(&mut errors).await;
    assert!(said.contains("Permissions Violation for Subscription"), "{said}");

    // The gateway may not append a cluster event either.
    let (gateway, mut errors) = connect_as(&mut d, "corral-gateway").await;
    let js = async_nats::jetstream::new(gateway);
    let forged = js.publish(spec_subject, "forged".into()).await.expect("sent");
    assert!(forged.await.is_err(), "the gateway appended a cluster event");
    let said = refusal(&mut errors).await;
    assert!(said.contains("Permissions Violation for Publish"), "{said}");

    assert_eq!(corral_event_log::EventLog::last_seq(&log).await.expect("last seq"), before, "something was appended");
}

//! Every service's operations listener on a real nats-server: `/metrics` parsed by Prometheus'
//! own strict OpenMetrics parser, carrying Argo CD's metric names with the values known actions
//! leave (clusters registered, one of them down, a failed login, gRPC calls by code), and
//! `/healthz` and `/readyz`, readiness following the NATS connection.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::DeploymentApi as _;
use common::suite::{b64, escape, rest_post};
use common::{Deployment, Sample, scrape, total};
use corral_fake_kube::{FakeKube, Mode};
use corral_test_harness::ServiceProcess;
use serde_json::json;

fn ops(p: &ServiceProcess) -> SocketAddr {
    p.ops_addr().unwrap_or_else(|| panic!("no 'operations on' line in {:?}", p.logs()))
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let resp = reqwest::get(format!("http://{addr}{path}")).await.expect("get");
    (resp.status().as_u16(), resp.text().await.expect("body"))
}

/// Scrapes `addr` until `done` accepts what it finds, for at most `limit`.
async fn scrape_until(addr: SocketAddr, limit: Duration, done: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    let started = Instant::now();
    loop {
        let all = scrape(addr).await;
        if done(&all) {
            return all;
        }
        assert!(started.elapsed() < limit, "not seen within {limit:?} in {all:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn gauge(all: &[Sample], name: &str, server: &str) -> Option<f64> {
    common::samples(all, name, &[("server", server)]).first().and_then(|s| s.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_serves_metrics_prometheus_parses_with_argo_cd_names() {
    let d = Deployment::start(1, 1).await;
    let probe = d.spawn_health_probe(0.5, 1.0).await;
    let cache = d.spawn_cache_invalidation(1.0).await;
    let rotation = d.spawn_auth_rotation(300.0).await;
    let api = d.api(0).await;
    let (gateway, registry) = (ops(&d.gateways[0]), ops(&d.registries[0]));

    // Three clusters, the second one's API server down.
    let fakes = [FakeKube::start(&["t"]).await, FakeKube::start(&["t"]).await, FakeKube::start(&["t"]).await];
    fakes[1].set_mode(Mode::Down);
    for (i, fake) in fakes.iter().enumerate() {
        let body = json!({"server": fake.url(), "name": format!("c{i}"),
            "config": {"bearerToken": "t", "tlsClientConfig": {"caData": b64(fake.ca_pem())}}});
        let (s, b) = rest_post(&api, "/api/v1/clusters", body).await;
        assert_eq!(s.as_u16(), 200, "{b}");
    }
    let [up, down, up2] = [fakes[0].url(), fakes[1].url(), fakes[2].url()];
    let all = scrape_until(registry, Duration::from_secs(15), |all| {
        gauge(all, "argocd_cluster_connection_status", &up) == Some(1.0)
            && gauge(all, "argocd_cluster_connection_status", &up2) == Some(1.0)
            && gauge(all, "argocd_cluster_connection_status", &down) == Some(0.0)
            && gauge(all, "argocd_cluster_cache_age_seconds", &up).is_some_and(|age| age >= 0.0)
            // Sampled every 2 s: caught up once a sample follows the last append.
            && common::samples(all, "corral_projection_lag_events", &[("follower", "registry")])
                .first()
                .is_some_and(|s| s.value == Some(0.0))
    })
    .await;
    // One info series per cluster (and the built-in in-cluster entry), with Argo CD's labels.
    let info = common::samples(&all, "argocd_cluster_info", &[]);
    let mut servers: Vec<&str> = info.iter().map(|s| s.labels["server"].as_str()).collect();
    servers.sort();
    let mut want = vec![up.as_str(), down.as_str(), up2.as_str(), "https://kubernetes.default.svc"];
    want.sort();
    assert_eq!(servers, want);
    let first = common::samples(&all, "argocd_cluster_info", &[("server", &up)])[0];
    assert_eq!(
        (first.labels["name"].as_str(), first.labels["k8s_version"].as_str(), first.value),
        ("c0", "1.31", Some(1.0))
    );
    assert_eq!(first.kind, "gauge");
    assert_eq!(gauge(&all, "argocd_cluster_cache_age_seconds", "https://kubernetes.default.svc"), Some(-1.0));
    assert!(gauge(&all, "argocd_cluster_api_resources", &up).is_some_and(|n| n > 0.0), "{all:#?}");
    assert!(total(&all, "corral_event_log_append_duration_seconds_count", &[("log", "jetstream")]) >= 3.0);

    // A failed login counts one failure; gRPC calls are counted by method and code.
    let before = scrape(gateway).await;
    let failures = total(&before, "argocd_login_request_total", &[("status", "failure")]);
    let (s, _) = rest_post(&api, "/api/v1/session", json!({"username": "admin", "password": "wrong"})).await;
    assert_eq!(s.as_u16(), 401);
    let mut grpc = api.grpc.clone();
    grpc.list(corral_proto::cluster::ClusterQuery::default()).await.expect("list");
    let missing =
        corral_proto::cluster::ClusterQuery { server: "https://nowhere.example.com".into(), ..Default::default() };
    assert_eq!(grpc.get(missing).await.expect_err("not found").code(), tonic::Code::NotFound);
    let resp = api.http.get(api.url(&format!("/api/v1/clusters/{}", escape(&up)))).send().await.expect("get");
    assert_eq!(resp.status().as_u16(), 200);
    // Methods HTTP does not define share one label value: a client cannot add series at will.
    for invented in ["CORRALPROBE", "CORRALPROBE2"] {
        let method = reqwest::Method::from_bytes(invented.as_bytes()).expect("a method");
        let resp = api.http.request(method, api.url("/api/v1/clusters")).send().await.expect("invented method");
        assert!(resp.status().is_client_error(), "{}", resp.status());
    }
    let after = scrape(gateway).await;
    assert_eq!(total(&after, "argocd_login_request_total", &[("status", "failure")]), failures + 1.0);
    let other = [("method", "_OTHER")];
    assert_eq!(
        total(&after, "corral_http_request_duration_seconds_count", &other),
        total(&before, "corral_http_request_duration_seconds_count", &other) + 2.0,
        "{after:#?}"
    );
    assert!(
        !after.iter().any(|s| s.labels.values().any(|v| v.starts_with("CORRALPROBE"))),
        "an invented method became a label value"
    );
    let call = |method: &'static str, code: &'static str| {
        [
            ("grpc_type", "unary"),
            ("grpc_service", "cluster.ClusterService"),
            ("grpc_method", method),
            ("grpc_code", code),
        ]
    };
    assert!(total(&after, "grpc_server_handled_total", &call("List", "OK")) >= 1.0, "{after:#?}");
    assert_eq!(
        total(&after, "grpc_server_handled_total", &call("Get", "NotFound")),
        total(&before, "grpc_server_handled_total", &call("Get", "NotFound")) + 1.0
    );
    assert!(total(&after, "grpc_server_handling_seconds_count", &call("List", "OK")[..3]) >= 1.0);
    let route = [("method", "GET"), ("route", "/api/v1/clusters/{id}"), ("code", "200")];
    assert!(total(&after, "corral_http_request_duration_seconds_count", &route) >= 1.0, "{after:#?}");
    assert!(common::samples(&after, "corral_watch_streams_open", &[]).len() == 1);

    // The observers' own figures; a rotation counted by its outcome.
    let probed = scrape(ops(&probe)).await;
    assert!(total(&probed, "corral_health_probe_round_duration_seconds_count", &[]) >= 1.0);
    assert_eq!(common::samples(&probed, "corral_health_probe_probes_in_flight", &[]).len(), 1);
    let rotations = total(&scrape(ops(&rotation)).await, "corral_auth_rotations_total", &[]);
    let _ = rest_post(&api, &format!("/api/v1/clusters/{}/rotate-auth", escape(&up)), json!({})).await;
    let rotated = scrape(ops(&rotation)).await;
    assert_eq!(total(&rotated, "corral_auth_rotations_total", &[]), rotations + 1.0, "{rotated:#?}");
    let cached = scrape(ops(&cache)).await;
    assert!(!common::samples(&cached, "corral_projection_lag_events", &[]).is_empty(), "{cached:#?}");

    // Every listener says it is alive and ready.
    for (name, addr) in [("gateway", gateway), ("registry", registry), ("probe", ops(&probe)), ("cache", ops(&cache))]
        .into_iter()
        .chain([("rotation", ops(&rotation))])
    {
        assert_eq!(get(addr, "/healthz").await, (200, "ok\n".into()), "{name}");
        assert_eq!(get(addr, "/readyz").await, (200, "ok\n".into()), "{name}");
    }
}

/// Waits until `addr`'s `path` answers `status`.
async fn wait_status(addr: SocketAddr, path: &str, status: u16, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    loop {
        let (s, body) = get(addr, path).await;
        if s == status {
            return (body, started.elapsed());
        }
        assert!(started.elapsed() < limit, "{addr}{path} still {s} ({body}) after {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_whose_nats_connection_drops_is_not_ready_until_it_is_back() {
    let mut d = Deployment::start(1, 1).await;
    let api = d.api(0).await;
    let (gateway, registry) = (ops(&d.gateways[0]), ops(&d.registries[0]));
    for addr in [gateway, registry] {
        assert_eq!(get(addr, "/readyz").await.0, 200);
    }
    assert_eq!(get(api.addr, "/healthz").await, (200, "ok\n".into()), "the public port's health check");
    let mut health = tonic_health::pb::health_client::HealthClient::new(api.channel.clone());
    let serving = |s: i32| s == tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    let check = tonic_health::pb::HealthCheckRequest { service: String::new() };
    assert!(serving(health.check(check.clone()).await.expect("health").into_inner().status));

    let corral_test_harness::deployment::Nats::Server(server) = &mut d.nats else { unreachable!() };
    server.kill().await;
    for addr in [gateway, registry] {
        let (body, took) = wait_status(addr, "/readyz", 503, Duration::from_secs(10)).await;
        println!("{addr} not ready {took:?} after NATS went away: {body:?}");
        assert!(body.contains("not ready: connected to NATS"), "{body}");
        assert_eq!(get(addr, "/healthz").await.0, 200, "still alive");
    }
    wait_status(api.addr, "/healthz", 503, Duration::from_secs(10)).await;
    let started = Instant::now();
    while serving(health.check(check.clone()).await.expect("health").into_inner().status) {
        assert!(started.elapsed() < Duration::from_secs(5), "the gRPC health service still says SERVING");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    server.restart().await.expect("nats-server back");
    for addr in [gateway, registry] {
        let (_, took) = wait_status(addr, "/readyz", 200, Duration::from_secs(30)).await;
        println!("{addr} ready {took:?} after NATS came back");
    }
    wait_status(api.addr, "/healthz", 200, Duration::from_secs(10)).await;
    let started = Instant::now();
    while !serving(health.check(check.clone()).await.expect("health").into_inner().status) {
        assert!(started.elapsed() < Duration::from_secs(5), "the gRPC health service does not say SERVING again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

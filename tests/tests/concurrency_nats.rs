//! Uniqueness and read-your-writes across replicas: two registry processes and two gateway
//! processes on one nats-server, and on three clustered ones with the stream at three replicas.

mod common;

use common::DeploymentApi as _;

use std::sync::Arc;

use common::suite::{escape, rest_get, rest_post};
use corral_event_log::{EventLog, NatsLog};
use reqwest::StatusCode;
use serde_json::json;

async fn stored_event_types(d: &common::Deployment, subject: &str) -> Vec<String> {
    let client = d.client().await;
    let log = NatsLog::new(client, Default::default()).await.expect("log");
    let mut out = Vec::new();
    let mut from = 1;
    loop {
        let batch = log.read(from, 1000).await.expect("read");
        let Some(last) = batch.last() else { break };
        from = last.seq + 1;
        for e in batch.iter().filter(|e| e.subject == subject) {
            let t =
                e.headers.iter().find(|(k, _)| k == "Corral-Event-Type").map(|(_, v)| v.clone()).unwrap_or_default();
            out.push(t);
        }
    }
    out
}

/// Sends `racers` creates at once, alternating between the two gateways; their answers.
async fn race(
    apis: &Arc<Vec<common::Api>>,
    racers: usize,
    body: impl Fn(usize) -> serde_json::Value,
) -> Vec<(StatusCode, serde_json::Value)> {
    let tasks: Vec<_> = (0..racers)
        .map(|i| {
            let (apis, body) = (apis.clone(), body(i));
            tokio::spawn(async move { rest_post(&apis[i % 2], "/api/v1/clusters", body).await })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.expect("task"));
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_creates_of_one_server_register_it_once() {
    racing_creates_of_one_server_register_it_once_on(common::Deployment::start(2, 2).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_three_node_cluster_racing_creates_of_one_server_register_it_once() {
    racing_creates_of_one_server_register_it_once_on(common::Deployment::start_clustered(2, 2, &[]).await).await;
}

async fn racing_creates_of_one_server_register_it_once_on(d: common::Deployment) {
    let apis = Arc::new(vec![d.api(0).await, d.api(1).await]);
    let server = "https://contended.example.com";
    // Each racer asks for a different spec, so only the first may win.
    let answers =
        race(&apis, 24, |i| json!({"server": server, "name": "contended", "labels": {"racer": format!("r{i}")}})).await;
    let mut ok = 0;
    for (status, body) in answers {
        match status.as_u16() {
            200 => ok += 1,
            400 | 409 => assert!([3, 6].contains(&body["code"].as_i64().unwrap_or_default()), "{body}"),
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert_eq!(ok, 1, "exactly one racer registers the server");
    let subject = format!("corral.cluster.{}", corral_domain::cluster_id(server));
    let types = stored_event_types(&d, &subject).await;
    assert_eq!(types, vec!["ClusterRegistered".to_string()], "the stream holds one creation event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_creates_of_one_name_give_it_to_one_server() {
    racing_creates_of_one_name_give_it_to_one_server_on(common::Deployment::start(2, 2).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_three_node_cluster_racing_creates_of_one_name_give_it_to_one_server() {
    racing_creates_of_one_name_give_it_to_one_server_on(common::Deployment::start_clustered(2, 2, &[]).await).await;
}

async fn racing_creates_of_one_name_give_it_to_one_server_on(d: common::Deployment) {
    let apis = Arc::new(vec![d.api(0).await, d.api(1).await]);
    let answers =
        race(&apis, 16, |i| json!({"server": format!("https://name-race-{i}.example.com"), "name": "the-one-name"}))
            .await;
    let mut ok = 0;
    for (status, body) in answers {
        match status.as_u16() {
            200 => ok += 1,
            409 => {}
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert_eq!(ok, 1, "exactly one server gets the name");
    let (_, list) = rest_get(&apis[0], "/api/v1/clusters?name=the-one-name").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_read_back_at_once_through_any_replica() {
    writes_are_read_back_at_once_through_any_replica_on(common::Deployment::start(2, 2).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_three_node_cluster_writes_are_read_back_at_once_through_any_replica() {
    writes_are_read_back_at_once_through_any_replica_on(common::Deployment::start_clustered(2, 2, &[]).await).await;
}

async fn writes_are_read_back_at_once_through_any_replica_on(d: common::Deployment) {
    let apis = [d.api(0).await, d.api(1).await];
    for i in 0..60 {
        let (w, r) = (&apis[i % 2], &apis[(i + 1) % 2]);
        let server = format!("https://ryw-{i}.example.com");
        let (s, body) = rest_post(w, "/api/v1/clusters", json!({"server": server, "name": format!("ryw-{i}")})).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let (s, got) = rest_get(r, &format!("/api/v1/clusters/{}", escape(&server))).await;
        assert_eq!(s, StatusCode::OK, "write {i} not visible through the other gateway: {got}");
        let list =
            r.grpc.clone().list(corral_proto::cluster::ClusterQuery::default()).await.expect("list").into_inner();
        assert!(list.items.iter().any(|c| c.server == server), "write {i} missing from list");
        // And an update is visible at once too.
        let (s, _) = common::suite::rest_put(
            w,
            &format!("/api/v1/clusters/{}?updatedFields=labels", escape(&server)),
            json!({"labels": {"step": "two"}}),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let (_, got) = rest_get(r, &format!("/api/v1/clusters/ryw-{i}?id.type=name")).await;
        assert_eq!(got["labels"]["step"], "two", "update {i} not visible: {got}");
    }
}

/// A command authorised against one version of a cluster does nothing once the cluster changed:
/// the gateway re-authorises instead of acting on what it checked before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_expecting_a_stale_version_is_refused_and_changes_nothing() {
    use corral_proto::cluster::{ClusterId, ClusterUpdateRequest};
    use corral_proto::registry::{Command, Query, command, query, reply};
    use corral_service_api::{ClusterCommands as _, ClusterQueries as _};
    let d = common::Deployment::start(1, 1).await;
    let api = d.api(0).await;
    let server = "https://versioned.example.com";
    let (s, _) =
        common::suite::rest_post(&api, "/api/v1/clusters", serde_json::json!({"server": server, "name": "versioned"}))
            .await;
    assert!(s.is_success());
    let client = d.client().await;
    let registry = corral_service_api::nats::NatsClient::new(client, std::time::Duration::from_secs(30));
    let get = || Query {
        linearizable: true,
        kind: Some(query::Kind::Get(corral_proto::cluster::ClusterQuery {
            server: server.into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let version = registry.query(get()).await.cluster_version;
    assert!(version >= 1);
    let update = |label: &str, expected_version: u64| Command {
        expected_version,
        kind: Some(command::Kind::Update(ClusterUpdateRequest {
            cluster: Some(corral_proto::v1alpha1::Cluster {
                server: server.into(),
                labels: [("step".to_string(), label.to_string())].into(),
                ..Default::default()
            }),
            updated_fields: vec!["labels".into()],
            id: Some(ClusterId { r#type: "server".into(), value: server.into() }),
        })),
        ..Default::default()
    };
    let ok = registry.command(update("one", version)).await;
    assert!(matches!(ok.result, Some(reply::Result::Cluster(_))), "{ok:?}");
    let stale = registry.command(update("two", version)).await;
    match stale.result {
        Some(reply::Result::Error(e)) => assert_eq!(tonic::Code::from(e.code), tonic::Code::Aborted, "{e:?}"),
        other => panic!("a stale version must be refused: {other:?}"),
    }
    match registry.query(get()).await.result {
        Some(reply::Result::Cluster(c)) => assert_eq!(c.labels.get("step").map(String::as_str), Some("one")),
        other => panic!("get: {other:?}"),
    }
}

/// Whichever kind of service starts first against an empty three-node cluster creates the stream,
/// and creates it with the replicas it was told, every kind alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_service_creates_the_stream_with_the_configured_replicas() {
    use corral_test_harness::ServiceProcess;
    use corral_test_harness::cluster::NatsCluster;
    use corral_test_harness::deployment::{ADMIN_PASSWORD, new_seal_key, workspace_bin};
    use std::time::Duration;
    let kinds: [(&str, Vec<String>); 6] = [
        ("corral-registry", vec!["--data-dir".into(), "DATA".into()]),
        ("corral-gateway", vec!["--listen".into(), "127.0.0.1:0".into()]),
        ("corral-health-probe", vec![]),
        ("corral-cache-invalidation", vec![]),
        ("corral-auth-rotation", vec![]),
        ("corral", vec!["--data-dir".into(), "DATA".into(), "--listen".into(), "127.0.0.1:0".into()]),
    ];
    let nats = NatsCluster::start().await.expect("three nats-server nodes");
    for (name, extra) in kinds {
        let data = tempfile::tempdir().expect("tempdir");
        let mut args = vec!["--nats-url".to_string(), nats.urls()];
        args.extend(extra.into_iter().map(|a| if a == "DATA" { data.path().display().to_string() } else { a }));
        let env = vec![
            ("CORRAL_STREAM_REPLICAS".to_string(), "3".to_string()),
            ("CORRAL_SEAL_KEY".to_string(), new_seal_key()),
            ("CORRAL_ADMIN_PASSWORD".to_string(), ADMIN_PASSWORD.to_string()),
        ];
        let ready = corral_process::ready_line(name, None);
        let mut service = ServiceProcess::spawn(&workspace_bin(name), &args, &env, &ready, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let js = async_nats::jetstream::new(async_nats::connect(nats.url(2)).await.expect("nats"));
        let mut stream = js.get_stream("CORRAL").await.expect("the stream exists");
        let info = stream.info().await.expect("stream info");
        assert_eq!(info.config.num_replicas, 3, "{name} created the stream with {} replicas", info.config.num_replicas);
        // The next kind starts against a cluster without the stream again.
        service.kill_9().await;
        js.delete_stream("CORRAL").await.expect("delete the stream");
    }
}

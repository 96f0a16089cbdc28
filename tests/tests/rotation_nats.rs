//! rotate-auth against a fake Kubernetes API server, through the gateway on a real nats-server:
//! a new service-account token the cluster accepts, the old one working through the grace
//! period and refused after it, the new token sealed in the log, and a failed rotation that
//! leaves the old credentials in place.

mod common;

use common::DeploymentApi as _;

use common::suite::{b64, escape as enc, rest_post};

use std::time::{Duration, Instant};

use common::Deployment;
use corral_event_log::EventLog;
use corral_fake_kube::FakeKube;
use corral_proto::cluster::ClusterQuery;
use serde_json::json;

const GRACE: f64 = 2.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_auth_swaps_the_token_and_retires_the_old_one_after_the_grace_period() {
    let d = Deployment::start(1, 1).await;
    let _rotation = d.spawn_auth_rotation(GRACE).await;
    let _probe = d.spawn_health_probe(0.5, 1.0).await;
    let fake = FakeKube::start(&[]).await;
    fake.add_service_account_token("kube-system", "argocd-manager", "argocd-manager-token-first", "first-token");
    let api = d.api(0).await;
    let server = fake.url();
    let ca = b64(fake.ca_pem());
    let (s, b) = rest_post(&api, "/api/v1/clusters", json!({"server": server, "name": "rotating", "config": {"bearerToken": "first-token", "tlsClientConfig": {"caData": ca}}})).await;
    assert_eq!(s.as_u16(), 200, "{b}");

    let resp =
        api.http.post(api.url(&format!("/api/v1/clusters/{}/rotate-auth", enc(&server)))).send().await.expect("send");
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "{}");
    let rotated_at = Instant::now();
    let tokens = fake.service_account_tokens("kube-system", "argocd-manager");
    let new: Vec<_> = tokens.iter().filter(|t| *t != "first-token").cloned().collect();
    assert_eq!(new.len(), 1, "one new token: {tokens:?}");
    let new = new[0].clone();
    assert!(fake.accepts(&new) && fake.accepts("first-token"), "both tokens work during the grace period");

    // The cluster now uses the new token: the health probe, which reads the config from the log,
    // stays Successful after the old token is gone.
    let deadline = Instant::now() + Duration::from_secs_f64(GRACE + 5.0);
    while fake.accepts("first-token") {
        assert!(Instant::now() < deadline, "the old token outlived its grace period");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lived = rotated_at.elapsed();
    println!("old token refused {lived:?} after the rotation (grace {GRACE} s)");
    assert!(lived >= Duration::from_secs_f64(GRACE), "the old token was removed before its grace ended: {lived:?}");
    assert!(fake.accepts(&new));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let resp = api.http.get(api.url(&format!("/api/v1/clusters/{}", enc(&server)))).send().await.expect("send");
    let c: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(c["connectionState"]["status"], "Successful", "{c}");
    assert!(!c.to_string().contains(&new), "responses never show the token");

    // The new token is sealed in the log, never in clear.
    let client = d.client().await;
    let log = corral_event_log::NatsLog::new(client, Default::default()).await.expect("log");
    for e in log.read(1, 1_000_000).await.expect("read") {
        assert!(
            !e.payload.windows(new.len()).any(|w| w == new.as_bytes()),
            "event {} holds the new token in clear",
            e.seq
        );
    }

    // gRPC RotateAuth rotates again.
    let mut g = api.grpc.clone();
    g.rotate_auth(ClusterQuery { server: server.clone(), ..Default::default() }).await.expect("gRPC rotate");
    assert_eq!(
        fake.service_account_tokens("kube-system", "argocd-manager").len(),
        2,
        "the second rotation adds a token"
    );

    // A rotation the cluster refuses leaves the old credentials in place, with a clear error.
    let other = FakeKube::start(&["kept-token"]).await;
    let other_server = other.url();
    let other_ca = b64(other.ca_pem());
    let (s, b) = rest_post(&api, "/api/v1/clusters", json!({"server": other_server, "name": "no-sa", "annotations": {"corral.io/rotation-service-account": "kube-system/missing"},
            "config": {"bearerToken": "kept-token", "tlsClientConfig": {"caData": other_ca}}})).await;
    assert_eq!(s.as_u16(), 200, "{b}");
    let resp = api
        .http
        .post(api.url(&format!("/api/v1/clusters/{}/rotate-auth", enc(&other_server))))
        .send()
        .await
        .expect("send");
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("old credentials stay") && message.contains("missing"), "{message}");
    assert!(other.accepts("kept-token"));
    assert!(other.service_account_tokens("kube-system", "missing").is_empty(), "no Secret is left behind");
}

/// A deployment whose old tokens live half a second after a rotation, and a fake cluster whose
/// `argocd-manager` holds `first-token`.
async fn rotating_deployment() -> (Deployment, corral_test_harness::ServiceProcess, FakeKube, common::Api) {
    let d = Deployment::start(1, 1).await;
    let rotation = d.spawn_auth_rotation(0.5).await;
    let fake = FakeKube::start(&[]).await;
    fake.add_service_account_token("kube-system", "argocd-manager", "argocd-manager-token-first", "first-token");
    let api = d.api(0).await;
    (d, rotation, fake, api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_can_ask_for_scheduled_rotation() {
    let (_d, _rotation, fake, api) = rotating_deployment().await;
    let ca = b64(fake.ca_pem());
    // Every 0.0006 h = 2.16 s.
    let (s, b) = rest_post(
        &api,
        "/api/v1/clusters",
        json!({"server": fake.url(), "name": "scheduled", "annotations": {"corral.io/rotate-every-hours": "0.0006"},
            "config": {"bearerToken": "first-token", "tlsClientConfig": {"caData": ca}}}),
    )
    .await;
    assert_eq!(s.as_u16(), 200, "{b}");
    let started = Instant::now();
    // Two rotations without anyone asking: the first token retired, a second new one issued.
    while fake.accepts("first-token") || fake.service_account_tokens("kube-system", "argocd-manager").len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no scheduled rotations: {:?}",
            fake.service_account_tokens("kube-system", "argocd-manager")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("scheduled rotations seen after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_through_the_token_request_api() {
    let (_d, _rotation, fake, api) = rotating_deployment().await;
    let ca = b64(fake.ca_pem());
    let server = fake.url();
    let (s, b) = rest_post(&api, "/api/v1/clusters", json!({"server": server, "name": "bound", "annotations": {"corral.io/rotation-method": "token-request", "corral.io/token-expiration-seconds": "86400"},
            "config": {"bearerToken": "first-token", "tlsClientConfig": {"caData": ca}}})).await;
    assert_eq!(s.as_u16(), 200, "{b}");
    let resp =
        api.http.post(api.url(&format!("/api/v1/clusters/{}/rotate-auth", enc(&server)))).send().await.expect("send");
    assert_eq!(resp.status().as_u16(), 200, "{}", resp.text().await.unwrap_or_default());
    let bound = fake.token_request_tokens("kube-system", "argocd-manager");
    assert_eq!(bound.len(), 1, "one token from the TokenRequest API");
    assert!(fake.accepts(&bound[0]));
    // The old token's Secret still goes when the grace period ends.
    let started = Instant::now();
    while fake.accepts("first-token") {
        assert!(started.elapsed() < Duration::from_secs(5), "the old token outlived its grace period");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(fake.accepts(&bound[0]));
    // A bad method is refused before anything happens on the cluster.
    let resp = api
        .http
        .put(api.url(&format!("/api/v1/clusters/{}?updatedFields=annotations", enc(&server))))
        .json(&json!({"server": server, "annotations": {"corral.io/rotation-method": "magic"}}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    let resp =
        api.http.post(api.url(&format!("/api/v1/clusters/{}/rotate-auth", enc(&server)))).send().await.expect("send");
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(fake.token_request_tokens("kube-system", "argocd-manager").len(), 1);
}

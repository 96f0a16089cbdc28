//! The cache-invalidation service against a fake Kubernetes API server, through the gateway on a
//! real nats-server: cache info from discovery on first sight, kept while the cluster does not
//! ask, and refreshed after `invalidate-cache`.

mod common;

use common::DeploymentApi as _;

use common::suite::{b64, escape as enc, rest_post};

use std::time::{Duration, Instant};

use common::{Api, Deployment};
use corral_fake_kube::{FakeKube, GroupVersion};
use serde_json::{Value, json};

async fn get(api: &Api, server: &str) -> Value {
    let resp = api.http.get(api.url(&format!("/api/v1/clusters/{}", enc(server)))).send().await.expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().await.expect("json")
}

async fn wait_cache(api: &Api, server: &str, limit: Duration, want: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let c = get(api, server).await;
        if want(&c["info"]["cacheInfo"]) {
            return c;
        }
        assert!(started.elapsed() < limit, "cache info not reached within {limit:?}; last: {}", c["info"]["cacheInfo"]);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_cache_resyncs_the_discovery_counts() {
    invalidate_cache_resyncs_the_discovery_counts_on(Deployment::start(1, 1).await).await;
}

/// The same over TLS to three NATS nodes, each service as its own least-privilege user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_least_privilege_users_invalidate_cache_resyncs_the_discovery_counts() {
    invalidate_cache_resyncs_the_discovery_counts_on(Deployment::start_secured(1, 1, &[]).await).await;
}

async fn invalidate_cache_resyncs_the_discovery_counts_on(d: Deployment) {
    let fake = FakeKube::start(&["cache-token"]).await;
    let _cache = d.spawn_cache_invalidation(0.5).await;
    let api = d.api(0).await;
    let server = fake.url();
    let ca = b64(fake.ca_pem());
    let (s, b) = rest_post(&api, "/api/v1/clusters", json!({"server": server, "name": "cached", "config": {"bearerToken": "cache-token", "tlsClientConfig": {"caData": ca}}})).await;
    assert_eq!(s.as_u16(), 200, "{b}");

    // First sight: core/v1 (6 kinds), apps/v1 (3), batch/v1 (2).
    let c = wait_cache(&api, &server, Duration::from_secs(3), |ci| ci["apisCount"] == 3).await;
    assert_eq!(c["info"]["cacheInfo"]["resourcesCount"], 11);
    let first_sync = c["info"]["cacheInfo"]["lastCacheSyncTime"].as_str().expect("lastCacheSyncTime").to_string();

    // The cluster's discovery changes; nothing asks for a refresh, so the cache stays.
    let mut groups = vec![
        GroupVersion {
            group: String::new(),
            version: "v1".into(),
            kinds: ["Pod", "Service", "Secret", "ServiceAccount", "Namespace", "ConfigMap"].map(String::from).to_vec(),
        },
        GroupVersion {
            group: "apps".into(),
            version: "v1".into(),
            kinds: ["Deployment", "StatefulSet", "DaemonSet"].map(String::from).to_vec(),
        },
        GroupVersion {
            group: "batch".into(),
            version: "v1".into(),
            kinds: ["Job", "CronJob"].map(String::from).to_vec(),
        },
    ];
    groups.push(GroupVersion {
        group: "example.com".into(),
        version: "v1".into(),
        kinds: vec!["Widget".into(), "Gadget".into()],
    });
    fake.set_groups(groups);
    // Sync times are to the second: make sure the next one falls in a later second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get(&api, &server).await["info"]["cacheInfo"]["apisCount"], 3, "no refresh was asked for");

    // invalidate-cache answers the cluster with refreshRequestedAt; the fresh counts follow.
    let resp = api
        .http
        .post(api.url(&format!("/api/v1/clusters/{}/invalidate-cache", enc(&server))))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    let answered: Value = resp.json().await.expect("json");
    assert!(answered["refreshRequestedAt"].as_str().is_some_and(|t| t.ends_with('Z')), "{answered}");
    let c = wait_cache(&api, &server, Duration::from_secs(3), |ci| ci["apisCount"] == 4).await;
    assert_eq!(c["info"]["cacheInfo"]["resourcesCount"], 13);
    let second_sync = c["info"]["cacheInfo"]["lastCacheSyncTime"].as_str().expect("lastCacheSyncTime").to_string();
    assert!(second_sync > first_sync, "{first_sync} -> {second_sync}");
}

//! Acknowledged writes survive kill -9: of the registry and of the gateway on NATS, and of the
//! all-in-one binary on the embedded log. A projection rebuilt from the log matches the one that
//! survived the crash.

mod common;

use common::DeploymentApi as _;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::suite::{rest_get, rest_post};
use corral_test_harness::{ServiceProcess, parse_listen_addr};
use serde_json::{Value, json};

/// Writers that create clusters until told to stop, remembering each acknowledged one.
struct Writers {
    acked: Arc<Mutex<BTreeSet<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(base_urls: Arc<Mutex<Vec<String>>>, token: String, writers: usize, tag: &'static str) -> Writers {
        let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks = (0..writers)
            .map(|w| {
                let (acked, stop, base_urls, token) = (acked.clone(), stop.clone(), base_urls.clone(), token.clone());
                tokio::spawn(async move {
                    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
                    let mut n = 0u32;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let server = format!("https://{tag}-{w}-{n}.example.com");
                        let base = base_urls.lock().expect("urls")[0].clone();
                        let resp = http
                            .post(format!("{base}/api/v1/clusters"))
                            .header("content-type", "application/json")
                            .bearer_auth(&token)
                            .body(json!({"server": server, "name": format!("{tag}-{w}-{n}")}).to_string())
                            .send()
                            .await;
                        match resp {
                            Ok(r) if r.status().is_success() => {
                                acked.lock().expect("acked").insert(server);
                                n += 1;
                            }
                            // Not acknowledged: the writer may retry it; it need not be there.
                            _ => tokio::time::sleep(Duration::from_millis(20)).await,
                        }
                    }
                })
            })
            .collect();
        Writers { acked, stop, tasks }
    }

    async fn count(&self) -> usize {
        self.acked.lock().expect("acked").len()
    }

    async fn wait_for_more(&self, more: usize) {
        let target = self.count().await + more;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while self.count().await < target {
            assert!(tokio::time::Instant::now() < deadline, "writers made no progress");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn finish(self) -> BTreeSet<String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }

        self.acked.lock().expect("acked").clone()
    }
}

async fn list_servers(api: &common::Api) -> BTreeSet<String> {
    let (s, list) = rest_get(api, "/api/v1/clusters").await;
    assert!(s.is_success(), "{list}");
    list["items"].as_array().expect("items").iter().filter_map(|c| c["server"].as_str().map(String::from)).collect()
}

async fn full_list(api: &common::Api) -> Value {
    rest_get(api, "/api/v1/clusters").await.1
}

/// A session token of the admin: signed with the key in the log, so valid on every gateway.
async fn api_token(api: &common::Api) -> String {
    api.token.clone().expect("logged in")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_registry_and_gateway_loses_no_acknowledged_write() {
    let mut d = common::Deployment::start(1, 1).await;
    let base = Arc::new(Mutex::new(vec![format!("http://{}", d.gateway_addrs[0])]));
    // An API token outlives the gateway that issued it: the writers keep it across restarts.
    let token = api_token(&d.api(0).await).await;
    let writers = Writers::start(base.clone(), token, 4, "reg");
    writers.wait_for_more(30).await;

    // Registry dies mid-stream and comes back on its own projection.
    d.registries[0].kill_9().await;
    writers.wait_for_more(0).await;
    let dir = d.registry_dirs[0].path().to_path_buf();
    d.registries[0] = d.spawn_registry(&dir).await;
    writers.wait_for_more(30).await;

    // Gateway dies mid-stream; a new one takes its place.
    d.gateways[0].kill_9().await;
    let (g, addr) = d.spawn_gateway().await;
    d.gateways[0] = g;
    d.gateway_addrs[0] = addr;
    base.lock().expect("urls")[0] = format!("http://{addr}");
    writers.wait_for_more(30).await;
    let acked = writers.finish().await;

    let api = d.api(0).await;
    let stored = list_servers(&api).await;
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");

    // The registry's projection survived kill -9; the new gateway built its view from zero.
    let survived = common::registry_list(&d).await;
    assert_eq!(survived.items.len(), stored.len());
    let via_gateway =
        api.grpc.clone().list(corral_proto::cluster::ClusterQuery::default()).await.expect("list").into_inner();
    assert_eq!(via_gateway, survived, "a view rebuilt from zero matches the surviving projection");

    // A registry that rebuilds its projection from zero answers the same.
    d.registries[0].kill_9().await;
    let fresh = tempfile::tempdir().expect("tempdir");
    d.registries[0] = d.spawn_registry(fresh.path()).await;
    assert_eq!(common::registry_list(&d).await, survived, "rebuilt projection matches the one that survived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_all_in_one_on_the_embedded_log_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let start = |dir: std::path::PathBuf| async move {
        let p = ServiceProcess::spawn(
            &corral_test_harness::deployment::workspace_bin("corral"),
            &["--listen".into(), "127.0.0.1:0".into(), "--data-dir".into(), dir.display().to_string()],
            &[
                ("CORRAL_ADMIN_PASSWORD".into(), common::ADMIN_PASSWORD.into()),
                // The writers' clusters are made-up hosts: probing them would leave loopback.
                ("CORRAL_PROBE_INTERVAL_SECONDS".into(), "0".into()),
                ("CORRAL_CACHE_CHECK_SECONDS".into(), "0".into()),
            ],
            "listening on",
            Duration::from_secs(60),
        )
        .await
        .expect("corral process");
        let addr = parse_listen_addr(&p.ready_line()).expect("addr");
        (p, addr)
    };
    let (mut p, addr) = start(dir.path().to_path_buf()).await;
    let base = Arc::new(Mutex::new(vec![format!("http://{addr}")]));
    let token = api_token(&common::wait_for_api(addr).await).await;
    let writers = Writers::start(base.clone(), token, 4, "emb");
    writers.wait_for_more(50).await;
    p.kill_9().await;
    let acked = writers.finish().await;

    let (mut p, addr) = start(dir.path().to_path_buf()).await;
    let api = common::wait_for_api(addr).await;
    let stored = list_servers(&api).await;
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert_eq!(lost.len(), 0, "acknowledged but lost: {lost:?}");
    let survived = full_list(&api).await;
    p.terminate().await;

    // Rebuild: drop the projections, keep the log.
    std::fs::remove_dir_all(dir.path().join("projections")).expect("remove projections");
    let (_p, addr) = start(dir.path().to_path_buf()).await;
    let api = common::wait_for_api(addr).await;
    assert_eq!(full_list(&api).await, survived, "rebuilt projection matches");
    let (s, _) =
        rest_post(&api, "/api/v1/clusters", json!({"server": "https://after-rebuild.example.com", "name": "after"}))
            .await;
    assert!(s.is_success());
}

//! Credentials never reach the event log, a projection or a response in clear.

mod common;

use common::DeploymentApi as _;

use common::files_containing;
use common::suite::{PASSWORD, TOKEN, cluster_json, rest_get, rest_post};
use corral_event_log::{EventLog, NatsLog};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_in_clear_in_the_stream_the_store_or_sled_files() {
    let d = common::Deployment::start(1, 1).await;
    let api = d.api(0).await;
    let (s, body) = rest_post(&api, "/api/v1/clusters", cluster_json("https://sealed.example.com", "sealed")).await;
    assert!(s.is_success(), "{body}");
    let (_, got) = rest_get(&api, "/api/v1/clusters/sealed?id.type=name").await;
    assert!(!got.to_string().contains(TOKEN));

    let client = d.client().await;
    let log = NatsLog::new(client, Default::default()).await.expect("log");
    let events = log.read(1, 10_000).await.expect("read");
    assert!(!events.is_empty());
    for e in &events {
        for secret in [TOKEN, PASSWORD] {
            assert!(
                !e.payload.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "event {} has a credential in clear",
                e.seq
            );
        }
    }
    // The scan sees what is stored: the server URL is there in clear.
    assert!(!files_containing(d.nats.store_dir(), b"sealed.example.com").is_empty(), "scan finds stored data");
    for secret in [TOKEN, PASSWORD] {
        assert!(
            files_containing(d.nats.store_dir(), secret.as_bytes()).is_empty(),
            "JetStream store holds a credential in clear"
        );
        assert!(
            files_containing(d.registry_dirs[0].path(), secret.as_bytes()).is_empty(),
            "registry projection holds a credential in clear"
        );
        let logs = d.registries[0].logs().join("\n") + &d.gateways[0].logs().join("\n");
        assert!(!logs.contains(secret), "a log line holds a credential");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_in_clear_in_the_embedded_data_dir() {
    let cp = common::Embedded::start().await;
    let (s, body) = rest_post(&cp.api, "/api/v1/clusters", cluster_json("https://sealed.example.com", "sealed")).await;
    assert!(s.is_success(), "{body}");
    let dir = cp.stop().await;
    assert!(!files_containing(dir.path(), b"sealed.example.com").is_empty(), "scan finds stored data");
    for secret in [TOKEN, PASSWORD] {
        assert!(files_containing(dir.path(), secret.as_bytes()).is_empty(), "data dir holds a credential in clear");
    }
}

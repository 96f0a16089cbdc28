//! The health probe against fake Kubernetes API servers (TLS, own CA), through the gateway on a
//! real nats-server: Unknown → Successful with the server's version, Failed with a useful message
//! when the server goes down, hangs or refuses the token, back to Successful; client-certificate
//! and exec-plugin credentials; no event for a steady fleet; deleted clusters stop being probed.

mod common;

use common::DeploymentApi as _;

use common::suite::{b64, escape as enc, rest_post};

use std::time::{Duration, Instant};

use common::{Api, Deployment};
use corral_event_log::EventLog;
use corral_fake_kube::{FakeKube, Mode};
use serde_json::{Value, json};

const INTERVAL: f64 = 0.5;
const TIMEOUT: f64 = 1.0;

async fn get(api: &Api, server: &str) -> Value {
    let resp = api.http.get(api.url(&format!("/api/v1/clusters/{}", enc(server)))).send().await.expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().await.expect("json")
}

async fn create(api: &Api, body: Value) {
    let (s, b) = rest_post(api, "/api/v1/clusters", body).await;
    assert_eq!(s.as_u16(), 200, "{b}");
}

/// Waits until the cluster's state satisfies `want`; the cluster as last seen and how long it took.
async fn wait_state(api: &Api, server: &str, limit: Duration, want: impl Fn(&Value) -> bool) -> (Value, Duration) {
    let started = Instant::now();
    loop {
        let c = get(api, server).await;
        if want(&c) {
            return (c, started.elapsed());
        }
        assert!(started.elapsed() < limit, "state not reached within {limit:?}; last: {}", c["connectionState"]);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn status(c: &Value) -> &str {
    c["connectionState"]["status"].as_str().unwrap_or_default()
}

async fn state_events(d: &Deployment) -> usize {
    let client = d.client().await;
    let log = corral_event_log::NatsLog::new(client, Default::default()).await.expect("log");
    log.read(1, 1_000_000).await.expect("read").iter().filter(|e| e.subject.starts_with("corral.clusterstate.")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_probe_records_what_each_cluster_answers() {
    the_health_probe_records_what_each_cluster_answers_on(Deployment::start(1, 1).await).await;
}

/// The same over TLS to three NATS nodes, each service as its own least-privilege user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_least_privilege_users_the_health_probe_records_what_each_cluster_answers() {
    the_health_probe_records_what_each_cluster_answers_on(Deployment::start_secured(1, 1, &[]).await).await;
}

async fn the_health_probe_records_what_each_cluster_answers_on(d: Deployment) {
    let fake = FakeKube::start(&["good-token"]).await;
    let other = FakeKube::start(&["exec-token"]).await;
    // `other` also plays AWS STS for role assumption (AWS_ENDPOINT_URL_STS, trusted via AWS_CA_BUNDLE).
    let ca_bundle = tempfile::NamedTempFile::new().expect("ca bundle");
    std::fs::write(ca_bundle.path(), other.ca_pem()).expect("write ca bundle");
    let sts = other.url();
    let bundle = ca_bundle.path().display().to_string();
    let _probe = d
        .spawn_health_probe_with(
            INTERVAL,
            TIMEOUT,
            &[("AWS_ENDPOINT_URL_STS", sts.as_str()), ("AWS_CA_BUNDLE", bundle.as_str())],
        )
        .await;
    let api = d.api(0).await;
    let interval = Duration::from_secs_f64(INTERVAL);

    // A new cluster is probed within a second of its creation.
    let ok = fake.url();
    create(&api, json!({"server": ok, "name": "ok", "config": {"bearerToken": "good-token", "tlsClientConfig": {"caData": b64(fake.ca_pem())}}})).await;
    let first = get(&api, &ok).await;
    assert!(matches!(status(&first), "Unknown" | "Successful"), "{first}");
    let (c, took) = wait_state(&api, &ok, Duration::from_secs(1), |c| status(c) == "Successful").await;
    println!("new cluster Successful after {took:?}");
    assert_eq!(c["serverVersion"], "1.31");
    assert_eq!(c["info"]["serverVersion"], "1.31");
    assert_eq!(c["info"]["connectionState"]["status"], "Successful");
    assert!(c["connectionState"]["attemptedAt"].as_str().is_some_and(|t| t.ends_with('Z')), "{c}");

    // A steady fleet appends nothing, and attemptedAt stays the time of the probe that
    // established the state (later probes that find the same state do not move it).
    let before = state_events(&d).await;
    let attempted = c["connectionState"]["attemptedAt"].clone();
    tokio::time::sleep(interval * 4).await;
    assert_eq!(state_events(&d).await, before, "healthy probes must not append events");
    assert_eq!(get(&api, &ok).await["connectionState"]["attemptedAt"], attempted);

    // Down: Failed within two intervals, with a message that says why.
    fake.set_mode(Mode::Down);
    let (c, took) = wait_state(&api, &ok, interval * 2 + Duration::from_millis(500), |c| status(c) == "Failed").await;
    println!("server down → Failed after {took:?}: {}", c["connectionState"]["message"]);
    assert!(c["connectionState"]["message"].as_str().is_some_and(|m| m.contains("cannot reach")), "{c}");
    fake.set_mode(Mode::Up);
    wait_state(&api, &ok, interval * 3, |c| status(c) == "Successful").await;

    // A hanging server fails on the timeout; a new version is noticed.
    fake.set_mode(Mode::Hang);
    let (c, _) =
        wait_state(&api, &ok, interval * 2 + Duration::from_secs_f64(TIMEOUT * 2.0), |c| status(c) == "Failed").await;
    assert!(
        c["connectionState"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("did not answer") || m.contains("timed out") || m.contains("timeout")),
        "{c}"
    );
    fake.set_mode(Mode::Up);
    fake.set_version("v1.32.4");
    wait_state(&api, &ok, interval * 3 + Duration::from_secs_f64(TIMEOUT), |c| {
        status(c) == "Successful" && c["serverVersion"] == "1.32"
    })
    .await;

    // A wrong token: Failed with 401, and the token is nowhere in the message.
    let bad = fake.url().replace("127.0.0.1", "localhost");
    create(&api, json!({"server": bad, "name": "bad", "config": {"bearerToken": "wrong-token-value", "tlsClientConfig": {"caData": b64(fake.ca_pem())}}})).await;
    let (c, _) = wait_state(&api, &bad, Duration::from_secs(2), |c| status(c) == "Failed").await;
    let message = c["connectionState"]["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("401"), "{message}");
    assert!(!message.contains("wrong-token-value"));

    // A CA that did not sign the server's certificate: Failed with a TLS message.
    let wrong_ca = format!("{}/k/wrong-ca", fake.url());
    create(&api, json!({"server": wrong_ca, "name": "wrong-ca", "config": {"bearerToken": "good-token", "tlsClientConfig": {"caData": b64(other.ca_pem())}}})).await;
    let (c, _) = wait_state(&api, &wrong_ca, Duration::from_secs(2), |c| status(c) == "Failed").await;
    let message = c["connectionState"]["message"].as_str().unwrap_or_default().to_lowercase();
    assert!(message.contains("certificate") || message.contains("tls") || message.contains("issuer"), "{message}");
    println!("wrong CA → {message}");

    // `insecure` skips verification; `serverName` picks the name the certificate is checked for;
    // username and password; a server answering 500.
    let insecure = format!("{}/k/insecure", fake.url());
    create(&api, json!({"server": insecure, "name": "insecure", "config": {"bearerToken": "good-token", "tlsClientConfig": {"insecure": true}}})).await;
    let (c, _) = wait_state(&api, &insecure, Duration::from_secs(2), |c| status(c) != "Unknown").await;
    assert_eq!(status(&c), "Successful", "{c}");
    let named = format!("{}/k/named", fake.url());
    create(&api, json!({"server": named, "name": "named", "config": {"bearerToken": "good-token", "tlsClientConfig": {"caData": b64(fake.ca_pem()), "serverName": "localhost"}}})).await;
    let (c, _) = wait_state(&api, &named, Duration::from_secs(2), |c| status(c) != "Unknown").await;
    assert_eq!(status(&c), "Successful", "{c}");
    let misnamed = format!("{}/k/misnamed", fake.url());
    create(&api, json!({"server": misnamed, "name": "misnamed", "config": {"bearerToken": "good-token", "tlsClientConfig": {"caData": b64(fake.ca_pem()), "serverName": "not-this-server.example"}}})).await;
    let (c, _) = wait_state(&api, &misnamed, Duration::from_secs(2), |c| status(c) != "Unknown").await;
    assert_eq!(status(&c), "Failed", "{c}");
    fake.add_basic("probe-user", "probe-password-1");
    let basic = format!("{}/k/basic", fake.url());
    create(&api, json!({"server": basic, "name": "basic", "config": {"username": "probe-user", "password": "probe-password-1", "tlsClientConfig": {"caData": b64(fake.ca_pem())}}})).await;
    let (c, _) = wait_state(&api, &basic, Duration::from_secs(2), |c| status(c) != "Unknown").await;
    assert_eq!(status(&c), "Successful", "{c}");
    fake.set_mode(Mode::Error500);
    let (c, _) = wait_state(&api, &basic, interval * 3, |c| status(c) == "Failed").await;
    assert!(c["connectionState"]["message"].as_str().is_some_and(|m| m.contains("500")), "{c}");
    fake.set_mode(Mode::Up);
    for server in [&insecure, &named, &misnamed, &basic] {
        let resp = api.http.delete(api.url(&format!("/api/v1/clusters/{}", enc(server)))).send().await.expect("send");
        assert_eq!(resp.status().as_u16(), 200);
    }

    // Client certificate and key instead of a token.
    let (cert, key) = other.issue_client_cert("probe");
    let by_cert = other.url();
    create(&api, json!({"server": by_cert, "name": "by-cert", "config": {"tlsClientConfig": {"caData": b64(other.ca_pem()), "certData": b64(&cert), "keyData": b64(&key)}}})).await;
    wait_state(&api, &by_cert, Duration::from_secs(2), |c| status(c) == "Successful").await;

    // An exec credential plugin that prints an ExecCredential, as kubectl runs them.
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("credential.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho '{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{\"token\":\"'\"$PLUGIN_TOKEN\"'\"}}'\n",
    )
    .expect("script");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let by_exec = other.url().replace("127.0.0.1", "localhost");
    create(
        &api,
        json!({"server": by_exec, "name": "by-exec", "config": {
            "tlsClientConfig": {"caData": b64(other.ca_pem())},
            "execProviderConfig": {"command": script.display().to_string(), "apiVersion": "client.authentication.k8s.io/v1", "env": {"PLUGIN_TOKEN": "exec-token"}}}}),
    )
    .await;
    let (c, _) = wait_state(&api, &by_exec, Duration::from_secs(3), |c| status(c) != "Unknown").await;
    assert_eq!(status(&c), "Successful", "{c}");

    // AWS IAM authentication: an EKS token (presigned STS GetCallerIdentity URL).
    other.accept_aws("eks-prod");
    let by_aws = format!("{}/k/eks", other.url());
    create(&api, json!({"server": by_aws, "name": "by-aws", "config": {"tlsClientConfig": {"caData": b64(other.ca_pem())}, "awsAuthConfig": {"clusterName": "eks-prod"}}})).await;
    let (c, _) = wait_state(&api, &by_aws, Duration::from_secs(2), |c| status(c) != "Unknown").await;
    assert_eq!(status(&c), "Successful", "{c}");
    let resp = api.http.delete(api.url(&format!("/api/v1/clusters/{}", enc(&by_aws)))).send().await.expect("send");
    assert_eq!(resp.status().as_u16(), 200);

    // With roleARN: the probe assumes the role through STS first and signs with what it got.
    let by_role = format!("{}/k/eks-role", other.url());
    create(
        &api,
        json!({"server": by_role, "name": "by-role", "config": {"tlsClientConfig": {"caData": b64(other.ca_pem())},
        "awsAuthConfig": {"clusterName": "eks-prod", "roleARN": "arn:aws:iam::123456789012:role/corral-probe"}}}),
    )
    .await;
    let (c, _) = wait_state(&api, &by_role, Duration::from_secs(3), |c| status(c) != "Unknown").await;
    assert_eq!(status(&c), "Successful", "{c}");
    assert_eq!(other.assumed_roles(), vec!["arn:aws:iam::123456789012:role/corral-probe".to_string()]);
    assert!(
        other.aws_keys_seen().iter().any(|k| k == "ASIAFAKEASSUMED"),
        "the EKS token is signed with the assumed role's credentials"
    );
    let resp = api.http.delete(api.url(&format!("/api/v1/clusters/{}", enc(&by_role)))).send().await.expect("send");
    assert_eq!(resp.status().as_u16(), 200);

    // Deleted clusters stop being probed.
    for server in [&by_cert, &by_exec] {
        let resp = api.http.delete(api.url(&format!("/api/v1/clusters/{}", enc(server)))).send().await.expect("send");
        assert_eq!(resp.status().as_u16(), 200);
    }
    tokio::time::sleep(interval * 2).await;
    let served = other.requests();
    tokio::time::sleep(interval * 4).await;
    assert_eq!(other.requests(), served, "a deleted cluster is still probed");
}

/// Each cluster's observation events, by the replica that appended them (the envelope's actor).
async fn observers(d: &Deployment) -> std::collections::HashMap<String, Vec<String>> {
    use prost::Message;
    let client = d.client().await;
    let log = corral_event_log::NatsLog::new(client, Default::default()).await.expect("log");
    let mut by_cluster: std::collections::HashMap<String, Vec<String>> = Default::default();
    for e in log.read(1, 1_000_000).await.expect("read") {
        if let Some(id) = e.subject.strip_prefix("corral.clusterstate.") {
            let env = corral_proto::events::EventEnvelope::decode(e.payload.as_ref()).expect("envelope");
            by_cluster.entry(id.to_string()).or_default().push(env.actor);
        }
    }
    by_cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_probe_replicas_split_the_fleet_and_the_survivor_takes_over() {
    two_probe_replicas_split_the_fleet_and_the_survivor_takes_over_on(Deployment::start(1, 1).await).await;
}

/// The same over TLS to three NATS nodes, each service as its own least-privilege user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_least_privilege_users_two_probe_replicas_split_the_fleet_and_the_survivor_takes_over() {
    two_probe_replicas_split_the_fleet_and_the_survivor_takes_over_on(Deployment::start_secured(1, 1, &[]).await).await;
}

async fn two_probe_replicas_split_the_fleet_and_the_survivor_takes_over_on(d: Deployment) {
    let fake = FakeKube::start(&["fleet-token"]).await;
    let mut first = d.spawn_health_probe(INTERVAL, TIMEOUT).await;
    let second = d.spawn_health_probe(INTERVAL, TIMEOUT).await;
    let replica = second.logs().into_iter().find_map(|l| Some(l.split_once(" replica ")?.1.trim().to_string()));
    let survivor = format!("health-probe/{}", replica.expect("the second replica's id"));
    // Let the replicas hear each other before the fleet arrives.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let api = d.api(0).await;
    let servers: Vec<String> = (0..12).map(|i| format!("{}/k/c{i}", fake.url())).collect();
    for (i, server) in servers.iter().enumerate() {
        create(&api, json!({"server": server, "name": format!("c{i}"), "config": {"bearerToken": "fleet-token", "tlsClientConfig": {"caData": b64(fake.ca_pem())}}})).await;
    }
    for server in &servers {
        wait_state(&api, server, Duration::from_secs(3), |c| status(c) == "Successful").await;
    }
    let split = observers(&d).await;
    assert_eq!(split.len(), servers.len());
    let replicas: std::collections::BTreeSet<&String> = split.values().flatten().collect();
    assert_eq!(replicas.len(), 2, "both replicas probe a share of the fleet: {split:?}");

    // One replica dies; the other takes its clusters: every cluster notices the outage.
    first.kill_9().await;
    fake.set_mode(Mode::Down);
    let killed = Instant::now();
    let interval = Duration::from_secs_f64(INTERVAL);
    for server in &servers {
        wait_state(&api, server, interval * 4, |c| status(c) == "Failed").await;
    }
    println!(
        "every cluster observed by the survivor {:?} after the other replica died (interval {interval:?})",
        killed.elapsed()
    );
    let after = observers(&d).await;
    for (cluster, actors) in &after {
        assert_eq!(actors.last(), Some(&survivor), "cluster {cluster} was last observed by {actors:?}");
    }
}

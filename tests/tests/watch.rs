//! The public stream of cluster changes through its three doors: gRPC `Watch`, the REST stream
//! (newline-delimited JSON and Server-Sent Events) and, on NATS, the `CORRAL_EVENTS` stream of
//! CloudEvents; on the all-in-one (embedded log) and on separate processes on a nats-server.

mod common;

use std::time::Duration;

use common::suite::{PASSWORD, TOKEN, grpc_cluster};
use common::{Api, DeploymentApi as _};
use corral_proto::cluster::{ClusterCreateRequest, ClusterId, ClusterQuery, ClusterUpdateRequest};
use corral_proto::watch::cluster_watch_client::ClusterWatchClient;
use corral_proto::watch::{ClusterEvent, WatchClustersRequest};
use futures::StreamExt as _;
use tonic::Code;

type Events = tonic::Streaming<ClusterEvent>;

async fn watch(api: &Api, req: WatchClustersRequest) -> Result<Events, tonic::Status> {
    let mut client = ClusterWatchClient::with_interceptor(api.channel.clone(), api.interceptor());
    client.watch(req).await.map(tonic::Response::into_inner)
}

/// The next event, or the status that ended the stream; panics when none comes in time.
async fn next(events: &mut Events) -> Result<ClusterEvent, tonic::Status> {
    match tokio::time::timeout(Duration::from_secs(10), events.message()).await {
        Ok(Ok(Some(ev))) => Ok(ev),
        Ok(Ok(None)) => Err(tonic::Status::cancelled("stream ended")),
        Ok(Err(status)) => Err(status),
        Err(_) => panic!("no event within 10 s"),
    }
}

async fn next_ok(events: &mut Events) -> ClusterEvent {
    next(events).await.unwrap_or_else(|s| panic!("stream ended: {s:?}"))
}

/// Nothing more arrives for a while.
async fn quiet(events: &mut Events) {
    if let Ok(got) = tokio::time::timeout(Duration::from_millis(700), events.message()).await {
        panic!("expected nothing, got {got:?}");
    }
}

fn labelled(server: &str, name: &str, env: &str) -> corral_proto::v1alpha1::Cluster {
    let mut c = grpc_cluster(server, name);
    c.labels = [("env".to_string(), env.to_string())].into();
    c
}

/// The revision a command answered with.
fn revision<T>(r: &tonic::Response<T>) -> u64 {
    r.metadata()
        .get("x-corral-revision")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("the command's revision")
}

async fn create(api: &Api, c: corral_proto::v1alpha1::Cluster) -> u64 {
    let mut grpc = api.grpc.clone();
    revision(&grpc.create(ClusterCreateRequest { cluster: Some(c), upsert: false }).await.expect("create"))
}

async fn relabel(api: &Api, server: &str, env: &str) -> u64 {
    let mut grpc = api.grpc.clone();
    let mut c = grpc_cluster(server, "");
    c.labels = [("env".to_string(), env.to_string())].into();
    let r = grpc
        .update(ClusterUpdateRequest {
            cluster: Some(c),
            updated_fields: vec!["labels".into()],
            id: Some(ClusterId { r#type: "server".into(), value: server.into() }),
        })
        .await
        .expect("update");
    revision(&r)
}

async fn delete(api: &Api, server: &str) -> u64 {
    let mut grpc = api.grpc.clone();
    revision(&grpc.delete(ClusterQuery { server: server.into(), ..Default::default() }).await.expect("delete"))
}

fn rv(e: &ClusterEvent) -> u64 {
    e.resource_version.parse().expect("a decimal resource version")
}

fn server_of(e: &ClusterEvent) -> &str {
    e.cluster.as_ref().map(|c| c.server.as_str()).unwrap_or_default()
}

/// What every deployment shape must do; `tag` keeps clusters of different runs apart.
async fn watch_suite(api: &Api, tag: &str) -> u64 {
    let a = format!("https://{tag}-a.example:6443");
    let b = format!("https://{tag}-b.example:6443");
    let created_a = create(api, labelled(&a, &format!("{tag}-a"), &format!("{tag}-prod"))).await;
    let created_b = create(api, labelled(&b, &format!("{tag}-b"), &format!("{tag}-dev"))).await;
    let prod = format!("env={tag}-prod");

    // A watch from the revision a command answered with sees what came after it, nothing before,
    // each at the revision its own command answered with.
    let mut after_a =
        watch(api, WatchClustersRequest { resource_version: created_a.to_string(), ..Default::default() })
            .await
            .expect("watch from a command's revision");
    let e = next_ok(&mut after_a).await;
    assert_eq!(
        (e.r#type.as_str(), e.reason.as_str(), server_of(&e), rv(&e)),
        ("ADDED", "registered", b.as_str(), created_b)
    );
    drop(after_a);

    // Initial events: the clusters that match, then the bookmark that ends them.
    let mut filtered = watch(api, WatchClustersRequest { selector: prod.clone(), ..Default::default() })
        .await
        .expect("watch with a selector");
    let first = next_ok(&mut filtered).await;
    assert_eq!((first.r#type.as_str(), server_of(&first)), ("ADDED", a.as_str()));
    let end = next_ok(&mut filtered).await;
    assert_eq!(end.r#type, "BOOKMARK");
    assert!(end.initial_events_end && end.cluster.is_none());
    let start = rv(&end);

    // Selector transitions: starting to match is ADDED, stopping is DELETED with the last
    // matching state; a deletion of a cluster that does not match is not seen.
    let relabelled_b = relabel(api, &b, &format!("{tag}-prod")).await;
    let added = next_ok(&mut filtered).await;
    assert_eq!(rv(&added), relabelled_b);
    assert_eq!((added.r#type.as_str(), added.reason.as_str(), server_of(&added)), ("ADDED", "updated", b.as_str()));
    relabel(api, &a, &format!("{tag}-dev")).await;
    let left = next_ok(&mut filtered).await;
    assert_eq!((left.r#type.as_str(), left.reason.as_str(), server_of(&left)), ("DELETED", "updated", a.as_str()));
    assert_eq!(left.cluster.as_ref().map(|c| c.labels["env"].clone()), Some(format!("{tag}-prod")));
    delete(api, &a).await;
    delete(api, &b).await;
    let gone = next_ok(&mut filtered).await;
    assert_eq!((gone.r#type.as_str(), gone.reason.as_str(), server_of(&gone)), ("DELETED", "deleted", b.as_str()));
    quiet(&mut filtered).await;
    assert!(rv(&added) > start && rv(&left) > rv(&added) && rv(&gone) > rv(&left));
    // The clusters were registered with a bearer token and a password: no event carries either.
    for e in [&first, &added, &left, &gone] {
        let text = format!("{e:?}");
        assert!(!text.contains(TOKEN) && !text.contains(PASSWORD), "{text}");
    }

    // Exact resume: everything after `start`, in order, once, replayed from the log; no initial
    // events unless asked for.
    let mut resumed = watch(api, WatchClustersRequest { resource_version: start.to_string(), ..Default::default() })
        .await
        .expect("resume");
    let mut seen = Vec::new();
    for _ in 0..4 {
        let e = next_ok(&mut resumed).await;
        if server_of(&e) == a || server_of(&e) == b {
            seen.push((e.r#type.clone(), e.reason.clone(), server_of(&e).to_string(), rv(&e)));
        }
    }
    let kinds: Vec<(&str, &str, &str)> = seen.iter().map(|(t, r, s, _)| (t.as_str(), r.as_str(), s.as_str())).collect();
    assert_eq!(
        kinds,
        [
            ("MODIFIED", "updated", b.as_str()),
            ("MODIFIED", "updated", a.as_str()),
            ("DELETED", "deleted", a.as_str()),
            ("DELETED", "deleted", b.as_str())
        ]
    );
    assert_eq!(seen[0].3, rv(&added));
    assert!(seen.windows(2).all(|w| w[0].3 < w[1].3), "in revision order, no duplicate: {seen:?}");
    quiet(&mut resumed).await;

    // A revision ahead of the log is refused.
    let ahead = watch(api, WatchClustersRequest { resource_version: "999999999".into(), ..Default::default() }).await;
    assert_eq!(ahead.map(|_| ()).expect_err("a future revision").code(), Code::InvalidArgument);
    let bad = watch(api, WatchClustersRequest { selector: "env in (".into(), ..Default::default() }).await;
    assert_eq!(bad.map(|_| ()).expect_err("a bad selector").code(), Code::InvalidArgument);

    rest_suite(api, tag, start, &seen.iter().map(|s| s.3).collect::<Vec<_>>()).await;
    grpc_web_serves_the_watch(api, start, seen[0].3).await;
    token_revocation_ends_the_watch(api).await;
    start
}

/// The REST stream gives the same events and revisions as gRPC, as NDJSON and as SSE.
async fn rest_suite(api: &Api, tag: &str, start: u64, revisions: &[u64]) {
    let url = api.url(&format!("/api/v1/stream/clusters?resourceVersion={start}"));
    let mut resp = api.http.get(&url).send().await.expect("REST stream");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let mut text = String::new();
    let mut lines: Vec<serde_json::Value> = Vec::new();
    while lines.iter().filter(|l| l["result"]["cluster"]["server"].as_str().is_some_and(|s| s.contains(tag))).count()
        < revisions.len()
    {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk()).await.expect("a chunk in time");
        text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk").expect("stream open")));
        while let Some(i) = text.find('\n') {
            let line: String = text.drain(..=i).collect();
            lines.push(serde_json::from_str(line.trim()).expect("one JSON value per line"));
        }
    }
    let got: Vec<u64> = lines
        .iter()
        .filter(|l| l["result"]["cluster"]["server"].as_str().is_some_and(|s| s.contains(tag)))
        .map(|l| l["result"]["resourceVersion"].as_str().expect("rv").parse().expect("decimal"))
        .collect();
    assert_eq!(got, revisions);
    assert!(!text.contains(TOKEN) && lines.iter().all(|l| !l.to_string().contains(TOKEN)));
    drop(resp);

    // SSE: ids are revisions, and Last-Event-ID resumes after one.
    let resp = api
        .http
        .get(api.url("/api/v1/stream/clusters"))
        .header("accept", "text/event-stream")
        .header("last-event-id", revisions[1].to_string())
        .send()
        .await
        .expect("SSE stream");
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut resp = resp;
    let mut text = String::new();
    while text.matches("\n\n").count() < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk()).await.expect("a chunk in time");
        text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk").expect("stream open")));
    }
    let first = text.split("\n\n").next().expect("an event");
    assert!(first.starts_with(&format!("id: {}\ndata: {{\"result\":", revisions[2])), "{first}");

    // Refusals come before the first byte, with the right status.
    let future = api.http.get(api.url("/api/v1/stream/clusters?resourceVersion=999999999")).send().await.expect("req");
    assert_eq!(future.status(), 400);
    let bad = api.http.get(api.url("/api/v1/stream/clusters?allowBookmarks=maybe")).send().await.expect("req");
    assert_eq!(bad.status(), 400);
    let anonymous = api.anonymous().http.get(api.url("/api/v1/stream/clusters")).send().await.expect("req");
    assert_eq!(anonymous.status(), 401);
}

/// The same watch over gRPC-web (browsers, Argo CD's CLI with --grpc-web): a message frame per
/// event on an HTTP/1.1 response.
async fn grpc_web_serves_the_watch(api: &Api, start: u64, first_revision: u64) {
    use prost::Message as _;
    let request = WatchClustersRequest { resource_version: start.to_string(), ..Default::default() }.encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(request.len() as u32).to_be_bytes());
    body.extend_from_slice(&request);
    let mut resp = api
        .http
        .post(api.url("/corral.watch.v1.ClusterWatch/Watch"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(body)
        .send()
        .await
        .expect("gRPC-web request");
    assert_eq!(resp.status(), 200);
    let mut bytes = Vec::new();
    while bytes.len() < 5 || bytes.len() < 5 + u32::from_be_bytes(bytes[1..5].try_into().expect("4 bytes")) as usize {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk()).await.expect("a chunk in time");
        bytes.extend_from_slice(&chunk.expect("chunk").expect("stream open"));
    }
    assert_eq!(bytes[0], 0, "a message frame");
    let len = u32::from_be_bytes(bytes[1..5].try_into().expect("4 bytes")) as usize;
    let event = ClusterEvent::decode(&bytes[5..5 + len]).expect("a ClusterEvent");
    assert_eq!(rv(&event), first_revision);
}

/// A watch ends with Unauthenticated within a second or so of its session being logged out.
async fn token_revocation_ends_the_watch(api: &Api) {
    let session = api.new_session().await;
    let mut events = watch(&session, WatchClustersRequest::default()).await.expect("watch");
    while !next_ok(&mut events).await.initial_events_end {}
    let logout = session.http.delete(session.url("/api/v1/session")).send().await.expect("logout");
    assert_eq!(logout.status(), 200);
    let started = std::time::Instant::now();
    loop {
        match next(&mut events).await {
            Ok(_) => continue,
            Err(status) => {
                assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
                break;
            }
        }
    }
    let took = started.elapsed();
    println!("a logged-out session's watch ended after {} ms", took.as_millis());
    assert!(took < Duration::from_millis(1500), "took {took:?}");

    // Over REST the stream's last line is the error, in grpc-gateway's shape.
    let session = api.new_session().await;
    let mut resp = session.http.get(session.url("/api/v1/stream/clusters")).send().await.expect("REST stream");
    assert_eq!(resp.status(), 200);
    let mut first = Vec::new();
    while !String::from_utf8_lossy(&first).contains("initialEventsEnd") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk()).await.expect("a chunk in time");
        first.extend_from_slice(&chunk.expect("chunk").expect("stream open"));
    }
    let logout = session.http.delete(session.url("/api/v1/session")).send().await.expect("logout");
    assert_eq!(logout.status(), 200);
    let mut rest = Vec::new();
    while let Some(chunk) =
        tokio::time::timeout(Duration::from_secs(10), resp.chunk()).await.expect("in time").expect("chunk")
    {
        rest.extend_from_slice(&chunk);
    }
    let last: serde_json::Value = serde_json::from_slice(&rest).expect("one JSON line");
    assert_eq!(last["error"]["grpc_code"], 16, "{last}");
    assert_eq!(last["error"]["http_code"], 401, "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_on_the_embedded_control_plane() {
    let cp = common::Embedded::start().await;
    watch_suite(&cp.api, "emb").await;
}

/// The NATS subscriber's door: CloudEvents in `CORRAL_EVENTS`, the same revisions as the watch,
/// and no credential anywhere in the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_on_nats_and_the_public_nats_stream() {
    watch_on_nats_and_the_public_nats_stream_on(common::Deployment::start(1, 2).await).await;
}

/// The same over TLS to three NATS nodes, each service as its own least-privilege user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_with_least_privilege_users_on_a_three_node_cluster() {
    watch_on_nats_and_the_public_nats_stream_on(common::Deployment::start_secured(1, 2, &[]).await).await;
}

async fn watch_on_nats_and_the_public_nats_stream_on(d: common::Deployment) {
    let api = d.api(0).await;
    watch_suite(&api, "nats").await;
    // Through the other gateway replica: the same revisions from its own hub.
    let other = d.api(1).await;
    let mut events = watch(&other, WatchClustersRequest { resource_version: "0".into(), ..Default::default() })
        .await
        .expect("watch from the start");
    let mut from_watch = Vec::new();
    while from_watch.len() < 6 {
        let e = next_ok(&mut events).await;
        if server_of(&e).contains("nats-") {
            from_watch.push((rv(&e), e.reason.clone()));
        }
    }

    let client = d.client().await;
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("CORRAL_EVENTS").await.expect("the public stream");
    let info = stream.cached_info().config.clone();
    assert_eq!(info.subjects, vec!["corral-events.v1.>".to_string()]);
    assert!(info.mirror.is_none() && info.sources.as_ref().is_none_or(Vec::is_empty));
    assert_eq!(info.max_age, Duration::from_secs(7 * 24 * 3600));
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: "corral-events.v1.clusters.>".into(),
            ..Default::default()
        })
        .await
        .expect("an ordered consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut from_nats = Vec::new();
    while from_nats.len() < 6 {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("a message in time")
            .expect("a message")
            .expect("readable");
        let h = m.headers.clone().expect("CloudEvents headers");
        let get = |k: &str| h.get(k).map(|v| v.to_string()).unwrap_or_else(|| panic!("no {k}"));
        assert_eq!(get("ce-specversion"), "1.0");
        assert_eq!(get("ce-source"), "/corral/clusters");
        assert_eq!(get("Nats-Msg-Id"), get("ce-id"));
        let reason = m.subject.as_str().rsplit('.').next().expect("a reason").to_string();
        assert_eq!(get("ce-type"), format!("io.corral.cluster.v1.{reason}"));
        assert!(m.subject.as_str().starts_with(&format!("corral-events.v1.clusters.{}.", get("ce-subject"))));
        let payload = String::from_utf8_lossy(&m.payload).to_string();
        assert!(!payload.contains(TOKEN) && !payload.contains(PASSWORD), "{payload}");
        for (_, values) in h.iter() {
            assert!(values.iter().all(|v| !v.as_str().contains(TOKEN)));
        }
        let cluster: serde_json::Value = serde_json::from_str(&payload).expect("JSON payload");
        if cluster["server"].as_str().is_some_and(|s| s.contains("nats-")) {
            from_nats.push((get("ce-sequence").parse::<u64>().expect("sequence"), reason));
        }
    }
    assert_eq!(from_nats, from_watch, "the NATS stream and the watch: the same changes and revisions");
    // The raw store of the public stream holds no credential either.
    let hits = common::files_containing(d.nats.store_dir(), TOKEN.as_bytes());
    assert!(hits.iter().all(|p| !p.contains("CORRAL_EVENTS")), "{hits:?}");
}

/// A revision older than what the stream keeps is refused with the oldest one a watch can resume
/// from, never answered from a later point; that oldest revision resumes. Other changes made
/// while the first cluster ages (its health probe's status, say) may expire with it, so the oldest
/// resumable revision is at or after the first cluster's and before the one created after it.
async fn retention_suite(api: &Api, tag: &str, max_age: Duration) {
    let first = create(api, labelled(&format!("https://{tag}-old.example"), &format!("{tag}-old"), "x")).await;
    tokio::time::sleep(max_age + Duration::from_millis(1500)).await;
    // Taken before the create, so that the cluster's age in the log is at least the time since.
    let kept_at = tokio::time::Instant::now();
    let kept = create(api, labelled(&format!("https://{tag}-new.example"), &format!("{tag}-new"), "x")).await;
    // On NATS the server removes expired messages on its own schedule: wait until it has.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let refused = loop {
        match watch(api, WatchClustersRequest { resource_version: (first - 1).to_string(), ..Default::default() }).await
        {
            Err(status) => break status,
            Ok(_) if tokio::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            Ok(_) => panic!("revision {} is still served after its retention", first - 1),
        }
    };
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    let oldest: u64 = refused
        .message()
        .rsplit("oldest one a watch can resume from is ")
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no oldest revision in {refused:?}"));
    // The oldest resumable revision comes before the cluster created after the wait while that
    // cluster's registration is kept. A log that removes the first cluster's events late
    // (nats-server expires on its own schedule, later on a loaded machine) may have aged the
    // second's registration out too by then: the oldest resumable revision is then that
    // registration's, the change every event still kept comes after (or the newest change, if
    // none is kept).
    let kept_aged_out = oldest == kept;
    assert!(
        (first..kept).contains(&oldest) || (kept_aged_out && kept_at.elapsed() >= max_age),
        "oldest {oldest}: not in [{first}, {kept}), nor {kept} once it aged out ({refused:?})"
    );
    let gone = api.http.get(api.url(&format!("/api/v1/stream/clusters?resourceVersion={}", first - 1))).send().await;
    let gone = gone.expect("REST stream");
    assert_eq!(gone.status(), 410);
    let body: serde_json::Value = gone.json().await.expect("an error body");
    assert_eq!(body["code"], 11, "{body}");
    if oldest > first {
        let also =
            watch(api, WatchClustersRequest { resource_version: (oldest - 1).to_string(), ..Default::default() });
        let also = also.await.map(|_| ()).expect_err("the revision before the oldest is refused too");
        assert_eq!(also.code(), Code::OutOfRange, "{also:?}");
    }
    let mut resumed = watch(api, WatchClustersRequest { resource_version: oldest.to_string(), ..Default::default() })
        .await
        .expect("resume from the oldest revision kept");
    if kept_aged_out {
        // The registration this suite waits for below is gone.
        return;
    }
    // Every change after `oldest`, in order, up to the cluster created after the wait.
    let mut last = oldest;
    loop {
        let e = next_ok(&mut resumed).await;
        assert!(rv(&e) > last, "revision {} after {last}", rv(&e));
        last = rv(&e);
        if e.reason == "registered" {
            assert_eq!(last, kept, "the first registration after {oldest}");
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_on_the_embedded_control_plane() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = common::Embedded::start_with_args(dir, None, &["--events-max-age", "2s"]).await;
    retention_suite(&cp.api, "emb", Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_on_nats() {
    let d = common::Deployment::start_with(1, 1, None, &[("CORRAL_EVENTS_MAX_AGE", "2s")]).await;
    let api = d.api(0).await;
    retention_suite(&api, "nats", Duration::from_secs(2)).await;
}

/// A quiet watch that asked for bookmarks gets one with the latest revision, even when nothing
/// it matches changed; one that did not ask gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_carry_the_latest_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = common::Embedded::start_with_args(dir, None, &["--events-bookmark-seconds", "1"]).await;
    let api = &cp.api;
    let req = |allow_bookmarks| WatchClustersRequest {
        selector: "env=nowhere".into(),
        allow_bookmarks,
        ..Default::default()
    };
    let mut with = watch(api, req(true)).await.expect("watch");
    let mut without = watch(api, req(false)).await.expect("watch");
    assert!(next_ok(&mut with).await.initial_events_end);
    assert!(next_ok(&mut without).await.initial_events_end);
    let elsewhere = create(api, labelled("https://bm.example", "bm", "somewhere")).await;
    let b = next_ok(&mut with).await;
    assert_eq!((b.r#type.as_str(), rv(&b), b.initial_events_end), ("BOOKMARK", elsewhere, false));
    assert!(b.cluster.is_none());
    assert!(tokio::time::timeout(Duration::from_millis(2500), without.message()).await.is_err(), "no bookmark asked");
}

const VIEWER_ACCOUNTS: &str = r#"
"accounts.viewer" = "login"
"policy.csv" = """
p, viewer, clusters, get, team-a/*, allow
"""
"#;

/// A watcher sees only the clusters it may get, checked on each event: a cluster moved out of
/// its reach leaves as DELETED, one moved into it arrives as ADDED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_sees_only_what_it_may_get() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = common::Embedded::start_with_accounts(dir, Some(VIEWER_ACCOUNTS)).await;
    let admin = &cp.api;
    let (_, admin_password) = admin.credentials.clone().expect("the admin's password");
    let set = admin
        .http
        .put(admin.url("/api/v1/account/password"))
        .json(&serde_json::json!({"name": "viewer", "currentPassword": admin_password, "newPassword": "viewer-pass-1"}))
        .send()
        .await
        .expect("set the viewer's password");
    assert_eq!(set.status(), 200);
    let viewer = admin.as_user("viewer", "viewer-pass-1").await;
    let in_project = |server: &str, project: &str| {
        let mut c = labelled(server, &server.replace("https://", "").replace('.', "-"), "x");
        c.project = project.into();
        c
    };
    create(admin, in_project("https://ra.example", "team-a")).await;
    create(admin, in_project("https://rb.example", "team-b")).await;
    let mut events = watch(&viewer, WatchClustersRequest::default()).await.expect("watch");
    let first = next_ok(&mut events).await;
    assert_eq!((first.r#type.as_str(), server_of(&first)), ("ADDED", "https://ra.example"));
    assert!(next_ok(&mut events).await.initial_events_end, "only team-a's cluster");

    let mut grpc = admin.grpc.clone();
    let move_to = |server: &'static str, project: &'static str| {
        let mut grpc = grpc.clone();
        async move {
            let mut c = grpc_cluster(server, "ignored");
            c.project = project.into();
            grpc.update(ClusterUpdateRequest {
                cluster: Some(c),
                updated_fields: vec!["project".into()],
                id: Some(ClusterId { r#type: "server".into(), value: server.into() }),
            })
            .await
            .expect("move");
        }
    };
    move_to("https://rb.example", "team-a").await;
    let arrived = next_ok(&mut events).await;
    assert_eq!((arrived.r#type.as_str(), server_of(&arrived)), ("ADDED", "https://rb.example"));
    move_to("https://ra.example", "team-b").await;
    let left = next_ok(&mut events).await;
    assert_eq!((left.r#type.as_str(), server_of(&left)), ("DELETED", "https://ra.example"));
    assert_eq!(left.cluster.map(|c| c.project).as_deref(), Some("team-a"), "its last state it could see");
    grpc.delete(ClusterQuery { server: "https://ra.example".into(), ..Default::default() }).await.expect("delete");
    quiet(&mut events).await;
}

const TOKEN_ACCOUNTS: &str = r#"
"accounts.ci" = "apiKey"
"accounts.ops" = "apiKey"
"policy.csv" = """
p, ci, clusters, get, *, allow
p, ops, clusters, get, *, allow
"""
"#;

async fn api_token(admin: &Api, account: &str, body: serde_json::Value) -> String {
    let resp = admin.http.post(admin.url(&format!("/api/v1/account/{account}/token"))).json(&body).send().await;
    let body: serde_json::Value = resp.expect("create token").json().await.expect("JSON");
    body["token"].as_str().unwrap_or_else(|| panic!("no token: {body}")).to_string()
}

/// A watch past its initial events, as `token`'s holder.
async fn watching_as(admin: &Api, token: &str) -> Events {
    let mut events = watch(&admin.with_token(Some(token)), WatchClustersRequest::default()).await.expect("watch");
    while !next_ok(&mut events).await.initial_events_end {}
    events
}

/// How long until the watch ends with Unauthenticated.
async fn until_unauthenticated(events: &mut Events) -> Duration {
    let started = std::time::Instant::now();
    loop {
        match next(events).await {
            Ok(_) => continue,
            Err(status) => {
                assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
                return started.elapsed();
            }
        }
    }
}

/// A revoked API token, an expired one and a disabled account each end the watch they opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_ends_when_its_token_no_longer_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = common::Embedded::start_with_accounts(dir, Some(TOKEN_ACCOUNTS)).await;
    let admin = &cp.api;

    let revoked = api_token(admin, "ci", serde_json::json!({"id": "watch-1"})).await;
    let mut events = watching_as(admin, &revoked).await;
    let resp = admin.http.delete(admin.url("/api/v1/account/ci/token/watch-1")).send().await.expect("revoke");
    assert_eq!(resp.status(), 200);
    let took = until_unauthenticated(&mut events).await;
    println!("a revoked token's watch ended after {} ms", took.as_millis());
    assert!(took < Duration::from_millis(1500), "revoked: {took:?}");

    let short = api_token(admin, "ci", serde_json::json!({"id": "watch-2", "expiresIn": 2})).await;
    let issued = std::time::Instant::now();
    let mut events = watching_as(admin, &short).await;
    until_unauthenticated(&mut events).await;
    let after_expiry = issued.elapsed().saturating_sub(Duration::from_secs(2));
    println!("an expired token's watch ended {} ms after expiry", after_expiry.as_millis());
    assert!(after_expiry < Duration::from_millis(1500), "expired: {after_expiry:?} after expiry");

    let ops = api_token(admin, "ops", serde_json::json!({"id": "watch-3"})).await;
    let mut events = watching_as(admin, &ops).await;
    let disabled = TOKEN_ACCOUNTS.replace(
        "\"accounts.ops\" = \"apiKey\"",
        "\"accounts.ops\" = \"apiKey\"\n\"accounts.ops.enabled\" = \"false\"",
    );
    std::fs::write(cp.dir.join("accounts.toml"), disabled).expect("disable the account");
    let took = until_unauthenticated(&mut events).await;
    // The accounts file is read again within a second of a change, then the next check ends it.
    println!("a disabled account's watch ended {} ms after the file changed", took.as_millis());
    assert!(took < Duration::from_millis(2500), "disabled: {took:?}");
}

/// A quiet Server-Sent Events stream carries a comment every 15 s, as Argo CD's does, so that
/// proxies do not close it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_sse_stream_gets_a_comment_every_15_seconds() {
    let cp = common::Embedded::start().await;
    let api = &cp.api;
    let mut resp = api
        .http
        .get(api.url("/api/v1/stream/clusters"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("SSE stream");
    let opened = std::time::Instant::now();
    let mut text = String::new();
    while !text.contains("\n:\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(20), resp.chunk()).await.expect("a chunk in time");
        text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk").expect("stream open")));
    }
    let took = opened.elapsed();
    assert!(text.contains("initialEventsEnd"), "{text}");
    assert!(took >= Duration::from_secs(14) && took < Duration::from_secs(17), "the first comment after {took:?}");
}

/// Invalidating a cluster's cache is a change a watch sees, with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_invalidation_is_a_change() {
    let cp = common::Embedded::start().await;
    let api = &cp.api;
    let server = "https://cache.example";
    let created = create(api, labelled(server, "cache", "x")).await;
    let mut events = watch(api, WatchClustersRequest { resource_version: created.to_string(), ..Default::default() })
        .await
        .expect("watch");
    let mut grpc = api.grpc.clone();
    let answer =
        grpc.invalidate_cache(ClusterQuery { server: server.into(), ..Default::default() }).await.expect("invalidate");
    let e = next_ok(&mut events).await;
    assert_eq!((e.r#type.as_str(), e.reason.as_str(), server_of(&e)), ("MODIFIED", "cache_invalidated", server));
    assert_eq!(rv(&e), revision(&answer));
    assert!(e.cluster.and_then(|c| c.refresh_requested_at).is_some());
}

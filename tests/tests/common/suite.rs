//! The cluster API's behaviour, checked through gRPC and REST exactly as an Argo CD client calls
//! it. Every deployment shape runs all of it.

use base64::Engine;
use corral_proto::cluster::{ClusterCreateRequest, ClusterId, ClusterQuery, ClusterUpdateRequest};
use corral_proto::v1alpha1::{Cluster, ClusterConfig, TlsClientConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tonic::Code;

use super::Api;

pub const TOKEN: &str = "s3cr3t-bearer-token-never-shown";
pub const PASSWORD: &str = "hunter2-password-never-shown";
const PEM: &str = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";

pub fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

pub fn escape(server: &str) -> String {
    url_escape(server)
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn cluster_json(server: &str, name: &str) -> Value {
    json!({
        "server": server,
        "name": name,
        "config": {
            "bearerToken": TOKEN,
            "password": PASSWORD,
            "username": "admin",
            "tlsClientConfig": {"insecure": false, "caData": b64(PEM), "serverName": "kube.internal"}
        },
        "namespaces": ["default", "apps"],
        "labels": {"env": "prod"},
        "annotations": {"owner": "team-a"},
        "project": "platform"
    })
}

pub fn grpc_cluster(server: &str, name: &str) -> Cluster {
    Cluster {
        server: server.into(),
        name: name.into(),
        config: Some(ClusterConfig {
            bearer_token: TOKEN.into(),
            tls_client_config: Some(TlsClientConfig { insecure: true, ..Default::default() }),
            ..Default::default()
        }),
        labels: [("env".to_string(), "dev".to_string())].into(),
        ..Default::default()
    }
}

async fn rest(api: &Api, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = api.http.request(method, api.url(path));
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.to_string());
    }
    let resp = req.send().await.expect("http request");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

pub async fn rest_get(api: &Api, path: &str) -> (StatusCode, Value) {
    rest(api, reqwest::Method::GET, path, None).await
}
pub async fn rest_post(api: &Api, path: &str, body: Value) -> (StatusCode, Value) {
    rest(api, reqwest::Method::POST, path, Some(body)).await
}
pub async fn rest_put(api: &Api, path: &str, body: Value) -> (StatusCode, Value) {
    rest(api, reqwest::Method::PUT, path, Some(body)).await
}
pub async fn rest_delete(api: &Api, path: &str) -> (StatusCode, Value) {
    rest(api, reqwest::Method::DELETE, path, None).await
}

fn assert_error(status: StatusCode, body: &Value, want_status: u16, want_code: Code, needle: &str) {
    assert_eq!(status.as_u16(), want_status, "status for {body}");
    assert_eq!(body["code"], json!(want_code as i32), "grpc code in {body}");
    let msg = body["message"].as_str().unwrap_or_default();
    assert_eq!(body["error"].as_str(), Some(msg), "error and message agree in {body}");
    assert!(msg.contains(needle), "message {msg:?} should mention {needle:?}");
}

fn assert_no_secrets(v: &Value) {
    let text = v.to_string();
    for s in [TOKEN, PASSWORD, &b64(PEM)] {
        assert!(!text.contains(s), "response leaks a credential: {text}");
    }
}

fn servers(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["server"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// Runs every check on a fresh deployment.
pub async fn run_all(api: &Api) {
    in_cluster_is_built_in(api).await;
    rest_create_get_update_delete(api).await;
    create_is_idempotent_and_needs_upsert(api).await;
    grpc_calls(api).await;
    updated_fields(api).await;
    invalid_input_is_rejected_and_changes_nothing(api).await;
    names_are_unique(api).await;
    released_names_can_be_taken_at_once(api).await;
    deleted_clusters_can_be_registered_again_at_once(api).await;
    oversized_bodies_are_refused(api).await;
    invalidate_cache_and_rotate_auth(api).await;
    health_service_and_grpc_web(api).await;
    argo_cd_clients_round_two(api).await;
    version_reflection_and_openapi(api).await;
}

pub async fn in_cluster_is_built_in(api: &Api) {
    let (s, list) = rest_get(api, "/api/v1/clusters").await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let item = list["items"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["server"] == "https://kubernetes.default.svc"))
        .cloned();
    let item = item.unwrap_or_else(|| panic!("in-cluster entry missing from {list}"));
    assert_eq!(item["name"], "in-cluster");

    let (s, body) = rest_delete(api, &format!("/api/v1/clusters/{}", escape("https://kubernetes.default.svc"))).await;
    assert_error(s, &body, 404, Code::NotFound, "built in");
    let mut grpc = api.grpc.clone();
    let q = ClusterQuery { server: "https://kubernetes.default.svc".into(), ..Default::default() };
    let err = grpc.delete(q.clone()).await.expect_err("in-cluster delete must fail");
    assert_eq!(err.code(), Code::NotFound);
    assert!(grpc.get(q).await.is_ok(), "in-cluster still there");

    // It can be updated, e.g. its labels and namespaces.
    let (s, c) = rest_put(
        api,
        "/api/v1/clusters/in-cluster?id.type=name&updatedFields=labels&updatedFields=namespaces",
        json!({"labels": {"role": "home"}, "namespaces": ["argocd"]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["labels"], json!({"role": "home"}));
    assert_eq!(c["namespaces"], json!(["argocd"]));
    assert_eq!(c["server"], "https://kubernetes.default.svc");
}

pub async fn rest_create_get_update_delete(api: &Api) {
    let server = "https://rest-1.example.com:6443";
    let (s, created) = rest_post(api, "/api/v1/clusters", cluster_json(server, "rest-1")).await;
    assert_eq!(s, StatusCode::OK, "{created}");
    assert_no_secrets(&created);
    assert_eq!(created["server"], server);
    assert_eq!(created["labels"]["env"], "prod");
    assert_eq!(created["config"]["tlsClientConfig"]["serverName"], "kube.internal");
    assert_eq!(created["connectionState"]["status"], "Unknown");

    // Read own write at once, by server (escaped) and by name.
    let path = format!("/api/v1/clusters/{}", escape(server));
    let (s, got) = rest_get(api, &path).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(got["name"], "rest-1");
    assert_no_secrets(&got);
    let (s, by_name) = rest_get(api, "/api/v1/clusters/rest-1?id.type=name").await;
    assert_eq!(s, StatusCode::OK, "{by_name}");
    assert_eq!(by_name["server"], server);
    let (s, listed) = rest_get(api, &format!("/api/v1/clusters?server={}", escape(server))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(servers(&listed), vec![server.to_string()]);
    let (_, listed) = rest_get(api, "/api/v1/clusters?selector=env%3Dprod").await;
    assert!(servers(&listed).contains(&server.to_string()), "{listed}");
    assert_no_secrets(&listed);

    // Unknown clusters are 404 (no authorisation yet, so nothing to hide).
    let (s, body) = rest_get(api, &format!("/api/v1/clusters/{}", escape("https://nope.example.com"))).await;
    assert_error(s, &body, 404, Code::NotFound, "not found");
    let (s, body) = rest_get(api, "/api/v1/clusters/nope?id.type=name").await;
    assert_error(s, &body, 404, Code::NotFound, "not found");

    // PUT with the wrapped body form that Argo CD's docs show.
    let (s, updated) = rest_put(
        api,
        &path,
        json!({"cluster": {"server": server, "name": "rest-1", "labels": {"env": "staging"}}, "updatedFields": ["labels"]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{updated}");
    assert_eq!(updated["labels"], json!({"env": "staging"}));
    assert_eq!(updated["namespaces"], json!(["default", "apps"]), "untouched fields stay");

    let (s, body) = rest_delete(api, &path).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, body) = rest_get(api, &path).await;
    assert_error(s, &body, 404, Code::NotFound, "not found");
    let (s, body) = rest_delete(api, &path).await;
    assert_error(s, &body, 404, Code::NotFound, "not found");
}

pub async fn create_is_idempotent_and_needs_upsert(api: &Api) {
    let server = "https://idem.example.com";
    let (s, first) = rest_post(api, "/api/v1/clusters", cluster_json(server, "idem")).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    let (s, again) = rest_post(api, "/api/v1/clusters", cluster_json(server, "idem")).await;
    assert_eq!(s, StatusCode::OK, "identical create succeeds: {again}");
    assert_eq!(again, first);

    let mut different = cluster_json(server, "idem");
    different["labels"] = json!({"env": "other"});
    let (s, body) = rest_post(api, "/api/v1/clusters", different.clone()).await;
    assert_error(s, &body, 400, Code::InvalidArgument, "upsert");
    let (_, unchanged) = rest_get(api, &format!("/api/v1/clusters/{}", escape(server))).await;
    assert_eq!(unchanged["labels"]["env"], "prod", "rejected create changes nothing");

    let (s, upserted) = rest_post(api, "/api/v1/clusters?upsert=true", different).await;
    assert_eq!(s, StatusCode::OK, "{upserted}");
    assert_eq!(upserted["labels"]["env"], "other");
}

pub async fn grpc_calls(api: &Api) {
    let mut g = api.grpc.clone();
    let server = "https://grpc-1.example.com";
    let created = g
        .create(ClusterCreateRequest { cluster: Some(grpc_cluster(server, "grpc-1")), upsert: false })
        .await
        .expect("create")
        .into_inner();
    assert_eq!(created.server, server);
    let cfg = created.config.clone().unwrap_or_default();
    assert!(cfg.bearer_token.is_empty(), "bearer token redacted");
    assert!(cfg.tls_client_config.unwrap_or_default().insecure);

    let by_server =
        ClusterQuery { id: Some(ClusterId { r#type: "server".into(), value: server.into() }), ..Default::default() };
    let by_name =
        ClusterQuery { id: Some(ClusterId { r#type: "name".into(), value: "grpc-1".into() }), ..Default::default() };
    assert_eq!(g.get(by_server.clone()).await.expect("get").into_inner().name, "grpc-1");
    assert_eq!(g.get(by_name.clone()).await.expect("get by name").into_inner().server, server);
    let list = g.list(ClusterQuery::default()).await.expect("list").into_inner();
    assert!(list.items.iter().any(|c| c.server == server));
    // The same items as REST, in the same order, and the same filters.
    let (_, rest) = rest_get(api, "/api/v1/clusters").await;
    let rest_servers: Vec<&str> =
        rest["items"].as_array().expect("items").iter().filter_map(|c| c["server"].as_str()).collect();
    let grpc_servers: Vec<&str> = list.items.iter().map(|c| c.server.as_str()).collect();
    assert_eq!(grpc_servers, rest_servers);
    let only = |q: ClusterQuery| {
        let mut g = g.clone();
        async move { g.list(q).await.expect("filtered list").into_inner().items }
    };
    let listed_by_server = only(ClusterQuery { server: server.into(), ..Default::default() }).await;
    assert_eq!(listed_by_server.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), vec!["grpc-1"]);
    let listed_by_name = only(ClusterQuery { name: "grpc-1".into(), ..Default::default() }).await;
    assert_eq!(listed_by_name.iter().map(|c| c.server.as_str()).collect::<Vec<_>>(), vec![server]);
    let none = only(ClusterQuery { selector: "no-such-label=x".into(), ..Default::default() }).await;
    assert!(none.is_empty());
    let bad = g.list(ClusterQuery { selector: "env in (a".into(), ..Default::default() }).await;
    assert_eq!(bad.expect_err("a malformed selector").code(), Code::InvalidArgument);

    let mut patch = grpc_cluster(server, "grpc-1-renamed");
    patch.labels = [("env".to_string(), "qa".to_string())].into();
    let updated = g
        .update(ClusterUpdateRequest {
            cluster: Some(patch),
            updated_fields: vec!["name".into()],
            id: Some(ClusterId { r#type: "server".into(), value: server.into() }),
        })
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.name, "grpc-1-renamed");
    assert_eq!(updated.labels.get("env").map(String::as_str), Some("dev"), "labels not in updatedFields stay");
    assert_eq!(g.get(by_name).await.expect_err("old name gone").code(), Code::NotFound);

    g.delete(by_server.clone()).await.expect("delete");
    assert_eq!(g.get(by_server).await.expect_err("deleted").code(), Code::NotFound);
    // The freed name can be taken by another cluster.
    g.create(ClusterCreateRequest {
        cluster: Some(grpc_cluster("https://grpc-2.example.com", "grpc-1-renamed")),
        upsert: false,
    })
    .await
    .expect("name reuse after delete");
}

pub async fn updated_fields(api: &Api) {
    let server = "https://fields.example.com";
    let path = format!("/api/v1/clusters/{}", escape(server));
    let (s, _) = rest_post(api, "/api/v1/clusters", cluster_json(server, "fields")).await;
    assert_eq!(s, StatusCode::OK);

    // Only the listed fields change; the body is the cluster itself, fields in the query.
    let (s, c) = rest_put(
        api,
        &format!("{path}?updatedFields=namespaces&updatedFields=project"),
        json!({"server": server, "name": "ignored-name", "namespaces": ["x"], "project": "p2", "labels": {"ignored": "yes"}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["namespaces"], json!(["x"]));
    assert_eq!(c["project"], "p2");
    assert_eq!(c["name"], "fields");
    assert_eq!(c["labels"], json!({"env": "prod"}));

    let (s, body) = rest_put(api, &format!("{path}?updatedFields=bogus"), json!({"server": server})).await;
    assert_error(s, &body, 400, Code::InvalidArgument, "bogus");

    // Without updatedFields the whole spec is replaced (server kept).
    let (s, c) = rest_put(api, &path, json!({"server": server, "name": "fields-2"})).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["name"], "fields-2");
    assert!(c.get("labels").is_none_or(|l| l.as_object().is_none_or(|o| o.is_empty())), "{c}");
    assert!(c.get("namespaces").is_none_or(|n| n.as_array().is_none_or(|a| a.is_empty())), "{c}");
}

pub async fn invalid_input_is_rejected_and_changes_nothing(api: &Api) {
    let (_, before) = rest_get(api, "/api/v1/clusters").await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"server": "not a url", "name": "bad-1"}), "server"),
        (json!({"server": "ftp://x.example.com", "name": "bad-2"}), "server"),
        (json!({"server": "https://bad-3.example.com", "name": ""}), "name"),
        (
            json!({"server": "https://bad-4.example.com", "name": "bad-4", "config": {"tlsClientConfig": {"caData": "%%%not-base64"}}}),
            "caData",
        ),
        (
            json!({"server": "https://bad-5.example.com", "name": "bad-5", "config": {"tlsClientConfig": {"caData": b64("not pem at all")}}}),
            "caData",
        ),
        (json!({"server": "https://bad-6.example.com", "name": "bad-6", "labels": {"bad key!": "v"}}), "labels"),
        (
            json!({"server": "https://bad-7.example.com", "name": "bad-7", "labels": {"k": "bad value with spaces"}}),
            "labels",
        ),
        (json!({"server": "https://bad-8.example.com", "name": "bad-8", "shard": "one"}), "shard"),
    ];
    for (body, field) in cases {
        let (s, err) = rest_post(api, "/api/v1/clusters", body.clone()).await;
        assert_error(s, &err, 400, Code::InvalidArgument, field);
    }
    // Malformed JSON, unknown keys ignored.
    let resp = api
        .http
        .post(api.url("/api/v1/clusters"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let (s, ok) = rest_post(
        api,
        "/api/v1/clusters",
        json!({"server": "https://unknown-keys.example.com", "name": "uk", "someFutureField": 1}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{ok}");
    rest_delete(api, &format!("/api/v1/clusters/{}", escape("https://unknown-keys.example.com"))).await;

    let mut g = api.grpc.clone();
    let err = g
        .create(ClusterCreateRequest { cluster: Some(grpc_cluster("not-a-url", "g-bad")), upsert: false })
        .await
        .expect_err("invalid server");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("server"), "{}", err.message());

    let (_, after) = rest_get(api, "/api/v1/clusters").await;
    assert_eq!(servers(&before), servers(&after), "rejected requests change nothing");
}

pub async fn names_are_unique(api: &Api) {
    let (s, _) = rest_post(api, "/api/v1/clusters", cluster_json("https://unique-a.example.com", "shared-name")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, body) =
        rest_post(api, "/api/v1/clusters", cluster_json("https://unique-b.example.com", "shared-name")).await;
    assert_error(s, &body, 409, Code::AlreadyExists, "shared-name");
    let (s, _) = rest_get(api, &format!("/api/v1/clusters/{}", escape("https://unique-b.example.com"))).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "nothing stored for the refused create");
}

/// A name released by a rename can be taken by the very next request.
pub async fn released_names_can_be_taken_at_once(api: &Api) {
    for i in 0..20 {
        let (holder, newcomer, name) = (
            format!("https://holder-{i}.example.com"),
            format!("https://newcomer-{i}.example.com"),
            format!("relay-{i}"),
        );
        let (s, body) = rest_post(api, "/api/v1/clusters", cluster_json(&holder, &name)).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let path = format!("/api/v1/clusters/{}?updatedFields=name", escape(&holder));
        let (s, body) = rest_put(api, &path, json!({"server": holder, "name": format!("{name}-old")})).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let (s, body) = rest_post(api, "/api/v1/clusters", cluster_json(&newcomer, &name)).await;
        assert_eq!(s, StatusCode::OK, "round {i}: the name released just before is refused: {body}");
        let (_, got) = rest_get(api, &format!("/api/v1/clusters/{name}?id.type=name")).await;
        assert_eq!(got["server"], newcomer.as_str());
    }
}

/// A cluster deleted and registered again at once is there afterwards, every time.
pub async fn deleted_clusters_can_be_registered_again_at_once(api: &Api) {
    let server = "https://again.example.com";
    let path = format!("/api/v1/clusters/{}", escape(server));
    for i in 0..20 {
        let (s, body) = rest_post(api, "/api/v1/clusters", cluster_json(server, "again")).await;
        assert_eq!(s, StatusCode::OK, "round {i}: {body}");
        let (s, body) = rest_delete(api, &path).await;
        assert_eq!(s, StatusCode::OK, "round {i}: {body}");
    }
    let (s, body) = rest_post(api, "/api/v1/clusters", cluster_json(server, "again")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, body) = rest_get(api, &path).await;
    assert_eq!(s, StatusCode::OK, "the last registration was lost: {body}");
}

pub async fn oversized_bodies_are_refused(api: &Api) {
    // The test deployments use a 64 KiB limit.
    let big = "x".repeat(80 * 1024);
    let (s, body) = rest_post(
        api,
        "/api/v1/clusters",
        json!({"server": "https://big.example.com", "name": "big", "annotations": {"blob": big}}),
    )
    .await;
    assert_eq!(s.as_u16(), 413, "{body}");
    assert_eq!(body["code"], json!(Code::ResourceExhausted as i32));
    let mut c = grpc_cluster("https://big.example.com", "big");
    c.annotations.insert("blob".into(), big);
    let err =
        api.grpc.clone().create(ClusterCreateRequest { cluster: Some(c), upsert: false }).await.expect_err("too big");
    assert_eq!(err.code(), Code::ResourceExhausted);
    let (s, _) = rest_get(api, &format!("/api/v1/clusters/{}", escape("https://big.example.com"))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

pub async fn invalidate_cache_and_rotate_auth(api: &Api) {
    let server = "https://cache.example.com";
    let (s, c) = rest_post(api, "/api/v1/clusters", cluster_json(server, "cache")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(c.get("refreshRequestedAt").is_none(), "{c}");
    let (s, c) = rest_post(api, &format!("/api/v1/clusters/{}/invalidate-cache", escape(server)), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    let at = c["refreshRequestedAt"].as_str().unwrap_or_default().to_string();
    assert!(at.ends_with('Z') && at.len() == 20, "RFC 3339 to the second: {at:?}");
    let (_, got) = rest_get(api, "/api/v1/clusters/cache?id.type=name").await;
    assert_eq!(got["refreshRequestedAt"], json!(at));
    let mut g = api.grpc.clone();
    let q = ClusterQuery { server: server.into(), ..Default::default() };
    let c = g.invalidate_cache(q.clone()).await.expect("invalidate").into_inner();
    assert!(c.refresh_requested_at.is_some());

    // Rotation needs a bearer token to rotate; the refusal comes before any call to the cluster
    // (so these made-up hosts are never contacted). Rotations themselves: tests/rotation_nats.rs.
    let bare = "https://rotate.example.com";
    let (s, _) = rest_post(api, "/api/v1/clusters", json!({"server": bare, "name": "rotate"})).await;
    assert_eq!(s, StatusCode::OK);
    let (s, body) = rest_post(api, &format!("/api/v1/clusters/{}/rotate-auth", escape(bare)), json!({})).await;
    assert_error(s, &body, 400, Code::FailedPrecondition, "no bearer token");
    let q = ClusterQuery { server: bare.into(), ..Default::default() };
    assert_eq!(g.rotate_auth(q).await.expect_err("nothing to rotate").code(), Code::FailedPrecondition);
    let (s, body) =
        rest_post(api, &format!("/api/v1/clusters/{}/rotate-auth", escape("https://nowhere.example.com")), json!({}))
            .await;
    assert_error(s, &body, 404, Code::NotFound, "not found");
}

/// One gRPC-web frame: flag byte, big-endian length, payload.
fn grpc_web_frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Calls `path` as a gRPC-web client does (HTTP/1.1, framed body, trailers in the body); returns
/// the message frames and the trailer text.
async fn grpc_web_call(http: &reqwest::Client, url: String, request: &impl prost::Message) -> (Vec<Vec<u8>>, String) {
    let resp = http
        .post(url)
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(grpc_web_frame(0, &request.encode_to_vec()))
        .send()
        .await
        .expect("grpc-web request");
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert!(content_type.starts_with("application/grpc-web"), "{content_type}");
    // A call refused before any message may answer with its status in the headers alone.
    let header_status = resp.headers().get("grpc-status").and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut body = resp.bytes().await.expect("grpc-web body").to_vec();
    let (mut messages, mut trailers) =
        (Vec::new(), header_status.map(|s| format!("grpc-status:{s}")).unwrap_or_default());
    while body.len() >= 5 {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let frame: Vec<u8> = body.drain(..5 + len).collect();
        if frame[0] & 0x80 != 0 {
            trailers.push_str(&String::from_utf8_lossy(&frame[5..]));
        } else {
            messages.push(frame[5..].to_vec());
        }
    }
    (messages, trailers.to_lowercase())
}

pub async fn health_service_and_grpc_web(api: &Api) {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    // The standard health service answers anyone, as load balancers call it without a token.
    let mut health = HealthClient::new(api.channel.clone());
    for service in ["", "cluster.ClusterService", "account.AccountService", "session.SessionService"] {
        let status = health
            .check(HealthCheckRequest { service: service.into() })
            .await
            .unwrap_or_else(|e| panic!("health of {service:?}: {e}"))
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health.check(HealthCheckRequest { service: "no.such.Service".into() }).await;
    assert_eq!(unknown.expect_err("unknown service").code(), Code::NotFound);

    // gRPC-web on the same port: a Get answers the cluster and an OK status in the trailers.
    let query = ClusterQuery { server: "https://kubernetes.default.svc".into(), ..Default::default() };
    let (messages, trailers) = grpc_web_call(&api.http, api.url("/cluster.ClusterService/Get"), &query).await;
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    assert_eq!(messages.len(), 1);
    let cluster = <Cluster as prost::Message>::decode(messages[0].as_slice()).expect("a Cluster");
    assert_eq!(cluster.name, "in-cluster");
    // An unknown cluster: NotFound (5), as over gRPC.
    let missing = ClusterQuery { server: "https://missing.grpc-web.example.com".into(), ..Default::default() };
    let (messages, trailers) = grpc_web_call(&api.http, api.url("/cluster.ClusterService/Get"), &missing).await;
    assert!(messages.is_empty() && trailers.contains("grpc-status:5"), "{trailers}");
    // Without a token, where one is needed: Unauthenticated (16), in gRPC-web's own framing.
    if api.token.is_some() {
        let (messages, trailers) =
            grpc_web_call(&reqwest::Client::new(), api.url("/cluster.ClusterService/Get"), &query).await;
        assert!(messages.is_empty() && trailers.contains("grpc-status:16"), "{trailers}");
    }
}

/// What clients written for Argo CD send, and hostile requests, answered as Argo CD answers them.
pub async fn argo_cd_clients_round_two(api: &Api) {
    // Booleans in the query string are read as Go's strconv.ParseBool reads them: Argo CD's
    // generated Python client sends `upsert=True`.
    let server = "https://bools.example.com";
    let (s, body) = rest_post(api, "/api/v1/clusters", cluster_json(server, "bools")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    for (i, yes) in ["1", "t", "T", "TRUE", "true", "True"].into_iter().enumerate() {
        let mut c = cluster_json(server, "bools");
        c["labels"] = json!({"round": format!("yes-{i}")});
        let (s, body) = rest_post(api, &format!("/api/v1/clusters?upsert={yes}"), c).await;
        assert_eq!(s, StatusCode::OK, "upsert={yes}: {body}");
        assert_eq!(body["labels"]["round"], format!("yes-{i}"), "upsert={yes}");
    }
    for no in ["0", "f", "F", "FALSE", "false", "False"] {
        let mut c = cluster_json(server, "bools");
        c["labels"] = json!({"round": "refused"});
        let (s, body) = rest_post(api, &format!("/api/v1/clusters?upsert={no}"), c).await;
        assert_error(s, &body, 400, Code::InvalidArgument, "upsert");
    }
    for bad in ["yes", "tRUE", "2", "on"] {
        let (s, body) = rest_post(api, &format!("/api/v1/clusters?upsert={bad}"), cluster_json(server, "bools")).await;
        assert_error(s, &body, 400, Code::InvalidArgument, "upsert");
    }
    let (_, got) = rest_get(api, &format!("/api/v1/clusters/{}", escape(server))).await;
    assert_eq!(got["labels"]["round"], "yes-5", "refused upserts changed nothing: {got}");

    // `name_escaped` decodes as Go's url.QueryUnescape: `+` is a space.
    let (s, body) = rest_post(api, "/api/v1/clusters", cluster_json("https://escaped.example.com", "a b")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, got) = rest_get(api, "/api/v1/clusters/a%2Bb?id.type=name_escaped").await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(got["server"], "https://escaped.example.com");
    let (s, got) = rest_get(api, "/api/v1/clusters/a%2520b?id.type=name_escaped").await;
    assert_eq!(s, StatusCode::OK, "%20 is a space too: {got}");
    let (s, listed) = rest_get(api, "/api/v1/clusters?id.type=name_escaped&id.value=a%2Bb").await;
    assert_eq!(s, StatusCode::OK, "{listed}");
    assert_eq!(servers(&listed), vec!["https://escaped.example.com".to_string()]);
    let (s, body) = rest_get(api, "/api/v1/clusters/a%25zz?id.type=name_escaped").await;
    assert_error(s, &body, 400, Code::InvalidArgument, "escaped");

    // Server URLs a URL parser would rewrite, over-long ones and ones holding credentials are
    // refused, naming the field, and store nothing.
    let (_, before) = rest_get(api, "/api/v1/clusters").await;
    let long = format!("https://long.example.com/{}", "p".repeat(3000));
    for bad in [
        " https://ws-lead.example.com",
        "https://ws-trail.example.com ",
        "https://a\tb.example.com",
        "https://crlf.example.com\r\n",
        "https:\\\\backslash.example.com",
        "https://back\\slash.example.com",
        long.as_str(),
    ] {
        let (s, body) = rest_post(api, "/api/v1/clusters", json!({"server": bad, "name": "bad-server"})).await;
        assert_error(s, &body, 400, Code::InvalidArgument, "server");
    }
    let secret = "pa55-in-the-url";
    let with_user = format!("https://ops:{secret}@userinfo.example.com:6443");
    let (s, body) = rest_post(api, "/api/v1/clusters", json!({"server": with_user, "name": "userinfo"})).await;
    assert_error(s, &body, 400, Code::InvalidArgument, "config.username");
    assert!(!body.to_string().contains(secret), "the refusal repeats the password: {body}");
    let err = api
        .grpc
        .clone()
        .create(ClusterCreateRequest { cluster: Some(grpc_cluster(&with_user, "userinfo")), upsert: false })
        .await
        .expect_err("user info over gRPC");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(!err.message().contains(secret), "{}", err.message());
    let (_, after) = rest_get(api, "/api/v1/clusters").await;
    assert_eq!(servers(&before), servers(&after), "refused servers stored nothing");
    assert!(!after.to_string().contains(secret));

    // Errors the router answers by itself carry the same JSON body as every other error.
    let resp = api.http.patch(api.url("/api/v1/clusters")).send().await.expect("patch");
    assert_eq!(resp.status().as_u16(), 405);
    let allow = resp.headers().get("allow").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert!(allow.contains("GET") && allow.contains("POST"), "Allow: {allow:?}");
    let body: Value = resp.json().await.expect("a JSON body on 405");
    assert_error(StatusCode::METHOD_NOT_ALLOWED, &body, 405, Code::Unimplemented, "");
    let (s, body) = rest_get(api, "/api/v1/no-such-route").await;
    assert_error(s, &body, 404, Code::NotFound, "");
    let (s, body) = rest_get(api, "/api/v1/clusters/%FF%FE").await;
    assert_eq!(s.as_u16(), 400, "{body}");
    assert_eq!(body["code"], json!(Code::InvalidArgument as i32), "{body}");
}

/// `argocd version`'s call, gRPC reflection, and the OpenAPI document naming only served routes.
pub async fn version_reflection_and_openapi(api: &Api) {
    use corral_proto::version::version_service_client::VersionServiceClient;

    // Anyone learns the version; a caller with a valid token the build's details too (an invalid
    // token is ignored, as Argo CD does).
    let (s, anonymous) = rest(&api.anonymous(), reqwest::Method::GET, "/api/version", None).await;
    assert_eq!(s, StatusCode::OK, "{anonymous}");
    let version = anonymous["Version"].as_str().unwrap_or_default().to_string();
    assert!(version.starts_with(&format!("v{}", env!("CARGO_PKG_VERSION"))), "{anonymous}");
    assert_eq!(anonymous.as_object().map(|o| o.len()), Some(1), "only the version without a token: {anonymous}");
    let (s, bad) = rest(&api.with_token(Some("not-a-token")), reqwest::Method::GET, "/api/version", None).await;
    assert_eq!((s, &bad), (StatusCode::OK, &anonymous));
    let (s, full) = rest_get(api, "/api/version").await;
    assert_eq!(s, StatusCode::OK, "{full}");
    assert_eq!(full["Version"], json!(version));
    assert!(full["Compiler"].as_str().is_some_and(|c| c.starts_with("rustc ")), "{full}");
    assert!(full["Platform"].as_str().is_some_and(|p| p.starts_with("linux/")), "{full}");
    assert!(full["GitCommit"].as_str().is_some_and(|c| c.len() == 40), "built from a git checkout: {full}");
    assert!(full.get("GoVersion").is_none(), "{full}");
    let grpc_full = VersionServiceClient::with_interceptor(api.channel.clone(), api.interceptor())
        .version(())
        .await
        .expect("version over gRPC")
        .into_inner();
    assert_eq!(
        (grpc_full.version.as_str(), grpc_full.git_commit.as_str()),
        (version.as_str(), full["GitCommit"].as_str().unwrap_or_default())
    );
    let grpc_anonymous =
        VersionServiceClient::new(api.channel.clone()).version(()).await.expect("anonymous").into_inner();
    assert_eq!(grpc_anonymous.version, version);
    assert!(grpc_anonymous.git_commit.is_empty() && grpc_anonymous.compiler.is_empty());

    reflection_lists_and_calls_every_public_service(api).await;

    // Every documented operation reaches a handler: none is answered by the router as an unknown
    // route or a method it does not serve. A session of its own, as one operation logs out.
    let (s, doc) = rest(&api.anonymous(), reqwest::Method::GET, "/swagger.json", None).await;
    assert_eq!(s, StatusCode::OK, "{doc}");
    let session = api.new_session().await;
    let mut operations = 0;
    for (path, methods) in doc["paths"].as_object().expect("paths") {
        let concrete: String =
            path.split('/').map(|seg| if seg.starts_with('{') { "x" } else { seg }).collect::<Vec<_>>().join("/");
        for method in methods.as_object().expect("methods").keys() {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let body = matches!(m, reqwest::Method::POST | reqwest::Method::PUT).then(|| json!({}));
            let (s, answer) = rest(&session, m.clone(), &concrete, body).await;
            let routed = s != StatusCode::METHOD_NOT_ALLOWED
                && !(s == StatusCode::NOT_FOUND && answer["message"] == "no such route");
            assert!(routed, "{method} {path} is documented but not served: {s} {answer}");
            operations += 1;
        }
    }
    assert!(operations >= 17, "{operations} operations documented");
}

/// Lists the services through gRPC reflection, fetches their descriptors, and calls List knowing
/// nothing but what reflection answered.
async fn reflection_lists_and_calls_every_public_service(api: &Api) {
    use prost::Message as _;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

    let mut client = ServerReflectionClient::new(api.channel.clone());
    // One request at a time on one stream, as reflection clients talk.
    let (tx, rx) = tokio::sync::mpsc::channel::<ServerReflectionRequest>(1);
    let mut answers =
        client.server_reflection_info(tokio_stream_from(rx)).await.expect("reflection (needs no token)").into_inner();
    let mut ask = async |m: MessageRequest| -> Option<MessageResponse> {
        tx.send(ServerReflectionRequest { host: String::new(), message_request: Some(m) }).await.expect("send");
        let answer: ServerReflectionResponse = answers.message().await.expect("answer").expect("an answer");
        answer.message_response
    };
    let Some(MessageResponse::ListServicesResponse(list)) = ask(MessageRequest::ListServices(String::new())).await
    else {
        panic!("no service list")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "cluster.ClusterService",
        "account.AccountService",
        "session.SessionService",
        "version.VersionService",
        "corral.watch.v1.ClusterWatch",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not listed: {names:?}");
    }
    // The stream of changes is public; the services' own interfaces are not.
    let internal = |n: &&String| n.starts_with("corral.") && !n.starts_with("corral.watch.");
    assert!(!names.iter().any(|n| internal(&n)), "internal services listed: {names:?}");
    // The file defining the service, then each file it imports that has not come yet, by name.
    let mut protos: Vec<prost_types::FileDescriptorProto> = Vec::new();
    let mut request = MessageRequest::FileContainingSymbol("cluster.ClusterService".into());
    loop {
        let Some(MessageResponse::FileDescriptorResponse(files)) = ask(request).await else { panic!("no descriptor") };
        for b in &files.file_descriptor_proto {
            let file = prost_types::FileDescriptorProto::decode(b.as_slice()).expect("descriptor");
            if !protos.iter().any(|p| p.name == file.name) {
                protos.push(file);
            }
        }
        let missing =
            protos.iter().flat_map(|p| &p.dependency).find(|d| !protos.iter().any(|p| p.name() == d.as_str()));
        match missing {
            Some(name) => request = MessageRequest::FileByFilename(name.clone()),
            None => break,
        }
    }
    drop(tx);
    let pool = prost_reflect::DescriptorPool::from_file_descriptor_set(prost_types::FileDescriptorSet { file: protos })
        .expect("a self-contained descriptor set");
    let service = pool.get_service_by_name("cluster.ClusterService").expect("ClusterService");
    let list = service.methods().find(|m| m.name() == "List").expect("List");
    let request = prost_reflect::DynamicMessage::new(list.input());
    let mut grpc = tonic::client::Grpc::new(tonic::service::interceptor::InterceptedService::new(
        api.channel.clone(),
        api.interceptor(),
    ));
    grpc.ready().await.expect("ready");
    let path =
        http::uri::PathAndQuery::from_maybe_shared(format!("/{}/{}", service.full_name(), list.name())).expect("path");
    let answer: bytes::Bytes = grpc
        .unary(tonic::Request::new(request.encode_to_vec().into()), path, RawCodec)
        .await
        .expect("List called from reflection alone")
        .into_inner();
    let reply = prost_reflect::DynamicMessage::decode(list.output(), answer).expect("a ClusterList");
    let items = reply.get_field_by_name("items").expect("items");
    let names: Vec<String> = items
        .as_list()
        .expect("a list")
        .iter()
        .filter_map(|c| c.as_message()?.get_field_by_name("name")?.as_str().map(str::to_string))
        .collect();
    assert!(names.iter().any(|n| n == "in-cluster"), "{names:?}");
}

/// A gRPC codec for messages already encoded: reflection clients know no generated types.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = bytes::Bytes;
    type Decode = bytes::Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: bytes::Bytes, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put(dst, item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<bytes::Bytes>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n)))
    }
}

fn tokio_stream_from<T: Send + 'static>(mut rx: tokio::sync::mpsc::Receiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

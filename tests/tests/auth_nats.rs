//! Accounts, sessions, API tokens and RBAC through the public API of two gateway replicas on a
//! real nats-server: every call authenticated, tokens revocable everywhere at once, roles
//! enforced against the stored cluster, no existence leak, login rate limits shared by replicas,
//! and no token or password hash anywhere in clear.

mod common;

use common::DeploymentApi as _;

use common::suite::escape as enc;

use std::time::Duration;

use base64::Engine;
use common::{ADMIN_PASSWORD, Api, Deployment, files_containing};
use corral_proto::account::account_service_client::AccountServiceClient;
use corral_proto::account::{CanIRequest, CreateTokenRequest};
use corral_proto::cluster::{ClusterCreateRequest, ClusterQuery};
use corral_proto::session::session_service_client::SessionServiceClient;
use corral_proto::session::{GetUserInfoRequest, SessionCreateRequest};
use serde_json::{Value, json};

const ACCOUNTS: &str = r#"
"accounts.alice" = "login"
"accounts.ci-reader" = "apiKey"
"accounts.ci-deployer" = "apiKey"
"accounts.locked" = "login"
"accounts.locked.enabled" = "false"
"login.maxFailures" = "3"
"policy.csv" = """
p, role:reader, clusters, get, *, allow
g, ci-reader, role:reader
g, ci-deployer, role:admin
p, alice, clusters, get, https://a.example.com, allow
p, alice, clusters, update, https://a.example.com, allow
p, alice, clusters, get, https://b.example.com, allow
"""
"#;

const ALICE_PASSWORD: &str = "alice-password-1";
const A: &str = "https://a.example.com";
const B: &str = "https://b.example.com";
const C: &str = "https://c.example.com";

async fn call(api: &Api, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, String) {
    let mut req = api.http.request(method, api.url(path));
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.to_string());
    }
    let resp = req.send().await.expect("send");
    (resp.status().as_u16(), resp.text().await.expect("body"))
}

async fn get(api: &Api, path: &str) -> (u16, String) {
    call(api, reqwest::Method::GET, path, None).await
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Polls `check` until it holds, for at most `limit`; how long it took.
async fn within(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let started = tokio::time::Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "did not happen within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn create_token(admin: &Api, account: &str, body: Value) -> String {
    let (s, b) = call(admin, reqwest::Method::POST, &format!("/api/v1/account/{account}/token"), Some(body)).await;
    assert_eq!(s, 200, "{b}");
    json_of(&b)["token"].as_str().expect("token").to_string()
}

fn servers(list_body: &str) -> Vec<String> {
    json_of(list_body)["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|c| c["server"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn forged(claims: Value, header: Value, key: &[u8]) -> String {
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let unsigned = format!("{}.{}", b64(&header), b64(&claims));
    if header["alg"] == "none" {
        return format!("{unsigned}.");
    }
    let h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    jsonwebtoken::encode(&h, &claims, &jsonwebtoken::EncodingKey::from_secret(key)).expect("sign")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_tokens_and_rbac_across_two_gateways() {
    let d = Deployment::start_with_accounts(1, 2, Some(ACCOUNTS)).await;
    // API tokens are issued and revoked by the auth-rotation service.
    let mut rotation = d.spawn_auth_rotation(300.0).await;
    let admin0 = d.api(0).await;
    let admin1 = d.api(1).await;
    let anon = admin0.anonymous();
    let mut secrets_seen: Vec<String> =
        vec![admin0.token.clone().expect("token"), admin1.token.clone().expect("token")];

    // --- No token, a bad token: 401 / Unauthenticated, on REST and gRPC.
    let (s, b) = get(&anon, "/api/v1/clusters").await;
    assert_eq!(s, 401, "{b}");
    assert_eq!(json_of(&b)["code"], 16);
    let err = anon.grpc.clone().list(ClusterQuery::default()).await.expect_err("anonymous gRPC");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let now = chrono::Utc::now().timestamp();
    let admin_claims =
        json!({"iss": "argocd", "sub": "admin:login", "jti": "x", "iat": now, "nbf": now, "exp": now + 3600});
    for bad in [
        "garbage".to_string(),
        forged(admin_claims.clone(), json!({"alg": "none", "typ": "JWT"}), b""),
        forged(admin_claims.clone(), json!({"alg": "HS256", "typ": "JWT"}), b"not-the-server-key"),
    ] {
        let (s, b) = get(&admin0.with_token(Some(&bad)), "/api/v1/clusters").await;
        assert_eq!(s, 401, "token {bad:?} was accepted: {b}");
        let err =
            admin0.with_token(Some(&bad)).grpc.list(ClusterQuery::default()).await.expect_err("bad token over gRPC");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }

    // --- Userinfo, over REST and gRPC.
    let (s, b) = get(&admin0, "/api/v1/session/userinfo").await;
    assert_eq!(s, 200);
    assert_eq!(json_of(&b), json!({"loggedIn": true, "username": "admin", "iss": "argocd"}));
    let mut sessions = SessionServiceClient::with_interceptor(admin1.channel.clone(), admin1.interceptor());
    let info = sessions.get_user_info(GetUserInfoRequest {}).await.expect("userinfo").into_inner();
    assert_eq!((info.logged_in, info.username.as_str()), (true, "admin"));

    // --- The UI's cookie works too; with it, a write must be JSON (no cross-site form posts).
    let cookie = format!("argocd.token={}", admin0.token.clone().expect("token"));
    let plain = reqwest::Client::new();
    let resp = plain.get(anon.url("/api/v1/clusters")).header("cookie", &cookie).send().await.expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    let resp = plain
        .post(anon.url("/api/v1/clusters"))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("server=https://csrf.example.com")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 415);

    // --- Clusters A, B, C as the admin.
    for (server, name) in [(A, "a"), (B, "b"), (C, "c")] {
        let (s, b) = call(
            &admin0,
            reqwest::Method::POST,
            "/api/v1/clusters",
            Some(json!({"server": server, "name": name, "config": {"bearerToken": "cluster-secret"}})),
        )
        .await;
        assert_eq!(s, 200, "{b}");
    }

    // --- Service accounts: tokens issued on gateway 0 work at once on gateway 1.
    let reader = create_token(&admin0, "ci-reader", json!({"id": "reader-1"})).await;
    let deployer = create_token(&admin0, "ci-deployer", json!({})).await;
    let short = create_token(&admin0, "ci-reader", json!({"id": "reader-short", "expiresIn": 2})).await;
    secrets_seen.extend([reader.clone(), deployer.clone(), short.clone()]);
    let reader1 = admin1.with_token(Some(&reader));
    let (s, b) = get(&reader1, "/api/v1/clusters").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(servers(&b).len(), 4, "reader sees every cluster: {b}");
    let (s, b) = call(
        &reader1,
        reqwest::Method::POST,
        "/api/v1/clusters",
        Some(json!({"server": "https://new.example.com", "name": "new"})),
    )
    .await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(json_of(&b)["code"], 7);
    let err = reader1
        .grpc
        .clone()
        .create(ClusterCreateRequest {
            cluster: Some(corral_proto::v1alpha1::Cluster {
                server: "https://new.example.com".into(),
                name: "new".into(),
                ..Default::default()
            }),
            upsert: false,
        })
        .await
        .expect_err("reader may not create");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert_eq!(json_of(&get(&reader1, "/api/v1/account/can-i/clusters/get/*").await.1)["value"], "yes");
    assert_eq!(json_of(&get(&reader1, "/api/v1/account/can-i/clusters/create/*").await.1)["value"], "no");
    let mut accounts_grpc = AccountServiceClient::with_interceptor(reader1.channel.clone(), reader1.interceptor());
    let can = accounts_grpc
        .can_i(CanIRequest { resource: "clusters".into(), action: "delete".into(), subresource: A.into() })
        .await
        .expect("can-i")
        .into_inner();
    assert_eq!(can.value, "no");
    // A service account cannot mint tokens for another account.
    let err = accounts_grpc
        .create_token(CreateTokenRequest { name: "ci-deployer".into(), expires_in: 0, id: String::new() })
        .await
        .expect_err("reader may not mint a deployer token");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    // --- The expiring token works, then expires.
    let short1 = admin1.with_token(Some(&short));
    assert_eq!(get(&short1, "/api/v1/clusters").await.0, 200);
    within(Duration::from_secs(5), async || get(&short1, "/api/v1/clusters").await.0 == 401).await;

    // --- Accounts list their tokens' metadata, never the tokens.
    let (s, b) = get(&admin1, "/api/v1/account").await;
    assert_eq!(s, 200, "{b}");
    let list = json_of(&b);
    let ci = list["items"].as_array().expect("items").iter().find(|a| a["name"] == "ci-reader").expect("ci-reader");
    assert_eq!(ci["capabilities"], json!(["apiKey"]));
    let ids: Vec<_> =
        ci["tokens"].as_array().expect("tokens").iter().map(|t| t["id"].as_str().unwrap_or_default()).collect();
    assert!(ids.contains(&"reader-1") && ids.contains(&"reader-short"), "{b}");
    for t in ci["tokens"].as_array().expect("tokens") {
        assert!(t["issuedAt"].as_i64().is_some_and(|i| i > 0), "{t}");
    }
    let (s, b) = get(&admin1, "/api/v1/account/ci-reader").await;
    assert_eq!(s, 200, "{b}");
    for t in &secrets_seen {
        assert!(!b.contains(t.as_str()), "an account listing shows a token");
    }
    let (s, _) = get(&admin1, "/api/v1/account/nobody").await;
    assert_eq!(s, 404);

    // --- Revoking one client's token: refused by both replicas within 1 s; others keep working.
    let (s, b) = call(&admin0, reqwest::Method::DELETE, "/api/v1/account/ci-reader/token/reader-1", None).await;
    assert_eq!(s, 200, "{b}");
    let reader0 = admin0.with_token(Some(&reader));
    let took = within(Duration::from_secs(1), async || {
        get(&reader0, "/api/v1/clusters").await.0 == 401 && get(&reader1, "/api/v1/clusters").await.0 == 401
    })
    .await;
    println!("revoked token refused by both gateways after {took:?}");
    for i in 0..2 {
        let (s, b) = get(&[&admin0, &admin1][i].with_token(Some(&deployer)), "/api/v1/clusters").await;
        assert_eq!(s, 200, "gateway {i}: another client's token still works: {b}");
    }

    // --- Alice: her password set by the admin; she logs in through gateway 1.
    let (s, b) = call(
        &admin0,
        reqwest::Method::PUT,
        "/api/v1/account/password",
        Some(json!({"name": "alice", "currentPassword": ADMIN_PASSWORD, "newPassword": ALICE_PASSWORD})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let alice = admin1.as_user("alice", ALICE_PASSWORD).await;
    secrets_seen.push(alice.token.clone().expect("token"));
    let (s, b) = get(&alice, "/api/v1/clusters").await;
    assert_eq!(s, 200, "{b}");
    let mut visible = servers(&b);
    visible.sort();
    assert_eq!(visible, vec![A.to_string(), B.to_string()], "List shows only what alice may get");
    let grpc_list = alice.grpc.clone().list(ClusterQuery::default()).await.expect("gRPC list").into_inner();
    let grpc_visible: Vec<String> = grpc_list.items.iter().map(|c| c.server.clone()).collect();
    assert_eq!(grpc_visible, visible, "gRPC List shows the same, in the same order");
    assert_eq!(get(&alice, &format!("/api/v1/clusters/{}", enc(A))).await.0, 200);

    // Update of B carrying A's URL in the body: checked against the stored B → 403.
    let (s, b) = call(
        &alice,
        reqwest::Method::PUT,
        &format!("/api/v1/clusters/{}?updatedFields=labels", enc(B)),
        Some(json!({"server": A, "name": "a", "labels": {"x": "y"}})),
    )
    .await;
    assert_eq!(s, 403, "{b}");
    // Her own cluster she may update, but not move to a project she has no rights in, nor delete.
    let (s, b) = call(
        &alice,
        reqwest::Method::PUT,
        &format!("/api/v1/clusters/{}?updatedFields=labels", enc(A)),
        Some(json!({"server": A, "labels": {"team": "a"}})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = call(
        &alice,
        reqwest::Method::PUT,
        &format!("/api/v1/clusters/{}?updatedFields=project", enc(A)),
        Some(json!({"server": A, "project": "other"})),
    )
    .await;
    assert_eq!(s, 403, "{b}");
    let (s, b) = call(&alice, reqwest::Method::DELETE, &format!("/api/v1/clusters/{}", enc(A)), None).await;
    assert_eq!(s, 403, "{b}");

    // C is invisible to her: every call answers exactly as for a cluster that does not exist.
    let c_path = format!("/api/v1/clusters/{}", enc(C));
    let hidden = [
        get(&alice, &c_path).await,
        call(&alice, reqwest::Method::PUT, &c_path, Some(json!({"server": C, "name": "c"}))).await,
        call(&alice, reqwest::Method::DELETE, &c_path, None).await,
    ];
    let (s, b) = call(&admin0, reqwest::Method::DELETE, &c_path, None).await;
    assert_eq!(s, 200, "{b}");
    let missing = [
        get(&alice, &c_path).await,
        call(&alice, reqwest::Method::PUT, &c_path, Some(json!({"server": C, "name": "c"}))).await,
        call(&alice, reqwest::Method::DELETE, &c_path, None).await,
    ];
    assert_eq!(hidden, missing, "a hidden cluster must answer byte for byte as a missing one");
    assert_eq!(hidden[0].0, 404);

    // --- A password change ends older sessions on every replica; the new password works.
    let alice0 = admin0.with_token(alice.token.as_deref());
    let (s, b) = call(
        &alice,
        reqwest::Method::PUT,
        "/api/v1/account/password",
        Some(json!({"currentPassword": ALICE_PASSWORD, "newPassword": "alice-password-2"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    within(Duration::from_secs(1), async || {
        get(&alice0, "/api/v1/clusters").await.0 == 401 && get(&alice, "/api/v1/clusters").await.0 == 401
    })
    .await;
    let alice = admin0.as_user("alice", "alice-password-2").await;
    assert_eq!(get(&alice, "/api/v1/clusters").await.0, 200);
    // A wrong current password changes nothing.
    let (s, _) = call(
        &alice,
        reqwest::Method::PUT,
        "/api/v1/account/password",
        Some(json!({"currentPassword": "wrong-wrong", "newPassword": "alice-password-3"})),
    )
    .await;
    assert_eq!(s, 400);

    // --- Logout on one replica ends the session on both.
    let admin_extra = admin0.as_user("admin", ADMIN_PASSWORD).await;
    let extra_token = admin_extra.token.clone().expect("token");
    secrets_seen.push(extra_token.clone());
    assert_eq!(call(&admin_extra, reqwest::Method::DELETE, "/api/v1/session", None).await.0, 200);
    let on1 = admin1.with_token(Some(&extra_token));
    within(Duration::from_secs(1), async || get(&on1, "/api/v1/clusters").await.0 == 401).await;

    // --- Login: unknown user and wrong password answer alike; disabled accounts cannot log in;
    // failures lock the user out on every replica.
    let wrong = admin0.login("alice", "not-her-password").await.expect_err("wrong password");
    let unknown = admin1.login("ghost", "not-her-password").await.expect_err("unknown user");
    assert_eq!(wrong, unknown);
    assert_eq!(wrong.0, 401);
    let disabled = admin0.login("locked", "whatever-password").await.expect_err("disabled account");
    assert_eq!(disabled, wrong);
    let err = SessionServiceClient::new(admin1.channel.clone())
        .create(SessionCreateRequest { username: "alice".into(), password: "nope".into(), token: String::new() })
        .await
        .expect_err("wrong password over gRPC");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let _ = admin0.login("alice", "still-not-it").await.expect_err("third failure");
    let locked = admin1.login("alice", "alice-password-2").await.expect_err("locked out despite the right password");
    assert_eq!(locked.0, 429, "{locked:?}");
    // The refusal says when to try again: the window (300 s by default) from the oldest failure
    // that still counts, which was a moment ago.
    let resp = reqwest::Client::new()
        .post(admin1.url("/api/v1/session"))
        .json(&json!({"username": "alice", "password": "alice-password-2"}))
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status().as_u16(), 429);
    let retry_after: u64 = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("429 without a Retry-After in seconds: {:?}", resp.headers()));
    assert!((240..=300).contains(&retry_after), "Retry-After {retry_after}");
    let err = SessionServiceClient::new(admin0.channel.clone())
        .create(SessionCreateRequest { username: "alice".into(), password: "x".into(), token: String::new() })
        .await
        .expect_err("locked out over gRPC");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    let grpc_retry: u64 =
        err.metadata().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok()).expect("retry-after");
    assert!((240..=300).contains(&grpc_retry), "retry-after {grpc_retry}");

    // --- Disabling an account in the configuration file ends its tokens (file is watched).
    let path = d.accounts_file.as_ref().expect("accounts file").path().to_path_buf();
    std::fs::write(&path, format!("{ACCOUNTS}\n\"accounts.ci-deployer.enabled\" = \"false\"\n"))
        .expect("rewrite accounts");
    let deployer1 = admin1.with_token(Some(&deployer));
    within(Duration::from_secs(5), async || get(&deployer1, "/api/v1/clusters").await.0 == 401).await;

    // --- Failures from one address lock that address out, whatever the user name.
    std::fs::write(&path, format!("{ACCOUNTS}\n\"login.maxSourceFailures\" = \"8\"\n")).expect("rewrite accounts");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut statuses = Vec::new();
    for i in 0..8 {
        statuses.push(admin0.login(&format!("nobody-{i}"), "wrong-password").await.expect_err("unknown user").0);
    }
    assert_eq!(statuses.last(), Some(&429), "the source is locked out after its failures: {statuses:?}");
    let blocked = admin1.login("admin", ADMIN_PASSWORD).await.expect_err("source locked out on the other replica too");
    assert_eq!(blocked.0, 429);

    // --- Tokens are the auth-rotation service's to issue: without it, the gateway cannot.
    rotation.kill_9().await;
    let (s, b) = call(&admin0, reqwest::Method::POST, "/api/v1/account/ci-reader/token", Some(json!({}))).await;
    assert_eq!(s, 503, "{b}");

    // --- No token, password or hash in clear in the stream, the registry's sled files or logs.
    let client = d.client().await;
    let log = corral_event_log::NatsLog::new(client, Default::default()).await.expect("log");
    use corral_event_log::EventLog;
    let events = log.read(1, 100_000).await.expect("read");
    let mut needles: Vec<Vec<u8>> = secrets_seen.iter().map(|t| t.as_bytes().to_vec()).collect();
    needles.extend([ADMIN_PASSWORD, ALICE_PASSWORD, "alice-password-2", "$2b$", "$2y$"].map(|s| s.as_bytes().to_vec()));
    for n in &needles {
        let shown = String::from_utf8_lossy(&n[..n.len().min(12)]).to_string();
        for e in &events {
            assert!(!e.payload.windows(n.len()).any(|w| w == n.as_slice()), "event {} holds {shown}...", e.seq);
        }
        for dir in &d.registry_dirs {
            assert!(files_containing(dir.path(), n).is_empty(), "registry files hold {shown}...");
        }
        assert!(files_containing(d.nats.store_dir(), n).is_empty(), "the JetStream store holds {shown}...");
        for g in &d.gateways {
            assert!(
                !g.logs().iter().any(|l| l.as_bytes().windows(n.len()).any(|w| w == n.as_slice())),
                "a gateway log holds {shown}..."
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_control_plane_requires_a_login_and_keeps_no_secret_in_clear() {
    let cp = common::Embedded::start().await;
    let admin = cp.api.clone();
    let password = std::fs::read_to_string(cp.dir.as_path().join("admin.password")).expect("password file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(cp.dir.as_path().join("admin.password")).expect("meta").permissions().mode();
        assert_eq!(mode & 0o077, 0, "the generated password is readable by its owner only");
    }
    assert_eq!(get(&admin.anonymous(), "/api/v1/clusters").await.0, 401);
    // The admin has the login capability only, as in Argo CD, unless configured otherwise.
    let (s, b) = call(&admin, reqwest::Method::POST, "/api/v1/account/admin/token", Some(json!({}))).await;
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("apiKey"), "{b}");
    let (s, b) = get(&admin, "/api/v1/session/userinfo").await;
    assert_eq!(s, 200, "{b}");

    // An unknown user costs the same bcrypt work as a wrong password: no timing oracle.
    let timed = async |user: &str| {
        let started = std::time::Instant::now();
        let err = admin.login(user, "definitely-wrong").await.expect_err("refused");
        (started.elapsed(), err)
    };
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..3 {
        let (t, e1) = timed("admin").await;
        known.push(t);
        let (u, e2) = timed(&format!("ghost-{i}")).await;
        unknown.push(u);
        assert_eq!(e1, e2, "same answer for a wrong password and an unknown user");
    }
    known.sort();
    unknown.sort();
    let (k, u) = (known[1].as_secs_f64(), unknown[1].as_secs_f64());
    println!("login refusal: wrong password {:.1} ms, unknown user {:.1} ms", k * 1e3, u * 1e3);
    assert!(u > k * 0.5 && u < k * 2.0, "unknown user {u:.4}s vs wrong password {k:.4}s");
    let dir = cp.stop().await;
    for needle in [password.trim().as_bytes(), b"$2b$".as_slice()] {
        assert!(files_containing(dir.path().join("log").as_path(), needle).is_empty());
        assert!(files_containing(dir.path().join("projections").as_path(), needle).is_empty());
    }
}

//! A test fixture that speaks the parts of the Kubernetes API the services use, over TLS with its
//! own CA: `/version`, `/api`, `/apis` and discovery documents. It checks bearer tokens and client
//! certificates like an API server (401 otherwise), and can be told to go down, hang, answer 500
//! or change its version. Many can run at once, each on its own loopback port.
//!
//! It never ships in a service: only tests depend on it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use serde_json::{Value, json};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Up,
    /// Connections are refused and open ones dropped.
    Down,
    /// Requests are accepted and never answered.
    Hang,
    /// Every request answers 500.
    Error500,
}

/// An API group version with its resource kinds, for discovery.
#[derive(Clone, Debug)]
pub struct GroupVersion {
    /// Empty for the core group (`/api/v1`).
    pub group: String,
    pub version: String,
    pub kinds: Vec<String>,
}

struct Inner {
    mode: Mode,
    git_version: String,
    tokens: BTreeSet<String>,
    groups: Vec<GroupVersion>,
    requests: u64,
    /// Service accounts, as "namespace/name".
    service_accounts: BTreeSet<String>,
    /// EKS cluster names whose AWS IAM tokens are accepted (their STS URL is checked for shape:
    /// no AWS is reachable here to verify the signature).
    aws_clusters: BTreeSet<String>,
    /// Tokens issued through TokenRequest, by "namespace/serviceaccount".
    token_requests: Vec<(String, String)>,
    /// Role ARNs asked for through the STS AssumeRole endpoint this server also plays.
    assumed_roles: Vec<String>,
    /// Access key ids that signed the EKS tokens accepted so far.
    aws_keys_seen: Vec<String>,
    /// Accepted basic-auth pairs, as "user:password".
    basic: BTreeSet<String>,
    /// Secrets by "namespace/name": (type, service-account annotation, token).
    secrets: std::collections::BTreeMap<String, Secret>,
    created: u64,
}

#[derive(Clone, Debug)]
struct Secret {
    kind: String,
    service_account: String,
    token: Option<String>,
}

const SA_ANNOTATION: &str = "kubernetes.io/service-account.name";
const SA_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn secret_json(ns: &str, name: &str, s: &Secret) -> Value {
    let mut v = json!({"apiVersion": "v1", "kind": "Secret", "type": s.kind,
        "metadata": {"name": name, "namespace": ns, "annotations": {SA_ANNOTATION: s.service_account}}});
    if let Some(t) = &s.token {
        v["data"] = json!({"token": b64(t)});
    }
    v
}

/// ServiceAccounts and Secrets under /api/v1/namespaces/NS/..., as the token controller keeps
/// them: a new service-account-token Secret gets a token at once, and deleting it revokes it.
fn core_objects(s: &mut Inner, method: &axum::http::Method, path: &str, body: &[u8]) -> Option<Response> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    let ns = parts[0];
    match (method.as_str(), &parts[1..]) {
        ("GET", ["serviceaccounts", name]) => Some(if s.service_accounts.contains(&format!("{ns}/{name}")) {
            axum::Json(
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}}),
            )
            .into_response()
        } else {
            status(404, "NotFound", &format!("serviceaccounts \"{name}\" not found"))
        }),
        // The TokenRequest subresource: a bound token for the service account, valid until it expires.
        ("POST", ["serviceaccounts", name, "token"]) => {
            if !s.service_accounts.contains(&format!("{ns}/{name}")) {
                return Some(status(404, "NotFound", &format!("serviceaccounts \"{name}\" not found")));
            }
            let request: Value = serde_json::from_slice(body).unwrap_or_default();
            s.created += 1;
            let token = format!("tr-token-{}-{}", s.created, rand_suffix());
            s.tokens.insert(token.clone());
            s.token_requests.push((format!("{ns}/{name}"), token.clone()));
            let mut out = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"audiences": [], "expirationSeconds": request["spec"]["expirationSeconds"].as_i64().unwrap_or(3600)},
                "status": {"token": token, "expirationTimestamp": "2099-01-01T00:00:00Z"}});
            if out["spec"]["expirationSeconds"].is_null() {
                out["spec"]["expirationSeconds"] = json!(3600);
            }
            Some((axum::http::StatusCode::CREATED, axum::Json(out)).into_response())
        }
        ("GET", ["secrets"]) => {
            let items: Vec<Value> = s
                .secrets
                .iter()
                .filter_map(|(k, v)| k.strip_prefix(&format!("{ns}/")).map(|name| secret_json(ns, name, v)))
                .collect();
            Some(
                axum::Json(json!({"apiVersion": "v1", "kind": "SecretList", "metadata": {}, "items": items}))
                    .into_response(),
            )
        }
        ("GET", ["secrets", name]) => Some(match s.secrets.get(&format!("{ns}/{name}")) {
            Some(v) => axum::Json(secret_json(ns, name, v)).into_response(),
            None => status(404, "NotFound", &format!("secrets \"{name}\" not found")),
        }),
        ("POST", ["secrets"]) => {
            let Ok(v) = serde_json::from_slice::<Value>(body) else {
                return Some(status(400, "BadRequest", "invalid JSON"));
            };
            let mut name = v["metadata"]["name"].as_str().unwrap_or_default().to_string();
            if name.is_empty() {
                s.created += 1;
                name = format!("{}{:05}", v["metadata"]["generateName"].as_str().unwrap_or("secret-"), s.created);
            }
            let key = format!("{ns}/{name}");
            if s.secrets.contains_key(&key) {
                return Some(status(409, "AlreadyExists", &format!("secrets \"{name}\" already exists")));
            }
            let kind = v["type"].as_str().unwrap_or("Opaque").to_string();
            let sa = v["metadata"]["annotations"][SA_ANNOTATION].as_str().unwrap_or_default().to_string();
            let token = (kind == SA_TOKEN_TYPE && s.service_accounts.contains(&format!("{ns}/{sa}")))
                .then(|| format!("sa-token-{}-{}", s.created, rand_suffix()));
            if let Some(t) = &token {
                s.tokens.insert(t.clone());
            }
            let secret = Secret { kind, service_account: sa, token };
            let out = secret_json(ns, &name, &secret);
            s.secrets.insert(key, secret);
            Some((axum::http::StatusCode::CREATED, axum::Json(out)).into_response())
        }
        ("DELETE", ["secrets", name]) => Some(match s.secrets.remove(&format!("{ns}/{name}")) {
            Some(v) => {
                if let Some(t) = &v.token {
                    s.tokens.remove(t);
                }
                axum::Json(secret_json(ns, name, &v)).into_response()
            }
            None => status(404, "NotFound", &format!("secrets \"{name}\" not found")),
        }),
        _ => None,
    }
}

/// An EKS token: `k8s-aws-v1.` + base64url of a presigned STS GetCallerIdentity URL whose signed
/// headers include the cluster id header. Answers the access key id that signed it.
fn aws_token_key(token: &str, clusters: &BTreeSet<String>) -> Option<String> {
    use base64::Engine;
    if clusters.is_empty() {
        return None;
    }
    let encoded = token.strip_prefix("k8s-aws-v1.")?;
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded).ok()?;
    let url = String::from_utf8_lossy(&url);
    let ok = url.starts_with("https://sts.")
        && url.contains("Action=GetCallerIdentity")
        && url.contains("X-Amz-SignedHeaders=host%3Bx-k8s-aws-id")
        && url.contains("X-Amz-Signature=");
    let credential = url.split('&').find_map(|p| p.strip_prefix("X-Amz-Credential="))?;
    ok.then(|| credential.split("%2F").next().unwrap_or_default().to_string())
}

/// STS AssumeRole, as this server plays it for tests: any presigned request gets fixed
/// temporary credentials.
fn assume_role(s: &mut Inner, query: &str) -> Response {
    let param = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    };
    if param("X-Amz-Signature").is_none() || param("X-Amz-Credential").is_none() {
        return (
            axum::http::StatusCode::FORBIDDEN,
            "<ErrorResponse><Error><Code>MissingAuthenticationToken</Code></Error></ErrorResponse>",
        )
            .into_response();
    }
    s.assumed_roles.push(param("RoleArn").unwrap_or_default());
    let xml = "<AssumeRoleResponse><AssumeRoleResult><Credentials>\
        <AccessKeyId>ASIAFAKEASSUMED</AccessKeyId><SecretAccessKey>fake-assumed-secret</SecretAccessKey>\
        <SessionToken>fake-session-token</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration>\
        </Credentials></AssumeRoleResult></AssumeRoleResponse>";
    ([(axum::http::header::CONTENT_TYPE, "text/xml")], xml).into_response()
}

fn rand_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0),
    );
    format!("{:016x}", h.finish())
}

/// Client identity established by the TLS handshake of one connection.
#[derive(Clone)]
struct PeerCert(bool);

pub struct FakeKube {
    addr: SocketAddr,
    ca_pem: String,
    issuer: Arc<Issuer<'static, KeyPair>>,
    inner: Arc<Mutex<Inner>>,
    down: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn default_groups() -> Vec<GroupVersion> {
    let gv = |g: &str, v: &str, kinds: &[&str]| GroupVersion {
        group: g.into(),
        version: v.into(),
        kinds: kinds.iter().map(|k| k.to_string()).collect(),
    };
    vec![
        gv("", "v1", &["Pod", "Service", "Secret", "ServiceAccount", "Namespace", "ConfigMap"]),
        gv("apps", "v1", &["Deployment", "StatefulSet", "DaemonSet"]),
        gv("batch", "v1", &["Job", "CronJob"]),
    ]
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code});
    (axum::http::StatusCode::from_u16(code).unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR), axum::Json(body))
        .into_response()
}

fn resource_list(gv: &GroupVersion) -> Value {
    let group_version = if gv.group.is_empty() { gv.version.clone() } else { format!("{}/{}", gv.group, gv.version) };
    let resources: Vec<Value> = gv
        .kinds
        .iter()
        .map(|k| {
            json!({"name": format!("{}s", k.to_lowercase()), "singularName": k.to_lowercase(), "namespaced": true,
                "kind": k, "verbs": ["get", "list", "watch", "create", "update", "delete"]})
        })
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

async fn handle(State(inner): State<Arc<Mutex<Inner>>>, req: Request) -> Response {
    if req.uri().path() == "/" && req.uri().query().is_some_and(|q| q.contains("Action=AssumeRole")) {
        let query = req.uri().query().unwrap_or_default().to_string();
        let mut s = inner.lock().unwrap_or_else(|p| p.into_inner());
        return assume_role(&mut s, &query);
    }
    let (mode, git_version, groups, token_ok) = {
        let mut s = inner.lock().unwrap_or_else(|p| p.into_inner());
        s.requests += 1;
        let bearer = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string);
        let aws_key = bearer.as_ref().and_then(|t| aws_token_key(t, &s.aws_clusters));
        let basic_ok = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.decode(b).ok()
            })
            .is_some_and(|pair| s.basic.contains(String::from_utf8_lossy(&pair).as_ref()));
        let token_ok = bearer.as_ref().is_some_and(|t| s.tokens.contains(t)) || aws_key.is_some() || basic_ok;
        if let Some(k) = aws_key {
            s.aws_keys_seen.push(k);
        }
        (s.mode, s.git_version.clone(), s.groups.clone(), token_ok)
    };
    match mode {
        Mode::Hang => std::future::pending::<()>().await,
        Mode::Error500 => return status(500, "InternalError", "the server is failing on purpose"),
        Mode::Up | Mode::Down => {}
    }
    let cert_ok = req.extensions().get::<PeerCert>().is_some_and(|p| p.0);
    if !token_ok && !cert_ok {
        return status(401, "Unauthorized", "Unauthorized");
    }
    // Many clusters can share one server under distinct URLs: `/k/<name>/...` is served as `/...`.
    let full = req.uri().path();
    let path = match full.strip_prefix("/k/") {
        Some(rest) => rest.find('/').map(|i| &rest[i..]).unwrap_or("/"),
        None => full,
    }
    .trim_end_matches('/')
    .to_string();
    let method = req.method().clone();
    if path.starts_with("/api/v1/namespaces/") {
        let body = axum::body::to_bytes(req.into_body(), 1 << 20).await.unwrap_or_default();
        let mut s = inner.lock().unwrap_or_else(|p| p.into_inner());
        return core_objects(&mut s, &method, &path, &body)
            .unwrap_or_else(|| status(404, "NotFound", "the server could not find the requested resource"));
    }
    let path = path.as_str();
    let body = match path {
        "/version" => {
            let minor = git_version.trim_start_matches('v').split('.').nth(1).unwrap_or("0").to_string();
            json!({"major": "1", "minor": minor, "gitVersion": git_version, "gitCommit": "0000000",
                "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24",
                "compiler": "gc", "platform": "linux/amd64"})
        }
        "/api" => json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        "/apis" => {
            let mut names: Vec<&str> =
                groups.iter().filter(|g| !g.group.is_empty()).map(|g| g.group.as_str()).collect();
            names.dedup();
            let list: Vec<Value> = names
                .iter()
                .map(|name| {
                    let versions: Vec<Value> = groups
                        .iter()
                        .filter(|g| g.group == *name)
                        .map(|g| json!({"groupVersion": format!("{}/{}", g.group, g.version), "version": g.version}))
                        .collect();
                    json!({"name": name, "versions": versions, "preferredVersion": versions[0]})
                })
                .collect();
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": list})
        }
        p => {
            let found = groups.iter().find(|g| {
                if g.group.is_empty() {
                    p == format!("/api/{}", g.version)
                } else {
                    p == format!("/apis/{}/{}", g.group, g.version)
                }
            });
            match found {
                Some(gv) => resource_list(gv),
                None => return status(404, "NotFound", "the server could not find the requested resource"),
            }
        }
    };
    axum::Json(body).into_response()
}

impl FakeKube {
    /// Starts a server on a free loopback port that accepts `tokens` as bearer tokens.
    pub async fn start(tokens: &[&str]) -> FakeKube {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "fake-kube CA");
        ca_params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
        let issuer = Arc::new(Issuer::new(ca_params, ca_key));

        let server_key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = params.signed_by(&server_key, &issuer).expect("server cert");

        let ca_der = rustls::pki_types::CertificateDer::from(ca_cert.der().to_vec());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_der.clone()).expect("CA root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()
            .expect("client verifier");
        let key_der = rustls::pki_types::PrivateKeyDer::try_from(server_key.serialize_der()).expect("key der");
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![server_cert.der().clone(), ca_der], key_der)
            .expect("server TLS config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let inner = Arc::new(Mutex::new(Inner {
            mode: Mode::Up,
            git_version: "v1.31.2".into(),
            tokens: tokens.iter().map(|t| t.to_string()).collect(),
            groups: default_groups(),
            requests: 0,
            service_accounts: BTreeSet::from(["kube-system/argocd-manager".to_string()]),
            aws_clusters: BTreeSet::new(),
            token_requests: Vec::new(),
            assumed_roles: Vec::new(),
            aws_keys_seen: Vec::new(),
            basic: BTreeSet::new(),
            secrets: Default::default(),
            created: 0,
        }));
        let router = Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (down, down_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                if *down_rx.borrow() {
                    drop(tcp);
                    continue;
                }
                let (acceptor, router, mut down_rx) = (acceptor.clone(), router.clone(), down_rx.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else { return };
                    let peer = PeerCert(stream.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty()));
                    let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(peer.clone());
                        let router = router.clone();
                        async move { tower_call(router, req).await }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                    // Going down drops open connections too, as a dead server's would be.
                    tokio::select! {
                        _ = conn => {}
                        _ = down_rx.wait_for(|d| *d) => {}
                    }
                });
            }
        });
        FakeKube { addr, ca_pem: ca_cert.pem(), issuer, inner, down, task }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The CA that signed the server's certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A client certificate and key (PEM) the server accepts instead of a token.
    pub fn issue_client_cert(&self, user: &str) -> (String, String) {
        let key = KeyPair::generate().expect("client key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, user);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).expect("client cert");
        (cert.pem(), key.serialize_pem())
    }

    pub fn set_mode(&self, mode: Mode) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).mode = mode;
        let _ = self.down.send(mode == Mode::Down);
    }

    pub fn set_version(&self, git_version: &str) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).git_version = git_version.into();
    }

    pub fn set_groups(&self, groups: Vec<GroupVersion>) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).groups = groups;
    }

    pub fn add_token(&self, token: &str) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).tokens.insert(token.into());
    }

    pub fn remove_token(&self, token: &str) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).tokens.remove(token);
    }

    /// Accepts EKS tokens (AWS IAM authentication) for `cluster_name`.
    pub fn accept_aws(&self, cluster_name: &str) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).aws_clusters.insert(cluster_name.into());
    }

    /// Accepts HTTP basic authentication with `user` and `password`.
    pub fn add_basic(&self, user: &str, password: &str) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).basic.insert(format!("{user}:{password}"));
    }

    /// Role ARNs requested through STS AssumeRole so far.
    pub fn assumed_roles(&self) -> Vec<String> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).assumed_roles.clone()
    }

    /// Access key ids that signed the EKS tokens accepted so far.
    pub fn aws_keys_seen(&self) -> Vec<String> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).aws_keys_seen.clone()
    }

    /// Whether `token` is accepted now.
    pub fn accepts(&self, token: &str) -> bool {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).tokens.contains(token)
    }

    /// A service-account-token Secret holding `token` (accepted from now on), as the token
    /// controller would have made it for `namespace/service_account`.
    pub fn add_service_account_token(&self, namespace: &str, service_account: &str, secret: &str, token: &str) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        s.service_accounts.insert(format!("{namespace}/{service_account}"));
        s.tokens.insert(token.into());
        s.secrets.insert(
            format!("{namespace}/{secret}"),
            Secret { kind: SA_TOKEN_TYPE.into(), service_account: service_account.into(), token: Some(token.into()) },
        );
    }

    /// Tokens held by service-account-token Secrets of `namespace/service_account`.
    pub fn service_account_tokens(&self, namespace: &str, service_account: &str) -> Vec<String> {
        let s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        s.secrets
            .iter()
            .filter(|(k, v)| k.starts_with(&format!("{namespace}/")) && v.service_account == service_account)
            .filter_map(|(_, v)| v.token.clone())
            .collect()
    }

    /// Tokens issued through the TokenRequest API for `namespace/service_account`.
    pub fn token_request_tokens(&self, namespace: &str, service_account: &str) -> Vec<String> {
        let key = format!("{namespace}/{service_account}");
        let s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        s.token_requests.iter().filter(|(k, _)| *k == key).map(|(_, t)| t.clone()).collect()
    }

    /// Requests served so far (any answer).
    pub fn requests(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).requests
    }
}

async fn tower_call(
    router: Router,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<Response, std::convert::Infallible> {
    use tower::ServiceExt;
    let req = req.map(axum::body::Body::new);
    router.oneshot(req).await
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.down.send(true);
    }
}

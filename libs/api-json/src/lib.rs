//! Argo CD's REST JSON for the cluster API. Argo CD renders its REST answers with Go's
//! `encoding/json` rules, not protojson: camelCase Go json tags, integers as numbers, `omitempty`
//! fields left out when empty, `[]byte` as standard base64, `metav1.Time` as RFC 3339 UTC to the
//! second. Non-pointer structs without `omitempty` in Argo CD's types (`config`,
//! `config.tlsClientConfig`, `connectionState`, `info`, `info.cacheInfo`) are always present, as
//! Go prints them. Input is lenient the same way: every field optional, `null` as absent, unknown
//! keys ignored.

use std::collections::HashMap;

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use corral_proto::account::{Account, AccountsList, CreateTokenRequest, Token, UpdatePasswordRequest};
use corral_proto::meta::{ListMeta, Time};
use corral_proto::session::{GetUserInfoResponse, SessionCreateRequest};
use corral_proto::v1alpha1::{
    AwsAuthConfig, Cluster, ClusterCacheInfo, ClusterConfig, ClusterInfo, ClusterList, ConnectionState,
    ExecProviderConfig, TlsClientConfig,
};
use serde_json::{Map, Value, json};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", if field.is_empty() { message.clone() } else { format!("{field}: {message}") })]
pub struct JsonError {
    pub field: String,
    pub message: String,
}

fn err(field: &str, message: impl Into<String>) -> JsonError {
    JsonError { field: field.to_string(), message: message.into() }
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

// ---- output ----

/// Builds a JSON object, leaving out `omitempty` members that are empty.
#[derive(Default)]
struct Obj(Map<String, Value>);

impl Obj {
    fn always(mut self, k: &str, v: Value) -> Self {
        self.0.insert(k.to_string(), v);
        self
    }
    fn str(self, k: &str, v: &str) -> Self {
        if v.is_empty() { self } else { self.always(k, json!(v)) }
    }
    fn bool(self, k: &str, v: bool) -> Self {
        if v { self.always(k, json!(true)) } else { self }
    }
    fn int(self, k: &str, v: Option<i64>) -> Self {
        match v {
            Some(n) => self.always(k, json!(n)),
            None => self,
        }
    }
    fn bytes(self, k: &str, v: &[u8]) -> Self {
        if v.is_empty() { self } else { self.always(k, json!(B64.encode(v))) }
    }
    fn strs(self, k: &str, v: &[String]) -> Self {
        if v.is_empty() { self } else { self.always(k, json!(v)) }
    }
    fn map(self, k: &str, v: &HashMap<String, String>) -> Self {
        if v.is_empty() {
            return self;
        }
        // Sorted, as Go prints maps.
        let sorted: std::collections::BTreeMap<_, _> = v.iter().collect();
        self.always(k, json!(sorted))
    }
    fn time(self, k: &str, v: &Option<Time>) -> Self {
        match v {
            Some(t) => self.always(k, json!(format_time(t))),
            None => self,
        }
    }
    fn obj(self, k: &str, v: Option<Obj>) -> Self {
        match v {
            Some(o) => self.always(k, o.done()),
            None => self,
        }
    }
    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

pub fn format_time(t: &Time) -> String {
    DateTime::<Utc>::from_timestamp(t.seconds, 0).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn parse_time(s: &str) -> Result<Time, JsonError> {
    let t = DateTime::parse_from_rfc3339(s).map_err(|e| err("", format!("invalid RFC 3339 time {s:?}: {e}")))?;
    Ok(Time { seconds: t.timestamp(), nanos: 0 })
}

fn connection_state_json(c: &ConnectionState) -> Obj {
    Obj::default()
        .always("status", json!(c.status))
        .always("message", json!(c.message))
        .time("attemptedAt", &c.attempted_at)
}

fn config_json(c: &ClusterConfig) -> Obj {
    let tls = c.tls_client_config.clone().unwrap_or_default();
    let tls = Obj::default()
        .always("insecure", json!(tls.insecure))
        .str("serverName", &tls.server_name)
        .bytes("certData", &tls.cert_data)
        .bytes("keyData", &tls.key_data)
        .bytes("caData", &tls.ca_data);
    let aws = c.aws_auth_config.as_ref().map(|a| {
        Obj::default().str("clusterName", &a.cluster_name).str("roleARN", &a.role_arn).str("profile", &a.profile)
    });
    let exec = c.exec_provider_config.as_ref().map(|e| {
        Obj::default()
            .str("command", &e.command)
            .strs("args", &e.args)
            .map("env", &e.env)
            .str("apiVersion", &e.api_version)
            .str("installHint", &e.install_hint)
    });
    Obj::default()
        .str("username", &c.username)
        .str("password", &c.password)
        .str("bearerToken", &c.bearer_token)
        .always("tlsClientConfig", tls.done())
        .obj("awsAuthConfig", aws)
        .obj("execProviderConfig", exec)
        .bool("disableCompression", c.disable_compression)
        .str("proxyUrl", &c.proxy_url)
}

/// Renders a cluster as Argo CD's REST JSON.
pub fn cluster_to_json(c: &Cluster) -> Value {
    let info = c.info.clone().unwrap_or_default();
    let cache = info.cache_info.unwrap_or_default();
    let info_obj = Obj::default()
        .always("connectionState", connection_state_json(&info.connection_state.clone().unwrap_or_default()).done())
        .str("serverVersion", &info.server_version)
        .always(
            "cacheInfo",
            Obj::default()
                .int("resourcesCount", cache.resources_count)
                .int("apisCount", cache.apis_count)
                .time("lastCacheSyncTime", &cache.last_cache_sync_time)
                .done(),
        )
        .always("applicationsCount", json!(info.applications_count))
        .strs("apiVersions", &info.api_versions);
    Obj::default()
        .str("server", &c.server)
        .str("name", &c.name)
        .always("config", config_json(&c.config.clone().unwrap_or_default()).done())
        .always("connectionState", connection_state_json(&c.connection_state.clone().unwrap_or_default()).done())
        .str("serverVersion", &c.server_version)
        .strs("namespaces", &c.namespaces)
        .time("refreshRequestedAt", &c.refresh_requested_at)
        .always("info", info_obj.done())
        .int("shard", c.shard)
        .bool("clusterResources", c.cluster_resources)
        .str("project", &c.project)
        .map("labels", &c.labels)
        .map("annotations", &c.annotations)
        .done()
}

/// A watch event as JSON (proto3 JSON names; fields at their defaults left out), the `result` of
/// each line of the REST stream.
pub fn cluster_event_to_json(e: &corral_proto::watch::ClusterEvent) -> Value {
    let mut v = serde_json::Map::new();
    v.insert("type".into(), json!(e.r#type));
    if !e.reason.is_empty() {
        v.insert("reason".into(), json!(e.reason));
    }
    v.insert("resourceVersion".into(), json!(e.resource_version));
    if let Some(c) = &e.cluster {
        v.insert("cluster".into(), cluster_to_json(c));
    }
    if let Some(t) = &e.occurred_at {
        let time = Time { seconds: t.seconds, nanos: t.nanos };
        v.insert("occurredAt".into(), json!(format_timestamp(&time)));
    }
    if e.initial_events_end {
        v.insert("initialEventsEnd".into(), json!(true));
    }
    Value::Object(v)
}

/// A protobuf Timestamp as proto3 JSON writes it: RFC 3339 in UTC with the fraction it needs.
fn format_timestamp(t: &Time) -> String {
    chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_default()
}

pub fn cluster_list_to_json(l: &ClusterList) -> Value {
    let m = l.metadata.clone().unwrap_or_default();
    let meta = Obj::default()
        .str("selfLink", &m.self_link)
        .str("resourceVersion", &m.resource_version)
        .str("continue", &m.r#continue)
        .int("remainingItemCount", m.remaining_item_count);
    Obj::default()
        .always("metadata", meta.done())
        .always("items", Value::Array(l.items.iter().map(cluster_to_json).collect()))
        .done()
}

/// Argo CD's REST error body.
pub fn error_body(grpc_code: i32, message: &str) -> Value {
    json!({"error": message, "message": message, "code": grpc_code})
}

// ---- input ----

/// Reads one JSON object, naming fields by their dotted path in errors.
struct In<'a> {
    path: String,
    obj: Option<&'a Map<String, Value>>,
}

impl<'a> In<'a> {
    fn root(v: &'a Value) -> Result<In<'a>, JsonError> {
        match v {
            Value::Object(o) => Ok(In { path: String::new(), obj: Some(o) }),
            _ => Err(err("", "expected a JSON object")),
        }
    }
    fn field(&self, k: &str) -> String {
        if self.path.is_empty() { k.to_string() } else { format!("{}.{k}", self.path) }
    }
    fn get(&self, k: &str) -> Option<&'a Value> {
        self.obj.and_then(|o| o.get(k)).filter(|v| !v.is_null())
    }
    fn child(&self, k: &str) -> Result<Option<In<'a>>, JsonError> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(In { path: self.field(k), obj: Some(o) })),
            Some(_) => Err(err(&self.field(k), "expected an object")),
        }
    }
    fn str(&self, k: &str) -> Result<String, JsonError> {
        match self.get(k) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(err(&self.field(k), "expected a string")),
        }
    }
    fn bool(&self, k: &str) -> Result<bool, JsonError> {
        match self.get(k) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(err(&self.field(k), "expected true or false")),
        }
    }
    fn int(&self, k: &str) -> Result<Option<i64>, JsonError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v.as_i64().map(Some).ok_or_else(|| err(&self.field(k), "expected an integer")),
        }
    }
    fn bytes(&self, k: &str) -> Result<Vec<u8>, JsonError> {
        let s = self.str(k)?;
        B64.decode(s.as_bytes()).map_err(|_| err(&self.field(k), "invalid base64"))
    }
    fn strs(&self, k: &str) -> Result<Vec<String>, JsonError> {
        match self.get(k) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(String::from).ok_or_else(|| err(&self.field(k), "expected a list of strings")))
                .collect(),
            Some(_) => Err(err(&self.field(k), "expected a list of strings")),
        }
    }
    fn map(&self, k: &str) -> Result<HashMap<String, String>, JsonError> {
        match self.get(k) {
            None => Ok(HashMap::new()),
            Some(Value::Object(o)) => o
                .iter()
                .map(|(key, v)| match v {
                    Value::String(s) => Ok((key.clone(), s.clone())),
                    _ => Err(err(&self.field(k), "expected an object of strings")),
                })
                .collect(),
            Some(_) => Err(err(&self.field(k), "expected an object of strings")),
        }
    }
    fn time(&self, k: &str) -> Result<Option<Time>, JsonError> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => parse_time(s).map(Some).map_err(|e| err(&self.field(k), e.message)),
            Some(_) => Err(err(&self.field(k), "expected an RFC 3339 time")),
        }
    }
}

fn connection_state_from(i: &In<'_>) -> Result<ConnectionState, JsonError> {
    Ok(ConnectionState { status: i.str("status")?, message: i.str("message")?, attempted_at: i.time("attemptedAt")? })
}

fn config_from(i: &In<'_>) -> Result<ClusterConfig, JsonError> {
    let tls = match i.child("tlsClientConfig")? {
        Some(t) => Some(TlsClientConfig {
            insecure: t.bool("insecure")?,
            server_name: t.str("serverName")?,
            cert_data: t.bytes("certData")?,
            key_data: t.bytes("keyData")?,
            ca_data: t.bytes("caData")?,
        }),
        None => None,
    };
    let aws = match i.child("awsAuthConfig")? {
        Some(a) => Some(AwsAuthConfig {
            cluster_name: a.str("clusterName")?,
            role_arn: a.str("roleARN")?,
            profile: a.str("profile")?,
        }),
        None => None,
    };
    let exec = match i.child("execProviderConfig")? {
        Some(e) => Some(ExecProviderConfig {
            command: e.str("command")?,
            args: e.strs("args")?,
            env: e.map("env")?,
            api_version: e.str("apiVersion")?,
            install_hint: e.str("installHint")?,
        }),
        None => None,
    };
    Ok(ClusterConfig {
        username: i.str("username")?,
        password: i.str("password")?,
        bearer_token: i.str("bearerToken")?,
        tls_client_config: tls,
        aws_auth_config: aws,
        exec_provider_config: exec,
        disable_compression: i.bool("disableCompression")?,
        proxy_url: i.str("proxyUrl")?,
    })
}

fn cluster_from(i: &In<'_>) -> Result<Cluster, JsonError> {
    let info = match i.child("info")? {
        Some(inf) => Some(ClusterInfo {
            connection_state: inf.child("connectionState")?.map(|c| connection_state_from(&c)).transpose()?,
            server_version: inf.str("serverVersion")?,
            cache_info: match inf.child("cacheInfo")? {
                Some(c) => Some(ClusterCacheInfo {
                    resources_count: c.int("resourcesCount")?,
                    apis_count: c.int("apisCount")?,
                    last_cache_sync_time: c.time("lastCacheSyncTime")?,
                }),
                None => None,
            },
            applications_count: inf.int("applicationsCount")?.unwrap_or_default(),
            api_versions: inf.strs("apiVersions")?,
        }),
        None => None,
    };
    Ok(Cluster {
        server: i.str("server")?,
        name: i.str("name")?,
        config: i.child("config")?.map(|c| config_from(&c)).transpose()?,
        connection_state: i.child("connectionState")?.map(|c| connection_state_from(&c)).transpose()?,
        server_version: i.str("serverVersion")?,
        namespaces: i.strs("namespaces")?,
        refresh_requested_at: i.time("refreshRequestedAt")?,
        info,
        shard: i.int("shard")?,
        cluster_resources: i.bool("clusterResources")?,
        project: i.str("project")?,
        labels: i.map("labels")?,
        annotations: i.map("annotations")?,
    })
}

/// Parses a cluster from Argo CD's REST JSON.
pub fn cluster_from_json(v: &Value) -> Result<Cluster, JsonError> {
    cluster_from(&In::root(v)?)
}

fn parse(body: &[u8]) -> Result<Value, JsonError> {
    serde_json::from_slice(body).map_err(|e| err("", format!("invalid JSON: {e}")))
}

pub fn cluster_from_slice(body: &[u8]) -> Result<Cluster, JsonError> {
    cluster_from_json(&parse(body)?)
}

/// A PUT body: the cluster itself, or `{"cluster": {...}, "updatedFields": [...], "id": {...}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateBody {
    pub cluster: Cluster,
    pub updated_fields: Vec<String>,
    pub id: Option<(String, String)>,
}

pub fn update_body_from_slice(body: &[u8]) -> Result<UpdateBody, JsonError> {
    let v = parse(body)?;
    let root = In::root(&v)?;
    if let Some(Value::Object(_)) = root.get("cluster") {
        let cluster = root.child("cluster")?.map(|c| cluster_from(&c)).transpose()?.unwrap_or_default();
        let id =
            root.child("id")?.map(|i| -> Result<_, JsonError> { Ok((i.str("type")?, i.str("value")?)) }).transpose()?;
        return Ok(UpdateBody { cluster, updated_fields: root.strs("updatedFields")?, id });
    }
    Ok(UpdateBody { cluster: cluster_from(&root)?, updated_fields: Vec::new(), id: None })
}

/// Unused today but kept beside its sibling so list input and output stay symmetrical.
pub fn list_meta_from(v: &Value) -> Result<ListMeta, JsonError> {
    let i = In::root(v)?;
    Ok(ListMeta {
        self_link: i.str("selfLink")?,
        resource_version: i.str("resourceVersion")?,
        r#continue: i.str("continue")?,
        remaining_item_count: i.int("remainingItemCount")?,
    })
}

// ---- accounts and sessions ----

/// Reads a body that may be empty (read as `{}`, as grpc-gateway reads an empty body).
fn parse_optional(body: &[u8]) -> Result<Value, JsonError> {
    if body.iter().all(u8::is_ascii_whitespace) { Ok(Value::Object(Map::new())) } else { parse(body) }
}

impl In<'_> {
    /// An int64 as grpc-gateway reads one: a JSON number or a string of digits.
    fn int64(&self, k: &str) -> Result<i64, JsonError> {
        match self.get(k) {
            None => Ok(0),
            Some(Value::String(s)) if s.is_empty() => Ok(0),
            Some(Value::String(s)) => s.parse().map_err(|_| err(&self.field(k), format!("not a number: {s:?}"))),
            Some(v) => v.as_i64().ok_or_else(|| err(&self.field(k), "expected an integer")),
        }
    }
}

/// A login: `{"username", "password"}` (Argo CD's SSO `token` is read and refused later).
pub fn session_create_from_slice(body: &[u8]) -> Result<SessionCreateRequest, JsonError> {
    let v = parse_optional(body)?;
    let i = In::root(&v)?;
    Ok(SessionCreateRequest { username: i.str("username")?, password: i.str("password")?, token: i.str("token")? })
}

pub fn update_password_from_slice(body: &[u8]) -> Result<UpdatePasswordRequest, JsonError> {
    let v = parse_optional(body)?;
    let i = In::root(&v)?;
    Ok(UpdatePasswordRequest {
        new_password: i.str("newPassword")?,
        current_password: i.str("currentPassword")?,
        name: i.str("name")?,
    })
}

/// A token request for account `name` (the one in the path: a name in the body must still be
/// text, as in the request message).
pub fn create_token_from_slice(name: &str, body: &[u8]) -> Result<CreateTokenRequest, JsonError> {
    let v = parse_optional(body)?;
    let i = In::root(&v)?;
    i.str("name")?;
    Ok(CreateTokenRequest { name: name.to_string(), expires_in: i.int64("expiresIn")?, id: i.str("id")? })
}

pub fn token_to_json(t: &Token) -> Value {
    Obj::default()
        .always("id", json!(t.id))
        .always("issuedAt", json!(t.issued_at))
        .int("expiresAt", (t.expires_at != 0).then_some(t.expires_at))
        .done()
}

pub fn account_to_json(a: &Account) -> Value {
    let tokens = (!a.tokens.is_empty()).then(|| Value::Array(a.tokens.iter().map(token_to_json).collect()));
    let mut o =
        Obj::default().always("name", json!(a.name)).bool("enabled", a.enabled).strs("capabilities", &a.capabilities);
    if let Some(t) = tokens {
        o = o.always("tokens", t);
    }
    o.done()
}

pub fn accounts_to_json(l: &AccountsList) -> Value {
    json!({"items": l.items.iter().map(account_to_json).collect::<Vec<_>>()})
}

pub fn user_info_to_json(u: &GetUserInfoResponse) -> Value {
    Obj::default()
        .always("loggedIn", json!(u.logged_in))
        .always("username", json!(u.username))
        .always("iss", json!(u.iss))
        .strs("groups", &u.groups)
        .done()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn full() -> Cluster {
        Cluster {
            server: "https://k.example.com".into(),
            name: "k".into(),
            config: Some(ClusterConfig {
                username: "u".into(),
                password: "p".into(),
                bearer_token: "t".into(),
                tls_client_config: Some(TlsClientConfig {
                    insecure: true,
                    server_name: "sn".into(),
                    cert_data: b"cert".to_vec(),
                    key_data: b"key".to_vec(),
                    ca_data: b"ca".to_vec(),
                }),
                aws_auth_config: Some(AwsAuthConfig {
                    cluster_name: "c".into(),
                    role_arn: "arn".into(),
                    profile: "pr".into(),
                }),
                exec_provider_config: Some(ExecProviderConfig {
                    command: "cmd".into(),
                    args: vec!["a".into()],
                    env: [("K".to_string(), "V".to_string())].into(),
                    api_version: "v1".into(),
                    install_hint: "hint".into(),
                }),
                disable_compression: true,
                proxy_url: "http://proxy".into(),
            }),
            connection_state: Some(ConnectionState {
                status: "Successful".into(),
                message: "ok".into(),
                attempted_at: Some(Time { seconds: 1_700_000_000, nanos: 0 }),
            }),
            server_version: "1.30".into(),
            namespaces: vec!["a".into(), "b".into()],
            refresh_requested_at: Some(Time { seconds: 1_700_000_100, nanos: 0 }),
            info: Some(ClusterInfo {
                connection_state: Some(ConnectionState {
                    status: "Successful".into(),
                    message: "ok".into(),
                    attempted_at: None,
                }),
                server_version: "1.30".into(),
                cache_info: Some(ClusterCacheInfo {
                    resources_count: Some(10),
                    apis_count: Some(3),
                    last_cache_sync_time: Some(Time { seconds: 1_700_000_200, nanos: 0 }),
                }),
                applications_count: 4,
                api_versions: vec!["v1".into()],
            }),
            shard: Some(2),
            cluster_resources: true,
            project: "proj".into(),
            labels: [("env".to_string(), "prod".to_string())].into(),
            annotations: [("a".to_string(), "b".to_string())].into(),
        }
    }

    #[test]
    fn full_cluster_round_trips() {
        let c = full();
        let v = cluster_to_json(&c);
        assert_eq!(v["config"]["tlsClientConfig"]["caData"], "Y2E=");
        assert_eq!(v["shard"], 2);
        assert_eq!(v["info"]["cacheInfo"]["resourcesCount"], 10);
        assert_eq!(v["refreshRequestedAt"], "2023-11-14T22:15:00Z");
        assert_eq!(v["config"]["awsAuthConfig"]["roleARN"], "arn");
        assert_eq!(cluster_from_json(&v).expect("parse"), c);
    }

    #[test]
    fn minimal_cluster_omits_empty_fields_like_go() {
        let c = Cluster { server: "https://s".into(), name: "n".into(), ..Default::default() };
        assert_eq!(
            cluster_to_json(&c),
            json!({
                "server": "https://s",
                "name": "n",
                "config": {"tlsClientConfig": {"insecure": false}},
                "connectionState": {"status": "", "message": ""},
                "info": {"connectionState": {"status": "", "message": ""}, "cacheInfo": {}, "applicationsCount": 0}
            })
        );
    }

    #[test]
    fn input_errors_name_the_field() {
        let e = cluster_from_slice(br#"{"config": {"tlsClientConfig": {"caData": "%%%"}}}"#).expect_err("bad base64");
        assert_eq!(e.field, "config.tlsClientConfig.caData");
        assert_eq!(e.to_string(), "config.tlsClientConfig.caData: invalid base64");
        assert_eq!(cluster_from_slice(br#"{"shard": "x"}"#).expect_err("shard").field, "shard");
        assert_eq!(cluster_from_slice(br#"{"labels": {"a": 1}}"#).expect_err("labels").field, "labels");
        assert!(cluster_from_slice(b"{nope").expect_err("json").message.starts_with("invalid JSON"));
        assert!(cluster_from_slice(b"[1]").is_err());
    }

    #[test]
    fn unknown_keys_and_nulls_are_ignored() {
        let c = cluster_from_slice(br#"{"server": "https://s", "future": {"x": 1}, "labels": null, "shard": null}"#)
            .expect("parse");
        assert_eq!(c.server, "https://s");
        assert!(c.labels.is_empty());
        assert_eq!(c.shard, None);
    }

    #[test]
    fn both_put_body_forms() {
        let plain = update_body_from_slice(br#"{"server": "https://s", "labels": {"a": "b"}}"#).expect("plain");
        assert_eq!(plain.cluster.labels.get("a").map(String::as_str), Some("b"));
        assert!(plain.updated_fields.is_empty());
        let wrapped = update_body_from_slice(
            br#"{"cluster": {"server": "https://s", "name": "n"}, "updatedFields": ["name"], "id": {"type": "name", "value": "n"}}"#,
        )
        .expect("wrapped");
        assert_eq!(wrapped.cluster.name, "n");
        assert_eq!(wrapped.updated_fields, vec!["name".to_string()]);
        assert_eq!(wrapped.id, Some(("name".into(), "n".into())));
    }

    #[test]
    fn error_body_has_argo_cd_shape() {
        assert_eq!(error_body(5, "nope"), json!({"error": "nope", "message": "nope", "code": 5}));
    }

    #[test]
    fn account_bodies_read_as_grpc_gateway_reads_them() {
        let login =
            session_create_from_slice(br#"{"username": "a", "password": "p", "extra": 1, "token": null}"#).unwrap();
        assert_eq!((login.username.as_str(), login.password.as_str(), login.token.as_str()), ("a", "p", ""));
        assert_eq!(session_create_from_slice(b"  ").unwrap(), SessionCreateRequest::default());
        assert!(session_create_from_slice(b"[]").is_err(), "an array is not a message");
        assert!(session_create_from_slice(br#"{"username": 5}"#).is_err());
        let t = create_token_from_slice("ci", br#"{"expiresIn": "3600", "id": "t1"}"#).unwrap();
        assert_eq!((t.name.as_str(), t.expires_in, t.id.as_str()), ("ci", 3600, "t1"));
        assert_eq!(create_token_from_slice("ci", br#"{"expiresIn": 60}"#).unwrap().expires_in, 60);
        assert!(create_token_from_slice("ci", br#"{"expiresIn": "soon"}"#).is_err());
        assert!(create_token_from_slice("ci", br#"{"name": {}}"#).is_err(), "name must be text");
        let p = update_password_from_slice(br#"{"newPassword": "n", "currentPassword": "c"}"#).unwrap();
        assert_eq!((p.new_password.as_str(), p.current_password.as_str(), p.name.as_str()), ("n", "c", ""));
    }

    #[test]
    fn accounts_render_as_argo_cd_does() {
        let a = Account {
            name: "ci".into(),
            enabled: true,
            capabilities: vec!["apiKey".into()],
            tokens: vec![
                Token { id: "t1".into(), issued_at: 10, expires_at: 0 },
                Token { id: "t2".into(), issued_at: 11, expires_at: 99 },
            ],
        };
        assert_eq!(
            account_to_json(&a),
            json!({"name": "ci", "enabled": true, "capabilities": ["apiKey"], "tokens": [{"id": "t1", "issuedAt": 10}, {"id": "t2", "issuedAt": 11, "expiresAt": 99}]})
        );
        assert_eq!(account_to_json(&Account { name: "x".into(), ..Default::default() }), json!({"name": "x"}));
        let u = GetUserInfoResponse { logged_in: true, username: "a".into(), iss: "argocd".into(), groups: vec![] };
        assert_eq!(user_info_to_json(&u), json!({"loggedIn": true, "username": "a", "iss": "argocd"}));
    }
}

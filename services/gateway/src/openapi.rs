//! The OpenAPI document of the REST API, served at `/swagger.json` as Argo CD serves its own. It
//! is built from the operation table the router is built from ([`crate::routes`]) and from the
//! public `.proto` descriptors (message fields, their JSON names and comments), so it cannot name
//! a route or a field the server does not have. The tests below check the table against the
//! `.proto` services: every RPC has its REST operation, with the same messages.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;

use axum::response::{IntoResponse, Response};
use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};
use serde_json::{Map, Value, json};

use crate::routes::{Caller, In, Kind, OPERATIONS, Op, Operation};

pub const DOCUMENT_PATH: &str = "/swagger.json";

/// The observed state of a cluster: answered, never taken from a request.
const READ_ONLY: &[(&str, &str)] = &[
    ("v1alpha1.Cluster", "connectionState"),
    ("v1alpha1.Cluster", "serverVersion"),
    ("v1alpha1.Cluster", "info"),
    ("v1alpha1.Cluster", "refreshRequestedAt"),
];

/// Credentials: taken from a request, never answered (responses blank them, as Argo CD's do).
const WRITE_ONLY: &[(&str, &str)] = &[
    ("v1alpha1.ClusterConfig", "username"),
    ("v1alpha1.ClusterConfig", "password"),
    ("v1alpha1.ClusterConfig", "bearerToken"),
    ("v1alpha1.ClusterConfig", "execProviderConfig"),
    ("v1alpha1.TLSClientConfig", "certData"),
    ("v1alpha1.TLSClientConfig", "keyData"),
    ("v1alpha1.TLSClientConfig", "caData"),
];

/// What the server checks of a field beyond its type, where JSON Schema can say it exactly or
/// more loosely than the check (never more strictly: a value these refuse, the server refuses).
fn constraints(message: &str, field: &str) -> Option<Value> {
    Some(match (message, field) {
        ("v1alpha1.Cluster", "server") => json!({
            // An http(s) URL with a host and no user info, spaces or backslashes.
            "pattern": r"^[hH][tT][tT][pP][sS]?://[^\s/?#@\\]+([/?#][^\s\\]*)?$",
            "maxLength": corral_domain::MAX_SERVER_LEN,
            "example": "https://10.0.0.1:6443",
        }),
        ("v1alpha1.Cluster", "name") => json!({"minLength": 1, "maxLength": 253, "example": "prod"}),
        ("v1alpha1.Cluster", "shard") => json!({"minimum": 0}),
        ("account.UpdatePasswordRequest", "newPassword") => json!({"minLength": 8, "maxLength": 72}),
        _ => return None,
    })
}

/// A point in time is RFC 3339 text in Argo CD's JSON.
const TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Time";

/// The document, built once.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| build(&Descriptors::public()))
}

pub async fn serve() -> Response {
    axum::Json(document().clone()).into_response()
}

/// The public messages and services by full name (no leading dot), with their comments.
struct Descriptors {
    messages: HashMap<String, (DescriptorProto, Comments)>,
    /// `package.Service/Method` to (input, output) message names.
    rpcs: BTreeMap<String, (String, String)>,
}

#[derive(Default, Clone)]
struct Comments {
    message: String,
    fields: HashMap<String, String>,
}

impl Descriptors {
    fn public() -> Descriptors {
        let set = FileDescriptorSet::decode(corral_proto::PUBLIC_FILE_DESCRIPTOR_SET)
            .unwrap_or_else(|e| panic!("the public descriptor set does not decode: {e}"));
        let mut d = Descriptors { messages: HashMap::new(), rpcs: BTreeMap::new() };
        for file in &set.file {
            let package = file.package();
            // Leading comments by location path: [4, m] a message, [4, m, 2, f] its field f.
            let comments: HashMap<Vec<i32>, String> = file
                .source_code_info
                .iter()
                .flat_map(|i| &i.location)
                .filter_map(|l| Some((l.path.clone(), l.leading_comments.clone()?.trim().replace('\n', " "))))
                .collect();
            for (m, msg) in file.message_type.iter().enumerate() {
                let at = |path: &[i32]| comments.get(path).cloned().unwrap_or_default();
                let c = Comments {
                    message: at(&[4, m as i32]),
                    fields: msg
                        .field
                        .iter()
                        .enumerate()
                        .map(|(f, field)| (field.name().to_string(), at(&[4, m as i32, 2, f as i32])))
                        .collect(),
                };
                d.messages.insert(format!("{package}.{}", msg.name()), (msg.clone(), c));
                for nested in &msg.nested_type {
                    d.messages.insert(
                        format!("{package}.{}.{}", msg.name(), nested.name()),
                        (nested.clone(), Comments::default()),
                    );
                }
            }
            for service in &file.service {
                for method in &service.method {
                    let strip = |t: &str| t.trim_start_matches('.').to_string();
                    d.rpcs.insert(
                        format!("{package}.{}/{}", service.name(), method.name()),
                        (strip(method.input_type()), strip(method.output_type())),
                    );
                }
            }
        }
        d
    }

    fn message(&self, name: &str) -> &(DescriptorProto, Comments) {
        self.messages.get(name).unwrap_or_else(|| panic!("no message {name} in the public .proto files"))
    }
}

/// grpc-gateway's component names: the last package segment and the message (`v1alpha1Cluster`).
fn schema_name(full: &str) -> String {
    let mut parts: Vec<&str> = full.split('.').collect();
    let message = parts.pop().unwrap_or_default();
    format!("{}{message}", parts.last().copied().unwrap_or_default())
}

fn schema_ref(full: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{}", schema_name(full))})
}

/// The schema of a message's field; message types it names go to `wanted`.
fn field_schema(d: &Descriptors, field: &prost_types::FieldDescriptorProto, wanted: &mut Vec<String>) -> Value {
    let type_name = field.type_name().trim_start_matches('.');
    let single = match field.r#type() {
        Type::String => json!({"type": "string"}),
        Type::Bool => json!({"type": "boolean"}),
        Type::Int64 | Type::Sint64 | Type::Sfixed64 | Type::Uint64 | Type::Fixed64 => {
            json!({"type": "integer", "format": "int64"})
        }
        Type::Int32 | Type::Sint32 | Type::Sfixed32 | Type::Uint32 | Type::Fixed32 => {
            json!({"type": "integer", "format": "int32"})
        }
        Type::Double | Type::Float => json!({"type": "number"}),
        // Standard base64, as Go's encoding/json writes []byte.
        Type::Bytes => json!({"type": "string", "format": "byte"}),
        Type::Enum => json!({"type": "string"}),
        Type::Message if type_name == TIME => json!({"type": "string", "format": "date-time"}),
        Type::Message => {
            let (msg, _) = d.message(type_name);
            if msg.options.as_ref().is_some_and(|o| o.map_entry()) {
                let value = msg.field.iter().find(|f| f.name() == "value").map(|f| field_schema(d, f, wanted));
                return json!({"type": "object", "additionalProperties": value.unwrap_or(json!({}))});
            }
            wanted.push(type_name.to_string());
            schema_ref(type_name)
        }
        Type::Group => json!({}),
    };
    if field.label() == Label::Repeated { json!({"type": "array", "items": single}) } else { single }
}

fn message_schema(d: &Descriptors, full: &str, wanted: &mut Vec<String>) -> Value {
    let (msg, comments) = d.message(full);
    let short = schema_name(full);
    let short_key = full.rsplit('.').nth(1).map(|pkg| format!("{pkg}.{}", msg.name())).unwrap_or_default();
    let mut properties = Map::new();
    for field in &msg.field {
        let mut schema = field_schema(d, field, wanted);
        let name = field.name();
        let note = comments.fields.get(name).filter(|c| !c.is_empty());
        let read_only = READ_ONLY.contains(&(short_key.as_str(), name));
        let write_only = WRITE_ONLY.contains(&(short_key.as_str(), name));
        // A `$ref` takes no siblings in OpenAPI 3.0: wrapped, it can be annotated.
        if schema.get("$ref").is_some() {
            schema = json!({"allOf": [schema]});
        }
        if let Some(o) = schema.as_object_mut() {
            // JSON null reads as an absent field.
            o.insert("nullable".into(), json!(true));
            if let Some(Value::Object(extra)) = constraints(&short_key, name) {
                o.extend(extra);
            }
            if let Some(n) = note {
                o.insert("description".into(), json!(n));
            }
            if read_only {
                o.insert("readOnly".into(), json!(true));
            }
            if write_only {
                o.insert("writeOnly".into(), json!(true));
            }
        }
        properties.insert(name.to_string(), schema);
    }
    let mut schema = json!({"type": "object", "properties": properties, "title": short});
    if !comments.message.is_empty() {
        schema["description"] = json!(comments.message);
    }
    schema
}

fn parameter(p: &crate::routes::Param) -> Value {
    let schema = match p.kind {
        Kind::Str => json!({"type": "string"}),
        Kind::Bool => json!({"type": "boolean"}),
        Kind::OneOf(values) => json!({"type": "string", "enum": values}),
        Kind::ManyOf(values) => json!({"type": "array", "items": {"type": "string", "enum": values}}),
    };
    let mut v = json!({
        "name": p.name,
        "in": if p.location == In::Path { "path" } else { "query" },
        "required": p.location == In::Path,
        "description": p.description,
        "schema": schema,
    });
    if let Some(example) = p.example {
        v["example"] = json!(example);
    }
    if matches!(p.kind, Kind::ManyOf(_)) {
        v["style"] = json!("form");
        v["explode"] = json!(true);
    }
    v
}

/// Argo CD's operation ids: `ClusterService_List`.
fn operation_id(o: &Operation) -> String {
    let (service, method) = o.rpc.split_once('/').unwrap_or((o.rpc, ""));
    format!("{}_{method}", service.rsplit('.').next().unwrap_or(service))
}

fn operation(o: &Operation, wanted: &mut Vec<String>) -> Value {
    let service = o.rpc.split_once('/').map_or(o.rpc, |(s, _)| s);
    let service = service.rsplit('.').next().unwrap_or(service);
    wanted.push(o.response.to_string());
    let mut v = json!({
        "operationId": operation_id(o),
        "summary": o.summary,
        "tags": [service],
        "x-grpc-method": format!("/{}", o.rpc),
        "parameters": o.params.iter().map(parameter).collect::<Vec<_>>(),
        "responses": {
            "200": {
                "description": "A successful answer.",
                "content": {"application/json": {"schema": schema_ref(o.response)}},
            },
            "default": {"$ref": "#/components/responses/Error"},
        },
    });
    if o.op == Op::WatchClusters {
        // A stream: one {"result": event} per line (grpc-gateway's framing), or the same as
        // Server-Sent Events.
        let line = json!({"type": "object", "properties": {"result": schema_ref(o.response)}});
        v["responses"]["200"]["content"] = json!({
            "application/json": {"schema": line},
            "text/event-stream": {"schema": {"type": "string"}},
        });
        v["responses"]["410"] = json!({
            "description": "The resourceVersion is older than the oldest revision still kept: list again and watch from the list's revision.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        });
    }
    if o.op == Op::CreateCluster {
        // The cluster just registered, by its server URL, for the operations on one cluster.
        let links: Map<String, Value> =
            [Op::GetCluster, Op::UpdateCluster, Op::DeleteCluster, Op::RotateAuth, Op::InvalidateCache]
                .into_iter()
                .filter_map(|target| OPERATIONS.iter().find(|t| t.op == target))
                .map(|t| {
                    (
                        operation_id(t),
                        json!({"operationId": operation_id(t), "parameters": {"id": "$response.body#/server"}}),
                    )
                })
                .collect();
        v["responses"]["200"]["links"] = Value::Object(links);
    }
    if let Some(body) = o.body {
        wanted.push(body.to_string());
        v["requestBody"] =
            json!({"required": o.body_required, "content": {"application/json": {"schema": schema_ref(body)}}});
    }
    match o.caller {
        Caller::Anyone => v["security"] = json!([]),
        Caller::AnyoneOrToken => v["security"] = json!([{}, {"bearer": []}, {"cookie": []}]),
        Caller::Token => {}
    }
    v
}

fn build(d: &Descriptors) -> Value {
    let mut wanted = Vec::new();
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for o in OPERATIONS {
        paths.entry(o.path).or_default().insert(o.method.to_string(), operation(o, &mut wanted));
    }
    let mut schemas = Map::new();
    let mut done = BTreeSet::new();
    while let Some(full) = wanted.pop() {
        if done.insert(full.clone()) {
            schemas.insert(schema_name(&full), message_schema(d, &full, &mut wanted));
        }
    }
    schemas.insert(
        "Error".into(),
        json!({
            "type": "object",
            "description": "Every error: the gRPC status code and its message, twice, as Argo CD answers.",
            "required": ["error", "message", "code"],
            "properties": {
                "error": {"type": "string"},
                "message": {"type": "string"},
                "code": {"type": "integer", "description": "The gRPC status code (3 InvalidArgument, 5 NotFound, 16 Unauthenticated, ...)."},
            },
        }),
    );
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "corral",
            "version": crate::version::version(),
            "description": "Argo CD's cluster, account, session and version APIs over REST. The same calls are served over gRPC and gRPC-web on the same port.",
        },
        "paths": paths,
        "security": [{"bearer": []}, {"cookie": []}],
        "components": {
            "schemas": schemas,
            "responses": {
                "Error": {
                    "description": "An error, with the HTTP status of its gRPC code (400, 401, 403, 404, 409, 413, 415, 429, 503, ...).",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                },
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "A session token or an API token."},
                "cookie": {"type": "apiKey", "in": "cookie", "name": crate::accounts::TOKEN_COOKIE},
            },
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_public_rpc_has_its_rest_operation_with_the_same_messages() {
        let d = Descriptors::public();
        let documented: BTreeSet<&str> = OPERATIONS.iter().map(|o| o.rpc).collect();
        let served: BTreeSet<&str> = d.rpcs.keys().map(String::as_str).filter(|r| !r.starts_with("grpc.")).collect();
        assert_eq!(documented, served, "REST operations and public RPCs differ");
        for o in OPERATIONS {
            let (input, output) = &d.rpcs[o.rpc];
            assert_eq!(&o.response, output, "{}: the REST answer is not the RPC's", o.rpc);
            if let Some(body) = o.body {
                // The body is the request message, or one of its fields (Argo CD's `body: "cluster"`).
                let (msg, _) = d.message(input);
                let field_types: Vec<&str> = msg.field.iter().map(|f| f.type_name().trim_start_matches('.')).collect();
                assert!(body == input || field_types.contains(&body), "{}: body {body} is not in {input}", o.rpc);
            }
            // Every path parameter is in the path and every path segment in braces is a parameter.
            let in_path: BTreeSet<&str> =
                o.path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')).collect();
            let declared: BTreeSet<&str> = o.params.iter().filter(|p| p.location == In::Path).map(|p| p.name).collect();
            assert_eq!(in_path, declared, "{} {}", o.method, o.path);
        }
        let mut pairs = BTreeSet::new();
        for o in OPERATIONS {
            assert!(pairs.insert((o.path, o.method)), "{} {} twice", o.method, o.path);
        }
    }

    #[test]
    fn the_document_has_every_operation_and_every_reference_resolves() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.0.3");
        for o in OPERATIONS {
            let op = &doc["paths"][o.path][o.method];
            assert!(op.is_object(), "{} {} missing", o.method, o.path);
        }
        let documented: usize = doc["paths"].as_object().unwrap().values().map(|m| m.as_object().unwrap().len()).sum();
        assert_eq!(documented, OPERATIONS.len());
        let mut all = Vec::new();
        refs(doc, &mut all);
        for r in all {
            let path: Vec<&str> = r.trim_start_matches("#/").split('/').collect();
            let target = path.iter().fold(doc, |v, k| &v[*k]);
            assert!(target.is_object(), "dangling {r}");
        }
        let cluster = &doc["components"]["schemas"]["v1alpha1Cluster"]["properties"];
        assert_eq!(cluster["info"]["readOnly"], true);
        assert_eq!(cluster["server"]["type"], "string");
        assert_eq!(cluster["labels"]["additionalProperties"]["type"], "string");
        let tls = &doc["components"]["schemas"]["v1alpha1TLSClientConfig"]["properties"];
        assert_eq!(tls["keyData"], json!({"type": "string", "format": "byte", "writeOnly": true, "nullable": true}));
        let time = &doc["components"]["schemas"]["v1alpha1ConnectionState"]["properties"]["attemptedAt"];
        assert_eq!(time["format"], "date-time");
    }

    /// The router is built from the operation table alone: a route added beside it would be served
    /// without being documented.
    #[test]
    fn no_rest_route_is_added_outside_the_table() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let needle = concat!(".rou", "te(");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for (i, line) in text.lines().enumerate() {
                let routed = line.contains(needle) && !line.trim_start().starts_with("//");
                // The table's fold, gRPC's own List and Watch paths, this document, and the load
                // balancers' health check (not part of the API, as in Argo CD's document).
                let allowed = line.contains("o.path")
                    || line.contains("grpc::")
                    || line.contains("watch::WATCH_PATH")
                    || line.contains("DOCUMENT_PATH")
                    || line.contains("HEALTHZ_PATH");
                assert!(
                    !routed || allowed,
                    "{}:{}: a route outside the operation table: {line}",
                    path.display(),
                    i + 1
                );
            }
        }
    }
}

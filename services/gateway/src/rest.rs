//! `/api/v1/clusters` over REST with Argo CD's routes, query parameters and JSON.

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use corral_proto::cluster::{ClusterCreateRequest, ClusterId, ClusterQuery, ClusterUpdateRequest};

use crate::calls::{CallContext, Clusters};
use crate::error::{ApiError, payload_too_large};

#[derive(Clone)]
pub struct RestState {
    pub clusters: Clusters,
    pub max_body_bytes: usize,
}

pub fn router(state: RestState) -> Router {
    Router::new()
        .route("/api/v1/clusters", get(list).post(create))
        .route("/api/v1/clusters/{id}", get(get_one).put(update).delete(delete))
        .route("/api/v1/clusters/{id}/rotate-auth", post(rotate_auth))
        .route("/api/v1/clusters/{id}/invalidate-cache", post(invalidate_cache))
        .with_state(state)
}

/// Query parameters, keeping repeated keys (`updatedFields=a&updatedFields=b`).
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(raw: Option<String>) -> Params {
        Params(url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()).into_owned().collect())
    }

    fn first(&self, key: &str) -> String {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_default()
    }

    fn all(&self, key: &str) -> Vec<String> {
        // Argo CD clients send repeated keys; a comma-separated value is accepted too.
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .flat_map(|(_, v)| {
                v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect::<Vec<_>>()
            })
            .collect()
    }

    fn flag(&self, key: &str) -> Result<bool, ApiError> {
        let value = self.first(key);
        if value.is_empty() {
            return Ok(false);
        }
        parse_go_bool(&value)
            .ok_or_else(|| ApiError::invalid(format!("{key}: expected true or false, got \"{value}\"")))
    }

    fn query_for(&self, id_value: Option<String>) -> ClusterQuery {
        let id_value = id_value.unwrap_or_else(|| self.first("id.value"));
        let id_type = self.first("id.type");
        ClusterQuery {
            server: self.first("server"),
            name: self.first("name"),
            id: (!id_value.is_empty() || !id_type.is_empty()).then_some(ClusterId { r#type: id_type, value: id_value }),
            selector: self.first("selector"),
        }
    }
}

/// A boolean query parameter as grpc-gateway (Go's `strconv.ParseBool`) reads it: Argo CD's
/// generated Python client sends `upsert=True`.
pub fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, Response> {
    axum::body::to_bytes(body, limit).await.map_err(|_| payload_too_large(limit))
}

/// A cluster in Argo CD's JSON, or the error.
fn cluster_response(result: Result<corral_proto::v1alpha1::Cluster, ApiError>) -> Response {
    match result {
        Ok(c) => json(corral_api_json::cluster_to_json(&c)),
        Err(e) => e.into_response(),
    }
}

fn json(v: serde_json::Value) -> Response {
    axum::Json(v).into_response()
}

async fn list(State(s): State<RestState>, Extension(ctx): Extension<CallContext>, RawQuery(raw): RawQuery) -> Response {
    let p = Params::parse(raw);
    let mut q = p.query_for(None);
    // List filters by server and name; id is an alternative spelling of the same.
    if let Some(id) = q.id.take() {
        match id.r#type.as_str() {
            "name" if q.name.is_empty() => q.name = id.value,
            "name_escaped" if q.name.is_empty() => match corral_domain::unescape_name(&id.value) {
                Some(name) => q.name = name,
                None => return ApiError::invalid("id.value: invalid escaped name").into_response(),
            },
            _ if q.server.is_empty() => q.server = id.value,
            _ => {}
        }
    }
    match s.clusters.list(&ctx, q).await {
        Ok(l) => json(corral_api_json::cluster_list_to_json(&l)),
        Err(e) => e.into_response(),
    }
}

async fn create(
    State(s): State<RestState>,
    Extension(ctx): Extension<CallContext>,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Response {
    let p = Params::parse(raw);
    let bytes = match read_body(body, s.max_body_bytes).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let run = async {
        let upsert = p.flag("upsert")?;
        let cluster = corral_api_json::cluster_from_slice(&bytes).map_err(|e| ApiError::invalid(e.to_string()))?;
        s.clusters.create(&ctx, ClusterCreateRequest { cluster: Some(cluster), upsert }).await
    };
    cluster_response(run.await)
}

async fn get_one(
    State(s): State<RestState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = Params::parse(raw).query_for(Some(id));
    cluster_response(s.clusters.get(&ctx, q).await)
}

async fn update(
    State(s): State<RestState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Response {
    let p = Params::parse(raw);
    let bytes = match read_body(body, s.max_body_bytes).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let run = async {
        let parsed = corral_api_json::update_body_from_slice(&bytes).map_err(|e| ApiError::invalid(e.to_string()))?;
        let mut updated_fields = p.all("updatedFields");
        updated_fields.extend(parsed.updated_fields);
        let mut id_type = p.first("id.type");
        if id_type.is_empty()
            && let Some((t, _)) = &parsed.id
        {
            id_type = t.clone();
        }
        let req = ClusterUpdateRequest {
            cluster: Some(parsed.cluster),
            updated_fields,
            id: Some(ClusterId { r#type: id_type, value: id }),
        };
        s.clusters.update(&ctx, req).await
    };
    cluster_response(run.await)
}

async fn delete(
    State(s): State<RestState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = Params::parse(raw).query_for(Some(id));
    match s.clusters.delete(&ctx, q).await {
        Ok(()) => json(serde_json::json!({})),
        Err(e) => e.into_response(),
    }
}

async fn rotate_auth(
    State(s): State<RestState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = Params::parse(raw).query_for(Some(id));
    match s.clusters.rotate_auth(&ctx, q).await {
        Ok(()) => json(serde_json::json!({})),
        Err(e) => e.into_response(),
    }
}

async fn invalidate_cache(
    State(s): State<RestState>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = Params::parse(raw).query_for(Some(id));
    cluster_response(s.clusters.invalidate_cache(&ctx, q).await)
}

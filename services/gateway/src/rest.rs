//! `/api/v1/clusters` over REST with Argo CD's query parameters and JSON.

use axum::body::Body;
use axum::extract::{Extension, FromRequest, FromRequestParts, Path, Request, State};
use axum::response::{IntoResponse, Response};
use corral_proto::cluster::{ClusterCreateRequest, ClusterId, ClusterQuery, ClusterUpdateRequest};

use crate::calls::{CallContext, Clusters};
use crate::error::{ApiError, payload_too_large};
use crate::routes::RestState;

/// What the cluster handlers need; their routes are in [`crate::routes`].
#[derive(Clone)]
pub struct ClusterRest {
    pub clusters: Clusters,
    pub max_body_bytes: usize,
}

/// Query parameters, keeping repeated keys (`updatedFields=a&updatedFields=b`).
pub struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut http::request::Parts, _: &S) -> Result<Params, Self::Rejection> {
        let raw = parts.uri.query().unwrap_or_default();
        Ok(Params(url::form_urlencoded::parse(raw.as_bytes()).into_owned().collect()))
    }
}

impl Params {
    /// A parameter that holds one value: given twice, it is refused, as grpc-gateway refuses it
    /// ("too many values").
    pub(crate) fn one(&self, key: &str) -> Result<String, ApiError> {
        let mut values = self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| v);
        let first = values.next().cloned().unwrap_or_default();
        if values.next().is_some() {
            return Err(ApiError::invalid(format!("{key}: given more than once; it takes one value")));
        }
        Ok(first)
    }

    pub(crate) fn all(&self, key: &str) -> Vec<String> {
        // Argo CD clients send repeated keys; a comma-separated value is accepted too.
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .flat_map(|(_, v)| {
                v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect::<Vec<_>>()
            })
            .collect()
    }

    pub(crate) fn flag(&self, key: &str) -> Result<bool, ApiError> {
        let value = self.one(key)?;
        if value.is_empty() {
            return Ok(false);
        }
        parse_go_bool(&value)
            .ok_or_else(|| ApiError::invalid(format!("{key}: expected true or false, got \"{value}\"")))
    }

    fn query_for(&self, id_value: Option<String>) -> Result<ClusterQuery, ApiError> {
        let id_value = match id_value {
            Some(v) => v,
            None => self.one("id.value")?,
        };
        let id_type = self.one("id.type")?;
        Ok(ClusterQuery {
            server: self.one("server")?,
            name: self.one("name")?,
            id: (!id_value.is_empty() || !id_type.is_empty()).then_some(ClusterId { r#type: id_type, value: id_value }),
            selector: self.one("selector")?,
        })
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

/// A request body of at most the configured size (413 beyond it).
pub(crate) struct LimitedBody(pub bytes::Bytes);

impl FromRequest<RestState> for LimitedBody {
    type Rejection = Response;

    async fn from_request(req: Request, state: &RestState) -> Result<LimitedBody, Response> {
        let limit = state.clusters.max_body_bytes;
        let body: Body = req.into_body();
        axum::body::to_bytes(body, limit).await.map(LimitedBody).map_err(|_| payload_too_large(limit))
    }
}

fn json(v: serde_json::Value) -> Response {
    axum::Json(v).into_response()
}

fn cluster_json(c: &corral_proto::v1alpha1::Cluster) -> Response {
    json(corral_api_json::cluster_to_json(c))
}

pub(crate) async fn list(
    State(s): State<ClusterRest>,
    Extension(ctx): Extension<CallContext>,
    p: Params,
) -> Result<Response, ApiError> {
    let mut q = p.query_for(None)?;
    // List filters by server and name; id is an alternative spelling of the same.
    if let Some(id) = q.id.take() {
        match id.r#type.as_str() {
            "name" if q.name.is_empty() => q.name = id.value,
            "name_escaped" if q.name.is_empty() => {
                q.name = corral_domain::unescape_name(&id.value)
                    .ok_or_else(|| ApiError::invalid("id.value: invalid escaped name"))?;
            }
            "" | "server" if q.server.is_empty() => q.server = id.value,
            "" | "server" | "name" | "name_escaped" => {}
            other => {
                return Err(ApiError::invalid(format!(
                    "id.type: unknown cluster id type \"{other}\" (expected server, name or name_escaped)"
                )));
            }
        }
    }
    Ok(json(corral_api_json::cluster_list_to_json(&s.clusters.list(&ctx, q).await?)))
}

/// A command's answer, with its revision in the `X-Corral-Revision` header.
fn with_revision(mut response: Response, revision: u64) -> Response {
    if revision > 0 {
        response.headers_mut().insert(crate::calls::REVISION_HEADER, http::HeaderValue::from(revision));
    }
    response
}

pub(crate) async fn create(
    State(s): State<ClusterRest>,
    Extension(ctx): Extension<CallContext>,
    p: Params,
    LimitedBody(bytes): LimitedBody,
) -> Result<Response, ApiError> {
    let upsert = p.flag("upsert")?;
    let cluster = corral_api_json::cluster_from_slice(&bytes).map_err(|e| ApiError::invalid(e.to_string()))?;
    let w = s.clusters.create(&ctx, ClusterCreateRequest { cluster: Some(cluster), upsert }).await?;
    Ok(with_revision(cluster_json(&w.value), w.revision))
}

pub(crate) async fn get_one(
    State(s): State<ClusterRest>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
    p: Params,
) -> Result<Response, ApiError> {
    Ok(cluster_json(&s.clusters.get(&ctx, p.query_for(Some(id))?).await?))
}

pub(crate) async fn update(
    State(s): State<ClusterRest>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
    p: Params,
    LimitedBody(bytes): LimitedBody,
) -> Result<Response, ApiError> {
    let parsed = corral_api_json::update_body_from_slice(&bytes).map_err(|e| ApiError::invalid(e.to_string()))?;
    let mut updated_fields = p.all("updatedFields");
    updated_fields.extend(parsed.updated_fields);
    let mut id_type = p.one("id.type")?;
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
    let w = s.clusters.update(&ctx, req).await?;
    Ok(with_revision(cluster_json(&w.value), w.revision))
}

pub(crate) async fn delete(
    State(s): State<ClusterRest>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
    p: Params,
) -> Result<Response, ApiError> {
    let w = s.clusters.delete(&ctx, p.query_for(Some(id))?).await?;
    Ok(with_revision(json(serde_json::json!({})), w.revision))
}

pub(crate) async fn rotate_auth(
    State(s): State<ClusterRest>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
    p: Params,
) -> Result<Response, ApiError> {
    let w = s.clusters.rotate_auth(&ctx, p.query_for(Some(id))?).await?;
    Ok(with_revision(json(serde_json::json!({})), w.revision))
}

pub(crate) async fn invalidate_cache(
    State(s): State<ClusterRest>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
    p: Params,
) -> Result<Response, ApiError> {
    let w = s.clusters.invalidate_cache(&ctx, p.query_for(Some(id))?).await?;
    Ok(with_revision(cluster_json(&w.value), w.revision))
}

//! `version.VersionService` (what `argocd version` calls), over gRPC and REST: Argo CD's field
//! names filled with this build's facts. Anyone may ask; only a caller with a valid token learns
//! more than the version, as in Argo CD.

use corral_proto::version::VersionMessage;
use corral_proto::version::version_service_server::VersionService;
use tonic::{Request, Response, Status};

use crate::calls::CallContext;

/// `v0.1.0+1a2b3c4`, as Argo CD writes its own (`v2.9.3+6eba5be`).
pub fn version() -> String {
    let commit = env!("CORRAL_GIT_COMMIT");
    match commit.get(..7) {
        Some(short) => format!("v{}+{short}", env!("CARGO_PKG_VERSION")),
        None => format!("v{}", env!("CARGO_PKG_VERSION")),
    }
}

/// The whole message for a logged-in caller, the version alone for anyone else.
pub fn version_message(logged_in: bool) -> VersionMessage {
    if !logged_in {
        return VersionMessage { version: version(), ..Default::default() };
    }
    VersionMessage {
        version: version(),
        build_date: env!("CORRAL_BUILD_DATE").into(),
        git_commit: env!("CORRAL_GIT_COMMIT").into(),
        git_tag: env!("CORRAL_GIT_TAG").into(),
        git_tree_state: env!("CORRAL_GIT_TREE_STATE").into(),
        compiler: env!("CORRAL_COMPILER").into(),
        platform: env!("CORRAL_PLATFORM").into(),
        // Argo CD's Go version and the versions of the tools it shells out to (kustomize, helm,
        // kubectl, jsonnet) have no counterpart here and stay empty.
        extra_build_info: format!("corral {}", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    }
}

/// Argo CD's REST JSON for the version: its Go field names, empty fields left out.
pub fn version_json(v: &VersionMessage) -> serde_json::Value {
    let fields = [
        ("Version", &v.version),
        ("BuildDate", &v.build_date),
        ("GitCommit", &v.git_commit),
        ("GitTag", &v.git_tag),
        ("GitTreeState", &v.git_tree_state),
        ("GoVersion", &v.go_version),
        ("Compiler", &v.compiler),
        ("Platform", &v.platform),
        ("KustomizeVersion", &v.kustomize_version),
        ("HelmVersion", &v.helm_version),
        ("KubectlVersion", &v.kubectl_version),
        ("JsonnetVersion", &v.jsonnet_version),
        ("ExtraBuildInfo", &v.extra_build_info),
    ];
    let map = fields.into_iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.to_string(), serde_json::json!(v)));
    serde_json::Value::Object(map.collect())
}

pub(crate) async fn rest_version(
    axum::extract::Extension(ctx): axum::extract::Extension<CallContext>,
) -> axum::Json<serde_json::Value> {
    axum::Json(version_json(&version_message(ctx.principal.is_some())))
}

pub struct GrpcVersion;

#[tonic::async_trait]
impl VersionService for GrpcVersion {
    async fn version(&self, req: Request<()>) -> Result<Response<VersionMessage>, Status> {
        let logged_in = CallContext::of(&req).principal.is_some();
        Ok(Response::new(version_message(logged_in)))
    }
}

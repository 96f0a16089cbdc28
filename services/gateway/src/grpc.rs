//! `cluster.ClusterService` over gRPC.

use corral_proto::cluster::cluster_service_server::ClusterService;
use corral_proto::cluster::{ClusterCreateRequest, ClusterQuery, ClusterResponse, ClusterUpdateRequest};
use corral_proto::v1alpha1::{Cluster, ClusterList};
use tonic::{Request, Response, Status};

use crate::calls::{CallContext, Clusters, REVISION_HEADER, Written};

/// A command's answer, with its revision in the `x-corral-revision` metadata.
fn written<T, U>(w: Written<T>, into: impl FnOnce(T) -> U) -> Response<U> {
    let mut response = Response::new(into(w.value));
    if w.revision > 0 {
        response.metadata_mut().insert(REVISION_HEADER, w.revision.into());
    }
    response
}

pub struct GrpcClusters {
    pub clusters: Clusters,
}

#[tonic::async_trait]
impl ClusterService for GrpcClusters {
    /// The gateway's router sends List to [`EncodedListService`]; this serves any other router.
    async fn list(&self, req: Request<ClusterQuery>) -> Result<Response<ClusterList>, Status> {
        let c = CallContext::of(&req);
        Ok(Response::new(self.clusters.list(&c, req.into_inner()).await?))
    }

    async fn create(&self, req: Request<ClusterCreateRequest>) -> Result<Response<Cluster>, Status> {
        let c = CallContext::of(&req);
        Ok(written(self.clusters.create(&c, req.into_inner()).await?, |c| c))
    }

    async fn get(&self, req: Request<ClusterQuery>) -> Result<Response<Cluster>, Status> {
        let c = CallContext::of(&req);
        Ok(Response::new(self.clusters.get(&c, req.into_inner()).await?))
    }

    async fn update(&self, req: Request<ClusterUpdateRequest>) -> Result<Response<Cluster>, Status> {
        let c = CallContext::of(&req);
        Ok(written(self.clusters.update(&c, req.into_inner()).await?, |c| c))
    }

    async fn delete(&self, req: Request<ClusterQuery>) -> Result<Response<ClusterResponse>, Status> {
        let c = CallContext::of(&req);
        Ok(written(self.clusters.delete(&c, req.into_inner()).await?, |()| ClusterResponse {}))
    }

    async fn rotate_auth(&self, req: Request<ClusterQuery>) -> Result<Response<ClusterResponse>, Status> {
        let c = CallContext::of(&req);
        Ok(written(self.clusters.rotate_auth(&c, req.into_inner()).await?, |()| ClusterResponse {}))
    }

    async fn invalidate_cache(&self, req: Request<ClusterQuery>) -> Result<Response<Cluster>, Status> {
        let c = CallContext::of(&req);
        Ok(written(self.clusters.invalidate_cache(&c, req.into_inner()).await?, |c| c))
    }
}

/// `List` served with clusters encoded once per change of the fleet: the generated service
/// would encode every cluster again for every List. Same path, same bytes on the wire.
#[derive(Clone)]
pub struct EncodedListService {
    pub clusters: Clusters,
}

impl tonic::server::UnaryService<ClusterQuery> for EncodedListService {
    type Response = corral_cluster_model::EncodedList;
    type Future = futures::future::BoxFuture<'static, Result<Response<corral_cluster_model::EncodedList>, Status>>;

    fn call(&mut self, req: Request<ClusterQuery>) -> Self::Future {
        let clusters = self.clusters.clone();
        Box::pin(async move {
            let c = CallContext::of(&req);
            Ok(Response::new(clusters.list_encoded(&c, req.into_inner()).await?))
        })
    }
}

pub const LIST_PATH: &str = "/cluster.ClusterService/List";

/// Serves `LIST_PATH` with [`EncodedListService`].
pub async fn list(
    axum::extract::State((clusters, max_body_bytes)): axum::extract::State<(Clusters, usize)>,
    req: axum::extract::Request,
) -> axum::response::Response {
    let codec = tonic_prost::ProstCodec::<corral_cluster_model::EncodedList, ClusterQuery>::default();
    let mut grpc = tonic::server::Grpc::new(codec).apply_max_message_size_config(Some(max_body_bytes), None);
    grpc.unary(EncodedListService { clusters }, req).await.map(axum::body::Body::new)
}

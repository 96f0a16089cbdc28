//! `cluster.ClusterService` over gRPC.

use corral_proto::cluster::cluster_service_server::ClusterService;
use corral_proto::cluster::{ClusterCreateRequest, ClusterQuery, ClusterResponse, ClusterUpdateRequest};
use corral_proto::v1alpha1::{Cluster, ClusterList};
use tonic::{Request, Response, Status};

use crate::calls::{CallContext, Clusters};

pub struct GrpcClusters {
    pub clusters: Clusters,
}

#[tonic::async_trait]
impl ClusterService for GrpcClusters {
    async fn list(&self, req: Request<ClusterQuery>) -> Result<Response<ClusterList>, Status> {
        let c = CallContext::of(&req);
        Ok(Response::new(self.clusters.list(&c, req.into_inner()).await?))
    }

    async fn create(&self, req: Request<ClusterCreateRequest>) -> Result<Response<Cluster>, Status> {
        let c = CallContext::of(&req);
        Ok(Response::new(self.clusters.create(&c, req.into_inner()).await?))
    }

    async fn get(&self, req: Request<ClusterQuery>) -> Result<Response<Cluster>, Status> {
        let c = CallContext::of(&req);
        Ok(Response::new(self.clusters.get(&c, req.into_inner()).await?))
    }

    async fn update(&self, req: Request<ClusterUpdateRequest>) -> Result<Response<Cluster>, Status> {
        let c = CallContext::of(&req);
        Ok(Response::new(self.clusters.update(&c, req.into_inner()).await?))
    }

    async fn delete(&self, req: Request<ClusterQuery>) -> Result<Response<ClusterResponse>, Status> {
        let c = CallContext::of(&req);
        self.clusters.delete(&c, req.into_inner()).await?;
        Ok(Response::new(ClusterResponse {}))
    }

    async fn rotate_auth(&self, req: Request<ClusterQuery>) -> Result<Response<ClusterResponse>, Status> {
        let c = CallContext::of(&req);
        self.clusters.rotate_auth(&c, req.into_inner()).await?;
        Ok(Response::new(ClusterResponse {}))
    }

    async fn invalidate_cache(&self, req: Request<ClusterQuery>) -> Result<Response<Cluster>, Status> {
        let c = CallContext::of(&req);
        Ok(Response::new(self.clusters.invalidate_cache(&c, req.into_inner()).await?))
    }
}

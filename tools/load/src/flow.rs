//! A floor for Create: the messages one create sends through the deployment, with none of the
//! work. A stand-in gateway answers a gRPC Create with a NATS request to a stand-in registry,
//! which appends a name claim and then a cluster event, with the headers the registry's appends
//! carry, and replies with the cluster; two followers (ordered consumers, as the registry's
//! projection and the gateway's view) receive every appended message and drop it. Without the
//! claim, it shows what a create would cost if names did not have to be unique.
//!
//! Everything runs in this process, on one connection per stand-in as in the deployment, so the
//! figure is a lower bound: no switches between processes, no deciding, no sealing, no
//! projection written.

use std::net::SocketAddr;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use corral_proto::cluster::cluster_service_server::{ClusterService, ClusterServiceServer};
use corral_proto::cluster::{ClusterCreateRequest, ClusterQuery, ClusterResponse, ClusterUpdateRequest};
use corral_proto::registry::{Command, Reply, command, reply};
use corral_proto::v1alpha1::{Cluster, ClusterList};
use futures::StreamExt;
use prost::Message;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

const STREAM: &str = "LOADFLOW";
const COMMAND_SUBJECT: &str = "loadflowrpc.command";
/// A W3C trace context of the size the gateway sends on.
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The stand-ins, serving until dropped.
pub struct Flow {
    pub addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
    js: jetstream::Context,
}

impl Flow {
    /// Stops the stand-ins and removes their stream.
    pub async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = self.js.delete_stream(STREAM).await;
    }
}

/// A follower of the whole stream on `js`'s connection, dropping what it receives.
async fn follower(js: &jetstream::Context) -> anyhow::Result<JoinHandle<()>> {
    let stream = js.get_stream(STREAM).await?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    Ok(tokio::spawn(async move { while let Some(Ok(_)) = messages.next().await {} }))
}

/// One append as the registry makes it: message id, expected subject sequence, event type and
/// trace context in the headers.
async fn append(js: &jetstream::Context, subject: String, event_type: &str, payload: Vec<u8>) -> anyhow::Result<u64> {
    let mut headers = HeaderMap::new();
    headers.insert(corral_registry::codec::EVENT_TYPE_HEADER, event_type);
    headers.insert("traceparent", TRACEPARENT);
    headers.insert("Nats-Msg-Id", format!("{TRACEPARENT}:{subject}:1").as_str());
    headers.insert("Nats-Expected-Last-Subject-Sequence", "0");
    Ok(js.publish_with_headers(subject, headers, payload.into()).await?.await?.sequence)
}

/// The stand-in registry's answer to one command: claim, event, reply.
async fn handle(js: &jetstream::Context, payload: &[u8], with_claim: bool) -> anyhow::Result<Reply> {
    let command = Command::decode(payload)?;
    let Some(command::Kind::Create(ClusterCreateRequest { cluster: Some(cluster), .. })) = command.kind else {
        anyhow::bail!("not a create");
    };
    // Names in the load are subject tokens already (load-N).
    let name = cluster.name.clone();
    if with_claim {
        let claim = name.clone().into_bytes();
        append(js, format!("loadflow.names.{name}"), corral_registry::codec::CLUSTER_NAME_CLAIMED, claim).await?;
    }
    let revision =
        append(js, format!("loadflow.clusters.{name}"), corral_registry::codec::CLUSTER_REGISTERED, payload.to_vec())
            .await?;
    Ok(Reply { revision, result: Some(reply::Result::Cluster(cluster)), cluster_version: 1 })
}

async fn registry(
    client: async_nats::Client,
    js: jetstream::Context,
    with_claim: bool,
) -> anyhow::Result<JoinHandle<()>> {
    let mut requests = client.queue_subscribe(COMMAND_SUBJECT, "loadflow".into()).await?;
    Ok(tokio::spawn(async move {
        while let Some(msg) = requests.next().await {
            let Some(reply_to) = msg.reply.clone() else { continue };
            let (client, js) = (client.clone(), js.clone());
            tokio::spawn(async move {
                let reply = handle(&js, &msg.payload, with_claim).await.unwrap_or_else(|e| Reply {
                    revision: 0,
                    result: Some(reply::Result::Error(corral_proto::registry::Error {
                        code: tonic::Code::Internal as i32,
                        message: e.to_string(),
                    })),
                    cluster_version: 0,
                });
                let _ = client.publish(reply_to, reply.encode_to_vec().into()).await;
            });
        }
    }))
}

struct Gateway {
    nats: async_nats::Client,
}

#[tonic::async_trait]
impl ClusterService for Gateway {
    async fn create(&self, r: Request<ClusterCreateRequest>) -> Result<Response<Cluster>, Status> {
        let command = Command { context: None, kind: Some(command::Kind::Create(r.into_inner())), expected_version: 0 };
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", TRACEPARENT);
        let answer = self
            .nats
            .request_with_headers(COMMAND_SUBJECT, headers, command.encode_to_vec().into())
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        match Reply::decode(answer.payload.as_ref()).map_err(|e| Status::internal(e.to_string()))?.result {
            Some(reply::Result::Cluster(c)) => Ok(Response::new(c)),
            Some(reply::Result::Error(e)) => Err(Status::internal(e.message)),
            _ => Err(Status::internal("unexpected reply")),
        }
    }
    async fn list(&self, _: Request<ClusterQuery>) -> Result<Response<ClusterList>, Status> {
        Err(Status::unimplemented("create only"))
    }
    async fn get(&self, _: Request<ClusterQuery>) -> Result<Response<Cluster>, Status> {
        Err(Status::unimplemented("create only"))
    }
    async fn update(&self, _: Request<ClusterUpdateRequest>) -> Result<Response<Cluster>, Status> {
        Err(Status::unimplemented("create only"))
    }
    async fn delete(&self, _: Request<ClusterQuery>) -> Result<Response<ClusterResponse>, Status> {
        Err(Status::unimplemented("create only"))
    }
    async fn rotate_auth(&self, _: Request<ClusterQuery>) -> Result<Response<ClusterResponse>, Status> {
        Err(Status::unimplemented("create only"))
    }
    async fn invalidate_cache(&self, _: Request<ClusterQuery>) -> Result<Response<Cluster>, Status> {
        Err(Status::unimplemented("create only"))
    }
}

/// Starts the stand-ins on a fresh stream configured as the deployment's (file storage, a
/// two-minute duplicate window); with or without the name claim.
pub async fn start(nats_url: &str, with_claim: bool) -> anyhow::Result<Flow> {
    let registry_client = async_nats::connect(nats_url).await?;
    let gateway_client = async_nats::connect(nats_url).await?;
    let registry_js = jetstream::new(registry_client.clone());
    let gateway_js = jetstream::new(gateway_client.clone());
    let _ = registry_js.delete_stream(STREAM).await;
    registry_js
        .create_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec!["loadflow.>".into()],
            storage: stream::StorageType::File,
            duplicate_window: std::time::Duration::from_secs(120),
            allow_direct: true,
            ..Default::default()
        })
        .await?;
    let mut tasks = vec![follower(&registry_js).await?, follower(&gateway_js).await?];
    tasks.push(registry(registry_client, registry_js.clone(), with_claim).await?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tasks.push(tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(ClusterServiceServer::new(Gateway { nats: gateway_client }))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)))
            .await;
    }));
    Ok(Flow { addr, tasks, js: registry_js })
}

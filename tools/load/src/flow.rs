//! A floor for Create: the messages one create sends through the deployment, with none of the
//! work. A stand-in gateway answers a gRPC Create with a NATS request to a stand-in registry,
//! which appends a name claim and then a cluster event, with the headers the registry's appends
//! carry, and replies with the cluster; two followers (ordered consumers, as the registry's
//! projection and the gateway's view) receive every appended message and drop it. Without the
//! claim, it shows what a create would cost if names did not have to be unique.
//!
//! The stand-ins use the deployment's own pieces for what they keep: the NATS log (its appends
//! and ordered-consumer followers) and the request/reply of `corral-nats-rpc`. Everything runs
//! in this process, on one connection per stand-in as in the deployment, so the figure is a
//! lower bound: no switches between processes, no deciding, no sealing, no projection written.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use corral_event_log::{EventLog, NatsLog, NatsLogConfig, NewEvent};
use corral_proto::cluster::cluster_service_server::{ClusterService, ClusterServiceServer};
use corral_proto::cluster::{ClusterCreateRequest, ClusterQuery, ClusterResponse, ClusterUpdateRequest};
use corral_proto::registry::{Command, Reply, command, reply};
use corral_proto::v1alpha1::{Cluster, ClusterList};
use futures::{FutureExt as _, StreamExt as _};
use prost::Message;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

const STREAM: &str = "LOADFLOW";
/// The stand-in of the public stream of cluster changes (CORRAL_EVENTS).
const PUBLIC_STREAM: &str = "LOADFLOWPUBLIC";
const COMMAND_SUBJECT: &str = "loadflowrpc.command";
const TIMEOUT: Duration = Duration::from_secs(10);
/// A W3C trace context of the size the gateway sends on.
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The stand-ins, serving until stopped.
pub struct Flow {
    pub addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
    nats: async_nats::Client,
}

impl Flow {
    /// Stops the stand-ins and removes their stream.
    pub async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        let js = async_nats::jetstream::new(self.nats);
        let _ = js.delete_stream(STREAM).await;
        let _ = js.delete_stream(PUBLIC_STREAM).await;
    }
}

/// A follower of the whole stream, as a projection follows it, dropping what it receives.
async fn follower(log: &NatsLog) -> anyhow::Result<JoinHandle<()>> {
    let mut events = log.subscribe(0).await?;
    Ok(tokio::spawn(async move { while let Some(Ok(_)) = events.next().await {} }))
}

/// One event as the registry appends it: a de-duplication id, the subject's expected sequence
/// (new here), the event type and the trace context.
fn event(subject: String, event_type: &str, payload: Vec<u8>) -> NewEvent {
    let headers = vec![
        (corral_events::EVENT_TYPE_HEADER.to_string(), event_type.to_string()),
        ("traceparent".to_string(), TRACEPARENT.to_string()),
    ];
    let msg_id = format!("{TRACEPARENT}:{subject}:1");
    NewEvent { subject, msg_id, expected_subject_seq: Some(0), headers, payload: payload.into() }
}

/// The stand-in publisher: every cluster event of the log becomes one event on the public
/// stream, which a stand-in hub follows. As the registry's publisher does, everything already
/// delivered goes out in one append (at most 256 events), so the public stream keeps up with the
/// creates.
async fn publisher(log: &NatsLog, public: NatsLog) -> anyhow::Result<JoinHandle<()>> {
    const MAX_BATCH: usize = 256;
    let mut events = log.subscribe_matching(0, &["loadflow.clusters.>".to_string()]).await?;
    let announce = |e: &corral_event_log::RecordedEvent| {
        let name = e.subject.rsplit('.').next().unwrap_or_default().to_string();
        let mut announced = event(format!("loadflowpublic.{name}"), "registered", e.payload.to_vec());
        announced.expected_subject_seq = None;
        announced
    };
    Ok(tokio::spawn(async move {
        let mut last = 0;
        while let Some(Ok(e)) = events.next().await {
            let mut batch = vec![announce(&e)];
            while batch.len() < MAX_BATCH {
                match events.next().now_or_never() {
                    Some(Some(Ok(e))) => batch.push(announce(&e)),
                    _ => break,
                }
            }
            let count = batch.len() as u64;
            if public.append_expecting(last, batch).await.is_err() {
                return;
            }
            last += count;
        }
    }))
}

/// The stand-in registry's answer to one command: claim, event, reply; on a replicated stream
/// the claim and the event in one atomic batch, as the registry appends them there.
async fn handle(log: &NatsLog, payload: &[u8], with_claim: bool) -> anyhow::Result<Reply> {
    let command = Command::decode(payload)?;
    let Some(command::Kind::Create(ClusterCreateRequest { cluster: Some(cluster), .. })) = command.kind else {
        anyhow::bail!("not a create");
    };
    // Names in the load are subject tokens already (load-N).
    let name = cluster.name.clone();
    let registered =
        event(format!("loadflow.clusters.{name}"), corral_events::event_type::CLUSTER_REGISTERED, payload.to_vec());
    let mut events = Vec::new();
    if with_claim {
        let claim = name.clone().into_bytes();
        events.push(event(format!("loadflow.names.{name}"), corral_events::event_type::CLUSTER_NAME_CLAIMED, claim));
    }
    events.push(registered);
    let revision = if log.batches_are_cheap() {
        log.append_batch(events).await?.last().map(|o| o.seq).unwrap_or(0)
    } else {
        let mut seq = 0;
        for e in events {
            seq = log.append(e).await?.seq;
        }
        seq
    };
    Ok(Reply { revision, result: Some(reply::Result::Cluster(cluster)), cluster_version: 1 })
}

/// The stand-in registry, answering commands over NATS request/reply as the registry does.
fn registry(client: async_nats::Client, log: Arc<NatsLog>, with_claim: bool) -> JoinHandle<()> {
    let handle = move |_: usize, msg: async_nats::Message| {
        let log = log.clone();
        async move {
            let reply = handle(&log, &msg.payload, with_claim)
                .await
                .unwrap_or_else(|e| corral_service_api::error_reply(tonic::Code::Internal, e.to_string()));
            reply.encode_to_vec()
        }
    };
    tokio::spawn(async move {
        let served = corral_nats_rpc::serve(client, "loadflow", &[COMMAND_SUBJECT], handle, std::future::pending());
        if let Err(e) = served.await {
            eprintln!("stand-in registry: {e}");
        }
    })
}

struct Gateway {
    nats: async_nats::Client,
}

#[tonic::async_trait]
impl ClusterService for Gateway {
    async fn create(&self, r: Request<ClusterCreateRequest>) -> Result<Response<Cluster>, Status> {
        let command = Command { kind: Some(command::Kind::Create(r.into_inner())), ..Default::default() };
        let answer = corral_nats_rpc::request(&self.nats, COMMAND_SUBJECT, command.encode_to_vec(), TIMEOUT)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        match Reply::decode(answer.as_ref()).map_err(|e| Status::internal(e.to_string()))?.result {
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

/// Starts the stand-ins on a fresh stream made as the deployment's log makes its own, with
/// `replicas`; with or without the name claim; with `public`, also the public stream of
/// changes, its publisher and a hub following it.
pub async fn start(nats_url: &str, with_claim: bool, replicas: usize, public: bool) -> anyhow::Result<Flow> {
    let auth = corral_process::NatsAuthOptions::default();
    let connect = || corral_process::connect(nats_url, "corral-load", &auth);
    let registry_client = connect().await?;
    let gateway_client = connect().await?;
    let js = async_nats::jetstream::new(registry_client.clone());
    let _ = js.delete_stream(STREAM).await;
    let _ = js.delete_stream(PUBLIC_STREAM).await;
    let config = |stream: &str, subjects: &str| NatsLogConfig {
        stream: stream.into(),
        subjects: vec![subjects.into()],
        replicas,
        max_age: None,
    };
    let registry_log = Arc::new(NatsLog::new(registry_client.clone(), config(STREAM, "loadflow.>")).await?);
    let gateway_log = NatsLog::new(gateway_client.clone(), config(STREAM, "loadflow.>")).await?;
    let mut tasks = vec![follower(&registry_log).await?, follower(&gateway_log).await?];
    if public {
        let config = config(PUBLIC_STREAM, "loadflowpublic.>");
        let public_log = NatsLog::new(registry_client.clone(), config.clone()).await?;
        tasks.push(publisher(&registry_log, public_log).await?);
        tasks.push(follower(&NatsLog::new(gateway_client.clone(), config).await?).await?);
    }
    tasks.push(registry(registry_client.clone(), registry_log, with_claim));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tasks.push(tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(ClusterServiceServer::new(Gateway { nats: gateway_client }))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)))
            .await;
    }));
    Ok(Flow { addr, tasks, nats: registry_client })
}

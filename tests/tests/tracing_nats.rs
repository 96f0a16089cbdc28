//! The caller's trace context follows a request from the gateway through NATS into the registry
//! and into the events it appends.

mod common;

use common::DeploymentApi as _;

use corral_event_log::{EventLog, NatsLog};
use corral_proto::events::EventEnvelope;
use prost::Message;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_travels_from_the_gateway_into_the_events() {
    let d = common::Deployment::start(1, 1).await;
    let api = d.api(0).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let resp = api
        .http
        .post(api.url("/api/v1/clusters"))
        .header("content-type", "application/json")
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .body(json!({"server": "https://traced.example.com", "name": "traced"}).to_string())
        .send()
        .await
        .expect("send");
    assert!(resp.status().is_success());

    let client = d.client().await;
    let log = NatsLog::new(client, Default::default()).await.expect("log");
    let subject = format!("corral.cluster.{}", corral_domain::cluster_id("https://traced.example.com"));
    let events: Vec<_> = log.read(1, 1000).await.expect("read").into_iter().filter(|e| e.subject == subject).collect();
    assert_eq!(events.len(), 1);
    let header = events[0].headers.iter().find(|(k, _)| k == "traceparent").map(|(_, v)| v.clone()).unwrap_or_default();
    assert!(header.contains(trace_id), "NATS header carries the trace: {header:?}");
    let envelope = EventEnvelope::decode(events[0].payload.as_ref()).expect("envelope");
    assert!(envelope.traceparent.contains(trace_id), "envelope carries the trace: {:?}", envelope.traceparent);
    assert_eq!(envelope.event_type, "ClusterRegistered");
    assert_eq!(envelope.aggregate_version, 1);
    assert_eq!(envelope.schema_version, 1);
    assert!(!envelope.correlation_id.is_empty());
}

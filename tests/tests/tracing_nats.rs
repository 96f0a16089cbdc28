//! One trace for one request, across processes: the gateway and the registry on a real
//! nats-server export their spans over OTLP to a receiver the test runs; the caller's trace
//! context parents the gateway's server span, the NATS request carries it to the registry, the
//! registry's append carries it into the event, and the health probe's first probe of the new
//! cluster is linked to it. No exported span holds a secret.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::DeploymentApi as _;
use common::suite::b64;
use corral_event_log::{EventLog, NatsLog};
use corral_fake_kube::FakeKube;
use corral_proto::events::EventEnvelope;
use corral_test_harness::otlp::{CLIENT, CONSUMER, PRODUCER, Receiver, SERVER, Span};
use prost::Message;
use serde_json::json;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const CANARY_TOKEN: &str = "canary-bearer-token-7d3f";

fn find<'a>(spans: &'a [Span], service: &str, name: &str, kind: i32) -> Option<&'a Span> {
    spans.iter().find(|s| s.service == service && s.name == name && s.kind == kind && s.trace_id == TRACE_ID)
}

/// Whether `ancestor` is `span`'s parent, or its parent's, and so on, within one trace.
fn descends(spans: &[Span], span: &Span, ancestor: &Span) -> bool {
    let by_id: BTreeMap<&str, &Span> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let mut at = span;
    while let Some(parent) = by_id.get(at.parent_span_id.as_str()) {
        if parent.span_id == ancestor.span_id {
            return true;
        }
        at = parent;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_a_create_across_the_gateway_nats_the_registry_and_the_probe() {
    let receiver = Receiver::start().await.expect("OTLP receiver");
    let endpoint = receiver.endpoint();
    // Spans are sent in batches; a short delay keeps the test short.
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "200")];
    let d = common::Deployment::start_with(1, 1, None, &env).await;
    let _probe = d.spawn_health_probe(60.0, 2.0).await;
    let api = d.api(0).await;
    let fake = FakeKube::start(&[CANARY_TOKEN]).await;
    let server = fake.url();
    let resp = api
        .http
        .post(api.url("/api/v1/clusters"))
        .header("content-type", "application/json")
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .body(
            json!({"server": server, "name": "traced",
                "config": {"bearerToken": CANARY_TOKEN, "tlsClientConfig": {"caData": b64(fake.ca_pem())}}})
            .to_string(),
        )
        .send()
        .await
        .expect("send");
    assert!(resp.status().is_success());

    // Every piece arrives within a few batches.
    let started = Instant::now();
    let spans = loop {
        let spans = receiver.spans();
        let probed =
            spans.iter().any(|s| s.service == "corral-health-probe" && s.links.iter().any(|(t, _)| t == TRACE_ID));
        let appended = find(&spans, "corral-registry", "send CORRAL", PRODUCER).is_some();
        let served = find(&spans, "corral-gateway", "POST /api/v1/clusters", SERVER).is_some()
            && find(&spans, "corral-gateway", "send corralrpc.registry.command", CLIENT).is_some();
        // Each process sends its own batches: all of them must have come.
        if probed && appended && served {
            break spans;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the trace is incomplete: {spans:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let server_span = find(&spans, "corral-gateway", "POST /api/v1/clusters", SERVER).expect("the gateway's span");
    assert_eq!(server_span.parent_span_id, CALLER_SPAN, "a child of the caller's span");
    assert_eq!(server_span.attributes.get("http.route").map(String::as_str), Some("/api/v1/clusters"));
    // An integer, as OpenTelemetry's conventions type it, not the text "200".
    assert_eq!(server_span.ints.get("http.response.status_code"), Some(&200), "{server_span:#?}");
    assert!(!server_span.attributes.contains_key("target"), "no Rust module path: {server_span:#?}");
    assert_eq!(server_span.attributes.get("http.request.method").map(String::as_str), Some("POST"));
    let request = find(&spans, "corral-gateway", "send corralrpc.registry.command", CLIENT).expect("the NATS request");
    assert!(descends(&spans, request, server_span), "the request is made inside the server span");
    assert_eq!(request.attributes.get("messaging.system").map(String::as_str), Some("nats"));
    let process =
        find(&spans, "corral-registry", "process corralrpc.registry.command", CONSUMER).expect("the registry's span");
    assert_eq!(process.parent_span_id, request.span_id, "parented across the NATS hop");
    assert_eq!(
        process.attributes.get("messaging.consumer.group.name").map(String::as_str),
        Some("corral-registry"),
        "{process:#?}"
    );
    // What the command was and the revision it made, on the span it was answered in.
    assert_eq!(process.attributes.get("corral.command").map(String::as_str), Some("create"), "{process:#?}");
    assert!(process.attributes.get("corral.correlation_id").is_some_and(|c| !c.is_empty()), "{process:#?}");
    assert!(process.ints.get("corral.revision").is_some_and(|r| *r > 0), "{process:#?}");
    // The name claim and the cluster's event (one atomic batch on three replicas, two appends here).
    let appends: Vec<&Span> = spans
        .iter()
        .filter(|s| {
            s.service == "corral-registry" && s.name == "send CORRAL" && s.kind == PRODUCER && s.trace_id == TRACE_ID
        })
        .collect();
    assert!(
        !appends.is_empty() && appends.iter().all(|a| descends(&spans, a, process)),
        "appends made while processing the command"
    );

    // The event carries the trace: the append's context in its headers, the command's in its
    // envelope.
    let log = NatsLog::new(d.client().await, Default::default()).await.expect("log");
    let subject = format!("corral.cluster.{}", corral_domain::cluster_id(&server));
    let events: Vec<_> = log.read(1, 1000).await.expect("read").into_iter().filter(|e| e.subject == subject).collect();
    let header = events[0].headers.iter().find(|(k, _)| k == "traceparent").map(|(_, v)| v.clone()).unwrap_or_default();
    let append = appends
        .iter()
        .find(|a| header == format!("00-{TRACE_ID}-{}-01", a.span_id))
        .unwrap_or_else(|| panic!("the event's traceparent {header:?} names none of the appends {appends:#?}"));
    let envelope = EventEnvelope::decode(events[0].payload.as_ref()).expect("envelope");
    assert!(envelope.traceparent.contains(TRACE_ID), "{:?}", envelope.traceparent);

    // The probe of the new cluster is linked to the append that registered it.
    let probe = spans
        .iter()
        .find(|s| s.service == "corral-health-probe" && s.name == "probe cluster")
        .expect("the probe's span");
    assert!(probe.links.contains(&(TRACE_ID.to_string(), append.span_id.clone())), "{probe:#?}");
    // The registry's projection applied it in a span linked to the append too, which says how
    // many events it applied, as an integer.
    let applied = spans
        .iter()
        .find(|s| {
            s.service == "corral-registry"
                && s.kind == CONSUMER
                && s.links.contains(&(TRACE_ID.to_string(), append.span_id.clone()))
        })
        .expect("no consumer span of the registry links to the append");
    assert!(applied.ints.get("messaging.batch.message_count").is_some_and(|n| *n >= 1), "{applied:#?}");

    // A gRPC call's server span is named for its method, with the RPC attributes.
    let mut grpc = api.grpc.clone();
    grpc.list(corral_proto::cluster::ClusterQuery::default()).await.expect("list");
    let started = Instant::now();
    let list = loop {
        let all = receiver.spans();
        if let Some(s) = all.iter().find(|s| s.service == "corral-gateway" && s.name == "cluster.ClusterService/List") {
            break s.clone();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no span for the gRPC List");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(list.kind, SERVER);
    let attr = |k: &str| list.attributes.get(k).map(String::as_str);
    assert_eq!(
        (attr("rpc.system"), attr("rpc.service"), attr("rpc.method")),
        (Some("grpc"), Some("cluster.ClusterService"), Some("List"))
    );
    assert_eq!(list.ints.get("rpc.grpc.status_code"), Some(&0), "{list:#?}");

    // A process that stops sends the spans it still holds: a gateway that would send its batch
    // only after ten minutes, asked for its version and stopped.
    let (mut lazy, lazy_addr) = d
        .spawn_gateway_with(&[("OTEL_BSP_SCHEDULE_DELAY", "600000"), ("OTEL_SERVICE_NAME", "corral-gateway-stopped")])
        .await;
    let version = reqwest::get(format!("http://{lazy_addr}/api/version")).await.expect("version");
    assert_eq!(version.status().as_u16(), 200);
    lazy.terminate().await;
    let started = Instant::now();
    while !receiver.spans().iter().any(|s| s.service == "corral-gateway-stopped" && s.name == "GET /api/version") {
        assert!(started.elapsed() < Duration::from_secs(10), "the stopped gateway's spans were not sent");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // No span, attribute or span event holds the cluster's token or the admin's password (every
    // span of the run, the logins' included).
    let spans = receiver.spans();
    for secret in [CANARY_TOKEN, common::ADMIN_PASSWORD] {
        let leaked: Vec<_> = spans.iter().filter(|s| format!("{s:?}").contains(secret)).collect();
        assert!(leaked.is_empty(), "spans hold a secret: {leaked:#?}");
    }
    println!("{} spans exported; none holds the token", spans.len());
}

//! What exporting every span costs: Create and Get through a gateway whose deployment exports
//! nothing, and through one whose deployment (its own nats-server and registry) samples every
//! trace and exports it over OTLP, in turns so that both see the same machine; and the OTLP
//! receiver the traced deployment exports to (`--otlp-sink`), which counts the spans.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use corral_proto::cluster::ClusterCreateRequest;

use crate::{BearerToken, Client, Stats, clients, cluster, drive, report, run_get_from, us};

/// What the benchmark's receiver reads of an OTLP trace export (OTLP's own field numbers):
/// each resource's attributes, for its `service.name`, and each span's name. Every other field
/// is skipped unread, so the receiver, which here shares the cores of what it measures (a
/// collector runs elsewhere in production), spends as little of them as a receiver can.
mod lean {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Export {
        #[prost(message, repeated, tag = "1")]
        pub resource_spans: Vec<ResourceSpans>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceSpans {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_spans: Vec<ScopeSpans>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }
    /// Only the string of OTLP's `AnyValue` (its field 1).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(string, tag = "1")]
        pub string_value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeSpans {
        #[prost(message, repeated, tag = "2")]
        pub spans: Vec<Span>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(string, tag = "5")]
        pub name: String,
    }
    /// `ExportTraceServiceResponse` without a partial success: no field at all.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Accepted {}
}

/// Spans received, by (service, span name).
type Counts = Arc<std::sync::Mutex<BTreeMap<(String, String), u64>>>;

/// The receiver's one method: counts an export's spans.
struct CountSpans(Counts);

impl tonic::server::UnaryService<lean::Export> for CountSpans {
    type Response = lean::Accepted;
    type Future = std::future::Ready<Result<tonic::Response<lean::Accepted>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<lean::Export>) -> Self::Future {
        let mut here: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        let export = request.into_inner();
        for resource_spans in &export.resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .map_or("", |v| v.string_value.as_str());
            for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
                *here.entry((service, span.name.as_str())).or_default() += 1;
            }
        }
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for ((service, name), n) in here {
            *counts.entry((service.to_string(), name.to_string())).or_default() += n;
        }
        std::future::ready(Ok(tonic::Response::new(lean::Accepted {})))
    }
}

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

async fn export(
    axum::extract::State(counts): axum::extract::State<Counts>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let codec = tonic_prost::ProstCodec::<lean::Accepted, lean::Export>::default();
    // An exporter's batch of 512 spans is well under this.
    let mut grpc = tonic::server::Grpc::new(codec).apply_max_message_size_config(Some(64 << 20), None);
    grpc.unary(CountSpans(counts), request).await.map(axum::body::Body::new)
}

/// Serves OTLP trace exports on `listener`, counting their spans, until the task is aborted.
fn serve_sink(listener: tokio::net::TcpListener) -> (Counts, tokio::task::JoinHandle<std::io::Result<()>>) {
    let counts = Counts::default();
    let app = axum::Router::new().route(EXPORT_PATH, axum::routing::post(export)).with_state(counts.clone());
    (counts, tokio::spawn(async move { axum::serve(listener, app).await }))
}

/// Runs an OTLP trace receiver on `addr` until SIGTERM or Ctrl-C, then prints how many spans
/// came, by service and name, and in all.
pub async fn sink(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    // The same line as the services', so that the scripts find the address the same way.
    println!("otlp sink listening on {}", listener.local_addr()?);
    let (counts, serving) = serve_sink(listener);
    // Not a graceful shutdown: the exporters' connections stay open as long as the services run.
    corral_telemetry::shutdown_signal().await;
    serving.abort();
    let counts = counts.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for ((service, name), n) in &counts {
        println!("otlp sink: {n} spans named {name:?} from {service:?}");
    }
    println!("otlp sink: {} spans received", counts.values().sum::<u64>());
    Ok(())
}

const ROUNDS: usize = 3;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The median, over turns, of each turn's cost (traced against the untraced turn just before).
fn summary(what: &str, plain: &[Stats], traced: &[Stats]) {
    let mut costs: Vec<f64> = plain
        .iter()
        .zip(traced)
        .map(|(p, t)| (us(t.pct(0.5)) - us(p.pct(0.5))) / us(p.pct(0.5)).max(0.001) * 100.0)
        .collect();
    let turns = costs.iter().map(|c| format!("{c:+.1}%")).collect::<Vec<_>>().join(", ");
    let mut p: Vec<f64> = plain.iter().map(|s| us(s.pct(0.5))).collect();
    let mut t: Vec<f64> = traced.iter().map(|s| us(s.pct(0.5))).collect();
    println!(
        "tracing on ({what}): p50 {:.1}us -> {:.1}us (medians); turn by turn {turns}: median {:+.1}% of p50",
        median(&mut p),
        median(&mut t),
        median(&mut costs)
    );
}

async fn creates(name: String, gw: Arc<Vec<Client>>, clients: usize, first: usize, count: usize) -> Stats {
    drive(&name, clients, Some(count), 0, move |i| {
        let mut g = gw[i % gw.len()].clone();
        async move { g.create(ClusterCreateRequest { cluster: Some(cluster(first + i)), upsert: false }).await.is_ok() }
    })
    .await
}

/// Create and Get, with `c` clients and with one, in turns: `creates_per_turn` creates a turn
/// with `c` clients, a tenth of that with one (where nothing queues, so what tracing adds to a
/// create's own path shows without the cores' saturation).
pub async fn measure(
    plain_addr: SocketAddr,
    traced_addr: SocketAddr,
    c: usize,
    seconds: u64,
    creates_per_turn: usize,
) -> anyhow::Result<()> {
    let plain = Arc::new(clients(plain_addr, c, BearerToken::default()).await?);
    let traced = Arc::new(clients(traced_addr, c, BearerToken::default()).await?);
    // Each deployment gets the same clusters, numbered from an offset of this run's own.
    let base = std::process::id() as usize * 100_000;
    let mut next = base;
    for (clients, count) in [(c, creates_per_turn), (1, (creates_per_turn / 10).max(1))] {
        let (mut plain_creates, mut traced_creates) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let name = |side: &str| format!("Create, {side}, {clients} client(s) #{round}");
            let p = creates(name("no tracing"), plain.clone(), clients, next, count).await;
            let t = creates(name("traced"), traced.clone(), clients, next, count).await;
            next += count;
            report(&p, None);
            report(&t, None);
            plain_creates.push(p);
            traced_creates.push(t);
        }
        summary(&format!("Create, {clients} client(s)"), &plain_creates, &traced_creates);
    }
    let registered = next - base;
    for clients in [c, 1] {
        let (mut plain_gets, mut traced_gets) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let name = |side: &str| format!("Get, {side}, {clients} client(s) #{round}");
            let p = run_get_from(&name("no tracing"), plain.clone(), clients, base, registered, seconds).await;
            let t = run_get_from(&name("traced"), traced.clone(), clients, base, registered, seconds).await;
            report(&p, None);
            report(&t, None);
            plain_gets.push(p);
            traced_gets.push(t);
        }
        summary(&format!("Get, {clients} client(s)"), &plain_gets, &traced_gets);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span};

    fn attribute(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }) }
    }

    fn resource_spans(service: &str, names: &[&str]) -> ResourceSpans {
        let spans = names
            .iter()
            .map(|name| Span {
                trace_id: vec![1; 16],
                span_id: vec![2; 8],
                name: name.to_string(),
                kind: 2,
                attributes: vec![
                    attribute("http.response.status_code", any_value::Value::IntValue(200)),
                    attribute("http.route", any_value::Value::StringValue("/api/v1/clusters".into())),
                ],
                links: vec![span::Link { trace_id: vec![3; 16], span_id: vec![4; 8], ..Default::default() }],
                ..Default::default()
            })
            .collect();
        ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    attribute("telemetry.sdk.language", any_value::Value::StringValue("rust".into())),
                    attribute("process.pid", any_value::Value::IntValue(7)),
                    attribute("service.name", any_value::Value::StringValue(service.into())),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn the_sink_counts_what_an_otlp_client_exports_by_service_and_name() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (counts, serving) = super::serve_sink(listener);
        let mut client = TraceServiceClient::connect(format!("http://{addr}")).await.expect("connect");
        for _ in 0..2 {
            let request = ExportTraceServiceRequest {
                resource_spans: vec![
                    resource_spans("corral-gateway", &["GET /api/v1/clusters", "GET /api/v1/clusters", "send CORRAL"]),
                    resource_spans("corral-registry", &["send CORRAL"]),
                ],
            };
            let accepted = client.export(request).await.expect("export").into_inner();
            assert!(accepted.partial_success.is_none());
        }
        serving.abort();
        let counts = counts.lock().expect("counts").clone();
        let count = |service: &str, name: &str| counts.get(&(service.to_string(), name.to_string())).copied();
        assert_eq!(count("corral-gateway", "GET /api/v1/clusters"), Some(4));
        assert_eq!(count("corral-gateway", "send CORRAL"), Some(2));
        assert_eq!(count("corral-registry", "send CORRAL"), Some(2));
        assert_eq!(counts.len(), 3, "{counts:?}");
    }
}

//! W3C trace context across processes, with OpenTelemetry's propagator: taken from HTTP and
//! gRPC requests and from NATS messages, put into the NATS messages a process sends (requests
//! and appended events). Header names are lower-case (`traceparent`, `tracestate`), as the W3C
//! specification writes them: NATS header names are case-sensitive.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry::{Context, global};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process exports spans: work that only feeds spans (links) is skipped otherwise.
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

pub(crate) fn set_exporting() {
    EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// A NATS message's headers as a carrier of trace context.
struct NatsHeaders<'a>(&'a mut async_nats::HeaderMap);

// An empty value (the propagator always writes `tracestate`, empty when no vendor set one) is
// not sent: W3C trace context makes an empty tracestate the same as none, and every message and
// every delivery of a stored event would carry it.
impl Injector for NatsHeaders<'_> {
    fn set(&mut self, key: &str, value: String) {
        if !value.is_empty() {
            self.0.insert(key, value.as_str());
        }
    }
}

struct NatsHeadersRef<'a>(&'a async_nats::HeaderMap);

impl Extractor for NatsHeadersRef<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

struct HttpHeaders<'a>(&'a http::HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Header pairs (an event's) as a carrier.
struct Pairs<'a>(&'a mut Vec<(String, String)>);

impl Injector for Pairs<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.retain(|(k, _)| k != key);
        if !value.is_empty() {
            self.0.push((key.to_string(), value));
        }
    }
}

struct PairsRef<'a>(&'a [(String, String)]);

impl Extractor for PairsRef<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

fn with_propagator<T>(f: impl FnOnce(&dyn TextMapPropagator) -> T) -> T {
    let mut f = Some(f);
    global::get_text_map_propagator(|p| f.take().map(|f| f(p)))
        .unwrap_or_else(|| unreachable!("the propagator is asked once"))
}

/// The context a caller sent in an HTTP or gRPC request's headers (empty if none, or if this
/// process makes no spans to put under it).
pub fn from_http(headers: &http::HeaderMap) -> Context {
    if !exporting() {
        return Context::new();
    }
    with_propagator(|p| p.extract(&HttpHeaders(headers)))
}

/// The context a NATS message carries (empty if none).
pub fn from_nats(headers: Option<&async_nats::HeaderMap>) -> Context {
    match headers {
        Some(h) => with_propagator(|p| p.extract(&NatsHeadersRef(h))),
        None => Context::new(),
    }
}

/// The context in an event's headers (empty if none).
pub fn from_pairs(headers: &[(String, String)]) -> Context {
    with_propagator(|p| p.extract(&PairsRef(headers)))
}

/// Puts `span`'s context into a NATS message's headers. Nothing without tracing.
pub fn inject_nats(span: &tracing::Span, headers: &mut async_nats::HeaderMap) {
    if !exporting() {
        return;
    }
    let cx = span.context();
    with_propagator(|p| p.inject_context(&cx, &mut NatsHeaders(headers)));
}

/// Puts `span`'s context into an event's headers, replacing what they had.
fn inject_pairs(span: &tracing::Span, headers: &mut Vec<(String, String)>) {
    let cx = span.context();
    with_propagator(|p| p.inject_context(&cx, &mut Pairs(headers)));
}

/// The current span's context as a W3C `traceparent`; empty without tracing.
pub fn current_traceparent() -> String {
    if !exporting() {
        return String::new();
    }
    let mut pairs = Vec::new();
    inject_pairs(&tracing::Span::current(), &mut pairs);
    pairs.into_iter().find(|(k, _)| k == "traceparent").map(|(_, v)| v).unwrap_or_default()
}

/// A count or a sequence number as a span field: tracing-opentelemetry records an unsigned
/// integer as text (through `Debug`), where OpenTelemetry's conventions type such attributes
/// (`messaging.batch.message_count`, `http.response.status_code`) as integers; a signed one it
/// records as an integer.
pub fn int(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// Makes `span` a child of `parent` when `parent` holds a remote span (a caller's), else leaves
/// it where it is.
pub fn set_parent(span: &tracing::Span, parent: Context) {
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// Links `span` to the span `origin` names, if it names one.
pub fn add_link(span: &tracing::Span, origin: &Context) {
    let linked = origin.span().span_context().clone();
    if linked.is_valid() {
        span.add_link(linked);
    }
}

/// Sets an attribute on `span`'s OpenTelemetry span, when this process exports spans: what a
/// handler learns is put on the span it runs in rather than on a span of its own.
pub fn set_attribute(span: &tracing::Span, key: &'static str, value: impl Into<opentelemetry::Value>) {
    if exporting() {
        span.set_attribute(key, value);
    }
}

/// Renames `span` (its OpenTelemetry name; a name recorded into `otel.name` once the span has
/// started is not taken): a server span is named for the route, known only once it matched.
pub fn rename(span: &tracing::Span, name: impl FnOnce() -> String) {
    if exporting() {
        span.context().span().update_name(name());
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::propagation::TextMapPropagator as _;
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState};
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    use super::{NatsHeaders, Pairs};

    /// A sampled remote span with no vendor state: the propagator writes its `traceparent` and
    /// an empty `tracestate`.
    fn context() -> opentelemetry::Context {
        let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("trace id");
        let span_id = SpanId::from_hex("00f067aa0ba902b7").expect("span id");
        opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ))
    }

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn an_empty_tracestate_goes_into_no_nats_message() {
        let mut headers = async_nats::HeaderMap::new();
        TraceContextPropagator::new().inject_context(&context(), &mut NatsHeaders(&mut headers));
        assert_eq!(headers.get("traceparent").map(|v| v.as_str()), Some(TRACEPARENT));
        assert!(headers.get("tracestate").is_none(), "{headers:?}");
    }

    #[test]
    fn an_empty_tracestate_goes_into_no_event_and_replaces_an_old_one() {
        let mut pairs = vec![("tracestate".to_string(), "vendor=old".to_string())];
        TraceContextPropagator::new().inject_context(&context(), &mut Pairs(&mut pairs));
        assert_eq!(pairs, vec![("traceparent".to_string(), TRACEPARENT.to_string())]);
    }
}

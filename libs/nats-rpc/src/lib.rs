//! Request/reply between services over NATS. The replicas of a service subscribe in one queue
//! group, so each request reaches exactly one of them; callers wait a bounded time for the
//! answer. Request subjects lie outside the event stream's, so requests are never stored.
//!
//! Each request is a client span whose context travels in the message's headers; the replica
//! that answers processes it in a consumer span, its child (OpenTelemetry's messaging
//! conventions, `messaging.system = nats`).

use std::future::Future;
use std::time::Duration;

use async_nats::{HeaderMap, Message};
use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::SelectAll;
use tracing::Instrument as _;

/// Answers requests on `subjects` in `queue_group` until `shutdown` resolves. `handle` gets the
/// index in `subjects` of the subject a request came on and the request, and returns the reply's
/// payload; requests are handled concurrently. A request without a reply subject is dropped.
pub async fn serve<F, Fut>(
    client: async_nats::Client,
    queue_group: &str,
    subjects: &[&'static str],
    handle: F,
    shutdown: impl Future<Output = ()>,
) -> Result<(), async_nats::SubscribeError>
where
    F: Fn(usize, Message) -> Fut,
    Fut: Future<Output = Vec<u8>> + Send + 'static,
{
    let mut requests = SelectAll::new();
    for (i, subject) in subjects.iter().enumerate() {
        let subscriber = client.queue_subscribe(*subject, queue_group.to_string()).await?;
        requests.push(subscriber.map(move |m| (i, m)));
    }
    tokio::pin!(shutdown);
    loop {
        let (i, msg) = tokio::select! {
            _ = &mut shutdown => break,
            Some(r) = requests.next() => r,
            else => break,
        };
        let Some(reply_to) = msg.reply.clone() else { continue };
        let span = tracing::info_span!(
            "process",
            otel.name = %format_args!("process {}", subjects[i]),
            otel.kind = "consumer",
            messaging.system = "nats",
            messaging.operation.type = "process",
            messaging.destination.name = subjects[i],
            messaging.consumer.group.name = queue_group,
        );
        corral_telemetry::trace::set_parent(&span, corral_telemetry::trace::from_nats(msg.headers.as_ref()));
        let answer = handle(i, msg).instrument(span);
        let client = client.clone();
        tokio::spawn(async move {
            let reply = answer.await;
            if let Err(e) = client.publish(reply_to, reply.into()).await {
                tracing::warn!(error = %e, "could not send a reply");
            }
        });
    }
    for subscriber in requests.iter_mut() {
        let _ = subscriber.get_mut().unsubscribe().await;
    }
    Ok(())
}

/// Sends a request to whichever replica serves `subject` and waits at most `timeout` for the
/// reply's payload, in a client span whose W3C trace context the message carries.
///
/// While no replica is subscribed the request is sent again for up to [`NO_RESPONDERS_PATIENCE`]
/// (within `timeout`): a replica that has just started, or moved to another node, is known to the
/// caller's server a moment after it subscribed, and a message nobody received is safe to send
/// twice. A service with no replica at all is reported after that, not after the whole timeout.
pub async fn request(
    client: &async_nats::Client,
    subject: &'static str,
    payload: Vec<u8>,
    timeout: Duration,
) -> Result<Bytes, async_nats::RequestError> {
    let span = tracing::info_span!(
        "send",
        otel.name = %format_args!("send {subject}"),
        otel.kind = "client",
        messaging.system = "nats",
        messaging.operation.type = "send",
        messaging.operation.name = "request",
        messaging.destination.name = subject,
    );
    let mut headers = HeaderMap::new();
    corral_telemetry::trace::inject_nats(&span, &mut headers);
    let headers = (!headers.is_empty()).then_some(headers);
    send(client, subject, Bytes::from(payload), headers, timeout).instrument(span).await
}

async fn send(
    client: &async_nats::Client,
    subject: &'static str,
    payload: Bytes,
    headers: Option<HeaderMap>,
    timeout: Duration,
) -> Result<Bytes, async_nats::RequestError> {
    let started = tokio::time::Instant::now();
    let deadline = started + timeout;
    let patience = started + timeout.min(NO_RESPONDERS_PATIENCE);
    let mut pause = NO_RESPONDERS_FIRST_PAUSE;
    loop {
        let now = tokio::time::Instant::now();
        let left = deadline.saturating_duration_since(now);
        let mut request = async_nats::Request::new().payload(payload.clone()).timeout(Some(left));
        if let Some(h) = &headers {
            request = request.headers(h.clone());
        }
        match client.send_request(subject, request).await {
            Ok(reply) => return Ok(reply.payload),
            Err(e)
                if e.kind() == async_nats::RequestErrorKind::NoResponders
                    && patience.saturating_duration_since(now) > pause =>
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(NO_RESPONDERS_MAX_PAUSE);
            }
            Err(e) => return Err(e),
        }
    }
}

/// How long a request waits for a replica to subscribe.
pub const NO_RESPONDERS_PATIENCE: Duration = Duration::from_secs(3);
const NO_RESPONDERS_FIRST_PAUSE: Duration = Duration::from_millis(20);
const NO_RESPONDERS_MAX_PAUSE: Duration = Duration::from_millis(500);

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    const ECHO: &str = "corralrpc.test.echo";
    const SHOUT: &str = "corralrpc.test.shout";

    async fn start_replica(
        url: &str,
        name: &'static str,
    ) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let client = async_nats::connect(url).await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let handle = move |subject: usize, msg: Message| async move {
                let traceparent =
                    msg.headers.as_ref().and_then(|h| h.get("traceparent")).map(|v| v.to_string()).unwrap_or_default();
                let body = String::from_utf8_lossy(&msg.payload).into_owned();
                let body = if subject == 1 { body.to_uppercase() } else { body };
                format!("{name}|{body}|{traceparent}").into_bytes()
            };
            let shutdown = async {
                let _ = ready_tx.send(());
                let _ = stopped.await;
            };
            serve(client, "test-group", &[ECHO, SHOUT], handle, shutdown).await.unwrap();
        });
        ready.await.unwrap();
        (stop, task)
    }

    /// Sends requests until `done` accepts an outcome; the server learns of (un)subscriptions
    /// made on other connections a moment later.
    async fn until<T>(
        client: &async_nats::Client,
        mut done: impl FnMut(Result<Bytes, async_nats::RequestError>) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let outcome = request(client, ECHO, b"ping".to_vec(), Duration::from_millis(250)).await;
            if let Some(t) = done(outcome) {
                return t;
            }
            assert!(tokio::time::Instant::now() < deadline, "no such outcome within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_request_sent_before_any_replica_subscribed_waits_for_one() {
        let server = corral_test_harness::NatsServer::start().await.unwrap();
        let client = async_nats::connect(server.url()).await.unwrap();
        let url = server.url();
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            start_replica(&url, "late").await
        });
        let started = tokio::time::Instant::now();
        let reply = request(&client, ECHO, b"early".to_vec(), Duration::from_secs(5)).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&reply), "late|early|");
        assert!(started.elapsed() >= Duration::from_millis(400));
        let (stop, task) = late.await.unwrap();
        stop.send(()).unwrap();
        task.await.unwrap();
        // Nobody there for the whole time: no responders (not a time-out) once the time is up.
        until(&client, |r| match r {
            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => Some(()),
            _ => None,
        })
        .await;
    }

    fn served_by(reply: &[u8]) -> String {
        String::from_utf8_lossy(reply).split('|').next().unwrap_or_default().to_string()
    }

    #[tokio::test]
    async fn replicas_share_the_requests_and_each_answer_comes_back() {
        let server = corral_test_harness::NatsServer::start().await.unwrap();
        let client = async_nats::connect(server.url()).await.unwrap();
        let (stop_a, a) = start_replica(&server.url(), "a").await;
        let (stop_b, b) = start_replica(&server.url(), "b").await;
        let mut seen = std::collections::BTreeSet::new();
        until(&client, |r| {
            seen.insert(served_by(&r.ok()?));
            (seen.len() == 2).then_some(())
        })
        .await;

        let client = &client;
        let timeout = Duration::from_secs(5);
        let calls = (0..40).map(|i| async move {
            let subject = if i % 2 == 0 { ECHO } else { SHOUT };
            let reply = request(client, subject, format!("hi {i}").into_bytes(), timeout).await.unwrap();
            (i, String::from_utf8(reply.to_vec()).unwrap())
        });
        for (i, reply) in futures::future::join_all(calls).await {
            let parts: Vec<_> = reply.split('|').collect();
            assert!(parts[0] == "a" || parts[0] == "b");
            if i % 2 == 0 {
                assert_eq!(parts[1..], [format!("hi {i}"), String::new()]);
            } else {
                assert_eq!(parts[1..], [format!("HI {i}"), String::new()], "no trace context without tracing");
            }
        }

        // One replica stopped: the other answers everything.
        stop_a.send(()).unwrap();
        a.await.unwrap();
        until(client, |r| (served_by(&r.ok()?) == "b").then_some(())).await;
        for _ in 0..10 {
            assert_eq!(served_by(&request(client, ECHO, b"x".to_vec(), timeout).await.unwrap()), "b");
        }
        // None left: a request finds no one to answer it.
        stop_b.send(()).unwrap();
        b.await.unwrap();
        until(client, |r| matches!(r, Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders).then_some(()))
            .await;
    }
}

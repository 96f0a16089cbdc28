//! The whole cluster API against the all-in-one control plane on the embedded log.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_api_on_the_embedded_log() {
    let cp = common::Embedded::start().await;
    common::suite::run_all(&cp.api).await;
    cp.stop().await;
}

/// The all-in-one's operations listener: the metrics of every component in one scrape, parsed by
/// Prometheus' own OpenMetrics parser, and its health endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_all_in_one_serves_metrics_and_health() {
    let cp = common::Embedded::start().await;
    let (s, body) = common::suite::rest_post(
        &cp.api,
        "/api/v1/clusters",
        serde_json::json!({"server": "https://metrics.example.com", "name": "m"}),
    )
    .await;
    assert_eq!(s.as_u16(), 200, "{body}");
    let ops = cp.ops_addr();
    // The registry's projection applies the create a moment after it is acknowledged.
    let started = std::time::Instant::now();
    let all = loop {
        let all = common::scrape(ops).await;
        if !common::samples(&all, "argocd_cluster_info", &[("server", "https://metrics.example.com")]).is_empty() {
            break all;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "no series for the new cluster: {all:#?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(common::total(&all, "corral_event_log_append_duration_seconds_count", &[("log", "embedded")]) >= 2.0);
    assert!(common::total(&all, "argocd_login_request_total", &[("status", "success")]) >= 1.0);
    assert!(!common::samples(&all, "corral_projection_lag_events", &[("follower", "registry")]).is_empty());
    for path in ["/healthz", "/readyz"] {
        let r = reqwest::get(format!("http://{ops}{path}")).await.expect("get");
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    let r = cp.api.http.get(cp.api.url("/healthz")).send().await.expect("get");
    assert_eq!(r.status().as_u16(), 200, "the public port's health check");
    cp.stop().await;
}

//! The whole cluster API against the all-in-one control plane on the embedded log.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_api_on_the_embedded_log() {
    let cp = common::Embedded::start().await;
    common::suite::run_all(&cp.api).await;
    cp.stop().await;
}

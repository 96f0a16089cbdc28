//! The whole cluster API against separate gateway, registry and auth-rotation processes on a real
//! nats-server.

mod common;

use common::DeploymentApi as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_api_on_nats_with_separate_processes() {
    let d = common::Deployment::start(1, 1).await;
    let _rotation = d.spawn_auth_rotation(300.0).await;
    let api = d.api(0).await;
    common::suite::run_all(&api).await;
}

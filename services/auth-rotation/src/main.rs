use clap::Parser;

// The services allocate many small buffers per request on several threads; mimalloc handles
// that with less contention than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = corral_auth_rotation::ServiceConfig::parse();
    let _telemetry = config.service.log.init(corral_auth_rotation::NAME);
    corral_auth_rotation::run(config, corral_telemetry::shutdown_signal()).await
}

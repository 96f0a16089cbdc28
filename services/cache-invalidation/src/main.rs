use clap::Parser;

// The services allocate many small buffers per request on several threads; mimalloc handles
// that with less contention than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = corral_cache_invalidation::ServiceConfig::parse();
    let _telemetry = config.service.log.init(corral_cache_invalidation::NAME);
    corral_cache_invalidation::run(config, corral_telemetry::shutdown_signal()).await
}

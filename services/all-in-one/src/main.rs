use clap::Parser;

// The services allocate many small buffers per request on several threads; mimalloc handles
// that with less contention than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = corral::Config::parse();
    let _telemetry = config.log.init(corral::NAME);
    let listener = corral_gateway::PublicListener::bind(config.listen, &config.tls).await?;
    corral::run(config, listener, corral_telemetry::shutdown_signal()).await
}

// Compiles every .proto with protox (pure Rust), so the build needs no protoc on the machine.
use prost::Message as _;

/// The public API: what clients are generated from, served by gRPC reflection and described by
/// the OpenAPI document. The rest are internal (events, requests between services).
const PUBLIC: [&str; 7] = [
    "proto/k8s/meta.proto",
    "proto/argocd/v1alpha1.proto",
    "proto/argocd/cluster.proto",
    "proto/argocd/account.proto",
    "proto/argocd/session.proto",
    "proto/argocd/version.proto",
    "proto/corral/watch.proto",
];
const INTERNAL: [&str; 3] = ["proto/corral/auth.proto", "proto/corral/events.proto", "proto/corral/registry.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for f in PUBLIC.iter().chain(&INTERNAL) {
        println!("cargo:rerun-if-changed={f}");
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // With imports (google/protobuf/empty.proto) and source info (the comments, for the OpenAPI
    // descriptions).
    let public = protox::compile(PUBLIC, ["proto"])?;
    std::fs::write(out.join("public_descriptor_set.bin"), public.encode_to_vec())?;
    let fds = protox::compile(PUBLIC.iter().chain(&INTERNAL), ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}

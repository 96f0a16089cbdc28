// Compiles every .proto with protox (pure Rust), so the build needs no protoc on the machine.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/k8s/meta.proto",
        "proto/argocd/v1alpha1.proto",
        "proto/argocd/cluster.proto",
        "proto/argocd/account.proto",
        "proto/argocd/session.proto",
        "proto/corral/auth.proto",
        "proto/corral/events.proto",
        "proto/corral/registry.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}

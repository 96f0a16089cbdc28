// The build's facts for the version service: commit, tag, tree state and date from git (empty
// outside a git checkout), the compiler and the platform.
use std::process::Command;

fn run(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).env("TZ", "UTC").output().ok().filter(|o| o.status.success())?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let git = |args: &[&str]| run("git", args);
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        // A new commit or checkout moves HEAD or a ref; the index is left out on purpose, as
        // every `git status` rewrites it and would rebuild the gateway each time.
        // A path named but missing counts as changed at every build: name only what exists.
        for path in ["HEAD", "refs", "packed-refs"].map(|p| format!("{dir}/{p}")) {
            if std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let commit = git(&["rev-parse", "HEAD"]).unwrap_or_default();
    let tag = git(&["describe", "--tags", "--exact-match", "HEAD"]).unwrap_or_default();
    let tree = match git(&["diff", "--quiet", "HEAD", "--"]) {
        Some(_) => "clean",
        None if commit.is_empty() => "",
        None => "dirty",
    };
    // The commit's time (or SOURCE_DATE_EPOCH), so that two builds of one commit are the same.
    let date = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(epoch) => run("date", &["-u", "-d", &format!("@{epoch}"), "+%Y-%m-%dT%H:%M:%SZ"]),
        Err(_) => git(&["show", "-s", "--format=%cd", "--date=format-local:%Y-%m-%dT%H:%M:%SZ", "HEAD"]),
    }
    .unwrap_or_default();
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let compiler = run(&rustc, &["--version"]).unwrap_or_default();
    // Go's GOOS/GOARCH names, as Argo CD prints its platform.
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let arch = match std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default().as_str() {
        "x86_64" => "amd64".to_string(),
        "aarch64" => "arm64".to_string(),
        "x86" => "386".to_string(),
        other => other.to_string(),
    };
    for (key, value) in [
        ("CORRAL_GIT_COMMIT", commit.as_str()),
        ("CORRAL_GIT_TAG", tag.as_str()),
        ("CORRAL_GIT_TREE_STATE", tree),
        ("CORRAL_BUILD_DATE", date.as_str()),
        ("CORRAL_COMPILER", compiler.as_str()),
        ("CORRAL_PLATFORM", &format!("{os}/{arch}")),
    ] {
        println!("cargo:rustc-env={key}={value}");
    }
}

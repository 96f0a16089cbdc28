//! The README stays true: its first set-up command serves the control plane, its walk-through runs
//! as written against it, and `docs/configuration.md` is every binary's `--help` as printed.
//! (The second set-up command is `.ci/run` itself.)

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn readme() -> String {
    std::fs::read_to_string(workspace().join("README.md")).expect("README.md")
}

/// The ```sh blocks of `text` in order, each as its lines.
fn sh_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match &mut current {
            None if line.trim_start() == "```sh" => current = Some((i, String::new())),
            Some(_) if line.trim_start() == "```" => blocks.extend(current.take()),
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// The section of the README under `heading`, up to the next heading of its level.
fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let start = text.find(heading).unwrap_or_else(|| panic!("no {heading:?} in the README"));
    let rest = &text[start + heading.len()..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

/// A shell command line, run in `dir`.
struct Shell {
    child: tokio::process::Child,
}

impl Shell {
    fn start(script: &str, dir: &Path, env: &[(&str, &str)]) -> Shell {
        let mut cmd = tokio::process::Command::new("bash");
        cmd.arg("-c").arg(script).current_dir(dir).stdin(Stdio::null());
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Shell { child: cmd.spawn().expect("bash") }
    }

    fn start_to_files(script: &str, dir: &Path, out: &Path, err: &Path) -> Shell {
        let mut cmd = tokio::process::Command::new("bash");
        cmd.arg("-c").arg(script).current_dir(dir).stdin(Stdio::null()).kill_on_drop(true);
        cmd.stdout(std::fs::File::create(out).expect("output file"));
        cmd.stderr(std::fs::File::create(err).expect("error file"));
        Shell { child: cmd.spawn().expect("bash") }
    }
}

/// The scratch folder the README's commands run in. On drop, every process still working in it
/// is killed (cargo, the control plane, the fake API server the walk-through leaves running),
/// found by its working directory: no process group or other process is touched.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let me = std::process::id();
        // The kernel names a working directory by its canonical path.
        let Ok(root) = self.dir.path().canonicalize() else { return };
        let Ok(entries) = std::fs::read_dir("/proc") else { return };
        for pid in entries.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()) {
            let in_scratch = std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(&root));
            if in_scratch && pid > 1 && pid != me {
                let _ = std::process::Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_set_up_command_and_walk_through_work_as_written() {
    let text = readme();
    let blocks = sh_blocks(&text);
    let (_, setup) = blocks.first().expect("a set-up block");
    let commands: Vec<&str> = setup.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(commands.len(), 2, "the README opens with exactly two set-up commands: {setup}");
    assert!(commands[0].starts_with("cargo run -p corral "), "{}", commands[0]);
    let test_command = commands[1].split_whitespace().next().expect("a command");
    let ci = std::fs::read_to_string(workspace().join(".ci/run")).expect(".ci/run");
    assert!(ci.contains(test_command), ".ci/run does not call {test_command}");

    // The first command, as written, in a folder of its own inside the workspace (so that cargo
    // finds it and ./data is this test's). Only the port is left to the system.
    let scratch = workspace().join("target");
    std::fs::create_dir_all(&scratch).expect("target");
    let scratch =
        Scratch { dir: tempfile::Builder::new().prefix("readme-").tempdir_in(&scratch).expect("scratch folder") };
    let dir = &scratch.dir;
    let mut server = Shell::start(
        commands[0],
        dir.path(),
        &[("CORRAL_LISTEN", "127.0.0.1:0"), ("CORRAL_OPS_LISTEN", "127.0.0.1:0")],
    );
    let mut out = BufReader::new(server.child.stdout.take().expect("stdout")).lines();
    let addr = tokio::time::timeout(Duration::from_secs(900), async {
        while let Ok(Some(line)) = out.next_line().await {
            if let Some(addr) = corral_test_harness::parse_listen_addr(&line) {
                return addr;
            }
        }
        panic!("the control plane exited before it listened");
    })
    .await
    .expect("listening within 900 s (cargo run may build: it unifies the features of one package only)");
    tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });

    // The walk-through, as written, but for the port.
    let walk = section(&text, "## Five minutes with corral");
    let (_, script) = sh_blocks(walk).into_iter().next().expect("the walk-through's block");
    let script = script.replace("localhost:8080", &addr.to_string());
    // Its output goes to files: the fake API server it leaves running would hold a pipe open.
    let (out_path, err_path) = (dir.path().join("walk-through.out"), dir.path().join("walk-through.err"));
    let mut walker = Shell::start_to_files(&format!("set -euo pipefail\n{script}"), dir.path(), &out_path, &err_path);
    let status = tokio::time::timeout(Duration::from_secs(300), walker.child.wait())
        .await
        .expect("the walk-through finished within 300 s")
        .expect("bash");
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    println!("---- walk-through output ----\n{out}\n---- stderr ----\n{err}");
    assert!(status.success(), "the walk-through failed ({status}):\n{out}\n{err}");
    assert!(out.contains(r#""name":"demo""#) && out.contains(r#""status":"Successful""#), "{out}");
    assert!(out.contains(r#""serverVersion":"#), "the probe recorded the server's version: {out}");
    assert_eq!(out.lines().last(), Some("401"), "the revoked token is refused: {out}");
    assert!(out.lines().count() >= 5, "each answer on a line of its own: {out}");
    assert!(!out.contains("demo-token"), "a response showed the cluster's token: {out}");
    drop(walker);
    drop(server);
    drop(scratch);
}

/// `docs/configuration.md` is each binary's `--help`. After changing a flag, run this test with
/// `CORRAL_UPDATE_DOCS=1` to write the file again.
#[test]
fn the_configuration_reference_is_every_binarys_help() {
    let mut doc = String::from(
        "# Configuration\n\nEvery setting of every binary, as its `--help` prints it. Each flag can also be given as the \
         environment variable named beside it; a flag wins over the variable. This file is checked against the \
         binaries by a test (`tests/tests/readme.rs`); `CORRAL_UPDATE_DOCS=1 cargo test -p corral-e2e --test readme` \
         writes it again.\n",
    );
    for name in [
        "corral",
        "corral-gateway",
        "corral-registry",
        "corral-health-probe",
        "corral-cache-invalidation",
        "corral-auth-rotation",
    ] {
        // No variable of this environment shows up as a value in the help.
        let out = std::process::Command::new(corral_test_harness::deployment::workspace_bin(name))
            .arg("--help")
            .env_clear()
            .output()
            .expect("--help");
        assert!(out.status.success(), "{name} --help failed");
        let help = String::from_utf8(out.stdout).expect("UTF-8 help");
        doc.push_str(&format!("\n## `{name}`\n\n```text\n{}\n```\n", help.trim_end()));
    }
    let path = workspace().join("docs/configuration.md");
    if std::env::var_os("CORRAL_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &doc).expect("write docs/configuration.md");
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == doc,
        "docs/configuration.md differs from the binaries' --help; run with CORRAL_UPDATE_DOCS=1 to write it again"
    );
}

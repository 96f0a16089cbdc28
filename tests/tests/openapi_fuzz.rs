//! The OpenAPI document fuzzed: schemathesis (the pinned version `scripts/ensure-schemathesis.sh`
//! installs) generates requests for every operation of `/swagger.json` against a running control
//! plane, authenticated, and checks every answer against the document: no server error, status,
//! content type, headers and body as documented, refusals of what the document does not allow,
//! authentication not ignored; and, with our own check, nothing stored changed by a refused
//! request.

mod common;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

const SCHEMATHESIS_VERSION: &str = "4.32.5";

/// The fuzzing account is a service account with the admin role, so it reaches every operation;
/// an API token cannot log itself out, which keeps it valid through the whole run.
const ACCOUNTS: &str = r#"
"accounts.fuzzer" = "apiKey"
"policy.csv" = """
g, fuzzer, role:admin
"""
"#;

fn schemathesis() -> PathBuf {
    if let Some(p) = std::env::var_os("CORRAL_SCHEMATHESIS") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../.tools/schemathesis-{SCHEMATHESIS_VERSION}/bin/schemathesis"));
    assert!(
        p.exists(),
        "schemathesis {SCHEMATHESIS_VERSION} not found at {}: run scripts/ensure-schemathesis.sh (scripts/test.sh does)",
        p.display()
    );
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_of_the_openapi_document_holds_under_schemathesis() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = common::Embedded::start_with_accounts(dir, Some(ACCOUNTS)).await;
    let admin = &cp.api;
    let resp = admin
        .http
        .post(admin.url("/api/v1/account/fuzzer/token"))
        .json(&json!({"id": "fuzzer-run"}))
        .send()
        .await
        .expect("token request");
    assert_eq!(resp.status().as_u16(), 200);
    let token = resp.json::<Value>().await.expect("token")["token"].as_str().expect("a token").to_string();
    // Clusters to find, update and delete beside the built-in one: the document's example (which
    // the hooks move to loopback, as every server URL generated) and two more.
    for (i, port) in [6443, 1, 2].into_iter().enumerate() {
        let c = json!({"server": format!("https://127.0.0.1:{port}"), "name": format!("seed-{i}"), "labels": {"env": "fuzz"}});
        let resp = admin.http.post(admin.url("/api/v1/clusters")).json(&c).send().await.expect("seed");
        assert_eq!(resp.status().as_u16(), 200);
    }

    let base = format!("http://{}", admin.addr);
    let report = cp.dir.as_path().join("schemathesis.json");
    let hooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemathesis");
    let out = tokio::process::Command::new(schemathesis())
        .arg("run")
        .arg(format!("{base}/swagger.json"))
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "all"])
        // A request the document allows may still be refused by rules JSON Schema cannot state
        // (unique names, PEM data, label syntax, an account without the apiKey capability).
        .args(["--exclude-checks", "positive_data_acceptance"])
        // The stream of cluster changes answers for as long as the caller reads: a request
        // schemathesis makes of it never ends. tests/watch.rs exercises it.
        .args(["--exclude-operation-id", "ClusterWatch_Watch"])
        // One at a time: the check that refused requests change nothing reads the state around each.
        .args(["--workers", "1", "--max-examples", "40", "--seed", "20261201", "--no-color"])
        .args(["--suppress-health-check", "all", "--request-timeout", "30"])
        .args(["--report", "json", "--report-json-path"])
        .arg(&report)
        // Its caches go to the temporary folder, not the checkout.
        .current_dir(cp.dir.as_path())
        .env("SCHEMATHESIS_HOOKS", "corral_hooks")
        .env("PYTHONPATH", &hooks)
        .env("CORRAL_FUZZ_BASE", &base)
        .env("CORRAL_FUZZ_TOKEN", &token)
        .env("CORRAL_FUZZ_TOKEN_ID", "fuzzer-run")
        .output()
        .await
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "schemathesis found failures (exit {:?}):\n{stdout}\n{stderr}", out.status.code());
    let report: Value = serde_json::from_slice(&std::fs::read(&report).expect("the JSON report")).expect("JSON");
    let (cases, tested, total) =
        (&report["test_cases"]["generated"], &report["operations"]["tested"], &report["operations"]["total"]);
    println!(
        "schemathesis {SCHEMATHESIS_VERSION}: {cases} cases over {tested} of {total} operations; failures {}, errors {}",
        report["failures"], report["errors"]
    );
    assert_eq!(report["failures"], json!([]), "{report}");
    assert_eq!(report["errors"], json!([]), "{report}");
    // Every operation but the stream, which never ends by itself, was tested.
    assert_eq!(tested, &report["operations"]["selected"], "every selected operation was tested: {report}");
    assert_eq!(total.as_u64().map(|t| t - 1), tested.as_u64(), "only the stream is left out: {report}");
    assert!(cases.as_u64().unwrap_or(0) >= 1000, "{cases} cases");
    // Every cluster the run registered points at loopback: the hooks kept the fuzzing on this machine.
    let resp = admin.http.get(admin.url("/api/v1/clusters")).send().await.expect("list");
    let list: Value = resp.json().await.expect("list");
    for c in list["items"].as_array().expect("items") {
        let server = c["server"].as_str().unwrap_or_default();
        let host = url::Url::parse(server).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default();
        assert!(
            host == "127.0.0.1" || server == "https://kubernetes.default.svc",
            "a cluster off this machine: {server}"
        );
    }
    cp.stop().await;
}

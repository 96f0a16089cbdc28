//! The deployment files: `docker-compose.yml` checked by docker-compose itself and held to its
//! rules (read-only, no capabilities, secrets as files); the `k8s/` overlays rendered by
//! `kubectl kustomize`, validated strictly against the Kubernetes schemas offline and held to
//! theirs; and, where a Docker engine answers, the compose deployment built, started and put
//! through the API and its faults.

mod common;

use common::suite::escape as enc;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the repository").to_path_buf()
}

fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|e| panic!("{shown}: {e}"));
    assert!(out.status.success(), "{shown}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    out
}

fn installed(program: &str) -> bool {
    Command::new(program).arg("--help").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// The Python that has kubernetes-validate (and PyYAML): test.sh's, or installed now.
fn k8s_python() -> PathBuf {
    if let Some(p) = std::env::var_os("CORRAL_K8S_PYTHON") {
        return PathBuf::from(p);
    }
    let out = run(&mut Command::new(repo().join("scripts/ensure-kubernetes-validate.sh")));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Every document of a YAML stream, as JSON.
fn yaml_documents(text: &str) -> Vec<Value> {
    let mut child = Command::new(k8s_python())
        .args(["-c", "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python");
    use std::io::Write;
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("yaml to python");
    let out = child.wait_with_output().expect("python");
    assert!(out.status.success(), "YAML not parsed");
    serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("JSON")
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

// --- docker-compose.yml ------------------------------------------------------------------------

/// The Compose tools to check the file with: Debian's docker-compose 1.29 where it is installed,
/// and the pinned Compose v2 (test.sh's, or installed now; scripts/ensure-compose-v2.sh).
fn composers() -> Vec<(&'static str, PathBuf)> {
    let mut found = Vec::new();
    if installed("docker-compose") {
        found.push(("docker-compose 1", PathBuf::from("docker-compose")));
    } else {
        println!("docker-compose (v1) is not installed here: NOT checked with it");
    }
    let v2 = match std::env::var_os("CORRAL_COMPOSE_V2") {
        Some(p) => Some(PathBuf::from(p)),
        None => Command::new(repo().join("scripts/ensure-compose-v2.sh"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())),
    };
    match v2 {
        Some(p) if p.exists() => found.push(("Compose v2", p)),
        _ => println!("Compose v2 could not be installed here: NOT checked with it"),
    }
    found
}

/// A port as `host_ip:published`, from either the short form (1.29) or the long one (v2).
fn published(port: &Value) -> String {
    match port {
        Value::String(s) => s.clone(),
        Value::Object(p) => format!(
            "{}:{}",
            p.get("host_ip").and_then(Value::as_str).unwrap_or(""),
            p.get("published")
                .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
                .unwrap_or_default()
        ),
        other => other.to_string(),
    }
}

/// A volume as `(source, target)`, from either the short form (1.29: `source:target:mode` or
/// only `target`) or the long one (v2); no source for an anonymous volume.
fn volume(v: &Value) -> (Option<String>, String) {
    match v {
        Value::String(s) => {
            let parts: Vec<&str> = s.split(':').collect();
            match parts.as_slice() {
                [target] => (None, target.to_string()),
                [source, target, ..] => (Some(source.to_string()), target.to_string()),
                [] => (None, String::new()),
            }
        }
        v => (v["source"].as_str().map(str::to_string), v["target"].as_str().unwrap_or_default().to_string()),
    }
}

#[test]
fn the_compose_file_is_valid_and_keeps_its_rules() {
    for (tool, program) in composers() {
        check_compose_file(tool, &program);
        println!("docker-compose.yml checked with {tool}");
    }
}

fn check_compose_file(tool: &str, program: &Path) {
    let file = repo().join("docker-compose.yml");
    run(Command::new(program).arg("-f").arg(&file).args(["config", "-q"]));
    let rendered = run(Command::new(program).arg("-f").arg(&file).arg("config"));
    let config = yaml_documents(&String::from_utf8_lossy(&rendered.stdout)).remove(0);
    let services = config["services"].as_object().expect("services");
    let nats: Vec<&String> = services.keys().filter(|k| k.starts_with("nats-")).collect();
    assert_eq!(nats.len(), 3, "{tool}: three NATS nodes");
    let mut nats_volumes = BTreeSet::new();
    for (name, s) in services {
        let name = format!("{tool}: {name}");
        assert_eq!(s["read_only"], true, "{name}: read-only root");
        assert_eq!(strs(&s["cap_drop"]), ["ALL"], "{name}: no capabilities");
        assert!(strs(&s["security_opt"]).contains(&"no-new-privileges:true"), "{name}");
        assert_eq!(s["user"], "65532:65532", "{name}: not root");
        assert_eq!(s["pull_policy"], "never", "{name}: images are built here, never pulled");
        assert!(s["healthcheck"]["test"].as_array().is_some_and(|t| !t.is_empty()), "{name}: a health check");
        // Secrets come as files, never as values in the environment.
        for (key, value) in s["environment"].as_object().into_iter().flatten() {
            let secret_like = ["PASSWORD", "TOKEN", "SEAL_KEY", "SECRET"].iter().any(|w| key.contains(w));
            assert!(!secret_like || key.ends_with("_FILE"), "{name}: {key} holds a secret in the environment");
            if key.ends_with("_FILE") && (key.contains("PASSWORD") || key.contains("SEAL_KEY")) {
                let target = value.as_str().expect("a path");
                let secret = target.strip_prefix("/run/secrets/").expect("a compose secret");
                assert!(
                    strs(&Value::Array(
                        s["secrets"].as_array().into_iter().flatten().map(|x| x["source"].clone()).collect()
                    ))
                    .contains(&secret),
                    "{name}: {key} names a secret it is not given"
                );
            }
        }
        let volumes: Vec<(Option<String>, String)> =
            s["volumes"].as_array().into_iter().flatten().map(volume).collect();
        if name.contains(": nats-") {
            let data: Vec<&(Option<String>, String)> = volumes.iter().filter(|(_, t)| t == "/data").collect();
            assert_eq!(data.len(), 1, "{name}: a volume for its store");
            nats_volumes.insert(data[0].0.clone().expect("a named volume"));
            continue;
        }
        let env = &s["environment"];
        assert_eq!(env["CORRAL_STREAM_REPLICAS"], "3", "{name}: the stream at three replicas");
        assert_eq!(
            env["CORRAL_NATS_URL"].as_str().map(|u| u.split(',').count()),
            Some(3),
            "{name}: every NATS node's URL"
        );
        if s["scale"].as_u64().unwrap_or(1) > 1 {
            assert!(s.get("ports").is_none() && s.get("container_name").is_none(), "{name}: scaled");
        }
        for port in s["ports"].as_array().into_iter().flatten() {
            let published = published(port);
            assert!(
                published.starts_with("127.0.0.1:"),
                "{name}: plaintext port {published} on the host's loopback only"
            );
        }
    }
    assert_eq!(nats_volumes.len(), 3, "{tool}: each NATS node its own volume");
    let gateways = services.keys().filter(|k| k.starts_with("gateway")).count();
    assert!(gateways >= 2, "{tool}: two gateways");
    for kind in ["registry", "health-probe", "cache-invalidation", "auth-rotation"] {
        assert!(services[kind]["scale"].as_u64() >= Some(2), "{tool}: {kind}: two replicas");
    }
    // The registry's projection is an anonymous volume: one per container, never shared.
    let registry: Vec<(Option<String>, String)> =
        services["registry"]["volumes"].as_array().into_iter().flatten().map(volume).collect();
    assert_eq!(registry, [(None, "/var/lib/corral".to_string())], "{tool}: the registry's volume");
    for (name, secret) in config["secrets"].as_object().expect("secrets") {
        let file = secret["file"].as_str().expect("a file");
        assert!(file.contains("/.secrets/"), "{tool}: {name}: {file}");
    }
    let nats_conf = std::fs::read_to_string(repo().join("nats/cluster.conf")).expect("nats/cluster.conf");
    assert!(nats_conf.contains("sync_interval: always"));
}

// --- the compose deployment, where an engine answers -------------------------------------------

fn engine() -> Result<String, String> {
    let out = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .map_err(|e| format!("docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("no answer").to_string())
    }
}

/// One compose project of its own (ports chosen free), taken down with its volumes when dropped,
/// also when the test fails (whose logs are printed then).
struct Compose {
    program: PathBuf,
    project: String,
    ports: [u16; 2],
}

impl Compose {
    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.current_dir(repo())
            .args(["-p", &self.project])
            .env("CORRAL_GATEWAY_1_PORT", self.ports[0].to_string())
            .env("CORRAL_GATEWAY_2_PORT", self.ports[1].to_string());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        run(self.command().args(args))
    }

    /// Waits until every container of the project reports healthy.
    async fn healthy(&self, within: Duration) -> Duration {
        let started = tokio::time::Instant::now();
        loop {
            let ids = String::from_utf8_lossy(&self.run(&["ps", "-q"]).stdout).to_string();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            let states = run(Command::new("docker")
                .args([
                    "inspect",
                    "--format",
                    "{{.Name}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}",
                ])
                .args(&ids));
            let states = String::from_utf8_lossy(&states.stdout).to_string();
            if !ids.is_empty() && states.lines().all(|l| l.ends_with(" healthy")) {
                return started.elapsed();
            }
            assert!(started.elapsed() < within, "not healthy within {within:?}:\n{states}");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Ok(out) = self.command().args(["logs", "--no-color", "--tail", "40"]).output()
        {
            eprintln!("---- compose logs ----\n{}", String::from_utf8_lossy(&out.stdout));
        }
        let _ = self.command().args(["down", "-v", "--remove-orphans", "-t", "5"]).output();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port()
}

/// A create through `api`, retried as a client would while the answer is retriable (503, 504,
/// no answer): true once acknowledged (or found already there: an earlier try was applied).
async fn create_retrying(api: &common::Api, server: &str) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        let sent = api
            .http
            .post(api.url("/api/v1/clusters"))
            .json(&json!({"server": server, "name": server.trim_start_matches("https://")}))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match sent.map(|r| r.status().as_u16()) {
            Ok(200) | Ok(409) => return true,
            Ok(503) | Ok(504) | Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            Ok(other) => panic!("create {server}: {other}, not a status a client retries"),
        }
    }
    false
}

async fn servers(api: &common::Api) -> BTreeSet<String> {
    let resp = api.http.get(api.url("/api/v1/clusters")).send().await.expect("list");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("JSON");
    body["items"].as_array().into_iter().flatten().filter_map(|c| c["server"].as_str().map(str::to_string)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_deployment_serves_and_survives() {
    let version = match engine() {
        Ok(v) => v,
        Err(why) => {
            println!("no Docker engine answers ({why}): the compose deployment is NOT tested here");
            return;
        }
    };
    println!("Docker engine {version}");
    let built = std::time::Instant::now();
    let out = run(&mut Command::new(repo().join("scripts/build-image.sh")));
    println!("images built in {:.0?}:\n{}", built.elapsed(), String::from_utf8_lossy(&out.stdout));
    for (tool, program) in composers() {
        println!("---- the deployment with {tool} ----");
        serves_and_survives(program).await;
    }
}

/// `docker-compose up` with `program`, then the API through both gateways and the faults.
async fn serves_and_survives(program: PathBuf) {
    let compose =
        Compose { program, project: format!("corraltest{}", std::process::id()), ports: [free_port(), free_port()] };
    let started = std::time::Instant::now();
    compose.run(&["up", "-d"]);
    let took = compose.healthy(Duration::from_secs(240)).await;
    println!("every container healthy {:.1?} after `up` ({:.1?} in all)", took, started.elapsed());

    let password = std::fs::read_to_string(repo().join(".secrets/admin-password")).expect("admin password");
    let password = password.trim();
    let g1 =
        common::wait_for_api_as(format!("127.0.0.1:{}", compose.ports[0]).parse().expect("addr"), "admin", password)
            .await;
    let g2 =
        common::wait_for_api_as(format!("127.0.0.1:{}", compose.ports[1]).parse().expect("addr"), "admin", password)
            .await;

    // A watch on gateway 2 sees what is created through gateway 1.
    let mut stream = g2.http.get(g2.url("/api/v1/stream/clusters")).send().await.expect("a watch");
    assert_eq!(stream.status(), 200);

    // The lifecycle: REST through gateway 1, gRPC through gateway 2.
    let server = "https://compose-a.example";
    assert!(create_retrying(&g1, server).await);
    let mut grpc = g2.grpc.clone();
    let query = corral_proto::cluster::ClusterQuery { server: server.into(), ..Default::default() };
    let got = grpc.get(query.clone()).await.expect("gRPC get through the other gateway").into_inner();
    assert_eq!(got.name, "compose-a.example");
    let updated = g1
        .http
        .put(g1.url(&format!("/api/v1/clusters/{}?updatedFields=labels", enc(server))))
        .json(&json!({"server": server, "labels": {"env": "compose"}}))
        .send()
        .await
        .expect("update");
    assert_eq!(updated.status(), 200);
    let got = grpc.get(query.clone()).await.expect("gRPC get").into_inner();
    assert_eq!(got.labels.get("env").map(String::as_str), Some("compose"));
    let mut watched = String::new();
    while !(watched.contains("compose-a.example") && watched.contains("\"env\":\"compose\"")) {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk()).await.expect("watch events in time");
        watched.push_str(&String::from_utf8_lossy(&chunk.expect("chunk").expect("stream open")));
    }
    drop(stream);
    let deleted = g2.http.delete(g2.url(&format!("/api/v1/clusters/{}", enc(server)))).send().await.expect("delete");
    assert_eq!(deleted.status(), 200);
    assert_eq!(grpc.get(query).await.expect_err("deleted").code(), tonic::Code::NotFound);

    // An API token for the configured account (docker/accounts.toml), used on the other gateway.
    let resp = g1.http.post(g1.url("/api/v1/account/ci/token")).json(&json!({})).send().await.expect("token");
    assert_eq!(resp.status(), 200);
    let token: Value = resp.json().await.expect("token body");
    let ci = g2.with_token(token["token"].as_str());
    assert_eq!(ci.http.get(ci.url("/api/v1/clusters")).send().await.expect("list as ci").status(), 200);

    // Writes through both gateways while a NATS node is killed and started again.
    let writers: Vec<_> = [g1.clone(), g2.clone()]
        .into_iter()
        .enumerate()
        .map(|(w, api)| {
            tokio::spawn(async move {
                let (mut acknowledged, mut failed) = (Vec::new(), 0);
                let until = tokio::time::Instant::now() + Duration::from_secs(24);
                let mut i = 0;
                while tokio::time::Instant::now() < until {
                    let server = format!("https://w{w}-{i}.compose.example");
                    if create_retrying(&api, &server).await {
                        acknowledged.push(server);
                    } else {
                        failed += 1;
                    }
                    i += 1;
                }
                (acknowledged, failed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(6)).await;
    compose.run(&["kill", "nats-2"]);
    println!("nats-2 killed");
    tokio::time::sleep(Duration::from_secs(8)).await;
    compose.run(&["start", "nats-2"]);
    println!("nats-2 started again");
    let mut acknowledged = BTreeSet::new();
    let mut failed = 0;
    for w in writers {
        let (a, f) = w.await.expect("writer");
        acknowledged.extend(a);
        failed += f;
    }
    println!(
        "{} creates acknowledged during the node's loss, {failed} not completed within 30 s of retries",
        acknowledged.len()
    );
    assert_eq!(failed, 0, "every create a client retried completed");

    // The registries restarted; the health probe scaled to three.
    compose.run(&["restart", "-t", "10", "registry"]);
    compose.run(&["up", "-d", "--no-recreate", "--scale", "health-probe=3"]);
    compose.healthy(Duration::from_secs(240)).await;
    let probes = String::from_utf8_lossy(&compose.run(&["ps", "-q", "health-probe"]).stdout).lines().count();
    assert_eq!(probes, 3);

    // Every acknowledged write is there, through either gateway.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for api in [&g1, &g2] {
        loop {
            let have = servers(api).await;
            let missing: Vec<&String> = acknowledged.iter().filter(|s| !have.contains(*s)).collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} acknowledged creates missing: {missing:?}",
                missing.len()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    println!("0 of {} acknowledged creates lost", acknowledged.len());
}

// --- k8s/ --------------------------------------------------------------------------------------

fn render(overlay: &str) -> (String, Vec<Value>) {
    let out = run(Command::new("kubectl").arg("kustomize").arg(repo().join("k8s/overlays").join(overlay)));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let docs = yaml_documents(&text);
    (text, docs)
}

fn of_kind<'a>(docs: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    docs.iter().filter(move |d| d["kind"] == kind)
}

fn name(d: &Value) -> &str {
    d["metadata"]["name"].as_str().unwrap_or("?")
}

/// `selector` (matchLabels, or a Service's plain map) picks pods labelled `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let wanted = selector.get("matchLabels").unwrap_or(selector);
    wanted.as_object().is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

fn workloads(docs: &[Value]) -> Vec<&Value> {
    docs.iter().filter(|d| d["kind"] == "Deployment" || d["kind"] == "StatefulSet").collect()
}

/// What every overlay must hold to, whatever its replica counts.
fn check_policies(overlay: &str, docs: &[Value]) {
    let pdbs: Vec<&Value> = of_kind(docs, "PodDisruptionBudget").collect();
    for w in workloads(docs) {
        let n = format!("{overlay}: {} {}", w["kind"].as_str().unwrap_or("?"), name(w));
        let template = &w["spec"]["template"];
        let labels = &template["metadata"]["labels"];
        assert!(selects(&w["spec"]["selector"], labels), "{n}: its selector does not match its pods' labels");
        assert!(pdbs.iter().any(|p| selects(&p["spec"]["selector"], labels)), "{n}: no PodDisruptionBudget");
        let pod = &template["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{n}: runAsNonRoot");
        assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault", "{n}: seccomp");
        let containers = pod["containers"].as_array().expect("containers");
        for c in containers.iter().chain(pod["initContainers"].as_array().into_iter().flatten()) {
            let cn = format!("{n} container {}", c["name"].as_str().unwrap_or("?"));
            let image = c["image"].as_str().unwrap_or("");
            assert!(image.starts_with("corral:") || image.starts_with("corral-nats:"), "{cn}: image {image}");
            let sc = &c["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{cn}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{cn}");
            assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"], "{cn}");
            for kind in ["requests", "limits"] {
                for r in ["cpu", "memory"] {
                    assert!(c["resources"][kind][r].is_string(), "{cn}: resources.{kind}.{r}");
                }
            }
            let ports: Vec<&Value> = c["ports"].as_array().into_iter().flatten().collect();
            for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
                let p = &c[probe]["httpGet"];
                assert!(p.is_object(), "{cn}: no {probe} over HTTP");
                let port = &p["port"];
                assert!(
                    ports.iter().any(|q| q["name"] == *port || q["containerPort"] == *port),
                    "{cn}: {probe} port {port} is not a container port"
                );
            }
            if w["kind"] == "Deployment" {
                assert_eq!(c["startupProbe"]["httpGet"]["path"], "/readyz", "{cn}: started when caught up");
                assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{cn}");
                assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{cn}");
            }
        }
    }
    for s in of_kind(docs, "Service") {
        assert!(
            workloads(docs)
                .iter()
                .any(|w| selects(&s["spec"]["selector"], &w["spec"]["template"]["metadata"]["labels"])),
            "{overlay}: Service {} selects no workload",
            name(s)
        );
    }
    // Ingress: denied by default; only the gateway's API port is open to all.
    let policies: Vec<&Value> = of_kind(docs, "NetworkPolicy").collect();
    assert!(
        policies.iter().any(|p| p["spec"]["podSelector"].as_object().is_some_and(|m| m.is_empty())
            && strs(&p["spec"]["policyTypes"]).contains(&"Ingress")
            && p["spec"]["ingress"].as_array().is_none_or(|i| i.is_empty())),
        "{overlay}: no default-deny policy"
    );
    for p in &policies {
        for rule in p["spec"]["ingress"].as_array().into_iter().flatten() {
            let open = rule["from"].as_array().is_none_or(|f| f.is_empty());
            if open {
                assert!(name(p).contains("gateway"), "{overlay}: {} lets anyone in", name(p));
                let ports: Vec<&Value> = rule["ports"].as_array().into_iter().flatten().map(|q| &q["port"]).collect();
                assert!(ports.iter().all(|q| **q == json!(8080) || **q == json!("http")), "{overlay}: {ports:?}");
            }
        }
    }
    let nats = of_kind(docs, "StatefulSet").next().expect("the NATS StatefulSet");
    let nats_labels = &nats["spec"]["template"]["metadata"]["labels"];
    let nats_policy =
        policies.iter().find(|p| selects(&p["spec"]["podSelector"], nats_labels)).expect("a policy for the NATS pods");
    for rule in nats_policy["spec"]["ingress"].as_array().expect("rules") {
        let ports: Vec<String> =
            rule["ports"].as_array().into_iter().flatten().map(|q| q["port"].to_string()).collect();
        if ports.iter().any(|p| p == "6222" || p == "\"cluster\"") {
            let from = rule["from"].as_array().expect("route port: only from somewhere");
            assert!(
                from.iter().all(|f| f.get("namespaceSelector").is_none() && selects(&f["podSelector"], nats_labels)),
                "{overlay}: the route port is open to more than the NATS pods: {from:?}"
            );
        }
    }
    // The NATS StatefulSet in the chart's shape.
    assert_eq!(nats["spec"]["podManagementPolicy"], "Parallel");
    assert!(nats["spec"]["volumeClaimTemplates"].as_array().is_some_and(|v| !v.is_empty()), "a volume per node");
    let headless = of_kind(docs, "Service")
        .find(|s| name(s) == nats["spec"]["serviceName"].as_str().unwrap_or(""))
        .expect("the headless Service");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
    // Argo CD's ConfigMaps, mounted as one folder where the accounts file is read.
    for cm in ["argocd-cm", "argocd-rbac-cm"] {
        assert!(of_kind(docs, "ConfigMap").any(|c| name(c) == cm), "{overlay}: no {cm}");
    }
    for svc in ["corral-gateway", "corral-auth-rotation"] {
        let d = of_kind(docs, "Deployment").find(|d| name(d) == svc).unwrap_or_else(|| panic!("{svc}"));
        let pod = &d["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        let env = c["env"].as_array().expect("env");
        let path =
            env.iter().find(|e| e["name"] == "CORRAL_ACCOUNTS_FILE").expect("CORRAL_ACCOUNTS_FILE")["value"].clone();
        let mount =
            c["volumeMounts"].as_array().expect("mounts").iter().find(|m| m["mountPath"] == path).expect("mounted");
        let volume =
            pod["volumes"].as_array().expect("volumes").iter().find(|v| v["name"] == mount["name"]).expect("volume");
        let maps: BTreeSet<&str> = volume["projected"]["sources"]
            .as_array()
            .expect("projected")
            .iter()
            .filter_map(|s| s["configMap"]["name"].as_str())
            .collect();
        assert_eq!(maps, BTreeSet::from(["argocd-cm", "argocd-rbac-cm"]), "{overlay}: {svc}");
    }
    // Only the observers read their own cluster's API server, and only /version and discovery.
    for role in of_kind(docs, "ClusterRole") {
        for rule in role["rules"].as_array().expect("rules") {
            assert!(rule.get("resources").is_none() && rule.get("apiGroups").is_none(), "{}: {rule}", name(role));
            assert_eq!(strs(&rule["verbs"]), ["get"]);
            let urls: BTreeSet<&str> = strs(&rule["nonResourceURLs"]).into_iter().collect();
            assert!(urls.is_subset(&BTreeSet::from(["/version", "/api", "/api/*", "/apis", "/apis/*"])), "{urls:?}");
        }
    }
    for sa in of_kind(docs, "ServiceAccount") {
        let observes = ["corral-health-probe", "corral-cache-invalidation"].contains(&name(sa));
        assert_eq!(sa["automountServiceAccountToken"], observes, "{overlay}: ServiceAccount {}", name(sa));
    }
    // No secret value in any manifest: the Secrets are the operator's to create.
    assert!(of_kind(docs, "Secret").next().is_none(), "{overlay}: a Secret is committed");
}

fn replicas(docs: &[Value]) -> BTreeMap<String, u64> {
    workloads(docs).iter().map(|w| (name(w).to_string(), w["spec"]["replicas"].as_u64().unwrap_or(1))).collect()
}

#[test]
fn the_k8s_overlays_render_validate_and_keep_their_rules() {
    if !installed("kubectl") {
        println!("kubectl is not installed here: k8s/ NOT rendered nor validated");
        return;
    }
    let python = k8s_python();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rendered = BTreeMap::new();
    for overlay in ["dev", "ha"] {
        let (text, docs) = render(overlay);
        let file = dir.path().join(format!("{overlay}.yaml"));
        std::fs::write(&file, &text).expect("write");
        // Every object against the Kubernetes 1.33 schemas, unknown keys refused.
        run(Command::new(&python)
            .args(["-m", "kubernetes_validate", "--strict", "--quiet", "-k", "1.33.0"])
            .arg(&file));
        check_policies(overlay, &docs);
        println!("{overlay}: {} objects, valid", docs.len());
        rendered.insert(overlay, docs);
    }
    let dev = replicas(&rendered["dev"]);
    assert!(dev.values().all(|r| *r == 1), "dev: one of each: {dev:?}");
    let ha = replicas(&rendered["ha"]);
    for (w, r) in &ha {
        let wanted = if w == "corral-nats" { 3 } else { 2 };
        assert!(*r >= wanted, "ha: {w} has {r} replicas");
    }
    let gateway = of_kind(&rendered["ha"], "Deployment").find(|d| name(d) == "corral-gateway").expect("gateway");
    let anti = &gateway["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"];
    assert!(anti["requiredDuringSchedulingIgnoredDuringExecution"].is_array(), "ha: gateways on different nodes");
    let env = |d: &Value, key: &str| -> Option<String> {
        d["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()?
            .iter()
            .find(|e| e["name"] == key)
            .and_then(|e| e["value"].as_str().map(str::to_string))
    };
    for (overlay, streams) in [("dev", "1"), ("ha", "3")] {
        for d in of_kind(&rendered[overlay], "Deployment") {
            assert_eq!(env(d, "CORRAL_STREAM_REPLICAS").as_deref(), Some(streams), "{overlay}: {}", name(d));
        }
    }
}

#[test]
fn the_nats_users_of_k8s_are_those_of_nats() {
    let ours = std::fs::read(repo().join("nats/authorization.conf")).expect("nats/authorization.conf");
    let k8s = std::fs::read(repo().join("k8s/base/nats/authorization.conf")).expect("k8s copy");
    assert!(ours == k8s, "k8s/base/nats/authorization.conf differs from nats/authorization.conf: copy it again");
}

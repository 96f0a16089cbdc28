//! Argo CD's `argocd-cm` and `argocd-rbac-cm`, mounted as Kubernetes mounts a ConfigMap (one
//! file per key, behind `..data` links that an update swaps), are read unchanged and followed.

mod common;

use std::path::Path;
use std::time::Duration;

use serde_json::json;

/// Writes `keys` as the kubelet's atomic writer does: the files in a `..<timestamp>` folder, a
/// `..data` link to it replaced by a rename, and one link per key through `..data`.
fn mount_configmap(dir: &Path, version: u32, keys: &[(&str, &str)]) {
    use std::os::unix::fs::symlink;
    let stamp = format!("..2026_12_01_10_00_{version:02}.{version}");
    std::fs::create_dir_all(dir.join(&stamp)).expect("timestamped folder");
    for (k, v) in keys {
        std::fs::write(dir.join(&stamp).join(k), v).expect("key file");
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    symlink(&stamp, dir.join("..data_tmp")).expect("new ..data link");
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("swap ..data");
    for entry in std::fs::read_dir(dir).expect("list").flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.starts_with('.') && !keys.iter().any(|(k, _)| *k == name) {
            std::fs::remove_file(entry.path()).expect("drop a removed key");
        }
    }
    for (k, _) in keys {
        if std::fs::symlink_metadata(dir.join(k)).is_err() {
            symlink(Path::new("..data").join(k), dir.join(k)).expect("key link");
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).expect("old timestamped folder");
    }
}

const ARGOCD_CM: &[(&str, &str)] = &[
    ("accounts.alice", "apiKey, login"),
    // Keys of other parts of Argo CD are ignored, not refused: the ConfigMap is copied as it is.
    ("url", "https://argocd.example.com"),
    ("users.session.duration", "24h"),
];
const RBAC_CM: &[(&str, &str)] = &[
    ("policy.default", "role:readonly"),
    ("policy.csv", "p, role:registrar, clusters, create, *, allow\ng, alice, role:registrar\n"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argocd_configmaps_mounted_as_a_folder_are_read_and_followed() {
    let mount = tempfile::tempdir().expect("mount");
    let both: Vec<(&str, &str)> = ARGOCD_CM.iter().chain(RBAC_CM).copied().collect();
    mount_configmap(mount.path(), 1, &both);
    let cp = common::Embedded::start_with_accounts_at(tempfile::tempdir().expect("data"), mount.path()).await;
    let admin = cp.api.clone();
    let admin_password = cp.api.credentials.clone().expect("admin credentials").1;
    let resp = admin
        .http
        .put(admin.url("/api/v1/account/password"))
        .json(&json!({"name": "alice", "currentPassword": admin_password, "newPassword": "alice-password-1"}))
        .send()
        .await
        .expect("set alice's password");
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap_or_default());

    // Alice exists (argocd-cm) and may create clusters but not delete them (argocd-rbac-cm).
    let alice = admin.as_user("alice", "alice-password-1").await;
    let created = alice
        .http
        .post(alice.url("/api/v1/clusters"))
        .json(&json!({"server": "https://folder.example", "name": "folder"}))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 200, "{}", created.text().await.unwrap_or_default());
    let deleted =
        alice.http.delete(alice.url("/api/v1/clusters/https%3A%2F%2Ffolder.example")).send().await.expect("delete");
    assert_eq!(deleted.status(), 403);

    // An update of the ConfigMap (the kubelet swaps ..data) disables her within seconds.
    let mut disabled = both.clone();
    disabled.push(("accounts.alice.enabled", "false"));
    mount_configmap(mount.path(), 2, &disabled);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match admin.login("alice", "alice-password-1").await {
            Err((401, _)) => break,
            other => {
                assert!(tokio::time::Instant::now() < deadline, "alice still logs in after the update: {other:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let listed = alice.http.get(alice.url("/api/v1/clusters")).send().await.expect("list");
    assert_eq!(listed.status(), 401, "a disabled account's session ends");

    // A broken update is refused whole and the previous configuration kept: alice stays disabled.
    let mut broken = both.clone();
    broken.push(("accounts.mallory", "login, root"));
    mount_configmap(mount.path(), 3, &broken);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(admin.login("alice", "alice-password-1").await.map(|_| ()).map_err(|e| e.0), Err(401));
    cp.stop().await;
}

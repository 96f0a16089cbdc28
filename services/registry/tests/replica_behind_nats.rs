//! A registry replica whose projection is held behind the log (it has not applied what the caller
//! saw through another replica, or its own last command): it judges a command only once it has
//! caught up. Two replicas on a real nats-server; the second one's projection is paused at will.

use std::sync::Arc;

use corral_event_log::{EventLog, NatsLog};
use corral_service_api::{ClusterCommands as _, ClusterQueries as _};

/// A nats-server with registry replica `a` running on it, and what a second replica `b` needs.
struct ReplicaA {
    _nats: corral_test_harness::NatsServer,
    log: Arc<dyn EventLog>,
    key: Arc<corral_secrets::SealingKey>,
    a: Arc<corral_registry::Registry>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl ReplicaA {
    async fn start() -> ReplicaA {
        let nats = corral_test_harness::NatsServer::start().await.expect("nats-server");
        let client = async_nats::connect(nats.url()).await.expect("nats");
        let log: Arc<dyn EventLog> = Arc::new(NatsLog::new(client, Default::default()).await.expect("log"));
        let key = Arc::new(corral_secrets::SealingKey::generate());
        let (stop, _) = tokio::sync::watch::channel(false);
        let db = corral_cluster_model::open_projection_db(None).expect("db");
        let until_stopped = Self::until(&stop);
        let a = corral_registry::start(log.clone(), &db, key.clone(), Default::default(), until_stopped)
            .await
            .expect("replica a");
        // The replica's projection holds the database open.
        ReplicaA { _nats: nats, log, key, a, stop }
    }

    fn until(stop: &tokio::sync::watch::Sender<bool>) -> impl std::future::Future<Output = ()> + use<> {
        let mut rx = stop.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// Replica b, on a projection of its own that follows nothing yet.
    fn replica_b(&self) -> (Arc<corral_registry::Registry>, corral_projection::Projection) {
        let db = corral_cluster_model::open_projection_db(None).expect("db");
        let projection = corral_projection::Projection::open(&db, "registry").expect("projection");
        let b =
            corral_registry::Registry::new(self.log.clone(), projection.clone(), self.key.clone(), Default::default());
        (b, projection)
    }

    /// Replica b, having applied the log up to `seq` and paused there.
    async fn replica_b_paused_at(&self, seq: u64) -> (Arc<corral_registry::Registry>, corral_projection::Projection) {
        let (b, projection) = self.replica_b();
        let (pause, _) = tokio::sync::watch::channel(false);
        let fold = corral_cluster_model::read_model::fold;
        let follower =
            tokio::spawn(corral_projection::run(self.log.clone(), projection.clone(), fold, Self::until(&pause)));
        projection.wait_for(seq, std::time::Duration::from_secs(10)).await.expect("b applies the log");
        let _ = pause.send(true);
        follower.await.expect("follower task").expect("follower");
        assert_eq!(projection.last_applied(), seq, "nothing was appended after {seq}");
        (b, projection)
    }

    /// Sends `command` to replica b while its projection is held, checks that b has not answered
    /// 200 ms later (it is waiting to catch up), then lets the projection follow the log; b's
    /// answer.
    async fn answer_once_caught_up(
        &self,
        b: &Arc<corral_registry::Registry>,
        projection: corral_projection::Projection,
        command: corral_proto::registry::Command,
    ) -> corral_proto::registry::Reply {
        let held_at = projection.last_applied();
        let pending = tokio::spawn({
            let b = b.clone();
            async move { b.command(command).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(projection.last_applied(), held_at, "replica b's projection moved while held");
        assert!(!pending.is_finished(), "replica b answered before catching up with the log");
        self.follow(projection);
        pending.await.expect("command task")
    }

    /// Makes `projection` follow the log until the test ends.
    fn follow(&self, projection: corral_projection::Projection) {
        let fold = corral_cluster_model::read_model::fold;
        tokio::spawn(corral_projection::run(self.log.clone(), projection, fold, Self::until(&self.stop)));
    }

    /// Creates cluster `name` through replica a; the revision.
    async fn create(&self, server: &str, name: &str) -> u64 {
        let created = self.a.command(create_command(server, name)).await;
        assert!(matches!(created.result, Some(corral_proto::registry::reply::Result::Cluster(_))), "{created:?}");
        created.revision
    }

    /// The cluster `q` names, as replica a sees it after catching up.
    async fn get(&self, q: corral_proto::cluster::ClusterQuery) -> corral_proto::registry::Reply {
        use corral_proto::registry::{Query, query};

        self.a.query(Query { linearizable: true, kind: Some(query::Kind::Get(q)), ..Default::default() }).await
    }

    /// Cluster `name`'s version, as replica a sees it after catching up.
    async fn version(&self, name: &str) -> u64 {
        self.get(corral_proto::cluster::ClusterQuery { name: name.into(), ..Default::default() }).await.cluster_version
    }
}

/// Registers `server` as `name`.
fn create_command(server: &str, name: &str) -> corral_proto::registry::Command {
    use corral_proto::cluster::ClusterCreateRequest;
    use corral_proto::registry::{Command, command};
    let cluster = corral_proto::v1alpha1::Cluster { server: server.into(), name: name.into(), ..Default::default() };
    Command {
        kind: Some(command::Kind::Create(ClusterCreateRequest { cluster: Some(cluster), upsert: false })),
        ..Default::default()
    }
}

/// Sets `field` of cluster `name` to its value in `cluster`, if the cluster is at
/// `expected_version` (0: any).
fn update_by_name(
    name: &str,
    cluster: corral_proto::v1alpha1::Cluster,
    field: &str,
    expected_version: u64,
) -> corral_proto::registry::Command {
    use corral_proto::cluster::{ClusterId, ClusterUpdateRequest};
    use corral_proto::registry::{Command, command};
    Command {
        kind: Some(command::Kind::Update(ClusterUpdateRequest {
            cluster: Some(cluster),
            updated_fields: vec![field.into()],
            id: Some(ClusterId { r#type: "name".into(), value: name.into() }),
        })),
        expected_version,
        ..Default::default()
    }
}

impl Drop for ReplicaA {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// An update of cluster `name`'s labels that applies only to `expected_version`.
fn label_update(name: &str, step: &str, expected_version: u64) -> corral_proto::registry::Command {
    let labels = [("step".to_string(), step.to_string())].into();
    update_by_name(name, corral_proto::v1alpha1::Cluster { labels, ..Default::default() }, "labels", expected_version)
}

/// The labels a command's reply shows.
fn replied_step(r: &corral_proto::registry::Reply) -> Option<String> {
    match &r.result {
        Some(corral_proto::registry::reply::Result::Cluster(c)) => c.labels.get("step").cloned(),
        _ => panic!("unexpected reply: {r:?}"),
    }
}

/// A command can reach a registry replica whose projection has not yet applied what the caller
/// saw through another replica. That replica answers only once it has caught up with the log: it
/// neither reports the cluster missing nor refuses the version the caller authorised against.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_the_log_catches_up_before_answering_a_command() {
    let r = ReplicaA::start().await;
    r.create("https://behind.example.com", "behind").await;
    let version = r.version("behind").await;
    assert!(version >= 1);

    // Replica b has applied nothing yet: its projection starts following the log only once the
    // command is waiting on it.
    let (b, projection) = r.replica_b();
    let updated = r.answer_once_caught_up(&b, projection, label_update("behind", "two", version)).await;
    assert_eq!(replied_step(&updated).as_deref(), Some("two"));
}

/// A replica that holds the cluster, but an older version of it than the caller authorised
/// against, catches up before it judges the version: it does not refuse the command as changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_an_older_version_catches_up_before_refusing_a_command_as_changed() {
    let r = ReplicaA::start().await;
    let created_at = r.create("https://older.example.com", "older").await;

    // Replica b follows the log up to the create, then pauses.
    let (b, projection) = r.replica_b_paused_at(created_at).await;

    // The cluster moves on through replica a; the caller authorises against the new version.
    let moved = r.a.command(label_update("older", "one", 0)).await;
    assert_eq!(replied_step(&moved).as_deref(), Some("one"));
    let version = r.version("older").await;
    assert!(version >= 2, "version {version}");

    let updated = r.answer_once_caught_up(&b, projection, label_update("older", "two", version)).await;
    assert_eq!(replied_step(&updated).as_deref(), Some("two"));
    assert_eq!(r.version("older").await, version + 1);
}

/// Renames cluster `from` to `to`.
fn rename(from: &str, to: &str) -> corral_proto::registry::Command {
    update_by_name(from, corral_proto::v1alpha1::Cluster { name: to.into(), ..Default::default() }, "name", 0)
}

/// A command by name that loses its append race because the name moved to another cluster in
/// the meantime applies to the cluster that holds the name now, not to the one it first found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_by_name_retried_after_a_rename_applies_to_the_cluster_holding_the_name_now() {
    use corral_proto::cluster::ClusterQuery;
    use corral_proto::registry::reply;

    let r = ReplicaA::start().await;
    r.create("https://first.example.com", "x").await;
    let created_at = r.create("https://second.example.com", "other").await;

    // Replica b knows "x" as the first cluster, then pauses.
    let (b, projection) = r.replica_b_paused_at(created_at).await;

    // Through replica a, the name "x" moves to the second cluster.
    for (from, to) in [("x", "y"), ("other", "x")] {
        let renamed = r.a.command(rename(from, to)).await;
        assert!(matches!(renamed.result, Some(reply::Result::Cluster(_))), "{renamed:?}");
    }

    // b's append on the first cluster loses (it moved on); b catches up and looks "x" up again.
    let updated = r.answer_once_caught_up(&b, projection, label_update("x", "two", 0)).await;
    let Some(reply::Result::Cluster(c)) = &updated.result else { panic!("update of x: {updated:?}") };
    assert_eq!(c.server, "https://second.example.com");
    assert_eq!(replied_step(&updated).as_deref(), Some("two"));

    let labels_of =
        async |server: &str| match r.get(ClusterQuery { server: server.into(), ..Default::default() }).await.result {
            Some(reply::Result::Cluster(c)) => (c.name, c.labels.get("step").cloned()),
            other => panic!("get {other:?}"),
        };
    assert_eq!(labels_of("https://first.example.com").await, ("y".to_string(), None));
    assert_eq!(labels_of("https://second.example.com").await, ("x".to_string(), Some("two".to_string())));
}

/// A name released by one command can be taken by the next at once, through any replica: a
/// replica that still sees the name held catches up before it refuses the claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_a_rename_catches_up_before_refusing_the_released_name() {
    use corral_proto::registry::reply;

    let r = ReplicaA::start().await;
    let created_at = r.create("https://holder.example.com", "taken").await;
    let (b, projection) = r.replica_b_paused_at(created_at).await;
    let renamed = r.a.command(rename("taken", "moved")).await;
    assert!(matches!(renamed.result, Some(reply::Result::Cluster(_))), "{renamed:?}");

    // Replica b still sees "taken" held by the first cluster.
    let create = create_command("https://newcomer.example.com", "taken");
    let created = r.answer_once_caught_up(&b, projection, create).await;
    let Some(reply::Result::Cluster(c)) = &created.result else { panic!("create with the released name: {created:?}") };
    assert_eq!((c.server.as_str(), c.name.as_str()), ("https://newcomer.example.com", "taken"));
}

/// A command that would change nothing on a replica's stale state may still change the cluster:
/// it undoes a change the replica has not applied yet. The replica answers "nothing to change"
/// only once caught up, so the command is not acknowledged and lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_the_log_does_not_drop_a_command_that_undoes_what_it_has_not_seen() {
    use corral_proto::cluster::ClusterQuery;
    use corral_proto::registry::reply;

    let r = ReplicaA::start().await;
    let created_at = r.create("https://undo.example.com", "undo").await;
    let (b, projection) = r.replica_b_paused_at(created_at).await;
    let labelled = r.a.command(label_update("undo", "one", 0)).await;
    assert_eq!(replied_step(&labelled).as_deref(), Some("one"));

    // Through b, which still sees the cluster without labels: clear them.
    let clear = update_by_name("undo", corral_proto::v1alpha1::Cluster::default(), "labels", 0);
    let cleared = r.answer_once_caught_up(&b, projection, clear).await;
    assert_eq!(replied_step(&cleared), None, "{cleared:?}");
    let stored = r.get(ClusterQuery { name: "undo".into(), ..Default::default() }).await;
    let Some(reply::Result::Cluster(c)) = stored.result else { panic!("get: {stored:?}") };
    assert!(c.labels.is_empty(), "the acknowledged update was lost: {:?}", c.labels);
}

/// The same for a create repeated after a delete that a replica has not applied: it would find the
/// cluster still there, identical, and answer with it while nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_a_delete_registers_a_repeated_create_again() {
    use corral_proto::cluster::{ClusterId, ClusterQuery};
    use corral_proto::registry::{Command, command, reply};

    let r = ReplicaA::start().await;
    let server = "https://again.example.com";
    let created_at = r.create(server, "again").await;
    let (b, projection) = r.replica_b_paused_at(created_at).await;
    let by_server =
        ClusterQuery { id: Some(ClusterId { r#type: "server".into(), value: server.into() }), ..Default::default() };
    let deleted =
        r.a.command(Command { kind: Some(command::Kind::Delete(by_server.clone())), ..Default::default() }).await;
    assert!(matches!(deleted.result, Some(reply::Result::Empty(_))), "{deleted:?}");

    let created = r.answer_once_caught_up(&b, projection, create_command(server, "again")).await;
    assert!(matches!(created.result, Some(reply::Result::Cluster(_))), "{created:?}");
    let stored = r.get(by_server).await;
    assert!(matches!(stored.result, Some(reply::Result::Cluster(_))), "the acknowledged create was lost: {stored:?}");
}

//! An auth replica that has not yet applied a change made through another replica catches up
//! with the log before it refuses a request that change allows: the new password, a session
//! signed for it, the revocation of a token just issued. A client that changes its password and
//! logs in again (as the argocd CLI does) may reach any replica.

use std::sync::Arc;
use std::time::Duration;

use corral_auth::{ADMIN, Auth, AuthConfig, InitialAdminPassword};
use corral_event_log::{AppendOutcome, EventLog, EventStream, LogError, NatsLog, NewEvent, RecordedEvent};
use corral_secrets::{SealingKey, Secret};
use futures::StreamExt;
use tokio::sync::watch;

/// The real log, whose followers receive each event only once `upto` reaches its sequence: a
/// replica held behind the log for as long as a test needs.
struct HeldLog {
    inner: Arc<dyn EventLog>,
    upto: watch::Receiver<u64>,
}

impl HeldLog {
    fn held(&self, stream: EventStream) -> EventStream {
        let upto = self.upto.clone();
        stream
            .then(move |event| {
                let mut upto = upto.clone();
                async move {
                    if let Ok(e) = &event {
                        let _ = upto.wait_for(|u| *u >= e.seq).await;
                    }
                    event
                }
            })
            .boxed()
    }
}

#[async_trait::async_trait]
impl EventLog for HeldLog {
    async fn append(&self, event: NewEvent) -> Result<AppendOutcome, LogError> {
        self.inner.append(event).await
    }
    async fn append_batch(&self, events: Vec<NewEvent>) -> Result<Vec<AppendOutcome>, LogError> {
        self.inner.append_batch(events).await
    }
    async fn last_seq(&self) -> Result<u64, LogError> {
        self.inner.last_seq().await
    }
    async fn first_seq(&self) -> Result<u64, LogError> {
        self.inner.first_seq().await
    }
    async fn append_expecting(&self, expected_last_seq: u64, events: Vec<NewEvent>) -> Result<(), LogError> {
        self.inner.append_expecting(expected_last_seq, events).await
    }
    async fn last_subject_seq(&self, subject: &str) -> Result<u64, LogError> {
        self.inner.last_subject_seq(subject).await
    }
    async fn read(&self, from_seq: u64, max: usize) -> Result<Vec<RecordedEvent>, LogError> {
        self.inner.read(from_seq, max).await
    }
    async fn subscribe(&self, from_seq: u64) -> Result<EventStream, LogError> {
        Ok(self.held(self.inner.subscribe(from_seq).await?))
    }
    async fn subscribe_matching(&self, from_seq: u64, filters: &[String]) -> Result<EventStream, LogError> {
        Ok(self.held(self.inner.subscribe_matching(from_seq, filters).await?))
    }
    async fn last_seq_matching(&self, filters: &[String]) -> Result<u64, LogError> {
        self.inner.last_seq_matching(filters).await
    }
}

const OLD: &str = "old-password-1";
const NEW: &str = "new-password-2";

/// Auth replicas a and b on one nats-server; b can be held behind the log.
struct Replicas {
    _nats: corral_test_harness::NatsServer,
    log: Arc<dyn EventLog>,
    a: Arc<Auth>,
    b: Arc<Auth>,
    hold: watch::Sender<u64>,
}

impl Replicas {
    async fn start() -> Replicas {
        let nats = corral_test_harness::NatsServer::start().await.expect("nats-server");
        let client = async_nats::connect(nats.url()).await.expect("nats");
        let log: Arc<dyn EventLog> = Arc::new(NatsLog::new(client, Default::default()).await.expect("log"));
        let key = Arc::new(SealingKey::generate());
        let config = || AuthConfig::from_toml(r#""accounts.ci" = "apiKey""#).expect("config");
        let a = Auth::start(log.clone(), key.clone(), config(), false).await.expect("replica a");
        a.ensure_admin_password(InitialAdminPassword::Plain(Secret::new(OLD.into()))).await.expect("admin password");
        let (hold, upto) = watch::channel(u64::MAX);
        let held: Arc<dyn EventLog> = Arc::new(HeldLog { inner: log.clone(), upto });
        let b = Auth::start(held, key, config(), false).await.expect("replica b");
        Replicas { _nats: nats, log, a, b, hold }
    }

    /// Replica b applies nothing appended from now on until [`Replicas::release_b`].
    async fn hold_b(&self) {
        self.hold.send_replace(self.log.last_seq().await.expect("last seq"));
    }

    fn release_b(&self) {
        self.hold.send_replace(u64::MAX);
    }

    /// Runs `call` (on the held replica b), checks that it has not answered 200 ms later (it is
    /// waiting to catch up), then releases b; the answer.
    async fn answer_once_released<T: Send + 'static>(
        &self,
        call: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        let pending = tokio::spawn(call);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!pending.is_finished(), "b answered before catching up");
        self.release_b();
        pending.await.expect("call task")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_changed_through_one_replica_works_at_once_through_another() {
    let r = Replicas::start().await;
    let (a, b) = (&r.a, &r.b);
    b.login(ADMIN, OLD, "").await.expect("the first password through b");

    // Replica b applies nothing from here on while the password changes through a.
    r.hold_b().await;
    let admin = a.verify(&a.login(ADMIN, OLD, "").await.expect("login through a")).await.expect("verify");
    a.update_password(&admin, "", OLD, NEW).await.expect("password change through a");
    let session = a.login(ADMIN, NEW, "").await.expect("the new password through a");

    let login = tokio::spawn({
        let b = b.clone();
        async move { b.login(ADMIN, NEW, "").await }
    });
    let verify = tokio::spawn({
        let (b, session) = (b.clone(), session.clone());
        async move { b.verify(&session).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!login.is_finished(), "b judged the new password before catching up");
    assert!(!verify.is_finished(), "b judged the new session before catching up");
    r.release_b();
    let token = login.await.expect("login task").expect("the new password through b");
    assert_eq!(b.verify(&token).await.expect("b's own session").account, ADMIN);
    assert_eq!(verify.await.expect("verify task").expect("a's session through b").account, ADMIN);
    assert!(b.login(ADMIN, OLD, "").await.is_err(), "the old password still works through b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_token_issued_through_one_replica_can_be_revoked_at_once_through_another() {
    let r = Replicas::start().await;
    r.hold_b().await;
    let (token, _) = r.a.issue_api_token("ci", 0, "deploy-1", ADMIN).await.expect("issue through a");
    let b = r.b.clone();
    r.answer_once_released(async move { b.revoke_api_token("ci", "deploy-1", ADMIN).await })
        .await
        .expect("revocation through b");
    assert!(r.b.verify(&token).await.is_err(), "the revoked token still works through b");
    // Other replicas follow within milliseconds, as the README says.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while r.a.verify(&token).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "the revoked token still works through a after 1 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_changed_through_one_replica_is_the_current_one_at_once_through_another() {
    const NEWER: &str = "newer-password-3";
    let r = Replicas::start().await;
    let admin = r.a.verify(&r.a.login(ADMIN, OLD, "").await.expect("login through a")).await.expect("verify");
    r.hold_b().await;
    r.a.update_password(&admin, "", OLD, NEW).await.expect("password change through a");
    let b = r.b.clone();
    r.answer_once_released(async move { b.update_password(&admin, "", NEW, NEWER).await })
        .await
        .expect("the new password as the current one through b");
    r.a.login(ADMIN, NEWER, "").await.expect("the password set through b, through a");
}

//! The registry: decides commands on the cluster aggregate, appends the events with optimistic
//! concurrency, and answers queries from its projection.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use corral_domain::{self as domain, ClusterCommand, ClusterEvent, ClusterSpec, ClusterState};
use corral_event_log::{AppendOutcome, EventLog, NewEvent};
use corral_projection::Projection;
use corral_proto::cluster::{ClusterCreateRequest, ClusterQuery, ClusterResponse, ClusterUpdateRequest};
use corral_proto::events;
use corral_proto::registry::{self, Command, Query, Reply, RequestContext, command, reply};
use corral_proto::v1alpha1;
use corral_secrets::SealingKey;
use prost::Message;
use tracing::{Instrument, debug_span};

use corral_cluster_model::read_model::{self, cluster_record, name_record};
use corral_cluster_model::{EncodedList, Queries, RegistryError, codec};
use corral_events::event_type::{CLUSTER_NAME_CLAIMED, CLUSTER_NAME_RELEASED};
use corral_events::{Draft, from_unix_nanos, subject};
use corral_service_api::{ClusterCommands, ClusterQueries, to_reply};

#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// How long a query waits for the projection to reach the revision it needs.
    pub read_timeout: Duration,
    /// How many times a command is retried on fresh state after losing an append race.
    pub max_attempts: usize,
    /// A name claim whose cluster does not (yet) hold the name counts for this long: the time a
    /// create in flight needs between claiming the name and registering the cluster.
    pub name_claim_lease: Duration,
    /// How long a command keeps trying while the log does not answer (a NATS stream electing a
    /// new leader takes seconds) before it is answered Unavailable.
    pub unavailable_retry_for: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            read_timeout: Duration::from_secs(10),
            max_attempts: 20,
            name_claim_lease: Duration::from_secs(30),
            unavailable_retry_for: Duration::from_secs(6),
        }
    }
}

/// Retries while the log does not answer: backing off from 100 ms to 1 s, for at most a
/// given time from the first failure.
struct Unavailable {
    retry_for: Duration,
    since: Option<tokio::time::Instant>,
    backoff: Duration,
}

impl Unavailable {
    fn new(retry_for: Duration) -> Unavailable {
        Unavailable { retry_for, since: None, backoff: Duration::from_millis(100) }
    }

    /// Waits before the next try, or gives back `error` once the time is up.
    async fn wait_or(&mut self, error: RegistryError) -> Result<(), RegistryError> {
        let since = *self.since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() + self.backoff > self.retry_for {
            return Err(error);
        }
        tracing::debug!(error = %error, backoff_ms = self.backoff.as_millis() as u64, "log unavailable; retrying");
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(Duration::from_secs(1));
        Ok(())
    }
}

/// What one attempt at a command did: the revision to answer with and the cluster as it stands
/// (None once deleted).
enum Attempt {
    Appended(u64, Option<v1alpha1::Cluster>),
    /// Nothing to change, as far as this replica's projection knows.
    Unchanged(u64, Option<v1alpha1::Cluster>),
}

pub struct Registry {
    log: Arc<dyn EventLog>,
    projection: Projection,
    queries: Queries,
    key: Arc<SealingKey>,
    config: RegistryConfig,
}

/// Who caused a change, carried into the events' envelopes, and the cluster version the caller
/// was authorised against.
struct Origin {
    expected_version: u64,
    event: corral_events::Origin,
}

impl Origin {
    fn from_context(ctx: Option<RequestContext>) -> Origin {
        let ctx = ctx.unwrap_or_default();
        let correlation_id =
            if ctx.correlation_id.is_empty() { uuid::Uuid::new_v4().to_string() } else { ctx.correlation_id };
        Origin {
            expected_version: 0,
            event: corral_events::Origin {
                correlation_id,
                causation_id: String::new(),
                traceparent: String::new(),
                actor: ctx.actor,
            },
        }
    }
}

impl Registry {
    pub fn new(
        log: Arc<dyn EventLog>,
        projection: Projection,
        key: Arc<SealingKey>,
        config: RegistryConfig,
    ) -> Arc<Registry> {
        let queries = Queries::new(log.clone(), projection.clone(), config.read_timeout);
        Arc::new(Registry { log, projection, queries, key, config })
    }

    pub fn projection(&self) -> &Projection {
        &self.projection
    }

    pub fn queries(&self) -> &Queries {
        &self.queries
    }

    async fn catch_up(&self) -> Result<u64, RegistryError> {
        self.queries.catch_up().await
    }

    fn live_id(&self, q: &ClusterQuery) -> Result<String, RegistryError> {
        self.queries.live_id(q)
    }

    fn not_found(q: &ClusterQuery) -> RegistryError {
        Queries::not_found(q)
    }

    /// Registers the built-in in-cluster entry unless the log already has it. Safe to run on
    /// every replica at once: the appends expect an empty subject, so only one lands.
    pub async fn ensure_in_cluster(&self) -> Result<(), RegistryError> {
        self.catch_up().await?;
        let id = domain::cluster_id(domain::IN_CLUSTER_SERVER);
        if cluster_record(&self.projection, &id)?.is_some_and(|r| r.subject_seq > 0) {
            return Ok(());
        }
        let origin = Origin::from_context(Some(RequestContext {
            actor: "system".into(),
            correlation_id: "seed-in-cluster".into(),
        }));
        let cmd = |_: &Option<ClusterState>| ClusterCommand::Create { spec: domain::in_cluster_spec(), upsert: false };
        self.run_command(&origin, || Ok(id.clone()), cmd).await.map(|_| ())
    }

    fn load(&self, id: &str) -> Result<(Option<ClusterState>, u64, Option<registry::ClusterRecord>), RegistryError> {
        let Some(rec) = cluster_record(&self.projection, id)? else {
            return Ok((None, 0, None));
        };
        if rec.deleted {
            return Ok((None, rec.subject_seq, Some(rec)));
        }
        let spec = codec::open_spec(&rec.spec.clone().unwrap_or_default(), id, &self.key)?;
        let refresh =
            (rec.refresh_requested_at_unix_nanos != 0).then(|| from_unix_nanos(rec.refresh_requested_at_unix_nanos));
        let state = ClusterState { spec, refresh_requested_at: refresh };
        Ok((Some(state), rec.subject_seq, Some(rec)))
    }

    /// Decides `command` on fresh state and appends the result, retrying on lost races. Returns
    /// the revision and the rendered cluster (None when the cluster no longer exists).
    ///
    /// Every attempt resolves the cluster afresh: after a lost race the name may belong to
    /// another cluster. This replica's projection may also not yet hold what the caller saw (a
    /// cluster created through another replica, a version the caller authorised against, a name
    /// released by the caller's previous command), so a refusal, and an answer that there is
    /// nothing to change, are given only once it has caught up with the log: otherwise a command
    /// that would undo a change this replica has not seen yet would be acknowledged and lost.
    async fn run_command(
        &self,
        origin: &Origin,
        resolve: impl Fn() -> Result<String, RegistryError>,
        command: impl Fn(&Option<ClusterState>) -> ClusterCommand,
    ) -> Result<(u64, Option<v1alpha1::Cluster>), RegistryError> {
        let mut caught_up = false;
        let mut conflicts = 0;
        let mut unavailable = Unavailable::new(self.config.unavailable_retry_for);
        loop {
            match self.attempt_command(origin, &resolve, &command).await {
                Err(RegistryError::Conflict) => {
                    conflicts += 1;
                    tracing::debug!(conflicts, "append conflict; retrying on fresh state");
                    if conflicts >= self.config.max_attempts {
                        return Err(RegistryError::Conflict);
                    }
                }
                // The events carry ids made from the request, so sending them again after an
                // append whose answer was lost stores them once.
                Err(e @ RegistryError::Unavailable(_)) => {
                    unavailable.wait_or(e).await?;
                    continue;
                }
                Err(e) if !caught_up && e.is_refusal() => {}
                Ok(Attempt::Unchanged(..)) if !caught_up => {}
                Ok(Attempt::Appended(revision, cluster) | Attempt::Unchanged(revision, cluster)) => {
                    return Ok((revision, cluster));
                }
                Err(e) => return Err(e),
            }
            loop {
                match self.catch_up().await {
                    Ok(_) => break,
                    Err(e @ RegistryError::Unavailable(_)) => unavailable.wait_or(e).await?,
                    Err(e) => return Err(e),
                }
            }
            caught_up = true;
        }
    }

    async fn attempt_command(
        &self,
        origin: &Origin,
        resolve: &impl Fn() -> Result<String, RegistryError>,
        command: &impl Fn(&Option<ClusterState>) -> ClusterCommand,
    ) -> Result<Attempt, RegistryError> {
        let id = resolve()?;
        let (state, subject_seq, rec) = self.load(&id)?;
        let version = rec.as_ref().map(|r| r.version).unwrap_or(0);
        if origin.expected_version != 0 && origin.expected_version != version {
            return Err(RegistryError::Changed);
        }
        let events = domain::decide(&state, command(&state))?;
        if events.is_empty() {
            let cluster = rec.filter(|r| !r.deleted).map(|r| read_model::render(&r));
            return Ok(Attempt::Unchanged(self.projection.last_applied(), cluster));
        }
        let (revision, appended) = self.commit(origin, &id, &state, (subject_seq, version), &events).await?;
        // Render from our own events rather than wait for the projection to apply them.
        let mut rec = rec;
        for (seq, env) in &appended {
            rec = Some(read_model::fold_cluster(rec, &id, *seq, env)?);
        }
        Ok(Attempt::Appended(revision, rec.filter(|r| !r.deleted).map(|r| read_model::render(&r))))
    }

    /// Appends the command's events as one atomic batch, with the name claim and release that a
    /// new or changed name needs: either the whole change is in the log or none of it is.
    async fn commit(
        &self,
        origin: &Origin,
        id: &str,
        before: &Option<ClusterState>,
        (subject_seq, version): (u64, u64),
        events: &[ClusterEvent],
    ) -> Result<(u64, Vec<(u64, events::EventEnvelope)>), RegistryError> {
        let old_name = before.as_ref().map(|s| s.spec.name.clone());
        let mut state = before.clone();
        for e in events {
            domain::apply(&mut state, e);
        }
        let new_name = state.as_ref().map(|s| s.spec.name.clone());
        let mut batch = Vec::with_capacity(events.len() + 2);
        if let Some(name) = &new_name
            && old_name.as_deref() != Some(name.as_str())
            && let Some(claim) = self.name_claim(origin, name, id)?
        {
            batch.push(claim);
        }
        let first_cluster_event = batch.len();
        let mut version = version;
        for (i, e) in events.iter().enumerate() {
            let (event_type, payload) = codec::encode_event(e, id, &self.key);
            version += 1;
            // The batch is atomic, so the subject's expectation goes on its first event only.
            let expected = (i == 0).then_some(subject_seq);
            batch.push(Self::event(
                origin,
                subject::cluster(id),
                format!("cluster/{id}"),
                version,
                expected,
                event_type,
                payload,
            ));
        }
        let cluster_events = first_cluster_event..batch.len();
        if let Some(old) = old_name
            && new_name.as_deref() != Some(old.as_str())
            && let Some(release) = self.name_release(origin, &old, id)?
        {
            batch.push(release);
        }
        let (new_events, envelopes): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let outcomes = if self.log.batches_are_cheap() {
            self.log.append_batch(new_events).await?
        } else {
            self.append_in_steps(new_events, cluster_events.end).await?
        };
        let revision = outcomes.last().map(|o| o.seq).unwrap_or(0);
        let appended = outcomes[cluster_events.clone()]
            .iter()
            .map(|o| o.seq)
            .zip(envelopes[cluster_events].iter().cloned())
            .collect();
        Ok((revision, appended))
    }

    /// The same events one append at a time: the claim first, so that no cluster ever holds a
    /// name it has not claimed (a claim left behind stops counting after its lease), and the
    /// release last and best effort (a claim whose cluster moved on counts for nothing).
    async fn append_in_steps(
        &self,
        events: Vec<NewEvent>,
        releases_from: usize,
    ) -> Result<Vec<AppendOutcome>, RegistryError> {
        let mut outcomes: Vec<AppendOutcome> = Vec::with_capacity(events.len());
        let mut previous: Option<(String, u64)> = None;
        for (i, mut event) in events.into_iter().enumerate() {
            // Out of a batch, a later event on the same subject expects the one before it.
            if event.expected_subject_seq.is_none()
                && let Some((subject, seq)) = &previous
                && *subject == event.subject
            {
                event.expected_subject_seq = Some(*seq);
            }
            let subject = event.subject.clone();
            match self.log.append(event).await {
                Ok(o) => {
                    previous = Some((subject, o.seq));
                    outcomes.push(o);
                }
                Err(e) if i >= releases_from => tracing::debug!(error = %e, "name release skipped"),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(outcomes)
    }

    /// An event ready for the log, and its envelope.
    fn event(
        origin: &Origin,
        subject: String,
        aggregate_id: String,
        version: u64,
        expected: Option<u64>,
        event_type: &str,
        payload: Vec<u8>,
    ) -> (NewEvent, events::EventEnvelope) {
        // A retried request re-sends the same id for the same step, so the log drops the copy.
        let msg_id = format!("{}:{}:{}", origin.event.correlation_id, subject, version);
        let draft = Draft {
            subject,
            aggregate_id,
            aggregate_version: version,
            expected_subject_seq: expected,
            event_type,
            payload,
            msg_id: Some(msg_id),
        };
        corral_events::write(draft, &origin.event)
    }

    /// A claim holds while its cluster holds the name, or while a create may still be in flight.
    fn claim_is_live(&self, claim: &registry::NameRecord, name: &str) -> Result<bool, RegistryError> {
        if claim.released {
            return Ok(false);
        }
        if let Some(rec) = cluster_record(&self.projection, &claim.cluster_id)?
            && !rec.deleted
            && rec.spec.as_ref().is_some_and(|s| s.name == name)
        {
            return Ok(true);
        }
        let age = Utc::now() - from_unix_nanos(claim.claimed_at_unix_nanos);
        Ok(age.to_std().map(|a| a < self.config.name_claim_lease).unwrap_or(true))
    }

    /// The event claiming `name` for cluster `id`: None when the cluster holds it already,
    /// AlreadyExists when another cluster does.
    fn name_claim(
        &self,
        origin: &Origin,
        name: &str,
        id: &str,
    ) -> Result<Option<(NewEvent, events::EventEnvelope)>, RegistryError> {
        let key = domain::name_key(name);
        let claim = name_record(&self.projection, &key)?;
        if let Some(c) = &claim {
            if c.cluster_id == id && !c.released {
                return Ok(None);
            }
            if self.claim_is_live(c, name)? {
                return Err(RegistryError::AlreadyExists(format!("cluster with name \"{name}\" already exists")));
            }
        }
        let (expected, version) = claim.map(|c| (c.subject_seq, c.version)).unwrap_or((0, 0));
        let payload = events::ClusterNameClaimed { cluster_id: id.to_string() }.encode_to_vec();
        Ok(Some(Self::name_event(origin, &key, (expected, version), CLUSTER_NAME_CLAIMED, payload)))
    }

    /// An event on name `key`'s subject, after the claim record at (subject sequence, version).
    fn name_event(
        origin: &Origin,
        key: &str,
        (expected, version): (u64, u64),
        event_type: &str,
        payload: Vec<u8>,
    ) -> (NewEvent, events::EventEnvelope) {
        let (subject, aggregate) = (subject::cluster_name(key), format!("clustername/{key}"));
        Self::event(origin, subject, aggregate, version + 1, Some(expected), event_type, payload)
    }

    /// The event releasing `name` from cluster `id`, if `id` holds the claim.
    fn name_release(
        &self,
        origin: &Origin,
        name: &str,
        id: &str,
    ) -> Result<Option<(NewEvent, events::EventEnvelope)>, RegistryError> {
        let key = domain::name_key(name);
        let Some(claim) = name_record(&self.projection, &key)? else { return Ok(None) };
        if claim.cluster_id != id || claim.released {
            return Ok(None);
        }
        let payload = events::ClusterNameReleased { cluster_id: id.to_string() }.encode_to_vec();
        let at = (claim.subject_seq, claim.version);
        Ok(Some(Self::name_event(origin, &key, at, CLUSTER_NAME_RELEASED, payload)))
    }

    async fn create(
        &self,
        origin: &Origin,
        req: ClusterCreateRequest,
    ) -> Result<(u64, v1alpha1::Cluster), RegistryError> {
        let api = req.cluster.ok_or_else(|| RegistryError::InvalidArgument("cluster: required".into()))?;
        let spec = ClusterSpec::from_api(&api);
        domain::validate(&spec)?;
        let id = domain::cluster_id(&spec.server);
        let upsert = req.upsert;
        let (rev, cluster) = self
            .run_command(origin, || Ok(id.clone()), |_| ClusterCommand::Create { spec: spec.clone(), upsert })
            .await?;
        let cluster =
            cluster.ok_or_else(|| RegistryError::Internal("created cluster missing from projection".into()))?;
        Ok((rev, cluster))
    }

    async fn update(
        &self,
        origin: &Origin,
        req: ClusterUpdateRequest,
    ) -> Result<(u64, v1alpha1::Cluster), RegistryError> {
        let api = req.cluster.ok_or_else(|| RegistryError::InvalidArgument("cluster: required".into()))?;
        let query = ClusterQuery {
            server: api.server.clone(),
            name: api.name.clone(),
            id: req.id.clone(),
            selector: String::new(),
        };
        let patch = ClusterSpec::from_api(&api);
        let fields = req.updated_fields;
        let (rev, cluster) = self
            .run_command(
                origin,
                || self.live_id(&query),
                |state| {
                    let mut patch = patch.clone();
                    if patch.server.is_empty()
                        && let Some(current) = state
                    {
                        patch.server = current.spec.server.clone();
                    }
                    ClusterCommand::Update { patch, updated_fields: fields.clone() }
                },
            )
            .await?;
        Ok((rev, cluster.ok_or_else(|| Self::not_found(&query))?))
    }

    async fn delete(&self, origin: &Origin, q: ClusterQuery) -> Result<u64, RegistryError> {
        let (rev, _) = self.run_command(origin, || self.live_id(&q), |_| ClusterCommand::Delete).await?;
        Ok(rev)
    }

    async fn invalidate_cache(
        &self,
        origin: &Origin,
        q: ClusterQuery,
    ) -> Result<(u64, v1alpha1::Cluster), RegistryError> {
        let at = Utc::now();
        let (rev, cluster) =
            self.run_command(origin, || self.live_id(&q), |_| ClusterCommand::RequestRefresh { at }).await?;
        Ok((rev, cluster.ok_or_else(|| Self::not_found(&q))?))
    }

    pub async fn handle_command(&self, cmd: Command) -> Result<(u64, reply::Result), RegistryError> {
        if cmd.min_revision > self.projection.last_applied() {
            self.queries.wait_for(cmd.min_revision).await?;
        }
        let mut origin = Origin::from_context(cmd.context);
        origin.expected_version = cmd.expected_version;
        let kind = cmd.kind.ok_or_else(|| RegistryError::InvalidArgument("empty command".into()))?;
        match kind {
            command::Kind::Create(req) => {
                let (rev, c) = self.create(&origin, req).await?;
                Ok((rev, reply::Result::Cluster(c)))
            }
            command::Kind::Update(req) => {
                let (rev, c) = self.update(&origin, req).await?;
                Ok((rev, reply::Result::Cluster(c)))
            }
            command::Kind::Delete(q) => {
                let rev = self.delete(&origin, q).await?;
                Ok((rev, reply::Result::Empty(ClusterResponse {})))
            }
            command::Kind::InvalidateCache(q) => {
                let (rev, c) = self.invalidate_cache(&origin, q).await?;
                Ok((rev, reply::Result::Cluster(c)))
            }
        }
    }
}

#[async_trait::async_trait]
impl ClusterCommands for Registry {
    async fn command(&self, command: Command) -> Reply {
        let kind = match &command.kind {
            Some(command::Kind::Create(_)) => "create",
            Some(command::Kind::Update(_)) => "update",
            Some(command::Kind::Delete(_)) => "delete",
            Some(command::Kind::InvalidateCache(_)) => "invalidate_cache",
            None => "empty",
        };
        let correlation_id = command.context.as_ref().map(|c| c.correlation_id.clone()).unwrap_or_default();
        // The span the command arrived in (the NATS consumer's, or the caller's in one process)
        // carries what it is and what it made: a span of its own for each command would cost
        // every create one more exported span and say nothing that one does not.
        let arrived = tracing::Span::current();
        corral_telemetry::trace::set_attribute(&arrived, "corral.command", kind);
        if !correlation_id.is_empty() {
            corral_telemetry::trace::set_attribute(&arrived, "corral.correlation_id", correlation_id.clone());
        }
        let span = debug_span!("registry.command", kind, correlation_id, revision = tracing::field::Empty);
        // Boxed, so that what wraps it (the span, the trait's own box) moves a pointer rather than
        // the command's whole state, which is kilobytes.
        let handling = Box::pin(self.handle_command(command));
        let reply = to_reply(handling.instrument(span.clone()).await);
        span.record("revision", reply.revision);
        if reply.revision > 0 {
            corral_telemetry::trace::set_attribute(
                &arrived,
                "corral.revision",
                corral_telemetry::trace::int(reply.revision),
            );
        }
        reply
    }
}

#[async_trait::async_trait]
impl ClusterQueries for Registry {
    async fn query(&self, query: Query) -> Reply {
        self.queries.query(query).await
    }

    async fn list_encoded(&self, query: Query) -> Result<(u64, EncodedList), Reply> {
        self.queries.list_encoded(query).await
    }
}

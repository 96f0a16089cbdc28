//! The watches of one process. One follower reads the public stream's tail into a ring of recent
//! events that every watch reads from; a watch further behind than the ring reads the stream
//! itself, at its own pace, until it is back in the ring. No watch is ever skipped ahead: one that
//! falls behind what the stream still keeps ends with [`WatchError::Expired`].

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use corral_cluster_model::Queries;
use corral_cluster_model::change::{Reason, WatchType, watch_type};
use corral_cluster_model::selector::Selector;
use corral_event_log::{EventLog, StallWatch};
use corral_proto::v1alpha1::Cluster;
use corral_proto::watch::ClusterEvent;
use futures::StreamExt as _;
use tokio::sync::{mpsc, watch};

use crate::error::WatchError;
use crate::public::{self, PublicEvent};

/// Recent public events kept in memory for every watch to share, by default.
pub const RING: usize = 4096;
/// Most events a watch takes at once, from the ring or the stream.
const READ_BATCH: usize = 256;
/// How often the hub compares where its subscription stands with the public stream's end.
const STALL_LOOK_EVERY: Duration = Duration::from_secs(2);
/// How often a watch checks that its caller's credentials still hold.
pub const AUTH_CHECK_EVERY: Duration = Duration::from_millis(500);
/// A bookmark after this long without a matching event, when asked for.
pub const BOOKMARK_AFTER: Duration = Duration::from_secs(30);

#[derive(Clone)]
struct Item {
    seq: u64,
    event: Arc<Shared>,
}

/// A public event and what watches make of it, made once for all of them: the event as ADDED,
/// MODIFIED and DELETED, each rendered for the wire when first asked for.
struct Shared {
    public: PublicEvent,
    views: [std::sync::OnceLock<Arc<Rendered>>; 3],
}

impl Shared {
    fn new(public: PublicEvent) -> Shared {
        Shared { public, views: Default::default() }
    }
}

/// One event as a watch sends it, with its protobuf and JSON encodings made at most once however
/// many watches send it.
#[derive(Debug)]
pub struct Rendered {
    pub event: ClusterEvent,
    proto: std::sync::OnceLock<bytes::Bytes>,
    json: std::sync::OnceLock<bytes::Bytes>,
}

impl Rendered {
    pub fn new(event: ClusterEvent) -> Rendered {
        Rendered { event, proto: Default::default(), json: Default::default() }
    }

    /// The event encoded as protobuf.
    pub fn proto(&self) -> bytes::Bytes {
        self.proto.get_or_init(|| prost::Message::encode_to_vec(&self.event).into()).clone()
    }

    /// `{"result": event}` as JSON, the REST stream's line.
    pub fn json(&self) -> bytes::Bytes {
        self.json
            .get_or_init(|| {
                serde_json::json!({"result": corral_api_json::cluster_event_to_json(&self.event)}).to_string().into()
            })
            .clone()
    }
}

pub struct Hub {
    internal: Arc<dyn EventLog>,
    public: Arc<dyn EventLog>,
    view: Arc<Queries>,
    ring: RwLock<VecDeque<Item>>,
    /// The public sequence of the newest event in the ring.
    head: watch::Sender<u64>,
    bookmark_after: Duration,
    ring_capacity: usize,
}

/// How a hub serves its watches.
#[derive(Debug, Clone, Copy)]
pub struct HubConfig {
    /// A bookmark after this long without a matching event, for watches that asked.
    pub bookmark_after: Duration,
    /// How many recent events are kept in memory; a watch further behind reads the stream.
    pub ring: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig { bookmark_after: BOOKMARK_AFTER, ring: RING }
    }
}

/// What a watch asks for.
#[derive(Debug, Default, Clone)]
pub struct WatchRequest {
    pub resource_version: String,
    pub selector: String,
    pub name: String,
    pub server: String,
    pub send_initial_events: Option<bool>,
    pub allow_bookmarks: bool,
}

impl From<corral_proto::watch::WatchClustersRequest> for WatchRequest {
    fn from(r: corral_proto::watch::WatchClustersRequest) -> Self {
        WatchRequest {
            resource_version: r.resource_version,
            selector: r.selector,
            name: r.name,
            server: r.server,
            send_initial_events: r.send_initial_events,
            allow_bookmarks: r.allow_bookmarks,
        }
    }
}

/// Who watches: what they may see, and whether they still may.
#[async_trait::async_trait]
pub trait Watcher: Send + Sync + 'static {
    fn may_see(&self, cluster: &Cluster) -> bool;
    /// `Err` with the reason once the caller's credentials no longer hold.
    async fn still_authorised(&self) -> Result<(), String>;
}

/// A watch that has been positioned and may start sending.
pub struct Watch {
    hub: Arc<Hub>,
    filter: Filter,
    watcher: Arc<dyn Watcher>,
    initial: Vec<Arc<Rendered>>,
    /// The public sequence to read next, and the revision everything up to which was handled.
    cursor: u64,
    revision: u64,
    allow_bookmarks: bool,
}

struct Filter {
    selector: Selector,
    name: String,
    server: String,
}

impl Filter {
    fn matches(&self, c: &Cluster, watcher: &dyn Watcher) -> bool {
        (self.name.is_empty() || c.name == self.name)
            && (self.server.is_empty() || c.server == self.server)
            && self.selector.matches(&c.labels)
            && watcher.may_see(c)
    }
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

fn bookmark(revision: u64, initial_events_end: bool) -> ClusterEvent {
    ClusterEvent {
        r#type: WatchType::Bookmark.as_str().into(),
        resource_version: revision.to_string(),
        initial_events_end,
        ..Default::default()
    }
}

impl Hub {
    /// Starts following the public stream. `view` answers the initial events; `internal` is the
    /// log the revisions count in.
    pub async fn start(
        internal: Arc<dyn EventLog>,
        public: Arc<dyn EventLog>,
        view: Arc<Queries>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<Arc<Hub>, WatchError> {
        Self::start_with(internal, public, view, HubConfig::default(), shutdown).await
    }

    /// As [`Hub::start`], configured.
    pub async fn start_with(
        internal: Arc<dyn EventLog>,
        public: Arc<dyn EventLog>,
        view: Arc<Queries>,
        config: HubConfig,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<Arc<Hub>, WatchError> {
        let ring_capacity = config.ring.max(1);
        let (first, last) = (public.first_seq().await?, public.last_seq().await?);
        // The ring starts with the stream's most recent events, so that watches resuming near
        // the head after a restart find them in memory.
        let start = first.max(last.saturating_sub(ring_capacity as u64 - 1)).max(1);
        let hub = Arc::new(Hub {
            internal,
            public,
            view,
            ring: RwLock::new(VecDeque::with_capacity(ring_capacity)),
            head: watch::channel(start - 1).0,
            bookmark_after: config.bookmark_after,
            ring_capacity,
        });
        let follower = hub.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown => {}
                _ = follower.follow(start) => {}
            }
        });
        Ok(hub)
    }

    /// Fills the ring from the stream's tail, for as long as the process runs. A subscription
    /// that stands still behind the stream's end is made again ([`StallWatch`]).
    async fn follow(&self, mut next: u64) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.public.subscribe(next).await {
                Ok(mut events) => {
                    let mut look = tokio::time::interval(STALL_LOOK_EVERY);
                    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let mut stall = StallWatch::default();
                    loop {
                        let item = tokio::select! {
                            item = events.next() => item,
                            _ = look.tick() => {
                                let last = self.public.last_seq().await;
                                if last.is_ok_and(|last| stall.stalled(last, next.saturating_sub(1))) {
                                    tracing::warn!(next, "behind the public stream with nothing delivered; resubscribing");
                                    break;
                                }
                                continue;
                            }
                        };
                        let Some(item) = item else { break };
                        let decoded = item.map_err(WatchError::from).and_then(|ev| {
                            let event = public::decode(&ev)?;
                            Ok(Item { seq: ev.seq, event: Arc::new(Shared::new(event)) })
                        });
                        match decoded {
                            Ok(item) => {
                                next = item.seq + 1;
                                backoff = Duration::from_millis(100);
                                self.push(item);
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "public event stream interrupted");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot follow the public event stream"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    fn push(&self, item: Item) {
        let seq = item.seq;
        {
            let mut ring = self.ring.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            // Only ever the next one: after a gap (retention removed what came between) the ring
            // starts again, so that it always holds consecutive events.
            if ring.back().is_some_and(|b| b.seq + 1 != seq) {
                ring.clear();
            }
            if ring.len() == self.ring_capacity {
                ring.pop_front();
            }
            ring.push_back(item);
        }
        self.head.send_replace(seq);
    }

    /// Up to `max` events from public sequence `from` on: from the ring when it holds `from`,
    /// otherwise from the stream. `Err(Expired)` when retention removed `from`.
    async fn read(&self, from: u64, max: usize) -> Result<Vec<Item>, WatchError> {
        {
            let ring = self.ring.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(front) = ring.front()
                && from >= front.seq
            {
                return Ok(ring.iter().skip((from - front.seq) as usize).take(max).cloned().collect());
            }
        }
        if from > *self.head.borrow() {
            return Ok(Vec::new());
        }
        let events = self.public.read(from, max).await?;
        let mut items = Vec::with_capacity(events.len());
        for ev in events {
            if items.is_empty() && ev.seq != from {
                // What the watch had not read yet is gone.
                let oldest = public::previous_revision_of(&ev)?;
                return Err(WatchError::Expired { asked: 0, oldest });
            }
            items.push(Item { seq: ev.seq, event: Arc::new(Shared::new(public::decode(&ev)?)) });
        }
        Ok(items)
    }

    /// The public sequence of the first event after `revision`, or `Expired` when events after
    /// it are no longer kept.
    async fn position_after(&self, revision: u64) -> Result<u64, WatchError> {
        let first = self.public.first_seq().await?;
        {
            let mut ring = self.ring.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            // What retention removed from the stream is no place to start from.
            while ring.front().is_some_and(|f| f.seq < first) {
                ring.pop_front();
            }
            if let Some(front) = ring.front()
                && front.event.public.previous_revision <= revision
            {
                let after = ring.partition_point(|i| i.event.public.revision <= revision);
                return Ok(front.seq + after as u64);
            }
        }
        let last = self.public.last_seq().await?;
        if first > last {
            if last == 0 {
                return Ok(1);
            }
            // Retention emptied the stream: resumable only if no change came after `revision`.
            let newest =
                self.internal.last_seq_matching(&corral_cluster_model::read_model::cluster_subject_filters()).await?;
            return if revision >= newest {
                Ok(last + 1)
            } else {
                Err(WatchError::Expired { asked: revision, oldest: newest })
            };
        }
        let at = |seq: u64| async move {
            // An event appended a moment ago may not be readable yet (the embedded log answers
            // what it has flushed): look again shortly before giving up.
            for _ in 0..50 {
                if let Some(ev) = self.public.read(seq, 1).await?.into_iter().next() {
                    return Ok((ev.seq, public::revision_of(&ev)?, public::previous_revision_of(&ev)?));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(WatchError::Unavailable(format!("public event {seq} cannot be read")))
        };
        let (first_seq, first_revision, before_first) = at(first).await?;
        if before_first > revision {
            return Err(WatchError::Expired { asked: revision, oldest: before_first });
        }
        if first_revision > revision {
            return Ok(first_seq);
        }
        // The first event with a revision above `revision`: in (lo, hi], the stream's sequences
        // being consecutive from its first.
        let (mut lo, mut hi) = (first_seq, last + 1);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            let (_, rev, _) = at(mid).await?;
            if rev <= revision {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(hi)
    }

    /// Checks and positions a watch. Everything a caller can get wrong is refused here, before
    /// anything is sent.
    pub async fn open(self: &Arc<Hub>, req: WatchRequest, watcher: Arc<dyn Watcher>) -> Result<Watch, WatchError> {
        let selector = Selector::parse(&req.selector)?;
        let filter = Filter { selector, name: req.name, server: req.server };
        let asked = match req.resource_version.trim() {
            "" => None,
            rv => Some(rv.parse::<u64>().map_err(|_| {
                WatchError::InvalidArgument(format!("resource_version: {rv:?} is not a revision (a decimal number)"))
            })?),
        };
        let head = self.internal.last_seq().await?;
        if let Some(r) = asked
            && r > head
        {
            return Err(WatchError::InvalidArgument(format!(
                "resource_version: {r} is ahead of the log, whose latest revision is {head}"
            )));
        }
        let send_initial = req.send_initial_events.unwrap_or(asked.is_none());
        let (revision, initial) = if send_initial {
            // Initial events as of at least the revision asked for.
            if let Some(r) = asked {
                self.view.wait_for(r).await?;
            }
            let (at, clusters) = self.view.snapshot()?;
            let mut initial: Vec<Arc<Rendered>> = clusters
                .into_iter()
                .filter(|c| filter.matches(c, watcher.as_ref()))
                .map(|c| {
                    Arc::new(Rendered::new(ClusterEvent {
                        r#type: WatchType::Added.as_str().into(),
                        resource_version: at.to_string(),
                        cluster: Some(c),
                        ..Default::default()
                    }))
                })
                .collect();
            initial.push(Arc::new(Rendered::new(bookmark(at, true))));
            (at, initial)
        } else {
            (asked.unwrap_or(head), Vec::new())
        };
        let cursor = self.position_after(revision).await.map_err(|e| match e {
            WatchError::Expired { oldest, .. } => WatchError::Expired { asked: revision, oldest },
            other => other,
        })?;
        Ok(Watch {
            hub: self.clone(),
            filter,
            watcher,
            initial,
            cursor,
            revision,
            allow_bookmarks: req.allow_bookmarks,
        })
    }
}

impl Watch {
    /// The event `e` is for this watch, if it sees it; shared with every watch that sees it alike.
    fn event_for(&self, shared: &Shared) -> Option<Arc<Rendered>> {
        let e = &shared.public;
        let watcher = self.watcher.as_ref();
        let before = e.previous.as_ref().unwrap_or(&e.cluster);
        let matched_before = e.reason != Reason::Registered && self.filter.matches(before, watcher);
        let matches_after = e.reason != Reason::Deleted && self.filter.matches(&e.cluster, watcher);
        let kind = watch_type(e.reason, matched_before, matches_after)?;
        let view = match kind {
            WatchType::Added => 0,
            WatchType::Modified => 1,
            _ => 2,
        };
        let rendered = shared.views[view].get_or_init(|| {
            // A cluster that stopped matching leaves with its last matching state.
            let cluster = if kind == WatchType::Deleted && e.reason != Reason::Deleted { before } else { &e.cluster };
            Arc::new(Rendered::new(ClusterEvent {
                r#type: kind.as_str().into(),
                reason: e.reason.as_str().into(),
                resource_version: e.revision.to_string(),
                cluster: Some(cluster.clone()),
                occurred_at: Some(timestamp(e.occurred_at)),
                initial_events_end: false,
            }))
        });
        Some(rendered.clone())
    }

    /// Sends the watch's events into `out` until the receiver is dropped or the watch ends with
    /// an error, which is sent last. A slow receiver slows this watch only.
    pub async fn run(mut self, out: mpsc::Sender<Result<Arc<Rendered>, WatchError>>) {
        if let Err(Ended::Error(e)) = self.send_all(&out).await {
            let _ = out.send(Err(e)).await;
        }
    }

    async fn send_all(&mut self, out: &mpsc::Sender<Result<Arc<Rendered>, WatchError>>) -> Result<(), Ended> {
        let send = |ev: Arc<Rendered>| async move { out.send(Ok(ev)).await.map_err(|_| Ended::Closed) };
        for ev in std::mem::take(&mut self.initial) {
            send(ev).await?;
        }
        let mut head = self.hub.head.subscribe();
        let mut checked = tokio::time::Instant::now();
        let mut quiet_since = tokio::time::Instant::now();
        loop {
            if checked.elapsed() >= AUTH_CHECK_EVERY {
                self.watcher.still_authorised().await.map_err(|m| Ended::Error(WatchError::Unauthenticated(m)))?;
                checked = tokio::time::Instant::now();
            }
            // Marks the head seen before reading, so that an event pushed after the read wakes
            // the wait below.
            head.borrow_and_update();
            let items = self.hub.read(self.cursor, READ_BATCH).await.map_err(|e| {
                Ended::Error(match e {
                    WatchError::Expired { oldest, .. } => WatchError::Expired { asked: self.revision, oldest },
                    other => other,
                })
            })?;
            if items.is_empty() {
                let bookmark_at = quiet_since + self.hub.bookmark_after;
                tokio::select! {
                    _ = head.changed() => {}
                    _ = tokio::time::sleep_until(checked + AUTH_CHECK_EVERY) => {}
                    _ = tokio::time::sleep_until(bookmark_at), if self.allow_bookmarks => {
                        send(Arc::new(Rendered::new(bookmark(self.revision, false)))).await?;
                        quiet_since = tokio::time::Instant::now();
                    }
                    _ = out.closed() => return Err(Ended::Closed),
                }
                continue;
            }
            for item in items {
                self.cursor = item.seq + 1;
                // Announced late, after the initial events already showed it.
                if item.event.public.revision <= self.revision {
                    continue;
                }
                self.revision = item.event.public.revision;
                if let Some(ev) = self.event_for(&item.event) {
                    send(ev).await?;
                    quiet_since = tokio::time::Instant::now();
                }
            }
        }
    }
}

enum Ended {
    Closed,
    Error(WatchError),
}

//! Sled projections: read model and last applied sequence written atomically, rebuildable.
//!
//! A [`Projection`] keeps a read model in one sled tree together with the sequence of the last
//! event applied to it, under the reserved key prefix [`META_PREFIX`]. Both are written by one
//! `Tree::apply_batch`, which sled applies atomically (also across a crash), so after a restart
//! the projection resumes exactly after the last event whose changes are visible, and applying
//! an event twice changes nothing.
//!
//! The read model lives in generations (`{name}/gen{N}` trees). [`Projection::begin_rebuild`]
//! fills the next generation from zero while the active one keeps serving; [`Rebuild::switch`]
//! makes it active with a single write to the meta tree.
//!
//! Reads are served from a copy of the read model in memory, which follows every stored batch:
//! sled lookups copy and merge pages, and cost more than the rest of a fold. A projection that
//! is rebuilt from the log on every start anyway (a gateway's view) can be made with
//! [`Projection::in_memory`] and skip sled altogether.
//!
//! [`run`] follows an event log and feeds each event through a fold function.

mod runner;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

pub use runner::run;
use tokio::sync::watch;

/// Keys under this prefix belong to the projection itself; user keys must not use it.
pub const META_PREFIX: &[u8] = b"\0meta/";
/// Where the last applied sequence (u64, big endian) is kept, inside the read model's tree.
const LAST_APPLIED_KEY: &[u8] = b"\0meta/last_applied";
/// The tree holding each projection's active generation (key: projection name, value: u64 BE).
const META_TREE: &[u8] = b"corral-projection/meta";

/// What can go wrong with a projection.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("projection storage: {0}")]
    Storage(#[from] sled::Error),
    /// A key passed to `apply` or `get` starts with the reserved [`META_PREFIX`].
    #[error("key {0:?} uses the reserved prefix \\0meta/")]
    ReservedKey(String),
    /// A stored meta value could not be decoded.
    #[error("projection {name}: corrupt metadata: {message}")]
    Corrupt { name: String, message: String },
    #[error("projection name must not be empty")]
    EmptyName,
    /// `wait_for` gave up.
    #[error("timed out waiting for sequence {seq}; last applied is {last_applied}")]
    Timeout { seq: u64, last_applied: u64 },
    /// Only one rebuild of a projection may run at a time.
    #[error("projection {0} is already being rebuilt")]
    RebuildInProgress(String),
    /// `begin_rebuild` was called on a rebuild's own projection.
    #[error("projection {0} is a rebuild; rebuild the live projection instead")]
    NotLive(String),
    /// `switch` would move the read model backwards.
    #[error("rebuild is at sequence {rebuild}, behind the live projection at {live}")]
    NotCaughtUp { rebuild: u64, live: u64 },
    /// The rebuild was switched in or abandoned; its handle no longer accepts changes.
    #[error("projection {0} was switched in or abandoned and accepts no more changes")]
    Retired(String),
    /// The fold function refused an event; the projection stops there.
    #[error("fold failed at sequence {seq}: {source}")]
    Fold {
        seq: u64,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The writes one event makes to the read model. Later calls for the same key win.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    ops: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Changes {
    pub fn new() -> Changes {
        Changes::default()
    }

    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.insert(key.into(), Some(value.into()));
    }

    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.insert(key.into(), None);
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// The pending write for `key`: `Some(Some(v))` put, `Some(None)` delete, `None` untouched.
    pub fn get(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        self.ops.get(key).map(|v| v.as_deref())
    }

    /// Adds `later`'s writes, which win over these for the same key.
    pub fn extend(&mut self, later: Changes) {
        self.ops.extend(later.ops);
    }

    /// Each pending write in key order; `None` is a delete.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.ops.iter().map(|(k, v)| (k.as_slice(), v.as_deref()))
    }
}

/// Read access to a read model, as a fold sees it.
pub trait Read {
    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>, ProjectionError>;
}

impl Read for Projection {
    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>, ProjectionError> {
        Projection::get(self, key)
    }
}

/// The projection as applied, seen through the changes of the events staged before this one in
/// the same write: what a fold reads while several events are applied at once.
pub struct Staged<'a> {
    projection: &'a Projection,
    pending: &'a Changes,
}

impl<'a> Staged<'a> {
    pub fn new(projection: &'a Projection, pending: &'a Changes) -> Staged<'a> {
        Staged { projection, pending }
    }
}

impl Read for Staged<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>, ProjectionError> {
        match self.pending.get(key) {
            Some(staged) => Ok(staged.map(sled::IVec::from)),
            None => self.projection.get(key),
        }
    }
}

/// The read model in key order, as stored.
type Mirror = BTreeMap<Vec<u8>, sled::IVec>;

struct Active {
    generation: u64,
    /// None for a projection kept in memory only.
    tree: Option<sled::Tree>,
    data: Mirror,
}

/// Every user entry of `tree`.
fn load_mirror(tree: &sled::Tree) -> Result<Mirror, ProjectionError> {
    let mut data = Mirror::new();
    for item in tree.iter() {
        let (k, v) = item?;
        if !k.starts_with(META_PREFIX) {
            data.insert(k.to_vec(), v);
        }
    }
    Ok(data)
}

/// Where a stored projection lives.
#[derive(Clone)]
struct Store {
    db: sled::Db,
    meta: sled::Tree,
}

struct Inner {
    /// None for a projection kept in memory only.
    store: Option<Store>,
    name: String,
    /// False for a rebuild's own handle.
    live: bool,
    active: RwLock<Active>,
    /// Serializes writers so the seq check and the batch are one step.
    write: Mutex<()>,
    /// Last applied sequence; the single source of truth in memory, mirrored in the tree.
    applied: watch::Sender<u64>,
    /// Set once a rebuild's handle is switched in or abandoned; a watch so `run` can stop.
    retired: watch::Sender<bool>,
    rebuilding: AtomicBool,
}

/// A sled-backed projection. Cheap to clone; clones share state.
///
/// Open each projection name once per process and clone the handle: two independent handles
/// on the same name would not serialize their writes.
#[derive(Clone)]
pub struct Projection {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Projection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projection")
            .field("name", &self.inner.name)
            .field("generation", &self.generation())
            .field("last_applied", &self.last_applied())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave sled half-written (batches are atomic).
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn tree_name(name: &str, generation: u64) -> String {
    format!("{name}/gen{generation}")
}

fn decode_u64(name: &str, what: &str, v: &[u8]) -> Result<u64, ProjectionError> {
    let bytes: [u8; 8] = v.try_into().map_err(|_| ProjectionError::Corrupt {
        name: name.to_owned(),
        message: format!("{what} is {} bytes, expected 8", v.len()),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

fn read_last_applied(name: &str, tree: &sled::Tree) -> Result<u64, ProjectionError> {
    match tree.get(LAST_APPLIED_KEY)? {
        Some(v) => decode_u64(name, "last applied sequence", &v),
        None => Ok(0),
    }
}

fn check_key(key: &[u8]) -> Result<(), ProjectionError> {
    if key.starts_with(META_PREFIX) {
        return Err(ProjectionError::ReservedKey(String::from_utf8_lossy(key).into_owned()));
    }
    Ok(())
}

impl Projection {
    /// Opens (or creates) the projection `name` in `db` at its active generation.
    pub fn open(db: &sled::Db, name: &str) -> Result<Projection, ProjectionError> {
        if name.is_empty() {
            return Err(ProjectionError::EmptyName);
        }
        let meta = db.open_tree(META_TREE)?;
        let generation = match meta.get(name.as_bytes())? {
            Some(v) => decode_u64(name, "active generation", &v)?,
            None => 0,
        };
        // Older generations are leftovers of a switch whose cleanup was interrupted; nothing
        // else can hold them now. Newer ones belong to an unfinished rebuild and are cleared
        // when the next rebuild begins.
        for old in 0..generation {
            db.drop_tree(tree_name(name, old))?;
        }
        let tree = db.open_tree(tree_name(name, generation))?;
        let last = read_last_applied(name, &tree)?;
        let data = load_mirror(&tree)?;
        let store = Store { db: db.clone(), meta };
        Ok(Projection::from_parts(Some(store), name, true, Active { generation, tree: Some(tree), data }, last))
    }

    /// A projection kept in memory only: it starts empty on every start and is filled from the
    /// log, for a replica whose view is rebuilt whenever it starts.
    pub fn in_memory(name: &str) -> Result<Projection, ProjectionError> {
        if name.is_empty() {
            return Err(ProjectionError::EmptyName);
        }
        Ok(Projection::from_parts(None, name, true, Active { generation: 0, tree: None, data: Mirror::new() }, 0))
    }

    fn from_parts(store: Option<Store>, name: &str, live: bool, active: Active, last: u64) -> Projection {
        let (applied, _) = watch::channel(last);
        Projection {
            inner: Arc::new(Inner {
                store,
                name: name.to_owned(),
                live,
                active: RwLock::new(active),
                write: Mutex::new(()),
                applied,
                retired: watch::channel(false).0,
                rebuilding: AtomicBool::new(false),
            }),
        }
    }

    fn active(&self) -> std::sync::RwLockReadGuard<'_, Active> {
        self.inner.active.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn active_mut(&self) -> std::sync::RwLockWriteGuard<'_, Active> {
        self.inner.active.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn tree(&self) -> Option<sled::Tree> {
        self.active().tree.clone()
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The generation whose tree this handle reads and writes.
    pub fn generation(&self) -> u64 {
        self.active().generation
    }

    /// The sequence of the last applied event (0: none).
    pub fn last_applied(&self) -> u64 {
        *self.inner.applied.borrow()
    }

    /// Applies the changes for event `seq` atomically with the new last_applied. If
    /// seq <= last_applied, does nothing and returns Ok(false).
    pub fn apply(&self, seq: u64, changes: Changes) -> Result<bool, ProjectionError> {
        let _writer = lock(&self.inner.write);
        if *self.inner.retired.borrow() {
            return Err(ProjectionError::Retired(self.inner.name.clone()));
        }
        if seq <= self.last_applied() {
            return Ok(false);
        }
        let mut ops = Vec::with_capacity(changes.ops.len());
        for (key, value) in changes.ops {
            check_key(&key)?;
            ops.push((key, value.map(sled::IVec::from)));
        }
        // A projection in memory only has no batch to build.
        if let Some(tree) = self.tree() {
            let mut batch = sled::Batch::default();
            for (key, value) in &ops {
                match value {
                    Some(v) => batch.insert(key.as_slice(), v.clone()),
                    None => batch.remove(key.as_slice()),
                }
            }
            batch.insert(LAST_APPLIED_KEY, &seq.to_be_bytes());
            tree.apply_batch(batch)?;
        }
        // Memory follows a stored batch only, and before last_applied moves, so whoever waits
        // for `seq` reads its changes; readers see the batch whole or not at all.
        {
            let mut active = self.active_mut();
            for (key, value) in ops {
                match value {
                    Some(v) => active.data.insert(key, v),
                    None => active.data.remove(&key),
                };
            }
        }
        self.inner.applied.send_replace(seq);
        Ok(true)
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>, ProjectionError> {
        check_key(key)?;
        Ok(self.active().data.get(key).cloned())
    }

    /// Entries whose key starts with `prefix`, in key order, as they are at the call; the
    /// projection's own metadata is never included.
    pub fn scan_prefix(
        &self,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<(sled::IVec, sled::IVec), ProjectionError>> + use<> {
        use std::ops::Bound;
        let entries: Vec<_> = self
            .active()
            .data
            .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| Ok((sled::IVec::from(k.as_slice()), v.clone())))
            .collect();
        entries.into_iter()
    }

    /// Resolves once last_applied >= seq; returns Err on timeout.
    pub async fn wait_for(&self, seq: u64, timeout: Duration) -> Result<(), ProjectionError> {
        let mut rx = self.inner.applied.subscribe();
        let reached = tokio::time::timeout(timeout, async move {
            // The sender lives in `self.inner`, so the channel cannot close while we wait.
            rx.wait_for(|last| *last >= seq).await.is_ok()
        })
        .await;
        match reached {
            Ok(true) => Ok(()),
            _ => Err(ProjectionError::Timeout { seq, last_applied: self.last_applied() }),
        }
    }

    /// Resolves once this handle is retired (a rebuild switched in or abandoned); never for a
    /// live projection.
    pub(crate) async fn retired(&self) {
        let mut rx = self.inner.retired.subscribe();
        // The sender lives in `self.inner`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|retired| *retired).await;
    }

    /// A receiver of last_applied; it sees every advance (and a switch to a rebuild).
    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.inner.applied.subscribe()
    }

    /// Starts a new empty generation; events are applied to it via `Rebuild::apply` (or by
    /// running [`run`] on [`Rebuild::projection`]), and `Rebuild::switch` makes it active in
    /// one write and drops the old trees. Only one rebuild at a time.
    pub fn begin_rebuild(&self) -> Result<Rebuild, ProjectionError> {
        if !self.inner.live {
            return Err(ProjectionError::NotLive(self.inner.name.clone()));
        }
        if self.inner.rebuilding.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return Err(ProjectionError::RebuildInProgress(self.inner.name.clone()));
        }
        let started = (|| {
            let generation = self.generation() + 1;
            let (store, tree) = match &self.inner.store {
                Some(store) => {
                    let name = tree_name(&self.inner.name, generation);
                    // Whatever an abandoned rebuild left there must not leak into this one.
                    store.db.drop_tree(&name)?;
                    let tree = store.db.open_tree(&name)?;
                    (Some(store.clone()), Some(tree))
                }
                None => (None, None),
            };
            let active = Active { generation, tree, data: Mirror::new() };
            Ok::<_, ProjectionError>(Projection::from_parts(store, &self.inner.name, false, active, 0))
        })();
        match started {
            Ok(next) => Ok(Rebuild { live: self.clone(), next, done: false }),
            Err(e) => {
                self.inner.rebuilding.store(false, Ordering::Release);
                Err(e)
            }
        }
    }

    /// Makes everything applied so far durable.
    pub fn flush(&self) -> Result<(), ProjectionError> {
        if let Some(store) = &self.inner.store {
            store.db.flush()?;
        }
        Ok(())
    }

    /// Like [`Projection::flush`], without blocking the executor.
    pub async fn flush_async(&self) -> Result<(), ProjectionError> {
        if let Some(store) = &self.inner.store {
            store.db.flush_async().await?;
        }
        Ok(())
    }
}

/// A generation being built from zero beside the live one. Dropping it without
/// [`Rebuild::switch`] abandons it: the live projection is untouched.
pub struct Rebuild {
    live: Projection,
    next: Projection,
    done: bool,
}

impl std::fmt::Debug for Rebuild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rebuild").field("live", &self.live).field("next", &self.next).finish()
    }
}

impl Rebuild {
    /// The generation being built.
    pub fn generation(&self) -> u64 {
        self.next.generation()
    }

    /// A projection handle on the generation being built, for the fold to read and for
    /// [`run`] to feed. It stops accepting changes once the rebuild is switched or dropped.
    pub fn projection(&self) -> &Projection {
        &self.next
    }

    pub fn last_applied(&self) -> u64 {
        self.next.last_applied()
    }

    pub fn apply(&self, seq: u64, changes: Changes) -> Result<bool, ProjectionError> {
        self.next.apply(seq, changes)
    }

    /// Makes the new generation active: one write to the meta tree, then the live handle (and
    /// all its clones) reads the new tree and the old one is emptied. Refused with
    /// `NotCaughtUp` (abandoning the rebuild) if the new generation is behind the live one;
    /// see [`Rebuild::switch_when_caught_up`] while the live projection keeps moving.
    pub fn switch(mut self) -> Result<(), ProjectionError> {
        self.try_switch()
    }

    /// Waits until the new generation has reached the live one and switches, retrying while
    /// the live projection moves on; gives up (abandoning the rebuild) after `timeout`.
    pub async fn switch_when_caught_up(mut self, timeout: Duration) -> Result<(), ProjectionError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let target = self.live.last_applied();
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            self.next.wait_for(target, left).await?;
            match self.try_switch() {
                Err(ProjectionError::NotCaughtUp { .. }) => continue,
                other => return other,
            }
        }
    }

    fn try_switch(&mut self) -> Result<(), ProjectionError> {
        // Both writers are held: no event lands in either generation while the pointer moves.
        let _live_writer = lock(&self.live.inner.write);
        let _next_writer = lock(&self.next.inner.write);
        let live_last = self.live.last_applied();
        let next_last = self.next.last_applied();
        if next_last < live_last {
            return Err(ProjectionError::NotCaughtUp { rebuild: next_last, live: live_last });
        }
        let inner = &self.live.inner;
        let generation = self.next.generation();
        if let Some(store) = &inner.store {
            // The new generation must be durable before anything points at it; a failure here
            // leaves everything as it was.
            store.db.flush()?;
            // The switch itself: from here on the new generation is the projection.
            store.meta.insert(inner.name.as_bytes(), &generation.to_be_bytes())?;
        }
        let data = std::mem::take(&mut self.next.active_mut().data);
        let next = Active { generation, tree: self.next.tree(), data };
        let old = std::mem::replace(&mut *self.live.active_mut(), next);
        inner.applied.send_replace(next_last);
        self.next.inner.retired.send_replace(true);
        self.done = true;
        inner.rebuilding.store(false, Ordering::Release);
        if let Some(store) = &inner.store
            && let Err(e) = store.db.flush()
        {
            // Not fatal: sled persists the switch with its next background flush.
            tracing::warn!(projection = %inner.name, error = %e, "could not flush the switch");
        }
        // Emptied rather than dropped: a reader may still hold the old tree for a moment, and
        // sled frees a dropped tree's pages under it. `open` drops it on the next start.
        if let Some(tree) = old.tree
            && let Err(e) = tree.clear()
        {
            tracing::warn!(projection = %inner.name, error = %e, "could not clear old generation");
        }
        Ok(())
    }
}

impl Drop for Rebuild {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        {
            // Under the writer lock, so no apply to the abandoned tree can follow the clear.
            let _next_writer = lock(&self.next.inner.write);
            self.next.inner.retired.send_replace(true);
            // Best effort: a leftover tree is dropped by the next begin_rebuild anyway.
            if let Some(tree) = self.next.tree() {
                let _ = tree.clear();
            }
            self.next.active_mut().data.clear();
        }
        self.live.inner.rebuilding.store(false, Ordering::Release);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, sled::Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        (dir, db)
    }

    fn changes(ops: &[(&str, Option<&str>)]) -> Changes {
        let mut c = Changes::default();
        for (k, v) in ops {
            match v {
                Some(v) => c.put(k.as_bytes(), v.as_bytes()),
                None => c.delete(k.as_bytes()),
            }
        }
        c
    }

    fn read(p: &Projection, key: &str) -> Option<String> {
        p.get(key.as_bytes()).unwrap().map(|v| String::from_utf8(v.to_vec()).unwrap())
    }

    fn all(p: &Projection) -> Vec<(String, String)> {
        p.scan_prefix(b"")
            .map(|r| {
                let (k, v) = r.unwrap();
                (String::from_utf8(k.to_vec()).unwrap(), String::from_utf8(v.to_vec()).unwrap())
            })
            .collect()
    }

    #[test]
    fn apply_writes_changes_and_last_applied_together() {
        // given a fresh projection
        let (_dir, db) = db();
        let p = Projection::open(&db, "t").unwrap();
        assert_eq!(p.last_applied(), 0);
        // when an event's changes are applied
        let applied = p.apply(1, changes(&[("a", Some("1")), ("b", Some("2"))])).unwrap();
        // then both the data and the sequence are there, in the same tree
        assert!(applied);
        assert_eq!(p.last_applied(), 1);
        assert_eq!(read(&p, "a").as_deref(), Some("1"));
        let tree = db.open_tree("t/gen0").unwrap();
        assert_eq!(tree.get(LAST_APPLIED_KEY).unwrap().as_deref(), Some(&1u64.to_be_bytes()[..]));
        // and deletes and overwrites work, later writes for a key winning
        p.apply(2, changes(&[("a", None), ("b", Some("3")), ("c", Some("x")), ("c", None)])).unwrap();
        assert_eq!(all(&p), vec![("b".to_owned(), "3".to_owned())]);
    }

    #[test]
    fn reapplying_an_event_changes_nothing() {
        let (_dir, db) = db();
        let p = Projection::open(&db, "t").unwrap();
        assert!(p.apply(5, changes(&[("a", Some("1"))])).unwrap());
        // when the same or an older event comes again with other changes
        assert!(!p.apply(5, changes(&[("a", Some("2"))])).unwrap());
        assert!(!p.apply(3, changes(&[("z", Some("2"))])).unwrap());
        // then nothing changed
        assert_eq!(p.last_applied(), 5);
        assert_eq!(all(&p), vec![("a".to_owned(), "1".to_owned())]);
        // and gaps in the sequence are fine (filtered subjects)
        assert!(p.apply(9, Changes::new()).unwrap());
        assert_eq!(p.last_applied(), 9);
    }

    #[test]
    fn a_failed_batch_applies_nothing() {
        let (_dir, db) = db();
        let p = Projection::open(&db, "t").unwrap();
        let mut c = changes(&[("a", Some("1"))]);
        c.put(b"\0meta/last_applied".to_vec(), b"x".to_vec());
        assert!(matches!(p.apply(1, c), Err(ProjectionError::ReservedKey(_))));
        assert_eq!(p.last_applied(), 0);
        assert_eq!(read(&p, "a"), None);
        assert!(matches!(p.get(b"\0meta/last_applied"), Err(ProjectionError::ReservedKey(_))));
    }

    #[test]
    fn reads_from_memory_match_the_stored_tree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let before = {
            let db = sled::open(&path).unwrap();
            let p = Projection::open(&db, "t").unwrap();
            p.apply(1, changes(&[("a", Some("1")), ("b", Some("2")), ("c", Some("3"))])).unwrap();
            p.apply(2, changes(&[("b", None), ("c", Some("4")), ("d", Some("5"))])).unwrap();
            // a redelivered event and a refused batch leave memory as they leave the tree
            assert!(!p.apply(2, changes(&[("a", None)])).unwrap());
            assert!(p.apply(3, changes(&[("a", None), ("\0meta/x", Some("y"))])).is_err());
            p.flush().unwrap();
            all(&p)
        };
        let pairs = |v: &[(&str, &str)]| v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        assert_eq!(before, pairs(&[("a", "1"), ("c", "4"), ("d", "5")]));
        let db = sled::open(&path).unwrap();
        let stored: Vec<_> = db
            .open_tree("t/gen0")
            .unwrap()
            .iter()
            .map(Result::unwrap)
            .filter(|(k, _)| !k.starts_with(META_PREFIX))
            .map(|(k, v)| (String::from_utf8(k.to_vec()).unwrap(), String::from_utf8(v.to_vec()).unwrap()))
            .collect();
        assert_eq!(stored, before);
        // and a reopened projection reads the same
        assert_eq!(all(&Projection::open(&db, "t").unwrap()), before);
    }

    #[tokio::test]
    async fn a_projection_in_memory_behaves_as_a_stored_one() {
        assert!(matches!(Projection::in_memory(""), Err(ProjectionError::EmptyName)));
        let p = Projection::in_memory("view").unwrap();
        assert_eq!((p.last_applied(), p.generation()), (0, 0));
        p.apply(1, changes(&[("c/1", Some("a")), ("c/2", Some("b")), ("n/1", Some("c"))])).unwrap();
        assert!(!p.apply(1, changes(&[("c/1", Some("x"))])).unwrap());
        assert!(matches!(
            p.apply(2, changes(&[("c/1", None), ("\0meta/x", Some("y"))])),
            Err(ProjectionError::ReservedKey(_))
        ));
        p.apply(2, changes(&[("c/2", None)])).unwrap();
        assert_eq!(read(&p, "c/1").as_deref(), Some("a"));
        assert_eq!(read(&p, "c/2"), None);
        let keys: Vec<_> = p.scan_prefix(b"c/").map(|r| r.unwrap().0.to_vec()).collect();
        assert_eq!(keys, vec![b"c/1".to_vec()]);
        p.wait_for(2, Duration::from_millis(10)).await.unwrap();
        p.flush_async().await.unwrap();

        // A rebuild fills a generation of its own and switches it in.
        let rebuild = p.begin_rebuild().unwrap();
        assert_eq!(rebuild.generation(), 1);
        rebuild.apply(1, changes(&[("c/9", Some("z"))])).unwrap();
        assert_eq!(read(&p, "c/9"), None);
        assert!(matches!(p.begin_rebuild().map(|_| ()), Err(ProjectionError::RebuildInProgress(_))));
        rebuild.apply(2, changes(&[("c/8", Some("y"))])).unwrap();
        rebuild.switch().unwrap();
        assert_eq!((p.generation(), p.last_applied()), (1, 2));
        assert_eq!(all(&p), vec![("c/8".to_owned(), "y".to_owned()), ("c/9".to_owned(), "z".to_owned())]);
        // An abandoned one leaves the live projection as it was.
        let abandoned = p.begin_rebuild().unwrap();
        abandoned.apply(1, changes(&[("c/7", Some("q"))])).unwrap();
        drop(abandoned);
        assert_eq!(all(&p).len(), 2);
        assert!(p.begin_rebuild().is_ok());
    }

    #[test]
    fn scan_prefix_hides_metadata() {
        let (_dir, db) = db();
        let p = Projection::open(&db, "t").unwrap();
        p.apply(1, changes(&[("c/1", Some("a")), ("c/2", Some("b")), ("n/1", Some("c"))])).unwrap();
        let keys: Vec<_> = p.scan_prefix(b"c/").map(|r| r.unwrap().0.to_vec()).collect();
        assert_eq!(keys, vec![b"c/1".to_vec(), b"c/2".to_vec()]);
        assert_eq!(all(&p).len(), 3);
        assert_eq!(p.scan_prefix(b"\0").count(), 0);
    }

    #[test]
    fn reopen_resumes_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let db = sled::open(&path).unwrap();
            let p = Projection::open(&db, "t").unwrap();
            p.apply(1, changes(&[("a", Some("1"))])).unwrap();
            p.apply(2, changes(&[("b", Some("2"))])).unwrap();
            p.flush().unwrap();
        }
        // given the database reopened, as after a restart
        let db = sled::open(&path).unwrap();
        let p = Projection::open(&db, "t").unwrap();
        // then the projection is at the last event with its data
        assert_eq!(p.last_applied(), 2);
        assert_eq!(read(&p, "b").as_deref(), Some("2"));
        // and redelivered events are ignored
        assert!(!p.apply(2, changes(&[("b", Some("x"))])).unwrap());
        // and other projections in the same db are independent
        let q = Projection::open(&db, "other").unwrap();
        assert_eq!(q.last_applied(), 0);
        assert_eq!(read(&q, "b"), None);
    }

    #[test]
    fn rebuild_fills_a_new_generation_and_switches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let db = sled::open(&path).unwrap();
            let live = Projection::open(&db, "t").unwrap();
            live.apply(1, changes(&[("old", Some("1"))])).unwrap();
            live.apply(2, changes(&[("stale", Some("1"))])).unwrap();
            let reader = live.clone();

            // when a rebuild starts
            let rebuild = live.begin_rebuild().unwrap();
            assert_eq!(rebuild.generation(), 1);
            assert!(matches!(live.begin_rebuild(), Err(ProjectionError::RebuildInProgress(_))));
            // then it starts empty while the live one keeps serving
            assert_eq!(rebuild.last_applied(), 0);
            assert_eq!(rebuild.projection().scan_prefix(b"").count(), 0);
            rebuild.apply(1, changes(&[("new", Some("1"))])).unwrap();
            assert_eq!(read(&live, "new"), None);
            rebuild.apply(2, changes(&[("new2", Some("2"))])).unwrap();
            let rx = live.subscribe_applied();
            rebuild.switch().unwrap();

            // then every clone of the live handle reads the new generation
            assert_eq!(reader.generation(), 1);
            assert_eq!(all(&reader), vec![("new".to_owned(), "1".to_owned()), ("new2".to_owned(), "2".to_owned())]);
            assert_eq!(reader.last_applied(), 2);
            assert!(rx.has_changed().unwrap());
            // the old generation is emptied
            assert!(db.open_tree("t/gen0").unwrap().is_empty());
            // and live writes land in the new generation
            live.apply(3, changes(&[("after", Some("3"))])).unwrap();
            assert_eq!(read(&reader, "after").as_deref(), Some("3"));
            live.flush().unwrap();
        }
        // and the switch survives a restart, the old tree being dropped
        let db = sled::open(&path).unwrap();
        let p = Projection::open(&db, "t").unwrap();
        assert_eq!(p.generation(), 1);
        assert_eq!(p.last_applied(), 3);
        assert_eq!(read(&p, "after").as_deref(), Some("3"));
        assert_eq!(read(&p, "old"), None);
        assert!(!db.tree_names().iter().any(|n| n.as_ref() == b"t/gen0"));
    }

    #[test]
    fn switch_refuses_a_rebuild_that_is_behind() {
        let (_dir, db) = db();
        let live = Projection::open(&db, "t").unwrap();
        live.apply(5, changes(&[("a", Some("1"))])).unwrap();
        let rebuild = live.begin_rebuild().unwrap();
        rebuild.apply(3, Changes::new()).unwrap();
        assert!(matches!(rebuild.switch(), Err(ProjectionError::NotCaughtUp { rebuild: 3, live: 5 })));
        // the live projection is untouched and a new rebuild may begin
        assert_eq!(live.generation(), 0);
        assert_eq!(read(&live, "a").as_deref(), Some("1"));
        let again = live.begin_rebuild().unwrap();
        // the abandoned generation's data is gone
        assert_eq!(again.last_applied(), 0);
        assert_eq!(again.projection().scan_prefix(b"").count(), 0);
    }

    #[test]
    fn an_abandoned_rebuild_retires_its_handle() {
        let (_dir, db) = db();
        let live = Projection::open(&db, "t").unwrap();
        let rebuild = live.begin_rebuild().unwrap();
        let handle = rebuild.projection().clone();
        assert!(matches!(handle.begin_rebuild(), Err(ProjectionError::NotLive(_))));
        drop(rebuild);
        assert!(matches!(handle.apply(1, Changes::new()), Err(ProjectionError::Retired(_))));
        assert_eq!(live.generation(), 0);
        assert!(live.begin_rebuild().is_ok());
    }

    #[test]
    fn empty_name_is_refused() {
        let (_dir, db) = db();
        assert!(matches!(Projection::open(&db, ""), Err(ProjectionError::EmptyName)));
    }

    #[tokio::test]
    async fn wait_for_resolves_when_reached_and_times_out_otherwise() {
        let (_dir, db) = db();
        let p = Projection::open(&db, "t").unwrap();
        p.apply(1, Changes::new()).unwrap();
        // already reached
        p.wait_for(1, Duration::from_millis(10)).await.unwrap();
        // reached later by another task
        let writer = p.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            writer.apply(4, Changes::new()).unwrap();
        });
        p.wait_for(3, Duration::from_secs(5)).await.unwrap();
        task.await.unwrap();
        // never reached
        let err = p.wait_for(10, Duration::from_millis(20)).await.unwrap_err();
        assert!(matches!(err, ProjectionError::Timeout { seq: 10, last_applied: 4 }));
    }

    #[tokio::test]
    async fn switch_when_caught_up_waits_for_the_rebuild() {
        let (_dir, db) = db();
        let live = Projection::open(&db, "t").unwrap();
        live.apply(2, Changes::new()).unwrap();
        let rebuild = live.begin_rebuild().unwrap();
        let feeder = rebuild.projection().clone();
        let task = tokio::spawn(async move {
            for seq in 1..=2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                feeder.apply(seq, changes(&[("k", Some(&seq.to_string()))])).unwrap();
            }
        });
        rebuild.switch_when_caught_up(Duration::from_secs(5)).await.unwrap();
        task.await.unwrap();
        assert_eq!(live.generation(), 1);
        assert_eq!(read(&live, "k").as_deref(), Some("2"));
    }
}

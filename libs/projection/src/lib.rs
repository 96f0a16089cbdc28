//! Sled projections: read model and last applied sequence written atomically.
//!
//! A [`Projection`] keeps a read model in one sled tree together with the sequence of the last
//! event applied to it, under the reserved key prefix [`META_PREFIX`]. Both are written by one
//! `Tree::apply_batch`, which sled applies atomically (also across a crash), so after a restart
//! the projection resumes exactly after the last event whose changes are visible, and applying
//! an event twice changes nothing.
//!
//! A projection is rebuilt by deleting it: it then starts from the first event of the log.
//!
//! Reads are served from a copy of the read model in memory, which follows every stored batch:
//! sled lookups copy and merge pages, and cost more than the rest of a fold. A projection that
//! is rebuilt from the log on every start anyway (a gateway's view) can be made with
//! [`Projection::in_memory`] and skip sled altogether.
//!
//! [`follow`] is the one way to follow the log, for a projection ([`run`] feeds each event
//! through a fold function) and for a state kept in memory alike.

mod follow;
mod runner;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

pub use follow::{Follower, follow};
pub use runner::run;
use tokio::sync::watch;

/// Keys under this prefix belong to the projection itself; user keys must not use it.
pub const META_PREFIX: &[u8] = b"\0meta/";
/// Where the last applied sequence (u64, big endian) is kept, inside the read model's tree.
const LAST_APPLIED_KEY: &[u8] = b"\0meta/last_applied";

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

struct Inner {
    /// The database a stored projection lives in; None for one kept in memory only.
    db: Option<sled::Db>,
    name: String,
    active: RwLock<Active>,
    /// Serializes writers so the seq check and the batch are one step.
    write: Mutex<()>,
    /// Last applied sequence; the single source of truth in memory, mirrored in the tree.
    applied: watch::Sender<u64>,
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
            .field("last_applied", &self.last_applied())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave sled half-written (batches are atomic).
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The tree of projection `name`: named as the first generation of earlier versions, which
/// rebuilt projections into new trees, so that a data folder from then keeps its projections.
fn tree_name(name: &str) -> String {
    format!("{name}/gen0")
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
    /// Opens (or creates) the projection `name` in `db`.
    pub fn open(db: &sled::Db, name: &str) -> Result<Projection, ProjectionError> {
        if name.is_empty() {
            return Err(ProjectionError::EmptyName);
        }
        let tree = db.open_tree(tree_name(name))?;
        let last = read_last_applied(name, &tree)?;
        let data = load_mirror(&tree)?;
        Ok(Projection::from_parts(Some(db.clone()), name, Active { tree: Some(tree), data }, last))
    }

    /// A projection kept in memory only: it starts empty on every start and is filled from the
    /// log, for a replica whose view is rebuilt whenever it starts.
    pub fn in_memory(name: &str) -> Result<Projection, ProjectionError> {
        if name.is_empty() {
            return Err(ProjectionError::EmptyName);
        }
        Ok(Projection::from_parts(None, name, Active { tree: None, data: Mirror::new() }, 0))
    }

    fn from_parts(db: Option<sled::Db>, name: &str, active: Active, last: u64) -> Projection {
        let (applied, _) = watch::channel(last);
        Projection {
            inner: Arc::new(Inner {
                db,
                name: name.to_owned(),
                active: RwLock::new(active),
                write: Mutex::new(()),
                applied,
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

    /// The sequence of the last applied event (0: none).
    pub fn last_applied(&self) -> u64 {
        *self.inner.applied.borrow()
    }

    /// Applies the changes for event `seq` atomically with the new last_applied. If
    /// seq <= last_applied, does nothing and returns Ok(false).
    pub fn apply(&self, seq: u64, changes: Changes) -> Result<bool, ProjectionError> {
        let _writer = lock(&self.inner.write);
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
        // last_applied moves under the same lock, so a snapshot reads both together.
        let mut active = self.active_mut();
        for (key, value) in ops {
            match value {
                Some(v) => active.data.insert(key, v),
                None => active.data.remove(&key),
            };
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

    /// As [`Projection::scan_prefix`], with the sequence of the last event the entries reflect:
    /// exactly the state after that event.
    pub fn snapshot_prefix(&self, prefix: &[u8]) -> (u64, Vec<(sled::IVec, sled::IVec)>) {
        use std::ops::Bound;
        let active = self.active();
        let entries = active
            .data
            .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (sled::IVec::from(k.as_slice()), v.clone()))
            .collect();
        (self.last_applied(), entries)
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

    /// A receiver of last_applied; it sees every advance.
    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.inner.applied.subscribe()
    }

    /// Makes everything applied so far durable.
    pub fn flush(&self) -> Result<(), ProjectionError> {
        if let Some(db) = &self.inner.db {
            db.flush()?;
        }
        Ok(())
    }

    /// Like [`Projection::flush`], without blocking the executor.
    pub async fn flush_async(&self) -> Result<(), ProjectionError> {
        if let Some(db) = &self.inner.db {
            db.flush_async().await?;
        }
        Ok(())
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
        assert_eq!(p.last_applied(), 0);
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
}

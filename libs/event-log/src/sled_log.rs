//! The embedded log: one process, one sled database. Appends are serialized, checked and written
//! in one sled transaction, then flushed to disk before they are acknowledged, since sled keeps
//! recent writes in memory and a kill -9 would otherwise lose them.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use futures::StreamExt;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use tokio::sync::{Mutex, watch};

use crate::{AppendOutcome, EventLog, EventStream, Headers, LogError, NewEvent, RecordedEvent, check_subject};

/// As JetStream's default duplicate window.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
const PRUNE_EVERY: u64 = 1024;
const SUBSCRIBE_BATCH: usize = 256;

#[derive(Clone)]
pub struct SledLog {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    events: sled::Tree,
    subjects: sled::Tree,
    msg_ids: sled::Tree,
    /// Last sequence written; the lock serializes appends.
    write_lock: Mutex<u64>,
    /// Last sequence flushed to disk: what subscribers may see.
    durable: watch::Sender<u64>,
    /// Events older than this are removed as new ones are appended.
    max_age: Option<Duration>,
}

fn storage(e: impl std::fmt::Display) -> LogError {
    LogError::Storage(e.to_string())
}

fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

fn from_be(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(a)
}

/// Record layout: time (i64 nanos) | subject | header count | (name, value)* | payload, with
/// u32 length prefixes for the strings.
fn encode(subject: &str, headers: &Headers, time_nanos: i64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + subject.len() + payload.len());
    out.extend_from_slice(&time_nanos.to_be_bytes());
    let put = |out: &mut Vec<u8>, s: &[u8]| {
        out.extend_from_slice(&(s.len() as u32).to_be_bytes());
        out.extend_from_slice(s);
    };
    put(&mut out, subject.as_bytes());
    out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    for (k, v) in headers {
        put(&mut out, k.as_bytes());
        put(&mut out, v.as_bytes());
    }
    out.extend_from_slice(payload);
    out
}

struct Cursor<'a> {
    raw: &'a [u8],
    pos: usize,
    seq: u64,
}

impl<'a> Cursor<'a> {
    fn corrupt(&self) -> LogError {
        LogError::Storage(format!("corrupt record at sequence {}", self.seq))
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], LogError> {
        let s = self.raw.get(self.pos..self.pos + n).ok_or_else(|| self.corrupt())?;
        self.pos += n;
        Ok(s)
    }
    fn u32(&mut self) -> Result<usize, LogError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    fn string(&mut self) -> Result<String, LogError> {
        let len = self.u32()?;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.corrupt())
    }
}

fn decode(seq: u64, raw: &[u8]) -> Result<RecordedEvent, LogError> {
    let mut c = Cursor { raw, pos: 0, seq };
    let t = c.take(8)?;
    let time_nanos = i64::from_be_bytes([t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]]);
    let subject = c.string()?;
    let count = c.u32()?;
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let k = c.string()?;
        let v = c.string()?;
        headers.push((k, v));
    }
    let payload = Bytes::copy_from_slice(raw.get(c.pos..).ok_or_else(|| c.corrupt())?);
    Ok(RecordedEvent { seq, subject, headers, payload, time: Utc.timestamp_nanos(time_nanos) })
}

enum Refused {
    Conflict(String, u64),
    Duplicate(u64),
}

impl SledLog {
    pub fn open(path: &Path) -> Result<SledLog, LogError> {
        Self::open_db(sled::open(path).map_err(storage)?)
    }

    /// A log that removes events older than `max_age`, as a JetStream stream with that limit.
    pub fn open_with_retention(path: &Path, max_age: Duration) -> Result<SledLog, LogError> {
        let mut log = Self::open(path)?;
        if let Some(inner) = Arc::get_mut(&mut log.inner) {
            inner.max_age = Some(max_age);
        }
        Ok(log)
    }

    pub fn open_db(db: sled::Db) -> Result<SledLog, LogError> {
        crate::metrics::register();
        let events = db.open_tree("events").map_err(storage)?;
        let subjects = db.open_tree("subjects").map_err(storage)?;
        let msg_ids = db.open_tree("msg_ids").map_err(storage)?;
        let last = events.last().map_err(storage)?.map(|(k, _)| from_be(&k)).unwrap_or(0);
        let (durable, _) = watch::channel(last);
        Ok(SledLog {
            inner: Arc::new(Inner {
                db,
                events,
                subjects,
                msg_ids,
                write_lock: Mutex::new(last),
                durable,
                max_age: None,
            }),
        })
    }

    fn read_sync(&self, from_seq: u64, max: usize) -> Result<Vec<RecordedEvent>, LogError> {
        let upto = *self.inner.durable.borrow();
        let from = from_seq.max(1);
        if from > upto || max == 0 {
            return Ok(Vec::new());
        }
        self.inner
            .events
            .range(be(from)..=be(upto))
            .take(max)
            .map(|r| {
                let (k, v) = r.map_err(storage)?;
                decode(from_be(&k), &v)
            })
            .collect()
    }

    /// Appends `batch` atomically; with `expected_last`, only if the log's last sequence is that.
    async fn append_batch_at(
        &self,
        expected_last: Option<u64>,
        batch: Vec<NewEvent>,
    ) -> Result<Vec<AppendOutcome>, LogError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let _timer = crate::metrics::AppendTimer::start("embedded");
        for e in &batch {
            check_subject(&e.subject)?;
        }
        let inner = &self.inner;
        let mut last = inner.write_lock.lock().await;
        if let Some(expected) = expected_last
            && *last != expected
        {
            return Err(LogError::Conflict { subject: batch[0].subject.clone(), expected });
        }

        let now = Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        let first = *last + 1;
        let records: Vec<Vec<u8>> = batch.iter().map(|e| encode(&e.subject, &e.headers, now, &e.payload)).collect();
        let result = (&inner.events, &inner.subjects, &inner.msg_ids).transaction(|(events, subjects, ids)| {
            for e in batch.iter().filter(|e| !e.msg_id.is_empty()) {
                if let Some(v) = ids.get(e.msg_id.as_bytes())? {
                    let at = from_be(&v[8.min(v.len())..]) as i64;
                    if now - at < DUPLICATE_WINDOW.as_nanos() as i64 {
                        return Err(ConflictableTransactionError::Abort(Refused::Duplicate(from_be(&v))));
                    }
                }
            }
            // Every expectation against the log as it was before the batch.
            for e in &batch {
                let current = subjects.get(e.subject.as_bytes())?.map(|v| from_be(&v)).unwrap_or(0);
                if let Some(expected) = e.expected_subject_seq
                    && expected != current
                {
                    return Err(ConflictableTransactionError::Abort(Refused::Conflict(e.subject.clone(), expected)));
                }
            }
            for (i, (e, record)) in batch.iter().zip(&records).enumerate() {
                let seq = first + i as u64;
                events.insert(&be(seq), record.as_slice())?;
                subjects.insert(e.subject.as_bytes(), &be(seq))?;
                if !e.msg_id.is_empty() {
                    let mut id_value = be(seq).to_vec();
                    id_value.extend_from_slice(&be(now as u64));
                    ids.insert(e.msg_id.as_bytes(), id_value)?;
                }
            }
            Ok(())
        });
        let count = batch.len() as u64;
        match result {
            Ok(()) => {}
            Err(TransactionError::Abort(Refused::Duplicate(seq))) if count == 1 => {
                return Ok(vec![AppendOutcome { seq, duplicate: true }]);
            }
            Err(TransactionError::Abort(Refused::Duplicate(_))) => return Err(LogError::DuplicateBatch),
            Err(TransactionError::Abort(Refused::Conflict(subject, expected))) => {
                return Err(LogError::Conflict { subject, expected });
            }
            Err(TransactionError::Storage(e)) => return Err(storage(e)),
        }
        let end = first + count - 1;
        *last = end;
        drop(last);
        if end / PRUNE_EVERY != (first - 1) / PRUNE_EVERY {
            self.prune_msg_ids(now);
        }
        // Acknowledged means durable: flush before answering. Concurrent appenders share flushes.
        inner.db.flush_async().await.map_err(storage)?;
        inner.durable.send_if_modified(|d| {
            let grew = end > *d;
            *d = (*d).max(end);
            grew
        });
        // Expired events go once this append is readable, never before: a reader must not find
        // the old events gone and the new one not yet there, an empty log it is not.
        if inner.max_age.is_some() {
            let _appends = inner.write_lock.lock().await;
            if let Err(e) = self.prune_expired(now) {
                tracing::warn!(error = %e, "removing expired events failed; the next append tries again");
            }
        }
        Ok((0..count).map(|i| AppendOutcome { seq: first + i, duplicate: false }).collect())
    }

    /// Removes the events older than the retention from the front. Called under the append lock,
    /// after the append's flush.
    fn prune_expired(&self, now_nanos: i64) -> Result<(), LogError> {
        let Some(max_age) = self.inner.max_age else { return Ok(()) };
        let cutoff = now_nanos.saturating_sub(max_age.as_nanos().min(i64::MAX as u128) as i64);
        while let Some((k, v)) = self.inner.events.first().map_err(storage)? {
            let at = v.get(..8).map(from_be).unwrap_or(0) as i64;
            if at >= cutoff {
                break;
            }
            self.inner.events.remove(k).map_err(storage)?;
        }
        Ok(())
    }

    fn prune_msg_ids(&self, now_nanos: i64) {
        let cutoff = now_nanos - DUPLICATE_WINDOW.as_nanos() as i64;
        for (k, v) in self.inner.msg_ids.iter().flatten() {
            if (from_be(&v[8.min(v.len())..]) as i64) < cutoff {
                let _ = self.inner.msg_ids.remove(k);
            }
        }
    }
}

#[async_trait::async_trait]
impl EventLog for SledLog {
    async fn append(&self, event: NewEvent) -> Result<AppendOutcome, LogError> {
        self.append_batch(vec![event]).await?.pop().ok_or_else(|| LogError::Invalid("empty batch".into()))
    }

    async fn append_batch(&self, batch: Vec<NewEvent>) -> Result<Vec<AppendOutcome>, LogError> {
        self.append_batch_at(None, batch).await
    }

    /// The last event a reader can read: appended and flushed. (An append in flight has its
    /// sequence but is not readable until its flush; every acknowledged one is.)
    async fn last_seq(&self) -> Result<u64, LogError> {
        Ok(*self.inner.durable.borrow())
    }

    async fn first_seq(&self) -> Result<u64, LogError> {
        let last = *self.inner.write_lock.lock().await;
        Ok(self.inner.events.first().map_err(storage)?.map(|(k, _)| from_be(&k)).unwrap_or(last + 1))
    }

    /// Atomic here: the whole batch is stored or none of it.
    async fn append_expecting(&self, expected_last_seq: u64, events: Vec<NewEvent>) -> Result<(), LogError> {
        self.append_batch_at(Some(expected_last_seq), events).await.map(|_| ())
    }

    async fn last_subject_seq(&self, subject: &str) -> Result<u64, LogError> {
        Ok(self.inner.subjects.get(subject.as_bytes()).map_err(storage)?.map(|v| from_be(&v)).unwrap_or(0))
    }

    async fn read(&self, from_seq: u64, max: usize) -> Result<Vec<RecordedEvent>, LogError> {
        self.read_sync(from_seq, max)
    }

    async fn subscribe_matching(&self, from_seq: u64, filters: &[String]) -> Result<EventStream, LogError> {
        crate::check_filters(filters)?;
        // In one process, skipping the other events costs no more than delivering them.
        let filters = filters.to_vec();
        let all = self.subscribe(from_seq).await?;
        Ok(all
            .filter(move |item| {
                let keep = match item {
                    Ok(ev) => filters.iter().any(|f| crate::subject_matches(f, &ev.subject)),
                    Err(_) => true,
                };
                futures::future::ready(keep)
            })
            .boxed())
    }

    async fn last_seq_matching(&self, filters: &[String]) -> Result<u64, LogError> {
        crate::check_filters(filters)?;
        // Appends update the subjects' last sequences under this lock: hold it for a consistent read.
        let _appends = self.inner.write_lock.lock().await;
        let mut last = 0;
        for filter in filters {
            // Only the subjects under the filter's literal prefix can match.
            let literal: Vec<&str> = filter.split('.').take_while(|t| *t != "*" && *t != ">").collect();
            let prefix = literal.join(".");
            for item in self.inner.subjects.scan_prefix(prefix.as_bytes()) {
                let (subject, seq) = item.map_err(storage)?;
                if crate::subject_matches(filter, &String::from_utf8_lossy(&subject)) {
                    last = last.max(from_be(&seq));
                }
            }
        }
        Ok(last)
    }

    async fn subscribe(&self, from_seq: u64) -> Result<EventStream, LogError> {
        let log = self.clone();
        let rx = self.inner.durable.subscribe();
        let state = (log, rx, from_seq.max(1), std::collections::VecDeque::<RecordedEvent>::new());
        let stream = futures::stream::unfold(Some(state), |state| async move {
            let (log, mut rx, mut next, mut buf) = state?;
            loop {
                if let Some(ev) = buf.pop_front() {
                    return Some((Ok(ev), Some((log, rx, next, buf))));
                }
                match log.read_sync(next, SUBSCRIBE_BATCH) {
                    Ok(batch) if !batch.is_empty() => {
                        next = batch.last().map(|e| e.seq + 1).unwrap_or(next);
                        buf.extend(batch);
                    }
                    Ok(_) => {
                        if rx.changed().await.is_err() {
                            return None;
                        }
                    }
                    Err(e) => return Some((Err(e), None)),
                }
            }
        });
        Ok(stream.boxed())
    }
}

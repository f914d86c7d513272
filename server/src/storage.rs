//! The embedded store (sled), behind one module so it can be swapped.
//!
//! Trees: `tasks` (id → TaskRecord envelope), `idempotency` (key → task id), `session_state`
//! (session id → `Session`; `sessions` holds the transcripts of older data dirs, moved on their
//! next turn), `deliveries` (task id → pending callback), `failed_deliveries` (task id →
//! FailedDelivery), `cache` (request-cache key → the cache's entry, whose type the cache feature
//! owns), `budget` (period key → BudgetRecord). Values go through `openclaw_proto::codec`.
//!
//! Invariant: nothing is acknowledged before [`Store::flush`] returned (sled only flushes every
//! 500 ms by itself).
//!
//! Group commit: `flush` does not call sled's `flush_async` (in sled 0.34 concurrent callers can
//! miss their wake-up and hang for ever — spacejam/sled#1241 — which stalled the node under task
//! load). Instead every caller queues a waiter for one flusher task, which takes all waiters
//! queued so far, runs one blocking `Db::flush` on the blocking pool, and answers them all: one
//! fsync covers every write made before it started. The waiter queue is bounded
//! (`FLUSH_WAITERS_MAX`); a full queue makes callers wait, never drops them.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use openclaw_proto::codec::{self, CodecError};
use openclaw_proto::session::{Session, SessionMessage};
use openclaw_proto::TaskRecord;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("store: corrupt value in {tree}: {source}")]
    Codec {
        tree: &'static str,
        #[source]
        source: CodecError,
    },
    #[error("store: {0}")]
    Io(#[from] std::io::Error),
}

/// One message of a session as stored before sessions had summaries.
#[derive(Deserialize)]
struct LegacyMessage {
    role: String,
    content: String,
}

/// A callback waiting to be delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingDelivery {
    pub task_id: String,
    pub callback_url: String,
    pub attempts: u32,
}

/// A callback that ran out of attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedDeliveryRecord {
    pub task_id: String,
    pub callback_url: String,
    pub attempts: u32,
    pub last_error: String,
    pub failed_at_ms: u64,
}

/// Flush requests that may wait for the flusher at once.
pub const FLUSH_WAITERS_MAX: usize = 65_536;

/// A flush request: the handle to flush (so the flusher never keeps the store open by itself)
/// and where to answer.
type FlushWaiter = (sled::Db, oneshot::Sender<Result<(), Arc<sled::Error>>>);
/// Spend and fired thresholds of one budget scope in one period.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetScopeRecord {
    pub tokens: u64,
    pub cost_usd: f64,
    /// Threshold percents whose action already fired this period.
    pub fired: Vec<u32>,
}

/// The budget state of one period (`budget` tree, keyed by the period key).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetRecord {
    pub period: String,
    pub scopes: std::collections::BTreeMap<String, BudgetScopeRecord>,
}

/// sled's page cache when the config does not say (`server.store_cache_mb`).
pub const STORE_CACHE_BYTES_DEFAULT: u64 = 16 * 1024 * 1024;

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    flusher: mpsc::Sender<FlushWaiter>,
    tasks: sled::Tree,
    idempotency: sled::Tree,
    /// Transcripts as stored before sessions had summaries (read once, then moved).
    sessions: sled::Tree,
    session_state: sled::Tree,
    deliveries: sled::Tree,
    failed_deliveries: sled::Tree,
    cache: sled::Tree,
    budget: sled::Tree,
}

impl Store {
    /// Open (or create) the store in `dir` with the default page cache.
    pub fn open(dir: &Path) -> Result<Store, StorageError> {
        Store::open_with_cache(dir, STORE_CACHE_BYTES_DEFAULT)
    }

    /// Open (or create) the store in `dir`; sled's page cache holds up to `cache_bytes`.
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Store, StorageError> {
        std::fs::create_dir_all(dir)?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()?;
        let (flusher, waiters) = mpsc::channel(FLUSH_WAITERS_MAX);
        spawn_flusher(waiters);
        Ok(Store {
            flusher,
            tasks: db.open_tree("tasks")?,
            idempotency: db.open_tree("idempotency")?,
            sessions: db.open_tree("sessions")?,
            session_state: db.open_tree("session_state")?,
            deliveries: db.open_tree("deliveries")?,
            failed_deliveries: db.open_tree("failed_deliveries")?,
            cache: db.open_tree("cache")?,
            budget: db.open_tree("budget")?,
            db,
        })
    }

    /// Make everything written so far durable (through the group-commit flusher: see the module
    /// doc; under ~200 concurrent admissions sled's `flush_async` deadlocked, every `sled-io`
    /// pool thread parked in `make_stable` — seen with gdb).
    pub async fn flush(&self) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        let gone = || StorageError::Io(std::io::Error::other("the store's flusher stopped"));
        self.flusher
            .send((self.db.clone(), tx))
            .await
            .map_err(|_| gone())?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StorageError::Io(std::io::Error::other(e.to_string()))),
            Err(_) => Err(gone()),
        }
    }

    /// A process-wide increasing number (admission order).
    pub fn next_seq(&self) -> Result<u64, StorageError> {
        Ok(self.db.generate_id()?)
    }

    pub fn get_task(&self, id: &str) -> Result<Option<TaskRecord>, StorageError> {
        get(&self.tasks, "tasks", id.as_bytes())
    }

    pub fn put_task(&self, rec: &TaskRecord) -> Result<(), StorageError> {
        put(&self.tasks, "tasks", rec.id.as_bytes(), rec)
    }

    pub fn remove_task(&self, id: &str) -> Result<(), StorageError> {
        self.tasks.remove(id.as_bytes())?;
        Ok(())
    }

    /// Every stored task (start-up recovery and purges scan this).
    pub fn tasks(&self) -> impl Iterator<Item = Result<TaskRecord, StorageError>> + '_ {
        self.tasks.iter().values().map(|v| {
            let v = v?;
            codec::decode(&v).map_err(|source| StorageError::Codec {
                tree: "tasks",
                source,
            })
        })
    }

    /// The stored tasks in id order, after `after` (exclusive); lazily read.
    pub fn tasks_after(
        &self,
        after: Option<&str>,
    ) -> impl Iterator<Item = Result<TaskRecord, StorageError>> + '_ {
        use std::ops::Bound;
        let from = match after {
            Some(a) => Bound::Excluded(a.as_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        self.tasks
            .range::<Vec<u8>, _>((from, Bound::Unbounded))
            .values()
            .map(|v| {
                let v = v?;
                codec::decode(&v).map_err(|source| StorageError::Codec {
                    tree: "tasks",
                    source,
                })
            })
    }

    /// A tree a feature keeps its own index in (e.g. the task ledger's live and finished
    /// indexes); opened on first use.
    pub fn index_tree(&self, name: &str) -> Result<sled::Tree, StorageError> {
        Ok(self.db.open_tree(name)?)
    }

    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// Claim `key` for `task_id`; returns the id already holding it, if any.
    pub fn claim_idempotency_key(
        &self,
        key: &str,
        task_id: &str,
    ) -> Result<Option<String>, StorageError> {
        match self.idempotency.compare_and_swap(
            key.as_bytes(),
            None as Option<&[u8]>,
            Some(task_id.as_bytes()),
        )? {
            Ok(()) => Ok(None),
            Err(cas) => Ok(cas
                .current
                .map(|v| String::from_utf8_lossy(&v).into_owned())),
        }
    }

    pub fn release_idempotency_key(&self, key: &str) -> Result<(), StorageError> {
        self.idempotency.remove(key.as_bytes())?;
        Ok(())
    }

    /// A session (`session_state` tree). A data dir from before sessions had summaries holds a
    /// bare list of messages under the id in the old `sessions` tree: it is read as a session
    /// with those messages (and written to `session_state` with the next turn).
    pub fn session(&self, id: &str) -> Result<Option<Session>, StorageError> {
        if let Some(s) = get::<Session>(&self.session_state, "session_state", id.as_bytes())? {
            return Ok(Some(s));
        }
        let old: Option<Vec<LegacyMessage>> = get(&self.sessions, "sessions", id.as_bytes())?;
        Ok(old.map(|msgs| {
            let mut s = Session::new(id, "");
            s.messages = msgs
                .into_iter()
                .map(|m| SessionMessage {
                    tokens: crate::tokens::count(&m.content),
                    role: m.role,
                    content: m.content,
                })
                .collect();
            s
        }))
    }

    pub fn put_session(&self, s: &Session) -> Result<(), StorageError> {
        put(&self.session_state, "session_state", s.id.as_bytes(), s)?;
        self.sessions.remove(s.id.as_bytes())?;
        Ok(())
    }

    /// Up to `limit` sessions with ids after `after`, in id order (both trees: a transcript of
    /// an older data dir lists like a session).
    pub fn sessions_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Session>, StorageError> {
        use std::ops::Bound;
        let lower = match after {
            Some(a) => Bound::Excluded(a.as_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        let range = (lower, Bound::<Vec<u8>>::Unbounded);
        let mut ids: std::collections::BTreeSet<Vec<u8>> = std::collections::BTreeSet::new();
        for tree in [&self.session_state, &self.sessions] {
            for k in tree.range(range.clone()).keys().take(limit) {
                ids.insert(k?.to_vec());
            }
        }
        let mut out = Vec::new();
        for id in ids.into_iter().take(limit) {
            let id = String::from_utf8_lossy(&id).into_owned();
            if let Some(s) = self.session(&id)? {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Remove a session (and an older data dir's transcript of it); whether there was one.
    pub fn remove_session(&self, id: &str) -> Result<bool, StorageError> {
        let a = self.session_state.remove(id.as_bytes())?.is_some();
        let b = self.sessions.remove(id.as_bytes())?.is_some();
        Ok(a || b)
    }

    /// Every stored session, in id order (streamed; used to rebuild an index at start).
    /// An older data dir's transcripts come after, as sessions updated at time 0.
    pub fn sessions(&self) -> impl Iterator<Item = Session> + '_ {
        let current = self
            .session_state
            .iter()
            .filter_map(|item| item.ok())
            .filter_map(|(_, v)| openclaw_proto::codec::decode::<Session>(&v).ok());
        let legacy = self
            .sessions
            .iter()
            .keys()
            .filter_map(|k| k.ok())
            .filter_map(|k| String::from_utf8(k.to_vec()).ok())
            .filter_map(|id| self.session(&id).ok().flatten());
        current.chain(legacy)
    }

    pub fn put_delivery(&self, d: &PendingDelivery) -> Result<(), StorageError> {
        put(&self.deliveries, "deliveries", d.task_id.as_bytes(), d)
    }

    pub fn remove_delivery(&self, task_id: &str) -> Result<(), StorageError> {
        self.deliveries.remove(task_id.as_bytes())?;
        Ok(())
    }

    pub fn pending_deliveries(&self) -> Result<Vec<PendingDelivery>, StorageError> {
        all(&self.deliveries, "deliveries")
    }

    pub fn put_failed_delivery(&self, d: &FailedDeliveryRecord) -> Result<(), StorageError> {
        put(
            &self.failed_deliveries,
            "failed_deliveries",
            d.task_id.as_bytes(),
            d,
        )
    }

    pub fn budget(&self, period: &str) -> Result<Option<BudgetRecord>, StorageError> {
        get(&self.budget, "budget", period.as_bytes())
    }

    pub fn put_budget(&self, rec: &BudgetRecord) -> Result<(), StorageError> {
        put(&self.budget, "budget", rec.period.as_bytes(), rec)
    }

    pub fn failed_deliveries(&self) -> Result<Vec<FailedDeliveryRecord>, StorageError> {
        all(&self.failed_deliveries, "failed_deliveries")
    }
}

/// The request cache's tree (owned by the cache actor; not flushed on write: a cache entry lost
/// in a crash is only a miss).
impl Store {
    pub fn cache_get<E: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<E>, StorageError> {
        get(&self.cache, "cache", key.as_bytes())
    }

    /// Store an entry; returns its size in bytes (key + encoded value).
    pub fn cache_put<E: serde::Serialize>(&self, key: &str, e: &E) -> Result<u64, StorageError> {
        let bytes = codec::encode(e).map_err(|source| StorageError::Codec {
            tree: "cache",
            source,
        })?;
        let size = (key.len() + bytes.len()) as u64;
        self.cache.insert(key.as_bytes(), bytes)?;
        Ok(size)
    }

    /// The size an entry would take (for the "too large to cache" check).
    pub fn cache_entry_size<E: serde::Serialize>(key: &str, e: &E) -> Result<u64, StorageError> {
        let bytes = codec::encode(e).map_err(|source| StorageError::Codec {
            tree: "cache",
            source,
        })?;
        Ok((key.len() + bytes.len()) as u64)
    }

    pub fn cache_remove(&self, key: &str) -> Result<(), StorageError> {
        self.cache.remove(key.as_bytes())?;
        Ok(())
    }

    pub fn cache_clear(&self) -> Result<(), StorageError> {
        self.cache.clear()?;
        Ok(())
    }

    /// Every entry as (key, entry, size); unreadable entries are returned as keys to drop.
    #[allow(clippy::type_complexity)]
    pub fn cache_scan<E: serde::de::DeserializeOwned>(
        &self,
    ) -> Result<(Vec<(String, E, u64)>, Vec<String>), StorageError> {
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        for kv in self.cache.iter() {
            let (k, v) = kv?;
            let key = String::from_utf8_lossy(&k).into_owned();
            match codec::decode::<E>(&v) {
                Ok(e) => ok.push((key, e, (k.len() + v.len()) as u64)),
                Err(_) => bad.push(key),
            }
        }
        Ok((ok, bad))
    }
}

/// The flusher: one blocking `Db::flush` per batch of waiters. It holds a `Db` handle only while
/// flushing (every clone is dropped before the waiters are answered), and ends when every
/// `Store` clone (and so every sender) is gone.
fn spawn_flusher(mut waiters: mpsc::Receiver<FlushWaiter>) {
    let run = async move {
        let mut batch: Vec<FlushWaiter> = Vec::new();
        while waiters.recv_many(&mut batch, FLUSH_WAITERS_MAX).await > 0 {
            let (dbs, answers): (Vec<sled::Db>, Vec<_>) = batch.drain(..).unzip();
            let Some(db) = dbs.first().cloned() else {
                continue;
            };
            drop(dbs);
            let res = match tokio::task::spawn_blocking(move || db.flush()).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(Arc::new(e)),
                Err(join) => Err(Arc::new(sled::Error::Io(std::io::Error::other(
                    join.to_string(),
                )))),
            };
            for w in answers {
                let _ = w.send(res.clone());
            }
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(h) => {
            h.spawn(run);
        }
        // Opened outside a runtime (tools, tests): a small runtime of its own on a thread.
        Err(_) => {
            std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(run);
                }
            });
        }
    }
}

fn get<T: DeserializeOwned>(
    tree: &sled::Tree,
    name: &'static str,
    key: &[u8],
) -> Result<Option<T>, StorageError> {
    match tree.get(key)? {
        None => Ok(None),
        Some(v) => codec::decode(&v)
            .map(Some)
            .map_err(|source| StorageError::Codec { tree: name, source }),
    }
}

fn put<T: Serialize>(
    tree: &sled::Tree,
    name: &'static str,
    key: &[u8],
    value: &T,
) -> Result<(), StorageError> {
    let bytes =
        codec::encode(value).map_err(|source| StorageError::Codec { tree: name, source })?;
    tree.insert(key, bytes)?;
    Ok(())
}

fn all<T: DeserializeOwned>(tree: &sled::Tree, name: &'static str) -> Result<Vec<T>, StorageError> {
    tree.iter()
        .values()
        .map(|v| {
            let v = v?;
            codec::decode(&v).map_err(|source| StorageError::Codec { tree: name, source })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many writers flushing at once all get their answer (sled's own `flush_async` could leave
    /// some waiting for ever), and what they wrote is there after a reopen.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_flushes_all_complete_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut tasks = Vec::new();
        for w in 0..64u32 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..50u32 {
                    let d = PendingDelivery {
                        task_id: format!("{w}-{i}"),
                        callback_url: "http://x".into(),
                        attempts: i,
                    };
                    store.put_delivery(&d).unwrap();
                    store.flush().await.unwrap();
                }
            }));
        }
        let all = futures::future::join_all(tasks);
        // A hang detector, not a timing assertion.
        tokio::time::timeout(std::time::Duration::from_secs(120), all)
            .await
            .expect("flushes hung");
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.pending_deliveries().unwrap().len(), 64 * 50);
    }
}

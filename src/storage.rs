//! The embedded store (sled), behind one module so it can be swapped.
//!
//! Trees: `tasks` (id → TaskRecord envelope), `idempotency` (key → task id), `sessions`
//! (session id → transcript), `deliveries` (task id → pending callback), `failed_deliveries`
//! (task id → FailedDelivery), `budget` (period key → BudgetRecord). Values go through `openclaw_proto::codec`.
//!
//! Invariant: nothing is acknowledged before [`Store::flush`] returned (sled only flushes every
//! 500 ms by itself). Concurrent flushes coalesce inside sled, which gives group commit.

use std::path::Path;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use openclaw_proto::codec::{self, CodecError};
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

/// One message of a session transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptMessage {
    pub role: String,
    pub content: String,
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

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    tasks: sled::Tree,
    idempotency: sled::Tree,
    sessions: sled::Tree,
    deliveries: sled::Tree,
    failed_deliveries: sled::Tree,
    budget: sled::Tree,
}

impl Store {
    /// Open (or create) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StorageError> {
        std::fs::create_dir_all(dir)?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(64 * 1024 * 1024)
            .open()?;
        Ok(Store {
            tasks: db.open_tree("tasks")?,
            idempotency: db.open_tree("idempotency")?,
            sessions: db.open_tree("sessions")?,
            deliveries: db.open_tree("deliveries")?,
            failed_deliveries: db.open_tree("failed_deliveries")?,
            budget: db.open_tree("budget")?,
            db,
        })
    }

    /// Make everything written so far durable.
    ///
    /// Runs sled's blocking `flush` on tokio's blocking pool rather than `flush_async`: under
    /// ~200 concurrent admissions `flush_async` deadlocked (every `sled-io` pool thread parked in
    /// `make_stable`, waiting for a write that no free pool thread was left to do; seen with gdb).
    /// Concurrent blocking flushes still coalesce inside sled (group commit).
    pub async fn flush(&self) -> Result<(), StorageError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| std::io::Error::other(format!("flush task: {e}")))??;
        Ok(())
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

    pub fn transcript(&self, session: &str) -> Result<Vec<TranscriptMessage>, StorageError> {
        Ok(get(&self.sessions, "sessions", session.as_bytes())?.unwrap_or_default())
    }

    /// Append messages to a session, keeping the newest `keep` messages.
    pub fn append_transcript(
        &self,
        session: &str,
        msgs: &[TranscriptMessage],
        keep: usize,
    ) -> Result<(), StorageError> {
        let mut all = self.transcript(session)?;
        all.extend_from_slice(msgs);
        if all.len() > keep {
            all.drain(..all.len() - keep);
        }
        put(&self.sessions, "sessions", session.as_bytes(), &all)
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

//! The Raft log on sled: entries in tree `raft_log` keyed by big-endian index (so sled's key
//! order is log order), and the vote, the committed log id and the last purged log id in tree
//! `raft_meta`.
//!
//! Durability: `append` and `save_vote` flush sled before they report success; `truncate` flushes
//! too (rare). `purge` and `save_committed` do not: sled recovers a prefix of the writes, so a
//! lost purge only leaves entries that are purged again, and a lost `committed` only makes a
//! restart re-apply fewer entries (the leader commits them again). Every value is a
//! [`openclaw_proto::codec`] envelope.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};

use openclaw_proto::codec::{decode, encode};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, StorageIOError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

pub(crate) const LOG_TREE: &str = "raft_log";
pub(crate) const META_TREE: &str = "raft_meta";

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// The sled-backed Raft log. A cheap handle: clones share the same trees (it is its own
/// `LogReader`).
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
}

impl LogStore {
    pub(crate) fn open(db: &sled::Db) -> Result<LogStore, StorageError> {
        let log = db
            .open_tree(LOG_TREE)
            .map_err(|e| StorageIOError::read_logs(&e))?;
        let meta = db
            .open_tree(META_TREE)
            .map_err(|e| StorageIOError::read(&e))?;
        Ok(LogStore {
            db: db.clone(),
            log,
            meta,
        })
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        let Some(bytes) = self.meta.get(key).map_err(|e| StorageIOError::read(&e))? else {
            return Ok(None);
        };
        let value = decode(&bytes).map_err(|e| StorageIOError::read(&e))?;
        Ok(Some(value))
    }

    fn put_meta<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), StorageError> {
        let bytes = encode(value).map_err(|e| StorageIOError::write(&e))?;
        self.meta
            .insert(key, bytes)
            .map_err(|e| StorageIOError::write(&e))?;
        Ok(())
    }

    fn last_purged(&self) -> Result<Option<LogId>, StorageError> {
        self.get_meta(KEY_LAST_PURGED)
    }
}

/// Make everything written so far durable, on the blocking pool (sled's own `flush_async` can
/// hang: sled#1241).
pub(crate) async fn flush(db: &sled::Db) -> io::Result<()> {
    let db = db.clone();
    match tokio::task::spawn_blocking(move || db.flush()).await {
        Ok(Ok(_bytes)) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(join) => Err(io::Error::other(join)),
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_index(key: &[u8]) -> Result<u64, StorageError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| {
        let e = io::Error::new(io::ErrorKind::InvalidData, "raft_log key is not 8 bytes");
        StorageIOError::read_logs(&e)
    })?;
    Ok(u64::from_be_bytes(bytes))
}

fn decode_entry(key: &[u8], value: &[u8]) -> Result<Entry, StorageError> {
    let index = key_index(key)?;
    let entry: Entry = decode(value).map_err(|e| StorageIOError::read_log_at_index(index, &e))?;
    if entry.log_id.index != index {
        let e = io::Error::new(
            io::ErrorKind::InvalidData,
            format!("raft_log key {index} holds entry {}", entry.log_id),
        );
        return Err(StorageIOError::read_log_at_index(index, &e).into());
    }
    Ok(entry)
}

fn key_bound(bound: Bound<&u64>) -> Bound<[u8; 8]> {
    match bound {
        Bound::Included(i) => Bound::Included(index_key(*i)),
        Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let keys = (key_bound(range.start_bound()), key_bound(range.end_bound()));
        let mut entries = Vec::new();
        for item in self.log.range::<[u8; 8], _>(keys) {
            let (key, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            entries.push(decode_entry(&key, &value)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.last_purged()?;
        let last = self.log.last().map_err(|e| StorageIOError::read_logs(&e))?;
        let last_log_id = match last {
            Some((key, value)) => Some(decode_entry(&key, &value)?.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let bytes = encode(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        self.meta
            .insert(KEY_VOTE, bytes)
            .map_err(|e| StorageIOError::write_vote(&e))?;
        flush(&self.db)
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed on purpose (see the module doc): the next append or vote flushes it.
        self.put_meta(KEY_COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes =
                encode(&entry).map_err(|e| StorageIOError::write_log_entry(entry.log_id, &e))?;
            batch.insert(&index_key(entry.log_id.index), bytes);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;

        // The entries are readable now; they are durable once the flush returns. openraft 0.9
        // waits for the callback before its next log write, so flushing inline keeps the order.
        match flush(&self.db).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let err = StorageIOError::write_logs(&e);
                callback.log_io_completed(Err(e));
                Err(err.into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(since = %log_id, "raft log truncate");
        let mut batch = sled::Batch::default();
        for key in self.log.range(index_key(log_id.index)..).keys() {
            let key = key.map_err(|e| StorageIOError::read_logs(&e))?;
            batch.remove(key);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        flush(&self.db)
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(upto = %log_id, "raft log purge");
        // The mark first: sled recovers a prefix of the writes, so a crash never leaves a hole
        // below the surviving entries without the mark that explains it.
        self.put_meta(KEY_LAST_PURGED, &log_id)?;
        let mut batch = sled::Batch::default();
        for key in self.log.range(..=index_key(log_id.index)).keys() {
            let key = key.map_err(|e| StorageIOError::read_logs(&e))?;
            batch.remove(key);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }
}

//! The Raft state machine: [`ClusterState`] in memory, rebuilt at start from the last snapshot
//! (tree `raft_snapshot`) plus the committed log entries openraft re-applies.
//!
//! Only snapshots are persisted (durably, before they are reported); applying an entry touches
//! memory only. After each `apply` call the events of its entries go out, as one batch, on the
//! broadcast channel given to [`super::open`]. Installing a snapshot replaces the state
//! wholesale and sends no events: a subscriber that must follow the state exactly re-reads it
//! (via [`StateMachineStore::read`]) when the applied log id jumps or when it lags the channel.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use openclaw_proto::codec::{decode, encode};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::log::flush;
use super::EventBatch;
use crate::state::ClusterState;
use crate::types::{
    Entry, LogId, Response, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

pub(crate) const SNAPSHOT_TREE: &str = "raft_snapshot";

/// The current snapshot's metadata and its data, two keys written in one atomic batch.
const KEY_SNAPSHOT_META: &[u8] = b"meta";
const KEY_SNAPSHOT_DATA: &[u8] = b"data";

/// What the state machine is: the state and where in the log it stands.
#[derive(Default)]
struct Applied {
    state: ClusterState,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// A snapshot's data: the whole [`Applied`], encoded.
#[derive(Serialize)]
pub(super) struct SnapshotBodyRef<'a> {
    pub(super) last_applied: &'a Option<LogId>,
    pub(super) membership: &'a StoredMembership,
    pub(super) state: &'a ClusterState,
}

#[derive(Deserialize)]
struct SnapshotBody {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    state: ClusterState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Store it unless the stored snapshot is newer (a snapshot built here).
    Newer,
    /// Store it (a snapshot installed from the leader).
    This,
}

struct Inner {
    db: sled::Db,
    snapshots: sled::Tree,
    applied: RwLock<Applied>,
    events: broadcast::Sender<EventBatch>,
    /// Serializes the check-then-write of the current snapshot.
    snapshot_write: Mutex<()>,
    /// Makes snapshot ids unique within this process (with the log id they cover).
    snapshot_seq: AtomicU64,
}

/// The state machine. A cheap handle: clones share one state (openraft owns one clone, the node
/// keeps another for reads; it is also its own snapshot builder).
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<Inner>,
}

impl StateMachineStore {
    /// Open on `db`, restoring the stored snapshot if there is one.
    pub(crate) fn open(
        db: &sled::Db,
        events: broadcast::Sender<EventBatch>,
    ) -> Result<StateMachineStore, StorageError> {
        let snapshots = db
            .open_tree(SNAPSHOT_TREE)
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        let applied = match load_snapshot(&snapshots)? {
            Some((meta, data)) => {
                let body = decode_body(&meta, &data)?;
                tracing::info!(snapshot = %meta.snapshot_id, "state restored from snapshot");
                Applied {
                    state: body.state,
                    last_applied: body.last_applied,
                    membership: body.membership,
                }
            }
            None => Applied::default(),
        };
        Ok(StateMachineStore {
            inner: Arc::new(Inner {
                db: db.clone(),
                snapshots,
                applied: RwLock::new(applied),
                events,
                snapshot_write: Mutex::new(()),
                snapshot_seq: AtomicU64::new(0),
            }),
        })
    }

    /// Read the replicated state (a short read lock; do not block inside `f`).
    pub fn read<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> T {
        f(&self.applied_read().state)
    }

    /// The id of the last entry applied to the in-memory state.
    pub fn last_applied(&self) -> Option<LogId> {
        self.applied_read().last_applied
    }

    /// A new receiver of applied events.
    pub fn subscribe(&self) -> broadcast::Receiver<EventBatch> {
        self.inner.events.subscribe()
    }

    // A panic inside `apply` would poison the lock; the state then is whatever the last entry
    // left, and openraft stops on its own, so readers keep reading rather than panic too.
    fn applied_read(&self) -> std::sync::RwLockReadGuard<'_, Applied> {
        self.inner
            .applied
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn applied_write(&self) -> std::sync::RwLockWriteGuard<'_, Applied> {
        self.inner
            .applied
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Store `meta` + `data` as the current snapshot, durably. With `Keep::Newer` a snapshot
    /// older than the stored one is not stored: openraft builds snapshots in a spawned task, so
    /// a build can finish after a newer snapshot was installed.
    async fn save_snapshot(
        &self,
        meta: &SnapshotMeta,
        data: &[u8],
        keep: Keep,
    ) -> Result<(), StorageError> {
        let sig = || Some(meta.signature());
        let meta_bytes = encode(meta).map_err(|e| StorageIOError::write_snapshot(sig(), &e))?;
        let mut batch = sled::Batch::default();
        batch.insert(KEY_SNAPSHOT_META, meta_bytes);
        batch.insert(KEY_SNAPSHOT_DATA, data);
        {
            let _one_writer = self
                .inner
                .snapshot_write
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if keep == Keep::Newer {
                let stored = load_snapshot(&self.inner.snapshots)?;
                if stored.is_some_and(|(m, _)| m.last_log_id > meta.last_log_id) {
                    tracing::info!(snapshot = %meta.snapshot_id, "built snapshot is older than the stored one; not stored");
                    return Ok(());
                }
            }
            self.inner
                .snapshots
                .apply_batch(batch)
                .map_err(|e| StorageIOError::write_snapshot(sig(), &e))?;
        }
        flush(&self.inner.db)
            .await
            .map_err(|e| StorageIOError::write_snapshot(sig(), &e))?;
        Ok(())
    }
}

fn load_snapshot(tree: &sled::Tree) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StorageError> {
    let get = |key| {
        tree.get(key)
            .map_err(|e| StorageIOError::read_snapshot(None, &e))
    };
    let (Some(meta), Some(data)) = (get(KEY_SNAPSHOT_META)?, get(KEY_SNAPSHOT_DATA)?) else {
        return Ok(None);
    };
    let meta: SnapshotMeta = decode(&meta).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
    Ok(Some((meta, data.to_vec())))
}

fn decode_body(meta: &SnapshotMeta, data: &[u8]) -> Result<SnapshotBody, StorageError> {
    let body: SnapshotBody =
        decode(data).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
    if body.last_applied != meta.last_log_id {
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "snapshot data and metadata disagree on the last log id",
        );
        return Err(StorageIOError::read_snapshot(Some(meta.signature()), &e).into());
    }
    Ok(body)
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (meta, data) = {
            let applied = self.applied_read();
            let body = SnapshotBodyRef {
                last_applied: &applied.last_applied,
                membership: &applied.membership,
                state: &applied.state,
            };
            let data = encode(&body).map_err(|e| StorageIOError::read_state_machine(&e))?;
            let seq = self.inner.snapshot_seq.fetch_add(1, Ordering::Relaxed);
            let snapshot_id = match &applied.last_applied {
                Some(id) => format!("{}-{}-{seq}", id.leader_id, id.index),
                None => format!("--{seq}"),
            };
            let meta = SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.membership.clone(),
                snapshot_id,
            };
            (meta, data)
        };
        self.save_snapshot(&meta, &data, Keep::Newer).await?;
        tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.applied_read();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries = entries.into_iter();
        let mut responses = Vec::with_capacity(entries.size_hint().0);
        let mut events = Vec::new();
        for entry in entries {
            // One entry per lock: readers never wait for a whole batch of entries.
            let mut applied = self.applied_write();
            applied.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Response::default(),
                EntryPayload::Normal(req) => {
                    let (response, mut evs) = applied.state.apply(&req);
                    events.append(&mut evs);
                    response
                }
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Response::default()
                }
            };
            responses.push(response);
        }
        if !events.is_empty() {
            // No receiver is fine: nobody is listening yet (start-up) or any more (shutdown).
            let _ = self.inner.events.send(Arc::new(events));
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> StateMachineStore {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let body = decode_body(meta, &data)?;
        self.save_snapshot(meta, &data, Keep::This).await?;
        let mut applied = self.applied_write();
        *applied = Applied {
            state: body.state,
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        tracing::info!(snapshot = %meta.snapshot_id, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(
            load_snapshot(&self.inner.snapshots)?.map(|(meta, data)| Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data)),
            }),
        )
    }
}

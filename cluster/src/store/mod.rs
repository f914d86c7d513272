//! Raft storage on sled (openraft `storage-v2`): the log ([`LogStore`]) and the state machine
//! ([`StateMachineStore`]), both opened on the node's one `sled::Db` by [`open`].
//!
//! Trees: `raft_log` (entries by big-endian index), `raft_meta` (vote, committed, last purged,
//! this node's id), `sm_data` (the state machine: control record, live tasks, finished
//! records, indexes — see [`crate::disk`]), `sm_undo` (pre-images while a snapshot is built),
//! `raft_snapshot` (the current snapshot's metadata and file name; the file is in the snapshot
//! directory). Values are [`openclaw_proto::codec`] envelopes.
//!
//! What is durable when: a log append, a vote and a snapshot are flushed before openraft hears
//! of them; each applied entry is one atomic sled batch of the state machine (flushed with the
//! next log append), so at start the state machine is what `sm_data` holds and openraft
//! re-applies the committed entries after it.
//!
//! This module knows nothing of what the state means: it calls [`ClusterState::apply`] and
//! passes on the events it returns.
//!
//! [`ClusterState::apply`]: crate::state::ClusterState::apply

// openraft's traits return its `StorageError` (224 bytes); the helpers return it too rather than
// box it only to unbox it at the trait boundary. Storage errors are rare and fatal to the node.
#![allow(clippy::result_large_err)]

mod log;
mod sm;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use openclaw_proto::codec::{decode, encode};
use openraft::StorageIOError;
use tokio::sync::broadcast;

pub use self::log::LogStore;
pub use self::sm::{StateMachineStore, INSTALL_BATCH_KEYS, SNAPSHOT_CHUNK_BYTES};
use crate::types::{Event, NodeId, StorageError};

/// The events of one `apply` call (one or more Raft entries), in log order.
pub type EventBatch = Arc<Vec<Event>>;

/// Capacity of the applied-events channel, in batches. A receiver that falls further behind
/// gets `RecvError::Lagged` and must re-read the state.
pub const EVENT_CHANNEL_CAPACITY: usize = 4096;

/// A new applied-events channel of [`EVENT_CHANNEL_CAPACITY`], for [`open`].
pub fn event_channel() -> broadcast::Sender<EventBatch> {
    broadcast::channel(EVENT_CHANNEL_CAPACITY).0
}

/// Open the Raft log and state machine on `db`, snapshot files in `snapshot_dir`; the state
/// machine publishes applied events on `events`. Both handles are cheap to clone.
pub fn open(
    db: &sled::Db,
    snapshot_dir: &std::path::Path,
    events: broadcast::Sender<EventBatch>,
) -> Result<(LogStore, StateMachineStore), StorageError> {
    Ok((
        LogStore::open(db)?,
        StateMachineStore::open(db, snapshot_dir, events)?,
    ))
}

const KEY_NODE_ID: &[u8] = b"node_id";

/// This node's Raft id, if one was stored by [`set_node_id`].
pub fn node_id(db: &sled::Db) -> Result<Option<NodeId>, StorageError> {
    let meta = db
        .open_tree(log::META_TREE)
        .map_err(|e| StorageIOError::read(&e))?;
    match meta
        .get(KEY_NODE_ID)
        .map_err(|e| StorageIOError::read(&e))?
    {
        Some(bytes) => Ok(Some(decode(&bytes).map_err(|e| StorageIOError::read(&e))?)),
        None => Ok(None),
    }
}

/// Store this node's Raft id, durably. Blocks on a sled flush: call it at start-up, not from a
/// task on the hot path.
pub fn set_node_id(db: &sled::Db, id: NodeId) -> Result<(), StorageError> {
    let meta = db
        .open_tree(log::META_TREE)
        .map_err(|e| StorageIOError::write(&e))?;
    let bytes = encode(&id).map_err(|e| StorageIOError::write(&e))?;
    meta.insert(KEY_NODE_ID, bytes)
        .map_err(|e| StorageIOError::write(&e))?;
    db.flush().map_err(|e| StorageIOError::write(&e))?;
    Ok(())
}

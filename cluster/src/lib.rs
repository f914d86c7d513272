//! openclaw-node's replicated control plane.
//!
//! - [`types`]: node ids, the Raft type configuration, the batched commands and their replies.
//! - [`state`]: the replicated state's in-memory part and its deterministic `apply`.
//! - [`disk`]: the on-disk part `apply` writes through (finished records, idempotency keys,
//!   the retention index), with an in-memory implementation for tests.
//! - [`placement`]: pure decisions — which node owns a new task, what an idle node steals, where
//!   a dead node's tasks go.
//! - [`lease`]: pure budget and rate-limit lease arithmetic.
//! - [`store`]: the sled-backed Raft log and state machine (openraft `storage-v2`).
//! - [`mesh`]: the ractor_cluster node mesh (cookie-authenticated) and the cluster watcher.

pub mod types;

pub use types::*;
pub mod disk;
pub mod lease;
pub mod mesh;
pub mod placement;
pub mod state;
pub mod store;
pub mod transition;

//! The request cache's replication between cluster nodes (issue 11): the entries a node that
//! stored an answer hands its live peers over the cluster port (`POST /cluster/cache`, a batch
//! of [`CacheReplica`]s), and the receiver's answer. Best effort: a cache, not acknowledged work.

use serde::{Deserialize, Serialize};

use crate::openai::Usage;

/// How the entry's key was derived on the sender, which says which receivers can look it up:
/// an `exact` key under any strategy (every strategy keys the requests it cannot serve
/// otherwise by the `exact` key), a `template` key only under `template`, a `semantic` entry
/// key only under `semantic` with the same embedding model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReplicaKey {
    Exact,
    Template,
    Semantic(Option<ReplicaVector>),
}

/// A semantic entry's partition and query vector, with the model that embedded it: a receiver
/// whose cache compares with another embedding model cannot use it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaVector {
    pub partition: String,
    pub embedding_model: String,
    pub vector: Vec<f32>,
}

/// One cached answer, as sent to a peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheReplica {
    /// The entry's key (a pure function of the request: identical on every node).
    pub key: String,
    /// `semantic`: the entry key when `vector` is `None` (the query could not be embedded).
    pub kind: ReplicaKey,
    /// The model that answered.
    pub model: String,
    pub text: String,
    pub finish_reason: Option<String>,
    pub usage: Usage,
    /// When the sender stored it (ms since the epoch, the sender's clock).
    pub created_at_ms: u64,
    /// The sender's absolute expiry (`None`: its `ttl_seconds` is 0, never stale).
    pub expires_at_ms: Option<u64>,
}

/// The receiver's answer to a batch: how many entries it stored and how many its own config
/// refused (cache off, another strategy or embedding model, already stale, malformed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheReplicaReply {
    pub accepted: u32,
    pub refused: u32,
}

//! The request cache's replication over the cluster port (issue 11): [`CacheFanout`], the
//! cache feature's `CachePeers` seam — one `POST /cluster/cache` ([`CACHE_PATH`]) per live
//! peer, concurrently, each within `cluster.rpc_timeout_ms` — and [`receive`], that route's
//! handler on the receiving node, which hands the batch to this node's cache (stored under
//! its own config, never sent on).
//!
//! Live peers: the members other than this node whose liveness lease holds in this node's
//! replica (a node that joins later starts cold and fills from new answers).

use std::sync::Arc;

use openclaw_proto::cache::{CacheReplica, CacheReplicaReply};

use super::Cluster;
use crate::cache::replicate::{CachePeers, PeerSend};

/// The cluster route that takes a peer's batch of cache entries.
pub const CACHE_PATH: &str = "/cluster/cache";

/// Sends cache entries to this node's live peers.
pub struct CacheFanout(pub Arc<Cluster>);

impl CacheFanout {
    /// The live members other than this node: id and cluster address.
    fn live_peers(&self) -> Vec<(u64, String)> {
        let c = &self.0;
        let m = c.raft.metrics().borrow().clone();
        let members: Vec<(u64, String)> = m
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != c.id)
            .map(|(id, member)| (*id, member.cluster_addr.clone()))
            .collect();
        c.sm.read(|s| {
            members
                .into_iter()
                .filter(|(id, _)| s.is_live(*id))
                .collect()
        })
    }
}

#[async_trait::async_trait]
impl CachePeers for CacheFanout {
    async fn send(&self, batch: &[CacheReplica]) -> Vec<PeerSend> {
        let c = &self.0;
        let sends = self.live_peers().into_iter().map(|(id, addr)| async move {
            let result = c
                .client
                .post::<_, CacheReplicaReply>(&addr, CACHE_PATH, &batch, c.client.rpc_timeout)
                .await
                .map_err(|e| e.to_string());
            PeerSend {
                peer: format!("{id} ({addr})"),
                result,
            }
        });
        futures::future::join_all(sends).await
    }
}

/// A peer's batch into this node's cache; `None` while the cache is not wired or not running
/// (the sender counts it `failed`).
pub async fn receive(c: &Cluster, batch: Vec<CacheReplica>) -> Option<CacheReplicaReply> {
    let cache = c.cache.get()?;
    cache.receive(batch).await.ok()
}

//! The request cache made cluster-wide by replication (issue 11): a node that stores an answer
//! hands the entry to its live peers, best effort — a cache, not acknowledged work.
//!
//! - Sender: [`Replicator::offer`] puts a [`CacheReplica`] on a bounded queue
//!   ([`REPLICATION_QUEUE_MAX`]) without waiting; at the bound the entry is dropped and counted
//!   (`openclaw_cache_replication_total{outcome="dropped_full"}`, a throttled warning). One
//!   sender task ([`run_sender`]) takes batches of up to [`REPLICATION_BATCH_MAX`] and hands
//!   each to the [`CachePeers`] seam, which cluster mode implements (`cluster/cache.rs`: one
//!   `POST /cluster/cache` per live peer); each entry is counted `sent` or `failed` per peer.
//!   A dropped or failed entry only costs a miss on that peer.
//! - Receiver: [`accept`] (pure) decides what its own config lets in — nothing while the cache
//!   is off; a `template` key only under `template`; a `semantic` entry only under `semantic`
//!   with the same embedding model (another model's vectors cannot be compared, and its keys
//!   could never be probed); never an entry already stale — and keeps the sender's absolute
//!   expiry ([`local_created_at`]), not a fresh TTL. The cache actor stores what is accepted
//!   like its own answers (`max_size_mb`, LRU) and never replicates it again.
//!
//! Keys are pure functions of the request (`keys.rs`, `semantic.rs`), so an entry stored on
//! one node is found under the same key on every node with the same config.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openclaw_proto::cache::{CacheReplica, CacheReplicaReply, ReplicaKey, ReplicaVector};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cache::keys::{self, CacheEntry, Strategy};
use crate::cache::semantic::{self, SemanticMeta};
use crate::config::kinds::DEFAULT_EMBEDDING_MODEL;
use crate::config::ConfigCell;
use crate::metrics::metrics;

/// Most entries waiting to be sent to the peers; past it new entries are dropped (counted).
pub const REPLICATION_QUEUE_MAX: usize = 1024;
/// Most entries in one `POST /cluster/cache` (a receiver refuses the rest of a larger batch).
pub const REPLICATION_BATCH_MAX: usize = 64;
/// Largest vector a receiver accepts (embedding models of today stay well under it).
pub const REPLICA_DIMS_MAX: usize = 16_384;

/// The seam to the other nodes. Cluster mode implements it; a node alone has none.
#[async_trait::async_trait]
pub trait CachePeers: Send + Sync {
    /// Send `batch` to every live peer (each within its deadline); one outcome per peer.
    async fn send(&self, batch: &[CacheReplica]) -> Vec<PeerSend>;
}

/// What one peer made of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerSend {
    pub peer: String,
    pub result: Result<CacheReplicaReply, String>,
}

/// The sender's counts (also in `openclaw_cache_replication_total`).
#[derive(Debug, Default)]
pub struct ReplicationCounts {
    /// Entries a peer received (per peer).
    pub sent: AtomicU64,
    /// Entries that did not reach a peer (per peer).
    pub failed: AtomicU64,
    /// Entries dropped at the queue's bound.
    pub dropped_full: AtomicU64,
}

impl ReplicationCounts {
    fn add(&self, outcome: &'static str, n: u64) {
        let c = match outcome {
            "sent" => &self.sent,
            "failed" => &self.failed,
            _ => &self.dropped_full,
        };
        c.fetch_add(n, Ordering::Relaxed);
        metrics().observe_cache_replication(outcome, n);
    }
}

/// The sender's handle: the bounded queue to the sender task.
#[derive(Clone)]
pub struct Replicator {
    tx: mpsc::Sender<CacheReplica>,
    /// The config in force (its `ttl_seconds` gives an entry's absolute expiry).
    cfg: ConfigCell,
    pub counts: Arc<ReplicationCounts>,
}

impl Replicator {
    /// A replicator and the receiving end of its queue (for [`run_sender`]).
    pub fn channel(cfg: ConfigCell) -> (Replicator, mpsc::Receiver<CacheReplica>) {
        let (tx, rx) = mpsc::channel(REPLICATION_QUEUE_MAX);
        (
            Replicator {
                tx,
                cfg,
                counts: Arc::default(),
            },
            rx,
        )
    }

    /// A replicator whose sender task sends to `peers` until `shutdown`.
    pub fn spawn(
        cfg: ConfigCell,
        peers: Arc<dyn CachePeers>,
        shutdown: CancellationToken,
    ) -> Replicator {
        let (r, rx) = Replicator::channel(cfg);
        tokio::spawn(run_sender(rx, peers, r.counts.clone(), shutdown));
        r
    }

    /// Queue the entry just stored under `key` (see [`Replicator::offer`]).
    pub fn offer_entry(&self, key: &str, kind: ReplicaKey, entry: &CacheEntry) -> bool {
        let ttl = self.cfg.get().cache.request_cache.ttl_seconds;
        self.offer(replica_of(key, kind, entry, ttl))
    }

    /// Queue `replica` for the peers without waiting; `false` when it was dropped (the queue at
    /// its bound, or the sender gone), counted `dropped_full`.
    pub fn offer(&self, replica: CacheReplica) -> bool {
        match self.tx.try_send(replica) {
            Ok(()) => true,
            Err(_) => {
                self.counts.add("dropped_full", 1);
                if let Some(suppressed) = crate::throttled!("cache replication queue full") {
                    tracing::warn!(
                        bound = REPLICATION_QUEUE_MAX,
                        suppressed,
                        "cache replication queue full: an entry was not sent to the peers \
                         (they will miss it once)"
                    );
                }
                false
            }
        }
    }
}

/// The sender task: a batch of what is queued (up to [`REPLICATION_BATCH_MAX`]) to every live
/// peer, one batch at a time; each entry counted `sent` or `failed` per peer.
pub async fn run_sender(
    mut rx: mpsc::Receiver<CacheReplica>,
    peers: Arc<dyn CachePeers>,
    counts: Arc<ReplicationCounts>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            r = rx.recv() => match r {
                Some(r) => r,
                None => return,
            },
            _ = shutdown.cancelled() => return,
        };
        let mut batch = vec![first];
        while batch.len() < REPLICATION_BATCH_MAX {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        let outcomes = tokio::select! {
            o = peers.send(&batch) => o,
            _ = shutdown.cancelled() => return,
        };
        for o in outcomes {
            match o.result {
                Ok(_) => counts.add("sent", n),
                Err(e) => {
                    counts.add("failed", n);
                    if let Some(suppressed) = crate::throttled!(&o.peer) {
                        tracing::warn!(
                            peer = %o.peer,
                            entries = n,
                            suppressed,
                            error = %e,
                            "cache replication to a peer failed (it misses these entries once)"
                        );
                    }
                }
            }
        }
    }
}

/// The replica of an entry stored under `key` by the strategy in force (`ttl_seconds` of the
/// sender's config gives its absolute expiry). `kind` says how `key` was derived.
pub fn replica_of(
    key: &str,
    kind: ReplicaKey,
    entry: &CacheEntry,
    ttl_seconds: u64,
) -> CacheReplica {
    CacheReplica {
        key: key.to_string(),
        kind,
        model: entry.model.clone(),
        text: entry.text.clone(),
        finish_reason: entry.finish_reason.clone(),
        usage: entry.usage,
        created_at_ms: entry.created_at_ms,
        expires_at_ms: (ttl_seconds != 0).then(|| {
            entry
                .created_at_ms
                .saturating_add(ttl_seconds.saturating_mul(1000))
        }),
    }
}

/// How the key of a stored answer was derived, for its replica: `semantic` (with the
/// partition, the embedding model and the query's vector, when embedded), `template` or
/// `exact`.
pub fn kind_of(semantic: Option<(&str, &str, Option<&Vec<f32>>)>, template: bool) -> ReplicaKey {
    match (semantic, template) {
        (Some((partition, model, vector)), _) => {
            ReplicaKey::Semantic(vector.map(|v| ReplicaVector {
                partition: partition.to_string(),
                embedding_model: model.to_string(),
                vector: v.clone(),
            }))
        }
        (None, true) => ReplicaKey::Template,
        (None, false) => ReplicaKey::Exact,
    }
}

/// Why a receiver does not store a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `cache.request_cache.enabled` is false here.
    CacheOff,
    /// The key cannot be probed under this node's strategy.
    OtherStrategy,
    /// A semantic entry of another embedding model than this node's.
    OtherEmbeddingModel,
    /// Stale by the sender's expiry or this node's TTL.
    Expired,
    /// Not a key this node's cache derives (32 hex digits).
    BadKey,
    /// A vector that is empty, too long or not finite.
    BadVector,
}

/// When a replica counts as created here so that it expires at the sender's absolute expiry,
/// or earlier when this node's own `ttl_seconds` is shorter (`0`: never stale here).
pub fn local_created_at(created_at_ms: u64, expires_at_ms: Option<u64>, ttl_seconds: u64) -> u64 {
    match expires_at_ms {
        // Expires here at `local + ttl` = min(sender's expiry, created + ttl).
        Some(exp) if ttl_seconds != 0 => {
            created_at_ms.min(exp.saturating_sub(ttl_seconds.saturating_mul(1000)))
        }
        _ => created_at_ms,
    }
}

fn valid_key(key: &str) -> bool {
    key.len() == 32 && key.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What the receiver stores for `r` under its own config `rc` at `now_ms`: the key and entry,
/// or why not (pure). The size bound is the store's (`max_size_mb`, 1/16 per entry, LRU).
pub fn accept(
    rc: &crate::config::RequestCache,
    r: CacheReplica,
    now_ms: u64,
) -> Result<(String, CacheEntry), Refusal> {
    if !rc.enabled {
        return Err(Refusal::CacheOff);
    }
    if !valid_key(&r.key) {
        return Err(Refusal::BadKey);
    }
    let strategy = Strategy::of(rc);
    let semantic = match r.kind {
        ReplicaKey::Exact => None,
        ReplicaKey::Template if strategy == Strategy::Template => None,
        ReplicaKey::Semantic(v) if strategy == Strategy::Semantic => match v {
            None => None,
            Some(v) => {
                let own = rc
                    .embedding_model
                    .as_deref()
                    .unwrap_or(DEFAULT_EMBEDDING_MODEL);
                if v.embedding_model != own {
                    return Err(Refusal::OtherEmbeddingModel);
                }
                if v.vector.len() > REPLICA_DIMS_MAX || !valid_key(&v.partition) {
                    return Err(Refusal::BadVector);
                }
                let vector = semantic::unit(v.vector).ok_or(Refusal::BadVector)?;
                Some(SemanticMeta {
                    partition: v.partition,
                    vector,
                })
            }
        },
        ReplicaKey::Template | ReplicaKey::Semantic(_) => return Err(Refusal::OtherStrategy),
    };
    if r.expires_at_ms.is_some_and(|e| e <= now_ms) {
        return Err(Refusal::Expired);
    }
    let created = local_created_at(r.created_at_ms, r.expires_at_ms, rc.ttl_seconds);
    if keys::is_expired(created, now_ms, rc.ttl_seconds) {
        return Err(Refusal::Expired);
    }
    Ok((
        r.key,
        CacheEntry {
            model: r.model,
            text: r.text,
            finish_reason: r.finish_reason,
            usage: r.usage,
            created_at_ms: created,
            last_used_ms: r.created_at_ms,
            semantic,
        },
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::{HashStrategy, RequestCache};
    use openclaw_proto::openai::Usage;
    use std::time::Duration;

    const K: &str = "0123456789abcdef0123456789abcdef";
    const P: &str = "fedcba9876543210fedcba9876543210";

    fn rc(strategy: HashStrategy, model: Option<&str>, ttl: u64) -> RequestCache {
        RequestCache {
            enabled: true,
            ttl_seconds: ttl,
            hash_strategy: strategy,
            embedding_model: model.map(str::to_string),
            ..RequestCache::default()
        }
    }

    fn replica(kind: ReplicaKey, created: u64, expires: Option<u64>) -> CacheReplica {
        CacheReplica {
            key: K.into(),
            kind,
            model: "fast".into(),
            text: "answer".into(),
            finish_reason: Some("stop".into()),
            usage: Usage::new(10, 2),
            created_at_ms: created,
            expires_at_ms: expires,
        }
    }

    fn vector(model: &str, v: Vec<f32>) -> ReplicaKey {
        ReplicaKey::Semantic(Some(ReplicaVector {
            partition: P.into(),
            embedding_model: model.into(),
            vector: v,
        }))
    }

    #[test]
    fn what_a_receiver_accepts() {
        use HashStrategy::{Exact, Semantic, Template};
        let now = 1_000_000;
        let live = Some(now + 60_000);
        let off = RequestCache {
            enabled: false,
            ..rc(Exact, None, 3600)
        };
        // (receiver config, replica, expected)
        let cases: Vec<(RequestCache, CacheReplica, Result<(), Refusal>)> = vec![
            (
                off,
                replica(ReplicaKey::Exact, now, live),
                Err(Refusal::CacheOff),
            ),
            (
                rc(Exact, None, 3600),
                replica(ReplicaKey::Exact, now, live),
                Ok(()),
            ),
            // Every strategy keys what it cannot serve otherwise by the exact key.
            (
                rc(Template, None, 3600),
                replica(ReplicaKey::Exact, now, live),
                Ok(()),
            ),
            (
                rc(Semantic, None, 3600),
                replica(ReplicaKey::Exact, now, live),
                Ok(()),
            ),
            (
                rc(Template, None, 3600),
                replica(ReplicaKey::Template, now, live),
                Ok(()),
            ),
            (
                rc(Exact, None, 3600),
                replica(ReplicaKey::Template, now, live),
                Err(Refusal::OtherStrategy),
            ),
            (
                rc(Semantic, Some("emb"), 3600),
                replica(vector("emb", vec![3.0, 4.0]), now, live),
                Ok(()),
            ),
            (
                rc(Semantic, Some("emb"), 3600),
                replica(ReplicaKey::Semantic(None), now, live),
                Ok(()),
            ),
            (
                rc(Exact, None, 3600),
                replica(vector("emb", vec![1.0]), now, live),
                Err(Refusal::OtherStrategy),
            ),
            (
                rc(Semantic, Some("other"), 3600),
                replica(vector("emb", vec![1.0]), now, live),
                Err(Refusal::OtherEmbeddingModel),
            ),
            // No embedding model configured: the built-in one.
            (
                rc(Semantic, None, 3600),
                replica(vector(DEFAULT_EMBEDDING_MODEL, vec![1.0]), now, live),
                Ok(()),
            ),
            (
                rc(Semantic, Some("emb"), 3600),
                replica(vector("emb", vec![]), now, live),
                Err(Refusal::BadVector),
            ),
            (
                rc(Semantic, Some("emb"), 3600),
                replica(vector("emb", vec![f32::NAN, 1.0]), now, live),
                Err(Refusal::BadVector),
            ),
            (
                rc(Semantic, Some("emb"), 3600),
                replica(vector("emb", vec![1.0; REPLICA_DIMS_MAX + 1]), now, live),
                Err(Refusal::BadVector),
            ),
            // Stale by the sender's expiry, or by this node's shorter TTL.
            (
                rc(Exact, None, 3600),
                replica(ReplicaKey::Exact, now - 10_000, Some(now)),
                Err(Refusal::Expired),
            ),
            (
                rc(Exact, None, 5),
                replica(ReplicaKey::Exact, now - 10_000, live),
                Err(Refusal::Expired),
            ),
            // Never stale on the sender (ttl 0), and here.
            (
                rc(Exact, None, 0),
                replica(ReplicaKey::Exact, 1, None),
                Ok(()),
            ),
            (
                rc(Exact, None, 3600),
                CacheReplica {
                    key: "not-a-key".into(),
                    ..replica(ReplicaKey::Exact, now, live)
                },
                Err(Refusal::BadKey),
            ),
        ];
        for (i, (cfg, r, want)) in cases.into_iter().enumerate() {
            let got = accept(&cfg, r, now).map(|_| ());
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn an_accepted_semantic_entry_keeps_its_partition_and_a_unit_vector() {
        let (key, e) = accept(
            &rc(HashStrategy::Semantic, Some("emb"), 3600),
            replica(vector("emb", vec![3.0, 4.0]), 5_000, Some(3_605_000)),
            6_000,
        )
        .unwrap();
        assert_eq!(key, K);
        let sm = e.semantic.unwrap();
        assert_eq!(sm.partition, P);
        assert_eq!(sm.vector, vec![0.6, 0.8]);
        assert_eq!((e.created_at_ms, e.last_used_ms), (5_000, 5_000));
        assert_eq!(e.text, "answer");
    }

    #[test]
    fn the_senders_absolute_expiry_is_kept() {
        // (created, sender's expiry, own ttl s, local created)
        let t = 10_000_000;
        let cases = [
            // Same TTL: the same instant.
            (t, Some(t + 3_600_000), 3600, t),
            // A longer TTL here: shifted back so it still ends at the sender's expiry.
            (t, Some(t + 60_000), 3600, t + 60_000 - 3_600_000),
            // A shorter TTL here: it ends earlier, by this node's own config.
            (t, Some(t + 3_600_000), 60, t),
            // Never stale on the sender: this node's TTL from creation.
            (t, None, 60, t),
            // Never stale here: stays (this node's config).
            (t, Some(t + 60_000), 0, t),
        ];
        for (created, exp, ttl, want) in cases {
            assert_eq!(
                local_created_at(created, exp, ttl),
                want,
                "{created} {exp:?} {ttl}"
            );
        }
        // Not a fresh TTL: a replica sent late expires when the sender's entry does.
        // (A node with an hour's TTL receives a minute-long entry 50 s after it was made.)
        let (_, e) = accept(
            &rc(HashStrategy::Exact, None, 3600),
            replica(ReplicaKey::Exact, t, Some(t + 60_000)),
            t + 50_000,
        )
        .unwrap();
        assert!(!keys::is_expired(e.created_at_ms, t + 59_999, 3600));
        assert!(keys::is_expired(e.created_at_ms, t + 60_000, 3600));
        assert_eq!(e.last_used_ms, t);
    }

    #[test]
    fn replicas_say_how_their_key_was_made() {
        let v = vec![1.0, 0.0];
        let cases = [
            (Some((P, "emb", Some(&v))), false, vector("emb", v.clone())),
            (Some((P, "emb", None)), false, ReplicaKey::Semantic(None)),
            (None, true, ReplicaKey::Template),
            (None, false, ReplicaKey::Exact),
        ];
        for (sem, template, want) in cases {
            assert_eq!(kind_of(sem, template), want);
        }
        let e = CacheEntry {
            model: "fast".into(),
            text: "t".into(),
            finish_reason: None,
            usage: Usage::new(1, 1),
            created_at_ms: 10,
            last_used_ms: 10,
            semantic: None,
        };
        assert_eq!(
            replica_of(K, ReplicaKey::Exact, &e, 2).expires_at_ms,
            Some(2_010)
        );
        assert_eq!(replica_of(K, ReplicaKey::Exact, &e, 0).expires_at_ms, None);
    }

    /// Peers that record the batches they get and answer only when let go.
    struct Stuck {
        batches: std::sync::Mutex<Vec<usize>>,
        got: tokio::sync::Notify,
        go: tokio::sync::Semaphore,
        fail: bool,
    }

    #[async_trait::async_trait]
    impl CachePeers for Stuck {
        async fn send(&self, batch: &[CacheReplica]) -> Vec<PeerSend> {
            self.batches.lock().unwrap().push(batch.len());
            self.got.notify_one();
            let _ = self.go.acquire().await.unwrap();
            let result = if self.fail {
                Err("unreachable".to_string())
            } else {
                Ok(CacheReplicaReply::default())
            };
            vec![
                PeerSend {
                    peer: "a".into(),
                    result: result.clone(),
                },
                PeerSend {
                    peer: "b".into(),
                    result: Ok(CacheReplicaReply::default()),
                },
            ]
        }
    }

    fn stuck(fail: bool) -> Arc<Stuck> {
        Arc::new(Stuck {
            batches: Default::default(),
            got: Default::default(),
            go: tokio::sync::Semaphore::new(0),
            fail,
        })
    }

    #[tokio::test]
    async fn past_the_bound_entries_are_dropped_and_counted_without_waiting() {
        let peers = stuck(false);
        let shutdown = CancellationToken::new();
        let r = Replicator::spawn(
            ConfigCell::new(crate::config::Config::default()),
            peers.clone(),
            shutdown.clone(),
        );
        // The sender takes the first entry and is stuck on the peers.
        assert!(r.offer(replica(ReplicaKey::Exact, 1, None)));
        tokio::time::timeout(Duration::from_secs(10), peers.got.notified())
            .await
            .unwrap();
        // The queue fills to its bound; every offer past it returns at once, dropped.
        let extra = 10;
        let mut accepted = 0;
        for _ in 0..REPLICATION_QUEUE_MAX + extra {
            accepted += usize::from(r.offer(replica(ReplicaKey::Exact, 1, None)));
        }
        assert_eq!(accepted, REPLICATION_QUEUE_MAX);
        assert_eq!(r.counts.dropped_full.load(Ordering::Relaxed), extra as u64);
        assert_eq!(r.counts.sent.load(Ordering::Relaxed), 0);
        // Let the peers answer: batches of at most REPLICATION_BATCH_MAX drain the queue.
        peers.go.add_permits(1_000_000);
        let want = (1 + REPLICATION_QUEUE_MAX) as u64 * 2;
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while r.counts.sent.load(Ordering::Relaxed) < want {
            assert!(std::time::Instant::now() < end, "the queue drains");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let batches = peers.batches.lock().unwrap().clone();
        assert_eq!(batches[0], 1);
        assert!(
            batches.iter().all(|b| *b <= REPLICATION_BATCH_MAX),
            "{batches:?}"
        );
        assert_eq!(batches.iter().sum::<usize>(), 1 + REPLICATION_QUEUE_MAX);
        assert_eq!(
            batches.len(),
            1 + REPLICATION_QUEUE_MAX / REPLICATION_BATCH_MAX
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_failing_peer_is_counted_per_entry() {
        let peers = stuck(true);
        peers.go.add_permits(1_000);
        let shutdown = CancellationToken::new();
        let r = Replicator::spawn(
            ConfigCell::new(crate::config::Config::default()),
            peers.clone(),
            shutdown.clone(),
        );
        for _ in 0..3 {
            r.offer(replica(ReplicaKey::Exact, 1, None));
        }
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while r.counts.failed.load(Ordering::Relaxed) + r.counts.sent.load(Ordering::Relaxed) < 6 {
            assert!(std::time::Instant::now() < end);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Peer `a` failed every entry, `b` got them.
        assert_eq!(r.counts.failed.load(Ordering::Relaxed), 3);
        assert_eq!(r.counts.sent.load(Ordering::Relaxed), 3);
        shutdown.cancel();
    }
}

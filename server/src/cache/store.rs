//! The cache actor: owns the request cache (`cache.request_cache`) — the sled `cache` tree, an
//! in-memory index (key → size, created, last used) and the semantic vector index
//! (`crate::cache::semantic::SemanticIndex`), both rebuilt from the tree at start, so size, LRU
//! and similarity decisions never scan sled. Every removal (TTL, LRU eviction, clear, an
//! unreadable entry) leaves both indexes. The decisions themselves are the pure functions of
//! `crate::cache::keys` and `crate::cache::semantic`.
//!
//! Messages: `Get` (a hit refreshes last-used; a stale entry is dropped and is a miss),
//! `Similar` (the best entry of a partition at or above a threshold, stale ones dropped), `Put`
//! (entries over 1/16 of the bound are refused; then least recently used entries are evicted
//! until the bytes are under `max_size_mb`), `PutReplicas` (a peer's batch: what
//! `crate::cache::replicate::accept` lets in under this node's config goes through `Put`'s
//! rules; counted `received`/`refused` in `openclaw_cache_replication_total`), `Tally` (one lookup's outcome: a hit per strategy
//! or a miss — `openclaw_cache_requests_total`, `openclaw_cache_hits_total`,
//! `openclaw_cache_hit_ratio` — and the semantic cache's embedding call, if any), `Stats`,
//! `Prune` (drop stale entries), `Clear`.
//!
//! The handlers touch sled's tree (in-memory page cache; no flush, no network): a cache entry
//! lost in a crash is a miss, never a wrong answer. Provider I/O never happens here.
//! The mailbox is bounded by its callers: one message per running worker or HTTP request in
//! flight (`server.workers`, `server.max_in_flight_requests`), plus one prune per
//! `PRUNE_EVERY`, plus one `PutReplicas` per peer (each peer's sender waits for the answer to
//! its batch before sending the next).

use std::collections::HashMap;
use std::time::Duration;

use openclaw_proto::api::{CacheHitsByStrategy, CacheStats};
use openclaw_proto::cache::{CacheReplica, CacheReplicaReply};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::cache::keys::{self as cache, CacheEntry, IndexEntry, Strategy};
use crate::cache::replicate::{self, REPLICATION_BATCH_MAX};
use crate::cache::semantic::SemanticIndex;
use crate::cache::HitStrategy;
use crate::config::ConfigCell;
use crate::metrics::metrics;
use crate::storage::Store;
use crate::util::now_ms;

/// How long a caller waits for the cache actor before treating the lookup as a miss.
pub const CACHE_CALL_TIMEOUT_MS: u64 = 2_000;
/// How often stale entries are dropped in the background.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);

pub enum CacheMsg {
    Get {
        key: String,
        reply: RpcReplyPort<Option<CacheEntry>>,
    },
    Similar {
        partition: String,
        vector: Vec<f32>,
        threshold: f32,
        reply: RpcReplyPort<Option<(CacheEntry, f32)>>,
    },
    Put {
        key: String,
        entry: CacheEntry,
    },
    /// A peer's replicated entries (at most `REPLICATION_BATCH_MAX` taken; the rest refused).
    PutReplicas {
        batch: Vec<CacheReplica>,
        reply: RpcReplyPort<CacheReplicaReply>,
    },
    /// One lookup's outcome (`None`: a miss) and the semantic embedding call's (if made).
    Tally {
        hit: Option<HitStrategy>,
        embedding: Option<bool>,
    },
    Stats(RpcReplyPort<CacheStats>),
    /// Drop stale entries; replies with how many.
    Prune(RpcReplyPort<u64>),
    /// Drop every entry; replies with how many.
    Clear(RpcReplyPort<u64>),
    /// Periodic prune (no reply).
    Tick,
}
impl ractor::Message for CacheMsg {}

/// What the cache actor needs: the config (its section is read per decision) and the store.
#[derive(Clone)]
pub struct CacheArgs {
    pub cfg: ConfigCell,
    pub store: Store,
}

pub struct CacheState {
    cfg: ConfigCell,
    store: Store,
    index: HashMap<String, IndexEntry>,
    vectors: SemanticIndex,
    bytes: u64,
    hits: u64,
    hits_exact: u64,
    hits_template: u64,
    hits_semantic: u64,
    embedding_calls: u64,
    embedding_failures: u64,
    misses: u64,
    evictions: u64,
    expired: u64,
}

#[derive(Clone)]
pub struct Cache;

impl Actor for Cache {
    type Msg = CacheMsg;
    type State = CacheState;
    type Arguments = CacheArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: CacheArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(PRUNE_EVERY, || CacheMsg::Tick);
        let mut state = CacheState {
            cfg: args.cfg,
            store: args.store,
            index: HashMap::new(),
            vectors: SemanticIndex::default(),
            bytes: 0,
            hits: 0,
            hits_exact: 0,
            hits_template: 0,
            hits_semantic: 0,
            embedding_calls: 0,
            embedding_failures: 0,
            misses: 0,
            evictions: 0,
            expired: 0,
        };
        // Start-up read of the tree (the one scan; afterwards the index decides).
        let (entries, unreadable) = state.store.cache_scan::<CacheEntry>()?;
        for k in unreadable {
            tracing::warn!(key = %k, "dropping unreadable cache entry");
            let _ = state.store.cache_remove(&k);
        }
        for (k, e, size) in entries {
            state.bytes += size;
            if let Some(sm) = e.semantic {
                state.vectors.insert(&k, &sm.partition, sm.vector);
            }
            state.index.insert(
                k,
                IndexEntry {
                    size,
                    created_at_ms: e.created_at_ms,
                    last_used_ms: e.last_used_ms,
                },
            );
        }
        prune(&mut state);
        enforce_size(&mut state);
        tracing::info!(
            entries = state.index.len(),
            semantic_entries = state.vectors.len(),
            bytes = state.bytes,
            "request cache loaded"
        );
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CacheMsg::Get { key, reply } => {
                let _ = reply.send(get(state, &key));
            }
            CacheMsg::Similar {
                partition,
                vector,
                threshold,
                reply,
            } => {
                let _ = reply.send(similar(state, &partition, &vector, threshold));
            }
            CacheMsg::Tally { hit, embedding } => tally(state, hit, embedding),
            CacheMsg::Put { key, entry } => {
                put(state, key, entry);
            }
            CacheMsg::PutReplicas { batch, reply } => {
                let _ = reply.send(put_replicas(state, batch));
            }
            CacheMsg::Stats(reply) => {
                let _ = reply.send(stats(state));
            }
            CacheMsg::Prune(reply) => {
                let n = prune(state) + enforce_size(state);
                let _ = reply.send(n);
            }
            CacheMsg::Clear(reply) => {
                let n = state.index.len() as u64;
                if let Err(e) = state.store.cache_clear() {
                    tracing::error!(error = %e, "cannot clear the request cache");
                }
                state.index.clear();
                state.vectors = SemanticIndex::default();
                state.bytes = 0;
                tracing::info!(removed = n, "request cache cleared");
                let _ = reply.send(n);
            }
            CacheMsg::Tick => {
                prune(state);
            }
        }
        Ok(())
    }
}

fn tally(state: &mut CacheState, hit: Option<HitStrategy>, embedding: Option<bool>) {
    match hit {
        Some(s) => {
            state.hits += 1;
            match s {
                HitStrategy::Exact => state.hits_exact += 1,
                HitStrategy::Template => state.hits_template += 1,
                HitStrategy::Semantic => state.hits_semantic += 1,
            }
            metrics().observe_cache_hit_strategy(s.as_str());
        }
        None => state.misses += 1,
    }
    metrics().observe_cache(hit.is_some());
    if let Some(ok) = embedding {
        state.embedding_calls += 1;
        if !ok {
            state.embedding_failures += 1;
        }
        metrics().observe_cache_embedding(ok);
    }
}

/// The best live entry of `partition` at or above `threshold` (a stale best is dropped and the
/// search repeated, so an expired entry never hides a live one).
fn similar(
    state: &mut CacheState,
    partition: &str,
    vector: &[f32],
    threshold: f32,
) -> Option<(CacheEntry, f32)> {
    // Each round drops the entry it found unless it is served: bounded by the partition's size.
    loop {
        let (key, score) = state.vectors.best(partition, vector, threshold)?;
        if let Some(entry) = get(state, &key) {
            return Some((entry, score));
        }
        // `get` removed it (stale or unreadable); make sure the index forgot it too.
        state.vectors.remove(&key);
    }
}

fn remove(state: &mut CacheState, key: &str) {
    if let Some(e) = state.index.remove(key) {
        state.bytes = state.bytes.saturating_sub(e.size);
    }
    state.vectors.remove(key);
    if let Err(e) = state.store.cache_remove(key) {
        tracing::warn!(error = %e, "cannot remove a cache entry");
    }
}

fn get(state: &mut CacheState, key: &str) -> Option<CacheEntry> {
    let now = now_ms();
    let ttl = state.cfg.get().cache.request_cache.ttl_seconds;
    let ix = *state.index.get(key)?;
    if cache::is_expired(ix.created_at_ms, now, ttl) {
        remove(state, key);
        state.expired += 1;
        return None;
    }
    let mut entry = match state.store.cache_get::<CacheEntry>(key) {
        Ok(Some(e)) => e,
        Ok(None) => {
            remove(state, key);
            return None;
        }
        Err(e) => {
            tracing::warn!(error = %e, "unreadable cache entry dropped");
            remove(state, key);
            return None;
        }
    };
    entry.last_used_ms = now.max(ix.last_used_ms);
    match state.store.cache_put(key, &entry) {
        Ok(size) => {
            state.bytes = state.bytes.saturating_sub(ix.size) + size;
            state.index.insert(
                key.to_string(),
                IndexEntry {
                    size,
                    created_at_ms: entry.created_at_ms,
                    last_used_ms: entry.last_used_ms,
                },
            );
        }
        Err(e) => tracing::warn!(error = %e, "cannot refresh a cache entry"),
    }
    Some(entry)
}

/// Store `entry` under `key` (false: refused, too large or not writable).
fn put(state: &mut CacheState, key: String, entry: CacheEntry) -> bool {
    let max = cache::max_bytes(&state.cfg.get().cache.request_cache);
    let size = match Store::cache_entry_size(&key, &entry) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode a cache entry");
            return false;
        }
    };
    if !cache::admits_size(size, max) {
        tracing::debug!(
            size,
            max,
            "answer too large to cache (over 1/16 of max_size_mb)"
        );
        return false;
    }
    if state.index.contains_key(&key) {
        remove(state, &key);
    }
    match state.store.cache_put(&key, &entry) {
        Ok(size) => {
            state.bytes += size;
            if let Some(sm) = &entry.semantic {
                state.vectors.insert(&key, &sm.partition, sm.vector.clone());
            }
            state.index.insert(
                key,
                IndexEntry {
                    size,
                    created_at_ms: entry.created_at_ms,
                    last_used_ms: entry.last_used_ms,
                },
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot store a cache entry");
            return false;
        }
    }
    enforce_size(state);
    true
}

/// A peer's batch: each entry this node's config accepts is stored as by `Put`.
fn put_replicas(state: &mut CacheState, batch: Vec<CacheReplica>) -> CacheReplicaReply {
    let rc = state.cfg.get().cache.request_cache.clone();
    let now = now_ms();
    let mut out = CacheReplicaReply::default();
    let over = batch.len().saturating_sub(REPLICATION_BATCH_MAX);
    out.refused += over as u32;
    for r in batch.into_iter().take(REPLICATION_BATCH_MAX) {
        match replicate::accept(&rc, r, now) {
            // An answer to the same request this node has already: kept as it is.
            Ok((key, _)) if state.index.contains_key(&key) => out.accepted += 1,
            Ok((key, entry)) => {
                if put(state, key, entry) {
                    out.accepted += 1;
                } else {
                    out.refused += 1;
                }
            }
            Err(why) => {
                tracing::debug!(?why, "replicated cache entry refused");
                out.refused += 1;
            }
        }
    }
    metrics().observe_cache_replication("received", u64::from(out.accepted));
    metrics().observe_cache_replication("refused", u64::from(out.refused));
    out
}

/// Drop stale entries; returns how many.
fn prune(state: &mut CacheState) -> u64 {
    let ttl = state.cfg.get().cache.request_cache.ttl_seconds;
    let stale = cache::expired(&state.index, now_ms(), ttl);
    for k in &stale {
        remove(state, k);
    }
    state.expired += stale.len() as u64;
    if !stale.is_empty() {
        tracing::debug!(removed = stale.len(), "stale cache entries dropped");
    }
    stale.len() as u64
}

/// Evict least recently used entries until under the bound; returns how many.
fn enforce_size(state: &mut CacheState) -> u64 {
    let max = cache::max_bytes(&state.cfg.get().cache.request_cache);
    let victims = cache::evict_for_size(&state.index, state.bytes, max);
    for k in &victims {
        remove(state, k);
    }
    state.evictions += victims.len() as u64;
    victims.len() as u64
}

fn stats(state: &CacheState) -> CacheStats {
    let rc = state.cfg.get().cache.request_cache.clone();
    let lookups = state.hits + state.misses;
    CacheStats {
        enabled: rc.enabled,
        strategy: cache::strategy_name(&rc).to_string(),
        active_strategy: match Strategy::of(&rc) {
            Strategy::Exact => "exact",
            Strategy::Template => "template",
            Strategy::Semantic => "semantic",
        }
        .to_string(),
        entries: state.index.len() as u64,
        bytes: state.bytes,
        max_bytes: cache::max_bytes(&rc),
        ttl_seconds: rc.ttl_seconds,
        hits: state.hits,
        misses: state.misses,
        hit_ratio: if lookups == 0 {
            0.0
        } else {
            state.hits as f64 / lookups as f64
        },
        evictions: state.evictions,
        expired: state.expired,
        hits_by_strategy: CacheHitsByStrategy {
            exact: state.hits_exact,
            template: state.hits_template,
            semantic: state.hits_semantic,
        },
        semantic_entries: state.vectors.len() as u64,
        semantic_partitions: state.vectors.partitions() as u64,
        embedding_calls: state.embedding_calls,
        embedding_failures: state.embedding_failures,
    }
}

/// A new entry for an answer given now.
pub fn entry_now(
    model: &str,
    text: String,
    finish_reason: Option<String>,
    usage: openclaw_proto::openai::Usage,
) -> CacheEntry {
    let now = now_ms();
    CacheEntry {
        model: model.to_string(),
        text,
        finish_reason,
        usage,
        created_at_ms: now,
        last_used_ms: now,
        semantic: None,
    }
}

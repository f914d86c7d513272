//! The request cache (§18.3): keys, entries and the size/TTL/LRU decisions (pure, [`keys`]),
//! and the store actor that owns the sled tree and its index ([`store`]). [`RequestCache`] is
//! the handle workers, the chat endpoint and the operator endpoints use.

pub mod keys;
pub mod store;

use openclaw_proto::api::CacheStats;

use crate::supervisor::Current;
use keys::CacheEntry;
use store::{CacheMsg, CACHE_CALL_TIMEOUT_MS};

/// The cache actor is not running (restarting, or given up on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the cache actor is not running (restarting?); retry shortly")]
pub struct CacheUnavailable;

/// The handle to the request cache.
#[derive(Clone, Default)]
pub struct RequestCache {
    pub actor: Current<CacheMsg>,
}

impl RequestCache {
    /// Look `key` up (a miss when the actor is not there or slow).
    pub async fn lookup(&self, key: &str) -> Option<CacheEntry> {
        let actor = self.actor.get()?;
        ractor::call_t!(
            actor,
            |reply| CacheMsg::Get {
                key: key.to_string(),
                reply
            },
            CACHE_CALL_TIMEOUT_MS
        )
        .ok()
        .flatten()
    }

    /// Store an answer (fire and forget).
    pub fn store(&self, key: String, entry: CacheEntry) {
        if let Some(actor) = self.actor.get() {
            let _ = actor.cast(CacheMsg::Put { key, entry });
        }
    }

    pub async fn stats(&self) -> Result<CacheStats, CacheUnavailable> {
        let actor = self.actor.get().ok_or(CacheUnavailable)?;
        ractor::call_t!(actor, CacheMsg::Stats, CACHE_CALL_TIMEOUT_MS).map_err(|_| CacheUnavailable)
    }

    /// Drop stale entries; how many.
    pub async fn prune(&self) -> Result<u64, CacheUnavailable> {
        let actor = self.actor.get().ok_or(CacheUnavailable)?;
        ractor::call_t!(actor, CacheMsg::Prune, CACHE_CALL_TIMEOUT_MS).map_err(|_| CacheUnavailable)
    }

    /// Drop every entry; how many.
    pub async fn clear(&self) -> Result<u64, CacheUnavailable> {
        let actor = self.actor.get().ok_or(CacheUnavailable)?;
        ractor::call_t!(actor, CacheMsg::Clear, CACHE_CALL_TIMEOUT_MS).map_err(|_| CacheUnavailable)
    }
}

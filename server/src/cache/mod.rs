//! The request cache (§18.3): keys, entries and the size/TTL/LRU decisions (pure, [`keys`]),
//! the `semantic` strategy's partition key and vector index (pure, [`semantic`]), and the store
//! actor that owns the sled tree and both indexes ([`store`]). [`RequestCache`] is the handle
//! workers, the chat endpoint and the operator endpoints use: [`probe`] says how a request is
//! looked up, [`RequestCache::find`] looks it up (embedding the query under `semantic`; an
//! embedding failure is a miss, counted, never an error) and [`RequestCache::store_answer`]
//! stores the answer under the probe and, in a cluster, hands it to the peers
//! ([`replicate`]: a bounded queue and a sender task behind the `CachePeers` seam; a peer's
//! entries come back in through [`RequestCache::receive`] and are never sent on).
//!
//! The semantic cache's own embedding calls go through [`crate::embeddings::embed`]: rate
//! limited, audited (`purpose: "embedding"`) and budgeted to the requesting agent like any
//! embedding call (with the simulator's built-in model they cost nothing); a budget refusal is
//! a miss. They are counted in `openclaw_cache_embeddings_total`.

pub mod keys;
pub mod replicate;
pub mod semantic;
pub mod store;

use openclaw_proto::api::CacheStats;
use openclaw_proto::cache::{CacheReplica, CacheReplicaReply};
use openclaw_proto::openai::ChatCompletionRequest;
use serde_json::Value;

use crate::budget::Budget;
use crate::calls::{CallMeta, Calls};
use crate::config::kinds::DEFAULT_EMBEDDING_MODEL;
use crate::metrics::metrics;
use crate::supervisor::Current;
use keys::{CacheEntry, Strategy};
use semantic::{SemanticKey, SemanticMeta};
use store::{CacheMsg, CACHE_CALL_TIMEOUT_MS};

/// How one request is looked up and stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// The entry's key: `exact` or `template`; under `semantic`, partition + query.
    pub key: String,
    /// What a hit on `key` is reported as (`exact`, or `template` for a template key).
    pub by: HitStrategy,
    /// Under `semantic`, for a request that may be served by similarity.
    pub semantic: Option<SemanticProbe>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SemanticProbe {
    pub key: SemanticKey,
    pub embedding_model: String,
    pub threshold: f32,
    /// The query's vector, once embedded (kept by a miss for the store).
    pub vector: Option<Vec<f32>>,
}

/// What found a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HitStrategy {
    Exact,
    Template,
    Semantic,
}

impl HitStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            HitStrategy::Exact => "exact",
            HitStrategy::Template => "template",
            HitStrategy::Semantic => "semantic",
        }
    }
}

/// A cached answer found for a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub entry: CacheEntry,
    pub strategy: HitStrategy,
    /// Cosine similarity of the queries (semantic hits only).
    pub score: Option<f32>,
}

impl Hit {
    /// The score as reported (task view, audit line): 4 decimals.
    pub fn score_f64(&self) -> Option<f64> {
        self.score
            .map(|s| (f64::from(s) * 10_000.0).round() / 10_000.0)
    }

    /// The `X-OpenClaw-Cache` value of a hit: `hit` under `exact`/`template`; under `semantic`
    /// `hit; strategy=semantic; score=0.97` (or `hit; strategy=exact` for an identical query).
    pub fn header_value(&self, configured: Strategy) -> String {
        match (configured, self.score) {
            (Strategy::Semantic, Some(s)) => {
                format!("hit; strategy={}; score={s:.2}", self.strategy.as_str())
            }
            (Strategy::Semantic, None) => format!("hit; strategy={}", self.strategy.as_str()),
            _ => "hit".to_string(),
        }
    }
}

/// The probe of a chat request to `model` for `agent` (pure). `template`: the task's template
/// id and parameters. Under `semantic`, a request that cannot be served by similarity (see
/// [`semantic::semantic_key`]) is looked up by its `exact` key only.
pub fn probe(
    rc: &crate::config::RequestCache,
    model: &str,
    agent: &str,
    req: &ChatCompletionRequest,
    template: Option<(&str, &Value)>,
) -> Probe {
    let strategy = Strategy::of(rc);
    if strategy == Strategy::Semantic {
        let embedding_model = rc
            .embedding_model
            .clone()
            .unwrap_or_else(|| DEFAULT_EMBEDDING_MODEL.to_string());
        if let Some(key) = semantic::semantic_key(model, agent, &embedding_model, req) {
            return Probe {
                key: key.entry_key(),
                by: HitStrategy::Exact,
                semantic: Some(SemanticProbe {
                    key,
                    embedding_model,
                    threshold: rc.similarity_threshold as f32,
                    vector: None,
                }),
            };
        }
    }
    let by = match (strategy, template) {
        (Strategy::Template, Some(_)) => HitStrategy::Template,
        _ => HitStrategy::Exact,
    };
    Probe {
        key: keys::key_for(strategy, model, req, template),
        by,
        semantic: None,
    }
}

/// The cache actor is not running (restarting, or given up on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the cache actor is not running (restarting?); retry shortly")]
pub struct CacheUnavailable;

/// The handle to the request cache.
#[derive(Clone, Default)]
pub struct RequestCache {
    pub actor: Current<CacheMsg>,
    /// In a cluster: where stored answers go to the peers (none alone).
    pub replicate: Option<replicate::Replicator>,
}

impl RequestCache {
    /// Look `key` up (a miss when the actor is not there or slow). Not counted.
    async fn get(&self, key: &str) -> Option<CacheEntry> {
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

    /// The most similar entry of `partition` at or above `threshold`. Not counted.
    async fn similar(
        &self,
        partition: &str,
        vector: &[f32],
        threshold: f32,
    ) -> Option<(CacheEntry, f32)> {
        let actor = self.actor.get()?;
        ractor::call_t!(
            actor,
            |reply| CacheMsg::Similar {
                partition: partition.to_string(),
                vector: vector.to_vec(),
                threshold,
                reply
            },
            CACHE_CALL_TIMEOUT_MS
        )
        .ok()
        .flatten()
    }

    fn tally(&self, hit: Option<HitStrategy>, embedding: Option<bool>) {
        if let Some(actor) = self.actor.get() {
            let _ = actor.cast(CacheMsg::Tally { hit, embedding });
        } else {
            metrics().observe_cache(hit.is_some());
        }
    }

    /// Look a request up, counted once (hit per strategy, or miss): its key first; then,
    /// under `semantic`, its query embedded with the probe's model (accounted to `meta`'s
    /// agent) and compared within its partition. The vector stays in the probe for
    /// [`Self::store_answer`]. An embedding failure is a miss.
    pub async fn find(
        &self,
        probe: &mut Probe,
        calls: &Calls,
        budget: &Budget,
        meta: &CallMeta,
    ) -> Option<Hit> {
        if let Some(entry) = self.get(&probe.key).await {
            let strategy = probe.by;
            self.tally(Some(strategy), None);
            return Some(Hit {
                score: probe.semantic.as_ref().map(|_| 1.0),
                entry,
                strategy,
            });
        }
        let Some(sp) = probe.semantic.as_mut() else {
            self.tally(None, None);
            return None;
        };
        let got = crate::embeddings::embed(
            calls,
            budget,
            meta,
            &sp.embedding_model,
            vec![sp.key.query.clone()],
        )
        .await;
        let vector = match got {
            Ok(mut e) if e.vectors.len() == 1 => e.vectors.pop().and_then(semantic::unit),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(error = ?e, "semantic cache: embedding failed; a miss");
                None
            }
        };
        let Some(vector) = vector else {
            self.tally(None, Some(false));
            return None;
        };
        let found = self.similar(&sp.key.partition, &vector, sp.threshold).await;
        sp.vector = Some(vector);
        match found {
            Some((entry, score)) => {
                self.tally(Some(HitStrategy::Semantic), Some(true));
                Some(Hit {
                    entry,
                    strategy: HitStrategy::Semantic,
                    score: Some(score),
                })
            }
            None => {
                self.tally(None, Some(true));
                None
            }
        }
    }

    /// Store an answer under `probe` (fire and forget); under `semantic` with the query's
    /// vector, so later paraphrases find it.
    /// In a cluster the entry is also offered to the peers (never waiting; see [`replicate`]).
    pub fn store_answer(&self, probe: Probe, mut entry: CacheEntry) {
        if let Some(r) = &self.replicate {
            let kind = replicate::kind_of(
                probe.semantic.as_ref().map(|sp| {
                    (
                        sp.key.partition.as_str(),
                        sp.embedding_model.as_str(),
                        sp.vector.as_ref(),
                    )
                }),
                probe.by == HitStrategy::Template,
            );
            r.offer_entry(&probe.key, kind, &entry);
        }
        if let Some(sp) = probe.semantic {
            entry.semantic = sp.vector.map(|vector| SemanticMeta {
                partition: sp.key.partition,
                vector,
            });
        }
        if let Some(actor) = self.actor.get() {
            let _ = actor.cast(CacheMsg::Put {
                key: probe.key,
                entry,
            });
        }
    }

    /// Store a peer's replicated entries (those this node's config accepts; never sent on).
    pub async fn receive(
        &self,
        batch: Vec<CacheReplica>,
    ) -> Result<CacheReplicaReply, CacheUnavailable> {
        let actor = self.actor.get().ok_or(CacheUnavailable)?;
        ractor::call_t!(
            actor,
            |reply| CacheMsg::PutReplicas { batch, reply },
            CACHE_CALL_TIMEOUT_MS
        )
        .map_err(|_| CacheUnavailable)
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

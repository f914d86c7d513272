//! The knowledge cache (issue 11 item 2, `cache.knowledge_cache`): an agent's memory retrieved
//! by relevance instead of sent whole.
//!
//! - [`chunk`] (pure): markdown split by headings and paragraphs into chunks of about
//!   [`chunk::TARGET_TOKENS`] tokens, overlapping by about [`chunk::OVERLAP_TOKENS`];
//! - [`score`] (pure): BM25, the hybrid score (cosine + normalised BM25);
//! - [`plan`] (pure): what to (re-)embed given the content hashes, the bounds
//!   ([`plan::CHUNKS_PER_AGENT_MAX`], [`plan::INDEX_BYTES_PER_AGENT_MAX`]);
//! - [`select`] (pure): the prompt's chunks — a score floor relative to the best chunk,
//!   diminishing returns per file, no near-duplicates, within `max_memory_tokens`;
//! - [`index`]: one agent's index, persisted in the sled tree `knowledge`;
//! - this module: the [`Knowledge`] handle — [`Knowledge::sync`] (scan the workspace, embed only
//!   what changed, persist), the watcher ([`Knowledge::spawn_watcher`]: a poll every
//!   [`POLL_EVERY`] when `rebuild_on_change`, and at once for files written through the memory
//!   API), [`Knowledge::retrieve`] for a prompt, [`Knowledge::status`] and [`Knowledge::search`].
//!
//! Embedding failures (provider down): a file whose embedding failed is indexed without vectors
//! and retried after [`plan::EMBED_RETRY_MS`]; a query that cannot be embedded is ranked by BM25
//! alone. Retrieval never falls back to the whole memory once an agent's index exists; before
//! its first build (no `preload_on_startup`) the prompt carries the whole memory.
//!
//! `enabled` is read per prompt, so a hot reload that turns the cache off sends the whole
//! memory from the next prompt on (the watcher then drops the in-memory indexes); one that
//! turns it on makes the watcher build the indexes within [`POLL_EVERY`] (from the store: only
//! files that changed meanwhile are embedded), the prompts carrying the whole memory until then.
//!
//! Invariant: nothing here imports the HTTP layer or the cluster; memory written through the
//! API reaches this module as a file in the workspace plus [`Knowledge::changed`].

pub mod chunk;
pub mod corpus;
pub mod index;
pub mod plan;
pub mod score;
pub mod select;
#[cfg(test)]
mod sweep;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use openclaw_proto::api::MemoryChunkRef;
use openclaw_proto::memory::{MemoryIndexSkip, MemoryIndexView, MemorySearchHit, MemorySearchView};
use openclaw_proto::Priority;
use tokio_util::sync::CancellationToken;

use crate::agents::prompt::MemoryPiece;
use crate::budget::Budget;
use crate::calls::{CallMeta, Calls};
use crate::config::ConfigCell;
use crate::embeddings::lexical::cosine;
use crate::metrics::metrics;
use crate::util::now_ms;
use index::{AgentIndex, StoredChunk, StoredFile};

/// How often the watcher rescans the workspaces when `rebuild_on_change` is on.
pub const POLL_EVERY: Duration = Duration::from_secs(2);
/// Texts per embeddings request while indexing.
pub const EMBED_BATCH: usize = 64;
/// Hits `memory search` returns at most.
pub const SEARCH_K_MAX: usize = 50;
/// Dimensions assumed for the bytes bound when the model does not say.
const DIMS_ASSUMED: u64 = 1536;

/// (modification time, length) per file of one agent, at its last read.
type FileStats = HashMap<String, (SystemTime, u64)>;

/// What a prompt gets from the knowledge cache.
#[derive(Debug, Clone, PartialEq)]
pub struct Retrieved {
    pub pieces: Vec<MemoryPiece>,
    pub refs: Vec<MemoryChunkRef>,
}

/// What one [`Knowledge::sync`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub files: usize,
    pub chunks: usize,
    pub embedded: usize,
    pub dropped: usize,
    pub failed: usize,
}

/// The knowledge cache of this node: one index per agent.
#[derive(Clone)]
pub struct Knowledge {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: ConfigCell,
    calls: Calls,
    budget: Budget,
    tree: sled::Tree,
    dirs: BTreeMap<String, PathBuf>,
    indexes: RwLock<HashMap<String, Arc<AgentIndex>>>,
    /// (mtime, len) of each file at its last read, per agent: unchanged files are not re-read.
    stats: Mutex<HashMap<String, FileStats>>,
    dirty: Mutex<BTreeSet<String>>,
    kick: tokio::sync::Notify,
    /// One sync at a time (the watcher, start-up, an API write).
    sync_lock: tokio::sync::Mutex<()>,
}

impl Knowledge {
    /// The knowledge cache over the agents' workspaces `dirs`, persisted in `tree`.
    pub fn new(
        cfg: ConfigCell,
        calls: Calls,
        budget: Budget,
        tree: sled::Tree,
        dirs: BTreeMap<String, PathBuf>,
    ) -> Knowledge {
        Knowledge {
            inner: Arc::new(Inner {
                cfg,
                calls,
                budget,
                tree,
                dirs,
                indexes: RwLock::new(HashMap::new()),
                stats: Mutex::new(HashMap::new()),
                dirty: Mutex::new(BTreeSet::new()),
                kick: tokio::sync::Notify::new(),
                sync_lock: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Whether `agent` is one of this node's agents.
    pub fn knows(&self, agent: &str) -> bool {
        self.inner.dirs.contains_key(agent)
    }

    pub fn enabled(&self) -> bool {
        self.inner.cfg.get().cache.knowledge_cache.enabled
    }

    /// The embedding model in force: `knowledge_cache.embedding_model`, else the built-in one.
    pub fn model(&self) -> String {
        self.inner
            .cfg
            .get()
            .cache
            .knowledge_cache
            .embedding_model
            .clone()
            .unwrap_or_else(|| crate::config::kinds::DEFAULT_EMBEDDING_MODEL.to_string())
    }

    /// A memory file of `agent` changed (written through the memory API): re-index it now.
    pub fn changed(&self, agent: &str) {
        self.inner
            .dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(agent.to_string());
        self.inner.kick.notify_one();
    }

    fn index_of(&self, agent: &str) -> Option<Arc<AgentIndex>> {
        self.inner
            .indexes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(agent)
            .cloned()
    }

    /// Build every agent's index (start-up), logging progress and the time taken.
    pub async fn build_all(&self) {
        let started = Instant::now();
        let n = self.inner.dirs.len();
        let (mut files, mut chunks, mut embedded) = (0, 0, 0);
        for (i, agent) in self.inner.dirs.keys().enumerate() {
            let t = Instant::now();
            let r = self.sync(agent).await;
            tracing::info!(agent = %agent, done = i + 1, of = n, files = r.files, chunks = r.chunks, embedded = r.embedded, failed = r.failed, ms = t.elapsed().as_millis() as u64, "knowledge index: agent indexed");
            files += r.files;
            chunks += r.chunks;
            embedded += r.embedded;
        }
        tracing::info!(
            agents = n,
            files,
            chunks,
            embedded,
            ms = started.elapsed().as_millis() as u64,
            "knowledge index built"
        );
    }

    /// Bring `agent`'s index up to date with its workspace: embed new and changed files only,
    /// drop removed ones, persist.
    pub async fn sync(&self, agent: &str) -> SyncReport {
        use tracing::Instrument;
        self.sync_inner(agent)
            .instrument(tracing::debug_span!("knowledge_sync", agent = %agent))
            .await
    }

    async fn sync_inner(&self, agent: &str) -> SyncReport {
        let _one = self.inner.sync_lock.lock().await;
        let Some(dir) = self.inner.dirs.get(agent) else {
            return SyncReport::default();
        };
        let started = Instant::now();
        let model = self.model();
        let now = now_ms();
        let mut idx: AgentIndex = match self.index_of(agent) {
            Some(i) => (*i).clone(),
            None => AgentIndex {
                files: index::load(&self.inner.tree, agent),
                ..AgentIndex::default()
            },
        };
        let listed = match index::files_of(dir) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(agent = %agent, dir = %dir.display(), error = %e, "memory files unreadable; index unchanged");
                return self.report(&idx, 0, 0, 0);
            }
        };
        // Current hashes; a file whose (mtime, len) did not change keeps its known hash.
        let mut current: BTreeMap<String, String> = BTreeMap::new();
        let mut contents: BTreeMap<String, String> = BTreeMap::new();
        let mut new_stats = HashMap::new();
        let old_stats = self
            .inner
            .stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(agent)
            .cloned()
            .unwrap_or_default();
        for (name, path) in &listed {
            let stat = std::fs::metadata(path)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            let known = idx
                .files
                .get(name)
                .map(|f| f.hash.clone())
                .or_else(|| idx.skipped.get(name).map(|s| s.0.clone()));
            if let (Some(s), Some(h)) = (stat, known.clone()) {
                if old_stats.get(name) == Some(&s) {
                    current.insert(name.clone(), h);
                    new_stats.insert(name.clone(), s);
                    continue;
                }
            }
            match crate::agents::prompt::read_bounded(path) {
                Ok(Some(c)) => {
                    current.insert(name.clone(), index::hash(&c));
                    contents.insert(name.clone(), c);
                    if let Some(s) = stat {
                        new_stats.insert(name.clone(), s);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(agent = %agent, file = %name, error = %e, "memory file unreadable; skipped")
                }
            }
        }
        idx.skipped.retain(|n, _| current.contains_key(n));
        let held: BTreeMap<String, plan::Held> = idx
            .files
            .iter()
            .map(|(n, f)| {
                (
                    n.clone(),
                    plan::Held {
                        hash: f.hash.clone(),
                        model: f.model.clone(),
                        failed_at_ms: f.failed_at_ms,
                    },
                )
            })
            .collect();
        let p = plan::plan(&held, &current, &model, now);
        // Files skipped for a bound stay skipped while unchanged.
        let to_embed: Vec<String> = p
            .embed
            .into_iter()
            .filter(|n| {
                idx.skipped
                    .get(n)
                    .is_none_or(|(h, _)| Some(h) != current.get(n))
            })
            .collect();
        let mut changed = !p.drop.is_empty();
        for name in &p.drop {
            idx.files.remove(name);
            if let Err(e) = index::remove(&self.inner.tree, agent, name) {
                tracing::warn!(agent = %agent, file = %name, error = %e, "cannot remove from the knowledge index");
            }
        }
        // Chunk the files to embed; re-read one whose content the stat shortcut skipped.
        let mut fresh: Vec<(String, String, Vec<chunk::Chunk>)> = Vec::new();
        for name in &to_embed {
            let content = match contents.remove(name) {
                Some(c) => c,
                None => match listed.iter().find(|(n, _)| n == name) {
                    Some((_, path)) => match crate::agents::prompt::read_bounded(path) {
                        Ok(Some(c)) => c,
                        _ => continue,
                    },
                    None => continue,
                },
            };
            let hash = index::hash(&content);
            fresh.push((name.clone(), hash, chunk::chunk(&content)));
        }
        // Bounds: kept files first, then the fresh ones by name.
        let dims = self
            .inner
            .cfg
            .get()
            .models
            .get(&model)
            .and_then(|m| m.dimensions)
            .map(u64::from)
            .unwrap_or(DIMS_ASSUMED);
        let mut sizes: Vec<(String, usize, u64)> = idx
            .files
            .iter()
            .filter(|(n, _)| !to_embed.contains(n))
            .map(|(n, f)| (n.clone(), f.chunks.len(), f.bytes()))
            .collect();
        for (name, _, cs) in &fresh {
            let b: u64 = cs
                .iter()
                .map(|c| (c.heading.len() + c.text.len()) as u64 + 4 * dims)
                .sum();
            sizes.push((name.clone(), cs.len(), b));
        }
        let (admitted, refused) = plan::admit(
            &sizes,
            plan::CHUNKS_PER_AGENT_MAX,
            plan::INDEX_BYTES_PER_AGENT_MAX,
        );
        for (name, reason) in refused {
            tracing::warn!(agent = %agent, file = %name, reason = %reason, "memory file not indexed");
            if let Some(h) = current.get(&name) {
                idx.skipped.insert(name.clone(), (h.clone(), reason));
            }
            if idx.files.remove(&name).is_some() {
                let _ = index::remove(&self.inner.tree, agent, &name);
                changed = true;
            }
        }
        fresh.retain(|(n, _, _)| admitted.contains(n));
        for (n, _, _) in &fresh {
            idx.skipped.remove(n);
        }
        // Embed in batches across files.
        let texts: Vec<(usize, String)> = fresh
            .iter()
            .enumerate()
            .flat_map(|(fi, (_, _, cs))| {
                cs.iter()
                    .map(move |c| (fi, index::indexed_text(&c.heading, &c.text)))
            })
            .collect();
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; texts.len()];
        let mut failed_files: BTreeSet<usize> = BTreeSet::new();
        for (b, batch) in texts.chunks(EMBED_BATCH).enumerate() {
            let inputs: Vec<String> = batch.iter().map(|(_, t)| t.clone()).collect();
            match self.embed(agent, inputs).await {
                Ok(vs) if vs.len() == batch.len() => {
                    for (i, v) in vs.into_iter().enumerate() {
                        vectors[b * EMBED_BATCH + i] = Some(v);
                    }
                }
                other => {
                    let why = match other {
                        Ok(vs) => format!("{} vectors for {} inputs", vs.len(), batch.len()),
                        Err(e) => e,
                    };
                    if crate::throttled!(agent).is_some() {
                        tracing::warn!(agent = %agent, model = %model, error = %why, "memory embedding failed; those files are searched by BM25 alone until a retry");
                    }
                    failed_files.extend(batch.iter().map(|(fi, _)| *fi));
                }
            }
        }
        let mut at = 0usize;
        for (fi, (name, hash, cs)) in fresh.iter().enumerate() {
            let failed = failed_files.contains(&fi);
            let chunks: Vec<StoredChunk> = cs
                .iter()
                .enumerate()
                .map(|(ci, c)| StoredChunk {
                    heading: c.heading.clone(),
                    text: c.text.clone(),
                    tokens: c.tokens,
                    vector: if failed {
                        Vec::new()
                    } else {
                        vectors[at + ci].clone().unwrap_or_default()
                    },
                })
                .collect();
            at += cs.len();
            let f = StoredFile {
                hash: hash.clone(),
                model: model.clone(),
                failed_at_ms: failed.then_some(now),
                chunks,
            };
            if let Err(e) = index::put(&self.inner.tree, agent, name, &f) {
                tracing::warn!(agent = %agent, file = %name, error = %e, "cannot persist the knowledge index");
            }
            idx.files.insert(name.clone(), f);
            changed = true;
        }
        let fresh_n = fresh.len() - failed_files.len();
        let first = self.index_of(agent).is_none();
        if changed || first {
            idx.relex();
            idx.built_at_ms = Some(now_ms());
            idx.build_ms = Some(started.elapsed().as_millis() as u64);
            idx.last_embedded = fresh_n as u64;
        }
        self.inner
            .stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(agent.to_string(), new_stats);
        let report = self.report(&idx, fresh_n, p.drop.len(), failed_files.len());
        self.inner
            .indexes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(agent.to_string(), Arc::new(idx));
        self.set_gauge();
        report
    }

    fn report(
        &self,
        idx: &AgentIndex,
        embedded: usize,
        dropped: usize,
        failed: usize,
    ) -> SyncReport {
        SyncReport {
            files: idx.files.len(),
            chunks: idx.files.values().map(|f| f.chunks.len()).sum(),
            embedded,
            dropped,
            failed,
        }
    }

    /// `openclaw_memory_files_total`: indexed files when the knowledge cache is on, else the
    /// memory files the agents' prompts read.
    fn set_gauge(&self) {
        let n: usize = if self.enabled() {
            self.inner
                .indexes
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .map(|i| i.files.len())
                .sum()
        } else {
            self.inner
                .dirs
                .values()
                .map(|d| crate::agents::prompt::memory_file_count(d))
                .sum()
        };
        metrics().memory_files_total.set(n as i64);
    }

    async fn embed(&self, agent: &str, texts: Vec<String>) -> Result<Vec<Vec<f32>>, String> {
        let meta = CallMeta::new(
            format!("knowledge-{agent}-{}", now_ms()),
            agent.to_string(),
            "knowledge".into(),
            Priority::Low,
        );
        crate::embeddings::embed(
            &self.inner.calls,
            &self.inner.budget,
            &meta,
            &self.model(),
            texts,
        )
        .await
        .map(|e| e.vectors)
        .map_err(|e| format!("{e:?}"))
    }

    /// Scores of every chunk of `idx` for `query` (hybrid; BM25 alone when the query cannot be
    /// embedded — the bool says so).
    async fn scores(&self, agent: &str, idx: &AgentIndex, query: &str) -> (Vec<f32>, bool) {
        let bm25 = idx.bm25.scores(query);
        let any_vector = idx.files.values().any(|f| f.failed_at_ms.is_none());
        let q = if any_vector {
            self.embed(agent, vec![query.to_string()])
                .await
                .map_err(|e| {
                    if crate::throttled!("knowledge-query").is_some() {
                        tracing::warn!(agent = %agent, error = %e, "query embedding failed; memory ranked by BM25 alone");
                    }
                })
                .ok()
                .and_then(|mut v| v.pop())
        } else {
            None
        };
        match q {
            Some(qv) => {
                let cos: Vec<f32> = idx
                    .refs
                    .iter()
                    .map(|r| idx.chunk(r).map(|c| cosine(&qv, &c.vector)).unwrap_or(0.0))
                    .collect();
                (score::hybrid(&cos, &bm25, score::ALPHA_DEFAULT), false)
            }
            None => (score::hybrid(&vec![0.0; bm25.len()], &bm25, 0.0), true),
        }
    }

    /// The memory chunks for a prompt answering `input`, or `None` when the knowledge cache is
    /// off or `agent` has no index yet (the prompt then carries the whole memory).
    pub async fn retrieve(&self, agent: &str, input: &str) -> Option<Retrieved> {
        if !self.enabled() {
            return None;
        }
        let idx = self.index_of(agent)?;
        let budget = u64::from(self.inner.cfg.get().cache.knowledge_cache.max_memory_tokens);
        // Skills are sent whole in `# Tools`; only memory chunks compete for `# Memory`.
        let (mut scores, _) = self.scores(agent, &idx, input).await;
        let mut files: HashMap<&str, usize> = HashMap::new();
        let mut cands = Vec::with_capacity(idx.refs.len());
        for (i, r) in idx.refs.iter().enumerate() {
            if index::is_skill(&r.0) {
                scores[i] = 0.0;
            }
            let c = idx.chunk(r);
            let heading = c.map(|c| c.heading.as_str()).unwrap_or("");
            let n = files.len();
            cands.push(select::Candidate {
                score: scores[i],
                // What the chunk costs in the section: its heading line and text.
                tokens: c.map(|c| c.tokens).unwrap_or(0)
                    + crate::tokens::count(&r.0)
                    + crate::tokens::count(heading)
                    + 4,
                file: *files.entry(r.0.as_str()).or_insert(n),
            });
        }
        let similarity =
            |a: usize, b: usize| match (idx.chunk(&idx.refs[a]), idx.chunk(&idx.refs[b])) {
                (Some(x), Some(y)) => cosine(&x.vector, &y.vector),
                _ => 0.0,
            };
        let sel = select::select(
            &cands,
            similarity,
            &select::Rules::DEFAULT.with_budget(budget),
        );
        tracing::debug!(agent = %agent, chosen = sel.chosen.len(), below_floor = sel.below_floor, file_capped = sel.file_capped, duplicates = sel.duplicates, over_bounds = sel.over_bounds, "memory chunks selected");
        let chosen = sel.chosen;
        let mut out = Retrieved {
            pieces: Vec::new(),
            refs: Vec::new(),
        };
        for i in chosen {
            let r = &idx.refs[i];
            if let Some(c) = idx.chunk(r) {
                out.pieces.push(MemoryPiece {
                    file: r.0.clone(),
                    heading: c.heading.clone(),
                    text: c.text.clone(),
                });
                out.refs.push(MemoryChunkRef {
                    file: r.0.clone(),
                    heading: c.heading.clone(),
                    score: scores[i],
                });
            }
        }
        Some(out)
    }

    /// `GET /api/agents/{agent}/memory-index`.
    pub fn status(&self, agent: &str) -> MemoryIndexView {
        let idx = self.index_of(agent).unwrap_or_default();
        MemoryIndexView {
            agent: agent.to_string(),
            enabled: self.enabled(),
            embedding_model: self.model(),
            files: idx.files.len() as u64,
            chunks: idx.chunks() as u64,
            bytes: idx.bytes(),
            bm25_only_files: idx
                .files
                .values()
                .filter(|f| f.failed_at_ms.is_some())
                .count() as u64,
            skipped: idx
                .skipped
                .iter()
                .map(|(f, (_, r))| MemoryIndexSkip {
                    file: f.clone(),
                    reason: r.clone(),
                })
                .collect(),
            last_build_at: idx.built_at_ms.map(crate::tasks::view::rfc3339),
            last_build_ms: idx.build_ms,
            last_build_embedded: idx.last_embedded,
        }
    }

    /// `GET /api/agents/{agent}/memory-search`: the best `k` chunks (memory and skills) for
    /// `query`, with their scores.
    pub async fn search(&self, agent: &str, query: &str, k: usize) -> MemorySearchView {
        let mut out = MemorySearchView {
            agent: agent.to_string(),
            query: query.to_string(),
            ..MemorySearchView::default()
        };
        let Some(idx) = self.index_of(agent) else {
            return out;
        };
        let (scores, bm25_only) = self.scores(agent, &idx, query).await;
        out.bm25_only = bm25_only;
        let mut order: Vec<usize> = (0..scores.len()).filter(|i| scores[*i] > 0.0).collect();
        order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b)));
        for i in order.into_iter().take(k.min(SEARCH_K_MAX)) {
            let r = &idx.refs[i];
            if let Some(c) = idx.chunk(r) {
                out.hits.push(MemorySearchHit {
                    file: r.0.clone(),
                    heading: c.heading.clone(),
                    score: scores[i],
                    tokens: c.tokens,
                    text: c.text.clone(),
                });
            }
        }
        out
    }

    /// The agents whose workspace a `watch_paths` entry lies in or contains (all when empty).
    fn watched(&self) -> Vec<String> {
        let paths: Vec<PathBuf> = self
            .inner
            .cfg
            .get()
            .cache
            .knowledge_cache
            .watch_paths
            .iter()
            .map(|p| expand_home(p))
            .collect();
        plan::watched_agents(&self.inner.dirs, &paths)
    }

    /// Forget the in-memory indexes and file stats (the cache was turned off): a later enable
    /// rebuilds them from the store and the workspace, re-embedding only files that changed.
    fn drop_indexes(&self) {
        self.inner
            .indexes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.inner
            .stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// The watcher: builds the indexes (unless `preload_on_startup` did), then re-indexes
    /// agents whose memory was written through the API at once, and every agent watched
    /// every [`POLL_EVERY`] when `rebuild_on_change`.
    pub fn spawn_watcher(&self, shutdown: CancellationToken) {
        let k = self.clone();
        tokio::spawn(async move {
            let paths = k.inner.cfg.get().cache.knowledge_cache.watch_paths.clone();
            for p in paths {
                let pb = expand_home(&p);
                if !k
                    .inner
                    .dirs
                    .values()
                    .any(|d| pb.starts_with(d) || d.starts_with(&pb))
                {
                    tracing::warn!(path = %p, "cache.knowledge_cache.watch_paths: not inside any agent's workspace; not watched");
                }
            }
            let mut first = true;
            // `cache.knowledge_cache.enabled` as last seen: a hot reload may flip it.
            let mut was_on = k.enabled();
            loop {
                let on = k.enabled();
                if on != was_on {
                    if on {
                        tracing::info!("knowledge cache enabled by a config reload: building the memory indexes; prompts carry the whole memory until an agent's index is built");
                    } else {
                        tracing::info!("knowledge cache disabled by a config reload: prompts carry the whole memory again; the indexes are dropped from memory (kept in the store for a later enable)");
                    }
                    was_on = on;
                }
                if on {
                    let kc = k.inner.cfg.get().cache.knowledge_cache.clone();
                    let mut agents: BTreeSet<String> = std::mem::take(
                        &mut *k.inner.dirty.lock().unwrap_or_else(|p| p.into_inner()),
                    );
                    if kc.rebuild_on_change || first {
                        agents.extend(k.watched());
                    }
                    for a in k.inner.dirs.keys() {
                        if k.index_of(a).is_none() {
                            agents.insert(a.clone());
                        }
                    }
                    for a in agents {
                        k.sync(&a).await;
                    }
                    first = false;
                } else {
                    k.drop_indexes();
                    k.set_gauge();
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(POLL_EVERY) => {}
                    _ = k.inner.kick.notified() => {}
                }
            }
        });
    }
}

fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(h)) => PathBuf::from(h).join(rest),
        _ => PathBuf::from(p),
    }
}

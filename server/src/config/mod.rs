//! `openclaw.json`: the typed configuration, its defaults, environment overrides and validation.
//!
//! Loading is data → checks → use: the file (if any) is read as JSON, `OPENCLAW__A__B=value`
//! environment overrides are merged into it, the result is deserialized strictly (an unknown key
//! or a wrong type names its JSON path), then [`Config::validate`] checks the relations between
//! values. Only then does the node bind ports. CLI flags are applied by the caller (precedence
//! CLI > env > file > defaults).
//!
//! The section and key names are the chapter's (`model_routing`, `model_fallback`, `cache`,
//! `session`, `rate_limiting`, `task_priority`, `budget`) plus `models`, `agents`, `server`,
//! `auth`, `audit`. Secrets never live here: API keys are named by `api_key_env` and read from the
//! environment into a [`Secret`], whose `Debug`/`Display` print `***`.

pub mod cron;
pub mod kinds;
pub mod reload;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use openclaw_proto::{Complexity, Priority};

pub use kinds::ModelKind;

/// A value that must never be printed: provider keys, API tokens, the cluster secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself, for the one place that sends it (an HTTP header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// A configuration error: the JSON path at fault and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{file}: invalid JSON at line {line}, column {column}: {reason}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        reason: String,
    },
    #[error("{file}: at `{path}`: {reason}")]
    Invalid {
        file: String,
        path: String,
        reason: String,
    },
    #[error("environment variable {var}: {reason}")]
    Env { var: String, reason: String },
}

impl ConfigError {
    fn invalid(path: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            file: "config".into(),
            path: path.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    /// `merge` (default): the models configured here are added to the built-in ones (a model
    /// of the same name replaces the built-in); `replace`: only the models configured here.
    pub models_mode: ModelsMode,
    pub models: BTreeMap<String, ModelConfig>,
    pub agents: BTreeMap<String, AgentConfig>,
    pub model_routing: ModelRouting,
    pub model_fallback: ModelFallback,
    pub cache: CacheConfig,
    pub session: SessionConfig,
    pub rate_limiting: RateLimiting,
    pub task_priority: TaskPriority,
    pub budget: BudgetConfig,
    pub audit: AuditConfig,
    pub cluster: ClusterConfig,
    pub channels: ChannelsConfig,
    pub cron: cron::CronConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            auth: AuthConfig::default(),
            models_mode: ModelsMode::Merge,
            models: default_models(),
            agents: BTreeMap::new(),
            model_routing: ModelRouting::default(),
            model_fallback: ModelFallback::default(),
            cache: CacheConfig::default(),
            session: SessionConfig::default(),
            rate_limiting: RateLimiting::default(),
            task_priority: TaskPriority::default(),
            budget: BudgetConfig::default(),
            audit: AuditConfig::default(),
            cluster: ClusterConfig::default(),
            channels: ChannelsConfig::default(),
            cron: cron::CronConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// HTTP listen address (`--http` overrides).
    pub listen: String,
    /// Name of this node in task records, logs and metrics. Defaults to the host name.
    pub node_name: Option<String>,
    /// Tasks that may run at once on this node (worker slots).
    pub workers: usize,
    /// Tasks that may wait in the queue; beyond it `POST /api/tasks` answers 503 + Retry-After.
    pub queue_max: usize,
    /// Largest request body (the chapter's nginx `client_max_body_size 50m`).
    pub max_body_mb: u64,
    /// Finished tasks are kept this long, then purged.
    pub result_ttl_seconds: u64,
    /// Finished tasks kept at most (on disk); past it the oldest finished are purged first.
    pub tasks_retained_max: u64,
    /// Longest `?wait=` a long-poll may ask for.
    pub long_poll_max_seconds: u64,
    /// Requests being served at once; beyond it the node answers 503 + Retry-After.
    pub max_in_flight_requests: usize,
    /// Callback delivery: attempts and the first back-off delay.
    pub callback_max_attempts: u32,
    pub callback_initial_delay_ms: u64,
    pub callback_timeout_ms: u64,
    /// Supervisor restart policy: at most `restart_max` restarts of one child in `restart_window_seconds`.
    pub restart_max: u32,
    pub restart_window_seconds: u64,
    pub restart_backoff_ms: u64,
    /// Memory sled may use as its page cache, per embedded database (the node's store and, in a
    /// cluster, the Raft store). sled counts on-disk sizes, so the real footprint is a multiple
    /// of this. 16 by default: with time-ordered task ids the recent pages are what is written
    /// and read, and 16 cost no throughput against 64 while saving ~20 % of a cluster node's RSS
    /// at 100k retained tasks (BENCHMARKS.md, "Time-ordered task ids").
    pub store_cache_mb: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:3000".into(),
            node_name: None,
            workers: 8,
            queue_max: 10_000,
            max_body_mb: 50,
            result_ttl_seconds: 7 * 24 * 3600,
            tasks_retained_max: 1_000_000,
            long_poll_max_seconds: 300,
            max_in_flight_requests: 4096,
            callback_max_attempts: 5,
            callback_initial_delay_ms: 500,
            callback_timeout_ms: 10_000,
            restart_max: 5,
            restart_window_seconds: 60,
            restart_backoff_ms: 200,
            store_cache_mb: 16,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Environment variable holding the bearer token clients must send. When it is set, every
    /// `/api` and `/v1` request needs `Authorization: Bearer <token>`. Required when the node
    /// listens on a non-loopback address.
    pub token_env: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            token_env: "OPENCLAW_API_TOKEN".into(),
        }
    }
}

/// `channels`: chat platforms whose messages become tasks (read at start; restart to change).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelsConfig {
    /// The Feishu (Lark) app; absent: `POST /channels/feishu/events` answers 404.
    pub feishu: Option<FeishuConfig>,
}

/// `channels.feishu`: one Feishu (or Lark) app. Its secrets are read from the environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeishuConfig {
    /// The app's App ID (`cli_...`).
    pub app_id: String,
    /// Environment variable holding the App Secret (for the tenant access token).
    pub app_secret_env: String,
    /// Environment variable holding the event subscription's Verification Token.
    pub verification_token_env: String,
    /// Environment variable holding the Encrypt Key; unset: events arrive in plain JSON and
    /// carry no signature.
    pub encrypt_key_env: Option<String>,
    /// The Open API: Feishu's by default; Lark's is `https://open.larksuite.com`.
    pub base_url: String,
    /// The agent that answers (default `main`).
    pub agent: String,
    /// Send the answer back as a reply to the message.
    pub reply: bool,
}

impl Default for FeishuConfig {
    fn default() -> Self {
        FeishuConfig {
            app_id: String::new(),
            app_secret_env: "FEISHU_APP_SECRET".into(),
            verification_token_env: "FEISHU_VERIFICATION_TOKEN".into(),
            encrypt_key_env: None,
            base_url: "https://open.feishu.cn".into(),
            agent: "main".into(),
            reply: true,
        }
    }
}

/// `cluster`: how this node takes part in a cluster (`--cluster ADDR` turns it on).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The cluster address (Raft and membership over HTTP); `--cluster` overrides. Unset: the
    /// node runs alone.
    pub listen: Option<String>,
    /// The address other nodes reach this node's cluster port at, `host:port` (default: the
    /// listen address). Needed when listening on 0.0.0.0, e.g. `gateway-1:7000` in Docker.
    pub advertise: Option<String>,
    /// Cluster addresses of nodes to join (`--join`, repeatable, overrides).
    pub join: Vec<String>,
    /// The actor-mesh address (ractor_cluster); default: the cluster port + 1.
    pub mesh_listen: Option<String>,
    /// Environment variable holding the cluster secret every node shares. Required in a cluster.
    pub secret_env: String,
    /// A fixed node id; otherwise one is generated at first start and kept in the data dir.
    pub node_id: Option<u64>,
    /// How long a new node keeps trying to join through `join` before it stops with the
    /// reason of the last failure.
    pub join_timeout_ms: u64,
    /// How often a node renews its liveness lease through Raft.
    pub heartbeat_ms: u64,
    /// How long a node stays alive without renewing; then its tasks move to live nodes.
    pub node_lease_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub raft_heartbeat_ms: u64,
    /// Deadline of one Raft or forwarding RPC.
    pub rpc_timeout_ms: u64,
    /// Most commands in one Raft entry.
    pub batch_max: usize,
    /// Proposals waiting to be batched; beyond this a write gets 503 + Retry-After.
    pub proposals_max: usize,
    /// Raft entries written concurrently (pipelining).
    pub writes_in_flight: usize,
    /// Voters at most; further nodes stay learners.
    pub max_voters: usize,
    /// Log entries between snapshots.
    pub snapshot_every: u64,
    /// Mutual TLS on the cluster port and the mesh (PEM paths). Required when the cluster
    /// address is not loopback, unless `insecure` is set ([`cluster_transport`]).
    pub tls: Option<ClusterTlsConfig>,
    /// Allow plain HTTP / TCP on a non-loopback cluster address (warned about at start-up).
    pub insecure: bool,
}

/// `cluster.tls`: this node's certificate and key, and the CA every node's certificate is
/// checked against (both directions: each side presents its certificate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterTlsConfig {
    /// This node's certificate chain (PEM).
    pub cert: String,
    /// This node's private key (PEM, PKCS#8 / PKCS#1 / SEC1).
    pub key: String,
    /// The cluster CA (PEM): peers must present a certificate it signed.
    pub ca: String,
}

/// How the cluster port and the mesh are carried, decided by [`cluster_transport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterTransport {
    /// Mutual TLS (`cluster.tls`).
    Tls,
    /// Plain, on a loopback cluster address: nothing leaves the machine.
    PlainLoopback,
    /// Plain on a reachable address, because `cluster.insecure` says so (warned at start-up).
    PlainInsecure,
}

/// The start-up rule for the cluster port (like the API's token rule for non-loopback listen
/// addresses): TLS when configured; plain only on a loopback address or with `insecure`.
pub fn cluster_transport(
    listen: std::net::IpAddr,
    tls: bool,
    insecure: bool,
) -> Result<ClusterTransport, String> {
    match (tls, listen.is_loopback(), insecure) {
        (true, _, _) => Ok(ClusterTransport::Tls),
        (false, true, _) => Ok(ClusterTransport::PlainLoopback),
        (false, false, true) => Ok(ClusterTransport::PlainInsecure),
        (false, false, false) => Err(format!(
            "the cluster address {listen} is not loopback: set cluster.tls (cert, key, ca; \
             `openclaw-node cluster gen-certs DIR` makes them) or, on a network you trust, \
             cluster.insecure: true"
        )),
    }
}

impl ClusterConfig {
    /// The IPs the cluster port and the mesh listen on (those that parse; `validate` reports
    /// the others).
    pub fn addresses(&self) -> Vec<std::net::IpAddr> {
        [&self.listen, &self.mesh_listen]
            .into_iter()
            .flatten()
            .filter_map(|a| a.parse::<std::net::SocketAddr>().ok())
            .map(|a| a.ip())
            .collect()
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            listen: None,
            advertise: None,
            join: Vec::new(),
            mesh_listen: None,
            secret_env: "OPENCLAW_CLUSTER_SECRET".into(),
            node_id: None,
            join_timeout_ms: 60_000,
            heartbeat_ms: 500,
            node_lease_ms: 3000,
            // openraft waits a leader lease (= the max) plus a random timeout before electing:
            // 1.5-2 s after a leader dies, which meets the ~2 s failover target.
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
            raft_heartbeat_ms: 150,
            rpc_timeout_ms: 2000,
            batch_max: 512,
            proposals_max: 20_000,
            writes_in_flight: 8,
            max_voters: 5,
            snapshot_every: 20_000,
            tls: None,
            insecure: false,
        }
    }
}

/// How the configured `models` combine with the built-in ones ([`default_models`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelsMode {
    /// Configured models are added to the built-ins; the same name replaces a built-in.
    #[default]
    Merge,
    /// Only the configured models exist.
    Replace,
}

/// Which protocol a model's provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI-compatible chat completions (OpenAI, DeepSeek, Qwen, Ollama, vLLM...).
    Openai,
    /// Anthropic Messages API.
    Anthropic,
    /// The built-in simulator (embedded unless `base_url` points at a `sim-provider` process).
    Sim,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Sim => "sim",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pricing {
    /// USD per 1M input tokens.
    pub input: f64,
    /// USD per 1M output tokens.
    pub output: f64,
}

impl Pricing {
    /// Cost in USD of one call.
    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        (input_tokens as f64 * self.input + output_tokens as f64 * self.output) / 1_000_000.0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub provider: ProviderKind,
    /// Upstream base URL, e.g. `https://api.openai.com/v1`. For `sim`, absent = the embedded simulator.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The model name upstream; defaults to the configured name.
    #[serde(default)]
    pub model: Option<String>,
    /// Environment variable holding the API key. When it is unset the model is served by the simulator.
    #[serde(default)]
    pub api_key_env: Option<String>,
    pub price: Pricing,
    #[serde(default = "default_context_window")]
    pub context_window: u32,
    /// `chat` (default) or `embedding` ([`kinds`]).
    #[serde(default)]
    pub kind: ModelKind,
    /// Embedding models: the vector size (required); refused for chat models.
    #[serde(default)]
    pub dimensions: Option<u32>,
    /// Embedding models: the most tokens one input may have (default
    /// [`kinds::MAX_INPUT_TOKENS_DEFAULT`]); refused for chat models.
    #[serde(default)]
    pub max_input_tokens: Option<u32>,
}

fn default_context_window() -> u32 {
    128_000
}

/// The chapter's models at the chapter's prices (§18.2, §18.7).
pub fn default_models() -> BTreeMap<String, ModelConfig> {
    let m = |provider, base: &str, upstream: &str, key: &str, input, output, ctx| ModelConfig {
        provider,
        base_url: Some(base.to_string()),
        model: Some(upstream.to_string()),
        api_key_env: Some(key.to_string()),
        price: Pricing { input, output },
        context_window: ctx,
        kind: ModelKind::Chat,
        dimensions: None,
        max_input_tokens: None,
    };
    use ProviderKind::*;
    let openai = "https://api.openai.com/v1";
    let anthropic = "https://api.anthropic.com/v1";
    let deepseek = "https://api.deepseek.com/v1";
    BTreeMap::from([
        (
            "gpt-4o".to_string(),
            m(
                Openai,
                openai,
                "gpt-4o",
                "OPENAI_API_KEY",
                2.50,
                10.00,
                128_000,
            ),
        ),
        (
            "gpt-4o-mini".to_string(),
            m(
                Openai,
                openai,
                "gpt-4o-mini",
                "OPENAI_API_KEY",
                0.15,
                0.60,
                128_000,
            ),
        ),
        (
            "claude-3-5-sonnet".to_string(),
            m(
                Anthropic,
                anthropic,
                "claude-3-5-sonnet-latest",
                "ANTHROPIC_API_KEY",
                3.00,
                15.00,
                200_000,
            ),
        ),
        (
            "claude-3-5-haiku".to_string(),
            m(
                Anthropic,
                anthropic,
                "claude-3-5-haiku-latest",
                "ANTHROPIC_API_KEY",
                0.25,
                1.25,
                200_000,
            ),
        ),
        (
            "deepseek-v3".to_string(),
            m(
                Openai,
                deepseek,
                "deepseek-chat",
                "DEEPSEEK_API_KEY",
                0.27,
                1.10,
                64_000,
            ),
        ),
        (
            kinds::DEFAULT_EMBEDDING_MODEL.to_string(),
            kinds::default_embedding_model(),
        ),
    ])
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Folder with SOUL.md, AGENTS.md, MEMORY.md, memory/*.md, skills/*. Default `<data-dir>/workspace` for `main`,
    /// `<data-dir>/workspace-<name>` for others.
    pub workspace: Option<PathBuf>,
    /// The agent's default model (below an explicit task model, above routing's default).
    pub model: Option<String>,
    /// Share of the total budget (0..=1), informative until budgets are enforced per agent.
    pub budget_share: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelRouting {
    pub enabled: bool,
    pub default_model: String,
    pub rules: Vec<RoutingRule>,
}

impl Default for ModelRouting {
    fn default() -> Self {
        ModelRouting {
            enabled: true,
            default_model: "gpt-4o-mini".into(),
            rules: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingRule {
    pub name: String,
    #[serde(default)]
    pub condition: RoutingCondition,
    pub model: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingCondition {
    pub task_type: Option<Vec<String>>,
    pub estimated_complexity: Option<Complexity>,
    pub language: Option<String>,
    pub input_tokens_gt: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelFallback {
    pub enabled: bool,
    pub primary: Option<String>,
    pub fallback_chain: Vec<String>,
    pub timeout_ms: u64,
    pub max_retries: u32,
    pub retry_delay_ms: u64,
    pub circuit_breaker: CircuitBreaker,
}

/// `model_fallback.circuit_breaker`: consecutive failures that open a model's breaker, and how
/// long it stays open before one probe call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreaker {
    pub failure_threshold: u32,
    pub cooldown_ms: u64,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker {
            failure_threshold: 5,
            cooldown_ms: 30_000,
        }
    }
}

impl Default for ModelFallback {
    fn default() -> Self {
        ModelFallback {
            enabled: true,
            primary: None,
            fallback_chain: Vec::new(),
            timeout_ms: 30_000,
            max_retries: 2,
            retry_delay_ms: 1_000,
            circuit_breaker: CircuitBreaker::default(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub request_cache: RequestCache,
    pub knowledge_cache: KnowledgeCache,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashStrategy {
    Exact,
    Semantic,
    Template,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestCache {
    pub enabled: bool,
    /// The chapter's `"file"`; the node keeps the cache in its embedded store either way.
    pub backend: String,
    pub directory: Option<String>,
    /// Entries older than this are stale (0: never).
    pub ttl_seconds: u64,
    /// Bound of the cache's bytes; least recently used entries are evicted beyond it. A number
    /// (fractions allowed, e.g. `0.5`); one entry larger than 1/16 of it is not cached.
    pub max_size_mb: f64,
    pub hash_strategy: HashStrategy,
    pub similarity_threshold: f64,
    /// The embedding model the `semantic` strategy compares with (an `embedding` model).
    pub embedding_model: Option<String>,
}

impl Default for RequestCache {
    fn default() -> Self {
        RequestCache {
            enabled: false,
            backend: "file".into(),
            directory: None,
            ttl_seconds: 3600,
            max_size_mb: 500.0,
            hash_strategy: HashStrategy::Exact,
            similarity_threshold: 0.95,
            embedding_model: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KnowledgeCache {
    pub enabled: bool,
    pub index_format: String,
    pub rebuild_on_change: bool,
    pub watch_paths: Vec<String>,
    pub preload_on_startup: bool,
    /// The embedding model memory chunks are indexed with (an `embedding` model; default: the
    /// built-in `text-embedding-3-small`).
    pub embedding_model: Option<String>,
    /// The most memory tokens a prompt carries when the knowledge cache retrieves
    /// ([`MEMORY_TOKENS_RANGE`]).
    pub max_memory_tokens: u32,
}

/// The accepted range of `cache.knowledge_cache.max_memory_tokens`.
pub const MEMORY_TOKENS_RANGE: std::ops::RangeInclusive<u32> = 64..=200_000;

impl Default for KnowledgeCache {
    fn default() -> Self {
        KnowledgeCache {
            enabled: false,
            index_format: "embeddings".into(),
            rebuild_on_change: true,
            watch_paths: Vec::new(),
            preload_on_startup: false,
            embedding_model: None,
            max_memory_tokens: 2_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    pub context_management: ContextManagement,
    /// A session untouched this long is forgotten (replicated expiry in a cluster).
    pub ttl_hours: u64,
    /// Sessions kept at most; past it the least recently updated are forgotten first.
    pub sessions_max: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            context_management: ContextManagement::default(),
            ttl_hours: 168,
            sessions_max: 100_000,
        }
    }
}

impl SessionConfig {
    /// Sessions updated before this time (Unix ms) have expired at `now_ms`.
    pub fn expired_before(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.ttl_hours.saturating_mul(3_600_000))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContextManagement {
    /// No prompt (task or chat call) passes this many tokens, nor its model's `context_window`.
    pub max_context_tokens: u32,
    pub sliding_window: SlidingWindow,
    pub compression: Compression,
    /// The model that writes a session's running summary (`sliding_window.summarize_older`);
    /// none: the cheapest configured model.
    pub summary_model: Option<String>,
}

/// Most messages `sliding_window.keep_recent_messages` may keep in full (a session stores at
/// most this many plus one turn).
pub const KEEP_RECENT_MAX: usize = 198;

/// Smallest `max_context_tokens` accepted: room for a system prompt and a short input.
pub const MAX_CONTEXT_TOKENS_MIN: u32 = 64;

impl Default for ContextManagement {
    fn default() -> Self {
        ContextManagement {
            max_context_tokens: 32_000,
            sliding_window: SlidingWindow::default(),
            compression: Compression::default(),
            summary_model: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlidingWindow {
    pub enabled: bool,
    pub keep_recent_messages: usize,
    pub summarize_older: bool,
}

impl Default for SlidingWindow {
    fn default() -> Self {
        SlidingWindow {
            enabled: true,
            keep_recent_messages: 20,
            summarize_older: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Compression {
    pub enabled: bool,
    pub trigger_threshold: f64,
    pub target_ratio: f64,
    pub preserve_system_prompt: bool,
    pub preserve_tool_results: bool,
}

impl Default for Compression {
    fn default() -> Self {
        Compression {
            enabled: true,
            trigger_threshold: 0.8,
            target_ratio: 0.5,
            preserve_system_prompt: true,
            preserve_tool_results: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimiting {
    pub global: RateLimit,
    pub per_model: BTreeMap<String, RateLimit>,
    pub backoff: Backoff,
    /// The window the per-minute limits are counted over (60; tests shorten it).
    pub window_seconds: u64,
    /// The longest a task waits for a rate-limit grant before failing with `rate_limited`
    /// (for `/v1/chat/completions` also capped by `model_fallback.timeout_ms`).
    pub max_wait_ms: u64,
}

impl Default for RateLimiting {
    fn default() -> Self {
        RateLimiting {
            global: RateLimit::default(),
            per_model: BTreeMap::new(),
            backoff: Backoff::default(),
            window_seconds: 60,
            max_wait_ms: 300_000,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimit {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
    pub concurrent_requests: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Backoff {
    pub strategy: String,
    pub initial_delay_ms: u64,
    pub max_delay_ms: u64,
    pub multiplier: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            strategy: "exponential".into(),
            initial_delay_ms: 1_000,
            max_delay_ms: 60_000,
            multiplier: 2.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskPriority {
    /// The chapter lists the levels; they are fixed (critical 0 … background 4) and checked.
    pub levels: BTreeMap<String, u8>,
    pub source_mapping: BTreeMap<String, Priority>,
    pub preemption: Preemption,
}

impl Default for TaskPriority {
    fn default() -> Self {
        TaskPriority {
            levels: Priority::ALL
                .iter()
                .map(|p| (p.as_str().to_string(), p.level()))
                .collect(),
            source_mapping: BTreeMap::from([
                ("feishu_direct_message".to_string(), Priority::High),
                ("feishu_group_mention".to_string(), Priority::Normal),
                ("cron_job".to_string(), Priority::Low),
                ("api_call".to_string(), Priority::Normal),
                ("manual_trigger".to_string(), Priority::High),
                ("critical".to_string(), Priority::Critical),
                ("background".to_string(), Priority::Background),
            ]),
            preemption: Preemption::default(),
        }
    }
}

impl TaskPriority {
    /// Priority of a task from `source` when it gives none (unknown sources are `normal`).
    pub fn for_source(&self, source: &str) -> Priority {
        self.source_mapping
            .get(source)
            .copied()
            .unwrap_or(Priority::Normal)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Preemption {
    pub enabled: bool,
    pub allow_preempt_levels: Vec<Priority>,
    pub preempt_threshold: u8,
}

impl Default for Preemption {
    fn default() -> Self {
        Preemption {
            enabled: true,
            allow_preempt_levels: vec![Priority::Critical],
            preempt_threshold: 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    Daily,
    Weekly,
    Monthly,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    pub enabled: bool,
    pub period: BudgetPeriod,
    pub limits: BudgetLimits,
    /// Threshold name (`80_percent`) → action (`notify`, `downgrade_model`, `pause_non_critical`).
    pub actions_on_limit: BTreeMap<String, BudgetAction>,
    pub notification: Notification,
    /// Output tokens assumed for a reservation when the task sets no `max_tokens`.
    pub default_output_tokens: u64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            enabled: false,
            period: BudgetPeriod::Monthly,
            limits: BudgetLimits::default(),
            actions_on_limit: BTreeMap::from([
                ("80_percent".to_string(), BudgetAction::Notify),
                ("95_percent".to_string(), BudgetAction::DowngradeModel),
                ("100_percent".to_string(), BudgetAction::PauseNonCritical),
            ]),
            notification: Notification::default(),
            default_output_tokens: 512,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetAction {
    Notify,
    DowngradeModel,
    PauseNonCritical,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetLimits {
    pub total_tokens: Option<u64>,
    pub total_cost_usd: Option<f64>,
    pub per_agent: BTreeMap<String, AgentBudget>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentBudget {
    pub tokens: Option<u64>,
    pub cost_usd: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Notification {
    /// `feishu` or `webhook`.
    pub channel: Option<String>,
    pub recipients: Vec<String>,
    /// Environment variable holding the webhook URL (it carries a token, so it is a secret).
    /// Its format follows `channel` (`feishu`: Feishu bot text message; else generic JSON).
    pub webhook_url_env: Option<String>,
    /// More webhooks, each with its own format.
    pub webhooks: Vec<WebhookTarget>,
}

/// One budget webhook: its format and the environment variable holding its URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookTarget {
    /// `feishu` or `generic`.
    pub kind: String,
    pub url_env: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Rotate `config-audit.jsonl` when it passes this size.
    pub max_file_mb: u64,
    /// Rotated files kept (`config-audit.jsonl.1` … `.N`).
    pub keep_files: u32,
    /// Lines that may wait for the writer; beyond it writers wait (never dropped).
    pub buffer_lines: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            max_file_mb: 100,
            keep_files: 5,
            buffer_lines: 8192,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// Prefix of environment overrides: `OPENCLAW__SERVER__WORKERS=16` sets `server.workers`.
pub const ENV_PREFIX: &str = "OPENCLAW__";

/// Read `path` (if it exists; `None` or a missing default file means "defaults"), merge env
/// overrides, deserialize strictly and validate.
pub fn load(path: Option<&Path>, required: bool) -> Result<Config, ConfigError> {
    let (file_label, mut root) = match path {
        Some(p) if p.exists() => {
            let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Read {
                path: p.to_path_buf(),
                reason: e.to_string(),
            })?;
            (
                p.display().to_string(),
                parse_json(&p.display().to_string(), &text)?,
            )
        }
        Some(p) if required => {
            return Err(ConfigError::Read {
                path: p.to_path_buf(),
                reason: "no such file".into(),
            })
        }
        _ => ("defaults".to_string(), Value::Object(Default::default())),
    };
    let applied = apply_env_overrides(&mut root, std::env::vars())?;
    from_value(&file_label, root).map_err(|e| blame_env(e, &applied))
}

/// An error at a key an environment override set names the variable, not the file: the file
/// may not even mention the key.
pub fn blame_env(e: ConfigError, applied: &[(String, String)]) -> ConfigError {
    let ConfigError::Invalid { path, reason, .. } = &e else {
        return e;
    };
    let hit = applied.iter().find(|(_, key)| {
        key == path
            || path.starts_with(&format!("{key}."))
            || path.starts_with(&format!("{key}["))
            || key
                .strip_prefix(&format!("{path}."))
                .and_then(|rest| rest.split('.').next())
                .is_some_and(|next| reason.contains(&format!("`{next}`")))
    });
    match hit {
        Some((var, _)) => ConfigError::Env {
            var: var.clone(),
            reason: format!("at `{path}`: {reason}"),
        },
        None => e,
    }
}

/// Parse JSON text, reporting line and column on a syntax error.
pub fn parse_json(file: &str, text: &str) -> Result<Value, ConfigError> {
    serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
        file: file.to_string(),
        line: e.line(),
        column: e.column(),
        reason: e.to_string(),
    })
}

/// Deserialize a JSON value strictly and validate it; errors name the JSON path.
pub fn from_value(file: &str, mut root: Value) -> Result<Config, ConfigError> {
    primary_is_the_default(&mut root);
    let mut cfg: Config = serde_path_to_error::deserialize(root).map_err(|e| {
        let path = e.path().to_string();
        ConfigError::Invalid {
            file: file.to_string(),
            path: if path == "." { "(root)".into() } else { path },
            reason: e.into_inner().to_string(),
        }
    })?;
    if cfg.models_mode == ModelsMode::Merge {
        for (name, m) in default_models() {
            cfg.models.entry(name).or_insert(m);
        }
    }
    cfg.validate().map_err(|e| match e {
        ConfigError::Invalid { path, reason, .. } => ConfigError::Invalid {
            file: file.to_string(),
            path,
            reason,
        },
        other => other,
    })
}

/// `model_fallback.primary` given without `model_routing.default_model`: the primary model is
/// the one routing falls back to when no rule, explicit model or agent model decides. (Both
/// given and different: routing's `default_model` wins, and [`Config::warnings`] says so.)
fn primary_is_the_default(root: &mut Value) {
    let Some(primary) = get_path(root, "model_fallback.primary")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return;
    };
    if get_path(root, "model_routing.default_model").is_none()
        && get_path(root, "model_routing").is_none_or(Value::is_object)
    {
        let path = ["model_routing".to_string(), "default_model".to_string()];
        let _ = set_path(root, &path, Value::String(primary));
    }
}

/// Merge `OPENCLAW__A__B=value` variables into `root` (`a.b`, keys lower-cased). The value is
/// parsed as JSON when it can be (`16`, `true`, `["x"]`), else taken as a string. Returns the
/// (variable, dotted key) pairs applied, so a later error can name the variable
/// ([`blame_env`]).
pub fn apply_env_overrides(
    root: &mut Value,
    vars: impl Iterator<Item = (String, String)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut vars: Vec<(String, String)> = vars.filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
    vars.sort();
    let mut applied = Vec::new();
    for (var, raw) in vars {
        let path: Vec<String> = var[ENV_PREFIX.len()..]
            .split("__")
            .map(|s| s.to_ascii_lowercase())
            .collect();
        if path.iter().any(|p| p.is_empty()) {
            return Err(ConfigError::Env {
                var,
                reason: "expected OPENCLAW__SECTION__KEY (double underscores between keys)".into(),
            });
        }
        let value = serde_json::from_str(&raw).unwrap_or(Value::String(raw));
        set_path(root, &path, value).map_err(|reason| ConfigError::Env {
            var: var.clone(),
            reason,
        })?;
        applied.push((var, path.join(".")));
    }
    Ok(applied)
}

/// Set `path` in a JSON object tree, creating objects on the way.
pub fn set_path(root: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("empty key".into());
    };
    let mut cur = root;
    for (i, key) in parents.iter().enumerate() {
        if !cur.is_object() {
            return Err(format!("`{}` is not an object", parents[..i].join(".")));
        }
        let obj = cur.as_object_mut().ok_or("not an object")?;
        cur = obj
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    match cur.as_object_mut() {
        Some(obj) => {
            obj.insert(last.clone(), value);
            Ok(())
        }
        None => Err(format!("`{}` is not an object", parents.join("."))),
    }
}

/// Read `path` (dot-separated) from a JSON tree.
pub fn get_path<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .filter(|s| !s.is_empty())
        .try_fold(root, |cur, key| cur.get(key))
}

/// The configuration in force, shared by every part of the node and replaced whole on a hot
/// reload ([`reload`]). Read it with [`ConfigCell::get`] for one decision; never hold the `Arc`
/// across a wait.
#[derive(Clone)]
pub struct ConfigCell {
    cell: std::sync::Arc<std::sync::RwLock<std::sync::Arc<Config>>>,
}

impl ConfigCell {
    pub fn new(cfg: Config) -> ConfigCell {
        ConfigCell {
            cell: std::sync::Arc::new(std::sync::RwLock::new(std::sync::Arc::new(cfg))),
        }
    }
    /// The configuration in force now.
    pub fn get(&self) -> std::sync::Arc<Config> {
        self.cell.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
    /// Replace the configuration (hot reload). Callers validate it first.
    pub fn set(&self, cfg: Config) {
        *self.cell.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(cfg);
    }
}

impl std::fmt::Debug for ConfigCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfigCell")
    }
}

impl Config {
    /// Check the relations between values; the error names the path and the fix.
    pub fn validate(self) -> Result<Config, ConfigError> {
        fn bad(path: impl Into<String>, reason: impl Into<String>) -> ConfigError {
            ConfigError::invalid(path, reason)
        }
        let mt = self.cache.knowledge_cache.max_memory_tokens;
        if !MEMORY_TOKENS_RANGE.contains(&mt) {
            return Err(bad(
                "cache.knowledge_cache.max_memory_tokens",
                format!(
                    "{mt} is outside {}..={}",
                    MEMORY_TOKENS_RANGE.start(),
                    MEMORY_TOKENS_RANGE.end()
                ),
            ));
        }
        if !is_host_port(&self.server.listen) {
            return Err(bad(
                "server.listen",
                format!(
                    "`{}` is not an address like 127.0.0.1:3000 or localhost:3000",
                    self.server.listen
                ),
            ));
        }
        for (path, v) in [
            ("server.workers", self.server.workers),
            ("server.queue_max", self.server.queue_max),
            (
                "server.max_in_flight_requests",
                self.server.max_in_flight_requests,
            ),
            ("audit.buffer_lines", self.audit.buffer_lines),
            (
                "server.tasks_retained_max",
                usize::try_from(self.server.tasks_retained_max).unwrap_or(usize::MAX),
            ),
            (
                "server.store_cache_mb",
                usize::try_from(self.server.store_cache_mb).unwrap_or(usize::MAX),
            ),
        ] {
            if v == 0 {
                return Err(bad(path, "must be at least 1"));
            }
        }
        {
            let c = &self.cluster;
            for (path, v) in [
                ("cluster.listen", &c.listen),
                ("cluster.mesh_listen", &c.mesh_listen),
            ] {
                if let Some(a) = v {
                    if a.parse::<std::net::SocketAddr>().is_err() {
                        return Err(bad(
                            path,
                            format!("`{a}` is not an address like 10.0.0.5:7000"),
                        ));
                    }
                }
            }
            if let Some(a) = &c.advertise {
                if a.rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                    .is_none()
                {
                    return Err(bad("cluster.advertise", format!("`{a}` is not host:port")));
                }
            }
            for (i, j) in c.join.iter().enumerate() {
                if let Some(reason) = join_address_problem(j) {
                    return Err(bad(format!("cluster.join[{i}]"), reason));
                }
                if !j.contains(':') {
                    return Err(bad(
                        format!("cluster.join[{i}]"),
                        format!("`{j}` is not host:port"),
                    ));
                }
            }
            if c.election_timeout_min_ms <= c.raft_heartbeat_ms
                || c.election_timeout_max_ms <= c.election_timeout_min_ms
            {
                return Err(bad(
                    "cluster.election_timeout_min_ms",
                    "need raft_heartbeat_ms < election_timeout_min_ms < election_timeout_max_ms",
                ));
            }
            if c.node_lease_ms <= c.heartbeat_ms {
                return Err(bad(
                    "cluster.node_lease_ms",
                    "must be longer than cluster.heartbeat_ms",
                ));
            }
            for (path, v) in [
                ("cluster.batch_max", c.batch_max as u64),
                ("cluster.proposals_max", c.proposals_max as u64),
                ("cluster.writes_in_flight", c.writes_in_flight as u64),
                ("cluster.max_voters", c.max_voters as u64),
                ("cluster.rpc_timeout_ms", c.rpc_timeout_ms),
                ("cluster.heartbeat_ms", c.heartbeat_ms),
                ("cluster.join_timeout_ms", c.join_timeout_ms),
                ("cluster.snapshot_every", c.snapshot_every),
            ] {
                if v == 0 {
                    return Err(bad(path, "must be at least 1"));
                }
            }
            if let Some(t) = &c.tls {
                for (path, v) in [
                    ("cluster.tls.cert", &t.cert),
                    ("cluster.tls.key", &t.key),
                    ("cluster.tls.ca", &t.ca),
                ] {
                    if v.trim().is_empty() {
                        return Err(bad(path, "is empty: give the path of a PEM file"));
                    }
                }
            }
            if c.listen.is_some() {
                for ip in c.addresses() {
                    cluster_transport(ip, c.tls.is_some(), c.insecure)
                        .map_err(|reason| bad("cluster.tls", reason))?;
                }
            }
        }
        if self.server.max_body_mb == 0 {
            return Err(bad("server.max_body_mb", "must be at least 1"));
        }
        if self.server.callback_max_attempts == 0 {
            return Err(bad("server.callback_max_attempts", "must be at least 1"));
        }
        if self.models.is_empty() {
            return Err(bad("models", "at least one model must be configured"));
        }
        for (name, m) in &self.models {
            if name.trim().is_empty() {
                return Err(bad("models", "a model name is empty"));
            }
            let p = format!("models.{name}");
            if !(m.price.input >= 0.0 && m.price.output >= 0.0) {
                return Err(bad(
                    format!("{p}.price"),
                    "prices must be >= 0 (USD per 1M tokens)",
                ));
            }
            match (m.provider, &m.base_url) {
                (ProviderKind::Openai | ProviderKind::Anthropic, None) => return Err(bad(
                    format!("{p}.base_url"),
                    "required for openai and anthropic providers, e.g. https://api.openai.com/v1",
                )),
                (_, Some(url)) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                    return Err(bad(
                        format!("{p}.base_url"),
                        format!("`{url}` must start with http:// or https://"),
                    ))
                }
                _ => {}
            }
        }
        let known = |m: &str| self.models.contains_key(m);
        let model_list = || self.models.keys().cloned().collect::<Vec<_>>().join(", ");
        if !known(&self.model_routing.default_model) {
            let builtin = ModelRouting::default().default_model;
            let hint = if self.model_routing.default_model == builtin {
                format!(
                    " (`{builtin}` is the built-in default; with `models_mode: \"replace\"` only \
                     the models you list exist: set model_routing.default_model to one of them)"
                )
            } else {
                String::new()
            };
            return Err(bad(
                "model_routing.default_model",
                format!(
                    "unknown model `{}`{hint}; configured models: {}",
                    self.model_routing.default_model,
                    model_list()
                ),
            ));
        }
        for (i, rule) in self.model_routing.rules.iter().enumerate() {
            if !known(&rule.model) {
                return Err(bad(
                    format!("model_routing.rules[{i}].model"),
                    format!(
                        "unknown model `{}`; configured models: {}",
                        rule.model,
                        model_list()
                    ),
                ));
            }
        }
        if let Some(p) = &self.model_fallback.primary {
            if !known(p) {
                return Err(bad(
                    "model_fallback.primary",
                    format!("unknown model `{p}`; configured models: {}", model_list()),
                ));
            }
        }
        for (i, m) in self.model_fallback.fallback_chain.iter().enumerate() {
            if !known(m) {
                return Err(bad(
                    format!("model_fallback.fallback_chain[{i}]"),
                    format!("unknown model `{m}`; configured models: {}", model_list()),
                ));
            }
        }
        if self.model_fallback.circuit_breaker.failure_threshold == 0 {
            return Err(bad(
                "model_fallback.circuit_breaker.failure_threshold",
                "must be at least 1",
            ));
        }
        if self.model_fallback.timeout_ms == 0 {
            return Err(bad("model_fallback.timeout_ms", "must be at least 1"));
        }
        for (name, agent) in &self.agents {
            if let Some(m) = &agent.model {
                if !known(m) {
                    return Err(bad(
                        format!("agents.{name}.model"),
                        format!("unknown model `{m}`; configured models: {}", model_list()),
                    ));
                }
            }
            if let Some(s) = agent.budget_share {
                if !(0.0..=1.0).contains(&s) {
                    return Err(bad(
                        format!("agents.{name}.budget_share"),
                        "must be between 0 and 1",
                    ));
                }
            }
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(bad(
                    format!("agents.{name}"),
                    "agent names use letters, digits, '_' and '-' only",
                ));
            }
        }
        for name in self.rate_limiting.per_model.keys() {
            if !known(name) {
                return Err(bad(
                    format!("rate_limiting.per_model.{name}"),
                    format!(
                        "unknown model `{name}`; configured models: {}",
                        model_list()
                    ),
                ));
            }
        }
        if self.rate_limiting.backoff.strategy != "exponential" {
            return Err(bad(
                "rate_limiting.backoff.strategy",
                format!(
                    "`{}` is not supported: the back-off is `exponential` (initial_delay_ms × \
                     multiplier per 429, up to max_delay_ms)",
                    self.rate_limiting.backoff.strategy
                ),
            ));
        }
        for name in self.budget.limits.per_agent.keys() {
            if name != "main" && !self.agents.contains_key(name) {
                let mut agents: Vec<&str> = self.agents.keys().map(String::as_str).collect();
                if !agents.contains(&"main") {
                    agents.insert(0, "main");
                }
                return Err(bad(
                    format!("budget.limits.per_agent.{name}"),
                    format!(
                        "unknown agent `{name}`: add it under `agents` (e.g. \"agents\": {{\"{name}\": {{}}}}) \
                         or remove this limit; configured agents: {}",
                        agents.join(", ")
                    ),
                ));
            }
        }
        self.validate_cron()?;
        if self.rate_limiting.window_seconds == 0 {
            return Err(bad("rate_limiting.window_seconds", "must be at least 1"));
        }
        let b = &self.rate_limiting.backoff;
        if b.multiplier < 1.0 {
            return Err(bad("rate_limiting.backoff.multiplier", "must be >= 1.0"));
        }
        if b.initial_delay_ms > b.max_delay_ms {
            return Err(bad(
                "rate_limiting.backoff.initial_delay_ms",
                "must not exceed rate_limiting.backoff.max_delay_ms",
            ));
        }
        for (name, level) in &self.task_priority.levels {
            match Priority::parse(name) {
                Some(p) if p.level() == *level => {}
                _ => {
                    return Err(bad(
                        format!("task_priority.levels.{name}"),
                        "levels are fixed: critical 0, high 1, normal 2, low 3, background 4",
                    ))
                }
            }
        }
        let pre = &self.task_priority.preemption;
        if pre.preempt_threshold == 0 || pre.preempt_threshold > 4 {
            return Err(bad(
                "task_priority.preemption.preempt_threshold",
                "must be 1..=4",
            ));
        }
        for key in self.budget.actions_on_limit.keys() {
            if threshold_percent(key).is_none() {
                return Err(bad(
                    format!("budget.actions_on_limit.{key}"),
                    "keys look like `80_percent` (1..=100)",
                ));
            }
        }
        if let Some(ch) = &self.budget.notification.channel {
            if ch != "feishu" && ch != "webhook" {
                return Err(bad(
                    "budget.notification.channel",
                    "must be `feishu` or `webhook`",
                ));
            }
        }
        for (i, w) in self.budget.notification.webhooks.iter().enumerate() {
            if w.kind != "feishu" && w.kind != "generic" {
                return Err(bad(
                    format!("budget.notification.webhooks[{i}].kind"),
                    "must be `feishu` or `generic`",
                ));
            }
        }
        let rc = &self.cache.request_cache;
        if !(0.0..=1.0).contains(&rc.similarity_threshold) {
            return Err(bad(
                "cache.request_cache.similarity_threshold",
                "must be between 0 and 1",
            ));
        }
        if !(rc.max_size_mb.is_finite() && rc.max_size_mb > 0.0 && rc.max_size_mb <= 1_048_576.0) {
            return Err(bad(
                "cache.request_cache.max_size_mb",
                "must be a number of megabytes > 0 (at most 1048576)",
            ));
        }
        if !(1..=87_600).contains(&self.session.ttl_hours) {
            return Err(bad(
                "session.ttl_hours",
                "must be between 1 and 87600 hours (10 years)",
            ));
        }
        if !(1..=100_000_000).contains(&self.session.sessions_max) {
            return Err(bad(
                "session.sessions_max",
                "must be between 1 and 100000000",
            ));
        }
        if let Some(f) = &self.channels.feishu {
            if f.app_id.trim().is_empty() {
                return Err(bad(
                    "channels.feishu.app_id",
                    "must be set to the app's App ID (cli_...)",
                ));
            }
            if !(f.base_url.starts_with("http://") || f.base_url.starts_with("https://")) {
                return Err(bad(
                    "channels.feishu.base_url",
                    format!(
                        "`{}` is not an http(s) URL like https://open.feishu.cn",
                        f.base_url
                    ),
                ));
            }
            for (path, var) in [
                ("channels.feishu.app_secret_env", Some(&f.app_secret_env)),
                (
                    "channels.feishu.verification_token_env",
                    Some(&f.verification_token_env),
                ),
                (
                    "channels.feishu.encrypt_key_env",
                    f.encrypt_key_env.as_ref(),
                ),
            ] {
                if var.is_some_and(|v| v.trim().is_empty()) {
                    return Err(bad(path, "must name an environment variable"));
                }
            }
            if f.agent != "main" && !self.agents.contains_key(&f.agent) {
                return Err(bad(
                    "channels.feishu.agent",
                    format!("agent `{}` is not configured under `agents`", f.agent),
                ));
            }
            for source in ["feishu_direct_message", "feishu_group_mention"] {
                if !self.task_priority.source_mapping.contains_key(source) {
                    return Err(bad(
                        "task_priority.source_mapping",
                        format!("must map `{source}` (the Feishu channel's tasks) to a priority"),
                    ));
                }
            }
        }
        let cm = &self.session.context_management.compression;
        if !(0.0..=1.0).contains(&cm.trigger_threshold) || !(0.0..=1.0).contains(&cm.target_ratio) {
            return Err(bad(
                "session.context_management.compression",
                "trigger_threshold and target_ratio must be between 0 and 1",
            ));
        }
        let ctx = &self.session.context_management;
        if ctx.max_context_tokens < MAX_CONTEXT_TOKENS_MIN {
            return Err(bad(
                "session.context_management.max_context_tokens",
                format!("must be at least {MAX_CONTEXT_TOKENS_MIN}"),
            ));
        }
        if ctx.sliding_window.keep_recent_messages > KEEP_RECENT_MAX {
            return Err(bad(
                "session.context_management.sliding_window.keep_recent_messages",
                format!("must be at most {KEEP_RECENT_MAX}"),
            ));
        }
        if let Some(m) = &ctx.summary_model {
            if !self.models.contains_key(m) {
                let known: Vec<&str> = self.models.keys().map(String::as_str).collect();
                return Err(bad(
                    "session.context_management.summary_model",
                    format!("`{m}` is not a configured model ({})", known.join(", ")),
                ));
            }
        }
        self.validate_model_kinds()?;
        Ok(self)
    }

    /// Model used when routing and the agent say nothing.
    pub fn default_model(&self) -> &str {
        &self.model_routing.default_model
    }

    /// Keys that are accepted but do not (fully) act, each with what the node does instead. The
    /// node logs each once at start-up and `doctor` lists them; values left at their defaults
    /// are not reported. `env` reads environment variables (webhook URLs).
    /// `cron.jobs[]`: names unique and key-safe, schedule and zone parse, agent and model exist.
    fn validate_cron(&self) -> Result<(), ConfigError> {
        use cron::{CronKind, CRON_JOBS_MAX, CRON_NAME_MAX, MISSED_AFTER_MAX_S};
        let missed = self.cron.missed_after_seconds;
        if !(1..=MISSED_AFTER_MAX_S).contains(&missed) {
            return Err(ConfigError::invalid(
                "cron.missed_after_seconds",
                format!("{missed}; between 1 and {MISSED_AFTER_MAX_S} seconds"),
            ));
        }
        let jobs = &self.cron.jobs;
        if jobs.len() > CRON_JOBS_MAX {
            return Err(ConfigError::invalid(
                "cron.jobs",
                format!("{} jobs; at most {CRON_JOBS_MAX}", jobs.len()),
            ));
        }
        if !jobs.is_empty() && !self.task_priority.source_mapping.contains_key("cron_job") {
            return Err(ConfigError::invalid(
                "task_priority.source_mapping",
                "cron jobs need the source `cron_job` (its priority is their default)",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, j) in jobs.iter().enumerate() {
            let p = format!("cron.jobs[{i}]");
            if j.name.is_empty()
                || j.name.len() > CRON_NAME_MAX
                || !j
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(ConfigError::invalid(
                    format!("{p}.name"),
                    format!(
                        "`{}`: 1..={CRON_NAME_MAX} letters, digits, '_' or '-'",
                        j.name
                    ),
                ));
            }
            if !seen.insert(j.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{p}.name"),
                    format!("`{}` is the name of an earlier job", j.name),
                ));
            }
            cron::parse_schedule(&j.schedule)
                .map_err(|e| ConfigError::invalid(format!("{p}.schedule"), e))?;
            cron::parse_timezone(j.timezone.as_deref())
                .map_err(|e| ConfigError::invalid(format!("{p}.timezone"), e))?;
            if j.agent != "main" && !self.agents.contains_key(&j.agent) {
                return Err(ConfigError::invalid(
                    format!("{p}.agent"),
                    format!("unknown agent `{}`: add it under `agents`", j.agent),
                ));
            }
            if let Some(m) = &j.model {
                if !self.models.contains_key(m) {
                    return Err(ConfigError::invalid(
                        format!("{p}.model"),
                        format!("unknown model `{m}`"),
                    ));
                }
            }
            if j.kind == CronKind::Agent && j.input.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("{p}.input"),
                    "a job of kind `agent` needs the prompt to run",
                ));
            }
            if let Some(cron::DeliverTo::Webhook(var) | cron::DeliverTo::FeishuChat(var)) =
                &j.deliver_to
            {
                if var.trim().is_empty() {
                    return Err(ConfigError::invalid(
                        format!("{p}.deliver_to"),
                        "must not be empty",
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn warnings(&self, env: &dyn Fn(&str) -> Option<String>) -> Vec<ConfigWarning> {
        let mut out = Vec::new();
        let mut warn = |path: &str, message: String| {
            out.push(ConfigWarning {
                path: path.to_string(),
                message,
            })
        };
        if let Some(p) = &self.model_fallback.primary {
            if *p != self.model_routing.default_model {
                warn(
                    "model_fallback.primary",
                    format!(
                        "`{p}` is not used: model_routing.default_model (`{}`) is the model \
                         routing falls back to; set only one of them (primary alone becomes \
                         the default model)",
                        self.model_routing.default_model
                    ),
                );
            }
        }
        let n = &self.budget.notification;
        if let Some(ch) = &n.channel {
            if n.webhook_url_env.is_none() {
                warn(
                    "budget.notification.channel",
                    format!(
                        "`{ch}` has no webhook: set budget.notification.webhook_url_env to the \
                         variable holding the {ch} webhook URL; until then budget notices are \
                         only logged"
                    ),
                );
            }
        }
        let mut vars: Vec<(String, &str)> = n
            .webhook_url_env
            .iter()
            .map(|v| {
                (
                    "budget.notification.webhook_url_env".to_string(),
                    v.as_str(),
                )
            })
            .collect();
        for (i, w) in n.webhooks.iter().enumerate() {
            vars.push((
                format!("budget.notification.webhooks[{i}].url_env"),
                w.url_env.as_str(),
            ));
        }
        for (path, var) in vars {
            if env(var).filter(|v| !v.is_empty()).is_none() {
                warn(
                    &path,
                    format!("{var} is not set: budget notices to this webhook are not sent"),
                );
            }
        }
        if !n.recipients.is_empty() && n.webhook_url_env.is_none() && n.webhooks.is_empty() {
            warn(
                "budget.notification.recipients",
                "no webhook is configured, so nobody is notified: recipients are named in \
                 each notice sent to budget.notification.webhook_url_env / webhooks"
                    .to_string(),
            );
        }
        if n.channel.is_none() && n.webhook_url_env.is_some() {
            warn(
                "budget.notification.channel",
                "not set: notices to webhook_url_env use the generic JSON format (set \
                 `feishu` for a Feishu bot)"
                    .to_string(),
            );
        }
        for (i, j) in self.cron.jobs.iter().enumerate() {
            match &j.deliver_to {
                Some(cron::DeliverTo::FeishuChat(chat)) if self.channels.feishu.is_none() => warn(
                    &format!("cron.jobs[{i}].deliver_to.feishu_chat"),
                    format!(
                        "`{chat}`: no `channels.feishu` is configured, so job `{}` fires but \
                         its result is only logged (set up the Feishu app to send it)",
                        j.name
                    ),
                ),
                Some(cron::DeliverTo::Webhook(var))
                    if env(var).filter(|v| !v.is_empty()).is_none() =>
                {
                    warn(
                        &format!("cron.jobs[{i}].deliver_to.webhook"),
                        format!("{var} is not set: job `{}` results are not sent", j.name),
                    )
                }
                _ => {}
            }
        }
        let l = &self.budget.limits;
        if !self.budget.enabled
            && (l.total_tokens.is_some() || l.total_cost_usd.is_some() || !l.per_agent.is_empty())
        {
            warn(
                "budget.enabled",
                "false: the limits under budget.limits are not enforced (spend is still \
                 counted); set budget.enabled to true"
                    .to_string(),
            );
        }
        for (name, a) in &self.agents {
            if a.budget_share.is_some() {
                warn(
                    &format!("agents.{name}.budget_share"),
                    format!(
                        "informative only: nothing is enforced from it; limit the agent with \
                         budget.limits.per_agent.{name}"
                    ),
                );
            }
        }
        let rc = &self.cache.request_cache;
        let rc0 = RequestCache::default();
        if rc.backend != rc0.backend {
            warn(
                "cache.request_cache.backend",
                format!(
                    "`{}` is not used: the cache lives in the node's store (<data-dir>/store)",
                    rc.backend
                ),
            );
        }
        if rc.directory.is_some() {
            warn(
                "cache.request_cache.directory",
                "not used: the cache lives in the node's store (<data-dir>/store)".to_string(),
            );
        }
        if rc.hash_strategy != HashStrategy::Semantic {
            if rc.similarity_threshold != rc0.similarity_threshold {
                warn(
                    "cache.request_cache.similarity_threshold",
                    "not used: only the `semantic` hash_strategy reads it".to_string(),
                );
            }
            if rc.embedding_model.is_some() {
                warn(
                    "cache.request_cache.embedding_model",
                    "not used: only the `semantic` hash_strategy reads it".to_string(),
                );
            }
        }
        let kc = &self.cache.knowledge_cache;
        if kc.index_format != "embeddings" {
            warn(
                "cache.knowledge_cache.index_format",
                format!(
                    "`{}` is not supported: the index is always `embeddings` (chunk vectors + BM25)",
                    kc.index_format
                ),
            );
        }
        if !kc.enabled && *kc != KnowledgeCache::default() {
            warn(
                "cache.knowledge_cache",
                "set but `enabled` is false: every prompt carries the whole memory".to_string(),
            );
        }
        if kc.enabled && !kc.rebuild_on_change && !kc.watch_paths.is_empty() {
            warn(
                "cache.knowledge_cache.watch_paths",
                "not polled: `rebuild_on_change` is false (only memory API writes re-index)"
                    .to_string(),
            );
        }
        if let Some(f) = &self.channels.feishu {
            let vars = [
                ("channels.feishu.app_secret_env", Some(&f.app_secret_env), "no answer can be sent to Feishu"),
                (
                    "channels.feishu.verification_token_env",
                    Some(&f.verification_token_env),
                    "events are not checked against a verification token (only the signature, when an encrypt key is set; without either every event is refused)",
                ),
                ("channels.feishu.encrypt_key_env", f.encrypt_key_env.as_ref(), "encrypted events are refused"),
            ];
            for (path, var, effect) in vars {
                if let Some(var) = var {
                    if env(var).filter(|v| !v.is_empty()).is_none() {
                        warn(path, format!("{var} is not set: {effect}"));
                    }
                }
            }
        }
        if let Some(ip) = self.cluster.listen.as_ref().and_then(|_| {
            let all = self.cluster.addresses();
            all.iter()
                .find(|ip| !ip.is_loopback())
                .or(all.first())
                .copied()
        }) {
            let c = &self.cluster;
            match cluster_transport(ip, c.tls.is_some(), c.insecure) {
                Ok(ClusterTransport::PlainInsecure) => warn(
                    "cluster.insecure",
                    format!(
                        "the cluster port and the mesh on {ip} are plain HTTP/TCP: anyone on \
                         the network can read cluster traffic (the secret included); set \
                         cluster.tls"
                    ),
                ),
                Ok(ClusterTransport::Tls) if c.insecure => warn(
                    "cluster.insecure",
                    "has no effect: cluster.tls is set, so cluster traffic is TLS".to_string(),
                ),
                _ => {}
            }
        }
        if self.cluster.listen.is_none() && self.cluster != ClusterConfig::default() {
            warn(
                "cluster",
                "cluster settings are set but cluster.listen is not: unless the node is started \
                 with --cluster it runs alone and ignores them"
                    .to_string(),
            );
        }
        out
    }
}

/// A key that is accepted but does not act as written: its JSON path and what happens instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigWarning {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`: {}", self.path, self.message)
    }
}

/// `host:port` with a port number and a non-empty host (an IP literal or a name to resolve).
pub fn is_host_port(s: &str) -> bool {
    if s.parse::<std::net::SocketAddr>().is_ok() {
        return true;
    }
    match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains('/')
                && !host.contains(':')
                && port.parse::<u16>().is_ok()
        }
        None => false,
    }
}

/// Why a `--join` / `cluster.join` entry is not a cluster address (None: it looks like one).
pub fn join_address_problem(addr: &str) -> Option<String> {
    if let Some((scheme, rest)) = addr.split_once("://") {
        let bare = rest.trim_end_matches('/');
        return Some(format!(
            "`{addr}` is a URL; --join / cluster.join take a member's cluster address HOST:PORT \
             (the address it was started with as --cluster), without `{scheme}://`, e.g. \
             `--join {bare}` if that is its cluster port"
        ));
    }
    if !is_host_port(addr) {
        return Some(format!(
            "`{addr}` is not HOST:PORT (a member's --cluster address, e.g. 10.0.0.5:7000)"
        ));
    }
    None
}

/// `"80_percent"` → 80.
pub fn threshold_percent(key: &str) -> Option<u32> {
    key.strip_suffix("_percent")
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| (1..=100).contains(n))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn err_of(v: Value) -> String {
        from_value("test.json", v).unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_valid_and_have_the_chapter_models() {
        let cfg = from_value("defaults", json!({})).unwrap();
        for m in [
            "gpt-4o",
            "gpt-4o-mini",
            "claude-3-5-sonnet",
            "claude-3-5-haiku",
            "deepseek-v3",
        ] {
            assert!(cfg.models.contains_key(m), "{m}");
        }
        assert_eq!(cfg.models["gpt-4o"].price.input, 2.50);
        assert_eq!(cfg.task_priority.for_source("cron_job"), Priority::Low);
        assert_eq!(cfg.task_priority.for_source("who_knows"), Priority::Normal);
    }

    #[test]
    fn the_chapter_sections_parse_as_written() {
        let chapter = json!({
            "model_routing": {"enabled": true, "default_model": "gpt-4o-mini", "rules": [
                {"name": "complex_reasoning", "condition": {"task_type": ["code_generation","analysis","planning"], "estimated_complexity": "high"}, "model": "gpt-4o"},
                {"name": "chinese_content", "condition": {"language": "zh", "task_type": ["writing","translation"]}, "model": "deepseek-v3"},
                {"name": "long_document", "condition": {"input_tokens_gt": 50000}, "model": "claude-3-5-sonnet"}]},
            "model_fallback": {"primary": "gpt-4o", "fallback_chain": ["claude-3-5-sonnet","deepseek-v3","gpt-4o-mini"], "timeout_ms": 30000, "max_retries": 2, "retry_delay_ms": 1000},
            "cache": {"request_cache": {"enabled": true, "backend": "file", "directory": "~/.openclaw/cache/requests", "ttl_seconds": 3600, "max_size_mb": 500, "hash_strategy": "semantic", "similarity_threshold": 0.95},
                      "knowledge_cache": {"enabled": true, "index_format": "embeddings", "rebuild_on_change": true, "watch_paths": ["~/.openclaw/workspace/memory/"], "preload_on_startup": true}},
            "session": {"context_management": {"max_context_tokens": 32000, "sliding_window": {"enabled": true, "keep_recent_messages": 20, "summarize_older": true},
                        "compression": {"enabled": true, "trigger_threshold": 0.8, "target_ratio": 0.5, "preserve_system_prompt": true, "preserve_tool_results": true}}},
            "rate_limiting": {"global": {"requests_per_minute": 60, "tokens_per_minute": 200000, "concurrent_requests": 5},
                              "per_model": {"gpt-4o": {"requests_per_minute": 20, "tokens_per_minute": 100000}},
                              "backoff": {"strategy": "exponential", "initial_delay_ms": 1000, "max_delay_ms": 60000, "multiplier": 2.0}},
            "task_priority": {"levels": {"critical": 0, "high": 1, "normal": 2, "low": 3, "background": 4},
                              "source_mapping": {"feishu_direct_message": "high", "cron_job": "low"},
                              "preemption": {"enabled": true, "allow_preempt_levels": ["critical"], "preempt_threshold": 2}},
            "budget": {"enabled": true, "period": "monthly", "limits": {"total_tokens": 10000000, "total_cost_usd": 50.00,
                        "per_agent": {"main": {"tokens": 5000000, "cost_usd": 30.00}}},
                       "actions_on_limit": {"80_percent": "notify", "95_percent": "downgrade_model", "100_percent": "pause_non_critical"},
                       "notification": {"channel": "feishu", "recipients": ["admin_group"]}}
        });
        let cfg = from_value("chapter.json", chapter).unwrap();
        assert_eq!(cfg.model_routing.rules.len(), 3);
        assert_eq!(cfg.budget.limits.per_agent["main"].tokens, Some(5_000_000));
    }

    #[test]
    fn cron_jobs_parse_and_bad_ones_name_their_path() {
        let ok = json!({"cron": {"jobs": [
            {"name": "daily-cost", "schedule": "0 9 * * *", "timezone": "Asia/Shanghai",
             "kind": "cost_report", "deliver_to": {"feishu_chat": "oc_123"}, "catch_up": "latest"},
            {"name": "tick", "schedule": "*/2 * * * * *", "input": "ping", "priority": "low",
             "model": "gpt-4o-mini", "deliver_to": {"webhook": "CRON_HOOK_URL"}},
            {"name": "tokens", "schedule": "@daily", "kind": "token_stats"}
        ]}});
        let cfg = from_value("cron.json", ok).unwrap();
        assert_eq!(cfg.cron.jobs.len(), 3);
        assert_eq!(cfg.cron.jobs[0].catch_up, cron::CatchUp::Latest);
        assert_eq!(
            cfg.cron.jobs[1].deliver_to,
            Some(cron::DeliverTo::Webhook("CRON_HOOK_URL".into()))
        );
        assert_eq!(cfg.cron.jobs[2].agent, "main");
        let w = cfg.warnings(&|_| None);
        assert!(
            w.iter()
                .any(|w| w.path == "cron.jobs[0].deliver_to.feishu_chat"),
            "{w:?}"
        );
        assert!(
            w.iter()
                .any(|w| w.path == "cron.jobs[1].deliver_to.webhook"),
            "{w:?}"
        );

        // With the Feishu channel configured, a Feishu destination is sent: no warning.
        let with_feishu = json!({
            "channels": {"feishu": {"app_id": "cli_a"}},
            "cron": {"jobs": [{"name": "daily-cost", "schedule": "0 9 * * *",
                               "kind": "cost_report", "deliver_to": {"feishu_chat": "oc_123"}}]}
        });
        let cfg = from_value("cron.json", with_feishu).unwrap();
        let w = cfg.warnings(&|_| Some("set".into()));
        assert!(
            !w.iter()
                .any(|w| w.path.starts_with("cron.jobs[0].deliver_to")),
            "{w:?}"
        );

        let job = |extra: Value| {
            let mut j = json!({"name": "j", "schedule": "@hourly", "input": "hi"});
            for (k, v) in extra.as_object().unwrap() {
                j[k] = v.clone();
            }
            json!({"cron": {"jobs": [j]}})
        };
        let cases = [
            (
                json!({"cron": {"missed_after_seconds": 0}}),
                "cron.missed_after_seconds",
                "between 1 and",
            ),
            (
                json!({"cron": {"missed_after_seconds": 86_401}}),
                "cron.missed_after_seconds",
                "between 1 and",
            ),
            (
                job(json!({"schedule": "* * * *"})),
                "cron.jobs[0].schedule",
                "4 fields",
            ),
            (
                job(json!({"schedule": "99 * * * *"})),
                "cron.jobs[0].schedule",
                "not a cron",
            ),
            (
                job(json!({"timezone": "Mars/Base"})),
                "cron.jobs[0].timezone",
                "IANA",
            ),
            (
                job(json!({"agent": "ghost"})),
                "cron.jobs[0].agent",
                "ghost",
            ),
            (
                job(json!({"model": "gpt-9"})),
                "cron.jobs[0].model",
                "gpt-9",
            ),
            (job(json!({"input": ""})), "cron.jobs[0].input", "prompt"),
            (job(json!({"name": "a b"})), "cron.jobs[0].name", "letters"),
            (job(json!({"catch_up": "all"})), "cron", "unknown variant"),
            (
                job(json!({"deliver_to": {"email": "x"}})),
                "cron",
                "unknown variant",
            ),
            (
                json!({"cron": {"jobs": [
                    {"name": "j", "schedule": "@daily", "input": "a"},
                    {"name": "j", "schedule": "@daily", "input": "b"}]}}),
                "cron.jobs[1].name",
                "earlier job",
            ),
        ];
        for (v, path, what) in cases {
            let e = err_of(v);
            assert!(e.contains(path) && e.contains(what), "{path}: {e}");
        }
    }

    #[test]
    fn errors_name_the_path_and_the_fix() {
        let cases = [
            (json!({"server": {"workerz": 3}}), "server", "workerz"),
            (
                json!({"server": {"workers": "many"}}),
                "server.workers",
                "invalid type",
            ),
            (
                json!({"server": {"workers": 0}}),
                "server.workers",
                "at least 1",
            ),
            (
                json!({"channels": {"feishu": {}}}),
                "channels.feishu.app_id",
                "App ID",
            ),
            (
                json!({"channels": {"feishu": {"app_id": "cli_a", "base_url": "open.feishu.cn"}}}),
                "channels.feishu.base_url",
                "http(s)",
            ),
            (
                json!({"channels": {"feishu": {"app_id": "cli_a", "agent": "ghost"}}}),
                "channels.feishu.agent",
                "ghost",
            ),
            (
                json!({"channels": {"feishu": {"app_id": "cli_a", "encrypt_key_env": ""}}}),
                "channels.feishu.encrypt_key_env",
                "environment variable",
            ),
            (
                json!({"channels": {"feishu": {"app_id": "cli_a", "reply": "yes"}}}),
                "channels.feishu.reply",
                "invalid type",
            ),
            (
                json!({"channels": {"feishu": {"app_id": "cli_a", "app_secret": "x"}}}),
                "channels.feishu",
                "app_secret",
            ),
            (
                json!({"server": {"tasks_retained_max": 0}}),
                "server.tasks_retained_max",
                "at least 1",
            ),
            (
                json!({"server": {"store_cache_mb": 0}}),
                "server.store_cache_mb",
                "at least 1",
            ),
            (
                json!({"model_routing": {"default_model": "gpt-5"}}),
                "model_routing.default_model",
                "gpt-5",
            ),
            (
                json!({"model_routing": {"rules": [{"name": "x", "model": "nope"}]}}),
                "model_routing.rules[0].model",
                "nope",
            ),
            (
                json!({"task_priority": {"source_mapping": {"cron_job": "urgent"}}}),
                "task_priority.source_mapping.cron_job",
                "expected one of",
            ),
            (
                json!({"task_priority": {"levels": {"critical": 3}}}),
                "task_priority.levels.critical",
                "fixed",
            ),
            (
                json!({"budget": {"actions_on_limit": {"eighty": "notify"}}}),
                "budget.actions_on_limit.eighty",
                "80_percent",
            ),
            (
                json!({"budget": {"notification": {"channel": "slack"}}}),
                "budget.notification.channel",
                "feishu",
            ),
            (
                json!({"budget": {"notification": {"webhooks": [{"kind": "teams", "url_env": "X"}]}}}),
                "budget.notification.webhooks[0].kind",
                "generic",
            ),
            (
                json!({"models": {"x": {"provider": "openai", "price": {"input": 1, "output": 1}}}, "model_routing": {"default_model": "x"}}),
                "models.x.base_url",
                "required",
            ),
            (
                json!({"rate_limiting": {"per_model": {"gpt-9": {}}}}),
                "rate_limiting.per_model.gpt-9",
                "unknown model",
            ),
            (
                json!({"session": {"ttl_hours": 0}}),
                "session.ttl_hours",
                "between 1 and",
            ),
            (
                json!({"session": {"sessions_max": 0}}),
                "session.sessions_max",
                "between 1 and",
            ),
            (
                json!({"cache": {"knowledge_cache": {"max_memory_tokens": 63}}}),
                "cache.knowledge_cache.max_memory_tokens",
                "outside 64..=200000",
            ),
            (
                json!({"cache": {"knowledge_cache": {"max_memory_tokens": 200_001}}}),
                "cache.knowledge_cache.max_memory_tokens",
                "outside 64..=200000",
            ),
        ];
        for (v, path, words) in cases {
            let e = err_of(v.clone());
            assert!(e.contains(path), "{v}: `{e}` should name {path}");
            assert!(e.contains(words), "{v}: `{e}` should say {words}");
        }
    }

    #[test]
    fn env_overrides_merge_before_validation() {
        let mut root = json!({"server": {"workers": 2}});
        let vars = vec![
            ("OPENCLAW__SERVER__WORKERS".to_string(), "16".to_string()),
            ("OPENCLAW__SERVER__NODE_NAME".to_string(), "n1".to_string()),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        apply_env_overrides(&mut root, vars.into_iter()).unwrap();
        let cfg = from_value("t", root).unwrap();
        assert_eq!(cfg.server.workers, 16);
        assert_eq!(cfg.server.node_name.as_deref(), Some("n1"));

        let mut root = json!({});
        let bad = vec![("OPENCLAW__SERVER____X".to_string(), "1".to_string())];
        assert!(apply_env_overrides(&mut root, bad.into_iter()).is_err());
    }

    #[test]
    fn configured_models_are_added_to_the_built_ins() {
        let qwen = json!({"provider": "openai", "base_url": "https://dashscope.example/v1",
                          "api_key_env": "QWEN_KEY", "price": {"input": 0.4, "output": 1.2}});
        // (config, models expected, models not expected)
        let cases = [
            (
                json!({"models": {"qwen-max": qwen.clone()}}),
                vec![
                    "qwen-max",
                    "gpt-4o",
                    "gpt-4o-mini",
                    "claude-3-5-sonnet",
                    "claude-3-5-haiku",
                    "deepseek-v3",
                ],
                vec![],
            ),
            (
                json!({"models_mode": "merge", "models": {"gpt-4o": {"provider": "sim", "price": {"input": 9, "output": 9}}}}),
                vec!["gpt-4o", "gpt-4o-mini", "deepseek-v3"],
                vec![],
            ),
            (
                json!({"models_mode": "replace", "models": {"qwen-max": qwen.clone()},
                       "model_routing": {"default_model": "qwen-max"}}),
                vec!["qwen-max"],
                vec!["gpt-4o", "gpt-4o-mini", "deepseek-v3"],
            ),
        ];
        for (v, want, not) in cases {
            let cfg = from_value("t", v.clone()).unwrap();
            for m in want {
                assert!(cfg.models.contains_key(m), "{v}: {m} missing");
            }
            for m in not {
                assert!(!cfg.models.contains_key(m), "{v}: {m} present");
            }
        }
        // Same name replaces the built-in entry.
        let cfg = from_value(
            "t",
            json!({"models": {"gpt-4o": {"provider": "sim", "price": {"input": 9, "output": 9}}}}),
        )
        .unwrap();
        assert_eq!(cfg.models["gpt-4o"].provider, ProviderKind::Sim);
        assert_eq!(cfg.models["gpt-4o"].price.input, 9.0);
        // Replace without a default model: the error says why and how.
        let e = err_of(json!({"models_mode": "replace", "models": {"qwen-max": qwen}}));
        assert!(e.contains("model_routing.default_model"), "{e}");
        assert!(
            e.contains("models_mode") && e.contains("built-in default"),
            "{e}"
        );
        assert!(e.contains("qwen-max"), "{e}");
        let e = err_of(json!({"models_mode": "sometimes"}));
        assert!(e.contains("models_mode"), "{e}");
    }

    #[test]
    fn primary_acts_as_the_default_model_unless_routing_names_one() {
        let cfg = from_value("t", json!({"model_fallback": {"primary": "gpt-4o"}})).unwrap();
        assert_eq!(cfg.default_model(), "gpt-4o");
        assert!(
            cfg.warnings(&|_| None).is_empty(),
            "{:?}",
            cfg.warnings(&|_| None)
        );
        let cfg = from_value(
            "t",
            json!({"model_fallback": {"primary": "gpt-4o"}, "model_routing": {"default_model": "gpt-4o-mini"}}),
        )
        .unwrap();
        assert_eq!(cfg.default_model(), "gpt-4o-mini");
        let w = cfg.warnings(&|_| None);
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].path, "model_fallback.primary");
        let e = err_of(json!({"model_fallback": {"primary": "gpt-9"}}));
        assert!(e.contains("gpt-9"), "{e}");
    }

    #[test]
    fn accepted_keys_that_do_not_act_are_warned_about() {
        // (config, env var set?, warned paths)
        let cases: Vec<(Value, bool, Vec<&str>)> = vec![
            (json!({}), false, vec![]),
            (
                json!({"budget": {"notification": {"channel": "feishu", "recipients": ["ops"]}}}),
                false,
                vec![
                    "budget.notification.channel",
                    "budget.notification.recipients",
                ],
            ),
            (
                json!({"budget": {"notification": {"channel": "feishu", "webhook_url_env": "HOOK", "recipients": ["ops"]}}}),
                true,
                vec![],
            ),
            (
                json!({"budget": {"notification": {"channel": "feishu", "webhook_url_env": "HOOK"}}}),
                false,
                vec!["budget.notification.webhook_url_env"],
            ),
            (
                json!({"budget": {"notification": {"webhooks": [{"kind": "generic", "url_env": "HOOK2"}]}}}),
                false,
                vec!["budget.notification.webhooks[0].url_env"],
            ),
            (
                json!({"budget": {"limits": {"total_tokens": 5}}}),
                false,
                vec!["budget.enabled"],
            ),
            (
                json!({"budget": {"enabled": true, "limits": {"total_tokens": 5}}}),
                false,
                vec![],
            ),
            (
                json!({"channels": {"feishu": {"app_id": "cli_a", "encrypt_key_env": "FS_KEY"}}}),
                false,
                vec![
                    "channels.feishu.app_secret_env",
                    "channels.feishu.verification_token_env",
                    "channels.feishu.encrypt_key_env",
                ],
            ),
            (
                json!({"channels": {"feishu": {"app_id": "cli_a", "encrypt_key_env": "FS_KEY"}}}),
                true,
                vec![],
            ),
            (
                json!({"agents": {"ops": {"budget_share": 0.5}}}),
                false,
                vec!["agents.ops.budget_share"],
            ),
            (
                json!({"cache": {"request_cache": {"enabled": true, "hash_strategy": "semantic", "directory": "/x", "backend": "redis"}}}),
                false,
                vec![
                    "cache.request_cache.backend",
                    "cache.request_cache.directory",
                ],
            ),
            // `semantic` reads the threshold and the embedding model.
            (
                json!({"cache": {"request_cache": {"enabled": true, "hash_strategy": "semantic", "similarity_threshold": 0.8, "embedding_model": "text-embedding-3-small"}}}),
                false,
                vec![],
            ),
            (
                json!({"cache": {"request_cache": {"similarity_threshold": 0.5}, "knowledge_cache": {"enabled": true}}}),
                false,
                vec!["cache.request_cache.similarity_threshold"],
            ),
            // The knowledge cache acts on its keys; what it cannot act on is warned.
            (
                json!({"cache": {"knowledge_cache": {"enabled": true, "index_format": "bm25", "rebuild_on_change": false, "watch_paths": ["/x"]}}}),
                false,
                vec![
                    "cache.knowledge_cache.index_format",
                    "cache.knowledge_cache.watch_paths",
                ],
            ),
            (
                json!({"cache": {"knowledge_cache": {"preload_on_startup": true}}}),
                false,
                vec!["cache.knowledge_cache"],
            ),
            (
                json!({"cache": {"request_cache": {"embedding_model": "text-embedding-3-small"}}}),
                false,
                vec!["cache.request_cache.embedding_model"],
            ),
            (
                json!({"session": {"context_management": {"max_context_tokens": 8000}}}),
                false,
                vec![],
            ),
            // Expiry and the bound act (sessions::LocalSessions, the replicated sessions).
            (
                json!({"session": {"ttl_hours": 2, "sessions_max": 10}}),
                false,
                vec![],
            ),
            (
                json!({"cluster": {"heartbeat_ms": 300}}),
                false,
                vec!["cluster"],
            ),
            (
                json!({"cluster": {"listen": "127.0.0.1:7000", "heartbeat_ms": 300}}),
                false,
                vec![],
            ),
        ];
        for (v, env_set, want) in cases {
            let cfg = from_value("t", v.clone()).unwrap();
            let env = |k: &str| {
                let ours = k.starts_with("HOOK") || k.starts_with("FEISHU_") || k == "FS_KEY";
                (env_set && ours).then(|| "https://x".to_string())
            };
            let got: Vec<String> = cfg.warnings(&env).into_iter().map(|w| w.path).collect();
            assert_eq!(got, want, "{v}");
        }
    }

    #[test]
    fn per_agent_limits_name_configured_agents_and_backoff_is_exponential() {
        let e = err_of(json!({"budget": {"limits": {"per_agent": {"reviewer": {"tokens": 5}}}}}));
        assert!(e.contains("budget.limits.per_agent.reviewer"), "{e}");
        assert!(e.contains("unknown agent") && e.contains("main"), "{e}");
        // `main` always exists; a configured agent is fine.
        from_value(
            "t",
            json!({"budget": {"limits": {"per_agent": {"main": {"tokens": 5}}}}}),
        )
        .unwrap();
        from_value(
            "t",
            json!({"agents": {"reviewer": {}}, "budget": {"limits": {"per_agent": {"reviewer": {"tokens": 5}}}}}),
        )
        .unwrap();
        let e = err_of(json!({"rate_limiting": {"backoff": {"strategy": "linear"}}}));
        assert!(e.contains("rate_limiting.backoff.strategy"), "{e}");
    }

    #[test]
    fn addresses_take_host_names_and_join_refuses_urls() {
        for ok in [
            "127.0.0.1:3000",
            "localhost:3105",
            "[::1]:3000",
            "gw-1:3000",
        ] {
            assert!(is_host_port(ok), "{ok}");
        }
        for bad in ["localhost", ":3000", "http://x:3000", "x:port", "x:70000"] {
            assert!(!is_host_port(bad), "{bad}");
        }
        from_value("t", json!({"server": {"listen": "localhost:3105"}})).unwrap();
        let e = err_of(json!({"cluster": {"join": ["http://127.0.0.2:7000"]}}));
        assert!(
            e.contains("cluster.join[0]") && e.contains("is a URL"),
            "{e}"
        );
        assert!(e.contains("--join 127.0.0.2:7000"), "{e}");
        let e = err_of(json!({"cluster": {"join": ["127.0.0.2"]}}));
        assert!(
            e.contains("cluster.join[0]") && e.contains("HOST:PORT"),
            "{e}"
        );
        assert_eq!(join_address_problem("gw-1:7000"), None);
    }

    #[test]
    fn a_failing_env_override_names_the_variable() {
        // (variables, expected variable named, words)
        let cases = [
            (
                vec![("OPENCLAW__SERVER__WORKERS", "many")],
                "OPENCLAW__SERVER__WORKERS",
                "invalid type",
            ),
            (
                vec![("OPENCLAW__SERVER__WORKERS", "0")],
                "OPENCLAW__SERVER__WORKERS",
                "at least 1",
            ),
            (
                vec![("OPENCLAW__SERVER__WORKERZ", "3")],
                "OPENCLAW__SERVER__WORKERZ",
                "workerz",
            ),
            (
                vec![
                    ("OPENCLAW__SERVER__NODE_NAME", "n"),
                    ("OPENCLAW__MODEL_ROUTING__DEFAULT_MODEL", "gpt-9"),
                ],
                "OPENCLAW__MODEL_ROUTING__DEFAULT_MODEL",
                "gpt-9",
            ),
        ];
        for (vars, var, words) in cases {
            let mut root = json!({"server": {"workers": 2}});
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let applied = apply_env_overrides(&mut root, vars.into_iter()).unwrap();
            let e = blame_env(from_value("f.json", root).unwrap_err(), &applied).to_string();
            assert!(e.contains(var), "`{e}` should name {var}");
            assert!(!e.contains("f.json"), "`{e}` should not blame the file");
            assert!(e.contains(words), "`{e}` should say {words}");
        }
        // An error the override did not cause still names the file.
        let mut root = json!({"server": {"workers": 0}});
        let applied = apply_env_overrides(
            &mut root,
            vec![("OPENCLAW__SERVER__NODE_NAME".to_string(), "n".to_string())].into_iter(),
        )
        .unwrap();
        let e = blame_env(from_value("f.json", root).unwrap_err(), &applied).to_string();
        assert!(e.contains("f.json") && e.contains("server.workers"), "{e}");
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("sk-live-123");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(s.expose(), "sk-live-123");
    }

    #[test]
    fn threshold_keys() {
        assert_eq!(threshold_percent("80_percent"), Some(80));
        assert_eq!(threshold_percent("100_percent"), Some(100));
        assert_eq!(threshold_percent("0_percent"), None);
        assert_eq!(threshold_percent("80"), None);
    }

    #[test]
    fn pricing_matches_the_cost_tracker() {
        let p = Pricing {
            input: 2.5,
            output: 10.0,
        };
        assert!((p.cost(1_000_000, 100_000) - 3.5).abs() < 1e-12);
    }

    /// The cluster port's start-up rule, and how `validate` / `warnings` apply it.
    #[test]
    fn cluster_transport_rule() {
        use std::net::IpAddr;
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // (listen ip, tls, insecure, expected)
        let cases = [
            (
                "127.0.0.1",
                false,
                false,
                Ok(ClusterTransport::PlainLoopback),
            ),
            (
                "127.0.0.3",
                false,
                true,
                Ok(ClusterTransport::PlainLoopback),
            ),
            ("::1", false, false, Ok(ClusterTransport::PlainLoopback)),
            ("127.0.0.1", true, false, Ok(ClusterTransport::Tls)),
            ("10.0.0.5", true, false, Ok(ClusterTransport::Tls)),
            ("10.0.0.5", true, true, Ok(ClusterTransport::Tls)),
            ("10.0.0.5", false, true, Ok(ClusterTransport::PlainInsecure)),
            ("0.0.0.0", false, true, Ok(ClusterTransport::PlainInsecure)),
            ("10.0.0.5", false, false, Err("not loopback")),
            ("0.0.0.0", false, false, Err("not loopback")),
        ];
        for (listen, tls, insecure, want) in cases {
            match (cluster_transport(ip(listen), tls, insecure), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, w, "{listen} {tls} {insecure}"),
                (Err(e), Err(frag)) => assert!(
                    e.contains(frag) && e.contains("cluster.tls") && e.contains("cluster.insecure"),
                    "{e}"
                ),
                (got, w) => panic!("{listen} {tls} {insecure}: {got:?}, want {w:?}"),
            }
        }
        let tls = json!({"cert": "/c.pem", "key": "/k.pem", "ca": "/ca.pem"});
        // (cluster config, Err(path) or Ok(warning paths))
        let cases: Vec<(Value, Result<Vec<&str>, &str>)> = vec![
            (json!({"listen": "10.0.0.5:7000"}), Err("cluster.tls")),
            (
                json!({"listen": "10.0.0.5:7000", "insecure": true}),
                Ok(vec!["cluster.insecure"]),
            ),
            (json!({"listen": "10.0.0.5:7000", "tls": tls}), Ok(vec![])),
            (
                json!({"listen": "10.0.0.5:7000", "tls": tls, "insecure": true}),
                Ok(vec!["cluster.insecure"]),
            ),
            (json!({"listen": "127.0.0.1:7000"}), Ok(vec![])),
            (
                json!({"listen": "127.0.0.1:7000", "mesh_listen": "10.0.0.5:7001"}),
                Err("cluster.tls"),
            ),
            (
                json!({"listen": "127.0.0.1:7000", "mesh_listen": "10.0.0.5:7001", "insecure": true}),
                Ok(vec!["cluster.insecure"]),
            ),
            (
                json!({"listen": "127.0.0.1:7000", "tls": {"cert": " ", "key": "k", "ca": "c"}}),
                Err("cluster.tls.cert"),
            ),
            (
                json!({"listen": "127.0.0.1:7000", "tls": {"cert": "c", "key": "k"}}),
                Err("cluster.tls"),
            ),
        ];
        for (cluster, want) in cases {
            let res = from_value("test.json", json!({ "cluster": cluster.clone() }));
            match (res, want) {
                (Ok(cfg), Ok(paths)) => {
                    let got: Vec<String> = cfg
                        .warnings(&|_| Some("set".into()))
                        .into_iter()
                        .map(|w| w.path)
                        .filter(|p| p.starts_with("cluster"))
                        .collect();
                    assert_eq!(got, paths, "{cluster}");
                }
                (Err(e), Err(path)) => {
                    let e = e.to_string();
                    assert!(e.contains(&format!("`{path}`")), "{cluster}: {e}");
                }
                (got, want) => panic!("{cluster}: {got:?}, want {want:?}"),
            }
        }
    }
}

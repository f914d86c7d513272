//! Model providers behind one trait: OpenAI-compatible chat completions and embeddings, the
//! Anthropic Messages API (chat only), and the simulator (which speaks the OpenAI protocol, so it
//! goes through the same client).
//!
//! Every provider is a reqwest client with connect/read timeouts; a call carries the task id in
//! `X-OpenClaw-Task-Id` so the simulator's call log can be matched against task records.
//! Invariant: providers know nothing about tasks, queues or actors; they turn one OpenAI-shaped
//! request into one response (or a stream of chunks) and classify failures.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use openclaw_proto::openai::{ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse};

use crate::config::{Config, ProviderKind, Secret};

pub mod anthropic;
pub mod openai;

/// Header carrying the task (or request) id to the provider.
pub const TASK_ID_HEADER: &str = "X-OpenClaw-Task-Id";

/// A stream of completion chunks.
pub type ChunkStream =
    Pin<Box<dyn Stream<Item = Result<ChatCompletionChunk, ProviderError>> + Send + 'static>>;

/// Per-call context.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// Sent as `X-OpenClaw-Task-Id`.
    pub request_id: String,
    /// Deadline for the whole call (connect + response; for streams, until the first chunk).
    pub timeout: Duration,
}

/// Why a provider call failed, classified so the caller knows whether to fail over.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    #[error("provider timed out after {0:?}")]
    Timeout(Duration),
    #[error("cannot connect to provider: {0}")]
    Connect(String),
    #[error("provider rate limited the call (429)")]
    RateLimited { retry_after: Option<Duration> },
    #[error("provider error {status}: {message}")]
    Server { status: u16, message: String },
    /// A 4xx caused by the request itself: failing over will not help.
    #[error("provider rejected the request ({status}): {message}")]
    BadRequest { status: u16, message: String },
    #[error("unreadable provider answer: {0}")]
    Decode(String),
}

/// Every value [`ProviderError::code`] can return (metrics series are created for each at start).
pub const ERROR_CODES: [&str; 6] = [
    "timeout",
    "connect",
    "rate_limited",
    "server_error",
    "bad_request",
    "decode",
];

impl ProviderError {
    /// Timeouts, connection errors, 429 and 5xx are worth another model or another try.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, ProviderError::BadRequest { .. })
    }

    /// Stable code for metrics labels, audit lines and API errors.
    pub fn code(&self) -> &'static str {
        match self {
            ProviderError::Timeout(_) => "timeout",
            ProviderError::Connect(_) => "connect",
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::Server { .. } => "server_error",
            ProviderError::BadRequest { .. } => "bad_request",
            ProviderError::Decode(_) => "decode",
        }
    }
}

/// One model's provider. `req.model` is the gateway's model name; the provider sends its
/// upstream name.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + 'static {
    /// `openai`, `anthropic` or `sim`.
    fn kind(&self) -> ProviderKind;
    /// Where calls go (for `doctor` and the start-up banner; never contains a key).
    fn endpoint(&self) -> String;
    async fn chat(
        &self,
        req: &ChatCompletionRequest,
        ctx: &CallContext,
    ) -> Result<ChatCompletionResponse, ProviderError>;
    async fn chat_stream(
        &self,
        req: &ChatCompletionRequest,
        ctx: &CallContext,
    ) -> Result<ChunkStream, ProviderError>;
    /// One vector of `dimensions` floats per input, in input order (`POST /embeddings`).
    /// Providers without embeddings refuse it as a bad request (the config keeps embedding
    /// models off them, so this is a safety net).
    async fn embed(
        &self,
        inputs: &[String],
        dimensions: u32,
        ctx: &CallContext,
    ) -> Result<Embeddings, ProviderError> {
        let _ = (inputs, dimensions, ctx);
        Err(ProviderError::BadRequest {
            status: 400,
            message: format!("the {} provider serves no embeddings", self.kind().as_str()),
        })
    }
}

/// What an embeddings call returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// One per input, in input order, each of the asked dimensions.
    pub vectors: Vec<Vec<f32>>,
    /// The provider's count of the inputs' tokens, when it gave one.
    pub prompt_tokens: Option<u64>,
}

/// How a configured model is served, decided at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub model: String,
    /// `openai`/`anthropic` (real provider, key present) or `sim`.
    pub served_by: ProviderKind,
    pub endpoint: String,
    /// Why it is served this way (e.g. "OPENAI_API_KEY not set").
    pub reason: String,
}

/// The providers of every configured model.
#[derive(Clone)]
pub struct ProviderSet {
    providers: BTreeMap<String, Arc<dyn Provider>>,
    resolved: Vec<Resolved>,
}

impl ProviderSet {
    /// Build one provider per configured model. A model whose `api_key_env` is unset, or whose
    /// provider is `sim` without a `base_url`, is served by the simulator at `sim_base_url`.
    pub fn build(
        cfg: &Config,
        http: reqwest::Client,
        sim_base_url: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> ProviderSet {
        let mut providers: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
        let mut resolved = Vec::new();
        for (name, m) in &cfg.models {
            let upstream = m.model.clone().unwrap_or_else(|| name.clone());
            let key = m
                .api_key_env
                .as_deref()
                .and_then(env)
                .filter(|k| !k.is_empty())
                .map(Secret::new);
            let (p, served_by, reason): (Arc<dyn Provider>, ProviderKind, String) =
                match (m.provider, key, &m.base_url) {
                    (ProviderKind::Sim, _, Some(url)) => (
                        Arc::new(openai::OpenAiProvider::new(
                            http.clone(),
                            url,
                            &upstream,
                            None,
                            ProviderKind::Sim,
                        )),
                        ProviderKind::Sim,
                        "sim provider at configured base_url".into(),
                    ),
                    (ProviderKind::Openai, Some(key), Some(url)) => (
                        Arc::new(openai::OpenAiProvider::new(
                            http.clone(),
                            url,
                            &upstream,
                            Some(key),
                            ProviderKind::Openai,
                        )),
                        ProviderKind::Openai,
                        format!("{} is set", m.api_key_env.as_deref().unwrap_or("key")),
                    ),
                    (ProviderKind::Anthropic, Some(key), Some(url)) => (
                        Arc::new(anthropic::AnthropicProvider::new(
                            http.clone(),
                            url,
                            &upstream,
                            key,
                        )),
                        ProviderKind::Anthropic,
                        format!("{} is set", m.api_key_env.as_deref().unwrap_or("key")),
                    ),
                    (kind, _, _) => {
                        let reason = match (kind, &m.api_key_env) {
                            (ProviderKind::Sim, _) => "configured as sim".to_string(),
                            (_, Some(var)) => format!("{var} not set"),
                            (_, None) => "no api_key_env configured".to_string(),
                        };
                        (
                            Arc::new(openai::OpenAiProvider::new(
                                http.clone(),
                                sim_base_url,
                                name,
                                None,
                                ProviderKind::Sim,
                            )),
                            ProviderKind::Sim,
                            reason,
                        )
                    }
                };
            resolved.push(Resolved {
                model: name.clone(),
                served_by,
                endpoint: p.endpoint(),
                reason,
            });
            providers.insert(name.clone(), p);
        }
        ProviderSet {
            providers,
            resolved,
        }
    }

    pub fn get(&self, model: &str) -> Option<&Arc<dyn Provider>> {
        self.providers.get(model)
    }

    pub fn resolved(&self) -> &[Resolved] {
        &self.resolved
    }

    /// True when at least one model is served by the embedded simulator.
    pub fn uses_embedded_sim(&self, sim_base_url: &str) -> bool {
        self.resolved
            .iter()
            .any(|r| r.served_by == ProviderKind::Sim && r.endpoint.starts_with(sim_base_url))
    }
}

/// The shared HTTP client for providers: connect timeout, pooled keep-alive connections.
pub fn http_client(connect_timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bad_requests_are_final() {
        let cases = [
            (ProviderError::Timeout(Duration::from_secs(1)), true),
            (ProviderError::Connect("refused".into()), true),
            (ProviderError::RateLimited { retry_after: None }, true),
            (
                ProviderError::Server {
                    status: 503,
                    message: String::new(),
                },
                true,
            ),
            (
                ProviderError::BadRequest {
                    status: 400,
                    message: String::new(),
                },
                false,
            ),
            (ProviderError::Decode("x".into()), true),
        ];
        for (e, want) in cases {
            assert_eq!(e.is_retryable(), want, "{e:?}");
            assert!(
                ERROR_CODES.contains(&e.code()),
                "{} missing from ERROR_CODES",
                e.code()
            );
        }
    }

    #[test]
    fn models_without_keys_are_served_by_the_simulator() {
        let cfg = Config::default();
        let http = reqwest::Client::new();
        let env = |var: &str| (var == "OPENAI_API_KEY").then(|| "sk-test".to_string());
        let set = ProviderSet::build(&cfg, http, "http://127.0.0.1:9/v1", &env);
        let by = |m: &str| {
            set.resolved()
                .iter()
                .find(|r| r.model == m)
                .map(|r| r.served_by)
        };
        assert_eq!(by("gpt-4o"), Some(ProviderKind::Openai));
        assert_eq!(by("claude-3-5-haiku"), Some(ProviderKind::Sim));
        assert_eq!(by("deepseek-v3"), Some(ProviderKind::Sim));
        assert!(set.uses_embedded_sim("http://127.0.0.1:9/v1"));
        let banner = format!("{:?}", set.resolved());
        assert!(!banner.contains("sk-test"));
    }
}

//! Model kinds: `models.<name>.kind` is `chat` (the default) or `embedding`, and the checks
//! that keep the two apart. An embedding model needs `dimensions` (and may set
//! `max_input_tokens`); a chat model may set neither. Every place that names a model for a
//! chat call (routing, fallback, the summary model, agents, cron jobs) must name a chat model,
//! and every place that names a model for embeddings (`cache.*.embedding_model`) an embedding
//! model — otherwise start-up is refused with the JSON path.
//!
//! The default configuration carries one embedding model, [`DEFAULT_EMBEDDING_MODEL`], served
//! by the simulator when `OPENAI_API_KEY` is unset, so the semantic features work out of the box.

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError, ModelConfig, Pricing, ProviderKind};

/// What a model is called for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// `POST /chat/completions` (or the Anthropic Messages API).
    #[default]
    Chat,
    /// `POST /embeddings`.
    Embedding,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Chat => "chat",
            ModelKind::Embedding => "embedding",
        }
    }
}

/// `max_input_tokens` of an embedding model that does not set it (OpenAI's limit).
pub const MAX_INPUT_TOKENS_DEFAULT: u32 = 8191;
/// Largest `dimensions` accepted (OpenAI's largest model has 3072).
pub const DIMENSIONS_MAX: u32 = 16_384;
/// The built-in embedding model's name.
pub const DEFAULT_EMBEDDING_MODEL: &str = "text-embedding-3-small";
/// The built-in embedding model's vector size (OpenAI's v3 models shorten to it on request;
/// the simulator produces it).
pub const DEFAULT_EMBEDDING_DIMENSIONS: u32 = 256;

/// The built-in embedding model: OpenAI's `text-embedding-3-small` at 256 dimensions when
/// `OPENAI_API_KEY` is set, else the simulator's lexical embeddings.
pub fn default_embedding_model() -> ModelConfig {
    ModelConfig {
        provider: ProviderKind::Openai,
        base_url: Some("https://api.openai.com/v1".into()),
        model: Some(DEFAULT_EMBEDDING_MODEL.into()),
        api_key_env: Some("OPENAI_API_KEY".into()),
        price: Pricing {
            input: 0.02,
            output: 0.0,
        },
        context_window: MAX_INPUT_TOKENS_DEFAULT,
        kind: ModelKind::Embedding,
        dimensions: Some(DEFAULT_EMBEDDING_DIMENSIONS),
        max_input_tokens: None,
    }
}

impl ModelConfig {
    /// The most tokens one embedding input may have.
    pub fn input_token_limit(&self) -> u32 {
        self.max_input_tokens.unwrap_or(MAX_INPUT_TOKENS_DEFAULT)
    }
}

impl Config {
    /// The kind of a configured model (`None`: not configured).
    pub fn model_kind(&self, model: &str) -> Option<ModelKind> {
        self.models.get(model).map(|m| m.kind)
    }

    /// Every place that names a model, with the kind it must be (pure; unset places omitted).
    pub fn model_references(&self) -> Vec<(String, &str, ModelKind)> {
        use ModelKind::*;
        let mut out: Vec<(String, &str, ModelKind)> = Vec::new();
        // The primary first: it becomes the default model when routing names none, and the
        // error should name the key the user wrote.
        if let Some(p) = &self.model_fallback.primary {
            out.push(("model_fallback.primary".into(), p, Chat));
        }
        out.push((
            "model_routing.default_model".into(),
            self.model_routing.default_model.as_str(),
            Chat,
        ));
        for (i, r) in self.model_routing.rules.iter().enumerate() {
            out.push((format!("model_routing.rules[{i}].model"), &r.model, Chat));
        }
        for (i, m) in self.model_fallback.fallback_chain.iter().enumerate() {
            out.push((format!("model_fallback.fallback_chain[{i}]"), m, Chat));
        }
        if let Some(m) = &self.session.context_management.summary_model {
            out.push(("session.context_management.summary_model".into(), m, Chat));
        }
        for (name, a) in &self.agents {
            if let Some(m) = &a.model {
                out.push((format!("agents.{name}.model"), m, Chat));
            }
        }
        for (i, j) in self.cron.jobs.iter().enumerate() {
            if let Some(m) = &j.model {
                out.push((format!("cron.jobs[{i}].model"), m, Chat));
            }
        }
        let rc = &self.cache.request_cache;
        match &rc.embedding_model {
            Some(m) => out.push(("cache.request_cache.embedding_model".into(), m, Embedding)),
            // The `semantic` cache compares with the built-in model when none is named.
            None if rc.enabled && rc.hash_strategy == super::HashStrategy::Semantic => out.push((
                "cache.request_cache.embedding_model".into(),
                DEFAULT_EMBEDDING_MODEL,
                Embedding,
            )),
            None => {}
        }
        if let Some(m) = &self.cache.knowledge_cache.embedding_model {
            out.push(("cache.knowledge_cache.embedding_model".into(), m, Embedding));
        }
        out
    }

    /// Each model's kind-specific keys, and every reference names a configured model of the
    /// kind it needs.
    pub(super) fn validate_model_kinds(&self) -> Result<(), ConfigError> {
        for (name, m) in &self.models {
            let p = format!("models.{name}");
            match m.kind {
                ModelKind::Embedding => {
                    match m.dimensions {
                        None => {
                            return Err(ConfigError::invalid(
                                format!("{p}.dimensions"),
                                "required for an embedding model: the size of its vectors, \
                                 e.g. 1536",
                            ))
                        }
                        Some(d) if d == 0 || d > DIMENSIONS_MAX => {
                            return Err(ConfigError::invalid(
                                format!("{p}.dimensions"),
                                format!("{d}: must be 1..={DIMENSIONS_MAX}"),
                            ))
                        }
                        Some(_) => {}
                    }
                    if m.max_input_tokens == Some(0) {
                        return Err(ConfigError::invalid(
                            format!("{p}.max_input_tokens"),
                            "must be at least 1",
                        ));
                    }
                    if m.provider == ProviderKind::Anthropic {
                        return Err(ConfigError::invalid(
                            format!("{p}.provider"),
                            "anthropic serves no embeddings: use an OpenAI-compatible provider \
                             (openai, or sim)",
                        ));
                    }
                }
                ModelKind::Chat => {
                    for (key, set) in [
                        ("dimensions", m.dimensions.is_some()),
                        ("max_input_tokens", m.max_input_tokens.is_some()),
                    ] {
                        if set {
                            return Err(ConfigError::invalid(
                                format!("{p}.{key}"),
                                "only for embedding models: set `kind: \"embedding\"` or remove \
                                 it",
                            ));
                        }
                    }
                }
            }
        }
        for (path, model, want) in self.model_references() {
            match self.model_kind(model) {
                None => {
                    let known: Vec<&str> = self
                        .models
                        .iter()
                        .filter(|(_, m)| m.kind == want)
                        .map(|(n, _)| n.as_str())
                        .collect();
                    return Err(ConfigError::invalid(
                        path,
                        format!(
                            "unknown model `{model}`; configured {} models: {}",
                            want.as_str(),
                            known.join(", ")
                        ),
                    ));
                }
                Some(kind) if kind != want => {
                    return Err(ConfigError::invalid(
                        path,
                        format!(
                            "`{model}` is an {} model; a {} model is needed here",
                            kind.as_str(),
                            want.as_str()
                        )
                        .replace("an chat", "a chat")
                        .replace("a embedding", "an embedding"),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::from_value;
    use serde_json::json;

    fn err_of(v: serde_json::Value) -> String {
        from_value("test.json", v).unwrap_err().to_string()
    }

    #[test]
    fn the_default_embedding_model_is_there_and_is_an_embedding_model() {
        let cfg = from_value("defaults", json!({})).unwrap();
        let m = &cfg.models[DEFAULT_EMBEDDING_MODEL];
        assert_eq!(m.kind, ModelKind::Embedding);
        assert_eq!(m.dimensions, Some(DEFAULT_EMBEDDING_DIMENSIONS));
        assert_eq!(m.input_token_limit(), MAX_INPUT_TOKENS_DEFAULT);
        assert_eq!(cfg.models["gpt-4o"].kind, ModelKind::Chat);
        let cfg = from_value(
            "t",
            json!({"models": {"e": {"provider": "sim", "price": {"input": 0, "output": 0},
                "kind": "embedding", "dimensions": 64, "max_input_tokens": 100}}}),
        )
        .unwrap();
        assert_eq!(cfg.models["e"].input_token_limit(), 100);
    }

    #[test]
    fn kinds_are_kept_apart_and_errors_name_the_path() {
        let emb = json!({"provider": "sim", "price": {"input": 0, "output": 0},
            "kind": "embedding", "dimensions": 64});
        let chat = json!({"provider": "sim", "price": {"input": 0, "output": 0}});
        let cases = [
            (
                json!({"models": {"e": {"provider": "sim", "price": {"input": 0, "output": 0}, "kind": "embedding"}}}),
                "models.e.dimensions",
                "required",
            ),
            (
                json!({"models": {"e": {"provider": "sim", "price": {"input": 0, "output": 0}, "kind": "embedding", "dimensions": 0}}}),
                "models.e.dimensions",
                "1..=",
            ),
            (
                json!({"models": {"e": {"provider": "sim", "price": {"input": 0, "output": 0}, "kind": "embedding", "dimensions": 8, "max_input_tokens": 0}}}),
                "models.e.max_input_tokens",
                "at least 1",
            ),
            (
                json!({"models": {"e": {"provider": "anthropic", "base_url": "https://x", "price": {"input": 0, "output": 0}, "kind": "embedding", "dimensions": 8}}}),
                "models.e.provider",
                "anthropic",
            ),
            (
                json!({"models": {"c": {"provider": "sim", "price": {"input": 0, "output": 0}, "dimensions": 8}}}),
                "models.c.dimensions",
                "only for embedding models",
            ),
            (
                json!({"models": {"c": {"provider": "sim", "price": {"input": 0, "output": 0}, "max_input_tokens": 8}}}),
                "models.c.max_input_tokens",
                "only for embedding models",
            ),
            (
                json!({"models": {"c": {"provider": "sim", "price": {"input": 0, "output": 0}, "kind": "vision"}}}),
                "models.c.kind",
                "unknown variant",
            ),
            (
                json!({"models": {"e": emb}, "model_routing": {"default_model": "e"}}),
                "model_routing.default_model",
                "`e` is an embedding model; a chat model is needed here",
            ),
            (
                json!({"models": {"e": emb}, "model_routing": {"rules": [{"name": "r", "model": "e"}]}}),
                "model_routing.rules[0].model",
                "an embedding model",
            ),
            (
                json!({"models": {"e": emb}, "model_fallback": {"fallback_chain": ["gpt-4o", "e"]}}),
                "model_fallback.fallback_chain[1]",
                "an embedding model",
            ),
            (
                json!({"models": {"e": emb}, "model_fallback": {"primary": "e"}}),
                "model_fallback.primary",
                "an embedding model",
            ),
            (
                json!({"models": {"e": emb}, "session": {"context_management": {"summary_model": "e"}}}),
                "session.context_management.summary_model",
                "an embedding model",
            ),
            (
                json!({"models": {"e": emb}, "agents": {"a": {"model": "e"}}}),
                "agents.a.model",
                "an embedding model",
            ),
            (
                json!({"models": {"e": emb}, "cron": {"jobs": [{"name": "j", "schedule": "0 * * * *", "input": "x", "model": "e"}]}}),
                "cron.jobs[0].model",
                "an embedding model",
            ),
            (
                json!({"models": {"c": chat}, "cache": {"knowledge_cache": {"embedding_model": "c"}}}),
                "cache.knowledge_cache.embedding_model",
                "`c` is a chat model; an embedding model is needed here",
            ),
            (
                json!({"cache": {"request_cache": {"embedding_model": "gpt-4o"}}}),
                "cache.request_cache.embedding_model",
                "a chat model",
            ),
            (
                json!({"cache": {"request_cache": {"embedding_model": "ghost"}}}),
                "cache.request_cache.embedding_model",
                "configured embedding models: text-embedding-3-small",
            ),
            // `semantic` without an embedding model uses the built-in one, which must be one.
            (
                json!({"models": {"text-embedding-3-small": chat},
                       "cache": {"request_cache": {"enabled": true, "hash_strategy": "semantic"}}}),
                "cache.request_cache.embedding_model",
                "a chat model",
            ),
        ];
        for (v, path, reason) in cases {
            let e = err_of(v.clone());
            assert!(e.contains(path), "{v}: {e}");
            assert!(e.contains(reason), "{v}: {e}");
        }
        // The right kinds in the right places are accepted.
        from_value(
            "t",
            json!({"models": {"e": emb},
                   "cache": {"request_cache": {"embedding_model": "e"},
                             "knowledge_cache": {"embedding_model": "text-embedding-3-small"}}}),
        )
        .unwrap();
    }
}

//! Admission of a task submission (pure): check it against the config — every refusal names
//! the field and says what to fix — and turn it into a fresh queued record.

use openclaw_proto::{TaskRecord, TaskSubmit};

use crate::config::Config;

/// Longest accepted idempotency key.
pub const IDEMPOTENCY_KEY_MAX: usize = 256;
/// Longest accepted `template_id`, in bytes.
pub const TEMPLATE_ID_MAX: usize = 256;
/// Largest `max_tokens` a task may ask for.
pub const MAX_TOKENS_MAX: u32 = 1_000_000;

/// The field a submission got wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Input,
    /// The source is not one of `task_priority.source_mapping`.
    Source,
    /// The agent is not configured.
    Agent,
    /// The model is not configured.
    Model,
    CallbackUrl,
    MaxTokens,
    Template,
    IdempotencyKey,
}

/// A refused submission: which field, and a message saying what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    pub field: Field,
    pub message: String,
}

fn invalid(field: Field, message: impl Into<String>) -> Invalid {
    Invalid {
        field,
        message: message.into(),
    }
}

/// Check a submission against the config; the error says what to fix.
pub fn validate(cfg: &Config, s: &TaskSubmit) -> Result<(), Invalid> {
    if s.input.trim().is_empty() {
        return Err(invalid(Field::Input, "`input` must not be empty"));
    }
    if let Some(source) = &s.source {
        let mapping = &cfg.task_priority.source_mapping;
        if !mapping.contains_key(source) {
            let known: Vec<&str> = mapping.keys().map(String::as_str).collect();
            return Err(invalid(
                Field::Source,
                format!(
                    "source `{source}` is not one of task_priority.source_mapping: {} (add it there to give it a priority)",
                    known.join(", ")
                ),
            ));
        }
    }
    if let Some(agent) = &s.agent {
        if agent != "main" && !cfg.agents.contains_key(agent) {
            let mut known: Vec<&str> = cfg.agents.keys().map(String::as_str).collect();
            if !known.contains(&"main") {
                known.insert(0, "main");
            }
            return Err(invalid(
                Field::Agent,
                format!(
                    "agent `{agent}` is not configured; agents: {}",
                    known.join(", ")
                ),
            ));
        }
    }
    if let Some(m) = &s.model {
        if !cfg.models.contains_key(m) {
            let known: Vec<&str> = cfg.models.keys().map(String::as_str).collect();
            return Err(invalid(
                Field::Model,
                format!(
                    "model `{m}` is not configured; models: {}",
                    known.join(", ")
                ),
            ));
        }
        if cfg.model_kind(m) == Some(crate::config::ModelKind::Embedding) {
            return Err(invalid(
                Field::Model,
                format!("model `{m}` is an embedding model; a task needs a chat model"),
            ));
        }
    }
    if let Some(url) = &s.callback_url {
        let ok = reqwest::Url::parse(url)
            .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .unwrap_or(false);
        if !ok {
            return Err(invalid(
                Field::CallbackUrl,
                format!("`callback_url` must be an http(s) URL, got `{url}`"),
            ));
        }
    }
    if let Some(n) = s.max_tokens {
        if n == 0 || n > MAX_TOKENS_MAX {
            return Err(invalid(
                Field::MaxTokens,
                format!("`max_tokens` must be 1..={MAX_TOKENS_MAX}"),
            ));
        }
    }
    match (&s.template_id, &s.template_params) {
        (None, Some(_)) => {
            return Err(invalid(
                Field::Template,
                "`template_params` needs a `template_id`",
            ))
        }
        (Some(id), _) if id.trim().is_empty() || id.len() > TEMPLATE_ID_MAX => {
            return Err(invalid(
                Field::Template,
                format!("`template_id` must be 1..={TEMPLATE_ID_MAX} bytes, not blank"),
            ))
        }
        _ => {}
    }
    if let Some(k) = &s.idempotency_key {
        if k.is_empty() || k.len() > IDEMPOTENCY_KEY_MAX {
            return Err(invalid(
                Field::IdempotencyKey,
                format!("`idempotency_key` must be 1..={IDEMPOTENCY_KEY_MAX} bytes"),
            ));
        }
    }
    Ok(())
}

/// The queued record of a valid submission: defaults for what it left out (agent `main`,
/// source `api_call`, the source's priority), the template parameters in canonical form.
/// A new task id: a UUID v7, which sorts by creation time (ids made by one process sort in the
/// order they were made). The stores key records by id, so new records land at the end of the
/// key space and sled's page cache holds the recent pages, not a random sample of every page
/// ever written (issue 15: with v4 ids every write touched a random leaf).
pub fn new_task_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub fn record_of(cfg: &Config, sub: TaskSubmit, id: String, seq: u64, now_ms: u64) -> TaskRecord {
    let source = sub.source.unwrap_or_else(|| "api_call".to_string());
    let priority = sub
        .priority
        .unwrap_or_else(|| cfg.task_priority.for_source(&source));
    let agent = sub.agent.unwrap_or_else(|| "main".to_string());
    let mut rec = TaskRecord::queued(&id, &agent, &sub.input, priority);
    rec.seq = seq;
    rec.created_at_ms = now_ms;
    rec.session_id = sub.session_id;
    rec.source = source;
    rec.task_type = sub.task_type;
    rec.complexity = sub.complexity;
    rec.language = sub.language;
    rec.requested_model = sub.model;
    rec.callback_url = sub.callback_url;
    rec.idempotency_key = sub.idempotency_key;
    rec.max_tokens = sub.max_tokens;
    rec.cache = sub.cache.unwrap_or(true);
    rec.template_params = sub
        .template_params
        .as_ref()
        .map(|p| crate::cache::keys::canonical_json(&serde_json::Value::Object(p.clone())));
    rec.template_id = sub.template_id;
    rec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_sort_in_the_order_they_were_made() {
        let ids: Vec<String> = (0..10_000).map(|_| new_task_id()).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "ids are strictly increasing"
        );
        assert!(ids.iter().all(|id| uuid::Uuid::parse_str(id).is_ok()));
    }

    #[test]
    fn a_record_keeps_what_was_submitted() {
        let cfg = Config::default();
        let sub = TaskSubmit {
            input: "hello".into(),
            source: Some("feishu_direct_message".into()),
            session_id: Some("s1".into()),
            max_tokens: Some(64),
            cache: Some(false),
            ..Default::default()
        };
        let r = record_of(&cfg, sub, "t1".into(), 7, 1000);
        assert_eq!((r.id.as_str(), r.seq, r.agent.as_str()), ("t1", 7, "main"));
        assert_eq!(r.source, "feishu_direct_message");
        assert_eq!(
            r.priority,
            cfg.task_priority.for_source("feishu_direct_message")
        );
        assert_eq!(r.session_id.as_deref(), Some("s1"));
        assert_eq!((r.max_tokens, r.cache), (Some(64), false));
        assert_eq!(r.created_at_ms, 1000);
        assert_eq!(r.status, openclaw_proto::TaskStatus::Queued);
    }

    #[test]
    fn a_task_needs_a_chat_model() {
        let cfg = Config::default();
        let sub = |model: &str| TaskSubmit {
            input: "hello".into(),
            model: Some(model.into()),
            ..Default::default()
        };
        assert!(validate(&cfg, &sub("gpt-4o")).is_ok());
        let e = validate(&cfg, &sub("text-embedding-3-small")).unwrap_err();
        assert!(format!("{e:?}").contains("embedding model"), "{e:?}");
    }
}

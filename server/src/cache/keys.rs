//! The request cache's pure part (§18.3 `cache.request_cache`): key derivation, the stored
//! entry, and the TTL / size / LRU decisions. No clock, no I/O, no actors: time comes in as an
//! argument, so the decisions are table-tested here and the cache actor only applies them.
//!
//! Keys are 128-bit FNV-1a hashes (hex) over a canonical, length-prefixed encoding, stable across
//! processes and Rust versions (the cache survives restarts, so `std`'s randomly seeded hasher
//! would not do; in a cluster the same key on every node is what lets a replicated entry hit,
//! see the replication module). FNV is not collision resistant against an adversary; its inputs
//! come from the cluster's own callers, so a deliberate collision would only serve one caller
//! another caller's answer to a *chosen* prompt — documented in README.
//!
//! - `exact`: model + every message (role, whitespace-normalised text, other fields as canonical
//!   JSON) + the parameters that change the answer (output cap, temperature, the request's other
//!   fields sorted; `stream`, `stream_options` and `user` excluded).
//! - `template`: model + template id + its parameters (sorted); the input text is ignored.
//! - `semantic`: see `crate::cache::semantic` (partition hash + the last user message compared
//!   by embedding); requests it cannot serve by similarity use the `exact` key.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use openclaw_proto::openai::{ChatCompletionRequest, ChatMessage, Usage};

use crate::config::{HashStrategy, RequestCache};

/// One cached answer, as stored (through `openclaw_proto::codec`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The model that answered.
    pub model: String,
    pub text: String,
    pub finish_reason: Option<String>,
    /// The usage of the original call.
    pub usage: Usage,
    pub created_at_ms: u64,
    pub last_used_ms: u64,
    /// Under `semantic`: the entry's partition and query vector (the index is rebuilt from
    /// them at start).
    pub semantic: Option<super::semantic::SemanticMeta>,
}

/// What the actor keeps in memory per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub size: u64,
    pub created_at_ms: u64,
    pub last_used_ms: u64,
}

/// The strategy in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Exact,
    Template,
    Semantic,
}

impl Strategy {
    pub fn of(rc: &RequestCache) -> Strategy {
        match rc.hash_strategy {
            HashStrategy::Template => Strategy::Template,
            HashStrategy::Exact => Strategy::Exact,
            HashStrategy::Semantic => Strategy::Semantic,
        }
    }
}

/// The configured strategy's name (`exact`, `template`, `semantic`).
pub fn strategy_name(rc: &RequestCache) -> &'static str {
    match rc.hash_strategy {
        HashStrategy::Exact => "exact",
        HashStrategy::Template => "template",
        HashStrategy::Semantic => "semantic",
    }
}

/// The cache's byte bound from `max_size_mb`.
pub fn max_bytes(rc: &RequestCache) -> u64 {
    (rc.max_size_mb * 1024.0 * 1024.0).max(0.0) as u64
}

/// A single entry larger than 1/16 of the bound is not cached (it would evict too much).
pub fn admits_size(size: u64, max_bytes: u64) -> bool {
    size.saturating_mul(16) <= max_bytes
}

/// Is an entry created at `created_at_ms` stale at `now_ms`? `ttl_seconds == 0`: never.
pub fn is_expired(created_at_ms: u64, now_ms: u64, ttl_seconds: u64) -> bool {
    ttl_seconds != 0 && now_ms.saturating_sub(created_at_ms) >= ttl_seconds.saturating_mul(1000)
}

/// Keys to evict, least recently used first (ties by key), so that `total` gets to at most
/// `max_bytes`.
pub fn evict_for_size<'a>(
    index: impl IntoIterator<Item = (&'a String, &'a IndexEntry)>,
    total: u64,
    max_bytes: u64,
) -> Vec<String> {
    if total <= max_bytes {
        return Vec::new();
    }
    let mut by_age: Vec<(&String, &IndexEntry)> = index.into_iter().collect();
    by_age.sort_by(|a, b| (a.1.last_used_ms, a.0).cmp(&(b.1.last_used_ms, b.0)));
    let mut left = total;
    let mut out = Vec::new();
    for (k, e) in by_age {
        if left <= max_bytes {
            break;
        }
        left = left.saturating_sub(e.size);
        out.push(k.clone());
    }
    out
}

/// Keys whose entries are stale at `now_ms`, sorted.
pub fn expired<'a>(
    index: impl IntoIterator<Item = (&'a String, &'a IndexEntry)>,
    now_ms: u64,
    ttl_seconds: u64,
) -> Vec<String> {
    let mut out: Vec<String> = index
        .into_iter()
        .filter(|(_, e)| is_expired(e.created_at_ms, now_ms, ttl_seconds))
        .map(|(k, _)| k.clone())
        .collect();
    out.sort();
    out
}

/// Whitespace collapsed to single spaces, trimmed.
pub fn normalize_text(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// JSON with object keys sorted at every level (serde_json's `Map` may keep insertion order).
pub fn canonical_json(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String((*k).clone()).to_string());
                    out.push(':');
                    write(&m[*k], out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// A length-prefixed field encoding hashed with FNV-1a 128.
pub(crate) struct KeyHasher(u128);

const FNV_OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
const FNV_PRIME: u128 = 0x0000000001000000000000000000013B;

impl KeyHasher {
    pub(crate) fn new(kind: &str) -> KeyHasher {
        let mut h = KeyHasher(FNV_OFFSET);
        h.field(kind.as_bytes());
        h
    }
    fn bytes(&mut self, b: &[u8]) {
        for x in b {
            self.0 ^= u128::from(*x);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }
    pub(crate) fn field(&mut self, b: &[u8]) {
        self.bytes(&(b.len() as u64).to_le_bytes());
        self.bytes(b);
    }
    pub(crate) fn finish(self) -> String {
        format!("{:032x}", self.0)
    }
}

/// A message's text content, normalised; non-text content as canonical JSON.
pub(crate) fn message_content(m: &ChatMessage) -> String {
    let text_only = match &m.content {
        Value::String(_) | Value::Null => true,
        Value::Array(parts) => parts
            .iter()
            .all(|p| p.get("type").and_then(Value::as_str) == Some("text")),
        _ => false,
    };
    if text_only {
        format!("t:{}", normalize_text(&m.text()))
    } else {
        format!("j:{}", canonical_json(&m.content))
    }
}

/// Request fields that do not change the answer.
const IGNORED_FIELDS: &[&str] = &["stream", "stream_options", "user"];

/// `exact` key of a chat request for `model` (the routed model for tasks).
pub fn exact_key(model: &str, req: &ChatCompletionRequest) -> String {
    let mut h = KeyHasher::new("exact/1");
    h.field(model.as_bytes());
    h.field(&(req.messages.len() as u64).to_le_bytes());
    for m in &req.messages {
        hash_message(&mut h, m);
    }
    hash_answer_params(&mut h, req);
    h.finish()
}

/// One message into a key: role, content, its other fields.
pub(crate) fn hash_message(h: &mut KeyHasher, m: &ChatMessage) {
    h.field(m.role.as_bytes());
    h.field(message_content(m).as_bytes());
    h.field(canonical_json(&Value::Object(m.extra.clone())).as_bytes());
}

/// The request's answer-changing parameters into a key: the output cap, the temperature and
/// every other field but [`IGNORED_FIELDS`] (tools, `top_p`, `response_format`, `seed`, …).
pub(crate) fn hash_answer_params(h: &mut KeyHasher, req: &ChatCompletionRequest) {
    h.field(format!("{:?}", req.output_cap()).as_bytes());
    h.field(format!("{:?}", req.temperature).as_bytes());
    let extra: Map<String, Value> = req
        .extra
        .iter()
        .filter(|(k, _)| !IGNORED_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    h.field(canonical_json(&Value::Object(extra)).as_bytes());
}

/// `template` key: model + template id + its parameters (any JSON; hashed canonically).
pub fn template_key(model: &str, template_id: &str, params: &Value) -> String {
    let mut h = KeyHasher::new("template/1");
    h.field(model.as_bytes());
    h.field(template_id.as_bytes());
    h.field(canonical_json(params).as_bytes());
    h.finish()
}

/// The key for a request under `strategy`: `template` applies when a template id is given,
/// otherwise the key is `exact`.
pub fn key_for(
    strategy: Strategy,
    model: &str,
    req: &ChatCompletionRequest,
    template: Option<(&str, &Value)>,
) -> String {
    match (strategy, template) {
        (Strategy::Template, Some((id, params))) => template_key(model, id, params),
        _ => exact_key(model, req),
    }
}

/// Is an answer worth caching? Not an empty one, nor a tool call (its text is not the answer).
pub fn cacheable(text: &str, finish_reason: Option<&str>) -> bool {
    !text.is_empty() && finish_reason != Some("tool_calls")
}

/// Split a cached text into about `n` pieces at whitespace boundaries (for stream replay);
/// their concatenation is `text`.
pub fn replay_pieces(text: &str, n: usize) -> Vec<String> {
    let n = n.max(1);
    let len = text.len();
    if len == 0 {
        return Vec::new();
    }
    let target = len.div_ceil(n);
    let mut out = Vec::new();
    let mut start = 0;
    while start < len {
        let mut end = (start + target).min(len);
        while end < len && !text.is_char_boundary(end) {
            end += 1;
        }
        // Prefer to cut just after a space, if one is near.
        if end < len {
            if let Some(sp) = text[start..end].rfind(' ') {
                if sp > 0 {
                    end = start + sp + 1;
                }
            }
        }
        out.push(text[start..end].to_string());
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(v: Value) -> ChatCompletionRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn exact_key_table() {
        let base = req(
            json!({"model":"m","messages":[{"role":"user","content":"hello   world"}],"max_tokens":10}),
        );
        let k = exact_key("m", &base);
        let cases: Vec<(&str, ChatCompletionRequest, &str, bool)> = vec![
            (
                "whitespace differs",
                req(
                    json!({"model":"m","messages":[{"role":"user","content":"  hello\n\tworld "}],"max_tokens":10}),
                ),
                "m",
                true,
            ),
            (
                "text parts",
                req(
                    json!({"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hello world"}]}],"max_tokens":10}),
                ),
                "m",
                true,
            ),
            (
                "stream flag ignored",
                req(
                    json!({"model":"m","messages":[{"role":"user","content":"hello world"}],"max_tokens":10,"stream":true,"user":"u1"}),
                ),
                "m",
                true,
            ),
            (
                "max_completion_tokens same cap",
                req(
                    json!({"model":"m","messages":[{"role":"user","content":"hello world"}],"max_completion_tokens":10}),
                ),
                "m",
                true,
            ),
            (
                "different max_tokens",
                req(
                    json!({"model":"m","messages":[{"role":"user","content":"hello world"}],"max_tokens":11}),
                ),
                "m",
                false,
            ),
            (
                "no max_tokens",
                req(json!({"model":"m","messages":[{"role":"user","content":"hello world"}]})),
                "m",
                false,
            ),
            (
                "temperature",
                req(
                    json!({"model":"m","messages":[{"role":"user","content":"hello world"}],"max_tokens":10,"temperature":0.5}),
                ),
                "m",
                false,
            ),
            (
                "other param",
                req(
                    json!({"model":"m","messages":[{"role":"user","content":"hello world"}],"max_tokens":10,"top_p":0.5}),
                ),
                "m",
                false,
            ),
            ("other model", base.clone(), "m2", false),
            (
                "role",
                req(
                    json!({"model":"m","messages":[{"role":"system","content":"hello world"}],"max_tokens":10}),
                ),
                "m",
                false,
            ),
            (
                "text",
                req(
                    json!({"model":"m","messages":[{"role":"user","content":"hello worlds"}],"max_tokens":10}),
                ),
                "m",
                false,
            ),
            (
                "split across messages",
                req(
                    json!({"model":"m","messages":[{"role":"user","content":"hello"},{"role":"user","content":"world"}],"max_tokens":10}),
                ),
                "m",
                false,
            ),
        ];
        for (why, r, model, same) in cases {
            assert_eq!(exact_key(model, &r) == k, same, "{why}");
        }
    }

    #[test]
    fn extra_fields_are_order_independent() {
        let a = req(
            json!({"model":"m","messages":[{"role":"user","content":"x"}],"top_p":0.5,"seed":1}),
        );
        let b = req(
            json!({"model":"m","messages":[{"role":"user","content":"x"}],"seed":1,"top_p":0.5}),
        );
        assert_eq!(exact_key("m", &a), exact_key("m", &b));
        assert_eq!(
            canonical_json(&json!({"b":1,"a":{"d":2,"c":[3]}})),
            r#"{"a":{"c":[3],"d":2},"b":1}"#
        );
    }

    #[test]
    fn keys_are_stable_across_processes() {
        // Pinned: a change here invalidates every stored cache (bump the kind tag instead).
        let r = req(json!({"model":"m","messages":[{"role":"user","content":"hi"}]}));
        let k = exact_key("m", &r);
        assert_eq!(k, "95f8fd9064131d84b643a5dbcc372e04");
        assert_ne!(
            template_key("m", "t", &json!({})),
            template_key("m", "t", &json!(null))
        );
    }

    #[test]
    fn template_key_ignores_input_text() {
        let a =
            req(json!({"model":"m","messages":[{"role":"user","content":"report for monday"}]}));
        let b = req(json!({"model":"m","messages":[{"role":"user","content":"something else"}]}));
        let p = json!({"day":"monday","team":"ops"});
        let p2 = json!({"team":"ops","day":"monday"});
        let ka = key_for(Strategy::Template, "m", &a, Some(("daily", &p)));
        let kb = key_for(Strategy::Template, "m", &b, Some(("daily", &p2)));
        assert_eq!(ka, kb);
        let other = json!({"day":"tuesday","team":"ops"});
        assert_ne!(
            ka,
            key_for(Strategy::Template, "m", &a, Some(("daily", &other)))
        );
        assert_ne!(
            ka,
            key_for(Strategy::Template, "m", &a, Some(("weekly", &p)))
        );
        assert_ne!(
            ka,
            key_for(Strategy::Template, "m2", &a, Some(("daily", &p)))
        );
        // Without a template id, or under `exact`, the text decides.
        assert_ne!(
            key_for(Strategy::Template, "m", &a, None),
            key_for(Strategy::Template, "m", &b, None)
        );
        assert_ne!(
            key_for(Strategy::Exact, "m", &a, Some(("daily", &p))),
            key_for(Strategy::Exact, "m", &b, Some(("daily", &p)))
        );
    }

    #[test]
    fn strategy_of_config() {
        let mut rc = RequestCache {
            hash_strategy: HashStrategy::Semantic,
            ..Default::default()
        };
        assert_eq!(Strategy::of(&rc), Strategy::Semantic);
        rc.hash_strategy = HashStrategy::Template;
        assert_eq!(Strategy::of(&rc), Strategy::Template);
        rc.hash_strategy = HashStrategy::Exact;
        assert_eq!(Strategy::of(&rc), Strategy::Exact);
    }

    fn ix(entries: &[(&str, u64, u64)]) -> std::collections::BTreeMap<String, IndexEntry> {
        entries
            .iter()
            .map(|(k, size, used)| {
                (
                    k.to_string(),
                    IndexEntry {
                        size: *size,
                        created_at_ms: 0,
                        last_used_ms: *used,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn lru_eviction_table() {
        let index = ix(&[("a", 10, 5), ("b", 10, 1), ("c", 10, 3), ("d", 10, 3)]);
        let cases: &[(u64, &[&str])] = &[
            (40, &[]),
            (39, &["b"]),
            (30, &["b"]),
            (29, &["b", "c"]),
            (20, &["b", "c"]),
            (15, &["b", "c", "d"]),
            (0, &["b", "c", "d", "a"]),
        ];
        for (max, want) in cases {
            let got = evict_for_size(&index, 40, *max);
            assert_eq!(got, *want, "max {max}");
        }
    }

    #[test]
    fn ttl_table() {
        let cases = [
            (1_000, 1_999, 1, false),
            (1_000, 2_000, 1, true),
            (1_000, 500, 1, false), // clock went back: not stale
            (0, u64::MAX, 0, false),
            (0, 3_600_000, 3600, true),
        ];
        for (created, now, ttl, want) in cases {
            assert_eq!(is_expired(created, now, ttl), want, "{created} {now} {ttl}");
        }
        let index = ix(&[("a", 1, 0), ("b", 1, 0)]);
        assert_eq!(expired(&index, 1_000, 1), vec!["a", "b"]);
        assert!(expired(&index, 999, 1).is_empty());
    }

    #[test]
    fn size_bound_table() {
        let rc = RequestCache {
            max_size_mb: 1.0,
            ..Default::default()
        };
        let max = max_bytes(&rc);
        assert_eq!(max, 1_048_576);
        assert!(admits_size(65_536, max));
        assert!(!admits_size(65_537, max));
    }

    #[test]
    fn replay_pieces_rebuild_the_text() {
        for text in [
            "",
            "one",
            "The agent answered the queue, 很好 done.",
            "a b c d e f g h i j",
        ] {
            let p = replay_pieces(text, 4);
            assert_eq!(p.concat(), text);
            assert!(p.len() <= text.len().max(1));
        }
        assert!(replay_pieces("a b c d e f g h i j", 4).len() >= 3);
    }
}

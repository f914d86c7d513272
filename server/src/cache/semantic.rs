//! The `semantic` request-cache strategy's pure part (issue 11 item 4): the partition key and
//! the in-memory vector index. No clock, no I/O, no actors.
//!
//! - [`semantic_key`]: everything that must match exactly — the model, the agent, the
//!   embedding model, every message before the last one (system prompt, prior turns, tool
//!   turns), the last message's non-text fields, and the answer-changing parameters (output
//!   cap, temperature, every other request field but `stream`, `stream_options`, `user`,
//!   i.e. `top_p`, `tools`, `response_format`, `seed`, ...) — is hashed into the *partition*;
//!   only the last message's text (the *query*) is compared by embedding. A request whose last
//!   message is not a plain-text user message (a tool result in an agent loop, an assistant
//!   prefill, an image) gets no semantic key: it is never served by similarity.
//! - [`SemanticIndex`]: per partition, the entries' unit vectors in one flat array, searched
//!   exhaustively (exact cosine, so recall is 1.0 and removal is O(1) by swap). Chosen over
//!   `hnsw_rs` and `instant-distance` by measurement (BENCHMARKS.md, "Semantic cache"):
//!   partitions are narrow by construction, a lookup within 10k entries costs well under a
//!   millisecond in release, entries leave on TTL and LRU eviction (an HNSW graph cannot
//!   remove a point; `instant-distance` cannot add one), and the index is rebuilt from the
//!   vectors persisted in sled at start in one pass.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use openclaw_proto::openai::{ChatCompletionRequest, ChatMessage};

use super::keys::{canonical_json, hash_answer_params, hash_message, normalize_text, KeyHasher};

/// The two halves of a request under the `semantic` strategy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SemanticKey {
    /// Hash of everything that must match exactly.
    pub partition: String,
    /// The last user message's text, whitespace-normalised: what is embedded and compared.
    pub query: String,
}

impl SemanticKey {
    /// The entry's key in the store: partition + query (an identical request is found without
    /// an embedding call).
    pub fn entry_key(&self) -> String {
        let mut h = KeyHasher::new("semantic-entry/1");
        h.field(self.partition.as_bytes());
        h.field(self.query.as_bytes());
        h.finish()
    }
}

/// What a semantic entry keeps besides the answer (persisted with it, so the index is rebuilt
/// at start).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SemanticMeta {
    pub partition: String,
    /// Unit vector of the query, from the partition's embedding model.
    pub vector: Vec<f32>,
}

/// Is `m` a plain-text user message (the only kind compared by similarity)?
fn is_plain_user(m: &ChatMessage) -> bool {
    if m.role != "user" {
        return false;
    }
    match &m.content {
        Value::String(_) => true,
        Value::Array(parts) => parts
            .iter()
            .all(|p| p.get("type").and_then(Value::as_str) == Some("text")),
        _ => false,
    }
}

/// The semantic key of `req` answered by `model` for `agent`, compared with `embedding_model`;
/// `None` when the request must not be served by similarity (its last message is not a
/// plain-text user message, or its query is empty).
pub fn semantic_key(
    model: &str,
    agent: &str,
    embedding_model: &str,
    req: &ChatCompletionRequest,
) -> Option<SemanticKey> {
    let (last, before) = req.messages.split_last()?;
    if !is_plain_user(last) {
        return None;
    }
    let query = normalize_text(&last.text());
    if query.is_empty() {
        return None;
    }
    let mut h = KeyHasher::new("semantic/1");
    h.field(model.as_bytes());
    h.field(agent.as_bytes());
    h.field(embedding_model.as_bytes());
    h.field(&(before.len() as u64).to_le_bytes());
    for m in before {
        hash_message(&mut h, m);
    }
    h.field(canonical_json(&Value::Object(last.extra.clone())).as_bytes());
    hash_answer_params(&mut h, req);
    Some(SemanticKey {
        partition: h.finish(),
        query,
    })
}

/// `v` scaled to unit length (a zero or non-finite vector: `None`, it cannot be compared).
pub fn unit(mut v: Vec<f32>) -> Option<Vec<f32>> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !n.is_finite() || n == 0.0 {
        return None;
    }
    v.iter_mut().for_each(|x| *x /= n);
    Some(v)
}

/// Dot product in 8 independent lanes (so the compiler can vectorise it: a single running
/// sum of `f32` cannot be reordered).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for (s, (x, y)) in acc.iter_mut().zip(x.iter().zip(y)) {
            *s += x * y;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// One partition's entries: keys and their unit vectors (flat, `dims` per entry).
#[derive(Debug, Default)]
struct Part {
    dims: usize,
    keys: Vec<String>,
    vecs: Vec<f32>,
}

/// Exact nearest-neighbour search within a partition (see the module doc for why).
#[derive(Debug, Default)]
pub struct SemanticIndex {
    parts: HashMap<String, Part>,
    /// key → (partition, position in it).
    at: HashMap<String, (String, usize)>,
}

impl SemanticIndex {
    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    pub fn partitions(&self) -> usize {
        self.parts.len()
    }

    /// Add (or replace) `key` in `partition`. A vector of another length than the
    /// partition's (the embedding model's dimensions changed under the same name) replaces the
    /// partition's entries, which can no longer be compared with it.
    pub fn insert(&mut self, key: &str, partition: &str, vector: Vec<f32>) {
        let Some(vector) = unit(vector) else {
            return;
        };
        self.remove(key);
        let part = self.parts.entry(partition.to_string()).or_default();
        if part.dims != vector.len() {
            let old: Vec<String> = std::mem::take(&mut part.keys);
            part.vecs.clear();
            part.dims = vector.len();
            for k in old {
                self.at.remove(&k);
            }
        }
        let part = self.parts.entry(partition.to_string()).or_default();
        part.keys.push(key.to_string());
        part.vecs.extend_from_slice(&vector);
        self.at.insert(
            key.to_string(),
            (partition.to_string(), part.keys.len() - 1),
        );
    }

    /// Drop `key` (a no-op when absent).
    pub fn remove(&mut self, key: &str) {
        let Some((partition, pos)) = self.at.remove(key) else {
            return;
        };
        let Some(part) = self.parts.get_mut(&partition) else {
            return;
        };
        let d = part.dims;
        let last = part.keys.len() - 1;
        part.keys.swap_remove(pos);
        if pos != last {
            // The last entry moved into `pos`.
            let (head, tail) = part.vecs.split_at_mut(last * d);
            head[pos * d..pos * d + d].copy_from_slice(&tail[..d]);
            if let Some(moved) = self.at.get_mut(&part.keys[pos]) {
                moved.1 = pos;
            }
        }
        part.vecs.truncate(last * d);
        if part.keys.is_empty() {
            self.parts.remove(&partition);
        }
    }

    /// The entry of `partition` most similar to `query` (cosine), if its score is at least
    /// `threshold`; ties go to the first inserted.
    pub fn best(&self, partition: &str, query: &[f32], threshold: f32) -> Option<(String, f32)> {
        let part = self.parts.get(partition)?;
        if part.dims != query.len() || part.dims == 0 {
            return None;
        }
        let q = unit(query.to_vec())?;
        let mut best: Option<(usize, f32)> = None;
        for (i, v) in part.vecs.chunks_exact(part.dims).enumerate() {
            let s = dot(&q, v);
            if best.is_none_or(|(_, b)| s > b) {
                best = Some((i, s));
            }
        }
        let (i, s) = best?;
        (s >= threshold).then(|| (part.keys[i].clone(), s.min(1.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(v: Value) -> ChatCompletionRequest {
        serde_json::from_value(v).unwrap()
    }

    fn base() -> Value {
        json!({"model":"m","max_tokens":50,"messages":[
            {"role":"system","content":"You are a helpful travel agent."},
            {"role":"user","content":"Hi"},
            {"role":"assistant","content":"Hello! Where to?"},
            {"role":"user","content":"What is the capital of France?"}]})
    }

    fn with(f: impl FnOnce(&mut Value)) -> ChatCompletionRequest {
        let mut v = base();
        f(&mut v);
        req(v)
    }

    #[test]
    fn partition_table() {
        let b = semantic_key("m", "main", "e", &req(base())).unwrap();
        assert_eq!(b.query, "What is the capital of France?");
        // (why, request, model, agent, embedding model, same partition?)
        let cases: Vec<(&str, ChatCompletionRequest, &str, &str, &str, bool)> = vec![
            (
                "paraphrased last user message",
                with(|v| v["messages"][3]["content"] = json!("Which city is France's capital?")),
                "m",
                "main",
                "e",
                true,
            ),
            (
                "stream and user fields do not change the answer",
                with(|v| {
                    v["stream"] = json!(true);
                    v["user"] = json!("u1");
                }),
                "m",
                "main",
                "e",
                true,
            ),
            (
                "whitespace in the prior turn",
                with(|v| v["messages"][1]["content"] = json!("  Hi ")),
                "m",
                "main",
                "e",
                true,
            ),
            ("another agent", req(base()), "m", "ops", "e", false),
            ("another model", req(base()), "m2", "main", "e", false),
            (
                "another embedding model",
                req(base()),
                "m",
                "main",
                "e2",
                false,
            ),
            (
                "another system prompt",
                with(|v| v["messages"][0]["content"] = json!("You are a pirate.")),
                "m",
                "main",
                "e",
                false,
            ),
            (
                "another prior turn",
                with(|v| v["messages"][2]["content"] = json!("Hello! Which country?")),
                "m",
                "main",
                "e",
                false,
            ),
            (
                "a prior turn left out",
                with(|v| {
                    let m = v["messages"].as_array_mut().unwrap();
                    m.remove(1);
                    m.remove(1);
                }),
                "m",
                "main",
                "e",
                false,
            ),
            (
                "tool definitions",
                with(|v| v["tools"] = json!([{"type":"function","function":{"name":"f"}}])),
                "m",
                "main",
                "e",
                false,
            ),
            (
                "a tool turn before the question",
                with(|v| {
                    v["messages"]
                        .as_array_mut()
                        .unwrap()
                        .insert(3, json!({"role":"tool","tool_call_id":"c1","content":"42"}))
                }),
                "m",
                "main",
                "e",
                false,
            ),
            (
                "temperature",
                with(|v| v["temperature"] = json!(0.9)),
                "m",
                "main",
                "e",
                false,
            ),
            (
                "top_p",
                with(|v| v["top_p"] = json!(0.5)),
                "m",
                "main",
                "e",
                false,
            ),
            (
                "max_tokens",
                with(|v| v["max_tokens"] = json!(51)),
                "m",
                "main",
                "e",
                false,
            ),
            (
                "response_format",
                with(|v| v["response_format"] = json!({"type":"json_object"})),
                "m",
                "main",
                "e",
                false,
            ),
            (
                "a name on the last message",
                with(|v| v["messages"][3]["name"] = json!("alice")),
                "m",
                "main",
                "e",
                false,
            ),
        ];
        for (why, r, model, agent, emb, same) in cases {
            let k = semantic_key(model, agent, emb, &r).expect(why);
            assert_eq!(k.partition == b.partition, same, "{why}");
        }
    }

    #[test]
    fn never_by_similarity_table() {
        let cases: Vec<(&str, Value)> = vec![
            (
                "last message is a tool result (agent loop)",
                json!({"model":"m","messages":[
                    {"role":"user","content":"weather?"},
                    {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"w","arguments":"{}"}}]},
                    {"role":"tool","tool_call_id":"c1","content":"sunny"}]}),
            ),
            (
                "last message is an assistant prefill",
                json!({"model":"m","messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}),
            ),
            (
                "last message carries an image",
                json!({"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}),
            ),
            (
                "empty last message",
                json!({"model":"m","messages":[{"role":"user","content":"   "}]}),
            ),
            ("no messages", json!({"model":"m","messages":[]})),
        ];
        for (why, v) in cases {
            assert!(semantic_key("m", "a", "e", &req(v)).is_none(), "{why}");
        }
    }

    #[test]
    fn entry_key_separates_queries_and_partitions() {
        let a = semantic_key("m", "a", "e", &req(base())).unwrap();
        let mut b = a.clone();
        b.query.push('!');
        let mut c = a.clone();
        c.partition = "x".into();
        assert_ne!(a.entry_key(), b.entry_key());
        assert_ne!(a.entry_key(), c.entry_key());
        assert_eq!(a.entry_key(), a.clone().entry_key());
    }

    #[test]
    fn index_threshold_and_partitions() {
        let mut ix = SemanticIndex::default();
        ix.insert("k1", "p", vec![1.0, 0.0, 0.0]);
        ix.insert("k2", "p", vec![0.0, 1.0, 0.0]);
        ix.insert("k3", "q", vec![1.0, 0.0, 0.0]);
        assert_eq!(ix.len(), 3);
        assert_eq!(ix.partitions(), 2);
        // cos = 0.8 / 1.0 against k1 (the query is normalised).
        let query = [0.8, 0.6, 0.0];
        let cases: &[(&str, f32, Option<&str>)] = &[
            ("p", 0.5, Some("k1")),
            ("p", 0.8, Some("k1")),
            ("p", 0.81, None),
            ("q", 0.5, Some("k3")),
            ("r", 0.0, None),
        ];
        for (p, t, want) in cases {
            let got = ix.best(p, &query, *t).map(|(k, _)| k);
            assert_eq!(got.as_deref(), *want, "{p} {t}");
        }
        let (_, s) = ix.best("p", &[2.0, 0.0, 0.0], 0.99).unwrap();
        assert!((s - 1.0).abs() < 1e-6);
        // Another length is never compared.
        assert!(ix.best("p", &[1.0, 0.0], 0.0).is_none());
    }

    #[test]
    fn index_remove_keeps_the_others_findable() {
        let mut ix = SemanticIndex::default();
        for i in 0..5 {
            let mut v = vec![0.0; 5];
            v[i] = 1.0;
            ix.insert(&format!("k{i}"), "p", v);
        }
        ix.remove("k1");
        ix.remove("k1");
        ix.remove("absent");
        assert_eq!(ix.len(), 4);
        for i in [0, 2, 3, 4] {
            let mut v = vec![0.0; 5];
            v[i] = 1.0;
            assert_eq!(ix.best("p", &v, 0.99).unwrap().0, format!("k{i}"));
        }
        let mut v1 = vec![0.0; 5];
        v1[1] = 1.0;
        assert!(ix.best("p", &v1, 0.5).is_none());
        // Replacing a key moves it; emptying a partition drops it.
        ix.insert("k0", "p2", vec![1.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(ix.len(), 4);
        for k in ["k2", "k3", "k4"] {
            ix.remove(k);
        }
        assert_eq!(ix.partitions(), 1);
        // A zero vector is not indexed.
        ix.insert("z", "p2", vec![0.0; 5]);
        assert_eq!(ix.len(), 1);
    }

    #[test]
    fn dot_matches_the_plain_sum() {
        for n in [0usize, 1, 7, 8, 9, 256, 259] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() < 1e-4, "{n}");
        }
    }

    #[test]
    fn index_dimension_change_replaces_the_partition() {
        let mut ix = SemanticIndex::default();
        ix.insert("a", "p", vec![1.0, 0.0]);
        ix.insert("b", "p", vec![1.0, 0.0, 0.0]);
        assert_eq!(ix.len(), 1);
        assert_eq!(ix.best("p", &[1.0, 0.0, 0.0], 0.9).unwrap().0, "b");
        ix.remove("a");
        assert_eq!(ix.len(), 1);
    }
}

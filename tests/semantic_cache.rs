//! The `semantic` request cache through a real node and a real simulator process (which also
//! serves the embedding model, with its lexical embeddings): a paraphrased question hits, with
//! `X-OpenClaw-Cache: hit; strategy=semantic; score=…` on chat and `cache_hit` + `cache_score`
//! on the task view and its audit line; the same words under another agent, another system
//! prompt, another prior turn, another temperature, or after a tool result miss; an expired
//! entry misses; hits survive a restart; the size bound evicts (driven past it); an embedding
//! failure is a counted miss, never an error; `GET /api/cache` reports hits per strategy.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{config, metric_sum, Node, Sim, TASK_DEADLINE};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The test's threshold: the simulator's lexical embeddings score [`PARAPHRASE`] 0.835 against
/// [`QUESTION`], and [`OTHER`] (another question in the same words) 0.777.
const THRESHOLD: f64 = 0.8;
const QUESTION: &str = "How do I reset the password of my account?";
const PARAPHRASE: &str = "How do I reset my account password?";
const OTHER: &str = "How do I reset the password of my card?";
const SYSTEM: &str = "You are the support desk of a bank.";

fn semantic_cfg(sim: &Sim, emb_url: &str, rc: Value) -> Value {
    let mut c = json!({"enabled": true, "ttl_seconds": 3600, "max_size_mb": 10,
        "hash_strategy": "semantic", "similarity_threshold": THRESHOLD, "embedding_model": "emb"});
    for (k, v) in rc.as_object().unwrap() {
        c[k] = v.clone();
    }
    let mut cfg = config(
        sim,
        2,
        json!({"cache": {"request_cache": c},
               "model_fallback": {"max_retries": 0, "retry_delay_ms": 10}}),
    );
    cfg["models"]["emb"] = json!({"provider": "sim", "base_url": emb_url,
        "price": {"input": 0.02, "output": 0.0}, "kind": "embedding", "dimensions": 256});
    cfg
}

fn ask(system: &str, prior: &[(&str, &str)], question: &str, extra: Value) -> Value {
    let mut messages = vec![json!({"role": "system", "content": system})];
    for (role, text) in prior {
        messages.push(json!({"role": role, "content": text}));
    }
    messages.push(json!({"role": "user", "content": question}));
    let mut b = json!({"model": "fast", "max_tokens": 40, "messages": messages});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

/// The score in `hit; strategy=semantic; score=0.97`.
fn score_of(header: &str) -> f64 {
    let s = header
        .split("score=")
        .nth(1)
        .unwrap_or_else(|| panic!("no score in {header:?}"));
    s.trim().parse().unwrap()
}

async fn chat_calls(sim: &Sim) -> usize {
    sim.calls(None)
        .await
        .iter()
        .filter(|c| c["embedding"] != true)
        .count()
}

async fn stats(node: &Node) -> Value {
    let (st, v) = node.get_json("/api/cache").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

async fn run_task(node: &Node, body: Value) -> Value {
    let id = node.submit_ok(body).await;
    let v = node.wait_final(&id, TASK_DEADLINE).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paraphrase_hits_and_other_contexts_miss() {
    let sim = Sim::start(&[]).await;
    let node = Node::start(&semantic_cfg(&sim, &sim.base_url(), json!({}))).await;
    assert!(
        !node.stderr().contains("not active yet"),
        "{}",
        node.stderr()
    );
    let prior = [("user", "Hello"), ("assistant", "Hello! How can I help?")];

    let (h, first) = node
        .chat_cached(None, ask(SYSTEM, &prior, QUESTION, json!({})))
        .await;
    assert_eq!(h, "miss");
    let (h, again) = node
        .chat_cached(None, ask(SYSTEM, &prior, PARAPHRASE, json!({})))
        .await;
    assert!(
        h.starts_with("hit; strategy=semantic; score="),
        "a paraphrase hits: {h:?}"
    );
    let score = score_of(&h);
    assert!((THRESHOLD..=1.0).contains(&score), "{h}");
    assert_eq!(
        again["choices"][0]["message"]["content"],
        first["choices"][0]["message"]["content"]
    );
    assert_eq!(chat_calls(&sim).await, 1, "the hit made no chat call");
    // The identical question is found by its key, without an embedding call.
    let (h, _) = node
        .chat_cached(None, ask(SYSTEM, &prior, QUESTION, json!({})))
        .await;
    assert_eq!(h, "hit; strategy=exact; score=1.00");

    // Another question, or the same words in another context: each a miss (and an upstream
    // call).
    let misses: Vec<(&str, Option<&str>, Value)> = vec![
        (
            "another question below the threshold",
            None,
            ask(SYSTEM, &prior, OTHER, json!({})),
        ),
        (
            "another agent",
            Some("main"),
            ask(SYSTEM, &prior, QUESTION, json!({})),
        ),
        (
            "another system prompt",
            None,
            ask("You are a travel agent.", &prior, QUESTION, json!({})),
        ),
        (
            "another prior turn",
            None,
            ask(
                SYSTEM,
                &[("user", "Hi"), ("assistant", "Hello! How can I help?")],
                QUESTION,
                json!({}),
            ),
        ),
        (
            "another temperature",
            None,
            ask(SYSTEM, &prior, QUESTION, json!({"temperature": 0.9})),
        ),
        (
            "tool definitions",
            None,
            ask(
                SYSTEM,
                &prior,
                QUESTION,
                json!({"tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]}),
            ),
        ),
    ];
    let n = misses.len();
    for (why, agent, body) in misses {
        let (h, _) = node.chat_cached(agent, body).await;
        assert_eq!(h, "miss", "{why}");
    }
    assert_eq!(chat_calls(&sim).await, 1 + n);

    // A tool result as the last message (an agent loop) is never served by similarity: the
    // same turn after another tool result misses.
    let tool_turn = |result: &str| {
        json!({"model": "fast", "max_tokens": 40, "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": result}]})
    };
    let (h, _) = node
        .chat_cached(None, tool_turn("the password reset link was sent"))
        .await;
    assert_eq!(h, "miss");
    let (h, _) = node
        .chat_cached(None, tool_turn("the password reset link was sent!"))
        .await;
    assert_eq!(h, "miss", "a near-identical tool result is not a hit");

    let s = stats(&node).await;
    assert_eq!(s["active_strategy"], "semantic", "{s}");
    assert_eq!(
        (
            s["hits_by_strategy"]["semantic"].as_u64(),
            s["hits_by_strategy"]["exact"].as_u64(),
            s["hits"].as_u64(),
        ),
        (Some(1), Some(1), Some(2)),
        "{s}"
    );
    assert_eq!(s["embedding_failures"], 0, "{s}");
    let m = node.metrics().await;
    assert_eq!(
        metric_sum(&m, "openclaw_cache_hits_total{strategy=\"semantic\"}"),
        1.0
    );
    assert!(
        metric_sum(&m, "openclaw_cache_embeddings_total{result=\"ok\"}") >= 7.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_hit_shows_its_score_in_the_view_and_the_audit_line() {
    let sim = Sim::start(&[]).await;
    let node = Node::start(&semantic_cfg(&sim, &sim.base_url(), json!({}))).await;
    let first = run_task(&node, json!({"input": QUESTION, "max_tokens": 40})).await;
    assert_eq!(
        (first["cache_hit"].as_bool(), first["cache_score"].as_f64()),
        (Some(false), None),
        "{first}"
    );
    let second = run_task(&node, json!({"input": PARAPHRASE, "max_tokens": 40})).await;
    assert_eq!(second["cache_hit"], true, "{second}");
    let score = second["cache_score"].as_f64().unwrap();
    assert!((THRESHOLD..=1.0).contains(&score), "{second}");
    assert_eq!(second["output"], first["output"]);
    // Another output cap is another partition.
    let third = run_task(&node, json!({"input": PARAPHRASE, "max_tokens": 41})).await;
    assert_eq!(third["cache_hit"], false, "{third}");

    let path = node.data_dir.join("logs/config-audit.jsonl");
    let end = Instant::now() + Duration::from_secs(20);
    let line = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let hit = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|l| l["cache"] == "cache_hit");
        if let Some(l) = hit {
            break l;
        }
        assert!(Instant::now() < end, "no cache_hit audit line:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(line["task_id"], second["id"], "{line}");
    assert_eq!(line["cache_score"].as_f64(), Some(score), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_entry_misses() {
    let sim = Sim::start(&[]).await;
    let node = Node::start(&semantic_cfg(
        &sim,
        &sim.base_url(),
        json!({"ttl_seconds": 1}),
    ))
    .await;
    let (h, _) = node
        .chat_cached(None, ask(SYSTEM, &[], QUESTION, json!({})))
        .await;
    assert_eq!(h, "miss");
    // Ask the paraphrase until the entry went stale: that answer comes from upstream again.
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let (h, _) = node
            .chat_cached(None, ask(SYSTEM, &[], PARAPHRASE, json!({})))
            .await;
        if h == "miss" {
            break;
        }
        assert!(h.contains("strategy=semantic"), "{h}");
        assert!(Instant::now() < end, "entry never went stale");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let s = stats(&node).await;
    assert!(s["expired"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(
        s["semantic_entries"], 1,
        "the fresh answer is indexed again: {s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_survive_a_restart() {
    let sim = Sim::start(&[]).await;
    let mut node = Node::start(&semantic_cfg(&sim, &sim.base_url(), json!({}))).await;
    let (h, first) = node
        .chat_cached(None, ask(SYSTEM, &[], QUESTION, json!({})))
        .await;
    assert_eq!(h, "miss");
    let st = node.stop();
    assert!(st.success(), "clean exit on SIGTERM: {st}");
    node.restart().await;
    let s = stats(&node).await;
    assert_eq!(
        (s["entries"].as_u64(), s["semantic_entries"].as_u64()),
        (Some(1), Some(1)),
        "{s}"
    );
    let (h, again) = node
        .chat_cached(None, ask(SYSTEM, &[], PARAPHRASE, json!({})))
        .await;
    assert!(h.starts_with("hit; strategy=semantic"), "{h}");
    assert_eq!(
        again["choices"][0]["message"]["content"],
        first["choices"][0]["message"]["content"]
    );
    assert_eq!(chat_calls(&sim).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_size_bound_evicts_from_the_index() {
    let sim = Sim::start(&[]).await;
    // 64 KiB: an entry (answer + a 256-float vector) is ~1.5-3 KiB, so 60 entries overflow it.
    let max_mb = 0.0625;
    let node = Node::start(&semantic_cfg(
        &sim,
        &sim.base_url(),
        json!({"max_size_mb": max_mb}),
    ))
    .await;
    let (h, _) = node
        .chat_cached(None, ask(SYSTEM, &[], QUESTION, json!({})))
        .await;
    assert_eq!(h, "miss");
    let topics = [
        "invoices",
        "mortgages",
        "card limits",
        "branch hours",
        "wire transfers",
        "savings rates",
    ];
    for i in 0..60 {
        let q = format!(
            "Question {i}: tell me about {} number {i} in detail",
            topics[i % topics.len()]
        );
        node.chat_cached(None, ask(SYSTEM, &[], &q, json!({})))
            .await;
    }
    let s = stats(&node).await;
    let max = (max_mb * 1024.0 * 1024.0) as u64;
    assert!(s["bytes"].as_u64().unwrap() <= max, "{s}");
    assert!(s["evictions"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(
        s["semantic_entries"], s["entries"],
        "evicted entries left the index: {s}"
    );
    // The oldest entry was evicted: its paraphrase is a miss now.
    let (h, _) = node
        .chat_cached(None, ask(SYSTEM, &[], PARAPHRASE, json!({})))
        .await;
    assert_eq!(h, "miss", "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedding_failure_is_a_counted_miss() {
    let sim = Sim::start(&[]).await;
    // The embedding model's provider is not there.
    let dead = format!("http://127.0.0.1:{}/v1", common::free_port());
    let node = Node::start(&semantic_cfg(&sim, &dead, json!({}))).await;
    for q in [QUESTION, PARAPHRASE] {
        let (h, body) = node.chat_cached(None, ask(SYSTEM, &[], q, json!({}))).await;
        assert_eq!(h, "miss", "{body}");
        assert!(
            body["choices"][0]["message"]["content"].is_string(),
            "{body}"
        );
    }
    let s = stats(&node).await;
    assert_eq!(
        (
            s["embedding_calls"].as_u64(),
            s["embedding_failures"].as_u64(),
            s["misses"].as_u64()
        ),
        (Some(2), Some(2), Some(2)),
        "{s}"
    );
    // Without a vector the answer is still found by its key.
    let (h, _) = node
        .chat_cached(None, ask(SYSTEM, &[], QUESTION, json!({})))
        .await;
    assert_eq!(h, "hit; strategy=exact; score=1.00");
    let m = node.metrics().await;
    assert_eq!(
        metric_sum(&m, "openclaw_cache_embeddings_total{result=\"failed\"}"),
        2.0
    );
}

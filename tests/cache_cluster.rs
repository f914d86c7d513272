//! The request cache across a real 3-node cluster (issue 11; through the process harness,
//! `openclaw_harness::Cluster`): an answer cached on node 0 is replicated to the live peers,
//! so the same request is an exact hit on node 1 and a paraphrase a semantic hit on node 2
//! (`X-OpenClaw-Cache: hit; strategy=semantic; score=…`), with no second call to the
//! simulator; the same words under another system prompt or another agent still miss; a task
//! answered on one node is a hit for the same task submitted through another. The
//! sender counts what it sent in `openclaw_cache_replication_total`, the receivers what they
//! took. Replication is asynchronous: the test polls each node's `GET /api/cache` (which makes
//! no upstream call) against a deadline.
//!
//! Every node embeds with its own embedded simulator's `emb` model (the same deterministic
//! lexical embeddings everywhere), as a cluster of one embedding model would.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{metric_sum, NodeApi, SimApi, BIN};
use openclaw_harness::{Cluster, ClusterSpec};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The simulator's lexical embeddings score [`PARAPHRASE`] 0.835 against [`QUESTION`]
/// (`tests/semantic_cache.rs`).
const THRESHOLD: f64 = 0.8;
const QUESTION: &str = "How do I reset the password of my account?";
const PARAPHRASE: &str = "How do I reset my account password?";
const SYSTEM: &str = "You are the support desk of a bank.";
/// How long the cluster may take to form, and replication to arrive.
const DEADLINE: Duration = Duration::from_secs(40);

fn ask(system: &str, question: &str) -> Value {
    json!({"model": "fast", "max_tokens": 40, "messages": [
        {"role": "system", "content": system},
        {"role": "user", "content": question}]})
}

async fn submit_retrying(node: &NodeApi, body: Value) -> String {
    let end = Instant::now() + DEADLINE;
    loop {
        let (st, v) = node.submit(body.clone()).await;
        if st == StatusCode::ACCEPTED {
            return v["id"].as_str().unwrap().to_string();
        }
        assert!(
            st == StatusCode::SERVICE_UNAVAILABLE && Instant::now() < end,
            "submit refused: {st} {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn chat_calls(sim: &SimApi) -> usize {
    sim.calls(None)
        .await
        .iter()
        .filter(|c| c["embedding"] != true)
        .count()
}

/// Wait until `node`'s cache holds at least `n` entries (`semantic` of them with a vector).
async fn wait_entries(node: &NodeApi, n: u64, semantic: u64) -> Value {
    let end = Instant::now() + DEADLINE;
    loop {
        let (st, v) = node.get_json("/api/cache").await;
        if st == StatusCode::OK
            && v["entries"].as_u64().unwrap_or(0) >= n
            && v["semantic_entries"].as_u64().unwrap_or(0) >= semantic
        {
            return v;
        }
        assert!(
            Instant::now() < end,
            "{}: the replicated entry did not arrive: {v}",
            node.url
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_cached_on_one_node_is_a_hit_on_the_others() {
    let mut spec = ClusterSpec::new(BIN, 3);
    spec.workers = 2;
    spec.sim_args = Vec::new();
    spec.ready_path = Some("/ready".into());
    spec.extra_config = json!({
        "cluster": {"heartbeat_ms": 300, "node_lease_ms": 2000},
        "cache": {"request_cache": {"enabled": true, "ttl_seconds": 3600, "max_size_mb": 10,
            "hash_strategy": "semantic", "similarity_threshold": THRESHOLD,
            "embedding_model": "emb"}},
        // No base_url: each node's embedded simulator embeds.
        "models": {"emb": {"provider": "sim", "price": {"input": 0.02, "output": 0.0},
            "kind": "embedding", "dimensions": 256}},
        "model_fallback": {"max_retries": 0, "retry_delay_ms": 10},
    });
    let c = Cluster::start(spec)
        .await
        .unwrap_or_else(|e| panic!("the cluster did not start: {e}"));
    c.wait_converged(DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("the cluster did not agree: {e}"));
    let sim = SimApi::at(c.sim_url());
    let nodes: Vec<NodeApi> = c.nodes().iter().map(NodeApi::of).collect();
    // Every node sees the others alive (the sender sends to live peers only).
    let end = Instant::now() + DEADLINE;
    for n in &nodes {
        loop {
            let (_, v) = n.get_json("/api/cluster").await;
            let alive = v["nodes"]
                .as_array()
                .map(|a| a.iter().filter(|n| n["alive"] == true).count())
                .unwrap_or(0);
            if alive == 3 {
                break;
            }
            assert!(Instant::now() < end, "{}: {v}", n.url);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let (h, first) = nodes[0].chat_cached(None, ask(SYSTEM, QUESTION)).await;
    assert_eq!(h, "miss");
    assert_eq!(chat_calls(&sim).await, 1);
    for n in &nodes[1..] {
        wait_entries(n, 1, 1).await;
    }

    // The same request on node 1: found by its key.
    let (h, again) = nodes[1].chat_cached(None, ask(SYSTEM, QUESTION)).await;
    assert_eq!(h, "hit; strategy=exact; score=1.00", "node 1");
    assert_eq!(
        again["choices"][0]["message"]["content"],
        first["choices"][0]["message"]["content"]
    );
    // A paraphrase on node 2: found by the replicated vector.
    let (h, para) = nodes[2].chat_cached(None, ask(SYSTEM, PARAPHRASE)).await;
    assert!(
        h.starts_with("hit; strategy=semantic; score="),
        "node 2, a paraphrase: {h:?}"
    );
    assert_eq!(
        para["choices"][0]["message"]["content"],
        first["choices"][0]["message"]["content"]
    );
    assert_eq!(chat_calls(&sim).await, 1, "the hits made no chat call");

    // The same words in another context still miss on node 2.
    let (h, _) = nodes[2]
        .chat_cached(None, ask("You are a travel agent.", QUESTION))
        .await;
    assert_eq!(h, "miss", "another system prompt");
    let (h, _) = nodes[2]
        .chat_cached(Some("main"), ask(SYSTEM, QUESTION))
        .await;
    assert_eq!(h, "miss", "another agent");
    assert_eq!(chat_calls(&sim).await, 3);

    // A task: wherever it runs, its answer reaches every node, so the same task submitted
    // through another node is a hit wherever that one runs (a task's key is a pure function of
    // its routed model and built prompt, the same on every node).
    let before = chat_calls(&sim).await;
    let task = json!({"input": "Summarise the release notes in one line.", "max_tokens": 40});
    let first = submit_retrying(&nodes[0], task.clone()).await;
    let done = nodes[0].wait_final(&first, DEADLINE).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["cache_hit"], false, "{done}");
    for n in &nodes {
        // Three chats stored before (each on one node, replicated to the two others).
        wait_entries(n, 4, 4).await;
    }
    let again = submit_retrying(&nodes[1], task).await;
    let done2 = nodes[1].wait_final(&again, DEADLINE).await;
    assert_eq!(done2["status"], "succeeded", "{done2}");
    assert_eq!(done2["cache_hit"], true, "{done2}");
    assert_eq!(done2["output"], done["output"]);
    assert_eq!(
        chat_calls(&sim).await,
        before + 1,
        "the second task made no call"
    );

    // Counted on both sides: node 0 sent its entry to both peers; each peer took it.
    let m = nodes[0].metrics().await;
    assert!(
        metric_sum(&m, "openclaw_cache_replication_total{outcome=\"sent\"}") >= 2.0,
        "{m}"
    );
    for n in &nodes[1..] {
        let m = n.metrics().await;
        assert!(
            metric_sum(&m, "openclaw_cache_replication_total{outcome=\"received\"}") >= 1.0,
            "{m}"
        );
        assert_eq!(
            metric_sum(&m, "openclaw_cache_replication_total{outcome=\"refused\"}"),
            0.0
        );
    }
}

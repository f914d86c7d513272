//! `POST /v1/embeddings` on a real node and a real simulator process: vectors of the model's
//! dimensions with usage, audited with `purpose: "embedding"`, budgeted (a call past the token
//! budget is refused with 429 `budget_exhausted` and never reaches the provider), rate-limited
//! (past `requests_per_minute` a call is refused with 429 `rate_limited`), the bounds of a
//! request (an input over the model's `max_input_tokens` → 400 `input_too_long` naming the
//! limit; more than 2048 inputs → 400 `too_many_inputs`), the kinds kept apart (chat with an
//! embedding model and embeddings with a chat model → 400 `wrong_model_kind`), provider
//! failures retried on the same model (never a chat model of the fallback chain) then 502, and
//! the built-in embedding model served by the embedded simulator on a node without keys.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{assert_error, config, Node, Sim};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A config with `emb`, an embedding model of 64 dimensions (inputs of at most 200 tokens),
/// served by `sim`, plus `extra`.
fn emb_config(sim: &Sim, extra: Value) -> Value {
    let mut cfg = config(sim, 1, extra);
    cfg["models"]["emb"] = json!({"provider": "sim", "base_url": sim.base_url(),
        "price": {"input": 0.02, "output": 0.0}, "kind": "embedding", "dimensions": 64,
        "max_input_tokens": 200});
    cfg
}

async fn post(node: &Node, path: &str, body: Value) -> (StatusCode, Value) {
    let r = node
        .http
        .post(format!("{}{path}", node.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let st = r.status();
    (st, r.json().await.unwrap_or(Value::Null))
}

fn cosine(a: &Value, b: &Value) -> f64 {
    let a: Vec<f64> = a
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let b: Vec<f64> = b
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    let n = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (n(&a) * n(&b))
}

/// The audit lines of `node` that satisfy `pred`, polled until `want` of them are there.
async fn audit_lines(node: &Node, want: usize, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let audit = std::fs::read_to_string(node.data_dir.join("logs/config-audit.jsonl"))
            .unwrap_or_default();
        let lines: Vec<Value> = audit
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|v| pred(v))
            .collect();
        if lines.len() >= want {
            return lines;
        }
        assert!(Instant::now() < deadline, "not audited:\n{audit}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_are_served_audited_and_bounded() {
    let sim = Sim::start(&[]).await;
    let node = Node::start(&emb_config(&sim, json!({}))).await;
    let texts = [
        "How do I reset my password?",
        "How can I reset my password?",
        "The weather in Paris is sunny today",
    ];
    let (st, v) = post(
        &node,
        "/v1/embeddings",
        json!({"model": "emb", "input": texts}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "emb");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["index"], i, "{v}");
        assert_eq!(d["object"], "embedding");
        assert_eq!(d["embedding"].as_array().unwrap().len(), 64);
    }
    let near = cosine(&data[0]["embedding"], &data[1]["embedding"]);
    let far = cosine(&data[0]["embedding"], &data[2]["embedding"]);
    assert!(near > 0.6 && far.abs() < 0.25, "near {near}, far {far}");
    let prompt = v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt > 0, "{v}");
    assert_eq!(v["usage"]["total_tokens"].as_u64(), Some(prompt));

    // A string input, base64 encoding: the same vector as floats.
    let (st, b) = post(
        &node,
        "/v1/embeddings",
        json!({"model": "emb", "input": texts[0], "encoding_format": "base64", "dimensions": 64}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert!(b["data"][0]["embedding"].is_string(), "{b}");

    // The simulator saw two embeddings calls.
    let calls = sim.calls(None).await;
    let emb: Vec<&Value> = calls.iter().filter(|c| c["embedding"] == true).collect();
    assert_eq!(emb.len(), 2, "{calls:?}");
    assert_eq!(emb[0]["input_tokens"].as_u64(), Some(prompt));
    assert_eq!(emb[0]["output_tokens"], 0);

    // Audited like chat calls, with the purpose; the model's price applies.
    let lines = audit_lines(&node, 2, |l| l["purpose"] == "embedding").await;
    assert_eq!(lines[0]["model"], "emb");
    assert_eq!(lines[0]["provider"], "sim");
    assert_eq!(lines[0]["tokens"]["input"].as_u64(), Some(prompt));
    assert_eq!(lines[0]["tokens"]["output"], 0);
    assert_eq!(lines[0]["status"], "ok");
    let m = node.metrics().await;
    let counted = m.lines().any(|l| {
        l.starts_with("openclaw_tokens_consumed_total{")
            && l.contains("model=\"emb\"")
            && l.contains("\"input\"")
            && !l.ends_with(" 0")
    });
    assert!(counted, "input tokens of emb counted:\n{m}");

    // Bounds, each refused before any call.
    let before = sim.calls(None).await.len();
    let long = "word ".repeat(300);
    let msg = assert_error(
        "input over max_input_tokens",
        post(
            &node,
            "/v1/embeddings",
            json!({"model": "emb", "input": ["ok", long]}),
        )
        .await,
        400,
        "input_too_long",
    );
    assert!(msg.contains("200") && msg.contains("input[1]"), "{msg}");
    let many: Vec<&str> = vec!["a"; 2049];
    assert_error(
        "too many inputs",
        post(
            &node,
            "/v1/embeddings",
            json!({"model": "emb", "input": many}),
        )
        .await,
        400,
        "too_many_inputs",
    );
    for (what, body, code) in [
        (
            "empty list",
            json!({"model": "emb", "input": []}),
            "invalid_input",
        ),
        (
            "empty string",
            json!({"model": "emb", "input": ""}),
            "invalid_input",
        ),
        (
            "token arrays",
            json!({"model": "emb", "input": [[1, 2]]}),
            "invalid_input",
        ),
        (
            "other dimensions",
            json!({"model": "emb", "input": "a", "dimensions": 32}),
            "invalid_request",
        ),
        (
            "unknown encoding",
            json!({"model": "emb", "input": "a", "encoding_format": "int8"}),
            "invalid_request",
        ),
        (
            "a chat model",
            json!({"model": "fast", "input": "a"}),
            "wrong_model_kind",
        ),
    ] {
        assert_error(what, post(&node, "/v1/embeddings", body).await, 400, code);
    }
    assert_error(
        "unknown model",
        post(
            &node,
            "/v1/embeddings",
            json!({"model": "nope", "input": "a"}),
        )
        .await,
        404,
        "model_not_found",
    );
    assert_error(
        "chat with an embedding model",
        post(
            &node,
            "/v1/chat/completions",
            json!({"model": "emb", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await,
        400,
        "wrong_model_kind",
    );
    let r = node
        .http
        .post(format!("{}/v1/embeddings", node.url))
        .header("x-openclaw-source", "fax")
        .json(&json!({"model": "emb", "input": "a"}))
        .send()
        .await
        .unwrap();
    let st = r.status();
    let msg = assert_error(
        "unknown source",
        (st, r.json().await.unwrap_or(Value::Null)),
        422,
        "unknown_source",
    );
    assert!(msg.contains("api_call"), "lists the known sources: {msg}");
    assert_eq!(sim.calls(None).await.len(), before, "refusals never call");

    // The agent and source headers are accounted like chat's.
    let r = node
        .http
        .post(format!("{}/v1/embeddings", node.url))
        .header("x-openclaw-agent", "main")
        .header("x-openclaw-source", "cron_job")
        .json(&json!({"model": "emb", "input": "accounted to main"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let lines = audit_lines(&node, 1, |l| {
        l["purpose"] == "embedding" && l["agent"] == "main" && l["source"] == "cron_job"
    })
    .await;
    assert_eq!(lines[0]["priority"], "low", "{}", lines[0]);

    // `/v1/models` lists the embedding model too.
    let (_, models) = node.get_json("/v1/models").await;
    assert!(
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "emb"),
        "{models}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_are_budgeted_and_rate_limited() {
    let sim = Sim::start(&[]).await;
    // Budget: 40 tokens a day. A small call fits; one of ~150 tokens does not.
    let node = Node::start(&emb_config(
        &sim,
        json!({"budget": {"enabled": true, "period": "daily", "limits": {"total_tokens": 40}}}),
    ))
    .await;
    let (st, v) = post(
        &node,
        "/v1/embeddings",
        json!({"model": "emb", "input": "hello"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let before = sim.calls(None).await.len();
    let big = "budget ".repeat(150);
    let r = node
        .http
        .post(format!("{}/v1/embeddings", node.url))
        .json(&json!({"model": "emb", "input": big}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "budget_exhausted", "{e}");
    assert_eq!(
        sim.calls(None).await.len(),
        before,
        "refused before the call"
    );
    drop(node);

    // Rate limit: one request a minute for `emb`, waiting at most 200 ms.
    let node = Node::start(&emb_config(
        &sim,
        json!({"rate_limiting": {"max_wait_ms": 200,
                                 "per_model": {"emb": {"requests_per_minute": 1}}}}),
    ))
    .await;
    let (st, v) = post(
        &node,
        "/v1/embeddings",
        json!({"model": "emb", "input": "one"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let before = sim.calls(None).await.len();
    let r = node
        .http
        .post(format!("{}/v1/embeddings", node.url))
        .json(&json!({"model": "emb", "input": "two"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "rate_limited", "{e}");
    assert_eq!(
        sim.calls(None).await.len(),
        before,
        "refused before the call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builtin_embedding_model_works_without_keys() {
    // The built-in models (no `models_mode: replace`), no API keys (the harness scrubs them):
    // `text-embedding-3-small` is served by the embedded simulator.
    let sim = Sim::start(&[]).await;
    let mut cfg = config(&sim, 1, json!({}));
    cfg["models_mode"] = json!("merge");
    let node = Node::start(&cfg).await;
    let (st, v) = post(
        &node,
        "/v1/embeddings",
        json!({"model": "text-embedding-3-small", "input": ["alpha beta", "alpha beta gamma"]}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 256);
    let near = cosine(&v["data"][0]["embedding"], &v["data"][1]["embedding"]);
    assert!(near > 0.6, "{near}");
    let (_, model) = node.get_json("/v1/models/text-embedding-3-small").await;
    assert_eq!(model["owned_by"], "sim", "{model}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_failures_are_retried_then_reported() {
    // The simulator fails every call that carries `[sim:500]`: the gateway retries the model
    // (`max_retries: 1`), never another one, then answers 502; both attempts are audited.
    let sim = Sim::start(&[]).await;
    let node = Node::start(&emb_config(
        &sim,
        json!({"model_fallback": {"max_retries": 1, "retry_delay_ms": 10,
                                  "fallback_chain": ["smart"]}}),
    ))
    .await;
    let (st, v) = post(
        &node,
        "/v1/embeddings",
        json!({"model": "emb", "input": ["fine", "fails [sim:500]"]}),
    )
    .await;
    assert_eq!(st.as_u16(), 502, "{v}");
    assert_eq!(v["error"]["code"], "upstream_error", "{v}");
    let calls = sim.calls(None).await;
    let failed: Vec<&Value> = calls
        .iter()
        .filter(|c| c["embedding"] == true && c["fault"] == "500")
        .collect();
    assert_eq!(failed.len(), 2, "one try and one retry: {calls:?}");
    assert!(
        calls.iter().all(|c| c["model"] != "smart"),
        "no fallback to a chat model: {calls:?}"
    );
    let lines = audit_lines(&node, 2, |l| {
        l["purpose"] == "embedding" && l["status"] == "server_error"
    })
    .await;
    assert_eq!(lines.len(), 2);
}

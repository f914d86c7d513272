//! Gateway policies through a real node and a real simulator process: routing rules with
//! estimated language, fallback along the chain (5xx, hang), the circuit breaker that stops
//! hammering a dead model, and fallback on the OpenAI-compatible endpoint (JSON and stream).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{config, metric_sum, Node, Sim, TASK_DEADLINE};
use serde_json::{json, Value};

fn calls_to(calls: &[Value], model: &str) -> usize {
    calls.iter().filter(|c| c["model"] == model).count()
}

/// A simulator where model `smart` has `fault` (e.g. always 500), and a node with `workers`
/// workers and `extra` config (the fallback chain) in front of it.
async fn smart_failing(fault: Value, workers: usize, extra: Value) -> (Sim, Node) {
    let sim = Sim::start(&[]).await;
    sim.set_faults(json!({"models": {"smart": fault}})).await;
    let node = Node::start(&config(&sim, workers, extra)).await;
    (sim, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_rule_on_estimated_language() {
    let sim = Sim::start(&[]).await;
    let cfg = config(
        &sim,
        2,
        json!({"model_routing": {"default_model": "fast", "rules": [
            {"name": "chinese_content", "condition": {"language": "zh", "task_type": ["writing"]}, "model": "smart"}
        ]}}),
    );
    let node = Node::start(&cfg).await;
    let zh = node
        .submit_ok(json!({"input": "请写一封感谢信给团队", "task_type": "writing"}))
        .await;
    let en = node
        .submit_ok(json!({"input": "write a thank-you note", "task_type": "writing"}))
        .await;
    let zh = node.wait_final(&zh, TASK_DEADLINE).await;
    let en = node.wait_final(&en, TASK_DEADLINE).await;
    assert_eq!(
        (zh["model"].as_str(), zh["route"].as_str()),
        (Some("smart"), Some("rule:chinese_content")),
        "{zh}"
    );
    assert_eq!(
        (en["model"].as_str(), en["route"].as_str()),
        (Some("fast"), Some("default")),
        "{en}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_model_falls_back_along_the_chain() {
    let (sim, node) = smart_failing(json!({"error_rate": 1.0}), 2, json!({"model_fallback": {"fallback_chain": ["fast"], "max_retries": 1, "retry_delay_ms": 10, "timeout_ms": 5000}})).await;
    let id = node
        .submit_ok(json!({"input": "hello", "model": "smart"}))
        .await;
    let v = node.wait_final(&id, TASK_DEADLINE).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["model"], "fast", "{v}");
    assert_eq!(v["route"], "explicit", "{v}");
    assert_eq!(
        v["fallbacks"],
        json!([{"from": "smart", "to": "fast", "reason": "server_error"}]),
        "{v}"
    );
    let calls = sim.calls(Some(&id)).await;
    assert_eq!(
        calls_to(&calls, "smart"),
        2,
        "first try + 1 retry: {calls:?}"
    );
    assert_eq!(calls_to(&calls, "fast"), 1, "{calls:?}");
    let m = node.metrics().await;
    assert!(
        m.contains(r#"openclaw_fallbacks_total{from="smart",reason="server_error",to="fast"} 1"#),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_model_times_out_and_falls_back() {
    let (_sim, node) = smart_failing(json!({"hang_rate": 1.0}), 2, json!({"model_fallback": {"fallback_chain": ["fast"], "max_retries": 0, "timeout_ms": 300}})).await;
    let id = node
        .submit_ok(json!({"input": "hello", "model": "smart"}))
        .await;
    let v = node.wait_final(&id, TASK_DEADLINE).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["fallbacks"][0]["reason"], "timeout", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_stops_hammering_a_dead_model() {
    let (sim, node) = smart_failing(json!({"error_rate": 1.0}), 1, json!({"model_fallback": {"fallback_chain": ["fast"], "max_retries": 0, "timeout_ms": 5000,
                                  "circuit_breaker": {"failure_threshold": 2, "cooldown_ms": 600000}}})).await;
    let mut reasons = Vec::new();
    for i in 0..6 {
        let id = node
            .submit_ok(json!({"input": format!("task {i}"), "model": "smart"}))
            .await;
        let v = node.wait_final(&id, TASK_DEADLINE).await;
        assert_eq!(v["status"], "succeeded", "{v}");
        assert_eq!(v["model"], "fast", "{v}");
        reasons.push(
            v["fallbacks"][0]["reason"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
    }
    assert_eq!(
        reasons,
        [
            "server_error",
            "server_error",
            "circuit_open",
            "circuit_open",
            "circuit_open",
            "circuit_open"
        ]
    );
    let calls = sim.calls(None).await;
    assert_eq!(
        calls_to(&calls, "smart"),
        2,
        "the open breaker sends nothing more: {calls:?}"
    );
    let m = node.metrics().await;
    assert_eq!(
        metric_sum(&m, r#"openclaw_model_breaker_state{model="smart"}"#),
        1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_endpoint_falls_back_before_the_first_byte() {
    let (_sim, node) = smart_failing(json!({"error_rate": 1.0}), 2, json!({"model_fallback": {"fallback_chain": ["fast"], "max_retries": 0, "timeout_ms": 5000}})).await;
    let body = json!({"model": "smart", "messages": [{"role": "user", "content": "hi"}]});
    let r = node
        .http
        .post(format!("{}/v1/chat/completions", node.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-openclaw-model"], "fast");
    assert_eq!(r.headers()["x-openclaw-fallbacks"], "1");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["model"], "fast", "{v}");

    let mut stream_body = body.clone();
    stream_body["stream"] = json!(true);
    let r = node
        .http
        .post(format!("{}/v1/chat/completions", node.url))
        .json(&stream_body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-openclaw-model"], "fast");
    let text = r.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(!text.contains("\"error\""), "{text}");
}

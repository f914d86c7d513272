//! What API clients expect of a real node (issue 13), over real processes:
//!
//! - `GET /v1/models/{id}` answers OpenAI's model object, and 404 `model_not_found` for an
//!   unknown id;
//! - a stream sends the usage chunk (`"choices": []`) only with `stream_options.include_usage`,
//!   and the call is accounted either way;
//! - every rejection is `{"error":{"code","message"}}` JSON with a 4xx: a set of malformed
//!   requests on the API port and on the cluster port (with and without the secret), after
//!   which the node is still healthy;
//! - chat requests are validated like tasks (unknown role 400, unknown source 422 listing the
//!   known ones, for chats and tasks), and a prompt over the model's `context_window` is refused
//!   (chat: 400 `context_length_exceeded`; task: failed with that code);
//! - `POST /v1/messages` answers in Anthropic's shapes, plain and streamed, with Anthropic's
//!   error shape, through the same accounting as chat completions;
//! - honest output: a task held by a rate limiter shows `waiting_reason: "rate_limited"` with
//!   the scope (task view, `queue`, `submit --wait`); views and chat answers name the provider
//!   (`sim`); `cost`/`tokens` show simulated spend apart; `status` of a lone node prints its
//!   own view and exits 0.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use openclaw_harness::{Cluster, ClusterSpec};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn cli_async(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        run_cli(&a)
    })
    .await
    .unwrap()
}

/// The `data:` payloads of an SSE body.
fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.trim().to_string())
        .collect()
}

async fn post_json(node: &NodeApi, path: &str, body: Value) -> (StatusCode, Value) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_retrieve_and_usage_chunk_only_when_asked() {
    let sim = Sim::start(&[]).await;
    let node = Node::start(&config(&sim, 2, json!({}))).await;

    let (st, m) = node.get_json("/v1/models/fast").await;
    assert_eq!(st, StatusCode::OK, "{m}");
    assert_eq!(
        (
            m["id"].as_str(),
            m["object"].as_str(),
            m["owned_by"].as_str()
        ),
        (Some("fast"), Some("model"), Some("sim")),
        "{m}"
    );
    assert!(m["created"].is_i64(), "{m}");
    let (st, e) = node.get_json("/v1/models/gpt-9").await;
    assert_error("unknown model id", (st, e), 404, "model_not_found");

    let url = format!("{}/v1/chat/completions", node.url);
    let msgs = json!([{"role": "user", "content": "Explain token budgets in one paragraph."}]);
    let stream = |extra: Value| {
        let mut body = json!({"model": "fast", "messages": msgs, "stream": true});
        if let Some(o) = extra.as_object() {
            for (k, v) in o {
                body[k] = v.clone();
            }
        }
        node.http.post(&url).json(&body).send()
    };
    let tokens_before = metric_sum(&node.metrics().await, "openclaw_tokens_consumed_total");

    // Not asked: every chunk has a choice, no usage anywhere.
    for extra in [
        json!({}),
        json!({"stream_options": {"include_usage": false}}),
    ] {
        let r = stream(extra.clone()).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["x-openclaw-provider"], "sim");
        let data = sse_data(&r.text().await.unwrap());
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
        for d in &data[..data.len() - 1] {
            let c: Value = serde_json::from_str(d).unwrap();
            assert!(
                c["choices"].as_array().is_some_and(|a| !a.is_empty()),
                "{extra}: a chunk without choices: {d}"
            );
            assert!(c.get("usage").is_none(), "{extra}: usage sent unasked: {d}");
        }
    }
    // Asked: the last chunk before [DONE] is the usage chunk with `choices: []`.
    let r = stream(json!({"stream_options": {"include_usage": true}}))
        .await
        .unwrap();
    let data = sse_data(&r.text().await.unwrap());
    let last: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(last["choices"], json!([]), "{last}");
    assert!(
        last["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{last}"
    );
    let with_usage = data[..data.len() - 2]
        .iter()
        .filter(|d| d.contains("\"usage\""))
        .count();
    assert_eq!(with_usage, 0, "only the last chunk carries usage: {data:?}");

    // All three streams were accounted (tokens counted) whether or not usage was sent.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let calls = node.metrics().await;
        let audit = std::fs::read_to_string(node.data_dir.join("logs/config-audit.jsonl"))
            .unwrap_or_default();
        let accounted = audit
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["tokens"]["output"].as_u64().unwrap_or(0) > 0)
            .count();
        if accounted >= 3 && metric_sum(&calls, "openclaw_tokens_consumed_total") > tokens_before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "streams not accounted: {accounted} audit lines with tokens\n{audit}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every answer to `reqs` is JSON `{"error":{"code","message"}}` with a 4xx.
async fn assert_all_json_4xx(http: &reqwest::Client, reqs: Vec<(String, reqwest::RequestBuilder)>) {
    let _ = http;
    let mut bad = Vec::new();
    for (what, rb) in reqs {
        let r = rb.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let st = r.status();
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = r.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let code_ok = v["error"]["code"].as_str().is_some_and(|c| !c.is_empty());
        let msg_ok = v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty());
        if !st.is_client_error() || !ct.starts_with("application/json") || !code_ok || !msg_ok {
            bad.push(format!("{what}: {st} {ct} {body}"));
        }
    }
    assert!(
        bad.is_empty(),
        "answers without the JSON error shape:\n{}",
        bad.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejection_is_json_on_the_api_and_cluster_ports() {
    let secret = "api-surface-secret";
    let mut spec = ClusterSpec::new(BIN, 1);
    spec.workers = 2;
    spec.sim_args = Vec::new();
    spec.secret = Some(secret.into());
    spec.ready_path = Some("/ready".into());
    let c = Cluster::start(spec)
        .await
        .unwrap_or_else(|e| panic!("the one-node cluster did not start: {e}"));
    let n = c.node(0);
    let api = n.http_url();
    let cluster = format!("http://{}", n.cluster_addr().unwrap());
    let http = client();
    let get = |p: &str| (format!("GET {p}"), http.get(format!("{api}{p}")));
    let post = |p: &str, ct: &str, body: &'static str| {
        (
            format!("POST {p} [{ct}] {body}"),
            http.post(format!("{api}{p}"))
                .header("content-type", ct)
                .body(body),
        )
    };
    let mut reqs = vec![
        get("/api/tasks/%ff%fe"),
        get("/api/tasks/%ff%fe?wait=1"),
        get("/api/tasks/x?wait=abc"),
        get("/api/tasks/x?wait=-1"),
        get("/api/tasks/x?wait=1&bogus=2"),
        get("/api/tasks/x?wait=%ff"),
        get("/api/tasks/does-not-exist"),
        get("/v1/models/%ff%fe"),
        get("/v1/models/nope"),
        get("/no/such/route"),
        get("/api/tasks/a/b/c"),
        (
            "DELETE /api/tasks/%ff".into(),
            http.delete(format!("{api}/api/tasks/%ff")),
        ),
        (
            "PUT /api/tasks".into(),
            http.put(format!("{api}/api/tasks")),
        ),
        (
            "PATCH /v1/models".into(),
            http.patch(format!("{api}/v1/models")),
        ),
        post("/api/tasks", "application/json", "{not json"),
        post("/api/tasks", "application/json", ""),
        post("/api/tasks", "application/json", "[]"),
        post("/api/tasks", "application/json", r#"{"input": 3}"#),
        post(
            "/api/tasks",
            "application/json",
            r#"{"input":"x","prio":"high"}"#,
        ),
        post("/api/tasks", "text/plain", r#"{"input":"x"}"#),
        post(
            "/api/tasks",
            "application/json",
            r#"{"input":"x","source":"fax"}"#,
        ),
        post("/v1/chat/completions", "application/json", "{"),
        post(
            "/v1/chat/completions",
            "application/x-www-form-urlencoded",
            "a=b",
        ),
        post(
            "/v1/chat/completions",
            "application/json",
            r#"{"model":"fast"}"#,
        ),
        post(
            "/v1/chat/completions",
            "application/json",
            r#"{"model":"fast","messages":[{"role":"robot","content":"hi"}]}"#,
        ),
        post("/v1/messages", "application/json", "{"),
        post("/v1/messages", "text/plain", "hi"),
        post("/v1/messages", "application/json", r#"{"model":"fast"}"#),
        post("/api/cluster/leave", "application/json", "{bad"),
    ];
    // Generated: malformed path segments on every route with a parameter, malformed wait
    // values, and malformed bodies x content types on every JSON route.
    let segments = [
        "%ff%fe",
        "%c3%28",
        "%80",
        "%ed%a0%80",
        "%f8%88%80%80%80",
        "%00",
        "a%2fb",
        "%",
    ];
    for seg in segments {
        for route in ["/api/tasks/", "/v1/models/"] {
            reqs.push(get(&format!("{route}{seg}")));
        }
        reqs.push((
            format!("DELETE /api/tasks/{seg}"),
            http.delete(format!("{api}/api/tasks/{seg}")),
        ));
    }
    for q in [
        "wait=abc",
        "wait=-1",
        "wait=NaN",
        "wait=inf",
        "wait=1e400",
        "wait",
        "=1",
        "wait=%ff",
        "wait=1&wait=2",
        "wait=1&x=2",
        "x=1",
    ] {
        reqs.push(get(&format!("/api/tasks/x?{q}")));
    }
    let bodies: [&'static str; 9] = [
        "{",
        "",
        "[]",
        "null",
        "1",
        "\"x\"",
        "{\"input\": 3}",
        "{\"model\": 1}",
        "\u{feff}{}",
    ];
    for route in ["/api/tasks", "/v1/chat/completions", "/v1/messages"] {
        for body in bodies {
            for ct in ["application/json", "text/plain"] {
                reqs.push(post(route, ct, body));
            }
        }
        reqs.push((
            format!("POST {route} without a content type"),
            http.post(format!("{api}{route}")).body("{}"),
        ));
    }
    // The cluster port: without the secret, with a wrong one, with the secret and a bad body,
    // unknown routes.
    for route in [
        "/raft/append",
        "/raft/vote",
        "/raft/snapshot",
        "/cluster/write",
        "/cluster/join",
        "/cluster/leave",
        "/cluster/cache",
    ] {
        for (who, header) in [
            ("no secret", None),
            ("wrong secret", Some("nope")),
            ("secret", Some(secret)),
        ] {
            for body in [&b""[..], &b"\xff\xff\xff\xff"[..], &b"{}"[..]] {
                let mut rb = http.post(format!("{cluster}{route}")).body(body.to_vec());
                if let Some(h) = header {
                    rb = rb.header("x-openclaw-cluster-secret", h);
                }
                reqs.push((format!("cluster port {route}, {who}, body {body:?}"), rb));
            }
        }
    }
    for (what, rb) in [
        (
            "no secret",
            http.post(format!("{cluster}/cluster/write")).body("x"),
        ),
        (
            "wrong secret",
            http.post(format!("{cluster}/raft/vote"))
                .header("x-openclaw-cluster-secret", "nope")
                .body("x"),
        ),
        (
            "undecodable body",
            http.post(format!("{cluster}/raft/append"))
                .header("x-openclaw-cluster-secret", secret)
                .body(vec![0xffu8; 16]),
        ),
        (
            "unknown route",
            http.get(format!("{cluster}/no/such/route"))
                .header("x-openclaw-cluster-secret", secret),
        ),
        ("wrong method", http.get(format!("{cluster}/raft/vote"))),
        ("bad path", http.get(format!("{cluster}/%ff%fe"))),
    ] {
        reqs.push((format!("cluster port: {what}"), rb));
    }
    let count = reqs.len();
    assert_all_json_4xx(&http, reqs).await;
    eprintln!("{count} malformed requests, every answer JSON with an error code");

    let r = http.get(format!("{api}/ready")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the node is still healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chats_and_tasks_are_validated_and_prompts_must_fit_the_window() {
    let sim = Sim::start(&[]).await;
    // `smart` has a small window: a long prompt does not fit.
    let mut cfg = config(&sim, 2, json!({}));
    cfg["models"]["smart"]["context_window"] = json!(64);
    let node = Node::start(&cfg).await;

    let chat = |model: &str, role: &str, content: String| json!({"model": model, "messages": [{"role": role, "content": content}]});
    let msg = assert_error(
        "unknown role",
        post_json(
            &node,
            "/v1/chat/completions",
            chat("fast", "robot", "hi".into()),
        )
        .await,
        400,
        "invalid_role",
    );
    assert!(msg.contains("robot") && msg.contains("assistant"), "{msg}");

    let chat_from = |source: &'static str| {
        node.http
            .post(format!("{}/v1/chat/completions", node.url))
            .header("x-openclaw-source", source)
            .json(&chat("fast", "user", "hi".into()))
            .send()
    };
    let r = chat_from("fax").await.unwrap();
    let st = r.status();
    let msg = assert_error(
        "unknown chat source",
        (st, r.json().await.unwrap()),
        422,
        "unknown_source",
    );
    assert!(msg.contains("fax") && msg.contains("cron_job"), "{msg}");
    let r = chat_from("cron_job").await.unwrap();
    assert_eq!(r.status(), 200, "a known source is accepted");
    let msg = assert_error(
        "unknown task source",
        node.submit(json!({"input": "hi", "source": "fax"})).await,
        422,
        "unknown_source",
    );
    assert!(msg.contains("feishu_direct_message"), "{msg}");

    let long = "please summarise this sentence about budgets and windows ".repeat(20);
    let msg = assert_error(
        "prompt over the window",
        post_json(
            &node,
            "/v1/chat/completions",
            chat("smart", "user", long.clone()),
        )
        .await,
        400,
        "context_length_exceeded",
    );
    assert!(msg.contains("64"), "{msg}");
    let (st, _) = post_json(
        &node,
        "/v1/chat/completions",
        chat("fast", "user", long.clone()),
    )
    .await;
    assert_eq!(st, 200, "the same prompt fits the default window");
    let id = node
        .submit_ok(json!({"input": long, "model": "smart"}))
        .await;
    let v = node.wait_final(&id, TASK_DEADLINE).await;
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "context_length_exceeded", "{v}");
    let sent: Vec<Value> = sim.calls(Some(&id)).await;
    assert!(
        sent.is_empty(),
        "the refused prompt was never sent: {sent:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_messages_plain_streamed_and_errors() {
    let sim = Sim::start(&[]).await;
    let node = Node::start(&config(&sim, 2, json!({}))).await;
    let url = format!("{}/v1/messages", node.url);
    let body = json!({
        "model": "fast",
        "max_tokens": 200,
        "system": [{"type": "text", "text": "You are terse."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Explain budgets."}]}]
    });
    let r = node.http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-openclaw-provider"], "sim");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "message", "{v}");
    assert_eq!(v["role"], "assistant", "{v}");
    assert!(v["id"].as_str().unwrap().starts_with("msg_"), "{v}");
    assert_eq!(v["content"][0]["type"], "text", "{v}");
    let text = v["content"][0]["text"].as_str().unwrap().to_string();
    assert!(!text.is_empty(), "{v}");
    let stop = v["stop_reason"].as_str().unwrap().to_string();
    assert!(["end_turn", "max_tokens"].contains(&stop.as_str()), "{v}");
    assert!(v["usage"]["input_tokens"].as_u64().unwrap() > 0, "{v}");
    assert!(v["usage"]["output_tokens"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["provider"], "sim", "{v}");

    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    let r = node.http.post(&url).json(&sbody).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let raw = r.text().await.unwrap();
    let names: Vec<&str> = raw
        .lines()
        .filter_map(|l| l.strip_prefix("event:"))
        .map(str::trim)
        .collect();
    let mut dedup = names.clone();
    dedup.dedup();
    assert_eq!(
        dedup,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ],
        "{raw}"
    );
    let mut streamed = String::new();
    let mut output_tokens = 0;
    let mut streamed_stop = String::new();
    for d in sse_data(&raw) {
        let ev: Value = serde_json::from_str(&d).unwrap();
        if ev["type"] == "content_block_delta" {
            streamed.push_str(ev["delta"]["text"].as_str().unwrap());
        }
        if ev["type"] == "message_delta" {
            output_tokens = ev["usage"]["output_tokens"].as_u64().unwrap();
            streamed_stop = ev["delta"]["stop_reason"].as_str().unwrap().to_string();
        }
    }
    assert_eq!(streamed, text, "stream and JSON answers differ");
    assert!(output_tokens > 0, "{raw}");
    assert_eq!(streamed_stop, stop, "{raw}");

    let mut bad = body.clone();
    bad["model"] = json!("claude-9");
    let r = node.http.post(&url).json(&bad).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["error"]["type"], "not_found_error", "{e}");
    assert_eq!(e["error"]["code"], "model_not_found", "{e}");
    let r = node
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "invalid_request_error", "{e}");

    // Both answered calls went to the simulator and are in the audit log like chat calls.
    let answered = sim
        .calls(None)
        .await
        .iter()
        .filter(|c| c["status"] == 200)
        .count();
    assert_eq!(answered, 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let audit = std::fs::read_to_string(node.data_dir.join("logs/config-audit.jsonl"))
            .unwrap_or_default();
        let lines = audit
            .lines()
            .filter(|l| l.contains("\"request_id\":\"msg-"))
            .count();
        if lines >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "messages calls not audited:\n{audit}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_messages_are_cached_and_rate_limited_like_chats() {
    let sim = Sim::start(&[]).await;
    let cfg = config(
        &sim,
        2,
        json!({"cache": {"request_cache": {"enabled": true}},
               "rate_limiting": {"window_seconds": 60, "per_model": {"fast": {"requests_per_minute": 1}}},
               "model_fallback": {"timeout_ms": 1000}}),
    );
    let node = Node::start(&cfg).await;
    let url = format!("{}/v1/messages", node.url);
    let ask = |text: &str, stream: bool| {
        json!({"model": "fast", "max_tokens": 50, "stream": stream,
               "messages": [{"role": "user", "content": text}]})
    };
    let r = node
        .http
        .post(&url)
        .json(&ask("what is a lease?", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-openclaw-cache"], "miss");
    let first: Value = r.json().await.unwrap();
    // The same question again: from the cache, as JSON and as Anthropic stream events.
    let r = node
        .http
        .post(&url)
        .json(&ask("what is a lease?", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-openclaw-cache"], "hit");
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["content"], first["content"]);
    let r = node
        .http
        .post(&url)
        .json(&ask("what is a lease?", true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-openclaw-cache"], "hit");
    let raw = r.text().await.unwrap();
    let streamed: String = sse_data(&raw)
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|ev| ev["type"] == "content_block_delta")
        .map(|ev| ev["delta"]["text"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        Some(streamed.as_str()),
        first["content"][0]["text"].as_str(),
        "{raw}"
    );
    assert!(raw.contains("event: message_stop"), "{raw}");
    // A new question: the model's one request of this minute is spent → 429, Anthropic's shape.
    let r = node
        .http
        .post(&url)
        .json(&ask("what is a quorum?", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "rate_limit_error", "{e}");
    assert_eq!(e["error"]["code"], "rate_limited", "{e}");
    assert_eq!(
        sim.calls(None).await.len(),
        1,
        "hits and refusals never reached the provider"
    );
    // Audited like chat calls: one provider call and two cache hits.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let audit = std::fs::read_to_string(node.data_dir.join("logs/config-audit.jsonl"))
            .unwrap_or_default();
        let lines: Vec<Value> = audit
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let hits = lines.iter().filter(|v| v["cache"] == "cache_hit").count();
        let calls = lines.iter().filter(|v| v["provider"] == "sim").count();
        if hits >= 2 && calls >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "not audited:\n{audit}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_output_rate_limited_provider_cost_and_status() {
    let sim = Sim::start(&[]).await;
    let cfg = config(
        &sim,
        2,
        json!({"rate_limiting": {"window_seconds": 60, "max_wait_ms": 60000,
                                 "per_model": {"fast": {"requests_per_minute": 1}}},
               "model_routing": {"default_model": "fast"}}),
    );
    let node = Node::start(&cfg).await;
    let first = node.submit_ok(json!({"input": "first task"})).await;
    let v = node.wait_final(&first, TASK_DEADLINE).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["provider"], "sim", "the simulator is named: {v}");

    // The second waits for the window: running, but held by the rate limiter of `fast`.
    let second = node.submit_ok(json!({"input": "second task"})).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let v = loop {
        let v = node.task(&second).await;
        if v["waiting_reason"] == "rate_limited" {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "never shown as rate limited: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(v["status"], "running", "{v}");
    assert_eq!(v["waiting_scope"], "fast", "{v}");
    assert_eq!(v["model"], "fast", "{v}");

    let (code, out, err) = cli_async(vec!["queue".into(), "--node".into(), node.url.clone()]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rate_limited (fast)"), "{out}");

    let (code, out, err) = cli_async(vec![
        "submit".into(),
        "--node".into(),
        node.url.clone(),
        "--wait".into(),
        "2".into(),
        "a third task".into(),
    ])
    .await;
    assert_eq!(code, 2, "still running after the wait: {out}\n{err}");
    assert!(
        err.contains("waiting for the rate limit of `fast`"),
        "submit --wait says why: {err}"
    );
    assert!(out.contains("rate_limited"), "{out}");

    // Chat answers name the provider too.
    let (st, v) = post_json(
        &node,
        "/v1/chat/completions",
        json!({"model": "smart", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["provider"], "sim", "{v}");

    // `status` on a node running alone: its own view, exit 0.
    let (code, out, err) =
        cli_async(vec!["status".into(), "--node".into(), node.url.clone()]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("runs alone"), "{out}");
    assert!(out.contains("Rate limits") && out.contains("fast"), "{out}");
    assert!(out.contains("Budgets"), "{out}");
    let (code, out, _) = cli_async(vec![
        "status".into(),
        "--node".into(),
        node.url.clone(),
        "--json".into(),
    ])
    .await;
    assert_eq!(code, 0);
    let st: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["clustered"], false, "{st}");
    assert!(st["queue"]["running"].as_u64().unwrap() >= 1, "{st}");

    // `cost` and `tokens` say the spend was simulated, with enough decimals to see it.
    let data = node.data_dir.display().to_string();
    let cfg_path = node.data_dir.join("openclaw.json").display().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let out = loop {
        let (code, out, err) = cli_async(vec![
            "cost".into(),
            "--data-dir".into(),
            data.clone(),
            "--config".into(),
            cfg_path.clone(),
        ])
        .await;
        assert_eq!(code, 0, "{err}");
        if out.contains("built-in simulator") {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "cost never mentions simulated spend:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(out.contains("real provider spend: $0.00"), "{out}");
    assert!(
        !out.contains("simulated: $0.00 "),
        "small spend keeps its digits: {out}"
    );
    let (code, out, _) = cli_async(vec!["tokens".into(), "--data-dir".into(), data]).await;
    assert_eq!(code, 0);
    assert!(out.contains("of which simulated"), "{out}");

    for id in [&second] {
        let _ = node.cancel(id).await;
    }
}

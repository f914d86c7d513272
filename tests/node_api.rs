//! The task API of a real node over real HTTP, with the simulator as a separate process:
//! lifecycle, idempotency, documented errors, bad configs at start-up, cancel, callbacks,
//! auth (and that the token never reaches the log), metrics and the audit log read by the
//! chapter's own script.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{assert_error, config, metric_sum, Node, Sim, TASK_DEADLINE};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_lifecycle_matches_the_simulator_call() {
    let sim = Sim::start(&[]).await;
    let node = Node::start(&config(&sim, 2, json!({}))).await;

    let (st, acc) = node
        .submit(json!({"input": "summarise the lifecycle test"}))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{acc}");
    assert_eq!(acc["status"], "queued", "{acc}");
    let id = acc["id"].as_str().expect("id").to_string();

    let v = node.wait_final(&id, TASK_DEADLINE).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["id"], id.as_str());
    assert!(!v["output"].as_str().unwrap_or("").is_empty(), "{v}");
    let tin = v["tokens"]["input"].as_u64().unwrap();
    let tout = v["tokens"]["output"].as_u64().unwrap();
    assert!(tin > 0 && tout > 0, "{v}");
    assert!(v["cost_usd"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["attempts"], 1, "{v}");
    assert_eq!(v["model"], "fast", "{v}");
    assert_eq!(v["agent"], "main", "{v}");
    assert_eq!(v["priority"], "normal", "{v}");

    let calls = sim.calls(Some(&id)).await;
    assert_eq!(calls.len(), 1, "one simulator call: {calls:?}");
    assert_eq!(calls[0]["status"], 200);
    assert_eq!(calls[0]["input_tokens"].as_u64(), Some(tin), "{calls:?}");
    assert_eq!(calls[0]["output_tokens"].as_u64(), Some(tout), "{calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_returns_the_same_task() {
    let sim = Sim::start(&[]).await;
    let node = Node::start(&config(&sim, 2, json!({}))).await;
    let body = json!({"input": "only once please", "idempotency_key": "itest-key-1"});
    let (st1, a) = node.submit(body.clone()).await;
    let (st2, b) = node.submit(body).await;
    assert_eq!(
        (st1, st2),
        (StatusCode::ACCEPTED, StatusCode::ACCEPTED),
        "{a} {b}"
    );
    assert_eq!(a["id"], b["id"], "same id: {a} {b}");
    assert_eq!(a["duplicate"], false, "{a}");
    assert_eq!(b["duplicate"], true, "{b}");
    let id = a["id"].as_str().unwrap();
    let v = node.wait_final(id, TASK_DEADLINE).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    // A third submission after it finished is still the same task.
    let (_, c) = node
        .submit(json!({"input": "only once please", "idempotency_key": "itest-key-1"}))
        .await;
    assert_eq!(c["id"], a["id"], "{c}");
    assert_eq!(
        sim.calls(Some(id)).await.len(),
        1,
        "the simulator saw one call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_documented_errors() {
    let sim = Sim::start(&[]).await;
    let node = Node::start(&config(
        &sim,
        2,
        json!({"server": {"workers": 2, "max_body_mb": 1}}),
    ))
    .await;
    let tasks = format!("{}/api/tasks", node.url);
    let raw = |body: String, ct: Option<&'static str>| {
        let mut rb = node.http.post(&tasks).body(body);
        if let Some(ct) = ct {
            rb = rb.header("content-type", ct);
        }
        async move {
            let r = rb.send().await.expect("POST");
            let st = r.status();
            (st, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    let msg = assert_error(
        "unknown field",
        node.submit(json!({"input": "x", "priorty": "high"})).await,
        422,
        "invalid_field",
    );
    assert!(msg.contains("priorty"), "message names the field: {msg}");
    assert_error(
        "broken JSON",
        raw("{\"input\": ".into(), Some("application/json")).await,
        400,
        "invalid_json",
    );
    let (st, v) = raw("{\"input\": \"x\"}".into(), None).await;
    assert_eq!(st.as_u16(), 415, "no content type: {v}");
    assert!(v["error"]["code"].is_string(), "415 is JSON: {v}");
    assert_error(
        "empty input",
        node.submit(json!({"input": "   "})).await,
        422,
        "invalid_input",
    );
    assert_error(
        "unknown agent",
        node.submit(json!({"input": "x", "agent": "ghost"})).await,
        422,
        "unknown_agent",
    );
    assert_error(
        "unknown model",
        node.submit(json!({"input": "x", "model": "gpt-9"})).await,
        422,
        "unknown_model",
    );
    assert_error(
        "unknown id",
        node.get_task("no-such-task", 0).await,
        404,
        "task_not_found",
    );
    assert_error(
        "unknown route",
        node.get_json("/api/nothing-here").await,
        404,
        "not_found",
    );

    let id = node.submit_ok(json!({"input": "finish me"})).await;
    let v = node.wait_final(&id, TASK_DEADLINE).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_error(
        "cancel finished",
        node.cancel(&id).await,
        409,
        "already_finished",
    );

    // 2 MB against a 1 MB limit. The body is not read to the end, so the answer must close
    // the connection, or this client's next request (on the pooled connection) fails.
    let big = json!({"input": "a".repeat(2 * 1024 * 1024)}).to_string();
    let r = node
        .http
        .post(&tasks)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .expect("POST 2 MB");
    let connection = r
        .headers()
        .get("connection")
        .map(|v| v.to_str().unwrap().to_ascii_lowercase());
    let st = r.status();
    assert_error(
        "body too large",
        (st, r.json().await.unwrap_or(Value::Null)),
        413,
        "body_too_large",
    );
    assert_eq!(
        connection.as_deref(),
        Some("close"),
        "413 closes the connection"
    );
    // The node still works afterwards.
    let id = node.submit_ok(json!({"input": "still alive"})).await;
    assert_eq!(
        node.wait_final(&id, TASK_DEADLINE).await["status"],
        "succeeded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_503_with_retry_after() {
    let sim = Sim::start(&[]).await;
    let node = Node::start(&config(
        &sim,
        1,
        json!({"server": {"workers": 1, "queue_max": 2}}),
    ))
    .await;
    let mut seen = None;
    for i in 0..12 {
        let r = node
            .http
            .post(format!("{}/api/tasks", node.url))
            .json(&json!({"input": format!("pile up {i} [sim:slow:5000]")}))
            .send()
            .await
            .expect("POST");
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            let retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            seen = Some((
                i,
                retry_after,
                r.json::<Value>().await.unwrap_or(Value::Null),
            ));
            break;
        }
        assert_eq!(r.status(), StatusCode::ACCEPTED, "submission {i}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (i, retry_after, body) = seen.expect("no 503 after 12 submissions to a queue of 2");
    assert!(
        i >= 2,
        "the queue holds 2 (plus 1 running) before refusing, refused at {i}"
    );
    let ra: u64 = retry_after
        .expect("Retry-After header")
        .parse()
        .expect("Retry-After is seconds");
    assert!(ra >= 1);
    assert_eq!(body["error"]["code"], "queue_full", "{body}");
}

/// Start a node on `config_text` and expect it to exit non-zero; returns its stderr.
fn start_fails(config_text: Option<&str>, extra_args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("openclaw.json");
    if let Some(text) = config_text {
        std::fs::write(&cfg_path, text).unwrap();
    }
    let mut cmd = Command::new(common::BIN);
    common::scrub_env(&mut cmd);
    cmd.arg("--data-dir")
        .arg(dir.path())
        .arg("--config")
        .arg(&cfg_path)
        .args(extra_args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if !extra_args.contains(&"--http") {
        cmd.arg("--http")
            .arg(format!("127.0.0.1:{}", common::free_port()));
    }
    let mut child = cmd.spawn().unwrap();
    let Some(st) = common::wait_exit(&mut child, Duration::from_secs(20)) else {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "node with config {config_text:?} did not exit; stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !st.success(),
        "config {config_text:?} was accepted; stderr:\n{stderr}"
    );
    stderr
}

#[test]
fn bad_config_exits_nonzero_naming_the_json_path() {
    let e = start_fails(Some(r#"{"server":{"workerz":1}}"#), &[], &[]);
    assert!(
        e.contains("server") && e.contains("workerz"),
        "unknown key: {e}"
    );

    let e = start_fails(Some(r#"{"server":{"workers":"many"}}"#), &[], &[]);
    assert!(e.contains("server.workers"), "wrong type: {e}");

    let e = start_fails(
        Some(r#"{"model_routing":{"default_model":"gpt-9"}}"#),
        &[],
        &[],
    );
    assert!(
        e.contains("model_routing.default_model") && e.contains("gpt-9"),
        "unknown default model: {e}"
    );

    let e = start_fails(
        Some("{\n  \"server\": {\n    \"workers\": 2,,\n  }\n}\n"),
        &[],
        &[],
    );
    assert!(
        e.contains("line 3") && e.contains("column"),
        "syntax error: {e}"
    );

    let e = start_fails(None, &[], &[]);
    assert!(e.contains("openclaw.json"), "missing --config file: {e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_queued_and_running_tasks() {
    let sim = Sim::start(&[]).await;
    let node = Node::start(&config(&sim, 1, json!({}))).await;
    let running = node
        .submit_ok(json!({"input": "long one [sim:slow:20000]"}))
        .await;
    node.wait_status(&running, "running", TASK_DEADLINE).await;
    let queued = node.submit_ok(json!({"input": "never runs"})).await;
    assert_eq!(node.task(&queued).await["status"], "queued");

    let (st, v) = node.cancel(&queued).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "cancelled", "{v}");

    let (st, v) = node.cancel(&running).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let v = node.wait_final(&running, TASK_DEADLINE).await;
    assert_eq!(v["status"], "cancelled", "{v}");

    // The worker is free again; a later task runs, the cancelled one never does.
    let after = node.submit_ok(json!({"input": "after the cancels"})).await;
    assert_eq!(
        node.wait_final(&after, TASK_DEADLINE).await["status"],
        "succeeded"
    );
    assert_eq!(node.task(&queued).await["status"], "cancelled");
    assert!(
        sim.calls(Some(&queued)).await.is_empty(),
        "cancelled queued task reached the sim"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_are_delivered_or_parked() {
    use axum::routing::post;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Value>(8);
    let app = axum::Router::new().route(
        "/cb",
        post(move |axum::Json(v): axum::Json<Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(v).await;
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cb_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    // A port nobody listens on.
    let closed = common::free_port();

    let sim = Sim::start(&[]).await;
    let node = Node::start(&config(
        &sim,
        2,
        json!({"server": {"workers": 2, "callback_max_attempts": 2, "callback_initial_delay_ms": 50}}),
    ))
    .await;

    let id = node
        .submit_ok(json!({"input": "call me back", "callback_url": format!("http://{cb_addr}/cb")}))
        .await;
    let got = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("no callback within 30 s")
        .expect("callback channel closed");
    assert_eq!(got["id"], id.as_str(), "{got}");
    assert_eq!(got["status"], "succeeded", "{got}");
    assert!(got["tokens"]["output"].as_u64().unwrap_or(0) > 0, "{got}");

    let lost = node
        .submit_ok(json!({"input": "nobody listens", "callback_url": format!("http://127.0.0.1:{closed}/cb")}))
        .await;
    assert_eq!(
        node.wait_final(&lost, TASK_DEADLINE).await["status"],
        "succeeded"
    );
    let end = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (st, q) = node.get_json("/api/queue").await;
        assert_eq!(st, StatusCode::OK, "{q}");
        let failed = q["failed_deliveries"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(d) = failed.iter().find(|d| d["task_id"] == lost.as_str()) {
            assert_eq!(d["attempts"], 2, "{d}");
            assert!(d["callback_url"]
                .as_str()
                .unwrap()
                .contains(&closed.to_string()));
            assert!(
                !failed.iter().any(|d| d["task_id"] == id.as_str()),
                "delivered one parked: {q}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "no failed delivery for {lost} in /api/queue: {q}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = node.metrics().await;
    for outcome in ["delivered", "retried", "failed"] {
        let line = format!("openclaw_callback_deliveries_total{{outcome=\"{outcome}\"}}");
        assert!(
            m.contains(&line),
            "/metrics lacks {line} (the documented outcome labels):\n{m}"
        );
    }
}

const SENTINEL: &str = "secret-sentinel-123";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_is_required_and_never_logged() {
    let sim = Sim::start(&[]).await;
    let node = Node::start_with_env(
        &config(&sim, 2, json!({})),
        &[("OPENCLAW_API_TOKEN", SENTINEL), ("RUST_LOG", "debug")],
    )
    .await;
    let tasks = format!("{}/api/tasks", node.url);
    let body = json!({"input": "authorised work"});

    let r = node.http.post(&tasks).json(&body).send().await.unwrap();
    let st = r.status();
    assert_error(
        "no token",
        (st, r.json().await.unwrap_or(Value::Null)),
        401,
        "unauthorized",
    );
    let r = node
        .http
        .post(&tasks)
        .bearer_auth("wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    let st = r.status();
    assert_error(
        "wrong token",
        (st, r.json().await.unwrap_or(Value::Null)),
        401,
        "unauthorized",
    );
    let r = node
        .http
        .get(format!("{}/v1/models", node.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "/v1 needs the token too"
    );

    let r = node
        .http
        .get(format!("{}/health", node.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "/health is open");

    let r = node
        .http
        .post(&tasks)
        .bearer_auth(SENTINEL)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut node = node;
    node.set_token(SENTINEL);
    assert_eq!(
        node.wait_final(&id, TASK_DEADLINE).await["status"],
        "succeeded"
    );

    let st = node.stop();
    assert!(st.success(), "SIGTERM exit: {st}");
    let log = node.stderr();
    assert!(
        log.contains("openclaw-node ready"),
        "the log was captured: {log}"
    );
    assert!(
        !log.contains(SENTINEL),
        "the API token appears in the node's log"
    );
}

#[test]
fn public_listen_without_token_is_refused() {
    let port = common::free_port();
    let addr = format!("0.0.0.0:{port}");
    let e = start_fails(
        Some(r#"{"model_routing":{"default_model":"gpt-4o-mini"}}"#),
        &["--http", &addr],
        &[],
    );
    assert!(e.contains("OPENCLAW_API_TOKEN"), "names the variable: {e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_model_errors() {
    let sim = Sim::start(&[]).await;
    let node = Node::start(&config(
        &sim,
        2,
        json!({"model_fallback": {"max_retries": 0}}),
    ))
    .await;
    let id = node.submit_ok(json!({"input": "count me"})).await;
    assert_eq!(
        node.wait_final(&id, TASK_DEADLINE).await["status"],
        "succeeded"
    );

    let before = node.metrics().await;
    for name in [
        "openclaw_requests_total",
        "openclaw_request_duration_seconds",
        "openclaw_tokens_consumed_total",
        "openclaw_active_agents",
        "openclaw_queue_depth",
        "openclaw_cache_hit_ratio",
        "openclaw_model_errors_total",
        "openclaw_memory_files_total",
    ] {
        assert!(
            before.lines().any(|l| l.starts_with(name))
                || before.contains(&format!("# TYPE {name} ")),
            "/metrics lacks {name}:\n{before}"
        );
    }
    assert!(
        metric_sum(&before, "openclaw_tokens_consumed_total") > 0.0,
        "{before}"
    );
    let errors_before = metric_sum(&before, "openclaw_model_errors_total");
    // The allocator's own figures (jemalloc, the binary's default feature), published from
    // start-up: what the node holds, and what the allocator keeps resident for it.
    for kind in ["allocated", "resident"] {
        let series = format!("openclaw_process_heap_bytes{{kind=\"{kind}\"}} ");
        let bytes: f64 = before
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0);
        assert!(bytes > 1e6, "{series}is {bytes}:\n{before}");
    }

    let bad = node
        .submit_ok(json!({"input": "this fails [sim:500]"}))
        .await;
    let v = node.wait_final(&bad, TASK_DEADLINE).await;
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "server_error", "{v}");
    assert_eq!(
        sim.calls(Some(&bad)).await.len(),
        1,
        "max_retries 0 means one call"
    );

    let after = node.metrics().await;
    let errors_after = metric_sum(&after, "openclaw_model_errors_total");
    assert!(
        errors_after >= errors_before + 1.0,
        "openclaw_model_errors_total {errors_before} -> {errors_after}:\n{after}"
    );
}

/// The totals line of seven_day_summary.py, e.g. `输入 Token: 1,234`.
fn script_number(out: &str, label: &str) -> u64 {
    let line = out
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no `{label}` line in:\n{out}"));
    line[label.len()..]
        .trim()
        .replace(',', "")
        .parse()
        .unwrap_or_else(|e| panic!("bad number in `{line}`: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_feeds_the_chapter_script() {
    let sim = Sim::start(&[]).await;
    let node = Node::start(&config(&sim, 2, json!({}))).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            node.submit_ok(json!({"input": format!("audit me number {i}")}))
                .await,
        );
    }
    let (mut tin, mut tout) = (0, 0);
    for id in &ids {
        let v = node.wait_final(id, TASK_DEADLINE).await;
        assert_eq!(v["status"], "succeeded", "{v}");
        tin += v["tokens"]["input"].as_u64().unwrap();
        tout += v["tokens"]["output"].as_u64().unwrap();
    }
    let path = node.data_dir.join("logs/config-audit.jsonl");
    let end = std::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.lines().count() >= ids.len() {
            break text;
        }
        assert!(
            std::time::Instant::now() < end,
            "audit log has {} lines, want {}",
            text.lines().count(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad audit line {l}: {e}")))
        .collect();
    assert_eq!(lines.len(), ids.len(), "one line per call:\n{text}");
    for l in &lines {
        assert_eq!(l["model"], "fast", "{l}");
        assert!(l["timestamp"].is_string(), "{l}");
    }

    if !common::prereq::require(
        "python3 (seven_day_summary.py)",
        common::prereq::python(None),
        "apt-get install python3",
    ) {
        return;
    }
    let script = common::scripts_dir().join("seven_day_summary.py");
    let out = Command::new("python3")
        .arg(&script)
        .env("PYTHONIOENCODING", "utf-8")
        .stdin(std::fs::File::open(&path).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = String::from_utf8(out.stdout).unwrap();
    assert_eq!(script_number(&out, "输入 Token:"), tin, "{out}");
    assert_eq!(script_number(&out, "输出 Token:"), tout, "{out}");
    assert_eq!(script_number(&out, "总计:"), tin + tout, "{out}");
}

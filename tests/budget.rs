//! Budgets (§18.7) through a real node and a real simulator process: threshold notifications
//! reach webhooks exactly once per threshold per period (Feishu and generic formats, also across
//! a restart), 200 concurrent non-critical tasks never spend past the limit — the rest wait
//! (not failed) while a critical task still runs, and a higher limit resumes them — and the
//! `downgrade_model` action routes to the cheapest model.
//!
//! Token usage of one task is measured first on a node without budget (the simulator is
//! deterministic: same model and prompt → same usage), and limits are set in multiples of it.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{config, Node, Sim, TASK_DEADLINE};
use serde_json::{json, Value};

/// Every task of these tests asks for the same thing, capped at 20 output tokens, so the
/// reservation estimate is an upper bound of the real usage.
fn task(priority: &str) -> Value {
    json!({"input": "summarise the budget report", "max_tokens": 20, "priority": priority})
}

/// Tokens (input + output) one task uses on `model`, measured on a node without budget.
async fn tokens_per_task(sim: &Sim, model: &str) -> u64 {
    let cfg = config(sim, 1, json!({"model_routing": {"default_model": model}}));
    let node = Node::start(&cfg).await;
    let id = node.submit_ok(task("normal")).await;
    let v = node.wait_final(&id, TASK_DEADLINE).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    let u = v["tokens"]["input"].as_u64().unwrap() + v["tokens"]["output"].as_u64().unwrap();
    assert!(u > 0);
    u
}

fn scope<'a>(budget: &'a Value, name: &str) -> &'a Value {
    budget["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["scope"] == name)
        .unwrap_or_else(|| panic!("no scope {name} in {budget}"))
}

/// Bodies received, with the hook kind from the path.
type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// A webhook receiver on 127.0.0.1:0: `/hook/<kind>` bodies are recorded.
struct Hooks {
    url: String,
    got: Received,
}

impl Hooks {
    async fn start() -> Hooks {
        use axum::extract::{Path, State};
        let got: Received = Arc::default();
        let app = axum::Router::new()
            .route(
                "/hook/{kind}",
                axum::routing::post(
                    |State(got): State<Received>,
                     Path(kind): Path<String>,
                     axum::Json(v): axum::Json<Value>| async move {
                        got.lock().unwrap().push((kind, v));
                        "ok"
                    },
                ),
            )
            .with_state(got.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        Hooks { url, got }
    }

    fn of(&self, kind: &str) -> Vec<Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Wait until `n` bodies of `kind` arrived and no other can still come: the accountant
    /// has taken every settlement (`GET /api/budget` is answered through its mailbox, behind
    /// them), and every threshold it fired ("budget threshold reached" in the node's log) has
    /// had its `kind` notice delivered ("budget notice sent", logged after the hook answered),
    /// so none is in flight. A threshold that fires again is waited for, so its notice shows
    /// in what this returns.
    async fn wait_for(&self, node: &Node, kind: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + TASK_DEADLINE;
        loop {
            let (st, budget) = node.get_json("/api/budget").await;
            let log = node.stderr();
            let fired = log
                .lines()
                .filter(|l| l.contains("budget threshold reached"))
                .count();
            let sent = log
                .lines()
                .filter(|l| l.contains("budget notice sent") && l.contains(kind))
                .count();
            let got = self.of(kind);
            if st.is_success() && got.len() >= n && sent >= fired {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} {kind} notices, got {got:?}; {fired} thresholds fired, \
                 {sent} {kind} notices sent; /api/budget {st}: {budget}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn budget_cfg(sim: &Sim, workers: usize, default_model: &str, budget: Value) -> Value {
    config(
        sim,
        workers,
        json!({"model_routing": {"default_model": default_model}, "budget": budget}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_notify_once_per_period_in_feishu_and_generic_format() {
    let sim = Sim::start(&[]).await;
    let u = tokens_per_task(&sim, "fast").await;
    let hooks = Hooks::start().await;
    let feishu = format!("{}/hook/feishu", hooks.url);
    let generic = format!("{}/hook/generic", hooks.url);
    let cfg = budget_cfg(
        &sim,
        1,
        "fast",
        json!({
            "enabled": true, "period": "daily",
            "limits": {"total_tokens": 5 * u},
            "actions_on_limit": {"50_percent": "notify", "80_percent": "notify"},
            "notification": {"channel": "feishu", "webhook_url_env": "BUDGET_HOOK_FEISHU",
                             "webhooks": [{"kind": "generic", "url_env": "BUDGET_HOOK_GENERIC"}]}
        }),
    );
    let mut node = Node::start_with_env(
        &cfg,
        &[
            ("BUDGET_HOOK_FEISHU", feishu.as_str()),
            ("BUDGET_HOOK_GENERIC", generic.as_str()),
        ],
    )
    .await;
    // Four tasks one after the other: 20 %, 40 %, 60 % (50 fires), 80 % (80 fires).
    for _ in 0..4 {
        let id = node.submit_ok(task("normal")).await;
        let v = node.wait_final(&id, TASK_DEADLINE).await;
        assert_eq!(v["status"], "succeeded", "{v}");
    }
    let f = hooks.wait_for(&node, "feishu", 2).await;
    assert_eq!(f.len(), 2, "one Feishu notice per threshold: {f:?}");
    for (m, p) in f.iter().zip(["50%", "80%"]) {
        assert_eq!(m["msg_type"], "text", "{m}");
        let text = m["content"]["text"].as_str().unwrap();
        assert!(text.contains(p) && text.contains("total"), "{text}");
    }
    let g = hooks.wait_for(&node, "generic", 2).await;
    let percents: Vec<u64> = g.iter().map(|m| m["percent"].as_u64().unwrap()).collect();
    assert_eq!(percents, vec![50, 80], "{g:?}");
    for m in &g {
        assert_eq!(m["event"], "budget_threshold");
        assert_eq!(m["scope"], "total");
        assert_eq!(m["action"], "notify");
        assert_eq!(m["limit_tokens"], 5 * u);
        assert!(m["period"].as_str().unwrap().len() == 10, "daily key: {m}");
    }
    let (_, b) = node.get_json("/api/budget").await;
    let total = scope(&b, "total");
    assert_eq!(total["spent_tokens"], 4 * u, "{b}");
    assert_eq!(total["fired_thresholds"], json!([50, 80]), "{b}");

    // A restart keeps the spend and the fired marks: more (critical) work fires nothing again.
    // Stopped at once after the last settle: a graceful stop persists the accountant's counters
    // before it flushes the store.
    node.stop();
    node.restart().await;
    let (_, b) = node.get_json("/api/budget").await;
    assert_eq!(scope(&b, "total")["spent_tokens"], 4 * u, "{b}");
    for _ in 0..2 {
        let id = node.submit_ok(task("critical")).await;
        let v = node.wait_final(&id, TASK_DEADLINE).await;
        assert_eq!(
            v["status"], "succeeded",
            "critical work may pass 100 %: {v}"
        );
    }
    assert_eq!(hooks.wait_for(&node, "feishu", 2).await.len(), 2);
    assert_eq!(hooks.wait_for(&node, "generic", 2).await.len(), 2);
    let m = node.metrics().await;
    let ratio: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("openclaw_budget_used_ratio{scope=\"total\"} "))
        .unwrap_or_else(|| panic!("no budget ratio in {m}"))
        .parse()
        .unwrap();
    assert!((ratio - 1.2).abs() < 1e-9, "6 of 5 task budgets: {ratio}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tasks_never_pass_the_limit_and_the_rest_waits() {
    let sim = Sim::start(&[]).await;
    let u = tokens_per_task(&sim, "fast").await;
    let limit = 50 * u;
    let calls_before = sim.calls(None).await.len() as u64;
    let budget =
        |limit: u64| json!({"enabled": true, "period": "daily", "limits": {"total_tokens": limit}});
    let mut node = Node::start(&budget_cfg(&sim, 8, "fast", budget(limit))).await;
    let node_ref = &node;
    let ids: Vec<String> = match tokio::time::timeout(
        Duration::from_secs(30),
        futures::future::join_all(
            (0..200).map(|_| async move { node_ref.submit_ok(task("normal")).await }),
        ),
    )
    .await
    {
        Ok(ids) => ids,
        Err(_) => panic!("200 submissions did not finish; stderr:\n{}", node.stderr()),
    };

    // Wait until nothing runs and the budget holds the rest.
    let deadline = Instant::now() + Duration::from_secs(60);
    let queue = loop {
        let (_, q) = node.get_json("/api/queue").await;
        if q["running"] == 0 && q["paused"] == "budget" && q["queued"].as_u64().unwrap() > 0 {
            break q;
        }
        assert!(Instant::now() < deadline, "budget never paused: {q}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (_, b) = node.get_json("/api/budget").await;
    let total = scope(&b, "total");
    let spent = total["spent_tokens"].as_u64().unwrap();
    assert!(spent <= limit, "spent {spent} > limit {limit}: {b}");
    assert_eq!(total["reserved_tokens"], 0, "{b}");
    assert_eq!(total["state"], "paused", "{b}");
    let calls = sim.calls(None).await.len() as u64 - calls_before;
    assert!(
        calls * u <= limit,
        "provider calls {calls} × {u} tokens pass the limit {limit}"
    );
    assert!(calls >= 40, "most of the budget was used: {calls} calls");

    let mut succeeded = 0;
    let mut waiting = 0;
    for id in &ids {
        let v = node.task(id).await;
        match v["status"].as_str().unwrap() {
            "succeeded" => succeeded += 1,
            "queued" => {
                assert_eq!(v["waiting_reason"], "budget_paused", "{v}");
                waiting += 1;
            }
            other => panic!("task {id} is {other}, not succeeded or waiting: {v}"),
        }
    }
    assert_eq!(succeeded + waiting, 200);
    assert_eq!(succeeded, calls, "one provider call per succeeded task");
    assert_eq!(queue["queued"].as_u64().unwrap(), waiting);

    // Critical work still runs.
    let id = node.submit_ok(task("critical")).await;
    let v = node.wait_final(&id, TASK_DEADLINE).await;
    assert_eq!(v["status"], "succeeded", "{v}");

    // A higher limit (restart with it) resumes the waiting tasks.
    node.stop();
    let cfg = budget_cfg(&sim, 8, "fast", budget(1000 * u));
    std::fs::write(
        node.data_dir.join("openclaw.json"),
        serde_json::to_vec_pretty(&cfg).unwrap(),
    )
    .unwrap();
    node.restart().await;
    for id in &ids {
        let v = node.wait_final(id, Duration::from_secs(60)).await;
        assert_eq!(v["status"], "succeeded", "{v}");
    }
    let (_, b) = node.get_json("/api/budget").await;
    assert_eq!(scope(&b, "total")["state"], "ok", "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downgrade_at_95_percent_routes_to_the_cheapest_model() {
    let sim = Sim::start(&[]).await;
    let u = tokens_per_task(&sim, "smart").await;
    let cfg = budget_cfg(
        &sim,
        1,
        "smart",
        json!({"enabled": true, "period": "daily", "limits": {"total_tokens": u},
               "actions_on_limit": {"95_percent": "downgrade_model"}}),
    );
    let node = Node::start(&cfg).await;
    let first = node.submit_ok(task("critical")).await;
    let v = node.wait_final(&first, TASK_DEADLINE).await;
    assert_eq!(
        (v["model"].as_str(), v["route"].as_str()),
        (Some("smart"), Some("default")),
        "{v}"
    );
    // The settle that reached 100 % fired the 95 % action.
    let deadline = Instant::now() + TASK_DEADLINE;
    loop {
        let (_, b) = node.get_json("/api/budget").await;
        if scope(&b, "total")["state"] == "downgraded" {
            break;
        }
        assert!(Instant::now() < deadline, "{b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = node.submit_ok(task("critical")).await;
    let v = node.wait_final(&id, TASK_DEADLINE).await;
    assert_eq!(
        (v["model"].as_str(), v["route"].as_str()),
        (Some("fast"), Some("budget_downgrade")),
        "{v}"
    );
    let calls = sim.calls(Some(&id)).await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["model"], "fast", "{calls:?}");
    // A task that names its model keeps it.
    let mut t = task("critical");
    t["model"] = json!("smart");
    let id = node.submit_ok(t).await;
    let v = node.wait_final(&id, TASK_DEADLINE).await;
    assert_eq!(
        (v["model"].as_str(), v["route"].as_str()),
        (Some("smart"), Some("explicit")),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_over_its_own_limit_waits_while_other_agents_run() {
    let sim = Sim::start(&[]).await;
    let cfg = config(
        &sim,
        2,
        json!({"agents": {"writer": {}},
               "budget": {"enabled": true, "period": "daily",
                          "limits": {"total_tokens": 1_000_000, "per_agent": {"writer": {"tokens": 1}}}}}),
    );
    let node = Node::start(&cfg).await;
    let mut t = task("normal");
    t["agent"] = json!("writer");
    let held = node.submit_ok(t.clone()).await;
    let deadline = Instant::now() + TASK_DEADLINE;
    loop {
        let v = node.task(&held).await;
        if v["waiting_reason"] == "budget_paused" {
            assert_eq!(v["status"], "queued", "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "writer task not held: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // `main` is not limited by writer's scope.
    let id = node.submit_ok(task("normal")).await;
    let v = node.wait_final(&id, TASK_DEADLINE).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["waiting_reason"], Value::Null, "{v}");
    // Critical work of writer still runs.
    t["priority"] = json!("critical");
    let id = node.submit_ok(t).await;
    let v = node.wait_final(&id, TASK_DEADLINE).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    let (_, b) = node.get_json("/api/budget").await;
    assert_eq!(scope(&b, "agent:writer")["state"], "paused", "{b}");
    assert_eq!(scope(&b, "total")["state"], "ok", "{b}");
    assert!(scope(&b, "agent:writer")["spent_tokens"].as_u64().unwrap() > 1);
    let (_, q) = node.get_json("/api/queue").await;
    assert_eq!(q["paused"], "budget", "{q}");
    assert_eq!(node.task(&held).await["status"], "queued");
    assert!(
        sim.calls(Some(&held)).await.is_empty(),
        "held task never called the provider"
    );
    let m = node.metrics().await;
    assert!(
        m.contains("openclaw_budget_used_ratio{scope=\"agent:writer\"}"),
        "{m}"
    );
}

/// `/v1/chat/completions` is budgeted like a task: sequential calls succeed until the next one
/// would pass the limit, then answer 429 `budget_exhausted` with Retry-After, and the spend the
/// node records never passes the limit. Streams settle from their usage chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_calls_are_budgeted_and_refused_at_the_limit() {
    let sim = Sim::start(&[]).await;
    let body = |stream: bool| {
        json!({"model": "fast", "stream": stream, "max_tokens": 20,
               "messages": [{"role": "user", "content": "summarise the budget report"}]})
    };
    // Usage of one call, measured on a node without budget (the simulator is deterministic).
    let probe = Node::start(&config(&sim, 1, json!({}))).await;
    let r = probe
        .http
        .post(format!("{}/v1/chat/completions", probe.url))
        .json(&body(false))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let per_call = v["usage"]["total_tokens"].as_u64().unwrap();
    drop(probe);

    let limit = per_call * 5 + per_call / 2;
    let cfg = config(
        &sim,
        1,
        json!({"budget": {"enabled": true, "period": "daily", "limits": {"total_tokens": limit},
                          "actions_on_limit": {"100_percent": "pause_non_critical"}}}),
    );
    let node = Node::start(&cfg).await;
    let before = sim.calls(None).await.len();
    let (mut ok, mut refused) = (0, 0);
    for i in 0..10 {
        let r = node
            .http
            .post(format!("{}/v1/chat/completions", node.url))
            .json(&body(i % 2 == 1))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => {
                let _ = r.text().await.unwrap();
                ok += 1;
            }
            429 => {
                assert!(r.headers().contains_key("retry-after"));
                let e: Value = r.json().await.unwrap();
                assert_eq!(e["error"]["code"], "budget_exhausted", "{e}");
                refused += 1;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    assert!(ok >= 1 && refused >= 1, "ok {ok}, refused {refused}");
    let calls = sim.calls(None).await.len() - before;
    assert_eq!(calls, ok, "refused calls never reach the provider");
    // The accountant settles asynchronously: poll until every answered call is counted.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, b) = node.get_json("/api/budget").await;
        let total = scope(&b, "total");
        let spent = total["spent_tokens"].as_u64().unwrap_or(0);
        assert!(spent <= limit, "spent {spent} > limit {limit}: {b}");
        if spent >= per_call * ok as u64 || Instant::now() > deadline {
            assert_eq!(spent, per_call * ok as u64, "{b}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Issue 14 item 5: `attempts` counts runs that reached the provider. Tasks started while the
/// budget runs out are held (put back in the queue before any provider call): each hold is
/// counted in `holds`, not in `attempts`, so once a higher limit (hot-reloaded) lets them run,
/// every task shows as many attempts as the simulator saw calls for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_hold_counts_a_hold_not_an_attempt() {
    let sim = Sim::start(&[]).await;
    let u = tokens_per_task(&sim, "fast").await;
    let budget =
        |limit: u64| json!({"enabled": true, "period": "daily", "limits": {"total_tokens": limit}});
    let node = Node::start(&budget_cfg(&sim, 4, "fast", budget(3 * u))).await;
    let node_ref = &node;
    let ids: Vec<String> = futures::future::join_all(
        (0..16).map(|_| async move { node_ref.submit_ok(task("normal")).await }),
    )
    .await;

    // The budget binds: nothing runs, the rest waits.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, q) = node.get_json("/api/queue").await;
        if q["running"] == 0 && q["paused"] == "budget" && q["queued"].as_u64().unwrap() > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "budget never paused: {q}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut held = 0;
    for id in &ids {
        let v = node.task(id).await;
        if v["status"] == "queued" {
            let calls = sim.calls(Some(id)).await.len() as u64;
            assert_eq!(v["attempts"].as_u64().unwrap(), calls, "{v}");
            held += v["holds"].as_u64().unwrap();
        }
    }
    assert!(
        held >= 1,
        "four workers started together against a 3-task budget: some run was held"
    );

    // A higher limit, hot-reloaded: every waiting task runs.
    std::fs::write(
        node.data_dir.join("openclaw.json"),
        serde_json::to_vec_pretty(&budget_cfg(&sim, 4, "fast", budget(1000 * u))).unwrap(),
    )
    .unwrap();
    let mut holds = 0;
    for id in &ids {
        let v = node.wait_final(id, Duration::from_secs(60)).await;
        assert_eq!(v["status"], "succeeded", "{v}");
        let calls = sim.calls(Some(id)).await.len() as u64;
        assert_eq!(
            v["attempts"].as_u64().unwrap(),
            calls,
            "attempts = provider calls: {v}"
        );
        holds += v["holds"].as_u64().unwrap();
    }
    assert!(holds >= held, "holds are kept: {holds} < {held}");
}

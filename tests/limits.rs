//! Rate limits (§18.4) through a real node and a real simulator process, checked against the
//! simulator's own call log: requests per window in every sliding window, concurrency, the
//! global scope, waiters granted in priority order, `rate_limited` failures past the wait
//! deadline (tasks) or the timeout (chat: 429 + Retry-After), and back-off after provider 429s.
//!
//! Nothing here measures durations of our own: the assertions are on the simulator's arrival
//! stamps (`at_ms`) and call counts.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{config, metric_sum, Node, Sim};
use serde_json::{json, Value};

/// Deadline for a batch of rate-limited tasks to finish (they wait on purpose).
const BATCH_DEADLINE: Duration = Duration::from_secs(90);

/// Taken off a window when counting the simulator's arrivals: the node stamps a grant when it
/// makes it, the simulator when the request arrives, and on two busy cores that hop can take
/// a while. Without a limiter the calls of these tests arrive within a few ms of each other,
/// so the check still fails when the limit is not enforced.
const SLACK_MS: u64 = 300;

/// Arrival stamps (ms) of the sim's calls to `model` (any model when `None`), sorted.
async fn arrivals(sim: &Sim, model: Option<&str>) -> Vec<u64> {
    let mut v: Vec<u64> = sim
        .calls(None)
        .await
        .iter()
        .filter(|c| model.is_none_or(|m| c["model"] == m))
        .map(|c| c["at_ms"].as_u64().unwrap())
        .collect();
    v.sort_unstable();
    v
}

/// The largest number of arrivals inside any window `[t, t + window_ms - slack_ms)`, i.e. the
/// worst sliding window, counted with `slack_ms` taken off the window for the scheduling delay
/// between the node's grant and the simulator's arrival stamp.
fn worst_window(at: &[u64], window_ms: u64, slack_ms: u64) -> usize {
    let w = window_ms - slack_ms;
    (0..at.len())
        .map(|i| at[i..].iter().take_while(|&&t| t < at[i] + w).count())
        .max()
        .unwrap_or(0)
}

async fn submit_all(node: &Node, bodies: Vec<Value>) -> Vec<String> {
    let mut ids = Vec::new();
    for b in bodies {
        ids.push(node.submit_ok(b).await);
    }
    ids
}

async fn finals(node: &Node, ids: &[String]) -> Vec<Value> {
    let mut out = Vec::new();
    for id in ids {
        out.push(node.wait_final(id, BATCH_DEADLINE).await);
    }
    out
}

/// Poll `/api/limits` until `scope` has `n` waiters.
async fn wait_waiters(node: &Node, scope: &str, n: u64) {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = node.get_json("/api/limits").await;
        let got = v["scopes"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["scope"] == scope))
            .and_then(|s| s["waiters"].as_u64());
        if got == Some(n) {
            return;
        }
        assert!(
            Instant::now() < end,
            "scope {scope}: {n} waiters expected; /api/limits {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_window_hold_in_every_sliding_window() {
    let sim = Sim::start(&[]).await;
    let cfg = config(
        &sim,
        30,
        json!({"rate_limiting": {"window_seconds": 2, "per_model": {"fast": {"requests_per_minute": 5}}}}),
    );
    let node = Node::start(&cfg).await;
    let ids = submit_all(
        &node,
        (0..30)
            .map(|i| json!({"input": format!("hello {i}")}))
            .collect(),
    )
    .await;
    for v in finals(&node, &ids).await {
        assert_eq!(v["status"], "succeeded", "waiting is not failing: {v}");
    }
    let at = arrivals(&sim, Some("fast")).await;
    assert_eq!(at.len(), 30, "one call per task");
    // 30 tasks at once would arrive together without the limiter; with it, no 2 s window
    // holds more than 5 (with SLACK_MS for the hop from grant to the simulator).
    let worst = worst_window(&at, 2_000, SLACK_MS);
    assert!(
        worst <= 5,
        "{worst} calls in one 2 s window; arrivals {at:?}"
    );
    let m = node.metrics().await;
    assert!(
        metric_sum(&m, "openclaw_rate_limit_waits_total") >= 20.0,
        "most tasks waited:\n{m}"
    );
    assert!(m.contains("openclaw_rate_limit_wait_seconds_bucket{model=\"fast\""));
    let (_, limits) = node.get_json("/api/limits").await;
    let scopes = limits["scopes"].as_array().unwrap();
    // Every configured model has a limiter; only `fast` has limits (`smart`'s only backs off).
    assert_eq!(scopes.len(), 2, "{limits}");
    assert_eq!(scopes[0]["scope"], "fast");
    assert_eq!(scopes[0]["requests_per_window"], 5);
    assert_eq!(scopes[1]["scope"], "smart");
    assert!(scopes[1]["requests_per_window"].is_null(), "{limits}");
    assert_eq!(limits["window_seconds"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_granted_in_priority_order() {
    let sim = Sim::start(&[]).await;
    let cfg = config(
        &sim,
        10,
        json!({"rate_limiting": {"per_model": {"fast": {"concurrent_requests": 1}}}}),
    );
    let node = Node::start(&cfg).await;
    // The blocker holds the only slot while the others line up at the limiter.
    let blocker = node
        .submit_ok(json!({"input": "[sim:slow:3000] blocker"}))
        .await;
    let end = Instant::now() + Duration::from_secs(20);
    while sim.calls(Some(&blocker)).await.is_empty() {
        assert!(Instant::now() < end, "the blocker never reached the sim");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One at a time, each queued at the limiter before the next is submitted, so the
    // limiter's arrival order is known (workers reach it in any order otherwise).
    let (mut low, mut high) = (Vec::new(), Vec::new());
    for i in 0..6 {
        let (list, priority) = if i < 3 {
            (&mut low, "low")
        } else {
            (&mut high, "high")
        };
        list.push(
            node.submit_ok(json!({"input": format!("{priority} {i}"), "priority": priority}))
                .await,
        );
        wait_waiters(&node, "fast", i + 1).await;
    }
    let all: Vec<String> = [vec![blocker.clone()], low.clone(), high.clone()].concat();
    for v in finals(&node, &all).await {
        assert_eq!(v["status"], "succeeded", "{v}");
    }
    let order: Vec<String> = sim
        .calls(None)
        .await
        .iter()
        .map(|c| c["task_id"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = [vec![blocker], high, low].concat();
    assert_eq!(
        order, want,
        "sim order: blocker, then the high waiters (FIFO), then the low ones"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_past_max_wait_fails_the_task_with_rate_limited() {
    let sim = Sim::start(&[]).await;
    let cfg = config(
        &sim,
        4,
        json!({"rate_limiting": {"max_wait_ms": 300, "per_model": {"fast": {"concurrent_requests": 1}}}}),
    );
    let node = Node::start(&cfg).await;
    let blocker = node
        .submit_ok(json!({"input": "[sim:slow:4000] blocker"}))
        .await;
    let end = Instant::now() + Duration::from_secs(20);
    while sim.calls(Some(&blocker)).await.is_empty() {
        assert!(Instant::now() < end, "the blocker never reached the sim");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waiter = node.submit_ok(json!({"input": "waits too long"})).await;
    let v = node.wait_final(&waiter, BATCH_DEADLINE).await;
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "rate_limited", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("rate limit of fast"),
        "message names the scope: {msg}"
    );
    assert!(
        sim.calls(Some(&waiter)).await.is_empty(),
        "a refused task never reaches the provider"
    );
    let b = node.wait_final(&blocker, BATCH_DEADLINE).await;
    assert_eq!(b["status"], "succeeded", "{b}");
    let m = node.metrics().await;
    assert_eq!(
        metric_sum(&m, "openclaw_rate_limit_rejections_total"),
        1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_429s_back_the_model_off() {
    let sim = Sim::start(&[]).await;
    sim.set_faults(json!({"models": {"fast": {"rate_limit_rate": 1.0, "retry_after_secs": 1}}}))
        .await;
    let tasks = 20;
    let cfg = config(
        &sim,
        tasks,
        json!({
            "rate_limiting": {"max_wait_ms": 4000, "per_model": {"fast": {"concurrent_requests": 1}},
                              "backoff": {"initial_delay_ms": 500, "max_delay_ms": 8000, "multiplier": 2.0}},
            "model_fallback": {"max_retries": 0}
        }),
    );
    let (node, calls) = run_until_rate_limited(&sim, &cfg, tasks).await;
    // Without back-off each task would make its one call (20 calls, one after the other:
    // concurrency 1). With it, the model is left alone for ≥ Retry-After, then longer each time,
    // so the tasks' 4 s of patience see only a few calls.
    assert!(calls >= 1, "the provider was asked at least once");
    assert!(
        calls * 3 <= tasks,
        "{calls} calls for {tasks} tasks: the limiter did not back off"
    );
    let (_, limits) = node.get_json("/api/limits").await;
    let fast = &limits["scopes"][0];
    assert_eq!(fast["scope"], "fast", "{limits}");
    assert!(fast["consecutive_429s"].as_u64().unwrap() >= 1, "{limits}");
}

/// Start a node on `cfg`, submit `tasks` tasks to a model that always answers 429, check every
/// one ends `rate_limited`, and return the node with the number of calls the simulator saw.
async fn run_until_rate_limited(sim: &Sim, cfg: &Value, tasks: usize) -> (Node, usize) {
    let node = Node::start(cfg).await;
    let ids = submit_all(
        &node,
        (0..tasks)
            .map(|i| json!({"input": format!("busy {i}")}))
            .collect(),
    )
    .await;
    for v in finals(&node, &ids).await {
        assert_eq!(v["status"], "failed", "{v}");
        assert_eq!(v["error"]["code"], "rate_limited", "{v}");
    }
    let calls = sim.calls(None).await.len();
    (node, calls)
}

/// A model with no `per_model` entry still backs off after a provider 429: while it is backed
/// off, its calls go through its limiter and wait (here longer than `max_wait_ms`, so they fail
/// without calling), instead of hammering the provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_without_limits_still_backs_off_after_429() {
    let sim = Sim::start(&[]).await;
    sim.set_faults(json!({"models": {"fast": {"rate_limit_rate": 1.0, "retry_after_secs": 1}}}))
        .await;
    let tasks = 10;
    let cfg = config(
        &sim,
        1,
        json!({
            "rate_limiting": {"max_wait_ms": 1500,
                              "backoff": {"initial_delay_ms": 1000, "max_delay_ms": 8000, "multiplier": 2.0}},
            "model_fallback": {"max_retries": 0}
        }),
    );
    let (_node, calls) = run_until_rate_limited(&sim, &cfg, tasks).await;
    // Without back-off each of the 10 tasks calls once (one worker: one after the other, each
    // 429 is immediate). With it, calls are spaced by growing delays and most tasks give up.
    assert!(calls >= 1, "the provider was asked at least once");
    assert!(
        calls * 2 <= tasks,
        "{calls} calls for {tasks} tasks: the model did not back off"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_over_the_limit_answers_429_with_retry_after() {
    let sim = Sim::start(&[]).await;
    let cfg = config(
        &sim,
        2,
        json!({
            "rate_limiting": {"window_seconds": 60, "per_model": {"fast": {"requests_per_minute": 1}}},
            "model_fallback": {"timeout_ms": 1000}
        }),
    );
    let node = Node::start(&cfg).await;
    let chat = || {
        node.http
            .post(format!("{}/v1/chat/completions", node.url))
            .json(&json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    let first = chat().await.unwrap();
    assert_eq!(first.status(), 200);
    let second = chat().await.unwrap();
    assert_eq!(second.status(), 429);
    let retry_after: u64 = second
        .headers()
        .get("retry-after")
        .expect("Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=60).contains(&retry_after),
        "Retry-After {retry_after} is when the window frees a request"
    );
    let body: Value = second.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert_eq!(
        sim.calls(None).await.len(),
        1,
        "the refused call never left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_cap_holds_at_the_simulator() {
    let sim = Sim::start(&[]).await;
    let cfg = config(
        &sim,
        8,
        json!({"rate_limiting": {"per_model": {"fast": {"concurrent_requests": 2}}}}),
    );
    let node = Node::start(&cfg).await;
    let ids = submit_all(
        &node,
        (0..8)
            .map(|i| json!({"input": format!("[sim:slow:300] job {i}")}))
            .collect(),
    )
    .await;
    for v in finals(&node, &ids).await {
        assert_eq!(v["status"], "succeeded", "{v}");
    }
    let at = arrivals(&sim, Some("fast")).await;
    assert_eq!(at.len(), 8);
    // Each call is answered 300 ms after its arrival. Call i+2 can start only once one of the
    // two before it was answered, so it arrives at least 300 ms after call i.
    for i in 0..at.len() - 2 {
        assert!(
            at[i + 2] >= at[i] + 299,
            "3 calls in flight at once around {}: arrivals {at:?}",
            at[i]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_and_model_scopes_hold_together() {
    let sim = Sim::start(&[]).await;
    let cfg = config(
        &sim,
        12,
        json!({"rate_limiting": {"window_seconds": 2,
            "global": {"requests_per_minute": 4},
            "per_model": {"fast": {"requests_per_minute": 2}}}}),
    );
    let node = Node::start(&cfg).await;
    let ids = submit_all(
        &node,
        (0..12)
            .map(|i| {
                let model = if i % 2 == 0 { "fast" } else { "smart" };
                json!({"input": format!("mixed {i}"), "model": model})
            })
            .collect(),
    )
    .await;
    for v in finals(&node, &ids).await {
        assert_eq!(v["status"], "succeeded", "{v}");
    }
    let all = arrivals(&sim, None).await;
    let fast = arrivals(&sim, Some("fast")).await;
    assert_eq!((all.len(), fast.len()), (12, 6));
    let (worst_all, worst_fast) = (
        worst_window(&all, 2_000, SLACK_MS),
        worst_window(&fast, 2_000, SLACK_MS),
    );
    assert!(worst_all <= 4, "global: {worst_all} in a window; {all:?}");
    assert!(worst_fast <= 2, "fast: {worst_fast} in a window; {fast:?}");
    let (_, limits) = node.get_json("/api/limits").await;
    let scopes: Vec<&str> = limits["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["scope"].as_str().unwrap())
        .collect();
    // Every configured model has a limiter (one without limits only backs off after a 429).
    assert_eq!(scopes, ["fast", "global", "smart"], "{limits}");
}

#[test]
fn worst_window_counts_sliding_windows() {
    assert_eq!(worst_window(&[], 1000, 0), 0);
    assert_eq!(worst_window(&[0, 999, 1000, 1998], 1000, 0), 3);
    assert_eq!(worst_window(&[0, 1000, 2000], 1000, 0), 1);
    assert_eq!(worst_window(&[0, 500, 900, 1400], 1000, 0), 3);
    assert_eq!(worst_window(&[0, 880, 950], 1000, 100), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_waiter_leaves_the_queue_and_holds_nothing() {
    let sim = Sim::start(&[]).await;
    let cfg = config(
        &sim,
        4,
        json!({"rate_limiting": {"per_model": {"fast": {"concurrent_requests": 1}}}}),
    );
    let node = Node::start(&cfg).await;
    let blocker = node
        .submit_ok(json!({"input": "[sim:slow:1500] blocker"}))
        .await;
    let end = Instant::now() + Duration::from_secs(20);
    while sim.calls(Some(&blocker)).await.is_empty() {
        assert!(Instant::now() < end, "the blocker never reached the sim");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waiter = node.submit_ok(json!({"input": "cancel me"})).await;
    wait_waiters(&node, "fast", 1).await;
    let (st, _) = node.cancel(&waiter).await;
    assert!(st.is_success(), "cancel: {st}");
    wait_waiters(&node, "fast", 0).await;
    assert_eq!(
        node.wait_final(&waiter, BATCH_DEADLINE).await["status"],
        "cancelled"
    );
    assert_eq!(
        node.wait_final(&blocker, BATCH_DEADLINE).await["status"],
        "succeeded"
    );
    // The slot is free again: a later task runs, and nothing stays in flight.
    let after = node.submit_ok(json!({"input": "after"})).await;
    assert_eq!(
        node.wait_final(&after, BATCH_DEADLINE).await["status"],
        "succeeded"
    );
    assert!(sim.calls(Some(&waiter)).await.is_empty());
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = node.get_json("/api/limits").await;
        if v["scopes"][0]["in_flight"] == 0 {
            break;
        }
        assert!(Instant::now() < end, "a slot leaked: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

//! Scheduling through a real node with one worker: strict priority then FIFO within a level
//! (checked by the order in which the simulator received the calls), and preemption of a
//! running low task by a critical one (requeued, not lost, run again).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{config, Node, Sim, TASK_DEADLINE};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_priority_then_fifo_under_load() {
    let sim = Sim::start(&["--latency-ms", "50"]).await;
    let node = Node::start(&config(&sim, 1, json!({}))).await;

    // Hold the only worker until everything is queued; cancelling it releases the queue, so
    // the order does not depend on how fast the submissions are.
    let blocker = node
        .submit_ok(json!({"input": "blocker [sim:slow:60000]", "priority": "normal"}))
        .await;
    node.wait_status(&blocker, "running", TASK_DEADLINE).await;

    let mut submitted: Vec<(String, String)> = Vec::new(); // (label, id)
    for level in ["background", "low", "normal", "high"] {
        for i in 0..3 {
            let id = node
                .submit_ok(json!({"input": format!("{level} task {i}"), "priority": level}))
                .await;
            submitted.push((format!("{level}{i}"), id));
        }
    }
    let feishu = node
        .submit_ok(json!({"input": "a direct message", "source": "feishu_direct_message"}))
        .await;
    submitted.push(("feishu".into(), feishu.clone()));
    assert_eq!(
        node.task(&blocker).await["status"],
        "running",
        "blocker still holds the worker"
    );
    for (label, id) in &submitted {
        assert_eq!(
            node.task(id).await["status"],
            "queued",
            "{label} queued behind the blocker"
        );
    }

    let (st, v) = node.cancel(&blocker).await;
    assert!(st.is_success(), "{v}");

    for (label, id) in &submitted {
        let v = node.wait_final(id, TASK_DEADLINE).await;
        assert_eq!(v["status"], "succeeded", "{label}: {v}");
        assert_eq!(v["attempts"], 1, "{label}: {v}");
    }
    assert_eq!(
        node.task(&feishu).await["priority"],
        "high",
        "feishu_direct_message maps to high"
    );

    let label_of: HashMap<&str, &str> = submitted
        .iter()
        .map(|(l, id)| (id.as_str(), l.as_str()))
        .collect();
    let mut calls: Vec<(u64, &str)> = sim
        .calls(None)
        .await
        .iter()
        .filter_map(|c| {
            let id = c["task_id"].as_str()?;
            Some((c["seq"].as_u64()?, *label_of.get(id)?))
        })
        .collect();
    calls.sort();
    let order: Vec<&str> = calls.iter().map(|(_, l)| *l).collect();
    let want = [
        "high0",
        "high1",
        "high2",
        "feishu",
        "normal0",
        "normal1",
        "normal2",
        "low0",
        "low1",
        "low2",
        "background0",
        "background1",
        "background2",
    ];
    assert_eq!(order, want, "calls reached the simulator in this order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_preempts_a_running_low_task() {
    let sim = Sim::start(&[]).await;
    let node = Node::start(&config(&sim, 1, json!({}))).await;

    let low = node
        .submit_ok(json!({"input": "slow low work [sim:slow:3000]", "priority": "low"}))
        .await;
    node.wait_status(&low, "running", TASK_DEADLINE).await;
    // Make sure the first call is under way in the simulator before preempting.
    let end = std::time::Instant::now() + TASK_DEADLINE;
    while sim.calls(Some(&low)).await.is_empty() {
        assert!(
            std::time::Instant::now() < end,
            "the low task never called the simulator"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let crit = node
        .submit_ok(json!({"input": "disk almost full on db-1", "priority": "critical"}))
        .await;
    let c = node.wait_final(&crit, TASK_DEADLINE).await;
    assert_eq!(c["status"], "succeeded", "{c}");
    assert_eq!(c["attempts"], 1, "{c}");
    let mid = node.task(&low).await;
    assert_ne!(
        mid["status"], "succeeded",
        "the low task finished before the critical one: {mid}"
    );

    let l = node.wait_final(&low, TASK_DEADLINE).await;
    assert_eq!(l["status"], "succeeded", "{l}");
    assert_eq!(l["preemptions"], 1, "{l}");
    assert_eq!(l["attempts"], 2, "{l}");
    assert!(
        l["finished_at"].as_str().unwrap() >= c["finished_at"].as_str().unwrap(),
        "critical finished first: {c} {l}"
    );

    let low_calls = sim.calls(Some(&low)).await;
    let crit_calls = sim.calls(Some(&crit)).await;
    assert_eq!(
        low_calls.len(),
        2,
        "low called twice (first cut off): {low_calls:?}"
    );
    assert_eq!(crit_calls.len(), 1, "{crit_calls:?}");
    let seq = |c: &serde_json::Value| c["seq"].as_u64().unwrap();
    assert!(
        seq(&low_calls[0]) < seq(&crit_calls[0]) && seq(&crit_calls[0]) < seq(&low_calls[1]),
        "order low, critical, low again: {low_calls:?} {crit_calls:?}"
    );
    // The task's tokens are those of the call that completed.
    assert_eq!(l["tokens"]["output"], low_calls[1]["output_tokens"], "{l}");
}

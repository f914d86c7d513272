//! Durability of acknowledged tasks across process death: SIGKILL at a random moment while
//! tasks are being submitted and run, restart on the same data dir, and every task that got a
//! 202 is found and succeeds; and a clean SIGTERM restart keeps finished results.
//!
//! The kill moment comes from a seeded RNG; the seed is printed and can be fixed with
//! `OPENCLAW_ITEST_SEED=<n>` to replay a failure.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{config, Node, Sim, TASK_DEADLINE};
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{json, Value};

const ROUNDS: usize = 3;
const TASKS_PER_ROUND: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_task() {
    let seed: u64 = std::env::var("OPENCLAW_ITEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("durability seed: {seed} (replay with OPENCLAW_ITEST_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let sim = Sim::start(&["--latency-ms", "100"]).await;
    let mut node = Node::start(&config(&sim, 2, json!({}))).await;
    let mut acked: BTreeSet<String> = BTreeSet::new();

    for round in 0..ROUNDS {
        // Even rounds kill while submissions are still arriving, odd rounds while tasks run.
        let window = if round % 2 == 0 { 0..400 } else { 400..2500 };
        let kill_after = Duration::from_millis(rng.random_range(window));
        let (http, url) = (node.http.clone(), node.url.clone());
        let submit_all = async move {
            let submits = (0..TASKS_PER_ROUND).map(|i| {
                let (http, url) = (http.clone(), url.clone());
                tokio::spawn(async move {
                    let r = http
                        .post(format!("{url}/api/tasks"))
                        .json(&json!({"input": format!("round {round} task {i}: durable work")}))
                        .send()
                        .await
                        .ok()?;
                    if r.status() != StatusCode::ACCEPTED {
                        return None;
                    }
                    let v: Value = r.json().await.ok()?;
                    v["id"].as_str().map(str::to_string)
                })
            });
            futures::future::join_all(submits).await
        };
        let node_ref = &mut node;
        let kill = async move {
            tokio::time::sleep(kill_after).await;
            node_ref.kill();
        };
        let (results, ()) = tokio::join!(submit_all, kill);
        let got: Vec<String> = results
            .into_iter()
            .filter_map(|r| r.ok().flatten())
            .collect();
        eprintln!(
            "round {round}: killed after {kill_after:?}, {} of {TASKS_PER_ROUND} submissions acknowledged",
            got.len()
        );
        acked.extend(got);
        node.restart().await;
    }
    assert!(
        !acked.is_empty(),
        "no submission was acknowledged in {ROUNDS} rounds"
    );

    let mut duplicates = 0;
    for id in &acked {
        let (st, v) = node.get_task(id, 0).await;
        assert_eq!(
            st,
            StatusCode::OK,
            "acknowledged task {id} lost (seed {seed}): {v}"
        );
        let v = node.wait_final(id, Duration::from_secs(60)).await;
        assert_eq!(v["status"], "succeeded", "task {id} (seed {seed}): {v}");
        assert!(v["attempts"].as_u64().unwrap() >= 1, "{v}");
        let task_calls = sim.calls(Some(id)).await;
        assert!(
            !task_calls.is_empty(),
            "task {id} succeeded without a simulator call: {v}"
        );
        if task_calls.len() > 1 {
            duplicates += 1;
        }
        assert!(
            task_calls.iter().any(|c| c["status"] == 200
                && c["input_tokens"] == v["tokens"]["input"]
                && c["output_tokens"] == v["tokens"]["output"]),
            "task {id}'s tokens match none of its calls (seed {seed}): {v} {task_calls:?}"
        );
    }
    eprintln!(
        "durability: {} acknowledged tasks all succeeded; {duplicates} were called more than once \
         (running when killed)",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_restart_keeps_finished_results() {
    let sim = Sim::start(&[]).await;
    let mut node = Node::start(&config(&sim, 2, json!({}))).await;
    let id = node
        .submit_ok(json!({"input": "remember this result"}))
        .await;
    let before = node.wait_final(&id, TASK_DEADLINE).await;
    assert_eq!(before["status"], "succeeded", "{before}");

    let st = node.stop();
    assert!(
        st.success(),
        "SIGTERM exit status: {st}; stderr:\n{}",
        node.stderr()
    );
    node.restart().await;

    let after = node.task(&id).await;
    for field in [
        "status",
        "output",
        "tokens",
        "cost_usd",
        "attempts",
        "model",
        "finished_at",
    ] {
        assert_eq!(
            after[field], before[field],
            "{field} changed across restart: {before} {after}"
        );
    }
    assert_eq!(
        sim.calls(Some(&id)).await.len(),
        1,
        "not run again after restart"
    );
}

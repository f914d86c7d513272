//! Context management on a real node (issue 10, items 3 and 5), over real processes:
//!
//! - a 60-turn session with `max_context_tokens` 600 keeps every provider call (answers and
//!   summaries) at most 600 input tokens, as the simulator's call log counts them; the summary
//!   model is called (the simulator flags summary requests), the summary is carried in later
//!   prompts (`prompt.summary`), the task views record the cut (`context`), and the summary calls
//!   are audited with `purpose: "summary"` and the task's source;
//! - an input that cannot fit fails the task with `context_length_exceeded` (nothing sent) and
//!   is refused by `/v1/chat/completions` with 400 in OpenAI's shape.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const TURN_DEADLINE: Duration = Duration::from_secs(60);
const WINDOW: u64 = 600;

/// The `n`th user message of the conversation: 10..40 tokens of varied words.
fn user_turn(n: usize) -> String {
    const TOPICS: [&str; 6] = [
        "the rollout of cluster alpha",
        "Alice's budget review for March",
        "the latency report of the gateway",
        "moving the nightly backup to Tuesday",
        "the new fallback chain for deepseek",
        "onboarding Bob onto the on-call rota",
    ];
    let topic = TOPICS[n % TOPICS.len()];
    let detail = "please keep the numbers and the names exact ".repeat(1 + n % 4);
    format!("Turn {n}: what is next for {topic}? {detail}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_session_stays_within_the_window_and_is_summarised() {
    let sim = Sim::start(&[]).await;
    let node = Node::start(&config(
        &sim,
        2,
        json!({"session": {"context_management": {
            "max_context_tokens": WINDOW,
            "sliding_window": {"enabled": true, "keep_recent_messages": 6, "summarize_older": true},
            "compression": {"enabled": true, "trigger_threshold": 0.8, "target_ratio": 0.5,
                            "preserve_system_prompt": true, "preserve_tool_results": true}
        }}}),
    ))
    .await;

    let mut views: Vec<Value> = Vec::new();
    for n in 0..60 {
        let id = node
            .submit_ok(json!({"input": user_turn(n), "session_id": "s-long", "source": "cron_job"}))
            .await;
        let v = node.wait_final(&id, TURN_DEADLINE).await;
        assert_eq!(v["status"], "succeeded", "turn {n}: {v}");
        views.push(v);
    }

    let calls = sim.calls(None).await;
    assert!(calls.len() >= 60, "{} calls", calls.len());
    for c in &calls {
        let input = c["input_tokens"].as_u64().unwrap();
        assert!(input <= WINDOW, "a call of {input} input tokens: {c}");
    }
    let summaries: Vec<&Value> = calls.iter().filter(|c| c["summary"] == true).collect();
    assert!(
        summaries.len() >= 20,
        "the summary model is called as messages leave the window: {} summary calls",
        summaries.len()
    );
    assert!(
        summaries.iter().all(|c| c["model"] == "fast"),
        "the cheapest model summarises"
    );

    // Early turns carry the whole history; later ones a summary and a cut history.
    let first = &views[1];
    assert_eq!(first["context"]["window_dropped"], 0, "{first}");
    assert_eq!(first["prompt"]["summary"], 0, "{first}");
    assert!(first["prompt"]["history"].as_u64().unwrap() > 0, "{first}");
    let last = views.last().unwrap();
    assert!(last["prompt"]["summary"].as_u64().unwrap() > 0, "{last}");
    let summarised: u64 = views
        .iter()
        .map(|v| v["context"]["summarised"].as_u64().unwrap())
        .sum();
    let dropped: u64 = views
        .iter()
        .map(|v| v["context"]["window_dropped"].as_u64().unwrap())
        .sum();
    assert!(
        summarised >= 40 && dropped >= summarised,
        "{summarised} {dropped}"
    );
    // The answer's input stays bounded: the last turn sends no more than the window, while the
    // conversation's own text is many times that.
    let total_text: u64 = views
        .iter()
        .map(|v| v["tokens"]["output"].as_u64().unwrap() + v["prompt"]["input"].as_u64().unwrap())
        .sum();
    assert!(total_text > 4 * WINDOW, "{total_text}");
    assert!(
        last["tokens"]["input"].as_u64().unwrap() <= WINDOW,
        "{last}"
    );

    // Summary calls are audited like any call, with their purpose and the task's source.
    // The audit writer batches: poll until every summary call is there.
    let audit_path = node.data_dir.join("logs/config-audit.jsonl");
    let deadline = std::time::Instant::now() + TURN_DEADLINE;
    let lines: Vec<Value> = loop {
        let lines: Vec<Value> = std::fs::read_to_string(&audit_path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let n = lines.iter().filter(|l| l["purpose"] == "summary").count();
        if n >= summaries.len() || std::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let purposes: Vec<&Value> = lines.iter().filter(|l| l["purpose"] == "summary").collect();
    assert_eq!(
        purposes.len(),
        summaries.len(),
        "one audit line per summary call"
    );
    assert!(purposes
        .iter()
        .all(|l| l["source"] == "cron_job" && l["model"] == "fast"));
    assert!(
        lines.iter().filter(|l| l.get("purpose").is_none()).count() >= 60,
        "answers carry no purpose"
    );
    let metrics = node.metrics().await;
    assert!(
        metric_sum(&metrics, "openclaw_context_summary_calls_total") >= summaries.len() as f64,
        "summary calls counted"
    );
    assert!(metric_sum(&metrics, "openclaw_context_tokens_saved_total") > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_over_the_window_is_refused_on_tasks_and_chat() {
    let sim = Sim::start(&[]).await;
    let node = Node::start(&config(
        &sim,
        2,
        json!({"session": {"context_management": {"max_context_tokens": WINDOW}}}),
    ))
    .await;
    let long = "budgets and windows keep every prompt honest ".repeat(100);

    let id = node
        .submit_ok(json!({"input": long, "session_id": "s-big"}))
        .await;
    let v = node.wait_final(&id, TURN_DEADLINE).await;
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "context_length_exceeded", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("over the limit of 600"), "{msg}");
    assert!(sim.calls(Some(&id)).await.is_empty(), "nothing was sent");

    let r = node
        .http
        .post(format!("{}/v1/chat/completions", node.url))
        .json(&json!({"model": "fast", "messages": [{"role": "user", "content": long}]}))
        .send()
        .await
        .unwrap();
    let st = r.status();
    let msg = assert_error(
        "chat over the window",
        (st, r.json().await.unwrap()),
        400,
        "context_length_exceeded",
    );
    assert!(msg.contains("max_context_tokens 600"), "{msg}");

    // A short input in the same session still runs.
    let id = node
        .submit_ok(json!({"input": "and now a short one", "session_id": "s-big"}))
        .await;
    let v = node.wait_final(&id, TURN_DEADLINE).await;
    assert_eq!(v["status"], "succeeded", "{v}");
}

/// A turn whose answer fails after its summary call keeps the summary it paid for: the next
/// turn carries it and does not summarise the same messages again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_turn_keeps_the_summary_it_paid_for() {
    let sim = Sim::start(&[]).await;
    let node = Node::start(&config(
        &sim,
        2,
        json!({"session": {"context_management": {
            "max_context_tokens": WINDOW,
            "sliding_window": {"enabled": true, "keep_recent_messages": 2, "summarize_older": true}
        }}}),
    ))
    .await;
    let turn = |input: String| {
        let node = &node;
        async move {
            let id = node
                .submit_ok(json!({"input": input, "session_id": "s-fail"}))
                .await;
            node.wait_final(&id, TURN_DEADLINE).await
        }
    };
    let summary_calls = || async {
        sim.calls(None)
            .await
            .iter()
            .filter(|c| c["summary"] == true)
            .count()
    };
    for n in 0..2 {
        let v = turn(user_turn(n)).await;
        assert_eq!(v["status"], "succeeded", "{v}");
    }
    assert_eq!(summary_calls().await, 0, "two turns fit the window");
    // Turn 3: two messages leave the window and are summarised; then the answer fails (the
    // simulator's directive answers 500 to every model the fallback chain tries).
    let v = turn(format!("{} [sim:500]", user_turn(2))).await;
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(summary_calls().await, 1, "the summary was made");
    let (_, s) = node.get_json("/api/sessions/s-fail").await;
    assert!(
        s["summary"].as_str().is_some_and(|t| !t.is_empty()),
        "the failed turn kept its summary: {s}"
    );
    assert_eq!(s["turns"], 3, "{s}");
    // Turn 4 carries that summary and makes no new summary call for the same messages.
    let v = turn(user_turn(3)).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    assert!(v["prompt"]["summary"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(
        summary_calls().await,
        1,
        "the folded messages were not summarised twice"
    );
}

//! `bench --scenario context` (by name only): a scripted multi-turn workload — `--sessions`
//! sessions × `--turns` turns of mixed lengths, the sessions concurrent, the turns of one session
//! one after another — run twice on fresh children: context management off (no sliding window,
//! no compression, `max_context_tokens` at the model's window) and on (the chapter's
//! `session.context_management`). Per mode: input tokens per turn, total tokens and cost of the
//! answers, the summary calls' share (from the simulator's call log, which flags them), and the
//! turn latency p50/p99 (submit → final, long-poll), so the latency the summary calls add shows.
//!
//! A single node: Raft bytes per turn are the cluster scenario's business, not measured here.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use super::common::*;

/// Longest one turn may take before the run gives up.
const TURN_TIMEOUT: Duration = Duration::from_secs(120);
/// The model's `context_window` in both modes (the built-in default).
const MODEL_WINDOW: u64 = 128_000;
/// Price of the one model (USD per 1M tokens): gpt-4o-mini's.
const PRICE_IN: f64 = 0.15;
const PRICE_OUT: f64 = 0.6;

/// One mode's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ModeReport {
    pub mode: &'static str,
    pub turns: usize,
    pub failed: usize,
    /// Mean input tokens of an answer call.
    pub input_per_turn: f64,
    /// Input tokens of the last turn of each session, averaged.
    pub input_last_turn: f64,
    pub answer_tokens: u64,
    pub summary_calls: u64,
    pub summary_tokens: u64,
    pub total_tokens: u64,
    pub cost_usd: f64,
    pub turn_p50_ms: u32,
    pub turn_p99_ms: u32,
}

/// The `n`th user message of session `s`: 10..~200 tokens, deterministic.
fn user_turn(s: usize, n: usize) -> String {
    const TOPICS: [&str; 5] = [
        "the rollout of cluster alpha",
        "the quarterly budget review",
        "the gateway's latency report",
        "moving the nightly backup",
        "the fallback chain for the cheap model",
    ];
    let topic = TOPICS[(s + n) % TOPICS.len()];
    let reps = [1usize, 2, 4, 8, 16][(s * 7 + n * 3) % 5];
    format!(
        "Session {s}, turn {n}: what is next for {topic}? {}",
        "Keep the names, dates and numbers we agreed on exact. ".repeat(reps)
    )
}

fn config(sim: std::net::SocketAddr, on: bool) -> Value {
    let mut cfg = node_config(sim);
    cfg["models"]["bench"]["context_window"] = json!(MODEL_WINDOW);
    cfg["server"]["workers"] = json!(32);
    cfg["session"] = if on {
        // The chapter's §18.3 block, as printed.
        json!({"context_management": {
            "max_context_tokens": 32000,
            "sliding_window": {"enabled": true, "keep_recent_messages": 20, "summarize_older": true},
            "compression": {"enabled": true, "trigger_threshold": 0.8, "target_ratio": 0.5,
                            "preserve_system_prompt": true, "preserve_tool_results": true}
        }})
    } else {
        json!({"context_management": {
            "max_context_tokens": MODEL_WINDOW,
            "sliding_window": {"enabled": false},
            "compression": {"enabled": false}
        }})
    };
    cfg
}

/// Run one session's turns; returns (latency ms, task view) per turn.
async fn session(
    client: reqwest::Client,
    base: String,
    s: usize,
    turns: usize,
) -> anyhow::Result<Vec<(u32, Value)>> {
    let mut out = Vec::with_capacity(turns);
    for n in 0..turns {
        let started = Instant::now();
        let body =
            json!({"input": user_turn(s, n), "session_id": format!("bench-{s}"), "cache": false});
        let view = task_final(&client, &base, &body, TURN_TIMEOUT)
            .await
            .map_err(|e| anyhow::anyhow!("turn {n} of session {s}: {e}"))?;
        out.push((micros(started.elapsed()) / 1000, view));
    }
    Ok(out)
}

async fn run_mode(args: &BenchArgs, on: bool) -> anyhow::Result<ModeReport> {
    let dir = ScratchDir::create()?;
    let (sim, node) =
        start_children(&dir.0, "context", args.sim_latency_ms, |a| config(a, on)).await?;
    let client = load_client()?;
    let base = node.http_url();
    let mut handles = Vec::new();
    for s in 0..args.sessions {
        handles.push(tokio::spawn(session(
            client.clone(),
            base.clone(),
            s,
            args.turns,
        )));
    }
    let mut lat: Vec<u32> = Vec::new();
    let mut views: Vec<Value> = Vec::new();
    let mut last_inputs: Vec<u64> = Vec::new();
    for h in handles {
        let turns = h.await??;
        if let Some((_, v)) = turns.last() {
            last_inputs.push(v["tokens"]["input"].as_u64().unwrap_or(0));
        }
        for (ms, v) in turns {
            lat.push(ms);
            views.push(v);
        }
    }
    let calls: Value = client
        .get(format!("{}/sim/calls", sim.url()))
        .send()
        .await?
        .json()
        .await?;
    let calls = calls["calls"].as_array().cloned().unwrap_or_default();
    let (mut sum_calls, mut sum_in, mut sum_out) = (0u64, 0u64, 0u64);
    for c in calls.iter().filter(|c| c["summary"] == true) {
        sum_calls += 1;
        sum_in += c["input_tokens"].as_u64().unwrap_or(0);
        sum_out += c["output_tokens"].as_u64().unwrap_or(0);
    }
    let failed = views.iter().filter(|v| v["status"] != "succeeded").count();
    let (ans_in, ans_out): (u64, u64) = views.iter().fold((0, 0), |(i, o), v| {
        (
            i + v["tokens"]["input"].as_u64().unwrap_or(0),
            o + v["tokens"]["output"].as_u64().unwrap_or(0),
        )
    });
    let cost = |i: u64, o: u64| (i as f64 * PRICE_IN + o as f64 * PRICE_OUT) / 1e6;
    lat.sort_unstable();
    drop(node);
    drop(sim);
    Ok(ModeReport {
        mode: if on { "on (chapter §18.3)" } else { "off" },
        turns: views.len(),
        failed,
        input_per_turn: ans_in as f64 / views.len().max(1) as f64,
        input_last_turn: last_inputs.iter().sum::<u64>() as f64 / last_inputs.len().max(1) as f64,
        answer_tokens: ans_in + ans_out,
        summary_calls: sum_calls,
        summary_tokens: sum_in + sum_out,
        total_tokens: ans_in + ans_out + sum_in + sum_out,
        cost_usd: cost(ans_in + sum_in, ans_out + sum_out),
        turn_p50_ms: percentile(&lat, 50.0),
        turn_p99_ms: percentile(&lat, 99.0),
    })
}

/// Both modes, off first.
pub async fn run(args: &BenchArgs) -> anyhow::Result<Vec<ModeReport>> {
    let off = run_mode(args, false).await?;
    let on = run_mode(args, true).await?;
    Ok(vec![off, on])
}

pub fn print(rows: &[ModeReport], args: &BenchArgs) {
    println!(
        "\n## context: {} sessions x {} turns, sim latency {} ms",
        args.sessions, args.turns, args.sim_latency_ms
    );
    println!(
        "| mode | turns (failed) | input tok/turn | input tok, last turn | answer tokens | summary calls | summary tokens | total tokens | cost USD | turn p50 ms | turn p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} ({}) | {:.0} | {:.0} | {} | {} | {} | {} | {:.4} | {} | {} |",
            r.mode,
            r.turns,
            r.failed,
            r.input_per_turn,
            r.input_last_turn,
            r.answer_tokens,
            r.summary_calls,
            r.summary_tokens,
            r.total_tokens,
            r.cost_usd,
            r.turn_p50_ms,
            r.turn_p99_ms
        );
    }
    if let [off, on] = rows {
        let saved = |a: f64, b: f64| if a > 0.0 { 100.0 * (a - b) / a } else { 0.0 };
        println!(
            "on vs off: input tokens/turn {:+.1} %, total tokens (summaries included) {:+.1} %, cost {:+.1} %, turn latency p50 {:+} ms, p99 {:+} ms",
            -saved(off.input_per_turn, on.input_per_turn),
            -saved(off.total_tokens as f64, on.total_tokens as f64),
            -saved(off.cost_usd, on.cost_usd),
            i64::from(on.turn_p50_ms) - i64::from(off.turn_p50_ms),
            i64::from(on.turn_p99_ms) - i64::from(off.turn_p99_ms),
        );
    }
}

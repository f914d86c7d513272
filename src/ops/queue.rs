//! `openclaw-node queue [--failed]`: a node's queue from `GET /api/queue` — depth per level,
//! running tasks (with what they wait for: `rate_limited (scope)`), recent failures; `--failed` shows only failed tasks and failed callback
//! deliveries. `--json` prints the node's answer (or, with `--failed`, its failure lists).

use openclaw_proto::api::QueueView;
use serde_json::json;

use crate::cli::QueueArgs;

use super::{render_table, Align};

fn failures_table(q: &QueueView) -> String {
    let mut out = String::new();
    let rows: Vec<Vec<String>> = q
        .recent_failures
        .iter()
        .map(|t| {
            let (code, msg) = t
                .error
                .as_ref()
                .map(|e| (e.code.clone(), e.message.clone()))
                .unwrap_or_default();
            vec![
                t.id.clone(),
                t.agent.clone(),
                t.priority.as_str().to_string(),
                t.model.clone().unwrap_or_default(),
                code,
                t.finished_at.clone().unwrap_or_default(),
                msg,
            ]
        })
        .collect();
    out.push_str(&format!("Failed tasks (most recent {}):\n", rows.len()));
    out.push_str(&render_table(
        &[
            ("id", Align::Left),
            ("agent", Align::Left),
            ("priority", Align::Left),
            ("model", Align::Left),
            ("error", Align::Left),
            ("finished", Align::Left),
            ("message", Align::Left),
        ],
        &rows,
    ));
    let rows: Vec<Vec<String>> = q
        .failed_deliveries
        .iter()
        .map(|d| {
            vec![
                d.task_id.clone(),
                d.callback_url.clone(),
                d.attempts.to_string(),
                d.failed_at.clone(),
                d.last_error.clone(),
            ]
        })
        .collect();
    out.push_str(&format!("\nFailed callback deliveries ({}):\n", rows.len()));
    out.push_str(&render_table(
        &[
            ("task", Align::Left),
            ("callback_url", Align::Left),
            ("attempts", Align::Right),
            ("failed", Align::Left),
            ("last error", Align::Left),
        ],
        &rows,
    ));
    out
}

/// The readable form of a queue answer.
pub fn render(q: &QueueView, failed_only: bool) -> String {
    if failed_only {
        return failures_table(q);
    }
    let mut out = format!(
        "Queue: {} waiting (max {}), {} running on {} workers\n",
        q.queued, q.queue_max, q.running, q.workers
    );
    let order = ["critical", "high", "normal", "low", "background"];
    let mut rows: Vec<Vec<String>> = order
        .iter()
        .filter_map(|l| q.depth.get(*l).map(|n| vec![l.to_string(), n.to_string()]))
        .collect();
    for (l, n) in &q.depth {
        if !order.contains(&l.as_str()) {
            rows.push(vec![l.clone(), n.to_string()]);
        }
    }
    out.push_str(&render_table(
        &[("level", Align::Left), ("waiting", Align::Right)],
        &rows,
    ));
    let rows: Vec<Vec<String>> = q
        .running_tasks
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.agent.clone(),
                t.priority.as_str().to_string(),
                t.model.clone().unwrap_or_default(),
                format!("{:.1}", t.running_ms as f64 / 1000.0),
                match (&t.waiting_reason, &t.waiting_scope) {
                    (Some(r), Some(s)) => format!("{r} ({s})"),
                    (Some(r), None) => r.clone(),
                    _ => "-".into(),
                },
            ]
        })
        .collect();
    out.push_str(&format!("\nRunning ({}):\n", rows.len()));
    out.push_str(&render_table(
        &[
            ("id", Align::Left),
            ("agent", Align::Left),
            ("priority", Align::Left),
            ("model", Align::Left),
            ("running s", Align::Right),
            ("waiting", Align::Left),
        ],
        &rows,
    ));
    out.push('\n');
    out.push_str(&failures_table(q));
    out
}

pub async fn run(args: QueueArgs) -> anyhow::Result<i32> {
    let client = crate::client::Client::new(&args.target)?;
    let q = client.queue().await?;
    if args.json {
        if args.failed {
            super::print_json(&json!({
                "recent_failures": q.recent_failures,
                "failed_deliveries": q.failed_deliveries,
            }))?;
        } else {
            super::print_json(&q)?;
        }
    } else {
        print!("{}", render(&q, args.failed));
    }
    Ok(0)
}

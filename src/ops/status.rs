//! `openclaw-node status [--node URL] [--json]` and `openclaw-node leave`.
//!
//! `status` renders `GET /api/cluster`: the nodes (id, address, role, alive, last contact, lag,
//! tasks per level), leader and term, task totals, budgets with their leases, and rate-limit
//! headroom per model over the sliding window ending now. `--json` prints the node's answer unchanged.
//!
//! A node running alone has no cluster: `status` then prints that node's own view — its queue
//! (`GET /api/queue`), rate limits (`GET /api/limits`) and budgets (`GET /api/budget`) — and
//! exits 0 (`--json`: `{"clustered": false, "node", "queue", "limits", "budget"}`).

use openclaw_proto::api::QueueView;
use openclaw_proto::ops::{BudgetView, LimitsView};
use serde_json::Value;

use super::{render_table, Align};
use crate::cli::{LeaveArgs, StatusArgs};

const LEVELS: [&str; 5] = ["critical", "high", "normal", "low", "background"];

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(x) => x.clone(),
        other => other.to_string(),
    }
}

fn per_level(v: &Value) -> String {
    LEVELS
        .iter()
        .map(|l| v.get(*l).and_then(Value::as_u64).unwrap_or(0).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// The readable form of a cluster status.
pub fn render(st: &Value) -> String {
    let mut out = format!(
        "Cluster: leader {} · term {} · asked node {} ({})\n",
        s(&st["leader"]),
        s(&st["term"]),
        s(&st["node_id"]),
        s(&st["role"]),
    );
    let t = &st["tasks"];
    out.push_str(&format!(
        "Tasks: {} queued · {} running · {} succeeded · {} failed · {} cancelled\n\n",
        s(&t["queued"]),
        s(&t["running"]),
        s(&t["succeeded"]),
        s(&t["failed"]),
        s(&t["cancelled"]),
    ));
    let rows: Vec<Vec<String>> = st["nodes"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|n| {
            vec![
                s(&n["id"]),
                s(&n["address"]),
                s(&n["http"]),
                s(&n["role"]),
                if n["alive"].as_bool() == Some(true) {
                    "yes"
                } else {
                    "NO"
                }
                .into(),
                n["last_contact_ms"]
                    .as_u64()
                    .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
                    .unwrap_or_else(|| "-".into()),
                s(&n["lag"]),
                s(&n["workers"]),
                per_level(&n["tasks"]["queued"]),
                per_level(&n["tasks"]["running"]),
            ]
        })
        .collect();
    out.push_str(&render_table(
        &[
            ("id", Align::Right),
            ("cluster", Align::Left),
            ("http", Align::Left),
            ("role", Align::Left),
            ("alive", Align::Left),
            ("contact", Align::Right),
            ("lag", Align::Right),
            ("workers", Align::Right),
            ("queued c/h/n/l/b", Align::Left),
            ("running c/h/n/l/b", Align::Left),
        ],
        &rows,
    ));
    let budgets: Vec<Vec<String>> = st["budgets"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|b| {
            let leases = b["leases"]
                .as_array()
                .map(|a| a.as_slice())
                .unwrap_or_default()
                .iter()
                .map(|l| format!("{}:{}", s(&l["node"]), s(&l["tokens"])))
                .collect::<Vec<_>>()
                .join(" ");
            vec![
                s(&b["scope"]),
                s(&b["period"]),
                s(&b["spent_tokens"]),
                s(&b["limit_tokens"]),
                format!("{:.4}", b["spent_cost_usd"].as_f64().unwrap_or(0.0)),
                s(&b["limit_cost_usd"]),
                leases,
            ]
        })
        .collect();
    out.push_str(&format!("\nBudgets ({}):\n", budgets.len()));
    out.push_str(&render_table(
        &[
            ("scope", Align::Left),
            ("period", Align::Left),
            ("spent tokens", Align::Right),
            ("limit", Align::Right),
            ("spent $", Align::Right),
            ("limit $", Align::Right),
            ("leases node:tokens", Align::Left),
        ],
        &budgets,
    ));
    out.push_str(&render_unsettled(st));
    let rates: Vec<Vec<String>> = st["rate_limits"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|r| {
            vec![
                s(&r["scope"]),
                s(&r["limit_requests"]),
                s(&r["granted_requests"]),
                s(&r["headroom_requests"]),
                s(&r["limit_tokens"]),
                s(&r["headroom_tokens"]),
            ]
        })
        .collect();
    out.push_str(&format!(
        "\nRate limits, sliding window ending now ({}):\n",
        rates.len()
    ));
    out.push_str(&render_table(
        &[
            ("scope", Align::Left),
            ("rpm", Align::Right),
            ("granted", Align::Right),
            ("headroom", Align::Right),
            ("tpm", Align::Right),
            ("token headroom", Align::Right),
        ],
        &rates,
    ));
    out
}

/// The readable form of a lone node's view.
/// The unsettled spend estimates of down nodes, per budget scope (nothing when there are none):
/// their leases' granted − settled, shown until the leases expire.
fn render_unsettled(st: &serde_json::Value) -> String {
    let mut lines = Vec::new();
    for b in st["budgets"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
    {
        for d in b["unsettled_dead_nodes"]
            .as_array()
            .map(|a| a.as_slice())
            .unwrap_or_default()
        {
            lines.push(format!(
                "  {}: node {} down, up to {} tokens / ${:.4} unsettled (lease expires {})\n",
                s(&b["scope"]),
                s(&d["node"]),
                s(&d["tokens"]),
                d["cost_usd"].as_f64().unwrap_or(0.0),
                s(&d["lease_expires_at"])
            ));
        }
    }
    if lines.is_empty() {
        return String::new();
    }
    format!(
        "Unsettled spend of down nodes (granted − settled, an upper bound):\n{}",
        lines.concat()
    )
}

pub fn render_alone(node: &str, q: &QueueView, limits: &LimitsView, budget: &BudgetView) -> String {
    let mut out = format!("Node {node} runs alone (not clustered)\n");
    out.push_str(&format!(
        "Queue: {} waiting (max {}), {} running on {} workers{}\n",
        q.queued,
        q.queue_max,
        q.running,
        q.workers,
        match &q.paused {
            Some(p) => format!(" · paused by the {p}"),
            None => String::new(),
        }
    ));
    let waiting: Vec<String> = LEVELS
        .iter()
        .map(|l| q.depth.get(*l).copied().unwrap_or(0).to_string())
        .collect();
    out.push_str(&format!("Waiting c/h/n/l/b: {}\n", waiting.join("/")));
    let rows: Vec<Vec<String>> = budget
        .scopes
        .iter()
        .map(|b| {
            vec![
                b.scope.clone(),
                b.spent_tokens.to_string(),
                b.limit_tokens
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into()),
                super::cost::usd(b.spent_cost_usd),
                b.limit_cost_usd
                    .map(super::cost::usd)
                    .unwrap_or_else(|| "-".into()),
                b.state.clone(),
            ]
        })
        .collect();
    out.push_str(&format!(
        "\nBudgets {} ({}):\n",
        if budget.enabled {
            budget.period.as_str()
        } else {
            "(disabled)"
        },
        rows.len()
    ));
    out.push_str(&render_table(
        &[
            ("scope", Align::Left),
            ("spent tokens", Align::Right),
            ("limit", Align::Right),
            ("spent $", Align::Right),
            ("limit $", Align::Right),
            ("state", Align::Left),
        ],
        &rows,
    ));
    let opt = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_else(|| "-".into());
    let rows: Vec<Vec<String>> = limits
        .scopes
        .iter()
        .map(|l| {
            vec![
                l.scope.clone(),
                opt(l.requests_per_window.map(u64::from)),
                l.requests_in_window.to_string(),
                opt(l.remaining_requests),
                opt(l.tokens_per_window),
                opt(l.remaining_tokens),
                l.in_flight.to_string(),
                l.waiters.to_string(),
            ]
        })
        .collect();
    out.push_str(&format!(
        "\nRate limits per {} s ({}):\n",
        limits.window_seconds,
        rows.len()
    ));
    out.push_str(&render_table(
        &[
            ("scope", Align::Left),
            ("requests", Align::Right),
            ("used", Align::Right),
            ("headroom", Align::Right),
            ("tokens", Align::Right),
            ("token headroom", Align::Right),
            ("in flight", Align::Right),
            ("waiting", Align::Right),
        ],
        &rows,
    ));
    out
}

pub async fn run(args: StatusArgs) -> anyhow::Result<i32> {
    let client = crate::client::Client::new(&args.target)?;
    let st = match client.cluster().await {
        Ok(st) => st,
        Err(e)
            if e.downcast_ref::<crate::client::ApiFailure>()
                .is_some_and(|f| f.code == "not_clustered") =>
        {
            return alone(&client, args.json).await;
        }
        Err(e) => return Err(e),
    };
    if args.json {
        super::print_json(&st)?;
    } else {
        print!("{}", render(&st));
    }
    Ok(0)
}

/// `status` of a node running alone: its queue, limits and budgets.
async fn alone(client: &crate::client::Client, json: bool) -> anyhow::Result<i32> {
    let q: QueueView = client.get_json("/api/queue").await?;
    let limits: LimitsView = client.get_json("/api/limits").await?;
    let budget: BudgetView = client.get_json("/api/budget").await?;
    let health: Value = client.get_json("/health").await?;
    let node = s(&health["node"]);
    if json {
        super::print_json(&serde_json::json!({
            "clustered": false,
            "node": node,
            "queue": q,
            "limits": limits,
            "budget": budget,
        }))?;
    } else {
        print!("{}", render_alone(&node, &q, &limits, &budget));
    }
    Ok(0)
}

pub async fn leave(args: LeaveArgs) -> anyhow::Result<i32> {
    let client = crate::client::Client::new(&args.target)?;
    let r = client.leave(args.id).await?;
    println!("node {} left the cluster", s(&r["left"]));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_nodes_budgets_and_rates() {
        let st = json!({
            "node_id": 7, "leader": 7, "term": 3, "role": "leader",
            "tasks": {"queued": 1, "running": 2, "succeeded": 3, "failed": 0, "cancelled": 0},
            "nodes": [
                {"id": 7, "address": "127.0.0.2:7000", "http": "127.0.0.2:3000", "role": "leader",
                 "alive": true, "last_contact_ms": 0, "lag": 0, "workers": 4,
                 "tasks": {"queued": {"critical": 1}, "running": {"normal": 2}}},
                {"id": 9, "address": "127.0.0.3:7000", "http": "127.0.0.3:3000", "role": "follower",
                 "alive": false, "last_contact_ms": 4200, "lag": 12, "workers": 4,
                 "tasks": {"queued": {}, "running": {}}}
            ],
            "budgets": [{"scope": "total", "period": "2026-11", "spent_tokens": 100, "limit_tokens": 1000,
                          "spent_cost_usd": 0.5, "limit_cost_usd": null, "leases": [{"node": 7, "tokens": 50}]}],
            "rate_limits": [{"scope": "gpt-4o", "limit_requests": 60, "granted_requests": 10,
                              "headroom_requests": 50, "limit_tokens": null, "headroom_tokens": null}]
        });
        let out = render(&st);
        assert!(out.contains("leader 7 · term 3"), "{out}");
        assert!(out.contains("1/0/0/0/0"), "{out}");
        assert!(out.contains("0/0/2/0/0"), "{out}");
        assert!(out.contains("NO"), "{out}");
        assert!(out.contains("4.2s"), "{out}");
        assert!(out.contains("7:50"), "{out}");
        assert!(out.contains("gpt-4o"), "{out}");
        assert!(
            !out.contains("Unsettled"),
            "no down node, no section: {out}"
        );
    }

    #[test]
    fn renders_a_down_nodes_unsettled_spend() {
        let st = json!({
            "budgets": [{"scope": "total", "period": "2026-11", "spent_tokens": 100,
                          "leases": [{"node": 7, "tokens": 50}, {"node": 9, "tokens": 300}],
                          "unsettled_dead_nodes": [{"node": 9, "tokens": 300, "cost_usd": 0.25,
                                                    "lease_expires_at": "2026-11-23T10:00:30Z"}]}]
        });
        let out = render_unsettled(&st);
        assert!(out.starts_with("Unsettled spend of down nodes"), "{out}");
        assert!(
            out.contains("total: node 9 down, up to 300 tokens / $0.2500 unsettled (lease expires 2026-11-23T10:00:30Z)"),
            "{out}"
        );
        assert_eq!(render_unsettled(&json!({"budgets": []})), "");
    }
}

//! The operator's commands over real processes: a node and a `sim-provider`, then
//! `openclaw-node tokens|cost|queue|doctor|config ...` run as the operator would.
//!
//! - `tokens --json` / `cost --json` totals equal the sum over the tasks' own token counts and
//!   the configured prices, and agree with the chapter's `openclaw-cost-tracker.py`.
//! - `config set` on a running node's file reroutes the next task without a restart; an invalid
//!   `config set` leaves the file byte-for-byte unchanged and exits non-zero; a broken file is
//!   refused by the reload and the node keeps its config.
//! - `doctor` exits 0 on a healthy node and 1 naming a model whose base_url is dead.
//! - `queue --failed --json` lists a failed task.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn ops_json(args: &[&str]) -> Value {
    let (code, out, err) = run_cli(args);
    assert_eq!(code, 0, "{args:?} failed: {err}\n{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
}

fn dir_arg(p: &Path) -> String {
    p.display().to_string()
}

/// Poll `f` until it returns Some, or panic with `what` after `deadline`.
async fn poll<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "not reached within {deadline:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_cost_match_the_tasks_and_the_chapter_tracker() {
    let sim = Sim::start(&[]).await;
    // The chapter's model names at the chapter's prices, served by the simulator process.
    let model = |i: f64, o: f64| json!({"provider": "sim", "base_url": sim.base_url(), "price": {"input": i, "output": o}});
    let cfg = json!({
        "models": {"gpt-4o": model(2.5, 10.0), "gpt-4o-mini": model(0.15, 0.6)},
        "model_routing": {"default_model": "gpt-4o-mini"},
        "server": {"workers": 2},
    });
    let node = Node::start(&cfg).await;
    let mut ids = Vec::new();
    for (i, m) in [None, None, Some("gpt-4o"), Some("gpt-4o")]
        .iter()
        .enumerate()
    {
        let mut body = json!({"input": format!("summarise report number {i} in detail please")});
        if let Some(m) = m {
            body["model"] = json!(m);
        }
        ids.push(node.submit_ok(body).await);
    }
    // Expected: per model, the tasks' own token counts.
    let mut per_model: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for id in &ids {
        let v = node.wait_final(id, TASK_DEADLINE).await;
        assert_eq!(v["status"], "succeeded", "{v}");
        let e = per_model
            .entry(v["model"].as_str().unwrap().to_string())
            .or_default();
        e.0 += v["tokens"]["input"].as_u64().unwrap();
        e.1 += v["tokens"]["output"].as_u64().unwrap();
    }
    let want_in: u64 = per_model.values().map(|t| t.0).sum();
    let want_out: u64 = per_model.values().map(|t| t.1).sum();
    assert!(want_in > 0 && want_out > 0, "{per_model:?}");
    let price = |m: &str| {
        if m == "gpt-4o" {
            (2.5, 10.0)
        } else {
            (0.15, 0.6)
        }
    };
    let want_cost: f64 = per_model
        .iter()
        .map(|(m, (i, o))| (*i as f64 * price(m).0 + *o as f64 * price(m).1) / 1e6)
        .sum();

    let data = dir_arg(&node.data_dir);
    let cfg_path = dir_arg(&node.data_dir.join("openclaw.json"));
    // The audit writer flushes per batch: poll until every task's tokens are on disk.
    let tokens = poll(
        "tokens --json totals equal the tasks' tokens",
        Duration::from_secs(20),
        || {
            let t = ops_json(&["tokens", "--data-dir", &data, "--json"]);
            (t["total"]["input"] == want_in && t["total"]["output"] == want_out).then_some(t)
        },
    )
    .await;
    assert!(
        tokens["total"]["calls"].as_u64().unwrap() >= ids.len() as u64,
        "{tokens}"
    );
    let ratio = want_in as f64 / want_out as f64;
    assert_eq!(tokens["ratio_text"], format!("{ratio:.1}:1"), "{tokens}");
    let (code, table, _) = run_cli(&["tokens", "--data-dir", &data]);
    assert_eq!(code, 0);
    assert!(
        table.contains("avg per call") && table.contains("input/output ratio"),
        "{table}"
    );

    let cost = ops_json(&["cost", "--data-dir", &data, "--config", &cfg_path, "--json"]);
    let got = cost["total_cost_usd"].as_f64().unwrap();
    assert!(
        (got - want_cost).abs() < 1e-9,
        "cost {got} vs {want_cost}: {cost}"
    );
    assert_eq!(cost["total_input"], want_in, "{cost}");
    assert_eq!(
        cost["models"][0]["model"], "gpt-4o",
        "sorted by cost: {cost}"
    );
    assert!(
        cost["projected_month_end_usd"].as_f64().unwrap() >= got,
        "{cost}"
    );

    // The chapter's tracker, unchanged, on the same log (HOME pointed at a copy).
    if !prereq::require(
        "python3 (openclaw-cost-tracker.py)",
        prereq::python(None),
        "apt-get install python3",
    ) {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let logs = home.path().join(".openclaw/logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::copy(
        node.data_dir.join("logs/config-audit.jsonl"),
        logs.join("config-audit.jsonl"),
    )
    .unwrap();
    let out = Command::new("python3")
        .arg(scripts_dir().join("openclaw-cost-tracker.py"))
        .env("HOME", home.path())
        .env("PYTHONIOENCODING", "utf-8")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "tracker failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let total_line = text
        .lines()
        .find(|l| l.starts_with("合计"))
        .unwrap_or_else(|| panic!("{text}"));
    let tracker_total: f64 = total_line
        .split_whitespace()
        .last()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        format!("{tracker_total:.2}"),
        format!("{got:.2}"),
        "tracker:\n{text}\nours: {cost}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_set_reroutes_a_running_node_and_bad_edits_change_nothing() {
    let sim = Sim::start(&[]).await;
    let node = Node::start(&config(
        &sim,
        2,
        json!({"server": {"node_name": "ops-node"}}),
    ))
    .await;
    let file = node.data_dir.join("openclaw.json");
    let cfg_path = dir_arg(&file);
    let first = node.submit_ok(json!({"input": "hello"})).await;
    assert_eq!(
        node.wait_final(&first, TASK_DEADLINE).await["model"],
        "fast"
    );

    let (code, out, err) = run_cli(&[
        "config",
        "set",
        "--config",
        &cfg_path,
        "model_routing.default_model",
        "smart",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let written: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(written["model_routing"]["default_model"], "smart");
    assert_eq!(
        written["server"]["node_name"], "ops-node",
        "other keys kept: {written}"
    );
    assert!(written["models"]["fast"].is_object(), "{written}");
    let (code, out, _) = run_cli(&[
        "config",
        "get",
        "--config",
        &cfg_path,
        "model_routing.default_model",
    ]);
    assert_eq!((code, out.trim()), (0, "\"smart\""));

    // The running node picks it up by itself (no restart): poll with fresh tasks.
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let id = node.submit_ok(json!({"input": "which model now?"})).await;
        let v = node.wait_final(&id, TASK_DEADLINE).await;
        if v["model"] == "smart" {
            break;
        }
        assert!(
            Instant::now() < end,
            "still on {} after config set; stderr:\n{}",
            v["model"],
            node.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(node.pid().is_some(), "same process");
    let m = node.metrics().await;
    assert!(
        m.lines().any(
            |l| l.starts_with("openclaw_config_reloads_total{result=\"ok\"}") && !l.ends_with(" 0")
        ),
        "{m}"
    );

    // An invalid value: exit non-zero, path named, file unchanged.
    let before = std::fs::read(&file).unwrap();
    let (code, _, err) = run_cli(&[
        "config",
        "set",
        "--config",
        &cfg_path,
        "model_routing.default_model",
        "gpt-9",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("model_routing.default_model") && err.contains("gpt-9"),
        "{err}"
    );
    let (code, _, err) = run_cli(&[
        "config",
        "set",
        "--config",
        &cfg_path,
        "server.workers",
        "0",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("server.workers"), "{err}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "file changed by a rejected set"
    );
    let (code, _, _) = run_cli(&["config", "validate", &cfg_path]);
    assert_eq!(code, 0);

    // Reload on demand: nothing changed.
    let r = node
        .http
        .post(format!("{}/api/config/reload", node.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["result"], "unchanged");

    // A broken file written by hand: validate fails naming it, the reload refuses it, and the
    // node keeps routing with the config it has.
    std::fs::write(
        &file,
        b"{\"model_routing\": {\"default_model\": \"nope\"}, \"models\": {}}",
    )
    .unwrap();
    let (code, _, err) = run_cli(&["config", "validate", &cfg_path]);
    assert_eq!(code, 1);
    assert!(
        err.contains("models") || err.contains("default_model"),
        "{err}"
    );
    let got = node
        .http
        .post(format!("{}/api/config/reload", node.url))
        .send()
        .await
        .unwrap();
    let status = got.status().as_u16();
    let body: Value = got.json().await.unwrap();
    assert_error(
        "reload of a broken file",
        (reqwest::StatusCode::from_u16(status).unwrap(), body),
        422,
        "invalid_config",
    );
    let id = node.submit_ok(json!({"input": "still smart?"})).await;
    assert_eq!(node.wait_final(&id, TASK_DEADLINE).await["model"], "smart");
    assert!(
        node.stderr().contains("config reload failed"),
        "{}",
        node.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_a_healthy_node_and_names_a_dead_provider() {
    let sim = Sim::start(&[]).await;
    let node = Node::start(&config(&sim, 1, json!({}))).await;
    let data = dir_arg(&node.data_dir);
    let cfg_path = dir_arg(&node.data_dir.join("openclaw.json"));
    let args = [
        "doctor",
        "--data-dir",
        &data,
        "--config",
        &cfg_path,
        "--node",
        &node.url,
        "--json",
    ];
    let (code, out, err) = run_cli(&args);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let checks = v["checks"].as_array().unwrap();
    let by_name = |n: &str| {
        checks
            .iter()
            .find(|c| c["name"] == n)
            .unwrap_or_else(|| panic!("no {n}: {v}"))
            .clone()
    };
    for n in [
        "config",
        "data dir",
        "node /health",
        "node /ready",
        "model fast",
        "model smart",
    ] {
        assert_ne!(by_name(n)["status"], "fail", "{n}: {v}");
    }
    assert!(by_name("model fast")["latency_ms"].is_u64(), "{v}");

    // A model whose provider is gone (a closed port): exit 1, the model named with a fix.
    let dead = free_port();
    let mut cfg = config(&sim, 1, json!({}));
    cfg["models"]["broken"] = json!({"provider": "sim", "base_url": format!("http://127.0.0.1:{dead}/v1"), "price": {"input": 1, "output": 1}});
    std::fs::write(
        node.data_dir.join("openclaw.json"),
        serde_json::to_vec_pretty(&cfg).unwrap(),
    )
    .unwrap();
    let (code, out, err) = run_cli(&args);
    assert_eq!(code, 1, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let broken = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "model broken")
        .cloned()
        .unwrap();
    assert_eq!(broken["status"], "fail", "{v}");
    assert!(
        broken["fix"]
            .as_str()
            .unwrap()
            .contains("models.broken.base_url"),
        "{broken}"
    );
    // The readable form says the same.
    let (code, table, _) = run_cli(&args[..args.len() - 1]);
    assert_eq!(code, 1);
    assert!(
        table.contains("model broken") && table.contains("fix:"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_failed_lists_a_failed_task() {
    let sim = Sim::start(&[]).await;
    sim.set_faults(json!({"models": {"smart": {"error_rate": 1.0}}}))
        .await;
    let node = Node::start(&config(
        &sim,
        1,
        json!({"model_fallback": {"max_retries": 0, "retry_delay_ms": 10}}),
    ))
    .await;
    let id = node
        .submit_ok(json!({"input": "this will fail", "model": "smart"}))
        .await;
    let v = node.wait_final(&id, TASK_DEADLINE).await;
    assert_eq!(v["status"], "failed", "{v}");
    let q = ops_json(&["queue", "--node", &node.url, "--failed", "--json"]);
    let failed = q["recent_failures"].as_array().unwrap();
    assert!(failed.iter().any(|t| t["id"] == id.as_str()), "{q}");
    assert!(q["failed_deliveries"].is_array(), "{q}");
    let (code, table, _) = run_cli(&["queue", "--node", &node.url]);
    assert_eq!(code, 0);
    assert!(
        table.contains("Failed tasks") && table.contains(&id),
        "{table}"
    );
    // A node that is not there: a clear error, exit 1.
    let (code, _, err) = run_cli(&[
        "queue",
        "--node",
        &format!("http://127.0.0.1:{}", free_port()),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach the node"), "{err}");
}

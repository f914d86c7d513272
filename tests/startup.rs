//! Start-up and the command line do what they say (issue 13, "Configuration that does what it
//! says" and "Logs an operator can read"), over real processes:
//!
//! - models the config adds join the built-in ones (`/v1/models`, a task on the added model);
//! - a key that is accepted but does not act is warned about once at start-up and by `doctor`;
//!   `budget.limits.per_agent` naming an unknown agent, and an environment override the node
//!   refuses, stop start-up naming the JSON path / the variable;
//! - `--http localhost:PORT` is resolved; `--join http://…` is refused with the address to use;
//!   a join that cannot connect says why (connection refused, or an HTTP port instead of the
//!   cluster port) and gives up after `cluster.join_timeout_ms`;
//! - `config set` names the keys that need a restart;
//! - a data dir that cannot be written says so (permission denied / not a directory), never
//!   "another node is using it";
//! - the log on a file (not a terminal) has no ANSI colour codes.
//!
//! Nodes expected to run are started through the harness; nodes expected to refuse their
//! config, and `config`/`doctor`, are one-shot commands with the harness's scrubbed environment.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Run `openclaw-node <args>` (scrubbed environment plus `env`) to its end, killed after 60 s
/// → (exit code, stdout, stderr).
fn run(
    args: &[&str],
    env: &[(&str, &str)],
    setup: impl FnOnce(&mut Command),
) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    scrub_env(&mut cmd);
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    setup(&mut cmd);
    let mut child = cmd.spawn().expect("running openclaw-node");
    let st = wait_exit(&mut child, Duration::from_secs(60));
    if st.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(st.is_some(), "{args:?} did not exit; stderr:\n{e}");
    (out.status.code().unwrap_or(-1), o, e)
}

/// A node run that must fail: config `cfg` in a fresh dir, `args` added → stderr.
fn refused(cfg: &Value, args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openclaw.json");
    std::fs::write(&file, serde_json::to_vec(cfg).unwrap()).unwrap();
    let data = dir.path().join("data");
    let port = format!("127.0.0.1:{}", free_port());
    let mut all = vec![
        "--config",
        file.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--http",
        &port,
    ];
    all.extend_from_slice(args);
    let (code, _, err) = run(&all, env, |_| {});
    assert_ne!(code, 0, "{cfg} {args:?} was accepted; stderr:\n{err}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_models_join_the_built_ins_and_localhost_resolves() {
    let sim = Sim::start(&[]).await;
    let qwen = json!({"provider": "sim", "base_url": sim.base_url(), "price": {"input": 0.4, "output": 1.2}});
    // The harness config says `models_mode: replace`; an operator's file says nothing.
    let cfg = config(
        &sim,
        1,
        json!({"models_mode": "merge", "models": {"qwen-max": qwen}}),
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut node = Node::on_dir(tmp.path(), &cfg, &[]);
    node.spec_mut().http_host = Some("localhost".into());
    node.spawn_ready().await;
    assert!(
        node.stderr()
            .contains(&format!("--http localhost:{}", node.port)),
        "started with a host name: {}",
        node.stderr()
    );
    let (st, models) = node.get_json("/v1/models").await;
    assert!(st.is_success(), "{models}");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    for m in [
        "qwen-max",
        "fast",
        "gpt-4o",
        "gpt-4o-mini",
        "claude-3-5-sonnet",
        "claude-3-5-haiku",
        "deepseek-v3",
    ] {
        assert!(ids.contains(&m), "{m} missing from {ids:?}");
    }
    let id = node
        .submit_ok(json!({"input": "hi", "model": "qwen-max"}))
        .await;
    let v = node.wait_final(&id, TASK_DEADLINE).await;
    assert_eq!(
        (v["status"].as_str(), v["model"].as_str()),
        (Some("succeeded"), Some("qwen-max")),
        "{v}"
    );

    // The log went to a file: no colour codes (unless the environment forces none anyway).
    assert!(
        !node.stderr().contains('\u{1b}'),
        "ANSI codes in a log file:\n{}",
        node.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_that_do_not_act_are_warned_once_and_listed_by_doctor() {
    let sim = Sim::start(&[]).await;
    let cfg = config(
        &sim,
        1,
        json!({"budget": {"notification": {"channel": "feishu", "recipients": ["admin_group"]}}}),
    );
    let node = Node::start(&cfg).await;
    let log = node.stderr();
    for key in [
        "budget.notification.channel",
        "budget.notification.recipients",
    ] {
        let n = log
            .lines()
            .filter(|l| l.contains("WARN") && l.contains(key))
            .count();
        assert_eq!(n, 1, "one start-up warning for {key}:\n{log}");
    }
    let data = node.data_dir.display().to_string();
    let url = node.url.clone();
    let (code, out, err) = run(
        &["doctor", "--data-dir", &data, "--node", &url, "--json"],
        &[],
        |_| {},
    );
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    let checks = v["checks"].as_array().unwrap();
    for key in [
        "budget.notification.channel",
        "budget.notification.recipients",
    ] {
        let c = checks
            .iter()
            .find(|c| c["name"] == format!("config {key}"))
            .unwrap_or_else(|| panic!("doctor lists {key}: {v}"));
        assert_eq!(c["status"], "warn", "{c}");
    }
    assert_eq!(code, 0, "warnings do not fail doctor: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_and_env_overrides_stop_start_up_naming_them() {
    let sim = Sim::start(&[]).await;
    let cfg = config(
        &sim,
        1,
        json!({"budget": {"limits": {"per_agent": {"reviewer": {"tokens": 5}}}}}),
    );
    let e = refused(&cfg, &[], &[]);
    assert!(
        e.contains("budget.limits.per_agent.reviewer") && e.contains("unknown agent"),
        "{e}"
    );

    let cfg = config(&sim, 1, json!({}));
    let e = refused(&cfg, &[], &[("OPENCLAW__SERVER__WORKERS", "many")]);
    assert!(
        e.contains("OPENCLAW__SERVER__WORKERS") && e.contains("server.workers"),
        "{e}"
    );
    assert!(
        !e.contains("openclaw.json"),
        "the file is not to blame: {e}"
    );

    // Models added without `models_mode: replace` in mind: the error names the switch.
    let replace = json!({"models_mode": "replace", "models": {"qwen-max": {"provider": "sim", "price": {"input": 1, "output": 1}}}});
    let e = refused(&replace, &[], &[]);
    assert!(
        e.contains("model_routing.default_model") && e.contains("models_mode"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_say_why_they_fail_and_give_up() {
    let sim = Sim::start(&[]).await;
    let cfg = config(&sim, 1, json!({"cluster": {"join_timeout_ms": 2000}}));
    let secret = [("OPENCLAW_CLUSTER_SECRET", "s")];
    let cluster = |p: u16| format!("127.0.0.1:{p}");
    let me = cluster(free_port());

    let e = refused(
        &cfg,
        &["--cluster", &me, "--join", "http://127.0.0.1:7000"],
        &secret,
    );
    assert!(
        e.contains("is a URL") && e.contains("--join 127.0.0.1:7000"),
        "{e}"
    );

    // Nothing listens there.
    let dead = cluster(free_port());
    let e = refused(&cfg, &["--cluster", &me, "--join", &dead], &secret);
    assert!(e.contains("connection refused"), "{e}");
    assert!(e.contains("gave up") && e.contains(&dead), "{e}");

    // A node's HTTP port instead of its cluster port.
    let node = Node::start(&config(&sim, 1, json!({}))).await;
    let http = format!("127.0.0.1:{}", node.port);
    let e = refused(&cfg, &["--cluster", &me, "--join", &http], &secret);
    assert!(
        e.contains("this looks like an HTTP port, use the cluster port"),
        "{e}"
    );
}

#[test]
fn config_set_names_what_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openclaw.json");
    std::fs::write(&file, b"{\"server\": {\"workers\": 2}}").unwrap();
    let f = file.to_str().unwrap();
    let (code, out, err) = run(
        &[
            "config",
            "set",
            "--config",
            f,
            "server.listen",
            "127.0.0.1:3999",
        ],
        &[],
        |_| {},
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("needs a restart") && out.contains("server.listen"),
        "{out}"
    );
    assert!(!out.contains("reloads it within"), "{out}");
    let (code, out, err) = run(
        &["config", "set", "--config", f, "server.workers", "3"],
        &[],
        |_| {},
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("reloads it within") && !out.contains("restart"),
        "{out}"
    );
}

/// This process's effective uid, from a file it creates.
fn euid(dir: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    let p = dir.join(".uid-probe");
    std::fs::write(&p, b"").unwrap();
    let uid = std::fs::metadata(&p).unwrap().uid();
    std::fs::remove_file(&p).unwrap();
    uid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_data_dir_says_permission_denied() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let sim = Sim::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = dir.path().join("openclaw.json");
    std::fs::write(
        &file,
        serde_json::to_vec(&config(&sim, 1, json!({}))).unwrap(),
    )
    .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    // Root writes anywhere: the node then runs as `nobody`, for whom the dir is read-only.
    let root = euid(dir.path()) == 0;
    std::fs::set_permissions(
        &data,
        std::fs::Permissions::from_mode(if root { 0o755 } else { 0o555 }),
    )
    .unwrap();
    let port = format!("127.0.0.1:{}", free_port());
    let args = [
        "--config",
        file.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--http",
        &port,
    ];
    let (code, _, e) = run(&args, &[], |cmd| {
        if root {
            cmd.uid(65534).gid(65534);
        }
    });
    assert_ne!(code, 0, "{e}");
    assert!(
        e.contains("permission denied") && e.contains("not writable"),
        "{e}"
    );
    assert!(!e.contains("another node"), "{e}");

    // A data dir path under a regular file.
    let under_file = file.join("data");
    let args = [
        "--config",
        file.to_str().unwrap(),
        "--data-dir",
        under_file.to_str().unwrap(),
        "--http",
        &port,
    ];
    let (code, _, e) = run(&args, &[], |_| {});
    assert_ne!(code, 0, "{e}");
    assert!(
        e.contains("not a directory") && !e.contains("another node"),
        "{e}"
    );
}

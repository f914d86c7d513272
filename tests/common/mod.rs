//! Shared fixtures of the integration tests: real processes over real HTTP.
//!
//! - [`Sim`]: the simulator as its own process (`openclaw-node sim-provider --listen ...`).
//! - [`Node`]: the node binary with its own temp data dir and `openclaw.json`, started and
//!   waited for until `GET /ready` answers 200; killed (SIGKILL) or stopped (SIGTERM) and
//!   restarted on the same data dir. Its stderr goes to `<data-dir>/node-stderr.log` (appended
//!   across restarts) and is printed when start-up fails.
//!
//! Every wait is a poll with a generous deadline that fails with a clear message; nothing here
//! measures wall-clock durations. Children are killed on drop.

#![allow(dead_code, clippy::unwrap_used)]

use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_openclaw-node");
/// How long a node or simulator may take to become ready.
pub const START_DEADLINE: Duration = Duration::from_secs(20);
/// Default deadline for a task to reach a final state.
pub const TASK_DEADLINE: Duration = Duration::from_secs(30);

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// An HTTP client for tests (generous timeout: long-polls are bounded by the caller).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("building reqwest client")
}

/// Environment variables of the developer's shell that would change a node's behaviour.
fn scrub_env(cmd: &mut Command) {
    for (k, _) in std::env::vars() {
        if k.starts_with("OPENCLAW") {
            cmd.env_remove(&k);
        }
    }
    for k in [
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "DEEPSEEK_API_KEY",
        "RUST_LOG",
    ] {
        cmd.env_remove(k);
    }
}

fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Send SIGTERM to a process (no libc: through `kill`).
pub fn sigterm(pid: u32) {
    let st = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .expect("running kill");
    assert!(st.success(), "kill -TERM {pid} failed");
}

/// Wait (polling) for a child to exit, or None after `deadline`.
pub fn wait_exit(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some(st);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The standalone simulator process.
pub struct Sim {
    child: Child,
    pub port: u16,
    /// `http://127.0.0.1:<port>`
    pub url: String,
    http: reqwest::Client,
    log: tempfile::NamedTempFile,
}

impl Sim {
    /// Start `openclaw-node sim-provider --listen 127.0.0.1:<port> <args>` and wait for `/health`.
    pub async fn start(args: &[&str]) -> Sim {
        let mut last_log = String::new();
        for _ in 0..3 {
            let log = tempfile::NamedTempFile::new().expect("sim log file");
            let port = free_port();
            let mut cmd = Command::new(BIN);
            scrub_env(&mut cmd);
            cmd.arg("sim-provider")
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log.reopen().expect("sim log"));
            let child = cmd.spawn().expect("spawning sim-provider");
            let mut sim = Sim {
                child,
                port,
                url: format!("http://127.0.0.1:{port}"),
                http: client(),
                log,
            };
            let end = Instant::now() + START_DEADLINE;
            loop {
                if let Ok(r) = sim.http.get(format!("{}/health", sim.url)).send().await {
                    if r.status().is_success() {
                        return sim;
                    }
                }
                if let Some(st) = sim.child.try_wait().expect("try_wait") {
                    // Most likely the port was taken between picking and binding: try another.
                    last_log = std::fs::read_to_string(sim.log.path()).unwrap_or_default();
                    eprintln!("sim-provider exited early ({st}); retrying on another port");
                    break;
                }
                assert!(
                    Instant::now() < end,
                    "sim-provider did not answer /health within {START_DEADLINE:?}: {}",
                    std::fs::read_to_string(sim.log.path()).unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("sim-provider could not start: {last_log}");
    }

    /// The base URL a model config points at (`.../v1`).
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.url)
    }

    /// The recorded calls (optionally of one task), oldest first.
    pub async fn calls(&self, task_id: Option<&str>) -> Vec<Value> {
        let url = match task_id {
            // Task ids are UUIDs: no escaping needed.
            Some(t) => format!("{}/sim/calls?task_id={t}", self.url),
            None => format!("{}/sim/calls", self.url),
        };
        let v: Value = self
            .http
            .get(url)
            .send()
            .await
            .expect("GET /sim/calls")
            .json()
            .await
            .expect("sim calls JSON");
        v["calls"].as_array().cloned().unwrap_or_default()
    }

    /// `PUT /sim/faults`.
    pub async fn set_faults(&self, patch: Value) {
        let r = self
            .http
            .put(format!("{}/sim/faults", self.url))
            .json(&patch)
            .send()
            .await
            .expect("PUT /sim/faults");
        assert!(r.status().is_success(), "PUT /sim/faults: {}", r.status());
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// A config with model `fast` (and `smart`) served by `sim`, `workers` workers, and `extra`
/// merged in at the top level (objects are merged one level deep, e.g. `{"server": {...}}`).
pub fn config(sim: &Sim, workers: usize, extra: Value) -> Value {
    let model = |input: f64, output: f64| json!({"provider": "sim", "base_url": sim.base_url(), "price": {"input": input, "output": output}});
    let mut cfg = json!({
        "models": {"fast": model(0.15, 0.6), "smart": model(2.5, 10.0)},
        "model_routing": {"default_model": "fast"},
        "server": {"workers": workers},
    });
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            match (cfg.get_mut(&k), v) {
                (Some(Value::Object(base)), Value::Object(add)) => {
                    for (k2, v2) in add {
                        base.insert(k2, v2);
                    }
                }
                (_, v) => {
                    cfg[&k] = v;
                }
            }
        }
    }
    cfg
}

/// A node process on its own data dir.
pub struct Node {
    child: Option<Child>,
    pub port: u16,
    /// `http://127.0.0.1:<port>`
    pub url: String,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    env: Vec<(String, String)>,
    token: Option<String>,
    pub http: reqwest::Client,
    /// Run at the node's default log level (no `RUST_LOG`), as an operator does.
    pub default_log_level: bool,
}

impl Node {
    /// Write `config` to a fresh temp data dir and start a node on it.
    pub async fn start(config: &Value) -> Node {
        Self::start_with_env(config, &[]).await
    }

    /// Like [`Node::start`], with extra environment variables for the node process.
    pub async fn start_with_env(config: &Value, env: &[(&str, &str)]) -> Node {
        let tmp = tempfile::tempdir().expect("temp data dir");
        let mut node = Node::on_dir(tmp.path(), config, env);
        node._tmp = Some(tmp);
        node.spawn_ready().await;
        node
    }

    /// A node (not started) on `data_dir` with `config` written to `<data-dir>/openclaw.json`.
    pub fn on_dir(data_dir: &Path, config: &Value, env: &[(&str, &str)]) -> Node {
        std::fs::create_dir_all(data_dir).expect("creating data dir");
        std::fs::write(
            data_dir.join("openclaw.json"),
            serde_json::to_vec_pretty(config).expect("config JSON"),
        )
        .expect("writing openclaw.json");
        Node {
            child: None,
            port: 0,
            url: String::new(),
            data_dir: data_dir.to_path_buf(),
            _tmp: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            token: None,
            http: client(),
            default_log_level: false,
        }
    }

    /// Send `Authorization: Bearer <token>` with every request of the helpers.
    pub fn set_token(&mut self, token: &str) {
        self.token = Some(token.to_string());
    }

    pub fn stderr_path(&self) -> PathBuf {
        self.data_dir.join("node-stderr.log")
    }

    /// The node's stderr so far (all runs).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn spawn(&mut self, port: u16) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stderr_path())
            .expect("opening node stderr log");
        let mut cmd = Command::new(BIN);
        scrub_env(&mut cmd);
        cmd.arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--config")
            .arg(self.data_dir.join("openclaw.json"))
            .arg("--http")
            .arg(format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info");
        if self.default_log_level {
            cmd.env_remove("RUST_LOG");
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("spawning openclaw-node"));
        self.port = port;
        self.url = format!("http://127.0.0.1:{port}");
    }

    /// Start the process (on a fresh port) and wait until `/ready` is 200.
    pub async fn spawn_ready(&mut self) {
        assert!(self.child.is_none(), "node already running");
        for _ in 0..3 {
            self.spawn(free_port());
            let end = Instant::now() + START_DEADLINE;
            loop {
                if let Ok(r) = self.http.get(format!("{}/ready", self.url)).send().await {
                    if r.status() == StatusCode::OK {
                        return;
                    }
                }
                let child = self.child.as_mut().expect("child");
                if let Some(st) = child.try_wait().expect("try_wait") {
                    self.child = None;
                    let err = self.stderr();
                    if err.contains("binding HTTP") {
                        eprintln!("node lost its port race ({st}); retrying on another port");
                        break;
                    }
                    panic!("node exited during start-up ({st}); stderr:\n{err}");
                }
                if Instant::now() > end {
                    panic!(
                        "node not ready within {START_DEADLINE:?}; stderr:\n{}",
                        self.stderr()
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("node could not bind a port; stderr:\n{}", self.stderr());
    }

    /// SIGKILL the node and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_and_reap(&mut c);
        }
    }

    /// SIGTERM the node and wait for it to exit; returns its exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("node is not running");
        sigterm(c.id());
        match wait_exit(&mut c, Duration::from_secs(30)) {
            Some(st) => st,
            None => {
                kill_and_reap(&mut c);
                panic!(
                    "node did not exit within 30 s of SIGTERM; stderr:\n{}",
                    self.stderr()
                );
            }
        }
    }

    /// Start the process without waiting for `/ready` (for nodes expected to fail start-up).
    pub fn try_spawn(&mut self) {
        assert!(self.child.is_none(), "node already running");
        self.spawn(free_port());
    }

    /// Wait (bounded) for the process to exit by itself; reaps it.
    pub fn wait_stopped(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let c = self.child.as_mut()?;
        let st = wait_exit(c, deadline);
        if st.is_some() {
            self.child = None;
        }
        st
    }

    /// Start again on the same data dir (after `kill` or `stop`).
    pub async fn restart(&mut self) {
        self.spawn_ready().await;
    }

    fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// `POST /api/tasks` with a JSON body → (status, body).
    pub async fn submit(&self, body: Value) -> (StatusCode, Value) {
        let r = self
            .auth(self.http.post(format!("{}/api/tasks", self.url)))
            .json(&body)
            .send()
            .await
            .expect("POST /api/tasks");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Submit and require a 202; returns the task id.
    pub async fn submit_ok(&self, body: Value) -> String {
        let (st, v) = self.submit(body.clone()).await;
        assert_eq!(st, StatusCode::ACCEPTED, "submit {body}: {v}");
        v["id"].as_str().expect("id in 202 body").to_string()
    }

    /// `GET /api/tasks/{id}?wait=<wait>` → (status, body).
    pub async fn get_task(&self, id: &str, wait: u64) -> (StatusCode, Value) {
        let r = self
            .auth(
                self.http
                    .get(format!("{}/api/tasks/{id}?wait={wait}", self.url)),
            )
            .send()
            .await
            .expect("GET /api/tasks/{id}");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The task view, which must exist.
    pub async fn task(&self, id: &str) -> Value {
        let (st, v) = self.get_task(id, 0).await;
        assert_eq!(st, StatusCode::OK, "GET task {id}: {v}");
        v
    }

    /// Long-poll until the task is final; panics with its last view after `deadline`.
    pub async fn wait_final(&self, id: &str, deadline: Duration) -> Value {
        let end = Instant::now() + deadline;
        loop {
            let left = end
                .saturating_duration_since(Instant::now())
                .as_secs()
                .clamp(1, 10);
            let (st, v) = self.get_task(id, left).await;
            assert_eq!(st, StatusCode::OK, "GET task {id}: {v}");
            if is_final(&v) {
                return v;
            }
            assert!(
                Instant::now() < end,
                "task {id} not final within {deadline:?}; last view: {v}"
            );
        }
    }

    /// Poll until the task has `status`; panics after `deadline`.
    pub async fn wait_status(&self, id: &str, status: &str, deadline: Duration) -> Value {
        let end = Instant::now() + deadline;
        loop {
            let v = self.task(id).await;
            if v["status"] == status {
                return v;
            }
            assert!(
                Instant::now() < end,
                "task {id} not {status} within {deadline:?}; last view: {v}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `DELETE /api/tasks/{id}` → (status, body).
    pub async fn cancel(&self, id: &str) -> (StatusCode, Value) {
        let r = self
            .auth(self.http.delete(format!("{}/api/tasks/{id}", self.url)))
            .send()
            .await
            .expect("DELETE /api/tasks/{id}");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// GET a path → (status, JSON body or Null).
    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .auth(self.http.get(format!("{}{path}", self.url)))
            .send()
            .await
            .expect("GET");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// `GET /metrics` text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Is a task view in a final state?
pub fn is_final(v: &Value) -> bool {
    matches!(
        v["status"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    )
}

/// Assert an error answer: `status` and `{"error":{"code": code, "message": non-empty}}`.
pub fn assert_error(what: &str, got: (StatusCode, Value), status: u16, code: &str) -> String {
    let (st, v) = got;
    assert_eq!(st.as_u16(), status, "{what}: status; body {v}");
    assert_eq!(v["error"]["code"], code, "{what}: error code; body {v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(!msg.is_empty(), "{what}: empty error message; body {v}");
    msg.to_string()
}

/// Sum of every sample of a metric family in Prometheus text (0 when absent).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// The chapter's scripts folder (`../shared/seed/scripts` beside the repo, else `/work/shared`).
pub fn scripts_dir() -> PathBuf {
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/seed/scripts");
    if beside.join("seven_day_summary.py").is_file() {
        beside
    } else {
        PathBuf::from("/work/shared/seed/scripts")
    }
}

/// Is `python3` runnable (and, when given, can it import `module`)?
pub fn python_has(module: Option<&str>) -> bool {
    let mut cmd = Command::new("python3");
    match module {
        Some(m) => cmd.arg("-c").arg(format!("import {m}")),
        None => cmd.arg("--version"),
    };
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

//! Shared fixtures of the integration tests: thin wrappers over the process harness
//! (`openclaw-harness`, the one place that starts `openclaw-node` processes) and the HTTP
//! helpers the tests call.
//!
//! - [`Sim`]: the simulator process (`openclaw-node sim-provider`), and [`SimApi`] — its call
//!   log and faults over HTTP.
//! - [`Node`]: a node process on its own temp data dir with `<data-dir>/openclaw.json`, started
//!   and waited for until `GET /ready` answers 200; killed (SIGKILL) or stopped (SIGTERM) and
//!   restarted on the same data dir (on a fresh port). Its stdout and stderr go to
//!   `<data-dir>/node.log` (appended across restarts) and are quoted when start-up fails.
//! - [`NodeApi`]: the HTTP helpers against one node (submit, read, wait for a final state,
//!   cancel, metrics); a [`Node`] derefs to it, and `tests/cluster.rs` uses it for cluster
//!   members the harness started.
//! - Test prerequisites outside Rust (python3, iptables): [`openclaw_harness::prereq`].
//!
//! Every wait is a poll with a generous deadline that fails with a clear message; nothing here
//! measures wall-clock durations. Children are killed on drop.

#![allow(dead_code, unused_imports, clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use openclaw_harness::{NodeSpec, SimSpec};
use reqwest::StatusCode;
use serde_json::Value;

pub use openclaw_harness::prereq;
pub use openclaw_harness::scrub_env;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_openclaw-node");

/// Run `openclaw-node <args>` with a clean environment → (exit code, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(BIN);
    scrub_env(&mut cmd);
    let out = cmd
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running openclaw-node");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
/// How long a node or simulator may take to become ready.
pub const START_DEADLINE: Duration = Duration::from_secs(20);
/// Default deadline for a task to reach a final state.
pub const TASK_DEADLINE: Duration = Duration::from_secs(30);
/// How long a node may take to exit after SIGTERM.
pub const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    openclaw_harness::free_port(Ipv4Addr::LOCALHOST).expect("a free port on 127.0.0.1")
}

/// An HTTP client for tests (generous timeout: long-polls are bounded by the caller).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("building reqwest client")
}

/// Wait (polling) for a child to exit, or None after `deadline`.
pub fn wait_exit(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    openclaw_harness::process::wait_exit(child, deadline)
}

/// The simulator's HTTP API: where it listens, its call log and its faults.
pub struct SimApi {
    pub port: u16,
    /// `http://127.0.0.1:<port>`
    pub url: String,
    http: reqwest::Client,
}

impl SimApi {
    /// The API of the simulator at `url` (`http://127.0.0.1:<port>`).
    pub fn at(url: &str) -> SimApi {
        let port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        SimApi {
            port,
            url: url.to_string(),
            http: client(),
        }
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

/// The standalone simulator process (the harness's [`openclaw_harness::Sim`]).
pub struct Sim {
    api: SimApi,
    _proc: openclaw_harness::Sim,
    /// Holds the simulator's log; removed after the process (declared last).
    _dir: tempfile::TempDir,
}

impl Sim {
    /// Start `openclaw-node sim-provider --listen 127.0.0.1:<port> <args>` and wait for `/health`.
    pub async fn start(args: &[&str]) -> Sim {
        let dir = tempfile::tempdir().expect("sim log dir");
        let mut spec = SimSpec::new(BIN, dir.path().join("sim.log")).args(args);
        spec.start_timeout = START_DEADLINE;
        let proc = openclaw_harness::Sim::start(spec)
            .await
            .unwrap_or_else(|e| panic!("sim-provider could not start: {e}"));
        Sim {
            api: SimApi::at(proc.url()),
            _proc: proc,
            _dir: dir,
        }
    }
}

impl Deref for Sim {
    type Target = SimApi;
    fn deref(&self) -> &SimApi {
        &self.api
    }
}

/// A config with model `fast` (and `smart`) served by `sim`, `workers` workers, and `extra`
/// merged in at the top level (objects are merged one level deep, e.g. `{"server": {...}}`).
pub fn config(sim: &SimApi, workers: usize, extra: Value) -> Value {
    openclaw_harness::node_config(&sim.base_url(), workers, &extra)
}

/// The HTTP side of one node: where it listens and the requests the tests make.
pub struct NodeApi {
    pub port: u16,
    /// `http://IP:<port>`
    pub url: String,
    pub data_dir: PathBuf,
    log_path: PathBuf,
    token: Option<String>,
    pub http: reqwest::Client,
}

impl NodeApi {
    /// `POST /v1/chat/completions` with `body` (and `X-OpenClaw-Agent` when given), retried
    /// while the node answers 503 (right after start) for up to 40 s; asserts 200 and returns
    /// the `X-OpenClaw-Cache` header (empty when absent) and the body.
    pub async fn chat_cached(&self, agent: Option<&str>, body: Value) -> (String, Value) {
        let end = Instant::now() + Duration::from_secs(40);
        loop {
            let mut r = self
                .http
                .post(format!("{}/v1/chat/completions", self.url))
                .json(&body);
            if let Some(a) = agent {
                r = r.header("x-openclaw-agent", a);
            }
            let r = r.send().await.expect("POST /v1/chat/completions");
            if r.status() == StatusCode::SERVICE_UNAVAILABLE && Instant::now() < end {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            assert_eq!(r.status(), StatusCode::OK);
            let h = r
                .headers()
                .get("x-openclaw-cache")
                .map(|v| v.to_str().unwrap_or_default().to_string())
                .unwrap_or_default();
            return (h, r.json().await.expect("chat body"));
        }
    }

    /// The API of a node the harness started.
    pub fn of(node: &openclaw_harness::Node) -> NodeApi {
        NodeApi {
            port: node.http_addr().port(),
            url: node.http_url(),
            data_dir: node.data_dir().to_path_buf(),
            log_path: node.log_path().to_path_buf(),
            token: None,
            http: client(),
        }
    }

    /// Send `Authorization: Bearer <token>` with every request of the helpers.
    pub fn set_token(&mut self, token: &str) {
        self.token = Some(token.to_string());
    }

    /// The node's log file (stdout and stderr of every start).
    pub fn stderr_path(&self) -> PathBuf {
        self.log_path.clone()
    }

    /// The node's log so far (all runs).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
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

/// A node process on its own data dir (the harness's [`openclaw_harness::Node`]).
pub struct Node {
    api: NodeApi,
    proc: openclaw_harness::Node,
    /// Run at the node's default log level (no `RUST_LOG`), as an operator does.
    pub default_log_level: bool,
    /// Declared last: removed after the process is dead.
    _tmp: Option<tempfile::TempDir>,
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
        let mut spec = NodeSpec::standalone(BIN, data_dir);
        spec.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        spec.start_timeout = START_DEADLINE;
        let proc = openclaw_harness::Node::new(spec, 0).expect("creating the data dir");
        proc.write_config(config).expect("writing openclaw.json");
        Node {
            api: NodeApi::of(&proc),
            proc,
            default_log_level: false,
            _tmp: None,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// The harness's spec of this node (e.g. `http_host`), read at the next start.
    pub fn spec_mut(&mut self) -> &mut NodeSpec {
        self.proc.spec_mut()
    }

    /// The URL and port of the current start.
    fn refresh(&mut self) {
        self.api.port = self.proc.http_addr().port();
        self.api.url = self.proc.http_url();
    }

    fn set_log_level(&mut self) {
        self.proc.spec_mut().rust_log = (!self.default_log_level).then(|| "info".to_string());
    }

    /// Start the process (on a fresh port) and wait until `/ready` is 200.
    pub async fn spawn_ready(&mut self) {
        assert!(self.proc.pid().is_none(), "node already running");
        self.set_log_level();
        let r = self.proc.start(None).await;
        self.refresh();
        if let Err(e) = r {
            panic!("node did not start: {e}");
        }
    }

    /// SIGKILL the node and reap it.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// SIGTERM the node and wait for it to exit; returns its exit status.
    pub fn stop(&mut self) -> ExitStatus {
        assert!(self.proc.pid().is_some(), "node is not running");
        match self.proc.terminate_blocking(STOP_DEADLINE) {
            Ok(Some(st)) => st,
            Ok(None) => panic!(
                "node did not exit within {STOP_DEADLINE:?} of SIGTERM; log:\n{}",
                self.proc.log_tail()
            ),
            Err(e) => panic!("SIGTERM: {e}"),
        }
    }

    /// Start the process without waiting for `/ready` (for nodes expected to fail start-up).
    pub fn try_spawn(&mut self) {
        assert!(self.proc.pid().is_none(), "node already running");
        self.set_log_level();
        self.proc.spawn(None).expect("spawning openclaw-node");
        self.refresh();
    }

    /// Wait (bounded) for the process to exit by itself; reaps it.
    pub fn wait_stopped(&mut self, deadline: Duration) -> Option<ExitStatus> {
        self.proc.wait_exit_blocking(deadline)
    }

    /// Start again on the same data dir (after `kill` or `stop`).
    pub async fn restart(&mut self) {
        self.spawn_ready().await;
    }
}

impl Deref for Node {
    type Target = NodeApi;
    fn deref(&self) -> &NodeApi {
        &self.api
    }
}

impl DerefMut for Node {
    fn deref_mut(&mut self) -> &mut NodeApi {
        &mut self.api
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

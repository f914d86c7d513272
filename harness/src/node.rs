//! One node process: `openclaw-node --config <file> --data-dir <dir> --http <addr>`, plus
//! `--cluster <addr>` (and `--join <seed>` on a first start) when it is a cluster member.
//!
//! [`NodeSpec::standalone`] is a node on its own (what most integration tests and the
//! single-node bench run): config and log inside its data dir, HTTP on a fresh 127.0.0.1 port
//! at every start, ready when `GET /ready` answers. The cluster ([`crate::cluster`]) builds its
//! members from the same spec with fixed addresses on 127.0.0.(i + 2).
//!
//! A start waits for the spec's ready probe and fails with the log tail when the process exits
//! first or the deadline passes; a start that lost its port race is retried on another port
//! when the port is not fixed. Restarts reuse the data dir. `Drop` SIGKILLs and reaps.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::error::{io, HarnessError};
use crate::process::{
    answers, control_client, free_port, kill_and_reap, log_tail, looks_like_port_clash,
    reap_if_exited, scrub_env, signal, spawn_logged, wait_exit, POLL, PORT_TRIES_MAX,
};

/// How to start one node.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// The `openclaw-node` binary.
    pub bin: PathBuf,
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
    /// stdout + stderr of every start, appended, each start marked.
    pub log_path: PathBuf,
    /// The address the HTTP port is bound on.
    pub ip: Ipv4Addr,
    /// A fixed HTTP port; `None`: a fresh free port at every start.
    pub http_port: Option<u16>,
    /// The host written in `--http HOST:PORT` (e.g. `localhost`, which the node resolves);
    /// `None`: the IP `ip`. The probes always use `ip`.
    pub http_host: Option<String>,
    /// `--cluster` (the mesh takes the next port); `None` for a node on its own.
    pub cluster: Option<SocketAddr>,
    /// `RUST_LOG`; `None` runs the node at its default level, as an operator does.
    pub rust_log: Option<String>,
    /// Set after the scrub and `RUST_LOG`.
    pub env: Vec<(String, String)>,
    /// The path that must answer 2xx for the node to count as started.
    pub ready_path: String,
    /// Deadline of one start.
    pub start_timeout: Duration,
}

impl NodeSpec {
    /// A node on its own on `data_dir`: config `<data-dir>/openclaw.json`, log
    /// `<data-dir>/node.log`, HTTP on a fresh 127.0.0.1 port, `RUST_LOG=info`, ready at `/ready`.
    pub fn standalone(bin: impl Into<PathBuf>, data_dir: impl Into<PathBuf>) -> NodeSpec {
        let data_dir = data_dir.into();
        NodeSpec {
            bin: bin.into(),
            config_path: data_dir.join("openclaw.json"),
            log_path: data_dir.join("node.log"),
            data_dir,
            ip: Ipv4Addr::LOCALHOST,
            http_port: None,
            http_host: None,
            cluster: None,
            rust_log: Some("info".into()),
            env: Vec::new(),
            ready_path: "/ready".into(),
            start_timeout: Duration::from_secs(20),
        }
    }
}

/// A node's process state as the harness left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Running,
    /// SIGSTOPped.
    Stopped,
    /// Killed, stopped by SIGTERM, or exited.
    Down,
}

/// One node: its addresses, files and process.
#[derive(Debug)]
pub struct Node {
    spec: NodeSpec,
    index: usize,
    http: SocketAddr,
    child: Option<Child>,
    stopped: bool,
    id: Option<String>,
    starts: u32,
    probe: reqwest::Client,
}

impl Node {
    /// A node (not started) numbered `index`; creates its data dir.
    pub fn new(spec: NodeSpec, index: usize) -> Result<Node, HarnessError> {
        std::fs::create_dir_all(&spec.data_dir)
            .map_err(io(format!("creating {}", spec.data_dir.display())))?;
        Ok(Node {
            http: SocketAddr::from((spec.ip, spec.http_port.unwrap_or(0))),
            spec,
            index,
            child: None,
            stopped: false,
            id: None,
            starts: 0,
            probe: control_client()?,
        })
    }

    /// Write `config` to the spec's config path (read at the next start, or by a reload).
    pub fn write_config(&self, config: &Value) -> Result<(), HarnessError> {
        let text = serde_json::to_vec_pretty(config).map_err(|e| HarnessError::Io {
            what: "encoding the node config".into(),
            source: e.into(),
        })?;
        std::fs::write(&self.spec.config_path, text)
            .map_err(io(format!("writing {}", self.spec.config_path.display())))
    }

    /// Spawn the process without waiting for it (see [`Node::wait_ready`]). `join` adds
    /// `--join <seed>` (a first start into a cluster).
    pub fn spawn(&mut self, join: Option<SocketAddr>) -> Result<(), HarnessError> {
        if self.child.is_some() {
            return Err(HarnessError::AlreadyRunning { index: self.index });
        }
        if self.spec.http_port.is_none() {
            self.http = SocketAddr::from((self.spec.ip, free_port(self.spec.ip)?));
        }
        self.starts += 1;
        let mut args: Vec<String> = vec![
            "--config".into(),
            self.spec.config_path.display().to_string(),
            "--data-dir".into(),
            self.spec.data_dir.display().to_string(),
            "--http".into(),
            match &self.spec.http_host {
                Some(host) => format!("{host}:{}", self.http.port()),
                None => self.http.to_string(),
            },
        ];
        if let Some(c) = self.spec.cluster {
            args.push("--cluster".into());
            args.push(c.to_string());
        }
        if let Some(seed) = join {
            args.push("--join".into());
            args.push(seed.to_string());
        }
        let mut cmd = Command::new(&self.spec.bin);
        scrub_env(&mut cmd);
        cmd.args(&args);
        if let Some(level) = &self.spec.rust_log {
            cmd.env("RUST_LOG", level);
        }
        cmd.envs(self.spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let child = spawn_logged(
            &mut cmd,
            &self.spec.log_path,
            &format!(
                "start #{} of node {}: {}",
                self.starts,
                self.index,
                args.join(" ")
            ),
            &format!("{} for node {}", self.spec.bin.display(), self.index),
        )?;
        self.child = Some(child);
        self.stopped = false;
        Ok(())
    }

    /// Wait until the ready probe answers 2xx; fails with the log tail when the process exits
    /// first (it is reaped) or the deadline passes.
    pub async fn wait_ready(&mut self) -> Result<(), HarnessError> {
        let timeout = self.spec.start_timeout;
        let end = Instant::now() + timeout;
        let url = format!("{}{}", self.http_url(), self.spec.ready_path);
        loop {
            if answers(&self.probe, &url).await {
                return Ok(());
            }
            if let Some(st) = reap_if_exited(&mut self.child) {
                return Err(HarnessError::Exited {
                    what: format!("node {}", self.index),
                    status: st.to_string(),
                    log: self.log_tail(),
                });
            }
            if self.child.is_none() {
                return Err(HarnessError::NotRunning { index: self.index });
            }
            if Instant::now() >= end {
                return Err(HarnessError::Timeout {
                    what: format!("node {} ({})", self.index, self.spec.ready_path),
                    after: timeout,
                    log: self.log_tail(),
                });
            }
            tokio::time::sleep(POLL / 2).await;
        }
    }

    /// Spawn and wait until ready. A start that lost its port race is retried on a fresh port
    /// when the HTTP port is not fixed.
    pub async fn start(&mut self, join: Option<SocketAddr>) -> Result<(), HarnessError> {
        for attempt in 1..=PORT_TRIES_MAX {
            self.spawn(join)?;
            match self.wait_ready().await {
                Err(HarnessError::Exited { log, .. })
                    if attempt < PORT_TRIES_MAX
                        && self.spec.http_port.is_none()
                        && looks_like_port_clash(&log) => {}
                other => return other,
            }
        }
        Err(HarnessError::Spec(format!(
            "node {}: no free port after {PORT_TRIES_MAX} tries",
            self.index
        )))
    }

    /// SIGKILL the node and reap it (no-op when it is down).
    pub fn kill(&mut self) {
        kill_and_reap(&mut self.child);
        self.stopped = false;
    }

    /// Send `sig` to the node.
    pub fn signal(&mut self, sig: Signal) -> Result<(), HarnessError> {
        let pid = self
            .pid()
            .ok_or(HarnessError::NotRunning { index: self.index })?;
        signal(pid, sig).map_err(|source| HarnessError::Signal {
            index: self.index,
            signal: sig.as_str(),
            source,
        })
    }

    /// SIGSTOP (it keeps its sockets but answers nothing).
    pub fn stop(&mut self) -> Result<(), HarnessError> {
        self.signal(Signal::SIGSTOP)?;
        self.stopped = true;
        Ok(())
    }

    /// SIGCONT.
    pub fn cont(&mut self) -> Result<(), HarnessError> {
        self.signal(Signal::SIGCONT)?;
        self.stopped = false;
        Ok(())
    }

    /// SIGTERM (after a SIGCONT when stopped) and wait up to `grace` for the exit. Returns its
    /// exit status, or `None` when it had to be SIGKILLed after the grace.
    pub async fn terminate(&mut self, grace: Duration) -> Result<Option<ExitStatus>, HarnessError> {
        if self.stopped {
            self.cont()?;
        }
        self.signal(Signal::SIGTERM)?;
        let st = self.wait_exit(grace).await;
        if st.is_none() {
            self.kill();
        }
        Ok(st)
    }

    /// Like [`Node::terminate`], blocking this thread while it waits.
    pub fn terminate_blocking(
        &mut self,
        grace: Duration,
    ) -> Result<Option<ExitStatus>, HarnessError> {
        if self.stopped {
            self.cont()?;
        }
        self.signal(Signal::SIGTERM)?;
        let st = self.wait_exit_blocking(grace);
        if st.is_none() {
            self.kill();
        }
        Ok(st)
    }

    /// Wait up to `deadline` for the node to exit by itself (it is reaped); `None` when it
    /// still runs (or was not running).
    pub async fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + deadline;
        loop {
            if let Some(st) = reap_if_exited(&mut self.child) {
                self.stopped = false;
                return Some(st);
            }
            if self.child.is_none() || Instant::now() >= end {
                return None;
            }
            tokio::time::sleep(POLL / 2).await;
        }
    }

    /// Like [`Node::wait_exit`], blocking this thread.
    pub fn wait_exit_blocking(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let st = wait_exit(self.child.as_mut()?, deadline)?;
        self.child = None;
        self.stopped = false;
        Some(st)
    }

    /// Has the node exited by itself? Reaps it when it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let st = reap_if_exited(&mut self.child)?;
        self.stopped = false;
        Some(st)
    }

    /// Fail with the log tail when the node is not running.
    pub fn check_alive(&mut self) -> Result<(), HarnessError> {
        let status = match self.exited() {
            Some(st) => st.to_string(),
            None if self.child.is_none() => "killed".into(),
            None => return Ok(()),
        };
        Err(HarnessError::Exited {
            what: format!("node {}", self.index),
            status,
            log: self.log_tail(),
        })
    }

    pub fn index(&self) -> usize {
        self.index
    }
    pub fn ip(&self) -> Ipv4Addr {
        self.spec.ip
    }
    /// The HTTP address of the current (or last) start.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }
    /// `http://IP:PORT` of the current (or last) start.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }
    pub fn cluster_addr(&self) -> Option<SocketAddr> {
        self.spec.cluster
    }
    pub fn data_dir(&self) -> &Path {
        &self.spec.data_dir
    }
    pub fn config_path(&self) -> &Path {
        &self.spec.config_path
    }
    /// stdout + stderr of every start of this node.
    pub fn log_path(&self) -> &Path {
        &self.spec.log_path
    }
    /// The whole log so far (every start).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.spec.log_path).unwrap_or_default()
    }
    /// The last few KiB of the log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.spec.log_path)
    }
    /// The cluster id the node reported (learned by the cluster at start).
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }
    pub(crate) fn set_id(&mut self, id: String) {
        self.id = Some(id);
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
    pub fn state(&self) -> NodeState {
        match (&self.child, self.stopped) {
            (None, _) => NodeState::Down,
            (Some(_), true) => NodeState::Stopped,
            (Some(_), false) => NodeState::Running,
        }
    }
    /// How many times the harness started this node.
    pub fn starts(&self) -> u32 {
        self.starts
    }
    pub fn spec(&self) -> &NodeSpec {
        &self.spec
    }
    /// Change the spec; it takes effect at the next start.
    pub fn spec_mut(&mut self) -> &mut NodeSpec {
        &mut self.spec
    }
    /// New fixed addresses (a first start that lost its port race).
    pub(crate) fn set_addrs(&mut self, http: SocketAddr, cluster: SocketAddr) {
        self.spec.http_port = Some(http.port());
        self.http = http;
        self.spec.cluster = Some(cluster);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

//! The simulator as its own process: `openclaw-node sim-provider --listen 127.0.0.1:<port>`,
//! started on a free port (another one when the port was taken meanwhile) and waited for until
//! `GET /health` answers. Killed and reaped on drop.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::error::HarnessError;
use crate::process::{
    answers, control_client, free_port, get_json, kill_and_reap, log_tail, reap_if_exited,
    scrub_env, spawn_logged, POLL, PORT_TRIES_MAX,
};
use crate::status::SimCalls;

/// How to start the simulator.
#[derive(Debug, Clone)]
pub struct SimSpec {
    /// The `openclaw-node` binary.
    pub bin: PathBuf,
    /// Extra `sim-provider` flags, e.g. `["--latency-ms", "100"]`.
    pub args: Vec<String>,
    /// stdout + stderr of every start, appended.
    pub log_path: PathBuf,
    /// Deadline of the start.
    pub start_timeout: Duration,
}

impl SimSpec {
    pub fn new(bin: impl Into<PathBuf>, log_path: impl Into<PathBuf>) -> SimSpec {
        SimSpec {
            bin: bin.into(),
            args: Vec::new(),
            log_path: log_path.into(),
            start_timeout: Duration::from_secs(60),
        }
    }

    pub fn args<S: AsRef<str>>(mut self, args: &[S]) -> SimSpec {
        self.args = args.iter().map(|a| a.as_ref().to_string()).collect();
        self
    }
}

/// A running simulator.
#[derive(Debug)]
pub struct Sim {
    child: Option<Child>,
    addr: SocketAddr,
    url: String,
    log_path: PathBuf,
    http: reqwest::Client,
}

impl Sim {
    /// Start the simulator and wait until it answers `/health`.
    pub async fn start(spec: SimSpec) -> Result<Sim, HarnessError> {
        let mut last = String::new();
        for attempt in 1..=PORT_TRIES_MAX {
            let port = free_port(Ipv4Addr::LOCALHOST)?;
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let mut cmd = Command::new(&spec.bin);
            scrub_env(&mut cmd);
            cmd.arg("sim-provider")
                .arg("--listen")
                .arg(addr.to_string())
                .args(&spec.args);
            let child = spawn_logged(
                &mut cmd,
                &spec.log_path,
                &format!("sim-provider start #{attempt} on {addr}"),
                &format!("{} sim-provider", spec.bin.display()),
            )?;
            let mut sim = Sim {
                child: Some(child),
                addr,
                url: format!("http://{addr}"),
                log_path: spec.log_path.clone(),
                http: control_client()?,
            };
            let end = Instant::now() + spec.start_timeout;
            loop {
                if answers(&sim.http, &format!("{}/health", sim.url)).await {
                    return Ok(sim);
                }
                if let Some(st) = reap_if_exited(&mut sim.child) {
                    // Most likely the port was taken between picking and binding: another one.
                    last = st.to_string();
                    break;
                }
                if Instant::now() >= end {
                    return Err(HarnessError::Timeout {
                        what: "sim-provider (/health)".into(),
                        after: spec.start_timeout,
                        log: sim.log_tail(),
                    });
                }
                tokio::time::sleep(POLL / 2).await;
            }
        }
        Err(HarnessError::Exited {
            what: "sim-provider".into(),
            status: last,
            log: log_tail(&spec.log_path),
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The base URL a model config points at: `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.url)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path)
    }

    /// Fail with the log tail when the simulator has exited.
    pub fn check_alive(&mut self) -> Result<(), HarnessError> {
        let status = match reap_if_exited(&mut self.child) {
            Some(st) => st.to_string(),
            None if self.child.is_none() => "killed".into(),
            None => return Ok(()),
        };
        Err(HarnessError::Exited {
            what: "sim-provider".into(),
            status,
            log: self.log_tail(),
        })
    }

    /// `GET /sim/calls`: every call the simulator recorded (its log is bounded).
    pub async fn calls(&self) -> Result<SimCalls, HarnessError> {
        get_json(&self.http, &format!("{}/sim/calls", self.url)).await
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.kill();
    }
}

//! A real cluster of `openclaw-node` processes on one machine, for chaos runs, integration
//! tests and demos.
//!
//! [`Cluster::start`] runs one `openclaw-node sim-provider` (on 127.0.0.1) and N nodes on
//! 127.0.0.2 .. 127.0.0.(N+1), each with free HTTP and cluster ports (the ractor mesh takes
//! cluster port + 1), its own data dir and config under the run dir, and one random cluster
//! secret shared through `OPENCLAW_CLUSTER_SECRET`. The first node bootstraps; the others
//! `--join` it; start returns once every node reports the same leader and term and lists every
//! member. A node's stdout and stderr are appended to `<run-dir>/node-<i>/node.log` across
//! restarts (each start is marked).
//!
//! Faults: [`Cluster::kill`] (SIGKILL), [`Cluster::terminate`] (SIGTERM, then SIGKILL after a
//! grace), [`Cluster::stop`] / [`Cluster::cont`] (SIGSTOP / SIGCONT), [`Cluster::restart`] (same
//! data dir and addresses, no `--join`), [`Cluster::partition`] / [`Cluster::heal`] (iptables,
//! see [`crate::partition`]).
//!
//! Invariant: no process outlives the `Cluster`. `Drop` SIGKILLs and reaps every child (also
//! while unwinding from a panic) and removes the firewall chain; the run dir is removed unless
//! it was given or `keep_dir` is set. Every wait has a deadline and fails with the node's log
//! tail. The harness knows nothing about workloads or checks.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill as send_signal, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::checks::{agreement, Agreement};
use crate::partition::{Firewall, FirewallError};
use crate::status::{ClusterStatus, SimCalls, TaskSnapshot};

/// Nodes live on 127.0.0.2 ..= 127.0.0.(NODES_MAX + 1).
pub const NODES_MAX: usize = 9;
/// Deadline of one control request (status, task read) to a node or the simulator.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(2);
/// Tries at a start whose ports were taken between picking and binding.
const PORT_TRIES_MAX: u32 = 3;
/// How much of a log file an error message quotes.
const LOG_TAIL_BYTES: u64 = 4096;
/// Poll interval of every wait.
const POLL: Duration = Duration::from_millis(100);

/// What went wrong driving the processes.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("bad cluster spec: {0}")]
    Spec(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} exited during start-up ({status}); log tail:\n{log}")]
    Exited {
        what: String,
        status: String,
        log: String,
    },
    #[error("{what} not ready within {after:?}; log tail:\n{log}")]
    Timeout {
        what: String,
        after: Duration,
        log: String,
    },
    #[error("the cluster did not converge within {after:?}: {reason}")]
    NoConvergence { after: Duration, reason: String },
    #[error("no node {0}")]
    NoSuchNode(usize),
    #[error("node {index} is not running")]
    NotRunning { index: usize },
    #[error("signal {signal} to node {index}: {source}")]
    Signal {
        index: usize,
        signal: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("GET {url}: {message}")]
    Http { url: String, message: String },
    #[error(transparent)]
    Firewall(#[from] FirewallError),
}

/// How to start a cluster. [`ClusterSpec::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// The `openclaw-node` binary.
    pub bin: PathBuf,
    /// Number of nodes, 1 ..= [`NODES_MAX`].
    pub nodes: usize,
    /// `server.workers` of every node.
    pub workers: usize,
    /// Where data dirs, configs and logs go; default a fresh temp dir.
    pub run_dir: Option<PathBuf>,
    /// Leave the run dir behind on drop (it is always left when `run_dir` is given).
    pub keep_dir: bool,
    /// Extra `sim-provider` flags, e.g. `["--latency-ms", "100"]`.
    pub sim_args: Vec<String>,
    /// Merged into every node's `openclaw.json` (objects one level deep).
    pub extra_config: Value,
    /// `RUST_LOG` of the nodes.
    pub rust_log: String,
    /// Extra environment of the nodes.
    pub env: Vec<(String, String)>,
    /// Deadline of one process start and of the first convergence.
    pub start_timeout: Duration,
}

impl ClusterSpec {
    pub fn new(bin: impl Into<PathBuf>, nodes: usize) -> ClusterSpec {
        ClusterSpec {
            bin: bin.into(),
            nodes,
            workers: 4,
            run_dir: None,
            keep_dir: false,
            sim_args: vec![
                "--latency-ms".into(),
                "50".into(),
                "--latency-jitter-ms".into(),
                "200".into(),
            ],
            extra_config: json!({}),
            rust_log: "info".into(),
            env: Vec::new(),
            start_timeout: Duration::from_secs(60),
        }
    }

    fn validate(&self) -> Result<(), HarnessError> {
        if self.nodes == 0 || self.nodes > NODES_MAX {
            return Err(HarnessError::Spec(format!(
                "nodes must be 1..={NODES_MAX}, got {}",
                self.nodes
            )));
        }
        if self.workers == 0 {
            return Err(HarnessError::Spec("workers must be at least 1".into()));
        }
        if !self.bin.is_file() {
            return Err(HarnessError::Spec(format!(
                "{} is not a file: build it (cargo build --release) or pass its path",
                self.bin.display()
            )));
        }
        Ok(())
    }
}

/// A node's process state as the harness left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Running,
    /// SIGSTOPped.
    Stopped,
    /// Killed or exited.
    Down,
}

/// One node: its addresses, files and process.
#[derive(Debug)]
pub struct Node {
    index: usize,
    ip: Ipv4Addr,
    http: SocketAddr,
    cluster: SocketAddr,
    data_dir: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    stopped: bool,
    id: Option<String>,
    starts: u32,
}

impl Node {
    pub fn index(&self) -> usize {
        self.index
    }
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }
    /// `http://127.0.0.X:PORT`
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }
    pub fn cluster_addr(&self) -> SocketAddr {
        self.cluster
    }
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }
    /// stdout + stderr of every start of this node.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
    /// The id the node reports in `GET /api/cluster` (learned at start).
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
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
    /// The last few KiB of the node's log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path)
    }

    fn kill_and_reap(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.stopped = false;
    }
}

/// The standalone simulator.
#[derive(Debug)]
struct SimProcess {
    child: Option<Child>,
    url: String,
    log_path: PathBuf,
}

/// A running cluster. Dropping it kills everything it started.
#[derive(Debug)]
pub struct Cluster {
    spec: ClusterSpec,
    run_dir: PathBuf,
    secret: String,
    sim: SimProcess,
    nodes: Vec<Node>,
    firewall: Option<Result<Firewall, FirewallError>>,
    http: reqwest::Client,
    /// Declared last: removed after every process is dead.
    _tmp: Option<tempfile::TempDir>,
}

impl Cluster {
    /// Start the simulator and `spec.nodes` nodes; return once they agree on a leader.
    pub async fn start(spec: ClusterSpec) -> Result<Cluster, HarnessError> {
        spec.validate()?;
        let (run_dir, tmp) = match (&spec.run_dir, spec.keep_dir) {
            (Some(d), _) => {
                std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
                (d.clone(), None)
            }
            (None, keep) => {
                let t = tempfile::Builder::new()
                    .prefix("openclaw-chaos-")
                    .tempdir()
                    .map_err(io("creating a temp run dir".into()))?;
                if keep {
                    (t.keep(), None)
                } else {
                    (t.path().to_path_buf(), Some(t))
                }
            }
        };
        let http = control_client()?;
        let mut cluster = Cluster {
            secret: random_secret(),
            sim: SimProcess {
                child: None,
                url: String::new(),
                log_path: run_dir.join("sim.log"),
            },
            nodes: Vec::new(),
            firewall: None,
            http,
            run_dir,
            _tmp: tmp,
            spec,
        };
        // From here on an early return drops `cluster`, which kills whatever was started.
        cluster.start_sim().await?;
        let config = node_config(
            &format!("{}/v1", cluster.sim.url),
            cluster.spec.workers,
            &cluster.spec.extra_config,
        );
        for i in 0..cluster.spec.nodes {
            let node = cluster.prepare_node(i, &config)?;
            cluster.nodes.push(node);
        }
        cluster.first_start(0, None).await?;
        let deadline = cluster.spec.start_timeout;
        cluster
            .wait_until("node 0 leads", deadline, |views| match views.first() {
                Some((_, v)) if v.believed_leader() == Some(v.node_id.as_str()) => Ok(()),
                Some((_, v)) => Err(format!("node 0 reports leader {:?}", v.leader)),
                None => Err("node 0 does not answer".into()),
            })
            .await?;
        let seed = cluster.nodes[0].cluster;
        for i in 1..cluster.spec.nodes {
            cluster.first_start(i, Some(seed)).await?;
        }
        cluster.wait_for_leader(deadline).await?;
        Ok(cluster)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`. Panics when `i >= len()`, like indexing.
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Every node's HTTP base URL, in index order (stable across restarts).
    pub fn http_urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::http_url).collect()
    }

    /// The simulator's base URL (`http://127.0.0.1:PORT`); models use `<this>/v1`.
    pub fn sim_url(&self) -> &str {
        &self.sim.url
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Indices of nodes that are running and not stopped.
    pub fn live(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .filter(|n| n.state() == NodeState::Running)
            .map(|n| n.index)
            .collect()
    }

    /// The index of the node with this cluster id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id.as_deref() == Some(id))
    }

    /// Reap nodes that exited by themselves (a crash, not a fault the harness injected):
    /// `(index, exit status)` of each; they are `Down` afterwards.
    pub fn exited(&mut self) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for n in &mut self.nodes {
            if let Some(c) = n.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    out.push((n.index, st.to_string()));
                    n.child = None;
                    n.stopped = false;
                }
            }
        }
        out
    }

    /// SIGKILL node `i` and reap it.
    pub fn kill(&mut self, i: usize) -> Result<(), HarnessError> {
        let node = self.nodes.get_mut(i).ok_or(HarnessError::NoSuchNode(i))?;
        if node.child.is_none() {
            return Err(HarnessError::NotRunning { index: i });
        }
        node.kill_and_reap();
        Ok(())
    }

    /// SIGTERM node `i` and wait up to `grace` for it to exit, then SIGKILL. Returns whether it
    /// exited by itself.
    pub async fn terminate(&mut self, i: usize, grace: Duration) -> Result<bool, HarnessError> {
        if self.nodes.get(i).map(Node::state) == Some(NodeState::Stopped) {
            self.cont(i)?;
        }
        self.signal(i, Signal::SIGTERM)?;
        let end = Instant::now() + grace;
        loop {
            let node = self.nodes.get_mut(i).ok_or(HarnessError::NoSuchNode(i))?;
            let exited = match node.child.as_mut() {
                None => true,
                Some(c) => c.try_wait().map(|s| s.is_some()).unwrap_or(true),
            };
            if exited {
                node.kill_and_reap();
                return Ok(true);
            }
            if Instant::now() >= end {
                node.kill_and_reap();
                return Ok(false);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGSTOP node `i` (it keeps its sockets but answers nothing).
    pub fn stop(&mut self, i: usize) -> Result<(), HarnessError> {
        self.signal(i, Signal::SIGSTOP)?;
        if let Some(n) = self.nodes.get_mut(i) {
            n.stopped = true;
        }
        Ok(())
    }

    /// SIGCONT node `i`.
    pub fn cont(&mut self, i: usize) -> Result<(), HarnessError> {
        self.signal(i, Signal::SIGCONT)?;
        if let Some(n) = self.nodes.get_mut(i) {
            n.stopped = false;
        }
        Ok(())
    }

    /// Start node `i` again on its data dir and addresses, without `--join` (SIGKILLing it first
    /// if it runs), and wait until it answers `/api/cluster`.
    pub async fn restart(&mut self, i: usize) -> Result<(), HarnessError> {
        let node = self.nodes.get_mut(i).ok_or(HarnessError::NoSuchNode(i))?;
        node.kill_and_reap();
        self.spawn(i, None)?;
        self.wait_answering(i).await
    }

    /// What node `i` says in `GET /api/cluster`.
    pub async fn status(&self, i: usize) -> Result<ClusterStatus, HarnessError> {
        let node = self.nodes.get(i).ok_or(HarnessError::NoSuchNode(i))?;
        get_json(&self.http, &format!("{}/api/cluster", node.http_url())).await
    }

    /// `GET /api/cluster` of every live node, concurrently (`None` for a node that did not
    /// answer in time).
    pub async fn statuses(&self) -> Vec<(usize, Option<ClusterStatus>)> {
        let live = self.live();
        let answers = futures::future::join_all(
            live.iter()
                .map(|&i| async move { self.status(i).await.ok() }),
        )
        .await;
        live.into_iter().zip(answers).collect()
    }

    /// The leader as the live nodes see it: the leader named with the highest term, when it
    /// is a live node of this cluster.
    pub async fn leader(&self) -> Option<usize> {
        let views: Vec<ClusterStatus> = self
            .statuses()
            .await
            .into_iter()
            .filter_map(|(_, v)| v)
            .collect();
        let best = views
            .iter()
            .filter(|v| v.believed_leader().is_some())
            .max_by_key(|v| v.term)?;
        let i = self.index_of(best.believed_leader()?)?;
        (self.nodes[i].state() == NodeState::Running).then_some(i)
    }

    /// Wait until every live node answers and all name the same leader (a live node) and term,
    /// listing every member. Returns the leader's index.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<usize, HarnessError> {
        let a = self.wait_agreement(timeout, false).await?;
        Ok(a.leader)
    }

    /// Like [`Cluster::wait_for_leader`], and the live nodes also report the same task counts.
    pub async fn wait_converged(&self, timeout: Duration) -> Result<Convergence, HarnessError> {
        self.wait_agreement(timeout, true).await
    }

    async fn wait_agreement(
        &self,
        timeout: Duration,
        counts: bool,
    ) -> Result<Convergence, HarnessError> {
        let end = Instant::now() + timeout;
        loop {
            let reason = match self.agreement_now(counts).await {
                Ok(c) => return Ok(c),
                Err(r) => r,
            };
            if Instant::now() >= end {
                return Err(HarnessError::NoConvergence {
                    after: timeout,
                    reason,
                });
            }
            tokio::time::sleep(POLL * 2).await;
        }
    }

    /// One look: do the live nodes agree right now?
    pub async fn agreement_now(&self, counts: bool) -> Result<Convergence, String> {
        let mut views = Vec::new();
        for (i, v) in self.statuses().await {
            match v {
                Some(v) => views.push((i, v)),
                None => return Err(format!("node {i} does not answer /api/cluster")),
            }
        }
        let Agreement {
            leader_id,
            term,
            tasks,
        } = agreement(&views, self.nodes.len(), counts)?;
        let leader = self
            .index_of(&leader_id)
            .ok_or_else(|| format!("leader {leader_id} is not one of the nodes started here"))?;
        if self.nodes[leader].state() != NodeState::Running {
            return Err(format!("leader {leader_id} (node {leader}) is not running"));
        }
        Ok(Convergence {
            leader,
            leader_id,
            term,
            tasks,
        })
    }

    /// Can partitions be made here? Probes iptables once (creating the run's chain).
    pub fn partitions_available(&mut self) -> Result<(), FirewallError> {
        match self.firewall.get_or_insert_with(Firewall::probe) {
            Ok(_) => Ok(()),
            Err(e) => Err(e.clone()),
        }
    }

    /// Cut the traffic between node addresses of different `groups` (lists of node indices).
    /// Replaces any earlier partition. Node ↔ simulator traffic is never cut.
    pub fn partition(&mut self, groups: &[Vec<usize>]) -> Result<(), HarnessError> {
        self.partitions_available()?;
        let addrs: Vec<Ipv4Addr> = self.nodes.iter().map(|n| n.ip).collect();
        if let Some(Ok(fw)) = self.firewall.as_mut() {
            fw.partition(&addrs, groups)?;
        }
        Ok(())
    }

    /// Remove the partition (no-op when there is none).
    pub fn heal(&mut self) -> Result<(), HarnessError> {
        if let Some(Ok(fw)) = self.firewall.as_mut() {
            fw.heal()?;
        }
        Ok(())
    }

    /// The simulator's call log.
    pub async fn sim_calls(&self) -> Result<SimCalls, HarnessError> {
        get_json(&self.http, &format!("{}/sim/calls", self.sim.url)).await
    }

    /// `GET /api/tasks/{id}` on node `i`: `Ok(None)` when the node answers 404.
    pub async fn task(&self, i: usize, id: &str) -> Result<Option<TaskSnapshot>, HarnessError> {
        let node = self.nodes.get(i).ok_or(HarnessError::NoSuchNode(i))?;
        let url = format!("{}/api/tasks/{id}", node.http_url());
        let err = |m: String| HarnessError::Http {
            url: url.clone(),
            message: m,
        };
        let r = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| err(e.to_string()))?;
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !r.status().is_success() {
            return Err(err(format!("status {}", r.status())));
        }
        r.json().await.map(Some).map_err(|e| err(e.to_string()))
    }

    /// The HTTP client the harness uses (short timeouts, no proxy).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    // ---- internals ----

    fn signal(&mut self, i: usize, sig: Signal) -> Result<(), HarnessError> {
        let node = self.nodes.get(i).ok_or(HarnessError::NoSuchNode(i))?;
        let pid = node.pid().ok_or(HarnessError::NotRunning { index: i })?;
        let pid = i32::try_from(pid).map_err(|_| HarnessError::NotRunning { index: i })?;
        send_signal(Pid::from_raw(pid), sig).map_err(|source| HarnessError::Signal {
            index: i,
            signal: sig.as_str(),
            source,
        })
    }

    async fn start_sim(&mut self) -> Result<(), HarnessError> {
        let mut last = String::new();
        for _ in 0..PORT_TRIES_MAX {
            let port = free_port(Ipv4Addr::LOCALHOST)?;
            let log = append_log(&self.sim.log_path, "sim-provider start")?;
            let mut cmd = Command::new(&self.spec.bin);
            scrub_env(&mut cmd);
            cmd.arg("sim-provider")
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .args(&self.spec.sim_args)
                .stdin(Stdio::null())
                .stdout(clone_file(&log, &self.sim.log_path)?)
                .stderr(log);
            self.sim.child = Some(cmd.spawn().map_err(io(format!(
                "spawning {} sim-provider",
                self.spec.bin.display()
            )))?);
            self.sim.url = format!("http://127.0.0.1:{port}");
            let end = Instant::now() + self.spec.start_timeout;
            loop {
                if let Ok(r) = self
                    .http
                    .get(format!("{}/health", self.sim.url))
                    .send()
                    .await
                {
                    if r.status().is_success() {
                        return Ok(());
                    }
                }
                if let Some(c) = self.sim.child.as_mut() {
                    if let Ok(Some(st)) = c.try_wait() {
                        self.sim.child = None;
                        last = format!("{st}");
                        break; // most likely a port race: try another port
                    }
                }
                if Instant::now() >= end {
                    return Err(HarnessError::Timeout {
                        what: "sim-provider".into(),
                        after: self.spec.start_timeout,
                        log: log_tail(&self.sim.log_path),
                    });
                }
                tokio::time::sleep(POLL / 2).await;
            }
        }
        Err(HarnessError::Exited {
            what: "sim-provider".into(),
            status: last,
            log: log_tail(&self.sim.log_path),
        })
    }

    fn prepare_node(&self, i: usize, config: &Value) -> Result<Node, HarnessError> {
        let ip = node_ip(i);
        let dir = self.run_dir.join(format!("node-{i}"));
        let data_dir = dir.join("data");
        std::fs::create_dir_all(&data_dir)
            .map_err(io(format!("creating {}", data_dir.display())))?;
        let config_path = dir.join("openclaw.json");
        let text = serde_json::to_vec_pretty(config).map_err(|e| HarnessError::Io {
            what: "encoding the node config".into(),
            source: e.into(),
        })?;
        std::fs::write(&config_path, text)
            .map_err(io(format!("writing {}", config_path.display())))?;
        let (http, cluster) = pick_ports(ip)?;
        Ok(Node {
            index: i,
            ip,
            http,
            cluster,
            data_dir,
            config_path,
            log_path: dir.join("node.log"),
            child: None,
            stopped: false,
            id: None,
            starts: 0,
        })
    }

    /// The first start of node `i`: new ports when the old ones turn out to be taken.
    async fn first_start(
        &mut self,
        i: usize,
        join: Option<SocketAddr>,
    ) -> Result<(), HarnessError> {
        for attempt in 1..=PORT_TRIES_MAX {
            self.spawn(i, join)?;
            match self.wait_answering(i).await {
                Ok(()) => return Ok(()),
                Err(HarnessError::Exited { log, .. })
                    if attempt < PORT_TRIES_MAX && looks_like_port_clash(&log) =>
                {
                    let ip = self.nodes[i].ip;
                    let (http, cluster) = pick_ports(ip)?;
                    self.nodes[i].http = http;
                    self.nodes[i].cluster = cluster;
                }
                Err(e) => return Err(e),
            }
        }
        Err(HarnessError::Spec(format!("node {i}: no free ports")))
    }

    fn spawn(&mut self, i: usize, join: Option<SocketAddr>) -> Result<(), HarnessError> {
        let bin = self.spec.bin.clone();
        let node = self.nodes.get_mut(i).ok_or(HarnessError::NoSuchNode(i))?;
        node.starts += 1;
        let mut args: Vec<String> = vec![
            "--config".into(),
            node.config_path.display().to_string(),
            "--data-dir".into(),
            node.data_dir.display().to_string(),
            "--http".into(),
            node.http.to_string(),
            "--cluster".into(),
            node.cluster.to_string(),
        ];
        if let Some(seed) = join {
            args.push("--join".into());
            args.push(seed.to_string());
        }
        let log = append_log(
            &node.log_path,
            &format!("start #{} of node {i}: {}", node.starts, args.join(" ")),
        )?;
        let mut cmd = Command::new(&bin);
        scrub_env(&mut cmd);
        cmd.args(&args)
            .env("OPENCLAW_CLUSTER_SECRET", &self.secret)
            .env("RUST_LOG", &self.spec.rust_log)
            // Plain text in the log files (tracing-subscriber honours NO_COLOR).
            .env("NO_COLOR", "1")
            .envs(self.spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(clone_file(&log, &node.log_path)?)
            .stderr(log);
        let child = cmd
            .spawn()
            .map_err(io(format!("spawning {} for node {i}", bin.display())))?;
        node.child = Some(child);
        node.stopped = false;
        Ok(())
    }

    /// Wait until node `i` answers `/api/cluster` and learn its id.
    async fn wait_answering(&mut self, i: usize) -> Result<(), HarnessError> {
        let timeout = self.spec.start_timeout;
        let end = Instant::now() + timeout;
        loop {
            if let Ok(v) = self.status(i).await {
                self.nodes[i].id = Some(v.node_id);
                return Ok(());
            }
            let node = &mut self.nodes[i];
            let exited = match node.child.as_mut() {
                Some(c) => c.try_wait().ok().flatten(),
                None => None,
            };
            if let Some(st) = exited {
                node.child = None;
                return Err(HarnessError::Exited {
                    what: format!("node {i}"),
                    status: st.to_string(),
                    log: node.log_tail(),
                });
            }
            if Instant::now() >= end {
                return Err(HarnessError::Timeout {
                    what: format!("node {i} (/api/cluster)"),
                    after: timeout,
                    log: node.log_tail(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Poll the live nodes' views until `ok` accepts them.
    async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&[(usize, ClusterStatus)]) -> Result<(), String>,
    ) -> Result<(), HarnessError> {
        let end = Instant::now() + timeout;
        loop {
            let views: Vec<(usize, ClusterStatus)> = self
                .statuses()
                .await
                .into_iter()
                .filter_map(|(i, v)| v.map(|v| (i, v)))
                .collect();
            let reason = match ok(&views) {
                Ok(()) => return Ok(()),
                Err(r) => r,
            };
            if Instant::now() >= end {
                return Err(HarnessError::NoConvergence {
                    after: timeout,
                    reason: format!("{what}: {reason}"),
                });
            }
            tokio::time::sleep(POLL * 2).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill_and_reap();
        }
        if let Some(mut c) = self.sim.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The firewall's own Drop removes its chain.
        self.firewall = None;
    }
}

/// The live nodes agreed: who leads, in which term, and the task counts they report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Convergence {
    pub leader: usize,
    pub leader_id: String,
    pub term: u64,
    pub tasks: BTreeMap<String, u64>,
}

/// Node `i`'s address: 127.0.0.(i + 2).
pub fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, (i + 2).min(254) as u8)
}

/// A node config: models `fast` and `smart` served by the simulator at `sim_base_url`
/// (`http://127.0.0.1:PORT/v1`), `workers` workers, `extra` merged in one level deep.
pub fn node_config(sim_base_url: &str, workers: usize, extra: &Value) -> Value {
    let model = |input: f64, output: f64| json!({"provider": "sim", "base_url": sim_base_url, "price": {"input": input, "output": output}});
    let mut cfg = json!({
        "models": {"fast": model(0.15, 0.6), "smart": model(2.5, 10.0)},
        "model_routing": {"default_model": "fast"},
        "server": {"workers": workers},
    });
    if let (Value::Object(base), Value::Object(extra)) = (&mut cfg, extra) {
        for (k, v) in extra {
            match (base.get_mut(k), v) {
                (Some(Value::Object(b)), Value::Object(add)) => {
                    for (k2, v2) in add {
                        b.insert(k2.clone(), v2.clone());
                    }
                }
                (_, v) => {
                    base.insert(k.clone(), v.clone());
                }
            }
        }
    }
    cfg
}

fn control_client() -> Result<reqwest::Client, HarnessError> {
    reqwest::Client::builder()
        .timeout(CONTROL_TIMEOUT)
        .no_proxy()
        .build()
        .map_err(|e| HarnessError::Io {
            what: "building the HTTP client".into(),
            source: std::io::Error::other(e),
        })
}

async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> Result<T, HarnessError> {
    let err = |m: String| HarnessError::Http {
        url: url.to_string(),
        message: m,
    };
    let r = http.get(url).send().await.map_err(|e| err(e.to_string()))?;
    if !r.status().is_success() {
        return Err(err(format!("status {}", r.status())));
    }
    r.json().await.map_err(|e| err(e.to_string()))
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> HarnessError {
    move |source| HarnessError::Io { what, source }
}

/// A free port on `ip` (bound, then released).
fn free_port(ip: Ipv4Addr) -> Result<u16, HarnessError> {
    let l = TcpListener::bind(SocketAddrV4::new(ip, 0))
        .map_err(io(format!("binding {ip}:0 to find a free port")))?;
    Ok(l.local_addr()
        .map_err(io("reading a bound port".into()))?
        .port())
}

/// A free HTTP port and a free cluster port P whose P + 1 (the ractor mesh) is free too.
fn pick_ports(ip: Ipv4Addr) -> Result<(SocketAddr, SocketAddr), HarnessError> {
    const TRIES_MAX: u32 = 64;
    let http = free_port(ip)?;
    for _ in 0..TRIES_MAX {
        let Ok(first) = TcpListener::bind(SocketAddrV4::new(ip, 0)) else {
            continue;
        };
        let Ok(p) = first.local_addr().map(|a| a.port()) else {
            continue;
        };
        if p == u16::MAX || p + 1 == http || p == http {
            continue;
        }
        if TcpListener::bind(SocketAddrV4::new(ip, p + 1)).is_ok() {
            return Ok((
                SocketAddr::V4(SocketAddrV4::new(ip, http)),
                SocketAddr::V4(SocketAddrV4::new(ip, p)),
            ));
        }
    }
    Err(HarnessError::Spec(format!(
        "no free port pair P, P+1 on {ip} after {TRIES_MAX} tries"
    )))
}

fn looks_like_port_clash(log: &str) -> bool {
    let l = log.to_lowercase();
    l.contains("address already in use") || l.contains("addrinuse")
}

/// Environment of the developer's shell that would change a node's behaviour.
fn scrub_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("OPENCLAW") {
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

/// Open `path` for appending and write a marker line for this start.
fn append_log(path: &Path, marker: &str) -> Result<File, HarnessError> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io(format!("opening {}", path.display())))?;
    writeln!(f, "----- openclaw-chaos: {marker}")
        .map_err(io(format!("writing {}", path.display())))?;
    Ok(f)
}

fn clone_file(f: &File, path: &Path) -> Result<File, HarnessError> {
    f.try_clone()
        .map_err(io(format!("duplicating the handle of {}", path.display())))
}

/// The last [`LOG_TAIL_BYTES`] of a log file (empty when unreadable).
pub fn log_tail(path: &Path) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
    let mut buf = Vec::new();
    let _ = f.take(LOG_TAIL_BYTES).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// 32 hex characters from the OS's random source (the clock as a last resort).
fn random_secret() -> String {
    let mut bytes = [0u8; 16];
    let from_os = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if from_os.is_err() {
        let mut r = crate::rng::Rng::new(crate::rng::fresh_seed());
        for b in &mut bytes {
            *b = r.next_u64() as u8;
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_points_models_at_the_sim_and_merges_extra() {
        let c = node_config(
            "http://127.0.0.1:9/v1",
            3,
            &json!({"server": {"queue_max": 10}, "budget": {"enabled": false}}),
        );
        assert_eq!(c["models"]["fast"]["base_url"], "http://127.0.0.1:9/v1");
        assert_eq!(c["models"]["smart"]["provider"], "sim");
        assert_eq!(c["server"]["workers"], 3);
        assert_eq!(c["server"]["queue_max"], 10);
        assert_eq!(c["budget"]["enabled"], false);
    }

    #[test]
    fn node_addresses_skip_the_simulators() {
        assert_eq!(node_ip(0), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(node_ip(4), Ipv4Addr::new(127, 0, 0, 6));
    }

    #[test]
    fn ports_come_in_pairs() {
        let (http, cluster) = pick_ports(Ipv4Addr::LOCALHOST).unwrap();
        assert_ne!(http.port(), cluster.port());
        assert_ne!(http.port(), cluster.port() + 1);
    }

    #[test]
    fn a_spec_is_checked_before_anything_starts() {
        let mut s = ClusterSpec::new("/nonexistent/openclaw-node", 3);
        assert!(matches!(s.validate(), Err(HarnessError::Spec(_))));
        s.nodes = 0;
        assert!(matches!(s.validate(), Err(HarnessError::Spec(_))));
    }

    #[test]
    fn secrets_are_random_hex() {
        let a = random_secret();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, random_secret());
    }
}

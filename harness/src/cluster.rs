//! A real cluster of `openclaw-node` processes on one machine, for the chaos suite, the
//! integration tests, `openclaw-node demo` and `bench --scenario cluster`.
//!
//! [`Cluster::start`] runs one simulator ([`crate::sim`], on 127.0.0.1) and N nodes
//! ([`crate::node`]) on 127.0.0.2 .. 127.0.0.(N+1), each with free HTTP and cluster ports (the
//! ractor mesh takes cluster port + 1), its own data dir and config under the run dir, and one
//! cluster secret (random unless given) shared through `OPENCLAW_CLUSTER_SECRET`. The first
//! node bootstraps; the others `--join` it; start returns once every node reports the same
//! leader and term and lists every member. A node's stdout and stderr are appended to
//! `<run-dir>/node-<i>/node.log` across restarts (each start is marked).
//!
//! Faults: [`Cluster::kill`] (SIGKILL), [`Cluster::terminate`] (SIGTERM, then SIGKILL after a
//! grace), [`Cluster::stop`] / [`Cluster::cont`] (SIGSTOP / SIGCONT), [`Cluster::restart`] (same
//! data dir and addresses, no `--join`), [`Cluster::partition`] / [`Cluster::heal`] (iptables,
//! see [`crate::partition`]), and [`Cluster::spawn_joiner`] (a new node that tries to join
//! with a secret of the caller's choice).
//!
//! Invariant: no process outlives the `Cluster`. `Drop` SIGKILLs and reaps every child (also
//! while unwinding from a panic) and removes the firewall chain; the run dir is removed unless
//! it was given or `keep_dir` is set. Every wait has a deadline and fails with the node's log
//! tail. The harness knows nothing about workloads or checks.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::error::{io, HarnessError};
use crate::node::{Node, NodeSpec, NodeState};
use crate::partition::{Firewall, FirewallError};
use crate::process::{
    control_client, get_json, looks_like_port_clash, pick_ports, POLL, PORT_TRIES_MAX,
};
use crate::sim::{Sim, SimSpec};
use crate::status::{agreement, Agreement, ClusterStatus, SimCalls, TaskSnapshot};

/// Nodes live on 127.0.0.2 ..= 127.0.0.(NODES_MAX + 1).
pub const NODES_MAX: usize = 9;
pub use crate::process::CONTROL_TIMEOUT;

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
    /// Merged after `extra_config` into the config of node directory `k` only (members
    /// 0..nodes, then joiners in order): per-node settings such as `cluster.tls`.
    pub node_config: BTreeMap<usize, Value>,
    /// `RUST_LOG` of the nodes.
    pub rust_log: String,
    /// Extra environment of the nodes (set last).
    pub env: Vec<(String, String)>,
    /// The cluster secret; default a random one.
    pub secret: Option<String>,
    /// A path each node must also answer 2xx at before its start counts (e.g. `/ready`);
    /// by default a node counts as started once `/api/cluster` answers.
    pub ready_path: Option<String>,
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
            node_config: BTreeMap::new(),
            rust_log: "info".into(),
            env: Vec::new(),
            secret: None,
            ready_path: None,
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

/// A running cluster. Dropping it kills everything it started.
#[derive(Debug)]
pub struct Cluster {
    spec: ClusterSpec,
    run_dir: PathBuf,
    secret: String,
    config: Value,
    // Nodes before the simulator: dropped (killed) first.
    nodes: Vec<Node>,
    sim: Sim,
    /// Directories handed out so far (members and joiners): the next joiner's index.
    dirs: usize,
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
                    .prefix("openclaw-cluster-")
                    .tempdir()
                    .map_err(io("creating a temp run dir".into()))?;
                if keep {
                    (t.keep(), None)
                } else {
                    (t.path().to_path_buf(), Some(t))
                }
            }
        };
        let mut sim_spec = SimSpec::new(&spec.bin, run_dir.join("sim.log")).args(&spec.sim_args);
        sim_spec.start_timeout = spec.start_timeout;
        // An early return from here on drops what was started, which kills it.
        let sim = Sim::start(sim_spec).await?;
        let config = node_config(&sim.base_url(), spec.workers, &spec.extra_config);
        let mut cluster = Cluster {
            secret: spec.secret.clone().unwrap_or_else(random_secret),
            http: control_client()?,
            nodes: Vec::new(),
            sim,
            config,
            dirs: 0,
            firewall: None,
            run_dir,
            _tmp: tmp,
            spec,
        };
        for _ in 0..cluster.spec.nodes {
            let node = cluster.prepare_node(None)?;
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
        let seed = cluster.seed();
        for i in 1..cluster.spec.nodes {
            cluster.first_start(i, seed).await?;
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
        self.sim.url()
    }

    pub fn sim(&self) -> &Sim {
        &self.sim
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The cluster secret every member was started with.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The config every member was started with.
    pub fn config(&self) -> &Value {
        &self.config
    }

    /// Indices of nodes that are running and not stopped.
    pub fn live(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .filter(|n| n.state() == NodeState::Running)
            .map(Node::index)
            .collect()
    }

    /// The index of the node with this cluster id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id() == Some(id))
    }

    /// Reap nodes that exited by themselves (a crash, not a fault the harness injected):
    /// `(index, exit status)` of each; they are `Down` afterwards.
    pub fn exited(&mut self) -> Vec<(usize, String)> {
        self.nodes
            .iter_mut()
            .filter_map(|n| n.exited().map(|st| (n.index(), st.to_string())))
            .collect()
    }

    /// Wait up to `deadline` for node `i` to exit by itself (e.g. after it left the cluster);
    /// its exit status, or `None` while it still runs.
    pub async fn wait_exit(&mut self, i: usize, deadline: Duration) -> Option<ExitStatus> {
        self.nodes.get_mut(i)?.wait_exit(deadline).await
    }

    /// SIGKILL node `i` and reap it.
    pub fn kill(&mut self, i: usize) -> Result<(), HarnessError> {
        let node = self.node_mut(i)?;
        if node.state() == NodeState::Down {
            return Err(HarnessError::NotRunning { index: i });
        }
        node.kill();
        Ok(())
    }

    /// SIGTERM node `i` and wait up to `grace` for it to exit, then SIGKILL. Returns whether it
    /// exited by itself.
    pub async fn terminate(&mut self, i: usize, grace: Duration) -> Result<bool, HarnessError> {
        let st = self.node_mut(i)?.terminate(grace).await?;
        Ok(st.is_some())
    }

    /// SIGSTOP node `i` (it keeps its sockets but answers nothing).
    pub fn stop(&mut self, i: usize) -> Result<(), HarnessError> {
        self.node_mut(i)?.stop()
    }

    /// SIGCONT node `i`.
    pub fn cont(&mut self, i: usize) -> Result<(), HarnessError> {
        self.node_mut(i)?.cont()
    }

    /// Start node `i` again on its data dir and addresses, without `--join` (SIGKILLing it first
    /// if it runs), and wait until it answers.
    pub async fn restart(&mut self, i: usize) -> Result<(), HarnessError> {
        let node = self.node_mut(i)?;
        node.kill();
        node.spawn(None)?;
        self.wait_answering(i).await
    }

    /// A node that is no member: it gets the next address and a directory of its own, the
    /// members' config and `secret`, and is spawned with `--join` node 0 (not waited for).
    /// Dropping it kills it.
    pub fn spawn_joiner(&mut self, secret: &str) -> Result<Node, HarnessError> {
        let mut node = self.prepare_node(Some(secret))?;
        node.spawn(self.seed())?;
        Ok(node)
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
        let addrs: Vec<Ipv4Addr> = self.nodes.iter().map(Node::ip).collect();
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
        self.sim.calls().await
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

    fn node_mut(&mut self, i: usize) -> Result<&mut Node, HarnessError> {
        self.nodes.get_mut(i).ok_or(HarnessError::NoSuchNode(i))
    }

    /// Node 0's cluster address: where the others join.
    fn seed(&self) -> Option<SocketAddr> {
        self.nodes.first().and_then(Node::cluster_addr)
    }

    /// The next node directory `node-<k>` with the members' config, on 127.0.0.(k + 2) with
    /// fresh ports; `secret` overrides the cluster's.
    fn prepare_node(&mut self, secret: Option<&str>) -> Result<Node, HarnessError> {
        let k = self.dirs;
        if k >= NODES_MAX {
            return Err(HarnessError::Spec(format!(
                "at most {NODES_MAX} node addresses"
            )));
        }
        self.dirs += 1;
        let ip = node_ip(k);
        let dir = self.run_dir.join(format!("node-{k}"));
        let (http, cluster) = pick_ports(ip)?;
        let mut env = vec![
            (
                "OPENCLAW_CLUSTER_SECRET".to_string(),
                secret.unwrap_or(&self.secret).to_string(),
            ),
            // Plain text in the log files (tracing-subscriber honours NO_COLOR).
            ("NO_COLOR".to_string(), "1".to_string()),
        ];
        env.extend(self.spec.env.iter().cloned());
        let spec = NodeSpec {
            bin: self.spec.bin.clone(),
            data_dir: dir.join("data"),
            config_path: dir.join("openclaw.json"),
            log_path: dir.join("node.log"),
            ip,
            http_port: Some(http.port()),
            http_host: None,
            cluster: Some(cluster),
            rust_log: Some(self.spec.rust_log.clone()),
            env,
            ready_path: self
                .spec
                .ready_path
                .clone()
                .unwrap_or_else(|| "/api/cluster".into()),
            start_timeout: self.spec.start_timeout,
        };
        let node = Node::new(spec, k)?;
        match self.spec.node_config.get(&k) {
            Some(own) => {
                let mut cfg = self.config.clone();
                merge_one_level(&mut cfg, own);
                node.write_config(&cfg)?;
            }
            None => node.write_config(&self.config)?,
        }
        Ok(node)
    }

    /// The first start of node `i`: new ports when the old ones turn out to be taken.
    async fn first_start(
        &mut self,
        i: usize,
        join: Option<SocketAddr>,
    ) -> Result<(), HarnessError> {
        for attempt in 1..=PORT_TRIES_MAX {
            self.node_mut(i)?.spawn(join)?;
            match self.wait_answering(i).await {
                Ok(()) => return Ok(()),
                Err(HarnessError::Exited { log, .. })
                    if attempt < PORT_TRIES_MAX && looks_like_port_clash(&log) =>
                {
                    let ip = self.nodes[i].ip();
                    let (http, cluster) = pick_ports(ip)?;
                    self.nodes[i].set_addrs(http, cluster);
                }
                Err(e) => return Err(e),
            }
        }
        Err(HarnessError::Spec(format!("node {i}: no free ports")))
    }

    /// Wait until node `i` passes its ready probe and answers `/api/cluster`; learn its id.
    async fn wait_answering(&mut self, i: usize) -> Result<(), HarnessError> {
        self.node_mut(i)?.wait_ready().await?;
        let timeout = self.spec.start_timeout;
        let end = Instant::now() + timeout;
        loop {
            if let Ok(v) = self.status(i).await {
                self.nodes[i].set_id(v.node_id);
                return Ok(());
            }
            self.nodes[i].check_alive()?;
            if Instant::now() >= end {
                return Err(HarnessError::Timeout {
                    what: format!("node {i} (/api/cluster)"),
                    after: timeout,
                    log: self.nodes[i].log_tail(),
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
            n.kill();
        }
        self.sim.kill();
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

/// A node config: models `fast` and `smart` (only these: `models_mode: "replace"` drops the
/// built-in models) served by the simulator at `sim_base_url`
/// (`http://127.0.0.1:PORT/v1`), `workers` workers, `extra` merged in one level deep (objects
/// are merged key by key, anything else replaces).
pub fn node_config(sim_base_url: &str, workers: usize, extra: &Value) -> Value {
    let model = |input: f64, output: f64| json!({"provider": "sim", "base_url": sim_base_url, "price": {"input": input, "output": output}});
    let mut cfg = json!({
        "models_mode": "replace",
        "models": {"fast": model(0.15, 0.6), "smart": model(2.5, 10.0)},
        "model_routing": {"default_model": "fast"},
        "server": {"workers": workers},
    });
    merge_one_level(&mut cfg, extra);
    cfg
}

/// Merge `extra` into `cfg` one level deep (objects key by key, anything else replaces).
fn merge_one_level(cfg: &mut Value, extra: &Value) {
    if let (Value::Object(base), Value::Object(extra)) = (cfg, extra) {
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
}

/// 32 hex characters from the OS-seeded generator.
fn random_secret() -> String {
    let bytes: [u8; 16] = rand::random();
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

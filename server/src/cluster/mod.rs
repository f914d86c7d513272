//! Cluster mode: this node as a member of a Raft group (openraft) that replicates task
//! ownership, node liveness and budget/rate leases (see `openclaw_cluster`).
//!
//! - [`net`]: Raft RPCs over HTTP on the cluster address, secret in a header, deadlines.
//! - [`server`]: the cluster listener (Raft, forwarded writes, join, leave).
//! - [`proposer`]: batches commands into Raft entries; followers forward to the leader.
//! - [`ledger`]: the task [`crate::tasks::ledger::Ledger`] backed by the replicated state.
//! - [`outcome`]: an admission whose commit outcome is unknown is resolved (replica read,
//!   idempotent re-proposal) within a bound, else answered `outcome_unknown`.
//! - [`watcher`]: follows applied events (feeds the scheduler), heartbeats, the leader's sweeps
//!   (expire, purge, promote learners), work stealing and reconciliation.
//! - [`prevote`]: the pre-vote openraft 0.9 lacks: an election starts only when a majority
//!   of voters has lost the leader too, so a paused or cut-off follower cannot depose it.
//! - [`quota`]: budget and rate-limit leases on the hot path.
//! - [`sessions`]: the [`crate::sessions::SessionStore`] backed by the replicated state.
//! - [`status`]: what `GET /api/cluster` and `openclaw-node status` show.
//! - [`tls`]: `cluster.tls` — mutual TLS on the cluster port and the mesh.
//! - [`cache`]: the request cache's replication to the live peers (`POST /cluster/cache`).
//!
//! Raft's own work runs on its own runtime ([`raft_runtime`], [`RAFT_THREADS`] threads): the
//! openraft core, its replication and state-machine tasks, the cluster listener (Raft RPCs,
//! forwarded writes) and the pre-vote timer, so heartbeats and votes do not queue behind
//! request work on the node's main runtime when it is saturated (issue 14, item 3).
//!
//! Start: open `<data-dir>/raft` → node id (generated once, kept) → Raft → listener →
//! bootstrap (no `--join` and never initialized) or join through a seed (`--join`) → a node
//! restarted with its data dir is already a member and needs neither.

pub mod cache;
pub mod cron;
pub mod ledger;
pub mod memory;
pub mod net;
pub mod outcome;
pub mod prevote;
pub mod proposer;
pub mod quota;
pub mod server;
pub mod sessions;
pub mod status;
pub mod tls;
pub mod watcher;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use openclaw_cluster::store::{self, StateMachineStore};
use openclaw_cluster::{Member, NodeId, Raft};
use openraft::ChangeMembers;
use tokio_util::sync::CancellationToken;

use crate::config::{ClusterConfig, Config, Secret};
use crate::tasks::{RemoteCancel, RemoteTasks};
use net::{Network, PeerClient};
use openclaw_proto::TaskRecord;
use proposer::{Proposer, ProposerConfig};
use server::{JoinRequest, MembershipReply};

/// Worker threads of the Raft runtime: two, so a long `apply` batch (sled writes) does not
/// hold up a heartbeat on the other.
pub const RAFT_THREADS: usize = 2;

/// The process's Raft runtime, built on first use and never dropped (a runtime must not be
/// dropped from async code, and the node's Raft lives as long as the process).
pub fn raft_runtime() -> anyhow::Result<tokio::runtime::Handle> {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    if let Some(rt) = RT.get() {
        return Ok(rt.handle().clone());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(RAFT_THREADS)
        .thread_name("raft")
        .enable_all()
        .build()
        .context("starting the Raft runtime")?;
    // A racing caller's runtime is dropped here, outside async code (this is a plain fn).
    Ok(RT.get_or_init(|| rt).handle().clone())
}

/// How long start-up keeps trying to join through the seeds.
pub const JOIN_DEADLINE: Duration = Duration::from_secs(60);

/// Deadline of one install-snapshot chunk RPC; the last chunk installs the snapshot (streams
/// the file into sled) before the receiver answers, which takes seconds for a large one.
pub const INSTALL_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(120);

/// This node's part of the cluster.
pub struct Cluster {
    pub id: NodeId,
    pub member: Member,
    pub raft: Raft,
    pub sm: StateMachineStore,
    pub proposer: Proposer,
    pub client: PeerClient,
    pub secret: Secret,
    pub cfg: ClusterConfig,
    pub started: Instant,
    /// The mesh address other nodes' actor systems connect to.
    pub mesh_addr: SocketAddr,
    pub mesh: std::sync::Mutex<Option<Arc<openclaw_cluster::mesh::Mesh>>>,
    /// Budget and rate-limit leases held by this node.
    pub quota: quota::Quota,
    /// When this node last heard from a leader (the pre-vote's clock).
    pub contact: prevote::Contact,
    /// `cluster.tls`, loaded: the cluster port and the mesh use it (plain without).
    pub tls: Option<tls::ClusterTls>,
    /// This node's request cache, set by the node once built: where peers' replicated entries
    /// go (`POST /cluster/cache`, [`cache`]).
    pub cache: std::sync::OnceLock<crate::cache::RequestCache>,
}

/// The cluster address: `--cluster` / `cluster.listen`.
pub fn cluster_listen(cfg: &Config) -> Option<anyhow::Result<SocketAddr>> {
    cfg.cluster.listen.as_ref().map(|a| {
        a.parse()
            .with_context(|| format!("cluster.listen `{a}` is not an address like 10.0.0.5:7000"))
    })
}

fn node_id(db: &sled::Db, fixed: Option<u64>) -> anyhow::Result<NodeId> {
    let stored = store::node_id(db).context("reading the node id")?;
    match (stored, fixed) {
        (Some(s), Some(f)) if s != f => anyhow::bail!(
            "this data dir belongs to node {s}, but --node-id / cluster.node_id says {f}; \
             use a fresh data dir for a new node"
        ),
        (Some(s), _) => Ok(s),
        (None, f) => {
            // Small enough to print and type, large enough not to collide in practice.
            let id = f.unwrap_or_else(|| rand::random_range(1..=u32::MAX as u64));
            store::set_node_id(db, id).context("storing the node id")?;
            Ok(id)
        }
    }
}

impl Cluster {
    /// Start Raft and the cluster listener, then bootstrap or join.
    pub async fn start(
        cfg: &Config,
        data_dir: &Path,
        http_addr: SocketAddr,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Cluster>> {
        let c = &cfg.cluster;
        let listen = match cluster_listen(cfg) {
            Some(a) => a?,
            None => anyhow::bail!("cluster mode needs --cluster ADDR"),
        };
        // Checked before anything is opened: a bad file is a start-up refusal naming its key.
        let tls = c.tls.as_ref().map(tls::ClusterTls::load).transpose()?;
        // (`Config::validate` applied the same rule; `--cluster` is in the config by now.)
        for ip in std::iter::once(listen.ip()).chain(c.addresses()) {
            if let Err(reason) = crate::config::cluster_transport(ip, tls.is_some(), c.insecure) {
                anyhow::bail!("cluster.tls: {reason}");
            }
        }
        if tls.is_some() {
            tracing::info!(cluster = %listen, "cluster port and mesh: mutual TLS (cluster.tls)");
        }
        let secret = std::env::var(&c.secret_env)
            .ok()
            .filter(|s| !s.is_empty())
            .map(Secret::new)
            .with_context(|| {
                format!(
                    "cluster mode needs a shared cluster secret: set {} to the same value on \
                     every node",
                    c.secret_env
                )
            })?;
        let mesh_addr: SocketAddr = match &c.mesh_listen {
            Some(a) => a
                .parse()
                .with_context(|| format!("cluster.mesh_listen `{a}` is not an address"))?,
            None => SocketAddr::new(listen.ip(), listen.port().wrapping_add(1)),
        };
        // `server.store_cache_mb`: sled's default cache is 1 GiB, and it fills with the
        // finished records kept on disk.
        let db = sled::Config::new()
            .path(data_dir.join("raft"))
            .cache_capacity(cfg.server.store_cache_mb << 20)
            .open()
            .with_context(|| {
                format!(
                    "opening the Raft store in {} (is another node using this data dir?)",
                    data_dir.join("raft").display()
                )
            })?;
        let id = node_id(&db, c.node_id)?;
        let (log, sm) = store::open(
            &db,
            &data_dir.join("raft-snapshots"),
            store::event_channel(),
        )
        .context("opening the Raft store")?;
        let raft_cfg = openraft::Config {
            cluster_name: "openclaw".into(),
            heartbeat_interval: c.raft_heartbeat_ms,
            // openraft's timer is off; its min is the vote RPC deadline and its max the leader
            // lease, which must not outlast the pre-vote threshold (prevote.rs header).
            election_timeout_min: prevote::raft_timeouts(c.election_timeout_min_ms).0,
            election_timeout_max: prevote::raft_timeouts(c.election_timeout_min_ms).1,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(c.snapshot_every),
            max_in_snapshot_log_to_keep: 1000,
            snapshot_max_chunk_size: store::SNAPSHOT_CHUNK_BYTES,
            install_snapshot_timeout: INSTALL_SNAPSHOT_TIMEOUT.as_millis() as u64,
            max_payload_entries: 64,
            // Elections start from `prevote` after a majority agrees, never from openraft's
            // own timer (which would let a returning follower depose a healthy leader).
            enable_elect: false,
            ..Default::default()
        }
        .validate()
        .context("cluster timing settings")?;
        let client = PeerClient::new(
            Some(listen.ip()),
            secret.clone(),
            Duration::from_millis(c.rpc_timeout_ms),
            tls.as_ref(),
        )?;
        // openraft spawns its core, replication and state-machine tasks on the runtime that
        // builds it: the Raft runtime.
        let rt = raft_runtime()?;
        let network = Network {
            client: client.clone(),
        };
        let sm_for_raft = sm.clone();
        let raft = rt
            .spawn(
                async move { Raft::new(id, Arc::new(raft_cfg), network, log, sm_for_raft).await },
            )
            .await
            .context("starting Raft (its runtime stopped)")?
            .context("starting Raft")?;
        // What other nodes use to reach this one: the advertised host (Docker service names)
        // when the listeners are on 0.0.0.0.
        let advertise = c.advertise.clone().unwrap_or_else(|| listen.to_string());
        let host = advertise
            .rsplit_once(':')
            .map(|(h, _)| h.to_string())
            .unwrap_or_else(|| listen.ip().to_string());
        let reachable = |a: SocketAddr| {
            if a.ip().is_unspecified() {
                format!("{host}:{}", a.port())
            } else {
                a.to_string()
            }
        };
        let member = Member {
            cluster_addr: advertise.clone(),
            http_addr: reachable(http_addr),
            mesh_addr: reachable(mesh_addr),
        };
        let proposer = Proposer::start(
            raft.clone(),
            id,
            client.clone(),
            ProposerConfig {
                batch_max: c.batch_max,
                proposals_max: c.proposals_max,
                writes_in_flight: c.writes_in_flight,
                deadline: Duration::from_millis(c.rpc_timeout_ms * 2),
            },
            shutdown.clone(),
        );
        let cluster = Arc::new(Cluster {
            id,
            member: member.clone(),
            raft: raft.clone(),
            sm,
            proposer,
            client,
            secret,
            cfg: c.clone(),
            started: Instant::now(),
            mesh_addr,
            mesh: std::sync::Mutex::new(None),
            quota: quota::Quota::default(),
            contact: prevote::Contact::default(),
            tls: tls.clone(),
            cache: std::sync::OnceLock::new(),
        });

        // Bound on the Raft runtime, so the listener and the connections it accepts are driven
        // by that runtime's I/O driver.
        let listener = rt
            .spawn(bind_retrying(listen))
            .await
            .context("binding the cluster address (the Raft runtime stopped)")?
            .with_context(|| format!("binding the cluster address {listen}"))?;
        let app =
            server::router(cluster.clone()).into_make_service_with_connect_info::<tls::PeerAddr>();
        {
            let token = shutdown.clone();
            let raft = raft.clone();
            // The TLS accept loop and the server task are spawned on the Raft runtime.
            let _on_raft_runtime = rt.enter();
            // Ok: plain HTTP, Err: TLS-terminated.
            let listener = match &tls {
                Some(t) => Err(tls::TlsListener::new(listener, t.acceptor())
                    .with_context(|| format!("TLS on the cluster address {listen}"))?),
                None => Ok(listener),
            };
            tokio::spawn(async move {
                let stop = async move { token.cancelled().await };
                let res = match listener {
                    Ok(plain) => axum::serve(plain, app).with_graceful_shutdown(stop).await,
                    Err(tls) => axum::serve(tls, app).with_graceful_shutdown(stop).await,
                };
                if let Err(e) = res {
                    tracing::error!(error = %e, "cluster listener failed");
                }
                let _ = raft.shutdown().await;
            });
        }

        let initialized = raft.is_initialized().await.context("reading Raft state")?;
        if initialized {
            tracing::info!(
                node_id = id,
                "rejoining the cluster with the membership in the data dir"
            );
            cluster.update_address_if_moved().await;
        } else if c.join.is_empty() {
            let mut nodes = BTreeMap::new();
            nodes.insert(id, member.clone());
            raft.initialize(nodes)
                .await
                .context("bootstrapping a new cluster")?;
            tracing::info!(node_id = id, cluster = %listen, "bootstrapped a new cluster (no --join given)");
        } else {
            cluster.join(&c.join).await?;
        }
        {
            let _on_raft_runtime = rt.enter();
            prevote::spawn(cluster.clone(), shutdown.clone());
        }
        Ok(cluster)
    }

    /// Ask the seeds, in turn, to add this node; retried until `cluster.join_timeout_ms`
    /// ([`JOIN_DEADLINE`] by default). Each failure is explained ([`join_failure`]); the retry
    /// warning is logged once per seed and reason, then at most once per throttle period.
    async fn join(&self, seeds: &[String]) -> anyhow::Result<()> {
        let deadline = Duration::from_millis(self.cfg.join_timeout_ms);
        let until = Instant::now() + deadline;
        let req = JoinRequest {
            id: self.id,
            member: self.member.clone(),
        };
        let mut last = String::new();
        loop {
            for seed in seeds {
                let res = self
                    .client
                    .post::<_, MembershipReply>(
                        seed,
                        "/cluster/join",
                        &req,
                        Duration::from_secs(30),
                    )
                    .await;
                let why = match res {
                    Ok(MembershipReply::Done { voter }) => {
                        tracing::info!(node_id = self.id, seed = %seed, voter, "joined the cluster");
                        return Ok(());
                    }
                    Ok(MembershipReply::NotLeader(_)) => "no leader yet".to_string(),
                    Ok(MembershipReply::Failed(e)) => e,
                    Err(e) => match join_failure(&e.to_string()) {
                        JoinFailure::WrongSecret => anyhow::bail!(
                            "{seed} refused this node: wrong cluster secret (set {} to the value \
                             the other nodes use)",
                            self.cfg.secret_env
                        ),
                        JoinFailure::HttpPort => anyhow::bail!(
                            "{seed} answered like a node's HTTP API: this looks like an HTTP \
                             port, use the cluster port (the address that node was started \
                             with as --cluster)"
                        ),
                        JoinFailure::Retry(why) => why,
                    },
                };
                if let Some(suppressed) = crate::throttled!(&format!("join {seed} {why}")) {
                    tracing::warn!(seed = %seed, reason = %why, suppressed, "cannot join the cluster yet; retrying");
                }
                last = format!("{seed}: {why}");
            }
            if Instant::now() > until {
                anyhow::bail!(
                    "could not join the cluster through {} within {} s; gave up. Last failure: {last}",
                    seeds.join(", "),
                    deadline.as_secs_f64().ceil() as u64
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// A restarted node whose addresses changed tells the leader (best effort).
    async fn update_address_if_moved(&self) {
        let m = self.raft.metrics().borrow().clone();
        if m.membership_config.membership().get_node(&self.id) == Some(&self.member) {
            return;
        }
        let me = self.member.clone();
        let id = self.id;
        let client = self.client.clone();
        let raft = self.raft.clone();
        tokio::spawn(async move {
            for _ in 0..60 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Some(leader) = leader_member(&raft) else {
                    continue;
                };
                let req = JoinRequest {
                    id,
                    member: me.clone(),
                };
                if let Ok(MembershipReply::Done { .. }) = client
                    .post::<_, MembershipReply>(
                        &leader.1.cluster_addr,
                        "/cluster/join",
                        &req,
                        Duration::from_secs(10),
                    )
                    .await
                {
                    return;
                }
            }
        });
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    pub fn leader(&self) -> Option<(NodeId, Member)> {
        leader_member(&self.raft)
    }

    pub fn voters(&self) -> BTreeSet<NodeId> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    /// On the leader: add a node as learner (caught up), then as voter while there are fewer
    /// than `cluster.max_voters`. Elsewhere: forwarded to the leader.
    pub async fn admit_member(&self, req: JoinRequest) -> MembershipReply {
        if !self.is_leader() {
            return match self.leader() {
                Some((_, m)) if m.cluster_addr != self.member.cluster_addr => self
                    .client
                    .post(
                        &m.cluster_addr,
                        "/cluster/join",
                        &req,
                        Duration::from_secs(30),
                    )
                    .await
                    .unwrap_or_else(|e| MembershipReply::Failed(e.to_string())),
                other => MembershipReply::NotLeader(other),
            };
        }
        let known = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&req.id)
            .cloned();
        if known.as_ref() != Some(&req.member) {
            let change = if known.is_some() {
                let mut m = BTreeMap::new();
                m.insert(req.id, req.member.clone());
                self.raft
                    .change_membership(ChangeMembers::SetNodes(m), true)
                    .await
            } else {
                self.raft
                    .add_learner(req.id, req.member.clone(), true)
                    .await
            };
            if let Err(e) = change {
                return MembershipReply::Failed(format!("adding node {}: {e}", req.id));
            }
        }
        let voters = self.voters();
        if voters.contains(&req.id) {
            return MembershipReply::Done { voter: true };
        }
        if voters.len() >= self.cfg.max_voters {
            tracing::info!(
                node_id = req.id,
                "node joined as a learner ({} voters already)",
                voters.len()
            );
            return MembershipReply::Done { voter: false };
        }
        let mut add = BTreeSet::new();
        add.insert(req.id);
        match self
            .raft
            .change_membership(ChangeMembers::AddVoterIds(add), false)
            .await
        {
            Ok(_) => {
                tracing::info!(node_id = req.id, "node joined as a voter");
                MembershipReply::Done { voter: true }
            }
            Err(e) => MembershipReply::Failed(format!("promoting node {}: {e}", req.id)),
        }
    }

    /// On the leader: remove a node from the membership and move its tasks. Elsewhere:
    /// forwarded to the leader.
    pub async fn remove_member(&self, id: NodeId) -> MembershipReply {
        if !self.is_leader() {
            return match self.leader() {
                Some((_, m)) if m.cluster_addr != self.member.cluster_addr => self
                    .client
                    .post(
                        &m.cluster_addr,
                        "/cluster/leave",
                        &id,
                        Duration::from_secs(30),
                    )
                    .await
                    .unwrap_or_else(|e| MembershipReply::Failed(e.to_string())),
                other => MembershipReply::NotLeader(other),
            };
        }
        let mut set = BTreeSet::new();
        set.insert(id);
        if self.voters().contains(&id) {
            if self.voters().len() <= 1 {
                return MembershipReply::Failed("the last voter cannot leave".into());
            }
            if let Err(e) = self
                .raft
                .change_membership(ChangeMembers::RemoveVoters(set.clone()), false)
                .await
            {
                return MembershipReply::Failed(format!("removing voter {id}: {e}"));
            }
        }
        if let Err(e) = self
            .raft
            .change_membership(ChangeMembers::RemoveNodes(set), false)
            .await
        {
            return MembershipReply::Failed(format!("removing node {id}: {e}"));
        }
        if let Err(e) = self
            .proposer
            .propose(openclaw_cluster::Command::Leave { node: id })
            .await
        {
            return MembershipReply::Failed(format!("moving node {id}'s tasks: {e}"));
        }
        tracing::info!(node_id = id, "node left the cluster");
        MembershipReply::Done { voter: false }
    }
}

/// How long start-up retries binding the cluster address (a restart right after a crash may
/// find it briefly taken).
pub const BIND_RETRY: Duration = Duration::from_secs(5);

/// What a failed join request means (pure, from the client error's text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinFailure {
    /// The seed is a cluster port that refused our secret: retrying cannot help.
    WrongSecret,
    /// The seed answered like the HTTP API (its JSON error shape): the wrong port.
    HttpPort,
    /// Worth retrying (the seed is starting, or has no leader yet); the cause as operators say it.
    Retry(String),
}

/// Classify a join error (`PeerError`'s text: the URL, then the cause or `HTTP <status>: body`).
pub fn join_failure(error: &str) -> JoinFailure {
    let lower = error.to_ascii_lowercase();
    if lower.contains("http 401") && lower.contains("wrong cluster secret") {
        return JoinFailure::WrongSecret;
    }
    if lower.contains("http ") && lower.contains("{\"error\"") {
        return JoinFailure::HttpPort;
    }
    let cause = if lower.contains("connection refused") {
        "connection refused (nothing listens there: is the member running, and is this its \
         --cluster address?)"
            .to_string()
    } else if lower.contains("timed out") || lower.contains("timeout") {
        "timed out (a firewall, or a wrong address?)".to_string()
    } else if lower.contains("dns") || lower.contains("failed to lookup") {
        "the host name does not resolve".to_string()
    } else if lower.contains("http 404") {
        "HTTP 404: not an openclaw cluster port".to_string()
    } else {
        error.to_string()
    };
    JoinFailure::Retry(cause)
}

async fn bind_retrying(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let until = Instant::now() + BIND_RETRY;
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < until => {
                tracing::warn!(%addr, "cluster address in use; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The current leader and its addresses, as this node's Raft sees it.
pub fn leader_member(raft: &Raft) -> Option<(NodeId, Member)> {
    let m = raft.metrics().borrow().clone();
    m.current_leader.and_then(|id| {
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| (id, n.clone()))
    })
}

/// A request one node's watcher sends another over the actor mesh.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum MeshRequest {
    /// Stop the named task if it runs on the receiving node (a `DELETE` that reached another
    /// node).
    Cancel { id: String },
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum MeshReply {
    Cancelled,
    NotRunningHere,
    Failed(String),
}

/// Start the actor mesh (ractor_cluster, cookie = the cluster secret) and its request handler.
pub async fn start_mesh(
    running: &Arc<crate::tasks::running::RunningSet>,
    c: Arc<Cluster>,
) -> anyhow::Result<()> {
    let mesh = openclaw_cluster::mesh::Mesh::start(openclaw_cluster::mesh::MeshConfig {
        node_id: c.id,
        listen: c.mesh_addr,
        secret: c.secret.expose().to_string(),
        heartbeat: Duration::from_millis(c.cfg.heartbeat_ms),
        advertise_host: c
            .member
            .mesh_addr
            .rsplit_once(':')
            .map(|(h, _)| h.to_string()),
        tls: c.tls.as_ref().map(|t| openclaw_cluster::mesh::MeshTls {
            acceptor: t.acceptor(),
            connector: t.connector(),
        }),
    })
    .await
    .with_context(|| format!("starting the actor mesh on {}", c.mesh_addr))?;
    let weak = Arc::downgrade(running);
    mesh.set_handler(move |from, body| {
        let running = weak.upgrade();
        async move {
            let reply = match (running, openclaw_proto::codec::decode::<MeshRequest>(&body)) {
                (None, _) => MeshReply::Failed("node shutting down".into()),
                (_, Err(e)) => MeshReply::Failed(format!("undecodable request: {e}")),
                (Some(running), Ok(MeshRequest::Cancel { id })) => {
                    tracing::info!(task = %id, from, "cancel requested by another node");
                    match running.get(&id) {
                        Some(slot) => {
                            slot.request_stop(crate::tasks::running::StopReason::Cancelled);
                            MeshReply::Cancelled
                        }
                        None => MeshReply::NotRunningHere,
                    }
                }
            };
            openclaw_proto::codec::encode(&reply).unwrap_or_default()
        }
    });
    if let Ok(mut g) = c.mesh.lock() {
        *g = Some(Arc::new(mesh));
    }
    Ok(())
}

impl Cluster {
    /// Keep the mesh's wanted peers (host names resolved) and reported load current.
    pub async fn refresh_mesh(&self, load: openclaw_cluster::mesh::LoadReport) {
        let wanted: Vec<(NodeId, String)> = {
            let m = self.raft.metrics().borrow().clone();
            m.membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != self.id)
                .map(|(id, n)| (*id, n.mesh_addr.clone()))
                .collect()
        };
        let mut peers: Vec<(NodeId, SocketAddr)> = Vec::new();
        // The names the peers' certificates are checked against (TLS server name).
        let hosts: BTreeMap<NodeId, String> = wanted
            .iter()
            .filter_map(|(id, a)| a.rsplit_once(':').map(|(h, _)| (*id, h.to_string())))
            .collect();
        for (id, addr) in wanted {
            match addr.parse::<SocketAddr>() {
                Ok(a) => peers.push((id, a)),
                Err(_) => {
                    if let Ok(Ok(mut it)) = tokio::time::timeout(
                        Duration::from_secs(1),
                        tokio::net::lookup_host(addr.as_str()),
                    )
                    .await
                    {
                        if let Some(a) = it.next() {
                            peers.push((id, a));
                        }
                    }
                }
            }
        }
        if let Ok(g) = self.mesh.lock() {
            if let Some(mesh) = g.as_ref() {
                mesh.set_peers(peers);
                mesh.set_peer_hosts(hosts);
                mesh.set_load(load);
            }
        }
    }

    /// Ask `node` over the mesh to stop a task it runs.
    pub async fn cancel_remote(&self, node: NodeId, id: &str) -> Result<MeshReply, String> {
        let body = openclaw_proto::codec::encode(&MeshRequest::Cancel { id: id.to_string() })
            .map_err(|e| e.to_string())?;
        let mesh = self
            .mesh
            .lock()
            .ok()
            .and_then(|g| g.as_ref().cloned())
            .ok_or_else(|| "the actor mesh is not running".to_string())?;
        let out = mesh
            .call(node, body, Duration::from_millis(self.cfg.rpc_timeout_ms))
            .await
            .map_err(|e| e.to_string())?;
        openclaw_proto::codec::decode(&out).map_err(|e| e.to_string())
    }
}

/// Tasks owned by other nodes are reached over the mesh.
#[async_trait::async_trait]
impl RemoteTasks for Cluster {
    async fn cancel_elsewhere(&self, rec: &TaskRecord) -> RemoteCancel {
        let Some(owner) = openclaw_cluster::owner_id(rec).filter(|o| *o != self.id) else {
            return RemoteCancel::NotRemote;
        };
        match self.cancel_remote(owner, &rec.id).await {
            Ok(MeshReply::Cancelled) => RemoteCancel::Stopped,
            Ok(_) => RemoteCancel::NotRunning,
            Err(why) => RemoteCancel::Unreachable {
                node: owner.to_string(),
                why,
            },
        }
    }
}

#[cfg(test)]
mod join_tests {
    use super::*;

    #[test]
    fn join_failures_are_explained() {
        let url = "http://127.0.0.2:3000/cluster/join";
        // (error text, expected)
        let cases = [
            (
                format!("{url}: HTTP 401 Unauthorized: wrong cluster secret"),
                JoinFailure::WrongSecret,
            ),
            (
                format!("{url}: HTTP 404 Not Found: {{\"error\":{{\"code\":\"not_found\",\"message\":\"no route\"}}}}"),
                JoinFailure::HttpPort,
            ),
            (
                format!("{url}: HTTP 401 Unauthorized: {{\"error\":{{\"code\":\"unauthorized\",\"message\":\"x\"}}}}"),
                JoinFailure::HttpPort,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(join_failure(&text), want, "{text}");
        }
        let refused = format!(
            "{url} unreachable: error sending request: client error (Connect): tcp connect error: Connection refused (os error 111)"
        );
        match join_failure(&refused) {
            JoinFailure::Retry(why) => assert!(why.starts_with("connection refused"), "{why}"),
            other => panic!("{other:?}"),
        }
        match join_failure(&format!("{url}: HTTP 404 Not Found: nothing here")) {
            JoinFailure::Retry(why) => {
                assert!(why.contains("not an openclaw cluster port"), "{why}")
            }
            other => panic!("{other:?}"),
        }
    }
}

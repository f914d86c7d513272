//! Raft RPCs between nodes: postcard bodies over HTTP on the cluster address.
//!
//! With `cluster.tls` the client speaks HTTPS: it trusts only the cluster CA and presents this
//! node's certificate ([`super::tls`]); without it, plain HTTP (loopback or `cluster.insecure`).
//! Every request carries the cluster secret in a header (checked in constant time by
//! [`super::server`]) and has a deadline (openraft's `hard_ttl`, capped by
//! `cluster.rpc_timeout_ms`). The client binds its sockets to this node's cluster IP, so firewall
//! rules between node addresses really partition Raft traffic. Connections are pooled by
//! reqwest and re-established by themselves when a peer comes back.

use std::net::IpAddr;
use std::time::Duration;

use openclaw_cluster::{Member, NodeId, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::Secret;

/// Header carrying the cluster secret.
pub const SECRET_HEADER: &str = "x-openclaw-cluster-secret";

/// The HTTP client for cluster traffic (Raft RPCs, forwarded writes, joins).
#[derive(Clone)]
pub struct PeerClient {
    http: reqwest::Client,
    /// `https` with `cluster.tls`, else `http`.
    scheme: &'static str,
    secret: Secret,
    pub rpc_timeout: Duration,
    /// Which peers' Raft RPCs fail now, for one line when a peer goes away and one when it
    /// comes back.
    pub health: std::sync::Arc<PeerHealth>,
}

/// Raft peers whose RPCs are failing: since when, and how many failed.
#[derive(Debug, Default)]
pub struct PeerHealth {
    down: std::sync::Mutex<std::collections::BTreeMap<NodeId, Down>>,
}

#[derive(Debug, Clone, Copy)]
struct Down {
    since: std::time::Instant,
    failures: u64,
    /// When the last "still unreachable" line was logged.
    logged: std::time::Instant,
}

impl PeerHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<NodeId, Down>> {
        self.down.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A Raft RPC to `peer` failed: one warning when it starts failing, then one summary per
    /// [`crate::activity::THROTTLE_EVERY`] while it keeps failing.
    pub fn failed(&self, peer: NodeId, addr: &str, cause: &str) {
        let now = std::time::Instant::now();
        let mut down = self.lock();
        match down.get_mut(&peer) {
            None => {
                down.insert(
                    peer,
                    Down {
                        since: now,
                        failures: 1,
                        logged: now,
                    },
                );
                drop(down);
                tracing::warn!(peer, %addr, cause, "peer unreachable: Raft RPCs to it fail");
            }
            Some(d) => {
                d.failures += 1;
                if now.duration_since(d.logged) >= crate::activity::THROTTLE_EVERY {
                    d.logged = now;
                    let (failures, secs) = (d.failures, now.duration_since(d.since).as_secs());
                    drop(down);
                    tracing::warn!(peer, %addr, failures, down_s = secs, cause, "peer still unreachable");
                }
            }
        }
    }

    /// The peers whose last Raft RPC failed (and none succeeded since).
    pub fn failing(&self) -> std::collections::BTreeSet<NodeId> {
        self.lock().keys().copied().collect()
    }

    /// A Raft RPC to `peer` succeeded: if it was failing, say it is back.
    pub fn ok(&self, peer: NodeId, addr: &str) {
        let was = {
            let mut down = self.lock();
            if down.is_empty() {
                return;
            }
            down.remove(&peer)
        };
        if let Some(d) = was {
            tracing::info!(
                peer,
                %addr,
                failed_rpcs = d.failures,
                down_ms = d.since.elapsed().as_millis() as u64,
                "peer reachable again"
            );
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{0} unreachable: {1}")]
    Unreachable(String, String),
    #[error("{0}: {1}")]
    Failed(String, String),
}

impl PeerClient {
    pub fn new(
        bind: Option<IpAddr>,
        secret: Secret,
        rpc_timeout: Duration,
        tls: Option<&super::tls::ClusterTls>,
    ) -> anyhow::Result<PeerClient> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(rpc_timeout.min(Duration::from_secs(1)))
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true);
        if let Some(ip) = bind.filter(|ip| !ip.is_unspecified()) {
            b = b.local_address(ip);
        }
        if let Some(t) = tls {
            b = b.tls_backend_preconfigured((*t.client).clone());
        }
        Ok(PeerClient {
            http: b.build()?,
            scheme: if tls.is_some() { "https" } else { "http" },
            secret,
            rpc_timeout,
            health: Default::default(),
        })
    }

    /// POST a postcard body to `http(s)://{addr}{path}` and decode the postcard reply (within
    /// `timeout`, at most `cluster.rpc_timeout_ms`).
    pub async fn post<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        self.post_within(addr, path, body, timeout.min(self.rpc_timeout))
            .await
    }

    /// [`PeerClient::post`] with `timeout` as given: a snapshot chunk, whose last one installs
    /// the snapshot on the receiver before it answers.
    pub async fn post_within<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        let url = format!("{}://{addr}{path}", self.scheme);
        let bytes = openclaw_proto::codec::encode(body)
            .map_err(|e| PeerError::Failed(url.clone(), format!("encode: {e}")))?;
        let resp = self
            .http
            .post(&url)
            .header(SECRET_HEADER, self.secret.expose())
            .header("content-type", "application/octet-stream")
            .timeout(timeout.max(Duration::from_millis(50)))
            .body(bytes)
            .send()
            .await
            .map_err(|e| {
                let e = e.without_url();
                if e.is_connect() {
                    PeerError::Unreachable(url.clone(), error_chain(&e))
                } else {
                    PeerError::Failed(url.clone(), error_chain(&e))
                }
            })?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| PeerError::Failed(url.clone(), e.without_url().to_string()))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(PeerError::Failed(
                url,
                format!(
                    "HTTP {status}: {}",
                    text.chars().take(200).collect::<String>()
                ),
            ));
        }
        openclaw_proto::codec::decode(&body)
            .map_err(|e| PeerError::Failed(url, format!("decode: {e}")))
    }
}

/// An error with its causes (`error sending request: … : Connection refused (os error 111)`):
/// reqwest's own text stops at the first line, which names no cause.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// openraft's network factory: one [`Conn`] per target.
#[derive(Clone)]
pub struct Network {
    pub client: PeerClient,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Conn;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Conn {
        Conn {
            target,
            addr: node.cluster_addr.clone(),
            client: self.client.clone(),
        }
    }
}

pub struct Conn {
    target: NodeId,
    addr: String,
    client: PeerClient,
}

impl Conn {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Member, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let sent = if path == SNAPSHOT_PATH {
            self.client
                .post_within(&self.addr, path, req, option.hard_ttl())
                .await
        } else {
            self.client
                .post(&self.addr, path, req, option.hard_ttl())
                .await
        };
        let res: Result<Resp, RaftError<NodeId, E>> = match sent {
            Ok(r) => {
                self.client.health.ok(self.target, &self.addr);
                r
            }
            Err(e) => {
                let cause = match &e {
                    PeerError::Unreachable(_, c) | PeerError::Failed(_, c) => c.clone(),
                };
                self.client.health.failed(self.target, &self.addr, &cause);
                return Err(match e {
                    PeerError::Unreachable(..) => RPCError::Unreachable(Unreachable::new(&e)),
                    PeerError::Failed(..) => RPCError::Network(NetworkError::new(&e)),
                });
            }
        };
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// The install-snapshot route (its chunks may take up to openraft's `install_snapshot_timeout`).
const SNAPSHOT_PATH: &str = "/raft/snapshot";

impl RaftNetwork<TypeConfig> for Conn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        self.call("/raft/append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(SNAPSHOT_PATH, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        self.call("/raft/vote", &rpc, &option).await
    }
}

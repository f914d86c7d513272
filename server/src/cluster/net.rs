//! Raft RPCs between nodes: postcard bodies over HTTP on the cluster address.
//!
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
    secret: Secret,
    pub rpc_timeout: Duration,
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
    ) -> anyhow::Result<PeerClient> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(rpc_timeout.min(Duration::from_secs(1)))
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true);
        if let Some(ip) = bind.filter(|ip| !ip.is_unspecified()) {
            b = b.local_address(ip);
        }
        Ok(PeerClient {
            http: b.build()?,
            secret,
            rpc_timeout,
        })
    }

    /// POST a postcard body to `http://{addr}{path}` and decode the postcard reply (within
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
        let url = format!("http://{addr}{path}");
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
                if e.is_connect() {
                    PeerError::Unreachable(url.clone(), e.without_url().to_string())
                } else {
                    PeerError::Failed(url.clone(), e.without_url().to_string())
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
        let res: Result<Resp, RaftError<NodeId, E>> = sent.map_err(|e| match e {
            PeerError::Unreachable(..) => RPCError::Unreachable(Unreachable::new(&e)),
            PeerError::Failed(..) => RPCError::Network(NetworkError::new(&e)),
        })?;
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

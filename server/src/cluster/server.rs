//! The cluster listener: Raft RPCs, forwarded writes, join and leave, replicated request-cache
//! entries (`/cluster/cache`), on the cluster address.
//!
//! Served over mutual TLS when `cluster.tls` is set ([`super::tls::TlsListener`]), and then still
//! every route needs the cluster secret (header [`SECRET_HEADER`], compared in constant time);
//! a wrong or missing secret gets 401 and one warning line naming the peer — never the secret.
//! Bodies are postcard (`openclaw_proto::codec`), bounded by [`CLUSTER_BODY_MAX`].

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use openclaw_cluster::{Command, Member, NodeId};
use openraft::raft::AppendEntriesResponse;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::net::SECRET_HEADER;
use super::proposer::{apply_locally, in_reach_of_majority, WriteReply};
use super::Cluster;

/// Largest cluster request body (snapshot chunks, batches of admitted tasks).
pub const CLUSTER_BODY_MAX: usize = 64 * 1024 * 1024;

/// A node asking to join.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    pub id: NodeId,
    pub member: Member,
}

/// The answer to a join or leave.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MembershipReply {
    Done { voter: bool },
    NotLeader(Option<(NodeId, Member)>),
    Failed(String),
}

pub fn router(cluster: Arc<Cluster>) -> Router {
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route(super::prevote::PREVOTE_PATH, post(prevote))
        .route("/raft/snapshot", post(snapshot))
        .route("/cluster/write", post(write))
        .route("/cluster/join", post(join))
        .route("/cluster/leave", post(leave))
        .route(super::cache::CACHE_PATH, post(cache))
        .route("/cluster/ping", get(|| async { "pong" }))
        .layer(DefaultBodyLimit::max(CLUSTER_BODY_MAX))
        // Refusals (401, 400, 413, unknown routes) answer `{"error":{"code","message"}}` too.
        .layer(axum::middleware::map_response(
            crate::api::error::json_errors,
        ))
        .with_state(cluster)
}

fn authorize(c: &Cluster, headers: &HeaderMap, peer: SocketAddr) -> Result<(), Box<Response>> {
    let given = headers
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    // Constant time: timing does not reveal how much of a guess was right.
    if crate::util::same_secret(given, c.secret.expose().as_bytes()) {
        return Ok(());
    }
    tracing::warn!(
        %peer,
        "refused cluster request from {peer}: wrong or missing cluster secret (check {} on that node)",
        c.cfg.secret_env
    );
    Err(Box::new(
        (StatusCode::UNAUTHORIZED, "wrong cluster secret").into_response(),
    ))
}

fn decode<T: DeserializeOwned>(body: &Bytes) -> Result<T, Box<Response>> {
    openclaw_proto::codec::decode(body).map_err(|e| {
        Box::new((StatusCode::BAD_REQUEST, format!("undecodable body: {e}")).into_response())
    })
}

fn encode<T: Serialize>(v: &T) -> Response {
    match openclaw_proto::codec::encode(v) {
        Ok(b) => (StatusCode::OK, b).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// A cluster request: the secret checked, the postcard body decoded. Rejected with 401 (wrong
/// secret), 400 (undecodable) or the body limit's 413 before any handler runs.
struct Peer<T>(T);

impl<T: DeserializeOwned> axum::extract::FromRequest<Arc<Cluster>> for Peer<T> {
    type Rejection = Response;

    async fn from_request(
        req: axum::extract::Request,
        c: &Arc<Cluster>,
    ) -> Result<Self, Self::Rejection> {
        let peer = req
            .extensions()
            .get::<ConnectInfo<super::tls::PeerAddr>>()
            .map(|ci| ci.0 .0)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        authorize(c, req.headers(), peer).map_err(|r| *r)?;
        let body = Bytes::from_request(req, c)
            .await
            .map_err(IntoResponse::into_response)?;
        decode(&body).map(Peer).map_err(|r| *r)
    }
}

type AppendRequest = openraft::raft::AppendEntriesRequest<openclaw_cluster::TypeConfig>;
type VoteRequest = openraft::raft::VoteRequest<NodeId>;
type SnapshotRequest = openraft::raft::InstallSnapshotRequest<openclaw_cluster::TypeConfig>;

async fn append(State(c): State<Arc<Cluster>>, Peer(req): Peer<AppendRequest>) -> Response {
    let res = c.raft.append_entries(req).await;
    if matches!(
        res,
        Ok(AppendEntriesResponse::Success | AppendEntriesResponse::PartialSuccess(_))
            | Ok(AppendEntriesResponse::Conflict)
    ) {
        // A leader at our term or newer reached us (a conflict is still a live leader).
        let gap = c.contact.touch();
        let lease = super::prevote::lease_ms(c.cfg.election_timeout_min_ms);
        if super::prevote::heartbeat_gap_notable(gap, c.cfg.raft_heartbeat_ms, lease) {
            if let Some(suppressed) = crate::throttled!("raft heartbeat gap") {
                tracing::info!(
                    gap_ms = gap,
                    raft_heartbeat_ms = c.cfg.raft_heartbeat_ms,
                    lease_ms = lease,
                    suppressed,
                    "late Raft heartbeat: no leader contact for {gap} ms"
                );
            }
        }
    }
    encode(&res)
}

async fn prevote(
    State(c): State<Arc<Cluster>>,
    Peer(req): Peer<super::prevote::PreVoteRequest>,
) -> Response {
    encode(&c.prevote_answer(&req))
}

async fn vote(State(c): State<Arc<Cluster>>, Peer(req): Peer<VoteRequest>) -> Response {
    encode(&c.raft.vote(req).await)
}

async fn snapshot(State(c): State<Arc<Cluster>>, Peer(req): Peer<SnapshotRequest>) -> Response {
    let res = c.raft.install_snapshot(req).await;
    if res.is_ok() {
        c.contact.touch();
    }
    encode(&res)
}

async fn write(State(c): State<Arc<Cluster>>, Peer(cmds): Peer<Vec<Command>>) -> Response {
    // A leader cut off from most voters cannot commit now: "not the leader" (nothing was
    // written, the forwarder looks again) rather than an entry whose outcome stays unknown.
    if c.raft.metrics().borrow().current_leader == Some(c.id)
        && !in_reach_of_majority(&c.raft, c.id, &c.client)
    {
        return encode(&WriteReply::NotLeader(None));
    }
    let within = std::time::Duration::from_millis(c.cfg.rpc_timeout_ms * 2);
    let reply: WriteReply = apply_locally(&c.raft, cmds, within).await;
    encode(&reply)
}

async fn join(State(c): State<Arc<Cluster>>, Peer(req): Peer<JoinRequest>) -> Response {
    encode(&c.admit_member(req).await)
}

async fn leave(State(c): State<Arc<Cluster>>, Peer(id): Peer<NodeId>) -> Response {
    encode(&c.remove_member(id).await)
}

/// A peer's replicated cache entries; 503 while this node's cache is not running (the sender
/// counts the batch `failed`; a cache, so nothing is retried).
async fn cache(
    State(c): State<Arc<Cluster>>,
    Peer(batch): Peer<Vec<openclaw_proto::cache::CacheReplica>>,
) -> Response {
    match super::cache::receive(&c, batch).await {
        Some(reply) => encode(&reply),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the request cache is not running on this node",
        )
            .into_response(),
    }
}

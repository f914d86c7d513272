//! The node mesh: ractor_cluster sessions between the cluster's nodes, authenticated by the
//! cluster secret (ractor_cluster's cookie), with an application heartbeat, a reconnect loop and a
//! request/reply channel.
//!
//! ```text
//! Mesh (handle; owns everything below, `stop()` ends it)
//! ├── NodeServer (ractor_cluster) ── Listener, NodeSession per peer ── RemoteActor proxies
//! │        └─ session events ──▶ registry::SessionEvents (bookkeeping + refusal log lines)
//! ├── Watcher actor (pg group "openclaw.watchers"): records heartbeats, answers requests
//! └── driver task: every `heartbeat` casts a Heartbeat to each peer's watcher proxy; every
//!     second dials wanted peers that are not connected; drops sessions that went silent
//! ```
//!
//! What ractor_cluster does not do, and this module does: reconnect (it never redials), notice a
//! silent peer (it has no pong timeout: we stop a session whose peer sent no heartbeat for
//! [`silent_after`]), say *why* a handshake failed (a wrong cookie just closes the session: we
//! classify sessions that close before authenticating, see [`registry::ClosedUnauthenticated`]).
//!
//! Transport: every outgoing connection is bound to this node's own address (the listen ip) so
//! a firewall partition between node addresses cuts the mesh too. With [`MeshTls`] both sides
//! present a certificate of the cluster CA: incoming connections are accepted by our own
//! listener (each handshake in its own task under [`HANDSHAKE_TIMEOUT`], so a peer that stalls
//! cannot hold the accept loop — ractor_cluster's listener would handshake inline) and handed to
//! the node server as `NetworkStream::TlsServer`; dials hand it `NetworkStream::TlsClient`. The
//! cookie (the secret) is still required on top.
//!
//! Invariants: the mesh knows nothing about Raft or HTTP — the caller feeds it the wanted peers
//! ([`Mesh::set_peers`]) and a request handler ([`Mesh::set_handler`]); the secret is never
//! logged; several meshes can live in one process (tests): a remote watcher is attributed to a
//! peer through the session that owns its proxy, never through the process-global pg group
//! (see [`remote_watchers`]).

mod registry;
mod watcher;
mod wire;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use openclaw_proto::codec::{decode, encode, CodecError};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use ractor_cluster::{IncomingEncryptionMode, NetworkStream, NodeServer, NodeServerMessage};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

pub use registry::Refusal;
pub use watcher::{WatcherMsg, WATCHERS_GROUP};
pub use wire::LoadReport;

use registry::{wall_ms, SessionEvents, Shared};
use watcher::{Watcher, WatcherArgs};
use wire::{Heartbeat, Reply, Request, RequestKind};

use crate::types::NodeId;

/// How often the driver dials wanted peers that are not connected.
pub const RECONNECT_EVERY: Duration = Duration::from_secs(1);
/// Deadline of one TCP connect to a peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// After a connect, the handshake has this long before the peer is dialed again.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request or reply body [`Mesh::call`] accepts.
pub const BODY_MAX: usize = 8 * 1024 * 1024;
/// ractor_cluster's inbound frame limit (a body plus its envelope must fit).
pub const FRAME_MAX: u64 = 2 * BODY_MAX as u64;
/// Outgoing calls in flight at once from this node; more fail with [`MeshError::Busy`].
pub const OUTBOUND_INFLIGHT_MAX: usize = 1024;
/// Deadline for stopping each actor in [`Mesh::stop`].
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Bounds on the configured heartbeat interval.
const HEARTBEAT_MIN: Duration = Duration::from_millis(10);
const HEARTBEAT_MAX: Duration = Duration::from_secs(60);
const _: () = assert!(FRAME_MAX > BODY_MAX as u64);
/// Deadline of one TLS handshake on an incoming mesh connection.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Incoming TLS handshakes in progress at once; further connections are closed at once.
pub const HANDSHAKES_MAX: usize = 64;

/// A session whose peer sent no heartbeat for this long is closed (and redialed): five
/// heartbeats, and never under five seconds so a busy 2-core machine is not mistaken for a dead
/// peer.
pub fn silent_after(heartbeat: Duration) -> Duration {
    (heartbeat * 5).max(Duration::from_secs(5))
}

/// How to start a [`Mesh`].
#[derive(Clone)]
pub struct MeshConfig {
    pub node_id: NodeId,
    /// The mesh port (all interfaces of this ip).
    pub listen: SocketAddr,
    /// The cluster secret, used as ractor_cluster's cookie. Never logged (`Debug` prints `***`).
    pub secret: String,
    /// Interval between heartbeats to each peer.
    pub heartbeat: Duration,
    /// The host other nodes know this one by (default: the listen ip). Needed when listening
    /// on 0.0.0.0: ractor_cluster takes a peer advertising our own address for ourselves.
    pub advertise_host: Option<String>,
    /// Mutual TLS on every mesh connection; `None`: plain TCP.
    pub tls: Option<MeshTls>,
}

/// The TLS side of the mesh: the acceptor requires a client certificate of the cluster CA, the
/// connector trusts only that CA and presents this node's certificate.
#[derive(Clone)]
pub struct MeshTls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub connector: tokio_rustls::TlsConnector,
}

impl fmt::Debug for MeshConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshConfig")
            .field("node_id", &self.node_id)
            .field("listen", &self.listen)
            .field("secret", &"***")
            .field("heartbeat", &self.heartbeat)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl MeshConfig {
    /// Check the configuration before anything binds.
    pub fn validate(self) -> Result<Self, MeshError> {
        if self.secret.is_empty() {
            return Err(MeshError::Config(
                "mesh secret is empty: set the cluster secret".into(),
            ));
        }
        if self.listen.port() == 0 {
            return Err(MeshError::Config(
                "mesh listen port is 0: peers must know the port, choose one".into(),
            ));
        }
        if !(HEARTBEAT_MIN..=HEARTBEAT_MAX).contains(&self.heartbeat) {
            return Err(MeshError::Config(format!(
                "mesh heartbeat {:?} is outside {HEARTBEAT_MIN:?}..={HEARTBEAT_MAX:?}",
                self.heartbeat
            )));
        }
        Ok(self)
    }
}

/// What went wrong, phrased as what the caller does next.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("invalid mesh config: {0}")]
    Config(String),
    #[error("mesh failed to start: {0}")]
    Start(String),
    /// Not connected to that node now; the reconnect loop is working on it. Retry later.
    #[error("node {0} is not connected")]
    NotConnected(NodeId),
    /// No answer within the deadline (the request may or may not have run).
    #[error("no reply within the deadline")]
    Timeout,
    /// The session dropped while waiting (the request may or may not have run).
    #[error("connection to node {0} dropped during the call")]
    Disconnected(NodeId),
    /// This node or the peer has too many requests in flight. Retry with back-off.
    #[error("too many requests in flight ({0})")]
    Busy(&'static str),
    /// The peer has not installed a request handler yet.
    #[error("node {0} has no request handler")]
    NoHandler(NodeId),
    #[error("node {0}'s handler exceeded its time limit")]
    HandlerTimeout(NodeId),
    #[error("body of {0} bytes exceeds the mesh limit of {BODY_MAX}")]
    TooLarge(usize),
    #[error("mesh codec: {0}")]
    Codec(#[from] CodecError),
    /// The peer could not decode our request (version skew).
    #[error("node {0} rejected the request as undecodable")]
    BadRequest(NodeId),
    #[error("the mesh is stopped")]
    Stopped,
}

/// One peer as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    pub id: NodeId,
    /// The wanted mesh address; `None` for a connected node that is not (or no longer) wanted.
    pub addr: Option<SocketAddr>,
    pub connected: bool,
    /// Time since the last heartbeat from it, if one was ever received.
    pub last_contact_ms_ago: Option<u64>,
    /// The peer's wall clock when it sent that heartbeat.
    pub last_contact_sent_ms: Option<u64>,
    pub load: Option<LoadReport>,
}

/// Handles requests from other nodes: `(from, body) -> reply body`.
pub type Handler = Arc<dyn Fn(NodeId, Vec<u8>) -> BoxFuture<'static, Vec<u8>> + Send + Sync>;

/// A running mesh. Dropping it stops the actors without waiting; prefer [`Mesh::stop`].
pub struct Mesh {
    me: NodeId,
    listen: SocketAddr,
    shared: Shared,
    server: ActorRef<NodeServerMessage>,
    watcher: ActorRef<WatcherMsg>,
    shutdown: watch::Sender<bool>,
    driver: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// Our own TLS accept loop (with [`MeshTls`]).
    accepting: std::sync::Mutex<Option<JoinHandle<()>>>,
    outbound: Arc<Semaphore>,
    /// The host names peers are known by (for the TLS server name), by id.
    hosts: Hosts,
}

type Hosts = Arc<std::sync::Mutex<BTreeMap<NodeId, String>>>;

impl fmt::Debug for Mesh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mesh")
            .field("node_id", &self.me)
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

const SUBSCRIPTION_ID: &str = "openclaw.mesh";

impl Mesh {
    /// Start listening on `cfg.listen` and start the watcher and the driver.
    pub async fn start(cfg: MeshConfig) -> Result<Mesh, MeshError> {
        let cfg = cfg.validate()?;
        let me = cfg.node_id;
        let shared = Shared::default();
        // With TLS we accept on the mesh port ourselves; the node server's own listener then
        // sits on an ephemeral loopback port nobody is told about (and still requires TLS).
        let tls_listener = match &cfg.tls {
            Some(_) => Some(
                tokio::net::TcpListener::bind(cfg.listen)
                    .await
                    .map_err(|e| {
                        MeshError::Start(format!("mesh listener on {}: {e}", cfg.listen))
                    })?,
            ),
            None => None,
        };
        let (port, listen_ip, encryption) = match &cfg.tls {
            Some(t) => (
                0,
                IpAddr::from([127, 0, 0, 1]),
                Some(IncomingEncryptionMode::Tls(t.acceptor.clone())),
            ),
            None => (cfg.listen.port(), cfg.listen.ip(), None),
        };
        let server = NodeServer::new(
            port,
            cfg.secret.clone(),
            wire::node_name(me),
            cfg.advertise_host
                .clone()
                .unwrap_or_else(|| cfg.listen.ip().to_string()),
            encryption,
            Some(ractor_cluster::node::NodeConnectionMode::Isolated),
        )
        .with_listen_addr(listen_ip)
        .with_max_inbound_frame_size(FRAME_MAX);
        let (server, _) = Actor::spawn(None, server, ())
            .await
            .map_err(|e| MeshError::Start(format!("node server on {}: {e}", cfg.listen)))?;
        let subscribed = server.cast(NodeServerMessage::SubscribeToEvents {
            id: SUBSCRIPTION_ID.to_string(),
            subscription: Box::new(SessionEvents {
                me,
                shared: shared.clone(),
                auth_timeout: AUTH_TIMEOUT,
            }),
        });
        if subscribed.is_err() {
            server.stop(None);
            return Err(MeshError::Start("node server stopped at once".into()));
        }
        let watcher = match Actor::spawn(
            Some(watcher::watcher_name(me)),
            Watcher,
            WatcherArgs {
                me,
                shared: shared.clone(),
            },
        )
        .await
        {
            Ok((w, _)) => w,
            Err(e) => {
                server.stop(None);
                return Err(MeshError::Start(format!("watcher: {e}")));
            }
        };
        let (shutdown, shutdown_rx) = watch::channel(false);
        let hosts = Hosts::default();
        let accepting = match (tls_listener, &cfg.tls) {
            (Some(l), Some(t)) => Some(tokio::spawn(accept_tls(
                l,
                t.acceptor.clone(),
                server.clone(),
                shutdown_rx.clone(),
            ))),
            _ => None,
        };
        let driver = tokio::spawn(drive(
            Dialer {
                me,
                server: server.clone(),
                bind: Some(cfg.listen.ip()).filter(|ip| !ip.is_unspecified()),
                tls: cfg.tls.as_ref().map(|t| t.connector.clone()),
                hosts: hosts.clone(),
            },
            cfg.heartbeat,
            shared.clone(),
            shutdown_rx,
        ));
        tracing::info!(node = me, listen = %cfg.listen, tls = cfg.tls.is_some(), "mesh started");
        Ok(Mesh {
            me,
            listen: cfg.listen,
            shared,
            server,
            watcher,
            shutdown,
            driver: std::sync::Mutex::new(Some(driver)),
            accepting: std::sync::Mutex::new(accepting),
            outbound: Arc::new(Semaphore::new(OUTBOUND_INFLIGHT_MAX)),
            hosts,
        })
    }

    pub fn node_id(&self) -> NodeId {
        self.me
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// Replace the wanted peers (from Raft membership). Our own id is ignored. Peers no longer
    /// wanted are not dialed again; an open session to one stays until it drops.
    pub fn set_peers(&self, peers: Vec<(NodeId, SocketAddr)>) {
        self.shared
            .lock()
            .set_wanted(self.me, peers, Instant::now());
    }

    /// The host names peers are known by (`host` of their mesh `host:port`), used as the TLS
    /// server name when dialing them; a peer without one is verified by its IP address.
    pub fn set_peer_hosts(&self, hosts: BTreeMap<NodeId, String>) {
        *self.hosts.lock().unwrap_or_else(|e| e.into_inner()) = hosts;
    }

    /// The load this node reports in its next heartbeats.
    pub fn set_load(&self, load: LoadReport) {
        self.shared.lock().load = load;
    }

    /// Install the handler for requests from other nodes (replaces the previous one).
    pub fn set_handler<F, Fut>(&self, f: F)
    where
        F: Fn(NodeId, Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<u8>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |from, body| Box::pin(f(from, body)));
        self.shared.lock().handler = Some(handler);
    }

    /// Every wanted or connected peer, by id.
    pub fn peers(&self) -> Vec<PeerView> {
        let now = Instant::now();
        let reg = self.shared.lock();
        let connected = reg.connected();
        let mut ids: Vec<NodeId> = reg.wanted.keys().chain(connected.keys()).copied().collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .map(|id| {
                let contact = reg.contacts.get(&id);
                PeerView {
                    id,
                    addr: reg.wanted.get(&id).copied(),
                    connected: connected.contains_key(&id),
                    last_contact_ms_ago: contact.map(|c| {
                        u64::try_from(now.duration_since(c.at).as_millis()).unwrap_or(u64::MAX)
                    }),
                    last_contact_sent_ms: contact.map(|c| c.sent_ms),
                    load: contact.map(|c| c.load),
                }
            })
            .collect()
    }

    /// Is there an authenticated session to `node` now?
    pub fn is_connected(&self, node: NodeId) -> bool {
        self.shared.lock().is_connected(node)
    }

    /// Recent connections closed because the secrets differ (oldest first, at most 32).
    pub fn refusals(&self) -> Vec<Refusal> {
        self.shared.lock().refusals.iter().cloned().collect()
    }

    /// Send `body` to `node`'s handler and wait at most `timeout` for its reply.
    pub async fn call(
        &self,
        node: NodeId,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, MeshError> {
        if body.len() > BODY_MAX {
            return Err(MeshError::TooLarge(body.len()));
        }
        match self.request(node, RequestKind::App(body), timeout).await? {
            Reply::App(out) => Ok(out),
            other => Err(unexpected(node, other)),
        }
    }

    /// Round-trip time to `node`'s watcher (answered without the handler).
    pub async fn ping(&self, node: NodeId, timeout: Duration) -> Result<Duration, MeshError> {
        let started = Instant::now();
        match self.request(node, RequestKind::Ping, timeout).await? {
            Reply::Pong => Ok(started.elapsed()),
            other => Err(unexpected(node, other)),
        }
    }

    async fn request(
        &self,
        node: NodeId,
        kind: RequestKind,
        timeout: Duration,
    ) -> Result<Reply, MeshError> {
        if *self.shutdown.borrow() {
            return Err(MeshError::Stopped);
        }
        let Ok(_permit) = self.outbound.clone().try_acquire_owned() else {
            return Err(MeshError::Busy("local outbound calls"));
        };
        let target = remote_watcher(&self.shared, node).ok_or(MeshError::NotConnected(node))?;
        let bytes = encode(&Request {
            from: self.me,
            kind,
        })?;
        match target
            .call(|port| WatcherMsg::Request(bytes, port), Some(timeout))
            .await
        {
            Ok(CallResult::Success(reply)) => Ok(decode::<Reply>(&reply)?),
            Ok(CallResult::Timeout) => Err(MeshError::Timeout),
            Ok(CallResult::SenderError) => Err(MeshError::Disconnected(node)),
            Err(_) => Err(MeshError::NotConnected(node)),
        }
    }

    /// Stop the driver, the watcher and the node server (closing every session), each within a
    /// deadline. Idempotent.
    pub async fn stop(&self) {
        let _ = self.shutdown.send(true);
        if let Some(a) = self
            .accepting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            a.abort();
        }
        let driver = self.driver.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(driver) = driver {
            if tokio::time::timeout(STOP_TIMEOUT, driver).await.is_err() {
                tracing::warn!(node = self.me, "mesh driver did not stop in time");
            }
        }
        let _ = self.server.cast(NodeServerMessage::UnsubscribeToEvents(
            SUBSCRIPTION_ID.to_string(),
        ));
        if self
            .watcher
            .stop_and_wait(Some("mesh stopped".into()), Some(STOP_TIMEOUT))
            .await
            .is_err()
        {
            self.watcher.kill();
        }
        if self
            .server
            .stop_and_wait(Some("mesh stopped".into()), Some(STOP_TIMEOUT))
            .await
            .is_err()
        {
            self.server.kill();
        }
        // Unsubscribed above, so the sessions' close events never arrive: forget them here.
        self.shared.lock().sessions.clear();
        tracing::info!(node = self.me, "mesh stopped");
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(driver) = self.driver.lock().unwrap_or_else(|e| e.into_inner()).take() {
            driver.abort();
        }
        if let Some(a) = self
            .accepting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            a.abort();
        }
        self.watcher.stop(None);
        self.server.stop(None);
    }
}

fn unexpected(node: NodeId, reply: Reply) -> MeshError {
    match reply {
        Reply::NoHandler => MeshError::NoHandler(node),
        Reply::Busy => MeshError::Busy("peer inbound requests"),
        Reply::HandlerTimeout => MeshError::HandlerTimeout(node),
        Reply::BadRequest | Reply::Pong | Reply::App(_) => MeshError::BadRequest(node),
    }
}

/// The watchers of the nodes we have an authenticated session with, by node id: the proxy named
/// [`watcher::watcher_name`]`(peer)` among the children of that peer's session.
///
/// Not looked up in the pg group: pg and ractor's pid registry are process-global, and with
/// several NodeServers in one process (tests) their remote actor ids (session counter, pid)
/// collide and each session also advertises the other nodes' local actors as its own. A
/// session's own children, matched by the name the peer gave its watcher, are unambiguous.
fn remote_watchers(shared: &Shared) -> Vec<(NodeId, ActorRef<WatcherMsg>)> {
    let sessions: Vec<(NodeId, ractor::ActorCell)> = shared
        .lock()
        .connected()
        .into_iter()
        .map(|(id, s)| (id, s.actor.get_cell()))
        .collect();
    sessions
        .into_iter()
        .filter_map(|(id, session)| Some((id, watcher_proxy(&session, id)?)))
        .collect()
}

/// The watcher of `node`, if connected.
fn remote_watcher(shared: &Shared, node: NodeId) -> Option<ActorRef<WatcherMsg>> {
    let session = shared.lock().connected().get(&node)?.actor.get_cell();
    watcher_proxy(&session, node)
}

fn watcher_proxy(session: &ractor::ActorCell, node: NodeId) -> Option<ActorRef<WatcherMsg>> {
    let name = watcher::watcher_name(node);
    session
        .get_children()
        .into_iter()
        .find(|c| !c.get_id().is_local() && c.get_name().as_deref() == Some(name.as_str()))
        .map(ActorRef::from)
}

/// The driver: heartbeats, reconnects, silent-peer detection. Never blocks on a peer: each dial
/// runs in its own task under [`CONNECT_TIMEOUT`].
async fn drive(
    dialer: Dialer,
    heartbeat: Duration,
    shared: Shared,
    mut shutdown: watch::Receiver<bool>,
) {
    let me = dialer.me;
    let mut beat = tokio::time::interval(heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut redial = tokio::time::interval(RECONNECT_EVERY);
    redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let silent = silent_after(heartbeat);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = beat.tick() => {
                send_heartbeats(me, &shared);
                close_silent_sessions(&shared, silent);
            }
            _ = redial.tick() => {
                let due = shared.lock().due_dials(Instant::now(), RECONNECT_EVERY);
                for (id, addr) in due {
                    let dialer = dialer.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(CONNECT_TIMEOUT, dialer.dial(id, addr)).await {
                            Ok(Ok(())) => tracing::debug!(peer = id, %addr, "dialed cluster peer"),
                            Ok(Err(e)) => tracing::debug!(peer = id, %addr, error = %e, "cluster peer unreachable"),
                            Err(_) => tracing::debug!(peer = id, %addr, "cluster connect timed out"),
                        }
                    });
                }
            }
        }
        if *shutdown.borrow() {
            break;
        }
    }
}

/// How this node dials a peer: from its own address, over TLS when configured.
#[derive(Clone)]
struct Dialer {
    me: NodeId,
    server: ActorRef<NodeServerMessage>,
    /// The local address outgoing sockets bind to (`None` when listening on 0.0.0.0).
    bind: Option<IpAddr>,
    tls: Option<tokio_rustls::TlsConnector>,
    hosts: Hosts,
}

impl Dialer {
    /// Connect (bound to [`Dialer::bind`]), handshake TLS if configured, and hand the stream to
    /// the node server, which runs the cookie handshake.
    async fn dial(&self, id: NodeId, addr: SocketAddr) -> Result<(), String> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(|e| e.to_string())?;
        if let Some(ip) = self.bind.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) {
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|e| format!("binding to {ip}: {e}"))?;
        }
        let stream = socket.connect(addr).await.map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let peer_addr = stream.peer_addr().map_err(|e| e.to_string())?;
        let local_addr = stream.local_addr().map_err(|e| e.to_string())?;
        let stream = match &self.tls {
            None => NetworkStream::Raw {
                peer_addr,
                local_addr,
                stream,
            },
            Some(connector) => {
                let host = self
                    .hosts
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&id)
                    .cloned();
                let name = host
                    .and_then(|h| {
                        tokio_rustls::rustls::pki_types::ServerName::try_from(
                            h.trim_matches(['[', ']']).to_string(),
                        )
                        .ok()
                    })
                    .unwrap_or_else(|| {
                        tokio_rustls::rustls::pki_types::ServerName::IpAddress(addr.ip().into())
                    });
                let tls = connector.connect(name, stream).await.map_err(|e| {
                    format!("TLS handshake failed (is its certificate signed by this cluster's CA?): {e}")
                })?;
                NetworkStream::TlsClient {
                    peer_addr,
                    local_addr,
                    stream: tls,
                }
            }
        };
        self.server
            .cast(NodeServerMessage::ConnectionOpened {
                stream: Box::new(stream),
                is_server: false,
            })
            .map_err(|e| e.to_string())
    }
}

/// Accept mesh connections and run each TLS handshake in its own task (bounded, with a
/// deadline); authenticated-by-certificate streams go to the node server.
async fn accept_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    server: ActorRef<NodeServerMessage>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(HANDSHAKES_MAX));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.changed() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "mesh: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(addr = %peer, "mesh: {HANDSHAKES_MAX} TLS handshakes in progress; connection closed");
            continue;
        };
        let (acceptor, server) = (acceptor.clone(), server.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let _ = stream.set_nodelay(true);
            let Ok(local_addr) = stream.local_addr() else {
                return;
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = server.cast(NodeServerMessage::ConnectionOpened {
                        stream: Box::new(NetworkStream::TlsServer {
                            peer_addr: peer,
                            local_addr,
                            stream: tls,
                        }),
                        is_server: true,
                    });
                }
                // Keyed by IP (the port changes per attempt): throttled per peer by the node.
                Ok(Err(e)) => tracing::warn!(
                    addr = %peer.ip(),
                    reason = %e,
                    "refused a mesh connection: TLS handshake failed (is its certificate signed \
                     by this cluster's CA?)"
                ),
                Err(_) => tracing::debug!(addr = %peer, "mesh: TLS handshake timed out"),
            }
        });
    }
}

fn send_heartbeats(me: NodeId, shared: &Shared) {
    let load = shared.lock().load;
    let hb = Heartbeat {
        from: me,
        sent_ms: wall_ms(),
        load,
    };
    let bytes = match encode(&hb) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode heartbeat");
            return;
        }
    };
    for (peer, watcher) in remote_watchers(shared) {
        if let Err(e) = watcher.cast(WatcherMsg::Heartbeat(bytes.clone())) {
            tracing::debug!(peer, error = %e, "heartbeat not sent");
        }
    }
}

/// ractor_cluster has no pong timeout: a peer that vanished without closing TCP would look
/// connected forever. Stop sessions whose peer was silent for `silent` (the reconnect loop then
/// dials it again).
fn close_silent_sessions(shared: &Shared, silent: Duration) {
    let now = Instant::now();
    let reg = shared.lock();
    for s in reg.sessions.values() {
        let (Some(peer), Some(since)) = (s.peer, s.authenticated_at) else {
            continue;
        };
        let last = reg.contacts.get(&peer).map_or(since, |c| c.at.max(since));
        if now.duration_since(last) > silent {
            tracing::warn!(peer, addr = %s.addr, silent_ms = now.duration_since(last).as_millis() as u64, "cluster peer silent; closing its session");
            s.actor.stop(Some("heartbeat_timeout".into()));
        }
    }
}

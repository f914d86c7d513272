//! The mesh's shared bookkeeping: which peers the caller wants, which ractor_cluster sessions are
//! open and authenticated (and to which node id), the last heartbeat heard from each node, when to
//! dial a peer next, and the refusals (wrong cluster secret) seen recently.
//!
//! Written by the NodeServer's event callbacks ([`SessionEvents`]), the watcher and the driver
//! task, always under one `std::sync::Mutex` that is never held across an `.await`. The decisions
//! (is a peer connected, whom to dial, how a closed session is classified) are plain methods that
//! take `now` so they are tested without a network.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ractor::{ActorId, ActorRef};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeSessionMessage};

use super::wire::{parse_node_name, LoadReport};
use super::Handler;
use crate::types::NodeId;

/// Refusals kept for [`super::Mesh::refusals`].
pub(crate) const REFUSALS_MAX: usize = 32;
/// Distinct (direction, address, claimed node) keys whose refusal warnings are rate-limited.
const REFUSAL_LOG_KEYS_MAX: usize = 256;
/// One warning per key per this interval; the others are counted.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(30);
/// Nodes whose last heartbeat is remembered (a cluster is far smaller).
pub(crate) const CONTACTS_MAX: usize = 1024;
/// Dialing a peer that refused us backs off up to this.
pub(crate) const REFUSED_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A connection closed during the handshake because the secrets differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The other end's socket address (`ip:port`).
    pub addr: String,
    /// The node id the other end claimed in its handshake, if it got that far.
    pub claimed: Option<NodeId>,
    /// `true` if the other end dialed us, `false` if we dialed it.
    pub incoming: bool,
    /// Our wall clock when it happened.
    pub at_ms: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub actor: ActorRef<NodeSessionMessage>,
    pub addr: String,
    pub incoming: bool,
    /// The node id the peer claimed (trusted once `authenticated_at` is set).
    pub peer: Option<NodeId>,
    /// The wanted peer we dialed to open it (outgoing sessions only).
    pub dialed: Option<NodeId>,
    pub authenticated_at: Option<Instant>,
}

#[derive(Debug, Clone)]
pub(crate) struct Contact {
    pub at: Instant,
    pub sent_ms: u64,
    pub load: LoadReport,
}

#[derive(Debug, Clone)]
pub(crate) struct Dial {
    pub next_at: Instant,
    /// The delay after the next refusal (doubles up to [`REFUSED_BACKOFF_MAX`]).
    pub refused_backoff: Duration,
}

/// How a session that closed before it authenticated is reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClosedUnauthenticated {
    /// The peer never sent its name: a port probe or a peer going away mid-dial.
    BeforeHandshake,
    /// A second connection to a node we are already connected to (simultaneous dial).
    Duplicate,
    /// Ourselves (a peer list that contains our own address).
    SelfConnection,
    /// The challenge failed: the two nodes use different cluster secrets.
    WrongSecret,
}

#[derive(Default)]
pub(crate) struct Registry {
    pub wanted: BTreeMap<NodeId, SocketAddr>,
    pub sessions: HashMap<ActorId, Session>,
    pub contacts: BTreeMap<NodeId, Contact>,
    pub dial: BTreeMap<NodeId, Dial>,
    pub load: LoadReport,
    pub handler: Option<Handler>,
    pub refusals: VecDeque<Refusal>,
    refusal_log: HashMap<String, (Instant, u64)>,
}

impl Registry {
    /// The node ids with an authenticated session, and that session.
    pub fn connected(&self) -> BTreeMap<NodeId, &Session> {
        let mut out = BTreeMap::new();
        for s in self.sessions.values() {
            if let (Some(peer), Some(_)) = (s.peer, s.authenticated_at) {
                out.insert(peer, s);
            }
        }
        out
    }

    pub fn is_connected(&self, node: NodeId) -> bool {
        self.sessions
            .values()
            .any(|s| s.peer == Some(node) && s.authenticated_at.is_some())
    }

    /// Replace the wanted peers; forget dial state and contacts of nodes no longer relevant.
    pub fn set_wanted(&mut self, me: NodeId, peers: Vec<(NodeId, SocketAddr)>, now: Instant) {
        self.wanted = peers.into_iter().filter(|(id, _)| *id != me).collect();
        let wanted = &self.wanted;
        self.dial.retain(|id, _| wanted.contains_key(id));
        for id in self.wanted.keys() {
            self.dial.entry(*id).or_insert(Dial {
                next_at: now,
                refused_backoff: Duration::from_secs(1),
            });
        }
        let connected: Vec<NodeId> = self.connected().keys().copied().collect();
        self.contacts
            .retain(|id, _| wanted.contains_key(id) || connected.contains(id));
    }

    /// Wanted peers that are not connected and whose dial time has come; each gets its next dial
    /// time pushed to `now + wait` so it is dialed once per pass.
    pub fn due_dials(&mut self, now: Instant, wait: Duration) -> Vec<(NodeId, SocketAddr)> {
        let mut due = Vec::new();
        let wanted: Vec<(NodeId, SocketAddr)> =
            self.wanted.iter().map(|(id, a)| (*id, *a)).collect();
        for (id, addr) in wanted {
            if self.is_connected(id) {
                continue;
            }
            let dial = self.dial.entry(id).or_insert(Dial {
                next_at: now,
                refused_backoff: Duration::from_secs(1),
            });
            if dial.next_at <= now {
                dial.next_at = now + wait;
                due.push((id, addr));
            }
        }
        due
    }

    /// Push a peer's next dial to `at` (e.g. after a refusal or while a handshake runs).
    pub fn delay_dial(&mut self, id: NodeId, at: Instant) {
        if let Some(d) = self.dial.get_mut(&id) {
            d.next_at = d.next_at.max(at);
        }
    }

    /// Record a heartbeat. Returns `false` if it was dropped (too many distinct nodes).
    pub fn record_contact(
        &mut self,
        from: NodeId,
        sent_ms: u64,
        load: LoadReport,
        now: Instant,
    ) -> bool {
        if !self.contacts.contains_key(&from) && self.contacts.len() >= CONTACTS_MAX {
            return false;
        }
        self.contacts.insert(
            from,
            Contact {
                at: now,
                sent_ms,
                load,
            },
        );
        true
    }

    /// Decide what a session that closed before authenticating was.
    pub fn classify_unauthenticated(&self, me: NodeId, s: &Session) -> ClosedUnauthenticated {
        match s.peer {
            None => ClosedUnauthenticated::BeforeHandshake,
            Some(p) if p == me => ClosedUnauthenticated::SelfConnection,
            Some(p) if self.is_connected(p) => ClosedUnauthenticated::Duplicate,
            Some(_) => ClosedUnauthenticated::WrongSecret,
        }
    }

    /// Remember a refusal; returns how many earlier warnings for the same key were suppressed,
    /// or `None` if this one should be suppressed too.
    pub fn note_refusal(&mut self, r: Refusal, now: Instant) -> Option<u64> {
        if self.refusals.len() >= REFUSALS_MAX {
            self.refusals.pop_front();
        }
        // The peer's ephemeral port changes per attempt: key on its ip and claimed id.
        let ip = r
            .addr
            .rsplit_once(':')
            .map_or(r.addr.as_str(), |(ip, _)| ip);
        let key = format!("{}|{ip}|{:?}", r.incoming, r.claimed);
        self.refusals.push_back(r);
        if self.refusal_log.len() >= REFUSAL_LOG_KEYS_MAX && !self.refusal_log.contains_key(&key) {
            self.refusal_log.clear();
        }
        match self.refusal_log.get_mut(&key) {
            Some((last, suppressed)) if now.duration_since(*last) < REFUSAL_LOG_EVERY => {
                *suppressed += 1;
                None
            }
            Some((last, suppressed)) => {
                let n = *suppressed;
                *last = now;
                *suppressed = 0;
                Some(n)
            }
            None => {
                self.refusal_log.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

/// The registry behind its lock. A poisoned lock is recovered: the data is bookkeeping that
/// every writer leaves consistent between statements.
#[derive(Clone, Default)]
pub(crate) struct Shared(Arc<Mutex<Registry>>);

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Registry> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Receives the NodeServer's session events (called synchronously inside the NodeServer actor:
/// only bookkeeping under the lock and a log line, never a blocking call).
pub(crate) struct SessionEvents {
    pub me: NodeId,
    pub shared: Shared,
    pub auth_timeout: Duration,
}

impl SessionEvents {
    fn peer_of(ses: &NodeServerSessionInformation) -> Option<NodeId> {
        ses.peer_name
            .as_ref()
            .and_then(|n| parse_node_name(&n.name))
    }
}

impl NodeEventSubscription for SessionEvents {
    fn node_session_opened(&self, ses: NodeServerSessionInformation) {
        let now = Instant::now();
        let mut reg = self.shared.lock();
        let dialed = if ses.is_server {
            None
        } else {
            let addr: Option<SocketAddr> = ses.peer_addr.parse().ok();
            reg.wanted
                .iter()
                .find(|(_, a)| Some(**a) == addr)
                .map(|(id, _)| *id)
        };
        if let Some(id) = dialed {
            // Give the handshake time before dialing the same peer again.
            reg.delay_dial(id, now + self.auth_timeout);
        }
        tracing::debug!(addr = %ses.peer_addr, incoming = ses.is_server, "cluster session opened");
        reg.sessions.insert(
            ses.actor.get_id(),
            Session {
                actor: ses.actor.clone(),
                addr: ses.peer_addr.clone(),
                incoming: ses.is_server,
                peer: Self::peer_of(&ses),
                dialed,
                authenticated_at: None,
            },
        );
    }

    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        let now = Instant::now();
        let peer = Self::peer_of(&ses);
        let mut reg = self.shared.lock();
        let Some(s) = reg.sessions.get_mut(&ses.actor.get_id()) else {
            return;
        };
        s.peer = peer;
        match peer {
            Some(id) => {
                s.authenticated_at = Some(now);
                if let Some(d) = reg.dial.get_mut(&id) {
                    d.refused_backoff = Duration::from_secs(1);
                }
                tracing::info!(peer = id, addr = %ses.peer_addr, incoming = ses.is_server, "cluster peer connected");
            }
            None => {
                // Authenticated (same secret) but not an openclaw node name: never used.
                tracing::warn!(addr = %ses.peer_addr, "cluster peer authenticated with a foreign node name; ignored");
            }
        }
    }

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let now = Instant::now();
        let mut reg = self.shared.lock();
        let Some(mut s) = reg.sessions.remove(&ses.actor.get_id()) else {
            return;
        };
        if s.peer.is_none() {
            s.peer = Self::peer_of(&ses);
        }
        if s.authenticated_at.is_some() {
            tracing::info!(peer = ?s.peer, addr = %s.addr, "cluster peer disconnected");
            if let Some(id) = s.peer {
                if !reg.is_connected(id) {
                    // Reconnect on the next pass.
                    if let Some(d) = reg.dial.get_mut(&id) {
                        d.next_at = now;
                    }
                }
            }
            return;
        }
        match reg.classify_unauthenticated(self.me, &s) {
            ClosedUnauthenticated::BeforeHandshake => {
                tracing::debug!(addr = %s.addr, incoming = s.incoming, "cluster connection closed before the handshake");
                if let Some(d) = s.dialed.and_then(|id| reg.dial.get_mut(&id)) {
                    // The handshake is over: dial again on the ordinary schedule.
                    d.next_at = now + super::RECONNECT_EVERY;
                }
            }
            ClosedUnauthenticated::Duplicate => {
                tracing::debug!(addr = %s.addr, peer = ?s.peer, "duplicate cluster connection closed");
            }
            ClosedUnauthenticated::SelfConnection => {
                tracing::warn!(addr = %s.addr, "cluster connection to ourselves closed: a peer address is our own");
            }
            ClosedUnauthenticated::WrongSecret => {
                let refusal = Refusal {
                    addr: s.addr.clone(),
                    claimed: s.peer,
                    incoming: s.incoming,
                    at_ms: wall_ms(),
                };
                if let Some(id) = s.dialed.or(s.peer).filter(|_| !s.incoming) {
                    if let Some(d) = reg.dial.get_mut(&id) {
                        let wait = d.refused_backoff;
                        d.next_at = now + wait;
                        d.refused_backoff = (wait * 2).min(REFUSED_BACKOFF_MAX);
                    }
                }
                if let Some(suppressed) = reg.note_refusal(refusal, now) {
                    let claimed = s.peer.map_or_else(|| "?".to_string(), |p| p.to_string());
                    if s.incoming {
                        tracing::warn!(
                            claimed_node = %claimed, suppressed,
                            "refused cluster connection from {}: wrong cluster secret", s.addr
                        );
                    } else {
                        tracing::warn!(
                            node = %claimed, suppressed,
                            "cluster connection to {} refused: wrong cluster secret", s.addr
                        );
                    }
                }
            }
        }
    }
}

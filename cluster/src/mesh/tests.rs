//! Mesh tests: the pure bookkeeping in tables, then real meshes on loopback in one process.
//! Waits poll a condition with a generous deadline; nothing asserts a wall-clock duration.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::registry::{ClosedUnauthenticated, Refusal, Registry, Session};
use super::*;

const WAIT: Duration = Duration::from_secs(15);
const HB: Duration = Duration::from_millis(100);

fn free_addr() -> io::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    l.local_addr()
}

fn cfg(node_id: NodeId, listen: SocketAddr, secret: &str) -> MeshConfig {
    MeshConfig {
        node_id,
        listen,
        secret: secret.to_string(),
        heartbeat: HB,
        advertise_host: None,
        tls: None,
    }
}

/// Poll `cond` every 50 ms until it holds or `WAIT` passes.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if cond() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("timed out waiting for: {what}"))
}

/// A mesh start that retries while the port is still held by a mesh that just stopped.
async fn start_retrying(c: MeshConfig) -> Result<Mesh, String> {
    let deadline = Instant::now() + WAIT;
    loop {
        match Mesh::start(c.clone()).await {
            Ok(m) => return Ok(m),
            Err(e) if Instant::now() >= deadline => return Err(e.to_string()),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Captures formatted log output for assertions.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

// ---------- pure bookkeeping ----------

fn session(peer: Option<NodeId>, authenticated: bool) -> Session {
    // A session record needs an actor ref; any local actor will do for bookkeeping tests.
    Session {
        actor: dummy_session_ref(),
        addr: "127.0.0.1:40000".into(),
        incoming: true,
        peer,
        dialed: None,
        authenticated_at: authenticated.then(Instant::now),
    }
}

struct Dummy;
impl Actor for Dummy {
    type Msg = ractor_cluster::NodeSessionMessage;
    type State = ();
    type Arguments = ();
    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        Ok(())
    }
}

thread_local! {
    static DUMMY: std::cell::RefCell<Option<ActorRef<ractor_cluster::NodeSessionMessage>>> =
        const { std::cell::RefCell::new(None) };
}

fn dummy_session_ref() -> ActorRef<ractor_cluster::NodeSessionMessage> {
    DUMMY
        .with(|d| d.borrow().clone())
        .unwrap_or_else(|| panic!("call with_dummy first"))
}

async fn with_dummy() -> Result<ActorRef<ractor_cluster::NodeSessionMessage>, String> {
    let (a, _) = Actor::spawn(None, Dummy, ())
        .await
        .map_err(|e| e.to_string())?;
    DUMMY.with(|d| *d.borrow_mut() = Some(a.clone()));
    Ok(a)
}

#[tokio::test]
async fn mesh_registry_classifies_sessions_closed_before_authentication() -> Result<(), String> {
    let dummy = with_dummy().await?;
    let mut reg = Registry::default();
    let connected_peer = session(Some(2), true);
    reg.sessions
        .insert(ractor::ActorId::Local(1), connected_peer);
    let cases = [
        (session(None, false), ClosedUnauthenticated::BeforeHandshake),
        (
            session(Some(1), false),
            ClosedUnauthenticated::SelfConnection,
        ),
        (session(Some(2), false), ClosedUnauthenticated::Duplicate),
        (session(Some(3), false), ClosedUnauthenticated::WrongSecret),
    ];
    for (s, expected) in cases {
        assert_eq!(
            reg.classify_unauthenticated(1, &s),
            expected,
            "{:?}",
            s.peer
        );
    }
    dummy.stop(None);
    Ok(())
}

#[tokio::test]
async fn mesh_registry_dials_each_unconnected_wanted_peer_once_per_pass() -> Result<(), String> {
    let dummy = with_dummy().await?;
    let a: SocketAddr = "127.0.0.1:1".parse().map_err(|e| format!("{e}"))?;
    let b: SocketAddr = "127.0.0.1:2".parse().map_err(|e| format!("{e}"))?;
    let now = Instant::now();
    let mut reg = Registry::default();
    reg.set_wanted(1, vec![(1, a), (2, a), (3, b)], now);
    assert_eq!(reg.wanted.len(), 2, "our own id is never wanted");
    reg.sessions
        .insert(ractor::ActorId::Local(9), session(Some(2), true));
    assert_eq!(reg.due_dials(now, RECONNECT_EVERY), vec![(3, b)]);
    assert_eq!(
        reg.due_dials(now, RECONNECT_EVERY),
        vec![],
        "not twice in one pass"
    );
    assert_eq!(
        reg.due_dials(now + RECONNECT_EVERY, RECONNECT_EVERY),
        vec![(3, b)]
    );
    reg.delay_dial(3, now + Duration::from_secs(30));
    assert_eq!(
        reg.due_dials(now + Duration::from_secs(10), RECONNECT_EVERY),
        vec![]
    );
    reg.set_wanted(1, vec![], now);
    assert!(reg.dial.is_empty());
    dummy.stop(None);
    Ok(())
}

#[test]
fn mesh_refusal_warnings_are_rate_limited_per_source_and_the_list_is_bounded() {
    let mut reg = Registry::default();
    let now = Instant::now();
    let r = |port: u16| Refusal {
        addr: format!("10.0.0.1:{port}"),
        claimed: Some(4),
        incoming: true,
        at_ms: 0,
    };
    assert_eq!(reg.note_refusal(r(1000), now), Some(0));
    assert_eq!(
        reg.note_refusal(r(1001), now + Duration::from_secs(1)),
        None
    );
    assert_eq!(
        reg.note_refusal(r(1002), now + Duration::from_secs(2)),
        None
    );
    assert_eq!(
        reg.note_refusal(r(1003), now + Duration::from_secs(31)),
        Some(2)
    );
    for p in 0..100 {
        reg.note_refusal(r(p), now);
    }
    assert_eq!(reg.refusals.len(), registry::REFUSALS_MAX);
}

#[test]
fn mesh_config_is_validated_and_its_debug_hides_the_secret() -> Result<(), String> {
    let addr: SocketAddr = "127.0.0.1:7000".parse().map_err(|e| format!("{e}"))?;
    let ok = cfg(1, addr, "sentinel-secret-123");
    assert!(!format!("{ok:?}").contains("sentinel-secret-123"));
    assert!(ok.clone().validate().is_ok());
    let bad = [
        MeshConfig {
            secret: String::new(),
            ..ok.clone()
        },
        MeshConfig {
            listen: "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
            ..ok.clone()
        },
        MeshConfig {
            heartbeat: Duration::ZERO,
            ..ok.clone()
        },
        MeshConfig {
            heartbeat: Duration::from_secs(3600),
            ..ok.clone()
        },
    ];
    for c in bad {
        assert!(matches!(c.validate(), Err(MeshError::Config(_))));
    }
    Ok(())
}

// ---------- real meshes on loopback ----------

#[tokio::test]
async fn mesh_two_nodes_exchange_heartbeats_and_answer_calls_and_pings() -> Result<(), String> {
    let (addr_a, addr_b) = (
        free_addr().map_err(|e| e.to_string())?,
        free_addr().map_err(|e| e.to_string())?,
    );
    let a = Mesh::start(cfg(11, addr_a, "s3cret"))
        .await
        .map_err(|e| e.to_string())?;
    let b = Mesh::start(cfg(12, addr_b, "s3cret"))
        .await
        .map_err(|e| e.to_string())?;
    a.set_peers(vec![(11, addr_a), (12, addr_b)]);
    b.set_peers(vec![(11, addr_a), (12, addr_b)]);
    b.set_load(LoadReport {
        queued: 3,
        running: 2,
        workers: 8,
    });
    b.set_handler(|from, mut body: Vec<u8>| async move {
        body.reverse();
        body.extend_from_slice(&from.to_be_bytes());
        body
    });

    eventually("a and b connected", || {
        a.is_connected(12) && b.is_connected(11)
    })
    .await?;
    eventually("a hears b's load", || {
        a.peers().iter().any(|p| {
            p.id == 12
                && p.connected
                && p.last_contact_ms_ago.is_some()
                && p.load
                    == Some(LoadReport {
                        queued: 3,
                        running: 2,
                        workers: 8,
                    })
        })
    })
    .await?;
    eventually("b hears a", || {
        b.peers()
            .iter()
            .any(|p| p.id == 11 && p.last_contact_ms_ago.is_some())
    })
    .await?;
    let views = a.peers();
    assert_eq!(views.len(), 1, "{views:?}");
    assert_eq!(views[0].addr, Some(addr_b));

    let out = a
        .call(12, vec![1, 2, 3], Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    let mut expected = vec![3, 2, 1];
    expected.extend_from_slice(&11u64.to_be_bytes());
    assert_eq!(out, expected);
    // A Pong within the deadline is the check (a timeout or an error fails the test); the
    // round-trip time is a wall-clock figure, printed by `mesh_call_rtt`, never asserted.
    a.ping(12, Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    b.ping(11, Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    assert!(matches!(
        a.ping(99, Duration::from_secs(1)).await,
        Err(MeshError::NotConnected(99))
    ));
    assert!(matches!(
        b.call(11, vec![1], Duration::from_secs(5)).await,
        Err(MeshError::NoHandler(11))
    ));
    assert!(matches!(
        a.call(99, vec![1], Duration::from_secs(1)).await,
        Err(MeshError::NotConnected(99))
    ));
    assert!(matches!(
        a.call(12, vec![0; BODY_MAX + 1], Duration::from_secs(1))
            .await,
        Err(MeshError::TooLarge(_))
    ));

    // A handler slower than the caller's deadline is a Timeout, not a hang.
    b.set_handler(|_, body| async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        body
    });
    assert!(matches!(
        a.call(12, vec![1], Duration::from_millis(200)).await,
        Err(MeshError::Timeout)
    ));

    a.stop().await;
    b.stop().await;
    assert!(matches!(
        a.ping(12, Duration::from_secs(1)).await,
        Err(MeshError::Stopped)
    ));
    assert!(a.peers().iter().all(|p| !p.connected));
    Ok(())
}

#[tokio::test]
async fn mesh_a_peer_with_the_wrong_secret_is_refused_and_logged() -> Result<(), String> {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // Current-thread runtime: every actor and task of this test runs on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);

    let (addr_a, addr_c) = (
        free_addr().map_err(|e| e.to_string())?,
        free_addr().map_err(|e| e.to_string())?,
    );
    let a = Mesh::start(cfg(21, addr_a, "right-secret-sentinel"))
        .await
        .map_err(|e| e.to_string())?;
    let c = Mesh::start(cfg(23, addr_c, "wrong-secret-sentinel"))
        .await
        .map_err(|e| e.to_string())?;
    c.set_peers(vec![(21, addr_a)]);

    eventually("a refuses c", || {
        a.refusals()
            .iter()
            .any(|r| r.incoming && r.claimed == Some(23))
    })
    .await?;
    eventually("c is told it was refused", || {
        c.refusals().iter().any(|r| !r.incoming)
    })
    .await?;
    // Both directions: now a dials c too.
    a.set_peers(vec![(23, addr_c)]);
    eventually("c refuses a", || {
        c.refusals()
            .iter()
            .any(|r| r.incoming && r.claimed == Some(21))
    })
    .await?;
    // Several more dial attempts happen meanwhile; none may authenticate.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!a.is_connected(23) && !c.is_connected(21));
    assert!(a.peers().iter().all(|p| !p.connected), "{:?}", a.peers());
    assert!(c.peers().iter().all(|p| !p.connected), "{:?}", c.peers());
    assert!(matches!(
        c.ping(21, Duration::from_secs(1)).await,
        Err(MeshError::NotConnected(21))
    ));

    a.stop().await;
    c.stop().await;
    let text = logs.text();
    let line = "refused cluster connection from 127.0.0.1:";
    assert!(
        text.lines().any(|l| l.contains(" WARN ")
            && l.contains(line)
            && l.contains("wrong cluster secret")),
        "no refusal warning in the logs:\n{text}"
    );
    assert!(
        !text.contains("right-secret-sentinel") && !text.contains("wrong-secret-sentinel"),
        "a secret was logged"
    );
    Ok(())
}

#[tokio::test]
async fn mesh_reconnects_by_itself_after_a_peer_restarts_on_the_same_port() -> Result<(), String> {
    let (addr_a, addr_b) = (
        free_addr().map_err(|e| e.to_string())?,
        free_addr().map_err(|e| e.to_string())?,
    );
    let a = Mesh::start(cfg(31, addr_a, "s"))
        .await
        .map_err(|e| e.to_string())?;
    let b = Mesh::start(cfg(32, addr_b, "s"))
        .await
        .map_err(|e| e.to_string())?;
    a.set_peers(vec![(32, addr_b)]);
    eventually("a connected to b", || {
        a.is_connected(32) && b.is_connected(31)
    })
    .await?;

    b.stop().await;
    drop(b);
    eventually("a sees b gone", || !a.is_connected(32)).await?;

    // b comes back knowing nobody: only a's reconnect loop can bring them together.
    let b = start_retrying(cfg(32, addr_b, "s")).await?;
    eventually("a reconnected to the restarted b", || {
        a.is_connected(32) && b.is_connected(31)
    })
    .await?;
    eventually("b hears a's heartbeats", || {
        b.peers()
            .iter()
            .any(|p| p.id == 31 && p.last_contact_ms_ago.is_some())
    })
    .await?;
    // The reconnected link carries a request both ways (a timeout or an error fails the test).
    a.ping(32, Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    b.ping(31, Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    a.stop().await;
    b.stop().await;
    Ok(())
}

/// Not a test: prints the round-trip time of sequential ~200-byte calls between two meshes on
/// loopback. `cargo test -p openclaw-cluster --release mesh_call_rtt -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn mesh_call_rtt() -> Result<(), String> {
    const CALLS: usize = 1000;
    let (addr_a, addr_b) = (
        free_addr().map_err(|e| e.to_string())?,
        free_addr().map_err(|e| e.to_string())?,
    );
    let a = Mesh::start(cfg(41, addr_a, "s"))
        .await
        .map_err(|e| e.to_string())?;
    let b = Mesh::start(cfg(42, addr_b, "s"))
        .await
        .map_err(|e| e.to_string())?;
    a.set_peers(vec![(42, addr_b)]);
    b.set_handler(|_, body| async move { body });
    eventually("connected", || a.is_connected(42)).await?;
    let body = vec![7u8; 200];
    for _ in 0..50 {
        a.call(42, body.clone(), Duration::from_secs(5))
            .await
            .map_err(|e| e.to_string())?;
    }
    let mut rtts = Vec::with_capacity(CALLS);
    let started = Instant::now();
    for _ in 0..CALLS {
        let t = Instant::now();
        let out = a
            .call(42, body.clone(), Duration::from_secs(5))
            .await
            .map_err(|e| e.to_string())?;
        rtts.push(t.elapsed());
        assert_eq!(out.len(), body.len());
    }
    let total = started.elapsed();
    rtts.sort_unstable();
    let pct = |p: usize| rtts[(rtts.len() * p / 100).min(rtts.len() - 1)];
    println!(
        "mesh call rtt: {CALLS} sequential calls of {} bytes in {total:?}: mean {:?}, p50 {:?}, p99 {:?}, max {:?}",
        body.len(),
        total / CALLS as u32,
        pct(50),
        pct(99),
        rtts[rtts.len() - 1],
    );
    a.stop().await;
    b.stop().await;
    Ok(())
}

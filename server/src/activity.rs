//! Log volume bounded per unit of work.
//!
//! At the default level (`info`) a node writes no line per task or per request: per-task lines
//! (`task accepted`, `task started`, `model chosen`, a success) are `debug`. Instead it counts what
//! happened in [`Activity`] and logs one `activity` summary every [`ACTIVITY_LOG_EVERY`] while
//! there is anything to report (throughput, outcomes, rejections, queue depth).
//!
//! Conditions that repeat per request or per heartbeat (a refused rate-limit grant, a budget
//! hold, a failing model, an unreachable peer) go through [`Throttle`]: the first occurrence of a
//! key is logged, then at most one line per [`THROTTLE_EVERY`] carrying how many were suppressed.
//!
//! Libraries that log per RPC (openraft's replication and elections, ractor_cluster's mesh)
//! cannot call [`throttled!`]: [`PeerLogThrottle`], a layer of the node's subscriber, throttles
//! their warnings and errors (and those of our own cluster modules) per call site and peer the
//! same way, and logs how many it suppressed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// How often the activity summary is logged (when there was activity).
pub const ACTIVITY_LOG_EVERY: Duration = Duration::from_secs(10);
/// The least time between two lines for one throttled key.
pub const THROTTLE_EVERY: Duration = Duration::from_secs(10);
/// Keys tracked by one [`Throttle`]; beyond it the stalest key is forgotten (keys are bounded
/// names — scopes, models, peers — so this is only a guard).
pub const THROTTLE_KEYS_MAX: usize = 256;

/// Counters of work since start; the summary logs their differences.
#[derive(Default)]
pub struct Activity {
    pub accepted: AtomicU64,
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    pub cancelled: AtomicU64,
    pub preempted: AtomicU64,
    pub budget_held: AtomicU64,
    pub rejected_queue_full: AtomicU64,
    pub rejected_overloaded: AtomicU64,
    pub chat_calls: AtomicU64,
}

/// The process-wide counters.
pub fn activity() -> &'static Activity {
    static A: OnceLock<Activity> = OnceLock::new();
    A.get_or_init(Activity::default)
}

/// Add one to a counter.
pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub accepted: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub preempted: u64,
    pub budget_held: u64,
    pub rejected_queue_full: u64,
    pub rejected_overloaded: u64,
    pub chat_calls: u64,
}

impl Activity {
    pub fn counts(&self) -> Counts {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counts {
            accepted: r(&self.accepted),
            succeeded: r(&self.succeeded),
            failed: r(&self.failed),
            cancelled: r(&self.cancelled),
            preempted: r(&self.preempted),
            budget_held: r(&self.budget_held),
            rejected_queue_full: r(&self.rejected_queue_full),
            rejected_overloaded: r(&self.rejected_overloaded),
            chat_calls: r(&self.chat_calls),
        }
    }
}

impl Counts {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            accepted: self.accepted.saturating_sub(earlier.accepted),
            succeeded: self.succeeded.saturating_sub(earlier.succeeded),
            failed: self.failed.saturating_sub(earlier.failed),
            cancelled: self.cancelled.saturating_sub(earlier.cancelled),
            preempted: self.preempted.saturating_sub(earlier.preempted),
            budget_held: self.budget_held.saturating_sub(earlier.budget_held),
            rejected_queue_full: self
                .rejected_queue_full
                .saturating_sub(earlier.rejected_queue_full),
            rejected_overloaded: self
                .rejected_overloaded
                .saturating_sub(earlier.rejected_overloaded),
            chat_calls: self.chat_calls.saturating_sub(earlier.chat_calls),
        }
    }

    pub fn is_zero(&self) -> bool {
        *self == Counts::default()
    }
}

/// Should a summary be logged? Only when something happened, or when work is still waiting
/// (a stuck queue must stay visible).
pub fn summary_due(delta: &Counts, queued: usize, running: usize) -> bool {
    !delta.is_zero() || queued > 0 || running > 0
}

/// Log the summary every [`ACTIVITY_LOG_EVERY`] until `shutdown`; `depth` gives (queued, running).
pub async fn log_summaries(
    shutdown: tokio_util::sync::CancellationToken,
    depth: impl Fn() -> (usize, usize),
) {
    let mut tick = tokio::time::interval(ACTIVITY_LOG_EVERY);
    tick.tick().await;
    let mut last = activity().counts();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let now = activity().counts();
        let d = now.since(&last);
        last = now;
        let (queued, running) = depth();
        if !summary_due(&d, queued, running) {
            continue;
        }
        let secs = ACTIVITY_LOG_EVERY.as_secs_f64();
        tracing::info!(
            accepted = d.accepted,
            succeeded = d.succeeded,
            failed = d.failed,
            cancelled = d.cancelled,
            preempted = d.preempted,
            budget_held = d.budget_held,
            rejected_queue_full = d.rejected_queue_full,
            rejected_overloaded = d.rejected_overloaded,
            chat_calls = d.chat_calls,
            finished_per_s = format_args!(
                "{:.1}",
                (d.succeeded + d.failed + d.cancelled) as f64 / secs
            ),
            queued,
            running,
            "activity in the last {}s",
            ACTIVITY_LOG_EVERY.as_secs()
        );
    }
}

/// Per-key state of a [`Throttle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyState {
    /// When the key was last logged (ms on the caller's clock).
    pub last_ms: u64,
    /// Occurrences not logged since then.
    pub suppressed: u64,
}

/// Pure decision: given the key's state (None: never seen) and now, log or not. Returns the new
/// state and, when logging, how many occurrences were suppressed before this one.
pub fn throttle_step(
    state: Option<KeyState>,
    now_ms: u64,
    every_ms: u64,
) -> (KeyState, Option<u64>) {
    match state {
        None => (
            KeyState {
                last_ms: now_ms,
                suppressed: 0,
            },
            Some(0),
        ),
        Some(s) if now_ms.saturating_sub(s.last_ms) >= every_ms => (
            KeyState {
                last_ms: now_ms,
                suppressed: 0,
            },
            Some(s.suppressed),
        ),
        Some(s) => (
            KeyState {
                last_ms: s.last_ms,
                suppressed: s.suppressed + 1,
            },
            None,
        ),
    }
}

/// Rate limit for a repeated log line, keyed by a bounded name (scope, model, peer).
pub struct Throttle {
    every_ms: u64,
    keys: Mutex<BTreeMap<String, KeyState>>,
    epoch: std::time::Instant,
}

impl Throttle {
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            every_ms: every.as_millis() as u64,
            keys: Mutex::new(BTreeMap::new()),
            epoch: std::time::Instant::now(),
        }
    }

    /// `Some(suppressed)` when this occurrence should be logged.
    pub fn check(&self, key: &str) -> Option<u64> {
        let now = self.epoch.elapsed().as_millis() as u64;
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let (next, out) = throttle_step(keys.get(key).copied(), now, self.every_ms);
        if !keys.contains_key(key) && keys.len() >= THROTTLE_KEYS_MAX {
            if let Some(stalest) = keys
                .iter()
                .min_by_key(|(_, s)| s.last_ms)
                .map(|(k, _)| k.clone())
            {
                keys.remove(&stalest);
            }
        }
        keys.insert(key.to_string(), next);
        out
    }

    /// Forget a key (the condition ended), so its next occurrence is logged at once.
    pub fn clear(&self, key: &str) -> Option<u64> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.remove(key).map(|s| s.suppressed)
    }
}

/// A process-wide throttle per call site: `throttled!("site", key)` → `Option<suppressed>`.
#[macro_export]
macro_rules! throttled {
    ($key:expr) => {{
        static T: std::sync::OnceLock<$crate::activity::Throttle> = std::sync::OnceLock::new();
        T.get_or_init(|| $crate::activity::Throttle::new($crate::activity::THROTTLE_EVERY))
            .check($key)
    }};
}

/// Targets whose warnings and errors [`PeerLogThrottle`] throttles: Raft, replication and the
/// mesh, which repeat per RPC while a peer is down.
pub const PEER_LOG_TARGETS: [&str; 5] = [
    "openraft",
    "ractor_cluster",
    "ractor",
    "openclaw_cluster",
    "openclaw_server::cluster",
];

/// Event fields that name a peer; the first one present is the peer when no `http://` address
/// appears in the event.
pub const PEER_FIELDS: [&str; 7] = ["target", "peer", "node", "node_id", "addr", "to", "seed"];

/// The [`PEER_LOG_TARGETS`] entry `target` (a module path) falls under, if any.
pub fn peer_target(target: &str) -> Option<&'static str> {
    PEER_LOG_TARGETS
        .iter()
        .find(|t| target == **t || target.starts_with(&format!("{t}::")))
        .copied()
}

/// Is `target` one [`PeerLogThrottle`] throttles?
pub fn is_peer_target(target: &str) -> bool {
    peer_target(target).is_some()
}

/// The first `host:port` after `http://` or `https://` (`cluster.tls`) in `text` (the peer of
/// a failed RPC).
pub fn peer_address(text: &str) -> Option<&str> {
    let (at, scheme) = match (text.find("http://"), text.find("https://")) {
        (Some(a), Some(b)) if b < a => (b, "https://"),
        (Some(a), _) => (a, "http://"),
        (None, Some(b)) => (b, "https://"),
        (None, None) => return None,
    };
    let rest = &text[at + scheme.len()..];
    let end = rest
        .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == ',')
        .unwrap_or(rest.len());
    Some(&rest[..end]).filter(|a| !a.is_empty())
}

/// A `tracing_subscriber` layer for the libraries that log per RPC: a warning or error of
/// [`PEER_LOG_TARGETS`] is keyed by its library and its peer (the `http://host:port` it names,
/// else a peer field such as openraft's `target`), so every line one dead peer causes — failed
/// appends, progress errors, back-off notices — shares one key. The first line of a key is
/// logged as is; after that, at most one line per [`THROTTLE_EVERY`]: a summary with the
/// number of lines in the period and the latest one's message. Other events pass untouched.
pub struct PeerLogThrottle {
    throttle: Throttle,
}

impl PeerLogThrottle {
    pub fn new(every: Duration) -> PeerLogThrottle {
        PeerLogThrottle {
            throttle: Throttle::new(every),
        }
    }
}

impl Default for PeerLogThrottle {
    fn default() -> Self {
        PeerLogThrottle::new(THROTTLE_EVERY)
    }
}

/// What [`PeerLogThrottle`] reads from an event: its peer and its text.
#[derive(Default)]
struct EventText {
    field_peer: Option<(usize, String)>,
    url_peer: Option<String>,
    message: String,
    fields: String,
}

impl tracing::field::Visit for EventText {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let v = format!("{value:?}");
        if self.url_peer.is_none() {
            self.url_peer = peer_address(&v).map(str::to_string);
        }
        if field.name() == "message" {
            self.message = v;
            return;
        }
        if let Some(rank) = PEER_FIELDS.iter().position(|f| *f == field.name()) {
            if self.field_peer.as_ref().is_none_or(|(r, _)| rank < *r) {
                self.field_peer = Some((rank, v.chars().take(64).collect()));
            }
        }
        if self.fields.len() < 200 {
            self.fields.push_str(&format!(" {}={v}", field.name()));
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PeerLogThrottle {
    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        let meta = event.metadata();
        if *meta.level() > tracing::Level::WARN {
            return true;
        }
        let Some(library) = peer_target(meta.target()) else {
            return true;
        };
        let mut text = EventText::default();
        event.record(&mut text);
        let peer = text
            .url_peer
            .or(text.field_peer.map(|(_, v)| v))
            .unwrap_or_default();
        match self.throttle.check(&format!("{library}|{peer}")) {
            None => false,
            Some(0) => true,
            Some(suppressed) => {
                let mut latest = format!("{}:{}", meta.target(), text.fields);
                if !text.message.is_empty() {
                    latest = format!("{}: {}{}", meta.target(), text.message, text.fields);
                }
                let latest: String = latest.chars().take(300).collect();
                let peer = if peer.is_empty() {
                    "-".to_string()
                } else {
                    peer
                };
                tracing::warn!(
                    target: "openclaw_server::logs",
                    source = library,
                    peer = %peer,
                    lines = suppressed + 1,
                    latest = %latest,
                    "{} warnings about this peer in the last {} s (throttled); the latest follows",
                    suppressed + 1,
                    THROTTLE_EVERY.as_secs()
                );
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_table() {
        // (state before, now, expected logged?, expected suppressed count reported)
        let s = |last_ms, suppressed| {
            Some(KeyState {
                last_ms,
                suppressed,
            })
        };
        let cases: Vec<(Option<KeyState>, u64, Option<u64>, KeyState)> = vec![
            (
                None,
                5,
                Some(0),
                KeyState {
                    last_ms: 5,
                    suppressed: 0,
                },
            ),
            (
                s(0, 0),
                999,
                None,
                KeyState {
                    last_ms: 0,
                    suppressed: 1,
                },
            ),
            (
                s(0, 41),
                999,
                None,
                KeyState {
                    last_ms: 0,
                    suppressed: 42,
                },
            ),
            (
                s(0, 42),
                1000,
                Some(42),
                KeyState {
                    last_ms: 1000,
                    suppressed: 0,
                },
            ),
            (
                s(0, 0),
                5000,
                Some(0),
                KeyState {
                    last_ms: 5000,
                    suppressed: 0,
                },
            ),
        ];
        for (before, now, want_out, want_state) in cases {
            let (st, out) = throttle_step(before, now, 1000);
            assert_eq!(
                (out, st),
                (want_out, want_state),
                "before {before:?} at {now}"
            );
        }
    }

    #[test]
    fn throttle_logs_first_then_one_per_period() {
        let t = Throttle::new(Duration::from_secs(3600));
        assert_eq!(t.check("a"), Some(0));
        for _ in 0..1000 {
            assert_eq!(t.check("a"), None);
        }
        assert_eq!(t.check("b"), Some(0), "keys are independent");
        assert_eq!(t.clear("a"), Some(1000));
        assert_eq!(t.check("a"), Some(0), "a cleared key logs at once");
    }

    #[test]
    fn peer_targets() {
        for (t, want) in [
            ("openraft", true),
            ("openraft::replication", true),
            ("openraft_x", false),
            ("ractor_cluster::node::client", true),
            ("openclaw_server::cluster::net", true),
            ("openclaw_server::tasks::worker", false),
            ("openclaw_server::logs", false),
        ] {
            assert_eq!(is_peer_target(t), want, "{t}");
        }
        for (text, want) in [
            (
                "Unreachable node: PeerError: http://127.0.0.4:7100/raft/append unreachable",
                Some("127.0.0.4:7100"),
            ),
            ("http://gw-1:7000", Some("gw-1:7000")),
            (
                "PeerError: https://127.0.0.3:7000/raft/vote: error sending request",
                Some("127.0.0.3:7000"),
            ),
            ("https://gw-1:7000 then http://gw-2:7000", Some("gw-1:7000")),
            ("no address", None),
            ("http:// nothing", None),
        ] {
            assert_eq!(peer_address(text), want, "{text}");
        }
    }

    /// A dead peer's repeated warnings through a real subscriber: the first line per (site,
    /// peer), then nothing within the period; another peer is independent; info passes.
    #[test]
    fn peer_log_throttle_layer() {
        use tracing_subscriber::layer::SubscriberExt;
        #[derive(Clone, Default)]
        struct Lines(std::sync::Arc<Mutex<Vec<String>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(String::from_utf8_lossy(b).into_owned());
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let out = lines.clone();
        let subscriber = tracing_subscriber::registry()
            .with(PeerLogThrottle::new(Duration::from_secs(3600)))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(move || out.clone()),
            );
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..100 {
                for peer in [2u64, 3] {
                    tracing::warn!(target: "openraft::replication", target = peer, "append entries failed");
                }
                // Another call site about the same dead peer, naming its address: one key.
                tracing::error!(target: "openraft::engine", err = "http://127.0.0.4:7100/raft/append unreachable", "rpc error");
                tracing::warn!(target: "openraft::replication", target = 4u64, error = "http://127.0.0.4:7100/raft/append unreachable", "replication failed");
                tracing::info!(target: "openraft::replication", "info passes");
                tracing::warn!(target: "openclaw_server::tasks", "not a peer target");
            }
        });
        let all = lines.0.lock().unwrap().clone();
        let count = |needle: &str| all.iter().filter(|l| l.contains(needle)).count();
        assert_eq!(count("append entries failed"), 2, "{all:?}");
        assert_eq!(count("target=2"), 1);
        assert_eq!(
            count("rpc error") + count("replication failed"),
            1,
            "{all:?}"
        );
        assert_eq!(count("info passes"), 100);
        assert_eq!(count("not a peer target"), 100);
    }

    #[test]
    fn throttle_keys_are_bounded() {
        let t = Throttle::new(Duration::from_secs(3600));
        for i in 0..(THROTTLE_KEYS_MAX * 3) {
            t.check(&format!("k{i}"));
        }
        let n = t.keys.lock().map(|k| k.len()).unwrap_or(0);
        assert_eq!(n, THROTTLE_KEYS_MAX);
    }

    #[test]
    fn summary_only_with_activity_or_waiting_work() {
        let zero = Counts::default();
        assert!(!summary_due(&zero, 0, 0));
        assert!(summary_due(&zero, 3, 0), "a stuck queue stays visible");
        assert!(summary_due(&zero, 0, 1));
        let one = Counts {
            rejected_queue_full: 1,
            ..zero
        };
        assert!(summary_due(&one, 0, 0));
        let later = Counts {
            accepted: 10,
            succeeded: 7,
            ..zero
        };
        let earlier = Counts {
            accepted: 4,
            succeeded: 7,
            ..zero
        };
        assert_eq!(
            later.since(&earlier),
            Counts {
                accepted: 6,
                ..zero
            }
        );
    }
}

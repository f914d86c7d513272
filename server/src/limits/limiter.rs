//! One rate-limiter actor per scope that has limits: each configured model in
//! `rate_limiting.per_model`, plus `global`. It owns the scope's sliding window
//! ([`crate::limits::window::Window`]) and the queue of waiters.
//!
//! Over the limit, work *waits*: waiters are granted in priority order (FIFO within a level) as
//! the window frees room — on every `Release`/`Settle` and on a timer tick every
//! [`LIMITER_TICK_MS`]. A waiter is refused (`rate_limited`, with a retry-after) only when its
//! deadline passes, when the known wait already exceeds its deadline, or when
//! [`LIMITER_WAITERS_MAX`] waiters are queued. A provider 429 (`Backoff`) stops all grants for
//! `backoff_delay(consecutive 429s)`; a settled (successful) call resets the count.
//!
//! Limits are read from the current config on every decision (hot reload). State is rebuildable:
//! after a restart the window starts empty (at most one window's worth of calls can pass twice).
//! Invariant: handlers only touch memory; callers await replies outside the actor.

use std::collections::BTreeMap;
use std::time::Duration;

use openclaw_proto::ops::LimitScopeView;
use openclaw_proto::Priority;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;

use crate::config::ConfigCell;
use crate::limits::window::{backoff_delay, Denied, Limits, Window};
use crate::limits::Backoffs;
use crate::metrics::metrics;
use crate::util::Mono;

/// The scope name of `rate_limiting.global`.
pub const GLOBAL: &str = "global";
/// Waiters one limiter queues; beyond it an acquisition is refused at once (`rate_limited`).
pub const LIMITER_WAITERS_MAX: usize = 10_000;
/// How often a limiter re-checks its waiters (grants and deadlines).
pub const LIMITER_TICK_MS: u64 = 50;
/// Retry-After given when the wait cannot be estimated (concurrency, too many waiters).
pub const UNKNOWN_RETRY_MS: u64 = 1_000;

/// Why an acquisition was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedWhy {
    /// The wait would pass (or passed) the caller's deadline.
    Deadline,
    /// [`LIMITER_WAITERS_MAX`] waiters are queued already.
    TooManyWaiters,
    /// A no-wait probe found no room.
    NoRoom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub why: RefusedWhy,
    pub retry_after_ms: u64,
}

pub enum LimiterMsg {
    /// Ask for a grant of `tokens`; waits until `deadline_ms` (node-monotonic ms) unless
    /// `wait` is false (then answered at once).
    Acquire {
        priority: Priority,
        tokens: u64,
        deadline_ms: u64,
        wait: bool,
        reply: oneshot::Sender<Result<u64, Refused>>,
    },
    /// The call of grant `id` used `tokens` (real count); it succeeded.
    Settle {
        id: u64,
        tokens: u64,
    },
    /// The call of grant `id` ended.
    Release {
        id: u64,
    },
    /// The grant `id` was not used (undo it).
    Cancel {
        id: u64,
    },
    /// The provider answered 429: back off.
    Backoff {
        retry_after: Option<Duration>,
    },
    Tick,
    Snapshot {
        reply: oneshot::Sender<LimitScopeView>,
    },
}
impl ractor::Message for LimiterMsg {}

/// The limits of `scope` in `cfg` (none when the scope has no limits any more).
pub fn scope_limits(cfg: &crate::config::Config, scope: &str) -> Limits {
    let rl = &cfg.rate_limiting;
    let l = if scope == GLOBAL {
        Some(&rl.global)
    } else {
        rl.per_model.get(scope)
    };
    l.map(|l| Limits::from_config(l, rl.window_seconds))
        .unwrap_or(Limits {
            window_ms: rl.window_seconds.max(1) * 1000,
            ..Limits::default()
        })
}

struct Waiter {
    tokens: u64,
    deadline_ms: u64,
    since_ms: u64,
    reply: oneshot::Sender<Result<u64, Refused>>,
}

pub struct LimiterState {
    cfg: ConfigCell,
    mono: Mono,
    backoffs: Backoffs,
    scope: String,
    window: Window,
    /// By (priority level, arrival seq): the first is the next to grant.
    waiters: BTreeMap<(u8, u64), Waiter>,
    seq: u64,
    consecutive_429s: u32,
}

impl LimiterState {
    fn limits(&self) -> Limits {
        scope_limits(&self.cfg.get(), &self.scope)
    }

    /// Grant waiters in order while the window allows, then refuse those past their deadline.
    fn pump(&mut self) {
        let now = self.mono.ms();
        let l = self.limits();
        let m = metrics();
        self.waiters.retain(|_, w| !w.reply.is_closed());
        while let Some(entry) = self.waiters.first_entry() {
            match self.window.try_grant(now, entry.get().tokens, &l) {
                Ok(id) => {
                    let w = entry.remove();
                    m.rate_limit_wait_seconds
                        .with_label_values(&[&self.scope])
                        .observe(now.saturating_sub(w.since_ms) as f64 / 1000.0);
                    if w.reply.send(Ok(id)).is_err() {
                        self.window.cancel(id);
                    }
                }
                Err(_) => break,
            }
        }
        if self.waiters.is_empty() {
            return;
        }
        let retry_after_ms = match self.window.check(now, 0, &l) {
            Err(Denied::RetryIn(ms)) => ms,
            _ => UNKNOWN_RETRY_MS,
        };
        let expired: Vec<(u8, u64)> = self
            .waiters
            .iter()
            .filter(|(_, w)| w.deadline_ms <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            if let Some(w) = self.waiters.remove(&k) {
                m.rate_limit_rejections_total
                    .with_label_values(&[&self.scope])
                    .inc();
                if let Some(suppressed) = crate::throttled!(&self.scope) {
                    tracing::info!(scope = %self.scope, retry_after_ms, suppressed, "rate-limit wait reached its deadline");
                }
                let _ = w.reply.send(Err(Refused {
                    why: RefusedWhy::Deadline,
                    retry_after_ms,
                }));
            }
        }
    }

    fn acquire(
        &mut self,
        priority: Priority,
        tokens: u64,
        deadline_ms: u64,
        wait: bool,
        reply: oneshot::Sender<Result<u64, Refused>>,
    ) {
        let now = self.mono.ms();
        let l = self.limits();
        let m = metrics();
        let ahead = self
            .waiters
            .keys()
            .next()
            .is_some_and(|(lvl, _)| *lvl <= priority.level());
        let denied = if ahead {
            // Someone of the same or a higher priority waits already: queue behind them.
            self.window
                .check(now, tokens, &l)
                .err()
                .or(Some(Denied::Busy))
        } else {
            match self.window.try_grant(now, tokens, &l) {
                Ok(id) => {
                    if wait {
                        m.rate_limit_wait_seconds
                            .with_label_values(&[&self.scope])
                            .observe(0.0);
                    }
                    if reply.send(Ok(id)).is_err() {
                        self.window.cancel(id);
                    }
                    return;
                }
                Err(d) => Some(d),
            }
        };
        let refuse = |why, retry_after_ms| Refused {
            why,
            retry_after_ms,
        };
        let known = match denied {
            Some(Denied::RetryIn(ms)) => Some(ms),
            _ => None,
        };
        if !wait {
            let _ = reply.send(Err(refuse(
                RefusedWhy::NoRoom,
                known.unwrap_or(UNKNOWN_RETRY_MS),
            )));
            return;
        }
        let rejected = if known.is_some_and(|ms| now + ms > deadline_ms) || deadline_ms <= now {
            Some(refuse(
                RefusedWhy::Deadline,
                known.unwrap_or(UNKNOWN_RETRY_MS),
            ))
        } else if self.waiters.len() >= LIMITER_WAITERS_MAX {
            Some(refuse(
                RefusedWhy::TooManyWaiters,
                known.unwrap_or(UNKNOWN_RETRY_MS),
            ))
        } else {
            None
        };
        if let Some(r) = rejected {
            m.rate_limit_rejections_total
                .with_label_values(&[&self.scope])
                .inc();
            if let Some(suppressed) = crate::throttled!(&self.scope) {
                tracing::info!(scope = %self.scope, why = ?r.why, retry_after_ms = r.retry_after_ms, suppressed, "rate limit refused");
            }
            let _ = reply.send(Err(r));
            return;
        }
        m.rate_limit_waits_total
            .with_label_values(&[&self.scope])
            .inc();
        self.seq += 1;
        self.waiters.insert(
            (priority.level(), self.seq),
            Waiter {
                tokens,
                deadline_ms,
                since_ms: now,
                reply,
            },
        );
        self.pump();
    }

    fn snapshot(&mut self) -> LimitScopeView {
        let now = self.mono.ms();
        let l = self.limits();
        let h = self.window.headroom(now, &l);
        LimitScopeView {
            scope: self.scope.clone(),
            window_seconds: l.window_ms / 1000,
            requests_per_window: l.requests,
            tokens_per_window: l.tokens,
            concurrent_requests: l.concurrent,
            requests_in_window: h.requests_in_window,
            tokens_in_window: h.tokens_in_window,
            remaining_requests: h.remaining_requests,
            remaining_tokens: h.remaining_tokens,
            in_flight: h.in_flight,
            waiters: self.waiters.len(),
            backoff_ms: h.blocked_ms,
            consecutive_429s: self.consecutive_429s,
        }
    }
}

#[derive(Clone)]
pub struct LimiterArgs {
    pub cfg: ConfigCell,
    pub mono: Mono,
    /// Where this limiter publishes its back-off, read by callers of models without limits.
    pub backoffs: Backoffs,
    pub scope: String,
}

#[derive(Clone)]
pub struct Limiter;

impl Actor for Limiter {
    type Msg = LimiterMsg;
    type State = LimiterState;
    type Arguments = LimiterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: LimiterArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(Duration::from_millis(LIMITER_TICK_MS), || LimiterMsg::Tick);
        // The scope's series exist from the start (zeros rather than no data).
        let m = metrics();
        m.rate_limit_waits_total.with_label_values(&[&args.scope]);
        m.rate_limit_rejections_total
            .with_label_values(&[&args.scope]);
        Ok(LimiterState {
            cfg: args.cfg,
            mono: args.mono,
            backoffs: args.backoffs,
            scope: args.scope,
            window: Window::new(),
            waiters: BTreeMap::new(),
            seq: 0,
            consecutive_429s: 0,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            LimiterMsg::Acquire {
                priority,
                tokens,
                deadline_ms,
                wait,
                reply,
            } => st.acquire(priority, tokens, deadline_ms, wait, reply),
            LimiterMsg::Settle { id, tokens } => {
                st.window.settle(id, tokens);
                st.consecutive_429s = 0;
                st.pump();
            }
            LimiterMsg::Release { id } => {
                if st.window.release(id) {
                    st.pump();
                }
            }
            LimiterMsg::Cancel { id } => {
                st.window.cancel(id);
                st.pump();
            }
            LimiterMsg::Backoff { retry_after } => {
                st.consecutive_429s = st.consecutive_429s.saturating_add(1);
                let jitter: f64 = rand::random_range(-1.0..=1.0);
                let delay = backoff_delay(
                    st.consecutive_429s,
                    &st.cfg.get().rate_limiting.backoff,
                    retry_after,
                    jitter,
                );
                let now = st.mono.ms();
                let until = now + delay.as_millis() as u64;
                st.window.block_until(until);
                st.backoffs.set_until(&st.scope, until);
                if let Some(suppressed) = crate::throttled!(&st.scope) {
                    tracing::warn!(
                        scope = %st.scope,
                        consecutive = st.consecutive_429s,
                        delay_ms = delay.as_millis() as u64,
                        suppressed,
                        "provider rate limited; backing off"
                    );
                }
            }
            LimiterMsg::Tick => {
                if !st.waiters.is_empty() {
                    st.pump();
                }
            }
            LimiterMsg::Snapshot { reply } => {
                let _ = reply.send(st.snapshot());
            }
        }
        Ok(())
    }
}

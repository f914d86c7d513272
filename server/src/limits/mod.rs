//! Rate limits (§18.4): the sliding-window arithmetic (pure, [`window`]), one limiter actor per
//! scope ([`limiter`]), and [`RateLimits`], the handle callers use: [`RateLimits::acquire`] a
//! [`Permit`] for one model call (the model's scope and `global`), [`Permit::settle`] it with
//! the real token count, drop it to release the concurrency slot; [`RateLimits::note_429`]
//! backs a model off; [`RateLimits::snapshot`] reads headroom. In a cluster the per-window
//! quotas are shared through the [`SharedRate`] seam, which cluster mode implements.
//!
//! Fast path: when neither the model nor `global` has a limit configured, `acquire` returns an
//! empty permit without any actor round trip.
//!
//! Two scopes are taken so that neither window records a call that waits on the other: the
//! model's grant first (waiting), then `global` without waiting; when `global` has no room the
//! model's grant is cancelled (undone, not released), `global` is waited for, and the model's
//! taken without waiting — repeated until both hold at the same moment or the deadline passes.

pub mod limiter;
pub mod window;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openclaw_proto::openai::ChatMessage;
use openclaw_proto::Priority;
use ractor::ActorRef;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::config::ConfigCell;
use crate::supervisor::CurrentMap;
use crate::util::Mono;
use limiter::{scope_limits, LimiterMsg, Refused, RefusedWhy, GLOBAL};
use openclaw_proto::ops::LimitScopeView;

/// Output tokens reserved for a call without `max_tokens` (settled to the real count after).
pub const DEFAULT_OUTPUT_ESTIMATE: u64 = 512;
/// How often a caller looks again for a limiter that is restarting.
const LIMITER_ABSENT_RETRY_MS: u64 = 20;
/// Pause before waiting on the other scope (no busy loop between two full scopes).
const SWAP_PAUSE_MS: u64 = 5;
/// A grant not answered within this long counts as waiting (shown in the caller's [`WaitNote`]);
/// a grant with room answers in far less.
pub const WAIT_NOTE_AFTER_MS: u64 = 20;

/// Where a caller's owner can see what its call is doing: the model it calls now (set by the
/// fallback chain), and the rate-limit scope while it waits for a grant (the task view shows it
/// as `waiting_reason: "rate_limited"`).
#[derive(Debug, Clone, Default)]
pub struct WaitNote(Arc<Mutex<NoteState>>);

#[derive(Debug, Clone, Default)]
struct NoteState {
    model: Option<String>,
    scope: Option<String>,
}

impl WaitNote {
    fn lock(&self) -> std::sync::MutexGuard<'_, NoteState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub fn set(&self, scope: Option<&str>) {
        self.lock().scope = scope.map(str::to_string);
    }
    pub fn set_model(&self, model: &str) {
        self.lock().model = Some(model.to_string());
    }
    /// The scope waited for now, if any.
    pub fn scope(&self) -> Option<String> {
        self.lock().scope.clone()
    }
    /// The model called (or waited for) now, if any.
    pub fn model(&self) -> Option<String> {
        self.lock().model.clone()
    }
}

/// Clears a [`WaitNote`] when the wait ends however it ends (also when the future is dropped).
struct Waiting<'a>(Option<&'a WaitNote>);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.0 {
            n.set(None);
        }
    }
}

/// Tokens to reserve for a call: the prompt's plus `max_tokens` (or the default estimate).
pub fn estimate_tokens(messages: &[ChatMessage], max_tokens: Option<u32>) -> u64 {
    crate::tokens::count_messages(messages) as u64
        + max_tokens.map(u64::from).unwrap_or(DEFAULT_OUTPUT_ESTIMATE)
}

/// A rate-limit refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("rate limit of {scope} (gateway): {reason}; retry after {retry_after:?}")]
    RateLimited {
        scope: String,
        reason: &'static str,
        retry_after: Duration,
    },
}

impl LimitError {
    pub fn retry_after(&self) -> Duration {
        match self {
            LimitError::RateLimited { retry_after, .. } => *retry_after,
        }
    }

    /// Whole seconds for `Retry-After` (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after().as_millis().div_ceil(1000).max(1) as u64
    }

    fn from_refused(scope: &str, r: Refused) -> LimitError {
        LimitError::RateLimited {
            scope: scope.to_string(),
            reason: match r.why {
                RefusedWhy::Deadline => "the wait for a grant would pass the deadline",
                RefusedWhy::TooManyWaiters => "too many callers are waiting for this limiter",
                RefusedWhy::NoRoom => "no room",
            },
            retry_after: Duration::from_millis(r.retry_after_ms),
        }
    }
}

/// Until when (node-monotonic ms) each scope is backed off after a provider 429: written by
/// the scope's limiter, read by [`RateLimits::acquire`] to send calls of a model that has no
/// limits of its own through its limiter while it is backed off. Keys are configured scopes.
#[derive(Clone, Default)]
pub struct Backoffs {
    until: Arc<Mutex<HashMap<String, u64>>>,
}

impl Backoffs {
    pub fn set_until(&self, scope: &str, until_mono_ms: u64) {
        self.until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(scope.to_string(), until_mono_ms);
    }
    /// Is `scope` backed off at `now_mono_ms`?
    pub fn backed_off(&self, scope: &str, now_mono_ms: u64) -> bool {
        self.until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(scope)
            .is_some_and(|until| now_mono_ms < *until)
    }
}

/// The seam to cluster-wide quotas: in a cluster every call also takes one request and its
/// estimated tokens from this node's share of each limited scope's window. Cluster mode
/// implements it; a node alone has none.
/// A scope's limits as the config has them now.
pub type LimitsOf = dyn for<'a> Fn(&'a str) -> window::Limits + Send + Sync;

#[async_trait::async_trait]
pub trait SharedRate: Send + Sync {
    /// Take one request and `tokens` from every limited scope of `scopes`, waiting (for more
    /// quota) until `deadline` at the latest. `limits` gives a scope's limits as the config has
    /// them *now*: a wait reads them again each time it asks, so a hot-reloaded limit (raised or
    /// lowered) applies to calls already waiting.
    async fn acquire(
        &self,
        scopes: &[String],
        limits: &LimitsOf,
        tokens: u64,
        deadline: tokio::time::Instant,
    ) -> Result<(), LimitError>;
}

/// The handle to the rate limiters.
#[derive(Clone)]
pub struct RateLimits {
    pub cfg: ConfigCell,
    pub mono: Mono,
    pub limiters: CurrentMap<LimiterMsg>,
    pub backoffs: Backoffs,
    pub shutdown: CancellationToken,
    /// Cluster-wide quotas (cluster mode only).
    pub shared: Option<Arc<dyn SharedRate>>,
}

/// Grants held for one call. Dropping it releases them (concurrency).
#[derive(Default)]
pub struct Permit {
    grants: Vec<(ActorRef<LimiterMsg>, u64)>,
}

impl Permit {
    /// Whether any limiter was involved.
    pub fn is_limited(&self) -> bool {
        !self.grants.is_empty()
    }

    /// The call succeeded and used `actual_tokens` (input + output): adjust the reservations.
    pub fn settle(&self, actual_tokens: u64) {
        for (r, id) in &self.grants {
            let _ = r.cast(LimiterMsg::Settle {
                id: *id,
                tokens: actual_tokens,
            });
        }
    }

    fn cancel(mut self) {
        for (r, id) in self.grants.drain(..) {
            let _ = r.cast(LimiterMsg::Cancel { id });
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        for (r, id) in self.grants.drain(..) {
            let _ = r.cast(LimiterMsg::Release { id });
        }
    }
}

/// The scopes a call of `model` must pass: the model's when it has limits or is backed off
/// after a provider 429 (`backed_off`), and `global` when it has limits. Empty = the fast path.
pub fn scopes_for(cfg: &crate::config::Config, model: &str, backed_off: bool) -> Vec<String> {
    let mut v = Vec::new();
    let limited = cfg.rate_limiting.per_model.contains_key(model) && scope_limits(cfg, model).any();
    if limited || backed_off {
        v.push(model.to_string());
    }
    if scope_limits(cfg, GLOBAL).any() {
        v.push(GLOBAL.to_string());
    }
    v
}

impl RateLimits {
    /// One scope's grant: `Ok(None)` when the scope has no running limiter (not limited).
    async fn acquire_one(
        &self,
        scope: &str,
        priority: Priority,
        tokens: u64,
        deadline_ms: u64,
        wait: bool,
        note: Option<&WaitNote>,
    ) -> Result<Option<(ActorRef<LimiterMsg>, u64)>, LimitError> {
        loop {
            let Some(r) = self.limiters.get(scope) else {
                // Never started (limits added by a reload need a restart): not limited here.
                return Ok(None);
            };
            let (tx, rx) = oneshot::channel();
            let sent = r.cast(LimiterMsg::Acquire {
                priority,
                tokens,
                deadline_ms,
                wait,
                reply: tx,
            });
            if sent.is_ok() {
                let mut pending = PendingGrant {
                    rx: Some(rx),
                    limiter: r.clone(),
                };
                let quick =
                    tokio::time::timeout(Duration::from_millis(WAIT_NOTE_AFTER_MS), pending.recv())
                        .await;
                let got = match quick {
                    Ok(got) => got,
                    Err(_) => {
                        // Still no answer: the call waits for this scope; say so until it ends.
                        let _waiting = Waiting(note);
                        if let Some(n) = note {
                            n.set(Some(scope));
                        }
                        pending.recv().await
                    }
                };
                match got {
                    Ok(Ok(id)) => return Ok(Some((r, id))),
                    Ok(Err(refused)) => return Err(LimitError::from_refused(scope, refused)),
                    Err(_) => {} // the limiter stopped while we waited: ask its next incarnation
                }
            }
            if self.mono.ms() >= deadline_ms || self.shutdown.is_cancelled() {
                return Err(LimitError::RateLimited {
                    scope: scope.to_string(),
                    reason: "the limiter is restarting",
                    retry_after: Duration::from_secs(1),
                });
            }
            tokio::time::sleep(Duration::from_millis(LIMITER_ABSENT_RETRY_MS)).await;
        }
    }
}

/// A grant being waited for. If the waiting future is dropped (the task was cancelled or
/// preempted) after the limiter sent the grant but before it was read, the grant is undone
/// here, so no concurrency slot leaks.
struct PendingGrant {
    rx: Option<oneshot::Receiver<Result<u64, Refused>>>,
    limiter: ActorRef<LimiterMsg>,
}

impl PendingGrant {
    async fn recv(&mut self) -> Result<Result<u64, Refused>, oneshot::error::RecvError> {
        let Some(rx) = self.rx.as_mut() else {
            return Ok(Err(Refused {
                why: RefusedWhy::NoRoom,
                retry_after_ms: 0,
            }));
        };
        let got = rx.await;
        self.rx = None;
        got
    }
}

impl Drop for PendingGrant {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if let Ok(Ok(id)) = rx.try_recv() {
                let _ = self.limiter.cast(LimiterMsg::Cancel { id });
            }
        }
    }
}

impl RateLimits {
    /// Acquire the grants for one call of `model` reserving `tokens`, waiting (in `priority`
    /// order) until `deadline_ms` (node-monotonic, [`Mono::ms`]) at the latest. While it waits
    /// for a scope, `note` names that scope.
    pub async fn acquire(
        &self,
        model: &str,
        priority: Priority,
        tokens: u64,
        deadline_ms: u64,
        note: Option<&WaitNote>,
    ) -> Result<Permit, LimitError> {
        let permit = self
            .acquire_local(model, priority, tokens, deadline_ms, note)
            .await?;
        // In a cluster the per-window quotas are shared: take this call from the node's share
        // (the local limiter above still paces and bounds concurrency on this node).
        if let Some(shared) = &self.shared {
            let scopes: Vec<String> = scopes_for(&self.cfg.get(), model, false);
            let cfg = self.cfg.clone();
            let limits = move |scope: &str| scope_limits(&cfg.get(), scope);
            if !scopes.is_empty() {
                let left = Duration::from_millis(deadline_ms.saturating_sub(self.mono.ms()));
                let deadline = tokio::time::Instant::now() + left;
                let shared_call = shared.acquire(&scopes, &limits, tokens, deadline);
                tokio::pin!(shared_call);
                let quick = tokio::time::timeout(
                    Duration::from_millis(WAIT_NOTE_AFTER_MS),
                    &mut shared_call,
                )
                .await;
                match quick {
                    Ok(r) => r?,
                    Err(_) => {
                        let _waiting = Waiting(note);
                        if let Some(n) = note {
                            n.set(scopes.first().map(String::as_str));
                        }
                        shared_call.await?
                    }
                }
            }
        }
        Ok(permit)
    }

    async fn acquire_local(
        &self,
        model: &str,
        priority: Priority,
        tokens: u64,
        deadline_ms: u64,
        note: Option<&WaitNote>,
    ) -> Result<Permit, LimitError> {
        let backed_off = self.backoffs.backed_off(model, self.mono.ms());
        let scopes = scopes_for(&self.cfg.get(), model, backed_off);
        let mut permit = Permit::default();
        match scopes.as_slice() {
            [] => Ok(permit),
            [one] => {
                if let Some(g) = self
                    .acquire_one(one, priority, tokens, deadline_ms, true, note)
                    .await?
                {
                    permit.grants.push(g);
                }
                Ok(permit)
            }
            [first, second, ..] => {
                let (mut waited, mut probed) = (first, second);
                loop {
                    let mut p = Permit::default();
                    if let Some(g) = self
                        .acquire_one(waited, priority, tokens, deadline_ms, true, note)
                        .await?
                    {
                        p.grants.push(g);
                    }
                    match self
                        .acquire_one(probed, priority, tokens, deadline_ms, false, None)
                        .await
                    {
                        Ok(g) => {
                            p.grants.extend(g);
                            return Ok(p);
                        }
                        Err(_) => {
                            // Do not let `waited`'s window count a call that now waits on
                            // `probed`.
                            p.cancel();
                            std::mem::swap(&mut waited, &mut probed);
                            tokio::time::sleep(Duration::from_millis(SWAP_PAUSE_MS)).await;
                        }
                    }
                }
            }
        }
    }

    /// A 429 from the provider of `model`: back its limiter off (when it has one).
    pub fn note_429(&self, model: &str, retry_after: Option<Duration>) {
        if let Some(r) = self.limiters.get(model) {
            let _ = r.cast(LimiterMsg::Backoff { retry_after });
        }
    }

    /// Headroom of every running limiter, sorted by scope (`GET /api/limits`).
    pub async fn snapshot(&self) -> Vec<LimitScopeView> {
        let mut out = Vec::new();
        for scope in self.limiters.names() {
            let Some(r) = self.limiters.get(&scope) else {
                continue;
            };
            let (tx, rx) = oneshot::channel();
            if r.cast(LimiterMsg::Snapshot { reply: tx }).is_err() {
                continue;
            }
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(2), rx).await {
                out.push(s);
            }
        }
        out
    }
}

/// How long a call may wait for grants: `rate_limiting.max_wait_ms`, capped by
/// `model_fallback.timeout_ms` for a direct chat call (`task == false`).
pub fn max_wait(cfg: &crate::config::Config, task: bool) -> Duration {
    let w = cfg.rate_limiting.max_wait_ms;
    Duration::from_millis(if task {
        w
    } else {
        w.min(cfg.model_fallback.timeout_ms)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, RateLimit};

    #[test]
    fn scopes_table() {
        let mut cfg = Config::default();
        assert!(
            scopes_for(&cfg, "gpt-4o", false).is_empty(),
            "no limits: fast path"
        );
        cfg.rate_limiting.per_model.insert(
            "gpt-4o".into(),
            RateLimit {
                requests_per_minute: Some(20),
                ..Default::default()
            },
        );
        cfg.rate_limiting
            .per_model
            .insert("gpt-4o-mini".into(), RateLimit::default());
        assert_eq!(scopes_for(&cfg, "gpt-4o", false), ["gpt-4o"]);
        assert!(
            scopes_for(&cfg, "gpt-4o-mini", false).is_empty(),
            "empty limits"
        );
        cfg.rate_limiting.global.concurrent_requests = Some(5);
        assert_eq!(scopes_for(&cfg, "gpt-4o", false), ["gpt-4o", GLOBAL]);
        assert_eq!(scopes_for(&cfg, "deepseek-v3", false), [GLOBAL]);
        assert_eq!(
            scopes_for(&cfg, "deepseek-v3", true),
            ["deepseek-v3", GLOBAL],
            "backed off"
        );
    }

    #[test]
    fn retry_after_rounds_up() {
        let e = |ms| LimitError::RateLimited {
            scope: "m".into(),
            reason: "r",
            retry_after: Duration::from_millis(ms),
        };
        assert_eq!(e(0).retry_after_secs(), 1);
        assert_eq!(e(1000).retry_after_secs(), 1);
        assert_eq!(e(1001).retry_after_secs(), 2);
        assert_eq!(e(29_500).retry_after_secs(), 30);
    }

    #[test]
    fn max_wait_for_chat_is_capped_by_the_timeout() {
        let mut cfg = Config::default();
        cfg.rate_limiting.max_wait_ms = 10_000;
        cfg.model_fallback.timeout_ms = 2_000;
        assert_eq!(max_wait(&cfg, true), Duration::from_millis(10_000));
        assert_eq!(max_wait(&cfg, false), Duration::from_millis(2_000));
    }
}

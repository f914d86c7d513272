//! Pure rate-limit arithmetic (§18.4 `rate_limiting`): an exact sliding-window limiter for one
//! scope (a model, or `global`) and the exponential back-off after a provider's 429.
//!
//! The window is a log of grants `(id, at_ms, tokens)`: a request is granted when the grants of
//! the last `window_ms` number fewer than `requests` and their tokens plus this request's stay
//! within `tokens`, and fewer than `concurrent` grants are still in flight. Unlike a token bucket
//! holding a full minute of burst, no window of `window_ms` ever holds more than the limit.
//! A grant reserves an estimate; `settle` replaces it with the real count afterwards.
//!
//! The limits passed in are the *local allowance*: today the configured limit; in a cluster the
//! slice leased to this node. Nothing here reads the clock or does I/O — time is an argument.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::config::Backoff;

/// One scope's limits over `window_ms` (`None`: no limit of that kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    pub requests: Option<u32>,
    pub tokens: Option<u64>,
    pub concurrent: Option<u32>,
    pub window_ms: u64,
}

impl Limits {
    pub fn from_config(l: &crate::config::RateLimit, window_seconds: u64) -> Limits {
        Limits {
            requests: l.requests_per_minute,
            tokens: l.tokens_per_minute,
            concurrent: l.concurrent_requests,
            window_ms: window_seconds.max(1) * 1000,
        }
    }

    /// Whether any limit is set (a scope without one needs no limiter).
    pub fn any(&self) -> bool {
        self.requests.is_some() || self.tokens.is_some() || self.concurrent.is_some()
    }
}

/// Why a request cannot be granted now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The window (or a back-off) frees room in this many milliseconds.
    RetryIn(u64),
    /// Concurrency is exhausted: room comes with a release, at an unknown time.
    Busy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Grant {
    at_ms: u64,
    tokens: u64,
}

/// The sliding-window state of one scope.
#[derive(Debug, Default, Clone)]
pub struct Window {
    /// Grants still inside the window, by id (ids grow with time).
    log: BTreeMap<u64, Grant>,
    tokens_in_log: u64,
    in_flight: BTreeSet<u64>,
    next_id: u64,
    /// No grant before this time (provider back-off).
    blocked_until_ms: u64,
}

/// Headroom of a scope at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Headroom {
    pub requests_in_window: u64,
    pub tokens_in_window: u64,
    pub in_flight: u64,
    pub remaining_requests: Option<u64>,
    pub remaining_tokens: Option<u64>,
    pub blocked_ms: u64,
}

impl Window {
    pub fn new() -> Window {
        Window::default()
    }

    fn prune(&mut self, now_ms: u64, window_ms: u64) {
        while let Some((&id, g)) = self.log.first_key_value() {
            if g.at_ms + window_ms > now_ms {
                break;
            }
            self.tokens_in_log = self.tokens_in_log.saturating_sub(g.tokens);
            self.log.remove(&id);
        }
    }

    /// Whether a request of `tokens` could be granted at `now_ms`, and if not, when.
    pub fn check(&mut self, now_ms: u64, tokens: u64, l: &Limits) -> Result<(), Denied> {
        self.prune(now_ms, l.window_ms);
        let mut wait = 0u64;
        if self.blocked_until_ms > now_ms {
            wait = self.blocked_until_ms - now_ms;
        }
        if let Some(rpm) = l.requests {
            let n = self.log.len() as u64;
            if n >= u64::from(rpm) {
                // The oldest grants that must leave for one more to fit.
                let leave = (n + 1 - u64::from(rpm)) as usize;
                if let Some(g) = self.log.values().nth(leave - 1) {
                    wait = wait.max(g.at_ms + l.window_ms - now_ms);
                }
            }
        }
        if let Some(tpm) = l.tokens {
            // A request larger than the whole allowance waits for an empty window.
            let need = tokens.min(tpm);
            if self.tokens_in_log + need > tpm {
                let mut left = self.tokens_in_log;
                for g in self.log.values() {
                    left = left.saturating_sub(g.tokens);
                    if left + need <= tpm {
                        wait = wait.max(g.at_ms + l.window_ms - now_ms);
                        break;
                    }
                }
            }
        }
        if wait > 0 {
            return Err(Denied::RetryIn(wait));
        }
        if let Some(c) = l.concurrent {
            if self.in_flight.len() as u64 >= u64::from(c) {
                return Err(Denied::Busy);
            }
        }
        Ok(())
    }

    /// Grant a request of `tokens` at `now_ms` if the limits allow it; returns the grant id.
    pub fn try_grant(&mut self, now_ms: u64, tokens: u64, l: &Limits) -> Result<u64, Denied> {
        self.check(now_ms, tokens, l)?;
        self.next_id += 1;
        let id = self.next_id;
        if l.requests.is_some() || l.tokens.is_some() {
            self.log.insert(
                id,
                Grant {
                    at_ms: now_ms,
                    tokens,
                },
            );
            self.tokens_in_log += tokens;
        }
        self.in_flight.insert(id);
        Ok(id)
    }

    /// Replace a grant's reserved tokens by the real count (no effect once it left the window).
    pub fn settle(&mut self, id: u64, actual_tokens: u64) {
        if let Some(g) = self.log.get_mut(&id) {
            self.tokens_in_log = self.tokens_in_log.saturating_sub(g.tokens) + actual_tokens;
            g.tokens = actual_tokens;
        }
    }

    /// The call of grant `id` ended (concurrency). Unknown ids are ignored.
    pub fn release(&mut self, id: u64) -> bool {
        self.in_flight.remove(&id)
    }

    /// Undo a grant whose call was never made (it leaves the window and the in-flight set).
    pub fn cancel(&mut self, id: u64) {
        if let Some(g) = self.log.remove(&id) {
            self.tokens_in_log = self.tokens_in_log.saturating_sub(g.tokens);
        }
        self.in_flight.remove(&id);
    }

    /// Grant nothing before `until_ms` (keeps the later of two back-offs).
    pub fn block_until(&mut self, until_ms: u64) {
        self.blocked_until_ms = self.blocked_until_ms.max(until_ms);
    }

    pub fn headroom(&mut self, now_ms: u64, l: &Limits) -> Headroom {
        self.prune(now_ms, l.window_ms);
        let requests_in_window = self.log.len() as u64;
        Headroom {
            requests_in_window,
            tokens_in_window: self.tokens_in_log,
            in_flight: self.in_flight.len() as u64,
            remaining_requests: l
                .requests
                .map(|r| u64::from(r).saturating_sub(requests_in_window)),
            remaining_tokens: l.tokens.map(|t| t.saturating_sub(self.tokens_in_log)),
            blocked_ms: self.blocked_until_ms.saturating_sub(now_ms),
        }
    }
}

/// The share of a back-off delay that jitter may add or remove (±20 %).
pub const JITTER_FRACTION: f64 = 0.2;

/// The back-off after the `attempt`-th consecutive 429 (1-based):
/// `min(max, initial × multiplier^(attempt-1))`, moved by `jitter` (in −1..=1) times
/// [`JITTER_FRACTION`], kept within `max`, and never shorter than the provider's `Retry-After`.
pub fn backoff_delay(
    attempt: u32,
    cfg: &Backoff,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    let n = attempt.max(1) - 1;
    let base = cfg.initial_delay_ms as f64 * cfg.multiplier.max(1.0).powi(n.min(64) as i32);
    let base = base.min(cfg.max_delay_ms as f64);
    let jittered = base * (1.0 + jitter.clamp(-1.0, 1.0) * JITTER_FRACTION);
    let ms = jittered.clamp(0.0, cfg.max_delay_ms as f64) as u64;
    let d = Duration::from_millis(ms);
    match retry_after {
        Some(ra) => d.max(ra),
        None => d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim(requests: Option<u32>, tokens: Option<u64>, concurrent: Option<u32>) -> Limits {
        Limits {
            requests,
            tokens,
            concurrent,
            window_ms: 1000,
        }
    }

    /// Steps `(now_ms, tokens, expected)`; every grant is released at once unless concurrency
    /// is under test.
    #[test]
    fn window_table() {
        use Denied::*;
        type Step = (u64, u64, Result<(), Denied>);
        let cases: Vec<(&str, Limits, Vec<Step>)> = vec![
            (
                "rpm 2: third waits for the first to leave",
                lim(Some(2), None, None),
                vec![
                    (0, 1, Ok(())),
                    (100, 1, Ok(())),
                    (200, 1, Err(RetryIn(800))),
                    (999, 1, Err(RetryIn(1))),
                    (1000, 1, Ok(())),
                    (1050, 1, Err(RetryIn(50))),
                ],
            ),
            (
                "no burst of 2x at a window edge",
                lim(Some(3), None, None),
                vec![
                    (990, 1, Ok(())),
                    (991, 1, Ok(())),
                    (992, 1, Ok(())),
                    (1010, 1, Err(RetryIn(980))),
                    (1990, 1, Ok(())),
                ],
            ),
            (
                "tpm: reserve counts, large request waits for room",
                lim(None, Some(100), None),
                vec![
                    (0, 60, Ok(())),
                    (10, 30, Ok(())),
                    (20, 20, Err(RetryIn(980))),
                    (20, 10, Ok(())),
                    (30, 1, Err(RetryIn(970))),
                    (1000, 60, Ok(())),
                ],
            ),
            (
                "tpm: request above the allowance waits for an empty window",
                lim(None, Some(100), None),
                vec![
                    (0, 10, Ok(())),
                    (5, 500, Err(RetryIn(995))),
                    (1000, 500, Ok(())),
                ],
            ),
            (
                "no limits",
                lim(None, None, None),
                vec![(0, 1_000_000, Ok(())), (0, 1_000_000, Ok(()))],
            ),
        ];
        for (name, l, steps) in cases {
            let mut w = Window::new();
            for (i, (now, tokens, want)) in steps.into_iter().enumerate() {
                let got = w.try_grant(now, tokens, &l).map(|id| {
                    w.release(id);
                });
                assert_eq!(got, want, "{name}: step {i}");
            }
        }
    }

    #[test]
    fn concurrency_waits_for_a_release() {
        let l = lim(None, None, Some(2));
        let mut w = Window::new();
        let a = w.try_grant(0, 1, &l).unwrap();
        let _b = w.try_grant(0, 1, &l).unwrap();
        assert_eq!(w.try_grant(0, 1, &l), Err(Denied::Busy));
        assert!(w.release(a));
        assert!(!w.release(a), "a second release is ignored");
        assert!(w.try_grant(0, 1, &l).is_ok());
        assert_eq!(w.try_grant(5_000, 1, &l), Err(Denied::Busy));
    }

    #[test]
    fn settle_adjusts_the_reservation() {
        let l = lim(None, Some(100), None);
        let mut w = Window::new();
        let a = w.try_grant(0, 90, &l).unwrap();
        assert_eq!(w.check(1, 20, &l), Err(Denied::RetryIn(999)));
        w.settle(a, 30);
        assert_eq!(w.check(1, 20, &l), Ok(()));
        assert_eq!(w.headroom(1, &l).remaining_tokens, Some(70));
        // Settling upwards can exceed the allowance: later requests wait for it to leave.
        w.settle(a, 150);
        assert_eq!(w.check(2, 1, &l), Err(Denied::RetryIn(998)));
        // Once out of the window, a settle changes nothing.
        assert_eq!(w.check(1000, 100, &l), Ok(()));
        w.settle(a, 10);
        assert_eq!(w.headroom(1000, &l).tokens_in_window, 0);
    }

    #[test]
    fn cancel_undoes_a_grant() {
        let l = lim(Some(1), Some(10), Some(1));
        let mut w = Window::new();
        let a = w.try_grant(0, 10, &l).unwrap();
        assert!(w.check(1, 1, &l).is_err());
        w.cancel(a);
        assert_eq!(w.check(1, 10, &l), Ok(()));
        assert_eq!(
            w.headroom(1, &l),
            Headroom {
                remaining_requests: Some(1),
                remaining_tokens: Some(10),
                ..Headroom::default()
            }
        );
    }

    #[test]
    fn block_until_delays_every_grant() {
        let l = lim(Some(100), None, None);
        let mut w = Window::new();
        w.block_until(500);
        w.block_until(300);
        assert_eq!(w.try_grant(100, 1, &l), Err(Denied::RetryIn(400)));
        assert!(w.try_grant(500, 1, &l).is_ok());
        assert_eq!(w.headroom(500, &l).remaining_requests, Some(99));
    }

    #[test]
    fn backoff_table() {
        let cfg = Backoff {
            strategy: "exponential".into(),
            initial_delay_ms: 1_000,
            max_delay_ms: 10_000,
            multiplier: 2.0,
        };
        let ms = Duration::from_millis;
        let cases = [
            ("first", 1, None, 0.0, ms(1_000)),
            ("second", 2, None, 0.0, ms(2_000)),
            ("fourth", 4, None, 0.0, ms(8_000)),
            ("capped", 5, None, 0.0, ms(10_000)),
            ("huge attempt stays capped", 1_000, None, 0.0, ms(10_000)),
            ("jitter up", 2, None, 1.0, ms(2_400)),
            ("jitter down", 2, None, -1.0, ms(1_600)),
            ("jitter never passes max", 9, None, 1.0, ms(10_000)),
            (
                "retry-after wins when longer",
                1,
                Some(ms(3_000)),
                0.0,
                ms(3_000),
            ),
            (
                "retry-after beyond max wins",
                1,
                Some(ms(30_000)),
                0.0,
                ms(30_000),
            ),
            (
                "retry-after shorter is ignored",
                3,
                Some(ms(100)),
                0.0,
                ms(4_000),
            ),
            ("attempt 0 counts as 1", 0, None, 0.0, ms(1_000)),
        ];
        for (name, attempt, ra, jitter, want) in cases {
            assert_eq!(backoff_delay(attempt, &cfg, ra, jitter), want, "{name}");
        }
    }
}

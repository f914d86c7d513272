//! Circuit breaker per model (§18.2 fallback): after `failure_threshold` consecutive failures a
//! model is skipped at once for `cooldown_ms`, then one probe call is let through; its success
//! closes the breaker, its failure opens it again. A dead primary then costs one fast skip, not
//! a timeout per request.
//!
//! The transitions are pure functions of (state, event, now); [`Breakers`] keeps one state per
//! configured model behind a mutex held only for the transition.

use std::collections::HashMap;
use std::sync::Mutex;

/// Breaker settings (`model_fallback.circuit_breaker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    pub failure_threshold: u32,
    pub cooldown_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed {
        failures: u32,
    },
    Open {
        until_ms: u64,
    },
    /// Cool-down over; `probing` while the one probe call is out.
    HalfOpen {
        probing: bool,
    },
}

impl State {
    /// Gauge value: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> i64 {
        match self {
            State::Closed { .. } => 0,
            State::Open { .. } => 1,
            State::HalfOpen { .. } => 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// The one probe after a cool-down.
    Probe,
    /// Skip this model; it may be tried again in `retry_in_ms`.
    No {
        retry_in_ms: u64,
    },
}

/// May a call go to the model now?
pub fn admit(s: State, now_ms: u64) -> (Admit, State) {
    match s {
        State::Closed { .. } => (Admit::Yes, s),
        State::Open { until_ms } if now_ms < until_ms => (
            Admit::No {
                retry_in_ms: until_ms - now_ms,
            },
            s,
        ),
        State::Open { .. } | State::HalfOpen { probing: false } => {
            (Admit::Probe, State::HalfOpen { probing: true })
        }
        State::HalfOpen { probing: true } => (Admit::No { retry_in_ms: 0 }, s),
    }
}

/// The state after a call's result.
pub fn record(s: State, ok: bool, now_ms: u64, p: &BreakerPolicy) -> State {
    let open = State::Open {
        until_ms: now_ms.saturating_add(p.cooldown_ms),
    };
    match (s, ok) {
        (State::Closed { .. }, true) => State::Closed { failures: 0 },
        (State::Closed { failures }, false) => {
            if failures + 1 >= p.failure_threshold {
                open
            } else {
                State::Closed {
                    failures: failures + 1,
                }
            }
        }
        (State::HalfOpen { .. }, true) => State::Closed { failures: 0 },
        (State::HalfOpen { .. }, false) => open,
        // A call that started before the breaker opened: it changes nothing.
        (State::Open { .. }, _) => s,
    }
}

/// One breaker per model.
#[derive(Debug, Default)]
pub struct Breakers {
    states: Mutex<HashMap<String, State>>,
}

impl Breakers {
    pub fn admit(&self, model: &str, now_ms: u64) -> Admit {
        let mut m = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let s = m
            .get(model)
            .copied()
            .unwrap_or(State::Closed { failures: 0 });
        let (a, next) = admit(s, now_ms);
        m.insert(model.to_string(), next);
        crate::metrics::metrics()
            .model_breaker_state
            .with_label_values(&[model])
            .set(next.gauge());
        a
    }

    pub fn record(&self, model: &str, ok: bool, now_ms: u64, p: &BreakerPolicy) -> State {
        let mut m = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let s = m
            .get(model)
            .copied()
            .unwrap_or(State::Closed { failures: 0 });
        let next = record(s, ok, now_ms, p);
        if next != s && matches!(next, State::Open { .. }) {
            tracing::warn!(model, cooldown_ms = p.cooldown_ms, "circuit breaker opened");
        }
        m.insert(model.to_string(), next);
        crate::metrics::metrics()
            .model_breaker_state
            .with_label_values(&[model])
            .set(next.gauge());
        next
    }

    pub fn state(&self, model: &str) -> State {
        self.states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(model)
            .copied()
            .unwrap_or(State::Closed { failures: 0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: BreakerPolicy = BreakerPolicy {
        failure_threshold: 3,
        cooldown_ms: 1_000,
    };

    #[test]
    fn transitions_table() {
        use State::*;
        let cases = [
            // (state, ok, now, want)
            (Closed { failures: 0 }, false, 0, Closed { failures: 1 }),
            (Closed { failures: 1 }, false, 5, Closed { failures: 2 }),
            (Closed { failures: 2 }, false, 5, Open { until_ms: 1_005 }),
            (Closed { failures: 2 }, true, 5, Closed { failures: 0 }),
            (HalfOpen { probing: true }, true, 9, Closed { failures: 0 }),
            (
                HalfOpen { probing: true },
                false,
                9,
                Open { until_ms: 1_009 },
            ),
            (Open { until_ms: 50 }, true, 9, Open { until_ms: 50 }),
        ];
        for (s, ok, now, want) in cases {
            assert_eq!(record(s, ok, now, &P), want, "{s:?} ok={ok}");
        }
    }

    #[test]
    fn admission_table() {
        use State::*;
        let cases = [
            (
                Closed { failures: 2 },
                0,
                Admit::Yes,
                Closed { failures: 2 },
            ),
            (
                Open { until_ms: 100 },
                40,
                Admit::No { retry_in_ms: 60 },
                Open { until_ms: 100 },
            ),
            (
                Open { until_ms: 100 },
                100,
                Admit::Probe,
                HalfOpen { probing: true },
            ),
            (
                HalfOpen { probing: true },
                200,
                Admit::No { retry_in_ms: 0 },
                HalfOpen { probing: true },
            ),
            (
                HalfOpen { probing: false },
                200,
                Admit::Probe,
                HalfOpen { probing: true },
            ),
        ];
        for (s, now, want_a, want_s) in cases {
            assert_eq!(admit(s, now), (want_a, want_s), "{s:?} at {now}");
        }
    }

    #[test]
    fn a_dead_model_costs_one_fast_skip_per_cooldown() {
        let b = Breakers::default();
        for t in 0..3 {
            assert_eq!(b.admit("m", t), Admit::Yes);
            b.record("m", false, t, &P);
        }
        // Open: every admission in the cool-down is refused at once.
        let refused = (3..1_002)
            .filter(|t| b.admit("m", *t) != Admit::Yes)
            .count();
        assert_eq!(refused, 999);
        assert_eq!(b.admit("m", 1_002), Admit::Probe);
        assert!(
            matches!(b.admit("m", 1_003), Admit::No { .. }),
            "one probe at a time"
        );
        assert_eq!(
            b.record("m", true, 1_004, &P),
            State::Closed { failures: 0 }
        );
        assert_eq!(b.admit("m", 1_005), Admit::Yes);
    }
}

//! Budgets (§18.7 `budget`): the pure decisions. No clock, no I/O, no actors — time comes in as
//! a date, so a Raft `apply` (cluster issue) can reuse every function here.
//!
//! - [`period_key`]: which budget period a local date falls in (`2026-11-23`, `2026-W48`,
//!   `2026-11`).
//! - [`Counters`] per scope (`total`, `agent:<name>`): settled spend plus reservations in flight.
//! - [`reserve`]: admission. Non-critical work is refused when `spent + reserved + estimate`
//!   would pass a limit (tokens or cost) of any of its scopes. **Critical work is always
//!   admitted**, even past 100 % (the chapter pauses only non-critical work), so critical spend
//!   may exceed a limit; that is counted and shown, never hidden.
//! - [`settle`]: the reservation is replaced by the real usage.
//! - [`thresholds_crossed`]: the `actions_on_limit` entries a scope newly reached; each fires
//!   once per period per scope (the caller keeps the fired marks).
//!
//! Because a grant needs `spent + reserved + est <= limit`, concurrent requests can never be
//! granted more than the limit in total: overshoot is bounded by how much the real usage of the
//! granted calls exceeds their estimates (zero when the estimate is an upper bound, as with
//! `max_tokens`).

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::config::{BudgetAction, BudgetConfig, BudgetPeriod, Config};

/// The scope every call counts against.
pub const TOTAL: &str = "total";

/// Scope name of an agent with its own limits.
pub fn agent_scope(agent: &str) -> String {
    format!("agent:{agent}")
}

/// The period a local date falls in: daily `2026-11-23`, weekly ISO `2026-W48`, monthly `2026-11`.
pub fn period_key(period: BudgetPeriod, date: NaiveDate) -> String {
    match period {
        BudgetPeriod::Daily => date.format("%Y-%m-%d").to_string(),
        BudgetPeriod::Weekly => {
            let w = date.iso_week();
            format!("{}-W{:02}", w.year(), w.week())
        }
        BudgetPeriod::Monthly => format!("{}-{:02}", date.year(), date.month()),
    }
}

/// Limits of one scope (None = unlimited on that axis).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub tokens: Option<u64>,
    pub cost_usd: Option<f64>,
}

impl Limits {
    pub fn is_unlimited(&self) -> bool {
        self.tokens.is_none() && self.cost_usd.is_none()
    }
}

/// The scopes a call of `agent` counts against, with their limits: `total` always, and the
/// agent's own scope when `budget.limits.per_agent` names it.
pub fn scopes_for(cfg: &BudgetConfig, agent: &str) -> Vec<(String, Limits)> {
    let mut out = vec![(
        TOTAL.to_string(),
        Limits {
            tokens: cfg.limits.total_tokens,
            cost_usd: cfg.limits.total_cost_usd,
        },
    )];
    if let Some(a) = cfg.limits.per_agent.get(agent) {
        out.push((
            agent_scope(agent),
            Limits {
                tokens: a.tokens,
                cost_usd: a.cost_usd,
            },
        ));
    }
    out
}

/// Every configured scope with its limits (`total` first, then agents in name order).
pub fn all_scopes(cfg: &BudgetConfig) -> Vec<(String, Limits)> {
    let mut out = vec![(
        TOTAL.to_string(),
        Limits {
            tokens: cfg.limits.total_tokens,
            cost_usd: cfg.limits.total_cost_usd,
        },
    )];
    for (name, a) in &cfg.limits.per_agent {
        out.push((
            agent_scope(name),
            Limits {
                tokens: a.tokens,
                cost_usd: a.cost_usd,
            },
        ));
    }
    out
}

/// Spend of one scope in the current period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub tokens: u64,
    pub cost_usd: f64,
    pub reserved_tokens: u64,
    pub reserved_cost: f64,
}

impl Counters {
    /// Settled spend as a share of the limit (the larger of tokens and cost; 0 when unlimited).
    pub fn used_ratio(&self, l: &Limits) -> f64 {
        ratio(self.tokens, self.cost_usd, l)
    }

    /// Tokens still grantable (None = unlimited).
    pub fn headroom_tokens(&self, l: &Limits) -> Option<u64> {
        l.tokens
            .map(|t| t.saturating_sub(self.tokens + self.reserved_tokens))
    }
}

fn ratio(tokens: u64, cost: f64, l: &Limits) -> f64 {
    let t = match l.tokens {
        Some(0) => 1.0,
        Some(lim) => tokens as f64 / lim as f64,
        None => 0.0,
    };
    let c = match l.cost_usd {
        Some(lim) if lim <= 0.0 => 1.0,
        Some(lim) => cost / lim,
        None => 0.0,
    };
    t.max(c)
}

/// What a call is expected to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub tokens: u64,
    pub cost_usd: f64,
}

/// A refused reservation: the scope whose limit it would pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("budget of `{scope}` is exhausted for this period")]
pub struct Exhausted {
    pub scope: String,
}

/// Small slack for float cost sums.
const COST_EPSILON: f64 = 1e-9;

/// Would `est` fit in one scope?
pub fn fits(c: &Counters, l: &Limits, est: &Estimate) -> bool {
    let tokens_ok = l
        .tokens
        .is_none_or(|lim| c.tokens + c.reserved_tokens + est.tokens <= lim);
    let cost_ok = l
        .cost_usd
        .is_none_or(|lim| c.cost_usd + c.reserved_cost + est.cost_usd <= lim + COST_EPSILON);
    tokens_ok && cost_ok
}

/// Reserve `est` in every scope of `scopes` (all or nothing). Critical work is always granted.
pub fn reserve(
    counters: &mut BTreeMap<String, Counters>,
    scopes: &[(String, Limits)],
    critical: bool,
    est: &Estimate,
) -> Result<(), Exhausted> {
    if !critical {
        for (scope, limits) in scopes {
            let c = counters.get(scope).copied().unwrap_or_default();
            if !fits(&c, limits, est) {
                return Err(Exhausted {
                    scope: scope.clone(),
                });
            }
        }
    }
    for (scope, _) in scopes {
        let c = counters.entry(scope.clone()).or_default();
        c.reserved_tokens += est.tokens;
        c.reserved_cost += est.cost_usd;
    }
    Ok(())
}

/// Replace a reservation by the real usage (`actual` = None: the call did not happen, release).
pub fn settle(
    counters: &mut BTreeMap<String, Counters>,
    scopes: &[String],
    reserved: &Estimate,
    actual: Option<&Estimate>,
) {
    for scope in scopes {
        let c = counters.entry(scope.clone()).or_default();
        c.reserved_tokens = c.reserved_tokens.saturating_sub(reserved.tokens);
        c.reserved_cost = (c.reserved_cost - reserved.cost_usd).max(0.0);
        if let Some(a) = actual {
            c.tokens += a.tokens;
            c.cost_usd += a.cost_usd;
        }
    }
}

/// `actions_on_limit` as (percent, action), ascending.
pub fn thresholds(cfg: &BudgetConfig) -> Vec<(u32, BudgetAction)> {
    let mut out: Vec<(u32, BudgetAction)> = cfg
        .actions_on_limit
        .iter()
        .filter_map(|(k, a)| crate::config::threshold_percent(k).map(|p| (p, *a)))
        .collect();
    out.sort_by_key(|(p, _)| *p);
    out
}

/// Thresholds reached now (`after_ratio`) that have not fired yet this period. `before_ratio`
/// is informative only: a threshold already passed but never fired (e.g. after a restart
/// without marks, or a lowered limit) fires too, once.
pub fn thresholds_crossed(
    _before_ratio: f64,
    after_ratio: f64,
    actions_on_limit: &[(u32, BudgetAction)],
    already_fired: &[u32],
) -> Vec<(u32, BudgetAction)> {
    actions_on_limit
        .iter()
        .filter(|(p, _)| after_ratio * 100.0 + 1e-9 >= f64::from(*p) && !already_fired.contains(p))
        .copied()
        .collect()
}

/// The state a scope shows: `paused` beats `downgraded` beats `ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeState {
    Ok,
    Downgraded,
    Paused,
}

impl ScopeState {
    pub fn as_str(&self) -> &'static str {
        match self {
            ScopeState::Ok => "ok",
            ScopeState::Downgraded => "downgraded",
            ScopeState::Paused => "paused",
        }
    }
}

/// A scope's state from its fired actions (pure). The fired marks are cleared at rollover; an
/// action whose threshold is no longer reached (the limit was raised) no longer counts.
pub fn scope_state(
    ratio: f64,
    actions_on_limit: &[(u32, BudgetAction)],
    fired: &[u32],
    refused: bool,
) -> ScopeState {
    let active = |want| action_active(ratio, actions_on_limit, fired, want);
    if refused || active(BudgetAction::PauseNonCritical) {
        ScopeState::Paused
    } else if active(BudgetAction::DowngradeModel) {
        ScopeState::Downgraded
    } else {
        ScopeState::Ok
    }
}

/// Is `want` in force: fired this period, and its threshold still reached at `ratio` (a raised
/// limit lifts it)?
pub fn action_active(
    ratio: f64,
    actions_on_limit: &[(u32, BudgetAction)],
    fired: &[u32],
    want: BudgetAction,
) -> bool {
    actions_on_limit
        .iter()
        .any(|(p, a)| *a == want && fired.contains(p) && ratio * 100.0 + 1e-9 >= f64::from(*p))
}

/// The cheapest configured model, by input + output price per 1M tokens (ties by name).
pub fn cheapest_model(cfg: &Config) -> Option<String> {
    cfg.models
        .iter()
        .filter(|(_, m)| m.kind == crate::config::ModelKind::Chat)
        .map(|(name, m)| (m.price.input + m.price.output, name))
        .min_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1)))
        .map(|(_, n)| n.clone())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::AgentBudget;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn period_keys() {
        let cases = [
            (BudgetPeriod::Daily, d(2026, 11, 23), "2026-11-23"),
            (BudgetPeriod::Weekly, d(2026, 11, 23), "2026-W48"),
            (BudgetPeriod::Monthly, d(2026, 11, 23), "2026-11"),
            // ISO week of early January belongs to the previous year.
            (BudgetPeriod::Weekly, d(2027, 1, 1), "2026-W53"),
            (BudgetPeriod::Weekly, d(2026, 1, 1), "2026-W01"),
            (BudgetPeriod::Monthly, d(2026, 1, 31), "2026-01"),
            (BudgetPeriod::Daily, d(2026, 2, 1), "2026-02-01"),
        ];
        for (p, date, want) in cases {
            assert_eq!(period_key(p, date), want, "{p:?} {date}");
        }
    }

    fn lim(tokens: Option<u64>, cost: Option<f64>) -> Limits {
        Limits {
            tokens,
            cost_usd: cost,
        }
    }

    #[test]
    fn reserve_table() {
        let est = Estimate {
            tokens: 100,
            cost_usd: 0.1,
        };
        // (spent tokens, reserved tokens, spent cost, limits, critical, granted)
        let cases = [
            (0, 0, 0.0, lim(Some(1000), None), false, true),
            (800, 100, 0.0, lim(Some(1000), None), false, true),
            (800, 101, 0.0, lim(Some(1000), None), false, false),
            (1000, 0, 0.0, lim(Some(1000), None), true, true),
            (0, 0, 0.95, lim(None, Some(1.0)), false, false),
            (0, 0, 0.9, lim(None, Some(1.0)), false, true),
            (0, 0, 99.0, lim(None, None), false, true),
            (0, 0, 0.0, lim(Some(0), None), false, false),
            (0, 0, 0.0, lim(Some(0), None), true, true),
        ];
        for (i, (t, rt, c, l, crit, want)) in cases.into_iter().enumerate() {
            let mut m = BTreeMap::from([(
                TOTAL.to_string(),
                Counters {
                    tokens: t,
                    cost_usd: c,
                    reserved_tokens: rt,
                    reserved_cost: 0.0,
                },
            )]);
            let got = reserve(&mut m, &[(TOTAL.into(), l)], crit, &est);
            assert_eq!(got.is_ok(), want, "case {i}");
            let after = m[TOTAL].reserved_tokens;
            assert_eq!(after, if want { rt + 100 } else { rt }, "case {i}");
        }
    }

    #[test]
    fn reserve_is_all_or_nothing_across_scopes() {
        let mut cfg = BudgetConfig::default();
        cfg.limits.total_tokens = Some(10_000);
        cfg.limits.per_agent.insert(
            "main".into(),
            AgentBudget {
                tokens: Some(150),
                cost_usd: None,
            },
        );
        let scopes = scopes_for(&cfg, "main");
        let mut m = BTreeMap::new();
        let est = Estimate {
            tokens: 100,
            cost_usd: 0.0,
        };
        assert!(reserve(&mut m, &scopes, false, &est).is_ok());
        let err = reserve(&mut m, &scopes, false, &est).unwrap_err();
        assert_eq!(err.scope, "agent:main");
        assert_eq!(
            m[TOTAL].reserved_tokens, 100,
            "total untouched by the refusal"
        );
        // Another agent only counts against total.
        assert_eq!(scopes_for(&cfg, "other").len(), 1);
    }

    #[test]
    fn settle_and_release() {
        let scopes = [TOTAL.to_string()];
        let est = Estimate {
            tokens: 500,
            cost_usd: 0.5,
        };
        let mut m = BTreeMap::new();
        reserve(
            &mut m,
            &[(TOTAL.into(), lim(Some(1000), None))],
            false,
            &est,
        )
        .unwrap();
        settle(
            &mut m,
            &scopes,
            &est,
            Some(&Estimate {
                tokens: 120,
                cost_usd: 0.02,
            }),
        );
        assert_eq!(m[TOTAL].tokens, 120);
        assert_eq!(m[TOTAL].reserved_tokens, 0);
        assert!(m[TOTAL].reserved_cost.abs() < 1e-12);
        reserve(
            &mut m,
            &[(TOTAL.into(), lim(Some(1000), None))],
            false,
            &est,
        )
        .unwrap();
        settle(&mut m, &scopes, &est, None);
        assert_eq!(m[TOTAL].tokens, 120, "a release adds no spend");
        assert_eq!(m[TOTAL].reserved_tokens, 0);
    }

    /// 200 requests reserve concurrently (all before any settles), then settle with usage up to
    /// their estimate: the spend never passes the limit.
    #[test]
    fn two_hundred_concurrent_reservations_never_pass_the_limit() {
        let limit = 5_000u64;
        let scopes = [(TOTAL.to_string(), lim(Some(limit), None))];
        let mut m = BTreeMap::new();
        let mut granted = Vec::new();
        let mut refused = 0;
        for i in 0..200u64 {
            let est = Estimate {
                tokens: 80 + i % 40,
                cost_usd: 0.0,
            };
            match reserve(&mut m, &scopes, false, &est) {
                Ok(()) => granted.push(est),
                Err(_) => refused += 1,
            }
            // Interleave settlements of the oldest grants now and then.
            if i % 7 == 0 && !granted.is_empty() {
                let e = granted.remove(0);
                let actual = Estimate {
                    tokens: e.tokens - i % 5,
                    cost_usd: 0.0,
                };
                settle(&mut m, &[TOTAL.into()], &e, Some(&actual));
            }
            let c = m[TOTAL];
            assert!(c.tokens + c.reserved_tokens <= limit, "step {i}: {c:?}");
        }
        for e in granted.drain(..) {
            settle(&mut m, &[TOTAL.into()], &e, Some(&e));
        }
        assert!(m[TOTAL].tokens <= limit);
        assert!(refused > 100, "most of the 200 are refused ({refused})");
        assert_eq!(m[TOTAL].reserved_tokens, 0);
    }

    #[test]
    fn thresholds_fire_once() {
        let acts = thresholds(&BudgetConfig::default());
        assert_eq!(
            acts,
            vec![
                (80, BudgetAction::Notify),
                (95, BudgetAction::DowngradeModel),
                (100, BudgetAction::PauseNonCritical)
            ]
        );
        let cases: [(f64, f64, &[u32], &[u32]); 6] = [
            (0.5, 0.79, &[], &[]),
            (0.79, 0.80, &[], &[80]),
            (0.79, 0.96, &[], &[80, 95]),
            (0.81, 0.90, &[80], &[]),
            (0.90, 1.20, &[80], &[95, 100]),
            (1.0, 1.0, &[80, 95, 100], &[]),
        ];
        for (before, after, fired, want) in cases {
            let got: Vec<u32> = thresholds_crossed(before, after, &acts, fired)
                .into_iter()
                .map(|(p, _)| p)
                .collect();
            assert_eq!(got, want, "{before} -> {after} fired {fired:?}");
        }
    }

    #[test]
    fn scope_states() {
        let acts = thresholds(&BudgetConfig::default());
        assert_eq!(scope_state(0.5, &acts, &[], false), ScopeState::Ok);
        assert_eq!(scope_state(0.9, &acts, &[80], false), ScopeState::Ok);
        assert_eq!(
            scope_state(0.96, &acts, &[80, 95], false),
            ScopeState::Downgraded
        );
        assert_eq!(
            scope_state(1.0, &acts, &[80, 95, 100], false),
            ScopeState::Paused
        );
        // Limit raised: ratio fell below the thresholds, the actions lift.
        assert_eq!(
            scope_state(0.5, &acts, &[80, 95, 100], false),
            ScopeState::Ok
        );
        assert_eq!(scope_state(0.1, &acts, &[], true), ScopeState::Paused);
    }

    #[test]
    fn cheapest_is_by_input_plus_output() {
        let cfg = Config::default();
        let cheapest = cheapest_model(&cfg).unwrap();
        let sum = |n: &str| {
            let p = &cfg.models[n].price;
            p.input + p.output
        };
        assert_eq!(cfg.models[&cheapest].kind, crate::config::ModelKind::Chat);
        for (n, m) in &cfg.models {
            if m.kind == crate::config::ModelKind::Chat {
                assert!(sum(&cheapest) <= sum(n), "{cheapest} vs {n}");
            }
        }
    }
}

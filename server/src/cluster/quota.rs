//! Cluster-wide limits on the hot path: budget and rate-limit **leases**.
//!
//! The replicated state holds, per budget scope, the spend and the slice of the remaining
//! allowance each node holds; per rate-limit scope and window, what was granted to whom (see
//! `openclaw_cluster::lease`). A node reserves locally against its slice — no Raft round trip
//! per call — and asks the leader for more only when the slice runs out:
//!
//! - **Budget**: `reserve` takes the estimate from the node's slice of each limited scope
//!   (asking for a new slice of `limit / (2 × live nodes)` when short). Settling commits a
//!   `Spend` (real usage in, reservation out of the slice). A refused slice refuses non-critical
//!   work (critical work runs anyway, as in the chapter, and is counted). Spend can pass a limit
//!   only by what real usage exceeds the reservations in flight.
//! - **Rate limits**: before each provider call, one request (and the estimated tokens) is
//!   taken from the node's slice of the current window; an exhausted window waits for the next
//!   one (up to the caller's deadline). Grants per window never pass the limit, so the calls a
//!   provider sees per window stay within it (tokens: plus what real usage exceeds estimates).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openclaw_cluster::lease::{rate_buckets, slice_size};
use openclaw_cluster::{BudgetLimit, Command, RateLimit, Reply};

use super::Cluster;
use crate::budget::rules::{self as budget, Estimate, Exhausted};
use crate::budget::{SharedBudget, SharedHold, SharedScope};
use crate::limits::{window, LimitError, LimitsOf, SharedRate};
use crate::util::now_ms;

/// The budget and rate-limit seams ([`SharedBudget`], [`SharedRate`]) over this node's
/// leases of the replicated state.
pub struct Leases(pub Arc<Cluster>);

#[async_trait::async_trait]
impl SharedBudget for Leases {
    async fn reserve(
        &self,
        period: &str,
        scopes: &[(String, budget::Limits)],
        critical: bool,
        model: &str,
        est: Estimate,
    ) -> Result<Box<dyn SharedHold>, Exhausted> {
        let hold = reserve_budget(&self.0, period, scopes, critical, model, est).await?;
        Ok(Box::new(Held {
            hold,
            c: self.0.clone(),
        }))
    }

    fn counters(&self, period: &str) -> Vec<SharedScope> {
        let me = self.0.id;
        let now = now_ms();
        self.0.sm.read(|s| {
            if s.budget_period != period {
                return Vec::new();
            }
            let dead = s.dead_leases(now);
            s.budget
                .iter()
                .map(|(scope, b)| {
                    let (ot, oc) = b
                        .slices
                        .iter()
                        .filter(|(n, _)| **n != me)
                        .fold((0u64, 0f64), |(t, c), (_, x)| {
                            (t + x.tokens, c + x.cost_usd)
                        });
                    SharedScope {
                        scope: scope.clone(),
                        spent_tokens: b.spent_tokens,
                        spent_cost_usd: b.spent_cost_usd,
                        others_tokens: ot,
                        others_cost_usd: oc,
                        dead: dead
                            .iter()
                            .filter(|d| d.0 == *scope)
                            .map(|(_, node, t, c, exp)| crate::budget::DeadLease {
                                node: *node,
                                tokens: *t,
                                cost_usd: *c,
                                expires_ms: *exp,
                            })
                            .collect(),
                    }
                })
                .collect()
        })
    }

    async fn claim_threshold(
        &self,
        period: &str,
        scope: &str,
        percent: u32,
    ) -> Result<bool, String> {
        let claim = Command::ClaimThreshold {
            period: period.to_string(),
            scope: scope.to_string(),
            percent,
        };
        match self.0.proposer.propose(claim).await {
            Ok(Reply::Claimed(won)) => Ok(won),
            Ok(other) => Err(format!("unexpected reply {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[async_trait::async_trait]
impl SharedRate for Leases {
    async fn acquire(
        &self,
        scopes: &[String],
        limits: &LimitsOf,
        tokens: u64,
        deadline: tokio::time::Instant,
    ) -> Result<(), LimitError> {
        acquire_rate(&self.0, scopes, limits, tokens, deadline).await
    }
}

/// A [`LeaseHold`] with the cluster it settles into.
struct Held {
    hold: LeaseHold,
    c: Arc<Cluster>,
}

impl SharedHold for Held {
    fn settle(self: Box<Self>, tokens: u64, cost: f64) {
        self.hold.settle(self.c, tokens, cost);
    }
    fn release(self: Box<Self>) {
        self.hold.release(&self.c);
    }
}

/// The node's view of its leases.
#[derive(Debug, Default)]
pub struct Quota {
    budget: Mutex<BTreeMap<String, BudgetPool>>,
    rate: Mutex<BTreeMap<String, RatePool>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct BudgetPool {
    /// The slice the state says this node holds (tokens, cost).
    held: (u64, f64),
    /// Reserved by calls in flight here.
    reserved: (u64, f64),
    /// Handed back with `ReturnBudget` not yet applied: a grant's reply may still count it.
    returning: (u64, f64),
}

#[derive(Debug, Default, Clone, Copy)]
struct RatePool {
    bucket: u64,
    bucket_ms: u64,
    requests: u64,
    tokens: u64,
}

/// An unspent rate slice to give back (`Command::ReturnRate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Unspent {
    bucket: u64,
    bucket_ms: u64,
    requests: u64,
    tokens: u64,
}

impl RatePool {
    /// Move the pool to `bucket` (of `bucket_ms`): what an older bucket's slice still held is
    /// returned as [`Unspent`], because it can no longer be spent.
    fn roll(&mut self, bucket: u64, bucket_ms: u64) -> Option<Unspent> {
        if self.bucket == bucket && self.bucket_ms == bucket_ms {
            return None;
        }
        let left = Unspent {
            bucket: self.bucket,
            bucket_ms: self.bucket_ms,
            requests: self.requests,
            tokens: self.tokens,
        };
        *self = RatePool {
            bucket,
            bucket_ms,
            ..RatePool::default()
        };
        (left.requests > 0 || left.tokens > 0).then_some(left)
    }
}

/// A budget reservation against this node's slices; settle it with real usage, or drop it to
/// give the reservation back to the node's slice.
#[derive(Debug)]
pub struct LeaseHold {
    scopes: Vec<String>,
    limited: Vec<String>,
    est: Estimate,
    period: String,
    model: String,
    settled: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Quota {
    /// Take `est` from the slice; only the limited dimensions have to fit (an unlimited one is
    /// not leased at all).
    fn take_budget(&self, scope: &str, est: &Estimate, limits: &budget::Limits) -> bool {
        let mut g = lock(&self.budget);
        let p = g.entry(scope.to_string()).or_default();
        let free_t = p.held.0.saturating_sub(p.reserved.0);
        let free_c = p.held.1 - p.reserved.1;
        let tokens_fit = limits.tokens.is_none() || free_t >= est.tokens;
        let cost_fit = limits.cost_usd.is_none() || free_c + 1e-12 >= est.cost_usd;
        if tokens_fit && cost_fit {
            p.reserved.0 += est.tokens;
            p.reserved.1 += est.cost_usd;
            true
        } else {
            false
        }
    }

    fn force_budget(&self, scope: &str, est: &Estimate) {
        let mut g = lock(&self.budget);
        let p = g.entry(scope.to_string()).or_default();
        p.reserved.0 += est.tokens;
        p.reserved.1 += est.cost_usd;
    }

    fn give_back(&self, scope: &str, est: &Estimate, spent: bool) {
        let mut g = lock(&self.budget);
        if let Some(p) = g.get_mut(scope) {
            p.reserved.0 = p.reserved.0.saturating_sub(est.tokens);
            p.reserved.1 = (p.reserved.1 - est.cost_usd).max(0.0);
            if spent {
                // `Spend` takes the reservation out of the slice in the state too.
                p.held.0 = p.held.0.saturating_sub(est.tokens);
                p.held.1 = (p.held.1 - est.cost_usd).max(0.0);
            }
        }
    }

    /// What this node has reserved against its slice of `scope` (tokens, cost).
    fn reserved(&self, scope: &str) -> (u64, f64) {
        lock(&self.budget)
            .get(scope)
            .map_or((0, 0.0), |p| p.reserved)
    }

    fn set_held(&self, scope: &str, tokens: u64, cost: f64) {
        let mut g = lock(&self.budget);
        let p = g.entry(scope.to_string()).or_default();
        p.held = (
            tokens.saturating_sub(p.returning.0),
            (cost - p.returning.1).max(0.0),
        );
    }

    fn returned(&self, scope: &str, tokens: u64, cost: f64) {
        if let Some(p) = lock(&self.budget).get_mut(scope) {
            p.returning.0 = p.returning.0.saturating_sub(tokens);
            p.returning.1 = (p.returning.1 - cost).max(0.0);
        }
    }

    /// Slices this node holds with nothing reserved against them: given up locally at once (so
    /// no new reservation uses them) and returned to the cluster by the caller.
    pub fn take_idle_slices(&self) -> Vec<(String, u64, f64)> {
        let mut g = lock(&self.budget);
        let mut out = Vec::new();
        for (scope, p) in g.iter_mut() {
            if p.reserved.0 == 0 && p.reserved.1 <= 0.0 && (p.held.0 > 0 || p.held.1 > 0.0) {
                out.push((scope.clone(), p.held.0, p.held.1));
                p.returning.0 += p.held.0;
                p.returning.1 += p.held.1;
                p.held = (0, 0.0);
            }
        }
        out
    }

    /// What `status` and tests see: (scope, held tokens, reserved tokens).
    pub fn budget_view(&self) -> Vec<(String, u64, u64)> {
        lock(&self.budget)
            .iter()
            .map(|(s, p)| (s.clone(), p.held.0, p.reserved.0))
            .collect()
    }
}

fn live_nodes(c: &Cluster) -> usize {
    c.sm.read(|s| s.live_loads().len()).max(1)
}

/// Reserve `est` against this node's slices of every limited scope of `scopes`.
async fn reserve_budget(
    c: &Cluster,
    period: &str,
    scopes: &[(String, budget::Limits)],
    critical: bool,
    model: &str,
    est: Estimate,
) -> Result<LeaseHold, Exhausted> {
    let period = period.to_string();
    let mut taken: Vec<String> = Vec::new();
    for (scope, limits) in scopes {
        if limits.is_unlimited() {
            continue;
        }
        let mut ok = c.quota.take_budget(scope, &est, limits);
        if !ok {
            let n = live_nodes(c) as u64;
            // An ask tops the slice up to what it names (the state does not add asks up), so
            // it names the reservations in flight plus this one, at least a fair share.
            let (in_flight_t, in_flight_c) = c.quota.reserved(scope);
            let need_t = in_flight_t.saturating_add(est.tokens);
            let need_c = in_flight_c + est.cost_usd;
            let want_tokens = match limits.tokens {
                Some(l) => slice_size(Some(l), n as usize, need_t, l / 4),
                None => need_t,
            };
            let want_cost = match limits.cost_usd {
                Some(l) => (l / (2.0 * n as f64))
                    .max(need_c)
                    .min((l / 4.0).max(need_c)),
                None => need_c,
            };
            let cmd = Command::LeaseBudget {
                node: c.id,
                period: period.clone(),
                scope: scope.clone(),
                limit: BudgetLimit {
                    tokens: limits.tokens,
                    cost_usd: limits.cost_usd,
                },
                want_tokens,
                want_cost_usd: want_cost,
            };
            if let Ok(Reply::BudgetSlice { tokens, cost_usd }) = c.proposer.propose(cmd).await {
                // The state's whole slice for this node, minus returns still in flight.
                c.quota.set_held(scope, tokens, cost_usd);
            }
            ok = c.quota.take_budget(scope, &est, limits);
        }
        if !ok {
            if critical {
                c.quota.force_budget(scope, &est);
            } else {
                for s in &taken {
                    c.quota.give_back(s, &est, false);
                }
                if let Some(suppressed) = crate::throttled!(scope) {
                    tracing::info!(%scope, est_tokens = est.tokens, suppressed, "cluster budget slice refused; non-critical work waits");
                }
                return Err(Exhausted {
                    scope: scope.clone(),
                });
            }
        }
        taken.push(scope.clone());
    }
    Ok(LeaseHold {
        scopes: scopes.iter().map(|(s, _)| s.clone()).collect(),
        limited: taken,
        est,
        period,
        model: model.to_string(),
        settled: false,
    })
}

impl LeaseHold {
    /// Commit the real usage (`Spend`) in the background; the reservation leaves the slices.
    pub fn settle(mut self, c: Arc<Cluster>, tokens: u64, cost: f64) {
        self.settled = true;
        for s in &self.limited {
            c.quota.give_back(s, &self.est, true);
        }
        let cmd = Command::Spend {
            id: format!("{}-{}", c.id, uuid::Uuid::now_v7()),
            node: c.id,
            period: self.period.clone(),
            scopes: self.scopes.clone(),
            model: self.model.clone(),
            tokens,
            cost_usd: cost,
            reserved_tokens: self.est.tokens,
            reserved_cost_usd: self.est.cost_usd,
        };
        tokio::spawn(async move {
            for attempt in 0..5u32 {
                match c.proposer.propose(cmd.clone()).await {
                    Ok(_) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, attempt, "spend not committed yet; retrying");
                        tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                    }
                }
            }
            tracing::error!(
                tokens,
                cost,
                "spend could not be committed; the cluster budget misses it"
            );
        });
    }

    /// Give the reservation back to this node's slices (the call did not happen).
    pub fn release(mut self, c: &Cluster) {
        self.settled = true;
        for s in &self.limited {
            c.quota.give_back(s, &self.est, false);
        }
    }
}

impl Drop for LeaseHold {
    fn drop(&mut self) {
        if !self.settled {
            tracing::debug!("lease hold dropped unsettled");
        }
    }
}

/// Return idle budget slices to the cluster, so a node that stopped working does not sit on
/// allowance others need.
pub async fn return_idle_slices(c: &Cluster) {
    for (scope, tokens, cost_usd) in c.quota.take_idle_slices() {
        if let Err(e) = c
            .proposer
            .propose(Command::ReturnBudget {
                node: c.id,
                scope: scope.clone(),
                tokens,
                cost_usd,
            })
            .await
        {
            tracing::debug!(error = %e, %scope, "budget slice not returned; it expires with this node");
        }
        c.quota.returned(&scope, tokens, cost_usd);
    }
}

/// Take one request and `tokens` from this node's slice of every rate-limited `scope`'s current
/// bucket (see `openclaw_cluster::lease`: sliding windows cut into buckets), asking for more or
/// waiting for the next bucket until `deadline` passes. The limits are read again (`limits`)
/// each time round, so a hot reload reaches calls that are already waiting.
async fn acquire_rate(
    c: &Cluster,
    scopes: &[String],
    limits_of: &LimitsOf,
    tokens: u64,
    deadline: tokio::time::Instant,
) -> Result<(), LimitError> {
    for scope in scopes {
        loop {
            let limits = limits_of(scope);
            if limits.requests.is_none() && limits.tokens.is_none() {
                break;
            }
            let (bucket_ms, span) = rate_buckets(limits.window_ms.max(1000));
            let bucket = now_ms() / bucket_ms;
            if take_rate(c, scope, bucket, bucket_ms, tokens, &limits) {
                break;
            }
            let (want_requests, want_tokens) = rate_ask(&limits, live_nodes(c), span, tokens);
            let cmd = Command::LeaseRate {
                node: c.id,
                scope: scope.clone(),
                bucket,
                bucket_ms,
                span,
                limit: RateLimit {
                    requests: limits.requests.map(u64::from),
                    tokens: limits.tokens,
                },
                want_requests,
                want_tokens,
            };
            if let Ok(Reply::RateSlice {
                requests,
                tokens: t,
            }) = c.proposer.propose(cmd).await
            {
                // A grant that arrives after its bucket ended is not spent: the calls would
                // reach the provider in a later bucket, outside the window the grant was
                // checked against. It is given back so it does not fill the window for nothing.
                if now_ms() / bucket_ms != bucket {
                    return_unspent(
                        c,
                        scope,
                        Unspent {
                            bucket,
                            bucket_ms,
                            requests,
                            tokens: t,
                        },
                    );
                    continue;
                }
                add_rate(c, scope, bucket, bucket_ms, requests, t);
            }
            if now_ms() / bucket_ms != bucket {
                continue;
            }
            if take_rate(c, scope, bucket, bucket_ms, tokens, &limits) {
                break;
            }
            // The sliding window is used up cluster-wide: ask again when the next bucket starts
            // (the oldest bucket's grants leave the window then; a raised limit is seen too).
            let next = tokio::time::Instant::now()
                + Duration::from_millis(
                    (bucket + 1) * bucket_ms - now_ms().min((bucket + 1) * bucket_ms),
                );
            if next > deadline {
                return Err(LimitError::RateLimited {
                    scope: scope.clone(),
                    reason: "the cluster's quota for this window is used up",
                    retry_after: next.saturating_duration_since(tokio::time::Instant::now()),
                });
            }
            tokio::time::sleep_until(next).await;
        }
    }
    Ok(())
}

/// What to ask for in one bucket: `(requests, tokens)` — this node's fair share of the
/// window's limit spread over its `span + 1` buckets, at least what the call needs, at most a
/// quarter of the limit (a slice not spent within its bucket is lost to the window).
fn rate_ask(limits: &window::Limits, nodes: usize, span: u64, tokens: u64) -> (u64, u64) {
    let per_bucket = |l: u64| (l / (span + 1)).max(1) * 2;
    let requests = limits
        .requests
        .map(u64::from)
        .map(|r| slice_size(Some(per_bucket(r)), nodes, 1, (r / 4).max(1)))
        .unwrap_or(1);
    let tokens = match limits.tokens {
        Some(t) => slice_size(Some(per_bucket(t)), nodes, tokens, (t / 4).max(tokens)),
        None => tokens,
    };
    (requests, tokens)
}

fn take_rate(
    c: &Cluster,
    scope: &str,
    bucket: u64,
    bucket_ms: u64,
    tokens: u64,
    limits: &window::Limits,
) -> bool {
    let (taken, left) = {
        let mut g = lock(&c.quota.rate);
        let p = g.entry(scope.to_string()).or_default();
        let left = p.roll(bucket, bucket_ms);
        let req_ok = limits.requests.is_none() || p.requests >= 1;
        let tok_ok = limits.tokens.is_none() || p.tokens >= tokens;
        let taken = req_ok && tok_ok;
        if taken {
            p.requests = p.requests.saturating_sub(1);
            p.tokens = p.tokens.saturating_sub(tokens);
        }
        (taken, left)
    };
    if let Some(left) = left {
        return_unspent(c, scope, left);
    }
    taken
}

fn add_rate(c: &Cluster, scope: &str, bucket: u64, bucket_ms: u64, requests: u64, tokens: u64) {
    let left = {
        let mut g = lock(&c.quota.rate);
        let p = g.entry(scope.to_string()).or_default();
        if p.bucket_ms == bucket_ms && p.bucket > bucket {
            // Another call moved the pool on while this grant was in flight: it is late.
            Some(Unspent {
                bucket,
                bucket_ms,
                requests,
                tokens,
            })
        } else {
            let left = p.roll(bucket, bucket_ms);
            p.requests += requests;
            p.tokens += tokens;
            left
        }
    };
    if let Some(left) = left {
        return_unspent(c, scope, left);
    }
}

/// Give an unspent slice back in the background (`Command::ReturnRate`). One try: if it does
/// not commit, the grant keeps its place in the window, which is what happened before returns
/// existed (safe, only wasteful).
fn return_unspent(c: &Cluster, scope: &str, u: Unspent) {
    if u.requests == 0 && u.tokens == 0 {
        return;
    }
    let proposer = c.proposer.clone();
    let cmd = Command::ReturnRate {
        node: c.id,
        scope: scope.to_string(),
        bucket: u.bucket,
        bucket_ms: u.bucket_ms,
        requests: u.requests,
        tokens: u.tokens,
    };
    let scope = scope.to_string();
    tokio::spawn(async move {
        if let Err(e) = proposer.propose(cmd).await {
            tracing::debug!(error = %e, %scope, "unspent rate slice not returned; it ages out of the window");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool moving to another bucket (or another bucket width) hands back what its slice
    /// still held; an empty or current pool hands back nothing.
    #[test]
    fn a_pool_leaving_its_bucket_returns_what_it_did_not_spend() {
        let pool = |bucket, bucket_ms, requests, tokens| RatePool {
            bucket,
            bucket_ms,
            requests,
            tokens,
        };
        let unspent = |bucket, bucket_ms, requests, tokens| Unspent {
            bucket,
            bucket_ms,
            requests,
            tokens,
        };
        // (name, pool, new bucket, new width, returned)
        let cases = [
            ("same bucket", pool(7, 1000, 3, 30), 7, 1000, None),
            ("fresh pool", pool(0, 0, 0, 0), 7, 1000, None),
            ("spent to zero", pool(7, 1000, 0, 0), 8, 1000, None),
            (
                "leftovers",
                pool(7, 1000, 3, 30),
                8,
                1000,
                Some(unspent(7, 1000, 3, 30)),
            ),
            (
                "tokens only",
                pool(7, 1000, 0, 30),
                9,
                1000,
                Some(unspent(7, 1000, 0, 30)),
            ),
            (
                "width changed",
                pool(7, 1000, 1, 0),
                14,
                500,
                Some(unspent(7, 1000, 1, 0)),
            ),
        ];
        for (name, mut p, bucket, bucket_ms, want) in cases {
            assert_eq!(p.roll(bucket, bucket_ms), want, "{name}");
            assert_eq!((p.bucket, p.bucket_ms), (bucket, bucket_ms), "{name}");
            if want.is_some() {
                assert_eq!(
                    (p.requests, p.tokens),
                    (0, 0),
                    "{name}: nothing carried over"
                );
            }
        }
    }

    #[test]
    fn rate_asks_are_a_fair_share_of_one_bucket() {
        let limits = |requests, tokens| window::Limits {
            requests,
            tokens,
            concurrent: None,
            window_ms: 60_000,
        };
        // (name, limits, live nodes, span, tokens the call needs, want)
        let cases = [
            (
                "120 rpm, 3 nodes, 60 buckets",
                limits(Some(120), None),
                3,
                60,
                10,
                (1, 10),
            ),
            (
                "6000 rpm, 2 nodes",
                limits(Some(6000), None),
                2,
                60,
                10,
                (49, 10),
            ),
            ("4 per window", limits(Some(4), None), 3, 5, 10, (1, 10)),
            (
                "tokens: at least the call's estimate",
                limits(None, Some(600)),
                3,
                5,
                40,
                (1, 40),
            ),
            (
                "tokens: a share when it is larger",
                limits(None, Some(600_000)),
                2,
                5,
                40,
                (1, 50_000),
            ),
            ("unlimited", limits(None, None), 3, 60, 7, (1, 7)),
        ];
        for (name, l, nodes, span, need, want) in cases {
            assert_eq!(rate_ask(&l, nodes, span, need), want, "{name}");
        }
    }
}

//! Budgets (§18.7): the pure rules ([`rules`]: periods, reserve/settle over counters,
//! thresholds, scope state), the accountant actor that owns the counters, the reservations, the
//! fired thresholds and the pause/downgrade gate ([`accountant`]), the webhook notices
//! ([`notify`]), and [`Budget`], the handle callers use: reserve a call's estimate before it,
//! settle the real usage after it ([`Held`]).
//!
//! In a cluster the limits are shared: [`SharedBudget`] is the seam (this node's lease of the
//! cluster's remaining budget, the cluster's counters, once-per-cluster threshold claims).
//! Cluster mode implements it; this folder never knows Raft exists.

pub mod accountant;
pub mod notify;
pub mod rules;

use std::sync::Arc;
use std::time::Duration;

use crate::config::ConfigCell;
use crate::supervisor::Current;
use accountant::{AccountantMsg, BudgetGate, ReservationId};
use openclaw_proto::ops::BudgetView;
use rules::{Estimate, Exhausted, Limits};

/// How long a caller waits for the accountant's answer.
pub const ACCOUNTANT_CALL_TIMEOUT_MS: u64 = 5_000;
/// Attempts to reach the accountant (it may be restarting), [`ACCOUNTANT_RETRY_PAUSE`] apart.
pub const ACCOUNTANT_ATTEMPTS: u32 = 10;
pub const ACCOUNTANT_RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Work that may not run now because of the budget (the scope that refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetWait(pub String);

/// The accountant is not running (restarting, or given up on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the budget accountant is restarting; retry")]
pub struct AccountantUnavailable;

/// One budget scope as the cluster sees it, for the current period.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedScope {
    pub scope: String,
    pub spent_tokens: u64,
    pub spent_cost_usd: f64,
    /// The slices other nodes hold (what they may still spend).
    pub others_tokens: u64,
    pub others_cost_usd: f64,
    /// Of those, the slices of nodes that are down: their unsettled estimate.
    pub dead: Vec<DeadLease>,
}

/// A down node's budget slice: granted and never settled (an upper bound of what it may have
/// spent without settling), withheld until `expires_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLease {
    pub node: u64,
    pub tokens: u64,
    pub cost_usd: f64,
    pub expires_ms: u64,
}

/// A reservation against this node's share of the cluster's budget.
pub trait SharedHold: Send {
    /// The call used `tokens` / `cost`: commit the spend (in the background).
    fn settle(self: Box<Self>, tokens: u64, cost: f64);
    /// The call did not happen: give the reservation back to this node's share.
    fn release(self: Box<Self>);
}

/// The seam to a cluster-wide budget. Cluster mode implements it; a node alone has none.
#[async_trait::async_trait]
pub trait SharedBudget: Send + Sync {
    /// Reserve `est` against this node's share of every limited scope of `scopes` for `period`.
    /// Critical work is never refused (it is counted).
    async fn reserve(
        &self,
        period: &str,
        scopes: &[(String, Limits)],
        critical: bool,
        model: &str,
        est: Estimate,
    ) -> Result<Box<dyn SharedHold>, Exhausted>;
    /// The cluster's counters for `period`.
    fn counters(&self, period: &str) -> Vec<SharedScope>;
    /// Claim the notice of (period, scope, percent): true when this node is the one to send it.
    async fn claim_threshold(
        &self,
        period: &str,
        scope: &str,
        percent: u32,
    ) -> Result<bool, String>;
}

/// A granted reservation; released when dropped unsettled (failure, preemption, cancel).
pub struct Held {
    id: ReservationId,
    accountant: Option<ractor::ActorRef<AccountantMsg>>,
    /// In a cluster: the reservation against this node's share of the cluster's budget.
    shared: Option<Box<dyn SharedHold>>,
}

impl Held {
    fn none() -> Held {
        Held {
            id: 0,
            accountant: None,
            shared: None,
        }
    }

    /// The call used `tokens` / `cost`.
    pub fn settle(mut self, tokens: u64, cost: f64) {
        if let Some(a) = self.accountant.take() {
            let _ = a.cast(AccountantMsg::Settle {
                id: self.id,
                tokens,
                cost,
            });
        }
        if let Some(s) = self.shared.take() {
            s.settle(tokens, cost);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(a) = self.accountant.take() {
            let _ = a.cast(AccountantMsg::Release { id: self.id });
        }
        if let Some(s) = self.shared.take() {
            s.release();
        }
    }
}

/// The handle to the budget: the accountant, the gate it writes, the shared budget.
#[derive(Clone)]
pub struct Budget {
    pub cfg: ConfigCell,
    pub accountant: Current<AccountantMsg>,
    pub gate: Arc<BudgetGate>,
    pub shared: Option<Arc<dyn SharedBudget>>,
}

impl Budget {
    /// Non-critical work of `agent` must wait.
    pub fn paused_for(&self, agent: &str) -> bool {
        self.gate.paused_for(agent)
    }

    /// Some scope is paused.
    pub fn any_paused(&self) -> bool {
        self.gate.any_paused()
    }

    /// Work of `agent` goes to the cheapest model.
    pub fn downgrade_for(&self, agent: &str) -> bool {
        self.gate.downgrade_for(agent)
    }

    /// `GET /api/budget`.
    pub async fn view(&self) -> Result<BudgetView, AccountantUnavailable> {
        let a = self.accountant.get().ok_or(AccountantUnavailable)?;
        ractor::call_t!(a, AccountantMsg::Snapshot, ACCOUNTANT_CALL_TIMEOUT_MS)
            .map_err(|_| AccountantUnavailable)
    }

    /// Reserve the budget for one call of `model` by `agent` (prompt tokens plus the output
    /// cap, or `budget.default_output_tokens`, at the model's price). Critical work is always
    /// granted; when the accountant cannot be reached, critical work runs unreserved and other
    /// work waits.
    pub async fn reserve(
        &self,
        agent: &str,
        critical: bool,
        model: &str,
        prompt_tokens: u64,
        max_tokens: Option<u32>,
    ) -> Result<Held, BudgetWait> {
        let cfg = self.cfg.get();
        if !cfg.budget.enabled {
            return Ok(Held::none());
        }
        let est_out = max_tokens
            .map(u64::from)
            .unwrap_or(cfg.budget.default_output_tokens);
        let est = Estimate {
            tokens: prompt_tokens + est_out,
            cost_usd: cfg
                .models
                .get(model)
                .map(|m| m.price.cost(prompt_tokens, est_out))
                .unwrap_or(0.0),
        };
        let period = accountant::current_period(&cfg);
        let scopes = rules::scopes_for(&cfg.budget, agent);
        drop(cfg);
        for _ in 0..ACCOUNTANT_ATTEMPTS {
            if let Some(a) = self.accountant.get() {
                let res = ractor::call_t!(
                    a,
                    |reply| AccountantMsg::Reserve {
                        agent: agent.to_string(),
                        critical,
                        est_tokens: est.tokens,
                        est_cost: est.cost_usd,
                        reply,
                    },
                    ACCOUNTANT_CALL_TIMEOUT_MS
                );
                match res {
                    Ok(Ok(0)) => return Ok(Held::none()),
                    Ok(Ok(id)) => {
                        let mut held = Held {
                            id,
                            accountant: Some(a),
                            shared: None,
                        };
                        // In a cluster the limits are shared: the call must also fit this
                        // node's share of the cluster's remaining budget.
                        if let Some(shared) = &self.shared {
                            match shared.reserve(&period, &scopes, critical, model, est).await {
                                Ok(h) => held.shared = Some(h),
                                Err(e) => {
                                    if let Some(a) = &held.accountant {
                                        let _ = a.cast(AccountantMsg::ClusterRefused {
                                            scope: e.scope.clone(),
                                            est,
                                        });
                                    }
                                    return Err(BudgetWait(e.scope));
                                }
                            }
                        }
                        return Ok(held);
                    }
                    Ok(Err(e)) => return Err(BudgetWait(e.scope)),
                    Err(_) => {}
                }
            }
            tokio::time::sleep(ACCOUNTANT_RETRY_PAUSE).await;
        }
        if critical {
            tracing::warn!("budget accountant unavailable; critical task runs unreserved");
            Ok(Held::none())
        } else {
            tracing::warn!("budget accountant unavailable; task waits");
            Err(BudgetWait("accountant_unavailable".into()))
        }
    }
}

//! The operator views of one node: `GET /api/budget` ([`BudgetView`]) and `GET /api/limits`
//! ([`LimitsView`]), `GET /api/cron` ([`CronView`]).

use serde::{Deserialize, Serialize};

/// `GET /api/budget`: the current period's budget scopes as this node's accountant sees them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetView {
    pub enabled: bool,
    pub period: String,
    pub scopes: Vec<BudgetScopeView>,
}

/// One budget scope (`total`, `agent:<name>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetScopeView {
    pub scope: String,
    pub spent_tokens: u64,
    pub spent_cost_usd: f64,
    /// Reserved by calls in flight on this node.
    pub reserved_tokens: u64,
    pub reserved_cost_usd: f64,
    /// Cluster mode: the budget slices other nodes hold (what they may still spend without
    /// asking the cluster); 0 on a node running alone.
    #[serde(default)]
    pub others_leased_tokens: u64,
    #[serde(default)]
    pub others_leased_cost_usd: f64,
    pub limit_tokens: Option<u64>,
    pub limit_cost_usd: Option<f64>,
    pub used_ratio: f64,
    pub fired_thresholds: Vec<u32>,
    /// `ok`, `downgraded` or `paused`.
    pub state: String,
    /// Cluster mode: budget slices of nodes that are down in the cluster's liveness view —
    /// granted and never settled, so an upper bound of what each may have spent unreported —
    /// until they expire (the slice is withheld until then).
    #[serde(default)]
    pub unsettled_dead_nodes: Vec<UnsettledDeadNode>,
    /// The sum of `unsettled_dead_nodes`.
    #[serde(default)]
    pub unsettled_dead_tokens: u64,
    #[serde(default)]
    pub unsettled_dead_cost_usd: f64,
}

/// A down node's budget slice: its unsettled spend estimate (granted − settled, an upper bound).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnsettledDeadNode {
    pub node: u64,
    pub tokens: u64,
    pub cost_usd: f64,
    /// RFC 3339 (UTC): when the estimate stops being reported and the slice returns to the pool.
    pub lease_expires_at: String,
}

/// `GET /api/limits`: the headroom of every rate limiter of this node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LimitsView {
    pub node: String,
    pub window_seconds: u64,
    pub max_wait_ms: u64,
    pub scopes: Vec<LimitScopeView>,
}

/// Headroom of one rate-limit scope (a model or `global`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitScopeView {
    pub scope: String,
    pub window_seconds: u64,
    pub requests_per_window: Option<u32>,
    pub tokens_per_window: Option<u64>,
    pub concurrent_requests: Option<u32>,
    pub requests_in_window: u64,
    pub tokens_in_window: u64,
    pub remaining_requests: Option<u64>,
    pub remaining_tokens: Option<u64>,
    pub in_flight: u64,
    pub waiters: usize,
    pub backoff_ms: u64,
    pub consecutive_429s: u32,
}

/// `GET /api/cron`: the configured cron jobs, their next firing and the last one fired.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CronView {
    pub jobs: Vec<CronJobView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CronJobView {
    pub name: String,
    pub schedule: String,
    /// The zone the schedule is read in (`UTC` when not configured).
    pub timezone: String,
    /// `agent`, `cost_report` or `token_stats`.
    pub kind: String,
    /// RFC 3339 (UTC); `None` when the schedule has no further firing.
    pub next_at: Option<String>,
    pub last: Option<CronLastView>,
}

/// The latest scheduled firing of a job, cluster-wide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CronLastView {
    pub scheduled_at: String,
    /// The task it created (kind `agent`); `None` for the built-in kinds.
    pub task_id: Option<String>,
    /// The node that fired it.
    pub node: String,
    /// The task's status, or `delivered`/`failed` for the built-in kinds.
    pub status: Option<String>,
}

/// Answer of `POST /api/cron/{name}/run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CronRunView {
    pub job: String,
    pub scheduled_at: String,
    /// The task created (kind `agent`).
    pub task_id: Option<String>,
    /// What happened: the task's status, or `delivered`/`failed` for the built-in kinds.
    pub status: String,
}

//! The replicated state and its `apply`: a pure, deterministic function of (state, batch).
//!
//! No clock (time is the batch's `now_ms`, stamped by the leader), no randomness, ordered maps
//! only, so every replica computes the same state and the same replies.

use std::collections::{BTreeMap, BTreeSet};

use openclaw_proto::TaskRecord;
use serde::{Deserialize, Serialize};

use crate::types::*;

/// What the cluster knows of one node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    pub http_addr: String,
    pub workers: u32,
    /// Alive until this time (leader clock); renewed by heartbeats.
    pub lease_until_ms: u64,
    pub last_heartbeat_ms: u64,
    /// Declared dead by `Expire` (a later heartbeat revives it).
    pub dead: bool,
}

/// One budget scope for the current period: settled spend and the slices nodes hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetScope {
    pub limit: BudgetLimit,
    pub spent_tokens: u64,
    pub spent_cost_usd: f64,
    /// Unreserved allowance each node holds.
    pub slices: BTreeMap<NodeId, Slice>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Slice {
    pub tokens: u64,
    pub cost_usd: f64,
}

/// One rate-limit scope's current minute: what was granted, to whom.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateWindow {
    pub minute: u64,
    pub limit: RateLimit,
    pub granted_requests: u64,
    pub granted_tokens: u64,
    pub per_node: BTreeMap<NodeId, (u64, u64)>,
}

/// The whole replicated state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    pub tasks: BTreeMap<String, TaskRecord>,
    pub idempotency: BTreeMap<String, String>,
    pub seq: u64,
    pub nodes: BTreeMap<NodeId, NodeState>,
    pub budget_period: String,
    pub budget: BTreeMap<String, BudgetScope>,
    /// Spend per model in the current period: (tokens, cost).
    pub model_spend: BTreeMap<String, (u64, f64)>,
    /// Threshold actions claimed: (period, scope, percent).
    pub thresholds: BTreeSet<(String, String, u32)>,
    pub rate: BTreeMap<String, RateWindow>,
    /// Time of the last applied batch.
    pub now_ms: u64,
}

impl ClusterState {
    /// Apply one batch; returns one reply per command and the events for the local node.
    pub fn apply(&mut self, req: &Request) -> (Response, Vec<Event>) {
        let _ = req;
        (Response::default(), Vec::new())
    }
}

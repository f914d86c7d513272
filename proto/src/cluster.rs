//! `GET /api/cluster` (and `openclaw-node status --json`): the cluster as one node sees it.
//! Node ids are numbers. The chaos suite and the `status` command read these types; the node
//! writes them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The whole status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatusView {
    /// The node that answered.
    pub node_id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    /// This node's Raft role: `leader`, `follower`, `learner`, `candidate`, ...
    pub role: String,
    #[serde(default)]
    pub last_log_index: Option<u64>,
    #[serde(default)]
    pub last_applied: Option<u64>,
    pub nodes: Vec<ClusterNodeView>,
    /// Cluster-wide task counts by status (`queued`, `running`, `succeeded`, ...).
    #[serde(default)]
    pub tasks: BTreeMap<String, u64>,
    /// Queued tasks per priority level name.
    #[serde(default)]
    pub queued_by_level: BTreeMap<String, u32>,
    /// The replicated budget counters and the leases nodes hold, one per limited scope.
    #[serde(default)]
    pub budgets: Vec<BudgetLeaseView>,
    /// The replicated rate-limit windows and what was granted to whom.
    #[serde(default)]
    pub rate_limits: Vec<RateWindowView>,
    /// Commands waiting in this node's proposer.
    #[serde(default)]
    pub proposals_waiting: u64,
}

impl ClusterStatusView {
    /// The replicated spend of budget `scope` (`None` before anything leased or spent in it).
    pub fn spent_tokens(&self, scope: &str) -> Option<u64> {
        self.budgets
            .iter()
            .find(|b| b.scope == scope)
            .map(|b| b.spent_tokens)
    }

    /// The leader this node believes in: its `leader`, or itself when its role says so.
    pub fn believed_leader(&self) -> Option<u64> {
        match self.leader {
            Some(l) => Some(l),
            None if self.role == "leader" => Some(self.node_id),
            None => None,
        }
    }
}

/// One member.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterNodeView {
    pub id: u64,
    /// The cluster (Raft) address.
    pub address: String,
    pub http: String,
    #[serde(default)]
    pub mesh: String,
    /// `leader`, `follower` or `learner`.
    pub role: String,
    pub voter: bool,
    pub alive: bool,
    #[serde(default)]
    pub mesh_connected: Option<bool>,
    #[serde(default)]
    pub last_heartbeat_ms: Option<u64>,
    #[serde(default)]
    pub last_contact_ms: Option<u64>,
    /// Entries behind the leader (known on the leader only).
    #[serde(default)]
    pub lag: Option<u64>,
    #[serde(default)]
    pub workers: u32,
    #[serde(default)]
    pub tasks: NodeTasksView,
}

/// A node's tasks per priority level name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeTasksView {
    pub queued: BTreeMap<String, u32>,
    pub running: BTreeMap<String, u32>,
}

/// One budget scope: the replicated spend and the slices nodes hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetLeaseView {
    pub scope: String,
    pub period: String,
    pub spent_tokens: u64,
    pub spent_cost_usd: f64,
    pub limit_tokens: Option<u64>,
    pub limit_cost_usd: Option<f64>,
    pub leased_tokens: u64,
    pub leased_cost_usd: f64,
    pub leases: Vec<LeaseView>,
    /// Of `leases`, those of nodes that are down: their unsettled spend estimate (see
    /// [`crate::ops::UnsettledDeadNode`]).
    #[serde(default)]
    pub unsettled_dead_nodes: Vec<crate::ops::UnsettledDeadNode>,
}

/// What one node holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LeaseView {
    pub node: u64,
    pub tokens: u64,
    pub cost_usd: f64,
}

/// One rate-limit scope's sliding window ending now: what was granted over it, and to whom in
/// its newest bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RateWindowView {
    pub scope: String,
    /// The window's width and the bucket it is cut into.
    pub window_ms: u64,
    pub bucket_ms: u64,
    pub limit_requests: Option<u64>,
    pub limit_tokens: Option<u64>,
    pub granted_requests: u64,
    pub granted_tokens: u64,
    pub headroom_requests: Option<u64>,
    pub headroom_tokens: Option<u64>,
    pub per_node: Vec<RateShareView>,
}

/// What one node was granted in the newest bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RateShareView {
    pub node: u64,
    pub requests: u64,
    pub tokens: u64,
}

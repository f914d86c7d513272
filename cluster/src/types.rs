//! The replicated protocol's types: node ids and addresses, the Raft type configuration, and the
//! commands a Raft entry carries (many per entry: [`Request`] is a batch), their replies, and the
//! events `apply` reports to the local node.
//!
//! Everything here is encoded with postcard through [`openclaw_proto::codec`] on the wire and in
//! the log; enums only grow at the end so old entries keep decoding.

use std::fmt;

use openclaw_proto::api::{
    ContextCut, FallbackStep, MemoryChunkRef, PromptBreakdown, TaskErrorView, TokenCounts,
};
use openclaw_proto::{CronMark, TaskRecord, TaskStatus};
use serde::{Deserialize, Serialize};

/// A node's id in Raft. Persisted in the node's data dir; never reused.
pub type NodeId = u64;

/// How to reach a node: the Raft/cluster HTTP address, its public HTTP API, its actor mesh port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub cluster_addr: String,
    pub http_addr: String,
    pub mesh_addr: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cluster={} http={}", self.cluster_addr, self.http_addr)
    }
}

openraft::declare_raft_types!(
    /// openclaw-node's Raft types.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = Member,
        SnapshotData = tokio::fs::File,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
pub type StorageError = openraft::StorageError<NodeId>;

/// One Raft entry's payload: a batch of commands, stamped with the leader's clock when proposed.
/// `apply` reads time only from here.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub now_ms: u64,
    pub cmds: Vec<Command>,
}

/// One reply per command of the batch, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub replies: Vec<Reply>,
}

/// How a run ended (what the owner reports with `Finish`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub status: TaskStatus,
    pub model: Option<String>,
    pub route: Option<String>,
    pub fallbacks: Vec<FallbackStep>,
    pub output: Option<String>,
    pub tokens: TokenCounts,
    pub cost_usd: f64,
    pub error: Option<TaskErrorView>,
    pub cache_hit: bool,
    pub cache_score: Option<f64>,
    pub prompt: PromptBreakdown,
    pub context: ContextCut,
    /// The memory chunks the knowledge cache put in the prompt.
    pub memory_chunks: Vec<MemoryChunkRef>,
}

impl Outcome {
    pub fn failed(code: &str, message: impl Into<String>) -> Outcome {
        Outcome {
            status: TaskStatus::Failed,
            model: None,
            route: None,
            fallbacks: Vec::new(),
            output: None,
            tokens: TokenCounts::default(),
            cost_usd: 0.0,
            error: Some(TaskErrorView {
                code: code.to_string(),
                message: message.into(),
            }),
            cache_hit: false,
            cache_score: None,
            prompt: PromptBreakdown::default(),
            context: ContextCut::default(),
            memory_chunks: Vec::new(),
        }
    }

    pub fn cancelled() -> Outcome {
        Outcome {
            status: TaskStatus::Cancelled,
            ..Outcome::failed("cancelled", "cancelled by request")
        }
    }
}

/// A node's report of itself, carried by `Heartbeat`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    pub http_addr: String,
    /// Worker slots (`server.workers`).
    pub workers: u32,
    /// How long this heartbeat keeps the node alive, from the entry's time.
    pub lease_ms: u64,
}

/// Why a run stopped without an outcome (it replaced a `preempted: bool`; `Stopped` and
/// `Preempted` keep that bool's encoding, 0 and 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequeueReason {
    /// Shut down, crashed, or found running with no worker: the run may have called the
    /// provider, so the attempt counts.
    Stopped,
    /// Preempted by more urgent work: counts a preemption; the attempt counts.
    Preempted,
    /// Held by the budget before any provider call: the attempt is taken back and a hold
    /// counted instead.
    BudgetHeld,
}

/// One state change. Commands are validated by `apply`; an invalid one gets a `Reply::Rejected`
/// and changes nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// A new task. `apply` assigns its sequence number, its owner (the least-loaded live node,
    /// or a node running lower-priority work for a task that may preempt) and epoch 1.
    Admit {
        rec: Box<TaskRecord>,
        /// The node that took the request: owner when no live node is known yet.
        via: NodeId,
        /// The proposer's config lets this priority preempt running work.
        may_preempt: bool,
    },
    /// The owner takes its queued task to run it: Running, epoch + 1, attempts + 1 (taken back
    /// if the run is held by the budget before any provider call).
    Start { id: String, node: NodeId },
    /// The run under `epoch` ended.
    Finish {
        id: String,
        epoch: u64,
        outcome: Box<Outcome>,
    },
    /// The run under `epoch` stopped without an outcome (preempted, shut down, held by the
    /// budget): Queued again on the same owner, epoch + 1 (see `transition::requeue`).
    Requeue {
        id: String,
        epoch: u64,
        reason: RequeueReason,
    },
    /// Cancel a queued task.
    Cancel { id: String },
    /// An idle node takes up to `max` queued tasks from busy nodes.
    Steal { node: NodeId, max: u32 },
    /// A node is alive until `now + report.lease_ms`.
    Heartbeat { node: NodeId, report: NodeReport },
    /// The leader's sweep: nodes whose lease ended are marked dead and their tasks are re-owned
    /// by live nodes. A dead node's budget slices stay withheld (its unsettled estimate, see
    /// `lease::dead_lease`) until they expire; the sweep after that returns them.
    Expire,
    /// A node leaves the cluster: like `Expire` for that node, and it is forgotten.
    Leave { node: NodeId },
    /// Forget finished tasks that ended before `before_ms`.
    Purge { before_ms: u64 },
    /// Ask for (more of) a slice of a budget scope's remaining allowance for `period`.
    LeaseBudget {
        node: NodeId,
        period: String,
        scope: String,
        limit: BudgetLimit,
        want_tokens: u64,
        want_cost_usd: f64,
    },
    /// Settle one call: real usage is added to the scopes' spend, the reservation leaves the
    /// node's slices.
    Spend {
        /// Unique per settlement: a `Spend` retried after an ambiguous failure counts once.
        id: String,
        node: NodeId,
        period: String,
        scopes: Vec<String>,
        model: String,
        tokens: u64,
        cost_usd: f64,
        reserved_tokens: u64,
        reserved_cost_usd: f64,
    },
    /// Give (part of) a budget slice back: the node is idle.
    ReturnBudget {
        node: NodeId,
        scope: String,
        tokens: u64,
        cost_usd: f64,
    },
    /// Claim a threshold action for a period: replied `Claimed(true)` exactly once per
    /// (period, scope, percent) in the whole cluster.
    ClaimThreshold {
        period: String,
        scope: String,
        percent: u32,
    },
    /// Ask for a slice of a rate-limit scope's quota for one sub-window **bucket**
    /// (`bucket` = Unix ms / `bucket_ms`). The scope's window spans `span` buckets; the grants of
    /// any `span + 1` consecutive buckets stay within the limit, so every sliding window of the
    /// scope's width does too (see [`crate::lease::rate_buckets`]).
    LeaseRate {
        node: NodeId,
        scope: String,
        bucket: u64,
        bucket_ms: u64,
        span: u64,
        limit: RateLimit,
        want_requests: u64,
        want_tokens: u64,
    },
    /// Give back the unspent part of a rate slice of `bucket`: a grant whose reply came after
    /// its bucket ended, or what was left of a slice when its bucket ended. The node never
    /// spends it, so the bucket's grants shrink by it and the window has that much more room
    /// (otherwise an unspent grant keeps its place in every window that spans its bucket).
    /// Ignored when the scope's bucket width changed since.
    ReturnRate {
        node: NodeId,
        scope: String,
        bucket: u64,
        bucket_ms: u64,
        requests: u64,
        tokens: u64,
    },
    /// Retention: forget finished tasks, oldest first — every one that ended before
    /// `before_ms` (`server.result_ttl_seconds`), and more while more than `keep_max` are kept
    /// (`server.tasks_retained_max`); at most `max` (capped at [`crate::state::PURGE_BATCH_MAX`])
    /// per command. Replied `Purged(n)`; a full batch means more may be due.
    Retain {
        before_ms: u64,
        keep_max: u64,
        max: u32,
    },
    /// Record one finished turn of a session (`Session::apply_turn` at the batch's time;
    /// idempotent per task). `node` ran the turn (the session sticks to it); `messages_max` and
    /// `sessions_max` are the proposer's bounds (a new session past `sessions_max` makes the
    /// least recently updated one leave).
    RecordTurn {
        turn: Box<openclaw_proto::session::TurnUpdate>,
        node: NodeId,
        messages_max: u32,
        sessions_max: u64,
    },
    /// Session expiry: forget sessions updated before `before_ms` (`session.ttl_hours`) and,
    /// least recently updated first, more while more than `keep_max` are kept
    /// (`session.sessions_max`); at most `max` (capped at
    /// [`crate::state::SESSION_SWEEP_BATCH_MAX`]). Replied `Purged(n)`.
    SweepSessions {
        before_ms: u64,
        keep_max: u64,
        max: u32,
    },
    /// Forget one session (`DELETE /api/sessions/{id}`). Replied `Purged(1)` if it existed,
    /// `Purged(0)` if not.
    RemoveSession { id: String },
    /// Move cron job `job`'s "last fired" mark forward to `mark` (see `state/cron.rs`):
    /// replied `Claimed(true)` when it moved — exactly once per (job, scheduled time) in the
    /// cluster — `Claimed(false)` when the mark was already there or later.
    CronMark { job: String, mark: CronMark },
    /// Write an agent's memory file (`PUT /api/agents/{agent}/memory/{path}`, see
    /// `state/memory.rs`): replied `Ok`, or `Rejected(MemoryRefused | MemoryFull)` with nothing
    /// changed. (Appended: earlier commands encode as before, no envelope bump.)
    PutMemory {
        agent: String,
        path: String,
        content: String,
    },
    /// Remove an agent's memory file: replied `Purged(1)` if it existed, `Purged(0)` if not.
    DeleteMemory { agent: String, path: String },
}

/// A budget scope's limits as the proposer's config has them (`None` = unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetLimit {
    pub tokens: Option<u64>,
    pub cost_usd: Option<f64>,
}

/// A rate-limit scope's quota per window as the proposer's config has it (`None` = unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub requests: Option<u64>,
    pub tokens: Option<u64>,
}

/// Why a command changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("task {0} not found")]
    NotFound(String),
    #[error("task {id}: stale epoch {given} (current {current})")]
    Fenced {
        id: String,
        given: u64,
        current: u64,
    },
    #[error("task {id} is {status}")]
    WrongState { id: String, status: String },
    #[error("task {id} is owned by node {owner}, not {node}")]
    NotOwner {
        id: String,
        owner: String,
        node: NodeId,
    },
    #[error("no live node can take the task")]
    NoLiveNode,
    #[error("node {0} is not a member")]
    UnknownNode(NodeId),
    /// An earlier task of the same session is not final yet.
    #[error("task {id} waits for an earlier turn of session {session}")]
    SessionBusy { id: String, session: String },
    /// The session has as many live tasks as it may.
    #[error("session {session} already has {max} tasks waiting; retry when one has finished")]
    SessionFull { session: String, max: u64 },
    /// Not a memory path or agent name (the reason says which).
    #[error("{0}")]
    MemoryRefused(String),
    /// A memory bound (file size, the agent's bytes or files).
    #[error("{0}")]
    MemoryFull(String),
}

/// The reply to one command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// The task after the change.
    Task(Box<TaskRecord>),
    /// `Admit` with an idempotency key already used: the first task.
    Duplicate(Box<TaskRecord>),
    Rejected(Rejection),
    /// Ids moved by `Steal` / `Expire` / `Leave`.
    Moved(Vec<String>),
    /// Nodes `Expire` declared dead.
    Expired(Vec<NodeId>),
    Purged(u64),
    /// The node's slice after a budget grant (what it may still reserve).
    BudgetSlice {
        tokens: u64,
        cost_usd: f64,
    },
    /// The node's slice of the minute after a rate grant.
    RateSlice {
        requests: u64,
        tokens: u64,
    },
    Claimed(bool),
    Ok,
}

/// What `apply` tells the local node about, so its scheduler and waiters follow the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The task is queued on `owner` (admitted, stolen, re-owned, requeued).
    Queued { id: String, owner: NodeId },
    /// `from` no longer owns the task (it moved or was cancelled while queued there).
    Revoked { id: String, from: NodeId },
    /// The task reached a final state.
    Finished { id: String },
    /// An agent's memory file was written or removed: the node rewrites that workspace file.
    MemoryChanged { agent: String, path: String },
}

/// A task owner as stored in [`TaskRecord::owner`]: the node id in decimal.
pub fn owner_name(node: NodeId) -> String {
    node.to_string()
}

/// The node id in [`TaskRecord::owner`], if any.
pub fn owner_id(rec: &TaskRecord) -> Option<NodeId> {
    rec.owner.as_deref().and_then(|o| o.parse().ok())
}

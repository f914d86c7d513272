//! The stored task envelope: what sled keeps (and, later, what Raft replicates) for one task.
//!
//! Encoded with [`crate::codec`] (postcard): no `skip_serializing_if`/`flatten` here.

use serde::{Deserialize, Serialize};

use crate::api::{
    ContextCut, FallbackStep, MemoryChunkRef, PromptBreakdown, TaskErrorView, TokenCounts,
};
use crate::{Complexity, Priority};

/// Lifecycle of a task. `Succeeded`, `Failed` and `Cancelled` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskStatus::Succeeded | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }
}

/// One task as stored. Times are Unix milliseconds stamped by the node that made the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: String,
    /// Monotonic admission order; FIFO within a priority level.
    pub seq: u64,
    pub agent: String,
    pub input: String,
    pub session_id: Option<String>,
    pub source: String,
    pub priority: Priority,
    pub task_type: Option<String>,
    pub complexity: Option<Complexity>,
    pub language: Option<String>,
    /// The model the caller asked for, if any.
    pub requested_model: Option<String>,
    /// The model that served (or is serving) the task.
    pub model: Option<String>,
    /// What chose the model (`explicit`, `rule:<name>`, `agent`, `default`).
    pub route: Option<String>,
    pub fallbacks: Vec<FallbackStep>,
    pub callback_url: Option<String>,
    pub idempotency_key: Option<String>,
    pub max_tokens: Option<u32>,
    pub cache: bool,
    /// Prompt template id (request cache `template` strategy).
    pub template_id: Option<String>,
    /// The template's parameters as canonical JSON (keys sorted), when given.
    pub template_params: Option<String>,
    pub status: TaskStatus,
    pub output: Option<String>,
    pub tokens: TokenCounts,
    pub cost_usd: f64,
    /// Runs that reached the model: started and not held by the budget before any provider
    /// call (a re-run after a crash or a preemption counts again; retries and fallbacks within
    /// one run are in `fallbacks`).
    pub attempts: u32,
    pub preemptions: u32,
    /// Times a run was held by the budget before any provider call and put back in the queue
    /// (these runs do not count as attempts).
    pub holds: u32,
    /// The node that owns (runs) the task.
    pub owner: Option<String>,
    /// Lease epoch of the owner; completion is accepted only for the current epoch (fencing).
    pub epoch: u64,
    pub error: Option<TaskErrorView>,
    pub cache_hit: bool,
    /// Under the `semantic` cache strategy: the similarity of the query that hit (1.0 for an
    /// identical one).
    pub cache_score: Option<f64>,
    pub prompt: PromptBreakdown,
    /// How the context layer cut the prompt.
    pub context: ContextCut,
    /// The memory chunks the knowledge cache put in the prompt, best first.
    pub memory_chunks: Vec<MemoryChunkRef>,
    pub created_at_ms: u64,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    /// The cron firing that created the task, if a cron job did.
    pub cron: Option<CronFiring>,
}

/// The cron firing behind a task: the job and the scheduled time (Unix ms) it fired for. A
/// manual `cron run` fires at the time it was asked (`manual`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronFiring {
    pub job: String,
    pub scheduled_at_ms: u64,
    pub manual: bool,
}

/// A cron job's latest scheduled firing (the replicated "last fired" mark, or the standalone
/// node's). Marks only move forward: a firing at or before the mark has been fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronMark {
    pub scheduled_at_ms: u64,
    /// The task it created (kind `agent`); `None` for the built-in kinds.
    pub task_id: Option<String>,
    /// The node that fired it.
    pub node: String,
}

impl TaskRecord {
    /// A new queued task with nothing but its id, agent, input and priority set: no owner, epoch
    /// 0, sequence 0 (the ledger or the Raft `apply` assigns it), source `api_call`, cache on.
    pub fn queued(id: &str, agent: &str, input: &str, priority: Priority) -> TaskRecord {
        TaskRecord {
            id: id.to_string(),
            seq: 0,
            agent: agent.to_string(),
            input: input.to_string(),
            session_id: None,
            source: "api_call".into(),
            priority,
            task_type: None,
            complexity: None,
            language: None,
            requested_model: None,
            model: None,
            route: None,
            fallbacks: Vec::new(),
            callback_url: None,
            idempotency_key: None,
            max_tokens: None,
            cache: true,
            template_id: None,
            template_params: None,
            status: TaskStatus::Queued,
            output: None,
            tokens: TokenCounts::default(),
            cost_usd: 0.0,
            attempts: 0,
            preemptions: 0,
            holds: 0,
            owner: None,
            epoch: 0,
            error: None,
            cache_hit: false,
            cache_score: None,
            prompt: PromptBreakdown::default(),
            context: ContextCut::default(),
            memory_chunks: Vec::new(),
            created_at_ms: 0,
            started_at_ms: None,
            finished_at_ms: None,
            cron: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_through_codec() {
        let rec = TaskRecord {
            id: "t1".into(),
            seq: 3,
            agent: "main".into(),
            input: "你好".into(),
            session_id: None,
            source: "api_call".into(),
            priority: Priority::High,
            task_type: Some("writing".into()),
            complexity: Some(Complexity::Low),
            language: None,
            requested_model: None,
            model: Some("gpt-4o-mini".into()),
            route: Some("default".into()),
            fallbacks: vec![FallbackStep {
                from: "gpt-4o".into(),
                to: "gpt-4o-mini".into(),
                reason: "timeout".into(),
            }],
            callback_url: None,
            idempotency_key: Some("k".into()),
            max_tokens: Some(10),
            cache: true,
            template_id: Some("daily".into()),
            template_params: Some(r#"{"day":"mon"}"#.into()),
            status: TaskStatus::Queued,
            output: None,
            tokens: TokenCounts::default(),
            cost_usd: 0.0,
            attempts: 0,
            preemptions: 0,
            holds: 0,
            owner: None,
            epoch: 0,
            error: None,
            cache_hit: false,
            cache_score: None,
            prompt: PromptBreakdown::default(),
            context: ContextCut::default(),
            memory_chunks: Vec::new(),
            created_at_ms: 1,
            started_at_ms: None,
            finished_at_ms: None,
            cron: Some(CronFiring {
                job: "daily".into(),
                scheduled_at_ms: 1_800_000_000_000,
                manual: false,
            }),
        };
        let bytes = crate::codec::encode(&rec).unwrap();
        let back: TaskRecord = crate::codec::decode(&bytes).unwrap();
        assert_eq!(back, rec);
    }
}

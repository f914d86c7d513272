//! The task API: `POST /api/tasks` body, `GET /api/tasks/{id}` answer, queue view, error body.
//!
//! Field names here are the contract clients rely on (SPEC §3); add fields, never rename.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The five priority levels of the chapter (§18.4). Lower value = more urgent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    Critical = 0,
    High = 1,
    Normal = 2,
    Low = 3,
    Background = 4,
}

impl Priority {
    pub const ALL: [Priority; 5] = [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::Low,
        Priority::Background,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
            Priority::Background => "background",
        }
    }

    pub fn level(self) -> u8 {
        self as u8
    }

    pub fn from_level(level: u8) -> Option<Priority> {
        Priority::ALL.get(level as usize).copied()
    }

    pub fn parse(s: &str) -> Option<Priority> {
        match s {
            "critical" => Some(Priority::Critical),
            "high" => Some(Priority::High),
            "normal" => Some(Priority::Normal),
            "low" => Some(Priority::Low),
            "background" => Some(Priority::Background),
            _ => s.parse::<u8>().ok().and_then(Priority::from_level),
        }
    }
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Priority {
    /// The level name in JSON; the level number in binary envelopes (postcard).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(self.as_str())
        } else {
            s.serialize_u8(self.level())
        }
    }
}

impl<'de> Deserialize<'de> for Priority {
    /// Accepts the level name (`"high"`) or its number (`1` or `"1"`).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u8),
            S(String),
        }
        let bad = || {
            serde::de::Error::custom(
                "expected one of critical, high, normal, low, background (or 0-4)",
            )
        };
        if !d.is_human_readable() {
            let n = u8::deserialize(d)?;
            return Priority::from_level(n).ok_or_else(bad);
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Priority::from_level(n).ok_or_else(bad),
            Raw::S(s) => Priority::parse(&s).ok_or_else(bad),
        }
    }
}

/// Estimated complexity of a task (§18.2 `estimated_complexity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Complexity {
    Low,
    Medium,
    High,
}

impl Complexity {
    pub fn as_str(self) -> &'static str {
        match self {
            Complexity::Low => "low",
            Complexity::Medium => "medium",
            Complexity::High => "high",
        }
    }
}

/// Body of `POST /api/tasks`. Unknown fields are rejected so a typo is reported, not ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSubmit {
    /// Agent to run the task; `main` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The user's message.
    pub input: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Where the task came from (`feishu_direct_message`, `cron_job`, `api_call`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Explicit priority; otherwise `task_priority.source_mapping[source]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complexity: Option<Complexity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Explicit model; wins over routing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Opt out of the request cache for this task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<bool>,
    /// The prompt template this task instantiates (request cache `template` strategy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    /// The template's parameters (a JSON object); only with `template_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_params: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Token counts of one task or call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCounts {
    pub input: u64,
    pub output: u64,
}

/// Where the prompt's tokens went (§18.1 table): system, memory, tools, history, input, output,
/// and the running summary of the session's older messages (`summary`, 0 without one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptBreakdown {
    pub system: u32,
    pub memory: u32,
    pub tools: u32,
    pub history: u32,
    pub input: u32,
    pub output: u32,
    #[serde(default)]
    pub summary: u32,
}

/// How the context layer cut a task's prompt (all 0 when it sent the whole history): messages
/// that left the sliding window (`window_dropped`; those folded into the running summary by a
/// summary call are also counted in `summarised`), and history messages sent condensed
/// (`compressed`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextCut {
    pub window_dropped: u32,
    pub summarised: u32,
    pub compressed: u32,
}

/// One move to the next model of the fallback chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FallbackStep {
    pub from: String,
    pub to: String,
    /// A provider error code (`timeout`, `server_error`, …) or `circuit_open`.
    pub reason: String,
}

/// A memory chunk the knowledge cache put in a task's prompt (`memory_chunks` of the task view):
/// the memory file, the chunk's heading path (empty before the file's first heading) and its
/// hybrid retrieval score (0..=1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryChunkRef {
    pub file: String,
    pub heading: String,
    pub score: f32,
}

/// A task error with a stable code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskErrorView {
    pub code: String,
    pub message: String,
}

/// Answer of `GET /api/tasks/{id}` (and of `POST /api/tasks`, which shows `id` and `status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    pub id: String,
    pub status: crate::TaskStatus,
    pub agent: String,
    pub priority: Priority,
    pub source: String,
    pub model: Option<String>,
    /// What chose the model: `explicit`, `rule:<name>`, `agent` or `default`.
    pub route: Option<String>,
    /// Moves along the fallback chain, in order.
    pub fallbacks: Vec<FallbackStep>,
    pub output: Option<String>,
    pub tokens: TokenCounts,
    pub cost_usd: f64,
    /// Runs that reached the model (a budget hold before any provider call is not one).
    pub attempts: u32,
    /// Times the budget held the task before any provider call and put it back in the queue.
    #[serde(default)]
    pub holds: u32,
    pub node: Option<String>,
    pub error: Option<TaskErrorView>,
    pub session_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub cache_hit: bool,
    /// Under the `semantic` cache strategy, the similarity of the cached query the answer
    /// came from (absent otherwise).
    #[serde(default)]
    pub cache_score: Option<f64>,
    pub preemptions: u32,
    pub prompt: PromptBreakdown,
    /// How the context layer cut the prompt (sliding window, summary, compression).
    #[serde(default)]
    pub context: ContextCut,
    /// The memory chunks the knowledge cache retrieved for the prompt, best first (empty when
    /// the knowledge cache is off: the prompt then carries the whole memory).
    #[serde(default)]
    pub memory_chunks: Vec<MemoryChunkRef>,
    /// RFC 3339 times.
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Why the task is not making progress now: `budget_paused` (queued while the budget holds
    /// non-critical work of its agent) or `rate_limited` (running, its model call waiting for a
    /// rate-limit grant of `waiting_scope`).
    #[serde(default)]
    pub waiting_reason: Option<String>,
    /// The rate-limit scope (a model name or `global`) a `rate_limited` task waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_scope: Option<String>,
    /// The provider serving `model` on the node that answered: `openai`, `anthropic`, or `sim`
    /// when the built-in simulator answers (no API key set).
    #[serde(default)]
    pub provider: Option<String>,
    /// The cron firing that created the task (tasks of cron jobs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<CronRef>,
}

/// A task's cron firing: the job and the scheduled time (RFC 3339, UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronRef {
    pub job: String,
    pub scheduled_at: String,
    /// True for `cron run` (an immediate firing, not a scheduled one).
    #[serde(default)]
    pub manual: bool,
}

/// Answer of `POST /api/tasks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskAccepted {
    pub id: String,
    pub status: crate::TaskStatus,
    /// True when an earlier task with the same `idempotency_key` was returned.
    pub duplicate: bool,
}

/// Answer of `GET /api/cache` (and of `openclaw-node cache stats --json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheStats {
    pub enabled: bool,
    /// The configured strategy (`exact`, `template`, `semantic`).
    pub strategy: String,
    /// The strategy in force.
    pub active_strategy: String,
    pub entries: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    pub ttl_seconds: u64,
    /// Lookups since the cache actor started.
    pub hits: u64,
    pub misses: u64,
    pub hit_ratio: f64,
    /// Entries evicted to stay under `max_bytes`, and entries dropped as stale, since start.
    pub evictions: u64,
    pub expired: u64,
    /// Hits since start by what found them (`hits` is their sum).
    #[serde(default)]
    pub hits_by_strategy: CacheHitsByStrategy,
    /// Entries with a query vector (findable by similarity), and their partitions.
    #[serde(default)]
    pub semantic_entries: u64,
    #[serde(default)]
    pub semantic_partitions: u64,
    /// The semantic cache's own embedding calls since start, and how many failed (each a miss).
    #[serde(default)]
    pub embedding_calls: u64,
    #[serde(default)]
    pub embedding_failures: u64,
}

/// Request-cache hits by strategy (`GET /api/cache`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheHitsByStrategy {
    pub exact: u64,
    pub template: u64,
    pub semantic: u64,
}

/// Answer of `POST /api/cache/prune` and `DELETE /api/cache`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRemoved {
    pub removed: u64,
}

/// Answer of `GET /api/queue`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueView {
    /// Waiting tasks per level name.
    pub depth: std::collections::BTreeMap<String, u64>,
    pub queued: u64,
    pub running: u64,
    pub workers: u64,
    pub queue_max: u64,
    pub running_tasks: Vec<RunningTask>,
    pub recent_failures: Vec<TaskView>,
    pub failed_deliveries: Vec<FailedDelivery>,
    /// `budget` while the budget holds non-critical work (only critical tasks start).
    #[serde(default)]
    pub paused: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningTask {
    pub id: String,
    pub agent: String,
    pub priority: Priority,
    pub model: Option<String>,
    pub running_ms: u64,
    /// `rate_limited` while the task's model call waits for a rate-limit grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_reason: Option<String>,
    /// The scope it waits for (a model name or `global`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_scope: Option<String>,
}

/// A callback delivery that ran out of retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedDelivery {
    pub task_id: String,
    pub callback_url: String,
    pub attempts: u32,
    pub last_error: String,
    pub failed_at: String,
}

/// The error body of every non-2xx answer: `{"error":{"code","message"}}`.
/// `type` mirrors `code` so OpenAI SDKs can read it too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(rename = "type", default)]
    pub kind: String,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        let code = code.into();
        ErrorBody {
            error: ErrorDetail {
                kind: code.clone(),
                code,
                message: message.into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_accepts_names_and_numbers() {
        let cases = [
            ("\"critical\"", Some(Priority::Critical)),
            ("\"background\"", Some(Priority::Background)),
            ("1", Some(Priority::High)),
            ("\"3\"", Some(Priority::Low)),
            ("5", None),
            ("\"urgent\"", None),
        ];
        for (json, want) in cases {
            let got = serde_json::from_str::<Priority>(json).ok();
            assert_eq!(got, want, "{json}");
        }
        assert_eq!(
            serde_json::to_string(&Priority::Normal).unwrap(),
            "\"normal\""
        );
    }

    #[test]
    fn submit_rejects_unknown_fields() {
        let err = serde_json::from_str::<TaskSubmit>(r#"{"input":"hi","prio":"high"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("prio"), "{err}");
        let ok: TaskSubmit = serde_json::from_str(r#"{"input":"hi","priority":"high"}"#).unwrap();
        assert_eq!(ok.priority, Some(Priority::High));
    }
}

// ---- Sessions (`/api/sessions`) ----

/// A session's token counts: the messages kept in full and the running summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionTokens {
    pub messages: u64,
    pub summary: u64,
}

/// One message of a session as served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionMessageView {
    pub role: String,
    pub content: String,
}

/// Answer of `GET /api/sessions/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    pub id: String,
    pub agent: String,
    /// The newest messages, oldest first.
    pub messages: Vec<SessionMessageView>,
    /// The running summary of the older messages (none until the context layer folds any).
    pub summary: Option<String>,
    pub tokens: SessionTokens,
    /// Turns recorded, failed ones included.
    pub turns: u64,
    pub last_task: Option<String>,
    /// RFC 3339; absent for a session never updated since it was stored by an older version.
    pub updated_at: Option<String>,
}

/// One session in `GET /api/sessions`: its counts, without the messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionListEntry {
    pub id: String,
    pub agent: String,
    /// Messages kept in full.
    pub messages: u64,
    /// Whether it has a running summary.
    pub summarised: bool,
    pub tokens: SessionTokens,
    pub turns: u64,
    pub last_task: Option<String>,
    pub updated_at: Option<String>,
}

/// Answer of `GET /api/sessions?limit=&after=`: sessions in id order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionList {
    pub sessions: Vec<SessionListEntry>,
    /// Pass as `after` for the next page; absent at the end.
    pub next_cursor: Option<String>,
}

/// Answer of `DELETE /api/sessions/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCleared {
    pub id: String,
    pub cleared: bool,
}

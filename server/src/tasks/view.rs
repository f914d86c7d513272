//! The API view of a task: the stored record as clients see it (`GET /api/tasks/{id}`,
//! callbacks, `GET /api/queue`), with RFC 3339 times.

use openclaw_proto::api::TokenCounts;
use openclaw_proto::{Priority, TaskRecord, TaskStatus, TaskView};

pub fn rfc3339(ms: u64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// The API view of a stored task.
pub fn view_of(r: &TaskRecord) -> TaskView {
    TaskView {
        id: r.id.clone(),
        status: r.status,
        agent: r.agent.clone(),
        priority: r.priority,
        source: r.source.clone(),
        model: r.model.clone(),
        route: r.route.clone(),
        fallbacks: r.fallbacks.clone(),
        output: r.output.clone(),
        tokens: TokenCounts {
            input: r.tokens.input,
            output: r.tokens.output,
        },
        cost_usd: r.cost_usd,
        attempts: r.attempts,
        holds: r.holds,
        node: r.owner.clone(),
        error: r.error.clone(),
        session_id: r.session_id.clone(),
        idempotency_key: r.idempotency_key.clone(),
        cache_hit: r.cache_hit,
        preemptions: r.preemptions,
        prompt: r.prompt,
        created_at: rfc3339(r.created_at_ms),
        started_at: r.started_at_ms.map(rfc3339),
        finished_at: r.finished_at_ms.map(rfc3339),
        waiting_reason: None,
    }
}

/// [`view_of`] plus what only this node knows now: why a queued task waits (`paused_for`:
/// does the budget hold non-critical work of this agent?).
pub fn view_now(r: &TaskRecord, paused_for: impl Fn(&str) -> bool) -> TaskView {
    let mut v = view_of(r);
    if r.status == TaskStatus::Queued && r.priority != Priority::Critical && paused_for(&r.agent) {
        v.waiting_reason = Some("budget_paused".into());
    }
    v
}

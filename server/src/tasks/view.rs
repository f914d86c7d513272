//! The API view of a task: the stored record as clients see it (`GET /api/tasks/{id}`,
//! callbacks, `GET /api/queue`), with RFC 3339 times, and what only the answering node knows now:
//! why a task waits (budget pause, rate limit) and which provider serves its model.

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
        cache_score: r.cache_score,
        preemptions: r.preemptions,
        prompt: r.prompt,
        context: r.context,
        memory_chunks: r.memory_chunks.clone(),
        created_at: rfc3339(r.created_at_ms),
        started_at: r.started_at_ms.map(rfc3339),
        finished_at: r.finished_at_ms.map(rfc3339),
        waiting_reason: None,
        waiting_scope: None,
        provider: None,
        cron: r.cron.as_ref().map(|c| openclaw_proto::api::CronRef {
            job: c.job.clone(),
            scheduled_at: rfc3339(c.scheduled_at_ms),
            manual: c.manual,
        }),
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

/// The waiting reason of a task whose model call waits for the rate limit of `scope`.
pub const RATE_LIMITED: &str = "rate_limited";

/// A running view with what its worker does now (its wait note): the model it calls, and the
/// rate-limit `scope` it waits for, if any.
pub fn note_rate_wait(v: &mut TaskView, model: Option<String>, scope: Option<String>) {
    if v.status == TaskStatus::Running {
        if v.model.is_none() {
            v.model = model;
        }
        if let Some(scope) = scope {
            v.waiting_reason = Some(RATE_LIMITED.into());
            v.waiting_scope = Some(scope);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_reasons() {
        let mut r = TaskRecord::queued("t", "main", "hi", Priority::Normal);
        assert_eq!(
            view_now(&r, |_| true).waiting_reason.as_deref(),
            Some("budget_paused")
        );
        assert_eq!(view_now(&r, |_| false).waiting_reason, None);
        let mut v = view_of(&r);
        note_rate_wait(&mut v, None, Some("gpt-4o".into()));
        assert_eq!(v.waiting_reason, None, "a queued task is not rate limited");
        r.status = TaskStatus::Running;
        let mut v = view_of(&r);
        note_rate_wait(&mut v, None, None);
        assert_eq!(v.waiting_reason, None);
        note_rate_wait(&mut v, Some("gpt-4o".into()), Some("global".into()));
        assert_eq!(
            (v.waiting_reason.as_deref(), v.waiting_scope.as_deref()),
            (Some("rate_limited"), Some("global"))
        );
        assert_eq!(v.model.as_deref(), Some("gpt-4o"));
    }
}

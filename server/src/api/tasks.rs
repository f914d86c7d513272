//! `/api/tasks` and `/api/queue`: admit (durably) a task, read it (with long-poll), cancel it,
//! and show the queue.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use openclaw_proto::api::{FailedDelivery, QueueView, RunningTask, TaskAccepted, TokenCounts};
use openclaw_proto::{TaskRecord, TaskStatus, TaskSubmit, TaskView};
use serde::Deserialize;

use super::{ApiError, ApiJson, AppState};
use crate::config::Config;
use crate::runtime::now_ms;
use crate::tasks::ledger::Admission;
use crate::tasks::scheduler::{entry_of, CancelOutcome, QueueSnapshot, SchedulerMsg};

/// Longest accepted idempotency key.
pub const IDEMPOTENCY_KEY_MAX: usize = 256;
/// Longest accepted `template_id`, in bytes.
pub const TEMPLATE_ID_MAX: usize = 256;
/// Largest `max_tokens` a task may ask for.
pub const MAX_TOKENS_MAX: u32 = 1_000_000;
/// Failures shown by `GET /api/queue`.
pub const RECENT_FAILURES_SHOWN: usize = 20;

fn rfc3339(ms: u64) -> String {
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

/// [`view_of`] plus what only this node knows now: why a queued task waits.
pub fn view_now(rt: &crate::runtime::Runtime, r: &TaskRecord) -> TaskView {
    let mut v = view_of(r);
    if r.status == openclaw_proto::TaskStatus::Queued
        && r.priority != openclaw_proto::Priority::Critical
        && rt.budget.paused_for(&r.agent)
    {
        v.waiting_reason = Some("budget_paused".into());
    }
    v
}

/// Check a submission against the config; the error says what to fix.
pub fn validate(cfg: &Config, s: &TaskSubmit) -> Result<(), ApiError> {
    if s.input.trim().is_empty() {
        return Err(ApiError::unprocessable(
            "invalid_input",
            "`input` must not be empty",
        ));
    }
    if let Some(agent) = &s.agent {
        if agent != "main" && !cfg.agents.contains_key(agent) {
            let mut known: Vec<&str> = cfg.agents.keys().map(String::as_str).collect();
            if !known.contains(&"main") {
                known.insert(0, "main");
            }
            return Err(ApiError::unprocessable(
                "unknown_agent",
                format!(
                    "agent `{agent}` is not configured; agents: {}",
                    known.join(", ")
                ),
            ));
        }
    }
    if let Some(m) = &s.model {
        if !cfg.models.contains_key(m) {
            let known: Vec<&str> = cfg.models.keys().map(String::as_str).collect();
            return Err(ApiError::unprocessable(
                "unknown_model",
                format!(
                    "model `{m}` is not configured; models: {}",
                    known.join(", ")
                ),
            ));
        }
    }
    if let Some(url) = &s.callback_url {
        let ok = reqwest::Url::parse(url)
            .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .unwrap_or(false);
        if !ok {
            return Err(ApiError::unprocessable(
                "invalid_callback_url",
                format!("`callback_url` must be an http(s) URL, got `{url}`"),
            ));
        }
    }
    if let Some(n) = s.max_tokens {
        if n == 0 || n > MAX_TOKENS_MAX {
            return Err(ApiError::unprocessable(
                "invalid_max_tokens",
                format!("`max_tokens` must be 1..={MAX_TOKENS_MAX}"),
            ));
        }
    }
    match (&s.template_id, &s.template_params) {
        (None, Some(_)) => {
            return Err(ApiError::unprocessable(
                "invalid_template",
                "`template_params` needs a `template_id`",
            ))
        }
        (Some(id), _) if id.trim().is_empty() || id.len() > TEMPLATE_ID_MAX => {
            return Err(ApiError::unprocessable(
                "invalid_template",
                format!("`template_id` must be 1..={TEMPLATE_ID_MAX} bytes, not blank"),
            ))
        }
        _ => {}
    }
    if let Some(k) = &s.idempotency_key {
        if k.is_empty() || k.len() > IDEMPOTENCY_KEY_MAX {
            return Err(ApiError::unprocessable(
                "invalid_idempotency_key",
                format!("`idempotency_key` must be 1..={IDEMPOTENCY_KEY_MAX} bytes"),
            ));
        }
    }
    Ok(())
}

/// `POST /api/tasks` → 202 `{id, status, duplicate}` once the task is durable.
pub async fn submit(
    State(st): State<AppState>,
    headers: HeaderMap,
    ApiJson(mut sub): ApiJson<TaskSubmit>,
) -> Result<impl IntoResponse, ApiError> {
    let rt = &st.rt;
    if sub.idempotency_key.is_none() {
        sub.idempotency_key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
    }
    validate(&rt.cfg(), &sub)?;
    let queue_max = rt.cfg().server.queue_max;
    if rt.queued.load(Ordering::Relaxed) >= queue_max {
        crate::activity::bump(&crate::activity::activity().rejected_queue_full);
        return Err(ApiError::unavailable(
            "queue_full",
            format!("the task queue is full ({queue_max} waiting); retry later"),
            5,
        ));
    }
    let source = sub.source.clone().unwrap_or_else(|| "api_call".to_string());
    let priority = sub
        .priority
        .unwrap_or_else(|| rt.cfg().task_priority.for_source(&source));
    let rec = TaskRecord {
        id: uuid::Uuid::new_v4().to_string(),
        seq: rt.ledger.next_seq()?,
        agent: sub.agent.clone().unwrap_or_else(|| "main".to_string()),
        input: sub.input,
        session_id: sub.session_id,
        source,
        priority,
        task_type: sub.task_type,
        complexity: sub.complexity,
        language: sub.language,
        requested_model: sub.model,
        model: None,
        route: None,
        fallbacks: Vec::new(),
        callback_url: sub.callback_url,
        idempotency_key: sub.idempotency_key,
        max_tokens: sub.max_tokens,
        cache: sub.cache.unwrap_or(true),
        template_params: sub
            .template_params
            .as_ref()
            .map(|p| crate::cache::keys::canonical_json(&serde_json::Value::Object(p.clone()))),
        template_id: sub.template_id,
        status: TaskStatus::Queued,
        output: None,
        tokens: TokenCounts::default(),
        cost_usd: 0.0,
        attempts: 0,
        preemptions: 0,
        owner: None,
        epoch: 0,
        error: None,
        cache_hit: false,
        prompt: Default::default(),
        created_at_ms: now_ms(),
        started_at_ms: None,
        finished_at_ms: None,
    };
    let (rec, duplicate) = match rt.ledger.admit(rec).await? {
        Admission::Accepted(r) => {
            // In a cluster the owner's watcher enqueues it (it may be another node).
            let mine = r.owner.is_none() || r.owner.as_deref() == Some(rt.node.as_str());
            if let (true, Some(s)) = (mine, rt.handles.scheduler()) {
                let _ = s.cast(SchedulerMsg::Enqueue(entry_of(&r, rt.mono_ms())));
            }
            crate::activity::bump(&crate::activity::activity().accepted);
            tracing::debug!(task = %r.id, priority = %r.priority, agent = %r.agent, "task accepted");
            (r, false)
        }
        Admission::Duplicate(r) => (r, true),
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(TaskAccepted {
            id: rec.id,
            status: rec.status,
            duplicate,
        }),
    ))
}

/// How many 50 ms polls `GET /api/tasks/{id}` waits for this replica to apply a task committed
/// elsewhere before answering 404.
pub const REPLICA_CATCH_UP_POLLS: usize = 30;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    /// Seconds to wait for the task to finish (long-poll).
    pub wait: Option<f64>,
}

/// `GET /api/tasks/{id}[?wait=SECONDS]`.
pub async fn get_task(
    State(st): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<TaskView>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let rt = &st.rt;
    let max = rt.cfg().server.long_poll_max_seconds as f64;
    let wait = match q.wait {
        None => 0.0,
        Some(w) if w.is_finite() && w >= 0.0 => w.min(max),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_wait",
                "`wait` is a number of seconds >= 0",
            ))
        }
    };
    // Subscribe before reading so a finish between the read and the wait is not missed.
    let mut events = rt.events.subscribe();
    let find = || -> Result<TaskRecord, ApiError> {
        rt.ledger
            .get(&id)?
            .ok_or_else(|| ApiError::not_found("task_not_found", format!("no task with id {id}")))
    };
    let mut rec = match find() {
        Ok(r) => r,
        // A task committed through another node may not be applied on this replica yet.
        Err(e) if rt.cluster.is_some() => {
            let mut found = None;
            for _ in 0..REPLICA_CATCH_UP_POLLS {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if let Ok(r) = find() {
                    found = Some(r);
                    break;
                }
            }
            found.ok_or(e)?
        }
        Err(e) => return Err(e),
    };
    if rec.status.is_final() || wait <= 0.0 {
        return Ok(Json(view_now(rt, &rec)));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(wait);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => break,
            Ok(Ok(done)) if done != id => continue,
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {
                rec = find()?;
                if rec.status.is_final() {
                    break;
                }
            }
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => break,
        }
    }
    rec = find()?;
    Ok(Json(view_now(rt, &rec)))
}

/// `DELETE /api/tasks/{id}`: cancel a queued or running task.
pub async fn cancel(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    let rt = &st.rt;
    let rec = rt
        .ledger
        .get(&id)?
        .ok_or_else(|| ApiError::not_found("task_not_found", format!("no task with id {id}")))?;
    if rec.status.is_final() {
        return Err(ApiError::conflict(
            "already_finished",
            format!("task {id} is already {}", rec.status.as_str()),
        ));
    }
    // Running on another node: ask that node, over the actor mesh, to stop it.
    let remote_owner = match (&rt.cluster, rec.status) {
        (Some(c), TaskStatus::Running) => openclaw_cluster::owner_id(&rec)
            .filter(|o| *o != c.id)
            .map(|o| (c.clone(), o)),
        _ => None,
    };
    let outcome = if let Some((c, owner)) = remote_owner {
        match c.cancel_remote(owner, &id).await {
            Ok(crate::cluster::MeshReply::Cancelled) => CancelOutcome::WasRunning,
            Ok(_) => CancelOutcome::Unknown,
            Err(e) => {
                return Err(ApiError::unavailable(
                    "owner_unreachable",
                    format!("task {id} runs on node {owner}, which did not answer ({e}); retry"),
                    1,
                ))
            }
        }
    } else {
        match rt.handles.scheduler() {
            Some(s) => ractor::call_t!(
                s,
                |reply| SchedulerMsg::Cancel {
                    id: id.clone(),
                    reply
                },
                2_000
            )
            .unwrap_or(CancelOutcome::Unknown),
            None => CancelOutcome::Unknown,
        }
    };
    match outcome {
        CancelOutcome::WasRunning => {
            // The worker records the cancellation; wait briefly for it.
            let mut events = rt.events.subscribe();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                let r = rt.ledger.get(&id)?;
                if let Some(r) = r.filter(|r| r.status.is_final()) {
                    return Ok(Json(view_of(&r)));
                }
                if tokio::time::timeout_at(deadline, events.recv())
                    .await
                    .is_err()
                {
                    break;
                }
            }
            let r = rt.ledger.get(&id)?.unwrap_or(rec);
            Ok(Json(view_of(&r)))
        }
        CancelOutcome::WasQueued | CancelOutcome::Unknown => {
            let r = rt.ledger.cancel_queued(&id, now_ms()).await?;
            let _ = rt.events.send(id.clone());
            tracing::info!(task = %id, "task cancelled");
            Ok(Json(view_of(&r)))
        }
    }
}

/// `GET /api/queue`: depth per level, running tasks, recent failures, failed deliveries.
pub async fn queue(State(st): State<AppState>) -> Result<Json<QueueView>, ApiError> {
    let rt = &st.rt;
    let snap = match rt.handles.scheduler() {
        Some(s) => ractor::call_t!(s, SchedulerMsg::Snapshot, 2_000).ok(),
        None => None,
    }
    .ok_or_else(|| {
        ApiError::unavailable(
            "scheduler_unavailable",
            "the scheduler is restarting; retry",
            1,
        )
    })?;
    let QueueSnapshot {
        depth,
        running,
        workers,
    } = snap;
    let mut running_tasks: Vec<RunningTask> = rt
        .running
        .snapshot()
        .into_iter()
        .map(|s| RunningTask {
            model: rt.ledger.get(&s.id).ok().flatten().and_then(|r| r.model),
            id: s.id,
            agent: s.agent,
            priority: s.priority,
            running_ms: s.started.elapsed().as_millis() as u64,
        })
        .collect();
    running_tasks.sort_by_key(|t| (t.priority, std::cmp::Reverse(t.running_ms)));
    let failed_deliveries = rt
        .store
        .failed_deliveries()
        .map_err(crate::tasks::ledger::LedgerError::from)?
        .into_iter()
        .map(|d| FailedDelivery {
            task_id: d.task_id,
            callback_url: d.callback_url,
            attempts: d.attempts,
            last_error: d.last_error,
            failed_at: rfc3339(d.failed_at_ms),
        })
        .collect();
    Ok(Json(QueueView {
        depth: openclaw_proto::Priority::ALL
            .iter()
            .map(|p| (p.as_str().to_string(), depth[p.level() as usize] as u64))
            .collect(),
        queued: depth.iter().sum::<usize>() as u64,
        running: running as u64,
        workers: workers as u64,
        queue_max: rt.cfg().server.queue_max as u64,
        running_tasks,
        recent_failures: rt
            .ledger
            .recent_failures(RECENT_FAILURES_SHOWN)?
            .iter()
            .map(view_of)
            .collect(),
        failed_deliveries,
        paused: rt.budget.any_paused().then(|| "budget".to_string()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(input: &str) -> TaskSubmit {
        TaskSubmit {
            input: input.into(),
            ..Default::default()
        }
    }

    #[test]
    fn validation_table() {
        let cfg = Config::default();
        let with = |f: &dyn Fn(&mut TaskSubmit)| {
            let mut s = sub("hello");
            f(&mut s);
            validate(&cfg, &s).err().map(|e| e.code)
        };
        let cases: Vec<(&str, Option<String>)> = vec![
            ("ok", with(&|_| {})),
            ("empty input", with(&|s| s.input = "  ".into())),
            ("unknown agent", with(&|s| s.agent = Some("ghost".into()))),
            ("main agent", with(&|s| s.agent = Some("main".into()))),
            ("unknown model", with(&|s| s.model = Some("gpt-9".into()))),
            ("known model", with(&|s| s.model = Some("gpt-4o".into()))),
            (
                "bad callback",
                with(&|s| s.callback_url = Some("ftp://x".into())),
            ),
            (
                "good callback",
                with(&|s| s.callback_url = Some("http://127.0.0.1:9/cb".into())),
            ),
            ("zero max tokens", with(&|s| s.max_tokens = Some(0))),
            (
                "long key",
                with(&|s| s.idempotency_key = Some("k".repeat(300))),
            ),
            (
                "template params without id",
                with(&|s| s.template_params = Some(Default::default())),
            ),
            (
                "blank template id",
                with(&|s| s.template_id = Some(" ".into())),
            ),
            (
                "template with params",
                with(&|s| {
                    s.template_id = Some("daily".into());
                    s.template_params = Some(Default::default());
                }),
            ),
        ];
        let want = [
            None,
            Some("invalid_input"),
            Some("unknown_agent"),
            None,
            Some("unknown_model"),
            None,
            Some("invalid_callback_url"),
            None,
            Some("invalid_max_tokens"),
            Some("invalid_idempotency_key"),
            Some("invalid_template"),
            Some("invalid_template"),
            None,
        ];
        for ((name, got), want) in cases.into_iter().zip(want) {
            assert_eq!(got.as_deref(), want, "{name}");
        }
    }
}

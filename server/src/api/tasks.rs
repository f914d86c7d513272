//! `/api/tasks` and `/api/queue` over HTTP: admit (durably) a task, read it (with long-poll),
//! cancel it, and show the queue. The work is the tasks feature's ([`crate::tasks::Tasks`]);
//! this file reads requests and writes responses.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use openclaw_proto::api::{QueueView, TaskAccepted};
use openclaw_proto::{TaskRecord, TaskStatus, TaskSubmit, TaskView};
use serde::{Deserialize, Serialize};

use super::error::Code;
use super::openai::provider_of;
use super::{ApiError, ApiJson, ApiPath, ApiQuery, AppState};
use crate::node::app::App;
use crate::tasks::ledger::{TaskQuery, TASK_PAGE_MAX};
use crate::tasks::view::{note_rate_wait, view_now};
use crate::tasks::TaskError;

/// `POST /api/tasks` → 202 `{id, status, duplicate}` once the task is durable. The idempotency
/// key may also come in an `Idempotency-Key` header.
pub async fn submit(
    State(st): State<AppState>,
    headers: HeaderMap,
    ApiJson(mut sub): ApiJson<TaskSubmit>,
) -> Result<impl IntoResponse, ApiError> {
    if sub.idempotency_key.is_none() {
        sub.idempotency_key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
    }
    let (rec, duplicate) = st.app.tasks.admit(sub).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(TaskAccepted {
            id: rec.id,
            status: rec.status,
            duplicate,
        }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    /// Seconds to wait for the task to finish (long-poll).
    pub wait: Option<f64>,
}

/// `GET /api/tasks/{id}[?wait=SECONDS]`.
pub async fn get_task(
    State(st): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> Result<Json<TaskView>, ApiError> {
    let app = &st.app;
    let max = app.cfg.get().server.long_poll_max_seconds as f64;
    let wait = match q.wait {
        None => 0.0,
        Some(w) if w.is_finite() && w >= 0.0 => w.min(max),
        Some(_) => {
            return Err(ApiError::bad_request(
                Code::InvalidWait,
                "`wait` is a number of seconds >= 0",
            ))
        }
    };
    let rec = app.tasks.get(&id, Duration::from_secs_f64(wait)).await?;
    Ok(Json(live_view(app, &rec)))
}

/// A task as this node sees it now: [`view_now`] (budget pause), what its worker does when it
/// runs here (the model it calls, the rate-limit scope it waits for), and the provider serving
/// its model (`sim` for the simulator).
pub fn live_view(app: &App, rec: &TaskRecord) -> TaskView {
    let mut v = view_now(rec, |agent| app.budget.paused_for(agent));
    if let Some(slot) = app.tasks.running.get(&rec.id) {
        note_rate_wait(&mut v, slot.wait.model(), slot.wait.scope());
    }
    v.provider = v.model.as_deref().map(|m| provider_of(app, m));
    v
}

/// Tasks per page when `limit` is not given.
pub const TASK_PAGE_DEFAULT: usize = 50;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub status: Option<TaskStatus>,
    pub agent: Option<String>,
    pub source: Option<String>,
    pub session_id: Option<String>,
    /// Created at or after (Unix ms).
    pub since: Option<u64>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
    pub limit: Option<usize>,
}

/// One page of `GET /api/tasks`.
#[derive(Debug, Serialize)]
pub struct TaskList {
    pub tasks: Vec<TaskView>,
    /// Pass as `cursor` for the next page; absent at the end.
    pub next_cursor: Option<String>,
}

/// `GET /api/tasks?status=&agent=&source=&session_id=&since=&cursor=&limit=`: tasks, live and
/// finished, in id order, a page at a time (at most `TASK_PAGE_MAX`; each call examines at
/// most `LIST_SCAN_MAX` records, so a selective filter may return a short page and a cursor).
pub async fn list(
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<TaskList>, ApiError> {
    let limit = q.limit.unwrap_or(TASK_PAGE_DEFAULT);
    if limit == 0 || limit > TASK_PAGE_MAX {
        return Err(ApiError::unprocessable(
            Code::InvalidQuery,
            format!("`limit` must be 1..={TASK_PAGE_MAX}"),
        ));
    }
    let query = TaskQuery {
        status: q.status,
        agent: q.agent,
        source: q.source,
        session_id: q.session_id,
        since_ms: q.since,
        after: q.cursor,
        limit,
    };
    let app = &st.app;
    let page = app.tasks.ledger.list(&query).map_err(TaskError::from)?;
    Ok(Json(TaskList {
        tasks: page.tasks.iter().map(|r| live_view(app, r)).collect(),
        next_cursor: page.next,
    }))
}

/// `DELETE /api/tasks/{id}`: cancel a queued or running task.
pub async fn cancel(
    State(st): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TaskView>, ApiError> {
    let rec = st.app.tasks.cancel(&id).await?;
    Ok(Json(live_view(&st.app, &rec)))
}

/// `GET /api/queue`: depth per level, running tasks, recent failures, failed deliveries.
pub async fn queue(State(st): State<AppState>) -> Result<Json<QueueView>, ApiError> {
    let app = &st.app;
    Ok(Json(app.tasks.queue_view(app.budget.any_paused()).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::tasks::admit::validate;

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
            validate(&cfg, &s)
                .err()
                .map(|e| ApiError::from(e).code.as_str())
        };
        let cases: Vec<(&str, Option<&str>)> = vec![
            ("ok", with(&|_| {})),
            ("empty input", with(&|s| s.input = "  ".into())),
            ("unknown agent", with(&|s| s.agent = Some("ghost".into()))),
            ("unknown source", with(&|s| s.source = Some("fax".into()))),
            (
                "known source",
                with(&|s| s.source = Some("cron_job".into())),
            ),
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
            Some("unknown_source"),
            None,
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
            assert_eq!(got, want, "{name}");
        }
    }
}

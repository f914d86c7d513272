//! `GET /api/cron` (the jobs, their next and last firing) and `POST /api/cron/{name}/run` (an
//! immediate firing, with an idempotency key of its own).

use axum::extract::State;
use axum::Json;
use openclaw_proto::ops::{CronRunView, CronView};

use super::{ApiError, ApiPath, AppState};

pub async fn list(State(st): State<AppState>) -> Json<CronView> {
    Json(st.app.cron.view())
}

pub async fn run(
    State(st): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<CronRunView>, ApiError> {
    Ok(Json(st.app.cron.run_now(&name).await?))
}

//! `GET /api/budget`: spend, reservations, limits, used ratio, fired thresholds and state
//! (`ok`, `downgraded`, `paused`) per budget scope for the current period (from the accountant).

use axum::extract::State;
use axum::Json;

use super::{ApiError, AppState};
use openclaw_proto::ops::BudgetView;

pub async fn budget(State(st): State<AppState>) -> Result<Json<BudgetView>, ApiError> {
    Ok(Json(st.app.budget.view().await?))
}

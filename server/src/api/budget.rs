//! `GET /api/budget`: spend, reservations, limits, used ratio, fired thresholds and state
//! (`ok`, `downgraded`, `paused`) per budget scope for the current period (from the accountant).

use axum::extract::State;
use axum::Json;

use super::{ApiError, AppState};
use crate::budget::accountant::{AccountantMsg, BudgetView};

pub async fn budget(State(st): State<AppState>) -> Result<Json<BudgetView>, ApiError> {
    let view = match st.rt.handles.accountant() {
        Some(a) => ractor::call_t!(a, AccountantMsg::Snapshot, 2_000).ok(),
        None => None,
    };
    view.map(Json).ok_or_else(|| {
        ApiError::unavailable(
            "accountant_unavailable",
            "the budget accountant is restarting; retry",
            1,
        )
    })
}

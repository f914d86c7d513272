//! Operational endpoints: `/health` (alive), `/ready` (able to take work), `/metrics`
//! (Prometheus text), and the JSON 404/405 fallbacks.

use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::{ApiError, AppState};

pub async fn health(State(st): State<AppState>) -> impl IntoResponse {
    Json(json!({"status": "ok", "node": st.rt.node}))
}

pub async fn ready(State(st): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    match st.rt.health.ready() {
        Ok(()) => Ok(Json(json!({"status": "ready", "node": st.rt.node}))),
        Err(why) => Err(ApiError::unavailable("not_ready", why.join("; "), 1)),
    }
}

pub async fn metrics_text() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(),
    )
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found("not_found", format!("no route for {}", uri.path()))
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method",
    )
}

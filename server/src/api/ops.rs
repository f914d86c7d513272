//! Operational endpoints: `/health` (alive), `/ready` (able to take work), `/metrics`
//! (Prometheus text), and the JSON 404/405 fallbacks.

use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::error::Code;
use super::{ApiError, AppState};

pub async fn health(State(st): State<AppState>) -> impl IntoResponse {
    Json(json!({"status": "ok", "node": st.app.node}))
}

pub async fn ready(State(st): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    match st.app.health.ready() {
        Ok(()) => Ok(Json(json!({"status": "ready", "node": st.app.node}))),
        Err(why) => Err(ApiError::unavailable(Code::NotReady, why.join("; "), 1)),
    }
}

/// The Prometheus text. Gauges that read a store are refreshed first (`openclaw_sessions_live`:
/// in a cluster, turns recorded by other nodes change it too).
pub async fn metrics_text(State(st): State<AppState>) -> impl IntoResponse {
    st.app.sessions.refresh_gauge().await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(),
    )
}

/// `POST /api/config/reload`: load the config file now; answers what changed, or 422 with the
/// path and reason (the old config stays).
pub async fn reload_config(State(st): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let app = &st.app;
    if app.config_source.is_none() {
        return Err(ApiError::not_found(
            Code::NoConfigFile,
            "this node was started without a config file to reload",
        ));
    }
    match crate::config::reload::reload_now(&app.cfg, app.config_source.as_ref()).await {
        Ok(r) => Ok(Json(json!({
            "result": if r.changed.is_empty() { "unchanged" } else { "reloaded" },
            "changed": r.changed,
            "restart_needed": r.restart_needed,
        }))),
        Err(e) => Err(ApiError::unprocessable(Code::InvalidConfig, e.to_string())),
    }
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(Code::NotFound, format!("no route for {}", uri.path()))
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        Code::MethodNotAllowed,
        "this route does not accept that method",
    )
}

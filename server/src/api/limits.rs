//! `GET /api/limits`: the headroom of every rate limiter on this node (remaining requests and
//! tokens in the window, in flight, waiters, back-off), for operators and `status`.

use axum::extract::State;
use axum::Json;
use openclaw_proto::ops::LimitsView;

use super::AppState;

pub async fn limits(State(st): State<AppState>) -> Json<LimitsView> {
    let scopes = st.app.limits.snapshot().await;
    let cfg = st.app.cfg.get();
    Json(LimitsView {
        node: st.app.node.clone(),
        window_seconds: cfg.rate_limiting.window_seconds,
        max_wait_ms: cfg.rate_limiting.max_wait_ms,
        scopes,
    })
}

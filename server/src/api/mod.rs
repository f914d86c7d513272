//! The HTTP API (axum), and nothing else: handlers read requests, call a feature's handle
//! (through the [`App`]) and write responses. Every error is mapped in [`error`] (one
//! `From<FeatureError>` each) to a code of one closed list ([`error::Code`]). Every error is `{"error":{"code","message"}}` with the right status
//! (see [`ApiError`]), including the extractor's own rejections and unknown routes.
//!
//! Routes: `/api/tasks` (+ `/{id}`, long-poll with `?wait=`), `/api/queue`, `/api/sessions`
//! (+ `/{id}`: show, `DELETE` clears), `/api/cache`
//! (+ `/prune`), `/api/limits`, `/api/budget`, `/api/cron` (+ `/{name}/run`), `/api/config/reload`,
//! `/channels/feishu/events` (Feishu's event subscription; authenticated by Feishu's signature
//! and verification token, not the bearer token), `/v1/chat/completions` (SSE with `stream: true`), `/v1/messages` (Anthropic Messages, SSE with
//! `stream: true`), `/v1/models` (+ `/{id}`), `/v1/embeddings`, `/health`, `/ready`, `/metrics`.
//!
//! Bounds: request bodies (`server.max_body_mb`), requests in flight
//! (`server.max_in_flight_requests`, beyond it 503 + Retry-After), long-poll length
//! (`server.long_poll_max_seconds`).

pub mod budget;
pub mod cache;
pub mod channels;
pub mod cluster;
pub mod cron;
pub mod embeddings;
pub mod error;
pub mod limits;
pub mod memory;
pub mod messages;
pub mod openai;
pub mod ops;
pub mod sessions;
pub mod tasks;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::Semaphore;
use tracing::Instrument;

pub use error::{ApiError, ApiJson, ApiPath, ApiQuery};

use crate::config::Secret;
use crate::metrics::metrics;
use crate::node::app::App;
use error::Code;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub app: Arc<App>,
    pub token: Option<Secret>,
    pub in_flight: Arc<Semaphore>,
}

pub fn router(state: AppState) -> Router {
    let max_body = (state.app.cfg.get().server.max_body_mb as usize).saturating_mul(1024 * 1024);
    Router::new()
        .route("/api/tasks", post(tasks::submit).get(tasks::list))
        .route(
            "/api/tasks/{id}",
            get(tasks::get_task).delete(tasks::cancel),
        )
        .route("/api/queue", get(tasks::queue))
        .route("/api/sessions", get(sessions::list))
        .route(
            "/api/sessions/{id}",
            get(sessions::get_session).delete(sessions::clear),
        )
        .route("/api/cache", get(cache::stats).delete(cache::clear))
        .route("/api/cache/prune", post(cache::prune))
        .route("/api/limits", get(limits::limits))
        .route("/api/budget", get(budget::budget))
        .route("/api/agents/{agent}/memory", get(memory::list))
        .route("/api/agents/{agent}/memory-index", get(memory::index))
        .route("/api/agents/{agent}/memory-search", get(memory::search))
        .route(
            "/api/agents/{agent}/memory/{*path}",
            get(memory::get_file)
                .put(memory::put_file)
                .delete(memory::delete_file),
        )
        .route("/api/cron", get(cron::list))
        .route("/api/cron/{name}/run", post(cron::run))
        .route("/api/cluster", get(cluster::status))
        .route("/api/cluster/leave", post(cluster::leave))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/messages", post(messages::messages))
        .route("/v1/models", get(openai::models))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/models/{id}", get(openai::model))
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics_text))
        .route("/api/config/reload", post(ops::reload_config))
        .route("/channels/feishu/events", post(channels::feishu_events))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            admit_and_measure,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::map_response(error::json_errors))
        .with_state(state)
}

/// Bounded endpoint label for metrics.
fn endpoint_label(path: Option<&str>) -> &'static str {
    match path {
        Some("/api/tasks") => "tasks",
        Some("/api/tasks/{id}") => "task",
        Some("/api/queue") => "queue",
        Some("/api/sessions" | "/api/sessions/{id}") => "sessions",
        Some("/api/cache" | "/api/cache/prune") => "cache",
        Some("/api/limits") => "limits",
        Some("/api/budget") => "budget",
        Some(
            "/api/agents/{agent}/memory"
            | "/api/agents/{agent}/memory/{*path}"
            | "/api/agents/{agent}/memory-index"
            | "/api/agents/{agent}/memory-search",
        ) => "memory",
        Some("/v1/chat/completions") => "chat",
        Some("/v1/messages") => "messages",
        Some("/v1/models" | "/v1/models/{id}") => "models",
        Some("/v1/embeddings") => "embeddings",
        Some("/health") => "health",
        Some("/ready") => "ready",
        Some("/metrics") => "metrics",
        Some("/api/config/reload") => "config_reload",
        Some("/channels/feishu/events") => "feishu_events",
        _ => "other",
    }
}

/// Probes answer from memory and must keep answering while the node is saturated, so they do not
/// take an in-flight slot (nor count as requests: [`crate::metrics::is_probe`]).
fn is_probe(endpoint: &str) -> bool {
    crate::metrics::is_probe(endpoint)
}

/// Bound requests in flight, and count/time every request (probes apart).
async fn admit_and_measure(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let endpoint = endpoint_label(req.extensions().get::<MatchedPath>().map(|p| p.as_str()));
    let m = metrics();
    let _permit = if is_probe(endpoint) {
        None
    } else if let Ok(p) = st.in_flight.clone().try_acquire_owned() {
        Some(p)
    } else {
        crate::activity::bump(&crate::activity::activity().rejected_overloaded);
        m.requests_total.with_label_values(&[endpoint, "5xx"]).inc();
        return ApiError::unavailable(
            Code::Overloaded,
            "too many requests in flight on this node; retry shortly",
            1,
        )
        .into_response();
    };
    let _gauge = InFlightGauge::enter();
    let started = Instant::now();
    let span = tracing::info_span!("http", method = %req.method(), endpoint);
    let resp = next.run(req).instrument(span).await;
    m.observe_request(
        endpoint,
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    resp
}

/// Counts a request in `openclaw_http_in_flight` until dropped (also when the client goes away
/// and the request future is dropped half-way).
struct InFlightGauge;

impl InFlightGauge {
    fn enter() -> InFlightGauge {
        metrics().http_in_flight.inc();
        InFlightGauge
    }
}

impl Drop for InFlightGauge {
    fn drop(&mut self) {
        metrics().http_in_flight.dec();
    }
}

/// Bearer-token check for `/api` and `/v1` when a token is configured. Anthropic clients send
/// the token as `x-api-key`, which is accepted too.
async fn auth(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = &st.token else {
        return next.run(req).await;
    };
    let path = req.uri().path();
    if !(path.starts_with("/api/") || path.starts_with("/v1/")) {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| req.headers().get("x-api-key").and_then(|v| v.to_str().ok()));
    match given {
        Some(g) if crate::util::same_secret(g.as_bytes(), token.expose().as_bytes()) => {
            next.run(req).await
        }
        Some(_) => ApiError::unauthorized("the bearer token is not valid for this node").into_response(),
        None => ApiError::unauthorized(
            "this node requires `Authorization: Bearer <token>` (the token in the node's auth.token_env variable)",
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(endpoint_label(Some("/api/tasks/{id}")), "task");
        assert_eq!(endpoint_label(Some("/whatever/123")), "other");
        assert_eq!(endpoint_label(None), "other");
    }
}

//! The OpenAI-compatible surface: `POST /v1/chat/completions` (JSON, or SSE with
//! `stream: true`) and `GET /v1/models`, so any OpenAI SDK can use the gateway unchanged.
//!
//! The request goes to the named configured model's provider through `calls` (accounted like
//! task calls: audit line, tokens, cost, latency). Provider failures map to the status an SDK
//! expects: 429 (+ Retry-After), 502, 504, or the upstream's own 4xx.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use openclaw_proto::openai::{ChatCompletionRequest, ModelInfo, ModelList};
use tracing::Instrument;

use super::{ApiError, ApiJson, AppState};
use crate::calls::CallMeta;
use crate::fallback;
use crate::providers::ProviderError;

/// Header naming the agent a direct chat call is accounted to (default `api`).
pub const AGENT_HEADER: &str = "x-openclaw-agent";

/// Map a provider failure to the API error an OpenAI SDK understands.
pub fn provider_error(model: &str, e: &ProviderError) -> ApiError {
    use axum::http::StatusCode;
    match e {
        ProviderError::Timeout(d) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            format!("model {model} did not answer within {} ms", d.as_millis()),
        ),
        ProviderError::Connect(_) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_unavailable",
            format!("cannot reach the provider of model {model}"),
        ),
        ProviderError::RateLimited { retry_after } => ApiError::too_many(
            "rate_limited",
            format!("the provider of model {model} is rate limiting; retry later"),
            retry_after.map(|d| d.as_secs().max(1)).unwrap_or(1),
        ),
        ProviderError::Server { status, .. } => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            format!("the provider of model {model} failed with status {status}"),
        ),
        ProviderError::BadRequest { status, message } => ApiError::new(
            StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
            "upstream_rejected",
            format!("model {model}: {message}"),
        ),
        ProviderError::Decode(_) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_invalid",
            format!("the provider of model {model} sent an unreadable answer"),
        ),
    }
}

/// A failed call: the gateway's own rate limit (429 + Retry-After), else the provider's error.
fn failure_error(f: &fallback::Failure) -> ApiError {
    match &f.limited {
        Some(le) => le.api_error(),
        None => provider_error(&f.model, &f.error),
    }
}

pub async fn chat_completions(
    State(st): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let rt = st.rt.clone();
    if req.messages.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "`messages` must contain at least one message",
        ));
    }
    if !rt.cfg().models.contains_key(&req.model) {
        let cfg = rt.cfg();
        let known: Vec<&str> = cfg.models.keys().map(String::as_str).collect();
        return Err(ApiError::not_found(
            "model_not_found",
            format!(
                "the model `{}` does not exist on this gateway; models: {}",
                req.model,
                known.join(", ")
            ),
        ));
    }
    let agent = headers
        .get(AGENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|a| *a == "main" || rt.cfg().agents.contains_key(*a))
        .unwrap_or("api")
        .to_string();
    let meta = CallMeta {
        request_id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        task_id: None,
        agent,
        source: "api_call".into(),
        priority: openclaw_proto::Priority::Normal,
        attempt: 1,
        cache_hit: false,
        fallback_from: None,
    };
    let span = tracing::info_span!("chat", request = %meta.request_id, model = %req.model, stream = req.stream);
    serve_chat(rt, meta, req).instrument(span).await
}

async fn serve_chat(
    rt: std::sync::Arc<crate::runtime::Runtime>,
    meta: CallMeta,
    req: ChatCompletionRequest,
) -> Result<Response, ApiError> {
    let first = req.model.clone();
    if !req.stream {
        let answer = fallback::chat(&rt, &meta, &req, &first)
            .await
            .map_err(|f| failure_error(&f))?;
        let mut resp = answer.value.response;
        resp.usage = Some(answer.value.usage);
        let mut http = Json(resp).into_response();
        set_model_headers(&mut http, &answer.model, &answer.fallbacks);
        return Ok(http);
    }
    let answer = fallback::chat_stream(rt.clone(), &meta, &req, &first)
        .await
        .map_err(|f| failure_error(&f))?;
    let (stream, model, fallbacks) = (answer.value, answer.model, answer.fallbacks);
    let served = model.clone();
    let events = stream
        .map(move |item| -> Result<Event, Infallible> {
            Ok(match item {
                Ok(chunk) => {
                    Event::default().data(serde_json::to_string(&chunk).unwrap_or_default())
                }
                Err(e) => {
                    let err = provider_error(&model, &e);
                    let body = openclaw_proto::ErrorBody::new(err.code, err.message);
                    Event::default().data(serde_json::to_string(&body).unwrap_or_default())
                }
            })
        })
        .chain(futures::stream::once(async {
            Ok(Event::default().data("[DONE]"))
        }));
    let mut http = Sse::new(events).into_response();
    set_model_headers(&mut http, &served, &fallbacks);
    Ok(http)
}

/// `X-OpenClaw-Model` names the model that answered; `X-OpenClaw-Fallbacks` counts the moves
/// along the fallback chain (the body's `model` is the model that answered, too).
fn set_model_headers(
    resp: &mut Response,
    model: &str,
    fallbacks: &[openclaw_proto::api::FallbackStep],
) {
    use axum::http::HeaderValue;
    if let Ok(v) = HeaderValue::from_str(model) {
        resp.headers_mut().insert("x-openclaw-model", v);
    }
    resp.headers_mut()
        .insert("x-openclaw-fallbacks", HeaderValue::from(fallbacks.len()));
}

pub async fn models(State(st): State<AppState>) -> Json<ModelList> {
    let data = st
        .rt
        .providers
        .resolved()
        .iter()
        .map(|r| ModelInfo {
            id: r.model.clone(),
            object: "model".into(),
            created: 0,
            owned_by: r.served_by.as_str().to_string(),
        })
        .collect();
    Json(ModelList {
        object: "list".into(),
        data,
    })
}

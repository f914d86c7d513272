//! The OpenAI-compatible surface: `POST /v1/chat/completions` (JSON, or SSE with
//! `stream: true`) and `GET /v1/models`, so any OpenAI SDK can use the gateway unchanged.
//!
//! The request goes to the named configured model's provider through `calls` (accounted like
//! task calls: audit line, tokens, cost, latency). Provider failures map to the status an SDK
//! expects: 429 (+ Retry-After), 502, 504, or the upstream's own 4xx.
//!
//! With `cache.request_cache.enabled`, the request cache is looked in first (`exact` key of the
//! requested model; opt out with `Cache-Control: no-cache` or `X-OpenClaw-Cache: off`): a hit is
//! answered from the cache — as JSON, or replayed as SSE chunks for `stream: true` — and a
//! clean answer is stored. `X-OpenClaw-Cache: hit|miss` says which.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use openclaw_proto::openai::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChatMessage, Choice,
    ChunkChoice, Delta, ModelInfo, ModelList, Usage,
};
use tracing::Instrument;

use super::error::{provider_error, Code};
use super::{ApiError, ApiJson, AppState};
use crate::cache::keys::{self as cache, CacheEntry};
use crate::cache::store::entry_now;
use crate::cache::RequestCache;
use crate::calls::fallback;
use crate::calls::providers::ChunkStream;
use crate::calls::{self, CallMeta};
use crate::node::app::App;

/// Header naming the agent a direct chat call is accounted to (default `api`).
pub const AGENT_HEADER: &str = "x-openclaw-agent";
/// Request: `off` skips the request cache. Response: `hit` or `miss` when the cache was used.
pub const CACHE_HEADER: &str = "x-openclaw-cache";

/// A failed call: the gateway's own rate limit (429 + Retry-After), else the provider's error.
fn failure_error(f: &fallback::Failure) -> ApiError {
    match &f.limited {
        Some(le) => le.clone().into(),
        None => provider_error(&f.model, &f.error),
    }
}

pub async fn chat_completions(
    State(st): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let app = st.app.clone();
    if req.messages.is_empty() {
        return Err(ApiError::bad_request(
            Code::InvalidRequest,
            "`messages` must contain at least one message",
        ));
    }
    if !app.cfg.get().models.contains_key(&req.model) {
        let cfg = app.cfg.get();
        let known: Vec<&str> = cfg.models.keys().map(String::as_str).collect();
        return Err(ApiError::not_found(
            Code::ModelNotFound,
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
        .filter(|a| *a == "main" || app.cfg.get().agents.contains_key(*a))
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
    let cache_key = {
        let cfg = app.cfg.get();
        let rc = &cfg.cache.request_cache;
        (rc.enabled && !cache_opt_out(&headers))
            .then(|| cache::key_for(cache::Strategy::of(rc), &req.model, &req, None))
    };
    crate::activity::bump(&crate::activity::activity().chat_calls);
    let span = tracing::info_span!("chat", request = %meta.request_id, model = %req.model, stream = req.stream);
    serve_chat(app, meta, req, cache_key).instrument(span).await
}

/// `Cache-Control: no-cache` / `no-store` or `X-OpenClaw-Cache: off` skip the request cache.
pub fn cache_opt_out(headers: &HeaderMap) -> bool {
    let cc = headers
        .get_all(axum::http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| {
            let d = d.trim().to_ascii_lowercase();
            d == "no-cache" || d == "no-store"
        });
    let off = headers
        .get(CACHE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "off" | "false" | "0" | "no"
            )
        })
        .unwrap_or(false);
    cc || off
}

async fn serve_chat(
    app: std::sync::Arc<App>,
    meta: CallMeta,
    req: ChatCompletionRequest,
    cache_key: Option<String>,
) -> Result<Response, ApiError> {
    let first = req.model.clone();
    if let Some(key) = &cache_key {
        if let Some(hit) = app.cache.lookup(key).await {
            calls::account_cache_hit(&app.calls, &meta, &hit.model).await;
            let mut http = if req.stream {
                replay(&meta.request_id, hit.clone())
            } else {
                Json(cached_response(&meta.request_id, &hit)).into_response()
            };
            set_model_headers(&mut http, &hit.model, &[]);
            set_cache_header(&mut http, true);
            return Ok(http);
        }
    }
    // Budget: reserve like a non-critical task; refused → 429 until the period rolls over or
    // the limit is raised.
    let prompt_tokens = u64::from(crate::tokens::count_messages(&req.messages));
    let held = app
        .budget
        .reserve(&meta.agent, false, &first, prompt_tokens, req.output_cap())
        .await?;
    if !req.stream {
        let answer = fallback::chat(&app.calls, &meta, &req, &first)
            .await
            .map_err(|f| failure_error(&f))?;
        let used = answer.value.usage;
        held.settle(
            used.prompt_tokens + used.completion_tokens,
            answer.value.cost_usd,
        );
        let mut resp = answer.value.response;
        resp.usage = Some(answer.value.usage);
        if let Some(key) = cache_key.clone() {
            let text = resp.text();
            let finish = resp.choices.first().and_then(|c| c.finish_reason.clone());
            if resp.choices.len() == 1 && cache::cacheable(&text, finish.as_deref()) {
                let entry = entry_now(&answer.model, text, finish, answer.value.usage);
                app.cache.store(key, entry);
            }
        }
        let mut http = Json(resp).into_response();
        set_model_headers(&mut http, &answer.model, &answer.fallbacks);
        if cache_key.is_some() {
            set_cache_header(&mut http, false);
        }
        return Ok(http);
    }
    let answer = fallback::chat_stream(app.calls.clone(), &meta, &req, &first)
        .await
        .map_err(|f| failure_error(&f))?;
    let (stream, model, fallbacks) = (answer.value, answer.model, answer.fallbacks);
    let served = model.clone();
    let stream = match cache_key.clone() {
        Some(key) => record_stream(app.cache.clone(), key, model.clone(), &req, stream),
        None => stream,
    };
    // The reservation is settled by the chunk that carries the usage (providers are asked for
    // it); a stream that ends without one releases it.
    let mut held = Some(held);
    let price = app.cfg.get().models.get(&served).map(|m| m.price.clone());
    let events = stream
        .map(move |item| -> Result<Event, Infallible> {
            Ok(match item {
                Ok(chunk) => {
                    if let (Some(u), Some(h)) =
                        (chunk.usage, held.take_if(|_| chunk.usage.is_some()))
                    {
                        let cost = price
                            .as_ref()
                            .map(|p| p.cost(u.prompt_tokens, u.completion_tokens))
                            .unwrap_or(0.0);
                        h.settle(u.prompt_tokens + u.completion_tokens, cost);
                    }
                    Event::default().data(serde_json::to_string(&chunk).unwrap_or_default())
                }
                Err(e) => {
                    let err = provider_error(&model, &e);
                    let body = openclaw_proto::ErrorBody::new(err.code.as_str(), err.message);
                    Event::default().data(serde_json::to_string(&body).unwrap_or_default())
                }
            })
        })
        .chain(futures::stream::once(async {
            Ok(Event::default().data("[DONE]"))
        }));
    let mut http = Sse::new(events).into_response();
    set_model_headers(&mut http, &served, &fallbacks);
    if cache_key.is_some() {
        set_cache_header(&mut http, false);
    }
    Ok(http)
}

/// `X-OpenClaw-Cache: hit|miss` (only when the cache was looked in).
fn set_cache_header(resp: &mut Response, hit: bool) {
    resp.headers_mut().insert(
        CACHE_HEADER,
        axum::http::HeaderValue::from_static(if hit { "hit" } else { "miss" }),
    );
}

fn unix_now() -> i64 {
    (crate::util::now_ms() / 1000) as i64
}

/// A JSON answer from a cached entry (with the original call's usage).
fn cached_response(id: &str, hit: &CacheEntry) -> ChatCompletionResponse {
    ChatCompletionResponse {
        id: id.to_string(),
        object: "chat.completion".into(),
        created: unix_now(),
        model: hit.model.clone(),
        choices: vec![Choice {
            index: 0,
            message: ChatMessage::new("assistant", hit.text.clone()),
            finish_reason: Some(hit.finish_reason.clone().unwrap_or_else(|| "stop".into())),
            extra: Default::default(),
        }],
        usage: Some(hit.usage),
        extra: Default::default(),
    }
}

/// A cached answer replayed as a stream: a role chunk, the text in a few chunks, a final chunk
/// with the finish reason, then `[DONE]`.
fn replay(id: &str, hit: CacheEntry) -> Response {
    let chunk = |delta: Delta, finish: Option<String>| ChatCompletionChunk {
        id: id.to_string(),
        object: "chat.completion.chunk".into(),
        created: unix_now(),
        model: hit.model.clone(),
        choices: vec![ChunkChoice {
            index: 0,
            delta,
            finish_reason: finish,
        }],
        usage: None,
    };
    let mut chunks = vec![chunk(
        Delta {
            role: Some("assistant".into()),
            content: None,
        },
        None,
    )];
    for piece in cache::replay_pieces(&hit.text, REPLAY_CHUNKS) {
        chunks.push(chunk(
            Delta {
                role: None,
                content: Some(piece),
            },
            None,
        ));
    }
    chunks.push(chunk(
        Delta::default(),
        Some(hit.finish_reason.clone().unwrap_or_else(|| "stop".into())),
    ));
    let events = futures::stream::iter(
        chunks
            .into_iter()
            .map(|c| Event::default().data(serde_json::to_string(&c).unwrap_or_default()))
            .chain(std::iter::once(Event::default().data("[DONE]")))
            .map(Ok::<Event, Infallible>),
    );
    Sse::new(events).into_response()
}

/// Pieces a cached answer is replayed in.
const REPLAY_CHUNKS: usize = 4;

/// What a streamed answer had once it ended.
#[derive(Default)]
struct Recorded {
    text: String,
    finish: Option<String>,
    usage: Option<Usage>,
    failed: bool,
    choices_over_one: bool,
}

/// Pass a stream through, and cache its answer when it ends cleanly (not when the client went
/// away or the provider failed mid-way).
fn record_stream(
    cache_store: RequestCache,
    key: String,
    model: String,
    req: &ChatCompletionRequest,
    stream: ChunkStream,
) -> ChunkStream {
    let prompt_estimate = crate::tokens::count_messages(&req.messages) as u64;
    let rec = std::sync::Arc::new(std::sync::Mutex::new(Recorded::default()));
    let seen = rec.clone();
    let inspected = stream.inspect(move |item| {
        let mut r = seen.lock().unwrap_or_else(|p| p.into_inner());
        match item {
            Ok(chunk) => {
                if let Some(u) = chunk.usage {
                    r.usage = Some(u);
                }
                for c in &chunk.choices {
                    if c.index != 0 {
                        r.choices_over_one = true;
                        continue;
                    }
                    if let Some(t) = &c.delta.content {
                        r.text.push_str(t);
                    }
                    if c.finish_reason.is_some() {
                        r.finish = c.finish_reason.clone();
                    }
                }
            }
            Err(_) => r.failed = true,
        }
    });
    let at_end = futures::stream::once(async move {
        let r = std::mem::take(&mut *rec.lock().unwrap_or_else(|p| p.into_inner()));
        if !r.failed
            && !r.choices_over_one
            && r.finish.is_some()
            && cache::cacheable(&r.text, r.finish.as_deref())
        {
            let usage = r.usage.unwrap_or_else(|| {
                Usage::new(prompt_estimate, crate::tokens::count(&r.text) as u64)
            });
            cache_store.store(key, entry_now(&model, r.text, r.finish, usage));
        }
    })
    .filter_map(|()| async { None });
    Box::pin(inspected.chain(at_end))
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
        .app
        .calls
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_opt_out_headers() {
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[], false),
            (&[("cache-control", "no-cache")], true),
            (&[("cache-control", "max-age=0, No-Store")], true),
            (&[("cache-control", "max-age=60")], false),
            (&[("x-openclaw-cache", "off")], true),
            (&[("x-openclaw-cache", "OFF")], true),
            (&[("x-openclaw-cache", "on")], false),
        ];
        for (hs, want) in cases {
            let mut h = HeaderMap::new();
            for (k, v) in *hs {
                h.insert(*k, v.parse().unwrap());
            }
            assert_eq!(cache_opt_out(&h), *want, "{hs:?}");
        }
    }
}

//! The OpenAI-compatible surface: `POST /v1/chat/completions` (JSON, or SSE with
//! `stream: true`), `GET /v1/models` and `GET /v1/models/{id}`, so any OpenAI SDK can use the
//! gateway unchanged — and the chat path that `/v1/messages` (Anthropic) runs too.
//!
//! [`prepare`] validates a request like a task ([`validate_chat`], pure: known roles, a
//! configured model, a known source from `X-OpenClaw-Source`, a prompt within
//! `min(session.context_management.max_context_tokens, the model's context_window)`) and builds
//! its call metadata and cache key; [`run_chat`] runs it: the
//! request cache, the budget reservation, the fallback chain with rate limits, accounted in
//! `calls` like task calls (audit line, tokens, cost, latency). Provider failures map to the
//! status an SDK expects: 429 (+ Retry-After), 502, 504, or the upstream's own 4xx.
//!
//! Streams: providers are always asked for the usage (the gateway accounts every stream by it);
//! the client gets it as a last chunk with `"choices": []` only when it asked with
//! `stream_options.include_usage: true` ([`split_usage`], pure).
//!
//! With `cache.request_cache.enabled`, the request cache is looked in first (its probe: the
//! `exact` key of the requested model, or under `semantic` the agent's partition and the last
//! user message compared by embedding — `crate::cache`; opt out with `Cache-Control: no-cache`
//! or `X-OpenClaw-Cache: off`): a hit is answered from the cache — as JSON, or replayed as SSE
//! chunks for `stream: true` — and a clean answer is stored. `X-OpenClaw-Cache: hit|miss` says
//! which (`hit; strategy=semantic; score=0.97` under `semantic`); `X-OpenClaw-Provider` (and
//! `provider` in a JSON body) names the provider serving the model, `sim` for the simulator.

use std::convert::Infallible;

use super::ApiPath;
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
use crate::config::Config;
use crate::node::app::App;

/// Header naming the agent a direct chat call is accounted to (default `api`).
pub const AGENT_HEADER: &str = "x-openclaw-agent";

/// The agent a compatible-API call is accounted to: `X-OpenClaw-Agent` when it names a
/// configured agent (or `main`), else `api`.
pub fn agent_of(cfg: &Config, headers: &HeaderMap) -> String {
    headers
        .get(AGENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|a| *a == "main" || cfg.agents.contains_key(*a))
        .unwrap_or("api")
        .to_string()
}
/// Header naming where a direct chat call comes from (default `api_call`): one of
/// `task_priority.source_mapping`'s sources, which also gives the call's priority.
pub const SOURCE_HEADER: &str = "x-openclaw-source";
/// Request: `off` skips the request cache. Response: `hit` or `miss` when the cache was used.
pub const CACHE_HEADER: &str = "x-openclaw-cache";
/// Response: the provider serving the answering model (`openai`, `anthropic` or `sim`).
pub const PROVIDER_HEADER: &str = "x-openclaw-provider";
/// The message roles a chat request may use.
pub const KNOWN_ROLES: [&str; 6] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

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
    let include_usage = wants_usage(&req);
    let stream = req.stream;
    let (meta, cache_key) = prepare(&app, &headers, &req, "chatcmpl")?;
    crate::activity::bump(&crate::activity::activity().chat_calls);
    let span = tracing::info_span!("chat", request = %meta.request_id, model = %req.model, stream);
    let served = run_chat(app, meta, req, cache_key).instrument(span).await?;
    let mut http = match served.body {
        Served::Whole(mut resp) => {
            resp.extra
                .insert("provider".into(), serde_json::json!(served.provider));
            Json(resp).into_response()
        }
        Served::Stream(chunks) => {
            Sse::new(openai_events(chunks, served.model.clone(), include_usage)).into_response()
        }
    };
    set_model_headers(
        &mut http,
        &served.model,
        &served.provider,
        &served.fallbacks,
    );
    if let Some(v) = &served.cache {
        set_cache_header(&mut http, v);
    }
    Ok(http)
}

/// `stream_options.include_usage: true`: the client wants the final usage chunk.
pub fn wants_usage(req: &ChatCompletionRequest) -> bool {
    req.extra
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(serde_json::Value::as_bool)
        == Some(true)
}

/// The checks of a chat request before any call (pure): at least one message, known roles, a
/// configured model, a known source, and a prompt that fits the model's context window.
/// Returns the call's priority.
pub fn validate_chat(
    cfg: &Config,
    req: &ChatCompletionRequest,
    source: Option<&str>,
) -> Result<openclaw_proto::Priority, ApiError> {
    if req.messages.is_empty() {
        return Err(ApiError::bad_request(
            Code::InvalidRequest,
            "`messages` must contain at least one message",
        ));
    }
    if let Some((i, m)) = req
        .messages
        .iter()
        .enumerate()
        .find(|(_, m)| !KNOWN_ROLES.contains(&m.role.as_str()))
    {
        return Err(ApiError::bad_request(
            Code::InvalidRole,
            format!(
                "messages[{i}].role `{}` is not a known role; roles: {}",
                m.role,
                KNOWN_ROLES.join(", ")
            ),
        ));
    }
    if !cfg.models.contains_key(&req.model) {
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
    if cfg.model_kind(&req.model) == Some(crate::config::ModelKind::Embedding) {
        return Err(ApiError::bad_request(
            Code::WrongModelKind,
            format!(
                "`{}` is an embedding model: use it with POST /v1/embeddings, not for chat",
                req.model
            ),
        ));
    }
    let priority = match source {
        None => cfg.task_priority.for_source(DEFAULT_SOURCE),
        Some(s) => match cfg.task_priority.source_mapping.get(s) {
            Some(p) => *p,
            None => {
                let known: Vec<&str> = cfg
                    .task_priority
                    .source_mapping
                    .keys()
                    .map(String::as_str)
                    .collect();
                return Err(ApiError::unprocessable(
                    Code::UnknownSource,
                    format!(
                        "source `{s}` (header {SOURCE_HEADER}) is not one of task_priority.source_mapping: {}",
                        known.join(", ")
                    ),
                ));
            }
        },
    };
    let prompt = u64::from(crate::tokens::count_messages(&req.messages));
    crate::context::check_prompt(cfg, &req.model, prompt, req.output_cap())
        .map_err(|e| ApiError::bad_request(Code::ContextLengthExceeded, e))?;
    Ok(priority)
}

/// The source of a chat call that names none.
pub const DEFAULT_SOURCE: &str = "api_call";

/// Validate a chat request and build its call metadata (agent and source from the headers)
/// and its request-cache key (when the cache is on and the caller did not opt out).
pub fn prepare(
    app: &App,
    headers: &HeaderMap,
    req: &ChatCompletionRequest,
    id_prefix: &str,
) -> Result<(CallMeta, Option<crate::cache::Probe>), ApiError> {
    let cfg = app.cfg.get();
    let source_header = match headers.get(SOURCE_HEADER) {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::unprocessable(
                Code::UnknownSource,
                format!("the {SOURCE_HEADER} header is not text"),
            )
        })?),
    };
    let priority = validate_chat(&cfg, req, source_header)?;
    let agent = agent_of(&cfg, headers);
    let meta = CallMeta::new(
        format!("{id_prefix}-{}", uuid::Uuid::new_v4().simple()),
        agent,
        source_header.unwrap_or(DEFAULT_SOURCE).to_string(),
        priority,
    );
    let rc = &cfg.cache.request_cache;
    let cache_probe = (rc.enabled && !cache_opt_out(headers))
        .then(|| crate::cache::probe(rc, &req.model, &meta.agent, req, None));
    Ok((meta, cache_probe))
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

/// A chat answer, whole or streamed, in OpenAI shapes (the Messages endpoint translates it).
pub enum Served {
    Whole(ChatCompletionResponse),
    /// Chunks as the provider sent them (the last one carrying the usage); the budget
    /// reservation settles on it and the request cache records the stream as it passes.
    Stream(ChunkStream),
}

/// What [`run_chat`] answers: the body, the model that answered and its provider, the moves
/// along the fallback chain, and the request cache's `X-OpenClaw-Cache` answer (`miss`, `hit`,
/// `hit; strategy=semantic; score=0.97`; `None`: not looked in).
pub struct ChatServed {
    pub body: Served,
    pub model: String,
    pub provider: String,
    pub fallbacks: Vec<openclaw_proto::api::FallbackStep>,
    pub cache: Option<String>,
}

/// The provider serving `model` on this node (`sim` for the simulator), `unknown` if none.
pub fn provider_of(app: &App, model: &str) -> String {
    app.calls
        .providers
        .resolved()
        .iter()
        .find(|r| r.model == model)
        .map(|r| r.served_by.as_str().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// One chat call, the way both `/v1/chat/completions` and `/v1/messages` run it: the request
/// cache, the budget reservation, the fallback chain with rate limits, accounting (in `calls`).
pub async fn run_chat(
    app: std::sync::Arc<App>,
    meta: CallMeta,
    req: ChatCompletionRequest,
    mut cache_probe: Option<crate::cache::Probe>,
) -> Result<ChatServed, ApiError> {
    let first = req.model.clone();
    if let Some(probe) = &mut cache_probe {
        if let Some(found) = app.cache.find(probe, &app.calls, &app.budget, &meta).await {
            let configured = cache::Strategy::of(&app.cfg.get().cache.request_cache);
            let header = found.header_value(configured);
            let score = found.score_f64();
            let hit = found.entry;
            calls::account_cache_hit(&app.calls, &meta, &hit.model, score).await;
            let body = if req.stream {
                Served::Stream(Box::pin(futures::stream::iter(
                    cached_chunks(&meta.request_id, &hit).into_iter().map(Ok),
                )))
            } else {
                Served::Whole(cached_response(&meta.request_id, &hit))
            };
            return Ok(ChatServed {
                body,
                provider: provider_of(&app, &hit.model),
                model: hit.model,
                fallbacks: Vec::new(),
                cache: Some(header),
            });
        }
    }
    let cache = cache_probe.as_ref().map(|_| "miss".to_string());
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
        if let Some(probe) = cache_probe {
            let text = resp.text();
            let finish = resp.choices.first().and_then(|c| c.finish_reason.clone());
            if resp.choices.len() == 1 && cache::cacheable(&text, finish.as_deref()) {
                let entry = entry_now(&answer.model, text, finish, answer.value.usage);
                app.cache.store_answer(probe, entry);
            }
        }
        return Ok(ChatServed {
            body: Served::Whole(resp),
            provider: provider_of(&app, &answer.model),
            model: answer.model,
            fallbacks: answer.fallbacks,
            cache,
        });
    }
    let answer = fallback::chat_stream(app.calls.clone(), &meta, &req, &first)
        .await
        .map_err(|f| failure_error(&f))?;
    let (stream, model, fallbacks) = (answer.value, answer.model, answer.fallbacks);
    let stream = match cache_probe {
        Some(probe) => record_stream(app.cache.clone(), probe, model.clone(), &req, stream),
        None => stream,
    };
    // The reservation is settled by the chunk that carries the usage (providers are always
    // asked for it); a stream that ends without one releases it.
    let mut held = Some(held);
    let price = app.cfg.get().models.get(&model).map(|m| m.price.clone());
    let stream: ChunkStream = Box::pin(stream.inspect(move |item| {
        if let Ok(chunk) = item {
            if let (Some(u), Some(h)) = (chunk.usage, held.take_if(|_| chunk.usage.is_some())) {
                let cost = price
                    .as_ref()
                    .map(|p| p.cost(u.prompt_tokens, u.completion_tokens))
                    .unwrap_or(0.0);
                h.settle(u.prompt_tokens + u.completion_tokens, cost);
            }
        }
    }));
    Ok(ChatServed {
        body: Served::Stream(stream),
        provider: provider_of(&app, &model),
        model,
        fallbacks,
        cache,
    })
}

/// A chunk as the client gets it (pure): the usage travels only in a last chunk of its own
/// with `"choices": []`, and only when the client asked for it (`include_usage`); a provider
/// chunk carrying both choices and usage is split in two.
pub fn split_usage(
    mut chunk: ChatCompletionChunk,
    include_usage: bool,
) -> Vec<ChatCompletionChunk> {
    let usage = chunk.usage.take();
    let mut out = Vec::with_capacity(2);
    let usage_chunk = match (usage, include_usage) {
        (Some(u), true) => {
            let mut c = chunk.clone();
            c.choices.clear();
            c.usage = Some(u);
            Some(c)
        }
        _ => None,
    };
    if !chunk.choices.is_empty() {
        out.push(chunk);
    }
    out.extend(usage_chunk);
    out
}

/// The OpenAI SSE events of a chunk stream: `data: {chunk}` each, errors as
/// `data: {"error":{...}}`, then `data: [DONE]`.
fn openai_events(
    chunks: ChunkStream,
    model: String,
    include_usage: bool,
) -> impl futures::Stream<Item = Result<Event, Infallible>> + Send + 'static {
    chunks
        .flat_map(move |item| {
            let events: Vec<Event> = match item {
                Ok(chunk) => split_usage(chunk, include_usage)
                    .iter()
                    .map(|c| Event::default().data(serde_json::to_string(c).unwrap_or_default()))
                    .collect(),
                Err(e) => {
                    let err = provider_error(&model, &e);
                    let body = openclaw_proto::ErrorBody::new(err.code.as_str(), err.message);
                    vec![Event::default().data(serde_json::to_string(&body).unwrap_or_default())]
                }
            };
            futures::stream::iter(events.into_iter().map(Ok))
        })
        .chain(futures::stream::once(async {
            Ok(Event::default().data("[DONE]"))
        }))
}

/// `X-OpenClaw-Cache: miss`, `hit`, or under `semantic` `hit; strategy=semantic; score=0.97`
/// (only when the cache was looked in).
pub fn set_cache_header(resp: &mut Response, value: &str) {
    if let Ok(v) = axum::http::HeaderValue::from_str(value) {
        resp.headers_mut().insert(CACHE_HEADER, v);
    }
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

/// A cached answer as stream chunks: a role chunk, the text in a few chunks, a chunk with the
/// finish reason, and the usage chunk of the original call.
fn cached_chunks(id: &str, hit: &CacheEntry) -> Vec<ChatCompletionChunk> {
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
    let mut last = chunk(
        Delta::default(),
        Some(hit.finish_reason.clone().unwrap_or_else(|| "stop".into())),
    );
    last.usage = Some(hit.usage);
    chunks.push(last);
    chunks
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
    probe: crate::cache::Probe,
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
            cache_store.store_answer(probe, entry_now(&model, r.text, r.finish, usage));
        }
    })
    .filter_map(|()| async { None });
    Box::pin(inspected.chain(at_end))
}

/// `X-OpenClaw-Model` names the model that answered, `X-OpenClaw-Provider` its provider
/// (`sim` for the simulator); `X-OpenClaw-Fallbacks` counts the moves
/// along the fallback chain (the body's `model` is the model that answered, too).
pub fn set_model_headers(
    resp: &mut Response,
    model: &str,
    provider: &str,
    fallbacks: &[openclaw_proto::api::FallbackStep],
) {
    use axum::http::HeaderValue;
    if let Ok(v) = HeaderValue::from_str(model) {
        resp.headers_mut().insert("x-openclaw-model", v);
    }
    if let Ok(v) = HeaderValue::from_str(provider) {
        resp.headers_mut().insert(PROVIDER_HEADER, v);
    }
    resp.headers_mut()
        .insert("x-openclaw-fallbacks", HeaderValue::from(fallbacks.len()));
}

fn model_info(r: &crate::calls::providers::Resolved) -> ModelInfo {
    ModelInfo {
        id: r.model.clone(),
        object: "model".into(),
        created: 0,
        owned_by: r.served_by.as_str().to_string(),
    }
}

/// `GET /v1/models`: every configured model; `owned_by` names the provider serving it (`sim`
/// when the built-in simulator answers for it).
pub async fn models(State(st): State<AppState>) -> Json<ModelList> {
    let data = st
        .app
        .calls
        .providers
        .resolved()
        .iter()
        .map(model_info)
        .collect();
    Json(ModelList {
        object: "list".into(),
        data,
    })
}

/// `GET /v1/models/{id}` (the SDKs' `models.retrieve`): one model, or 404 `model_not_found`.
pub async fn model(
    State(st): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ModelInfo>, ApiError> {
    let providers = &st.app.calls.providers;
    match providers.resolved().iter().find(|r| r.model == id) {
        Some(r) => Ok(Json(model_info(r))),
        None => Err(unknown_model(&st.app, &id)),
    }
}

/// 404 `model_not_found` naming the configured models.
pub fn unknown_model(app: &App, model: &str) -> ApiError {
    let cfg = app.cfg.get();
    let known: Vec<&str> = cfg.models.keys().map(String::as_str).collect();
    ApiError::not_found(
        Code::ModelNotFound,
        format!(
            "the model `{model}` does not exist on this gateway; models: {}",
            known.join(", ")
        ),
    )
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

    fn chunk(with_choice: bool, usage: Option<Usage>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: "c".into(),
            object: "chat.completion.chunk".into(),
            created: 0,
            model: "m".into(),
            choices: if with_choice {
                vec![ChunkChoice {
                    index: 0,
                    delta: Delta::default(),
                    finish_reason: Some("stop".into()),
                }]
            } else {
                Vec::new()
            },
            usage,
        }
    }

    #[test]
    fn usage_chunk_only_when_asked() {
        let u = Some(Usage::new(3, 4));
        // (chunk has a choice, has usage, include_usage) -> [(choices, usage)] sent
        let cases = [
            (true, None, false, vec![(1, false)]),
            (true, None, true, vec![(1, false)]),
            (false, u, false, vec![]),
            (false, u, true, vec![(0, true)]),
            (true, u, false, vec![(1, false)]),
            (true, u, true, vec![(1, false), (0, true)]),
        ];
        for (with_choice, usage, include, want) in cases {
            let got: Vec<(usize, bool)> = split_usage(chunk(with_choice, usage), include)
                .iter()
                .map(|c| (c.choices.len(), c.usage.is_some()))
                .collect();
            assert_eq!(got, want, "{with_choice} {usage:?} {include}");
        }
    }

    #[test]
    fn chat_validation_table() {
        let cfg = Config::default();
        let req = |model: &str, role: &str, text: &str| ChatCompletionRequest {
            model: model.into(),
            messages: vec![ChatMessage::new(role, text)],
            stream: false,
            max_tokens: None,
            max_completion_tokens: None,
            temperature: None,
            extra: Default::default(),
        };
        let code = |r: ChatCompletionRequest, source: Option<&str>| {
            validate_chat(&cfg, &r, source)
                .err()
                .map(|e| e.code.as_str())
        };
        assert_eq!(code(req("gpt-4o", "user", "hi"), None), None);
        assert_eq!(code(req("gpt-4o", "tool", "hi"), None), None);
        assert_eq!(
            code(req("gpt-4o", "robot", "hi"), None),
            Some("invalid_role")
        );
        assert_eq!(
            code(req("gpt-9", "user", "hi"), None),
            Some("model_not_found")
        );
        assert_eq!(
            code(req("gpt-4o", "user", "hi"), Some("fax")),
            Some("unknown_source")
        );
        assert_eq!(code(req("gpt-4o", "user", "hi"), Some("cron_job")), None);
        let mut empty = req("gpt-4o", "user", "hi");
        empty.messages.clear();
        assert_eq!(code(empty, None), Some("invalid_request"));
        assert_eq!(
            code(req("text-embedding-3-small", "user", "hi"), None),
            Some("wrong_model_kind")
        );
        let mut big = req("gpt-4o", "user", "hi");
        big.max_tokens = Some(u32::MAX);
        assert_eq!(code(big, None), Some("context_length_exceeded"));
        assert_eq!(
            validate_chat(&cfg, &req("gpt-4o", "user", "hi"), Some("cron_job")).ok(),
            Some(openclaw_proto::Priority::Low)
        );
    }
}

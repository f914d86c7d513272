//! The simulator: an OpenAI-compatible (and Anthropic-compatible) model server we own.
//!
//! It is the embedded provider of a node without API keys, the standalone
//! `openclaw-node sim-provider --listen ADDR` process, and the upstream of integration tests,
//! chaos runs and benchmarks. Answers are deterministic ([`gen`]), token counts are realistic
//! and exact ([`crate::tokens`]), and faults are injected on demand ([`faults`]); every call is
//! recorded in a bounded log ([`calls`]).
//!
//! Routes ([`Sim::router`]):
//! - `POST /v1/chat/completions` — OpenAI protocol, plain and `stream: true` SSE;
//! - `POST /v1/messages` — Anthropic Messages API, plain and streamed events;
//! - `POST /v1/embeddings` — OpenAI embeddings, deterministic and lexical ([`embed`]);
//! - `GET /v1/models` — the models seen so far;
//! - `GET|DELETE /sim/calls` — the call log (`?task_id=`, `?since=<seq>`) / reset it;
//! - `GET|PUT /sim/faults` — runtime fault settings, global and per model;
//! - `GET /health`;
//! - Feishu's Open API (token, message reply and send, bot info) and its message log
//!   `GET /sim/feishu/messages` ([`feishu`]).
//!
//! Per-request faults: header `X-Sim-Fault: 500|429|hang|slow:<ms>`, or `[sim:...]` in the last
//! user message. A hang holds the request until the client leaves, the simulator shuts down or
//! [`HANG_MAX`] passes.
//!
//! Invariant: the simulator knows nothing about tasks, agents or the gateway; it only sees
//! HTTP requests (the task id is an opaque header it echoes into its log).

pub mod calls;
pub mod embed;
pub mod faults;
pub mod feishu;
pub mod gen;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use openclaw_proto::anthropic::{
    self as anth, BlockDelta, ContentBlock, DeltaUsage, MessageDelta, MessagesRequest,
    MessagesResponse, StreamEvent,
};
use openclaw_proto::openai::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChatMessage, Choice,
    ChunkChoice, Delta, ModelInfo, ModelList, Usage,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::calls::providers::TASK_ID_HEADER;
use calls::{CallLog, CallRecord, CallsView, STATUS_NO_ANSWER};
use faults::{Dice, Directive, FaultSettings, Faults, Outcome, Plan};
use gen::Generated;

/// Header carrying a per-request fault directive.
pub const FAULT_HEADER: &str = "X-Sim-Fault";
/// Longest a simulated hang holds a request.
pub const HANG_MAX: Duration = Duration::from_secs(600);
/// Distinct model names remembered for `GET /v1/models`.
pub const MODELS_MAX: usize = 1024;

/// Simulator flags (`openclaw-node sim-provider ...`); every one has a default.
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct SimOptions {
    /// Fixed latency added to every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Extra latency, uniform in 0..=N milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_jitter_ms: u64,
    /// Delay between streamed chunks, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub stream_chunk_delay_ms: u64,
    /// Fraction of calls answered 500.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Fraction of calls answered 429.
    #[arg(long, default_value_t = 0.0)]
    pub rate_limit_rate: f64,
    /// `Retry-After` of a 429, in seconds.
    #[arg(long, default_value_t = 1)]
    pub retry_after_secs: u64,
    /// Fraction of calls never answered (until the client gives up).
    #[arg(long, default_value_t = 0.0)]
    pub hang_rate: f64,
    /// Seed of the fault dice: the same seed and call order give the same faults.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Longest answer, in tokens.
    #[arg(long, default_value_t = 256)]
    pub max_output_tokens: u32,
    /// Calls kept in the call log (the count keeps going past it).
    #[arg(long, default_value_t = 100_000)]
    pub calls_max: usize,
    /// Lifetime of the simulated Feishu tenant access tokens, in seconds.
    #[arg(long, default_value_t = 7200)]
    pub feishu_token_ttl_s: u64,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            latency_ms: 0,
            latency_jitter_ms: 0,
            stream_chunk_delay_ms: 0,
            error_rate: 0.0,
            rate_limit_rate: 0.0,
            retry_after_secs: 1,
            hang_rate: 0.0,
            seed: 1,
            max_output_tokens: 256,
            calls_max: 100_000,
            feishu_token_ttl_s: 7200,
        }
    }
}

impl SimOptions {
    fn fault_settings(&self) -> FaultSettings {
        FaultSettings {
            latency_ms: self.latency_ms,
            latency_jitter_ms: self.latency_jitter_ms,
            stream_chunk_delay_ms: self.stream_chunk_delay_ms,
            error_rate: self.error_rate,
            rate_limit_rate: self.rate_limit_rate,
            retry_after_secs: self.retry_after_secs,
            hang_rate: self.hang_rate,
        }
    }
}

/// The simulator. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct Sim {
    inner: Arc<Inner>,
}

struct Inner {
    max_output_tokens: u32,
    faults: Mutex<Faults>,
    dice: Mutex<Dice>,
    calls: Mutex<CallLog>,
    models: Mutex<BTreeSet<String>>,
    /// The Feishu Open API.
    feishu: feishu::FeishuSim,
    /// Cancelled when [`Sim::serve`] shuts down: ends hangs and delays so shutdown is prompt.
    closing: CancellationToken,
}

/// Lock a mutex whose data stays consistent even if a holder panicked (plain counters/logs).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Which protocol a call used: decides the error body shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    OpenAi,
    Anthropic,
}

impl Api {
    fn as_str(self) -> &'static str {
        match self {
            Api::OpenAi => "openai",
            Api::Anthropic => "anthropic",
        }
    }
}

/// A call after parsing, before answering.
struct Call {
    api: Api,
    model: String,
    stream: bool,
    include_usage: bool,
    generated: Generated,
    plan: Plan,
    seq: u64,
    fault: Option<&'static str>,
}

impl Sim {
    pub fn new(opts: SimOptions) -> Sim {
        Sim {
            inner: Arc::new(Inner {
                max_output_tokens: opts.max_output_tokens,
                faults: Mutex::new(Faults::new(opts.fault_settings())),
                dice: Mutex::new(Dice::new(opts.seed)),
                calls: Mutex::new(CallLog::new(opts.calls_max)),
                models: Mutex::new(BTreeSet::new()),
                feishu: feishu::FeishuSim::new(opts.feishu_token_ttl_s),
                closing: CancellationToken::new(),
            }),
        }
    }

    /// Every route of the simulator.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/messages", post(messages))
            .route("/v1/embeddings", post(embed::embeddings))
            .route("/v1/models", get(list_models))
            .route("/sim/calls", get(get_calls).delete(delete_calls))
            .route("/sim/faults", get(get_faults).put(put_faults))
            .route("/health", get(|| async { "ok" }))
            .with_state(self.clone())
            .merge(self.inner.feishu.router())
    }

    /// The Feishu messages received, as `GET /sim/feishu/messages` shows them.
    pub fn feishu_log(&self) -> feishu::FeishuLog {
        self.inner.feishu.log()
    }

    /// Serve until `shutdown` is cancelled, then finish in-flight answers (hangs end at once).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let closing = self.inner.closing.clone();
        let router = self.router();
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                shutdown.cancelled().await;
                closing.cancel();
            })
            .await
    }

    /// The calls log, as `GET /sim/calls` shows it.
    pub fn calls(&self, task_id: Option<&str>, since: Option<u64>) -> CallsView {
        lock(&self.inner.calls).view(task_id, since)
    }

    /// Current fault settings.
    pub fn faults(&self) -> Faults {
        lock(&self.inner.faults).clone()
    }

    fn remember_model(&self, model: &str) {
        let mut models = lock(&self.inner.models);
        if models.len() < MODELS_MAX && !models.contains(model) {
            models.insert(model.to_string());
        }
    }

    fn record(&self, mut rec: CallRecord) -> u64 {
        rec.at_ms = now_ms();
        lock(&self.inner.calls).record(rec)
    }

    /// Throw the dice, decide, and record the call.
    #[allow(clippy::too_many_arguments)]
    fn admit(
        &self,
        api: Api,
        model: String,
        stream: bool,
        include_usage: bool,
        generated: Generated,
        directive: Option<Directive>,
        task_id: Option<String>,
    ) -> Call {
        self.remember_model(&model);
        let settings = lock(&self.inner.faults).effective(&model);
        let roll = lock(&self.inner.dice).roll();
        let plan = faults::decide(&settings, directive, roll);
        let (status, fault, output) = match plan.outcome {
            Outcome::Answer => (
                200,
                matches!(directive, Some(Directive::Slow(_))).then_some("slow"),
                generated.completion_tokens,
            ),
            Outcome::Error500 => (500, Some("500"), 0),
            Outcome::RateLimited { .. } => (429, Some("429"), 0),
            Outcome::Hang => (STATUS_NO_ANSWER, Some("hang"), 0),
        };
        let seq = self.record(CallRecord {
            seq: 0,
            task_id,
            model: model.clone(),
            status,
            input_tokens: generated.prompt_tokens,
            output_tokens: output,
            stream,
            at_ms: 0,
            api: api.as_str().into(),
            fault: fault.map(str::to_string),
            summary: generated.summary,
            embedding: false,
        });
        Call {
            api,
            model,
            stream,
            include_usage,
            generated,
            plan,
            seq,
            fault,
        }
    }

    /// Record a request that could not be parsed.
    fn reject(&self, api: Api, task_id: Option<String>, message: String) -> Response {
        self.record(CallRecord {
            seq: 0,
            task_id,
            model: String::new(),
            status: 400,
            input_tokens: 0,
            output_tokens: 0,
            stream: false,
            at_ms: 0,
            api: api.as_str().into(),
            fault: None,
            summary: false,
            embedding: false,
        });
        tracing::debug!(api = api.as_str(), %message, "sim rejected a request");
        error_response(api, StatusCode::BAD_REQUEST, &message, None)
    }

    /// Sleep, cut short if the simulator is shutting down.
    async fn sleep(&self, d: Duration) {
        if d.is_zero() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.inner.closing.cancelled() => {}
        }
    }

    /// Play the plan: wait, then fail, hang or answer.
    async fn play(&self, call: Call) -> Response {
        self.sleep(call.plan.delay).await;
        match call.plan.outcome {
            Outcome::Error500 => error_response(
                call.api,
                StatusCode::INTERNAL_SERVER_ERROR,
                "simulated server error",
                None,
            ),
            Outcome::RateLimited { retry_after_secs } => error_response(
                call.api,
                StatusCode::TOO_MANY_REQUESTS,
                "simulated rate limit",
                Some(retry_after_secs),
            ),
            Outcome::Hang => {
                self.sleep(HANG_MAX).await;
                error_response(
                    call.api,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "simulated hang ended",
                    None,
                )
            }
            Outcome::Answer => match (call.api, call.stream) {
                (Api::OpenAi, false) => Json(openai_response(&call)).into_response(),
                (Api::OpenAi, true) => sse_response(openai_events(&call), call.plan.chunk_delay),
                (Api::Anthropic, false) => Json(anthropic_response(&call)).into_response(),
                (Api::Anthropic, true) => {
                    sse_response(anthropic_events(&call), call.plan.chunk_delay)
                }
            },
        }
    }

    async fn handle(&self, call: Call, task_id: Option<&str>) -> Response {
        let span = tracing::info_span!(
            "sim_call",
            api = call.api.as_str(),
            seq = call.seq,
            model = %call.model,
            task_id = task_id.unwrap_or(""),
            stream = call.stream,
            fault = call.fault.unwrap_or(""),
        );
        self.play(call).instrument(span).await
    }
}

fn task_id_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get(TASK_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The directive of a request: the header first, else the last user message.
fn directive_of(headers: &HeaderMap, messages: &[ChatMessage]) -> Option<Directive> {
    headers
        .get(FAULT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(faults::parse_directive)
        .or_else(|| {
            messages
                .iter()
                .rev()
                .find(|m| m.role == "user")
                .and_then(|m| faults::directive_in_text(&m.text()))
        })
}

/// An error in the caller's protocol: OpenAI `{"error":{message,type,code}}` or Anthropic
/// `{"type":"error","error":{type,message}}`, with `Retry-After` on a 429.
fn error_response(
    api: Api,
    status: StatusCode,
    message: &str,
    retry_after_secs: Option<u64>,
) -> Response {
    let (kind, code) = match status.as_u16() {
        400 => ("invalid_request_error", "invalid_request"),
        429 => ("rate_limit_error", "rate_limit_exceeded"),
        503 => ("overloaded_error", "unavailable"),
        _ => ("api_error", "server_error"),
    };
    let body = match api {
        Api::OpenAi => json!({"error": {"message": message, "type": kind, "code": code}}),
        Api::Anthropic => json!({"type": "error", "error": {"type": kind, "message": message}}),
    };
    let mut resp = (status, Json(body)).into_response();
    if let Some(secs) = retry_after_secs {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

fn sse_response(events: Vec<String>, chunk_delay: Duration) -> Response {
    let stream = futures::stream::iter(events).then(move |e| async move {
        if !chunk_delay.is_zero() {
            tokio::time::sleep(chunk_delay).await;
        }
        Ok::<_, Infallible>(Bytes::from(e))
    });
    let mut resp = Body::from_stream(stream).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn created() -> i64 {
    (now_ms() / 1000) as i64
}

fn finish_reason(g: &Generated) -> &'static str {
    if g.capped {
        "length"
    } else {
        "stop"
    }
}

fn usage(g: &Generated) -> Usage {
    Usage::new(u64::from(g.prompt_tokens), u64::from(g.completion_tokens))
}

fn openai_response(call: &Call) -> ChatCompletionResponse {
    let g = &call.generated;
    ChatCompletionResponse {
        id: format!("chatcmpl-sim-{}", call.seq),
        object: "chat.completion".into(),
        created: created(),
        model: call.model.clone(),
        choices: vec![Choice {
            index: 0,
            message: ChatMessage::new("assistant", g.text.clone()),
            finish_reason: Some(finish_reason(g).into()),
            extra: Map::new(),
        }],
        usage: Some(usage(g)),
        extra: Map::from_iter([("system_fingerprint".to_string(), json!("openclaw-sim"))]),
    }
}

/// `data: {chunk}\n\n` events: role, one per piece, finish, usage (if asked), `[DONE]`.
fn openai_events(call: &Call) -> Vec<String> {
    let g = &call.generated;
    let id = format!("chatcmpl-sim-{}", call.seq);
    let created = created();
    let chunk = |delta: Delta, finish: Option<&str>| ChatCompletionChunk {
        id: id.clone(),
        object: "chat.completion.chunk".into(),
        created,
        model: call.model.clone(),
        choices: vec![ChunkChoice {
            index: 0,
            delta,
            finish_reason: finish.map(str::to_string),
        }],
        usage: None,
    };
    let mut chunks = Vec::with_capacity(g.pieces.len() + 3);
    chunks.push(chunk(
        Delta {
            role: Some("assistant".into()),
            content: Some(String::new()),
        },
        None,
    ));
    for p in &g.pieces {
        chunks.push(chunk(
            Delta {
                role: None,
                content: Some(p.clone()),
            },
            None,
        ));
    }
    chunks.push(chunk(Delta::default(), Some(finish_reason(g))));
    if call.include_usage {
        let mut u = chunk(Delta::default(), None);
        u.choices.clear();
        u.usage = Some(usage(g));
        chunks.push(u);
    }
    let mut events: Vec<String> = chunks
        .iter()
        .map(|c| format!("data: {}\n\n", serde_json::to_string(c).unwrap_or_default()))
        .collect();
    events.push("data: [DONE]\n\n".into());
    events
}

fn anthropic_message(
    call: &Call,
    content: Vec<ContentBlock>,
    output_tokens: u64,
) -> MessagesResponse {
    let g = &call.generated;
    MessagesResponse {
        id: format!("msg_sim_{}", call.seq),
        kind: "message".into(),
        role: "assistant".into(),
        content,
        model: call.model.clone(),
        stop_reason: None,
        stop_sequence: None,
        usage: anth::Usage {
            input_tokens: u64::from(g.prompt_tokens),
            output_tokens,
        },
    }
}

fn stop_reason(g: &Generated) -> &'static str {
    if g.capped {
        "max_tokens"
    } else {
        "end_turn"
    }
}

fn anthropic_response(call: &Call) -> MessagesResponse {
    let g = &call.generated;
    let mut m = anthropic_message(
        call,
        vec![ContentBlock::Text {
            text: g.text.clone(),
        }],
        u64::from(g.completion_tokens),
    );
    m.stop_reason = Some(stop_reason(g).into());
    m
}

/// The documented event sequence: message_start, content_block_start, ping, one
/// content_block_delta per piece, content_block_stop, message_delta, message_stop.
fn anthropic_events(call: &Call) -> Vec<String> {
    let g = &call.generated;
    let mut evs = vec![
        StreamEvent::MessageStart {
            message: anthropic_message(call, Vec::new(), 1),
        },
        StreamEvent::ContentBlockStart {
            index: 0,
            content_block: ContentBlock::Text {
                text: String::new(),
            },
        },
        StreamEvent::Ping,
    ];
    evs.extend(g.pieces.iter().map(|p| StreamEvent::ContentBlockDelta {
        index: 0,
        delta: BlockDelta::TextDelta { text: p.clone() },
    }));
    evs.push(StreamEvent::ContentBlockStop { index: 0 });
    evs.push(StreamEvent::MessageDelta {
        delta: MessageDelta {
            stop_reason: Some(stop_reason(g).into()),
            stop_sequence: None,
        },
        usage: DeltaUsage {
            output_tokens: u64::from(g.completion_tokens),
            input_tokens: None,
        },
    });
    evs.push(StreamEvent::MessageStop);
    evs.iter()
        .map(|e| {
            format!(
                "event: {}\ndata: {}\n\n",
                e.name(),
                serde_json::to_string(e).unwrap_or_default()
            )
        })
        .collect()
}

async fn chat_completions(State(sim): State<Sim>, headers: HeaderMap, body: Bytes) -> Response {
    let task_id = task_id_of(&headers);
    let req: ChatCompletionRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return sim.reject(Api::OpenAi, task_id, format!("invalid request body: {e}")),
    };
    if req.messages.is_empty() {
        return sim.reject(Api::OpenAi, task_id, "messages must not be empty".into());
    }
    let include_usage = req
        .extra
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let generated = gen::generate(
        &req.model,
        &req.messages,
        req.output_cap(),
        sim.inner.max_output_tokens,
    );
    let directive = directive_of(&headers, &req.messages);
    let call = sim.admit(
        Api::OpenAi,
        req.model,
        req.stream,
        include_usage,
        generated,
        directive,
        task_id.clone(),
    );
    sim.handle(call, task_id.as_deref()).await
}

async fn messages(State(sim): State<Sim>, headers: HeaderMap, body: Bytes) -> Response {
    let task_id = task_id_of(&headers);
    let req: MessagesRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return sim.reject(
                Api::Anthropic,
                task_id,
                format!("invalid request body: {e}"),
            )
        }
    };
    if req.messages.is_empty() {
        return sim.reject(
            Api::Anthropic,
            task_id,
            "messages: at least one message is required".into(),
        );
    }
    // Seen as the same conversation an OpenAI client would send: system first, then the turns.
    let mut msgs: Vec<ChatMessage> = Vec::with_capacity(req.messages.len() + 1);
    if let Some(system) = &req.system {
        msgs.push(ChatMessage::new("system", system.text()));
    }
    msgs.extend(
        req.messages
            .iter()
            .map(|m| ChatMessage::new(m.role.clone(), m.text())),
    );
    let generated = gen::generate(
        &req.model,
        &msgs,
        Some(req.max_tokens),
        sim.inner.max_output_tokens,
    );
    let directive = directive_of(&headers, &msgs);
    let call = sim.admit(
        Api::Anthropic,
        req.model,
        req.stream,
        true,
        generated,
        directive,
        task_id.clone(),
    );
    sim.handle(call, task_id.as_deref()).await
}

async fn list_models(State(sim): State<Sim>) -> Json<ModelList> {
    let models = lock(&sim.inner.models).clone();
    let data = std::iter::once("sim".to_string())
        .chain(models.into_iter().filter(|m| m != "sim"))
        .map(|id| ModelInfo {
            id,
            object: "model".into(),
            created: 0,
            owned_by: "openclaw-sim".into(),
        })
        .collect();
    Json(ModelList {
        object: "list".into(),
        data,
    })
}

#[derive(Debug, Deserialize)]
struct CallsQuery {
    task_id: Option<String>,
    since: Option<u64>,
}

async fn get_calls(State(sim): State<Sim>, Query(q): Query<CallsQuery>) -> Json<CallsView> {
    Json(sim.calls(q.task_id.as_deref(), q.since))
}

async fn delete_calls(State(sim): State<Sim>) -> StatusCode {
    lock(&sim.inner.calls).reset();
    StatusCode::NO_CONTENT
}

async fn get_faults(State(sim): State<Sim>) -> Json<Faults> {
    Json(sim.faults())
}

async fn put_faults(State(sim): State<Sim>, body: Bytes) -> Response {
    let patch: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error_response(
                Api::OpenAi,
                StatusCode::BAD_REQUEST,
                &format!("invalid JSON: {e}"),
                None,
            )
        }
    };
    let mut faults = lock(&sim.inner.faults);
    match faults.apply_patch(&patch) {
        Ok(()) => {
            tracing::info!(faults = %patch, "sim faults changed");
            Json(faults.clone()).into_response()
        }
        Err(e) => error_response(Api::OpenAi, StatusCode::BAD_REQUEST, &e, None),
    }
}

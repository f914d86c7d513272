//! The Anthropic-compatible surface: `POST /v1/messages` (JSON, or Anthropic's SSE events with
//! `stream: true`), so Anthropic SDK clients and coding agents that speak Messages use the
//! gateway unchanged.
//!
//! A Messages request is translated into the internal chat request ([`to_chat_request`], pure)
//! and runs the chat completions path ([`super::openai::run_chat`]): the same validation (known
//! model and source, context window), request cache, budget reservation, fallback chain, rate
//! limits and audit line. The answer is translated back ([`to_messages_response`], and
//! [`ToAnthropic`] for streams: `message_start`, `content_block_start`, `content_block_delta`…,
//! `content_block_stop`, `message_delta` with the stop reason and usage, `message_stop`).
//!
//! Errors have Anthropic's shape, `{"type":"error","error":{"type","message"}}`, with the
//! gateway's stable `code` beside them (`error.code`), and the usual status and `Retry-After`.
//! Only text content is modelled: other content blocks (images, tool use) are not passed on.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use openclaw_proto::anthropic::{
    BlockDelta, ContentBlock, DeltaUsage, ErrorDetail, MessageDelta, MessagesRequest,
    MessagesResponse, StreamEvent, Usage as AnthropicUsage,
};
use openclaw_proto::openai::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChatMessage, Usage,
};
use serde_json::{json, Value};
use tracing::Instrument;

use super::error::{provider_error, Code};
use super::openai::{self, Served};
use super::{ApiError, ApiJson, AppState};

/// The roles a Messages request may use (the system prompt is its own field).
pub const MESSAGE_ROLES: [&str; 2] = ["user", "assistant"];

/// `POST /v1/messages`.
pub async fn messages(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<ApiJson<MessagesRequest>, ApiError>,
) -> Response {
    match serve(st, headers, body).await {
        Ok(r) => r,
        Err(e) => anthropic_error(e),
    }
}

async fn serve(
    st: AppState,
    headers: HeaderMap,
    body: Result<ApiJson<MessagesRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let ApiJson(mreq) = body?;
    let req = to_chat_request(&mreq)?;
    let app = st.app.clone();
    let (meta, cache_probe) = openai::prepare(&app, &headers, &req, "msg")?;
    crate::activity::bump(&crate::activity::activity().chat_calls);
    let id = format!("msg_{}", meta.request_id.trim_start_matches("msg-"));
    let prompt_estimate = u64::from(crate::tokens::count_messages(&req.messages));
    let span = tracing::info_span!("messages", request = %meta.request_id, model = %req.model, stream = req.stream);
    let served = openai::run_chat(app, meta, req, cache_probe)
        .instrument(span)
        .await?;
    let mut http = match served.body {
        Served::Whole(resp) => {
            let msg = to_messages_response(&resp, &id, &served.model);
            let mut v = serde_json::to_value(&msg).unwrap_or(Value::Null);
            if let Some(o) = v.as_object_mut() {
                o.insert("provider".into(), json!(served.provider));
            }
            Json(v).into_response()
        }
        Served::Stream(chunks) => {
            let tr = ToAnthropic::new(&id, &served.model, prompt_estimate);
            let model = served.model.clone();
            let events = chunks
                .map(Some)
                .chain(futures::stream::once(async { None }))
                .scan(tr, move |tr, item| {
                    let out = match item {
                        Some(Ok(chunk)) => tr.on_chunk(&chunk),
                        Some(Err(e)) => tr.on_error(&provider_error(&model, &e)),
                        None => tr.finish(),
                    };
                    futures::future::ready(Some(out))
                })
                .flat_map(|evs| {
                    futures::stream::iter(evs.into_iter().map(|ev| {
                        Ok::<Event, Infallible>(
                            Event::default()
                                .event(ev.name())
                                .data(serde_json::to_string(&ev).unwrap_or_default()),
                        )
                    }))
                });
            Sse::new(events).into_response()
        }
    };
    openai::set_model_headers(
        &mut http,
        &served.model,
        &served.provider,
        &served.fallbacks,
    );
    if let Some(v) = &served.cache {
        openai::set_cache_header(&mut http, v);
    }
    Ok(http)
}

/// Anthropic's error `type` for an answer's status.
pub fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

/// An [`ApiError`] in Anthropic's shape (plus the gateway's `code`), same status and
/// `Retry-After`.
pub fn anthropic_error(e: ApiError) -> Response {
    let body = json!({
        "type": "error",
        "error": {
            "type": error_type(e.status),
            "message": e.message,
            "code": e.code.as_str(),
        }
    });
    let mut resp = (e.status, Json(body)).into_response();
    if let Some(s) = e.retry_after_s {
        if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    resp
}

/// Messages request → the internal chat request (pure): `system` first, then the turns; the
/// caps and sampling fields carried over; roles other than `user`/`assistant` refused.
pub fn to_chat_request(m: &MessagesRequest) -> Result<ChatCompletionRequest, ApiError> {
    if m.messages.is_empty() {
        return Err(ApiError::bad_request(
            Code::InvalidRequest,
            "`messages` must contain at least one message",
        ));
    }
    let mut messages = Vec::with_capacity(m.messages.len() + 1);
    if let Some(system) = &m.system {
        let text = system.text();
        if !text.is_empty() {
            messages.push(ChatMessage::new("system", text));
        }
    }
    for (i, msg) in m.messages.iter().enumerate() {
        if !MESSAGE_ROLES.contains(&msg.role.as_str()) {
            return Err(ApiError::bad_request(
                Code::InvalidRole,
                format!(
                    "messages[{i}].role `{}` is not a Messages role; roles: {} (the system prompt goes in `system`)",
                    msg.role,
                    MESSAGE_ROLES.join(", ")
                ),
            ));
        }
        messages.push(ChatMessage::new(msg.role.clone(), msg.text()));
    }
    let mut extra = serde_json::Map::new();
    if let Some(p) = m.top_p {
        extra.insert("top_p".into(), json!(p));
    }
    if !m.stop_sequences.is_empty() {
        extra.insert("stop".into(), json!(m.stop_sequences));
    }
    Ok(ChatCompletionRequest {
        model: m.model.clone(),
        messages,
        stream: m.stream,
        max_tokens: Some(m.max_tokens),
        max_completion_tokens: None,
        temperature: m.temperature,
        extra,
    })
}

/// OpenAI `finish_reason` → Anthropic `stop_reason`.
pub fn stop_reason(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// A chat answer → a Messages answer named `id`, from the gateway's `model` (pure).
pub fn to_messages_response(r: &ChatCompletionResponse, id: &str, model: &str) -> MessagesResponse {
    let usage = r.usage.unwrap_or_default();
    MessagesResponse {
        id: id.to_string(),
        kind: "message".into(),
        role: "assistant".into(),
        content: vec![ContentBlock::Text { text: r.text() }],
        model: model.to_string(),
        stop_reason: Some(
            stop_reason(r.choices.first().and_then(|c| c.finish_reason.as_deref())).into(),
        ),
        stop_sequence: None,
        usage: AnthropicUsage {
            input_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
        },
    }
}

/// Chat chunks → Anthropic stream events (pure state machine): the first chunk opens the
/// message and its one text block, each text delta is a `content_block_delta`, and the end of
/// the stream closes the block and sends `message_delta` (stop reason, usage) and
/// `message_stop`. An error sends Anthropic's `error` event and nothing after it.
#[derive(Debug, Clone)]
pub struct ToAnthropic {
    id: String,
    model: String,
    prompt_estimate: u64,
    started: bool,
    ended: bool,
    finish: Option<String>,
    usage: Option<Usage>,
}

impl ToAnthropic {
    pub fn new(id: &str, model: &str, prompt_estimate: u64) -> Self {
        ToAnthropic {
            id: id.to_string(),
            model: model.to_string(),
            prompt_estimate,
            started: false,
            ended: false,
            finish: None,
            usage: None,
        }
    }

    fn start(&mut self, out: &mut Vec<StreamEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        out.push(StreamEvent::MessageStart {
            message: MessagesResponse {
                id: self.id.clone(),
                kind: "message".into(),
                role: "assistant".into(),
                content: Vec::new(),
                model: self.model.clone(),
                stop_reason: None,
                stop_sequence: None,
                usage: AnthropicUsage {
                    input_tokens: self.prompt_estimate,
                    output_tokens: 0,
                },
            },
        });
        out.push(StreamEvent::ContentBlockStart {
            index: 0,
            content_block: ContentBlock::Text {
                text: String::new(),
            },
        });
    }

    pub fn on_chunk(&mut self, c: &ChatCompletionChunk) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        self.start(&mut out);
        if let Some(u) = c.usage {
            self.usage = Some(u);
        }
        for choice in c.choices.iter().filter(|ch| ch.index == 0) {
            if let Some(text) = choice.delta.content.as_ref().filter(|t| !t.is_empty()) {
                out.push(StreamEvent::ContentBlockDelta {
                    index: 0,
                    delta: BlockDelta::TextDelta { text: text.clone() },
                });
            }
            if choice.finish_reason.is_some() {
                self.finish = choice.finish_reason.clone();
            }
        }
        out
    }

    pub fn on_error(&mut self, e: &ApiError) -> Vec<StreamEvent> {
        if self.ended {
            return Vec::new();
        }
        self.ended = true;
        vec![StreamEvent::Error {
            error: ErrorDetail {
                kind: error_type(e.status).into(),
                message: e.message.clone(),
            },
        }]
    }

    pub fn finish(&mut self) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        self.start(&mut out);
        self.ended = true;
        let usage = self.usage.unwrap_or_default();
        out.push(StreamEvent::ContentBlockStop { index: 0 });
        out.push(StreamEvent::MessageDelta {
            delta: MessageDelta {
                stop_reason: Some(stop_reason(self.finish.as_deref()).into()),
                stop_sequence: None,
            },
            usage: DeltaUsage {
                output_tokens: usage.completion_tokens,
                input_tokens: self.usage.map(|u| u.prompt_tokens),
            },
        });
        out.push(StreamEvent::MessageStop);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openclaw_proto::anthropic::{Message, MessageContent};
    use openclaw_proto::openai::{ChunkChoice, Delta};

    fn mreq(messages: Vec<(&str, &str)>) -> MessagesRequest {
        MessagesRequest {
            model: "fast".into(),
            max_tokens: 64,
            messages: messages
                .into_iter()
                .map(|(r, t)| Message {
                    role: r.into(),
                    content: MessageContent::Text(t.into()),
                })
                .collect(),
            system: Some(MessageContent::Text("be terse".into())),
            temperature: Some(0.5),
            top_p: None,
            stop_sequences: vec!["END".into()],
            stream: false,
            extra: Default::default(),
        }
    }

    #[test]
    fn request_translation_and_roles() {
        let r = to_chat_request(&mreq(vec![
            ("user", "hi"),
            ("assistant", "yo"),
            ("user", "q"),
        ]))
        .unwrap();
        let turns: Vec<(&str, String)> = r
            .messages
            .iter()
            .map(|m| (m.role.as_str(), m.text()))
            .collect();
        assert_eq!(
            turns,
            vec![
                ("system", "be terse".to_string()),
                ("user", "hi".into()),
                ("assistant", "yo".into()),
                ("user", "q".into())
            ]
        );
        assert_eq!((r.max_tokens, r.temperature), (Some(64), Some(0.5)));
        assert_eq!(r.extra["stop"], json!(["END"]));
        let cases = [
            (vec![("system", "x")], Some("invalid_role")),
            (vec![("robot", "x")], Some("invalid_role")),
            (vec![], Some("invalid_request")),
            (vec![("user", "x")], None),
        ];
        for (msgs, want) in cases {
            let got = to_chat_request(&mreq(msgs.clone()))
                .err()
                .map(|e| e.code.as_str());
            assert_eq!(got, want, "{msgs:?}");
        }
    }

    #[test]
    fn error_types_by_status() {
        for (status, want) in [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (404, "not_found_error"),
            (413, "request_too_large"),
            (422, "invalid_request_error"),
            (429, "rate_limit_error"),
            (502, "api_error"),
            (503, "overloaded_error"),
        ] {
            assert_eq!(error_type(StatusCode::from_u16(status).unwrap()), want);
        }
        assert_eq!(stop_reason(Some("length")), "max_tokens");
        assert_eq!(stop_reason(Some("stop")), "end_turn");
        assert_eq!(stop_reason(None), "end_turn");
    }

    fn chunk(
        content: Option<&str>,
        finish: Option<&str>,
        usage: Option<Usage>,
    ) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: "c".into(),
            object: "chat.completion.chunk".into(),
            created: 0,
            model: "fast".into(),
            choices: vec![ChunkChoice {
                index: 0,
                delta: Delta {
                    role: None,
                    content: content.map(str::to_string),
                },
                finish_reason: finish.map(str::to_string),
            }],
            usage,
        }
    }

    #[test]
    fn stream_events_in_anthropic_order() {
        let mut t = ToAnthropic::new("msg_1", "fast", 9);
        let mut evs = Vec::new();
        evs.extend(t.on_chunk(&chunk(None, None, None)));
        evs.extend(t.on_chunk(&chunk(Some("Hel"), None, None)));
        evs.extend(t.on_chunk(&chunk(Some("lo"), Some("length"), None)));
        let mut usage_chunk = chunk(None, None, Some(Usage::new(12, 2)));
        usage_chunk.choices.clear();
        evs.extend(t.on_chunk(&usage_chunk));
        evs.extend(t.finish());
        evs.extend(t.finish());
        let names: Vec<&str> = evs.iter().map(StreamEvent::name).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        match &evs[5] {
            StreamEvent::MessageDelta { delta, usage } => {
                assert_eq!(delta.stop_reason.as_deref(), Some("max_tokens"));
                assert_eq!((usage.output_tokens, usage.input_tokens), (2, Some(12)));
            }
            other => panic!("{other:?}"),
        }
        let mut t = ToAnthropic::new("msg_2", "fast", 1);
        let _ = t.on_chunk(&chunk(Some("a"), None, None));
        let err = ApiError::new(StatusCode::BAD_GATEWAY, Code::UpstreamError, "boom");
        let evs = t.on_error(&err);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].name(), "error");
        assert!(t.finish().is_empty(), "nothing after an error");
    }
}

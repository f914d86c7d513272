//! The Anthropic Messages API provider: translates an OpenAI-shaped request into
//! `POST {base_url}/messages`, and the answer (or its event stream) back into OpenAI shapes.
//!
//! The translation both ways is pure ([`to_messages_request`], [`to_chat_response`],
//! [`StreamTranslator`]); the HTTP shell reuses the SSE parser and error classification of
//! [`super::openai`].

use futures::StreamExt;
use openclaw_proto::anthropic::{
    BlockDelta, Message, MessageContent, MessagesRequest, MessagesResponse, StreamEvent,
    API_VERSION,
};
use openclaw_proto::openai::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChatMessage, Choice,
    ChunkChoice, Delta, Usage,
};
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::openai::{check_status, classify_reqwest, first_within, sse_events, SseEvent};
use super::{CallContext, ChunkStream, Provider, ProviderError, TASK_ID_HEADER};
use crate::config::{ProviderKind, Secret};

/// `max_tokens` is required by the Messages API; used when the caller sets no cap.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

pub struct AnthropicProvider {
    http: reqwest::Client,
    base_url: String,
    upstream_model: String,
    key: Secret,
}

impl AnthropicProvider {
    pub fn new(http: reqwest::Client, base_url: &str, upstream_model: &str, key: Secret) -> Self {
        AnthropicProvider {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            upstream_model: upstream_model.to_string(),
            key,
        }
    }

    async fn send(
        &self,
        body: &MessagesRequest,
        ctx: &CallContext,
        whole_call_timeout: bool,
    ) -> Result<reqwest::Response, ProviderError> {
        let mut rb = self
            .http
            .post(format!("{}/messages", self.base_url))
            .header("x-api-key", self.key.expose())
            .header("anthropic-version", API_VERSION)
            .header(TASK_ID_HEADER, &ctx.request_id)
            .json(body);
        if whole_call_timeout {
            rb = rb.timeout(ctx.timeout);
        }
        let secret = Some(self.key.expose());
        let resp = tokio::time::timeout(ctx.timeout, rb.send())
            .await
            .map_err(|_| ProviderError::Timeout(ctx.timeout))?
            .map_err(|e| classify_reqwest(&e, ctx.timeout, secret))?;
        check_status(resp, secret).await
    }
}

#[async_trait::async_trait]
impl Provider for AnthropicProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Anthropic
    }

    fn endpoint(&self) -> String {
        self.base_url.clone()
    }

    async fn chat(
        &self,
        req: &ChatCompletionRequest,
        ctx: &CallContext,
    ) -> Result<ChatCompletionResponse, ProviderError> {
        let body = to_messages_request(req, &self.upstream_model, false);
        let resp = self.send(&body, ctx, true).await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| classify_reqwest(&e, ctx.timeout, Some(self.key.expose())))?;
        let msg: MessagesResponse = serde_json::from_slice(&bytes)
            .map_err(|e| ProviderError::Decode(format!("anthropic message: {e}")))?;
        Ok(to_chat_response(msg, &req.model, unix_now()))
    }

    async fn chat_stream(
        &self,
        req: &ChatCompletionRequest,
        ctx: &CallContext,
    ) -> Result<ChunkStream, ProviderError> {
        let deadline = Instant::now() + ctx.timeout;
        let body = to_messages_request(req, &self.upstream_model, true);
        let resp = self.send(&body, ctx, false).await?;
        let mut tr = StreamTranslator::new(&req.model, unix_now());
        let chunks = sse_events(resp, ctx.timeout)
            .map(move |ev| ev.and_then(|ev| tr.on_sse(&ev)))
            // Stop after the final chunk (or the first error): nothing follows message_stop.
            .scan(false, |ended, item| {
                if *ended {
                    return futures::future::ready(None);
                }
                *ended = matches!(&item, Err(_) | Ok(Some(StreamOut { last: true, .. })));
                futures::future::ready(Some(item))
            })
            .filter_map(|item| {
                futures::future::ready(match item {
                    Err(e) => Some(Err(e)),
                    Ok(Some(out)) => Some(Ok(out.chunk)),
                    Ok(None) => None,
                })
            });
        first_within(Box::pin(chunks), deadline, ctx.timeout).await
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// OpenAI request → Messages API request. System (and `developer`) messages are joined into
/// `system`; other messages keep their order, `tool` results count as user turns, and
/// consecutive turns of the same role are merged (the API requires alternation).
pub fn to_messages_request(
    req: &ChatCompletionRequest,
    upstream_model: &str,
    stream: bool,
) -> MessagesRequest {
    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<Message> = Vec::new();
    for m in &req.messages {
        let text = m.text();
        let role = match m.role.as_str() {
            "system" | "developer" => {
                if !text.is_empty() {
                    system.push(text);
                }
                continue;
            }
            "assistant" => "assistant",
            _ => "user",
        };
        match messages.last_mut() {
            Some(last) if last.role == role => {
                if let MessageContent::Text(prev) = &mut last.content {
                    prev.push_str("\n\n");
                    prev.push_str(&text);
                }
            }
            _ => messages.push(Message {
                role: role.to_string(),
                content: MessageContent::Text(text),
            }),
        }
    }
    let f64_of = |k: &str| req.extra.get(k).and_then(Value::as_f64);
    let stop_sequences = match req.extra.get("stop") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    MessagesRequest {
        model: upstream_model.to_string(),
        max_tokens: req.output_cap().unwrap_or(DEFAULT_MAX_TOKENS),
        messages,
        system: (!system.is_empty()).then(|| MessageContent::Text(system.join("\n\n"))),
        temperature: req.temperature,
        top_p: f64_of("top_p"),
        stop_sequences,
        stream,
        extra: Map::new(),
    }
}

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
pub fn finish_reason(stop_reason: Option<&str>) -> String {
    match stop_reason {
        Some("max_tokens") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
    .to_string()
}

/// Messages API answer → OpenAI chat completion, named after the gateway's `model`.
pub fn to_chat_response(
    msg: MessagesResponse,
    model: &str,
    created: i64,
) -> ChatCompletionResponse {
    ChatCompletionResponse {
        object: "chat.completion".into(),
        created,
        model: model.to_string(),
        choices: vec![Choice {
            index: 0,
            message: ChatMessage::new("assistant", msg.text()),
            finish_reason: Some(finish_reason(msg.stop_reason.as_deref())),
            extra: Map::new(),
        }],
        usage: Some(Usage::new(msg.usage.input_tokens, msg.usage.output_tokens)),
        id: msg.id,
        extra: Map::new(),
    }
}

/// One translated chunk; `last` marks the final one (finish reason and usage).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamOut {
    pub chunk: ChatCompletionChunk,
    pub last: bool,
}

/// Anthropic stream events → OpenAI chunks: `message_start` gives the role chunk, each
/// `text_delta` a content chunk, and `message_stop` one final chunk carrying the finish reason
/// (from `message_delta`) and the usage (input from `message_start`, output from `message_delta`).
#[derive(Debug, Clone)]
pub struct StreamTranslator {
    id: String,
    model: String,
    created: i64,
    input_tokens: u64,
    output_tokens: u64,
    stop_reason: Option<String>,
}

impl StreamTranslator {
    pub fn new(model: &str, created: i64) -> Self {
        StreamTranslator {
            id: String::new(),
            model: model.to_string(),
            created,
            input_tokens: 0,
            output_tokens: 0,
            stop_reason: None,
        }
    }

    fn on_sse(&mut self, ev: &SseEvent) -> Result<Option<StreamOut>, ProviderError> {
        if ev.data.trim().is_empty() {
            return Ok(None);
        }
        let parsed: StreamEvent = serde_json::from_str(&ev.data).map_err(|e| {
            ProviderError::Decode(format!(
                "anthropic event {}: {e}",
                ev.event.as_deref().unwrap_or("?")
            ))
        })?;
        self.on_event(parsed)
    }

    pub fn on_event(&mut self, ev: StreamEvent) -> Result<Option<StreamOut>, ProviderError> {
        let delta = match ev {
            StreamEvent::MessageStart { message } => {
                self.id = message.id;
                self.input_tokens = message.usage.input_tokens;
                self.output_tokens = message.usage.output_tokens;
                Delta {
                    role: Some("assistant".into()),
                    content: None,
                }
            }
            StreamEvent::ContentBlockDelta {
                delta: BlockDelta::TextDelta { text },
                ..
            } => Delta {
                role: None,
                content: Some(text),
            },
            StreamEvent::MessageDelta { delta, usage } => {
                self.stop_reason = delta.stop_reason.or(self.stop_reason.take());
                self.output_tokens = usage.output_tokens;
                if let Some(input) = usage.input_tokens {
                    self.input_tokens = input;
                }
                return Ok(None);
            }
            StreamEvent::MessageStop => {
                let mut chunk = self.chunk(Delta::default());
                chunk.choices[0].finish_reason = Some(finish_reason(self.stop_reason.as_deref()));
                chunk.usage = Some(Usage::new(self.input_tokens, self.output_tokens));
                return Ok(Some(StreamOut { chunk, last: true }));
            }
            StreamEvent::Error { error } => {
                let status = if error.kind == "overloaded_error" {
                    529
                } else {
                    500
                };
                return Err(ProviderError::Server {
                    status,
                    message: error.message,
                });
            }
            _ => return Ok(None),
        };
        Ok(Some(StreamOut {
            chunk: self.chunk(delta),
            last: false,
        }))
    }

    fn chunk(&self, delta: Delta) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: None,
            }],
            usage: None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use openclaw_proto::anthropic::{ContentBlock, DeltaUsage, ErrorDetail, MessageDelta};
    use serde_json::json;

    fn req(messages: Vec<ChatMessage>) -> ChatCompletionRequest {
        ChatCompletionRequest {
            model: "claude-3-5-haiku".into(),
            messages,
            stream: false,
            max_tokens: None,
            max_completion_tokens: None,
            temperature: Some(0.2),
            extra: Map::new(),
        }
    }

    #[test]
    fn request_translation_moves_system_and_merges_roles() {
        let mut r = req(vec![
            ChatMessage::new("system", "You are terse."),
            ChatMessage::new("user", "hi"),
            ChatMessage::new("system", "Answer in English."),
            ChatMessage::new("user", "again"),
            ChatMessage::new("assistant", "hello"),
            ChatMessage::new("tool", "42"),
        ]);
        r.extra.insert("stop".into(), json!(["END"]));
        let m = to_messages_request(&r, "claude-3-5-haiku-20241022", false);
        assert_eq!(m.model, "claude-3-5-haiku-20241022");
        assert_eq!(
            m.system.as_ref().map(MessageContent::text).as_deref(),
            Some("You are terse.\n\nAnswer in English.")
        );
        assert_eq!(m.max_tokens, DEFAULT_MAX_TOKENS);
        assert_eq!(m.temperature, Some(0.2));
        assert_eq!(m.stop_sequences, vec!["END".to_string()]);
        let turns: Vec<(String, String)> = m
            .messages
            .iter()
            .map(|x| (x.role.clone(), x.text()))
            .collect();
        assert_eq!(
            turns,
            vec![
                ("user".into(), "hi\n\nagain".into()),
                ("assistant".into(), "hello".into()),
                ("user".into(), "42".into()),
            ]
        );
        let wire = serde_json::to_value(&m).unwrap();
        assert!(wire.get("stream").is_none());
        assert_eq!(wire["messages"][0]["content"], json!("hi\n\nagain"));

        r.max_completion_tokens = Some(77);
        assert_eq!(to_messages_request(&r, "x", true).max_tokens, 77);
    }

    #[test]
    fn response_translation_maps_text_usage_and_stop_reason() {
        let msg = MessagesResponse {
            id: "msg_1".into(),
            kind: "message".into(),
            role: "assistant".into(),
            content: vec![
                ContentBlock::Text { text: "a".into() },
                ContentBlock::Other,
                ContentBlock::Text { text: "b".into() },
            ],
            model: "claude-3-5-haiku-20241022".into(),
            stop_reason: Some("max_tokens".into()),
            stop_sequence: None,
            usage: openclaw_proto::anthropic::Usage {
                input_tokens: 10,
                output_tokens: 5,
            },
        };
        let r = to_chat_response(msg, "claude-3-5-haiku", 7);
        assert_eq!(r.model, "claude-3-5-haiku");
        assert_eq!(r.text(), "a\nb");
        assert_eq!(r.choices[0].finish_reason.as_deref(), Some("length"));
        assert_eq!(r.usage, Some(Usage::new(10, 5)));
        for (stop, want) in [
            (Some("end_turn"), "stop"),
            (Some("stop_sequence"), "stop"),
            (Some("max_tokens"), "length"),
            (None, "stop"),
        ] {
            assert_eq!(finish_reason(stop), want, "{stop:?}");
        }
    }

    #[test]
    fn stream_translation_yields_role_text_and_final_chunk() {
        let mut t = StreamTranslator::new("gw-model", 1);
        let start = MessagesResponse {
            id: "msg_9".into(),
            kind: "message".into(),
            role: "assistant".into(),
            content: vec![],
            model: "up".into(),
            stop_reason: None,
            stop_sequence: None,
            usage: openclaw_proto::anthropic::Usage {
                input_tokens: 12,
                output_tokens: 1,
            },
        };
        let events = vec![
            StreamEvent::MessageStart { message: start },
            StreamEvent::ContentBlockStart {
                index: 0,
                content_block: ContentBlock::Text {
                    text: String::new(),
                },
            },
            StreamEvent::Ping,
            StreamEvent::ContentBlockDelta {
                index: 0,
                delta: BlockDelta::TextDelta { text: "Hel".into() },
            },
            StreamEvent::ContentBlockDelta {
                index: 0,
                delta: BlockDelta::TextDelta { text: "lo".into() },
            },
            StreamEvent::ContentBlockStop { index: 0 },
            StreamEvent::MessageDelta {
                delta: MessageDelta {
                    stop_reason: Some("end_turn".into()),
                    stop_sequence: None,
                },
                usage: DeltaUsage {
                    output_tokens: 2,
                    input_tokens: None,
                },
            },
            StreamEvent::MessageStop,
        ];
        let outs: Vec<StreamOut> = events
            .into_iter()
            .filter_map(|e| t.on_event(e).unwrap())
            .collect();
        assert_eq!(outs.len(), 4);
        assert_eq!(
            outs[0].chunk.choices[0].delta.role.as_deref(),
            Some("assistant")
        );
        assert_eq!(outs[0].chunk.id, "msg_9");
        assert_eq!(outs[0].chunk.model, "gw-model");
        let text: String = outs
            .iter()
            .filter_map(|o| o.chunk.choices[0].delta.content.clone())
            .collect();
        assert_eq!(text, "Hello");
        let last = &outs[3];
        assert!(last.last);
        assert_eq!(last.chunk.choices[0].finish_reason.as_deref(), Some("stop"));
        assert_eq!(last.chunk.usage, Some(Usage::new(12, 2)));
    }

    #[test]
    fn stream_error_event_is_a_server_error() {
        let mut t = StreamTranslator::new("m", 0);
        let e = t
            .on_event(StreamEvent::Error {
                error: ErrorDetail {
                    kind: "overloaded_error".into(),
                    message: "Overloaded".into(),
                },
            })
            .unwrap_err();
        assert_eq!(
            e,
            ProviderError::Server {
                status: 529,
                message: "Overloaded".into()
            }
        );
    }
}

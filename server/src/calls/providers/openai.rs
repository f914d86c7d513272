//! The OpenAI-compatible provider (OpenAI, DeepSeek, Qwen, Ollama, vLLM, the simulator) — chat
//! completions and `POST /embeddings` — and the
//! HTTP plumbing both providers share: the line-buffering SSE parser, `Retry-After` parsing,
//! error classification and the "first chunk within the deadline" stream wrapper.
//!
//! Invariant: the API key is sent in one header and nowhere else; it is redacted from any
//! upstream error text before that text becomes part of a [`ProviderError`].

use std::collections::VecDeque;
use std::time::Duration;

use futures::{Stream, StreamExt};
use openclaw_proto::openai::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, EmbeddingData,
    EmbeddingRequest, EmbeddingResponse, EmbeddingVector,
};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::{CallContext, ChunkStream, Provider, ProviderError, TASK_ID_HEADER};
use crate::config::{ProviderKind, Secret};

/// Upstream error text kept in a [`ProviderError`] message.
const ERROR_MESSAGE_CHARS_MAX: usize = 500;
/// Bytes an SSE parser buffers for one unfinished line before giving up on the stream.
pub(crate) const SSE_LINE_BYTES_MAX: usize = 4 << 20;

pub struct OpenAiProvider {
    http: reqwest::Client,
    base_url: String,
    upstream_model: String,
    key: Option<Secret>,
    kind: ProviderKind,
}

impl OpenAiProvider {
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        upstream_model: &str,
        key: Option<Secret>,
        kind: ProviderKind,
    ) -> Self {
        OpenAiProvider {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            upstream_model: upstream_model.to_string(),
            key,
            kind,
        }
    }

    /// The body sent upstream: the caller's request with the upstream model name.
    fn upstream_body(&self, req: &ChatCompletionRequest, stream: bool) -> ChatCompletionRequest {
        let mut body = req.clone();
        body.model = self.upstream_model.clone();
        body.stream = stream;
        if stream {
            // Always ask for the usage chunk: the gateway accounts every stream by it, whether
            // or not its own client asked for it (the API passes it on only when asked).
            let opts = body
                .extra
                .entry("stream_options")
                .or_insert_with(|| json!({}));
            match opts.as_object_mut() {
                Some(o) => {
                    o.insert("include_usage".into(), json!(true));
                }
                None => *opts = json!({"include_usage": true}),
            }
        } else {
            body.extra.remove("stream_options");
        }
        body
    }

    fn request(&self, body: &ChatCompletionRequest, ctx: &CallContext) -> reqwest::RequestBuilder {
        self.post("chat/completions", body, ctx)
    }

    /// `POST {base_url}/{path}` with the JSON body, the task id and the key.
    fn post<B: serde::Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
        ctx: &CallContext,
    ) -> reqwest::RequestBuilder {
        let mut rb = self
            .http
            .post(format!("{}/{path}", self.base_url))
            .header(TASK_ID_HEADER, &ctx.request_id)
            .json(body);
        if let Some(key) = &self.key {
            rb = rb.bearer_auth(key.expose());
        }
        rb
    }

    /// Send a non-streaming request and read the whole answer (errors classified, the key
    /// kept out of them).
    async fn fetch(
        &self,
        rb: reqwest::RequestBuilder,
        ctx: &CallContext,
    ) -> Result<bytes::Bytes, ProviderError> {
        let resp = rb
            .timeout(ctx.timeout)
            .send()
            .await
            .map_err(|e| classify_reqwest(&e, ctx.timeout, self.secret()))?;
        let resp = check_status(resp, self.secret()).await?;
        resp.bytes()
            .await
            .map_err(|e| classify_reqwest(&e, ctx.timeout, self.secret()))
    }

    fn secret(&self) -> Option<&str> {
        self.key.as_ref().map(Secret::expose)
    }
}

#[async_trait::async_trait]
impl Provider for OpenAiProvider {
    fn kind(&self) -> ProviderKind {
        self.kind
    }

    fn endpoint(&self) -> String {
        self.base_url.clone()
    }

    async fn chat(
        &self,
        req: &ChatCompletionRequest,
        ctx: &CallContext,
    ) -> Result<ChatCompletionResponse, ProviderError> {
        let body = self.upstream_body(req, false);
        let bytes = self.fetch(self.request(&body, ctx), ctx).await?;
        let mut out: ChatCompletionResponse = serde_json::from_slice(&bytes)
            .map_err(|e| ProviderError::Decode(format!("chat completion: {e}")))?;
        out.model = req.model.clone();
        Ok(out)
    }

    async fn chat_stream(
        &self,
        req: &ChatCompletionRequest,
        ctx: &CallContext,
    ) -> Result<ChunkStream, ProviderError> {
        let deadline = Instant::now() + ctx.timeout;
        let body = self.upstream_body(req, true);
        let resp = tokio::time::timeout_at(deadline, self.request(&body, ctx).send())
            .await
            .map_err(|_| ProviderError::Timeout(ctx.timeout))?
            .map_err(|e| classify_reqwest(&e, ctx.timeout, self.secret()))?;
        let resp = check_status(resp, self.secret()).await?;
        let model = req.model.clone();
        let chunks = sse_events(resp, ctx.timeout)
            .take_while(|ev| {
                let done = matches!(ev, Ok(e) if e.data.trim() == "[DONE]");
                futures::future::ready(!done)
            })
            .filter_map(move |ev| {
                let out = match ev {
                    Err(e) => Some(Err(e)),
                    Ok(ev) => openai_chunk(&ev, &model).transpose(),
                };
                futures::future::ready(out)
            });
        first_within(Box::pin(chunks), deadline, ctx.timeout).await
    }

    async fn embed(
        &self,
        inputs: &[String],
        dimensions: u32,
        ctx: &CallContext,
    ) -> Result<super::Embeddings, ProviderError> {
        let body = EmbeddingRequest {
            model: self.upstream_model.clone(),
            input: json!(inputs),
            encoding_format: Some("float".into()),
            dimensions: Some(dimensions),
            user: None,
        };
        let bytes = self.fetch(self.post("embeddings", &body, ctx), ctx).await?;
        let out: EmbeddingResponse = serde_json::from_slice(&bytes)
            .map_err(|e| ProviderError::Decode(format!("embeddings: {e}")))?;
        let vectors = embedding_vectors(out.data, inputs.len(), dimensions as usize)
            .map_err(ProviderError::Decode)?;
        Ok(super::Embeddings {
            vectors,
            prompt_tokens: out.usage.map(|u| u.prompt_tokens),
        })
    }
}

/// The vectors of an embeddings answer in input order (pure): exactly one per input, each of
/// `dims` floats (base64 of little-endian f32s decoded).
pub(crate) fn embedding_vectors(
    mut data: Vec<EmbeddingData>,
    inputs: usize,
    dims: usize,
) -> Result<Vec<Vec<f32>>, String> {
    if data.len() != inputs {
        return Err(format!(
            "embeddings: {} vectors for {inputs} inputs",
            data.len()
        ));
    }
    data.sort_by_key(|d| d.index);
    let mut out = Vec::with_capacity(inputs);
    for (i, d) in data.into_iter().enumerate() {
        if d.index as usize != i {
            return Err(format!("embeddings: index {} missing", i));
        }
        let v = match d.embedding {
            EmbeddingVector::Float(v) => v,
            EmbeddingVector::Base64(b) => {
                crate::embeddings::wire::from_base64(&b).map_err(|e| format!("embeddings: {e}"))?
            }
        };
        if v.len() != dims {
            return Err(format!(
                "embeddings: a vector of {} dimensions, the model is configured with {dims}",
                v.len()
            ));
        }
        out.push(v);
    }
    Ok(out)
}

/// Decode one OpenAI SSE event into a chunk with the gateway's model name. Events without data
/// (comments, keep-alives) yield nothing; an in-stream `{"error": ...}` is a server error.
fn openai_chunk(ev: &SseEvent, model: &str) -> Result<Option<ChatCompletionChunk>, ProviderError> {
    let data = ev.data.trim();
    if data.is_empty() {
        return Ok(None);
    }
    let v: Value = serde_json::from_str(data)
        .map_err(|e| ProviderError::Decode(format!("stream chunk: {e}")))?;
    if let Some(err) = v.get("error") {
        return Err(ProviderError::Server {
            status: 500,
            message: error_text(err).unwrap_or_else(|| "error in stream".into()),
        });
    }
    let mut chunk: ChatCompletionChunk = serde_json::from_value(v)
        .map_err(|e| ProviderError::Decode(format!("stream chunk: {e}")))?;
    chunk.model = model.to_string();
    Ok(Some(chunk))
}

// ---------------------------------------------------------------------------------------------
// Shared by both providers.

/// Wait for the first item of `s` until `deadline`; an error or a timeout there is returned
/// directly (so the caller can fail over before anything reached its client), otherwise the item
/// is put back in front of the rest of the stream.
pub(crate) async fn first_within(
    mut s: ChunkStream,
    deadline: Instant,
    timeout: Duration,
) -> Result<ChunkStream, ProviderError> {
    match tokio::time::timeout_at(deadline, s.next()).await {
        Err(_) => Err(ProviderError::Timeout(timeout)),
        Ok(None) => Ok(Box::pin(futures::stream::empty())),
        Ok(Some(Err(e))) => Err(e),
        Ok(Some(Ok(first))) => Ok(Box::pin(futures::stream::iter([Ok(first)]).chain(s))),
    }
}

/// The SSE events of a response body. A read that brings no byte within `idle` ends the stream
/// with [`ProviderError::Timeout`]; a body cut short ends it with [`ProviderError::Connect`].
pub(crate) fn sse_events(
    resp: reqwest::Response,
    idle: Duration,
) -> impl Stream<Item = Result<SseEvent, ProviderError>> + Send + 'static {
    struct St<B> {
        body: B,
        parser: SseParser,
        ready: VecDeque<SseEvent>,
        done: bool,
    }
    let st = St {
        body: Box::pin(resp.bytes_stream()),
        parser: SseParser::default(),
        ready: VecDeque::new(),
        done: false,
    };
    futures::stream::unfold(st, move |mut st| async move {
        loop {
            if let Some(ev) = st.ready.pop_front() {
                return Some((Ok(ev), st));
            }
            if st.done {
                return None;
            }
            match tokio::time::timeout(idle, st.body.next()).await {
                Err(_) => {
                    st.done = true;
                    return Some((Err(ProviderError::Timeout(idle)), st));
                }
                Ok(Some(Ok(bytes))) => match st.parser.push(&bytes) {
                    Ok(evs) => st.ready.extend(evs),
                    Err(e) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                },
                Ok(Some(Err(e))) => {
                    st.done = true;
                    let err = if e.is_timeout() {
                        ProviderError::Timeout(idle)
                    } else {
                        ProviderError::Connect(format!("stream interrupted: {}", root_cause(&e)))
                    };
                    return Some((Err(err), st));
                }
                Ok(None) => {
                    st.done = true;
                    st.ready.extend(st.parser.finish());
                }
            }
        }
    })
}

/// One server-sent event: its `event:` name (if any) and its `data:` lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// A line-buffering SSE parser: feed it body chunks split anywhere (even inside a UTF-8
/// character or between `\r` and `\n`); it returns each event once its blank line arrived.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    line: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
    /// The previous chunk ended in `\r`: a leading `\n` of the next one belongs to it.
    after_cr: bool,
}

impl SseParser {
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, ProviderError> {
        let mut out = Vec::new();
        let mut rest = bytes;
        if self.after_cr {
            self.after_cr = false;
            if let Some(stripped) = rest.strip_prefix(b"\n") {
                rest = stripped;
            }
        }
        while let Some(i) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&rest[..i]);
            let line = std::mem::take(&mut self.line);
            self.on_line(&line, &mut out);
            if rest[i] == b'\r' {
                match rest.get(i + 1) {
                    Some(b'\n') => rest = &rest[i + 2..],
                    Some(_) => rest = &rest[i + 1..],
                    None => {
                        self.after_cr = true;
                        rest = &[];
                    }
                }
            } else {
                rest = &rest[i + 1..];
            }
        }
        self.line.extend_from_slice(rest);
        if self.line.len() > SSE_LINE_BYTES_MAX {
            return Err(ProviderError::Decode(format!(
                "stream line longer than {SSE_LINE_BYTES_MAX} bytes"
            )));
        }
        Ok(out)
    }

    /// The body ended: an event not closed by a blank line still counts.
    pub fn finish(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.on_line(&line, &mut out);
        }
        self.on_line(b"", &mut out);
        out
    }

    fn on_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                out.push(SseEvent {
                    event: self.event.take(),
                    data,
                });
            }
            self.event = None;
            return;
        }
        let line = String::from_utf8_lossy(line);
        if line.starts_with(':') {
            return; // comment / keep-alive
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            "event" => self.event = Some(value.to_string()),
            _ => {} // id, retry: not used
        }
    }
}

/// `Retry-After`: delay-seconds (fractions tolerated) or an HTTP date, relative to `now`.
pub(crate) fn parse_retry_after(
    value: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta = at.with_timezone(&chrono::Utc) - now;
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

/// Turn a non-success answer into a classified error; pass a success through.
pub(crate) async fn check_status(
    resp: reqwest::Response,
    secret: Option<&str>,
) -> Result<reqwest::Response, ProviderError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
    // The body of an error is small; a failed read only loses the message.
    let body = resp.bytes().await.unwrap_or_default();
    let message = upstream_message(&body, status.canonical_reason().unwrap_or("error"));
    Err(classify_status(
        status.as_u16(),
        retry_after,
        redact(&message, secret),
    ))
}

/// What to do about an HTTP status: 429 → rate limited; 408, 409, 5xx (Anthropic's 529 too) →
/// server error (retryable); any other 4xx → the request itself is at fault.
pub(crate) fn classify_status(
    status: u16,
    retry_after: Option<Duration>,
    message: String,
) -> ProviderError {
    match status {
        429 => ProviderError::RateLimited { retry_after },
        400..=499 if status != 408 && status != 409 => {
            ProviderError::BadRequest { status, message }
        }
        _ => ProviderError::Server { status, message },
    }
}

/// The message of an OpenAI (`{"error":{"message"}}`) or Anthropic
/// (`{"type":"error","error":{"message"}}`) error body, else the body's text, shortened.
fn upstream_message(body: &[u8], fallback: &str) -> String {
    let from_json = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(error_text));
    let text = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    let text = if text.is_empty() {
        fallback.to_string()
    } else {
        text
    };
    text.chars().take(ERROR_MESSAGE_CHARS_MAX).collect()
}

fn error_text(err: &Value) -> Option<String> {
    match err {
        Value::String(s) => Some(s.clone()),
        v => v.get("message").and_then(Value::as_str).map(str::to_string),
    }
}

fn redact(text: &str, secret: Option<&str>) -> String {
    match secret {
        Some(s) if !s.is_empty() => text.replace(s, "***"),
        _ => text.to_string(),
    }
}

/// Classify a transport failure. The message is the innermost cause (reqwest's own text carries
/// the URL, never headers), with the key redacted anyway.
pub(crate) fn classify_reqwest(
    e: &reqwest::Error,
    timeout: Duration,
    secret: Option<&str>,
) -> ProviderError {
    if e.is_timeout() {
        ProviderError::Timeout(timeout)
    } else if e.is_connect() {
        ProviderError::Connect(redact(&root_cause(e), secret))
    } else if e.is_decode() || e.is_body() {
        ProviderError::Decode(redact(&root_cause(e), secret))
    } else {
        ProviderError::Connect(redact(&root_cause(e), secret))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        msg = format!("{msg}: {s}");
        cur = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse_all(pieces: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for piece in pieces {
            out.extend(p.push(piece).unwrap());
        }
        out.extend(p.finish());
        out
    }

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: event.map(str::to_string),
            data: data.to_string(),
        }
    }

    #[test]
    fn sse_parser_is_indifferent_to_chunk_boundaries() {
        let body = "data: {\"a\":1}\n\n: keep-alive\n\nevent: message_start\ndata: {\"b\":\"é中\"}\n\ndata: x\ndata: y\n\ndata: [DONE]\n\n";
        let want = vec![
            ev(None, "{\"a\":1}"),
            ev(Some("message_start"), "{\"b\":\"é中\"}"),
            ev(None, "x\ny"),
            ev(None, "[DONE]"),
        ];
        let bytes = body.as_bytes();
        assert_eq!(parse_all(&[bytes]), want, "whole");
        // Every split point, including inside the multi-byte characters.
        for i in 0..=bytes.len() {
            assert_eq!(parse_all(&[&bytes[..i], &bytes[i..]]), want, "split at {i}");
        }
        // One byte at a time.
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(parse_all(&singles), want, "byte by byte");
    }

    #[test]
    fn sse_parser_handles_crlf_and_missing_final_blank_line() {
        let body = b"event: ping\r\ndata: {}\r\n\r\ndata:no-space\r\n\r\ndata: last";
        let want = vec![
            ev(Some("ping"), "{}"),
            ev(None, "no-space"),
            ev(None, "last"),
        ];
        for i in 0..=body.len() {
            assert_eq!(parse_all(&[&body[..i], &body[i..]]), want, "split at {i}");
        }
    }

    #[test]
    fn sse_parser_merges_several_events_in_one_chunk() {
        let out = parse_all(&[b"data: 1\n\ndata: 2\n\ndata: 3\n", b"\n"]);
        assert_eq!(out, vec![ev(None, "1"), ev(None, "2"), ev(None, "3")]);
    }

    #[test]
    fn sse_parser_bounds_an_endless_line() {
        let mut p = SseParser::default();
        let big = vec![b'a'; SSE_LINE_BYTES_MAX + 1];
        assert!(p.push(&big).is_err());
    }

    #[test]
    fn stream_events_become_chunks_named_after_the_gateway_model() {
        let data = r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"upstream","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#;
        let chunk = openai_chunk(&ev(None, data), "gw").unwrap().unwrap();
        assert_eq!(chunk.model, "gw");
        assert_eq!(chunk.choices[0].delta.content.as_deref(), Some("hi"));
        assert_eq!(openai_chunk(&ev(None, " "), "gw"), Ok(None));
        let err = openai_chunk(&ev(None, r#"{"error":{"message":"boom"}}"#), "gw");
        assert_eq!(
            err,
            Err(ProviderError::Server {
                status: 500,
                message: "boom".into()
            })
        );
        assert!(matches!(
            openai_chunk(&ev(None, "{not json"), "gw"),
            Err(ProviderError::Decode(_))
        ));
    }

    #[test]
    fn embedding_answers_are_checked_and_put_in_input_order() {
        let d = |index: u32, embedding: EmbeddingVector| EmbeddingData {
            object: "embedding".into(),
            index,
            embedding,
        };
        let f = |v: &[f32]| EmbeddingVector::Float(v.to_vec());
        let b64 = EmbeddingVector::Base64(crate::embeddings::wire::to_base64(&[0.5, -1.0]));
        // Out of order, mixed encodings: sorted by index, decoded.
        let got = embedding_vectors(vec![d(1, b64), d(0, f(&[1.0, 0.0]))], 2, 2).unwrap();
        assert_eq!(got, vec![vec![1.0, 0.0], vec![0.5, -1.0]]);
        let cases: Vec<(Vec<EmbeddingData>, &str)> = vec![
            (vec![d(0, f(&[1.0, 0.0]))], "1 vectors for 2 inputs"),
            (
                vec![d(0, f(&[1.0, 0.0])), d(0, f(&[1.0, 0.0]))],
                "index 1 missing",
            ),
            (
                vec![d(0, f(&[1.0])), d(1, f(&[1.0, 0.0]))],
                "configured with 2",
            ),
            (
                vec![
                    d(0, f(&[1.0, 0.0])),
                    d(1, EmbeddingVector::Base64("!!".into())),
                ],
                "base64",
            ),
        ];
        for (data, want) in cases {
            let e = embedding_vectors(data, 2, 2).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let cases: &[(&str, Option<Duration>)] = &[
            ("1", Some(Duration::from_secs(1))),
            (" 120 ", Some(Duration::from_secs(120))),
            ("0.5", Some(Duration::from_millis(500))),
            ("-3", None),
            ("soon", None),
            (
                "Wed, 21 Oct 2015 07:28:30 GMT",
                Some(Duration::from_secs(30)),
            ),
            ("Wed, 21 Oct 2015 07:27:00 GMT", Some(Duration::ZERO)),
        ];
        for (v, want) in cases {
            assert_eq!(parse_retry_after(v, now), *want, "{v:?}");
        }
    }

    #[test]
    fn statuses_are_classified_for_failover() {
        let s = |status| classify_status(status, None, "m".into());
        assert_eq!(s(429), ProviderError::RateLimited { retry_after: None });
        for status in [500, 502, 503, 529, 408, 409] {
            assert!(
                matches!(s(status), ProviderError::Server { .. }),
                "{status}"
            );
        }
        for status in [400, 401, 403, 404, 422] {
            assert!(
                matches!(s(status), ProviderError::BadRequest { .. }),
                "{status}"
            );
        }
    }

    #[test]
    fn upstream_messages_are_extracted_and_redacted() {
        let body = br#"{"error":{"message":"Incorrect API key provided: sk-secret-1","type":"invalid_request_error"}}"#;
        let msg = redact(&upstream_message(body, "x"), Some("sk-secret-1"));
        assert_eq!(msg, "Incorrect API key provided: ***");
        let anthropic =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(upstream_message(anthropic, "x"), "Overloaded");
        assert_eq!(upstream_message(b"", "Bad Gateway"), "Bad Gateway");
        assert_eq!(upstream_message(b"plain text", "x"), "plain text");
    }

    #[test]
    fn upstream_body_uses_the_upstream_name_and_asks_for_stream_usage() {
        let p = OpenAiProvider::new(
            reqwest::Client::new(),
            "http://h/v1/",
            "deepseek-chat",
            None,
            ProviderKind::Openai,
        );
        assert_eq!(p.endpoint(), "http://h/v1");
        let mut req = ChatCompletionRequest {
            model: "deepseek-v3".into(),
            messages: vec![],
            stream: false,
            max_tokens: None,
            max_completion_tokens: None,
            temperature: None,
            extra: Default::default(),
        };
        let b = p.upstream_body(&req, true);
        assert_eq!(b.model, "deepseek-chat");
        assert_eq!(b.extra["stream_options"], json!({"include_usage": true}));
        req.extra
            .insert("stream_options".into(), json!({"include_usage": false}));
        let b = p.upstream_body(&req, true);
        assert_eq!(
            b.extra["stream_options"],
            json!({"include_usage": true}),
            "usage is always asked for upstream (the API drops it unless the client asked)"
        );
        assert!(!p
            .upstream_body(&req, false)
            .extra
            .contains_key("stream_options"));
    }
}

//! Model calls (§18.2): which model ([`routing`], pure), the fallback chain with retries and a
//! circuit breaker per model ([`fallback`], [`breaker`]), the providers ([`providers`]), and
//! here one model call with its accounting — the provider call, then the audit line and the
//! token/cost/latency/error metrics. Task workers, `/v1/chat/completions` and embeddings
//! ([`embed`]) all go through [`Calls`], so all account the same way. Streams are accounted when they end (or are
//! dropped).
//!
//! Invariant: this file decides nothing about which model or whether to retry.

pub mod breaker;
pub mod fallback;
pub mod providers;
pub mod routing;

use std::sync::Arc;
use std::time::{Duration, Instant};

use openclaw_proto::openai::{ChatCompletionRequest, ChatCompletionResponse, Usage};

use crate::audit::{AuditEntry, AuditLog};
use crate::calls::breaker::Breakers;
use crate::calls::providers::{CallContext, ChunkStream, ProviderError, ProviderSet};
use crate::config::ConfigCell;
use crate::limits::RateLimits;
use crate::metrics::metrics;
use crate::util::Mono;

/// Everything one model call needs: the handle task workers and the chat endpoint call through.
#[derive(Clone)]
pub struct Calls {
    pub cfg: ConfigCell,
    pub providers: Arc<ProviderSet>,
    pub audit: AuditLog,
    /// This node's name, written into every audit line.
    pub node: String,
    /// Circuit breaker per model.
    pub breakers: Arc<Breakers>,
    pub limits: RateLimits,
    pub mono: Mono,
}

/// Who a call is for (audit fields).
#[derive(Debug, Clone)]
pub struct CallMeta {
    pub request_id: String,
    pub task_id: Option<String>,
    pub agent: String,
    pub source: String,
    pub priority: openclaw_proto::Priority,
    pub attempt: u32,
    pub cache_hit: bool,
    /// The first model, when this call is a fallback.
    pub fallback_from: Option<String>,
    /// Where the caller sees the rate-limit scope the call waits for (task workers).
    pub wait: Option<crate::limits::WaitNote>,
    /// What the prompt is made of (task workers), for the audit line.
    pub prompt: Option<crate::audit::AuditPrompt>,
    /// Why the gateway made the call when it is not the answer itself (`summary`: folding a
    /// session's older messages into its summary); audited as `purpose`.
    pub purpose: Option<String>,
}

impl CallMeta {
    /// A first attempt that is no task's, no cache hit and no fallback, with no wait note,
    /// prompt breakdown or purpose; callers set what they know beyond that with struct update.
    pub fn new(
        request_id: String,
        agent: String,
        source: String,
        priority: openclaw_proto::Priority,
    ) -> Self {
        CallMeta {
            request_id,
            task_id: None,
            agent,
            source,
            priority,
            attempt: 1,
            cache_hit: false,
            fallback_from: None,
            wait: None,
            prompt: None,
            purpose: None,
        }
    }
}

/// The result of a successful call.
#[derive(Debug, Clone)]
pub struct Completed {
    pub response: ChatCompletionResponse,
    pub usage: Usage,
    pub cost_usd: f64,
    pub latency: Duration,
}

fn cost_of(cx: &Calls, model: &str, u: &Usage) -> f64 {
    cx.cfg
        .get()
        .models
        .get(model)
        .map(|m| m.price.cost(u.prompt_tokens, u.completion_tokens))
        .unwrap_or(0.0)
}

/// The provider of a configured model and the call's context.
fn provider_for(
    cx: &Calls,
    model: &str,
    request_id: &str,
    timeout: Duration,
) -> Result<(Arc<dyn crate::calls::providers::Provider>, CallContext), ProviderError> {
    let provider = cx
        .providers
        .get(model)
        .ok_or_else(|| ProviderError::BadRequest {
            status: 404,
            message: format!("model `{model}` is not configured"),
        })?
        .clone();
    let ctx = CallContext {
        request_id: request_id.to_string(),
        timeout,
    };
    Ok((provider, ctx))
}

/// Non-streaming call of `req.model` (a configured model name).
pub async fn chat(
    cx: &Calls,
    meta: &CallMeta,
    req: &ChatCompletionRequest,
    timeout: Duration,
) -> Result<Completed, ProviderError> {
    let model = req.model.clone();
    let (provider, ctx) = provider_for(cx, &model, &meta.request_id, timeout)?;
    let started = Instant::now();
    let res = provider.chat(req, &ctx).await;
    let latency = started.elapsed();
    match res {
        Ok(response) => {
            let usage = response.usage.unwrap_or_else(|| {
                Usage::new(
                    crate::tokens::count_messages(&req.messages) as u64,
                    crate::tokens::count(&response.text()) as u64,
                )
            });
            let cost_usd = cost_of(cx, &model, &usage);
            account(
                cx,
                meta,
                &model,
                provider.kind().as_str(),
                Ok(&usage),
                cost_usd,
                latency,
            )
            .await;
            Ok(Completed {
                response,
                usage,
                cost_usd,
                latency,
            })
        }
        Err(e) => {
            account(
                cx,
                meta,
                &model,
                provider.kind().as_str(),
                Err(&e),
                0.0,
                latency,
            )
            .await;
            Err(e)
        }
    }
}

/// The result of a successful embeddings call.
#[derive(Debug, Clone)]
pub struct EmbedDone {
    /// One per input, in input order.
    pub vectors: Vec<Vec<f32>>,
    /// The provider's count of the inputs' tokens (the gateway's own count when it gave none).
    pub prompt_tokens: u64,
    pub cost_usd: f64,
}

/// One embeddings call of `model` (a configured embedding model), accounted like a chat call:
/// audit line (`purpose` from `meta`), input tokens, cost, latency and error metrics.
pub async fn embed(
    cx: &Calls,
    meta: &CallMeta,
    model: &str,
    inputs: &[String],
    timeout: Duration,
) -> Result<EmbedDone, ProviderError> {
    let dims = cx
        .cfg
        .get()
        .models
        .get(model)
        .and_then(|m| m.dimensions)
        .ok_or_else(|| ProviderError::BadRequest {
            status: 400,
            message: format!("model `{model}` is not an embedding model"),
        })?;
    let (provider, ctx) = provider_for(cx, model, &meta.request_id, timeout)?;
    let started = Instant::now();
    let res = provider.embed(inputs, dims, &ctx).await;
    let latency = started.elapsed();
    let kind = provider.kind().as_str();
    match res {
        Ok(out) => {
            let prompt_tokens = out.prompt_tokens.unwrap_or_else(|| {
                inputs
                    .iter()
                    .map(|t| u64::from(crate::tokens::count(t)))
                    .sum()
            });
            let usage = Usage::new(prompt_tokens, 0);
            let cost_usd = cost_of(cx, model, &usage);
            account(cx, meta, model, kind, Ok(&usage), cost_usd, latency).await;
            Ok(EmbedDone {
                vectors: out.vectors,
                prompt_tokens,
                cost_usd,
            })
        }
        Err(e) => {
            account(cx, meta, model, kind, Err(&e), 0.0, latency).await;
            Err(e)
        }
    }
}

/// Streaming call; the returned stream accounts the call when it ends or is dropped.
pub async fn chat_stream(
    cx: Calls,
    meta: CallMeta,
    req: &ChatCompletionRequest,
    timeout: Duration,
) -> Result<ChunkStream, ProviderError> {
    let model = req.model.clone();
    let (provider, ctx) = provider_for(&cx, &model, &meta.request_id, timeout)?;
    let started = Instant::now();
    let kind = provider.kind().as_str();
    let stream = match provider.chat_stream(req, &ctx).await {
        Ok(s) => s,
        Err(e) => {
            account(&cx, &meta, &model, kind, Err(&e), 0.0, started.elapsed()).await;
            return Err(e);
        }
    };
    let prompt_estimate = crate::tokens::count_messages(&req.messages) as u64;
    let tally = StreamTally {
        cx,
        meta,
        model,
        kind,
        started,
        usage: None,
        text: String::new(),
        error: None,
        prompt_estimate,
        done: false,
    };
    Ok(Box::pin(Tallied {
        inner: stream,
        tally,
    }))
}

/// Counts a stream as it passes and accounts it once at the end.
struct StreamTally {
    cx: Calls,
    meta: CallMeta,
    model: String,
    kind: &'static str,
    started: Instant,
    usage: Option<Usage>,
    text: String,
    error: Option<ProviderError>,
    prompt_estimate: u64,
    done: bool,
}

impl StreamTally {
    fn observe(
        &mut self,
        item: Option<&Result<openclaw_proto::openai::ChatCompletionChunk, ProviderError>>,
    ) {
        match item {
            Some(Ok(chunk)) => {
                if let Some(u) = chunk.usage {
                    self.usage = Some(u);
                }
                for c in &chunk.choices {
                    if let Some(t) = &c.delta.content {
                        self.text.push_str(t);
                    }
                }
            }
            Some(Err(e)) => self.error = Some(e.clone()),
            None => self.finish(),
        }
    }

    fn finish(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let usage = self.usage.unwrap_or_else(|| {
            Usage::new(
                self.prompt_estimate,
                crate::tokens::count(&self.text) as u64,
            )
        });
        let cost = cost_of(&self.cx, &self.model, &usage);
        let cx = self.cx.clone();
        let meta = self.meta.clone();
        let model = self.model.clone();
        let kind = self.kind;
        let latency = self.started.elapsed();
        let error = self.error.take();
        // Drop may run while the runtime winds down: account only if a runtime is there.
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        handle.spawn(async move {
            match error {
                None => account(&cx, &meta, &model, kind, Ok(&usage), cost, latency).await,
                Some(e) => account(&cx, &meta, &model, kind, Err(&e), 0.0, latency).await,
            }
        });
    }
}

impl Drop for StreamTally {
    fn drop(&mut self) {
        // A client that disconnects mid-stream still consumed tokens: account what passed.
        self.finish();
    }
}

/// A stream that shows every item to its tally, and ends the tally when it ends.
struct Tallied {
    inner: ChunkStream,
    tally: StreamTally,
}

impl futures::Stream for Tallied {
    type Item = Result<openclaw_proto::openai::ChatCompletionChunk, ProviderError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.inner.as_mut().poll_next(cx) {
            std::task::Poll::Ready(Some(item)) => {
                this.tally.observe(Some(&item));
                std::task::Poll::Ready(Some(item))
            }
            std::task::Poll::Ready(None) => {
                this.tally.observe(None);
                std::task::Poll::Ready(None)
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

/// Audit line + metrics for one call.
async fn account(
    cx: &Calls,
    meta: &CallMeta,
    model: &str,
    provider: &str,
    res: Result<&Usage, &ProviderError>,
    cost_usd: f64,
    latency: Duration,
) {
    let m = metrics();
    m.provider_latency_seconds
        .with_label_values(&[model])
        .observe(latency.as_secs_f64());
    let (tokens_in, tokens_out, status) = match res {
        Ok(u) => {
            m.tokens_consumed_total
                .with_label_values(&[model, "input"])
                .inc_by(u.prompt_tokens);
            m.tokens_consumed_total
                .with_label_values(&[model, "output"])
                .inc_by(u.completion_tokens);
            m.cost_usd_total
                .with_label_values(&[model])
                .inc_by(cost_usd);
            (
                u.prompt_tokens,
                u.completion_tokens,
                crate::audit::STATUS_OK.to_string(),
            )
        }
        Err(e) => {
            m.model_errors_total
                .with_label_values(&[model, e.code()])
                .inc();
            if let Some(suppressed) = crate::throttled!(model) {
                tracing::warn!(model, error = %e, attempt = meta.attempt, suppressed, "model call failed");
            }
            (0, 0, e.code().to_string())
        }
    };
    let entry = AuditEntry {
        timestamp: crate::audit::local_now(),
        node: cx.node.clone(),
        task_id: meta.task_id.clone(),
        request_id: meta.request_id.clone(),
        agent: meta.agent.clone(),
        source: meta.source.clone(),
        priority: meta.priority,
        model: model.to_string(),
        provider: provider.to_string(),
        tokens: openclaw_proto::api::TokenCounts {
            input: tokens_in,
            output: tokens_out,
        },
        cost_usd,
        latency_ms: latency.as_millis() as u64,
        cache: crate::audit::CacheOutcome::from_hit(meta.cache_hit),
        cache_score: None,
        status,
        attempt: meta.attempt,
        fallback_from: meta.fallback_from.clone(),
        prompt: meta.prompt,
        purpose: meta.purpose.clone(),
    };
    if cx.audit.record(entry).await.is_err() {
        tracing::error!("audit log writer is gone; call not audited");
    }
}

/// Audit line for an answer served from the request cache: no provider call, so no latency or
/// token metrics; zero tokens, zero cost, `cache: "cache_hit"`, provider `cache`, and the
/// similarity `cache_score` of a semantic-strategy hit.
pub async fn account_cache_hit(cx: &Calls, meta: &CallMeta, model: &str, score: Option<f64>) {
    let entry = AuditEntry {
        timestamp: crate::audit::local_now(),
        node: cx.node.clone(),
        task_id: meta.task_id.clone(),
        request_id: meta.request_id.clone(),
        agent: meta.agent.clone(),
        source: meta.source.clone(),
        priority: meta.priority,
        model: model.to_string(),
        provider: "cache".to_string(),
        tokens: openclaw_proto::api::TokenCounts::default(),
        cost_usd: 0.0,
        latency_ms: 0,
        cache: crate::audit::CacheOutcome::Hit,
        cache_score: score,
        status: crate::audit::STATUS_OK.to_string(),
        attempt: meta.attempt,
        fallback_from: None,
        prompt: meta.prompt,
        purpose: meta.purpose.clone(),
    };
    if cx.audit.record(entry).await.is_err() {
        tracing::error!("audit log writer is gone; cache hit not audited");
    }
}

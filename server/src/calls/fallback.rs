//! Fallback (§18.2 `model_fallback`): try the chosen model, retrying it up to `max_retries`
//! times `retry_delay_ms` apart, then each model of `fallback_chain` in order. Timeouts,
//! connection errors, 429 and 5xx move on; a 4xx caused by the request does not (another model
//! would refuse it too). A model whose circuit breaker is open is skipped at once.
//! A stream switches model only before its first chunk: once `chat_stream` returned a stream,
//! it is the answer.
//!
//! Rate limits (`crate::limits`): every attempt first acquires its model's (and the global)
//! grant, waiting at most `rate_limiting.max_wait_ms` in all (chat calls: also at most
//! `timeout_ms`); a refusal moves on like a 429, and fails the call with `rate_limited` when no
//! model is left. A provider 429 backs the model's limiter off; a success settles the grant
//! with the real token count.
//!
//! Embeddings (`embed`) run the same attempt loop over their one model: retries, the breaker and
//! the rate limits apply, the fallback chain (chat models) does not.
//!
//! Every move to the next model is counted (`openclaw_fallbacks_total{from,to,reason}`) and
//! returned, so the task shows it.

use std::time::Duration;

use openclaw_proto::api::FallbackStep;
use openclaw_proto::openai::ChatCompletionRequest;

use crate::calls::breaker::{Admit, BreakerPolicy};
use crate::calls::providers::{ChunkStream, ProviderError};
use crate::calls::{self, CallMeta, Calls, Completed};
use crate::config::Config;
use crate::limits::{self, LimitError, Permit};
use crate::metrics::metrics;
use crate::util::now_ms;

/// The models to try, in order: `first`, then the chain (when enabled), without repeats.
pub fn candidates(cfg: &Config, first: &str) -> Vec<String> {
    let mut out = vec![first.to_string()];
    if cfg.model_fallback.enabled {
        for m in &cfg.model_fallback.fallback_chain {
            if !out.contains(m) {
                out.push(m.clone());
            }
        }
    }
    out
}

/// What to do after a failed attempt (pure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try the same model again after this delay.
    RetryAfter(Duration),
    /// Move to the next model.
    NextModel,
    /// Give up: the request itself is at fault.
    Fail,
}

/// Decide after attempt `attempt` (1-based) of `tries` failed with `e`.
pub fn after_failure(
    e: &ProviderError,
    attempt: u32,
    tries: u32,
    cfg: &Config,
    breaker_open: bool,
) -> Next {
    if !e.is_retryable() {
        return Next::Fail;
    }
    if breaker_open || attempt >= tries {
        return Next::NextModel;
    }
    let fb = &cfg.model_fallback;
    let delay = Duration::from_millis(fb.retry_delay_ms);
    match e {
        ProviderError::RateLimited {
            retry_after: Some(ra),
        } => {
            // Waiting longer than one call's timeout for this model is worse than moving on.
            if *ra > Duration::from_millis(fb.timeout_ms) {
                Next::NextModel
            } else {
                Next::RetryAfter(delay.max(*ra))
            }
        }
        _ => Next::RetryAfter(delay),
    }
}

pub fn breaker_policy(cfg: &Config) -> BreakerPolicy {
    let b = &cfg.model_fallback.circuit_breaker;
    BreakerPolicy {
        failure_threshold: b.failure_threshold,
        cooldown_ms: b.cooldown_ms,
    }
}

/// Whether a failure counts against the model's health (429 means alive but busy).
fn counts_against_breaker(e: &ProviderError) -> bool {
    !matches!(
        e,
        ProviderError::RateLimited { .. } | ProviderError::BadRequest { .. }
    )
}

/// The answer, the model that gave it, and the fallbacks on the way.
pub struct Answer<T> {
    pub value: T,
    pub model: String,
    pub fallbacks: Vec<FallbackStep>,
}

/// A failure after every candidate, with the fallbacks on the way.
#[derive(Debug)]
pub struct Failure {
    pub error: ProviderError,
    pub model: String,
    pub fallbacks: Vec<FallbackStep>,
    /// Set when the last failure was the gateway's own rate limit (`error` is then a
    /// `RateLimited` carrying its retry-after).
    pub limited: Option<LimitError>,
}

fn note_fallback(steps: &mut Vec<FallbackStep>, from: &str, to: &str, reason: &str) {
    metrics()
        .fallbacks_total
        .with_label_values(&[from, to, reason])
        .inc();
    if let Some(suppressed) = crate::throttled!(&format!("{from}>{to}")) {
        tracing::info!(
            from,
            to,
            reason,
            suppressed,
            "falling back to the next model"
        );
    }
    steps.push(FallbackStep {
        from: from.to_string(),
        to: to.to_string(),
        reason: reason.to_string(),
    });
}

/// Non-streaming call of `req` with `first` as the first model.
pub async fn chat(
    cx: &Calls,
    meta: &CallMeta,
    req: &ChatCompletionRequest,
    first: &str,
) -> Result<Answer<Completed>, Failure> {
    let cfg = cx.cfg.get();
    run(
        cx,
        meta,
        candidates(&cfg, first),
        chat_estimate(req),
        |model, meta, timeout| {
            let mut model_req = req.clone();
            model_req.model = model;
            Box::pin(async move { calls::chat(cx, &meta, &model_req, timeout).await })
        },
        |done: Completed, permit: Permit| {
            permit.settle(done.usage.prompt_tokens + done.usage.completion_tokens);
            done
        },
    )
    .await
}

/// Streaming call: fails over only until a stream is obtained.
pub async fn chat_stream(
    cx: Calls,
    meta: &CallMeta,
    req: &ChatCompletionRequest,
    first: &str,
) -> Result<Answer<ChunkStream>, Failure> {
    let cx2 = cx.clone();
    let models = candidates(&cx.cfg.get(), first);
    run(
        &cx,
        meta,
        models,
        chat_estimate(req),
        move |model, meta, timeout| {
            let cx = cx2.clone();
            let mut model_req = req.clone();
            model_req.model = model;
            Box::pin(async move { calls::chat_stream(cx, meta, &model_req, timeout).await })
        },
        // The stream holds the grants until it ends (concurrency), and settles on its usage.
        |stream: ChunkStream, permit: Permit| -> ChunkStream {
            if !permit.is_limited() {
                return stream;
            }
            Box::pin(futures::StreamExt::map(stream, move |item| {
                if let Ok(Some(u)) = item.as_ref().map(|c| c.usage.as_ref()) {
                    permit.settle(u.prompt_tokens + u.completion_tokens);
                }
                item
            }))
        },
    )
    .await
}

/// An embeddings call of `model` with retries, the breaker and rate limits — and no other
/// model: vectors of different models are not comparable, so `fallback_chain` (chat models)
/// does not apply. `estimate` is the inputs' token count (for the rate limits).
pub async fn embed(
    cx: &Calls,
    meta: &CallMeta,
    model: &str,
    inputs: &[String],
    estimate: u64,
) -> Result<Answer<calls::EmbedDone>, Failure> {
    run(
        cx,
        meta,
        vec![model.to_string()],
        estimate,
        |model, meta, timeout| {
            Box::pin(async move { calls::embed(cx, &meta, &model, inputs, timeout).await })
        },
        |done: calls::EmbedDone, permit: Permit| {
            permit.settle(done.prompt_tokens);
            done
        },
    )
    .await
}

/// The rate limits' token estimate of a chat request (the same for every model it tries).
fn chat_estimate(req: &ChatCompletionRequest) -> u64 {
    limits::estimate_tokens(&req.messages, req.max_tokens.or(req.max_completion_tokens))
}

type Attempt<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, ProviderError>> + Send + 'a>>;

async fn run<'a, T>(
    cx: &'a Calls,
    meta: &CallMeta,
    models: Vec<String>,
    estimate: u64,
    call: impl Fn(String, CallMeta, Duration) -> Attempt<'a, T>,
    finish: impl Fn(T, Permit) -> T,
) -> Result<Answer<T>, Failure> {
    let cfg = &*cx.cfg.get();
    let first = models.first().map(String::as_str).unwrap_or_default();
    let wait_deadline_ms =
        cx.mono.ms() + limits::max_wait(cfg, meta.task_id.is_some()).as_millis() as u64;
    let mut limited: Option<LimitError> = None;
    let policy = breaker_policy(cfg);
    let timeout = Duration::from_millis(cfg.model_fallback.timeout_ms);
    let tries = 1 + cfg.model_fallback.max_retries;
    let mut steps = Vec::new();
    let mut last: Option<(String, ProviderError)> = None;
    let mut attempt_no = meta.attempt.saturating_sub(1);
    for (i, model) in models.iter().enumerate() {
        let next_model = models.get(i + 1);
        if let Admit::No { retry_in_ms } = cx.breakers.admit(model, now_ms()) {
            tracing::debug!(model, retry_in_ms, "breaker open; skipping model");
            if let Some(to) = next_model {
                note_fallback(&mut steps, model, to, "circuit_open");
            }
            if last.is_none() {
                last = Some((
                    model.clone(),
                    ProviderError::Server {
                        status: 503,
                        message: format!("circuit breaker open for {} more ms", retry_in_ms),
                    },
                ));
            }
            continue;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            attempt_no += 1;
            let mut m = meta.clone();
            m.attempt = attempt_no;
            m.fallback_from = (i > 0).then(|| first.to_string());
            if let Some(w) = &meta.wait {
                w.set_model(model);
            }
            let permit = match cx
                .limits
                .acquire(
                    model,
                    meta.priority,
                    estimate,
                    wait_deadline_ms,
                    meta.wait.as_ref(),
                )
                .await
            {
                Ok(p) => p,
                Err(le) => {
                    if let Some(suppressed) = crate::throttled!(model) {
                        tracing::info!(model, error = %le, suppressed, "rate limit refused the attempt");
                    }
                    last = Some((
                        model.clone(),
                        ProviderError::RateLimited {
                            retry_after: Some(le.retry_after()),
                        },
                    ));
                    limited = Some(le);
                    if let Some(to) = next_model {
                        note_fallback(&mut steps, model, to, "rate_limited");
                    }
                    break;
                }
            };
            match call(model.clone(), m, timeout).await {
                Ok(value) => {
                    cx.breakers.record(model, true, now_ms(), &policy);
                    return Ok(Answer {
                        value: finish(value, permit),
                        model: model.clone(),
                        fallbacks: steps,
                    });
                }
                Err(e) => {
                    // Back off before releasing, so the release cannot grant a waiter first.
                    if let ProviderError::RateLimited { retry_after } = &e {
                        cx.limits.note_429(model, *retry_after);
                    }
                    drop(permit);
                    limited = None;
                    let open = if counts_against_breaker(&e) {
                        matches!(
                            cx.breakers.record(model, false, now_ms(), &policy),
                            crate::calls::breaker::State::Open { .. }
                        )
                    } else {
                        false
                    };
                    let decision = after_failure(&e, attempt, tries, cfg, open);
                    let code = e.code();
                    last = Some((model.clone(), e));
                    match decision {
                        Next::RetryAfter(d) => {
                            if let Some(suppressed) = crate::throttled!(model) {
                                tracing::info!(
                                    model,
                                    attempt,
                                    delay_ms = d.as_millis() as u64,
                                    reason = code,
                                    suppressed,
                                    "retrying model"
                                );
                            }
                            tokio::time::sleep(d).await;
                        }
                        Next::NextModel => {
                            if let Some(to) = next_model {
                                note_fallback(&mut steps, model, to, code);
                            }
                            break;
                        }
                        Next::Fail => {
                            let (model, error) = last.unwrap_or_else(|| {
                                (model.clone(), ProviderError::Decode(String::new()))
                            });
                            return Err(Failure {
                                error,
                                model,
                                fallbacks: steps,
                                limited: None,
                            });
                        }
                    }
                }
            }
        }
    }
    let (model, error) = last.unwrap_or_else(|| {
        (
            first.to_string(),
            ProviderError::Decode("no model to try".into()),
        )
    });
    Err(Failure {
        error,
        model,
        fallbacks: steps,
        limited,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        let mut c = Config::default();
        c.model_fallback.fallback_chain = vec![
            "claude-3-5-sonnet".into(),
            "deepseek-v3".into(),
            "gpt-4o-mini".into(),
        ];
        c.model_fallback.max_retries = 2;
        c.model_fallback.retry_delay_ms = 100;
        c.model_fallback.timeout_ms = 5_000;
        c
    }

    #[test]
    fn candidates_table() {
        let c = cfg();
        assert_eq!(
            candidates(&c, "gpt-4o"),
            ["gpt-4o", "claude-3-5-sonnet", "deepseek-v3", "gpt-4o-mini"]
        );
        assert_eq!(
            candidates(&c, "deepseek-v3"),
            ["deepseek-v3", "claude-3-5-sonnet", "gpt-4o-mini"]
        );
        let mut off = cfg();
        off.model_fallback.enabled = false;
        assert_eq!(candidates(&off, "gpt-4o"), ["gpt-4o"]);
    }

    #[test]
    fn after_failure_table() {
        let c = cfg();
        let ms = Duration::from_millis;
        let server = ProviderError::Server {
            status: 500,
            message: String::new(),
        };
        let bad = ProviderError::BadRequest {
            status: 400,
            message: String::new(),
        };
        let rl = |s: u64| ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(s)),
        };
        let cases = [
            (
                "5xx, first try",
                &server,
                1,
                false,
                Next::RetryAfter(ms(100)),
            ),
            ("5xx, last try", &server, 3, false, Next::NextModel),
            ("5xx, breaker opened", &server, 1, true, Next::NextModel),
            ("request fault", &bad, 1, false, Next::Fail),
            (
                "429 short retry-after",
                &rl(2),
                1,
                false,
                Next::RetryAfter(ms(2_000)),
            ),
            (
                "429 retry-after beyond the timeout",
                &rl(60),
                1,
                false,
                Next::NextModel,
            ),
            (
                "timeout",
                &ProviderError::Timeout(ms(5)),
                2,
                false,
                Next::RetryAfter(ms(100)),
            ),
        ];
        for (name, e, attempt, open, want) in cases {
            assert_eq!(after_failure(e, attempt, 3, &c, open), want, "{name}");
        }
    }
}

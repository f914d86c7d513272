//! Embeddings (issue 11 item 1): the reusable call every semantic feature goes through —
//! [`embed`]`(model, texts) -> vectors + usage` — routed to the model's provider, rate-limited
//! (the model's and the global limits, with retries and the circuit breaker; no fallback to
//! another model, whose vectors would not be comparable), budgeted like a chat call (the
//! inputs' tokens, no output) and audited with `purpose: "embedding"`. `POST /v1/embeddings`
//! is a thin HTTP face on it.
//!
//! - [`request`]: the checks before any call (pure): model kind, input shape, bounds;
//! - [`lexical`]: the simulator's deterministic lexical embeddings, and [`lexical::cosine`];
//! - [`wire`]: float and base64 vector encodings (pure).
//!
//! Invariant: a vector returned here has the model's configured `dimensions`, one per input,
//! in input order (the provider layer refuses any other answer).

pub mod lexical;
pub mod request;
pub mod wire;

use crate::budget::{Budget, BudgetWait};
use crate::calls::{fallback, CallMeta, Calls};

/// The audit `purpose` of an embeddings call.
pub const EMBEDDING_PURPOSE: &str = "embedding";

/// What [`embed`] returns.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// The model that answered.
    pub model: String,
    /// One per input, in input order, each of the model's `dimensions`.
    pub vectors: Vec<Vec<f32>>,
    /// The inputs' tokens (the provider's count, else the gateway's).
    pub prompt_tokens: u64,
    pub cost_usd: f64,
}

/// Why an embeddings call gave no vectors.
#[derive(Debug)]
pub enum EmbedError {
    /// The request is at fault (before any call).
    Invalid(request::Invalid),
    /// The budget refuses the call for now.
    Budget(BudgetWait),
    /// Every attempt failed (provider errors or the gateway's rate limit).
    Failed(fallback::Failure),
}

/// Embed `texts` with `model` (a configured embedding model), accounted to `meta.agent`.
pub async fn embed(
    calls: &Calls,
    budget: &Budget,
    meta: &CallMeta,
    model: &str,
    texts: Vec<String>,
) -> Result<Embedded, EmbedError> {
    let checked =
        request::check_inputs(&calls.cfg.get(), model, texts, None).map_err(EmbedError::Invalid)?;
    embed_checked(calls, budget, meta, model, &checked).await
}

/// [`embed`] for inputs already checked ([`request::check`]).
pub async fn embed_checked(
    calls: &Calls,
    budget: &Budget,
    meta: &CallMeta,
    model: &str,
    checked: &request::Checked,
) -> Result<Embedded, EmbedError> {
    let tokens = checked.total_tokens();
    // Not critical: an embedding is never worth more than the budget's hard stop.
    let held = budget
        .reserve(&meta.agent, false, model, tokens, Some(0))
        .await
        .map_err(EmbedError::Budget)?;
    let mut meta = meta.clone();
    meta.purpose = Some(EMBEDDING_PURPOSE.to_string());
    meta.prompt = None;
    let answer = fallback::embed(calls, &meta, model, &checked.inputs, tokens)
        .await
        .map_err(EmbedError::Failed)?;
    let done = answer.value;
    held.settle(done.prompt_tokens, done.cost_usd);
    Ok(Embedded {
        model: answer.model,
        vectors: done.vectors,
        prompt_tokens: done.prompt_tokens,
        cost_usd: done.cost_usd,
    })
}

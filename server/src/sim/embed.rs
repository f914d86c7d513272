//! The simulator's `POST /v1/embeddings` (OpenAI shape): one deterministic lexical vector per
//! input ([`crate::embeddings::lexical`]: shared words and spellings score high, meaning does
//! not count), `dimensions` from the request (default [`DEFAULT_DIMENSIONS`]), `float` or
//! `base64` encoding, usage counted with the project's token counter. Recorded in the call log
//! (`embedding: true`) and subject to the same fault injection as chat calls: the
//! `X-Sim-Fault` header, `[sim:...]` in the last input, and the global / per-model settings.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use openclaw_proto::openai::{
    EmbeddingData, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage, EmbeddingVector,
};
use tracing::Instrument;

use super::calls::{CallRecord, STATUS_NO_ANSWER};
use super::faults::{self, Outcome};
use super::{error_response, lock, task_id_of, Api, Sim, FAULT_HEADER, HANG_MAX};
use crate::config::kinds::DIMENSIONS_MAX;
use crate::embeddings::request::{inputs_of, INPUTS_MAX};
use crate::embeddings::{lexical, wire};

/// Vector size when the request names none.
pub const DEFAULT_DIMENSIONS: u32 = 256;

/// The answer to an embeddings request (pure): vectors in input order and the usage.
pub fn answer(model: &str, inputs: &[String], dims: u32, enc: wire::Encoding) -> EmbeddingResponse {
    let data = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let v = lexical::embed(text, dims as usize);
            EmbeddingData {
                object: "embedding".into(),
                index: i as u32,
                embedding: match enc {
                    wire::Encoding::Float => EmbeddingVector::Float(v),
                    wire::Encoding::Base64 => EmbeddingVector::Base64(wire::to_base64(&v)),
                },
            }
        })
        .collect();
    let tokens = input_tokens(inputs);
    EmbeddingResponse {
        object: "list".into(),
        data,
        model: model.to_string(),
        usage: Some(EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        }),
    }
}

fn input_tokens(inputs: &[String]) -> u64 {
    inputs
        .iter()
        .map(|t| u64::from(crate::tokens::count(t)))
        .sum()
}

/// A parsed request: model, inputs, dimensions, encoding.
type Parsed = (String, Vec<String>, u32, wire::Encoding);

fn parse(body: &[u8]) -> Result<Parsed, String> {
    let req: EmbeddingRequest =
        serde_json::from_slice(body).map_err(|e| format!("invalid request body: {e}"))?;
    let inputs = inputs_of(&req.input).map_err(|e| e.to_string())?;
    if inputs.is_empty() || inputs.len() > INPUTS_MAX {
        return Err(format!("`input` must hold 1..={INPUTS_MAX} strings"));
    }
    let dims = req.dimensions.unwrap_or(DEFAULT_DIMENSIONS);
    if dims == 0 || dims > DIMENSIONS_MAX {
        return Err(format!("`dimensions` must be 1..={DIMENSIONS_MAX}"));
    }
    let enc = wire::Encoding::parse(req.encoding_format.as_deref())?;
    Ok((req.model, inputs, dims, enc))
}

pub(super) async fn embeddings(
    State(sim): State<Sim>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let task_id = task_id_of(&headers);
    let (model, inputs, dims, enc) = match parse(&body) {
        Ok(p) => p,
        Err(message) => return sim.reject(Api::OpenAi, task_id, message),
    };
    sim.remember_model(&model);
    let directive = headers
        .get(FAULT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(faults::parse_directive)
        .or_else(|| inputs.last().and_then(|t| faults::directive_in_text(t)));
    let settings = lock(&sim.inner.faults).effective(&model);
    let roll = lock(&sim.inner.dice).roll();
    let plan = faults::decide(&settings, directive, roll);
    let (status, fault) = match plan.outcome {
        Outcome::Answer => (
            200,
            matches!(directive, Some(faults::Directive::Slow(_))).then_some("slow"),
        ),
        Outcome::Error500 => (500, Some("500")),
        Outcome::RateLimited { .. } => (429, Some("429")),
        Outcome::Hang => (STATUS_NO_ANSWER, Some("hang")),
    };
    let tokens = input_tokens(&inputs);
    let seq = sim.record(CallRecord {
        seq: 0,
        task_id: task_id.clone(),
        model: model.clone(),
        status,
        input_tokens: u32::try_from(tokens).unwrap_or(u32::MAX),
        output_tokens: 0,
        stream: false,
        at_ms: 0,
        api: Api::OpenAi.as_str().into(),
        fault: fault.map(str::to_string),
        summary: false,
        embedding: true,
    });
    let span = tracing::info_span!(
        "sim_embeddings",
        seq,
        model = %model,
        inputs = inputs.len(),
        task_id = task_id.as_deref().unwrap_or(""),
        fault = fault.unwrap_or(""),
    );
    async move {
        sim.sleep(plan.delay).await;
        match plan.outcome {
            Outcome::Answer => Json(answer(&model, &inputs, dims, enc)).into_response(),
            Outcome::Error500 => error_response(
                Api::OpenAi,
                StatusCode::INTERNAL_SERVER_ERROR,
                "simulated server error",
                None,
            ),
            Outcome::RateLimited { retry_after_secs } => error_response(
                Api::OpenAi,
                StatusCode::TOO_MANY_REQUESTS,
                "simulated rate limit",
                Some(retry_after_secs),
            ),
            Outcome::Hang => {
                sim.sleep(HANG_MAX).await;
                error_response(
                    Api::OpenAi,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "simulated hang ended",
                    None,
                )
            }
        }
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn answers_in_input_order_with_usage_and_both_encodings() {
        let inputs = vec!["reset my password".to_string(), "hello world".to_string()];
        let f = answer("m", &inputs, 64, wire::Encoding::Float);
        assert_eq!(f.data.len(), 2);
        assert_eq!(f.data[1].index, 1);
        let u = f.usage.unwrap();
        assert_eq!(u.prompt_tokens, input_tokens(&inputs));
        assert_eq!(u.total_tokens, u.prompt_tokens);
        let b = answer("m", &inputs, 64, wire::Encoding::Base64);
        for (x, y) in f.data.iter().zip(&b.data) {
            let (EmbeddingVector::Float(fv), EmbeddingVector::Base64(bv)) =
                (&x.embedding, &y.embedding)
            else {
                panic!("wrong encodings");
            };
            assert_eq!(fv.len(), 64);
            assert_eq!(&wire::from_base64(bv).unwrap(), fv);
        }
    }

    #[test]
    fn bad_requests_are_named() {
        let cases = [
            (r#"{"model":"m","input":"a"}"#, None),
            (r#"{"model":"m","input":["a","b"],"dimensions":8}"#, None),
            (r#"{"model":"m","input":[]}"#, Some("1..=")),
            (
                r#"{"model":"m","input":"a","dimensions":0}"#,
                Some("dimensions"),
            ),
            (
                r#"{"model":"m","input":"a","encoding_format":"int8"}"#,
                Some("int8"),
            ),
            (r#"{"model":"m","input":[[1,2]]}"#, Some("token arrays")),
            (r#"{"model":"m"}"#, Some("invalid request body")),
        ];
        for (body, want) in cases {
            match (parse(body.as_bytes()), want) {
                (Ok(_), None) => {}
                (Err(e), Some(w)) => assert!(e.contains(w), "{body}: {e}"),
                (got, want) => panic!("{body}: {got:?} want {want:?}"),
            }
        }
    }
}

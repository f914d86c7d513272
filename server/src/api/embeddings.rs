//! `POST /v1/embeddings` (OpenAI shape), so the official SDKs' `embeddings.create` works
//! unchanged: `input` a string or a list of strings, `encoding_format` `float` (default) or
//! `base64` (what the Python SDK asks for unless told otherwise), `dimensions` only when equal
//! to the model's. The call itself is [`crate::embeddings::embed_checked`]: budgeted,
//! rate-limited and audited like chat; agent and source come from the same headers as chat's.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use openclaw_proto::openai::{
    EmbeddingData, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage, EmbeddingVector,
};
use tracing::Instrument;

use super::error::Code;
use super::openai::{provider_of, set_model_headers, DEFAULT_SOURCE, SOURCE_HEADER};
use super::{ApiError, ApiJson, AppState};
use crate::calls::CallMeta;
use crate::embeddings::{self, request, wire::Encoding};

pub async fn embeddings(
    State(st): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<EmbeddingRequest>,
) -> Result<Response, ApiError> {
    let app = st.app.clone();
    let cfg = app.cfg.get();
    let encoding = Encoding::parse(req.encoding_format.as_deref())
        .map_err(|m| ApiError::bad_request(Code::InvalidRequest, m))?;
    let checked = request::check(&cfg, &req.model, &req.input, req.dimensions)?;
    let source = match headers.get(SOURCE_HEADER) {
        None => DEFAULT_SOURCE.to_string(),
        Some(v) => v
            .to_str()
            .ok()
            .filter(|s| cfg.task_priority.source_mapping.contains_key(*s))
            .ok_or_else(|| {
                let known: Vec<&str> = cfg
                    .task_priority
                    .source_mapping
                    .keys()
                    .map(String::as_str)
                    .collect();
                ApiError::unprocessable(
                    Code::UnknownSource,
                    format!(
                        "the {SOURCE_HEADER} header is not one of task_priority.source_mapping: {}",
                        known.join(", ")
                    ),
                )
            })?
            .to_string(),
    };
    let agent = super::openai::agent_of(&cfg, &headers);
    let priority = cfg.task_priority.for_source(&source);
    let meta = CallMeta::new(
        format!("embd-{}", uuid::Uuid::new_v4().simple()),
        agent,
        source,
        priority,
    );
    drop(cfg);
    let span = tracing::info_span!("embeddings", request = %meta.request_id, model = %req.model, inputs = checked.inputs.len());
    let done = embeddings::embed_checked(&app.calls, &app.budget, &meta, &req.model, &checked)
        .instrument(span)
        .await?;
    let data = done
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| EmbeddingData {
            object: "embedding".into(),
            index: i as u32,
            embedding: match encoding {
                Encoding::Float => EmbeddingVector::Float(v.clone()),
                Encoding::Base64 => EmbeddingVector::Base64(embeddings::wire::to_base64(v)),
            },
        })
        .collect();
    let provider = provider_of(&app, &done.model);
    let mut http = Json(EmbeddingResponse {
        object: "list".into(),
        data,
        model: done.model.clone(),
        usage: Some(EmbeddingUsage {
            prompt_tokens: done.prompt_tokens,
            total_tokens: done.prompt_tokens,
        }),
    })
    .into_response();
    set_model_headers(&mut http, &done.model, &provider, &[]);
    Ok(http)
}

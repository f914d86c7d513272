//! `ApiError`: every failure the API reports, as status + stable code + human message; the
//! closed list of codes ([`Code`]); the mapping of every feature's error to them (one
//! `From<FeatureError> for ApiError` each, here and nowhere else); the extractors that turn
//! body, path and query rejections into the same shape ([`ApiJson`], [`ApiPath`], [`ApiQuery`]);
//! and [`json_errors`], the last line: any error answer that is not JSON yet (a rejection of an
//! extractor used without a wrapper, a bare status) is rewritten into the same shape, on the API
//! port and on the cluster port.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use openclaw_proto::ErrorBody;

use crate::budget::{AccountantUnavailable, BudgetWait};
use crate::cache::CacheUnavailable;
use crate::calls::providers::ProviderError;
use crate::channels::feishu::FeishuError;
use crate::limits::LimitError;
use crate::sessions::SessionError;
use crate::tasks::admit::{Field, Invalid};
use crate::tasks::ledger::LedgerError;
use crate::tasks::TaskError;

/// Every error code the API answers with: the contract clients match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    // The request itself.
    InvalidJson,
    InvalidField,
    InvalidBody,
    UnsupportedMediaType,
    BodyTooLarge,
    InvalidQuery,
    InvalidPath,
    InvalidWait,
    InvalidRequest,
    InvalidInput,
    InvalidRole,
    UnknownSource,
    // Embeddings.
    InputTooLong,
    TooManyInputs,
    WrongModelKind,
    ContextLengthExceeded,
    UnknownAgent,
    UnknownModel,
    InvalidCallbackUrl,
    InvalidMaxTokens,
    InvalidTemplate,
    InvalidIdempotencyKey,
    ModelNotFound,
    NotFound,
    MethodNotAllowed,
    Unauthorized,
    // Channels (Feishu events).
    InvalidSignature,
    InvalidEvent,
    // Tasks.
    TaskNotFound,
    TaskState,
    AlreadyFinished,
    QueueFull,
    // Sessions.
    SessionNotFound,
    // Agent memory.
    MemoryNotFound,
    InvalidMemoryPath,
    MemoryTooLarge,
    // Cron.
    CronJobNotFound,
    // Capacity and availability.
    Overloaded,
    NotReady,
    SchedulerUnavailable,
    OwnerUnreachable,
    ClusterUnavailable,
    /// A task's admission could not be confirmed nor ruled out: GET it before retrying.
    OutcomeUnknown,
    StorageUnavailable,
    CacheUnavailable,
    AccountantUnavailable,
    // Limits and budgets.
    RateLimited,
    BudgetExhausted,
    // Providers.
    UpstreamTimeout,
    UpstreamUnavailable,
    UpstreamError,
    UpstreamRejected,
    UpstreamInvalid,
    // Cluster and operations.
    NotClustered,
    NoLeader,
    LeaveFailed,
    NoConfigFile,
    InvalidConfig,
    /// A failure inside the node with no better code (never expected).
    Internal,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        use Code::*;
        match self {
            InvalidJson => "invalid_json",
            InvalidField => "invalid_field",
            InvalidBody => "invalid_body",
            UnsupportedMediaType => "unsupported_media_type",
            BodyTooLarge => "body_too_large",
            InvalidQuery => "invalid_query",
            InvalidPath => "invalid_path",
            InvalidWait => "invalid_wait",
            InvalidRequest => "invalid_request",
            InvalidInput => "invalid_input",
            InvalidRole => "invalid_role",
            UnknownSource => "unknown_source",
            InputTooLong => "input_too_long",
            TooManyInputs => "too_many_inputs",
            WrongModelKind => "wrong_model_kind",
            ContextLengthExceeded => "context_length_exceeded",
            UnknownAgent => "unknown_agent",
            UnknownModel => "unknown_model",
            InvalidCallbackUrl => "invalid_callback_url",
            InvalidMaxTokens => "invalid_max_tokens",
            InvalidTemplate => "invalid_template",
            InvalidIdempotencyKey => "invalid_idempotency_key",
            ModelNotFound => "model_not_found",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            Unauthorized => "unauthorized",
            InvalidSignature => "invalid_signature",
            InvalidEvent => "invalid_event",
            TaskNotFound => "task_not_found",
            TaskState => "task_state",
            AlreadyFinished => "already_finished",
            QueueFull => "queue_full",
            SessionNotFound => "session_not_found",
            MemoryNotFound => "memory_not_found",
            InvalidMemoryPath => "invalid_memory_path",
            MemoryTooLarge => "memory_too_large",
            CronJobNotFound => "cron_job_not_found",
            Overloaded => "overloaded",
            NotReady => "not_ready",
            SchedulerUnavailable => "scheduler_unavailable",
            OwnerUnreachable => "owner_unreachable",
            ClusterUnavailable => "cluster_unavailable",
            OutcomeUnknown => "outcome_unknown",
            StorageUnavailable => "storage_unavailable",
            CacheUnavailable => "cache_unavailable",
            AccountantUnavailable => "accountant_unavailable",
            RateLimited => "rate_limited",
            BudgetExhausted => "budget_exhausted",
            UpstreamTimeout => "upstream_timeout",
            UpstreamUnavailable => "upstream_unavailable",
            UpstreamError => "upstream_error",
            UpstreamRejected => "upstream_rejected",
            UpstreamInvalid => "upstream_invalid",
            NotClustered => "not_clustered",
            NoLeader => "no_leader",
            LeaveFailed => "leave_failed",
            NoConfigFile => "no_config_file",
            InvalidConfig => "invalid_config",
            Internal => "internal",
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Code,
    pub message: String,
    pub retry_after_s: Option<u64>,
    /// The task the answer is about when it may exist although the answer is an error
    /// (`outcome_unknown`): `task_id` in the body and `Location: /api/tasks/{id}`.
    pub task_id: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
            task_id: None,
        }
    }
    pub fn bad_request(code: Code, m: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, code, m)
    }
    pub fn unprocessable(code: Code, m: impl Into<String>) -> ApiError {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, m)
    }
    pub fn not_found(code: Code, m: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, code, m)
    }
    pub fn conflict(code: Code, m: impl Into<String>) -> ApiError {
        Self::new(StatusCode::CONFLICT, code, m)
    }
    pub fn unauthorized(m: impl Into<String>) -> ApiError {
        Self::new(StatusCode::UNAUTHORIZED, Code::Unauthorized, m)
    }
    pub fn unavailable(code: Code, m: impl Into<String>, retry_after_s: u64) -> ApiError {
        ApiError {
            retry_after_s: Some(retry_after_s),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, m)
        }
    }
    pub fn too_many(code: Code, m: impl Into<String>, retry_after_s: u64) -> ApiError {
        ApiError {
            retry_after_s: Some(retry_after_s),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, code, m)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody::new(self.code.as_str(), self.message);
        let mut resp = match &self.task_id {
            None => (self.status, axum::Json(body)).into_response(),
            Some(id) => {
                let mut v = serde_json::to_value(&body).unwrap_or_default();
                v["error"]["task_id"] = serde_json::Value::String(id.clone());
                let mut r = (self.status, axum::Json(v)).into_response();
                if let Ok(loc) = HeaderValue::from_str(&format!("/api/tasks/{id}")) {
                    r.headers_mut().insert(header::LOCATION, loc);
                }
                r
            }
        };
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body is never read, so the connection cannot be reused: say so,
            // or a keep-alive client sends its next request into a closing connection.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(s) = self.retry_after_s {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> ApiError {
        use LedgerError::*;
        match e {
            NotFound(id) => {
                ApiError::not_found(Code::TaskNotFound, format!("no task with id {id}"))
            }
            WrongState { id, status } => {
                ApiError::conflict(Code::TaskState, format!("task {id} is already {status}"))
            }
            Fenced { id, .. } | NotOwner { id, .. } => {
                ApiError::conflict(Code::TaskState, format!("task {id} changed owner"))
            }
            SessionBusy { id, .. } => {
                ApiError::conflict(Code::TaskState, format!("task {id} waits for its session"))
            }
            SessionFull { session, max } => ApiError::unavailable(
                Code::QueueFull,
                format!("session {session} already has {max} tasks waiting; retry later"),
                QUEUE_FULL_RETRY_S,
            ),
            Unavailable(why) => ApiError::unavailable(
                Code::ClusterUnavailable,
                format!("the cluster cannot commit right now ({why}); retry"),
                1,
            ),
            OutcomeUnknown { id, why } => ApiError {
                task_id: Some(id.clone()),
                ..ApiError::unavailable(
                    Code::OutcomeUnknown,
                    format!(
                        "task {id} may or may not have been admitted ({why}); \
                         GET /api/tasks/{id} before retrying"
                    ),
                    1,
                )
            },
            Storage(e) => {
                tracing::error!(error = %e, "storage error");
                ApiError::unavailable(
                    Code::StorageUnavailable,
                    "the node's store failed; retry",
                    1,
                )
            }
        }
    }
}

impl From<crate::agents::memory::MemoryError> for ApiError {
    fn from(e: crate::agents::memory::MemoryError) -> ApiError {
        use crate::agents::memory::MemoryError;
        match e {
            MemoryError::UnknownAgent(a) => ApiError::not_found(
                Code::UnknownAgent,
                format!("agent `{a}` is not configured on this node"),
            ),
            MemoryError::BadPath(m) => ApiError::unprocessable(Code::InvalidMemoryPath, m),
            MemoryError::TooLarge(m) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, Code::MemoryTooLarge, m)
            }
            MemoryError::Unavailable(why) => ApiError::unavailable(
                Code::ClusterUnavailable,
                format!("memory cannot be written or read right now ({why}); retry"),
                1,
            ),
        }
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> ApiError {
        match e {
            SessionError::Unavailable(why) => ApiError::unavailable(
                Code::ClusterUnavailable,
                format!("the cluster cannot serve sessions right now ({why}); retry"),
                1,
            ),
            SessionError::Storage(e) => {
                tracing::error!(error = %e, "storage error");
                ApiError::unavailable(
                    Code::StorageUnavailable,
                    "the node's store failed; retry",
                    1,
                )
            }
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> ApiError {
        let code = match e.field {
            Field::Input => Code::InvalidInput,
            Field::Source => Code::UnknownSource,
            Field::Agent => Code::UnknownAgent,
            Field::Model => Code::UnknownModel,
            Field::CallbackUrl => Code::InvalidCallbackUrl,
            Field::MaxTokens => Code::InvalidMaxTokens,
            Field::Template => Code::InvalidTemplate,
            Field::IdempotencyKey => Code::InvalidIdempotencyKey,
        };
        ApiError::unprocessable(code, e.message)
    }
}

/// How long a client should wait before retrying a full queue.
pub const QUEUE_FULL_RETRY_S: u64 = 5;

impl From<FeishuError> for ApiError {
    fn from(e: FeishuError) -> ApiError {
        let message = e.to_string();
        match e {
            FeishuError::BadSignature(_) => {
                ApiError::new(StatusCode::UNAUTHORIZED, Code::InvalidSignature, message)
            }
            FeishuError::BadToken(_) => ApiError::unauthorized(message),
            FeishuError::Undecryptable(_) | FeishuError::Malformed(_) => {
                ApiError::bad_request(Code::InvalidEvent, message)
            }
            FeishuError::BotUnknown(_) => {
                ApiError::unavailable(Code::UpstreamUnavailable, message, 1)
            }
            FeishuError::Task(t) => t.into(),
        }
    }
}

impl From<TaskError> for ApiError {
    fn from(e: TaskError) -> ApiError {
        let message = e.to_string();
        match e {
            TaskError::Invalid(i) => i.into(),
            TaskError::QueueFull { .. } => {
                ApiError::unavailable(Code::QueueFull, message, QUEUE_FULL_RETRY_S)
            }
            TaskError::NotFound(_) => ApiError::not_found(Code::TaskNotFound, message),
            TaskError::AlreadyFinished { .. } => ApiError::conflict(Code::AlreadyFinished, message),
            TaskError::OwnerUnreachable { .. } => {
                ApiError::unavailable(Code::OwnerUnreachable, message, 1)
            }
            TaskError::SchedulerUnavailable => {
                ApiError::unavailable(Code::SchedulerUnavailable, message, 1)
            }
            TaskError::Ledger(l) => l.into(),
        }
    }
}

impl From<crate::cron::CronError> for ApiError {
    fn from(e: crate::cron::CronError) -> ApiError {
        use crate::cron::CronError;
        let message = e.to_string();
        match e {
            CronError::UnknownJob { .. } => ApiError::not_found(Code::CronJobNotFound, message),
            CronError::Task(t) => t.into(),
            CronError::Marks(_) => ApiError::unavailable(Code::ClusterUnavailable, message, 1),
        }
    }
}

impl From<LimitError> for ApiError {
    /// 429 `rate_limited` + `Retry-After`.
    fn from(e: LimitError) -> ApiError {
        ApiError::too_many(Code::RateLimited, e.to_string(), e.retry_after_secs())
    }
}

/// How long a client should wait before retrying a call the budget refused.
pub const BUDGET_RETRY_S: u64 = 60;

impl From<BudgetWait> for ApiError {
    fn from(BudgetWait(scope): BudgetWait) -> ApiError {
        ApiError::too_many(
            Code::BudgetExhausted,
            format!(
                "the budget of scope `{scope}` is used up for this period; see GET /api/budget"
            ),
            BUDGET_RETRY_S,
        )
    }
}

impl From<crate::embeddings::request::Invalid> for ApiError {
    fn from(e: crate::embeddings::request::Invalid) -> ApiError {
        use crate::embeddings::request::Invalid::*;
        let code = match &e {
            UnknownModel { .. } => return ApiError::not_found(Code::ModelNotFound, e.to_string()),
            NotEmbedding { .. } => Code::WrongModelKind,
            InputShape(_) | EmptyInput { .. } => Code::InvalidInput,
            TooManyInputs { .. } => Code::TooManyInputs,
            InputTooLong { .. } | RequestTooLarge { .. } => Code::InputTooLong,
            Dimensions { .. } => Code::InvalidRequest,
        };
        ApiError::bad_request(code, e.to_string())
    }
}

impl From<crate::embeddings::EmbedError> for ApiError {
    fn from(e: crate::embeddings::EmbedError) -> ApiError {
        use crate::embeddings::EmbedError::*;
        match e {
            Invalid(i) => i.into(),
            Budget(b) => b.into(),
            Failed(f) => match f.limited {
                Some(le) => le.into(),
                None => provider_error(&f.model, &f.error),
            },
        }
    }
}

impl From<CacheUnavailable> for ApiError {
    fn from(e: CacheUnavailable) -> ApiError {
        ApiError::unavailable(Code::CacheUnavailable, e.to_string(), 1)
    }
}

impl From<AccountantUnavailable> for ApiError {
    fn from(e: AccountantUnavailable) -> ApiError {
        ApiError::unavailable(Code::AccountantUnavailable, e.to_string(), 1)
    }
}

/// Map a provider failure of `model` to the API error an OpenAI SDK understands.
pub fn provider_error(model: &str, e: &ProviderError) -> ApiError {
    match e {
        ProviderError::Timeout(d) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            Code::UpstreamTimeout,
            format!("model {model} did not answer within {} ms", d.as_millis()),
        ),
        ProviderError::Connect(_) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            Code::UpstreamUnavailable,
            format!("cannot reach the provider of model {model}"),
        ),
        ProviderError::RateLimited { retry_after } => ApiError::too_many(
            Code::RateLimited,
            format!("the provider of model {model} is rate limiting; retry later"),
            retry_after.map(|d| d.as_secs().max(1)).unwrap_or(1),
        ),
        ProviderError::Server { status, .. } => ApiError::new(
            StatusCode::BAD_GATEWAY,
            Code::UpstreamError,
            format!("the provider of model {model} failed with status {status}"),
        ),
        ProviderError::BadRequest { status, message } => ApiError::new(
            StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
            Code::UpstreamRejected,
            format!("model {model}: {message}"),
        ),
        ProviderError::Decode(_) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            Code::UpstreamInvalid,
            format!("the provider of model {model} sent an unreadable answer"),
        ),
    }
}

/// `Json<T>` whose rejections are [`ApiError`]s: 400 bad JSON, 413 body too large, 415 wrong
/// content type, 422 wrong fields (the message names the field).
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(r) => Err(rejection(r)),
        }
    }
}

fn rejection(r: JsonRejection) -> ApiError {
    let text = r.body_text();
    match r {
        JsonRejection::JsonDataError(_) => ApiError::unprocessable(Code::InvalidField, text),
        JsonRejection::JsonSyntaxError(_) => ApiError::bad_request(Code::InvalidJson, text),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::UnsupportedMediaType,
            "send the body as JSON with `Content-Type: application/json`",
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::BodyTooLarge,
            "the request body is larger than server.max_body_mb allows",
        ),
        other => ApiError::new(other.status(), Code::InvalidBody, text),
    }
}

/// `Path<T>` whose rejections are [`ApiError`]s: 400 `invalid_path` (e.g. a segment that is not
/// UTF-8 once percent-decoded, `GET /api/tasks/%ff%fe`).
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    axum::extract::Path<T>: FromRequestParts<S, Rejection = PathRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(r) => Err(ApiError::bad_request(Code::InvalidPath, r.body_text())),
        }
    }
}

/// `Query<T>` whose rejections are [`ApiError`]s: 400 `invalid_query` naming what is wrong.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    axum::extract::Query<T>: FromRequestParts<S, Rejection = QueryRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(r) => Err(ApiError::bad_request(Code::InvalidQuery, r.body_text())),
        }
    }
}

/// Longest plain-text error body kept as the message when [`json_errors`] rewrites an answer.
pub const PLAIN_ERROR_MESSAGE_MAX: usize = 2048;

/// The code of an error answer that came without one (pure): by its status.
pub fn code_for_status(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::InvalidRequest,
        401 => Code::Unauthorized,
        404 => Code::NotFound,
        405 => Code::MethodNotAllowed,
        413 => Code::BodyTooLarge,
        415 => Code::UnsupportedMediaType,
        422 => Code::InvalidField,
        429 => Code::RateLimited,
        503 => Code::Overloaded,
        _ => Code::Internal,
    }
}

/// Response middleware (`axum::middleware::map_response`): an error answer (4xx/5xx) that is not
/// JSON becomes `{"error":{"code","message"}}` with the same status and headers, its text kept as
/// the message (or the status's reason when it had none). JSON answers pass unchanged.
pub async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = match axum::body::to_bytes(body, PLAIN_ERROR_MESSAGE_MAX).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_string()
    } else {
        text
    };
    let body = ErrorBody::new(code_for_status(status).as_str(), message);
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_for_bare_statuses() {
        let cases = [
            (400, "invalid_request"),
            (401, "unauthorized"),
            (404, "not_found"),
            (405, "method_not_allowed"),
            (413, "body_too_large"),
            (415, "unsupported_media_type"),
            (422, "invalid_field"),
            (500, "internal"),
            (418, "internal"),
        ];
        for (status, want) in cases {
            let got = code_for_status(StatusCode::from_u16(status).unwrap_or_default());
            assert_eq!(got.as_str(), want, "{status}");
        }
    }

    #[tokio::test]
    async fn plain_error_answers_become_json() {
        let plain = (StatusCode::BAD_REQUEST, "Invalid URL: bad").into_response();
        let out = json_errors(plain).await;
        assert_eq!(out.status(), StatusCode::BAD_REQUEST);
        let b = axum::body::to_bytes(out.into_body(), 1 << 16)
            .await
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
        assert_eq!(v["error"]["code"], "invalid_request", "{v}");
        assert_eq!(v["error"]["message"], "Invalid URL: bad", "{v}");

        let bare = StatusCode::NOT_FOUND.into_response();
        let out = json_errors(bare).await;
        let b = axum::body::to_bytes(out.into_body(), 1 << 16)
            .await
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
        assert_eq!(v["error"]["code"], "not_found", "{v}");

        let ok = (StatusCode::OK, "fine").into_response();
        let out = json_errors(ok).await;
        assert_eq!(out.status(), StatusCode::OK);
        let b = axum::body::to_bytes(out.into_body(), 1 << 16)
            .await
            .unwrap_or_default();
        assert_eq!(&b[..], b"fine");
    }
}

//! `ApiError`: every failure the API reports, as status + stable code + human message, and the
//! JSON extractor that turns body rejections into the same shape.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use openclaw_proto::ErrorBody;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.to_string(),
            message: message.into(),
            retry_after_s: None,
        }
    }
    pub fn bad_request(code: &str, m: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, code, m)
    }
    pub fn unprocessable(code: &str, m: impl Into<String>) -> ApiError {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, m)
    }
    pub fn not_found(code: &str, m: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, code, m)
    }
    pub fn conflict(code: &str, m: impl Into<String>) -> ApiError {
        Self::new(StatusCode::CONFLICT, code, m)
    }
    pub fn unauthorized(m: impl Into<String>) -> ApiError {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", m)
    }
    pub fn unavailable(code: &str, m: impl Into<String>, retry_after_s: u64) -> ApiError {
        ApiError {
            retry_after_s: Some(retry_after_s),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, m)
        }
    }
    pub fn too_many(code: &str, m: impl Into<String>, retry_after_s: u64) -> ApiError {
        ApiError {
            retry_after_s: Some(retry_after_s),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, code, m)
        }
    }
    pub fn internal(code: &str, m: impl Into<String>) -> ApiError {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, code, m)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody::new(self.code, self.message);
        let mut resp = (self.status, axum::Json(body)).into_response();
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

impl From<crate::tasks::ledger::LedgerError> for ApiError {
    fn from(e: crate::tasks::ledger::LedgerError) -> ApiError {
        use crate::tasks::ledger::LedgerError::*;
        match e {
            NotFound(id) => ApiError::not_found("task_not_found", format!("no task with id {id}")),
            WrongState { id, status } => {
                ApiError::conflict("task_state", format!("task {id} is already {status}"))
            }
            Fenced { id, .. } | NotOwner { id, .. } => {
                ApiError::conflict("task_state", format!("task {id} changed owner"))
            }
            Unavailable(why) => ApiError::unavailable(
                "cluster_unavailable",
                format!("the cluster cannot commit right now ({why}); retry"),
                1,
            ),
            Storage(e) => {
                tracing::error!(error = %e, "storage error");
                ApiError::unavailable("storage_unavailable", "the node's store failed; retry", 1)
            }
        }
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
        JsonRejection::JsonDataError(_) => ApiError::unprocessable("invalid_field", text),
        JsonRejection::JsonSyntaxError(_) => ApiError::bad_request("invalid_json", text),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with `Content-Type: application/json`",
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the request body is larger than server.max_body_mb allows",
        ),
        other => ApiError::new(other.status(), "invalid_body", text),
    }
}

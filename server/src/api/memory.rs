//! `/api/agents/{agent}/memory` over HTTP: list, read, write and remove an agent's memory files
//! (`MEMORY.md`, `memory/<name>.md`, `skills/…`). The work is the agents feature's
//! [`MemoryStore`](crate::agents::memory::MemoryStore) — replicated through Raft in a cluster;
//! this file reads requests and writes responses. A write's body is the file's text (UTF-8).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::Code;
use super::{ApiError, ApiPath, AppState};

/// `GET /api/agents/{agent}/memory`: `{"agent", "files": [{"path", "bytes"}]}`.
pub async fn list(
    State(st): State<AppState>,
    ApiPath(agent): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let files = st.app.memory.list(&agent).await?;
    let files: Vec<Value> = files
        .iter()
        .map(|f| json!({"path": f.path, "bytes": f.bytes}))
        .collect();
    Ok(Json(json!({"agent": agent, "files": files})))
}

/// `GET /api/agents/{agent}/memory/{path}`: the file's text (`text/markdown`).
pub async fn get_file(
    State(st): State<AppState>,
    ApiPath((agent, path)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    match st.app.memory.get(&agent, &path).await? {
        Some(text) => Ok((
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            text,
        )
            .into_response()),
        None => Err(not_found(&agent, &path)),
    }
}

/// `PUT /api/agents/{agent}/memory/{path}`: write the file (committed in a cluster before the
/// answer); `{"agent", "path", "bytes"}`.
pub async fn put_file(
    State(st): State<AppState>,
    ApiPath((agent, path)): ApiPath<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let text = String::from_utf8(body.to_vec()).map_err(|_| {
        ApiError::unprocessable(Code::InvalidBody, "a memory file must be UTF-8 text")
    })?;
    let bytes = text.len();
    st.app.memory.put(&agent, &path, text).await?;
    Ok(Json(json!({"agent": agent, "path": path, "bytes": bytes})))
}

/// `DELETE /api/agents/{agent}/memory/{path}`: remove it; 404 when there was none.
pub async fn delete_file(
    State(st): State<AppState>,
    ApiPath((agent, path)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    if st.app.memory.delete(&agent, &path).await? {
        Ok(Json(json!({"agent": agent, "path": path, "deleted": true})))
    } else {
        Err(not_found(&agent, &path))
    }
}

fn not_found(agent: &str, path: &str) -> ApiError {
    ApiError::not_found(
        Code::MemoryNotFound,
        format!("agent {agent} has no memory file {path}"),
    )
}

//! `/api/agents/{agent}/memory` over HTTP: list, read, write and remove an agent's memory files
//! (`MEMORY.md`, `memory/<name>.md`, `skills/…`). The work is the agents feature's
//! [`MemoryStore`](crate::agents::memory::MemoryStore) — replicated through Raft in a cluster;
//! this file reads requests and writes responses. A write's body is the file's text (UTF-8).
//! Also the knowledge cache's views of this node's index: `GET .../memory-index` and
//! `GET .../memory-search?q=…&k=…` ([`crate::knowledge::Knowledge`]).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::Code;
use super::{ApiError, ApiPath, ApiQuery, AppState};

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

fn known_agent(st: &AppState, agent: &str) -> Result<(), ApiError> {
    if st.app.knowledge.knows(agent) {
        Ok(())
    } else {
        Err(ApiError::not_found(
            Code::UnknownAgent,
            format!("agent `{agent}` is not configured"),
        ))
    }
}

/// `GET /api/agents/{agent}/memory-index`: files, chunks, bytes and the last build of this
/// node's index of the agent's memory.
pub async fn index(
    State(st): State<AppState>,
    ApiPath(agent): ApiPath<String>,
) -> Result<Json<openclaw_proto::memory::MemoryIndexView>, ApiError> {
    known_agent(&st, &agent)?;
    Ok(Json(st.app.knowledge.status(&agent)))
}

/// The longest `q` of a memory search, in bytes.
pub const SEARCH_QUERY_MAX_BYTES: usize = 4096;

#[derive(Debug, serde::Deserialize)]
pub struct SearchQuery {
    pub q: Option<String>,
    pub k: Option<usize>,
}

/// `GET /api/agents/{agent}/memory-search?q=…&k=…`: the best `k` (1..=50, default 10) chunks
/// for `q`, with their hybrid scores.
pub async fn search(
    State(st): State<AppState>,
    ApiPath(agent): ApiPath<String>,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> Result<Json<openclaw_proto::memory::MemorySearchView>, ApiError> {
    known_agent(&st, &agent)?;
    let query = q.q.unwrap_or_default();
    if query.trim().is_empty() || query.len() > SEARCH_QUERY_MAX_BYTES {
        return Err(ApiError::bad_request(
            Code::InvalidRequest,
            format!("`q` must be 1 to {SEARCH_QUERY_MAX_BYTES} bytes of text"),
        ));
    }
    let max = crate::knowledge::SEARCH_K_MAX;
    let k = q.k.unwrap_or(10);
    if k == 0 || k > max {
        return Err(ApiError::bad_request(
            Code::InvalidRequest,
            format!("`k` must be 1 to {max}"),
        ));
    }
    Ok(Json(st.app.knowledge.search(&agent, &query, k).await))
}

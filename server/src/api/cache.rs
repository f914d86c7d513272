//! Request-cache operator endpoints: `GET /api/cache` (stats), `POST /api/cache/prune` (drop
//! stale entries) and `DELETE /api/cache` (drop everything). They ask the cache actor, which
//! owns the cache; `openclaw-node cache stats|prune|clear` calls them.

use axum::extract::State;
use axum::Json;
use openclaw_proto::api::{CacheRemoved, CacheStats};

use super::{ApiError, AppState};
use crate::cache::store::{CacheMsg, CACHE_CALL_TIMEOUT_MS};

fn unavailable() -> ApiError {
    ApiError::unavailable(
        "cache_unavailable",
        "the cache actor is not running (restarting?); retry shortly",
        1,
    )
}

pub async fn stats(State(st): State<AppState>) -> Result<Json<CacheStats>, ApiError> {
    let actor = st.rt.handles.cache().ok_or_else(unavailable)?;
    ractor::call_t!(actor, CacheMsg::Stats, CACHE_CALL_TIMEOUT_MS)
        .map(Json)
        .map_err(|_| unavailable())
}

pub async fn prune(State(st): State<AppState>) -> Result<Json<CacheRemoved>, ApiError> {
    let actor = st.rt.handles.cache().ok_or_else(unavailable)?;
    ractor::call_t!(actor, CacheMsg::Prune, CACHE_CALL_TIMEOUT_MS)
        .map(|removed| Json(CacheRemoved { removed }))
        .map_err(|_| unavailable())
}

pub async fn clear(State(st): State<AppState>) -> Result<Json<CacheRemoved>, ApiError> {
    let actor = st.rt.handles.cache().ok_or_else(unavailable)?;
    ractor::call_t!(actor, CacheMsg::Clear, CACHE_CALL_TIMEOUT_MS)
        .map(|removed| Json(CacheRemoved { removed }))
        .map_err(|_| unavailable())
}

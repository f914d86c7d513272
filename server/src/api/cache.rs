//! Request-cache operator endpoints: `GET /api/cache` (stats), `POST /api/cache/prune` (drop
//! stale entries) and `DELETE /api/cache` (drop everything), through the cache's handle;
//! `openclaw-node cache stats|prune|clear` calls them.

use axum::extract::State;
use axum::Json;
use openclaw_proto::api::{CacheRemoved, CacheStats};

use super::{ApiError, AppState};

pub async fn stats(State(st): State<AppState>) -> Result<Json<CacheStats>, ApiError> {
    Ok(Json(st.app.cache.stats().await?))
}

pub async fn prune(State(st): State<AppState>) -> Result<Json<CacheRemoved>, ApiError> {
    let removed = st.app.cache.prune().await?;
    Ok(Json(CacheRemoved { removed }))
}

pub async fn clear(State(st): State<AppState>) -> Result<Json<CacheRemoved>, ApiError> {
    let removed = st.app.cache.clear().await?;
    Ok(Json(CacheRemoved { removed }))
}

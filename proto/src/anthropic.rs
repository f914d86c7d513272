//! Anthropic Messages API DTOs (`POST /v1/messages`), used by the anthropic provider and served
//! by the simulator so the provider is tested over real HTTP.

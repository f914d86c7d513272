//! The request cache (§18.3): keys and entries (pure), and the store actor.

pub mod keys;
pub mod store;

//! openclaw-node: a gateway that runs a team's AI agents.
//!
//! The node is a library; `main.rs` only parses the CLI, loads the config and calls
//! [`node::run`]. Tests start real nodes with the same function. See `ARCHITECTURE.md` for the
//! map and the invariants.

pub mod activity;
pub mod actors;
pub mod api;
pub mod audit;
pub mod breaker;
pub mod budget;
pub mod cache;
pub mod calls;
pub mod cluster;
pub mod config;
pub mod fallback;
pub mod ledger;
pub mod limits;
pub mod metrics;
pub mod node;
pub mod prompt;
pub mod providers;
pub mod ratelimit;
pub mod reload;
pub mod routing;
pub mod runtime;
pub mod scheduler;
pub mod sim;
pub mod storage;
pub mod tokens;
pub mod util;
pub mod worker;

//! openclaw-server: the node as a library — a gateway that runs a team's AI agents.
//!
//! The binary (`openclaw-node`, the root package) parses the CLI, loads the config and calls
//! [`node::run`]. Tests start real nodes with the same function. See `ARCHITECTURE.md` for the
//! map, the import rules and the invariants.
//!
//! Feature folders (each owns its pure rules, its actor, its handle and its errors): [`tasks`],
//! [`calls`], [`budget`], [`limits`], [`cache`], [`agents`], [`embeddings`], [`knowledge`] (pure parts only so far), [`sim`]. Below them the base:
//! [`config`], [`storage`], [`audit`], [`metrics`], [`tokens`], [`activity`], [`supervisor`],
//! [`util`]. Above them: [`api`] (HTTP only), [`cluster`] (cluster mode: implements the
//! features' seams over Raft) and [`node`] (the wiring).

pub mod activity;
pub mod agents;
pub mod api;
pub mod audit;
pub mod budget;
pub mod cache;
pub mod calls;
pub mod channels;
pub mod cluster;
pub mod config;
pub mod context;
pub mod cron;
pub mod embeddings;
pub mod knowledge;
pub mod limits;
pub mod metrics;
pub mod node;
pub mod sessions;
pub mod sim;
pub mod storage;
pub mod supervisor;
pub mod tasks;
pub mod tokens;
pub mod util;

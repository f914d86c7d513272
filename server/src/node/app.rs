//! The wired node as the HTTP API sees it: one handle per feature, built once by
//! [`crate::node::start`]. Features never see `App`; only `api/` and `node/` do.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::agents::Agents;
use crate::budget::Budget;
use crate::cache::RequestCache;
use crate::calls::Calls;
use crate::cluster::Cluster;
use crate::config::reload::ConfigSource;
use crate::config::ConfigCell;
use crate::cron::Cron;
use crate::limits::RateLimits;
use crate::node::health::Health;
use crate::sessions::Sessions;
use crate::tasks::Tasks;

/// Every feature's handle, and what the node itself owns.
#[derive(Clone)]
pub struct App {
    pub cfg: ConfigCell,
    /// This node's name (its id in a cluster).
    pub node: String,
    pub tasks: Tasks,
    pub calls: Calls,
    pub budget: Budget,
    pub limits: RateLimits,
    pub cache: RequestCache,
    pub agents: Agents,
    /// The knowledge cache (agent memory retrieval).
    pub knowledge: crate::knowledge::Knowledge,
    pub sessions: Sessions,
    /// Agent memory written through the API (replicated in a cluster).
    pub memory: Arc<dyn crate::agents::memory::MemoryStore>,
    pub cron: Cron,
    pub health: Arc<Health>,
    /// This node's part of the cluster (cluster mode only).
    pub cluster: Option<Arc<Cluster>>,
    /// The Feishu channel (`channels.feishu` set).
    pub feishu: Option<Arc<crate::channels::feishu::Feishu>>,
    /// The config file to hot-reload from (None: the config came from code).
    pub config_source: Option<ConfigSource>,
    /// Cancelled when the node shuts down.
    pub shutdown: CancellationToken,
}

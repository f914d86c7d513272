//! The node's shared context: what handlers, actors and workers all reach.
//!
//! It holds no policy of its own. State that must survive an actor restart lives here (the
//! running set, health), not in actor state.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use openclaw_proto::Priority;
use ractor::ActorRef;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::agents::agent::AgentMsg;
use crate::audit::AuditLog;
use crate::budget::accountant::{AccountantMsg, BudgetGate};
use crate::cache::store::CacheMsg;
use crate::calls::providers::ProviderSet;
use crate::config::Config;
use crate::storage::Store;
use crate::tasks::delivery::DeliveryMsg;
use crate::tasks::ledger::Ledger;
use crate::tasks::scheduler::SchedulerMsg;

/// Capacity of the task-finished broadcast that wakes long-polls. A waiter that lags re-reads
/// the store, so nothing is missed.
pub const TASK_EVENTS_MAX: usize = 4096;

/// Why a running task was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Preempted,
    Cancelled,
    Shutdown,
    /// Another node owns the task now (it was re-owned after this node missed its lease).
    Revoked,
}

/// One running task, shared between the scheduler (which decides) and its worker (which acts).
#[derive(Debug, Clone)]
pub struct RunningSlot {
    pub id: String,
    pub agent: String,
    pub priority: Priority,
    pub started_seq: u64,
    pub started: Instant,
    pub cancel: CancellationToken,
    pub stop: Arc<Mutex<Option<StopReason>>>,
}

impl RunningSlot {
    /// Ask the worker to stop; the first reason wins.
    pub fn request_stop(&self, reason: StopReason) -> bool {
        let mut stop = self.stop.lock().unwrap_or_else(|p| p.into_inner());
        if stop.is_some() {
            return false;
        }
        *stop = Some(reason);
        self.cancel.cancel();
        true
    }

    pub fn stop_reason(&self) -> Option<StopReason> {
        *self.stop.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Running tasks by id. Survives scheduler restarts (workers outlive the actor).
#[derive(Debug, Default)]
pub struct RunningSet {
    inner: Mutex<HashMap<String, RunningSlot>>,
}

impl RunningSet {
    pub fn insert(&self, slot: RunningSlot) {
        self.lock().insert(slot.id.clone(), slot);
    }
    pub fn remove(&self, id: &str) -> Option<RunningSlot> {
        self.lock().remove(id)
    }
    pub fn get(&self, id: &str) -> Option<RunningSlot> {
        self.lock().get(id).cloned()
    }
    pub fn len(&self) -> usize {
        self.lock().len()
    }
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
    pub fn snapshot(&self) -> Vec<RunningSlot> {
        self.lock().values().cloned().collect()
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, RunningSlot>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Current refs of the supervised actors (replaced when the supervisor restarts one).
#[derive(Default)]
pub struct ActorHandles {
    scheduler: RwLock<Option<ActorRef<SchedulerMsg>>>,
    delivery: RwLock<Option<ActorRef<DeliveryMsg>>>,
    agents: RwLock<HashMap<String, ActorRef<AgentMsg>>>,
    cache: RwLock<Option<ActorRef<CacheMsg>>>,
    /// Until when (monotonic ms) each limiter scope is backed off after a provider 429; written
    /// by the limiter, read by `limits::acquire` to send calls of a model that has no limits of
    /// its own through its limiter while it is backed off.
    backoff_until: std::sync::Mutex<HashMap<String, u64>>,
    /// Rate limiters by scope (a model name or `global`).
    limiters: RwLock<HashMap<String, ActorRef<crate::limits::limiter::LimiterMsg>>>,
    accountant: RwLock<Option<ActorRef<AccountantMsg>>>,
}

impl ActorHandles {
    pub fn scheduler(&self) -> Option<ActorRef<SchedulerMsg>> {
        read(&self.scheduler).clone()
    }
    pub fn set_scheduler(&self, r: ActorRef<SchedulerMsg>) {
        *write(&self.scheduler) = Some(r);
    }
    pub fn delivery(&self) -> Option<ActorRef<DeliveryMsg>> {
        read(&self.delivery).clone()
    }
    pub fn set_delivery(&self, r: ActorRef<DeliveryMsg>) {
        *write(&self.delivery) = Some(r);
    }
    pub fn agent(&self, name: &str) -> Option<ActorRef<AgentMsg>> {
        read(&self.agents).get(name).cloned()
    }
    pub fn set_agent(&self, name: &str, r: ActorRef<AgentMsg>) {
        write(&self.agents).insert(name.to_string(), r);
    }
    pub fn cache(&self) -> Option<ActorRef<CacheMsg>> {
        read(&self.cache).clone()
    }
    pub fn set_cache(&self, r: ActorRef<CacheMsg>) {
        *write(&self.cache) = Some(r);
    }
    pub fn limiter(&self, scope: &str) -> Option<ActorRef<crate::limits::limiter::LimiterMsg>> {
        read(&self.limiters).get(scope).cloned()
    }
    pub fn set_limiter(&self, scope: &str, r: ActorRef<crate::limits::limiter::LimiterMsg>) {
        write(&self.limiters).insert(scope.to_string(), r);
    }
    pub fn set_backoff_until(&self, scope: &str, until_mono_ms: u64) {
        self.backoff_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(scope.to_string(), until_mono_ms);
    }
    /// Is `scope` backed off at `now_mono_ms`?
    pub fn backed_off(&self, scope: &str, now_mono_ms: u64) -> bool {
        self.backoff_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(scope)
            .is_some_and(|until| now_mono_ms < *until)
    }
    /// Every limiter scope that was started, sorted.
    pub fn limiter_scopes(&self) -> Vec<String> {
        let mut v: Vec<String> = read(&self.limiters).keys().cloned().collect();
        v.sort();
        v
    }
    pub fn accountant(&self) -> Option<ActorRef<AccountantMsg>> {
        read(&self.accountant).clone()
    }
    pub fn set_accountant(&self, r: ActorRef<AccountantMsg>) {
        *write(&self.accountant) = Some(r);
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}
fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// Readiness: false until start-up finished; children the supervisor gave up on are listed.
#[derive(Debug, Default)]
pub struct Health {
    started: std::sync::atomic::AtomicBool,
    failed: Mutex<BTreeSet<String>>,
}

impl Health {
    pub fn set_started(&self) {
        self.started.store(true, Ordering::SeqCst);
    }
    pub fn mark_failed(&self, child: &str) {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(child.to_string());
    }
    pub fn clear_failed(&self, child: &str) {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(child);
    }
    /// `Ok` when ready, else the reasons.
    pub fn ready(&self) -> Result<(), Vec<String>> {
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        let mut why: Vec<String> = failed
            .iter()
            .map(|c| format!("actor {c} stopped after repeated crashes"))
            .collect();
        if !self.started.load(Ordering::SeqCst) {
            why.push("node is starting".into());
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why)
        }
    }
}

/// Everything shared by the node's parts.
pub struct Runtime {
    /// The current configuration; replaced whole on a reload (read it with [`Runtime::cfg`]).
    pub config: RwLock<Arc<Config>>,
    pub node: String,
    pub data_dir: std::path::PathBuf,
    pub ledger: Arc<dyn Ledger>,
    pub store: Store,
    pub providers: ProviderSet,
    pub http: reqwest::Client,
    pub audit: AuditLog,
    pub events: broadcast::Sender<String>,
    pub running: RunningSet,
    pub handles: ActorHandles,
    pub health: Health,
    /// Circuit breaker per model.
    pub breakers: crate::calls::breaker::Breakers,
    /// The budget gate (paused / downgraded scopes), written by the accountant actor.
    pub budget: BudgetGate,
    /// Waiting tasks (kept by the scheduler), checked by admission against `server.queue_max`.
    pub queued: AtomicUsize,
    /// Node start, for monotonic milliseconds.
    pub epoch: Instant,
    /// Cancelled when the node shuts down.
    pub shutdown: CancellationToken,
    /// The config file to hot-reload from (None: the config came from code, nothing to watch).
    pub config_source: Option<crate::config::reload::ConfigSource>,
    /// This node's part of the cluster (cluster mode only).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl Runtime {
    /// The configuration in force now. Hold the `Arc` for one decision, not across waits.
    pub fn cfg(&self) -> Arc<Config> {
        read(&self.config).clone()
    }

    /// Replace the configuration (hot reload). Callers validate it first.
    pub fn set_cfg(&self, cfg: Config) {
        *write(&self.config) = Arc::new(cfg);
    }

    /// Monotonic milliseconds since the node started.
    pub fn mono_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// Wall-clock Unix milliseconds (stamped into records by the node that changes them).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

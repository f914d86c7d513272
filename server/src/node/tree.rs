//! The node's supervision tree: which actors run, with exactly which handles each gets.
//!
//! ```text
//! supervisor                     restarts a crashed child with back-off; gives up after
//! │                              `server.restart_max` crashes in `restart_window_seconds`
//! │                              (logged, and `/ready` answers 503 naming the child)
//! ├── scheduler                  tasks/: the ready queue, worker slots, preemption
//! │     └ spawns worker tasks    (tokio tasks, not actors: provider I/O never runs in a handler)
//! ├── agent:<name> (one each)    agents/: the agent's workspace → prompt and token breakdown
//! ├── delivery                   tasks/: callback POSTs with retries; parks failures
//! ├── cache                      cache/: the request cache's sled tree + in-memory LRU index
//! ├── limiter:<scope>            limits/: one per configured model, plus `global` (when it has
//! │                              limits): sliding-window grants in priority order, 429 back-off
//! └── accountant                 budget/: counters, reservations, thresholds, the gate
//! ```
//!
//! Actor state is rebuildable: the scheduler reloads its queue from the ledger on (re)start,
//! running tasks live in the tasks' running set (workers outlive a scheduler crash), pending
//! deliveries live in the store. Callers reach actors through their feature's handle, whose
//! `Current` cell each child's start function updates on every (re)start.

use std::path::PathBuf;
use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorRef, SpawnErr};

use crate::agents::agent::{self, AgentArgs};
use crate::budget::accountant::{self, AccountantArgs};
use crate::cache::store::{self as cache, CacheArgs};
use crate::config::Config;
use crate::limits::limiter::{self, LimiterArgs};
use crate::limits::RateLimits;
use crate::node::health::Health;
use crate::supervisor::{self, ChildSpec, Supervisor, SupervisorArgs, SupervisorMsg};
use crate::tasks::delivery::{self, DeliveryArgs};
use crate::tasks::scheduler;
use crate::tasks::worker::Runner;

/// Names of the supervised children.
pub const SCHEDULER: &str = "scheduler";
pub const DELIVERY: &str = "delivery";
pub const CACHE: &str = "cache";
pub const ACCOUNTANT: &str = "accountant";

/// The rate-limit scopes with any limit at start: `global`, then every configured model (one
/// without limits still backs off after a provider 429; calls only go through it while it is
/// backed off, see `RateLimits::acquire`).
pub fn limiter_scopes(cfg: &Config) -> Vec<String> {
    let mut v = Vec::new();
    if limiter::scope_limits(cfg, limiter::GLOBAL).any() {
        v.push(limiter::GLOBAL.to_string());
    }
    v.extend(cfg.models.keys().cloned());
    v
}

/// What the children are started with.
pub struct TreeArgs {
    pub runner: Runner,
    pub delivery: DeliveryArgs,
    pub cache: CacheArgs,
    pub accountant: AccountantArgs,
    /// (agent name, workspace dir).
    pub agents: Vec<(String, PathBuf)>,
    pub limits: RateLimits,
    pub policy: supervisor::RestartPolicy,
    pub health: Arc<Health>,
}

/// A child whose start function spawns `actor` with a clone of `args` and records the new ref
/// with `set`.
fn child<A, F>(name: &str, actor: A, args: A::Arguments, set: F) -> ChildSpec
where
    A: Actor + Clone + Sync,
    A::Arguments: Clone + Sync,
    F: Fn(ActorRef<A::Msg>) + Send + Sync + 'static,
{
    let set = Arc::new(set);
    ChildSpec::new(name, move |sup: ActorCell| {
        let (actor, args, set) = (actor.clone(), args.clone(), set.clone());
        Box::pin(async move {
            let (r, _) = Actor::spawn_linked(None, actor, args, sup).await?;
            set(r.clone());
            Ok(r.get_cell())
        })
    })
}

/// Start the supervisor and its children.
pub async fn start_tree(a: TreeArgs) -> Result<ActorRef<SupervisorMsg>, SpawnErr> {
    let mut children = Vec::new();
    let current = a.runner.tasks.scheduler.clone();
    children.push(child(
        SCHEDULER,
        scheduler::Scheduler,
        a.runner.clone(),
        move |r| current.set(r),
    ));
    let current = a.runner.delivery.clone();
    children.push(child(DELIVERY, delivery::Delivery, a.delivery, move |r| {
        current.set(r)
    }));
    let current = a.runner.cache.actor.clone();
    children.push(child(CACHE, cache::Cache, a.cache, move |r| current.set(r)));
    let current = a.runner.budget.accountant.clone();
    children.push(child(
        ACCOUNTANT,
        accountant::Accountant,
        a.accountant,
        move |r| current.set(r),
    ));
    for (name, workspace) in a.agents {
        let actors = a.runner.agents.actors.clone();
        let args = AgentArgs {
            name: name.clone(),
            workspace,
        };
        children.push(child(
            &crate::agents::child_name(&name),
            agent::Agent,
            args,
            move |r| actors.set(&name, r),
        ));
    }
    for scope in limiter_scopes(&a.limits.cfg.get()) {
        let limiters = a.limits.limiters.clone();
        let args = LimiterArgs {
            cfg: a.limits.cfg.clone(),
            mono: a.limits.mono,
            backoffs: a.limits.backoffs.clone(),
            scope: scope.clone(),
        };
        children.push(child(
            &format!("limiter:{scope}"),
            limiter::Limiter,
            args,
            move |r| limiters.set(&scope, r),
        ));
    }
    let args = SupervisorArgs {
        children,
        policy: a.policy,
        health: a.health,
    };
    // Unnamed: ractor's registry is process-wide, and tests run several nodes in one process.
    let (sup, _) = Supervisor::spawn(None, args).await?;
    Ok(sup)
}

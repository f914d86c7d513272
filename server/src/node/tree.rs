//! The node's actors (ractor) and their supervision tree.
//!
//! ```text
//! supervisor                     restarts a crashed child with back-off; gives up after
//! │                              `server.restart_max` crashes in `restart_window_seconds`
//! │                              (logged, and `/ready` answers 503 naming the child)
//! ├── scheduler                  the ready queue, worker slots, preemption
//! │     └ spawns worker tasks    (tokio tasks, not actors: provider I/O never runs in a handler)
//! ├── agent:<name> (one each)    the agent's workspace → system prompt and token breakdown
//! ├── delivery                   callback POSTs with retries; parks failures
//! ├── cache                      the request cache: sled `cache` tree + in-memory LRU index
//! ├── limiter:<scope>            one per model with limits, plus `global` (when it has any):
//! │                              sliding-window grants in priority order, 429 back-off
//! └── accountant                 budget counters, reservations, thresholds, pause/downgrade gate
//! ```
//!
//! Actor state is rebuildable: the scheduler reloads its queue from the ledger on (re)start,
//! running tasks live in `Runtime::running` (workers outlive a scheduler crash), pending
//! deliveries live in the store. Handlers reach actors through `Runtime::handles`, which the
//! supervisor updates on every (re)start.

use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorRef, SpawnErr};

use crate::agents::agent;
use crate::budget::accountant;
use crate::cache::store as cache;
use crate::limits::limiter;
use crate::runtime::Runtime;
use crate::supervisor::{self, ChildSpec, Supervisor, SupervisorArgs, SupervisorMsg};
use crate::tasks::{delivery, scheduler};

/// Names of the supervised children.
pub const SCHEDULER: &str = "scheduler";
pub const DELIVERY: &str = "delivery";
pub const CACHE: &str = "cache";
pub const ACCOUNTANT: &str = "accountant";
pub fn agent_child_name(agent: &str) -> String {
    format!("agent:{agent}")
}

/// The agents this node runs: `main` always, plus every configured one.
pub fn agent_names(rt: &Runtime) -> Vec<String> {
    let mut names: Vec<String> = rt.cfg().agents.keys().cloned().collect();
    if !names.iter().any(|n| n == "main") {
        names.insert(0, "main".to_string());
    }
    names
}

/// The rate-limit scopes with any limit at start: `global`, then the limited models.
pub fn limiter_scopes(rt: &Runtime) -> Vec<String> {
    let cfg = rt.cfg();
    let mut v = Vec::new();
    if limiter::scope_limits(&cfg, limiter::GLOBAL).any() {
        v.push(limiter::GLOBAL.to_string());
    }
    // Every configured model gets a limiter: one without limits still backs off after a
    // provider 429 (calls only go through it while it is backed off; see `limits::acquire`).
    v.extend(cfg.models.keys().cloned());
    v
}

/// Start the supervisor and its children.
pub async fn start_tree(rt: Arc<Runtime>) -> Result<ActorRef<SupervisorMsg>, SpawnErr> {
    let mut children = Vec::new();
    {
        let rt = rt.clone();
        children.push(ChildSpec::new(SCHEDULER, move |sup: ActorCell| {
            let rt = rt.clone();
            Box::pin(async move {
                let (r, _) =
                    Actor::spawn_linked(None, scheduler::Scheduler, rt.clone(), sup).await?;
                rt.handles.set_scheduler(r.clone());
                Ok(r.get_cell())
            })
        }));
    }
    {
        let rt = rt.clone();
        children.push(ChildSpec::new(DELIVERY, move |sup: ActorCell| {
            let rt = rt.clone();
            Box::pin(async move {
                let (r, _) = Actor::spawn_linked(None, delivery::Delivery, rt.clone(), sup).await?;
                rt.handles.set_delivery(r.clone());
                Ok(r.get_cell())
            })
        }));
    }
    {
        let rt = rt.clone();
        children.push(ChildSpec::new(CACHE, move |sup: ActorCell| {
            let rt = rt.clone();
            Box::pin(async move {
                let (r, _) = Actor::spawn_linked(None, cache::Cache, rt.clone(), sup).await?;
                rt.handles.set_cache(r.clone());
                Ok(r.get_cell())
            })
        }));
    }
    {
        let rt = rt.clone();
        children.push(ChildSpec::new(ACCOUNTANT, move |sup: ActorCell| {
            let rt = rt.clone();
            Box::pin(async move {
                let (r, _) =
                    Actor::spawn_linked(None, accountant::Accountant, rt.clone(), sup).await?;
                rt.handles.set_accountant(r.clone());
                Ok(r.get_cell())
            })
        }));
    }
    for name in agent_names(&rt) {
        let rt = rt.clone();
        let child = agent_child_name(&name);
        children.push(ChildSpec::new(&child, move |sup: ActorCell| {
            let rt = rt.clone();
            let name = name.clone();
            Box::pin(async move {
                let args = agent::AgentArgs {
                    name: name.clone(),
                    workspace: agent::workspace_dir(&rt, &name),
                };
                let (r, _) = Actor::spawn_linked(None, agent::Agent, args, sup).await?;
                rt.handles.set_agent(&name, r.clone());
                Ok(r.get_cell())
            })
        }));
    }
    for scope in limiter_scopes(&rt) {
        let rt = rt.clone();
        children.push(ChildSpec::new(
            &format!("limiter:{scope}"),
            move |sup: ActorCell| {
                let rt = rt.clone();
                let scope = scope.clone();
                Box::pin(async move {
                    let args = limiter::LimiterArgs {
                        rt: rt.clone(),
                        scope: scope.clone(),
                    };
                    let (r, _) = Actor::spawn_linked(None, limiter::Limiter, args, sup).await?;
                    rt.handles.set_limiter(&scope, r.clone());
                    Ok(r.get_cell())
                })
            },
        ));
    }
    let args = SupervisorArgs {
        children,
        policy: supervisor::RestartPolicy::from_config(&rt.cfg().server),
        health: rt.clone(),
    };
    let (sup, _) = Supervisor::spawn(Some("openclaw-supervisor".into()), args).await?;
    Ok(sup)
}

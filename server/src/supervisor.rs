//! The supervisor: starts its children linked to itself and restarts the ones that crash.
//!
//! ractor has no restart strategy of its own (SPEC §6), so this is ours: a crashed child is
//! restarted after `backoff × 2^(n-1)` (n = crashes in the window); after `max_restarts` crashes
//! within `window` it is left stopped, the node logs an error and `/ready` reports it.
//! A child that stops cleanly while the node is not shutting down is treated as a crash.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{
    Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent,
};

use crate::config::ServerConfig;
use crate::metrics::metrics;

type StartFn = dyn Fn(ActorCell) -> Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>>
    + Send
    + Sync;

/// How to (re)start one child.
#[derive(Clone)]
pub struct ChildSpec {
    pub name: String,
    start: Arc<StartFn>,
}

impl ChildSpec {
    pub fn new<F>(name: &str, start: F) -> ChildSpec
    where
        F: Fn(ActorCell) -> Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>>
            + Send
            + Sync
            + 'static,
    {
        ChildSpec {
            name: name.to_string(),
            start: Arc::new(start),
        }
    }
}

/// Restart intensity and back-off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RestartPolicy {
    pub max_restarts: u32,
    pub window: Duration,
    pub backoff: Duration,
}

impl RestartPolicy {
    pub fn from_config(s: &ServerConfig) -> RestartPolicy {
        RestartPolicy {
            max_restarts: s.restart_max,
            window: Duration::from_secs(s.restart_window_seconds),
            backoff: Duration::from_millis(s.restart_backoff_ms),
        }
    }
}

/// What to do after a crash at `now`, given earlier crash times (pure).
#[derive(Debug, Clone, PartialEq)]
pub enum RestartDecision {
    RestartAfter(Duration),
    GiveUp,
}

pub fn decide(
    policy: &RestartPolicy,
    crashes: &mut VecDeque<Instant>,
    now: Instant,
) -> RestartDecision {
    while let Some(&t) = crashes.front() {
        if now.duration_since(t) > policy.window {
            crashes.pop_front();
        } else {
            break;
        }
    }
    crashes.push_back(now);
    let n = crashes.len() as u32;
    if n > policy.max_restarts {
        return RestartDecision::GiveUp;
    }
    let factor = 1u32 << (n.saturating_sub(1)).min(10);
    RestartDecision::RestartAfter(policy.backoff.saturating_mul(factor))
}

/// Where the supervisor reports children it gave up on.
pub trait HealthSink: Send + Sync + 'static {
    fn child_failed(&self, name: &str);
    fn child_running(&self, name: &str);
}

/// The current incarnation of a supervised actor: set by the child's start function at every
/// (re)start, read by the handles that send to it. Cheap to clone (shared cell).
pub struct Current<M: ractor::Message> {
    cell: Arc<std::sync::RwLock<Option<ActorRef<M>>>>,
}

impl<M: ractor::Message> Clone for Current<M> {
    fn clone(&self) -> Self {
        Current {
            cell: self.cell.clone(),
        }
    }
}

impl<M: ractor::Message> Default for Current<M> {
    fn default() -> Self {
        Current {
            cell: Arc::new(std::sync::RwLock::new(None)),
        }
    }
}

impl<M: ractor::Message> Current<M> {
    /// The running actor, if any (None while it restarts, or after the supervisor gave up).
    pub fn get(&self) -> Option<ActorRef<M>> {
        self.cell.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
    pub fn set(&self, r: ActorRef<M>) {
        *self.cell.write().unwrap_or_else(|p| p.into_inner()) = Some(r);
    }
}

/// The current incarnations of a family of supervised actors, by name (agents, limiters).
pub struct CurrentMap<M: ractor::Message> {
    cells: Arc<std::sync::RwLock<std::collections::BTreeMap<String, ActorRef<M>>>>,
}

impl<M: ractor::Message> Clone for CurrentMap<M> {
    fn clone(&self) -> Self {
        CurrentMap {
            cells: self.cells.clone(),
        }
    }
}

impl<M: ractor::Message> Default for CurrentMap<M> {
    fn default() -> Self {
        CurrentMap {
            cells: Arc::new(std::sync::RwLock::new(Default::default())),
        }
    }
}

impl<M: ractor::Message> CurrentMap<M> {
    pub fn get(&self, name: &str) -> Option<ActorRef<M>> {
        self.cells
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }
    pub fn set(&self, name: &str, r: ActorRef<M>) {
        self.cells
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), r);
    }
    /// Every name that was started, sorted.
    pub fn names(&self) -> Vec<String> {
        self.cells
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }
}

pub struct SupervisorArgs<H: HealthSink> {
    pub children: Vec<ChildSpec>,
    pub policy: RestartPolicy,
    pub health: Arc<H>,
}

pub enum SupervisorMsg {
    /// Start (again) the named child.
    Restart(String),
    /// Names of running children and of children given up on.
    Status(RpcReplyPort<SupervisorStatus>),
    /// The node shuts down: stop every child (their `post_stop` runs: the accountant persists
    /// its counters) and wait for them, restarting none; replies when they are gone.
    Shutdown(RpcReplyPort<()>),
}

/// How long a shutdown waits for the children to stop.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);
impl ractor::Message for SupervisorMsg {}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SupervisorStatus {
    pub running: Vec<String>,
    pub failed: Vec<String>,
    pub restarts: u64,
}

struct Child {
    spec: ChildSpec,
    cell: Option<ActorCell>,
    crashes: VecDeque<Instant>,
    gave_up: bool,
}

pub struct SupervisorState<H: HealthSink> {
    children: Vec<Child>,
    /// Set by `Shutdown`: children that exit now are not restarted.
    shutting_down: bool,
    policy: RestartPolicy,
    health: Arc<H>,
    restarts: u64,
}

pub struct Supervisor;

impl<H: HealthSink> Actor for SupervisorGeneric<H> {
    type Msg = SupervisorMsg;
    type State = SupervisorState<H>;
    type Arguments = SupervisorArgs<H>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut children = Vec::new();
        for spec in args.children {
            let cell = (spec.start)(myself.get_cell()).await?;
            children.push(Child {
                spec,
                cell: Some(cell),
                crashes: VecDeque::new(),
                gave_up: false,
            });
        }
        Ok(SupervisorState {
            children,
            shutting_down: false,
            policy: args.policy,
            health: args.health,
            restarts: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Shutdown(reply) => {
                state.shutting_down = true;
                myself
                    .stop_children_and_wait(Some("node shutting down".into()), Some(SHUTDOWN_WAIT))
                    .await;
                let _ = reply.send(());
            }
            SupervisorMsg::Restart(name) => {
                if state.shutting_down {
                    return Ok(());
                }
                let Some(child) = state.children.iter_mut().find(|c| c.spec.name == name) else {
                    return Ok(());
                };
                if child.cell.is_some() {
                    return Ok(());
                }
                match (child.spec.start)(myself.get_cell()).await {
                    Ok(cell) => {
                        tracing::info!(child = %name, "supervisor restarted child");
                        child.cell = Some(cell);
                        state.restarts += 1;
                        metrics()
                            .supervisor_restarts_total
                            .with_label_values(&[child_label(&name)])
                            .inc();
                        state.health.child_running(&name);
                    }
                    Err(e) => {
                        tracing::error!(child = %name, error = %e, "supervisor could not restart child");
                        on_crash(&myself, state, &name);
                    }
                }
            }
            SupervisorMsg::Status(reply) => {
                let status = SupervisorStatus {
                    running: state
                        .children
                        .iter()
                        .filter(|c| c.cell.is_some())
                        .map(|c| c.spec.name.clone())
                        .collect(),
                    failed: state
                        .children
                        .iter()
                        .filter(|c| c.gave_up)
                        .map(|c| c.spec.name.clone())
                        .collect(),
                    restarts: state.restarts,
                };
                let _ = reply.send(status);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match &evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell.clone(), format!("failed: {err}")),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell.clone(),
                format!("stopped: {}", reason.as_deref().unwrap_or("no reason")),
            ),
            _ => return Ok(()),
        };
        let Some(child) = state
            .children
            .iter_mut()
            .find(|c| c.cell.as_ref().map(|x| x.get_id()) == Some(cell.get_id()))
        else {
            return Ok(());
        };
        child.cell = None;
        if state.shutting_down {
            return Ok(());
        }
        let name = child.spec.name.clone();
        tracing::warn!(child = %name, %why, "supervised actor exited");
        on_crash(&myself, state, &name);
        Ok(())
    }
}

/// The supervisor actor, generic over where it reports health (the node's runtime, or a test sink).
pub struct SupervisorGeneric<H>(std::marker::PhantomData<H>);

impl<H> Default for SupervisorGeneric<H> {
    fn default() -> Self {
        SupervisorGeneric(std::marker::PhantomData)
    }
}

impl Supervisor {
    /// Spawn a supervisor for `args`.
    pub async fn spawn<H: HealthSink>(
        name: Option<String>,
        args: SupervisorArgs<H>,
    ) -> Result<(ActorRef<SupervisorMsg>, tokio::task::JoinHandle<()>), SpawnErr> {
        Actor::spawn(name, SupervisorGeneric::<H>::default(), args).await
    }
}

fn on_crash<H: HealthSink>(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState<H>,
    name: &str,
) {
    let Some(child) = state.children.iter_mut().find(|c| c.spec.name == name) else {
        return;
    };
    match decide(&state.policy, &mut child.crashes, Instant::now()) {
        RestartDecision::RestartAfter(delay) => {
            tracing::info!(child = %name, delay_ms = delay.as_millis() as u64, "restarting child after back-off");
            myself.send_after(delay, {
                let name = name.to_string();
                move || SupervisorMsg::Restart(name)
            });
        }
        RestartDecision::GiveUp => {
            child.gave_up = true;
            tracing::error!(
                child = %name,
                max_restarts = state.policy.max_restarts,
                window_s = state.policy.window.as_secs(),
                "child crashed too often; supervisor gives up on it (node not ready)"
            );
            state.health.child_failed(name);
        }
    }
}

/// Metric label for a child: agent children share one label so labels stay bounded.
fn child_label(name: &str) -> &str {
    if name.starts_with("agent:") {
        "agent"
    } else if name.starts_with("limiter:") {
        "limiter"
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn restart_decisions_table() {
        let p = RestartPolicy {
            max_restarts: 3,
            window: Duration::from_secs(10),
            backoff: Duration::from_millis(100),
        };
        let t0 = Instant::now();
        let mut crashes = VecDeque::new();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(
            decide(&p, &mut crashes, at(0)),
            RestartDecision::RestartAfter(Duration::from_millis(100))
        );
        assert_eq!(
            decide(&p, &mut crashes, at(1)),
            RestartDecision::RestartAfter(Duration::from_millis(200))
        );
        assert_eq!(
            decide(&p, &mut crashes, at(2)),
            RestartDecision::RestartAfter(Duration::from_millis(400))
        );
        assert_eq!(decide(&p, &mut crashes, at(3)), RestartDecision::GiveUp);
        // Outside the window the count starts again.
        let mut crashes = VecDeque::from([at(0), at(1), at(2)]);
        assert_eq!(
            decide(&p, &mut crashes, at(30)),
            RestartDecision::RestartAfter(Duration::from_millis(100))
        );
    }

    /// A child that panics when told to.
    struct Crashy;
    struct Boom;
    impl ractor::Message for Boom {}
    impl Actor for Crashy {
        type Msg = Boom;
        type State = ();
        type Arguments = ();
        async fn pre_start(&self, _: ActorRef<Boom>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
        async fn handle(
            &self,
            _: ActorRef<Boom>,
            _: Boom,
            _: &mut (),
        ) -> Result<(), ActorProcessingErr> {
            Err("boom".into())
        }
    }

    #[derive(Default)]
    struct Sink {
        failed: Mutex<Vec<String>>,
    }
    impl HealthSink for Sink {
        fn child_failed(&self, name: &str) {
            self.failed.lock().unwrap().push(name.into());
        }
        fn child_running(&self, _: &str) {}
    }

    #[tokio::test]
    async fn crashed_child_is_restarted_then_given_up_on() {
        let current: Arc<Mutex<Option<ActorRef<Boom>>>> = Arc::default();
        let cur = current.clone();
        let spec = ChildSpec::new("crashy", move |sup| {
            let cur = cur.clone();
            Box::pin(async move {
                let (r, _) = Actor::spawn_linked(None, Crashy, (), sup).await?;
                *cur.lock().unwrap() = Some(r.clone());
                Ok(r.get_cell())
            })
        });
        let sink = Arc::new(Sink::default());
        let (sup, _) = Supervisor::spawn(
            None,
            SupervisorArgs {
                children: vec![spec],
                policy: RestartPolicy {
                    max_restarts: 2,
                    window: Duration::from_secs(60),
                    backoff: Duration::from_millis(10),
                },
                health: sink.clone(),
            },
        )
        .await
        .unwrap();
        let mut seen = Vec::new();
        for _ in 0..3 {
            let child = current.lock().unwrap().clone().unwrap();
            seen.push(child.get_id());
            child.cast(Boom).unwrap();
            // Wait until the supervisor has processed the crash (and maybe restarted).
            for _ in 0..200 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let now = current.lock().unwrap().clone().unwrap().get_id();
                if now != *seen.last().unwrap() || !sink.failed.lock().unwrap().is_empty() {
                    break;
                }
            }
        }
        let status = ractor::call_t!(sup, SupervisorMsg::Status, 1000).unwrap();
        assert_eq!(status.restarts, 2, "{status:?}");
        assert_eq!(status.failed, vec!["crashy".to_string()]);
        assert_eq!(*sink.failed.lock().unwrap(), vec!["crashy".to_string()]);
        seen.dedup();
        assert_eq!(seen.len(), 3, "three distinct incarnations");
        sup.stop(None);
    }
}

//! The scheduler actor: owns the ready queue and the worker slots of this node.
//!
//! Admission happens in the HTTP handler (durable in the ledger first), which then casts
//! `Enqueue`. The scheduler starts a worker task per free slot (`server.workers`), in strict
//! priority order, and preempts when a task at an allowed level waits with every slot busy
//! (see `crate::tasks::queue::choose_victim`). Workers report `Done`; a preempted worker requeues
//! its task in the ledger first and then casts `Enqueue` again.
//!
//! On (re)start the queue is rebuilt from the ledger (queued tasks not already running), so a
//! scheduler crash loses nothing. The handler never does I/O beyond that start-up read.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use openclaw_proto::{Priority, TaskRecord};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio_util::sync::CancellationToken;

use crate::metrics::metrics;
use crate::tasks::queue::{
    choose_victim, may_preempt, session_turn_free, QueueEntry, ReadyQueue, RunningInfo,
};
use crate::tasks::running::{RunningSlot, StopReason};
use crate::tasks::worker::Runner;

pub enum SchedulerMsg {
    /// A task (new, or requeued) is ready to run.
    Enqueue(QueueEntry),
    /// A worker finished with its slot; a task it handed back (preempted, held by the budget)
    /// re-enters the queue in the same step, so no later turn of its session passes it.
    Done {
        id: String,
        requeued: Option<QueueEntry>,
    },
    /// Cancel a task: removed if queued, stopped if running.
    Cancel {
        id: String,
        reply: RpcReplyPort<CancelOutcome>,
    },
    /// Queue depth per level and running count.
    Snapshot(RpcReplyPort<QueueSnapshot>),
    /// The task is no longer this node's (re-owned or cancelled elsewhere): drop it, and stop
    /// its worker if it runs here.
    Revoke { id: String },
    /// Something changed outside (the budget pause was lifted): try to start work.
    Wake,
    /// Fault injection: make the actor fail, so tests exercise the supervisor's restart.
    Crash,
}
impl ractor::Message for SchedulerMsg {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Removed from the queue; the caller records the cancellation in the ledger.
    WasQueued,
    /// Its worker was told to stop and will record the cancellation.
    WasRunning,
    /// Not known here (finished, or never admitted on this node).
    Unknown,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueSnapshot {
    pub depth: [usize; 5],
    pub running: usize,
    pub workers: usize,
}

pub struct SchedulerState {
    rt: Runner,
    queue: ReadyQueue,
    started_seq: u64,
}

#[derive(Clone)]
pub struct Scheduler;

impl Actor for Scheduler {
    type Msg = SchedulerMsg;
    type State = SchedulerState;
    type Arguments = Runner;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        rt: Runner,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut queue = ReadyQueue::new();
        let now = rt.tasks.mono.ms();
        for rec in rt.tasks.ledger.queued()? {
            if rt.tasks.running.get(&rec.id).is_none() {
                queue.push(entry_of(&rec, now));
            }
        }
        let mut state = SchedulerState {
            rt,
            queue,
            started_seq: 0,
        };
        tracing::info!(queued = state.queue.len(), "scheduler started");
        dispatch(&mut state);
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SchedulerMsg::Enqueue(e) => {
                if state.rt.tasks.running.get(&e.id).is_none() {
                    state.queue.push(e);
                }
            }
            SchedulerMsg::Done { id, requeued } => {
                state.rt.tasks.running.remove(&id);
                if let Some(e) = requeued {
                    state.queue.push(e);
                }
            }
            SchedulerMsg::Cancel { id, reply } => {
                let outcome = if state.queue.remove(&id).is_some() {
                    CancelOutcome::WasQueued
                } else if let Some(slot) = state.rt.tasks.running.get(&id) {
                    slot.request_stop(StopReason::Cancelled);
                    CancelOutcome::WasRunning
                } else {
                    CancelOutcome::Unknown
                };
                let _ = reply.send(outcome);
            }
            SchedulerMsg::Snapshot(reply) => {
                let _ = reply.send(QueueSnapshot {
                    depth: state.queue.depth(),
                    running: state.rt.tasks.running.len(),
                    workers: state.rt.tasks.cfg.get().server.workers,
                });
            }
            SchedulerMsg::Revoke { id } => {
                if state.queue.remove(&id).is_none() {
                    if let Some(slot) = state.rt.tasks.running.get(&id) {
                        slot.request_stop(StopReason::Revoked);
                    }
                }
            }
            SchedulerMsg::Wake => {}
            SchedulerMsg::Crash => return Err("crash requested".into()),
        }
        dispatch(state);
        Ok(())
    }
}

/// The queue entry of a stored record.
pub fn entry_of(rec: &TaskRecord, now_mono_ms: u64) -> QueueEntry {
    QueueEntry {
        id: rec.id.clone(),
        priority: rec.priority,
        seq: rec.seq,
        agent: rec.agent.clone(),
        enqueued_at_ms: now_mono_ms,
        session: rec.session_id.clone(),
    }
}

/// Start workers for free slots, preempting if an allowed task waits with no slot free.
fn dispatch(state: &mut SchedulerState) {
    let rt = state.rt.clone();
    let t = &rt.tasks;
    let workers = t.cfg.get().server.workers;
    while t.running.len() < workers {
        // A session's turns one at a time, in order (see `queue::session_turn_free`).
        let running: HashSet<String> = t
            .running
            .snapshot()
            .into_iter()
            .filter_map(|s| s.session)
            .collect();
        let first = state.queue.first_per_session();
        // While the budget pauses an agent (or everything), only its critical tasks start.
        let Some(e) = state.queue.pop_where(|e| {
            (e.priority == Priority::Critical || !rt.budget.paused_for(&e.agent))
                && session_turn_free(e, &running, &first)
        }) else {
            break;
        };
        state.started_seq += 1;
        let slot = RunningSlot {
            id: e.id.clone(),
            agent: e.agent.clone(),
            session: e.session.clone(),
            priority: e.priority,
            started_seq: state.started_seq,
            started: Instant::now(),
            cancel: CancellationToken::new(),
            stop: Arc::new(Mutex::new(None)),
            wait: Default::default(),
        };
        t.running.insert(slot.clone());
        let wait_s = t.mono.ms().saturating_sub(e.enqueued_at_ms) as f64 / 1000.0;
        metrics()
            .task_queue_wait_seconds
            .with_label_values(&[e.priority.as_str()])
            .observe(wait_s);
        crate::tasks::worker::spawn(rt.clone(), e, slot);
    }
    if t.running.len() >= workers {
        preempt_if_needed(state);
    }
    publish_gauges(state);
}

fn preempt_if_needed(state: &mut SchedulerState) {
    let rt = &state.rt;
    let cfg = rt.tasks.cfg.get();
    let policy = &cfg.task_priority.preemption;
    let Some(top) = state.queue.peek_priority() else {
        return;
    };
    if !may_preempt(top, policy) {
        return;
    }
    // Held by the budget: preempting for a task that may not start would waste work.
    if top != Priority::Critical && rt.budget.any_paused() {
        return;
    }
    // One victim per waiting preemptor, counting the stops already under way.
    let depth = state.queue.depth();
    let preemptors: usize = Priority::ALL
        .iter()
        .filter(|p| may_preempt(**p, policy))
        .map(|p| depth[p.level() as usize])
        .sum();
    let slots = rt.tasks.running.snapshot();
    let stopping = slots
        .iter()
        .filter(|s| s.stop_reason() == Some(StopReason::Preempted))
        .count();
    if preemptors <= stopping {
        return;
    }
    let infos: Vec<RunningInfo> = slots
        .iter()
        .map(|s| RunningInfo {
            id: s.id.clone(),
            priority: s.priority,
            started_seq: s.started_seq,
            stopping: s.stop_reason().is_some(),
        })
        .collect();
    let mut infos = infos;
    for _ in stopping..preemptors {
        let Some(victim) = choose_victim(&infos, top, policy).map(|v| v.id.clone()) else {
            break;
        };
        if let Some(slot) = slots.iter().find(|s| s.id == victim) {
            if slot.request_stop(StopReason::Preempted) {
                tracing::info!(task = %victim, victim_priority = %slot.priority, by = %top, "preempting running task");
                metrics().preemptions_total.inc();
            }
        }
        if let Some(i) = infos.iter_mut().find(|i| i.id == victim) {
            i.stopping = true;
        }
    }
}

fn publish_gauges(state: &SchedulerState) {
    let depth = state.queue.depth();
    let m = metrics();
    for p in Priority::ALL {
        m.queue_depth
            .with_label_values(&[p.as_str()])
            .set(depth[p.level() as usize] as i64);
    }
    state
        .rt
        .tasks
        .queued
        .store(state.queue.len(), Ordering::Relaxed);
    let slots = state.rt.tasks.running.snapshot();
    let mut agents: Vec<&str> = slots.iter().map(|s| s.agent.as_str()).collect();
    agents.sort_unstable();
    agents.dedup();
    m.active_agents.set(agents.len() as i64);
}

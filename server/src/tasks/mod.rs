//! Tasks (§18.4): admission ([`admit`], pure), the ledger of ownership, epochs and transitions
//! ([`ledger`]), the ready queue's order and the preemption choice ([`queue`], pure), the
//! scheduler actor ([`scheduler`]), the running set ([`running`]), the workers that run tasks
//! ([`worker`]), callback delivery ([`delivery`]) and the task view ([`view`]).
//!
//! [`Tasks`] is the handle the HTTP API, the workers and cluster mode use: admit a submission
//! durably, read a task (with long-poll), cancel it, enqueue or revoke it, show the queue. A
//! task running on another node of a cluster is reached through the [`RemoteTasks`] seam,
//! which cluster mode implements.

pub mod admit;
pub mod delivery;
pub mod ledger;
pub mod queue;
pub mod running;
pub mod scheduler;
pub mod view;
pub mod worker;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openclaw_proto::api::{FailedDelivery, QueueView, RunningTask};
use openclaw_proto::{TaskRecord, TaskStatus, TaskSubmit};
use tokio::sync::broadcast;

use crate::config::ConfigCell;
use crate::storage::Store;
use crate::supervisor::Current;
use crate::util::{now_ms, Mono};
use admit::Invalid;
use ledger::{Admission, Ledger, LedgerError};
use running::RunningSet;
use scheduler::{entry_of, CancelOutcome, QueueSnapshot, SchedulerMsg};

/// Capacity of the task-finished broadcast that wakes long-polls. A waiter that lags re-reads
/// the store, so nothing is missed.
pub const TASK_EVENTS_MAX: usize = 4096;
/// How many 50 ms polls a read waits for this replica to apply a task committed elsewhere
/// before answering "not found" (cluster mode).
pub const REPLICA_CATCH_UP_POLLS: usize = 30;
/// Failures shown by `GET /api/queue`.
pub const RECENT_FAILURES_SHOWN: usize = 20;
/// How long a cancel waits for the worker of a running task to record the cancellation.
pub const CANCEL_WAIT: Duration = Duration::from_secs(5);
/// How long a caller waits for the scheduler's answer.
pub const SCHEDULER_CALL_TIMEOUT_MS: u64 = 2_000;

/// What became of a request to stop a task that runs on another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteCancel {
    /// The task does not run on another node.
    NotRemote,
    /// The other node stopped it; its worker records the cancellation.
    Stopped,
    /// The other node does not run it (any more).
    NotRunning,
    /// The other node did not answer.
    Unreachable { node: String, why: String },
}

/// The seam to tasks owned by other nodes. Cluster mode implements it; a node alone has none.
#[async_trait::async_trait]
pub trait RemoteTasks: Send + Sync {
    /// Stop `rec` where it runs, when that is another node.
    async fn cancel_elsewhere(&self, rec: &TaskRecord) -> RemoteCancel;
}

/// Why a task operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("the task queue is full ({max} waiting); retry later")]
    QueueFull { max: usize },
    #[error("no task with id {0}")]
    NotFound(String),
    #[error("task {id} is already {status}")]
    AlreadyFinished { id: String, status: &'static str },
    #[error("task {id} runs on node {node}, which did not answer ({why}); retry")]
    OwnerUnreachable {
        id: String,
        node: String,
        why: String,
    },
    /// The scheduler is not running (restarting under its supervisor) or did not answer
    /// within [`SCHEDULER_CALL_TIMEOUT_MS`] (its mailbox is behind a saturating load).
    #[error("the scheduler is restarting or did not answer within {SCHEDULER_CALL_TIMEOUT_MS} ms (saturated); retry")]
    SchedulerUnavailable,
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// The tasks of this node: the ledger, the scheduler, the running set and the finish events.
#[derive(Clone)]
pub struct Tasks {
    pub cfg: ConfigCell,
    /// This node's name (the owner it writes into the records it starts).
    pub node: String,
    pub ledger: Arc<dyn Ledger>,
    pub scheduler: Current<SchedulerMsg>,
    pub running: Arc<RunningSet>,
    /// Ids of finished tasks, for long-polls (bounded by [`TASK_EVENTS_MAX`]).
    pub events: broadcast::Sender<String>,
    /// Waiting tasks (kept by the scheduler), checked by admission against `server.queue_max`.
    pub queued: Arc<AtomicUsize>,
    pub mono: Mono,
    pub store: Store,
    /// Tasks owned by other nodes (cluster mode).
    pub remote: Option<Arc<dyn RemoteTasks>>,
}

impl Tasks {
    /// Hand a queued record to the current scheduler.
    pub fn enqueue(&self, rec: &TaskRecord) {
        if let Some(s) = self.scheduler.get() {
            let _ = s.cast(SchedulerMsg::Enqueue(entry_of(rec, self.mono.ms())));
        }
    }

    /// The task is no longer this node's: drop it from the queue, stop it if it runs here.
    pub fn revoke(&self, id: &str) {
        if let Some(s) = self.scheduler.get() {
            let _ = s.cast(SchedulerMsg::Revoke { id: id.to_string() });
        }
    }

    /// Wake long-polls waiting for `id`.
    pub fn finished(&self, id: &str) {
        let _ = self.events.send(id.to_string());
    }

    /// Admit a submission durably; `(record, duplicate)`. A duplicate (same idempotency key)
    /// returns the first task.
    pub async fn admit(&self, sub: TaskSubmit) -> Result<(TaskRecord, bool), TaskError> {
        self.admit_full(sub, None, None).await
    }

    /// Admit a submission from a chat channel: `reply_to` is the channel's delivery target
    /// (`feishu:reply:<message_id>`), kept as the task's `callback_url` so that its owner
    /// delivers the answer like a callback (retried, then parked). The API cannot set such a
    /// target: it accepts only http(s) callbacks.
    pub async fn admit_replying(
        &self,
        sub: TaskSubmit,
        reply_to: Option<String>,
    ) -> Result<(TaskRecord, bool), TaskError> {
        self.admit_full(sub, reply_to, None).await
    }

    /// [`Tasks::admit`] for a task a cron firing creates: the record carries the firing.
    pub async fn admit_with(
        &self,
        sub: TaskSubmit,
        cron: Option<openclaw_proto::CronFiring>,
    ) -> Result<(TaskRecord, bool), TaskError> {
        self.admit_full(sub, None, cron).await
    }

    async fn admit_full(
        &self,
        sub: TaskSubmit,
        reply_to: Option<String>,
        cron: Option<openclaw_proto::CronFiring>,
    ) -> Result<(TaskRecord, bool), TaskError> {
        let cfg = self.cfg.get();
        admit::validate(&cfg, &sub)?;
        let max = cfg.server.queue_max;
        if self.queued.load(Ordering::Relaxed) >= max {
            crate::activity::bump(&crate::activity::activity().rejected_queue_full);
            return Err(TaskError::QueueFull { max });
        }
        let id = admit::new_task_id();
        let mut rec = admit::record_of(&cfg, sub, id, self.ledger.next_seq()?, now_ms());
        if reply_to.is_some() {
            rec.callback_url = reply_to;
        }
        rec.cron = cron;
        drop(cfg);
        match self.ledger.admit(rec).await? {
            Admission::Accepted(r) => {
                // In a cluster the owner's watcher enqueues it (it may be another node).
                let mine = r.owner.is_none() || r.owner.as_deref() == Some(self.node.as_str());
                if mine {
                    self.enqueue(&r);
                }
                crate::activity::bump(&crate::activity::activity().accepted);
                tracing::debug!(task = %r.id, priority = %r.priority, agent = %r.agent, "task accepted");
                Ok((r, false))
            }
            Admission::Duplicate(r) => Ok((r, true)),
        }
    }

    fn find(&self, id: &str) -> Result<TaskRecord, TaskError> {
        self.ledger
            .get(id)?
            .ok_or_else(|| TaskError::NotFound(id.to_string()))
    }

    /// Read a task, waiting up to `wait` for it to finish (long-poll).
    pub async fn get(&self, id: &str, wait: Duration) -> Result<TaskRecord, TaskError> {
        // Subscribe before reading so a finish between the read and the wait is not missed.
        let mut events = self.events.subscribe();
        let mut rec = match self.find(id) {
            Ok(r) => r,
            // A task committed through another node may not be applied on this replica yet.
            Err(e) if self.remote.is_some() => {
                let mut found = None;
                for _ in 0..REPLICA_CATCH_UP_POLLS {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if let Ok(r) = self.find(id) {
                        found = Some(r);
                        break;
                    }
                }
                found.ok_or(e)?
            }
            Err(e) => return Err(e),
        };
        if rec.status.is_final() || wait.is_zero() {
            return Ok(rec);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Err(_) => break,
                Ok(Ok(done)) if done != id => continue,
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {
                    rec = self.find(id)?;
                    if rec.status.is_final() {
                        break;
                    }
                }
                Ok(Err(broadcast::error::RecvError::Closed)) => break,
            }
        }
        self.find(id)
    }

    /// Cancel a queued or running task.
    pub async fn cancel(&self, id: &str) -> Result<TaskRecord, TaskError> {
        let rec = self.find(id)?;
        if rec.status.is_final() {
            return Err(TaskError::AlreadyFinished {
                id: id.to_string(),
                status: rec.status.as_str(),
            });
        }
        // Running on another node: ask that node to stop it.
        let remote = match (&self.remote, rec.status) {
            (Some(r), TaskStatus::Running) => r.cancel_elsewhere(&rec).await,
            _ => RemoteCancel::NotRemote,
        };
        let outcome = match remote {
            RemoteCancel::Stopped => CancelOutcome::WasRunning,
            RemoteCancel::NotRunning => CancelOutcome::Unknown,
            RemoteCancel::Unreachable { node, why } => {
                return Err(TaskError::OwnerUnreachable {
                    id: id.to_string(),
                    node,
                    why,
                })
            }
            RemoteCancel::NotRemote => match self.scheduler.get() {
                Some(s) => ractor::call_t!(
                    s,
                    |reply| SchedulerMsg::Cancel {
                        id: id.to_string(),
                        reply
                    },
                    SCHEDULER_CALL_TIMEOUT_MS
                )
                .unwrap_or(CancelOutcome::Unknown),
                None => CancelOutcome::Unknown,
            },
        };
        match outcome {
            CancelOutcome::WasRunning => {
                // The worker records the cancellation; wait briefly for it.
                let mut events = self.events.subscribe();
                let deadline = tokio::time::Instant::now() + CANCEL_WAIT;
                loop {
                    if let Some(r) = self.ledger.get(id)?.filter(|r| r.status.is_final()) {
                        return Ok(r);
                    }
                    if tokio::time::timeout_at(deadline, events.recv())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Ok(self.ledger.get(id)?.unwrap_or(rec))
            }
            CancelOutcome::WasQueued | CancelOutcome::Unknown => {
                let r = self.ledger.cancel_queued(id, now_ms()).await?;
                self.finished(id);
                tracing::info!(task = %id, "task cancelled");
                Ok(r)
            }
        }
    }

    /// `GET /api/queue`: depth per level, running tasks, recent failures, failed deliveries;
    /// `paused` when the budget holds non-critical work.
    pub async fn queue_view(&self, paused: bool) -> Result<QueueView, TaskError> {
        let snap = match self.scheduler.get() {
            Some(s) => ractor::call_t!(s, SchedulerMsg::Snapshot, SCHEDULER_CALL_TIMEOUT_MS).ok(),
            None => None,
        }
        .ok_or(TaskError::SchedulerUnavailable)?;
        let QueueSnapshot {
            depth,
            running,
            workers,
        } = snap;
        let mut running_tasks: Vec<RunningTask> = self
            .running
            .snapshot()
            .into_iter()
            .map(|s| RunningTask {
                model: self
                    .ledger
                    .get(&s.id)
                    .ok()
                    .flatten()
                    .and_then(|r| r.model)
                    .or_else(|| s.wait.model()),
                waiting_scope: s.wait.scope(),
                waiting_reason: s.wait.scope().map(|_| view::RATE_LIMITED.to_string()),
                id: s.id,
                agent: s.agent,
                priority: s.priority,
                running_ms: s.started.elapsed().as_millis() as u64,
            })
            .collect();
        running_tasks.sort_by_key(|t| (t.priority, std::cmp::Reverse(t.running_ms)));
        let failed_deliveries = self
            .store
            .failed_deliveries()
            .map_err(LedgerError::from)?
            .into_iter()
            .map(|d| FailedDelivery {
                task_id: d.task_id,
                callback_url: d.callback_url,
                attempts: d.attempts,
                last_error: d.last_error,
                failed_at: view::rfc3339(d.failed_at_ms),
            })
            .collect();
        Ok(QueueView {
            depth: openclaw_proto::Priority::ALL
                .iter()
                .map(|p| (p.as_str().to_string(), depth[p.level() as usize] as u64))
                .collect(),
            queued: depth.iter().sum::<usize>() as u64,
            running: running as u64,
            workers: workers as u64,
            queue_max: self.cfg.get().server.queue_max as u64,
            running_tasks,
            recent_failures: self
                .ledger
                .recent_failures(RECENT_FAILURES_SHOWN)?
                .iter()
                .map(view::view_of)
                .collect(),
            failed_deliveries,
            paused: paused.then(|| "budget".to_string()),
        })
    }
}

//! The task ledger in cluster mode: every transition is a command committed through Raft; reads
//! come from this node's replica of the state.
//!
//! `admit` returns only after the task is committed (a majority flushed it), which is what the
//! 202 promises; an admission whose commit cannot be confirmed nor ruled out is resolved by
//! [`super::outcome`]. `queued` and `recover` are this node's own tasks. Sequence numbers are assigned
//! by `apply`, so `next_seq` is 0 here. A finished task is read from the replica's disk (the
//! state machine keeps only live tasks in memory); retention is the replicated `Retain`
//! command, proposed by the leader.

use std::sync::Arc;

use openclaw_cluster::state::PURGE_BATCH_MAX;
use openclaw_cluster::{owner_id, Command, NodeId, Reply};
use openclaw_proto::{Priority, TaskRecord, TaskStatus};

use super::outcome::{self, Attempt, Next};
use super::proposer::ClusterError;
use super::Cluster;
use crate::tasks::ledger::{
    page, Admission, Ledger, LedgerError, Outcome, RequeueReason, TaskPage, TaskQuery,
    LIST_SCAN_MAX,
};

/// Finished records `recent_failures` looks at, newest first.
pub const FAILURES_SCAN_MAX: usize = 10_000;

/// `Retain` commands one purge round proposes at most (each removes up to
/// [`PURGE_BATCH_MAX`]); the next round continues.
pub const RETAIN_ROUNDS_MAX: u32 = 100;

/// How long `start` waits for this replica to apply a session task's `Start`.
pub const REPLICA_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(2);

pub struct RaftLedger {
    cluster: Arc<Cluster>,
    /// Priorities that may preempt running work (`task_priority.allow_preempt_levels`).
    preemptors: Vec<Priority>,
}

impl RaftLedger {
    pub fn new(cluster: Arc<Cluster>, preemptors: Vec<Priority>) -> Arc<RaftLedger> {
        Arc::new(RaftLedger {
            cluster,
            preemptors,
        })
    }

    fn me(&self) -> NodeId {
        self.cluster.id
    }

    async fn task_cmd(&self, cmd: Command) -> Result<TaskRecord, LedgerError> {
        match self.cluster.proposer.propose(cmd).await {
            Ok(Reply::Task(t)) => Ok(*t),
            Ok(Reply::Rejected(r)) => Err(r.into()),
            Ok(other) => Err(LedgerError::Unavailable(format!(
                "unexpected reply {other:?}"
            ))),
            Err(e) => Err(cluster_err(e)),
        }
    }
}

pub fn cluster_err(e: ClusterError) -> LedgerError {
    LedgerError::Unavailable(e.to_string())
}

#[async_trait::async_trait]
impl Ledger for RaftLedger {
    /// Commit the `Admit`; when its outcome is unknown, find it out ([`outcome`]): the
    /// replica, then the same `Admit` again (idempotent by id), for at most
    /// [`outcome::RESOLVE_WITHIN`]; past that, [`LedgerError::OutcomeUnknown`].
    async fn admit(&self, rec: TaskRecord) -> Result<Admission, LedgerError> {
        let id = rec.id.clone();
        let may_preempt = self.preemptors.contains(&rec.priority);
        let cmd = Command::Admit {
            rec: Box::new(rec),
            via: self.me(),
            may_preempt,
        };
        let mut unknown_since: Option<tokio::time::Instant> = None;
        loop {
            let res = self.cluster.proposer.propose(cmd.clone()).await;
            let attempt = match &res {
                Ok(Reply::Task(t) | Reply::Duplicate(t)) if t.id == id => Attempt::Applied,
                Ok(_) => Attempt::AppliedOther,
                Err(ClusterError::Busy(_) | ClusterError::Unavailable(_)) => Attempt::NotApplied,
                Err(ClusterError::Unknown(_)) => Attempt::Unknown,
            };
            if attempt == Attempt::Unknown && unknown_since.is_none() {
                unknown_since = Some(tokio::time::Instant::now());
            }
            let time_left = unknown_since.is_none_or(|t| t.elapsed() < outcome::RESOLVE_WITHIN);
            // The replica is read only when the answer is not already known.
            let on_replica = || matches!(self.get(&id), Ok(Some(_)));
            let decision = match attempt {
                Attempt::Applied => Next::Accept,
                _ => outcome::next(attempt, unknown_since.is_some(), on_replica(), time_left),
            };
            if unknown_since.is_some() && decision != Next::Retry {
                let result = match decision {
                    Next::Accept => "accepted",
                    Next::Answer => "refused",
                    _ => "unknown",
                };
                crate::metrics::metrics()
                    .cluster_unknown_admissions_total
                    .with_label_values(&[result])
                    .inc();
            }
            match decision {
                Next::Accept => {
                    return match res {
                        Ok(Reply::Task(t) | Reply::Duplicate(t)) if t.id == id => {
                            Ok(Admission::Accepted(*t))
                        }
                        _ => self
                            .get(&id)?
                            .map(Admission::Accepted)
                            .ok_or_else(|| LedgerError::NotFound(id.clone())),
                    };
                }
                Next::Answer => {
                    return match res {
                        Ok(Reply::Duplicate(t)) => Ok(Admission::Duplicate(*t)),
                        Ok(Reply::Rejected(r)) => Err(r.into()),
                        Ok(other) => Err(LedgerError::Unavailable(format!(
                            "unexpected reply {other:?}"
                        ))),
                        Err(e) => Err(cluster_err(e)),
                    };
                }
                Next::Retry => tokio::time::sleep(outcome::RESOLVE_PAUSE).await,
                Next::GiveUp => {
                    let why = match res {
                        Err(e) => e.to_string(),
                        Ok(_) => "no answer".into(),
                    };
                    tracing::warn!(task = %id, %why, "admission outcome unknown");
                    return Err(LedgerError::OutcomeUnknown { id, why });
                }
            }
        }
    }

    fn get(&self, id: &str) -> Result<Option<TaskRecord>, LedgerError> {
        self.cluster
            .sm
            .task(id)
            .map_err(|e| LedgerError::Unavailable(format!("reading the replica: {e}")))
    }

    async fn start(&self, id: &str, _node: &str, _now_ms: u64) -> Result<TaskRecord, LedgerError> {
        let rec = self
            .task_cmd(Command::Start {
                id: id.to_string(),
                node: self.me(),
            })
            .await?;
        if rec.session_id.is_some() {
            // The worker reads the session next: wait until this replica has applied the
            // `Start`, and so the previous turn recorded before it (bounded; a replica that
            // lags longer reads what it has).
            let deadline = tokio::time::Instant::now() + REPLICA_CATCH_UP;
            while tokio::time::Instant::now() < deadline
                && !self
                    .cluster
                    .sm
                    .read(|s| s.tasks.get(id).is_some_and(|r| r.epoch >= rec.epoch))
            {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        Ok(rec)
    }

    async fn finish(
        &self,
        id: &str,
        epoch: u64,
        outcome: Outcome,
        _now_ms: u64,
    ) -> Result<TaskRecord, LedgerError> {
        self.task_cmd(Command::Finish {
            id: id.to_string(),
            epoch,
            outcome: Box::new(outcome),
        })
        .await
    }

    async fn requeue(
        &self,
        id: &str,
        epoch: u64,
        reason: RequeueReason,
    ) -> Result<TaskRecord, LedgerError> {
        self.task_cmd(Command::Requeue {
            id: id.to_string(),
            epoch,
            reason,
        })
        .await
    }

    async fn cancel_queued(&self, id: &str, _now_ms: u64) -> Result<TaskRecord, LedgerError> {
        self.task_cmd(Command::Cancel { id: id.to_string() }).await
    }

    /// This node's queued tasks. Tasks left running here by a crash are requeued by the
    /// watcher's reconcile loop once Raft has caught up.
    async fn recover(&self) -> Result<Vec<TaskRecord>, LedgerError> {
        self.queued()
    }

    fn queued(&self) -> Result<Vec<TaskRecord>, LedgerError> {
        let me = self.me();
        Ok(self.cluster.sm.read(|s| {
            s.queued_on(me)
                .into_iter()
                .filter(|r| s.session_turn_ready(r))
                .cloned()
                .collect()
        }))
    }

    async fn purge_finished(&self, before_ms: u64, keep_max: u64) -> Result<usize, LedgerError> {
        // One node proposes for the cluster: the leader.
        if !self.cluster.is_leader() {
            return Ok(0);
        }
        let mut total = 0;
        for _ in 0..RETAIN_ROUNDS_MAX {
            let cmd = Command::Retain {
                before_ms,
                keep_max,
                max: PURGE_BATCH_MAX,
            };
            match self.cluster.proposer.propose(cmd).await {
                Ok(Reply::Purged(n)) => {
                    total += n as usize;
                    if n < u64::from(PURGE_BATCH_MAX) {
                        break;
                    }
                }
                Ok(_) => break,
                Err(e) => return Err(cluster_err(e)),
            }
        }
        Ok(total)
    }

    fn recent_failures(&self, limit: usize) -> Result<Vec<TaskRecord>, LedgerError> {
        self.cluster
            .sm
            .finished_newest(limit, FAILURES_SCAN_MAX, |r| r.status == TaskStatus::Failed)
            .map_err(|e| LedgerError::Unavailable(format!("reading the replica: {e}")))
    }

    fn next_seq(&self) -> Result<u64, LedgerError> {
        Ok(0)
    }

    fn list(&self, q: &TaskQuery) -> Result<TaskPage, LedgerError> {
        // One more than the scan bound, so the page knows whether records remain.
        let records = self
            .cluster
            .sm
            .tasks_after(q.after.as_deref(), LIST_SCAN_MAX + 1)
            .map_err(|e| LedgerError::Unavailable(format!("reading the replica: {e}")))?;
        Ok(page(records.into_iter(), q, LIST_SCAN_MAX))
    }
}

/// Is this record owned by `node`?
pub fn owned_by(rec: &TaskRecord, node: NodeId) -> bool {
    owner_id(rec) == Some(node)
}

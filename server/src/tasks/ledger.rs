//! The task ledger: the one narrow interface through which task ownership and state change.
//!
//! Today [`LocalLedger`] backs it with the node's sled store; the cluster issue backs the same
//! trait with Raft (one replicated command per transition). Every transition is a pure function
//! in [`transition`] — `(record, command) → record | error` — so the Raft `apply` can reuse them
//! unchanged: they never read the clock (time comes in the command) and never touch I/O.
//!
//! Fencing: `start` bumps the record's `epoch` and names the owner; `finish` and `requeue` must
//! carry that epoch, so a worker that lost its lease (preempted, cancelled, re-owned) cannot
//! complete the task a second time.

use std::sync::{Arc, Mutex};

use openclaw_cluster::Rejection;
use openclaw_proto::{TaskRecord, TaskStatus};

use crate::storage::{StorageError, Store};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("task {0} not found")]
    NotFound(String),
    /// The caller's epoch is not the task's current epoch: someone else owns the task now.
    #[error("task {id}: stale epoch {given} (current {current})")]
    Fenced {
        id: String,
        given: u64,
        current: u64,
    },
    /// The transition does not apply to a task in this state.
    #[error("task {id} is {status}")]
    WrongState { id: String, status: String },
    /// Another node owns the task.
    #[error("task {id} is owned by node {owner}")]
    NotOwner { id: String, owner: String },
    /// The cluster cannot commit right now (no leader, no quorum, proposals full).
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<Rejection> for LedgerError {
    fn from(r: Rejection) -> LedgerError {
        match r {
            Rejection::NotFound(id) => LedgerError::NotFound(id),
            Rejection::Fenced { id, given, current } => LedgerError::Fenced { id, given, current },
            Rejection::WrongState { id, status } => LedgerError::WrongState { id, status },
            Rejection::NotOwner { id, owner, .. } => LedgerError::NotOwner { id, owner },
            other => LedgerError::Unavailable(other.to_string()),
        }
    }
}

/// The result of admitting a task.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    Accepted(TaskRecord),
    /// A task with the same idempotency key already existed; this is it.
    Duplicate(TaskRecord),
}

/// How a run ended (shared with the replicated protocol).
pub use openclaw_cluster::{Outcome, RequeueReason};

/// Pure transitions of one task record (shared with the Raft `apply`).
pub mod transition {
    use super::{LedgerError, RequeueReason};
    use openclaw_proto::TaskRecord;

    pub use openclaw_cluster::transition::recover;

    pub fn start(rec: TaskRecord, node: &str, now_ms: u64) -> Result<TaskRecord, LedgerError> {
        Ok(openclaw_cluster::transition::start(rec, node, now_ms)?)
    }

    pub fn finish(
        rec: TaskRecord,
        epoch: u64,
        outcome: super::Outcome,
        now_ms: u64,
    ) -> Result<TaskRecord, LedgerError> {
        Ok(openclaw_cluster::transition::finish(
            rec, epoch, outcome, now_ms,
        )?)
    }

    pub fn requeue(
        rec: TaskRecord,
        epoch: u64,
        reason: RequeueReason,
    ) -> Result<TaskRecord, LedgerError> {
        Ok(openclaw_cluster::transition::requeue(rec, epoch, reason)?)
    }

    pub fn cancel_queued(rec: TaskRecord, now_ms: u64) -> Result<TaskRecord, LedgerError> {
        Ok(openclaw_cluster::transition::cancel_queued(rec, now_ms)?)
    }
}

/// The ledger interface (local today, Raft-backed in the cluster).
#[async_trait::async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// Durably admit `rec` (status Queued). With an idempotency key already used, returns the
    /// first task instead. Returns only after the record is flushed.
    async fn admit(&self, rec: TaskRecord) -> Result<Admission, LedgerError>;
    fn get(&self, id: &str) -> Result<Option<TaskRecord>, LedgerError>;
    /// Take the task to run it on `node`; returns the record with its new epoch.
    async fn start(&self, id: &str, node: &str, now_ms: u64) -> Result<TaskRecord, LedgerError>;
    async fn finish(
        &self,
        id: &str,
        epoch: u64,
        outcome: Outcome,
        now_ms: u64,
    ) -> Result<TaskRecord, LedgerError>;
    async fn requeue(
        &self,
        id: &str,
        epoch: u64,
        reason: RequeueReason,
    ) -> Result<TaskRecord, LedgerError>;
    async fn cancel_queued(&self, id: &str, now_ms: u64) -> Result<TaskRecord, LedgerError>;
    /// Tasks this node must run after a restart (queued, and running ones requeued), in admission order.
    async fn recover(&self) -> Result<Vec<TaskRecord>, LedgerError>;
    /// Every queued task, in admission order.
    fn queued(&self) -> Result<Vec<TaskRecord>, LedgerError>;
    /// Forget finished tasks older than `before_ms`; returns how many.
    async fn purge_finished(&self, before_ms: u64) -> Result<usize, LedgerError>;
    /// The newest failed tasks, newest first.
    fn recent_failures(&self, limit: usize) -> Result<Vec<TaskRecord>, LedgerError>;
    /// A new admission sequence number.
    fn next_seq(&self) -> Result<u64, LedgerError>;
}

/// The single-node ledger over sled.
pub struct LocalLedger {
    store: Store,
    /// Serializes read-modify-write of records (held only around in-memory sled calls, never
    /// across an await).
    rmw: Mutex<()>,
}

impl LocalLedger {
    pub fn new(store: Store) -> Arc<LocalLedger> {
        Arc::new(LocalLedger {
            store,
            rmw: Mutex::new(()),
        })
    }

    fn modify(
        &self,
        id: &str,
        f: impl FnOnce(TaskRecord) -> Result<TaskRecord, LedgerError>,
    ) -> Result<TaskRecord, LedgerError> {
        let _guard = self.rmw.lock().unwrap_or_else(|p| p.into_inner());
        let rec = self
            .store
            .get_task(id)?
            .ok_or_else(|| LedgerError::NotFound(id.to_string()))?;
        let rec = f(rec)?;
        self.store.put_task(&rec)?;
        Ok(rec)
    }

    async fn modify_durably(
        &self,
        id: &str,
        f: impl FnOnce(TaskRecord) -> Result<TaskRecord, LedgerError>,
    ) -> Result<TaskRecord, LedgerError> {
        let rec = self.modify(id, f)?;
        self.store.flush().await?;
        Ok(rec)
    }
}

#[async_trait::async_trait]
impl Ledger for LocalLedger {
    async fn admit(&self, rec: TaskRecord) -> Result<Admission, LedgerError> {
        if let Some(key) = &rec.idempotency_key {
            if let Some(existing) = self.store.claim_idempotency_key(key, &rec.id)? {
                if let Some(first) = self.store.get_task(&existing)? {
                    // The first submission may not be flushed yet if it is racing with us.
                    self.store.flush().await?;
                    return Ok(Admission::Duplicate(first));
                }
                // The key points at a purged task: take it over.
                self.store.release_idempotency_key(key)?;
                if let Some(other) = self.store.claim_idempotency_key(key, &rec.id)? {
                    if let Some(first) = self.store.get_task(&other)? {
                        self.store.flush().await?;
                        return Ok(Admission::Duplicate(first));
                    }
                }
            }
        }
        self.store.put_task(&rec)?;
        self.store.flush().await?;
        Ok(Admission::Accepted(rec))
    }

    fn get(&self, id: &str) -> Result<Option<TaskRecord>, LedgerError> {
        Ok(self.store.get_task(id)?)
    }

    async fn start(&self, id: &str, node: &str, now_ms: u64) -> Result<TaskRecord, LedgerError> {
        self.modify_durably(id, |r| transition::start(r, node, now_ms))
            .await
    }

    async fn finish(
        &self,
        id: &str,
        epoch: u64,
        outcome: Outcome,
        now_ms: u64,
    ) -> Result<TaskRecord, LedgerError> {
        self.modify_durably(id, |r| transition::finish(r, epoch, outcome, now_ms))
            .await
    }

    async fn requeue(
        &self,
        id: &str,
        epoch: u64,
        reason: RequeueReason,
    ) -> Result<TaskRecord, LedgerError> {
        self.modify_durably(id, |r| transition::requeue(r, epoch, reason))
            .await
    }

    async fn cancel_queued(&self, id: &str, now_ms: u64) -> Result<TaskRecord, LedgerError> {
        self.modify_durably(id, |r| transition::cancel_queued(r, now_ms))
            .await
    }

    async fn recover(&self) -> Result<Vec<TaskRecord>, LedgerError> {
        let mut out = Vec::new();
        {
            let _guard = self.rmw.lock().unwrap_or_else(|p| p.into_inner());
            for rec in self.store.tasks() {
                let rec = rec?;
                if rec.status.is_final() {
                    continue;
                }
                let rec = transition::recover(rec);
                self.store.put_task(&rec)?;
                out.push(rec);
            }
        }
        self.store.flush().await?;
        out.sort_by_key(|r| r.seq);
        Ok(out)
    }

    fn queued(&self) -> Result<Vec<TaskRecord>, LedgerError> {
        let mut out: Vec<TaskRecord> = self
            .store
            .tasks()
            .filter_map(Result::ok)
            .filter(|r| r.status == TaskStatus::Queued)
            .collect();
        out.sort_by_key(|r| r.seq);
        Ok(out)
    }

    async fn purge_finished(&self, before_ms: u64) -> Result<usize, LedgerError> {
        let mut n = 0;
        {
            let _guard = self.rmw.lock().unwrap_or_else(|p| p.into_inner());
            let old: Vec<TaskRecord> = self
                .store
                .tasks()
                .filter_map(Result::ok)
                .filter(|r| r.status.is_final() && r.finished_at_ms.unwrap_or(0) < before_ms)
                .collect();
            for rec in old {
                self.store.remove_task(&rec.id)?;
                if let Some(key) = &rec.idempotency_key {
                    self.store.release_idempotency_key(key)?;
                }
                n += 1;
            }
        }
        self.store.flush().await?;
        Ok(n)
    }

    fn recent_failures(&self, limit: usize) -> Result<Vec<TaskRecord>, LedgerError> {
        let mut failed: Vec<TaskRecord> = self
            .store
            .tasks()
            .filter_map(Result::ok)
            .filter(|r| r.status == TaskStatus::Failed)
            .collect();
        failed.sort_by_key(|r| std::cmp::Reverse(r.finished_at_ms));
        failed.truncate(limit);
        Ok(failed)
    }

    fn next_seq(&self) -> Result<u64, LedgerError> {
        Ok(self.store.next_seq()?)
    }
}

/// Test helpers shared by other modules' tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;
    use openclaw_proto::Priority;

    pub(crate) fn record(id: &str) -> TaskRecord {
        TaskRecord {
            seq: 1,
            ..TaskRecord::queued(id, "main", "hi", Priority::Normal)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::record;
    use super::transition::*;
    use super::*;
    use openclaw_proto::api::{PromptBreakdown, TokenCounts};

    fn ok_outcome() -> Outcome {
        Outcome {
            status: TaskStatus::Succeeded,
            model: Some("gpt-4o-mini".into()),
            route: Some("default".into()),
            fallbacks: Vec::new(),
            output: Some("done".into()),
            tokens: TokenCounts {
                input: 3,
                output: 4,
            },
            cost_usd: 0.1,
            error: None,
            cache_hit: false,
            prompt: PromptBreakdown::default(),
        }
    }

    #[test]
    fn start_finish_happy_path() {
        let r = start(record("a"), "n1", 10).unwrap();
        assert_eq!(
            (r.status, r.epoch, r.attempts, r.owner.as_deref()),
            (TaskStatus::Running, 1, 1, Some("n1"))
        );
        let r = finish(r, 1, ok_outcome(), 20).unwrap();
        assert_eq!(r.status, TaskStatus::Succeeded);
        assert_eq!(r.output.as_deref(), Some("done"));
        assert_eq!(r.finished_at_ms, Some(20));
    }

    #[test]
    fn transitions_table() {
        // (name, result is ok)
        let running = start(record("a"), "n1", 1).unwrap();
        let done = finish(running.clone(), 1, ok_outcome(), 2).unwrap();
        let requeued = requeue(running.clone(), 1, RequeueReason::Preempted).unwrap();
        let cases: Vec<(&str, Result<TaskRecord, LedgerError>, bool)> = vec![
            ("start twice", start(running.clone(), "n2", 2), false),
            (
                "finish with stale epoch",
                finish(running.clone(), 0, ok_outcome(), 2),
                false,
            ),
            (
                "finish a queued task",
                finish(record("a"), 0, ok_outcome(), 2),
                false,
            ),
            (
                "finish twice",
                finish(done.clone(), 1, ok_outcome(), 3),
                false,
            ),
            (
                "requeue a finished task",
                requeue(done.clone(), 1, RequeueReason::Stopped),
                false,
            ),
            (
                "old run finishes after requeue",
                finish(requeued.clone(), 1, ok_outcome(), 3),
                false,
            ),
            (
                "requeued task starts again",
                start(requeued.clone(), "n1", 3),
                true,
            ),
            ("cancel queued", cancel_queued(record("a"), 1), true),
            (
                "cancel running via cancel_queued",
                cancel_queued(running.clone(), 1),
                false,
            ),
        ];
        for (name, res, ok) in cases {
            assert_eq!(res.is_ok(), ok, "{name}: {res:?}");
        }
        assert!(matches!(
            finish(requeued.clone(), 1, ok_outcome(), 3),
            Err(LedgerError::WrongState { .. })
        ));
        let restarted = start(requeued, "n1", 3).unwrap();
        assert_eq!(
            (restarted.epoch, restarted.attempts, restarted.preemptions),
            (3, 2, 1)
        );
        assert!(matches!(
            finish(restarted, 1, ok_outcome(), 4),
            Err(LedgerError::Fenced {
                given: 1,
                current: 3,
                ..
            })
        ));
    }

    #[test]
    fn a_budget_hold_is_not_an_attempt() {
        // (reason, attempts, preemptions, holds) after start → requeue(reason) → start → requeue(reason)
        let cases = [
            (RequeueReason::Stopped, 2, 0, 0),
            (RequeueReason::Preempted, 2, 2, 0),
            (RequeueReason::BudgetHeld, 0, 0, 2),
        ];
        for (reason, attempts, preemptions, holds) in cases {
            let r = start(record("a"), "n1", 1).unwrap();
            let r = requeue(r, 1, reason).unwrap();
            let r = start(r, "n1", 2).unwrap();
            let r = requeue(r, 3, reason).unwrap();
            assert_eq!(
                (r.status, r.attempts, r.preemptions, r.holds),
                (TaskStatus::Queued, attempts, preemptions, holds),
                "{reason:?}"
            );
            // The run that finally calls the provider counts once.
            let done = finish(start(r, "n1", 3).unwrap(), 5, ok_outcome(), 4).unwrap();
            assert_eq!(done.attempts, attempts + 1, "{reason:?}");
        }
    }

    #[test]
    fn recovery_requeues_running_and_keeps_the_rest() {
        let running = start(record("a"), "n1", 1).unwrap();
        let r = recover(running);
        assert_eq!((r.status, r.epoch, r.attempts), (TaskStatus::Queued, 2, 1));
        let done = finish(start(record("b"), "n1", 1).unwrap(), 1, ok_outcome(), 2).unwrap();
        assert_eq!(recover(done.clone()), done);
    }

    #[tokio::test]
    async fn local_ledger_admits_idempotently_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ledger = LocalLedger::new(store.clone());
        let mut a = record("a");
        a.idempotency_key = Some("k1".into());
        let mut b = record("b");
        b.idempotency_key = Some("k1".into());
        assert!(matches!(
            ledger.admit(a).await.unwrap(),
            Admission::Accepted(_)
        ));
        match ledger.admit(b).await.unwrap() {
            Admission::Duplicate(first) => assert_eq!(first.id, "a"),
            other => panic!("expected duplicate, got {other:?}"),
        }
        assert!(ledger.get("b").unwrap().is_none());
        let started = ledger.start("a", "n1", 5).await.unwrap();
        assert_eq!(started.epoch, 1);
        drop(ledger);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let ledger = LocalLedger::new(store);
        let back = ledger.recover().await.unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!((back[0].status, back[0].epoch), (TaskStatus::Queued, 2));
        assert!(matches!(
            ledger.finish("a", 1, ok_outcome(), 9).await,
            Err(LedgerError::WrongState { .. })
        ));
    }
}

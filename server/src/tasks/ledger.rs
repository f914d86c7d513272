//! The task ledger: the one narrow interface through which task ownership and state change.
//!
//! Today [`LocalLedger`] backs it with the node's sled store; the cluster issue backs the same
//! trait with Raft (one replicated command per transition). Every transition is a pure function
//! in [`transition`] — `(record, command) → record | error` — so the Raft `apply` can reuse them
//! unchanged: they never read the clock (time comes in the command) and never touch I/O.
//!
//! Memory: [`LocalLedger`] keeps every record on disk (sled, with a bounded page cache) and two
//! index trees beside them — `ledger_live` (the queued and running tasks' ids) and
//! `ledger_finished` (finish time + id, oldest first) — so listing queued work, retention and
//! recent failures walk only what they need and never collect the finished tasks in memory.
//! The indexes are rebuilt from the records at start (one streaming pass), which also heals
//! any index write a crash cut short.
//!
//! Fencing: `start` bumps the record's `epoch` and names the owner; `finish` and `requeue` must
//! carry that epoch, so a worker that lost its lease (preempted, cancelled, re-owned) cannot
//! complete the task a second time.

use std::sync::atomic::{AtomicU64, Ordering};
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
    /// An earlier task of the same session is not final yet (cluster mode: its owner is told
    /// when it may start).
    #[error("task {id} waits for an earlier turn of session {session}")]
    SessionBusy { id: String, session: String },
    /// The session has as many live tasks as it may (`state::SESSION_WAITING_MAX`).
    #[error("session {session} already has {max} tasks waiting; retry when one has finished")]
    SessionFull { session: String, max: u64 },
    /// The cluster cannot commit right now (no leader, no quorum, proposals full).
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// A new task's commit could not be confirmed nor ruled out within the bound: task `id`
    /// may exist (or appear shortly). The client reads it before retrying.
    #[error("the outcome of admitting task {id} is unknown ({why}); GET /api/tasks/{id} before retrying")]
    OutcomeUnknown { id: String, why: String },
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
            Rejection::SessionBusy { id, session } => LedgerError::SessionBusy { id, session },
            Rejection::SessionFull { session, max } => LedgerError::SessionFull { session, max },
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

/// Most tasks one listing page holds (`GET /api/tasks?limit=`).
pub const TASK_PAGE_MAX: usize = 500;
/// Records one listing call examines at most: a selective filter gets a short page and a cursor
/// to continue from, never a scan of everything kept.
pub const LIST_SCAN_MAX: usize = 2_000;

/// Filters and paging of a task listing (`GET /api/tasks`). Tasks come in id order; `after` is
/// the previous page's cursor (the last id it examined).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskQuery {
    pub status: Option<TaskStatus>,
    pub agent: Option<String>,
    pub source: Option<String>,
    pub session_id: Option<String>,
    /// Created at or after this time (Unix ms).
    pub since_ms: Option<u64>,
    pub after: Option<String>,
    /// At most this many tasks (1..=[`TASK_PAGE_MAX`]).
    pub limit: usize,
}

impl TaskQuery {
    /// Does `r` pass the filters?
    pub fn matches(&self, r: &TaskRecord) -> bool {
        self.status.is_none_or(|s| r.status == s)
            && self.agent.as_ref().is_none_or(|a| r.agent == *a)
            && self.source.as_ref().is_none_or(|s| r.source == *s)
            && self
                .session_id
                .as_ref()
                .is_none_or(|s| r.session_id.as_deref() == Some(s.as_str()))
            && self.since_ms.is_none_or(|t| r.created_at_ms >= t)
    }
}

/// One page of a listing; `next` is the cursor of the next page (none: the end).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskPage {
    pub tasks: Vec<TaskRecord>,
    pub next: Option<String>,
}

/// Page `records` (in id order, after the cursor): the matching ones until `q.limit` are found
/// or `scan_max` were examined; a cursor when records remain.
pub fn page(records: impl Iterator<Item = TaskRecord>, q: &TaskQuery, scan_max: usize) -> TaskPage {
    let mut out = TaskPage::default();
    let mut last = None;
    for (scanned, r) in records.enumerate() {
        if scanned >= scan_max || out.tasks.len() >= q.limit {
            out.next = last;
            return out;
        }
        last = Some(r.id.clone());
        if q.matches(&r) {
            out.tasks.push(r);
        }
    }
    out
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
    /// Retention: forget finished tasks, oldest first — every one that ended before
    /// `before_ms`, and more while more than `keep_max` are kept; returns how many.
    async fn purge_finished(&self, before_ms: u64, keep_max: u64) -> Result<usize, LedgerError>;
    /// The newest failed tasks, newest first.
    fn recent_failures(&self, limit: usize) -> Result<Vec<TaskRecord>, LedgerError>;
    /// A new admission sequence number.
    fn next_seq(&self) -> Result<u64, LedgerError>;
    /// One page of tasks, live and finished, read from the store (see [`page`]).
    fn list(&self, q: &TaskQuery) -> Result<TaskPage, LedgerError>;
}

/// Finished records one purge pass or one `recent_failures` call looks at, at most.
pub const LEDGER_SCAN_MAX: usize = 10_000;

/// The single-node ledger over sled.
pub struct LocalLedger {
    store: Store,
    /// Ids of queued and running tasks.
    live: sled::Tree,
    /// `finished_at_ms` (big-endian) + id of finished tasks.
    finished: sled::Tree,
    /// Entries in `finished`.
    retained: AtomicU64,
    /// Serializes read-modify-write of records (held only around in-memory sled calls, never
    /// across an await).
    rmw: Mutex<()>,
}

fn finished_key(rec: &TaskRecord) -> Vec<u8> {
    let mut k = rec.finished_at_ms.unwrap_or(0).to_be_bytes().to_vec();
    k.extend_from_slice(rec.id.as_bytes());
    k
}

impl LocalLedger {
    /// The ledger over `store`; its indexes are rebuilt from the records (one streaming pass).
    pub fn new(store: Store) -> Result<Arc<LocalLedger>, StorageError> {
        let ledger = LocalLedger {
            live: store.index_tree("ledger_live")?,
            finished: store.index_tree("ledger_finished")?,
            store,
            retained: AtomicU64::new(0),
            rmw: Mutex::new(()),
        };
        ledger.rebuild_indexes()?;
        Ok(Arc::new(ledger))
    }

    fn rebuild_indexes(&self) -> Result<(), StorageError> {
        let _guard = self.rmw.lock().unwrap_or_else(|p| p.into_inner());
        self.live.clear()?;
        self.finished.clear()?;
        let mut n = 0;
        for rec in self.store.tasks() {
            let rec = rec?;
            if rec.status.is_final() {
                self.finished.insert(finished_key(&rec), &[][..])?;
                n += 1;
            } else {
                self.live.insert(rec.id.as_bytes(), &[][..])?;
            }
        }
        self.retained.store(n, Ordering::Relaxed);
        Ok(())
    }

    /// Store `rec` (which was `old`) and keep the indexes right. Called under `rmw`.
    fn put(&self, old: Option<&TaskRecord>, rec: &TaskRecord) -> Result<(), StorageError> {
        self.store.put_task(rec)?;
        if let Some(old) = old.filter(|o| o.status.is_final()) {
            if self.finished.remove(finished_key(old))?.is_some() {
                self.retained.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if rec.status.is_final() {
            self.live.remove(rec.id.as_bytes())?;
            if self.finished.insert(finished_key(rec), &[][..])?.is_none() {
                self.retained.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            self.live.insert(rec.id.as_bytes(), &[][..])?;
        }
        Ok(())
    }

    /// The live tasks' records.
    fn live_records(&self) -> impl Iterator<Item = TaskRecord> + '_ {
        self.live.iter().keys().filter_map(move |k| {
            let k = k.ok()?;
            let id = std::str::from_utf8(&k).ok()?;
            self.store.get_task(id).ok().flatten()
        })
    }

    /// Finished tasks kept.
    pub fn retained(&self) -> u64 {
        self.retained.load(Ordering::Relaxed)
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
        let new = f(rec.clone())?;
        self.put(Some(&rec), &new)?;
        Ok(new)
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
        {
            let _guard = self.rmw.lock().unwrap_or_else(|p| p.into_inner());
            let old = self.store.get_task(&rec.id)?;
            self.put(old.as_ref(), &rec)?;
        }
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
            let live: Vec<TaskRecord> = self.live_records().collect();
            for old in live {
                if old.status.is_final() {
                    continue;
                }
                let rec = transition::recover(old.clone());
                self.put(Some(&old), &rec)?;
                out.push(rec);
            }
        }
        self.store.flush().await?;
        out.sort_by_key(|r| r.seq);
        Ok(out)
    }

    fn queued(&self) -> Result<Vec<TaskRecord>, LedgerError> {
        let mut out: Vec<TaskRecord> = self
            .live_records()
            .filter(|r| r.status == TaskStatus::Queued)
            .collect();
        out.sort_by_key(|r| r.seq);
        Ok(out)
    }

    async fn purge_finished(&self, before_ms: u64, keep_max: u64) -> Result<usize, LedgerError> {
        let mut n = 0;
        loop {
            let mut batch = 0;
            {
                let _guard = self.rmw.lock().unwrap_or_else(|p| p.into_inner());
                let oldest: Vec<sled::IVec> = self
                    .finished
                    .iter()
                    .keys()
                    .take(LEDGER_SCAN_MAX)
                    .collect::<Result<_, _>>()
                    .map_err(StorageError::from)?;
                for k in oldest {
                    let at = k
                        .get(..8)
                        .and_then(|b| <[u8; 8]>::try_from(b).ok())
                        .map(u64::from_be_bytes)
                        .unwrap_or(0);
                    if self.retained() <= keep_max && at >= before_ms {
                        break;
                    }
                    let id = String::from_utf8_lossy(k.get(8..).unwrap_or_default()).into_owned();
                    if let Some(rec) = self.store.get_task(&id)? {
                        if rec.status.is_final() {
                            self.store.remove_task(&id)?;
                            if let Some(key) = &rec.idempotency_key {
                                self.store.release_idempotency_key(key)?;
                            }
                        }
                    }
                    if self
                        .finished
                        .remove(&k)
                        .map_err(StorageError::from)?
                        .is_some()
                    {
                        self.retained.fetch_sub(1, Ordering::Relaxed);
                    }
                    batch += 1;
                }
            }
            n += batch;
            if batch < LEDGER_SCAN_MAX {
                break;
            }
        }
        self.store.flush().await?;
        Ok(n)
    }

    fn recent_failures(&self, limit: usize) -> Result<Vec<TaskRecord>, LedgerError> {
        let mut out = Vec::new();
        for k in self.finished.iter().keys().rev().take(LEDGER_SCAN_MAX) {
            let k = k.map_err(StorageError::from)?;
            let id = String::from_utf8_lossy(k.get(8..).unwrap_or_default()).into_owned();
            if let Some(rec) = self.store.get_task(&id)? {
                if rec.status == TaskStatus::Failed {
                    out.push(rec);
                    if out.len() >= limit {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    fn next_seq(&self) -> Result<u64, LedgerError> {
        Ok(self.store.next_seq()?)
    }

    fn list(&self, q: &TaskQuery) -> Result<TaskPage, LedgerError> {
        let records = self
            .store
            .tasks_after(q.after.as_deref())
            .filter_map(Result::ok);
        Ok(page(records, q, LIST_SCAN_MAX))
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
            cache_score: None,
            prompt: PromptBreakdown::default(),
            context: Default::default(),
            memory_chunks: Vec::new(),
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
        let ledger = LocalLedger::new(store.clone()).unwrap();
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
        let ledger = LocalLedger::new(store).unwrap();
        let back = ledger.recover().await.unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!((back[0].status, back[0].epoch), (TaskStatus::Queued, 2));
        assert!(matches!(
            ledger.finish("a", 1, ok_outcome(), 9).await,
            Err(LedgerError::WrongState { .. })
        ));
    }

    #[test]
    fn listing_filters_and_pages() {
        let mut recs: Vec<TaskRecord> = (0..6)
            .map(|i| {
                let mut r = record(&format!("t{i}"));
                r.agent = if i % 2 == 0 { "a" } else { "b" }.into();
                r.created_at_ms = i * 10;
                r.session_id = (i == 3).then(|| "s".to_string());
                r
            })
            .collect();
        recs[5].status = TaskStatus::Failed;
        let q = |f: &dyn Fn(&mut TaskQuery)| {
            let mut q = TaskQuery {
                limit: 10,
                ..Default::default()
            };
            f(&mut q);
            let p = page(recs.clone().into_iter(), &q, 4);
            (
                p.tasks.into_iter().map(|r| r.id).collect::<Vec<_>>(),
                p.next,
            )
        };
        type Got = (Vec<String>, Option<String>);
        type Want<'a> = (Vec<&'a str>, Option<&'a str>);
        let cases: Vec<(&str, Got, Want)> = vec![
            (
                "all, scan bound 4",
                q(&|_| {}),
                (vec!["t0", "t1", "t2", "t3"], Some("t3")),
            ),
            (
                "limit 2",
                q(&|q| q.limit = 2),
                (vec!["t0", "t1"], Some("t1")),
            ),
            (
                "agent b",
                q(&|q| q.agent = Some("b".into())),
                (vec!["t1", "t3"], Some("t3")),
            ),
            (
                "session",
                q(&|q| q.session_id = Some("s".into())),
                (vec!["t3"], Some("t3")),
            ),
            (
                "since 20",
                q(&|q| q.since_ms = Some(20)),
                (vec!["t2", "t3"], Some("t3")),
            ),
            (
                "status",
                q(&|q| q.status = Some(TaskStatus::Failed)),
                (vec![], Some("t3")),
            ),
        ];
        for (name, got, (ids, next)) in cases {
            assert_eq!(got.0, ids, "{name}");
            assert_eq!(got.1.as_deref(), next, "{name}");
        }
        // The end: no cursor.
        let p = page(
            recs[4..].iter().cloned(),
            &TaskQuery {
                limit: 10,
                ..Default::default()
            },
            4,
        );
        assert_eq!((p.tasks.len(), p.next), (2, None));
    }

    /// Retention on the local ledger: past the TTL and over the count bound, the oldest
    /// finished go first; queued work only walks the live index; recent failures are newest
    /// first; the indexes are rebuilt at start.
    #[tokio::test]
    async fn local_ledger_retention_removes_the_oldest_finished_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ledger = LocalLedger::new(store.clone()).unwrap();
        for i in 0..6u64 {
            let id = format!("t{i}");
            let mut r = record(&id);
            r.idempotency_key = Some(format!("k{i}"));
            ledger.admit(r).await.unwrap();
            ledger.start(&id, "n1", 1).await.unwrap();
            let out = if i % 2 == 0 {
                ok_outcome()
            } else {
                Outcome::failed("x", "y")
            };
            ledger.finish(&id, 1, out, 10 + i * 10).await.unwrap();
        }
        ledger.admit(record("live")).await.unwrap();
        assert_eq!(ledger.retained(), 6);
        assert_eq!(ledger.queued().unwrap().len(), 1);
        let failures: Vec<String> = ledger
            .recent_failures(2)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(failures, vec!["t5", "t3"]);
        // TTL: t0 and t1 ended before 30.
        assert_eq!(ledger.purge_finished(30, u64::MAX).await.unwrap(), 2);
        assert!(ledger.get("t1").unwrap().is_none() && ledger.get("t2").unwrap().is_some());
        // Count: keep 1, the newest.
        assert_eq!(ledger.purge_finished(0, 1).await.unwrap(), 3);
        assert_eq!(ledger.retained(), 1);
        assert!(ledger.get("t5").unwrap().is_some() && ledger.get("t4").unwrap().is_none());
        // A purged task's idempotency key is free again.
        let mut again = record("t9");
        again.idempotency_key = Some("k0".into());
        assert!(matches!(
            ledger.admit(again).await.unwrap(),
            Admission::Accepted(_)
        ));
        drop(ledger);
        let ledger = LocalLedger::new(store).unwrap();
        assert_eq!(ledger.retained(), 1);
        assert_eq!(ledger.queued().unwrap().len(), 2);
    }
}

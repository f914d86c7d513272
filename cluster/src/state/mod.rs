//! The replicated state and its `apply`: a deterministic function of (state, disk, batch).
//!
//! No clock (time is the batch's `now_ms`, stamped by the leader), no randomness, ordered maps
//! only, so every replica computes the same state, the same disk bytes and the same replies.
//!
//! Memory holds what decisions need: the live (queued or running) tasks, the nodes, the budget
//! and rate maps, and per-status counts of the finished tasks kept. Everything that grows with
//! the work kept — finished records (input, output, prompt breakdown), idempotency keys, applied
//! spend ids — is written by `apply` through [`Disk`] (see [`crate::disk`]) and read from there
//! on demand. Retention ([`Command::Retain`]) removes the oldest finished records first, at most
//! [`PURGE_BATCH_MAX`] per command, each through the `f/` index (a few key operations each).
//! Sessions and the order of their turns live in [`sessions`].

use std::collections::{BTreeMap, BTreeSet};

use openclaw_proto::codec::{decode, encode};
use openclaw_proto::{CronMark, TaskRecord, TaskStatus};
use serde::{Deserialize, Serialize};

use crate::disk::{key, Disk, DiskRead};
use crate::lease;
use crate::placement::{self, NodeLoad, LEVELS};
use crate::transition;
use crate::types::*;

pub mod memory;
pub mod sessions;
pub use sessions::{SESSION_SWEEP_BATCH_MAX, SESSION_WAITING_MAX};

/// How long applied `Spend` ids are remembered (pruned by `Purge`); a node retries a settlement
/// for well under a minute.
pub const SPEND_IDS_KEEP_MS: u64 = 10 * 60 * 1000;

/// Finished records (and, separately, expired spend ids) one `Purge`/`Retain` command removes at
/// most; the proposer repeats the command while a full batch comes back, so one command stays a
/// short step of `apply` however much is due.
pub const PURGE_BATCH_MAX: u32 = 10_000;

/// What the cluster knows of one node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    pub http_addr: String,
    pub workers: u32,
    /// Alive until this time (leader clock); renewed by heartbeats.
    pub lease_until_ms: u64,
    pub last_heartbeat_ms: u64,
    /// Declared dead by `Expire` (a later heartbeat revives it).
    pub dead: bool,
}

/// One budget scope for the current period: settled spend and the slices nodes hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetScope {
    pub limit: BudgetLimit,
    pub spent_tokens: u64,
    pub spent_cost_usd: f64,
    /// Unreserved allowance each node holds.
    pub slices: BTreeMap<NodeId, Slice>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Slice {
    pub tokens: u64,
    pub cost_usd: f64,
}

/// One rate-limit scope's sliding window, kept as the grants of its last `span + 1` sub-window
/// buckets (at most [`crate::lease::RATE_SPAN_MAX`] + 1 entries).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateWindow {
    /// The newest bucket anyone asked for.
    pub bucket: u64,
    /// Width of a bucket; a change starts a fresh history.
    pub bucket_ms: u64,
    /// Buckets a window spans.
    pub span: u64,
    pub limit: RateLimit,
    /// Granted over the last `span + 1` buckets (what the next grant is checked against).
    pub granted_requests: u64,
    pub granted_tokens: u64,
    /// Grants per bucket: `bucket → (requests, tokens)`.
    pub buckets: BTreeMap<u64, (u64, u64)>,
    /// Grants of the newest bucket, per node.
    pub per_node: BTreeMap<NodeId, (u64, u64)>,
}

/// The in-memory part of the replicated state. (Equality ignores the derived load index.)
///
/// Serialising it writes the control state only: the live tasks are stored one key each on
/// disk (`l/<id>`) and reloaded with [`ClusterState::load_live`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterState {
    /// The live (queued or running) tasks; finished ones are on disk only.
    #[serde(skip)]
    pub tasks: BTreeMap<String, TaskRecord>,
    /// Finished tasks kept on disk, by status.
    pub retained: BTreeMap<String, u64>,
    pub seq: u64,
    pub nodes: BTreeMap<NodeId, NodeState>,
    pub budget_period: String,
    pub budget: BTreeMap<String, BudgetScope>,
    /// Spend per model in the current period: (tokens, cost).
    pub model_spend: BTreeMap<String, (u64, f64)>,
    /// Threshold actions claimed: (period, scope, percent).
    pub thresholds: BTreeSet<(String, String, u32)>,
    pub rate: BTreeMap<String, RateWindow>,
    /// Time of the last applied batch.
    pub now_ms: u64,
    /// Each cron job's latest fired scheduled time (at most [`cron::CRON_MARKS_MAX`] jobs).
    pub cron: BTreeMap<String, CronMark>,
    /// Per-node load, derived from `tasks`; rebuilt after decoding.
    #[serde(skip)]
    loads: BTreeMap<NodeId, ([u32; LEVELS], [u32; LEVELS])>,
    #[serde(skip)]
    loads_valid: bool,
    /// Each session's live tasks, in submission order `(seq, id)`; derived from `tasks`
    /// (rebuilt with the load index).
    #[serde(skip)]
    session_live: BTreeMap<String, BTreeSet<(u64, String)>>,
}

impl PartialEq for ClusterState {
    fn eq(&self, o: &Self) -> bool {
        self.tasks == o.tasks
            && self.retained == o.retained
            && self.seq == o.seq
            && self.nodes == o.nodes
            && self.budget_period == o.budget_period
            && self.budget == o.budget
            && self.model_spend == o.model_spend
            && self.thresholds == o.thresholds
            && self.rate == o.rate
            && self.now_ms == o.now_ms
            && self.cron == o.cron
    }
}

impl ClusterState {
    /// Apply one batch, writing what is not kept in memory to `disk`; returns one reply per
    /// command and the events for the local node.
    pub fn apply(&mut self, req: &Request, disk: &mut dyn Disk) -> (Response, Vec<Event>) {
        if !self.loads_valid {
            self.rebuild_loads();
        }
        // Time never goes backwards, even across a leader change with a skewed clock.
        self.now_ms = self.now_ms.max(req.now_ms);
        let mut events = Vec::new();
        let replies = req
            .cmds
            .iter()
            .map(|c| self.apply_one(c, disk, &mut events))
            .collect();
        (Response { replies }, events)
    }

    fn apply_one(&mut self, cmd: &Command, disk: &mut dyn Disk, ev: &mut Vec<Event>) -> Reply {
        let now = self.now_ms;
        match cmd {
            Command::Admit {
                rec,
                via,
                may_preempt,
            } => self.admit(rec, *via, *may_preempt, disk, ev),
            Command::Start { id, node } => {
                if let Some(rec) = self.tasks.get(id) {
                    if rec.status == TaskStatus::Queued && !self.session_turn_ready(rec) {
                        // An earlier turn of its session is not final yet.
                        return Reply::Rejected(Rejection::SessionBusy {
                            id: id.clone(),
                            session: rec.session_id.clone().unwrap_or_default(),
                        });
                    }
                }
                self.modify(id, disk, ev, |rec| {
                    if rec.owner.as_deref() != Some(owner_name(*node).as_str()) {
                        return Err(Rejection::NotOwner {
                            id: rec.id.clone(),
                            owner: rec.owner.clone().unwrap_or_default(),
                            node: *node,
                        });
                    }
                    transition::start(rec, &owner_name(*node), now)
                })
            }
            Command::Finish { id, epoch, outcome } => {
                let outcome = (**outcome).clone();
                self.modify(id, disk, ev, |rec| {
                    transition::finish(rec, *epoch, outcome, now)
                })
            }
            Command::Requeue { id, epoch, reason } => self.modify(id, disk, ev, |rec| {
                let owner = rec.owner.clone();
                let mut r = transition::requeue(rec, *epoch, *reason)?;
                r.owner = owner;
                Ok(r)
            }),
            Command::Cancel { id } => {
                self.modify(id, disk, ev, |rec| transition::cancel_queued(rec, now))
            }
            Command::Steal { node, max } => self.steal(*node, *max, disk, ev),
            Command::Heartbeat { node, report } => {
                let n = self.nodes.entry(*node).or_default();
                // Back from the dead: the process that held its budget slice is gone (or was
                // cut off), so the slice goes back to the pool as it comes back.
                let revived = n.dead;
                n.http_addr = report.http_addr.clone();
                n.workers = report.workers;
                n.last_heartbeat_ms = now;
                n.lease_until_ms = now.saturating_add(report.lease_ms);
                n.dead = false;
                if revived {
                    self.drop_slices(*node);
                }
                Reply::Ok
            }
            Command::Expire => self.expire(disk, ev),
            Command::Leave { node } => {
                if self.nodes.remove(node).is_none() {
                    return Reply::Rejected(Rejection::UnknownNode(*node));
                }
                self.drop_slices(*node);
                Reply::Moved(self.reassign_orphans(disk, ev))
            }
            Command::Purge { before_ms } => {
                Reply::Purged(self.retain(disk, *before_ms, u64::MAX, PURGE_BATCH_MAX))
            }
            Command::Retain {
                before_ms,
                keep_max,
                max,
            } => {
                Reply::Purged(self.retain(disk, *before_ms, *keep_max, (*max).min(PURGE_BATCH_MAX)))
            }
            Command::CronMark { job, mark } => Reply::Claimed(self.cron_mark(job, mark)),
            Command::PutMemory {
                agent,
                path,
                content,
            } => self.put_memory(disk, ev, agent, path, content),
            Command::DeleteMemory { agent, path } => self.delete_memory(disk, ev, agent, path),
            Command::LeaseBudget {
                node,
                period,
                scope,
                limit,
                want_tokens,
                want_cost_usd,
            } => {
                if !self.roll_period(period) {
                    return Reply::BudgetSlice {
                        tokens: 0,
                        cost_usd: 0.0,
                    };
                }
                let s = self.budget.entry(scope.clone()).or_default();
                s.limit = *limit;
                let free = lease::budget_free(
                    &s.limit,
                    s.spent_tokens,
                    s.spent_cost_usd,
                    s.slices.values().map(|x| (x.tokens, x.cost_usd)),
                );
                let held = s
                    .slices
                    .get(node)
                    .map_or((0, 0.0), |x| (x.tokens, x.cost_usd));
                let (room_t, room_c) = lease::budget_room(held, *want_tokens, *want_cost_usd);
                let (t, c) = lease::budget_grant(free, room_t, room_c);
                let slice = s.slices.entry(*node).or_default();
                slice.tokens += t;
                slice.cost_usd += c;
                Reply::BudgetSlice {
                    tokens: slice.tokens,
                    cost_usd: slice.cost_usd,
                }
            }
            Command::Spend {
                id,
                node,
                period,
                scopes,
                model,
                tokens,
                cost_usd,
                reserved_tokens,
                reserved_cost_usd,
            } => {
                if !self.roll_period(period) {
                    return Reply::Ok;
                }
                if disk.get(&key::spend(id)).is_some() {
                    // Already counted: a retry of a settlement whose first answer was lost.
                    return Reply::Ok;
                }
                // Remembered [`SPEND_IDS_KEEP_MS`] (pruned by `Purge`/`Retain`).
                disk.put(key::spend(id), now.to_be_bytes().to_vec());
                disk.put(key::spend_at(now, id), Vec::new());
                for scope in scopes {
                    let s = self.budget.entry(scope.clone()).or_default();
                    s.spent_tokens = s.spent_tokens.saturating_add(*tokens);
                    s.spent_cost_usd += cost_usd;
                    if let Some(slice) = s.slices.get_mut(node) {
                        slice.tokens = slice.tokens.saturating_sub(*reserved_tokens);
                        slice.cost_usd = (slice.cost_usd - reserved_cost_usd).max(0.0);
                    }
                }
                let m = self.model_spend.entry(model.clone()).or_default();
                m.0 = m.0.saturating_add(*tokens);
                m.1 += cost_usd;
                Reply::Ok
            }
            Command::ReturnBudget {
                node,
                scope,
                tokens,
                cost_usd,
            } => {
                if let Some(s) = self.budget.get_mut(scope) {
                    if let Some(slice) = s.slices.get_mut(node) {
                        slice.tokens = slice.tokens.saturating_sub(*tokens);
                        slice.cost_usd = (slice.cost_usd - cost_usd).max(0.0);
                        if slice.tokens == 0 && slice.cost_usd <= 0.0 {
                            s.slices.remove(node);
                        }
                    }
                }
                Reply::Ok
            }
            Command::ClaimThreshold {
                period,
                scope,
                percent,
            } => {
                if !self.roll_period(period) {
                    return Reply::Claimed(false);
                }
                Reply::Claimed(
                    self.thresholds
                        .insert((period.clone(), scope.clone(), *percent)),
                )
            }
            Command::LeaseRate {
                node,
                scope,
                bucket,
                bucket_ms,
                span,
                limit,
                want_requests,
                want_tokens,
            } => {
                let w = self.rate.entry(scope.clone()).or_default();
                let span = (*span).clamp(1, lease::RATE_SPAN_MAX);
                if *bucket_ms != w.bucket_ms {
                    // The window's width changed: bucket numbers mean other times now.
                    *w = RateWindow {
                        bucket_ms: *bucket_ms,
                        ..RateWindow::default()
                    };
                }
                if *bucket < w.bucket {
                    // A late ask for a bucket that is over: its grant could only be spent late.
                    return Reply::RateSlice {
                        requests: 0,
                        tokens: 0,
                    };
                }
                if *bucket > w.bucket {
                    w.bucket = *bucket;
                    w.per_node.clear();
                }
                w.span = span;
                w.limit = *limit;
                let oldest = w.bucket.saturating_sub(span);
                w.buckets.retain(|b, _| *b >= oldest);
                (w.granted_requests, w.granted_tokens) = lease::total_granted(&w.buckets);
                let (r, t) = lease::rate_grant(
                    &w.limit,
                    w.granted_requests,
                    w.granted_tokens,
                    *want_requests,
                    *want_tokens,
                );
                w.granted_requests += r;
                w.granted_tokens += t;
                if r > 0 || t > 0 {
                    let here = w.buckets.entry(w.bucket).or_default();
                    here.0 += r;
                    here.1 += t;
                }
                let mine = w.per_node.entry(*node).or_default();
                mine.0 += r;
                mine.1 += t;
                Reply::RateSlice {
                    requests: r,
                    tokens: t,
                }
            }
            Command::ReturnRate {
                node,
                scope,
                bucket,
                bucket_ms,
                requests,
                tokens,
            } => {
                if let Some(w) = self.rate.get_mut(scope) {
                    if w.bucket_ms == *bucket_ms {
                        lease::return_rate(&mut w.buckets, *bucket, *requests, *tokens);
                        (w.granted_requests, w.granted_tokens) = lease::total_granted(&w.buckets);
                        if *bucket == w.bucket {
                            if let Some(mine) = w.per_node.get_mut(node) {
                                mine.0 = mine.0.saturating_sub(*requests);
                                mine.1 = mine.1.saturating_sub(*tokens);
                            }
                        }
                    }
                }
                Reply::Ok
            }
            Command::RecordTurn {
                turn,
                node,
                messages_max,
                sessions_max,
            } => {
                self.record_turn(disk, turn, *node, *messages_max, *sessions_max);
                Reply::Ok
            }
            Command::SweepSessions {
                before_ms,
                keep_max,
                max,
            } => Reply::Purged(self.sweep_sessions(disk, *before_ms, *keep_max, *max)),
            Command::RemoveSession { id } => {
                Reply::Purged(u64::from(self.remove_session(disk, id)))
            }
        }
    }

    /// Is `node` alive at the state's time?
    pub fn is_live(&self, node: NodeId) -> bool {
        self.nodes
            .get(&node)
            .is_some_and(|n| !n.dead && n.lease_until_ms > self.now_ms)
    }

    /// Loads of the live nodes, by id.
    pub fn live_loads(&self) -> Vec<NodeLoad> {
        self.nodes
            .iter()
            .filter(|(id, _)| self.is_live(**id))
            .map(|(id, n)| self.load_of(*id, n.workers))
            .collect()
    }

    /// One node's load, computed from the tasks (valid without the derived index).
    pub fn load_of(&self, id: NodeId, workers: u32) -> NodeLoad {
        let (queued, running) = if self.loads_valid {
            self.loads.get(&id).copied().unwrap_or_default()
        } else {
            let mut q = [0u32; LEVELS];
            let mut r = [0u32; LEVELS];
            for rec in self.tasks.values() {
                if owner_id(rec) == Some(id) {
                    count(rec, &mut q, &mut r, 1);
                }
            }
            (q, r)
        };
        NodeLoad {
            id,
            workers,
            queued,
            running,
        }
    }

    /// Does any unfinished task sit on a node that is not live (while some node is)? The
    /// leader's sweep proposes `Expire` when this holds.
    pub fn has_orphans(&self) -> bool {
        let owners: Vec<NodeId> = if self.loads_valid {
            self.loads
                .iter()
                .filter(|(_, (q, r))| q.iter().chain(r.iter()).any(|n| *n > 0))
                .map(|(id, _)| *id)
                .collect()
        } else {
            self.tasks
                .values()
                .filter(|r| !r.status.is_final())
                .filter_map(owner_id)
                .collect()
        };
        owners.iter().any(|o| !self.is_live(*o)) && self.nodes.keys().any(|n| self.is_live(*n))
    }

    /// Queued tasks owned by `node`, in admission order.
    pub fn queued_on(&self, node: NodeId) -> Vec<&TaskRecord> {
        let mut v: Vec<&TaskRecord> = self
            .tasks
            .values()
            .filter(|r| r.status == TaskStatus::Queued && owner_id(r) == Some(node))
            .collect();
        v.sort_by_key(|r| r.seq);
        v
    }

    fn rebuild_loads(&mut self) {
        self.loads.clear();
        self.session_live.clear();
        let tasks = std::mem::take(&mut self.tasks);
        for rec in tasks.values() {
            if let Some(o) = owner_id(rec) {
                let e = self.loads.entry(o).or_default();
                count(rec, &mut e.0, &mut e.1, 1);
            }
            self.index_session(rec, 1);
        }
        self.tasks = tasks;
        self.loads_valid = true;
    }

    /// Load the live tasks stored by `apply` (after decoding the control state).
    pub fn load_live<D: DiskRead + ?Sized>(&mut self, disk: &D) {
        self.tasks = disk
            .range(key::LIVE, &key::end(key::LIVE), usize::MAX)
            .into_iter()
            .filter_map(|(_, v)| dec::<TaskRecord>(&v))
            .map(|r| (r.id.clone(), r))
            .collect();
        self.loads_valid = false;
    }

    /// A task, live or finished (read from `disk`).
    pub fn task<D: DiskRead + ?Sized>(&self, disk: &D, id: &str) -> Option<TaskRecord> {
        match self.tasks.get(id) {
            Some(r) => Some(r.clone()),
            None => disk.get(&key::task(id)).and_then(|v| dec(&v)),
        }
    }

    /// Finished tasks kept, all statuses.
    pub fn retained_total(&self) -> u64 {
        self.retained.values().sum()
    }

    /// Replace (or insert) a live task, keeping the load index right.
    fn put_live(&mut self, rec: TaskRecord, disk: &mut dyn Disk) {
        self.remove_live(&rec.id, disk);
        if let Some(o) = owner_id(&rec) {
            let e = self.loads.entry(o).or_default();
            count(&rec, &mut e.0, &mut e.1, 1);
        }
        self.index_session(&rec, 1);
        disk.put(key::live(&rec.id), enc(&rec));
        self.tasks.insert(rec.id.clone(), rec);
    }

    fn remove_live(&mut self, id: &str, disk: &mut dyn Disk) {
        if let Some(old) = self.tasks.remove(id) {
            if let Some(o) = owner_id(&old) {
                let e = self.loads.entry(o).or_default();
                count(&old, &mut e.0, &mut e.1, -1);
            }
            self.index_session(&old, -1);
            disk.del(&key::live(id));
        }
    }

    /// Store `rec` where its status says: live in memory (and `l/`), finished on disk only.
    fn store(&mut self, old: Option<&TaskRecord>, rec: TaskRecord, disk: &mut dyn Disk) {
        if let Some(old) = old.filter(|o| o.status.is_final()) {
            self.forget_finished(old, disk);
        }
        if rec.status.is_final() {
            self.remove_live(&rec.id, disk);
            let at = rec.finished_at_ms.unwrap_or(self.now_ms);
            disk.put(key::finished(at, &rec.id), Vec::new());
            disk.put(key::task(&rec.id), enc(&rec));
            *self
                .retained
                .entry(rec.status.as_str().to_string())
                .or_default() += 1;
        } else {
            self.put_live(rec, disk);
        }
    }

    /// Remove a finished record and its index entries from disk.
    fn forget_finished(&mut self, rec: &TaskRecord, disk: &mut dyn Disk) {
        let at = rec.finished_at_ms.unwrap_or(self.now_ms);
        disk.del(&key::finished(at, &rec.id));
        disk.del(&key::task(&rec.id));
        if let Some(k) = &rec.idempotency_key {
            if disk.get(&key::idempotency(k)).as_deref() == Some(rec.id.as_bytes()) {
                disk.del(&key::idempotency(k));
            }
        }
        let status = rec.status.as_str();
        if let Some(n) = self.retained.get_mut(status) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.retained.remove(status);
            }
        }
    }

    /// Remove finished records, oldest first: every one that ended before `before_ms`, and
    /// more while over `keep_max`; at most `max`. Also forgets spend ids past their window.
    fn retain(&mut self, disk: &mut dyn Disk, before_ms: u64, keep_max: u64, max: u32) -> u64 {
        let over = self.retained_total().saturating_sub(keep_max);
        let mut n = 0u64;
        let oldest = disk.range(key::FINISHED, &key::end(key::FINISHED), max as usize);
        for (k, _) in oldest {
            let Some((at, id)) = key::split_timed(&k) else {
                disk.del(&k);
                continue;
            };
            if n >= over && at >= before_ms {
                break;
            }
            match disk
                .get(&key::task(&id))
                .and_then(|v| dec::<TaskRecord>(&v))
            {
                Some(rec) => self.forget_finished(&rec, disk),
                None => disk.del(&k),
            }
            n += 1;
        }
        let keep_from = self.now_ms.saturating_sub(SPEND_IDS_KEEP_MS);
        let old_spends = disk.range(
            key::SPEND_AT,
            &key::spend_at(keep_from, ""),
            PURGE_BATCH_MAX as usize,
        );
        for (k, _) in old_spends {
            if let Some((_, id)) = key::split_timed(&k) {
                disk.del(&key::spend(&id));
            }
            disk.del(&k);
        }
        n
    }

    fn modify(
        &mut self,
        id: &str,
        disk: &mut dyn Disk,
        ev: &mut Vec<Event>,
        f: impl FnOnce(TaskRecord) -> Result<TaskRecord, Rejection>,
    ) -> Reply {
        let Some(old) = self.task(&*disk, id) else {
            return Reply::Rejected(Rejection::NotFound(id.to_string()));
        };
        match f(old.clone()) {
            Ok(rec) => {
                emit(&old, &rec, ev);
                self.store(Some(&old), rec.clone(), disk);
                if rec.status.is_final() && !old.status.is_final() {
                    self.next_turn_event(&rec, ev);
                }
                Reply::Task(Box::new(rec))
            }
            Err(e) => Reply::Rejected(e),
        }
    }

    fn admit(
        &mut self,
        rec: &TaskRecord,
        via: NodeId,
        may_preempt: bool,
        disk: &mut dyn Disk,
        ev: &mut Vec<Event>,
    ) -> Reply {
        if let Some(k) = &rec.idempotency_key {
            let first = disk
                .get(&key::idempotency(k))
                .and_then(|id| String::from_utf8(id).ok())
                .and_then(|id| self.task(&*disk, &id));
            if let Some(first) = first {
                return Reply::Duplicate(Box::new(first));
            }
        }
        if let Some(same) = self.task(&*disk, &rec.id) {
            // The same command applied twice (a retried forward): idempotent.
            return Reply::Duplicate(Box::new(same));
        }
        let session_owner = match &rec.session_id {
            Some(s) => {
                if self.session_waiting(s) >= SESSION_WAITING_MAX {
                    return Reply::Rejected(Rejection::SessionFull {
                        session: s.clone(),
                        max: SESSION_WAITING_MAX as u64,
                    });
                }
                self.session_owner(&*disk, s)
            }
            None => None,
        };
        let live = self.live_loads();
        let owner = session_owner
            .or_else(|| placement::place(&live, rec.priority, may_preempt))
            .unwrap_or(via);
        let mut r = rec.clone();
        self.seq += 1;
        r.seq = self.seq;
        r.status = TaskStatus::Queued;
        r.owner = Some(owner_name(owner));
        r.epoch = 0;
        if let Some(k) = &r.idempotency_key {
            disk.put(key::idempotency(k), r.id.as_bytes().to_vec());
        }
        ev.push(Event::Queued {
            id: r.id.clone(),
            owner,
        });
        self.store(None, r.clone(), disk);
        Reply::Task(Box::new(r))
    }

    fn steal(
        &mut self,
        thief: NodeId,
        max: u32,
        disk: &mut dyn Disk,
        ev: &mut Vec<Event>,
    ) -> Reply {
        if !self.is_live(thief) {
            return Reply::Moved(Vec::new());
        }
        let live = self.live_loads();
        let plan = placement::steal_plan(&live, thief, max);
        let mut moved = Vec::new();
        for (victim, n) in plan {
            // The victim's most urgent, oldest queued tasks.
            let mut q: Vec<(u8, u64, String)> = self
                .tasks
                .values()
                .filter(|r| r.status == TaskStatus::Queued && owner_id(r) == Some(victim))
                // A session's waiting turn stays with the turn before it.
                .filter(|r| self.session_turn_ready(r))
                .map(|r| (r.priority.level(), r.seq, r.id.clone()))
                .collect();
            q.sort();
            for (_, _, id) in q.into_iter().take(n as usize) {
                if let Reply::Task(_) = self.modify(&id, disk, ev, |r| {
                    transition::reassign(r, &owner_name(thief))
                }) {
                    moved.push(id);
                }
            }
        }
        Reply::Moved(moved)
    }

    fn expire(&mut self, disk: &mut dyn Disk, ev: &mut Vec<Event>) -> Reply {
        let now = self.now_ms;
        let newly: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| !n.dead && n.lease_until_ms <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in &newly {
            if let Some(n) = self.nodes.get_mut(id) {
                n.dead = true;
            }
        }
        // A dead node's budget slices stay withheld (its unsettled estimate) until they expire.
        for id in self.dead_leases_due(now) {
            self.drop_slices(id);
        }
        let moved = self.reassign_orphans(disk, ev);
        if newly.is_empty() {
            Reply::Moved(moved)
        } else {
            Reply::Expired(newly)
        }
    }

    /// Move every unfinished task whose owner is not live to a live node, most urgent first.
    fn reassign_orphans(&mut self, disk: &mut dyn Disk, ev: &mut Vec<Event>) -> Vec<String> {
        let orphaned_owners: Vec<NodeId> = self
            .loads
            .iter()
            .filter(|(id, (q, r))| {
                !self.is_live(**id) && (q.iter().sum::<u32>() + r.iter().sum::<u32>()) > 0
            })
            .map(|(id, _)| *id)
            .collect();
        if orphaned_owners.is_empty() {
            return Vec::new();
        }
        let mut live = self.live_loads();
        if live.is_empty() {
            return Vec::new();
        }
        let mut orphans: Vec<(u8, u64, String)> = self
            .tasks
            .values()
            .filter(|r| {
                !r.status.is_final() && owner_id(r).is_some_and(|o| orphaned_owners.contains(&o))
            })
            .map(|r| (r.priority.level(), r.seq, r.id.clone()))
            .collect();
        orphans.sort();
        let mut moved = Vec::new();
        for (level, _, id) in orphans {
            let Some(p) = openclaw_proto::Priority::from_level(level) else {
                continue;
            };
            let together = self
                .tasks
                .get(&id)
                .and_then(|r| r.session_id.clone())
                .and_then(|s| self.session_owner(&*disk, &s));
            let Some(to) = together.or_else(|| placement::place(&live, p, false)) else {
                break;
            };
            if let Reply::Task(_) =
                self.modify(&id, disk, ev, |r| transition::reassign(r, &owner_name(to)))
            {
                if let Some(l) = live.iter_mut().find(|l| l.id == to) {
                    l.queued[level as usize] += 1;
                }
                moved.push(id);
            }
        }
        moved
    }

    /// Budget slices held by nodes that are down in this state's liveness view, per scope:
    /// `(scope, node, tokens, cost, expires ms)`, the unsettled estimate of each
    /// ([`lease::dead_lease`]), at `now`.
    pub fn dead_leases(&self, now: u64) -> Vec<(String, NodeId, u64, f64, u64)> {
        let mut out = Vec::new();
        for (scope, b) in &self.budget {
            for (node, x) in &b.slices {
                let Some(n) = self.nodes.get(node) else {
                    continue;
                };
                let live = !n.dead && n.lease_until_ms > now;
                if let Some((t, c, exp)) = lease::dead_lease(
                    (x.tokens, x.cost_usd),
                    live,
                    n.lease_until_ms,
                    n.last_heartbeat_ms,
                    now,
                ) {
                    out.push((scope.clone(), *node, t, c, exp));
                }
            }
        }
        out
    }

    /// Dead nodes whose withheld budget slices have expired at `now` (an `Expire` returns
    /// them to the pool).
    pub fn dead_leases_due(&self, now: u64) -> Vec<NodeId> {
        let holders: BTreeSet<NodeId> = self
            .budget
            .values()
            .flat_map(|b| b.slices.keys().copied())
            .collect();
        holders
            .into_iter()
            .filter(|id| {
                self.nodes.get(id).is_some_and(|n| {
                    n.dead
                        && lease::dead_lease_expires(n.lease_until_ms, n.last_heartbeat_ms) <= now
                })
            })
            .collect()
    }

    fn drop_slices(&mut self, node: NodeId) {
        for s in self.budget.values_mut() {
            s.slices.remove(&node);
        }
    }

    /// Move to `period` if it is newer; false if it is older than the current one (stale).
    fn roll_period(&mut self, period: &str) -> bool {
        match period.cmp(self.budget_period.as_str()) {
            std::cmp::Ordering::Equal => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Greater => {
                self.budget_period = period.to_string();
                self.budget.clear();
                self.model_spend.clear();
                self.thresholds.retain(|(p, _, _)| p.as_str() >= period);
                true
            }
        }
    }
}

/// Encode a value for the disk. Encoding our own types cannot fail in practice; if it did, the
/// value is stored empty (and reads as absent) on every replica alike.
fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    encode(v).unwrap_or_else(|e| {
        tracing::error!(error = %e, "encoding a state value failed");
        Vec::new()
    })
}

fn dec<T: serde::de::DeserializeOwned>(v: &[u8]) -> Option<T> {
    decode(v).ok()
}

fn count(rec: &TaskRecord, q: &mut [u32; LEVELS], r: &mut [u32; LEVELS], d: i32) {
    let l = (rec.priority.level() as usize).min(LEVELS - 1);
    let slot = match rec.status {
        TaskStatus::Queued => &mut q[l],
        TaskStatus::Running => &mut r[l],
        _ => return,
    };
    *slot = slot.saturating_add_signed(d);
}

/// Events for one record change.
fn emit(old: &TaskRecord, new: &TaskRecord, ev: &mut Vec<Event>) {
    let old_owner = owner_id(old);
    let new_owner = owner_id(new);
    if !old.status.is_final() && old_owner != new_owner {
        if let Some(from) = old_owner {
            ev.push(Event::Revoked {
                id: old.id.clone(),
                from,
            });
        }
    }
    if new.status == TaskStatus::Queued
        && (old.status != TaskStatus::Queued || old_owner != new_owner)
    {
        if let Some(owner) = new_owner {
            ev.push(Event::Queued {
                id: new.id.clone(),
                owner,
            });
        }
    }
    if new.status.is_final() && !old.status.is_final() {
        if old.status == TaskStatus::Queued {
            if let Some(from) = old_owner {
                ev.push(Event::Revoked {
                    id: old.id.clone(),
                    from,
                });
            }
        }
        ev.push(Event::Finished { id: new.id.clone() });
    }
}

pub mod cron;

#[cfg(test)]
mod tests;

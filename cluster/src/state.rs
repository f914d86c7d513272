//! The replicated state and its `apply`: a pure, deterministic function of (state, batch).
//!
//! No clock (time is the batch's `now_ms`, stamped by the leader), no randomness, ordered maps
//! only, so every replica computes the same state and the same replies.

use std::collections::{BTreeMap, BTreeSet};

use openclaw_proto::{TaskRecord, TaskStatus};
use serde::{Deserialize, Serialize};

use crate::lease;
use crate::placement::{self, NodeLoad, LEVELS};
use crate::transition;
use crate::types::*;

/// How long applied `Spend` ids are remembered (pruned by `Purge`); a node retries a settlement
/// for well under a minute.
pub const SPEND_IDS_KEEP_MS: u64 = 10 * 60 * 1000;

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

/// One rate-limit scope's current minute: what was granted, to whom.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateWindow {
    pub minute: u64,
    pub limit: RateLimit,
    pub granted_requests: u64,
    pub granted_tokens: u64,
    pub per_node: BTreeMap<NodeId, (u64, u64)>,
}

/// The whole replicated state. (Equality ignores the derived load index.)
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterState {
    pub tasks: BTreeMap<String, TaskRecord>,
    pub idempotency: BTreeMap<String, String>,
    pub seq: u64,
    pub nodes: BTreeMap<NodeId, NodeState>,
    pub budget_period: String,
    pub budget: BTreeMap<String, BudgetScope>,
    /// Spend per model in the current period: (tokens, cost).
    pub model_spend: BTreeMap<String, (u64, f64)>,
    /// Ids of applied `Spend`s (→ time applied), kept [`SPEND_IDS_KEEP_MS`] so a retried
    /// settlement is not counted twice.
    pub spends: BTreeMap<String, u64>,
    /// Threshold actions claimed: (period, scope, percent).
    pub thresholds: BTreeSet<(String, String, u32)>,
    pub rate: BTreeMap<String, RateWindow>,
    /// Time of the last applied batch.
    pub now_ms: u64,
    /// Per-node load, derived from `tasks`; rebuilt after decoding.
    #[serde(skip)]
    loads: BTreeMap<NodeId, ([u32; LEVELS], [u32; LEVELS])>,
    #[serde(skip)]
    loads_valid: bool,
}

impl PartialEq for ClusterState {
    fn eq(&self, o: &Self) -> bool {
        self.tasks == o.tasks
            && self.idempotency == o.idempotency
            && self.seq == o.seq
            && self.nodes == o.nodes
            && self.budget_period == o.budget_period
            && self.budget == o.budget
            && self.model_spend == o.model_spend
            && self.spends == o.spends
            && self.thresholds == o.thresholds
            && self.rate == o.rate
            && self.now_ms == o.now_ms
    }
}

impl ClusterState {
    /// Apply one batch; returns one reply per command and the events for the local node.
    pub fn apply(&mut self, req: &Request) -> (Response, Vec<Event>) {
        if !self.loads_valid {
            self.rebuild_loads();
        }
        // Time never goes backwards, even across a leader change with a skewed clock.
        self.now_ms = self.now_ms.max(req.now_ms);
        let mut events = Vec::new();
        let replies = req
            .cmds
            .iter()
            .map(|c| self.apply_one(c, &mut events))
            .collect();
        (Response { replies }, events)
    }

    fn apply_one(&mut self, cmd: &Command, ev: &mut Vec<Event>) -> Reply {
        let now = self.now_ms;
        match cmd {
            Command::Admit {
                rec,
                via,
                may_preempt,
            } => self.admit(rec, *via, *may_preempt, ev),
            Command::Start { id, node } => self.modify(id, ev, |rec| {
                if rec.owner.as_deref() != Some(owner_name(*node).as_str()) {
                    return Err(Rejection::NotOwner {
                        id: rec.id.clone(),
                        owner: rec.owner.clone().unwrap_or_default(),
                        node: *node,
                    });
                }
                transition::start(rec, &owner_name(*node), now)
            }),
            Command::Finish { id, epoch, outcome } => {
                let outcome = (**outcome).clone();
                self.modify(id, ev, |rec| transition::finish(rec, *epoch, outcome, now))
            }
            Command::Requeue { id, epoch, reason } => self.modify(id, ev, |rec| {
                let owner = rec.owner.clone();
                let mut r = transition::requeue(rec, *epoch, *reason)?;
                r.owner = owner;
                Ok(r)
            }),
            Command::Cancel { id } => {
                self.modify(id, ev, |rec| transition::cancel_queued(rec, now))
            }
            Command::Steal { node, max } => self.steal(*node, *max, ev),
            Command::Heartbeat { node, report } => {
                let n = self.nodes.entry(*node).or_default();
                n.http_addr = report.http_addr.clone();
                n.workers = report.workers;
                n.last_heartbeat_ms = now;
                n.lease_until_ms = now.saturating_add(report.lease_ms);
                n.dead = false;
                Reply::Ok
            }
            Command::Expire => self.expire(ev),
            Command::Leave { node } => {
                if self.nodes.remove(node).is_none() {
                    return Reply::Rejected(Rejection::UnknownNode(*node));
                }
                self.drop_slices(*node);
                Reply::Moved(self.reassign_orphans(ev))
            }
            Command::Purge { before_ms } => {
                let old: Vec<String> = self
                    .tasks
                    .values()
                    .filter(|r| r.status.is_final() && r.finished_at_ms.unwrap_or(0) < *before_ms)
                    .map(|r| r.id.clone())
                    .collect();
                for id in &old {
                    if let Some(rec) = self.tasks.remove(id) {
                        if let Some(key) = &rec.idempotency_key {
                            if self.idempotency.get(key) == Some(id) {
                                self.idempotency.remove(key);
                            }
                        }
                    }
                }
                let keep_from = now.saturating_sub(SPEND_IDS_KEEP_MS);
                self.spends.retain(|_, at| *at >= keep_from);
                Reply::Purged(old.len() as u64)
            }
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
                let (t, c) = lease::budget_grant(free, *want_tokens, *want_cost_usd);
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
                if self.spends.insert(id.clone(), now).is_some() {
                    // Already counted: a retry of a settlement whose first answer was lost.
                    return Reply::Ok;
                }
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
                minute,
                limit,
                want_requests,
                want_tokens,
            } => {
                let w = self.rate.entry(scope.clone()).or_default();
                if *minute > w.minute {
                    *w = RateWindow {
                        minute: *minute,
                        ..RateWindow::default()
                    };
                } else if *minute < w.minute {
                    return Reply::RateSlice {
                        requests: 0,
                        tokens: 0,
                    };
                }
                w.limit = *limit;
                let (r, t) = lease::rate_grant(
                    &w.limit,
                    w.granted_requests,
                    w.granted_tokens,
                    *want_requests,
                    *want_tokens,
                );
                w.granted_requests += r;
                w.granted_tokens += t;
                let mine = w.per_node.entry(*node).or_default();
                mine.0 += r;
                mine.1 += t;
                Reply::RateSlice {
                    requests: r,
                    tokens: t,
                }
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
        for rec in self.tasks.values() {
            if let Some(o) = owner_id(rec) {
                let e = self.loads.entry(o).or_default();
                count(rec, &mut e.0, &mut e.1, 1);
            }
        }
        self.loads_valid = true;
    }

    /// Replace (or insert) a task, keeping the load index right.
    fn put(&mut self, rec: TaskRecord) {
        if let Some(old) = self.tasks.get(&rec.id) {
            if let Some(o) = owner_id(old) {
                let e = self.loads.entry(o).or_default();
                count(old, &mut e.0, &mut e.1, -1);
            }
        }
        if let Some(o) = owner_id(&rec) {
            let e = self.loads.entry(o).or_default();
            count(&rec, &mut e.0, &mut e.1, 1);
        }
        self.tasks.insert(rec.id.clone(), rec);
    }

    fn modify(
        &mut self,
        id: &str,
        ev: &mut Vec<Event>,
        f: impl FnOnce(TaskRecord) -> Result<TaskRecord, Rejection>,
    ) -> Reply {
        let Some(old) = self.tasks.get(id).cloned() else {
            return Reply::Rejected(Rejection::NotFound(id.to_string()));
        };
        match f(old.clone()) {
            Ok(rec) => {
                emit(&old, &rec, ev);
                self.put(rec.clone());
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
        ev: &mut Vec<Event>,
    ) -> Reply {
        if let Some(key) = &rec.idempotency_key {
            if let Some(first) = self.idempotency.get(key).and_then(|id| self.tasks.get(id)) {
                return Reply::Duplicate(Box::new(first.clone()));
            }
        }
        if self.tasks.contains_key(&rec.id) {
            // The same command applied twice (a retried forward): idempotent.
            return Reply::Duplicate(Box::new(self.tasks[&rec.id].clone()));
        }
        let live = self.live_loads();
        let owner = placement::place(&live, rec.priority, may_preempt).unwrap_or(via);
        let mut r = rec.clone();
        self.seq += 1;
        r.seq = self.seq;
        r.status = TaskStatus::Queued;
        r.owner = Some(owner_name(owner));
        r.epoch = 0;
        if let Some(key) = &r.idempotency_key {
            self.idempotency.insert(key.clone(), r.id.clone());
        }
        ev.push(Event::Queued {
            id: r.id.clone(),
            owner,
        });
        self.put(r.clone());
        Reply::Task(Box::new(r))
    }

    fn steal(&mut self, thief: NodeId, max: u32, ev: &mut Vec<Event>) -> Reply {
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
                .map(|r| (r.priority.level(), r.seq, r.id.clone()))
                .collect();
            q.sort();
            for (_, _, id) in q.into_iter().take(n as usize) {
                if let Reply::Task(_) =
                    self.modify(&id, ev, |r| transition::reassign(r, &owner_name(thief)))
                {
                    moved.push(id);
                }
            }
        }
        Reply::Moved(moved)
    }

    fn expire(&mut self, ev: &mut Vec<Event>) -> Reply {
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
            self.drop_slices(*id);
        }
        let moved = self.reassign_orphans(ev);
        if newly.is_empty() {
            Reply::Moved(moved)
        } else {
            Reply::Expired(newly)
        }
    }

    /// Move every unfinished task whose owner is not live to a live node, most urgent first.
    fn reassign_orphans(&mut self, ev: &mut Vec<Event>) -> Vec<String> {
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
            let Some(to) = placement::place(&live, p, false) else {
                break;
            };
            if let Reply::Task(_) =
                self.modify(&id, ev, |r| transition::reassign(r, &owner_name(to)))
            {
                if let Some(l) = live.iter_mut().find(|l| l.id == to) {
                    l.queued[level as usize] += 1;
                }
                moved.push(id);
            }
        }
        moved
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

#[cfg(test)]
mod tests {
    use super::*;
    use openclaw_proto::Priority;

    fn rec(id: &str, p: Priority) -> TaskRecord {
        TaskRecord::queued(id, "main", "hi", p)
    }

    fn hb(node: NodeId, workers: u32) -> Command {
        Command::Heartbeat {
            node,
            report: NodeReport {
                http_addr: format!("h{node}"),
                workers,
                lease_ms: 1000,
            },
        }
    }

    fn admit(id: &str, p: Priority) -> Command {
        Command::Admit {
            rec: Box::new(rec(id, p)),
            via: 1,
            may_preempt: p == Priority::Critical,
        }
    }

    fn run(s: &mut ClusterState, now_ms: u64, cmds: Vec<Command>) -> (Vec<Reply>, Vec<Event>) {
        let (r, e) = s.apply(&Request { now_ms, cmds });
        (r.replies, e)
    }

    fn task(r: &Reply) -> &TaskRecord {
        match r {
            Reply::Task(t) => t,
            other => panic!("not a task: {other:?}"),
        }
    }

    #[test]
    fn admission_spreads_over_live_nodes_and_honours_idempotency() {
        let mut s = ClusterState::default();
        run(&mut s, 0, vec![hb(1, 1), hb(2, 1), hb(3, 1)]);
        let (r, ev) = run(
            &mut s,
            10,
            vec![
                admit("a", Priority::Normal),
                admit("b", Priority::Normal),
                admit("c", Priority::Normal),
            ],
        );
        let owners: Vec<_> = r.iter().map(|r| task(r).owner.clone().unwrap()).collect();
        assert_eq!(owners, vec!["1", "2", "3"]);
        assert_eq!(task(&r[2]).seq, 3);
        assert_eq!(ev.len(), 3);

        let mut k = rec("d", Priority::Normal);
        k.idempotency_key = Some("key".into());
        let mut k2 = rec("e", Priority::Normal);
        k2.idempotency_key = Some("key".into());
        let (r, _) = run(
            &mut s,
            11,
            vec![
                Command::Admit {
                    rec: Box::new(k),
                    via: 1,
                    may_preempt: false,
                },
                Command::Admit {
                    rec: Box::new(k2),
                    via: 1,
                    may_preempt: false,
                },
            ],
        );
        assert!(matches!(&r[1], Reply::Duplicate(t) if t.id == "d"));
        assert!(!s.tasks.contains_key("e"));
    }

    #[test]
    fn only_the_owner_starts_and_only_the_current_epoch_finishes() {
        let mut s = ClusterState::default();
        run(&mut s, 0, vec![hb(1, 2), hb(2, 2)]);
        run(&mut s, 1, vec![admit("a", Priority::High)]);
        let (r, _) = run(
            &mut s,
            2,
            vec![Command::Start {
                id: "a".into(),
                node: 2,
            }],
        );
        assert!(matches!(&r[0], Reply::Rejected(Rejection::NotOwner { .. })));
        let (r, _) = run(
            &mut s,
            3,
            vec![Command::Start {
                id: "a".into(),
                node: 1,
            }],
        );
        let t = task(&r[0]);
        assert_eq!((t.status, t.epoch, t.attempts), (TaskStatus::Running, 1, 1));
        let done = Box::new(Outcome::failed("x", "y"));
        let (r, ev) = run(
            &mut s,
            4,
            vec![
                Command::Finish {
                    id: "a".into(),
                    epoch: 0,
                    outcome: done.clone(),
                },
                Command::Finish {
                    id: "a".into(),
                    epoch: 1,
                    outcome: done.clone(),
                },
                Command::Finish {
                    id: "a".into(),
                    epoch: 1,
                    outcome: done,
                },
            ],
        );
        assert!(matches!(&r[0], Reply::Rejected(Rejection::Fenced { .. })));
        assert_eq!(task(&r[1]).status, TaskStatus::Failed);
        assert!(matches!(
            &r[2],
            Reply::Rejected(Rejection::WrongState { .. })
        ));
        assert_eq!(ev, vec![Event::Finished { id: "a".into() }]);
    }

    #[test]
    fn a_dead_nodes_tasks_move_and_its_old_run_is_fenced() {
        let mut s = ClusterState::default();
        run(&mut s, 0, vec![hb(1, 1), hb(2, 1)]);
        run(
            &mut s,
            1,
            vec![admit("a", Priority::Normal), admit("b", Priority::Normal)],
        );
        let (r, _) = run(
            &mut s,
            2,
            vec![Command::Start {
                id: "b".into(),
                node: 2,
            }],
        );
        let old_epoch = task(&r[0]).epoch;
        // Node 1 keeps heartbeating, node 2 goes silent.
        run(&mut s, 900, vec![hb(1, 1)]);
        assert!(!s.has_orphans(), "node 2 is still within its lease at 900");
        let (r, ev) = run(&mut s, 1500, vec![Command::Expire]);
        assert_eq!(r[0], Reply::Expired(vec![2]));
        assert!(!s.has_orphans(), "everything moved to node 1");
        assert!(ev.contains(&Event::Revoked {
            id: "b".into(),
            from: 2
        }));
        assert!(ev.contains(&Event::Queued {
            id: "b".into(),
            owner: 1
        }));
        let b = &s.tasks["b"];
        assert_eq!(
            (b.status, b.owner.as_deref()),
            (TaskStatus::Queued, Some("1"))
        );
        assert!(b.epoch > old_epoch);
        // The old owner wakes up and reports: fenced.
        let (r, _) = run(
            &mut s,
            1600,
            vec![Command::Finish {
                id: "b".into(),
                epoch: old_epoch,
                outcome: Box::new(Outcome::cancelled()),
            }],
        );
        assert!(matches!(&r[0], Reply::Rejected(_)));
        // Expire again: nothing more to do.
        let (r, _) = run(&mut s, 1700, vec![Command::Expire]);
        assert_eq!(r[0], Reply::Moved(vec![]));
    }

    #[test]
    fn idle_nodes_steal_from_backlogged_ones() {
        let mut s = ClusterState::default();
        run(&mut s, 0, vec![hb(1, 1)]);
        let cmds = (0..5)
            .map(|i| admit(&format!("t{i}"), Priority::Normal))
            .collect();
        run(&mut s, 1, cmds);
        run(
            &mut s,
            2,
            vec![Command::Start {
                id: "t0".into(),
                node: 1,
            }],
        );
        run(&mut s, 3, vec![hb(2, 2)]);
        let (r, ev) = run(&mut s, 4, vec![Command::Steal { node: 2, max: 8 }]);
        assert_eq!(r[0], Reply::Moved(vec!["t1".into(), "t2".into()]));
        assert_eq!(ev.len(), 4);
        assert_eq!(s.tasks["t1"].owner.as_deref(), Some("2"));
        assert_eq!(s.tasks["t3"].owner.as_deref(), Some("1"));
    }

    #[test]
    fn budget_slices_never_pass_the_limit_and_thresholds_fire_once() {
        let mut s = ClusterState::default();
        let limit = BudgetLimit {
            tokens: Some(1000),
            cost_usd: None,
        };
        let lease = |node, want| Command::LeaseBudget {
            node,
            period: "2026-11".into(),
            scope: "total".into(),
            limit,
            want_tokens: want,
            want_cost_usd: 0.0,
        };
        let (r, _) = run(&mut s, 0, vec![lease(1, 600), lease(2, 600), lease(3, 600)]);
        let granted: Vec<u64> = r
            .iter()
            .map(|r| match r {
                Reply::BudgetSlice { tokens, .. } => *tokens,
                _ => panic!(),
            })
            .collect();
        assert_eq!(granted, vec![600, 400, 0]);
        let spend = Command::Spend {
            id: "s1".into(),
            node: 1,
            period: "2026-11".into(),
            scopes: vec!["total".into()],
            model: "m".into(),
            tokens: 250,
            cost_usd: 0.01,
            reserved_tokens: 300,
            reserved_cost_usd: 0.0,
        };
        run(&mut s, 1, vec![spend.clone(), spend]);
        let t = &s.budget["total"];
        assert_eq!((t.spent_tokens, t.slices[&1].tokens), (250, 300));
        // An idle node hands part of its slice back.
        let give_back = |tokens| Command::ReturnBudget {
            node: 2,
            scope: "total".into(),
            tokens,
            cost_usd: 0.0,
        };
        run(&mut s, 1, vec![give_back(100)]);
        assert_eq!(s.budget["total"].slices[&2].tokens, 300);
        run(&mut s, 1, vec![give_back(300)]);
        assert!(!s.budget["total"].slices.contains_key(&2));
        // Node 2 takes its 400 again, so the free remainder below stays 50.
        let (r, _) = run(&mut s, 1, vec![lease(2, 400)]);
        assert_eq!(
            r[0],
            Reply::BudgetSlice {
                tokens: 400,
                cost_usd: 0.0
            }
        );
        // 1000 - 250 spent - 300 - 400 held = 50 free.
        let (r, _) = run(&mut s, 2, vec![lease(3, 600)]);
        assert_eq!(
            r[0],
            Reply::BudgetSlice {
                tokens: 50,
                cost_usd: 0.0
            }
        );
        let claim = |p: &str| Command::ClaimThreshold {
            period: p.into(),
            scope: "total".into(),
            percent: 80,
        };
        let (r, _) = run(
            &mut s,
            3,
            vec![claim("2026-11"), claim("2026-11"), claim("2026-10")],
        );
        assert_eq!(
            r,
            vec![
                Reply::Claimed(true),
                Reply::Claimed(false),
                Reply::Claimed(false)
            ]
        );
        // A new period starts from zero.
        let (r, _) = run(
            &mut s,
            4,
            vec![Command::LeaseBudget {
                node: 1,
                period: "2026-12".into(),
                scope: "total".into(),
                limit,
                want_tokens: 1000,
                want_cost_usd: 0.0,
            }],
        );
        assert_eq!(
            r[0],
            Reply::BudgetSlice {
                tokens: 1000,
                cost_usd: 0.0
            }
        );
        let (r, _) = run(&mut s, 5, vec![claim("2026-12")]);
        assert_eq!(r[0], Reply::Claimed(true));
    }

    #[test]
    fn rate_slices_stay_within_the_minute_quota() {
        let mut s = ClusterState::default();
        let limit = RateLimit {
            requests: Some(10),
            tokens: None,
        };
        let ask = |node, minute, want| Command::LeaseRate {
            node,
            scope: "gpt-4o".into(),
            minute,
            limit,
            want_requests: want,
            want_tokens: 100,
        };
        let (r, _) = run(
            &mut s,
            0,
            vec![ask(1, 5, 4), ask(2, 5, 4), ask(3, 5, 4), ask(1, 4, 4)],
        );
        let got: Vec<u64> = r
            .iter()
            .map(|r| match r {
                Reply::RateSlice { requests, .. } => *requests,
                _ => panic!(),
            })
            .collect();
        assert_eq!(got, vec![4, 4, 2, 0]);
        let (r, _) = run(&mut s, 60_000, vec![ask(3, 6, 4)]);
        assert_eq!(
            r[0],
            Reply::RateSlice {
                requests: 4,
                tokens: 100
            }
        );
    }

    #[test]
    fn apply_is_deterministic_and_survives_a_snapshot_round_trip() {
        let batches: Vec<Request> = (0..20u64)
            .map(|i| Request {
                now_ms: i * 300,
                cmds: vec![
                    hb(1 + i % 3, 2),
                    admit(
                        &format!("t{i}"),
                        Priority::from_level((i % 5) as u8).unwrap(),
                    ),
                    Command::Start {
                        id: format!("t{}", i / 2),
                        node: 1 + (i / 2) % 3,
                    },
                    Command::Expire,
                    Command::Steal {
                        node: 1 + i % 3,
                        max: 2,
                    },
                ],
            })
            .collect();
        let mut a = ClusterState::default();
        let mut b = ClusterState::default();
        for (i, req) in batches.iter().enumerate() {
            let ra = a.apply(req);
            if i == 10 {
                // b restarts from a snapshot of itself here.
                let bytes = openclaw_proto::codec::encode(&b).unwrap();
                b = openclaw_proto::codec::decode(&bytes).unwrap();
            }
            let rb = b.apply(req);
            assert_eq!(ra, rb, "batch {i}");
        }
        assert_eq!(a.tasks, b.tasks);
        assert_eq!(a.loads, b.loads);
    }
}

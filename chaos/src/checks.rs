//! The invariants, as pure functions over what a run observed. No I/O, no clock: the run
//! collects observations, these decide, and the tests feed them hand-made ones.
//!
//! - [`LeaderLog`]: at most one leader per term, from every `(term, leader)` any node reported.
//! - [`check_tasks`]: no acknowledged task lost; every one final (succeeded, or failed with a
//!   reason) with the same final view on every node.
//! - [`check_calls`]: provider calls per task; a task called more often than it was attempted
//!   ran more than its attempts explain.
//! - [`check_spend`]: the replicated budget spend is what the simulator served, less calls cut
//!   off by a fault (or a superseded attempt) before they settled, and within the limit plus
//!   one reservation per node.
//! - [`check_rate`]: any window of the rate limit's length at the simulator (sliding, not
//!   calendar-aligned) holds at most the cluster-wide limit + one call per node; across a hot
//!   reload, the old limit before, the new one after.
//! - [`longest_gap`]: the longest time without an acknowledged write.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use openclaw_proto::{Priority, TaskStatus};

use openclaw_harness::status::{ClusterStatus, SimCall, TaskSnapshot};

/// Terms the leader log remembers; beyond that new terms are counted but not checked.
pub const TERMS_MAX: usize = 100_000;

/// One task the cluster acknowledged with a 202.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    pub id: String,
    /// Index of the node that answered 202.
    pub node: usize,
    pub priority: Priority,
    /// Milliseconds since the run started.
    pub at_ms: u64,
}

/// A broken invariant, with what is needed to look into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    TwoLeaders {
        term: u64,
        /// (leader id, observer node index, ms since start) of each distinct leader.
        leaders: Vec<(String, usize, u64)>,
    },
    Lost {
        id: String,
        acked_by: usize,
    },
    NotFinal {
        id: String,
        status: TaskStatus,
    },
    FailedWithoutReason {
        id: String,
    },
    Cancelled {
        id: String,
    },
    Divergent {
        id: String,
        detail: String,
    },
    Unverified {
        id: String,
        detail: String,
    },
    UnexplainedCalls {
        id: String,
        calls: u32,
        attempts: u32,
    },
    NotConverged {
        detail: String,
    },
    NotRecovered {
        round: u32,
        detail: String,
    },
    /// The live nodes report different replicated spends (or none at all).
    SpendDisagrees {
        detail: String,
    },
    /// The cluster counted more tokens than the provider served: a spend applied twice.
    SpendOverServed {
        spent: u64,
        served: u64,
    },
    /// More served tokens never reached the replicated spend than faults can explain.
    UnsettledSpend {
        served: u64,
        spent: u64,
        bound: u64,
        detail: String,
    },
    /// Spend passed the limit by more than one reservation per node.
    OverBudget {
        spent: u64,
        limit: u64,
        bound: u64,
    },
    /// The provider saw more calls of a limited model in one rate window than the cluster may
    /// grant.
    RateExceeded {
        model: String,
        /// Start of the window (ms since the Unix epoch).
        start_ms: u64,
        window_ms: u64,
        calls: u64,
        bound: u64,
    },
    /// A node did not report a hot-reloaded limit in time (`GET /api/limits`).
    LimitNotLive {
        node: usize,
        detail: String,
    },
    /// A round that faulted only followers changed the leader or the term.
    LeaderDeposed {
        round: u32,
        detail: String,
    },
    /// Pressure mode: a limit that was meant to bind never did.
    NoPressure {
        detail: String,
    },
}

impl Violation {
    /// A short name of the invariant it breaks.
    pub fn kind(&self) -> &'static str {
        match self {
            Violation::TwoLeaders { .. } => "two-leaders-in-a-term",
            Violation::Lost { .. } => "lost-task",
            Violation::NotFinal { .. } => "not-final",
            Violation::FailedWithoutReason { .. } => "failed-without-reason",
            Violation::Cancelled { .. } => "cancelled",
            Violation::Divergent { .. } => "divergent-task",
            Violation::Unverified { .. } => "unverified-task",
            Violation::UnexplainedCalls { .. } => "unexplained-provider-calls",
            Violation::NotConverged { .. } => "not-converged",
            Violation::NotRecovered { .. } => "not-recovered",
            Violation::SpendDisagrees { .. } => "divergent-spend",
            Violation::SpendOverServed { .. } => "spend-over-served",
            Violation::UnsettledSpend { .. } => "unexplained-unsettled-spend",
            Violation::OverBudget { .. } => "over-budget",
            Violation::RateExceeded { .. } => "rate-limit-exceeded",
            Violation::LimitNotLive { .. } => "limit-change-not-live",
            Violation::LeaderDeposed { .. } => "leader-deposed-without-leader-fault",
            Violation::NoPressure { .. } => "limit-never-bound",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.kind())?;
        match self {
            Violation::TwoLeaders { term, leaders } => {
                write!(f, "term {term} had leaders")?;
                for (l, obs, at) in leaders {
                    write!(f, " {l} (seen by node {obs} at {at} ms)")?;
                }
                Ok(())
            }
            Violation::Lost { id, acked_by } => {
                write!(f, "task {id} (acknowledged by node {acked_by}) is unknown to every node")
            }
            Violation::NotFinal { id, status } => {
                write!(f, "task {id} is still {} after the drain", status.as_str())
            }
            Violation::FailedWithoutReason { id } => write!(f, "task {id} failed with no error"),
            Violation::Cancelled { id } => write!(f, "task {id} was cancelled; the run never cancels"),
            Violation::Divergent { id, detail } => write!(f, "task {id}: {detail}"),
            Violation::Unverified { id, detail } => write!(f, "task {id}: {detail}"),
            Violation::UnexplainedCalls {
                id,
                calls,
                attempts,
            } => write!(
                f,
                "task {id}: {calls} provider calls but {attempts} attempt(s) — it ran more often than it was started"
            ),
            Violation::NotConverged { detail } => write!(f, "{detail}"),
            Violation::NotRecovered { round, detail } => {
                write!(f, "after round {round}: {detail}")
            }
            Violation::SpendDisagrees { detail } => write!(f, "{detail}"),
            Violation::SpendOverServed { spent, served } => write!(
                f,
                "the cluster spent {spent} tokens but the simulator served only {served}: a spend was counted twice"
            ),
            Violation::UnsettledSpend {
                served,
                spent,
                bound,
                detail,
            } => write!(
                f,
                "the simulator served {served} tokens, the cluster spent {spent}: {} unsettled, more than the {bound} that {detail} explain",
                served - spent
            ),
            Violation::OverBudget { spent, limit, bound } => write!(
                f,
                "spent {spent} tokens of a {limit} limit, more than the {bound} that one reservation per node allows"
            ),
            Violation::RateExceeded {
                model,
                start_ms,
                window_ms,
                calls,
                bound,
            } => write!(
                f,
                "model {model}: {calls} provider calls in the {window_ms} ms from {start_ms} (Unix ms), more than {bound}"
            ),
            Violation::LimitNotLive { node, detail } => write!(f, "node {node}: {detail}"),
            Violation::LeaderDeposed { round, detail } => write!(f, "round {round}: {detail}"),
            Violation::NoPressure { detail } => write!(f, "{detail}"),
        }
    }
}

/// Every `(term, leader)` any node reported during the run.
#[derive(Debug, Clone, Default)]
pub struct LeaderLog {
    /// term → leader id → first witness (observer index, ms).
    by_term: BTreeMap<u64, BTreeMap<String, (usize, u64)>>,
    observations: u64,
    unchecked: u64,
}

impl LeaderLog {
    /// Record what `observer` answered at `at_ms`: the leader it names, and itself when its
    /// role says leader.
    pub fn record(&mut self, observer: usize, at_ms: u64, s: &ClusterStatus) {
        if let Some(l) = &s.leader {
            self.claim(observer, at_ms, s.term, l);
        }
        if s.role == "leader" {
            self.claim(observer, at_ms, s.term, &s.node_id);
        }
    }

    /// Record that `observer` saw `leader` leading `term`.
    pub fn claim(&mut self, observer: usize, at_ms: u64, term: u64, leader: &str) {
        self.observations += 1;
        if !self.by_term.contains_key(&term) && self.by_term.len() >= TERMS_MAX {
            self.unchecked += 1;
            return;
        }
        self.by_term
            .entry(term)
            .or_default()
            .entry(leader.to_string())
            .or_insert((observer, at_ms));
    }

    /// Terms in which a leader was seen.
    pub fn terms(&self) -> usize {
        self.by_term.len()
    }

    pub fn observations(&self) -> u64 {
        self.observations
    }

    /// Claims not checked because [`TERMS_MAX`] terms were already recorded.
    pub fn unchecked(&self) -> u64 {
        self.unchecked
    }

    /// One violation per term that had more than one leader.
    pub fn violations(&self) -> Vec<Violation> {
        self.by_term
            .iter()
            .filter(|(_, leaders)| leaders.len() > 1)
            .map(|(term, leaders)| Violation::TwoLeaders {
                term: *term,
                leaders: leaders
                    .iter()
                    .map(|(l, (obs, at))| (l.clone(), *obs, *at))
                    .collect(),
            })
            .collect()
    }
}

/// What one node said about one task at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Found(TaskSnapshot),
    /// The node answered 404.
    Missing,
    /// No usable answer (timeout, 5xx, bad JSON).
    NoAnswer(String),
}

/// Final states of the acknowledged tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskTally {
    pub acked: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub cancelled: usize,
    pub lost: usize,
    pub not_final: usize,
    pub divergent: usize,
    pub unverified: usize,
    /// Attempts of each task found (for explaining provider calls).
    pub attempts: BTreeMap<String, u32>,
}

/// Check every acknowledged task against what the nodes say about it at the end.
pub fn check_tasks(
    acked: &[Acked],
    seen: &BTreeMap<String, Vec<(usize, Seen)>>,
) -> (TaskTally, Vec<Violation>) {
    let mut tally = TaskTally::default();
    let mut violations = Vec::new();
    let mut done = BTreeSet::new();
    let empty = Vec::new();
    for a in acked {
        if !done.insert(a.id.as_str()) {
            continue; // the same id acknowledged twice (idempotent retry)
        }
        tally.acked += 1;
        let views = seen.get(&a.id).unwrap_or(&empty);
        let found: Vec<(usize, &TaskSnapshot)> = views
            .iter()
            .filter_map(|(i, s)| match s {
                Seen::Found(t) => Some((*i, t)),
                _ => None,
            })
            .collect();
        let missing: Vec<usize> = views
            .iter()
            .filter(|(_, s)| matches!(s, Seen::Missing))
            .map(|(i, _)| *i)
            .collect();
        let Some((_, first)) = found.first() else {
            if missing.is_empty() {
                tally.unverified += 1;
                violations.push(Violation::Unverified {
                    id: a.id.clone(),
                    detail: "no node answered for it".into(),
                });
            } else {
                tally.lost += 1;
                violations.push(Violation::Lost {
                    id: a.id.clone(),
                    acked_by: a.node,
                });
            }
            continue;
        };
        tally.attempts.insert(a.id.clone(), first.attempts);
        let key = first.final_key();
        let differing: Vec<String> = found
            .iter()
            .filter(|(_, t)| t.final_key() != key)
            .map(|(i, t)| {
                format!(
                    "node {i} says {} (attempts {}, node {:?}, epoch {:?})",
                    t.status.as_str(),
                    t.attempts,
                    t.node,
                    t.epoch
                )
            })
            .collect();
        // The nodes are read one after another: a task that is still moving (the drain ended
        // before it was final) may be read queued on one node and running on the next, which
        // says nothing about the replicas. Such a task is not final; views are compared only
        // once every node has it final.
        let moving = found.iter().find(|(_, t)| !t.status.is_final());
        if let (false, true, Some((_, t))) = (differing.is_empty(), missing.is_empty(), moving) {
            tally.not_final += 1;
            violations.push(Violation::NotFinal {
                id: a.id.clone(),
                status: t.status,
            });
            continue;
        }
        if !differing.is_empty() || !missing.is_empty() {
            tally.divergent += 1;
            let mut detail = format!(
                "node {} says {} (attempts {}, node {:?}, epoch {:?})",
                found[0].0,
                first.status.as_str(),
                first.attempts,
                first.node,
                first.epoch
            );
            for d in differing {
                detail.push_str("; ");
                detail.push_str(&d);
            }
            if !missing.is_empty() {
                detail.push_str(&format!("; nodes {missing:?} do not know it"));
            }
            violations.push(Violation::Divergent {
                id: a.id.clone(),
                detail,
            });
            continue;
        }
        match first.status {
            TaskStatus::Succeeded => tally.succeeded += 1,
            TaskStatus::Failed => {
                tally.failed += 1;
                let reason = first
                    .error
                    .as_ref()
                    .is_some_and(|e| !e.code.is_empty() || !e.message.is_empty());
                if !reason {
                    violations.push(Violation::FailedWithoutReason { id: a.id.clone() });
                }
            }
            TaskStatus::Cancelled => {
                tally.cancelled += 1;
                violations.push(Violation::Cancelled { id: a.id.clone() });
            }
            status @ (TaskStatus::Queued | TaskStatus::Running) => {
                tally.not_final += 1;
                violations.push(Violation::NotFinal {
                    id: a.id.clone(),
                    status,
                });
            }
        }
    }
    (tally, violations)
}

/// Provider calls seen by the simulator, against the acknowledged tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallTally {
    /// Calls made for acknowledged tasks.
    pub calls: u64,
    /// Calls beyond the first, summed over tasks called more than once.
    pub duplicated: u64,
    /// Of those, calls explained by the task's attempts (a re-run after failover or fencing).
    pub explained: u64,
    /// Tasks called more than once.
    pub tasks_called_again: usize,
    /// Calls for task ids the run never got a 202 for (a submit whose answer was lost).
    pub unacknowledged: u64,
}

/// Count provider calls per acknowledged task. A task with more calls than attempts is a
/// violation: each attempt (start under a new epoch) calls the provider at most once when the
/// simulator injects no faults.
pub fn check_calls(
    calls_per_task: &BTreeMap<String, u32>,
    attempts: &BTreeMap<String, u32>,
    acked: &[Acked],
) -> (CallTally, Vec<Violation>) {
    let acked_ids: BTreeSet<&str> = acked.iter().map(|a| a.id.as_str()).collect();
    let mut tally = CallTally::default();
    let mut violations = Vec::new();
    for (id, &calls) in calls_per_task {
        if !acked_ids.contains(id.as_str()) {
            tally.unacknowledged += u64::from(calls);
            continue;
        }
        tally.calls += u64::from(calls);
        if calls <= 1 {
            continue;
        }
        tally.tasks_called_again += 1;
        let extra = u64::from(calls - 1);
        tally.duplicated += extra;
        match attempts.get(id) {
            Some(&a) if calls <= a => tally.explained += extra,
            Some(&a) => violations.push(Violation::UnexplainedCalls {
                id: id.clone(),
                calls,
                attempts: a,
            }),
            // Not found at the end: already reported by `check_tasks`.
            None => {}
        }
    }
    (tally, violations)
}

/// What is known about the cluster's budget at the end of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpendFacts {
    /// Each live node's replicated spend of the checked scope (`None`: it lists no such scope).
    pub views: Vec<(usize, Option<u64>)>,
    /// Tokens the simulator served (input + output of every call in its log).
    pub served: u64,
    /// Whether the simulator's log holds every call (otherwise `served` is a lower bound and the
    /// comparisons with it are skipped).
    pub served_complete: bool,
    /// The largest tokens of one call.
    pub largest_call: u64,
    /// Nodes hit by a fault: one per kill, pause or restart, one per node of a partition's
    /// minority.
    pub node_faults: u64,
    /// Workers per node: calls a node can have in flight when a fault hits it.
    pub workers: u64,
    /// Calls beyond each task's first: a superseded attempt (preempted, fenced) may be cut off
    /// after the provider saw it and before it settled.
    pub repeated_calls: u64,
    pub nodes: u64,
    /// The scope's token limit.
    pub limit: u64,
    /// The most one reservation can hold.
    pub reservation: u64,
}

/// The budget check's figures, for the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpendTally {
    /// The spend every live node agrees on (`None` when they do not).
    pub spent: Option<u64>,
    pub served: u64,
    /// The most `served − spent` may be: (node faults × workers + repeated calls) × the largest
    /// call.
    pub unsettled_max: u64,
    pub limit: u64,
    /// The most `spent` may be: the limit plus one reservation per node.
    pub spent_max: u64,
}

/// The budget invariants: (1) every live node reports the same replicated spend; (2) it is at
/// most what the simulator served, and short of it by no more than faults explain — a call in
/// flight on a node that is killed, paused or cut off may reach the provider and never settle,
/// and so may a superseded attempt; (3) it is within the limit plus one reservation per node.
pub fn check_spend(f: &SpendFacts) -> (SpendTally, Vec<Violation>) {
    let unsettled_max = (f.node_faults * f.workers + f.repeated_calls) * f.largest_call;
    let mut tally = SpendTally {
        spent: None,
        served: f.served,
        unsettled_max,
        limit: f.limit,
        spent_max: f.limit.saturating_add(f.nodes * f.reservation),
    };
    let mut violations = Vec::new();
    let distinct: BTreeSet<Option<u64>> = f.views.iter().map(|(_, s)| *s).collect();
    let spent = match distinct.into_iter().collect::<Vec<_>>().as_slice() {
        [] => {
            violations.push(Violation::SpendDisagrees {
                detail: "no live node answered for the budget".into(),
            });
            return (tally, violations);
        }
        // Nothing leased or spent yet is a spend of 0 (a run without calls).
        [None] if f.served == 0 => 0,
        [None] => {
            violations.push(Violation::SpendDisagrees {
                detail: format!(
                    "the simulator served {} tokens but no node reports a budget spend",
                    f.served
                ),
            });
            return (tally, violations);
        }
        [Some(s)] => *s,
        _ => {
            let each: Vec<String> = f
                .views
                .iter()
                .map(|(i, s)| match s {
                    Some(s) => format!("node {i} {s}"),
                    None => format!("node {i} none"),
                })
                .collect();
            violations.push(Violation::SpendDisagrees {
                detail: format!("nodes report different spends: {}", each.join(", ")),
            });
            return (tally, violations);
        }
    };
    tally.spent = Some(spent);
    if f.served_complete {
        if spent > f.served {
            violations.push(Violation::SpendOverServed {
                spent,
                served: f.served,
            });
        } else if f.served - spent > unsettled_max {
            violations.push(Violation::UnsettledSpend {
                served: f.served,
                spent,
                bound: unsettled_max,
                detail: format!(
                    "({} node faults × {} workers + {} repeated calls) × {} tokens",
                    f.node_faults, f.workers, f.repeated_calls, f.largest_call
                ),
            });
        }
    }
    if spent > tally.spent_max {
        violations.push(Violation::OverBudget {
            spent,
            limit: f.limit,
            bound: tally.spent_max,
        });
    }
    (tally, violations)
}

/// Pressure mode: the budget as the live nodes saw it when the load stopped, before the run
/// raised the limit to let the held work finish.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HoldFacts {
    /// Each live node's replicated spend of the checked scope.
    pub views: Vec<(usize, Option<u64>)>,
    /// Each live node's `GET /api/budget` state of the scope (`ok`, `downgraded`, `paused`).
    pub states: Vec<(usize, String)>,
    /// The token limit the run set to bind.
    pub limit: u64,
    pub nodes: u64,
    /// The most one reservation can hold.
    pub reservation: u64,
    /// Tokens the simulator served to critical tasks until then: critical work is admitted
    /// past a limit by design.
    pub critical_tokens: u64,
}

/// The figures of the budget under pressure, for the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HoldTally {
    /// The largest spend a live node reported.
    pub spent: Option<u64>,
    /// Nodes whose budget state was `paused` (non-critical work held).
    pub held_on: Vec<usize>,
    pub limit: u64,
    /// The most `spent` may be: the limit, one reservation per node, and the critical work.
    pub bound: u64,
}

/// The budget under pressure: it must have bound (some node holds non-critical work), and
/// the spend stays within the limit plus one reservation per node plus what critical tasks
/// were served.
pub fn check_hold(f: &HoldFacts) -> (HoldTally, Vec<Violation>) {
    let bound = f
        .limit
        .saturating_add(f.nodes * f.reservation)
        .saturating_add(f.critical_tokens);
    let tally = HoldTally {
        spent: f.views.iter().filter_map(|(_, s)| *s).max(),
        held_on: f
            .states
            .iter()
            .filter(|(_, s)| s == "paused")
            .map(|(i, _)| *i)
            .collect(),
        limit: f.limit,
        bound,
    };
    let mut violations = Vec::new();
    if tally.held_on.is_empty() {
        violations.push(Violation::NoPressure {
            detail: format!(
                "the budget of {} tokens never held work back: no node was paused when the load stopped (states {:?}, spent {:?})",
                f.limit, f.states, tally.spent
            ),
        });
    }
    if let Some(spent) = tally.spent.filter(|s| *s > bound) {
        violations.push(Violation::OverBudget {
            spent,
            limit: f.limit,
            bound,
        });
    }
    (tally, violations)
}

/// A cluster-wide rate limit the run set: `requests` calls of `model` per window, and the
/// change a hot reload made to it during the run, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateSpec {
    pub model: String,
    pub window_ms: u64,
    pub requests: u64,
    pub change: Option<RateChange>,
}

/// A limit changed by a hot reload in the middle of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateChange {
    /// When the new limit was written to the nodes' config files (ms since the Unix epoch,
    /// the simulator's clock).
    pub from_ms: u64,
    /// When the last node reported it (`GET /api/limits`), or gave up waiting.
    pub until_ms: u64,
    /// The new limit per window.
    pub requests: u64,
}

impl RateSpec {
    /// The limit a window starting at `start_ms` is held to: the old one for a window that
    /// ended before the change was written, the new one for a window that starts after every
    /// node reported it, and the larger of the two for a window across the change (the
    /// transition allowance: grants under the old limit may still arrive).
    pub fn limit_at(&self, start_ms: u64) -> u64 {
        match &self.change {
            None => self.requests,
            Some(c) if start_ms.saturating_add(self.window_ms) <= c.from_ms => self.requests,
            Some(c) if start_ms >= c.until_ms => c.requests,
            Some(c) => self.requests.max(c.requests),
        }
    }
}

/// The rate check's figures, for the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateTally {
    /// Calls of the limited model.
    pub calls: u64,
    /// (start ms, calls) of the busiest window of `window_ms` anywhere in the run.
    pub busiest: Option<(u64, u64)>,
    /// Windows, not overlapping, that held as many calls as their limit (the limit bound).
    pub at_limit: usize,
    /// Of those, windows after the limit change.
    pub at_limit_after_change: usize,
    /// The most calls a window may have: its limit plus one per node (a grant made just
    /// before a window may reach the provider in it); the largest over the run.
    pub bound: u64,
}

/// Sorted call times of `model`.
fn call_times(calls: &[SimCall], model: &str) -> Vec<u64> {
    let mut t: Vec<u64> = calls
        .iter()
        .filter(|c| c.model == model)
        .map(|c| c.at_ms)
        .collect();
    t.sort_unstable();
    t
}

/// For each call `i` of the sorted `times`: the calls in the window of `window_ms` starting at
/// it (`[t_i, t_i + w)`) and in the one ending with it (`(t_i − w, t_i]`). Two pointers, O(n).
/// Every window of length `w` holds a subset of one of these, so they are the only candidates
/// for the most calls in a window.
pub fn sliding_counts(times: &[u64], window_ms: u64) -> Vec<(u64, u64)> {
    let w = window_ms.max(1);
    let n = times.len();
    let mut out = vec![(0u64, 0u64); n];
    let mut j = 0;
    for i in 0..n {
        j = j.max(i);
        while j < n && times[j] < times[i].saturating_add(w) {
            j += 1;
        }
        out[i].0 = (j - i) as u64;
    }
    let mut k = 0;
    for i in 0..n {
        while times[k].saturating_add(w) <= times[i] {
            k += 1;
        }
        out[i].1 = (i + 1 - k) as u64;
    }
    out
}

/// The cluster-wide rate limit, sliding: ANY window of `window_ms` at the simulator (its call
/// log's arrival times) holds at most [`RateSpec::limit_at`] its start + one call per node.
/// Checked on the windows starting and ending at each call ([`sliding_counts`]): with a limit
/// that only rises or only falls over the run these include the worst window for every set
/// of calls. Overlapping violating windows are reported once (the first).
pub fn check_rate(calls: &[SimCall], spec: &RateSpec, nodes: u64) -> (RateTally, Vec<Violation>) {
    let w = spec.window_ms.max(1);
    let times = call_times(calls, &spec.model);
    let counts = sliding_counts(&times, w);
    let mut tally = RateTally {
        calls: times.len() as u64,
        bound: spec.limit_at(0).max(spec.limit_at(u64::MAX / 2)) + nodes,
        ..RateTally::default()
    };
    let mut violations = Vec::new();
    // Windows to check: (start, calls).
    let mut windows: Vec<(u64, u64)> = Vec::with_capacity(times.len() * 2);
    for (i, &(from_here, up_to_here)) in counts.iter().enumerate() {
        windows.push((times[i], from_here));
        windows.push(((times[i] + 1).saturating_sub(w), up_to_here));
    }
    windows.sort_unstable();
    let (mut at_limit_until, mut after_until) = (0u64, 0u64);
    // Overlapping violating windows make one violation: the worst of them.
    let mut group: Option<(u64, Violation)> = None;
    for &(start, n) in &windows {
        if tally.busiest.is_none_or(|(_, b)| n > b) {
            tally.busiest = Some((start, n));
        }
        let limit = spec.limit_at(start);
        if n >= limit && start >= at_limit_until {
            tally.at_limit += 1;
            at_limit_until = start + w;
        }
        let after = spec.change.as_ref().is_some_and(|c| start >= c.until_ms);
        if after && n >= limit && start >= after_until {
            tally.at_limit_after_change += 1;
            after_until = start + w;
        }
        let bound = limit + nodes;
        if n <= bound {
            continue;
        }
        let v = Violation::RateExceeded {
            model: spec.model.clone(),
            start_ms: start,
            window_ms: w,
            calls: n,
            bound,
        };
        match &mut group {
            Some((first, worst)) if start < *first + w => {
                if matches!(worst, Violation::RateExceeded { calls, .. } if n > *calls) {
                    *worst = v;
                }
            }
            _ => {
                if let Some((_, worst)) = group.replace((start, v)) {
                    violations.push(worst);
                }
            }
        }
    }
    if let Some((_, worst)) = group {
        violations.push(worst);
    }
    (tally, violations)
}

/// A round that faulted only followers (paused one, or cut a minority without the leader)
/// must leave the leader and the term as they were (pre-vote): `before` and `after` are the
/// agreed `(leader id, term)` at its start and after its recovery wait.
pub fn check_leader_kept(
    round: u32,
    before: Option<&(String, u64)>,
    after: Option<&(String, u64)>,
) -> Option<Violation> {
    match (before, after) {
        (Some(b), Some(a)) if a != b => Some(Violation::LeaderDeposed {
            round,
            detail: format!(
                "only followers were faulted, yet the leader went from {} (term {}) to {} (term {})",
                b.0, b.1, a.0, a.1
            ),
        }),
        (Some(b), None) => Some(Violation::LeaderDeposed {
            round,
            detail: format!(
                "only followers were faulted, yet the nodes no longer agreed on a leader after it (before: {} term {})",
                b.0, b.1
            ),
        }),
        _ => None,
    }
}

/// The longest stretch of `from_ms..to_ms` without an event (e.g. an acknowledged submit):
/// `(start_ms, length_ms)`. Events outside the span are ignored.
pub fn longest_gap(events_ms: &[u64], from_ms: u64, to_ms: u64) -> (u64, u64) {
    let mut t: Vec<u64> = events_ms
        .iter()
        .copied()
        .filter(|&x| x >= from_ms && x <= to_ms)
        .collect();
    t.sort_unstable();
    let mut best = (from_ms, 0);
    let mut prev = from_ms;
    for x in t.into_iter().chain(std::iter::once(to_ms)) {
        if x.saturating_sub(prev) > best.1 {
            best = (prev, x - prev);
        }
        prev = x;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use openclaw_harness::status::TaskError;

    fn status(node: &str, leader: Option<&str>, term: u64, members: usize) -> ClusterStatus {
        ClusterStatus {
            node_id: node.into(),
            leader: leader.map(str::to_string),
            term,
            role: if leader == Some(node) {
                "leader".into()
            } else {
                "follower".into()
            },
            nodes: (0..members)
                .map(|i| openclaw_harness::status::NodeStatus {
                    id: format!("n{i}"),
                    ..Default::default()
                })
                .collect(),
            tasks: BTreeMap::from([("succeeded".to_string(), 3)]),
            budgets: Vec::new(),
        }
    }

    fn acked(id: &str) -> Acked {
        Acked {
            id: id.into(),
            node: 1,
            priority: Priority::Normal,
            at_ms: 0,
        }
    }

    fn snap(id: &str, status: TaskStatus, attempts: u32) -> TaskSnapshot {
        TaskSnapshot {
            id: id.into(),
            status,
            attempts,
            node: Some("n1".into()),
            epoch: Some(u64::from(attempts)),
            error: None,
        }
    }

    #[test]
    fn two_leaders_in_one_term_is_a_violation() {
        let mut log = LeaderLog::default();
        log.record(0, 10, &status("n0", Some("n0"), 3, 3));
        log.record(1, 12, &status("n1", Some("n0"), 3, 3));
        log.record(2, 20, &status("n2", Some("n2"), 4, 3));
        assert!(log.violations().is_empty());
        assert_eq!(log.terms(), 2);
        // A partitioned old leader claiming the same term as the new one.
        log.record(1, 30, &status("n1", Some("n1"), 4, 3));
        let v = log.violations();
        assert_eq!(v.len(), 1);
        match &v[0] {
            Violation::TwoLeaders { term, leaders } => {
                assert_eq!(*term, 4);
                let ids: Vec<&str> = leaders.iter().map(|(l, _, _)| l.as_str()).collect();
                assert_eq!(ids, vec!["n1", "n2"]);
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn a_node_without_leader_claims_nothing() {
        let mut log = LeaderLog::default();
        log.record(0, 1, &status("n0", None, 7, 3));
        assert_eq!(log.terms(), 0);
    }

    #[test]
    fn task_table() {
        let ok = |s: TaskSnapshot| Seen::Found(s);
        let failed_with_reason = TaskSnapshot {
            error: Some(TaskError {
                code: "provider_error".into(),
                message: "500".into(),
            }),
            ..snap("f", TaskStatus::Failed, 1)
        };
        let seen = BTreeMap::from([
            (
                "good".to_string(),
                vec![
                    (0, ok(snap("good", TaskStatus::Succeeded, 1))),
                    (1, ok(snap("good", TaskStatus::Succeeded, 1))),
                ],
            ),
            (
                "gone".to_string(),
                vec![(0, Seen::Missing), (1, Seen::Missing)],
            ),
            (
                "half".to_string(),
                vec![
                    (0, ok(snap("half", TaskStatus::Succeeded, 2))),
                    (1, Seen::Missing),
                ],
            ),
            (
                "split".to_string(),
                vec![
                    (0, ok(snap("split", TaskStatus::Succeeded, 1))),
                    (1, ok(snap("split", TaskStatus::Succeeded, 2))),
                ],
            ),
            (
                "stuck".to_string(),
                vec![(0, ok(snap("stuck", TaskStatus::Running, 1)))],
            ),
            // Read queued on one node and running on the next: still moving, not divergent.
            (
                "moving".to_string(),
                vec![
                    (0, ok(snap("moving", TaskStatus::Queued, 0))),
                    (1, ok(snap("moving", TaskStatus::Running, 1))),
                ],
            ),
            // Final on one node, running on another: not final yet either.
            (
                "lagging".to_string(),
                vec![
                    (0, ok(snap("lagging", TaskStatus::Succeeded, 1))),
                    (1, ok(snap("lagging", TaskStatus::Running, 1))),
                ],
            ),
            ("f".to_string(), vec![(0, ok(failed_with_reason))]),
            (
                "bare".to_string(),
                vec![(0, ok(snap("bare", TaskStatus::Failed, 1)))],
            ),
            (
                "dark".to_string(),
                vec![(0, Seen::NoAnswer("timeout".into()))],
            ),
        ]);
        let ids = [
            "good", "gone", "half", "split", "stuck", "moving", "lagging", "f", "bare", "dark",
            "never", "good",
        ];
        let acked: Vec<Acked> = ids.iter().map(|i| acked(i)).collect();
        let (tally, v) = check_tasks(&acked, &seen);
        let kinds: Vec<(&str, &str)> = v
            .iter()
            .map(|v| match v {
                Violation::Lost { id, .. }
                | Violation::NotFinal { id, .. }
                | Violation::FailedWithoutReason { id }
                | Violation::Divergent { id, .. }
                | Violation::Unverified { id, .. } => (id.as_str(), v.kind()),
                other => panic!("unexpected {other}"),
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("gone", "lost-task"),
                ("half", "divergent-task"),
                ("split", "divergent-task"),
                ("stuck", "not-final"),
                ("moving", "not-final"),
                ("lagging", "not-final"),
                ("bare", "failed-without-reason"),
                ("dark", "unverified-task"),
                ("never", "unverified-task"),
            ]
        );
        assert_eq!(tally.acked, 11, "the repeated id counts once");
        assert_eq!(
            (
                tally.succeeded,
                tally.failed,
                tally.lost,
                tally.not_final,
                tally.divergent
            ),
            (1, 2, 1, 3, 2)
        );
    }

    #[test]
    fn an_acked_task_missing_everywhere_is_lost() {
        let seen = BTreeMap::from([(
            "t".to_string(),
            vec![(0, Seen::Missing), (2, Seen::Missing)],
        )]);
        let (tally, v) = check_tasks(&[acked("t")], &seen);
        assert_eq!(tally.lost, 1);
        assert_eq!(
            v,
            vec![Violation::Lost {
                id: "t".into(),
                acked_by: 1
            }]
        );
    }

    #[test]
    fn repeated_calls_are_explained_by_attempts() {
        let calls = BTreeMap::from([
            ("once".to_string(), 1),
            ("rerun".to_string(), 2),
            ("twice".to_string(), 3),
            ("stranger".to_string(), 4),
        ]);
        let attempts = BTreeMap::from([
            ("once".to_string(), 1),
            ("rerun".to_string(), 2),
            ("twice".to_string(), 1),
        ]);
        let acked: Vec<Acked> = ["once", "rerun", "twice"]
            .iter()
            .map(|i| acked(i))
            .collect();
        let (tally, v) = check_calls(&calls, &attempts, &acked);
        assert_eq!(
            tally,
            CallTally {
                calls: 6,
                duplicated: 3,
                explained: 1,
                tasks_called_again: 2,
                unacknowledged: 4,
            }
        );
        assert_eq!(
            v,
            vec![Violation::UnexplainedCalls {
                id: "twice".into(),
                calls: 3,
                attempts: 1
            }]
        );
    }

    #[test]
    fn gaps() {
        assert_eq!(longest_gap(&[], 0, 100), (0, 100));
        assert_eq!(longest_gap(&[10, 20, 70, 80], 0, 100), (20, 50));
        assert_eq!(longest_gap(&[50, 5], 0, 60), (5, 45));
        assert_eq!(longest_gap(&[500], 0, 100), (0, 100));
    }

    fn facts(views: &[(usize, Option<u64>)], served: u64) -> SpendFacts {
        SpendFacts {
            views: views.to_vec(),
            served,
            served_complete: true,
            largest_call: 100,
            node_faults: 2,
            workers: 4,
            repeated_calls: 1,
            nodes: 3,
            limit: 10_000,
            reservation: 150,
        }
    }

    #[test]
    fn spend_table() {
        // unsettled_max = (2 faults × 4 workers + 1 repeated call) × 100 = 900;
        // spent_max = 10 000 + 3 × 150 = 10 450.
        let all = |s: u64| vec![(0, Some(s)), (1, Some(s)), (2, Some(s))];
        let incomplete = SpendFacts {
            served_complete: false,
            ..facts(&all(100), 5_000)
        };
        let tight = SpendFacts {
            limit: 1_000,
            ..facts(&all(2_000), 2_000)
        };
        // (case, facts, spent agreed, violation kinds)
        let cases: Vec<(&str, SpendFacts, Option<u64>, Vec<&str>)> = vec![
            (
                "all settled",
                facts(&all(5_000), 5_000),
                Some(5_000),
                vec![],
            ),
            (
                "faults explain the gap",
                facts(&all(4_100), 5_000),
                Some(4_100),
                vec![],
            ),
            (
                "gap beyond the faults",
                facts(&all(4_099), 5_000),
                Some(4_099),
                vec!["unexplained-unsettled-spend"],
            ),
            (
                "spend counted twice",
                facts(&all(5_001), 5_000),
                Some(5_001),
                vec!["spend-over-served"],
            ),
            (
                "nodes disagree",
                facts(&[(0, Some(5_000)), (2, Some(4_900))], 5_000),
                None,
                vec!["divergent-spend"],
            ),
            (
                "one node lists no budget",
                facts(&[(0, Some(5_000)), (1, None)], 5_000),
                None,
                vec!["divergent-spend"],
            ),
            (
                "no budget anywhere, tokens served",
                facts(&[(0, None), (1, None)], 10),
                None,
                vec!["divergent-spend"],
            ),
            (
                "no budget anywhere, nothing served",
                facts(&[(0, None)], 0),
                Some(0),
                vec![],
            ),
            (
                "nobody answered",
                facts(&[], 10),
                None,
                vec!["divergent-spend"],
            ),
            ("log wrapped: served unknown", incomplete, Some(100), vec![]),
            (
                "within one reservation per node",
                SpendFacts {
                    limit: 1_600,
                    ..tight.clone()
                },
                Some(2_000),
                vec![],
            ),
            ("over the limit", tight, Some(2_000), vec!["over-budget"]),
        ];
        for (case, f, spent, kinds) in cases {
            let (tally, v) = check_spend(&f);
            assert_eq!(tally.spent, spent, "{case}");
            let got: Vec<&str> = v.iter().map(Violation::kind).collect();
            assert_eq!(got, kinds, "{case}: {v:?}");
        }
        let (tally, _) = check_spend(&facts(&all(1), 1));
        assert_eq!((tally.unsettled_max, tally.spent_max), (900, 10_450));
    }

    fn call(model: &str, at_ms: u64) -> SimCall {
        SimCall {
            model: model.into(),
            at_ms,
            status: 200,
            ..Default::default()
        }
    }

    /// The most calls in one calendar window (`floor(at_ms / window_ms)`): what the check
    /// was before it became sliding, kept here to show what it missed.
    fn calendar_busiest(times: &[u64], window_ms: u64) -> u64 {
        let mut per: BTreeMap<u64, u64> = BTreeMap::new();
        for t in times {
            *per.entry(t / window_ms).or_default() += 1;
        }
        per.values().copied().max().unwrap_or(0)
    }

    #[test]
    fn sliding_counts_look_both_ways() {
        // (times, window, want: (from each call, up to each call))
        type Case = (Vec<u64>, u64, Vec<(u64, u64)>);
        let cases: Vec<Case> = vec![
            (vec![], 10, vec![]),
            (vec![5], 10, vec![(1, 1)]),
            (vec![0, 9, 10], 10, vec![(2, 1), (2, 2), (1, 2)]),
            (vec![3, 3, 3], 1, vec![(3, 1), (2, 2), (1, 3)]),
        ];
        for (times, w, want) in cases {
            assert_eq!(sliding_counts(&times, w), want, "{times:?} w={w}");
        }
    }

    #[test]
    fn rate_table() {
        let spec = RateSpec {
            model: "fast".into(),
            window_ms: 2_000,
            requests: 3,
            change: None,
        };
        /// (case, call times of `fast`, nodes, busiest (start, calls), windows at the limit,
        /// violations)
        type Case = (
            &'static str,
            Vec<u64>,
            u64,
            Option<(u64, u64)>,
            usize,
            usize,
        );
        let cases: Vec<Case> = vec![
            ("no calls", vec![], 3, None, 0, 0),
            (
                "under the limit",
                vec![0, 1_999, 2_000],
                3,
                Some((0, 2)),
                0,
                0,
            ),
            (
                "at the limit",
                vec![4_000, 4_500, 5_999],
                3,
                Some((4_000, 3)),
                1,
                0,
            ),
            (
                "limit plus one per node",
                vec![0, 1, 2, 3, 4, 5, 2_000],
                3,
                Some((0, 6)),
                1,
                0,
            ),
            (
                "one more than that",
                vec![
                    0, 1, 2, 3, 4, 5, 6, 8_000, 8_001, 8_002, 8_003, 8_004, 8_005, 8_006,
                ],
                3,
                Some((0, 7)),
                // [0, 2000), [6003, 8003) and [8003, 10003) each hold at least 3.
                3,
                2,
            ),
            (
                "fewer nodes, smaller slack",
                vec![0, 1, 2, 3, 4],
                1,
                Some((0, 5)),
                1,
                1,
            ),
            // The finding in small: each calendar window holds limit + 1 (what the
            // calendar check allowed), but the 2 s across the boundary hold 8.
            (
                "a burst at the end of one window and the start of the next",
                vec![1_500, 1_600, 1_700, 1_800, 2_000, 2_100, 2_200, 2_300],
                1,
                Some((301, 8)),
                2,
                1,
            ),
        ];
        for (case, times, nodes, busiest, at_limit, violations) in cases {
            let mut calls: Vec<SimCall> = times.iter().map(|&t| call("fast", t)).collect();
            // Other models never count against the limit of `fast`.
            calls.extend((0..10).map(|t| call("smart", t)));
            let (tally, v) = check_rate(&calls, &spec, nodes);
            assert_eq!(tally.calls, times.len() as u64, "{case}");
            assert_eq!(tally.busiest, busiest, "{case}");
            assert_eq!(tally.at_limit, at_limit, "{case}");
            assert_eq!(tally.bound, 3 + nodes, "{case}");
            assert_eq!(v.len(), violations, "{case}: {v:?}");
            assert!(
                v.iter().all(|v| v.kind() == "rate-limit-exceeded"),
                "{case}"
            );
        }
        // The boundary burst passes a calendar check and fails the sliding one, reported at
        // its worst window.
        let burst = [1_500, 1_600, 1_700, 1_800, 2_000, 2_100, 2_200, 2_300];
        assert!(calendar_busiest(&burst, 2_000) <= 3 + 1);
        let calls: Vec<SimCall> = burst.iter().map(|&t| call("fast", t)).collect();
        let (_, v) = check_rate(&calls, &spec, 1);
        assert_eq!(
            v,
            vec![Violation::RateExceeded {
                model: "fast".into(),
                start_ms: 301,
                window_ms: 2_000,
                calls: 8,
                bound: 4
            }]
        );
    }

    #[test]
    fn a_changed_limit_binds_before_across_and_after() {
        // Old limit 3, changed at 10 s, every node had it by 11 s; one node (slack 1).
        let spec = |new| RateSpec {
            model: "fast".into(),
            window_ms: 2_000,
            requests: 3,
            change: Some(RateChange {
                from_ms: 10_000,
                until_ms: 11_000,
                requests: new,
            }),
        };
        let span = |start: u64, n: u64| (start..start + n).collect::<Vec<u64>>();
        // (case, new limit, call times, violations, windows at the limit after the change)
        let cases: Vec<(&str, u64, Vec<u64>, usize, usize)> = vec![
            (
                "raised: the old limit holds before",
                6,
                span(7_000, 5),
                1,
                0,
            ),
            ("raised: the new limit after", 6, span(12_000, 7), 0, 1),
            ("raised: one more than it allows", 6, span(12_000, 8), 1, 1),
            (
                "raised: across the change, the larger",
                6,
                span(10_000, 7),
                0,
                0,
            ),
            ("lowered: the new limit after", 1, span(11_500, 3), 1, 1),
            (
                "lowered: across the change, the old",
                1,
                span(10_500, 4),
                0,
                0,
            ),
        ];
        for (case, new, times, violations, after) in cases {
            let calls: Vec<SimCall> = times.iter().map(|&t| call("fast", t)).collect();
            let (tally, v) = check_rate(&calls, &spec(new), 1);
            assert_eq!(v.len(), violations, "{case}: {v:?}");
            assert_eq!(tally.at_limit_after_change, after, "{case}");
        }
        let s = spec(6);
        assert_eq!(
            [8_000, 8_001, 9_999, 10_999, 11_000].map(|t| s.limit_at(t)),
            [3, 6, 6, 6, 6]
        );
        assert_eq!(spec(1).limit_at(10_999), 3);
        assert_eq!(spec(1).limit_at(11_000), 1);
    }

    #[test]
    fn hold_table() {
        let facts = |spent: u64, states: &[&str]| HoldFacts {
            views: vec![(0, Some(spent)), (1, Some(spent.saturating_sub(5)))],
            states: states
                .iter()
                .enumerate()
                .map(|(i, s)| (i, s.to_string()))
                .collect(),
            limit: 1_000,
            nodes: 3,
            reservation: 100,
            critical_tokens: 50,
        };
        // (case, spent, states, held on, violation kinds)
        type Case<'a> = (&'a str, u64, Vec<&'a str>, Vec<usize>, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            (
                "held at the limit",
                1_000,
                vec!["paused", "ok"],
                vec![0],
                vec![],
            ),
            (
                "held, at the bound",
                1_350,
                vec!["paused", "paused"],
                vec![0, 1],
                vec![],
            ),
            (
                "held, past the bound",
                1_351,
                vec!["paused"],
                vec![0],
                vec!["over-budget"],
            ),
            (
                "never held",
                600,
                vec!["ok", "downgraded"],
                vec![],
                vec!["limit-never-bound"],
            ),
            (
                "never held and over",
                2_000,
                vec!["ok"],
                vec![],
                vec!["limit-never-bound", "over-budget"],
            ),
        ];
        for (case, spent, states, held, kinds) in cases {
            let (tally, v) = check_hold(&facts(spent, &states));
            assert_eq!(tally.spent, Some(spent), "{case}");
            assert_eq!(tally.bound, 1_350, "{case}");
            assert_eq!(tally.held_on, held, "{case}");
            let got: Vec<&str> = v.iter().map(|v| v.kind()).collect();
            assert_eq!(got, kinds, "{case}");
        }
    }

    #[test]
    fn a_follower_fault_keeps_the_leader() {
        let lt = |l: &str, t: u64| Some((l.to_string(), t));
        // (case, before, after, violation)
        let cases = [
            ("same leader, same term", lt("n0", 3), lt("n0", 3), false),
            ("same leader, new term", lt("n0", 3), lt("n0", 4), true),
            ("new leader", lt("n0", 3), lt("n1", 4), true),
            ("no agreement after", lt("n0", 3), None, true),
            ("unknown before: not judged", None, lt("n1", 4), false),
        ];
        for (case, before, after, bad) in cases {
            let v = check_leader_kept(7, before.as_ref(), after.as_ref());
            assert_eq!(v.is_some(), bad, "{case}: {v:?}");
            assert!(
                v.iter()
                    .all(|v| v.kind() == "leader-deposed-without-leader-fault"),
                "{case}"
            );
        }
    }
}

//! The invariants, as pure functions over what a run observed. No I/O, no clock: the run
//! collects observations, these decide, and the tests feed them hand-made ones.
//!
//! - [`LeaderLog`]: at most one leader per term, from every `(term, leader)` any node reported.
//! - [`check_tasks`]: no acknowledged task lost; every one final (succeeded, or failed with a
//!   reason) with the same final view on every node.
//! - [`check_calls`]: provider calls per task; a task called more often than it was attempted
//!   ran more than its attempts explain.
//! - [`agreement`]: live nodes agree on leader, term, membership (and task counts).
//! - [`longest_gap`]: the longest time without an acknowledged write.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use openclaw_proto::{Priority, TaskStatus};

use crate::status::{ClusterStatus, TaskSnapshot};

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

/// What the live nodes agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreement {
    pub leader_id: String,
    pub term: u64,
    pub tasks: BTreeMap<String, u64>,
}

/// Do these views (node index, its `/api/cluster`) agree on one leader and term, does each
/// list at least `members` nodes, and (when `counts`) do they report the same task counts?
/// The error says who disagrees.
pub fn agreement(
    views: &[(usize, ClusterStatus)],
    members: usize,
    counts: bool,
) -> Result<Agreement, String> {
    let Some((first_i, first)) = views.first() else {
        return Err("no live node answered".into());
    };
    let Some(leader) = first.believed_leader() else {
        return Err(format!(
            "node {first_i} knows no leader (term {})",
            first.term
        ));
    };
    for (i, v) in views {
        match v.believed_leader() {
            Some(l) if l == leader && v.term == first.term => {}
            other => {
                return Err(format!(
                    "node {first_i} says leader {leader} term {}, node {i} says leader {} term {}",
                    first.term,
                    other.unwrap_or("none"),
                    v.term
                ))
            }
        }
        if v.nodes.len() < members {
            return Err(format!(
                "node {i} lists {} of {members} members",
                v.nodes.len()
            ));
        }
        if counts && v.tasks != first.tasks {
            return Err(format!(
                "task counts differ: node {first_i} {:?}, node {i} {:?}",
                first.tasks, v.tasks
            ));
        }
    }
    Ok(Agreement {
        leader_id: leader.to_string(),
        term: first.term,
        tasks: first.tasks.clone(),
    })
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
    use crate::status::TaskError;

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
                .map(|i| crate::status::NodeStatus {
                    id: format!("n{i}"),
                    ..Default::default()
                })
                .collect(),
            tasks: BTreeMap::from([("succeeded".to_string(), 3)]),
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
            "good", "gone", "half", "split", "stuck", "f", "bare", "dark", "never", "good",
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
                ("bare", "failed-without-reason"),
                ("dark", "unverified-task"),
                ("never", "unverified-task"),
            ]
        );
        assert_eq!(tally.acked, 9, "the repeated id counts once");
        assert_eq!(
            (
                tally.succeeded,
                tally.failed,
                tally.lost,
                tally.not_final,
                tally.divergent
            ),
            (1, 2, 1, 1, 2)
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
    fn agreement_table() {
        let a = status("n0", Some("n0"), 2, 3);
        let b = status("n1", Some("n0"), 2, 3);
        let got = agreement(&[(0, a.clone()), (1, b.clone())], 3, true).unwrap();
        assert_eq!((got.leader_id.as_str(), got.term), ("n0", 2));

        let stale = status("n1", Some("n0"), 1, 3);
        assert!(agreement(&[(0, a.clone()), (1, stale)], 3, false).is_err());
        let lonely = status("n1", None, 2, 3);
        assert!(agreement(&[(0, a.clone()), (1, lonely)], 3, false).is_err());
        assert!(agreement(&[(0, a.clone()), (1, b.clone())], 4, false).is_err());
        let mut behind = b.clone();
        behind.tasks.insert("queued".into(), 1);
        assert!(agreement(&[(0, a.clone()), (1, behind.clone())], 3, false).is_ok());
        assert!(agreement(&[(0, a), (1, behind)], 3, true).is_err());
        assert!(agreement(&[], 3, false).is_err());
    }

    #[test]
    fn gaps() {
        assert_eq!(longest_gap(&[], 0, 100), (0, 100));
        assert_eq!(longest_gap(&[10, 20, 70, 80], 0, 100), (20, 50));
        assert_eq!(longest_gap(&[50, 5], 0, 60), (5, 45));
        assert_eq!(longest_gap(&[500], 0, 100), (0, 100));
    }
}

//! What the harness (and the chaos suite) reads from nodes and from the simulator, parsed
//! leniently, and [`agreement`]: do the nodes' views agree on one leader?
//!
//! The harness looks at the cluster from outside, so these are its own views of the JSON, not
//! the node's types: a field it does not need may change without breaking it, and node ids
//! are accepted as strings or numbers (both are normalised to strings).

use std::collections::BTreeMap;

use openclaw_proto::TaskStatus;
use serde::{Deserialize, Deserializer};

/// A node id as text, whether the node sends `"n1"` or `1`.
fn id_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        S(String),
        N(u64),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::S(s) => s,
        Raw::N(n) => n.to_string(),
    })
}

fn opt_id_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        S(String),
        N(u64),
    }
    Ok(match Option::<Raw>::deserialize(d)? {
        Some(Raw::S(s)) => Some(s),
        Some(Raw::N(n)) => Some(n.to_string()),
        None => None,
    })
}

/// `GET /api/cluster` as one node sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ClusterStatus {
    #[serde(deserialize_with = "id_string")]
    pub node_id: String,
    #[serde(default, deserialize_with = "opt_id_string")]
    pub leader: Option<String>,
    #[serde(default)]
    pub term: u64,
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub nodes: Vec<NodeStatus>,
    /// Cluster-wide task counts by status (`queued`, `running`, `succeeded`, ...).
    #[serde(default)]
    pub tasks: BTreeMap<String, u64>,
    /// The replicated budget counters, one per limited scope (`total`, `agent:<name>`, ...).
    #[serde(default)]
    pub budgets: Vec<BudgetStatus>,
}

impl ClusterStatus {
    /// The replicated spend of budget `scope` (`None` before anything leased or spent in it).
    pub fn spent_tokens(&self, scope: &str) -> Option<u64> {
        self.budgets
            .iter()
            .find(|b| b.scope == scope)
            .map(|b| b.spent_tokens)
    }

    /// The leader this node believes in: its `leader`, or itself when its role says so.
    pub fn believed_leader(&self) -> Option<&str> {
        match &self.leader {
            Some(l) => Some(l.as_str()),
            None if self.role == "leader" => Some(self.node_id.as_str()),
            None => None,
        }
    }
}

/// One member in `GET /api/cluster`'s `nodes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct NodeStatus {
    #[serde(deserialize_with = "id_string")]
    pub id: String,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub http: String,
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub voter: bool,
    #[serde(default)]
    pub alive: bool,
}

/// One entry of `GET /api/cluster`'s `budgets`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct BudgetStatus {
    pub scope: String,
    #[serde(default)]
    pub spent_tokens: u64,
    #[serde(default)]
    pub limit_tokens: Option<u64>,
}

/// The parts of `GET /api/tasks/{id}` the checks compare across nodes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TaskSnapshot {
    pub id: String,
    pub status: TaskStatus,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, deserialize_with = "opt_id_string")]
    pub node: Option<String>,
    #[serde(default)]
    pub epoch: Option<u64>,
    #[serde(default)]
    pub error: Option<TaskError>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TaskError {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

impl TaskSnapshot {
    /// The fields that must be equal on every node once the task is final.
    pub fn final_key(&self) -> (TaskStatus, u32, Option<&str>, Option<u64>) {
        (self.status, self.attempts, self.node.as_deref(), self.epoch)
    }
}

/// `GET /sim/calls`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SimCalls {
    /// Calls served since the simulator started (more than `calls.len()` when the log wrapped).
    #[serde(default)]
    pub count: u64,
    #[serde(default)]
    pub calls: Vec<SimCall>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SimCall {
    #[serde(default)]
    pub task_id: Option<String>,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub status: u16,
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    /// Arrival at the simulator, milliseconds since the Unix epoch (the clock the nodes'
    /// rate windows use too: same machine).
    #[serde(default)]
    pub at_ms: u64,
}

impl SimCall {
    /// Tokens the simulator served for this call (what a provider would bill).
    pub fn tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

impl SimCalls {
    /// Calls per task id (calls without a task id are not counted).
    pub fn per_task(&self) -> BTreeMap<String, u32> {
        let mut m = BTreeMap::new();
        for c in &self.calls {
            if let Some(t) = &c.task_id {
                *m.entry(t.clone()).or_insert(0) += 1;
            }
        }
        m
    }

    /// Tokens served over every call in the log.
    pub fn tokens_served(&self) -> u64 {
        self.calls.iter().map(SimCall::tokens).sum()
    }

    /// The tokens of the largest call in the log.
    pub fn largest_call(&self) -> u64 {
        self.calls.iter().map(SimCall::tokens).max().unwrap_or(0)
    }

    /// Calls beyond the first of each task id (acknowledged or not).
    pub fn repeated_calls(&self) -> u64 {
        self.per_task()
            .values()
            .map(|n| u64::from(n.saturating_sub(1)))
            .sum()
    }

    /// Did the simulator's bounded log drop calls (so counts per task are a lower bound)?
    pub fn truncated(&self) -> bool {
        self.count > self.calls.len() as u64
    }
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
/// The error says who disagrees. Pure.
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

#[cfg(test)]
mod tests {
    use super::*;

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
                .map(|i| NodeStatus {
                    id: format!("n{i}"),
                    ..Default::default()
                })
                .collect(),
            tasks: BTreeMap::from([("succeeded".to_string(), 3)]),
            budgets: Vec::new(),
        }
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
    fn ids_may_be_numbers_or_strings() {
        let s: ClusterStatus = serde_json::from_value(serde_json::json!({
            "node_id": 2, "leader": 1, "term": 4, "role": "follower",
            "nodes": [{"id": 1, "address": "127.0.0.2:7000", "http": "127.0.0.2:3000", "role": "leader",
                       "voter": true, "alive": true, "last_contact_ms": 3, "lag": 0, "workers": 4}],
            "tasks": {"queued": 1, "succeeded": 5}, "rate_limits": [],
            "budgets": [{"scope": "total", "period": "2025-01", "spent_tokens": 120, "spent_cost_usd": 0.1,
                         "limit_tokens": 1000, "limit_cost_usd": null, "leased_tokens": 500, "leases": []}]
        }))
        .unwrap();
        assert_eq!(s.spent_tokens("total"), Some(120));
        assert_eq!(s.spent_tokens("agent:main"), None);
        assert_eq!(s.budgets[0].limit_tokens, Some(1000));
        assert_eq!(s.node_id, "2");
        assert_eq!(s.leader.as_deref(), Some("1"));
        assert_eq!(s.nodes[0].id, "1");
        assert_eq!(s.tasks["succeeded"], 5);
        let t: ClusterStatus = serde_json::from_value(
            serde_json::json!({"node_id": "a", "leader": null, "term": 1, "role": "leader"}),
        )
        .unwrap();
        assert_eq!(t.believed_leader(), Some("a"));
    }

    #[test]
    fn calls_are_counted_per_task() {
        let c: SimCalls = serde_json::from_value(serde_json::json!({"count": 4, "calls": [
            {"seq": 1, "task_id": "t1", "status": 200, "model": "fast", "input_tokens": 30, "output_tokens": 12, "at_ms": 7},
            {"seq": 2, "task_id": "t1", "status": 200},
            {"seq": 3, "task_id": null, "status": 200}
        ]}))
        .unwrap();
        assert_eq!(c.per_task().get("t1"), Some(&2));
        assert_eq!(
            (c.calls[0].model.as_str(), c.calls[0].tokens()),
            ("fast", 42)
        );
        assert_eq!(c.calls[1].tokens(), 0);
        assert_eq!(
            (c.tokens_served(), c.largest_call(), c.repeated_calls()),
            (42, 42, 1)
        );
        assert!(c.truncated());
    }
}

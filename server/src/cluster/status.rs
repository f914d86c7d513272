//! `GET /api/cluster`: the cluster as this node sees it — members and roles, leader and term,
//! liveness and replication lag, tasks per node and level, budgets and leases, rate-limit
//! headroom. `openclaw-node status` renders it.

use std::collections::BTreeMap;

use openclaw_cluster::placement::LEVELS;
use openclaw_proto::cluster::{
    BudgetLeaseView, ClusterNodeView, ClusterStatusView, LeaseView, NodeTasksView, RateShareView,
    RateWindowView,
};
use openclaw_proto::{Priority, TaskStatus};

use super::Cluster;
use crate::util::now_ms;

fn levels(counts: &[u32; LEVELS]) -> BTreeMap<String, u32> {
    counts
        .iter()
        .enumerate()
        .filter_map(|(i, n)| Priority::from_level(i as u8).map(|p| (p.as_str().to_string(), *n)))
        .collect()
}

pub fn status(c: &Cluster) -> ClusterStatusView {
    let m = c.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership().clone();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let matched = m.replication.clone().unwrap_or_default();
    let leader_last = m.last_log_index.unwrap_or(0);
    let peers: BTreeMap<u64, openclaw_cluster::mesh::PeerView> = c
        .mesh
        .lock()
        .ok()
        .and_then(|g| g.as_ref().map(|mesh| mesh.peers()))
        .unwrap_or_default()
        .into_iter()
        .map(|p| (p.id, p))
        .collect();
    let now = now_ms();
    c.sm.read(|s| {
        let nodes: Vec<ClusterNodeView> = membership
            .nodes()
            .map(|(id, member)| {
                let ns = s.nodes.get(id);
                let role = if m.current_leader == Some(*id) {
                    "leader"
                } else if voters.contains(id) {
                    "follower"
                } else {
                    "learner"
                };
                let lag = if m.current_leader == Some(c.id) {
                    matched
                        .get(id)
                        .map(|l| leader_last.saturating_sub(l.map(|l| l.index).unwrap_or(0)))
                } else {
                    None
                };
                let workers = ns.map(|n| n.workers).unwrap_or(0);
                let load = s.load_of(*id, workers);
                let last_contact_ms = if *id == c.id {
                    Some(0)
                } else {
                    peers
                        .get(id)
                        .and_then(|p| p.last_contact_ms_ago)
                        .or_else(|| ns.map(|n| now.saturating_sub(n.last_heartbeat_ms)))
                };
                ClusterNodeView {
                    id: *id,
                    address: member.cluster_addr.clone(),
                    http: member.http_addr.clone(),
                    mesh: member.mesh_addr.clone(),
                    role: role.to_string(),
                    voter: voters.contains(id),
                    alive: s.is_live(*id) && ns.is_some_and(|n| n.lease_until_ms > now),
                    mesh_connected: peers.get(id).map(|p| p.connected),
                    last_heartbeat_ms: ns.map(|n| n.last_heartbeat_ms),
                    last_contact_ms,
                    lag,
                    workers,
                    tasks: NodeTasksView {
                        queued: levels(&load.queued),
                        running: levels(&load.running),
                    },
                }
            })
            .collect();
        let mut totals: BTreeMap<String, u64> = BTreeMap::new();
        for st in ["queued", "running", "succeeded", "failed", "cancelled"] {
            totals.insert(st.to_string(), 0);
        }
        for r in s.tasks.values() {
            *totals.entry(r.status.as_str().to_string()).or_default() += 1;
        }
        // Finished tasks are on disk; the state counts them.
        for (status, n) in &s.retained {
            *totals.entry(status.clone()).or_default() += n;
        }
        let dead = s.dead_leases(now);
        let budgets: Vec<BudgetLeaseView> = s
            .budget
            .iter()
            .map(|(scope, b)| {
                let held_t: u64 = b.slices.values().map(|x| x.tokens).sum();
                let held_c: f64 = b.slices.values().map(|x| x.cost_usd).sum();
                BudgetLeaseView {
                    scope: scope.clone(),
                    period: s.budget_period.clone(),
                    spent_tokens: b.spent_tokens,
                    spent_cost_usd: b.spent_cost_usd,
                    limit_tokens: b.limit.tokens,
                    limit_cost_usd: b.limit.cost_usd,
                    leased_tokens: held_t,
                    leased_cost_usd: held_c,
                    leases: b
                        .slices
                        .iter()
                        .map(|(n, x)| LeaseView {
                            node: *n,
                            tokens: x.tokens,
                            cost_usd: x.cost_usd,
                        })
                        .collect(),
                    unsettled_dead_nodes: dead
                        .iter()
                        .filter(|d| d.0 == *scope)
                        .map(
                            |(_, node, t, c, exp)| openclaw_proto::ops::UnsettledDeadNode {
                                node: *node,
                                tokens: *t,
                                cost_usd: *c,
                                lease_expires_at: crate::tasks::view::rfc3339(*exp),
                            },
                        )
                        .collect(),
                }
            })
            .collect();
        let rate_limits: Vec<RateWindowView> = s
            .rate
            .iter()
            .map(|(scope, w)| {
                let this_bucket = now / w.bucket_ms.max(1);
                let current = w.bucket == this_bucket;
                let oldest = this_bucket.saturating_sub(w.span);
                let (gr, gt) = w
                    .buckets
                    .range(oldest..)
                    .fold((0, 0), |(r, t), (_, (br, bt))| (r + br, t + bt));
                RateWindowView {
                    scope: scope.clone(),
                    window_ms: w.bucket_ms * w.span,
                    bucket_ms: w.bucket_ms,
                    limit_requests: w.limit.requests,
                    limit_tokens: w.limit.tokens,
                    granted_requests: gr,
                    granted_tokens: gt,
                    headroom_requests: w.limit.requests.map(|l| l.saturating_sub(gr)),
                    headroom_tokens: w.limit.tokens.map(|l| l.saturating_sub(gt)),
                    per_node: if current {
                        w.per_node
                            .iter()
                            .map(|(n, (r, t))| RateShareView {
                                node: *n,
                                requests: *r,
                                tokens: *t,
                            })
                            .collect()
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect();
        let mut queued_by_level = [0u32; LEVELS];
        for r in s.tasks.values().filter(|r| r.status == TaskStatus::Queued) {
            queued_by_level[(r.priority.level() as usize).min(LEVELS - 1)] += 1;
        }
        ClusterStatusView {
            node_id: c.id,
            leader: m.current_leader,
            term: m.current_term,
            role: format!("{:?}", m.state).to_lowercase(),
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
            nodes,
            tasks: totals,
            queued_by_level: levels(&queued_by_level),
            budgets,
            rate_limits,
            proposals_waiting: c.proposer.waiting() as u64,
        }
    })
}

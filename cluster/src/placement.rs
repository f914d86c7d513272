//! Pure placement decisions: which live node owns a new task, what an idle node may steal, and
//! where a dead node's tasks go. Inputs are plain loads; ties break on the lowest node id, so
//! every replica decides the same.

use openclaw_proto::Priority;

use crate::types::NodeId;

/// Levels: critical 0 … background 4.
pub const LEVELS: usize = 5;

/// One live node's load as the replicated state sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeLoad {
    pub id: NodeId,
    pub workers: u32,
    pub queued: [u32; LEVELS],
    pub running: [u32; LEVELS],
}

impl NodeLoad {
    pub fn queued_total(&self) -> u32 {
        self.queued.iter().sum()
    }

    pub fn running_total(&self) -> u32 {
        self.running.iter().sum()
    }

    /// Worker slots not taken by running or already queued work.
    pub fn spare(&self) -> u32 {
        self.workers
            .saturating_sub(self.running_total() + self.queued_total())
    }

    /// Queued work beyond what the node can start now.
    pub fn backlog(&self) -> u32 {
        let free = self.workers.saturating_sub(self.running_total());
        self.queued_total().saturating_sub(free)
    }

    /// The least urgent level running here, if any.
    pub fn lowest_running(&self) -> Option<usize> {
        (0..LEVELS).rev().find(|&l| self.running[l] > 0)
    }

    /// Tasks that would run before a new task of `level` (queued at the same or a more urgent
    /// level), per worker, scaled by 1000 to stay in integers.
    fn ahead_per_worker(&self, level: usize) -> u64 {
        let ahead: u32 = self.queued[..=level].iter().sum::<u32>() + self.running_total();
        (ahead as u64 * 1000) / self.workers.max(1) as u64
    }
}

/// The owner of a new task of `priority` among `live` nodes:
/// 1. a node with a spare worker — the most spare, then the fewest running;
/// 2. if the task may preempt, the node running the least urgent work below its level;
/// 3. otherwise the node with the least work ahead of it per worker.
pub fn place(live: &[NodeLoad], priority: Priority, may_preempt: bool) -> Option<NodeId> {
    let level = priority.level() as usize;
    if let Some(n) = live
        .iter()
        .filter(|n| n.spare() > 0)
        .min_by_key(|n| (std::cmp::Reverse(n.spare()), n.running_total(), n.id))
    {
        return Some(n.id);
    }
    if may_preempt {
        if let Some(n) = live
            .iter()
            .filter(|n| n.lowest_running().is_some_and(|l| l > level))
            .min_by_key(|n| {
                (
                    std::cmp::Reverse(n.lowest_running().unwrap_or(0)),
                    n.queued[..=level].iter().sum::<u32>(),
                    n.id,
                )
            })
        {
            return Some(n.id);
        }
    }
    live.iter()
        .min_by_key(|n| (n.ahead_per_worker(level), n.id))
        .map(|n| n.id)
}

/// How many queued tasks an idle node `thief` may take, and from whom: nodes with a backlog give
/// up to their backlog, while the thief has spare workers. Returns (victim, count) pairs in
/// order of the largest backlog first.
pub fn steal_plan(live: &[NodeLoad], thief: NodeId, max: u32) -> Vec<(NodeId, u32)> {
    let Some(me) = live.iter().find(|n| n.id == thief) else {
        return Vec::new();
    };
    let mut room = me.spare().min(max);
    let mut victims: Vec<&NodeLoad> = live
        .iter()
        .filter(|n| n.id != thief && n.backlog() > 0)
        .collect();
    victims.sort_by_key(|n| (std::cmp::Reverse(n.backlog()), n.id));
    let mut plan = Vec::new();
    for v in victims {
        if room == 0 {
            break;
        }
        // Take at most half the gap, so two idle nodes do not strip one busy node bare.
        let take = v.backlog().div_ceil(2).min(room);
        if take > 0 {
            plan.push((v.id, take));
            room -= take;
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: NodeId, workers: u32, queued: [u32; 5], running: [u32; 5]) -> NodeLoad {
        NodeLoad {
            id,
            workers,
            queued,
            running,
        }
    }

    #[test]
    fn placement_table() {
        let idle = |id| node(id, 4, [0; 5], [0; 5]);
        let busy_normal = |id| node(id, 2, [0; 5], [0, 0, 2, 0, 0]);
        let busy_low = |id| node(id, 2, [0; 5], [0, 0, 0, 2, 0]);
        let backlogged = |id, q| node(id, 2, [0, 0, q, 0, 0], [0, 0, 2, 0, 0]);
        let cases: Vec<(&str, Vec<NodeLoad>, Priority, bool, Option<NodeId>)> = vec![
            ("no node", vec![], Priority::Normal, false, None),
            (
                "ties go to the lowest id",
                vec![idle(2), idle(1)],
                Priority::Normal,
                false,
                Some(1),
            ),
            (
                "most spare wins",
                vec![node(1, 4, [0; 5], [0, 0, 3, 0, 0]), idle(2)],
                Priority::Normal,
                false,
                Some(2),
            ),
            (
                "queued work uses spare",
                vec![
                    node(1, 2, [0, 0, 2, 0, 0], [0; 5]),
                    node(2, 2, [0, 0, 1, 0, 0], [0; 5]),
                ],
                Priority::High,
                false,
                Some(2),
            ),
            (
                "critical preempts the least urgent running work",
                vec![busy_normal(1), busy_low(2)],
                Priority::Critical,
                true,
                Some(2),
            ),
            (
                "no preemption allowed: least work ahead",
                vec![backlogged(1, 3), backlogged(2, 1)],
                Priority::Normal,
                false,
                Some(2),
            ),
            (
                "preemption needs lower work running",
                vec![
                    node(1, 1, [0; 5], [1, 0, 0, 0, 0]),
                    node(2, 1, [1, 0, 0, 0, 0], [1, 0, 0, 0, 0]),
                ],
                Priority::Critical,
                true,
                Some(1),
            ),
            (
                "high work ahead counts only at its level or above",
                vec![
                    node(1, 1, [0, 0, 0, 5, 0], [0, 1, 0, 0, 0]),
                    node(2, 1, [0, 1, 0, 0, 0], [0, 1, 0, 0, 0]),
                ],
                Priority::High,
                false,
                Some(1),
            ),
        ];
        for (name, live, p, pre, want) in cases {
            assert_eq!(place(&live, p, pre), want, "{name}");
        }
    }

    #[test]
    fn steal_table() {
        let cases: Vec<(&str, Vec<NodeLoad>, NodeId, u32, Vec<(NodeId, u32)>)> = vec![
            ("thief unknown", vec![], 1, 4, vec![]),
            (
                "nothing to steal",
                vec![
                    node(1, 2, [0; 5], [0; 5]),
                    node(2, 2, [0; 5], [0, 0, 2, 0, 0]),
                ],
                1,
                4,
                vec![],
            ),
            (
                "half the backlog",
                vec![
                    node(1, 4, [0; 5], [0; 5]),
                    node(2, 2, [0, 0, 6, 0, 0], [0, 0, 2, 0, 0]),
                ],
                1,
                8,
                vec![(2, 3)],
            ),
            (
                "bounded by spare and max",
                vec![
                    node(1, 2, [0; 5], [0, 0, 1, 0, 0]),
                    node(2, 1, [0, 0, 9, 0, 0], [0, 0, 1, 0, 0]),
                ],
                1,
                8,
                vec![(2, 1)],
            ),
            (
                "largest backlog first",
                vec![
                    node(1, 8, [0; 5], [0; 5]),
                    node(2, 1, [0, 0, 2, 0, 0], [0, 0, 1, 0, 0]),
                    node(3, 1, [0, 0, 4, 0, 0], [0, 0, 1, 0, 0]),
                ],
                1,
                3,
                vec![(3, 2), (2, 1)],
            ),
            (
                "a busy thief steals nothing",
                vec![
                    node(1, 1, [0; 5], [0, 0, 1, 0, 0]),
                    node(2, 1, [0, 0, 4, 0, 0], [0, 0, 1, 0, 0]),
                ],
                1,
                4,
                vec![],
            ),
        ];
        for (name, live, thief, max, want) in cases {
            assert_eq!(steal_plan(&live, thief, max), want, "{name}");
        }
    }
}

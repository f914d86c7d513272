//! The fault schedule: a pure function of (seed, rounds, nodes, round length).
//!
//! Each round injects one fault. Targets are described relative to the cluster's state when the
//! round starts (`the leader`, `follower number k mod followers`), so the schedule itself does
//! not depend on anything observed, and the same seed replays the same choices given the same
//! leader. Every duration stays inside its round.

use std::fmt;
use std::time::Duration;

use crate::rng::Rng;

/// The kinds of fault, in the order the summary prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    KillLeader,
    KillFollower,
    Pause,
    Restart,
    Partition,
}

impl FaultKind {
    pub const ALL: [FaultKind; 5] = [
        FaultKind::KillLeader,
        FaultKind::KillFollower,
        FaultKind::Pause,
        FaultKind::Restart,
        FaultKind::Partition,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillFollower => "kill-follower",
            FaultKind::Pause => "pause",
            FaultKind::Restart => "restart",
            FaultKind::Partition => "partition",
        }
    }
}

/// Which node a fault hits, resolved when the round starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Leader,
    /// Follower number `pick % followers` (followers in index order).
    Follower {
        pick: u32,
    },
}

impl Target {
    /// The node index this target means, given the leader and the node count.
    pub fn resolve(self, leader: Option<usize>, nodes: usize) -> Option<usize> {
        match (self, leader) {
            (Target::Leader, l) => l,
            (Target::Follower { pick }, l) => {
                let followers: Vec<usize> = (0..nodes).filter(|&i| Some(i) != l).collect();
                if followers.is_empty() {
                    None
                } else {
                    followers.get(pick as usize % followers.len()).copied()
                }
            }
        }
    }
}

/// One round's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, stay down for `down`, restart on the same data dir.
    Kill { target: Target, down: Duration },
    /// SIGSTOP for `pause`, then SIGCONT.
    Pause { target: Target, pause: Duration },
    /// SIGTERM (SIGKILL after a grace), start again at once.
    Restart { target: Target },
    /// Cut a minority of `minority` nodes (with the leader in it when `with_leader`) from the
    /// rest for `hold`, then heal.
    Partition {
        minority: u32,
        with_leader: bool,
        pick: u64,
        hold: Duration,
    },
}

impl Fault {
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Kill {
                target: Target::Leader,
                ..
            } => FaultKind::KillLeader,
            Fault::Kill { .. } => FaultKind::KillFollower,
            Fault::Pause { .. } => FaultKind::Pause,
            Fault::Restart { .. } => FaultKind::Restart,
            Fault::Partition { .. } => FaultKind::Partition,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = |t: &Target| match t {
            Target::Leader => "the leader".to_string(),
            Target::Follower { .. } => "a follower".to_string(),
        };
        match self {
            Fault::Kill { target, down } => {
                write!(
                    f,
                    "SIGKILL {} for {} ms, then restart",
                    t(target),
                    down.as_millis()
                )
            }
            Fault::Pause { target, pause } => {
                write!(
                    f,
                    "SIGSTOP {} for {} ms, then SIGCONT",
                    t(target),
                    pause.as_millis()
                )
            }
            Fault::Restart { target } => write!(f, "SIGTERM and restart {}", t(target)),
            Fault::Partition {
                minority,
                with_leader,
                hold,
                ..
            } => write!(
                f,
                "partition {minority} node(s) {} the leader from the rest for {} ms, then heal",
                if *with_leader {
                    "including"
                } else {
                    "excluding"
                },
                hold.as_millis()
            ),
        }
    }
}

/// One round of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// 1-based.
    pub index: u32,
    pub fault: Fault,
}

/// Shortest round the schedule accepts (a fault needs time to act and to be undone).
pub const ROUND_MIN: Duration = Duration::from_secs(2);
/// Longest SIGSTOP.
pub const PAUSE_MAX: Duration = Duration::from_secs(5);

/// The schedule for a run. Partitions need a minority of at least one node, so with fewer than
/// three nodes they are never chosen.
pub fn schedule(seed: u64, rounds: u32, nodes: usize, round: Duration) -> Vec<Round> {
    let mut rng = Rng::derive(seed, 1);
    let round_ms = round.max(ROUND_MIN).as_millis() as u64;
    let minority_max = (nodes.saturating_sub(1) / 2) as u64;
    // Equal weights, except partitions when no minority exists.
    let weights = [1, 1, 1, 1, u64::from(minority_max > 0)];
    (1..=rounds)
        .map(|index| {
            let kind = FaultKind::ALL[rng.weighted(&weights)];
            let follower = |rng: &mut Rng| Target::Follower {
                pick: rng.below(u64::from(u32::MAX)) as u32,
            };
            let any = |rng: &mut Rng| {
                if rng.percent(50) {
                    Target::Leader
                } else {
                    follower(rng)
                }
            };
            let fault = match kind {
                FaultKind::KillLeader => Fault::Kill {
                    target: Target::Leader,
                    down: ms(rng.between(round_ms / 5, round_ms / 2)),
                },
                FaultKind::KillFollower => Fault::Kill {
                    target: follower(&mut rng),
                    down: ms(rng.between(round_ms / 5, round_ms / 2)),
                },
                FaultKind::Pause => {
                    let hi = (round_ms / 2).min(PAUSE_MAX.as_millis() as u64);
                    Fault::Pause {
                        target: any(&mut rng),
                        pause: ms(rng.between(hi.min(1000), hi)),
                    }
                }
                FaultKind::Restart => Fault::Restart {
                    target: any(&mut rng),
                },
                FaultKind::Partition => Fault::Partition {
                    minority: rng.between(1, minority_max) as u32,
                    with_leader: rng.percent(50),
                    pick: rng.next_u64(),
                    // Long enough for the majority to elect (several election timeouts).
                    hold: ms(rng.between(round_ms * 3 / 10, round_ms * 6 / 10)),
                },
            };
            Round { index, fault }
        })
        .collect()
}

/// The minority side of a partition: `minority` nodes, the leader first when `with_leader`,
/// the rest picked by `pick` from the other nodes. Pure; the majority is everyone else.
pub fn minority_side(
    nodes: usize,
    leader: Option<usize>,
    minority: u32,
    with_leader: bool,
    pick: u64,
) -> Vec<usize> {
    let mut rng = Rng::new(pick);
    let mut side = Vec::new();
    let mut pool: Vec<usize> = (0..nodes).collect();
    if let (true, Some(l)) = (with_leader, leader) {
        pool.retain(|&i| i != l);
        side.push(l);
    } else if let Some(l) = leader {
        pool.retain(|&i| i != l);
    }
    while side.len() < minority as usize && !pool.is_empty() {
        let k = rng.below(pool.len() as u64) as usize;
        side.push(pool.remove(k));
    }
    side.sort_unstable();
    side
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUND: Duration = Duration::from_secs(10);

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        assert_eq!(schedule(42, 50, 5, ROUND), schedule(42, 50, 5, ROUND));
        assert_ne!(schedule(42, 50, 5, ROUND), schedule(43, 50, 5, ROUND));
        // A longer run starts with the shorter run's rounds.
        assert_eq!(
            schedule(42, 50, 5, ROUND)[..10],
            schedule(42, 10, 5, ROUND)[..]
        );
    }

    #[test]
    fn every_kind_appears_and_stays_inside_its_round() {
        let s = schedule(7, 200, 5, ROUND);
        assert_eq!(s.len(), 200);
        for k in FaultKind::ALL {
            assert!(s.iter().any(|r| r.fault.kind() == k), "{k:?} never chosen");
        }
        for r in &s {
            match r.fault {
                Fault::Kill { down, .. } => assert!(down <= ROUND / 2 && down >= ROUND / 5),
                Fault::Pause { pause, .. } => {
                    assert!(pause <= PAUSE_MAX && pause >= Duration::from_secs(1))
                }
                Fault::Partition { minority, hold, .. } => {
                    assert!((1..=2).contains(&minority), "minority of 5 is 1 or 2");
                    assert!(hold <= ROUND * 6 / 10 && hold >= ROUND * 3 / 10);
                }
                Fault::Restart { .. } => {}
            }
        }
        assert_eq!(
            s.iter().map(|r| r.index).collect::<Vec<_>>(),
            (1..=200).collect::<Vec<_>>()
        );
    }

    #[test]
    fn no_partitions_without_a_minority() {
        let s = schedule(3, 100, 2, ROUND);
        assert!(s.iter().all(|r| r.fault.kind() != FaultKind::Partition));
    }

    #[test]
    fn targets_resolve_against_the_leader() {
        assert_eq!(Target::Leader.resolve(Some(2), 3), Some(2));
        assert_eq!(Target::Leader.resolve(None, 3), None);
        assert_eq!(Target::Follower { pick: 0 }.resolve(Some(0), 3), Some(1));
        assert_eq!(Target::Follower { pick: 3 }.resolve(Some(0), 3), Some(2));
        assert_eq!(Target::Follower { pick: 1 }.resolve(None, 3), Some(1));
        assert_eq!(Target::Follower { pick: 1 }.resolve(Some(0), 1), None);
    }

    #[test]
    fn minority_sides() {
        assert_eq!(minority_side(3, Some(1), 1, true, 9), vec![1]);
        let side = minority_side(5, Some(0), 2, false, 9);
        assert_eq!(side.len(), 2);
        assert!(!side.contains(&0));
        let side = minority_side(5, Some(4), 2, true, 9);
        assert!(side.contains(&4) && side.len() == 2);
        assert_eq!(minority_side(5, Some(4), 2, true, 9), side, "pure");
    }
}

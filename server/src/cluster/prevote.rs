//! Pre-vote, which openraft 0.9 lacks (issue 14: a follower back from a pause or a partition
//! must not depose a healthy leader).
//!
//! openraft's own election timer is switched off (`enable_elect: false`). Instead this node
//! watches its own contact with the leader — the time of the last append-entries or snapshot
//! chunk it accepted ([`Contact`], touched by `server.rs`) — and when that is older than a
//! randomised election timeout it first asks every other voter over `POST /raft/prevote`
//! whether it would vote. A voter says yes only when it has not heard from a leader for at
//! least `cluster.election_timeout_min_ms` itself, is not the leader, and the candidate's log is
//! not behind its own ([`grant`]). Only with a majority of yeses (this node included) does it
//! call `raft.trigger().elect()`, which bumps the term. A follower that was paused or cut off
//! asks, hears "no" from peers that still hear the leader, and rejoins at the term it left:
//! no term bump, no step-down.
//!
//! Failover is unchanged in cost: when the leader really is gone every follower's contact ages
//! out together, the pre-vote round is one RPC, then the normal election runs.
//!
//! Two rules keep that true (issue 14 item 4: a failover once took 15 s):
//! - [`Contact`] means only "heard from a leader". A failed pre-vote or an election this node
//!   started does not touch it; the retry waits on its own clock ([`due`]), which a pre-vote
//!   this node grants restarts too (so the one it granted can finish its election undisturbed). Touching it made
//!   the two survivors of a 3-node cluster refuse each other in turn: each failed attempt reset
//!   the asker's clock, so the other's next ask found it "still hearing a leader".
//! - openraft's leader lease (its `election_timeout_max`, during which a voter rejects every
//!   vote) is set to the pre-vote's own threshold ([`raft_timeouts`]), so an election that a
//!   majority pre-voted for is not rejected by that lease. With openraft's lease at
//!   `election_timeout_max_ms` (1 s) every first election after a 0.5–1 s timeout was refused,
//!   and the candidate's term then ran ahead of the other survivor's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openclaw_cluster::NodeId;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::Cluster;

/// The route a pre-vote is asked on.
pub const PREVOTE_PATH: &str = "/raft/prevote";

/// When this node last heard from a leader, and when it last tried (or let another voter try)
/// to become one (milliseconds since it started).
pub struct Contact {
    origin: Instant,
    last_ms: AtomicU64,
    /// This node's last pre-vote round or granted pre-vote; [`NEVER`] before the first.
    attempt_ms: AtomicU64,
}

/// `attempt_ms` before any attempt.
const NEVER: u64 = u64::MAX;

impl Default for Contact {
    fn default() -> Contact {
        Contact {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
            attempt_ms: AtomicU64::new(NEVER),
        }
    }
}

impl Contact {
    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// A leader was heard from (an accepted append-entries or snapshot chunk), or this node is
    /// the leader. Never for this node's own pre-vote or election attempts (see the header).
    /// Returns the milliseconds since the previous contact (the heartbeat gap).
    pub fn touch(&self) -> u64 {
        let now = self.now_ms();
        now.saturating_sub(self.last_ms.swap(now, Ordering::Relaxed))
    }

    /// Milliseconds since the last contact.
    pub fn since_ms(&self) -> u64 {
        self.now_ms()
            .saturating_sub(self.last_ms.load(Ordering::Relaxed))
    }

    /// This node asked for a pre-vote, or granted one: its own next attempt waits a fresh
    /// timeout from now (as a Raft vote resets the election timer), which keeps the survivors
    /// from splitting the vote. The contact clock is untouched, so it still grants others.
    pub fn note_attempt(&self) {
        self.attempt_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Milliseconds since [`Contact::note_attempt`], `None` before the first.
    pub fn since_attempt_ms(&self) -> Option<u64> {
        match self.attempt_ms.load(Ordering::Relaxed) {
            NEVER => None,
            t => Some(self.now_ms().saturating_sub(t)),
        }
    }
}

/// Pure: is a gap between two contacts from a leader worth a log line? Two missed heartbeats
/// or more (a follower whose heartbeats starve behind request work comes near its election
/// timeout); the first contact after an election (a gap over the lease) is failover, not that.
pub fn heartbeat_gap_notable(gap_ms: u64, raft_heartbeat_ms: u64, lease_ms: u64) -> bool {
    gap_ms >= raft_heartbeat_ms.saturating_mul(3) && gap_ms < lease_ms
}

/// "Would you vote for me?"
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreVoteRequest {
    pub candidate: NodeId,
    /// The candidate's current term (its next election would use `term + 1`).
    pub term: u64,
    pub last_log_index: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreVoteReply {
    pub granted: bool,
}

/// What this voter knows when a pre-vote arrives.
#[derive(Debug, Clone, Copy)]
pub struct Voter {
    pub is_leader: bool,
    pub term: u64,
    pub last_log_index: Option<u64>,
    /// Milliseconds since it last heard from a leader.
    pub since_contact_ms: u64,
    pub election_timeout_min_ms: u64,
}

/// Pure: grant a pre-vote only when this voter has lost the leader too and the candidate's log
/// is not behind (the real vote checks the log exactly; this only avoids useless elections).
pub fn grant(me: Voter, ask: &PreVoteRequest) -> bool {
    !me.is_leader
        && me.since_contact_ms >= me.election_timeout_min_ms
        && ask.term >= me.term
        && ask.last_log_index >= me.last_log_index
}

/// Pure: openraft's `(election_timeout_min, election_timeout_max)` for our
/// `cluster.election_timeout_min_ms`. openraft's own timer is off, so these set only its vote
/// RPC deadline (the min) and its leader lease (the max, see [`lease_ms`]).
pub fn raft_timeouts(election_timeout_min_ms: u64) -> (u64, u64) {
    (election_timeout_min_ms, lease_ms(election_timeout_min_ms))
}

/// Pure: openraft's leader lease, which is also the silence after which this node grants a
/// pre-vote: a voter that grants one would also accept the vote that follows.
pub fn lease_ms(election_timeout_min_ms: u64) -> u64 {
    election_timeout_min_ms + 1
}

/// Pure: time to ask for a pre-vote? Only when no leader was heard for `timeout_ms` and the
/// last attempt of this node (its own round or a pre-vote it granted), if any, is `timeout_ms`
/// old too.
pub fn due(since_contact_ms: u64, since_attempt_ms: Option<u64>, timeout_ms: u64) -> bool {
    since_contact_ms >= timeout_ms && since_attempt_ms.is_none_or(|a| a >= timeout_ms)
}

/// Pure: enough yeses (this node's own counted) among `voters` to start an election.
pub fn majority(yes: usize, voters: usize) -> bool {
    voters > 0 && yes * 2 > voters
}

impl Cluster {
    /// This node as a voter answering a pre-vote.
    pub fn prevote_answer(&self, ask: &PreVoteRequest) -> PreVoteReply {
        let m = self.raft.metrics().borrow().clone();
        let me = Voter {
            is_leader: m.current_leader == Some(self.id),
            term: m.current_term,
            last_log_index: m.last_log_index,
            since_contact_ms: self.contact.since_ms(),
            election_timeout_min_ms: lease_ms(self.cfg.election_timeout_min_ms),
        };
        let granted = grant(me, ask);
        if granted {
            self.contact.note_attempt();
        }
        tracing::debug!(
            candidate = ask.candidate,
            term = ask.term,
            last_log_index = ask.last_log_index,
            my_term = me.term,
            my_last_log_index = me.last_log_index,
            since_contact_ms = me.since_contact_ms,
            is_leader = me.is_leader,
            granted,
            "pre-vote asked"
        );
        PreVoteReply { granted }
    }
}

/// The election driver: runs until `shutdown`.
pub fn spawn(c: Arc<Cluster>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let tick = Duration::from_millis((c.cfg.raft_heartbeat_ms / 3).clamp(10, 100));
        let mut timeout = roll(&c);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(tick) => {}
            }
            let m = c.raft.metrics().borrow().clone();
            let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
            if m.current_leader == Some(c.id) || !voters.contains(&c.id) {
                c.contact.touch();
                continue;
            }
            if !due(c.contact.since_ms(), c.contact.since_attempt_ms(), timeout) {
                continue;
            }
            c.contact.note_attempt();
            let ask = PreVoteRequest {
                candidate: c.id,
                term: m.current_term,
                last_log_index: m.last_log_index,
            };
            let yes = 1 + ask_peers(&c, &m, &voters, &ask).await;
            tracing::debug!(
                node_id = c.id,
                term = m.current_term,
                last_log_index = m.last_log_index,
                since_contact_ms = c.contact.since_ms(),
                timeout_ms = timeout,
                yes,
                voters = voters.len(),
                "pre-vote round done"
            );
            if majority(yes, voters.len()) {
                tracing::info!(
                    node_id = c.id,
                    term = m.current_term,
                    yes,
                    voters = voters.len(),
                    "no leader heard for {} ms and a majority agrees: starting an election",
                    c.contact.since_ms()
                );
                if let Err(e) = c.raft.trigger().elect().await {
                    tracing::warn!(error = %e, "could not start an election");
                    return;
                }
            } else if let Some(suppressed) = crate::throttled!("pre-vote refused") {
                tracing::info!(
                    node_id = c.id,
                    yes,
                    voters = voters.len(),
                    suppressed,
                    "no leader heard for {} ms, but the other voters still hear one (or cannot be reached): not starting an election",
                    c.contact.since_ms()
                );
            }
            // Whatever the outcome, wait a fresh randomised timeout (from this attempt, or from a
            // pre-vote granted meanwhile) before asking again. The contact clock stays as it is: touching it here would make this
            // node refuse the other survivors' pre-votes as if it still heard a leader.
            timeout = roll(&c);
        }
    });
}

/// A randomised election timeout in `[election_timeout_min_ms, election_timeout_max_ms)`.
fn roll(c: &Cluster) -> u64 {
    let (lo, hi) = (
        c.cfg.election_timeout_min_ms,
        c.cfg
            .election_timeout_max_ms
            .max(c.cfg.election_timeout_min_ms + 1),
    );
    rand::rng().random_range(lo..hi)
}

/// Ask every other voter at once; the number of yeses. An unreachable peer is a no.
async fn ask_peers(
    c: &Cluster,
    m: &openraft::RaftMetrics<NodeId, openclaw_cluster::Member>,
    voters: &[NodeId],
    ask: &PreVoteRequest,
) -> usize {
    let membership = m.membership_config.membership();
    let within = Duration::from_millis(c.cfg.election_timeout_min_ms);
    let asks = voters.iter().filter(|v| **v != c.id).filter_map(|v| {
        let addr = membership.get_node(v)?.cluster_addr.clone();
        Some(async move {
            c.client
                .post::<_, PreVoteReply>(&addr, PREVOTE_PATH, ask, within)
                .await
                .map(|r| r.granted)
                .unwrap_or(false)
        })
    });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .filter(|g| *g)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voter(is_leader: bool, since: u64, term: u64, idx: Option<u64>) -> Voter {
        Voter {
            is_leader,
            term,
            last_log_index: idx,
            since_contact_ms: since,
            election_timeout_min_ms: 500,
        }
    }

    fn ask(term: u64, idx: Option<u64>) -> PreVoteRequest {
        PreVoteRequest {
            candidate: 9,
            term,
            last_log_index: idx,
        }
    }

    #[test]
    fn grant_table() {
        // (voter, request, granted, why)
        let cases = [
            (
                voter(false, 600, 3, Some(10)),
                ask(3, Some(10)),
                true,
                "lost the leader too, same log",
            ),
            (
                voter(false, 600, 3, Some(10)),
                ask(3, Some(12)),
                true,
                "candidate ahead",
            ),
            (
                voter(false, 100, 3, Some(10)),
                ask(3, Some(10)),
                false,
                "still hears the leader",
            ),
            (
                voter(false, 499, 3, Some(10)),
                ask(3, Some(10)),
                false,
                "just under the timeout",
            ),
            (
                voter(false, 500, 3, Some(10)),
                ask(3, Some(10)),
                true,
                "exactly the timeout",
            ),
            (
                voter(true, 9999, 3, Some(10)),
                ask(3, Some(10)),
                false,
                "the leader never grants",
            ),
            (
                voter(false, 600, 3, Some(10)),
                ask(3, Some(9)),
                false,
                "candidate's log behind",
            ),
            (
                voter(false, 600, 3, Some(10)),
                ask(3, None),
                false,
                "candidate has no log",
            ),
            (
                voter(false, 600, 4, Some(10)),
                ask(3, Some(10)),
                false,
                "candidate's term behind",
            ),
            (
                voter(false, 600, 0, None),
                ask(0, None),
                true,
                "fresh cluster",
            ),
        ];
        for (me, req, want, why) in cases {
            assert_eq!(grant(me, &req), want, "{why}");
        }
    }

    #[test]
    fn due_table() {
        // (since contact, since own last attempt, timeout, due, why)
        let cases = [
            (100, None, 700, false, "leader heard recently"),
            (699, None, 700, false, "just under the timeout"),
            (700, None, 700, true, "timed out, never tried"),
            (
                5000,
                Some(300),
                700,
                false,
                "tried 300 ms ago: wait for the retry",
            ),
            (5000, Some(700), 700, true, "retry due"),
            (
                5000,
                Some(0),
                700,
                false,
                "an attempt just now does not count as leader contact, but waits",
            ),
            (
                300,
                Some(9000),
                700,
                false,
                "a leader was heard since the last attempt",
            ),
        ];
        for (contact, attempt, timeout, want, why) in cases {
            assert_eq!(due(contact, attempt, timeout), want, "{why}");
        }
    }

    #[test]
    fn heartbeat_gap_table() {
        // (gap, heartbeat, lease, notable, why)
        let cases = [
            (150, 150, 501, false, "on time"),
            (449, 150, 501, false, "under three heartbeats"),
            (450, 150, 501, true, "two heartbeats missed"),
            (500, 150, 501, true, "at the edge of the lease"),
            (501, 150, 501, false, "past the lease: an election happened"),
            (3000, 150, 501, false, "failover"),
        ];
        for (gap, hb, lease, want, why) in cases {
            assert_eq!(heartbeat_gap_notable(gap, hb, lease), want, "{why}");
        }
    }

    #[test]
    fn raft_timeouts_table() {
        // openraft's lease (its max) equals the pre-vote threshold, and min < max as its
        // validation demands.
        for min in [2, 150, 500, 800, 10_000] {
            let (lo, hi) = raft_timeouts(min);
            assert_eq!(hi, lease_ms(min), "lease of {min}");
            assert!(lo < hi, "{min}: {lo} < {hi}");
            assert_eq!(lo, min, "vote RPC deadline of {min}");
        }
    }

    #[test]
    fn majority_table() {
        let cases = [
            (1, 1, true),
            (1, 3, false),
            (2, 3, true),
            (2, 4, false),
            (3, 4, true),
            (3, 5, true),
            (2, 5, false),
            (0, 0, false),
        ];
        for (yes, voters, want) in cases {
            assert_eq!(majority(yes, voters), want, "{yes} of {voters}");
        }
    }
}

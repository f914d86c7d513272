//! The proposer: turns single commands from handlers and workers into batched Raft entries.
//!
//! Callers `propose` one command and await its reply. A loop drains the bounded queue
//! (`cluster.proposals_max`; full → [`ClusterError::Busy`], HTTP 503 + `Retry-After`) into batches
//! of up to `cluster.batch_max` commands, and writes up to `cluster.writes_in_flight` batches at
//! once. On the leader a batch is one `client_write`; on a follower it is forwarded to the leader
//! (`POST /cluster/write`), which stamps the time. A batch is retried only when it certainly was
//! not applied (the target said it is not the leader, or could not be reached): when no leader
//! takes it within the deadline the caller gets [`ClusterError::Unavailable`] (surely not
//! applied); any other failure is [`ClusterError::Unknown`] (it may commit), which admissions
//! resolve ([`super::outcome`]) and the node's reconcile loop repairs for the rest.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openclaw_cluster::{Command, Member, NodeId, Reply, Request, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::net::{PeerClient, PeerError};
use crate::util::now_ms;

/// Why a proposal was not committed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    /// Too many proposals waiting; retry shortly.
    #[error("too many cluster writes waiting ({0}); retry shortly")]
    Busy(usize),
    /// Not committed, and surely not applied: no leader could be reached, or each leader
    /// asked said it was not the leader.
    #[error("{0}")]
    Unavailable(String),
    /// No answer (a commit or a forward timed out, the leader's answer was lost): the batch may
    /// have committed or may still commit. See [`super::outcome`].
    #[error("outcome unknown: {0}")]
    Unknown(String),
}

/// What a leader answers to a forwarded batch.
#[derive(Debug, Serialize, Deserialize)]
pub enum WriteReply {
    Done(Response),
    /// Not the leader (any more); here is who is, if known.
    NotLeader(Option<(NodeId, Member)>),
    Failed(String),
}

struct Proposal {
    cmd: Command,
    reply: oneshot::Sender<Result<Reply, ClusterError>>,
}

#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Proposal>,
    capacity: usize,
}

/// Settings of the write path.
#[derive(Debug, Clone)]
pub struct ProposerConfig {
    pub batch_max: usize,
    pub proposals_max: usize,
    pub writes_in_flight: usize,
    /// How long a batch may keep looking for a leader.
    pub deadline: Duration,
}

impl Proposer {
    pub fn start(
        raft: openclaw_cluster::Raft,
        me: NodeId,
        client: PeerClient,
        cfg: ProposerConfig,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Proposer {
        let (tx, mut rx) = mpsc::channel::<Proposal>(cfg.proposals_max);
        let writes = Arc::new(Semaphore::new(cfg.writes_in_flight));
        let batch_max = cfg.batch_max;
        tokio::spawn(async move {
            loop {
                let first = tokio::select! {
                    p = rx.recv() => match p { Some(p) => p, None => return },
                    _ = shutdown.cancelled() => return,
                };
                let Ok(permit) = writes.clone().acquire_owned().await else {
                    return;
                };
                let mut batch = vec![first];
                while batch.len() < batch_max {
                    match rx.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                let raft = raft.clone();
                let client = client.clone();
                let deadline = cfg.deadline;
                tokio::spawn(async move {
                    let (cmds, replies): (Vec<Command>, Vec<_>) =
                        batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
                    let n = cmds.len();
                    let res = write(&raft, me, &client, cmds, deadline).await;
                    crate::metrics::metrics()
                        .cluster_batch_size
                        .observe(n as f64);
                    match res {
                        Ok(resp) if resp.replies.len() == n => {
                            for (tx, r) in replies.into_iter().zip(resp.replies) {
                                let _ = tx.send(Ok(r));
                            }
                        }
                        Ok(_) => {
                            for tx in replies {
                                let _ = tx.send(Err(ClusterError::Unknown(
                                    "the leader answered a different number of replies".into(),
                                )));
                            }
                        }
                        Err(e) => {
                            for tx in replies {
                                let _ = tx.send(Err(e.clone()));
                            }
                        }
                    }
                    drop(permit);
                });
            }
        });
        Proposer {
            tx,
            capacity: cfg.proposals_max,
        }
    }

    /// Commit one command through Raft; returns its reply.
    pub async fn propose(&self, cmd: Command) -> Result<Reply, ClusterError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Proposal { cmd, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => ClusterError::Busy(self.capacity),
                mpsc::error::TrySendError::Closed(_) => {
                    ClusterError::Unavailable("the node is shutting down".into())
                }
            })?;
        // The batch was taken: it may have been written before the node stopped.
        rx.await
            .map_err(|_| ClusterError::Unknown("the node is shutting down".into()))?
    }

    /// Proposals waiting to be written.
    pub fn waiting(&self) -> usize {
        self.capacity - self.tx.capacity()
    }
}

/// Write one batch: locally when leader, else forwarded; retried while it surely did not apply.
async fn write(
    raft: &openclaw_cluster::Raft,
    me: NodeId,
    client: &PeerClient,
    cmds: Vec<Command>,
    deadline: Duration,
) -> Result<Response, ClusterError> {
    let until = Instant::now() + deadline;
    let mut backoff = Duration::from_millis(20);
    let mut last = String::from("no leader elected yet");
    loop {
        let leader = {
            let m = raft.metrics().borrow().clone();
            m.current_leader.and_then(|id| {
                m.membership_config
                    .membership()
                    .get_node(&id)
                    .map(|n| (id, n.clone()))
            })
        };
        match leader {
            // A leader whose Raft RPCs fail to most voters would only append an entry that
            // cannot commit now (an unknown outcome): refuse before writing instead.
            Some((id, _)) if id == me && !in_reach_of_majority(raft, me, client) => {
                last = "the leader cannot reach a majority of voters".into()
            }
            Some((id, _)) if id == me => match apply_locally(
                raft,
                cmds.clone(),
                until.saturating_duration_since(Instant::now()),
            )
            .await
            {
                WriteReply::Done(r) => return Ok(r),
                WriteReply::NotLeader(_) => last = "leadership moved".into(),
                WriteReply::Failed(e) => return Err(ClusterError::Unknown(e)),
            },
            Some((id, node)) => {
                let left = until.saturating_duration_since(Instant::now());
                match client
                    .post::<_, WriteReply>(&node.cluster_addr, "/cluster/write", &cmds, left)
                    .await
                {
                    Ok(WriteReply::Done(r)) => return Ok(r),
                    Ok(WriteReply::NotLeader(_)) => last = format!("node {id} is no longer leader"),
                    Ok(WriteReply::Failed(e)) => return Err(ClusterError::Unknown(e)),
                    Err(PeerError::Unreachable(_, e)) => {
                        last = format!("leader {id} unreachable: {e}")
                    }
                    Err(PeerError::Failed(_, e)) => {
                        return Err(ClusterError::Unknown(format!(
                            "forwarding to leader {id} failed: {e}"
                        )))
                    }
                }
            }
            None => {}
        }
        if Instant::now() + backoff > until {
            return Err(ClusterError::Unavailable(format!(
                "no leader could commit within {} ms: {last}",
                deadline.as_millis()
            )));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(200));
    }
}

/// Can this node reach a majority of the voters (itself included) by its last Raft RPCs?
pub fn in_reach_of_majority(
    raft: &openclaw_cluster::Raft,
    me: NodeId,
    client: &PeerClient,
) -> bool {
    let voters: Vec<NodeId> = raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    majority_reachable(&voters, me, &client.health.failing())
}

/// Do this node and the voters it can reach (no failing Raft RPC) make a majority of `voters`?
pub fn majority_reachable(
    voters: &[NodeId],
    me: NodeId,
    failing: &std::collections::BTreeSet<NodeId>,
) -> bool {
    let reachable = voters
        .iter()
        .filter(|v| **v == me || !failing.contains(v))
        .count();
    reachable * 2 > voters.len()
}

/// `client_write` on this node, stamped with this node's clock, for at most `within`. A write
/// that times out (no quorum) may still commit later: the caller is told the outcome is unknown.
pub async fn apply_locally(
    raft: &openclaw_cluster::Raft,
    cmds: Vec<Command>,
    within: Duration,
) -> WriteReply {
    use openraft::error::{ClientWriteError, RaftError};
    let req = Request {
        now_ms: now_ms(),
        cmds,
    };
    let Ok(res) = tokio::time::timeout(within, raft.client_write(req)).await else {
        return WriteReply::Failed(format!(
            "not committed within {} ms (no majority reachable?)",
            within.as_millis()
        ));
    };
    match res {
        Ok(r) => WriteReply::Done(r.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            WriteReply::NotLeader(f.leader_id.zip(f.leader_node))
        }
        Err(e) => WriteReply::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_writes_only_with_a_majority_in_reach() {
        let set = |v: &[NodeId]| v.iter().copied().collect::<std::collections::BTreeSet<_>>();
        // (voters, me, failing) -> reachable majority
        let cases: [(&[NodeId], NodeId, &[NodeId], bool); 7] = [
            (&[1], 1, &[], true),
            (&[1, 2, 3], 1, &[], true),
            (&[1, 2, 3], 1, &[2], true),
            (&[1, 2, 3], 1, &[2, 3], false),
            (&[1, 2, 3, 4, 5], 1, &[2, 3], true),
            (&[1, 2, 3, 4, 5], 1, &[2, 3, 4], false),
            // A failing learner (not a voter) does not count.
            (&[1, 2, 3], 1, &[9], true),
        ];
        for (voters, me, failing, want) in cases {
            assert_eq!(
                majority_reachable(voters, me, &set(failing)),
                want,
                "{voters:?} me={me} failing={failing:?}"
            );
        }
    }
}

//! Sessions in cluster mode: [`RaftSessions`] implements the [`SessionStore`] seam over the
//! replicated state. A turn is the `RecordTurn` command, committed through Raft before
//! `record_turn` returns; reads come from this node's replica (its disk). Expiry and the
//! `session.sessions_max` bound are the replicated `SweepSessions` command, proposed by the
//! leader only, in rounds of at most `SESSION_SWEEP_BATCH_MAX`.
//!
//! Reading your own turn: a worker reads the session right after its `Start` committed, and
//! `RaftLedger::start` waits until this replica has applied that `Start` for a session task, so
//! the previous turn (committed before the previous task finished, which came before this
//! `Start` in the log) is there.

use std::sync::Arc;

use openclaw_cluster::state::SESSION_SWEEP_BATCH_MAX;
use openclaw_cluster::{Command, Reply};
use openclaw_proto::session::{Session, TurnUpdate};

use super::Cluster;
use crate::config::ConfigCell;
use crate::sessions::{page_limit, SessionError, SessionPage, SessionStore, SESSION_MESSAGES_MAX};

/// `SweepSessions` commands one sweep proposes at most (the next sweep continues).
pub const SWEEP_ROUNDS_MAX: u32 = 10;

pub struct RaftSessions {
    cluster: Arc<Cluster>,
    cfg: ConfigCell,
}

impl RaftSessions {
    pub fn new(cluster: Arc<Cluster>, cfg: ConfigCell) -> RaftSessions {
        RaftSessions { cluster, cfg }
    }
}

#[async_trait::async_trait]
impl SessionStore for RaftSessions {
    async fn get(&self, id: &str) -> Result<Option<Session>, SessionError> {
        self.cluster
            .sm
            .session(id)
            .map_err(|e| SessionError::Unavailable(format!("reading the replica: {e}")))
    }

    async fn record_turn(&self, upd: TurnUpdate) -> Result<(), SessionError> {
        let cmd = Command::RecordTurn {
            turn: Box::new(upd),
            node: self.cluster.id,
            messages_max: SESSION_MESSAGES_MAX as u32,
            sessions_max: self.cfg.get().session.sessions_max,
        };
        match self.cluster.proposer.propose(cmd).await {
            Ok(Reply::Ok) => Ok(()),
            Ok(other) => Err(SessionError::Unavailable(format!(
                "unexpected reply {other:?}"
            ))),
            Err(e) => Err(SessionError::Unavailable(e.to_string())),
        }
    }

    async fn sweep(&self, now_ms: u64) -> Result<u64, SessionError> {
        if !self.cluster.is_leader() {
            return Ok(0);
        }
        let cfg = self.cfg.get();
        let (before_ms, keep_max) = (cfg.session.expired_before(now_ms), cfg.session.sessions_max);
        drop(cfg);
        let mut total = 0;
        for _ in 0..SWEEP_ROUNDS_MAX {
            let cmd = Command::SweepSessions {
                before_ms,
                keep_max,
                max: SESSION_SWEEP_BATCH_MAX,
            };
            match self.cluster.proposer.propose(cmd).await {
                Ok(Reply::Purged(n)) => {
                    total += n;
                    if n < u64::from(SESSION_SWEEP_BATCH_MAX) {
                        break;
                    }
                }
                Ok(_) => break,
                Err(e) => return Err(SessionError::Unavailable(e.to_string())),
            }
        }
        Ok(total)
    }

    async fn list(&self, after: Option<&str>, limit: usize) -> Result<SessionPage, SessionError> {
        let limit = page_limit(limit);
        let sessions = self
            .cluster
            .sm
            .sessions_page(after, limit + 1)
            .map_err(|e| SessionError::Unavailable(format!("reading the replica: {e}")))?;
        Ok(SessionPage::of(sessions, limit))
    }

    /// A replicated command: every node forgets it.
    async fn remove(&self, id: &str) -> Result<bool, SessionError> {
        let cmd = Command::RemoveSession { id: id.to_string() };
        match self.cluster.proposer.propose(cmd).await {
            Ok(Reply::Purged(n)) => Ok(n > 0),
            Ok(other) => Err(SessionError::Unavailable(format!(
                "unexpected reply {other:?}"
            ))),
            Err(e) => Err(SessionError::Unavailable(e.to_string())),
        }
    }

    async fn count(&self) -> Result<u64, SessionError> {
        self.cluster
            .sm
            .sessions_kept()
            .map_err(|e| SessionError::Unavailable(format!("reading the replica: {e}")))
    }
}

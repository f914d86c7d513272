//! The cron marks in cluster mode: read from this node's replica, moved by the replicated
//! `CronMark` command (`openclaw_cluster::state::cron`), so a firing is claimed once in the
//! cluster and the marks survive any node.

use std::sync::Arc;

use openclaw_cluster::{Command, Reply};
use openclaw_proto::CronMark;

use super::Cluster;
use crate::cron::CronMarks;

pub struct RaftMarks(pub Arc<Cluster>);

#[async_trait::async_trait]
impl CronMarks for RaftMarks {
    fn last(&self, job: &str) -> Result<Option<CronMark>, String> {
        Ok(self.0.sm.read(|s| s.cron.get(job).cloned()))
    }

    async fn advance(&self, job: &str, mark: CronMark) -> Result<bool, String> {
        let cmd = Command::CronMark {
            job: job.to_string(),
            mark,
        };
        match self.0.proposer.propose(cmd).await {
            Ok(Reply::Claimed(moved)) => Ok(moved),
            Ok(other) => Err(format!("unexpected reply {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }
}

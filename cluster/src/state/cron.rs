//! Cron marks in the replicated state: each job's latest fired scheduled time, so that a
//! firing is claimed once in the whole cluster and a cluster restarted after a total outage
//! knows what it missed (`catch_up`).
//!
//! A mark only moves forward: [`ClusterState::cron_mark`] accepts a firing strictly later than
//! the job's mark and refuses one at or before it. Deterministic like the rest of `apply`:
//! no clock, a `BTreeMap`, a bound ([`CRON_MARKS_MAX`]) at which new jobs are refused.

use openclaw_proto::CronMark;

use super::ClusterState;

/// Most jobs with a mark (the config allows fewer; a mark of a removed job stays).
pub const CRON_MARKS_MAX: usize = 1024;

impl ClusterState {
    /// Move `job`'s mark to `mark` if it is later; `true` when it moved.
    pub fn cron_mark(&mut self, job: &str, mark: &CronMark) -> bool {
        match self.cron.get(job) {
            Some(m) if m.scheduled_at_ms >= mark.scheduled_at_ms => false,
            None if self.cron.len() >= CRON_MARKS_MAX => false,
            _ => {
                self.cron.insert(job.to_string(), mark.clone());
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(at: u64, node: &str) -> CronMark {
        CronMark {
            scheduled_at_ms: at,
            task_id: Some(format!("t{at}")),
            node: node.into(),
        }
    }

    #[test]
    fn a_mark_moves_only_forward_and_is_claimed_once() {
        let mut s = ClusterState::default();
        // (job, scheduled_at, node, claimed?)
        let table = [
            ("daily", 2_000, "1", true),
            ("daily", 2_000, "2", false), // the same firing from another node
            ("daily", 1_000, "3", false), // an older firing
            ("daily", 4_000, "2", true),
            ("hourly", 1_000, "3", true), // jobs are independent
            ("daily", 4_000, "1", false),
        ];
        for (job, at, node, claimed) in table {
            assert_eq!(
                s.cron_mark(job, &mark(at, node)),
                claimed,
                "{job} {at} {node}"
            );
        }
        assert_eq!(s.cron["daily"], mark(4_000, "2"));
        assert_eq!(s.cron["hourly"].scheduled_at_ms, 1_000);
    }

    #[test]
    fn new_jobs_are_refused_at_the_bound() {
        let mut s = ClusterState::default();
        for i in 0..CRON_MARKS_MAX {
            assert!(s.cron_mark(&format!("j{i}"), &mark(1, "1")));
        }
        assert!(!s.cron_mark("one-too-many", &mark(1, "1")));
        // Known jobs still move.
        assert!(s.cron_mark("j0", &mark(2, "1")));
    }
}

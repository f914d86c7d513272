//! The cron ticker: one tokio task per node. Every [`TICK_MS`] it looks at each job, and when a
//! firing is due (after the job's cursor: the latest firing known fired, here or — through the
//! marks — anywhere in the cluster) it fires what [`schedule::plan`] says, oldest first. A
//! firing that fails (no leader during an election, a full queue) is tried again at the next
//! tick from the same cursor, for as long as it is late rather than missed.

use std::collections::HashMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::schedule::{self, Schedule};
use super::Cron;
use crate::util::now_ms;

/// Pause between ticks: the precision of a firing.
pub const TICK_MS: u64 = 200;

struct JobState {
    /// `(schedule, timezone)` the parsed schedule is for (a reload may change them).
    source: (String, Option<String>),
    schedule: Schedule,
    cursor: u64,
}

pub fn spawn(cron: Cron, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut jobs: HashMap<String, JobState> = HashMap::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(TICK_MS)) => {}
            }
            tick(&cron, &mut jobs).await;
        }
    })
}

async fn tick(cron: &Cron, jobs: &mut HashMap<String, JobState>) {
    let cfg = cron.cfg.get();
    jobs.retain(|name, _| cfg.cron.jobs.iter().any(|j| &j.name == name));
    for job in &cfg.cron.jobs {
        let now = now_ms();
        let source = (job.schedule.clone(), job.timezone.clone());
        let mark = cron
            .marks
            .last(&job.name)
            .ok()
            .flatten()
            .map(|m| m.scheduled_at_ms);
        let st = match jobs.get_mut(&job.name) {
            Some(st) if st.source == source => st,
            _ => {
                let Ok(schedule) = Schedule::of(job) else {
                    continue;
                };
                // A job never fired starts now: nothing before this node first saw it.
                let cursor = mark.unwrap_or(now);
                jobs.insert(
                    job.name.clone(),
                    JobState {
                        source,
                        schedule,
                        cursor,
                    },
                );
                match jobs.get_mut(&job.name) {
                    Some(st) => st,
                    None => continue,
                }
            }
        };
        if let Some(m) = mark {
            st.cursor = st.cursor.max(m);
        }
        if st.schedule.next_after(st.cursor).is_none_or(|n| n > now) {
            continue;
        }
        let plan = schedule::plan(
            &st.schedule,
            st.cursor,
            now,
            job.catch_up,
            cfg.cron.missed_after_seconds.saturating_mul(1000),
        );
        if plan.skipped {
            tracing::warn!(job = %job.name, catch_up = ?job.catch_up, "cron: firings were missed while no node ran (passed over)");
        }
        st.cursor = plan.cursor;
        for at in plan.fire {
            match cron.fire(job, at, false).await {
                Ok(_) => st.cursor = st.cursor.max(at),
                Err(e) => {
                    if let Some(n) = crate::throttled!(&job.name) {
                        tracing::warn!(job = %job.name, error = %e, suppressed = n, "cron: a firing failed; retrying at the next tick");
                    }
                    break;
                }
            }
        }
    }
}

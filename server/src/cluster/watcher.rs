//! The cluster watcher: keeps this node's actors in step with the replicated state.
//!
//! - **Events** applied by Raft: a task queued on this node → the scheduler; a task moved away
//!   → the scheduler drops it (and stops it if it was running here); a task finished anywhere
//!   → long-polls on this node wake up. The event channel is bounded; a watcher that lags
//!   reconciles from the state instead, so nothing is missed.
//! - **Heartbeat**: renews this node's liveness lease every `cluster.heartbeat_ms`.
//! - **Leader duties**: `Expire` when a node's lease ran out or tasks sit on a dead node;
//!   promotes learners to voters while there are fewer than `cluster.max_voters`.
//! - **Stealing**: with spare workers and a backlog elsewhere, proposes `Steal`.
//! - **Reconcile** (every few seconds): queued tasks of this node missing from the scheduler are
//!   enqueued; tasks the state says run here but no worker runs are requeued (a crash, or a
//!   write whose outcome was unknown).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use openclaw_cluster::placement::steal_plan;
use openclaw_cluster::{Command, Event, NodeReport, Reply};
use openclaw_proto::TaskStatus;
use tokio::sync::broadcast::error::RecvError;

use super::ledger::owned_by;
use super::Cluster;
use crate::tasks::Tasks;
use crate::util::now_ms;

/// What the watcher drives on this node: its tasks (scheduler, running set, long-poll
/// events), until the node shuts down.
#[derive(Clone)]
pub struct Local {
    pub tasks: Tasks,
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// How often the reconcile loop compares the state with the scheduler.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(2);
/// A task the state says runs here, with no worker for this long, is requeued.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(3);

pub fn spawn(local: Local, c: Arc<Cluster>) {
    tokio::spawn(events(local.clone(), c.clone()));
    tokio::spawn(heartbeat(local.clone(), c.clone()));
    tokio::spawn(leader_duties(local.clone(), c.clone()));
    tokio::spawn(steal(local.clone(), c.clone()));
    tokio::spawn(reconcile_loop(local, c));
}

fn enqueue(local: &Local, c: &Cluster, id: &str) {
    // A session's later turn is enqueued only once the turns before it are final (`apply`
    // emits `Queued` then); until then it would only be refused `Start`.
    let Some(rec) =
        c.sm.read(|s| s.tasks.get(id).filter(|r| s.session_turn_ready(r)).cloned())
    else {
        return;
    };
    if rec.status != TaskStatus::Queued || !owned_by(&rec, c.id) {
        return;
    }
    local.tasks.enqueue(&rec);
}

async fn events(local: Local, c: Arc<Cluster>) {
    let mut rx = c.sm.subscribe();
    loop {
        let batch = tokio::select! {
            b = rx.recv() => b,
            _ = local.shutdown.cancelled() => return,
        };
        match batch {
            Ok(batch) => {
                for ev in batch.iter() {
                    match ev {
                        Event::Queued { id, owner } if *owner == c.id => enqueue(&local, &c, id),
                        Event::Revoked { id, from } if *from == c.id => {
                            local.tasks.revoke(id);
                        }
                        Event::Finished { id } => {
                            local.tasks.finished(id);
                        }
                        _ => {}
                    }
                }
            }
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "cluster events lagged; reconciling from the state"
                );
                reconcile(&local, &c, false).await;
            }
            Err(RecvError::Closed) => return,
        }
    }
}

async fn heartbeat(local: Local, c: Arc<Cluster>) {
    let every = Duration::from_millis(c.cfg.heartbeat_ms);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = local.shutdown.cancelled() => return,
        }
        let report = NodeReport {
            http_addr: c.member.http_addr.clone(),
            workers: local.tasks.cfg.get().server.workers as u32,
            lease_ms: c.cfg.node_lease_ms,
        };
        if let Err(e) = c
            .proposer
            .propose(Command::Heartbeat { node: c.id, report })
            .await
        {
            tracing::debug!(error = %e, "heartbeat not committed");
        }
        c.refresh_mesh(openclaw_cluster::mesh::LoadReport {
            queued: local
                .tasks
                .queued
                .load(std::sync::atomic::Ordering::Relaxed) as u32,
            running: local.tasks.running.len() as u32,
            workers: local.tasks.cfg.get().server.workers as u32,
        })
        .await;
        let m = c.raft.metrics().borrow().clone();
        let metrics = crate::metrics::metrics();
        metrics
            .cluster_is_leader
            .set((m.current_leader == Some(c.id)) as i64);
        metrics.cluster_term.set(m.current_term as i64);
        metrics
            .cluster_nodes_alive
            .set(c.sm.read(|s| s.live_loads().len()) as i64);
    }
}

/// How long a new leader waits before declaring nodes dead: during an election no heartbeat can
/// commit, so every lease may look lapsed; live nodes get this long to renew through the new
/// leader first.
pub fn expire_grace(heartbeat_ms: u64) -> Duration {
    Duration::from_millis((3 * heartbeat_ms).max(1000))
}

async fn leader_duties(local: Local, c: Arc<Cluster>) {
    let mut tick = tokio::time::interval(Duration::from_millis(c.cfg.heartbeat_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let grace = expire_grace(c.cfg.heartbeat_ms);
    let mut leader_since: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = local.shutdown.cancelled() => return,
        }
        if !c.is_leader() {
            leader_since = None;
            continue;
        }
        let since = *leader_since.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() < grace {
            continue;
        }
        let now = now_ms();
        let needs_expire = c.sm.read(|s| {
            let lapsed = s.nodes.values().any(|n| !n.dead && n.lease_until_ms <= now);
            let orphans = s.tasks.values().any(|r| {
                !r.status.is_final() && openclaw_cluster::owner_id(r).is_some_and(|o| !s.is_live(o))
            }) && !s.live_loads().is_empty();
            // A dead node's withheld budget slices whose time is up go back to the pool.
            let slices_due = !s.dead_leases_due(now).is_empty();
            lapsed || orphans || slices_due
        });
        if needs_expire {
            match c.proposer.propose(Command::Expire).await {
                Ok(Reply::Expired(nodes)) => {
                    tracing::warn!(
                        ?nodes,
                        "nodes missed their lease; their tasks move to live nodes"
                    )
                }
                Ok(Reply::Moved(ids)) if !ids.is_empty() => {
                    crate::metrics::metrics()
                        .cluster_tasks_moved_total
                        .with_label_values(&["failover"])
                        .inc_by(ids.len() as u64);
                    tracing::info!(moved = ids.len(), "re-owned tasks of dead nodes")
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "expire not committed"),
            }
        }
        promote_learners(&c).await;
    }
}

/// Learners that are alive become voters while there are fewer than `max_voters`.
async fn promote_learners(c: &Cluster) {
    let (voters, learners): (BTreeSet<u64>, Vec<u64>) = {
        let m = c.raft.metrics().borrow().clone();
        let mem = m.membership_config.membership();
        (mem.voter_ids().collect(), mem.learner_ids().collect())
    };
    if voters.len() >= c.cfg.max_voters {
        return;
    }
    let Some(next) = learners.into_iter().find(|l| c.sm.read(|s| s.is_live(*l))) else {
        return;
    };
    let mut add = BTreeSet::new();
    add.insert(next);
    match c
        .raft
        .change_membership(openraft::ChangeMembers::AddVoterIds(add), false)
        .await
    {
        Ok(_) => tracing::info!(node_id = next, "promoted a learner to voter"),
        Err(e) => tracing::debug!(error = %e, "promotion failed"),
    }
}

async fn steal(local: Local, c: Arc<Cluster>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = local.shutdown.cancelled() => return,
        }
        let plan = c.sm.read(|s| {
            let live = s.live_loads();
            steal_plan(&live, c.id, u32::MAX)
        });
        let max: u32 = plan.iter().map(|(_, n)| n).sum();
        if max == 0 {
            continue;
        }
        match c.proposer.propose(Command::Steal { node: c.id, max }).await {
            Ok(Reply::Moved(ids)) if !ids.is_empty() => {
                crate::metrics::metrics()
                    .cluster_tasks_moved_total
                    .with_label_values(&["steal"])
                    .inc_by(ids.len() as u64);
                tracing::info!(stolen = ids.len(), "took queued work from busy nodes");
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "steal not committed"),
        }
    }
}

async fn reconcile_loop(local: Local, c: Arc<Cluster>) {
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = local.shutdown.cancelled() => return,
        }
        reconcile(&local, &c, true).await;
        super::quota::return_idle_slices(&c).await;
    }
}

/// Bring the scheduler in line with the state (see the module header).
async fn reconcile(local: &Local, c: &Cluster, requeue_orphans: bool) {
    let now = now_ms();
    let grace = ORPHAN_GRACE.as_millis() as u64;
    let (queued, stuck): (Vec<String>, Vec<(String, u64)>) = c.sm.read(|s| {
        let mut q = Vec::new();
        let mut r = Vec::new();
        for rec in s.tasks.values() {
            if !owned_by(rec, c.id) {
                continue;
            }
            match rec.status {
                TaskStatus::Queued => q.push(rec.id.clone()),
                TaskStatus::Running
                    if rec.started_at_ms.unwrap_or(0) + grace < now
                        && local.tasks.running.get(&rec.id).is_none() =>
                {
                    r.push((rec.id.clone(), rec.epoch))
                }
                _ => {}
            }
        }
        (q, r)
    });
    for id in queued {
        enqueue(local, c, &id);
    }
    if !requeue_orphans {
        return;
    }
    for (id, epoch) in stuck {
        // Checked again right before: a worker may have just started it.
        if local.tasks.running.get(&id).is_some() {
            continue;
        }
        match c
            .proposer
            .propose(Command::Requeue {
                id: id.clone(),
                epoch,
                reason: openclaw_cluster::RequeueReason::Stopped,
            })
            .await
        {
            Ok(Reply::Task(_)) => {
                tracing::warn!(task = %id, "task marked running here had no worker; requeued")
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "requeue not committed"),
        }
    }
}

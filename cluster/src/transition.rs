//! Pure transitions of one task record: `(record, change) → record | rejection`. No clock, no
//! I/O — time comes in as an argument — so the single-node ledger and the Raft `apply` share them.
//!
//! Fencing: `start` bumps the record's `epoch` and names the owner; `finish` and `requeue` must
//! carry that epoch, so a worker that lost its lease (preempted, cancelled, re-owned) cannot
//! complete the task a second time.

use openclaw_proto::api::TaskErrorView;
use openclaw_proto::{TaskRecord, TaskStatus};

use crate::types::{Outcome, Rejection, RequeueReason};

fn wrong(rec: &TaskRecord) -> Rejection {
    Rejection::WrongState {
        id: rec.id.clone(),
        status: rec.status.as_str().to_string(),
    }
}

fn fence(rec: &TaskRecord, epoch: u64) -> Result<(), Rejection> {
    if rec.epoch != epoch {
        return Err(Rejection::Fenced {
            id: rec.id.clone(),
            given: epoch,
            current: rec.epoch,
        });
    }
    Ok(())
}

/// Queued → Running, owned by `node` under a new epoch; counts an attempt (`attempts` counts
/// runs that reach the provider: a run held by the budget gives it back in [`requeue`]).
pub fn start(mut rec: TaskRecord, node: &str, now_ms: u64) -> Result<TaskRecord, Rejection> {
    if rec.status != TaskStatus::Queued {
        return Err(wrong(&rec));
    }
    rec.status = TaskStatus::Running;
    rec.owner = Some(node.to_string());
    rec.epoch += 1;
    rec.attempts += 1;
    rec.started_at_ms = Some(now_ms);
    Ok(rec)
}

/// Running → final, only for the current epoch.
pub fn finish(
    mut rec: TaskRecord,
    epoch: u64,
    outcome: Outcome,
    now_ms: u64,
) -> Result<TaskRecord, Rejection> {
    if rec.status != TaskStatus::Running {
        return Err(wrong(&rec));
    }
    fence(&rec, epoch)?;
    rec.status = if outcome.status.is_final() {
        outcome.status
    } else {
        TaskStatus::Failed
    };
    if outcome.model.is_some() {
        rec.model = outcome.model;
    }
    if outcome.route.is_some() {
        rec.route = outcome.route;
    }
    rec.fallbacks = outcome.fallbacks;
    rec.output = outcome.output;
    rec.tokens = outcome.tokens;
    rec.cost_usd = outcome.cost_usd;
    rec.error = outcome.error;
    rec.cache_hit = outcome.cache_hit;
    rec.cache_score = outcome.cache_score;
    rec.prompt = outcome.prompt;
    rec.context = outcome.context;
    rec.memory_chunks = outcome.memory_chunks;
    rec.finished_at_ms = Some(now_ms);
    Ok(rec)
}

/// Running → Queued (preempted, held by the budget, or the owner went away), for the current
/// epoch. The epoch is bumped so the old run can no longer finish. A preemption is counted; a
/// budget hold is counted in `holds` and takes back the attempt `start` counted (no provider
/// call was made); otherwise attempts are kept. The caller decides the owner.
pub fn requeue(
    mut rec: TaskRecord,
    epoch: u64,
    reason: RequeueReason,
) -> Result<TaskRecord, Rejection> {
    if rec.status != TaskStatus::Running {
        return Err(wrong(&rec));
    }
    fence(&rec, epoch)?;
    rec.status = TaskStatus::Queued;
    rec.owner = None;
    rec.epoch += 1;
    match reason {
        RequeueReason::Preempted => rec.preemptions += 1,
        RequeueReason::BudgetHeld => {
            rec.attempts = rec.attempts.saturating_sub(1);
            rec.holds += 1;
        }
        RequeueReason::Stopped => {}
    }
    Ok(rec)
}

/// Queued → Cancelled. (A running task is cancelled by its worker, through `finish`.)
pub fn cancel_queued(mut rec: TaskRecord, now_ms: u64) -> Result<TaskRecord, Rejection> {
    if rec.status != TaskStatus::Queued {
        return Err(wrong(&rec));
    }
    rec.status = TaskStatus::Cancelled;
    rec.epoch += 1;
    rec.error = Some(TaskErrorView {
        code: "cancelled".into(),
        message: "cancelled by request".into(),
    });
    rec.finished_at_ms = Some(now_ms);
    Ok(rec)
}

/// Queued or Running → Queued on `owner` under a new epoch: the old owner is gone. Final tasks
/// are left alone.
pub fn reassign(mut rec: TaskRecord, owner: &str) -> Result<TaskRecord, Rejection> {
    if rec.status.is_final() {
        return Err(wrong(&rec));
    }
    rec.status = TaskStatus::Queued;
    rec.owner = Some(owner.to_string());
    rec.epoch += 1;
    Ok(rec)
}

/// Start-up recovery on the owning node: a task left Running by a crash runs again.
pub fn recover(rec: TaskRecord) -> TaskRecord {
    match rec.status {
        TaskStatus::Running => {
            let epoch = rec.epoch;
            requeue(rec.clone(), epoch, RequeueReason::Stopped).unwrap_or(rec)
        }
        _ => rec,
    }
}

//! The tasks running on this node, shared between the scheduler (which decides: starts,
//! preempts, cancels) and the workers (which act and remove themselves). It lives outside the
//! scheduler actor, so a scheduler restart loses no running task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use openclaw_proto::Priority;

use crate::limits::WaitNote;
use tokio_util::sync::CancellationToken;

/// Why a running task was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Preempted,
    Cancelled,
    Shutdown,
    /// Another node owns the task now (it was re-owned after this node missed its lease).
    Revoked,
}

/// One running task, shared between the scheduler (which decides) and its worker (which acts).
#[derive(Debug, Clone)]
pub struct RunningSlot {
    pub id: String,
    pub agent: String,
    /// The session whose turn it runs, if any (its next turn waits).
    pub session: Option<String>,
    pub priority: Priority,
    pub started_seq: u64,
    pub started: Instant,
    pub cancel: CancellationToken,
    pub stop: Arc<Mutex<Option<StopReason>>>,
    /// The rate-limit scope the worker's model call waits for now, if any.
    pub wait: WaitNote,
}

impl RunningSlot {
    /// Ask the worker to stop; the first reason wins.
    pub fn request_stop(&self, reason: StopReason) -> bool {
        let mut stop = self.stop.lock().unwrap_or_else(|p| p.into_inner());
        if stop.is_some() {
            return false;
        }
        *stop = Some(reason);
        self.cancel.cancel();
        true
    }

    pub fn stop_reason(&self) -> Option<StopReason> {
        *self.stop.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Running tasks by id. Survives scheduler restarts (workers outlive the actor).
#[derive(Debug, Default)]
pub struct RunningSet {
    inner: Mutex<HashMap<String, RunningSlot>>,
}

impl RunningSet {
    pub fn insert(&self, slot: RunningSlot) {
        self.lock().insert(slot.id.clone(), slot);
    }
    pub fn remove(&self, id: &str) -> Option<RunningSlot> {
        self.lock().remove(id)
    }
    pub fn get(&self, id: &str) -> Option<RunningSlot> {
        self.lock().get(id).cloned()
    }
    pub fn len(&self) -> usize {
        self.lock().len()
    }
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
    pub fn snapshot(&self) -> Vec<RunningSlot> {
        self.lock().values().cloned().collect()
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, RunningSlot>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

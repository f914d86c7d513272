//! Readiness: `/ready` answers 200 once start-up finished and while no supervised actor was
//! given up on (the supervisor reports through [`HealthSink`]).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use crate::supervisor::HealthSink;

/// Readiness: false until start-up finished; children the supervisor gave up on are listed.
#[derive(Debug, Default)]
pub struct Health {
    started: std::sync::atomic::AtomicBool,
    failed: Mutex<BTreeSet<String>>,
}

impl Health {
    pub fn set_started(&self) {
        self.started.store(true, Ordering::SeqCst);
    }
    pub fn mark_failed(&self, child: &str) {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(child.to_string());
    }
    pub fn clear_failed(&self, child: &str) {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(child);
    }
    /// `Ok` when ready, else the reasons.
    pub fn ready(&self) -> Result<(), Vec<String>> {
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        let mut why: Vec<String> = failed
            .iter()
            .map(|c| format!("actor {c} stopped after repeated crashes"))
            .collect();
        if !self.started.load(Ordering::SeqCst) {
            why.push("node is starting".into());
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why)
        }
    }
}

impl HealthSink for Health {
    fn child_failed(&self, name: &str) {
        self.mark_failed(name);
    }
    fn child_running(&self, name: &str) {
        self.clear_failed(name);
    }
}

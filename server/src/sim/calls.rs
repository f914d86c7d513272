//! The simulator's call log: every call it received (faults and bad requests included), kept in
//! a ring of at most `calls_max` records, plus a count that keeps going past the bound.
//!
//! `seq` numbers are never reused, not even after a reset, so `?since=<seq>` stays meaningful.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// `status` of a call that never got an answer (a simulated hang).
pub const STATUS_NO_ANSWER: u16 = 0;

/// One call, as `GET /sim/calls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    pub seq: u64,
    /// From the `X-OpenClaw-Task-Id` header.
    pub task_id: Option<String>,
    pub model: String,
    /// HTTP status answered; [`STATUS_NO_ANSWER`] for a hang.
    pub status: u16,
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub stream: bool,
    /// Arrival, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `openai` or `anthropic`.
    pub api: String,
    /// `500`, `429`, `hang`, `slow` or null.
    pub fault: Option<String>,
    /// A summary request (its system message starts with `SUMMARY_MARKER`).
    #[serde(default)]
    pub summary: bool,
    /// An embeddings request (`POST /v1/embeddings`; `output_tokens` is 0).
    #[serde(default)]
    pub embedding: bool,
}

/// `GET /sim/calls` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallsView {
    /// Calls served since start (or the last reset), including those no longer in `calls`.
    pub count: u64,
    pub calls: Vec<CallRecord>,
}

#[derive(Debug)]
pub struct CallLog {
    calls: VecDeque<CallRecord>,
    calls_max: usize,
    count: u64,
    last_seq: u64,
}

impl CallLog {
    pub fn new(calls_max: usize) -> Self {
        CallLog {
            calls: VecDeque::with_capacity(calls_max.min(1024)),
            calls_max,
            count: 0,
            last_seq: 0,
        }
    }

    /// Record a call; its `seq` is assigned here and returned.
    pub fn record(&mut self, mut call: CallRecord) -> u64 {
        self.last_seq += 1;
        self.count += 1;
        call.seq = self.last_seq;
        if self.calls_max > 0 {
            if self.calls.len() >= self.calls_max {
                self.calls.pop_front();
            }
            self.calls.push_back(call);
        }
        debug_assert!(self.calls.len() <= self.calls_max);
        self.last_seq
    }

    /// Calls with `seq > since` (when given) and the given task id (when given), oldest first.
    pub fn view(&self, task_id: Option<&str>, since: Option<u64>) -> CallsView {
        let calls = self
            .calls
            .iter()
            .filter(|c| since.is_none_or(|s| c.seq > s))
            .filter(|c| task_id.is_none_or(|t| c.task_id.as_deref() == Some(t)))
            .cloned()
            .collect();
        CallsView {
            count: self.count,
            calls,
        }
    }

    /// Forget every call and zero the count (`seq` keeps increasing).
    pub fn reset(&mut self) {
        self.calls.clear();
        self.count = 0;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn call(task: Option<&str>) -> CallRecord {
        CallRecord {
            seq: 0,
            task_id: task.map(str::to_string),
            model: "m".into(),
            status: 200,
            input_tokens: 1,
            output_tokens: 2,
            stream: false,
            at_ms: 0,
            api: "openai".into(),
            fault: None,
            summary: false,
            embedding: false,
        }
    }

    #[test]
    fn the_log_is_bounded_but_the_count_is_not() {
        let mut log = CallLog::new(3);
        for i in 0..5 {
            let task = format!("t{}", i % 2);
            log.record(call(Some(&task)));
        }
        let v = log.view(None, None);
        assert_eq!(v.count, 5);
        assert_eq!(
            v.calls.iter().map(|c| c.seq).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        let t0 = log.view(Some("t0"), None);
        assert_eq!(
            t0.calls.iter().map(|c| c.seq).collect::<Vec<_>>(),
            vec![3, 5]
        );
        assert_eq!(log.view(None, Some(4)).calls.len(), 1);
        log.reset();
        assert_eq!(
            log.view(None, None),
            CallsView {
                count: 0,
                calls: vec![]
            }
        );
        assert_eq!(log.record(call(None)), 6);
    }

    #[test]
    fn a_zero_bound_keeps_only_the_count() {
        let mut log = CallLog::new(0);
        log.record(call(None));
        assert_eq!(log.view(None, None).count, 1);
        assert!(log.view(None, None).calls.is_empty());
    }
}

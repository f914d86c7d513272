//! A conversation's state, as stored (sled alone, the replicated state in a cluster) and as
//! served (`GET /api/sessions/{id}`): the recent messages kept in full, the running summary of
//! the older ones, counts. And [`TurnUpdate`], the one change a finished turn makes, with its
//! pure application [`Session::apply_turn`], shared by the local store and the Raft `apply` so
//! both give the same session for the same turns.
//!
//! Invariant: a session is bounded. After every turn it holds at most `messages_max` messages
//! (the oldest beyond that leave; the context layer folds them into the summary first when
//! `summarize_older` is on), and one summary.

use serde::{Deserialize, Serialize};

/// The first line of the system message of a summary request (the gateway folding a session's
/// older messages into its running summary). The simulator answers such a request with a short
/// summary built from the messages it is given.
pub const SUMMARY_MARKER: &str = "[openclaw:summary]";

/// One message kept in full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionMessage {
    pub role: String,
    pub content: String,
    /// Its size by the gateway's token estimator, counted once when it is recorded.
    pub tokens: u32,
}

/// The running summary of the messages that left the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    pub text: String,
    pub tokens: u32,
    /// How many messages it folds in, over the session's life.
    pub covers: u64,
}

/// A conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub agent: String,
    /// The newest messages, oldest first.
    pub messages: Vec<SessionMessage>,
    pub summary: Option<SessionSummary>,
    /// Turns recorded (failed ones included).
    pub turns: u64,
    pub last_task: Option<String>,
    pub updated_at_ms: u64,
}

/// What one finished turn changes: the `fold` oldest messages leave (already folded into
/// `summary` by the context layer, or simply dropped), `summary` replaces the running summary
/// when set, and `append` (the turn's user message and answer; empty for a failed turn) is added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnUpdate {
    pub session: String,
    pub agent: String,
    pub task_id: String,
    pub fold: u32,
    pub summary: Option<SessionSummary>,
    pub append: Vec<SessionMessage>,
}

impl Session {
    pub fn new(id: &str, agent: &str) -> Session {
        Session {
            id: id.to_string(),
            agent: agent.to_string(),
            messages: Vec::new(),
            summary: None,
            turns: 0,
            last_task: None,
            updated_at_ms: 0,
        }
    }

    /// Apply one turn (pure: the same session and update give the same result on every node).
    /// At most `messages_max` messages remain, the newest. The same task's turn applied again
    /// (a retried write) changes nothing; returns whether it applied.
    pub fn apply_turn(&mut self, upd: &TurnUpdate, now_ms: u64, messages_max: usize) -> bool {
        if self.last_task.as_deref() == Some(upd.task_id.as_str()) {
            return false;
        }
        let fold = (upd.fold as usize).min(self.messages.len());
        self.messages.drain(..fold);
        if let Some(s) = &upd.summary {
            self.summary = Some(s.clone());
        }
        self.messages.extend(upd.append.iter().cloned());
        if self.messages.len() > messages_max {
            let over = self.messages.len() - messages_max;
            self.messages.drain(..over);
        }
        self.turns += 1;
        self.last_task = Some(upd.task_id.clone());
        self.updated_at_ms = now_ms;
        true
    }

    /// Tokens of the messages kept in full.
    pub fn message_tokens(&self) -> u64 {
        self.messages.iter().map(|m| u64::from(m.tokens)).sum()
    }

    /// Tokens of the summary.
    pub fn summary_tokens(&self) -> u64 {
        self.summary.as_ref().map_or(0, |s| u64::from(s.tokens))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: u32) -> SessionMessage {
        SessionMessage {
            role: if n % 2 == 0 { "user" } else { "assistant" }.into(),
            content: format!("m{n}"),
            tokens: n,
        }
    }

    fn turn(fold: u32, summary: Option<&str>, append: &[u32]) -> TurnUpdate {
        TurnUpdate {
            session: "s".into(),
            agent: "a".into(),
            task_id: "t".into(),
            fold,
            summary: summary.map(|t| SessionSummary {
                text: t.into(),
                tokens: 3,
                covers: u64::from(fold),
            }),
            append: append.iter().map(|n| msg(*n)).collect(),
        }
    }

    #[test]
    fn turns_fold_replace_append_and_stay_bounded() {
        // (messages before, update, max) -> (contents after, summary after)
        type Case = (Vec<u32>, TurnUpdate, usize, Vec<u32>, Option<&'static str>);
        let cases: Vec<Case> = vec![
            (vec![], turn(0, None, &[0, 1]), 10, vec![0, 1], None),
            (
                vec![0, 1],
                turn(0, None, &[2, 3]),
                10,
                vec![0, 1, 2, 3],
                None,
            ),
            (
                vec![0, 1, 2, 3],
                turn(2, Some("s1"), &[4, 5]),
                10,
                vec![2, 3, 4, 5],
                Some("s1"),
            ),
            // The bound drops the oldest beyond it.
            (
                vec![0, 1, 2, 3],
                turn(0, None, &[4, 5]),
                4,
                vec![2, 3, 4, 5],
                None,
            ),
            // Folding more than is kept folds what is there.
            (
                vec![0, 1],
                turn(9, Some("s"), &[2, 3]),
                10,
                vec![2, 3],
                Some("s"),
            ),
            // A failed turn appends nothing but counts.
            (vec![0, 1], turn(0, None, &[]), 10, vec![0, 1], None),
        ];
        for (before, upd, max, after, summary) in cases {
            let mut s = Session::new("s", "a");
            s.messages = before.iter().map(|n| msg(*n)).collect();
            assert!(s.apply_turn(&upd, 7, max));
            assert!(
                !s.apply_turn(&upd, 8, max),
                "the same task's turn applies once"
            );
            let got: Vec<u32> = s.messages.iter().map(|m| m.tokens).collect();
            assert_eq!(got, after, "{before:?} + {upd:?}");
            assert_eq!(s.summary.as_ref().map(|s| s.text.as_str()), summary);
            assert_eq!(s.turns, 1);
            assert_eq!(s.last_task.as_deref(), Some("t"));
            assert_eq!(s.updated_at_ms, 7);
        }
    }
}

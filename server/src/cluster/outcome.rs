//! Unknown write outcomes of a task admission: what a node answers when it cannot tell whether
//! its `Admit` committed.
//!
//! A proposal either surely did not apply (the queue was full, no leader could be reached, the
//! leader said it is not the leader), committed (the reply came back), or ended with no answer
//! (a commit or forward timed out, the leader's answer was lost): the entry may be in the log
//! and commit later. The node made the task id before proposing and `Admit` is idempotent by
//! id (a second apply answers the first record), so on an unknown outcome it looks at its own
//! replica and proposes the same `Admit` again, for at most [`RESOLVE_WITHIN`]. Only when that
//! bound passes without an answer does the client hear `outcome_unknown` (503, with the task id
//! and `Location: /api/tasks/{id}`): GET it before retrying. [`next`] is the decision.

use std::time::Duration;

/// How long an admission with an unknown outcome keeps finding out (replica reads and
/// idempotent re-proposals) before it answers `outcome_unknown`.
pub const RESOLVE_WITHIN: Duration = Duration::from_secs(5);

/// Pause between two re-proposals of the same admission.
pub const RESOLVE_PAUSE: Duration = Duration::from_millis(100);

/// How one proposal of the admission ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The command applied and its reply names this task (admitted now, or earlier by an
    /// attempt whose answer was lost).
    Applied,
    /// The command applied and was refused by the state machine (session full, …), or it
    /// found another task with the same idempotency key.
    AppliedOther,
    /// Surely not applied: queue full, no leader reachable, leadership moved before commit.
    NotApplied,
    /// No answer: it may have committed, or may commit later.
    Unknown,
}

/// What the admission does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The task exists: answer 202.
    Accept,
    /// Answer what the attempt said (a refusal, or the other task of the same key).
    Answer,
    /// Look again: read the replica, propose the same `Admit` again.
    Retry,
    /// The bound passed without knowing: answer `outcome_unknown`.
    GiveUp,
}

/// The decision after one attempt. `ever_unknown`: an earlier attempt of this admission had no
/// answer; `on_replica`: this node's replica already holds the task; `time_left`: still within
/// [`RESOLVE_WITHIN`] of the first unknown outcome.
pub fn next(attempt: Attempt, ever_unknown: bool, on_replica: bool, time_left: bool) -> Next {
    match attempt {
        Attempt::Applied => Next::Accept,
        _ if on_replica => Next::Accept,
        // The log orders the attempts: had an earlier one applied, this one would have found
        // the task by id (or by its idempotency key) and answered `Applied`.
        Attempt::AppliedOther => Next::Answer,
        // Refused before anything was written, and nothing earlier is pending.
        Attempt::NotApplied if !ever_unknown => Next::Answer,
        Attempt::NotApplied | Attempt::Unknown if time_left => Next::Retry,
        Attempt::NotApplied | Attempt::Unknown => Next::GiveUp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        use Attempt::*;
        use Next::*;
        // (attempt, ever_unknown, on_replica, time_left) -> next
        let cases = [
            (Applied, false, false, true, Accept),
            (Applied, true, false, false, Accept),
            (AppliedOther, false, false, true, Answer),
            (AppliedOther, true, false, true, Answer),
            (AppliedOther, true, true, true, Accept),
            (NotApplied, false, false, true, Answer),
            (NotApplied, false, false, false, Answer),
            (NotApplied, true, false, true, Retry),
            (NotApplied, true, false, false, GiveUp),
            (NotApplied, true, true, false, Accept),
            (Unknown, false, false, true, Retry),
            (Unknown, true, false, true, Retry),
            (Unknown, true, false, false, GiveUp),
            (Unknown, false, true, true, Accept),
            (Unknown, true, true, false, Accept),
        ];
        for (attempt, ever, replica, left, want) in cases {
            assert_eq!(
                next(attempt, ever, replica, left),
                want,
                "{attempt:?} ever_unknown={ever} on_replica={replica} time_left={left}"
            );
        }
    }
}

//! Pure scheduling decisions: the ready queue's order and the preemption choice.
//!
//! Order: strict priority (critical 0 first), FIFO within a level by admission sequence, so a
//! background task only starts when nothing else waits. Preemption (§18.4 `preemption`): when
//! no worker is free, a task whose level is in `allow_preempt_levels` may stop the running task
//! that is at least `preempt_threshold` levels lower — the lowest-priority one, and among those
//! the most recently started (it has lost the least work).
//!
//! Sessions: the turns of one session run one at a time in submission order
//! ([`session_turn_free`]): a task with a `session` starts only when no task of that session
//! runs on this node and no earlier (lower `seq`) task of it waits here, whatever the
//! priorities. Alone this is the whole rule; in a cluster `apply` enforces it across nodes.
//!
//! Invariant: nothing here does I/O, reads the clock or knows about actors.

use std::collections::{BTreeMap, HashMap, HashSet};

use openclaw_proto::Priority;

use crate::config::Preemption;

/// A task waiting to run.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueEntry {
    pub id: String,
    pub priority: Priority,
    /// Admission order (FIFO within a level).
    pub seq: u64,
    pub agent: String,
    /// Monotonic milliseconds when it (re)entered the queue, for queue-wait metrics.
    pub enqueued_at_ms: u64,
    /// The session whose turn it is, if any.
    pub session: Option<String>,
}

/// May `e` start as far as its session goes (pure)? Not while a turn of its session runs
/// (`running`), nor while an earlier turn of it waits (`first_waiting`: the lowest waiting `seq`
/// per session, from [`ReadyQueue::first_per_session`]).
pub fn session_turn_free(
    e: &QueueEntry,
    running: &HashSet<String>,
    first_waiting: &HashMap<String, u64>,
) -> bool {
    let Some(s) = &e.session else {
        return true;
    };
    !running.contains(s) && first_waiting.get(s).is_none_or(|first| *first >= e.seq)
}

/// The ready queue: five FIFO levels with removal by id.
#[derive(Debug, Default)]
pub struct ReadyQueue {
    levels: [BTreeMap<u64, QueueEntry>; 5],
    index: HashMap<String, (Priority, u64)>,
}

impl ReadyQueue {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    /// Add a task; a task already queued is left where it is (returns false).
    pub fn push(&mut self, e: QueueEntry) -> bool {
        if self.index.contains_key(&e.id) {
            return false;
        }
        self.index.insert(e.id.clone(), (e.priority, e.seq));
        self.levels[e.priority.level() as usize].insert(e.seq, e);
        true
    }

    /// The most urgent waiting task's priority.
    pub fn peek_priority(&self) -> Option<Priority> {
        self.levels
            .iter()
            .position(|l| !l.is_empty())
            .and_then(|i| Priority::from_level(i as u8))
    }

    /// Take the next task in order.
    pub fn pop(&mut self) -> Option<QueueEntry> {
        let level = self.levels.iter_mut().find(|l| !l.is_empty())?;
        let (_, e) = level.pop_first()?;
        self.index.remove(&e.id);
        Some(e)
    }

    /// Take the first task in order that `allowed` accepts (the others keep their place).
    pub fn pop_where(&mut self, allowed: impl Fn(&QueueEntry) -> bool) -> Option<QueueEntry> {
        for level in self.levels.iter_mut() {
            let Some(seq) = level.values().find(|e| allowed(e)).map(|e| e.seq) else {
                continue;
            };
            let e = level.remove(&seq)?;
            self.index.remove(&e.id);
            return Some(e);
        }
        None
    }

    pub fn remove(&mut self, id: &str) -> Option<QueueEntry> {
        let (p, seq) = self.index.remove(id)?;
        self.levels[p.level() as usize].remove(&seq)
    }

    /// The lowest waiting `seq` of each session with a task here.
    pub fn first_per_session(&self) -> HashMap<String, u64> {
        let mut first: HashMap<String, u64> = HashMap::new();
        for e in self.levels.iter().flat_map(|l| l.values()) {
            if let Some(s) = &e.session {
                let f = first.entry(s.clone()).or_insert(e.seq);
                *f = (*f).min(e.seq);
            }
        }
        first
    }

    /// Waiting tasks per level, critical first.
    pub fn depth(&self) -> [usize; 5] {
        let mut d = [0; 5];
        for (i, l) in self.levels.iter().enumerate() {
            d[i] = l.len();
        }
        d
    }
}

/// What the scheduler knows of a running task when choosing a victim.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningInfo {
    pub id: String,
    pub priority: Priority,
    /// Start order (larger = started later).
    pub started_seq: u64,
    /// Already asked to stop (preempted or cancelled); never chosen twice.
    pub stopping: bool,
}

/// May `incoming` preempt anything at all under `policy`?
pub fn may_preempt(incoming: Priority, policy: &Preemption) -> bool {
    policy.enabled && policy.allow_preempt_levels.contains(&incoming)
}

/// The running task `incoming` should stop, if any (call only when no worker is free).
pub fn choose_victim<'a>(
    running: &'a [RunningInfo],
    incoming: Priority,
    policy: &Preemption,
) -> Option<&'a RunningInfo> {
    if !may_preempt(incoming, policy) {
        return None;
    }
    running
        .iter()
        .filter(|r| !r.stopping)
        .filter(|r| r.priority.level() >= incoming.level() + policy.preempt_threshold)
        .max_by_key(|r| (r.priority.level(), r.started_seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Priority::*;

    fn entry(id: &str, p: Priority, seq: u64) -> QueueEntry {
        QueueEntry {
            id: id.into(),
            priority: p,
            seq,
            agent: "main".into(),
            enqueued_at_ms: 0,
            session: None,
        }
    }

    fn turn(id: &str, p: Priority, seq: u64, session: &str) -> QueueEntry {
        QueueEntry {
            session: Some(session.into()),
            ..entry(id, p, seq)
        }
    }

    /// A session's turns go one at a time in submission order, whatever their priorities;
    /// other sessions and plain tasks pass them.
    #[test]
    fn a_sessions_turns_wait_for_the_one_before() {
        // (queued, sessions running) -> the order tasks are taken in, finishing each before the next
        type Case = (Vec<QueueEntry>, Vec<&'static str>, Vec<&'static str>);
        let cases: Vec<Case> = vec![
            (
                vec![
                    turn("s1", Low, 1, "a"),
                    turn("s2", Critical, 2, "a"),
                    turn("s3", Normal, 3, "a"),
                ],
                vec![],
                vec!["s1", "s2", "s3"],
            ),
            (
                vec![
                    turn("a2", High, 5, "a"),
                    entry("plain", Low, 6),
                    turn("b1", Normal, 7, "b"),
                ],
                vec!["a"],
                vec!["b1", "plain"],
            ),
            (vec![turn("x", High, 9, "c")], vec!["c"], vec![]),
        ];
        for (queued, running, want) in cases {
            let mut q = ReadyQueue::new();
            for e in queued {
                q.push(e);
            }
            let running: HashSet<String> = running.iter().map(|s| s.to_string()).collect();
            let mut got = Vec::new();
            loop {
                let first = q.first_per_session();
                let Some(e) = q.pop_where(|e| session_turn_free(e, &running, &first)) else {
                    break;
                };
                got.push(e.id);
            }
            assert_eq!(got, want);
        }
    }

    #[test]
    fn pop_where_skips_held_tasks_and_keeps_their_place() {
        let mut q = ReadyQueue::new();
        q.push(entry("n1", Normal, 1));
        q.push(entry("c1", Critical, 5));
        q.push(entry("n2", Normal, 2));
        let only_critical = |e: &QueueEntry| e.priority == Critical;
        assert_eq!(q.pop_where(only_critical).map(|e| e.id), Some("c1".into()));
        assert_eq!(q.pop_where(only_critical).map(|e| e.id), None);
        assert_eq!(q.len(), 2);
        let not_n1 = |e: &QueueEntry| e.id != "n1";
        assert_eq!(q.pop_where(not_n1).map(|e| e.id), Some("n2".into()));
        assert_eq!(q.pop().map(|e| e.id), Some("n1".into()));
        assert!(q.is_empty());
    }

    #[test]
    fn strict_priority_then_fifo() {
        let mut q = ReadyQueue::new();
        for (id, p, seq) in [
            ("bg", Background, 1),
            ("low1", Low, 2),
            ("n1", Normal, 3),
            ("low2", Low, 4),
            ("crit", Critical, 9),
            ("n2", Normal, 5),
            ("high", High, 8),
        ] {
            assert!(q.push(entry(id, p, seq)));
        }
        assert!(!q.push(entry("n1", Normal, 3)));
        assert_eq!(q.depth(), [1, 1, 2, 2, 1]);
        assert_eq!(q.peek_priority(), Some(Critical));
        let order: Vec<String> = std::iter::from_fn(|| q.pop()).map(|e| e.id).collect();
        assert_eq!(order, ["crit", "high", "n1", "n2", "low1", "low2", "bg"]);
        assert!(q.is_empty());
    }

    #[test]
    fn remove_by_id() {
        let mut q = ReadyQueue::new();
        q.push(entry("a", Normal, 1));
        q.push(entry("b", Normal, 2));
        assert_eq!(q.remove("a").map(|e| e.id), Some("a".to_string()));
        assert_eq!(q.remove("a"), None);
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop().map(|e| e.id), Some("b".to_string()));
    }

    #[test]
    fn requeued_task_keeps_its_place_by_seq() {
        let mut q = ReadyQueue::new();
        q.push(entry("new", Low, 10));
        q.push(entry("preempted-old", Low, 3));
        assert_eq!(q.pop().map(|e| e.id), Some("preempted-old".to_string()));
    }

    fn run(id: &str, p: Priority, started: u64) -> RunningInfo {
        RunningInfo {
            id: id.into(),
            priority: p,
            started_seq: started,
            stopping: false,
        }
    }

    #[test]
    fn victim_choice_table() {
        let chapter = Preemption::default(); // critical may preempt, threshold 2
        let off = Preemption {
            enabled: false,
            ..Preemption::default()
        };
        let high_too = Preemption {
            allow_preempt_levels: vec![Critical, High],
            preempt_threshold: 1,
            ..Preemption::default()
        };
        let mut stopping = run("s", Background, 9);
        stopping.stopping = true;
        type Case<'a> = (
            &'a str,
            Vec<RunningInfo>,
            Priority,
            &'a Preemption,
            Option<&'a str>,
        );
        let cases: Vec<Case> = vec![
            (
                "critical stops the lowest",
                vec![run("n", Normal, 1), run("l", Low, 2)],
                Critical,
                &chapter,
                Some("l"),
            ),
            (
                "newest among equals",
                vec![run("l1", Low, 1), run("l2", Low, 5)],
                Critical,
                &chapter,
                Some("l2"),
            ),
            (
                "threshold not met",
                vec![run("h", High, 1)],
                Critical,
                &chapter,
                None,
            ),
            (
                "exactly the threshold",
                vec![run("n", Normal, 1)],
                Critical,
                &chapter,
                Some("n"),
            ),
            (
                "high may not preempt",
                vec![run("b", Background, 1)],
                High,
                &chapter,
                None,
            ),
            (
                "disabled",
                vec![run("b", Background, 1)],
                Critical,
                &off,
                None,
            ),
            (
                "configured high, threshold 1",
                vec![run("n", Normal, 1), run("c", Critical, 2)],
                High,
                &high_too,
                Some("n"),
            ),
            (
                "already stopping is skipped",
                vec![stopping.clone(), run("l", Low, 1)],
                Critical,
                &chapter,
                Some("l"),
            ),
            ("only stopping", vec![stopping], Critical, &chapter, None),
            ("nothing running", vec![], Critical, &chapter, None),
        ];
        for (name, running, incoming, policy, want) in cases {
            let got = choose_victim(&running, incoming, policy).map(|r| r.id.as_str());
            assert_eq!(got, want, "{name}");
        }
    }
}

//! Replicated sessions in the state machine: a conversation's state ([`Session`]) and the order
//! of its turns.
//!
//! On disk (through [`Disk`], so snapshots carry them): `v/<id>` the session, `V/<updated BE><id>`
//! the expiry/eviction index (least recently updated first), `w/<id>` the node that recorded its
//! last turn (placement), and `v#` the number of sessions kept. Nothing of a session is kept in
//! memory; the only in-memory part is derived from the live tasks: each session's live tasks in
//! submission order ([`ClusterState::session_live`]), which decides whose turn it is.
//!
//! Rules (all deterministic in `apply`; time is the batch's):
//! - `RecordTurn` applies [`Session::apply_turn`] (idempotent per task); a new session past
//!   `sessions_max` makes the least recently updated one leave.
//! - `SweepSessions` forgets sessions updated before `before_ms` and, oldest first, more while
//!   over `keep_max`; at most [`SESSION_SWEEP_BATCH_MAX`] per command.
//! - A task of a session may `Start` only when every earlier (lower `seq`) task of the session is
//!   final; when one becomes final the next one's owner is told (`Event::Queued`).
//! - A session's new task goes to the owner of its waiting tasks, else to the node that ran its
//!   last turn while that node is live, else wherever placement says; at most
//!   [`SESSION_WAITING_MAX`] live tasks per session.

use openclaw_proto::session::{Session, TurnUpdate};
use openclaw_proto::{TaskRecord, TaskStatus};

use super::{dec, enc, ClusterState};
use crate::disk::{key, Disk, DiskRead};
use crate::types::{owner_id, Event, NodeId};

/// Sessions one `SweepSessions` command forgets at most (the leader repeats while a full batch
/// comes back).
pub const SESSION_SWEEP_BATCH_MAX: u32 = 10_000;

/// Live (queued or running) tasks one session may have; past it `Admit` is refused
/// (`Rejection::SessionFull`).
pub const SESSION_WAITING_MAX: usize = 100;

/// Disk keys of the sessions.
pub mod skey {
    use crate::disk::key::join;

    pub const SESSION: &[u8] = b"v/";
    pub const UPDATED: &[u8] = b"V/";
    pub const NODE: &[u8] = b"w/";
    pub const COUNT: &[u8] = b"v#";

    pub fn session(id: &str) -> Vec<u8> {
        join(SESSION, &[id.as_bytes()])
    }
    pub fn updated(at_ms: u64, id: &str) -> Vec<u8> {
        join(UPDATED, &[&at_ms.to_be_bytes(), id.as_bytes()])
    }
    pub fn node(id: &str) -> Vec<u8> {
        join(NODE, &[id.as_bytes()])
    }
}

impl ClusterState {
    /// A session, read from `disk`.
    pub fn session<D: DiskRead + ?Sized>(&self, disk: &D, id: &str) -> Option<Session> {
        disk.get(&skey::session(id)).and_then(|v| dec(&v))
    }

    /// Sessions kept.
    pub fn sessions_kept<D: DiskRead + ?Sized>(&self, disk: &D) -> u64 {
        disk.get(skey::COUNT)
            .and_then(|v| v.try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0)
    }

    /// The node that recorded the session's last turn.
    pub fn session_node<D: DiskRead + ?Sized>(&self, disk: &D, id: &str) -> Option<NodeId> {
        disk.get(&skey::node(id))
            .and_then(|v| v.try_into().ok())
            .map(u64::from_be_bytes)
    }

    /// May `rec` start now as far as its session goes: no earlier task of its session is live?
    pub fn session_turn_ready(&self, rec: &TaskRecord) -> bool {
        let Some(s) = &rec.session_id else {
            return true;
        };
        self.session_live
            .get(s)
            .and_then(|live| live.first())
            .is_none_or(|(seq, id)| *seq >= rec.seq || *id == rec.id)
    }

    /// Live tasks of a session.
    pub fn session_waiting(&self, session: &str) -> usize {
        self.session_live.get(session).map_or(0, |l| l.len())
    }

    /// Where a new task of `session` goes, if the session decides: the owner of its live tasks
    /// (so they wait on one node), else the node that ran its last turn, while live.
    pub(super) fn session_owner(&self, disk: &dyn Disk, session: &str) -> Option<NodeId> {
        let by_live = self.session_live.get(session).and_then(|live| {
            live.iter()
                .rev()
                .filter_map(|(_, id)| self.tasks.get(id).and_then(owner_id))
                .find(|o| self.is_live(*o))
        });
        by_live.or_else(|| {
            self.session_node(disk, session)
                .filter(|n| self.is_live(*n))
        })
    }

    pub(super) fn record_turn(
        &mut self,
        disk: &mut dyn Disk,
        upd: &TurnUpdate,
        node: NodeId,
        messages_max: u32,
        sessions_max: u64,
    ) -> bool {
        let now = self.now_ms;
        let old = self.session(&*disk, &upd.session);
        let is_new = old.is_none();
        let mut s = old.unwrap_or_else(|| Session::new(&upd.session, &upd.agent));
        let before = s.updated_at_ms;
        if !s.apply_turn(upd, now, messages_max as usize) {
            return false;
        }
        if is_new {
            let n = self.sessions_kept(&*disk) + 1;
            disk.put(skey::COUNT.to_vec(), n.to_be_bytes().to_vec());
        } else {
            disk.del(&skey::updated(before, &s.id));
        }
        disk.put(skey::updated(s.updated_at_ms, &s.id), Vec::new());
        disk.put(skey::node(&s.id), node.to_be_bytes().to_vec());
        disk.put(skey::session(&s.id), enc(&s));
        if is_new {
            // Past the bound the least recently updated session leaves (this one is the newest).
            self.sweep_sessions(disk, 0, sessions_max, 1);
        }
        true
    }

    /// Forget sessions, oldest first: every one updated before `before_ms`, and more while more
    /// than `keep_max` are kept; at most `max`. Returns how many.
    pub(super) fn sweep_sessions(
        &mut self,
        disk: &mut dyn Disk,
        before_ms: u64,
        keep_max: u64,
        max: u32,
    ) -> u64 {
        let kept = self.sessions_kept(&*disk);
        let over = kept.saturating_sub(keep_max);
        let oldest = disk.range(
            skey::UPDATED,
            &key::end(skey::UPDATED),
            max.min(SESSION_SWEEP_BATCH_MAX) as usize,
        );
        let mut n = 0u64;
        for (k, _) in oldest {
            let Some((at, id)) = key::split_timed(&k) else {
                disk.del(&k);
                continue;
            };
            if n >= over && at >= before_ms {
                break;
            }
            disk.del(&k);
            disk.del(&skey::session(&id));
            disk.del(&skey::node(&id));
            n += 1;
        }
        if n > 0 {
            let left = kept.saturating_sub(n);
            disk.put(skey::COUNT.to_vec(), left.to_be_bytes().to_vec());
        }
        n
    }

    /// Up to `limit` sessions with ids after `after` (exclusive), in id order.
    pub fn sessions_page<D: DiskRead + ?Sized>(
        &self,
        disk: &D,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<Session> {
        let from = match after {
            // The first key after `v/<after>`: the same bytes with a 0 appended.
            Some(a) => {
                let mut k = skey::session(a);
                k.push(0);
                k
            }
            None => skey::SESSION.to_vec(),
        };
        disk.range(&from, &key::end(skey::SESSION), limit)
            .into_iter()
            .filter_map(|(_, v)| dec(&v))
            .collect()
    }

    /// Forget one session; whether it existed.
    pub(super) fn remove_session(&mut self, disk: &mut dyn Disk, id: &str) -> bool {
        let Some(s) = self.session(&*disk, id) else {
            return false;
        };
        disk.del(&skey::updated(s.updated_at_ms, id));
        disk.del(&skey::session(id));
        disk.del(&skey::node(id));
        let left = self.sessions_kept(&*disk).saturating_sub(1);
        disk.put(skey::COUNT.to_vec(), left.to_be_bytes().to_vec());
        true
    }

    /// Keep the per-session order index right for a live task entering (`d` = 1) or leaving
    /// (`d` = -1) memory.
    pub(super) fn index_session(&mut self, rec: &TaskRecord, d: i32) {
        let Some(s) = &rec.session_id else {
            return;
        };
        if d > 0 {
            self.session_live
                .entry(s.clone())
                .or_default()
                .insert((rec.seq, rec.id.clone()));
        } else if let Some(live) = self.session_live.get_mut(s) {
            live.remove(&(rec.seq, rec.id.clone()));
            if live.is_empty() {
                self.session_live.remove(s);
            }
        }
    }

    /// After `done` became final: the session's next task, if queued, may start now.
    pub(super) fn next_turn_event(&self, done: &TaskRecord, ev: &mut Vec<Event>) {
        let Some(s) = &done.session_id else {
            return;
        };
        let next = self
            .session_live
            .get(s)
            .and_then(|l| l.first())
            .and_then(|(_, id)| self.tasks.get(id));
        if let Some(next) = next.filter(|r| r.status == TaskStatus::Queued) {
            if let Some(owner) = owner_id(next) {
                ev.push(Event::Queued {
                    id: next.id.clone(),
                    owner,
                });
            }
        }
    }
}

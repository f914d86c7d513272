//! Tests of the sled Raft storage: openraft's own storage suite, and what survives a restart.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder};
use tempfile::TempDir;

use openclaw_proto::{Priority, TaskRecord, TaskStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::state::ClusterState;
use crate::types::{
    Command, Entry, LogId, Member, NodeReport, Outcome, Request, SnapshotMeta, StoredMembership,
    TypeConfig, Vote,
};

/// A fresh sled db in a temp dir per build; the dir lives as long as the guard.
struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
        let db = sled::open(dir.path().join("db")).map_err(|e| StorageIOError::write(&e))?;
        let (log, sm) = open(&db, &dir.path().join("snaps"), event_channel())?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(SledBuilder).unwrap();
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn membership(ids: &[u64]) -> Membership<u64, Member> {
    let nodes: BTreeMap<u64, Member> = ids.iter().map(|&i| (i, Member::default())).collect();
    Membership::new(vec![ids.iter().copied().collect::<BTreeSet<_>>()], nodes)
}

fn entries() -> Vec<Entry> {
    vec![
        Entry {
            log_id: log_id(1, 1),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id(1, 2),
            payload: EntryPayload::Membership(membership(&[1, 2, 3])),
        },
        Entry {
            log_id: log_id(1, 3),
            payload: EntryPayload::Normal(Request {
                now_ms: 1_000,
                cmds: Vec::new(),
            }),
        },
    ]
}

/// Opens the database at `path`, waiting for a previous handle's lock to go: sled's flusher
/// thread keeps the file lock for up to one flush period after the last `Db` is dropped, so a
/// test that reopens at once would otherwise race it.
fn open_at(path: &Path) -> (sled::Db, LogStore, StateMachineStore) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let db = loop {
        match sled::open(path) {
            Ok(db) => break db,
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("open {}: {e}", path.display()),
        }
    };
    let (log, sm) = open(&db, &path.with_extension("snaps"), event_channel()).unwrap();
    (db, log, sm)
}

#[tokio::test]
async fn log_vote_and_committed_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let vote = Vote::new(3, 1);
    {
        let (db, mut log, _sm) = open_at(&path);
        log.save_vote(&vote).await.unwrap();
        log.blocking_append(entries()).await.unwrap();
        log.save_committed(Some(log_id(1, 2))).await.unwrap();
        // `save_committed` is not flushed by itself; in a node the next append or vote carries
        // it to disk.
        log.save_vote(&vote).await.unwrap();
        set_node_id(&db, 7).unwrap();
    }
    let (db, mut log, sm) = open_at(&path);
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 2)));
    assert_eq!(log.try_get_log_entries(..).await.unwrap(), entries());
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(1, 3)));
    assert_eq!(state.last_purged_log_id, None);
    assert_eq!(node_id(&db).unwrap(), Some(7));

    // Purge and truncate, then restart again.
    log.purge(log_id(1, 1)).await.unwrap();
    log.truncate(log_id(1, 3)).await.unwrap();
    drop((db, log, sm)); // every handle shares sled's file lock
    let (_db, mut log, _sm) = open_at(&path);
    let got = log.try_get_log_entries(..).await.unwrap();
    assert_eq!(got, entries()[1..2].to_vec());
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1)));
    assert_eq!(state.last_log_id, Some(log_id(1, 2)));
}

#[tokio::test]
async fn a_built_snapshot_restores_the_state_machine() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let (want_state, want_meta) = {
        let (_db, _log, mut sm) = open_at(&path);
        assert!(sm.get_current_snapshot().await.unwrap().is_none());
        let replies = sm.apply(entries()).await.unwrap();
        assert_eq!(replies.len(), 3);
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id(1, 3)));
        (sm.read(ClusterState::clone), snap.meta)
    };
    let (_db, _log, mut sm) = open_at(&path);
    assert_eq!(sm.read(ClusterState::clone), want_state);
    assert_eq!(sm.last_applied(), Some(log_id(1, 3)));
    let (applied, members) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 3)));
    assert_eq!(
        members,
        StoredMembership::new(Some(log_id(1, 2)), membership(&[1, 2, 3]))
    );
    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, want_meta);
}

fn normal(index: u64, now_ms: u64, cmds: Vec<Command>) -> Entry {
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Normal(Request { now_ms, cmds }),
    }
}

/// Entries 4.. : node 1 joins, tasks t0..t{n} are admitted (~500-byte inputs), started and
/// finished with an output, so most of the state is on disk.
fn work(from_index: u64, tasks: std::ops::Range<u64>) -> Vec<Entry> {
    let mut out = vec![normal(
        from_index,
        2_000,
        vec![Command::Heartbeat {
            node: 1,
            report: NodeReport {
                http_addr: "h1".into(),
                workers: 4,
                lease_ms: 1_000_000,
            },
        }],
    )];
    for (i, t) in tasks.enumerate() {
        let id = format!("t{t}");
        let mut rec = TaskRecord::queued(&id, "main", &"x".repeat(500), Priority::Normal);
        rec.idempotency_key = Some(format!("k{t}"));
        let mut done = Outcome::failed("x", "y");
        done.status = TaskStatus::Succeeded;
        done.output = Some(format!("output of {id}"));
        let mut cmds = vec![
            Command::Admit {
                rec: Box::new(rec),
                via: 1,
                may_preempt: false,
            },
            Command::Start {
                id: id.clone(),
                node: 1,
            },
        ];
        if t % 3 != 0 {
            cmds.push(Command::Finish {
                id,
                epoch: 1,
                outcome: Box::new(done),
            });
        }
        out.push(normal(from_index + 1 + i as u64, 3_000 + t, cmds));
    }
    out
}

async fn file_bytes(snap: openraft::storage::Snapshot<TypeConfig>) -> Vec<u8> {
    let mut f = snap.snapshot;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).await.unwrap();
    buf
}

/// Everything a replica answers for: the in-memory state and every task, payloads included.
fn view(
    sm: &StateMachineStore,
    ids: std::ops::Range<u64>,
) -> (ClusterState, Vec<Option<TaskRecord>>) {
    (
        sm.read(ClusterState::clone),
        ids.map(|t| sm.task(&format!("t{t}")).unwrap()).collect(),
    )
}

/// A snapshot from the leader carrying state and finished records replaces the state, streams
/// to disk, and survives a restart: the replica compares equal, payloads included.
#[tokio::test]
async fn an_installed_snapshot_replaces_the_state_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (want, meta, data) = {
        let (_db, _log, mut leader) = open_at(&dir.path().join("leader"));
        leader.apply(entries()).await.unwrap();
        leader.apply(work(4, 0..30)).await.unwrap();
        assert!(
            leader.read(|s| s.tasks.len()) == 10,
            "finished tasks left memory"
        );
        let snap = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let meta = snap.meta.clone();
        (view(&leader, 0..31), meta, file_bytes(snap).await)
    };
    let path = dir.path().join("db");
    {
        let (_db, _log, mut sm) = open_at(&path);
        let mut rx = sm.subscribe();
        sm.apply(entries()).await.unwrap();
        let mut buf = sm.begin_receiving_snapshot().await.unwrap();
        // openraft writes the chunks as they come.
        for chunk in data.chunks(1000) {
            buf.write_all(chunk).await.unwrap();
        }
        sm.install_snapshot(&meta, buf).await.unwrap();
        assert_eq!(view(&sm, 0..31), want);
        assert_eq!(sm.last_applied(), meta.last_log_id);
        // An install sends no events (the empty batches of `entries()` sent none either).
        assert!(rx.try_recv().is_err());
    }
    let (_db, _log, mut sm) = open_at(&path);
    assert_eq!(view(&sm, 0..31), want);
    assert_eq!(
        sm.applied_state().await.unwrap(),
        (meta.last_log_id, meta.last_membership.clone())
    );
    assert_eq!(sm.get_current_snapshot().await.unwrap().unwrap().meta, meta);
}

/// A snapshot is the state at its log id, even when entries that overwrite and delete keys
/// (finishes, retention) are applied while it is being written.
#[tokio::test]
async fn a_snapshot_built_while_applying_is_the_state_at_its_log_id() {
    let dir = tempfile::tempdir().unwrap();
    // The reference: only the entries before the build.
    let (_rdb, _rlog, mut reference) = open_at(&dir.path().join("ref"));
    reference.apply(entries()).await.unwrap();
    reference.apply(work(4, 0..20)).await.unwrap();
    let want = view(&reference, 0..40);

    let (_db, _log, mut sm) = open_at(&dir.path().join("db"));
    sm.apply(entries()).await.unwrap();
    sm.apply(work(4, 0..20)).await.unwrap();
    let mut applier = sm.clone();
    let snap = sm
        .build_in_two_steps(|| async move {
            // Meanwhile: more tasks, finishing the rest, and retention down to 5.
            let mut more = work(25, 20..40);
            more.push(normal(
                46,
                9_000,
                vec![Command::Retain {
                    before_ms: 0,
                    keep_max: 5,
                    max: 1_000,
                }],
            ));
            applier.apply(more).await.unwrap();
        })
        .await;
    assert!(sm.read(|s| s.retained_total()) == 5);
    let meta = snap.meta.clone();
    assert_eq!(meta.last_log_id, Some(log_id(1, 24)));
    let data = file_bytes(snap).await;

    let (_idb, _ilog, mut installed) = open_at(&dir.path().join("installed"));
    let mut buf = installed.begin_receiving_snapshot().await.unwrap();
    buf.write_all(&data).await.unwrap();
    installed.install_snapshot(&meta, buf).await.unwrap();
    assert_eq!(view(&installed, 0..40), want);
}

/// A snapshot whose data does not match its metadata is refused, and the state is untouched.
#[tokio::test]
async fn a_corrupt_snapshot_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, _log, mut sm) = open_at(&dir.path().join("db"));
    let meta = SnapshotMeta {
        last_log_id: Some(log_id(1, 1)),
        last_membership: StoredMembership::default(),
        snapshot_id: "bad".into(),
    };
    let mut buf = sm.begin_receiving_snapshot().await.unwrap();
    buf.write_all(b"\x02garbage").await.unwrap();
    assert!(sm.install_snapshot(&meta, buf).await.is_err());
    assert_eq!(sm.last_applied(), None);
    assert!(sm.get_current_snapshot().await.unwrap().is_none());
}

/// The state machine is persistent: a restart finds the state of the last applied entry
/// without a snapshot, the finished tasks on disk and only the live ones in memory.
#[tokio::test]
async fn the_state_machine_survives_a_restart_without_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let want = {
        let (db, _log, mut sm) = open_at(&path);
        sm.apply(entries()).await.unwrap();
        sm.apply(work(4, 0..9)).await.unwrap();
        db.flush().unwrap();
        view(&sm, 0..9)
    };
    let (_db, _log, sm) = open_at(&path);
    assert_eq!(view(&sm, 0..9), want);
    assert_eq!(sm.read(|s| s.tasks.len()), 3);
    assert_eq!(sm.last_applied(), Some(log_id(1, 13)));
    let failed = sm.finished_newest(10, 100, |_| true).unwrap();
    assert_eq!(failed.len(), 6);
    assert_eq!(failed[0].id, "t8", "newest first");
}

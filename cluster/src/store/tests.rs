//! Tests of the sled Raft storage: openraft's own storage suite, and what survives a restart.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder};
use tempfile::TempDir;

use super::sm::SnapshotBodyRef;
use super::*;
use crate::state::ClusterState;
use crate::types::{
    Entry, LogId, Member, Request, SnapshotMeta, StoredMembership, TypeConfig, Vote,
};

/// A fresh sled db in a temp dir per build; the dir lives as long as the guard.
struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
        let db = sled::open(dir.path().join("db")).map_err(|e| StorageIOError::write(&e))?;
        let (log, sm) = open(&db, event_channel())?;
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

fn open_at(path: &Path) -> (sled::Db, LogStore, StateMachineStore) {
    let db = sled::open(path).unwrap();
    let (log, sm) = open(&db, event_channel()).unwrap();
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

/// A snapshot from the leader carrying a non-empty state replaces the state and survives a
/// restart.
#[tokio::test]
async fn an_installed_snapshot_replaces_the_state_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut state = ClusterState::default();
    state.seq = 42;
    state.now_ms = 9_000;
    state.budget_period = "2025-01".into();
    let last = Some(log_id(2, 10));
    let members = StoredMembership::new(Some(log_id(2, 4)), membership(&[1, 2]));
    let data = openclaw_proto::codec::encode(&SnapshotBodyRef {
        last_applied: &last,
        membership: &members,
        state: &state,
    })
    .unwrap();
    let meta = SnapshotMeta {
        last_log_id: last,
        last_membership: members.clone(),
        snapshot_id: "leader-1".into(),
    };
    {
        let (_db, _log, mut sm) = open_at(&path);
        let mut rx = sm.subscribe();
        sm.apply(entries()).await.unwrap();
        let mut buf = sm.begin_receiving_snapshot().await.unwrap();
        buf.get_mut().extend_from_slice(&data);
        sm.install_snapshot(&meta, buf).await.unwrap();
        assert_eq!(sm.read(|s| s.seq), 42);
        assert_eq!(sm.last_applied(), last);
        // Empty batches emit no events, and an install sends none.
        assert!(rx.try_recv().is_err());
    }
    let (_db, _log, mut sm) = open_at(&path);
    assert_eq!(sm.read(ClusterState::clone), state);
    assert_eq!(sm.applied_state().await.unwrap(), (last, members));
    assert_eq!(sm.get_current_snapshot().await.unwrap().unwrap().meta, meta);
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
    buf.get_mut().extend_from_slice(b"\x02garbage");
    assert!(sm.install_snapshot(&meta, buf).await.is_err());
    assert_eq!(sm.last_applied(), None);
    assert!(sm.get_current_snapshot().await.unwrap().is_none());
}

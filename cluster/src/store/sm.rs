//! The Raft state machine, persistent on sled: [`ClusterState`]'s in-memory part plus the tree
//! `sm_data` that `apply` writes through (see [`crate::disk`]).
//!
//! Each Raft entry is one atomic sled batch: the entry's disk writes, the live tasks it changed
//! and the control record (`c`: last applied log id, membership, the encoded in-memory state).
//! So at start the state machine is what the tree says — the control record plus the live
//! tasks (`l/`), memory independent of the finished work kept — and openraft re-applies only
//! the entries after it. Entries are not flushed one by one: after a crash the tree is a
//! prefix of what was applied, and openraft re-applies the rest.
//!
//! Snapshots are files in the snapshot directory, streamed, never whole in memory:
//! - Building one does not stop applying. Under the state lock (briefly) the control record
//!   is encoded and a build is marked in progress; from then on `apply` saves the pre-image of
//!   every key it writes in `sm_undo` (first write only) before writing it. The builder walks
//!   `sm_data` and takes a key's pre-image from `sm_undo` where there is one, so the file is
//!   the state at the marked log id exactly.
//! - Sending is openraft's chunked transfer, [`SNAPSHOT_CHUNK_BYTES`] per RPC, read from the
//!   file; receiving writes the chunks to a file; installing streams that file into a cleared
//!   `sm_data`, [`INSTALL_BATCH_KEYS`] keys per batch, under a marker (`i`) so that an install
//!   cut short by a crash is redone from the file at the next start.
//!
//! After each `apply` call the events of its entries go out, as one batch, on the broadcast
//! channel given to [`super::open`]. Installing a snapshot replaces the state wholesale and sends
//! no events: a subscriber that must follow the state exactly re-reads it (via
//! [`StateMachineStore::read`]) when the applied log id jumps or when it lags the channel.
//!
//! File format: `OCSNAP01`, the control record (u64 LE length, bytes), then `(u32 LE length,
//! key, u32 LE length, value)` per key.

use std::cell::RefCell;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use openclaw_proto::codec::{decode, encode};
use openclaw_proto::TaskRecord;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::log::flush;
use super::EventBatch;
use crate::disk::{key, DiskRead, Overlay};
use crate::state::ClusterState;
use crate::types::{
    Entry, LogId, Response, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

pub(crate) const SNAPSHOT_TREE: &str = "raft_snapshot";
pub(crate) const DATA_TREE: &str = "sm_data";
pub(crate) const UNDO_TREE: &str = "sm_undo";

/// Largest snapshot chunk sent in one install-snapshot RPC (openraft's
/// `snapshot_max_chunk_size`), and the file buffer size when building one.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 512 * 1024;

/// Keys written to sled per batch while installing a snapshot.
pub const INSTALL_BATCH_KEYS: usize = 4096;

/// Largest key or value accepted from a snapshot file (a corrupt length is refused rather than
/// allocated).
const SNAPSHOT_ITEM_MAX: usize = 64 * 1024 * 1024;

const MAGIC: &[u8; 8] = b"OCSNAP01";

/// In `sm_data`: the control record, and the install-in-progress marker.
const KEY_CTRL: &[u8] = b"c";
const KEY_INSTALLING: &[u8] = b"i";

/// In `raft_snapshot`: the current snapshot's metadata and its file name.
const KEY_SNAPSHOT_META: &[u8] = b"meta";
const KEY_SNAPSHOT_FILE: &[u8] = b"file";

/// What the state machine is: the state and where in the log it stands.
#[derive(Default)]
struct Applied {
    state: ClusterState,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    /// A snapshot build is in progress: `apply` saves pre-images.
    building: bool,
}

/// The control record (and a snapshot file's head): the in-memory state and its log position.
#[derive(Serialize)]
pub(super) struct SnapshotBodyRef<'a> {
    pub(super) last_applied: &'a Option<LogId>,
    pub(super) membership: &'a StoredMembership,
    pub(super) state: &'a ClusterState,
}

#[derive(Deserialize)]
struct SnapshotBody {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    state: ClusterState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Store it unless the stored snapshot is newer (a snapshot built here).
    Newer,
    /// Store it (a snapshot installed from the leader).
    This,
}

struct Inner {
    db: sled::Db,
    snapshots: sled::Tree,
    data: sled::Tree,
    undo: sled::Tree,
    dir: PathBuf,
    applied: RwLock<Applied>,
    events: broadcast::Sender<EventBatch>,
    /// Serializes the check-then-write of the current snapshot.
    snapshot_write: Mutex<()>,
    /// One build at a time (the undo tree belongs to it).
    build: tokio::sync::Mutex<()>,
    /// The file a snapshot is being received into.
    receiving: Mutex<Option<PathBuf>>,
    /// Makes snapshot ids and file names unique within this process.
    snapshot_seq: AtomicU64,
}

/// The state machine. A cheap handle: clones share one state (openraft owns one clone, the node
/// keeps another for reads; it is also its own snapshot builder).
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<Inner>,
}

/// [`DiskRead`] over the data tree; the first read error is kept for the caller.
struct SledRead<'a> {
    tree: &'a sled::Tree,
    err: RefCell<Option<sled::Error>>,
}

impl<'a> SledRead<'a> {
    fn new(tree: &'a sled::Tree) -> SledRead<'a> {
        SledRead {
            tree,
            err: RefCell::new(None),
        }
    }

    fn keep<T>(&self, r: Result<T, sled::Error>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.err.borrow_mut().get_or_insert(e);
                None
            }
        }
    }

    fn error(&self) -> Option<sled::Error> {
        self.err.borrow_mut().take()
    }
}

impl DiskRead for SledRead<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.keep(self.tree.get(key)).flatten().map(|v| v.to_vec())
    }

    fn range(&self, from: &[u8], to: &[u8], max: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.tree
            .range(from..to)
            .take(max)
            .filter_map(|r| self.keep(r))
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect()
    }
}

fn io_err(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

impl StateMachineStore {
    /// Open on `db`, keeping snapshot files in `dir`: the state is what the data tree holds
    /// (an install cut short is redone from the stored snapshot first).
    pub(crate) fn open(
        db: &sled::Db,
        dir: &Path,
        events: broadcast::Sender<EventBatch>,
    ) -> Result<StateMachineStore, StorageError> {
        let rd =
            |e: &dyn std::error::Error| StorageIOError::read_state_machine(&io_err(&e.to_string()));
        let snapshots = db.open_tree(SNAPSHOT_TREE).map_err(|e| rd(&e))?;
        let data = db.open_tree(DATA_TREE).map_err(|e| rd(&e))?;
        let undo = db.open_tree(UNDO_TREE).map_err(|e| rd(&e))?;
        // A build cut short by a restart: its pre-images are of no use.
        undo.clear().map_err(|e| rd(&e))?;
        std::fs::create_dir_all(dir).map_err(|e| rd(&e))?;
        let current = load_snapshot(&snapshots)?;
        let unfinished = data.get(KEY_INSTALLING).map_err(|e| rd(&e))?.is_some()
            || data.get(KEY_CTRL).map_err(|e| rd(&e))?.is_none();
        if let (true, Some((meta, file))) = (unfinished, &current) {
            tracing::info!(snapshot = %meta.snapshot_id, "loading the state from the stored snapshot");
            load_file(&data, &dir.join(file), meta)?;
        }
        // Files left by an earlier run (a receive or a build cut short, a replaced snapshot).
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name();
                if current.as_ref().map(|(_, f)| f.as_str()) != name.to_str() {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let applied = match data.get(KEY_CTRL).map_err(|e| rd(&e))? {
            Some(bytes) => {
                let body: SnapshotBody = decode(&bytes).map_err(|e| rd(&e))?;
                let mut state = body.state;
                let reader = SledRead::new(&data);
                state.load_live(&reader);
                if let Some(e) = reader.error() {
                    return Err(rd(&e).into());
                }
                Applied {
                    state,
                    last_applied: body.last_applied,
                    membership: body.membership,
                    building: false,
                }
            }
            None => Applied::default(),
        };
        Ok(StateMachineStore {
            inner: Arc::new(Inner {
                db: db.clone(),
                snapshots,
                data,
                undo,
                dir: dir.to_path_buf(),
                applied: RwLock::new(applied),
                events,
                snapshot_write: Mutex::new(()),
                build: tokio::sync::Mutex::new(()),
                receiving: Mutex::new(None),
                snapshot_seq: AtomicU64::new(0),
            }),
        })
    }

    /// Read the replicated state's in-memory part (a short read lock; do not block inside `f`).
    pub fn read<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> T {
        f(&self.applied_read().state)
    }

    /// One task, live (memory) or finished (disk).
    pub fn task(&self, id: &str) -> Result<Option<TaskRecord>, StorageError> {
        let reader = SledRead::new(&self.inner.data);
        let got = self.applied_read().state.task(&reader, id);
        match reader.error() {
            Some(e) => Err(StorageIOError::read_state_machine(&e).into()),
            None => Ok(got),
        }
    }

    /// One session (from disk).
    pub fn session(
        &self,
        id: &str,
    ) -> Result<Option<openclaw_proto::session::Session>, StorageError> {
        let reader = SledRead::new(&self.inner.data);
        let got = self.applied_read().state.session(&reader, id);
        match reader.error() {
            Some(e) => Err(StorageIOError::read_state_machine(&e).into()),
            None => Ok(got),
        }
    }

    /// One agent memory file's bytes, from this replica.
    pub fn memory_file(&self, agent: &str, path: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let reader = SledRead::new(&self.inner.data);
        let got = self.applied_read().state.memory_file(&reader, agent, path);
        match reader.error() {
            Some(e) => Err(StorageIOError::read_state_machine(&e).into()),
            None => Ok(got),
        }
    }

    /// An agent's memory files `(path, bytes)` in path order (at most `max`), from this replica.
    pub fn memory_files(
        &self,
        agent: &str,
        max: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let reader = SledRead::new(&self.inner.data);
        let got = self.applied_read().state.memory_files(&reader, agent, max);
        match reader.error() {
            Some(e) => Err(StorageIOError::read_state_machine(&e).into()),
            None => Ok(got),
        }
    }

    /// The agents with memory files, from this replica.
    pub fn memory_agents(&self) -> Result<Vec<String>, StorageError> {
        let reader = SledRead::new(&self.inner.data);
        let got = self.applied_read().state.memory_agents(&reader);
        match reader.error() {
            Some(e) => Err(StorageIOError::read_state_machine(&e).into()),
            None => Ok(got),
        }
    }

    /// Up to `limit` sessions after `after`, in id order, from this replica.
    pub fn sessions_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<openclaw_proto::session::Session>, StorageError> {
        let reader = SledRead::new(&self.inner.data);
        let got = self
            .applied_read()
            .state
            .sessions_page(&reader, after, limit);
        match reader.error() {
            Some(e) => Err(StorageIOError::read_state_machine(&e).into()),
            None => Ok(got),
        }
    }

    /// Sessions kept by this replica.
    pub fn sessions_kept(&self) -> Result<u64, StorageError> {
        let reader = SledRead::new(&self.inner.data);
        let got = self.applied_read().state.sessions_kept(&reader);
        match reader.error() {
            Some(e) => Err(StorageIOError::read_state_machine(&e).into()),
            None => Ok(got),
        }
    }

    /// Up to `max` tasks, live and finished, in id order, after `after` (exclusive).
    pub fn tasks_after(
        &self,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<TaskRecord>, StorageError> {
        use std::ops::Bound;
        let rd = |e: sled::Error| -> StorageError { StorageIOError::read_state_machine(&e).into() };
        let mut out: Vec<TaskRecord> = {
            let applied = self.applied_read();
            let from = match after {
                Some(a) => Bound::Excluded(a.to_string()),
                None => Bound::Unbounded,
            };
            applied
                .state
                .tasks
                .range::<String, _>((from, Bound::Unbounded))
                .take(max)
                .map(|(_, r)| r.clone())
                .collect()
        };
        let from = match after {
            Some(a) => Bound::Excluded(key::task(a)),
            None => Bound::Included(key::TASK.to_vec()),
        };
        for item in self
            .inner
            .data
            .range::<Vec<u8>, _>((from, Bound::Excluded(key::end(key::TASK))))
            .take(max)
        {
            let (_, v) = item.map_err(rd)?;
            if let Ok(rec) = decode::<TaskRecord>(&v) {
                out.push(rec);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out.dedup_by(|a, b| a.id == b.id);
        out.truncate(max);
        Ok(out)
    }

    /// Finished tasks, newest first, for which `keep` holds: at most `limit`, looking at most at
    /// `scan_max` records.
    pub fn finished_newest(
        &self,
        limit: usize,
        scan_max: usize,
        keep: impl Fn(&TaskRecord) -> bool,
    ) -> Result<Vec<TaskRecord>, StorageError> {
        let mut out = Vec::new();
        let rd = |e: sled::Error| -> StorageError { StorageIOError::read_state_machine(&e).into() };
        for item in self
            .inner
            .data
            .range(key::FINISHED.to_vec()..key::end(key::FINISHED))
            .rev()
            .take(scan_max)
        {
            let (k, _) = item.map_err(rd)?;
            let Some((_, id)) = key::split_timed(&k) else {
                continue;
            };
            let Some(v) = self.inner.data.get(key::task(&id)).map_err(rd)? else {
                continue;
            };
            if let Ok(rec) = decode::<TaskRecord>(&v) {
                if keep(&rec) {
                    out.push(rec);
                    if out.len() >= limit {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// The id of the last entry applied to the state.
    pub fn last_applied(&self) -> Option<LogId> {
        self.applied_read().last_applied
    }

    /// The current snapshot's size in bytes, if there is one.
    pub fn snapshot_bytes(&self) -> Option<u64> {
        let (_, file) = load_snapshot(&self.inner.snapshots).ok()??;
        std::fs::metadata(self.inner.dir.join(file))
            .ok()
            .map(|m| m.len())
    }

    /// A new receiver of applied events.
    pub fn subscribe(&self) -> broadcast::Receiver<EventBatch> {
        self.inner.events.subscribe()
    }

    // A panic inside `apply` would poison the lock; the state then is whatever the last entry
    // left, and openraft stops on its own, so readers keep reading rather than panic too.
    fn applied_read(&self) -> std::sync::RwLockReadGuard<'_, Applied> {
        self.inner
            .applied
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn applied_write(&self) -> std::sync::RwLockWriteGuard<'_, Applied> {
        self.inner
            .applied
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Make the file `tmp` the current snapshot `meta`, durably. With `Keep::Newer` a snapshot
    /// older than the stored one is not stored (false): openraft builds snapshots in a spawned
    /// task, so a build can finish after a newer snapshot was installed.
    async fn save_snapshot(
        &self,
        meta: &SnapshotMeta,
        tmp: &Path,
        keep: Keep,
    ) -> Result<bool, StorageError> {
        let sig = || Some(meta.signature());
        let meta_bytes = encode(meta).map_err(|e| StorageIOError::write_snapshot(sig(), &e))?;
        let seq = self.inner.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let name: String = format!("snap-{}-{seq}.bin", meta.snapshot_id)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let old = {
            let _one_writer = self
                .inner
                .snapshot_write
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let stored = load_snapshot(&self.inner.snapshots)?;
            if keep == Keep::Newer
                && stored
                    .as_ref()
                    .is_some_and(|(m, _)| m.last_log_id > meta.last_log_id)
            {
                tracing::info!(snapshot = %meta.snapshot_id, "built snapshot is older than the stored one; not stored");
                return Ok(false);
            }
            std::fs::rename(tmp, self.inner.dir.join(&name))
                .map_err(|e| StorageIOError::write_snapshot(sig(), &e))?;
            let mut batch = sled::Batch::default();
            batch.insert(KEY_SNAPSHOT_META, meta_bytes);
            batch.insert(KEY_SNAPSHOT_FILE, name.as_bytes());
            self.inner
                .snapshots
                .apply_batch(batch)
                .map_err(|e| StorageIOError::write_snapshot(sig(), &e))?;
            stored.map(|(_, f)| f)
        };
        flush(&self.inner.db)
            .await
            .map_err(|e| StorageIOError::write_snapshot(sig(), &e))?;
        if let Some(old) = old.filter(|f| *f != name) {
            let _ = std::fs::remove_file(self.inner.dir.join(old));
        }
        Ok(true)
    }

    fn snapshot_path(&self) -> Result<Option<(SnapshotMeta, PathBuf)>, StorageError> {
        Ok(load_snapshot(&self.inner.snapshots)?.map(|(m, f)| (m, self.inner.dir.join(f))))
    }

    fn temp_path(&self, what: &str) -> PathBuf {
        let seq = self.inner.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        self.inner.dir.join(format!("{what}-{seq}.part"))
    }
}

fn load_snapshot(tree: &sled::Tree) -> Result<Option<(SnapshotMeta, String)>, StorageError> {
    let get = |key| {
        tree.get(key)
            .map_err(|e| StorageIOError::read_snapshot(None, &e))
    };
    let (Some(meta), Some(file)) = (get(KEY_SNAPSHOT_META)?, get(KEY_SNAPSHOT_FILE)?) else {
        return Ok(None);
    };
    let meta: SnapshotMeta = decode(&meta).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
    let file =
        String::from_utf8(file.to_vec()).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
    Ok(Some((meta, file)))
}

fn read_exact_len<R: Read>(r: &mut R, n: usize) -> std::io::Result<Vec<u8>> {
    if n > SNAPSHOT_ITEM_MAX {
        return Err(io_err("snapshot item larger than the bound"));
    }
    let mut buf = vec![0; n];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

/// Read a snapshot file's head: its control record, checked against `meta`.
fn read_head<R: Read>(r: &mut R, meta: &SnapshotMeta) -> std::io::Result<(Vec<u8>, SnapshotBody)> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(io_err("not a snapshot file"));
    }
    let mut len = [0u8; 8];
    r.read_exact(&mut len)?;
    let len = usize::try_from(u64::from_le_bytes(len)).map_err(|_| io_err("bad length"))?;
    let ctrl = read_exact_len(r, len)?;
    let body: SnapshotBody = decode(&ctrl).map_err(|e| io_err(&e.to_string()))?;
    if body.last_applied != meta.last_log_id {
        return Err(io_err(
            "snapshot data and metadata disagree on the last log id",
        ));
    }
    Ok((ctrl, body))
}

/// The next `(key, value)` of a snapshot file, `None` at its end.
fn read_item<R: Read>(r: &mut R) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let k = read_exact_len(r, u32::from_le_bytes(len) as usize)?;
    r.read_exact(&mut len)?;
    let v = read_exact_len(r, u32::from_le_bytes(len) as usize)?;
    Ok(Some((k, v)))
}

fn write_item<W: Write>(w: &mut W, k: &[u8], v: &[u8]) -> std::io::Result<()> {
    let kl = u32::try_from(k.len()).map_err(|_| io_err("key too long"))?;
    let vl = u32::try_from(v.len()).map_err(|_| io_err("value too long"))?;
    w.write_all(&kl.to_le_bytes())?;
    w.write_all(k)?;
    w.write_all(&vl.to_le_bytes())?;
    w.write_all(v)
}

/// Replace `data` with the snapshot file at `path`, streaming, [`INSTALL_BATCH_KEYS`] keys per
/// batch; the marker makes a restart redo it if it is cut short. Blocking.
fn load_file(data: &sled::Tree, path: &Path, meta: &SnapshotMeta) -> Result<(), StorageError> {
    let sig = || Some(meta.signature());
    let err =
        |e: &dyn std::error::Error| StorageIOError::read_snapshot(sig(), &io_err(&e.to_string()));
    let mut r = BufReader::with_capacity(
        SNAPSHOT_CHUNK_BYTES as usize,
        std::fs::File::open(path).map_err(|e| err(&e))?,
    );
    let (ctrl, _) = read_head(&mut r, meta).map_err(|e| err(&e))?;
    data.clear().map_err(|e| err(&e))?;
    data.insert(KEY_INSTALLING, &b"1"[..])
        .map_err(|e| err(&e))?;
    let mut batch = sled::Batch::default();
    let mut n = 0;
    while let Some((k, v)) = read_item(&mut r).map_err(|e| err(&e))? {
        batch.insert(k, v);
        n += 1;
        if n == INSTALL_BATCH_KEYS {
            data.apply_batch(std::mem::take(&mut batch))
                .map_err(|e| err(&e))?;
            n = 0;
        }
    }
    batch.insert(KEY_CTRL, ctrl);
    batch.remove(KEY_INSTALLING);
    data.apply_batch(batch).map_err(|e| err(&e))?;
    data.flush().map_err(|e| err(&e))?;
    Ok(())
}

/// Write the snapshot file: the control record, then every data key as it was when the build
/// was marked (a key written since has its pre-image in `undo`). Blocking.
fn write_file(
    path: &Path,
    ctrl: &[u8],
    data: &sled::Tree,
    undo: &sled::Tree,
) -> std::io::Result<u64> {
    let sled_err = |e: sled::Error| std::io::Error::other(e.to_string());
    let mut w =
        BufWriter::with_capacity(SNAPSHOT_CHUNK_BYTES as usize, std::fs::File::create(path)?);
    w.write_all(MAGIC)?;
    w.write_all(&(ctrl.len() as u64).to_le_bytes())?;
    w.write_all(ctrl)?;
    let mut keys = 0u64;
    for item in data.iter() {
        let (k, v) = item.map_err(sled_err)?;
        if &*k == KEY_CTRL || &*k == KEY_INSTALLING {
            continue;
        }
        // Checked after reading the value: a pre-image saved since is the right one.
        if undo.contains_key(&k).map_err(sled_err)? {
            continue;
        }
        write_item(&mut w, &k, &v)?;
        keys += 1;
    }
    for item in undo.iter() {
        let (k, pre) = item.map_err(sled_err)?;
        let pre: Option<Vec<u8>> = decode(&pre).map_err(|e| io_err(&e.to_string()))?;
        if let Some(v) = pre {
            write_item(&mut w, &k, &v)?;
            keys += 1;
        }
    }
    let f = w.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    Ok(keys)
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let _one_build = self.inner.build.lock().await;
        let (meta, ctrl) = self.mark_build()?;
        self.finish_build(meta, ctrl).await
    }
}

impl StateMachineStore {
    /// Start a build: the control record at the current log id; `apply` saves pre-images from
    /// now on. (Called with the build lock held.)
    fn mark_build(&self) -> Result<(SnapshotMeta, Vec<u8>), StorageError> {
        {
            let mut applied = self.applied_write();
            let body = SnapshotBodyRef {
                last_applied: &applied.last_applied,
                membership: &applied.membership,
                state: &applied.state,
            };
            let ctrl = encode(&body).map_err(|e| StorageIOError::read_state_machine(&e))?;
            let seq = self.inner.snapshot_seq.fetch_add(1, Ordering::Relaxed);
            let snapshot_id = match &applied.last_applied {
                Some(id) => format!("{}-{}-{seq}", id.leader_id, id.index),
                None => format!("--{seq}"),
            };
            let meta = SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.membership.clone(),
                snapshot_id,
            };
            applied.building = true;
            Ok((meta, ctrl))
        }
    }

    /// Write the marked build's file, end the build, store it as current if it is the newest.
    pub(super) async fn finish_build(
        &self,
        meta: SnapshotMeta,
        ctrl: Vec<u8>,
    ) -> Result<Snapshot<TypeConfig>, StorageError> {
        let tmp = self.temp_path("build");
        let written = {
            let (tmp, data, undo) = (
                tmp.clone(),
                self.inner.data.clone(),
                self.inner.undo.clone(),
            );
            tokio::task::spawn_blocking(move || write_file(&tmp, &ctrl, &data, &undo)).await
        };
        self.applied_write().building = false;
        let cleared = self.inner.undo.clear();
        let sig = || Some(meta.signature());
        let keys = match written {
            Ok(Ok(keys)) => keys,
            Ok(Err(e)) => return Err(StorageIOError::write_snapshot(sig(), &e).into()),
            Err(e) => return Err(StorageIOError::write_snapshot(sig(), &e).into()),
        };
        cleared.map_err(|e| StorageIOError::write_snapshot(sig(), &e))?;
        let bytes = std::fs::metadata(&tmp).map(|m| m.len()).unwrap_or(0);
        // The file stays readable through this handle even if it is not kept.
        let file = tokio::fs::File::open(&tmp)
            .await
            .map_err(|e| StorageIOError::read_snapshot(sig(), &e))?;
        if !self.save_snapshot(&meta, &tmp, Keep::Newer).await? {
            let _ = std::fs::remove_file(&tmp);
        }
        tracing::info!(snapshot = %meta.snapshot_id, bytes, keys, "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }

    /// Tests: mark a build, let the caller apply more, then finish it.
    #[cfg(test)]
    pub(super) async fn build_in_two_steps<F: std::future::Future<Output = ()>>(
        &self,
        meanwhile: impl FnOnce() -> F,
    ) -> Snapshot<TypeConfig> {
        let _one_build = self.inner.build.lock().await;
        let (meta, ctrl) = self.mark_build().unwrap();
        meanwhile().await;
        self.finish_build(meta, ctrl).await.unwrap()
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.applied_read();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries = entries.into_iter();
        let mut responses = Vec::with_capacity(entries.size_hint().0);
        let mut events = Vec::new();
        let werr =
            |e: &sled::Error| -> StorageError { StorageIOError::write_state_machine(e).into() };
        for entry in entries {
            // One entry per lock: readers never wait for a whole batch of entries.
            let mut applied = self.applied_write();
            let applied = &mut *applied;
            applied.last_applied = Some(entry.log_id);
            let base = SledRead::new(&self.inner.data);
            let mut disk = Overlay::new(&base);
            let response = match entry.payload {
                EntryPayload::Blank => Response::default(),
                EntryPayload::Normal(req) => {
                    let (response, mut evs) = applied.state.apply(&req, &mut disk);
                    events.append(&mut evs);
                    response
                }
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Response::default()
                }
            };
            if let Some(e) = base.error() {
                return Err(werr(&e));
            }
            let ctrl = encode(&SnapshotBodyRef {
                last_applied: &applied.last_applied,
                membership: &applied.membership,
                state: &applied.state,
            })
            .map_err(|e| StorageIOError::write_state_machine(&e))?;
            let writes = disk.writes;
            let mut batch = sled::Batch::default();
            for (k, v) in writes {
                if applied.building && !self.inner.undo.contains_key(&k).map_err(|e| werr(&e))? {
                    let pre: Option<Vec<u8>> = self
                        .inner
                        .data
                        .get(&k)
                        .map_err(|e| werr(&e))?
                        .map(|v| v.to_vec());
                    let pre = encode(&pre).map_err(|e| StorageIOError::write_state_machine(&e))?;
                    self.inner.undo.insert(&k, pre).map_err(|e| werr(&e))?;
                }
                match v {
                    Some(v) => batch.insert(k, v),
                    None => batch.remove(k),
                }
            }
            batch.insert(KEY_CTRL, ctrl);
            self.inner.data.apply_batch(batch).map_err(|e| werr(&e))?;
            responses.push(response);
        }
        if !events.is_empty() {
            // No receiver is fine: nobody is listening yet (start-up) or any more (shutdown).
            let _ = self.inner.events.send(Arc::new(events));
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> StateMachineStore {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let path = self.temp_path("recv");
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let old = self
            .inner
            .receiving
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(path);
        if let Some(old) = old {
            let _ = std::fs::remove_file(old);
        }
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        // Not while a build walks the data tree.
        let _no_build = self.inner.build.lock().await;
        let sig = || Some(meta.signature());
        let werr = |e: &dyn std::error::Error| {
            StorageIOError::write_snapshot(sig(), &io_err(&e.to_string()))
        };
        let mut file = snapshot.into_std().await;
        file.sync_all().map_err(|e| werr(&e))?;
        let received = self
            .inner
            .receiving
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // Normally the handle is the file `begin_receiving_snapshot` made; any other (openraft's
        // test suite hands over another store's snapshot) is copied into one, streaming.
        let same = |p: &PathBuf| {
            use std::os::unix::fs::MetadataExt;
            match (file.metadata(), std::fs::metadata(p)) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            }
        };
        let path = match received {
            Some(p) if same(&p) => p,
            other => {
                if let Some(p) = other {
                    let _ = std::fs::remove_file(p);
                }
                let p = self.temp_path("install");
                let copied = (|| {
                    use std::io::Seek;
                    file.seek(std::io::SeekFrom::Start(0))?;
                    let mut out = std::fs::File::create(&p)?;
                    std::io::copy(&mut file, &mut out)?;
                    out.sync_all()
                })();
                if let Err(e) = copied {
                    let _ = std::fs::remove_file(&p);
                    return Err(werr(&e).into());
                }
                p
            }
        };
        drop(file);
        // Refuse a corrupt snapshot before touching anything.
        let head = std::fs::File::open(&path)
            .map_err(|e| werr(&e))
            .and_then(|f| read_head(&mut BufReader::new(f), meta).map_err(|e| werr(&e)));
        if let Err(e) = head {
            let _ = std::fs::remove_file(&path);
            return Err(e.into());
        }
        self.save_snapshot(meta, &path, Keep::This).await?;
        let (_, current) = self
            .snapshot_path()?
            .ok_or_else(|| werr(&io_err("the installed snapshot is not stored")))?;
        let (data, m) = (self.inner.data.clone(), meta.clone());
        tokio::task::spawn_blocking(move || load_file(&data, &current, &m))
            .await
            .map_err(|e| werr(&e))??;
        let reader = SledRead::new(&self.inner.data);
        let ctrl = self
            .inner
            .data
            .get(KEY_CTRL)
            .map_err(|e| werr(&e))?
            .ok_or_else(|| werr(&io_err("installed snapshot has no control record")))?;
        let body: SnapshotBody = decode(&ctrl).map_err(|e| werr(&e))?;
        let mut state = body.state;
        state.load_live(&reader);
        if let Some(e) = reader.error() {
            return Err(werr(&e).into());
        }
        *self.applied_write() = Applied {
            state,
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            building: false,
        };
        tracing::info!(snapshot = %meta.snapshot_id, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let Some((meta, path)) = self.snapshot_path()? else {
            return Ok(None);
        };
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(file),
        }))
    }
}

//! Agent memory in cluster mode: [`RaftMemory`] implements the [`MemoryStore`] seam over the
//! replicated state (`PutMemory` / `DeleteMemory`, committed through Raft before the API
//! answers), and [`spawn_materialiser`] keeps this node's workspaces equal to the replicated
//! files: on every `MemoryChanged` event it writes or removes that file and the agent re-reads
//! its workspace; at start-up, when events were missed, and every [`RECONCILE_EVERY`] (a node
//! that installed a snapshot gets no per-file events) it reconciles every agent. A manifest in
//! each workspace ([`MANIFEST`]) lists the files it materialised, so one removed while this node
//! was down is removed at its reconcile; hand-written local files are never touched.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openclaw_cluster::{Command, Event, Rejection, Reply};
use openclaw_proto::memory::MEMORY_AGENT_FILES_MAX;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::Cluster;
use crate::agents::memory::{check, materialise, MemoryEntry, MemoryError, MemoryStore, MANIFEST};
use crate::agents::Agents;

/// How often every workspace is compared with the replicated files.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(30);

pub struct RaftMemory {
    cluster: Arc<Cluster>,
    dirs: BTreeMap<String, PathBuf>,
}

impl RaftMemory {
    pub fn new(cluster: Arc<Cluster>, dirs: BTreeMap<String, PathBuf>) -> RaftMemory {
        RaftMemory { cluster, dirs }
    }

    async fn propose(&self, cmd: Command) -> Result<Reply, MemoryError> {
        match self.cluster.proposer.propose(cmd).await {
            Ok(Reply::Rejected(Rejection::MemoryRefused(m))) => Err(MemoryError::BadPath(m)),
            Ok(Reply::Rejected(Rejection::MemoryFull(m))) => Err(MemoryError::TooLarge(m)),
            Ok(r) => Ok(r),
            Err(e) => Err(MemoryError::Unavailable(e.to_string())),
        }
    }
}

fn replica_err(e: impl std::fmt::Display) -> MemoryError {
    MemoryError::Unavailable(format!("reading the replica: {e}"))
}

#[async_trait::async_trait]
impl MemoryStore for RaftMemory {
    async fn put(&self, agent: &str, path: &str, content: String) -> Result<(), MemoryError> {
        check(&self.dirs, agent, path, Some(&content))?;
        let cmd = Command::PutMemory {
            agent: agent.to_string(),
            path: path.to_string(),
            content,
        };
        match self.propose(cmd).await? {
            Reply::Ok => Ok(()),
            other => Err(MemoryError::Unavailable(format!(
                "unexpected reply {other:?}"
            ))),
        }
    }

    async fn delete(&self, agent: &str, path: &str) -> Result<bool, MemoryError> {
        check(&self.dirs, agent, path, None)?;
        let cmd = Command::DeleteMemory {
            agent: agent.to_string(),
            path: path.to_string(),
        };
        match self.propose(cmd).await? {
            Reply::Purged(n) => Ok(n > 0),
            other => Err(MemoryError::Unavailable(format!(
                "unexpected reply {other:?}"
            ))),
        }
    }

    async fn get(&self, agent: &str, path: &str) -> Result<Option<String>, MemoryError> {
        check(&self.dirs, agent, path, None)?;
        let got = self
            .cluster
            .sm
            .memory_file(agent, path)
            .map_err(replica_err)?;
        Ok(got.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    async fn list(&self, agent: &str) -> Result<Vec<MemoryEntry>, MemoryError> {
        if !self.dirs.contains_key(agent) {
            return Err(MemoryError::UnknownAgent(agent.to_string()));
        }
        let files = self
            .cluster
            .sm
            .memory_files(agent, MEMORY_AGENT_FILES_MAX as usize)
            .map_err(replica_err)?;
        Ok(files
            .into_iter()
            .map(|(path, b)| MemoryEntry {
                path,
                bytes: b.len() as u64,
            })
            .collect())
    }
}

/// Keep this node's workspaces equal to the replicated memory files (see the module doc).
pub fn spawn_materialiser(
    c: Arc<Cluster>,
    dirs: BTreeMap<String, PathBuf>,
    agents: Agents,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        let mut rx = c.sm.subscribe();
        reconcile(&c, &dirs, &agents);
        let mut tick = tokio::time::interval(RECONCILE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => reconcile(&c, &dirs, &agents),
                batch = rx.recv() => match batch {
                    Ok(batch) => {
                        for ev in batch.iter() {
                            if let Event::MemoryChanged { agent, path } = ev {
                                one(&c, &dirs, &agents, agent, path);
                            }
                        }
                    }
                    Err(RecvError::Lagged(_)) => reconcile(&c, &dirs, &agents),
                    Err(RecvError::Closed) => return,
                },
            }
        }
    });
}

/// Write or remove one changed file, as the replica has it now.
fn one(c: &Cluster, dirs: &BTreeMap<String, PathBuf>, agents: &Agents, agent: &str, path: &str) {
    let Some(dir) = dirs.get(agent) else {
        return; // an agent this node does not run
    };
    let content = match c.sm.memory_file(agent, path) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(agent, error = %e, "cannot read a memory file from the replica");
            return;
        }
    };
    let mut manifest = read_manifest(dir);
    match materialise(dir, path, content.as_deref()) {
        Ok(changed) => {
            let listed = if content.is_some() {
                manifest.insert(path.to_string())
            } else {
                manifest.remove(path)
            };
            if listed {
                write_manifest(dir, &manifest);
            }
            if changed {
                tracing::debug!(agent, path, "memory file materialised");
                agents.reload(agent);
            }
        }
        Err(e) => tracing::warn!(agent, path, error = %e, "cannot write a memory file"),
    }
}

/// Every agent: write what differs, remove what this node materialised and the cluster no
/// longer holds.
fn reconcile(c: &Cluster, dirs: &BTreeMap<String, PathBuf>, agents: &Agents) {
    for (agent, dir) in dirs {
        let files = match c.sm.memory_files(agent, MEMORY_AGENT_FILES_MAX as usize) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(agent, error = %e, "cannot read memory files from the replica");
                continue;
            }
        };
        let before = read_manifest(dir);
        let mut now = BTreeSet::new();
        let mut changed = false;
        for (path, bytes) in &files {
            match materialise(dir, path, Some(bytes)) {
                Ok(c) => changed |= c,
                Err(e) => tracing::warn!(agent, path, error = %e, "cannot write a memory file"),
            }
            now.insert(path.clone());
        }
        for gone in before.difference(&now) {
            changed |= materialise(dir, gone, None).unwrap_or(false);
        }
        if before != now {
            write_manifest(dir, &now);
        }
        if changed {
            tracing::info!(
                agent,
                files = files.len(),
                "memory files reconciled with the cluster"
            );
            agents.reload(agent);
        }
    }
}

fn read_manifest(dir: &std::path::Path) -> BTreeSet<String> {
    std::fs::read(dir.join(MANIFEST))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_manifest(dir: &std::path::Path, paths: &BTreeSet<String>) {
    let body = serde_json::to_vec(paths).unwrap_or_default();
    let write = std::fs::create_dir_all(dir).and_then(|_| std::fs::write(dir.join(MANIFEST), body));
    if let Err(e) = write {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot write the memory manifest");
    }
}

//! Agent memory written through the API (`PUT/GET/DELETE /api/agents/{agent}/memory/{path}`,
//! `openclaw-node memory push`): the [`MemoryStore`] seam, [`LocalMemory`] for a single node
//! (the workspace folder is the store), and [`materialise`] — how a replicated file lands in a
//! node's workspace (the cluster's store, `cluster/memory.rs`, calls it on every change).
//!
//! Paths and bounds are `openclaw_proto::memory`'s, the same the replicated state checks: a
//! path outside `MEMORY.md`, `memory/<name>.md`, `skills/…` is refused (422), a file or an agent
//! past its bound too (413). After a change the agent re-reads its workspace, so the next
//! prompt carries it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use openclaw_proto::memory::{
    check_agent, check_path, MEMORY_AGENT_FILES_MAX, MEMORY_AGENT_MAX_BYTES, MEMORY_FILE_MAX_BYTES,
};

use super::Agents;

/// The file in each workspace listing the memory files this node materialised from the
/// cluster (so a file removed while the node was down is removed at its next reconcile).
pub const MANIFEST: &str = ".openclaw-memory.json";

/// Why a memory request failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MemoryError {
    /// No such agent on this node (404).
    #[error("agent `{0}` is not configured")]
    UnknownAgent(String),
    /// Not a memory path, or not UTF-8 (422).
    #[error("{0}")]
    BadPath(String),
    /// A bound: file size, the agent's bytes or files (413).
    #[error("{0}")]
    TooLarge(String),
    /// The cluster cannot commit now (503).
    #[error("memory unavailable: {0}")]
    Unavailable(String),
}

/// One file of an agent's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryEntry {
    pub path: String,
    pub bytes: u64,
}

#[async_trait::async_trait]
pub trait MemoryStore: Send + Sync {
    async fn put(&self, agent: &str, path: &str, content: String) -> Result<(), MemoryError>;
    /// `true` when the file existed.
    async fn delete(&self, agent: &str, path: &str) -> Result<bool, MemoryError>;
    async fn get(&self, agent: &str, path: &str) -> Result<Option<String>, MemoryError>;
    async fn list(&self, agent: &str) -> Result<Vec<MemoryEntry>, MemoryError>;
}

/// Check a request's agent and path, and the file's own size (pure).
pub fn check(
    agents: &BTreeMap<String, PathBuf>,
    agent: &str,
    path: &str,
    content: Option<&str>,
) -> Result<(), MemoryError> {
    check_agent(agent).map_err(|_| MemoryError::UnknownAgent(agent.to_string()))?;
    if !agents.contains_key(agent) {
        return Err(MemoryError::UnknownAgent(agent.to_string()));
    }
    check_path(path).map_err(MemoryError::BadPath)?;
    if let Some(c) = content {
        if c.len() > MEMORY_FILE_MAX_BYTES {
            return Err(MemoryError::TooLarge(format!(
                "{path} has {} bytes; a memory file may have {MEMORY_FILE_MAX_BYTES}",
                c.len()
            )));
        }
    }
    Ok(())
}

/// Write (`Some`) or remove (`None`) `path` under `dir`: written to a temporary file and
/// renamed, so a prompt never reads half a file. `true` when the disk changed.
pub fn materialise(dir: &Path, path: &str, content: Option<&[u8]>) -> std::io::Result<bool> {
    check_path(path).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let file = dir.join(path);
    match content {
        Some(bytes) => {
            if std::fs::read(&file).ok().as_deref() == Some(bytes) {
                return Ok(false);
            }
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let tmp = file.with_extension("md.tmp");
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, &file)?;
            Ok(true)
        }
        None => match std::fs::remove_file(&file) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        },
    }
}

/// The memory files (by the memory paths) in a workspace, with their sizes, in path order.
pub fn scan(dir: &Path) -> Vec<MemoryEntry> {
    let mut out = Vec::new();
    let mut push = |path: String| {
        if check_path(&path).is_ok() {
            if let Ok(m) = std::fs::metadata(dir.join(&path)) {
                if m.is_file() {
                    out.push(MemoryEntry {
                        path,
                        bytes: m.len(),
                    });
                }
            }
        }
    };
    push("MEMORY.md".into());
    for sub in ["memory", "skills"] {
        let Ok(rd) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        let mut names: Vec<(String, bool)> = rd
            .flatten()
            .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path().is_dir())))
            .collect();
        names.sort();
        for (name, is_dir) in names {
            if is_dir && sub == "skills" {
                push(format!("skills/{name}/SKILL.md"));
            } else if !is_dir {
                push(format!("{sub}/{name}"));
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// A single node's memory: the workspace folders themselves.
pub struct LocalMemory {
    /// Agent name → workspace folder.
    dirs: BTreeMap<String, PathBuf>,
    agents: Agents,
    /// One writer at a time, so the per-agent bounds hold.
    write: tokio::sync::Mutex<()>,
}

impl LocalMemory {
    pub fn new(dirs: BTreeMap<String, PathBuf>, agents: Agents) -> LocalMemory {
        LocalMemory {
            dirs,
            agents,
            write: tokio::sync::Mutex::new(()),
        }
    }
}

#[async_trait::async_trait]
impl MemoryStore for LocalMemory {
    async fn put(&self, agent: &str, path: &str, content: String) -> Result<(), MemoryError> {
        check(&self.dirs, agent, path, Some(&content))?;
        let dir = &self.dirs[agent];
        let _one = self.write.lock().await;
        let files = scan(dir);
        let old = files.iter().find(|f| f.path == path).map(|f| f.bytes);
        let bytes: u64 =
            files.iter().map(|f| f.bytes).sum::<u64>() - old.unwrap_or(0) + content.len() as u64;
        let count = files.len() as u64 + u64::from(old.is_none());
        if bytes > MEMORY_AGENT_MAX_BYTES {
            return Err(MemoryError::TooLarge(format!(
                "agent {agent}'s memory would hold {bytes} bytes; at most {MEMORY_AGENT_MAX_BYTES}"
            )));
        }
        if count > MEMORY_AGENT_FILES_MAX {
            return Err(MemoryError::TooLarge(format!(
                "agent {agent} already has {MEMORY_AGENT_FILES_MAX} memory files"
            )));
        }
        materialise(dir, path, Some(content.as_bytes()))
            .map_err(|e| MemoryError::Unavailable(format!("writing {path}: {e}")))?;
        self.agents.reload(agent);
        Ok(())
    }

    async fn delete(&self, agent: &str, path: &str) -> Result<bool, MemoryError> {
        check(&self.dirs, agent, path, None)?;
        let _one = self.write.lock().await;
        let gone = materialise(&self.dirs[agent], path, None)
            .map_err(|e| MemoryError::Unavailable(format!("removing {path}: {e}")))?;
        if gone {
            self.agents.reload(agent);
        }
        Ok(gone)
    }

    async fn get(&self, agent: &str, path: &str) -> Result<Option<String>, MemoryError> {
        check(&self.dirs, agent, path, None)?;
        match std::fs::read(self.dirs[agent].join(path)) {
            Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(MemoryError::Unavailable(format!("reading {path}: {e}"))),
        }
    }

    async fn list(&self, agent: &str) -> Result<Vec<MemoryEntry>, MemoryError> {
        match self.dirs.get(agent) {
            Some(dir) => Ok(scan(dir)),
            None => Err(MemoryError::UnknownAgent(agent.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_table() {
        let dirs: BTreeMap<String, PathBuf> = [("main".to_string(), PathBuf::from("/w"))].into();
        let big = "x".repeat(MEMORY_FILE_MAX_BYTES + 1);
        let cases: [(&str, &str, Option<&str>, Option<&str>); 6] = [
            ("main", "MEMORY.md", Some("x"), None),
            ("main", "memory/a.md", None, None),
            ("ops", "MEMORY.md", Some("x"), Some("unknown")),
            ("main", "SOUL.md", Some("x"), Some("path")),
            ("main", "memory/../x.md", None, Some("path")),
            ("main", "memory/big.md", Some(&big), Some("large")),
        ];
        for (agent, path, content, want) in cases {
            let got = check(&dirs, agent, path, content);
            let kind = match &got {
                Ok(()) => None,
                Err(MemoryError::UnknownAgent(_)) => Some("unknown"),
                Err(MemoryError::BadPath(_)) => Some("path"),
                Err(MemoryError::TooLarge(_)) => Some("large"),
                Err(MemoryError::Unavailable(_)) => Some("unavailable"),
            };
            assert_eq!(kind, want, "{agent} {path}: {got:?}");
        }
    }

    #[test]
    fn materialise_writes_replaces_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(materialise(d, "memory/a.md", Some(b"one")).unwrap());
        assert!(
            !materialise(d, "memory/a.md", Some(b"one")).unwrap(),
            "unchanged"
        );
        assert!(materialise(d, "memory/a.md", Some(b"two")).unwrap());
        assert_eq!(std::fs::read(d.join("memory/a.md")).unwrap(), b"two");
        assert!(materialise(d, "skills/x/SKILL.md", Some(b"tool")).unwrap());
        assert!(materialise(d, "../escape.md", Some(b"x")).is_err());
        let listed: Vec<String> = scan(d).into_iter().map(|e| e.path).collect();
        assert_eq!(listed, ["memory/a.md", "skills/x/SKILL.md"]);
        assert!(materialise(d, "memory/a.md", None).unwrap());
        assert!(!materialise(d, "memory/a.md", None).unwrap());
    }
}

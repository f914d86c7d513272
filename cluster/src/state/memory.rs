//! Agent memory files in the replicated state (issue 11 item 3: memory without NFS): every node
//! holds the same files and materialises them into its agents' workspaces.
//!
//! On disk only (through [`Disk`], so snapshots carry them): `m/<agent>\0<path>` the file's
//! bytes, `M/<agent>` the agent's usage (bytes, files). Nothing is kept in memory.
//!
//! Rules (deterministic in `apply`): the path must be a memory path
//! ([`openclaw_proto::memory::check_path`]); a file is at most
//! [`MEMORY_FILE_MAX_BYTES`], an agent at most [`MEMORY_AGENT_MAX_BYTES`] and
//! [`MEMORY_AGENT_FILES_MAX`] files — a write past a bound is refused and changes nothing. Each
//! change tells the local node (`Event::MemoryChanged`) so it rewrites that workspace file.

use openclaw_proto::memory::{
    check_agent, check_path, MEMORY_AGENT_FILES_MAX, MEMORY_AGENT_MAX_BYTES, MEMORY_FILE_MAX_BYTES,
};

use super::{dec, enc, ClusterState};
use crate::disk::{key, Disk, DiskRead};
use crate::types::{Event, Rejection, Reply};

/// Disk keys of the memory files.
pub mod mkey {
    use crate::disk::key::join;

    pub const FILE: &[u8] = b"m/";
    pub const USAGE: &[u8] = b"M/";

    pub fn file(agent: &str, path: &str) -> Vec<u8> {
        join(FILE, &[agent.as_bytes(), b"\0", path.as_bytes()])
    }
    pub fn agent_files(agent: &str) -> Vec<u8> {
        join(FILE, &[agent.as_bytes(), b"\0"])
    }
    pub fn usage(agent: &str) -> Vec<u8> {
        join(USAGE, &[agent.as_bytes()])
    }
}

/// What an agent's memory files take: `(bytes, files)`.
pub type MemoryUsage = (u64, u64);

impl ClusterState {
    /// One memory file's bytes, read from `disk`.
    pub fn memory_file<D: DiskRead + ?Sized>(
        &self,
        disk: &D,
        agent: &str,
        path: &str,
    ) -> Option<Vec<u8>> {
        disk.get(&mkey::file(agent, path))
    }

    /// An agent's memory files `(path, bytes)` in path order, at most `max`.
    pub fn memory_files<D: DiskRead + ?Sized>(
        &self,
        disk: &D,
        agent: &str,
        max: usize,
    ) -> Vec<(String, Vec<u8>)> {
        let from = mkey::agent_files(agent);
        let to = key::end(&from);
        disk.range(&from, &to, max)
            .into_iter()
            .filter_map(|(k, v)| {
                let path = std::str::from_utf8(&k[from.len()..]).ok()?;
                Some((path.to_string(), v))
            })
            .collect()
    }

    /// The agents that have memory files, in name order.
    pub fn memory_agents<D: DiskRead + ?Sized>(&self, disk: &D) -> Vec<String> {
        disk.range(mkey::USAGE, &key::end(mkey::USAGE), usize::MAX)
            .into_iter()
            .filter_map(|(k, _)| {
                std::str::from_utf8(&k[mkey::USAGE.len()..])
                    .ok()
                    .map(str::to_string)
            })
            .collect()
    }

    /// An agent's usage `(bytes, files)`.
    pub fn memory_usage<D: DiskRead + ?Sized>(&self, disk: &D, agent: &str) -> MemoryUsage {
        disk.get(&mkey::usage(agent))
            .and_then(|v| dec(&v))
            .unwrap_or((0, 0))
    }

    pub(super) fn put_memory(
        &mut self,
        disk: &mut dyn Disk,
        ev: &mut Vec<crate::types::Event>,
        agent: &str,
        path: &str,
        content: &str,
    ) -> Reply {
        if let Err(e) = check_agent(agent).and_then(|_| check_path(path)) {
            return Reply::Rejected(Rejection::MemoryRefused(e));
        }
        if content.len() > MEMORY_FILE_MAX_BYTES {
            return Reply::Rejected(Rejection::MemoryFull(format!(
                "{path} has {} bytes; a memory file may have {MEMORY_FILE_MAX_BYTES}",
                content.len()
            )));
        }
        let k = mkey::file(agent, path);
        let old = disk.get(&k).map(|v| v.len() as u64);
        let (bytes, files) = self.memory_usage(&*disk, agent);
        let bytes = bytes - old.unwrap_or(0).min(bytes) + content.len() as u64;
        let files = files + u64::from(old.is_none());
        if bytes > MEMORY_AGENT_MAX_BYTES {
            return Reply::Rejected(Rejection::MemoryFull(format!(
                "agent {agent}'s memory would hold {bytes} bytes; at most {MEMORY_AGENT_MAX_BYTES}"
            )));
        }
        if files > MEMORY_AGENT_FILES_MAX {
            return Reply::Rejected(Rejection::MemoryFull(format!(
                "agent {agent} already has {MEMORY_AGENT_FILES_MAX} memory files"
            )));
        }
        disk.put(k, content.as_bytes().to_vec());
        disk.put(mkey::usage(agent), enc(&(bytes, files)));
        ev.push(Event::MemoryChanged {
            agent: agent.to_string(),
            path: path.to_string(),
        });
        Reply::Ok
    }

    pub(super) fn delete_memory(
        &mut self,
        disk: &mut dyn Disk,
        ev: &mut Vec<crate::types::Event>,
        agent: &str,
        path: &str,
    ) -> Reply {
        let k = mkey::file(agent, path);
        let Some(old) = disk.get(&k) else {
            return Reply::Purged(0);
        };
        disk.del(&k);
        let (bytes, files) = self.memory_usage(&*disk, agent);
        let left = (
            bytes.saturating_sub(old.len() as u64),
            files.saturating_sub(1),
        );
        if left.1 == 0 {
            disk.del(&mkey::usage(agent));
        } else {
            disk.put(mkey::usage(agent), enc(&left));
        }
        ev.push(Event::MemoryChanged {
            agent: agent.to_string(),
            path: path.to_string(),
        });
        Reply::Purged(1)
    }
}

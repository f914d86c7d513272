//! Agent memory files written through the API (`PUT /api/agents/{agent}/memory/{path}`) and, in
//! a cluster, replicated through Raft: which paths are memory, and the bounds. Pure; shared by
//! the API (422/413 before proposing) and the state machine (the same rule in `apply`).

/// Largest memory file, in bytes (a larger body is refused with 413).
pub const MEMORY_FILE_MAX_BYTES: usize = 256 * 1024;
/// Most bytes of memory files one agent may hold (past it a write is refused with 413).
pub const MEMORY_AGENT_MAX_BYTES: u64 = 8 * 1024 * 1024;
/// Most memory files one agent may hold (the prompt reads at most 1,000 `memory/*.md`).
pub const MEMORY_AGENT_FILES_MAX: u64 = 1000;
/// Longest path, in bytes.
pub const MEMORY_PATH_MAX: usize = 200;

/// Whether `path` names a workspace file the agent reads as memory or as a skill:
/// `MEMORY.md`, `memory/<name>.md`, `skills/<name>.md` or `skills/<name>/SKILL.md`, where a
/// name is letters, digits, `.`, `_`, `-` (not starting with `.`). The error says what is wrong.
pub fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > MEMORY_PATH_MAX {
        return Err(format!("a path of 1 to {MEMORY_PATH_MAX} bytes"));
    }
    let parts: Vec<&str> = path.split('/').collect();
    let name_ok = |n: &str| {
        !n.is_empty()
            && !n.starts_with('.')
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    let md = |n: &str| name_ok(n) && n.len() > 3 && n.ends_with(".md");
    let ok = match parts.as_slice() {
        ["MEMORY.md"] => true,
        ["memory", f] => md(f),
        ["skills", f] => md(f),
        ["skills", d, "SKILL.md"] => name_ok(d),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{path}` is not a memory path: use MEMORY.md, memory/<name>.md, skills/<name>.md \
             or skills/<name>/SKILL.md (names of letters, digits, `.`, `_`, `-`)"
        ))
    }
}

/// Whether an agent's name can be part of a memory key and a workspace folder name.
pub fn check_agent(agent: &str) -> Result<(), String> {
    if !agent.is_empty()
        && agent.len() <= 64
        && agent
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
    {
        Ok(())
    } else {
        Err(format!("`{agent}` is not an agent name"))
    }
}

/// Answer of `GET /api/agents/{agent}/memory-index` (`openclaw-node memory status`): the
/// knowledge cache's index of one agent's memory on the node that answered.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MemoryIndexView {
    pub agent: String,
    /// `cache.knowledge_cache.enabled` on that node.
    pub enabled: bool,
    pub embedding_model: String,
    /// Files and chunks indexed, and their bytes (texts and vectors).
    pub files: u64,
    pub chunks: u64,
    pub bytes: u64,
    /// Files whose embedding failed (searched by BM25 alone until a retry succeeds).
    pub bm25_only_files: u64,
    /// Files left out of the index (a bound), with the reason.
    pub skipped: Vec<MemoryIndexSkip>,
    /// The last build (RFC 3339), how long it took and how many files it embedded.
    pub last_build_at: Option<String>,
    pub last_build_ms: Option<u64>,
    pub last_build_embedded: u64,
}

/// A memory file the index left out.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MemoryIndexSkip {
    pub file: String,
    pub reason: String,
}

/// Answer of `GET /api/agents/{agent}/memory-search?q=…&k=…` (`openclaw-node memory search`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MemorySearchView {
    pub agent: String,
    pub query: String,
    /// True when the query could not be embedded (provider down): BM25 alone ranked.
    pub bm25_only: bool,
    pub hits: Vec<MemorySearchHit>,
}

/// One chunk a search found, best first.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MemorySearchHit {
    pub file: String,
    pub heading: String,
    pub score: f32,
    pub tokens: u32,
    pub text: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_table() {
        let cases = [
            ("MEMORY.md", true),
            ("memory/2026-01-01.md", true),
            ("memory/team_notes-v2.md", true),
            ("skills/deploy.md", true),
            ("skills/deploy/SKILL.md", true),
            ("SOUL.md", false),
            ("memory/notes.txt", false),
            ("memory/.md", false),
            ("memory/.hidden.md", false),
            ("memory/a/b.md", false),
            ("memory/../MEMORY.md", false),
            ("../MEMORY.md", false),
            ("/MEMORY.md", false),
            ("memory/a b.md", false),
            ("memory/\u{e9}.md", false),
            ("skills/x/README.md", false),
            ("", false),
        ];
        for (p, ok) in cases {
            assert_eq!(check_path(p).is_ok(), ok, "{p:?}");
        }
        assert!(check_path(&format!("memory/{}.md", "a".repeat(300))).is_err());
        assert!(check_agent("main").is_ok() && check_agent("ops-bot_2").is_ok());
        assert!(check_agent("../x").is_err() && check_agent("").is_err());
    }
}

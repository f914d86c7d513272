//! One agent's memory index: the files it holds (chunks with their vectors, keyed by the file's
//! content hash and the embedding model), persisted in the node's sled tree `knowledge`
//! (key `<agent>\0<file>`, value a codec envelope of [`StoredFile`]), and the in-memory BM25
//! over every chunk. Also which workspace files are memory ([`files_of`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::score::Bm25;
use crate::agents::prompt::{list_dir, MAX_MEMORY_FILES, MAX_SKILLS};

/// The sled tree the index persists in.
pub const TREE: &str = "knowledge";
/// How deep `memory/**/*.md` is followed.
pub const MEMORY_DEPTH_MAX: usize = 8;

/// One indexed chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredChunk {
    pub heading: String,
    pub text: String,
    pub tokens: u32,
    /// Empty when the file's embedding failed.
    pub vector: Vec<f32>,
}

/// One indexed file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredFile {
    pub hash: String,
    pub model: String,
    pub failed_at_ms: Option<u64>,
    pub chunks: Vec<StoredChunk>,
}

impl StoredFile {
    /// Bytes counted against [`super::plan::INDEX_BYTES_PER_AGENT_MAX`].
    pub fn bytes(&self) -> u64 {
        self.chunks
            .iter()
            .map(|c| (c.heading.len() + c.text.len() + 4 * c.vector.len()) as u64)
            .sum()
    }
}

/// An agent's index in memory.
#[derive(Debug, Clone, Default)]
pub struct AgentIndex {
    pub files: BTreeMap<String, StoredFile>,
    /// Files left out (a bound): name → (content hash, reason).
    pub skipped: BTreeMap<String, (String, String)>,
    /// BM25 over every chunk, in `refs` order.
    pub bm25: Bm25,
    /// (file, chunk index) of each BM25 document.
    pub refs: Vec<(String, usize)>,
    pub built_at_ms: Option<u64>,
    pub build_ms: Option<u64>,
    pub last_embedded: u64,
}

impl AgentIndex {
    /// Rebuild the BM25 and the chunk list after the files changed.
    pub fn relex(&mut self) {
        let mut refs = Vec::new();
        let mut texts = Vec::new();
        for (name, f) in &self.files {
            for (i, c) in f.chunks.iter().enumerate() {
                refs.push((name.clone(), i));
                texts.push(indexed_text(&c.heading, &c.text));
            }
        }
        self.bm25 = Bm25::new(&texts);
        self.refs = refs;
    }

    pub fn chunks(&self) -> usize {
        self.refs.len()
    }

    pub fn bytes(&self) -> u64 {
        self.files.values().map(StoredFile::bytes).sum()
    }

    pub fn chunk(&self, r: &(String, usize)) -> Option<&StoredChunk> {
        self.files.get(&r.0).and_then(|f| f.chunks.get(r.1))
    }
}

/// What is embedded and matched for a chunk: its heading path, then its text.
pub fn indexed_text(heading: &str, text: &str) -> String {
    if heading.is_empty() {
        text.to_string()
    } else {
        format!("{heading}\n{text}")
    }
}

/// The content hash a file is indexed under (SHA-256, hex).
pub fn hash(content: &str) -> String {
    let d = Sha256::digest(content.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether an indexed file is a skill (not put in the `# Memory` section: skills go whole in
/// `# Tools`).
pub fn is_skill(name: &str) -> bool {
    name.starts_with("skills/")
}

/// The memory files of a workspace: `MEMORY.md`, `memory/**/*.md` (at most
/// [`MAX_MEMORY_FILES`], [`MEMORY_DEPTH_MAX`] deep) and the skills (`skills/<name>.md`,
/// `skills/<name>/SKILL.md`, at most [`MAX_SKILLS`]), as (name, path), names as the memory API
/// writes them.
pub fn files_of(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let m = dir.join("MEMORY.md");
    if m.is_file() {
        out.push(("MEMORY.md".to_string(), m));
    }
    let mut memory = Vec::new();
    walk(&dir.join("memory"), "memory", 0, &mut memory)?;
    memory.sort();
    out.extend(memory.into_iter().take(MAX_MEMORY_FILES));
    let mut skills = Vec::new();
    for (name, path) in list_dir(&dir.join("skills"))? {
        if path.is_dir() {
            let s = path.join("SKILL.md");
            if s.is_file() {
                skills.push((format!("skills/{name}/SKILL.md"), s));
            }
        } else if name.ends_with(".md") && path.is_file() {
            skills.push((format!("skills/{name}"), path));
        }
    }
    skills.sort();
    out.extend(skills.into_iter().take(MAX_SKILLS));
    Ok(out)
}

fn walk(
    dir: &Path,
    prefix: &str,
    depth: usize,
    out: &mut Vec<(String, PathBuf)>,
) -> std::io::Result<()> {
    if depth > MEMORY_DEPTH_MAX {
        return Ok(());
    }
    for (name, path) in list_dir(dir)? {
        if name.starts_with('.') {
            continue;
        }
        let rel = format!("{prefix}/{name}");
        if path.is_dir() {
            walk(&path, &rel, depth + 1, out)?;
        } else if name.ends_with(".md") && path.is_file() {
            out.push((rel, path));
        }
    }
    Ok(())
}

fn key(agent: &str, file: &str) -> Vec<u8> {
    let mut k = agent.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(file.as_bytes());
    k
}

/// The files stored for `agent` (entries that cannot be decoded are skipped: re-embedded).
pub fn load(tree: &sled::Tree, agent: &str) -> BTreeMap<String, StoredFile> {
    let mut prefix = agent.as_bytes().to_vec();
    prefix.push(0);
    let mut out = BTreeMap::new();
    for (k, v) in tree.scan_prefix(&prefix).flatten() {
        let Ok(name) = std::str::from_utf8(&k[prefix.len()..]) else {
            continue;
        };
        if let Ok(f) = openclaw_proto::codec::decode::<StoredFile>(&v) {
            out.insert(name.to_string(), f);
        }
    }
    out
}

pub fn put(tree: &sled::Tree, agent: &str, file: &str, f: &StoredFile) -> anyhow::Result<()> {
    tree.insert(key(agent, file), openclaw_proto::codec::encode(f)?)?;
    Ok(())
}

pub fn remove(tree: &sled::Tree, agent: &str, file: &str) -> anyhow::Result<()> {
    tree.remove(key(agent, file))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn write(dir: &Path, rel: &str, body: &str) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }

    #[test]
    fn files_of_lists_memory_nested_memory_and_skills() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for rel in [
            "MEMORY.md",
            "SOUL.md",
            "memory/b.md",
            "memory/a.md",
            "memory/2026/jan.md",
            "memory/notes.txt",
            "memory/.hidden.md",
            "skills/calc.md",
            "skills/search/SKILL.md",
            "skills/empty/README.md",
        ] {
            write(d, rel, "x");
        }
        let names: Vec<String> = files_of(d).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "MEMORY.md",
                "memory/2026/jan.md",
                "memory/a.md",
                "memory/b.md",
                "skills/calc.md",
                "skills/search/SKILL.md"
            ]
        );
        assert!(files_of(&d.join("nowhere")).unwrap().is_empty());
    }

    #[test]
    fn stored_files_round_trip_per_agent() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree(TREE).unwrap();
        let f = StoredFile {
            hash: hash("abc"),
            model: "m".into(),
            failed_at_ms: None,
            chunks: vec![StoredChunk {
                heading: "H".into(),
                text: "t".into(),
                tokens: 1,
                vector: vec![0.5, -0.5],
            }],
        };
        put(&tree, "main", "MEMORY.md", &f).unwrap();
        put(&tree, "mainx", "MEMORY.md", &f).unwrap();
        let got = load(&tree, "main");
        assert_eq!(got.len(), 1, "the agent prefix does not match `mainx`");
        assert_eq!(got["MEMORY.md"], f);
        assert_eq!(f.bytes(), 1 + 1 + 8);
        remove(&tree, "main", "MEMORY.md").unwrap();
        assert!(load(&tree, "main").is_empty());
        assert_eq!(hash("abc").len(), 64);
        assert_ne!(hash("abc"), hash("abd"));
    }
}

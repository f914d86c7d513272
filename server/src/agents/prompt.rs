//! An agent's workspace folder and the prompt built from it, with the chapter's breakdown (§18.1).
//!
//! Workspace layout (every part optional; a missing folder is an empty workspace):
//! - `SOUL.md`, `AGENTS.md` — the system prompt,
//! - `MEMORY.md`, `memory/*.md` — memory, in file-name order after `MEMORY.md`,
//! - `skills/<name>/SKILL.md` or `skills/<name>.md` — tool descriptions, in name order.
//!
//! The prompt is one system message (sections `# Soul`, `# Agent`, `# Memory`, `# Tools`, each
//! only when present; a one-line identity when there is neither soul nor agent file), then the
//! session history, then the user input. [`PromptBreakdown`] counts the tokens of each part:
//! `system + memory + tools` are the counts of the sections the system message is made of
//! (concatenated without anything in between), `history` the sum over history messages, `input`
//! the user input; `output` (after the call) and `summary` (the context layer adds the session's
//! running summary) are left at 0 for the caller to fill in.
//!
//! With the knowledge cache on, [`Workspace::build_retrieved`] puts the retrieved chunks
//! ([`MemoryPiece`], best first, each under `## <file> › <heading>`) in the `# Memory` section
//! instead of every memory file; `memory` then counts only them.
//!
//! Limits: [`MAX_FILE_BYTES`] per file, [`MAX_MEMORY_FILES`] and [`MAX_SKILLS`] files.
//! Invariant: this module reads files and builds text; it knows nothing about models, sessions
//! or providers, and it does not choose what to drop when a prompt is too long.

use std::io::Read;
use std::path::{Path, PathBuf};

use openclaw_proto::api::PromptBreakdown;
use openclaw_proto::openai::ChatMessage;

/// Largest part of one workspace file that is read; the rest is ignored.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Most `memory/*.md` files read (in name order).
pub const MAX_MEMORY_FILES: usize = 1000;
/// Most skills read (in name order).
pub const MAX_SKILLS: usize = 256;

/// A named text file of the workspace (memory file or skill).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceFile {
    /// `MEMORY.md`, `memory/<file>.md`, or the skill's name.
    pub name: String,
    pub content: String,
}

/// A chunk of memory the knowledge cache retrieved for one prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryPiece {
    pub file: String,
    pub heading: String,
    pub text: String,
}

/// What an agent's workspace folder holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workspace {
    pub soul: Option<String>,
    pub agents: Option<String>,
    /// `MEMORY.md` first, then `memory/*.md` by file name.
    pub memory: Vec<WorkspaceFile>,
    /// By skill name.
    pub skills: Vec<WorkspaceFile>,
}

impl Workspace {
    /// Read the workspace at `dir`. Missing folders and files are simply absent; other I/O
    /// errors (permissions, …) are returned.
    pub fn load(dir: &Path) -> std::io::Result<Workspace> {
        let mut ws = Workspace {
            soul: read_bounded(&dir.join("SOUL.md"))?,
            agents: read_bounded(&dir.join("AGENTS.md"))?,
            ..Workspace::default()
        };
        if let Some(content) = read_bounded(&dir.join("MEMORY.md"))? {
            ws.memory.push(WorkspaceFile {
                name: "MEMORY.md".into(),
                content,
            });
        }
        let mut memory_files: Vec<(String, PathBuf)> = list_dir(&dir.join("memory"))?
            .into_iter()
            .filter(|(name, path)| name.ends_with(".md") && path.is_file())
            .collect();
        memory_files.sort();
        for (name, path) in memory_files.into_iter().take(MAX_MEMORY_FILES) {
            if let Some(content) = read_bounded(&path)? {
                ws.memory.push(WorkspaceFile {
                    name: format!("memory/{name}"),
                    content,
                });
            }
        }

        let mut skills: Vec<(String, PathBuf)> = Vec::new();
        for (name, path) in list_dir(&dir.join("skills"))? {
            if path.is_dir() {
                let skill = path.join("SKILL.md");
                if skill.is_file() {
                    skills.push((name, skill));
                }
            } else if let Some(stem) = name.strip_suffix(".md") {
                if path.is_file() && !stem.is_empty() {
                    skills.push((stem.to_string(), path));
                }
            }
        }
        skills.sort();
        for (name, path) in skills.into_iter().take(MAX_SKILLS) {
            if let Some(content) = read_bounded(&path)? {
                ws.skills.push(WorkspaceFile { name, content });
            }
        }
        Ok(ws)
    }

    /// Memory files loaded (`MEMORY.md` + `memory/*.md`), for `openclaw_memory_files_total`.
    pub fn memory_files(&self) -> usize {
        self.memory.len()
    }

    /// [`build_with`](Self::build_with) using the local estimator [`estimate_tokens`].
    pub fn build(
        &self,
        agent: &str,
        history: &[ChatMessage],
        input: &str,
    ) -> (Vec<ChatMessage>, PromptBreakdown) {
        self.build_with(agent, history, input, &estimate_tokens)
    }

    /// The messages for one call — system, history, user input — and where their tokens go,
    /// counted with `count`.
    pub fn build_with(
        &self,
        agent: &str,
        history: &[ChatMessage],
        input: &str,
        count: &dyn Fn(&str) -> u32,
    ) -> (Vec<ChatMessage>, PromptBreakdown) {
        self.build_retrieved(agent, history, input, None, count)
    }

    /// [`build_with`](Self::build_with), with `memory` (when given) as the memory section
    /// instead of the whole memory (the knowledge cache's retrieved chunks).
    pub fn build_retrieved(
        &self,
        agent: &str,
        history: &[ChatMessage],
        input: &str,
        memory: Option<&[MemoryPiece]>,
        count: &dyn Fn(&str) -> u32,
    ) -> (Vec<ChatMessage>, PromptBreakdown) {
        let sections = self.system_sections(agent, memory);
        let mut breakdown = PromptBreakdown {
            system: count(&sections.system),
            memory: count(&sections.memory),
            tools: count(&sections.tools),
            history: 0,
            input: count(input),
            output: 0,
            summary: 0,
        };
        let system_text = [sections.system, sections.memory, sections.tools].concat();
        let mut messages = Vec::with_capacity(history.len() + 2);
        messages.push(ChatMessage::new("system", system_text));
        for m in history {
            breakdown.history = breakdown.history.saturating_add(count(&m.text()));
            messages.push(m.clone());
        }
        messages.push(ChatMessage::new("user", input));
        (messages, breakdown)
    }

    /// The three parts of the system message; their concatenation is the message text.
    fn system_sections(&self, agent: &str, retrieved: Option<&[MemoryPiece]>) -> SystemSections {
        let mut system = String::new();
        if let Some(soul) = &self.soul {
            push_section(&mut system, "# Soul", soul);
        }
        if let Some(agents) = &self.agents {
            push_section(&mut system, "# Agent", agents);
        }
        if system.is_empty() {
            system = format!("You are the {agent} agent of OpenClaw.\n\n");
        }
        let mut memory = String::new();
        if let Some(pieces) = retrieved {
            if !pieces.is_empty() {
                memory.push_str("# Memory\n\n");
                for p in pieces {
                    push_section(&mut memory, &piece_heading(p), &p.text);
                }
            }
        } else if !self.memory.is_empty() {
            memory.push_str("# Memory\n\n");
            for f in &self.memory {
                push_section(&mut memory, &format!("## {}", f.name), &f.content);
            }
        }
        let mut tools = String::new();
        if !self.skills.is_empty() {
            tools.push_str("# Tools\n\n");
            for f in &self.skills {
                push_section(&mut tools, &format!("## {}", f.name), &f.content);
            }
        }
        SystemSections {
            system,
            memory,
            tools,
        }
    }
}

/// `## <file> › <heading>` (or `## <file>` for text before the file's first heading).
pub fn piece_heading(p: &MemoryPiece) -> String {
    if p.heading.is_empty() {
        format!("## {}", p.file)
    } else {
        format!("## {} › {}", p.file, p.heading)
    }
}

struct SystemSections {
    system: String,
    memory: String,
    tools: String,
}

fn push_section(out: &mut String, heading: &str, body: &str) {
    out.push_str(heading);
    out.push_str("\n\n");
    out.push_str(body.trim());
    out.push_str("\n\n");
}

/// A rough token count: one token per CJK character, one per four other characters (rounded
/// up). Good enough for a breakdown; the exact count comes from the provider's usage.
pub fn estimate_tokens(text: &str) -> u32 {
    let mut cjk: u64 = 0;
    let mut other: u64 = 0;
    for c in text.chars() {
        if is_cjk(c) {
            cjk += 1;
        } else {
            other += 1;
        }
    }
    u32::try_from(cjk + other.div_ceil(4)).unwrap_or(u32::MAX)
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF     // Hiragana, Katakana
        | 0x3400..=0x4DBF   // CJK Extension A
        | 0x4E00..=0x9FFF   // CJK Unified Ideographs
        | 0xAC00..=0xD7AF   // Hangul syllables
        | 0xF900..=0xFAFF   // CJK Compatibility Ideographs
        | 0xFF00..=0xFFEF   // Full-width forms
        | 0x3000..=0x303F   // CJK punctuation
        | 0x20000..=0x2FFFF // Extensions B..F
    )
}

/// How many memory files [`Workspace::load`] would read in `dir` (`MEMORY.md` + `memory/*.md`),
/// without reading them.
pub fn memory_file_count(dir: &Path) -> usize {
    let top = usize::from(dir.join("MEMORY.md").is_file());
    let memory = list_dir(&dir.join("memory"))
        .unwrap_or_default()
        .into_iter()
        .filter(|(name, path)| name.ends_with(".md") && path.is_file())
        .count()
        .min(MAX_MEMORY_FILES);
    top + memory
}

/// `(file name, path)` of the entries of `dir`; empty when it does not exist.
pub(crate) fn list_dir(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if is_absent(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        // Names that are not UTF-8 cannot be shown in a prompt heading; skip them.
        if let Ok(name) = entry.file_name().into_string() {
            out.push((name, entry.path()));
        }
    }
    Ok(out)
}

/// The first [`MAX_FILE_BYTES`] of `path` as text (invalid UTF-8 replaced), or `None` if absent.
pub(crate) fn read_bounded(path: &Path) -> std::io::Result<Option<String>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if is_absent(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    if !file.metadata()?.is_file() {
        return Ok(None);
    }
    let mut buf = Vec::new();
    file.take(MAX_FILE_BYTES).read_to_end(&mut buf)?;
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

fn is_absent(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
    )
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

    /// An additive counter (bytes), so section counts must add up to the message length.
    fn bytes(s: &str) -> u32 {
        s.len() as u32
    }

    fn history() -> Vec<ChatMessage> {
        vec![
            ChatMessage::new("user", "earlier question"),
            ChatMessage::new("assistant", "earlier answer"),
        ]
    }

    #[test]
    fn load_reads_each_part_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "SOUL.md", "Be kind.");
        write(d, "AGENTS.md", "You triage tickets.");
        write(d, "MEMORY.md", "Team uses Rust.");
        write(d, "memory/2026-02-01.md", "feb");
        write(d, "memory/2026-01-01.md", "jan");
        write(d, "memory/notes.txt", "not memory");
        write(d, "skills/search/SKILL.md", "search the web");
        write(d, "skills/calc.md", "do arithmetic");
        write(d, "skills/empty-dir/README.md", "no SKILL.md here");
        let ws = Workspace::load(d).unwrap();
        assert_eq!(ws.soul.as_deref(), Some("Be kind."));
        assert_eq!(ws.agents.as_deref(), Some("You triage tickets."));
        let memory: Vec<&str> = ws.memory.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            memory,
            ["MEMORY.md", "memory/2026-01-01.md", "memory/2026-02-01.md"]
        );
        assert_eq!(ws.memory_files(), 3);
        assert_eq!(memory_file_count(d), 3);
        let skills: Vec<(&str, &str)> = ws
            .skills
            .iter()
            .map(|f| (f.name.as_str(), f.content.as_str()))
            .collect();
        assert_eq!(
            skills,
            [("calc", "do arithmetic"), ("search", "search the web")]
        );
    }

    #[test]
    fn missing_or_empty_workspace_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        for d in [dir.path().to_path_buf(), dir.path().join("does-not-exist")] {
            let ws = Workspace::load(&d).unwrap();
            assert_eq!(ws, Workspace::default());
            assert_eq!(ws.memory_files(), 0);
        }
        // A file where a folder is expected is treated as absent too.
        write(dir.path(), "memory", "oops");
        assert_eq!(Workspace::load(dir.path()).unwrap().memory_files(), 0);
    }

    #[test]
    fn files_are_read_up_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let big = "x".repeat(MAX_FILE_BYTES as usize + 10);
        write(dir.path(), "MEMORY.md", &big);
        let ws = Workspace::load(dir.path()).unwrap();
        assert_eq!(ws.memory[0].content.len() as u64, MAX_FILE_BYTES);
    }

    /// (files, expected section headings in the system message, absent headings)
    #[test]
    fn build_sections_and_breakdown_table() {
        type Case = (
            &'static [(&'static str, &'static str)],
            &'static [&'static str],
            &'static [&'static str],
        );
        let cases: [Case; 5] = [
            (
                &[],
                &["You are the main agent of OpenClaw."],
                &["# Soul", "# Agent", "# Memory", "# Tools"],
            ),
            (
                &[("SOUL.md", "soul text")],
                &["# Soul\n\nsoul text"],
                &["You are the", "# Agent", "# Memory", "# Tools"],
            ),
            (
                &[("AGENTS.md", "agent text"), ("MEMORY.md", "mem")],
                &["# Agent\n\nagent text", "# Memory", "## MEMORY.md\n\nmem"],
                &["# Soul", "# Tools", "You are the"],
            ),
            (
                &[("memory/a.md", "a"), ("skills/s.md", "tool s")],
                &[
                    "You are the main agent",
                    "# Memory",
                    "## memory/a.md",
                    "# Tools",
                    "## s\n\ntool s",
                ],
                &["# Soul", "# Agent"],
            ),
            (
                &[
                    ("SOUL.md", "s"),
                    ("AGENTS.md", "g"),
                    ("MEMORY.md", "m"),
                    ("skills/t/SKILL.md", "t"),
                ],
                &["# Soul", "# Agent", "# Memory", "# Tools"],
                &["You are the"],
            ),
        ];
        for (files, present, absent) in cases {
            let dir = tempfile::tempdir().unwrap();
            for (rel, body) in files {
                write(dir.path(), rel, body);
            }
            let ws = Workspace::load(dir.path()).unwrap();
            let (messages, b) = ws.build_with("main", &history(), "the input", &bytes);
            assert_eq!(messages.len(), 4, "{files:?}");
            assert_eq!(messages[0].role, "system");
            assert_eq!(&messages[1..3], &history()[..]);
            assert_eq!(messages[3], ChatMessage::new("user", "the input"));
            let system = messages[0].text();
            for p in present {
                assert!(system.contains(p), "{files:?}: `{p}` not in:\n{system}");
            }
            for a in absent {
                assert!(!system.contains(a), "{files:?}: `{a}` in:\n{system}");
            }
            // The parts add up: the sections are exactly the system message.
            assert_eq!(
                b.system + b.memory + b.tools,
                system.len() as u32,
                "{files:?}"
            );
            assert_eq!(
                b.memory == 0,
                !files
                    .iter()
                    .any(|(f, _)| f.contains("MEMORY") || f.starts_with("memory/"))
            );
            assert_eq!(
                b.tools == 0,
                !files.iter().any(|(f, _)| f.starts_with("skills/"))
            );
            assert_eq!(
                b.history,
                ("earlier question".len() + "earlier answer".len()) as u32
            );
            assert_eq!(b.input, "the input".len() as u32);
            assert_eq!(b.output, 0);
        }
    }

    #[test]
    fn build_orders_soul_agent_memory_tools() {
        let dir = tempfile::tempdir().unwrap();
        for (rel, body) in [
            ("SOUL.md", "S"),
            ("AGENTS.md", "A"),
            ("MEMORY.md", "M"),
            ("skills/x.md", "T"),
        ] {
            write(dir.path(), rel, body);
        }
        let (messages, b) = Workspace::load(dir.path()).unwrap().build("ops", &[], "hi");
        let text = messages[0].text();
        let pos = |s: &str| text.find(s).unwrap();
        assert!(pos("# Soul") < pos("# Agent"));
        assert!(pos("# Agent") < pos("# Memory"));
        assert!(pos("# Memory") < pos("# Tools"));
        assert_eq!(messages.len(), 2);
        assert_eq!(b.history, 0);
        assert!(b.system > 0 && b.memory > 0 && b.tools > 0 && b.input > 0);
    }

    #[test]
    fn retrieved_memory_replaces_the_whole_memory() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "MEMORY.md", "all of the memory");
        write(dir.path(), "memory/a.md", "file a");
        let ws = Workspace::load(dir.path()).unwrap();
        let piece = |file: &str, heading: &str, text: &str| MemoryPiece {
            file: file.into(),
            heading: heading.into(),
            text: text.into(),
        };
        // (retrieved, present, absent, memory == 0)
        type Case<'a> = (Option<Vec<MemoryPiece>>, &'a [&'a str], &'a [&'a str], bool);
        let cases: Vec<Case> = vec![
            (
                None,
                &["## MEMORY.md\n\nall of the memory", "## memory/a.md"],
                &[],
                false,
            ),
            (
                Some(vec![piece("memory/a.md", "Deploy > Ports", "port 8080")]),
                &["# Memory\n\n## memory/a.md › Deploy > Ports\n\nport 8080"],
                &["all of the memory", "file a"],
                false,
            ),
            (
                Some(vec![piece("MEMORY.md", "", "x")]),
                &["## MEMORY.md\n\nx"],
                &["all of the memory"],
                false,
            ),
            (Some(vec![]), &[], &["# Memory"], true),
        ];
        for (retrieved, present, absent, empty) in cases {
            let (m, b) = ws.build_retrieved("main", &[], "q", retrieved.as_deref(), &bytes);
            let text = m[0].text();
            for p in present {
                assert!(text.contains(p), "{retrieved:?}: `{p}` not in {text}");
            }
            for a in absent {
                assert!(!text.contains(a), "{retrieved:?}: `{a}` in {text}");
            }
            assert_eq!(b.memory == 0, empty);
            assert_eq!(b.system + b.memory + b.tools, text.len() as u32);
        }
    }

    #[test]
    fn estimate_table() {
        let cases = [
            ("", 0),
            ("abcd", 1),
            ("abcde", 2),
            ("你好世界", 4),
            ("hi 你好", 3), // "hi " -> 1, two CJK -> 2
            ("こんにちは", 5),
        ];
        for (text, want) in cases {
            assert_eq!(estimate_tokens(text), want, "{text}");
        }
    }
}

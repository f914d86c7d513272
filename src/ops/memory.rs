//! `openclaw-node memory push DIR --agent A` and `memory list --agent A`: an agent's memory
//! files through a node's API (`PUT /api/agents/{agent}/memory/{path}`,
//! `GET /api/agents/{agent}/memory`). In a cluster each write is committed through Raft, so every
//! node answers with the same memory. `push` sends the folder's memory files only (the paths
//! the node accepts: MEMORY.md, memory/*.md, skills/*.md, skills/*/SKILL.md) and stops at the
//! first refusal (a file past its bound: 413), saying which. `memory status --agent A` and
//! `memory search "query" --agent A` show the node's knowledge-cache index
//! (`GET /api/agents/{agent}/memory-index`, `.../memory-search?q=&k=`). Exit codes: 0 fine,
//! 1 an error.

use openclaw_proto::memory::{MemoryIndexView, MemorySearchView};
use openclaw_server::agents::memory::scan;
use serde_json::Value;

use super::{render_table, thousands, Align};
use crate::cli::{MemoryAction, MemoryArgs};
use crate::client::Client;
use crate::ops::session::path_segment;

/// The API path of a memory search.
pub fn search_path(agent: &str, query: &str, k: usize) -> String {
    format!(
        "/api/agents/{}/memory-search?q={}&k={k}",
        path_segment(agent),
        path_segment(query)
    )
}

/// The lines `memory status` prints (pure).
pub fn status_lines(v: &MemoryIndexView) -> Vec<String> {
    let mut out = vec![format!(
        "Knowledge index of agent {} ({}; model {}):",
        v.agent,
        if v.enabled {
            "enabled"
        } else {
            "disabled: prompts carry the whole memory"
        },
        v.embedding_model
    )];
    out.push(format!(
        "  files {}  chunks {}  bytes {}  bm25-only files {}",
        thousands(v.files),
        thousands(v.chunks),
        thousands(v.bytes),
        v.bm25_only_files
    ));
    out.push(match (&v.last_build_at, v.last_build_ms) {
        (Some(at), Some(ms)) => format!(
            "  last build {at} ({ms} ms, {} files embedded)",
            v.last_build_embedded
        ),
        _ => "  not built yet".to_string(),
    });
    for s in &v.skipped {
        out.push(format!("  skipped {}: {}", s.file, s.reason));
    }
    out
}

/// The API path of one memory file (each segment escaped).
pub fn file_path(agent: &str, path: &str) -> String {
    let segments: Vec<String> = path.split('/').map(path_segment).collect();
    format!(
        "/api/agents/{}/memory/{}",
        path_segment(agent),
        segments.join("/")
    )
}

pub async fn run(args: MemoryArgs) -> anyhow::Result<i32> {
    match args.action {
        MemoryAction::Push { opts, dir, agent } => {
            let files = scan(&dir);
            if files.is_empty() {
                anyhow::bail!(
                    "{} holds no memory files (MEMORY.md, memory/*.md, skills/*.md, skills/*/SKILL.md)",
                    dir.display()
                );
            }
            let client = Client::new(&opts.target)?;
            let mut sent = Vec::new();
            for f in &files {
                let text = std::fs::read_to_string(dir.join(&f.path))
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", f.path))?;
                let v: Value = client
                    .put_text(&file_path(&agent, &f.path), text)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}: {e}", f.path))?;
                sent.push(v);
            }
            if opts.json {
                super::print_json(&serde_json::json!({"agent": agent, "pushed": sent}))?;
            } else {
                let bytes: u64 = files.iter().map(|f| f.bytes).sum();
                println!(
                    "pushed {} memory files ({} bytes) for agent {agent}",
                    files.len(),
                    thousands(bytes)
                );
            }
            Ok(0)
        }
        MemoryAction::List { opts, agent } => {
            let client = Client::new(&opts.target)?;
            let v: Value = client
                .get_json(&format!("/api/agents/{}/memory", path_segment(&agent)))
                .await?;
            if opts.json {
                super::print_json(&v)?;
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = v["files"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| {
                    vec![
                        f["path"].as_str().unwrap_or_default().to_string(),
                        thousands(f["bytes"].as_u64().unwrap_or(0)),
                    ]
                })
                .collect();
            println!("Memory of agent {agent} ({} files):", rows.len());
            print!(
                "{}",
                render_table(&[("path", Align::Left), ("bytes", Align::Right)], &rows)
            );
            Ok(0)
        }
        MemoryAction::Status { opts, agent } => {
            let client = Client::new(&opts.target)?;
            let v: MemoryIndexView = client
                .get_json(&format!(
                    "/api/agents/{}/memory-index",
                    path_segment(&agent)
                ))
                .await?;
            if opts.json {
                super::print_json(&v)?;
            } else {
                for l in status_lines(&v) {
                    println!("{l}");
                }
            }
            Ok(0)
        }
        MemoryAction::Search {
            opts,
            query,
            agent,
            k,
        } => {
            let client = Client::new(&opts.target)?;
            let v: MemorySearchView = client.get_json(&search_path(&agent, &query, k)).await?;
            if opts.json {
                super::print_json(&v)?;
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = v
                .hits
                .iter()
                .map(|h| {
                    vec![
                        format!("{:.3}", h.score),
                        h.file.clone(),
                        h.heading.clone(),
                        h.tokens.to_string(),
                    ]
                })
                .collect();
            println!(
                "{} chunks for {:?} in agent {agent}'s memory{}:",
                rows.len(),
                v.query,
                if v.bm25_only {
                    " (BM25 only: the query could not be embedded)"
                } else {
                    ""
                }
            );
            print!(
                "{}",
                render_table(
                    &[
                        ("score", Align::Right),
                        ("file", Align::Left),
                        ("heading", Align::Left),
                        ("tokens", Align::Right),
                    ],
                    &rows
                )
            );
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_path_escapes_the_query() {
        assert_eq!(
            search_path("main", "port & tls?", 5),
            "/api/agents/main/memory-search?q=port%20%26%20tls%3F&k=5"
        );
    }

    #[test]
    fn status_lines_table() {
        let built = MemoryIndexView {
            agent: "main".into(),
            enabled: true,
            embedding_model: "m".into(),
            files: 3,
            chunks: 1200,
            bytes: 5,
            last_build_at: Some("2026-12-02T10:00:00.000Z".into()),
            last_build_ms: Some(42),
            last_build_embedded: 2,
            skipped: vec![openclaw_proto::memory::MemoryIndexSkip {
                file: "memory/big.md".into(),
                reason: "too big".into(),
            }],
            ..Default::default()
        };
        // (view, lines that must appear)
        let cases: Vec<(MemoryIndexView, Vec<&str>)> = vec![
            (
                built,
                vec![
                    "Knowledge index of agent main (enabled; model m):",
                    "  files 3  chunks 1,200  bytes 5  bm25-only files 0",
                    "  last build 2026-12-02T10:00:00.000Z (42 ms, 2 files embedded)",
                    "  skipped memory/big.md: too big",
                ],
            ),
            (
                MemoryIndexView {
                    agent: "ops".into(),
                    ..Default::default()
                },
                vec![
                    "disabled: prompts carry the whole memory",
                    "  not built yet",
                ],
            ),
        ];
        for (v, want) in cases {
            let text = status_lines(&v).join("\n");
            for w in want {
                assert!(text.contains(w), "`{w}` not in:\n{text}");
            }
        }
    }

    #[test]
    fn file_path_table() {
        let cases = [
            ("main", "MEMORY.md", "/api/agents/main/memory/MEMORY.md"),
            (
                "main",
                "skills/deploy/SKILL.md",
                "/api/agents/main/memory/skills/deploy/SKILL.md",
            ),
            (
                "ops bot",
                "memory/a b.md",
                "/api/agents/ops%20bot/memory/memory/a%20b.md",
            ),
        ];
        for (agent, path, want) in cases {
            assert_eq!(file_path(agent, path), want);
        }
    }
}

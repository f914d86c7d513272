//! `openclaw-node memory push DIR --agent A` and `memory list --agent A`: an agent's memory
//! files through a node's API (`PUT /api/agents/{agent}/memory/{path}`,
//! `GET /api/agents/{agent}/memory`). In a cluster each write is committed through Raft, so every
//! node answers with the same memory. `push` sends the folder's memory files only (the paths
//! the node accepts: MEMORY.md, memory/*.md, skills/*.md, skills/*/SKILL.md) and stops at the
//! first refusal (a file past its bound: 413), saying which. Exit codes: 0 fine, 1 an error.

use openclaw_server::agents::memory::scan;
use serde_json::Value;

use super::{render_table, thousands, Align};
use crate::cli::{MemoryAction, MemoryArgs};
use crate::client::Client;
use crate::ops::session::path_segment;

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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

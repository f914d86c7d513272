//! `bench --scenario knowledge` (by name only): the knowledge cache (`cache.knowledge_cache`).
//! For 100 and 1,000 generated memory files (one topic each, ~300 tokens), a node with
//! `preload_on_startup` is started on a workspace holding them: the index build time (the node's
//! own `last_build_ms`, and start → `/ready`), files and chunks. Then, on the 100-file node and a
//! node with the cache off, the same questions (one per topic, `QUESTIONS`) as tasks: memory
//! tokens sent (`prompt.memory`) with and without retrieval, how often the first retrieved
//! chunk is the asked topic's file, and the precision: the share of the sent chunks that come
//! from the asked topic's file. Embeddings: the simulator's lexical ones (256 dimensions).

use std::path::Path;
use std::time::{Duration, Instant};

use openclaw_server::knowledge::corpus::{made_up_topic, topic_file};
use serde::Serialize;
use serde_json::{json, Value};

use super::common::*;

/// Memory files per build measured.
const SIZES: [usize; 2] = [100, 1_000];
/// Questions asked (topics 0, 7, 14, …).
const QUESTIONS: usize = 20;
const TASK_TIMEOUT: Duration = Duration::from_secs(60);

/// File `i`'s topic word (the shared corpus).
fn topic(i: usize) -> String {
    made_up_topic(i)
}

fn file_text(i: usize) -> String {
    topic_file(&topic(i), i * 37)
}

fn write_files(data: &Path, n: usize) -> anyhow::Result<()> {
    let mem = data.join("workspace/memory");
    std::fs::create_dir_all(&mem)?;
    for i in 0..n {
        std::fs::write(mem.join(format!("{}.md", topic(i))), file_text(i))?;
    }
    Ok(())
}

fn config(sim: std::net::SocketAddr, on: bool) -> Value {
    let mut cfg = node_config(sim);
    cfg["models"]["emb"] = json!({"provider": "sim", "base_url": format!("http://{sim}/v1"),
        "price": {"input": 0.02, "output": 0.0}, "kind": "embedding", "dimensions": 256});
    cfg["cache"] = json!({"knowledge_cache": {"enabled": on, "embedding_model": "emb",
        "preload_on_startup": true}});
    cfg
}

/// One index build.
#[derive(Debug, Clone, Serialize)]
pub struct BuildRow {
    pub files: u64,
    pub chunks: u64,
    /// The node's own measure of the build (`memory-index.last_build_ms`).
    pub build_ms: u64,
    /// Node start → `/ready` (the build included: `preload_on_startup`).
    pub start_to_ready_ms: u64,
}

/// Memory tokens per question with and without retrieval.
#[derive(Debug, Clone, Serialize)]
pub struct TokensRow {
    pub questions: usize,
    pub memory_tokens_without: f64,
    pub memory_tokens_with: f64,
    pub chunks_per_prompt: f64,
    /// Share of questions whose first retrieved chunk is the asked topic's file.
    pub top1_hit: f64,
    /// Mean over the questions of the share of sent chunks from the asked topic's file.
    pub precision: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub builds: Vec<BuildRow>,
    pub tokens: TokensRow,
}

async fn ask(client: &reqwest::Client, base: &str, input: &str) -> anyhow::Result<Value> {
    task_final(
        client,
        base,
        &json!({"input": input, "cache": false}),
        TASK_TIMEOUT,
    )
    .await
}

/// What the questions got, summed over them.
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    memory_tokens: u64,
    chunks: u64,
    top1_hits: u64,
    /// Sum of each question's share of chunks from the asked file.
    precision: f64,
}

/// Questions on the first 100 topics.
async fn questions(client: &reqwest::Client, base: &str) -> anyhow::Result<Sums> {
    let mut sums = Sums::default();
    for q in 0..QUESTIONS {
        let i = (q * 7) % SIZES[0];
        let v = ask(
            client,
            base,
            &format!("What is the secret code of the {} vault?", topic(i)),
        )
        .await?;
        sums.memory_tokens += v["prompt"]["memory"].as_u64().unwrap_or(0);
        let c = v["memory_chunks"].as_array().cloned().unwrap_or_default();
        let want = format!("memory/{}.md", topic(i));
        sums.chunks += c.len() as u64;
        if c.first().and_then(|c| c["file"].as_str()) == Some(want.as_str()) {
            sums.top1_hits += 1;
        }
        let right = c
            .iter()
            .filter(|c| c["file"].as_str() == Some(want.as_str()))
            .count();
        if !c.is_empty() {
            sums.precision += right as f64 / c.len() as f64;
        }
    }
    Ok(sums)
}

pub async fn run(args: &BenchArgs) -> anyhow::Result<Report> {
    let client = load_client()?;
    let mut builds = Vec::new();
    let mut with = Sums::default();
    for n in SIZES {
        let dir = ScratchDir::create()?;
        write_files(&dir.0.join("data"), n)?;
        let started = Instant::now();
        let (sim, node) = start_children(&dir.0, "knowledge", args.sim_latency_ms, |a| {
            config(a, true)
        })
        .await?;
        let start_to_ready_ms = started.elapsed().as_millis() as u64;
        let base = node.http_url();
        let idx: Value = client
            .get(format!("{base}/api/agents/main/memory-index"))
            .send()
            .await?
            .json()
            .await?;
        builds.push(BuildRow {
            files: idx["files"].as_u64().unwrap_or(0),
            chunks: idx["chunks"].as_u64().unwrap_or(0),
            build_ms: idx["last_build_ms"].as_u64().unwrap_or(0),
            start_to_ready_ms,
        });
        if n == SIZES[0] {
            with = questions(&client, &base).await?;
        }
        drop(node);
        drop(sim);
    }
    let dir = ScratchDir::create()?;
    write_files(&dir.0.join("data"), SIZES[0])?;
    let (sim, node) = start_children(&dir.0, "knowledge", args.sim_latency_ms, |a| {
        config(a, false)
    })
    .await?;
    let without = questions(&client, &node.http_url()).await?;
    drop(node);
    drop(sim);
    let q = QUESTIONS as f64;
    Ok(Report {
        builds,
        tokens: TokensRow {
            questions: QUESTIONS,
            memory_tokens_without: without.memory_tokens as f64 / q,
            memory_tokens_with: with.memory_tokens as f64 / q,
            chunks_per_prompt: with.chunks as f64 / q,
            top1_hit: with.top1_hits as f64 / q,
            precision: with.precision / q,
        },
    })
}

pub fn print(r: &Report) {
    println!("knowledge cache: index build (preload_on_startup), simulator embeddings");
    println!(
        "{:>8} {:>8} {:>10} {:>18}",
        "files", "chunks", "build ms", "start→ready ms"
    );
    for b in &r.builds {
        println!(
            "{:>8} {:>8} {:>10} {:>18}",
            b.files, b.chunks, b.build_ms, b.start_to_ready_ms
        );
    }
    let t = &r.tokens;
    println!(
        "memory tokens per prompt over {} questions (100 files): without retrieval {:.0}, with {:.0} ({:.1}%), {:.1} chunks per prompt, top-1 file hit {:.0}%, precision (sent chunks from the asked file) {:.0}%",
        t.questions,
        t.memory_tokens_without,
        t.memory_tokens_with,
        100.0 * t.memory_tokens_with / t.memory_tokens_without.max(1.0),
        t.chunks_per_prompt,
        100.0 * t.top1_hit,
        100.0 * t.precision
    );
}

//! The node's embedded store alone, filled with finished tasks: its RSS and size on disk as the
//! tasks kept grow (issues 8 and 15). It answers one question the soak cannot in its 30 minutes:
//! does the store's memory follow the data kept, or does it settle once sled's page cache is
//! warm? No node, no HTTP: the same `Store` the single node uses, the same codec, records shaped
//! like the soak's (a ~500-byte input and output).
//!
//! ```sh
//! cargo run --release -p openclaw-server --example store_rss -- --tasks 1000000 --cache-mb 64
//! cargo run --release -p openclaw-server --example store_rss -- --tasks 1000000 --keep 2000
//! ```
//!
//! Options: `--tasks N` (written in all, default 1,000,000), `--step N` (a line every N tasks,
//! default 100,000), `--cache-mb M` (sled's page cache, default 16 = `server.store_cache_mb`'s
//! default; the figures in BENCHMARKS.md were taken at 64), `--keep K` (remove the oldest
//! beyond K, as `server.tasks_retained_max` does; default: keep all), `--dir D` (default: a
//! temporary directory, removed at the end), `--random-ids` (random v4 UUIDs, as the node's
//! task ids were before they became time-ordered v7 ones, instead of ids in write order),
//! `--writes W` (records written per task: 3 = queued, running, finished, as a node does),
//! `--flush-every F` (a flush every F tasks, default 100).

use std::time::Instant;

use anyhow::{bail, Context};
use openclaw_proto::{Priority, TaskRecord, TaskStatus};
use openclaw_server::storage::Store;
use openclaw_server::util::dir_bytes;

struct Args {
    tasks: u64,
    step: u64,
    cache_mb: u64,
    keep: Option<u64>,
    dir: Option<std::path::PathBuf>,
    /// Ids as the node makes them (random UUIDs) instead of in write order.
    random_ids: bool,
    /// Writes per task (1: the finished record only; 3: queued, running, finished).
    writes: u32,
    /// A flush (fsync) every this many tasks (the node flushes before each acknowledgement,
    /// grouped by its group commit).
    flush_every: u64,
}

fn parse() -> anyhow::Result<Args> {
    let mut a = Args {
        tasks: 1_000_000,
        step: 100_000,
        cache_mb: 16,
        keep: None,
        dir: None,
        random_ids: false,
        writes: 1,
        flush_every: 100,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--tasks" => a.tasks = value()?.parse()?,
            "--step" => a.step = value()?.parse()?,
            "--cache-mb" => a.cache_mb = value()?.parse()?,
            "--keep" => a.keep = Some(value()?.parse()?),
            "--dir" => a.dir = Some(value()?.into()),
            "--random-ids" => a.random_ids = true,
            "--writes" => a.writes = value()?.parse()?,
            "--flush-every" => a.flush_every = value()?.parse::<u64>()?.max(1),
            other => bail!("unknown option {other} (see the file's header)"),
        }
    }
    if a.step == 0 {
        bail!("--step must be at least 1");
    }
    Ok(a)
}

/// This process's resident set, in MiB (Linux).
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A finished task shaped like the soak's: ~500-byte input and output.
fn record(i: u64, id: &str) -> TaskRecord {
    let input = format!(
        "{i} {}",
        "summarise the quarterly report for the team ".repeat(11)
    );
    let mut r = TaskRecord::queued(id, "default", &input, Priority::Normal);
    r.seq = i;
    r.status = TaskStatus::Succeeded;
    r.output = Some(format!(
        "{i} {}",
        "the report shows steady growth in usage ".repeat(12)
    ));
    r.model = Some("bench".into());
    r.created_at_ms = 1_700_000_000_000 + i;
    r.finished_at_ms = Some(1_700_000_000_100 + i);
    r
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = parse()?;
    let tmp;
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let store = Store::open_with_cache(&dir, a.cache_mb << 20)?;
    println!(
        "store_rss: {} tasks, cache {} MiB, keep {}",
        a.tasks,
        a.cache_mb,
        a.keep.map_or("all".to_string(), |k| k.to_string())
    );
    println!(
        "{:>10} {:>10} {:>9} {:>9} {:>8}",
        "written", "kept", "rss MiB", "disk MiB", "secs"
    );
    let t0 = Instant::now();
    let mut oldest = 0u64;
    let mut ids = std::collections::VecDeque::new();
    for i in 0..a.tasks {
        let id = if a.random_ids {
            uuid::Uuid::new_v4().to_string()
        } else {
            format!("t{i:016x}")
        };
        let mut rec = record(i, &id);
        for w in 1..a.writes {
            let mut early = rec.clone();
            early.status = if w == 1 {
                TaskStatus::Queued
            } else {
                TaskStatus::Running
            };
            early.output = None;
            store.put_task(&early)?;
        }
        rec.seq = i;
        store.put_task(&rec)?;
        ids.push_back(id);
        if let Some(keep) = a.keep {
            while i + 1 - oldest > keep {
                if let Some(old) = ids.pop_front() {
                    store.remove_task(&old)?;
                }
                oldest += 1;
            }
        } else {
            ids.clear();
        }
        if (i + 1) % a.flush_every == 0 {
            store.flush().await?;
        }
        if (i + 1) % a.step == 0 {
            store.flush().await?;
            println!(
                "{:>10} {:>10} {:>9.1} {:>9.1} {:>8.1}",
                i + 1,
                i + 1 - oldest,
                rss_mib(),
                dir_bytes(&dir) as f64 / (1 << 20) as f64,
                t0.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

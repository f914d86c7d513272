//! `openclaw-node bench --scenario retention`: does a node's memory stay flat as finished tasks
//! pile up, and what does a new node pay to catch up?
//!
//! Three real nodes (process harness, this binary as node and simulator, `RUST_LOG=warn`,
//! snapshots every [`SNAPSHOT_EVERY`] entries, retention bounds above the largest step). For
//! each step of `--retained` (cumulative, e.g. `10000,100000`): submit tasks with
//! [`INPUT_BYTES`]-byte inputs until that many are retained, wait until all have finished, then
//! report per node: RSS (`VmRSS`), the current snapshot file's size and the Raft store's size on
//! disk, and the latency of `GET /api/tasks/{id}` for the first (oldest) task. After the last
//! step a fourth node joins: the time until it serves the newest task, its peak RSS while
//! catching up (`VmHWM`) and its RSS once settled.
//!
//! Goals (issue 15): RSS flat within 20 % across the steps; catch-up peak RSS < 2 × steady.
//! Every wait has a deadline; the harness kills every process when dropped. Invariant: like
//! every scenario, this talks to nodes only over HTTP and reads `/proc` and the data dirs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use openclaw_harness::{Cluster, ClusterSpec};
use serde::Serialize;
use serde_json::{json, Value};

use super::common::{load_client, metric_sample, micros, percentile, BenchArgs};
use openclaw_server::util::dir_bytes;

use super::soak::parse_proc_status;

/// Nodes of the cluster (a fourth joins at the end).
pub const NODES: usize = 3;
/// Bytes of each task's input.
pub const INPUT_BYTES: usize = 500;
/// Submitters in flight while filling.
pub const SUBMITTERS: usize = 64;
/// Workers per node.
pub const WORKERS: usize = 8;
/// `cluster.snapshot_every` of the bench cluster, so snapshots (and a snapshot install for the
/// joiner) happen at small scales too.
pub const SNAPSHOT_EVERY: u64 = 2_000;
/// Deadline of one submit.
pub const SUBMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a step's tasks to finish.
pub const DONE_WAIT_MAX: Duration = Duration::from_secs(900);
/// Longest wait for the joiner to serve the newest task.
pub const CATCH_UP_MAX: Duration = Duration::from_secs(300);
/// Settling time before the joiner's steady RSS is read.
pub const SETTLE: Duration = Duration::from_secs(5);
/// Sequential `GET /api/tasks/{id}` per measurement.
pub const GET_SAMPLES: usize = 200;
/// Poll interval of the waits and the joiner's RSS sampling.
pub const POLL: Duration = Duration::from_millis(50);

/// One step: what the nodes hold after `retained` finished tasks.
#[derive(Debug, Clone, Serialize)]
pub struct RetentionStep {
    pub retained: u64,
    pub fill_secs: f64,
    /// Per node, KiB.
    pub rss_kib: Vec<u64>,
    /// Per node: jemalloc's `allocated` (what the node holds) and `resident` (what the
    /// allocator keeps in RAM), bytes, from `openclaw_process_heap_bytes` (0: not reported).
    pub heap_allocated: Vec<u64>,
    pub heap_resident: Vec<u64>,
    /// Per node: the current snapshot file, bytes (0: none yet).
    pub snapshot_bytes: Vec<u64>,
    /// Per node: the Raft store (sled dir + snapshots), bytes.
    pub raft_bytes: Vec<u64>,
    /// `GET /api/tasks/{oldest}` on a follower.
    pub get_old_p50_us: u32,
    pub get_old_p99_us: u32,
}

/// The fourth node catching up.
#[derive(Debug, Clone, Serialize)]
pub struct CatchUp {
    pub secs: f64,
    pub peak_rss_kib: u64,
    pub steady_rss_kib: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RetentionReport {
    pub input_bytes: usize,
    pub steps: Vec<RetentionStep>,
    pub catch_up: Option<CatchUp>,
    /// Largest over smallest mean RSS of the steps, minus one.
    pub rss_growth: Option<f64>,
}

/// `VmRSS` and `VmHWM` (KiB) of a process.
fn rss_and_peak(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = text
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (parse_proc_status(&text).0, hwm)
}

/// Each node's `openclaw_process_heap_bytes` for `allocated` and `resident` (0 where the node
/// does not report them: a build without jemalloc, or a node that did not answer).
async fn heap_figures(client: &reqwest::Client, urls: &[String]) -> (Vec<u64>, Vec<u64>) {
    let (mut allocated, mut resident) = (Vec::new(), Vec::new());
    for url in urls {
        let body = match client.get(format!("{url}/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let read = |kind: &str| {
            metric_sample(
                &body,
                &format!("openclaw_process_heap_bytes{{kind=\"{kind}\"}}"),
            )
            .map_or(0, |v| v as u64)
        };
        allocated.push(read("allocated"));
        resident.push(read("resident"));
    }
    (allocated, resident)
}

fn node_data(c: &Cluster, k: usize) -> std::path::PathBuf {
    c.run_dir().join(format!("node-{k}")).join("data")
}

/// Largest over smallest, minus one.
pub fn growth(values: &[f64]) -> Option<f64> {
    let min = values.iter().copied().reduce(f64::min)?;
    let max = values.iter().copied().reduce(f64::max)?;
    (min > 0.0).then(|| max / min - 1.0)
}

/// Submit `n` tasks round-robin over `urls`; returns the first and last ids acknowledged.
async fn fill(
    client: &reqwest::Client,
    urls: &Arc<Vec<String>>,
    n: u64,
) -> anyhow::Result<(Option<String>, Option<String>)> {
    let left = Arc::new(AtomicU64::new(n));
    let input = "r".repeat(INPUT_BYTES);
    let body = bytes::Bytes::from(json!({"input": input, "max_tokens": 64}).to_string());
    let mut set = tokio::task::JoinSet::new();
    for w in 0..SUBMITTERS {
        let (client, urls, body, left) = (client.clone(), urls.clone(), body.clone(), left.clone());
        set.spawn(async move {
            let mut ids: Vec<String> = Vec::new();
            let mut errors = 0u64;
            let mut i = w;
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(1))
                .is_ok()
            {
                let url = &urls[i % urls.len()];
                i += 1;
                let r = client
                    .post(format!("{url}/api/tasks"))
                    .timeout(SUBMIT_TIMEOUT)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let ok = match r {
                    Ok(r) if r.status().as_u16() == 202 => r
                        .json::<Value>()
                        .await
                        .ok()
                        .and_then(|v| v["id"].as_str().map(str::to_string)),
                    _ => None,
                };
                match ok {
                    Some(id) => ids.push(id),
                    None => {
                        // Try again (a full queue answers 503): the count is of acknowledged tasks.
                        left.fetch_add(1, Ordering::Relaxed);
                        errors += 1;
                        if errors > 10_000 {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            ids
        });
    }
    let mut first = None;
    let mut last = None;
    while let Some(r) = set.join_next().await {
        let ids = r.context("a submitter panicked")?;
        if first.is_none() {
            first = ids.first().cloned();
        }
        if let Some(l) = ids.last() {
            last = Some(l.clone());
        }
    }
    Ok((first, last))
}

/// Wait until the cluster counts `n` finished tasks.
async fn wait_finished(c: &Cluster, n: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + DONE_WAIT_MAX;
    loop {
        if let Ok(st) = c.status(0).await {
            let done: u64 = ["succeeded", "failed", "cancelled"]
                .iter()
                .filter_map(|s| st.tasks.get(*s))
                .sum();
            if done >= n {
                return Ok(());
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{n} tasks did not finish within {DONE_WAIT_MAX:?}"
        );
        tokio::time::sleep(POLL * 4).await;
    }
}

/// Sequential GETs of `id` at `url`: (p50, p99) in microseconds.
async fn get_latency(client: &reqwest::Client, url: &str, id: &str) -> anyhow::Result<(u32, u32)> {
    let mut d = Vec::with_capacity(GET_SAMPLES);
    for _ in 0..GET_SAMPLES {
        let t = Instant::now();
        let r = client
            .get(format!("{url}/api/tasks/{id}"))
            .send()
            .await
            .context("GET /api/tasks/{id}")?;
        anyhow::ensure!(r.status().is_success(), "GET old task: {}", r.status());
        let _ = r.bytes().await;
        d.push(micros(t.elapsed()));
    }
    d.sort_unstable();
    Ok((percentile(&d, 50.0), percentile(&d, 99.0)))
}

/// Run the scenario.
pub async fn run(args: &BenchArgs) -> anyhow::Result<RetentionReport> {
    let client = load_client()?;
    let mut steps_n: Vec<u64> = args.retained.clone();
    steps_n.sort_unstable();
    steps_n.dedup();
    let max = steps_n.last().copied().unwrap_or(0);
    println!(
        "Retention: {NODES} nodes, {INPUT_BYTES}-byte inputs, steps {steps_n:?} (RUST_LOG=warn), \
         server.store_cache_mb {}",
        args.store_cache_mb
            .map_or_else(|| "default".to_string(), |mb| mb.to_string())
    );
    let bin = std::env::current_exe().context("finding this program's path")?;
    let mut spec = ClusterSpec::new(bin, NODES);
    spec.workers = WORKERS;
    spec.sim_args = vec!["--latency-ms".into(), "0".into()];
    spec.rust_log = "warn".into();
    spec.extra_config = json!({
        "server": {"tasks_retained_max": max.saturating_mul(2).max(1), "queue_max": 100_000},
        "cluster": {"snapshot_every": SNAPSHOT_EVERY},
    });
    if let Some(mb) = args.store_cache_mb {
        spec.extra_config["server"]["store_cache_mb"] = json!(mb);
    }
    let mut c = Cluster::start(spec).await.context("starting the cluster")?;
    let urls = Arc::new(c.http_urls());
    let mut steps = Vec::new();
    let mut submitted = 0u64;
    let mut oldest: Option<String> = None;
    let mut newest: Option<String> = None;
    println!(
        "  {:>9} {:>8} {:>30} {:>30} {:>30} {:>16}",
        "retained",
        "fill s",
        "RSS MiB per node",
        "snapshot MiB per node",
        "raft store MiB",
        "GET old p50/p99"
    );
    for &n in &steps_n {
        let t = Instant::now();
        let (first, last) = fill(&client, &urls, n - submitted).await?;
        submitted = n;
        if oldest.is_none() {
            oldest = first;
        }
        newest = last.or(newest);
        wait_finished(&c, n).await?;
        let fill_secs = t.elapsed().as_secs_f64();
        // Let a snapshot triggered by the last entries finish, and the nodes' heap figures
        // (refreshed every 5 s) catch up.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let (heap_allocated, heap_resident) = heap_figures(&client, &urls).await;
        let rss_kib: Vec<u64> = c
            .nodes()
            .iter()
            .map(|node| node.pid().map(|p| rss_and_peak(p).0).unwrap_or(0))
            .collect();
        let snapshot_bytes: Vec<u64> = (0..NODES)
            .map(|k| dir_bytes(&node_data(&c, k).join("raft-snapshots")))
            .collect();
        let raft_bytes: Vec<u64> = (0..NODES)
            .map(|k| {
                let d = node_data(&c, k);
                dir_bytes(&d.join("raft")) + dir_bytes(&d.join("raft-snapshots"))
            })
            .collect();
        let old = oldest.clone().context("no task was acknowledged")?;
        let (p50, p99) = get_latency(&client, &urls[1 % urls.len()], &old).await?;
        let mib = |v: &[u64], div: f64| {
            v.iter()
                .map(|x| format!("{:.1}", *x as f64 / div))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        println!(
            "  {:>9} {:>8.1} {:>30} {:>30} {:>30} {:>7}/{:<8}",
            n,
            fill_secs,
            mib(&rss_kib, 1024.0),
            mib(&snapshot_bytes, 1048576.0),
            mib(&raft_bytes, 1048576.0),
            format!("{:.2}ms", p50 as f64 / 1000.0),
            format!("{:.2}ms", p99 as f64 / 1000.0),
        );
        println!(
            "  {:>18} heap MiB per node (jemalloc): allocated {}, resident {}",
            "",
            mib(&heap_allocated, 1048576.0),
            mib(&heap_resident, 1048576.0),
        );
        steps.push(RetentionStep {
            retained: n,
            fill_secs,
            rss_kib,
            heap_allocated,
            heap_resident,
            snapshot_bytes,
            raft_bytes,
            get_old_p50_us: p50,
            get_old_p99_us: p99,
        });
    }
    let catch_up = match newest {
        Some(id) => Some(catch_up(&mut c, &client, &id).await?),
        None => None,
    };
    if let Some(cu) = &catch_up {
        println!(
            "  joiner: serves the newest task after {:.1} s; peak RSS {:.1} MiB, settled {:.1} MiB ({:.2}x)",
            cu.secs,
            cu.peak_rss_kib as f64 / 1024.0,
            cu.steady_rss_kib as f64 / 1024.0,
            cu.peak_rss_kib as f64 / cu.steady_rss_kib.max(1) as f64
        );
    }
    let means: Vec<f64> = steps
        .iter()
        .map(|s| s.rss_kib.iter().sum::<u64>() as f64 / s.rss_kib.len().max(1) as f64)
        .collect();
    let rss_growth = growth(&means);
    if let Some(g) = rss_growth {
        println!(
            "  mean RSS growth from the first to the largest step: {:+.1} % (goal: within 20 %)",
            g * 100.0
        );
    }
    drop(c);
    Ok(RetentionReport {
        input_bytes: INPUT_BYTES,
        steps,
        catch_up,
        rss_growth,
    })
}

/// A fourth node joins; how long until it serves `newest`, and its RSS peak and settled.
async fn catch_up(
    c: &mut Cluster,
    client: &reqwest::Client,
    newest: &str,
) -> anyhow::Result<CatchUp> {
    let secret = c.secret().to_string();
    let t = Instant::now();
    let joiner = c.spawn_joiner(&secret).context("spawning the joiner")?;
    let pid = joiner.pid().context("the joiner has no pid")?;
    let url = format!("http://{}", joiner.http_addr());
    let deadline = t + CATCH_UP_MAX;
    let secs = loop {
        let done = client
            .get(format!("{url}/api/tasks/{newest}"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success());
        if let Some(r) = done {
            let v: Value = r.json().await.unwrap_or(Value::Null);
            if matches!(
                v["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            ) {
                break t.elapsed().as_secs_f64();
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the joiner did not catch up within {CATCH_UP_MAX:?}"
        );
        tokio::time::sleep(POLL).await;
    };
    tokio::time::sleep(SETTLE).await;
    let (steady, peak) = rss_and_peak(pid);
    drop(joiner);
    Ok(CatchUp {
        secs,
        peak_rss_kib: peak,
        steady_rss_kib: steady,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_largest_over_smallest() {
        assert_eq!(growth(&[]), None);
        assert_eq!(growth(&[0.0, 1.0]), None);
        let g = growth(&[100.0, 110.0, 105.0]).unwrap();
        assert!((g - 0.10).abs() < 1e-9);
    }
}

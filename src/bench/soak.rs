//! `openclaw-node bench --scenario soak`: does anything grow with work?
//!
//! A simulator and a node (children of this binary through the process harness, the node at the
//! default log level) take a constant open-loop load — `--task-rate` tasks and `--chat-rate`
//! chat completions per second — for `--minutes`. Every `--sample-secs` it samples the node process (RSS, open file
//! descriptors, threads from `/proc`), the queue (`GET /api/queue`), the p99 latency of the
//! submissions and chat calls in that interval, the size of the node's log and of its store on
//! disk. At the end it prints the table, the growth per hour of RSS after the warm-up — the later
//! of [`SOAK_WARMUP_SHARE`] of the run and the store outgrowing its page cache
//! ([`SOAK_STORE_WARM_FACTOR`] × `server.store_cache_mb` on disk; before that, sled holds what is
//! written in memory and RSS follows the data by design) — the log bytes per task and the longest
//! log line, against the goals of issue 8. A run whose store never warms says so instead of
//! giving a verdict on RSS.
//!
//! A program that prints figures, never a test (the CI's short run asserts only bounds that do
//! not depend on time: bytes per task, the longest line, descriptors).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openclaw_proto::api::QueueView;
use openclaw_server::util::dir_bytes;
use serde::Serialize;
use serde_json::json;
use tokio::sync::Semaphore;

use super::common::{
    metric_sample, micros, node_config, percentile, start_children, wait_drained, BenchArgs,
    ScratchDir, DRAIN_TIMEOUT, OPEN_LOOP_IN_FLIGHT_MAX, SOAK_LOG_BYTES_PER_TASK_GOAL,
    SOAK_RSS_GROWTH_GOAL, SOAK_STORE_CACHE_MB_DEFAULT, SOAK_STORE_WARM_FACTOR, SOAK_WARMUP_SHARE,
};

/// One row of the soak table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SoakSample {
    pub t_s: u64,
    pub rss_kb: u64,
    /// jemalloc's `allocated` (what the node holds; `openclaw_process_heap_bytes`), bytes; 0
    /// when the node does not report it.
    pub heap_allocated: u64,
    pub fds: u64,
    pub threads: u64,
    pub queued: u64,
    pub running: u64,
    /// Accepted tasks and answered chats in this interval.
    pub tasks: u64,
    pub chats: u64,
    /// Submissions refused with 503 (queue full, overloaded) and other errors in this interval.
    pub rejected: u64,
    pub errors: u64,
    pub task_p99_us: u32,
    pub chat_p99_us: u32,
    /// The node's log size at the sample.
    pub log_bytes: u64,
    /// The node's store (`<data-dir>/store`) on disk at the sample.
    pub store_bytes: u64,
}

/// What the soak measured.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    pub minutes: f64,
    pub task_rate: u32,
    pub chat_rate: u32,
    pub samples: Vec<SoakSample>,
    /// Store size on disk from which its page cache counts as warm, and the first sample
    /// after the warm-up (`None`: the store never got there, so no verdict on RSS).
    pub store_warm_bytes: u64,
    pub warm_from_s: Option<u64>,
    pub tasks: u64,
    pub chats: u64,
    pub rejected: u64,
    pub errors: u64,
    /// RSS growth from the first to the last sample after the warm-up, as a fraction.
    pub rss_growth: f64,
    /// Least-squares slope of RSS after the warm-up, KiB per hour.
    pub rss_kb_per_hour: f64,
    pub fds_growth: i64,
    /// Open descriptors before the load, and after it once the load generator's connections are
    /// closed (a difference is a leak: it does not depend on how many requests were in flight).
    pub fds_before: u64,
    pub fds_after: u64,
    pub threads_growth: i64,
    /// Log bytes written during the load per accepted task, and per unit of work (task or chat).
    pub log_bytes_per_task: f64,
    pub log_bytes_per_unit: f64,
    pub longest_log_line: usize,
    pub drained: bool,
    pub node_alive: bool,
}

// ---------------------------------------------------------------------------------------------
// Pure helpers
// ---------------------------------------------------------------------------------------------

/// Least-squares slope of `(x, y)` points (0 with fewer than two distinct x).
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        return 0.0;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    sxy / sxx
}

/// The samples after the warm-up: from the later of `share` of the run and the first sample
/// whose store holds `warm_bytes` on disk (at least the last sample of the run's share); `None`
/// when the store never got there (RSS was still the cache filling).
pub fn after_warmup(samples: &[SoakSample], share: f64, warm_bytes: u64) -> Option<&[SoakSample]> {
    if samples.is_empty() {
        return None;
    }
    let by_share = (((samples.len() as f64) * share).floor() as usize).min(samples.len() - 1);
    let by_store = samples.iter().position(|s| s.store_bytes >= warm_bytes)?;
    Some(&samples[by_share.max(by_store)..])
}

/// Relative change from the first to the last value (0 when the first is 0).
pub fn growth(first: u64, last: u64) -> f64 {
    if first == 0 {
        return 0.0;
    }
    (last as f64 - first as f64) / first as f64
}

/// The longest line of a text, in bytes.
pub fn longest_line(text: &[u8]) -> usize {
    text.split(|b| *b == b'\n')
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0)
}

/// `VmRSS` (KiB) and `Threads` from the text of `/proc/<pid>/status`.
pub fn parse_proc_status(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("Threads:"))
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

/// Latencies and counts of the current interval, swapped out at each sample.
#[derive(Default)]
struct Interval {
    task_us: Vec<u32>,
    chat_us: Vec<u32>,
    rejected: u64,
    errors: u64,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Task,
    Chat,
}

fn soak_config(sim: SocketAddr, args: &BenchArgs) -> serde_json::Value {
    let mut cfg = node_config(sim);
    // The node's own defaults for what bounds it: an operator's node, not a bench-tuned one.
    cfg["server"] = json!({});
    if let Some(n) = args.tasks_retained_max {
        cfg["server"]["tasks_retained_max"] = json!(n);
    }
    if let Some(n) = args.store_cache_mb {
        cfg["server"]["store_cache_mb"] = json!(n);
    }
    cfg
}

/// Send at `rate` per second until `stop`, each request timed from its scheduled instant.
async fn generate(
    client: reqwest::Client,
    url: String,
    kind: Kind,
    rate: u32,
    stop: Instant,
    acc: Arc<Mutex<Interval>>,
) {
    if rate == 0 {
        return;
    }
    let gate = Arc::new(Semaphore::new(OPEN_LOOP_IN_FLIGHT_MAX));
    let started = tokio::time::Instant::now();
    let mut i: u64 = 0;
    loop {
        let due = started + Duration::from_nanos(i * 1_000_000_000 / rate as u64);
        tokio::time::sleep_until(due).await;
        if Instant::now() >= stop {
            break;
        }
        let body = match kind {
            Kind::Task => {
                json!({"input": format!("Summarise soak item {i}: the alerts of today."), "max_tokens": 32})
            }
            Kind::Chat => json!({"model": "bench", "max_tokens": 32,
                "messages": [{"role": "user", "content": format!("Say hello to soak call {i}.")}]}),
        };
        let Ok(permit) = gate.clone().acquire_owned().await else {
            break;
        };
        let (client, url, acc) = (client.clone(), url.clone(), acc.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let res = client.post(&url).json(&body).send().await;
            let us = micros(due.elapsed());
            let mut a = acc.lock().unwrap_or_else(|p| p.into_inner());
            match res {
                Ok(r) if r.status().is_success() => match kind {
                    Kind::Task => a.task_us.push(us),
                    Kind::Chat => a.chat_us.push(us),
                },
                Ok(r) if r.status().as_u16() == 503 || r.status().as_u16() == 429 => {
                    a.rejected += 1
                }
                _ => a.errors += 1,
            }
        });
        i += 1;
    }
}

fn proc_stats(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let (rss, threads) = parse_proc_status(&status);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    (rss, fds, threads)
}

/// How long closed connections may take to leave the node's descriptor table.
const FDS_SETTLE: Duration = Duration::from_secs(10);

/// The node's open descriptors once they stop falling (or are back to `baseline`), polled
/// until [`FDS_SETTLE`].
async fn fds_settled(pid: u32, baseline: u64) -> u64 {
    let end = Instant::now() + FDS_SETTLE;
    let mut last = proc_stats(pid).1;
    while Instant::now() < end && last > baseline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = proc_stats(pid).1;
        if now >= last {
            // Not falling any more: give it one more look after a pause.
            tokio::time::sleep(Duration::from_millis(750)).await;
            let again = proc_stats(pid).1;
            if again >= now {
                return again;
            }
            last = again;
        } else {
            last = now;
        }
    }
    last
}

/// Run the soak; prints a row per sample as it goes.
pub async fn run(client: &reqwest::Client, args: &BenchArgs) -> anyhow::Result<SoakReport> {
    let dir = ScratchDir::create()?;
    let (_sim, mut node) = start_children(&dir.0, "soak", args.sim_latency_ms, |sim| {
        soak_config(sim, args)
    })
    .await?;
    let base = node.http_url();
    let Some(pid) = node.pid() else {
        anyhow::bail!("the node child is not running");
    };
    let log_path = node.log_path().to_path_buf();
    let store_dir = node.data_dir().join("store");
    let store_warm_bytes =
        SOAK_STORE_WARM_FACTOR * (args.store_cache_mb.unwrap_or(SOAK_STORE_CACHE_MB_DEFAULT) << 20);
    let log_size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let log_at_start = log_size(&log_path);
    let (_, fds_before, _) = proc_stats(pid);
    // The load runs on a client of its own, dropped at the end so its connections close.
    let load = super::common::load_client()?;

    let run_for = Duration::from_secs_f64((args.minutes * 60.0).max(1.0));
    let every = Duration::from_secs(args.sample_secs.max(1));
    let started = Instant::now();
    let stop = started + run_for;
    let acc = Arc::new(Mutex::new(Interval::default()));
    let gens = [
        tokio::spawn(generate(
            load.clone(),
            format!("{base}/api/tasks"),
            Kind::Task,
            args.task_rate,
            stop,
            acc.clone(),
        )),
        tokio::spawn(generate(
            load.clone(),
            format!("{base}/v1/chat/completions"),
            Kind::Chat,
            args.chat_rate,
            stop,
            acc.clone(),
        )),
    ];
    print_header();
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    while Instant::now() < stop {
        tick.tick().await;
        if node.check_alive().is_err() {
            break;
        }
        let mut iv = std::mem::take(&mut *acc.lock().unwrap_or_else(|p| p.into_inner()));
        iv.task_us.sort_unstable();
        iv.chat_us.sort_unstable();
        let (rss_kb, fds, threads) = proc_stats(pid);
        let q: Option<QueueView> = async {
            client
                .get(format!("{base}/api/queue"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()
        }
        .await;
        let heap_allocated = async {
            let body = client
                .get(format!("{base}/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            metric_sample(&body, r#"openclaw_process_heap_bytes{kind="allocated"}"#)
        }
        .await
        .map_or(0, |v| v as u64);
        let s = SoakSample {
            t_s: started.elapsed().as_secs(),
            rss_kb,
            heap_allocated,
            fds,
            threads,
            queued: q.as_ref().map_or(0, |q| q.queued),
            running: q.as_ref().map_or(0, |q| q.running),
            tasks: iv.task_us.len() as u64,
            chats: iv.chat_us.len() as u64,
            rejected: iv.rejected,
            errors: iv.errors,
            task_p99_us: percentile(&iv.task_us, 99.0),
            chat_p99_us: percentile(&iv.chat_us, 99.0),
            log_bytes: log_size(&log_path).saturating_sub(log_at_start),
            store_bytes: dir_bytes(&store_dir),
        };
        print_row(&s);
        samples.push(s);
    }
    for g in gens {
        let _ = g.await;
    }
    let node_alive = node.check_alive().is_ok();
    let drained = node_alive
        && matches!(
            wait_drained(client, &base, DRAIN_TIMEOUT).await,
            Ok(super::common::Drain::Drained)
        );
    drop(load);
    let fds_after = fds_settled(pid, fds_before).await;
    // What completed after the last sample still counts.
    let tail = std::mem::take(&mut *acc.lock().unwrap_or_else(|p| p.into_inner()));
    let log_text = std::fs::read(&log_path).unwrap_or_default();
    let log_bytes = (log_text.len() as u64).saturating_sub(log_at_start);
    let sum = |f: fn(&SoakSample) -> u64| samples.iter().map(f).sum::<u64>();
    let tasks = sum(|s| s.tasks) + tail.task_us.len() as u64;
    let chats = sum(|s| s.chats) + tail.chat_us.len() as u64;
    let warm = after_warmup(&samples, SOAK_WARMUP_SHARE, store_warm_bytes).unwrap_or(&[]);
    let warm_from_s = warm.first().map(|s| s.t_s);
    let points: Vec<(f64, f64)> = warm
        .iter()
        .map(|s| (s.t_s as f64 / 3600.0, s.rss_kb as f64))
        .collect();
    let (first, last) = (warm.first().cloned(), warm.last().cloned());
    let d = |f: fn(&SoakSample) -> u64| match (&first, &last) {
        (Some(a), Some(b)) => f(b) as i64 - f(a) as i64,
        _ => 0,
    };
    Ok(SoakReport {
        minutes: args.minutes,
        task_rate: args.task_rate,
        chat_rate: args.chat_rate,
        tasks,
        chats,
        rejected: sum(|s| s.rejected) + tail.rejected,
        errors: sum(|s| s.errors) + tail.errors,
        rss_growth: match (&first, &last) {
            (Some(a), Some(b)) => growth(a.rss_kb, b.rss_kb),
            _ => 0.0,
        },
        rss_kb_per_hour: slope(&points),
        store_warm_bytes,
        warm_from_s,
        fds_growth: d(|s| s.fds),
        fds_before,
        fds_after,
        threads_growth: d(|s| s.threads),
        log_bytes_per_task: log_bytes as f64 / tasks.max(1) as f64,
        log_bytes_per_unit: log_bytes as f64 / (tasks + chats).max(1) as f64,
        longest_log_line: longest_line(&log_text),
        drained,
        node_alive,
        samples,
    })
}

fn print_header() {
    println!(
        "6. Soak: constant load, sampled (latencies in ms; RSS, heap (jemalloc's allocated) and \
         store on disk in MiB)"
    );
    println!(
        "{:>6} {:>8} {:>8} {:>8} {:>5} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {:>6} {:>9} {:>9} {:>10}",
        "t(s)",
        "rss",
        "heap",
        "store",
        "fds",
        "threads",
        "queued",
        "running",
        "tasks",
        "chats",
        "rejected",
        "errors",
        "task p99",
        "chat p99",
        "log bytes"
    );
}

fn print_row(s: &SoakSample) {
    println!(
        "{:>6} {:>8.1} {:>8.1} {:>8.1} {:>5} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {:>6} {:>9.2} {:>9.2} {:>10}",
        s.t_s,
        s.rss_kb as f64 / 1024.0,
        s.heap_allocated as f64 / (1 << 20) as f64,
        s.store_bytes as f64 / (1 << 20) as f64,
        s.fds,
        s.threads,
        s.queued,
        s.running,
        s.tasks,
        s.chats,
        s.rejected,
        s.errors,
        s.task_p99_us as f64 / 1000.0,
        s.chat_p99_us as f64 / 1000.0,
        s.log_bytes
    );
}

/// The summary under the table.
pub fn print(r: &SoakReport) {
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "load: {} tasks/s + {} chats/s for {} min; {} tasks accepted, {} chats answered, {} rejected (503/429), {} errors",
        r.task_rate, r.chat_rate, r.minutes, r.tasks, r.chats, r.rejected, r.errors
    );
    let warm_mb = r.store_warm_bytes as f64 / (1 << 20) as f64;
    match r.warm_from_s {
        Some(t) => println!(
            "RSS after warm-up (from t={t} s: {:.0}% of the run and the store >= {warm_mb:.0} MiB on disk): {:+.1}% first to last, {:+.1} MiB per hour (goal: flat within {:.0}%: {})",
            SOAK_WARMUP_SHARE * 100.0,
            r.rss_growth * 100.0,
            r.rss_kb_per_hour / 1024.0,
            SOAK_RSS_GROWTH_GOAL * 100.0,
            verdict(r.rss_growth.abs() <= SOAK_RSS_GROWTH_GOAL)
        ),
        None => println!(
            "RSS: no verdict: the store never reached {warm_mb:.0} MiB on disk ({}x its page cache), so RSS was still the cache filling; run longer, faster or with a smaller --store-cache-mb",
            SOAK_STORE_WARM_FACTOR
        ),
    }
    println!(
        "descriptors {:+}, threads {:+} after warm-up; descriptors {} before the load, {} after it (its connections closed)",
        r.fds_growth, r.threads_growth, r.fds_before, r.fds_after
    );
    println!(
        "log: {:.1} bytes per task, {:.1} per task or chat, longest line {} bytes (goal: < {:.0} per task: {})",
        r.log_bytes_per_task,
        r.log_bytes_per_unit,
        r.longest_log_line,
        SOAK_LOG_BYTES_PER_TASK_GOAL,
        verdict(r.log_bytes_per_task < SOAK_LOG_BYTES_PER_TASK_GOAL)
    );
    println!(
        "node alive at the end: {}; queue drained: {}",
        r.node_alive, r.drained
    );
    println!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_table() {
        let cases: Vec<(Vec<(f64, f64)>, f64)> = vec![
            (vec![], 0.0),
            (vec![(1.0, 5.0)], 0.0),
            (vec![(0.0, 1.0), (1.0, 3.0)], 2.0),
            (vec![(0.0, 10.0), (1.0, 10.0), (2.0, 10.0)], 0.0),
            (vec![(0.0, 0.0), (1.0, -1.0), (2.0, -2.0)], -1.0),
            (vec![(2.0, 1.0), (2.0, 9.0)], 0.0),
        ];
        for (pts, want) in cases {
            assert!((slope(&pts) - want).abs() < 1e-9, "{pts:?}");
        }
    }

    #[test]
    fn warmup_and_growth() {
        let s = |t| SoakSample {
            t_s: t,
            store_bytes: t * 10,
            ..Default::default()
        };
        // t = 0..9, the store growing 10 bytes per sample.
        let v: Vec<SoakSample> = (0..10).map(s).collect();
        let first = |share, warm| {
            after_warmup(&v, share, warm)
                .and_then(|w| w.first())
                .map(|s| s.t_s)
        };
        let cases = [
            // (share, warm bytes, first sample kept)
            (0.2, 0, Some(2)),  // the share decides
            (0.2, 50, Some(5)), // the store decides
            (0.2, 90, Some(9)), // warm at the last sample
            (0.2, 91, None),    // never warm: no verdict
            (1.0, 0, Some(9)),  // always the last sample of the share
            (0.5, 30, Some(5)),
        ];
        for (share, warm, want) in cases {
            assert_eq!(first(share, warm), want, "share {share}, warm {warm}");
        }
        assert_eq!(after_warmup(&v[..1], 0.2, 0).map(<[_]>::len), Some(1));
        assert!(after_warmup(&[], 0.2, 0).is_none());
        assert_eq!(growth(100, 110), 0.1);
        assert_eq!(growth(100, 90), -0.1);
        assert_eq!(growth(0, 90), 0.0);
    }

    #[test]
    fn proc_status_and_lines() {
        let text = "Name:\topenclaw-node\nVmRSS:\t   20480 kB\nThreads:\t17\n";
        assert_eq!(parse_proc_status(text), (20480, 17));
        assert_eq!(parse_proc_status(""), (0, 0));
        assert_eq!(longest_line(b"ab\nabcd\n\nx"), 4);
        assert_eq!(longest_line(b""), 0);
    }
}

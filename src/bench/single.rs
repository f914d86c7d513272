//! The single-node scenarios of `openclaw-node bench` (`latency`, `sweep`, `tasks`, `policy`):
//! one simulator and one node, load generated from this process, and their tables.

use std::net::SocketAddr;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openclaw_harness::{Node, Sim};

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::common::*;

/// The running children and where they listen.
pub(super) struct Fixture {
    sim: Sim,
    node: Node,
    sim_url: String,
    node_url: String,
    _dir: ScratchDir,
}

impl Fixture {
    pub(super) async fn start(sim_latency_ms: u64) -> anyhow::Result<Fixture> {
        Self::start_with(sim_latency_ms, node_config).await
    }

    async fn start_with(
        sim_latency_ms: u64,
        config: fn(SocketAddr) -> Value,
    ) -> anyhow::Result<Fixture> {
        let dir = ScratchDir::create()?;
        let (sim, node) = start_children(&dir.0, "bench", sim_latency_ms, config).await?;
        Ok(Fixture {
            sim_url: sim.url().to_string(),
            node_url: node.http_url(),
            sim,
            node,
            _dir: dir,
        })
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        self.sim.check_alive()?;
        Ok(self.node.check_alive()?)
    }
}

// ---------------------------------------------------------------------------------------------
// Load generation
// ---------------------------------------------------------------------------------------------

/// One kind of request the generator sends.
#[derive(Clone)]
struct Target {
    client: reqwest::Client,
    url: String,
    body: bytes::Bytes,
    /// When set, every request gets a distinct prompt (numbered), so the cache always misses.
    unique: Option<(String, Arc<AtomicUsize>)>,
    /// Sent with every request (e.g. the cache opt-out).
    header: Option<(&'static str, &'static str)>,
}

impl Target {
    fn chat(client: &reqwest::Client, base: &str) -> Target {
        let body = json!({
            "model": "bench",
            "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
            "max_tokens": 16
        });
        Target {
            client: client.clone(),
            url: format!("{base}/v1/chat/completions"),
            body: bytes::Bytes::from(body.to_string()),
            unique: None,
            header: None,
        }
    }

    /// A chat call of `model`; `unique` numbers every prompt (cache misses), `no_cache` opts out.
    fn chat_model(
        client: &reqwest::Client,
        base: &str,
        model: &str,
        unique: bool,
        no_cache: bool,
    ) -> Target {
        let mut t = Target::chat(client, base);
        let body = json!({
            "model": model,
            "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
            "max_tokens": 16
        });
        t.body = bytes::Bytes::from(body.to_string());
        t.unique = unique.then(|| (model.to_string(), Arc::new(AtomicUsize::new(0))));
        t.header = no_cache.then_some(("x-openclaw-cache", "off"));
        t
    }

    fn task(client: &reqwest::Client, base: &str) -> Target {
        let body = json!({"input": "Say hello to the benchmark.", "max_tokens": 16});
        Target {
            client: client.clone(),
            url: format!("{base}/api/tasks"),
            body: bytes::Bytes::from(body.to_string()),
            unique: None,
            header: None,
        }
    }

    /// Send once and read the whole answer; `Ok` only for a 2xx.
    async fn send(&self) -> anyhow::Result<bytes::Bytes> {
        let body = match &self.unique {
            Some((model, n)) => {
                let i = n.fetch_add(1, Ordering::Relaxed);
                bytes::Bytes::from(
                    json!({
                        "model": model,
                        "messages": [{"role": "user", "content": format!("Say hello to the benchmark, #{i}.")}],
                        "max_tokens": 16
                    })
                    .to_string(),
                )
            }
            None => self.body.clone(),
        };
        let mut req = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some((k, v)) = self.header {
            req = req.header(k, v);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        anyhow::ensure!(status.is_success(), "status {status}");
        Ok(body)
    }
}

/// What a phase collected: successful durations (µs), errors, wall time, and the first error.
#[derive(Default)]
struct Samples {
    durations: Vec<u32>,
    errors: usize,
    first_error: Option<String>,
    elapsed: Duration,
    /// Open loop only: how late sends left compared with their schedule (µs).
    send_lag: Vec<u32>,
    /// Task scenario only: ids of accepted tasks.
    ids: Vec<String>,
    capped: bool,
}

impl Samples {
    fn merge(&mut self, other: Samples) {
        self.durations.extend(other.durations);
        self.send_lag.extend(other.send_lag);
        self.ids.extend(other.ids);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.elapsed += other.elapsed;
        self.capped |= other.capped;
    }

    fn error(&mut self, e: anyhow::Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{e:#}"));
        }
    }

    fn summary(&mut self) -> Summary {
        summarize(&mut self.durations, self.errors, self.elapsed)
    }
}

/// Closed loop: `workers` tasks send back-to-back until `total` requests are done or `cap` passes.
async fn closed_loop(
    target: &Target,
    workers: usize,
    total: usize,
    cap: Duration,
    keep_ids: bool,
) -> Samples {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + cap;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let (target, next) = (target.clone(), next.clone());
        set.spawn(async move {
            let mut s = Samples::default();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                if Instant::now() > deadline {
                    s.capped = true;
                    break;
                }
                let t0 = Instant::now();
                match target.send().await {
                    Ok(body) => {
                        s.durations.push(micros(t0.elapsed()));
                        if keep_ids {
                            if let Some(id) = accepted_id(&body) {
                                s.ids.push(id);
                            }
                        }
                    }
                    Err(e) => s.error(e),
                }
            }
            s
        });
    }
    let mut all = Samples::default();
    while let Some(res) = set.join_next().await {
        match res {
            Ok(s) => all.merge(s),
            Err(e) => all.error(e.into()),
        }
    }
    all.elapsed = started.elapsed();
    all
}

fn accepted_id(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("id")?.as_str().map(str::to_string)
}

/// Open loop: requests leave at fixed instants; each is timed from its *scheduled* instant, so
/// a slow server cannot slow the arrivals down and hide its own latency.
async fn open_loop(target: &Target, rate: u32, duration: Duration) -> Samples {
    let n = arrivals(rate, duration);
    let gate = Arc::new(Semaphore::new(OPEN_LOOP_IN_FLIGHT_MAX));
    let started = tokio::time::Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let mut i = 0;
    while i < n {
        let now = tokio::time::Instant::now();
        while i < n && started + due_at(i, rate) <= now {
            let scheduled = started + due_at(i, rate);
            let (target, gate) = (target.clone(), gate.clone());
            set.spawn(async move {
                let _permit = gate.acquire_owned().await;
                let lag = micros(scheduled.elapsed());
                let res = target.send().await;
                (lag, res.map(|_| micros(scheduled.elapsed())))
            });
            i += 1;
        }
        if i < n {
            tokio::time::sleep_until(started + due_at(i, rate)).await;
        }
    }
    let mut all = Samples::default();
    while let Some(res) = set.join_next().await {
        match res {
            Ok((lag, Ok(d))) => {
                all.send_lag.push(lag);
                all.durations.push(d);
            }
            Ok((_, Err(e))) => all.error(e),
            Err(e) => all.error(e.into()),
        }
    }
    all.elapsed = started.elapsed();
    all
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub(super) struct LatencyRow {
    concurrency: usize,
    direct: Summary,
    gateway: Summary,
    added_p50_us: i64,
    added_p99_us: i64,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct SweepRow {
    rate: u32,
    direct: Summary,
    gateway: Summary,
    added_p99_us: i64,
    send_lag_p99_us: u32,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct TaskRow {
    concurrency: usize,
    submitted: usize,
    admission: Summary,
    drain: Drain,
    completed_per_s: f64,
    sample_succeeded: usize,
    sample_other: usize,
}

/// Closed-loop direct vs gateway at each concurrency, alternating in [`ROUNDS`] rounds.
pub(super) async fn scenario_latency(
    fx: &mut Fixture,
    client: &reqwest::Client,
    args: &BenchArgs,
) -> anyhow::Result<Vec<LatencyRow>> {
    let direct = Target::chat(client, &fx.sim_url);
    let gateway = Target::chat(client, &fx.node_url);
    let cap = Duration::from_secs(args.phase_cap_secs);
    let mut rows = Vec::new();
    for &c in &args.concurrency {
        let total = if c <= 1 {
            args.requests / 10
        } else {
            args.requests
        };
        let warm = WARMUP_REQUESTS.max(c);
        closed_loop(&direct, c, warm, cap, false).await;
        closed_loop(&gateway, c, warm, cap, false).await;
        let (mut d, mut g) = (Samples::default(), Samples::default());
        for _ in 0..ROUNDS {
            d.merge(closed_loop(&direct, c, total / ROUNDS, cap, false).await);
            g.merge(closed_loop(&gateway, c, total / ROUNDS, cap, false).await);
        }
        fx.check_alive()?;
        report_problems(&format!("latency c={c} direct"), &d);
        report_problems(&format!("latency c={c} gateway"), &g);
        let (ds, gs) = (d.summary(), g.summary());
        rows.push(LatencyRow {
            concurrency: c,
            direct: ds,
            gateway: gs,
            added_p50_us: added(gs.p50_us, ds.p50_us),
            added_p99_us: added(gs.p99_us, ds.p99_us),
        });
        eprintln!("  latency c={c} done");
    }
    Ok(rows)
}

#[derive(Debug, Serialize)]
pub(super) struct PolicyRow {
    concurrency: usize,
    /// Model `bench`, cache opted out: the plain gateway path.
    plain: Summary,
    /// Model `policy`, a new prompt each time: routing + limiter + budget reserve/settle + cache miss and store.
    policy_miss: Summary,
    /// Model `policy`, the same prompt: answered from the cache.
    cache_hit: Summary,
    added_p50_us: i64,
    added_p99_us: i64,
}

/// The policy path's cost per request, and cache-hit latency, on a node of its own.
pub(super) async fn scenario_policy(
    client: &reqwest::Client,
    args: &BenchArgs,
) -> anyhow::Result<Vec<PolicyRow>> {
    let mut fx = Fixture::start_with(args.sim_latency_ms, policy_config).await?;
    let plain = Target::chat_model(client, &fx.node_url, "bench", false, true);
    let miss = Target::chat_model(client, &fx.node_url, "policy", true, false);
    let hit = Target::chat_model(client, &fx.node_url, "policy", false, false);
    let cap = Duration::from_secs(args.phase_cap_secs);
    let mut rows = Vec::new();
    for &c in &[1usize, 64] {
        let total = if c <= 1 {
            args.requests / 10
        } else {
            args.requests / 2
        };
        let warm = WARMUP_REQUESTS.max(c);
        for t in [&plain, &miss, &hit] {
            closed_loop(t, c, warm, cap, false).await;
        }
        let (mut p, mut m, mut h) = (Samples::default(), Samples::default(), Samples::default());
        for _ in 0..ROUNDS {
            p.merge(closed_loop(&plain, c, total / ROUNDS, cap, false).await);
            m.merge(closed_loop(&miss, c, total / ROUNDS, cap, false).await);
            h.merge(closed_loop(&hit, c, total / ROUNDS, cap, false).await);
        }
        fx.check_alive()?;
        for (name, s) in [("plain", &p), ("policy", &m), ("cache hit", &h)] {
            report_problems(&format!("policy c={c} {name}"), s);
        }
        let (ps, ms_, hs) = (p.summary(), m.summary(), h.summary());
        rows.push(PolicyRow {
            concurrency: c,
            added_p50_us: added(ms_.p50_us, ps.p50_us),
            added_p99_us: added(ms_.p99_us, ps.p99_us),
            plain: ps,
            policy_miss: ms_,
            cache_hit: hs,
        });
        eprintln!("  policy c={c} done");
    }
    Ok(rows)
}

pub(super) fn print_policy(rows: &[PolicyRow]) {
    println!("4. Policy path on POST /v1/chat/completions, closed loop (latencies in ms)");
    println!(
        "{:>5} {:<10} {:>8} {:>8} {:>8} {:>8} {:>9} {:>6}",
        "conc", "path", "p50", "p90", "p99", "max", "req/s", "errors"
    );
    for r in rows {
        println!(
            "{:>5} {:<10} {}",
            r.concurrency,
            "plain",
            summary_cells(&r.plain)
        );
        println!(
            "{:>5} {:<10} {}",
            "",
            "policy",
            summary_cells(&r.policy_miss)
        );
        println!(
            "{:>5} {:<10} {}",
            "",
            "cache hit",
            summary_cells(&r.cache_hit)
        );
        println!(
            "{:>5} {:<10} p50 {}  p99 {}",
            "",
            "policy +",
            signed_ms(r.added_p50_us),
            signed_ms(r.added_p99_us)
        );
    }
    println!("(plain: cache opted out, no limits; policy: routing rules + limiter + budget + cache miss and store;");
    println!(" cache hit: the same prompt answered from the cache, no provider call)");
    println!();
}

/// Open-loop rates, direct then gateway at each rate.
pub(super) async fn scenario_sweep(
    fx: &mut Fixture,
    client: &reqwest::Client,
    args: &BenchArgs,
) -> anyhow::Result<Vec<SweepRow>> {
    let direct = Target::chat(client, &fx.sim_url);
    let gateway = Target::chat(client, &fx.node_url);
    let duration = Duration::from_secs(args.duration_secs.max(1));
    closed_loop(&gateway, 16, WARMUP_REQUESTS, duration, false).await;
    let mut rows = Vec::new();
    for &rate in &args.rates {
        let mut d = open_loop(&direct, rate, duration).await;
        let mut g = open_loop(&gateway, rate, duration).await;
        fx.check_alive()?;
        report_problems(&format!("sweep {rate}/s direct"), &d);
        report_problems(&format!("sweep {rate}/s gateway"), &g);
        let mut lag: Vec<u32> = d.send_lag.iter().chain(&g.send_lag).copied().collect();
        lag.sort_unstable();
        let (ds, gs) = (d.summary(), g.summary());
        rows.push(SweepRow {
            rate,
            direct: ds,
            gateway: gs,
            added_p99_us: added(gs.p99_us, ds.p99_us),
            send_lag_p99_us: percentile(&lag, 99.0),
        });
        eprintln!("  sweep {rate}/s done");
    }
    Ok(rows)
}

/// Durable admission at each concurrency, then the time until the queue is empty.
pub(super) async fn scenario_tasks(
    fx: &mut Fixture,
    client: &reqwest::Client,
    args: &BenchArgs,
) -> anyhow::Result<Vec<TaskRow>> {
    let target = Target::task(client, &fx.node_url);
    let cap = Duration::from_secs(args.phase_cap_secs);
    let total = (args.requests / 4).max(1);
    let mut rows = Vec::new();
    for &c in &args.task_concurrency {
        let started = Instant::now();
        let mut s = closed_loop(&target, c, total, cap, true).await;
        let drain = wait_drained(client, &fx.node_url, DRAIN_TIMEOUT).await?;
        let to_drain = started.elapsed();
        fx.check_alive()?;
        report_problems(&format!("tasks c={c}"), &s);
        let (done, failed) = sample_outcomes(client, &fx.node_url, &s.ids).await;
        let admission = s.summary();
        rows.push(TaskRow {
            concurrency: c,
            submitted: admission.ok,
            admission,
            drain,
            completed_per_s: admission.ok as f64 / to_drain.as_secs_f64().max(1e-9),
            sample_succeeded: done,
            sample_other: failed,
        });
        eprintln!("  tasks c={c} done");
        if drain != Drain::Drained {
            eprintln!(
                "  warning: the node's queue did not drain ({drain:?}); later task phases skipped"
            );
            break;
        }
    }
    Ok(rows)
}

/// Tasks checked after a drain, spread over the submissions.
const OUTCOME_SAMPLE: usize = 50;

/// `(succeeded, failed or other)` among a sample of the accepted tasks.
async fn sample_outcomes(client: &reqwest::Client, node: &str, ids: &[String]) -> (usize, usize) {
    let step = (ids.len() / OUTCOME_SAMPLE).max(1);
    let (mut done, mut other) = (0, 0);
    for id in ids.iter().step_by(step).take(OUTCOME_SAMPLE) {
        let status = async {
            let v: Value = client
                .get(format!("{node}/api/tasks/{id}"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            v.get("status")?.as_str().map(str::to_string)
        }
        .await;
        match status.as_deref() {
            Some("succeeded") => done += 1,
            _ => other += 1,
        }
    }
    (done, other)
}

fn report_problems(phase: &str, s: &Samples) {
    if s.errors > 0 {
        eprintln!(
            "  warning: {phase}: {} errors (first: {})",
            s.errors,
            s.first_error.as_deref().unwrap_or("?")
        );
    }
    if s.capped {
        eprintln!("  warning: {phase}: stopped at the phase cap before all requests were sent");
    }
}

pub(super) fn print_machine(cores: usize, args: &BenchArgs) {
    println!("openclaw-node bench {}", env!("CARGO_PKG_VERSION"));
    println!(
        "machine: {cores} cores (available_parallelism), {} {}; build: {}",
        std::env::consts::OS,
        std::env::consts::ARCH,
        build_profile()
    );
    println!(
        "setup: simulator + node + this load generator share the {cores} cores; \
         sim latency {} ms; compare ratios within one run",
        args.sim_latency_ms
    );
    if cfg!(debug_assertions) {
        println!(
            "WARNING: DEBUG BUILD — these figures say nothing about the gateway; use --release"
        );
    }
    println!();
}

fn ms(us: u32) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

fn signed_ms(us: i64) -> String {
    format!("{:+.3}", us as f64 / 1000.0)
}

fn summary_cells(s: &Summary) -> String {
    format!(
        "{:>8} {:>8} {:>8} {:>8} {:>9.0} {:>6}",
        ms(s.p50_us),
        ms(s.p90_us),
        ms(s.p99_us),
        ms(s.max_us),
        s.throughput_rps,
        s.errors
    )
}

pub(super) fn print_latency(rows: &[LatencyRow]) {
    println!("1. Added latency, POST /v1/chat/completions, closed loop (latencies in ms)");
    println!(
        "{:>5} {:<8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>6}",
        "conc", "target", "p50", "p90", "p99", "max", "req/s", "errors"
    );
    for r in rows {
        println!(
            "{:>5} {:<8} {}",
            r.concurrency,
            "direct",
            summary_cells(&r.direct)
        );
        println!("{:>5} {:<8} {}", "", "gateway", summary_cells(&r.gateway));
        println!(
            "{:>5} {:<8} p50 {}  p99 {}  throughput {:.0}%",
            "",
            "added",
            signed_ms(r.added_p50_us),
            signed_ms(r.added_p99_us),
            100.0 * r.gateway.throughput_rps / r.direct.throughput_rps.max(1e-9)
        );
    }
    println!();
}

pub(super) fn print_sweep(rows: &[SweepRow], duration_secs: u64) {
    println!(
        "2. Open-loop rate sweep, {duration_secs} s per rate and target, latency from the scheduled send (ms)"
    );
    println!(
        "{:>6} {:>9} {:>9} {:>9} {:>9} {:>10} {:>7} {:>9} {:>8}",
        "rate",
        "dir p50",
        "dir p99",
        "gw p50",
        "gw p99",
        "added p99",
        "errors",
        "lag p99",
        "target"
    );
    for r in rows {
        println!(
            "{:>6} {:>9} {:>9} {:>9} {:>9} {:>10} {:>7} {:>9} {:>8}",
            r.rate,
            ms(r.direct.p50_us),
            ms(r.direct.p99_us),
            ms(r.gateway.p50_us),
            ms(r.gateway.p99_us),
            signed_ms(r.added_p99_us),
            r.direct.errors + r.gateway.errors,
            ms(r.send_lag_p99_us),
            if r.added_p99_us < TARGET_ADDED_P99_US {
                "met"
            } else {
                "MISSED"
            }
        );
    }
    let pairs: Vec<(u32, i64)> = rows.iter().map(|r| (r.rate, r.added_p99_us)).collect();
    match highest_meeting_target(&pairs, TARGET_ADDED_P99_US) {
        Some(rate) => println!("highest rate with added p99 < 1 ms: {rate} req/s (target: p99 added < 1 ms at 1 k req/s)"),
        None => println!("no rate had added p99 < 1 ms (target: p99 added < 1 ms at 1 k req/s)"),
    }
    println!("(lag p99: how late the generator itself sent, included in both latencies)");
    println!();
}

pub(super) fn print_tasks(rows: &[TaskRow]) {
    println!("3. Durable task admission, POST /api/tasks (202 after the sled flush; ms)");
    println!(
        "{:>5} {:>7} {:>8} {:>8} {:>8} {:>9} {:>6} {:>12} {:>10}",
        "conc", "tasks", "p50", "p99", "max", "admit/s", "errors", "completed/s", "succeeded"
    );
    for r in rows {
        let completed = match r.drain {
            Drain::Drained => format!("{:.0}", r.completed_per_s),
            Drain::Stalled { .. } => "stalled".to_string(),
            Drain::TimedOut => "not drained".to_string(),
        };
        let sample = format!(
            "{}/{}",
            r.sample_succeeded,
            r.sample_succeeded + r.sample_other
        );
        println!(
            "{:>5} {:>7} {:>8} {:>8} {:>8} {:>9.0} {:>6} {:>12} {:>10}",
            r.concurrency,
            r.submitted,
            ms(r.admission.p50_us),
            ms(r.admission.p99_us),
            ms(r.admission.max_us),
            r.admission.throughput_rps,
            r.admission.errors,
            completed,
            sample
        );
    }
    println!(
        "(completed/s: accepted tasks / time from the first submit until queued = running = 0)"
    );
    println!();
}

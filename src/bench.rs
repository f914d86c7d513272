//! `openclaw-node bench`: a program that drives load at a real gateway and prints figures.
//!
//! It spawns two children of this very binary through the process harness (`openclaw-harness`)
//! — a standalone simulator (`sim-provider`) and a node whose only model, `bench`, is served by
//! that simulator — then generates load from this process and prints tables:
//!
//! 1. `latency`: closed-loop added latency on `POST /v1/chat/completions` at several
//!    concurrencies, direct to the simulator and through the gateway, alternating phases;
//! 2. `sweep`: open-loop fixed arrival rates, latency measured from the *scheduled* send time
//!    (no coordinated omission), direct vs gateway, and the highest rate meeting the SPEC §4
//!    target (p99 added < 1 ms);
//! 3. `tasks`: durable `POST /api/tasks` admission (202 only after the sled flush) and the
//!    end-to-end completion rate;
//! 4. `policy`: the policy path (routing, limiter, budget, cache) and cache hits;
//! 5. `cluster` (by name only, not in `all`): three nodes — see `bench_cluster`;
//! 6. `soak` (by name only): constant task and chat load for `--minutes`, sampling the node's
//!    RSS, descriptors, threads, queue depth, p99 latency and log bytes every
//!    [`SOAK_SAMPLE_EVERY`], then the growth per hour — see [`scenario_soak`].
//!
//! The node children log at the default level (`info`), as an operator runs them: a defect that
//! grows with work (spans, log lines) must show up here, not hide behind `RUST_LOG=warn`.
//!
//! The children and the load generator share the machine's cores; the figures are ratios
//! measured in one run, never absolute truths. Nothing here is a test: tests never time things.
//! Invariant: the bench talks to the node only over HTTP, like any client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::ValueEnum;
use openclaw_harness::{Node, NodeSpec, Sim, SimSpec};
use openclaw_proto::api::QueueView;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

const EXAMPLES: &str = "\
Spawns a simulator and a node (children of this binary), drives load from this process and
prints tables: added latency on /v1/chat/completions (closed loop), an open-loop rate sweep,
durable task admission, and the policy path (routing + rate limiter + cache lookup) with
cache-hit latency. Build in release first; a debug build measures nothing useful.

Examples:
  cargo build --release && ./target/release/openclaw-node bench
  ./target/release/openclaw-node bench --scenario latency --requests 5000
  ./target/release/openclaw-node bench --scenario sweep --duration-secs 3 --rates 500,1000
  ./target/release/openclaw-node bench --scenario tasks --json
  ./target/release/openclaw-node bench --scenario policy --requests 5000
  ./target/release/openclaw-node bench --scenario cluster --duration-secs 10 --failovers 3
  ./target/release/openclaw-node bench --scenario soak --minutes 30 --task-rate 200 --chat-rate 200";

/// Which part of the benchmark to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    All,
    Latency,
    Sweep,
    Tasks,
    Policy,
    /// Three nodes through the chaos harness: commit throughput, leader and owner failover, and
    /// the cluster port's HTTP round trip (`bench_cluster`). Not part of `all`.
    Cluster,
    /// Constant task + chat load for `--minutes`, sampling RSS, fds, threads, queue depth, p99
    /// and log bytes (`scenario_soak`). Not part of `all`.
    Soak,
}

/// Options of `openclaw-node bench`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_long_help = EXAMPLES)]
pub struct BenchArgs {
    /// Which scenario to run.
    #[arg(long, value_enum, default_value = "all")]
    pub scenario: Scenario,
    /// Scale: requests per closed-loop phase at concurrency >= 16 (concurrency 1 runs a tenth,
    /// the task scenario a quarter).
    #[arg(long, default_value_t = 20_000)]
    pub requests: usize,
    /// Latency the simulator adds to every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub sim_latency_ms: u64,
    /// Seconds each rate of the open-loop sweep runs (per target: direct, then gateway).
    #[arg(long, default_value_t = 5)]
    pub duration_secs: u64,
    /// Arrival rates of the sweep, requests per second.
    #[arg(long, value_delimiter = ',', default_value = "250,500,1000,1500,2000")]
    pub rates: Vec<u32>,
    /// Concurrencies of the closed-loop latency scenario.
    #[arg(long, value_delimiter = ',', default_value = "1,64,256")]
    pub concurrency: Vec<usize>,
    /// Concurrencies of the task-admission scenario.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub task_concurrency: Vec<usize>,
    /// Longest any one phase may run, in seconds (it stops early and says so).
    #[arg(long, default_value_t = 60)]
    pub phase_cap_secs: u64,
    /// Submitters in flight in the cluster scenario's commit-throughput phases (each runs
    /// --duration-secs).
    #[arg(long, value_delimiter = ',', default_value = "64,256")]
    pub cluster_concurrency: Vec<usize>,
    /// Kills in each failover phase of the cluster scenario (leader kills, then owner kills).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
    pub failovers: u64,
    /// Soak: how long the constant load runs, in minutes (fractions allowed).
    #[arg(long, default_value_t = 30.0)]
    pub minutes: f64,
    /// Soak: tasks submitted per second (open loop).
    #[arg(long, default_value_t = 200)]
    pub task_rate: u32,
    /// Soak: chat completions per second (open loop).
    #[arg(long, default_value_t = 200)]
    pub chat_rate: u32,
    /// Soak: seconds between two samples.
    #[arg(long, default_value_t = SOAK_SAMPLE_EVERY.as_secs())]
    pub sample_secs: u64,
    /// Also print the results as one JSON document at the end.
    #[arg(long)]
    pub json: bool,
}

/// In-flight requests the open-loop generator allows before sends wait (still timed from the
/// scheduled instant).
pub const OPEN_LOOP_IN_FLIGHT_MAX: usize = 512;
/// Requests of the closed-loop warm-up, per target and concurrency (at least one per worker).
pub const WARMUP_REQUESTS: usize = 500;
/// Longest wait for a child to answer its health route.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the task queue to drain after the submissions.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
/// The drain wait gives up when the queue has not moved for this long (the node is stuck).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a single request may take before it counts as an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections kept per host by the load generator.
pub const CLIENT_POOL_MAX: usize = 2048;
/// The SPEC §4 target on added p99, in microseconds.
pub const TARGET_ADDED_P99_US: i64 = 1_000;
/// Closed-loop phases alternate direct/gateway this many times (each with its share of requests).
pub const ROUNDS: usize = 2;
/// Soak: the default time between two samples.
pub const SOAK_SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Soak: samples before this share of the run are warm-up (caches filling) and left out of the
/// growth figures.
pub const SOAK_WARMUP_SHARE: f64 = 0.2;
/// Soak goals (issue 8): RSS flat within 10 % after warm-up, and under 300 log bytes per task.
pub const SOAK_RSS_GROWTH_GOAL: f64 = 0.10;
pub const SOAK_LOG_BYTES_PER_TASK_GOAL: f64 = 300.0;

// ---------------------------------------------------------------------------------------------
// Pure helpers: percentiles, summaries, the open-loop schedule
// ---------------------------------------------------------------------------------------------

/// Nearest-rank percentile of an ascending slice (`p` in 0..=100); 0 for an empty slice.
pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Latency distribution and throughput of one phase; durations in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    pub ok: usize,
    pub errors: usize,
    pub p50_us: u32,
    pub p90_us: u32,
    pub p99_us: u32,
    pub max_us: u32,
    pub elapsed_s: f64,
    pub throughput_rps: f64,
}

/// Summarise successful durations (sorted in place) of a phase that took `elapsed`.
pub fn summarize(durations: &mut [u32], errors: usize, elapsed: Duration) -> Summary {
    durations.sort_unstable();
    let secs = elapsed.as_secs_f64();
    Summary {
        ok: durations.len(),
        errors,
        p50_us: percentile(durations, 50.0),
        p90_us: percentile(durations, 90.0),
        p99_us: percentile(durations, 99.0),
        max_us: durations.last().copied().unwrap_or(0),
        elapsed_s: secs,
        throughput_rps: if secs > 0.0 {
            durations.len() as f64 / secs
        } else {
            0.0
        },
    }
}

/// Requests an open-loop phase sends at `rate` per second for `duration`.
pub fn arrivals(rate: u32, duration: Duration) -> usize {
    (rate as f64 * duration.as_secs_f64()).round() as usize
}

/// When the `i`-th request of an open loop at `rate` per second is due, from the start.
pub fn due_at(i: usize, rate: u32) -> Duration {
    if rate == 0 {
        return Duration::MAX;
    }
    Duration::from_nanos((i as u128 * 1_000_000_000 / rate as u128) as u64)
}

/// Gateway minus direct, in microseconds (negative when the gateway phase happened to be faster).
pub fn added(gateway_us: u32, direct_us: u32) -> i64 {
    gateway_us as i64 - direct_us as i64
}

/// The highest rate whose added p99 is under the target, given `(rate, added_p99_us)` rows.
pub fn highest_meeting_target(rows: &[(u32, i64)], target_us: i64) -> Option<u32> {
    rows.iter()
        .filter(|(_, a)| *a < target_us)
        .map(|(r, _)| *r)
        .max()
}

/// Microseconds of a duration, saturating at `u32::MAX` (~71 minutes).
pub(crate) fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

// ---------------------------------------------------------------------------------------------
// The children: a simulator and a node (the process harness), killed when dropped
// ---------------------------------------------------------------------------------------------

/// A scratch directory removed on drop.
pub(crate) struct ScratchDir(pub(crate) PathBuf);

impl ScratchDir {
    pub(crate) fn create() -> anyhow::Result<ScratchDir> {
        let dir = std::env::temp_dir().join(format!(
            "openclaw-bench-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A simulator (`--latency-ms sim_latency_ms`) and one node on `config(simulator address)`,
/// children of this binary through the process harness, in `dir`: the node at its default log
/// level (no `RUST_LOG`), config `<dir>/<name>.json`, logs `<dir>/sim.log` and `<dir>/node.log`.
/// Both are ready (`/health`, `/ready`) when this returns.
pub(crate) async fn start_children(
    dir: &Path,
    name: &str,
    sim_latency_ms: u64,
    config: fn(SocketAddr) -> Value,
) -> anyhow::Result<(Sim, Node)> {
    let bin = std::env::current_exe().context("locating this executable")?;
    let mut sim_spec = SimSpec::new(&bin, dir.join("sim.log"))
        .args(&["--latency-ms".to_string(), sim_latency_ms.to_string()]);
    sim_spec.start_timeout = READY_TIMEOUT;
    let sim = Sim::start(sim_spec)
        .await
        .context("starting the simulator child")?;
    let mut spec = NodeSpec::standalone(&bin, dir.join("data"));
    spec.config_path = dir.join(format!("{name}.json"));
    spec.log_path = dir.join("node.log");
    spec.rust_log = None;
    spec.start_timeout = READY_TIMEOUT;
    let mut node = Node::new(spec, 0)?;
    node.write_config(&config(sim.addr()))?;
    node.start(None).await.context("starting the node child")?;
    Ok((sim, node))
}

/// The node's config: one model `bench` on the simulator, no retries, room for everything.
/// The policy scenario's node: model `bench` as plain, model `policy` behind a per-model rate
/// limiter (limits far above the load, so it never waits: this measures its cost, not its
/// effect), a few routing rules that do not match, the request cache on, and a budget far above
/// the load (every call reserves and settles).
fn policy_config(sim: SocketAddr) -> Value {
    let mut cfg = node_config(sim);
    cfg["models"]["policy"] = cfg["models"]["bench"].clone();
    cfg["rate_limiting"] = json!({"per_model": {"policy": {
        "requests_per_minute": 100_000_000u64,
        "tokens_per_minute": 1_000_000_000_000u64,
        "concurrent_requests": 100_000
    }}});
    cfg["model_routing"]["rules"] = json!([
        {"name": "code", "condition": {"task_type": ["code_generation"], "estimated_complexity": "high"}, "model": "bench"},
        {"name": "zh", "condition": {"language": "zh", "task_type": ["writing"]}, "model": "bench"},
        {"name": "long", "condition": {"input_tokens_gt": 50000}, "model": "bench"}
    ]);
    cfg["cache"] =
        json!({"request_cache": {"enabled": true, "ttl_seconds": 3600, "max_size_mb": 64}});
    // A budget far above the load: every call reserves and settles, none is refused.
    cfg["budget"] = json!({"enabled": true, "period": "monthly",
        "limits": {"total_tokens": 1_000_000_000_000u64, "total_cost_usd": 1_000_000_000.0}});
    cfg
}

pub(crate) fn node_config(sim: SocketAddr) -> Value {
    json!({
        "server": {"workers": 64, "queue_max": 1_000_000, "max_in_flight_requests": 100_000},
        "models_mode": "replace",
        "models": {"bench": {
            "provider": "sim",
            "base_url": format!("http://{sim}/v1"),
            "price": {"input": 0.15, "output": 0.6}
        }},
        "model_routing": {"default_model": "bench"},
        "model_fallback": {"primary": "bench", "fallback_chain": [], "max_retries": 0}
    })
}

/// The running children and where they listen.
struct Fixture {
    sim: Sim,
    node: Node,
    sim_url: String,
    node_url: String,
    _dir: ScratchDir,
}

impl Fixture {
    async fn start(sim_latency_ms: u64) -> anyhow::Result<Fixture> {
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
struct LatencyRow {
    concurrency: usize,
    direct: Summary,
    gateway: Summary,
    added_p50_us: i64,
    added_p99_us: i64,
}

#[derive(Debug, Clone, Serialize)]
struct SweepRow {
    rate: u32,
    direct: Summary,
    gateway: Summary,
    added_p99_us: i64,
    send_lag_p99_us: u32,
}

#[derive(Debug, Clone, Serialize)]
struct TaskRow {
    concurrency: usize,
    submitted: usize,
    admission: Summary,
    drain: Drain,
    completed_per_s: f64,
    sample_succeeded: usize,
    sample_other: usize,
}

/// Closed-loop direct vs gateway at each concurrency, alternating in [`ROUNDS`] rounds.
async fn scenario_latency(
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
struct PolicyRow {
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
async fn scenario_policy(
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

fn print_policy(rows: &[PolicyRow]) {
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
async fn scenario_sweep(
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
async fn scenario_tasks(
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

/// How a wait for an empty queue ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Drain {
    Drained,
    /// Nothing queued or running changed for [`STALL_TIMEOUT`].
    Stalled {
        queued: u64,
        running: u64,
    },
    TimedOut,
}

/// Poll `GET /api/queue` until nothing is queued or running, the queue stops moving, or
/// `timeout` passes.
pub(crate) async fn wait_drained(
    client: &reqwest::Client,
    node: &str,
    timeout: Duration,
) -> anyhow::Result<Drain> {
    let deadline = Instant::now() + timeout;
    let url = format!("{node}/api/queue");
    let mut last = (u64::MAX, u64::MAX);
    let mut moved_at = Instant::now();
    while Instant::now() < deadline {
        let q: QueueView = client
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
            .context("reading GET /api/queue")?;
        if q.queued == 0 && q.running == 0 {
            return Ok(Drain::Drained);
        }
        if (q.queued, q.running) != last {
            last = (q.queued, q.running);
            moved_at = Instant::now();
        } else if moved_at.elapsed() > STALL_TIMEOUT {
            return Ok(Drain::Stalled {
                queued: q.queued,
                running: q.running,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Drain::TimedOut)
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

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

pub(crate) fn build_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

fn print_machine(cores: usize, args: &BenchArgs) {
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

fn print_latency(rows: &[LatencyRow]) {
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

fn print_sweep(rows: &[SweepRow], duration_secs: u64) {
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

fn print_tasks(rows: &[TaskRow]) {
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

// ---------------------------------------------------------------------------------------------
// Entry point
// ---------------------------------------------------------------------------------------------

pub(crate) fn load_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENT_POOL_MAX)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("building the load generator's HTTP client")
}

/// Run the benchmark; returns the exit code.
pub async fn run(args: BenchArgs) -> anyhow::Result<i32> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    print_machine(cores, &args);
    let client = load_client()?;
    // `all` is the single-node scenarios; the cluster one is asked for by name.
    let wants = |s: Scenario| {
        args.scenario == s
            || (args.scenario == Scenario::All && !matches!(s, Scenario::Cluster | Scenario::Soak))
    };
    // The latency, sweep and task scenarios share one node; the policy scenario starts its own.
    let mut fx = if wants(Scenario::Latency) || wants(Scenario::Sweep) || wants(Scenario::Tasks) {
        Some(Fixture::start(args.sim_latency_ms).await?)
    } else {
        None
    };
    let mut out = json!({
        "cores": cores,
        "profile": build_profile(),
        "sim_latency_ms": args.sim_latency_ms,
    });
    if wants(Scenario::Latency) {
        let Some(fx) = fx.as_mut() else {
            anyhow::bail!("no node fixture");
        };
        let rows = scenario_latency(fx, &client, &args).await?;
        print_latency(&rows);
        out["latency"] = serde_json::to_value(&rows)?;
    }
    if wants(Scenario::Sweep) {
        let Some(fx) = fx.as_mut() else {
            anyhow::bail!("no node fixture");
        };
        let rows = scenario_sweep(fx, &client, &args).await?;
        print_sweep(&rows, args.duration_secs);
        out["sweep"] = serde_json::to_value(&rows)?;
    }
    if wants(Scenario::Tasks) {
        let Some(fx) = fx.as_mut() else {
            anyhow::bail!("no node fixture");
        };
        let rows = scenario_tasks(fx, &client, &args).await?;
        print_tasks(&rows);
        out["tasks"] = serde_json::to_value(&rows)?;
    }
    drop(fx);
    if wants(Scenario::Policy) {
        let rows = scenario_policy(&client, &args).await?;
        print_policy(&rows);
        out["policy"] = serde_json::to_value(&rows)?;
    }
    if wants(Scenario::Soak) {
        let report = crate::bench_soak::run(&client, &args).await?;
        crate::bench_soak::print(&report);
        out["soak"] = serde_json::to_value(&report)?;
    }
    if wants(Scenario::Cluster) {
        let report = crate::bench_cluster::run(&args, cores).await?;
        crate::bench_cluster::print(&report);
        out["cluster"] = serde_json::to_value(&report)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        let cases = [
            (50.0, 50),
            (90.0, 90),
            (99.0, 99),
            (100.0, 100),
            (0.0, 1),
            (0.5, 1),
        ];
        for (p, want) in cases {
            assert_eq!(percentile(&v, p), want, "p{p}");
        }
        assert_eq!(percentile(&[], 99.0), 0);
        assert_eq!(percentile(&[7], 50.0), 7);
        assert_eq!(percentile(&[1, 2, 3], 99.0), 3);
    }

    #[test]
    fn summaries_sort_and_rate() {
        let mut d = vec![30, 10, 20, 40];
        let s = summarize(&mut d, 1, Duration::from_secs(2));
        assert_eq!(
            (s.ok, s.errors, s.p50_us, s.p99_us, s.max_us),
            (4, 1, 20, 40, 40)
        );
        assert_eq!(s.throughput_rps, 2.0);
        let empty = summarize(&mut [], 0, Duration::ZERO);
        assert_eq!((empty.ok, empty.max_us, empty.throughput_rps), (0, 0, 0.0));
    }

    #[test]
    fn the_schedule_is_evenly_spaced() {
        let cases = [
            (0, 1000, Duration::ZERO),
            (1, 1000, Duration::from_millis(1)),
            (3, 2000, Duration::from_micros(1500)),
            (250, 250, Duration::from_secs(1)),
            (1, 3, Duration::from_nanos(333_333_333)),
            (5, 0, Duration::MAX),
        ];
        for (i, rate, want) in cases {
            assert_eq!(due_at(i, rate), want, "i={i} rate={rate}");
        }
        assert_eq!(arrivals(1000, Duration::from_secs(5)), 5000);
        assert_eq!(arrivals(250, Duration::from_millis(1500)), 375);
        assert_eq!(arrivals(0, Duration::from_secs(5)), 0);
    }

    #[test]
    fn the_target_is_read_from_the_rows() {
        let rows = [
            (250, 300),
            (500, 400),
            (1000, 999),
            (1500, 1000),
            (2000, 5000),
        ];
        assert_eq!(highest_meeting_target(&rows, 1000), Some(1000));
        assert_eq!(highest_meeting_target(&[(250, 1500)], 1000), None);
        // A noisy low rate that misses does not hide a higher one that meets.
        assert_eq!(
            highest_meeting_target(&[(250, 1200), (500, 200)], 1000),
            Some(500)
        );
        assert_eq!(added(1200, 1500), -300);
    }

    #[test]
    fn micros_saturate() {
        assert_eq!(micros(Duration::from_millis(2)), 2000);
        assert_eq!(micros(Duration::from_secs(1 << 40)), u32::MAX);
    }

    #[test]
    fn the_node_config_is_valid() {
        let sim: SocketAddr = "127.0.0.1:9".parse().expect("literal address");
        let cfg: openclaw_server::config::Config =
            serde_json::from_value(node_config(sim)).expect("the bench config deserializes");
        let cfg = cfg.validate().expect("the bench config validates");
        assert_eq!(cfg.model_fallback.max_retries, 0);
        assert_eq!(cfg.models.len(), 1);
    }
}

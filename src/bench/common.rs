//! What every bench scenario shares: the command's options ([`BenchArgs`]), the named bounds and
//! goals, the pure statistics (percentiles, summaries, the open-loop schedule), the children (a
//! simulator and a node through the process harness), the queue-drain wait and the load
//! generator's HTTP client. Imports nothing else of `bench`, so the scenarios never form a circle.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::ValueEnum;
use openclaw_harness::{Node, NodeSpec, Sim, SimSpec};
use openclaw_proto::api::QueueView;
use serde::Serialize;
use serde_json::{json, Value};

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
  ./target/release/openclaw-node bench --scenario soak --minutes 30 --task-rate 200 --chat-rate 200
  ./target/release/openclaw-node bench --scenario retention --retained 10000,100000,1000000
  ./target/release/openclaw-node bench --scenario context --sessions 20 --turns 40
  ./target/release/openclaw-node bench --scenario semantic-cache
  ./target/release/openclaw-node bench --scenario semantic-cache \
      --embeddings-url http://localhost:11434/v1 --embedding-model nomic-embed-text";

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
    /// the cluster port's HTTP round trip (`bench::cluster`). Not part of `all`.
    Cluster,
    /// Constant task + chat load for `--minutes`, sampling RSS, fds, threads, queue depth, p99
    /// and log bytes (`bench::soak`). Not part of `all`.
    Soak,
    /// Three nodes filled with `--retained` finished tasks: RSS, snapshot size, old-task GET
    /// latency, and a fourth node's catch-up (`bench::retention`). Not part of `all`.
    Retention,
    /// `--sessions` × `--turns` conversation turns with context management off, then on (the
    /// chapter's §18.3 config): tokens, cost, summary calls, turn latency (`bench::context`).
    /// Not part of `all`.
    Context,
    /// The knowledge cache: index build time for 100 and 1,000 memory files, memory tokens per
    /// prompt with and without retrieval (`bench::knowledge`). Not part of `all`.
    Knowledge,
    /// The semantic request cache: precision/recall on the labelled pairs at the threshold and
    /// a sweep, and the vector index's insert/lookup latency at 10k and 100k entries
    /// (`bench::semantic`). Not part of `all`.
    #[value(name = "semantic-cache")]
    #[serde(rename = "semantic-cache")]
    SemanticCache,
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
    /// Cluster scenario: the nodes' cluster port and mesh use mutual TLS (certificates made
    /// like `cluster gen-certs`), to measure what TLS costs against a run without it.
    #[arg(long)]
    pub cluster_tls: bool,
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
    /// Retention: finished tasks kept at each step (cumulative), e.g. `10000,100000`.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    pub retained: Vec<u64>,
    /// Soak: the node's `server.tasks_retained_max` (finished tasks kept); its default when
    /// not given.
    #[arg(long)]
    pub tasks_retained_max: Option<u64>,
    /// Soak and retention: the nodes' `server.store_cache_mb` (sled's page cache); its default
    /// when not given.
    #[arg(long)]
    pub store_cache_mb: Option<u64>,
    /// Context: concurrent sessions.
    #[arg(long, default_value_t = 20)]
    pub sessions: usize,
    /// Context: turns per session (one after another).
    #[arg(long, default_value_t = 40)]
    pub turns: usize,
    /// Also print the results as one JSON document at the end.
    /// semantic-cache: the labelled pairs (JSON lines `{"a","b","paraphrase"}`); default the
    /// repository's `bench/semantic_pairs.jsonl`.
    #[arg(long)]
    pub pairs: Option<PathBuf>,
    /// semantic-cache: an OpenAI-compatible base URL (`…/v1`) to embed with instead of the
    /// simulator's lexical embeddings (`OPENAI_API_KEY` is sent if set).
    #[arg(long)]
    pub embeddings_url: Option<String>,
    /// semantic-cache: the model asked of `--embeddings-url`.
    #[arg(long, default_value = "text-embedding-3-small")]
    pub embedding_model: String,
    /// semantic-cache: the threshold reported first (default: `similarity_threshold`'s default).
    #[arg(long)]
    pub threshold: Option<f32>,
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
/// Soak: the store's page cache is warm once the store on disk holds this many times
/// `server.store_cache_mb`; samples before that are warm-up too. Until then sled keeps what is
/// written in memory, so RSS follows the data kept up to about twice the cache setting
/// (`server/examples/store_rss.rs` in BENCHMARKS.md: flat after that, up to 1 M tasks).
pub const SOAK_STORE_WARM_FACTOR: u64 = 3;
/// The node's default `server.store_cache_mb`.
pub const SOAK_STORE_CACHE_MB_DEFAULT: u64 = 16;
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
    config: impl FnOnce(SocketAddr) -> Value,
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

/// Submit `body` as a task at `base` and long-poll it until it is final (at most `timeout`);
/// its view.
pub(crate) async fn task_final(
    client: &reqwest::Client,
    base: &str,
    body: &Value,
    timeout: Duration,
) -> anyhow::Result<Value> {
    let r: Value = client
        .post(format!("{base}/api/tasks"))
        .json(body)
        .send()
        .await?
        .json()
        .await?;
    let id = r["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no task id: {r}"))?
        .to_string();
    let deadline = Instant::now() + timeout;
    loop {
        let v: Value = client
            .get(format!("{base}/api/tasks/{id}?wait=5"))
            .send()
            .await?
            .json()
            .await?;
        let st = v["status"].as_str().unwrap_or("");
        if matches!(st, "succeeded" | "failed" | "cancelled") {
            return Ok(v);
        }
        if Instant::now() > deadline {
            anyhow::bail!("task {id} did not finish: {v}");
        }
    }
}

/// The node's config: one model `bench` on the simulator, no retries, room for everything.
/// The policy scenario's node: model `bench` as plain, model `policy` behind a per-model rate
/// limiter (limits far above the load, so it never waits: this measures its cost, not its
/// effect), a few routing rules that do not match, the request cache on, and a budget far above
/// the load (every call reserves and settles).
pub(crate) fn policy_config(sim: SocketAddr) -> Value {
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

pub(crate) fn build_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

pub(crate) fn load_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENT_POOL_MAX)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("building the load generator's HTTP client")
}

/// The value of the first sample of `series` (a metric name with its labels, exactly as
/// Prometheus's text format writes them, e.g. `openclaw_process_heap_bytes{kind="allocated"}`)
/// in a `/metrics` body.
pub fn metric_sample(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// Linux's `USER_HZ`: the unit of the CPU times in `/proc/<pid>/stat` (100 on every Linux ABI
/// this runs on; the kernel converts to it whatever its internal tick).
const USER_HZ: u64 = 100;

/// User + system CPU time in ms from the text of `/proc/<pid>/stat` (all threads). The command
/// name (field 2) may hold spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_proc_stat_cpu_ms(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // Fields 3.. of the file: state is first, utime is field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) * 1000 / USER_HZ)
}

/// CPU time a process has used so far, in ms (`None` when it is gone).
pub fn cpu_ms(pid: u32) -> Option<u64> {
    parse_proc_stat_cpu_ms(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_samples_are_found_by_name_and_labels() {
        let body = "# HELP x y\nopenclaw_process_heap_bytes{kind=\"allocated\"} 1048576\n\
                    openclaw_process_heap_bytes{kind=\"resident\"} 2097152\n\
                    openclaw_queue_depth_total 3\n";
        // (name, series, want)
        let cases = [
            (
                "first",
                r#"openclaw_process_heap_bytes{kind="allocated"}"#,
                Some(1_048_576.0),
            ),
            (
                "second",
                r#"openclaw_process_heap_bytes{kind="resident"}"#,
                Some(2_097_152.0),
            ),
            ("prefix of another name", "openclaw_queue_depth", None),
            (
                "absent",
                r#"openclaw_process_heap_bytes{kind="retained"}"#,
                None,
            ),
        ];
        for (name, series, want) in cases {
            assert_eq!(metric_sample(body, series), want, "{name}");
        }
    }

    #[test]
    fn cpu_time_is_read_after_the_command_name() {
        let line = |comm: &str| {
            format!("4242 ({comm}) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 566 0 0 20 0 9 0 77 0")
        };
        // (name, text, want ms)
        let cases = [
            ("plain name", line("openclaw-node"), Some(18_000)),
            ("spaces and parens", line("a (b) c"), Some(18_000)),
            ("truncated", "4242 (x) S 1 2 3".to_string(), None),
            ("no name", "garbage".to_string(), None),
        ];
        for (name, text, want) in cases {
            assert_eq!(parse_proc_stat_cpu_ms(&text), want, "{name}");
        }
    }

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

//! `openclaw-node bench --scenario cluster`: three real nodes (through the process harness, with
//! this binary as the node and the simulator) and four figures.
//!
//! a. **Commit throughput.** Closed loops of `--cluster-concurrency` submitters POST
//!    `/api/tasks` round-robin to the three nodes for `--duration-secs`; a 202 means the task was
//!    committed by Raft (followers forward to the leader). Every task asks the simulator for a
//!    10-minute answer and each node has one worker, so workers never compete with admission:
//!    tasks pile up and only commits are measured. Latency is split by the node asked (leader or
//!    follower, i.e. with or without the forwarding hop). Its own cluster, dropped afterwards.
//! b. **Leader failover.** Eight submitters write continuously to the two followers; the
//!    leader is SIGKILLed; the figure is the time from the SIGKILL to the first 202 of a request
//!    sent after it, plus when the survivors were seen to name a new leader. Repeated
//!    `--failovers` times, restarting the killed node in between.
//! c. **Owner failover.** Six `[sim:slow:5000]` tasks (4 workers per node, so the survivors have
//!    free workers and the figure is the failover, not a wait for a worker); a follower running
//!    some of them is SIGKILLed; for each of its tasks, the time until another node runs it
//!    (`GET /api/tasks/{id}`: `running` with a different `node`) and until it succeeds.
//! d. **Transport.** Sequential keep-alive HTTP round trips on a node's cluster port
//!    (`GET /cluster/ping` with the cluster secret and a 200-byte header, from the next node's
//!    address), to compare with the actor mesh's `mesh_call_rtt` (run by `cargo test`).
//!
//! With `--cluster-tls` every cluster of the scenario runs with `cluster.tls` (a CA and node
//! certificates generated into a temp dir, as `cluster gen-certs` does) and the transport probe
//! speaks HTTPS with a node certificate: the figures against a run without it are TLS's cost.
//!
//! Every wait has a deadline; the harness kills every process when a cluster is dropped, on
//! error too. Invariant: like `bench`, this talks to nodes only over HTTP and signals.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use openclaw_harness::{Cluster, ClusterSpec};
use serde::Serialize;
use serde_json::{json, Value};

use super::common::{cpu_ms, micros, percentile, summarize, BenchArgs, Summary};

/// Nodes in every cluster of this scenario.
pub const NODES: usize = 3;
/// Warm-up before the throughput phases.
pub const WARMUP: Duration = Duration::from_secs(1);
/// Deadline of one submit in the throughput phases: longer than a node takes to answer one
/// whose commit outcome is unknown (`cluster::outcome::RESOLVE_WITHIN` plus two proposer
/// deadlines, about 13 s at the defaults), so the node's answer is what is counted.
pub const SUBMIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Submitters writing through a leader failover.
pub const FAILOVER_SUBMITTERS: usize = 8;
/// Deadline of one submit during a failover (short, so a stuck request is replaced soon).
pub const FAILOVER_SUBMIT_TIMEOUT: Duration = Duration::from_secs(1);
/// Continuous writing before the kill.
pub const BEFORE_KILL: Duration = Duration::from_millis(500);
/// Longest wait for writes to resume / a new leader / a task to move.
pub const FAILOVER_WAIT_MAX: Duration = Duration::from_secs(30);
/// Longest wait for the cluster to agree after a (re)start.
pub const AGREE_WAIT_MAX: Duration = Duration::from_secs(30);
/// Slow tasks per owner-failover round, how slow, and workers per node in that cluster.
pub const SLOW_TASKS: usize = 6;
pub const SLOW_TASK_MS: u64 = 5_000;
pub const FAILOVER_WORKERS: usize = 4;
/// Longest wait for a moved task to succeed.
pub const MOVED_WAIT_MAX: Duration = Duration::from_secs(60);
/// Poll interval while timing a moved task.
pub const TASK_POLL: Duration = Duration::from_millis(50);
/// Round trips of the transport measurement (after `PING_WARMUP`).
pub const PING_CALLS: usize = 1000;
pub const PING_WARMUP: usize = 50;
/// Padding header of each ping, to match the mesh measurement's 200-byte body.
pub const PING_PAD_BYTES: usize = 200;

/// One throughput phase.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputRow {
    pub concurrency: usize,
    /// 202s and their latency (µs) over the phase.
    pub committed: Summary,
    pub busy: usize,
    /// 503 `outcome_unknown` (the task id named; it may exist).
    pub outcome_unknown: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    pub via_leader_p50_us: u32,
    pub via_follower_p50_us: u32,
    /// The Raft term before and after the phase (no fault is injected: a change is an election
    /// under load alone), and the leader after it.
    pub term_before: Option<u64>,
    pub term_after: Option<u64>,
    pub leader_after: Option<u64>,
    /// CPU time each process used during the phase (what the throughput costs, and where).
    pub cpu: Vec<CpuUse>,
}

/// One process's CPU time over a throughput phase.
#[derive(Debug, Clone, Serialize)]
pub struct CpuUse {
    /// `leader`, `follower`, `simulator` or `generator` (this process).
    pub process: String,
    pub cpu_ms: u64,
}

/// CPU time so far of the leader, the followers, the simulator and this process.
fn cpu_sample(c: &Cluster, leader: usize) -> Vec<(String, Option<u64>)> {
    let mut out = Vec::new();
    for (k, node) in c.nodes().iter().enumerate() {
        let role = if k == leader { "leader" } else { "follower" };
        out.push((role.to_string(), node.pid().and_then(cpu_ms)));
    }
    out.push(("simulator".into(), c.sim().pid().and_then(cpu_ms)));
    out.push(("generator".into(), cpu_ms(std::process::id())));
    out
}

fn cpu_used(before: &[(String, Option<u64>)], after: &[(String, Option<u64>)]) -> Vec<CpuUse> {
    before
        .iter()
        .zip(after)
        .filter_map(|((process, b), (_, a))| {
            Some(CpuUse {
                process: process.clone(),
                cpu_ms: a.as_ref()?.saturating_sub((*b)?),
            })
        })
        .collect()
}

/// One leader kill.
#[derive(Debug, Clone, Serialize)]
pub struct LeaderFailover {
    pub round: usize,
    pub killed: usize,
    pub term_before: u64,
    pub term_after: Option<u64>,
    /// SIGKILL → first 202 of a request sent after it.
    pub resumed_ms: Option<f64>,
    /// SIGKILL → the survivors' status first names another leader (polled every 50 ms).
    pub leader_seen_ms: Option<f64>,
    /// Submits sent after the kill that failed before writes resumed.
    pub failed_submits: usize,
}

/// One task of a killed owner.
#[derive(Debug, Clone, Serialize)]
pub struct MovedTask {
    pub round: usize,
    pub killed: usize,
    pub task: String,
    /// SIGKILL → seen `running` on another node.
    pub running_again_ms: Option<f64>,
    /// SIGKILL → seen `succeeded`.
    pub succeeded_ms: Option<f64>,
    pub attempts: u64,
    pub final_node: Option<String>,
    /// `succeeded`, `failed`, or the last status seen when the wait ended.
    pub status: String,
}

/// The cluster port's HTTP round trip.
#[derive(Debug, Clone, Serialize)]
pub struct Transport {
    pub calls: usize,
    pub mean_us: u32,
    pub rtt: Summary,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    pub nodes: usize,
    pub cores: usize,
    pub throughput: Vec<ThroughputRow>,
    /// Tasks the cluster reports after the throughput phases, and the 202s counted (warm-up
    /// included): equal when every acknowledged task is in the state machine.
    pub tasks_in_cluster: u64,
    pub acknowledged_total: usize,
    /// 503 `outcome_unknown` answers (warm-up included): each may or may not be a task, so the
    /// cluster may hold up to this many tasks more than the 202s. Any other refusal (429/503)
    /// must have left nothing.
    pub outcome_unknown_total: usize,
    /// Other 429/503 answers (warm-up included): surely not admitted.
    pub refused_total: usize,
    /// Submits with no HTTP answer (warm-up included): each may be a task.
    pub no_answer_total: usize,
    pub leader_failovers: Vec<LeaderFailover>,
    pub resumed_median_ms: Option<f64>,
    pub moved_tasks: Vec<MovedTask>,
    pub running_again_median_ms: Option<f64>,
    pub running_again_max_ms: Option<f64>,
    pub succeeded_median_ms: Option<f64>,
    pub transport: Option<Transport>,
}

/// Median of some values (the lower middle for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[(v.len() - 1) / 2])
}

fn ms_since(t: Instant, now: Instant) -> f64 {
    now.saturating_duration_since(t).as_secs_f64() * 1000.0
}

fn secret() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Certificates for `--cluster-tls`: node `k` of a cluster uses `node-{k+1}`.
pub struct BenchTls {
    _dir: tempfile::TempDir,
    written: crate::ops::gen_certs::Written,
}

impl BenchTls {
    pub fn generate() -> anyhow::Result<BenchTls> {
        let dir = tempfile::Builder::new()
            .prefix("openclaw-bench-certs-")
            .tempdir()
            .context("a temp dir for the bench's certificates")?;
        let names: Vec<String> = (1..=NODES).map(|i| format!("node-{i}")).collect();
        let ips: Vec<std::net::IpAddr> = (0..NODES)
            .map(|k| std::net::IpAddr::V4(openclaw_harness::cluster::node_ip(k)))
            .collect();
        let written = crate::ops::gen_certs::generate(dir.path(), &names, &ips, false)?;
        Ok(BenchTls { _dir: dir, written })
    }

    /// `cluster.tls` of node directory `k`.
    fn node_config(&self, k: usize) -> Option<Value> {
        let (_, cert, key) = self.written.nodes.get(k)?;
        Some(crate::ops::gen_certs::snippet(&self.written.ca, cert, key))
    }

    /// A client of the cluster port presenting node `k`'s certificate.
    fn client_tls(&self, k: usize) -> anyhow::Result<rustls_client::ClientConfig> {
        let (_, cert, key) = self
            .written
            .nodes
            .get(k)
            .context("no certificate for that node")?;
        let t = openclaw_server::cluster::tls::ClusterTls::load(
            &openclaw_server::config::ClusterTlsConfig {
                cert: cert.display().to_string(),
                key: key.display().to_string(),
                ca: self.written.ca.display().to_string(),
            },
        )?;
        Ok((*t.client).clone())
    }
}

use openclaw_server::cluster::tls::rustls_client;

fn spec(
    workers: usize,
    secret: &str,
    extra: Value,
    tls: Option<&BenchTls>,
) -> anyhow::Result<ClusterSpec> {
    let bin = std::env::current_exe().context("finding this program's path")?;
    let mut s = ClusterSpec::new(bin, NODES);
    if let Some(t) = tls {
        for k in 0..NODES {
            if let Some(v) = t.node_config(k) {
                s.node_config.insert(k, v);
            }
        }
    }
    s.workers = workers;
    s.sim_args = vec!["--latency-ms".into(), "0".into()];
    s.rust_log = "warn".into();
    s.extra_config = extra;
    // Ours, so the transport probe knows it.
    s.secret = Some(secret.into());
    Ok(s)
}

/// Run the scenario.
pub async fn run(args: &BenchArgs, cores: usize) -> anyhow::Result<ClusterReport> {
    let client = super::common::load_client()?;
    let tls = if args.cluster_tls {
        Some(BenchTls::generate()?)
    } else {
        None
    };
    println!(
        "5. Cluster: {NODES} nodes + simulator + this generator on the same {cores} cores; \
         cluster port and mesh: {}",
        if tls.is_some() {
            "mutual TLS (--cluster-tls)"
        } else {
            "plain (loopback)"
        }
    );
    let (throughput, tasks_in_cluster, answered) = throughput(&client, args, tls.as_ref())
        .await
        .context("commit throughput")?;
    print_throughput(&throughput, tasks_in_cluster, &answered);
    let Answered {
        acknowledged: acknowledged_total,
        outcome_unknown: outcome_unknown_total,
        refused: refused_total,
        no_answer: no_answer_total,
    } = answered;

    let secret = secret();
    let mut c = Cluster::start(spec(FAILOVER_WORKERS, &secret, json!({}), tls.as_ref())?)
        .await
        .context("starting the failover cluster")?;
    let rounds = usize::try_from(args.failovers).unwrap_or(1);
    let mut leader_failovers = Vec::new();
    print_leader_header();
    for round in 1..=rounds {
        let f = leader_failover(&mut c, round).await?;
        print_leader_failover_row(&f);
        leader_failovers.push(f);
    }
    let mut moved_tasks = Vec::new();
    print_moved_header();
    for round in 1..=rounds {
        let rows = owner_failover(&mut c, round).await?;
        for r in &rows {
            print_moved_row(r);
        }
        moved_tasks.extend(rows);
    }
    let transport = match transport(&c, &secret, tls.as_ref()).await {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("  warning: transport measurement failed: {e:#}");
            None
        }
    };
    drop(c);

    let resumed: Vec<f64> = leader_failovers
        .iter()
        .filter_map(|f| f.resumed_ms)
        .collect();
    let again: Vec<f64> = moved_tasks
        .iter()
        .filter_map(|t| t.running_again_ms)
        .collect();
    let succeeded: Vec<f64> = moved_tasks.iter().filter_map(|t| t.succeeded_ms).collect();
    Ok(ClusterReport {
        nodes: NODES,
        cores,
        throughput,
        tasks_in_cluster,
        acknowledged_total,
        outcome_unknown_total,
        refused_total,
        no_answer_total,
        resumed_median_ms: median(&resumed),
        leader_failovers,
        running_again_median_ms: median(&again),
        running_again_max_ms: again.iter().copied().reduce(f64::max),
        succeeded_median_ms: median(&succeeded),
        moved_tasks,
        transport,
    })
}

// ---------------------------------------------------------------------------------------------
// a. Commit throughput
// ---------------------------------------------------------------------------------------------

/// What one submitter saw.
#[derive(Default)]
struct Seen {
    /// (node asked, µs) of each 202.
    ok: Vec<(usize, u32)>,
    /// 429/503 answers, `outcome_unknown` ones included.
    busy: usize,
    /// 503 `outcome_unknown`.
    unknown: usize,
    /// Submits that got no HTTP answer (timeout, connection error): they may be tasks.
    no_answer: usize,
    errors: usize,
    first_error: Option<String>,
}

/// What the submitters were answered over all phases (warm-up included).
#[derive(Debug, Default, Clone, Copy)]
struct Answered {
    acknowledged: usize,
    outcome_unknown: usize,
    /// 429/503 other than `outcome_unknown`.
    refused: usize,
    /// No HTTP answer at the generator (its timeout, a connection error).
    no_answer: usize,
}

impl Answered {
    fn add(&mut self, seen: &[Seen]) {
        for s in seen {
            self.acknowledged += s.ok.len();
            self.outcome_unknown += s.unknown;
            self.refused += s.busy - s.unknown;
            self.no_answer += s.no_answer;
        }
    }
}

/// Do the tasks in the cluster square with the answers? Each 202 is one task, each refusal
/// none, each `outcome_unknown` or unanswered submit at most one:
/// `acked ≤ in_cluster ≤ acked + unknown + no answer`.
fn tasks_square(in_cluster: u64, a: &Answered) -> bool {
    let acked = a.acknowledged as u64;
    in_cluster >= acked && in_cluster <= acked + (a.outcome_unknown + a.no_answer) as u64
}

async fn throughput(
    client: &reqwest::Client,
    args: &BenchArgs,
    tls: Option<&BenchTls>,
) -> anyhow::Result<(Vec<ThroughputRow>, u64, Answered)> {
    let extra = json!({
        "server": {"queue_max": 1_000_000, "max_in_flight_requests": 100_000},
        "model_fallback": {"timeout_ms": 3_600_000, "max_retries": 0},
    });
    let c = Cluster::start(spec(1, &secret(), extra, tls)?)
        .await
        .context("starting the throughput cluster")?;
    let leader = c.wait_for_leader(AGREE_WAIT_MAX).await?;
    let urls = Arc::new(c.http_urls());
    let body = bytes::Bytes::from(
        json!({
            "input": "[sim:slow:600000] cluster bench task: held at the simulator",
            "priority": "normal",
            "max_tokens": 16
        })
        .to_string(),
    );
    let duration = Duration::from_secs(args.duration_secs.max(1));
    let first = args.cluster_concurrency.first().copied().unwrap_or(64);
    let warm = closed_loop(client, &urls, &body, first, WARMUP).await;
    let mut answered = Answered::default();
    answered.add(&warm.0);
    let mut rows = Vec::new();
    for &conc in &args.cluster_concurrency {
        let term_before = c.status(leader).await.ok().map(|s| s.term);
        let cpu_before = cpu_sample(&c, leader);
        let (seen, elapsed) = closed_loop(client, &urls, &body, conc.max(1), duration).await;
        let cpu = cpu_used(&cpu_before, &cpu_sample(&c, leader));
        answered.add(&seen);
        let after = c.status(leader).await.ok();
        let mut all: Vec<u32> = Vec::new();
        let (mut via_leader, mut via_follower) = (Vec::new(), Vec::new());
        let (mut busy, mut unknown, mut errors, mut first_error) = (0, 0, 0, None);
        for s in seen {
            for (node, us) in s.ok {
                all.push(us);
                if node == leader {
                    via_leader.push(us);
                } else {
                    via_follower.push(us);
                }
            }
            busy += s.busy;
            unknown += s.unknown;
            errors += s.errors;
            first_error = first_error.or(s.first_error);
        }
        via_leader.sort_unstable();
        via_follower.sort_unstable();
        rows.push(ThroughputRow {
            concurrency: conc,
            committed: summarize(&mut all, errors + busy, elapsed),
            busy,
            outcome_unknown: unknown,
            errors,
            first_error,
            via_leader_p50_us: percentile(&via_leader, 50.0),
            via_follower_p50_us: percentile(&via_follower, 50.0),
            term_before,
            term_after: after.as_ref().map(|s| s.term),
            leader_after: after
                .as_ref()
                .and_then(|s| s.leader.as_deref())
                .and_then(|l| l.parse().ok()),
            cpu,
        });
    }
    // Every 202 must be a task in the replicated state.
    let st = c.status(leader).await?;
    let in_cluster: u64 = st.tasks.values().sum();
    Ok((rows, in_cluster, answered))
}

/// `workers` submitters, round-robin over `urls`, for `duration`.
async fn closed_loop(
    client: &reqwest::Client,
    urls: &Arc<Vec<String>>,
    body: &bytes::Bytes,
    workers: usize,
    duration: Duration,
) -> (Vec<Seen>, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let end = started + duration;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (client, urls, body, next) = (client.clone(), urls.clone(), body.clone(), next.clone());
        set.spawn(async move {
            let mut s = Seen::default();
            while Instant::now() < end {
                let node = next.fetch_add(1, Ordering::Relaxed) % urls.len().max(1);
                let Some(url) = urls.get(node) else { break };
                let t = Instant::now();
                let r = client
                    .post(format!("{url}/api/tasks"))
                    .timeout(SUBMIT_TIMEOUT)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 202 => {
                        let _ = r.bytes().await;
                        s.ok.push((node, micros(t.elapsed())));
                    }
                    Ok(r) if matches!(r.status().as_u16(), 429 | 503) => {
                        s.busy += 1;
                        let body = r.bytes().await.unwrap_or_default();
                        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        if v["error"]["code"] == "outcome_unknown" {
                            s.unknown += 1;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Ok(r) => {
                        s.errors += 1;
                        let st = r.status();
                        let text = r.text().await.unwrap_or_default();
                        s.first_error.get_or_insert(format!("{st} {text}"));
                    }
                    Err(e) => {
                        s.errors += 1;
                        s.no_answer += 1;
                        s.first_error.get_or_insert(e.to_string());
                    }
                }
            }
            s
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(s) = r {
            out.push(s);
        }
    }
    (out, started.elapsed())
}

// ---------------------------------------------------------------------------------------------
// b. Leader failover
// ---------------------------------------------------------------------------------------------

/// One submit during a failover: when it left, when it ended, whether it was a 202.
struct Attempt {
    sent: Instant,
    done: Instant,
    ok: bool,
}

async fn leader_failover(c: &mut Cluster, round: usize) -> anyhow::Result<LeaderFailover> {
    let leader = c.wait_for_leader(AGREE_WAIT_MAX).await?;
    let term_before = c.status(leader).await?.term;
    let survivors: Arc<Vec<String>> = Arc::new(
        (0..c.len())
            .filter(|&i| i != leader)
            .map(|i| c.node(i).http_url())
            .collect(),
    );
    let http = c.http().clone();
    let published: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    let stop = Arc::new(AtomicBool::new(false));
    let hard_end = Instant::now() + BEFORE_KILL + FAILOVER_WAIT_MAX;
    let mut set = tokio::task::JoinSet::new();
    for k in 0..FAILOVER_SUBMITTERS {
        let (http, urls, published, stop) = (
            http.clone(),
            survivors.clone(),
            published.clone(),
            stop.clone(),
        );
        set.spawn(async move {
            let mut log = Vec::new();
            let mut n = k;
            while !stop.load(Ordering::Relaxed) && Instant::now() < hard_end {
                let Some(url) = urls.get(n % urls.len().max(1)) else {
                    break;
                };
                n += 1;
                let sent = Instant::now();
                let r = http
                    .post(format!("{url}/api/tasks"))
                    .timeout(FAILOVER_SUBMIT_TIMEOUT)
                    .json(&json!({"input": format!("failover probe {k}-{n}"), "max_tokens": 8}))
                    .send()
                    .await;
                let ok = matches!(&r, Ok(r) if r.status().as_u16() == 202);
                let done = Instant::now();
                log.push(Attempt { sent, done, ok });
                if ok && published.get().is_some_and(|&p| sent >= p) {
                    stop.store(true, Ordering::Relaxed);
                }
                if !ok {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            log
        });
    }
    tokio::time::sleep(BEFORE_KILL).await;
    let t_kill = Instant::now();
    c.kill(leader)?;
    // Only requests sent after the process is gone count as evidence of a new leader.
    let after = Instant::now();
    let _ = published.set(after);
    let old_id = c.node(leader).id().map(str::to_string);
    let mut leader_seen = None;
    while t_kill.elapsed() < FAILOVER_WAIT_MAX {
        let views = c.statuses().await;
        let seen = views.iter().any(|(_, v)| {
            v.as_ref()
                .and_then(|v| v.believed_leader())
                .is_some_and(|l| Some(l) != old_id.as_deref())
        });
        if seen {
            leader_seen = Some(ms_since(t_kill, Instant::now()));
            break;
        }
        tokio::time::sleep(TASK_POLL).await;
    }
    let mut attempts = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(log) = r {
            attempts.extend(log);
        }
    }
    let first_ok = attempts
        .iter()
        .filter(|a| a.ok && a.sent >= after)
        .map(|a| a.done)
        .min();
    let failed_submits = attempts
        .iter()
        .filter(|a| !a.ok && a.sent >= after && first_ok.is_none_or(|f| a.sent < f))
        .count();
    let term_after = match c.wait_for_leader(AGREE_WAIT_MAX).await {
        Ok(l) => c.status(l).await.ok().map(|s| s.term),
        Err(_) => None,
    };
    c.restart(leader)
        .await
        .with_context(|| format!("restarting node {leader}"))?;
    c.wait_for_leader(AGREE_WAIT_MAX).await?;
    Ok(LeaderFailover {
        round,
        killed: leader,
        term_before,
        term_after,
        resumed_ms: first_ok.map(|d| ms_since(t_kill, d)),
        leader_seen_ms: leader_seen,
        failed_submits,
    })
}

// ---------------------------------------------------------------------------------------------
// c. Owner failover
// ---------------------------------------------------------------------------------------------

async fn task_json(http: &reqwest::Client, urls: &[String], id: &str) -> Option<Value> {
    for url in urls {
        if let Ok(r) = http.get(format!("{url}/api/tasks/{id}")).send().await {
            if r.status().is_success() {
                if let Ok(v) = r.json::<Value>().await {
                    return Some(v);
                }
            }
        }
    }
    None
}

fn node_of(v: &Value) -> Option<String> {
    match &v["node"] {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

async fn owner_failover(c: &mut Cluster, round: usize) -> anyhow::Result<Vec<MovedTask>> {
    let leader = c.wait_for_leader(AGREE_WAIT_MAX).await?;
    let http = c.http().clone();
    let urls = c.http_urls();
    let mut ids: Vec<String> = Vec::new();
    for i in 0..SLOW_TASKS {
        let url = &urls[i % urls.len()];
        let body = json!({
            "input": format!("[sim:slow:{SLOW_TASK_MS}] owner failover round {round} task {i}"),
            "priority": "high",
            "max_tokens": 16,
        });
        let end = Instant::now() + AGREE_WAIT_MAX;
        loop {
            let r = http
                .post(format!("{url}/api/tasks"))
                .json(&body)
                .send()
                .await;
            if let Ok(r) = r {
                if r.status().as_u16() == 202 {
                    if let Some(id) = r
                        .json::<Value>()
                        .await
                        .ok()
                        .and_then(|v| v["id"].as_str().map(str::to_string))
                    {
                        ids.push(id);
                        break;
                    }
                }
            }
            anyhow::ensure!(Instant::now() < end, "could not submit slow task {i}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Wait until a follower runs some of them.
    let leader_url = urls[leader].clone();
    let end = Instant::now() + FAILOVER_WAIT_MAX;
    let (victim, victim_id, moved) = loop {
        let mut per_node: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for id in &ids {
            if let Some(v) = task_json(&http, std::slice::from_ref(&leader_url), id).await {
                if v["status"] == "running" {
                    if let Some(n) = node_of(&v) {
                        per_node.entry(n).or_default().push(id.clone());
                    }
                }
            }
        }
        let best = (0..c.len())
            .filter(|&i| i != leader)
            .filter_map(|i| {
                let id = c.node(i).id()?.to_string();
                let tasks = per_node.get(&id)?.clone();
                Some((i, id, tasks))
            })
            .max_by_key(|(_, _, t)| t.len());
        if let Some(b) = best {
            break b;
        }
        anyhow::ensure!(
            Instant::now() < end,
            "no follower ran a slow task within {FAILOVER_WAIT_MAX:?}"
        );
        tokio::time::sleep(TASK_POLL).await;
    };
    let t_kill = Instant::now();
    c.kill(victim)?;
    let survivors: Vec<String> = c.live().iter().map(|&i| c.node(i).http_url()).collect();
    let mut rows: Vec<MovedTask> = moved
        .iter()
        .map(|id| MovedTask {
            round,
            killed: victim,
            task: id.clone(),
            running_again_ms: None,
            succeeded_ms: None,
            attempts: 0,
            final_node: None,
            status: "running".into(),
        })
        .collect();
    let is_final = |r: &MovedTask| matches!(r.status.as_str(), "succeeded" | "failed");
    while t_kill.elapsed() < MOVED_WAIT_MAX && !rows.iter().all(is_final) {
        for r in rows.iter_mut().filter(|r| !is_final(r)) {
            let Some(v) = task_json(&http, &survivors, &r.task).await else {
                continue;
            };
            let now = Instant::now();
            let node = node_of(&v);
            let elsewhere = node.is_some() && node.as_deref() != Some(victim_id.as_str());
            if v["status"] == "running" && elsewhere && r.running_again_ms.is_none() {
                r.running_again_ms = Some(ms_since(t_kill, now));
            }
            r.status = v["status"].as_str().unwrap_or("unknown").to_string();
            r.attempts = v["attempts"].as_u64().unwrap_or(0);
            r.final_node = node;
            if r.status == "succeeded" {
                r.succeeded_ms = Some(ms_since(t_kill, now));
            }
        }
        tokio::time::sleep(TASK_POLL).await;
    }
    c.restart(victim)
        .await
        .with_context(|| format!("restarting node {victim}"))?;
    c.wait_for_leader(AGREE_WAIT_MAX).await?;
    // Let the round's other tasks finish, so the next round starts with idle workers.
    let all_urls = c.http_urls();
    let end = Instant::now() + MOVED_WAIT_MAX;
    for id in &ids {
        while Instant::now() < end {
            match task_json(&http, &all_urls, id).await {
                Some(v) if matches!(v["status"].as_str(), Some("succeeded" | "failed")) => break,
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
// d. Transport
// ---------------------------------------------------------------------------------------------

async fn transport(c: &Cluster, secret: &str, tls: Option<&BenchTls>) -> anyhow::Result<Transport> {
    let (from, to) = (c.node(1), c.node(0));
    let mut b = reqwest::Client::builder()
        .local_address(std::net::IpAddr::V4(from.ip()))
        .tcp_nodelay(true)
        .no_proxy()
        .timeout(Duration::from_secs(5));
    if let Some(t) = tls {
        b = b.tls_backend_preconfigured(t.client_tls(1)?);
    }
    let http = b.build().context("building the ping client")?;
    let Some(to_cluster) = to.cluster_addr() else {
        anyhow::bail!("node 0 has no cluster address");
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{to_cluster}/cluster/ping");
    let pad = "p".repeat(PING_PAD_BYTES);
    let call = || async {
        let r = http
            .get(&url)
            .header("x-openclaw-cluster-secret", secret)
            .header("x-pad", &pad)
            .send()
            .await?;
        let st = r.status();
        let body = r.bytes().await?;
        anyhow::ensure!(st.is_success(), "GET {url}: {st}");
        Ok::<_, anyhow::Error>(body.len())
    };
    for _ in 0..PING_WARMUP {
        call().await?;
    }
    let mut rtts = Vec::with_capacity(PING_CALLS);
    let started = Instant::now();
    for _ in 0..PING_CALLS {
        let t = Instant::now();
        call().await?;
        rtts.push(micros(t.elapsed()));
    }
    let total = started.elapsed();
    Ok(Transport {
        calls: PING_CALLS,
        mean_us: micros(total / PING_CALLS as u32),
        rtt: summarize(&mut rtts, 0, total),
    })
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

fn ms(us: u32) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

fn secs(ms: Option<f64>) -> String {
    ms.map(|m| format!("{:.2}", m / 1000.0))
        .unwrap_or_else(|| "-".into())
}

fn print_throughput(rows: &[ThroughputRow], in_cluster: u64, a: &Answered) {
    println!(
        " a) Commit throughput: POST /api/tasks round-robin to {NODES} nodes, 202 = committed \
         by Raft (1 worker per node, tasks held at the simulator; latencies in ms)"
    );
    println!(
        "{:>5} {:>9} {:>9} {:>8} {:>8} {:>8} {:>11} {:>13} {:>9} {:>6} {:>9}",
        "conc",
        "committed",
        "commits/s",
        "p50",
        "p99",
        "max",
        "leader p50",
        "follower p50",
        "busy/unkn",
        "errors",
        "term"
    );
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |t| t.to_string());
    for r in rows {
        println!(
            "{:>5} {:>9} {:>9.0} {:>8} {:>8} {:>8} {:>11} {:>13} {:>9} {:>6} {:>9}",
            r.concurrency,
            r.committed.ok,
            r.committed.throughput_rps,
            ms(r.committed.p50_us),
            ms(r.committed.p99_us),
            ms(r.committed.max_us),
            ms(r.via_leader_p50_us),
            ms(r.via_follower_p50_us),
            format!("{}/{}", r.busy, r.outcome_unknown),
            r.errors,
            format!("{}→{}", opt(r.term_before), opt(r.term_after))
        );
        if let Some(e) = &r.first_error {
            eprintln!("  warning: c={}: first error: {e}", r.concurrency);
        }
        print_cpu(r);
    }
    let acked = a.acknowledged;
    println!(
        "    the cluster holds {in_cluster} tasks; the generator counted {acked} 202s, {} \
         outcome_unknown, {} other 429/503 and {} without an answer (warm-up included): {} \
         task(s) beyond the 202s{}",
        a.outcome_unknown,
        a.refused,
        a.no_answer,
        in_cluster as i64 - acked as i64,
        if tasks_square(in_cluster, a) {
            ""
        } else {
            " — MISMATCH (a refused submission left a task, or a 202 is missing)"
        }
    );
}

/// Where the phase's CPU went: per process, in µs per committed task, and how many cores were
/// busy in all — the figure that says what bounds the commit rate on this machine.
fn print_cpu(r: &ThroughputRow) {
    if r.cpu.is_empty() || r.committed.ok == 0 {
        return;
    }
    let secs = r.committed.ok as f64 / r.committed.throughput_rps.max(f64::MIN_POSITIVE);
    let per = |ms: u64| ms as f64 * 1000.0 / r.committed.ok as f64;
    let parts: Vec<String> = r
        .cpu
        .iter()
        .map(|u| format!("{} {:.0}", u.process, per(u.cpu_ms)))
        .collect();
    let total: u64 = r.cpu.iter().map(|u| u.cpu_ms).sum();
    println!(
        "      CPU µs per commit: {}; total {:.0} µs = {:.2} cores busy over the phase",
        parts.join(", "),
        per(total),
        total as f64 / 1000.0 / secs.max(f64::MIN_POSITIVE)
    );
}

fn print_leader_header() {
    println!(
        " b) Leader failover: SIGKILL the leader while {FAILOVER_SUBMITTERS} submitters write to \
         the followers (seconds after the SIGKILL)"
    );
    println!(
        "{:>5} {:>6} {:>11} {:>14} {:>16} {:>14}",
        "round", "killed", "term", "writes resumed", "new leader seen", "failed submits"
    );
}

fn print_leader_failover_row(f: &LeaderFailover) {
    println!(
        "{:>5} {:>6} {:>11} {:>14} {:>16} {:>14}",
        f.round,
        format!("node {}", f.killed),
        format!(
            "{} -> {}",
            f.term_before,
            f.term_after.map_or("-".into(), |t| t.to_string())
        ),
        secs(f.resumed_ms),
        secs(f.leader_seen_ms),
        f.failed_submits
    );
}

fn print_moved_header() {
    println!(
        " c) Owner failover: SIGKILL a follower running [sim:slow:{SLOW_TASK_MS}] tasks \
         ({FAILOVER_WORKERS} workers per node; seconds after the SIGKILL)"
    );
    println!(
        "{:>5} {:>6} {:<38} {:>14} {:>10} {:>8} {:>10}",
        "round", "killed", "task", "running again", "succeeded", "attempts", "ran on"
    );
}

fn print_moved_row(r: &MovedTask) {
    println!(
        "{:>5} {:>6} {:<38} {:>14} {:>10} {:>8} {:>10}{}",
        r.round,
        format!("node {}", r.killed),
        r.task,
        secs(r.running_again_ms),
        secs(r.succeeded_ms),
        r.attempts,
        r.final_node.as_deref().unwrap_or("-"),
        if r.status == "succeeded" {
            String::new()
        } else {
            format!("  ({})", r.status)
        }
    );
}

/// The summary lines of the scenario (the tables were printed as they were measured).
pub fn print(r: &ClusterReport) {
    println!(
        "    leader failover: writes resumed after {} s (median of {}; each: {})",
        secs(r.resumed_median_ms),
        r.leader_failovers.len(),
        r.leader_failovers
            .iter()
            .map(|f| secs(f.resumed_ms))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "    owner failover: {} tasks moved; running elsewhere after {} s median ({} s max), \
         succeeded after {} s median",
        r.moved_tasks.len(),
        secs(r.running_again_median_ms),
        secs(r.running_again_max_ms),
        secs(r.succeeded_median_ms)
    );
    match &r.transport {
        Some(t) => {
            println!(
                " d) Transport: sequential keep-alive HTTP round trips on the cluster port \
                 (GET /cluster/ping + secret + {PING_PAD_BYTES}-byte header; ms)"
            );
            println!(
                "{:>6} {:>8} {:>8} {:>8} {:>8}",
                "calls", "mean", "p50", "p99", "max"
            );
            println!(
                "{:>6} {:>8} {:>8} {:>8} {:>8}",
                t.calls,
                ms(t.mean_us),
                ms(t.rtt.p50_us),
                ms(t.rtt.p99_us),
                ms(t.rtt.max_us)
            );
            println!(
                "    compare: cargo test --release -p openclaw-cluster mesh_call_rtt -- --ignored \
                 --nocapture"
            );
        }
        None => println!(" d) Transport: not measured"),
    }
    println!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_square_with_the_answers() {
        let a = |acknowledged, outcome_unknown, refused| Answered {
            acknowledged,
            outcome_unknown,
            refused,
            no_answer: 0,
        };
        // (tasks in the cluster, answers) -> they square
        let cases = [
            (100, a(100, 0, 5), true),
            (101, a(100, 0, 5), false),
            (99, a(100, 0, 0), false),
            (100, a(100, 3, 0), true),
            (103, a(100, 3, 0), true),
            (104, a(100, 3, 9), false),
            (
                104,
                Answered {
                    no_answer: 1,
                    ..a(100, 3, 9)
                },
                true,
            ),
        ];
        for (in_cluster, answered, want) in cases {
            assert_eq!(
                tasks_square(in_cluster, &answered),
                want,
                "{in_cluster} {answered:?}"
            );
        }
    }

    #[test]
    fn medians() {
        for (values, want) in [
            (vec![], None),
            (vec![3.0], Some(3.0)),
            (vec![3.0, 1.0, 2.0], Some(2.0)),
            (vec![4.0, 1.0, 3.0, 2.0], Some(2.0)),
            (vec![f64::NAN, 5.0], Some(5.0)),
        ] {
            assert_eq!(median(&values), want, "{values:?}");
        }
    }

    #[test]
    fn milliseconds_between_instants_never_go_negative() {
        let t = Instant::now();
        let later = t + Duration::from_millis(1500);
        assert_eq!(ms_since(t, later), 1500.0);
        assert_eq!(ms_since(later, t), 0.0);
        assert_eq!(secs(Some(1500.0)), "1.50");
        assert_eq!(secs(None), "-");
    }
}

//! `openclaw-node demo`: a three-node cluster survives a crash, on this machine, in a minute.
//!
//! It starts the simulator and three nodes (127.0.0.2-4) through the process harness
//! (`openclaw_harness::Cluster`, with this very binary as the node), prints each node's URL,
//! submits half of a mixed workload (critical/high/normal/low, each task to a random node, with
//! an idempotency key), SIGKILLs one node while it runs tasks — the leader by default, or with
//! `--kill owner` the follower running the most — submits the other half while the cluster
//! recovers, and waits until every acknowledged task is final. It then prints the cluster as
//! `openclaw-node status` would, and the outcome: tasks succeeded/failed, where they ran, how
//! many ran again after the kill, how long writes stopped, and leader/term before and after.
//!
//! Bounds: every wait has a deadline (start, each submit, the kill's wait for running work, the
//! write probe, the drain). No process outlives the command: the harness's `Drop` SIGKILLs and
//! reaps every child — on success, on error, on panic, and on Ctrl-C/SIGTERM, which abort the
//! demo's task (dropping the cluster) before the command exits with 130.
//!
//! The pure parts (priority mix, running work per node, the outcome and its rendering) are
//! table-tested; the rest is a thin shell over HTTP and the harness.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use openclaw_harness::{Cluster, ClusterSpec};
use openclaw_proto::Priority;
use serde_json::{json, Value};

use crate::cli::{DemoArgs, DemoKill};

/// Nodes in the demo cluster.
pub const NODES: usize = 3;
/// Workers per node: few, so work is still running when the kill comes.
pub const WORKERS: usize = 2;
/// Deadline of one `POST /api/tasks` (it waits for a Raft commit).
pub const SUBMIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Nodes tried per task before it counts as not acknowledged.
pub const SUBMIT_ATTEMPTS_MAX: usize = 6;
/// Longest `Retry-After` honoured between tries.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(2);
/// Submissions in flight at once.
pub const SUBMIT_IN_FLIGHT_MAX: usize = 8;
/// Longest wait for the chosen node to be running work before it is killed anyway.
pub const RUNNING_WAIT_MAX: Duration = Duration::from_secs(15);
/// Longest wait for a write to succeed after the kill.
pub const RESUME_WAIT_MAX: Duration = Duration::from_secs(30);
/// Deadline of one write probe (short, so a probe stuck on the dead node is replaced soon).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Write probes running at once after the kill (each stops at its first 202).
pub const PROBES: usize = 4;
/// Longest wait for a new agreed leader after the kill.
pub const LEADER_WAIT_MAX: Duration = Duration::from_secs(30);
/// Longest wait for every acknowledged task to be final.
pub const DRAIN_WAIT_MAX: Duration = Duration::from_secs(180);
/// Task reads in flight at once while draining.
pub const READS_IN_FLIGHT_MAX: usize = 16;

/// Run the demo; the exit code is 0 when every acknowledged task finished, 1 otherwise, 130 on
/// Ctrl-C or SIGTERM.
pub async fn run(args: DemoArgs) -> anyhow::Result<i32> {
    let mut work = tokio::spawn(demo(args));
    tokio::select! {
        r = &mut work => match r {
            Ok(r) => r,
            Err(e) => Err(anyhow::anyhow!("the demo stopped: {e}")),
        },
        _ = interrupted() => {
            // Aborting drops the demo's future, and with it the cluster: every child is killed
            // and reaped before the await below returns.
            work.abort();
            let _ = work.await;
            eprintln!("demo: interrupted; every process it started has been stopped");
            Ok(130)
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

// ---------------------------------------------------------------------------------------------
// Pure parts
// ---------------------------------------------------------------------------------------------

/// The demo's priority mix from a roll in 0..100: 10 % critical, 20 % high, 40 % normal,
/// 30 % low.
pub fn priority_for(roll: u32) -> Priority {
    match roll % 100 {
        0..=9 => Priority::Critical,
        10..=29 => Priority::High,
        30..=69 => Priority::Normal,
        _ => Priority::Low,
    }
}

/// The order in which a task tries the nodes: its random first node, then the others in turn,
/// repeated up to `attempts` tries.
pub fn node_order(first: usize, nodes: usize, attempts: usize) -> Vec<usize> {
    (0..attempts).map(|k| (first + k) % nodes.max(1)).collect()
}

/// Running tasks per node id, from a `GET /api/cluster` answer.
pub fn running_per_node(status: &Value) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for n in status["nodes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let id = match &n["id"] {
            Value::String(s) => s.clone(),
            Value::Number(x) => x.to_string(),
            _ => continue,
        };
        let running: u64 = n["tasks"]["running"]
            .as_object()
            .map(|m| m.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0);
        out.insert(id, running);
    }
    out
}

/// A task as read back at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalTask {
    pub id: String,
    /// `succeeded`, `failed`, `cancelled`; anything else (or `unknown` when unreadable) means it
    /// did not finish in time.
    pub status: String,
    pub attempts: u32,
    /// The node that ran it last.
    pub node: Option<String>,
    pub preemptions: u32,
    pub probe: bool,
}

impl FinalTask {
    /// From a `GET /api/tasks/{id}` answer.
    pub fn from_view(id: &str, v: &Value, probe: bool) -> FinalTask {
        let node = match &v["node"] {
            Value::String(s) => Some(s.clone()),
            Value::Number(x) => Some(x.to_string()),
            _ => None,
        };
        let num = |k: &str| u32::try_from(v[k].as_u64().unwrap_or(0)).unwrap_or(u32::MAX);
        FinalTask {
            id: id.to_string(),
            status: v["status"].as_str().unwrap_or("unknown").to_string(),
            attempts: num("attempts"),
            node,
            preemptions: num("preemptions"),
            probe,
        }
    }

    pub fn is_final(&self) -> bool {
        matches!(self.status.as_str(), "succeeded" | "failed" | "cancelled")
    }
}

/// What happened to the workload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Workload tasks acknowledged (202), probes not included.
    pub acknowledged: usize,
    pub submitted: usize,
    pub probes: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub cancelled: usize,
    /// Not final by the deadline (ids, at most a few).
    pub not_final: Vec<String>,
    /// Tasks (probes included) by the node that ran them last.
    pub per_node: BTreeMap<String, usize>,
    /// Tasks with more than one attempt, and how many of those were never preempted (so they
    /// ran again because their owner died).
    pub rerun: usize,
    pub rerun_not_preempted: usize,
}

/// Count the outcome of `tasks` (workload and probes) out of `submitted` workload tasks.
pub fn outcome(tasks: &[FinalTask], submitted: usize) -> Outcome {
    let mut o = Outcome {
        submitted,
        ..Outcome::default()
    };
    for t in tasks {
        if t.probe {
            o.probes += 1;
        } else {
            o.acknowledged += 1;
        }
        match t.status.as_str() {
            "succeeded" => o.succeeded += 1,
            "failed" => o.failed += 1,
            "cancelled" => o.cancelled += 1,
            _ => o.not_final.push(t.id.clone()),
        }
        if let Some(n) = &t.node {
            *o.per_node.entry(n.clone()).or_default() += 1;
        }
        if t.attempts > 1 {
            o.rerun += 1;
            if t.preemptions == 0 {
                o.rerun_not_preempted += 1;
            }
        }
    }
    o
}

/// A node as the outcome names it: `node 1 (id 42)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLabel {
    pub index: usize,
    pub id: String,
    pub killed: bool,
}

/// The timings and leaders around the kill.
#[derive(Debug, Clone, PartialEq)]
pub struct KillReport {
    pub victim: NodeLabel,
    /// `the leader` or `owner of N running tasks`.
    pub why: String,
    pub writes_resumed: Option<Duration>,
    pub leader_before: (NodeLabel, u64),
    pub leader_after: Option<(NodeLabel, u64)>,
}

fn label(n: &NodeLabel) -> String {
    format!(
        "node {} (id {}{})",
        n.index,
        n.id,
        if n.killed { ", killed" } else { "" }
    )
}

/// The outcome lines (stable labels: the demo's test looks for them).
pub fn render_outcome(o: &Outcome, k: &KillReport, nodes: &[NodeLabel]) -> String {
    let total = o.acknowledged + o.probes;
    let mut out = String::from("Outcome\n");
    out.push_str(&format!(
        "  tasks acknowledged:  {} of {} submitted (+{} write probe{})\n",
        o.acknowledged,
        o.submitted,
        o.probes,
        if o.probes == 1 { "" } else { "s" }
    ));
    out.push_str(&format!(
        "  tasks succeeded:     {} of {total}\n",
        o.succeeded
    ));
    out.push_str(&format!("  tasks failed:        {}\n", o.failed));
    if o.cancelled > 0 {
        out.push_str(&format!("  tasks cancelled:     {}\n", o.cancelled));
    }
    if !o.not_final.is_empty() {
        out.push_str(&format!(
            "  tasks NOT FINISHED:  {} (e.g. {})\n",
            o.not_final.len(),
            o.not_final
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let ran: Vec<String> = nodes
        .iter()
        .map(|n| {
            format!(
                "{}: {}",
                label(n),
                o.per_node.get(&n.id).copied().unwrap_or(0)
            )
        })
        .collect();
    out.push_str(&format!("  ran on:              {}\n", ran.join(" · ")));
    out.push_str(&format!(
        "  re-run after the kill (attempts > 1): {} ({} never preempted: their owner died)\n",
        o.rerun, o.rerun_not_preempted
    ));
    out.push_str(&format!(
        "  killed:              {}, {}\n",
        label(&k.victim),
        k.why
    ));
    match k.writes_resumed {
        Some(d) => out.push_str(&format!(
            "  writes resumed:      {:.2} s after the kill (first 202 from a surviving node)\n",
            d.as_secs_f64()
        )),
        None => out.push_str(&format!(
            "  writes resumed:      NOT within {} s of the kill\n",
            RESUME_WAIT_MAX.as_secs()
        )),
    }
    out.push_str(&format!(
        "  leader before:       {}, term {}\n",
        label(&k.leader_before.0),
        k.leader_before.1
    ));
    match &k.leader_after {
        Some((n, term)) => out.push_str(&format!(
            "  leader after:        {}, term {term}{}\n",
            label(n),
            if n.index == k.leader_before.0.index {
                " (unchanged)"
            } else {
                ""
            }
        )),
        None => out.push_str(&format!(
            "  leader after:        none agreed within {} s\n",
            LEADER_WAIT_MAX.as_secs()
        )),
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The shell: cluster, submissions, the kill, the drain
// ---------------------------------------------------------------------------------------------

/// One planned task.
#[derive(Debug, Clone)]
struct Planned {
    n: u64,
    priority: Priority,
    nodes: Vec<usize>,
}

/// The plan of `count` tasks numbered from `from` (priorities and node orders drawn here).
fn plan(from: u64, count: u64) -> Vec<Planned> {
    (from..from + count)
        .map(|n| Planned {
            n,
            priority: priority_for(rand::random_range(0..100)),
            nodes: node_order(rand::random_range(0..NODES), NODES, SUBMIT_ATTEMPTS_MAX),
        })
        .collect()
}

/// What a submission ended with.
enum Submitted {
    Acked(String),
    NotAcked(String),
}

/// Submit one task, trying its nodes in order: 202 → acknowledged; 429/503 → wait Retry-After
/// (capped), next node; connection error or timeout → next node; anything else → refused.
async fn submit(http: &reqwest::Client, urls: &[String], run_tag: &str, p: &Planned) -> Submitted {
    let body = json!({
        "agent": "main",
        "input": format!("demo task {}: summarise the overnight incident report", p.n),
        "priority": p.priority.as_str(),
        "source": "api_call",
        "max_tokens": 64,
        "idempotency_key": format!("demo-{run_tag}-{}", p.n),
    });
    let mut last = String::from("no node tried");
    for &i in &p.nodes {
        let Some(url) = urls.get(i) else { continue };
        let r = http
            .post(format!("{url}/api/tasks"))
            .timeout(SUBMIT_TIMEOUT)
            .json(&body)
            .send()
            .await;
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                last = format!("node {i}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let status = r.status().as_u16();
        let retry_after = r
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = r.text().await.unwrap_or_default();
        match status {
            202 | 200 => {
                let id = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["id"].as_str().map(str::to_string));
                return match id {
                    Some(id) => Submitted::Acked(id),
                    None => Submitted::NotAcked(format!("node {i}: 202 without an id: {text}")),
                };
            }
            429 | 503 => {
                last = format!("node {i}: {status}");
                let wait = retry_after
                    .unwrap_or(Duration::from_millis(200))
                    .min(RETRY_AFTER_MAX);
                tokio::time::sleep(wait).await;
            }
            _ => return Submitted::NotAcked(format!("node {i}: {status} {text}")),
        }
    }
    Submitted::NotAcked(last)
}

/// Submit a batch with bounded concurrency; returns the acknowledged ids and prints refusals.
async fn submit_all(
    http: &reqwest::Client,
    urls: &[String],
    run_tag: &str,
    plans: Vec<Planned>,
) -> Vec<(String, Priority)> {
    let results: Vec<(Priority, Submitted)> = futures::stream::iter(plans)
        .map(|p| async move { (p.priority, submit(http, urls, run_tag, &p).await) })
        .buffer_unordered(SUBMIT_IN_FLIGHT_MAX)
        .collect()
        .await;
    let mut acked = Vec::new();
    let mut refused = 0;
    for (prio, r) in results {
        match r {
            Submitted::Acked(id) => acked.push((id, prio)),
            Submitted::NotAcked(why) => {
                refused += 1;
                if refused <= 3 {
                    println!("  not acknowledged: {why}");
                }
            }
        }
    }
    acked
}

/// Probe writes on the surviving nodes until one is acknowledged: `PROBES` loops, each with
/// its own idempotency key (so retries never make a second task), stopping at the first 202.
async fn probe_writes(
    http: &reqwest::Client,
    live_urls: Vec<String>,
    run_tag: &str,
    t_kill: Instant,
) -> (Option<Duration>, Vec<String>) {
    let done = Arc::new(AtomicBool::new(false));
    let mut set = tokio::task::JoinSet::new();
    for p in 0..PROBES {
        let (http, urls, done) = (http.clone(), live_urls.clone(), done.clone());
        let body = json!({
            "agent": "main",
            "input": format!("demo write probe {p}"),
            // Not critical: a probe must not preempt the workload and add re-runs.
            "priority": "normal",
            "max_tokens": 16,
            "idempotency_key": format!("demo-{run_tag}-probe-{p}"),
        });
        set.spawn(async move {
            let mut k = p;
            while !done.load(Ordering::Relaxed) && t_kill.elapsed() < RESUME_WAIT_MAX {
                let url = urls.get(k % urls.len().max(1))?;
                k += 1;
                let r = http
                    .post(format!("{url}/api/tasks"))
                    .timeout(PROBE_TIMEOUT)
                    .json(&body)
                    .send()
                    .await;
                if let Ok(r) = r {
                    if r.status().as_u16() == 202 {
                        let at = t_kill.elapsed();
                        done.store(true, Ordering::Relaxed);
                        let id = r
                            .json::<Value>()
                            .await
                            .ok()
                            .and_then(|v| v["id"].as_str().map(str::to_string));
                        return Some((at, id));
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            None
        });
    }
    let mut first: Option<Duration> = None;
    let mut ids = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(Some((at, id))) = r {
            first = Some(first.map_or(at, |f| f.min(at)));
            ids.extend(id);
        }
    }
    (first, ids)
}

/// Read `id` from the first live node that answers.
async fn read_task(http: &reqwest::Client, urls: &[String], id: &str) -> Option<Value> {
    for url in urls {
        let r = http
            .get(format!("{url}/api/tasks/{id}"))
            .timeout(openclaw_harness::cluster::CONTROL_TIMEOUT)
            .send()
            .await;
        if let Ok(r) = r {
            if r.status().is_success() {
                if let Ok(v) = r.json::<Value>().await {
                    return Some(v);
                }
            }
        }
    }
    None
}

/// Wait until every task is final (or the deadline); returns the last view of each.
async fn drain(
    http: &reqwest::Client,
    live_urls: &[String],
    tasks: &[(String, bool)],
    t0: Instant,
) -> Vec<FinalTask> {
    let end = Instant::now() + DRAIN_WAIT_MAX;
    let mut last: BTreeMap<String, FinalTask> = BTreeMap::new();
    let mut printed = Instant::now();
    loop {
        let pending: Vec<(String, bool)> = tasks
            .iter()
            .filter(|(id, _)| !last.get(id).is_some_and(FinalTask::is_final))
            .cloned()
            .collect();
        if pending.is_empty() {
            break;
        }
        let reads: Vec<FinalTask> = futures::stream::iter(pending)
            .map(|(id, probe)| async move {
                match read_task(http, live_urls, &id).await {
                    Some(v) => FinalTask::from_view(&id, &v, probe),
                    None => FinalTask::from_view(&id, &Value::Null, probe),
                }
            })
            .buffer_unordered(READS_IN_FLIGHT_MAX)
            .collect()
            .await;
        let left = reads.iter().filter(|t| !t.is_final()).count();
        for t in reads {
            last.insert(t.id.clone(), t);
        }
        if left == 0 || Instant::now() >= end {
            break;
        }
        if printed.elapsed() >= Duration::from_secs(2) {
            let running = last.values().filter(|t| t.status == "running").count();
            println!(
                "  +{:>5.1}s  {left} tasks not final yet ({running} running)",
                t0.elapsed().as_secs_f64()
            );
            printed = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tasks
        .iter()
        .map(|(id, probe)| {
            last.remove(id)
                .unwrap_or_else(|| FinalTask::from_view(id, &Value::Null, *probe))
        })
        .collect()
}

async fn cluster_json(c: &Cluster, i: usize) -> anyhow::Result<Value> {
    let url = format!("{}/api/cluster", c.node(i).http_url());
    let r = c
        .http()
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    anyhow::ensure!(r.status().is_success(), "GET {url}: {}", r.status());
    r.json().await.with_context(|| format!("GET {url}: body"))
}

fn node_label(c: &Cluster, i: usize, killed: Option<usize>) -> NodeLabel {
    NodeLabel {
        index: i,
        id: c.node(i).id().unwrap_or("?").to_string(),
        killed: killed == Some(i),
    }
}

/// The node to kill and why, once it runs work (or the deadline passes).
async fn choose_victim(c: &Cluster, kill: DemoKill, leader: usize) -> (usize, String) {
    let end = Instant::now() + RUNNING_WAIT_MAX;
    loop {
        let running = match cluster_json(c, leader).await {
            Ok(v) => running_per_node(&v),
            Err(_) => BTreeMap::new(),
        };
        let of = |i: usize| {
            c.node(i)
                .id()
                .and_then(|id| running.get(id))
                .copied()
                .unwrap_or(0)
        };
        let pick = match kill {
            DemoKill::Leader => Some(leader).filter(|&l| of(l) > 0),
            DemoKill::Owner => (0..c.len())
                .filter(|&i| i != leader && of(i) > 0)
                .max_by_key(|&i| of(i)),
        };
        if let Some(i) = pick {
            let what = match kill {
                DemoKill::Leader => "the leader",
                DemoKill::Owner => "a follower",
            };
            return (i, format!("{what}, running {} tasks", of(i)));
        }
        if Instant::now() >= end {
            let i = match kill {
                DemoKill::Leader => leader,
                DemoKill::Owner => (leader + 1) % c.len(),
            };
            let what = match kill {
                DemoKill::Leader => "the leader",
                DemoKill::Owner => "a follower",
            };
            return (i, format!("{what} (it was running no task at that moment)"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn demo(args: DemoArgs) -> anyhow::Result<i32> {
    let t0 = Instant::now();
    let bin = std::env::current_exe().context("finding this program's path")?;
    let mut spec = ClusterSpec::new(&bin, NODES);
    spec.workers = WORKERS;
    spec.keep_dir = args.keep;
    // Tasks of 0.3-0.9 s at the simulator, so the kill lands while work is running.
    spec.sim_args = ["--latency-ms", "300", "--latency-jitter-ms", "600"]
        .map(String::from)
        .to_vec();
    println!(
        "Starting the simulator and a {NODES}-node cluster ({} workers each), binary {} ...",
        WORKERS,
        bin.display()
    );
    let mut c = Cluster::start(spec)
        .await
        .context("starting the demo cluster")?;
    let leader = c
        .wait_for_leader(LEADER_WAIT_MAX)
        .await
        .context("waiting for a leader")?;
    let term_before = c.status(leader).await.map(|s| s.term).unwrap_or(0);
    println!("  simulator  {}", c.sim_url());
    for n in c.nodes() {
        println!(
            "  node {}     {}  (id {}, cluster {}{})",
            n.index(),
            n.http_url(),
            n.id().unwrap_or("?"),
            n.cluster_addr().map(|a| a.to_string()).unwrap_or_default(),
            if n.index() == leader { ", leader" } else { "" }
        );
    }
    println!(
        "  run dir    {}{}",
        c.run_dir().display(),
        if args.keep {
            " (kept)"
        } else {
            " (removed on exit; --keep keeps it)"
        }
    );
    println!(
        "Cluster up in {:.1} s: leader node {leader}, term {term_before}\n",
        t0.elapsed().as_secs_f64()
    );

    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(SUBMIT_TIMEOUT)
        .build()
        .context("building the HTTP client")?;
    let urls = c.http_urls();
    let run_tag = format!("{:x}", rand::random::<u32>());
    let first = args.tasks.div_ceil(2);
    let rest = args.tasks - first;

    println!(
        "+{:>5.1}s  submitting {first} tasks (critical/high/normal/low) to random nodes",
        t0.elapsed().as_secs_f64()
    );
    let mut acked = submit_all(&http, &urls, &run_tag, plan(0, first)).await;
    let (victim, why) = choose_victim(&c, args.kill, leader).await;
    let leader_label = node_label(&c, leader, Some(victim));
    let t_kill = Instant::now();
    c.kill(victim).context("killing the node")?;
    println!(
        "+{:>5.1}s  SIGKILL node {victim} (id {}): {why}",
        t0.elapsed().as_secs_f64(),
        c.node(victim).id().unwrap_or("?")
    );

    let live: Vec<usize> = c.live();
    let live_urls: Vec<String> = live.iter().map(|&i| c.node(i).http_url()).collect();
    println!(
        "+{:>5.1}s  submitting {rest} more tasks to random nodes (the dead one included) while \
         probing writes on the survivors",
        t0.elapsed().as_secs_f64()
    );
    let ((resumed, probe_ids), more) = tokio::join!(
        probe_writes(&http, live_urls.clone(), &run_tag, t_kill),
        submit_all(&http, &urls, &run_tag, plan(first, rest)),
    );
    acked.extend(more);
    match resumed {
        Some(d) => println!(
            "+{:>5.1}s  writes resumed {:.2} s after the kill",
            t0.elapsed().as_secs_f64(),
            d.as_secs_f64()
        ),
        None => println!(
            "+{:>5.1}s  writes did NOT resume within {} s",
            t0.elapsed().as_secs_f64(),
            RESUME_WAIT_MAX.as_secs()
        ),
    }
    let leader_after = match c.wait_for_leader(LEADER_WAIT_MAX).await {
        Ok(l) => {
            let term = c.status(l).await.map(|s| s.term).unwrap_or(0);
            println!(
                "+{:>5.1}s  the survivors agree: leader node {l}, term {term}",
                t0.elapsed().as_secs_f64()
            );
            Some((node_label(&c, l, Some(victim)), term))
        }
        Err(e) => {
            println!("  no agreed leader: {e}");
            None
        }
    };

    println!(
        "+{:>5.1}s  waiting for {} acknowledged tasks (+{} probes) to finish",
        t0.elapsed().as_secs_f64(),
        acked.len(),
        probe_ids.len()
    );
    let tasks: Vec<(String, bool)> = acked
        .iter()
        .map(|(id, _)| (id.clone(), false))
        .chain(probe_ids.iter().map(|id| (id.clone(), true)))
        .collect();
    let finals = drain(&http, &live_urls, &tasks, t0).await;
    println!("+{:>5.1}s  done\n", t0.elapsed().as_secs_f64());

    let status_node = leader_after
        .as_ref()
        .map(|(n, _)| n.index)
        .or_else(|| live.first().copied());
    if let Some(i) = status_node {
        match cluster_json(&c, i).await {
            Ok(v) => println!("{}", crate::ops::status::render(&v)),
            Err(e) => println!("(no cluster status: {e:#})\n"),
        }
    }

    let o = outcome(&finals, usize::try_from(args.tasks).unwrap_or(usize::MAX));
    let k = KillReport {
        victim: node_label(&c, victim, Some(victim)),
        why,
        writes_resumed: resumed,
        leader_before: (leader_label, term_before),
        leader_after,
    };
    let labels: Vec<NodeLabel> = (0..c.len())
        .map(|i| node_label(&c, i, Some(victim)))
        .collect();
    print!("{}", render_outcome(&o, &k, &labels));
    if args.keep {
        println!(
            "\nRun dir kept: {} (node-*/node.log, configs, data dirs)",
            c.run_dir().display()
        );
    }
    let ok = o.not_final.is_empty() && o.acknowledged > 0;
    drop(c);
    Ok(if ok { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_priority_mix() {
        let mut counts = BTreeMap::new();
        for roll in 0..100 {
            *counts.entry(priority_for(roll).as_str()).or_insert(0) += 1;
        }
        assert_eq!(counts["critical"], 10);
        assert_eq!(counts["high"], 20);
        assert_eq!(counts["normal"], 40);
        assert_eq!(counts["low"], 30);
        assert_eq!(priority_for(100), Priority::Critical);
    }

    #[test]
    fn nodes_are_tried_in_turn() {
        for (first, nodes, attempts, want) in [
            (0, 3, 4, vec![0, 1, 2, 0]),
            (2, 3, 3, vec![2, 0, 1]),
            (1, 1, 2, vec![0, 0]),
            (1, 0, 1, vec![0]),
        ] {
            assert_eq!(node_order(first, nodes, attempts), want, "{first} {nodes}");
        }
    }

    #[test]
    fn running_work_is_summed_per_node() {
        let st = json!({"nodes": [
            {"id": 7, "tasks": {"running": {"critical": 1, "high": 0, "normal": 2}}},
            {"id": "9", "tasks": {"running": {}}},
            {"id": null},
            {"id": 11}
        ]});
        let r = running_per_node(&st);
        assert_eq!(r.get("7"), Some(&3));
        assert_eq!(r.get("9"), Some(&0));
        assert_eq!(r.get("11"), Some(&0));
        assert_eq!(r.len(), 3);
        assert!(running_per_node(&json!({})).is_empty());
    }

    fn t(id: &str, status: &str, attempts: u32, node: &str, pre: u32, probe: bool) -> FinalTask {
        FinalTask {
            id: id.into(),
            status: status.into(),
            attempts,
            node: (!node.is_empty()).then(|| node.to_string()),
            preemptions: pre,
            probe,
        }
    }

    #[test]
    fn the_outcome_counts_states_nodes_and_reruns() {
        let tasks = [
            t("a", "succeeded", 1, "1", 0, false),
            t("b", "succeeded", 2, "2", 0, false),
            t("c", "succeeded", 2, "2", 1, false),
            t("d", "failed", 1, "1", 0, false),
            t("e", "running", 1, "3", 0, false),
            t("p", "succeeded", 1, "2", 0, true),
            t("u", "unknown", 0, "", 0, false),
        ];
        let o = outcome(&tasks, 8);
        assert_eq!(o.submitted, 8);
        assert_eq!(o.acknowledged, 6);
        assert_eq!(o.probes, 1);
        assert_eq!((o.succeeded, o.failed, o.cancelled), (4, 1, 0));
        assert_eq!(o.not_final, vec!["e".to_string(), "u".to_string()]);
        assert_eq!(o.per_node.get("1"), Some(&2));
        assert_eq!(o.per_node.get("2"), Some(&3));
        assert_eq!(o.per_node.get("3"), Some(&1));
        assert_eq!((o.rerun, o.rerun_not_preempted), (2, 1));
    }

    #[test]
    fn a_view_is_read_leniently() {
        let v =
            json!({"id": "x", "status": "succeeded", "attempts": 2, "node": 5, "preemptions": 0});
        let f = FinalTask::from_view("x", &v, false);
        assert_eq!(f.node.as_deref(), Some("5"));
        assert!(f.is_final());
        let none = FinalTask::from_view("y", &Value::Null, true);
        assert_eq!(none.status, "unknown");
        assert!(!none.is_final());
        assert!(none.probe);
    }

    #[test]
    fn the_outcome_names_every_figure() {
        let n = |index: usize, id: &str, killed: bool| NodeLabel {
            index,
            id: id.into(),
            killed,
        };
        let o = outcome(
            &[
                t("a", "succeeded", 2, "10", 0, false),
                t("b", "succeeded", 1, "11", 0, true),
            ],
            1,
        );
        let k = KillReport {
            victim: n(0, "10", true),
            why: "the leader, running 1 tasks".into(),
            writes_resumed: Some(Duration::from_millis(1840)),
            leader_before: (n(0, "10", true), 1),
            leader_after: Some((n(2, "12", false), 2)),
        };
        let text = render_outcome(&o, &k, &[n(0, "10", true), n(1, "11", false)]);
        for want in [
            "tasks acknowledged:  1 of 1 submitted (+1 write probe)",
            "tasks succeeded:     2 of 2",
            "tasks failed:        0",
            "ran on:              node 0 (id 10, killed): 1 · node 1 (id 11): 1",
            "re-run after the kill (attempts > 1): 1 (1 never preempted",
            "writes resumed:      1.84 s after the kill",
            "leader before:       node 0 (id 10, killed), term 1",
            "leader after:        node 2 (id 12), term 2",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains("NOT FINISHED"));
        let k2 = KillReport {
            writes_resumed: None,
            leader_after: None,
            ..k
        };
        let text = render_outcome(&o, &k2, &[]);
        assert!(text.contains("writes resumed:      NOT within"));
        assert!(text.contains("leader after:        none agreed"));
    }
}

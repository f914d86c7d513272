//! One chaos run, start to verdict:
//!
//! 1. start the cluster (`openclaw_harness::Cluster`) and probe iptables (loudly skipping
//!    partitions when it is unusable);
//! 2. start the observer and the workload;
//! 3. play the seeded fault schedule, one fault per round, each followed by a bounded wait for
//!    the cluster to agree on a leader again;
//! 4. stop the load, heal, restart or continue every node, wait for a leader;
//! 5. drain: wait (bounded) until every acknowledged task is final;
//! 6. wait for convergence and for the replicated budget spend to settle, read every
//!    acknowledged task on every node and the simulator's call log, and run the checks
//!    ([`crate::checks`]).
//!
//! The nodes run with a cluster-wide token budget (large: it never holds work back) and a
//! cluster-wide rate limit on the workload's model (twice the submit rate: it binds only while
//! a backlog left by a fault catches up), so the checks also cover the leases.
//!
//! **Pressure mode** ([`RunConfig::pressure`]) sets both so they bind, as an operator would:
//! the rate limit below the submit rate, and a budget of about half of what the run would
//! spend. In the middle of the run the rate limit is raised by a hot reload (the nodes' config
//! files rewritten; their watchers reload them), and every node must report the new limit in
//! `GET /api/limits` within the watcher's interval + 2 × the cluster heartbeat; the sliding
//! rate check holds windows before the change to the old limit and after it to the new one.
//! When the load stops, the budget must be holding work back (a node `paused`) with the spend
//! within the limit plus one reservation per node plus critical work; then a second reload
//! raises it so the held work drains.
//!
//! Every phase has a deadline, so the whole run is bounded by
//! [`RunConfig::time_bound`]. The run dir is kept when a check fails or `keep_dir` is set.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

use crate::checks::{
    check_calls, check_hold, check_leader_kept, check_rate, check_spend, check_tasks, longest_gap,
    Acked, CallTally, HoldFacts, HoldTally, RateChange, RateSpec, RateTally, Seen, SpendFacts,
    SpendTally, TaskTally, Violation,
};
use crate::faults::{minority_side, schedule, Fault, FaultKind, Round, Target};
use crate::observe::Observer;
use crate::workload::{Workload, WorkloadSpec};
use openclaw_harness::{Cluster, ClusterSpec, Convergence, HarnessError, NodeState};

/// Reads of task views in flight at once during the drain and the final checks.
const READS_IN_FLIGHT_MAX: usize = 16;
/// The drain stops early when no acknowledged task became final for this long.
const DRAIN_STALL: Duration = Duration::from_secs(45);
/// Grace of a SIGTERM before SIGKILL in a restart round.
const TERMINATE_GRACE: Duration = Duration::from_secs(10);
/// The cluster's token budget for the period: far above what a run spends, so it never holds
/// work back and the drain finishes; the check is that spend is counted, once, within it.
pub const BUDGET_TOKENS: u64 = 1_000_000_000;
/// The cluster's cost budget for the period, as far out of reach as [`BUDGET_TOKENS`]. A
/// budget with a token limit only starves the cluster within seconds (a node bug, see
/// chaos/README.md "Known node issues"); `--token-only-budget` runs without it to show that.
pub const BUDGET_COST_USD: f64 = 1_000_000.0;
/// The budget scope checked.
pub const BUDGET_SCOPE: &str = "total";
/// The model the workload's tasks run on (the nodes' default model), and the one rate-limited.
pub const LIMITED_MODEL: &str = "fast";
/// The rate-limit window of the nodes (`rate_limiting.window_seconds`).
pub const RATE_WINDOW_SECONDS: u64 = 2;
/// The rate limit is this many times the submit rate: above the steady load, reached while a
/// backlog catches up after a fault.
pub const RATE_HEADROOM: u64 = 2;
/// Pressure mode: the rate limit before the mid-run reload, in percent of the submit rate.
pub const PRESSURE_RATE_BEFORE_PERCENT: u64 = 80;
/// Pressure mode: the rate limit after the mid-run reload, in percent of the submit rate (a
/// raise: the backlog the lower limit left catches up at the new limit).
pub const PRESSURE_RATE_AFTER_PERCENT: u64 = 120;
/// Pressure mode: the budget, in percent of the tokens the whole load would cost.
pub const PRESSURE_BUDGET_PERCENT: u64 = 50;
/// Tokens one task's call costs at the simulator, input + output (measured: 50,160 tokens
/// served over 532 calls in a 20-round pressure run, seed 709227594). Only sizes the pressure
/// budget; the run checks that the budget did bind.
pub const TOKENS_PER_CALL: u64 = 95;
/// The nodes' `cluster.heartbeat_ms` (the default; the run does not set it).
pub const NODE_HEARTBEAT: Duration = Duration::from_millis(500);
/// How often a node's config watcher looks at its file (`config::reload::WATCH_INTERVAL`).
pub const CONFIG_WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// After its deadline, how much longer the run waits for a node to report a reloaded limit
/// (so the rate check knows when the change took effect).
const LIMIT_LATE_WAIT: Duration = Duration::from_secs(15);
/// Longest wait for the live nodes to report one unchanging budget spend after the drain
/// (settles are committed in the background, with retries).
const SPEND_SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// What to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub bin: PathBuf,
    pub nodes: usize,
    pub rounds: u32,
    pub seed: u64,
    /// Length of one round (fault + recovery + quiet time).
    pub round: Duration,
    /// Submissions per second.
    pub rate: u32,
    pub workers: usize,
    pub keep_dir: bool,
    /// Longest wait for a leader after a fault.
    pub recovery_timeout: Duration,
    /// Longest wait for every acknowledged task to be final.
    pub drain_timeout: Duration,
    /// Longest wait for the final agreement on leader, term and task counts.
    pub converge_timeout: Duration,
    /// Quiet load before the first fault.
    pub warmup: Duration,
    /// The budget's `total_cost_usd` ([`BUDGET_COST_USD`]); `None` for a token limit only.
    pub budget_cost_usd: Option<f64>,
    /// Pressure mode: the budget and the rate limit bind, and the rate limit is raised by a
    /// hot reload in the middle of the run (see the module doc).
    pub pressure: bool,
}

impl RunConfig {
    pub fn new(bin: PathBuf, nodes: usize, rounds: u32, seed: u64) -> RunConfig {
        RunConfig {
            bin,
            nodes,
            rounds,
            seed,
            round: Duration::from_secs(10),
            rate: 10,
            workers: 4,
            keep_dir: false,
            recovery_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(180),
            converge_timeout: Duration::from_secs(60),
            warmup: Duration::from_secs(3),
            budget_cost_usd: Some(BUDGET_COST_USD),
            pressure: false,
        }
    }

    /// The command line that replays this run's schedule.
    pub fn repro(&self) -> String {
        format!(
            "openclaw-chaos --bin {} --seed {} --rounds {} --nodes {} --round-seconds {} --rate {}{}{}",
            self.bin.display(),
            self.seed,
            self.rounds,
            self.nodes,
            self.round.as_secs(),
            self.rate,
            if self.budget_cost_usd.is_none() {
                " --token-only-budget"
            } else {
                ""
            },
            if self.pressure { " --pressure" } else { "" }
        )
    }

    /// Submissions in one rate window at the configured rate.
    fn per_window(&self) -> u64 {
        u64::from(self.rate.max(1)) * RATE_WINDOW_SECONDS
    }

    /// How long the load runs: the warm-up and every round.
    pub fn load_duration(&self) -> Duration {
        self.warmup + self.round * self.rounds
    }

    /// The token budget the nodes start with: [`BUDGET_TOKENS`], or under pressure
    /// [`PRESSURE_BUDGET_PERCENT`] of what the whole load would cost.
    pub fn budget_tokens(&self) -> u64 {
        if !self.pressure {
            return BUDGET_TOKENS;
        }
        let calls = u64::from(self.rate.max(1)) * self.load_duration().as_secs();
        (calls * TOKENS_PER_CALL * PRESSURE_BUDGET_PERCENT / 100).max(1)
    }

    /// The rate limit the mid-run reload sets (pressure mode only).
    pub fn reloaded_requests(&self) -> Option<u64> {
        self.pressure
            .then(|| (self.per_window() * PRESSURE_RATE_AFTER_PERCENT / 100).max(1))
    }

    /// The round before which the pressure run reloads the rate limit: the middle one.
    pub fn reload_round(&self) -> Option<u32> {
        self.pressure.then_some(self.rounds / 2 + 1)
    }

    /// How long a node may take to report a reloaded limit: its watcher's interval, then
    /// 2 × the cluster heartbeat.
    pub fn limit_live_deadline(&self) -> Duration {
        CONFIG_WATCH_INTERVAL + NODE_HEARTBEAT * 2
    }

    /// The cluster-wide rate limit the nodes start with: [`RATE_HEADROOM`] × the submit rate
    /// calls of [`LIMITED_MODEL`] per [`RATE_WINDOW_SECONDS`], or under pressure
    /// [`PRESSURE_RATE_BEFORE_PERCENT`] of the submit rate.
    pub fn rate_spec(&self) -> RateSpec {
        let requests = if self.pressure {
            (self.per_window() * PRESSURE_RATE_BEFORE_PERCENT / 100).max(1)
        } else {
            RATE_HEADROOM * self.per_window()
        };
        RateSpec {
            model: LIMITED_MODEL.to_string(),
            window_ms: RATE_WINDOW_SECONDS * 1000,
            requests,
            change: None,
        }
    }

    /// What the run adds to every node's `openclaw.json`: the budget and the rate limit.
    pub fn node_extra_config(&self) -> Value {
        self.node_extra_config_with(self.rate_spec().requests, self.budget_tokens())
    }

    /// [`RunConfig::node_extra_config`] with another rate limit and token budget (a reload).
    pub fn node_extra_config_with(&self, requests: u64, budget_tokens: u64) -> Value {
        let r = self.rate_spec();
        let mut limits = json!({"total_tokens": budget_tokens});
        if let Some(usd) = self.budget_cost_usd {
            limits["total_cost_usd"] = json!(usd);
        }
        json!({
            "budget": {"enabled": true, "period": "monthly", "limits": limits},
            "rate_limiting": {
                "window_seconds": RATE_WINDOW_SECONDS,
                "per_model": {r.model: {"requests_per_minute": requests}},
            },
        })
    }

    /// An upper bound of the run's wall-clock time (start, rounds with their recovery waits,
    /// restore, drain, convergence, reads).
    pub fn time_bound(&self) -> Duration {
        let start = Duration::from_secs(60) * 2;
        let per_round =
            self.round + self.recovery_timeout + TERMINATE_GRACE + Duration::from_secs(60);
        start
            + self.warmup
            + per_round * self.rounds
            + Duration::from_secs(60) * self.nodes as u32
            + self.recovery_timeout
            + self.drain_timeout
            + self.converge_timeout
            + SPEND_SETTLE_TIMEOUT
            + Duration::from_secs(120)
    }
}

/// What happened in one round.
#[derive(Debug, Clone)]
pub struct RoundRecord {
    pub round: Round,
    /// The node(s) hit, resolved at the start of the round.
    pub targets: Vec<usize>,
    /// The leader (node index) when the round started.
    pub leader_before: Option<usize>,
    pub start_ms: u64,
    pub end_ms: u64,
    /// Why the fault was not injected.
    pub skipped: Option<String>,
    /// Harness errors during the round (a node that would not restart, ...).
    pub errors: Vec<String>,
    /// Time from undoing the fault until the live nodes agreed on a leader.
    pub recovered_after_ms: Option<u64>,
    /// Rounds that fault only followers: the agreed (leader id, term) at the start and after
    /// the recovery wait (pre-vote keeps them).
    pub leader_kept: Option<(Option<LeaderTerm>, Option<LeaderTerm>)>,
}

/// An agreed leader id and term.
pub type LeaderTerm = (String, u64);

/// The verdict of a run.
#[derive(Debug, Clone)]
pub struct Report {
    pub config: RunConfig,
    pub run_dir: PathBuf,
    pub kept: bool,
    pub partitions: Result<(), String>,
    pub rounds: Vec<RoundRecord>,
    pub submitted: u64,
    pub acked: usize,
    pub busy: u64,
    pub submit_errors: u64,
    pub gave_up: u64,
    pub refused: u64,
    pub refusals: Vec<String>,
    pub tasks: TaskTally,
    pub calls: CallTally,
    /// The budget check (replicated spend against served tokens and the limit).
    pub spend: SpendTally,
    /// The rate-limit check (calls per window of the limited model).
    pub rate_limit: RateSpec,
    pub rate: RateTally,
    /// Pressure mode: the rate-limit reload (per node: ms until it reported the new limit).
    pub reload: Option<ReloadRecord>,
    /// Pressure mode: the budget when the load stopped.
    pub hold: Option<HoldTally>,
    pub sim_log_truncated: bool,
    pub terms_seen: usize,
    pub leader_observations: u64,
    /// Longest time without an acknowledged submit while the load ran: (start ms, length ms,
    /// round it started in).
    pub max_gap: (u64, u64, Option<u32>),
    pub convergence: Result<Convergence, String>,
    pub violations: Vec<Violation>,
    pub elapsed: Duration,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// Rounds per fault kind: (injected, skipped).
    /// Nodes hit by an injected fault (each node of a partition's minority counts).
    pub fn node_faults(&self) -> u64 {
        node_faults(&self.rounds)
    }

    pub fn faults_by_kind(&self) -> BTreeMap<FaultKind, (u32, u32)> {
        let mut m = BTreeMap::new();
        for r in &self.rounds {
            let e = m.entry(r.round.fault.kind()).or_insert((0, 0));
            if r.skipped.is_some() {
                e.1 += 1;
            } else {
                e.0 += 1;
            }
        }
        m
    }
}

fn node_faults(rounds: &[RoundRecord]) -> u64 {
    rounds
        .iter()
        .filter(|r| r.skipped.is_none())
        .map(|r| r.targets.len() as u64)
        .sum()
}

/// A hot reload of a limit on every node.
#[derive(Debug, Clone, Default)]
pub struct ReloadRecord {
    /// What changed (`rate_limiting.per_model.fast.requests_per_minute 8 → 12`).
    pub what: String,
    /// Before which round.
    pub round: u32,
    /// Per node: ms from writing the file until its view reported the new value (`None`: not
    /// within the deadline plus [`LIMIT_LATE_WAIT`], or not running).
    pub seen_after_ms: Vec<(usize, Option<u64>)>,
    pub deadline_ms: u64,
}

/// A run that could not get as far as a verdict.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("starting the cluster (logs in {}): {source}", run_dir.display())]
    Start {
        source: HarnessError,
        run_dir: PathBuf,
    },
    #[error("{0}")]
    Setup(String),
}

/// Milliseconds since `t0`.
fn ms(t0: Instant) -> u64 {
    t0.elapsed().as_millis() as u64
}

/// Run the whole thing. Progress goes to stdout, one line per step.
pub async fn run(cfg: RunConfig) -> Result<Report, RunError> {
    let t0 = Instant::now();
    println!(
        "chaos: seed {} — {} nodes, {} rounds of {} s, {} tasks/s (bounded by {} s)",
        cfg.seed,
        cfg.nodes,
        cfg.rounds,
        cfg.round.as_secs(),
        cfg.rate,
        cfg.time_bound().as_secs()
    );
    println!("chaos: reproduce with: {}", cfg.repro());
    // Ours, not the harness's: kept when the run fails (logs!), removed below when it passes.
    let run_dir = tempfile::Builder::new()
        .prefix("openclaw-chaos-")
        .tempdir()
        .map_err(|e| RunError::Setup(format!("creating a run dir: {e}")))?
        .keep();
    let mut spec = ClusterSpec::new(cfg.bin.clone(), cfg.nodes);
    spec.workers = cfg.workers;
    spec.extra_config = cfg.node_extra_config();
    spec.run_dir = Some(run_dir.clone());
    let mut cluster = Cluster::start(spec)
        .await
        .map_err(|source| RunError::Start {
            source,
            run_dir: run_dir.clone(),
        })?;
    println!(
        "chaos: cluster up in {} ms (run dir {})",
        ms(t0),
        run_dir.display()
    );
    let partitions = cluster.partitions_available().map_err(|e| e.to_string());
    if let Err(why) = &partitions {
        println!(
            "chaos: !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
        );
        println!("chaos: !!! PARTITIONS ARE SKIPPED in this run: {why}");
        println!(
            "chaos: !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
        );
    }

    let urls = cluster.http_urls();
    let observer = Observer::start(urls.clone(), t0).map_err(RunError::Setup)?;
    let mut wspec = WorkloadSpec::new(cfg.seed);
    wspec.rate_per_sec = cfg.rate.max(1);
    let load = Workload::start(urls, wspec, t0).map_err(RunError::Setup)?;
    let load_start_ms = ms(t0);
    tokio::time::sleep(cfg.warmup).await;

    let mut violations = Vec::new();
    let mut records = Vec::new();
    // The nodes' config file as the run wrote it; reloads edit and rewrite it.
    let mut node_config = cluster.config().clone();
    let mut rate_change: Option<RateChange> = None;
    let mut reload: Option<ReloadRecord> = None;
    for round in schedule(cfg.seed, cfg.rounds, cfg.nodes, cfg.round) {
        if let (Some(at), Some(new)) = (cfg.reload_round(), cfg.reloaded_requests()) {
            if at == round.index {
                let old = cfg.rate_spec().requests;
                node_config["rate_limiting"]["per_model"][LIMITED_MODEL]["requests_per_minute"] =
                    json!(new);
                let what = format!(
                    "rate_limiting.per_model.{LIMITED_MODEL}.requests_per_minute {old} → {new}"
                );
                let (rec, change, v) = reload_limit(
                    &cluster,
                    &node_config,
                    &what,
                    round.index,
                    Probe::Rate(new),
                    cfg.limit_live_deadline(),
                )
                .await;
                println!(
                    "chaos: reload before round {}: {what}; seen {:?} ms after (deadline {} ms)",
                    round.index, rec.seen_after_ms, rec.deadline_ms
                );
                violations.extend(v);
                rate_change = Some(RateChange {
                    from_ms: change.0,
                    until_ms: change.1,
                    requests: new,
                });
                reload = Some(rec);
            }
        }
        let rec = play(&mut cluster, round, &cfg, &partitions, t0).await;
        if let Some((before, after)) = &rec.leader_kept {
            violations.extend(check_leader_kept(
                round.index,
                before.as_ref(),
                after.as_ref(),
            ));
        }
        println!(
            "chaos: round {}/{}: {}{}{}",
            round.index,
            cfg.rounds,
            describe(&rec),
            rec.recovered_after_ms
                .map(|m| format!(", leader agreed {m} ms after"))
                .unwrap_or_default(),
            if rec.errors.is_empty() {
                String::new()
            } else {
                format!(", errors: {}", rec.errors.join("; "))
            }
        );
        if rec.recovered_after_ms.is_none() && rec.skipped.is_none() {
            violations.push(Violation::NotRecovered {
                round: round.index,
                detail: format!(
                    "no agreed leader within {} s; {}",
                    cfg.recovery_timeout.as_secs(),
                    rec.errors.join("; ")
                ),
            });
        }
        println!("chaos: acknowledged so far: {}", load.acked_count());
        records.push(rec);
    }

    let load_end_ms = ms(t0);
    let outcome = load.stop().await;
    println!(
        "chaos: load stopped: {} submitted, {} acknowledged",
        outcome.submitted,
        outcome.acked.len()
    );
    restore(&mut cluster).await;
    if let Err(e) = cluster.wait_for_leader(cfg.recovery_timeout).await {
        violations.push(Violation::NotRecovered {
            round: cfg.rounds,
            detail: format!("after the final heal: {e}"),
        });
    }
    // Pressure: the budget holds work back now; look, then raise it so the held work drains.
    let held = if cfg.pressure {
        let views = settled_spend(&cluster, Duration::from_secs(10)).await;
        let at = epoch_ms();
        let states = budget_states(&cluster).await;
        println!("chaos: budget when the load stopped: spent {views:?}, states {states:?}");
        node_config["budget"]["limits"]["total_tokens"] = json!(BUDGET_TOKENS);
        let what = format!(
            "budget.limits.total_tokens {} → {BUDGET_TOKENS}",
            cfg.budget_tokens()
        );
        let (rec, _, v) = reload_limit(
            &cluster,
            &node_config,
            &what,
            cfg.rounds,
            Probe::Budget(BUDGET_TOKENS),
            cfg.limit_live_deadline(),
        )
        .await;
        println!(
            "chaos: reload after the load: {what}; seen {:?} ms after (deadline {} ms)",
            rec.seen_after_ms, rec.deadline_ms
        );
        violations.extend(v);
        Some((views, states, at))
    } else {
        None
    };

    let pending = drain(&cluster, &outcome.acked, cfg.drain_timeout).await;
    println!(
        "chaos: drain: {} of {} acknowledged tasks final{}",
        outcome.acked.len() - pending,
        outcome.acked.len(),
        if pending > 0 {
            format!(
                " ({pending} not final after {} s)",
                cfg.drain_timeout.as_secs()
            )
        } else {
            String::new()
        }
    );
    let convergence = cluster
        .wait_converged(cfg.converge_timeout)
        .await
        .map_err(|e| e.to_string());
    if let Err(detail) = &convergence {
        violations.push(Violation::NotConverged {
            detail: detail.clone(),
        });
    }
    let leader_log = observer.stop().await;
    violations.extend(leader_log.violations());

    let seen = final_views(&cluster, &outcome.acked).await;
    let (tasks, task_violations) = check_tasks(&outcome.acked, &seen);
    violations.extend(task_violations);
    let spent_views = settled_spend(&cluster, SPEND_SETTLE_TIMEOUT).await;
    let mut rate_limit = cfg.rate_spec();
    rate_limit.change = rate_change;
    let mut hold = None;
    let (calls, truncated, spend, rate) = match cluster.sim_calls().await {
        Ok(c) => {
            let (tally, v) = check_calls(&c.per_task(), &tasks.attempts, &outcome.acked);
            violations.extend(v);
            let (spend, v) = check_spend(&SpendFacts {
                views: spent_views,
                served: c.tokens_served(),
                served_complete: !c.truncated(),
                largest_call: c.largest_call(),
                node_faults: node_faults(&records),
                workers: cfg.workers as u64,
                repeated_calls: c.repeated_calls(),
                nodes: cfg.nodes as u64,
                limit: BUDGET_TOKENS,
                reservation: c.largest_call() + crate::workload::MAX_TOKENS,
            });
            violations.extend(v);
            let (rate, v) = check_rate(&c.calls, &rate_limit, cfg.nodes as u64);
            violations.extend(v);
            if let Some((views, states, at)) = held {
                let critical: BTreeSet<&str> = outcome
                    .acked
                    .iter()
                    .filter(|a| a.priority == openclaw_proto::Priority::Critical)
                    .map(|a| a.id.as_str())
                    .collect();
                let critical_tokens = c
                    .calls
                    .iter()
                    .filter(|x| x.at_ms <= at)
                    .filter(|x| x.task_id.as_deref().is_some_and(|t| critical.contains(t)))
                    .map(|x| x.tokens())
                    .sum();
                let (h, v) = check_hold(&HoldFacts {
                    views,
                    states,
                    limit: cfg.budget_tokens(),
                    nodes: cfg.nodes as u64,
                    reservation: c.largest_call() + crate::workload::MAX_TOKENS,
                    critical_tokens,
                });
                violations.extend(v);
                hold = Some(h);
            }
            if cfg.pressure && rate.at_limit == 0 {
                violations.push(Violation::NoPressure {
                    detail: format!(
                        "the rate limit of {} calls per {} ms never bound (busiest window {:?})",
                        rate_limit.requests, rate_limit.window_ms, rate.busiest
                    ),
                });
            }
            if let Some(ch) = rate_limit
                .change
                .as_ref()
                .filter(|_| rate.at_limit_after_change == 0)
            {
                violations.push(Violation::NoPressure {
                    detail: format!(
                        "the reloaded rate limit of {} calls per {} ms never bound after the change",
                        ch.requests, rate_limit.window_ms
                    ),
                });
            }
            (tally, c.truncated(), spend, rate)
        }
        Err(e) => {
            violations.push(Violation::NotConverged {
                detail: format!("could not read the simulator's call log: {e}"),
            });
            (
                CallTally::default(),
                false,
                SpendTally::default(),
                RateTally::default(),
            )
        }
    };

    let ack_times: Vec<u64> = outcome.acked.iter().map(|a| a.at_ms).collect();
    let (gap_start, gap_len) = longest_gap(&ack_times, load_start_ms, load_end_ms);
    let gap_round = records
        .iter()
        .find(|r| r.start_ms <= gap_start && gap_start < r.end_ms)
        .map(|r| r.round.index);

    let passed = violations.is_empty();
    drop(cluster);
    let kept = !passed || cfg.keep_dir;
    if !kept {
        let _ = std::fs::remove_dir_all(&run_dir);
    }
    Ok(Report {
        run_dir,
        kept,
        partitions,
        rounds: records,
        submitted: outcome.submitted,
        acked: tasks.acked,
        busy: outcome.busy,
        submit_errors: outcome.errors,
        gave_up: outcome.gave_up,
        refused: outcome.refused,
        refusals: outcome.refusals,
        tasks,
        calls,
        spend,
        rate_limit,
        rate,
        reload,
        hold,
        sim_log_truncated: truncated,
        terms_seen: leader_log.terms(),
        leader_observations: leader_log.observations(),
        max_gap: (gap_start, gap_len, gap_round),
        convergence: convergence.map_err(|e| e.to_string()),
        violations,
        elapsed: t0.elapsed(),
        config: cfg,
    })
}

fn describe(rec: &RoundRecord) -> String {
    match &rec.skipped {
        Some(why) => format!("{} — SKIPPED ({why})", rec.round.fault),
        None => format!(
            "{} on node(s) {:?} (leader was {})",
            rec.round.fault,
            rec.targets,
            rec.leader_before
                .map_or("unknown".to_string(), |l| format!("node {l}"))
        ),
    }
}

/// Inject one round's fault, undo it, wait for a leader, then idle to the end of the round.
async fn play(
    cluster: &mut Cluster,
    round: Round,
    cfg: &RunConfig,
    partitions: &Result<(), String>,
    t0: Instant,
) -> RoundRecord {
    let start = Instant::now();
    let mut rec = RoundRecord {
        round,
        targets: Vec::new(),
        leader_before: None,
        start_ms: ms(t0),
        end_ms: 0,
        skipped: None,
        errors: Vec::new(),
        recovered_after_ms: None,
        leader_kept: None,
    };
    let n = cluster.len();
    let leader = cluster.leader().await;
    rec.leader_before = leader;
    // Only followers are hit: the leader and the term must stay (pre-vote).
    let followers_only = matches!(
        round.fault,
        Fault::Pause {
            target: Target::Follower { .. },
            ..
        } | Fault::Partition {
            with_leader: false,
            ..
        }
    );
    let kept_before = if followers_only && leader.is_some() {
        agreed_leader(cluster).await
    } else {
        None
    };
    match round.fault {
        Fault::Kill { target, down } => match target.resolve(leader, n) {
            None => rec.skipped = Some("no leader known".into()),
            Some(i) => {
                rec.targets.push(i);
                if cluster.node(i).state() != NodeState::Down {
                    note(&mut rec.errors, cluster.kill(i));
                }
                tokio::time::sleep(down).await;
                note(&mut rec.errors, cluster.restart(i).await);
            }
        },
        Fault::Pause { target, pause } => match target.resolve(leader, n) {
            None => rec.skipped = Some("no leader known".into()),
            Some(i) => {
                rec.targets.push(i);
                match cluster.stop(i) {
                    Ok(()) => {
                        tokio::time::sleep(pause).await;
                        note(&mut rec.errors, cluster.cont(i));
                    }
                    Err(e) => rec.errors.push(e.to_string()),
                }
            }
        },
        Fault::Restart { target } => match target.resolve(leader, n) {
            None => rec.skipped = Some("no leader known".into()),
            Some(i) => {
                rec.targets.push(i);
                if cluster.node(i).state() != NodeState::Down {
                    match cluster.terminate(i, TERMINATE_GRACE).await {
                        Ok(true) => {}
                        Ok(false) => rec.errors.push(format!(
                            "node {i} ignored SIGTERM for {} s (killed)",
                            TERMINATE_GRACE.as_secs()
                        )),
                        Err(e) => rec.errors.push(e.to_string()),
                    }
                }
                note(&mut rec.errors, cluster.restart(i).await);
            }
        },
        Fault::Partition {
            minority,
            with_leader,
            pick,
            hold,
        } => {
            if let Err(why) = partitions {
                rec.skipped = Some(format!("partitions unavailable: {why}"));
            } else {
                let side = minority_side(n, leader, minority, with_leader, pick);
                let rest: Vec<usize> = (0..n).filter(|i| !side.contains(i)).collect();
                rec.targets = side.clone();
                match cluster.partition(&[side, rest]) {
                    Ok(()) => {
                        tokio::time::sleep(hold).await;
                    }
                    Err(e) => rec.errors.push(e.to_string()),
                }
                // Heal even when the partition failed half-way.
                note(&mut rec.errors, cluster.heal());
            }
        }
    }
    for (i, status) in cluster.exited() {
        rec.errors.push(format!(
            "node {i} exited by itself ({status}); see {}",
            cluster.node(i).log_path().display()
        ));
    }
    if rec.skipped.is_none() {
        let undone = Instant::now();
        match cluster.wait_for_leader(cfg.recovery_timeout).await {
            Ok(_) => rec.recovered_after_ms = Some(undone.elapsed().as_millis() as u64),
            Err(e) => rec.errors.push(e.to_string()),
        }
        if kept_before.is_some() {
            let after = if rec.recovered_after_ms.is_some() {
                agreed_leader(cluster).await
            } else {
                None
            };
            rec.leader_kept = Some((kept_before, after));
        }
    }
    let left = cfg.round.saturating_sub(start.elapsed());
    tokio::time::sleep(left).await;
    rec.end_ms = ms(t0);
    rec
}

/// The live nodes' agreed (leader id, term), a few looks a moment apart (a node that just
/// came back may need a heartbeat to list the leader).
async fn agreed_leader(cluster: &Cluster) -> Option<(String, u64)> {
    for _ in 0..10 {
        if let Ok(c) = cluster.agreement_now(false).await {
            return Some((c.leader_id, c.term));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    None
}

/// Milliseconds since the Unix epoch (the simulator's clock: same machine).
fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What a reload must show in a node's own view.
#[derive(Debug, Clone, Copy)]
enum Probe {
    /// `GET /api/limits`: [`LIMITED_MODEL`]'s `requests_per_window`.
    Rate(u64),
    /// `GET /api/budget`: [`BUDGET_SCOPE`]'s `limit_tokens`.
    Budget(u64),
}

/// Whether node `i` reports what `probe` expects.
async fn probe_node(cluster: &Cluster, i: usize, probe: Probe) -> bool {
    let base = cluster.node(i).http_url();
    let get = |path: &str| cluster.http().get(format!("{base}{path}")).send();
    match probe {
        Probe::Rate(want) => match get("/api/limits").await {
            Ok(r) => r
                .json::<openclaw_proto::ops::LimitsView>()
                .await
                .ok()
                .and_then(|v| {
                    v.scopes
                        .into_iter()
                        .find(|s| s.scope == LIMITED_MODEL)
                        .and_then(|s| s.requests_per_window)
                })
                .is_some_and(|n| u64::from(n) == want),
            Err(_) => false,
        },
        Probe::Budget(want) => match get("/api/budget").await {
            Ok(r) => r
                .json::<openclaw_proto::ops::BudgetView>()
                .await
                .ok()
                .and_then(|v| {
                    v.scopes
                        .into_iter()
                        .find(|s| s.scope == BUDGET_SCOPE)
                        .and_then(|s| s.limit_tokens)
                })
                .is_some_and(|n| n == want),
            Err(_) => false,
        },
    }
}

/// Each running node's `GET /api/budget` state of [`BUDGET_SCOPE`] (`?` when it did not say).
async fn budget_states(cluster: &Cluster) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for i in cluster.live() {
        let url = format!("{}/api/budget", cluster.node(i).http_url());
        let state = match cluster.http().get(url).send().await {
            Ok(r) => r
                .json::<openclaw_proto::ops::BudgetView>()
                .await
                .ok()
                .and_then(|v| v.scopes.into_iter().find(|s| s.scope == BUDGET_SCOPE))
                .map(|s| s.state),
            Err(_) => None,
        };
        out.push((i, state.unwrap_or_else(|| "?".into())));
    }
    out
}

/// Write `config` to every node's config file (atomically: a temporary file renamed over it,
/// as `openclaw-node config set` does, so a watcher never reads half a file), then wait until
/// every running node reports the new value. Returns the record, (written at, last seen at)
/// in Unix ms, and a violation per node that did not report it within `deadline`.
async fn reload_limit(
    cluster: &Cluster,
    config: &Value,
    what: &str,
    round: u32,
    probe: Probe,
    deadline: Duration,
) -> (ReloadRecord, (u64, u64), Vec<Violation>) {
    let mut violations = Vec::new();
    let text = serde_json::to_vec_pretty(config).unwrap_or_default();
    let written_at = epoch_ms();
    let start = Instant::now();
    let live = cluster.live();
    for i in 0..cluster.len() {
        let path = cluster.node(i).config_path();
        let tmp = path.with_extension("json.chaos-tmp");
        let r = std::fs::write(&tmp, &text).and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = r {
            violations.push(Violation::LimitNotLive {
                node: i,
                detail: format!("could not write {}: {e}", path.display()),
            });
        }
    }
    let mut seen: BTreeMap<usize, u64> = BTreeMap::new();
    let give_up = deadline + LIMIT_LATE_WAIT;
    while seen.len() < live.len() && start.elapsed() < give_up {
        let pending: Vec<usize> = live
            .iter()
            .copied()
            .filter(|i| !seen.contains_key(i))
            .collect();
        let looks = futures::future::join_all(
            pending
                .iter()
                .map(|&i| async move { (i, probe_node(cluster, i, probe).await) }),
        )
        .await;
        let now = start.elapsed().as_millis() as u64;
        for (i, ok) in looks {
            if ok {
                seen.insert(i, now);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let last_seen_at = written_at + seen.values().copied().max().unwrap_or(0);
    let until = if seen.len() < live.len() {
        epoch_ms()
    } else {
        last_seen_at
    };
    let deadline_ms = deadline.as_millis() as u64;
    for &i in &live {
        match seen.get(&i) {
            Some(&ms) if ms <= deadline_ms => {}
            Some(&ms) => violations.push(Violation::LimitNotLive {
                node: i,
                detail: format!("{what}: reported after {ms} ms, more than the {deadline_ms} ms allowed (config watch + 2 × heartbeat)"),
            }),
            None => violations.push(Violation::LimitNotLive {
                node: i,
                detail: format!("{what}: not reported within {} ms", give_up.as_millis()),
            }),
        }
    }
    let rec = ReloadRecord {
        what: what.to_string(),
        round,
        seen_after_ms: (0..cluster.len())
            .map(|i| (i, seen.get(&i).copied()))
            .collect(),
        deadline_ms,
    };
    (rec, (written_at, until), violations)
}

fn note(errors: &mut Vec<String>, r: Result<(), HarnessError>) {
    if let Err(e) = r {
        errors.push(e.to_string());
    }
}

/// Heal, continue stopped nodes and restart dead ones.
async fn restore(cluster: &mut Cluster) {
    if let Err(e) = cluster.heal() {
        println!("chaos: heal failed: {e}");
    }
    for (i, status) in cluster.exited() {
        println!("chaos: node {i} had exited by itself ({status}); restarting it");
    }
    for i in 0..cluster.len() {
        let r = match cluster.node(i).state() {
            NodeState::Running => Ok(()),
            NodeState::Stopped => cluster.cont(i),
            NodeState::Down => cluster.restart(i).await,
        };
        if let Err(e) = r {
            println!("chaos: could not bring node {i} back: {e}");
        }
    }
}

/// Wait until every acknowledged task is final (read from the live nodes in turn), the
/// deadline passes, or no task became final for [`DRAIN_STALL`] (a lost task never will).
/// Returns how many are not final.
async fn drain(cluster: &Cluster, acked: &[Acked], timeout: Duration) -> usize {
    let end = Instant::now() + timeout;
    let mut pending: BTreeSet<String> = acked.iter().map(|a| a.id.clone()).collect();
    let mut sweep = 0usize;
    let mut progress = Instant::now();
    while !pending.is_empty() && Instant::now() < end {
        if progress.elapsed() > DRAIN_STALL {
            println!(
                "chaos: drain: no task became final for {} s; giving up on {} task(s)",
                DRAIN_STALL.as_secs(),
                pending.len()
            );
            break;
        }
        let live = cluster.live();
        if live.is_empty() {
            break;
        }
        sweep += 1;
        let ids: Vec<String> = pending.iter().cloned().collect();
        let finals: Vec<Option<String>> = futures::stream::iter(ids.into_iter().enumerate())
            .map(|(k, id)| {
                let node = live[(k + sweep) % live.len()];
                async move {
                    match cluster.task(node, &id).await {
                        Ok(Some(t)) if t.status.is_final() => Some(id),
                        _ => None,
                    }
                }
            })
            .buffer_unordered(READS_IN_FLIGHT_MAX)
            .collect()
            .await;
        for id in finals.into_iter().flatten() {
            if pending.remove(&id) {
                progress = Instant::now();
            }
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    pending.len()
}

/// Each live node's replicated spend of [`BUDGET_SCOPE`], once every live node answers with
/// the same value twice in a row a second apart (settles are committed in the background), or
/// the last answers when `timeout` passes first.
async fn settled_spend(cluster: &Cluster, timeout: Duration) -> Vec<(usize, Option<u64>)> {
    let end = Instant::now() + timeout;
    let mut last: Vec<(usize, Option<u64>)> = Vec::new();
    loop {
        let mut answered = true;
        let now: Vec<(usize, Option<u64>)> = cluster
            .statuses()
            .await
            .into_iter()
            .filter_map(|(i, v)| match v {
                Some(v) => Some((i, v.spent_tokens(BUDGET_SCOPE))),
                None => {
                    answered = false;
                    None
                }
            })
            .collect();
        let agreed = now.windows(2).all(|w| w[0].1 == w[1].1);
        if (answered && agreed && now == last) || Instant::now() >= end {
            return now;
        }
        last = now;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Every acknowledged task as every live node sees it.
async fn final_views(cluster: &Cluster, acked: &[Acked]) -> BTreeMap<String, Vec<(usize, Seen)>> {
    let live = cluster.live();
    let ids: BTreeSet<&str> = acked.iter().map(|a| a.id.as_str()).collect();
    let reads: Vec<(String, usize, Seen)> = futures::stream::iter(
        ids.into_iter()
            .flat_map(|id| live.iter().map(move |&i| (id, i))),
    )
    .map(|(id, i)| async move {
        let seen = match cluster.task(i, id).await {
            Ok(Some(t)) => Seen::Found(t),
            Ok(None) => Seen::Missing,
            Err(e) => Seen::NoAnswer(e.to_string()),
        };
        (id.to_string(), i, seen)
    })
    .buffer_unordered(READS_IN_FLIGHT_MAX)
    .collect()
    .await;
    let mut m: BTreeMap<String, Vec<(usize, Seen)>> = BTreeMap::new();
    for (id, i, seen) in reads {
        m.entry(id).or_default().push((i, seen));
    }
    for v in m.values_mut() {
        v.sort_by_key(|(i, _)| *i);
    }
    m
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(f, "==================== chaos summary ====================")?;
        writeln!(
            f,
            "seed {}: {} nodes, {} rounds of {} s, {} tasks/s, {:.0} s in all",
            c.seed,
            c.nodes,
            c.rounds,
            c.round.as_secs(),
            c.rate,
            self.elapsed.as_secs_f64()
        )?;
        if let Err(why) = &self.partitions {
            writeln!(f, "PARTITIONS SKIPPED: {why}")?;
        }
        let kinds: Vec<String> = self
            .faults_by_kind()
            .iter()
            .map(|(k, (done, skipped))| {
                if *skipped > 0 {
                    format!("{} {done} (+{skipped} skipped)", k.as_str())
                } else {
                    format!("{} {done}", k.as_str())
                }
            })
            .collect();
        writeln!(f, "faults: {}", kinds.join(", "))?;
        writeln!(
            f,
            "submits: {} started, {} acknowledged, {} busy answers (429/503), {} connection errors, {} gave up, {} refused",
            self.submitted, self.acked, self.busy, self.submit_errors, self.gave_up, self.refused
        )?;
        for r in &self.refusals {
            writeln!(f, "  refused: {r}")?;
        }
        let t = &self.tasks;
        writeln!(
            f,
            "tasks acknowledged {}: succeeded {}, failed {}, lost {}, not final {}, divergent {}, unverified {}",
            t.acked, t.succeeded, t.failed, t.lost, t.not_final, t.divergent, t.unverified
        )?;
        writeln!(
            f,
            "provider calls for acknowledged tasks: {} ({} duplicated over {} task(s); {} explained by attempts > 1){}; {} for unacknowledged tasks",
            self.calls.calls,
            self.calls.duplicated,
            self.calls.tasks_called_again,
            self.calls.explained,
            if self.sim_log_truncated { " [simulator log wrapped: counts are a lower bound]" } else { "" },
            self.calls.unacknowledged
        )?;
        let sp = &self.spend;
        match sp.spent {
            Some(spent) => writeln!(
                f,
                "budget `{BUDGET_SCOPE}`: spent {spent} tokens (same on every live node) of {} served by the simulator{}; unsettled {} (at most {}: {} node fault(s) × {} workers + repeated calls, × the largest call); limit {} (spend at most {})",
                sp.served,
                if self.sim_log_truncated { " [log wrapped: not compared]" } else { "" },
                sp.served.saturating_sub(spent),
                sp.unsettled_max,
                self.node_faults(),
                c.workers,
                sp.limit,
                sp.spent_max
            )?,
            None => writeln!(
                f,
                "budget `{BUDGET_SCOPE}`: NO agreed spend; {} tokens served by the simulator",
                sp.served
            )?,
        }
        let rl = &self.rate_limit;
        writeln!(
            f,
            "rate limit `{}` {} calls per {} s{} (sliding): {} calls, busiest {} ms window {}, {} window(s) at the limit{} (at most the limit + {} per window)",
            rl.model,
            rl.requests,
            rl.window_ms / 1000,
            rl.change
                .as_ref()
                .map(|ch| format!(", then {} by a reload", ch.requests))
                .unwrap_or_default(),
            self.rate.calls,
            rl.window_ms,
            self.rate
                .busiest
                .map_or("none".to_string(), |(w, n)| format!("{n} calls (from {w})")),
            self.rate.at_limit,
            if rl.change.is_some() {
                format!(" ({} after the change)", self.rate.at_limit_after_change)
            } else {
                String::new()
            },
            c.nodes
        )?;
        if let Some(r) = &self.reload {
            writeln!(
                f,
                "reload before round {}: {}; every node's GET /api/limits showed it after {:?} ms (allowed {} ms)",
                r.round, r.what, r.seen_after_ms, r.deadline_ms
            )?;
        }
        if let Some(h) = &self.hold {
            writeln!(
                f,
                "budget pressure: limit {} tokens; when the load stopped: {} on node(s) {:?}, spent {} (at most {}: limit + one reservation per node + critical work)",
                h.limit,
                if h.held_on.is_empty() { "NOT exhausted (no node held work)" } else { "exhausted, non-critical work held" },
                h.held_on,
                h.spent.map_or("?".to_string(), |s| s.to_string()),
                h.bound
            )?;
        }
        writeln!(
            f,
            "leaders: {} term(s) seen in {} observations",
            self.terms_seen, self.leader_observations
        )?;
        let (start, len, round) = self.max_gap;
        writeln!(
            f,
            "max failover gap (no acknowledged submit): {:.1} s from t={:.1} s{}",
            len as f64 / 1000.0,
            start as f64 / 1000.0,
            round.map(|r| format!(" (round {r})")).unwrap_or_default()
        )?;
        match &self.convergence {
            Ok(cv) => writeln!(
                f,
                "converged: leader {} (node {}), term {}, tasks {:?}",
                cv.leader_id, cv.leader, cv.term, cv.tasks
            )?,
            Err(e) => writeln!(f, "NOT converged: {e}")?,
        }
        const SHOWN_MAX: usize = 30;
        for v in self.violations.iter().take(SHOWN_MAX) {
            writeln!(f, "VIOLATION {v}")?;
        }
        if self.violations.len() > SHOWN_MAX {
            writeln!(
                f,
                "... and {} more violations",
                self.violations.len() - SHOWN_MAX
            )?;
        }
        if self.kept {
            writeln!(f, "logs: {}", self.run_dir.display())?;
        }
        writeln!(
            f,
            "verdict: {}",
            if self.passed() { "PASS" } else { "FAIL" }
        )?;
        write!(f, "reproduce: {}", c.repro())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nodes_get_a_budget_and_a_rate_limit_from_the_run() {
        // (rate, token-only, requests per window, cost limit, repro flag)
        let cases = [
            (10, false, 40, Some(BUDGET_COST_USD), false),
            (5, false, 20, Some(BUDGET_COST_USD), false),
            (5, true, 20, None, true),
        ];
        for (rate, token_only, requests, cost, flag) in cases {
            let mut cfg = RunConfig::new("node".into(), 3, 1, 7);
            cfg.rate = rate;
            if token_only {
                cfg.budget_cost_usd = None;
            }
            let spec = cfg.rate_spec();
            assert_eq!(
                (spec.model.as_str(), spec.window_ms, spec.requests),
                (LIMITED_MODEL, RATE_WINDOW_SECONDS * 1000, requests)
            );
            let x = cfg.node_extra_config();
            assert_eq!(x["budget"]["limits"]["total_tokens"], BUDGET_TOKENS);
            assert_eq!(x["budget"]["limits"]["total_cost_usd"].as_f64(), cost);
            assert_eq!(x["rate_limiting"]["window_seconds"], RATE_WINDOW_SECONDS);
            assert_eq!(
                x["rate_limiting"]["per_model"][LIMITED_MODEL]["requests_per_minute"],
                requests
            );
            assert_eq!(cfg.repro().ends_with(" --token-only-budget"), flag);
        }
    }

    #[test]
    fn under_pressure_both_limits_bind() {
        // 3 nodes, 20 rounds of 5 s after a 3 s warm-up, 5 tasks/s: 515 tasks.
        let mut cfg = RunConfig::new("node".into(), 3, 20, 7);
        cfg.round = Duration::from_secs(5);
        cfg.rate = 5;
        cfg.pressure = true;
        assert_eq!(cfg.load_duration(), Duration::from_secs(103));
        // 10 submissions per 2 s window: 8 before the reload, 12 after.
        assert_eq!(cfg.rate_spec().requests, 8);
        assert_eq!(cfg.reloaded_requests(), Some(12));
        assert_eq!(cfg.reload_round(), Some(11));
        // Half of 515 calls × TOKENS_PER_CALL.
        assert_eq!(cfg.budget_tokens(), 515 * TOKENS_PER_CALL / 2);
        let x = cfg.node_extra_config();
        assert_eq!(x["budget"]["limits"]["total_tokens"], cfg.budget_tokens());
        assert_eq!(
            x["rate_limiting"]["per_model"][LIMITED_MODEL]["requests_per_minute"],
            8
        );
        assert!(cfg.repro().ends_with(" --pressure"));
        assert_eq!(cfg.limit_live_deadline(), Duration::from_secs(2));
        // Without pressure nothing changes.
        cfg.pressure = false;
        assert_eq!(cfg.budget_tokens(), BUDGET_TOKENS);
        assert_eq!((cfg.reloaded_requests(), cfg.reload_round()), (None, None));
        assert_eq!(cfg.rate_spec().requests, 20);
    }
}

//! `openclaw-chaos`: one chaos run against real `openclaw-node` processes. Parses the flags,
//! runs [`openclaw_chaos::run`], prints the summary; exits 1 when a check fails, 2 when the run
//! could not start, 130 on Ctrl-C (the cluster is torn down first).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use openclaw_chaos::{rng::fresh_seed, run, RunConfig};

const EXAMPLES: &str = "\
Examples:
  cargo build --release -p openclaw-node
  openclaw-chaos --rounds 3 --round-seconds 8            a short run (about a minute)
  openclaw-chaos --nodes 5 --rounds 60                   a long run (about 15 minutes)
  openclaw-chaos --seed 1234 --rounds 10 --nodes 3       replay the schedule of seed 1234
  openclaw-chaos --seed 1234 --rounds 10 --plan          print that schedule without running it
  openclaw-chaos --pressure --rounds 20 --round-seconds 5 --rate 5
                                                         budget and rate limit binding, a reload mid-run";

#[derive(Debug, Parser)]
#[command(
    name = "openclaw-chaos",
    version,
    about = "Kill, pause, restart and partition a real openclaw-node cluster under load, then \
             check that nothing acknowledged was lost or completed twice.",
    after_help = EXAMPLES
)]
struct Args {
    /// The openclaw-node binary. Default: target/release/openclaw-node, else target/debug
    /// (under $CARGO_TARGET_DIR when set).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Nodes in the cluster (3 to 5 make sense; at most 9).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Fault rounds.
    #[arg(long, default_value_t = 10)]
    rounds: u32,
    /// Seed of the fault schedule and the workload (default: random, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Length of one round in seconds (at least 2).
    #[arg(long, default_value_t = 10)]
    round_seconds: u64,
    /// Task submissions per second.
    #[arg(long, default_value_t = 10)]
    rate: u32,
    /// Workers per node.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Print the fault schedule of this seed and exit (nothing is started).
    #[arg(long)]
    plan: bool,
    /// Give the nodes a budget with a token limit only (no cost limit). Shows a known node
    /// issue: the cluster stops granting budget slices within seconds (see the README).
    #[arg(long)]
    token_only_budget: bool,
    /// Pressure mode: a budget and a rate limit that both bind, the rate limit raised by a
    /// hot reload in the middle of the run (checked on every node), the budget raised after
    /// the load so the held work drains (see the README).
    #[arg(long)]
    pressure: bool,
    /// Keep the run dir (data dirs, configs, node logs) even when every check passes.
    #[arg(long)]
    keep_dir: bool,
}

/// The default binary: release, then debug, under $CARGO_TARGET_DIR or ./target.
fn default_bin() -> Option<PathBuf> {
    let mut roots = Vec::new();
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        roots.push(PathBuf::from(t));
    }
    roots.push(PathBuf::from("target"));
    roots
        .iter()
        .flat_map(|r| ["release", "debug"].map(|p| r.join(p).join("openclaw-node")))
        .find(|p| p.is_file())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let Some(bin) = args.bin.clone().or_else(default_bin) else {
        eprintln!(
            "openclaw-chaos: no openclaw-node binary found under target/release or target/debug; \
             build it (cargo build --release) or pass --bin PATH"
        );
        return ExitCode::from(2);
    };
    if !(1..=openclaw_harness::NODES_MAX).contains(&args.nodes) {
        eprintln!(
            "openclaw-chaos: --nodes must be 1..={}",
            openclaw_harness::NODES_MAX
        );
        return ExitCode::from(2);
    }
    let mut cfg = RunConfig::new(
        bin,
        args.nodes,
        args.rounds,
        args.seed.unwrap_or_else(fresh_seed),
    );
    cfg.round = Duration::from_secs(args.round_seconds.max(2));
    cfg.rate = args.rate.max(1);
    cfg.workers = args.workers.max(1);
    cfg.keep_dir = args.keep_dir;
    if args.token_only_budget {
        cfg.budget_cost_usd = None;
    }
    cfg.pressure = args.pressure;
    let repro = cfg.repro();
    if args.plan {
        println!("seed {}:", cfg.seed);
        for r in openclaw_chaos::faults::schedule(cfg.seed, cfg.rounds, cfg.nodes, cfg.round) {
            println!("  round {}: {}", r.index, r.fault);
        }
        return ExitCode::SUCCESS;
    }
    tokio::select! {
        r = run(cfg) => match r {
            Ok(report) => {
                println!("{report}");
                if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) }
            }
            Err(e) => {
                eprintln!("openclaw-chaos: {e}");
                eprintln!("reproduce: {repro}");
                ExitCode::from(2)
            }
        },
        _ = tokio::signal::ctrl_c() => {
            // Leaving the select dropped the run, and with it every process and the firewall chain.
            eprintln!("openclaw-chaos: interrupted; reproduce with: {repro}");
            ExitCode::from(130)
        }
    }
}

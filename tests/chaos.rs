//! A short chaos run in CI, in pressure mode: 3 real nodes of this crate's binary, 20 rounds
//! of kills, pauses, restarts and partitions under load with a budget and a rate limit that
//! both bind (the rate limit raised by a hot reload half-way), then every check of the chaos
//! suite (nothing acknowledged lost or completed twice, one leader per term, a follower fault
//! keeps the leader, recovery, convergence, budget spend within the leases and held at the
//! limit, the cluster-wide rate limit over any sliding window, the reload live on every node).
//!
//! The seed is random (from the clock) unless `OPENCLAW_CHAOS_SEED` is set; it is printed with
//! the command that replays the schedule (`openclaw-chaos ... --seed N`). Partitions need root
//! and iptables: under `CI=true` their absence fails the test (`.ci/run` installs iptables);
//! elsewhere the run says so loudly and skips partition rounds.
//!
//! Sized for a debug build on 2 cores: about 2–3 minutes. The summary is printed in every case
//! (`cargo test --test chaos -- --nocapture` shows it when it passes).

use std::time::Duration;

use openclaw_chaos::{rng::fresh_seed, run, RunConfig};
use openclaw_harness::prereq;

const NODES: usize = 3;
const ROUNDS: u32 = 20;
const ROUND: Duration = Duration::from_secs(5);
/// Submissions per second: light enough for debug nodes on 2 cores.
const RATE: u32 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_chaos_run_keeps_every_invariant() {
    // Outside CI the run goes on without partitions (and says so loudly).
    prereq::require(
        "iptables partitions (root and iptables)",
        prereq::partitions(),
        "run as root with iptables installed (apt-get install iptables)",
    );
    let seed = match std::env::var("OPENCLAW_CHAOS_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("OPENCLAW_CHAOS_SEED={s:?} is not a number: {e}")),
        Err(_) => fresh_seed(),
    };
    let mut cfg = RunConfig::new(
        env!("CARGO_BIN_EXE_openclaw-node").into(),
        NODES,
        ROUNDS,
        seed,
    );
    cfg.round = ROUND;
    cfg.rate = RATE;
    // The recovery wait after a fault stays well above the election timeouts; shorter drains
    // than the CLI's keep a stuck run from eating the CI job.
    cfg.drain_timeout = Duration::from_secs(120);
    // A token-only budget, as operators write it (the cost-limited variant is covered too: the
    // lease arithmetic treats each dimension alike).
    cfg.budget_cost_usd = None;
    // Pressure mode: the budget and the rate limit both bind, the rate limit is raised by a
    // hot reload in the middle (checked on every node), follower faults must keep the leader.
    cfg.pressure = true;
    println!(
        "chaos test: seed {seed} (OPENCLAW_CHAOS_SEED={seed} replays it); reproduce: {}",
        cfg.repro()
    );
    let report = match run(cfg.clone()).await {
        Ok(r) => r,
        Err(e) => panic!(
            "the chaos run could not start: {e}\nreproduce: {}",
            cfg.repro()
        ),
    };
    println!("{report}");
    assert!(report.passed(), "chaos run failed:\n{report}");
}

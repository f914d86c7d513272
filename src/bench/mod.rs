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
//! 5. `cluster` (by name only, not in `all`): three nodes — see `cluster`;
//! 6. `soak` (by name only): constant task and chat load for `--minutes`, sampling the node's
//!    RSS, descriptors, threads, queue depth, p99 latency and log bytes every
//!    `SOAK_SAMPLE_EVERY`, then the growth per hour — see `soak`.
//! 7. `retention` (by name only): three nodes filled with `--retained` finished tasks, RSS and
//!    snapshot size per step, old-task GET latency, a joiner's catch-up — see `retention`.
//! 8. `context` (by name only): `--sessions` × `--turns` conversation turns with context
//!    management off, then on — tokens, cost, summary calls, turn latency — see `context`.
//! 9. `knowledge` (by name only): the knowledge cache's index build time for 100 and 1,000
//!    memory files, and memory tokens per prompt with and without retrieval — see `knowledge`.
//! 10. `semantic-cache` (by name only): precision/recall of the semantic request cache on the
//!     labelled pairs, and its vector index's latency at 10k/100k entries — see `semantic`.
//!
//! The node children log at the default level (`info`), as an operator runs them: a defect that
//! grows with work (spans, log lines) must show up here, not hide behind `RUST_LOG=warn`.
//!
//! The children and the load generator share the machine's cores; the figures are ratios
//! measured in one run, never absolute truths. Nothing here is a test: tests never time things.
//! Invariant: the bench talks to the node only over HTTP, like any client.
//!
//! Files: `common` (options, bounds, statistics, children, client), `single` (the four
//! single-node scenarios), `cluster`, `soak`, `retention`, `context`, `knowledge`, `semantic`.
//! This file only dispatches.

mod cluster;
mod common;
mod context;
mod knowledge;
mod retention;
mod semantic;
mod single;
mod soak;

pub use common::BenchArgs;

use serde_json::json;

use common::{build_profile, load_client, Scenario};
use single::*;

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
            || (args.scenario == Scenario::All
                && !matches!(
                    s,
                    Scenario::Cluster
                        | Scenario::Soak
                        | Scenario::Retention
                        | Scenario::Context
                        | Scenario::Knowledge
                        | Scenario::SemanticCache
                ))
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
        let report = soak::run(&client, &args).await?;
        soak::print(&report);
        out["soak"] = serde_json::to_value(&report)?;
    }
    if wants(Scenario::Cluster) {
        let report = cluster::run(&args, cores).await?;
        cluster::print(&report);
        out["cluster"] = serde_json::to_value(&report)?;
    }
    if wants(Scenario::Retention) {
        let report = retention::run(&args).await?;
        out["retention"] = serde_json::to_value(&report)?;
    }
    if wants(Scenario::Context) {
        let rows = context::run(&args).await?;
        context::print(&rows, &args);
        out["context"] = serde_json::to_value(&rows)?;
    }
    if wants(Scenario::Knowledge) {
        let report = knowledge::run(&args).await?;
        knowledge::print(&report);
        out["knowledge"] = serde_json::to_value(&report)?;
    }
    if wants(Scenario::SemanticCache) {
        let report = semantic::run(&args).await?;
        semantic::print(&report);
        out["semantic_cache"] = serde_json::to_value(&report)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(0)
}

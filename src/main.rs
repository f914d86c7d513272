//! `openclaw-node`: parse the command line, set up logging, load the config, run.
//!
//! The binary is the server crate (`openclaw-server`, the node as a library) plus the tools
//! that use it: the client (`submit`, `cache`), the operator commands (`ops/`), `bench` and
//! `demo`. The server never depends on these.

mod bench;
mod cli;
mod client;
mod ops;

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, LogFormat, NodeArgs};
use openclaw_server::{config, node, sim, util};

/// jemalloc as the process's allocator. glibc's malloc keeps what a burst frees (a snapshot
/// build, a full queue draining) in its arenas, so a node's RSS followed its largest burst so
/// far: a one-node cluster stood at 446 MB after 35,000 tasks and at 192 MB once
/// `malloc_trim(0)` was called from a debugger. jemalloc returns unused pages after a few
/// seconds (its dirty-page decay) and keeps fragmentation low with size classes; the node's
/// code is unchanged (BENCHMARKS.md, "Where the cluster's RSS went").
/// Off with `--no-default-features` (the system allocator, for heaptrack).
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How often `openclaw_process_heap_bytes` is refreshed.
#[cfg(feature = "jemalloc")]
const HEAP_STATS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// jemalloc upkeep for a node:
///
/// - **background threads on** (`background_thread`): jemalloc returns freed pages to the system
///   after its decay time (10 s) only when something allocates in that arena, unless its
///   background threads purge them. Without them an idle node kept what its last burst freed:
///   at 100k retained tasks a cluster node held 92-104 MiB and its allocator 193-230 MiB
///   resident (BENCHMARKS.md, issue 15).
/// - **its figures published** (`stats.allocated`, `active`, `resident`, `retained`,
///   `metadata`) as `openclaw_process_heap_bytes{kind}` every [`HEAP_STATS_EVERY`], from a small
///   thread of its own: what the program holds against what the allocator keeps for it tells a
///   leak from fragmentation. A failed read leaves the last figure.
#[cfg(feature = "jemalloc")]
fn start_allocator_upkeep() {
    use tikv_jemalloc_ctl::{background_thread, epoch, stats};
    if let Err(e) = background_thread::write(true) {
        tracing::warn!(error = %e, "jemalloc background threads not started: freed memory returns to the system only while the node allocates");
    }
    let run = || loop {
        if epoch::advance().is_ok() {
            let m = openclaw_server::metrics::metrics();
            let figures = [
                ("allocated", stats::allocated::read()),
                ("active", stats::active::read()),
                ("resident", stats::resident::read()),
                ("retained", stats::retained::read()),
                ("metadata", stats::metadata::read()),
            ];
            for (kind, v) in figures {
                if let Ok(v) = v {
                    m.set_heap_bytes(kind, v as u64);
                }
            }
        }
        std::thread::sleep(HEAP_STATS_EVERY);
    };
    if let Err(e) = std::thread::Builder::new()
        .name("heap-stats".into())
        .spawn(run)
    {
        tracing::warn!(error = %e, "heap statistics thread not started; openclaw_process_heap_bytes stays empty");
    }
}

/// The log subscriber: the level from `RUST_LOG` (default `info`, libraries at `warn`),
/// repeated peer warnings of Raft, replication and the mesh throttled per library and peer
/// ([`openclaw_server::activity::PeerLogThrottle`]), text or JSON on stderr — with ANSI colours
/// only when stderr is a terminal and `NO_COLOR` is unset.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,ractor_cluster=warn,ractor=warn,openraft=warn")
    });
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(openclaw_server::activity::PeerLogThrottle::default());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => registry.with(fmt).try_init(),
        LogFormat::Json => registry.with(fmt.json()).try_init(),
    };
}

/// Cancelled on SIGINT or SIGTERM.
fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        t.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown requested");
        t.cancel();
    });
    token
}

async fn run_node(args: NodeArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir.unwrap_or_else(util::default_data_dir);
    let (path, required) = match args.config {
        Some(p) => (p, true),
        None => (data_dir.join("openclaw.json"), false),
    };
    // Before loading, so an edit during start-up is reloaded.
    let source = openclaw_server::config::reload::ConfigSource::new(path.clone(), required);
    let mut cfg = config::load(Some(&path), required)?;
    if let Some(addr) = args.cluster {
        cfg.cluster.listen = Some(addr);
    }
    for j in &args.join {
        if let Some(problem) = config::join_address_problem(j) {
            anyhow::bail!("--join: {problem}");
        }
    }
    if !args.join.is_empty() {
        cfg.cluster.join = args.join;
    }
    let http = match &args.http {
        Some(h) => Some(node::resolve_addr(h).map_err(|e| anyhow::anyhow!("--http: {e:#}"))?),
        None => None,
    };
    if let Some(id) = args.node_id {
        cfg.cluster.node_id = Some(id.parse().map_err(|_| {
            anyhow::anyhow!("--node-id `{id}` is not a number (node ids are positive integers)")
        })?);
    }
    if !cfg.cluster.join.is_empty() && cfg.cluster.listen.is_none() {
        anyhow::bail!(
            "--join needs --cluster ADDR: the address this node listens on for the cluster"
        );
    }
    let cfg = cfg.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    #[cfg(feature = "jemalloc")]
    start_allocator_upkeep();
    let opts = node::NodeOptions {
        config: cfg,
        data_dir,
        http,
        config_source: Some(source),
    };
    node::run(opts, shutdown_on_signals()).await
}

async fn real_main(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        None | Some(Command::Run) => run_node(cli.node).await.map(|_| 0),
        Some(Command::SimProvider(a)) => {
            let listener = tokio::net::TcpListener::bind(a.listen).await?;
            tracing::info!(listen = %listener.local_addr()?, "sim-provider ready");
            sim::Sim::new(a.sim)
                .serve(listener, shutdown_on_signals())
                .await?;
            Ok(0)
        }
        Some(Command::Submit(a)) => crate::client::submit(a).await,
        Some(Command::Bench(a)) => crate::bench::run(a).await,
        Some(Command::Cache(a)) => crate::client::cache(a).await,
        Some(Command::Cron(c)) => crate::ops::cron::run(c).await,
        Some(Command::Status(a)) => crate::ops::status::run(a).await,
        Some(Command::Session(a)) => crate::ops::session::run(a).await,
        Some(Command::Memory(a)) => crate::ops::memory::run(a).await,
        Some(Command::Leave(a)) => crate::ops::status::leave(a).await,
        Some(Command::Demo(a)) => crate::ops::demo::run(a).await,
        Some(Command::Cluster(cli::ClusterCmd::GenCerts(a))) => crate::ops::gen_certs::run(a),
        Some(
            cmd @ (Command::Tokens(_)
            | Command::Cost(_)
            | Command::Queue(_)
            | Command::Doctor(_)
            | Command::Config(_)),
        ) => run_ops(cmd, &cli.node).await,
    }
}

/// The operator's commands (`tokens`, `cost`, `queue`, `doctor`, `config`). Flags given before
/// the command (`openclaw-node --data-dir X tokens`) count too.
async fn run_ops(cmd: Command, node: &NodeArgs) -> anyhow::Result<i32> {
    use crate::cli::ConfigLocation;
    use crate::ops;
    let outer = ConfigLocation {
        config: node.config.clone(),
        data_dir: node.data_dir.clone(),
    };
    match cmd {
        Command::Tokens(mut a) => {
            a.location = ops::merge_location(a.location, &outer);
            ops::tokens::run(a)
        }
        Command::Cost(mut a) => {
            a.location = ops::merge_location(a.location, &outer);
            ops::cost::run(a)
        }
        Command::Queue(a) => ops::queue::run(a).await,
        Command::Doctor(mut a) => {
            a.location = ops::merge_location(a.location, &outer);
            ops::doctor::run(a).await
        }
        Command::Config(c) => ops::config_cmd::run(c, &outer),
        other => anyhow::bail!("{other:?} is not an operator command"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.global.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(real_main(cli)) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

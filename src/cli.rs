//! The command line (clap): running a node, the standalone simulator, and client commands.
//! Parsing only; each command's work lives in its own module.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use openclaw_server::sim::SimOptions;

const EXAMPLES: &str = "\
Examples:
  openclaw-node                                   run a node on 127.0.0.1:3000 with ~/.openclaw
  openclaw-node --data-dir /tmp/oc --http 127.0.0.1:3100
  openclaw-node submit --wait 30 \"summarise today's alerts\"
  openclaw-node sim-provider --listen 127.0.0.1:9000 --latency-ms 20
  openclaw-node demo                              3 local nodes, a workload, a node killed mid-run";

#[derive(Debug, Parser)]
#[command(
    name = "openclaw-node",
    version,
    about = "A gateway that runs a team's AI agents: priority queue with preemption, model routing, \
             exact limits and budgets, an OpenAI-compatible API.",
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(flatten)]
    pub node: NodeArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Options every command understands.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Log format on stderr (level from RUST_LOG, default info).
    #[arg(long, value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,
}

/// Options of a running node (the default command).
#[derive(Debug, Args, Clone)]
pub struct NodeArgs {
    /// Config file (JSON). Default `<data-dir>/openclaw.json`; a missing default file means built-in defaults.
    #[arg(long, env = "OPENCLAW_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory: store, audit log, agent workspaces. Default `~/.openclaw`.
    #[arg(long, env = "OPENCLAW_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP listen address, HOST:PORT (overrides server.listen; a host name such as
    /// localhost:3105 is resolved). Default 127.0.0.1:3000.
    #[arg(long, env = "OPENCLAW_HTTP")]
    pub http: Option<String>,
    /// Cluster address to listen on (Raft and membership; the actor mesh uses the next port).
    /// Turns on cluster mode.
    #[arg(long)]
    pub cluster: Option<String>,
    /// A member's cluster address to join through, HOST:PORT, repeatable. Without it a new node
    /// bootstraps a cluster of its own; a restarted node rejoins from its data dir.
    #[arg(long)]
    pub join: Vec<String>,
    /// This node's id in the cluster (default: generated at first start, kept in the data dir).
    #[arg(long)]
    pub node_id: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (the default when no command is given).
    #[command(
        after_help = "Example:\n  openclaw-node run --data-dir /tmp/oc --http 127.0.0.1:3100"
    )]
    Run,
    /// Run the built-in simulator as a standalone OpenAI-compatible (and Anthropic-compatible) server.
    #[command(
        after_help = "Example:\n  openclaw-node sim-provider --listen 127.0.0.1:9000 --latency-ms 20 --error-rate 0.05\n  \
                            curl -s 127.0.0.1:9000/sim/calls"
    )]
    SimProvider(SimProviderArgs),
    /// Submit a task to a node, optionally waiting for its result.
    #[command(after_help = "Examples:\n  openclaw-node submit \"hello\"\n  \
                            openclaw-node submit --priority critical --wait 60 \"disk almost full on db-1\"\n  \
                            openclaw-node submit --json --source cron_job \"nightly report\"")]
    Submit(SubmitArgs),
    /// Measure the gateway: added latency on /v1/chat/completions and durable task throughput.
    #[command(
        after_help = "Example:\n  cargo build --release && ./target/release/openclaw-node bench"
    )]
    Bench(crate::bench::BenchArgs),
    /// Tokens per day from the audit log (the chapter's daily table) and the input/output ratio;
    /// with --breakdown, where the prompt tokens go (system, memory, tools, history, summary,
    /// input, output) beside the chapter's typical shares.
    #[command(
        after_help = "Examples:\n  openclaw-node tokens\n  openclaw-node tokens --days 30 --json\n  \
                            openclaw-node tokens --breakdown --days 1"
    )]
    Tokens(TokensArgs),
    /// Cost per model for a month at the configured prices, total and month-end projection.
    #[command(
        after_help = "Examples:\n  openclaw-node cost\n  openclaw-node cost --month 2026-10 --json"
    )]
    Cost(CostArgs),
    /// A node's queue: depth per level, running tasks, recent failures.
    #[command(
        after_help = "Examples:\n  openclaw-node queue\n  openclaw-node queue --failed --json"
    )]
    Queue(QueueArgs),
    /// A node's conversations: list them, show one (messages, summary, token counts), clear one.
    #[command(after_help = "Examples:\n  openclaw-node session list\n  \
                            openclaw-node session list --limit 50 --after s-alice\n  \
                            openclaw-node session show s-alice\n  \
                            openclaw-node session clear s-alice --node http://10.0.0.5:3000\n  \
                            openclaw-node session show s-alice --json")]
    Session(SessionArgs),
    /// An agent's memory files through a node (replicated to every node in a cluster): push a
    /// workspace folder's MEMORY.md, memory/*.md and skills, or list what the node holds.
    #[command(
        after_help = "Examples:\n  openclaw-node memory push ./workspace --agent main\n  \
                            openclaw-node memory list --agent main --node http://10.0.0.5:3000"
    )]
    Memory(MemoryArgs),
    /// Check config, data dir, disk, providers, clock and the node; each failure with its fix.
    #[command(
        after_help = "Example:\n  openclaw-node doctor --data-dir ~/.openclaw --node http://127.0.0.1:3000"
    )]
    Doctor(DoctorArgs),
    /// Read, change or check the config file (a running node picks up changes by itself).
    #[command(subcommand)]
    Config(ConfigCmd),
    /// The cluster as a node sees it: nodes (role, alive, last contact, lag), leader and term,
    /// tasks per node and level, budgets and leases, rate-limit headroom.
    #[command(after_help = "Examples:\n  openclaw-node status\n  \
                            openclaw-node status --node http://10.0.0.5:3000 --json")]
    Status(StatusArgs),
    /// Remove a node from the cluster cleanly (default: the node asked); its tasks move to the
    /// others and it stops.
    #[command(
        after_help = "Examples:\n  openclaw-node leave --node http://10.0.0.7:3000\n  \
                            openclaw-node leave --node http://10.0.0.5:3000 --id 1234"
    )]
    Leave(LeaveArgs),
    /// The node's cron jobs (next and last firing), or fire one now.
    #[command(subcommand)]
    Cron(CronCmd),
    /// Inspect or empty a running node's request cache.
    #[command(after_help = "Examples:\n  openclaw-node cache stats\n  \
                            openclaw-node cache prune --node http://127.0.0.1:3100\n  \
                            openclaw-node cache clear --json")]
    Cache(CacheArgs),
    /// Watch a cluster survive a crash: start 3 nodes and a simulator on this machine, push a
    /// mixed workload, SIGKILL a node mid-run, wait for every task, print the outcome.
    #[command(after_help = "Examples:\n  openclaw-node demo\n  \
                            openclaw-node demo --tasks 200 --kill owner --keep\n\n\
                            Nodes listen on 127.0.0.2-4 (Linux loopback), the simulator on 127.0.0.1; \
                            everything is stopped on exit, Ctrl-C included.")]
    Demo(DemoArgs),
    /// Cluster set-up tools: `gen-certs` (a CA and node certificates for cluster.tls).
    #[command(subcommand)]
    Cluster(ClusterCmd),
}

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Write a cluster CA and one certificate per node (for cluster.tls: mutual TLS on the
    /// cluster port and the mesh) into DIR, and print the config snippet for each node.
    #[command(
        after_help = "Examples:\n  openclaw-node cluster gen-certs ./certs --nodes 3\n  \
                            openclaw-node cluster gen-certs ./certs --names gateway-1,gateway-2,gateway-3\n  \
                            openclaw-node cluster gen-certs ./certs --nodes 3 --ips 10.0.0.5,10.0.0.6,10.0.0.7"
    )]
    GenCerts(GenCertsArgs),
}

#[derive(Debug, Args)]
pub struct GenCertsArgs {
    /// Where the PEM files go (created if needed).
    pub dir: std::path::PathBuf,
    /// Certificates for node-1 .. node-N.
    #[arg(long)]
    pub nodes: Option<usize>,
    /// Certificates for these node names (host names; each is in its certificate's SANs).
    #[arg(long, value_delimiter = ',')]
    pub names: Vec<String>,
    /// IP addresses added to every node certificate's SANs (127.0.0.1 always is).
    #[arg(long, value_delimiter = ',')]
    pub ips: Vec<std::net::IpAddr>,
    /// Replace a CA already in DIR.
    #[arg(long)]
    pub force: bool,
}

/// Which node `openclaw-node demo` kills mid-run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DemoKill {
    /// The Raft leader (an election follows; its running tasks run again elsewhere).
    Leader,
    /// The follower running the most tasks (no election; its tasks run again elsewhere).
    Owner,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Tasks to submit (half before the kill, half after).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub tasks: u64,
    /// Which node to kill mid-run.
    #[arg(long, value_enum, default_value = "leader")]
    pub kill: DemoKill,
    /// Keep the run dir (each node's config, data dir and node.log) and print its path.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub action: CacheAction,
}

#[derive(Debug, Clone, Subcommand)]
pub enum CronCmd {
    /// Every job: schedule, zone, kind, next firing, last firing (task, node, status).
    #[command(after_help = "Example:\n  openclaw-node cron list --node http://127.0.0.1:3000")]
    List(CronListArgs),
    /// Fire a job now (its own idempotency key; the schedule is unchanged).
    #[command(after_help = "Example:\n  openclaw-node cron run daily-cost")]
    Run(CronRunArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CronListArgs {
    #[command(flatten)]
    pub target: NodeUrl,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CronRunArgs {
    #[command(flatten)]
    pub target: NodeUrl,
    /// The job's name (`cron.jobs[].name`).
    pub name: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Subcommand)]
pub enum CacheAction {
    /// Entries, bytes (and bound), hits, misses, hit ratio, TTL and strategy.
    Stats(CacheOpts),
    /// Drop stale entries (older than ttl_seconds) and evict down to max_size_mb.
    Prune(CacheOpts),
    /// Drop every entry.
    Clear(CacheOpts),
}

#[derive(Debug, Clone, Args)]
pub struct CacheOpts {
    #[command(flatten)]
    pub target: NodeUrl,
    /// Print the node's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Where the operator commands find the config file and the data dir (as the node does).
#[derive(Debug, Args, Clone, Default)]
pub struct ConfigLocation {
    /// Config file (JSON). Default `<data-dir>/openclaw.json`.
    #[arg(long, env = "OPENCLAW_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory. Default `~/.openclaw`.
    #[arg(long, env = "OPENCLAW_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SessionArgs {
    #[command(subcommand)]
    pub action: SessionAction,
}

#[derive(Debug, Clone, Subcommand)]
pub enum SessionAction {
    /// Sessions in id order, a page at a time: id, agent, turns, messages, tokens, updated.
    List {
        #[command(flatten)]
        opts: SessionOpts,
        /// Sessions per page (1..=100).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Start after this session id (the `next` a previous page printed).
        #[arg(long)]
        after: Option<String>,
        /// Follow the cursor and print every page.
        #[arg(long)]
        all: bool,
    },
    /// One session: its recent messages, running summary and token counts.
    Show {
        #[command(flatten)]
        opts: SessionOpts,
        id: String,
    },
    /// Forget a session (its next turn starts a new conversation).
    Clear {
        #[command(flatten)]
        opts: SessionOpts,
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct MemoryArgs {
    #[command(subcommand)]
    pub action: MemoryAction,
}

#[derive(Debug, Clone, Subcommand)]
pub enum MemoryAction {
    /// Upload every memory file of a workspace folder (MEMORY.md, memory/*.md,
    /// skills/*.md, skills/*/SKILL.md); other files are left out.
    Push {
        #[command(flatten)]
        opts: SessionOpts,
        /// The workspace folder.
        dir: PathBuf,
        /// The agent whose memory it is.
        #[arg(long, default_value = "main")]
        agent: String,
    },
    /// The memory files the node holds for an agent.
    List {
        #[command(flatten)]
        opts: SessionOpts,
        #[arg(long, default_value = "main")]
        agent: String,
    },
    /// The node's knowledge-cache index of an agent's memory: files, chunks, last build.
    Status {
        #[command(flatten)]
        opts: SessionOpts,
        #[arg(long, default_value = "main")]
        agent: String,
    },
    /// What the knowledge cache retrieves for a query: the best chunks with their scores.
    Search {
        #[command(flatten)]
        opts: SessionOpts,
        /// The query (as a task's input would be).
        query: String,
        #[arg(long, default_value = "main")]
        agent: String,
        /// Chunks to show (1..=50).
        #[arg(long, default_value_t = 10)]
        k: usize,
    },
}

#[derive(Debug, Clone, Args)]
pub struct SessionOpts {
    #[command(flatten)]
    pub target: NodeUrl,
    /// Print the node's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TokensArgs {
    #[command(flatten)]
    pub location: ConfigLocation,
    /// Days to show, today included (local dates).
    #[arg(long, default_value_t = 7)]
    pub days: u32,
    /// Where the tokens go: prompt components (system, memory, tools, history, summary, input)
    /// and output over the period, beside the chapter's typical shares (§18.1), and what the
    /// context layer kept out of the prompts.
    #[arg(long)]
    pub breakdown: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CostArgs {
    #[command(flatten)]
    pub location: ConfigLocation,
    /// Month to report, YYYY-MM (default the current local month).
    #[arg(long)]
    pub month: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct QueueArgs {
    #[command(flatten)]
    pub target: NodeUrl,
    /// Only failed tasks and failed callback deliveries.
    #[arg(long)]
    pub failed: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: NodeUrl,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LeaveArgs {
    #[command(flatten)]
    pub target: NodeUrl,
    /// The node id to remove (default: the node at --node).
    #[arg(long)]
    pub id: Option<u64>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub location: ConfigLocation,
    #[command(flatten)]
    pub target: NodeUrl,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Print the effective value (defaults + file + OPENCLAW__ env) at a dotted KEY, as JSON.
    #[command(after_help = "Example:\n  openclaw-node config get model_routing.default_model")]
    Get {
        #[command(flatten)]
        location: ConfigLocation,
        key: String,
    },
    /// Set KEY in the config file (VALUE is JSON, else a string); validated before it is written.
    #[command(
        after_help = "Examples:\n  openclaw-node config set model_routing.default_model gpt-4o\n  \
                            openclaw-node config set budget.limits.total_cost_usd 80"
    )]
    Set {
        #[command(flatten)]
        location: ConfigLocation,
        key: String,
        value: String,
    },
    /// Check a config file (default the node's); exit 1 with the JSON path and reason.
    #[command(after_help = "Example:\n  openclaw-node config validate ./openclaw.json")]
    Validate {
        #[command(flatten)]
        location: ConfigLocation,
        file: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct SimProviderArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub sim: SimOptions,
}

/// Where a client command finds its node.
#[derive(Debug, Args, Clone)]
pub struct NodeUrl {
    /// The node's base URL.
    #[arg(long, env = "OPENCLAW_NODE", default_value = "http://127.0.0.1:3000")]
    pub node: String,
    /// Name of the environment variable holding the bearer token, if the node requires one.
    #[arg(long, default_value = "OPENCLAW_API_TOKEN")]
    pub token_env: String,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub target: NodeUrl,
    /// The task's input (the user's message).
    #[arg(required = true)]
    pub input: Vec<String>,
    /// Agent to run it (default main).
    #[arg(long)]
    pub agent: Option<String>,
    /// critical, high, normal, low or background (default from the source).
    #[arg(long)]
    pub priority: Option<String>,
    /// Source, e.g. api_call, cron_job, feishu_direct_message, manual_trigger.
    #[arg(long)]
    pub source: Option<String>,
    /// Explicit model.
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long)]
    pub session: Option<String>,
    #[arg(long)]
    pub task_type: Option<String>,
    #[arg(long)]
    pub max_tokens: Option<u32>,
    #[arg(long)]
    pub idempotency_key: Option<String>,
    #[arg(long)]
    pub callback_url: Option<String>,
    /// Wait up to this many seconds for the result.
    #[arg(long)]
    pub wait: Option<u64>,
    /// Print the task as JSON.
    #[arg(long)]
    pub json: bool,
}

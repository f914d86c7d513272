//! A node's start order, its wiring and its shutdown. `main` and the tests call [`start`] (or
//! [`run`]). This is the one place that builds every feature's handle and hands each actor
//! exactly what it uses ([`tree`]); the HTTP API gets the [`App`].
//!
//! Start: data dir → store (sled) → ledger recovery (tasks left running are requeued) → audit
//! log → providers (the embedded simulator serves every model without a key) → actors →
//! purge timer → HTTP. Only after all that does `/ready` answer 200.
//! Shutdown (the token is cancelled): stop accepting HTTP, leave running tasks to recovery
//! (they run again at the next start), stop the actors, flush the audit log and the store.

pub mod app;
pub mod health;
pub mod tree;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{broadcast, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::agents::Agents;
use crate::api::{self, AppState};
use crate::audit::AuditLog;
use crate::budget::accountant::AccountantArgs;
use crate::budget::{Budget, SharedBudget};
use crate::cache::store::CacheArgs;
use crate::cache::RequestCache;
use crate::calls::providers::{self, ProviderSet};
use crate::calls::Calls;
use crate::config::{Config, ConfigCell, Secret};
use crate::limits::{RateLimits, SharedRate};
use crate::sim::{Sim, SimOptions};
use crate::storage::Store;
use crate::tasks::delivery::DeliveryArgs;
use crate::tasks::ledger::{Ledger, LocalLedger};
use crate::tasks::running::{RunningSet, StopReason};
use crate::tasks::worker::Runner;
use crate::tasks::{RemoteTasks, Tasks, TASK_EVENTS_MAX};
use crate::util::{now_ms, Mono};
pub use app::App;
use health::Health;

/// How often finished tasks past `server.result_ttl_seconds` are purged.
pub const PURGE_EVERY: Duration = Duration::from_secs(60);

/// What a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub config: Config,
    pub data_dir: PathBuf,
    /// Overrides `server.listen`.
    pub http: Option<SocketAddr>,
    /// The file `config` was loaded from; watched and reloaded while the node runs.
    pub config_source: Option<crate::config::reload::ConfigSource>,
}

/// A started node.
pub struct RunningNode {
    pub http_addr: SocketAddr,
    /// The embedded simulator's address, when it serves any model.
    pub sim_addr: Option<SocketAddr>,
    pub app: Arc<App>,
    /// The node's store (flushed at shutdown).
    store: Store,
    audit: AuditLog,
    server: tokio::task::JoinHandle<()>,
    shutdown: CancellationToken,
    supervisor: ractor::ActorRef<crate::supervisor::SupervisorMsg>,
    audit_writer: tokio::task::JoinHandle<()>,
}

impl RunningNode {
    /// Wait for the shutdown token, then stop in order.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.shutdown.cancelled().await;
        self.stop().await
    }

    /// Stop now (the same order as on a signal).
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let app = self.app.clone();
        for slot in app.tasks.running.snapshot() {
            slot.request_stop(StopReason::Shutdown);
        }
        let _ = self.server.await;
        // Stop the actors and wait for them (the accountant persists its counters in its
        // post_stop), and only then flush the store.
        let _ = ractor::call_t!(
            self.supervisor,
            crate::supervisor::SupervisorMsg::Shutdown,
            crate::supervisor::SHUTDOWN_WAIT.as_millis() as u64 + 1_000
        );
        self.supervisor.stop(Some("node shutting down".into()));
        self.audit.flush().await;
        self.store.flush().await.context("flushing the store")?;
        drop(self.audit_writer);
        tracing::info!(node = %app.node, "node stopped");
        Ok(())
    }
}

/// Start a node and serve until `shutdown` is cancelled.
pub async fn run(opts: NodeOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(opts, shutdown).await?.wait().await
}

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// `host:port` → an address: an IP literal as is, a host name (`localhost:3105`) resolved, its
/// first IPv4 address preferred.
pub fn resolve_addr(addr: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Ok(a);
    }
    use std::net::ToSocketAddrs;
    let all: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .with_context(|| format!("`{addr}` is not HOST:PORT or its host does not resolve"))?
        .collect();
    all.iter()
        .find(|a| a.is_ipv4())
        .or_else(|| all.first())
        .copied()
        .with_context(|| format!("`{addr}` resolves to no address"))
}

/// The data dir exists (created if needed) and this process can write in it. Each failure
/// says what is wrong with the directory itself (permission denied, not a directory,
/// read-only file system) and how to fix it.
pub fn check_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    let fix = "fix its owner/permissions (chown/chmod) or pass another --data-dir";
    if let Err(e) = std::fs::create_dir_all(dir) {
        anyhow::bail!(
            "cannot create data dir {}: {}; {fix}",
            dir.display(),
            io_reason(&e)
        );
    }
    let probe = dir.join(format!(".write-probe-{}", std::process::id()));
    match std::fs::write(&probe, b"probe").and_then(|_| std::fs::remove_file(&probe)) {
        Ok(()) => Ok(()),
        Err(e) => anyhow::bail!(
            "data dir {} is not writable: {}; {fix}",
            dir.display(),
            io_reason(&e)
        ),
    }
}

/// An I/O error as an operator reads it: the kind first (`permission denied`), then the OS text.
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => format!("permission denied ({e})"),
        std::io::ErrorKind::NotADirectory => format!("a path component is not a directory ({e})"),
        std::io::ErrorKind::ReadOnlyFilesystem => format!("read-only file system ({e})"),
        _ => e.to_string(),
    }
}

/// What to add to a store-open error: "another node" only when the store's lock is taken.
pub fn store_open_hint(error: &str) -> &'static str {
    let e = error.to_ascii_lowercase();
    if e.contains("lock") || e.contains("wouldblock") || e.contains("temporarily unavailable") {
        " (another process, probably another node, is using this data dir: stop it or pass \
         another --data-dir)"
    } else if e.contains("permission denied") {
        " (permission denied: fix the owner/permissions of the data dir or pass another \
         --data-dir)"
    } else {
        ""
    }
}

/// Start every part of a node; returns once it is serving.
pub async fn start(opts: NodeOptions, shutdown: CancellationToken) -> anyhow::Result<RunningNode> {
    let started = Instant::now();
    let cfg = Arc::new(opts.config);
    let listen: SocketAddr = match opts.http {
        Some(a) => a,
        None => resolve_addr(&cfg.server.listen).with_context(|| {
            format!(
                "server.listen `{}` is not a usable address",
                cfg.server.listen
            )
        })?,
    };
    for w in cfg.warnings(&|v: &str| std::env::var(v).ok()) {
        tracing::warn!(key = %w.path, "config: {}", w.message);
    }
    let token = std::env::var(&cfg.auth.token_env)
        .ok()
        .filter(|t| !t.is_empty())
        .map(Secret::new);
    if token.is_none() && !is_loopback(&listen) {
        anyhow::bail!(
            "refusing to listen on {listen} without authentication: set {} to a bearer token \
             (or listen on 127.0.0.1)",
            cfg.auth.token_env
        );
    }
    let mut node = cfg
        .server
        .node_name
        .clone()
        .unwrap_or_else(crate::util::hostname);

    check_data_dir(&opts.data_dir)?;
    let store_dir = opts.data_dir.join("store");
    let store =
        Store::open_with_cache(&store_dir, cfg.server.store_cache_mb << 20).map_err(|e| {
            let e = e.to_string();
            anyhow::anyhow!(
                "opening the store in {}: {e}{}",
                store_dir.display(),
                store_open_hint(&e)
            )
        })?;
    // Bound before the cluster starts: the HTTP address is part of this node's membership.
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding HTTP on {listen}"))?;
    let http_addr = listener.local_addr()?;
    let cluster = match crate::cluster::cluster_listen(&cfg) {
        Some(_) => {
            let c =
                crate::cluster::Cluster::start(&cfg, &opts.data_dir, http_addr, shutdown.clone())
                    .await
                    .context("starting cluster mode")?;
            // Task owners are node ids in a cluster.
            node = openclaw_cluster::owner_name(c.id);
            Some(c)
        }
        None => None,
    };
    let ledger: Arc<dyn Ledger> = match &cluster {
        Some(c) => crate::cluster::ledger::RaftLedger::new(
            c.clone(),
            cfg.task_priority.preemption.allow_preempt_levels.clone(),
        ),
        None => LocalLedger::new(store.clone()).context("opening the task ledger")?,
    };
    let recovered = ledger.recover().await.context("recovering tasks")?;
    let (audit, audit_writer) = AuditLog::open(&opts.data_dir.join("logs"), &cfg.audit)
        .with_context(|| {
            format!(
                "opening the audit log in {}",
                opts.data_dir.join("logs").display()
            )
        })?;

    let http =
        providers::http_client(Duration::from_secs(10)).context("building the HTTP client")?;
    let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the embedded simulator")?;
    let sim_addr = sim_listener.local_addr()?;
    let sim_base = format!("http://{sim_addr}/v1");
    let env = |var: &str| std::env::var(var).ok();
    let providers = ProviderSet::build(&cfg, http.clone(), &sim_base, &env);
    crate::metrics::metrics().init_models(
        cfg.models.keys().map(String::as_str),
        &crate::calls::providers::ERROR_CODES,
    );
    let sim_addr = if providers.uses_embedded_sim(&sim_base) {
        let sim = Sim::new(SimOptions::default());
        let token = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = sim.serve(sim_listener, token).await {
                tracing::error!(error = %e, "embedded simulator stopped");
            }
        });
        Some(sim_addr)
    } else {
        None
    };

    // The wiring: one handle per feature, each built from exactly what it uses.
    let cfg_cell = ConfigCell::new((*cfg).clone());
    let mono = Mono::start();
    let leases = cluster
        .clone()
        .map(|c| Arc::new(crate::cluster::quota::Leases(c)));
    let limits = RateLimits {
        cfg: cfg_cell.clone(),
        mono,
        limiters: Default::default(),
        backoffs: Default::default(),
        shutdown: shutdown.clone(),
        shared: leases.clone().map(|l| l as Arc<dyn SharedRate>),
    };
    let calls = Calls {
        cfg: cfg_cell.clone(),
        providers: Arc::new(providers),
        audit: audit.clone(),
        node: node.clone(),
        breakers: Default::default(),
        limits: limits.clone(),
        mono,
    };
    let budget = Budget {
        cfg: cfg_cell.clone(),
        accountant: Default::default(),
        gate: Default::default(),
        shared: leases.map(|l| l as Arc<dyn SharedBudget>),
    };
    let (events, _) = broadcast::channel(TASK_EVENTS_MAX);
    let tasks = Tasks {
        cfg: cfg_cell.clone(),
        node: node.clone(),
        ledger: ledger.clone(),
        scheduler: Default::default(),
        running: Arc::new(RunningSet::default()),
        events,
        queued: Arc::new(AtomicUsize::new(0)),
        mono,
        store: store.clone(),
        remote: cluster.clone().map(|c| c as Arc<dyn RemoteTasks>),
    };
    // The Feishu channel (channels.feishu): its Open API client serves the event handler and
    // the delivery actor (replies).
    let feishu = cfg.channels.feishu.as_ref().map(|fc| {
        use crate::channels::feishu::{Feishu, FeishuClient, FeishuSecrets};
        let secrets = FeishuSecrets::from_env(fc, &env);
        let client = FeishuClient::new(
            &fc.base_url,
            &fc.app_id,
            secrets
                .app_secret
                .clone()
                .unwrap_or_else(|| crate::config::Secret::new("")),
            http.clone(),
        );
        Arc::new(Feishu::new(fc.clone(), secrets, client, tasks.clone()))
    });
    // The knowledge cache (cache.knowledge_cache): the agents' memory indexes, persisted in the
    // store; acting only while enabled (it reads the config in force).
    let knowledge = crate::knowledge::Knowledge::new(
        cfg_cell.clone(),
        calls.clone(),
        budget.clone(),
        store
            .index_tree(crate::knowledge::index::TREE)
            .context("opening the knowledge index")?,
        crate::agents::agent_names(&cfg)
            .into_iter()
            .map(|name| {
                let dir = crate::agents::agent::workspace_dir(&cfg, &opts.data_dir, &name);
                (name, dir)
            })
            .collect(),
    );
    // The request cache; in a cluster its answers go to the live peers and theirs come in
    // through the cluster port.
    let cache = RequestCache {
        actor: Default::default(),
        replicate: cluster.clone().map(|c| {
            crate::cache::replicate::Replicator::spawn(
                cfg_cell.clone(),
                Arc::new(crate::cluster::cache::CacheFanout(c)),
                shutdown.clone(),
            )
        }),
    };
    if let Some(c) = &cluster {
        let _ = c.cache.set(cache.clone());
    }
    let runner = Runner {
        tasks: tasks.clone(),
        agents: Agents {
            knowledge: Some(knowledge.clone()),
            ..Agents::default()
        },
        calls: calls.clone(),
        budget: budget.clone(),
        cache: cache.clone(),
        delivery: Default::default(),
        sessions: crate::sessions::Sessions {
            store: match &cluster {
                Some(c) => Arc::new(crate::cluster::sessions::RaftSessions::new(
                    c.clone(),
                    cfg_cell.clone(),
                )),
                None => Arc::new(
                    crate::sessions::LocalSessions::new(store.clone(), cfg_cell.clone())
                        .context("opening the sessions")?,
                ),
            },
        },
    };
    let health = Arc::new(Health::default());
    let wake = runner.tasks.scheduler.clone();
    let tree = tree::TreeArgs {
        runner: runner.clone(),
        delivery: DeliveryArgs {
            cfg: cfg_cell.clone(),
            ledger: ledger.clone(),
            store: store.clone(),
            http: http.clone(),
            shutdown: shutdown.clone(),
            channels: feishu
                .iter()
                .map(|f| crate::channels::feishu::FeishuReplies::sender(f.client().clone()))
                .collect(),
        },
        cache: CacheArgs {
            cfg: cfg_cell.clone(),
            store: store.clone(),
        },
        accountant: AccountantArgs {
            cfg: cfg_cell.clone(),
            store: store.clone(),
            node: node.clone(),
            http: http.clone(),
            gate: budget.gate.clone(),
            shared: budget.shared.clone(),
            // The budget let held work go: wake the scheduler.
            on_open: Arc::new(move || {
                if let Some(s) = wake.get() {
                    let _ = s.cast(crate::tasks::scheduler::SchedulerMsg::Wake);
                }
            }),
        },
        agents: crate::agents::agent_names(&cfg)
            .into_iter()
            .map(|name| {
                let dir = crate::agents::agent::workspace_dir(&cfg, &opts.data_dir, &name);
                (name, dir)
            })
            .collect(),
        limits: limits.clone(),
        policy: crate::supervisor::RestartPolicy::from_config(&cfg.server),
        health: health.clone(),
    };
    let supervisor = tree::start_tree(tree)
        .await
        .context("starting the actors")?;
    // preload_on_startup: the indexes are built before `/ready` answers 200.
    if cfg.cache.knowledge_cache.enabled && cfg.cache.knowledge_cache.preload_on_startup {
        knowledge.build_all().await;
    }
    knowledge.spawn_watcher(shutdown.clone());
    let cron = crate::cron::Cron {
        cfg: cfg_cell.clone(),
        node: node.clone(),
        tasks: tasks.clone(),
        marks: match &cluster {
            Some(c) => Arc::new(crate::cluster::cron::RaftMarks(c.clone())),
            None => {
                Arc::new(crate::cron::LocalMarks::open(&store).context("opening the cron marks")?)
            }
        },
        // `deliver_to.feishu_chat` goes through the Feishu channel's client when there is one.
        deliver: Arc::new(crate::cron::deliver::Deliverer::new(feishu.as_ref().map(
            |f| {
                Arc::new(crate::channels::feishu::cards::CronCards(
                    f.client().clone(),
                )) as Arc<dyn crate::cron::deliver::FeishuSender>
            },
        ))),
        logs_dir: opts.data_dir.join("logs"),
    };
    // Agent memory through the API: the workspaces themselves alone, the replicated files in
    // a cluster (materialised into every node's workspaces).
    let memory_dirs: std::collections::BTreeMap<String, std::path::PathBuf> =
        crate::agents::agent_names(&cfg)
            .into_iter()
            .map(|name| {
                let dir = crate::agents::agent::workspace_dir(&cfg, &opts.data_dir, &name);
                (name, dir)
            })
            .collect();
    let memory: Arc<dyn crate::agents::memory::MemoryStore> = match &cluster {
        Some(c) => {
            crate::cluster::memory::spawn_materialiser(
                c.clone(),
                memory_dirs.clone(),
                runner.agents.clone(),
                shutdown.clone(),
            );
            Arc::new(crate::cluster::memory::RaftMemory::new(
                c.clone(),
                memory_dirs,
            ))
        }
        None => Arc::new(crate::agents::memory::LocalMemory::new(
            memory_dirs,
            runner.agents.clone(),
        )),
    };
    let app = Arc::new(App {
        cfg: cfg_cell.clone(),
        node: node.clone(),
        tasks: tasks.clone(),
        calls,
        budget,
        limits,
        cache: runner.cache.clone(),
        agents: runner.agents.clone(),
        knowledge,
        sessions: runner.sessions.clone(),
        memory,
        cron: cron.clone(),
        health: health.clone(),
        cluster: cluster.clone(),
        feishu,
        config_source: opts.config_source.clone(),
        shutdown: shutdown.clone(),
    });

    {
        let (tasks, shutdown) = (tasks.clone(), shutdown.clone());
        let sessions = runner.sessions.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PURGE_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.cancelled() => return,
                }
                let server = tasks.cfg.get().server.clone();
                let ttl_ms = server.result_ttl_seconds.saturating_mul(1000);
                match tasks
                    .ledger
                    .purge_finished(now_ms().saturating_sub(ttl_ms), server.tasks_retained_max)
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        purged = n,
                        "purged finished tasks past their ttl or the retained maximum"
                    ),
                    Err(e) => tracing::error!(error = %e, "purge failed"),
                }
                match sessions.sweep(now_ms()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        forgotten = n,
                        "forgot sessions past session.ttl_hours or session.sessions_max"
                    ),
                    Err(e) => tracing::error!(error = %e, "session sweep failed"),
                }
            }
        });
    }

    crate::config::reload::spawn_watcher(
        cfg_cell.clone(),
        opts.config_source.clone(),
        shutdown.clone(),
    );
    {
        let (tasks, shutdown) = (tasks.clone(), shutdown.clone());
        tokio::spawn(async move {
            crate::activity::log_summaries(shutdown, move || {
                (
                    tasks.queued.load(std::sync::atomic::Ordering::Relaxed),
                    tasks.running.len(),
                )
            })
            .await
        });
    }

    if let Some(c) = &cluster {
        crate::cluster::start_mesh(&tasks.running, c.clone()).await?;
        crate::cluster::watcher::spawn(
            crate::cluster::watcher::Local {
                tasks: tasks.clone(),
                shutdown: shutdown.clone(),
            },
            c.clone(),
        );
    }
    let state = AppState {
        app: app.clone(),
        token,
        in_flight: Arc::new(Semaphore::new(cfg.server.max_in_flight_requests)),
    };
    let router = api::router(state);
    let server = {
        let token = shutdown.clone();
        tokio::spawn(async move {
            let res = axum::serve(listener, router)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await;
            if let Err(e) = res {
                tracing::error!(error = %e, "HTTP server failed");
            }
        })
    };
    health.set_started();
    crate::cron::ticker::spawn(cron, shutdown.clone());
    tracing::info!(
        node = %node,
        http = %http_addr,
        data_dir = %opts.data_dir.display(),
        recovered = recovered.len(),
        workers = cfg.server.workers,
        startup_ms = started.elapsed().as_millis() as u64,
        "openclaw-node ready"
    );
    for r in app.calls.providers.resolved() {
        tracing::info!(model = %r.model, served_by = r.served_by.as_str(), endpoint = %r.endpoint, reason = %r.reason, "model");
    }
    Ok(RunningNode {
        http_addr,
        sim_addr,
        app,
        store,
        audit,
        server,
        shutdown,
        supervisor,
        audit_writer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::scheduler::SchedulerMsg;
    use openclaw_proto::TaskStatus;

    async fn poll<T>(mut f: impl FnMut() -> Option<T>) -> T {
        for _ in 0..300 {
            if let Some(v) = f() {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("condition not reached in 15 s");
    }

    #[test]
    fn addresses_and_data_dir_errors() {
        assert_eq!(
            resolve_addr("127.0.0.1:3105").unwrap(),
            "127.0.0.1:3105".parse::<SocketAddr>().unwrap()
        );
        let a = resolve_addr("localhost:3105").unwrap();
        assert!(a.ip().is_loopback() && a.port() == 3105, "{a}");
        assert!(resolve_addr("localhost").is_err());
        assert!(resolve_addr("no-such-host.invalid:1").is_err());

        // (store error text, hint expected to contain)
        let cases = [
            ("IO error: could not acquire lock on \"/d/store/db\": Os { code: 11, kind: WouldBlock }", "another"),
            ("IO error: Permission denied (os error 13)", "permission denied"),
            ("corrupted data", ""),
        ];
        for (err, want) in cases {
            let h = store_open_hint(err);
            assert!(h.contains(want), "{err}: {h}");
            if want != "another" {
                assert!(!h.contains("another node"), "{err}: {h}");
            }
        }

        let dir = tempfile::tempdir().unwrap();
        check_data_dir(&dir.path().join("fresh")).unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let e = check_data_dir(&file.join("data")).unwrap_err().to_string();
        assert!(
            e.contains("not a directory") && !e.contains("another node"),
            "{e}"
        );
    }

    /// The node as a library: start in-process on port 0, crash the scheduler actor, and check
    /// the supervisor restarts it, the node stays ready, and queued work still runs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scheduler_crash_is_survived() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.server.restart_backoff_ms = 10;
        let opts = NodeOptions {
            config,
            data_dir: dir.path().to_path_buf(),
            http: Some("127.0.0.1:0".parse().unwrap()),
            config_source: None,
        };
        let node = start(opts, CancellationToken::new()).await.unwrap();
        let app = node.app.clone();
        assert!(
            node.sim_addr.is_some(),
            "no keys: the embedded simulator serves"
        );
        let before = app.tasks.scheduler.get().unwrap();
        before.cast(SchedulerMsg::Crash).unwrap();
        let after = poll(|| {
            app.tasks
                .scheduler
                .get()
                .filter(|s| s.get_id() != before.get_id())
        })
        .await;
        assert!(app.health.ready().is_ok());

        let http = reqwest::Client::new();
        let base = format!("http://{}", node.http_addr);
        let accepted: serde_json::Value = http
            .post(format!("{base}/api/tasks"))
            .json(&serde_json::json!({"input": "still working?"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = accepted["id"].as_str().unwrap().to_string();
        let view: serde_json::Value = http
            .get(format!("{base}/api/tasks/{id}?wait=15"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(view["status"], "succeeded", "{view}");
        assert_eq!(
            app.tasks.ledger.get(&id).unwrap().unwrap().status,
            TaskStatus::Succeeded
        );
        let _ = after;
        node.stop().await.unwrap();
    }

    /// In-process node: `reload_now` applies a valid edit, refuses a broken file and keeps the
    /// config it had, and reports "unchanged" when nothing changed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reload_now_applies_valid_and_keeps_old_on_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("openclaw.json");
        let write = |v: serde_json::Value| {
            std::fs::write(&file, serde_json::to_vec_pretty(&v).unwrap()).unwrap()
        };
        write(serde_json::json!({"server": {"workers": 2}}));
        let source = crate::config::reload::ConfigSource::new(file.clone(), true);
        let opts = NodeOptions {
            config: crate::config::load(Some(&file), true).unwrap(),
            data_dir: dir.path().to_path_buf(),
            http: Some("127.0.0.1:0".parse().unwrap()),
            config_source: Some(source.clone()),
        };
        let node = start(opts, tokio_util::sync::CancellationToken::new())
            .await
            .unwrap();
        let cfg = node.app.cfg.clone();
        let src = Some(&source);
        assert_eq!(
            crate::config::reload::reload_now(&cfg, src).await.unwrap(),
            crate::config::reload::ReloadReport::default()
        );

        write(
            serde_json::json!({"server": {"workers": 5}, "model_routing": {"default_model": "gpt-4o"}}),
        );
        let r = crate::config::reload::reload_now(&cfg, src).await.unwrap();
        // The node's own watcher may have applied it a moment before (then: unchanged).
        assert!(
            r.changed == ["model_routing", "server"] || r.changed.is_empty(),
            "{r:?}"
        );
        assert_eq!(cfg.get().server.workers, 5);
        assert_eq!(cfg.get().default_model(), "gpt-4o");

        write(serde_json::json!({"server": {"workers": 0}}));
        let e = crate::config::reload::reload_now(&cfg, src)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.workers"), "{e}");
        assert_eq!(cfg.get().server.workers, 5, "old config kept");
        node.stop().await.unwrap();
    }
}

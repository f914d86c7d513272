//! Cron (issue 12): `cron.jobs[]` fire on schedule, exactly once per cluster.
//!
//! - [`schedule`] (pure): a job's next firing in its zone, and which firings a tick runs
//!   (late ones run; missed ones follow `catch_up`).
//! - [`ticker`]: the loop every node runs; each due firing goes through [`Cron::fire`].
//! - [`deliver`]: where a firing's result goes (`deliver_to`): a webhook (POST JSON, retried)
//!   or a Feishu chat through the [`deliver::FeishuSender`] seam.
//! - [`reports`] (pure): the built-in kinds `cost_report` and `token_stats`, from the audit log.
//!
//! Exactly once: a firing of kind `agent` is a task admitted with the idempotency key
//! `cron:<job>:<scheduled_at>` (deduplicated by the ledger — through Raft in a cluster), then
//! the job's "last fired" mark ([`CronMarks`]) moves forward to it. Every node runs the
//! ticker, so a dead node or a leader change loses nothing; the losers of a race get the same
//! task back as a duplicate. The built-in kinds create no task: advancing the mark *is* the
//! claim (only the node whose `advance` moved it delivers). The mark is replicated in a
//! cluster (`openclaw_cluster::state::cron`) and kept in sled alone, so a restarted cluster
//! knows what it missed.

pub mod deliver;
pub mod reports;
pub mod schedule;
pub mod ticker;

use std::path::PathBuf;
use std::sync::Arc;

use openclaw_proto::ops::{CronJobView, CronLastView, CronRunView, CronView};
use openclaw_proto::{CronFiring, CronMark, TaskSubmit};

use crate::config::cron::{CronJob, CronKind};
use crate::config::ConfigCell;
use crate::storage::Store;
use crate::tasks::view::rfc3339;
use crate::tasks::{TaskError, Tasks};
use crate::util::now_ms;
use deliver::{Deliverer, Message};
use schedule::Schedule;

/// The source of every cron task (`task_priority.source_mapping.cron_job` is its priority).
pub const CRON_SOURCE: &str = "cron_job";

/// The idempotency key of a scheduled firing.
pub fn firing_key(job: &str, scheduled_at_ms: u64) -> String {
    format!("cron:{job}:{}", rfc3339(scheduled_at_ms))
}

/// Each job's "last fired" mark: replicated in a cluster, in sled alone.
#[async_trait::async_trait]
pub trait CronMarks: Send + Sync {
    fn last(&self, job: &str) -> Result<Option<CronMark>, String>;
    /// Move `job`'s mark forward to `mark`: `Ok(true)` when it moved (this caller claimed the
    /// firing), `Ok(false)` when the mark was already there or later.
    async fn advance(&self, job: &str, mark: CronMark) -> Result<bool, String>;
}

/// The marks of a node running alone: a sled tree, flushed before `advance` returns.
pub struct LocalMarks {
    tree: sled::Tree,
    store: Store,
    lock: tokio::sync::Mutex<()>,
}

impl LocalMarks {
    pub fn open(store: &Store) -> Result<LocalMarks, crate::storage::StorageError> {
        Ok(LocalMarks {
            tree: store.index_tree("cron_marks")?,
            store: store.clone(),
            lock: tokio::sync::Mutex::new(()),
        })
    }
}

#[async_trait::async_trait]
impl CronMarks for LocalMarks {
    fn last(&self, job: &str) -> Result<Option<CronMark>, String> {
        match self.tree.get(job.as_bytes()).map_err(|e| e.to_string())? {
            Some(v) => openclaw_proto::codec::decode(&v)
                .map(Some)
                .map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }

    async fn advance(&self, job: &str, mark: CronMark) -> Result<bool, String> {
        let _one_at_a_time = self.lock.lock().await;
        if let Some(m) = self.last(job)? {
            if m.scheduled_at_ms >= mark.scheduled_at_ms {
                return Ok(false);
            }
        }
        let bytes = openclaw_proto::codec::encode(&mark).map_err(|e| e.to_string())?;
        self.tree
            .insert(job.as_bytes(), bytes)
            .map_err(|e| e.to_string())?;
        self.store.flush().await.map_err(|e| e.to_string())?;
        Ok(true)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CronError {
    #[error("no cron job named `{name}`; jobs: {known}")]
    UnknownJob { name: String, known: String },
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error("cron marks: {0}")]
    Marks(String),
}

/// What one firing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    pub task_id: Option<String>,
    /// The task's status, `delivered`/`failed` (a built-in kind run by hand), `claimed` (a
    /// built-in kind whose delivery runs in the background) or `taken` (another node has it).
    pub status: String,
}

/// The cron handle: what the ticker and the API use.
#[derive(Clone)]
pub struct Cron {
    pub cfg: ConfigCell,
    /// This node's name (written into the marks it sets).
    pub node: String,
    pub tasks: Tasks,
    pub marks: Arc<dyn CronMarks>,
    pub deliver: Arc<Deliverer>,
    /// The audit log's directory (the built-in reports read it).
    pub logs_dir: PathBuf,
}

impl Cron {
    fn job(&self, name: &str) -> Result<CronJob, CronError> {
        let cfg = self.cfg.get();
        cfg.cron
            .jobs
            .iter()
            .find(|j| j.name == name)
            .cloned()
            .ok_or_else(|| CronError::UnknownJob {
                name: name.to_string(),
                known: cfg
                    .cron
                    .jobs
                    .iter()
                    .map(|j| j.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// `GET /api/cron`.
    pub fn view(&self) -> CronView {
        let cfg = self.cfg.get();
        let now = now_ms();
        let jobs = cfg
            .cron
            .jobs
            .iter()
            .map(|j| {
                let sched = Schedule::of(j).ok();
                let last = self.marks.last(&j.name).ok().flatten().map(|m| {
                    let status = match &m.task_id {
                        Some(id) => self
                            .tasks
                            .ledger
                            .get(id)
                            .ok()
                            .flatten()
                            .map(|r| r.status.as_str().to_string()),
                        None => Some("fired".to_string()),
                    };
                    CronLastView {
                        scheduled_at: rfc3339(m.scheduled_at_ms),
                        task_id: m.task_id,
                        node: m.node,
                        status,
                    }
                });
                CronJobView {
                    name: j.name.clone(),
                    schedule: j.schedule.clone(),
                    timezone: sched
                        .as_ref()
                        .map(|s| s.tz().name().to_string())
                        .unwrap_or_default(),
                    kind: kind_name(j.kind).to_string(),
                    next_at: sched.and_then(|s| s.next_after(now)).map(rfc3339),
                    last,
                }
            })
            .collect();
        CronView { jobs }
    }

    /// `cron run NAME`: fire now, with an idempotency key of its own.
    pub async fn run_now(&self, name: &str) -> Result<CronRunView, CronError> {
        let job = self.job(name)?;
        let at = now_ms();
        let fired = self.fire(&job, at, true).await?;
        Ok(CronRunView {
            job: job.name,
            scheduled_at: rfc3339(at),
            task_id: fired.task_id,
            status: fired.status,
        })
    }

    /// One firing of `job` for `scheduled_at_ms` (`manual`: a `cron run`).
    pub async fn fire(
        &self,
        job: &CronJob,
        scheduled_at_ms: u64,
        manual: bool,
    ) -> Result<Fired, CronError> {
        let mark = |task_id: Option<String>| CronMark {
            scheduled_at_ms,
            task_id,
            node: self.node.clone(),
        };
        if job.kind != CronKind::Agent {
            let claimed = manual
                || self
                    .marks
                    .advance(&job.name, mark(None))
                    .await
                    .map_err(CronError::Marks)?;
            if !claimed {
                return Ok(Fired {
                    task_id: None,
                    status: "taken".into(),
                });
            }
            let me = self.clone();
            let job2 = job.clone();
            let run = async move { me.report(&job2, scheduled_at_ms).await };
            if manual {
                let ok = run.await;
                return Ok(Fired {
                    task_id: None,
                    status: if ok { "delivered" } else { "failed" }.into(),
                });
            }
            tokio::spawn(run);
            return Ok(Fired {
                task_id: None,
                status: "claimed".into(),
            });
        }
        let key = if manual {
            format!("cron:{}:run:{}", job.name, uuid::Uuid::new_v4())
        } else {
            firing_key(&job.name, scheduled_at_ms)
        };
        let sub = TaskSubmit {
            agent: Some(job.agent.clone()),
            input: job.input.clone(),
            source: Some(CRON_SOURCE.into()),
            priority: job.priority,
            model: job.model.clone(),
            idempotency_key: Some(key),
            // A scheduled prompt asks for a fresh answer each time.
            cache: Some(false),
            ..Default::default()
        };
        let firing = CronFiring {
            job: job.name.clone(),
            scheduled_at_ms,
            manual,
        };
        let (rec, duplicate) = self.tasks.admit_with(sub, Some(firing)).await?;
        if !manual {
            if let Err(e) = self
                .marks
                .advance(&job.name, mark(Some(rec.id.clone())))
                .await
            {
                // The task exists; its idempotency key covers a retry of this firing.
                if let Some(n) = crate::throttled!(&job.name) {
                    tracing::warn!(job = %job.name, error = %e, suppressed = n, "cron: the job's mark did not move");
                }
            }
        }
        if !duplicate {
            if let Some(to) = job.deliver_to.clone() {
                let me = self.clone();
                let (id, name) = (rec.id.clone(), job.name.clone());
                tokio::spawn(
                    async move { me.deliver_task(&name, &id, scheduled_at_ms, &to).await },
                );
            }
        }
        Ok(Fired {
            task_id: Some(rec.id),
            status: rec.status.as_str().to_string(),
        })
    }

    /// Wait for a cron task to finish, then send its output to the job's destination.
    async fn deliver_task(
        &self,
        job: &str,
        id: &str,
        scheduled_at_ms: u64,
        to: &crate::config::cron::DeliverTo,
    ) {
        let rec = match self.tasks.get(id, deliver::TASK_WAIT).await {
            Ok(r) if r.status.is_final() => r,
            Ok(_) | Err(_) => {
                tracing::warn!(
                    job,
                    task = id,
                    "cron: the task did not finish in time; its result is not delivered"
                );
                return;
            }
        };
        let text = match (&rec.output, &rec.error) {
            (Some(o), _) => o.clone(),
            (None, Some(e)) => format!("failed: {} ({})", e.message, e.code),
            (None, None) => rec.status.as_str().to_string(),
        };
        let msg = Message {
            job: job.to_string(),
            kind: "agent".into(),
            title: format!("OpenClaw cron: {job}"),
            text,
            scheduled_at: rfc3339(scheduled_at_ms),
            task_id: Some(id.to_string()),
            status: rec.status.as_str().to_string(),
        };
        self.deliver.send(to, &msg).await;
    }

    /// A built-in kind: render its report from the audit log and send it; `true` when sent.
    async fn report(&self, job: &CronJob, scheduled_at_ms: u64) -> bool {
        let dir = self.logs_dir.clone();
        let entries = tokio::task::spawn_blocking(move || crate::audit::read_entries(&dir))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let cfg = self.cfg.get();
        let today = chrono::Local::now().date_naive();
        let (title, text) = match job.kind {
            CronKind::CostReport => reports::daily_cost(&entries, &cfg, today),
            _ => reports::token_table(&entries, today, reports::TOKEN_DAYS),
        };
        let msg = Message {
            job: job.name.clone(),
            kind: kind_name(job.kind).into(),
            title,
            text,
            scheduled_at: rfc3339(scheduled_at_ms),
            task_id: None,
            status: "succeeded".into(),
        };
        match &job.deliver_to {
            Some(to) => self.deliver.send(to, &msg).await,
            None => {
                tracing::info!(job = %job.name, "cron report (no deliver_to):\n{}", msg.text);
                true
            }
        }
    }
}

pub fn kind_name(k: CronKind) -> &'static str {
    match k {
        CronKind::Agent => "agent",
        CronKind::CostReport => "cost_report",
        CronKind::TokenStats => "token_stats",
    }
}

//! The load during a run: tasks submitted to random nodes at a bounded rate.
//!
//! A ticker fires `rate` times a second; each tick draws (from the seeded generator) the
//! priority and the nodes to try, then one submission runs concurrently (at most
//! `in_flight_max`). A submission tries up to `attempts_max` nodes: 202 → acknowledged (id and
//! node recorded); 429/503 → wait `Retry-After` (capped) and try another node; a connection
//! error or timeout → short pause, another node; any other status is a refusal, recorded with
//! its body. A submission never acknowledged is simply not counted as acknowledged: the checks
//! only hold the cluster to what it acknowledged. Every submission carries an idempotency key,
//! so a retry after a lost answer cannot create a second task.
//!
//! The generator decides *what* is submitted where; *when* the answers arrive depends on the
//! machine, so only the former is reproducible.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openclaw_proto::Priority;
use serde_json::json;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::checks::Acked;
use crate::rng::Rng;

/// `max_tokens` of every task: the output a node reserves for one call.
pub const MAX_TOKENS: u64 = 64;

/// How the load looks.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    pub seed: u64,
    /// Submissions started per second.
    pub rate_per_sec: u32,
    /// Submissions in flight at once (a tick waits for a slot).
    pub in_flight_max: usize,
    /// Nodes tried per submission.
    pub attempts_max: u32,
    /// Longest `Retry-After` honoured (longer ones are cut to this).
    pub retry_after_max: Duration,
    /// Deadline of one `POST /api/tasks` (it waits for a Raft commit).
    pub submit_timeout: Duration,
    /// Submissions in the whole run, at most.
    pub tasks_max: u64,
    /// Refusals kept verbatim for the report.
    pub refusals_kept_max: usize,
}

impl WorkloadSpec {
    pub fn new(seed: u64) -> WorkloadSpec {
        WorkloadSpec {
            seed,
            rate_per_sec: 10,
            in_flight_max: 32,
            attempts_max: 5,
            retry_after_max: Duration::from_secs(5),
            submit_timeout: Duration::from_secs(10),
            tasks_max: 1_000_000,
            refusals_kept_max: 20,
        }
    }
}

/// What the load achieved.
#[derive(Debug, Clone, Default)]
pub struct WorkloadOutcome {
    /// Submissions started.
    pub submitted: u64,
    pub acked: Vec<Acked>,
    /// 429/503 answers (each followed by a retry while attempts remain).
    pub busy: u64,
    /// Connection errors and timeouts.
    pub errors: u64,
    /// Submissions that ran out of attempts.
    pub gave_up: u64,
    /// Answers other than 202/429/503 (first few kept in `refusals`).
    pub refused: u64,
    pub refusals: Vec<String>,
}

/// A running load; [`Workload::stop`] ends it and returns what it achieved.
#[derive(Debug)]
pub struct Workload {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    outcome: Arc<Mutex<WorkloadOutcome>>,
}

impl Workload {
    /// Start submitting to `urls` (node base URLs, indexed like the cluster's nodes). Times in
    /// the outcome are milliseconds since `t0`.
    pub fn start(urls: Vec<String>, spec: WorkloadSpec, t0: Instant) -> Result<Workload, String> {
        if urls.is_empty() || spec.rate_per_sec == 0 || spec.in_flight_max == 0 {
            return Err("a workload needs nodes, a rate and at least one slot".into());
        }
        let http = reqwest::Client::builder()
            .timeout(spec.submit_timeout)
            .no_proxy()
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        let (stop, stopped) = watch::channel(false);
        let outcome = Arc::new(Mutex::new(WorkloadOutcome::default()));
        let task = tokio::spawn(run(
            Arc::new(urls),
            spec,
            t0,
            http,
            stopped,
            outcome.clone(),
        ));
        Ok(Workload {
            stop,
            task,
            outcome,
        })
    }

    /// Acknowledged so far.
    pub fn acked_count(&self) -> usize {
        self.outcome.lock().map(|o| o.acked.len()).unwrap_or(0)
    }

    /// Stop starting submissions, let those in flight finish (bounded by their attempts), and
    /// return the outcome.
    pub async fn stop(self) -> WorkloadOutcome {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let out = self.outcome.lock().map(|o| o.clone());
        out.unwrap_or_default()
    }
}

/// The priority mix: mostly normal, some urgent, some background (which runs only when idle,
/// so the drain exercises it).
const PRIORITY_WEIGHTS: [(Priority, u64); 5] = [
    (Priority::Critical, 5),
    (Priority::High, 20),
    (Priority::Normal, 45),
    (Priority::Low, 25),
    (Priority::Background, 5),
];

/// One planned submission (drawn from the generator at its tick).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub n: u64,
    pub priority: Priority,
    /// Node indices to try, in order.
    pub nodes: Vec<usize>,
}

/// The `n`-th plan from the generator (pure given the generator's state).
pub fn plan(rng: &mut Rng, n: u64, nodes: usize, attempts: u32) -> Plan {
    let weights: Vec<u64> = PRIORITY_WEIGHTS.iter().map(|(_, w)| *w).collect();
    let priority = PRIORITY_WEIGHTS[rng.weighted(&weights)].0;
    let nodes = (0..attempts.max(1))
        .map(|_| rng.below(nodes as u64) as usize)
        .collect();
    Plan { n, priority, nodes }
}

async fn run(
    urls: Arc<Vec<String>>,
    spec: WorkloadSpec,
    t0: Instant,
    http: reqwest::Client,
    mut stopped: watch::Receiver<bool>,
    outcome: Arc<Mutex<WorkloadOutcome>>,
) {
    let mut rng = Rng::derive(spec.seed, 2);
    let slots = Arc::new(Semaphore::new(spec.in_flight_max));
    let mut tick = tokio::time::interval(Duration::from_secs(1) / spec.rate_per_sec);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut inflight = tokio::task::JoinSet::new();
    let spec = Arc::new(spec);
    for n in 0..spec.tasks_max {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.changed() => break,
        }
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stopped.changed() => break,
        };
        if *stopped.borrow() {
            break;
        }
        let p = plan(&mut rng, n, urls.len(), spec.attempts_max);
        if let Ok(mut o) = outcome.lock() {
            o.submitted += 1;
        }
        let (urls, http, outcome, spec, stopped) = (
            urls.clone(),
            http.clone(),
            outcome.clone(),
            spec.clone(),
            stopped.clone(),
        );
        inflight.spawn(async move {
            submit(&urls, &http, &spec, p, t0, &outcome, stopped).await;
            drop(permit);
        });
        // Reap finished submissions so the set stays bounded by `in_flight_max`.
        while inflight.try_join_next().is_some() {}
    }
    while inflight.join_next().await.is_some() {}
}

async fn submit(
    urls: &[String],
    http: &reqwest::Client,
    spec: &WorkloadSpec,
    plan: Plan,
    t0: Instant,
    outcome: &Mutex<WorkloadOutcome>,
    stopped: watch::Receiver<bool>,
) {
    let body = json!({
        "agent": "main",
        "input": format!("chaos task {} of seed {}: summarise the incident", plan.n, spec.seed),
        "priority": plan.priority.as_str(),
        "source": "api_call",
        "max_tokens": MAX_TOKENS,
        "idempotency_key": format!("chaos-{}-{}", spec.seed, plan.n),
    });
    let note = |f: &dyn Fn(&mut WorkloadOutcome)| {
        if let Ok(mut o) = outcome.lock() {
            f(&mut o);
        }
    };
    for (attempt, &node) in plan.nodes.iter().enumerate() {
        // After stop, a submission that was refused does not try again.
        if attempt > 0 && *stopped.borrow() {
            break;
        }
        let Some(url) = urls.get(node) else { continue };
        let r = http
            .post(format!("{url}/api/tasks"))
            .json(&body)
            .send()
            .await;
        let r = match r {
            Ok(r) => r,
            Err(_) => {
                note(&|o| o.errors += 1);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let status = r.status().as_u16();
        match status {
            202 => {
                let at_ms = t0.elapsed().as_millis() as u64;
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                match v.get("id").and_then(|i| i.as_str()) {
                    Some(id) => {
                        let a = Acked {
                            id: id.to_string(),
                            node,
                            priority: plan.priority,
                            at_ms,
                        };
                        note(&|o| o.acked.push(a.clone()));
                    }
                    None => note(&|o| {
                        o.refused += 1;
                        if o.refusals.len() < spec.refusals_kept_max {
                            o.refusals
                                .push(format!("202 without an id from node {node}: {v}"));
                        }
                    }),
                }
                return;
            }
            429 | 503 => {
                note(&|o| o.busy += 1);
                let wait = retry_after(r.headers(), spec.retry_after_max);
                tokio::time::sleep(wait).await;
            }
            _ => {
                let text = r.text().await.unwrap_or_default();
                let text: String = text.chars().take(300).collect();
                note(&|o| {
                    o.refused += 1;
                    if o.refusals.len() < spec.refusals_kept_max {
                        o.refusals
                            .push(format!("node {node} answered {status}: {text}"));
                    }
                });
                return;
            }
        }
    }
    note(&|o| o.gave_up += 1);
}

/// `Retry-After` in seconds (fractions accepted), capped at `max`; 500 ms when absent or odd.
pub fn retry_after(headers: &reqwest::header::HeaderMap, max: Duration) -> Duration {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(max.as_secs_f64())))
        .unwrap_or(Duration::from_millis(500))
        .min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    #[test]
    fn plans_are_seeded() {
        let mut a = Rng::derive(5, 2);
        let mut b = Rng::derive(5, 2);
        let pa: Vec<Plan> = (0..50).map(|n| plan(&mut a, n, 3, 4)).collect();
        let pb: Vec<Plan> = (0..50).map(|n| plan(&mut b, n, 3, 4)).collect();
        assert_eq!(pa, pb);
        assert!(pa
            .iter()
            .all(|p| p.nodes.len() == 4 && p.nodes.iter().all(|&i| i < 3)));
        let kinds: std::collections::BTreeSet<Priority> = pa.iter().map(|p| p.priority).collect();
        assert!(kinds.len() >= 3, "mixed priorities: {kinds:?}");
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let max = Duration::from_secs(5);
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, max), Duration::from_millis(500));
        h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h, max), Duration::from_secs(2));
        h.insert(RETRY_AFTER, HeaderValue::from_static("120"));
        assert_eq!(retry_after(&h, max), max);
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, max), Duration::from_millis(500));
    }
}

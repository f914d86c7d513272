//! The observer: polls `GET /api/cluster` on every node during the whole run and feeds each
//! answer into a [`LeaderLog`], so "at most one leader per term" is checked against everything
//! any node said, not only at the end.
//!
//! Nodes are polled concurrently with a short timeout, so a stopped (SIGSTOP) or partitioned
//! node delays nobody. Memory is bounded by the leader log's own bound.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::checks::LeaderLog;
use openclaw_harness::status::ClusterStatus;

/// Time between two polls of all nodes.
pub const OBSERVE_INTERVAL: Duration = Duration::from_millis(250);
/// Deadline of one poll of one node.
pub const OBSERVE_TIMEOUT: Duration = Duration::from_millis(800);

/// A running observer; [`Observer::stop`] returns what it saw.
#[derive(Debug)]
pub struct Observer {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    log: Arc<Mutex<LeaderLog>>,
}

impl Observer {
    /// Poll `urls` (node base URLs, indexed like the cluster's nodes); times are ms since `t0`.
    pub fn start(urls: Vec<String>, t0: Instant) -> Result<Observer, String> {
        let http = reqwest::Client::builder()
            .timeout(OBSERVE_TIMEOUT)
            .no_proxy()
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        let (stop, mut stopped) = watch::channel(false);
        let log = Arc::new(Mutex::new(LeaderLog::default()));
        let shared = log.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(OBSERVE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => break,
                }
                let polls = urls.iter().enumerate().map(|(i, u)| {
                    let http = http.clone();
                    async move {
                        let r = http.get(format!("{u}/api/cluster")).send().await.ok()?;
                        let s: ClusterStatus = r.json().await.ok()?;
                        Some((i, t0.elapsed().as_millis() as u64, s))
                    }
                });
                let answers = futures::future::join_all(polls).await;
                if let Ok(mut log) = shared.lock() {
                    for (i, at, s) in answers.into_iter().flatten() {
                        log.record(i, at, &s);
                    }
                }
            }
        });
        Ok(Observer { stop, task, log })
    }

    /// Stop polling and return the leader log.
    pub async fn stop(self) -> LeaderLog {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let log = self.log.lock().map(|l| l.clone());
        log.unwrap_or_default()
    }
}

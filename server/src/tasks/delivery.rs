//! The delivery actor: POSTs finished tasks to their `callback_url`.
//!
//! A delivery is recorded in the store (`deliveries`) by the worker before this actor hears of
//! it, so it survives a crash or a restart. At most `DELIVERIES_IN_FLIGHT_MAX` POSTs run at
//! once, each in its own task (never in the handler), retried with exponential back-off up to
//! `server.callback_max_attempts`; then it is parked in `failed_deliveries` (shown by
//! `GET /api/queue` and `openclaw-node queue --failed`). The in-memory backlog is bounded by
//! `DELIVERY_BACKLOG_MAX`; beyond it entries wait in the store and a periodic rescan picks them up.
//!
//! A target that is not an HTTP URL but a chat channel's (`feishu:reply:<message_id>`) goes to
//! the [`ChannelSender`] that accepts it (a seam: channels implement it, `node/` wires it), with
//! the same attempts, back-off and parking.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::Instrument;

use openclaw_proto::TaskRecord;

use crate::config::ConfigCell;
use crate::metrics::metrics;
use crate::storage::{FailedDeliveryRecord, PendingDelivery, Store};
use crate::tasks::ledger::Ledger;
use crate::tasks::view::view_of;
use crate::util::{backoff_before, now_ms};

/// Callback POSTs running at once.
pub const DELIVERIES_IN_FLIGHT_MAX: usize = 64;
/// Deliveries waiting in memory; beyond it they wait in the store only.
pub const DELIVERY_BACKLOG_MAX: usize = 10_000;
/// How often the store is rescanned for deliveries that did not fit in memory.
pub const RESCAN_EVERY: Duration = Duration::from_secs(10);
/// How long a delivery waits for its task's outcome to reach this node's replica (cluster);
/// beyond it the delivery stays pending for the next rescan.
pub const REPLICA_WAIT: Duration = Duration::from_secs(5);

/// Delivers finished tasks to chat-channel targets (`<channel>:...` in `callback_url`).
#[async_trait::async_trait]
pub trait ChannelSender: Send + Sync {
    /// Whether this sender owns `target`.
    fn accepts(&self, target: &str) -> bool;
    /// Send the finished task's answer to `target`; the error is a short reason, free of secrets.
    async fn send(&self, target: &str, rec: &TaskRecord) -> Result<(), String>;
}

pub enum DeliveryMsg {
    /// Deliver this (already stored) pending delivery.
    Deliver(PendingDelivery),
    /// A delivery task ended (delivered or parked).
    /// `left_pending`: it is still in the store and the next rescan must pick it up.
    Finished { task_id: String, left_pending: bool },
    /// Look in the store for deliveries not in memory.
    Rescan,
}
impl ractor::Message for DeliveryMsg {}

/// What deliveries need: the task (read at delivery time), the store of pending and parked
/// deliveries, an HTTP client, the `server` settings, and the node's shutdown.
#[derive(Clone)]
pub struct DeliveryArgs {
    pub cfg: ConfigCell,
    pub ledger: Arc<dyn Ledger>,
    pub store: Store,
    pub http: reqwest::Client,
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Chat channels' senders (targets that are not HTTP URLs).
    pub channels: Vec<Arc<dyn ChannelSender>>,
}

pub struct DeliveryState {
    args: Arc<DeliveryArgs>,
    backlog: VecDeque<PendingDelivery>,
    known: HashSet<String>,
    in_flight: usize,
    overflowed: bool,
}

#[derive(Clone)]
pub struct Delivery;

impl Actor for Delivery {
    type Msg = DeliveryMsg;
    type State = DeliveryState;
    type Arguments = DeliveryArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: DeliveryArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(RESCAN_EVERY, || DeliveryMsg::Rescan);
        let mut state = DeliveryState {
            args: Arc::new(args),
            backlog: VecDeque::new(),
            known: HashSet::new(),
            in_flight: 0,
            overflowed: true,
        };
        rescan(&mut state);
        pump(&myself, &mut state);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DeliveryMsg::Deliver(d) => push(state, d),
            DeliveryMsg::Finished {
                task_id,
                left_pending,
            } => {
                state.in_flight = state.in_flight.saturating_sub(1);
                state.known.remove(&task_id);
                state.overflowed |= left_pending;
            }
            DeliveryMsg::Rescan => {
                if state.overflowed {
                    rescan(state);
                }
            }
        }
        pump(&myself, state);
        Ok(())
    }
}

fn push(state: &mut DeliveryState, d: PendingDelivery) {
    if state.known.contains(&d.task_id) {
        return;
    }
    if state.backlog.len() >= DELIVERY_BACKLOG_MAX {
        state.overflowed = true;
        return;
    }
    state.known.insert(d.task_id.clone());
    state.backlog.push_back(d);
}

fn rescan(state: &mut DeliveryState) {
    state.overflowed = false;
    match state.args.store.pending_deliveries() {
        Ok(pending) => {
            for d in pending {
                push(state, d);
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot read pending deliveries"),
    }
}

fn pump(myself: &ActorRef<DeliveryMsg>, state: &mut DeliveryState) {
    while state.in_flight < DELIVERIES_IN_FLIGHT_MAX {
        let Some(d) = state.backlog.pop_front() else {
            break;
        };
        state.in_flight += 1;
        let args = state.args.clone();
        let me = myself.clone();
        // A root span: a delivery belongs to no request and to no other task.
        let span = tracing::info_span!(parent: None, "callback", task = %d.task_id);
        tokio::spawn(
            async move {
                let task_id = d.task_id.clone();
                let left_pending = deliver(&args, d).await;
                let _ = me.cast(DeliveryMsg::Finished {
                    task_id,
                    left_pending,
                });
            }
            .instrument(span),
        );
    }
}

/// Deliver one callback; `true` when it was left in the store for the next rescan.
async fn deliver(cx: &DeliveryArgs, mut d: PendingDelivery) -> bool {
    let all = cx.cfg.get();
    let cfg = &all.server;
    // A callback is queued once the task is final; in a cluster this node's replica may apply
    // that outcome a moment after the leader answered the worker, so wait for it: a callback
    // never carries a task that is still `running` (a chat reply would be empty).
    let waited_until = tokio::time::Instant::now() + REPLICA_WAIT;
    let rec = loop {
        match cx.ledger.get(&d.task_id) {
            Ok(Some(rec)) if rec.status.is_final() => break rec,
            Ok(Some(_)) if tokio::time::Instant::now() < waited_until => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = cx.shutdown.cancelled() => return false,
                }
            }
            Ok(Some(rec)) => {
                // Still in the store: the next rescan tries again.
                tracing::warn!(status = rec.status.as_str(), "the task's outcome has not reached this replica yet; callback left for the next rescan");
                return true;
            }
            Ok(None) => {
                let _ = cx.store.remove_delivery(&d.task_id);
                return false;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read task for callback");
                return false;
            }
        }
    };
    let body = view_of(&rec);
    let channel = cx
        .channels
        .iter()
        .find(|c| c.accepts(&d.callback_url))
        .cloned();
    let mut last_error = String::new();
    while d.attempts < cfg.callback_max_attempts {
        d.attempts += 1;
        let wait = backoff_before(
            d.attempts,
            Duration::from_millis(cfg.callback_initial_delay_ms),
        );
        if !wait.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cx.shutdown.cancelled() => return false,
            }
        }
        let res = match &channel {
            Some(c) => c.send(&d.callback_url, &rec).await,
            None => post_callback(cx, &d.callback_url, &body, cfg.callback_timeout_ms).await,
        };
        match res {
            Ok(()) => {
                tracing::debug!(attempt = d.attempts, "callback delivered");
                metrics()
                    .callback_deliveries_total
                    .with_label_values(&["delivered"])
                    .inc();
                if let Err(e) = cx.store.remove_delivery(&d.task_id) {
                    tracing::error!(error = %e, "cannot clear delivered callback");
                }
                return false;
            }
            Err(e) => last_error = e,
        }
        metrics()
            .callback_deliveries_total
            .with_label_values(&["retried"])
            .inc();
        if let Some(suppressed) = crate::throttled!("callback") {
            tracing::warn!(attempt = d.attempts, error = %last_error, suppressed, "callback attempt failed");
        }
        let _ = cx.store.put_delivery(&d);
    }
    metrics()
        .callback_deliveries_total
        .with_label_values(&["failed"])
        .inc();
    tracing::error!(attempts = d.attempts, error = %last_error, "callback parked in failed deliveries");
    let failed = FailedDeliveryRecord {
        task_id: d.task_id.clone(),
        callback_url: d.callback_url.clone(),
        attempts: d.attempts,
        last_error,
        failed_at_ms: now_ms(),
    };
    let res = cx
        .store
        .put_failed_delivery(&failed)
        .and_then(|_| cx.store.remove_delivery(&d.task_id));
    if let Err(e) = res {
        tracing::error!(error = %e, "cannot park failed callback");
    }
    let _ = cx.store.flush().await;
    false
}

/// POST the task view to an HTTP callback; the error says what went wrong, without the URL.
async fn post_callback(
    cx: &DeliveryArgs,
    url: &str,
    body: &openclaw_proto::api::TaskView,
    timeout_ms: u64,
) -> Result<(), String> {
    let res = cx
        .http
        .post(url)
        .timeout(Duration::from_millis(timeout_ms))
        .json(body)
        .send()
        .await;
    match res {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("callback answered {}", r.status())),
        Err(e) if e.is_timeout() => Err("callback timed out".to_string()),
        Err(e) if e.is_connect() => Err("cannot connect to callback url".to_string()),
        Err(_) => Err("callback request failed".to_string()),
    }
}

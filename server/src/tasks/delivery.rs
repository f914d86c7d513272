//! The delivery actor: POSTs finished tasks to their `callback_url`.
//!
//! A delivery is recorded in the store (`deliveries`) by the worker before this actor hears of
//! it, so it survives a crash or a restart. At most `DELIVERIES_IN_FLIGHT_MAX` POSTs run at
//! once, each in its own task (never in the handler), retried with exponential back-off up to
//! `server.callback_max_attempts`; then it is parked in `failed_deliveries` (shown by
//! `GET /api/queue` and `openclaw-node queue --failed`). The in-memory backlog is bounded by
//! `DELIVERY_BACKLOG_MAX`; beyond it entries wait in the store and a periodic rescan picks them up.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::Instrument;

use crate::metrics::metrics;
use crate::runtime::{now_ms, Runtime};
use crate::storage::{FailedDeliveryRecord, PendingDelivery};

/// Callback POSTs running at once.
pub const DELIVERIES_IN_FLIGHT_MAX: usize = 64;
/// Deliveries waiting in memory; beyond it they wait in the store only.
pub const DELIVERY_BACKLOG_MAX: usize = 10_000;
/// How often the store is rescanned for deliveries that did not fit in memory.
pub const RESCAN_EVERY: Duration = Duration::from_secs(10);

pub enum DeliveryMsg {
    /// Deliver this (already stored) pending delivery.
    Deliver(PendingDelivery),
    /// A delivery task ended (delivered or parked).
    Finished { task_id: String },
    /// Look in the store for deliveries not in memory.
    Rescan,
}
impl ractor::Message for DeliveryMsg {}

pub struct DeliveryState {
    rt: Arc<Runtime>,
    backlog: VecDeque<PendingDelivery>,
    known: HashSet<String>,
    in_flight: usize,
    overflowed: bool,
}

pub struct Delivery;

impl Actor for Delivery {
    type Msg = DeliveryMsg;
    type State = DeliveryState;
    type Arguments = Arc<Runtime>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        rt: Arc<Runtime>,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(RESCAN_EVERY, || DeliveryMsg::Rescan);
        let mut state = DeliveryState {
            rt,
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
            DeliveryMsg::Finished { task_id } => {
                state.in_flight = state.in_flight.saturating_sub(1);
                state.known.remove(&task_id);
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
    match state.rt.store.pending_deliveries() {
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
        let rt = state.rt.clone();
        let me = myself.clone();
        // A root span: a delivery belongs to no request and to no other task.
        let span = tracing::info_span!(parent: None, "callback", task = %d.task_id);
        tokio::spawn(
            async move {
                let task_id = d.task_id.clone();
                deliver(&rt, d).await;
                let _ = me.cast(DeliveryMsg::Finished { task_id });
            }
            .instrument(span),
        );
    }
}

/// Back-off before attempt `n` (1-based; attempt 1 has none).
pub fn backoff_before(attempt: u32, initial: Duration) -> Duration {
    if attempt <= 1 {
        return Duration::ZERO;
    }
    initial.saturating_mul(1u32 << (attempt - 2).min(16))
}

async fn deliver(rt: &Runtime, mut d: PendingDelivery) {
    let all = rt.cfg();
    let cfg = &all.server;
    let body = match rt.ledger.get(&d.task_id) {
        Ok(Some(rec)) => crate::api::tasks::view_of(&rec),
        Ok(None) => {
            let _ = rt.store.remove_delivery(&d.task_id);
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read task for callback");
            return;
        }
    };
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
                _ = rt.shutdown.cancelled() => return,
            }
        }
        let res = rt
            .http
            .post(&d.callback_url)
            .timeout(Duration::from_millis(cfg.callback_timeout_ms))
            .json(&body)
            .send()
            .await;
        match res {
            Ok(r) if r.status().is_success() => {
                tracing::debug!(attempt = d.attempts, "callback delivered");
                metrics()
                    .callback_deliveries_total
                    .with_label_values(&["delivered"])
                    .inc();
                if let Err(e) = rt.store.remove_delivery(&d.task_id) {
                    tracing::error!(error = %e, "cannot clear delivered callback");
                }
                return;
            }
            Ok(r) => last_error = format!("callback answered {}", r.status()),
            Err(e) => {
                last_error = if e.is_timeout() {
                    "callback timed out".to_string()
                } else if e.is_connect() {
                    "cannot connect to callback url".to_string()
                } else {
                    "callback request failed".to_string()
                }
            }
        }
        metrics()
            .callback_deliveries_total
            .with_label_values(&["retried"])
            .inc();
        if let Some(suppressed) = crate::throttled!("callback") {
            tracing::warn!(attempt = d.attempts, error = %last_error, suppressed, "callback attempt failed");
        }
        let _ = rt.store.put_delivery(&d);
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
    let res = rt
        .store
        .put_failed_delivery(&failed)
        .and_then(|_| rt.store.remove_delivery(&d.task_id));
    if let Err(e) = res {
        tracing::error!(error = %e, "cannot park failed callback");
    }
    let _ = rt.store.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_second_attempt() {
        let i = Duration::from_millis(100);
        let got: Vec<u128> = (1..=5).map(|n| backoff_before(n, i).as_millis()).collect();
        assert_eq!(got, vec![0, 100, 200, 400, 800]);
    }
}

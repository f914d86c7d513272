//! Where a cron firing's result goes (`deliver_to`): a webhook — POST JSON — or a Feishu chat
//! through [`FeishuSender`], the seam the Feishu channel implements (the node plugs it in when
//! `channels.feishu` is configured; without it a Feishu destination is logged, not sent). Both
//! are retried with doubling back-off ([`WEBHOOK_ATTEMPTS`], [`WEBHOOK_BACKOFF_MS`]).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Semaphore;

use crate::config::cron::DeliverTo;

/// How long a firing's delivery waits for its task to finish.
pub const TASK_WAIT: Duration = Duration::from_secs(600);
/// Tries per delivery (webhook or Feishu).
pub const WEBHOOK_ATTEMPTS: u32 = 5;
/// First pause between tries (doubled each time).
pub const WEBHOOK_BACKOFF_MS: u64 = 500;
/// One webhook request's deadline.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Deliveries in flight on this node; beyond it a delivery is dropped with a warning.
pub const CRON_DELIVERIES_MAX: usize = 64;

/// One result to send: the JSON body of a webhook delivery.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub job: String,
    /// `agent`, `cost_report` or `token_stats`.
    pub kind: String,
    pub title: String,
    pub text: String,
    /// RFC 3339, UTC.
    pub scheduled_at: String,
    pub task_id: Option<String>,
    pub status: String,
}

/// Why one try of a delivery failed.
#[derive(Debug, Clone, PartialEq)]
pub struct SendError {
    /// What failed, without the destination's secrets.
    pub reason: String,
    /// Worth another try (a transport error, 5xx, 429), or final (4xx, a refusal).
    pub retry: bool,
}

/// Sends a message to a Feishu chat (the Feishu channel implements it; a message card). One
/// try; [`Deliverer`] retries. `msg` identifies the firing, so an implementation can make a
/// repeat of the same firing harmless.
#[async_trait::async_trait]
pub trait FeishuSender: Send + Sync {
    async fn send_chat(&self, chat_id: &str, msg: &Message) -> Result<(), SendError>;
}

pub struct Deliverer {
    http: reqwest::Client,
    feishu: Option<Arc<dyn FeishuSender>>,
    slots: Arc<Semaphore>,
}

impl Deliverer {
    pub fn new(feishu: Option<Arc<dyn FeishuSender>>) -> Deliverer {
        Deliverer {
            http: reqwest::Client::builder()
                .timeout(WEBHOOK_TIMEOUT)
                .build()
                .unwrap_or_default(),
            feishu,
            slots: Arc::new(Semaphore::new(CRON_DELIVERIES_MAX)),
        }
    }

    /// Send `msg` to `to`; `true` when it arrived. Failures are logged here.
    pub async fn send(&self, to: &DeliverTo, msg: &Message) -> bool {
        let Ok(_slot) = self.slots.clone().try_acquire_owned() else {
            tracing::warn!(job = %msg.job, max = CRON_DELIVERIES_MAX, "cron: too many deliveries in flight; this result is not sent");
            return false;
        };
        let r = match to {
            DeliverTo::Webhook(var) => match std::env::var(var).ok().filter(|u| !u.is_empty()) {
                Some(url) => {
                    retried(
                        "webhook",
                        || self.webhook_once(&url, msg),
                        WEBHOOK_BACKOFF_MS,
                    )
                    .await
                }
                None => Err(format!("{var} is not set")),
            },
            DeliverTo::FeishuChat(chat) => match &self.feishu {
                Some(f) => retried("feishu", || f.send_chat(chat, msg), WEBHOOK_BACKOFF_MS).await,
                None => Err("no channels.feishu is configured".into()),
            },
        };
        match r {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(job = %msg.job, error = %e, "cron: the result was not delivered");
                false
            }
        }
    }

    async fn webhook_once(&self, url: &str, msg: &Message) -> Result<(), SendError> {
        match self.http.post(url).json(msg).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(SendError {
                reason: format!("HTTP {}", r.status().as_u16()),
                retry: r.status().is_server_error() || r.status().as_u16() == 429,
            }),
            // The URL carries a token: say what failed, never where.
            Err(e) => Err(SendError {
                reason: format!(
                    "request failed ({})",
                    if e.is_timeout() {
                        "timeout"
                    } else {
                        "connection"
                    }
                ),
                retry: true,
            }),
        }
    }
}

/// Up to [`WEBHOOK_ATTEMPTS`] tries of `once`, pausing `first_pause_ms` (doubled each time)
/// between them; stops at the first success or final error.
async fn retried<F, Fut>(what: &str, mut once: F, first_pause_ms: u64) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), SendError>>,
{
    let mut pause = first_pause_ms;
    let mut last = String::new();
    for attempt in 1..=WEBHOOK_ATTEMPTS {
        match once().await {
            Ok(()) => return Ok(()),
            Err(e) => {
                last = e.reason;
                if !e.retry {
                    break;
                }
            }
        }
        if attempt < WEBHOOK_ATTEMPTS {
            tokio::time::sleep(Duration::from_millis(pause)).await;
            pause *= 2;
        }
    }
    Err(format!("{what}: {last}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Fails its first `fail` tries with `retry`, then succeeds.
    async fn run(fail: u32, retry: bool) -> (Result<(), String>, u32) {
        let tries = AtomicU32::new(0);
        let r = retried(
            "t",
            || async {
                let n = tries.fetch_add(1, Ordering::SeqCst) + 1;
                if n <= fail {
                    Err(SendError {
                        reason: format!("try {n}"),
                        retry,
                    })
                } else {
                    Ok(())
                }
            },
            1,
        )
        .await;
        (r, tries.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn retry_table() {
        let cases = [
            // (failures before success, retryable, delivered, tries)
            (0, true, true, 1),
            (1, true, true, 2),
            (WEBHOOK_ATTEMPTS - 1, true, true, WEBHOOK_ATTEMPTS),
            (WEBHOOK_ATTEMPTS, true, false, WEBHOOK_ATTEMPTS),
            (1, false, false, 1),
        ];
        for (fail, retry, delivered, tries) in cases {
            let (r, n) = run(fail, retry).await;
            assert_eq!(r.is_ok(), delivered, "{fail} {retry}: {r:?}");
            assert_eq!(n, tries, "{fail} {retry}");
        }
        let (r, _) = run(WEBHOOK_ATTEMPTS, true).await;
        assert_eq!(r, Err(format!("t: try {WEBHOOK_ATTEMPTS}")));
    }
}

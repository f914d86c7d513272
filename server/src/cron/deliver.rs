//! Where a cron firing's result goes (`deliver_to`): a webhook — POST JSON, retried with
//! back-off — or a Feishu chat through [`FeishuSender`], the seam the Feishu channel
//! implements (until it is plugged in, a Feishu destination is logged and not sent).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Semaphore;

use crate::config::cron::DeliverTo;

/// How long a firing's delivery waits for its task to finish.
pub const TASK_WAIT: Duration = Duration::from_secs(600);
/// Tries per webhook delivery.
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

/// Sends a message to a Feishu chat (the Feishu channel implements it; a message card).
#[async_trait::async_trait]
pub trait FeishuSender: Send + Sync {
    async fn send_chat(&self, chat_id: &str, msg: &Message) -> Result<(), String>;
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
                Some(url) => self.webhook(&url, msg).await,
                None => Err(format!("{var} is not set")),
            },
            DeliverTo::FeishuChat(chat) => match &self.feishu {
                Some(f) => f.send_chat(chat, msg).await,
                None => Err("this build has no Feishu channel".into()),
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

    async fn webhook(&self, url: &str, msg: &Message) -> Result<(), String> {
        let mut pause = WEBHOOK_BACKOFF_MS;
        let mut last = String::new();
        for attempt in 1..=WEBHOOK_ATTEMPTS {
            match self.http.post(url).json(msg).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => {
                    last = format!("HTTP {}", r.status().as_u16());
                    let retry = r.status().is_server_error() || r.status().as_u16() == 429;
                    if !retry {
                        break;
                    }
                }
                // The URL carries a token: say what failed, never where.
                Err(e) => {
                    last = format!(
                        "request failed ({})",
                        if e.is_timeout() {
                            "timeout"
                        } else {
                            "connection"
                        }
                    )
                }
            }
            if attempt < WEBHOOK_ATTEMPTS {
                tokio::time::sleep(Duration::from_millis(pause)).await;
                pause *= 2;
            }
        }
        Err(format!("webhook: {last}"))
    }
}

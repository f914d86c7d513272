//! Messages the bot sends without being asked: a cron job's result (`deliver_to.feishu_chat`)
//! as a message card. [`CronCards`] is the Feishu side of the cron feature's
//! [`FeishuSender`] seam; [`card`] and [`uuid_for`] are pure.

use async_trait::async_trait;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::client::{clip, FeishuApiError, FeishuClient, TOKEN_INVALID_CODES};
use crate::cron::deliver::{FeishuSender, Message, SendError};

/// Feishu's code for "too many requests": worth another try.
const RATE_LIMITED_CODE: i64 = 99991400;

/// The message card of one result: the title as its header, the text as markdown.
pub fn card(title: &str, text: &str) -> Value {
    json!({
        "config": {"wide_screen_mode": true},
        "header": {"title": {"tag": "plain_text", "content": title}},
        "elements": [{"tag": "markdown", "content": clip(text)}],
    })
}

/// Feishu's `uuid` (≤ 50 characters) for one firing: a repeat of the same send within an hour
/// is dropped by Feishu, so a retry after a lost answer does not post the card twice.
pub fn uuid_for(msg: &Message) -> String {
    let h = Sha256::digest(format!("cron\n{}\n{}", msg.job, msg.scheduled_at).as_bytes());
    let hex: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("cron-{hex}")
}

/// Whether a failed Open API call is worth another try (pure).
pub fn retryable(e: &FeishuApiError) -> bool {
    match e {
        FeishuApiError::Transport(_) => true,
        FeishuApiError::Status { status } => *status >= 500 || *status == 429,
        // A stale token was dropped by the client: the next try fetches a new one.
        FeishuApiError::Api { code, status, .. } => {
            *status >= 500
                || *status == 429
                || *code == RATE_LIMITED_CODE
                || TOKEN_INVALID_CODES.contains(code)
        }
        FeishuApiError::Invalid(_) => false,
    }
}

/// Cron results to Feishu chats through the channel's Open API client.
pub struct CronCards(pub FeishuClient);

#[async_trait]
impl FeishuSender for CronCards {
    async fn send_chat(&self, chat_id: &str, msg: &Message) -> Result<(), SendError> {
        let content = card(&msg.title, &msg.text).to_string();
        self.0
            .send_to_chat(chat_id, "interactive", content, Some(&uuid_for(msg)))
            .await
            .map(|_| ())
            .map_err(|e| SendError {
                retry: retryable(&e),
                reason: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(job: &str, at: &str) -> Message {
        Message {
            job: job.into(),
            kind: "cost_report".into(),
            title: "费用日报".into(),
            text: "**total** $1".into(),
            scheduled_at: at.into(),
            task_id: None,
            status: "succeeded".into(),
        }
    }

    #[test]
    fn card_shape() {
        let c = card("费用日报", "**x**");
        assert_eq!(c["header"]["title"]["content"], "费用日报");
        assert_eq!(c["elements"][0]["tag"], "markdown");
        assert_eq!(c["elements"][0]["content"], "**x**");
    }

    #[test]
    fn uuid_table() {
        let a = uuid_for(&msg("daily-cost", "2026-12-02T01:00:00Z"));
        assert!(a.len() <= 50, "{a}");
        assert_eq!(a, uuid_for(&msg("daily-cost", "2026-12-02T01:00:00Z")));
        assert_ne!(a, uuid_for(&msg("daily-cost", "2026-12-03T01:00:00Z")));
        assert_ne!(a, uuid_for(&msg("other", "2026-12-02T01:00:00Z")));
        assert!(uuid_for(&msg(&"j".repeat(500), "t")).len() <= 50);
    }

    #[test]
    fn retry_table() {
        let cases = [
            (FeishuApiError::Transport("reset".into()), true),
            (FeishuApiError::Status { status: 503 }, true),
            (FeishuApiError::Status { status: 429 }, true),
            (FeishuApiError::Status { status: 400 }, false),
            (
                FeishuApiError::Api {
                    code: RATE_LIMITED_CODE,
                    msg: "too many".into(),
                    status: 400,
                },
                true,
            ),
            (
                FeishuApiError::Api {
                    code: 230002,
                    msg: "bot not in chat".into(),
                    status: 400,
                },
                false,
            ),
            (
                FeishuApiError::Api {
                    code: 1000,
                    msg: "internal error".into(),
                    status: 500,
                },
                true,
            ),
            (
                FeishuApiError::Api {
                    code: 1000,
                    msg: "internal error".into(),
                    status: 200,
                },
                false,
            ),
            (
                FeishuApiError::Api {
                    code: TOKEN_INVALID_CODES[0],
                    msg: "token expired".into(),
                    status: 400,
                },
                true,
            ),
            (FeishuApiError::Invalid("x".into()), false),
        ];
        for (e, want) in cases {
            assert_eq!(retryable(&e), want, "{e:?}");
        }
    }
}

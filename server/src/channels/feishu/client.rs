//! The Feishu Open API client: the app's `tenant_access_token` (fetched with the app id and
//! secret, cached until shortly before it expires, refreshed by one caller at a time), replies
//! to a message, messages to a chat (text or an interactive card), and the bot's own identity.
//!
//! Wire format (Feishu's): `POST /open-apis/auth/v3/tenant_access_token/internal`
//! `{"app_id","app_secret"}` → `{"code":0,"tenant_access_token","expire":<s>}`;
//! `POST /open-apis/im/v1/messages/{message_id}/reply` and
//! `POST /open-apis/im/v1/messages?receive_id_type=chat_id` with `Authorization: Bearer <token>`,
//! `{"msg_type","content":<JSON string>,"uuid"}` → `{"code":0,"data":{"message_id"}}`;
//! `GET /open-apis/bot/v3/info` → `{"code":0,"bot":{"open_id"}}`. A non-zero `code` is an error;
//! a token Feishu calls invalid is dropped so the next try fetches a new one.
//!
//! The app secret is a [`Secret`]: it is sent in one request body and never logged.

use std::time::Duration;

use serde_json::{json, Value};

use crate::config::Secret;
use crate::util::now_ms;

/// Refresh the token this long before it expires (Feishu hands out a new one in its last 30
/// minutes); at most half its lifetime.
pub const TOKEN_REFRESH_BEFORE_MS: u64 = 5 * 60 * 1000;
/// Deadline of one Open API request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest text sent in one message, in characters (Feishu's limit is 150 KB per request);
/// longer answers are cut with a note.
pub const MESSAGE_TEXT_MAX_CHARS: usize = 30_000;
/// Feishu codes meaning "this tenant token is not valid (any more)".
pub(crate) const TOKEN_INVALID_CODES: [i64; 3] = [99991661, 99991663, 99991664];

/// When a token fetched at `now_ms` that lives `expire_s` seconds should be replaced (pure).
pub fn refresh_at(now_ms: u64, expire_s: u64) -> u64 {
    let life = expire_s.saturating_mul(1000);
    now_ms + life - TOKEN_REFRESH_BEFORE_MS.min(life / 2)
}

/// `text` cut to [`MESSAGE_TEXT_MAX_CHARS`] (pure).
pub fn clip(text: &str) -> String {
    if text.chars().count() <= MESSAGE_TEXT_MAX_CHARS {
        return text.to_string();
    }
    let mut s: String = text.chars().take(MESSAGE_TEXT_MAX_CHARS).collect();
    s.push_str("\n…(truncated)");
    s
}

/// Why an Open API call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeishuApiError {
    #[error("Feishu request failed: {0}")]
    Transport(String),
    #[error("Feishu answered HTTP {status}")]
    Status { status: u16 },
    /// Feishu's own error code (with the HTTP status it came with).
    #[error("Feishu answered code {code}: {msg}")]
    Api { code: i64, msg: String, status: u16 },
    #[error("Feishu answer is not what was expected: {0}")]
    Invalid(String),
}

#[derive(Clone)]
struct Token {
    value: String,
    refresh_at_ms: u64,
}

/// The Open API client of one app. Cheap to clone; clones share the token.
#[derive(Clone)]
pub struct FeishuClient {
    base_url: String,
    app_id: String,
    app_secret: Secret,
    http: reqwest::Client,
    token: std::sync::Arc<tokio::sync::Mutex<Option<Token>>>,
    bot: std::sync::Arc<tokio::sync::Mutex<Option<String>>>,
}

impl std::fmt::Debug for FeishuClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeishuClient")
            .field("base_url", &self.base_url)
            .field("app_id", &self.app_id)
            .field("app_secret", &self.app_secret)
            .finish()
    }
}

impl FeishuClient {
    pub fn new(
        base_url: &str,
        app_id: &str,
        app_secret: Secret,
        http: reqwest::Client,
    ) -> FeishuClient {
        FeishuClient {
            base_url: base_url.trim_end_matches('/').to_string(),
            app_id: app_id.to_string(),
            app_secret,
            http,
            token: Default::default(),
            bot: Default::default(),
        }
    }

    /// The `tenant_access_token`, from the cache while it is fresh.
    pub async fn tenant_token(&self) -> Result<String, FeishuApiError> {
        let mut slot = self.token.lock().await;
        if let Some(t) = slot.as_ref().filter(|t| now_ms() < t.refresh_at_ms) {
            return Ok(t.value.clone());
        }
        let body = json!({"app_id": self.app_id, "app_secret": self.app_secret.expose()});
        let url = format!(
            "{}/open-apis/auth/v3/tenant_access_token/internal",
            self.base_url
        );
        let v = self.send(self.http.post(url).json(&body)).await?;
        let value = v
            .get("tenant_access_token")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| FeishuApiError::Invalid("no tenant_access_token".into()))?
            .to_string();
        let expire = v.get("expire").and_then(Value::as_u64).unwrap_or(7200);
        *slot = Some(Token {
            value: value.clone(),
            refresh_at_ms: refresh_at(now_ms(), expire),
        });
        Ok(value)
    }

    /// Forget the cached token (Feishu said it is not valid).
    async fn drop_token(&self) {
        *self.token.lock().await = None;
    }

    /// Send a request and read Feishu's envelope: HTTP success and `code` 0.
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, FeishuApiError> {
        let resp = req.timeout(REQUEST_TIMEOUT).send().await.map_err(|e| {
            FeishuApiError::Transport(if e.is_timeout() {
                "timed out".into()
            } else if e.is_connect() {
                "cannot connect".into()
            } else {
                "request error".into()
            })
        })?;
        let status = resp.status();
        let v: Option<Value> = resp.json().await.ok();
        let code = v
            .as_ref()
            .and_then(|v| v.get("code"))
            .and_then(Value::as_i64);
        match (code, v) {
            (Some(0), Some(v)) if status.is_success() => Ok(v),
            (Some(code), Some(v)) if code != 0 => Err(FeishuApiError::Api {
                code,
                status: status.as_u16(),
                msg: v
                    .get("msg")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .chars()
                    .take(200)
                    .collect(),
            }),
            _ => Err(FeishuApiError::Status {
                status: status.as_u16(),
            }),
        }
    }

    /// An authorized call; a token Feishu refuses is dropped for the next try.
    async fn authorized(
        &self,
        make: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Value, FeishuApiError> {
        let token = self.tenant_token().await?;
        let res = self.send(make(&self.http).bearer_auth(token)).await;
        if let Err(FeishuApiError::Api { code, .. }) = &res {
            if TOKEN_INVALID_CODES.contains(code) {
                self.drop_token().await;
            }
        }
        res
    }

    fn message_id(v: &Value) -> Result<String, FeishuApiError> {
        v.pointer("/data/message_id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| FeishuApiError::Invalid("no data.message_id".into()))
    }

    /// Reply to a message with text; `uuid` makes Feishu drop a repeat of the same reply.
    /// Answers the new message's id.
    pub async fn reply_text(
        &self,
        message_id: &str,
        text: &str,
        uuid: Option<&str>,
    ) -> Result<String, FeishuApiError> {
        let url = format!(
            "{}/open-apis/im/v1/messages/{message_id}/reply",
            self.base_url
        );
        let mut body =
            json!({"msg_type": "text", "content": json!({"text": clip(text)}).to_string()});
        if let Some(u) = uuid {
            body["uuid"] = json!(u);
        }
        let v = self.authorized(|h| h.post(&url).json(&body)).await?;
        Self::message_id(&v)
    }

    /// Send a text message to a chat (`chat_id`, `oc_...`). Answers the message id.
    pub async fn send_text(&self, chat_id: &str, text: &str) -> Result<String, FeishuApiError> {
        self.send_to_chat(
            chat_id,
            "text",
            json!({"text": clip(text)}).to_string(),
            None,
        )
        .await
    }

    /// Send an interactive message card (Feishu card JSON) to a chat. Answers the message id.
    pub async fn send_card(&self, chat_id: &str, card: &Value) -> Result<String, FeishuApiError> {
        self.send_to_chat(chat_id, "interactive", card.to_string(), None)
            .await
    }

    /// Send to a chat; `uuid` makes Feishu drop a repeat.
    pub async fn send_to_chat(
        &self,
        chat_id: &str,
        msg_type: &str,
        content: String,
        uuid: Option<&str>,
    ) -> Result<String, FeishuApiError> {
        let url = format!(
            "{}/open-apis/im/v1/messages?receive_id_type=chat_id",
            self.base_url
        );
        let mut body = json!({"receive_id": chat_id, "msg_type": msg_type, "content": content});
        if let Some(u) = uuid {
            body["uuid"] = json!(u);
        }
        let v = self.authorized(|h| h.post(&url).json(&body)).await?;
        Self::message_id(&v)
    }

    /// The bot's `open_id` (to recognise its @-mentions), fetched once.
    pub async fn bot_open_id(&self) -> Result<String, FeishuApiError> {
        let mut slot = self.bot.lock().await;
        if let Some(id) = slot.as_ref() {
            return Ok(id.clone());
        }
        let url = format!("{}/open-apis/bot/v3/info", self.base_url);
        let v = self.authorized(|h| h.get(&url)).await?;
        let id = v
            .pointer("/bot/open_id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| FeishuApiError::Invalid("no bot.open_id".into()))?
            .to_string();
        *slot = Some(id.clone());
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_table() {
        let cases = [
            // Feishu's usual 2 h token: replaced 5 minutes early.
            (1_000, 7200, 1_000 + 7_200_000 - 300_000),
            // A short-lived token: at half its life.
            (0, 60, 30_000),
            (0, 0, 0),
        ];
        for (now, expire, want) in cases {
            assert_eq!(refresh_at(now, expire), want, "{now} {expire}");
        }
    }

    #[test]
    fn clip_table() {
        assert_eq!(clip("short"), "short");
        let long = "字".repeat(MESSAGE_TEXT_MAX_CHARS + 5);
        let c = clip(&long);
        assert!(c.ends_with("(truncated)"));
        assert_eq!(
            c.chars().filter(|&ch| ch == '字').count(),
            MESSAGE_TEXT_MAX_CHARS
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        let c = FeishuClient::new(
            "http://x",
            "cli_a",
            Secret::new("s3cr3t"),
            reqwest::Client::new(),
        );
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}

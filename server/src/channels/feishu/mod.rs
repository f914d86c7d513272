//! The Feishu (Lark) channel: `POST /channels/feishu/events` in, the Open API out.
//!
//! - [`crypto`] (pure): the request signature and the AES-256-CBC body encryption.
//! - [`event`] (pure): event bodies, what a message becomes, the bot's mention.
//! - [`client`]: the Open API client (tenant token cache, reply, send text/card, bot info).
//! - [`cards`]: cron results sent to a chat as message cards (the cron feature's
//!   `FeishuSender`).
//!
//! [`Feishu::handle`] takes one event request: checks the signature (when an encrypt key is
//! set), decrypts, checks the verification token, answers the `url_verification` challenge, and
//! turns a direct message — or a group message that @-mentions the bot — into a task (source
//! `feishu_direct_message` / `feishu_group_mention`, `session_id` = the chat, idempotency key
//! `feishu:<event_id>` so a retried or duplicated event runs once, cluster-wide when the ledger is
//! Raft's). It answers as soon as the task is admitted; the task runs asynchronously.
//!
//! The answer goes back through the delivery actor: the task's `callback_url` is the target
//! `feishu:reply:<message_id>`, which [`FeishuReplies`] (a [`ChannelSender`]) sends as a reply
//! to the message — retried with back-off and parked in failed deliveries like a callback.
//! Secrets (app secret, verification token, encrypt key) are [`Secret`]s read from the
//! environment and never logged.

pub mod cards;
pub mod client;
pub mod crypto;
pub mod event;

use std::sync::Arc;

use openclaw_proto::{TaskRecord, TaskStatus, TaskSubmit};
use serde_json::Value;

pub use client::{FeishuApiError, FeishuClient};
use event::{Decision, Incoming};

use crate::config::{FeishuConfig, Secret};
use crate::tasks::delivery::ChannelSender;
use crate::tasks::{TaskError, Tasks};

/// The delivery target prefix of a reply to a Feishu message.
pub const REPLY_TARGET_PREFIX: &str = "feishu:reply:";
/// Signature headers Feishu sends with each event when the app has an encrypt key.
pub const SIGNATURE_HEADER: &str = "x-lark-signature";
pub const TIMESTAMP_HEADER: &str = "x-lark-request-timestamp";
pub const NONCE_HEADER: &str = "x-lark-request-nonce";

/// The delivery target that replies to `message_id` (pure).
pub fn reply_target(message_id: &str) -> String {
    format!("{REPLY_TARGET_PREFIX}{message_id}")
}

/// The text sent back for a finished task (pure).
pub fn answer_text(rec: &TaskRecord) -> String {
    match rec.status {
        TaskStatus::Succeeded => match rec.output.as_deref() {
            Some(o) if !o.trim().is_empty() => o.to_string(),
            _ => "(the agent gave an empty answer)".to_string(),
        },
        TaskStatus::Failed => match &rec.error {
            Some(e) => format!("Sorry, this request failed ({}): {}", e.code, e.message),
            None => "Sorry, this request failed.".to_string(),
        },
        TaskStatus::Cancelled => "This request was cancelled.".to_string(),
        TaskStatus::Queued | TaskStatus::Running => String::new(),
    }
}

/// The secrets of the channel, read from the environment named by the config.
#[derive(Clone, Debug)]
pub struct FeishuSecrets {
    pub app_secret: Option<Secret>,
    pub verification_token: Option<Secret>,
    pub encrypt_key: Option<Secret>,
}

impl FeishuSecrets {
    pub fn from_env(cfg: &FeishuConfig, env: &dyn Fn(&str) -> Option<String>) -> FeishuSecrets {
        let read = |var: &str| env(var).filter(|v| !v.is_empty()).map(Secret::new);
        FeishuSecrets {
            app_secret: read(&cfg.app_secret_env),
            verification_token: read(&cfg.verification_token_env),
            encrypt_key: cfg.encrypt_key_env.as_deref().and_then(read),
        }
    }
}

/// One event request as it arrived.
#[derive(Debug, Clone, Copy)]
pub struct EventRequest<'a> {
    pub timestamp: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub body: &'a [u8],
}

/// What was done with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// The `url_verification` challenge, to echo.
    Challenge(String),
    /// A task was admitted (or, `duplicate`, had been for this event already).
    Accepted { task_id: String, duplicate: bool },
    /// Nothing to do: why.
    Ignored(&'static str),
}

/// Why an event was refused. Nothing was created.
#[derive(Debug, thiserror::Error)]
pub enum FeishuError {
    #[error("{0}")]
    BadSignature(&'static str),
    #[error("{0}")]
    BadToken(&'static str),
    #[error("the event body cannot be decrypted: {0}")]
    Undecryptable(#[from] crypto::CryptoError),
    #[error("the event body is not a Feishu event: {0}")]
    Malformed(String),
    #[error("cannot learn the bot's identity from Feishu ({0}); retry")]
    BotUnknown(FeishuApiError),
    #[error(transparent)]
    Task(#[from] TaskError),
}

/// The channel: its settings (read at start), secrets, Open API client and the tasks handle.
pub struct Feishu {
    cfg: FeishuConfig,
    secrets: FeishuSecrets,
    client: FeishuClient,
    tasks: Tasks,
}

impl Feishu {
    pub fn new(
        cfg: FeishuConfig,
        secrets: FeishuSecrets,
        client: FeishuClient,
        tasks: Tasks,
    ) -> Feishu {
        Feishu {
            cfg,
            secrets,
            client,
            tasks,
        }
    }

    /// The Open API client (send a message or a card to a chat).
    pub fn client(&self) -> &FeishuClient {
        &self.client
    }

    /// Take one event: authenticate, decrypt, decide, admit.
    pub async fn handle(&self, req: EventRequest<'_>) -> Result<Ack, FeishuError> {
        let outer: Value = serde_json::from_slice(req.body)
            .map_err(|e| FeishuError::Malformed(format!("not JSON: {e}")))?;
        let key = self.secrets.encrypt_key.as_ref();
        let signed = match (key, req.signature) {
            (Some(key), Some(sig)) => {
                let ok = crypto::signature_ok(
                    req.timestamp.unwrap_or_default(),
                    req.nonce.unwrap_or_default(),
                    key.expose(),
                    req.body,
                    sig,
                );
                if !ok {
                    return Err(FeishuError::BadSignature(
                        "X-Lark-Signature does not match the request (check the encrypt key)",
                    ));
                }
                true
            }
            _ => false,
        };
        let plain = match outer.get("encrypt") {
            Some(enc) => {
                let enc = enc
                    .as_str()
                    .ok_or_else(|| FeishuError::Malformed("`encrypt` is not a string".into()))?;
                let key = key.ok_or_else(|| {
                    FeishuError::Malformed(
                        "the event is encrypted but channels.feishu.encrypt_key_env is not set"
                            .into(),
                    )
                })?;
                let text = crypto::decrypt(key.expose(), enc)?;
                serde_json::from_str(&text).map_err(|e| {
                    FeishuError::Malformed(format!("the decrypted body is not JSON: {e}"))
                })?
            }
            None => outer,
        };
        let incoming = event::parse(&plain).map_err(|e| FeishuError::Malformed(e.0))?;
        match &self.secrets.verification_token {
            Some(t)
                if !crypto::constant_time_eq(
                    incoming.token().as_bytes(),
                    t.expose().as_bytes(),
                ) =>
            {
                return Err(FeishuError::BadToken(
                    "the event's verification token is not this app's",
                ));
            }
            Some(_) => {}
            None if key.is_none() => {
                return Err(FeishuError::BadToken(
                    "no verification token nor encrypt key is configured, so no event can be \
                     trusted (set the variables named by channels.feishu)",
                ))
            }
            None => {}
        }
        // With an encrypt key, Feishu signs every event; only the URL check may come unsigned.
        if key.is_some() && !signed && !matches!(incoming, Incoming::Challenge { .. }) {
            return Err(FeishuError::BadSignature(
                "the event carries no X-Lark-Signature",
            ));
        }
        match incoming {
            Incoming::Challenge { challenge, .. } => Ok(Ack::Challenge(challenge)),
            Incoming::Other { .. } => Ok(Ack::Ignored("not a message event")),
            Incoming::Message(m) => {
                let bot = if m.chat_type == "group" && !m.mentions.is_empty() {
                    Some(
                        self.client
                            .bot_open_id()
                            .await
                            .map_err(FeishuError::BotUnknown)?,
                    )
                } else {
                    None
                };
                let source = match event::decide(&m, bot.as_deref()) {
                    Decision::Ignore(why) => {
                        tracing::debug!(why, "feishu message ignored");
                        return Ok(Ack::Ignored(why));
                    }
                    Decision::Task { source } => source,
                };
                let sub = TaskSubmit {
                    agent: Some(self.cfg.agent.clone()),
                    input: event::task_text(&m, bot.as_deref()),
                    session_id: Some(m.chat_id.clone()),
                    source: Some(source.to_string()),
                    idempotency_key: Some(format!("feishu:{}", m.event_id)),
                    ..TaskSubmit::default()
                };
                let reply = self.cfg.reply.then(|| reply_target(&m.message_id));
                let (rec, duplicate) = self.tasks.admit_replying(sub, reply).await?;
                tracing::debug!(task = %rec.id, duplicate, "feishu message admitted");
                Ok(Ack::Accepted {
                    task_id: rec.id,
                    duplicate,
                })
            }
        }
    }
}

/// Sends finished tasks' answers as replies to their Feishu messages (delivery targets
/// `feishu:reply:<message_id>`).
pub struct FeishuReplies {
    pub client: FeishuClient,
}

impl FeishuReplies {
    /// The sender the delivery actor is given.
    pub fn sender(client: FeishuClient) -> Arc<dyn ChannelSender> {
        Arc::new(FeishuReplies { client })
    }
}

#[async_trait::async_trait]
impl ChannelSender for FeishuReplies {
    fn accepts(&self, target: &str) -> bool {
        target.starts_with(REPLY_TARGET_PREFIX)
    }

    async fn send(&self, target: &str, rec: &TaskRecord) -> Result<(), String> {
        let message_id = target.strip_prefix(REPLY_TARGET_PREFIX).unwrap_or_default();
        let text = answer_text(rec);
        if text.is_empty() {
            return Ok(());
        }
        // The task id as Feishu's `uuid`: a repeat of this reply (a retry after a lost answer)
        // is dropped by Feishu.
        self.client
            .reply_text(message_id, &text, Some(&rec.id))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openclaw_proto::api::TaskErrorView;
    use openclaw_proto::Priority;

    #[test]
    fn answer_text_table() {
        let mut ok = TaskRecord::queued("t", "main", "hi", Priority::High);
        ok.status = TaskStatus::Succeeded;
        ok.output = Some("答案".into());
        let mut empty = ok.clone();
        empty.output = Some(" ".into());
        let mut failed = ok.clone();
        failed.status = TaskStatus::Failed;
        failed.error = Some(TaskErrorView {
            code: "upstream_timeout".into(),
            message: "the model timed out".into(),
        });
        let mut cancelled = ok.clone();
        cancelled.status = TaskStatus::Cancelled;
        let queued = TaskRecord::queued("t", "main", "hi", Priority::High);
        let cases = [
            (ok, "答案"),
            (empty, "(the agent gave an empty answer)"),
            (
                failed,
                "Sorry, this request failed (upstream_timeout): the model timed out",
            ),
            (cancelled, "This request was cancelled."),
            (queued, ""),
        ];
        for (rec, want) in cases {
            assert_eq!(answer_text(&rec), want);
        }
    }

    #[test]
    fn reply_targets_are_recognised() {
        let r = FeishuReplies {
            client: FeishuClient::new("http://x", "a", Secret::new("s"), reqwest::Client::new()),
        };
        assert!(r.accepts(&reply_target("om_1")));
        assert!(!r.accepts("https://example.com/cb"));
        assert!(!r.accepts("feishu:chat:oc_1"));
    }
}

//! Feishu event bodies (pure): what arrived, and what it should become.
//!
//! [`parse`] reads a decrypted body: the `url_verification` challenge (schema 1.0:
//! `{"type","token","challenge"}`), a schema 2.0 event (`{"schema":"2.0","header":{event_id,
//! event_type,token,...},"event":{...}}`) — `im.message.receive_v1` in detail, any other type by
//! name only. [`decide`] says whether a message becomes a task: a direct (p2p) message does, a
//! group message does when it @-mentions the bot, nothing else does. [`task_text`] is the text
//! the agent sees (the bot's mention removed, other mentions as `@name`).

use serde::Deserialize;
use serde_json::Value;

/// The event type of a received message.
pub const MESSAGE_RECEIVE: &str = "im.message.receive_v1";
/// Source of a task made from a direct message.
pub const SOURCE_DIRECT: &str = "feishu_direct_message";
/// Source of a task made from a group message that mentions the bot.
pub const SOURCE_GROUP_MENTION: &str = "feishu_group_mention";

/// A body after decryption.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// The URL check Feishu makes when the event URL is saved: answer the challenge.
    Challenge { challenge: String, token: String },
    /// A received message.
    Message(Message),
    /// Another schema 2.0 event: acknowledged, nothing done.
    Other {
        event_id: String,
        event_type: String,
        token: String,
    },
}

impl Incoming {
    /// The verification token the body carries.
    pub fn token(&self) -> &str {
        match self {
            Incoming::Challenge { token, .. } | Incoming::Other { token, .. } => token,
            Incoming::Message(m) => &m.token,
        }
    }
}

/// A mention in a message: its placeholder in the text (`@_user_1`), who, and their name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mention {
    pub key: String,
    pub open_id: String,
    pub name: String,
}

/// An `im.message.receive_v1` event, reduced to what the channel uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub event_id: String,
    pub token: String,
    pub message_id: String,
    pub chat_id: String,
    /// `p2p` or `group`.
    pub chat_type: String,
    /// `text`, `post`, `image`, ...
    pub message_type: String,
    /// The text of a `text` or `post` message (with mention placeholders); None for others.
    pub text: Option<String>,
    pub mentions: Vec<Mention>,
    /// `user` or `app`.
    pub sender_type: String,
}

/// Why a body is not a usable event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

fn malformed(m: impl Into<String>) -> Malformed {
    Malformed(m.into())
}

#[derive(Deserialize)]
struct Header {
    event_id: String,
    event_type: String,
    #[serde(default)]
    token: String,
}

#[derive(Deserialize)]
struct ReceiveEvent {
    #[serde(default)]
    sender: Sender,
    message: RawMessage,
}

#[derive(Deserialize, Default)]
struct Sender {
    #[serde(default)]
    sender_type: String,
}

#[derive(Deserialize)]
struct RawMessage {
    message_id: String,
    chat_id: String,
    chat_type: String,
    message_type: String,
    #[serde(default)]
    content: String,
    #[serde(default)]
    mentions: Vec<RawMention>,
}

#[derive(Deserialize)]
struct RawMention {
    key: String,
    #[serde(default)]
    id: RawId,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize, Default)]
struct RawId {
    #[serde(default)]
    open_id: String,
}

/// Read a decrypted event body.
pub fn parse(body: &Value) -> Result<Incoming, Malformed> {
    let obj = body
        .as_object()
        .ok_or_else(|| malformed("the body is not a JSON object"))?;
    if obj.get("type").and_then(Value::as_str) == Some("url_verification") {
        let challenge = obj
            .get("challenge")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed("url_verification without `challenge`"))?;
        let token = obj.get("token").and_then(Value::as_str).unwrap_or_default();
        return Ok(Incoming::Challenge {
            challenge: challenge.to_string(),
            token: token.to_string(),
        });
    }
    if obj.get("schema").and_then(Value::as_str) != Some("2.0") {
        return Err(malformed(
            "not a schema 2.0 event (subscribe with the 2.0 event format)",
        ));
    }
    let header: Header = serde_json::from_value(obj.get("header").cloned().unwrap_or_default())
        .map_err(|e| malformed(format!("`header`: {e}")))?;
    if header.event_type != MESSAGE_RECEIVE {
        return Ok(Incoming::Other {
            event_id: header.event_id,
            event_type: header.event_type,
            token: header.token,
        });
    }
    let ev: ReceiveEvent = serde_json::from_value(obj.get("event").cloned().unwrap_or_default())
        .map_err(|e| malformed(format!("`event`: {e}")))?;
    let m = ev.message;
    let text = text_of(&m.message_type, &m.content);
    Ok(Incoming::Message(Message {
        event_id: header.event_id,
        token: header.token,
        message_id: m.message_id,
        chat_id: m.chat_id,
        chat_type: m.chat_type,
        message_type: m.message_type,
        text,
        mentions: m
            .mentions
            .into_iter()
            .map(|x| Mention {
                key: x.key,
                open_id: x.id.open_id,
                name: x.name,
            })
            .collect(),
        sender_type: ev.sender.sender_type,
    }))
}

/// The text of a message's `content` (a JSON string): `text` messages carry `{"text"}`, `post`
/// messages a title and paragraphs of `text`/`a`/`at` elements (any locale).
pub fn text_of(message_type: &str, content: &str) -> Option<String> {
    let v: Value = serde_json::from_str(content).ok()?;
    match message_type {
        "text" => v.get("text").and_then(Value::as_str).map(str::to_string),
        "post" => {
            // Either {"title","content"} or {"zh_cn":{"title","content"},...}.
            let post = if v.get("content").is_some() {
                &v
            } else {
                v.as_object()?.values().next()?
            };
            let mut lines = Vec::new();
            if let Some(t) = post.get("title").and_then(Value::as_str) {
                if !t.is_empty() {
                    lines.push(t.to_string());
                }
            }
            for para in post.get("content")?.as_array()? {
                let mut line = String::new();
                for el in para.as_array().into_iter().flatten() {
                    match el.get("tag").and_then(Value::as_str) {
                        Some("text") | Some("a") => {
                            line.push_str(el.get("text").and_then(Value::as_str).unwrap_or(""))
                        }
                        Some("at") => {
                            line.push_str(el.get("user_id").and_then(Value::as_str).unwrap_or(""))
                        }
                        _ => {}
                    }
                }
                lines.push(line);
            }
            Some(lines.join("\n"))
        }
        _ => None,
    }
}

/// What a message becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A task with this source.
    Task { source: &'static str },
    /// Nothing (acknowledged): why.
    Ignore(&'static str),
}

/// Whether the message @-mentions the bot (`bot_open_id`).
pub fn mentions_bot(mentions: &[Mention], bot_open_id: &str) -> bool {
    !bot_open_id.is_empty() && mentions.iter().any(|m| m.open_id == bot_open_id)
}

/// Decide what a message becomes; `bot_open_id` is the bot's identity (None: unknown, so no
/// group message can mention it).
pub fn decide(m: &Message, bot_open_id: Option<&str>) -> Decision {
    if m.sender_type == "app" {
        return Decision::Ignore("sent by an app");
    }
    if m.text.as_deref().is_none_or(|t| t.trim().is_empty()) {
        return Decision::Ignore("no text");
    }
    match m.chat_type.as_str() {
        "p2p" => Decision::Task {
            source: SOURCE_DIRECT,
        },
        "group" => match bot_open_id {
            Some(bot) if mentions_bot(&m.mentions, bot) => Decision::Task {
                source: SOURCE_GROUP_MENTION,
            },
            _ => Decision::Ignore("group message without a mention of the bot"),
        },
        _ => Decision::Ignore("unknown chat type"),
    }
}

/// The text the agent sees: the bot's mention placeholder removed, other placeholders replaced
/// by `@name`, trimmed.
pub fn task_text(m: &Message, bot_open_id: Option<&str>) -> String {
    let mut text = m.text.clone().unwrap_or_default();
    // Longest keys first, so `@_user_1` does not eat into `@_user_10`.
    let mut mentions: Vec<&Mention> = m.mentions.iter().collect();
    mentions.sort_by_key(|x| std::cmp::Reverse(x.key.len()));
    for x in mentions {
        if x.key.is_empty() {
            continue;
        }
        let with = if Some(x.open_id.as_str()) == bot_open_id {
            String::new()
        } else {
            format!("@{}", x.name)
        };
        text = text.replace(&x.key, &with);
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BOT: &str = "ou_bot";

    /// A schema 2.0 message event as Feishu sends it.
    fn receive(chat_type: &str, text: &str, mentions: Value) -> Value {
        json!({
            "schema": "2.0",
            "header": {"event_id": "ev1", "event_type": "im.message.receive_v1",
                       "create_time": "1608725989000", "token": "tok", "app_id": "cli_a",
                       "tenant_key": "tk"},
            "event": {
                "sender": {"sender_id": {"open_id": "ou_user", "union_id": "on_u", "user_id": "u"},
                           "sender_type": "user", "tenant_key": "tk"},
                "message": {"message_id": "om_1", "root_id": "", "parent_id": "",
                            "create_time": "1608725989000", "chat_id": "oc_chat",
                            "chat_type": chat_type, "message_type": "text",
                            "content": json!({"text": text}).to_string(),
                            "mentions": mentions}
            }
        })
    }

    fn mention(key: &str, open_id: &str, name: &str) -> Value {
        json!({"key": key, "id": {"open_id": open_id, "union_id": "", "user_id": ""},
               "name": name, "tenant_key": "tk"})
    }

    fn message(v: Value) -> Message {
        match parse(&v).unwrap() {
            Incoming::Message(m) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parse_table() {
        let challenge =
            json!({"challenge": "ajls384kdjx98XX", "token": "tok", "type": "url_verification"});
        assert_eq!(
            parse(&challenge),
            Ok(Incoming::Challenge {
                challenge: "ajls384kdjx98XX".into(),
                token: "tok".into()
            })
        );
        let other = json!({"schema": "2.0", "header": {"event_id": "e9", "event_type": "im.chat.member.bot.added_v1", "token": "tok"}, "event": {}});
        assert_eq!(
            parse(&other),
            Ok(Incoming::Other {
                event_id: "e9".into(),
                event_type: "im.chat.member.bot.added_v1".into(),
                token: "tok".into()
            })
        );
        let m = message(receive("p2p", "你好", json!([])));
        assert_eq!(
            (
                m.event_id.as_str(),
                m.message_id.as_str(),
                m.chat_id.as_str(),
                m.text.as_deref(),
                m.token.as_str()
            ),
            ("ev1", "om_1", "oc_chat", Some("你好"), "tok")
        );
        for bad in [
            json!([1]),
            json!({"type": "url_verification"}),
            json!({"uuid": "x", "event": {}, "type": "event_callback"}),
            json!({"schema": "2.0"}),
            json!({"schema": "2.0", "header": {"event_id": "e", "event_type": MESSAGE_RECEIVE}, "event": {"message": {}}}),
        ] {
            assert!(parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn post_text_table() {
        let cases = [
            ("text", r#"{"text":"hi @_user_1"}"#, Some("hi @_user_1")),
            (
                "post",
                r#"{"title":"T","content":[[{"tag":"at","user_id":"@_user_1"},{"tag":"text","text":" go"}],[{"tag":"a","text":"link","href":"x"}]]}"#,
                Some("T\n@_user_1 go\nlink"),
            ),
            (
                "post",
                r#"{"zh_cn":{"title":"","content":[[{"tag":"text","text":"日报"}]]}}"#,
                Some("日报"),
            ),
            ("image", r#"{"image_key":"img_1"}"#, None),
            ("text", "not json", None),
        ];
        for (ty, content, want) in cases {
            assert_eq!(text_of(ty, content).as_deref(), want, "{ty} {content}");
        }
    }

    #[test]
    fn decide_table() {
        let bot = mention("@_user_1", BOT, "openclaw");
        let other = mention("@_user_2", "ou_alice", "Alice");
        let cases = [
            (
                receive("p2p", "hello", json!([])),
                Some(BOT),
                Decision::Task {
                    source: SOURCE_DIRECT,
                },
            ),
            (
                receive("p2p", "hello", json!([])),
                None,
                Decision::Task {
                    source: SOURCE_DIRECT,
                },
            ),
            (
                receive("group", "@_user_1 hello", json!([bot.clone()])),
                Some(BOT),
                Decision::Task {
                    source: SOURCE_GROUP_MENTION,
                },
            ),
            (
                receive(
                    "group",
                    "@_user_2 @_user_1 hi",
                    json!([other.clone(), bot.clone()]),
                ),
                Some(BOT),
                Decision::Task {
                    source: SOURCE_GROUP_MENTION,
                },
            ),
            (
                receive("group", "@_user_2 hello", json!([other.clone()])),
                Some(BOT),
                Decision::Ignore("group message without a mention of the bot"),
            ),
            (
                receive("group", "hello all", json!([])),
                Some(BOT),
                Decision::Ignore("group message without a mention of the bot"),
            ),
            (
                receive("group", "@_user_1 hello", json!([bot.clone()])),
                None,
                Decision::Ignore("group message without a mention of the bot"),
            ),
            (
                receive("p2p", "   ", json!([])),
                Some(BOT),
                Decision::Ignore("no text"),
            ),
            (
                receive("topic", "x", json!([])),
                Some(BOT),
                Decision::Ignore("unknown chat type"),
            ),
        ];
        for (ev, bot_id, want) in cases {
            let m = message(ev);
            assert_eq!(decide(&m, bot_id), want, "{m:?}");
        }
        let mut from_app = message(receive("p2p", "hello", json!([])));
        from_app.sender_type = "app".into();
        assert_eq!(
            decide(&from_app, Some(BOT)),
            Decision::Ignore("sent by an app")
        );
    }

    #[test]
    fn mention_detection_table() {
        let m = |k: &str, id: &str| Mention {
            key: k.into(),
            open_id: id.into(),
            name: "n".into(),
        };
        let cases = [
            (vec![], BOT, false),
            (vec![m("@_user_1", BOT)], BOT, true),
            (vec![m("@_user_1", "ou_x"), m("@_user_2", BOT)], BOT, true),
            (vec![m("@_user_1", "ou_x")], BOT, false),
            (vec![m("@_user_1", "")], "", false),
        ];
        for (mentions, bot, want) in cases {
            assert_eq!(mentions_bot(&mentions, bot), want, "{mentions:?}");
        }
    }

    #[test]
    fn task_text_table() {
        let bot = mention("@_user_1", BOT, "openclaw");
        let alice = mention("@_user_10", "ou_alice", "Alice");
        let cases = [
            (receive("p2p", "  hello  world ", json!([])), "hello world"),
            (
                receive("group", "@_user_1 summarise", json!([bot.clone()])),
                "summarise",
            ),
            (
                receive(
                    "group",
                    "@_user_1 ask @_user_10 about it",
                    json!([bot.clone(), alice.clone()]),
                ),
                "ask @Alice about it",
            ),
        ];
        for (ev, want) in cases {
            assert_eq!(task_text(&message(ev), Some(BOT)), want);
        }
    }
}

//! The simulator's Feishu Open API: the routes the Feishu channel calls, in Feishu's wire
//! format, and a log of every message they received.
//!
//! - `POST /open-apis/auth/v3/tenant_access_token/internal` `{"app_id","app_secret"}` →
//!   `{"code":0,"msg":"ok","tenant_access_token":"t-sim-<n>","expire":<ttl>}`;
//! - `POST /open-apis/im/v1/messages/{message_id}/reply` and
//!   `POST /open-apis/im/v1/messages?receive_id_type=chat_id` (bearer token required; a token
//!   not issued here, or expired, gets HTTP 400 with code 99991663 like Feishu) →
//!   `{"code":0,"msg":"success","data":{"message_id",...}}`;
//! - `GET /open-apis/bot/v3/info` → the bot, open id [`BOT_OPEN_ID`];
//! - `GET|DELETE /sim/feishu/messages`: the log (every accepted reply and send, in order; at
//!   most [`MESSAGES_MAX`], the count keeps going) and the token requests counted;
//! - `PUT /sim/feishu/faults` `{"fail_next": n}`: the next n message calls answer HTTP 500.
//!
//! Feishu drops a repeated `uuid`; the simulator records every call so tests see repeats.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The simulated bot's open id (what `GET /open-apis/bot/v3/info` answers).
pub const BOT_OPEN_ID: &str = "ou_sim_bot";
/// Messages kept in the log.
pub const MESSAGES_MAX: usize = 10_000;
/// Tokens remembered as issued (the oldest is forgotten beyond it).
pub const TOKENS_MAX: usize = 1024;

/// One message the simulated Open API accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeishuMessage {
    pub seq: u64,
    /// `reply` or `send`.
    pub kind: String,
    /// The new message's id.
    pub message_id: String,
    /// The message replied to (`reply`).
    pub reply_to: Option<String>,
    /// The chat sent to (`send`).
    pub receive_id: Option<String>,
    pub msg_type: String,
    /// `content` as sent (a JSON string).
    pub content: String,
    /// The text of a `text` message.
    pub text: Option<String>,
    pub uuid: Option<String>,
    pub at_ms: u64,
}

/// `GET /sim/feishu/messages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeishuLog {
    pub count: u64,
    pub token_requests: u64,
    pub messages: Vec<FeishuMessage>,
}

#[derive(Default)]
struct State0 {
    messages: VecDeque<FeishuMessage>,
    count: u64,
    token_requests: u64,
    tokens: HashMap<String, u64>,
    token_order: VecDeque<String>,
    fail_next: u32,
}

/// The simulated Open API. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct FeishuSim {
    state: Arc<Mutex<State0>>,
    token_ttl_s: u64,
}

fn now_ms() -> u64 {
    super::now_ms()
}

fn feishu_error(status: StatusCode, code: i64, msg: &str) -> Response {
    (status, Json(json!({"code": code, "msg": msg}))).into_response()
}

impl FeishuSim {
    pub fn new(token_ttl_s: u64) -> FeishuSim {
        FeishuSim {
            state: Default::default(),
            token_ttl_s,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State0> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route(
                "/open-apis/auth/v3/tenant_access_token/internal",
                post(token),
            )
            .route("/open-apis/im/v1/messages/{message_id}/reply", post(reply))
            .route("/open-apis/im/v1/messages", post(send))
            .route("/open-apis/bot/v3/info", get(bot_info))
            .route("/sim/feishu/messages", get(log).delete(reset))
            .route("/sim/feishu/faults", put(faults))
            .with_state(self.clone())
    }

    /// The log, as `GET /sim/feishu/messages` shows it.
    pub fn log(&self) -> FeishuLog {
        let s = self.lock();
        FeishuLog {
            count: s.count,
            token_requests: s.token_requests,
            messages: s.messages.iter().cloned().collect(),
        }
    }

    /// Check the bearer token; Feishu's answer when it is not valid.
    // The error is the handler's whole answer, returned at once: its size does not matter.
    #[allow(clippy::result_large_err)]
    fn authorize(&self, headers: &HeaderMap) -> Result<(), Response> {
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let s = self.lock();
        match token.and_then(|t| s.tokens.get(t)) {
            Some(&exp) if now_ms() < exp => Ok(()),
            _ => Err(feishu_error(
                StatusCode::BAD_REQUEST,
                99991663,
                "Invalid access token for authorization. Please make a request with token attached.",
            )),
        }
    }

    /// A fault for this message call, if one is armed.
    fn fault(&self) -> Option<Response> {
        let mut s = self.lock();
        if s.fail_next > 0 {
            s.fail_next -= 1;
            return Some(feishu_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                1000,
                "simulated failure",
            ));
        }
        None
    }

    fn record(&self, mut m: FeishuMessage) -> FeishuMessage {
        let mut s = self.lock();
        s.count += 1;
        m.seq = s.count;
        m.message_id = format!("om_sim_{}", s.count);
        m.at_ms = now_ms();
        if s.messages.len() >= MESSAGES_MAX {
            s.messages.pop_front();
        }
        s.messages.push_back(m.clone());
        m
    }
}

#[derive(Deserialize)]
struct TokenBody {
    #[serde(default)]
    app_id: String,
    #[serde(default)]
    app_secret: String,
}

async fn token(State(f): State<FeishuSim>, body: Option<Json<TokenBody>>) -> Response {
    let Some(Json(b)) = body else {
        return feishu_error(StatusCode::BAD_REQUEST, 10003, "invalid param");
    };
    if b.app_id.is_empty() || b.app_secret.is_empty() {
        return feishu_error(StatusCode::OK, 10003, "invalid param");
    }
    let mut s = f.lock();
    s.token_requests += 1;
    let t = format!("t-sim-{}", s.token_requests);
    s.tokens
        .insert(t.clone(), now_ms() + f.token_ttl_s.saturating_mul(1000));
    s.token_order.push_back(t.clone());
    if s.token_order.len() > TOKENS_MAX {
        if let Some(old) = s.token_order.pop_front() {
            s.tokens.remove(&old);
        }
    }
    Json(json!({"code": 0, "msg": "ok", "tenant_access_token": t, "expire": f.token_ttl_s}))
        .into_response()
}

/// Read `msg_type` and `content` (a JSON string) like Feishu does.
#[allow(clippy::result_large_err)]
fn message_body(b: &Value) -> Result<(String, String, Option<String>, Option<String>), Response> {
    let bad = |m: &str| feishu_error(StatusCode::BAD_REQUEST, 99992402, m);
    let msg_type = b
        .get("msg_type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("field validation failed: msg_type is required"))?;
    let content = b
        .get("content")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("field validation failed: content must be a JSON string"))?;
    let parsed: Value = serde_json::from_str(content)
        .map_err(|_| feishu_error(StatusCode::BAD_REQUEST, 230001, "invalid message content"))?;
    let text = match msg_type {
        "text" => Some(
            parsed
                .get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    feishu_error(StatusCode::BAD_REQUEST, 230001, "invalid message content")
                })?
                .to_string(),
        ),
        "post" | "interactive" | "image" | "file" | "share_chat" => None,
        _ => return Err(bad("field validation failed: unknown msg_type")),
    };
    let uuid = b.get("uuid").and_then(Value::as_str).map(str::to_string);
    Ok((msg_type.to_string(), content.to_string(), text, uuid))
}

fn sent(m: &FeishuMessage, chat_id: &str) -> Response {
    Json(json!({"code": 0, "msg": "success", "data": {
        "message_id": m.message_id,
        "root_id": m.reply_to.clone().unwrap_or_default(),
        "parent_id": m.reply_to.clone().unwrap_or_default(),
        "msg_type": m.msg_type,
        "create_time": m.at_ms.to_string(),
        "update_time": m.at_ms.to_string(),
        "deleted": false,
        "updated": false,
        "chat_id": chat_id,
        "sender": {"id": "cli_sim", "id_type": "app_id", "sender_type": "app", "tenant_key": "sim"},
        "body": {"content": m.content}
    }}))
    .into_response()
}

async fn reply(
    State(f): State<FeishuSim>,
    Path(message_id): Path<String>,
    headers: HeaderMap,
    body: Option<Json<Value>>,
) -> Response {
    if let Err(r) = f.authorize(&headers) {
        return r;
    }
    if let Some(r) = f.fault() {
        return r;
    }
    let b = body.map(|Json(v)| v).unwrap_or_default();
    let (msg_type, content, text, uuid) = match message_body(&b) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let m = f.record(FeishuMessage {
        seq: 0,
        kind: "reply".into(),
        message_id: String::new(),
        reply_to: Some(message_id),
        receive_id: None,
        msg_type,
        content,
        text,
        uuid,
        at_ms: 0,
    });
    sent(&m, "oc_sim")
}

#[derive(Deserialize)]
struct SendQuery {
    receive_id_type: Option<String>,
}

async fn send(
    State(f): State<FeishuSim>,
    Query(q): Query<SendQuery>,
    headers: HeaderMap,
    body: Option<Json<Value>>,
) -> Response {
    if let Err(r) = f.authorize(&headers) {
        return r;
    }
    if !matches!(
        q.receive_id_type.as_deref(),
        Some("chat_id" | "open_id" | "user_id" | "union_id" | "email")
    ) {
        return feishu_error(
            StatusCode::BAD_REQUEST,
            99992402,
            "field validation failed: receive_id_type is required",
        );
    }
    if let Some(r) = f.fault() {
        return r;
    }
    let b = body.map(|Json(v)| v).unwrap_or_default();
    let Some(receive_id) = b
        .get("receive_id")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return feishu_error(
            StatusCode::BAD_REQUEST,
            99992402,
            "field validation failed: receive_id is required",
        );
    };
    let (msg_type, content, text, uuid) = match message_body(&b) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let m = f.record(FeishuMessage {
        seq: 0,
        kind: "send".into(),
        message_id: String::new(),
        reply_to: None,
        receive_id: Some(receive_id.clone()),
        msg_type,
        content,
        text,
        uuid,
        at_ms: 0,
    });
    sent(&m, &receive_id)
}

async fn bot_info(State(f): State<FeishuSim>, headers: HeaderMap) -> Response {
    if let Err(r) = f.authorize(&headers) {
        return r;
    }
    Json(json!({"code": 0, "msg": "ok", "bot": {
        "activate_status": 2, "app_name": "openclaw-sim", "avatar_url": "",
        "ip_white_list": [], "open_id": BOT_OPEN_ID
    }}))
    .into_response()
}

async fn log(State(f): State<FeishuSim>) -> Json<FeishuLog> {
    Json(f.log())
}

async fn reset(State(f): State<FeishuSim>) -> StatusCode {
    let mut s = f.lock();
    s.messages.clear();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsBody {
    fail_next: u32,
}

async fn faults(State(f): State<FeishuSim>, body: Option<Json<FaultsBody>>) -> Response {
    let Some(Json(b)) = body else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"code": "invalid_body", "message": "expected {\"fail_next\": n}"}})),
        )
            .into_response();
    };
    f.lock().fail_next = b.fail_next;
    Json(json!({"fail_next": b.fail_next})).into_response()
}

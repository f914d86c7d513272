//! `POST /channels/feishu/events`: Feishu's event subscription. The handler reads the signature
//! headers and the raw body, hands them to the channel ([`crate::channels::feishu::Feishu`]) and
//! writes the answer: the challenge echoed, or `{"ok":true}` once the task is admitted (it runs
//! asynchronously) or the event was ignored.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};

use super::error::Code;
use super::{ApiError, AppState};
use crate::channels::feishu::{
    Ack, EventRequest, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};

pub async fn feishu_events(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let Some(feishu) = &st.app.feishu else {
        return Err(ApiError::not_found(
            Code::NotFound,
            "the Feishu channel is not configured on this node (set channels.feishu)",
        ));
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let ack = feishu
        .handle(EventRequest {
            timestamp: header(TIMESTAMP_HEADER),
            nonce: header(NONCE_HEADER),
            signature: header(SIGNATURE_HEADER),
            body: &body,
        })
        .await?;
    Ok(Json(match ack {
        Ack::Challenge(challenge) => json!({ "challenge": challenge }),
        Ack::Accepted { task_id, duplicate } => {
            json!({"ok": true, "task_id": task_id, "duplicate": duplicate})
        }
        Ack::Ignored(why) => json!({"ok": true, "ignored": why}),
    }))
}

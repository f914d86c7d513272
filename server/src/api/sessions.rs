//! `/api/sessions` over HTTP: list sessions a page at a time, show one, clear one. The work is
//! the sessions feature's ([`crate::sessions::Sessions`]); this file reads requests and writes
//! responses, and turns a stored [`Session`] into its view ([`view_of`], [`entry_of`]).

use axum::extract::State;
use axum::Json;
use openclaw_proto::api::{
    SessionCleared, SessionList, SessionListEntry, SessionMessageView, SessionTokens, SessionView,
};
use openclaw_proto::session::Session;
use serde::Deserialize;

use super::error::Code;
use super::{ApiError, ApiPath, ApiQuery, AppState};
use crate::sessions::SESSION_PAGE_MAX;
use crate::tasks::view::rfc3339;

/// Sessions per page when `limit` is not given.
pub const SESSION_PAGE_DEFAULT: usize = 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// The previous page's `next_cursor` (`cursor` is accepted too, as on `/api/tasks`).
    #[serde(alias = "cursor")]
    pub after: Option<String>,
    pub limit: Option<usize>,
}

fn tokens_of(s: &Session) -> SessionTokens {
    SessionTokens {
        messages: s.message_tokens(),
        summary: s.summary_tokens(),
    }
}

fn updated_at(s: &Session) -> Option<String> {
    (s.updated_at_ms > 0).then(|| rfc3339(s.updated_at_ms))
}

/// The view of a stored session.
pub fn view_of(s: &Session) -> SessionView {
    SessionView {
        id: s.id.clone(),
        agent: s.agent.clone(),
        messages: s
            .messages
            .iter()
            .map(|m| SessionMessageView {
                role: m.role.clone(),
                content: m.content.clone(),
            })
            .collect(),
        summary: s.summary.as_ref().map(|x| x.text.clone()),
        tokens: tokens_of(s),
        turns: s.turns,
        last_task: s.last_task.clone(),
        updated_at: updated_at(s),
    }
}

/// A session's line in a listing.
pub fn entry_of(s: &Session) -> SessionListEntry {
    SessionListEntry {
        id: s.id.clone(),
        agent: s.agent.clone(),
        messages: s.messages.len() as u64,
        summarised: s.summary.is_some(),
        tokens: tokens_of(s),
        turns: s.turns,
        last_task: s.last_task.clone(),
        updated_at: updated_at(s),
    }
}

/// `GET /api/sessions?limit=&after=`: sessions in id order, `limit` (1..=`SESSION_PAGE_MAX`,
/// default [`SESSION_PAGE_DEFAULT`]) per page; `next_cursor` is the next page's `after`.
pub async fn list(
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<SessionList>, ApiError> {
    let limit = q.limit.unwrap_or(SESSION_PAGE_DEFAULT);
    if limit == 0 || limit > SESSION_PAGE_MAX {
        return Err(ApiError::unprocessable(
            Code::InvalidQuery,
            format!("`limit` must be 1..={SESSION_PAGE_MAX}"),
        ));
    }
    let page = st.app.sessions.list(q.after.as_deref(), limit).await?;
    Ok(Json(SessionList {
        sessions: page.sessions.iter().map(entry_of).collect(),
        next_cursor: page.next,
    }))
}

/// `GET /api/sessions/{id}`: the session's messages, summary and counts; 404 `session_not_found`.
pub async fn get_session(
    State(st): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SessionView>, ApiError> {
    match st.app.sessions.get(&id).await? {
        Some(s) => Ok(Json(view_of(&s))),
        None => Err(not_found(&id)),
    }
}

/// `DELETE /api/sessions/{id}`: forget the conversation (its next turn starts anew);
/// 404 `session_not_found` when there is none.
pub async fn clear(
    State(st): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SessionCleared>, ApiError> {
    if st.app.sessions.remove(&id).await? {
        Ok(Json(SessionCleared { id, cleared: true }))
    } else {
        Err(not_found(&id))
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(Code::SessionNotFound, format!("no session with id {id}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openclaw_proto::session::{SessionMessage, SessionSummary};

    #[test]
    fn views_carry_the_contract_fields() {
        let mut s = Session::new("s1", "main");
        let v = view_of(&s);
        assert_eq!(v.updated_at, None, "never updated");
        assert_eq!(v.summary, None);
        s.messages = vec![
            SessionMessage {
                role: "user".into(),
                content: "hi".into(),
                tokens: 3,
            },
            SessionMessage {
                role: "assistant".into(),
                content: "hello".into(),
                tokens: 4,
            },
        ];
        s.summary = Some(SessionSummary {
            text: "earlier".into(),
            tokens: 5,
            covers: 6,
        });
        s.turns = 4;
        s.last_task = Some("t4".into());
        s.updated_at_ms = 1_700_000_000_000;
        let v = serde_json::to_value(view_of(&s)).unwrap_or_default();
        let keys: Vec<&str> = v
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        for k in [
            "id",
            "agent",
            "messages",
            "summary",
            "tokens",
            "turns",
            "last_task",
            "updated_at",
        ] {
            assert!(keys.contains(&k), "{k} missing from {v}");
        }
        assert_eq!(v["messages"][1]["role"], "assistant");
        assert_eq!(v["messages"][1]["content"], "hello");
        assert!(v["messages"][1].get("tokens").is_none());
        assert_eq!(v["tokens"]["messages"], 7);
        assert_eq!(v["tokens"]["summary"], 5);
        assert_eq!(v["summary"], "earlier");
        assert_eq!(v["updated_at"], "2023-11-14T22:13:20.000Z");
        let e = entry_of(&s);
        assert_eq!((e.messages, e.summarised, e.turns), (2, true, 4));
    }
}

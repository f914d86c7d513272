//! Sessions: a conversation's state behind one seam, [`SessionStore`], like the task ledger —
//! [`LocalSessions`] (this node's sled) when alone; cluster mode plugs in a replicated store.
//! [`Sessions`] is the handle the worker and the API use.
//!
//! A session changes only by whole turns ([`TurnUpdate`], applied by the pure
//! [`Session::apply_turn`]), so every store gives the same session for the same turns.

use std::sync::Arc;

use openclaw_proto::session::{Session, TurnUpdate};

use crate::storage::{StorageError, Store};

/// Messages a session keeps in full at most (the context layer folds older ones into the
/// summary or drops them first).
pub const SESSION_MESSAGES_MAX: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The replicated store could not commit or read (cluster mode).
    #[error("sessions: {0}")]
    Unavailable(String),
}

/// Where sessions live.
#[async_trait::async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// The session, if it exists.
    async fn get(&self, id: &str) -> Result<Option<Session>, SessionError>;
    /// Durably record one finished turn (flushed, or committed, before it returns).
    async fn record_turn(&self, upd: TurnUpdate) -> Result<(), SessionError>;
}

/// The sessions handle.
#[derive(Clone)]
pub struct Sessions {
    pub store: Arc<dyn SessionStore>,
}

impl Sessions {
    pub async fn get(&self, id: &str) -> Result<Option<Session>, SessionError> {
        self.store.get(id).await
    }

    pub async fn record_turn(&self, upd: TurnUpdate) -> Result<(), SessionError> {
        self.store.record_turn(upd).await
    }
}

/// Sessions in this node's sled (`sessions` tree).
pub struct LocalSessions {
    store: Store,
    /// One writer at a time: a turn is read, applied and written whole.
    write: tokio::sync::Mutex<()>,
}

impl LocalSessions {
    pub fn new(store: Store) -> LocalSessions {
        LocalSessions {
            store,
            write: tokio::sync::Mutex::new(()),
        }
    }
}

#[async_trait::async_trait]
impl SessionStore for LocalSessions {
    async fn get(&self, id: &str) -> Result<Option<Session>, SessionError> {
        Ok(self.store.session(id)?)
    }

    async fn record_turn(&self, upd: TurnUpdate) -> Result<(), SessionError> {
        {
            let _one = self.write.lock().await;
            let mut s = self
                .store
                .session(&upd.session)?
                .unwrap_or_else(|| Session::new(&upd.session, &upd.agent));
            s.apply_turn(&upd, crate::util::now_ms(), SESSION_MESSAGES_MAX);
            self.store.put_session(&s)?;
        }
        self.store.flush().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openclaw_proto::session::SessionMessage;

    fn turn(task: &str, text: &str) -> TurnUpdate {
        let m = |role: &str| SessionMessage {
            role: role.into(),
            content: format!("{role}: {text}"),
            tokens: 2,
        };
        TurnUpdate {
            session: "s1".into(),
            agent: "a".into(),
            task_id: task.into(),
            fold: 0,
            summary: None,
            append: vec![m("user"), m("assistant")],
        }
    }

    /// Turns are recorded in order, a retried turn counts once, and the session survives a
    /// reopen of the store.
    #[tokio::test]
    async fn turns_persist_in_order_and_apply_once() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = LocalSessions::new(Store::open(dir.path()).unwrap());
            s.record_turn(turn("t1", "one")).await.unwrap();
            s.record_turn(turn("t2", "two")).await.unwrap();
            s.record_turn(turn("t2", "two")).await.unwrap();
        }
        let s = LocalSessions::new(Store::open(dir.path()).unwrap());
        let got = s.get("s1").await.unwrap().unwrap();
        assert_eq!(got.turns, 2);
        assert_eq!(got.messages.len(), 4);
        assert_eq!(got.messages[0].content, "user: one");
        assert_eq!(got.messages[3].content, "assistant: two");
        assert_eq!(got.last_task.as_deref(), Some("t2"));
        assert!(s.get("nope").await.unwrap().is_none());
    }

    /// A data dir written before sessions had summaries (a bare list of messages) still reads.
    #[tokio::test]
    async fn an_old_transcript_reads_as_a_session() {
        #[derive(serde::Serialize)]
        struct Old {
            role: String,
            content: String,
        }
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let old = vec![Old {
            role: "user".into(),
            content: "hello there".into(),
        }];
        db.open_tree("sessions")
            .unwrap()
            .insert("s-old", openclaw_proto::codec::encode(&old).unwrap())
            .unwrap();
        db.flush().unwrap();
        drop(db);
        let s = LocalSessions::new(Store::open(dir.path()).unwrap());
        let got = s.get("s-old").await.unwrap().unwrap();
        assert_eq!(got.messages.len(), 1);
        assert_eq!(got.messages[0].content, "hello there");
        assert!(got.messages[0].tokens > 0);
    }
}

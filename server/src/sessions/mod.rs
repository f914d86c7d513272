//! Sessions: a conversation's state behind one seam, [`SessionStore`], like the task ledger —
//! [`LocalSessions`] (this node's sled) when alone; cluster mode plugs in a replicated store.
//! [`Sessions`] is the handle the worker and the API use.
//!
//! Besides turns, a store lists sessions a page at a time ([`SessionStore::list`], at most
//! [`SESSION_PAGE_MAX`] per page, in id order, with a cursor), removes one
//! ([`SessionStore::remove`], `DELETE /api/sessions/{id}`), and counts them
//! ([`SessionStore::count`], the `openclaw_sessions_live` gauge). A turn that finishes after its
//! session was removed starts the session anew.
//!
//! A session changes only by whole turns ([`TurnUpdate`], applied by the pure
//! [`Session::apply_turn`]), so every store gives the same session for the same turns.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use openclaw_proto::session::{Session, TurnUpdate};

use crate::storage::{StorageError, Store};

/// Messages a session keeps in full at most (the context layer folds older ones into the
/// summary or drops them first).
pub const SESSION_MESSAGES_MAX: usize = 200;

/// Sessions one `list` call returns at most (`GET /api/sessions?limit=`; beyond it 422).
pub const SESSION_PAGE_MAX: usize = 100;

/// One page of sessions, in id order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionPage {
    pub sessions: Vec<Session>,
    /// The id to list after for the next page; `None` at the end.
    pub next: Option<String>,
}

impl SessionPage {
    /// A page from up to `limit + 1` sessions in id order: the extra one only says there is more.
    pub fn of(mut sessions: Vec<Session>, limit: usize) -> SessionPage {
        let more = sessions.len() > limit;
        sessions.truncate(limit);
        let next = if more {
            sessions.last().map(|s| s.id.clone())
        } else {
            None
        };
        SessionPage { sessions, next }
    }
}

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
    /// Up to `limit` sessions (clamped to 1..=[`SESSION_PAGE_MAX`]) with ids after `after`, in
    /// id order, and the cursor of the next page.
    async fn list(&self, after: Option<&str>, limit: usize) -> Result<SessionPage, SessionError>;
    /// Remove a session durably; whether it existed.
    async fn remove(&self, id: &str) -> Result<bool, SessionError>;
    /// Sessions stored. The default pages through [`list`](Self::list) (bounded by the
    /// store's session bound); a store that keeps a count overrides it.
    async fn count(&self) -> Result<u64, SessionError> {
        let mut n = 0u64;
        let mut after: Option<String> = None;
        loop {
            let page = self.list(after.as_deref(), SESSION_PAGE_MAX).await?;
            n += page.sessions.len() as u64;
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(n),
            }
        }
    }
}

/// Clamp a requested page size to 1..=[`SESSION_PAGE_MAX`].
pub fn page_limit(limit: usize) -> usize {
    limit.clamp(1, SESSION_PAGE_MAX)
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

    pub async fn list(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<SessionPage, SessionError> {
        self.store.list(after, limit).await
    }

    /// Remove a session; whether it existed.
    pub async fn remove(&self, id: &str) -> Result<bool, SessionError> {
        self.store.remove(id).await
    }

    pub async fn count(&self) -> Result<u64, SessionError> {
        self.store.count().await
    }

    /// Set `openclaw_sessions_live` from the store's count. Called before each scrape (not per
    /// turn: a store without a kept count pages through its sessions), so sessions recorded by
    /// other nodes of a cluster show too. A failed count leaves the gauge as it was.
    pub async fn refresh_gauge(&self) {
        if let Ok(n) = self.store.count().await {
            crate::metrics::metrics().set_sessions_live(n);
        }
    }
}

/// Sessions in this node's sled (`session_state` tree).
pub struct LocalSessions {
    store: Store,
    /// One writer at a time: a turn is read, applied and written whole.
    write: tokio::sync::Mutex<()>,
    /// Sessions stored, or -1 when not known yet (counted by one scan on first use, then kept
    /// by the writers; a writer that removes sessions in bulk sets it back to -1).
    live: AtomicI64,
}

impl LocalSessions {
    pub fn new(store: Store) -> LocalSessions {
        LocalSessions {
            store,
            write: tokio::sync::Mutex::new(()),
            live: AtomicI64::new(-1),
        }
    }

    /// Add `d` to the kept count, if it is known.
    fn adjust_live(&self, d: i64) {
        let _ = self
            .live
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n >= 0).then_some((n + d).max(0))
            });
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
            let existing = self.store.session(&upd.session)?;
            let new = existing.is_none();
            let mut s = existing.unwrap_or_else(|| Session::new(&upd.session, &upd.agent));
            s.apply_turn(&upd, crate::util::now_ms(), SESSION_MESSAGES_MAX);
            self.store.put_session(&s)?;
            if new {
                self.adjust_live(1);
            }
        }
        self.store.flush().await?;
        Ok(())
    }

    async fn list(&self, after: Option<&str>, limit: usize) -> Result<SessionPage, SessionError> {
        let limit = page_limit(limit);
        let sessions = self.store.sessions_page(after, limit + 1)?;
        Ok(SessionPage::of(sessions, limit))
    }

    async fn remove(&self, id: &str) -> Result<bool, SessionError> {
        let existed = {
            let _one = self.write.lock().await;
            let existed = self.store.remove_session(id)?;
            if existed {
                self.adjust_live(-1);
            }
            existed
        };
        self.store.flush().await?;
        Ok(existed)
    }

    async fn count(&self) -> Result<u64, SessionError> {
        let n = self.live.load(Ordering::SeqCst);
        if n >= 0 {
            return Ok(n as u64);
        }
        // Counted under the writers' lock, so no turn lands between the scan and the store.
        let _one = self.write.lock().await;
        let n = self.live.load(Ordering::SeqCst);
        if n >= 0 {
            return Ok(n as u64);
        }
        let store = self.store.clone();
        let counted = tokio::task::spawn_blocking(move || store.sessions_len())
            .await
            .map_err(|e| SessionError::Unavailable(format!("counting sessions: {e}")))?;
        self.live
            .store(i64::try_from(counted).unwrap_or(i64::MAX), Ordering::SeqCst);
        Ok(counted as u64)
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

    fn turn_of(session: &str, task: &str) -> TurnUpdate {
        TurnUpdate {
            session: session.into(),
            ..turn(task, "x")
        }
    }

    /// Every page of a listing, `limit` per page: (ids in order, pages).
    async fn all_ids(s: &LocalSessions, limit: usize) -> (Vec<String>, usize) {
        let mut ids = Vec::new();
        let mut after: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = s.list(after.as_deref(), limit).await.unwrap();
            pages += 1;
            assert!(page.sessions.len() <= page_limit(limit));
            ids.extend(page.sessions.iter().map(|x| x.id.clone()));
            match page.next {
                Some(n) => after = Some(n),
                None => return (ids, pages),
            }
            assert!(pages < 1000, "paging does not end");
        }
    }

    /// Listing pages through every session once, in id order; the page size is clamped to the
    /// bound; removal removes once; the count follows turns and removals (and a reopen).
    #[tokio::test]
    async fn sessions_list_in_pages_remove_and_count() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalSessions::new(Store::open(dir.path()).unwrap());
        assert_eq!(s.count().await.unwrap(), 0);
        assert_eq!(s.list(None, 10).await.unwrap(), SessionPage::default());
        let n = SESSION_PAGE_MAX + 5;
        for i in 0..n {
            s.record_turn(turn_of(&format!("s{i:04}"), "t1"))
                .await
                .unwrap();
        }
        s.record_turn(turn_of("s0000", "t2")).await.unwrap();
        assert_eq!(s.count().await.unwrap(), n as u64);
        let want: Vec<String> = (0..n).map(|i| format!("s{i:04}")).collect();
        // (limit asked, pages expected)
        for (limit, pages) in [(1, n), (7, n.div_ceil(7)), (n, 2), (10_000, 2), (0, n)] {
            let (ids, got_pages) = all_ids(&s, limit).await;
            assert_eq!(ids, want, "limit {limit}");
            assert_eq!(got_pages, pages, "limit {limit}");
        }
        let page = s.list(Some("s0100"), 3).await.unwrap();
        let ids: Vec<&str> = page.sessions.iter().map(|x| x.id.as_str()).collect();
        assert_eq!(ids, ["s0101", "s0102", "s0103"]);
        assert_eq!(page.next.as_deref(), Some("s0103"));
        let last = s.list(Some("s0103"), 100).await.unwrap();
        assert_eq!(last.sessions.len(), 1);
        assert_eq!(last.next, None);

        assert!(s.remove("s0003").await.unwrap());
        assert!(!s.remove("s0003").await.unwrap(), "removed once");
        assert!(!s.remove("nope").await.unwrap());
        assert!(s.get("s0003").await.unwrap().is_none());
        assert_eq!(s.count().await.unwrap(), n as u64 - 1);
        // A turn after the removal starts the session anew.
        s.record_turn(turn_of("s0003", "t9")).await.unwrap();
        assert_eq!(s.get("s0003").await.unwrap().unwrap().turns, 1);
        assert_eq!(s.count().await.unwrap(), n as u64);
        drop(s);
        let s = LocalSessions::new(Store::open(dir.path()).unwrap());
        assert_eq!(
            s.count().await.unwrap(),
            n as u64,
            "counted again after a reopen"
        );
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
        // It lists and counts like a session, and is removed like one.
        let page = s.list(None, 10).await.unwrap();
        assert_eq!(page.sessions.len(), 1);
        assert_eq!(page.sessions[0].id, "s-old");
        assert_eq!(s.count().await.unwrap(), 1);
        assert!(s.remove("s-old").await.unwrap());
        assert!(s.get("s-old").await.unwrap().is_none());
        assert_eq!(s.count().await.unwrap(), 0);
    }
}

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
//!
//! Bounded: a session holds at most [`SESSION_MESSAGES_MAX`] messages; a store keeps at most
//! `session.sessions_max` sessions (recording a turn of a new session past it forgets the least
//! recently updated one) and forgets sessions untouched for `session.ttl_hours` (the periodic
//! [`SessionStore::sweep`], at most [`SESSION_SWEEP_MAX`] per call).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openclaw_proto::session::{Session, TurnUpdate};

use crate::config::ConfigCell;
use crate::storage::{StorageError, Store};

/// Messages a session keeps in full at most (the context layer folds older ones into the
/// summary or drops them first).
pub const SESSION_MESSAGES_MAX: usize = 200;

/// Sessions one sweep forgets at most (the next sweep continues).
pub const SESSION_SWEEP_MAX: usize = 10_000;

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
    /// Forget the sessions not updated for `session.ttl_hours` before `now_ms`, and the least
    /// recently updated while more than `session.sessions_max` are kept; at most
    /// [`SESSION_SWEEP_MAX`]. Returns how many were forgotten (in a cluster only the leader
    /// proposes; the others return 0).
    async fn sweep(&self, now_ms: u64) -> Result<u64, SessionError>;
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

    pub async fn sweep(&self, now_ms: u64) -> Result<u64, SessionError> {
        self.store.sweep(now_ms).await
    }
}

/// Which sessions a sweep forgets, oldest first (pure): given the oldest sessions' update
/// times (ascending) and how many are kept, the number of leading ones that are older than
/// `before_ms` or beyond `keep_max`.
pub fn sweep_count(oldest_updated_ms: &[u64], kept: u64, before_ms: u64, keep_max: u64) -> usize {
    let over = kept.saturating_sub(keep_max);
    oldest_updated_ms
        .iter()
        .enumerate()
        .take_while(|(i, at)| (*i as u64) < over || **at < before_ms)
        .count()
}

/// The index key of a session updated at `at_ms`: time first, so the oldest come first.
fn index_key(at_ms: u64, id: &str) -> Vec<u8> {
    let mut k = at_ms.to_be_bytes().to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

/// Sessions in this node's sled (`session_state` tree), with `session_updated` (update time +
/// id) as the index expiry and the bound walk.
pub struct LocalSessions {
    store: Store,
    cfg: ConfigCell,
    index: sled::Tree,
    /// Sessions kept (the index's length, which sled counts only by walking it).
    kept: AtomicU64,
    /// One writer at a time: a turn is read, applied and written whole.
    write: tokio::sync::Mutex<()>,
}

impl LocalSessions {
    /// Open the sessions of `store`, rebuilding the update-time index from the sessions (one
    /// streaming pass; it also heals an index write a crash cut short).
    pub fn new(store: Store, cfg: ConfigCell) -> Result<LocalSessions, SessionError> {
        let index = store.index_tree("session_updated")?;
        index.clear().map_err(StorageError::from)?;
        let mut kept = 0u64;
        for s in store.sessions() {
            index
                .insert(index_key(s.updated_at_ms, &s.id), &[])
                .map_err(StorageError::from)?;
            kept += 1;
        }
        Ok(LocalSessions {
            store,
            cfg,
            index,
            kept: AtomicU64::new(kept),
            write: tokio::sync::Mutex::new(()),
        })
    }

    /// Forget the oldest sessions that `sweep_count` picks (under the write lock).
    fn forget_oldest(
        &self,
        before_ms: u64,
        keep_max: u64,
        max: usize,
    ) -> Result<u64, SessionError> {
        let oldest: Vec<(sled::IVec, u64)> = self
            .index
            .iter()
            .take(max)
            .filter_map(|item| item.ok())
            .filter_map(|(k, _)| {
                let at: [u8; 8] = k.get(..8)?.try_into().ok()?;
                Some((k, u64::from_be_bytes(at)))
            })
            .collect();
        let times: Vec<u64> = oldest.iter().map(|(_, at)| *at).collect();
        let n = sweep_count(
            &times,
            self.kept.load(Ordering::Relaxed),
            before_ms,
            keep_max,
        );
        for (k, _) in oldest.iter().take(n) {
            if let Ok(id) = std::str::from_utf8(&k[8..]) {
                self.store.remove_session(id)?;
            }
            self.index.remove(k).map_err(StorageError::from)?;
            let _ = self
                .kept
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                    Some(v.saturating_sub(1))
                });
        }
        Ok(n as u64)
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
            let old = self.store.session(&upd.session)?;
            let was_indexed = old
                .as_ref()
                .map(|s| self.index.contains_key(index_key(s.updated_at_ms, &s.id)))
                .transpose()
                .map_err(StorageError::from)?
                .unwrap_or(false);
            let mut s = old.unwrap_or_else(|| Session::new(&upd.session, &upd.agent));
            let before = s.updated_at_ms;
            if s.apply_turn(&upd, crate::util::now_ms(), SESSION_MESSAGES_MAX) {
                self.store.put_session(&s)?;
                if was_indexed {
                    self.index
                        .remove(index_key(before, &s.id))
                        .map_err(StorageError::from)?;
                } else {
                    self.kept.fetch_add(1, Ordering::Relaxed);
                }
                self.index
                    .insert(index_key(s.updated_at_ms, &s.id), &[])
                    .map_err(StorageError::from)?;
                // Past the bound: the least recently updated other session leaves.
                let keep_max = self.cfg.get().session.sessions_max;
                self.forget_oldest(0, keep_max, 1)?;
            }
        }
        self.store.flush().await?;
        Ok(())
    }

    async fn sweep(&self, now_ms: u64) -> Result<u64, SessionError> {
        let cfg = self.cfg.get();
        let (before, keep_max) = (cfg.session.expired_before(now_ms), cfg.session.sessions_max);
        drop(cfg);
        let n = {
            let _one = self.write.lock().await;
            self.forget_oldest(before, keep_max, SESSION_SWEEP_MAX)?
        };
        if n > 0 {
            self.store.flush().await?;
        }
        Ok(n)
    }

    async fn list(&self, after: Option<&str>, limit: usize) -> Result<SessionPage, SessionError> {
        let limit = page_limit(limit);
        let sessions = self.store.sessions_page(after, limit + 1)?;
        Ok(SessionPage::of(sessions, limit))
    }

    async fn remove(&self, id: &str) -> Result<bool, SessionError> {
        let existed = {
            let _one = self.write.lock().await;
            if let Some(old) = self.store.session(id)? {
                let key = index_key(old.updated_at_ms, &old.id);
                if self
                    .index
                    .remove(key)
                    .map_err(StorageError::from)?
                    .is_some()
                {
                    let _ = self
                        .kept
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                            Some(v.saturating_sub(1))
                        });
                }
            }
            self.store.remove_session(id)?
        };
        self.store.flush().await?;
        Ok(existed)
    }

    /// The update-time index's length, kept by the writers.
    async fn count(&self) -> Result<u64, SessionError> {
        Ok(self.kept.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openclaw_proto::session::SessionMessage;

    fn cfg() -> ConfigCell {
        ConfigCell::new(crate::config::Config::default())
    }

    fn turn(task: &str, text: &str) -> TurnUpdate {
        turn_of("s1", task, text)
    }

    fn turn_of(session: &str, task: &str, text: &str) -> TurnUpdate {
        let m = |role: &str| SessionMessage {
            role: role.into(),
            content: format!("{role}: {text}"),
            tokens: 2,
        };
        TurnUpdate {
            session: session.into(),
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
            let s = LocalSessions::new(Store::open(dir.path()).unwrap(), cfg()).unwrap();
            s.record_turn(turn("t1", "one")).await.unwrap();
            s.record_turn(turn("t2", "two")).await.unwrap();
            s.record_turn(turn("t2", "two")).await.unwrap();
        }
        let s = LocalSessions::new(Store::open(dir.path()).unwrap(), cfg()).unwrap();
        let got = s.get("s1").await.unwrap().unwrap();
        assert_eq!(got.turns, 2);
        assert_eq!(got.messages.len(), 4);
        assert_eq!(got.messages[0].content, "user: one");
        assert_eq!(got.messages[3].content, "assistant: two");
        assert_eq!(got.last_task.as_deref(), Some("t2"));
        assert!(s.get("nope").await.unwrap().is_none());
    }

    fn turn_in(session: &str, task: &str) -> TurnUpdate {
        turn_of(session, task, "x")
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
        let s = LocalSessions::new(Store::open(dir.path()).unwrap(), cfg()).unwrap();
        assert_eq!(s.count().await.unwrap(), 0);
        assert_eq!(s.list(None, 10).await.unwrap(), SessionPage::default());
        let n = SESSION_PAGE_MAX + 5;
        for i in 0..n {
            s.record_turn(turn_in(&format!("s{i:04}"), "t1"))
                .await
                .unwrap();
        }
        s.record_turn(turn_in("s0000", "t2")).await.unwrap();
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
        s.record_turn(turn_in("s0003", "t9")).await.unwrap();
        assert_eq!(s.get("s0003").await.unwrap().unwrap().turns, 1);
        assert_eq!(s.count().await.unwrap(), n as u64);
        drop(s);
        let s = LocalSessions::new(Store::open(dir.path()).unwrap(), cfg()).unwrap();
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
        // sled's background flusher may hold the file lock a moment after the drop.
        let mut store = Store::open(dir.path());
        for _ in 0..100 {
            if store.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            store = Store::open(dir.path());
        }
        let s = LocalSessions::new(store.unwrap(), cfg()).unwrap();
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

    /// The sweep's choice: every session older than the cut-off, and more, oldest first, while
    /// over the bound.
    #[test]
    fn sweep_count_table() {
        // (oldest update times, kept, before, keep_max) -> forgotten
        let cases: [(&[u64], u64, u64, u64, usize); 6] = [
            (&[], 0, 100, 10, 0),
            (&[10, 20, 30], 3, 0, 10, 0),
            (&[10, 20, 30], 3, 25, 10, 2),
            (&[10, 20, 30], 3, 0, 1, 2),
            (&[10, 20, 30], 5, 0, 1, 3),
            (&[10, 20, 30], 3, 15, 2, 1),
        ];
        for (times, kept, before, max, want) in cases {
            assert_eq!(
                sweep_count(times, kept, before, max),
                want,
                "{times:?} {kept} {before} {max}"
            );
        }
    }

    /// `session.sessions_max` holds at every turn (the least recently updated leaves), and the
    /// sweep forgets sessions past `session.ttl_hours`; both survive a reopen.
    #[tokio::test]
    async fn the_bound_and_the_ttl_forget_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = crate::config::Config::default();
        c.session.sessions_max = 2;
        let cell = ConfigCell::new(c);
        {
            let s = LocalSessions::new(Store::open(dir.path()).unwrap(), cell.clone()).unwrap();
            s.record_turn(turn_of("a", "t1", "x")).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
            s.record_turn(turn_of("b", "t2", "x")).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
            s.record_turn(turn_of("a", "t3", "x")).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
            // A third session: `b` is the least recently updated and leaves.
            s.record_turn(turn_of("c", "t4", "x")).await.unwrap();
            assert!(s.get("b").await.unwrap().is_none());
            assert_eq!(s.get("a").await.unwrap().unwrap().turns, 2);
            assert!(s.get("c").await.unwrap().is_some());
            assert_eq!(s.sweep(crate::util::now_ms()).await.unwrap(), 0);
        }
        let s = LocalSessions::new(Store::open(dir.path()).unwrap(), cell).unwrap();
        assert!(s.get("a").await.unwrap().is_some());
        // 168 hours later both expired.
        let later = crate::util::now_ms() + 169 * 3_600_000;
        assert_eq!(s.sweep(later).await.unwrap(), 2);
        assert!(s.get("a").await.unwrap().is_none());
        assert!(s.get("c").await.unwrap().is_none());
    }
}

//! `openclaw-node session list|show ID|clear ID`: a node's conversations over HTTP
//! (`GET /api/sessions`, `GET /api/sessions/{id}`, `DELETE /api/sessions/{id}`), printed as a
//! table or, with `--json`, as the node's answer. `list --all` follows the cursor to the end
//! (`--json` then prints one `{"sessions": [...]}` with every page). Exit codes: 0 fine, 1 an
//! error answer (an unknown session: 404 `session_not_found`) or an unreachable node.

use openclaw_proto::api::{SessionCleared, SessionList, SessionListEntry, SessionView};

use super::{render_table, thousands, Align};
use crate::cli::{SessionAction, SessionArgs};
use crate::client::Client;

/// Pages `list --all` follows at most (100 sessions each): a runaway cursor stops here.
pub const LIST_ALL_PAGES_MAX: usize = 10_000;

/// `s` as one path segment: unreserved characters as they are, every other byte `%XX`.
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The listing's query string.
pub fn list_path(limit: usize, after: Option<&str>) -> String {
    match after {
        Some(a) => format!("/api/sessions?limit={limit}&after={}", path_segment(a)),
        None => format!("/api/sessions?limit={limit}"),
    }
}

fn or_dash(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".into())
}

/// The readable form of a page of sessions (and the cursor of the next one).
pub fn render_list(entries: &[SessionListEntry], next: Option<&str>) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.id.clone(),
                e.agent.clone(),
                thousands(e.turns),
                thousands(e.messages),
                thousands(e.tokens.messages),
                if e.summarised {
                    thousands(e.tokens.summary)
                } else {
                    "-".into()
                },
                or_dash(&e.last_task),
                or_dash(&e.updated_at),
            ]
        })
        .collect();
    let mut out = format!("Sessions ({}):\n", rows.len());
    out.push_str(&render_table(
        &[
            ("id", Align::Left),
            ("agent", Align::Left),
            ("turns", Align::Right),
            ("messages", Align::Right),
            ("msg tokens", Align::Right),
            ("summary tokens", Align::Right),
            ("last task", Align::Left),
            ("updated", Align::Left),
        ],
        &rows,
    ));
    if let Some(n) = next {
        out.push_str(&format!(
            "more: openclaw-node session list --after {n} (or --all)\n"
        ));
    }
    out
}

/// The readable form of one session.
pub fn render_show(v: &SessionView) -> String {
    let mut out = format!(
        "Session {} (agent {}): {} turns, last task {}, updated {}\n\
         tokens: {} in {} messages kept in full, {} in the summary\n",
        v.id,
        v.agent,
        thousands(v.turns),
        or_dash(&v.last_task),
        or_dash(&v.updated_at),
        thousands(v.tokens.messages),
        v.messages.len(),
        thousands(v.tokens.summary),
    );
    match &v.summary {
        Some(s) => out.push_str(&format!("\nSummary of the older messages:\n  {s}\n")),
        None => out.push_str("\nNo summary (no older messages folded yet).\n"),
    }
    out.push_str("\nMessages, oldest first:\n");
    for m in &v.messages {
        out.push_str(&format!("[{}] {}\n", m.role, m.content));
    }
    out
}

pub async fn run(args: SessionArgs) -> anyhow::Result<i32> {
    match args.action {
        SessionAction::List {
            opts,
            limit,
            after,
            all,
        } => {
            let client = Client::new(&opts.target)?;
            let mut page: SessionList =
                client.get_json(&list_path(limit, after.as_deref())).await?;
            if !all {
                if opts.json {
                    super::print_json(&page)?;
                } else {
                    print!(
                        "{}",
                        render_list(&page.sessions, page.next_cursor.as_deref())
                    );
                }
                return Ok(0);
            }
            let mut every = std::mem::take(&mut page.sessions);
            let mut pages = 1;
            while let Some(next) = page.next_cursor.take() {
                if pages >= LIST_ALL_PAGES_MAX {
                    anyhow::bail!("stopped after {pages} pages; the cursor does not end");
                }
                page = client.get_json(&list_path(limit, Some(&next))).await?;
                every.append(&mut page.sessions);
                pages += 1;
            }
            if opts.json {
                super::print_json(&SessionList {
                    sessions: every,
                    next_cursor: None,
                })?;
            } else {
                print!("{}", render_list(&every, None));
            }
            Ok(0)
        }
        SessionAction::Show { opts, id } => {
            let client = Client::new(&opts.target)?;
            let v: SessionView = client
                .get_json(&format!("/api/sessions/{}", path_segment(&id)))
                .await?;
            if opts.json {
                super::print_json(&v)?;
            } else {
                print!("{}", render_show(&v));
            }
            Ok(0)
        }
        SessionAction::Clear { opts, id } => {
            let client = Client::new(&opts.target)?;
            let r: SessionCleared = client
                .delete_json(&format!("/api/sessions/{}", path_segment(&id)))
                .await?;
            if opts.json {
                super::print_json(&r)?;
            } else {
                println!("session {} cleared", r.id);
            }
            Ok(0)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use openclaw_proto::api::{SessionMessageView, SessionTokens};

    #[test]
    fn ids_are_escaped_as_one_path_segment() {
        // (id, segment)
        let cases = [
            ("s-alice", "s-alice"),
            ("a.b_c~d", "a.b_c~d"),
            ("a/b", "a%2Fb"),
            ("a b?c#d&e", "a%20b%3Fc%23d%26e"),
            ("é", "%C3%A9"),
            ("", ""),
        ];
        for (id, want) in cases {
            assert_eq!(path_segment(id), want, "{id}");
        }
        assert_eq!(list_path(5, None), "/api/sessions?limit=5");
        assert_eq!(
            list_path(5, Some("s 1")),
            "/api/sessions?limit=5&after=s%201"
        );
    }

    fn entry(id: &str, summarised: bool) -> SessionListEntry {
        SessionListEntry {
            id: id.into(),
            agent: "main".into(),
            messages: 4,
            summarised,
            tokens: SessionTokens {
                messages: 1234,
                summary: if summarised { 56 } else { 0 },
            },
            turns: 2,
            last_task: Some("t-2".into()),
            updated_at: None,
        }
    }

    #[test]
    fn list_and_show_render_the_counts() {
        let t = render_list(&[entry("s-a", true), entry("s-b", false)], Some("s-b"));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "Sessions (2):");
        assert!(lines[1].starts_with("id "), "{t}");
        assert!(lines[3].contains("1,234") && lines[3].contains("56"), "{t}");
        assert!(lines[4].contains(" - "), "no summary shows -: {t}");
        assert!(t.contains("--after s-b"), "{t}");
        assert!(!render_list(&[], None).contains("more:"));

        let v = SessionView {
            id: "s-a".into(),
            agent: "main".into(),
            messages: vec![SessionMessageView {
                role: "user".into(),
                content: "hello".into(),
            }],
            summary: Some("they said hi".into()),
            tokens: SessionTokens {
                messages: 3,
                summary: 4,
            },
            turns: 7,
            last_task: None,
            updated_at: Some("2026-12-01T00:00:00.000Z".into()),
        };
        let t = render_show(&v);
        assert!(t.contains("7 turns"), "{t}");
        assert!(
            t.contains("3 in 1 messages kept in full, 4 in the summary"),
            "{t}"
        );
        assert!(t.contains("they said hi"), "{t}");
        assert!(t.contains("[user] hello"), "{t}");
    }
}

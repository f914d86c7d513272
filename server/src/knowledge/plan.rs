//! The knowledge cache's indexing decisions (pure): which memory files to (re-)embed, keep or
//! drop given what the index holds ([`plan`]), which files fit an agent's bounds ([`admit`]),
//! and which agents `watch_paths` covers ([`watched_agents`]). Which chunks go into a prompt is
//! [`super::select`].
//!
//! A file is re-embedded only when its content hash or the embedding model changed, or when its
//! last embedding failed (then at most every [`EMBED_RETRY_MS`]) — so a restart re-embeds
//! nothing that did not change.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// How long after a failed embedding (provider down) a file is tried again; meanwhile it is
/// searched by BM25 alone.
pub const EMBED_RETRY_MS: u64 = 60_000;
/// Chunks one agent's index holds at most; files past it are not indexed (reported).
pub const CHUNKS_PER_AGENT_MAX: usize = 20_000;
/// Bytes (chunk texts + vectors) one agent's index holds at most; files past it are not indexed.
pub const INDEX_BYTES_PER_AGENT_MAX: u64 = 128 * 1024 * 1024;

/// What the index holds for one file.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub hash: String,
    pub model: String,
    /// When its embedding last failed (its chunks have no vectors), if it did.
    pub failed_at_ms: Option<u64>,
}

/// What to do with the files of one agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// New, changed, embedded with another model, or a failed embedding due for a retry.
    pub embed: Vec<String>,
    /// In the index and unchanged.
    pub keep: Vec<String>,
    /// In the index and no longer on disk.
    pub drop: Vec<String>,
}

/// Compare the index (`held`) with the files now on disk (`current`: name → content hash).
pub fn plan(
    held: &BTreeMap<String, Held>,
    current: &BTreeMap<String, String>,
    model: &str,
    now_ms: u64,
) -> Plan {
    let mut out = Plan::default();
    for (name, hash) in current {
        let same = held.get(name).is_some_and(|h| {
            h.hash == *hash
                && h.model == model
                && h.failed_at_ms
                    .is_none_or(|t| now_ms.saturating_sub(t) < EMBED_RETRY_MS)
        });
        if same {
            out.keep.push(name.clone());
        } else {
            out.embed.push(name.clone());
        }
    }
    out.drop = held
        .keys()
        .filter(|n| !current.contains_key(*n))
        .cloned()
        .collect();
    out
}

/// The agents whose workspace (`dirs`) contains or lies inside one of `watch_paths`; every
/// agent when `watch_paths` is empty.
pub fn watched_agents(dirs: &BTreeMap<String, PathBuf>, watch_paths: &[PathBuf]) -> Vec<String> {
    dirs.iter()
        .filter(|(_, d)| {
            watch_paths.is_empty()
                || watch_paths
                    .iter()
                    .any(|p| p.starts_with(d) || d.starts_with(p))
        })
        .map(|(a, _)| a.clone())
        .collect()
}

/// Which files fit the bounds: `files` are `(name, chunks, bytes)` in index order (kept files
/// first, then new ones by name); each is admitted while the totals stay within `chunks_max`
/// and `bytes_max`, otherwise refused (a smaller file after it may still fit). Returns the
/// admitted names and the refused ones with the reason.
pub fn admit(
    files: &[(String, usize, u64)],
    chunks_max: usize,
    bytes_max: u64,
) -> (Vec<String>, Vec<(String, String)>) {
    let (mut chunks, mut bytes) = (0usize, 0u64);
    let (mut ok, mut refused) = (Vec::new(), Vec::new());
    for (name, c, b) in files {
        if chunks + c > chunks_max {
            refused.push((
                name.clone(),
                format!("the agent's index would pass {chunks_max} chunks"),
            ));
        } else if bytes + b > bytes_max {
            refused.push((
                name.clone(),
                format!("the agent's index would pass {bytes_max} bytes"),
            ));
        } else {
            chunks += c;
            bytes += b;
            ok.push(name.clone());
        }
    }
    (ok, refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(hash: &str, model: &str, failed: Option<u64>) -> Held {
        Held {
            hash: hash.into(),
            model: model.into(),
            failed_at_ms: failed,
        }
    }

    #[test]
    fn plan_reembeds_only_what_changed() {
        type Case<'a> = (
            Vec<(&'a str, Held)>,
            &'a [(&'a str, &'a str)],
            (&'a [&'a str], &'a [&'a str], &'a [&'a str]),
        );
        let now = 1_000_000;
        let cases: Vec<Case> = vec![
            // Restart with nothing changed: nothing embedded.
            (
                vec![("a", held("h1", "m", None)), ("b", held("h2", "m", None))],
                &[("a", "h1"), ("b", "h2")],
                (&[], &["a", "b"], &[]),
            ),
            // One changed, one new, one removed.
            (
                vec![("a", held("h1", "m", None)), ("gone", held("h", "m", None))],
                &[("a", "h9"), ("new", "h3")],
                (&["a", "new"], &[], &["gone"]),
            ),
            // Another embedding model: everything again.
            (
                vec![("a", held("h1", "old", None))],
                &[("a", "h1")],
                (&["a"], &[], &[]),
            ),
            // A failed embedding: kept (BM25 only) until the retry is due, then embedded.
            (
                vec![("a", held("h1", "m", Some(now - 10)))],
                &[("a", "h1")],
                (&[], &["a"], &[]),
            ),
            (
                vec![("a", held("h1", "m", Some(now - EMBED_RETRY_MS)))],
                &[("a", "h1")],
                (&["a"], &[], &[]),
            ),
            // Empty index, empty workspace.
            (vec![], &[], (&[], &[], &[])),
        ];
        for (h, cur, (embed, keep, drop)) in cases {
            let h: BTreeMap<String, Held> =
                h.iter().map(|(n, x)| (n.to_string(), x.clone())).collect();
            let cur: BTreeMap<String, String> = cur
                .iter()
                .map(|(n, x)| (n.to_string(), x.to_string()))
                .collect();
            let p = plan(&h, &cur, "m", now);
            assert_eq!(p.embed, *embed, "{h:?} {cur:?}");
            assert_eq!(p.keep, *keep, "{h:?} {cur:?}");
            assert_eq!(p.drop, *drop, "{h:?} {cur:?}");
        }
    }

    #[test]
    fn watched_agents_table() {
        let dirs: BTreeMap<String, PathBuf> = [
            ("main", "/d/workspace"),
            ("ops", "/d/workspace-ops"),
            ("web", "/srv/web"),
        ]
        .iter()
        .map(|(a, d)| (a.to_string(), PathBuf::from(d)))
        .collect();
        // (watch_paths, agents watched)
        let cases: &[(&[&str], &[&str])] = &[
            (&[], &["main", "ops", "web"]),
            (&["/d/workspace/memory/"], &["main"]),
            (&["/d/workspace"], &["main"]),
            (&["/d"], &["main", "ops"]),
            (
                &["/srv/web/skills", "/d/workspace-ops/memory"],
                &["ops", "web"],
            ),
            (&["/elsewhere"], &[]),
        ];
        for (paths, want) in cases {
            let p: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
            assert_eq!(watched_agents(&dirs, &p), *want, "{paths:?}");
        }
    }

    #[test]
    fn admit_refuses_files_past_the_bounds() {
        let f = |n: &str, c: usize, b: u64| (n.to_string(), c, b);
        let files = [
            f("a", 5, 100),
            f("b", 10, 100),
            f("c", 3, 50),
            f("d", 1, 900),
        ];
        // (chunks_max, bytes_max, admitted, refused)
        let cases: &[(usize, u64, &[&str], &[&str])] = &[
            (100, 10_000, &["a", "b", "c", "d"], &[]),
            (10, 10_000, &["a", "c", "d"], &["b"]), // b passes the chunk bound; smaller ones fit
            (19, 10_000, &["a", "b", "c", "d"], &[]), // exactly at the bound
            (18, 10_000, &["a", "b", "c"], &["d"]),
            (100, 250, &["a", "b", "c"], &["d"]),
            (100, 249, &["a", "b"], &["c", "d"]),
            (0, 0, &[], &["a", "b", "c", "d"]),
        ];
        for (cm, bm, want_ok, want_no) in cases {
            let (ok, no) = admit(&files, *cm, *bm);
            assert_eq!(ok, *want_ok, "{cm} {bm}");
            let no: Vec<&str> = no.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(no, *want_no, "{cm} {bm}");
        }
        let (_, no) = admit(&[f("x", 2, 1)], 1, 10);
        assert!(no[0].1.contains("1 chunks"), "{no:?}");
        let (_, no) = admit(&[f("x", 1, 11)], 1, 10);
        assert!(no[0].1.contains("10 bytes"), "{no:?}");
    }
}

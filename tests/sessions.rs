//! The sessions surface over real processes: a `sim-provider` and a node, session turns run as
//! tasks, then `GET /api/sessions` (paged to and past its bound), `GET /api/sessions/{id}`,
//! `DELETE /api/sessions/{id}` (404 `session_not_found` for an unknown one), the
//! `openclaw_sessions_live` gauge, the `openclaw-node session list|show|clear` commands, and
//! `openclaw-node tokens --breakdown` over the node's audit log.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// `GET /api/sessions`' bound on `limit` (`sessions::SESSION_PAGE_MAX`).
const PAGE_MAX: usize = 100;

fn cli_json(args: &[&str]) -> Value {
    let (code, out, err) = run_cli(args);
    assert_eq!(code, 0, "{args:?} failed: {err}\n{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
}

/// Every page of the listing at `limit` per page → (ids in order, pages).
async fn all_pages(node: &NodeApi, limit: usize) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &after {
            Some(a) => format!("/api/sessions?limit={limit}&after={a}"),
            None => format!("/api/sessions?limit={limit}"),
        };
        let (st, v) = node.get_json(&path).await;
        assert_eq!(st.as_u16(), 200, "{path}: {v}");
        let page = v["sessions"].as_array().unwrap();
        assert!(page.len() <= limit, "{path}: {} sessions", page.len());
        ids.extend(page.iter().map(|s| s["id"].as_str().unwrap().to_string()));
        pages += 1;
        match v["next_cursor"].as_str() {
            Some(c) => after = Some(c.to_string()),
            None => return (ids, pages),
        }
        assert!(pages < 1000, "paging does not end");
    }
}

async fn delete(node: &NodeApi, path: &str) -> (u16, Value) {
    let r = node
        .http
        .delete(format!("{}{path}", node.url))
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_listed_shown_and_cleared_over_http_and_the_cli() {
    let sim = Sim::start(&[]).await;
    let node = Node::start(&config(&sim, 4, json!({}))).await;
    let url = node.url.clone();

    // Three turns of s-alice, one after the other (each sees the previous answer).
    let mut alice = Vec::new();
    for i in 0..3 {
        let id = node
            .submit_ok(json!({"input": format!("alice turn {i}"), "session_id": "s-alice"}))
            .await;
        let v = node.wait_final(&id, TASK_DEADLINE).await;
        assert_eq!(v["status"], "succeeded", "{v}");
        alice.push(id);
    }
    // More one-turn sessions than one page holds: 1 + PAGE_MAX + 1 sessions in all.
    let mut ids = Vec::new();
    for i in 0..=PAGE_MAX {
        ids.push(
            node.submit_ok(
                json!({"input": format!("hello {i}"), "session_id": format!("s-{i:04}")}),
            )
            .await,
        );
    }
    for id in &ids {
        let v = node.wait_final(id, TASK_DEADLINE).await;
        assert_eq!(v["status"], "succeeded", "{v}");
    }
    let total = PAGE_MAX + 2;
    let mut want: BTreeSet<String> = (0..=PAGE_MAX).map(|i| format!("s-{i:04}")).collect();
    want.insert("s-alice".into());

    // Show.
    let (st, v) = node.get_json("/api/sessions/s-alice").await;
    assert_eq!(st.as_u16(), 200, "{v}");
    assert_eq!(v["id"], "s-alice");
    assert_eq!(v["agent"], "main");
    assert_eq!(v["turns"], 3, "{v}");
    assert_eq!(v["last_task"], alice[2].as_str(), "{v}");
    let msgs = v["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 6, "user + assistant per turn: {v}");
    assert_eq!(msgs[0]["role"], "user");
    assert!(
        msgs[0]["content"]
            .as_str()
            .unwrap()
            .contains("alice turn 0"),
        "{v}"
    );
    assert_eq!(msgs[5]["role"], "assistant");
    assert!(v["tokens"]["messages"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["tokens"]["summary"], 0, "{v}");
    assert!(v["summary"].is_null(), "{v}");
    assert!(v["updated_at"].as_str().unwrap().ends_with('Z'), "{v}");

    // List: every session once, in id order, at several page sizes up to the bound.
    for (limit, pages) in [(1, total), (7, total.div_ceil(7)), (PAGE_MAX, 2)] {
        let (got, got_pages) = all_pages(&node, limit).await;
        assert_eq!(got.len(), total, "limit {limit}: no session twice");
        assert_eq!(
            got.iter().cloned().collect::<BTreeSet<_>>(),
            want,
            "limit {limit}"
        );
        assert!(got.windows(2).all(|w| w[0] < w[1]), "id order");
        assert_eq!(got_pages, pages, "limit {limit}");
    }
    let (_, v) = node.get_json("/api/sessions").await;
    assert_eq!(v["sessions"].as_array().unwrap().len(), 20, "default page");
    let (_, v) = node.get_json("/api/sessions?limit=2&after=s-0099").await;
    let page: Vec<&str> = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(page, ["s-0100", "s-alice"], "{v}");
    assert!(v["next_cursor"].is_null(), "{v}");
    // The listing's counts.
    let (_, v) = node.get_json("/api/sessions?limit=1&after=s-0100").await;
    let alice_entry = &v["sessions"][0];
    assert_eq!(alice_entry["messages"], 6, "{v}");
    assert_eq!(alice_entry["turns"], 3, "{v}");
    assert_eq!(alice_entry["summarised"], false, "{v}");
    // Past the bound, and nonsense.
    for (q, status) in [
        ("limit=101", 422),
        ("limit=0", 422),
        ("limit=-1", 400),
        ("limit=x", 400),
        ("bogus=1", 400),
    ] {
        assert_error(
            q,
            node.get_json(&format!("/api/sessions?{q}")).await,
            status,
            "invalid_query",
        );
    }

    // The gauge counts every session (read at the scrape).
    let live = metric_sum(&node.metrics().await, "openclaw_sessions_live");
    assert_eq!(live as usize, total);

    // Clear over HTTP: 200, then 404; the session is gone.
    let (st, v) = delete(&node, "/api/sessions/s-0000").await;
    assert_eq!((st, &v["cleared"]), (200, &json!(true)), "{v}");
    assert_error(
        "cleared session",
        node.get_json("/api/sessions/s-0000").await,
        404,
        "session_not_found",
    );
    let (st, v) = delete(&node, "/api/sessions/s-0000").await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (404, Some("session_not_found"))
    );
    assert_error(
        "unknown session",
        node.get_json("/api/sessions/nobody").await,
        404,
        "session_not_found",
    );

    // The CLI (with examples in its help).
    let (code, help, _) = run_cli(&["session", "--help"]);
    assert_eq!(code, 0);
    assert!(
        help.contains("openclaw-node session show s-alice"),
        "{help}"
    );
    let v = cli_json(&["session", "list", "--node", &url, "--all", "--json"]);
    assert_eq!(v["sessions"].as_array().unwrap().len(), total - 1, "{v}");
    let v = cli_json(&["session", "list", "--node", &url, "--limit", "3", "--json"]);
    assert_eq!(v["sessions"].as_array().unwrap().len(), 3);
    assert_eq!(v["next_cursor"], "s-0003", "{v}");
    let (code, out, err) = run_cli(&["session", "list", "--node", &url, "--limit", "2"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("s-0001") && out.contains("--after s-0002"),
        "{out}"
    );
    let (code, out, err) = run_cli(&["session", "show", "s-alice", "--node", &url]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("3 turns"), "{out}");
    assert!(out.contains("[user] alice turn 2"), "{out}");
    let v = cli_json(&["session", "show", "s-alice", "--node", &url, "--json"]);
    assert_eq!(v["turns"], 3);
    let (code, out, err) = run_cli(&["session", "clear", "s-alice", "--node", &url]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("session s-alice cleared"), "{out}");
    let (code, _, err) = run_cli(&["session", "clear", "s-alice", "--node", &url]);
    assert_eq!(code, 1);
    assert!(err.contains("session_not_found"), "{err}");
    let (code, _, err) = run_cli(&["session", "show", "s-alice", "--node", &url]);
    assert_eq!(code, 1);
    assert!(
        err.contains("404") && err.contains("session_not_found"),
        "{err}"
    );
    let live = metric_sum(&node.metrics().await, "openclaw_sessions_live");
    assert_eq!(live as usize, total - 2);

    // A turn after the clear starts the conversation anew.
    let id = node
        .submit_ok(json!({"input": "alice again", "session_id": "s-alice"}))
        .await;
    node.wait_final(&id, TASK_DEADLINE).await;
    let (_, v) = node.get_json("/api/sessions/s-alice").await;
    assert_eq!(v["turns"], 1, "{v}");
    assert_eq!(v["messages"].as_array().unwrap().len(), 2, "{v}");

    // tokens --breakdown over the node's audit log: every task's line carries its components;
    // they add up to the billed tokens; later turns of s-alice carried history.
    let data = node.data_dir.display().to_string();
    let tasks = (alice.len() + ids.len() + 1) as u64;
    let end = Instant::now() + TASK_DEADLINE;
    let b = loop {
        let b = cli_json(&[
            "tokens",
            "--breakdown",
            "--days",
            "1",
            "--data-dir",
            &data,
            "--json",
        ]);
        if b["calls_with_components"].as_u64().unwrap() >= tasks {
            break b;
        }
        assert!(
            Instant::now() < end,
            "the audit log never held every task: {b}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let comps = b["components"].as_array().unwrap();
    let get = |name: &str| {
        comps
            .iter()
            .find(|c| c["component"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {b}"))["tokens"]
            .as_u64()
            .unwrap()
    };
    let sum: u64 = comps.iter().map(|c| c["tokens"].as_u64().unwrap()).sum();
    let total_tokens = b["total"].as_u64().unwrap();
    // Rounding each component may move the sum by at most one token per component.
    assert!(sum.abs_diff(total_tokens) <= comps.len() as u64, "{b}");
    assert!(get("history") > 0, "{b}");
    assert!(get("input") > 0, "{b}");
    assert!(get("output") > 0, "{b}");
    assert_eq!(get("unattributed"), 0, "only task calls: {b}");
    let (code, out, err) = run_cli(&["tokens", "--breakdown", "--data-dir", &data]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("typical (§18.1)") && out.contains("history"),
        "{out}"
    );
}

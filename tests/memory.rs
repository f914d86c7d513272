//! Agent memory through the API on a real node (issue 11 item 3; the cluster case is in
//! tests/cluster.rs): `PUT/GET/DELETE /api/agents/{agent}/memory/{path}` and the listing, the
//! next task's prompt carrying what was written (and no longer after a delete), the bounds
//! driven past (413 for a file past `MEMORY_FILE_MAX_BYTES` and for the agent's files past
//! `MEMORY_AGENT_FILES_MAX`), 422 for a path that is not memory, 404 for an unknown agent, and
//! `openclaw-node memory push|list`.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};

const FILE_MAX: usize = 256 * 1024;
const FILES_MAX: usize = 1000;

async fn put(node: &NodeApi, agent: &str, path: &str, body: String) -> (u16, Value) {
    let r = node
        .http
        .put(format!("{}/api/agents/{agent}/memory/{path}", node.url))
        .body(body)
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

async fn memory_tokens(node: &NodeApi, input: &str) -> u64 {
    let id = node.submit_ok(json!({ "input": input })).await;
    let v = node.wait_final(&id, TASK_DEADLINE).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    v["prompt"]["memory"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_written_through_the_api_reaches_the_prompt_within_its_bounds() {
    let sim = Sim::start(&[]).await;
    let node = Node::start(&config(&sim, 2, json!({}))).await;
    assert_eq!(memory_tokens(&node, "hello").await, 0, "no memory yet");

    let fact = "The deploy window is Tuesday 14:00 UTC; the on-call is Bob. ".repeat(5);
    let (st, v) = put(&node, "main", "MEMORY.md", fact.clone()).await;
    assert_eq!((st, &v["bytes"]), (200, &json!(fact.len())), "{v}");
    let (st, v) = put(&node, "main", "memory/2026-12-01.md", "yesterday".into()).await;
    assert_eq!(st, 200, "{v}");
    assert!(
        memory_tokens(&node, "when is the deploy?").await > 20,
        "the next prompt carries the memory"
    );
    let r = node
        .http
        .get(format!("{}/api/agents/main/memory/MEMORY.md", node.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.unwrap(), fact);
    let (st, list) = node.get_json("/api/agents/main/memory").await;
    assert_eq!(st.as_u16(), 200);
    let paths: Vec<&str> = list["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["MEMORY.md", "memory/2026-12-01.md"], "{list}");
    assert!(node.data_dir.join("workspace/MEMORY.md").is_file());

    // Refusals: nothing written.
    for (path, code) in [
        ("SOUL.md", "invalid_memory_path"),
        ("memory/notes.txt", "invalid_memory_path"),
        ("memory/..%2F..%2Fx.md", "invalid_memory_path"),
    ] {
        let got = put(&node, "main", path, "x".into()).await;
        assert_eq!(
            (got.0, got.1["error"]["code"].as_str()),
            (422, Some(code)),
            "{path}: {}",
            got.1
        );
    }
    let got = put(&node, "main", "memory/big.md", "x".repeat(FILE_MAX + 1)).await;
    assert_eq!(
        (got.0, got.1["error"]["code"].as_str()),
        (413, Some("memory_too_large")),
        "{}",
        got.1
    );
    let got = put(&node, "ghost", "MEMORY.md", "x".into()).await;
    assert_eq!(
        (got.0, got.1["error"]["code"].as_str()),
        (404, Some("unknown_agent"))
    );
    // The agent's file bound, driven past: 2 files are there, fill to the bound, one more is 413.
    for n in 0..FILES_MAX - 2 {
        let (st, v) = put(&node, "main", &format!("memory/f{n:04}.md"), "x".into()).await;
        assert_eq!(st, 200, "file {n}: {v}");
    }
    let got = put(&node, "main", "memory/one-more.md", "x".into()).await;
    assert_eq!(
        (got.0, got.1["error"]["code"].as_str()),
        (413, Some("memory_too_large")),
        "{}",
        got.1
    );
    assert!(!node.data_dir.join("workspace/memory/one-more.md").exists());

    // Delete: gone from the prompt.
    let del = |path: &str| {
        let url = format!("{}/api/agents/main/memory/{path}", node.url);
        let http = node.http.clone();
        async move { http.delete(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(del("MEMORY.md").await, 200);
    assert_eq!(del("MEMORY.md").await, 404);
    let (_, list) = node.get_json("/api/agents/main/memory").await;
    assert_eq!(list["files"].as_array().unwrap().len(), FILES_MAX - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_push_uploads_a_workspace_folder() {
    let sim = Sim::start(&[]).await;
    let node = Node::start(&config(&sim, 2, json!({}))).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("memory")).unwrap();
    std::fs::create_dir_all(d.join("skills/deploy")).unwrap();
    std::fs::write(d.join("MEMORY.md"), "team memory").unwrap();
    std::fs::write(d.join("memory/a.md"), "alpha").unwrap();
    std::fs::write(d.join("memory/notes.txt"), "not memory").unwrap();
    std::fs::write(d.join("skills/deploy/SKILL.md"), "deploy tool").unwrap();
    std::fs::write(d.join("SOUL.md"), "not pushed").unwrap();
    let (code, out, err) = run_cli(&[
        "memory",
        "push",
        d.to_str().unwrap(),
        "--agent",
        "main",
        "--node",
        &node.url,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("pushed 3 memory files"), "{out}");
    let (code, out, err) = run_cli(&["memory", "list", "--node", &node.url, "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let paths: Vec<&str> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["MEMORY.md", "memory/a.md", "skills/deploy/SKILL.md"]
    );
    // A refusal names the file and exits 1.
    std::fs::write(d.join("memory/big.md"), "x".repeat(FILE_MAX + 1)).unwrap();
    let (code, _, err) = run_cli(&["memory", "push", d.to_str().unwrap(), "--node", &node.url]);
    assert_eq!(code, 1);
    assert!(err.contains("memory/big.md"), "{err}");
}

//! `GET /api/tasks`: listing with filters and cursor paging over real HTTP, on one node
//! (`LocalLedger`) and on a 3-node cluster (`RaftLedger`, finished records read from each
//! replica's disk). The page size bound is driven past.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{assert_error, config, NodeApi, Sim, BIN, TASK_DEADLINE};
use openclaw_harness::{Cluster, ClusterSpec};
use serde_json::{json, Value};

/// Every page of `query` (a `&`-joined query string without `cursor`), `limit` per page.
async fn all_pages(node: &NodeApi, query: &str, limit: usize) -> (Vec<Value>, usize) {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = format!("/api/tasks?limit={limit}&{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (st, v) = node.get_json(&path).await;
        assert_eq!(st.as_u16(), 200, "{path}: {v}");
        pages += 1;
        out.extend(v["tasks"].as_array().unwrap().iter().cloned());
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return (out, pages),
        }
        assert!(pages < 100, "paging does not end");
    }
}

fn ids(tasks: &[Value]) -> BTreeSet<String> {
    tasks
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

/// Seven tasks, three of them in session `s1`; all finished.
async fn seed(node: &NodeApi) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut all = BTreeSet::new();
    let mut s1 = BTreeSet::new();
    for i in 0..7 {
        let body = if i % 2 == 0 && i < 6 {
            json!({"input": format!("list task {i}"), "session_id": "s1"})
        } else {
            json!({"input": format!("list task {i}")})
        };
        let id = node.submit_ok(body).await;
        if i % 2 == 0 && i < 6 {
            s1.insert(id.clone());
        }
        all.insert(id);
    }
    for id in &all {
        let v = node.wait_final(id, TASK_DEADLINE).await;
        assert_eq!(v["status"], "succeeded", "{v}");
    }
    (all, s1)
}

async fn check_listing(node: &NodeApi, all: &BTreeSet<String>, s1: &BTreeSet<String>) {
    let (tasks, pages) = all_pages(node, "", 3).await;
    assert_eq!(ids(&tasks), *all, "every task once, over pages");
    assert_eq!(tasks.len(), all.len(), "no task twice");
    assert!(pages >= 3, "7 tasks at 3 per page: {pages} pages");
    let (tasks, _) = all_pages(node, "session_id=s1", 2).await;
    assert_eq!(ids(&tasks), *s1);
    let (tasks, _) = all_pages(node, "status=succeeded&agent=main&source=api_call", 50).await;
    assert_eq!(ids(&tasks), *all);
    let (tasks, _) = all_pages(node, "status=failed", 50).await;
    assert!(tasks.is_empty());
    let (tasks, _) = all_pages(node, "since=99999999999999", 50).await;
    assert!(tasks.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_listed_with_filters_and_cursor_paging_on_one_node() {
    let sim = Sim::start(&[]).await;
    let node = common::Node::start(&config(&sim, 2, json!({}))).await;
    let (all, s1) = seed(&node).await;
    check_listing(&node, &all, &s1).await;
    // Past the page bound: 422, and a bad status is refused.
    assert_error(
        "limit past the bound",
        node.get_json("/api/tasks?limit=501").await,
        422,
        "invalid_query",
    );
    assert_error(
        "unknown status",
        node.get_json("/api/tasks?status=done").await,
        400,
        "invalid_query",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cluster_node_lists_the_same_tasks() {
    let mut spec = ClusterSpec::new(BIN, 3);
    spec.workers = 2;
    spec.sim_args = Vec::new();
    spec.extra_config = json!({"cluster": {"heartbeat_ms": 300, "node_lease_ms": 2000}});
    spec.ready_path = Some("/ready".into());
    let c = Cluster::start(spec).await.unwrap();
    let nodes: Vec<NodeApi> = c.nodes().iter().map(NodeApi::of).collect();
    let deadline = Instant::now() + Duration::from_secs(40);
    while c.wait_for_leader(Duration::from_secs(1)).await.is_err() {
        assert!(Instant::now() < deadline, "no leader");
    }
    let (all, s1) = seed(&nodes[0]).await;
    for node in &nodes {
        // A replica may be a moment behind: poll until it has applied every finish.
        let deadline = Instant::now() + TASK_DEADLINE;
        loop {
            let (tasks, _) = all_pages(node, "status=succeeded", 50).await;
            if ids(&tasks) == all {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a replica never listed every task"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        check_listing(node, &all, &s1).await;
    }
}

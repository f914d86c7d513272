//! The Feishu channel over real processes: a simulator (whose Feishu Open API records every
//! message) and a node with `channels.feishu` pointing at it. Events are encrypted and signed
//! exactly like Feishu does (`openclaw_server::channels::feishu::crypto`) and POSTed to
//! `/channels/feishu/events`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use openclaw_server::channels::feishu::crypto;
use openclaw_server::sim::feishu::BOT_OPEN_ID;
use reqwest::StatusCode;
use serde_json::{json, Value};

const KEY: &str = "feishu-encrypt-key-for-tests";
const TOKEN: &str = "feishu-verification-token";
const APP_SECRET: &str = "feishu-app-secret";
const ENV: [(&str, &str); 3] = [
    ("FEISHU_APP_SECRET", APP_SECRET),
    ("FEISHU_VERIFICATION_TOKEN", TOKEN),
    ("FS_ENCRYPT_KEY", KEY),
];

fn feishu_config(sim: &SimApi, extra_server: Value) -> Value {
    config(
        sim,
        2,
        json!({
            "channels": {"feishu": {"app_id": "cli_test", "encrypt_key_env": "FS_ENCRYPT_KEY",
                                    "base_url": sim.url}},
            "server": extra_server,
        }),
    )
}

async fn start() -> (Sim, Node) {
    let sim = Sim::start(&[]).await;
    let node = Node::start_with_env(&feishu_config(&sim, json!({})), &ENV).await;
    (sim, node)
}

/// A schema 2.0 `im.message.receive_v1` event.
fn message_event(
    event_id: &str,
    message_id: &str,
    chat_id: &str,
    chat_type: &str,
    text: &str,
    mentions: Value,
) -> Value {
    json!({
        "schema": "2.0",
        "header": {"event_id": event_id, "event_type": "im.message.receive_v1",
                   "create_time": "1700000000000", "token": TOKEN, "app_id": "cli_test",
                   "tenant_key": "tk"},
        "event": {
            "sender": {"sender_id": {"open_id": "ou_user", "union_id": "on_user", "user_id": "u1"},
                       "sender_type": "user", "tenant_key": "tk"},
            "message": {"message_id": message_id, "root_id": "", "parent_id": "",
                        "create_time": "1700000000000", "chat_id": chat_id,
                        "chat_type": chat_type, "message_type": "text",
                        "content": json!({"text": text}).to_string(), "mentions": mentions}
        }
    })
}

fn dm(event_id: &str, message_id: &str, text: &str) -> Value {
    message_event(event_id, message_id, "oc_dm_chat", "p2p", text, json!([]))
}

/// The body and headers Feishu sends for `event`: encrypted with a random IV, signed.
fn sealed(event: &Value) -> (String, String, String, String) {
    let enc = crypto::encrypt(KEY, rand::random::<[u8; 16]>(), &event.to_string());
    let body = json!({ "encrypt": enc }).to_string();
    let ts = "1700000000".to_string();
    let nonce = format!("nonce-{}", rand::random::<u32>());
    let sig = crypto::sign(&ts, &nonce, KEY, body.as_bytes());
    (body, ts, nonce, sig)
}

async fn post_raw(node_url: &str, body: String, headers: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut req = client()
        .post(format!("{node_url}/channels/feishu/events"))
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("POST /channels/feishu/events");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// POST `event` as Feishu does (encrypted and signed).
async fn deliver(node_url: &str, event: &Value) -> (StatusCode, Value) {
    let (body, ts, nonce, sig) = sealed(event);
    post_raw(
        node_url,
        body,
        &[
            ("X-Lark-Request-Timestamp", &ts),
            ("X-Lark-Request-Nonce", &nonce),
            ("X-Lark-Signature", &sig),
        ],
    )
    .await
}

async fn feishu_log(sim: &SimApi) -> Value {
    client()
        .get(format!("{}/sim/feishu/messages", sim.url))
        .send()
        .await
        .expect("GET /sim/feishu/messages")
        .json()
        .await
        .expect("feishu log JSON")
}

/// The replies to `message_id` in the simulator's Feishu log, once there are at least `n`.
async fn wait_replies(sim: &SimApi, message_id: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + TASK_DEADLINE;
    loop {
        let log = feishu_log(sim).await;
        let replies: Vec<Value> = log["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m["kind"] == "reply" && m["reply_to"] == message_id)
            .collect();
        if replies.len() >= n {
            return replies;
        }
        assert!(
            Instant::now() < deadline,
            "no {n} replies to {message_id} in time: {log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn task_count(node: &Node) -> usize {
    let (s, v) = node.get_json("/api/tasks?limit=500").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["tasks"].as_array().map(Vec::len).unwrap_or(0)
}

#[tokio::test]
async fn url_verification_is_answered_plain_and_encrypted() {
    let (_sim, node) = start().await;
    let challenge =
        json!({"challenge": "ajls384kdjx98XX", "token": TOKEN, "type": "url_verification"});
    // Plain (Feishu's URL check comes unsigned).
    let (s, v) = post_raw(&node.url, challenge.to_string(), &[]).await;
    assert_eq!(
        (s, &v),
        (StatusCode::OK, &json!({"challenge": "ajls384kdjx98XX"}))
    );
    // Encrypted and signed.
    let (s, v) = deliver(&node.url, &challenge).await;
    assert_eq!(
        (s, &v),
        (StatusCode::OK, &json!({"challenge": "ajls384kdjx98XX"}))
    );
    // Another app's token.
    let wrong = json!({"challenge": "x", "token": "not-ours", "type": "url_verification"});
    let (s, v) = post_raw(&node.url, wrong.to_string(), &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["error"]["code"], "unauthorized");
}

#[tokio::test]
async fn an_encrypted_dm_gets_exactly_one_reply_with_the_answer() {
    let (sim, node) = start().await;
    let (s, v) = deliver(&node.url, &dm("ev-dm-1", "om_dm_1", "用一句话介绍你自己")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["duplicate"], false);
    let id = v["task_id"].as_str().expect("task_id").to_string();
    let task = node.wait_final(&id, TASK_DEADLINE).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["source"], "feishu_direct_message");
    assert_eq!(task["session_id"], "oc_dm_chat");
    assert_eq!(task["priority"], "high");
    let answer = task["output"].as_str().expect("output").to_string();
    let replies = wait_replies(&sim, "om_dm_1", 1).await;
    assert_eq!(replies[0]["text"], answer.as_str(), "{replies:?}");
    assert_eq!(replies[0]["msg_type"], "text");
    assert_eq!(replies[0]["uuid"], id.as_str());
    // A second message in the same chat continues the session; still one reply each.
    let (_, v2) = deliver(&node.url, &dm("ev-dm-2", "om_dm_2", "继续")).await;
    let id2 = v2["task_id"].as_str().expect("task_id").to_string();
    node.wait_final(&id2, TASK_DEADLINE).await;
    wait_replies(&sim, "om_dm_2", 1).await;
    let log = feishu_log(&sim).await;
    let to_first = log["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["reply_to"] == "om_dm_1")
        .count();
    assert_eq!(to_first, 1, "{log}");
    // One tenant token served every call.
    assert_eq!(log["token_requests"], 1, "{log}");
}

#[tokio::test]
async fn the_same_event_delivered_three_times_runs_once_and_replies_once() {
    let (sim, node) = start().await;
    let event = dm("ev-dup", "om_dup", "hello");
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (s, v) = deliver(&node.url, &event).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        ids.push((
            v["task_id"].as_str().unwrap().to_string(),
            v["duplicate"] == true,
        ));
    }
    assert!(ids.iter().all(|(id, _)| *id == ids[0].0), "{ids:?}");
    assert_eq!(
        ids.iter().map(|(_, d)| *d).collect::<Vec<_>>(),
        vec![false, true, true]
    );
    node.wait_final(&ids[0].0, TASK_DEADLINE).await;
    wait_replies(&sim, "om_dup", 1).await;
    // Another event after it, so that a second reply to the first would have had time to
    // arrive before this one's (replies are sent in finish order by one actor).
    let (_, v) = deliver(&node.url, &dm("ev-after", "om_after", "again")).await;
    node.wait_final(v["task_id"].as_str().unwrap(), TASK_DEADLINE)
        .await;
    wait_replies(&sim, "om_after", 1).await;
    assert_eq!(wait_replies(&sim, "om_dup", 1).await.len(), 1);
    assert_eq!(task_count(&node).await, 2);
}

#[tokio::test]
async fn group_messages_become_tasks_only_when_they_mention_the_bot() {
    let (sim, node) = start().await;
    let alice = json!({"key": "@_user_2", "id": {"open_id": "ou_alice", "union_id": "", "user_id": ""}, "name": "Alice", "tenant_key": "tk"});
    let bot = json!({"key": "@_user_1", "id": {"open_id": BOT_OPEN_ID, "union_id": "", "user_id": ""}, "name": "openclaw", "tenant_key": "tk"});
    for (i, (text, mentions)) in [
        ("lunch anyone?", json!([])),
        ("@_user_2 lunch?", json!([alice.clone()])),
    ]
    .into_iter()
    .enumerate()
    {
        let ev = message_event(
            &format!("ev-g{i}"),
            &format!("om_g{i}"),
            "oc_group",
            "group",
            text,
            mentions,
        );
        let (s, v) = deliver(&node.url, &ev).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert!(v.get("task_id").is_none(), "{v}");
        assert!(v["ignored"].is_string(), "{v}");
    }
    assert_eq!(task_count(&node).await, 0);
    let ev = message_event(
        "ev-gm",
        "om_gm",
        "oc_group",
        "group",
        "@_user_1 ask @_user_2 about the report",
        json!([bot, alice]),
    );
    let (s, v) = deliver(&node.url, &ev).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let task = node
        .wait_final(v["task_id"].as_str().expect("task_id"), TASK_DEADLINE)
        .await;
    assert_eq!(task["source"], "feishu_group_mention");
    assert_eq!(task["session_id"], "oc_group");
    // (The text the agent sees, mention removed, is `event::task_text`'s table test.)
    wait_replies(&sim, "om_gm", 1).await;
    assert_eq!(task_count(&node).await, 1);
    let log = feishu_log(&sim).await;
    assert_eq!(log["count"], 1, "only the mention was answered: {log}");
}

#[tokio::test]
async fn bad_signature_wrong_token_and_undecryptable_bodies_are_refused() {
    let (sim, node) = start().await;
    let event = dm("ev-bad", "om_bad", "hello");
    let (body, ts, nonce, sig) = sealed(&event);
    // A signature that does not match.
    let forged = crypto::sign(&ts, &nonce, "another key", body.as_bytes());
    let (s, v) = post_raw(
        &node.url,
        body.clone(),
        &[
            ("X-Lark-Request-Timestamp", &ts),
            ("X-Lark-Request-Nonce", &nonce),
            ("X-Lark-Signature", &forged),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["error"]["code"], "invalid_signature");
    // The right signature over a changed timestamp.
    let (s, v) = post_raw(
        &node.url,
        body.clone(),
        &[
            ("X-Lark-Request-Timestamp", "1700000001"),
            ("X-Lark-Request-Nonce", &nonce),
            ("X-Lark-Signature", &sig),
        ],
    )
    .await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (StatusCode::UNAUTHORIZED, &json!("invalid_signature"))
    );
    // No signature at all.
    let (s, v) = post_raw(&node.url, body, &[]).await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (StatusCode::UNAUTHORIZED, &json!("invalid_signature"))
    );
    // Signed and encrypted, but another app's verification token.
    let mut other = event.clone();
    other["header"]["token"] = json!("not-ours");
    let (s, v) = deliver(&node.url, &other).await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (StatusCode::UNAUTHORIZED, &json!("unauthorized"))
    );
    // Encrypted with another key (signed correctly): undecryptable.
    let enc = crypto::encrypt("another key", [3; 16], &event.to_string());
    let body = json!({ "encrypt": enc }).to_string();
    let sig = crypto::sign(&ts, &nonce, KEY, body.as_bytes());
    let (s, v) = post_raw(
        &node.url,
        body,
        &[
            ("X-Lark-Request-Timestamp", &ts),
            ("X-Lark-Request-Nonce", &nonce),
            ("X-Lark-Signature", &sig),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        ["invalid_event"].contains(&v["error"]["code"].as_str().unwrap_or("")),
        "{v}"
    );
    // Nothing was created, nothing was sent; secrets are not in the log.
    assert_eq!(task_count(&node).await, 0);
    assert_eq!(feishu_log(&sim).await["count"], 0);
    let log = node.stderr();
    for secret in [KEY, TOKEN, APP_SECRET] {
        assert!(!log.contains(secret), "a secret reached the node's log");
    }
}

#[tokio::test]
async fn a_failing_reply_is_retried_then_parked_in_failed_deliveries() {
    let sim = Sim::start(&[]).await;
    let cfg = feishu_config(
        &sim,
        json!({"callback_initial_delay_ms": 50, "callback_max_attempts": 3}),
    );
    let node = Node::start_with_env(&cfg, &ENV).await;
    let faults = |n: u32| {
        let url = format!("{}/sim/feishu/faults", sim.url);
        async move {
            let r = client()
                .put(url)
                .json(&json!({ "fail_next": n }))
                .send()
                .await
                .expect("PUT /sim/feishu/faults");
            assert!(r.status().is_success());
        }
    };
    // Two failures, then the third attempt gets through.
    faults(2).await;
    let (_, v) = deliver(&node.url, &dm("ev-r1", "om_r1", "retry me")).await;
    node.wait_final(v["task_id"].as_str().unwrap(), TASK_DEADLINE)
        .await;
    assert_eq!(wait_replies(&sim, "om_r1", 1).await.len(), 1);
    // Every attempt fails: parked after the last.
    faults(1000).await;
    let (_, v) = deliver(&node.url, &dm("ev-r2", "om_r2", "park me")).await;
    let id = v["task_id"].as_str().unwrap().to_string();
    node.wait_final(&id, TASK_DEADLINE).await;
    let deadline = Instant::now() + TASK_DEADLINE;
    loop {
        let (_, q) = node.get_json("/api/queue").await;
        let parked: Vec<&Value> = q["failed_deliveries"]
            .as_array()
            .map(|a| a.iter().filter(|d| d["task_id"] == id.as_str()).collect())
            .unwrap_or_default();
        if let Some(d) = parked.first() {
            assert_eq!(d["callback_url"], "feishu:reply:om_r2");
            assert_eq!(d["attempts"], 3);
            break;
        }
        assert!(Instant::now() < deadline, "not parked: {q}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A 3-node cluster (nodes on 127.0.0.2-4 through the process harness) whose Feishu Open API is
/// a simulator of its own: the same event delivered to every node, one after the other and then
/// all at once, runs once and is answered once (the idempotency key goes through Raft). Each
/// answer is the finished task's even when the node that ran it is a follower whose replica
/// applies the outcome after the leader answered (once in four runs here, before the delivery
/// waited for it, a reply went out empty — that is, not at all).
#[tokio::test]
async fn in_a_cluster_the_same_event_to_every_node_runs_once() {
    use openclaw_harness::{Cluster, ClusterSpec};
    let feishu = Sim::start(&[]).await;
    let mut spec = ClusterSpec::new(BIN, 3);
    spec.workers = 2;
    spec.extra_config = json!({
        "cluster": {"heartbeat_ms": 300, "node_lease_ms": 2000},
        "channels": {"feishu": {"app_id": "cli_test", "encrypt_key_env": "FS_ENCRYPT_KEY",
                                "base_url": feishu.url}},
    });
    spec.env = ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    spec.ready_path = Some("/ready".into());
    spec.secret = Some("feishu-cluster-secret".into());
    let c = Cluster::start(spec)
        .await
        .unwrap_or_else(|e| panic!("the cluster did not start: {e}"));
    let nodes: Vec<NodeApi> = c.nodes().iter().map(NodeApi::of).collect();

    // One after the other, to each node (the first waits out the election).
    let event = dm("ev-cluster-1", "om_c1", "hello cluster");
    let deadline = Instant::now() + Duration::from_secs(40);
    let first = loop {
        let (s, v) = deliver(&nodes[0].url, &event).await;
        if s == StatusCode::OK {
            break v;
        }
        assert!(Instant::now() < deadline, "node 0 never admitted: {s} {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let id = first["task_id"].as_str().expect("task_id").to_string();
    for n in &nodes[1..] {
        let (s, v) = deliver(&n.url, &event).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(
            (v["task_id"].as_str(), &v["duplicate"]),
            (Some(id.as_str()), &json!(true))
        );
    }
    nodes[0].wait_final(&id, TASK_DEADLINE).await;
    wait_replies(&feishu, "om_c1", 1).await;

    // All at once.
    let event = dm("ev-cluster-2", "om_c2", "hello again");
    let answers = futures::future::join_all(nodes.iter().map(|n| deliver(&n.url, &event))).await;
    let mut fresh = 0;
    let mut ids = std::collections::BTreeSet::new();
    for (s, v) in &answers {
        assert_eq!(*s, StatusCode::OK, "{v}");
        ids.insert(v["task_id"].as_str().expect("task_id").to_string());
        fresh += usize::from(v["duplicate"] == false);
    }
    assert_eq!((ids.len(), fresh), (1, 1), "{answers:?}");
    let id2 = ids.into_iter().next().unwrap();
    nodes[1].wait_final(&id2, TASK_DEADLINE).await;
    wait_replies(&feishu, "om_c2", 1).await;

    // A third event after both, answered: the first two still have exactly one reply each.
    let (_, v) = deliver(&nodes[2].url, &dm("ev-cluster-3", "om_c3", "last")).await;
    nodes[2]
        .wait_final(v["task_id"].as_str().expect("task_id"), TASK_DEADLINE)
        .await;
    wait_replies(&feishu, "om_c3", 1).await;
    for m in ["om_c1", "om_c2"] {
        assert_eq!(wait_replies(&feishu, m, 1).await.len(), 1, "{m}");
    }
    // Every replica shows three tasks (polling: a replica may apply a moment later).
    for n in &nodes {
        let deadline = Instant::now() + TASK_DEADLINE;
        loop {
            let (_, list) = n
                .get_json("/api/tasks?source=feishu_direct_message&limit=500")
                .await;
            let count = list["tasks"].as_array().map(Vec::len).unwrap_or(0);
            assert!(count <= 3, "{list}");
            if count == 3 {
                break;
            }
            assert!(Instant::now() < deadline, "{list}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

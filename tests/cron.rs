//! Cron jobs on real nodes (issue 12): a job every 2 s fires on one node (tasks carry the
//! firing, `GET /api/cron`, `cron run`, `openclaw-node cron list|run`), and on a 3-node cluster
//! while the leader and then a follower are SIGKILLed and restarted, every scheduled time fires
//! exactly once.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{assert_error, config, run_cli, Node, NodeApi, Sim, SimApi, BIN};
use openclaw_harness::{Cluster, ClusterSpec};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A job firing every 2 s (seconds field).
fn every_2s() -> Value {
    json!({"cron": {"jobs": [
        {"name": "tick", "schedule": "*/2 * * * * *", "input": "cron ping"}
    ]}})
}

/// Every task of source `cron_job` the node can list (all pages).
async fn cron_tasks(node: &NodeApi) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let path = format!("/api/tasks?source=cron_job&limit=500{cursor}");
        let (st, v) = node.get_json(&path).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        out.extend(v["tasks"].as_array().cloned().unwrap_or_default());
        match v["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return out,
        }
    }
}

/// Poll `f` until it returns `Some`, or panic with `what` after `deadline`.
async fn poll<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    deadline: Duration,
    mut f: impl FnMut() -> F,
) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_every_2s_fires_on_a_node_with_its_firing_on_the_task() {
    let sim = Sim::start(&[]).await;
    let node = Node::start(&config(&sim, 2, every_2s())).await;

    let tasks = poll("3 cron tasks", Duration::from_secs(30), || async {
        let t = cron_tasks(&node).await;
        (t.len() >= 3).then_some(t)
    })
    .await;
    let mut seen = BTreeMap::new();
    for t in &tasks {
        assert_eq!(t["source"], "cron_job", "{t}");
        assert_eq!(t["priority"], "low", "source_mapping.cron_job: {t}");
        assert_eq!(t["cron"]["job"], "tick", "{t}");
        assert_eq!(t["cron"]["manual"], false, "{t}");
        let at = t["cron"]["scheduled_at"].as_str().unwrap().to_string();
        assert_eq!(
            t["idempotency_key"].as_str(),
            Some(format!("cron:tick:{at}").as_str()),
            "{t}"
        );
        // Scheduled on an even second.
        let secs: u32 = at[17..19].parse().unwrap();
        assert_eq!(secs % 2, 0, "{at}");
        *seen.entry(at).or_insert(0) += 1;
    }
    assert!(
        seen.values().all(|n| *n == 1),
        "one task per firing: {seen:?}"
    );
    let first = tasks[0]["id"].as_str().unwrap().to_string();
    let v = node.wait_final(&first, common::TASK_DEADLINE).await;
    assert_eq!(v["status"], "succeeded", "{v}");

    // GET /api/cron: the job, its next firing and the last one.
    let (st, v) = node.get_json("/api/cron").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let job = &v["jobs"][0];
    assert_eq!(job["name"], "tick", "{v}");
    assert_eq!(job["schedule"], "*/2 * * * * *", "{v}");
    assert_eq!(job["timezone"], "UTC", "{v}");
    assert!(job["next_at"].as_str().is_some(), "{v}");
    let last = &job["last"];
    assert!(last["task_id"].as_str().is_some(), "{v}");
    assert!(last["scheduled_at"].as_str().is_some(), "{v}");
    assert!(last["status"].as_str().is_some(), "{v}");

    // cron run: an immediate firing with its own key.
    let r = node
        .http
        .post(format!("{}/api/cron/tick/run", node.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let run: Value = r.json().await.unwrap();
    let id = run["task_id"].as_str().unwrap().to_string();
    let t = node.wait_final(&id, common::TASK_DEADLINE).await;
    assert_eq!(t["status"], "succeeded", "{t}");
    assert_eq!(t["cron"]["manual"], true, "{t}");
    assert!(
        t["idempotency_key"]
            .as_str()
            .unwrap()
            .starts_with("cron:tick:run:"),
        "{t}"
    );
    let r = node
        .http
        .post(format!("{}/api/cron/nope/run", node.url))
        .send()
        .await
        .unwrap();
    let got = (r.status(), r.json().await.unwrap_or(Value::Null));
    assert_error("unknown job", got, 404, "cron_job_not_found");

    // The CLI over the same API.
    let (code, out, err) = run_cli(&["cron", "list", "--node", &node.url]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("tick") && out.contains("*/2 * * * * *"),
        "{out}"
    );
    let (code, out, err) = run_cli(&["cron", "run", "tick", "--node", &node.url, "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["job"], "tick", "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cost_report_job_posts_to_its_webhook() {
    use std::sync::{Arc, Mutex};
    // A webhook receiver that answers 500 once, then 200: the delivery is retried.
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = {
        let (got, hits) = (got.clone(), hits.clone());
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
                let (got, hits) = (got.clone(), hits.clone());
                async move {
                    if hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    got.lock().unwrap().push(v);
                    StatusCode::OK
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let sim = Sim::start(&[]).await;
    let cfg = config(
        &sim,
        2,
        json!({"cron": {"jobs": [
            {"name": "daily-cost", "schedule": "0 9 * * *", "timezone": "Asia/Shanghai",
             "kind": "cost_report", "deliver_to": {"webhook": "CRON_TEST_HOOK"}}
        ]}}),
    );
    let node = Node::start_with_env(&cfg, &[("CRON_TEST_HOOK", hook.as_str())]).await;
    // Some spend to report.
    let id = node.submit_ok(json!({"input": "spend something"})).await;
    node.wait_final(&id, common::TASK_DEADLINE).await;

    let r = node
        .http
        .post(format!("{}/api/cron/daily-cost/run", node.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "delivered", "{v}");
    let msgs = got.lock().unwrap().clone();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0]["job"], "daily-cost");
    assert_eq!(msgs[0]["kind"], "cost_report");
    assert!(
        msgs[0]["title"].as_str().unwrap().contains("费用日报"),
        "{msgs:?}"
    );
    assert!(
        msgs[0]["text"].as_str().unwrap().contains("fast"),
        "{msgs:?}"
    );
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one retry"
    );
}

/// The chapter's "Cron 每日任务 + 飞书通知": a cost report to a Feishu chat arrives as one
/// message card through the Feishu channel's Open API client (the simulator's), after a retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cost_report_job_sends_a_card_to_its_feishu_chat() {
    let sim = Sim::start(&[]).await;
    let cfg = config(
        &sim,
        2,
        json!({
            "channels": {"feishu": {"app_id": "cli_cron", "base_url": sim.url}},
            "cron": {"jobs": [
                {"name": "daily-cost", "schedule": "0 9 * * *", "timezone": "Asia/Shanghai",
                 "kind": "cost_report", "deliver_to": {"feishu_chat": "oc_team"}}
            ]}
        }),
    );
    let env = [
        ("FEISHU_APP_SECRET", "cron-app-secret"),
        ("FEISHU_VERIFICATION_TOKEN", "cron-verification"),
    ];
    let node = Node::start_with_env(&cfg, &env).await;
    let id = node.submit_ok(json!({"input": "spend something"})).await;
    node.wait_final(&id, common::TASK_DEADLINE).await;

    // The first send answers 500: the delivery is retried.
    let r = node
        .http
        .put(format!("{}/sim/feishu/faults", sim.url))
        .json(&json!({"fail_next": 1}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let r = node
        .http
        .post(format!("{}/api/cron/daily-cost/run", node.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "delivered", "{v}\n{}", node.stderr());

    let log: Value = node
        .http
        .get(format!("{}/sim/feishu/messages", sim.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sends: Vec<&Value> = log["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "send")
        .collect();
    assert_eq!(sends.len(), 1, "one card after one failed try: {log}");
    let m = sends[0];
    assert_eq!(m["receive_id"], "oc_team", "{m}");
    assert_eq!(m["msg_type"], "interactive", "{m}");
    let card: Value = serde_json::from_str(m["content"].as_str().unwrap()).unwrap();
    let title = card["header"]["title"]["content"].as_str().unwrap();
    assert!(title.contains("费用日报"), "{card}");
    let text = card["elements"][0]["content"].as_str().unwrap();
    assert!(
        text.contains("fast"),
        "the report lists the model used: {card}"
    );
    assert!(
        m["uuid"].as_str().is_some_and(|u| u.starts_with("cron-")),
        "{m}"
    );
}

/// Scheduled times (ms) of each job's firings, counted (a repeat shows as a count above 1).
async fn firings_by_job(node: &NodeApi) -> BTreeMap<String, BTreeMap<u64, usize>> {
    let mut out: BTreeMap<String, BTreeMap<u64, usize>> = BTreeMap::new();
    for t in cron_tasks(node).await {
        let at = t["cron"]["scheduled_at"].as_str().unwrap();
        let ms = chrono::DateTime::parse_from_rfc3339(at)
            .unwrap()
            .timestamp_millis() as u64;
        *out.entry(t["cron"]["job"].as_str().unwrap().to_string())
            .or_default()
            .entry(ms)
            .or_default() += 1;
    }
    out
}

/// `catch_up` after a total outage (a lone node is the whole cluster): a job every 10 s, the
/// node killed right after a firing and started again 13 s later, with
/// `cron.missed_after_seconds: 2` — so the firing in between was missed, not late. The job with
/// `catch_up: latest` runs it once when the node is back; the one with `none` passes it over;
/// both go on with the next firing, and nothing fires twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_total_outage_catch_up_latest_runs_the_missed_firing_once() {
    let sim = Sim::start(&[]).await;
    let cfg = config(
        &sim,
        2,
        json!({"cron": {"missed_after_seconds": 2, "jobs": [
            {"name": "latest", "schedule": "*/10 * * * * *", "input": "cron ping", "catch_up": "latest"},
            {"name": "none", "schedule": "*/10 * * * * *", "input": "cron ping", "catch_up": "none"}
        ]}}),
    );
    let mut node = Node::start(&cfg).await;
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    // Both jobs fired the same scheduled time s0.
    let s0 = poll("a firing of both jobs", Duration::from_secs(40), || async {
        let f = firings_by_job(&node).await;
        let latest = f.get("latest")?.keys().max().copied()?;
        (f.get("none")?.keys().max().copied()? == latest).then_some(latest)
    })
    .await;
    node.kill();
    assert!(now() < s0 + 8_000, "the node must be down before s0 + 10 s");
    // Down until s0 + 13 s: the firing at s0 + 10 s is then 3 s old, older than
    // missed_after_seconds, as soon as the node looks.
    tokio::time::sleep(Duration::from_millis((s0 + 13_000).saturating_sub(now()))).await;
    node.restart().await;
    let f = poll(
        "both jobs' firing at s0 + 20 s",
        Duration::from_secs(40),
        || async {
            let f = firings_by_job(&node).await;
            let done = ["latest", "none"]
                .iter()
                .all(|j| f.get(*j).is_some_and(|m| m.contains_key(&(s0 + 20_000))));
            done.then_some(f)
        },
    )
    .await;
    let upto = |job: &str| -> Vec<(u64, usize)> {
        f[job]
            .iter()
            .filter(|(at, _)| **at >= s0 && **at <= s0 + 20_000)
            .map(|(at, n)| ((at - s0) / 1000, *n))
            .collect()
    };
    assert_eq!(
        upto("latest"),
        [(0, 1), (10, 1), (20, 1)],
        "catch_up latest: the missed firing runs once: {f:?}\n{}",
        node.stderr()
    );
    assert_eq!(
        upto("none"),
        [(0, 1), (20, 1)],
        "catch_up none: the missed firing is passed over: {f:?}"
    );
    assert!(
        node.stderr().contains("firings were missed"),
        "the outage is logged"
    );
}

const SECRET: &str = "test-cluster-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_firing_runs_once_while_the_leader_and_a_follower_are_killed() {
    let mut extra = every_2s();
    extra["cluster"] = json!({"heartbeat_ms": 300, "node_lease_ms": 2000});
    let mut spec = ClusterSpec::new(BIN, 3);
    spec.workers = 2;
    spec.sim_args = Vec::new();
    spec.extra_config = extra;
    spec.ready_path = Some("/ready".into());
    spec.secret = Some(SECRET.into());
    let mut c = Cluster::start(spec)
        .await
        .unwrap_or_else(|e| panic!("the cluster did not start: {e}"));
    let _sim = SimApi::at(c.sim_url());
    let nodes: Vec<NodeApi> = c.nodes().iter().map(NodeApi::of).collect();
    c.wait_for_leader(Duration::from_secs(40)).await.unwrap();

    let started = Instant::now();
    let at = |s: u64| started + Duration::from_secs(s);
    let sleep_until = |t: Instant| tokio::time::sleep_until(t.into());

    sleep_until(at(6)).await;
    let leader = c.leader().await.expect("a leader");
    c.kill(leader).unwrap();
    sleep_until(at(12)).await;
    c.restart(leader).await.unwrap();
    sleep_until(at(16)).await;
    let now_leader = c.leader().await.expect("a leader");
    let follower = (0..3).find(|i| *i != now_leader).unwrap();
    c.kill(follower).unwrap();
    sleep_until(at(22)).await;
    c.restart(follower).await.unwrap();
    sleep_until(at(30)).await;
    let window_end_ms = chrono::Utc::now().timestamp_millis() as u64 - 3_000;

    // Every node sees the same cron tasks; count them per scheduled time.
    let reader = c.leader().await.expect("a leader");
    let tasks = cron_tasks(&nodes[reader]).await;
    let mut per_time: BTreeMap<u64, u32> = BTreeMap::new();
    for t in &tasks {
        let s = t["cron"]["scheduled_at"].as_str().unwrap();
        let ms = chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis() as u64;
        *per_time.entry(ms).or_insert(0) += 1;
    }
    let first = *per_time.keys().next().expect("some firings");
    let expected: Vec<u64> = (first..=window_end_ms).step_by(2_000).collect();
    assert!(expected.len() >= 12, "{} firings in ~30 s", expected.len());
    for t in &expected {
        assert_eq!(
            per_time.get(t).copied(),
            Some(1),
            "scheduled time {t} fired {:?} times (all: {per_time:?})",
            per_time.get(t)
        );
    }
    assert!(per_time.values().all(|n| *n == 1), "{per_time:?}");
    // GET /api/cron on any node agrees on the last firing's task.
    let (_, v) = nodes[reader].get_json("/api/cron").await;
    assert!(v["jobs"][0]["last"]["task_id"].as_str().is_some(), "{v}");
}

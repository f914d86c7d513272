//! The secured cluster port (issue 14): real node processes with `cluster.tls` made by
//! `openclaw-node cluster gen-certs`, a node with another CA's certificate refused, the
//! start-up rule for non-loopback cluster addresses (`cluster.insecure`), bad PEM paths refused
//! naming their key, and mesh connections bound to the node's address (an iptables partition
//! between node addresses cuts them).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{prereq, run_cli, NodeApi, BIN};
use openclaw_harness::{Cluster, ClusterSpec};
use serde_json::{json, Value};

const SECRET: &str = "tls-test-cluster-secret";
const AGREE_DEADLINE: Duration = Duration::from_secs(60);

/// `cluster gen-certs DIR --nodes n --ips <the harness's node addresses>`; panics on failure.
fn gen_certs(dir: &Path, n: usize) -> String {
    let ips: Vec<String> = (0..n)
        .map(|k| openclaw_harness::cluster::node_ip(k).to_string())
        .collect();
    let d = dir.display().to_string();
    let (code, out, err) = run_cli(&[
        "cluster",
        "gen-certs",
        &d,
        "--nodes",
        &n.to_string(),
        "--ips",
        &ips.join(","),
    ]);
    assert_eq!(code, 0, "gen-certs failed: {out}\n{err}");
    for f in ["ca.pem", "ca-key.pem", "node-1.pem", "node-1-key.pem"] {
        assert!(dir.join(f).is_file(), "gen-certs wrote no {f}: {out}");
    }
    out
}

/// `cluster.tls` of certificate `node-{i}` in `dir`, plus `more` cluster keys.
fn tls_config(dir: &Path, i: usize, more: Value) -> Value {
    let p = |f: String| dir.join(f).display().to_string();
    let mut cluster = json!({"tls": {
        "cert": p(format!("node-{i}.pem")),
        "key": p(format!("node-{i}-key.pem")),
        "ca": p("ca.pem".into()),
    }});
    if let (Some(c), Value::Object(m)) = (cluster.as_object_mut(), more) {
        c.extend(m);
    }
    json!({ "cluster": cluster })
}

async fn start_cluster(node_config: BTreeMap<usize, Value>) -> (Cluster, Vec<NodeApi>) {
    let mut spec = ClusterSpec::new(BIN, 3);
    spec.workers = 2;
    spec.sim_args = Vec::new();
    spec.extra_config = json!({"cluster": {"heartbeat_ms": 300, "node_lease_ms": 2000}});
    spec.node_config = node_config;
    spec.ready_path = Some("/ready".into());
    spec.secret = Some(SECRET.into());
    spec.start_timeout = AGREE_DEADLINE;
    let c = Cluster::start(spec)
        .await
        .unwrap_or_else(|e| panic!("the cluster did not start: {e}"));
    let apis = c.nodes().iter().map(NodeApi::of).collect();
    (c, apis)
}

/// Wait until every node of `live` reports each other node of `live` as mesh-connected (or,
/// with `connected = false`, until node `from` reports node `to` as not connected).
async fn wait_mesh(nodes: &[NodeApi], from: usize, to_id: u64, connected: bool) {
    let end = Instant::now() + AGREE_DEADLINE;
    loop {
        let (st, v) = nodes[from].get_json("/api/cluster").await;
        let now = v["nodes"].as_array().and_then(|a| {
            a.iter()
                .find(|n| n["id"].as_u64() == Some(to_id))
                .map(|n| n["mesh_connected"] == json!(true))
        });
        if st.is_success() && now == Some(connected) {
            return;
        }
        assert!(
            Instant::now() < end,
            "node {from} never saw the mesh link to {to_id} {}: {v}",
            if connected { "up" } else { "down" }
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn node_id(n: &NodeApi) -> u64 {
    let (_, v) = n.get_json("/api/cluster").await;
    v["node_id"]
        .as_u64()
        .or_else(|| v["node_id"].as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("no node_id in {v}"))
}

async fn submit_retrying(node: &NodeApi, body: Value) -> String {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let (st, v) = node.submit(body.clone()).await;
        if st.as_u16() == 202 {
            return v["id"].as_str().expect("id").to_string();
        }
        assert!(
            st.as_u16() == 503 && Instant::now() < end,
            "submit refused: {st} {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A TLS cluster from gen-certs forms, runs tasks through every node, keeps its mesh up,
/// refuses plain HTTP on the cluster port, refuses a node whose certificate another CA signed
/// (logged without the secret, the cluster keeps working), and survives a leader kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_works_refuses_a_foreign_ca_and_survives_a_leader_kill() {
    let certs = tempfile::tempdir().unwrap();
    let (ours, theirs) = (certs.path().join("ours"), certs.path().join("theirs"));
    let printed = gen_certs(&ours, 4);
    assert!(
        printed.contains("\"tls\"") && printed.contains("node-3.pem"),
        "{printed}"
    );
    gen_certs(&theirs, 4);
    let mut per_node: BTreeMap<usize, Value> = (0..3)
        .map(|k| (k, tls_config(&ours, k + 1, json!({}))))
        .collect();
    // Directory 3 is the joiner: the right secret, a certificate of another CA.
    per_node.insert(3, tls_config(&theirs, 4, json!({"join_timeout_ms": 8000})));
    let (mut c, nodes) = start_cluster(per_node).await;
    let mut ids = Vec::new();
    for n in &nodes {
        ids.push(node_id(n).await);
    }
    for (i, n) in nodes.iter().enumerate() {
        assert!(
            n.stderr().contains("mutual TLS"),
            "node {i} says nothing about TLS:\n{}",
            n.stderr()
        );
    }
    // The mesh is up over TLS between every pair.
    for from in 0..3 {
        for to in (0..3).filter(|t| *t != from) {
            wait_mesh(&nodes, from, ids[to], true).await;
        }
    }
    // Plain HTTP on a TLS cluster port gets no answer.
    let addr = c.node(0).cluster_addr().expect("cluster addr");
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/cluster/ping"))
        .header("x-openclaw-cluster-secret", SECRET)
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        plain.as_ref().map_or(true, |r| !r.status().is_success()),
        "plain HTTP answered: {plain:?}"
    );

    // Tasks through every node (followers forward over TLS).
    let mut tasks = Vec::new();
    for i in 0..6 {
        tasks.push(submit_retrying(&nodes[i % 3], json!({"input": format!("tls task {i}")})).await);
    }
    for (i, id) in tasks.iter().enumerate() {
        let done = nodes[(i + 1) % 3]
            .wait_final(id, Duration::from_secs(60))
            .await;
        assert_eq!(done["status"], "succeeded", "{done}");
    }

    // Another CA's certificate: the peers refuse the handshake, the joiner gives up.
    let mut stranger = c
        .spawn_joiner(SECRET)
        .unwrap_or_else(|e| panic!("spawning the stranger: {e}"));
    let bad = NodeApi::of(&stranger);
    let exited = stranger.wait_exit(Duration::from_secs(60)).await;
    assert!(
        exited.is_some_and(|st| !st.success()),
        "a node with a foreign certificate stops with an error: {}",
        bad.stderr()
    );
    let seed_log = nodes[0].stderr();
    assert!(
        seed_log.contains("refused a cluster connection: TLS handshake failed"),
        "{seed_log}"
    );
    assert!(!seed_log.contains(SECRET) && !bad.stderr().contains(SECRET));
    let (_, v) = nodes[0].get_json("/api/cluster").await;
    assert_eq!(v["nodes"].as_array().map(Vec::len), Some(3), "{v}");
    let id = submit_retrying(&nodes[1], json!({"input": "after the stranger"})).await;
    let done = nodes[2].wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "succeeded", "{done}");

    // Kill the leader: the others elect a new one over TLS and keep taking tasks.
    let before = c
        .wait_for_leader(AGREE_DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let term_before = c.status(before).await.map(|s| s.term).unwrap_or(0);
    c.kill(before).unwrap();
    let after = c
        .wait_for_leader(AGREE_DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("no new leader over TLS: {e}"));
    assert_ne!(after, before);
    let term_after = c.status(after).await.map(|s| s.term).unwrap_or(0);
    assert!(term_after > term_before, "{term_after} > {term_before}");
    let live: Vec<usize> = (0..3).filter(|i| *i != before).collect();
    let id = submit_retrying(&nodes[live[0]], json!({"input": "after the leader died"})).await;
    let done = nodes[live[1]]
        .wait_final(&id, Duration::from_secs(60))
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    drop(c);
}

/// Mesh connections are bound to the node's address: a partition between node addresses cuts
/// them (they used to leave from 127.0.0.1 and survive it), and they come back after the heal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_cuts_mesh_links_too() {
    if !prereq::require(
        "iptables partitions (root and iptables)",
        prereq::partitions(),
        "run as root with iptables installed (apt-get install iptables)",
    ) {
        return;
    }
    let (mut c, nodes) = start_cluster(BTreeMap::new()).await;
    let id2 = node_id(&nodes[2]).await;
    let id0 = node_id(&nodes[0]).await;
    wait_mesh(&nodes, 0, id2, true).await;
    wait_mesh(&nodes, 2, id0, true).await;
    c.partition(&[vec![0, 1], vec![2]]).unwrap();
    wait_mesh(&nodes, 0, id2, false).await;
    wait_mesh(&nodes, 2, id0, false).await;
    c.heal().unwrap();
    wait_mesh(&nodes, 0, id2, true).await;
    wait_mesh(&nodes, 2, id0, true).await;
}

/// The start-up rule: a non-loopback cluster address needs cluster.tls or cluster.insecure;
/// with insecure the node starts and warns; a bad PEM path is refused naming its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reachable_cluster_port_needs_tls_or_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let data = |name: &str| dir.path().join(name).display().to_string();
    let cfg_file = |name: &str, v: Value| {
        let p = dir.path().join(name);
        std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
        p.display().to_string()
    };
    let port = common::free_port();
    let cluster_any = format!("0.0.0.0:{port}");

    // (config, --cluster, expected fragments of the refusal)
    let missing = data("missing.pem");
    let cases = [
        (
            json!({}),
            cluster_any.clone(),
            vec!["cluster.tls", "not loopback", "cluster.insecure"],
        ),
        (
            json!({"cluster": {"tls": {"cert": missing, "key": missing, "ca": missing}}}),
            format!("127.0.0.1:{port}"),
            vec!["cluster.tls.cert", "cannot read", "missing.pem"],
        ),
        (
            json!({"cluster": {"tls": {"cert": "", "key": "k", "ca": "c"}}}),
            cluster_any.clone(),
            vec!["cluster.tls.cert", "empty"],
        ),
    ];
    for (i, (cfg, cluster, want)) in cases.into_iter().enumerate() {
        let file = cfg_file(&format!("c{i}.json"), cfg);
        let d = data(&format!("d{i}"));
        let mut cmd = std::process::Command::new(BIN);
        common::scrub_env(&mut cmd);
        let out = cmd
            .args(["--config", &file, "--data-dir", &d, "--http", "127.0.0.1:0"])
            .args(["--cluster", &cluster])
            .env("OPENCLAW_CLUSTER_SECRET", SECRET)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("running openclaw-node");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} started:\n{err}");
        for w in want {
            assert!(err.contains(w), "case {i}: no `{w}` in:\n{err}");
        }
        assert!(!err.contains(SECRET), "case {i} logged the secret");
    }

    // cluster.insecure: starts on 0.0.0.0 and warns once.
    let mut node = common::Node::on_dir(
        &dir.path().join("insecure"),
        &json!({"cluster": {"insecure": true}}),
        &[("OPENCLAW_CLUSTER_SECRET", SECRET)],
    );
    node.spec_mut().cluster = Some(cluster_any.parse().unwrap());
    node.spawn_ready().await;
    let log = node.stderr();
    assert_eq!(
        log.matches("cluster.insecure").count(),
        1,
        "one warning about cluster.insecure:\n{log}"
    );
    assert!(log.contains("plain HTTP/TCP"), "{log}");
    node.stop();
}

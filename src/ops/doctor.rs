//! `openclaw-node doctor`: checks an operator can act on, each `ok` / `warn` / `fail` with a fix.
//!
//! Checks: the config file parses and validates (path + reason); the data dir exists and is
//! writable (a probe file is created and removed); free disk space on it (`df -Pk`, warn under
//! [`DISK_WARN_BYTES`]); each configured model's provider answers `GET {base_url}/models` (with
//! its key header when the key variable is set — keys are never printed), with its latency;
//! models the node serves with the built-in simulator are named as such; the clock against the
//! `Date` header of a provider or the node (warn beyond [`CLOCK_SKEW_WARN_SECS`]); the node at
//! `--node` answers `/health` and `/ready`. Exit code 1 when any check fails.
//!
//! Deciding (pure, table-tested) is separate from probing (I/O).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cli::DoctorArgs;
use openclaw_server::config::{Config, ProviderKind};

use super::{render_table, Align, Resolved};

/// Free space below this on the data dir's file system is a warning.
pub const DISK_WARN_BYTES: u64 = 1024 * 1024 * 1024;
/// Clock difference with a provider or the node beyond this is a warning.
pub const CLOCK_SKEW_WARN_SECS: i64 = 5;
/// Time allowed for one probe (provider or node).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The simulator base the provider set is built with here, to tell which models it would serve.
const EMBEDDED_MARKER: &str = "http://embedded-simulator.invalid/v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
}

impl Check {
    fn new(name: impl Into<String>, status: Status, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status,
            detail: detail.into(),
            fix: None,
            latency_ms: None,
        }
    }
    fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }
}

/// One `warn` per accepted key that does not act as written ([`Config::warnings`], the same
/// list the node logs at start-up).
pub fn config_warning_checks(cfg: &Config, env: &dyn Fn(&str) -> Option<String>) -> Vec<Check> {
    cfg.warnings(env)
        .into_iter()
        .map(|w| {
            Check::new(format!("config {}", w.path), Status::Warn, w.message)
                .fix(format!("change or remove `{}` in the config file", w.path))
        })
        .collect()
}

/// Available bytes from `df -Pk` output (second line, fourth column, in KiB).
pub fn parse_df(out: &str) -> Option<u64> {
    let line = out.lines().nth(1)?;
    let kib: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

pub fn disk_check(dir: &Path, available: Option<u64>) -> Check {
    match available {
        Some(b) if b < DISK_WARN_BYTES => Check::new(
            "disk",
            Status::Warn,
            format!("{} MiB free on {}", b / (1024 * 1024), dir.display()),
        )
        .fix("free space (old logs: <data-dir>/logs/config-audit.jsonl.N; lower audit.keep_files) or move --data-dir"),
        Some(b) => Check::new(
            "disk",
            Status::Ok,
            format!("{:.1} GiB free on {}", b as f64 / 1_073_741_824.0, dir.display()),
        ),
        None => Check::new("disk", Status::Warn, "could not read free space (`df -Pk`)")
            .fix("check the data dir's file system by hand: df -h <data-dir>"),
    }
}

/// `skew_secs` = local time − remote time.
pub fn clock_check(skew_secs: Option<(i64, String)>) -> Check {
    match skew_secs {
        Some((s, against)) if s.abs() > CLOCK_SKEW_WARN_SECS => Check::new(
            "clock",
            Status::Warn,
            format!("local clock is {s:+} s off {against}"),
        )
        .fix("sync the clock (chrony/ntpd, `timedatectl set-ntp true`); budgets and logs use local time"),
        Some((s, against)) => Check::new("clock", Status::Ok, format!("{s:+} s against {against}")),
        None => Check::new("clock", Status::Warn, "no Date header to compare with (no provider or node answered)")
            .fix("start the node or make a provider reachable, then run doctor again"),
    }
}

/// How a model would be reached.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// The node serves it with its embedded simulator; why.
    Embedded(String),
    /// Probe `url` (`{base_url}/models`) with these headers (values may be secrets).
    Probe {
        url: String,
        kind: ProviderKind,
        headers: Vec<(&'static str, String)>,
        key_env: Option<String>,
    },
}

/// The probe plan of every configured model, decided the way the node builds its providers.
pub fn plans(cfg: &Config, env: &dyn Fn(&str) -> Option<String>) -> Vec<(String, Plan)> {
    let set = openclaw_server::calls::providers::ProviderSet::build(
        cfg,
        reqwest::Client::new(),
        EMBEDDED_MARKER,
        env,
    );
    set.resolved()
        .iter()
        .map(|r| {
            let m = cfg.models.get(&r.model);
            let base = m.and_then(|m| m.base_url.clone());
            let plan = match (r.served_by, base) {
                (ProviderKind::Sim, _) if r.endpoint.starts_with(EMBEDDED_MARKER) => {
                    Plan::Embedded(r.reason.clone())
                }
                (kind, Some(base)) => {
                    let key_env = m.and_then(|m| m.api_key_env.clone());
                    let key = key_env.as_deref().and_then(env).filter(|k| !k.is_empty());
                    let headers = match (kind, key) {
                        (ProviderKind::Openai, Some(k)) => {
                            vec![("authorization", format!("Bearer {k}"))]
                        }
                        (ProviderKind::Anthropic, Some(k)) => {
                            vec![
                                ("x-api-key", k),
                                ("anthropic-version", "2023-06-01".to_string()),
                            ]
                        }
                        _ => Vec::new(),
                    };
                    Plan::Probe {
                        url: format!("{}/models", base.trim_end_matches('/')),
                        kind,
                        headers,
                        key_env,
                    }
                }
                (_, None) => Plan::Embedded(r.reason.clone()),
            };
            (r.model.clone(), plan)
        })
        .collect()
}

/// What a probe saw.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeResult {
    Answered { status: u16, latency_ms: u64 },
    Unreachable { error: String },
}

pub fn model_check(model: &str, plan: &Plan, result: Option<&ProbeResult>) -> Check {
    let name = format!("model {model}");
    match (plan, result) {
        (Plan::Embedded(why), _) => Check::new(
            name,
            Status::Ok,
            format!("served by the built-in simulator ({why})"),
        ),
        (Plan::Probe { url, .. }, None) => {
            Check::new(name, Status::Warn, format!("{url} not probed"))
        }
        (Plan::Probe { url, key_env, .. }, Some(ProbeResult::Answered { status, latency_ms })) => {
            let mut c = match status {
                200..=299 => Check::new(&name, Status::Ok, format!("{url} answered {status} in {latency_ms} ms")),
                401 | 403 => Check::new(&name, Status::Fail, format!("{url} rejected the key (HTTP {status})"))
                    .fix(format!(
                        "check the key in {} (models.{model}.api_key_env)",
                        key_env.as_deref().unwrap_or("the key variable")
                    )),
                _ => Check::new(&name, Status::Warn, format!("{url} is reachable but answered HTTP {status} in {latency_ms} ms"))
                    .fix(format!("check models.{model}.base_url (it should end at the API root, e.g. https://api.openai.com/v1)")),
            };
            c.latency_ms = Some(*latency_ms);
            c
        }
        (Plan::Probe { url, .. }, Some(ProbeResult::Unreachable { error })) => {
            Check::new(name, Status::Fail, format!("{url} unreachable: {error}")).fix(format!(
                "check models.{model}.base_url and the network (proxy, firewall, DNS); \
             `openclaw-node config set models.{model}.base_url URL`"
            ))
        }
    }
}

/// Probe a URL; returns the result and the `Date` header if any.
async fn probe(
    http: &reqwest::Client,
    url: &str,
    headers: &[(&'static str, String)],
) -> (ProbeResult, Option<String>) {
    let started = Instant::now();
    let mut req = http.get(url).timeout(PROBE_TIMEOUT);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    match req.send().await {
        Ok(resp) => {
            let date = resp
                .headers()
                .get(reqwest::header::DATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            (
                ProbeResult::Answered {
                    status: resp.status().as_u16(),
                    latency_ms: started.elapsed().as_millis() as u64,
                },
                date,
            )
        }
        // reqwest errors name the URL but never the headers, so no key is printed.
        Err(e) => (
            ProbeResult::Unreachable {
                error: error_chain(&e),
            },
            None,
        ),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn skew_against(date: &str) -> Option<i64> {
    let remote = chrono::DateTime::parse_from_rfc2822(date).ok()?;
    Some((chrono::Utc::now() - remote.with_timezone(&chrono::Utc)).num_seconds())
}

fn data_dir_check(dir: &Path) -> Check {
    if !dir.exists() {
        return Check::new(
            "data dir",
            Status::Warn,
            format!("{} does not exist yet", dir.display()),
        )
        .fix("the node creates it at start; or `mkdir -p` it, or pass --data-dir");
    }
    let probe = dir.join(format!(".doctor-probe-{}", std::process::id()));
    match std::fs::write(&probe, b"probe").and_then(|_| std::fs::remove_file(&probe)) {
        Ok(()) => Check::new(
            "data dir",
            Status::Ok,
            format!("{} is writable", dir.display()),
        ),
        Err(e) => Check::new(
            "data dir",
            Status::Fail,
            format!("{} is not writable: {e}", dir.display()),
        )
        .fix(format!(
            "fix its owner/permissions (chown/chmod) or pass another --data-dir ({})",
            dir.display()
        )),
    }
}

fn free_space(dir: &Path) -> Option<u64> {
    let mut d: PathBuf = dir.to_path_buf();
    while !d.exists() {
        d = d.parent()?.to_path_buf();
    }
    let out = std::process::Command::new("df")
        .arg("-Pk")
        .arg(&d)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    parse_df(&String::from_utf8_lossy(&out.stdout))
}

/// Run every check.
pub async fn collect(loc: &Resolved, node: &crate::cli::NodeUrl) -> Vec<Check> {
    let mut checks = Vec::new();
    let cfg = match loc.load() {
        Ok(cfg) => {
            let what = if loc.config_path.exists() {
                loc.config_path.display().to_string()
            } else {
                format!(
                    "built-in defaults ({} does not exist)",
                    loc.config_path.display()
                )
            };
            checks.push(Check::new("config", Status::Ok, format!("{what} is valid")));
            checks.extend(config_warning_checks(&cfg, &|v: &str| {
                std::env::var(v).ok()
            }));
            Some(cfg)
        }
        Err(e) => {
            checks.push(
                Check::new("config", Status::Fail, e.to_string()).fix(format!(
                    "fix the key named above, then `openclaw-node config validate {}`",
                    loc.config_path.display()
                )),
            );
            None
        }
    };
    checks.push(data_dir_check(&loc.data_dir));
    checks.push(disk_check(&loc.data_dir, free_space(&loc.data_dir)));

    let http = reqwest::Client::builder()
        .connect_timeout(PROBE_TIMEOUT)
        .build()
        .unwrap_or_default();
    let mut date: Option<(String, String)> = None;
    if let Some(cfg) = &cfg {
        let env = |v: &str| std::env::var(v).ok();
        let plans = plans(cfg, &env);
        let probes = futures::future::join_all(plans.iter().map(|(_, plan)| async {
            match plan {
                Plan::Probe { url, headers, .. } => Some(probe(&http, url, headers).await),
                Plan::Embedded(_) => None,
            }
        }))
        .await;
        for ((model, plan), res) in plans.iter().zip(probes) {
            if let (Some((_, Some(d))), None) = (&res, &date) {
                date = Some((d.clone(), format!("model {model}'s provider")));
            }
            checks.push(model_check(model, plan, res.as_ref().map(|(r, _)| r)));
        }
    }

    let base = node.node.trim_end_matches('/');
    let token = std::env::var(&node.token_env)
        .ok()
        .filter(|t| !t.is_empty());
    for path in ["/health", "/ready"] {
        let url = format!("{base}{path}");
        let mut req = http.get(&url).timeout(PROBE_TIMEOUT);
        if let Some(t) = &token {
            req = req.bearer_auth(t);
        }
        let started = Instant::now();
        let c = match req.send().await {
            Ok(resp) => {
                if date.is_none() {
                    if let Some(d) = resp.headers().get(reqwest::header::DATE).and_then(|v| v.to_str().ok()) {
                        date = Some((d.to_string(), "the node".into()));
                    }
                }
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                let mut c = if status.is_success() {
                    Check::new(format!("node {path}"), Status::Ok, format!("{url} answered {status}"))
                } else {
                    Check::new(format!("node {path}"), Status::Fail, format!("{url} answered {status}: {}", body.trim()))
                        .fix("read the node's log (stderr); /ready lists why it is not ready")
                };
                c.latency_ms = Some(started.elapsed().as_millis() as u64);
                c
            }
            Err(e) => Check::new(format!("node {path}"), Status::Fail, format!("{url} unreachable: {}", error_chain(&e)))
                .fix(format!(
                    "start the node (`openclaw-node --data-dir {}`) or point --node / OPENCLAW_NODE at it",
                    loc.data_dir.display()
                )),
        };
        checks.push(c);
    }
    // Cluster health, when the node is in a cluster (404 `not_clustered` otherwise).
    let mut req = http
        .get(format!("{base}/api/cluster"))
        .timeout(PROBE_TIMEOUT);
    if let Some(t) = &token {
        req = req.bearer_auth(t);
    }
    if let Ok(resp) = req.send().await {
        if resp.status().is_success() {
            if let Ok(v) = resp.json::<serde_json::Value>().await {
                checks.push(cluster_check(&v));
            }
        }
    }
    checks.push(clock_check(
        date.and_then(|(d, against)| skew_against(&d).map(|s| (s, against))),
    ));
    checks
}

/// Replication lag (entries) beyond which a node is reported as behind.
pub const LAG_WARN: u64 = 1000;

/// The cluster as `GET /api/cluster` shows it: a leader, every member alive, nobody far behind.
pub fn cluster_check(st: &serde_json::Value) -> Check {
    let nodes = st["nodes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let name = "cluster";
    if st["leader"].is_null() {
        return Check::new(name, Status::Fail, format!("no leader ({} members known)", nodes.len()))
            .fix("a majority of voters must be up and reach each other on the cluster port; check `openclaw-node status` on each node and the firewall");
    }
    let down: Vec<String> = nodes
        .iter()
        .filter(|n| n["alive"] != serde_json::Value::Bool(true))
        .map(|n| format!("{} ({})", n["id"], n["address"].as_str().unwrap_or("?")))
        .collect();
    let voters = nodes
        .iter()
        .filter(|n| n["voter"] == serde_json::Value::Bool(true))
        .count();
    let down_voters = nodes
        .iter()
        .filter(|n| {
            n["voter"] == serde_json::Value::Bool(true)
                && n["alive"] != serde_json::Value::Bool(true)
        })
        .count();
    if !down.is_empty() {
        // A majority of voters alive still commits: a warning. Without one, writes stop.
        let status = if (voters - down_voters) * 2 > voters {
            Status::Warn
        } else {
            Status::Fail
        };
        return Check::new(
            name,
            status,
            format!("leader {}; not alive: {}", st["leader"], down.join(", ")),
        )
        .fix("restart those nodes with their data dirs (they rejoin by themselves), or remove them with `openclaw-node leave --id N`");
    }
    let behind: Vec<String> = nodes
        .iter()
        .filter(|n| n["lag"].as_u64().is_some_and(|l| l > LAG_WARN))
        .map(|n| format!("{} ({} entries)", n["id"], n["lag"]))
        .collect();
    if !behind.is_empty() {
        return Check::new(
            name,
            Status::Warn,
            format!("behind the leader: {}", behind.join(", ")),
        )
        .fix("a lagging node catches up by itself; if it does not, check its disk and network");
    }
    Check::new(
        name,
        Status::Ok,
        format!(
            "leader {}, term {}, {} nodes alive ({voters} voters)",
            st["leader"],
            st["term"],
            nodes.len()
        ),
    )
}

pub fn render(checks: &[Check]) -> String {
    let rows: Vec<Vec<String>> = checks
        .iter()
        .map(|c| {
            vec![
                c.status.as_str().to_string(),
                c.name.clone(),
                c.detail.clone(),
            ]
        })
        .collect();
    let mut out = String::new();
    // A fix does not fit a table cell; it is printed under its row.
    let table = render_table(
        &[
            ("status", Align::Left),
            ("check", Align::Left),
            ("detail", Align::Left),
        ],
        &rows,
    );
    let mut lines = table.lines();
    for l in lines.by_ref().take(2) {
        out.push_str(l);
        out.push('\n');
    }
    for (l, c) in lines.zip(checks) {
        out.push_str(l);
        out.push('\n');
        if let Some(f) = &c.fix {
            out.push_str(&format!("        fix: {f}\n"));
        }
    }
    let fails = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warns = checks.iter().filter(|c| c.status == Status::Warn).count();
    out.push_str(&format!(
        "{fails} failed, {warns} warnings, {} checks\n",
        checks.len()
    ));
    out
}

pub async fn run(args: DoctorArgs) -> anyhow::Result<i32> {
    let loc = Resolved::of(&args.location);
    let checks = collect(&loc, &args.target).await;
    let failed = checks.iter().any(|c| c.status == Status::Fail);
    if args.json {
        super::print_json(&serde_json::json!({"ok": !failed, "checks": checks}))?;
    } else {
        print!("{}", render(&checks));
    }
    Ok(if failed { 1 } else { 0 })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cluster_health_table() {
        use serde_json::json;
        let node = |id: u64, alive: bool, voter: bool, lag: Option<u64>| json!({"id": id, "address": format!("10.0.0.{id}:7000"), "alive": alive, "voter": voter, "lag": lag});
        let cases = [
            (
                "healthy",
                json!({"leader": 1, "term": 2, "nodes": [node(1, true, true, Some(0)), node(2, true, true, Some(3)), node(3, true, true, None)]}),
                Status::Ok,
            ),
            (
                "no leader",
                json!({"leader": null, "term": 2, "nodes": [node(1, true, true, None)]}),
                Status::Fail,
            ),
            (
                "one of three down",
                json!({"leader": 1, "term": 2, "nodes": [node(1, true, true, None), node(2, false, true, None), node(3, true, true, None)]}),
                Status::Warn,
            ),
            (
                "two of three down",
                json!({"leader": 1, "term": 2, "nodes": [node(1, true, true, None), node(2, false, true, None), node(3, false, true, None)]}),
                Status::Fail,
            ),
            (
                "lagging",
                json!({"leader": 1, "term": 2, "nodes": [node(1, true, true, Some(0)), node(2, true, true, Some(5000))]}),
                Status::Warn,
            ),
        ];
        for (name, st, want) in cases {
            let c = cluster_check(&st);
            assert_eq!(c.status, want, "{name}: {c:?}");
            assert_eq!(c.fix.is_some(), want != Status::Ok, "{name}");
        }
    }

    #[test]
    fn config_keys_that_do_not_act_are_warnings() {
        let cfg = openclaw_server::config::from_value(
            "t",
            json!({"budget": {"notification": {"channel": "feishu", "recipients": ["ops"]}}}),
        )
        .unwrap();
        let checks = config_warning_checks(&cfg, &|_| None);
        let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "config budget.notification.channel",
                "config budget.notification.recipients"
            ]
        );
        assert!(checks
            .iter()
            .all(|c| c.status == Status::Warn && c.fix.is_some()));
        let clean = openclaw_server::config::from_value("t", json!({})).unwrap();
        assert!(config_warning_checks(&clean, &|_| None).is_empty());
    }

    #[test]
    fn df_output_parses() {
        let out = "Filesystem     1024-blocks      Used Available Capacity Mounted on\n\
                   /dev/sda1        102400000  51200000  51200000      50% /\n";
        assert_eq!(parse_df(out), Some(51_200_000 * 1024));
        assert_eq!(parse_df("Filesystem\n"), None);
        assert_eq!(parse_df("h\n/dev/x a b notanumber"), None);
        let p = Path::new("/d");
        assert_eq!(
            disk_check(p, Some(DISK_WARN_BYTES - 1)).status,
            Status::Warn
        );
        assert_eq!(disk_check(p, Some(DISK_WARN_BYTES)).status, Status::Ok);
        assert_eq!(disk_check(p, None).status, Status::Warn);
    }

    #[test]
    fn clock_skew_thresholds() {
        assert_eq!(clock_check(Some((5, "x".into()))).status, Status::Ok);
        assert_eq!(clock_check(Some((-6, "x".into()))).status, Status::Warn);
        assert_eq!(clock_check(None).status, Status::Warn);
        assert!(skew_against("Mon, 23 Nov 2026 20:11:30 GMT").is_some());
        assert!(skew_against("yesterday").is_none());
    }

    #[test]
    fn plans_follow_the_node_and_never_leak_keys() {
        let cfg = openclaw_server::config::from_value(
            "t",
            json!({
                "models": {
                    "emb": {"provider": "sim", "price": {"input": 0, "output": 0}},
                    "ext": {"provider": "sim", "base_url": "http://127.0.0.1:9/v1/", "price": {"input": 0, "output": 0}},
                    "oa": {"provider": "openai", "base_url": "https://api.example.com/v1", "api_key_env": "K1", "price": {"input": 0, "output": 0}},
                    "an": {"provider": "anthropic", "base_url": "https://api.example.org/v1", "api_key_env": "K2", "price": {"input": 0, "output": 0}},
                    "nokey": {"provider": "openai", "base_url": "https://api.example.com/v1", "api_key_env": "K3", "price": {"input": 0, "output": 0}}
                },
                "model_routing": {"default_model": "emb"}
            }),
        )
        .unwrap();
        let env = |v: &str| match v {
            "K1" => Some("sk-one".to_string()),
            "K2" => Some("sk-two".to_string()),
            _ => None,
        };
        let plans: std::collections::BTreeMap<String, Plan> =
            plans(&cfg, &env).into_iter().collect();
        assert!(matches!(plans["emb"], Plan::Embedded(_)));
        assert!(matches!(&plans["nokey"], Plan::Embedded(why) if why.contains("K3")));
        match &plans["ext"] {
            Plan::Probe { url, headers, .. } => {
                assert_eq!(url, "http://127.0.0.1:9/v1/models");
                assert!(headers.is_empty());
            }
            p => panic!("{p:?}"),
        }
        match &plans["oa"] {
            Plan::Probe { url, headers, .. } => {
                assert_eq!(url, "https://api.example.com/v1/models");
                assert_eq!(headers[0], ("authorization", "Bearer sk-one".to_string()));
            }
            p => panic!("{p:?}"),
        }
        assert!(matches!(&plans["an"], Plan::Probe { headers, .. } if headers[0].0 == "x-api-key"));

        // Checks built from the plans print no key.
        let results = [
            ProbeResult::Answered {
                status: 200,
                latency_ms: 12,
            },
            ProbeResult::Answered {
                status: 401,
                latency_ms: 12,
            },
            ProbeResult::Answered {
                status: 404,
                latency_ms: 12,
            },
            ProbeResult::Unreachable {
                error: "connection refused".into(),
            },
        ];
        let mut statuses = Vec::new();
        for r in &results {
            let c = model_check("oa", &plans["oa"], Some(r));
            let text = serde_json::to_string(&c).unwrap();
            assert!(!text.contains("sk-one"), "{text}");
            assert!(c.name.contains("oa"));
            statuses.push(c.status);
        }
        assert_eq!(
            statuses,
            [Status::Ok, Status::Fail, Status::Warn, Status::Fail]
        );
        let c = model_check("oa", &plans["oa"], Some(&results[1]));
        assert!(c.fix.unwrap().contains("K1"));
        let c = model_check("emb", &plans["emb"], None);
        assert!(c.detail.contains("built-in simulator"), "{}", c.detail);
    }

    #[test]
    fn render_prints_fixes_and_a_summary() {
        let checks = vec![
            Check::new("config", Status::Ok, "valid"),
            Check::new("model x", Status::Fail, "unreachable").fix("check models.x.base_url"),
        ];
        let t = render(&checks);
        assert!(t.contains("fail    model x  unreachable"), "{t}");
        assert!(t.contains("fix: check models.x.base_url"), "{t}");
        assert!(t.contains("1 failed, 0 warnings, 2 checks"), "{t}");
    }
}

//! The chapter's own tools read our files unchanged: the audit log through `seven_day_summary.py`
//! (§18.1) and `openclaw-cost-tracker.py` (§18.7), and `monitoring/` holds the chapter's metric
//! and alert names.
//!
//! The scripts are run as they are, from `../shared/seed/scripts` (the task's seed folder), with
//! `python3`. Entries are written through [`AuditLog`], so a change to the line format that the
//! scripts cannot read (an aware timestamp, a renamed field, a string token count) fails here.
//! If `python3` is missing the script tests fail under `CI=true` (`.ci/run` installs it) and
//! print a loud skip elsewhere.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime};

use openclaw_proto::api::TokenCounts;
use openclaw_proto::Priority;
use openclaw_server::audit::{self, AuditEntry, AuditLog, CacheOutcome};
use openclaw_server::config::{default_models, AuditConfig};

/// The chapter's five models (`PRICING` in openclaw-cost-tracker.py).
const CHAPTER_MODELS: [&str; 5] = [
    "gpt-4o",
    "gpt-4o-mini",
    "claude-3-5-sonnet",
    "claude-3-5-haiku",
    "deepseek-v3",
];

fn scripts_dir() -> PathBuf {
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/seed/scripts");
    if beside.join("seven_day_summary.py").is_file() {
        beside
    } else {
        PathBuf::from("/work/shared/seed/scripts")
    }
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Is `python3` here? Under `CI=true` its absence fails the test; elsewhere a loud skip.
fn have_python() -> bool {
    openclaw_harness::prereq::require(
        "python3 (the chapter's scripts)",
        openclaw_harness::prereq::python(None),
        "apt-get install python3",
    )
}

/// Run a chapter script; `stdin` is piped in when given. Panics with its stderr if it fails.
fn run_script(name: &str, stdin: Option<&Path>, home: Option<&Path>) -> String {
    let script = scripts_dir().join(name);
    assert!(script.is_file(), "chapter script {script:?} not found");
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .env("PYTHONIOENCODING", "utf-8")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(home) = home {
        cmd.env("HOME", home);
    }
    match stdin {
        Some(path) => cmd.stdin(std::fs::File::open(path).unwrap()),
        None => cmd.stdin(Stdio::null()),
    };
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{name} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `1,234,567` → 1234567.
fn int(s: &str) -> u64 {
    s.replace(',', "")
        .parse()
        .unwrap_or_else(|e| panic!("`{s}`: {e}"))
}

fn month_start(now: NaiveDateTime) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(now.year(), now.month(), 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
}

fn same_month(a: NaiveDateTime, b: NaiveDateTime) -> bool {
    a.year() == b.year() && a.month() == b.month()
}

/// Chapter prices (USD per 1M tokens), from our default config — which must agree with the
/// script's `PRICING`, checked through the cost column.
fn price(model: &str) -> (f64, f64) {
    let models = default_models();
    let p = &models[model].price;
    (p.input, p.output)
}

fn entry(i: usize, ts: NaiveDateTime, model: &str, input: u64, output: u64) -> AuditEntry {
    let (pin, pout) = price(model);
    AuditEntry {
        timestamp: ts,
        node: "node-1".into(),
        task_id: (i % 3 != 0).then(|| format!("task-{i}")),
        request_id: format!("req-{i}"),
        agent: ["main", "assistant", "monitor"][i % 3].into(),
        source: "api_call".into(),
        priority: Priority::ALL[i % 5],
        model: model.into(),
        provider: "sim".into(),
        tokens: TokenCounts { input, output },
        cost_usd: (input as f64 * pin + output as f64 * pout) / 1_000_000.0,
        latency_ms: 100 + i as u64,
        cache: CacheOutcome::from_hit(i % 4 == 0),
        cache_score: None,
        status: if i % 7 == 0 { "timeout" } else { "ok" }.into(),
        attempt: 1 + (i % 2) as u32,
        fallback_from: (i % 6 == 0).then(|| "gpt-4o".to_string()),
        // A task's line carries its prompt's components; the chapter's scripts ignore them.
        prompt: (i % 3 != 0).then(|| audit::AuditPrompt {
            system: input / 5,
            memory: input / 10,
            history: input / 3,
            input: input / 10,
            saved: i as u64,
            ..Default::default()
        }),
        purpose: None,
    }
}

/// A known log: every chapter model this month (recent, never before the 1st), plus lines 10 days
/// old and lines from last month, none of them near the 7-day cutoff.
fn known_entries(now: NaiveDateTime) -> Vec<AuditEntry> {
    let start = month_start(now);
    let cutoff = now - Duration::days(7);
    let away_from_cutoff = |mut t: NaiveDateTime| {
        while (t - cutoff).num_minutes().abs() < 120 {
            t -= Duration::hours(3);
        }
        t
    };
    let mut out = Vec::new();
    let mut i = 0;
    for (m, model) in CHAPTER_MODELS.iter().enumerate() {
        // This month, within the last few hours but not before the 1st at 00:00.
        for k in 0..(3 + m) {
            let ts = (now - Duration::minutes((7 * k + 13 * m) as i64)).max(start);
            let input = 150_000 + 10_007 * (k + m) as u64;
            let output = 20_000 + 3_001 * (k * m) as u64;
            out.push(entry(i, ts, model, input, output));
            i += 1;
        }
        // Ten days ago: outside the 7-day window; this month or not, depending on the date.
        let ts = away_from_cutoff(now - Duration::days(10) - Duration::minutes(m as i64));
        out.push(entry(i, ts, model, 1_000_000 + m as u64, 500_000));
        i += 1;
        // Last month.
        let ts = away_from_cutoff(start - Duration::days(1) - Duration::hours(2 + m as i64));
        out.push(entry(i, ts, model, 2_000_000, 700_000 + m as u64));
        i += 1;
    }
    out
}

/// Write `entries` through the real writer into `logs_dir` and wait until they are on disk.
async fn write_log(logs_dir: &Path, entries: &[AuditEntry]) -> PathBuf {
    let (log, writer) = AuditLog::open(logs_dir, &AuditConfig::default()).unwrap();
    for e in entries {
        log.record(e.clone()).await.unwrap();
    }
    log.flush().await;
    log.close().await;
    writer.await.unwrap();
    let path = logs_dir.join(audit::LOG_FILE_NAME);
    assert!(path.is_file());
    path
}

/// The value after `label` on the script's output line that starts with it.
fn labelled<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no `{label}` line in:\n{out}"))
        .trim()
}

#[tokio::test]
async fn seven_day_summary_reads_our_log() {
    if !have_python() {
        return;
    }
    let now = audit::local_now();
    let entries = known_entries(now);
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), &entries).await;

    let cutoff = now - Duration::days(7);
    let (want_in, want_out) = entries
        .iter()
        .filter(|e| e.timestamp > cutoff)
        .fold((0, 0), |(i, o), e| {
            (i + e.tokens.input, o + e.tokens.output)
        });
    // The log holds more than the window, so a filter that is not applied shows up.
    let all_in: u64 = entries.iter().map(|e| e.tokens.input).sum();
    assert!(want_in > 0 && want_in < all_in);

    let out = run_script("seven_day_summary.py", Some(&path), None);
    assert_eq!(int(labelled(&out, "输入 Token:")), want_in, "{out}");
    assert_eq!(int(labelled(&out, "输出 Token:")), want_out, "{out}");
    assert_eq!(int(labelled(&out, "总计:")), want_in + want_out, "{out}");
    let ratio = format!("{:.1}:1", want_in as f64 / want_out.max(1) as f64);
    assert_eq!(labelled(&out, "输入/输出比:"), ratio, "{out}");
}

#[tokio::test]
async fn seven_day_summary_skips_aware_timestamps() {
    // Why `timestamp` is naive: the same line with an offset counts for nothing in the chapter's
    // script. This guards the test above against passing for the wrong reason.
    if !have_python() {
        return;
    }
    let now = audit::local_now();
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), &[entry(1, now, "gpt-4o", 1234, 56)]).await;
    let naive = run_script("seven_day_summary.py", Some(&path), None);
    assert_eq!(int(labelled(&naive, "总计:")), 1290, "{naive}");

    let line = std::fs::read_to_string(&path).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    let ts = v["timestamp"].as_str().unwrap().to_string();
    v["timestamp"] = serde_json::Value::String(format!("{ts}+00:00"));
    let aware = dir.path().join("aware.jsonl");
    std::fs::write(&aware, format!("{v}\n")).unwrap();
    let out = run_script("seven_day_summary.py", Some(&aware), None);
    assert_eq!(int(labelled(&out, "总计:")), 0, "{out}");
}

#[derive(Debug, Default, Clone, PartialEq)]
struct Row {
    calls: u64,
    input: u64,
    output: u64,
    cost: f64,
}

#[tokio::test]
async fn cost_tracker_reads_our_log() {
    if !have_python() {
        return;
    }
    let now = audit::local_now();
    let entries = known_entries(now);
    let home = tempfile::tempdir().unwrap();
    let logs = home.path().join(".openclaw/logs");
    write_log(&logs, &entries).await;

    let mut want: BTreeMap<String, Row> = BTreeMap::new();
    for e in entries.iter().filter(|e| same_month(e.timestamp, now)) {
        let row = want.entry(e.model.clone()).or_default();
        row.calls += 1;
        row.input += e.tokens.input;
        row.output += e.tokens.output;
        row.cost += e.cost_usd;
    }
    assert_eq!(want.len(), CHAPTER_MODELS.len());
    assert!(want.values().map(|r| r.calls).sum::<u64>() < entries.len() as u64);
    let want_total: f64 = want.values().map(|r| r.cost).sum();

    let out = run_script("openclaw-cost-tracker.py", None, Some(home.path()));
    if !same_month(audit::local_now(), now) {
        eprintln!("SKIPPED: the month changed while the test ran");
        return;
    }
    assert!(
        out.contains(&now.format("(%Y-%m)").to_string()),
        "report is not for this month:\n{out}"
    );

    // Rows sit between the two dashed rules; the 合计 line follows the second.
    let rule = "-".repeat(72);
    let mut sections = out.split(rule.as_str());
    let rows_text = sections
        .nth(1)
        .unwrap_or_else(|| panic!("no table:\n{out}"));
    let mut got: BTreeMap<String, Row> = BTreeMap::new();
    for line in rows_text.lines().filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols.len(), 5, "row `{line}`");
        got.insert(
            cols[0].to_string(),
            Row {
                calls: int(cols[1]),
                input: int(cols[2]),
                output: int(cols[3]),
                cost: cols[4].parse().unwrap(),
            },
        );
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{out}"
    );
    for (model, w) in &want {
        let g = &got[model];
        assert_eq!(
            (g.calls, g.input, g.output),
            (w.calls, w.input, w.output),
            "{model}\n{out}"
        );
        // Printed with two decimals; our per-line cost_usd uses the same prices as the script.
        assert!(
            (g.cost - w.cost).abs() <= 0.0051,
            "{model}: {g:?} vs {w:?}\n{out}"
        );
    }

    let total_line = sections
        .next()
        .and_then(|s| s.lines().find(|l| l.trim_start().starts_with("合计")))
        .unwrap_or_else(|| panic!("no 合计 line:\n{out}"));
    let total: f64 = total_line
        .split_whitespace()
        .last()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (total - want_total).abs() <= 0.0051,
        "{total} vs {want_total}\n{out}"
    );

    let projection: f64 = labelled(&out, "💡 预估月底总费用: $").parse().unwrap();
    let want_projection = want_total * 30.0 / f64::from(now.day());
    assert!((projection - want_projection).abs() <= 0.011, "{out}");
}

#[test]
fn read_entries_agrees_with_what_was_written() {
    // The `tokens` / `cost` commands read the same file back through `read_entries`.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let now = audit::local_now();
    let entries = known_entries(now);
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(write_log(dir.path(), &entries));
    let back = audit::read_entries(dir.path()).unwrap();
    assert_eq!(back.len(), entries.len());
    for (got, want) in back.iter().zip(&entries) {
        // serde_json's float parsing may differ from the written value in the last bit.
        assert!((got.cost_usd - want.cost_usd).abs() <= want.cost_usd * 1e-12);
        let got = AuditEntry {
            cost_usd: want.cost_usd,
            ..got.clone()
        };
        assert_eq!(&got, want);
    }
}

#[test]
fn chapter_prices_match_our_defaults() {
    // The cost tracker hard-codes the chapter's prices; ours come from config defaults.
    let script = std::fs::read_to_string(scripts_dir().join("openclaw-cost-tracker.py")).unwrap();
    for model in CHAPTER_MODELS {
        let (pin, pout) = price(model);
        let line = format!("\"{model}\": {{\"input\": {pin:.2}, \"output\": {pout:.2}}}");
        assert!(script.contains(&line), "{line}");
    }
}

// ---------------------------------------------------------------------------------------------
// monitoring/
// ---------------------------------------------------------------------------------------------

fn read_repo(rel: &str) -> String {
    std::fs::read_to_string(repo_file(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn alert_rules_are_the_chapters() {
    let rules = read_repo("monitoring/alert_rules.yml");
    let want = [
        (
            "HighErrorRate",
            "rate(openclaw_model_errors_total[5m]) > 0.1",
        ),
        ("QueueBacklog", "sum(openclaw_queue_depth) > 50"),
        (
            "TokenBudgetWarning",
            "sum(increase(openclaw_tokens_consumed_total[1h])) > 500000",
        ),
        (
            "HighLatency",
            "histogram_quantile(0.95, rate(openclaw_request_duration_seconds_bucket[5m])) > 60",
        ),
        ("GatewayDown", "up{job=\"openclaw-gateway\"} == 0"),
    ];
    for (alert, expr) in want {
        assert!(rules.contains(&format!("- alert: {alert}\n")), "{alert}");
        assert!(
            rules.contains(&format!("expr: {expr}\n")),
            "{alert}: {expr}"
        );
    }
    for text in ["任务队列积压", "Gateway 节点离线", "severity: critical"] {
        assert!(rules.contains(text), "{text}");
    }
    assert!(!rules.contains('\t'), "YAML must not contain tabs");
}

#[test]
fn prometheus_scrapes_the_three_gateways() {
    let cfg = read_repo("monitoring/prometheus.yml");
    for text in [
        "\"alert_rules.yml\"",
        "job_name: \"openclaw-gateway\"",
        "\"gateway-1:3000\"",
        "\"gateway-2:3000\"",
        "\"gateway-3:3000\"",
        "metrics_path: \"/metrics\"",
    ] {
        assert!(cfg.contains(text), "{text}");
    }
    assert!(!cfg.contains('\t'));
}

#[test]
fn dashboard_is_valid_json_with_the_chapter_panels() {
    let text = read_repo("monitoring/grafana/dashboards/openclaw.json");
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dash["uid"], "openclaw");
    let panels = dash["panels"].as_array().unwrap();
    let exprs: Vec<&str> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    for want in [
        "rate(openclaw_requests_total[5m])",
        "rate(openclaw_tokens_consumed_total[1h])",
        "histogram_quantile(0.99, sum by (le) (rate(openclaw_request_duration_seconds_bucket[5m])))",
        "sum(openclaw_queue_depth)",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(want)),
            "{want} not in {exprs:?}"
        );
    }
    // Queue depth thresholds 10 (yellow) and 50 (red), as in the chapter.
    let steps: Vec<(Option<f64>, &str)> = panels
        .iter()
        .filter(|p| p["type"] == "gauge")
        .flat_map(|p| {
            p["fieldConfig"]["defaults"]["thresholds"]["steps"]
                .as_array()
                .into_iter()
                .flatten()
        })
        .map(|s| (s["value"].as_f64(), s["color"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        steps,
        [(None, "green"), (Some(10.0), "yellow"), (Some(50.0), "red")]
    );
    let provider = read_repo("monitoring/grafana/dashboards/dashboards.yml");
    assert!(provider.contains("apiVersion: 1") && provider.contains("providers:"));
}

#[test]
fn monitoring_uses_only_metrics_we_export() {
    // Every openclaw_* name in monitoring/ must be one the node renders.
    let m = openclaw_server::metrics::metrics();
    m.observe_request("tasks", 200, 0.01);
    m.observe_model_call("gpt-4o", 1, 1, 0.0, 0.1);
    m.observe_model_error("gpt-4o", "timeout");
    m.task_queue_wait_seconds
        .with_label_values(&["normal"])
        .observe(0.1);
    let exported = openclaw_server::metrics::render();
    for rel in [
        "monitoring/alert_rules.yml",
        "monitoring/grafana/dashboards/openclaw.json",
    ] {
        let text = read_repo(rel);
        for (pos, _) in text.match_indices("openclaw_") {
            let name: String = text[pos..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name == "openclaw_alerts" {
                continue; // the rule group's name
            }
            let base = name
                .strip_suffix("_bucket")
                .or_else(|| name.strip_suffix("_sum"))
                .or_else(|| name.strip_suffix("_count"))
                .unwrap_or(&name);
            assert!(
                exported.contains(&format!("# TYPE {base} ")),
                "{rel}: `{name}` is not exported"
            );
        }
    }
}

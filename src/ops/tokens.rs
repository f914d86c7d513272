//! `openclaw-node tokens [--days N]`: the chapter's daily token table (§18.1) from the audit log.
//!
//! Window: the last N **local calendar days**, today included (`--days 7` = today and the six
//! days before). The chapter's script uses a rolling `now - N days` cut-off instead, which starts
//! its first row in the middle of a day; whole days make each row comparable.
//! Counting follows the chapter's scripts: every line is a call and its tokens count, whatever
//! its status (a failed call's tokens are 0 in practice, but a provider that billed a partial
//! answer is billed here too). Failed calls (`status` other than `ok`) and cache hits (0 tokens)
//! are also counted in their own columns, so an average dragged down by them can be explained.
//! `avg per call` is `(input + output) / calls`, integer division, as in the chapter; the ratio is
//! `input / max(output, 1)` printed `N.N:1`, as in `seven_day_summary.py`.
//! Calls the built-in simulator answered (audit `provider: "sim"`) count like the others and are
//! also totalled apart (`simulated`), so simulated traffic is not taken for real usage.

use std::collections::BTreeMap;

use chrono::{Duration, NaiveDate};
use serde::Serialize;

use crate::cli::TokensArgs;
use openclaw_server::audit::{AuditEntry, CacheOutcome, STATUS_OK};

use super::{render_table, thousands, Align};

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DayRow {
    /// `YYYY-MM-DD`, local.
    pub date: String,
    pub input: u64,
    pub output: u64,
    pub calls: u64,
    pub errors: u64,
    pub cache_hits: u64,
    pub avg_per_call: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub input: u64,
    pub output: u64,
    pub calls: u64,
    pub errors: u64,
    pub cache_hits: u64,
    pub avg_per_call: u64,
}

/// Calls answered by the built-in simulator (no real provider).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Simulated {
    pub calls: u64,
    pub input: u64,
    pub output: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenReport {
    pub from: String,
    pub to: String,
    /// Days with at least one call, oldest first (like the chapter's table).
    pub days: Vec<DayRow>,
    pub total: Totals,
    /// The part of `total` the built-in simulator answered.
    pub simulated: Simulated,
    /// `input / max(output, 1)`.
    pub ratio: f64,
    /// The chapter's `N.N:1`.
    pub ratio_text: String,
}

/// Aggregate `entries` per local day over `[today - (days-1), today]`.
pub fn report(entries: &[AuditEntry], today: NaiveDate, days: u32) -> TokenReport {
    let days = days.max(1);
    let from = today - Duration::days(i64::from(days) - 1);
    let mut by_day: BTreeMap<NaiveDate, DayRow> = BTreeMap::new();
    let mut simulated = Simulated::default();
    for e in entries {
        let d = e.timestamp.date();
        if d < from || d > today {
            continue;
        }
        if e.provider == super::cost::SIMULATED {
            simulated.calls += 1;
            simulated.input += e.tokens.input;
            simulated.output += e.tokens.output;
        }
        let row = by_day.entry(d).or_default();
        row.input += e.tokens.input;
        row.output += e.tokens.output;
        row.calls += 1;
        if e.status != STATUS_OK {
            row.errors += 1;
        }
        if e.cache == CacheOutcome::Hit {
            row.cache_hits += 1;
        }
    }
    let mut total = Totals::default();
    let days: Vec<DayRow> = by_day
        .into_iter()
        .map(|(d, mut row)| {
            row.date = d.format("%Y-%m-%d").to_string();
            row.avg_per_call = (row.input + row.output) / row.calls.max(1);
            total.input += row.input;
            total.output += row.output;
            total.calls += row.calls;
            total.errors += row.errors;
            total.cache_hits += row.cache_hits;
            row
        })
        .collect();
    total.avg_per_call = (total.input + total.output) / total.calls.max(1);
    let ratio = total.input as f64 / total.output.max(1) as f64;
    TokenReport {
        from: from.format("%Y-%m-%d").to_string(),
        to: today.format("%Y-%m-%d").to_string(),
        days,
        simulated,
        ratio,
        ratio_text: format!("{ratio:.1}:1"),
        total,
    }
}

/// The readable table.
pub fn render(r: &TokenReport) -> String {
    let headers = [
        ("date", Align::Left),
        ("input", Align::Right),
        ("output", Align::Right),
        ("calls", Align::Right),
        ("avg per call", Align::Right),
        ("errors", Align::Right),
        ("cache hits", Align::Right),
    ];
    let mut rows: Vec<Vec<String>> = r
        .days
        .iter()
        .map(|d| {
            vec![
                d.date.clone(),
                thousands(d.input),
                thousands(d.output),
                thousands(d.calls),
                thousands(d.avg_per_call),
                thousands(d.errors),
                thousands(d.cache_hits),
            ]
        })
        .collect();
    let t = &r.total;
    rows.push(vec![
        "total".into(),
        thousands(t.input),
        thousands(t.output),
        thousands(t.calls),
        thousands(t.avg_per_call),
        thousands(t.errors),
        thousands(t.cache_hits),
    ]);
    let mut out = format!(
        "Tokens {} .. {} (local dates)\n{}input/output ratio: {}\n",
        r.from,
        r.to,
        render_table(&headers, &rows),
        r.ratio_text
    );
    let sim = &r.simulated;
    if sim.calls > 0 {
        out.push_str(&format!(
            "of which simulated (built-in simulator, no provider key set): {} calls, {} input, {} output\n",
            thousands(sim.calls),
            thousands(sim.input),
            thousands(sim.output)
        ));
    }
    out
}

pub fn run(args: TokensArgs) -> anyhow::Result<i32> {
    let loc = super::Resolved::of(&args.location);
    let logs = openclaw_server::audit::logs_dir(&loc.data_dir);
    let entries = openclaw_server::audit::read_entries(&logs)
        .map_err(|e| anyhow::anyhow!("reading the audit log in {}: {e}", logs.display()))?;
    let r = report(
        &entries,
        openclaw_server::audit::local_now().date(),
        args.days,
    );
    if args.json {
        super::print_json(&r)?;
    } else {
        print!("{}", render(&r));
    }
    Ok(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use chrono::NaiveDateTime;
    use openclaw_proto::api::TokenCounts;
    use openclaw_proto::Priority;

    pub fn entry(ts: &str, model: &str, input: u64, output: u64, status: &str) -> AuditEntry {
        AuditEntry {
            timestamp: NaiveDateTime::parse_from_str(ts, "%Y-%m-%dT%H:%M:%S%.f").unwrap(),
            node: "n".into(),
            task_id: None,
            request_id: "r".into(),
            agent: "main".into(),
            source: "api_call".into(),
            priority: Priority::Normal,
            model: model.into(),
            provider: "sim".into(),
            tokens: TokenCounts { input, output },
            cost_usd: 0.0,
            latency_ms: 1,
            cache: if input == 0 && output == 0 && status == "ok" {
                CacheOutcome::Hit
            } else {
                CacheOutcome::Miss
            },
            status: status.into(),
            attempt: 1,
            fallback_from: None,
            purpose: None,
        }
    }

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn days_are_local_calendar_days_with_midnight_edges() {
        let entries = vec![
            entry("2026-11-16T23:59:59.999999", "m", 1000, 1000, "ok"), // 8 days back: out
            entry("2026-11-17T00:00:00.000000", "m", 300, 100, "ok"),   // first day: in
            entry("2026-11-17T23:59:59.999999", "m", 100, 0, "ok"),
            entry("2026-11-23T00:00:00.000001", "m", 50, 25, "ok"),
            entry("2026-11-23T12:00:00.000000", "m", 0, 0, "timeout"), // failed call
            entry("2026-11-23T12:00:01.000000", "m", 0, 0, "ok"),      // cache hit
            entry("2026-11-24T00:00:00.000000", "m", 9999, 9999, "ok"), // tomorrow: out
        ];
        let r = report(&entries, day("2026-11-23"), 7);
        assert_eq!(r.from, "2026-11-17");
        assert_eq!(r.days.len(), 2, "{r:?}");
        assert_eq!(
            r.days[0],
            DayRow {
                date: "2026-11-17".into(),
                input: 400,
                output: 100,
                calls: 2,
                errors: 0,
                cache_hits: 0,
                avg_per_call: 250,
            }
        );
        assert_eq!(
            (r.days[1].calls, r.days[1].errors, r.days[1].cache_hits),
            (3, 1, 1)
        );
        assert_eq!(r.days[1].avg_per_call, 75 / 3);
        assert_eq!(
            (r.total.input, r.total.output, r.total.calls),
            (450, 125, 5)
        );
        assert_eq!(r.ratio_text, "3.6:1");
    }

    #[test]
    fn ratio_and_empty_windows() {
        let r = report(&[], day("2026-03-01"), 1);
        assert_eq!(
            (r.from.as_str(), r.to.as_str()),
            ("2026-03-01", "2026-03-01")
        );
        assert!(r.days.is_empty());
        assert_eq!(r.ratio_text, "0.0:1");
        // No output at all: divide by 1, like the chapter's max(total_out, 1).
        let r = report(
            &[entry("2026-03-01T10:00:00.0", "m", 12, 0, "ok")],
            day("2026-03-01"),
            1,
        );
        assert_eq!(r.ratio_text, "12.0:1");
        // --days 0 is treated as 1 (today).
        assert_eq!(report(&[], day("2026-03-01"), 0).from, "2026-03-01");
        // Across a month edge: 2026-02-28 is 2 days before 2026-03-01 is out of a 2-day window.
        let e = [
            entry("2026-02-28T23:59:59.0", "m", 7, 7, "ok"),
            entry("2026-02-28T23:59:59.0", "m", 1, 1, "ok"),
        ];
        assert_eq!(report(&e, day("2026-03-01"), 2).total.calls, 2);
        assert_eq!(report(&e, day("2026-03-02"), 2).total.calls, 0);
    }

    #[test]
    fn table_has_the_chapter_columns_and_ratio() {
        let r = report(
            &[entry("2026-11-23T10:00:00.0", "m", 1_234_567, 1000, "ok")],
            day("2026-11-23"),
            7,
        );
        let t = render(&r);
        assert!(t.contains("date"), "{t}");
        assert!(t.contains("avg per call"), "{t}");
        assert!(t.contains("1,234,567"), "{t}");
        assert!(t.contains("input/output ratio: 1234.6:1"), "{t}");
    }

    #[test]
    fn simulated_calls_are_totalled_apart() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 2).unwrap();
        let sim = entry("2026-11-02T01:00:00.0", "gpt-4o", 10, 5, "ok");
        let mut real = entry("2026-11-02T02:00:00.0", "gpt-4o", 100, 50, "ok");
        real.provider = "openai".into();
        let r = report(&[sim, real], today, 7);
        assert_eq!((r.total.input, r.total.output), (110, 55));
        assert_eq!(
            r.simulated,
            Simulated {
                calls: 1,
                input: 10,
                output: 5
            }
        );
        assert!(render(&r).contains("of which simulated"), "{}", render(&r));
    }
}

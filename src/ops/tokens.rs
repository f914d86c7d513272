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
//!
//! `--breakdown` ([`breakdown`]): where the tokens of the same days went, by the components of
//! §18.1's table — system prompt, memory, tools, history, summary, user input, output — beside
//! the chapter's typical shares. A task's audit line carries its prompt's components as the
//! gateway estimated them (`prompt`); each line's provider-counted `tokens.input` is split in
//! those proportions, so the components add up to what was billed. Lines without components
//! (direct `/v1` calls, summary calls, lines written before the field) count as
//! `unattributed`. The `saved` tokens the context layer kept out of the prompts are summed
//! beside them: `saved / (saved + attributed prompt tokens)` is how much smaller it made them.

use std::collections::BTreeMap;

use chrono::{Duration, NaiveDate};
use serde::Serialize;

use crate::cli::TokensArgs;
use openclaw_server::audit::{AuditEntry, CacheOutcome, STATUS_OK};

/// §18.1's typical share of each component, in percent (low, high); `None` where the chapter
/// has no row (the summary is part of its "history"; unattributed is ours).
pub const TYPICAL_SHARES: [(&str, Option<(u32, u32)>); 8] = [
    ("system", Some((15, 25))),
    ("memory", Some((10, 20))),
    ("tools", Some((10, 15))),
    ("history", Some((30, 40))),
    ("summary", None),
    ("input", Some((5, 10))),
    ("output", Some((10, 20))),
    ("unattributed", None),
];

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

/// One component's row of the breakdown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentRow {
    pub component: &'static str,
    pub tokens: u64,
    /// Of all tokens (input + output) over the period, 0..=1.
    pub share: f64,
    /// The chapter's typical share in percent, `[low, high]`.
    pub typical: Option<(u32, u32)>,
    /// `below`, `within` or `above` the typical share; `None` without one or without tokens.
    pub versus_typical: Option<&'static str>,
}

/// `openclaw-node tokens --breakdown`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Breakdown {
    pub from: String,
    pub to: String,
    pub calls: u64,
    /// Calls whose line carries the prompt's components.
    pub calls_with_components: u64,
    /// Input + output tokens over the period (the provider's counts).
    pub total: u64,
    pub components: Vec<ComponentRow>,
    /// Tokens the context layer kept out of the prompts (window, summary, compression).
    pub saved: u64,
    /// `saved / (saved + prompt tokens of the calls with components)`, 0..=1.
    pub saved_share: f64,
}

/// Where the tokens of `entries` over `[today - (days-1), today]` went (see the module doc).
pub fn breakdown(entries: &[AuditEntry], today: NaiveDate, days: u32) -> Breakdown {
    let days = days.max(1);
    let from = today - Duration::days(i64::from(days) - 1);
    // system, memory, tools, history, summary, input, output, unattributed
    let mut acc = [0f64; 8];
    let (mut calls, mut with, mut total, mut saved, mut attributed_in) = (0u64, 0u64, 0, 0, 0);
    for e in entries {
        let d = e.timestamp.date();
        if d < from || d > today {
            continue;
        }
        calls += 1;
        total += e.tokens.input + e.tokens.output;
        acc[6] += e.tokens.output as f64;
        let Some(p) = e.prompt.filter(|p| p.total() > 0) else {
            acc[7] += e.tokens.input as f64;
            continue;
        };
        with += 1;
        saved += p.saved;
        attributed_in += e.tokens.input;
        let scale = e.tokens.input as f64 / p.total() as f64;
        for (i, part) in [p.system, p.memory, p.tools, p.history, p.summary, p.input]
            .into_iter()
            .enumerate()
        {
            acc[i] += part as f64 * scale;
        }
    }
    let components = TYPICAL_SHARES
        .iter()
        .zip(acc)
        .map(|((name, typical), tokens)| {
            let tokens = tokens.round() as u64;
            let share = if total == 0 {
                0.0
            } else {
                tokens as f64 / total as f64
            };
            let pct = share * 100.0;
            let versus_typical = match typical {
                Some((lo, hi)) if tokens > 0 => Some(if pct < f64::from(*lo) {
                    "below"
                } else if pct > f64::from(*hi) {
                    "above"
                } else {
                    "within"
                }),
                _ => None,
            };
            ComponentRow {
                component: name,
                tokens,
                share,
                typical: *typical,
                versus_typical,
            }
        })
        .collect();
    let before = saved + attributed_in;
    Breakdown {
        from: from.format("%Y-%m-%d").to_string(),
        to: today.format("%Y-%m-%d").to_string(),
        calls,
        calls_with_components: with,
        total,
        components,
        saved,
        saved_share: if before == 0 {
            0.0
        } else {
            saved as f64 / before as f64
        },
    }
}

/// The readable breakdown.
pub fn render_breakdown(b: &Breakdown) -> String {
    let rows: Vec<Vec<String>> = b
        .components
        .iter()
        .map(|c| {
            vec![
                c.component.to_string(),
                thousands(c.tokens),
                format!("{:.1}%", c.share * 100.0),
                c.typical
                    .map(|(lo, hi)| format!("{lo}-{hi}%"))
                    .unwrap_or_else(|| "-".into()),
                c.versus_typical.unwrap_or("-").to_string(),
            ]
        })
        .collect();
    let mut out = format!(
        "Where the tokens went, {} .. {} (local dates): {} tokens over {} calls
",
        b.from,
        b.to,
        thousands(b.total),
        thousands(b.calls)
    );
    out.push_str(&render_table(
        &[
            ("component", Align::Left),
            ("tokens", Align::Right),
            ("share", Align::Right),
            ("typical (§18.1)", Align::Right),
            ("vs typical", Align::Left),
        ],
        &rows,
    ));
    out.push_str(&format!(
        "{} of {} calls carry their prompt's components; each call's billed input is split in \
         their proportions. unattributed: direct /v1 calls, summary calls, older lines.
",
        thousands(b.calls_with_components),
        thousands(b.calls)
    ));
    if b.saved > 0 {
        out.push_str(&format!(
            "context layer: {} tokens kept out of the prompts ({:.1}% smaller than without it)
",
            thousands(b.saved),
            b.saved_share * 100.0
        ));
    } else {
        out.push_str(
            "context layer: no tokens kept out of the prompts over the period
",
        );
    }
    out
}

pub fn run(args: TokensArgs) -> anyhow::Result<i32> {
    let loc = super::Resolved::of(&args.location);
    let logs = openclaw_server::audit::logs_dir(&loc.data_dir);
    let entries = openclaw_server::audit::read_entries(&logs)
        .map_err(|e| anyhow::anyhow!("reading the audit log in {}: {e}", logs.display()))?;
    if args.breakdown {
        let b = breakdown(
            &entries,
            openclaw_server::audit::local_now().date(),
            args.days,
        );
        if args.json {
            super::print_json(&b)?;
        } else {
            print!("{}", render_breakdown(&b));
        }
        return Ok(0);
    }
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
            cache_score: None,
            status: status.into(),
            attempt: 1,
            fallback_from: None,
            prompt: None,
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
        // An embeddings call counts its input tokens like any call (and no output).
        let mut emb = entry(
            "2026-11-02T03:00:00.0",
            "text-embedding-3-small",
            7,
            0,
            "ok",
        );
        emb.purpose = Some("embedding".into());
        let with_emb = report(&[sim.clone(), real.clone(), emb], today, 7);
        assert_eq!((with_emb.total.input, with_emb.total.output), (117, 55));
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

    fn with_prompt(mut e: AuditEntry, parts: [u64; 6], saved: u64) -> AuditEntry {
        let [system, memory, tools, history, summary, input] = parts;
        e.prompt = Some(openclaw_server::audit::AuditPrompt {
            system,
            memory,
            tools,
            history,
            summary,
            input,
            saved,
        });
        e
    }

    fn tokens_of(b: &Breakdown) -> Vec<(&'static str, u64)> {
        b.components
            .iter()
            .map(|c| (c.component, c.tokens))
            .collect()
    }

    #[test]
    fn breakdown_splits_billed_input_by_the_components() {
        let today = day("2026-11-23");
        // (lines, expected tokens per component, saved, saved share)
        type Case = (Vec<AuditEntry>, [u64; 8], u64, f64);
        let at = "2026-11-23T10:00:00.0";
        let cases: Vec<Case> = vec![
            (vec![], [0; 8], 0, 0.0),
            // Estimates equal to the billed input: taken as they are.
            (
                vec![with_prompt(
                    entry(at, "m", 100, 30, "ok"),
                    [20, 10, 10, 40, 0, 20],
                    0,
                )],
                [20, 10, 10, 40, 0, 20, 30, 0],
                0,
                0.0,
            ),
            // The provider counted twice the estimate: every component doubles.
            (
                vec![with_prompt(
                    entry(at, "m", 200, 10, "ok"),
                    [20, 10, 10, 30, 10, 20],
                    100,
                )],
                [40, 20, 20, 60, 20, 40, 10, 0],
                100,
                100.0 / 300.0,
            ),
            // A line without components (a /v1 call) is unattributed; its output still counts.
            (
                vec![
                    entry(at, "m", 70, 5, "ok"),
                    with_prompt(entry(at, "m", 10, 5, "ok"), [0, 0, 0, 0, 0, 10], 0),
                ],
                [0, 0, 0, 0, 0, 10, 10, 70],
                0,
                0.0,
            ),
            // A failed call (0 tokens) and a cache hit attribute nothing; all-zero components
            // count as unattributed; a line outside the period is left out.
            (
                vec![
                    with_prompt(entry(at, "m", 0, 0, "timeout"), [5, 5, 5, 5, 5, 5], 9),
                    with_prompt(entry(at, "m", 40, 0, "ok"), [0; 6], 0),
                    with_prompt(
                        entry("2026-11-10T10:00:00.0", "m", 999, 999, "ok"),
                        [1, 1, 1, 1, 1, 1],
                        999,
                    ),
                ],
                [0, 0, 0, 0, 0, 0, 0, 40],
                9,
                1.0,
            ),
        ];
        for (lines, want, saved, share) in cases {
            let b = breakdown(&lines, today, 7);
            let names: Vec<&str> = TYPICAL_SHARES.iter().map(|(n, _)| *n).collect();
            let want: Vec<(&str, u64)> = names.into_iter().zip(want).collect();
            assert_eq!(tokens_of(&b), want, "{lines:?}");
            assert_eq!(b.saved, saved);
            assert!((b.saved_share - share).abs() < 1e-9, "{b:?}");
            let sum: u64 = b.components.iter().map(|c| c.tokens).sum();
            assert_eq!(sum, b.total, "components add up to the billed tokens");
        }
    }

    #[test]
    fn breakdown_sits_beside_the_chapter_shares() {
        // A prompt in the chapter's proportions: 20% system, 15% memory, 12% tools, 35%
        // history, 8% input, 10% output. All within; then history above, tools below.
        let e = with_prompt(
            entry("2026-11-23T09:00:00.0", "m", 900, 100, "ok"),
            [200, 150, 120, 350, 0, 80],
            0,
        );
        let b = breakdown(&[e], day("2026-11-23"), 1);
        let verdicts: Vec<(&str, Option<&str>)> = b
            .components
            .iter()
            .map(|c| (c.component, c.versus_typical))
            .collect();
        assert_eq!(
            verdicts,
            [
                ("system", Some("within")),
                ("memory", Some("within")),
                ("tools", Some("within")),
                ("history", Some("within")),
                ("summary", None),
                ("input", Some("within")),
                ("output", Some("within")),
                ("unattributed", None),
            ]
        );
        let e = with_prompt(
            entry("2026-11-23T09:00:00.0", "m", 900, 100, "ok"),
            [200, 150, 20, 450, 0, 80],
            300,
        );
        let b = breakdown(&[e], day("2026-11-23"), 1);
        let v = |name: &str| {
            b.components
                .iter()
                .find(|c| c.component == name)
                .and_then(|c| c.versus_typical)
        };
        assert_eq!((v("history"), v("tools")), (Some("above"), Some("below")));
        let t = render_breakdown(&b);
        assert!(t.contains("typical (§18.1)"), "{t}");
        assert!(t.contains("30-40%"), "{t}");
        assert!(t.contains("45.0%"), "{t}");
        assert!(
            t.contains("300 tokens kept out of the prompts (25.0% smaller"),
            "{t}"
        );
        let t = render_breakdown(&breakdown(&[], day("2026-11-23"), 1));
        assert!(t.contains("no tokens kept out"), "{t}");
    }
}

//! `openclaw-node cost [--month YYYY-MM]`: the chapter's monthly cost report (§18.7) at the
//! **configured** prices (`models.<name>.price`, USD per 1M tokens), read from the audit log.
//!
//! Per model: calls, input, output, errors, cost; sorted by cost (highest first), then name. A
//! model that is not in the config any more has no price: it is listed as `unpriced` and left out
//! of the total (the chapter's script silently prices it at 1.0/3.0; a made-up number in a cost
//! report is worse than a visible gap). Every line counts, as in the chapter's script.
//! Projection, for the current month only: `total × days_in_month / day_of_month`. The chapter
//! uses `× 30 / day`, which under-projects 31-day months and over-projects February; the real
//! month length costs nothing and is what "month-end" means. A past or future month has no
//! projection.
//!
//! Simulated spend is shown apart: calls the built-in simulator answered (audit `provider:
//! "sim"`, a model with no API key) cost nothing real. They are in the per-model rows and the
//! total (priced as if real, which is what the same traffic would cost), and the report says how
//! much of it was simulated and how much was real provider spend. Amounts print with enough
//! decimals to show small spend ([`usd`]).

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use serde::Serialize;

use crate::cli::CostArgs;
use openclaw_server::audit::{AuditEntry, STATUS_OK};
use openclaw_server::config::Config;

use super::{render_table, thousands, Align};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelRow {
    pub model: String,
    pub calls: u64,
    pub input: u64,
    pub output: u64,
    pub errors: u64,
    /// USD; `None` when the model has no configured price.
    pub cost_usd: Option<f64>,
    /// Calls of this model the built-in simulator answered (no real provider billed).
    pub simulated_calls: u64,
    /// The part of `cost_usd` that was simulated.
    pub simulated_cost_usd: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostReport {
    /// `YYYY-MM`.
    pub month: String,
    pub models: Vec<ModelRow>,
    pub total_calls: u64,
    pub total_input: u64,
    pub total_output: u64,
    /// Sum over priced models.
    pub total_cost_usd: f64,
    /// The part of the total the simulator answered (no real spend).
    pub simulated_cost_usd: f64,
    /// The part of the total real providers answered: `total - simulated`.
    pub real_cost_usd: f64,
    /// Models in the log without a configured price.
    pub unpriced: Vec<String>,
    /// Month-end projection (current month only).
    pub projected_month_end_usd: Option<f64>,
}

/// Parse `YYYY-MM` into the month's first day.
pub fn parse_month(s: &str) -> Option<NaiveDate> {
    let (y, m) = s.split_once('-')?;
    if y.len() != 4 || m.len() != 2 {
        return None;
    }
    NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, 1)
}

/// Days in the month of `d`.
pub fn days_in_month(d: NaiveDate) -> u32 {
    let first = NaiveDate::from_ymd_opt(d.year(), d.month(), 1);
    let next = if d.month() == 12 {
        NaiveDate::from_ymd_opt(d.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(d.year(), d.month() + 1, 1)
    };
    match (first, next) {
        (Some(a), Some(b)) => (b - a).num_days() as u32,
        _ => 30,
    }
}

/// Aggregate the entries of `month` (its first day) at `cfg`'s prices; `today` decides whether
/// a projection applies.
pub fn report(
    entries: &[AuditEntry],
    cfg: &Config,
    month: NaiveDate,
    today: NaiveDate,
) -> CostReport {
    #[derive(Default)]
    struct Acc {
        calls: u64,
        input: u64,
        output: u64,
        errors: u64,
        sim_calls: u64,
        sim_input: u64,
        sim_output: u64,
    }
    let mut by_model: BTreeMap<&str, Acc> = BTreeMap::new();
    for e in entries {
        let d = e.timestamp.date();
        if (d.year(), d.month()) != (month.year(), month.month()) {
            continue;
        }
        let a = by_model.entry(e.model.as_str()).or_default();
        a.calls += 1;
        a.input += e.tokens.input;
        a.output += e.tokens.output;
        if e.status != STATUS_OK {
            a.errors += 1;
        }
        if e.provider == SIMULATED {
            a.sim_calls += 1;
            a.sim_input += e.tokens.input;
            a.sim_output += e.tokens.output;
        }
    }
    let mut models: Vec<ModelRow> = by_model
        .into_iter()
        .map(|(m, a)| ModelRow {
            model: m.to_string(),
            cost_usd: cfg.models.get(m).map(|c| c.price.cost(a.input, a.output)),
            simulated_calls: a.sim_calls,
            simulated_cost_usd: cfg
                .models
                .get(m)
                .map(|c| c.price.cost(a.sim_input, a.sim_output)),
            calls: a.calls,
            input: a.input,
            output: a.output,
            errors: a.errors,
        })
        .collect();
    models.sort_by(|a, b| {
        let ca = a.cost_usd.unwrap_or(-1.0);
        let cb = b.cost_usd.unwrap_or(-1.0);
        cb.total_cmp(&ca).then_with(|| a.model.cmp(&b.model))
    });
    // `+ 0.0`: an empty f64 sum is -0.0, which would print as "-0.00".
    let total_cost_usd: f64 = models.iter().filter_map(|m| m.cost_usd).sum::<f64>() + 0.0;
    let simulated_cost_usd: f64 = models
        .iter()
        .filter_map(|m| m.simulated_cost_usd)
        .sum::<f64>()
        + 0.0;
    let current = (today.year(), today.month()) == (month.year(), month.month());
    CostReport {
        month: month.format("%Y-%m").to_string(),
        total_calls: models.iter().map(|m| m.calls).sum(),
        total_input: models.iter().map(|m| m.input).sum(),
        total_output: models.iter().map(|m| m.output).sum(),
        unpriced: models
            .iter()
            .filter(|m| m.cost_usd.is_none())
            .map(|m| m.model.clone())
            .collect(),
        projected_month_end_usd: current.then(|| {
            total_cost_usd * f64::from(days_in_month(today)) / f64::from(today.day().max(1))
        }),
        total_cost_usd,
        simulated_cost_usd,
        real_cost_usd: (total_cost_usd - simulated_cost_usd).max(0.0),
        models,
    }
}

/// The audit log's `provider` of calls the built-in simulator answered.
pub const SIMULATED: &str = "sim";

/// A USD amount with enough decimals for small spend: 2 from $1, 4 from a cent, else 6
/// (so $0.0004 does not print as `0.00`).
pub fn usd(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0.00".into()
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a >= 0.01 {
        format!("{v:.4}")
    } else {
        format!("{v:.6}")
    }
}

pub fn render(r: &CostReport) -> String {
    let headers = [
        ("model", Align::Left),
        ("calls", Align::Right),
        ("input", Align::Right),
        ("output", Align::Right),
        ("errors", Align::Right),
        ("cost ($)", Align::Right),
        ("simulated", Align::Left),
    ];
    let mut rows: Vec<Vec<String>> = r
        .models
        .iter()
        .map(|m| {
            vec![
                m.model.clone(),
                thousands(m.calls),
                thousands(m.input),
                thousands(m.output),
                thousands(m.errors),
                m.cost_usd.map(usd).unwrap_or_else(|| "unpriced".into()),
                match (m.simulated_calls, m.simulated_cost_usd) {
                    (0, _) => "-".into(),
                    (n, _) if n == m.calls => "all".into(),
                    (n, Some(c)) => format!("{n} calls, {}", usd(c)),
                    (n, None) => format!("{n} calls"),
                },
            ]
        })
        .collect();
    rows.push(vec![
        "total".into(),
        thousands(r.total_calls),
        thousands(r.total_input),
        thousands(r.total_output),
        String::new(),
        usd(r.total_cost_usd),
        if r.simulated_cost_usd > 0.0 {
            usd(r.simulated_cost_usd)
        } else {
            "-".into()
        },
    ]);
    let mut out = format!(
        "Cost {} (configured prices, USD per 1M tokens)\n{}",
        r.month,
        render_table(&headers, &rows)
    );
    if !r.unpriced.is_empty() {
        out.push_str(&format!(
            "unpriced (not in models.*, left out of the total): {}\n",
            r.unpriced.join(", ")
        ));
    }
    let sim_calls: u64 = r.models.iter().map(|m| m.simulated_calls).sum();
    if sim_calls > 0 {
        out.push_str(&format!(
            "real provider spend: ${}; simulated: ${} ({sim_calls} calls answered by the built-in simulator, nothing billed)\n",
            usd(r.real_cost_usd),
            usd(r.simulated_cost_usd),
        ));
    }
    match r.projected_month_end_usd {
        Some(p) => out.push_str(&format!("projected month-end total: ${}\n", usd(p))),
        None => out.push_str("no projection (not the current month)\n"),
    }
    out
}

pub fn run(args: CostArgs) -> anyhow::Result<i32> {
    let loc = super::Resolved::of(&args.location);
    let cfg = loc.load()?;
    let today = openclaw_server::audit::local_now().date();
    let month = match &args.month {
        Some(m) => parse_month(m)
            .ok_or_else(|| anyhow::anyhow!("--month `{m}`: expected YYYY-MM, e.g. 2026-11"))?,
        None => today.with_day(1).unwrap_or(today),
    };
    let logs = openclaw_server::audit::logs_dir(&loc.data_dir);
    let entries = openclaw_server::audit::read_entries(&logs)
        .map_err(|e| anyhow::anyhow!("reading the audit log in {}: {e}", logs.display()))?;
    let r = report(&entries, &cfg, month, today);
    if args.json {
        super::print_json(&r)?;
    } else {
        print!("{}", render(&r));
    }
    Ok(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::tokens::tests::entry;
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn month_parsing_and_lengths() {
        assert_eq!(parse_month("2026-02"), Some(d("2026-02-01")));
        for bad in ["2026-13", "2026-2", "26-02", "2026/02", "", "abcd-ef"] {
            assert_eq!(parse_month(bad), None, "{bad}");
        }
        assert_eq!(days_in_month(d("2026-02-10")), 28);
        assert_eq!(days_in_month(d("2028-02-10")), 29);
        assert_eq!(days_in_month(d("2026-12-31")), 31);
        assert_eq!(days_in_month(d("2026-11-01")), 30);
    }

    #[test]
    fn embedding_lines_are_read_and_priced() {
        // An embeddings call's audit line as the gateway writes it: input tokens only, with
        // its purpose; the built-in embedding model is priced like any model.
        let mut e = entry(
            "2026-11-03T10:00:00.0",
            "text-embedding-3-small",
            1_000_000,
            0,
            "ok",
        );
        e.purpose = Some(openclaw_server::embeddings::EMBEDDING_PURPOSE.into());
        let line = serde_json::to_string(&e).unwrap();
        assert!(line.contains(r#""purpose":"embedding""#), "{line}");
        let back: AuditEntry = serde_json::from_str(&line).unwrap();
        let r = report(
            &[back],
            &Config::default(),
            d("2026-11-01"),
            d("2026-12-01"),
        );
        assert_eq!(r.models[0].model, "text-embedding-3-small");
        assert!((r.models[0].cost_usd.unwrap() - 0.02).abs() < 1e-9);
        assert_eq!(r.total_input, 1_000_000);
    }

    #[test]
    fn cost_at_configured_prices_sorted_with_unpriced_and_month_edges() {
        let cfg = Config::default(); // the chapter's five models and prices
        let entries = vec![
            entry("2026-10-31T23:59:59.999999", "gpt-4o", 1_000_000, 0, "ok"), // previous month
            entry(
                "2026-11-01T00:00:00.000000",
                "gpt-4o",
                1_000_000,
                100_000,
                "ok",
            ), // 2.5 + 1.0
            entry(
                "2026-11-10T10:00:00.0",
                "gpt-4o-mini",
                1_000_000,
                1_000_000,
                "ok",
            ), // 0.75
            entry("2026-11-10T10:00:01.0", "gpt-4o-mini", 0, 0, "rate_limited"),
            entry(
                "2026-11-30T23:59:59.999999",
                "retired-model",
                5_000_000,
                5_000_000,
                "ok",
            ),
            entry("2026-12-01T00:00:00.0", "gpt-4o", 1_000_000, 0, "ok"), // next month
        ];
        let r = report(&entries, &cfg, d("2026-11-01"), d("2026-11-15"));
        let names: Vec<&str> = r.models.iter().map(|m| m.model.as_str()).collect();
        assert_eq!(names, ["gpt-4o", "gpt-4o-mini", "retired-model"]);
        assert!((r.models[0].cost_usd.unwrap() - 3.5).abs() < 1e-9);
        assert!((r.models[1].cost_usd.unwrap() - 0.75).abs() < 1e-9);
        assert_eq!((r.models[1].calls, r.models[1].errors), (2, 1));
        assert_eq!(r.models[2].cost_usd, None);
        assert_eq!(r.unpriced, ["retired-model"]);
        assert!((r.total_cost_usd - 4.25).abs() < 1e-9);
        assert_eq!(r.total_calls, 4);
        assert_eq!(r.total_input, 7_000_000);
        // November has 30 days; on the 15th the projection doubles the total.
        assert!((r.projected_month_end_usd.unwrap() - 8.5).abs() < 1e-9);
        let t = render(&r);
        assert!(t.contains("unpriced"), "{t}");
        assert!(t.contains("3.50"), "{t}");
        assert!(t.contains("projected month-end total: $8.50"), "{t}");

        // A past month: same numbers, no projection.
        let past = report(&entries, &cfg, d("2026-11-01"), d("2026-12-02"));
        assert_eq!(past.projected_month_end_usd, None);
        assert!((past.total_cost_usd - 4.25).abs() < 1e-9);
        // 31-day month, day 31: projection = total.
        let dec = report(&entries, &cfg, d("2026-12-01"), d("2026-12-31"));
        assert!((dec.projected_month_end_usd.unwrap() - 2.5).abs() < 1e-9);
    }

    #[test]
    fn an_empty_month_prints_zero_not_minus_zero() {
        let r = report(&[], &Config::default(), d("2026-11-01"), d("2026-11-02"));
        assert_eq!(format!("{:.2}", r.total_cost_usd), "0.00");
        assert!(render(&r).contains("$0.00"));
    }

    #[test]
    fn configured_prices_win_over_the_chapter_table() {
        let mut cfg = Config::default();
        cfg.models.get_mut("gpt-4o").unwrap().price.input = 10.0;
        let r = report(
            &[entry("2026-11-02T00:00:00.0", "gpt-4o", 1_000_000, 0, "ok")],
            &cfg,
            d("2026-11-01"),
            d("2026-11-02"),
        );
        assert!((r.total_cost_usd - 10.0).abs() < 1e-9);
    }

    #[test]
    fn small_amounts_keep_their_digits() {
        let cases = [
            (0.0, "0.00"),
            (12.345, "12.35"),
            (1.0, "1.00"),
            (0.0912, "0.0912"),
            (0.0004, "0.000400"),
            (0.0000004, "0.000000"),
        ];
        for (v, want) in cases {
            assert_eq!(usd(v), want, "{v}");
        }
    }

    #[test]
    fn simulated_spend_is_shown_apart() {
        let cfg = Config::default();
        let mut real = entry("2026-11-02T00:00:00.0", "gpt-4o", 1_000_000, 0, "ok");
        real.provider = "openai".into();
        let sim = entry("2026-11-02T00:00:01.0", "gpt-4o", 1_000_000, 0, "ok");
        let r = report(&[real, sim], &cfg, d("2026-11-01"), d("2026-11-02"));
        let price = cfg.models["gpt-4o"].price.input;
        assert!((r.total_cost_usd - 2.0 * price).abs() < 1e-9, "{r:?}");
        assert!((r.simulated_cost_usd - price).abs() < 1e-9, "{r:?}");
        assert!((r.real_cost_usd - price).abs() < 1e-9, "{r:?}");
        assert_eq!(r.models[0].simulated_calls, 1);
        let text = render(&r);
        assert!(text.contains("simulated"), "{text}");
        assert!(text.contains("built-in simulator"), "{text}");
    }
}

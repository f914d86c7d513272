//! The built-in cron kinds (pure): the chapter's daily cost report and 7-day token table,
//! rendered as text from audit entries.
//!
//! Same arithmetic as `openclaw-node cost` / `tokens` (the tools read the same audit log): cost
//! at the **configured** prices, a model without a price listed as unpriced and left out of the
//! total; the token table's columns are the chapter's (日期, 输入 Token, 输出 Token, 调用次数,
//! 平均 Token/调用).

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};

use crate::audit::AuditEntry;
use crate::config::Config;

/// Days in the token table (the chapter's default).
pub const TOKEN_DAYS: u32 = 7;

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The daily cost report for `today`: per model calls, tokens and cost, then the month so far.
pub fn daily_cost(entries: &[AuditEntry], cfg: &Config, today: NaiveDate) -> (String, String) {
    let mut by_model: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
    let mut month: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for e in entries {
        let d = e.timestamp.date();
        if (d.year(), d.month()) == (today.year(), today.month()) {
            let m = month.entry(e.model.as_str()).or_default();
            m.0 += e.tokens.input;
            m.1 += e.tokens.output;
            if d == today {
                let r = by_model.entry(e.model.as_str()).or_default();
                r.0 += 1;
                r.1 += e.tokens.input;
                r.2 += e.tokens.output;
            }
        }
    }
    let price = |m: &str, i: u64, o: u64| cfg.models.get(m).map(|c| c.price.cost(i, o));
    let mut lines = vec![format!(
        "{:<24} {:>8} {:>12} {:>12} {:>12}",
        "模型", "调用次数", "输入 Token", "输出 Token", "费用 ($)"
    )];
    let mut total = 0.0;
    let mut unpriced = Vec::new();
    for (m, (calls, i, o)) in &by_model {
        let cost = price(m, *i, *o);
        match cost {
            Some(c) => total += c,
            None => unpriced.push(m.to_string()),
        }
        lines.push(format!(
            "{:<24} {:>8} {:>12} {:>12} {:>12}",
            m,
            calls,
            thousands(*i),
            thousands(*o),
            cost.map(|c| format!("{c:.4}"))
                .unwrap_or_else(|| "unpriced".into())
        ));
    }
    let month_total: f64 = month
        .iter()
        .filter_map(|(m, (i, o))| price(m, *i, *o))
        .sum::<f64>()
        + 0.0;
    lines.push(format!("今日合计: ${total:.4}"));
    lines.push(format!(
        "本月累计 ({}): ${month_total:.4}",
        today.format("%Y-%m")
    ));
    if !unpriced.is_empty() {
        lines.push(format!("未定价模型 (不计入合计): {}", unpriced.join(", ")));
    }
    (format!("📊 OpenClaw 费用日报 ({today})"), lines.join("\n"))
}

/// The chapter's token table: the last `days` days up to `today`, one row per day with calls.
pub fn token_table(entries: &[AuditEntry], today: NaiveDate, days: u32) -> (String, String) {
    let first = today - chrono::Duration::days(i64::from(days.max(1)) - 1);
    let mut daily: BTreeMap<NaiveDate, (u64, u64, u64)> = BTreeMap::new();
    for e in entries {
        let d = e.timestamp.date();
        if d >= first && d <= today {
            let r = daily.entry(d).or_default();
            r.0 += e.tokens.input;
            r.1 += e.tokens.output;
            r.2 += 1;
        }
    }
    let mut lines = vec![
        format!(
            "{:<14} {:>12} {:>12} {:>8} {:>14}",
            "日期", "输入 Token", "输出 Token", "调用次数", "平均 Token/调用"
        ),
        "-".repeat(64),
    ];
    for (d, (i, o, calls)) in &daily {
        lines.push(format!(
            "{:<14} {:>12} {:>12} {:>8} {:>14}",
            d.format("%Y-%m-%d").to_string(),
            thousands(*i),
            thousands(*o),
            calls,
            thousands((i + o) / (*calls).max(1))
        ));
    }
    (
        format!("📊 OpenClaw Token 消耗统计(最近 {days} 天)"),
        lines.join("\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::CacheOutcome;
    use openclaw_proto::api::TokenCounts;
    use openclaw_proto::Priority;

    fn entry(day: &str, model: &str, input: u64, output: u64) -> AuditEntry {
        AuditEntry {
            timestamp: NaiveDate::parse_from_str(day, "%Y-%m-%d")
                .unwrap()
                .and_hms_opt(12, 0, 0)
                .unwrap(),
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
            prompt: None,
            purpose: None,
            cache: CacheOutcome::from_hit(false),
            cache_score: None,
            status: "ok".into(),
            attempt: 1,
            fallback_from: None,
        }
    }

    #[test]
    fn daily_cost_prices_today_and_the_month() {
        let cfg = Config::default();
        let today = NaiveDate::from_ymd_opt(2026, 3, 10).unwrap();
        let es = [
            entry("2026-03-10", "gpt-4o", 1_000_000, 100_000),
            entry("2026-03-10", "gpt-4o", 1_000_000, 100_000),
            entry("2026-03-09", "gpt-4o-mini", 1_000_000, 0),
            entry("2026-02-28", "gpt-4o", 9_000_000, 0),
            entry("2026-03-10", "retired-model", 5, 5),
        ];
        let (title, text) = daily_cost(&es, &cfg, today);
        assert!(title.contains("2026-03-10"), "{title}");
        let p = &cfg.models["gpt-4o"].price;
        let today_usd = p.cost(2_000_000, 200_000);
        let month_usd = today_usd + cfg.models["gpt-4o-mini"].price.cost(1_000_000, 0);
        assert!(
            text.contains(&format!("今日合计: ${today_usd:.4}")),
            "{text}"
        );
        assert!(
            text.contains(&format!("本月累计 (2026-03): ${month_usd:.4}")),
            "{text}"
        );
        assert!(text.contains("2,000,000"), "{text}");
        assert!(
            text.contains("retired-model") && text.contains("unpriced"),
            "{text}"
        );
    }

    #[test]
    fn token_table_has_one_row_per_day_in_the_window() {
        let today = NaiveDate::from_ymd_opt(2026, 3, 10).unwrap();
        let es = [
            entry("2026-03-10", "a", 100, 50),
            entry("2026-03-10", "b", 300, 50),
            entry("2026-03-04", "a", 1, 1),
            entry("2026-03-03", "a", 7, 7), // 8 days ago: outside
        ];
        let (title, text) = token_table(&es, today, TOKEN_DAYS);
        assert!(title.contains("7"), "{title}");
        let rows: Vec<&str> = text.lines().skip(2).collect();
        assert_eq!(rows.len(), 2, "{text}");
        assert!(rows[0].starts_with("2026-03-04"), "{text}");
        // 2026-03-10: 400 in, 100 out, 2 calls, 250 per call
        let cols: Vec<&str> = rows[1].split_whitespace().collect();
        assert_eq!(cols, ["2026-03-10", "400", "100", "2", "250"]);
    }

    #[test]
    fn thousands_table() {
        for (n, s) in [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (1234567, "1,234,567"),
        ] {
            assert_eq!(thousands(n), s);
        }
    }
}

//! Budget notices (§18.7 `notification`): one POST per threshold that fires, to the
//! `webhook_url_env` target in its `channel` format (`feishu` bot text, or the generic JSON
//! event) and to each `webhooks[]` entry — each in its own task, retried with back-off. URLs
//! come only from the environment (they carry tokens) and are never logged. `recipients` are
//! named in every notice (a `recipients` array in the generic JSON, a `To:` line in the Feishu
//! text): a webhook posts to its own group, so the names tell who is meant.

use std::time::Duration;

use crate::budget::rules::{Counters, Limits};
use crate::config::{BudgetAction, Config};

/// Attempts of one webhook POST.
pub const NOTIFY_MAX_ATTEMPTS: u32 = 5;
/// First back-off between webhook attempts (doubles).
pub const NOTIFY_INITIAL_DELAY: Duration = Duration::from_millis(500);
/// Timeout of one webhook POST.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// One threshold that fired, to be told to the webhooks.
#[derive(Debug, Clone)]
pub struct Notice {
    pub scope: String,
    pub percent: u32,
    pub action: BudgetAction,
    pub period: String,
    pub counters: Counters,
    pub limits: Limits,
    pub node: String,
    pub at_ms: u64,
    /// `budget.notification.recipients`, named in the notice.
    pub recipients: Vec<String>,
}

fn action_name(a: BudgetAction) -> &'static str {
    match a {
        BudgetAction::Notify => "notify",
        BudgetAction::DowngradeModel => "downgrade_model",
        BudgetAction::PauseNonCritical => "pause_non_critical",
    }
}

/// The generic JSON webhook body.
pub fn generic_body(n: &Notice) -> serde_json::Value {
    serde_json::json!({
        "event": "budget_threshold",
        "scope": n.scope,
        "percent": n.percent,
        "action": action_name(n.action),
        "period": n.period,
        "spent_tokens": n.counters.tokens,
        "spent_cost_usd": n.counters.cost_usd,
        "limit_tokens": n.limits.tokens,
        "limit_cost_usd": n.limits.cost_usd,
        "node": n.node,
        "recipients": n.recipients,
        "at": chrono::DateTime::<chrono::Utc>::from_timestamp_millis(n.at_ms as i64)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
    })
}

/// The Feishu bot webhook body (a text message).
pub fn feishu_body(n: &Notice) -> serde_json::Value {
    let limit = match (n.limits.tokens, n.limits.cost_usd) {
        (Some(t), Some(c)) => format!("{t} tokens / ${c:.2}"),
        (Some(t), None) => format!("{t} tokens"),
        (None, Some(c)) => format!("${c:.2}"),
        (None, None) => "unlimited".into(),
    };
    let text = format!(
        "[OpenClaw budget] {scope} reached {p}% of its {period} budget on node {node}: \
         {tokens} tokens, ${cost:.4} spent (limit {limit}). Action: {action}.",
        scope = n.scope,
        p = n.percent,
        period = n.period,
        node = n.node,
        tokens = n.counters.tokens,
        cost = n.counters.cost_usd,
        action = action_name(n.action),
    );
    let text = if n.recipients.is_empty() {
        text
    } else {
        format!("To: {}\n{text}", n.recipients.join(", "))
    };
    serde_json::json!({"msg_type": "text", "content": {"text": text}})
}

/// Where to send notices: (kind, env var name). `webhook_url_env` follows `channel`.
fn targets(cfg: &Config) -> Vec<(String, String)> {
    let n = &cfg.budget.notification;
    let mut out = Vec::new();
    if let Some(env) = &n.webhook_url_env {
        let kind = if n.channel.as_deref() == Some("feishu") {
            "feishu"
        } else {
            "generic"
        };
        out.push((kind.to_string(), env.clone()));
    }
    for w in &n.webhooks {
        out.push((w.kind.clone(), w.url_env.clone()));
    }
    out
}

/// POST the notice to every target, each in its own task with retries. URLs are never logged.
pub fn send_notice(http: &reqwest::Client, cfg: &Config, n: Notice) {
    for (kind, env) in targets(cfg) {
        let Ok(url) = std::env::var(&env) else {
            tracing::warn!(env = %env, "budget webhook variable is not set; notice not sent");
            continue;
        };
        let body = if kind == "feishu" {
            feishu_body(&n)
        } else {
            generic_body(&n)
        };
        let http = http.clone();
        let scope = n.scope.clone();
        let percent = n.percent;
        tokio::spawn(async move {
            for attempt in 1..=NOTIFY_MAX_ATTEMPTS {
                tokio::time::sleep(crate::util::backoff_before(attempt, NOTIFY_INITIAL_DELAY))
                    .await;
                let res = http
                    .post(&url)
                    .timeout(NOTIFY_TIMEOUT)
                    .json(&body)
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status().is_success() => {
                        tracing::info!(%scope, percent, %kind, env = %env, "budget notice sent");
                        return;
                    }
                    Ok(r) => {
                        tracing::warn!(%scope, percent, status = r.status().as_u16(), env = %env, attempt, "budget webhook refused the notice")
                    }
                    Err(e) => {
                        tracing::warn!(%scope, percent, env = %env, attempt, error = %e.without_url(), "budget webhook unreachable")
                    }
                }
            }
            tracing::error!(%scope, percent, env = %env, "budget notice not delivered after retries");
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn webhook_bodies() {
        let n = Notice {
            scope: "total".into(),
            percent: 80,
            action: BudgetAction::Notify,
            period: "2026-11-23".into(),
            counters: Counters {
                tokens: 800,
                cost_usd: 0.5,
                ..Default::default()
            },
            limits: Limits {
                tokens: Some(1000),
                cost_usd: None,
            },
            node: "n1".into(),
            at_ms: 0,
            recipients: Vec::new(),
        };
        let f = feishu_body(&n);
        assert_eq!(f["msg_type"], "text");
        let text = f["content"]["text"].as_str().unwrap();
        assert!(text.contains("80%") && text.contains("total"), "{text}");
        let g = generic_body(&n);
        assert_eq!(g["event"], "budget_threshold");
        assert_eq!(g["action"], "notify");
        assert_eq!(g["limit_tokens"], 1000);
        assert_eq!(g["limit_cost_usd"], serde_json::Value::Null);
        assert_eq!(g["at"], "1970-01-01T00:00:00.000Z");
        assert_eq!(g["recipients"], serde_json::json!([]));
        assert!(!text.contains("To:"), "{text}");

        let n = Notice {
            recipients: vec!["admin_group".into(), "ops".into()],
            ..n
        };
        let text = feishu_body(&n)["content"]["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(text.starts_with("To: admin_group, ops\n"), "{text}");
        assert_eq!(
            generic_body(&n)["recipients"],
            serde_json::json!(["admin_group", "ops"])
        );
    }
}

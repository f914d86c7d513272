//! The `cron` section: `cron.jobs[]` (a job's schedule, zone, what it runs and where the result
//! goes) and the two parsers its validation and the cron feature share — the schedule (standard
//! 5 fields, an optional leading seconds field, `@daily`/`@hourly`/…) and the IANA time zone.

use serde::{Deserialize, Serialize};

use openclaw_proto::Priority;

/// Most jobs `cron.jobs` may hold (each has a replicated "last fired" mark).
pub const CRON_JOBS_MAX: usize = 256;
/// Longest job name, in bytes (it is part of every firing's idempotency key).
pub const CRON_NAME_MAX: usize = 64;

/// Longest `cron.missed_after_seconds` (a day).
pub const MISSED_AFTER_MAX_S: u64 = 86_400;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CronConfig {
    pub jobs: Vec<CronJob>,
    /// A firing scheduled longer ago than this when a node could first run it (the whole
    /// cluster was down) was missed: passed over, or with `catch_up: latest` the latest of
    /// them runs once. Younger firings are late and all run. Default 60.
    pub missed_after_seconds: u64,
}

impl Default for CronConfig {
    fn default() -> Self {
        CronConfig {
            jobs: Vec::new(),
            missed_after_seconds: 60,
        }
    }
}

/// What a job does when it fires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CronKind {
    /// A task for `agent` with `input` (the default).
    #[default]
    Agent,
    /// The chapter's daily cost report, from the audit log.
    CostReport,
    /// The chapter's 7-day token table, from the audit log.
    TokenStats,
}

/// After the whole cluster was down past firings: run none of them, or the latest once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    #[default]
    None,
    Latest,
}

/// Where a firing's result is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum DeliverTo {
    /// A Feishu chat id (the Feishu channel sends it).
    FeishuChat(String),
    /// The environment variable holding a webhook URL (POST JSON, retried).
    Webhook(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronJob {
    pub name: String,
    /// `sec? min hour dom month dow`, or `@daily`, `@hourly`, `@weekly`, `@monthly`, `@yearly`.
    pub schedule: String,
    /// IANA zone the schedule is read in (`Asia/Shanghai`); UTC when absent.
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default = "main_agent")]
    pub agent: String,
    /// The prompt (kind `agent`); ignored by the built-in kinds.
    #[serde(default)]
    pub input: String,
    /// Default: `task_priority.source_mapping.cron_job`.
    #[serde(default)]
    pub priority: Option<Priority>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub deliver_to: Option<DeliverTo>,
    #[serde(default)]
    pub catch_up: CatchUp,
    #[serde(default)]
    pub kind: CronKind,
}

fn main_agent() -> String {
    "main".into()
}

/// Parse a schedule: 5 fields, or 6 with a leading seconds field, or an `@` nickname. Day of
/// month and day of week combine as in Vixie cron (either matches).
pub fn parse_schedule(s: &str) -> Result<croner::Cron, String> {
    let fields = s.split_whitespace().count();
    if !s.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
        return Err(format!(
            "`{s}` has {fields} fields: use 5 (min hour day-of-month month day-of-week), 6 \
             (a leading seconds field) or @daily/@hourly/@weekly/@monthly/@yearly"
        ));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(s)
        .map_err(|e| format!("`{s}` is not a cron schedule: {e}"))
}

/// Parse an IANA zone name (`Europe/Berlin`); `None` is UTC.
pub fn parse_timezone(tz: Option<&str>) -> Result<chrono_tz::Tz, String> {
    match tz {
        None => Ok(chrono_tz::UTC),
        Some(name) => name.parse::<chrono_tz::Tz>().map_err(|_| {
            format!("`{name}` is not an IANA time zone (like `Asia/Shanghai` or `UTC`)")
        }),
    }
}

//! `openclaw-node cron list` (the node's `GET /api/cron` as a table) and `cron run NAME` (an
//! immediate firing through `POST /api/cron/{name}/run`). `--json` prints the node's answer.

use openclaw_proto::ops::{CronRunView, CronView};

use crate::cli::CronCmd;

use super::{render_table, Align};

/// The jobs as a table: name, schedule, zone, kind, next, last (time, task, node, status).
pub fn table(v: &CronView) -> String {
    let rows: Vec<Vec<String>> = v
        .jobs
        .iter()
        .map(|j| {
            let last = j.last.as_ref();
            vec![
                j.name.clone(),
                j.schedule.clone(),
                j.timezone.clone(),
                j.kind.clone(),
                j.next_at.clone().unwrap_or_else(|| "-".into()),
                last.map(|l| l.scheduled_at.clone())
                    .unwrap_or_else(|| "-".into()),
                last.and_then(|l| l.task_id.clone()).unwrap_or_default(),
                last.map(|l| l.node.clone()).unwrap_or_default(),
                last.and_then(|l| l.status.clone()).unwrap_or_default(),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "no cron jobs (configure cron.jobs)\n".into();
    }
    render_table(
        &[
            ("job", Align::Left),
            ("schedule", Align::Left),
            ("timezone", Align::Left),
            ("kind", Align::Left),
            ("next", Align::Left),
            ("last", Align::Left),
            ("task", Align::Left),
            ("node", Align::Left),
            ("status", Align::Left),
        ],
        &rows,
    )
}

pub async fn run(cmd: CronCmd) -> anyhow::Result<i32> {
    match cmd {
        CronCmd::List(a) => {
            let client = crate::client::Client::new(&a.target)?;
            let v: CronView = client.get_json("/api/cron").await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", table(&v));
            }
            Ok(0)
        }
        CronCmd::Run(a) => {
            let client = crate::client::Client::new(&a.target)?;
            let path = format!("/api/cron/{}/run", a.name);
            let v: CronRunView = client.post_json(&path).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "fired {} at {}: {}{}",
                    v.job,
                    v.scheduled_at,
                    v.status,
                    v.task_id
                        .as_deref()
                        .map(|t| format!(" (task {t})"))
                        .unwrap_or_default()
                );
            }
            Ok(if v.status == "failed" { 1 } else { 0 })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openclaw_proto::ops::{CronJobView, CronLastView};

    #[test]
    fn the_table_shows_next_and_last() {
        let v = CronView {
            jobs: vec![
                CronJobView {
                    name: "daily-cost".into(),
                    schedule: "0 9 * * *".into(),
                    timezone: "Asia/Shanghai".into(),
                    kind: "cost_report".into(),
                    next_at: Some("2026-03-02T01:00:00.000Z".into()),
                    last: None,
                },
                CronJobView {
                    name: "tick".into(),
                    schedule: "*/2 * * * * *".into(),
                    timezone: "UTC".into(),
                    kind: "agent".into(),
                    next_at: None,
                    last: Some(CronLastView {
                        scheduled_at: "2026-03-01T10:00:02.000Z".into(),
                        task_id: Some("t-1".into()),
                        node: "2".into(),
                        status: Some("succeeded".into()),
                    }),
                },
            ],
        };
        let t = table(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("job"), "{t}");
        assert!(
            t.contains("Asia/Shanghai") && t.contains("2026-03-02T01:00:00.000Z"),
            "{t}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("tick") && l.contains("t-1") && l.contains("succeeded")),
            "{t}"
        );
        assert!(table(&CronView::default()).contains("no cron jobs"));
    }
}

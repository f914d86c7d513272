//! The operator's commands: `tokens`, `cost`, `queue`, `session list|show|clear`,
//! `memory push|list`, `doctor`, `config get|set|validate`, `status`/`leave`, `cron list|run`,
//! `cluster gen-certs`, and `demo` (a local three-node cluster through a crash, see [`demo`]).
//!
//! Each command is a module with a pure part (aggregation over audit entries, checks over
//! collected facts, edits of a JSON tree — all table-tested) and a thin part that gathers the
//! input (audit log, config file, HTTP) and prints either a readable table or `--json`.
//! `tokens` and `cost` read `<data-dir>/logs/config-audit.jsonl` (rotated files too) directly,
//! so they work with the node stopped. Exit codes: 0 fine, 1 a failure (doctor check, invalid
//! config, unreachable node).

pub mod config_cmd;
pub mod cost;
pub mod cron;
pub mod demo;
pub mod doctor;
pub mod gen_certs;
pub mod memory;
pub mod queue;
pub mod session;
pub mod status;
pub mod tokens;

use std::path::PathBuf;

use crate::cli::ConfigLocation;

/// Where the config file and data dir are, resolved the way the node resolves them.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
    /// The file was named explicitly (`--config`), so it must exist.
    pub required: bool,
}

impl Resolved {
    pub fn of(loc: &ConfigLocation) -> Resolved {
        let data_dir = loc
            .data_dir
            .clone()
            .unwrap_or_else(openclaw_server::util::default_data_dir);
        match &loc.config {
            Some(p) => Resolved {
                config_path: p.clone(),
                data_dir,
                required: true,
            },
            None => Resolved {
                config_path: data_dir.join("openclaw.json"),
                data_dir,
                required: false,
            },
        }
    }

    /// The effective configuration (defaults + file + env), as the node loads it.
    pub fn load(
        &self,
    ) -> Result<openclaw_server::config::Config, openclaw_server::config::ConfigError> {
        openclaw_server::config::load(Some(&self.config_path), self.required)
    }
}

/// `loc` with unset fields taken from `fallback` (flags given before the subcommand).
pub fn merge_location(loc: ConfigLocation, fallback: &ConfigLocation) -> ConfigLocation {
    ConfigLocation {
        config: loc.config.or_else(|| fallback.config.clone()),
        data_dir: loc.data_dir.or_else(|| fallback.data_dir.clone()),
    }
}

/// Which columns are right-aligned (numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A plain text table: header, a rule, rows; column widths from the widest cell.
pub fn render_table(headers: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|(h, _)| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            let pad = w.saturating_sub(cell.chars().count());
            if i > 0 {
                out.push_str("  ");
            }
            match headers.get(i).map(|h| h.1).unwrap_or(Align::Left) {
                Align::Left => {
                    out.push_str(cell);
                    out.push_str(&" ".repeat(pad));
                }
                Align::Right => {
                    out.push_str(&" ".repeat(pad));
                    out.push_str(cell);
                }
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(headers.iter().map(|(h, _)| *h).collect());
    out.push('\n');
    out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1)));
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// `1234567` → `1,234,567` (the chapter's `{:,}`).
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Print a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_like_python() {
        for (n, s) in [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (1234567, "1,234,567"),
            (100000, "100,000"),
        ] {
            assert_eq!(thousands(n), s);
        }
    }

    #[test]
    fn table_aligns_numbers_right() {
        let t = render_table(
            &[("model", Align::Left), ("calls", Align::Right)],
            &[
                vec!["a".into(), "5".into()],
                vec!["long-name".into(), "1,000".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "model      calls");
        assert_eq!(lines[2], "a              5");
        assert_eq!(lines[3], "long-name  1,000");
    }
}

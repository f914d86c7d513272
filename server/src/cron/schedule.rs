//! Schedule arithmetic (pure): when a job fires next, and which firings a tick runs.
//!
//! A [`Schedule`] is a parsed cron expression read in a time zone (DST follows croner: a fixed
//! time that falls in a spring-forward gap fires just after the gap, one that occurs twice in a
//! fall-back fires once; interval fields fire on each wall-clock match). [`plan`] decides what a
//! tick fires from the job's cursor (the latest firing known fired) and the time now: firings
//! at most `cron.missed_after_seconds` ([`LATE_MAX_MS`] by default) old are late, not missed,
//! and all fire; older ones were missed (the whole cluster was down) and fire only under
//! `catch_up: latest` — the latest of them, once.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::config::cron::{parse_schedule, parse_timezone, CatchUp, CronJob};

/// How late a firing may run and still count as on time (a leader election, a restart) by
/// default (`cron.missed_after_seconds`).
pub const LATE_MAX_MS: u64 = 60_000;
/// Most firings one tick runs for one job (the rest wait for the next tick).
pub const FIRINGS_PER_TICK_MAX: usize = 64;

/// A job's schedule in its zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    tz: Tz,
}

impl Schedule {
    pub fn parse(schedule: &str, timezone: Option<&str>) -> Result<Schedule, String> {
        Ok(Schedule {
            cron: parse_schedule(schedule)?,
            tz: parse_timezone(timezone)?,
        })
    }

    pub fn of(job: &CronJob) -> Result<Schedule, String> {
        Schedule::parse(&job.schedule, job.timezone.as_deref())
    }

    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// The first firing strictly after `after_ms` (Unix ms), if any.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let t = DateTime::<Utc>::from_timestamp_millis(i64::try_from(after_ms).ok()?)?;
        let local = self.tz.from_utc_datetime(&t.naive_utc());
        let next = self.cron.find_next_occurrence(&local, false).ok()?;
        u64::try_from(next.with_timezone(&Utc).timestamp_millis()).ok()
    }

    /// The firings in `(after_ms, upto_ms]`, oldest first, at most `max`.
    pub fn between(&self, after_ms: u64, upto_ms: u64, max: usize) -> Vec<u64> {
        let mut out = Vec::new();
        let mut t = after_ms;
        while out.len() < max {
            match self.next_after(t) {
                Some(n) if n <= upto_ms => {
                    out.push(n);
                    t = n;
                }
                _ => break,
            }
        }
        out
    }

    /// The latest firing in `(after_ms, upto_ms]`, if any (walks back from `upto_ms`).
    pub fn latest_between(&self, after_ms: u64, upto_ms: u64) -> Option<u64> {
        let t = DateTime::<Utc>::from_timestamp_millis(i64::try_from(upto_ms).ok()?)?;
        let local = self.tz.from_utc_datetime(&t.naive_utc());
        let prev = self.cron.find_previous_occurrence(&local, true).ok()?;
        let ms = u64::try_from(prev.with_timezone(&Utc).timestamp_millis()).ok()?;
        (ms > after_ms).then_some(ms)
    }
}

/// What a tick does for one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Scheduled times to fire now, oldest first.
    pub fire: Vec<u64>,
    /// Missed firings were passed over (the whole cluster was down longer than
    /// [`LATE_MAX_MS`]; `catch_up: latest` still fires the latest of them).
    pub skipped: bool,
    /// The cursor the caller may adopt before firing anything (past the skipped firings).
    pub cursor: u64,
}

/// The firings due at `now_ms` for a job whose latest fired time is `cursor_ms`: the missed
/// ones (scheduled more than `late_max_ms` ago) are skipped, or with `catch_up: latest` the
/// latest of them fires; every later one fires (at most [`FIRINGS_PER_TICK_MAX`]).
pub fn plan(
    s: &Schedule,
    cursor_ms: u64,
    now_ms: u64,
    catch_up: CatchUp,
    late_max_ms: u64,
) -> Plan {
    let late_from = now_ms.saturating_sub(late_max_ms);
    let mut cursor = cursor_ms;
    let mut fire = Vec::new();
    let mut skipped = false;
    if let Some(missed) = s.latest_between(cursor_ms, late_from.saturating_sub(1)) {
        match catch_up {
            CatchUp::Latest => {
                skipped = s.next_after(cursor_ms) != Some(missed);
                fire.push(missed);
            }
            CatchUp::None => {
                skipped = true;
                cursor = missed;
            }
        }
    }
    let from = fire.last().copied().unwrap_or(cursor);
    let room = FIRINGS_PER_TICK_MAX.saturating_sub(fire.len());
    fire.extend(s.between(from, now_ms, room));
    Plan {
        fire,
        skipped,
        cursor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix ms of a UTC time `YYYY-MM-DDTHH:MM:SSZ`.
    fn utc(s: &str) -> u64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis() as u64
    }

    fn iso(ms: u64) -> String {
        DateTime::<Utc>::from_timestamp_millis(ms as i64)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    #[test]
    fn next_fire_table() {
        // (schedule, zone, after (UTC), expected next (UTC))
        let table = [
            // 5 fields, UTC
            (
                "0 9 * * *",
                None,
                "2026-03-01T08:59:59Z",
                "2026-03-01T09:00:00Z",
            ),
            (
                "0 9 * * *",
                None,
                "2026-03-01T09:00:00Z",
                "2026-03-02T09:00:00Z",
            ),
            (
                "*/15 * * * *",
                None,
                "2026-03-01T10:07:00Z",
                "2026-03-01T10:15:00Z",
            ),
            // a leading seconds field
            (
                "*/2 * * * * *",
                None,
                "2026-03-01T10:00:01Z",
                "2026-03-01T10:00:02Z",
            ),
            (
                "30 0 9 * * *",
                None,
                "2026-03-01T09:00:00Z",
                "2026-03-01T09:00:30Z",
            ),
            // nicknames
            (
                "@daily",
                None,
                "2026-03-01T12:00:00Z",
                "2026-03-02T00:00:00Z",
            ),
            (
                "@hourly",
                None,
                "2026-03-01T12:00:00Z",
                "2026-03-01T13:00:00Z",
            ),
            // a zone without DST: 09:00 in Shanghai is 01:00 UTC
            (
                "0 9 * * *",
                Some("Asia/Shanghai"),
                "2026-03-01T02:00:00Z",
                "2026-03-02T01:00:00Z",
            ),
            (
                "@daily",
                Some("Asia/Shanghai"),
                "2026-03-01T12:00:00Z",
                "2026-03-01T16:00:00Z",
            ),
            // day of month OR day of week (Vixie cron): the 1st or a Monday
            (
                "0 0 1 * 1",
                None,
                "2026-03-01T00:00:00Z",
                "2026-03-02T00:00:00Z",
            ),
            // New York, spring forward 2026-03-08 02:00 -> 03:00 (EST -5 -> EDT -4)
            (
                "0 9 * * *",
                Some("America/New_York"),
                "2026-03-07T15:00:00Z",
                "2026-03-08T13:00:00Z",
            ),
            // 02:30 does not exist that day: fires just after the gap (03:00 EDT = 07:00 UTC)
            (
                "30 2 * * *",
                Some("America/New_York"),
                "2026-03-08T05:00:00Z",
                "2026-03-08T07:00:00Z",
            ),
            // fall back 2026-11-01 02:00 -> 01:00: a fixed 01:30 fires once (the first, EDT)
            (
                "30 1 * * *",
                Some("America/New_York"),
                "2026-11-01T04:00:00Z",
                "2026-11-01T05:30:00Z",
            ),
            (
                "30 1 * * *",
                Some("America/New_York"),
                "2026-11-01T05:30:00Z",
                "2026-11-02T06:30:00Z",
            ),
            // Berlin, spring forward 2026-03-29 02:00 -> 03:00 (CET +1 -> CEST +2)
            (
                "0 8 * * *",
                Some("Europe/Berlin"),
                "2026-03-28T08:00:00Z",
                "2026-03-29T06:00:00Z",
            ),
        ];
        for (sched, tz, after, want) in table {
            let s = Schedule::parse(sched, tz).unwrap();
            let got = s.next_after(utc(after)).map(iso);
            assert_eq!(
                got.as_deref(),
                Some(want),
                "{sched} in {tz:?} after {after}"
            );
        }
    }

    #[test]
    fn an_interval_job_fires_on_each_pass_of_a_repeated_hour() {
        // Fall back in New York: 01:00-02:00 happens twice; `*/30` in the hour fires 4 times.
        let s = Schedule::parse("*/30 1 * * *", Some("America/New_York")).unwrap();
        let got: Vec<String> = s
            .between(utc("2026-11-01T04:00:00Z"), utc("2026-11-01T07:00:00Z"), 10)
            .into_iter()
            .map(iso)
            .collect();
        assert_eq!(
            got,
            [
                "2026-11-01T05:00:00Z",
                "2026-11-01T05:30:00Z",
                "2026-11-01T06:00:00Z",
                "2026-11-01T06:30:00Z"
            ]
        );
    }

    #[test]
    fn bad_schedules_and_zones_say_what_is_wrong() {
        for bad in [
            "",
            "* * * *",
            "* * * * * * *",
            "61 * * * *",
            "@sometimes",
            "0 9 * * * 2026",
        ] {
            assert!(Schedule::parse(bad, None).is_err(), "{bad:?} parsed");
        }
        let e = Schedule::parse("* * * *", None).unwrap_err();
        assert!(e.contains("4 fields"), "{e}");
        let e = Schedule::parse("@daily", Some("Mars/Olympus")).unwrap_err();
        assert!(e.contains("IANA"), "{e}");
    }

    #[test]
    fn plan_table() {
        let every_2s = Schedule::parse("*/2 * * * * *", None).unwrap();
        let t0 = utc("2026-03-01T10:00:00Z");
        let secs = |a: u64, b: u64| -> Vec<u64> { (a..=b).step_by(2).collect() };
        // (cursor, now, catch_up, fired (seconds after t0), skipped, cursor after)
        let table: [(u64, u64, CatchUp, Vec<u64>, bool, u64); 7] = [
            // nothing due yet
            (0, 1, CatchUp::None, vec![], false, 0),
            // one due
            (0, 2, CatchUp::None, vec![2], false, 0),
            // late after an election: every late firing runs
            (0, 7, CatchUp::None, vec![2, 4, 6], false, 0),
            // late by just under LATE_MAX_MS: still all of them
            (0, 59, CatchUp::None, secs(2, 58), false, 0),
            // down 2 minutes: the missed ones are skipped, the late ones run
            (0, 120, CatchUp::None, secs(60, 120), true, 58),
            // ... or the latest missed runs once first
            (0, 120, CatchUp::Latest, secs(58, 120), true, 0),
            // only one missed: catch_up fires it, nothing was passed over
            (56, 120, CatchUp::Latest, secs(58, 120), false, 56),
        ];
        for (i, (cursor, now, catch_up, fired, skipped, after)) in table.into_iter().enumerate() {
            let p = plan(
                &every_2s,
                t0 + cursor * 1000,
                t0 + now * 1000,
                catch_up,
                LATE_MAX_MS,
            );
            let want: Vec<u64> = fired.iter().map(|x| t0 + x * 1000).collect();
            assert_eq!(p.fire, want, "row {i}");
            assert_eq!(p.skipped, skipped, "row {i}");
            assert_eq!(p.cursor, t0 + after * 1000, "row {i}");
        }
        // A shorter `cron.missed_after_seconds` (3 s): down 13 s, firings up to 10 s ago missed.
        let p = plan(&every_2s, t0, t0 + 13_000, CatchUp::None, 3_000);
        assert_eq!(p.fire, [t0 + 10_000, t0 + 12_000]);
        assert_eq!((p.skipped, p.cursor), (true, t0 + 8_000));
        let p = plan(&every_2s, t0, t0 + 13_000, CatchUp::Latest, 3_000);
        assert_eq!(p.fire, [t0 + 8_000, t0 + 10_000, t0 + 12_000]);
        // A long backlog is cut at the per-tick bound.
        let p = plan(&every_2s, t0, t0 + 59_000, CatchUp::None, LATE_MAX_MS);
        assert!(p.fire.len() <= FIRINGS_PER_TICK_MAX);
    }

    #[test]
    fn a_daily_report_after_a_day_down_runs_once_with_catch_up() {
        let daily = Schedule::parse("0 9 * * *", Some("Asia/Shanghai")).unwrap();
        let last = utc("2026-03-01T01:00:00Z");
        let now = utc("2026-03-04T03:00:00Z");
        let p = plan(&daily, last, now, CatchUp::Latest, LATE_MAX_MS);
        assert_eq!(p.fire, [utc("2026-03-04T01:00:00Z")]);
        assert!(p.skipped);
        let p = plan(&daily, last, now, CatchUp::None, LATE_MAX_MS);
        assert!(p.fire.is_empty());
        assert_eq!(p.cursor, utc("2026-03-04T01:00:00Z"));
    }
}

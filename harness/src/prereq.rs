//! Test prerequisites outside Rust: `python3` (and a module of it), iptables with root for
//! partitions. A test that lacks one must not pass green without running: under `CI=true`
//! [`require`] fails the test, naming what to install (`.ci/run` installs all of them);
//! elsewhere it prints a loud `SKIPPED` line and the test returns.

use std::process::{Command, Stdio};

/// Is this a CI run? `CI` set to `true` or `1` (any case), as CI systems set it.
pub fn is_ci() -> bool {
    ci_value(std::env::var("CI").ok().as_deref())
}

/// The decision behind [`is_ci`], from the variable's value.
pub fn ci_value(v: Option<&str>) -> bool {
    v.is_some_and(|v| {
        let v = v.trim();
        v.eq_ignore_ascii_case("true") || v == "1"
    })
}

/// `Ok` when the prerequisite `what` is present (`check`). Otherwise: under CI, panic with
/// the reason and `install`; elsewhere print a loud skip line and return `false`, and the
/// caller returns without testing.
pub fn require(what: &str, check: Result<(), String>, install: &str) -> bool {
    let why = match check {
        Ok(()) => return true,
        Err(why) => why,
    };
    assert!(
        !is_ci(),
        "test prerequisite missing under CI=true: {what} ({why}). Install it: {install} \
         (.ci/run installs every prerequisite)"
    );
    eprintln!(
        "!!!!! SKIPPED: {what} is missing ({why}); this test did not run. Install it: {install}. \
         Under CI=true this is a failure."
    );
    false
}

/// Can `python3` run (and, when given, import `module`)?
pub fn python(module: Option<&str>) -> Result<(), String> {
    let mut cmd = Command::new("python3");
    match module {
        Some(m) => cmd.arg("-c").arg(format!("import {m}")),
        None => cmd.arg("--version"),
    };
    match cmd.stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(match module {
            Some(m) => format!("python3 cannot import {m} ({s})"),
            None => format!("python3 --version failed ({s})"),
        }),
        Err(e) => Err(format!("python3 cannot be run: {e}")),
    }
}

/// Can partitions be made here (iptables usable: installed, root, netfilter)? Probes by
/// creating and removing a chain.
pub fn partitions() -> Result<(), String> {
    crate::partition::Firewall::probe()
        .map(drop)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_values() {
        let cases = [
            (None, false),
            (Some("true"), true),
            (Some("TRUE"), true),
            (Some(" true\n"), true),
            (Some("1"), true),
            (Some("false"), false),
            (Some("0"), false),
            (Some(""), false),
        ];
        for (v, want) in cases {
            assert_eq!(ci_value(v), want, "{v:?}");
        }
    }

    #[test]
    fn a_present_prerequisite_is_required_quietly() {
        assert!(require("nothing", Ok(()), "nothing"));
    }
}

//! `openclaw-node demo --tasks 20` run as an operator runs it: a process, its exit code, its
//! output. Checks the outcome lines are there, every task finished, and nothing it started is
//! left running (no process mentions its run dir, and the run dir is gone).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The demo bounds itself; this only guards the test run against a hang.
const DEMO_DEADLINE: Duration = Duration::from_secs(150);

/// Processes whose command line mentions `needle` (Linux /proc; empty elsewhere).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(needle) {
            out.push(format!("{}: {text}", e.file_name().to_string_lossy()));
        }
    }
    out
}

#[test]
fn the_demo_survives_a_kill_and_reports_the_outcome() {
    let stdout = tempfile::NamedTempFile::new().expect("temp file");
    let stderr = tempfile::NamedTempFile::new().expect("temp file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_openclaw-node"))
        .args(["demo", "--tasks", "20"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(stdout.reopen().expect("reopen"))
        .stderr(stderr.reopen().expect("reopen"))
        .spawn()
        .expect("spawn openclaw-node demo");
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if started.elapsed() > DEMO_DEADLINE {
            // SIGTERM lets the demo stop its cluster (bounded wait); then make sure it is gone.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = openclaw_harness::process::wait_exit(&mut child, Duration::from_secs(10));
            let _ = child.kill();
            let _ = child.wait();
            panic!("the demo ran longer than {DEMO_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let err = std::fs::read_to_string(stderr.path()).unwrap_or_default();
    let out = std::fs::read_to_string(stdout.path()).expect("read stdout");
    assert!(
        status.success(),
        "exit {status}\nstdout:\n{out}\nstderr:\n{err}"
    );
    for want in [
        "node 0     http://127.0.0.2:",
        "SIGKILL node",
        "Cluster: leader",
        "Outcome",
        "tasks acknowledged:  20 of 20 submitted",
        "tasks succeeded:",
        "tasks failed:        0",
        "ran on:",
        "re-run after the kill (attempts > 1):",
        "writes resumed:      ",
        "leader before:",
        "leader after:",
    ] {
        assert!(
            out.contains(want),
            "missing {want:?} in\n{out}\nstderr:\n{err}"
        );
    }
    assert!(!out.contains("NOT FINISHED"), "{out}");
    assert!(!out.contains("writes resumed:      NOT"), "{out}");

    // Nothing left behind: no process mentions the run dir, which is removed.
    let run_dir = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("run dir"))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the run dir is printed")
        .to_string();
    assert!(run_dir.len() > 5, "run dir {run_dir:?}");
    let mut left = processes_mentioning(&run_dir);
    let sim = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("simulator"))
        .and_then(|rest| rest.trim().strip_prefix("http://"))
        .expect("the simulator's URL is printed")
        .to_string();
    left.extend(processes_mentioning(&format!("--listen {sim}")));
    assert!(left.is_empty(), "processes left behind: {left:?}");
    assert!(
        !std::path::Path::new(&run_dir).exists(),
        "run dir {run_dir} not removed"
    );
}

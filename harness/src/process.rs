//! What every child process of the harness shares: the scrubbed environment it starts with,
//! its log file (stdout and stderr appended, each start marked with a line), the log's tail
//! for error messages, free ports, signals and bounded waits for an exit.
//!
//! Invariant: a child's environment never carries the developer's `OPENCLAW*`, `*_API_KEY` or
//! `RUST_LOG` variables ([`scrub_env`]); whatever a child needs is set explicitly after that.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill as send_signal, Signal};
use nix::unistd::Pid;

use crate::error::{io, HarnessError};

/// Deadline of one control request (a ready probe, a status read) to a child.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(2);
/// Poll interval of every wait.
pub const POLL: Duration = Duration::from_millis(100);
/// Tries at a start whose port was taken between picking and binding.
pub const PORT_TRIES_MAX: u32 = 3;
/// How much of a log file an error message quotes.
pub const LOG_TAIL_BYTES: u64 = 4096;

/// Remove the developer's environment that would change a child's behaviour: every
/// `OPENCLAW*` variable (config overrides, tokens, secrets), every `*_API_KEY` and `RUST_LOG`.
/// Also for one-shot commands of the binary (`openclaw-node queue ...`) run by tests.
pub fn scrub_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let name = k.to_string_lossy();
        if name.starts_with("OPENCLAW") || name.ends_with("_API_KEY") {
            cmd.env_remove(&k);
        }
    }
    cmd.env_remove("RUST_LOG");
}

/// A free TCP port on `ip` (bound, then released; a small race with other programs remains,
/// which is why starts retry on "address already in use").
pub fn free_port(ip: Ipv4Addr) -> Result<u16, HarnessError> {
    let l = TcpListener::bind(SocketAddrV4::new(ip, 0))
        .map_err(io(format!("binding {ip}:0 to find a free port")))?;
    Ok(l.local_addr()
        .map_err(io("reading a bound port".into()))?
        .port())
}

/// A free HTTP port and a free cluster port P whose P + 1 (the ractor mesh) is free too.
pub fn pick_ports(ip: Ipv4Addr) -> Result<(SocketAddr, SocketAddr), HarnessError> {
    const TRIES_MAX: u32 = 64;
    let http = free_port(ip)?;
    for _ in 0..TRIES_MAX {
        let Ok(first) = TcpListener::bind(SocketAddrV4::new(ip, 0)) else {
            continue;
        };
        let Ok(p) = first.local_addr().map(|a| a.port()) else {
            continue;
        };
        if p == u16::MAX || p + 1 == http || p == http {
            continue;
        }
        if TcpListener::bind(SocketAddrV4::new(ip, p + 1)).is_ok() {
            return Ok((
                SocketAddr::V4(SocketAddrV4::new(ip, http)),
                SocketAddr::V4(SocketAddrV4::new(ip, p)),
            ));
        }
    }
    Err(HarnessError::Spec(format!(
        "no free port pair P, P+1 on {ip} after {TRIES_MAX} tries"
    )))
}

/// Did a start fail because its port was taken ("Address already in use" in its log)?
pub fn looks_like_port_clash(log: &str) -> bool {
    let l = log.to_lowercase();
    l.contains("address already in use") || l.contains("addrinuse")
}

/// Open `path` for appending and write a marker line for this start.
pub(crate) fn append_log(path: &Path, marker: &str) -> Result<File, HarnessError> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io(format!("opening {}", path.display())))?;
    writeln!(f, "----- openclaw-harness: {marker}")
        .map_err(io(format!("writing {}", path.display())))?;
    Ok(f)
}

/// Spawn `cmd` with stdin closed and stdout + stderr appended to `log` after a `marker` line.
pub(crate) fn spawn_logged(
    cmd: &mut Command,
    log: &Path,
    marker: &str,
    what: &str,
) -> Result<Child, HarnessError> {
    let f = append_log(log, marker)?;
    let out = f
        .try_clone()
        .map_err(io(format!("duplicating the handle of {}", log.display())))?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(f)
        .spawn()
        .map_err(io(format!("spawning {what}")))
}

/// The last [`LOG_TAIL_BYTES`] of a log file (empty when unreadable).
pub fn log_tail(path: &Path) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
    let mut buf = Vec::new();
    let _ = f.take(LOG_TAIL_BYTES).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// SIGKILL and reap (no-op when there is no child).
pub(crate) fn kill_and_reap(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Has the child exited by itself? Reaps it (and clears the slot) when it has.
pub(crate) fn reap_if_exited(child: &mut Option<Child>) -> Option<ExitStatus> {
    let st = child.as_mut()?.try_wait().ok().flatten()?;
    *child = None;
    Some(st)
}

/// Send `sig` to process `pid`.
pub(crate) fn signal(pid: u32, sig: Signal) -> Result<(), nix::Error> {
    let pid = i32::try_from(pid).map_err(|_| nix::Error::ESRCH)?;
    send_signal(Pid::from_raw(pid), sig)
}

/// Wait (polling, blocking this thread) for a child to exit; `None` after `deadline`.
pub fn wait_exit(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + deadline;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(POLL / 2);
    }
}

/// The HTTP client of the harness's own probes: short timeouts, no proxy.
pub(crate) fn control_client() -> Result<reqwest::Client, HarnessError> {
    reqwest::Client::builder()
        .timeout(CONTROL_TIMEOUT)
        .no_proxy()
        .build()
        .map_err(|e| HarnessError::Io {
            what: "building the HTTP client".into(),
            source: std::io::Error::other(e),
        })
}

/// GET `url` and parse the JSON answer; a non-2xx status is an error.
pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> Result<T, HarnessError> {
    let err = |m: String| HarnessError::Http {
        url: url.to_string(),
        message: m,
    };
    let r = http.get(url).send().await.map_err(|e| err(e.to_string()))?;
    if !r.status().is_success() {
        return Err(err(format!("status {}", r.status())));
    }
    r.json().await.map_err(|e| err(e.to_string()))
}

/// Does GET `url` answer 2xx now?
pub(crate) async fn answers(http: &reqwest::Client, url: &str) -> bool {
    matches!(http.get(url).send().await, Ok(r) if r.status().is_success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_in_pairs() {
        let (http, cluster) = pick_ports(Ipv4Addr::LOCALHOST).expect("ports");
        assert_ne!(http.port(), cluster.port());
        assert_ne!(http.port(), cluster.port() + 1);
    }

    #[test]
    fn port_clashes_are_recognised() {
        let cases = [
            (
                "Error: binding HTTP on 127.0.0.1:9: Address already in use (os error 98)",
                true,
            ),
            ("kind: AddrInUse", true),
            ("Error: wrong cluster secret", false),
            ("", false),
        ];
        for (log, want) in cases {
            assert_eq!(looks_like_port_clash(log), want, "{log:?}");
        }
    }

    #[test]
    fn the_environment_is_scrubbed() {
        // Only this test sets these names.
        std::env::set_var("OPENCLAW_HARNESS_PROBE", "x");
        std::env::set_var("SOMEONES_API_KEY", "k");
        let mut cmd = Command::new("true");
        scrub_env(&mut cmd);
        let removed: Vec<String> = cmd
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        for want in ["OPENCLAW_HARNESS_PROBE", "SOMEONES_API_KEY", "RUST_LOG"] {
            assert!(
                removed.iter().any(|k| k == want),
                "{want} not removed: {removed:?}"
            );
        }
    }

    #[test]
    fn a_log_tail_is_the_end_of_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path().join("x.log");
        assert_eq!(log_tail(&p), "");
        let f = append_log(&p, "start #1").expect("log");
        drop(f);
        let mut f = OpenOptions::new().append(true).open(&p).expect("open");
        f.write_all(&vec![b'a'; 2 * LOG_TAIL_BYTES as usize])
            .expect("write");
        writeln!(f, "the end").expect("write");
        let tail = log_tail(&p);
        assert_eq!(tail.len() as u64, LOG_TAIL_BYTES);
        assert!(tail.ends_with("the end\n"));
        assert!(std::fs::read_to_string(&p)
            .expect("read")
            .starts_with("----- openclaw-harness: start #1\n"));
    }
}

//! Small helpers with no better home: default paths, the host name, the two clocks (wall-clock
//! Unix milliseconds and the node's monotonic milliseconds), the doubling back-off and the
//! constant-time comparison of secrets, and the bytes a directory holds on disk.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Wall-clock Unix milliseconds (stamped into records by the node that changes them).
/// Whether a presented secret equals the expected one, in time independent of where they differ
/// (`subtle`); only the length may leak. Every secret check uses it: API tokens, the cluster
/// secret, Feishu's verification token and signature.
pub fn same_secret(given: &[u8], want: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    given.ct_eq(want).into()
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The node's monotonic clock: milliseconds since the node started. Copied into every part
/// that times waits, so they all count from the same instant.
#[derive(Debug, Clone, Copy)]
pub struct Mono(Instant);

impl Mono {
    pub fn start() -> Mono {
        Mono(Instant::now())
    }
    /// Monotonic milliseconds since the node started.
    pub fn ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

/// Back-off before attempt `n` (1-based; attempt 1 has none): `initial × 2^(n-2)`.
pub fn backoff_before(attempt: u32, initial: Duration) -> Duration {
    if attempt <= 1 {
        return Duration::ZERO;
    }
    initial.saturating_mul(1u32 << (attempt - 2).min(16))
}

/// `~/.openclaw` (or `./.openclaw` when HOME is unset).
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".openclaw")
}

/// The machine's host name, for the default node name.
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "openclaw-node".to_string())
}

/// Bytes of the files under `dir`, recursively (0 when absent or unreadable): what the benches
/// report as a store's size on disk.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_secret_table() {
        let cases: [(&[u8], &[u8], bool); 5] = [
            (b"abc", b"abc", true),
            (b"abc", b"abd", false),
            (b"abd", b"abc", false),
            (b"abc", b"abcd", false),
            (b"", b"x", false),
        ];
        for (given, want, ok) in cases {
            assert_eq!(same_secret(given, want), ok, "{given:?} {want:?}");
        }
    }

    #[test]
    fn backoff_doubles_from_the_second_attempt() {
        let i = Duration::from_millis(100);
        let got: Vec<u128> = (1..=5).map(|n| backoff_before(n, i).as_millis()).collect();
        assert_eq!(got, vec![0, 100, 200, 400, 800]);
    }
}

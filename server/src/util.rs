//! Small helpers with no better home: default paths and the host name.

use std::path::PathBuf;

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

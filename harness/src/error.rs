//! What can go wrong driving the processes. Every wait that runs out names what it waited for
//! and carries the process's log tail.

use std::time::Duration;

use crate::partition::FirewallError;

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("bad spec: {0}")]
    Spec(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} exited ({status}); log tail:\n{log}")]
    Exited {
        what: String,
        status: String,
        log: String,
    },
    #[error("{what} not ready within {after:?}; log tail:\n{log}")]
    Timeout {
        what: String,
        after: Duration,
        log: String,
    },
    #[error("the cluster did not converge within {after:?}: {reason}")]
    NoConvergence { after: Duration, reason: String },
    #[error("no node {0}")]
    NoSuchNode(usize),
    #[error("node {index} is not running")]
    NotRunning { index: usize },
    #[error("node {index} is already running")]
    AlreadyRunning { index: usize },
    #[error("signal {signal} to node {index}: {source}")]
    Signal {
        index: usize,
        signal: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("GET {url}: {message}")]
    Http { url: String, message: String },
    #[error(transparent)]
    Firewall(#[from] FirewallError),
}

/// `map_err` for I/O: what was being done, and the error.
pub(crate) fn io(what: String) -> impl FnOnce(std::io::Error) -> HarnessError {
    move |source| HarnessError::Io { what, source }
}

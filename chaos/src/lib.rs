//! openclaw-chaos: fault injection against real `openclaw-node` processes, with invariant
//! checks and a seed that reproduces the fault schedule.
//!
//! The cluster itself (simulator + N nodes on 127.0.0.2.., kill, SIGSTOP / SIGCONT, restart,
//! iptables partitions, the status views) is `openclaw-harness`, shared with the integration
//! tests, the demo and the benches; this crate adds load, faults and checks.
//!
//! - [`workload`]: seeded task submissions at a bounded rate, recording every 202.
//! - [`faults`]: the seeded schedule of rounds (pure).
//! - [`observe`]: polls every node's `/api/cluster` to record each (term, leader) seen.
//! - [`checks`]: the invariants as pure functions over observations.
//! - [`run`]: one run from start to verdict, and its printed summary.
//! - [`rng`]: the suite's fixed seeded generator.
//!
//! Invariant: this crate never links the node (`openclaw-node`): it drives node processes over
//! HTTP and signals, so it tests the binary an operator runs. It may use `openclaw-proto`.

pub mod checks;
pub mod faults;
pub mod observe;
pub mod rng;
pub mod run;
pub mod workload;

pub use run::{run, Report, RunConfig};

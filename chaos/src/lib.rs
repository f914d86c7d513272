//! openclaw-chaos: fault injection against real `openclaw-node` processes, with invariant
//! checks and a seed that reproduces the fault schedule.
//!
//! - [`harness`]: a real cluster (simulator + N nodes on 127.0.0.2..) with kill, SIGSTOP /
//!   SIGCONT, restart, partition and heal; no child outlives it. Also used by integration
//!   tests and demos.
//! - [`partition`]: iptables drop rules between node addresses in a chain owned by the run.
//! - [`workload`]: seeded task submissions at a bounded rate, recording every 202.
//! - [`faults`]: the seeded schedule of rounds (pure).
//! - [`observe`]: polls every node's `/api/cluster` to record each (term, leader) seen.
//! - [`checks`]: the invariants as pure functions over observations.
//! - [`run`]: one run from start to verdict, and its printed summary.
//! - [`status`], [`rng`]: the JSON the suite reads, and its fixed seeded generator.
//!
//! Invariant: this crate never links the node (`openclaw-node`): it drives node processes over
//! HTTP and signals, so it tests the binary an operator runs. It may use `openclaw-proto`.

pub mod checks;
pub mod faults;
pub mod harness;
pub mod observe;
pub mod partition;
pub mod rng;
pub mod run;
pub mod status;
pub mod workload;

pub use harness::{Cluster, ClusterSpec, Convergence, HarnessError, Node, NodeState};
pub use run::{run, Report, RunConfig};

//! openclaw-harness: the one process harness. It starts the `openclaw-node` binary as child
//! processes — a standalone simulator (`openclaw-node sim-provider`) and one or more nodes — and
//! drives them over HTTP and signals. The integration tests (`tests/common`), the chaos suite
//! (`chaos/`), `openclaw-node demo` and every `openclaw-node bench` scenario use it; nothing
//! else in the workspace spawns a node or a simulator.
//!
//! - [`process`]: what every child shares — a scrubbed environment, a log file per process
//!   (stdout and stderr, appended across restarts, each start marked), log tails, free ports,
//!   signals, bounded waits for an exit.
//! - [`sim`]: the simulator process ([`Sim`]).
//! - [`node`]: one node process ([`Node`]) on its data dir and config: start (waiting for its
//!   ready probe, retrying on a lost port race), kill, SIGTERM with a grace, SIGSTOP/SIGCONT,
//!   restart on the same data dir.
//! - [`cluster`]: a simulator and N clustered nodes on 127.0.0.2.. ([`Cluster`]): wait for a
//!   leader, kill/stop/restart node `i`, partition and heal, a stranger that tries to join.
//! - [`partition`]: iptables drop rules between node addresses, in a chain owned by the run.
//! - [`prereq`]: test prerequisites outside Rust (python3, iptables): under `CI=true` a missing
//!   one fails the test, elsewhere it is a loud skip.
//! - [`status`]: the harness's lenient views of `/api/cluster`, `/api/tasks/{id}` and
//!   `/sim/calls`, and [`status::agreement`] (do the nodes agree on a leader?).
//!
//! Invariants: no process outlives the value that started it (`Drop` SIGKILLs and reaps, also
//! while unwinding from a panic); every wait has a deadline and fails with the process's log
//! tail; the harness never links the node (only `openclaw-proto`), and the server crate never
//! depends on the harness.

pub mod cluster;
pub mod error;
pub mod node;
pub mod partition;
pub mod prereq;
pub mod process;
pub mod sim;
pub mod status;

pub use cluster::{node_config, Cluster, ClusterSpec, Convergence, NODES_MAX};
pub use error::HarnessError;
pub use node::{Node, NodeSpec, NodeState};
pub use process::{free_port, log_tail, scrub_env};
pub use sim::{Sim, SimSpec};

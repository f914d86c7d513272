//! openclaw-proto: every type that crosses a process boundary.
//!
//! - [`api`]: the task API (`/api/tasks`) request and response shapes, the error body, and the
//!   sessions API's answers (`/api/sessions`).
//! - [`openai`]: OpenAI-compatible chat-completion DTOs (`/v1/chat/completions`, `/v1/models`).
//! - [`anthropic`]: Anthropic Messages API DTOs, used by the anthropic provider and the simulator.
//! - [`ops`]: one node's operator views (`/api/budget`, `/api/limits`, `/api/cron`).
//! - [`cache`]: request-cache entries replicated between cluster nodes (`POST /cluster/cache`).
//! - [`cluster`]: the cluster status (`/api/cluster`, `openclaw-node status --json`).
//! - [`session`]: a conversation's stored state and the turn that changes it.
//! - [`task`]: the stored task envelope ([`task::TaskRecord`]) and its status.
//! - [`codec`]: the one place that turns stored/sent envelopes into bytes (postcard + version byte).
//!
//! Invariant: this crate does no I/O and knows nothing about HTTP servers, sled or actors.

pub mod anthropic;
pub mod api;
pub mod cache;
pub mod cluster;
pub mod codec;
pub mod memory;
pub mod openai;
pub mod ops;
pub mod session;
pub mod task;

pub use api::{Complexity, ErrorBody, Priority, TaskSubmit, TaskView};
pub use task::{CronFiring, CronMark, TaskRecord, TaskStatus};

//! One actor per configured agent: owns the agent's workspace (SOUL.md, AGENTS.md, MEMORY.md,
//! memory/*.md, skills/*) and turns (history, input) into the prompt with the chapter's token
//! breakdown. The workspace is read at start and re-read on `Reload`. With the knowledge cache
//! on, the caller hands in the retrieved memory chunks and they replace the whole memory.
//! `openclaw_memory_files_total` is kept by the knowledge module (`knowledge::Knowledge`).
//!
//! Invariant: no provider call here; building a prompt is CPU work on data in memory.

use std::path::PathBuf;
use std::sync::Arc;

use openclaw_proto::api::PromptBreakdown;
use openclaw_proto::openai::ChatMessage;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::agents::prompt::{MemoryPiece, Workspace};
use crate::config::Config;

/// Where an agent's workspace lives: configured, else `<data-dir>/workspace` for `main` and
/// `<data-dir>/workspace-<name>` for the others.
pub fn workspace_dir(cfg: &Config, data_dir: &std::path::Path, name: &str) -> PathBuf {
    match cfg.agents.get(name).and_then(|a| a.workspace.clone()) {
        Some(p) => p,
        None if name == "main" => data_dir.join("workspace"),
        None => data_dir.join(format!("workspace-{name}")),
    }
}

#[derive(Clone)]
pub struct AgentArgs {
    pub name: String,
    pub workspace: PathBuf,
}

/// A built prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltPrompt {
    pub messages: Vec<ChatMessage>,
    pub breakdown: PromptBreakdown,
    /// The knowledge cache's chunks in the memory section (empty: whole memory or none).
    pub memory_chunks: Vec<openclaw_proto::api::MemoryChunkRef>,
}

pub enum AgentMsg {
    BuildPrompt {
        history: Vec<ChatMessage>,
        input: String,
        /// The knowledge cache's chunks to use as the memory section (`None`: whole memory).
        memory: Option<Vec<MemoryPiece>>,
        reply: RpcReplyPort<BuiltPrompt>,
    },
    /// Re-read the workspace from disk.
    Reload,
}
impl ractor::Message for AgentMsg {}

pub struct AgentState {
    name: String,
    dir: PathBuf,
    workspace: Arc<Workspace>,
}

#[derive(Clone)]
pub struct Agent;

impl Actor for Agent {
    type Msg = AgentMsg;
    type State = AgentState;
    type Arguments = AgentArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: AgentArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let workspace = load(&args.name, &args.workspace);
        Ok(AgentState {
            name: args.name,
            dir: args.workspace,
            workspace,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AgentMsg::BuildPrompt {
                history,
                input,
                memory,
                reply,
            } => {
                let (messages, breakdown) = state.workspace.build_retrieved(
                    &state.name,
                    &history,
                    &input,
                    memory.as_deref(),
                    &crate::tokens::count,
                );
                let _ = reply.send(BuiltPrompt {
                    messages,
                    breakdown,
                    memory_chunks: Vec::new(),
                });
            }
            AgentMsg::Reload => {
                state.workspace = load(&state.name, &state.dir);
            }
        }
        Ok(())
    }
}

fn load(name: &str, dir: &std::path::Path) -> Arc<Workspace> {
    match Workspace::load(dir) {
        Ok(ws) => {
            tracing::info!(agent = %name, dir = %dir.display(), memory_files = ws.memory_files(), "agent workspace loaded");
            Arc::new(ws)
        }
        Err(e) => {
            tracing::warn!(agent = %name, dir = %dir.display(), error = %e, "agent workspace unreadable; using an empty one");
            Arc::new(Workspace::default())
        }
    }
}

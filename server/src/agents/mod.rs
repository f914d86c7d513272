//! Agents: a workspace turned into a prompt (pure, [`prompt`]), one actor per agent
//! ([`agent`]) that holds its workspace, and memory files written through the API
//! ([`memory`]). [`Agents`] is the handle the rest of the node uses; with the knowledge cache
//! it retrieves the memory chunks for the input before the actor builds the prompt.

pub mod agent;
pub mod memory;
pub mod prompt;

use std::time::Duration;

use openclaw_proto::openai::ChatMessage;

use crate::config::Config;
use crate::supervisor::CurrentMap;
use agent::{AgentMsg, BuiltPrompt};

/// How long a caller waits for an agent actor to build a prompt (it may be restarting).
pub const AGENT_CALL_TIMEOUT_MS: u64 = 5_000;
/// Attempts to reach an agent that is restarting, [`AGENT_RETRY_PAUSE`] apart.
pub const AGENT_ATTEMPTS: u32 = 3;
pub const AGENT_RETRY_PAUSE: Duration = Duration::from_millis(200);

/// The agents this node runs: `main` always, plus every configured one.
pub fn agent_names(cfg: &Config) -> Vec<String> {
    let mut names: Vec<String> = cfg.agents.keys().cloned().collect();
    if !names.iter().any(|n| n == "main") {
        names.insert(0, "main".to_string());
    }
    names
}

/// The supervised child name of an agent's actor.
pub fn child_name(agent: &str) -> String {
    format!("agent:{agent}")
}

/// The agent actors, by name, and the knowledge cache their prompts retrieve memory from.
#[derive(Clone, Default)]
pub struct Agents {
    pub actors: CurrentMap<AgentMsg>,
    pub knowledge: Option<crate::knowledge::Knowledge>,
}

impl Agents {
    /// Build `agent`'s prompt for `input` after `history`.
    pub async fn build_prompt(
        &self,
        agent: &str,
        history: Vec<ChatMessage>,
        input: &str,
    ) -> Result<BuiltPrompt, String> {
        let retrieved = match &self.knowledge {
            Some(k) => k.retrieve(agent, input).await,
            None => None,
        };
        let (memory, refs) = match retrieved {
            Some(r) => (Some(r.pieces), r.refs),
            None => (None, Vec::new()),
        };
        for _ in 0..AGENT_ATTEMPTS {
            if let Some(a) = self.actors.get(agent) {
                let res = ractor::call_t!(
                    a,
                    |reply| AgentMsg::BuildPrompt {
                        history: history.clone(),
                        input: input.to_string(),
                        memory: memory.clone(),
                        reply,
                    },
                    AGENT_CALL_TIMEOUT_MS
                );
                if let Ok(mut p) = res {
                    p.memory_chunks = refs.clone();
                    return Ok(p);
                }
            }
            tokio::time::sleep(AGENT_RETRY_PAUSE).await;
        }
        Err(format!("agent `{agent}` is not available"))
    }

    /// Make `agent` re-read its workspace (a memory file changed), and re-index its memory.
    pub fn reload(&self, agent: &str) {
        if let Some(a) = self.actors.get(agent) {
            let _ = a.cast(AgentMsg::Reload);
        }
        if let Some(k) = &self.knowledge {
            k.changed(agent);
        }
    }
}

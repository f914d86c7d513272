//! Agents: a workspace turned into a prompt (pure), and one actor per agent.

pub mod agent;
pub mod prompt;

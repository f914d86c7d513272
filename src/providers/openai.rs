//! (being written by the providers work) OpenAI-compatible provider.
use crate::config::{ProviderKind, Secret};
pub struct OpenAiProvider;
impl OpenAiProvider {
    pub fn new(_: reqwest::Client, _: &str, _: &str, _: Option<Secret>, _: ProviderKind) -> Self {
        OpenAiProvider
    }
}

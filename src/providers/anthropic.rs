//! (being written by the providers work) Anthropic provider.
use crate::config::Secret;
pub struct AnthropicProvider;
impl AnthropicProvider {
    pub fn new(_: reqwest::Client, _: &str, _: &str, _: Secret) -> Self {
        AnthropicProvider
    }
}

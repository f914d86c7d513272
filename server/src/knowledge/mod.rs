//! The knowledge cache (issue 11 item 2): an agent's memory retrieved by relevance instead of
//! sent whole. So far its pure parts only — nothing here is wired into the node yet:
//!
//! - [`chunk`]: markdown split by headings and paragraphs into chunks of about
//!   [`chunk::TARGET_TOKENS`] tokens, consecutive chunks of one section overlapping by about
//!   [`chunk::OVERLAP_TOKENS`];
//! - [`score`]: BM25 over the chunks, the hybrid score (cosine of the embeddings + normalised
//!   BM25) and the choice of the top chunks within a token budget.
//!
//! The embeddings come from [`crate::embeddings::embed`]; the words from
//! [`crate::embeddings::lexical::words`], so BM25 and the simulator's vectors see the same terms.

pub mod chunk;
pub mod score;

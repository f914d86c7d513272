//! Retrieval scores (pure): BM25 over the chunks' words (English function words left out), the
//! hybrid score of a chunk — cosine of its embedding with the query's, plus its BM25 normalised
//! by the best of the candidates. Which chunks a prompt gets from these scores is
//! [`super::select`].
//!
//! The hybrid score is `alpha · max(cosine, 0) + (1 − alpha) · bm25 / max(max_bm25,
//! BM25_NORM_MIN)` (both parts in 0..=1): the vector finds rewordings a real embedding model
//! understands, BM25 keeps exact names, numbers and rare words (which the simulator's lexical
//! vectors and small models blur). The BM25 is normalised by the best candidate's so a real
//! keyword match weighs fully, but never by less than [`BM25_NORM_MIN`]: a question that shares
//! only common words with the memory would otherwise make its faint
//! BM25 look like a full match for every chunk, and all memory would look relevant.

use std::collections::HashMap;

use crate::embeddings::lexical::{is_stopword, words};

/// The terms BM25 counts: the words of `text` without English function words ("the", "is",
/// "what", …), which say nothing about what a chunk is about.
fn terms(text: &str) -> Vec<String> {
    let mut w = words(text);
    w.retain(|t| !is_stopword(t));
    w
}

/// BM25's term-frequency saturation.
pub const BM25_K1: f32 = 1.2;
/// BM25's length normalisation.
pub const BM25_B: f32 = 0.75;
/// Weight of the cosine in the hybrid score (the rest is BM25's).
pub const ALPHA_DEFAULT: f32 = 0.6;
/// The least BM25 the hybrid score normalises by: about one saturated match of a term found in
/// half the chunks (`(k1 + 1) · ln 2` ≈ 1.5). A rarer term or several terms score more; words
/// found in nearly every chunk score near 0.
pub const BM25_NORM_MIN: f32 = 1.5;

/// A BM25 index over documents (the chunks' indexed texts).
#[derive(Debug, Clone, Default)]
pub struct Bm25 {
    /// Term → documents containing it.
    df: HashMap<String, u32>,
    /// Each document's term counts and length in words.
    docs: Vec<(HashMap<String, u32>, u32)>,
    avg_len: f32,
}

impl Bm25 {
    pub fn new<S: AsRef<str>>(docs: &[S]) -> Bm25 {
        let mut df: HashMap<String, u32> = HashMap::new();
        let mut out = Vec::with_capacity(docs.len());
        let mut total = 0u64;
        for d in docs {
            let ws = terms(d.as_ref());
            total += ws.len() as u64;
            let mut tf: HashMap<String, u32> = HashMap::new();
            for w in ws.iter() {
                *tf.entry(w.clone()).or_default() += 1;
            }
            for t in tf.keys() {
                *df.entry(t.clone()).or_default() += 1;
            }
            out.push((tf, ws.len() as u32));
        }
        let avg_len = if docs.is_empty() {
            0.0
        } else {
            total as f32 / docs.len() as f32
        };
        Bm25 {
            df,
            docs: out,
            avg_len,
        }
    }

    pub fn len(&self) -> usize {
        self.docs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Each document's BM25 score for `query` (0 for no shared term).
    pub fn scores(&self, query: &str) -> Vec<f32> {
        let n = self.docs.len() as f32;
        let mut q = terms(query);
        q.sort();
        q.dedup();
        let idf: Vec<(String, f32)> = q
            .into_iter()
            .filter_map(|t| {
                let df = *self.df.get(&t)? as f32;
                Some((t, ((n - df + 0.5) / (df + 0.5) + 1.0).ln()))
            })
            .collect();
        self.docs
            .iter()
            .map(|(tf, len)| {
                let norm = 1.0 - BM25_B + BM25_B * (*len as f32) / self.avg_len.max(1.0);
                idf.iter()
                    .map(|(t, idf)| {
                        let f = tf.get(t).copied().unwrap_or(0) as f32;
                        idf * f * (BM25_K1 + 1.0) / (f + BM25_K1 * norm)
                    })
                    .sum()
            })
            .collect()
    }
}

/// The hybrid score of each candidate (`cosines[i]`, `bm25[i]`), in 0..=1.
pub fn hybrid(cosines: &[f32], bm25: &[f32], alpha: f32) -> Vec<f32> {
    let alpha = alpha.clamp(0.0, 1.0);
    let norm = bm25.iter().copied().fold(BM25_NORM_MIN, f32::max);
    cosines
        .iter()
        .zip(bm25)
        .map(|(c, b)| alpha * c.clamp(0.0, 1.0) + (1.0 - alpha) * (b / norm).clamp(0.0, 1.0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bm25_prefers_rare_shared_terms_and_shorter_documents() {
        let docs = [
            "the deploy uses port 8080 on the gateway",
            "the cat sleeps on the warm laptop",
            "the gateway deploy checklist: port 8080, port 9090, tls, dns, backups, alerts, logs",
            "the the the the",
        ];
        let ix = Bm25::new(&docs);
        assert_eq!(ix.len(), 4);
        let s = ix.scores("which port does the gateway deploy use?");
        assert!(s[0] > s[2], "shorter doc with the same terms wins: {s:?}");
        assert!(s[2] > s[1] && s[0] > s[3], "{s:?}");
        let s = ix.scores("laptop");
        assert!(s[1] > 0.0 && s[0] == 0.0 && s[2] == 0.0, "{s:?}");
        assert!(ix.scores("kubernetes").iter().all(|x| *x == 0.0));
        assert!(Bm25::new::<&str>(&[]).scores("x").is_empty());
    }

    #[test]
    fn hybrid_mixes_cosine_and_normalised_bm25() {
        // (cosines, bm25, alpha, want)
        type Case<'a> = (&'a [f32], &'a [f32], f32, &'a [f32]);
        let cases: &[Case] = &[
            (&[1.0, 0.0], &[2.0, 4.0], 0.5, &[0.75, 0.5]),
            (&[0.5, -0.3], &[0.0, 0.0], 0.6, &[0.3, 0.0]),
            (&[0.2, 0.9], &[5.0, 0.0], 0.0, &[1.0, 0.0]),
            (&[0.2, 0.9], &[5.0, 0.0], 1.0, &[0.2, 0.9]),
            (&[0.2], &[1.0], 7.0, &[0.2]),
            // A faint BM25 (only words found everywhere) is normalised by BM25_NORM_MIN, not
            // blown up to a full match.
            (&[0.1, 0.0], &[0.03, 0.015], 0.5, &[0.06, 0.005]),
            (&[0.0], &[0.75], 0.0, &[0.5]),
            (&[0.0], &[BM25_NORM_MIN], 0.0, &[1.0]),
        ];
        for (c, b, a, want) in cases {
            let got = hybrid(c, b, *a);
            for (g, w) in got.iter().zip(*want) {
                assert!(
                    (g - w).abs() < 1e-6,
                    "{c:?} {b:?} {a}: {got:?} want {want:?}"
                );
            }
        }
    }
}

//! The simulator's embeddings: deterministic and meaningful for LEXICAL similarity only (shared
//! words and spellings, not meaning). A text's features — lowercased word unigrams, word
//! bigrams and character 3-grams of each word (padded with spaces, so short words count; a
//! short list of English function words is down-weighted and gets no 3-grams) —
//! are hashed (FNV-1a, stable across runs and machines) into `dims` buckets with a hashed sign
//! (signed feature hashing: collisions cancel on average instead of piling up), then the vector
//! is L2-normalised. Near-duplicates share most features and score high; unrelated texts share
//! few and score near 0. Pure functions; [`cosine`] is the similarity the features above use.

/// Weight of a word unigram.
const W_UNIGRAM: f32 = 1.0;
/// Weight of a word bigram (word order).
const W_BIGRAM: f32 = 0.7;
/// Weight of a character 3-gram (spelling: plurals, inflections, typos).
const W_TRIGRAM: f32 = 0.35;

/// Weight of a unigram of [`STOPWORDS`] (they carry little of what a text is about, and
/// would make unrelated texts look alike); their character 3-grams are skipped.
const W_STOPWORD: f32 = 0.2;

/// Common English function words, down-weighted.
const STOPWORDS: [&str; 48] = [
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "can", "do", "does", "for", "from",
    "has", "have", "how", "i", "if", "in", "into", "is", "it", "its", "me", "my", "of", "on", "or",
    "our", "so", "that", "the", "their", "this", "to", "was", "we", "what", "when", "which", "who",
    "why", "will", "with", "you", "your", "s",
];

/// Whether `w` (lowercased) is one of [`STOPWORDS`].
pub fn is_stopword(w: &str) -> bool {
    STOPWORDS.contains(&w)
}

/// FNV-1a 64 of `bytes`: a feature's hash (stable across runs and machines, unlike
/// `DefaultHasher`).
fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn add(v: &mut [f32], kind: u8, feature: &str, weight: f32) {
    let h = fnv1a(std::iter::once(kind).chain(feature.bytes()));
    let bucket = (h % v.len() as u64) as usize;
    let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
    v[bucket] += sign * weight;
}

/// CJK ideographs, kana and hangul: scripts written without spaces, where each character
/// counts as a word (so word bigrams are character bigrams).
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30ff      // hiragana, katakana
        | 0x3400..=0x4dbf    // CJK extension A
        | 0x4e00..=0x9fff    // CJK unified ideographs
        | 0xac00..=0xd7af    // hangul syllables
        | 0xf900..=0xfaff    // CJK compatibility ideographs
        | 0x20000..=0x2ffff) // CJK extensions B..
}

/// The lowercased words of `text`: runs of letters and digits, each CJK character alone.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        if is_cjk(c) {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            out.push(c.to_string());
        } else if c.is_alphanumeric() {
            cur.extend(c.to_lowercase());
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The embedding of `text` in `dims` dimensions (unit length; all zeros for a text without a
/// letter or digit, or `dims == 0`).
pub fn embed(text: &str, dims: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; dims];
    if dims == 0 {
        return v;
    }
    let ws = words(text);
    for w in &ws {
        if is_stopword(w) {
            add(&mut v, b'u', w, W_STOPWORD);
            continue;
        }
        add(&mut v, b'u', w, W_UNIGRAM);
        let padded: Vec<char> = std::iter::once(' ')
            .chain(w.chars())
            .chain(std::iter::once(' '))
            .collect();
        for g in padded.windows(3) {
            let g: String = g.iter().collect();
            add(&mut v, b'c', &g, W_TRIGRAM);
        }
    }
    for pair in ws.windows(2) {
        add(&mut v, b'b', &format!("{} {}", pair[0], pair[1]), W_BIGRAM);
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in &mut v {
            *x /= norm;
        }
    }
    v
}

/// Cosine similarity of two vectors (0 when either is all zeros or the sizes differ).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot / (na.sqrt() * nb.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIMS: usize = 256;

    fn sim(a: &str, b: &str) -> f32 {
        cosine(&embed(a, DIMS), &embed(b, DIMS))
    }

    #[test]
    fn deterministic_unit_vectors() {
        let a = embed("How do I reset my password?", DIMS);
        assert_eq!(a, embed("How do I reset my password?", DIMS));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        assert!(embed("?!", DIMS).iter().all(|x| *x == 0.0));
        assert!(embed("x", 0).is_empty());
        // Case and punctuation do not matter.
        assert!(sim("Reset my password!", "reset my PASSWORD") > 0.999);
        // Pinned values: the simulator's embeddings must not drift between releases (stored
        // vectors would stop matching new ones).
        assert_eq!(fnv1a(*b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(*b"foobar"), 0x8594_4171_f739_67e8);
    }

    /// Measured (256 dims): the near pairs score 0.64–0.91 (0.64: "what's the capital city
    /// of France", a real rewording), the far pairs −0.09–0.12. The thresholds sit between,
    /// with room on both sides.
    #[test]
    fn near_duplicates_score_high_and_unrelated_texts_low() {
        let near = [
            (
                "How do I reset my password?",
                "How can I reset my password?",
            ),
            (
                "What is the capital of France?",
                "what's the capital city of France",
            ),
            (
                "Summarise the quarterly sales report for the board",
                "Summarize the quarterly sales report for the board please",
            ),
            (
                "The deployment failed because the database migration timed out",
                "deployment failed: the database migration timed out",
            ),
            (
                "Translate this sentence into German",
                "translate this sentence to German",
            ),
            ("买一张去北京的火车票", "我想买一张去北京的火车票"),
        ];
        let far = [
            (
                "How do I reset my password?",
                "The weather in Paris is sunny today",
            ),
            (
                "What is the capital of France?",
                "Kubernetes pods restart when the liveness probe fails",
            ),
            (
                "Summarise the quarterly sales report for the board",
                "My cat likes to sleep on the warm laptop",
            ),
            (
                "Translate this sentence into German",
                "rust borrow checker lifetimes",
            ),
            ("买一张去北京的火车票", "The deployment failed"),
            ("买一张去北京的火车票", "今天天气很好，我们去公园散步"),
        ];
        for (a, b) in near {
            let s = sim(a, b);
            assert!(s > NEAR_MIN, "near {s:.3}: {a:?} / {b:?}");
        }
        for (a, b) in far {
            let s = sim(a, b);
            assert!(s.abs() < FAR_MAX, "far {s:.3}: {a:?} / {b:?}");
        }
        // A near-duplicate outranks the same question about something else.
        let q = "How do I reset my password?";
        assert!(sim(q, "How can I reset my password?") > sim(q, "How do I reset my router?"));
    }

    const NEAR_MIN: f32 = 0.6;
    const FAR_MAX: f32 = 0.25;

    #[test]
    fn words_split_latin_runs_and_cjk_characters() {
        assert_eq!(words("What's NEW, café?"), ["what", "s", "new", "café"]);
        assert_eq!(
            words("买票to北京2026"),
            ["买", "票", "to", "北", "京", "2026"]
        );
        assert!(words(" -- ").is_empty());
    }

    #[test]
    fn cosine_edges() {
        assert_eq!(cosine(&[1.0, 0.0], &[0.0, 1.0]), 0.0);
        assert!((cosine(&[1.0, 1.0], &[2.0, 2.0]) - 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
        assert_eq!(cosine(&[1.0], &[1.0, 0.0]), 0.0);
    }
}

//! Which memory chunks go into a prompt (pure): [`select`] takes the chunks' hybrid scores
//! (see [`super::score`]), sizes and files and keeps only the relevant ones, best first:
//!
//! 1. **Score floor**: a chunk scoring under `max(MIN_SCORE, MIN_RELATIVE × best)` is noise and
//!    is not sent, however much room is left — a question about one topic must not bring the
//!    other topics' chunks along because they share a few of its words.
//! 2. **Diminishing returns per file**: the first [`FILE_CHUNKS_FREE`] chunks of a file need
//!    only the floor; each further chunk of the same file needs [`FILE_EXTRA_RELATIVE`] × best.
//! 3. **Near-duplicates**: a chunk whose similarity to a chunk already chosen is at least
//!    [`DUPLICATE_SIMILARITY`] (overlapping windows, a note copied into two files) adds nothing.
//! 4. **Bounds**: at most `k` chunks ([`PROMPT_CHUNKS_MAX`]) within `budget` tokens
//!    (`max_memory_tokens`); a chunk that does not fit is skipped and a smaller one after it may
//!    still fit.
//!
//! The thresholds were chosen by measurement (BENCHMARKS.md, "Knowledge cache";
//! `knowledge::sweep`): on the 30-topic corpus of tests/knowledge.rs and the 100-file corpus of
//! `bench --scenario knowledge` (the simulator's lexical embeddings), other topics' chunks that
//! share the question's frame ("the secret code of the … vault") score at most 0.60 of the best;
//! the asked topic's chunk is the best, and a question naming two topics has both topics' best
//! chunks at 0.91 of the best or more. Questions about nothing in the memory score 0.09–0.29 at
//! best, the asked topics' best chunks 0.63 or more.
//! [`Selection`] counts what each rule left out.

/// Chunks one prompt carries at most.
pub const PROMPT_CHUNKS_MAX: usize = 16;
/// A chunk scoring under this share of the best chunk's score is not sent.
pub const MIN_RELATIVE: f32 = 0.7;
/// A chunk scoring under this (hybrid score, 0..=1) is not sent even when it is the best: it
/// shares no word with the question and its vector is not similar either.
pub const MIN_SCORE: f32 = 0.15;
/// Chunks of one file that need only the score floor.
pub const FILE_CHUNKS_FREE: usize = 2;
/// The share of the best score a further chunk of a file already sent twice needs.
pub const FILE_EXTRA_RELATIVE: f32 = 0.85;
/// Similarity (cosine of the chunks' embeddings) from which a chunk is a near-duplicate of one
/// already chosen.
pub const DUPLICATE_SIMILARITY: f32 = 0.95;

/// One candidate chunk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Hybrid score, 0..=1 (0: never sent).
    pub score: f32,
    /// What the chunk costs in the memory section.
    pub tokens: u32,
    /// Which file the chunk is from (any id; equal ids are the same file).
    pub file: usize,
}

/// The rules [`select`] applies; [`Rules::DEFAULT`] is what prompts use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    pub k: usize,
    pub budget: u64,
    pub min_score: f32,
    pub min_relative: f32,
    pub file_chunks_free: usize,
    pub file_extra_relative: f32,
    pub duplicate_similarity: f32,
}

impl Rules {
    /// The prompt's rules, without its token budget (`max_memory_tokens`).
    pub const DEFAULT: Rules = Rules {
        k: PROMPT_CHUNKS_MAX,
        budget: 0,
        min_score: MIN_SCORE,
        min_relative: MIN_RELATIVE,
        file_chunks_free: FILE_CHUNKS_FREE,
        file_extra_relative: FILE_EXTRA_RELATIVE,
        duplicate_similarity: DUPLICATE_SIMILARITY,
    };

    pub fn with_budget(self, budget: u64) -> Rules {
        Rules { budget, ..self }
    }
}

/// What [`select`] chose and what it left out, by rule (a chunk is counted under the first
/// rule that left it out; chunks scoring 0 are not counted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Indexes of the chosen candidates, best first.
    pub chosen: Vec<usize>,
    pub below_floor: usize,
    pub file_capped: usize,
    pub duplicates: usize,
    /// Left out by `k` or the token budget.
    pub over_bounds: usize,
}

/// The chunks for a prompt: candidates by score (ties: lower index first), each kept if it
/// passes the score floor, its file's diminishing returns, is no near-duplicate of a chosen
/// chunk (`similarity(i, j)` of candidates `i` and `j`) and fits `k` and the budget.
pub fn select(
    cands: &[Candidate],
    similarity: impl Fn(usize, usize) -> f32,
    rules: &Rules,
) -> Selection {
    let mut order: Vec<usize> = (0..cands.len()).filter(|i| cands[*i].score > 0.0).collect();
    order.sort_by(|a, b| cands[*b].score.total_cmp(&cands[*a].score).then(a.cmp(b)));
    let best = order.first().map(|i| cands[*i].score).unwrap_or(0.0);
    let floor = rules
        .min_score
        .max(best * rules.min_relative.clamp(0.0, 1.0));
    let extra_floor = best * rules.file_extra_relative.clamp(0.0, 1.0);
    let mut out = Selection::default();
    let mut used = 0u64;
    let mut per_file: std::collections::HashMap<usize, usize> = Default::default();
    for i in order {
        let c = cands[i];
        let sent = per_file.get(&c.file).copied().unwrap_or(0);
        if c.score < floor {
            out.below_floor += 1;
        } else if sent >= rules.file_chunks_free && c.score < extra_floor {
            out.file_capped += 1;
        } else if out
            .chosen
            .iter()
            .any(|j| similarity(i, *j) >= rules.duplicate_similarity)
        {
            out.duplicates += 1;
        } else if out.chosen.len() >= rules.k || used + u64::from(c.tokens) > rules.budget {
            out.over_bounds += 1;
        } else {
            used += u64::from(c.tokens);
            *per_file.entry(c.file).or_default() += 1;
            out.chosen.push(i);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(score: f32, tokens: u32, file: usize) -> Candidate {
        Candidate {
            score,
            tokens,
            file,
        }
    }

    fn rules(k: usize, budget: u64) -> Rules {
        Rules {
            k,
            budget,
            ..Rules::DEFAULT
        }
    }

    /// No two candidates alike.
    fn distinct(_: usize, _: usize) -> f32 {
        0.0
    }

    #[test]
    fn select_table() {
        // (candidates, rules, want chosen, want (below_floor, file_capped, duplicates, over_bounds))
        type Case = (
            Vec<Candidate>,
            Rules,
            &'static [usize],
            (usize, usize, usize, usize),
        );
        let cases: Vec<Case> = vec![
            // One topic asked: its chunk is sent; the other topics' chunks that share the
            // question's frame (up to 0.60 of the best, as measured) are not, room or not.
            (
                vec![
                    c(0.83, 40, 0),
                    c(0.51, 40, 1),
                    c(0.45, 40, 2),
                    c(0.54, 150, 0),
                ],
                rules(16, 2_000),
                &[0],
                (3, 0, 0, 0),
            ),
            // Two topics asked: both files' best chunks are sent.
            (
                vec![c(0.80, 150, 0), c(0.73, 150, 1), c(0.40, 40, 2)],
                rules(16, 2_000),
                &[0, 1],
                (1, 0, 0, 0),
            ),
            // Exactly at the floor is kept.
            (
                vec![c(1.0, 10, 0), c(0.7, 10, 1), c(0.69, 10, 2)],
                rules(16, 2_000),
                &[0, 1],
                (1, 0, 0, 0),
            ),
            // Diminishing returns: a third chunk of file 0 needs 0.85 of the best; file 1's
            // chunk is not affected by file 0's count.
            (
                vec![
                    c(1.0, 10, 0),
                    c(0.9, 10, 0),
                    c(0.8, 10, 0),
                    c(0.86, 10, 0),
                    c(0.75, 10, 1),
                ],
                rules(16, 2_000),
                &[0, 1, 3, 4],
                (0, 1, 0, 0),
            ),
            // The budget binds: the best that fit; a smaller one after a big one still fits.
            (
                vec![c(0.9, 300, 0), c(0.85, 500, 1), c(0.8, 100, 2)],
                rules(16, 450),
                &[0, 2],
                (0, 0, 0, 1),
            ),
            // k binds.
            (
                vec![c(0.9, 1, 0), c(0.9, 1, 1), c(0.9, 1, 2)],
                rules(2, 2_000),
                &[0, 1],
                (0, 0, 0, 1),
            ),
            // Nothing relevant: all 0 (nothing counted), or all under the absolute floor.
            (
                vec![c(0.0, 1, 0), c(0.0, 1, 1)],
                rules(16, 2_000),
                &[],
                (0, 0, 0, 0),
            ),
            (
                vec![c(0.14, 1, 0), c(0.03, 1, 1)],
                rules(16, 2_000),
                &[],
                (2, 0, 0, 0),
            ),
            // The absolute floor binds when it is above 0.7 × best: 0.15 kept, 0.149 not.
            (
                vec![c(0.2, 1, 0), c(0.15, 1, 1), c(0.149, 1, 2)],
                rules(16, 2_000),
                &[0, 1],
                (1, 0, 0, 0),
            ),
            // A chunk larger than the whole budget is never sent.
            (vec![c(0.9, 2_000, 0)], rules(16, 1_000), &[], (0, 0, 0, 1)),
            // Nothing to choose from.
            (vec![], rules(16, 1_000), &[], (0, 0, 0, 0)),
        ];
        for (cands, r, want, (bf, fc, du, ob)) in cases {
            let s = select(&cands, distinct, &r);
            assert_eq!(s.chosen, want, "{cands:?}");
            assert_eq!(
                (s.below_floor, s.file_capped, s.duplicates, s.over_bounds),
                (bf, fc, du, ob),
                "{cands:?}"
            );
        }
    }

    #[test]
    fn near_duplicates_of_a_chosen_chunk_are_skipped() {
        // 1 repeats 0 (a note copied into another file); 2 overlaps 0 a little; 3 repeats 1,
        // which was not chosen, so 3 is judged against 0 and 2 only.
        let sim = [
            [1.0, 0.97, 0.40, 0.10],
            [0.97, 1.0, 0.30, 0.96],
            [0.40, 0.30, 1.0, 0.20],
            [0.10, 0.96, 0.20, 1.0],
        ];
        let cands = [c(0.9, 10, 0), c(0.89, 10, 1), c(0.8, 10, 0), c(0.75, 10, 2)];
        let s = select(&cands, |i, j| sim[i][j], &rules(16, 2_000));
        assert_eq!(s.chosen, [0, 2, 3]);
        assert_eq!(s.duplicates, 1);
        // At exactly the threshold it is a duplicate; just under, it is not.
        let at = |x: f32| move |_: usize, _: usize| x;
        let two = [c(0.9, 10, 0), c(0.9, 10, 1)];
        assert_eq!(
            select(&two, at(DUPLICATE_SIMILARITY), &rules(16, 100)).chosen,
            [0]
        );
        assert_eq!(
            select(&two, at(DUPLICATE_SIMILARITY - 0.01), &rules(16, 100)).chosen,
            [0, 1]
        );
    }

    #[test]
    fn default_rules_keep_their_relations() {
        let r = Rules::DEFAULT.with_budget(2_000);
        assert_eq!(r.budget, 2_000);
        assert!(r.min_relative < r.file_extra_relative && r.file_extra_relative <= 1.0);
        assert!(r.min_score < r.min_relative && r.file_chunks_free >= 1 && r.k >= 1);
        assert!(r.duplicate_similarity > 0.9 && r.duplicate_similarity <= 1.0);
    }
}

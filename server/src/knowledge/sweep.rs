//! The measurement behind [`super::select`]'s thresholds (test only, `#[ignore]`d: it prints,
//! asserts nothing): the pure pipeline — [`super::chunk`], the simulator's lexical embeddings,
//! [`super::score`]'s BM25 and hybrid score, [`super::select`] — over the 30-topic corpus of
//! tests/knowledge.rs (64 dimensions, single- and two-topic questions) and the 100-file corpus
//! of `bench --scenario knowledge` (256 dimensions), for a range of `MIN_RELATIVE`: precision
//! (the share of the sent chunks from the asked topic's file), chunks and tokens per prompt.
//! Run: `cargo test -p openclaw-server --lib knowledge::sweep -- --ignored --nocapture`.

#![allow(clippy::unwrap_used)]

use super::corpus::{made_up_topic, topic_file, TOPICS};
use super::{chunk, index, score, select};
use crate::embeddings::lexical::{cosine, embed};

struct Corpus {
    files: Vec<String>,
    chunks: Vec<(usize, chunk::Chunk)>,
    vectors: Vec<Vec<f32>>,
    bm25: score::Bm25,
    dims: usize,
    whole_tokens: u32,
}

fn corpus(files: &[(String, String)], dims: usize) -> Corpus {
    let mut chunks = Vec::new();
    let mut texts = Vec::new();
    for (f, (_, body)) in files.iter().enumerate() {
        for c in chunk::chunk(body) {
            texts.push(index::indexed_text(&c.heading, &c.text));
            chunks.push((f, c));
        }
    }
    Corpus {
        files: files.iter().map(|(n, _)| n.clone()).collect(),
        vectors: texts.iter().map(|t| embed(t, dims)).collect(),
        bm25: score::Bm25::new(&texts),
        chunks,
        dims,
        whole_tokens: files.iter().map(|(_, b)| crate::tokens::count(b)).sum(),
    }
}

/// The candidates for `q`.
fn candidates(c: &Corpus, q: &str) -> Vec<select::Candidate> {
    let qv = embed(q, c.dims);
    let cos: Vec<f32> = c.vectors.iter().map(|v| cosine(&qv, v)).collect();
    let s = score::hybrid(&cos, &c.bm25.scores(q), score::ALPHA_DEFAULT);
    c.chunks
        .iter()
        .zip(&s)
        .map(|((f, ch), s)| select::Candidate {
            score: *s,
            tokens: ch.tokens
                + crate::tokens::count(&c.files[*f])
                + crate::tokens::count(&ch.heading)
                + 4,
            file: *f,
        })
        .collect()
}

/// Questions about nothing in the memory: the best score and what each `MIN_SCORE` sends.
fn run_unrelated(c: &Corpus, questions: &[&str]) {
    println!("== unrelated questions on the same corpus: best score; chunks/tokens sent at MIN_SCORE 0.05 / 0.10 / 0.15 / 0.20");
    for q in questions {
        let cands = candidates(c, q);
        let best = cands.iter().map(|x| x.score).fold(0.0f32, f32::max);
        let sent: Vec<String> = [0.05f32, 0.1, 0.15, 0.2]
            .iter()
            .map(|m| {
                let rules = select::Rules {
                    min_score: *m,
                    ..select::Rules::DEFAULT.with_budget(2_000)
                };
                let sel =
                    select::select(&cands, |a, b| cosine(&c.vectors[a], &c.vectors[b]), &rules);
                let t: u32 = sel.chosen.iter().map(|i| cands[*i].tokens).sum();
                format!("{}/{t}", sel.chosen.len())
            })
            .collect();
        println!("{q:?}: best {best:.3}; {}", sent.join(" "));
    }
}

fn run(c: &Corpus, questions: &[(String, Vec<usize>)], label: &str) {
    println!(
        "== {label}: {} files, {} chunks, whole memory {} tokens",
        c.files.len(),
        c.chunks.len(),
        c.whole_tokens
    );
    // Over the questions: the lowest best score, the highest share of the best that a chunk of
    // another file reaches, the lowest share of the best that an asked file's best chunk has.
    let (mut least_best, mut other_max, mut asked_min) = (1.0f32, 0.0f32, 1.0f32);
    for (q, want) in questions {
        let cands = candidates(c, q);
        let best = cands.iter().map(|x| x.score).fold(0.0f32, f32::max);
        least_best = least_best.min(best);
        for (i, x) in cands.iter().enumerate() {
            if !want.contains(&c.chunks[i].0) {
                other_max = other_max.max(x.score / best);
            }
        }
        for f in want {
            let fb = cands
                .iter()
                .enumerate()
                .filter(|(i, _)| c.chunks[*i].0 == *f)
                .map(|(_, x)| x.score)
                .fold(0.0f32, f32::max);
            asked_min = asked_min.min(fb / best);
        }
    }
    println!(
        "best score at least {least_best:.3}; another file's chunk at most {other_max:.2} of the best; an asked file's best chunk at least {asked_min:.2} of the best"
    );
    for ratio in [0.3f32, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8] {
        let (mut precision, mut recall, mut tokens, mut chunks) = (0.0, 0.0, 0u64, 0usize);
        for (q, want) in questions {
            let cands = candidates(c, q);
            let rules = select::Rules {
                min_relative: ratio,
                ..select::Rules::DEFAULT.with_budget(2_000)
            };
            let sel = select::select(&cands, |a, b| cosine(&c.vectors[a], &c.vectors[b]), &rules);
            let file_of = |i: &usize| c.chunks[*i].0;
            let right = sel
                .chosen
                .iter()
                .filter(|i| want.contains(&file_of(i)))
                .count();
            precision += right as f64 / sel.chosen.len().max(1) as f64;
            let found = want
                .iter()
                .filter(|f| sel.chosen.iter().any(|i| file_of(i) == **f))
                .count();
            recall += found as f64 / want.len() as f64;
            tokens += sel
                .chosen
                .iter()
                .map(|i| u64::from(cands[*i].tokens))
                .sum::<u64>();
            chunks += sel.chosen.len();
        }
        let n = questions.len() as f64;
        println!(
            "min_relative {ratio:.2}: precision {:.2}, recall {:.2}, {:.1} chunks, {:.0} tokens ({:.1}% of the whole memory)",
            precision / n,
            recall / n,
            chunks as f64 / n,
            tokens as f64 / n,
            100.0 * tokens as f64 / n / f64::from(c.whole_tokens)
        );
    }
}

#[test]
#[ignore = "a measurement: prints figures"]
fn sweep_min_relative() {
    let files: Vec<(String, String)> = TOPICS
        .iter()
        .map(|t| (format!("memory/{t}.md"), topic_file(t, t.len() * 1_111)))
        .collect();
    let at = |t: &str| TOPICS.iter().position(|x| *x == t).unwrap();
    let q = |s: &str, t: &str| (s.to_string(), vec![at(t)]);
    let q2 = |s: &str, t: &str, u: &str| (s.to_string(), vec![at(t), at(u)]);
    run(
        &corpus(&files, 64),
        &[
            q(
                "What is the secret code of the saxophone vault?",
                "saxophone",
            ),
            q("how are the penguin records kept?", "penguin"),
            q("What is the secret code of the orchid vault?", "orchid"),
            q("What is the secret code of the falcon vault?", "falcon"),
            q("When is the espresso season?", "espresso"),
        ],
        "tests/knowledge.rs corpus, one topic per question",
    );
    run(
        &corpus(&files, 64),
        &[
            q2(
                "compare the falcon archive and the violin archive",
                "falcon",
                "violin",
            ),
            q2(
                "which shelf holds the glacier inventory and the tundra inventory?",
                "glacier",
                "tundra",
            ),
        ],
        "tests/knowledge.rs corpus, two topics per question",
    );
    run_unrelated(
        &corpus(&files, 64),
        &[
            "hello, how are you?",
            "what is the plan for today?",
            "write a haiku about autumn leaves",
            "Summarise the quarterly sales report",
            "is it the one?",
        ],
    );
    let files: Vec<(String, String)> = (0..100)
        .map(|i| {
            (
                format!("memory/{}.md", made_up_topic(i)),
                topic_file(&made_up_topic(i), i * 37),
            )
        })
        .collect();
    let questions: Vec<(String, Vec<usize>)> = (0..20)
        .map(|k| {
            let i = (k * 7) % 100;
            (
                format!("What is the secret code of the {} vault?", made_up_topic(i)),
                vec![i],
            )
        })
        .collect();
    run(&corpus(&files, 256), &questions, "bench corpus (100 files)");
}

//! `bench --scenario semantic-cache` (by name only, not in `all`): how well the semantic request
//! cache's similarity decides, and what its index costs.
//!
//! 1. Precision and recall of "cosine >= threshold means a hit" on a labelled set of question
//!    pairs (`bench/semantic_pairs.jsonl`, compiled in; `--pairs FILE` for another), at the
//!    configured default `similarity_threshold` (or `--threshold`) and over a small sweep. The
//!    vectors are the simulator's lexical embeddings by default (computed in this process, the
//!    same function the simulator serves), or any OpenAI-compatible `POST {url}/embeddings`
//!    with `--embeddings-url URL --embedding-model M` (key from `OPENAI_API_KEY` if set).
//! 2. The index (`openclaw_server::cache::semantic::SemanticIndex`, in process) at 10k and 100k
//!    entries in ONE partition — the worst case: every entry is compared — insert and lookup
//!    p50/p99.
//! 3. The embedding call a semantic lookup makes: [`EMBED_CALLS`] sequential one-question
//!    `POST /v1/embeddings` through a gateway child (the simulator's embeddings behind it, the
//!    same reqwest client as any provider), p50/p99 — the cost a lookup adds before the index.
//!
//! Nothing here is a test; the figures go to BENCHMARKS.md with the command.

use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::json;

use openclaw_server::cache::semantic::{dot, unit, SemanticIndex};
use openclaw_server::config::kinds::DEFAULT_EMBEDDING_DIMENSIONS;
use openclaw_server::config::RequestCache;
use openclaw_server::embeddings::lexical;

use super::common::{
    load_client, micros, node_config, percentile, start_children, BenchArgs, ScratchDir,
};

/// The labelled set kept in the repository.
const PAIRS: &str = include_str!("../../bench/semantic_pairs.jsonl");
/// Thresholds of the sweep.
const SWEEP: [f32; 8] = [0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95];
/// Index sizes measured.
const INDEX_SIZES: [usize; 2] = [10_000, 100_000];
/// Lookups measured per index size.
const LOOKUPS: usize = 200;
/// Inputs per embeddings request to a remote endpoint.
const EMBED_BATCH: usize = 64;
/// One-question embedding calls timed through the gateway.
const EMBED_CALLS: usize = 500;

#[derive(Debug, Clone, Deserialize)]
struct Pair {
    a: String,
    b: String,
    paraphrase: bool,
}

/// Precision and recall at one threshold.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Quality {
    pub threshold: f32,
    pub true_pos: usize,
    pub false_pos: usize,
    pub false_neg: usize,
    pub precision: f64,
    pub recall: f64,
}

/// Index latency at one size.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct IndexLatency {
    pub entries: usize,
    pub insert_p50_us: f64,
    pub insert_p99_us: f64,
    pub lookup_p50_us: f64,
    pub lookup_p99_us: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub embeddings: String,
    pub pairs: usize,
    pub paraphrases: usize,
    pub threshold: f32,
    pub at_threshold: Quality,
    pub sweep: Vec<Quality>,
    pub index: Vec<IndexLatency>,
    /// One-question `POST /v1/embeddings` through the gateway (simulator behind it).
    pub embed_calls: usize,
    pub embed_p50_us: u32,
    pub embed_p99_us: u32,
}

/// Time [`EMBED_CALLS`] one-question embedding calls through a gateway child.
async fn embed_latency(args: &BenchArgs, texts: &[String]) -> anyhow::Result<Vec<u32>> {
    let dir = ScratchDir::create()?;
    let (_sim, node) = start_children(&dir.0, "semantic", args.sim_latency_ms, |sim| {
        let mut cfg = node_config(sim);
        cfg["models"]["emb"] = json!({"provider": "sim", "base_url": format!("http://{sim}/v1"),
            "price": {"input": 0.02, "output": 0.0}, "kind": "embedding",
            "dimensions": DEFAULT_EMBEDDING_DIMENSIONS});
        cfg
    })
    .await?;
    let client = load_client()?;
    let url = format!("{}/v1/embeddings", node.http_url());
    let mut out = Vec::with_capacity(EMBED_CALLS);
    for i in 0..EMBED_CALLS {
        let body = json!({"model": "emb", "input": texts[i % texts.len()]});
        let t = Instant::now();
        let resp = client.post(&url).json(&body).send().await?;
        anyhow::ensure!(resp.status().is_success(), "embeddings: {}", resp.status());
        resp.bytes().await?;
        out.push(micros(t.elapsed()));
    }
    out.sort_unstable();
    Ok(out)
}

/// Precision/recall of `score >= threshold` against the labels (pure).
pub fn quality(scored: &[(f32, bool)], threshold: f32) -> Quality {
    let (mut tp, mut fp, mut fneg) = (0, 0, 0);
    for &(s, para) in scored {
        match (s >= threshold, para) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fneg += 1,
            (false, false) => {}
        }
    }
    let ratio = |n: usize, d: usize| if d == 0 { 1.0 } else { n as f64 / d as f64 };
    Quality {
        threshold,
        true_pos: tp,
        false_pos: fp,
        false_neg: fneg,
        precision: ratio(tp, tp + fp),
        recall: ratio(tp, tp + fneg),
    }
}

fn parse_pairs(text: &str) -> anyhow::Result<Vec<Pair>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("pairs line {}", i + 1)))
        .collect()
}

/// Vectors for `texts`: lexical in process, or from the endpoint.
async fn embed_all(args: &BenchArgs, texts: &[String]) -> anyhow::Result<Vec<Vec<f32>>> {
    let Some(url) = &args.embeddings_url else {
        let dims = DEFAULT_EMBEDDING_DIMENSIONS as usize;
        return Ok(texts.iter().map(|t| lexical::embed(t, dims)).collect());
    };
    let http = reqwest::Client::new();
    let endpoint = format!("{}/embeddings", url.trim_end_matches('/'));
    let key = std::env::var("OPENAI_API_KEY").ok();
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(EMBED_BATCH) {
        let mut req = http
            .post(&endpoint)
            .json(&json!({"model": args.embedding_model, "input": chunk}));
        if let Some(k) = &key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.with_context(|| endpoint.clone())?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.context("embeddings answer")?;
        anyhow::ensure!(status.is_success(), "{endpoint}: {status} {body}");
        let mut data = body["data"]
            .as_array()
            .context("embeddings answer without data")?
            .clone();
        data.sort_by_key(|d| d["index"].as_u64().unwrap_or(0));
        anyhow::ensure!(data.len() == chunk.len(), "one vector per input expected");
        for d in data {
            let v: Vec<f32> = serde_json::from_value(d["embedding"].clone())
                .context("embedding is not a list of floats")?;
            out.push(v);
        }
    }
    Ok(out)
}

/// Synthetic queries for the index: the pairs' texts with a varying tail, so no two are equal.
fn synthetic(texts: &[String], n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "{} (case {} of {})",
                texts[i % texts.len()],
                i / texts.len(),
                n
            )
        })
        .collect()
}

fn us_percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    // The same nearest rank as `percentile`, on tenths of a microsecond.
    let tenths: Vec<u32> = v.iter().map(|x| (x * 10.0).round() as u32).collect();
    (
        f64::from(percentile(&tenths, 50.0)) / 10.0,
        f64::from(percentile(&tenths, 99.0)) / 10.0,
    )
}

fn index_latency(texts: &[String], entries: usize) -> IndexLatency {
    let dims = DEFAULT_EMBEDDING_DIMENSIONS as usize;
    let vecs: Vec<Vec<f32>> = synthetic(texts, entries)
        .iter()
        .map(|t| lexical::embed(t, dims))
        .collect();
    let mut ix = SemanticIndex::default();
    let mut ins = Vec::with_capacity(entries);
    for (i, v) in vecs.into_iter().enumerate() {
        let key = format!("{i:032x}");
        let t = Instant::now();
        ix.insert(&key, "bench", v);
        ins.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let mut look = Vec::with_capacity(LOOKUPS);
    for i in 0..LOOKUPS {
        let q = lexical::embed(&texts[i % texts.len()], dims);
        let t = Instant::now();
        let got = ix.best("bench", &q, 0.0);
        look.push(t.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(got);
    }
    let (ip50, ip99) = us_percentiles(ins);
    let (lp50, lp99) = us_percentiles(look);
    IndexLatency {
        entries,
        insert_p50_us: ip50,
        insert_p99_us: ip99,
        lookup_p50_us: lp50,
        lookup_p99_us: lp99,
    }
}

pub async fn run(args: &BenchArgs) -> anyhow::Result<Report> {
    let text = match &args.pairs {
        Some(p) => std::fs::read_to_string(p).with_context(|| p.display().to_string())?,
        None => PAIRS.to_string(),
    };
    let pairs = parse_pairs(&text)?;
    anyhow::ensure!(!pairs.is_empty(), "no pairs");
    let mut texts = Vec::with_capacity(pairs.len() * 2);
    for p in &pairs {
        texts.push(p.a.clone());
        texts.push(p.b.clone());
    }
    let vecs = embed_all(args, &texts).await?;
    let scored: Vec<(f32, bool)> = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let a = unit(vecs[2 * i].clone()).unwrap_or_default();
            let b = unit(vecs[2 * i + 1].clone()).unwrap_or_default();
            (dot(&a, &b), p.paraphrase)
        })
        .collect();
    let threshold = args
        .threshold
        .unwrap_or(RequestCache::default().similarity_threshold as f32);
    let index = INDEX_SIZES
        .iter()
        .map(|&n| index_latency(&texts, n))
        .collect();
    let embed = embed_latency(args, &texts).await?;
    Ok(Report {
        embeddings: match &args.embeddings_url {
            Some(u) => format!("{u} model {}", args.embedding_model),
            None => format!("simulator lexical, {DEFAULT_EMBEDDING_DIMENSIONS} dimensions"),
        },
        pairs: pairs.len(),
        paraphrases: pairs.iter().filter(|p| p.paraphrase).count(),
        threshold,
        at_threshold: quality(&scored, threshold),
        sweep: SWEEP.iter().map(|&t| quality(&scored, t)).collect(),
        index,
        embed_calls: embed.len(),
        embed_p50_us: percentile(&embed, 50.0),
        embed_p99_us: percentile(&embed, 99.0),
    })
}

pub fn print(r: &Report) {
    println!(
        "\nsemantic cache: {} pairs ({} paraphrases), embeddings: {}",
        r.pairs, r.paraphrases, r.embeddings
    );
    let row = |q: &Quality, mark: &str| {
        println!(
            "  {:>9.2}{mark:1} {:>9.3} {:>7.3} {:>5} {:>5} {:>5}",
            q.threshold, q.precision, q.recall, q.true_pos, q.false_pos, q.false_neg
        )
    };
    println!("  threshold  precision  recall    TP    FP    FN");
    row(&r.at_threshold, "*");
    for q in &r.sweep {
        row(q, "");
    }
    println!("  (* the configured threshold)");
    println!("\nsemantic index, one partition (every entry compared):");
    println!("  entries   insert p50   insert p99   lookup p50   lookup p99   (µs)");
    for x in &r.index {
        println!(
            "  {:>7} {:>12.1} {:>12.1} {:>12.1} {:>12.1}",
            x.entries, x.insert_p50_us, x.insert_p99_us, x.lookup_p50_us, x.lookup_p99_us
        );
    }
    println!(
        "\nembedding call through the gateway (one question, simulator behind it), {} calls: p50 {:.2} ms, p99 {:.2} ms",
        r.embed_calls,
        r.embed_p50_us as f64 / 1000.0,
        r.embed_p99_us as f64 / 1000.0
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_table() {
        let scored = [(0.9, true), (0.8, false), (0.7, true), (0.2, false)];
        let cases = [
            (0.95, 0, 0, 2, 1.0, 0.0),
            (0.85, 1, 0, 1, 1.0, 0.5),
            (0.75, 1, 1, 1, 0.5, 0.5),
            (0.5, 2, 1, 0, 2.0 / 3.0, 1.0),
            (0.0, 2, 2, 0, 0.5, 1.0),
        ];
        for (t, tp, fp, fneg, p, r) in cases {
            let q = quality(&scored, t);
            assert_eq!(
                (q.true_pos, q.false_pos, q.false_neg),
                (tp, fp, fneg),
                "{t}"
            );
            assert!(
                (q.precision - p).abs() < 1e-9 && (q.recall - r).abs() < 1e-9,
                "{t}"
            );
        }
    }

    #[test]
    fn the_kept_set_is_labelled_and_large_enough() {
        let pairs = parse_pairs(PAIRS).unwrap();
        assert!(pairs.len() >= 200, "{}", pairs.len());
        let para = pairs.iter().filter(|p| p.paraphrase).count();
        assert!(para >= 80 && pairs.len() - para >= 80, "{para}");
        assert!(parse_pairs("{\"a\":1}").is_err());
    }
}

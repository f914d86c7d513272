//! Deterministic text generation for the simulator (pure: no clock, no global randomness).
//!
//! The answer is a function of (model, messages) — seeded from an inline FNV-1a hash, so it is
//! stable across processes and Rust versions — truncated by the caller's output cap. Its length in
//! tokens, measured with [`crate::tokens::count`], is exact: the generator spends a token budget
//! piece by piece, relying on the additivity of the counter across word boundaries.
//!
//! A summary request (a system message starting with [`SUMMARY_MARKER`]) is answered by
//! [`summarise`] instead: a short text made of the words of the messages it is given (in order
//! of first appearance, without repeats), about a quarter of the prompt's tokens, within the
//! caller's cap — so what a later prompt carries of it is traceable to the conversation.

use openclaw_proto::openai::ChatMessage;

use openclaw_proto::session::SUMMARY_MARKER;

use crate::tokens;

/// Shortest answer, in tokens, unless the caller caps it lower.
pub const MIN_OUTPUT_TOKENS: u32 = 16;

/// One generated answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// The pieces as they are streamed; their concatenation is `text`.
    pub pieces: Vec<String>,
    pub text: String,
    /// `tokens::count(&text)`.
    pub completion_tokens: u32,
    /// `tokens::count_messages(messages)`.
    pub prompt_tokens: u32,
    /// True when the caller's cap cut the answer (`finish_reason: "length"`).
    pub capped: bool,
    /// True when the request was a summary request (answered by [`summarise`]).
    pub summary: bool,
}

const WORDS: &[&str] = &[
    "the",
    "agent",
    "model",
    "token",
    "budget",
    "cluster",
    "node",
    "request",
    "answer",
    "queue",
    "priority",
    "cache",
    "memory",
    "session",
    "context",
    "latency",
    "report",
    "team",
    "task",
    "result",
    "provider",
    "limit",
    "minute",
    "cost",
    "summary",
    "prompt",
    "output",
    "input",
    "schedule",
    "leader",
    "follower",
    "replica",
    "lease",
    "window",
    "retry",
    "fallback",
    "metric",
    "dashboard",
    "alert",
    "source",
    "skill",
    "workspace",
    "channel",
    "message",
    "review",
    "update",
    "plan",
    "check",
    "and",
    "with",
    "for",
    "from",
    "into",
    "over",
    "under",
    "every",
    "each",
    "quickly",
    "carefully",
    "usually",
    "shared",
    "stable",
    "simple",
    "bounded",
    "exact",
    "local",
    "remote",
    "daily",
    "weekly",
    "monthly",
    "throughput",
    "performance",
    "configuration",
    "observability",
    "deployment",
    "is",
    "are",
    "keeps",
    "moves",
    "counts",
    "sends",
    "reads",
    "writes",
    "returns",
];

const CJK_WORDS: &[&str] = &[
    "模型",
    "令牌",
    "预算",
    "集群",
    "节点",
    "请求",
    "回答",
    "队列",
    "优先级",
    "缓存",
    "记忆",
    "会话",
    "上下文",
    "延迟",
    "报告",
    "团队",
    "任务",
    "结果",
    "成本",
    "摘要",
    "输出",
    "输入",
    "调度",
    "监控",
    "告警",
    "配置",
    "部署",
    "性能",
    "我们",
    "需要",
    "可以",
    "已经",
    "每天",
    "通过",
    "使用",
    "的",
    "了",
    "和",
    "在",
];

/// FNV-1a, 64 bit: a stable hash (std's `RandomState` changes per process).
pub fn fnv1a(state: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(state, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// SplitMix64: a tiny PRNG whose sequence we own.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// The seed of an answer: model and every message's role and text.
pub fn seed(model: &str, messages: &[ChatMessage]) -> u64 {
    let mut h = fnv1a(FNV_OFFSET, model.as_bytes());
    for m in messages {
        h = fnv1a(h, &[0xff]);
        h = fnv1a(h, m.role.as_bytes());
        h = fnv1a(h, &[0]);
        h = fnv1a(h, m.text().as_bytes());
    }
    h
}

/// True when the last user message is mostly CJK.
fn wants_cjk(messages: &[ChatMessage]) -> bool {
    let Some(last) = messages.iter().rev().find(|m| m.role == "user") else {
        return false;
    };
    let text = last.text();
    let (mut cjk, mut letters) = (0usize, 0usize);
    for c in text.chars() {
        if tokens::is_cjk(c) {
            cjk += 1;
        } else if c.is_alphanumeric() {
            letters += 1;
        }
    }
    // A CJK character carries about as much as a short word: compare to words, not letters.
    cjk > 0 && cjk * 4 >= letters
}

/// Generate the answer to `messages` for `model`: `[MIN_OUTPUT_TOKENS, max_output_tokens]`
/// tokens, fewer when `cap` (the request's max tokens) is lower.
pub fn generate(
    model: &str,
    messages: &[ChatMessage],
    cap: Option<u32>,
    max_output_tokens: u32,
) -> Generated {
    if is_summary_request(messages) {
        return summarise(messages, cap, max_output_tokens);
    }
    let mut rng = SplitMix64::new(seed(model, messages));
    let hi = max_output_tokens.max(1);
    let lo = MIN_OUTPUT_TOKENS.min(hi);
    let target = lo + rng.below(u64::from(hi - lo) + 1) as u32;
    let (budget, capped) = match cap {
        Some(c) if c < target => (c, true),
        _ => (target, false),
    };
    let cjk = wants_cjk(messages);
    // A finished answer ends with a full stop, paid for from the budget.
    let words_budget = if capped {
        budget
    } else {
        budget.saturating_sub(1)
    };

    let mut pieces: Vec<String> = Vec::new();
    let mut spent: u32 = 0;
    let mut since_punct = 0u32;
    while spent < words_budget {
        let left = words_budget - spent;
        let first = pieces.is_empty();
        let mut piece = if since_punct >= 4 && rng.below(5) == 0 {
            since_punct = 0;
            if cjk { "，" } else { "," }.to_string()
        } else {
            since_punct += 1;
            if cjk && rng.below(8) != 0 {
                CJK_WORDS[rng.below(CJK_WORDS.len() as u64) as usize].to_string()
            } else {
                let w = WORDS[rng.below(WORDS.len() as u64) as usize];
                if first {
                    capitalize(w)
                } else {
                    format!(" {w}")
                }
            }
        };
        let mut cost = tokens::count(&piece);
        if cost > left || cost == 0 {
            // Too long for what is left: a one-token filler always fits.
            piece = match (cjk, first) {
                (true, _) => "的".to_string(),
                (false, true) => "A".to_string(),
                (false, false) => " a".to_string(),
            };
            cost = 1;
        }
        spent += cost;
        pieces.push(piece);
    }
    if !capped && budget > 0 {
        pieces.push(if cjk { "。" } else { "." }.to_string());
    }
    let text: String = pieces.concat();
    let completion_tokens = tokens::count(&text);
    debug_assert_eq!(completion_tokens, budget, "generated text: {text:?}");
    Generated {
        pieces,
        text,
        completion_tokens,
        prompt_tokens: tokens::count_messages(messages),
        capped,
        summary: false,
    }
}

/// Is this a summary request (a system message starting with [`SUMMARY_MARKER`])?
pub fn is_summary_request(messages: &[ChatMessage]) -> bool {
    messages
        .iter()
        .any(|m| m.role == "system" && m.text().starts_with(SUMMARY_MARKER))
}

/// The answer to a summary request: `Summary:` and the distinct words (CJK characters count as
/// words) of the non-system messages in order of first appearance, skipping short ones, for
/// about a quarter of the prompt's tokens — at least [`MIN_OUTPUT_TOKENS`], at most the cap (or
/// `max_output_tokens`), fewer when the words run out.
pub fn summarise(messages: &[ChatMessage], cap: Option<u32>, max_output_tokens: u32) -> Generated {
    let prompt_tokens = tokens::count_messages(messages);
    let hi = cap.unwrap_or(max_output_tokens).max(1);
    let target = (prompt_tokens / 4).clamp(MIN_OUTPUT_TOKENS.min(hi), hi);
    let mut pieces = vec!["Summary:".to_string()];
    let mut spent = tokens::count("Summary:");
    let mut seen = std::collections::BTreeSet::new();
    let words = messages
        .iter()
        .filter(|m| m.role != "system")
        .flat_map(|m| {
            m.text()
                .split(|c: char| !(c.is_alphanumeric() || tokens::is_cjk(c)))
                .filter(|w| w.chars().count() > 3 || w.chars().any(tokens::is_cjk))
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
        });
    // Leave one token for the full stop.
    for w in words {
        if !seen.insert(w.clone()) {
            continue;
        }
        let piece = format!(" {w}");
        let cost = tokens::count(&piece);
        if spent + cost + 1 > target {
            break;
        }
        spent += cost;
        pieces.push(piece);
    }
    pieces.push(".".to_string());
    let text: String = pieces.concat();
    Generated {
        completion_tokens: tokens::count(&text),
        pieces,
        text,
        prompt_tokens,
        capped: false,
        summary: true,
    }
}

fn capitalize(w: &str) -> String {
    let mut cs = w.chars();
    match cs.next() {
        Some(c) => c.to_uppercase().chain(cs).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn msgs(text: &str) -> Vec<ChatMessage> {
        vec![
            ChatMessage::new("system", "You are a test."),
            ChatMessage::new("user", text),
        ]
    }

    #[test]
    fn fnv1a_matches_reference_vectors() {
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn same_input_same_text_and_different_input_different_text() {
        let a = generate("m", &msgs("hello there"), None, 256);
        let b = generate("m", &msgs("hello there"), None, 256);
        assert_eq!(a, b);
        assert_ne!(a.text, generate("m", &msgs("hello there!"), None, 256).text);
        assert_ne!(
            a.text,
            generate("other", &msgs("hello there"), None, 256).text
        );
    }

    #[test]
    fn usage_agrees_with_the_token_counter() {
        for i in 0..300 {
            let m = msgs(&format!("question number {i}"));
            for cap in [None, Some(0), Some(1), Some(5), Some(17), Some(100)] {
                let g = generate("gpt-4o", &m, cap, 256);
                assert_eq!(g.completion_tokens, tokens::count(&g.text), "{g:?}");
                assert_eq!(g.pieces.concat(), g.text);
                assert_eq!(g.prompt_tokens, tokens::count_messages(&m));
                let max = cap.unwrap_or(256).min(256);
                assert!(g.completion_tokens <= max, "{cap:?}: {g:?}");
                if g.capped {
                    assert_eq!(Some(g.completion_tokens), cap);
                } else {
                    assert!(g.completion_tokens >= MIN_OUTPUT_TOKENS, "{g:?}");
                    assert!(g.text.ends_with('.'), "{}", g.text);
                }
            }
        }
    }

    #[test]
    fn lengths_spread_over_the_range() {
        let lens: Vec<u32> = (0..200)
            .map(|i| generate("m", &msgs(&format!("q{i}")), None, 64).completion_tokens)
            .collect();
        assert!(lens.iter().all(|&n| (16..=64).contains(&n)));
        assert!(
            lens.iter().any(|&n| n < 30) && lens.iter().any(|&n| n > 50),
            "{lens:?}"
        );
    }

    #[test]
    fn chinese_input_gets_chinese_words() {
        let g = generate("m", &msgs("请总结一下本周的令牌使用情况"), None, 256);
        let cjk = g.text.chars().filter(|&c| tokens::is_cjk(c)).count();
        assert!(cjk as u32 * 2 > g.completion_tokens, "{}", g.text);
        assert!(g.text.ends_with('。'));
        assert_eq!(g.completion_tokens, tokens::count(&g.text));
        let en = generate("m", &msgs("summarize the week"), None, 256);
        assert!(!en.text.chars().any(tokens::is_cjk), "{}", en.text);
    }

    #[test]
    fn summary_requests_get_a_short_summary_of_their_messages() {
        let convo =
            "The deployment of cluster alpha moved to Tuesday; Alice owns the rollback plan. ";
        let msgs = vec![
            ChatMessage::new("system", format!("{SUMMARY_MARKER}\nUpdate the summary.")),
            ChatMessage::new("user", convo.repeat(20)),
        ];
        let g = generate("gpt-4o-mini", &msgs, Some(60), 400);
        assert!(g.summary);
        assert!(g.text.starts_with("Summary:"), "{}", g.text);
        for w in ["deployment", "cluster", "alpha", "alice", "rollback"] {
            assert!(g.text.contains(w), "{w} in {}", g.text);
        }
        assert_eq!(
            g.text.matches("cluster").count(),
            1,
            "no repeats: {}",
            g.text
        );
        assert_eq!(g.completion_tokens, tokens::count(&g.text));
        assert!(g.completion_tokens <= 60);
        assert!(g.completion_tokens < g.prompt_tokens / 2);
        assert_eq!(
            g,
            generate("gpt-4o-mini", &msgs, Some(60), 400),
            "deterministic"
        );
        // Capped by the caller.
        let g = generate("gpt-4o-mini", &msgs, Some(20), 400);
        assert!(g.completion_tokens <= 20, "{}", g.text);
        // Not a summary request: a normal answer.
        assert!(!generate("gpt-4o-mini", &msgs[1..], Some(60), 400).summary);
    }

    #[test]
    fn a_small_max_output_is_respected() {
        let g = generate("m", &msgs("x"), None, 4);
        assert_eq!(g.completion_tokens, 4);
        assert!(!g.capped);
    }
}

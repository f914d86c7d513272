//! Pure: what one prompt carries (§18.3 "会话上下文缓存"). Given the token counts of its parts —
//! the system message (system prompt, memory and tools, as the agent built it), the running
//! summary, each history message, the input — and the limits from
//! `session.context_management` and the routed model, [`decide`] says which of the oldest history
//! messages leave the prompt (to be folded into the summary, or dropped), which messages are sent
//! condensed and to how many tokens, or that the prompt cannot fit and by how many tokens.
//!
//! The steps, in order:
//! 1. Sliding window: only the newest `keep_recent_messages` history messages stay.
//! 2. Compression: when the prompt passes `trigger_threshold × window`, the oldest remaining
//!    history messages are condensed, each to `target_ratio` of its size, oldest first, until the
//!    prompt is at most `target_ratio × window` (or nothing more may be condensed). Tool results
//!    are left whole with `preserve_tool_results`; the system message is condensed (last) only
//!    without `preserve_system_prompt`.
//! 3. The window: while the prompt passes the window, the oldest history message leaves; then
//!    the summary; then (without `preserve_system_prompt`) the system message is cut to fit.
//!    If it still does not fit, the prompt is [`TooLong`].
//!
//! Sizes are counted as the provider bills them: each message's content plus
//! [`MESSAGE_OVERHEAD`], plus [`REPLY_PRIMING`] once (`tokens::count_messages`).
//!
//! Invariant: a [`Plan`]'s `total` is at most `window`.

use crate::tokens::{MESSAGE_OVERHEAD, REPLY_PRIMING};

/// The fewest tokens a condensed message or system prompt is cut to.
pub const CONDENSED_MIN_TOKENS: u32 = 8;

/// One history message, by size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Msg {
    pub tokens: u32,
    /// A tool result (role `tool`), kept whole with `preserve_tool_results`.
    pub tool: bool,
}

/// The prompt's parts, by size (content tokens, without the per-message overhead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parts {
    /// The system message: system prompt + memory + tools.
    pub system: u32,
    /// The running summary, sent as its own system message; 0: none.
    pub summary: u32,
    /// Oldest first.
    pub history: Vec<Msg>,
    pub input: u32,
}

/// Compression settings (`session.context_management.compression`, when enabled).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Squeeze {
    pub trigger_threshold: f64,
    pub target_ratio: f64,
    pub preserve_system_prompt: bool,
    pub preserve_tool_results: bool,
}

/// The limits one prompt is held to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// The hard bound: `min(max_context_tokens, model context_window − output asked)`.
    pub window: u32,
    /// Sliding window (`keep_recent_messages`); `None` when the window is off.
    pub keep_recent: Option<usize>,
    pub squeeze: Option<Squeeze>,
}

/// What the prompt carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// The oldest history messages that leave the prompt.
    pub fold: usize,
    /// History messages sent condensed: (index into `Parts::history`, tokens to cut to).
    pub condense: Vec<(usize, u32)>,
    /// The system message cut to this many tokens (only without `preserve_system_prompt`).
    pub system_to: Option<u32>,
    /// The summary is left out (it alone does not fit any more).
    pub drop_summary: bool,
    /// The prompt's size after the plan, overhead included.
    pub total: u32,
}

/// A prompt that cannot be made to fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong {
    /// The smallest the prompt can be made (overhead included).
    pub needed: u32,
    pub window: u32,
}

impl TooLong {
    pub fn over(&self) -> u32 {
        self.needed.saturating_sub(self.window)
    }
}

fn with_overhead(tokens: u32) -> u64 {
    u64::from(tokens) + u64::from(MESSAGE_OVERHEAD)
}

/// Tokens to condense a message of `tokens` to at `ratio` (never below [`CONDENSED_MIN_TOKENS`]).
pub fn condensed_size(tokens: u32, ratio: f64) -> u32 {
    let to = (f64::from(tokens) * ratio.clamp(0.0, 1.0)).ceil() as u32;
    to.max(CONDENSED_MIN_TOKENS)
}

/// The oldest messages that leave a history of `len` messages under the sliding window.
pub fn window_fold(len: usize, keep_recent: Option<usize>) -> usize {
    keep_recent.map_or(0, |k| len.saturating_sub(k))
}

/// Decide what the prompt carries (see the module doc).
pub fn decide(parts: &Parts, limits: &Limits) -> Result<Plan, TooLong> {
    let n = parts.history.len();
    let mut fold = window_fold(n, limits.keep_recent);
    // Current size of each history message (condensed ones shrink).
    let mut sizes: Vec<u32> = parts.history.iter().map(|m| m.tokens).collect();
    let mut condensed = vec![false; n];
    let mut system = parts.system;
    let mut system_to = None;
    let mut summary = parts.summary;
    let mut drop_summary = false;
    let total = |fold: usize, sizes: &[u32], system: u32, summary: u32| -> u64 {
        u64::from(REPLY_PRIMING)
            + with_overhead(system)
            + if summary > 0 {
                with_overhead(summary)
            } else {
                0
            }
            + sizes[fold..].iter().map(|t| with_overhead(*t)).sum::<u64>()
            + with_overhead(parts.input)
    };
    let window = u64::from(limits.window);

    if let Some(sq) = limits.squeeze {
        let trigger = (sq.trigger_threshold * window as f64).floor() as u64;
        let goal = (sq.target_ratio * window as f64).floor() as u64;
        if total(fold, &sizes, system, summary) > trigger {
            for i in fold..n {
                if total(fold, &sizes, system, summary) <= goal {
                    break;
                }
                if sq.preserve_tool_results && parts.history[i].tool {
                    continue;
                }
                let to = condensed_size(sizes[i], sq.target_ratio);
                if to < sizes[i] {
                    sizes[i] = to;
                    condensed[i] = true;
                }
            }
            if !sq.preserve_system_prompt && total(fold, &sizes, system, summary) > goal {
                let to = condensed_size(system, sq.target_ratio);
                if to < system {
                    system = to;
                    system_to = Some(to);
                }
            }
        }
    }

    while total(fold, &sizes, system, summary) > window && fold < n {
        fold += 1;
    }
    if total(fold, &sizes, system, summary) > window && summary > 0 {
        summary = 0;
        drop_summary = true;
    }
    let now = total(fold, &sizes, system, summary);
    if now > window && limits.squeeze.is_some_and(|s| !s.preserve_system_prompt) {
        let over = (now - window) as u32;
        let to = system.saturating_sub(over);
        if to >= CONDENSED_MIN_TOKENS {
            system = to;
            system_to = Some(to);
        }
    }
    let now = total(fold, &sizes, system, summary);
    if now > window {
        return Err(TooLong {
            needed: u32::try_from(now).unwrap_or(u32::MAX),
            window: limits.window,
        });
    }
    let condense = (fold..n)
        .filter(|i| condensed[*i])
        .map(|i| (i, sizes[i]))
        .collect();
    Ok(Plan {
        fold,
        condense,
        system_to,
        drop_summary,
        total: now as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Overhead of a prompt with `messages` messages.
    fn oh(messages: u32) -> u32 {
        REPLY_PRIMING + MESSAGE_OVERHEAD * messages
    }

    fn hist(sizes: &[u32]) -> Vec<Msg> {
        sizes
            .iter()
            .map(|t| Msg {
                tokens: *t,
                tool: false,
            })
            .collect()
    }

    fn parts(system: u32, summary: u32, history: &[u32], input: u32) -> Parts {
        Parts {
            system,
            summary,
            history: hist(history),
            input,
        }
    }

    const SQ: Squeeze = Squeeze {
        trigger_threshold: 0.8,
        target_ratio: 0.5,
        preserve_system_prompt: true,
        preserve_tool_results: true,
    };

    fn limits(window: u32, keep: Option<usize>, squeeze: Option<Squeeze>) -> Limits {
        Limits {
            window,
            keep_recent: keep,
            squeeze,
        }
    }

    #[test]
    fn decisions_table() {
        let loose = Squeeze {
            preserve_system_prompt: false,
            ..SQ
        };
        // (what, parts, limits) -> (fold, condensed (index, to), system_to, drop_summary, total)
        type Want = (usize, Vec<(usize, u32)>, Option<u32>, bool, u32);
        let cases: Vec<(&str, Parts, Limits, Result<Want, u32>)> = vec![
            (
                "everything fits, the window is off",
                parts(100, 0, &[10, 10, 10], 20),
                limits(1000, None, Some(SQ)),
                Ok((0, vec![], None, false, 100 + 30 + 20 + oh(5))),
            ),
            (
                "the sliding window keeps the newest two",
                parts(100, 0, &[10, 11, 12, 13], 20),
                limits(1000, Some(2), Some(SQ)),
                Ok((2, vec![], None, false, 100 + 25 + 20 + oh(4))),
            ),
            (
                "a window larger than the history folds nothing",
                parts(100, 30, &[10, 11], 20),
                limits(1000, Some(20), None),
                Ok((0, vec![], None, false, 100 + 30 + 21 + 20 + oh(5))),
            ),
            (
                "keep 0 folds every message",
                parts(100, 30, &[10, 11], 20),
                limits(1000, Some(0), None),
                Ok((2, vec![], None, false, 100 + 30 + 20 + oh(3))),
            ),
            (
                // 100+400+20+oh(4)=539 > 0.8*600=480: condense oldest first to 0.5 until <= 300.
                "compression condenses the oldest until the target",
                parts(100, 0, &[200, 200], 20),
                limits(600, None, Some(SQ)),
                Ok((
                    0,
                    vec![(0, 100), (1, 100)],
                    None,
                    false,
                    100 + 200 + 20 + oh(4),
                )),
            ),
            (
                "compression stops at the target ratio of the window",
                parts(10, 0, &[200, 200, 10], 10),
                limits(600, None, Some(SQ)),
                // 430+oh(5)=453 <= 480: below the trigger, nothing condensed.
                Ok((0, vec![], None, false, 430 + oh(5))),
            ),
            (
                "below the trigger nothing is condensed",
                parts(100, 0, &[100, 100], 20),
                limits(1000, None, Some(SQ)),
                Ok((0, vec![], None, false, 320 + oh(4))),
            ),
            (
                "tool results are preserved",
                Parts {
                    system: 100,
                    summary: 0,
                    history: vec![
                        Msg {
                            tokens: 200,
                            tool: true,
                        },
                        Msg {
                            tokens: 200,
                            tool: false,
                        },
                    ],
                    input: 20,
                },
                limits(600, None, Some(SQ)),
                Ok((0, vec![(1, 100)], None, false, 100 + 300 + 20 + oh(4))),
            ),
            (
                "the system prompt is condensed when not preserved",
                parts(400, 0, &[50], 20),
                limits(600, None, Some(loose)),
                // 470+oh(3)=485 > 480: message 0 -> 25 (460), still > 300: system -> 200.
                Ok((0, vec![(0, 25)], Some(200), false, 200 + 25 + 20 + oh(3))),
            ),
            (
                "without compression the window drops the oldest to fit",
                parts(100, 0, &[300, 200, 100], 20),
                limits(500, None, None),
                Ok((1, vec![], None, false, 100 + 300 + 20 + oh(4))),
            ),
            (
                "the summary leaves when it alone does not fit",
                parts(100, 450, &[10], 20),
                limits(300, Some(4), None),
                Ok((1, vec![], None, true, 100 + 20 + oh(2))),
            ),
            (
                "too long: the system prompt and the input alone pass the window",
                parts(300, 0, &[50], 290),
                limits(600, Some(4), Some(SQ)),
                Err(590 + oh(2)),
            ),
            (
                "too long: an input larger than the window",
                parts(10, 0, &[], 700),
                limits(600, Some(4), Some(SQ)),
                Err(710 + oh(2)),
            ),
            (
                "a system prompt not preserved is cut to fit",
                parts(500, 0, &[], 100),
                limits(600, None, Some(loose)),
                // Condensed to 250 by the ratio already: 350+oh(2)=361.
                Ok((0, vec![], Some(250), false, 350 + oh(2))),
            ),
        ];
        for (what, p, l, want) in cases {
            let got = decide(&p, &l)
                .map(|plan| {
                    assert!(plan.total <= l.window, "{what}: {plan:?}");
                    (
                        plan.fold,
                        plan.condense,
                        plan.system_to,
                        plan.drop_summary,
                        plan.total,
                    )
                })
                .map_err(|e| e.needed);
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn too_long_says_by_how_much() {
        let e = decide(&parts(10, 0, &[], 700), &limits(600, None, None)).unwrap_err();
        assert_eq!(e.over(), 710 + oh(2) - 600);
    }

    #[test]
    fn window_fold_and_condensed_size() {
        assert_eq!(window_fold(10, Some(4)), 6);
        assert_eq!(window_fold(3, Some(4)), 0);
        assert_eq!(window_fold(10, None), 0);
        assert_eq!(condensed_size(100, 0.5), 50);
        assert_eq!(condensed_size(101, 0.5), 51);
        assert_eq!(condensed_size(10, 0.5), CONDENSED_MIN_TOKENS);
        assert_eq!(condensed_size(100, 2.0), 100);
    }
}

//! Context management (§18.3 "会话上下文缓存", `session.context_management`): what a task's
//! prompt carries of its session. The pure decisions are in [`plan`] (sliding window,
//! compression, the hard window → [`plan::TooLong`]) and [`text`] (condensing a message, the
//! summary request); here are the limits read from the config and the routed model, the summary
//! call (a real model call to `summary_model`, routed through the fallback chain, rate-limited,
//! budgeted and audited with `purpose: "summary"`), and the assembly of the final messages.
//!
//! Invariant: a prompt this module assembles is at most
//! `min(max_context_tokens, model context_window − output asked)` tokens by
//! `tokens::count_messages`, or it is refused with `context_length_exceeded`.

pub mod plan;
pub mod text;

use openclaw_proto::api::ContextCut;
use openclaw_proto::openai::{ChatCompletionRequest, ChatMessage};
use openclaw_proto::session::{Session, SessionSummary};

use crate::budget::{Budget, BudgetWait};
use crate::calls::{fallback, CallMeta, Calls};
use crate::config::Config;
use crate::metrics::metrics;
use crate::tokens::count;
use plan::{Limits, Squeeze};

/// The most tokens a running summary may have: a quarter of the window, within these bounds.
pub const SUMMARY_TOKENS_MIN: u32 = 32;
pub const SUMMARY_TOKENS_MAX: u32 = 1024;
/// The most tokens a summary request may carry (besides the summary model's own window).
pub const SUMMARY_INPUT_MAX: u32 = 8000;

/// The hard bound of a prompt for `model` with `max_output` tokens asked:
/// `min(max_context_tokens, context_window − max_output)` (a model that is not configured is
/// held to `max_context_tokens`).
pub fn window_for(cfg: &Config, model: &str, max_output: Option<u32>) -> u32 {
    let cm = &cfg.session.context_management;
    let model_room = cfg.models.get(model).map_or(u32::MAX, |m| {
        m.context_window.saturating_sub(max_output.unwrap_or(0))
    });
    cm.max_context_tokens.min(model_room)
}

/// The limits of a task's prompt for `model`.
pub fn limits_for(cfg: &Config, model: &str, max_output: Option<u32>) -> Limits {
    let cm = &cfg.session.context_management;
    let sw = &cm.sliding_window;
    let c = &cm.compression;
    Limits {
        window: window_for(cfg, model, max_output),
        keep_recent: sw.enabled.then_some(sw.keep_recent_messages),
        squeeze: c.enabled.then_some(Squeeze {
            trigger_threshold: c.trigger_threshold,
            target_ratio: c.target_ratio,
            preserve_system_prompt: c.preserve_system_prompt,
            preserve_tool_results: c.preserve_tool_results,
        }),
    }
}

/// Are messages leaving the window summarised (sliding window on with `summarize_older`)?
pub fn summarises(cfg: &Config) -> bool {
    let sw = &cfg.session.context_management.sliding_window;
    sw.enabled && sw.summarize_older
}

/// The model that writes summaries: `summary_model`, else the cheapest configured model.
pub fn summary_model(cfg: &Config) -> Option<String> {
    cfg.session
        .context_management
        .summary_model
        .clone()
        .filter(|m| cfg.models.contains_key(m))
        .or_else(|| crate::budget::rules::cheapest_model(cfg))
}

/// The most tokens of a summary for a prompt window of `window` tokens.
pub fn summary_cap(window: u32) -> u32 {
    (window / 4).clamp(SUMMARY_TOKENS_MIN, SUMMARY_TOKENS_MAX)
}

/// The prompt's parts, by size, from the agent's system message, the summary, the history and
/// the input.
pub fn parts_of(
    system: &ChatMessage,
    summary: Option<&SessionSummary>,
    history: &[ChatMessage],
    input: u32,
) -> plan::Parts {
    plan::Parts {
        system: crate::tokens::count(&system.text()),
        summary: summary.map_or(0, |s| {
            crate::tokens::count(&summary_message(&s.text).text())
        }),
        history: history
            .iter()
            .map(|m| plan::Msg {
                tokens: crate::tokens::count(&m.text()),
                tool: m.role == "tool",
            })
            .collect(),
        input,
    }
}

/// The system message that carries the running summary.
pub fn summary_message(summary: &str) -> ChatMessage {
    ChatMessage::new(
        "system",
        format!("Summary of the earlier conversation:\n{summary}"),
    )
}

/// A prompt ready to send, with its breakdown's parts that the context layer changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Assembled {
    pub messages: Vec<ChatMessage>,
    /// Tokens of the history sent (condensed messages counted condensed).
    pub history: u32,
    /// Tokens of the summary message sent; 0: none.
    pub summary: u32,
    /// Tokens of the system message when it was cut.
    pub system_cut: Option<u32>,
}

/// The final messages: the system message (cut when the plan says so), the summary, the kept
/// history (condensed where the plan says so), the input. `built` is the agent's prompt
/// (system, then the session's history, then the input).
pub fn assemble(
    built: &[ChatMessage],
    summary: Option<&SessionSummary>,
    p: &plan::Plan,
) -> Assembled {
    let mut out = Assembled {
        messages: Vec::with_capacity(built.len() + 1),
        history: 0,
        summary: 0,
        system_cut: None,
    };
    let (Some((system, rest)), true) = (built.split_first(), built.len() >= 2) else {
        out.messages = built.to_vec();
        return out;
    };
    let Some((input, history)) = rest.split_last() else {
        out.messages = built.to_vec();
        return out;
    };
    out.messages.push(match p.system_to {
        Some(to) => {
            let cut = text::condense(&system.text(), to);
            out.system_cut = Some(count(&cut));
            ChatMessage::new("system", cut)
        }
        None => system.clone(),
    });
    if let (Some(s), false) = (summary, p.drop_summary) {
        let m = summary_message(&s.text);
        out.summary = count(&m.text());
        out.messages.push(m);
    }
    for (i, m) in history.iter().enumerate().skip(p.fold) {
        let m = match p.condense.iter().find(|(j, _)| *j == i) {
            Some((_, to)) => ChatMessage::new(m.role.clone(), text::condense(&m.text(), *to)),
            None => m.clone(),
        };
        out.history = out.history.saturating_add(count(&m.text()));
        out.messages.push(m);
    }
    out.messages.push(input.clone());
    out
}

/// The plan after the summary call: `first` folded its messages into the new summary; `rest`
/// (the parts without them, with the new summary) is planned again without the sliding window
/// (it already acted), and the result is given in the indices of the whole history.
pub fn replan(
    first: &plan::Plan,
    rest: &plan::Parts,
    limits: &Limits,
) -> Result<plan::Plan, plan::TooLong> {
    let again = plan::decide(
        rest,
        &Limits {
            keep_recent: None,
            ..*limits
        },
    )?;
    Ok(plan::Plan {
        fold: first.fold + again.fold,
        condense: again
            .condense
            .iter()
            .map(|(i, to)| (i + first.fold, *to))
            .collect(),
        ..again
    })
}

/// Why a prompt of `needed` tokens is refused, naming both bounds.
pub fn too_long_message(cfg: &Config, model: &str, max_output: Option<u32>, needed: u64) -> String {
    let window = window_for(cfg, model, max_output);
    let max = cfg.session.context_management.max_context_tokens;
    let model_part = match cfg.models.get(model) {
        Some(m) => format!(
            "model `{model}`'s context window of {} tokens{}",
            m.context_window,
            max_output
                .map(|n| format!(" less the {n} output tokens asked"))
                .unwrap_or_default()
        ),
        None => format!("model `{model}`"),
    };
    format!(
        "the prompt needs {needed} tokens, {} over the limit of {window} tokens (the smaller of \
         session.context_management.max_context_tokens {max} and {model_part}); shorten it, or \
         raise the limit or use a model with a larger context_window",
        needed.saturating_sub(u64::from(window)),
    )
}

/// Refuse a prompt of `prompt_tokens` that passes the window of `model` (chat calls: the
/// caller's messages are sent as they are, never cut).
pub fn check_prompt(
    cfg: &Config,
    model: &str,
    prompt_tokens: u64,
    max_output: Option<u32>,
) -> Result<(), String> {
    if prompt_tokens > u64::from(window_for(cfg, model, max_output)) {
        return Err(too_long_message(cfg, model, max_output, prompt_tokens));
    }
    Ok(())
}

/// Count what the plan did not send (`openclaw_context_tokens_saved_total`): the messages that
/// left the window net of the summary sent instead, and what condensing removed.
pub fn note_saved(parts: &plan::Parts, p: &plan::Plan, summary_sent: u32) -> u64 {
    let overhead = u64::from(crate::tokens::MESSAGE_OVERHEAD);
    let left: u64 = parts.history[..p.fold.min(parts.history.len())]
        .iter()
        .map(|m| u64::from(m.tokens) + overhead)
        .sum();
    let summary = if summary_sent > 0 {
        u64::from(summary_sent) + overhead
    } else {
        0
    };
    let condensed: u64 = p
        .condense
        .iter()
        .filter_map(|(i, to)| {
            parts
                .history
                .get(*i)
                .map(|m| u64::from(m.tokens.saturating_sub(*to)))
        })
        .sum();
    let m = metrics();
    let window = left.saturating_sub(summary);
    if window > 0 {
        m.context_tokens_saved_total
            .with_label_values(&["window"])
            .inc_by(window);
    }
    if condensed > 0 {
        m.context_tokens_saved_total
            .with_label_values(&["compression"])
            .inc_by(condensed);
    }
    window + condensed
}

/// How a turn's context was cut, from the plan and whether the folded messages were summarised.
pub fn cut_of(p: &plan::Plan, summarised: u32) -> ContextCut {
    ContextCut {
        window_dropped: p.fold as u32,
        summarised,
        compressed: p.condense.len() as u32,
    }
}

/// Fold `folded` (the session's oldest messages leaving the window) into `session`'s running
/// summary with one call to the summary model. `Ok(None)` when the call failed (the messages
/// are then dropped without a summary; the turn goes on); `Err` when the budget holds the
/// task's agent.
#[allow(clippy::too_many_arguments)]
pub async fn summarise(
    calls: &Calls,
    budget: &Budget,
    meta: &CallMeta,
    critical: bool,
    session: &Session,
    folded: &[ChatMessage],
    window: u32,
) -> Result<Option<SessionSummary>, BudgetWait> {
    let cfg = calls.cfg.get();
    let Some(model) = summary_model(&cfg) else {
        return Ok(None);
    };
    let cap = summary_cap(window);
    let model_room = cfg
        .models
        .get(&model)
        .map_or(SUMMARY_INPUT_MAX, |m| m.context_window.saturating_sub(cap));
    let max_input = SUMMARY_INPUT_MAX.min(model_room).min(window);
    drop(cfg);
    let pairs: Vec<(String, String)> = folded.iter().map(|m| (m.role.clone(), m.text())).collect();
    let previous = session.summary.as_ref().map(|s| s.text.as_str());
    let req = ChatCompletionRequest {
        model: model.clone(),
        messages: text::summary_request(previous, &pairs, max_input),
        stream: false,
        max_tokens: Some(cap),
        max_completion_tokens: None,
        temperature: None,
        extra: Default::default(),
    };
    let est = u64::from(crate::tokens::count_messages(&req.messages));
    let held = budget
        .reserve(&meta.agent, critical, &model, est, Some(cap))
        .await?;
    let mut meta = meta.clone();
    meta.purpose = Some(SUMMARY_PURPOSE.to_string());
    // Not a task's prompt: no breakdown on its audit line (it counts as summary overhead).
    meta.prompt = None;
    let m = metrics();
    match fallback::chat(calls, &meta, &req, &model).await {
        Ok(answer) => {
            let done = answer.value;
            held.settle(
                done.usage.prompt_tokens + done.usage.completion_tokens,
                done.cost_usd,
            );
            m.context_summary_calls_total
                .with_label_values(&["ok"])
                .inc();
            let text = text::condense(done.response.text().trim(), cap);
            let covers = session.summary.as_ref().map_or(0, |s| s.covers) + folded.len() as u64;
            Ok(Some(SessionSummary {
                tokens: crate::tokens::count(&text),
                text,
                covers,
            }))
        }
        Err(f) => {
            drop(held);
            m.context_summary_calls_total
                .with_label_values(&["failed"])
                .inc();
            if let Some(suppressed) = crate::throttled!("context_summary") {
                tracing::warn!(model = %f.model, error = %f.error, suppressed, "summary call failed; older messages dropped without a summary");
            }
            Ok(None)
        }
    }
}

/// The audit `purpose` of a summary call.
pub const SUMMARY_PURPOSE: &str = "summary";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::count_messages;

    fn built(system: &str, history: &[String], input: &str) -> Vec<ChatMessage> {
        let mut m = vec![ChatMessage::new("system", system)];
        for (i, h) in history.iter().enumerate() {
            m.push(ChatMessage::new(
                if i % 2 == 0 { "user" } else { "assistant" },
                h.clone(),
            ));
        }
        m.push(ChatMessage::new("user", input));
        m
    }

    /// Whatever the plan, the assembled prompt is at most the plan's total, hence the window,
    /// as the provider counts it; the newest messages are the ones kept.
    #[test]
    fn assembled_prompts_stay_within_the_window() {
        let word = |n: usize, w: &str| format!("{w} ").repeat(n);
        let history: Vec<String> = (0..12)
            .map(|i| word(10 + 17 * i, if i % 2 == 0 { "question" } else { "answer" }))
            .collect();
        let summary = SessionSummary {
            text: word(30, "earlier"),
            tokens: 30,
            covers: 4,
        };
        let squeeze = Squeeze {
            trigger_threshold: 0.8,
            target_ratio: 0.5,
            preserve_system_prompt: true,
            preserve_tool_results: true,
        };
        for window in [120u32, 300, 600, 2000] {
            for keep in [None, Some(0), Some(2), Some(6)] {
                for sq in [None, Some(squeeze)] {
                    for with_summary in [false, true] {
                        let b = built(&word(40, "system"), &history, &word(20, "input"));
                        let s = with_summary.then_some(&summary);
                        let parts = parts_of(&b[0], s, &history_of(&b), 20);
                        let limits = Limits {
                            window,
                            keep_recent: keep,
                            squeeze: sq,
                        };
                        let case = format!("{window} {keep:?} {sq:?} {with_summary}");
                        match plan::decide(&parts, &limits) {
                            Ok(p) => {
                                let a = assemble(&b, s, &p);
                                let n = count_messages(&a.messages);
                                assert!(n <= p.total, "{case}: {n} > {}", p.total);
                                assert!(n <= window, "{case}");
                                assert_eq!(a.messages.last(), b.last(), "{case}: input last");
                                let kept = history.len() - p.fold;
                                if kept > 0 && !p.condense.iter().any(|(i, _)| *i == 11) {
                                    assert_eq!(
                                        a.messages[a.messages.len() - 2].text(),
                                        history[11],
                                        "{case}: the newest message is kept"
                                    );
                                }
                                assert_eq!(a.summary > 0, with_summary && !p.drop_summary);
                            }
                            Err(e) => assert!(e.needed > window, "{case}"),
                        }
                    }
                }
            }
        }
    }

    fn history_of(b: &[ChatMessage]) -> Vec<ChatMessage> {
        b[1..b.len() - 1].to_vec()
    }

    #[test]
    fn replan_shifts_into_the_whole_history() {
        let first = plan::Plan {
            fold: 3,
            ..Default::default()
        };
        let rest = plan::Parts {
            system: 10,
            summary: 20,
            history: vec![
                plan::Msg {
                    tokens: 400,
                    tool: false,
                },
                plan::Msg {
                    tokens: 10,
                    tool: false,
                },
            ],
            input: 10,
        };
        let limits = Limits {
            window: 200,
            keep_recent: Some(0),
            squeeze: None,
        };
        let p = replan(&first, &rest, &limits).unwrap();
        assert_eq!(
            p.fold, 4,
            "three summarised, then one more dropped for the window"
        );
        let squeezed = Limits {
            squeeze: Some(Squeeze {
                trigger_threshold: 0.5,
                target_ratio: 0.5,
                preserve_system_prompt: true,
                preserve_tool_results: true,
            }),
            window: 800,
            ..limits
        };
        let p = replan(&first, &rest, &squeezed).unwrap();
        assert_eq!((p.fold, p.condense), (3, vec![(3, 200)]));
    }

    #[test]
    fn windows_and_messages_name_both_bounds() {
        let mut cfg = Config::default();
        cfg.session.context_management.max_context_tokens = 600;
        assert_eq!(window_for(&cfg, "gpt-4o-mini", None), 600);
        assert_eq!(window_for(&cfg, "not-configured", None), 600);
        cfg.session.context_management.max_context_tokens = 1_000_000;
        let cw = cfg.models["gpt-4o-mini"].context_window;
        assert_eq!(window_for(&cfg, "gpt-4o-mini", Some(1000)), cw - 1000);
        assert!(check_prompt(&cfg, "gpt-4o-mini", u64::from(cw - 1000), Some(1000)).is_ok());
        let msg = check_prompt(&cfg, "gpt-4o-mini", u64::from(cw), Some(1000)).unwrap_err();
        assert!(msg.contains("1000 over"), "{msg}");
        assert!(msg.contains("max_context_tokens"), "{msg}");
        assert_eq!(summary_cap(600), 150);
        assert_eq!(summary_cap(64), SUMMARY_TOKENS_MIN);
        assert_eq!(summary_cap(1_000_000), SUMMARY_TOKENS_MAX);
        assert!(summarises(&cfg));
        assert!(summary_model(&cfg).is_some());
    }
}

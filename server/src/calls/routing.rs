//! Model routing (§18.2 `model_routing`): which model runs a task. Pure.
//!
//! Order: an explicit `model` on the task wins; then the first matching rule (when routing is
//! enabled); then the agent's configured model; then `default_model`. A rule matches when every
//! condition it states holds (`task_type` contains the task's type, `estimated_complexity` and
//! `language` equal, `input_tokens > input_tokens_gt`). When the task does not say its
//! complexity or language they are estimated here, and the decision records what was estimated
//! and which rule chose.

use openclaw_proto::Complexity;
use serde::{Deserialize, Serialize};

use crate::config::{ModelRouting, RoutingCondition};

/// Task types the chapter treats as demanding (its `complex_reasoning` rule).
pub const DEMANDING_TYPES: [&str; 3] = ["code_generation", "analysis", "planning"];
/// Task types the chapter treats as simple (its `simple_tasks` rule).
pub const SIMPLE_TYPES: [&str; 3] = ["classification", "extraction", "formatting"];

/// What routing looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteInput<'a> {
    pub explicit_model: Option<&'a str>,
    pub agent_model: Option<&'a str>,
    pub task_type: Option<&'a str>,
    pub complexity: Option<Complexity>,
    pub language: Option<&'a str>,
    /// Tokens of the whole prompt.
    pub input_tokens: u64,
    /// The user's input, for language estimation.
    pub input_text: &'a str,
}

/// Why a model was chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", content = "name", rename_all = "snake_case")]
pub enum RouteReason {
    Explicit,
    Rule(String),
    Agent,
    Default,
    /// The budget's `downgrade_model` action sent it to the cheapest model.
    BudgetDowngrade,
}

impl RouteReason {
    pub fn label(&self) -> String {
        match self {
            RouteReason::Explicit => "explicit".into(),
            RouteReason::Rule(n) => format!("rule:{n}"),
            RouteReason::Agent => "agent".into(),
            RouteReason::Default => "default".into(),
            RouteReason::BudgetDowngrade => "budget_downgrade".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteDecision {
    pub model: String,
    pub reason: RouteReason,
    pub complexity: Complexity,
    pub complexity_estimated: bool,
    pub language: String,
    pub language_estimated: bool,
}

/// `zh` when CJK ideographs make up at least a fifth of the letters, `en` when the letters are
/// mostly ASCII, `other` otherwise (Cyrillic, Arabic, …). Empty text is `en`.
pub fn estimate_language(text: &str) -> &'static str {
    let (mut cjk, mut ascii, mut other) = (0usize, 0usize, 0usize);
    for c in text.chars().filter(|c| c.is_alphabetic()) {
        if crate::tokens::is_cjk(c) {
            cjk += 1;
        } else if c.is_ascii_alphabetic() {
            ascii += 1;
        } else {
            other += 1;
        }
    }
    let letters = cjk + ascii + other;
    if letters == 0 {
        "en"
    } else if cjk * 5 >= letters {
        "zh"
    } else if ascii * 2 >= letters {
        "en"
    } else {
        "other"
    }
}

/// Complexity from the task type and the prompt's size.
pub fn estimate_complexity(task_type: Option<&str>, input_tokens: u64) -> Complexity {
    match task_type {
        Some(t) if SIMPLE_TYPES.contains(&t) => {
            if input_tokens > 8_000 {
                Complexity::Medium
            } else {
                Complexity::Low
            }
        }
        Some(t) if DEMANDING_TYPES.contains(&t) => {
            if input_tokens < 50 {
                Complexity::Medium
            } else {
                Complexity::High
            }
        }
        _ => match input_tokens {
            0..=300 => Complexity::Low,
            301..=4_000 => Complexity::Medium,
            _ => Complexity::High,
        },
    }
}

/// Does `cond` hold for this task?
pub fn matches(
    cond: &RoutingCondition,
    task_type: Option<&str>,
    complexity: Complexity,
    language: &str,
    input_tokens: u64,
) -> bool {
    if let Some(types) = &cond.task_type {
        match task_type {
            Some(t) if types.iter().any(|x| x == t) => {}
            _ => return false,
        }
    }
    if cond.estimated_complexity.is_some_and(|c| c != complexity) {
        return false;
    }
    if cond.language.as_deref().is_some_and(|l| l != language) {
        return false;
    }
    if cond.input_tokens_gt.is_some_and(|gt| input_tokens <= gt) {
        return false;
    }
    true
}

/// Choose the model for a task.
pub fn route(cfg: &ModelRouting, input: &RouteInput<'_>) -> RouteDecision {
    let (complexity, complexity_estimated) = match input.complexity {
        Some(c) => (c, false),
        None => (
            estimate_complexity(input.task_type, input.input_tokens),
            true,
        ),
    };
    let (language, language_estimated) = match input.language {
        Some(l) => (l.to_string(), false),
        None => (estimate_language(input.input_text).to_string(), true),
    };
    let decide = |model: &str, reason: RouteReason| RouteDecision {
        model: model.to_string(),
        reason,
        complexity,
        complexity_estimated,
        language: language.clone(),
        language_estimated,
    };
    if let Some(m) = input.explicit_model {
        return decide(m, RouteReason::Explicit);
    }
    if cfg.enabled {
        let hit = cfg.rules.iter().find(|r| {
            matches(
                &r.condition,
                input.task_type,
                complexity,
                &language,
                input.input_tokens,
            )
        });
        if let Some(rule) = hit {
            return decide(&rule.model, RouteReason::Rule(rule.name.clone()));
        }
    }
    if let Some(m) = input.agent_model {
        return decide(m, RouteReason::Agent);
    }
    decide(&cfg.default_model, RouteReason::Default)
}

/// The error code of a prompt that does not fit its model's context window (task errors and
/// the API's `context_length_exceeded`).
pub const CONTEXT_LENGTH_EXCEEDED: &str = "context_length_exceeded";

/// A prompt too long for a model's context window.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the prompt is {prompt_tokens} tokens{}, more than model `{model}`'s context window of {window} tokens; shorten it or use a model with a larger context_window",
    .max_output.map(|n| format!(" plus {n} output tokens asked")).unwrap_or_default()
)]
pub struct TooLong {
    pub model: String,
    pub prompt_tokens: u64,
    pub max_output: Option<u32>,
    pub window: u32,
}

/// Does a prompt of `prompt_tokens` (plus the `max_output` the caller asked for) fit `model`'s
/// `context_window`? A model that is not configured is not judged here. Pure.
pub fn check_context(
    cfg: &crate::config::Config,
    model: &str,
    prompt_tokens: u64,
    max_output: Option<u32>,
) -> Result<(), TooLong> {
    let Some(m) = cfg.models.get(model) else {
        return Ok(());
    };
    let needed = prompt_tokens + max_output.map(u64::from).unwrap_or(0);
    if needed > u64::from(m.context_window) {
        return Err(TooLong {
            model: model.to_string(),
            prompt_tokens,
            max_output,
            window: m.context_window,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RoutingRule;
    use Complexity::*;

    /// The chapter's four rules, as printed in §18.2.
    fn chapter() -> ModelRouting {
        let rule = |name: &str, cond: RoutingCondition, model: &str| RoutingRule {
            name: name.into(),
            condition: cond,
            model: model.into(),
        };
        let types = |t: &[&str]| Some(t.iter().map(|s| s.to_string()).collect());
        ModelRouting {
            enabled: true,
            default_model: "gpt-4o-mini".into(),
            rules: vec![
                rule(
                    "complex_reasoning",
                    RoutingCondition {
                        task_type: types(&["code_generation", "analysis", "planning"]),
                        estimated_complexity: Some(High),
                        ..Default::default()
                    },
                    "gpt-4o",
                ),
                rule(
                    "simple_tasks",
                    RoutingCondition {
                        task_type: types(&["classification", "extraction", "formatting"]),
                        estimated_complexity: Some(Low),
                        ..Default::default()
                    },
                    "gpt-4o-mini",
                ),
                rule(
                    "chinese_content",
                    RoutingCondition {
                        language: Some("zh".into()),
                        task_type: types(&["writing", "translation"]),
                        ..Default::default()
                    },
                    "deepseek-v3",
                ),
                rule(
                    "long_document",
                    RoutingCondition {
                        input_tokens_gt: Some(50_000),
                        ..Default::default()
                    },
                    "claude-3-5-sonnet",
                ),
            ],
        }
    }

    fn input<'a>(
        task_type: Option<&'a str>,
        complexity: Option<Complexity>,
        text: &'a str,
        tokens: u64,
    ) -> RouteInput<'a> {
        RouteInput {
            explicit_model: None,
            agent_model: None,
            task_type,
            complexity,
            language: None,
            input_tokens: tokens,
            input_text: text,
        }
    }

    #[test]
    fn chapter_rules_table() {
        let cfg = chapter();
        let cases: Vec<(&str, RouteInput, &str, RouteReason)> = vec![
            (
                "complex code",
                input(Some("code_generation"), Some(High), "write a parser", 500),
                "gpt-4o",
                RouteReason::Rule("complex_reasoning".into()),
            ),
            (
                "estimated high analysis",
                input(
                    Some("analysis"),
                    None,
                    "analyse the quarterly numbers",
                    2_000,
                ),
                "gpt-4o",
                RouteReason::Rule("complex_reasoning".into()),
            ),
            (
                "medium code falls through",
                input(Some("code_generation"), Some(Medium), "x", 500),
                "gpt-4o-mini",
                RouteReason::Default,
            ),
            (
                "simple classification",
                input(Some("classification"), None, "spam or not?", 20),
                "gpt-4o-mini",
                RouteReason::Rule("simple_tasks".into()),
            ),
            (
                "chinese writing",
                input(Some("writing"), None, "请写一封感谢信给团队成员", 40),
                "deepseek-v3",
                RouteReason::Rule("chinese_content".into()),
            ),
            (
                "english writing",
                input(Some("writing"), None, "write a thank-you note", 40),
                "gpt-4o-mini",
                RouteReason::Default,
            ),
            (
                "long document",
                input(None, None, "…", 60_000),
                "claude-3-5-sonnet",
                RouteReason::Rule("long_document".into()),
            ),
            (
                "exactly the threshold is not greater",
                input(None, None, "…", 50_000),
                "gpt-4o-mini",
                RouteReason::Default,
            ),
        ];
        for (name, inp, model, reason) in cases {
            let d = route(&cfg, &inp);
            assert_eq!((d.model.as_str(), d.reason), (model, reason), "{name}");
        }
    }

    #[test]
    fn precedence_explicit_rule_agent_default() {
        let cfg = chapter();
        let mut i = input(Some("writing"), None, "请写一封信", 10);
        i.explicit_model = Some("gpt-4o");
        i.agent_model = Some("claude-3-5-haiku");
        assert_eq!(route(&cfg, &i).reason, RouteReason::Explicit);
        i.explicit_model = None;
        assert_eq!(route(&cfg, &i).model, "deepseek-v3");
        i.input_text = "write a letter";
        let d = route(&cfg, &i);
        assert_eq!(
            (d.model.as_str(), d.reason),
            ("claude-3-5-haiku", RouteReason::Agent)
        );
        let mut off = chapter();
        off.enabled = false;
        i.input_text = "请写一封信";
        assert_eq!(route(&off, &i).reason, RouteReason::Agent);
    }

    #[test]
    fn given_language_and_complexity_are_not_estimated() {
        let mut i = input(Some("writing"), Some(Low), "write a letter", 10);
        i.language = Some("zh");
        let d = route(&chapter(), &i);
        assert_eq!(d.model, "deepseek-v3");
        assert!(!d.language_estimated && !d.complexity_estimated);
        let d = route(&chapter(), &input(None, None, "hi", 10));
        assert!(d.language_estimated && d.complexity_estimated);
        assert_eq!((d.language.as_str(), d.complexity), ("en", Low));
    }

    #[test]
    fn language_estimation_table() {
        let cases = [
            ("hello world", "en"),
            ("你好，世界", "zh"),
            ("请帮我 review 这个 pull request", "zh"),
            ("deploy the service to 生产", "en"),
            ("a long english sentence with one 字 only in it here", "en"),
            ("Привет, как дела", "other"),
            ("1234 !!", "en"),
            ("", "en"),
        ];
        for (text, want) in cases {
            assert_eq!(estimate_language(text), want, "{text}");
        }
    }

    #[test]
    fn complexity_estimation_table() {
        let cases = [
            (Some("classification"), 100, Low),
            (Some("classification"), 10_000, Medium),
            (Some("planning"), 10, Medium),
            (Some("planning"), 500, High),
            (None, 100, Low),
            (Some("chat"), 1_000, Medium),
            (None, 5_000, High),
        ];
        for (t, tokens, want) in cases {
            assert_eq!(estimate_complexity(t, tokens), want, "{t:?} {tokens}");
        }
    }

    #[test]
    fn context_window_table() {
        let mut cfg = crate::config::Config::default();
        if let Some(m) = cfg.models.get_mut("gpt-4o-mini") {
            m.context_window = 100;
        }
        let cases: [(&str, u64, Option<u32>, bool); 6] = [
            ("gpt-4o-mini", 100, None, true),
            ("gpt-4o-mini", 101, None, false),
            ("gpt-4o-mini", 60, Some(40), true),
            ("gpt-4o-mini", 60, Some(41), false),
            ("not-configured", 1_000_000, None, true),
            ("gpt-4o", 101, None, true),
        ];
        for (model, prompt, out, fits) in cases {
            let got = check_context(&cfg, model, prompt, out);
            assert_eq!(got.is_ok(), fits, "{model} {prompt} {out:?}");
            if let Err(e) = got {
                let msg = e.to_string();
                assert!(msg.contains("context window of 100"), "{msg}");
            }
        }
    }
}

//! The checks of an embeddings request before any call (pure): a configured model of kind
//! `embedding`, `input` a string or a non-empty list of at most [`INPUTS_MAX`] non-empty
//! strings, each within the model's `max_input_tokens` and all within [`REQUEST_TOKENS_MAX`],
//! and `dimensions` (when given) equal to the model's.

use serde_json::Value;

use crate::config::{Config, ModelKind};

/// Inputs one request may carry (OpenAI's bound).
pub const INPUTS_MAX: usize = 2048;
/// Tokens of all the inputs of one request together (OpenAI's bound).
pub const REQUEST_TOKENS_MAX: u64 = 300_000;

/// Why a request is refused before any call.
#[derive(Debug, Clone, PartialEq)]
pub enum Invalid {
    /// The model is not configured (`known`: the configured embedding models).
    UnknownModel {
        model: String,
        known: Vec<String>,
    },
    /// The model is a chat model.
    NotEmbedding {
        model: String,
        known: Vec<String>,
    },
    /// `input` is not a string or a list of strings.
    InputShape(String),
    /// No input, or an empty string at `index`.
    EmptyInput {
        index: Option<usize>,
    },
    TooManyInputs {
        count: usize,
    },
    /// Input `index` has `tokens` tokens, over the model's `limit`.
    InputTooLong {
        index: usize,
        tokens: u64,
        limit: u32,
    },
    /// The inputs hold `tokens` tokens together, over [`REQUEST_TOKENS_MAX`].
    RequestTooLarge {
        tokens: u64,
    },
    /// `dimensions` differs from the model's.
    Dimensions {
        asked: u32,
        model: u32,
    },
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::UnknownModel { model, known } => write!(
                f,
                "the model `{model}` does not exist on this gateway; embedding models: {}",
                known.join(", ")
            ),
            Invalid::NotEmbedding { model, known } => write!(
                f,
                "`{model}` is a chat model, not an embedding model; embedding models: {}",
                known.join(", ")
            ),
            Invalid::InputShape(why) => f.write_str(why),
            Invalid::EmptyInput { index: None } => {
                f.write_str("`input` must contain at least one string")
            }
            Invalid::EmptyInput { index: Some(i) } => {
                write!(f, "input[{i}] is empty; every input needs some text")
            }
            Invalid::TooManyInputs { count } => write!(
                f,
                "{count} inputs in one request; at most {INPUTS_MAX} (split the request)"
            ),
            Invalid::InputTooLong {
                index,
                tokens,
                limit,
            } => write!(
                f,
                "input[{index}] has {tokens} tokens; this model takes at most {limit} tokens per \
                 input (max_input_tokens)"
            ),
            Invalid::RequestTooLarge { tokens } => write!(
                f,
                "the inputs hold {tokens} tokens together; at most {REQUEST_TOKENS_MAX} per \
                 request (split the request)"
            ),
            Invalid::Dimensions { asked, model } => write!(
                f,
                "`dimensions` {asked} is not this model's: it produces {model} (omit \
                 `dimensions` or send {model})"
            ),
        }
    }
}

/// A request that passed: its inputs, each one's token count, the model's dimensions.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub inputs: Vec<String>,
    pub tokens: Vec<u64>,
    pub dimensions: u32,
}

impl Checked {
    pub fn total_tokens(&self) -> u64 {
        self.tokens.iter().sum()
    }
}

/// The inputs of `input` (a string, or a list of strings).
pub fn inputs_of(input: &Value) -> Result<Vec<String>, Invalid> {
    let token_arrays = || {
        Invalid::InputShape(
            "`input` as token arrays is not supported; send the text (a string or a list of \
             strings)"
                .into(),
        )
    };
    match input {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(_) | Value::Array(_) => Err(token_arrays()),
                _ => Err(Invalid::InputShape(
                    "`input` must be a string or a list of strings".into(),
                )),
            })
            .collect(),
        _ => Err(Invalid::InputShape(
            "`input` must be a string or a list of strings".into(),
        )),
    }
}

/// The configured embedding models, by name.
pub fn embedding_models(cfg: &Config) -> Vec<String> {
    cfg.models
        .iter()
        .filter(|(_, m)| m.kind == ModelKind::Embedding)
        .map(|(n, _)| n.clone())
        .collect()
}

/// Check a JSON request for `model` (pure; tokens counted with [`crate::tokens::count`]).
pub fn check(
    cfg: &Config,
    model: &str,
    input: &Value,
    dimensions: Option<u32>,
) -> Result<Checked, Invalid> {
    // The count first, so a huge list is refused before it is copied.
    if let Value::Array(items) = input {
        if items.len() > INPUTS_MAX {
            return Err(Invalid::TooManyInputs { count: items.len() });
        }
    }
    check_inputs(cfg, model, inputs_of(input)?, dimensions)
}

/// Check `inputs` for `model` (pure): what [`check`] does after decoding `input`.
pub fn check_inputs(
    cfg: &Config,
    model: &str,
    inputs: Vec<String>,
    dimensions: Option<u32>,
) -> Result<Checked, Invalid> {
    let m = match cfg.models.get(model) {
        None => {
            return Err(Invalid::UnknownModel {
                model: model.to_string(),
                known: embedding_models(cfg),
            })
        }
        Some(m) if m.kind != ModelKind::Embedding => {
            return Err(Invalid::NotEmbedding {
                model: model.to_string(),
                known: embedding_models(cfg),
            })
        }
        Some(m) => m,
    };
    let dims = m.dimensions.unwrap_or(0);
    if let Some(asked) = dimensions {
        if asked != dims {
            return Err(Invalid::Dimensions { asked, model: dims });
        }
    }
    if inputs.len() > INPUTS_MAX {
        return Err(Invalid::TooManyInputs {
            count: inputs.len(),
        });
    }
    if inputs.is_empty() {
        return Err(Invalid::EmptyInput { index: None });
    }
    let limit = m.input_token_limit();
    let mut tokens = Vec::with_capacity(inputs.len());
    for (index, text) in inputs.iter().enumerate() {
        if text.is_empty() {
            return Err(Invalid::EmptyInput { index: Some(index) });
        }
        let n = u64::from(crate::tokens::count(text));
        if n > u64::from(limit) {
            return Err(Invalid::InputTooLong {
                index,
                tokens: n,
                limit,
            });
        }
        tokens.push(n);
    }
    let total: u64 = tokens.iter().sum();
    if total > REQUEST_TOKENS_MAX {
        return Err(Invalid::RequestTooLarge { tokens: total });
    }
    Ok(Checked {
        inputs,
        tokens,
        dimensions: dims,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::kinds::{DEFAULT_EMBEDDING_DIMENSIONS as DIMS, DEFAULT_EMBEDDING_MODEL};
    use serde_json::json;

    fn kind_of(r: Result<Checked, Invalid>) -> String {
        match r {
            Ok(c) => format!("ok {}", c.inputs.len()),
            Err(e) => {
                let s = format!("{e:?}");
                s.split([' ', '{', '('])
                    .next()
                    .unwrap_or_default()
                    .to_string()
            }
        }
    }

    #[test]
    fn request_validation_table() {
        let cfg = Config::default();
        let long = "word ".repeat(9000);
        let many: Vec<Value> = (0..INPUTS_MAX + 1).map(|_| json!("a")).collect();
        let max: Vec<Value> = (0..INPUTS_MAX).map(|_| json!("a")).collect();
        // 2048 inputs of ~200 tokens: each within the model's limit, over the request's.
        let big_total: Vec<Value> = (0..INPUTS_MAX)
            .map(|_| json!("word ".repeat(200)))
            .collect();
        let m = DEFAULT_EMBEDDING_MODEL;
        let cases: Vec<(&str, Value, Option<u32>, &str)> = vec![
            (m, json!("hello"), None, "ok 1"),
            (m, json!(["a", "b"]), None, "ok 2"),
            (m, json!(["a", "b"]), Some(DIMS), "ok 2"),
            (m, Value::Array(max), None, "ok 2048"),
            (m, json!(["a", "b"]), Some(DIMS + 1), "Dimensions"),
            ("ghost", json!("a"), None, "UnknownModel"),
            ("gpt-4o", json!("a"), None, "NotEmbedding"),
            (m, json!([]), None, "EmptyInput"),
            (m, json!(""), None, "EmptyInput"),
            (m, json!(["a", ""]), None, "EmptyInput"),
            (m, Value::Array(many), None, "TooManyInputs"),
            (m, json!([1, 2, 3]), None, "InputShape"),
            (m, json!([[1, 2], [3]]), None, "InputShape"),
            (m, json!({"text": "a"}), None, "InputShape"),
            (m, json!(null), None, "InputShape"),
            (m, json!(["ok", long]), None, "InputTooLong"),
            (m, Value::Array(big_total), None, "RequestTooLarge"),
        ];
        for (model, input, dims, want) in cases {
            let got = kind_of(check(&cfg, model, &input, dims));
            assert_eq!(got, want, "{model} {dims:?}");
        }
    }

    #[test]
    fn messages_name_the_limit_and_the_fix() {
        let cfg = Config::default();
        let long = "word ".repeat(9000);
        let e = check(&cfg, DEFAULT_EMBEDDING_MODEL, &json!(["x", long]), None).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("input[1]") && s.contains("8191"), "{s}");
        let s = check(&cfg, "gpt-4o", &json!("x"), None)
            .unwrap_err()
            .to_string();
        assert!(
            s.contains("chat model") && s.contains(DEFAULT_EMBEDDING_MODEL),
            "{s}"
        );
        let c = check(&cfg, DEFAULT_EMBEDDING_MODEL, &json!(["a b c", "d"]), None).unwrap();
        assert_eq!(c.total_tokens(), c.tokens.iter().sum::<u64>());
        assert_eq!(c.dimensions, DIMS);
    }
}

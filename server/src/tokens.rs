//! Token estimation, close to OpenAI's cl100k tokenizer without shipping its vocabulary.
//!
//! Owns [`count`] (one text) and [`count_messages`] (a chat request's prompt, with OpenAI's
//! per-message overhead). Both the gateway (budget reservations, prompt breakdowns) and the
//! simulator (its reported `usage`) use these, so a simulated call's `usage.prompt_tokens` equals
//! `count_messages(request.messages)` exactly.
//!
//! The estimate walks the text once, splitting it into pieces the way cl100k's pre-tokenizer does:
//! - a CJK character (Han, kana, Hangul, CJK and full-width punctuation) is 1 token;
//! - a run of letters is a word: 1 token up to 7 letters, then 1 more per 7 letters
//!   (cl100k keeps common English words whole and splits long ones into a few pieces);
//! - a run of digits is 1 token per 3 digits (cl100k groups numbers by three);
//! - any other visible character (punctuation, symbols) is 1 token;
//! - spaces and tabs are free (cl100k glues them to the next word); a run of line breaks is 1.
//!
//! Invariant: the count is additive across pieces: `count(a + " " + b) == count(a) + count(b)`
//! when `a` and `b` are separated by a space, and likewise across a CJK or punctuation boundary.
//! The simulator relies on that to produce texts of an exact token length.

use openclaw_proto::openai::ChatMessage;

/// Tokens added per message by OpenAI's chat format (`<|im_start|>role\n ... <|im_end|>\n`).
pub const MESSAGE_OVERHEAD: u32 = 4;
/// Tokens priming the assistant's reply (`<|im_start|>assistant\n`).
pub const REPLY_PRIMING: u32 = 3;

/// Letters per token beyond the first piece of a word.
const LETTERS_PER_TOKEN: u32 = 7;
/// Digits per token (cl100k splits numbers in groups of at most three).
const DIGITS_PER_TOKEN: u32 = 3;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Space,
    Newline,
    Letter,
    Digit,
    Cjk,
    Other,
}

fn class(c: char) -> Class {
    if c == '\n' || c == '\r' {
        Class::Newline
    } else if c.is_whitespace() {
        Class::Space
    } else if is_cjk(c) {
        Class::Cjk
    } else if c.is_ascii_digit() {
        Class::Digit
    } else if c.is_alphabetic() {
        Class::Letter
    } else if c.is_numeric() {
        Class::Digit
    } else {
        Class::Other
    }
}

/// True for characters that cl100k encodes as roughly one token each.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3000..=0x303F       // CJK symbols and punctuation (、。「」)
        | 0x3040..=0x30FF     // hiragana, katakana
        | 0x3400..=0x4DBF     // CJK extension A
        | 0x4E00..=0x9FFF     // CJK unified ideographs
        | 0xAC00..=0xD7AF     // Hangul syllables
        | 0xF900..=0xFAFF     // CJK compatibility ideographs
        | 0xFF00..=0xFFEF     // full-width forms (，！？)
        | 0x20000..=0x2FFFF   // CJK extensions B..F
    )
}

fn run_tokens(class: Class, len: u32) -> u32 {
    match class {
        Class::Space => 0,
        Class::Newline => 1,
        Class::Letter => 1 + (len - 1) / LETTERS_PER_TOKEN,
        Class::Digit => len.div_ceil(DIGITS_PER_TOKEN),
        // Runs of these are never formed: each character is its own piece.
        Class::Cjk | Class::Other => len,
    }
}

/// Estimated cl100k token count of `text`.
pub fn count(text: &str) -> u32 {
    let mut total: u32 = 0;
    let mut run: Option<(Class, u32)> = None;
    for c in text.chars() {
        let k = class(c);
        run = match run {
            Some((prev, len)) if prev == k => Some((prev, len.saturating_add(1))),
            Some((prev, len)) => {
                total = total.saturating_add(run_tokens(prev, len));
                Some((k, 1))
            }
            None => Some((k, 1)),
        };
    }
    if let Some((prev, len)) = run {
        total = total.saturating_add(run_tokens(prev, len));
    }
    total
}

/// Prompt tokens of a chat request, as OpenAI accounts them: each message's content plus
/// [`MESSAGE_OVERHEAD`], plus [`REPLY_PRIMING`] once.
pub fn count_messages(msgs: &[ChatMessage]) -> u32 {
    msgs.iter()
        .map(|m| count(&m.text()).saturating_add(MESSAGE_OVERHEAD))
        .fold(REPLY_PRIMING, u32::saturating_add)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn counts_follow_the_table() {
        let cases: &[(&str, u32)] = &[
            ("", 0),
            ("   ", 0),
            ("hello", 1),
            ("hello world", 2),
            ("Hello, world!", 4),
            ("The quick brown fox jumps over the lazy dog.", 10),
            ("internationalization", 3),
            ("performance", 2),
            ("2024", 2),
            ("123", 1),
            ("1234567", 3),
            ("a\n\nb", 3),
            ("你好世界", 4),
            ("你好，世界。", 6),
            ("使用 GPT-4o 模型", 8),
            ("こんにちは", 5),
            ("fn main() { println!(\"hi\"); }", 14),
            ("café résumé", 2),
        ];
        for (text, want) in cases {
            assert_eq!(count(text), *want, "count({text:?})");
        }
    }

    #[test]
    fn counting_is_additive_across_spaces_and_cjk() {
        let parts = ["alpha", "beta,", "数据", "gamma.", "节点", "x"];
        let mut joined = String::new();
        let mut sum = 0;
        for p in parts {
            if !joined.is_empty() && p.is_ascii() {
                joined.push(' ');
            }
            joined.push_str(p);
            sum += count(p);
        }
        assert_eq!(count(&joined), sum, "{joined}");
    }

    #[test]
    fn english_prose_is_near_four_chars_per_token() {
        let text = "Token accounting lets a team see where its budget goes: every model call \
                    logs input and output tokens, the model, the agent and the latency, so a \
                    weekly report can show which agents are expensive and why.";
        let n = count(text) as f64;
        let ratio = text.len() as f64 / n;
        assert!(
            (3.5..=6.0).contains(&ratio),
            "{ratio} chars per token ({n} tokens)"
        );
    }

    #[test]
    fn messages_add_openai_overhead() {
        assert_eq!(count_messages(&[]), REPLY_PRIMING);
        let msgs = [
            ChatMessage::new("system", "You are helpful."),
            ChatMessage::new("user", "hello world"),
        ];
        // "You are helpful." = 3 words + "." = 4; "hello world" = 2.
        assert_eq!(count_messages(&msgs), 4 + 4 + 2 + 4 + 3);
    }
}

//! Pure text work of the context layer: condensing a message to a number of tokens
//! ([`condense`], deterministic: the head of the text and a marker), and the summary request
//! ([`summary_request`]: the running summary so far and the messages leaving the window, asking
//! for a new running summary).

use openclaw_proto::openai::ChatMessage;
use openclaw_proto::session::SUMMARY_MARKER;

use crate::tokens::count;

/// What a condensed message ends with.
pub const CONDENSED_MARK: &str = " […]";

/// The longest prefix of `text` (on a char boundary) of at most `max` tokens.
fn head(text: &str, max: u32) -> &str {
    if count(text) <= max {
        return text;
    }
    // Token counts of prefixes grow with their length: binary search the char boundary.
    let mut bounds: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    bounds.push(text.len());
    let (mut lo, mut hi) = (0usize, bounds.len() - 1);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if count(&text[..bounds[mid]]) <= max {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    &text[..bounds[lo]]
}

/// `text` cut to at most `to` tokens: unchanged when it fits, else its head and
/// [`CONDENSED_MARK`].
pub fn condense(text: &str, to: u32) -> String {
    if count(text) <= to {
        return text.to_string();
    }
    let room = to.saturating_sub(count(CONDENSED_MARK));
    let mut out = format!("{}{CONDENSED_MARK}", head(text, room).trim_end());
    // Joining can merge two runs; shave until it fits.
    while count(&out) > to && !out.is_empty() {
        let keep = head(&out, to.saturating_sub(1)).len();
        out.truncate(keep);
    }
    out
}

/// The instruction of a summary request, after [`SUMMARY_MARKER`].
const INSTRUCTION: &str = "Update the running summary of a conversation. Keep the facts, \
decisions, names and numbers that later turns may need; drop greetings and repetition. Answer \
with the new summary only.";

/// The request that folds `folded` (role, content; oldest first) into the running summary
/// `previous`: a system message starting with [`SUMMARY_MARKER`] and one user message with the
/// summary so far and the new messages, cut to `max_input` tokens (the oldest messages are cut
/// first, each condensed to an equal share).
pub fn summary_request(
    previous: Option<&str>,
    folded: &[(String, String)],
    max_input: u32,
) -> Vec<ChatMessage> {
    let system = format!("{SUMMARY_MARKER}\n{INSTRUCTION}");
    let prev = previous.unwrap_or("(none yet)");
    // Overhead of the two messages and the reply, the headings, and per message its role,
    // colon and line end.
    let fixed = count(&system) + count(prev) + 24 + 4 * folded.len() as u32;
    let room = max_input.saturating_sub(fixed);
    let share = if folded.is_empty() {
        room
    } else {
        (room / folded.len() as u32).max(1)
    };
    let mut user = format!("Summary so far:\n{prev}\n\nNew messages:\n");
    for (role, content) in folded {
        user.push_str(role);
        user.push_str(": ");
        user.push_str(&condense(content, share));
        user.push('\n');
    }
    vec![
        ChatMessage::new("system", system),
        ChatMessage::new("user", user),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condense_table() {
        let long = "The cluster keeps every session in the replicated state machine. ".repeat(10);
        let cases: Vec<(&str, u32)> = vec![
            ("short text", 50),
            (&long, 40),
            (&long, 10),
            (&long, 3),
            ("上下文滑动窗口限制对话历史长度上下文滑动窗口", 8),
            ("", 5),
        ];
        for (text, to) in cases {
            let got = condense(text, to);
            assert!(count(&got) <= to, "{text:?} to {to}: {got:?}");
            if count(text) <= to {
                assert_eq!(got, text);
            } else {
                assert!(got.ends_with(CONDENSED_MARK) || to < 4, "{got:?}");
                assert!(
                    count(&got) + 6 >= to.min(count(text)),
                    "kept little: {got:?}"
                );
            }
            assert_eq!(condense(text, to), got, "deterministic");
        }
    }

    #[test]
    fn summary_requests_fit_their_bound() {
        let big = "alpha beta gamma delta ".repeat(400);
        let folded = vec![
            ("user".to_string(), big.clone()),
            ("assistant".to_string(), big),
        ];
        for max in [200u32, 600, 4000] {
            let msgs = summary_request(Some("earlier facts"), &folded, max);
            assert!(msgs[0].text().starts_with(SUMMARY_MARKER));
            let n = crate::tokens::count_messages(&msgs);
            assert!(n <= max, "{max}: {n}");
            assert!(msgs[1].text().contains("earlier facts"));
        }
        let msgs = summary_request(None, &[], 100);
        assert!(msgs[1].text().contains("(none yet)"));
    }
}

//! Markdown → chunks (pure). A chunk never spans two sections: headings (`#` … `######`, outside
//! fenced code) start a new one, and each chunk carries its heading path (`Setup > Install`).
//! Within a section, paragraphs (blank-line separated; a fenced code block is one paragraph)
//! are packed up to [`TARGET_TOKENS`]; the next chunk of the same section starts with the last
//! [`OVERLAP_TOKENS`] or so of the previous one (whole words), so a fact cut at a boundary is
//! still whole in one chunk. A paragraph longer than the target is cut at word boundaries.
//! Bound: a chunk has at most `target + overlap` tokens.
//! Tokens are counted with [`crate::tokens::count`].

/// Tokens a chunk aims at (at most this, plus the overlap carried in).
pub const TARGET_TOKENS: u32 = 400;
/// Tokens of the previous chunk repeated at the start of the next one (same section).
pub const OVERLAP_TOKENS: u32 = 60;
/// Chunks one document may give; the rest of a larger document is not indexed.
pub const CHUNKS_PER_FILE_MAX: usize = 2_000;

/// One chunk of a document.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// The heading path, outermost first, joined with ` > ` (empty before the first heading).
    pub heading: String,
    pub text: String,
    pub tokens: u32,
    /// 1-based line of the document where the chunk's first paragraph starts.
    pub line: usize,
}

impl Chunk {
    /// What is embedded and indexed: the heading path, then the text.
    pub fn indexed_text(&self) -> String {
        if self.heading.is_empty() {
            self.text.clone()
        } else {
            format!("{}\n{}", self.heading, self.text)
        }
    }
}

/// A paragraph and the line it starts on.
struct Para {
    text: String,
    line: usize,
}

/// A section: its heading path and paragraphs.
struct Section {
    heading: String,
    paras: Vec<Para>,
}

/// `Some((level, title))` for an ATX heading line.
fn heading_of(line: &str) -> Option<(usize, &str)> {
    let t = line.trim_start();
    if line.len() - t.len() > 3 {
        return None; // indented code
    }
    let level = t.chars().take_while(|c| *c == '#').count();
    if level == 0 || level > 6 {
        return None;
    }
    let rest = &t[level..];
    if !(rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t')) {
        return None;
    }
    Some((level, rest.trim().trim_end_matches('#').trim()))
}

fn is_fence(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("```") || t.starts_with("~~~")
}

fn sections(doc: &str) -> Vec<Section> {
    let mut out = vec![Section {
        heading: String::new(),
        paras: Vec::new(),
    }];
    let mut path: Vec<(usize, String)> = Vec::new();
    let mut cur: Option<Para> = None;
    let mut in_fence = false;
    let flush = |out: &mut Vec<Section>, cur: &mut Option<Para>| {
        if let Some(p) = cur.take() {
            if !p.text.trim().is_empty() {
                if let Some(s) = out.last_mut() {
                    s.paras.push(p);
                }
            }
        }
    };
    for (i, line) in doc.lines().enumerate() {
        let n = i + 1;
        if in_fence {
            if let Some(p) = cur.as_mut() {
                p.text.push('\n');
                p.text.push_str(line);
            }
            if is_fence(line) {
                in_fence = false;
                flush(&mut out, &mut cur);
            }
            continue;
        }
        if is_fence(line) {
            flush(&mut out, &mut cur);
            in_fence = true;
            cur = Some(Para {
                text: line.to_string(),
                line: n,
            });
            continue;
        }
        if let Some((level, title)) = heading_of(line) {
            flush(&mut out, &mut cur);
            path.retain(|(l, _)| *l < level);
            path.push((level, title.to_string()));
            let heading = path
                .iter()
                .map(|(_, t)| t.as_str())
                .collect::<Vec<_>>()
                .join(" > ");
            out.push(Section {
                heading,
                paras: Vec::new(),
            });
            continue;
        }
        if line.trim().is_empty() {
            flush(&mut out, &mut cur);
            continue;
        }
        match cur.as_mut() {
            Some(p) => {
                p.text.push('\n');
                p.text.push_str(line);
            }
            None => {
                cur = Some(Para {
                    text: line.to_string(),
                    line: n,
                })
            }
        }
    }
    flush(&mut out, &mut cur);
    out.retain(|s| !s.paras.is_empty());
    out
}

fn count(text: &str) -> u32 {
    crate::tokens::count(text)
}

/// The longest run of whole words at the end of `text` within `max` tokens.
fn tail_words(text: &str, max: u32) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut start = words.len();
    while start > 0 && count(&words[start - 1..].join(" ")) <= max {
        start -= 1;
    }
    words[start..].join(" ")
}

/// `text` cut at word boundaries into pieces of at most `max` tokens (a single word longer
/// than that is a piece of its own).
fn split_words(text: &str, max: u32) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Vec<&str> = Vec::new();
    for w in text.split_whitespace() {
        cur.push(w);
        if cur.len() > 1 && count(&cur.join(" ")) > max {
            cur.pop();
            out.push(cur.join(" "));
            cur = vec![w];
        }
    }
    if !cur.is_empty() {
        out.push(cur.join(" "));
    }
    out
}

/// Chunk a markdown document with the given target and overlap (in tokens).
pub fn chunk_with(doc: &str, target: u32, overlap: u32) -> Vec<Chunk> {
    let target = target.max(1);
    let overlap = overlap.min(target / 2);
    let mut out: Vec<Chunk> = Vec::new();
    for s in sections(doc) {
        // (text, line) pieces no longer than the target.
        let mut pieces: Vec<(String, usize)> = Vec::new();
        for p in s.paras {
            if count(&p.text) <= target {
                pieces.push((p.text, p.line));
            } else {
                pieces.extend(
                    split_words(&p.text, target)
                        .into_iter()
                        .map(|t| (t, p.line)),
                );
            }
        }
        let mut text = String::new();
        let mut line = 0;
        let mut fresh = false; // the chunk holds a piece of its own, not only the overlap
        for (piece, at) in pieces {
            let joined = if text.is_empty() {
                piece.clone()
            } else {
                format!("{text}\n\n{piece}")
            };
            if fresh && count(&joined) > target + overlap {
                let mut carried = tail_words(&text, overlap);
                // Token counts do not add up exactly across a join: shorten the overlap
                // until the new chunk keeps the bound.
                while !carried.is_empty()
                    && count(&format!("{carried}\n\n{piece}")) > target + overlap
                {
                    carried = carried
                        .split_once(' ')
                        .map(|(_, rest)| rest.to_string())
                        .unwrap_or_default();
                }
                out.push(Chunk {
                    heading: s.heading.clone(),
                    tokens: count(&text),
                    text: std::mem::take(&mut text),
                    line,
                });
                text = if carried.is_empty() {
                    piece
                } else {
                    format!("{carried}\n\n{piece}")
                };
                line = at;
            } else {
                if text.is_empty() {
                    line = at;
                }
                text = joined;
            }
            fresh = true;
        }
        if fresh && !text.trim().is_empty() {
            out.push(Chunk {
                heading: s.heading.clone(),
                tokens: count(&text),
                text,
                line,
            });
        }
        if out.len() >= CHUNKS_PER_FILE_MAX {
            out.truncate(CHUNKS_PER_FILE_MAX);
            break;
        }
    }
    out
}

/// Chunk a markdown document with [`TARGET_TOKENS`] and [`OVERLAP_TOKENS`].
pub fn chunk(doc: &str) -> Vec<Chunk> {
    chunk_with(doc, TARGET_TOKENS, OVERLAP_TOKENS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentence(i: usize) -> String {
        format!(
            "Fact number {i} says the deployment uses port {}.",
            8000 + i
        )
    }

    #[test]
    fn headings_and_paragraphs_make_sections() {
        let doc = "intro line\n\n# Setup\nInstall it.\n\nThen run it.\n\n## Install\nUse apt.\n\
                   ```\n# not a heading\n\ncode\n```\n# Usage\n####### not a heading either\n";
        let got: Vec<(String, String, usize)> = chunk(doc)
            .into_iter()
            .map(|c| (c.heading, c.text, c.line))
            .collect();
        assert_eq!(
            got,
            vec![
                ("".into(), "intro line".into(), 1),
                ("Setup".into(), "Install it.\n\nThen run it.".into(), 4),
                (
                    "Setup > Install".into(),
                    "Use apt.\n\n```\n# not a heading\n\ncode\n```".into(),
                    9
                ),
                ("Usage".into(), "####### not a heading either".into(), 16),
            ]
        );
        assert!(chunk("").is_empty());
        assert!(chunk("# Only a heading\n\n## And another\n").is_empty());
    }

    #[test]
    fn long_sections_are_packed_near_the_target_with_overlap() {
        // 60 paragraphs of ~13 tokens under one heading.
        let doc = format!(
            "# Facts\n\n{}",
            (0..60).map(sentence).collect::<Vec<_>>().join("\n\n")
        );
        let chunks = chunk_with(&doc, 100, 20);
        assert!(chunks.len() > 5, "{}", chunks.len());
        for c in &chunks {
            assert!(c.tokens <= 100 + 20, "{} tokens", c.tokens);
            assert_eq!(c.heading, "Facts");
        }
        for pair in chunks.windows(2) {
            // The next chunk starts with the end of the previous one.
            let tail = tail_words(&pair[0].text, 20);
            assert!(!tail.is_empty());
            assert!(
                pair[1].text.starts_with(&tail),
                "{:?} / {:?}",
                pair[0].text,
                pair[1].text
            );
        }
        // Every fact is whole in some chunk.
        for i in 0..60 {
            assert!(
                chunks.iter().any(|c| c.text.contains(&sentence(i))),
                "fact {i}"
            );
        }
    }

    #[test]
    fn an_oversized_paragraph_is_cut_at_words() {
        let para = (0..400)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let chunks = chunk_with(&para, 50, 10);
        assert!(chunks.len() > 3);
        for c in &chunks {
            assert!(c.tokens <= 60, "{}", c.tokens);
        }
        assert!(chunks
            .iter()
            .any(|c| c.text.split_whitespace().any(|w| w == "w399")));
        assert!(chunks[0].text.starts_with("w0 "));
    }

    #[test]
    fn indexed_text_carries_the_heading() {
        let c = &chunk("# A\n## B\ntext")[0];
        assert_eq!(c.indexed_text(), "A > B\ntext");
    }
}

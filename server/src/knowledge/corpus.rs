//! The synthetic memory the knowledge cache is measured and tested on: 30 named topics
//! (tests/knowledge.rs, the threshold sweep) and made-up topic words for any number of files
//! (`bench --scenario knowledge`), each file about ~250 tokens of one topic with a code word only
//! it holds. Shared so the tests, the sweep and the bench measure the same text.

/// Distinct topics: each file's words are its own.
pub const TOPICS: [&str; 30] = [
    "volcano",
    "saxophone",
    "glacier",
    "orchid",
    "submarine",
    "telescope",
    "cathedral",
    "falcon",
    "espresso",
    "tornado",
    "violin",
    "pyramid",
    "jellyfish",
    "lighthouse",
    "cactus",
    "meteor",
    "origami",
    "penguin",
    "quartz",
    "rainforest",
    "samurai",
    "tundra",
    "umbrella",
    "waffle",
    "xylophone",
    "yak",
    "zeppelin",
    "bamboo",
    "chess",
    "dolphin",
];

/// A made-up topic word per file index (`zo` + three letters), distinct for 0..17,576.
pub fn made_up_topic(i: usize) -> String {
    let l = |n: usize| (b'a' + (n % 26) as u8) as char;
    format!("zo{}{}{}", l(i / 676), l(i / 26), l(i))
}

/// A memory file about `topic` of about 250 tokens; its vault code is `<topic>-<code>`.
pub fn topic_file(topic: &str, code: usize) -> String {
    let mut s = format!("# {topic} notes\n\n");
    for i in 0..6 {
        s.push_str(&format!(
            "The {topic} team keeps its {topic} records in the {topic} archive, shelf {i}. \
             Every {topic} review checks the {topic} inventory before the {topic} season.\n\n"
        ));
    }
    s.push_str(&format!(
        "## {topic} access\n\nThe secret code of the {topic} vault is {topic}-{code}.\n"
    ));
    s
}

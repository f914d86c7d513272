//! The simulator's fault model: settings (global and per model), per-request directives, the
//! seeded dice, and [`decide`] — the pure function turning them into a [`Plan`] for one call.
//!
//! Precedence: a request directive (`X-Sim-Fault` header, else `[sim:...]` in the last user
//! message) beats the per-model settings, which beat the global ones.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Runtime fault settings (`GET/PUT /sim/faults`, top level or one model's effective values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultSettings {
    pub latency_ms: u64,
    pub latency_jitter_ms: u64,
    pub stream_chunk_delay_ms: u64,
    pub error_rate: f64,
    pub rate_limit_rate: f64,
    pub retry_after_secs: u64,
    pub hang_rate: f64,
}

/// The same fields, each optional: a per-model override, or one part of a PUT.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_jitter_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_chunk_delay_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hang_rate: Option<f64>,
}

impl FaultOverrides {
    fn apply_to(&self, s: &mut FaultSettings) {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { s.$f = v; } )* };
        }
        set!(
            latency_ms,
            latency_jitter_ms,
            stream_chunk_delay_ms,
            error_rate,
            rate_limit_rate,
            retry_after_secs,
            hang_rate
        );
    }

    fn validate(&self, at: &str) -> Result<(), String> {
        for (name, v) in [
            ("error_rate", self.error_rate),
            ("rate_limit_rate", self.rate_limit_rate),
            ("hang_rate", self.hang_rate),
        ] {
            if let Some(v) = v {
                if !(0.0..=1.0).contains(&v) {
                    return Err(format!("{at}{name}: {v} is not a fraction between 0 and 1"));
                }
            }
        }
        Ok(())
    }
}

/// All runtime fault state: the global settings and the per-model overrides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    #[serde(flatten)]
    pub global: FaultSettings,
    #[serde(default)]
    pub models: BTreeMap<String, FaultOverrides>,
}

impl Faults {
    pub fn new(global: FaultSettings) -> Self {
        Faults {
            global,
            models: BTreeMap::new(),
        }
    }

    /// What applies to a call for `model`.
    pub fn effective(&self, model: &str) -> FaultSettings {
        let mut s = self.global.clone();
        if let Some(o) = self.models.get(model) {
            o.apply_to(&mut s);
        }
        s
    }

    /// Apply a `PUT /sim/faults` body: the top-level fields given replace the global ones; a
    /// `models` object, when given, replaces every per-model override (`{}` clears them).
    /// Unknown fields and rates outside `[0, 1]` are rejected and change nothing.
    pub fn apply_patch(&mut self, body: &Value) -> Result<(), String> {
        let Value::Object(obj) = body else {
            return Err("body must be a JSON object".into());
        };
        let mut top = obj.clone();
        let models = top.remove("models");
        let global: FaultOverrides =
            serde_json::from_value(Value::Object(top)).map_err(|e| e.to_string())?;
        global.validate("")?;
        let models: Option<BTreeMap<String, FaultOverrides>> = match models {
            None => None,
            Some(m) => Some(serde_json::from_value(m).map_err(|e| format!("models: {e}"))?),
        };
        for (name, o) in models.iter().flatten() {
            o.validate(&format!("models.{name}."))?;
        }
        global.apply_to(&mut self.global);
        if let Some(models) = models {
            self.models = models;
        }
        Ok(())
    }
}

/// A per-request fault directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directive {
    Error500,
    RateLimit,
    Hang,
    /// Extra latency in milliseconds, answer normally.
    Slow(u64),
}

/// `500`, `429`, `hang` or `slow:<ms>` (the `X-Sim-Fault` header value).
pub fn parse_directive(s: &str) -> Option<Directive> {
    match s.trim() {
        "500" => Some(Directive::Error500),
        "429" => Some(Directive::RateLimit),
        "hang" => Some(Directive::Hang),
        other => other
            .strip_prefix("slow:")
            .and_then(|ms| ms.trim().parse().ok())
            .map(Directive::Slow),
    }
}

/// The first `[sim:<directive>]` in a message text.
pub fn directive_in_text(text: &str) -> Option<Directive> {
    let mut rest = text;
    while let Some(i) = rest.find("[sim:") {
        let after = &rest[i + "[sim:".len()..];
        if let Some(end) = after.find(']') {
            if let Some(d) = parse_directive(&after[..end]) {
                return Some(d);
            }
        }
        rest = after;
    }
    None
}

/// What happens to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Answer,
    Error500,
    RateLimited {
        retry_after_secs: u64,
    },
    /// Never answer (until the client gives up or the simulator stops).
    Hang,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub outcome: Outcome,
    /// Waited before answering (or before failing).
    pub delay: Duration,
    /// Waited before each streamed chunk.
    pub chunk_delay: Duration,
}

/// One throw of the dice: `fault` uniform in `[0, 1)`, `jitter` a uniform raw value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Roll {
    pub fault: f64,
    pub jitter: u64,
}

/// The fault dice: seeded, so a run with the same seed and the same call order sees the same
/// faults. Every call throws once, whatever the settings, to keep the sequence aligned.
#[derive(Debug, Clone)]
pub struct Dice(StdRng);

impl Dice {
    pub fn new(seed: u64) -> Self {
        Dice(StdRng::seed_from_u64(seed))
    }

    pub fn roll(&mut self) -> Roll {
        Roll {
            fault: self.0.random::<f64>(),
            jitter: self.0.random::<u64>(),
        }
    }
}

/// Decide one call from its effective settings, its directive and its roll.
pub fn decide(s: &FaultSettings, directive: Option<Directive>, roll: Roll) -> Plan {
    let jitter = match s.latency_jitter_ms {
        0 => 0,
        j => roll.jitter % (j + 1),
    };
    let mut delay_ms = s.latency_ms.saturating_add(jitter);
    let rate_limited = Outcome::RateLimited {
        retry_after_secs: s.retry_after_secs,
    };
    let outcome = match directive {
        Some(Directive::Error500) => Outcome::Error500,
        Some(Directive::RateLimit) => rate_limited,
        Some(Directive::Hang) => Outcome::Hang,
        Some(Directive::Slow(ms)) => {
            delay_ms = delay_ms.saturating_add(ms);
            Outcome::Answer
        }
        None => {
            let r = roll.fault;
            if r < s.error_rate {
                Outcome::Error500
            } else if r < s.error_rate + s.rate_limit_rate {
                rate_limited
            } else if r < s.error_rate + s.rate_limit_rate + s.hang_rate {
                Outcome::Hang
            } else {
                Outcome::Answer
            }
        }
    };
    Plan {
        outcome,
        delay: Duration::from_millis(delay_ms),
        chunk_delay: Duration::from_millis(s.stream_chunk_delay_ms),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn quiet() -> FaultSettings {
        FaultSettings {
            latency_ms: 0,
            latency_jitter_ms: 0,
            stream_chunk_delay_ms: 0,
            error_rate: 0.0,
            rate_limit_rate: 0.0,
            retry_after_secs: 1,
            hang_rate: 0.0,
        }
    }

    #[test]
    fn directives_parse_from_header_values_and_text() {
        let cases: &[(&str, Option<Directive>)] = &[
            ("500", Some(Directive::Error500)),
            (" 429 ", Some(Directive::RateLimit)),
            ("hang", Some(Directive::Hang)),
            ("slow:250", Some(Directive::Slow(250))),
            ("slow:x", None),
            ("503", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_directive(s), *want, "{s:?}");
        }
        assert_eq!(
            directive_in_text("please [sim:429] now"),
            Some(Directive::RateLimit)
        );
        assert_eq!(
            directive_in_text("[sim:bogus] then [sim:hang]"),
            Some(Directive::Hang)
        );
        assert_eq!(
            directive_in_text("[sim:slow:10]"),
            Some(Directive::Slow(10))
        );
        assert_eq!(directive_in_text("no directive [sim:"), None);
    }

    #[test]
    fn decide_follows_rates_then_directives() {
        let mut s = quiet();
        s.error_rate = 0.1;
        s.rate_limit_rate = 0.2;
        s.hang_rate = 0.3;
        s.latency_ms = 5;
        s.latency_jitter_ms = 10;
        let roll = |fault, jitter| Roll { fault, jitter };
        let cases: &[(f64, Option<Directive>, Outcome)] = &[
            (0.05, None, Outcome::Error500),
            (
                0.15,
                None,
                Outcome::RateLimited {
                    retry_after_secs: 1,
                },
            ),
            (0.45, None, Outcome::Hang),
            (0.65, None, Outcome::Answer),
            (0.05, Some(Directive::Slow(1)), Outcome::Answer),
            (0.99, Some(Directive::Error500), Outcome::Error500),
            (0.99, Some(Directive::Hang), Outcome::Hang),
        ];
        for (r, d, want) in cases {
            assert_eq!(decide(&s, *d, roll(*r, 0)).outcome, *want, "{r} {d:?}");
        }
        assert_eq!(
            decide(&s, None, roll(0.9, 23)).delay,
            Duration::from_millis(5 + 1)
        );
        assert_eq!(
            decide(&s, Some(Directive::Slow(100)), roll(0.9, 0)).delay,
            Duration::from_millis(105)
        );
    }

    #[test]
    fn seeded_dice_repeat_and_follow_the_rate() {
        let mut s = quiet();
        s.error_rate = 0.3;
        let run = |seed| {
            let mut d = Dice::new(seed);
            (0..1000)
                .map(|_| decide(&s, None, d.roll()).outcome)
                .collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7));
        assert_ne!(a, run(8));
        let errors = a.iter().filter(|o| **o == Outcome::Error500).count();
        assert!(
            (230..=370).contains(&errors),
            "{errors} errors in 1000 at rate 0.3"
        );
    }

    #[test]
    fn per_model_overrides_and_patches() {
        let mut f = Faults::new(quiet());
        f.apply_patch(&json!({"latency_ms": 7, "models": {"bad": {"error_rate": 1.0}}}))
            .unwrap();
        assert_eq!(f.effective("bad").error_rate, 1.0);
        assert_eq!(f.effective("bad").latency_ms, 7);
        assert_eq!(f.effective("good").error_rate, 0.0);
        // A patch without `models` keeps them; with `models: {}` clears them.
        f.apply_patch(&json!({"retry_after_secs": 3})).unwrap();
        assert_eq!(f.effective("bad").error_rate, 1.0);
        assert_eq!(f.effective("bad").retry_after_secs, 3);
        f.apply_patch(&json!({"models": {}})).unwrap();
        assert_eq!(f.effective("bad").error_rate, 0.0);
        // Rejected patches change nothing.
        let before = f.clone();
        assert!(f.apply_patch(&json!({"eror_rate": 1.0})).is_err());
        assert!(f.apply_patch(&json!({"error_rate": 1.5})).is_err());
        assert!(f
            .apply_patch(&json!({"latency_ms": 1, "models": {"m": {"hang_rate": -1.0}}}))
            .is_err());
        assert!(f.apply_patch(&json!([1])).is_err());
        assert_eq!(f, before);
        // GET shape: flat global fields plus `models`.
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v["latency_ms"], json!(7));
        assert_eq!(v["models"], json!({}));
    }
}

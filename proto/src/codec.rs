//! The codec for every stored or sent envelope: one version byte, then postcard.
//!
//! Kept in one module so the format can be swapped (SPEC §5). postcard is not self-describing,
//! so types encoded here must not use `skip_serializing_if`, `flatten` or untagged enums.

use serde::{de::DeserializeOwned, Serialize};

/// The version byte written in front of every envelope. Bump it when a stored type changes shape.
/// 2: `TaskRecord` gained `template_id` and `template_params` (request cache).
/// 3: `TaskRecord` gained `holds` (budget holds, no longer counted as attempts).
/// 4: `PromptBreakdown` gained `summary`, `TaskRecord` and the cluster's `Outcome` `context`
///    (context management).
/// 5: `TaskRecord` gained `cron` (the cron firing that created it); the cluster state gained the
/// cron marks.
/// 6: `TaskRecord` and the cluster's `Outcome` gained `memory_chunks` (knowledge cache) and
///    `cache_score` (semantic request cache); the request cache's entries gained `semantic`
///    (partition and query vector).
/// 7: the cluster's `Command` gained `ReturnRate` (unspent rate slices given back).
pub const ENVELOPE_VERSION: u8 = 7;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty envelope")]
    Empty,
    #[error("envelope version {found} is not supported (expected {expected})")]
    Version { found: u8, expected: u8 },
    #[error("envelope body: {0}")]
    Body(#[from] postcard::Error),
}

/// Encode `value` as `[ENVELOPE_VERSION, postcard bytes...]`.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![ENVELOPE_VERSION];
    let body = postcard::to_stdvec(value)?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decode an envelope written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != ENVELOPE_VERSION {
        return Err(CodecError::Version {
            found: version,
            expected: ENVELOPE_VERSION,
        });
    }
    Ok(postcard::from_bytes(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Sample {
        a: u64,
        b: String,
        c: Option<u32>,
    }

    #[test]
    fn round_trip_and_version_check() {
        let s = Sample {
            a: 7,
            b: "x".into(),
            c: None,
        };
        let bytes = encode(&s).unwrap();
        assert_eq!(bytes[0], ENVELOPE_VERSION);
        assert_eq!(decode::<Sample>(&bytes).unwrap(), s);

        let mut wrong = bytes.clone();
        wrong[0] = 99;
        assert!(matches!(
            decode::<Sample>(&wrong),
            Err(CodecError::Version { found: 99, .. })
        ));
        assert!(matches!(decode::<Sample>(&[]), Err(CodecError::Empty)));
        assert!(matches!(
            decode::<Sample>(&[ENVELOPE_VERSION]),
            Err(CodecError::Body(_))
        ));
    }
}

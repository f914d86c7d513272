//! The wire forms of a vector in the OpenAI embeddings API: a JSON array of floats, or — what
//! the official Python SDK asks for by default (`encoding_format: "base64"`) — base64 of the
//! vector's little-endian f32 bytes. Pure functions.

use base64::Engine as _;

/// The `encoding_format`s the gateway serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Float,
    Base64,
}

impl Encoding {
    /// `None` (absent) is `float`, as in OpenAI's API.
    pub fn parse(s: Option<&str>) -> Result<Encoding, String> {
        match s {
            None | Some("float") => Ok(Encoding::Float),
            Some("base64") => Ok(Encoding::Base64),
            Some(other) => Err(format!(
                "`encoding_format` `{other}` is not supported; use `float` or `base64`"
            )),
        }
    }
}

/// Base64 of the little-endian f32 bytes of `v`.
pub fn to_base64(v: &[f32]) -> String {
    let mut bytes = Vec::with_capacity(v.len() * 4);
    for x in v {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The floats of a base64 vector (little-endian f32s).
pub fn from_base64(s: &str) -> Result<Vec<f32>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| format!("base64 vector: {e}"))?;
    if bytes.len() % 4 != 0 {
        return Err(format!(
            "base64 vector: {} bytes is not a whole number of f32s",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn base64_round_trips_and_matches_numpy_frombuffer() {
        // numpy: base64.b64encode(np.array([1.0, -0.5], dtype="<f4").tobytes()) == b"AACAPwAAAL8="
        assert_eq!(to_base64(&[1.0, -0.5]), "AACAPwAAAL8=");
        assert_eq!(from_base64("AACAPwAAAL8=").unwrap(), vec![1.0, -0.5]);
        let v = vec![0.123_f32, -7.5e-3, 0.0, 1e-20];
        assert_eq!(from_base64(&to_base64(&v)).unwrap(), v);
        assert!(from_base64("AAA=").is_err(), "2 bytes");
        assert!(from_base64("not base64!").is_err());
    }

    #[test]
    fn encodings() {
        assert_eq!(Encoding::parse(None), Ok(Encoding::Float));
        assert_eq!(Encoding::parse(Some("float")), Ok(Encoding::Float));
        assert_eq!(Encoding::parse(Some("base64")), Ok(Encoding::Base64));
        assert!(Encoding::parse(Some("int8")).unwrap_err().contains("int8"));
    }
}

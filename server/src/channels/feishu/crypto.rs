//! Feishu's event security (pure): the request signature and the body encryption.
//!
//! - Signature: `X-Lark-Signature` = hex(SHA-256(timestamp + nonce + encrypt_key + body)), with
//!   `X-Lark-Request-Timestamp` and `X-Lark-Request-Nonce`; sent when the app has an encrypt key.
//! - Encryption: `{"encrypt": base64(iv ‖ AES-256-CBC(PKCS#7(plaintext)))}` with the key
//!   SHA-256(encrypt_key) and a random 16-byte IV in front.
//!
//! [`encrypt`] and [`sign`] do what Feishu does, so the simulator's tests can send events exactly
//! as Feishu would.

use aes::cipher::{block_padding::Pkcs7, BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use base64::Engine as _;
use sha2::{Digest, Sha256};

type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;
type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;

/// Largest `encrypt` field accepted, in base64 characters (the body limit bounds it too).
pub const ENCRYPTED_MAX_CHARS: usize = 4 * 1024 * 1024;

/// Why an encrypted body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("`encrypt` is not base64")]
    Base64,
    #[error("`encrypt` is too short to hold an IV and a block")]
    TooShort,
    #[error("`encrypt` is too long")]
    TooLong,
    #[error("`encrypt` does not decrypt with the configured encrypt key")]
    Decrypt,
    #[error("the decrypted body is not UTF-8")]
    Utf8,
}

/// The AES-256 key: SHA-256 of the encrypt key.
pub fn aes_key(encrypt_key: &str) -> [u8; 32] {
    Sha256::digest(encrypt_key.as_bytes()).into()
}

/// Decrypt an `encrypt` field.
pub fn decrypt(encrypt_key: &str, encrypted: &str) -> Result<String, CryptoError> {
    if encrypted.len() > ENCRYPTED_MAX_CHARS {
        return Err(CryptoError::TooLong);
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encrypted.trim())
        .map_err(|_| CryptoError::Base64)?;
    if raw.len() < 32 || raw.len() % 16 != 0 {
        return Err(CryptoError::TooShort);
    }
    let (iv, body) = raw.split_at(16);
    let key = aes_key(encrypt_key);
    let dec = Aes256CbcDec::new_from_slices(&key, iv).map_err(|_| CryptoError::Decrypt)?;
    let plain = dec
        .decrypt_padded_vec::<Pkcs7>(body)
        .map_err(|_| CryptoError::Decrypt)?;
    String::from_utf8(plain).map_err(|_| CryptoError::Utf8)
}

/// Encrypt like Feishu: base64(iv ‖ AES-256-CBC(PKCS#7(plaintext))).
pub fn encrypt(encrypt_key: &str, iv: [u8; 16], plaintext: &str) -> String {
    let key = aes_key(encrypt_key);
    let enc = Aes256CbcEnc::new(&key.into(), &iv.into());
    let mut out = iv.to_vec();
    out.extend(enc.encrypt_padded_vec::<Pkcs7>(plaintext.as_bytes()));
    base64::engine::general_purpose::STANDARD.encode(out)
}

/// The signature Feishu sends: hex(SHA-256(timestamp + nonce + encrypt_key + body)).
pub fn sign(timestamp: &str, nonce: &str, encrypt_key: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(timestamp.as_bytes());
    h.update(nonce.as_bytes());
    h.update(encrypt_key.as_bytes());
    h.update(body);
    h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
}

/// Whether `signature` is the one for this request (constant time; hex case ignored).
pub fn signature_ok(
    timestamp: &str,
    nonce: &str,
    encrypt_key: &str,
    body: &[u8],
    signature: &str,
) -> bool {
    let want = sign(timestamp, nonce, encrypt_key, body);
    crate::util::same_secret(
        signature.trim().to_ascii_lowercase().as_bytes(),
        want.as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decrypts_feishu_documented_vector() {
        // The example of Feishu's "encrypt key" documentation (also checked with
        // `openssl enc -d -aes-256-cbc -K $(printf 'test key' | sha256sum) -iv <first 16 bytes>`).
        assert_eq!(
            decrypt("test key", "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk="),
            Ok("hello world".to_string())
        );
    }

    #[test]
    fn decrypt_table() {
        let good = encrypt("k1", [7; 16], r#"{"challenge":"c"}"#);
        let cases: Vec<(&str, &str, Result<String, CryptoError>)> = vec![
            ("k1", &good, Ok(r#"{"challenge":"c"}"#.to_string())),
            ("k2", &good, Err(CryptoError::Decrypt)),
            ("k1", "not base64!!", Err(CryptoError::Base64)),
            ("k1", "AAAA", Err(CryptoError::TooShort)),
            // 16 bytes of IV only: no block.
            ("k1", "AAAAAAAAAAAAAAAAAAAAAA==", Err(CryptoError::TooShort)),
        ];
        for (key, enc, want) in cases {
            let got = decrypt(key, enc);
            // A wrong key fails the padding check almost always; if it happens to unpad, the
            // bytes are garbage and not the plaintext.
            if want == Err(CryptoError::Decrypt) {
                assert_ne!(got, Ok(r#"{"challenge":"c"}"#.to_string()), "{key}");
            } else {
                assert_eq!(got, want, "{key} {enc}");
            }
        }
    }

    #[test]
    fn encrypt_round_trips_any_length() {
        for n in [0usize, 1, 15, 16, 17, 100] {
            let text: String = "数".repeat(n);
            let enc = encrypt("key", [n as u8; 16], &text);
            assert_eq!(decrypt("key", &enc).as_deref(), Ok(text.as_str()), "{n}");
        }
    }

    #[test]
    fn signature_table() {
        // Known vector: printf '%s' '1699999999nonce123test key{"a":1}' | sha256sum
        let want = "685ad572be8fcf2a85b73aea20f0c10f608ffaf2bec60d4d99166d79418694ed";
        assert_eq!(
            sign("1699999999", "nonce123", "test key", br#"{"a":1}"#),
            want
        );
        let cases = [
            (
                "1699999999",
                "nonce123",
                "test key",
                &br#"{"a":1}"#[..],
                want,
                true,
            ),
            (
                "1699999999",
                "nonce123",
                "test key",
                &br#"{"a":1}"#[..],
                &want.to_uppercase(),
                true,
            ),
            (
                "1699999998",
                "nonce123",
                "test key",
                &br#"{"a":1}"#[..],
                want,
                false,
            ),
            (
                "1699999999",
                "nonce124",
                "test key",
                &br#"{"a":1}"#[..],
                want,
                false,
            ),
            (
                "1699999999",
                "nonce123",
                "other key",
                &br#"{"a":1}"#[..],
                want,
                false,
            ),
            (
                "1699999999",
                "nonce123",
                "test key",
                &br#"{"a":2}"#[..],
                want,
                false,
            ),
            (
                "1699999999",
                "nonce123",
                "test key",
                &br#"{"a":1}"#[..],
                "",
                false,
            ),
        ];
        for (ts, nonce, key, body, sig, ok) in cases {
            assert_eq!(
                signature_ok(ts, nonce, key, body, sig),
                ok,
                "{ts} {nonce} {key} {sig}"
            );
        }
    }
}

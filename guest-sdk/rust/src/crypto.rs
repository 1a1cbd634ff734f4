//! Hashing, password hashing, constant-time comparison, secure random bytes and the
//! encodings that go with them: what an object needs to store credentials safely.
//!
//! The algorithms come from well-kept RustCrypto crates (`sha2`, `hmac`, `pbkdf2`,
//! `subtle`); randomness comes from `getrandom`, which inside a component reads the
//! host's `wasi:random` (a CSPRNG) and natively the operating system's.
//!
//! ```
//! use object_primitive::crypto;
//!
//! // A password record: a random salt per user and a slow hash.
//! let salt = crypto::random_bytes(16);
//! let hash = crypto::pbkdf2_sha256(b"correct horse", &salt, 1_000);
//! assert!(crypto::constant_time_eq(&hash, &crypto::pbkdf2_sha256(b"correct horse", &salt, 1_000)));
//! assert!(!crypto::constant_time_eq(&hash, &crypto::pbkdf2_sha256(b"wrong", &salt, 1_000)));
//!
//! // A bearer token (256 bits, 43 characters) and what to store in its place.
//! let token = crypto::base64url_encode(&crypto::random_bytes(32));
//! assert_eq!(token.len(), 43);
//! let stored = crypto::sha256_hex(token.as_bytes());
//! assert_eq!(stored.len(), 64);
//! ```

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The SHA-256 digest of `data`.
///
/// ```
/// let d = object_primitive::crypto::sha256(b"abc");
/// assert_eq!(d[0], 0xba);
/// ```
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The SHA-256 digest of `data` as 64 lower-case hex digits.
///
/// ```
/// assert_eq!(
///     object_primitive::crypto::sha256_hex(b""),
///     "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
/// );
/// ```
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&sha256(data))
}

/// HMAC-SHA256 of `data` under `key` (RFC 2104).
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA256 (RFC 8018) of `password` with `salt` and `iterations` rounds: a
/// 32-byte key, the same as Python's `hashlib.pbkdf2_hmac("sha256", password, salt,
/// iterations)`.
///
/// For passwords, use a random salt of at least 16 bytes per user
/// ([`random_bytes`]) and at least 100,000 iterations, store the salt, the iteration
/// count and the result, and compare with [`constant_time_eq`]. The cost is linear in
/// `iterations` and is meant to be slow.
///
/// # Panics
/// If `iterations` is 0.
pub fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    assert!(iterations > 0, "PBKDF2 needs at least one iteration");
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
    out
}

/// Whether `a` and `b` are equal, in time that depends only on their lengths, not on
/// where they differ. Use it to compare secrets (hashes, tokens, MACs).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// `n` bytes from a cryptographically secure random generator: the host's
/// `wasi:random` inside a component, the operating system's natively.
///
/// # Panics
/// If no secure source is available (the call traps rather than continue with weak
/// randomness).
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    getrandom::fill(&mut out).expect("a secure random source (wasi:random) is available");
    out
}

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn encode(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        let symbols = chunk.len() + 1;
        for i in 0..4 {
            if i < symbols {
                out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// `bytes` in standard base64 with `=` padding (RFC 4648 §4), as Python's
/// `base64.b64encode` writes it.
///
/// ```
/// assert_eq!(object_primitive::crypto::base64_encode(b"hi?"), "aGk/");
/// assert_eq!(object_primitive::crypto::base64_encode(b"h"), "aA==");
/// ```
pub fn base64_encode(bytes: &[u8]) -> String {
    encode(bytes, STANDARD, true)
}

/// `bytes` in URL-safe base64 without padding (RFC 4648 §5): only `A-Z a-z 0-9 - _`, so
/// the result can travel in a header, a query or a JSON string unescaped.
///
/// ```
/// assert_eq!(object_primitive::crypto::base64url_encode(b"hi?"), "aGk_");
/// assert_eq!(object_primitive::crypto::base64url_encode(b"h"), "aA");
/// ```
pub fn base64url_encode(bytes: &[u8]) -> String {
    encode(bytes, URL_SAFE, false)
}

/// Decodes standard base64 with padding, as [`base64_encode`] writes it; `None` for
/// anything else (wrong length, other characters, bits left over).
///
/// ```
/// use object_primitive::crypto::base64_decode;
/// assert_eq!(base64_decode("aGk/").as_deref(), Some(&b"hi?"[..]));
/// assert_eq!(base64_decode("aA=="), Some(b"h".to_vec()));
/// assert_eq!(base64_decode("aA="), None);
/// ```
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let value = |c: u8| STANDARD.iter().position(|&s| s == c).map(|v| v as u32);
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let chunks = bytes.len() / 4;
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let pads = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pads > 2 || (pads > 0 && i + 1 != chunks) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pads] {
            n = n << 6 | value(c)?;
        }
        n <<= 6 * pads as u32;
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let keep = 3 - pads;
        // Bits that a canonical encoder leaves zero must be zero.
        if decoded[keep..].iter().any(|&b| b != 0) {
            return None;
        }
        out.extend_from_slice(&decoded[..keep]);
    }
    Some(out)
}

/// `bytes` as lower-case hex digits.
///
/// ```
/// assert_eq!(object_primitive::crypto::hex(&[0, 0xab, 0x10]), "00ab10");
/// ```
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_and_hmac_vectors() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // RFC 4231, test case 2.
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn pbkdf2_vectors() {
        // RFC 7914 §11 (PBKDF2-HMAC-SHA256 test vectors), first 32 bytes.
        assert_eq!(
            hex(&pbkdf2_sha256(b"passwd", b"salt", 1)),
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        );
        assert_eq!(
            hex(&pbkdf2_sha256(b"password", b"salt", 4096)),
            "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a"
        );
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn random_bytes_differ() {
        let a = random_bytes(32);
        let b = random_bytes(32);
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(random_bytes(0).is_empty());
    }

    #[test]
    fn base64_round_trips() {
        for n in 0..40usize {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            let text = base64_encode(&bytes);
            assert_eq!(text.len(), n.div_ceil(3) * 4);
            assert_eq!(base64_decode(&text), Some(bytes.clone()), "{text}");
            let url = base64url_encode(&bytes);
            assert!(!url.contains(['+', '/', '=']), "{url}");
            assert_eq!(
                url,
                text.trim_end_matches('=')
                    .replace('+', "-")
                    .replace('/', "_")
            );
        }
        assert_eq!(base64_encode(&[0xfb, 0xff]), "+/8=");
        for bad in ["a", "ab=c", "a===", "aB==", "aA==aA==", "*AAA"] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
        assert_eq!(base64url_encode(&[0u8; 32]).len(), 43);
    }
}

//! `did:key` identifiers for Ed25519 public keys.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;

use ed25519_dalek::{Signature, VerifyingKey};

use crate::error::{DidErrorKind, Error};

/// Multicodec code of an Ed25519 public key.
const ED25519_PUB: u64 = 0xed;
/// `did:key:` prefix.
const PREFIX: &str = "did:key:";

/// An Ed25519 `did:key` (`did:key:z6Mk…`): multicodec `0xed` (varint `0xed 0x01`) followed by
/// the 32-byte public key, in multibase base58btc (`z` prefix).
///
/// Parsing is strict: only bare `did:key` DIDs of valid Ed25519 keys are accepted (no other
/// method, multibase, multicodec, no path, query or fragment). Two `Did`s are equal when their
/// text is equal, which for this strict form means the keys are equal.
#[derive(Clone)]
pub struct Did(Arc<Inner>);

struct Inner {
    text: String,
    key: VerifyingKey,
}

impl Did {
    /// Parses an Ed25519 `did:key`.
    ///
    /// ```
    /// let did = zero_auth::Did::parse("did:key:z6MkmT9j6fVZqzXV8u2wVVSu49gYSRYGSQnduWXF6foAJrqz")?;
    /// assert_eq!(did.public_key().as_bytes().len(), 32);
    /// assert!(zero_auth::Did::parse("did:web:example.com").is_err());
    /// # Ok::<(), zero_auth::Error>(())
    /// ```
    pub fn parse(input: &str) -> Result<Self, Error> {
        let fail = |kind| Error::InvalidDid {
            input: truncate(input, 100),
            kind,
        };
        let Some(rest) = input.strip_prefix("did:") else {
            return Err(fail(DidErrorKind::NotADid));
        };
        let (method, ident) = rest.split_once(':').unwrap_or((rest, ""));
        if method != "key" {
            return Err(fail(DidErrorKind::WrongMethod(truncate(method, 40))));
        }
        if ident.contains(['/', '?', '#']) {
            return Err(fail(DidErrorKind::UrlPart));
        }
        let mut chars = ident.chars();
        match chars.next() {
            Some('z') => {}
            other => return Err(fail(DidErrorKind::WrongMultibase(other))),
        }
        let bytes = bs58::decode(chars.as_str())
            .into_vec()
            .map_err(|e| fail(DidErrorKind::BadBase58(e.to_string())))?;
        let (code, used) = read_uvarint(&bytes).ok_or_else(|| {
            fail(DidErrorKind::WrongMulticodec(
                bytes.first().copied().map(u64::from).unwrap_or(0),
            ))
        })?;
        if code != ED25519_PUB {
            return Err(fail(DidErrorKind::WrongMulticodec(code)));
        }
        let raw = bytes.get(used..).unwrap_or_default();
        let raw: [u8; 32] = raw
            .try_into()
            .map_err(|_| fail(DidErrorKind::WrongLength(raw.len())))?;
        let key = VerifyingKey::from_bytes(&raw).map_err(|_| fail(DidErrorKind::InvalidKey))?;
        let did = Did::from_public_key(&key);
        // The encoding is canonical by construction (the first byte is 0xed, so there are no
        // leading zero bytes for base58 to represent differently), but check anyway.
        if did.0.text != input {
            return Err(fail(DidErrorKind::BadBase58(
                "not the canonical base58btc encoding of the key".into(),
            )));
        }
        Ok(did)
    }

    /// The DID of an Ed25519 public key.
    pub fn from_public_key(key: &VerifyingKey) -> Self {
        let mut bytes = Vec::with_capacity(34);
        bytes.extend_from_slice(&[0xed, 0x01]);
        bytes.extend_from_slice(key.as_bytes());
        let text = format!("{PREFIX}z{}", bs58::encode(bytes).into_string());
        Did(Arc::new(Inner { text, key: *key }))
    }

    /// The DID as text (`did:key:z6Mk…`).
    pub fn as_str(&self) -> &str {
        &self.0.text
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> &VerifyingKey {
        &self.0.key
    }

    /// Verifies an Ed25519 signature by this DID's key (strict verification: weak keys and
    /// non-canonical signatures are refused).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let signature = Signature::from_bytes(signature);
        self.0.key.verify_strict(message, &signature).is_ok()
    }
}

impl fmt::Display for Did {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.text)
    }
}

impl fmt::Debug for Did {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Did({})", self.0.text)
    }
}

impl PartialEq for Did {
    fn eq(&self, other: &Self) -> bool {
        self.0.text == other.0.text
    }
}

impl Eq for Did {}

impl Hash for Did {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.text.hash(state);
    }
}

impl PartialOrd for Did {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Did {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.text.cmp(&other.0.text)
    }
}

impl FromStr for Did {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Did::parse(s)
    }
}

impl AsRef<str> for Did {
    fn as_ref(&self) -> &str {
        &self.0.text
    }
}

/// Reads an unsigned LEB128 varint (multiformats style, at most 9 bytes, minimal encoding).
/// Returns the value and the number of bytes read.
pub(crate) fn read_uvarint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, &byte) in bytes.iter().enumerate().take(9) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            // Minimal encoding: no trailing zero group (except the single byte 0).
            if byte == 0 && i > 0 {
                return None;
            }
            return Some((value, i + 1));
        }
    }
    None
}

/// Truncates a string for inclusion in an error message.
pub(crate) fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max_chars).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "did:key:z6MkmT9j6fVZqzXV8u2wVVSu49gYSRYGSQnduWXF6foAJrqz";

    fn kind(input: &str) -> DidErrorKind {
        match Did::parse(input) {
            Err(Error::InvalidDid { kind, .. }) => kind,
            other => panic!("expected InvalidDid for {input}, got {other:?}"),
        }
    }

    #[test]
    fn round_trips() {
        let did = Did::parse(ALICE).unwrap();
        assert_eq!(did.to_string(), ALICE);
        assert_eq!(Did::from_public_key(did.public_key()), did);
    }

    #[test]
    fn strict_errors() {
        assert_eq!(kind("key:z6Mk"), DidErrorKind::NotADid);
        assert_eq!(
            kind("did:web:example.com"),
            DidErrorKind::WrongMethod("web".into())
        );
        assert_eq!(kind(&format!("{ALICE}#frag")), DidErrorKind::UrlPart);
        assert_eq!(
            kind("did:key:f6MkmT9j6fVZqzXV8u2wVVSu49gYSRYGSQnduWXF6foAJrqz"),
            DidErrorKind::WrongMultibase(Some('f'))
        );
        assert_eq!(kind("did:key:"), DidErrorKind::WrongMultibase(None));
        assert!(matches!(
            kind("did:key:z6MkmT9j6fVZqzXV8u2wVVSu49gYSRYGSQnduWXF6foAJrq0"),
            DidErrorKind::BadBase58(_)
        ));
        // secp256k1 (0xe7) key.
        let mut k1 = vec![0xe7, 0x01, 0x02];
        k1.extend_from_slice(&[7u8; 32]);
        let k1 = format!("did:key:z{}", bs58::encode(k1).into_string());
        assert_eq!(kind(&k1), DidErrorKind::WrongMulticodec(0xe7));
        let mut short = vec![0xed, 0x01];
        short.extend_from_slice(&[7u8; 31]);
        let short = format!("did:key:z{}", bs58::encode(short).into_string());
        assert_eq!(kind(&short), DidErrorKind::WrongLength(31));
    }

    #[test]
    fn varint() {
        assert_eq!(read_uvarint(&[0xed, 0x01]), Some((0xed, 2)));
        assert_eq!(read_uvarint(&[0x80, 0x26]), Some((0x1300, 2)));
        assert_eq!(read_uvarint(&[0x80]), None);
        assert_eq!(read_uvarint(&[0x80, 0x00]), None);
        assert_eq!(read_uvarint(&[]), None);
    }
}

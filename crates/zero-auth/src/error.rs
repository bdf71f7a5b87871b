//! The single error type of the crate.

use std::fmt;
use std::path::PathBuf;

use ipld_core::cid::Cid;

use crate::did::Did;

/// Why a string was refused as an Ed25519 `did:key`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DidErrorKind {
    /// The string does not start with `did:`.
    NotADid,
    /// The DID method is not `key` (the method found is given).
    WrongMethod(String),
    /// The DID carries a path, query or fragment (`/`, `?`, `#`); only bare DIDs are accepted.
    UrlPart,
    /// The method-specific identifier does not start with the multibase prefix `z`
    /// (base58btc); the character found is given, `None` when the identifier is empty.
    WrongMultibase(Option<char>),
    /// The identifier is not valid base58btc (the decoder's message is given).
    BadBase58(String),
    /// The multicodec prefix is not `0xed` (Ed25519 public key); the code found is given.
    WrongMulticodec(u64),
    /// The key is not 32 bytes long (the length found is given).
    WrongLength(usize),
    /// The 32 bytes are not a valid Ed25519 point.
    InvalidKey,
}

impl fmt::Display for DidErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DidErrorKind::NotADid => write!(f, "it does not start with `did:`"),
            DidErrorKind::WrongMethod(m) => {
                write!(f, "method `{m}` is not supported, only `did:key` is")
            }
            DidErrorKind::UrlPart => write!(
                f,
                "it carries a path, query or fragment; give the bare DID (did:key:z…)"
            ),
            DidErrorKind::WrongMultibase(Some(c)) => write!(
                f,
                "multibase prefix `{c}` is not supported, only `z` (base58btc) is"
            ),
            DidErrorKind::WrongMultibase(None) => write!(f, "the key identifier is empty"),
            DidErrorKind::BadBase58(e) => write!(f, "the identifier is not valid base58btc: {e}"),
            DidErrorKind::WrongMulticodec(code) => write!(
                f,
                "multicodec 0x{code:x} is not an Ed25519 public key (0xed); only Ed25519 keys are supported"
            ),
            DidErrorKind::WrongLength(n) => {
                write!(f, "the Ed25519 key is {n} bytes long, expected 32")
            }
            DidErrorKind::InvalidKey => {
                write!(f, "the 32 bytes are not a valid Ed25519 public key")
            }
        }
    }
}

/// Everything that can go wrong when decoding, signing or validating tokens.
///
/// The variant names follow the UCAN 1.0 conformance fixtures where one applies
/// (`InvalidSignature`, `Expired`, `TooEarly`, `InvalidAudience`, `InvalidSubject`,
/// `InvalidClaim`, `UnavailableProof`, `MatchError`); [`Error::name`] returns exactly that name.
/// Each message names the token (its CID) and, where possible, how to fix the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A token's signature does not verify against its issuer's key, or cannot be checked
    /// because of its form: a signature that is not 64 bytes long, or an envelope that is not in
    /// canonical DAG-CBOR form (the signature is checked over the canonical bytes).
    InvalidSignature {
        /// The token whose signature failed.
        token: Box<Cid>,
        /// The issuer that should have signed it.
        issuer: Did,
        /// Why the signature was refused.
        reason: String,
    },
    /// A token's `exp` is in the past (beyond the clock-skew allowance).
    Expired {
        /// The expired token.
        token: Box<Cid>,
        /// Its expiration (Unix seconds).
        exp: u64,
        /// The evaluation time (Unix seconds).
        now: u64,
    },
    /// A token's `nbf` is in the future (beyond the clock-skew allowance).
    TooEarly {
        /// The token that is not yet valid.
        token: Box<Cid>,
        /// Its not-before time (Unix seconds).
        nbf: u64,
        /// The evaluation time (Unix seconds).
        now: u64,
    },
    /// Principals do not line up: a delegation's audience is not the next issuer, the last
    /// delegation is not addressed to the invoker or expected holder, or the invocation is not
    /// addressed to this executor.
    InvalidAudience {
        /// The token whose issuer or audience is wrong.
        token: Box<Cid>,
        /// The principal that was expected.
        expected: String,
        /// The principal that was found.
        found: String,
    },
    /// Subjects do not line up: the root delegation is not issued by its subject, a delegation
    /// names another subject, or the invocation's subject differs from the chain's.
    InvalidSubject {
        /// The token with the wrong subject.
        token: Box<Cid>,
        /// The subject that was expected.
        expected: String,
        /// The subject that was found.
        found: String,
    },
    /// The claim is not covered: the command is outside a delegation's command (attenuation),
    /// a powerline is used as root, or an invocation without proofs is not self-issued.
    InvalidClaim {
        /// The token whose claim is refused.
        token: Box<Cid>,
        /// What is wrong.
        reason: String,
    },
    /// A proof named in an invocation's `prf` was not supplied.
    UnavailableProof {
        /// The invocation that names the proof.
        token: Box<Cid>,
        /// The missing proof.
        proof: Cid,
    },
    /// The invocation's arguments do not satisfy a delegation's policy.
    MatchError {
        /// The delegation whose policy failed.
        token: Box<Cid>,
        /// The statement that failed, in its DAG-JSON-like text form.
        statement: String,
        /// Why it failed.
        reason: String,
    },
    /// A token in the chain has been revoked.
    Revoked {
        /// The revoked token.
        token: Box<Cid>,
    },
    /// A content hash bound by a capability does not match the content presented (used by the
    /// node for tokens embedded in components: the token is bound to the component's hash).
    HashMismatch {
        /// The hash the capability binds; empty when the capability binds no hash at all (the
        /// token is not bound to any content).
        expected: String,
        /// The hash of the content presented.
        found: String,
    },
    /// The invocation was already executed, or the replay cache can no longer prove it was not.
    Replayed {
        /// The replayed invocation.
        token: Box<Cid>,
        /// Details.
        detail: String,
    },
    /// An invocation lives longer than the executor accepts: it has no `exp`, or its `exp` is
    /// further ahead than [`ValidationOptions::max_invocation_lifetime`](crate::ValidationOptions)
    /// (plus the clock-skew allowance).
    LifetimeTooLong {
        /// The invocation.
        token: Box<Cid>,
        /// Seconds from now to its `exp`; `None` when it has no `exp`.
        expires_in: Option<u64>,
        /// The longest lifetime accepted, in seconds.
        max: u64,
    },
    /// The replay cache already remembers as many live (unexpired) invocations of this
    /// principal as it keeps per principal; the principal's invocations are refused until some
    /// expire. Other principals are not affected.
    TooManyInvocations {
        /// The invocation refused.
        token: Box<Cid>,
        /// The principal whose bucket is full (the audience of the chain's root delegation,
        /// or the invoker when it invokes directly).
        principal: Did,
        /// Invocations kept per principal.
        limit: usize,
        /// Unix time at which the earliest remembered invocation expires.
        retry_at: u64,
    },
    /// Remembering the invocation failed (the replay journal could not be written), so it is
    /// refused: an invocation that could run twice after a restart is never accepted.
    Storage {
        /// What failed.
        reason: String,
    },
    /// The delegation chain does not start at the required root issuer (e.g. the node's Admin).
    UntrustedRoot {
        /// The root token of the chain (or the invocation when it has no proofs).
        token: Box<Cid>,
        /// The root issuer found.
        root: Did,
        /// The root issuer required.
        expected: Did,
    },
    /// The input is not a decodable token: bad base64, not canonical DAG-CBOR, not an envelope.
    Decode {
        /// What is wrong.
        reason: String,
    },
    /// The input decodes but is not a valid UCAN structure (missing or mistyped field, bad
    /// command, malformed policy, unsupported signature header…), or a value cannot be encoded.
    Malformed {
        /// The token concerned, when known.
        token: Option<Box<Cid>>,
        /// What is wrong.
        reason: String,
    },
    /// A string is not an Ed25519 `did:key`.
    InvalidDid {
        /// The refused input (truncated when long).
        input: String,
        /// Why it was refused.
        kind: DidErrorKind,
    },
    /// A key file could not be read, written or parsed, or is not private.
    KeyFile {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
}

impl Error {
    /// The variant name, e.g. `"InvalidSignature"`; for the fixture errors this is the name the
    /// UCAN conformance fixtures use.
    pub fn name(&self) -> &'static str {
        match self {
            Error::InvalidSignature { .. } => "InvalidSignature",
            Error::Expired { .. } => "Expired",
            Error::TooEarly { .. } => "TooEarly",
            Error::InvalidAudience { .. } => "InvalidAudience",
            Error::InvalidSubject { .. } => "InvalidSubject",
            Error::InvalidClaim { .. } => "InvalidClaim",
            Error::UnavailableProof { .. } => "UnavailableProof",
            Error::MatchError { .. } => "MatchError",
            Error::Revoked { .. } => "Revoked",
            Error::HashMismatch { .. } => "HashMismatch",
            Error::Replayed { .. } => "Replayed",
            Error::UntrustedRoot { .. } => "UntrustedRoot",
            Error::LifetimeTooLong { .. } => "LifetimeTooLong",
            Error::TooManyInvocations { .. } => "TooManyInvocations",
            Error::Storage { .. } => "Storage",
            Error::Decode { .. } => "Decode",
            Error::Malformed { .. } => "Malformed",
            Error::InvalidDid { .. } => "InvalidDid",
            Error::KeyFile { .. } => "KeyFile",
        }
    }

    /// The CID of the token the error concerns, when there is one.
    pub fn token(&self) -> Option<&Cid> {
        match self {
            Error::InvalidSignature { token, .. }
            | Error::Expired { token, .. }
            | Error::TooEarly { token, .. }
            | Error::InvalidAudience { token, .. }
            | Error::InvalidSubject { token, .. }
            | Error::InvalidClaim { token, .. }
            | Error::UnavailableProof { token, .. }
            | Error::MatchError { token, .. }
            | Error::Revoked { token }
            | Error::Replayed { token, .. }
            | Error::UntrustedRoot { token, .. }
            | Error::LifetimeTooLong { token, .. }
            | Error::TooManyInvocations { token, .. } => Some(&**token),
            Error::Malformed { token, .. } => token.as_deref(),
            Error::HashMismatch { .. }
            | Error::Decode { .. }
            | Error::InvalidDid { .. }
            | Error::Storage { .. }
            | Error::KeyFile { .. } => None,
        }
    }

    pub(crate) fn malformed(token: Option<Cid>, reason: impl Into<String>) -> Self {
        Error::Malformed {
            token: token.map(Box::new),
            reason: reason.into(),
        }
    }

    /// A capability bound to content hash `bound` presented with content hashing to `actual`.
    pub(crate) fn hash_mismatch(bound: impl Into<String>, actual: impl Into<String>) -> Self {
        Error::HashMismatch {
            expected: bound.into(),
            found: actual.into(),
        }
    }

    /// A capability that binds no content hash, presented with content hashing to `actual`
    /// (a [`Error::HashMismatch`] with an empty `expected`).
    pub(crate) fn unbound_content(actual: impl Into<String>) -> Self {
        Error::HashMismatch {
            expected: String::new(),
            found: actual.into(),
        }
    }

    /// Attaches a token CID to a `Malformed` error that has none yet.
    pub(crate) fn in_token(self, cid: Cid) -> Self {
        match self {
            Error::Malformed {
                token: None,
                reason,
            } => Error::Malformed {
                token: Some(Box::new(cid)),
                reason,
            },
            other => other,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidSignature {
                token,
                issuer,
                reason,
            } => write!(
                f,
                "InvalidSignature: token {token} is not validly signed by its issuer {issuer}: \
                 {reason}; ask the issuer for a freshly signed token"
            ),
            Error::Expired { token, exp, now } => write!(
                f,
                "Expired: token {token} expired at {exp} (Unix seconds; evaluated at {now}); \
                 ask its issuer for a new token, or check this machine's clock"
            ),
            Error::TooEarly { token, nbf, now } => write!(
                f,
                "TooEarly: token {token} is not valid before {nbf} (Unix seconds; evaluated at \
                 {now}); wait until then, or check this machine's clock"
            ),
            Error::InvalidAudience {
                token,
                expected,
                found,
            } => write!(
                f,
                "InvalidAudience: token {token} breaks the chain of principals: expected \
                 {expected}, found {found}; each delegation must be addressed to the next \
                 issuer and the last one to the invoker"
            ),
            Error::InvalidSubject {
                token,
                expected,
                found,
            } => write!(
                f,
                "InvalidSubject: token {token} is about subject {found}, expected {expected}; \
                 every token in a chain must name the same subject, and the root delegation \
                 must be issued by it"
            ),
            Error::InvalidClaim { token, reason } => {
                write!(f, "InvalidClaim: token {token}: {reason}")
            }
            Error::UnavailableProof { token, proof } => write!(
                f,
                "UnavailableProof: token {token} names proof {proof} but it was not supplied; \
                 pass every delegation listed in `prf`"
            ),
            Error::MatchError {
                token,
                statement,
                reason,
            } => write!(
                f,
                "MatchError: the arguments do not satisfy policy statement {statement} of \
                 delegation {token}: {reason}; change the arguments or obtain a delegation \
                 whose policy allows them"
            ),
            Error::Revoked { token } => write!(
                f,
                "Revoked: token {token} has been revoked; ask for a new delegation"
            ),
            Error::HashMismatch { expected, found } if expected.is_empty() => write!(
                f,
                "HashMismatch: the token is not bound to a component hash; sign the component \
                 with `zero sign` (the content presented hashes to {found})"
            ),
            Error::HashMismatch { expected, found } => write!(
                f,
                "HashMismatch: the capability is bound to content hash {expected} but the \
                 content presented hashes to {found}; the component was changed after \
                 signing, or the token was copied from another component: sign it again"
            ),
            Error::Replayed { token, detail } => {
                write!(f, "Replayed: invocation {token}: {detail}")
            }
            Error::LifetimeTooLong {
                token,
                expires_in: None,
                max,
            } => write!(
                f,
                "LifetimeTooLong: invocation {token} has no expiration (`exp`), so it could be \
                 used forever; sign invocations that expire within {max} s (the zero CLI does)"
            ),
            Error::LifetimeTooLong {
                token,
                expires_in: Some(secs),
                max,
            } => write!(
                f,
                "LifetimeTooLong: invocation {token} expires in {secs} s, but this executor \
                 accepts invocations that expire within {max} s; sign it again with an `exp` \
                 at most {max} s ahead (invocations are single-use and short-lived)"
            ),
            Error::TooManyInvocations {
                token,
                principal,
                limit,
                retry_at,
            } => write!(
                f,
                "TooManyInvocations: invocation {token} refused: {principal} already has {limit} \
                 unexpired invocations remembered against replay, the most kept per principal; \
                 retry after {retry_at} (Unix seconds), when the earliest expires, and sign \
                 invocations with a shorter `exp` (other principals are not affected)"
            ),
            Error::Storage { reason } => write!(
                f,
                "Storage: the invocation could not be recorded against replay ({reason}), so it \
                 was not executed; retry once the node's storage is writable"
            ),
            Error::UntrustedRoot {
                token,
                root,
                expected,
            } => write!(
                f,
                "UntrustedRoot: the chain starting at token {token} is rooted at {root}, not at \
                 the required issuer {expected}; obtain a delegation chain that starts at it"
            ),
            Error::Decode { reason } => write!(f, "Decode: {reason}"),
            Error::Malformed {
                token: Some(token),
                reason,
            } => write!(f, "Malformed: token {token}: {reason}"),
            Error::Malformed {
                token: None,
                reason,
            } => write!(f, "Malformed: {reason}"),
            Error::InvalidDid { input, kind } => {
                write!(f, "InvalidDid: `{input}` is not an Ed25519 did:key: {kind}")
            }
            Error::KeyFile { path, reason } => {
                write!(f, "KeyFile: {}: {reason}", path.display())
            }
        }
    }
}

impl std::error::Error for Error {}

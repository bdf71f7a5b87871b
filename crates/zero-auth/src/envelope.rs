//! The UCAN 1.0 envelope: `[signature, {"h": varsig header, "ucan/<type>@1.0.0": payload}]`
//! in DAG-CBOR, and the helpers shared by delegations and invocations.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use ipld_core::cid::Cid;
use ipld_core::cid::multihash::Multihash;
use ipld_core::ipld::Ipld;
use sha2::{Digest, Sha256};

use crate::delegation::Delegation;
use crate::did::Did;
use crate::error::Error;
use crate::invocation::InvocationToken;
use crate::keys::Keypair;

/// The varsig header of an Ed25519 signature over a DAG-CBOR payload, as found in the UCAN
/// 1.0.0 fixtures: varsig prefix `0x34`, version `0x01`, Ed25519 (`0xed 0x01`, twice: key type
/// and curve), SHA2-512 (`0x13`), DAG-CBOR payload encoding (`0x71`).
pub const VARSIG_ED25519_DAG_CBOR: [u8; 8] = [0x34, 0x01, 0xed, 0x01, 0xed, 0x01, 0x13, 0x71];

/// Envelope type tag of a delegation.
pub const DELEGATION_TAG: &str = "ucan/dlg@1.0.0";

/// Envelope type tag of an invocation.
pub const INVOCATION_TAG: &str = "ucan/inv@1.0.0";

/// Multicodec of DAG-CBOR.
const DAG_CBOR: u64 = 0x71;
/// Multicodec of SHA2-256.
const SHA2_256: u64 = 0x12;
/// Largest integer JavaScript represents exactly (the spec's 53-bit timestamps).
pub(crate) const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;
/// Byte length of the envelope prefix before the signed map: array header (1), bytes header
/// for 64 bytes (2), the signature (64).
const SIGNED_OFFSET: usize = 1 + 2 + 64;

/// Standard base64 that accepts input with or without padding.
const BASE64_LENIENT_PAD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The CIDv1 of token bytes: DAG-CBOR codec, SHA2-256 multihash (`bafyrei…` in base32).
pub fn cid_of(bytes: &[u8]) -> Cid {
    let digest = Sha256::digest(bytes);
    match Multihash::<64>::wrap(SHA2_256, &digest) {
        Ok(mh) => Cid::new_v1(DAG_CBOR, mh),
        // A 32-byte digest always fits in 64 bytes.
        Err(_) => Cid::default(),
    }
}

/// Decodes standard base64 (padding optional, surrounding whitespace ignored).
pub fn decode_base64(input: &str) -> Result<Vec<u8>, Error> {
    BASE64_LENIENT_PAD
        .decode(input.trim())
        .map_err(|e| Error::Decode {
            reason: format!("invalid base64: {e}"),
        })
}

pub(crate) fn encode_base64(bytes: &[u8]) -> String {
    general_purpose::STANDARD.encode(bytes)
}

/// The two kinds of envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `ucan/dlg@1.0.0`.
    Delegation,
    /// `ucan/inv@1.0.0`.
    Invocation,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::Delegation => DELEGATION_TAG,
            Kind::Invocation => INVOCATION_TAG,
        }
    }
}

/// A structurally valid envelope, before its payload is interpreted.
pub(crate) struct RawEnvelope {
    /// The signature as found; its length is checked once the issuer is known, so that a
    /// signature of the wrong form is refused as [`Error::InvalidSignature`].
    pub(crate) signature: Vec<u8>,
    pub(crate) kind: Kind,
    pub(crate) payload: BTreeMap<String, Ipld>,
    pub(crate) cid: Cid,
}

/// Decodes the envelope layer. The caller must check that re-encoding its typed payload gives
/// back `bytes` (canonical form).
pub(crate) fn decode_envelope(bytes: &[u8]) -> Result<RawEnvelope, Error> {
    let cid = cid_of(bytes);
    let value: Ipld = match serde_ipld_dagcbor::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            // Valid CBOR that is not in the canonical DAG-CBOR form (an integer or length
            // not in its shortest form, map keys out of order): the signature, made over the
            // canonical bytes, cannot be checked, which is the UCAN verdict InvalidSignature.
            let non_canonical = matches!(
                e,
                serde_ipld_dagcbor::DecodeError::NonMinimal { .. }
                    | serde_ipld_dagcbor::DecodeError::UnorderedKey
            );
            if non_canonical && let Some(issuer) = lenient_issuer(bytes) {
                return Err(Error::InvalidSignature {
                    token: cid.into(),
                    issuer,
                    reason: format!(
                        "the token is not in canonical DAG-CBOR form ({e}), and its signature is \
                         checked over the canonical bytes; have it re-signed with a conforming \
                         UCAN library"
                    ),
                });
            }
            return Err(Error::Decode {
                reason: format!("not a valid DAG-CBOR token: {e}"),
            });
        }
    };
    let bad = |reason: &str| Error::malformed(Some(cid), format!("bad UCAN envelope: {reason}"));
    let Ipld::List(items) = value else {
        return Err(bad("expected a 2-element list [signature, signed payload]"));
    };
    let mut items = items.into_iter();
    let (Some(sig), Some(signed), None) = (items.next(), items.next(), items.next()) else {
        return Err(bad("expected a 2-element list [signature, signed payload]"));
    };
    let Ipld::Bytes(signature) = sig else {
        return Err(bad("the signature must be bytes"));
    };
    let Ipld::Map(mut signed) = signed else {
        return Err(bad("the signed payload must be a map"));
    };
    match signed.remove("h") {
        Some(Ipld::Bytes(h)) if h == VARSIG_ED25519_DAG_CBOR => {}
        Some(Ipld::Bytes(h)) => {
            return Err(bad(&format!(
                "unsupported varsig header {}; only Ed25519 over DAG-CBOR ({}) is supported",
                hex(&h),
                hex(&VARSIG_ED25519_DAG_CBOR)
            )));
        }
        Some(_) => return Err(bad("the varsig header `h` must be bytes")),
        None => return Err(bad("missing varsig header `h`")),
    }
    let mut entries = signed.into_iter();
    let (Some((tag, payload)), None) = (entries.next(), entries.next()) else {
        return Err(bad(
            "the signed payload must hold `h` and exactly one type tag",
        ));
    };
    let kind = match tag.as_str() {
        DELEGATION_TAG => Kind::Delegation,
        INVOCATION_TAG => Kind::Invocation,
        other => {
            return Err(bad(&format!(
                "unsupported type tag `{}`; expected `{DELEGATION_TAG}` or `{INVOCATION_TAG}`",
                crate::did::truncate(other, 40)
            )));
        }
    };
    let Ipld::Map(payload) = payload else {
        return Err(bad("the payload must be a map"));
    };
    Ok(RawEnvelope {
        signature,
        kind,
        payload,
        cid,
    })
}

/// The issuer (`iss`) of an envelope read leniently (any valid CBOR, canonical or not), to
/// name it in the refusal of a non-canonical token; `None` when it has no readable issuer.
fn lenient_issuer(bytes: &[u8]) -> Option<Did> {
    use cbor4ii::core::Value;
    use cbor4ii::core::dec::Decode;
    let mut reader = cbor4ii::core::utils::SliceReader::new(bytes);
    let Ok(Value::Array(items)) = Value::decode(&mut reader) else {
        return None;
    };
    let Some(Value::Map(signed)) = items.get(1) else {
        return None;
    };
    signed.iter().find_map(|(k, v)| match (k, v) {
        (Value::Text(tag), Value::Map(payload))
            if tag == DELEGATION_TAG || tag == INVOCATION_TAG =>
        {
            payload.iter().find_map(|(k, v)| match (k, v) {
                (Value::Text(k), Value::Text(iss)) if k == "iss" => Did::parse(iss).ok(),
                _ => None,
            })
        }
        _ => None,
    })
}

/// The DAG-CBOR encoding of the signed part `{"h": header, tag: payload}`.
fn signed_map(kind: Kind, payload: Ipld) -> Ipld {
    Ipld::Map(BTreeMap::from([
        (
            "h".to_owned(),
            Ipld::Bytes(VARSIG_ED25519_DAG_CBOR.to_vec()),
        ),
        (kind.tag().to_owned(), payload),
    ]))
}

fn to_cbor(value: &Ipld) -> Result<Vec<u8>, Error> {
    serde_ipld_dagcbor::to_vec(value).map_err(|e| {
        Error::malformed(
            None,
            format!("the token cannot be encoded as DAG-CBOR: {e}"),
        )
    })
}

/// Encodes a full envelope.
pub(crate) fn encode_envelope(
    signature: &[u8; 64],
    kind: Kind,
    payload: Ipld,
) -> Result<Vec<u8>, Error> {
    to_cbor(&Ipld::List(vec![
        Ipld::Bytes(signature.to_vec()),
        signed_map(kind, payload),
    ]))
}

/// Signs a payload and returns the envelope bytes.
pub(crate) fn sign_envelope(key: &Keypair, kind: Kind, payload: Ipld) -> Result<Vec<u8>, Error> {
    let signed = signed_map(kind, payload);
    let input = to_cbor(&signed)?;
    let signature = key.sign(&input);
    to_cbor(&Ipld::List(vec![Ipld::Bytes(signature.to_vec()), signed]))
}

/// Verifies the signature of canonical envelope bytes against `issuer`.
pub(crate) fn verify_envelope(
    bytes: &[u8],
    signature: &[u8; 64],
    issuer: &Did,
    cid: Cid,
) -> Result<(), Error> {
    // In a canonical envelope the signed map is exactly the bytes after the signature.
    match bytes.get(SIGNED_OFFSET..) {
        Some(signed) if issuer.verify(signed, signature) => Ok(()),
        _ => Err(Error::InvalidSignature {
            token: cid.into(),
            issuer: issuer.clone(),
            reason: "the signature does not verify against the issuer's key (the token was \
                     altered or forged)"
                .into(),
        }),
    }
}

/// Checks that re-encoding gave back the input. The signature covers the canonical encoding
/// of the signed payload, so a token in another form cannot have its signature checked: it is
/// refused as [`Error::InvalidSignature`], the UCAN name for a signature that does not verify.
pub(crate) fn ensure_canonical(
    input: &[u8],
    reencoded: &[u8],
    cid: Cid,
    issuer: &Did,
) -> Result<(), Error> {
    if input == reencoded {
        Ok(())
    } else {
        Err(Error::InvalidSignature {
            token: cid.into(),
            issuer: issuer.clone(),
            reason: "the token is not in canonical DAG-CBOR form (re-encoding it gives \
                     different bytes), and its signature is checked over the canonical bytes; \
                     have it re-signed with a conforming UCAN library"
                .into(),
        })
    }
}

/// The signature as a 64-byte Ed25519 signature, or [`Error::InvalidSignature`] naming its
/// length.
fn signature_of(raw: &[u8], cid: Cid, issuer: &Did) -> Result<[u8; 64], Error> {
    raw.try_into().map_err(|_| Error::InvalidSignature {
        token: cid.into(),
        issuer: issuer.clone(),
        reason: format!(
            "the signature is {} bytes long, and an Ed25519 signature is 64 bytes",
            raw.len()
        ),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Strict reader of a payload map: every accessor removes its field, and [`Fields::finish`]
/// refuses fields nobody asked for.
pub struct Fields {
    map: BTreeMap<String, Ipld>,
    cid: Cid,
}

impl Fields {
    pub(crate) fn new(map: BTreeMap<String, Ipld>, cid: Cid) -> Self {
        Fields { map, cid }
    }

    pub(crate) fn error(&self, field: &str, why: impl std::fmt::Display) -> Error {
        Error::malformed(Some(self.cid), format!("field `{field}`: {why}"))
    }

    pub(crate) fn required(&mut self, field: &str) -> Result<Ipld, Error> {
        self.map
            .remove(field)
            .ok_or_else(|| self.error(field, "missing (required)"))
    }

    pub(crate) fn optional(&mut self, field: &str) -> Option<Ipld> {
        self.map.remove(field)
    }

    fn as_did(&self, field: &str, value: Ipld) -> Result<Did, Error> {
        match value {
            Ipld::String(s) => Did::parse(&s).map_err(|e| self.error(field, e)),
            _ => Err(self.error(field, "must be a DID string")),
        }
    }

    pub(crate) fn did(&mut self, field: &str) -> Result<Did, Error> {
        let v = self.required(field)?;
        self.as_did(field, v)
    }

    /// Required, `null` or a DID.
    pub(crate) fn nullable_did(&mut self, field: &str) -> Result<Option<Did>, Error> {
        match self.required(field)? {
            Ipld::Null => Ok(None),
            v => self.as_did(field, v).map(Some),
        }
    }

    /// Optional (absent), or a DID.
    pub(crate) fn optional_did(&mut self, field: &str) -> Result<Option<Did>, Error> {
        match self.optional(field) {
            None => Ok(None),
            Some(v) => self.as_did(field, v).map(Some),
        }
    }

    pub(crate) fn string(&mut self, field: &str) -> Result<String, Error> {
        match self.required(field)? {
            Ipld::String(s) => Ok(s),
            _ => Err(self.error(field, "must be a string")),
        }
    }

    pub(crate) fn bytes(&mut self, field: &str) -> Result<Vec<u8>, Error> {
        match self.required(field)? {
            Ipld::Bytes(b) => Ok(b),
            _ => Err(self.error(field, "must be bytes")),
        }
    }

    pub(crate) fn map(&mut self, field: &str) -> Result<BTreeMap<String, Ipld>, Error> {
        match self.required(field)? {
            Ipld::Map(m) => Ok(m),
            _ => Err(self.error(field, "must be a map")),
        }
    }

    pub(crate) fn optional_map(
        &mut self,
        field: &str,
    ) -> Result<Option<BTreeMap<String, Ipld>>, Error> {
        match self.optional(field) {
            None => Ok(None),
            Some(Ipld::Map(m)) => Ok(Some(m)),
            Some(_) => Err(self.error(field, "must be a map when present")),
        }
    }

    fn as_timestamp(&self, field: &str, value: &Ipld) -> Result<u64, Error> {
        match value {
            Ipld::Integer(i) => u64::try_from(*i)
                .ok()
                .filter(|t| *t <= MAX_SAFE_INTEGER)
                .ok_or_else(|| self.error(field, "must be a Unix time between 0 and 2^53-1")),
            _ => Err(self.error(field, "must be an integer Unix time")),
        }
    }

    /// Optional (absent) or an integer timestamp.
    pub(crate) fn optional_timestamp(&mut self, field: &str) -> Result<Option<u64>, Error> {
        match self.optional(field) {
            None => Ok(None),
            Some(v) => self.as_timestamp(field, &v).map(Some),
        }
    }

    /// Required, `null` or an integer timestamp.
    pub(crate) fn nullable_timestamp(&mut self, field: &str) -> Result<Option<u64>, Error> {
        match self.required(field)? {
            Ipld::Null => Ok(None),
            v => self.as_timestamp(field, &v).map(Some),
        }
    }

    pub(crate) fn links(&mut self, field: &str) -> Result<Vec<Cid>, Error> {
        match self.required(field)? {
            Ipld::List(items) => items
                .into_iter()
                .map(|i| match i {
                    Ipld::Link(cid) => Ok(cid),
                    _ => Err(self.error(field, "must be a list of CID links")),
                })
                .collect(),
            _ => Err(self.error(field, "must be a list of CID links")),
        }
    }

    pub(crate) fn optional_link(&mut self, field: &str) -> Result<Option<Cid>, Error> {
        match self.optional(field) {
            None => Ok(None),
            Some(Ipld::Link(cid)) => Ok(Some(cid)),
            Some(_) => Err(self.error(field, "must be a CID link when present")),
        }
    }

    pub(crate) fn finish(self) -> Result<(), Error> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => Err(Error::malformed(
                Some(self.cid),
                format!("unknown payload field `{}`", crate::did::truncate(k, 40)),
            )),
        }
    }
}

/// What a signed token's payload provides to [`Signed`]. Implemented by
/// [`DelegationPayload`](crate::DelegationPayload) and
/// [`InvocationPayload`](crate::InvocationPayload) only (the trait is sealed).
pub trait Payload: Clone + std::fmt::Debug + sealed::Sealed {
    /// `iss`: the principal who signs the token.
    fn issuer(&self) -> &Did;
    /// The payload as an IPLD map (its wire form).
    fn to_ipld(&self) -> Ipld;
}

pub(crate) mod sealed {
    use super::{Error, Fields, Kind};

    /// The envelope-level facts of a payload type, private to this crate.
    pub trait Sealed: Sized {
        /// The envelope kind (tag) of this payload.
        const KIND: Kind;
        /// Why a token of the other kind is refused.
        const WRONG_KIND: &'static str;
        /// Reads the payload from its fields (strict: unknown fields are refused).
        fn from_fields(fields: Fields) -> Result<Self, Error>;
    }
}

/// A signed UCAN 1.0 token: its payload, its Ed25519 signature, the envelope bytes and its CID.
/// [`Delegation`] and [`InvocationToken`] are its two kinds.
///
/// Decoding is strict and never panics: the envelope must be canonical DAG-CBOR with the Ed25519
/// varsig header, of the right kind, with every required field present with the right type and
/// no unknown field. Decoding does **not** check the signature; [`Signed::verify_signature`]
/// and the [`Validator`](crate::Validator) do.
#[derive(Clone, Debug)]
pub struct Signed<P> {
    payload: P,
    signature: [u8; 64],
    bytes: Vec<u8>,
    cid: Cid,
}

impl<P: Payload> Signed<P> {
    /// Decodes a token of this kind from its DAG-CBOR envelope.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let raw = decode_envelope(bytes)?;
        if raw.kind != P::KIND {
            return Err(Error::malformed(Some(raw.cid), P::WRONG_KIND));
        }
        Signed::from_raw(raw, bytes)
    }

    /// Decodes a token from standard base64 of its envelope.
    pub fn from_base64(input: &str) -> Result<Self, Error> {
        Signed::decode(&decode_base64(input)?)
    }

    pub(crate) fn from_raw(raw: RawEnvelope, bytes: &[u8]) -> Result<Self, Error> {
        let payload = P::from_fields(Fields::new(raw.payload, raw.cid))?;
        let signature = signature_of(&raw.signature, raw.cid, payload.issuer())?;
        let token = Signed {
            payload,
            signature,
            bytes: bytes.to_vec(),
            cid: raw.cid,
        };
        let reencoded = token.encode().map_err(|e| e.in_token(raw.cid))?;
        ensure_canonical(bytes, &reencoded, raw.cid, token.issuer())?;
        Ok(token)
    }

    /// Signs `payload` with `key` (which must be the payload's issuer) and decodes the result,
    /// which keeps builders and decoders in agreement.
    pub(crate) fn sign(key: &Keypair, payload: &P) -> Result<Self, Error> {
        let bytes = sign_envelope(key, P::KIND, payload.to_ipld())?;
        Signed::decode(&bytes)
    }

    /// Re-encodes the envelope from the decoded fields (gives back the decoded bytes).
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        encode_envelope(&self.signature, P::KIND, self.payload.to_ipld())
    }

    /// The envelope bytes as decoded or signed.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Standard base64 of the envelope.
    pub fn to_base64(&self) -> String {
        encode_base64(&self.bytes)
    }

    /// The CID (CIDv1, DAG-CBOR, SHA2-256) naming this token.
    pub fn cid(&self) -> &Cid {
        &self.cid
    }

    /// The payload.
    pub fn payload(&self) -> &P {
        &self.payload
    }

    /// The Ed25519 signature.
    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }

    /// `iss`.
    pub fn issuer(&self) -> &Did {
        self.payload.issuer()
    }

    /// Verifies the signature against the issuer's key.
    pub fn verify_signature(&self) -> Result<(), Error> {
        verify_envelope(
            &self.bytes,
            &self.signature,
            self.payload.issuer(),
            self.cid,
        )
    }
}

/// Any UCAN token: a delegation or an invocation.
#[derive(Clone, Debug)]
pub enum Token {
    /// A delegation (`ucan/dlg@1.0.0`).
    Delegation(Delegation),
    /// An invocation (`ucan/inv@1.0.0`).
    Invocation(InvocationToken),
}

impl Token {
    /// Decodes either kind of token from its DAG-CBOR envelope (strict; never panics).
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let raw = decode_envelope(bytes)?;
        match raw.kind {
            Kind::Delegation => Signed::from_raw(raw, bytes).map(Token::Delegation),
            Kind::Invocation => Signed::from_raw(raw, bytes).map(Token::Invocation),
        }
    }

    /// Decodes a token from standard base64 of its envelope.
    pub fn from_base64(input: &str) -> Result<Self, Error> {
        Token::decode(&decode_base64(input)?)
    }

    /// The token's CID.
    pub fn cid(&self) -> &Cid {
        match self {
            Token::Delegation(d) => d.cid(),
            Token::Invocation(i) => i.cid(),
        }
    }

    /// The envelope bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Token::Delegation(d) => d.as_bytes(),
            Token::Invocation(i) => i.as_bytes(),
        }
    }

    /// Re-encodes the token from its decoded fields.
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        match self {
            Token::Delegation(d) => d.encode(),
            Token::Invocation(i) => i.encode(),
        }
    }

    /// Verifies the token's signature against its issuer.
    pub fn verify_signature(&self) -> Result<(), Error> {
        match self {
            Token::Delegation(d) => d.verify_signature(),
            Token::Invocation(i) => i.verify_signature(),
        }
    }
}

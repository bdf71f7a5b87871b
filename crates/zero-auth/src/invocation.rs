//! UCAN 1.0 invocations.

use std::collections::BTreeMap;

use ipld_core::cid::Cid;
use ipld_core::ipld::Ipld;

use crate::command::Command;
use crate::delegation::Delegation;
use crate::did::Did;
use crate::envelope::{Fields, Kind, MAX_SAFE_INTEGER, Payload, Signed, sealed};
use crate::error::Error;
use crate::keys::{Keypair, random_bytes};

/// The payload of an invocation (`ucan/inv@1.0.0`).
#[derive(Clone, Debug, PartialEq)]
pub struct InvocationPayload {
    /// `iss`: the invoker (and signer).
    pub issuer: Did,
    /// `sub`: the principal whose resource is acted on.
    pub subject: Did,
    /// `aud`: the intended executor, when different from the subject.
    pub audience: Option<Did>,
    /// `cmd`: the command to run.
    pub command: Command,
    /// `args`: the command's arguments, checked against every delegation's policy.
    pub args: BTreeMap<String, Ipld>,
    /// `prf`: the CIDs of the delegations proving authority, ordered from the root (issued by
    /// the subject) to the leaf (addressed to the invoker).
    pub proofs: Vec<Cid>,
    /// `meta`: signed, non-authoritative metadata.
    pub meta: Option<BTreeMap<String, Ipld>>,
    /// `nonce`: random bytes making the invocation unique.
    pub nonce: Vec<u8>,
    /// `exp`: not valid after this Unix time; `None` (`null`) never expires.
    pub expiration: Option<u64>,
    /// `iat`: when the invocation was issued (informative).
    pub issued_at: Option<u64>,
    /// `cause`: the receipt that caused this invocation, if any.
    pub cause: Option<Cid>,
}

impl InvocationPayload {
    /// The payload as an IPLD map (its wire form).
    pub fn to_ipld(&self) -> Ipld {
        let mut m = BTreeMap::new();
        m.insert("iss".into(), Ipld::String(self.issuer.to_string()));
        m.insert("sub".into(), Ipld::String(self.subject.to_string()));
        if let Some(aud) = &self.audience {
            m.insert("aud".into(), Ipld::String(aud.to_string()));
        }
        m.insert("cmd".into(), Ipld::String(self.command.to_string()));
        m.insert("args".into(), Ipld::Map(self.args.clone()));
        m.insert(
            "prf".into(),
            Ipld::List(self.proofs.iter().copied().map(Ipld::Link).collect()),
        );
        if let Some(meta) = &self.meta {
            m.insert("meta".into(), Ipld::Map(meta.clone()));
        }
        m.insert("nonce".into(), Ipld::Bytes(self.nonce.clone()));
        m.insert(
            "exp".into(),
            self.expiration
                .map_or(Ipld::Null, |e| Ipld::Integer(i128::from(e))),
        );
        if let Some(iat) = self.issued_at {
            m.insert("iat".into(), Ipld::Integer(i128::from(iat)));
        }
        if let Some(cause) = self.cause {
            m.insert("cause".into(), Ipld::Link(cause));
        }
        Ipld::Map(m)
    }

    fn read_fields(mut f: Fields) -> Result<Self, Error> {
        let issuer = f.did("iss")?;
        let subject = f.did("sub")?;
        let audience = f.optional_did("aud")?;
        let command_text = f.string("cmd")?;
        let command = Command::parse(&command_text).map_err(|e| f.error("cmd", e))?;
        let args = f.map("args")?;
        let proofs = f.links("prf")?;
        let meta = f.optional_map("meta")?;
        let nonce = f.bytes("nonce")?;
        let expiration = f.nullable_timestamp("exp")?;
        let issued_at = f.optional_timestamp("iat")?;
        let cause = f.optional_link("cause")?;
        f.finish()?;
        Ok(InvocationPayload {
            issuer,
            subject,
            audience,
            command,
            args,
            proofs,
            meta,
            nonce,
            expiration,
            issued_at,
            cause,
        })
    }
}

impl Payload for InvocationPayload {
    fn issuer(&self) -> &Did {
        &self.issuer
    }

    fn to_ipld(&self) -> Ipld {
        InvocationPayload::to_ipld(self)
    }
}

impl sealed::Sealed for InvocationPayload {
    const KIND: Kind = Kind::Invocation;
    const WRONG_KIND: &'static str =
        "expected an invocation (ucan/inv@1.0.0) but found a delegation";

    fn from_fields(fields: Fields) -> Result<Self, Error> {
        InvocationPayload::read_fields(fields)
    }
}

/// A signed UCAN 1.0 invocation.
///
/// Decoding is strict and never panics, as for [`Delegation`]; it does not check the signature
/// ([`InvocationToken::verify_signature`] and the [`Validator`](crate::Validator) do).
pub type InvocationToken = Signed<InvocationPayload>;

impl Signed<InvocationPayload> {
    /// Starts building an invocation of `command` on `subject`, valid until `expiration`
    /// (Unix seconds; the node requires one for replay protection).
    pub fn builder(subject: Did, command: Command, expiration: Option<u64>) -> InvocationBuilder {
        InvocationBuilder {
            subject,
            command,
            expiration,
            audience: None,
            args: BTreeMap::new(),
            proofs: Vec::new(),
            meta: None,
            nonce: None,
            issued_at: None,
            cause: None,
        }
    }

    /// `sub`.
    pub fn subject(&self) -> &Did {
        &self.payload().subject
    }

    /// `aud`.
    pub fn audience(&self) -> Option<&Did> {
        self.payload().audience.as_ref()
    }

    /// `cmd`.
    pub fn command(&self) -> &Command {
        &self.payload().command
    }

    /// `args`.
    pub fn args(&self) -> &BTreeMap<String, Ipld> {
        &self.payload().args
    }

    /// `prf`, root first.
    pub fn proofs(&self) -> &[Cid] {
        &self.payload().proofs
    }

    /// `exp`.
    pub fn expiration(&self) -> Option<u64> {
        self.payload().expiration
    }
}

/// Builds and signs an [`InvocationToken`]; see [`InvocationToken::builder`].
#[derive(Clone, Debug)]
pub struct InvocationBuilder {
    subject: Did,
    command: Command,
    expiration: Option<u64>,
    audience: Option<Did>,
    args: BTreeMap<String, Ipld>,
    proofs: Vec<Cid>,
    meta: Option<BTreeMap<String, Ipld>>,
    nonce: Option<Vec<u8>>,
    issued_at: Option<u64>,
    cause: Option<Cid>,
}

impl InvocationBuilder {
    /// Sets the intended executor (`aud`).
    pub fn audience(mut self, audience: Did) -> Self {
        self.audience = Some(audience);
        self
    }

    /// Sets one argument.
    pub fn arg(mut self, key: impl Into<String>, value: Ipld) -> Self {
        self.args.insert(key.into(), value);
        self
    }

    /// Replaces all arguments.
    pub fn args(mut self, args: BTreeMap<String, Ipld>) -> Self {
        self.args = args;
        self
    }

    /// Appends a proof; call it from the root delegation to the leaf.
    pub fn proof(mut self, delegation: &Delegation) -> Self {
        self.proofs.push(*delegation.cid());
        self
    }

    /// Replaces the proofs (CIDs, root first).
    pub fn proofs(mut self, proofs: Vec<Cid>) -> Self {
        self.proofs = proofs;
        self
    }

    /// Adds a metadata entry.
    pub fn meta(mut self, key: impl Into<String>, value: Ipld) -> Self {
        self.meta
            .get_or_insert_with(BTreeMap::new)
            .insert(key.into(), value);
        self
    }

    /// Sets the nonce (default: 12 random bytes).
    pub fn nonce(mut self, nonce: Vec<u8>) -> Self {
        self.nonce = Some(nonce);
        self
    }

    /// Sets the issued-at time (Unix seconds).
    pub fn issued_at(mut self, iat: u64) -> Self {
        self.issued_at = Some(iat);
        self
    }

    /// Sets the cause (a receipt CID).
    pub fn cause(mut self, cause: Cid) -> Self {
        self.cause = Some(cause);
        self
    }

    /// Signs the invocation with the invoker's key.
    pub fn sign(self, invoker: &Keypair) -> Result<InvocationToken, Error> {
        for (name, t) in [("iat", self.issued_at), ("exp", self.expiration)] {
            if t.is_some_and(|t| t > MAX_SAFE_INTEGER) {
                return Err(Error::malformed(
                    None,
                    format!("`{name}` must be at most 2^53-1"),
                ));
            }
        }
        let nonce = match self.nonce {
            Some(n) => n,
            None => random_bytes::<12>()?.to_vec(),
        };
        let payload = InvocationPayload {
            issuer: invoker.did().clone(),
            subject: self.subject,
            audience: self.audience,
            command: self.command,
            args: self.args,
            proofs: self.proofs,
            meta: self.meta,
            nonce,
            expiration: self.expiration,
            issued_at: self.issued_at,
            cause: self.cause,
        };
        Signed::sign(invoker, &payload)
    }
}

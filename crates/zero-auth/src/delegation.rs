//! UCAN 1.0 delegations.

use std::collections::BTreeMap;

use ipld_core::ipld::Ipld;

use crate::command::Command;
use crate::did::Did;
use crate::envelope::{Fields, Kind, MAX_SAFE_INTEGER, Payload, Signed, sealed};
use crate::error::Error;
use crate::keys::{Keypair, random_bytes};
use crate::policy::Policy;

/// The payload of a delegation (`ucan/dlg@1.0.0`).
#[derive(Clone, Debug, PartialEq)]
pub struct DelegationPayload {
    /// `iss`: the principal delegating (and signing).
    pub issuer: Did,
    /// `aud`: the principal receiving the capability.
    pub audience: Did,
    /// `sub`: the principal the capability is about; `None` (`null`) is a powerline, which
    /// re-delegates whatever the issuer holds for any subject.
    pub subject: Option<Did>,
    /// `cmd`: the command delegated, with every command under it.
    pub command: Command,
    /// `pol`: constraints on the eventual invocation's arguments.
    pub policy: Policy,
    /// `nonce`: random bytes making the token unique.
    pub nonce: Vec<u8>,
    /// `meta`: signed, non-authoritative metadata.
    pub meta: Option<BTreeMap<String, Ipld>>,
    /// `nbf`: not valid before this Unix time.
    pub not_before: Option<u64>,
    /// `exp`: not valid after this Unix time; `None` (`null`) never expires.
    pub expiration: Option<u64>,
}

impl DelegationPayload {
    /// The payload as an IPLD map (its wire form).
    pub fn to_ipld(&self) -> Ipld {
        let mut m = BTreeMap::new();
        m.insert("iss".into(), Ipld::String(self.issuer.to_string()));
        m.insert("aud".into(), Ipld::String(self.audience.to_string()));
        m.insert(
            "sub".into(),
            self.subject
                .as_ref()
                .map_or(Ipld::Null, |s| Ipld::String(s.to_string())),
        );
        m.insert("cmd".into(), Ipld::String(self.command.to_string()));
        m.insert("pol".into(), self.policy.to_ipld());
        m.insert("nonce".into(), Ipld::Bytes(self.nonce.clone()));
        if let Some(meta) = &self.meta {
            m.insert("meta".into(), Ipld::Map(meta.clone()));
        }
        if let Some(nbf) = self.not_before {
            m.insert("nbf".into(), Ipld::Integer(i128::from(nbf)));
        }
        m.insert(
            "exp".into(),
            self.expiration
                .map_or(Ipld::Null, |e| Ipld::Integer(i128::from(e))),
        );
        Ipld::Map(m)
    }

    fn read_fields(mut f: Fields) -> Result<Self, Error> {
        let issuer = f.did("iss")?;
        let audience = f.did("aud")?;
        let subject = f.nullable_did("sub")?;
        let command_text = f.string("cmd")?;
        let command = Command::parse(&command_text).map_err(|e| f.error("cmd", e))?;
        let policy_ipld = f.required("pol")?;
        let policy = Policy::from_ipld(&policy_ipld).map_err(|e| f.error("pol", e))?;
        let nonce = f.bytes("nonce")?;
        let meta = f.optional_map("meta")?;
        let not_before = f.optional_timestamp("nbf")?;
        let expiration = f.nullable_timestamp("exp")?;
        f.finish()?;
        Ok(DelegationPayload {
            issuer,
            audience,
            subject,
            command,
            policy,
            nonce,
            meta,
            not_before,
            expiration,
        })
    }
}

impl Payload for DelegationPayload {
    fn issuer(&self) -> &Did {
        &self.issuer
    }

    fn to_ipld(&self) -> Ipld {
        DelegationPayload::to_ipld(self)
    }
}

impl sealed::Sealed for DelegationPayload {
    const KIND: Kind = Kind::Delegation;
    const WRONG_KIND: &'static str =
        "expected a delegation (ucan/dlg@1.0.0) but found an invocation";

    fn from_fields(fields: Fields) -> Result<Self, Error> {
        DelegationPayload::read_fields(fields)
    }
}

/// A signed UCAN 1.0 delegation.
///
/// Decoding ([`Delegation::decode`]) is strict: the envelope must be canonical DAG-CBOR with
/// the Ed25519 varsig header, every required field present with the right type, no unknown
/// field, a valid command and policy. It never panics. Decoding does **not** check the
/// signature; [`Delegation::verify_signature`] and the [`Validator`](crate::Validator) do.
pub type Delegation = Signed<DelegationPayload>;

impl Signed<DelegationPayload> {
    /// Starts building a delegation to `audience` for `command`, valid until `expiration`
    /// (Unix seconds; `None` never expires, use with care).
    pub fn builder(audience: Did, command: Command, expiration: Option<u64>) -> DelegationBuilder {
        DelegationBuilder {
            audience,
            command,
            expiration,
            subject: SubjectChoice::Issuer,
            policy: Policy::empty(),
            nonce: None,
            meta: None,
            not_before: None,
        }
    }

    /// `aud`.
    pub fn audience(&self) -> &Did {
        &self.payload().audience
    }

    /// `sub` (`None` for a powerline).
    pub fn subject(&self) -> Option<&Did> {
        self.payload().subject.as_ref()
    }

    /// `cmd`.
    pub fn command(&self) -> &Command {
        &self.payload().command
    }

    /// `pol`.
    pub fn policy(&self) -> &Policy {
        &self.payload().policy
    }

    /// `nbf`.
    pub fn not_before(&self) -> Option<u64> {
        self.payload().not_before
    }

    /// `exp`.
    pub fn expiration(&self) -> Option<u64> {
        self.payload().expiration
    }
}

#[derive(Clone, Debug)]
enum SubjectChoice {
    Issuer,
    Explicit(Did),
    Powerline,
}

/// Builds and signs a [`Delegation`]; see [`Delegation::builder`].
#[derive(Clone, Debug)]
pub struct DelegationBuilder {
    audience: Did,
    command: Command,
    expiration: Option<u64>,
    subject: SubjectChoice,
    policy: Policy,
    nonce: Option<Vec<u8>>,
    meta: Option<BTreeMap<String, Ipld>>,
    not_before: Option<u64>,
}

impl DelegationBuilder {
    /// Sets the subject. By default the subject is the issuer (a root delegation); set it to
    /// the chain's subject when re-delegating.
    pub fn subject(mut self, subject: Did) -> Self {
        self.subject = SubjectChoice::Explicit(subject);
        self
    }

    /// Makes this a powerline (`sub: null`): it re-delegates whatever the issuer holds, for any
    /// subject. A powerline can never be the root of a chain.
    pub fn powerline(mut self) -> Self {
        self.subject = SubjectChoice::Powerline;
        self
    }

    /// Sets the policy (default: empty, which allows any arguments).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets the not-before time (Unix seconds).
    pub fn not_before(mut self, nbf: u64) -> Self {
        self.not_before = Some(nbf);
        self
    }

    /// Sets the nonce (default: 12 random bytes).
    pub fn nonce(mut self, nonce: Vec<u8>) -> Self {
        self.nonce = Some(nonce);
        self
    }

    /// Adds a metadata entry.
    pub fn meta(mut self, key: impl Into<String>, value: Ipld) -> Self {
        self.meta
            .get_or_insert_with(BTreeMap::new)
            .insert(key.into(), value);
        self
    }

    /// Signs the delegation with the issuer's key.
    pub fn sign(self, issuer: &Keypair) -> Result<Delegation, Error> {
        for (name, t) in [("nbf", self.not_before), ("exp", self.expiration)] {
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
        let subject = match self.subject {
            SubjectChoice::Issuer => Some(issuer.did().clone()),
            SubjectChoice::Explicit(did) => Some(did),
            SubjectChoice::Powerline => None,
        };
        let payload = DelegationPayload {
            issuer: issuer.did().clone(),
            audience: self.audience,
            subject,
            command: self.command,
            policy: self.policy,
            nonce,
            meta: self.meta,
            not_before: self.not_before,
            expiration: self.expiration,
        };
        Signed::sign(issuer, &payload)
    }
}

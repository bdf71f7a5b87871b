//! # zero-auth: identities and capabilities for zerocore
//!
//! zerocore has no ambient authority: a component, a tenant or an operator may do only what a
//! capability token grants. This crate holds everything needed to issue and check those tokens,
//! with no I/O beyond reading and writing key files:
//!
//! - [`Did`] and [`Keypair`]: `did:key` identities for Ed25519 keys, with key files kept private
//!   (mode `0600`, written atomically, refused when readable by group or others).
//! - [`Delegation`] and [`InvocationToken`]: UCAN 1.0 tokens (DAG-CBOR envelope, Ed25519 varsig,
//!   CIDv1 `bafyrei…` identifiers), with builders that sign and strict decoders that never
//!   panic and accept only the canonical encoding (decode then encode gives the same bytes).
//! - [`Policy`]: the UCAN policy language (selectors, comparisons, `like`, connectives and
//!   quantifiers), parsed from its IPLD wire form and evaluated against invocation arguments.
//! - [`Validator`]: checks an invocation against its proof chain (signatures, time bounds with a
//!   clock-skew allowance, principal and subject alignment, command attenuation, every policy,
//!   revocation, replay, and an optional required root such as the node's Admin DID), or checks
//!   a delegation chain alone and returns a [`Chain`] of effective capabilities that answers
//!   "may the holder run this command with these arguments" ([`Chain::allows`]).
//! - [`ScopedChain`]: the one capability checker every provider and the management API use: a
//!   validated chain with its holder's fixed arguments (tenant, component), one memoized
//!   [`ScopedChain::allows`] with directory coverage on `.path`, and the questions asked before
//!   an argument is known ([`ScopedChain::reachable`], [`ScopedChain::allows_every`]).
//! - [`verify_invocation_offline`]: the one-call check used by the `zero` CLI.
//! - [`component`]: the delegation chains embedded in a component's `ucan` custom section, one
//!   per capability (encoding, strict decoding, and [`component::verify_component_chains`],
//!   which checks each chain, its binding to the component's content hash and its tenant
//!   scope); [`ScopedChain::of_component`] allows a host call when one chain allows it.
//!
//! The node uses this crate in two places: to verify the delegation chain embedded in a
//! component's `ucan` custom section before it runs the component (the chain must lead back to
//! the Admin, and a policy binds it to the component's content hash, see
//! [`Error::HashMismatch`]), and to verify the UCAN invocations that callers sign for
//! management API calls (deploy, file and database administration, tenant creation).
//!
//! Every refusal is an [`Error`] whose variant says which check failed (named after the UCAN
//! conformance fixtures where one applies, see [`Error::name`]), which token it concerns (by
//! CID), and how to fix it.
//!
//! ## Example
//!
//! ```
//! use zero_auth::{Command, Delegation, InvocationToken, Keypair, Policy, Validator, ValidationOptions};
//! use ipld_core::ipld::Ipld;
//!
//! # fn main() -> Result<(), zero_auth::Error> {
//! let admin = Keypair::generate()?;
//! let alice = Keypair::generate()?;
//! let now = 1_750_000_000;
//!
//! // The Admin lets Alice read anything under /data.
//! let policy = Policy::from_ipld(&Ipld::List(vec![Ipld::List(vec![
//!     Ipld::String("like".into()),
//!     Ipld::String(".path".into()),
//!     Ipld::String("/data/*".into()),
//! ])]))?;
//! let grant = Delegation::builder(alice.did().clone(), Command::parse("/fs/read")?, Some(now + 3600))
//!     .policy(policy)
//!     .sign(&admin)?;
//!
//! // Alice invokes it.
//! let call = InvocationToken::builder(admin.did().clone(), Command::parse("/fs/read")?, Some(now + 60))
//!     .arg("path", Ipld::String("/data/report.csv".into()))
//!     .proof(&grant)
//!     .sign(&alice)?;
//!
//! let options = ValidationOptions { required_root: Some(admin.did().clone()), ..Default::default() };
//! let verified = Validator::new(&options).validate_invocation(&call, &[grant], now)?;
//! assert_eq!(verified.command.as_str(), "/fs/read");
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

mod command;
pub mod component;
mod delegation;
mod did;
mod envelope;
mod error;
mod invocation;
mod keys;
pub mod policy;
mod scope;
mod validate;

pub use command::Command;
pub use delegation::{Delegation, DelegationBuilder, DelegationPayload};
pub use did::Did;
pub use envelope::{
    DELEGATION_TAG, INVOCATION_TAG, Payload, Signed, Token, VARSIG_ED25519_DAG_CBOR, cid_of,
    decode_base64,
};
pub use error::{DidErrorKind, Error};
pub use invocation::{InvocationBuilder, InvocationPayload, InvocationToken};
pub use keys::Keypair;
pub use policy::Policy;
pub use scope::{Action, MEMO_ENTRIES, PATH_FIELD, ScopedChain};
pub use validate::{
    Authorizer, Capability, Chain, ChainExpectations, DEFAULT_CLOCK_SKEW,
    DEFAULT_MAX_INVOCATION_LIFETIME, REVOKE_COMMAND, ReplayCache, ReplayEntry, ReplayJournal,
    RevocationStore, ValidationOptions, Validator, VerifiedInvocation, VerifiedRevocation,
    authorize, authorize_paths, verify_invocation_offline,
};

/// Re-export of the CID type that names every token.
pub use ipld_core::cid::Cid;
/// Re-export of the IPLD data model used for arguments, metadata and policy literals.
pub use ipld_core::ipld::Ipld;

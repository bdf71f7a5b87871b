//! Capability tokens embedded in components.
//!
//! A zerocore component (a WebAssembly binary) carries its capability tokens in a custom
//! section named [`SECTION_NAME`] (`ucan`): one or several delegation chains (one per
//! capability, at most [`MAX_CHAINS`]), each root first and rooted at the node's Admin DID.
//! A section with one chain is the DAG-CBOR encoding of a list of byte strings, each the exact
//! envelope bytes of one [`Delegation`] ([`encode_section`], [`decode_section`]); a section
//! with several chains is a list of such lists ([`encode_chains`], [`decode_chains`], which
//! reads both forms). A host call is allowed when one of the chains allows it
//! ([`crate::ScopedChain::of_component`]).
//!
//! The chain is bound to the component's content hash (`sha256:<64 hex>`, computed with the
//! `ucan` section stripped) by a policy statement `["==", ".component", "sha256:…"]`
//! ([`binding_statement`]), and a tenant-scoped chain carries `["==", ".tenant", "NAME"]`
//! ([`tenant_statement`]). [`verify_component_chain`] checks all of this before the node runs
//! the component ([`verify_component_chains`] for every chain of a section, all for the same
//! tenant); afterwards every host call is checked with [`Chain::allows`], whose arguments
//! always include `tenant` and `component`.
//!
//! ```
//! use zero_auth::component::{binding_statement, decode_section, encode_section, tenant_statement, verify_component_chain};
//! use zero_auth::{Command, Delegation, Ipld, Keypair, Policy, ValidationOptions, Validator};
//!
//! # fn main() -> Result<(), zero_auth::Error> {
//! let admin = Keypair::generate()?;
//! let owner = Keypair::generate()?;
//! let now = 1_750_000_000;
//! let hash = format!("sha256:{}", "ab".repeat(32));
//!
//! let root = Delegation::builder(owner.did().clone(), Command::parse("/")?, Some(now + 3600))
//!     .policy(Policy::new(vec![tenant_statement("acme")]))
//!     .sign(&admin)?;
//! let leaf = Delegation::builder(owner.did().clone(), Command::parse("/fs/read")?, Some(now + 3600))
//!     .subject(admin.did().clone())
//!     .policy(Policy::new(vec![binding_statement(&hash)]))
//!     .sign(&owner)?;
//!
//! let section = encode_section(&[root, leaf])?;
//! let chain = decode_section(&section)?;
//! let options = ValidationOptions { required_root: Some(admin.did().clone()), ..Default::default() };
//! let verified = verify_component_chain(&Validator::new(&options), &chain, &hash, "acme", now)?;
//! let args = Ipld::Map([
//!     ("tenant".to_string(), Ipld::String("acme".into())),
//!     ("component".to_string(), Ipld::String(hash.clone())),
//! ].into());
//! verified.allows(&Command::parse("/fs/read")?, &args)?;
//! # Ok(())
//! # }
//! ```

use std::convert::Infallible;

use ipld_core::ipld::Ipld;
use serde_ipld_dagcbor::DecodeError;

use crate::delegation::Delegation;
use crate::error::Error;
use crate::policy::{Selector, Statement, render};
use crate::validate::{Chain, ChainExpectations, Validator};

/// The name of the custom section that carries a component's delegation chain.
pub const SECTION_NAME: &str = "ucan";

/// Largest accepted section payload, in bytes (64 KiB).
pub const MAX_SECTION_SIZE: usize = 64 * 1024;

/// Most delegations accepted in a component's chain.
pub const MAX_CHAIN_LENGTH: usize = 16;

/// Most chains (capabilities) accepted in one component's `ucan` section.
pub const MAX_CHAINS: usize = 16;

/// The argument (and policy selector field) holding the component's content hash.
const COMPONENT_FIELD: &str = "component";

/// The argument (and policy selector field) holding the tenant's name.
const TENANT_FIELD: &str = "tenant";

/// Encodes a delegation chain (root first) as the payload of the `ucan` custom section: the
/// DAG-CBOR encoding of a list of byte strings, each a delegation's exact envelope bytes
/// ([`Delegation::as_bytes`]).
///
/// The chain is encoded as given; [`decode_section`] refuses an empty chain, more than
/// [`MAX_CHAIN_LENGTH`] delegations, or a payload over [`MAX_SECTION_SIZE`] bytes. Fails
/// ([`Error::Malformed`]) only if the encoder cannot allocate the output.
pub fn encode_section(chain: &[Delegation]) -> Result<Vec<u8>, Error> {
    let items = chain
        .iter()
        .map(|d| Ipld::Bytes(d.as_bytes().to_vec()))
        .collect();
    serde_ipld_dagcbor::to_vec(&Ipld::List(items))
        .map_err(|e| section_malformed(format!("the chain cannot be encoded as DAG-CBOR: {e}")))
}

/// Encodes several delegation chains (one per capability, each root first) as the payload of
/// the `ucan` custom section: one chain is encoded exactly as [`encode_section`] encodes it
/// (so that a component with one capability reads as it always has), several as the DAG-CBOR
/// list of their [`encode_section`] lists.
///
/// [`decode_chains`] refuses no chain at all, more than [`MAX_CHAINS`] chains, an empty or
/// repeated chain, or a payload over [`MAX_SECTION_SIZE`] bytes. Fails ([`Error::Malformed`])
/// only if the encoder cannot allocate the output.
pub fn encode_chains(chains: &[Vec<Delegation>]) -> Result<Vec<u8>, Error> {
    if let [one] = chains {
        return encode_section(one);
    }
    let items = chains
        .iter()
        .map(|chain| {
            Ipld::List(
                chain
                    .iter()
                    .map(|d| Ipld::Bytes(d.as_bytes().to_vec()))
                    .collect(),
            )
        })
        .collect();
    serde_ipld_dagcbor::to_vec(&Ipld::List(items))
        .map_err(|e| section_malformed(format!("the chains cannot be encoded as DAG-CBOR: {e}")))
}

/// Decodes the payload of a component's `ucan` custom section that carries one delegation
/// chain, root first (the form [`encode_section`] writes).
///
/// Strict and panic-free: refuses a payload over [`MAX_SECTION_SIZE`] bytes, input that is not
/// a canonical DAG-CBOR list (indefinite lengths, non-minimal lengths, truncation and trailing
/// bytes are refused), items that are not byte strings, an empty chain and more than
/// [`MAX_CHAIN_LENGTH`] delegations ([`Error::Decode`] or [`Error::Malformed`] saying which).
/// Each item is decoded with [`Delegation::decode`]; its error is returned with the item's
/// position added. A section carrying several chains is refused with a message saying so
/// (read it with [`decode_chains`]). Signatures are not checked here;
/// [`verify_component_chain`] does.
pub fn decode_section(bytes: &[u8]) -> Result<Vec<Delegation>, Error> {
    let mut chains = decode_chains(bytes)?;
    match chains.pop() {
        Some(chain) if chains.is_empty() => Ok(chain),
        _ => Err(section_malformed(format!(
            "the section carries {} capability chains, not one; read it with `decode_chains`",
            chains.len() + 1
        ))),
    }
}

/// Decodes the payload of a component's `ucan` custom section into its delegation chains (one
/// per capability, each root first), in either form: a list of byte strings (one chain, as
/// [`encode_section`] writes it) or a list of such lists (several, as [`encode_chains`]
/// writes them).
///
/// Besides everything [`decode_section`] refuses for one chain (said of the chain by its
/// position), refuses a list mixing both forms, a list of one chain (not the canonical form:
/// decoding then encoding gives the same bytes), more than [`MAX_CHAINS`] chains, and a chain
/// that repeats another one ([`Error::Malformed`] saying which).
pub fn decode_chains(bytes: &[u8]) -> Result<Vec<Vec<Delegation>>, Error> {
    if bytes.len() > MAX_SECTION_SIZE {
        return Err(section_malformed(format!(
            "the section is {} bytes long, more than the {MAX_SECTION_SIZE} bytes (64 KiB) \
             allowed; embed shorter delegation chains",
            bytes.len()
        )));
    }
    // The DAG-CBOR decoder refuses indefinite lengths, non-minimal lengths, truncation,
    // trailing bytes and nesting beyond its depth limit; the section is small (checked above),
    // so decoding it whole before checking its shape is bounded.
    let value: Ipld = serde_ipld_dagcbor::from_slice(bytes).map_err(|e| cbor_error(&e))?;
    let Ipld::List(list) = value else {
        return Err(section_malformed(format!(
            "expected a list of delegations (byte strings), found {}",
            kind(&value)
        )));
    };
    if !matches!(list.first(), Some(Ipld::List(_))) {
        // One chain: a list of byte strings.
        return Ok(vec![decode_chain(list, None)?]);
    }
    if list.len() == 1 {
        return Err(section_malformed(
            "a list of one chain; a section with one chain holds it as the list of its \
             delegations (as `encode_chains` writes it)",
        ));
    }
    if list.len() > MAX_CHAINS {
        return Err(section_malformed(format!(
            "the section carries {} capability chains, more than the {MAX_CHAINS} allowed; \
             merge capabilities with the same command (an `or` policy)",
            list.len()
        )));
    }
    let mut chains: Vec<Vec<Delegation>> = Vec::with_capacity(list.len());
    for (index, item) in list.into_iter().enumerate() {
        let Ipld::List(items) = item else {
            return Err(section_malformed(format!(
                "item {index} of the list of chains is {}, expected a list of delegations \
                 (a section holds either one chain or a list of chains, not both)",
                kind(&item)
            )));
        };
        let chain = decode_chain(items, Some(index))?;
        let cids: Vec<&crate::Cid> = chain.iter().map(Delegation::cid).collect();
        if let Some(first) = chains
            .iter()
            .position(|c| c.iter().map(Delegation::cid).eq(cids.iter().copied()))
        {
            return Err(section_malformed(format!(
                "chain {index} repeats chain {first}; embed each capability once"
            )));
        }
        chains.push(chain);
    }
    Ok(chains)
}

/// Decodes one chain of a section (`index`: its position among several, `None` for a section
/// holding one chain), with today's checks and messages.
fn decode_chain(list: Vec<Ipld>, index: Option<usize>) -> Result<Vec<Delegation>, Error> {
    let at = |what: String| match index {
        Some(i) => format!("chain {i}: {what}"),
        None => what,
    };
    if list.is_empty() {
        return Err(section_malformed(at(
            "the delegation chain is empty; embed at least the root delegation from the Admin"
                .to_owned(),
        )));
    }
    if list.len() > MAX_CHAIN_LENGTH {
        return Err(section_malformed(at(format!(
            "the chain has {} delegations, more than the {MAX_CHAIN_LENGTH} allowed",
            list.len()
        ))));
    }
    let mut items = Vec::with_capacity(list.len());
    for (position, item) in list.into_iter().enumerate() {
        match item {
            Ipld::Bytes(b) => items.push(b),
            other => {
                return Err(section_malformed(at(format!(
                    "item {position} of the list is {}, expected a byte string (a delegation's \
                     envelope bytes)",
                    kind(&other)
                ))));
            }
        }
    }
    items
        .into_iter()
        .enumerate()
        .map(|(position, item)| {
            let place = at(format!("delegation {position}"));
            Delegation::decode(&item).map_err(|e| match e {
                Error::Decode { reason } => Error::Decode {
                    reason: format!("ucan section, {place}: {reason}"),
                },
                Error::Malformed { token, reason } => Error::Malformed {
                    token,
                    reason: format!("ucan section, {place}: {reason}"),
                },
                other => other,
            })
        })
        .collect()
}

/// The policy statement binding a token to a component's content hash:
/// `["==", ".component", hash]` (`hash` is `sha256:<64 hex>`).
pub fn binding_statement(hash: &str) -> Statement {
    Statement::Equal(
        Selector::field(COMPONENT_FIELD),
        Ipld::String(hash.to_owned()),
    )
}

/// The policy statement scoping a token to a tenant: `["==", ".tenant", tenant]`.
pub fn tenant_statement(tenant: &str) -> Statement {
    Statement::Equal(
        Selector::field(TENANT_FIELD),
        Ipld::String(tenant.to_owned()),
    )
}

/// Verifies the delegation chain embedded in a component (root first) at Unix time `now`, for
/// the component whose content hash is `expected_hash` deployed to `tenant`, and returns the
/// chain's effective capabilities (check each host call with [`Chain::allows`]).
///
/// Checks, in order:
/// - everything [`Validator::validate_chain`] checks (signatures, revocation, time bounds,
///   principal and subject alignment, the validator's required root), with the required root,
///   if set, also required as the chain's subject;
/// - the hash binding: at least one link's policy has a top-level statement
///   `["==", ".component", h]`, and every such statement has `h == expected_hash`; otherwise
///   [`Error::HashMismatch`] (with an empty `expected` when the token binds no hash at all);
/// - the tenant scope: every top-level statement `["==", ".tenant", t]` of every link has
///   `t == tenant`; otherwise [`Error::MatchError`] naming the link, without revealing the
///   other tenant's name.
///
/// A statement counts as being about `component` (or `tenant`) when its selector selects
/// exactly that argument, whatever its spelling (`.component`, `.component?`,
/// `.["component"]`).
pub fn verify_component_chain(
    validator: &Validator,
    chain: &[Delegation],
    expected_hash: &str,
    tenant: &str,
    now: u64,
) -> Result<Chain, Error> {
    let expect = ChainExpectations {
        subject: validator.options().required_root.clone(),
        audience: None,
    };
    let verified = validator.validate_chain(chain, &expect, now)?;

    let expected_value = Ipld::String(expected_hash.to_owned());
    let mut bound = false;
    for d in chain {
        for value in top_level_equals(d, COMPONENT_FIELD) {
            if *value != expected_value {
                let found = match value {
                    Ipld::String(h) => h.clone(),
                    other => render(other, 200),
                };
                return Err(Error::hash_mismatch(found, expected_hash));
            }
            bound = true;
        }
    }
    if !bound {
        return Err(Error::unbound_content(expected_hash));
    }

    let tenant_value = Ipld::String(tenant.to_owned());
    for d in chain {
        if let Some(selector) = other_equal_selector(d, TENANT_FIELD, &tenant_value) {
            return Err(Error::MatchError {
                token: (*d.cid()).into(),
                statement: format!("[\"==\", \"{selector}\", …]"),
                reason: format!(
                    "the token is scoped to a different tenant than `{tenant}`; deploy the \
                     component to the tenant it was signed for, or sign it for `{tenant}`"
                ),
            });
        }
    }
    Ok(verified)
}

/// Why one chain of a component's section was refused by [`verify_component_chains`]: which
/// chain (by position, with the command it grants) and the check that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRefusal {
    /// The refused chain's position in the section (0 for the first).
    pub index: usize,
    /// How many chains the section carries.
    pub count: usize,
    /// The command the refused chain's last delegation grants (empty for an empty chain).
    pub command: String,
    /// The failed check.
    pub error: Box<Error>,
}

impl std::fmt::Display for ChainRefusal {
    /// The error alone when the section carries one chain (as it always read), otherwise
    /// prefixed with the chain's position and command.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.count <= 1 {
            write!(f, "{}", self.error)
        } else {
            write!(
                f,
                "capability {} of {} (`{}`): {}",
                self.index + 1,
                self.count,
                self.command,
                self.error
            )
        }
    }
}

impl std::error::Error for ChainRefusal {}

/// Verifies every chain of a component's section (as [`decode_chains`] returns them) with
/// [`verify_component_chain`], all for the same `tenant` and content hash, and returns their
/// capabilities in order. Refuses no chain, more than [`MAX_CHAINS`] chains and the first
/// chain that fails a check, saying which ([`ChainRefusal`]): a chain signed for another
/// tenant, one bound to another hash, one with a revoked or expired delegation refuses the
/// whole component.
pub fn verify_component_chains(
    validator: &Validator,
    chains: &[Vec<Delegation>],
    expected_hash: &str,
    tenant: &str,
    now: u64,
) -> Result<Vec<Chain>, ChainRefusal> {
    let count = chains.len();
    let refusal = |index: usize, command: String, error: Error| ChainRefusal {
        index,
        count,
        command,
        error: Box::new(error),
    };
    if chains.is_empty() || count > MAX_CHAINS {
        return Err(refusal(
            0,
            String::new(),
            section_malformed(format!(
                "the section carries {count} capability chains; embed from 1 to {MAX_CHAINS}"
            )),
        ));
    }
    chains
        .iter()
        .enumerate()
        .map(|(index, chain)| {
            verify_component_chain(validator, chain, expected_hash, tenant, now).map_err(|e| {
                let command = chain
                    .last()
                    .map(|d| d.command().to_string())
                    .unwrap_or_default();
                refusal(index, command, e)
            })
        })
        .collect()
}

/// The values of the top-level `==` statements of `d`'s policy whose selector selects the
/// argument `field`.
fn top_level_equals<'d>(d: &'d Delegation, field: &'d str) -> impl Iterator<Item = &'d Ipld> {
    d.policy().statements().iter().filter_map(move |s| match s {
        Statement::Equal(sel, value) if selects_field(sel, field) => Some(value),
        _ => None,
    })
}

/// The selector of the first top-level `==` statement of `d`'s policy that selects the
/// argument `field` and compares it with something other than `allowed`.
fn other_equal_selector<'d>(
    d: &'d Delegation,
    field: &str,
    allowed: &Ipld,
) -> Option<&'d Selector> {
    d.policy().statements().iter().find_map(|s| match s {
        Statement::Equal(sel, value) if selects_field(sel, field) && value != allowed => Some(sel),
        _ => None,
    })
}

/// Whether `selector` selects exactly the argument `field` of an argument map (`.field`,
/// `.field?`, `.["field"]`…), tested on a probe map so that every spelling is recognized.
fn selects_field(selector: &Selector, field: &str) -> bool {
    const PROBE: i128 = 0x5eed_c0de;
    let args = Ipld::Map(
        [
            (field.to_owned(), Ipld::Integer(PROBE)),
            (format!("{field}\u{0}other"), Ipld::Integer(PROBE + 1)),
        ]
        .into(),
    );
    matches!(selector.select(&args).as_deref(), Ok(Ipld::Integer(PROBE)))
}

fn section_malformed(reason: impl Into<String>) -> Error {
    Error::malformed(None, format!("ucan section: {}", reason.into()))
}

/// Why the DAG-CBOR decoder refused the section, in words.
fn cbor_error(e: &DecodeError<Infallible>) -> Error {
    let reason = match e {
        DecodeError::Eof { .. } | DecodeError::RequireLength { .. } => {
            "not valid DAG-CBOR: the input ends early".to_string()
        }
        DecodeError::IndefiniteSize => {
            "not canonical DAG-CBOR: an indefinite-length item (DAG-CBOR needs definite lengths)"
                .to_string()
        }
        DecodeError::NonMinimal { name, .. } => {
            format!("not canonical DAG-CBOR: the length of the {name} is not minimally encoded")
        }
        DecodeError::TrailingData => "unexpected bytes after the list of delegations".to_string(),
        other => format!("not valid DAG-CBOR: {other}"),
    };
    Error::Decode {
        reason: format!("ucan section: {reason}"),
    }
}

/// What a decoded value is, for messages.
fn kind(v: &Ipld) -> &'static str {
    match v {
        Ipld::Null | Ipld::Bool(_) => "a simple value",
        Ipld::Integer(_) => "an integer",
        Ipld::Float(_) => "a float",
        Ipld::String(_) => "a text string",
        Ipld::Bytes(_) => "a byte string",
        Ipld::List(_) => "a list",
        Ipld::Map(_) => "a map",
        Ipld::Link(_) => "a tag (a CID)",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use proptest::prelude::*;

    use super::*;
    use crate::command::Command;
    use crate::did::Did;
    use crate::keys::Keypair;
    use crate::policy::Policy;
    use crate::validate::ValidationOptions;

    const NOW: u64 = 1_750_000_000;

    fn hash(byte: &str) -> String {
        format!("sha256:{}", byte.repeat(32))
    }

    struct World {
        admin: Keypair,
        owner: Keypair,
    }

    fn world() -> World {
        World {
            admin: Keypair::generate().unwrap(),
            owner: Keypair::generate().unwrap(),
        }
    }

    fn options(root: &Did) -> ValidationOptions {
        ValidationOptions {
            required_root: Some(root.clone()),
            ..Default::default()
        }
    }

    /// admin → owner (cmd "/", tenant policy), owner → owner (leaf: `cmd`, `leaf_policy`).
    fn chain_with(
        w: &World,
        tenant: &str,
        cmd: &str,
        leaf_policy: Vec<Statement>,
        exp: u64,
    ) -> Vec<Delegation> {
        let root = Delegation::builder(
            w.owner.did().clone(),
            Command::parse("/").unwrap(),
            Some(exp),
        )
        .policy(Policy::new(vec![tenant_statement(tenant)]))
        .sign(&w.admin)
        .unwrap();
        let leaf = Delegation::builder(
            w.owner.did().clone(),
            Command::parse(cmd).unwrap(),
            Some(exp),
        )
        .subject(w.admin.did().clone())
        .policy(Policy::new(leaf_policy))
        .sign(&w.owner)
        .unwrap();
        vec![root, leaf]
    }

    fn bound_chain(w: &World, tenant: &str, h: &str) -> Vec<Delegation> {
        chain_with(
            w,
            tenant,
            "/fs/read",
            vec![binding_statement(h)],
            NOW + 3600,
        )
    }

    fn verify(w: &World, chain: &[Delegation], h: &str, tenant: &str) -> Result<Chain, Error> {
        let opts = options(w.admin.did());
        verify_component_chain(&Validator::new(&opts), chain, h, tenant, NOW)
    }

    fn args(tenant: &str, component: &str, path: &str) -> Ipld {
        Ipld::Map(BTreeMap::from([
            ("tenant".to_string(), Ipld::String(tenant.into())),
            ("component".to_string(), Ipld::String(component.into())),
            ("path".to_string(), Ipld::String(path.into())),
        ]))
    }

    fn cids(chain: &[Delegation]) -> Vec<crate::Cid> {
        chain.iter().map(|d| *d.cid()).collect()
    }

    #[test]
    fn a_valid_chain_passes_and_allows_host_calls() {
        let w = world();
        let h = hash("ab");
        let chain = bound_chain(&w, "acme", &h);
        let verified = verify(&w, &chain, &h, "acme").unwrap();
        assert_eq!(verified.root(), w.admin.did());
        assert_eq!(verified.holder(), w.owner.did());
        let read = Command::parse("/fs/read").unwrap();
        verified
            .allows(&read, &args("acme", &h, "/data/x"))
            .unwrap();
        // The runtime check still enforces tenant, component and command.
        let err = verified
            .allows(&read, &args("other", &h, "/data/x"))
            .unwrap_err();
        assert_eq!(err.name(), "MatchError");
        let err = verified
            .allows(&read, &args("acme", &hash("cd"), "/x"))
            .unwrap_err();
        assert_eq!(err.name(), "MatchError");
        let write = Command::parse("/fs/write").unwrap();
        let err = verified
            .allows(&write, &args("acme", &h, "/x"))
            .unwrap_err();
        assert_eq!(err.name(), "InvalidClaim");
    }

    #[test]
    fn statements_have_the_wire_form() {
        let h = hash("ab");
        assert_eq!(
            binding_statement(&h).to_ipld(),
            Ipld::List(vec![
                Ipld::String("==".into()),
                Ipld::String(".component".into()),
                Ipld::String(h.clone()),
            ])
        );
        assert_eq!(
            tenant_statement("acme"),
            Statement::from_ipld(&Ipld::List(vec![
                Ipld::String("==".into()),
                Ipld::String(".tenant".into()),
                Ipld::String("acme".into()),
            ]))
            .unwrap()
        );
        assert_eq!(
            binding_statement(&h),
            Statement::from_ipld(&binding_statement(&h).to_ipld()).unwrap()
        );
        assert!(selects_field(
            &Selector::parse(".component").unwrap(),
            "component"
        ));
        assert!(selects_field(
            &Selector::parse(".component?").unwrap(),
            "component"
        ));
        assert!(selects_field(
            &Selector::parse(".[\"component\"]").unwrap(),
            "component"
        ));
        assert!(!selects_field(&Selector::parse(".").unwrap(), "component"));
        assert!(!selects_field(
            &Selector::parse(".tenant").unwrap(),
            "component"
        ));
        assert!(!selects_field(
            &Selector::parse(".component.x").unwrap(),
            "component"
        ));
    }

    #[test]
    fn a_changed_component_is_a_hash_mismatch() {
        let w = world();
        let signed = hash("ab");
        let actual = hash("cd");
        let chain = bound_chain(&w, "acme", &signed);
        let err = verify(&w, &chain, &actual, "acme").unwrap_err();
        assert_eq!(
            err,
            Error::HashMismatch {
                expected: signed.clone(),
                found: actual.clone()
            }
        );
        let text = err.to_string();
        assert!(text.contains(&signed) && text.contains(&actual), "{text}");
        assert!(
            text.contains(
                "the component was changed after signing, or the token was copied from another \
                 component"
            ),
            "{text}"
        );
    }

    #[test]
    fn one_wrong_binding_among_right_ones_is_a_mismatch() {
        let w = world();
        let h = hash("ab");
        let chain = chain_with(
            &w,
            "acme",
            "/",
            vec![binding_statement(&h), binding_statement(&hash("ef"))],
            NOW + 3600,
        );
        let err = verify(&w, &chain, &h, "acme").unwrap_err();
        assert_eq!(err.name(), "HashMismatch");
    }

    #[test]
    fn an_unbound_token_is_a_hash_mismatch() {
        let w = world();
        let h = hash("ab");
        // A binding nested in `and` is not a top-level binding.
        let nested = Statement::And(vec![binding_statement(&h)]);
        for policy in [vec![], vec![nested]] {
            let chain = chain_with(&w, "acme", "/", policy, NOW + 3600);
            let err = verify(&w, &chain, &h, "acme").unwrap_err();
            assert_eq!(err.name(), "HashMismatch");
            let text = err.to_string();
            assert!(
                text.contains(
                    "the token is not bound to a component hash; sign the component with \
                     `zero sign`"
                ),
                "{text}"
            );
        }
    }

    #[test]
    fn a_token_for_another_tenant_is_refused_without_naming_it() {
        let w = world();
        let h = hash("ab");
        let chain = bound_chain(&w, "other", &h);
        let err = verify(&w, &chain, &h, "acme").unwrap_err();
        assert_eq!(err.name(), "MatchError");
        assert_eq!(err.token(), Some(chain[0].cid()));
        let text = err.to_string();
        assert!(!text.contains("other"), "{text}");
        assert!(
            text.contains("the token is scoped to a different tenant than `acme`"),
            "{text}"
        );
        assert!(!format!("{err:?}").contains("other"));
        // Also in the leaf.
        let chain = chain_with(
            &w,
            "acme",
            "/",
            vec![binding_statement(&h), tenant_statement("other")],
            NOW + 3600,
        );
        let err = verify(&w, &chain, &h, "acme").unwrap_err();
        assert_eq!(err.token(), Some(chain[1].cid()));
        assert!(!err.to_string().contains("other"));
    }

    #[test]
    fn expired_wrong_root_and_revoked_are_refused() {
        let w = world();
        let h = hash("ab");
        let expired = chain_with(&w, "acme", "/", vec![binding_statement(&h)], NOW - 3600);
        assert_eq!(
            verify(&w, &expired, &h, "acme").unwrap_err().name(),
            "Expired"
        );

        let chain = bound_chain(&w, "acme", &h);
        let stranger = Keypair::generate().unwrap();
        let opts = options(stranger.did());
        let err =
            verify_component_chain(&Validator::new(&opts), &chain, &h, "acme", NOW).unwrap_err();
        assert_eq!(err.name(), "UntrustedRoot");

        let revoked: HashSet<crate::Cid> = HashSet::from([*chain[0].cid()]);
        let opts = options(w.admin.did());
        let validator = Validator::new(&opts).with_revocations(&revoked);
        let err = verify_component_chain(&validator, &chain, &h, "acme", NOW).unwrap_err();
        assert_eq!(
            err,
            Error::Revoked {
                token: (*chain[0].cid()).into()
            }
        );
    }

    #[test]
    fn section_round_trips() {
        let w = world();
        let chain = bound_chain(&w, "acme", &hash("ab"));
        let section = encode_section(&chain).unwrap();
        assert_eq!(section.first(), Some(&0x82));
        // It is DAG-CBOR: a list of byte strings.
        let ipld: Ipld = serde_ipld_dagcbor::from_slice(&section).unwrap();
        let expected = Ipld::List(
            chain
                .iter()
                .map(|d| Ipld::Bytes(d.as_bytes().to_vec()))
                .collect(),
        );
        assert_eq!(ipld, expected);
        assert_eq!(serde_ipld_dagcbor::to_vec(&expected).unwrap(), section);
        let decoded = decode_section(&section).unwrap();
        assert_eq!(cids(&decoded), cids(&chain));
        assert_eq!(encode_section(&decoded).unwrap(), section);
        // A chain of the maximum length round-trips too.
        let long: Vec<Delegation> = (0..MAX_CHAIN_LENGTH)
            .map(|i| chain[i % 2].clone())
            .collect();
        assert_eq!(
            cids(&decode_section(&encode_section(&long).unwrap()).unwrap()),
            cids(&long)
        );
    }

    #[test]
    fn bad_sections_are_refused() {
        let w = world();
        let chain = bound_chain(&w, "acme", &hash("ab"));
        let good = encode_section(&chain).unwrap();
        let reason = |bytes: &[u8]| decode_section(bytes).unwrap_err().to_string();

        assert!(reason(&[]).contains("ends early"));
        assert!(reason(&[0x80]).contains("empty"));
        assert!(
            reason(&[0xa0]).contains("expected a list"),
            "{}",
            reason(&[0xa0])
        );
        assert!(reason(&[0x81, 0x01]).contains("item 0"));
        assert!(reason(&[0x81, 0x61, b'x']).contains("text string"));
        assert!(reason(&[0x9f, 0xff]).contains("indefinite"));
        assert!(reason(&[0x98, 0x01, 0x40]).contains("minimally"));
        assert!(reason(&[0x81, 0x5a, 0xff, 0xff, 0xff, 0xff]).contains("ends early"));
        assert!(reason(&[0x81, 0x40]).contains("delegation 0"));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(reason(&trailing).contains("after the list"));
        let mut too_many = vec![0x91];
        too_many.extend(std::iter::repeat_n(0x40, 17));
        assert!(reason(&too_many).contains("17 delegations"));
        let long: Vec<Delegation> = (0..=MAX_CHAIN_LENGTH)
            .map(|i| chain[i % 2].clone())
            .collect();
        assert!(reason(&encode_section(&long).unwrap()).contains("more than the 16"));
        let oversized = vec![0u8; MAX_SECTION_SIZE + 1];
        assert!(reason(&oversized).contains("64 KiB"));
        // Deep nesting stops at the decoder's depth limit instead of the stack's end.
        let mut deep = vec![0x81; 20_000];
        deep.push(0x40);
        assert!(reason(&deep).contains("DAG-CBOR"), "{}", reason(&deep));
        // A CID where a delegation belongs.
        let mut cid = vec![0x81, 0xd8, 0x2a, 0x58, 0x25, 0x00];
        cid.extend_from_slice(&[0x01, 0x71, 0x12, 0x20]);
        cid.extend_from_slice(&[0u8; 32]);
        assert!(reason(&cid).contains("item 0"), "{}", reason(&cid));
        // Truncations never panic and always fail.
        for n in 0..good.len() {
            assert!(decode_section(&good[..n]).is_err());
        }
        for name in ["Decode", "Malformed"] {
            assert!(
                [&[][..], &[0x80], &[0x81, 0x40]]
                    .iter()
                    .any(|b| decode_section(b).unwrap_err().name() == name)
            );
        }
    }

    /// A second chain from the same root, granting `cmd` under `policy` plus the binding.
    fn second_chain(w: &World, tenant: &str, h: &str, cmd: &str) -> Vec<Delegation> {
        chain_with(w, tenant, cmd, vec![binding_statement(h)], NOW + 3600)
    }

    #[test]
    fn several_chains_round_trip_and_one_chain_keeps_the_old_form() {
        let w = world();
        let h = hash("ab");
        let fs = bound_chain(&w, "acme", &h);
        let db = second_chain(&w, "acme", &h, "/db");
        // One chain is written exactly as before, and read by both decoders.
        let one = encode_chains(std::slice::from_ref(&fs)).unwrap();
        assert_eq!(one, encode_section(&fs).unwrap());
        assert_eq!(cids(&decode_chains(&one).unwrap()[0]), cids(&fs));
        // Several: a list of lists.
        let two = encode_chains(&[fs.clone(), db.clone()]).unwrap();
        let ipld: Ipld = serde_ipld_dagcbor::from_slice(&two).unwrap();
        assert!(matches!(&ipld, Ipld::List(l) if l.len() == 2 && matches!(l[0], Ipld::List(_))));
        let decoded = decode_chains(&two).unwrap();
        assert_eq!(decoded.len(), 2);
        assert_eq!(cids(&decoded[0]), cids(&fs));
        assert_eq!(cids(&decoded[1]), cids(&db));
        assert_eq!(encode_chains(&decoded).unwrap(), two);
        // The one-chain decoder says the section holds several.
        let e = decode_section(&two).unwrap_err().to_string();
        assert!(e.contains("carries 2 capability chains"), "{e}");
        // Up to MAX_CHAINS distinct chains are accepted.
        let many: Vec<Vec<Delegation>> = (0..MAX_CHAINS)
            .map(|i| second_chain(&w, "acme", &h, &format!("/db/t{i}")))
            .collect();
        assert_eq!(
            decode_chains(&encode_chains(&many).unwrap()).unwrap().len(),
            MAX_CHAINS
        );
    }

    #[test]
    fn bad_lists_of_chains_are_refused() {
        let w = world();
        let h = hash("ab");
        let fs = bound_chain(&w, "acme", &h);
        let db = second_chain(&w, "acme", &h, "/db");
        let reason = |bytes: &[u8]| decode_chains(bytes).unwrap_err().to_string();
        // Too many chains: the bound, named.
        let many: Vec<Vec<Delegation>> = (0..=MAX_CHAINS)
            .map(|i| second_chain(&w, "acme", &h, &format!("/db/t{i}")))
            .collect();
        let e = reason(&encode_chains(&many).unwrap());
        assert!(
            e.contains("17 capability chains, more than the 16 allowed"),
            "{e}"
        );
        // A repeated chain.
        let e = reason(&encode_chains(&[fs.clone(), db.clone(), fs.clone()]).unwrap());
        assert!(e.contains("chain 2 repeats chain 0"), "{e}");
        // An empty chain among others.
        let e = reason(&encode_chains(&[fs.clone(), vec![]]).unwrap());
        assert!(e.contains("chain 1: the delegation chain is empty"), "{e}");
        // A chain too long among others.
        let long: Vec<Delegation> = (0..=MAX_CHAIN_LENGTH).map(|i| fs[i % 2].clone()).collect();
        let e = reason(&encode_chains(&[fs.clone(), long]).unwrap());
        assert!(e.contains("chain 1: the chain has 17 delegations"), "{e}");
        // A list of one chain is not the canonical form of one chain.
        let one = serde_ipld_dagcbor::to_vec(&Ipld::List(vec![Ipld::List(
            fs.iter()
                .map(|d| Ipld::Bytes(d.as_bytes().to_vec()))
                .collect(),
        )]))
        .unwrap();
        assert!(
            reason(&one).contains("a list of one chain"),
            "{}",
            reason(&one)
        );
        // Both forms mixed.
        let mixed = serde_ipld_dagcbor::to_vec(&Ipld::List(vec![
            Ipld::List(
                fs.iter()
                    .map(|d| Ipld::Bytes(d.as_bytes().to_vec()))
                    .collect(),
            ),
            Ipld::Bytes(db[0].as_bytes().to_vec()),
        ]))
        .unwrap();
        let e = reason(&mixed);
        assert!(
            e.contains("item 1 of the list of chains is a byte string"),
            "{e}"
        );
        // A bad delegation names its chain and position.
        let bad = serde_ipld_dagcbor::to_vec(&Ipld::List(vec![
            Ipld::List(
                fs.iter()
                    .map(|d| Ipld::Bytes(d.as_bytes().to_vec()))
                    .collect(),
            ),
            Ipld::List(vec![Ipld::Bytes(vec![1, 2, 3])]),
        ]))
        .unwrap();
        let e = reason(&bad);
        assert!(e.contains("chain 1: delegation 0"), "{e}");
    }

    fn verify_all(
        w: &World,
        chains: &[Vec<Delegation>],
        h: &str,
        revoked: &HashSet<crate::Cid>,
    ) -> Result<Vec<Chain>, ChainRefusal> {
        let opts = options(w.admin.did());
        let validator = Validator::new(&opts).with_revocations(revoked);
        verify_component_chains(&validator, chains, h, "acme", NOW)
    }

    #[test]
    fn every_chain_is_verified_and_a_bad_one_refuses_the_component_saying_which() {
        let w = world();
        let h = hash("ab");
        let fs = bound_chain(&w, "acme", &h);
        let db = second_chain(&w, "acme", &h, "/db");
        let none = HashSet::new();
        let ok = verify_all(&w, &[fs.clone(), db.clone()], &h, &none).unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[1].capabilities()[1].command.as_str(), "/db");

        // One chain for another tenant: refused, without naming the other tenant.
        let other = second_chain(&w, "other", &h, "/db");
        let e = verify_all(&w, &[fs.clone(), other], &h, &none).unwrap_err();
        assert_eq!((e.index, e.count, e.error.name()), (1, 2, "MatchError"));
        let text = e.to_string();
        assert!(text.starts_with("capability 2 of 2 (`/db`): "), "{text}");
        assert!(
            text.contains("scoped to a different tenant than `acme`"),
            "{text}"
        );
        assert!(!text.contains("other"), "{text}");

        // One chain bound to another component, or to none.
        let stolen = second_chain(&w, "acme", &hash("cd"), "/db");
        let e = verify_all(&w, &[stolen, fs.clone()], &h, &none).unwrap_err();
        assert_eq!((e.index, e.error.name()), (0, "HashMismatch"));
        let unbound = chain_with(&w, "acme", "/db", vec![], NOW + 3600);
        let e = verify_all(&w, &[fs.clone(), unbound], &h, &none).unwrap_err();
        assert_eq!((e.index, e.error.name()), (1, "HashMismatch"));
        assert!(
            e.to_string().contains("not bound to a component hash"),
            "{e}"
        );

        // One revoked delegation.
        let revoked = HashSet::from([*db[1].cid()]);
        let e = verify_all(&w, &[fs.clone(), db.clone()], &h, &revoked).unwrap_err();
        assert_eq!((e.index, e.error.name()), (1, "Revoked"));

        // One expired chain.
        let old = chain_with(&w, "acme", "/db", vec![binding_statement(&h)], NOW - 3600);
        let e = verify_all(&w, &[fs.clone(), old], &h, &none).unwrap_err();
        assert_eq!((e.index, e.error.name()), (1, "Expired"));

        // No chain, or too many.
        let e = verify_all(&w, &[], &h, &none).unwrap_err();
        assert!(e.to_string().contains("from 1 to 16"), "{e}");
        let many = vec![fs.clone(); MAX_CHAINS + 1];
        assert_eq!(
            verify_all(&w, &many, &h, &none).unwrap_err().error.name(),
            "Malformed"
        );

        // A single chain's refusal reads as it always has.
        let e = verify_all(&w, &[bound_chain(&w, "other", &h)], &h, &none).unwrap_err();
        assert_eq!(e.to_string(), e.error.to_string());
        assert_eq!(e.error.name(), "MatchError");
    }

    proptest! {
        #[test]
        fn decode_section_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_section(&bytes);
        }

        #[test]
        fn list_shaped_inputs_never_panic(
            items in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..20),
        ) {
            let bytes = serde_ipld_dagcbor::to_vec(&Ipld::List(
                items.iter().map(|i| Ipld::Bytes(i.clone())).collect(),
            ))
            .unwrap();
            prop_assert!(decode_section(&bytes).is_err());
        }
    }
}

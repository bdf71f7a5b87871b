//! Validation of invocations and delegation chains.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use ipld_core::cid::Cid;
use ipld_core::ipld::Ipld;

use crate::command::Command;
use crate::delegation::Delegation;
use crate::did::Did;
use crate::error::Error;
use crate::invocation::Invocation;
use crate::policy::Policy;

/// Default clock-skew allowance, in seconds, applied to `nbf` and `exp`.
pub const DEFAULT_CLOCK_SKEW: u64 = 60;

/// What a [`Validator`] requires beyond the UCAN rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationOptions {
    /// Seconds of clock difference tolerated on `nbf` (token accepted that much early) and
    /// `exp` (accepted that much late). Default [`DEFAULT_CLOCK_SKEW`].
    pub clock_skew: u64,
    /// When set, every chain must start at this issuer (for zerocore, the node's Admin DID);
    /// otherwise [`Error::UntrustedRoot`].
    pub required_root: Option<Did>,
    /// When set, an invocation must be addressed to this executor: its `aud`, or its `sub`
    /// when it has no `aud`; otherwise [`Error::InvalidAudience`].
    pub executor: Option<Did>,
}

impl Default for ValidationOptions {
    fn default() -> Self {
        ValidationOptions {
            clock_skew: DEFAULT_CLOCK_SKEW,
            required_root: None,
            executor: None,
        }
    }
}

/// A set of revoked token CIDs, supplied by the caller (for zerocore, the replicated
/// revocation list).
pub trait RevocationStore: Send + Sync {
    /// Whether the token with this CID has been revoked.
    fn is_revoked(&self, cid: &Cid) -> bool;
}

impl<S: std::hash::BuildHasher + Send + Sync> RevocationStore for HashSet<Cid, S> {
    fn is_revoked(&self, cid: &Cid) -> bool {
        self.contains(cid)
    }
}

impl RevocationStore for BTreeSet<Cid> {
    fn is_revoked(&self, cid: &Cid) -> bool {
        self.contains(cid)
    }
}

/// Remembers executed invocations so that none runs twice, in bounded memory.
///
/// Rules:
/// - An invocation must have an `exp`; one without is refused ([`Error::InvalidClaim`]), since
///   it would have to be remembered forever.
/// - An entry is kept until its deadline, `exp + clock_skew`; after that the validator refuses
///   the invocation as [`Error::Expired`] anyway, so the entry is dropped.
/// - At most `capacity` entries are kept. When the cache is full, the entry with the earliest
///   deadline is evicted and its deadline becomes the cache's *floor*: from then on any
///   invocation whose deadline is not later than the floor is refused as
///   [`Error::Replayed`], because the cache can no longer prove it was not seen. Memory stays
///   bounded and a replay is never accepted; under memory pressure only invocations that are
///   about to expire are refused.
///
/// The cache is internally synchronized and can be shared between threads.
#[derive(Debug)]
pub struct ReplayCache {
    capacity: usize,
    state: Mutex<ReplayState>,
}

#[derive(Debug, Default)]
struct ReplayState {
    deadlines: HashMap<Cid, u64>,
    by_deadline: BTreeSet<(u64, Cid)>,
    floor: Option<u64>,
}

impl ReplayCache {
    /// A cache holding at most `capacity` invocations (at least 1).
    pub fn new(capacity: usize) -> Self {
        ReplayCache {
            capacity: capacity.max(1),
            state: Mutex::new(ReplayState::default()),
        }
    }

    /// The number of invocations currently remembered.
    pub fn len(&self) -> usize {
        self.lock().deadlines.len()
    }

    /// Whether no invocation is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReplayState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records an invocation as executed at `now`, or refuses it if it was seen before (or
    /// cannot be proven unseen, see the type's rules).
    pub fn check_and_record(
        &self,
        invocation: &Cid,
        expiration: Option<u64>,
        now: u64,
        clock_skew: u64,
    ) -> Result<(), Error> {
        let Some(exp) = expiration else {
            return Err(Error::InvalidClaim {
                token: (*invocation).into(),
                reason: "the invocation has no expiration (`exp: null`), and replay protection \
                         needs one: sign it with `exp` a few minutes ahead"
                    .into(),
            });
        };
        let deadline = exp.saturating_add(clock_skew);
        let mut state = self.lock();
        // Forget invocations whose deadline has passed: they are refused as expired anyway.
        while let Some(&(d, cid)) = state.by_deadline.first() {
            if d >= now {
                break;
            }
            state.by_deadline.remove(&(d, cid));
            state.deadlines.remove(&cid);
        }
        if let Some(seen_until) = state.deadlines.get(invocation) {
            return Err(Error::Replayed {
                token: (*invocation).into(),
                detail: format!(
                    "this invocation was already executed (remembered until {seen_until}); \
                     invocations are single-use: sign a new one with a fresh nonce"
                ),
            });
        }
        let refuse_below_floor = |floor: u64| Error::Replayed {
            token: (*invocation).into(),
            detail: format!(
                "the replay cache is full and has forgotten invocations expiring up to {floor}, \
                 so it cannot prove this one (valid until {deadline}) was not already executed; \
                 sign it again with a later `exp`"
            ),
        };
        if let Some(floor) = state.floor.filter(|f| deadline <= *f) {
            return Err(refuse_below_floor(floor));
        }
        if state.deadlines.len() >= self.capacity {
            let earliest = state.by_deadline.first().copied();
            if let Some((d, cid)) = earliest {
                if deadline <= d {
                    // The newcomer would be the first evicted: refuse it instead.
                    return Err(refuse_below_floor(d));
                }
                state.by_deadline.remove(&(d, cid));
                state.deadlines.remove(&cid);
                state.floor = Some(state.floor.map_or(d, |f| f.max(d)));
            }
        }
        state.deadlines.insert(*invocation, deadline);
        state.by_deadline.insert((deadline, *invocation));
        Ok(())
    }
}

/// One link of a validated chain: what that delegation allows.
#[derive(Clone, Debug, PartialEq)]
pub struct Capability {
    /// The delegation's CID.
    pub delegation: Cid,
    /// Its issuer.
    pub issuer: Did,
    /// The command it delegates (with everything under it).
    pub command: Command,
    /// The policy the arguments must satisfy.
    pub policy: Policy,
}

/// A validated delegation chain: the effective capabilities of its final audience.
///
/// An action is allowed when its command is covered by every link's command and its
/// arguments satisfy every link's policy ([`Chain::allows`]). The chain was validated at one
/// time; it is valid between [`Chain::not_before`] and [`Chain::expiration`].
#[derive(Clone, Debug)]
pub struct Chain {
    subject: Did,
    root: Did,
    holder: Did,
    capabilities: Vec<Capability>,
    not_before: Option<u64>,
    expiration: Option<u64>,
}

impl Chain {
    fn from_links(links: &[&Delegation], subject: Did, holder: Did) -> Option<Self> {
        let root = links.first()?.issuer().clone();
        Some(Chain {
            subject,
            root,
            holder,
            capabilities: capabilities(links),
            not_before: links.iter().filter_map(|d| d.not_before()).max(),
            expiration: links.iter().filter_map(|d| d.expiration()).min(),
        })
    }

    /// The subject the chain is about.
    pub fn subject(&self) -> &Did {
        &self.subject
    }

    /// The issuer of the root delegation.
    pub fn root(&self) -> &Did {
        &self.root
    }

    /// The final audience: the principal holding the capability.
    pub fn holder(&self) -> &Did {
        &self.holder
    }

    /// The capabilities, root first.
    pub fn capabilities(&self) -> &[Capability] {
        &self.capabilities
    }

    /// The latest `nbf` of the chain.
    pub fn not_before(&self) -> Option<u64> {
        self.not_before
    }

    /// The earliest `exp` of the chain (`None`: never expires).
    pub fn expiration(&self) -> Option<u64> {
        self.expiration
    }

    /// Whether the holder may run `command` with `args`: [`Error::InvalidClaim`] when a link
    /// does not cover the command, [`Error::MatchError`] when a link's policy refuses the
    /// arguments.
    pub fn allows(&self, command: &Command, args: &Ipld) -> Result<(), Error> {
        authorize(&self.capabilities, command, args)
    }
}

fn capabilities(links: &[&Delegation]) -> Vec<Capability> {
    links
        .iter()
        .map(|d| Capability {
            delegation: *d.cid(),
            issuer: d.issuer().clone(),
            command: d.command().clone(),
            policy: d.policy().clone(),
        })
        .collect()
}

/// A rule deciding whether a chain's capabilities allow a command with arguments; see
/// [`Validator::validate_invocation_with`].
pub type Authorizer = dyn Fn(&[Capability], &Command, &Ipld) -> Result<(), Error> + Sync;

/// Whether `capabilities` (a chain's, root first) allow `command` with `args`: every link's
/// command must cover `command` ([`Error::InvalidClaim`] otherwise; commands are checked first
/// so that an escalation is reported as such), then every link's policy must accept `args`
/// ([`Error::MatchError`] otherwise). An empty list (the subject acting itself) allows everything.
pub fn authorize(capabilities: &[Capability], command: &Command, args: &Ipld) -> Result<(), Error> {
    authorize_in(capabilities, command, args, None)
}

/// [`authorize`] for resources that nest, with the top-level argument `field` (for files,
/// `path`) read as a path in a tree ([`Policy::check_hierarchical`]): a policy statement
/// `["==", ".path", D]` covers `D` and everything under it, `["!=", ".path", D]` excludes `D`
/// and everything under it, and `["like", ".path", G]` holds when the path or one of its
/// ancestor directories matches `G`. This is the one rule for directory coverage; callers do
/// not walk ancestors themselves.
pub fn authorize_paths(
    capabilities: &[Capability],
    command: &Command,
    args: &Ipld,
    field: &str,
) -> Result<(), Error> {
    authorize_in(capabilities, command, args, Some(field))
}

fn authorize_in(
    capabilities: &[Capability],
    command: &Command,
    args: &Ipld,
    tree: Option<&str>,
) -> Result<(), Error> {
    for cap in capabilities {
        if !cap.command.covers(command) {
            return Err(Error::InvalidClaim {
                token: cap.delegation.into(),
                reason: format!(
                    "command `{command}` is not covered by the delegated command `{}`; a \
                     delegation covers only its command and the commands under it: ask for a \
                     delegation of `{command}`",
                    cap.command
                ),
            });
        }
    }
    for cap in capabilities {
        let checked = match tree {
            Some(field) => cap.policy.check_hierarchical(args, field),
            None => cap.policy.check(args),
        };
        checked.map_err(|m| Error::MatchError {
            token: cap.delegation.into(),
            statement: m.statement,
            reason: m.reason,
        })?;
    }
    Ok(())
}

/// What a caller expects of a delegation chain validated alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainExpectations {
    /// The required final audience (holder); otherwise [`Error::InvalidAudience`].
    pub audience: Option<Did>,
    /// The required subject; otherwise [`Error::InvalidSubject`].
    pub subject: Option<Did>,
}

/// An invocation that passed every check.
#[derive(Clone, Debug)]
pub struct VerifiedInvocation {
    /// The invocation's CID.
    pub cid: Cid,
    /// The invoker.
    pub issuer: Did,
    /// The subject acted on.
    pub subject: Did,
    /// The intended executor, if named.
    pub audience: Option<Did>,
    /// The command.
    pub command: Command,
    /// The arguments (they satisfy every policy of the chain).
    pub args: BTreeMap<String, Ipld>,
    /// The proof CIDs, root first.
    pub proofs: Vec<Cid>,
    /// The issuer at the root of authority (the subject itself when there are no proofs).
    pub root_issuer: Did,
    /// The invocation's expiration.
    pub expiration: Option<u64>,
    /// The capabilities of the chain, root first (empty when the subject invokes directly).
    pub capabilities: Vec<Capability>,
}

impl VerifiedInvocation {
    /// Whether the invocation's chain also allows `command` with `args` (for endpoints whose
    /// one invocation performs several finer actions, such as the tables a SQL statement
    /// touches): the same check as [`Chain::allows`], on [`VerifiedInvocation::capabilities`].
    /// With no proofs (the subject invoking directly) everything is allowed.
    pub fn allows(&self, command: &Command, args: &Ipld) -> Result<(), Error> {
        authorize(&self.capabilities, command, args)
    }
}

/// Checks invocations and delegation chains.
///
/// Checks, in order: every proof is available, every signature, revocation, time bounds (with
/// the clock-skew allowance), principal alignment (each delegation's `aud` is the next's
/// `iss`, the last one's is the invoker), subject alignment (the root is issued by its
/// subject, which is not `null`; later delegations name the same subject or are powerlines
/// with `sub: null`; the invocation names it), the required root, the executor, command
/// attenuation (every delegation covers the invoked command), every policy on the arguments,
/// and finally replay (the invocation is recorded only when everything else passed).
#[derive(Clone, Copy)]
pub struct Validator<'a> {
    options: &'a ValidationOptions,
    revocations: Option<&'a dyn RevocationStore>,
    replay: Option<&'a ReplayCache>,
}

impl std::fmt::Debug for Validator<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("options", self.options)
            .field("revocations", &self.revocations.is_some())
            .field("replay", &self.replay)
            .finish()
    }
}

impl<'a> Validator<'a> {
    /// A validator with these options, no revocation store and no replay cache.
    pub fn new(options: &'a ValidationOptions) -> Self {
        Validator {
            options,
            revocations: None,
            replay: None,
        }
    }

    /// Checks every token against this revocation store.
    pub fn with_revocations(mut self, store: &'a dyn RevocationStore) -> Self {
        self.revocations = Some(store);
        self
    }

    /// Records validated invocations in this cache and refuses replays.
    pub fn with_replay_cache(mut self, cache: &'a ReplayCache) -> Self {
        self.replay = Some(cache);
        self
    }

    /// The options.
    pub fn options(&self) -> &ValidationOptions {
        self.options
    }

    /// Validates an invocation at Unix time `now`. `proofs` must hold every delegation named in
    /// the invocation's `prf` (in any order; extra ones are ignored).
    pub fn validate_invocation(
        &self,
        invocation: &Invocation,
        proofs: &[Delegation],
        now: u64,
    ) -> Result<VerifiedInvocation, Error> {
        self.validate_invocation_with(invocation, proofs, now, &authorize)
    }

    /// [`Validator::validate_invocation`] with its last step (checking the chain's commands and
    /// policies against the invocation's command and arguments) done by `authorize_fn` rather
    /// than by [`authorize`]. Endpoints whose resources nest use this to apply their own scoping
    /// rule on top of [`authorize`] (for files: a capability on a directory covers what is
    /// under it).
    pub fn validate_invocation_with(
        &self,
        invocation: &Invocation,
        proofs: &[Delegation],
        now: u64,
        authorize_fn: &Authorizer,
    ) -> Result<VerifiedInvocation, Error> {
        let inv_cid = *invocation.cid();
        let links = invocation
            .proofs()
            .iter()
            .map(|cid| {
                proofs
                    .iter()
                    .find(|d| d.cid() == cid)
                    .ok_or(Error::UnavailableProof {
                        token: inv_cid.into(),
                        proof: *cid,
                    })
            })
            .collect::<Result<Vec<&Delegation>, Error>>()?;

        invocation.verify_signature()?;
        self.check_links(&links, now)?;
        self.check_revoked(inv_cid)?;
        self.check_time(inv_cid, None, invocation.expiration(), now)?;

        let (root_issuer, root_cid) = match (links.first(), links.last()) {
            (Some(root), Some(leaf)) => {
                let (subject, holder) = align(&links)?;
                if holder != invocation.issuer() {
                    return Err(Error::InvalidAudience {
                        token: inv_cid.into(),
                        expected: format!("{holder} (audience of the last proof {})", leaf.cid()),
                        found: format!("{} (issuer of the invocation)", invocation.issuer()),
                    });
                }
                if subject != invocation.subject() {
                    return Err(Error::InvalidSubject {
                        token: inv_cid.into(),
                        expected: subject.to_string(),
                        found: invocation.subject().to_string(),
                    });
                }
                (root.issuer(), *root.cid())
            }
            _ => {
                if invocation.issuer() != invocation.subject() {
                    return Err(Error::InvalidClaim {
                        token: inv_cid.into(),
                        reason: format!(
                            "the invocation has no proofs, so only its subject {} may issue it, \
                             not {}; list the delegation chain in `prf`",
                            invocation.subject(),
                            invocation.issuer()
                        ),
                    });
                }
                (invocation.issuer(), inv_cid)
            }
        };
        self.check_root(root_issuer, root_cid)?;
        if let Some(executor) = &self.options.executor {
            let target = invocation.audience().unwrap_or(invocation.subject());
            if target != executor {
                return Err(Error::InvalidAudience {
                    token: inv_cid.into(),
                    expected: format!("{executor} (this executor)"),
                    found: target.to_string(),
                });
            }
        }
        let caps = capabilities(&links);
        let args = Ipld::Map(invocation.args().clone());
        authorize_fn(&caps, invocation.command(), &args)?;
        if let Some(cache) = self.replay {
            cache.check_and_record(
                &inv_cid,
                invocation.expiration(),
                now,
                self.options.clock_skew,
            )?;
        }
        Ok(VerifiedInvocation {
            cid: inv_cid,
            issuer: invocation.issuer().clone(),
            subject: invocation.subject().clone(),
            audience: invocation.audience().cloned(),
            command: invocation.command().clone(),
            args: invocation.args().clone(),
            proofs: invocation.proofs().to_vec(),
            root_issuer: root_issuer.clone(),
            expiration: invocation.expiration(),
            capabilities: caps,
        })
    }

    /// Validates a delegation chain alone (root first) at Unix time `now`, for tokens that
    /// travel without an invocation (such as the chain embedded in a component). Checks
    /// signatures, revocation, time bounds, principal and subject alignment, the required root
    /// and `expect`; returns the effective capabilities.
    pub fn validate_chain(
        &self,
        chain: &[Delegation],
        expect: &ChainExpectations,
        now: u64,
    ) -> Result<Chain, Error> {
        let links: Vec<&Delegation> = chain.iter().collect();
        let (Some(root), Some(leaf)) = (links.first(), links.last()) else {
            return Err(Error::malformed(
                None,
                "the delegation chain is empty; supply at least the root delegation",
            ));
        };
        self.check_links(&links, now)?;
        let (subject, holder) = align(&links)?;
        self.check_root(root.issuer(), *root.cid())?;
        if let Some(audience) = &expect.audience
            && holder != audience
        {
            return Err(Error::InvalidAudience {
                token: (*leaf.cid()).into(),
                expected: audience.to_string(),
                found: format!("{holder} (audience of the last delegation)"),
            });
        }
        if let Some(expected) = &expect.subject
            && subject != expected
        {
            return Err(Error::InvalidSubject {
                token: (*root.cid()).into(),
                expected: expected.to_string(),
                found: subject.to_string(),
            });
        }
        Chain::from_links(&links, subject.clone(), holder.clone())
            .ok_or_else(|| Error::malformed(None, "the delegation chain is empty"))
    }

    /// Signature, revocation and time bounds of every link.
    fn check_links(&self, links: &[&Delegation], now: u64) -> Result<(), Error> {
        for d in links {
            d.verify_signature()?;
        }
        for d in links {
            self.check_revoked(*d.cid())?;
        }
        for d in links {
            self.check_time(*d.cid(), d.not_before(), d.expiration(), now)?;
        }
        Ok(())
    }

    fn check_revoked(&self, token: Cid) -> Result<(), Error> {
        match self.revocations {
            Some(store) if store.is_revoked(&token) => Err(Error::Revoked {
                token: token.into(),
            }),
            _ => Ok(()),
        }
    }

    fn check_time(
        &self,
        token: Cid,
        nbf: Option<u64>,
        exp: Option<u64>,
        now: u64,
    ) -> Result<(), Error> {
        let skew = self.options.clock_skew;
        if let Some(nbf) = nbf
            && now.saturating_add(skew) < nbf
        {
            return Err(Error::TooEarly {
                token: token.into(),
                nbf,
                now,
            });
        }
        if let Some(exp) = exp
            && exp.saturating_add(skew) < now
        {
            return Err(Error::Expired {
                token: token.into(),
                exp,
                now,
            });
        }
        Ok(())
    }

    fn check_root(&self, root_issuer: &Did, token: Cid) -> Result<(), Error> {
        match &self.options.required_root {
            Some(required) if required != root_issuer => Err(Error::UntrustedRoot {
                token: token.into(),
                root: root_issuer.clone(),
                expected: required.clone(),
            }),
            _ => Ok(()),
        }
    }
}

/// Principal and subject alignment of a non-empty chain (root first). Returns the subject and
/// the final audience.
fn align<'d>(links: &[&'d Delegation]) -> Result<(&'d Did, &'d Did), Error> {
    let (Some(root), Some(leaf)) = (links.first(), links.last()) else {
        return Err(Error::malformed(None, "the delegation chain is empty"));
    };
    let Some(subject) = root.subject() else {
        return Err(Error::InvalidClaim {
            token: (*root.cid()).into(),
            reason: "the root delegation is a powerline (`sub: null`); a chain must start with \
                     a delegation issued by its subject"
                .into(),
        });
    };
    if root.issuer() != subject {
        return Err(Error::InvalidSubject {
            token: (*root.cid()).into(),
            expected: format!("{} (the root delegation's issuer)", root.issuer()),
            found: subject.to_string(),
        });
    }
    for pair in links.windows(2) {
        let [prev, next] = pair else { continue };
        if prev.audience() != next.issuer() {
            return Err(Error::InvalidAudience {
                token: (*next.cid()).into(),
                expected: format!(
                    "{} (audience of the previous proof {})",
                    prev.audience(),
                    prev.cid()
                ),
                found: format!("{} (issuer)", next.issuer()),
            });
        }
        match next.subject() {
            // A powerline inherits the chain's subject.
            None => {}
            Some(s) if s == subject => {}
            Some(s) => {
                return Err(Error::InvalidSubject {
                    token: (*next.cid()).into(),
                    expected: subject.to_string(),
                    found: s.to_string(),
                });
            }
        }
    }
    Ok((subject, leaf.audience()))
}

/// Verifies an invocation and its proofs given as standard base64 of their DAG-CBOR envelopes,
/// at `at_unix` (default: now), with the default options (60 s clock skew, no required root,
/// no executor, no revocation store, no replay cache). This is the `zero` CLI's offline check;
/// a node adds its Admin as required root, its revocations and its replay cache.
pub fn verify_invocation_offline(
    invocation_b64: &str,
    proofs_b64: &[String],
    at_unix: Option<u64>,
) -> Result<VerifiedInvocation, Error> {
    let invocation = Invocation::from_base64(invocation_b64)?;
    let proofs = proofs_b64
        .iter()
        .map(|p| Delegation::from_base64(p))
        .collect::<Result<Vec<_>, _>>()?;
    let now = at_unix.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    let options = ValidationOptions::default();
    Validator::new(&options).validate_invocation(&invocation, &proofs, now)
}

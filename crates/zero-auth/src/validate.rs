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
use crate::invocation::InvocationToken;
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
    /// When set, an invocation must have an `exp` at most this many seconds ahead (plus
    /// `clock_skew`); otherwise [`Error::LifetimeTooLong`]. Short-lived invocations keep the
    /// replay cache small. Default [`DEFAULT_MAX_INVOCATION_LIFETIME`].
    pub max_invocation_lifetime: Option<u64>,
}

/// Default longest invocation lifetime, in seconds (15 minutes).
pub const DEFAULT_MAX_INVOCATION_LIFETIME: u64 = 900;

impl Default for ValidationOptions {
    fn default() -> Self {
        ValidationOptions {
            clock_skew: DEFAULT_CLOCK_SKEW,
            required_root: None,
            executor: None,
            max_invocation_lifetime: Some(DEFAULT_MAX_INVOCATION_LIFETIME),
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

/// One invocation remembered by a [`ReplayCache`]: who it counts against, its CID and until
/// when it must be remembered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayEntry {
    /// The principal it counts against (see [`ReplayCache`]).
    pub principal: Did,
    /// The invocation's CID.
    pub invocation: Cid,
    /// Unix time after which the entry may be forgotten (`exp + clock_skew`).
    pub deadline: u64,
}

/// Durable storage of a [`ReplayCache`], so that an invocation stays single-use across
/// restarts (for zerocore, a table in the node's state; with the cluster, the replicated log).
pub trait ReplayJournal: Send + Sync {
    /// Durably records `entry` and forgets the `expired` invocations (whose deadlines passed),
    /// before the invocation is executed. An error refuses the invocation.
    fn record(&self, entry: &ReplayEntry, expired: &[Cid]) -> Result<(), String>;
}

/// Remembers executed invocations so that none runs twice, in bounded memory.
///
/// Rules:
/// - An invocation must have an `exp`; one without is refused ([`Error::InvalidClaim`]), since
///   it would have to be remembered forever.
/// - An entry is kept until its deadline, `exp + clock_skew`; after that the validator refuses
///   the invocation as [`Error::Expired`] anyway, so the entry is dropped.
/// - Entries are kept per **principal**: the audience of the chain's root delegation (the
///   principal the root of authority delegated to, e.g. a tenant's owner, whoever in the owner's
///   chain signs the invocation), or the invoker itself when it invokes without proofs (the
///   Admin). At most `per_principal` live entries are kept for each. When a principal's bucket
///   is full, that principal's new invocations are refused ([`Error::TooManyInvocations`])
///   until its entries expire; no entry is ever evicted early, so a replay is never accepted
///   and one principal cannot crowd out another. Since delegations from the root are issued
///   by the root alone, the number of principals (and so the memory) is bounded by what the
///   root delegates.
/// - With a [`ReplayJournal`], every entry is recorded durably before the invocation is
///   accepted, and [`ReplayCache::with_journal`] restores the live ones after a restart.
///
/// The cache is internally synchronized and can be shared between threads.
pub struct ReplayCache {
    per_principal: usize,
    journal: Option<Box<dyn ReplayJournal>>,
    state: Mutex<HashMap<Did, Bucket>>,
}

impl std::fmt::Debug for ReplayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayCache")
            .field("per_principal", &self.per_principal)
            .field("journal", &self.journal.is_some())
            .field("len", &self.len())
            .finish()
    }
}

#[derive(Debug, Default)]
struct Bucket {
    deadlines: HashMap<Cid, u64>,
    by_deadline: BTreeSet<(u64, Cid)>,
}

impl Bucket {
    fn insert(&mut self, cid: Cid, deadline: u64) {
        if let Some(old) = self.deadlines.insert(cid, deadline) {
            self.by_deadline.remove(&(old, cid));
        }
        self.by_deadline.insert((deadline, cid));
    }

    /// Drops the entries whose deadline is before `now`; returns their CIDs.
    fn expire(&mut self, now: u64) -> Vec<Cid> {
        let mut gone = Vec::new();
        while let Some(&(d, cid)) = self.by_deadline.first() {
            if d >= now {
                break;
            }
            self.by_deadline.remove(&(d, cid));
            self.deadlines.remove(&cid);
            gone.push(cid);
        }
        gone
    }
}

impl ReplayCache {
    /// A cache holding at most `per_principal` live invocations per principal (at least 1),
    /// in memory only.
    pub fn new(per_principal: usize) -> Self {
        ReplayCache {
            per_principal: per_principal.max(1),
            journal: None,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// A cache that records every entry in `journal` before accepting the invocation, starting
    /// from the `restored` entries (those read back from the journal; entries whose deadline is
    /// before `now` are skipped).
    pub fn with_journal(
        per_principal: usize,
        journal: Box<dyn ReplayJournal>,
        restored: impl IntoIterator<Item = ReplayEntry>,
        now: u64,
    ) -> Self {
        let mut buckets: HashMap<Did, Bucket> = HashMap::new();
        for e in restored {
            if e.deadline >= now {
                buckets
                    .entry(e.principal)
                    .or_default()
                    .insert(e.invocation, e.deadline);
            }
        }
        ReplayCache {
            per_principal: per_principal.max(1),
            journal: Some(journal),
            state: Mutex::new(buckets),
        }
    }

    /// The number of invocations currently remembered, all principals together.
    pub fn len(&self) -> usize {
        self.lock().values().map(|b| b.deadlines.len()).sum()
    }

    /// Whether no invocation is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of invocations currently remembered for `principal`.
    pub fn len_of(&self, principal: &Did) -> usize {
        self.lock().get(principal).map_or(0, |b| b.deadlines.len())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Did, Bucket>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records an invocation of `principal` as executed at `now`, or refuses it if it was seen
    /// before, if the principal's bucket is full, or if the journal cannot record it (see the
    /// type's rules).
    pub fn check_and_record(
        &self,
        principal: &Did,
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
        let bucket = state.entry(principal.clone()).or_default();
        // Forget invocations whose deadline has passed: they are refused as expired anyway.
        let expired = bucket.expire(now);
        if let Some(seen_until) = bucket.deadlines.get(invocation) {
            return Err(Error::Replayed {
                token: (*invocation).into(),
                detail: format!(
                    "this invocation was already executed (remembered until {seen_until}); \
                     invocations are single-use: sign a new one with a fresh nonce"
                ),
            });
        }
        if bucket.deadlines.len() >= self.per_principal {
            let retry_at = bucket.by_deadline.first().map_or(now, |(d, _)| *d);
            return Err(Error::TooManyInvocations {
                token: (*invocation).into(),
                principal: principal.clone(),
                limit: self.per_principal,
                retry_at,
            });
        }
        if let Some(journal) = &self.journal {
            let entry = ReplayEntry {
                principal: principal.clone(),
                invocation: *invocation,
                deadline,
            };
            journal
                .record(&entry, &expired)
                .map_err(|reason| Error::Storage { reason })?;
        }
        bucket.insert(*invocation, deadline);
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

/// The delegations named by `cids`, in order, found among `supplied`
/// ([`Error::UnavailableProof`] for one that was not supplied; `token` is the citing token).
fn resolve_links<'a>(
    token: Cid,
    cids: &[Cid],
    supplied: &'a [Delegation],
) -> Result<Vec<&'a Delegation>, Error> {
    cids.iter()
        .map(|cid| {
            supplied
                .iter()
                .find(|d| d.cid() == cid)
                .ok_or(Error::UnavailableProof {
                    token: token.into(),
                    proof: *cid,
                })
        })
        .collect()
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
    /// The principal the invocation counts against in the replay cache: the audience of the
    /// root delegation, or the invoker when there are no proofs (see [`ReplayCache`]).
    pub principal: Did,
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

/// The command of a revocation (see [`Validator::validate_revocation`]).
pub const REVOKE_COMMAND: &str = "/ucan/revoke";

/// A revocation that passed every check of [`Validator::validate_revocation`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedRevocation {
    /// The revocation invocation's CID.
    pub invocation: Cid,
    /// Who revokes (the invocation's issuer).
    pub revoker: Did,
    /// The principal the revocation counts against: the audience of the path's root
    /// delegation, or the revoker when it revokes by CID alone (the root of authority).
    pub principal: Did,
    /// The revoked delegation.
    pub revoked: Cid,
    /// The revoked delegation's `exp`, when the path was given and it has one: after it (plus
    /// the clock skew) the revocation no longer matters and may be forgotten.
    pub revoked_expiration: Option<u64>,
    /// The path given (root first; empty when revoked by CID alone).
    pub path: Vec<Cid>,
    /// Whether the revoker is the required root (the Admin).
    pub by_root: bool,
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
        invocation: &InvocationToken,
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
        invocation: &InvocationToken,
        proofs: &[Delegation],
        now: u64,
        authorize_fn: &Authorizer,
    ) -> Result<VerifiedInvocation, Error> {
        let inv_cid = *invocation.cid();
        let links = resolve_links(inv_cid, invocation.proofs(), proofs)?;

        invocation.verify_signature()?;
        self.check_links(&links, now)?;
        self.check_revoked(inv_cid)?;
        self.check_time(inv_cid, None, invocation.expiration(), now)?;
        self.check_lifetime(invocation, now)?;

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
        let principal = links
            .first()
            .map_or(invocation.issuer(), |root| root.audience())
            .clone();
        if let Some(cache) = self.replay {
            cache.check_and_record(
                &principal,
                &inv_cid,
                invocation.expiration(),
                now,
                self.options.clock_skew,
            )?;
        }
        Ok(VerifiedInvocation {
            principal,
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

    /// Validates a revocation at Unix time `now`: an invocation of [`REVOKE_COMMAND`] with the
    /// arguments of the UCAN revocation spec, `revoke` (the CID link of the delegation to
    /// revoke) and `path` (the CID links of the revoked delegation's chain, root first,
    /// containing it; optional for the required root). `delegations` must hold every
    /// delegation named in `path`.
    ///
    /// The UCAN revocation spec lets any issuer in the revoked delegation's chain revoke it;
    /// this node is stricter: only its own issuer, or the required root (the Admin), which may
    /// also revoke by CID alone. So the path must be a valid chain (signatures, principal and subject
    /// alignment, rooted at the required root) that contains the revoked delegation, and the
    /// invoker must be the revoked delegation's own issuer ([`Error::InvalidClaim`] otherwise):
    /// since a UCAN 1.0 delegation names no proofs, a path cannot show that an upstream issuer
    /// really is upstream (anyone can sign a delegation to another's key and so appear above
    /// everything that key issued), so upstream issuers revoke the delegation they issued into
    /// the branch instead.
    /// Time bounds of the path are not checked (revoking a token that is not valid yet is
    /// legitimate), but a revoked link before the revoked delegation refuses the revocation
    /// ([`Error::Revoked`]). The invocation itself is checked like any other (signature, time
    /// bounds, lifetime, executor, replay) and carries no `prf`: the path is its authority.
    pub fn validate_revocation(
        &self,
        invocation: &InvocationToken,
        delegations: &[Delegation],
        now: u64,
    ) -> Result<VerifiedRevocation, Error> {
        let inv_cid = *invocation.cid();
        let claim = |reason: String| Error::InvalidClaim {
            token: inv_cid.into(),
            reason,
        };
        if invocation.command().as_str() != REVOKE_COMMAND {
            return Err(claim(format!(
                "a revocation is an invocation of `{REVOKE_COMMAND}`, not `{}`",
                invocation.command()
            )));
        }
        invocation.verify_signature()?;
        self.check_revoked(inv_cid)?;
        self.check_time(inv_cid, None, invocation.expiration(), now)?;
        self.check_lifetime(invocation, now)?;
        if !invocation.proofs().is_empty() {
            return Err(claim(
                "a revocation carries no `prf`: the revoker's authority is to be an issuer in \
                 the revoked delegation's chain, given in args.path"
                    .into(),
            ));
        }
        let bad_args = |what: &str| Error::malformed(Some(inv_cid), what.to_string());
        let revoked = match invocation.args().get("revoke") {
            Some(Ipld::Link(cid)) => *cid,
            _ => {
                return Err(bad_args(
                    "args.revoke must be the CID link of the delegation to revoke",
                ));
            }
        };
        let path: Vec<Cid> = match invocation.args().get("path") {
            None => vec![],
            Some(Ipld::List(items)) => items
                .iter()
                .map(|i| match i {
                    Ipld::Link(cid) => Ok(*cid),
                    _ => Err(bad_args(
                        "args.path must be a list of CID links (the revoked delegation's chain, root first)",
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(bad_args(
                    "args.path must be a list of CID links (the revoked delegation's chain, root first)",
                ));
            }
        };
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
        let revoker = invocation.issuer();
        let by_root = self.options.required_root.as_ref() == Some(revoker);
        let (principal, revoked_expiration) = if path.is_empty() {
            if !by_root {
                return Err(claim(format!(
                    "{revoker} may revoke {revoked} only as its issuer: give the revoked \
                     delegation's chain (root first) in args.path (`zero revoke --chain \
                     FILE`); only the root of authority may revoke by CID alone"
                )));
            }
            if invocation.subject() != revoker {
                return Err(Error::InvalidSubject {
                    token: inv_cid.into(),
                    expected: format!("{revoker} (the revoker)"),
                    found: invocation.subject().to_string(),
                });
            }
            (revoker.clone(), None)
        } else {
            let links = resolve_links(inv_cid, &path, delegations)?;
            for d in &links {
                d.verify_signature()?;
            }
            let (subject, _) = align(&links)?;
            let root = links
                .first()
                .ok_or_else(|| Error::malformed(Some(inv_cid), "args.path is empty"))?;
            self.check_root(root.issuer(), *root.cid())?;
            let Some(pos) = links.iter().position(|d| *d.cid() == revoked) else {
                return Err(claim(format!(
                    "args.path does not contain the revoked delegation {revoked}; give its \
                     chain, root first, up to and including it"
                )));
            };
            let upto = links.get(..=pos).unwrap_or_default();
            // Only the revoked delegation's own issuer (or the root) may revoke it. A UCAN 1.0
            // delegation does not name its proofs, so "an issuer upstream in its chain" cannot
            // be proven by a path: anyone can sign a delegation to another principal's key (or
            // back to the root) and so appear upstream of any delegation that principal issued.
            if !by_root && upto.last().map(|d| d.issuer()) != Some(revoker) {
                return Err(claim(format!(
                    "{revoker} did not issue {revoked}, so it may not revoke it: only its issuer \
                     and the root of authority may (to cut off a branch below you, revoke the \
                     delegation you issued into it)"
                )));
            }
            if invocation.subject() != subject {
                return Err(Error::InvalidSubject {
                    token: inv_cid.into(),
                    expected: subject.to_string(),
                    found: invocation.subject().to_string(),
                });
            }
            for d in upto.iter().take(pos) {
                self.check_revoked(*d.cid())?;
            }
            let target = upto.last().and_then(|d| d.expiration());
            (root.audience().clone(), target)
        };
        if let Some(cache) = self.replay {
            cache.check_and_record(
                &principal,
                &inv_cid,
                invocation.expiration(),
                now,
                self.options.clock_skew,
            )?;
        }
        Ok(VerifiedRevocation {
            invocation: inv_cid,
            revoker: revoker.clone(),
            principal,
            revoked,
            revoked_expiration,
            path,
            by_root,
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

    /// The invocation's `exp` is present and within the lifetime cap, if there is one.
    fn check_lifetime(&self, invocation: &InvocationToken, now: u64) -> Result<(), Error> {
        let Some(max) = self.options.max_invocation_lifetime else {
            return Ok(());
        };
        let expires_in = invocation.expiration().map(|e| e.saturating_sub(now));
        match expires_in {
            Some(secs) if secs <= max.saturating_add(self.options.clock_skew) => Ok(()),
            _ => Err(Error::LifetimeTooLong {
                token: (*invocation.cid()).into(),
                expires_in,
                max,
            }),
        }
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
    let invocation = InvocationToken::from_base64(invocation_b64)?;
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

//! The one capability checker: a validated chain scoped to the arguments every ask carries.
//!
//! Every provider (files, databases, …) and the management API ask the same question: "does
//! this chain allow command `C` with these arguments?". [`ScopedChain`] answers it once for
//! all of them:
//!
//! - the **fixed arguments** of the caller (its `tenant`, the `component` hash, or a
//!   management invocation's own arguments) are given once, when the scoped chain is made;
//!   each ask adds only what varies (`path`, `db` and `table`, …);
//! - the **rule** is [`crate::authorize_paths`] on the `path` argument ([`PATH_FIELD`]): every
//!   link's command must cover `C`, every link's policy must accept the arguments, and `.path`
//!   is read as a place in a tree, so a grant on a directory covers what is under it and an
//!   exclusion of a directory excludes what is under it;
//! - a component may carry **several chains** (one per capability, see
//!   [`crate::component`]): an ask is allowed when one of them allows it, each chain expiring
//!   on its own; a refusal says what was asked and why the closest chain refused (one that
//!   covers the command but whose policy refuses the arguments is closer than one about
//!   another command). With one chain, answers and refusals are exactly that chain's;
//! - answers are **memoized** for the life of the value: a chain is immutable once validated,
//!   and revoking one of its delegations stops the apps that rely on it, so a component's
//!   scoped chain is made once per deployment and shared by all its instances. The memo holds
//!   at most [`MEMO_ENTRIES`] answers (it starts over when full), so asking for endless
//!   distinct arguments cannot grow it without bound.
//!
//! Two questions are asked before an argument is known (for databases, before the table is
//! known): [`ScopedChain::reachable`] (can the chain allow *some* value of the open argument?)
//! and [`ScopedChain::allows_every`] (does it allow *every* value?). Both evaluate each policy
//! statement with Kleene logic, a statement that may read the open argument being undecided.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use ipld_core::cid::Cid;
use ipld_core::ipld::Ipld;

use crate::command::Command;
use crate::error::Error;
use crate::policy::Statement;
use crate::validate::{Capability, Chain, VerifiedInvocation, authorize_paths};

/// The argument read as a path in a tree by every capability check (see the module docs).
pub const PATH_FIELD: &str = "path";

/// Most answers a [`ScopedChain`] remembers before it starts over.
pub const MEMO_ENTRIES: usize = 4096;

/// One of the four actions on a resource, each a UCAN command under the resource's namespace:
/// `/fs/read`, `/db/write`, `/cache/delete`, ….
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Read: file content, listings and metadata; table rows.
    Read,
    /// Write: change an existing file; insert or update rows.
    Write,
    /// Create: a file or directory that does not exist; a table, index, view or trigger.
    Create,
    /// Delete: remove a file or directory; delete rows or drop an object.
    Delete,
}

impl Action {
    /// All four actions.
    pub const ALL: [Action; 4] = [Action::Read, Action::Write, Action::Create, Action::Delete];

    /// The action's name, the last segment of its command (`read`, `write`, …).
    pub fn name(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Create => "create",
            Action::Delete => "delete",
        }
    }

    /// The action's command under `namespace` (`Action::Read.command("/fs")` is `/fs/read`).
    /// `namespace` must be a command itself (such as `/fs`); otherwise the error says why.
    pub fn command(self, namespace: &str) -> Result<Command, Error> {
        Command::parse(&format!(
            "{}/{}",
            namespace.trim_end_matches('/'),
            self.name()
        ))
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Memo key: the command and the varying arguments of one ask.
type MemoKey = (Command, Vec<(String, String)>);

/// One chain of a [`ScopedChain`]: its links, root first, and when it expires.
#[derive(Clone, Debug)]
struct Links {
    links: Vec<Capability>,
    expiration: Option<u64>,
}

/// A validated chain (or several, one per capability) scoped to its holder's fixed arguments:
/// the one capability checker (see the [module documentation](self)).
///
/// ```
/// use std::collections::BTreeMap;
/// use zero_auth::{Action, Capability, Cid, Command, Ipld, Keypair, Policy, ScopedChain};
///
/// # fn main() -> Result<(), zero_auth::Error> {
/// let s = |v: &str| Ipld::String(v.into());
/// // One link: `/fs/read` under `/site`.
/// let link = Capability {
///     delegation: Cid::default(),
///     issuer: Keypair::generate()?.did().clone(),
///     command: Command::parse("/fs/read")?,
///     policy: Policy::from_ipld(&Ipld::List(vec![Ipld::List(vec![s("=="), s(".path"), s("/site")])]))?,
/// };
/// let chain = ScopedChain::new(Some(vec![link]), BTreeMap::from([("tenant".into(), s("acme"))]), None);
/// let read = Action::Read.command("/fs")?;
/// assert!(chain.allows(&read, &[("path", "/site/a/index.html")]).is_ok());
/// assert_eq!(chain.allows(&read, &[("path", "/secret")]).unwrap_err().name(), "MatchError");
/// assert_eq!(chain.allows(&Action::Write.command("/fs")?, &[("path", "/site")]).unwrap_err().name(), "InvalidClaim");
/// # Ok(())
/// # }
/// ```
pub struct ScopedChain {
    /// `None`: no token, nothing is allowed. A chain with no links: the subject acting itself,
    /// everything is allowed.
    chains: Option<Vec<Links>>,
    /// The earliest expiry of the chains: until then every chain is live and the memo holds.
    earliest: Option<u64>,
    base: BTreeMap<String, Ipld>,
    memo: Mutex<HashMap<MemoKey, Result<(), Error>>>,
}

impl fmt::Debug for ScopedChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopedChain")
            .field(
                "links",
                &self
                    .chains
                    .as_ref()
                    .map(|c| c.iter().map(|l| l.links.len()).collect::<Vec<_>>()),
            )
            .field("base", &self.base)
            .field("earliest", &self.earliest)
            .finish()
    }
}

impl Default for ScopedChain {
    /// No token: nothing is allowed.
    fn default() -> Self {
        ScopedChain::new(None, BTreeMap::new(), None)
    }
}

/// Which chains are consulted for one ask.
enum Live<'a> {
    /// Every chain (none has expired): the memo holds.
    All(&'a [Links]),
    /// Those that have not expired (some have): asked without the memo.
    Some(Vec<&'a Links>),
}

impl ScopedChain {
    /// The chain with links `capabilities` (a validated chain's, root first; `None`: no token,
    /// nothing is allowed; empty: the subject acting itself, everything is allowed), asked with
    /// the fixed arguments `base`, and refusing everything after the Unix time `expiration`.
    pub fn new(
        capabilities: Option<Vec<Capability>>,
        base: BTreeMap<String, Ipld>,
        expiration: Option<u64>,
    ) -> Self {
        ScopedChain::with_chains(capabilities.map(|links| vec![(links, expiration)]), base)
    }

    /// Several chains, each given by its links (root first) and its expiry (`None`: no token,
    /// nothing is allowed), asked with the fixed arguments `base`: an ask is allowed when one
    /// chain that has not expired allows it. An empty list allows nothing.
    pub fn with_chains(
        chains: Option<Vec<(Vec<Capability>, Option<u64>)>>,
        base: BTreeMap<String, Ipld>,
    ) -> Self {
        let chains: Option<Vec<Links>> = chains.map(|c| {
            c.into_iter()
                .map(|(links, expiration)| Links { links, expiration })
                .collect()
        });
        let earliest = chains.iter().flatten().filter_map(|c| c.expiration).min();
        ScopedChain {
            chains,
            earliest,
            base,
            memo: Mutex::new(HashMap::new()),
        }
    }

    /// The chains embedded in a component (`None`: the component carries no token; several:
    /// one per capability), for the component with content hash `component` in `tenant`: asks
    /// carry `tenant` and `component`, an ask is allowed when one chain allows it, and a chain
    /// allows nothing once it has expired.
    pub fn of_component(chains: Option<&[Chain]>, tenant: &str, component: Option<&str>) -> Self {
        let mut base = BTreeMap::from([("tenant".to_owned(), Ipld::String(tenant.to_owned()))]);
        if let Some(c) = component {
            base.insert("component".to_owned(), Ipld::String(c.to_owned()));
        }
        ScopedChain::with_chains(
            chains.map(|chains| {
                chains
                    .iter()
                    .map(|c| (c.capabilities().to_vec(), c.expiration()))
                    .collect()
            }),
            base,
        )
    }

    /// The chain of a verified management invocation: asks carry the invocation's own
    /// arguments (its `tenant`, …), with the asked arguments in place of those of the same
    /// name. The invocation's time bounds were checked when it was verified.
    pub fn of_invocation(invocation: &VerifiedInvocation) -> Self {
        ScopedChain::new(
            Some(invocation.capabilities.clone()),
            invocation.args.clone(),
            None,
        )
    }

    /// Whether there is a token at all (a component without one has none).
    pub fn has_token(&self) -> bool {
        self.chains.is_some()
    }

    /// The links of each chain, root first (none without a token).
    pub fn chains(&self) -> impl Iterator<Item = &[Capability]> {
        self.chains.iter().flatten().map(|c| c.links.as_slice())
    }

    /// The rule every ask is decided by, on a chain's links: [`crate::authorize_paths`] with
    /// [`PATH_FIELD`] read as a path. Usable as a [`crate::Authorizer`].
    pub fn rule(capabilities: &[Capability], command: &Command, args: &Ipld) -> Result<(), Error> {
        authorize_paths(capabilities, command, args, PATH_FIELD)
    }

    /// The chains to ask, once the token is known to exist and not all of it to have expired.
    fn live(&self, command: &Command) -> Result<Live<'_>, Error> {
        let Some(chains) = &self.chains else {
            return Err(Error::InvalidClaim {
                token: Box::new(Cid::default()),
                reason: format!(
                    "no capability token: sign the component (or the invocation) with a \
                     capability for `{command}`"
                ),
            });
        };
        let Some(earliest) = self.earliest else {
            return Ok(Live::All(chains));
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if now < earliest {
            return Ok(Live::All(chains));
        }
        let live: Vec<&Links> = chains
            .iter()
            .filter(|c| c.expiration.is_none_or(|exp| now < exp))
            .collect();
        if live.is_empty() {
            return Err(Error::InvalidClaim {
                token: Box::new(Cid::default()),
                reason: "the capability token has expired; sign it again".into(),
            });
        }
        Ok(Live::Some(live))
    }

    fn args(&self, args: &[(&str, &str)]) -> Ipld {
        let mut all = self.base.clone();
        for (k, v) in args {
            all.insert((*k).to_owned(), Ipld::String((*v).to_owned()));
        }
        Ipld::Map(all)
    }

    /// Asks `check` of each chain of `live`: allowed when one chain allows; otherwise the
    /// refusal of the closest chain (see [`closest`]), saying what was `asked` when there are
    /// several.
    fn any(
        &self,
        live: &Live<'_>,
        asked: impl FnOnce() -> String,
        check: impl Fn(&[Capability]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let (all, live): (usize, Vec<&Links>) = match live {
            Live::All([one]) => return check(&one.links),
            Live::All(chains) => (chains.len(), chains.iter().collect()),
            Live::Some(chains) => (self.chains().count(), chains.clone()),
        };
        let mut best: Option<(usize, Error)> = None;
        for (i, chain) in live.iter().enumerate() {
            match check(&chain.links) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if best.as_ref().is_none_or(|(_, b)| rank(&e) > rank(b)) {
                        best = Some((i, e));
                    }
                }
            }
        }
        let Some((i, e)) = best else {
            return Err(Error::InvalidClaim {
                token: Box::new(Cid::default()),
                reason: format!("the component carries no capability for {}", asked()),
            });
        };
        if all == 1 {
            return Err(e);
        }
        let leaf = live
            .get(i)
            .and_then(|c| c.links.last())
            .map_or_else(|| "/".to_owned(), |c| c.command.to_string());
        let why = |reason: String| {
            format!(
                "none of the component's {all} capabilities allows {}; the closest (`{leaf}`) \
                 refuses: {reason}",
                asked()
            )
        };
        Err(match e {
            Error::MatchError {
                token,
                statement,
                reason,
            } => Error::MatchError {
                token,
                statement,
                reason: why(reason),
            },
            Error::InvalidClaim { token, reason } => Error::InvalidClaim {
                token,
                reason: why(reason),
            },
            other => other,
        })
    }

    /// Whether the chain allows `command` with the fixed arguments plus `args`:
    /// [`Error::InvalidClaim`] when a link does not cover the command (or there is no token, or
    /// it expired), [`Error::MatchError`] when a link's policy refuses the arguments. `.path`
    /// is read as a path (a grant on a directory covers what is under it). With several chains,
    /// allowed when one allows. Memoized.
    pub fn allows(&self, command: &Command, args: &[(&str, &str)]) -> Result<(), Error> {
        let live = self.live(command)?;
        let asked = || describe(command, args);
        if let Live::Some(_) = live {
            let all = self.args(args);
            return self.any(&live, asked, |caps| Self::rule(caps, command, &all));
        }
        let key: MemoKey = (
            command.clone(),
            args.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        let mut memo = self.memo.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(answer) = memo.get(&key) {
            return answer.clone();
        }
        let all = self.args(args);
        let answer = self.any(&live, asked, |caps| Self::rule(caps, command, &all));
        if memo.len() >= MEMO_ENTRIES {
            memo.clear();
        }
        memo.insert(key, answer.clone());
        answer
    }

    /// Whether the chain can allow one of `commands` for *some* value of the argument `open`,
    /// which is not known yet (for a database: some table of it), with the fixed arguments plus
    /// `args`: every link must cover one of `commands`, and no statement of any policy may be
    /// false whatever `open` is (a statement that may read `open` counts as possibly true; it
    /// is decided when the value is known). So a chain limited to another database is refused
    /// here, naming its statement on `.db`. With several chains, allowed when one allows.
    pub fn reachable(
        &self,
        commands: &[Command],
        args: &[(&str, &str)],
        open: &str,
    ) -> Result<(), Error> {
        let first = commands.first().cloned().unwrap_or_else(Command::top);
        let live = self.live(&first)?;
        let all = self.args(args);
        let asked = || format!("{} with any `{open}`", describe(&first, args));
        self.any(&live, asked, |caps| {
            let covered = commands
                .iter()
                .any(|cmd| caps.iter().all(|c| c.command.covers(cmd)));
            if !covered {
                return Err(uncovered(caps, &first));
            }
            for cap in caps {
                for st in cap.policy.statements() {
                    if partial(st, &all, open) == Tri::False {
                        return Err(Error::MatchError {
                            token: Box::new(cap.delegation),
                            statement: st.to_string(),
                            reason: format!(
                                "the statement is false for these arguments whatever `.{open}` \
                                 is; the capability does not reach them"
                            ),
                        });
                    }
                }
            }
            Ok(())
        })
    }

    /// Whether the chain allows `command` for *every* value of the argument `open` (for a
    /// database: every table, present and future), with the fixed arguments plus `args`: every
    /// link covers the command and every statement of every policy holds without depending on
    /// `open`. With several chains, allowed when one allows.
    pub fn allows_every(
        &self,
        command: &Command,
        args: &[(&str, &str)],
        open: &str,
    ) -> Result<(), Error> {
        let live = self.live(command)?;
        let all = self.args(args);
        let asked = || format!("{} for every `{open}`", describe(command, args));
        self.any(&live, asked, |caps| {
            if !caps.iter().all(|c| c.command.covers(command)) {
                return Err(uncovered(caps, command));
            }
            for cap in caps {
                for st in cap.policy.statements() {
                    if partial(st, &all, open) != Tri::True {
                        return Err(Error::MatchError {
                            token: Box::new(cap.delegation),
                            statement: st.to_string(),
                            reason: format!(
                                "the statement limits `.{open}`, but this needs every value of \
                                 it"
                            ),
                        });
                    }
                }
            }
            Ok(())
        })
    }
}

/// How close a chain's refusal is to an allowance: a chain whose commands cover the ask but
/// whose policy refuses its arguments is closer than one about another command.
fn rank(e: &Error) -> u8 {
    match e {
        Error::MatchError { .. } => 1,
        _ => 0,
    }
}

/// An ask in words: `` `/fs/write` with path `/site/a` ``.
fn describe(command: &Command, args: &[(&str, &str)]) -> String {
    let mut out = format!("`{command}`");
    for (i, (k, v)) in args.iter().enumerate() {
        out.push_str(if i == 0 { " with " } else { ", " });
        out.push_str(&format!("{k} `{v}`"));
    }
    out
}

/// The refusal of the first link that does not cover `cmd` (worded as [`crate::authorize`]
/// words it).
fn uncovered(caps: &[Capability], cmd: &Command) -> Error {
    match crate::authorize(caps, cmd, &Ipld::Map(BTreeMap::new())) {
        Err(e @ Error::InvalidClaim { .. }) => e,
        _ => Error::InvalidClaim {
            token: Box::new(Cid::default()),
            reason: format!("the capability does not cover `{cmd}`"),
        },
    }
}

/// Three-valued result of evaluating a statement while one argument is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tri {
    True,
    False,
    /// Depends on the unknown argument.
    Maybe,
}

/// Evaluates `st` on `args`, which lack `open`: a statement that cannot read `open` is decided
/// exactly (as [`Statement::holds`] decides it); one that may is [`Tri::Maybe`], combined
/// through `not`, `and` and `or` with Kleene logic.
fn partial(st: &Statement, args: &Ipld, open: &str) -> Tri {
    if !st.may_read_field(open) {
        return if st.holds(args) {
            Tri::True
        } else {
            Tri::False
        };
    }
    match st {
        Statement::Not(inner) => match partial(inner, args, open) {
            Tri::True => Tri::False,
            Tri::False => Tri::True,
            Tri::Maybe => Tri::Maybe,
        },
        Statement::And(items) => {
            let r: Vec<Tri> = items.iter().map(|s| partial(s, args, open)).collect();
            if r.contains(&Tri::False) {
                Tri::False
            } else if r.contains(&Tri::Maybe) {
                Tri::Maybe
            } else {
                Tri::True
            }
        }
        Statement::Or(items) => {
            let r: Vec<Tri> = items.iter().map(|s| partial(s, args, open)).collect();
            if r.is_empty() || r.contains(&Tri::True) {
                Tri::True
            } else if r.contains(&Tri::Maybe) {
                Tri::Maybe
            } else {
                Tri::False
            }
        }
        _ => Tri::Maybe,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Keypair, Policy};

    fn s(v: &str) -> Ipld {
        Ipld::String(v.into())
    }

    fn stmt(op: &str, sel: &str, v: Ipld) -> Ipld {
        Ipld::List(vec![s(op), s(sel), v])
    }

    fn link(cmd: &str, policy: Vec<Ipld>) -> Capability {
        Capability {
            delegation: Cid::default(),
            issuer: Keypair::from_seed(&[7; 32]).did().clone(),
            command: Command::parse(cmd).unwrap(),
            policy: Policy::from_ipld(&Ipld::List(policy)).unwrap(),
        }
    }

    fn chain(links: Vec<Capability>) -> ScopedChain {
        ScopedChain::new(
            Some(links),
            BTreeMap::from([("tenant".to_owned(), s("acme"))]),
            None,
        )
    }

    fn cmd(c: &str) -> Command {
        Command::parse(c).unwrap()
    }

    #[test]
    fn actions_name_their_commands() {
        assert_eq!(Action::Read.command("/fs").unwrap().as_str(), "/fs/read");
        assert_eq!(
            Action::Delete.command("/db/").unwrap().as_str(),
            "/db/delete"
        );
        assert_eq!(Action::Create.to_string(), "create");
        assert!(Action::Read.command("db").is_err());
    }

    #[test]
    fn a_directory_grant_covers_what_is_under_it_and_an_exclusion_too() {
        let c = chain(vec![link(
            "/fs",
            vec![
                stmt("==", ".path", s("/site")),
                stmt("!=", ".path", s("/site/private")),
            ],
        )]);
        let read = cmd("/fs/read");
        assert!(c.allows(&read, &[("path", "/site")]).is_ok());
        assert!(c.allows(&read, &[("path", "/site/a/b.html")]).is_ok());
        for refused in ["/sites", "/", "/site/private", "/site/private/x"] {
            let e = c.allows(&read, &[("path", refused)]).unwrap_err();
            assert_eq!(e.name(), "MatchError", "{refused}: {e}");
        }
        // The fixed arguments are checked too.
        let other = ScopedChain::new(
            Some(vec![link("/fs", vec![stmt("==", ".tenant", s("beta"))])]),
            BTreeMap::from([("tenant".to_owned(), s("acme"))]),
            None,
        );
        assert_eq!(
            other.allows(&read, &[("path", "/x")]).unwrap_err().name(),
            "MatchError"
        );
        // A command outside the delegated one is refused as an escalation.
        let db = chain(vec![link("/db/read", vec![])]);
        assert_eq!(
            db.allows(&cmd("/db/write"), &[("db", "a"), ("table", "t")])
                .unwrap_err()
                .name(),
            "InvalidClaim"
        );
        assert!(
            db.allows(&cmd("/db/read"), &[("db", "a"), ("table", "t")])
                .is_ok()
        );
    }

    #[test]
    fn no_token_or_an_expired_one_allows_nothing_and_an_empty_chain_everything() {
        let none = ScopedChain::default();
        assert!(!none.has_token());
        let e = none.allows(&cmd("/fs/read"), &[("path", "/")]).unwrap_err();
        assert!(e.to_string().contains("no capability token"), "{e}");
        let expired = ScopedChain::new(Some(vec![link("/", vec![])]), BTreeMap::new(), Some(1));
        let e = expired
            .allows(&cmd("/fs/read"), &[("path", "/")])
            .unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
        let subject = ScopedChain::new(Some(vec![]), BTreeMap::new(), None);
        assert!(subject.allows(&cmd("/anything"), &[]).is_ok());
    }

    #[test]
    fn answers_are_memoized_within_a_bound() {
        let c = chain(vec![link("/fs/read", vec![stmt("==", ".path", s("/a"))])]);
        let read = cmd("/fs/read");
        for i in 0..(MEMO_ENTRIES + 10) {
            let p = format!("/a/{i}");
            assert!(c.allows(&read, &[("path", &p)]).is_ok());
        }
        assert!(c.memo.lock().unwrap().len() <= MEMO_ENTRIES);
        assert!(c.allows(&read, &[("path", "/b")]).is_err());
        assert!(
            c.allows(&read, &[("path", "/b")]).is_err(),
            "a refusal is remembered too"
        );
    }

    #[test]
    fn an_open_argument_is_decided_per_value_and_gates_the_rest() {
        let db_cmds: Vec<Command> = Action::ALL
            .iter()
            .map(|a| a.command("/db").unwrap())
            .collect();
        let c = chain(vec![link(
            "/db",
            vec![
                stmt("==", ".db", s("app")),
                stmt("==", ".table", s("todos")),
            ],
        )]);
        assert!(c.reachable(&db_cmds, &[("db", "app")], "table").is_ok());
        let e = c
            .reachable(&db_cmds, &[("db", "other")], "table")
            .unwrap_err();
        assert_eq!(e.name(), "MatchError");
        assert!(e.to_string().contains(".db"), "{e}");
        let read = cmd("/db/read");
        assert!(
            c.allows_every(&read, &[("db", "app")], "table")
                .unwrap_err()
                .to_string()
                .contains("every value")
        );
        // A statement on the open argument nested in `not` is undecided, not false.
        let c = chain(vec![link(
            "/db/read",
            vec![
                stmt("==", ".db", s("app")),
                Ipld::List(vec![s("not"), stmt("==", ".[\"table\"]", s("keys"))]),
            ],
        )]);
        assert!(c.reachable(&db_cmds, &[("db", "app")], "table").is_ok());
        // A false statement on another argument refuses whatever the open one is.
        let c = chain(vec![link(
            "/db",
            vec![Ipld::List(vec![
                s("or"),
                Ipld::List(vec![
                    stmt("==", ".db", s("x")),
                    stmt("==", ".tenant", s("beta")),
                ]),
            ])],
        )]);
        assert!(c.reachable(&db_cmds, &[("db", "app")], "table").is_err());
        let c = chain(vec![link("/db", vec![stmt("==", ".db", s("app"))])]);
        assert!(
            c.allows_every(&cmd("/db/create"), &[("db", "app")], "table")
                .is_ok()
        );
        assert!(
            c.allows_every(&cmd("/db/create"), &[("db", "other")], "table")
                .is_err()
        );
        let fs = chain(vec![link("/fs", vec![])]);
        assert_eq!(
            fs.reachable(&db_cmds, &[("db", "app")], "table")
                .unwrap_err()
                .name(),
            "InvalidClaim"
        );
    }

    fn chains(chains: Vec<(Vec<Capability>, Option<u64>)>) -> ScopedChain {
        ScopedChain::with_chains(
            Some(chains),
            BTreeMap::from([("tenant".to_owned(), s("acme"))]),
        )
    }

    #[test]
    fn several_chains_allow_what_one_allows_and_nothing_more() {
        // `/fs/read` on /site, and `/db` on table `notes`: two chains, not one wide one.
        let c = chains(vec![
            (
                vec![link("/fs/read", vec![stmt("==", ".path", s("/site"))])],
                None,
            ),
            (
                vec![link("/db", vec![stmt("==", ".table", s("notes"))])],
                None,
            ),
        ]);
        assert_eq!(c.chains().count(), 2);
        assert!(c.allows(&cmd("/fs/read"), &[("path", "/site/a")]).is_ok());
        assert!(
            c.allows(&cmd("/db/write"), &[("db", "app"), ("table", "notes")])
                .is_ok()
        );
        // Writing /site: the fs chain covers the path but not the command, the db chain
        // neither; the refusal says what was asked.
        let e = c
            .allows(&cmd("/fs/write"), &[("path", "/site/a")])
            .unwrap_err();
        assert_eq!(e.name(), "InvalidClaim");
        let text = e.to_string();
        assert!(
            text.contains(
                "none of the component's 2 capabilities allows `/fs/write` with path `/site/a`"
            ),
            "{text}"
        );
        // Another table: the closest is the db chain (it covers the command), named.
        let e = c
            .allows(&cmd("/db/read"), &[("db", "app"), ("table", "secrets")])
            .unwrap_err();
        assert_eq!(e.name(), "MatchError");
        let text = e.to_string();
        assert!(text.contains("the closest (`/db`) refuses"), "{text}");
        assert!(text.contains(".table"), "{text}");
        // Reading outside /site.
        let e = c
            .allows(&cmd("/fs/read"), &[("path", "/secret")])
            .unwrap_err();
        assert!(e.to_string().contains("the closest (`/fs/read`)"), "{e}");
        // The questions asked before the table is known.
        let db_cmds: Vec<Command> = Action::ALL
            .iter()
            .map(|a| a.command("/db").unwrap())
            .collect();
        assert!(c.reachable(&db_cmds, &[("db", "app")], "table").is_ok());
        assert!(
            c.allows_every(&cmd("/db/read"), &[("db", "app")], "table")
                .unwrap_err()
                .to_string()
                .contains("for every `table`")
        );
        let wide = chains(vec![
            (vec![link("/fs/read", vec![])], None),
            (vec![link("/db", vec![])], None),
        ]);
        assert!(
            wide.allows_every(&cmd("/db/read"), &[("db", "app")], "table")
                .is_ok()
        );
    }

    #[test]
    fn each_chain_expires_on_its_own() {
        let c = chains(vec![
            (vec![link("/fs/read", vec![])], Some(1)),
            (vec![link("/db", vec![])], None),
        ]);
        let e = c.allows(&cmd("/fs/read"), &[("path", "/a")]).unwrap_err();
        assert_eq!(e.name(), "InvalidClaim");
        assert!(
            c.allows(&cmd("/db/read"), &[("db", "a"), ("table", "t")])
                .is_ok()
        );
        let all_old = chains(vec![
            (vec![link("/fs/read", vec![])], Some(1)),
            (vec![link("/db", vec![])], Some(2)),
        ]);
        let e = all_old
            .allows(&cmd("/db/read"), &[("db", "a"), ("table", "t")])
            .unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
        // An empty list of chains allows nothing.
        assert!(chains(vec![]).allows(&cmd("/fs/read"), &[]).is_err());
    }

    #[test]
    fn selectors_reaching_the_open_field_are_recognised() {
        let reads = |sel: &str| {
            crate::policy::Selector::parse(sel).map_or(true, |s| {
                Statement::Equal(s, Ipld::Null).may_read_field("table")
            })
        };
        for sel in [
            ".table",
            ".table?",
            ".table.x",
            ".[\"table\"]",
            ".\"table\"",
            ".",
            ".[]",
        ] {
            assert!(reads(sel), "{sel}");
        }
        for sel in [".db", ".tables", ".tenant", ".[\"db\"]", ".component"] {
            assert!(!reads(sel), "{sel}");
        }
    }
}

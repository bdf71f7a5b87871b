//! Table-level capabilities: what a caller may do to which table.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Mutex;

use zero_auth::policy::Statement;
use zero_auth::{Capability, Command, Error as AuthError, Ipld};

/// A table-level action, matching the `/db/read`, `/db/write`, `/db/create` and `/db/delete`
/// capability commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Read rows (`SELECT`, and every column read by `WHERE`, `JOIN`, subqueries, views, triggers).
    Read,
    /// Insert or update rows.
    Write,
    /// Create a table, index, view or trigger, or `ALTER TABLE`.
    Create,
    /// Delete rows, or drop a table, index, view or trigger.
    Delete,
}

impl Action {
    /// All four actions.
    pub const ALL: [Action; 4] = [Action::Read, Action::Write, Action::Create, Action::Delete];

    /// The UCAN command for this action (`/db/read`, ...).
    pub fn command(self) -> &'static str {
        match self {
            Action::Read => "/db/read",
            Action::Write => "/db/write",
            Action::Create => "/db/create",
            Action::Delete => "/db/delete",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Create => "create",
            Action::Delete => "delete",
        })
    }
}

/// The caller's capabilities, asked once per (action, table) that a statement performs.
///
/// The node implements this from the caller's UCAN delegation (`/db/*` commands scoped by `.db`
/// and `.table`); tests use [`StaticGrants`].
pub trait Grants {
    /// Whether the caller may perform `action` on `table` of database `db` (of the tenant the
    /// database belongs to).
    fn allows(&self, action: Action, db: &str, table: &str) -> bool;

    /// Whether the caller may perform `action` on every table of `db`, present and future
    /// (an owner-level right). Creating or dropping a trigger needs all four actions on every
    /// table, because a trigger's body runs later on behalf of whoever fires it.
    fn allows_every_table(&self, action: Action, db: &str) -> bool;
}

impl<G: Grants + ?Sized> Grants for &G {
    fn allows(&self, action: Action, db: &str, table: &str) -> bool {
        (**self).allows(action, db, table)
    }

    fn allows_every_table(&self, action: Action, db: &str) -> bool {
        (**self).allows_every_table(action, db)
    }
}

/// A fixed set of `(action, db, table)` entries; `"*"` as db or table matches any name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StaticGrants {
    entries: HashSet<(Action, String, String)>,
}

impl StaticGrants {
    /// No grants at all.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every action on every table of every database (an owner/admin credential).
    pub fn all() -> Self {
        let mut g = Self::new();
        for a in Action::ALL {
            g.insert(a, "*", "*");
        }
        g
    }

    /// Adds an entry (builder style).
    pub fn allow(mut self, action: Action, db: &str, table: &str) -> Self {
        self.insert(action, db, table);
        self
    }

    /// Adds an entry.
    pub fn insert(&mut self, action: Action, db: &str, table: &str) {
        self.entries
            .insert((action, db.to_owned(), table.to_owned()));
    }
}

impl Grants for StaticGrants {
    fn allows(&self, action: Action, db: &str, table: &str) -> bool {
        let table = table.to_ascii_lowercase();
        self.entries.iter().any(|(a, d, t)| {
            *a == action && (d == "*" || d == db) && (t == "*" || t.eq_ignore_ascii_case(&table))
        })
    }

    fn allows_every_table(&self, action: Action, db: &str) -> bool {
        self.entries
            .iter()
            .any(|(a, d, t)| *a == action && (d == "*" || d == db) && t == "*")
    }
}

/// Answers table-level questions from a UCAN capability chain: the one checker used for
/// components (the chain embedded in the component) and for management invocations (the
/// invocation's proofs).
///
/// Each (action, table) is asked as `authorize(capabilities, "/db/<action>", args)` where
/// `args` are the caller's fixed arguments (`tenant`, and `component` for a component or `db`
/// and `sql` for an invocation) with `db` and `table` set, so a policy on `.table` is always
/// evaluated where the table is known. Answers are cached for the life of the value (a
/// component's deployment, or one management call), at most [`MAX_CACHED_ANSWERS`] of them;
/// past its expiration every answer is no.
pub struct ChainGrants {
    capabilities: Option<Vec<Capability>>,
    base: BTreeMap<String, Ipld>,
    expiration: Option<u64>,
    cache: Mutex<HashMap<(Action, String, String), bool>>,
}

impl std::fmt::Debug for ChainGrants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainGrants")
            .field("capabilities", &self.capabilities.as_ref().map(Vec::len))
            .field("base", &self.base)
            .field("expiration", &self.expiration)
            .finish()
    }
}

impl ChainGrants {
    /// Grants from `capabilities` (a validated chain's, root first; `None`: nothing is
    /// granted; an empty list: the subject acting itself, everything is granted), asked with
    /// the fixed arguments `base`, refused after the Unix time `expiration`.
    pub fn new(
        capabilities: Option<Vec<Capability>>,
        base: BTreeMap<String, Ipld>,
        expiration: Option<u64>,
    ) -> Self {
        ChainGrants {
            capabilities,
            base,
            expiration,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a chain was given at all (a component without a token has none).
    pub fn has_chain(&self) -> bool {
        self.capabilities.is_some()
    }

    fn args(&self, db: &str, table: Option<&str>) -> Ipld {
        let mut args = self.base.clone();
        args.insert("db".to_owned(), Ipld::String(db.to_owned()));
        if let Some(t) = table {
            args.insert("table".to_owned(), Ipld::String(t.to_owned()));
        }
        Ipld::Map(args)
    }

    fn expired(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.expiration.is_some_and(|exp| exp <= now)
    }

    /// Checks `action` on `table` of `db`, with the reason on refusal.
    pub fn check(&self, action: Action, db: &str, table: &str) -> Result<(), AuthError> {
        let Some(caps) = &self.capabilities else {
            return Err(no_token());
        };
        if self.expired() {
            return Err(expired());
        }
        let cmd = Command::parse(action.command())?;
        zero_auth::authorize(caps, &cmd, &self.args(db, Some(table)))
    }

    /// The check made before a database is opened (and so before it can be created), when no
    /// table is known yet: the chain must be able to allow some `/db` action on some table of
    /// `db`. Every link must cover one of `/db/read`, `/db/write`, `/db/create`, `/db/delete`,
    /// and no statement of any link's policy may be false whatever `.table` is (a statement
    /// that reads `.table` counts as possibly true here; it is decided per table later). So a
    /// chain limited to another database is refused here, naming its statement on `.db`.
    pub fn check_database(&self, db: &str) -> Result<(), AuthError> {
        let Some(caps) = &self.capabilities else {
            return Err(no_token());
        };
        if self.expired() {
            return Err(expired());
        }
        let covered = Action::ALL.iter().any(|a| {
            Command::parse(a.command()).is_ok_and(|cmd| caps.iter().all(|c| c.command.covers(&cmd)))
        });
        if !covered {
            let cmd = Command::parse(Action::Read.command())?;
            return Err(uncovered(caps, &cmd));
        }
        self.policies_may_hold(caps, db)
    }

    fn policies_may_hold(&self, caps: &[Capability], db: &str) -> Result<(), AuthError> {
        let args = self.args(db, None);
        for cap in caps {
            for st in cap.policy.statements() {
                if partial(st, &args) == Tri::False {
                    return Err(AuthError::MatchError {
                        token: Box::new(cap.delegation),
                        statement: st.to_string(),
                        reason: format!(
                            "the statement is false for database `{db}` whatever the table; \
                             the capability does not reach this database"
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Whether the chain allows `action` on every table of `db`: every link covers the
    /// command and every statement of every policy holds without depending on `.table`.
    pub fn check_every_table(&self, action: Action, db: &str) -> Result<(), AuthError> {
        let Some(caps) = &self.capabilities else {
            return Err(no_token());
        };
        if self.expired() {
            return Err(expired());
        }
        let cmd = Command::parse(action.command())?;
        if !caps.iter().all(|c| c.command.covers(&cmd)) {
            return Err(uncovered(caps, &cmd));
        }
        let args = self.args(db, None);
        for cap in caps {
            for st in cap.policy.statements() {
                if partial(st, &args) != Tri::True {
                    return Err(AuthError::MatchError {
                        token: Box::new(cap.delegation),
                        statement: st.to_string(),
                        reason: "the statement limits the tables, but this needs every table \
                                 of the database"
                            .into(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// The refusal of the first link that does not cover `cmd` (as [`zero_auth::authorize`] words it).
fn uncovered(caps: &[Capability], cmd: &Command) -> AuthError {
    match zero_auth::authorize(caps, cmd, &Ipld::Map(BTreeMap::new())) {
        Err(e @ AuthError::InvalidClaim { .. }) => e,
        _ => AuthError::InvalidClaim {
            token: Box::new(zero_auth::Cid::default()),
            reason: format!("the capability does not cover `{cmd}`"),
        },
    }
}

fn no_token() -> AuthError {
    AuthError::InvalidClaim {
        token: Box::new(zero_auth::Cid::default()),
        reason: "no capability token: sign the component (or the invocation) with a /db capability"
            .into(),
    }
}

fn expired() -> AuthError {
    AuthError::InvalidClaim {
        token: Box::new(zero_auth::Cid::default()),
        reason: "the capability token has expired; sign it again".into(),
    }
}

/// The most answers a [`ChainGrants`] keeps: a deployment's grants are shared by all its
/// requests, which could otherwise grow the cache without bound by naming ever new tables.
pub const MAX_CACHED_ANSWERS: usize = 4096;

impl Grants for ChainGrants {
    fn allows(&self, action: Action, db: &str, table: &str) -> bool {
        if self.expired() {
            return false;
        }
        let key = (action, db.to_owned(), table.to_owned());
        let cached = {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.get(&key).copied()
        };
        if let Some(answer) = cached {
            return answer;
        }
        let answer = match self.check(action, db, table) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(db, table, %action, "zerodb: capability refused: {e}");
                false
            }
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() < MAX_CACHED_ANSWERS {
            cache.insert(key, answer);
        }
        answer
    }

    fn allows_every_table(&self, action: Action, db: &str) -> bool {
        self.check_every_table(action, db).is_ok()
    }
}

/// Three-valued result of evaluating a statement while `.table` is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tri {
    True,
    False,
    /// Depends on the table.
    Maybe,
}

/// Evaluates `st` on `args`, which lack `table`: a statement that does not read `.table` is
/// decided exactly (as [`Statement::holds`] decides it); one that does is [`Tri::Maybe`],
/// combined through `not`, `and` and `or` with Kleene logic.
fn partial(st: &Statement, args: &Ipld) -> Tri {
    if !reads_table(st) {
        return if st.holds(args) {
            Tri::True
        } else {
            Tri::False
        };
    }
    match st {
        Statement::Not(inner) => match partial(inner, args) {
            Tri::True => Tri::False,
            Tri::False => Tri::True,
            Tri::Maybe => Tri::Maybe,
        },
        Statement::And(items) => {
            let r: Vec<Tri> = items.iter().map(|s| partial(s, args)).collect();
            if r.contains(&Tri::False) {
                Tri::False
            } else if r.contains(&Tri::Maybe) {
                Tri::Maybe
            } else {
                Tri::True
            }
        }
        Statement::Or(items) => {
            let r: Vec<Tri> = items.iter().map(|s| partial(s, args)).collect();
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

/// Whether a statement's value can depend on the `table` argument.
fn reads_table(st: &Statement) -> bool {
    st.may_read_field("table")
}

#[cfg(test)]
mod tests {
    use super::*;
    use zero_auth::{Keypair, Policy};

    fn s(v: &str) -> Ipld {
        Ipld::String(v.into())
    }

    fn stmt(op: &str, sel: &str, v: Ipld) -> Ipld {
        Ipld::List(vec![s(op), s(sel), v])
    }

    /// One link granting `cmd` under `policy` (statements in wire form).
    fn grants(cmd: &str, policy: Vec<Ipld>) -> ChainGrants {
        let issuer = Keypair::from_seed(&[7; 32]).did().clone();
        let cap = Capability {
            delegation: zero_auth::Cid::default(),
            issuer,
            command: Command::parse(cmd).unwrap(),
            policy: Policy::from_ipld(&Ipld::List(policy)).unwrap(),
        };
        let base = BTreeMap::from([("tenant".to_owned(), s("acme"))]);
        ChainGrants::new(Some(vec![cap]), base, None)
    }

    #[test]
    fn a_deployments_answers_are_cached_within_a_bound_and_never_outlive_its_token() {
        // One ChainGrants serves every request of a deployment: naming ever new tables must
        // not grow its cache without bound, and the answers stay right past the bound.
        let g = grants("/db", vec![stmt("==", ".db", s("app"))]);
        for i in 0..MAX_CACHED_ANSWERS + 100 {
            assert!(g.allows(Action::Read, "app", &format!("t{i}")));
            assert!(!g.allows(Action::Read, "other", &format!("t{i}")));
        }
        let cached = g.cache.lock().unwrap().len();
        assert_eq!(cached, MAX_CACHED_ANSWERS);
        assert!(g.allows(Action::Read, "app", "t1"));
        assert!(!g.allows(Action::Write, "other", "t1"));
        // An answer cached while the token was valid is not given once it has expired.
        let mut g = grants("/db", vec![]);
        assert!(g.allows(Action::Read, "app", "todos"));
        g.expiration = Some(1);
        assert!(!g.allows(Action::Read, "app", "todos"));
    }

    #[test]
    fn table_scoped_policies_are_decided_per_table_and_gate_the_database() {
        let g = grants(
            "/db",
            vec![
                stmt("==", ".db", s("app")),
                stmt("==", ".table", s("todos")),
            ],
        );
        assert!(g.check_database("app").is_ok());
        let e = g.check_database("other").unwrap_err();
        assert_eq!(e.name(), "MatchError");
        assert!(e.to_string().contains(".db"), "{e}");
        assert!(g.allows(Action::Read, "app", "todos"));
        assert!(g.allows(Action::Delete, "app", "todos"));
        assert!(!g.allows(Action::Read, "app", "keys"));
        assert!(!g.allows(Action::Read, "other", "todos"));
        assert!(!g.allows_every_table(Action::Read, "app"));
        // A statement on `.table` nested in `or`/`not`, or a quoted selector, is per table too.
        let g = grants(
            "/db/read",
            vec![
                stmt("==", ".db", s("app")),
                Ipld::List(vec![s("not"), stmt("==", ".[\"table\"]", s("keys"))]),
            ],
        );
        assert!(g.check_database("app").is_ok());
        assert!(g.allows(Action::Read, "app", "todos"));
        assert!(!g.allows(Action::Read, "app", "keys"));
        assert!(!g.allows(Action::Write, "app", "todos"));
        // A false statement on another field refuses the database whatever the table.
        let g = grants(
            "/db",
            vec![Ipld::List(vec![
                s("or"),
                Ipld::List(vec![
                    stmt("==", ".db", s("x")),
                    stmt("==", ".tenant", s("beta")),
                ]),
            ])],
        );
        assert!(g.check_database("app").is_err());
        // Database-wide grants allow every table.
        let g = grants("/db", vec![stmt("==", ".db", s("app"))]);
        assert!(g.allows_every_table(Action::Create, "app"));
        assert!(!g.allows_every_table(Action::Create, "other"));
        // A chain without a /db command reaches no database.
        let g = grants("/fs", vec![]);
        assert_eq!(g.check_database("app").unwrap_err().name(), "InvalidClaim");
        let none = ChainGrants::new(None, BTreeMap::new(), None);
        assert!(none.check_database("app").is_err());
        assert!(!none.allows(Action::Read, "app", "t"));
    }

    #[test]
    fn selectors_reaching_the_table_field_are_recognised() {
        for sel in [
            ".table",
            ".table?",
            ".table.x",
            ".[\"table\"]",
            ".\"table\"",
            ".",
            ".[]",
        ] {
            assert!(selector_reads_table(sel), "{sel}");
        }
        for sel in [".db", ".tables", ".tenant", ".[\"db\"]", ".component"] {
            assert!(!selector_reads_table(sel), "{sel}");
        }
    }

    /// The statement walk over a parsed selector (a selector the parser refuses can be in no
    /// policy, so it counts as reaching anything).
    fn selector_reads_table(sel: &str) -> bool {
        zero_auth::policy::Selector::parse(sel)
            .map_or(true, |s| reads_table(&Statement::Equal(s, Ipld::Null)))
    }
}

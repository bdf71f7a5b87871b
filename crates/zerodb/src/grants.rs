//! Table-level capabilities: what a caller may do to which table.
//!
//! The engine asks a [`Grants`] once per (action, table) a statement performs. The node's
//! answer is [`zero_auth::ScopedChain`], the one capability checker: each (action, table) is
//! asked as `allows("/db/<action>", {db, table})` on top of the caller's fixed arguments
//! (`tenant` and `component` for a component, the invocation's own for a management call), so
//! a policy on `.table` is evaluated where the table is known; its answers are memoized per
//! deployment. Tests use [`StaticGrants`].

use std::collections::HashSet;

use zero_auth::{Command, Error as AuthError, ScopedChain};

pub use zero_auth::Action;

/// The namespace of the database commands (`/db/read`, `/db/write`, `/db/create`, `/db/delete`).
pub const DB_NAMESPACE: &str = "/db";

/// The command of a table action (`/db/read`, …).
pub fn table_command(action: Action) -> Result<Command, AuthError> {
    action.command(DB_NAMESPACE)
}

/// The refusal of `action` on `table` of database `db` in the words of the app manifest: what
/// was not granted and the `[capabilities.databases.DB]` line that grants it (`read` for
/// reading, `write` for the other actions, which `write` grants together).
pub fn refusal_hint(action: Action, db: &str, table: &str) -> String {
    let key = if action == Action::Read {
        "read"
    } else {
        "write"
    };
    zero_provider::not_granted(
        &format!("{DB_NAMESPACE}/{action} on table `{table}` of database `{db}`"),
        &format!(
            "[capabilities.databases.{}] {key} = {}",
            toml_key(db),
            zero_provider::toml_list(table)
        ),
    )
}

/// The refusal of opening database `db` (no table is known yet) in the words of the app
/// manifest: the `[capabilities.databases.DB]` lines that grant tables of it.
pub fn open_refusal_hint(db: &str) -> String {
    zero_provider::not_granted(
        &format!("{DB_NAMESPACE} on database `{db}`"),
        &format!(
            "[capabilities.databases.{}] write = [\"TABLE\"] (or read = [\"TABLE\"]), naming \
             the tables the app uses (\"*\" for every table)",
            toml_key(db)
        ),
    )
}

/// A database name as a TOML key: bare when it is made of letters, digits, `_` and `-`,
/// quoted otherwise.
fn toml_key(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        name.to_owned()
    } else {
        let list = zero_provider::toml_list(name);
        list.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned()
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

impl Grants for ScopedChain {
    fn allows(&self, action: Action, db: &str, table: &str) -> bool {
        let answer = table_command(action)
            .and_then(|cmd| ScopedChain::allows(self, &cmd, &[("db", db), ("table", table)]));
        match answer {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(db, table, %action, "zerodb: capability refused: {e}");
                false
            }
        }
    }

    fn allows_every_table(&self, action: Action, db: &str) -> bool {
        table_command(action)
            .and_then(|cmd| self.allows_every(&cmd, &[("db", db)], "table"))
            .is_ok()
    }
}

/// The check made before a database is opened (and so before it can be created), when no
/// table is known yet: `grants` must be able to allow some `/db` action on some table of `db`
/// ([`ScopedChain::reachable`] with `.table` open). So a chain limited to another database is
/// refused here, naming its statement on `.db`.
pub fn check_database(grants: &ScopedChain, db: &str) -> Result<(), AuthError> {
    let commands = Action::ALL
        .iter()
        .map(|a| table_command(*a))
        .collect::<Result<Vec<_>, _>>()?;
    grants.reachable(&commands, &[("db", db)], "table")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use zero_auth::{Capability, Ipld, Keypair, Policy};

    fn s(v: &str) -> Ipld {
        Ipld::String(v.into())
    }

    fn stmt(op: &str, sel: &str, v: Ipld) -> Ipld {
        Ipld::List(vec![s(op), s(sel), v])
    }

    /// One link granting `cmd` under `policy` (statements in wire form).
    fn grants(cmd: &str, policy: Vec<Ipld>) -> ScopedChain {
        let issuer = Keypair::from_seed(&[7; 32]).did().clone();
        let cap = Capability {
            delegation: zero_auth::Cid::default(),
            issuer,
            command: Command::parse(cmd).unwrap(),
            policy: Policy::from_ipld(&Ipld::List(policy)).unwrap(),
        };
        let base = BTreeMap::from([("tenant".to_owned(), s("acme"))]);
        ScopedChain::new(Some(vec![cap]), base, None)
    }

    #[test]
    fn refusals_name_the_manifest_line_to_add() {
        assert_eq!(
            refusal_hint(Action::Write, "notes", "tags"),
            "not granted: /db/write on table `tags` of database `notes`; add to zero.toml: \
             [capabilities.databases.notes] write = [\"tags\"]"
        );
        assert!(
            refusal_hint(Action::Read, "my db", "t")
                .ends_with(r#"[capabilities.databases."my db"] read = ["t"]"#)
        );
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
        assert!(check_database(&g, "app").is_ok());
        let e = check_database(&g, "other").unwrap_err();
        assert_eq!(e.name(), "MatchError");
        assert!(e.to_string().contains(".db"), "{e}");
        assert!(Grants::allows(&g, Action::Read, "app", "todos"));
        assert!(Grants::allows(&g, Action::Delete, "app", "todos"));
        assert!(!Grants::allows(&g, Action::Read, "app", "keys"));
        assert!(!Grants::allows(&g, Action::Read, "other", "todos"));
        assert!(!g.allows_every_table(Action::Read, "app"));
        // A statement on `.table` nested in `or`/`not`, or a quoted selector, is per table too.
        let g = grants(
            "/db/read",
            vec![
                stmt("==", ".db", s("app")),
                Ipld::List(vec![s("not"), stmt("==", ".[\"table\"]", s("keys"))]),
            ],
        );
        assert!(check_database(&g, "app").is_ok());
        assert!(Grants::allows(&g, Action::Read, "app", "todos"));
        assert!(!Grants::allows(&g, Action::Read, "app", "keys"));
        assert!(!Grants::allows(&g, Action::Write, "app", "todos"));
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
        assert!(check_database(&g, "app").is_err());
        // Database-wide grants allow every table.
        let g = grants("/db", vec![stmt("==", ".db", s("app"))]);
        assert!(g.allows_every_table(Action::Create, "app"));
        assert!(!g.allows_every_table(Action::Create, "other"));
        // A chain without a /db command reaches no database.
        let g = grants("/fs", vec![]);
        assert_eq!(
            check_database(&g, "app").unwrap_err().name(),
            "InvalidClaim"
        );
        let none = ScopedChain::default();
        assert!(check_database(&none, "app").is_err());
        assert!(!Grants::allows(&none, Action::Read, "app", "t"));
    }
}

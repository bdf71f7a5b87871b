//! Table-level capabilities: what a caller may do to which table.

use std::collections::HashSet;
use std::fmt;

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
}

impl<G: Grants + ?Sized> Grants for &G {
    fn allows(&self, action: Action, db: &str, table: &str) -> bool {
        (**self).allows(action, db, table)
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
}

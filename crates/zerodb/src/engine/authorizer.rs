//! SQLite's authorizer callback: records every (action, table) a statement performs and
//! refuses what no grant can allow (ATTACH, most PRAGMAs, virtual tables, other schemas).

use super::*;

/// Tables SQLite maintains itself (`sqlite_schema`, `sqlite_sequence`, `sqlite_stat1`, ...).
pub(super) fn is_internal(table: &str) -> bool {
    table.starts_with("sqlite_")
}

/// zerodb's own table in every database written through the replicated log: the index of the
/// last log command applied to that file. No statement of a caller may reach it.
pub(crate) const APPLIED_TABLE: &str = "_zerodb_applied";

/// PRAGMAs allowed (read-only schema introspection) and whether they name a table to read.
fn pragma_allowed(name: &str, value: Option<&str>) -> Option<Option<String>> {
    let name = name.to_ascii_lowercase();
    match name.as_str() {
        "table_info" | "table_xinfo" | "index_list" | "foreign_key_list" => {
            let t = value?
                .trim()
                .trim_matches(|c| c == '\'' || c == '"' || c == '`');
            Some(Some(t.to_ascii_lowercase()))
        }
        "user_version" | "data_version" | "foreign_keys" if value.is_none() => Some(None),
        _ => None,
    }
}

pub(super) fn authorize(st: &mut State, ctx: AuthContext<'_>) -> Authorization {
    if st.internal {
        return Authorization::Allow;
    }
    let db = ctx.database_name.unwrap_or("main");
    // (action, table, kind)
    let access: (Action, &str, Kind) = match ctx.action {
        AuthAction::Select => {
            st.saw_select = true;
            return Authorization::Allow;
        }
        AuthAction::Recursive => return Authorization::Allow,
        AuthAction::Read { table_name, .. } => (Action::Read, table_name, Kind::Plain),
        AuthAction::Insert { table_name } => (Action::Write, table_name, Kind::Plain),
        AuthAction::Update { table_name, .. } => (Action::Write, table_name, Kind::Plain),
        AuthAction::Delete { table_name } => (Action::Delete, table_name, Kind::Plain),
        AuthAction::CreateTable { table_name } => (Action::Create, table_name, Kind::CreateTable),
        AuthAction::CreateIndex { table_name, .. } => (Action::Create, table_name, Kind::Schema),
        AuthAction::CreateView { view_name } => (Action::Create, view_name, Kind::Schema),
        AuthAction::CreateTrigger { table_name, .. } => (Action::Create, table_name, Kind::Trigger),
        AuthAction::AlterTable { table_name, .. } => {
            st.saw_alter = true;
            (Action::Create, table_name, Kind::Schema)
        }
        AuthAction::DropTable { table_name } => (Action::Delete, table_name, Kind::Schema),
        AuthAction::DropIndex { table_name, .. } => (Action::Delete, table_name, Kind::Schema),
        AuthAction::DropView { view_name } => (Action::Delete, view_name, Kind::Schema),
        AuthAction::DropTrigger { table_name, .. } => (Action::Delete, table_name, Kind::Trigger),
        // ANALYZE summarises the table's rows (samples included) into sqlite_stat*: a read.
        AuthAction::Analyze { table_name } => (Action::Read, table_name, Kind::Analyze),
        AuthAction::Pragma {
            pragma_name,
            pragma_value,
        } if st.saw_alter && pragma_name.eq_ignore_ascii_case("quick_check") => {
            // SQLite's own check of existing rows after ALTER TABLE ADD COLUMN … NOT NULL/CHECK.
            let _ = pragma_value;
            return Authorization::Allow;
        }
        AuthAction::Function { function_name } => {
            if function_name.eq_ignore_ascii_case("load_extension") {
                return refuse(
                    st,
                    "load_extension()",
                    "extension loading is disabled in zerodb",
                );
            }
            return Authorization::Allow;
        }
        AuthAction::Pragma {
            pragma_name,
            pragma_value,
        } => {
            return match pragma_allowed(pragma_name, pragma_value) {
                Some(None) => Authorization::Allow,
                Some(Some(table)) => record(st, Action::Read, &table, Kind::Plain),
                None => refuse(
                    st,
                    format!("PRAGMA {pragma_name}"),
                    "only the read-only PRAGMAs table_info, table_xinfo, index_list, \
                     foreign_key_list, user_version, data_version and foreign_keys are allowed; \
                     connection settings are fixed by zerodb",
                ),
            };
        }
        AuthAction::Attach { .. } => {
            return refuse(st, "ATTACH", "a statement can only use its own database");
        }
        AuthAction::Detach { .. } => {
            return refuse(st, "DETACH", "a statement can only use its own database");
        }
        AuthAction::Transaction { .. } | AuthAction::Savepoint { .. } => {
            return refuse(
                st,
                "BEGIN/COMMIT/ROLLBACK/SAVEPOINT",
                "use Database::transaction (zero:db transactions) to group statements",
            );
        }
        AuthAction::CreateTempIndex { .. }
        | AuthAction::CreateTempTable { .. }
        | AuthAction::CreateTempTrigger { .. }
        | AuthAction::CreateTempView { .. }
        | AuthAction::DropTempIndex { .. }
        | AuthAction::DropTempTable { .. }
        | AuthAction::DropTempTrigger { .. }
        | AuthAction::DropTempView { .. } => {
            return refuse(
                st,
                "TEMP objects",
                "create ordinary tables, views, indexes and triggers instead",
            );
        }
        AuthAction::CreateVtable { .. } | AuthAction::DropVtable { .. } => {
            return refuse(st, "virtual tables", "virtual tables are not supported");
        }
        // Rebuilding indexes changes no data; SQLite also issues this internally (e.g. for
        // ALTER TABLE).
        AuthAction::Reindex { .. } => return Authorization::Allow,
        other => {
            return refuse(
                st,
                format!("{other:?}"),
                "this SQLite operation is not supported",
            );
        }
    };
    let (action, table, kind) = access;
    let table = table.to_ascii_lowercase();
    if st.saw_alter && table == "pragma_quick_check" {
        return Authorization::Allow;
    }
    if table.starts_with("pragma_") {
        return refuse(
            st,
            format!("table-valued PRAGMA {table}"),
            "use the allowed PRAGMA statements instead",
        );
    }
    if db != "main" && !is_internal(&table) {
        return refuse(
            st,
            format!("database `{db}`"),
            "only the main database is reachable",
        );
    }
    record(st, action, &table, kind)
}

/// How an access was reported.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Reading or changing rows.
    Plain,
    /// Creating a table.
    CreateTable,
    /// Creating, altering or dropping an index or view, altering or dropping a table.
    Schema,
    /// Creating or dropping a trigger.
    Trigger,
    /// `ANALYZE` of a table.
    Analyze,
}

fn record(st: &mut State, action: Action, table: &str, kind: Kind) -> Authorization {
    if table == APPLIED_TABLE {
        // zerodb's own record of the log position; checked here, before any grant, so that
        // no grant (not even every right on every table) reaches it, directly, through a
        // view, a trigger or a PRAGMA.
        return refuse(
            st,
            format!("table `{APPLIED_TABLE}`"),
            "it is zerodb's record of the replicated log position of this database; no \
             statement may read, change, create or drop it (name your table differently)",
        );
    }
    if st.stepping && st.bookkeeping && is_internal(table) {
        // SQLite's own reads while it runs a schema statement (ANALYZE loading sqlite_stat*).
        return Authorization::Allow;
    }
    if st.stepping {
        // SQLite re-prepared the statement (schema changed): only already-approved accesses.
        let ok = st.approved.iter().any(|(a, t)| *a == action && t == table);
        if !ok {
            if st.stepping_denial.is_none() {
                st.stepping_denial = Some((action, table.to_owned()));
            }
            return Authorization::Deny;
        }
        return Authorization::Allow;
    }
    st.entries.push(Entry {
        action,
        table: table.to_owned(),
        schema_op: matches!(kind, Kind::Schema | Kind::Trigger | Kind::CreateTable),
        analyze: kind == Kind::Analyze,
        trigger: kind == Kind::Trigger,
        create_table: kind == Kind::CreateTable,
    });
    Authorization::Allow
}

fn refuse(st: &mut State, what: impl Into<String>, why: impl Into<String>) -> Authorization {
    if st.refusal.is_none() {
        st.refusal = Some((what.into(), why.into()));
    }
    Authorization::Deny
}

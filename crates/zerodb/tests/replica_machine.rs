//! `zerodb::replica::DbMachine` on its own: real SQLite files in a temporary directory,
//! commands applied as zeroraft would apply them.

mod common;

use std::sync::Arc;

use zerodb::replica::{
    DbMachine, GrantSet, Statement, WriteCommand, WriteError, WriteKind, WriteResponse, plan_write,
};
use zerodb::{Action, Databases, Error, ExecResult, Limits, StaticGrants, Value};
use zeroraft::{AppliedState, Command, StateMachine};

/// The applied-state bytes zeroraft would give after entry `index` (term 1, leader 1, no
/// membership): postcard of `(Option<LogId>, StoredMembership)`, checked below.
fn state(index: u64) -> Vec<u8> {
    let mut bytes = vec![1, 1, 1];
    let mut i = index;
    loop {
        let b = (i & 0x7f) as u8;
        i >>= 7;
        if i == 0 {
            bytes.push(b);
            break;
        }
        bytes.push(b | 0x80);
    }
    bytes.extend([0, 0, 0]);
    assert_eq!(
        AppliedState::from_bytes(&bytes).unwrap().index(),
        Some(index)
    );
    bytes
}

fn open(root: &std::path::Path) -> DbMachine {
    let dbs = Arc::new(Databases::open(root, Limits::default()).unwrap());
    DbMachine::open(dbs).unwrap()
}

fn stmt(sql: &str, params: Vec<Value>) -> Statement {
    Statement {
        sql: sql.to_owned(),
        params,
    }
}

/// A command as the provider would propose it for `grants`.
fn propose(
    m: &DbMachine,
    tenant: &str,
    grants: &StaticGrants,
    kind: WriteKind,
    statements: Vec<Statement>,
) -> WriteCommand {
    let db = m.databases().database(tenant, "app").unwrap();
    plan_write(&db, grants, kind, statements)
        .unwrap()
        .expect("a write")
}

fn exec(sql: &str) -> (WriteKind, Vec<Statement>) {
    (WriteKind::Execute, vec![stmt(sql, vec![])])
}

/// Applies `commands` at indexes `first..`, recording the state of the last one.
fn apply(m: &mut DbMachine, first: u64, commands: &[WriteCommand]) -> Vec<WriteResponse> {
    apply_recording(m, first, commands, first + commands.len() as u64 - 1)
}

fn apply_recording(
    m: &mut DbMachine,
    first: u64,
    commands: &[WriteCommand],
    recorded: u64,
) -> Vec<WriteResponse> {
    let bytes: Vec<Vec<u8>> = commands.iter().map(|c| c.encode().unwrap()).collect();
    let cmds: Vec<Command<'_>> = bytes
        .iter()
        .enumerate()
        .map(|(i, data)| Command {
            index: first + i as u64,
            term: 1,
            data,
        })
        .collect();
    m.apply_commands(&cmds, &state(recorded))
        .unwrap()
        .iter()
        .map(|r| WriteResponse::decode(r).unwrap())
        .collect()
}

fn count(m: &DbMachine, tenant: &str, sql: &str) -> i64 {
    let db = m.databases().database(tenant, "app").unwrap();
    match &db.query(&StaticGrants::all(), sql, &[]).unwrap().rows[0][0] {
        Value::Integer(i) => *i,
        other => panic!("{other:?}"),
    }
}

fn admin() -> StaticGrants {
    StaticGrants::all()
}

fn cmd(m: &DbMachine, sql: &str) -> WriteCommand {
    let (k, s) = exec(sql);
    propose(m, "acme", &admin(), k, s)
}

#[test]
fn writes_apply_with_their_results_and_last_insert_id_never_depends_on_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = open(dir.path());
    let create = cmd(&m, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)");
    let r = apply(&mut m, 1, &[create]);
    assert_eq!(
        r,
        vec![WriteResponse::Executed(vec![ExecResult {
            rows_affected: 0,
            last_insert_id: 0
        }])]
    );
    let insert = |v: &str| {
        propose(
            &m,
            "acme",
            &admin(),
            WriteKind::Execute,
            vec![stmt(
                "INSERT INTO t (v) VALUES (?)",
                vec![Value::Text(v.into())],
            )],
        )
    };
    let (a, b) = (insert("a"), insert("b"));
    let r = apply(&mut m, 2, &[a, b]);
    assert_eq!(r[0].clone().into_exec().unwrap().last_insert_id, 1);
    assert_eq!(r[1].clone().into_exec().unwrap().last_insert_id, 2);
    // An UPDATE inserts nothing: 0, not this connection's last insert.
    let update = cmd(&m, "UPDATE t SET v = v || '!' WHERE id = 1");
    let r = apply(&mut m, 4, &[update]);
    assert_eq!(
        r[0].clone().into_exec().unwrap(),
        ExecResult {
            rows_affected: 1,
            last_insert_id: 0
        }
    );
    // A batch: one result per statement, all in one transaction.
    let batch = propose(
        &m,
        "acme",
        &admin(),
        WriteKind::Batch,
        vec![
            stmt("INSERT INTO t (v) VALUES ('c')", vec![]),
            stmt("INSERT INTO t (v) VALUES ('d')", vec![]),
        ],
    );
    let r = apply(&mut m, 5, &[batch]);
    let ids: Vec<i64> = r[0]
        .clone()
        .into_batch()
        .unwrap()
        .iter()
        .map(|e| e.last_insert_id)
        .collect();
    assert_eq!(ids, vec![3, 4]);
    // A query that writes (RETURNING) goes through the log and returns its rows.
    let q = propose(
        &m,
        "acme",
        &admin(),
        WriteKind::Query,
        vec![stmt("INSERT INTO t (v) VALUES ('e') RETURNING id", vec![])],
    );
    let rows = apply(&mut m, 6, &[q]).remove(0).into_rows().unwrap();
    assert_eq!(rows.rows, vec![vec![Value::Integer(5)]]);
    assert_eq!(m.applied_state().unwrap(), Some(state(6)));
}

#[test]
fn reads_are_not_proposed_and_writes_are() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = open(dir.path());
    let create = cmd(&m, "CREATE TABLE t (id INTEGER PRIMARY KEY)");
    apply(&mut m, 1, &[create]);
    let db = m.databases().database("acme", "app").unwrap();
    let read = plan_write(
        &db,
        &admin(),
        WriteKind::Query,
        vec![stmt("SELECT * FROM t", vec![])],
    );
    assert_eq!(read.unwrap(), None);
    let batch = vec![
        stmt("SELECT 1", vec![]),
        stmt("SELECT count(*) FROM t", vec![]),
    ];
    assert_eq!(
        plan_write(&db, &admin(), WriteKind::Batch, batch).unwrap(),
        None
    );
    let write = plan_write(
        &db,
        &admin(),
        WriteKind::Execute,
        vec![stmt("DELETE FROM t", vec![])],
    );
    let write = write.unwrap().expect("a write");
    assert_eq!(
        (write.tenant.as_str(), write.database.as_str()),
        ("acme", "app")
    );
    // A table this replica does not know yet: the leader's state decides.
    let unknown = plan_write(
        &db,
        &admin(),
        WriteKind::Execute,
        vec![stmt("INSERT INTO later VALUES (1)", vec![])],
    );
    assert!(unknown.unwrap().is_some());
    // What no schema can make valid is refused here already.
    let attach = plan_write(
        &db,
        &admin(),
        WriteKind::Execute,
        vec![stmt("ATTACH 'x' AS x", vec![])],
    );
    assert!(matches!(attach, Err(Error::Refused { .. })), "{attach:?}");
}

#[test]
fn refused_and_failed_writes_are_responses_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = open(dir.path());
    let setup = cmd(&m, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)");
    let one = cmd(&m, "INSERT INTO t (v) VALUES ('x')");
    apply(&mut m, 1, &[setup]);
    apply(&mut m, 2, std::slice::from_ref(&one));
    let r = apply(&mut m, 3, &[one]);
    assert!(
        matches!(&r[0], WriteResponse::Failed(WriteError::Constraint { .. })),
        "{r:?}"
    );
    let random = cmd(&m, "INSERT INTO t (v) VALUES (random())");
    let r = apply(&mut m, 4, &[random]);
    match r[0].clone().into_exec() {
        Err(Error::Refused { what, .. }) => assert!(what.contains("random()"), "{what}"),
        other => panic!("{other:?}"),
    }
    let clock = cmd(&m, "INSERT INTO t (v) VALUES (datetime('now'))");
    let r = apply(&mut m, 5, &[clock]);
    assert!(
        matches!(&r[0], WriteResponse::Failed(WriteError::Refused { .. })),
        "{r:?}"
    );
    // A batch whose second statement fails leaves nothing of the first.
    let batch = propose(
        &m,
        "acme",
        &admin(),
        WriteKind::Batch,
        vec![
            stmt("INSERT INTO t (v) VALUES ('y')", vec![]),
            stmt("INSERT INTO t (v) VALUES ('x')", vec![]),
        ],
    );
    let r = apply(&mut m, 6, &[batch]);
    assert!(
        matches!(&r[0], WriteResponse::Failed(WriteError::Constraint { .. })),
        "{r:?}"
    );
    assert_eq!(count(&m, "acme", "SELECT count(*) FROM t"), 1);
    // A corrupt command is a response too.
    let cmds = [Command {
        index: 7,
        term: 1,
        data: b"\xff\xff\xff",
    }];
    let r = m.apply_commands(&cmds, &state(7)).unwrap();
    assert!(matches!(
        WriteResponse::decode(&r[0]).unwrap(),
        WriteResponse::Failed(WriteError::Other(_))
    ));
}

#[test]
fn the_instruction_bound_stops_a_runaway_write_identically() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = open(dir.path());
    let setup = cmd(&m, "CREATE TABLE t (n INTEGER)");
    apply(&mut m, 1, &[setup]);
    let mut runaway = cmd(
        &m,
        "INSERT INTO t WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) \
         SELECT x FROM c LIMIT 100000000",
    );
    runaway.max_instructions = 1_000_000;
    let r = apply(&mut m, 2, &[runaway]);
    assert_eq!(
        r[0],
        WriteResponse::Failed(WriteError::LimitExceeded {
            kind: "instructions".into(),
            limit: 1_000_000
        })
    );
    assert_eq!(count(&m, "acme", "SELECT count(*) FROM t"), 0);
}

#[test]
fn rights_are_checked_at_apply_time_against_the_schema_the_write_runs_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = open(dir.path());
    let setup = propose(
        &m,
        "acme",
        &admin(),
        WriteKind::Batch,
        vec![
            stmt("CREATE TABLE notes (v TEXT)", vec![]),
            stmt("CREATE TABLE audit (v TEXT)", vec![]),
        ],
    );
    apply(&mut m, 1, &[setup]);
    // Proposed by a writer holding write on `notes` only...
    let writer = StaticGrants::new().allow(Action::Write, "app", "notes");
    let (k, s) = exec("INSERT INTO notes VALUES ('hi')");
    let write = propose(&m, "acme", &writer, k, s);
    // ... and, before it applies, the owner adds a trigger writing `audit`.
    let trigger = cmd(
        &m,
        "CREATE TRIGGER log AFTER INSERT ON notes BEGIN INSERT INTO audit VALUES (new.v); END",
    );
    let r = apply(&mut m, 2, &[trigger, write.clone()]);
    assert_eq!(
        r[0],
        WriteResponse::Executed(vec![ExecResult {
            rows_affected: 0,
            last_insert_id: 0
        }])
    );
    assert_eq!(
        r[1],
        WriteResponse::Failed(WriteError::PermissionDenied {
            action: "write".into(),
            db: "app".into(),
            table: "audit".into()
        })
    );
    assert_eq!(count(&m, "acme", "SELECT count(*) FROM notes"), 0);
    // The paired case: a writer holding write on both (and read on `notes`, which the
    // trigger's `new.v` reads) passes the same trigger.
    let both =
        writer
            .clone()
            .allow(Action::Write, "app", "audit")
            .allow(Action::Read, "app", "notes");
    let (k, s) = exec("INSERT INTO notes VALUES ('hi')");
    let ok = propose(&m, "acme", &both, k, s);
    let r = apply(&mut m, 4, &[ok]);
    assert!(matches!(&r[0], WriteResponse::Executed(_)), "{r:?}");
    assert_eq!(count(&m, "acme", "SELECT count(*) FROM audit"), 1);
    // A table created after the proposal, which the proposer could not name, is refused
    // (fail closed) even to a writer granted it by name...
    let (k, s) = exec("INSERT INTO fresh VALUES (1)");
    let early = propose(
        &m,
        "acme",
        &StaticGrants::new().allow(Action::Write, "app", "fresh"),
        k,
        s,
    );
    let create = cmd(&m, "CREATE TABLE fresh (n INTEGER)");
    let r = apply(&mut m, 5, &[create, early]);
    assert_eq!(
        r[1],
        WriteResponse::Failed(WriteError::PermissionDenied {
            action: "write".into(),
            db: "app".into(),
            table: "fresh".into()
        })
    );
    // ... and allowed to one granted the action on every table.
    let every = StaticGrants::new().allow(Action::Write, "app", "*");
    let (k, s) = exec("INSERT INTO later VALUES (1)");
    let owner_like = propose(&m, "acme", &every, k, s);
    let create = cmd(&m, "CREATE TABLE later (n INTEGER)");
    let r = apply(&mut m, 7, &[create, owner_like]);
    assert!(matches!(&r[1], WriteResponse::Executed(_)), "{r:?}");
    assert_eq!(count(&m, "acme", "SELECT count(*) FROM later"), 1);
}

#[test]
fn the_index_table_is_out_of_reach_of_every_statement() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = open(dir.path());
    let setup = cmd(&m, "CREATE TABLE t (n INTEGER)");
    apply(&mut m, 1, &[setup]);
    let db = m.databases().database("acme", "app").unwrap();
    db.execute(
        &admin(),
        "CREATE VIEW v AS SELECT * FROM _zerodb_applied",
        &[],
    )
    .unwrap();
    for sql in [
        "SELECT * FROM _zerodb_applied",
        "UPDATE _zerodb_applied SET idx = 0",
        "DELETE FROM _zerodb_applied",
        "DROP TABLE _zerodb_applied",
        "PRAGMA table_info(_zerodb_applied)",
        // A view is compiled where it is used: reading it reaches the table.
        "SELECT * FROM v",
        "ALTER TABLE _zerodb_applied ADD COLUMN y",
    ] {
        let e = db
            .run(&admin(), sql, &[])
            .map(|r| format!("{sql}: {r:?}"))
            .unwrap_err();
        match e {
            Error::Refused { what, .. } => {
                assert!(what.contains("_zerodb_applied"), "{sql}: {what}")
            }
            other => panic!("{sql}: {other:?}"),
        }
        // Through the log (a command carrying it, whatever the proposer checked), the same
        // refusal, and nothing changes.
        let mut c = cmd(&m, "INSERT INTO t VALUES (1)");
        c.statements = vec![stmt(sql, vec![])];
        let r = apply(&mut m, 100, &[c]);
        assert!(
            matches!(&r[0], WriteResponse::Failed(WriteError::Refused { .. })),
            "{sql}: {r:?}"
        );
    }
    // A trigger's body is compiled when it fires: firing one that reaches the table is
    // refused, when proposed and when applied.
    let trigger = cmd(
        &m,
        "CREATE TRIGGER x AFTER INSERT ON t BEGIN DELETE FROM _zerodb_applied; END",
    );
    let r = apply(&mut m, 101, &[trigger]);
    assert!(matches!(&r[0], WriteResponse::Executed(_)), "{r:?}");
    let fire = || vec![stmt("INSERT INTO t VALUES (2)", vec![])];
    let planned = plan_write(&db, &admin(), WriteKind::Execute, fire());
    assert!(matches!(planned, Err(Error::Refused { .. })), "{planned:?}");
    let mut c = cmd(&m, "DELETE FROM t");
    c.statements = fire();
    let r = apply(&mut m, 102, &[c]);
    assert!(
        matches!(&r[0], WriteResponse::Failed(WriteError::Refused { .. })),
        "{r:?}"
    );
    assert_eq!(count(&m, "acme", "SELECT count(*) FROM t"), 0);
    // Nor can a database that was never replicated get a table of that name.
    let other = tempfile::tempdir().unwrap();
    let fresh = Databases::open(other.path(), Limits::default()).unwrap();
    let db = fresh.database("acme", "app").unwrap();
    let e = db
        .execute(&admin(), "CREATE TABLE _zerodb_applied (x)", &[])
        .unwrap_err();
    assert!(matches!(e, Error::Refused { .. }), "{e:?}");
}

#[test]
fn a_command_already_in_its_file_is_not_applied_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = open(dir.path());
    let setup = propose(
        &m,
        "acme",
        &admin(),
        WriteKind::Batch,
        vec![
            stmt("CREATE TABLE c (n INTEGER)", vec![]),
            stmt("INSERT INTO c VALUES (0)", vec![]),
        ],
    );
    apply(&mut m, 1, &[setup]);
    let bump = cmd(&m, "UPDATE c SET n = n + 1");
    // The file commits entry 2, but the overall record stays at 1: a crash between the two.
    apply_recording(&mut m, 2, std::slice::from_ref(&bump), 1);
    assert_eq!(count(&m, "acme", "SELECT n FROM c"), 1);
    drop(m);
    let mut m = open(dir.path());
    assert_eq!(m.applied_state().unwrap(), Some(state(1)));
    // zeroraft re-applies entry 2: skipped, the counter stays at 1.
    let r = apply(&mut m, 2, std::slice::from_ref(&bump));
    assert_eq!(r[0], WriteResponse::AlreadyApplied);
    assert_eq!(count(&m, "acme", "SELECT n FROM c"), 1);
    // The next entry applies.
    apply(&mut m, 3, &[bump]);
    assert_eq!(count(&m, "acme", "SELECT n FROM c"), 2);
}

#[test]
fn a_write_for_another_tenant_or_database_than_its_rights_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = open(dir.path());
    let victim = propose(
        &m,
        "globex",
        &admin(),
        WriteKind::Execute,
        vec![stmt("CREATE TABLE secrets (s TEXT)", vec![])],
    );
    apply(&mut m, 1, &[victim]);
    // acme's rights, retargeted at globex's database.
    let mut forged = cmd(&m, "CREATE TABLE x (n INTEGER)");
    forged.tenant = "globex".into();
    forged.statements = vec![stmt("DROP TABLE secrets", vec![])];
    let r = apply(&mut m, 2, &[forged.clone()]);
    assert!(
        matches!(&r[0], WriteResponse::Failed(WriteError::Refused { .. })),
        "{r:?}"
    );
    forged.tenant = "acme".into();
    forged.database = "other".into();
    let r = apply(&mut m, 3, &[forged]);
    assert!(
        matches!(&r[0], WriteResponse::Failed(WriteError::Refused { .. })),
        "{r:?}"
    );
    assert_eq!(
        count(
            &m,
            "globex",
            "SELECT count(*) FROM sqlite_schema WHERE name = 'secrets'"
        ),
        1
    );
    // A name that is not valid never reaches the filesystem.
    let mut bad = cmd(&m, "CREATE TABLE y (n INTEGER)");
    bad.tenant = "../acme".into();
    let r = apply(&mut m, 4, &[bad]);
    assert!(
        matches!(&r[0], WriteResponse::Failed(WriteError::InvalidName(_))),
        "{r:?}"
    );
    // GrantSet: rights for one database never answer for another.
    let set = GrantSet::capture(&admin(), "acme", "app", ["t".to_string()]);
    assert!(zerodb::Grants::allows(&set, Action::Write, "app", "t"));
    assert!(!zerodb::Grants::allows(&set, Action::Write, "other", "t"));
}

#[test]
fn a_snapshot_installs_every_database_and_replaces_what_was_there() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = open(&dir.path().join("a"));
    let mut cmds = Vec::new();
    for tenant in ["acme", "globex"] {
        cmds.push(propose(
            &a,
            tenant,
            &admin(),
            WriteKind::Batch,
            vec![
                stmt("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", vec![]),
                stmt(
                    "INSERT INTO t (v) VALUES (?)",
                    vec![Value::Text(tenant.into())],
                ),
            ],
        ));
    }
    apply(&mut a, 1, &cmds);
    let mut snapshot = Vec::new();
    a.snapshot(&mut snapshot).unwrap();

    let mut b = open(&dir.path().join("b"));
    let stale = propose(
        &b,
        "stale",
        &admin(),
        WriteKind::Execute,
        vec![stmt("CREATE TABLE old (n INTEGER)", vec![])],
    );
    apply(&mut b, 1, &[stale]);
    b.install_snapshot(&mut snapshot.as_slice(), &state(2))
        .unwrap();
    assert_eq!(b.applied_state().unwrap(), Some(state(2)));
    assert!(!b.databases().exists("stale", "app").unwrap());
    for tenant in ["acme", "globex"] {
        let db = b.databases().database(tenant, "app").unwrap();
        let rows = db.query(&admin(), "SELECT id, v FROM t", &[]).unwrap().rows;
        assert_eq!(
            rows,
            vec![vec![Value::Integer(1), Value::Text(tenant.into())]]
        );
    }
    // The files carry their applied index: entry 2 again is skipped, entry 3 applies.
    let again = propose(
        &b,
        "globex",
        &admin(),
        WriteKind::Execute,
        vec![stmt("INSERT INTO t (v) VALUES ('again')", vec![])],
    );
    let r = apply(&mut b, 2, std::slice::from_ref(&again));
    assert_eq!(r[0], WriteResponse::AlreadyApplied);
    let r = apply(&mut b, 3, &[again]);
    assert_eq!(r[0].clone().into_exec().unwrap().last_insert_id, 2);
    // And a restart keeps it all.
    drop(b);
    let mut b = open(&dir.path().join("b"));
    assert_eq!(b.applied_state().unwrap(), Some(state(3)));
    assert_eq!(count(&b, "globex", "SELECT count(*) FROM t"), 2);

    // A corrupt snapshot is refused before anything is replaced.
    let mut c = open(&dir.path().join("c"));
    let keep = propose(
        &c,
        "acme",
        &admin(),
        WriteKind::Execute,
        vec![stmt("CREATE TABLE keep (n INTEGER)", vec![])],
    );
    apply(&mut c, 1, &[keep]);
    let truncated = &snapshot[..snapshot.len() / 2];
    assert!(c.install_snapshot(&mut &truncated[..], &state(2)).is_err());
    assert_eq!(c.applied_state().unwrap(), Some(state(1)));
    assert_eq!(
        count(
            &c,
            "acme",
            "SELECT count(*) FROM sqlite_schema WHERE name = 'keep'"
        ),
        1
    );
}

#[test]
fn an_install_interrupted_after_its_files_were_staged_restarts_with_no_applied_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = open(dir.path());
    let setup = cmd(&m, "CREATE TABLE t (n INTEGER)");
    apply(&mut m, 1, &[setup]);
    drop(m);
    // What a crash between steps (2) and (3) of an install leaves: staged files, no overall
    // record.
    let staged = dir.path().join(".zerodb-install").join("acme");
    std::fs::create_dir_all(&staged).unwrap();
    std::fs::write(staged.join("app.sqlite"), b"partial").unwrap();
    std::fs::remove_file(dir.path().join(".zerodb-applied")).unwrap();
    let mut m = open(dir.path());
    // No applied state: zeroraft installs its stored snapshot again before replaying.
    assert_eq!(m.applied_state().unwrap(), None);
    assert!(!dir.path().join(".zerodb-install").exists());
    assert!(!m.databases().list("acme").unwrap().is_empty());
}

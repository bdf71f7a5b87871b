#![allow(dead_code)]
use std::sync::Arc;
use zerodb::{Action, Database, Databases, Limits, StaticGrants};

pub fn setup(limits: Limits) -> (tempfile::TempDir, Databases, Arc<Database>) {
    let dir = tempfile::tempdir().unwrap();
    let dbs = Databases::open(dir.path(), limits).unwrap();
    let db = dbs.database("acme", "app").unwrap();
    (dir, dbs, db)
}

pub fn admin() -> StaticGrants {
    StaticGrants::all()
}

pub fn grants(entries: &[(Action, &str)]) -> StaticGrants {
    let mut g = StaticGrants::new();
    for (a, t) in entries {
        g.insert(*a, "app", t);
    }
    g
}

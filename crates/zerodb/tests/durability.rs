//! A child process commits in a loop and is SIGKILLed; every commit it reported survives.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use zerodb::{Databases, Limits, StaticGrants, Value};

const ENV: &str = "ZERODB_DURABILITY_CHILD_ROOT";

/// The child: only does something when started by `killed_writer_loses_no_acknowledged_commit`.
#[test]
fn durability_child_writer() {
    let Ok(root) = std::env::var(ENV) else { return };
    let dbs = Databases::open(&root, Limits::default()).unwrap();
    let db = dbs.database("acme", "durable").unwrap();
    let g = StaticGrants::all();
    db.execute(
        &g,
        "CREATE TABLE IF NOT EXISTS log (n INTEGER PRIMARY KEY, body TEXT)",
        &[],
    )
    .unwrap();
    let mut out = std::io::stdout().lock();
    for n in 1..=1_000_000i64 {
        db.transaction(&g, |tx| {
            tx.execute(
                "INSERT INTO log (n, body) VALUES (?1, ?2)",
                &[Value::Integer(n), Value::Text(format!("row {n}"))],
            )?;
            Ok(())
        })
        .unwrap();
        // Printed only after COMMIT returned: an acknowledged commit.
        writeln!(out, "committed {n}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn killed_writer_loses_no_acknowledged_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "durability_child_writer",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut last = 0i64;
    for line in lines.by_ref() {
        if let Some(n) = line.unwrap().strip_prefix("committed ") {
            last = n.trim().parse().unwrap();
            if last >= 150 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    // Lines printed between our last read and the kill count too.
    for line in lines {
        let Ok(line) = line else { break };
        if let Some(Ok(n)) = line
            .strip_prefix("committed ")
            .map(|n| n.trim().parse::<i64>())
        {
            last = last.max(n);
        }
    }
    child.wait().unwrap();
    assert!(last >= 150, "child committed only {last}");
    let dbs = Databases::open(dir.path(), Limits::default()).unwrap();
    let db = dbs.database("acme", "durable").unwrap();
    let r = db
        .query(
            &StaticGrants::all(),
            "SELECT count(*), max(n) FROM log WHERE n <= ?1",
            &[Value::Integer(last)],
        )
        .unwrap();
    assert_eq!(r.rows[0], vec![Value::Integer(last), Value::Integer(last)]);
}

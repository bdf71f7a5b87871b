//! zerodb writes replicated by a real zeroraft cluster: three (then four) `RaftNode<DbMachine>`
//! in one process, each with its own loopback listener, redb log and SQLite files in a
//! temporary directory, talking over the mutual-TLS peer channels.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zero_auth::Keypair;
use zerodb::replica::{
    DbMachine, Replicator, Statement, WriteCommand, WriteError, WriteKind, WriteResponse,
    plan_write,
};
use zerodb::{Databases, Limits, StaticGrants, Value};
use zeroraft::peer::Peers;
use zeroraft::{NodeConfig, RaftNode, SnapshotSettings, Timing};

/// Generous bounds for a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(60);

struct Cluster {
    root: tempfile::TempDir,
    keys: Vec<Keypair>,
    peers: Arc<Peers>,
}

impl Cluster {
    fn new(count: usize) -> Cluster {
        let keys: Vec<Keypair> = (0..count).map(|_| Keypair::generate().unwrap()).collect();
        let peers = Peers::new(keys.iter().map(|k| k.did().clone()));
        Cluster {
            root: tempfile::tempdir().unwrap(),
            keys,
            peers,
        }
    }

    fn dir(&self, id: u64) -> PathBuf {
        self.root.path().join(format!("node{id}"))
    }

    async fn start(&self, id: u64) -> RaftNode<DbMachine> {
        let dbs = Databases::open(self.dir(id).join("db"), Limits::default()).unwrap();
        let machine = DbMachine::open(Arc::new(dbs)).unwrap();
        let key = self.keys[(id - 1) as usize].clone();
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut config = NodeConfig::new(
            id,
            key,
            listen,
            self.dir(id).join("raft"),
            self.peers.clone(),
        );
        config.timing = Timing {
            heartbeat: Duration::from_millis(150),
            election_min: Duration::from_millis(1000),
            election_max: Duration::from_millis(2000),
        };
        // Snapshots often, and no log kept after them: a new member must catch up from one.
        config.snapshot = SnapshotSettings {
            logs_since_last: 8,
            keep_logs: 0,
        };
        RaftNode::start(config, machine).await.unwrap()
    }
}

fn stmt(sql: &str, params: Vec<Value>) -> Statement {
    Statement {
        sql: sql.to_owned(),
        params,
    }
}

/// Proposes like the provider: planned on the leader's local replica with `grants`.
fn propose(
    node: &RaftNode<DbMachine>,
    tenant: &str,
    grants: &StaticGrants,
    kind: WriteKind,
    statements: Vec<Statement>,
) -> WriteCommand {
    node.read(|m| {
        let db = m.databases().database(tenant, "app").unwrap();
        plan_write(&db, grants, kind, statements)
            .unwrap()
            .expect("a write")
    })
    .unwrap()
}

async fn write(node: &RaftNode<DbMachine>, sql: &str, params: Vec<Value>) -> WriteResponse {
    let c = propose(
        node,
        "acme",
        &StaticGrants::all(),
        WriteKind::Execute,
        vec![stmt(sql, params)],
    );
    node.submit(c).await.unwrap()
}

fn rows(node: &RaftNode<DbMachine>, tenant: &str, sql: &str) -> Vec<Vec<Value>> {
    node.read(|m| {
        let db = m.databases().database(tenant, "app").unwrap();
        db.query(&StaticGrants::all(), sql, &[]).unwrap().rows
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_replicate_identically_refusals_are_the_same_everywhere_and_a_new_member_catches_up()
{
    let cluster = Cluster::new(4);
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(cluster.start(id).await);
    }
    let leader = &nodes[0];
    leader.initialize().await.unwrap();
    leader.wait_for_leader(WAIT).await.unwrap();
    for id in [2u64, 3] {
        let member = nodes[(id - 1) as usize].member().clone();
        leader.add_learner(id, member, WAIT).await.unwrap();
    }
    leader
        .change_membership(BTreeSet::from([1, 2, 3]))
        .await
        .unwrap();

    // Writes through the leader: the same ids on every replica.
    let r = write(
        leader,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)",
        vec![],
    )
    .await;
    assert!(matches!(r, WriteResponse::Executed(_)), "{r:?}");
    let mut ids = Vec::new();
    for i in 0..12 {
        let r = write(
            leader,
            "INSERT INTO t (v) VALUES (?)",
            vec![Value::Text(format!("v{i}"))],
        )
        .await;
        ids.push(r.into_exec().unwrap().last_insert_id);
    }
    assert_eq!(ids, (1..=12).collect::<Vec<i64>>());
    // A constraint error, a non-deterministic function, the index table, another tenant.
    let dup = write(leader, "INSERT INTO t (v) VALUES ('v0')", vec![]).await;
    assert!(
        matches!(dup, WriteResponse::Failed(WriteError::Constraint { .. })),
        "{dup:?}"
    );
    let random = write(
        leader,
        "INSERT INTO t (v) VALUES (hex(randomblob(8)))",
        vec![],
    )
    .await;
    assert!(
        matches!(random, WriteResponse::Failed(WriteError::Refused { .. })),
        "{random:?}"
    );
    let mut index = propose(
        leader,
        "acme",
        &StaticGrants::all(),
        WriteKind::Execute,
        vec![stmt("DELETE FROM t", vec![])],
    );
    index.statements = vec![stmt("UPDATE _zerodb_applied SET idx = 0", vec![])];
    let r = leader.submit(index).await.unwrap();
    assert!(
        matches!(r, WriteResponse::Failed(WriteError::Refused { .. })),
        "{r:?}"
    );
    let mut forged = propose(
        leader,
        "acme",
        &StaticGrants::all(),
        WriteKind::Execute,
        vec![stmt("DELETE FROM t", vec![])],
    );
    forged.tenant = "globex".into();
    let r = leader.submit(forged).await.unwrap();
    assert!(
        matches!(r, WriteResponse::Failed(WriteError::Refused { .. })),
        "{r:?}"
    );
    let last = leader.status().applied_index.unwrap();

    let expected = rows(leader, "acme", "SELECT id, v FROM t ORDER BY id");
    assert_eq!(expected.len(), 12);
    for node in &nodes {
        node.wait_applied(last, WAIT).await.unwrap();
        assert_eq!(
            rows(node, "acme", "SELECT id, v FROM t ORDER BY id"),
            expected,
            "node {}",
            node.id()
        );
        // Nothing reached another tenant anywhere.
        assert!(
            !node
                .read(|m| m.databases().exists("globex", "app").unwrap())
                .unwrap()
        );
    }

    // A new member joins after the log was compacted: it catches up from a snapshot.
    let deadline = Instant::now() + WAIT;
    while leader.status().purged_index.is_none() {
        assert!(
            Instant::now() < deadline,
            "the leader never compacted its log"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let newcomer = cluster.start(4).await;
    leader
        .add_learner(4, newcomer.member().clone(), WAIT)
        .await
        .unwrap();
    newcomer.wait_applied(last, WAIT).await.unwrap();
    assert!(
        newcomer.status().snapshot_index.is_some(),
        "{:?}",
        newcomer.status()
    );
    assert_eq!(
        rows(&newcomer, "acme", "SELECT id, v FROM t ORDER BY id"),
        expected
    );
    // And the log continues on it with the same ids.
    let r = write(leader, "INSERT INTO t (v) VALUES ('after')", vec![]).await;
    let id = r.into_exec().unwrap().last_insert_id;
    assert_eq!(id, 13);
    let last = leader.status().applied_index.unwrap();
    newcomer.wait_applied(last, WAIT).await.unwrap();
    assert_eq!(
        rows(&newcomer, "acme", "SELECT id FROM t WHERE v = 'after'"),
        vec![vec![Value::Integer(13)]]
    );

    // A write submitted to a follower is forwarded to the leader (zeroraft's write
    // forwarding) and commits everywhere, with the next id.
    let c = propose(
        &nodes[1],
        "acme",
        &StaticGrants::all(),
        WriteKind::Execute,
        vec![stmt("INSERT INTO t (v) VALUES ('forwarded')", vec![])],
    );
    nodes[1].submit(c).await.unwrap();
    let last = leader.status().applied_index.unwrap();
    for node in [&nodes[1], &nodes[2], &newcomer] {
        node.wait_applied(last, WAIT).await.unwrap();
        assert_eq!(
            rows(node, "acme", "SELECT id FROM t WHERE v = 'forwarded'"),
            vec![vec![Value::Integer(14)]]
        );
    }

    newcomer.shutdown().await.unwrap();
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

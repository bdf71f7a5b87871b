//! zeroraft end to end: real nodes in one process, each with its own TCP listener on loopback
//! and its own redb files in a temporary directory, talking over the mutual-TLS peer channels.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zero_auth::Keypair;
use zeroraft::peer::{PeerChannel, Peers};
use zeroraft::{
    AppliedState, Command, Error, Member, NodeConfig, RaftNode, Role, SnapshotSettings,
    StateMachine, StateMachineError, Timing,
};

/// Generous bounds for a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(60);

/// A key-value state machine; `k=v` sets `k`, answering its previous value. It counts the
/// commands it applied (a re-applied command would show) and the snapshots it installed.
/// Persisted (rule 1: state and applied position in one atomically replaced file) when it has
/// a file, in memory (rule 2: rebuilt from snapshot and log) otherwise.
struct Kv {
    file: Option<PathBuf>,
    state: KvState,
    installs: u64,
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct KvState {
    data: BTreeMap<String, String>,
    applied_commands: u64,
    applied: Option<Vec<u8>>,
}

impl Kv {
    fn persisted(file: PathBuf) -> Kv {
        let state = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap(),
            Err(_) => KvState::default(),
        };
        Kv {
            file: Some(file),
            state,
            installs: 0,
        }
    }

    fn memory() -> Kv {
        Kv {
            file: None,
            state: KvState::default(),
            installs: 0,
        }
    }

    fn save(&self) -> Result<(), StateMachineError> {
        if let Some(file) = &self.file {
            let tmp = file.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec(&self.state).unwrap())?;
            std::fs::rename(&tmp, file)?;
        }
        Ok(())
    }

    fn get(&self, key: &str) -> Option<String> {
        self.state.data.get(key).cloned()
    }
}

impl StateMachine for Kv {
    fn applied_state(&mut self) -> Result<Option<Vec<u8>>, StateMachineError> {
        Ok(self.state.applied.clone())
    }

    fn apply(
        &mut self,
        commands: &[Command<'_>],
        state: &AppliedState,
    ) -> Result<Vec<Vec<u8>>, StateMachineError> {
        let mut responses = Vec::new();
        for command in commands {
            let text = String::from_utf8_lossy(command.data);
            let response = match text.split_once('=') {
                Some((k, v)) => self
                    .state
                    .data
                    .insert(k.to_string(), v.to_string())
                    .unwrap_or_default(),
                None => format!("error: {text:?} is not k=v"),
            };
            self.state.applied_commands += 1;
            responses.push(response.into_bytes());
        }
        self.state.applied = Some(state.as_bytes().to_vec());
        self.save()?;
        Ok(responses)
    }

    fn snapshot(&mut self, out: &mut dyn Write) -> Result<(), StateMachineError> {
        let body = serde_json::to_vec(&(&self.state.data, self.state.applied_commands))
            .map_err(StateMachineError::new)?;
        out.write_all(&body)?;
        Ok(())
    }

    fn install(
        &mut self,
        snapshot: &mut dyn Read,
        state: &AppliedState,
    ) -> Result<(), StateMachineError> {
        let mut body = Vec::new();
        snapshot.read_to_end(&mut body)?;
        let (data, applied_commands): (BTreeMap<String, String>, u64) =
            serde_json::from_slice(&body).map_err(StateMachineError::new)?;
        self.state = KvState {
            data,
            applied_commands,
            applied: Some(state.as_bytes().to_vec()),
        };
        self.installs += 1;
        self.save()
    }
}

fn timing() -> Timing {
    Timing {
        heartbeat: Duration::from_millis(150),
        election_min: Duration::from_millis(1000),
        election_max: Duration::from_millis(2000),
    }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A set of node keys, one temporary directory per node, and an allowed set of them all.
struct Nodes {
    root: tempfile::TempDir,
    keys: Vec<Keypair>,
    peers: Arc<Peers>,
    snapshot: SnapshotSettings,
}

impl Nodes {
    fn new(count: usize) -> Nodes {
        let keys: Vec<Keypair> = (0..count).map(|_| Keypair::generate().unwrap()).collect();
        let peers = Peers::new(keys.iter().map(|k| k.did().clone()));
        Nodes {
            root: tempfile::tempdir().unwrap(),
            keys,
            peers,
            snapshot: SnapshotSettings::default(),
        }
    }

    fn dir(&self, id: u64) -> PathBuf {
        self.root.path().join(format!("node{id}"))
    }

    fn kv(&self, id: u64) -> Kv {
        std::fs::create_dir_all(self.dir(id)).unwrap();
        Kv::persisted(self.dir(id).join("kv.json"))
    }

    fn config(&self, id: u64, listen: SocketAddr) -> NodeConfig {
        let key = self.keys[(id - 1) as usize].clone();
        let mut config = NodeConfig::new(id, key, listen, self.dir(id), self.peers.clone());
        config.timing = timing();
        config.snapshot = self.snapshot;
        config
    }

    async fn start(&self, id: u64, listen: SocketAddr, kv: Kv) -> RaftNode<Kv> {
        RaftNode::start(self.config(id, listen), kv).await.unwrap()
    }
}

async fn wait_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn write(node: &RaftNode<Kv>, command: &str) -> zeroraft::Written {
    node.write(command.as_bytes().to_vec()).await.unwrap()
}

fn value(node: &RaftNode<Kv>, key: &str) -> Option<String> {
    node.read(|kv| kv.get(key)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_member_cluster_writes_reads_and_restarts_without_reapplying() {
    let nodes = Nodes::new(1);
    let node = nodes.start(1, loopback(), nodes.kv(1)).await;
    let addr = node.local_addr();
    node.initialize().await.unwrap();
    assert_eq!(node.wait_for_leader(WAIT).await.unwrap(), 1);

    let first = write(&node, "a=1").await;
    assert_eq!(first.response, b"");
    let second = write(&node, "a=2").await;
    assert_eq!(second.response, b"1", "the response is the state machine's");
    assert!(second.index > first.index);
    let invalid = write(&node, "no equals sign").await;
    assert!(String::from_utf8_lossy(&invalid.response).contains("is not k=v"));
    write(&node, "b=3").await;
    assert_eq!(
        node.linearizable_read(|kv| kv.get("a")).await.unwrap(),
        Some("2".to_string())
    );

    let status = node.status();
    assert_eq!(status.role, Role::Leader);
    assert_eq!(status.leader, Some(1));
    assert!(status.term >= 1);
    assert_eq!(status.voters, BTreeSet::from([1]));
    assert_eq!(status.members[&1].did, nodes.keys[0].did().as_str());

    // Refusals: a second initialization, an oversized command.
    assert!(matches!(
        node.initialize().await,
        Err(Error::AlreadyInitialized)
    ));
    let e = node.write(vec![b'x'; (8 << 20) + 1]).await.unwrap_err();
    assert!(matches!(e, Error::CommandTooLarge { .. }), "{e}");

    // Restart from the files: the persisted state machine is not re-applied.
    node.shutdown().await.unwrap();
    let node = nodes.start(1, addr, nodes.kv(1)).await;
    node.wait_for_leader(WAIT).await.unwrap();
    node.ensure_linearizable().await.unwrap();
    assert_eq!(value(&node, "a").as_deref(), Some("2"));
    assert_eq!(node.read(|kv| kv.state.applied_commands).unwrap(), 4);
    let fourth = write(&node, "c=4").await;
    assert_eq!(node.read(|kv| kv.state.applied_commands).unwrap(), 5);
    node.shutdown().await.unwrap();

    // Restart with an in-memory state machine: rebuilt from the log, each command once.
    let node = nodes.start(1, addr, Kv::memory()).await;
    node.wait_for_leader(WAIT).await.unwrap();
    node.wait_applied(fourth.index, WAIT).await.unwrap();
    assert_eq!(value(&node, "c").as_deref(), Some("4"));
    assert_eq!(value(&node, "b").as_deref(), Some("3"));
    assert_eq!(node.read(|kv| kv.state.applied_commands).unwrap(), 5);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_replicate_elect_a_new_leader_and_catch_up() {
    let nodes = Nodes::new(3);
    let mut running = BTreeMap::new();
    for id in 1..=3 {
        running.insert(id, nodes.start(id, loopback(), nodes.kv(id)).await);
    }
    let addrs: BTreeMap<u64, SocketAddr> = running
        .iter()
        .map(|(id, n)| (*id, n.local_addr()))
        .collect();
    let leader = &running[&1];
    leader.initialize().await.unwrap();
    leader.wait_for_leader(WAIT).await.unwrap();
    for id in [2, 3] {
        leader
            .add_learner(id, running[&id].member().clone(), WAIT)
            .await
            .unwrap();
    }
    leader
        .change_membership(BTreeSet::from([1, 2, 3]))
        .await
        .unwrap();
    assert_eq!(leader.status().voters, BTreeSet::from([1, 2, 3]));

    // Writes on the leader are visible on the followers.
    let mut last = 0;
    for i in 0..10 {
        last = write(leader, &format!("k{i}={i}")).await.index;
    }
    for id in [2, 3] {
        running[&id].wait_applied(last, WAIT).await.unwrap();
        assert_eq!(value(&running[&id], "k9").as_deref(), Some("9"));
        assert_eq!(running[&id].status().leader, Some(1));
    }
    let lag = wait_until("the followers' lag to be reported", || {
        let lag = leader.status().lag;
        (lag.len() == 2 && lag.values().all(|l| l.is_some())).then_some(lag)
    })
    .await;
    assert!(lag.contains_key(&2) && lag.contains_key(&3), "{lag:?}");

    // A write to a follower is forwarded to the leader over the peer channel, committed, and
    // answered with the leader's response; every member applies it.
    let forwarded = running[&2].write(b"via=follower".to_vec()).await.unwrap();
    assert_eq!(forwarded.response, b"");
    let again = running[&3].write(b"via=second".to_vec()).await.unwrap();
    assert_eq!(
        again.response, b"follower",
        "the previous value, from the leader's state"
    );
    for id in 1..=3 {
        running[&id].wait_applied(again.index, WAIT).await.unwrap();
        assert_eq!(value(&running[&id], "via").as_deref(), Some("second"));
    }
    last = again.index;
    // A forwarded command over the size limit is refused before it is sent.
    let e = running[&2]
        .write(vec![b'x'; (8 << 20) + 1])
        .await
        .unwrap_err();
    assert!(matches!(e, Error::CommandTooLarge { .. }), "{e}");
    // A linearizable read on a follower is refused with the leader's id and address.
    // So is a linearizable read.
    let e = running[&3].ensure_linearizable().await.unwrap_err();
    let (leader_id, leader_member) = e.leader().expect("the error names the leader");
    assert_eq!(leader_id, 1);
    assert_eq!(
        leader_member.map(|m| m.addr.clone()),
        Some(addrs[&1].to_string())
    );

    // The leader goes away: a new one is elected among the other two.
    let old = running.remove(&1).unwrap();
    let stopping = Instant::now();
    old.shutdown().await.unwrap();
    let shutdown_took = stopping.elapsed();
    // A write through a follower right away: it waits for the election and is forwarded to
    // the new leader (or, past the write timeout, fails with a clear error; never acknowledged
    // without being committed).
    let during = running[&2].write(b"during=election".to_vec()).await;
    println!(
        "a write through a follower {:?} after the leader stopped: {:?}",
        stopping.elapsed(),
        during.as_ref().map(|w| w.index)
    );
    let during = during.expect("the forwarded write succeeds after the election");
    let new_leader = wait_until("a new leader", || {
        running.values().find_map(|n| {
            let s = n.status();
            (s.role == Role::Leader).then_some(s.id)
        })
    })
    .await;
    println!(
        "new leader {new_leader} elected {:?} after the old leader began shutting down \
         (its shutdown took {shutdown_took:?}; election timeout {:?}..{:?})",
        stopping.elapsed(),
        timing().election_min,
        timing().election_max
    );
    let new = &running[&new_leader];
    // No committed write is lost.
    let all = new
        .linearizable_read(|kv| {
            (0..10).all(|i| kv.get(&format!("k{i}")) == Some(i.to_string()))
                && kv.get("via").as_deref() == Some("second")
                && kv.get("during").as_deref() == Some("election")
        })
        .await
        .unwrap();
    assert!(all, "every acknowledged write survives the failover");
    assert!(during.index > last);
    let after = write(new, "after=failover").await;

    // The old leader restarts from its redb files and catches up.
    let back = nodes.start(1, addrs[&1], nodes.kv(1)).await;
    back.wait_applied(after.index, WAIT).await.unwrap();
    assert_eq!(value(&back, "after").as_deref(), Some("failover"));
    assert_eq!(
        back.read(|kv| kv.state.applied_commands).unwrap(),
        14,
        "each command applied exactly once on the restarted member"
    );
    wait_until("the restarted member to follow a leader", || {
        back.status().leader
    })
    .await;
    running.insert(1, back);

    // Two of three members stop: the last one cannot commit, and says so within the write
    // timeout instead of acknowledging.
    let survivor = running.remove(&1).unwrap();
    for (_, node) in running {
        node.shutdown().await.unwrap();
    }
    let started = Instant::now();
    let e = survivor.write(b"lost=quorum".to_vec()).await.unwrap_err();
    println!(
        "a write without a quorum failed after {:?}: {e}",
        started.elapsed()
    );
    assert!(
        matches!(
            e,
            Error::Timeout(..) | Error::NotLeader { .. } | Error::Forward(_)
        ),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "bounded by the write timeout"
    );
    assert!(survivor.read(|kv| kv.get("lost")).unwrap().is_none());
    survivor.shutdown().await.unwrap();
}

/// With the default timing a stopped leader is replaced within two seconds (openraft 0.9
/// waits out the leader lease, `election_max`, before the random election timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_default_timing_a_lost_leader_is_replaced_within_two_seconds() {
    let nodes = Nodes::new(3);
    let mut running = BTreeMap::new();
    for id in 1..=3 {
        let mut config = nodes.config(id, loopback());
        config.timing = Timing::default();
        running.insert(id, RaftNode::start(config, nodes.kv(id)).await.unwrap());
    }
    running[&1].initialize().await.unwrap();
    running[&1].wait_for_leader(WAIT).await.unwrap();
    for id in [2, 3] {
        let member = running[&id].member().clone();
        running[&1].add_learner(id, member, WAIT).await.unwrap();
    }
    running[&1]
        .change_membership(BTreeSet::from([1, 2, 3]))
        .await
        .unwrap();
    let written = write(&running[&1], "before=failover").await;
    for id in [2, 3] {
        running[&id]
            .wait_applied(written.index, WAIT)
            .await
            .unwrap();
    }
    // Let the followers hear a few heartbeats, as in steady operation.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let old = running.remove(&1).unwrap();
    let stopped = Instant::now();
    old.shutdown().await.unwrap();
    let new_leader = wait_until("a new leader", || {
        running.values().find_map(|n| {
            let s = n.status();
            (s.role == Role::Leader).then_some(s.id)
        })
    })
    .await;
    let took = stopped.elapsed();
    println!(
        "default timing: node {new_leader} became the leader {took:?} after the leader stopped"
    );
    assert!(took < Duration::from_secs(2), "failover took {took:?}");
    assert_eq!(
        value(&running[&new_leader], "before").as_deref(),
        Some("failover")
    );
    for (_, node) in running {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_far_behind_catch_up_from_a_snapshot() {
    let mut nodes = Nodes::new(3);
    nodes.snapshot = SnapshotSettings {
        logs_since_last: 5,
        keep_logs: 0,
    };
    let leader = nodes.start(1, loopback(), nodes.kv(1)).await;
    leader.initialize().await.unwrap();
    leader.wait_for_leader(WAIT).await.unwrap();
    for i in 0..20 {
        write(&leader, &format!("k{i}={i}")).await;
    }
    wait_until("the leader to purge its log into a snapshot", || {
        let s = leader.status();
        (s.purged_index.is_some() && s.snapshot_index.is_some()).then_some(())
    })
    .await;

    // A new member: the log it needs is gone, so it gets the snapshot.
    let second = nodes.start(2, loopback(), nodes.kv(2)).await;
    leader
        .add_learner(2, second.member().clone(), WAIT)
        .await
        .unwrap();
    let third = nodes.start(3, loopback(), nodes.kv(3)).await;
    leader
        .add_learner(3, third.member().clone(), WAIT)
        .await
        .unwrap();
    leader
        .change_membership(BTreeSet::from([1, 2, 3]))
        .await
        .unwrap();
    for node in [&second, &third] {
        assert!(
            node.read(|kv| kv.installs).unwrap() >= 1,
            "installed a snapshot"
        );
        assert_eq!(value(node, "k19").as_deref(), Some("19"));
        assert!(node.status().snapshot_index.is_some());
    }

    // A member that was down while the log moved past it.
    let third_addr = third.local_addr();
    let third_had = third.status().last_log_index.unwrap_or(0);
    third.shutdown().await.unwrap();
    let mut last = 0;
    for i in 20..50 {
        last = write(&leader, &format!("k{i}={i}")).await.index;
    }
    wait_until("the leader to purge past the stopped member", || {
        let s = leader.status();
        (s.purged_index.unwrap_or(0) > third_had).then_some(())
    })
    .await;
    let third = nodes.start(3, third_addr, nodes.kv(3)).await;
    third.wait_applied(last, WAIT).await.unwrap();
    assert!(
        third.read(|kv| kv.installs).unwrap() >= 1,
        "caught up from a snapshot"
    );
    assert_eq!(value(&third, "k49").as_deref(), Some("49"));
    assert_eq!(
        third.read(|kv| kv.state.applied_commands).unwrap(),
        50,
        "the snapshot carries the state; no command is lost or applied twice"
    );
    for node in [leader, second, third] {
        node.shutdown().await.unwrap();
    }
}

/// Sends a raw HTTP request through `stream` and returns what came back (empty on a refusal).
async fn raw_post<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    path: &str,
) -> Vec<u8> {
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 1\r\n\r\nx"
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return Vec::new();
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_outside_the_allowed_set_are_refused() {
    let nodes = Nodes::new(2);
    let outsider = Keypair::generate().unwrap();
    let node = nodes.start(1, loopback(), nodes.kv(1)).await;
    node.initialize().await.unwrap();
    node.wait_for_leader(WAIT).await.unwrap();
    let term = node.status().term;

    // An outsider's node key: the TLS handshake fails, no message is served.
    let channel = PeerChannel::new(&outsider, Peers::new([nodes.keys[0].did().clone()])).unwrap();
    let tcp = tokio::net::TcpStream::connect(node.local_addr())
        .await
        .unwrap();
    if let Ok((mut tls, did)) = channel.connect(tcp).await {
        assert_eq!(did, *nodes.keys[0].did());
        let answer = raw_post(&mut tls, "/raft/vote").await;
        assert!(
            !String::from_utf8_lossy(&answer).starts_with("HTTP/1.1"),
            "an outsider got an HTTP answer: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    // Without TLS at all.
    let mut tcp = tokio::net::TcpStream::connect(node.local_addr())
        .await
        .unwrap();
    let answer = raw_post(&mut tcp, "/raft/vote").await;
    assert!(!String::from_utf8_lossy(&answer).starts_with("HTTP/1.1"));

    // The paired case: an allowed key gets an HTTP answer (here: its junk body is refused).
    let channel = PeerChannel::new(&nodes.keys[1], nodes.peers.clone()).unwrap();
    let tcp = tokio::net::TcpStream::connect(node.local_addr())
        .await
        .unwrap();
    let (mut tls, _) = channel.connect(tcp).await.unwrap();
    let answer = String::from_utf8_lossy(&raw_post(&mut tls, "/raft/vote").await).to_string();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // An allowed key that is not a member may not forward writes to the leader.
    let tcp = tokio::net::TcpStream::connect(node.local_addr())
        .await
        .unwrap();
    let (mut tls, _) = channel.connect(tcp).await.unwrap();
    let answer = String::from_utf8_lossy(&raw_post(&mut tls, "/raft/forward").await).to_string();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("only members forward writes"), "{answer}");
    assert_eq!(node.read(|kv| kv.state.applied_commands).unwrap(), 0);

    // A node outside the allowed set is never sent the log, even once added as a member:
    // the leader refuses the certificate its listener presents.
    let outsider_dir = nodes.root.path().join("outsider");
    let mut config = NodeConfig::new(
        3,
        outsider.clone(),
        loopback(),
        &outsider_dir,
        Peers::new([nodes.keys[0].did().clone(), outsider.did().clone()]),
    );
    config.timing = timing();
    let stranger = RaftNode::start(config, Kv::memory()).await.unwrap();
    let e = node
        .add_learner(3, stranger.member().clone(), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout(..)), "{e}");
    assert!(e.to_string().contains("allow each other's DID"), "{e}");
    assert_eq!(stranger.status().last_log_index, None);
    assert_eq!(stranger.read(|kv| kv.state.applied_commands).unwrap(), 0);

    // A member record whose DID is not the key its address serves: also never reached.
    let second = nodes.start(2, loopback(), nodes.kv(2)).await;
    let forged = Member::new(second.local_addr().to_string(), outsider.did().as_str());
    let e = node
        .add_learner(4, forged, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout(..)), "{e}");
    assert_eq!(second.status().last_log_index, None);

    assert_eq!(node.status().term, term, "nothing disturbed the leader");
    for n in [node, stranger, second] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configuration_and_members_are_refused_with_reasons() {
    let nodes = Nodes::new(1);
    let mut config = nodes.config(1, loopback());
    config.timing.election_min = config.timing.heartbeat;
    let e = RaftNode::start(config, nodes.kv(1)).await.err().unwrap();
    assert!(
        e.to_string().contains("more than twice the heartbeat"),
        "{e}"
    );

    let mut config = nodes.config(1, loopback());
    config.max_message_bytes = config.max_command_bytes;
    let e = RaftNode::start(config, nodes.kv(1)).await.err().unwrap();
    assert!(e.to_string().contains("max_message_bytes"), "{e}");

    let node = nodes.start(1, loopback(), nodes.kv(1)).await;
    // Its port is taken now.
    let other = NodeConfig::new(
        2,
        nodes.keys[0].clone(),
        node.local_addr(),
        nodes.root.path().join("other"),
        nodes.peers.clone(),
    );
    let e = RaftNode::start(other, Kv::memory()).await.err().unwrap();
    assert!(matches!(e, Error::Listen { .. }), "{e}");
    // And so is its storage.
    let e = RaftNode::start(nodes.config(1, loopback()), Kv::memory())
        .await
        .err()
        .unwrap();
    assert!(matches!(e, Error::Storage { .. }), "{e}");
    node.initialize().await.unwrap();
    node.wait_for_leader(WAIT).await.unwrap();
    let e = node
        .add_learner(2, Member::new("127.0.0.1:9", "not-a-did"), WAIT)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("DID"), "{e}");
    let e = node
        .add_learner(
            2,
            Member::new("no-port", nodes.keys[0].did().as_str()),
            WAIT,
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("host:port"), "{e}");
    let e = node.change_membership(BTreeSet::new()).await.unwrap_err();
    assert!(e.to_string().contains("at least one voter"), "{e}");
    let e = node
        .change_membership(BTreeSet::from([1, 7]))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Membership(_)), "{e}");
    node.shutdown().await.unwrap();
}

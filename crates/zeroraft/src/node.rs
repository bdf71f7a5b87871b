//! The node's API: [`RaftNode`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError};
use openraft::{ChangeMembers, ServerState};
use redb::Database;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zero_auth::{Did, Keypair};

use crate::blobs::BlobService;
use crate::error::{forward, from_fatal};
use crate::log_store::{LogStore, open_database};
use crate::network::{Connection, ForwardAnswer, ForwardFailure, Limits, Network, serve};
use crate::peer::{PeerChannel, Peers};
use crate::state_machine::{Machine, SharedMachine, Snapshots, lock};
use crate::{Error, Member, NodeId, Raft, Request, StateMachine};

/// Raft timing. Elections start after a random timeout in `election_min..election_max`
/// without hearing from a leader; the leader sends heartbeats every `heartbeat`.
///
/// In openraft 0.9 a follower that heard from a leader also honours that leader's lease
/// (`election_max`, not separately configurable): it neither starts an election nor grants a
/// vote until `election_max` plus its random timeout passed, checked on a tick every 1.5
/// heartbeats. A lost leader is therefore replaced after about
/// `election_max + random(election_min..election_max) + 1.5 × heartbeat` plus one vote round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Interval between the leader's heartbeats.
    pub heartbeat: Duration,
    /// Lower bound of the election timeout.
    pub election_min: Duration,
    /// Upper bound of the election timeout (also the leader lease).
    pub election_max: Duration,
}

impl Default for Timing {
    /// Heartbeats every 100 ms, elections after 400–700 ms: a lost leader is replaced after
    /// 1.1–1.55 s (lease 700 ms + timeout + tick), within two seconds on a healthy network.
    fn default() -> Self {
        Timing {
            heartbeat: Duration::from_millis(100),
            election_min: Duration::from_millis(400),
            election_max: Duration::from_millis(700),
        }
    }
}

/// When snapshots are built and how much log is kept after one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotSettings {
    /// Build a snapshot once this many entries were applied since the last one.
    pub logs_since_last: u64,
    /// Entries kept in the log after a snapshot (so that a follower slightly behind catches
    /// up from the log rather than from the snapshot).
    pub keep_logs: u64,
}

impl Default for SnapshotSettings {
    /// A snapshot every 5000 entries; 1000 entries kept after it.
    fn default() -> Self {
        SnapshotSettings {
            logs_since_last: 5000,
            keep_logs: 1000,
        }
    }
}

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's Raft id (stable across restarts; unique in the cluster).
    pub id: NodeId,
    /// The node key: its DID names the node, its certificate signs the peer channels.
    pub key: Keypair,
    /// Where the peer listener binds (port 0: any free port, see [`RaftNode::local_addr`]).
    pub listen: SocketAddr,
    /// The address other members reach this node at (`host:port`); the bound address when
    /// `None`.
    pub advertise: Option<String>,
    /// The directory of the Raft log database (`raft.redb`) and snapshots (`snapshots/`).
    pub data_dir: PathBuf,
    /// The node DIDs this node exchanges messages with (the nodes the Admin delegated);
    /// itself included when it should accept its own key.
    pub peers: Arc<Peers>,
    /// Heartbeat and election timing.
    pub timing: Timing,
    /// Snapshot and log compaction policy.
    pub snapshot: SnapshotSettings,
    /// The largest command [`RaftNode::write`] accepts.
    pub max_command_bytes: usize,
    /// The largest node-to-node message sent or accepted (must exceed
    /// `max_command_bytes`; batches of entries are split to fit).
    pub max_message_bytes: usize,
    /// How long [`RaftNode::write`] waits for a command to commit (a leader without a quorum
    /// never commits): on a follower this covers finding the leader, forwarding and the
    /// leader's commit.
    pub write_timeout: Duration,
    /// The blob store served to other nodes on the peer listener (`/blob/…`, see
    /// [`blobs`](crate::blobs)); none by default.
    pub blobs: Option<BlobService>,
}

impl NodeConfig {
    /// A configuration with the default timing, snapshot policy and limits (commands up to
    /// 8 MiB, messages up to 32 MiB, writes committed within 10 s).
    pub fn new(
        id: NodeId,
        key: Keypair,
        listen: SocketAddr,
        data_dir: impl Into<PathBuf>,
        peers: Arc<Peers>,
    ) -> NodeConfig {
        NodeConfig {
            id,
            key,
            listen,
            advertise: None,
            data_dir: data_dir.into(),
            peers,
            timing: Timing::default(),
            snapshot: SnapshotSettings::default(),
            max_command_bytes: 8 << 20,
            max_message_bytes: 32 << 20,
            write_timeout: Duration::from_secs(10),
            blobs: None,
        }
    }

    fn validate(&self) -> Result<(), Error> {
        let t = &self.timing;
        if t.heartbeat.is_zero() || t.election_min <= t.heartbeat * 2 {
            return Err(Error::Config(format!(
                "the election timeout ({:?}) must be more than twice the heartbeat ({:?})",
                t.election_min, t.heartbeat
            )));
        }
        if t.election_max <= t.election_min {
            return Err(Error::Config(format!(
                "the election timeout range {:?}..{:?} is empty: make the maximum larger",
                t.election_min, t.election_max
            )));
        }
        if self.write_timeout < self.timing.election_max {
            return Err(Error::Config(format!(
                "the write timeout ({:?}) must be at least the election timeout's maximum ({:?}), \
                 or writes fail during every election",
                self.write_timeout, self.timing.election_max
            )));
        }
        if self.snapshot.logs_since_last == 0 {
            return Err(Error::Config(
                "snapshot.logs_since_last must be at least 1".to_string(),
            ));
        }
        if self.max_command_bytes == 0 || self.max_message_bytes < self.max_command_bytes + 4096 {
            return Err(Error::Config(format!(
                "max_message_bytes ({}) must exceed max_command_bytes ({}) by at least 4096",
                self.max_message_bytes, self.max_command_bytes
            )));
        }
        Ok(())
    }
}

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Accepts writes and replicates them.
    Leader,
    /// A voter following the leader.
    Follower,
    /// A voter asking for votes.
    Candidate,
    /// Receives the log but does not vote (or is not a member yet).
    Learner,
    /// Stopped.
    Shutdown,
}

/// A node's view of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// This node's id.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// The current term.
    pub term: u64,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// The voters (both configurations' during a membership change).
    pub voters: BTreeSet<NodeId>,
    /// The learners.
    pub learners: BTreeSet<NodeId>,
    /// Every member's address and DID.
    pub members: BTreeMap<NodeId, Member>,
    /// The index of the last entry in this node's log.
    pub last_log_index: Option<u64>,
    /// The index of the last entry applied to the state machine.
    pub applied_index: Option<u64>,
    /// The last index covered by the current snapshot.
    pub snapshot_index: Option<u64>,
    /// The last index removed from the log (in a snapshot).
    pub purged_index: Option<u64>,
    /// On the leader: each other member's lag, in entries behind the leader's last log
    /// index (`None` for a member that acknowledged nothing yet).
    pub lag: BTreeMap<NodeId, Option<u64>>,
    /// On the leader: milliseconds since a quorum last acknowledged it.
    pub millis_since_quorum_ack: Option<u64>,
}

/// The outcome of a committed [`RaftNode::write`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The log index the command was committed at.
    pub index: u64,
    /// The state machine's response.
    pub response: Vec<u8>,
}

/// A running Raft node: its engine, its storage and its peer listener.
pub struct RaftNode<S: StateMachine> {
    id: NodeId,
    member: Member,
    raft: Raft,
    machine: SharedMachine<S>,
    db: Arc<Database>,
    data_dir: PathBuf,
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    max_command_bytes: usize,
    write_timeout: Duration,
    channel: PeerChannel,
    limits: Limits,
}

fn storage(path: &std::path::Path, reason: impl std::fmt::Display) -> Error {
    Error::Storage {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn check_member(id: NodeId, member: &Member) -> Result<(), Error> {
    let invalid = |reason: String| Error::InvalidMember { id, reason };
    Did::parse(&member.did).map_err(|e| invalid(format!("its DID {:?}: {e}", member.did)))?;
    let Some((host, port)) = member.addr.rsplit_once(':') else {
        return Err(invalid(format!(
            "its address {:?} is not host:port",
            member.addr
        )));
    };
    if host.is_empty() || !port.parse::<u16>().is_ok_and(|p| p != 0) {
        return Err(invalid(format!(
            "its address {:?} is not host:port with a port in 1..65535",
            member.addr
        )));
    }
    Ok(())
}

fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, Member>>) -> Error {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => forward(f),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            Error::Membership(e.to_string())
        }
        RaftError::Fatal(f) => from_fatal(&f),
    }
}

fn read_error(e: RaftError<NodeId, CheckIsLeaderError<NodeId, Member>>) -> Error {
    match e {
        RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => forward(f),
        RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)) => {
            Error::NoQuorum(q.to_string())
        }
        RaftError::Fatal(f) => from_fatal(&f),
    }
}

impl<S: StateMachine> RaftNode<S> {
    /// Opens (or creates) the node's storage in `config.data_dir`, brings `machine` up to
    /// date with it (see [`StateMachine`]'s restart rule), binds the peer listener and starts
    /// the engine. A new node is not part of any cluster until it is
    /// [initialized](Self::initialize) or added by a leader.
    pub async fn start(config: NodeConfig, machine: S) -> Result<RaftNode<S>, Error> {
        config.validate()?;
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|e| storage(&data_dir, e))?;
        let db_path = data_dir.join("raft.redb");
        let snap_dir = data_dir.join("snapshots");
        let opened = tokio::task::spawn_blocking(move || {
            let db = open_database(&db_path)?;
            let snapshots = Arc::new(
                Snapshots::open(db.clone(), snap_dir.clone()).map_err(|e| storage(&snap_dir, e))?,
            );
            let (machine, shared) =
                Machine::open(machine, snapshots).map_err(Error::StateMachine)?;
            Ok::<_, Error>((db, machine, shared))
        })
        .await
        .map_err(|e| Error::StateMachine(format!("opening the storage failed: {e}")))??;
        let (db, machine, shared) = opened;

        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Listen {
                addr: config.listen.to_string(),
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| Error::Listen {
            addr: config.listen.to_string(),
            source,
        })?;
        let member = Member {
            addr: config
                .advertise
                .clone()
                .unwrap_or_else(|| local_addr.to_string()),
            did: config.key.did().as_str().to_string(),
        };
        check_member(config.id, &member)?;
        let channel = PeerChannel::new(&config.key, config.peers.clone()).map_err(Error::Config)?;
        let limits = Limits {
            max_message_bytes: config.max_message_bytes,
            connect_timeout: config.timing.election_min,
            max_command_bytes: config.max_command_bytes,
            write_timeout: config.write_timeout,
        };
        let raft_config = openraft::Config {
            cluster_name: "zerocore".to_string(),
            heartbeat_interval: config.timing.heartbeat.as_millis() as u64,
            election_timeout_min: config.timing.election_min.as_millis() as u64,
            election_timeout_max: config.timing.election_max.as_millis() as u64,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(
                config.snapshot.logs_since_last,
            ),
            max_in_snapshot_log_to_keep: config.snapshot.keep_logs,
            // Snapshot chunks stay well inside the message limit.
            snapshot_max_chunk_size: (config.max_message_bytes / 2) as u64,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::Config(e.to_string()))?;
        let network_channel = channel.clone();
        let network = Network {
            channel: channel.clone(),
            limits,
        };
        let raft = openraft::Raft::new(
            config.id,
            Arc::new(raft_config),
            network,
            LogStore::new(db.clone()),
            machine,
        )
        .await
        .map_err(|e| from_fatal(&e))?;
        let (stop, stopped) = watch::channel(false);
        let blobs = config.blobs.as_ref().map(|b| b.0.clone());
        let server = tokio::spawn(serve(
            listener,
            channel,
            raft.clone(),
            limits,
            blobs,
            stopped,
        ));
        tracing::info!(id = config.id, addr = %local_addr, did = %member.did, "raft node started");
        Ok(RaftNode {
            id: config.id,
            member,
            raft,
            machine: shared,
            db,
            data_dir,
            local_addr,
            stop,
            server,
            max_command_bytes: config.max_command_bytes,
            write_timeout: config.write_timeout,
            channel: network_channel,
            limits,
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// This node as a member: its advertised address and DID (what a leader's
    /// [`add_learner`](Self::add_learner) takes).
    pub fn member(&self) -> &Member {
        &self.member
    }

    /// The address the peer listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Makes this new node a one-member cluster (its only voter); it becomes the leader.
    pub async fn initialize(&self) -> Result<(), Error> {
        let members = BTreeMap::from([(self.id, self.member.clone())]);
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                Err(Error::AlreadyInitialized)
            }
            Err(RaftError::APIError(InitializeError::NotInMembers(e))) => {
                Err(Error::Membership(e.to_string()))
            }
            Err(RaftError::Fatal(f)) => Err(from_fatal(&f)),
        }
    }

    /// On the leader: adds `member` as a learner under `id` (once that membership change is
    /// committed), then waits up to `timeout` until the learner holds the log up to its own
    /// addition (by log entries or a snapshot). The learner's DID must be in this node's
    /// allowed set and this node's in the learner's, or it is never reached: then the learner
    /// stays added and this returns [`Error::Timeout`].
    pub async fn add_learner(
        &self,
        id: NodeId,
        member: Member,
        timeout: Duration,
    ) -> Result<(), Error> {
        check_member(id, &member)?;
        let added = self
            .raft
            .add_learner(id, member, false)
            .await
            .map_err(write_error)?;
        let target = added.log_id.index;
        let waited = self
            .raft
            .wait(Some(timeout))
            .metrics(
                |m| {
                    m.state != ServerState::Leader
                        || m.replication
                            .as_ref()
                            .and_then(|r| r.get(&id).copied().flatten())
                            .is_some_and(|matched| matched.index >= target)
                },
                "the learner to catch up",
            )
            .await
            .map_err(|_| {
                Error::Timeout(
                    timeout,
                    format!(
                        "learner {id} to catch up with the log up to entry {target} (it was \
                         added: check that it runs, is reachable, and that both nodes allow \
                         each other's DID)"
                    ),
                )
            })?;
        if waited.state != ServerState::Leader {
            return Err(Error::NotLeader {
                leader_id: waited.current_leader,
                leader: waited
                    .current_leader
                    .and_then(|l| waited.membership_config.membership().get_node(&l).cloned()),
            });
        }
        Ok(())
    }

    /// On the leader: makes `voters` the set of voters (learners in it are promoted; voters
    /// not in it become learners). Returns once the change is committed.
    pub async fn change_membership(&self, voters: BTreeSet<NodeId>) -> Result<(), Error> {
        if voters.is_empty() {
            return Err(Error::Membership(
                "a cluster needs at least one voter".to_string(),
            ));
        }
        self.raft
            .change_membership(ChangeMembers::ReplaceAllVoters(voters), false)
            .await
            .map(|_| ())
            .map_err(write_error)
    }

    /// On the leader: removes `ids` from the membership altogether (voters and learners).
    pub async fn remove_members(&self, ids: BTreeSet<NodeId>) -> Result<(), Error> {
        let status = self.status();
        let voters: BTreeSet<NodeId> = status.voters.difference(&ids).copied().collect();
        if voters.is_empty() {
            return Err(Error::Membership(
                "removing these members would leave no voter".to_string(),
            ));
        }
        self.raft
            .change_membership(ChangeMembers::ReplaceAllVoters(voters), false)
            .await
            .map_err(write_error)?;
        let learners: BTreeSet<NodeId> =
            ids.intersection(&self.status().learners).copied().collect();
        if !learners.is_empty() {
            self.raft
                .change_membership(ChangeMembers::RemoveNodes(learners), false)
                .await
                .map_err(write_error)?;
        }
        Ok(())
    }

    /// Replicates `command` and, once a majority stored it and it is applied on the leader,
    /// returns the state machine's response. On a follower (or learner) the command is
    /// forwarded to the leader over the peer channel; while no leader is known (an election)
    /// it waits for one. Everything is bounded by the configured write timeout.
    ///
    /// An `Ok` means committed. An error means not acknowledged: [`Error::NotLeader`] when no
    /// leader could be found in time, [`Error::Timeout`] or [`Error::Forward`] otherwise (the
    /// message says whether the command may still take effect).
    pub async fn write(&self, command: Vec<u8>) -> Result<Written, Error> {
        if command.len() > self.max_command_bytes {
            return Err(Error::CommandTooLarge {
                size: command.len(),
                limit: self.max_command_bytes,
            });
        }
        let deadline = Instant::now() + self.write_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let local =
                tokio::time::timeout(left, self.raft.client_write(Request(command.clone())));
            let leader = match local.await {
                Ok(Ok(response)) => {
                    return Ok(Written {
                        index: response.log_id.index,
                        response: response.data.0,
                    });
                }
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => f,
                Ok(Err(e)) => return Err(write_error(e)),
                Err(_) => {
                    return Err(Error::Timeout(
                        self.write_timeout,
                        "the write to commit (is a majority of the voters up?); it was not \
                         acknowledged and may or may not take effect"
                            .to_string(),
                    ));
                }
            };
            let mut last_refusal = forward(leader.clone());
            if let (Some(id), Some(member)) = (leader.leader_id, leader.leader_node)
                && id != self.id
            {
                let left = deadline.saturating_duration_since(Instant::now());
                let mut connection = Connection::to(id, member, self.channel.clone(), self.limits);
                match connection.forward(command.clone(), left).await {
                    Ok(ForwardAnswer::Written { index, response }) => {
                        return Ok(Written { index, response });
                    }
                    Ok(ForwardAnswer::Failed(reason)) => return Err(Error::Forward(reason)),
                    Ok(ForwardAnswer::NotLeader { leader_id, leader }) => {
                        // Leadership moved on: try again with what we learn next.
                        last_refusal = Error::NotLeader { leader_id, leader };
                    }
                    Err(ForwardFailure::NotSent(reason)) => {
                        tracing::debug!(leader = id, %reason, "cannot reach the leader yet");
                        last_refusal = Error::Forward(format!(
                            "the leader (node {id}) cannot be reached: {reason}"
                        ));
                    }
                    Err(ForwardFailure::Unanswered(reason)) => {
                        return Err(Error::Forward(format!(
                            "{reason}; the write was not acknowledged and may or may not take \
                             effect"
                        )));
                    }
                }
            }
            if Instant::now() + Duration::from_millis(50) >= deadline {
                if let Error::NotLeader {
                    leader_id: None, ..
                } = last_refusal
                {
                    return Err(Error::Timeout(
                        self.write_timeout,
                        "a leader to take the write (none was elected: is a majority of the \
                         voters up and reachable?); the write was not performed"
                            .to_string(),
                    ));
                }
                return Err(last_refusal);
            }
            // Wait for a (new) leader, or a little before retrying the same one.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// On the leader: confirms with a quorum that it is still the leader and waits until its
    /// state machine has applied everything committed before this call (read index). A read
    /// of the state machine after it is linearizable. Returns the read index.
    pub async fn ensure_linearizable(&self) -> Result<Option<u64>, Error> {
        let read = self.raft.ensure_linearizable().await.map_err(read_error)?;
        Ok(read.map(|l| l.index))
    }

    /// Reads the local state machine as it is now (possibly behind the leader).
    pub fn read<R>(&self, read: impl FnOnce(&S) -> R) -> Result<R, Error> {
        let guard = lock(&self.machine).map_err(Error::StateMachine)?;
        Ok(read(&guard.machine))
    }

    /// [`ensure_linearizable`](Self::ensure_linearizable), then [`read`](Self::read).
    pub async fn linearizable_read<R>(&self, read: impl FnOnce(&S) -> R) -> Result<R, Error> {
        self.ensure_linearizable().await?;
        self.read(read)
    }

    /// Waits until this node has applied the entry at `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), Error> {
        self.raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "applied index")
            .await
            .map(|_| ())
            .map_err(|e| Error::Timeout(timeout, format!("entry {index} to be applied ({e})")))
    }

    /// Waits until this node knows a leader; its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, Error> {
        let metrics = self
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .map_err(|e| Error::Timeout(timeout, format!("a leader ({e})")))?;
        metrics
            .current_leader
            .ok_or_else(|| Error::Timeout(timeout, "a leader".to_string()))
    }

    /// This node's view of the cluster.
    pub fn status(&self) -> Status {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let role = match m.state {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Shutdown,
        };
        let last = m.last_log_index.unwrap_or(0);
        let lag = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .filter(|(id, _)| **id != self.id)
                    .map(|(id, matched)| (*id, matched.map(|l| last.saturating_sub(l.index))))
                    .collect()
            })
            .unwrap_or_default();
        Status {
            id: self.id,
            role,
            term: m.current_term,
            leader: m.current_leader,
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            members: membership
                .nodes()
                .map(|(id, member)| (*id, member.clone()))
                .collect(),
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            lag,
            millis_since_quorum_ack: m.millis_since_quorum_ack,
        }
    }

    /// Stops the engine and the listener, and returns once the storage files are closed (the
    /// same directory can then be started again).
    pub async fn shutdown(self) -> Result<(), Error> {
        let RaftNode {
            raft,
            db,
            data_dir,
            stop,
            server,
            machine,
            ..
        } = self;
        let _ = stop.send(true);
        let stopped = raft.shutdown().await;
        let _ = server.await;
        drop(raft);
        drop(machine);
        // The engine's tasks hold the database until they end.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Arc::strong_count(&db) > 1 {
            if Instant::now() > deadline {
                return Err(storage(
                    &data_dir,
                    "the raft engine did not release its storage within 30 s of shutting down",
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(db);
        stopped.map_err(|e| Error::Stopped(format!("the engine task failed: {e}")))
    }
}

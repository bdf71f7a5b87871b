//! The errors of [`RaftNode`](crate::RaftNode)'s operations.

use std::path::PathBuf;
use std::time::Duration;

use crate::{Member, NodeId};

/// Why a cluster operation failed. Each message says what is wrong and, where the caller can
/// act, what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The node configuration is invalid.
    #[error("invalid cluster configuration: {0}")]
    Config(String),
    /// The Raft storage (log database, snapshots) could not be opened or used.
    #[error("the raft storage in {path} cannot be used: {reason}")]
    Storage {
        /// The file or directory concerned.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The peer listener could not be bound.
    #[error("cannot listen for cluster peers on {addr}: {source} (is another node using it?)")]
    Listen {
        /// The address asked for.
        addr: String,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
    /// This node is not the leader: writes (and linearizable reads) go to the leader, which
    /// this error names when it is known.
    #[error("this node is not the cluster leader; {}", describe_leader(*.leader_id, .leader.as_ref()))]
    NotLeader {
        /// The leader's id, when this node knows it.
        leader_id: Option<NodeId>,
        /// The leader's address and DID, when this node knows them.
        leader: Option<Member>,
    },
    /// The leader could not reach a quorum of voters to confirm it is still the leader.
    #[error(
        "no quorum: {0}; the operation was not performed (the cluster needs a majority of its voters up)"
    )]
    NoQuorum(String),
    /// The command exceeds the size limit of one log entry.
    #[error("the command is {size} bytes; one command may be at most {limit} bytes")]
    CommandTooLarge {
        /// The command's size.
        size: usize,
        /// The limit (`NodeConfig::max_command_bytes`).
        limit: usize,
    },
    /// The cluster was already initialized (this node has a log or a membership).
    #[error(
        "this node is already part of an initialized cluster; initialize only a new node, once"
    )]
    AlreadyInitialized,
    /// A membership change was refused.
    #[error("membership change refused: {0}")]
    Membership(String),
    /// A member description is invalid.
    #[error("invalid member {id}: {reason}")]
    InvalidMember {
        /// The id given.
        id: NodeId,
        /// What is wrong.
        reason: String,
    },
    /// The state machine failed; the node stopped applying entries.
    #[error("the state machine failed: {0}")]
    StateMachine(String),
    /// A follower's write could not be forwarded to the leader, or the leader refused it;
    /// the message says whether it may still take effect.
    #[error("the write was not acknowledged by the leader: {0}")]
    Forward(String),
    /// A wait did not finish in time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    /// The Raft engine has stopped (shut down, or after a storage failure).
    #[error("the raft engine has stopped: {0}")]
    Stopped(String),
}

impl Error {
    /// The leader named by an [`Error::NotLeader`], to forward the request to.
    pub fn leader(&self) -> Option<(NodeId, Option<&Member>)> {
        match self {
            Error::NotLeader {
                leader_id: Some(id),
                leader,
            } => Some((*id, leader.as_ref())),
            _ => None,
        }
    }
}

fn describe_leader(id: Option<NodeId>, member: Option<&Member>) -> String {
    match (id, member) {
        (Some(id), Some(m)) => format!("the leader is node {id} at {m}: send the request there"),
        (Some(id), None) => format!("the leader is node {id}: send the request there"),
        _ => "no leader is known yet (an election may be under way): retry shortly".to_string(),
    }
}

pub(crate) fn from_fatal(e: &openraft::error::Fatal<NodeId>) -> Error {
    Error::Stopped(e.to_string())
}

pub(crate) fn forward(f: openraft::error::ForwardToLeader<NodeId, Member>) -> Error {
    Error::NotLeader {
        leader_id: f.leader_id,
        leader: f.leader_node,
    }
}

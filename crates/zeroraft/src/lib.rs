//! `zeroraft`: the replication engine of a zerocore cluster.
//!
//! It runs [openraft](https://docs.rs/openraft/0.9) (the stable 0.9 line; a real Raft engine)
//! and gives the node what openraft leaves to the application:
//!
//! - **A durable log store on redb** (`DATA_DIR/raft.redb`): every log append, truncation,
//!   purge, vote and commit index is one redb write transaction with redb's default
//!   durability, so it is on disk (fsynced) before openraft is told it is done. See
//!   [`log store and durability`](#log-store-and-durability).
//! - **A state-machine contract** ([`StateMachine`]) that the node's providers (management
//!   state, zerofs metadata, zerodb) implement: apply committed commands in log order, write a
//!   snapshot, install one. zeroraft wraps it into openraft's state machine, stores snapshots
//!   as files (`DATA_DIR/snapshots/`) and keeps the rule that makes a restart correct (see
//!   [`StateMachine`]).
//! - **Authenticated node-to-node messages** over HTTP/1.1 inside mutual TLS 1.3 ([`peer`]):
//!   each node's certificate is self-signed by its `did:key` node key; a connection is
//!   accepted only from (and made only to) a node whose DID is in the caller's allowed set
//!   ([`Peers`](peer::Peers)), and a message is refused when the node id it speaks for belongs
//!   to another DID.
//! - **A [`Mux`]** of named state machines ("parts": management state, zerofs, zerodb)
//!   behind the one log; [`mux_command`] frames a command for a part.
//! - **A node API** ([`RaftNode`]): start, initialize a one-member cluster, add learners,
//!   change membership, [`write`](RaftNode::write) (the state machine's response once
//!   committed and applied; a follower forwards it to the leader over the peer channel,
//!   bounded by the write timeout),
//!   [linearizable reads](RaftNode::ensure_linearizable), [`status`](RaftNode::status) (leader,
//!   term, members, lag) and shutdown.
//!
//! # Log store and durability
//!
//! - Entries live in the redb table `raft_log` (index → postcard-encoded entry); the vote, the
//!   commit index, the last purged log id and the current snapshot's metadata in `raft_meta`.
//! - `append` commits all entries of one call in one transaction and only then reports them
//!   flushed; `truncate` (drop a conflicting suffix) and `purge` (drop a prefix already in a
//!   snapshot, recording the purged id in the same transaction) are transactions too, so a
//!   crash leaves the log either before or after each of them.
//! - The database records its format version; a file of another version is refused at start
//!   with an error rather than misread.
//!
//! # What is not wired yet
//!
//! This crate is the engine; the node (`zero-node`) does not run on it yet: its management
//! state, zerofs and zerodb still live on one machine. See `docs/cluster.md`.
#![deny(missing_docs)]
// openraft's storage and network traits return its `StorageError`/`RPCError` by value; the
// helpers that build them for those traits do too (as openraft's own examples allow).
#![allow(clippy::result_large_err)]

pub mod blobs;
mod codec;
mod error;
mod log_store;
mod mux;
mod network;
mod node;
pub mod peer;
mod state_machine;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use error::Error;
pub use mux::{Mux, mux_command, mux_refusal};
pub use node::{NodeConfig, RaftNode, Role, SnapshotSettings, Status, Timing, Written};
pub use state_machine::{AppliedState, Command, StateMachine, StateMachineError};

/// A node's Raft id: chosen once for a node and never reused for another.
pub type NodeId = u64;

/// How the cluster reaches a member and who it is: its peer address and its node DID. Stored
/// in the replicated membership, so every node knows every member's key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// `host:port` of the member's peer listener.
    pub addr: String,
    /// The member's node DID (`did:key:…`); the certificate its listener presents must be
    /// bound to it.
    pub did: String,
}

impl Member {
    /// A member at `addr` holding the node key of `did`.
    pub fn new(addr: impl Into<String>, did: impl Into<String>) -> Member {
        Member {
            addr: addr.into(),
            did: did.into(),
        }
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.addr, self.did)
    }
}

/// One replicated command: opaque bytes, interpreted by the [`StateMachine`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Request(pub(crate) Vec<u8>);

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Request({} bytes)", self.0.len())
    }
}

/// The state machine's answer to one applied entry (empty for entries that carry no command).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Response(pub(crate) Vec<u8>);

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Response({} bytes)", self.0.len())
    }
}

openraft::declare_raft_types!(
    /// The openraft type configuration of a zerocore cluster.
    pub(crate) TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = Member,
        SnapshotData = state_machine::SnapshotFile,
);

/// The Raft handle of a zerocore node.
pub(crate) type Raft = openraft::Raft<TypeConfig>;

#[cfg(test)]
mod tests;

//! zerofs in the cluster log: the metadata is a replicated state machine, the blobs live on a
//! majority and are fetched by hash.
//!
//! - [`FsMachine`] is a [`zeroraft::StateMachine`] over a [`ZeroFs`]: it applies
//!   [`FsCommand`]s (each in one redb transaction that also records the log position: the
//!   *persisted* restart rule), snapshots the whole metadata, and installs a snapshot in one
//!   transaction. Blobs are not in the snapshot.
//! - [`Replicator`] is where a replicated [`ZeroFs`] sends its commands
//!   ([`ZeroFs::set_replicator`]); [`RaftReplicator`] sends them through a
//!   [`RaftNode`](zeroraft::RaftNode).
//! - [`BlobPeers`] moves blobs ([`ZeroFs::set_blob_peers`]); [`RaftBlobPeers`] does it over
//!   the node's mutual-TLS peer channel ([`zeroraft::blobs`]), and [`FsBlobStore`] serves this
//!   store's blobs there ([`zeroraft::NodeConfig::blobs`]).
//!
//! # The write path
//!
//! A write streams its content to a local blob (temporary file, fsync, rename to
//! `blobs/<sha256>`), pins it, pushes it to the other members and waits until a majority of
//! the voters (this node counted when it is one) has verified and stored it, and only then
//! proposes the [`FsCommand::Write`]. It is acknowledged once that command is committed and
//! applied. A write whose blob does not reach a majority fails and proposes nothing.
//!
//! # A replica without the blob
//!
//! Applying a command never waits for the network: the metadata is committed even when the
//! blob is not here yet (a follower that was down, a push that failed), and
//! [`ZeroFs::missing_notify`] is woken. The blob is then fetched by hash, by
//! [`spawn_fetcher`] in the background or by the first read that needs it
//! ([`ZeroFs::open_read`]), from any member; its bytes are hashed while they arrive into a
//! temporary file and published only when they match, so a peer serving wrong bytes is
//! refused and the next one tried. A reader therefore gets the right bytes or an error, never
//! other bytes. (Blocking applies on fetches would stall the whole log on this node behind one
//! unreachable peer, and the state-machine contract forbids applies that depend on anything
//! but the command.)
//!
//! # Garbage collection
//!
//! A blob is deleted only when the committed reference counts drop to zero, and never while
//! a write in flight has it pinned; [`ZeroFs::gc`] removes the unreferenced blobs a crash or
//! a refused write left behind. A blob a committed entry references is never deleted.
//!
//! # Determinism
//!
//! The modification time is in the command (chosen by the proposer). The store's default
//! quota (`ZeroFs::open`'s `default_quota`) takes part in the quota checks of every apply:
//! every node must open its store with the same default.

use std::future::Future;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::runtime::Handle;
use zeroraft::blobs::{BlobClient, BlobRefusal, BlobStore, OpenBlob};
use zeroraft::{AppliedState, Command, Member, NodeId, RaftNode, StateMachine, StateMachineError};

use crate::command::{FsCommand, encode_response};
use crate::error::Error;
use crate::store::{BlobHash, ZeroFs};

/// Where a replicated [`ZeroFs`] sends its commands. Blocking (called from the store's
/// blocking callers).
pub trait Replicator: Send + Sync {
    /// Submits an encoded [`FsCommand`]; returns the state machine's answer once the command
    /// is committed and applied, or why it could not be.
    fn submit(&self, command: Vec<u8>) -> Result<Vec<u8>, String>;
}

/// How one [`BlobPeers::push`] went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReport {
    /// Voters holding the blob (this node included when it is a voter).
    pub holders: usize,
    /// Voters in the cluster.
    pub voters: usize,
    /// The pushes that failed, with why.
    pub failures: Vec<String>,
}

/// How blobs travel between the nodes. Blocking.
pub trait BlobPeers: Send + Sync {
    /// Pushes the blob stored at `path` (`size` bytes hashing to `hash`) to the other members
    /// and returns once a majority of the voters holds it or every push has ended.
    fn push(&self, hash: BlobHash, size: u64, path: &Path) -> Result<PushReport, String>;

    /// The members to fetch a missing blob from, in the order to try them.
    fn sources(&self) -> Vec<String>;

    /// Streams blob `hash` from `source` into `out` (never more than `max` bytes). The store
    /// verifies the bytes; this only moves them.
    fn fetch(
        &self,
        source: &str,
        hash: BlobHash,
        max: u64,
        out: &mut dyn Write,
    ) -> Result<u64, String>;
}

fn sm_error(e: Error) -> StateMachineError {
    StateMachineError::new(format!("zerofs: {e}"))
}

/// The zerofs metadata as a [`zeroraft::StateMachine`]; see the [module docs](self).
pub struct FsMachine {
    fs: Arc<ZeroFs>,
}

impl FsMachine {
    /// The state machine of `fs` (the same store the node reads from).
    pub fn new(fs: Arc<ZeroFs>) -> FsMachine {
        FsMachine { fs }
    }

    /// The store.
    pub fn store(&self) -> &Arc<ZeroFs> {
        &self.fs
    }
}

impl StateMachine for FsMachine {
    fn applied_state(&mut self) -> Result<Option<Vec<u8>>, StateMachineError> {
        self.fs.replica_applied().map_err(sm_error)
    }

    fn apply(
        &mut self,
        commands: &[Command<'_>],
        state: &AppliedState,
    ) -> Result<Vec<Vec<u8>>, StateMachineError> {
        let done = self.fs.replica_index().map_err(sm_error)?;
        let mut responses = Vec::with_capacity(commands.len());
        let mut stored_state = false;
        for (i, c) in commands.iter().enumerate() {
            let last = i + 1 == commands.len();
            if done.is_some_and(|d| c.index <= d) {
                // Applied before a restart (its transaction held the index): not again.
                responses.push(
                    encode_response(&Ok(crate::command::Outcome::Replayed)).map_err(sm_error)?,
                );
                continue;
            }
            let applied = last.then(|| state.as_bytes());
            let response = match FsCommand::decode(c.data) {
                Ok(command) => self.fs.apply_at(&command, c.index, applied),
                Err(e) => {
                    // A malformed command is refused, the same way on every replica.
                    self.fs
                        .store_mark(Some(c.index), applied)
                        .and_then(|()| encode_response(&Err(e)))
                }
            }
            .map_err(sm_error)?;
            stored_state = last;
            responses.push(response);
        }
        if !stored_state {
            let index = commands.iter().map(|c| c.index).max().max(done).or(done);
            self.fs
                .store_mark(index, Some(state.as_bytes()))
                .map_err(sm_error)?;
        }
        Ok(responses)
    }

    fn snapshot(&mut self, out: &mut dyn Write) -> Result<(), StateMachineError> {
        self.fs.write_snapshot(out).map_err(sm_error)
    }

    fn install(
        &mut self,
        snapshot: &mut dyn Read,
        state: &AppliedState,
    ) -> Result<(), StateMachineError> {
        self.fs
            .install_snapshot(snapshot, state.index(), state.as_bytes())
            .map_err(sm_error)
    }
}

/// Serves a store's blobs to the other nodes ([`zeroraft::NodeConfig::blobs`]): pushes are
/// verified against their hash and bounded by `max_blob_bytes`.
pub struct FsBlobStore {
    fs: Arc<ZeroFs>,
    max_blob_bytes: u64,
}

impl FsBlobStore {
    /// Serves `fs`, accepting pushed blobs of at most `max_blob_bytes` (use the largest file
    /// a tenant may write, e.g. the byte quota).
    pub fn new(fs: Arc<ZeroFs>, max_blob_bytes: u64) -> FsBlobStore {
        FsBlobStore { fs, max_blob_bytes }
    }
}

impl BlobStore for FsBlobStore {
    fn max_blob_bytes(&self) -> u64 {
        self.max_blob_bytes
    }

    fn receive(
        &self,
        hash: [u8; 32],
        size: u64,
        content: &mut dyn Read,
    ) -> Result<(), BlobRefusal> {
        if size > self.max_blob_bytes {
            return Err(BlobRefusal::TooLarge(format!(
                "a blob may be at most {} bytes",
                self.max_blob_bytes
            )));
        }
        self.fs.receive_blob(BlobHash(hash), size, content)
    }

    fn open(&self, hash: [u8; 32]) -> Result<Option<OpenBlob>, String> {
        match self.fs.open_blob(BlobHash(hash)) {
            Ok(Some((size, file))) => Ok(Some((size, Box::new(file)))),
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Runs `f` to completion from a blocking caller (a `spawn_blocking` thread or a thread
/// outside the runtime; on a multi-threaded runtime's worker it moves off it first).
fn block_on<F: Future>(runtime: &Handle, f: F) -> F::Output {
    match Handle::try_current() {
        Ok(current) if current.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| runtime.block_on(f))
        }
        _ => runtime.block_on(f),
    }
}

/// A [`Replicator`] writing through a [`RaftNode`]: on the leader the command is committed
/// and applied before the answer returns; elsewhere the node's error (which names the leader)
/// is the answer.
pub struct RaftReplicator<S: StateMachine> {
    node: Weak<RaftNode<S>>,
    runtime: Handle,
    frame: Box<dyn Fn(Vec<u8>) -> Vec<u8> + Send + Sync>,
}

impl<S: StateMachine> RaftReplicator<S> {
    /// Writes through `node` (held weakly, so the node can still be shut down), wrapping each
    /// command with `frame` (e.g. `|c| zeroraft::mux_command("fs", &c)` when the node's state
    /// machine is a mux; the identity when it is the [`FsMachine`] itself).
    pub fn new(
        node: &Arc<RaftNode<S>>,
        runtime: Handle,
        frame: impl Fn(Vec<u8>) -> Vec<u8> + Send + Sync + 'static,
    ) -> RaftReplicator<S> {
        RaftReplicator {
            node: Arc::downgrade(node),
            runtime,
            frame: Box::new(frame),
        }
    }
}

impl<S: StateMachine> Replicator for RaftReplicator<S> {
    fn submit(&self, command: Vec<u8>) -> Result<Vec<u8>, String> {
        let node = self
            .node
            .upgrade()
            .ok_or_else(|| "the cluster node has shut down".to_string())?;
        let framed = (self.frame)(command);
        block_on(&self.runtime, node.write(framed))
            .map(|written| written.response)
            .map_err(|e| e.to_string())
    }
}

/// [`BlobPeers`] over the node's peer channel: the members and voters are the node's current
/// membership.
pub struct RaftBlobPeers<S: StateMachine> {
    node: Weak<RaftNode<S>>,
    client: BlobClient,
    runtime: Handle,
}

impl<S: StateMachine> RaftBlobPeers<S> {
    /// Blob transfers for `node` (held weakly) through `client` (built on the node's own
    /// [`PeerChannel`](zeroraft::peer::PeerChannel)).
    pub fn new(node: &Arc<RaftNode<S>>, client: BlobClient, runtime: Handle) -> RaftBlobPeers<S> {
        RaftBlobPeers {
            node: Arc::downgrade(node),
            client,
            runtime,
        }
    }

    fn status(&self) -> Result<zeroraft::Status, String> {
        self.node
            .upgrade()
            .map(|n| n.status())
            .ok_or_else(|| "the cluster node has shut down".to_string())
    }
}

impl<S: StateMachine> BlobPeers for RaftBlobPeers<S> {
    fn push(&self, hash: BlobHash, size: u64, path: &Path) -> Result<PushReport, String> {
        let status = self.status()?;
        let voters = status.voters.len();
        let mut report = PushReport {
            holders: usize::from(status.voters.contains(&status.id)),
            voters,
            failures: Vec::new(),
        };
        let needed = voters / 2 + 1;
        let others: Vec<(NodeId, Member)> = status
            .members
            .iter()
            .filter(|(id, _)| **id != status.id)
            .map(|(id, m)| (*id, m.clone()))
            .collect();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for (id, member) in others {
            let file = std::fs::File::open(path)
                .map_err(|e| format!("opening blob {hash} to push it: {e}"))?;
            let client = self.client.clone();
            let voter = status.voters.contains(&id);
            let tx = tx.clone();
            // Pushes go on after a majority answered, so that every member gets the blob.
            self.runtime.spawn(async move {
                let result = client.push(&member, hash.0, size, Box::new(file)).await;
                let _ = tx.send((id, voter, result));
            });
        }
        drop(tx);
        block_on(&self.runtime, async {
            while report.holders < needed {
                let Some((id, voter, result)) = rx.recv().await else {
                    break;
                };
                match result {
                    Ok(()) if voter => report.holders += 1,
                    Ok(()) => {}
                    Err(e) => report.failures.push(format!("node {id}: {e}")),
                }
            }
        });
        Ok(report)
    }

    fn sources(&self) -> Vec<String> {
        let Ok(status) = self.status() else {
            return Vec::new();
        };
        let mut ids: Vec<NodeId> = status
            .members
            .keys()
            .copied()
            .filter(|id| *id != status.id)
            .collect();
        // Voters first: they hold every committed blob between them.
        ids.sort_by_key(|id| (!status.voters.contains(id), *id));
        ids.into_iter().map(|id| id.to_string()).collect()
    }

    fn fetch(
        &self,
        source: &str,
        hash: BlobHash,
        max: u64,
        out: &mut dyn Write,
    ) -> Result<u64, String> {
        let status = self.status()?;
        let member = source
            .parse::<NodeId>()
            .ok()
            .and_then(|id| status.members.get(&id).cloned())
            .ok_or_else(|| format!("node {source} is not a member"))?;
        block_on(
            &self.runtime,
            self.client
                .fetch(&member, hash.0, max, &mut |chunk| out.write_all(chunk)),
        )
    }
}

/// Runs [`ZeroFs::fetch_missing`] whenever the store signals a missing blob
/// ([`ZeroFs::missing_notify`]) and every `interval` (retrying what no peer could serve
/// yet). Stops when the returned handle is aborted.
pub fn spawn_fetcher(fs: Arc<ZeroFs>, interval: Duration) -> tokio::task::JoinHandle<()> {
    let notify = fs.missing_notify();
    tokio::spawn(async move {
        loop {
            let _ = tokio::time::timeout(interval, notify.notified()).await;
            let fs = fs.clone();
            match tokio::task::spawn_blocking(move || fs.fetch_missing()).await {
                Ok(Ok(report)) => {
                    if report.fetched > 0 || !report.missing.is_empty() {
                        tracing::info!(
                            fetched = report.fetched,
                            missing = report.missing.len(),
                            rejected = ?report.rejected,
                            "fetched missing blobs"
                        );
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "fetching missing blobs failed"),
                Err(e) => tracing::warn!(error = %e, "the blob fetcher task failed"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::command::{Outcome, decode_response};
    use crate::store::{Quota, WriteOptions};

    fn open(dir: &Path) -> Arc<ZeroFs> {
        Arc::new(ZeroFs::open(dir, Quota::UNLIMITED).unwrap())
    }

    fn blob_count(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("blobs"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_type().unwrap().is_file())
            .count()
    }

    /// A replicator that applies each command to a store at the next log index: a
    /// one-member cluster without the network.
    struct Loopback {
        fs: Weak<ZeroFs>,
        index: AtomicU64,
    }

    impl Replicator for Loopback {
        fn submit(&self, command: Vec<u8>) -> Result<Vec<u8>, String> {
            let fs = self.fs.upgrade().ok_or("gone")?;
            let index = self.index.fetch_add(1, Ordering::SeqCst) + 1;
            let command = FsCommand::decode(&command).map_err(|e| e.to_string())?;
            fs.apply_at(&command, index, Some(&b"state"[..]))
                .map_err(|e| e.to_string())
        }
    }

    /// A replicator that never commits: it fails (`Refuse`) or "crashes" (panics) after the
    /// blob was stored.
    enum Broken {
        Refuse,
        Crash,
    }

    impl Replicator for Broken {
        fn submit(&self, _: Vec<u8>) -> Result<Vec<u8>, String> {
            match self {
                Broken::Refuse => Err("no quorum".to_string()),
                Broken::Crash => panic!("the node died before committing"),
            }
        }
    }

    fn apply(fs: &ZeroFs, index: u64, command: FsCommand) -> crate::Result<Outcome> {
        decode_response(
            &fs.apply_at(&command, index, Some(&index.to_le_bytes()[..]))
                .unwrap(),
        )
    }

    #[test]
    fn applied_commands_reach_the_direct_state_and_refusals_are_answers() {
        let dir = tempfile::tempdir().unwrap();
        let fs = open(dir.path());
        let t = || "acme".to_string();
        let e = apply(
            &fs,
            1,
            FsCommand::Mkdir {
                tenant: t(),
                path: "/a/b".into(),
                parents: true,
                mtime_ns: 42,
            },
        )
        .unwrap();
        assert!(
            matches!(e, Outcome::Entry(ref e) if e.mtime_ns == 42),
            "{e:?}"
        );
        assert_eq!(
            fs.stat("acme", "/a").unwrap().mtime_ns,
            42,
            "the command's mtime"
        );
        // Refusals: the same errors as direct calls, and the position still advances.
        let r = apply(
            &fs,
            2,
            FsCommand::Mkdir {
                tenant: t(),
                path: "/a".into(),
                parents: false,
                mtime_ns: 1,
            },
        );
        assert!(
            matches!(r, Err(crate::Error::AlreadyExists(ref p)) if p == "/a"),
            "{r:?}"
        );
        let r = apply(
            &fs,
            3,
            FsCommand::Remove {
                tenant: t(),
                path: "/nope".into(),
            },
        );
        assert!(matches!(r, Err(crate::Error::NotFound(_))), "{r:?}");
        let r = apply(
            &fs,
            4,
            FsCommand::Remove {
                tenant: "../x".into(),
                path: "/a".into(),
            },
        );
        assert!(
            matches!(r, Err(crate::Error::InvalidTenant { .. })),
            "{r:?}"
        );
        apply(
            &fs,
            5,
            FsCommand::SetQuota {
                tenant: t(),
                max_bytes: 10,
                max_files: 3,
            },
        )
        .unwrap();
        let r = apply(
            &fs,
            6,
            FsCommand::Write {
                tenant: t(),
                path: "/a/f".into(),
                hash: [7; 32],
                size: 11,
                create_parents: false,
                mtime_ns: 5,
            },
        );
        assert!(
            matches!(r, Err(crate::Error::QuotaExceeded { limit: 10, .. })),
            "{r:?}"
        );
        let r = apply(
            &fs,
            7,
            FsCommand::Mkdir {
                tenant: t(),
                path: "/c/d".into(),
                parents: true,
                mtime_ns: 5,
            },
        );
        assert!(
            matches!(r, Err(crate::Error::QuotaExceeded { limit: 3, .. })),
            "{r:?}"
        );
        assert!(
            !fs.exists("acme", "/c").unwrap(),
            "a refusal changes nothing"
        );
        assert_eq!(fs.replica_index().unwrap(), Some(7));
        assert_eq!(
            fs.replica_applied().unwrap(),
            Some(7u64.to_le_bytes().to_vec())
        );
        // A malformed command is refused too, identically on every replica.
        assert!(FsCommand::decode(b"\xff\xff\xff").is_err());
    }

    #[test]
    fn the_position_survives_a_restart_with_the_state_it_describes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let fs = open(dir.path());
            for i in 1..=3u64 {
                apply(
                    &fs,
                    i,
                    FsCommand::Mkdir {
                        tenant: "t".into(),
                        path: format!("/d{i}"),
                        parents: false,
                        mtime_ns: i,
                    },
                )
                .unwrap();
            }
        }
        let fs = open(dir.path());
        assert_eq!(fs.replica_index().unwrap(), Some(3));
        assert_eq!(
            fs.replica_applied().unwrap(),
            Some(3u64.to_le_bytes().to_vec())
        );
        assert_eq!(fs.list("t", "/").unwrap().len(), 3);
    }

    #[test]
    fn writes_through_a_replicator_are_the_direct_ones() {
        let dir = tempfile::tempdir().unwrap();
        let fs = open(dir.path());
        fs.set_replicator(Some(Arc::new(Loopback {
            fs: Arc::downgrade(&fs),
            index: AtomicU64::new(0),
        })));
        let e = fs
            .write_with(
                "acme",
                "/x/y.txt",
                &b"hello"[..],
                WriteOptions {
                    create_parents: true,
                },
            )
            .unwrap();
        assert_eq!(e.size, 5);
        assert_eq!(fs.read_range("acme", "/x/y.txt", 0, 100).unwrap(), b"hello");
        fs.rename("acme", "/x/y.txt", "/x/z.txt").unwrap();
        assert!(matches!(
            fs.remove("acme", "/x"),
            Err(crate::Error::DirectoryNotEmpty(_))
        ));
        fs.remove_all("acme", "/x").unwrap();
        assert_eq!(
            fs.replica_index().unwrap(),
            Some(4),
            "each mutation one command"
        );
        assert_eq!(fs.usage("acme").unwrap().bytes, 0);
        assert_eq!(blob_count(dir.path()), 0, "the freed blob is deleted");
    }

    #[test]
    fn a_write_that_is_not_committed_leaves_no_file_and_no_blob() {
        let dir = tempfile::tempdir().unwrap();
        // Refused (no quorum): the error is returned and the blob removed at once.
        {
            let fs = open(dir.path());
            fs.set_replicator(Some(Arc::new(Broken::Refuse)));
            let e = fs.write("acme", "/f", &b"lost"[..]).unwrap_err();
            assert!(e.to_string().contains("no quorum"), "{e}");
            assert!(!fs.exists("acme", "/f").unwrap());
            assert_eq!(blob_count(dir.path()), 0);
        }
        // A crash between storing the blob and committing: after the restart the file is
        // not visible and gc removed the blob.
        {
            let fs = open(dir.path());
            fs.set_replicator(Some(Arc::new(Broken::Crash)));
            let fs2 = fs.clone();
            let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                fs2.write("acme", "/f", &b"lost in a crash"[..])
            }));
            assert!(crashed.is_err());
            assert_eq!(blob_count(dir.path()), 1, "the blob was stored");
        }
        let fs = open(dir.path());
        assert!(!fs.exists("acme", "/f").unwrap());
        assert_eq!(blob_count(dir.path()), 0, "gc at open removed the orphan");
        assert_eq!(fs.usage("acme").unwrap(), Default::default());
    }

    #[test]
    fn a_snapshot_round_trips_and_replaces_the_whole_metadata() {
        let a_dir = tempfile::tempdir().unwrap();
        let b_dir = tempfile::tempdir().unwrap();
        let a = open(a_dir.path());
        a.write_with(
            "one",
            "/d/f.txt",
            &b"first"[..],
            WriteOptions {
                create_parents: true,
            },
        )
        .unwrap();
        a.write("two", "/g", &b"second"[..]).unwrap();
        a.write("two", "/same", &b"first"[..]).unwrap();
        a.set_quota(
            "two",
            Quota {
                max_bytes: 1000,
                max_files: 9,
            },
        )
        .unwrap();
        let mut snap = Vec::new();
        a.write_snapshot(&mut snap).unwrap();

        let b = open(b_dir.path());
        b.write("old", "/stale", &b"stale content"[..]).unwrap();
        b.install_snapshot(&mut &snap[..], Some(9), b"applied-9")
            .unwrap();
        assert!(!b.exists("old", "/stale").unwrap(), "replaced, not merged");
        assert_eq!(b.replica_index().unwrap(), Some(9));
        assert_eq!(b.replica_applied().unwrap(), Some(b"applied-9".to_vec()));
        for (t, d) in [("one", "/"), ("one", "/d"), ("two", "/")] {
            assert_eq!(a.list(t, d).unwrap(), b.list(t, d).unwrap());
        }
        assert_eq!(a.usages().unwrap(), b.usages().unwrap());
        assert_eq!(a.quota("two").unwrap(), b.quota("two").unwrap());
        // Blobs are not in the snapshot: b lacks both (and dropped its own stale one).
        assert_eq!(blob_count(b_dir.path()), 0);
        assert_eq!(b.missing_blobs().unwrap().len(), 2);
        let e = b.read_range("one", "/d/f.txt", 0, 10).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
        // The reference counts came along: removing one of two references keeps the blob
        // referenced.
        let mut snap_b = Vec::new();
        b.write_snapshot(&mut snap_b).unwrap();
        assert_eq!(snap, snap_b, "the same metadata gives the same snapshot");

        // A truncated or foreign snapshot is refused and changes nothing.
        let before = b.list("two", "/").unwrap();
        assert!(
            b.install_snapshot(&mut &snap[..snap.len() - 3], Some(10), b"x")
                .is_err()
        );
        assert!(
            b.install_snapshot(&mut &b"not a snapshot"[..], Some(10), b"x")
                .is_err()
        );
        assert_eq!(b.list("two", "/").unwrap(), before);
        assert_eq!(b.replica_index().unwrap(), Some(9));
    }

    /// Blob peers over in-process stores: `push` copies into them, `fetch` reads from them
    /// (a liar serves other bytes).
    struct Local {
        stores: Vec<(Arc<ZeroFs>, bool)>,
        pushed: Mutex<u64>,
    }

    impl BlobPeers for Local {
        fn push(&self, hash: BlobHash, size: u64, path: &Path) -> Result<PushReport, String> {
            let mut holders = 1;
            for (fs, _) in &self.stores {
                let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
                fs.receive_blob(hash, size, &mut f)
                    .map_err(|e| e.to_string())?;
                holders += 1;
            }
            *self.pushed.lock().unwrap() += 1;
            Ok(PushReport {
                holders,
                voters: self.stores.len() + 1,
                failures: Vec::new(),
            })
        }

        fn sources(&self) -> Vec<String> {
            (0..self.stores.len()).map(|i| i.to_string()).collect()
        }

        fn fetch(
            &self,
            source: &str,
            hash: BlobHash,
            max: u64,
            out: &mut dyn Write,
        ) -> Result<u64, String> {
            let (fs, liar) = &self.stores[source.parse::<usize>().unwrap()];
            let (size, mut file) = fs
                .open_blob(hash)
                .map_err(|e| e.to_string())?
                .ok_or("absent")?;
            assert!(size <= max);
            if *liar {
                out.write_all(&vec![0u8; size as usize])
                    .map_err(|e| e.to_string())?;
                return Ok(size);
            }
            std::io::copy(&mut file, out).map_err(|e| e.to_string())
        }
    }

    #[test]
    fn a_missing_blob_is_fetched_verified_and_wrong_bytes_are_refused() {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let stores: Vec<_> = dirs.iter().map(|d| open(d.path())).collect();
        stores[0].write("t", "/f", &b"the content"[..]).unwrap();
        let hash = stores[0].stat("t", "/f").unwrap().hash.unwrap();
        let mut snap = Vec::new();
        stores[0].write_snapshot(&mut snap).unwrap();
        // Store 1 holds the blob too; store 2 gets only the metadata.
        let mut f = stores[0].open_blob(hash).unwrap().unwrap().1;
        stores[1].receive_blob(hash, 11, &mut f).unwrap();
        stores[2]
            .install_snapshot(&mut &snap[..], Some(1), b"s")
            .unwrap();
        stores[2].set_blob_peers(Some(Arc::new(Local {
            stores: vec![(stores[0].clone(), true), (stores[1].clone(), false)],
            pushed: Mutex::new(0),
        })));
        // The read fetches on demand: the liar's bytes are refused, the honest ones kept.
        assert_eq!(
            stores[2].read_range("t", "/f", 0, 100).unwrap(),
            b"the content"
        );
        assert!(stores[2].missing_blobs().unwrap().is_empty());

        // Only a liar: the read fails, nothing is stored, and fetch_missing says why.
        std::fs::remove_file(dirs[2].path().join("blobs").join(hash.to_hex())).unwrap();
        stores[2].set_blob_peers(Some(Arc::new(Local {
            stores: vec![(stores[0].clone(), true)],
            pushed: Mutex::new(0),
        })));
        let e = stores[2].read_range("t", "/f", 0, 100).unwrap_err();
        assert!(e.to_string().contains("do not hash"), "{e}");
        let report = stores[2].fetch_missing().unwrap();
        assert_eq!(report.fetched, 0);
        assert_eq!(report.missing, vec![hash]);
        assert!(report.rejected[0].contains("do not hash"), "{report:?}");
        assert_eq!(blob_count(dirs[2].path()), 0);
    }

    #[test]
    fn a_pushed_blob_must_match_its_hash_and_length() {
        let dir = tempfile::tempdir().unwrap();
        let fs = open(dir.path());
        let bytes = b"pushed content".to_vec();
        let hash = {
            use sha2::Digest;
            BlobHash(sha2::Sha256::digest(&bytes).into())
        };
        let wrong = fs.receive_blob(BlobHash([1; 32]), bytes.len() as u64, &mut &bytes[..]);
        assert!(matches!(wrong, Err(BlobRefusal::Mismatch(_))), "{wrong:?}");
        let short = fs.receive_blob(hash, bytes.len() as u64 + 5, &mut &bytes[..]);
        assert!(matches!(short, Err(BlobRefusal::Mismatch(_))), "{short:?}");
        let long = fs.receive_blob(hash, 3, &mut &bytes[..]);
        assert!(matches!(long, Err(BlobRefusal::Mismatch(_))), "{long:?}");
        assert_eq!(blob_count(dir.path()), 0);
        let store = FsBlobStore::new(fs.clone(), 4);
        let big = store.receive(hash.0, bytes.len() as u64, &mut &bytes[..]);
        assert!(matches!(big, Err(BlobRefusal::TooLarge(_))), "{big:?}");
        fs.receive_blob(hash, bytes.len() as u64, &mut &bytes[..])
            .unwrap();
        assert_eq!(blob_count(dir.path()), 1);
        // Unreferenced, it does not outlive the next gc.
        assert_eq!(fs.gc().unwrap().blobs_removed, 1);
    }

    #[test]
    fn a_write_waits_for_a_majority_of_the_blob() {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let stores: Vec<_> = dirs.iter().map(|d| open(d.path())).collect();
        let peers = Arc::new(Local {
            stores: vec![(stores[1].clone(), false), (stores[2].clone(), false)],
            pushed: Mutex::new(0),
        });
        stores[0].set_blob_peers(Some(peers.clone()));
        stores[0].set_replicator(Some(Arc::new(Loopback {
            fs: Arc::downgrade(&stores[0]),
            index: AtomicU64::new(0),
        })));
        stores[0].write("t", "/f", &b"replicated"[..]).unwrap();
        assert_eq!(*peers.pushed.lock().unwrap(), 1);
        let hash = stores[0].stat("t", "/f").unwrap().hash.unwrap();
        for s in &stores[1..] {
            assert!(s.open_blob(hash).unwrap().is_some());
        }

        /// Pushes that reach no other voter.
        struct Unreachable;
        impl BlobPeers for Unreachable {
            fn push(&self, _: BlobHash, _: u64, _: &Path) -> Result<PushReport, String> {
                Ok(PushReport {
                    holders: 1,
                    voters: 3,
                    failures: vec!["node 2: down".into(), "node 3: down".into()],
                })
            }
            fn sources(&self) -> Vec<String> {
                Vec::new()
            }
            fn fetch(
                &self,
                _: &str,
                _: BlobHash,
                _: u64,
                _: &mut dyn Write,
            ) -> Result<u64, String> {
                Err("down".into())
            }
        }
        stores[0].set_blob_peers(Some(Arc::new(Unreachable)));
        let e = stores[0]
            .write("t", "/g", &b"not replicated"[..])
            .unwrap_err();
        assert!(e.to_string().contains("1 of 3 voters"), "{e}");
        assert!(!stores[0].exists("t", "/g").unwrap());
        assert_eq!(
            stores[0].replica_index().unwrap(),
            Some(1),
            "nothing was proposed"
        );
        assert_eq!(
            blob_count(dirs[0].path()),
            1,
            "only the committed blob is left"
        );
    }
}

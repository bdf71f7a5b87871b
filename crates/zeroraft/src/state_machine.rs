//! The state-machine contract the node's providers implement, and its wrapping into openraft's
//! state machine with snapshots kept as files.

use std::fs;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StoredMembership,
};
use redb::Database;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

use crate::codec::{decode, encode};
use crate::log_store::{blocking, read_meta, storage_error, write_meta};
use crate::{Member, NodeId, Response, TypeConfig};

type StorageResult<T> = Result<T, StorageError<NodeId>>;

const SNAPSHOT_KEY: &str = "snapshot";

/// A failure of a [`StateMachine`] to store or read its state. It stops the node's Raft engine
/// (a replica that cannot apply a committed entry must not go on): a command that is merely
/// invalid is not such a failure, and belongs in its response instead.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StateMachineError(String);

impl StateMachineError {
    /// An error with this message (say what failed and on what).
    pub fn new(message: impl std::fmt::Display) -> StateMachineError {
        StateMachineError(message.to_string())
    }
}

impl From<std::io::Error> for StateMachineError {
    fn from(e: std::io::Error) -> Self {
        StateMachineError(e.to_string())
    }
}

/// Where a state machine is in the log: the last entry it applied and the cluster membership
/// in force there. zeroraft gives it with every [`apply`](StateMachine::apply) and
/// [`install`](StateMachine::install); the state machine stores [`as_bytes`](Self::as_bytes)
/// with its state and returns them from [`applied_state`](StateMachine::applied_state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedState {
    pub(crate) last_applied: Option<LogId<NodeId>>,
    pub(crate) membership: StoredMembership<NodeId, Member>,
    bytes: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct AppliedRecord {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Member>,
}

impl AppliedState {
    pub(crate) fn new(
        last_applied: Option<LogId<NodeId>>,
        membership: StoredMembership<NodeId, Member>,
    ) -> Result<AppliedState, StateMachineError> {
        let record = AppliedRecord {
            last_applied,
            membership,
        };
        let bytes = encode(&record)
            .map_err(|e| StateMachineError::new(format!("cannot encode the applied state: {e}")))?;
        Ok(AppliedState {
            last_applied: record.last_applied,
            membership: record.membership,
            bytes,
        })
    }

    /// Reads back bytes that [`as_bytes`](Self::as_bytes) gave.
    pub fn from_bytes(bytes: &[u8]) -> Result<AppliedState, StateMachineError> {
        let record: AppliedRecord = decode(bytes).map_err(|e| {
            StateMachineError::new(format!("the stored applied state is corrupt: {e}"))
        })?;
        Ok(AppliedState {
            last_applied: record.last_applied,
            membership: record.membership,
            bytes: bytes.to_vec(),
        })
    }

    /// The encoding to store with the state machine's state.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The index of the last applied log entry (`None` before the first).
    pub fn index(&self) -> Option<u64> {
        self.last_applied.map(|l| l.index)
    }
}

/// One committed command, in log order.
#[derive(Debug, Clone, Copy)]
pub struct Command<'a> {
    /// Its log index (strictly increasing; the same on every replica).
    pub index: u64,
    /// The term of the leader that appended it.
    pub term: u64,
    /// The command bytes given to [`RaftNode::write`](crate::RaftNode::write).
    pub data: &'a [u8],
}

/// A replicated state machine: what a provider implements to have its state replicated.
///
/// # The contract
///
/// - **Determinism**: [`apply`](Self::apply) must reach the same state and give the same
///   responses on every replica for the same commands from the same state; it may use the
///   [`Command`]'s index and term, never the clock, randomness or local files outside its state.
/// - **Errors**: a command that is invalid (refused by the provider) is a response, not an
///   error; return `Err` only when the state cannot be read or stored. An error stops the Raft
///   engine on this node.
/// - **Restart rule**: zeroraft asks [`applied_state`](Self::applied_state) at start and
///   re-applies the committed log after it, so the applied state a machine reports must be
///   exactly the one its state corresponds to. Two ways keep it:
///   1. *persisted*: the machine stores `state.as_bytes()` **atomically with the effects** of
///      each `apply` and `install` (in the same transaction), and returns the last stored
///      bytes. A crash then loses either both or neither; it need not be fsynced, since the
///      log is, but must never claim more than it holds.
///   2. *rebuilt*: the machine keeps its state in memory and returns `None` at start; zeroraft
///      then installs the latest snapshot into it and re-applies the log after the snapshot.
///
///   In both cases, when the latest snapshot is newer than what the machine reports (it
///   crashed between a snapshot arriving and installing it), zeroraft installs the snapshot
///   first. A machine must never re-apply what it already applied: it sees each entry once
///   after the applied state it reported.
/// - **Snapshots**: [`snapshot`](Self::snapshot) writes the whole state as of the last
///   `apply`; [`install`](Self::install) replaces the whole state with one it wrote (possibly
///   on another replica). The bytes are the machine's own format.
///
/// The methods are called one at a time (never concurrently), from blocking threads.
pub trait StateMachine: Send + 'static {
    /// The applied state last stored with [`apply`](Self::apply) or
    /// [`install`](Self::install), or `None` for a new (or in-memory) machine.
    fn applied_state(&mut self) -> Result<Option<Vec<u8>>, StateMachineError>;

    /// Applies `commands` in order and returns one response per command; then stores `state`
    /// (the position after this batch, which may also cover entries without a command, such
    /// as membership changes) atomically with their effects. `commands` may be empty.
    fn apply(
        &mut self,
        commands: &[Command<'_>],
        state: &AppliedState,
    ) -> Result<Vec<Vec<u8>>, StateMachineError>;

    /// Writes a snapshot of the whole state to `out`.
    fn snapshot(&mut self, out: &mut dyn Write) -> Result<(), StateMachineError>;

    /// Replaces the whole state with the snapshot read from `snapshot`, and stores `state`
    /// atomically with it.
    fn install(
        &mut self,
        snapshot: &mut dyn Read,
        state: &AppliedState,
    ) -> Result<(), StateMachineError>;
}

/// The state machine and the position it is at, under one lock.
pub(crate) struct Shared<S> {
    pub(crate) machine: S,
    pub(crate) applied: AppliedState,
}

pub(crate) type SharedMachine<S> = Arc<Mutex<Shared<S>>>;

pub(crate) fn lock<S>(shared: &Mutex<Shared<S>>) -> Result<MutexGuard<'_, Shared<S>>, String> {
    shared
        .lock()
        .map_err(|_| "the state machine panicked during an earlier operation".to_string())
}

/// A snapshot's bytes on disk: the current snapshot (read when sent to a follower) or one
/// being received (deleted unless it is installed).
#[derive(Debug)]
pub(crate) struct SnapshotFile {
    file: tokio::fs::File,
    path: PathBuf,
    temporary: bool,
}

impl Drop for SnapshotFile {
    fn drop(&mut self) {
        if self.temporary {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl AsyncRead for SnapshotFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_read(cx, buf)
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.file).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(mut self: Pin<&mut Self>, position: std::io::SeekFrom) -> std::io::Result<()> {
        Pin::new(&mut self.file).start_seek(position)
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        Pin::new(&mut self.file).poll_complete(cx)
    }
}

/// The current snapshot's record in `raft_meta`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, Member>,
    /// File name under the snapshot directory.
    file: String,
}

/// The current snapshot, opened: its metadata, its file and the file's path.
type OpenSnapshot = (SnapshotMeta<NodeId, Member>, fs::File, PathBuf);

/// The snapshot directory and the record of the current snapshot.
pub(crate) struct Snapshots {
    db: Arc<Database>,
    dir: PathBuf,
    seq: AtomicU64,
    /// Serializes replacing the current snapshot (a build and an install may race).
    publish: Mutex<()>,
}

fn subject() -> ErrorSubject<NodeId> {
    ErrorSubject::Snapshot(None)
}

fn snapshot_error(verb: ErrorVerb, cause: impl std::fmt::Display) -> StorageError<NodeId> {
    storage_error(subject(), verb, cause)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

impl Snapshots {
    /// Opens the snapshot directory, removing what an interrupted build or transfer left.
    pub(crate) fn open(db: Arc<Database>, dir: PathBuf) -> std::io::Result<Snapshots> {
        fs::create_dir_all(&dir)?;
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().ends_with(".part") {
                fs::remove_file(entry.path())?;
            }
        }
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Ok(Snapshots {
            db,
            dir,
            seq: AtomicU64::new(start),
            publish: Mutex::new(()),
        })
    }

    fn next(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    fn current(&self) -> StorageResult<Option<StoredSnapshot>> {
        read_meta(&self.db, SNAPSHOT_KEY, subject())
    }

    /// Moves the finished file at `from` into place and records it as the current snapshot,
    /// unless a newer one is already current (then it is dropped). Whether it was published.
    fn publish(&self, from: &Path, meta: &SnapshotMeta<NodeId, Member>) -> StorageResult<bool> {
        let _guard = self.publish.lock().unwrap_or_else(|p| p.into_inner());
        let previous = self.current()?;
        if let Some(previous) = &previous
            && previous.meta.last_log_id > meta.last_log_id
        {
            let _ = fs::remove_file(from);
            return Ok(false);
        }
        let index = meta.last_log_id.map(|l| l.index).unwrap_or(0);
        let name = format!("snapshot-{index}-{}.bin", self.next());
        let to = self.dir.join(&name);
        fs::rename(from, &to).map_err(|e| snapshot_error(ErrorVerb::Write, e))?;
        sync_dir(&self.dir).map_err(|e| snapshot_error(ErrorVerb::Write, e))?;
        let record = StoredSnapshot {
            meta: meta.clone(),
            file: name.clone(),
        };
        write_meta(&self.db, SNAPSHOT_KEY, &record, subject())?;
        if let Some(previous) = previous
            && previous.file != name
        {
            // A sender still streaming it keeps its open handle.
            let _ = fs::remove_file(self.dir.join(previous.file));
        }
        Ok(true)
    }

    fn open_current(&self) -> StorageResult<Option<OpenSnapshot>> {
        let Some(record) = self.current()? else {
            return Ok(None);
        };
        let path = self.dir.join(&record.file);
        let file = fs::File::open(&path).map_err(|e| {
            snapshot_error(
                ErrorVerb::Read,
                format!(
                    "the current snapshot {} cannot be opened: {e}",
                    path.display()
                ),
            )
        })?;
        Ok(Some((record.meta, file, path)))
    }
}

/// openraft's state machine over a [`StateMachine`].
pub(crate) struct Machine<S> {
    shared: SharedMachine<S>,
    snapshots: Arc<Snapshots>,
}

impl<S: StateMachine> Machine<S> {
    /// Wraps `machine`, bringing it up to the latest snapshot when it is behind it (the
    /// restart rule). Blocking.
    pub(crate) fn open(
        mut machine: S,
        snapshots: Arc<Snapshots>,
    ) -> Result<(Machine<S>, SharedMachine<S>), String> {
        let applied = match machine
            .applied_state()
            .map_err(|e| format!("the state machine cannot report its applied state: {e}"))?
        {
            Some(bytes) => AppliedState::from_bytes(&bytes).map_err(|e| e.to_string())?,
            None => {
                AppliedState::new(None, StoredMembership::default()).map_err(|e| e.to_string())?
            }
        };
        let mut shared = Shared { machine, applied };
        if let Some((meta, file, path)) = snapshots.open_current().map_err(|e| e.to_string())?
            && meta.last_log_id > shared.applied.last_applied
        {
            tracing::info!(
                snapshot = %meta,
                "the state machine is behind the latest snapshot: installing it"
            );
            let state = AppliedState::new(meta.last_log_id, meta.last_membership.clone())
                .map_err(|e| e.to_string())?;
            shared
                .machine
                .install(&mut BufReader::new(file), &state)
                .map_err(|e| format!("installing the snapshot {}: {e}", path.display()))?;
            shared.applied = state;
        }
        let shared = Arc::new(Mutex::new(shared));
        Ok((
            Machine {
                shared: shared.clone(),
                snapshots,
            },
            shared,
        ))
    }
}

fn apply_batch<S: StateMachine>(
    shared: &Mutex<Shared<S>>,
    entries: &[Entry<TypeConfig>],
) -> StorageResult<Vec<Response>> {
    let Some(last) = entries.last().map(|e| e.log_id) else {
        return Ok(Vec::new());
    };
    let fail = |e: String| storage_error(ErrorSubject::Apply(last), ErrorVerb::Write, e);
    let mut guard = lock(shared).map_err(fail)?;
    let mut membership = guard.applied.membership.clone();
    let mut commands = Vec::new();
    for entry in entries {
        match &entry.payload {
            EntryPayload::Normal(request) => commands.push(Command {
                index: entry.log_id.index,
                term: entry.log_id.leader_id.term,
                data: &request.0,
            }),
            EntryPayload::Membership(m) => {
                membership = StoredMembership::new(Some(entry.log_id), m.clone());
            }
            EntryPayload::Blank => {}
        }
    }
    let state = AppliedState::new(Some(last), membership).map_err(|e| fail(e.to_string()))?;
    let responses = guard
        .machine
        .apply(&commands, &state)
        .map_err(|e| fail(e.to_string()))?;
    if responses.len() != commands.len() {
        return Err(fail(format!(
            "the state machine gave {} responses for {} commands",
            responses.len(),
            commands.len()
        )));
    }
    guard.applied = state;
    let mut responses = responses.into_iter();
    Ok(entries
        .iter()
        .map(|e| match e.payload {
            EntryPayload::Normal(_) => Response(responses.next().unwrap_or_default()),
            _ => Response::default(),
        })
        .collect())
}

impl<S: StateMachine> RaftStateMachine<TypeConfig> for Machine<S> {
    type SnapshotBuilder = Builder<S>;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, Member>)> {
        let guard = lock(&self.shared)
            .map_err(|e| storage_error(ErrorSubject::StateMachine, ErrorVerb::Read, e))?;
        Ok((guard.applied.last_applied, guard.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Response>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let shared = self.shared.clone();
        blocking(ErrorSubject::StateMachine, move || {
            apply_batch(&shared, &entries)
        })
        .await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        Builder {
            shared: self.shared.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<SnapshotFile>> {
        let path = self
            .snapshots
            .dir
            .join(format!("incoming-{}.part", self.snapshots.next()));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| snapshot_error(ErrorVerb::Write, format!("{}: {e}", path.display())))?;
        Ok(Box::new(SnapshotFile {
            file,
            path,
            temporary: true,
        }))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        snapshot: Box<SnapshotFile>,
    ) -> StorageResult<()> {
        let mut snapshot = snapshot;
        snapshot
            .file
            .sync_all()
            .await
            .map_err(|e| snapshot_error(ErrorVerb::Write, e))?;
        // A received file (ours, temporary) is moved into place; any other is copied, never
        // taken from its owner.
        let owned = snapshot.temporary;
        snapshot.temporary = false;
        let source = snapshot.path.clone();
        drop(snapshot);
        let meta = meta.clone();
        let shared = self.shared.clone();
        let snapshots = self.snapshots.clone();
        blocking(subject(), move || {
            let state = AppliedState::new(meta.last_log_id, meta.last_membership.clone())
                .map_err(|e| snapshot_error(ErrorVerb::Write, e))?;
            let path = if owned {
                source
            } else {
                let copy = snapshots
                    .dir
                    .join(format!("incoming-{}.part", snapshots.next()));
                fs::copy(&source, &copy).map_err(|e| snapshot_error(ErrorVerb::Write, e))?;
                fs::File::open(&copy)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| snapshot_error(ErrorVerb::Write, e))?;
                copy
            };
            if !snapshots.publish(&path, &meta)? {
                // A newer snapshot is already current; openraft only installs newer ones, so
                // the state machine is at least there.
                return Ok(());
            }
            let Some((_, file, path)) = snapshots.open_current()? else {
                return Err(snapshot_error(
                    ErrorVerb::Read,
                    "the snapshot just published is not recorded",
                ));
            };
            let mut guard = lock(&shared).map_err(|e| snapshot_error(ErrorVerb::Write, e))?;
            guard
                .machine
                .install(&mut BufReader::new(file), &state)
                .map_err(|e| {
                    snapshot_error(
                        ErrorVerb::Write,
                        format!("installing {}: {e}", path.display()),
                    )
                })?;
            guard.applied = state;
            Ok(())
        })
        .await
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let snapshots = self.snapshots.clone();
        let current = blocking(subject(), move || snapshots.open_current()).await?;
        Ok(current.map(|(meta, file, path)| Snapshot {
            meta,
            snapshot: Box::new(SnapshotFile {
                file: tokio::fs::File::from_std(file),
                path,
                temporary: false,
            }),
        }))
    }
}

/// Builds a snapshot of the state machine into the snapshot directory.
pub(crate) struct Builder<S> {
    shared: SharedMachine<S>,
    snapshots: Arc<Snapshots>,
}

fn build<S: StateMachine>(
    shared: &Mutex<Shared<S>>,
    snapshots: &Snapshots,
) -> StorageResult<Snapshot<TypeConfig>> {
    let seq = snapshots.next();
    let part = snapshots.dir.join(format!("build-{seq}.part"));
    let write_err = |e: String| snapshot_error(ErrorVerb::Write, e);
    let applied = {
        let mut guard = lock(shared).map_err(write_err)?;
        let file = fs::File::create(&part).map_err(|e| write_err(e.to_string()))?;
        let mut out = BufWriter::new(file);
        let result = guard.machine.snapshot(&mut out);
        if let Err(e) = result {
            drop(out);
            let _ = fs::remove_file(&part);
            return Err(write_err(format!(
                "the state machine cannot write a snapshot: {e}"
            )));
        }
        let file = out
            .into_inner()
            .map_err(|e| write_err(e.error().to_string()))?;
        file.sync_all().map_err(|e| write_err(e.to_string()))?;
        guard.applied.clone()
    };
    let snapshot_id = match applied.last_applied {
        Some(l) => format!(
            "{}-{}-{}-{seq}",
            l.leader_id.term, l.leader_id.node_id, l.index
        ),
        None => format!("0-0-0-{seq}"),
    };
    let meta = SnapshotMeta {
        last_log_id: applied.last_applied,
        last_membership: applied.membership.clone(),
        snapshot_id,
    };
    snapshots.publish(&part, &meta)?;
    let Some((meta, file, path)) = snapshots.open_current()? else {
        return Err(write_err(
            "the snapshot just built is not recorded".to_string(),
        ));
    };
    Ok(Snapshot {
        meta,
        snapshot: Box::new(SnapshotFile {
            file: tokio::fs::File::from_std(file),
            path,
            temporary: false,
        }),
    })
}

impl<S: StateMachine> RaftSnapshotBuilder<TypeConfig> for Builder<S> {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let shared = self.shared.clone();
        let snapshots = self.snapshots.clone();
        blocking(subject(), move || build(&shared, &snapshots)).await
    }
}

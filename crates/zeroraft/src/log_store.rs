//! The Raft log on redb: `raft_log` (index → entry) and `raft_meta` (vote, commit index, last
//! purged id, current snapshot, format version). Every change is one redb write transaction
//! with the default durability (fsynced before `commit` returns); openraft is told an append
//! is flushed only after its commit.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, StorageError,
    StorageIOError, Vote,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{decode, encode};
use crate::{Error, NodeId, TypeConfig};

/// Log entries by index.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Named metadata values (postcard-encoded).
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

/// The on-disk format this code reads and writes.
const FORMAT: u32 = 1;
const FORMAT_KEY: &str = "format";
const VOTE_KEY: &str = "vote";
const COMMITTED_KEY: &str = "committed";
const PURGED_KEY: &str = "last_purged";

type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// A storage error about `subject`, from any displayable cause.
pub(crate) fn storage_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    cause: impl std::fmt::Display,
) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, AnyError::error(cause.to_string())).into()
}

/// Opens (creating when absent) the Raft database at `path` and checks its format.
pub(crate) fn open_database(path: &Path) -> Result<Arc<Database>, Error> {
    let fail = |reason: String| Error::Storage {
        path: path.to_path_buf(),
        reason,
    };
    let db = Database::create(path).map_err(|e| fail(e.to_string()))?;
    let txn = db.begin_write().map_err(|e| fail(e.to_string()))?;
    {
        txn.open_table(LOG).map_err(|e| fail(e.to_string()))?;
        let mut meta = txn.open_table(META).map_err(|e| fail(e.to_string()))?;
        let stored = meta
            .get(FORMAT_KEY)
            .map_err(|e| fail(e.to_string()))?
            .map(|v| decode::<u32>(v.value()));
        match stored {
            None => {
                let bytes = encode(&FORMAT).map_err(|e| fail(e.to_string()))?;
                meta.insert(FORMAT_KEY, bytes.as_slice())
                    .map_err(|e| fail(e.to_string()))?;
            }
            Some(Ok(FORMAT)) => {}
            Some(Ok(other)) => {
                return Err(fail(format!(
                    "it is in raft storage format {other}, this build reads format {FORMAT}; \
                     run the build that wrote it, or move the directory away to start afresh"
                )));
            }
            Some(Err(e)) => return Err(fail(format!("its format record is corrupt: {e}"))),
        }
    }
    txn.commit().map_err(|e| fail(e.to_string()))?;
    Ok(Arc::new(db))
}

/// Reads the metadata value `key`.
pub(crate) fn read_meta<T: DeserializeOwned>(
    db: &Database,
    key: &str,
    subject: ErrorSubject<NodeId>,
) -> StorageResult<Option<T>> {
    let read = || -> Result<Option<T>, String> {
        let txn = db.begin_read().map_err(|e| e.to_string())?;
        let table = txn.open_table(META).map_err(|e| e.to_string())?;
        let Some(value) = table.get(key).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        decode(value.value())
            .map(Some)
            .map_err(|e| format!("the stored {key} is corrupt: {e}"))
    };
    read().map_err(|e| storage_error(subject, ErrorVerb::Read, e))
}

/// Writes the metadata value `key` durably.
pub(crate) fn write_meta<T: Serialize>(
    db: &Database,
    key: &str,
    value: &T,
    subject: ErrorSubject<NodeId>,
) -> StorageResult<()> {
    let write = || -> Result<(), String> {
        let bytes = encode(value).map_err(|e| e.to_string())?;
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        txn.open_table(META)
            .map_err(|e| e.to_string())?
            .insert(key, bytes.as_slice())
            .map_err(|e| e.to_string())?;
        txn.commit().map_err(|e| e.to_string())
    };
    write().map_err(|e| storage_error(subject, ErrorVerb::Write, e))
}

/// Runs blocking storage work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    subject: ErrorSubject<NodeId>,
    work: impl FnOnce() -> StorageResult<T> + Send + 'static,
) -> StorageResult<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) => Err(storage_error(
            subject,
            ErrorVerb::Write,
            format!("the storage task failed: {e}"),
        )),
    }
}

/// openraft's log storage and log reader over the shared Raft database.
#[derive(Clone)]
pub(crate) struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub(crate) fn new(db: Arc<Database>) -> LogStore {
        LogStore { db }
    }
}

fn read_range(
    db: &Database,
    range: (Bound<u64>, Bound<u64>),
) -> StorageResult<Vec<Entry<TypeConfig>>> {
    let fail = |e: String| storage_error(ErrorSubject::Logs, ErrorVerb::Read, e);
    let txn = db.begin_read().map_err(|e| fail(e.to_string()))?;
    let table = txn.open_table(LOG).map_err(|e| fail(e.to_string()))?;
    let mut entries = Vec::new();
    for item in table.range::<u64>(range).map_err(|e| fail(e.to_string()))? {
        let (index, value) = item.map_err(|e| fail(e.to_string()))?;
        let entry: Entry<TypeConfig> = decode(value.value())
            .map_err(|e| fail(format!("log entry {} is corrupt: {e}", index.value())))?;
        if entry.log_id.index != index.value() {
            return Err(fail(format!(
                "log entry stored at {} claims index {}",
                index.value(),
                entry.log_id.index
            )));
        }
        entries.push(entry);
    }
    Ok(entries)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
        let db = self.db.clone();
        blocking(ErrorSubject::Logs, move || read_range(&db, bounds)).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let db = self.db.clone();
        blocking(ErrorSubject::Logs, move || {
            let purged: Option<LogId<NodeId>> = read_meta(&db, PURGED_KEY, ErrorSubject::Logs)?;
            let fail = |e: String| storage_error(ErrorSubject::Logs, ErrorVerb::Read, e);
            let txn = db.begin_read().map_err(|e| fail(e.to_string()))?;
            let table = txn.open_table(LOG).map_err(|e| fail(e.to_string()))?;
            let last = match table.last().map_err(|e| fail(e.to_string()))? {
                Some((_, value)) => {
                    let entry: Entry<TypeConfig> = decode(value.value())
                        .map_err(|e| fail(format!("the last log entry is corrupt: {e}")))?;
                    Some(entry.log_id)
                }
                None => purged,
            };
            Ok(LogState {
                last_purged_log_id: purged,
                last_log_id: last,
            })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        let db = self.db.clone();
        let vote = *vote;
        blocking(ErrorSubject::Vote, move || {
            write_meta(&db, VOTE_KEY, &vote, ErrorSubject::Vote)
        })
        .await
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        let db = self.db.clone();
        blocking(ErrorSubject::Vote, move || {
            read_meta(&db, VOTE_KEY, ErrorSubject::Vote)
        })
        .await
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        let db = self.db.clone();
        blocking(ErrorSubject::Store, move || {
            write_meta(&db, COMMITTED_KEY, &committed, ErrorSubject::Store)
        })
        .await
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        let db = self.db.clone();
        blocking(ErrorSubject::Store, move || {
            Ok(
                read_meta::<Option<LogId<NodeId>>>(&db, COMMITTED_KEY, ErrorSubject::Store)?
                    .flatten(),
            )
        })
        .await
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        for entry in entries {
            let bytes = encode(&entry).map_err(|e| {
                storage_error(
                    ErrorSubject::Log(entry.log_id),
                    ErrorVerb::Write,
                    format!("cannot encode the entry: {e}"),
                )
            })?;
            encoded.push((entry.log_id.index, bytes));
        }
        let db = self.db.clone();
        let result = blocking(ErrorSubject::Logs, move || {
            let fail = |e: String| storage_error(ErrorSubject::Logs, ErrorVerb::Write, e);
            let txn = db.begin_write().map_err(|e| fail(e.to_string()))?;
            {
                let mut table = txn.open_table(LOG).map_err(|e| fail(e.to_string()))?;
                for (index, bytes) in &encoded {
                    table
                        .insert(*index, bytes.as_slice())
                        .map_err(|e| fail(e.to_string()))?;
                }
            }
            // Durability::Immediate (redb's default): on disk when commit returns.
            txn.commit().map_err(|e| fail(e.to_string()))
        })
        .await;
        match &result {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let db = self.db.clone();
        blocking(ErrorSubject::Logs, move || {
            let fail = |e: String| storage_error(ErrorSubject::Logs, ErrorVerb::Delete, e);
            let txn = db.begin_write().map_err(|e| fail(e.to_string()))?;
            txn.open_table(LOG)
                .map_err(|e| fail(e.to_string()))?
                .retain_in(log_id.index.., |_, _| false)
                .map_err(|e| fail(e.to_string()))?;
            txn.commit().map_err(|e| fail(e.to_string()))
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let db = self.db.clone();
        blocking(ErrorSubject::Logs, move || {
            let fail = |e: String| storage_error(ErrorSubject::Logs, ErrorVerb::Delete, e);
            let purged = encode(&log_id).map_err(|e| fail(e.to_string()))?;
            let txn = db.begin_write().map_err(|e| fail(e.to_string()))?;
            {
                txn.open_table(META)
                    .map_err(|e| fail(e.to_string()))?
                    .insert(PURGED_KEY, purged.as_slice())
                    .map_err(|e| fail(e.to_string()))?;
                txn.open_table(LOG)
                    .map_err(|e| fail(e.to_string()))?
                    .retain_in(..=log_id.index, |_, _| false)
                    .map_err(|e| fail(e.to_string()))?;
            }
            txn.commit().map_err(|e| fail(e.to_string()))
        })
        .await
    }
}

//! The store: blob files plus the redb metadata tree.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition};
use sha2::{Digest, Sha256};

use crate::command::{FsCommand, Outcome, decode_response, encode_response, is_refusal};
use crate::error::{Error, QuotaKind, Result};
use crate::path::{TenantPath, validate_tenant};
use crate::replica::{BlobPeers, Replicator};

/// Entries: (tenant, parent dir path, name) → encoded [`RawEntry`].
const ENTRIES: TableDefinition<(&str, &str, &str), &[u8]> = TableDefinition::new("entries");
/// Usage per tenant: tenant → (bytes, files).
const USAGE: TableDefinition<&str, (u64, u64)> = TableDefinition::new("usage");
/// Explicit quotas per tenant: tenant → (max_bytes, max_files).
const QUOTAS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("quotas");
/// Blob reference counts across all tenants: sha256 → count (absent means 0).
const REFS: TableDefinition<[u8; 32], u64> = TableDefinition::new("blob_refs");
/// The replica's position in the cluster log: `index` (the last applied command's log index,
/// u64 little-endian) and `applied` (zeroraft's applied state), written in the transaction of
/// the command they describe.
const REPLICA: TableDefinition<&str, &[u8]> = TableDefinition::new("replica");

type EntriesTable<'t> = Table<'t, (&'static str, &'static str, &'static str), &'static [u8]>;

const STREAM_BUF: usize = 256 * 1024;
/// Staging reservations grow in steps of this size (or less, up to what the quota leaves), so
/// that a write of many small pieces does not look up the tenant's usage for every piece.
const RESERVE_STEP: u64 = 1 << 20;
const ENTRY_VERSION: u8 = 1;
const ENTRY_LEN: usize = 1 + 1 + 32 + 8 + 8;

/// A tenant's limits. Directories count as files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Maximum total size of the tenant's file contents, in bytes (logical: deduplicated
    /// content still counts once per file).
    pub max_bytes: u64,
    /// Maximum number of entries (files and directories; the root is free).
    pub max_files: u64,
}

impl Quota {
    /// No limits.
    pub const UNLIMITED: Quota = Quota {
        max_bytes: u64::MAX,
        max_files: u64::MAX,
    };
}

/// What a tenant currently uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Total size of the tenant's files, in bytes.
    pub bytes: u64,
    /// Number of entries (files and directories, without the root).
    pub files: u64,
}

/// The kind of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file, whose content is a blob.
    File,
    /// A directory.
    Dir,
}

/// SHA-256 of a file's content; also the blob's file name under `blobs/`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobHash(pub [u8; 32]);

impl BlobHash {
    /// Lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses the lowercase or uppercase hex form.
    pub fn from_hex(s: &str) -> Option<BlobHash> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(BlobHash(out))
    }
}

impl fmt::Display for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobHash({})", self.to_hex())
    }
}

/// Metadata of one file or directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its path in the tenant's namespace.
    pub path: TenantPath,
    /// File or directory.
    pub kind: EntryKind,
    /// Content hash (files only).
    pub hash: Option<BlobHash>,
    /// Content size in bytes (0 for directories).
    pub size: u64,
    /// Last modification, nanoseconds since the Unix epoch (0 for the root).
    pub mtime_ns: u64,
}

/// Options of [`ZeroFs::write_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// Create missing parent directories (like `mkdir -p`) instead of failing with
    /// [`Error::NotFound`] naming the missing parent.
    pub create_parents: bool,
}

/// What [`ZeroFs::gc`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Unreferenced blob files removed.
    pub blobs_removed: u64,
    /// Their total size.
    pub bytes_freed: u64,
    /// Leftover temporary files removed.
    pub tmp_removed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RawEntry {
    kind: EntryKind,
    hash: [u8; 32],
    size: u64,
    mtime_ns: u64,
}

impl RawEntry {
    fn dir(mtime_ns: u64) -> Self {
        RawEntry {
            kind: EntryKind::Dir,
            hash: [0; 32],
            size: 0,
            mtime_ns,
        }
    }

    fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut b = [0u8; ENTRY_LEN];
        b[0] = ENTRY_VERSION;
        b[1] = match self.kind {
            EntryKind::File => 0,
            EntryKind::Dir => 1,
        };
        b[2..34].copy_from_slice(&self.hash);
        b[34..42].copy_from_slice(&self.size.to_le_bytes());
        b[42..50].copy_from_slice(&self.mtime_ns.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Result<Self> {
        if b.len() != ENTRY_LEN || b[0] != ENTRY_VERSION {
            return Err(Error::Corrupt(format!(
                "undecodable entry record ({} bytes, version {:?})",
                b.len(),
                b.first()
            )));
        }
        let kind = match b[1] {
            0 => EntryKind::File,
            1 => EntryKind::Dir,
            k => return Err(Error::Corrupt(format!("unknown entry kind {k}"))),
        };
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&b[2..34]);
        let le_u64 = |bytes: &[u8]| {
            let mut n = [0u8; 8];
            n.copy_from_slice(bytes);
            u64::from_le_bytes(n)
        };
        let size = le_u64(&b[34..42]);
        let mtime_ns = le_u64(&b[42..50]);
        Ok(RawEntry {
            kind,
            hash,
            size,
            mtime_ns,
        })
    }

    fn to_entry(self, path: TenantPath) -> Entry {
        Entry {
            path,
            kind: self.kind,
            hash: (self.kind == EntryKind::File).then_some(BlobHash(self.hash)),
            size: self.size,
            mtime_ns: self.mtime_ns,
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn is_dir(e: &Option<RawEntry>) -> bool {
    matches!(
        e,
        Some(RawEntry {
            kind: EntryKind::Dir,
            ..
        })
    )
}

// ---------- table helpers (work on read and write transactions) ----------

fn lookup<T>(t: &T, tenant: &str, path: &TenantPath) -> Result<Option<RawEntry>>
where
    T: ReadableTable<(&'static str, &'static str, &'static str), &'static [u8]>,
{
    let Some((parent, name)) = path.split() else {
        return Ok(Some(RawEntry::dir(0)));
    };
    match t.get((tenant, parent, name))? {
        Some(v) => Ok(Some(RawEntry::decode(v.value())?)),
        None => Ok(None),
    }
}

/// Direct children of `dir` as (name, entry).
fn children<T>(t: &T, tenant: &str, dir: &str, limit: usize) -> Result<Vec<(String, RawEntry)>>
where
    T: ReadableTable<(&'static str, &'static str, &'static str), &'static [u8]>,
{
    let mut out = Vec::new();
    for item in t.range((tenant, dir, "")..)? {
        let (k, v) = item?;
        let (kt, kp, kn) = k.value();
        if kt != tenant || kp != dir || out.len() >= limit {
            break;
        }
        out.push((kn.to_string(), RawEntry::decode(v.value())?));
    }
    Ok(out)
}

/// Every entry strictly below `dir` as (parent, name, entry).
fn subtree<T>(t: &T, tenant: &str, dir: &TenantPath) -> Result<Vec<(String, String, RawEntry)>>
where
    T: ReadableTable<(&'static str, &'static str, &'static str), &'static [u8]>,
{
    let mut out = Vec::new();
    let mut collect = |from: &str, keep: &dyn Fn(&str) -> bool| -> Result<()> {
        for item in t.range((tenant, from, "")..)? {
            let (k, v) = item?;
            let (kt, kp, kn) = k.value();
            if kt != tenant || !keep(kp) {
                break;
            }
            out.push((kp.to_string(), kn.to_string(), RawEntry::decode(v.value())?));
        }
        Ok(())
    };
    if dir.is_root() {
        collect("", &|_| true)?;
    } else {
        let d = dir.as_str();
        // Parents equal to `d`, then parents starting with `d/` (which sort right after `d`
        // only up to siblings like `d!`; so scan the two ranges separately).
        collect(d, &|p| p == d)?;
        let prefix = format!("{d}/");
        collect(&prefix, &|p| p.starts_with(&prefix))?;
    }
    Ok(out)
}

fn get_usage<T>(t: &T, tenant: &str) -> Result<Usage>
where
    T: ReadableTable<&'static str, (u64, u64)>,
{
    Ok(match t.get(tenant)? {
        Some(v) => {
            let (bytes, files) = v.value();
            Usage { bytes, files }
        }
        None => Usage::default(),
    })
}

fn get_quota<T>(t: &T, tenant: &str, default: Quota) -> Result<Quota>
where
    T: ReadableTable<&'static str, (u64, u64)>,
{
    Ok(match t.get(tenant)? {
        Some(v) => {
            let (max_bytes, max_files) = v.value();
            Quota {
                max_bytes,
                max_files,
            }
        }
        None => default,
    })
}

/// Ancestors of `path` (excluding the root and `path` itself) that do not exist yet, top down.
/// Fails if one is a file, or if one is missing and `create` is false.
fn missing_parents<T>(
    t: &T,
    tenant: &str,
    path: &TenantPath,
    create: bool,
) -> Result<Vec<TenantPath>>
where
    T: ReadableTable<(&'static str, &'static str, &'static str), &'static [u8]>,
{
    let mut missing = Vec::new();
    let mut cur = TenantPath::root();
    let segs: Vec<&str> = path.segments().collect();
    for seg in &segs[..segs.len().saturating_sub(1)] {
        cur = cur.join(seg)?;
        if !missing.is_empty() {
            missing.push(cur.clone());
            continue;
        }
        match lookup(t, tenant, &cur)? {
            Some(e) if e.kind == EntryKind::Dir => {}
            Some(_) => return Err(Error::NotADirectory(cur.to_string())),
            None if create => missing.push(cur.clone()),
            None => return Err(Error::NotFound(cur.to_string())),
        }
    }
    Ok(missing)
}

/// The open tables of one write transaction, plus blobs whose count dropped to zero.
struct W<'t> {
    tenant: &'t str,
    entries: EntriesTable<'t>,
    usage: Table<'t, &'static str, (u64, u64)>,
    quotas: Table<'t, &'static str, (u64, u64)>,
    refs: Table<'t, [u8; 32], u64>,
    default_quota: Quota,
    freed: Vec<[u8; 32]>,
}

impl W<'_> {
    fn lookup(&self, path: &TenantPath) -> Result<Option<RawEntry>> {
        lookup(&self.entries, self.tenant, path)
    }

    fn put(&mut self, path: &TenantPath, e: &RawEntry) -> Result<()> {
        let (parent, name) = path
            .split()
            .ok_or_else(|| Error::invalid_path(path.as_str(), "the root cannot be replaced"))?;
        self.entries
            .insert((self.tenant, parent, name), e.encode().as_slice())?;
        Ok(())
    }

    fn del(&mut self, path: &TenantPath) -> Result<()> {
        let (parent, name) = path
            .split()
            .ok_or_else(|| Error::invalid_path(path.as_str(), "the root cannot be removed"))?;
        self.entries.remove((self.tenant, parent, name))?;
        Ok(())
    }

    fn usage(&self) -> Result<Usage> {
        get_usage(&self.usage, self.tenant)
    }

    fn quota(&self) -> Result<Quota> {
        get_quota(&self.quotas, self.tenant, self.default_quota)
    }

    fn set_usage(&mut self, u: Usage) -> Result<()> {
        self.usage.insert(self.tenant, (u.bytes, u.files))?;
        Ok(())
    }

    fn quota_error(&self, limit: u64, kind: QuotaKind) -> Error {
        Error::QuotaExceeded {
            tenant: self.tenant.to_string(),
            limit,
            kind,
        }
    }

    /// Refuses adding `new_files` entries when that passes the files limit.
    fn check_files(&self, usage: Usage, new_files: u64) -> Result<()> {
        let q = self.quota()?;
        if new_files > 0 && usage.files.saturating_add(new_files) > q.max_files {
            return Err(self.quota_error(q.max_files, QuotaKind::Files));
        }
        Ok(())
    }

    fn inc_ref(&mut self, h: [u8; 32]) -> Result<()> {
        let n = self.refs.get(h)?.map(|v| v.value()).unwrap_or(0);
        self.refs.insert(h, n + 1)?;
        Ok(())
    }

    fn dec_ref(&mut self, h: [u8; 32]) -> Result<()> {
        let n = self.refs.get(h)?.map(|v| v.value()).unwrap_or(0);
        if n <= 1 {
            self.refs.remove(h)?;
            self.freed.push(h);
        } else {
            self.refs.insert(h, n - 1)?;
        }
        Ok(())
    }

    /// Removes one entry (not its children), updating usage and refcounts.
    fn drop_entry(&mut self, path: &TenantPath, e: &RawEntry, usage: &mut Usage) -> Result<()> {
        self.del(path)?;
        usage.files = usage.files.saturating_sub(1);
        if e.kind == EntryKind::File {
            usage.bytes = usage.bytes.saturating_sub(e.size);
            self.dec_ref(e.hash)?;
        }
        Ok(())
    }
}

/// The entry of a write or mkdir outcome.
fn entry_of(outcome: Outcome) -> Result<Entry> {
    match outcome {
        Outcome::Entry(e) => Ok(e),
        other => Err(Error::Corrupt(format!(
            "the store answered {other:?} where an entry was expected"
        ))),
    }
}

/// Applies one command inside the open transaction `w` (of the command's tenant). A refusal
/// is returned before anything is changed or aborts the transaction.
fn exec(w: &mut W<'_>, cmd: &FsCommand) -> Result<Outcome> {
    let tenant = w.tenant;
    match cmd {
        FsCommand::Write {
            path,
            hash,
            size,
            create_parents,
            mtime_ns,
            ..
        } => {
            let path = TenantPath::parse(path)?;
            if path.is_root() {
                return Err(Error::IsADirectory(path.to_string()));
            }
            let (hash, size, mtime) = (*hash, *size, *mtime_ns);
            let missing = missing_parents(&w.entries, tenant, &path, *create_parents)?;
            let existing = w.lookup(&path)?;
            if is_dir(&existing) {
                return Err(Error::IsADirectory(path.to_string()));
            }
            let mut usage = w.usage()?;
            let new_files = missing.len() as u64 + u64::from(existing.is_none());
            w.check_files(usage, new_files)?;
            let old = existing.map_or(0, |e| e.size);
            let new_bytes = usage.bytes.saturating_sub(old).saturating_add(size);
            let q = w.quota()?;
            if new_bytes > q.max_bytes && size > old {
                return Err(w.quota_error(q.max_bytes, QuotaKind::Bytes));
            }
            for dir in &missing {
                w.put(dir, &RawEntry::dir(mtime))?;
            }
            let entry = RawEntry {
                kind: EntryKind::File,
                hash,
                size,
                mtime_ns: mtime,
            };
            w.put(&path, &entry)?;
            w.inc_ref(hash)?;
            if let Some(old) = existing {
                w.dec_ref(old.hash)?;
            }
            usage.bytes = new_bytes;
            usage.files += new_files;
            w.set_usage(usage)?;
            Ok(Outcome::Entry(entry.to_entry(path)))
        }
        FsCommand::Mkdir {
            path,
            parents,
            mtime_ns,
            ..
        } => {
            let path = TenantPath::parse(path)?;
            match w.lookup(&path)? {
                Some(e) if e.kind == EntryKind::Dir && *parents => {
                    return Ok(Outcome::Entry(e.to_entry(path)));
                }
                Some(_) => return Err(Error::AlreadyExists(path.to_string())),
                None => {}
            }
            let missing = missing_parents(&w.entries, tenant, &path, *parents)?;
            let mut usage = w.usage()?;
            let new_files = missing.len() as u64 + 1;
            w.check_files(usage, new_files)?;
            let dir = RawEntry::dir(*mtime_ns);
            for p in missing.iter().chain(std::iter::once(&path)) {
                w.put(p, &dir)?;
            }
            usage.files += new_files;
            w.set_usage(usage)?;
            Ok(Outcome::Entry(dir.to_entry(path)))
        }
        FsCommand::Remove { path, .. } => {
            let path = removable(path)?;
            let e = w
                .lookup(&path)?
                .ok_or_else(|| Error::NotFound(path.to_string()))?;
            if e.kind == EntryKind::Dir
                && !children(&w.entries, tenant, path.as_str(), 1)?.is_empty()
            {
                return Err(Error::DirectoryNotEmpty(path.to_string()));
            }
            let mut usage = w.usage()?;
            w.drop_entry(&path, &e, &mut usage)?;
            w.set_usage(usage)?;
            Ok(Outcome::Done)
        }
        FsCommand::RemoveAll { path, .. } => {
            let path = removable(path)?;
            let e = w
                .lookup(&path)?
                .ok_or_else(|| Error::NotFound(path.to_string()))?;
            let mut usage = w.usage()?;
            if e.kind == EntryKind::Dir {
                for (parent, name, child) in subtree(&w.entries, tenant, &path)? {
                    let p = TenantPath::parse(&parent)?.join(&name)?;
                    w.drop_entry(&p, &child, &mut usage)?;
                }
            }
            w.drop_entry(&path, &e, &mut usage)?;
            w.set_usage(usage)?;
            Ok(Outcome::Done)
        }
        FsCommand::Rename { from, to, .. } => {
            let from = TenantPath::parse(from)?;
            let to = TenantPath::parse(to)?;
            if from.is_root() {
                return Err(Error::invalid_path(
                    "/",
                    "the tenant root cannot be renamed",
                ));
            }
            if to.is_root() {
                return Err(Error::invalid_path(
                    "/",
                    "the tenant root cannot be replaced",
                ));
            }
            let src = w
                .lookup(&from)?
                .ok_or_else(|| Error::NotFound(from.to_string()))?;
            if from == to {
                return Ok(Outcome::Done);
            }
            if src.kind == EntryKind::Dir && to.starts_with(&from) {
                return Err(Error::invalid_path(
                    to.as_str(),
                    format!("cannot move directory {from} into itself"),
                ));
            }
            missing_parents(&w.entries, tenant, &to, false)?;
            let mut usage = w.usage()?;
            if let Some(dst) = w.lookup(&to)? {
                match (src.kind, dst.kind) {
                    (EntryKind::File, EntryKind::Dir) => {
                        return Err(Error::IsADirectory(to.to_string()));
                    }
                    (EntryKind::Dir, EntryKind::File) => {
                        return Err(Error::NotADirectory(to.to_string()));
                    }
                    (EntryKind::Dir, EntryKind::Dir) => {
                        if !children(&w.entries, tenant, to.as_str(), 1)?.is_empty() {
                            return Err(Error::DirectoryNotEmpty(to.to_string()));
                        }
                    }
                    (EntryKind::File, EntryKind::File) => {}
                }
                w.drop_entry(&to, &dst, &mut usage)?;
            }
            if src.kind == EntryKind::Dir {
                let moved = subtree(&w.entries, tenant, &from)?;
                for (parent, name, e) in moved {
                    w.entries.remove((tenant, parent.as_str(), name.as_str()))?;
                    let new_parent = format!("{}{}", to.as_str(), &parent[from.as_str().len()..]);
                    w.entries.insert(
                        (tenant, new_parent.as_str(), name.as_str()),
                        e.encode().as_slice(),
                    )?;
                }
            }
            w.del(&from)?;
            w.put(&to, &src)?;
            w.set_usage(usage)?;
            Ok(Outcome::Done)
        }
        FsCommand::SetQuota {
            max_bytes,
            max_files,
            ..
        } => {
            w.quotas.insert(w.tenant, (*max_bytes, *max_files))?;
            Ok(Outcome::Done)
        }
    }
}

/// A path that may be removed (not the root).
fn removable(path: &str) -> Result<TenantPath> {
    let path = TenantPath::parse(path)?;
    if path.is_root() {
        return Err(Error::invalid_path(
            "/",
            "the tenant root cannot be removed",
        ));
    }
    Ok(path)
}

/// What the store and its staged writes share: the temporary directory, the temporary files
/// in use (kept by [`ZeroFs::gc`]), and the bytes each tenant has reserved for staging.
#[derive(Debug)]
struct Staging {
    tmp: PathBuf,
    inflight: Mutex<HashSet<PathBuf>>,
    /// Tenant → bytes reserved by all of its staged writes (of every request and upload).
    reserved: Mutex<HashMap<String, u64>>,
    counter: AtomicU64,
}

impl Staging {
    /// Returns `bytes` of `tenant`'s reservation.
    fn release(&self, tenant: &str, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let mut reserved = lock(&self.reserved);
        if let Some(total) = reserved.get_mut(tenant) {
            *total = total.saturating_sub(bytes);
            if *total == 0 {
                reserved.remove(tenant);
            }
        }
    }
}

/// A write being staged: a temporary file in the store, and the share of its tenant's byte
/// quota it has reserved.
///
/// Every staged write of a tenant (guest writes of all its requests, management uploads)
/// reserves from one per-tenant pool: together they never hold more than the tenant's byte
/// quota leaves ([`ZeroFs::reserve`]), so many open staged files cannot each grow to the quota.
/// The content reaches the tenant's tree only through [`ZeroFs::publish`]; dropping a staged
/// write aborts it: its temporary file is removed and its reservation returned.
#[derive(Debug)]
pub struct StagedWrite {
    staging: Arc<Staging>,
    tenant: String,
    path: PathBuf,
    file: File,
    reserved: u64,
}

impl StagedWrite {
    /// The staged content, for positioned reads and writes (`FileExt::read_at`/`write_at`).
    /// Writing past [`StagedWrite::reserved`] bytes is the caller's error: reserve first.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The size the staged content may reach: the bytes it has reserved.
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// The staged content's current size.
    pub fn len(&self) -> Result<u64> {
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(|e| Error::io("inspecting a staged write", e))
    }

    /// Whether the staged content is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}

impl Drop for StagedWrite {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        lock(&self.staging.inflight).remove(&self.path);
        self.staging.release(&self.tenant, self.reserved);
    }
}

/// Fails with [`Error::TimedOut`] once `deadline` has passed.
fn check_deadline(deadline: Option<Instant>, what: &str) -> Result<()> {
    match deadline {
        Some(d) if Instant::now() >= d => Err(Error::TimedOut(format!(
            "{what} did not finish within the time its request had; nothing was changed"
        ))),
        _ => Ok(()),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))
}

/// A streaming reader over one file's content; see [`ZeroFs::open_read`].
#[derive(Debug)]
pub struct FileReader {
    file: File,
    entry: Entry,
}

impl FileReader {
    /// The metadata of the file as it was when opened. The content never changes under an open
    /// reader: a later overwrite creates a new blob.
    pub fn entry(&self) -> &Entry {
        &self.entry
    }

    /// Content size in bytes.
    pub fn len(&self) -> u64 {
        self.entry.size
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.entry.size == 0
    }
}

impl Read for FileReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

impl Seek for FileReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

/// A zerofs store rooted at one directory; see the crate documentation.
///
/// All methods are blocking and take `&self`; the store is `Send + Sync`, so an async caller
/// shares it in an `Arc` and calls it from `spawn_blocking`. Only one `ZeroFs` (one process)
/// may open a root at a time; a second open fails.
pub struct ZeroFs {
    blobs: PathBuf,
    db: Database,
    default_quota: Quota,
    /// Serializes blob placement, metadata commits and blob deletion, so that a blob is never
    /// deleted between a writer's dedupe check and its commit.
    commit_lock: Mutex<()>,
    /// Temporary files of writes in progress and the tenants' staging reservations.
    staging: Arc<Staging>,
    /// Blobs of replicated writes in flight (pushed, not yet committed): never deleted.
    pinned: Mutex<HashMap<[u8; 32], usize>>,
    /// The replicator and blob transport, when the store is replicated.
    replication: RwLock<Replication>,
    /// Woken when an applied command or an installed snapshot references a blob this
    /// node lacks.
    missing: Arc<tokio::sync::Notify>,
}

impl fmt::Debug for ZeroFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZeroFs")
            .field("blobs", &self.blobs)
            .field("default_quota", &self.default_quota)
            .finish_non_exhaustive()
    }
}

impl ZeroFs {
    /// Opens (creating if needed) the store at `root`, then runs [`ZeroFs::gc`] to remove what a
    /// crash may have left behind. `default_quota` applies to tenants without an explicit
    /// [`ZeroFs::set_quota`].
    pub fn open(root: impl AsRef<Path>, default_quota: Quota) -> Result<ZeroFs> {
        let root = root.as_ref();
        let blobs = root.join("blobs");
        let tmp = blobs.join("tmp");
        fs::create_dir_all(&tmp)
            .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
        sync_dir(&blobs)?;
        sync_dir(root)?;
        let db = Database::create(root.join("meta.redb"))?;
        let txn = db.begin_write()?;
        txn.open_table(ENTRIES)?;
        txn.open_table(USAGE)?;
        txn.open_table(QUOTAS)?;
        txn.open_table(REFS)?;
        txn.open_table(REPLICA)?;
        txn.commit()?;
        let fs = ZeroFs {
            blobs,
            db,
            default_quota,
            commit_lock: Mutex::new(()),
            staging: Arc::new(Staging {
                tmp,
                inflight: Mutex::new(HashSet::new()),
                reserved: Mutex::new(HashMap::new()),
                counter: AtomicU64::new(0),
            }),
            pinned: Mutex::new(HashMap::new()),
            replication: RwLock::new(Replication::default()),
            missing: Arc::new(tokio::sync::Notify::new()),
        };
        fs.gc()?;
        Ok(fs)
    }

    fn blob_path(&self, h: &[u8; 32]) -> PathBuf {
        self.blobs.join(hex::encode(h))
    }

    /// Runs `f` in one durable write transaction under the commit lock (which the caller may
    /// already hold, passing its guard). Blobs whose count reached zero are deleted after the
    /// commit.
    fn commit<R>(
        &self,
        tenant: &str,
        held: Option<&MutexGuard<'_, ()>>,
        f: impl FnOnce(&mut W<'_>) -> Result<R>,
    ) -> Result<R> {
        self.commit_at(tenant, held, None, f)
    }

    /// [`commit`](Self::commit), also recording `mark` (the replica's position) in the same
    /// transaction.
    fn commit_at<R>(
        &self,
        tenant: &str,
        held: Option<&MutexGuard<'_, ()>>,
        mark: Option<Mark<'_>>,
        f: impl FnOnce(&mut W<'_>) -> Result<R>,
    ) -> Result<R> {
        let _own = if held.is_none() {
            Some(lock(&self.commit_lock))
        } else {
            None
        };
        let txn = self.db.begin_write()?;
        let (r, freed) = {
            let mut w = W {
                tenant,
                entries: txn.open_table(ENTRIES)?,
                usage: txn.open_table(USAGE)?,
                quotas: txn.open_table(QUOTAS)?,
                refs: txn.open_table(REFS)?,
                default_quota: self.default_quota,
                freed: Vec::new(),
            };
            let r = f(&mut w)?; // an error drops (aborts) the transaction
            let mut freed = std::mem::take(&mut w.freed);
            freed.sort_unstable();
            freed.dedup();
            let mut still_zero = Vec::new();
            for h in freed {
                if w.refs.get(h)?.is_none() {
                    still_zero.push(h);
                }
            }
            (r, still_zero)
        };
        if let Some(mark) = mark {
            write_mark(&txn, mark)?;
        }
        txn.commit()?;
        let pinned = lock(&self.pinned);
        for h in freed {
            if pinned.contains_key(&h) {
                continue; // a write in flight still needs it
            }
            // A failure only leaves an orphan that gc() removes later.
            let _ = fs::remove_file(self.blob_path(&h));
        }
        Ok(r)
    }

    /// Sets a tenant's quota. Lowering it below current usage refuses further growth but
    /// removes nothing.
    pub fn set_quota(&self, tenant: &str, quota: Quota) -> Result<()> {
        validate_tenant(tenant)?;
        self.execute(FsCommand::SetQuota {
            tenant: tenant.to_string(),
            max_bytes: quota.max_bytes,
            max_files: quota.max_files,
        })
        .map(|_| ())
    }

    /// A tenant's quota (its own, or the store default).
    pub fn quota(&self, tenant: &str) -> Result<Quota> {
        validate_tenant(tenant)?;
        let r = self.db.begin_read()?;
        get_quota(&r.open_table(QUOTAS)?, tenant, self.default_quota)
    }

    /// A tenant's current usage.
    pub fn usage(&self, tenant: &str) -> Result<Usage> {
        validate_tenant(tenant)?;
        let r = self.db.begin_read()?;
        get_usage(&r.open_table(USAGE)?, tenant)
    }

    /// Every tenant's current usage, by tenant name (tenants that never stored a file are
    /// absent).
    pub fn usages(&self) -> Result<Vec<(String, Usage)>> {
        let r = self.db.begin_read()?;
        let table = r.open_table(USAGE)?;
        let mut all = Vec::new();
        for row in table.iter()? {
            let (tenant, usage) = row?;
            let (bytes, files) = usage.value();
            all.push((tenant.value().to_string(), Usage { bytes, files }));
        }
        Ok(all)
    }

    /// Writes a file from a stream, failing if its parent directory is missing. See
    /// [`ZeroFs::write_with`].
    pub fn write(&self, tenant: &str, path: &str, content: impl Read) -> Result<Entry> {
        self.write_with(tenant, path, content, WriteOptions::default())
    }

    /// Creates or replaces the file at `path` with the content read from `content`.
    ///
    /// The content streams (in 256 KiB chunks) into a staged write ([`ZeroFs::stage`]) while it
    /// is hashed; the file is fsynced and renamed to `blobs/<sha256>` (or dropped if that blob
    /// already exists), the blob directory is fsynced, and one durable redb transaction then
    /// publishes the entry, the tenant's usage and the blob's reference count. The new content
    /// is visible only once that commit returns; a crash at any earlier point leaves the
    /// previous state. The bytes quota is enforced while streaming, together with every other
    /// staged write of the tenant ([`ZeroFs::reserve`]): the write fails as soon as the stream
    /// passes what the tenant has left (counting the size of a file being replaced as free).
    pub fn write_with(
        &self,
        tenant: &str,
        path: &str,
        content: impl Read,
        opts: WriteOptions,
    ) -> Result<Entry> {
        let path = self.check_write(tenant, path, opts)?;
        let mut staged = self.stage(tenant)?;
        let (hash, size) = self.stream_to(&mut staged, &path, content)?;
        self.place_and_commit(staged, &path, hash, size, opts)
    }

    /// The checks a write of `path` can fail before any content is staged: the path names no
    /// directory, its parents exist (or `opts` creates them), and the entries quota has room
    /// for what the write adds. Returns the parsed path. (Everything is checked again when the
    /// write is published.)
    pub fn check_write(&self, tenant: &str, path: &str, opts: WriteOptions) -> Result<TenantPath> {
        validate_tenant(tenant)?;
        let path = TenantPath::parse(path)?;
        if path.is_root() {
            return Err(Error::IsADirectory(path.to_string()));
        }
        let r = self.db.begin_read()?;
        let entries = r.open_table(ENTRIES)?;
        let missing = missing_parents(&entries, tenant, &path, opts.create_parents)?;
        let existing = lookup(&entries, tenant, &path)?;
        if is_dir(&existing) {
            return Err(Error::IsADirectory(path.to_string()));
        }
        let usage = get_usage(&r.open_table(USAGE)?, tenant)?;
        let quota = get_quota(&r.open_table(QUOTAS)?, tenant, self.default_quota)?;
        let new_files = missing.len() as u64 + u64::from(existing.is_none());
        if new_files > 0 && usage.files.saturating_add(new_files) > quota.max_files {
            return Err(Error::QuotaExceeded {
                tenant: tenant.to_string(),
                limit: quota.max_files,
                kind: QuotaKind::Files,
            });
        }
        Ok(path)
    }

    /// Starts a staged write for `tenant`: an empty temporary file with nothing reserved. Grow
    /// its reservation with [`ZeroFs::reserve`] before writing, publish it with
    /// [`ZeroFs::publish`]; dropping it aborts the write.
    pub fn stage(&self, tenant: &str) -> Result<StagedWrite> {
        validate_tenant(tenant)?;
        let n = self.staging.counter.fetch_add(1, Ordering::Relaxed);
        let path = self.staging.tmp.join(format!("{}-{n}", std::process::id()));
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io("creating a temporary file to stage a write", e))?;
        lock(&self.staging.inflight).insert(path.clone());
        Ok(StagedWrite {
            staging: self.staging.clone(),
            tenant: tenant.to_string(),
            path,
            file,
            reserved: 0,
        })
    }

    /// Lets `staged`, a write that will replace the file at `path`, hold `size` bytes.
    ///
    /// The tenant's staged writes reserve from one pool: the sum of their reservations may not
    /// exceed what the byte quota leaves (the quota minus the usage, counting the current size
    /// of `path` as free, since publishing replaces it). Past that, [`Error::QuotaExceeded`]
    /// and nothing changes. A reservation only grows (in steps of up to 1 MiB) and is returned
    /// when the write is published or dropped.
    pub fn reserve(&self, staged: &mut StagedWrite, path: &str, size: u64) -> Result<()> {
        if size <= staged.reserved {
            return Ok(());
        }
        let path = TenantPath::parse(path)?;
        let tenant = staged.tenant.as_str();
        let (quota, usage, current) = {
            let r = self.db.begin_read()?;
            let current = lookup(&r.open_table(ENTRIES)?, tenant, &path)?
                .filter(|e| e.kind == EntryKind::File)
                .map_or(0, |e| e.size);
            (
                get_quota(&r.open_table(QUOTAS)?, tenant, self.default_quota)?,
                get_usage(&r.open_table(USAGE)?, tenant)?,
                current,
            )
        };
        let room = quota
            .max_bytes
            .saturating_sub(usage.bytes)
            .saturating_add(current);
        let mut reserved = lock(&self.staging.reserved);
        let total = reserved.entry(tenant.to_string()).or_insert(0);
        let others = total.saturating_sub(staged.reserved);
        let left = room.saturating_sub(others);
        if size > left {
            if *total == 0 {
                reserved.remove(tenant);
            }
            return Err(Error::QuotaExceeded {
                tenant: tenant.to_string(),
                limit: quota.max_bytes,
                kind: QuotaKind::Bytes,
            });
        }
        let target = size
            .saturating_add(RESERVE_STEP - 1)
            .saturating_div(RESERVE_STEP)
            .saturating_mul(RESERVE_STEP)
            .min(left)
            .max(size);
        *total = others.saturating_add(target);
        staged.reserved = target;
        Ok(())
    }

    /// The bytes `tenant`'s staged writes have reserved now.
    pub fn staged_bytes(&self, tenant: &str) -> u64 {
        lock(&self.staging.reserved)
            .get(tenant)
            .copied()
            .unwrap_or(0)
    }

    /// Publishes a staged write as the file at `path`: hashes and fsyncs the staged content,
    /// moves it to its blob and commits the entry in one durable transaction (as
    /// [`ZeroFs::write_with`] does). With a `deadline`, the work stops with
    /// [`Error::TimedOut`] (nothing published) once it passes, so a request cannot make the
    /// host work on its behalf beyond its own time. The reservation is returned either way.
    pub fn publish(
        &self,
        staged: StagedWrite,
        path: &str,
        opts: WriteOptions,
        deadline: Option<Instant>,
    ) -> Result<Entry> {
        let path = TenantPath::parse(path)?;
        if path.is_root() {
            return Err(Error::IsADirectory(path.to_string()));
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; STREAM_BUF];
        let mut size: u64 = 0;
        let what = format!("publishing {path}");
        loop {
            check_deadline(deadline, &what)?;
            let n = match std::os::unix::fs::FileExt::read_at(&staged.file, &mut buf, size) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("reading a staged write", e)),
            };
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        staged
            .file
            .sync_all()
            .map_err(|e| Error::io("syncing a staged write", e))?;
        check_deadline(deadline, &what)?;
        self.place_and_commit(staged, &path, hasher.finalize().into(), size, opts)
    }

    /// Moves a staged, fsynced content (of this `hash` and `size`) to its blob and commits the
    /// entry at `path`, its usage and the blob's reference count; the quota is checked again
    /// in the commit. The staged write's reservation is returned after the commit.
    fn place_and_commit(
        &self,
        staged: StagedWrite,
        path: &TenantPath,
        hash: [u8; 32],
        size: u64,
        opts: WriteOptions,
    ) -> Result<Entry> {
        let tenant = staged.tenant.clone();
        let command = FsCommand::Write {
            tenant: tenant.clone(),
            path: path.as_str().to_string(),
            hash,
            size,
            create_parents: opts.create_parents,
            mtime_ns: now_ns(),
        };
        // Place the blob under the commit lock (no deletion can run between the presence
        // check and the rename).
        let held = lock(&self.commit_lock);
        let blob = self.blob_path(&hash);
        let present = fs::metadata(&blob).map(|m| m.is_file() && m.len() == size);
        if !matches!(present, Ok(true)) {
            fs::rename(&staged.path, &blob)
                .map_err(|e| Error::io(format!("publishing blob {}", hex::encode(hash)), e))?;
        }
        sync_dir(&self.blobs)?;
        let result = match self.replicator() {
            None => self.commit(&tenant, Some(&held), |w| exec(w, &command)),
            Some(replicator) => {
                // The blob must stay while it is pushed and the command is in the log: pin it
                // (commits and gc skip pinned blobs) and let the applies take the lock.
                self.pin(hash);
                drop(held);
                let result = self
                    .push_to_majority(hash, size)
                    .and_then(|()| self.submit(&*replicator, &command));
                self.unpin(hash);
                let held = lock(&self.commit_lock);
                if result.is_err() {
                    self.drop_if_unreferenced(hash)?;
                }
                drop(held);
                drop(staged);
                return result.and_then(entry_of);
            }
        };
        if result.is_err() {
            // The blob may now be referenced by nothing (the lock is still held).
            self.drop_if_unreferenced(hash)?;
        }
        drop(held);
        // The usage now counts the file: return the reservation.
        drop(staged);
        result.and_then(entry_of)
    }

    /// Copies `content` into `staged` while hashing it, growing its reservation for the file
    /// at `path` as it goes (so the write fails as soon as the content passes what the
    /// tenant's quota leaves), then fsyncs it. Returns (sha256, size).
    fn stream_to(
        &self,
        staged: &mut StagedWrite,
        path: &TenantPath,
        mut content: impl Read,
    ) -> Result<([u8; 32], u64)> {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; STREAM_BUF];
        let mut size: u64 = 0;
        loop {
            let n = match content.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("reading the content to write", e)),
            };
            self.reserve(staged, path.as_str(), size + n as u64)?;
            size += n as u64;
            hasher.update(&buf[..n]);
            staged
                .file
                .write_all(&buf[..n])
                .map_err(|e| Error::io("writing a temporary blob file", e))?;
        }
        staged
            .file
            .sync_all()
            .map_err(|e| Error::io("syncing a temporary blob file", e))?;
        Ok((hasher.finalize().into(), size))
    }

    /// Metadata of one entry (the root `/` is always a directory).
    pub fn stat(&self, tenant: &str, path: &str) -> Result<Entry> {
        validate_tenant(tenant)?;
        let path = TenantPath::parse(path)?;
        let r = self.db.begin_read()?;
        let e = lookup(&r.open_table(ENTRIES)?, tenant, &path)?;
        e.map(|e| e.to_entry(path.clone()))
            .ok_or_else(|| Error::NotFound(path.to_string()))
    }

    /// Whether an entry exists at `path`.
    pub fn exists(&self, tenant: &str, path: &str) -> Result<bool> {
        match self.stat(tenant, path) {
            Ok(_) => Ok(true),
            Err(Error::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Opens a file for streaming reads (and seeks) straight from its blob file.
    pub fn open_read(&self, tenant: &str, path: &str) -> Result<FileReader> {
        validate_tenant(tenant)?;
        let path = TenantPath::parse(path)?;
        let mut last: Option<[u8; 32]> = None;
        // A concurrent overwrite may delete the blob between the lookup and the open: retry.
        for _ in 0..4 {
            let e = {
                let r = self.db.begin_read()?;
                lookup(&r.open_table(ENTRIES)?, tenant, &path)?
            };
            let e = e.ok_or_else(|| Error::NotFound(path.to_string()))?;
            if e.kind == EntryKind::Dir {
                return Err(Error::IsADirectory(path.to_string()));
            }
            match File::open(self.blob_path(&e.hash)) {
                Ok(file) => {
                    let len = file
                        .metadata()
                        .map_err(|err| Error::io("inspecting a blob", err))?
                        .len();
                    if len != e.size {
                        return Err(Error::Corrupt(format!(
                            "blob {} of {path} has {len} bytes, expected {}",
                            hex::encode(e.hash),
                            e.size
                        )));
                    }
                    return Ok(FileReader {
                        file,
                        entry: e.to_entry(path),
                    });
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    if self.blob_peers().is_some() {
                        // Committed here but not stored yet: fetch it from a peer (verified).
                        self.fetch_blob(e.hash, e.size)?;
                        continue;
                    }
                    if last == Some(e.hash) {
                        return Err(Error::Corrupt(format!(
                            "blob {} of {path} is missing",
                            hex::encode(e.hash)
                        )));
                    }
                    last = Some(e.hash);
                }
                Err(err) => return Err(Error::io(format!("opening the blob of {path}"), err)),
            }
        }
        Err(Error::Corrupt(format!("blob of {path} keeps disappearing")))
    }

    /// Reads up to `len` bytes at `offset` (fewer at the end of the file; none past it).
    pub fn read_range(&self, tenant: &str, path: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut r = self.open_read(tenant, path)?;
        let avail = r.len().saturating_sub(offset).min(len);
        let mut out = Vec::with_capacity(avail as usize);
        if avail > 0 {
            r.seek(SeekFrom::Start(offset))
                .map_err(|e| Error::io("seeking in a blob", e))?;
            r.take(avail)
                .read_to_end(&mut out)
                .map_err(|e| Error::io("reading a blob", e))?;
        }
        Ok(out)
    }

    /// The entries of a directory, sorted by name.
    pub fn list(&self, tenant: &str, dir: &str) -> Result<Vec<Entry>> {
        validate_tenant(tenant)?;
        let dir = TenantPath::parse(dir)?;
        let r = self.db.begin_read()?;
        let entries = r.open_table(ENTRIES)?;
        match lookup(&entries, tenant, &dir)? {
            None => return Err(Error::NotFound(dir.to_string())),
            Some(e) if e.kind != EntryKind::Dir => {
                return Err(Error::NotADirectory(dir.to_string()));
            }
            Some(_) => {}
        }
        children(&entries, tenant, dir.as_str(), usize::MAX)?
            .into_iter()
            .map(|(name, e)| Ok(e.to_entry(dir.join(&name)?)))
            .collect()
    }

    /// Creates a directory. With `parents`, missing ancestors are created too and an existing
    /// directory is not an error (like `mkdir -p`).
    pub fn mkdir(&self, tenant: &str, path: &str, parents: bool) -> Result<Entry> {
        validate_tenant(tenant)?;
        let path = TenantPath::parse(path)?;
        let outcome = self.execute(FsCommand::Mkdir {
            tenant: tenant.to_string(),
            path: path.as_str().to_string(),
            parents,
            mtime_ns: now_ns(),
        })?;
        entry_of(outcome)
    }

    /// Removes a file or an empty directory.
    pub fn remove(&self, tenant: &str, path: &str) -> Result<()> {
        validate_tenant(tenant)?;
        let path = TenantPath::parse(path)?;
        if path.is_root() {
            return Err(Error::invalid_path(
                "/",
                "the tenant root cannot be removed",
            ));
        }
        self.execute(FsCommand::Remove {
            tenant: tenant.to_string(),
            path: path.as_str().to_string(),
        })
        .map(|_| ())
    }

    /// Removes a file, or a directory with everything below it, in one transaction.
    pub fn remove_all(&self, tenant: &str, path: &str) -> Result<()> {
        validate_tenant(tenant)?;
        let path = TenantPath::parse(path)?;
        if path.is_root() {
            return Err(Error::invalid_path(
                "/",
                "the tenant root cannot be removed",
            ));
        }
        self.execute(FsCommand::RemoveAll {
            tenant: tenant.to_string(),
            path: path.as_str().to_string(),
        })
        .map(|_| ())
    }

    /// Moves `from` to `to` atomically (one transaction). A file may replace a file and a
    /// directory may replace an empty directory; the parent of `to` must exist; a directory
    /// cannot be moved into itself.
    pub fn rename(&self, tenant: &str, from: &str, to: &str) -> Result<()> {
        validate_tenant(tenant)?;
        let from = TenantPath::parse(from)?;
        let to = TenantPath::parse(to)?;
        if from.is_root() {
            return Err(Error::invalid_path(
                "/",
                "the tenant root cannot be renamed",
            ));
        }
        if to.is_root() {
            return Err(Error::invalid_path(
                "/",
                "the tenant root cannot be replaced",
            ));
        }
        self.execute(FsCommand::Rename {
            tenant: tenant.to_string(),
            from: from.as_str().to_string(),
            to: to.as_str().to_string(),
        })
        .map(|_| ())
    }

    /// Removes blob files that no entry references and leftover temporary files (except those of
    /// writes in progress). Runs at [`ZeroFs::open`]; safe to call at any time.
    pub fn gc(&self) -> Result<GcReport> {
        let _held = lock(&self.commit_lock);
        let mut report = GcReport::default();
        let r = self.db.begin_read()?;
        let refs = r.open_table(REFS)?;
        let rd = |d: &Path| {
            fs::read_dir(d).map_err(|e| Error::io(format!("listing {}", d.display()), e))
        };
        for item in rd(&self.blobs)? {
            let item = item.map_err(|e| Error::io("listing blobs", e))?;
            let name = item.file_name();
            let Some(h) = name.to_str().and_then(BlobHash::from_hex) else {
                continue; // tmp/ and anything foreign
            };
            if refs.get(h.0)?.is_none() && !lock(&self.pinned).contains_key(&h.0) {
                let len = item.metadata().map(|m| m.len()).unwrap_or(0);
                if fs::remove_file(item.path()).is_ok() {
                    report.blobs_removed += 1;
                    report.bytes_freed += len;
                }
            }
        }
        let inflight = lock(&self.staging.inflight).clone();
        for item in rd(&self.staging.tmp)? {
            let item = item.map_err(|e| Error::io("listing temporary files", e))?;
            if !inflight.contains(&item.path()) && fs::remove_file(item.path()).is_ok() {
                report.tmp_removed += 1;
            }
        }
        if report.blobs_removed > 0 {
            sync_dir(&self.blobs)?;
        }
        Ok(report)
    }
}

// ---------- replication ----------

/// A replica's position, written in the transaction of the command it describes.
#[derive(Clone, Copy)]
struct Mark<'a> {
    /// The log index of the command (or of the snapshot's last entry).
    index: Option<u64>,
    /// zeroraft's applied-state bytes, when this transaction ends a batch.
    applied: Option<&'a [u8]>,
}

fn write_mark(txn: &redb::WriteTransaction, mark: Mark<'_>) -> Result<()> {
    let mut t = txn.open_table(REPLICA)?;
    match mark.index {
        Some(i) => {
            t.insert("index", i.to_le_bytes().as_slice())?;
        }
        None => {
            t.remove("index")?;
        }
    }
    if let Some(applied) = mark.applied {
        t.insert("applied", applied)?;
    }
    Ok(())
}

/// What makes a store replicated: where commands go and how blobs travel.
#[derive(Default)]
struct Replication {
    replicator: Option<Arc<dyn Replicator>>,
    peers: Option<Arc<dyn BlobPeers>>,
}

/// One row of a metadata snapshot.
#[derive(serde::Serialize, serde::Deserialize)]
enum Row {
    Entry {
        tenant: String,
        parent: String,
        name: String,
        value: Vec<u8>,
    },
    Usage {
        tenant: String,
        bytes: u64,
        files: u64,
    },
    Quota {
        tenant: String,
        max_bytes: u64,
        max_files: u64,
    },
    Ref {
        hash: [u8; 32],
        count: u64,
    },
    End {
        rows: u64,
    },
}

const SNAPSHOT_MAGIC: &[u8; 8] = b"ZFSSNAP1";
/// The largest snapshot row (an entry key is bounded by the path limits).
const MAX_ROW: usize = 64 * 1024;

fn write_row(out: &mut dyn Write, row: &Row) -> Result<()> {
    let bytes = postcard::to_stdvec(row)
        .map_err(|e| Error::Corrupt(format!("cannot encode a snapshot row: {e}")))?;
    out.write_all(&(bytes.len() as u32).to_le_bytes())
        .and_then(|()| out.write_all(&bytes))
        .map_err(|e| Error::io("writing a metadata snapshot", e))
}

fn read_row(input: &mut dyn Read) -> Result<Row> {
    let mut len = [0u8; 4];
    input
        .read_exact(&mut len)
        .map_err(|e| Error::io("reading a metadata snapshot (it ends early?)", e))?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_ROW {
        return Err(Error::Corrupt(format!(
            "a snapshot row of {len} bytes is over the {MAX_ROW}-byte limit"
        )));
    }
    let mut bytes = vec![0u8; len];
    input
        .read_exact(&mut bytes)
        .map_err(|e| Error::io("reading a metadata snapshot (it ends early?)", e))?;
    match postcard::take_from_bytes(&bytes) {
        Ok((row, [])) => Ok(row),
        _ => Err(Error::Corrupt("undecodable snapshot row".to_string())),
    }
}

/// A writer that hashes and counts what passes through it, refusing more than `max` bytes.
struct Hashing<'a> {
    file: &'a File,
    hasher: Sha256,
    size: u64,
    max: u64,
    /// More than `max` bytes were offered.
    overflowed: bool,
}

impl Write for Hashing<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.size + buf.len() as u64 > self.max {
            self.overflowed = true;
            return Err(io::Error::other(format!(
                "more than the {} bytes announced",
                self.max
            )));
        }
        let mut file = self.file;
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut file = self.file;
        file.flush()
    }
}

/// What [`ZeroFs::fetch_missing`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchReport {
    /// Blobs fetched, verified and stored.
    pub fetched: u64,
    /// Attempts refused: a source that failed or served bytes not matching the hash (the
    /// blob may still have come from another source).
    pub rejected: Vec<String>,
    /// Blobs that no source could serve (still missing here).
    pub missing: Vec<BlobHash>,
}

fn replication_error(e: impl fmt::Display) -> Error {
    Error::io(
        "replicating the change to the cluster",
        io::Error::other(e.to_string()),
    )
}

impl ZeroFs {
    /// Routes every mutation through `replicator` (a command in the cluster log) instead of
    /// committing it here; `None` goes back to committing directly. See [`crate::replica`].
    pub fn set_replicator(&self, replicator: Option<Arc<dyn Replicator>>) {
        self.replication
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .replicator = replicator;
    }

    /// Sets how blobs reach the other nodes (a write waits until a majority of voters holds
    /// its blob) and how this node fetches the blobs it lacks.
    pub fn set_blob_peers(&self, peers: Option<Arc<dyn BlobPeers>>) {
        self.replication
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .peers = peers;
    }

    fn replicator(&self) -> Option<Arc<dyn Replicator>> {
        self.replication
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .replicator
            .clone()
    }

    fn blob_peers(&self) -> Option<Arc<dyn BlobPeers>> {
        self.replication
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .peers
            .clone()
    }

    /// Woken whenever an applied command or an installed snapshot references a blob this node
    /// does not hold yet (run [`ZeroFs::fetch_missing`] then).
    pub fn missing_notify(&self) -> Arc<tokio::sync::Notify> {
        self.missing.clone()
    }

    /// Runs one mutation: through the replicator when one is set, else as one local commit.
    fn execute(&self, command: FsCommand) -> Result<Outcome> {
        match self.replicator() {
            Some(replicator) => self.submit(&*replicator, &command),
            None => {
                let tenant = command.tenant().to_string();
                self.commit(&tenant, None, |w| exec(w, &command))
            }
        }
    }

    fn submit(&self, replicator: &dyn Replicator, command: &FsCommand) -> Result<Outcome> {
        let response = replicator
            .submit(command.encode()?)
            .map_err(replication_error)?;
        match decode_response(&response)? {
            Outcome::Replayed => Err(replication_error(
                "the cluster answered for a command applied before a restart",
            )),
            outcome => Ok(outcome),
        }
    }

    fn pin(&self, hash: [u8; 32]) {
        *lock(&self.pinned).entry(hash).or_insert(0) += 1;
    }

    fn unpin(&self, hash: [u8; 32]) {
        let mut pinned = lock(&self.pinned);
        if let Some(n) = pinned.get_mut(&hash) {
            *n -= 1;
            if *n == 0 {
                pinned.remove(&hash);
            }
        }
    }

    /// Deletes the blob unless a committed entry references it or a write in flight pinned
    /// it. The caller holds the commit lock.
    fn drop_if_unreferenced(&self, hash: [u8; 32]) -> Result<()> {
        let r = self.db.begin_read()?;
        if r.open_table(REFS)?.get(hash)?.is_none() && !lock(&self.pinned).contains_key(&hash) {
            let _ = fs::remove_file(self.blob_path(&hash));
        }
        Ok(())
    }

    /// Pushes a stored blob to the other voters and waits until a majority holds it.
    fn push_to_majority(&self, hash: [u8; 32], size: u64) -> Result<()> {
        let Some(peers) = self.blob_peers() else {
            return Ok(()); // a one-member cluster: this node is the majority
        };
        let report = peers
            .push(BlobHash(hash), size, &self.blob_path(&hash))
            .map_err(replication_error)?;
        if report.holders * 2 > report.voters {
            return Ok(());
        }
        Err(replication_error(format!(
            "the content reached {} of {} voters, not a majority; nothing was written ({})",
            report.holders,
            report.voters,
            report.failures.join("; ")
        )))
    }

    /// The log index of the last command this replica applied.
    pub(crate) fn replica_index(&self) -> Result<Option<u64>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(REPLICA)?;
        let Some(v) = t.get("index")? else {
            return Ok(None);
        };
        let bytes: [u8; 8] = v
            .value()
            .try_into()
            .map_err(|_| Error::Corrupt("the replica index is not 8 bytes".to_string()))?;
        Ok(Some(u64::from_le_bytes(bytes)))
    }

    /// zeroraft's applied state as last stored.
    pub(crate) fn replica_applied(&self) -> Result<Option<Vec<u8>>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(REPLICA)?;
        Ok(t.get("applied")?.map(|v| v.value().to_vec()))
    }

    /// Stores the replica's position alone (a refused command, or a batch end).
    pub(crate) fn store_mark(&self, index: Option<u64>, applied: Option<&[u8]>) -> Result<()> {
        let _held = lock(&self.commit_lock);
        let txn = self.db.begin_write()?;
        write_mark(&txn, Mark { index, applied })?;
        txn.commit()?;
        Ok(())
    }

    /// Applies a committed command at log `index` (with `applied`, zeroraft's state, when it
    /// ends a batch) in one transaction with the position; a refusal is an answer and records
    /// the position alone. Returns the encoded answer; `Err` only when the store failed.
    pub(crate) fn apply_at(
        &self,
        command: &FsCommand,
        index: u64,
        applied: Option<&[u8]>,
    ) -> Result<Vec<u8>> {
        let mark = Mark {
            index: Some(index),
            applied,
        };
        let tenant = command.tenant();
        let answer = match validate_tenant(tenant) {
            Err(e) => Err(e),
            Ok(()) => self.commit_at(tenant, None, Some(mark), |w| exec(w, command)),
        };
        let answer = match answer {
            Err(e) if !is_refusal(&e) => return Err(e),
            other => other,
        };
        match &answer {
            Err(_) => self.store_mark(mark.index, mark.applied)?,
            Ok(_) => {
                if let FsCommand::Write { hash, .. } = command
                    && !self.blob_path(hash).is_file()
                {
                    self.missing.notify_one();
                }
            }
        }
        encode_response(&answer)
    }

    /// Writes the whole metadata (every tenant's tree, usage, quota, and the blob reference
    /// counts) to `out`. Blobs are not included: a replica fetches them by hash.
    pub(crate) fn write_snapshot(&self, out: &mut dyn Write) -> Result<()> {
        let r = self.db.begin_read()?;
        out.write_all(SNAPSHOT_MAGIC)
            .map_err(|e| Error::io("writing a metadata snapshot", e))?;
        let mut rows: u64 = 0;
        for item in r.open_table(ENTRIES)?.iter()? {
            let (k, v) = item?;
            let (tenant, parent, name) = k.value();
            write_row(
                out,
                &Row::Entry {
                    tenant: tenant.to_string(),
                    parent: parent.to_string(),
                    name: name.to_string(),
                    value: v.value().to_vec(),
                },
            )?;
            rows += 1;
        }
        for item in r.open_table(USAGE)?.iter()? {
            let (k, v) = item?;
            let (bytes, files) = v.value();
            write_row(
                out,
                &Row::Usage {
                    tenant: k.value().to_string(),
                    bytes,
                    files,
                },
            )?;
            rows += 1;
        }
        for item in r.open_table(QUOTAS)?.iter()? {
            let (k, v) = item?;
            let (max_bytes, max_files) = v.value();
            write_row(
                out,
                &Row::Quota {
                    tenant: k.value().to_string(),
                    max_bytes,
                    max_files,
                },
            )?;
            rows += 1;
        }
        for item in r.open_table(REFS)?.iter()? {
            let (k, v) = item?;
            write_row(
                out,
                &Row::Ref {
                    hash: k.value(),
                    count: v.value(),
                },
            )?;
            rows += 1;
        }
        write_row(out, &Row::End { rows })
    }

    /// Replaces the whole metadata with a snapshot [`write_snapshot`](Self::write_snapshot)
    /// wrote, recording the position (`index`, `applied`) in the same transaction; then deletes
    /// the blobs nothing references any more and signals the missing ones.
    pub(crate) fn install_snapshot(
        &self,
        input: &mut dyn Read,
        index: Option<u64>,
        applied: &[u8],
    ) -> Result<()> {
        let mut magic = [0u8; 8];
        input
            .read_exact(&mut magic)
            .map_err(|e| Error::io("reading a metadata snapshot", e))?;
        if &magic != SNAPSHOT_MAGIC {
            return Err(Error::Corrupt(
                "not a zerofs metadata snapshot (wrong magic)".to_string(),
            ));
        }
        {
            let _held = lock(&self.commit_lock);
            let txn = self.db.begin_write()?;
            txn.delete_table(ENTRIES)?;
            txn.delete_table(USAGE)?;
            txn.delete_table(QUOTAS)?;
            txn.delete_table(REFS)?;
            {
                let mut entries = txn.open_table(ENTRIES)?;
                let mut usage = txn.open_table(USAGE)?;
                let mut quotas = txn.open_table(QUOTAS)?;
                let mut refs = txn.open_table(REFS)?;
                let mut rows: u64 = 0;
                loop {
                    match read_row(input)? {
                        Row::Entry {
                            tenant,
                            parent,
                            name,
                            value,
                        } => {
                            RawEntry::decode(&value)?;
                            entries.insert(
                                (tenant.as_str(), parent.as_str(), name.as_str()),
                                value.as_slice(),
                            )?;
                        }
                        Row::Usage {
                            tenant,
                            bytes,
                            files,
                        } => {
                            usage.insert(tenant.as_str(), (bytes, files))?;
                        }
                        Row::Quota {
                            tenant,
                            max_bytes,
                            max_files,
                        } => {
                            quotas.insert(tenant.as_str(), (max_bytes, max_files))?;
                        }
                        Row::Ref { hash, count } => {
                            refs.insert(hash, count)?;
                        }
                        Row::End { rows: expected } => {
                            if expected != rows {
                                return Err(Error::Corrupt(format!(
                                    "the snapshot announces {expected} rows but holds {rows}"
                                )));
                            }
                            break;
                        }
                    }
                    rows += 1;
                }
            }
            write_mark(
                &txn,
                Mark {
                    index,
                    applied: Some(applied),
                },
            )?;
            txn.commit()?;
        }
        self.gc()?;
        if !self.missing_blobs()?.is_empty() {
            self.missing.notify_one();
        }
        Ok(())
    }

    /// The blobs committed entries reference that this node does not hold, with their sizes.
    pub fn missing_blobs(&self) -> Result<Vec<(BlobHash, u64)>> {
        let r = self.db.begin_read()?;
        let mut sizes: HashMap<[u8; 32], u64> = HashMap::new();
        for item in r.open_table(ENTRIES)?.iter()? {
            let (_, v) = item?;
            let e = RawEntry::decode(v.value())?;
            if e.kind == EntryKind::File {
                sizes.insert(e.hash, e.size);
            }
        }
        let mut missing = Vec::new();
        for (hash, size) in sizes {
            if !self.blob_path(&hash).is_file() {
                missing.push((BlobHash(hash), size));
            }
        }
        missing.sort();
        Ok(missing)
    }

    /// Fetches every missing blob ([`ZeroFs::missing_blobs`]) from the peers, verifying each.
    pub fn fetch_missing(&self) -> Result<FetchReport> {
        let mut report = FetchReport::default();
        for (hash, size) in self.missing_blobs()? {
            match self.fetch_verified(hash.0, size, &mut report.rejected) {
                Ok(()) => report.fetched += 1,
                Err(_) => report.missing.push(hash),
            }
        }
        Ok(report)
    }

    /// Fetches the blob `hash` of `size` bytes from a peer and stores it once verified.
    pub(crate) fn fetch_blob(&self, hash: [u8; 32], size: u64) -> Result<()> {
        let mut rejected = Vec::new();
        self.fetch_verified(hash, size, &mut rejected)
    }

    fn fetch_verified(&self, hash: [u8; 32], size: u64, rejected: &mut Vec<String>) -> Result<()> {
        let h = BlobHash(hash);
        let Some(peers) = self.blob_peers() else {
            return Err(Error::Corrupt(format!(
                "blob {h} is missing and this store has no peers to fetch it from"
            )));
        };
        let mut tried = Vec::new();
        for source in peers.sources() {
            let staged = self.stage_raw()?;
            let mut sink = Hashing {
                file: &staged.file,
                hasher: Sha256::new(),
                size: 0,
                max: size,
                overflowed: false,
            };
            if let Err(e) = peers.fetch(&source, h, size, &mut sink) {
                tried.push(format!("{source}: {e}"));
                continue;
            }
            let got: [u8; 32] = sink.hasher.finalize().into();
            if got != hash || sink.size != size || sink.overflowed {
                tracing::warn!(%source, blob = %h, "a peer served bytes that do not match the blob's hash");
                tried.push(format!(
                    "{source} served {} bytes that do not hash to {h}",
                    sink.size
                ));
                continue;
            }
            staged
                .file
                .sync_all()
                .map_err(|e| Error::io("syncing a fetched blob", e))?;
            let _held = lock(&self.commit_lock);
            let blob = self.blob_path(&hash);
            if !blob.is_file() {
                fs::rename(&staged.path, &blob)
                    .map_err(|e| Error::io(format!("publishing fetched blob {h}"), e))?;
                sync_dir(&self.blobs)?;
            }
            rejected.append(&mut tried);
            return Ok(());
        }
        let message = format!(
            "blob {h} is missing here and no peer served it: {}",
            if tried.is_empty() {
                "no peer is known".to_string()
            } else {
                tried.join("; ")
            }
        );
        rejected.append(&mut tried);
        Err(Error::Corrupt(message))
    }

    /// A temporary file in the store, outside any tenant's reservation (for blobs arriving
    /// from peers).
    fn stage_raw(&self) -> Result<StagedWrite> {
        let n = self.staging.counter.fetch_add(1, Ordering::Relaxed);
        let path = self
            .staging
            .tmp
            .join(format!("{}-{n}-peer", std::process::id()));
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io("creating a temporary file for a blob from a peer", e))?;
        lock(&self.staging.inflight).insert(path.clone());
        Ok(StagedWrite {
            staging: self.staging.clone(),
            tenant: String::new(),
            path,
            file,
            reserved: 0,
        })
    }

    /// Stores a blob pushed by a peer: exactly `size` bytes of `content` that must hash to
    /// `hash`, else nothing is kept. An unreferenced pushed blob is removed by [`ZeroFs::gc`]
    /// unless a committed entry comes to reference it.
    pub fn receive_blob(
        &self,
        hash: BlobHash,
        size: u64,
        content: &mut dyn Read,
    ) -> std::result::Result<(), zeroraft::blobs::BlobRefusal> {
        use zeroraft::blobs::BlobRefusal;
        let failed = |e: Error| BlobRefusal::Failed(e.to_string());
        let staged = self.stage_raw().map_err(failed)?;
        let mut sink = Hashing {
            file: &staged.file,
            hasher: Sha256::new(),
            size: 0,
            max: size,
            overflowed: false,
        };
        let copied = io::copy(
            &mut Read::take(&mut *content, size.saturating_add(1)),
            &mut sink,
        );
        if let Err(e) = copied {
            return Err(if sink.overflowed {
                BlobRefusal::Mismatch(format!("blob {hash}: {e}"))
            } else {
                BlobRefusal::Failed(format!("receiving blob {hash}: {e}"))
            });
        }
        let got: [u8; 32] = sink.hasher.finalize().into();
        if sink.size != size {
            return Err(BlobRefusal::Mismatch(format!(
                "blob {hash} was announced as {size} bytes but {} arrived",
                sink.size
            )));
        }
        if got != hash.0 {
            return Err(BlobRefusal::Mismatch(format!(
                "the bytes sent as blob {hash} hash to {}",
                BlobHash(got)
            )));
        }
        staged
            .file
            .sync_all()
            .map_err(|e| failed(Error::io("syncing a received blob", e)))?;
        let _held = lock(&self.commit_lock);
        let blob = self.blob_path(&hash.0);
        if !blob.is_file() {
            fs::rename(&staged.path, &blob)
                .map_err(|e| failed(Error::io(format!("publishing received blob {hash}"), e)))?;
            sync_dir(&self.blobs).map_err(failed)?;
        }
        Ok(())
    }

    /// Opens a stored blob by hash: its size and file, or `None` when this node lacks it.
    pub fn open_blob(&self, hash: BlobHash) -> Result<Option<(u64, File)>> {
        match File::open(self.blob_path(&hash.0)) {
            Ok(file) => {
                let len = file
                    .metadata()
                    .map_err(|e| Error::io("inspecting a blob", e))?
                    .len();
                Ok(Some((len, file)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("opening blob {hash}"), e)),
        }
    }
}

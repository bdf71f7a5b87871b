//! The `wasi:filesystem` provider: `wasi:filesystem/types` and `wasi:filesystem/preopens`
//! (WASI 0.2.12, the version wasmtime-wasi 48 links) over a [`ZeroFs`], for the calling
//! component's tenant and within its capabilities.
//!
//! # Capabilities
//!
//! Actions are the UCAN commands `/fs/read`, `/fs/write`, `/fs/create` and `/fs/delete`, checked
//! with arguments `{tenant, component, path}` on every call that needs them (see
//! [`access`] for the directory-granularity rule). Mapping:
//! - read: `read`, `read-via-stream`, `stat`, `stat-at`, `metadata-hash(-at)`, opening a file
//!   with the `read` flag; `read-directory` needs the directory to be *visible* and lists only
//!   visible entries (a directory that merely leads to a grant shows only that way down), and a
//!   directory on the way to a grant may be opened and stat'ed without the read right;
//! - write: `write`, `write-via-stream`, `append-via-stream`, `set-size`, opening with the
//!   `write` flag or `truncate`, `sync`/`sync-data` of a written file;
//! - create: `open-at` with `create` of a file that does not exist, `create-directory-at`, the
//!   destination of `rename-at` when it does not exist (write when it does). The descriptor that
//!   created a file may write its content without the write right (writing the first content is
//!   part of creating a file; `std::fs::File::create_new` needs it), other descriptors may not;
//! - delete: `unlink-file-at`, `remove-directory-at`, the source of `rename-at`.
//!
//! Paths given to `*-at` functions must be relative and must not contain `..`: an absolute
//! path, a `..` segment or a symlink operation is refused with `not-permitted`, before anything
//! is looked up. A path no right makes visible is refused with `access` whether or not it
//! exists, so a refusal never reveals what lies outside the grants. Symlinks and hard links do
//! not exist in zerofs; `symlink-at`, `readlink-at` and `link-at` are refused, and so are
//! `set-times`/`set-times-at` (zerofs keeps the time of the last publication only).
//!
//! # Preopens
//!
//! The granted roots ([`access::Access::roots`]) that exist as directories are preopened under
//! their tenant path (`/site`), so a guest's `std::fs::read("/site/index.html")` works; a root
//! that names a file (or does not exist yet) preopens its parent directory. A component with no
//! filesystem grant sees no preopens.
//!
//! # Writes
//!
//! zerofs publishes whole files atomically. A descriptor opened for writing stages its content
//! in a zerofs staged write ([`ZeroFs::stage`]): a copy of the current content (made on the
//! first write, unless the file was truncated), never the whole file in memory. Staged bytes
//! are reserved from the tenant's byte quota, in one pool shared by every staged write of the
//! tenant (all its requests and uploads), so that open staged files cannot each grow to the
//! quota; a write past what is left fails with `insufficient-space`. The staged content is
//! published to zerofs in one atomic commit on `sync`/`sync-data` (which report quota errors)
//! and when the guest closes the descriptor (errors then go to the node log); streams of a
//! closed descriptor cannot write any more. Publishing happens only in those calls, within the
//! request: a staged write still open when the request ends (the guest returned, trapped or ran
//! out of time) is discarded, never published afterwards. A reader therefore sees the old or
//! the new content, never a partial one. The host functions are synchronous (local disk and an
//! embedded database, like zerofs itself); the long ones, copying a file into staging and
//! publishing it with its fsyncs, step off the async worker thread (`block_in_place`) so that
//! other requests on that thread are not held up while they run, and stop (`busy`, nothing
//! changed) once the request's wall-clock time is over, so no request makes the host work for
//! it beyond its own time limit.
//!
//! # Open resources
//!
//! Descriptors, directory listings and file streams count against a per-instance limit
//! ([`FsLimits::max_open_per_instance`], `[fs] max_open_per_instance`); past it, opening one
//! more fails with `insufficient-memory` (ENOMEM, the closest WASI has to "too many open
//! files"), and the node log says which limit. The host keeps at most one OS file descriptor
//! per such resource (a descriptor holds one only while it stages a write, a read stream one for
//! the blob it reads), so a guest cannot exhaust the node's file descriptors.
//!
//! # Reads
//!
//! `read` and `read-via-stream` read at most 64 KiB per call into one host buffer that is then
//! copied into the guest's memory; the host never holds a whole file. A stream reads from the
//! blob file it opened, so it sees one version of the file from start to end even if the file
//! is replaced meanwhile. Capabilities cannot change during a store's life (the chain is fixed
//! at deployment), so a stream is checked once, when it is created.

pub mod access;

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime::component::{HasSelf, Linker, Resource};
use wasmtime_wasi::p2::{InputStream, OutputStream, Pollable, StreamError, StreamResult};
use zero_provider::{HostState, Provider, ResourceProvider};

use crate::{EntryKind, Error, StagedWrite, TenantPath, WriteOptions, ZeroFs};
use access::Access;
use zero_auth::Action;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "zerocore:zerofs/host",
        imports: { default: trappable },
        require_store_data_send: true,
        with: {
            "wasi:io": wasmtime_wasi_io::bindings::wasi::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:filesystem/types.descriptor": super::Descriptor,
            "wasi:filesystem/types.directory-entry-stream": super::DirectoryEntries,
        },
    });
}

use bindings::wasi::filesystem::{preopens, types};
use types::{
    Advice, DescriptorFlags, DescriptorStat, DescriptorType, DirectoryEntry, ErrorCode,
    MetadataHashValue, NewTimestamp, OpenFlags, PathFlags,
};

/// Largest read served by one host call (and the buffer a stream reads into).
pub const MAX_READ_CHUNK: usize = 64 * 1024;

/// Bytes copied per step when a file is copied into staging (the request's deadline is checked
/// between steps).
const COPY_CHUNK: usize = 256 * 1024;

/// Limits the provider applies to every instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsLimits {
    /// Most descriptors, directory listings and file streams one instance may hold open at
    /// once (`[fs] max_open_per_instance`).
    pub max_open_per_instance: usize,
    /// The wall-clock time of one request: host work for it (copying into staging,
    /// publishing) stops once this has passed since its store was created. `None`: no bound.
    pub request_time: Option<Duration>,
    /// Most such resources all instances of the node hold at once (`[fs] max_open_files`):
    /// each may hold an OS file descriptor, so this keeps guests within the process's limit.
    pub max_open_files: usize,
    /// Most such resources all instances of one tenant hold at once (`[fs]
    /// max_open_files_per_tenant`), so that one tenant cannot take the node's whole budget.
    pub max_open_files_per_tenant: usize,
}

impl Default for FsLimits {
    fn default() -> Self {
        FsLimits {
            max_open_per_instance: DEFAULT_MAX_OPEN_PER_INSTANCE,
            request_time: None,
            max_open_files: DEFAULT_MAX_OPEN_FILES,
            max_open_files_per_tenant: DEFAULT_MAX_OPEN_FILES_PER_TENANT,
        }
    }
}

/// The default of [`FsLimits::max_open_per_instance`].
pub const DEFAULT_MAX_OPEN_PER_INSTANCE: usize = 256;
/// The default of [`FsLimits::max_open_files`].
pub const DEFAULT_MAX_OPEN_FILES: usize = 4096;
/// The default of [`FsLimits::max_open_files_per_tenant`].
pub const DEFAULT_MAX_OPEN_FILES_PER_TENANT: usize = 1024;

/// The open resources of every instance of the node, in all and per tenant.
#[derive(Debug)]
struct OpenBudget {
    max_total: usize,
    max_per_tenant: usize,
    /// In all, and per tenant (entries at zero are removed).
    held: Mutex<(usize, HashMap<String, usize>)>,
}

/// Which budget refused a resource.
enum OverBudget {
    Node(usize),
    Tenant(usize),
}

impl OpenBudget {
    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, HashMap<String, usize>)> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn acquire(&self, tenant: &str) -> Result<(), OverBudget> {
        let mut held = self.lock();
        let (total, tenants) = &mut *held;
        let of_tenant = tenants.get(tenant).copied().unwrap_or(0);
        if of_tenant >= self.max_per_tenant {
            return Err(OverBudget::Tenant(self.max_per_tenant));
        }
        if *total >= self.max_total {
            return Err(OverBudget::Node(self.max_total));
        }
        *total += 1;
        tenants.insert(tenant.to_string(), of_tenant + 1);
        Ok(())
    }

    fn release(&self, tenant: &str) {
        let mut held = self.lock();
        let (total, tenants) = &mut *held;
        *total = total.saturating_sub(1);
        if let Some(n) = tenants.get_mut(tenant) {
            *n -= 1;
            if *n == 0 {
                tenants.remove(tenant);
            }
        }
    }
}

/// The filesystem provider, sharing the node's store.
#[derive(Debug, Clone)]
pub struct FsProvider {
    fs: Arc<ZeroFs>,
    limits: FsLimits,
    budget: Arc<OpenBudget>,
}

impl FsProvider {
    /// A provider serving `wasi:filesystem` from `fs`, with the default [`FsLimits`].
    pub fn new(fs: Arc<ZeroFs>) -> Self {
        FsProvider {
            fs,
            limits: FsLimits::default(),
            budget: Arc::new(OpenBudget {
                max_total: DEFAULT_MAX_OPEN_FILES,
                max_per_tenant: DEFAULT_MAX_OPEN_FILES_PER_TENANT,
                held: Mutex::new((0, HashMap::new())),
            }),
        }
    }

    /// The same provider with these limits.
    pub fn with_limits(mut self, limits: FsLimits) -> Self {
        self.limits = limits;
        self.budget = Arc::new(OpenBudget {
            max_total: limits.max_open_files,
            max_per_tenant: limits.max_open_files_per_tenant,
            held: Mutex::new((0, HashMap::new())),
        });
        self
    }
}

impl Provider for FsProvider {
    fn name(&self) -> &'static str {
        "zerofs"
    }
}

impl ResourceProvider for FsProvider {
    fn interfaces(&self) -> Vec<String> {
        vec![
            "wasi:filesystem/types".to_string(),
            "wasi:filesystem/preopens".to_string(),
        ]
    }

    fn add_to_linker(&self, linker: &mut Linker<HostState>) -> anyhow::Result<()> {
        types::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
        preopens::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
        Ok(())
    }

    fn configure_store(&self, state: &mut HostState) -> anyhow::Result<()> {
        let inv = &state.invocation;
        state.extensions.insert(FsState {
            fs: self.fs.clone(),
            tenant: inv.tenant.to_string(),
            access: Access::new(inv.settings.grants.clone()),
            open: Arc::new(OpenCount {
                open: AtomicUsize::new(0),
                max: self.limits.max_open_per_instance,
                budget: self.budget.clone(),
                warned: AtomicBool::new(false),
                tenant: inv.tenant.to_string(),
                request_id: inv.request_id.to_string(),
            }),
            deadline: self
                .limits
                .request_time
                .and_then(|t| Instant::now().checked_add(t)),
        });
        Ok(())
    }
}

/// Per-store state of the provider.
struct FsState {
    fs: Arc<ZeroFs>,
    tenant: String,
    access: Access,
    /// The instance's open resources.
    open: Arc<OpenCount>,
    /// When the request's wall-clock time is over.
    deadline: Option<Instant>,
}

/// How many resources an instance holds open, against its limit.
struct OpenCount {
    open: AtomicUsize,
    max: usize,
    /// The node's and the tenant's budgets, shared by every instance.
    budget: Arc<OpenBudget>,
    /// Whether the refusal was logged already (once per instance).
    warned: AtomicBool,
    tenant: String,
    request_id: String,
}

/// One open resource of an instance; dropping it frees its place.
struct Slot(Arc<OpenCount>);

impl OpenCount {
    /// Takes a place for one more resource, or refuses with `insufficient-memory` at the
    /// instance's limit, the tenant's or the node's.
    fn acquire(self: &Arc<Self>) -> FsResult<Slot> {
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            });
        let refused = match taken {
            Err(_) => format!(
                "the instance holds {} open descriptors, directory listings and streams (limit                  [fs] max_open_per_instance = {})",
                self.max, self.max
            ),
            Ok(_) => match self.budget.acquire(&self.tenant) {
                Ok(()) => return Ok(Slot(self.clone())),
                Err(over) => {
                    self.open.fetch_sub(1, Ordering::AcqRel);
                    match over {
                        OverBudget::Tenant(max) => format!(
                            "the tenant's instances hold {max} open descriptors, directory                              listings and streams together (limit [fs]                              max_open_files_per_tenant = {max})"
                        ),
                        OverBudget::Node(max) => format!(
                            "the node's instances hold {max} open descriptors, directory                              listings and streams together (limit [fs] max_open_files = {max})"
                        ),
                    }
                }
            },
        };
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                tenant = %self.tenant, request_id = %self.request_id,
                "too many open files: {refused}; further opens fail with insufficient-memory \
                 until some are closed"
            );
        }
        Err(ErrorCode::InsufficientMemory)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.budget.release(&self.0.tenant);
    }
}

/// An open file or directory of the guest.
pub struct Descriptor {
    path: TenantPath,
    flags: DescriptorFlags,
    kind: Kind,
    _slot: Slot,
}

enum Kind {
    Dir,
    File(Arc<Mutex<OpenFile>>),
}

/// The listing returned by `read-directory`, already filtered to visible entries.
pub struct DirectoryEntries {
    entries: std::vec::IntoIter<DirectoryEntry>,
    _slot: Slot,
}

/// A file opened by the guest: the snapshot it reads, and the staged content it writes.
struct OpenFile {
    fs: Arc<ZeroFs>,
    tenant: String,
    path: TenantPath,
    /// Staged content, once the file was written, truncated or resized (and until published).
    staged: Option<StagedWrite>,
    /// Whether `staged` differs from what zerofs holds.
    dirty: bool,
    /// Whether this descriptor created the file: its first content is part of the creation,
    /// so writing through it needs the create right only.
    created_here: bool,
    /// Whether the guest closed the descriptor (its content was published then); streams of
    /// it can no longer write.
    closed: bool,
    /// When the request's wall-clock time is over: copying and publishing stop then.
    deadline: Option<Instant>,
}

fn lock(f: &Mutex<OpenFile>) -> MutexGuard<'_, OpenFile> {
    match f.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl OpenFile {
    fn new(st: &FsState, path: &TenantPath, created_here: bool) -> Self {
        OpenFile {
            fs: st.fs.clone(),
            tenant: st.tenant.clone(),
            path: path.clone(),
            staged: None,
            dirty: false,
            created_here,
            closed: false,
            deadline: st.deadline,
        }
    }

    /// The staged copy, creating it from the current content (or empty) on first use. The copy
    /// reserves the current size from the tenant's quota first and stops at the deadline.
    fn stage(&mut self, empty: bool) -> Result<&mut StagedWrite, ErrorCode> {
        if self.staged.is_none() {
            let (fs, tenant, path, deadline) = (&self.fs, &self.tenant, &self.path, self.deadline);
            let staged = off_worker(|| -> Result<StagedWrite, Error> {
                let mut staged = fs.stage(tenant)?;
                if empty {
                    return Ok(staged);
                }
                let mut reader = match fs.open_read(tenant, path.as_str()) {
                    Ok(r) => r,
                    Err(Error::NotFound(_)) => return Ok(staged),
                    Err(e) => return Err(e),
                };
                fs.reserve(&mut staged, path.as_str(), reader.len())?;
                let mut buf = vec![0u8; COPY_CHUNK];
                let mut at = 0u64;
                loop {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(Error::TimedOut(format!(
                            "copying {path} to stage a write did not finish within the \
                             request's wall-clock time"
                        )));
                    }
                    let n = reader
                        .read(&mut buf)
                        .map_err(|e| Error::io("copying a file to stage a write", e))?;
                    if n == 0 {
                        break;
                    }
                    staged
                        .file()
                        .write_all_at(&buf[..n], at)
                        .map_err(|e| Error::io("copying a file to stage a write", e))?;
                    at += n as u64;
                }
                Ok(staged)
            })
            .map_err(|e| code(&e))?;
            self.staged = Some(staged);
        }
        self.staged.as_mut().ok_or(ErrorCode::Io)
    }

    /// Stages (see [`OpenFile::stage`]) and reserves room for a staged size of `size` bytes,
    /// refusing with `insufficient-space` what the tenant's quota (shared with every other
    /// staged write of the tenant) could never publish, so that a guest cannot fill the host's
    /// temporary space before the quota refuses the publication.
    fn stage_for(&mut self, empty: bool, size: u64) -> Result<&File, ErrorCode> {
        self.stage(empty)?;
        let (fs, path) = (&self.fs, &self.path);
        let staged = self.staged.as_mut().ok_or(ErrorCode::Io)?;
        fs.reserve(staged, path.as_str(), size)
            .map_err(|e| code(&e))?;
        Ok(staged.file())
    }

    /// Publishes the staged content atomically, if it changed. The staged write is used up
    /// either way: after a failure the file keeps its published content.
    fn publish(&mut self) -> Result<(), Error> {
        if !self.dirty {
            return Ok(());
        }
        self.dirty = false;
        let Some(staged) = self.staged.take() else {
            return Ok(());
        };
        let (fs, path, deadline) = (&self.fs, &self.path, self.deadline);
        off_worker(|| fs.publish(staged, path.as_str(), WriteOptions::default(), deadline))?;
        Ok(())
    }

    fn size(&self) -> Result<u64, ErrorCode> {
        match &self.staged {
            Some(f) => f.len().map_err(|e| code(&e)),
            None => match self.fs.stat(&self.tenant, self.path.as_str()) {
                Ok(e) => Ok(e.size),
                Err(e) => Err(code(&e)),
            },
        }
    }

    /// Reads up to `len` (≤ [`MAX_READ_CHUNK`]) bytes at `offset`.
    fn read_at(&mut self, len: usize, offset: u64) -> Result<Vec<u8>, ErrorCode> {
        let mut buf = vec![0u8; len.min(MAX_READ_CHUNK)];
        let n = match &self.staged {
            Some(f) => read_full_at(f.file(), &mut buf, offset)?,
            None => {
                let mut reader = self
                    .fs
                    .open_read(&self.tenant, self.path.as_str())
                    .map_err(|e| code(&e))?;
                reader
                    .seek(SeekFrom::Start(offset))
                    .map_err(|_| ErrorCode::Io)?;
                read_full(&mut reader, &mut buf)?
            }
        };
        buf.truncate(n);
        Ok(buf)
    }
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        // Only the guest's own calls (sync, closing the descriptor) publish, within its
        // request; what is still unpublished when the last handle goes is discarded.
        if self.dirty && self.staged.is_some() {
            tracing::warn!(tenant = %self.tenant, path = %self.path,
                "a write staged by a guest was discarded: the guest neither synced nor closed \
                 the file before its request ended; the previous content stays");
        }
    }
}

/// Runs long blocking work (copying or publishing a whole file, with its fsyncs) so that it
/// does not hold up the other tasks of the async worker thread it was called on: through
/// `block_in_place` on a multi-threaded tokio runtime, directly elsewhere. Short calls (a
/// 64 KiB read, a metadata lookup) run inline.
fn off_worker<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, ErrorCode> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(ErrorCode::Io),
        }
    }
    Ok(n)
}

fn read_full_at(f: &File, buf: &mut [u8], offset: u64) -> Result<usize, ErrorCode> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(ErrorCode::Io),
        }
    }
    Ok(n)
}

/// The WASI error for a zerofs error.
fn code(e: &Error) -> ErrorCode {
    match e {
        Error::NotFound(_) => ErrorCode::NoEntry,
        Error::AlreadyExists(_) => ErrorCode::Exist,
        Error::NotADirectory(_) => ErrorCode::NotDirectory,
        Error::IsADirectory(_) => ErrorCode::IsDirectory,
        Error::DirectoryNotEmpty(_) => ErrorCode::NotEmpty,
        Error::InvalidPath { .. } => ErrorCode::Invalid,
        Error::InvalidTenant { .. } => ErrorCode::Access,
        Error::QuotaExceeded { .. } => ErrorCode::InsufficientSpace,
        Error::TimedOut(_) => {
            tracing::warn!(error = %e, "a filesystem call ran out of its request's time");
            ErrorCode::Busy
        }
        Error::Io { .. } | Error::Corrupt(_) => {
            tracing::error!(error = %e, "zerofs failed while serving wasi:filesystem");
            ErrorCode::Io
        }
    }
}

/// Resolves a guest path relative to a directory: relative only, no `..`, no empty segment.
fn resolve(dir: &TenantPath, rel: &str) -> Result<TenantPath, ErrorCode> {
    if rel.starts_with('/') || rel.contains('\0') {
        return Err(ErrorCode::NotPermitted);
    }
    let mut out = dir.clone();
    for seg in rel.split('/') {
        match seg {
            "" | "." => {}
            ".." => return Err(ErrorCode::NotPermitted),
            s => out = out.join(s).map_err(|_| ErrorCode::Invalid)?,
        }
    }
    Ok(out)
}

fn datetime(ns: u64) -> wasmtime_wasi::p2::bindings::clocks::wall_clock::Datetime {
    wasmtime_wasi::p2::bindings::clocks::wall_clock::Datetime {
        seconds: ns / 1_000_000_000,
        nanoseconds: (ns % 1_000_000_000) as u32,
    }
}

type FsResult<T> = Result<T, ErrorCode>;

/// Borrowed view of what a host call needs.
struct Ctx<'a> {
    table: &'a mut wasmtime::component::ResourceTable,
    st: &'a mut FsState,
}

fn ctx(h: &mut HostState) -> FsResult<Ctx<'_>> {
    let st = h.extensions.get_mut::<FsState>().ok_or_else(|| {
        tracing::error!("wasi:filesystem called in a store the zerofs provider did not configure");
        ErrorCode::Io
    })?;
    Ok(Ctx {
        table: &mut h.table,
        st,
    })
}

impl Ctx<'_> {
    fn desc(&self, d: &Resource<Descriptor>) -> FsResult<&Descriptor> {
        self.table.get(d).map_err(|_| ErrorCode::BadDescriptor)
    }

    fn dir(&self, d: &Resource<Descriptor>) -> FsResult<TenantPath> {
        let desc = self.desc(d)?;
        match desc.kind {
            Kind::Dir => Ok(desc.path.clone()),
            Kind::File(_) => Err(ErrorCode::NotDirectory),
        }
    }

    fn file(
        &self,
        d: &Resource<Descriptor>,
    ) -> FsResult<(TenantPath, DescriptorFlags, Arc<Mutex<OpenFile>>)> {
        let desc = self.desc(d)?;
        match &desc.kind {
            Kind::File(f) => Ok((desc.path.clone(), desc.flags, f.clone())),
            Kind::Dir => Err(ErrorCode::IsDirectory),
        }
    }

    fn require(&mut self, action: Action, path: &TenantPath) -> FsResult<()> {
        if self.st.access.allowed(action, path) {
            Ok(())
        } else {
            Err(ErrorCode::Access)
        }
    }

    /// The write right on an open file, unless this descriptor created it.
    fn require_write(&mut self, path: &TenantPath, file: &Mutex<OpenFile>) -> FsResult<()> {
        if lock(file).created_here {
            return Ok(());
        }
        self.require(Action::Write, path)
    }

    fn require_visible(&mut self, path: &TenantPath) -> FsResult<()> {
        if self.st.access.visible(path) {
            Ok(())
        } else {
            Err(ErrorCode::Access)
        }
    }

    /// The entry at `path` for stat-like calls, which need the read right, except on a
    /// directory that leads to a granted root (so the way down can be walked). The right is
    /// checked before the lookup where possible, so a refusal does not reveal existence.
    fn entry_for_stat(&mut self, path: &TenantPath) -> FsResult<crate::Entry> {
        self.require_visible(path)?;
        let leads_to_grant = self.st.access.roots().iter().any(|r| r.starts_with(path));
        if !leads_to_grant {
            self.require(Action::Read, path)?;
        }
        let entry = self
            .st
            .fs
            .stat(&self.st.tenant, path.as_str())
            .map_err(|e| code(&e))?;
        if entry.kind == EntryKind::File && leads_to_grant {
            self.require(Action::Read, path)?;
        }
        Ok(entry)
    }

    fn stat_path(&mut self, path: &TenantPath) -> FsResult<DescriptorStat> {
        let entry = self.entry_for_stat(path)?;
        let t = Some(datetime(entry.mtime_ns));
        Ok(DescriptorStat {
            type_: match entry.kind {
                EntryKind::File => DescriptorType::RegularFile,
                EntryKind::Dir => DescriptorType::Directory,
            },
            link_count: 1,
            size: entry.size,
            data_access_timestamp: t,
            data_modification_timestamp: t,
            status_change_timestamp: t,
        })
    }

    fn hash_path(&mut self, path: &TenantPath) -> FsResult<MetadataHashValue> {
        let entry = self.entry_for_stat(path)?;
        let mut bytes = [0u8; 16];
        match entry.hash {
            Some(h) => bytes.copy_from_slice(&h.0[..16]),
            None => {
                use sha2::Digest;
                let d = sha2::Sha256::digest(format!("{}\0{}", self.st.tenant, path).as_bytes());
                bytes.copy_from_slice(&d[..16]);
            }
        }
        let (lo, hi) = bytes.split_at(8);
        Ok(MetadataHashValue {
            lower: u64::from_le_bytes(lo.try_into().map_err(|_| ErrorCode::Io)?),
            upper: u64::from_le_bytes(hi.try_into().map_err(|_| ErrorCode::Io)?) ^ entry.mtime_ns,
        })
    }

    fn open_at(
        &mut self,
        dir: &Resource<Descriptor>,
        path: &str,
        oflags: OpenFlags,
        flags: DescriptorFlags,
    ) -> FsResult<Descriptor> {
        let base = self.dir(dir)?;
        let slot = self.st.open.acquire()?;
        let path = resolve(&base, path)?;
        self.require_visible(&path)?;
        let tenant = self.st.tenant.clone();
        let existing = match self.st.fs.stat(&tenant, path.as_str()) {
            Ok(e) => Some(e),
            Err(Error::NotFound(_)) | Err(Error::NotADirectory(_)) => None,
            Err(e) => return Err(code(&e)),
        };
        let wants_write =
            flags.contains(DescriptorFlags::WRITE) || oflags.contains(OpenFlags::TRUNCATE);
        match existing {
            Some(entry) => {
                if oflags.contains(OpenFlags::CREATE) && oflags.contains(OpenFlags::EXCLUSIVE) {
                    return Err(ErrorCode::Exist);
                }
                if entry.kind == EntryKind::Dir {
                    if wants_write {
                        return Err(ErrorCode::IsDirectory);
                    }
                    return Ok(Descriptor {
                        path,
                        flags,
                        kind: Kind::Dir,
                        _slot: slot,
                    });
                }
                if oflags.contains(OpenFlags::DIRECTORY) {
                    return Err(ErrorCode::NotDirectory);
                }
                if flags.contains(DescriptorFlags::READ) {
                    self.require(Action::Read, &path)?;
                }
                if wants_write {
                    self.require(Action::Write, &path)?;
                }
                let mut file = OpenFile::new(self.st, &path, false);
                if oflags.contains(OpenFlags::TRUNCATE) && entry.size > 0 {
                    file.stage(true)?;
                    file.dirty = true;
                }
                Ok(Descriptor {
                    path,
                    flags,
                    kind: Kind::File(Arc::new(Mutex::new(file))),
                    _slot: slot,
                })
            }
            None => {
                if !oflags.contains(OpenFlags::CREATE) {
                    return Err(ErrorCode::NoEntry);
                }
                if oflags.contains(OpenFlags::DIRECTORY) {
                    return Err(ErrorCode::Invalid);
                }
                self.require(Action::Create, &path)?;
                if flags.contains(DescriptorFlags::READ) {
                    self.require(Action::Read, &path)?;
                }
                // The new, empty file exists as soon as open-at returns.
                self.st
                    .fs
                    .write(&tenant, path.as_str(), std::io::empty())
                    .map_err(|e| code(&e))?;
                let file = OpenFile::new(self.st, &path, true);
                Ok(Descriptor {
                    path,
                    flags,
                    kind: Kind::File(Arc::new(Mutex::new(file))),
                    _slot: slot,
                })
            }
        }
    }

    /// `unlink-file-at` (`kind` File) and `remove-directory-at` (`kind` Dir): the delete right,
    /// then the entry must be of that kind (the tenant root is never removed).
    fn remove_at(&mut self, d: &Resource<Descriptor>, path: &str, kind: EntryKind) -> FsResult<()> {
        let path = resolve(&self.dir(d)?, path)?;
        self.require(Action::Delete, &path)?;
        let tenant = self.st.tenant.clone();
        match self.st.fs.stat(&tenant, path.as_str()) {
            Ok(e) if e.kind != kind => {
                return Err(match kind {
                    EntryKind::Dir => ErrorCode::NotDirectory,
                    EntryKind::File => ErrorCode::IsDirectory,
                });
            }
            Ok(_) => {}
            Err(e) => return Err(code(&e)),
        }
        if path.is_root() {
            return Err(ErrorCode::Busy);
        }
        self.st
            .fs
            .remove(&tenant, path.as_str())
            .map_err(|e| code(&e))
    }

    fn rename_at(
        &mut self,
        from_dir: &Resource<Descriptor>,
        from: &str,
        to_dir: &Resource<Descriptor>,
        to: &str,
    ) -> FsResult<()> {
        let from = resolve(&self.dir(from_dir)?, from)?;
        let to = resolve(&self.dir(to_dir)?, to)?;
        self.require(Action::Delete, &from)?;
        let tenant = self.st.tenant.clone();
        let dest_exists = match self.st.fs.exists(&tenant, to.as_str()) {
            Ok(b) => b,
            Err(e) => return Err(code(&e)),
        };
        if dest_exists {
            self.require(Action::Write, &to)?;
        } else {
            self.require(Action::Create, &to)?;
        }
        self.st
            .fs
            .rename(&tenant, from.as_str(), to.as_str())
            .map_err(|e| code(&e))
    }
}

impl types::Host for HostState {
    fn filesystem_error_code(
        &mut self,
        err: Resource<wasmtime_wasi_io::bindings::wasi::io::error::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        let err = self.table.get(&err)?;
        Ok(err.downcast_ref::<ErrorCode>().copied())
    }
}

macro_rules! ok {
    ($e:expr) => {
        Ok((|| -> FsResult<_> { $e })())
    };
}

impl types::HostDescriptor for HostState {
    fn read_via_stream(
        &mut self,
        d: Resource<Descriptor>,
        offset: u64,
    ) -> wasmtime::Result<Result<Resource<wasmtime_wasi::p2::DynInputStream>, ErrorCode>> {
        let stream = (|| -> FsResult<FileInput> {
            let mut c = ctx(self)?;
            let (path, _, file) = c.file(&d)?;
            c.require(Action::Read, &path)?;
            let slot = c.st.open.acquire()?;
            let source = {
                let f = lock(&file);
                match &f.staged {
                    Some(tmp) => Source::Staged(tmp.file().try_clone().map_err(|_| ErrorCode::Io)?),
                    None => {
                        let mut r =
                            f.fs.open_read(&f.tenant, f.path.as_str())
                                .map_err(|e| code(&e))?;
                        r.seek(SeekFrom::Start(offset)).map_err(|_| ErrorCode::Io)?;
                        Source::Blob(r)
                    }
                }
            };
            Ok(FileInput {
                source,
                pos: offset,
                _file: file,
                _slot: slot,
            })
        })();
        match stream {
            Ok(s) => {
                let s: wasmtime_wasi::p2::DynInputStream = Box::new(s);
                Ok(Ok(self.table.push(s)?))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    fn write_via_stream(
        &mut self,
        d: Resource<Descriptor>,
        offset: u64,
    ) -> wasmtime::Result<Result<Resource<wasmtime_wasi::p2::DynOutputStream>, ErrorCode>> {
        self.output_stream(d, Some(offset))
    }

    fn append_via_stream(
        &mut self,
        d: Resource<Descriptor>,
    ) -> wasmtime::Result<Result<Resource<wasmtime_wasi::p2::DynOutputStream>, ErrorCode>> {
        self.output_stream(d, None)
    }

    fn advise(
        &mut self,
        d: Resource<Descriptor>,
        _offset: u64,
        _length: u64,
        _advice: Advice,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        // Advice is only a hint; there is nothing to tune over content-addressed blobs.
        ok!({
            ctx(self)?.file(&d)?;
            Ok(())
        })
    }

    fn sync_data(&mut self, d: Resource<Descriptor>) -> wasmtime::Result<Result<(), ErrorCode>> {
        self.sync(d)
    }

    fn get_flags(
        &mut self,
        d: Resource<Descriptor>,
    ) -> wasmtime::Result<Result<DescriptorFlags, ErrorCode>> {
        ok!(Ok(ctx(self)?.desc(&d)?.flags))
    }

    fn get_type(
        &mut self,
        d: Resource<Descriptor>,
    ) -> wasmtime::Result<Result<DescriptorType, ErrorCode>> {
        ok!(Ok(match ctx(self)?.desc(&d)?.kind {
            Kind::Dir => DescriptorType::Directory,
            Kind::File(_) => DescriptorType::RegularFile,
        }))
    }

    fn set_size(
        &mut self,
        d: Resource<Descriptor>,
        size: u64,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        ok!({
            let mut c = ctx(self)?;
            let (path, flags, file) = c.file(&d)?;
            if !flags.contains(DescriptorFlags::WRITE) {
                return Err(ErrorCode::BadDescriptor);
            }
            c.require_write(&path, &file)?;
            let mut f = lock(&file);
            f.stage_for(size == 0, size)?
                .set_len(size)
                .map_err(|_| ErrorCode::Io)?;
            f.dirty = true;
            Ok(())
        })
    }

    fn set_times(
        &mut self,
        d: Resource<Descriptor>,
        _atime: NewTimestamp,
        _mtime: NewTimestamp,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        ok!({
            ctx(self)?.desc(&d)?;
            // zerofs records the time of each publication; it cannot store a chosen time.
            Err(ErrorCode::Unsupported)
        })
    }

    fn read(
        &mut self,
        d: Resource<Descriptor>,
        len: u64,
        offset: u64,
    ) -> wasmtime::Result<Result<(Vec<u8>, bool), ErrorCode>> {
        ok!({
            let mut c = ctx(self)?;
            let (path, flags, file) = c.file(&d)?;
            if !flags.contains(DescriptorFlags::READ) {
                return Err(ErrorCode::BadDescriptor);
            }
            c.require(Action::Read, &path)?;
            let mut f = lock(&file);
            let want = usize::try_from(len).unwrap_or(usize::MAX);
            let data = f.read_at(want, offset)?;
            let eof = data.is_empty() || offset.saturating_add(data.len() as u64) >= f.size()?;
            Ok((data, eof && want > 0))
        })
    }

    fn write(
        &mut self,
        d: Resource<Descriptor>,
        buf: Vec<u8>,
        offset: u64,
    ) -> wasmtime::Result<Result<u64, ErrorCode>> {
        ok!({
            let mut c = ctx(self)?;
            let (path, flags, file) = c.file(&d)?;
            if !flags.contains(DescriptorFlags::WRITE) {
                return Err(ErrorCode::BadDescriptor);
            }
            c.require_write(&path, &file)?;
            let mut f = lock(&file);
            f.stage_for(false, offset.saturating_add(buf.len() as u64))?
                .write_all_at(&buf, offset)
                .map_err(|_| ErrorCode::Io)?;
            f.dirty = true;
            Ok(buf.len() as u64)
        })
    }

    fn read_directory(
        &mut self,
        d: Resource<Descriptor>,
    ) -> wasmtime::Result<Result<Resource<DirectoryEntries>, ErrorCode>> {
        let listing = (|| -> FsResult<DirectoryEntries> {
            let mut c = ctx(self)?;
            let dir = c.dir(&d)?;
            c.require_visible(&dir)?;
            let slot = c.st.open.acquire()?;
            let entries =
                c.st.fs
                    .list(&c.st.tenant, dir.as_str())
                    .map_err(|e| code(&e))?;
            let mut out = Vec::new();
            for e in entries {
                if !c.st.access.visible(&e.path) {
                    continue;
                }
                let Some(name) = e.path.file_name() else {
                    continue;
                };
                out.push(DirectoryEntry {
                    type_: match e.kind {
                        EntryKind::File => DescriptorType::RegularFile,
                        EntryKind::Dir => DescriptorType::Directory,
                    },
                    name: name.to_string(),
                });
            }
            Ok(DirectoryEntries {
                entries: out.into_iter(),
                _slot: slot,
            })
        })();
        match listing {
            Ok(l) => Ok(Ok(self.table.push(l)?)),
            Err(e) => Ok(Err(e)),
        }
    }

    fn sync(&mut self, d: Resource<Descriptor>) -> wasmtime::Result<Result<(), ErrorCode>> {
        ok!({
            let mut c = ctx(self)?;
            let desc = c.desc(&d)?;
            let Kind::File(file) = &desc.kind else {
                return Ok(());
            };
            let (path, file) = (desc.path.clone(), file.clone());
            if !lock(&file).dirty {
                return Ok(());
            }
            c.require_write(&path, &file)?;
            let mut f = lock(&file);
            f.publish().map_err(|e| {
                tracing::warn!(tenant = %f.tenant, path = %f.path, error = %e, "publishing a guest's write failed");
                code(&e)
            })
        })
    }

    fn create_directory_at(
        &mut self,
        d: Resource<Descriptor>,
        path: String,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        ok!({
            let mut c = ctx(self)?;
            let path = resolve(&c.dir(&d)?, &path)?;
            c.require(Action::Create, &path)?;
            c.st.fs
                .mkdir(&c.st.tenant, path.as_str(), false)
                .map(|_| ())
                .map_err(|e| code(&e))
        })
    }

    fn stat(
        &mut self,
        d: Resource<Descriptor>,
    ) -> wasmtime::Result<Result<DescriptorStat, ErrorCode>> {
        ok!({
            let mut c = ctx(self)?;
            let desc = c.desc(&d)?;
            let path = desc.path.clone();
            let staged_size = match &desc.kind {
                Kind::File(f) => {
                    let f = lock(f);
                    match &f.staged {
                        Some(_) => Some(f.size()?),
                        None => None,
                    }
                }
                Kind::Dir => None,
            };
            let mut stat = c.stat_path(&path)?;
            if let Some(size) = staged_size {
                stat.size = size;
            }
            Ok(stat)
        })
    }

    fn stat_at(
        &mut self,
        d: Resource<Descriptor>,
        _flags: PathFlags,
        path: String,
    ) -> wasmtime::Result<Result<DescriptorStat, ErrorCode>> {
        ok!({
            let mut c = ctx(self)?;
            let path = resolve(&c.dir(&d)?, &path)?;
            c.stat_path(&path)
        })
    }

    fn set_times_at(
        &mut self,
        d: Resource<Descriptor>,
        _flags: PathFlags,
        path: String,
        _atime: NewTimestamp,
        _mtime: NewTimestamp,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        ok!({
            let c = ctx(self)?;
            resolve(&c.dir(&d)?, &path)?;
            Err(ErrorCode::Unsupported)
        })
    }

    fn link_at(
        &mut self,
        _d: Resource<Descriptor>,
        _old_flags: PathFlags,
        _old_path: String,
        _new_d: Resource<Descriptor>,
        _new_path: String,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        // zerofs has no hard links.
        Ok(Err(ErrorCode::NotPermitted))
    }

    fn open_at(
        &mut self,
        d: Resource<Descriptor>,
        _path_flags: PathFlags,
        path: String,
        oflags: OpenFlags,
        flags: DescriptorFlags,
    ) -> wasmtime::Result<Result<Resource<Descriptor>, ErrorCode>> {
        let opened = (|| ctx(self)?.open_at(&d, &path, oflags, flags))();
        match opened {
            Ok(desc) => Ok(Ok(self.table.push(desc)?)),
            Err(e) => Ok(Err(e)),
        }
    }

    fn readlink_at(
        &mut self,
        _d: Resource<Descriptor>,
        _path: String,
    ) -> wasmtime::Result<Result<String, ErrorCode>> {
        // zerofs has no symbolic links.
        Ok(Err(ErrorCode::NotPermitted))
    }

    fn remove_directory_at(
        &mut self,
        d: Resource<Descriptor>,
        path: String,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        ok!(ctx(self)?.remove_at(&d, &path, EntryKind::Dir))
    }

    fn rename_at(
        &mut self,
        d: Resource<Descriptor>,
        old_path: String,
        new_d: Resource<Descriptor>,
        new_path: String,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        ok!(ctx(self)?.rename_at(&d, &old_path, &new_d, &new_path))
    }

    fn symlink_at(
        &mut self,
        _d: Resource<Descriptor>,
        _old_path: String,
        _new_path: String,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        // zerofs has no symbolic links.
        Ok(Err(ErrorCode::NotPermitted))
    }

    fn unlink_file_at(
        &mut self,
        d: Resource<Descriptor>,
        path: String,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        ok!(ctx(self)?.remove_at(&d, &path, EntryKind::File))
    }

    fn is_same_object(
        &mut self,
        a: Resource<Descriptor>,
        b: Resource<Descriptor>,
    ) -> wasmtime::Result<bool> {
        let a = self.table.get(&a)?.path.clone();
        let b = &self.table.get(&b)?.path;
        Ok(&a == b)
    }

    fn metadata_hash(
        &mut self,
        d: Resource<Descriptor>,
    ) -> wasmtime::Result<Result<MetadataHashValue, ErrorCode>> {
        ok!({
            let mut c = ctx(self)?;
            let path = c.desc(&d)?.path.clone();
            c.hash_path(&path)
        })
    }

    fn metadata_hash_at(
        &mut self,
        d: Resource<Descriptor>,
        _flags: PathFlags,
        path: String,
    ) -> wasmtime::Result<Result<MetadataHashValue, ErrorCode>> {
        ok!({
            let mut c = ctx(self)?;
            let path = resolve(&c.dir(&d)?, &path)?;
            c.hash_path(&path)
        })
    }

    fn drop(&mut self, d: Resource<Descriptor>) -> wasmtime::Result<()> {
        // The guest closing a written file publishes it, within its request.
        let desc = self.table.delete(d)?;
        if let Kind::File(file) = &desc.kind {
            let mut f = lock(file);
            f.closed = true;
            if let Err(e) = f.publish() {
                tracing::error!(tenant = %f.tenant, path = %f.path, error = %e,
                    "a file written by a guest could not be published when it was closed; the \
                     previous content stays");
            }
        }
        Ok(())
    }
}

impl HostStateExt for HostState {
    fn output_stream(
        &mut self,
        d: Resource<Descriptor>,
        offset: Option<u64>,
    ) -> wasmtime::Result<Result<Resource<wasmtime_wasi::p2::DynOutputStream>, ErrorCode>> {
        let stream = (|| -> FsResult<FileOutput> {
            let mut c = ctx(self)?;
            let (path, flags, file) = c.file(&d)?;
            if !flags.contains(DescriptorFlags::WRITE) {
                return Err(ErrorCode::BadDescriptor);
            }
            c.require_write(&path, &file)?;
            let slot = c.st.open.acquire()?;
            Ok(FileOutput {
                file,
                pos: offset,
                _slot: slot,
            })
        })();
        match stream {
            Ok(s) => {
                let s: wasmtime_wasi::p2::DynOutputStream = Box::new(s);
                Ok(Ok(self.table.push(s)?))
            }
            Err(e) => Ok(Err(e)),
        }
    }
}

trait HostStateExt {
    fn output_stream(
        &mut self,
        d: Resource<Descriptor>,
        offset: Option<u64>,
    ) -> wasmtime::Result<Result<Resource<wasmtime_wasi::p2::DynOutputStream>, ErrorCode>>;
}

impl types::HostDirectoryEntryStream for HostState {
    fn read_directory_entry(
        &mut self,
        s: Resource<DirectoryEntries>,
    ) -> wasmtime::Result<Result<Option<DirectoryEntry>, ErrorCode>> {
        Ok(Ok(self.table.get_mut(&s)?.entries.next()))
    }

    fn drop(&mut self, s: Resource<DirectoryEntries>) -> wasmtime::Result<()> {
        self.table.delete(s)?;
        Ok(())
    }
}

impl preopens::Host for HostState {
    fn get_directories(&mut self) -> wasmtime::Result<Vec<(Resource<Descriptor>, String)>> {
        let Some(st) = self.extensions.get_mut::<FsState>() else {
            return Ok(Vec::new());
        };
        let mut dirs: Vec<TenantPath> = Vec::new();
        for root in st.access.roots() {
            let dir = match st.fs.stat(&st.tenant, root.as_str()) {
                Ok(e) if e.kind == EntryKind::Dir => Some(root),
                // A file (or a root not created yet) preopens its parent directory.
                Ok(_) | Err(Error::NotFound(_)) => root
                    .parent()
                    .filter(|p| matches!(st.fs.stat(&st.tenant, p.as_str()), Ok(e) if e.kind == EntryKind::Dir)),
                Err(_) => None,
            };
            if let Some(dir) = dir
                && !dirs.contains(&dir)
            {
                dirs.push(dir);
            }
        }
        let mut out = Vec::with_capacity(dirs.len());
        for dir in dirs {
            let name = dir.to_string();
            let slot = st.open.acquire().map_err(|_| {
                wasmtime::Error::msg(format!(
                    "too many open files: the instance already holds {} open descriptors, \
                     directory listings and streams (limit [fs] max_open_per_instance), so its \
                     preopened directories cannot be opened again",
                    st.open.max
                ))
            })?;
            let desc = Descriptor {
                path: dir,
                flags: DescriptorFlags::READ | DescriptorFlags::MUTATE_DIRECTORY,
                kind: Kind::Dir,
                _slot: slot,
            };
            out.push((self.table.push(desc)?, name));
        }
        Ok(out)
    }
}

/// Where a read stream takes its bytes from.
enum Source {
    /// The published blob, as it was when the stream was opened.
    Blob(crate::FileReader),
    /// The descriptor's staged (unpublished) content.
    Staged(File),
}

/// `read-via-stream`: reads in chunks of at most [`MAX_READ_CHUNK`] bytes.
struct FileInput {
    source: Source,
    pos: u64,
    /// Keeps the open file (and so its staged content) alive while the stream is.
    _file: Arc<Mutex<OpenFile>>,
    _slot: Slot,
}

impl InputStream for FileInput {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        let mut buf = vec![0u8; size.min(MAX_READ_CHUNK)];
        let n = match &mut self.source {
            Source::Blob(r) => read_full(r, &mut buf),
            Source::Staged(f) => read_full_at(f, &mut buf, self.pos),
        }
        .map_err(|e| StreamError::LastOperationFailed(wasmtime::Error::new(e)))?;
        if n == 0 && size > 0 {
            return Err(StreamError::Closed);
        }
        buf.truncate(n);
        self.pos += n as u64;
        Ok(Bytes::from(buf))
    }
}

#[async_trait::async_trait]
impl Pollable for FileInput {
    async fn ready(&mut self) {}
}

/// `write-via-stream` (at a position) and `append-via-stream` (`pos: None`).
struct FileOutput {
    file: Arc<Mutex<OpenFile>>,
    pos: Option<u64>,
    _slot: Slot,
}

impl OutputStream for FileOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let fail = |e: ErrorCode| StreamError::LastOperationFailed(wasmtime::Error::new(e));
        let mut f = lock(&self.file);
        if f.closed {
            // The descriptor was closed and its content published; nothing can join it.
            return Err(StreamError::Closed);
        }
        let at = match self.pos {
            Some(p) => p,
            None => f
                .stage(false)
                .map_err(fail)?
                .len()
                .map_err(|e| fail(code(&e)))?,
        };
        f.stage_for(false, at.saturating_add(bytes.len() as u64))
            .map_err(fail)?
            .write_all_at(&bytes, at)
            .map_err(|_| fail(ErrorCode::Io))?;
        if let Some(p) = &mut self.pos {
            *p += bytes.len() as u64;
        }
        f.dirty = true;
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        // Content is published on sync or close; a flush has nothing more to do.
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_READ_CHUNK)
    }
}

#[async_trait::async_trait]
impl Pollable for FileOutput {
    async fn ready(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_paths_resolve_below_their_directory_only() {
        let d = TenantPath::parse("/site").unwrap();
        assert_eq!(resolve(&d, "a/./b.txt").unwrap().as_str(), "/site/a/b.txt");
        assert_eq!(resolve(&d, ".").unwrap().as_str(), "/site");
        for escape in [
            "..",
            "../secret",
            "a/../../b",
            "a/..",
            "/etc/passwd",
            "/site/a",
            "a\0b",
        ] {
            assert_eq!(
                resolve(&d, escape),
                Err(ErrorCode::NotPermitted),
                "{escape:?}"
            );
        }
    }

    #[test]
    fn staging_and_publishing_stop_at_the_requests_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let fs = Arc::new(ZeroFs::open(dir.path(), crate::Quota::UNLIMITED).unwrap());
        fs.write("t", "/f", &b"old"[..]).unwrap();
        let mut f = OpenFile {
            fs: fs.clone(),
            tenant: "t".into(),
            path: TenantPath::parse("/f").unwrap(),
            staged: None,
            dirty: false,
            created_here: false,
            closed: false,
            deadline: Some(Instant::now()),
        };
        // Copying the current content into staging is work for the request: past its time it
        // stops with `busy`.
        assert_eq!(f.stage(false).err(), Some(ErrorCode::Busy));
        // So is publishing: nothing reaches the tree, and the reservation is returned.
        f.stage_for(true, 3)
            .unwrap()
            .write_all_at(b"new", 0)
            .unwrap();
        f.dirty = true;
        assert!(matches!(f.publish(), Err(Error::TimedOut(_))));
        assert_eq!(fs.read_range("t", "/f", 0, 10).unwrap(), b"old");
        assert_eq!(fs.staged_bytes("t"), 0);
        // Without a deadline the same write is published.
        f.deadline = None;
        f.stage_for(true, 3)
            .unwrap()
            .write_all_at(b"new", 0)
            .unwrap();
        f.dirty = true;
        f.publish().unwrap();
        assert_eq!(fs.read_range("t", "/f", 0, 10).unwrap(), b"new");
    }

    #[test]
    fn store_errors_map_to_wasi_codes() {
        assert_eq!(code(&Error::NotFound("/a".into())), ErrorCode::NoEntry);
        assert_eq!(
            code(&Error::DirectoryNotEmpty("/a".into())),
            ErrorCode::NotEmpty
        );
        let quota = Error::QuotaExceeded {
            tenant: "t".into(),
            limit: 1,
            kind: crate::QuotaKind::Bytes,
        };
        assert_eq!(code(&quota), ErrorCode::InsufficientSpace);
    }
}

//! The `wasi:filesystem` provider: `wasi:filesystem/types` and `wasi:filesystem/preopens`
//! (WASI 0.2.12, the version wasmtime-wasi 48 links) over a [`ZeroFs`], for the calling
//! component's tenant and within its capabilities.
//!
//! [`FsProvider`] keeps, per deployment, the grants of the component's chain ([`FsApp`]), and
//! per store an [`FsInstance`] (the access oracle with its cache, the open-resource count, the
//! request's deadline); the host traits are implemented on its view, [`FsView`]. The code is
//! split by concern: `budget` (open resources per instance, tenant and node), `file` (an open
//! file: its staged write and its publication), `ops` (path resolution, error mapping and the
//! checks of each call), `host` (the WASI host traits) and `stream` (file streams).
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
mod budget;
mod file;
mod host;
mod ops;
mod stream;

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::{HasData, Linker};
use zero_provider::{AppContext, HasView, Invocation, ResourceProvider, View};

use crate::{TenantPath, ZeroFs};
use access::Access;
use budget::{OpenBudget, OpenCount, Slot};
use file::OpenFile;
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
use types::{DescriptorFlags, DirectoryEntry, ErrorCode};

type FsResult<T> = Result<T, ErrorCode>;

/// Largest read served by one host call (and the buffer a stream reads into).
pub const MAX_READ_CHUNK: usize = 64 * 1024;

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
            budget: Arc::new(OpenBudget::new(
                DEFAULT_MAX_OPEN_FILES,
                DEFAULT_MAX_OPEN_FILES_PER_TENANT,
            )),
        }
    }

    /// The file store it serves.
    pub(crate) fn store(&self) -> &Arc<ZeroFs> {
        &self.fs
    }

    /// The same provider with these limits.
    pub fn with_limits(mut self, limits: FsLimits) -> Self {
        self.limits = limits;
        self.budget = Arc::new(OpenBudget::new(
            limits.max_open_files,
            limits.max_open_files_per_tenant,
        ));
        self
    }
}

/// What the provider keeps per deployment: the component's capability checker for its
/// tenant and component (made once per deployment; without a token it allows nothing).
pub struct FsApp {
    /// The access oracle over the app's grants, cloned into each store.
    access: Access,
}

/// What the provider keeps per store.
pub struct FsInstance {
    fs: Arc<ZeroFs>,
    tenant: String,
    access: Access,
    /// The instance's open resources.
    open: Arc<OpenCount>,
    /// When the request's wall-clock time is over.
    deadline: Option<Instant>,
    /// The refusals already logged by this instance (at most [`MAX_LOGGED_REFUSALS`]), so a
    /// guest retrying a refused call does not flood the node's log.
    logged_refusals: Vec<(Action, TenantPath)>,
}

/// Most distinct refusals one instance logs (see [`FsInstance`]).
const MAX_LOGGED_REFUSALS: usize = 16;

/// What the host functions of `wasi:filesystem` see: the store's [`FsInstance`] and its
/// resource table (and the invocation and CPU meter, unused here).
pub type FsView<'a> = View<'a, FsInstance>;

/// The [`HasData`] of the filesystem host functions: they run on an [`FsView`].
struct FsData;

impl HasData for FsData {
    type Data<'a> = FsView<'a>;
}

impl ResourceProvider for FsProvider {
    type App = FsApp;
    type Instance = FsInstance;

    fn name(&self) -> &'static str {
        "zerofs"
    }

    fn interfaces(&self) -> Vec<String> {
        vec![
            "wasi:filesystem/types".to_string(),
            "wasi:filesystem/preopens".to_string(),
        ]
    }

    fn add_to_linker<T: HasView<Self>>(linker: &mut Linker<T>) -> anyhow::Result<()> {
        types::add_to_linker::<T, FsData>(linker, T::view)?;
        preopens::add_to_linker::<T, FsData>(linker, T::view)?;
        Ok(())
    }

    fn prepare(&self, app: &AppContext<'_>) -> anyhow::Result<FsApp> {
        Ok(FsApp {
            access: Access::new(app.settings.grants.clone()),
        })
    }

    fn instance(&self, app: &Arc<FsApp>, inv: &Invocation) -> anyhow::Result<FsInstance> {
        Ok(FsInstance {
            fs: self.fs.clone(),
            tenant: inv.tenant.to_string(),
            access: app.access.clone(),
            logged_refusals: Vec::new(),
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
        })
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

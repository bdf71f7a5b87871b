//! `zerofs`: the tenant file store of the zerocore platform.
//!
//! Every tenant has its own namespace of directories and files, addressed by normalized
//! absolute [`TenantPath`]s (`/a/b.txt`) that cannot climb out of it. The core reads deployed
//! code from zerofs with the owner's credential, and components reach their granted paths
//! through `wasi:filesystem`; both go through [`ZeroFs`], the storage layer, which knows nothing
//! of capabilities. The [`wasi`] module is the provider that serves `wasi:filesystem` to
//! components over it, checking each call against the component's token; the node's management
//! API (`zero fs`) and its code storage check the caller's chain before calling [`ZeroFs`].
//!
//! # Layout
//!
//! Under the store root:
//! - `blobs/<sha256 hex>`: immutable, content-addressed file contents, shared (deduplicated)
//!   across files and tenants;
//! - `blobs/tmp/`: contents being streamed in, not yet published;
//! - `meta.redb`: a [redb](https://www.redb.org) database holding, per tenant, the tree
//!   `(parent, name) → entry {kind, blob hash, size, mtime}`, the tenant's usage and quota, and
//!   a reference count per blob; on a replica also its position in the cluster log (the
//!   `replica` table, written in the transaction of each applied command).
//!
//! # Guarantees
//!
//! - **Atomic and durable writes**: content streams to a temporary file that is fsynced and
//!   renamed to its blob name before a single durable redb transaction publishes it; a write is
//!   acknowledged only after that commit, and a crash at any point leaves either the old or the
//!   new file visible, never a partial one.
//! - **Streaming**: writes and reads go through `Read`/`Seek` in bounded chunks; no whole file
//!   is held in memory.
//! - **Quotas** per tenant (bytes and entries) are checked before and while streaming and again
//!   in the commit; a refused operation changes nothing. Content being staged (guest writes,
//!   uploads) reserves from one pool per tenant, so all staged writes of a tenant together stay
//!   within what its byte quota leaves ([`ZeroFs::reserve`]).
//! - **Replicated, when asked**: every mutation is one [`FsCommand`] applied in one metadata
//!   transaction over immutable blobs. With no replicator set it is committed at once (the
//!   single-node store); with one ([`ZeroFs::set_replicator`]) it goes through the cluster
//!   log and is applied by [`replica::FsMachine`], a `zeroraft` state machine, on every node,
//!   while the blobs are pushed to a majority of the voters before the command is proposed and
//!   fetched by hash (and verified) by a node that lacks one. See [`replica`].
//! - **Garbage collection**: a blob whose count drops to zero is deleted after the commit;
//!   [`ZeroFs::gc`] (run at open) removes orphans a crash left behind.
//!
//! The API is blocking; async callers share the store in an `Arc` and use `spawn_blocking`.
#![deny(missing_docs)]

mod command;
mod error;
mod metrics;
mod path;
pub mod replica;
mod settings;
mod store;
pub mod wasi;

pub use command::{FsCommand, Outcome};
pub use error::{Error, QuotaKind, Result};
pub use path::{
    MAX_PATH_LEN, MAX_SEGMENT_LEN, MAX_TENANT_LEN, RESERVED_DIR, RESERVED_NAME, TenantPath,
    validate_tenant,
};
pub use settings::FsSettings;
pub use store::{
    BlobHash, Entry, EntryKind, FetchReport, FileReader, GcReport, Quota, StagedWrite, Usage,
    WriteOptions, ZeroFs,
};

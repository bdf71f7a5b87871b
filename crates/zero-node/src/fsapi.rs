//! The file endpoints of the management API: a tenant's files in zerofs, uploaded and
//! downloaded as streams.
//!
//! | method and path | command | arguments |
//! | --- | --- | --- |
//! | `PUT /v1/tenants/{t}/fs/{path}` (body: content) | `/fs/write` (and `/fs/create` for a new file) | `tenant`, `path` |
//! | `GET /v1/tenants/{t}/fs/{path}` | `/fs/read` | `tenant`, `path` |
//! | `GET /v1/tenants/{t}/fs/{path}?list` | `/fs/read` | `tenant`, `path` |
//! | `POST /v1/tenants/{t}/fs/{path}?mkdir[&parents]` | `/fs/create` | `tenant`, `path` |
//! | `DELETE /v1/tenants/{t}/fs/{path}[?recursive]` | `/fs/delete` | `tenant`, `path` |
//!
//! `path` is the URL path after `/fs` (percent-decoded, normalized); the invocation's `path`
//! argument must name the same path. Capabilities use directory granularity: a capability whose
//! policy accepts a directory covers everything under it, and one that excludes a directory
//! (`["!=", ".path", D]`) excludes everything under it ([`zero_auth::authorize_paths`]).
//! The reserved directory `/.zero` (deployed code) can be read and listed but not changed.
//! Uploads stream into zerofs (hashed, fsynced, published in one durable transaction: an upload
//! cut short never leaves a partial file); downloads stream from the blob file.
//!
//! No transfer holds a thread while it waits for its client: every chunk is written to (or
//! read from) disk by one short blocking task, and the waits happen on the async side, bounded
//! by [`TransferLimits`] (`[fs] transfer_idle_timeout_ms` for a client that sends or accepts
//! nothing, `[fs] transfer_timeout_ms` for the whole transfer). An upload that runs out of
//! time is refused with `TransferTimeout` (408) and leaves nothing behind (its staged content
//! and its share of the tenant's quota are released); a download that runs out of time is cut
//! off, and its file closed.

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Query, State};
use axum::routing::MethodRouter;
use bytes::Bytes;
use http::request::Parts;
use http_body_util::BodyExt;
use serde_json::json;
use zero_auth::VerifiedInvocation;
use zerofs::{Entry, EntryKind, StagedWrite, TenantPath, ZeroFs};

use crate::api::{Api, Body, Resp, Upload, arg_str, expect_arg, json_response};
use crate::apps::Refusal;
use crate::ucan::{Endpoint, Ucan};

/// Bytes per chunk read from a blob for a download, and written at once for an upload.
const CHUNK: usize = 256 * 1024;

/// Time limits of file uploads and downloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferLimits {
    /// Longest wait for the client to send (upload) or accept (download) the next bytes.
    pub idle: Duration,
    /// Longest transfer, from the start of the upload or download to its end.
    pub total: Duration,
}

impl TransferLimits {
    /// When the next wait ends: after `idle`, or at the transfer's `end`, whichever is first.
    fn next_wait(&self, end: tokio::time::Instant) -> tokio::time::Instant {
        (tokio::time::Instant::now() + self.idle).min(end)
    }

    /// The refusal of an upload that ran out of time.
    fn upload_timeout(&self, end: tokio::time::Instant) -> Refusal {
        let message = if tokio::time::Instant::now() >= end {
            format!(
                "the upload did not finish within {} ms ([fs] transfer_timeout_ms); nothing was \
                 written: upload again over a faster link, or ask the operator to raise the limit",
                self.total.as_millis()
            )
        } else {
            format!(
                "the upload sent nothing for {} ms ([fs] transfer_idle_timeout_ms); nothing was \
                 written: keep the upload flowing, or ask the operator to raise the limit",
                self.idle.as_millis()
            )
        };
        Refusal::new(408, "TransferTimeout", message)
    }
}

/// The operation a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Put,
    Get,
    List,
    Mkdir { parents: bool },
    Remove { recursive: bool },
}

/// Maps a zerofs error to a refusal with a fitting status.
fn fs_refusal(e: zerofs::Error) -> Refusal {
    use zerofs::Error as E;
    let (status, name) = match &e {
        E::NotFound(_) => (404, "NotFound"),
        E::AlreadyExists(_) => (409, "AlreadyExists"),
        E::NotADirectory(_) => (409, "NotADirectory"),
        E::IsADirectory(_) => (409, "IsADirectory"),
        E::DirectoryNotEmpty(_) => (409, "DirectoryNotEmpty"),
        E::InvalidPath { .. } | E::InvalidTenant { .. } => (400, "InvalidPath"),
        E::QuotaExceeded { .. } => (507, "QuotaExceeded"),
        E::TimedOut(_) => (408, "TransferTimeout"),
        E::Io { .. } | E::Corrupt(_) => (500, "Storage"),
    };
    Refusal::new(status, name, e.to_string())
}

fn entry_json(e: &Entry) -> serde_json::Value {
    json!({
        "path": e.path.as_str(),
        "name": e.path.file_name().unwrap_or(""),
        "kind": match e.kind { EntryKind::File => "file", EntryKind::Dir => "directory" },
        "size": e.size,
        "hash": e.hash.map(|h| format!("sha256:{}", h.to_hex())),
        "mtime_ns": e.mtime_ns,
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, zerofs::Error> + Send + 'static,
) -> Result<T, Refusal> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Refusal::new(500, "Internal", format!("the file operation failed: {e}")))?
        .map_err(fs_refusal)
}

/// `PUT /v1/tenants/{tenant}/fs/{path}`.
pub(crate) struct FsWrite;
impl Endpoint for FsWrite {
    const COMMAND: &'static str = "/fs/write";
    const URL_ARGS: &'static [&'static str] = &["tenant"];
}

/// `GET /v1/tenants/{tenant}/fs/{path}[?list]`.
pub(crate) struct FsRead;
impl Endpoint for FsRead {
    const COMMAND: &'static str = "/fs/read";
    const URL_ARGS: &'static [&'static str] = &["tenant"];
}

/// `POST /v1/tenants/{tenant}/fs/{path}?mkdir[&parents]`.
pub(crate) struct FsCreate;
impl Endpoint for FsCreate {
    const COMMAND: &'static str = "/fs/create";
    const URL_ARGS: &'static [&'static str] = &["tenant"];
}

/// `DELETE /v1/tenants/{tenant}/fs/{path}[?recursive]`.
pub(crate) struct FsDelete;
impl Endpoint for FsDelete {
    const COMMAND: &'static str = "/fs/delete";
    const URL_ARGS: &'static [&'static str] = &["tenant"];
}

/// The file endpoints' methods on one path (`/v1/tenants/{tenant}/fs/{path}`); any other
/// method is `MethodNotAllowed`.
pub(crate) fn routes() -> MethodRouter<Arc<Api>> {
    axum::routing::put(put_file)
        .get(get_file)
        .head(method_not_allowed)
        .post(mkdir)
        .delete(remove)
        .fallback(method_not_allowed)
}

fn methods_refusal() -> Refusal {
    Refusal::new(
        405,
        "MethodNotAllowed",
        "file endpoints take PUT (upload), GET (download, `?list` to list), POST \
         `?mkdir` and DELETE",
    )
}

async fn method_not_allowed() -> Refusal {
    methods_refusal()
}

/// The flags of a file call's query (`?list`, `?mkdir`, `?parents`, `?recursive`; a flag may
/// carry a value, which is ignored).
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct FsFlags {
    list: Option<String>,
    mkdir: Option<String>,
    parents: Option<String>,
    recursive: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for FsFlags {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Refusal> {
        Query::<FsFlags>::try_from_uri(&parts.uri)
            .map(|Query(flags)| flags)
            .map_err(|e| {
                Refusal::new(
                    400,
                    "InvalidArgs",
                    format!(
                        "the query must be flags among `list`, `mkdir`, `parents` and \
                         `recursive`, each at most once: {e}"
                    ),
                )
            })
    }
}

/// `POST` on a file path needs `?mkdir`, checked before anything else.
pub(crate) struct Mkdir {
    parents: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for Mkdir {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Refusal> {
        let flags = FsFlags::from_request_parts(parts, state).await?;
        if flags.mkdir.is_none() {
            return Err(methods_refusal());
        }
        Ok(Mkdir {
            parents: flags.parents.is_some(),
        })
    }
}

/// The tenant path a file call names: the request path after `/fs`, percent-decoded and
/// normalized (`/` when there is none).
pub(crate) struct FsPath(TenantPath);

impl FromRequestParts<Arc<Api>> for FsPath {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, Refusal> {
        let params = crate::ucan::path_params(parts, api).await?;
        let rest = params.get("path").map(String::as_str).unwrap_or_default();
        TenantPath::parse(&format!("/{rest}"))
            .map(FsPath)
            .map_err(fs_refusal)
    }
}

/// `PUT`: an upload, streamed into zerofs.
async fn put_file(
    State(api): State<Arc<Api>>,
    flags: FsFlags,
    FsPath(path): FsPath,
    ucan: Ucan<FsWrite>,
    upload: Upload,
) -> Result<Resp, Refusal> {
    // Refused here, the upload is still unread: `finish` reads (a bounded part of) it before
    // answering, so that the client gets the refusal rather than a connection reset.
    let tenant = api.check_files(&ucan.inv, Op::Put, &path)?;
    let body = upload.into_body()?;
    let fs = api.fs.clone();
    api.put(&ucan, fs, &tenant, path, body, flags.parents.is_some())
        .await
}

/// `GET`: a download, or with `?list` the entry and its children.
async fn get_file(
    State(api): State<Arc<Api>>,
    flags: FsFlags,
    FsPath(path): FsPath,
    ucan: Ucan<FsRead>,
) -> Result<Resp, Refusal> {
    let op = if flags.list.is_some() {
        Op::List
    } else {
        Op::Get
    };
    let tenant = api.check_files(&ucan.inv, op, &path)?;
    let fs = api.fs.clone();
    if op == Op::Get {
        return get(fs, &tenant, path, api.fs_transfer).await;
    }
    let (t, p) = (tenant.clone(), path.clone());
    let (entry, children) = blocking(move || {
        let entry = fs.stat(&t, p.as_str())?;
        let children = match entry.kind {
            EntryKind::Dir => fs.list(&t, p.as_str())?,
            EntryKind::File => vec![],
        };
        Ok((entry, children))
    })
    .await?;
    Ok(json_response(
        200,
        json!({
            "entry": entry_json(&entry),
            "entries": children.iter().map(entry_json).collect::<Vec<_>>(),
        }),
    ))
}

/// `POST ?mkdir[&parents]`: a directory.
async fn mkdir(
    State(api): State<Arc<Api>>,
    Mkdir { parents }: Mkdir,
    FsPath(path): FsPath,
    ucan: Ucan<FsCreate>,
) -> Result<Resp, Refusal> {
    let tenant = api.check_files(&ucan.inv, Op::Mkdir { parents }, &path)?;
    let (fs, t, p) = (api.fs.clone(), tenant.clone(), path.clone());
    let entry = blocking(move || fs.mkdir(&t, p.as_str(), parents)).await?;
    tracing::info!(tenant, path = %path, "directory created");
    Ok(json_response(201, entry_json(&entry)))
}

/// `DELETE [?recursive]`: a file or directory.
async fn remove(
    State(api): State<Arc<Api>>,
    flags: FsFlags,
    FsPath(path): FsPath,
    ucan: Ucan<FsDelete>,
) -> Result<Resp, Refusal> {
    let recursive = flags.recursive.is_some();
    let tenant = api.check_files(&ucan.inv, Op::Remove { recursive }, &path)?;
    let (fs, t, p) = (api.fs.clone(), tenant.clone(), path.clone());
    blocking(move || {
        if recursive {
            fs.remove_all(&t, p.as_str())
        } else {
            fs.remove(&t, p.as_str())
        }
    })
    .await?;
    tracing::info!(tenant, path = %path, recursive, "removed");
    Ok(json_response(
        200,
        json!({"path": path.as_str(), "removed": true}),
    ))
}

impl Api {
    /// The checks made before any file operation, once the invocation was verified (its
    /// `tenant` is the URL's): its `path` against the request, the tenant, and the reserved
    /// directory. Returns the tenant.
    fn check_files(
        &self,
        inv: &VerifiedInvocation,
        op: Op,
        path: &TenantPath,
    ) -> Result<String, Refusal> {
        let tenant = arg_str(&inv.args, "tenant")?.to_string();
        expect_arg(&inv.args, "path", path.as_str())?;
        self.require_tenant(&tenant)?;
        let writes = !matches!(op, Op::Get | Op::List);
        if writes && path.is_reserved() {
            return Err(Refusal::new(
                403,
                "Reserved",
                format!(
                    "{} is reserved for the node (deployed code lives there); choose another path",
                    zerofs::RESERVED_DIR
                ),
            ));
        }
        Ok(tenant)
    }

    async fn put(
        &self,
        ucan: &Ucan<FsWrite>,
        fs: Arc<ZeroFs>,
        tenant: &str,
        path: TenantPath,
        body: Body,
        parents: bool,
    ) -> Result<Resp, Refusal> {
        let exists = {
            let (fs, t, p) = (fs.clone(), tenant.to_string(), path.clone());
            blocking(move || fs.exists(&t, p.as_str())).await
        };
        let checked = exists.and_then(|exists| {
            if !exists {
                let create = zero_auth::Action::Create
                    .command(zerofs::wasi::access::FS_NAMESPACE)
                    .map_err(|e| Refusal::new(500, "Internal", e.to_string()))?;
                ucan.checker()
                    .allows(&create, &[("path", path.as_str())])
                    .map_err(|e| Refusal::new(403, e.name(), e.to_string()))?;
            }
            Ok(exists)
        });
        let exists = match checked {
            Ok(exists) => exists,
            Err(refusal) => {
                // As for the earlier checks: read the upload before refusing, so that the
                // client gets the answer and its connection stays usable.
                drain(body, self.max_upload, self.fs_transfer).await;
                return Err(refusal);
            }
        };
        let limits = self.fs_transfer;
        let end = tokio::time::Instant::now() + limits.total;
        let opts = zerofs::WriteOptions {
            create_parents: parents,
        };
        let staged = {
            let (fs, t, p) = (fs.clone(), tenant.to_string(), path.clone());
            blocking(move || {
                fs.check_write(&t, p.as_str(), opts)?;
                fs.stage(&t)
            })
            .await
        };
        let staged = match staged {
            Ok(staged) => staged,
            Err(refusal) => {
                drain(body, self.max_upload, limits).await;
                return Err(refusal);
            }
        };
        let mut upload = StagedUpload {
            fs: fs.clone(),
            path: path.clone(),
            staged: Some(staged),
            size: 0,
        };
        let mut body = body;
        let mut pending: Vec<u8> = Vec::with_capacity(CHUNK);
        loop {
            let frame = match tokio::time::timeout_at(limits.next_wait(end), body.frame()).await {
                Err(_) => {
                    tracing::warn!(tenant, path = %path, "upload timed out; nothing was written");
                    return Err(limits.upload_timeout(end));
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    if let Some(slow) = crate::bodyrate::refusal(&e) {
                        return Err(slow);
                    }
                    return Err(Refusal::new(
                        400,
                        "UploadInterrupted",
                        format!("the upload was interrupted: {e}; nothing was written"),
                    ));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            if pending.len() >= CHUNK {
                pending = match upload.append(pending).await {
                    Ok(emptied) => emptied,
                    Err(refusal) => {
                        // Read the rest (within bounds) so that the client gets the refusal
                        // rather than a connection reset mid-upload.
                        drop(upload);
                        drain(body, self.max_upload, limits).await;
                        return Err(refusal);
                    }
                };
            }
        }
        if !pending.is_empty() {
            upload.append(pending).await?;
        }
        let staged = upload
            .staged
            .take()
            .ok_or_else(|| Refusal::new(500, "Internal", "the upload lost its staged content"))?;
        let deadline = end.into_std();
        let entry = {
            let p = path.clone();
            blocking(move || fs.publish(staged, p.as_str(), opts, Some(deadline))).await?
        };
        tracing::info!(tenant, path = %path, size = entry.size, "file written");
        Ok(json_response(
            if exists { 200 } else { 201 },
            entry_json(&entry),
        ))
    }
}

/// An upload in progress: its staged content, written chunk by chunk on short blocking tasks
/// (so that no thread waits for the client). Dropping it aborts the upload.
struct StagedUpload {
    fs: Arc<ZeroFs>,
    path: TenantPath,
    staged: Option<StagedWrite>,
    size: u64,
}

impl StagedUpload {
    /// Reserves room for `chunk` in the tenant's quota and writes it at the end of the staged
    /// content; gives the buffer back, emptied, for the next chunk.
    async fn append(&mut self, mut chunk: Vec<u8>) -> Result<Vec<u8>, Refusal> {
        let mut staged = self
            .staged
            .take()
            .ok_or_else(|| Refusal::new(500, "Internal", "the upload lost its staged content"))?;
        let (fs, path, at) = (self.fs.clone(), self.path.clone(), self.size);
        let len = chunk.len() as u64;
        let (staged, chunk) = tokio::task::spawn_blocking(move || {
            let written = fs
                .reserve(&mut staged, path.as_str(), at + len)
                .and_then(|()| {
                    staged
                        .file()
                        .write_all_at(&chunk, at)
                        .map_err(|source| zerofs::Error::Io {
                            context: "writing an upload".to_string(),
                            source,
                        })
                });
            chunk.clear();
            written.map(|()| (staged, chunk))
        })
        .await
        .map_err(|e| Refusal::new(500, "Internal", format!("the upload failed: {e}")))?
        .map_err(fs_refusal)?;
        self.staged = Some(staged);
        self.size += len;
        Ok(chunk)
    }
}

/// Reads and discards up to `limit` bytes of a request body, waiting for the client no longer
/// than the transfer limits allow.
pub(crate) async fn drain(mut body: Body, limit: usize, limits: TransferLimits) {
    let end = tokio::time::Instant::now() + limits.total;
    let mut seen = 0usize;
    while let Ok(Some(Ok(frame))) =
        tokio::time::timeout_at(limits.next_wait(end), body.frame()).await
    {
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen > limit {
                break;
            }
        }
    }
}

/// Reads the next [`CHUNK`] of a download on a short blocking task (an empty chunk at the end).
fn read_chunk(
    mut reader: zerofs::FileReader,
) -> tokio::task::JoinHandle<std::io::Result<(zerofs::FileReader, Vec<u8>)>> {
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; CHUNK];
        let n = reader.read(&mut buf)?;
        buf.truncate(n);
        Ok((reader, buf))
    })
}

/// Streams a file's content: a task reads the blob in [`CHUNK`]-sized pieces, each on a short
/// blocking task, and hands them to the response, waiting at most `limits.idle` for the client
/// to take each one and `limits.total` in all; past either, the download is cut off and the
/// file closed.
async fn get(
    fs: Arc<ZeroFs>,
    tenant: &str,
    path: TenantPath,
    limits: TransferLimits,
) -> Result<Resp, Refusal> {
    let (t, p) = (tenant.to_string(), path.clone());
    let reader = blocking(move || fs.open_read(&t, p.as_str())).await?;
    let size = reader.len();
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let end = tokio::time::Instant::now() + limits.total;
    let tenant_name = tenant.to_string();
    tokio::spawn(async move {
        // One chunk is read ahead while the previous one waits for the client.
        let mut next = Some(read_chunk(reader));
        while let Some(reading) = next.take() {
            let (r, buf) = match reading.await {
                Ok(Ok((_, buf))) if buf.is_empty() => break,
                Ok(Ok(read)) => read,
                Ok(Err(e)) => {
                    let _ = tx.try_send(Err(e));
                    break;
                }
                Err(e) => {
                    let _ = tx.try_send(Err(std::io::Error::other(e.to_string())));
                    break;
                }
            };
            let ahead = read_chunk(r);
            match tokio::time::timeout_at(limits.next_wait(end), tx.send(Ok(Bytes::from(buf))))
                .await
            {
                Ok(Ok(())) => next = Some(ahead),
                // The client went away.
                Ok(Err(_)) => break,
                Err(_) => {
                    let which = if tokio::time::Instant::now() >= end {
                        format!(
                            "did not finish within {} ms ([fs] transfer_timeout_ms)",
                            limits.total.as_millis()
                        )
                    } else {
                        format!(
                            "accepted nothing for {} ms ([fs] transfer_idle_timeout_ms)",
                            limits.idle.as_millis()
                        )
                    };
                    tracing::warn!(tenant = %tenant_name, path = %path,
                        "download cut off: the client {which}; the file is closed");
                    let _ = tx.try_send(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the download {which}"),
                    )));
                    break;
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut resp = Resp::new(Body::from_stream(stream));
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(size));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn timeouts_say_which_limit_ran_out() {
        let limits = TransferLimits {
            idle: Duration::from_millis(500),
            total: Duration::from_secs(60),
        };
        let now = tokio::time::Instant::now();
        let far = now + Duration::from_secs(60);
        assert!(limits.next_wait(far) <= now + Duration::from_secs(1));
        assert_eq!(limits.next_wait(now), now);
        let idle = limits.upload_timeout(far);
        assert_eq!((idle.status, idle.error.as_str()), (408, "TransferTimeout"));
        assert!(
            idle.message.contains("sent nothing for 500 ms"),
            "{}",
            idle.message
        );
        let total = limits.upload_timeout(now);
        assert!(
            total
                .message
                .contains("did not finish within 60000 ms ([fs] transfer_timeout_ms)"),
            "{}",
            total.message
        );
    }
}

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
//! policy accepts a directory covers everything under it ([`crate::code::path_allowed`]).
//! The reserved directory `/.zero` (deployed code) can be read and listed but not changed.
//! Uploads stream into zerofs (hashed, fsynced, published in one durable transaction: an upload
//! cut short never leaves a partial file); downloads stream from the blob file.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use serde_json::json;
use zero_auth::{Capability, Command, Ipld, VerifiedInvocation};
use zerofs::{Entry, EntryKind, TenantPath, ZeroFs};

use crate::api::{Api, Body, Resp, expect_arg, json_response};
use crate::apps::Refusal;
use crate::code::path_allowed;

/// Bytes per chunk read from a blob for a download.
const CHUNK: usize = 256 * 1024;

/// The operation a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Put,
    Get,
    List,
    Mkdir { parents: bool },
    Remove { recursive: bool },
}

impl Op {
    fn command(self) -> &'static str {
        match self {
            Op::Put => "/fs/write",
            Op::Get | Op::List => "/fs/read",
            Op::Mkdir { .. } => "/fs/create",
            Op::Remove { .. } => "/fs/delete",
        }
    }
}

fn has_flag(query: Option<&str>, flag: &str) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|kv| kv == flag || kv.starts_with(&format!("{flag}=")))
    })
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

/// A capability check with directory granularity: the invocation's `path` argument is
/// accepted when a capability covers it or one of its ancestors.
fn directory_scope(
    caps: &[Capability],
    cmd: &Command,
    args: &Ipld,
) -> Result<(), zero_auth::Error> {
    let first = zero_auth::authorize(caps, cmd, args);
    if first.is_ok() {
        return first;
    }
    let Ipld::Map(map) = args else { return first };
    let Some(Ipld::String(path)) = map.get("path") else {
        return first;
    };
    let Ok(path) = TenantPath::parse(path) else {
        return first;
    };
    let covered = path.ancestors().skip(1).any(|dir| {
        let mut m = map.clone();
        m.insert("path".into(), Ipld::String(dir.as_str().to_string()));
        zero_auth::authorize(caps, cmd, &Ipld::Map(m)).is_ok()
    });
    if covered { Ok(()) } else { first }
}

/// A blocking reader fed with the chunks of an HTTP request body.
struct BodyReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

impl Api {
    /// Serves `/v1/tenants/{tenant}/fs/{rest}`.
    pub(crate) async fn files(
        &self,
        parts: &http::request::Parts,
        body: Incoming,
        tenant: &str,
        rest: &str,
    ) -> Result<Resp, Refusal> {
        let query = parts.uri.query();
        let op = match parts.method {
            http::Method::PUT => Op::Put,
            http::Method::GET if has_flag(query, "list") => Op::List,
            http::Method::GET => Op::Get,
            http::Method::POST if has_flag(query, "mkdir") => Op::Mkdir {
                parents: has_flag(query, "parents"),
            },
            http::Method::DELETE => Op::Remove {
                recursive: has_flag(query, "recursive"),
            },
            _ => {
                return Err(Refusal::new(
                    405,
                    "MethodNotAllowed",
                    "file endpoints take PUT (upload), GET (download, `?list` to list), POST \
                     `?mkdir` and DELETE",
                ));
            }
        };
        let decoded = percent_encoding::percent_decode_str(rest)
            .decode_utf8()
            .map_err(|_| Refusal::new(400, "InvalidPath", "the path is not valid UTF-8"))?;
        let path = TenantPath::parse(&format!("/{decoded}")).map_err(fs_refusal)?;
        let inv = match self.check_files(parts, op, tenant, &path) {
            Ok(inv) => inv,
            Err(refusal) => {
                if op == Op::Put {
                    // Read (a bounded part of) the upload before refusing, so that the client
                    // gets the refusal rather than a connection reset mid-upload.
                    drain(body, self.max_upload).await;
                }
                return Err(refusal);
            }
        };
        let fs = self.fs.clone();
        match op {
            Op::Put => self.put(&inv, fs, tenant, path, body, query).await,
            Op::Get => get(fs, tenant, path).await,
            Op::List => {
                let (t, p) = (tenant.to_string(), path.clone());
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
            Op::Mkdir { parents } => {
                let (t, p) = (tenant.to_string(), path.clone());
                let entry = blocking(move || fs.mkdir(&t, p.as_str(), parents)).await?;
                tracing::info!(tenant, path = %path, "directory created");
                Ok(json_response(201, entry_json(&entry)))
            }
            Op::Remove { recursive } => {
                let (t, p) = (tenant.to_string(), path.clone());
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
        }
    }

    /// The checks made before any file operation: the invocation, its arguments against the
    /// request, the tenant, and the reserved directory.
    fn check_files(
        &self,
        parts: &http::request::Parts,
        op: Op,
        tenant: &str,
        path: &TenantPath,
    ) -> Result<VerifiedInvocation, Refusal> {
        let (inv, _) = self.authorize_with(parts, op.command(), &directory_scope)?;
        expect_arg(&inv.args, "tenant", tenant)?;
        expect_arg(&inv.args, "path", path.as_str())?;
        self.require_tenant(tenant)?;
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
        Ok(inv)
    }

    async fn put(
        &self,
        inv: &VerifiedInvocation,
        fs: Arc<ZeroFs>,
        tenant: &str,
        path: TenantPath,
        body: Incoming,
        query: Option<&str>,
    ) -> Result<Resp, Refusal> {
        let parents = has_flag(query, "parents");
        let exists = {
            let (fs, t, p) = (fs.clone(), tenant.to_string(), path.clone());
            blocking(move || fs.exists(&t, p.as_str())).await
        };
        let checked = exists.and_then(|exists| {
            if !exists {
                path_allowed(|c, a| inv.allows(c, a), "/fs/create", tenant, &path)
                    .map_err(|e| Refusal::new(403, e.name(), e.to_string()))?;
            }
            Ok(exists)
        });
        let exists = match checked {
            Ok(exists) => exists,
            Err(refusal) => {
                // As for the earlier checks: read the upload before refusing, so that the
                // client gets the answer and its connection stays usable.
                drain(body, self.max_upload).await;
                return Err(refusal);
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
        let writer = {
            let (t, p) = (tenant.to_string(), path.clone());
            tokio::task::spawn_blocking(move || {
                let reader = BodyReader {
                    rx,
                    current: Bytes::new(),
                };
                fs.write_with(
                    &t,
                    p.as_str(),
                    reader,
                    zerofs::WriteOptions {
                        create_parents: parents,
                    },
                )
            })
        };
        let mut body = body;
        let mut interrupted = None;
        while let Some(frame) = body.frame().await {
            let chunk = match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue,
                },
                Err(e) => {
                    let message = format!("the upload was interrupted: {e}");
                    let _ = tx.send(Err(std::io::Error::other(message.clone()))).await;
                    interrupted = Some(message);
                    break;
                }
            };
            if tx.send(Ok(chunk)).await.is_err() {
                // The store stopped reading (quota, bad path): its error is reported below.
                break;
            }
        }
        drop(tx);
        let written = writer
            .await
            .map_err(|e| Refusal::new(500, "Internal", format!("the upload failed: {e}")))?;
        if let Some(message) = interrupted {
            return Err(Refusal::new(
                400,
                "UploadInterrupted",
                format!("{message}; nothing was written"),
            ));
        }
        let entry = written.map_err(fs_refusal)?;
        tracing::info!(tenant, path = %path, size = entry.size, "file written");
        Ok(json_response(
            if exists { 200 } else { 201 },
            entry_json(&entry),
        ))
    }
}

/// Reads and discards up to `limit` bytes of a request body.
async fn drain(mut body: Incoming, limit: usize) {
    let mut seen = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen > limit {
                break;
            }
        }
    }
}

/// Streams a file's content (the blob is read in [`CHUNK`]-sized pieces on a blocking thread).
async fn get(fs: Arc<ZeroFs>, tenant: &str, path: TenantPath) -> Result<Resp, Refusal> {
    let (t, p) = (tenant.to_string(), path.clone());
    let reader = blocking(move || fs.open_read(&t, p.as_str())).await?;
    let size = reader.len();
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut reader = reader;
        loop {
            let mut buf = vec![0u8; CHUNK];
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item.map(Frame::data), rx))
    });
    let body: Body = http_body_util::StreamBody::new(stream).boxed_unsync();
    let mut resp = Response::new(body);
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(size));
    Ok(resp)
}

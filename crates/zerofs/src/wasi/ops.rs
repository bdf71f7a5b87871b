//! Path resolution, error mapping and the checks of each filesystem call: which right a call
//! needs on which path, before anything is looked up where possible.

use std::sync::{Arc, Mutex};

use wasmtime::component::Resource;

use super::file::{OpenFile, lock};
use super::types::{
    DescriptorFlags, DescriptorStat, DescriptorType, ErrorCode, MetadataHashValue, OpenFlags,
};
use super::{Descriptor, FsInstance, FsResult, FsView, Kind};
use crate::{EntryKind, Error, TenantPath};
use zero_auth::Action;

/// The WASI error for a zerofs error.
pub(super) fn code(e: &Error) -> ErrorCode {
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
pub(super) fn resolve(dir: &TenantPath, rel: &str) -> Result<TenantPath, ErrorCode> {
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

/// Borrowed view of what a host call needs.
pub(super) struct Ctx<'a> {
    pub(super) table: &'a mut wasmtime::component::ResourceTable,
    pub(super) st: &'a mut FsInstance,
    pub(super) invocation: &'a zero_provider::Invocation,
}

/// The parts of `view` the checks work on.
pub(super) fn ctx<'a>(view: &'a mut FsView<'_>) -> Ctx<'a> {
    Ctx {
        table: &mut *view.table,
        st: &mut *view.instance,
        invocation: view.invocation,
    }
}

/// The refusal of `action` on `path` in the words of the app manifest: what was not granted
/// and the `[capabilities.files]` line that grants it (the file's directory for a path that
/// looks like a file, such as `/secret/a.txt` → `"/secret"`, otherwise the path itself; `read`
/// for reading, `write` for the other actions, which `write` grants together).
pub(crate) fn refusal_hint(action: Action, path: &TenantPath) -> String {
    let what = format!("{}/{action} on {path}", super::access::FS_NAMESPACE);
    if path.is_reserved() {
        return format!(
            "not granted: {what}; the directory /.zero holds the tenant's deployed code and is \
             never granted to a component"
        );
    }
    let looks_like_file = path
        .as_str()
        .rsplit('/')
        .next()
        .is_some_and(|name| name.contains('.'));
    let grant = match path.parent() {
        Some(parent) if looks_like_file && parent != TenantPath::root() => parent,
        _ => path.clone(),
    };
    let key = if action == Action::Read {
        "read"
    } else {
        "write"
    };
    zero_provider::not_granted(
        &what,
        &format!(
            "[capabilities.files] {key} = {}",
            zero_provider::toml_list(grant.as_str())
        ),
    )
}

impl Ctx<'_> {
    pub(super) fn desc(&self, d: &Resource<Descriptor>) -> FsResult<&Descriptor> {
        self.table.get(d).map_err(|_| ErrorCode::BadDescriptor)
    }

    pub(super) fn dir(&self, d: &Resource<Descriptor>) -> FsResult<TenantPath> {
        let desc = self.desc(d)?;
        match desc.kind {
            Kind::Dir => Ok(desc.path.clone()),
            Kind::File(_) => Err(ErrorCode::NotDirectory),
        }
    }

    pub(super) fn file(
        &self,
        d: &Resource<Descriptor>,
    ) -> FsResult<(TenantPath, DescriptorFlags, Arc<Mutex<OpenFile>>)> {
        let desc = self.desc(d)?;
        match &desc.kind {
            Kind::File(f) => Ok((desc.path.clone(), desc.flags, f.clone())),
            Kind::Dir => Err(ErrorCode::IsDirectory),
        }
    }

    pub(super) fn require(&mut self, action: Action, path: &TenantPath) -> FsResult<()> {
        if self.st.access.allowed(action, path) {
            Ok(())
        } else {
            self.refused(action, path);
            Err(ErrorCode::Access)
        }
    }

    /// Logs a refusal in the app's log line, with the manifest line that grants it, once per
    /// action and path per instance (at most [`super::MAX_LOGGED_REFUSALS`] of them).
    fn refused(&mut self, action: Action, path: &TenantPath) {
        let logged = &mut self.st.logged_refusals;
        if logged.len() >= super::MAX_LOGGED_REFUSALS
            || logged.iter().any(|(a, p)| *a == action && p == path)
        {
            return;
        }
        logged.push((action, path.clone()));
        tracing::warn!(
            tenant = %self.invocation.tenant,
            app = %self.invocation.app,
            request_id = %self.invocation.request_id,
            path = %path,
            "zerofs: {}",
            refusal_hint(action, path)
        );
    }

    /// The write right on an open file, unless this descriptor created it.
    pub(super) fn require_write(
        &mut self,
        path: &TenantPath,
        file: &Mutex<OpenFile>,
    ) -> FsResult<()> {
        if lock(file).created_here {
            return Ok(());
        }
        self.require(Action::Write, path)
    }

    pub(super) fn require_visible(&mut self, path: &TenantPath) -> FsResult<()> {
        if self.st.access.visible(path) {
            Ok(())
        } else {
            self.refused(Action::Read, path);
            Err(ErrorCode::Access)
        }
    }

    /// The entry at `path` for stat-like calls, which need the read right, except on a
    /// directory that leads to a granted root (so the way down can be walked). The right is
    /// checked before the lookup where possible, so a refusal does not reveal existence.
    pub(super) fn entry_for_stat(&mut self, path: &TenantPath) -> FsResult<crate::Entry> {
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

    pub(super) fn stat_path(&mut self, path: &TenantPath) -> FsResult<DescriptorStat> {
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

    pub(super) fn hash_path(&mut self, path: &TenantPath) -> FsResult<MetadataHashValue> {
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

    pub(super) fn open_at(
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
    pub(super) fn remove_at(
        &mut self,
        d: &Resource<Descriptor>,
        path: &str,
        kind: EntryKind,
    ) -> FsResult<()> {
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

    pub(super) fn rename_at(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(action: Action, path: &str) -> String {
        refusal_hint(action, &TenantPath::parse(path).unwrap())
    }

    #[test]
    fn refusal_hints_grant_the_directory_of_a_file_or_the_path_itself() {
        assert_eq!(
            hint(Action::Read, "/secret/a.txt"),
            r#"not granted: /fs/read on /secret/a.txt; add to zero.toml: [capabilities.files] read = ["/secret"]"#
        );
        assert!(hint(Action::Create, "/uploads").ends_with(r#"write = ["/uploads"]"#));
        assert!(hint(Action::Delete, "/notes.txt").ends_with(r#"write = ["/notes.txt"]"#));
        let reserved = hint(Action::Read, "/.zero/code/x.wasm");
        assert!(
            !reserved.contains("zero.toml") && reserved.contains("never granted"),
            "{reserved}"
        );
    }

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

//! The `wasi:filesystem` host traits, implemented on the provider's view of a store.

use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;

use wasmtime::component::Resource;

use super::file::lock;
use super::ops::{code, ctx, resolve};
use super::stream::{FileInput, FileOutput, Source};
use super::types::{
    self, Advice, DescriptorFlags, DescriptorStat, DescriptorType, DirectoryEntry, ErrorCode,
    MetadataHashValue, NewTimestamp, OpenFlags, PathFlags,
};
use super::{Descriptor, DirectoryEntries, FsResult, FsView, Kind, preopens};
use crate::{EntryKind, Error, TenantPath};
use zero_auth::Action;

impl types::Host for FsView<'_> {
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

impl types::HostDescriptor for FsView<'_> {
    fn read_via_stream(
        &mut self,
        d: Resource<Descriptor>,
        offset: u64,
    ) -> wasmtime::Result<Result<Resource<wasmtime_wasi::p2::DynInputStream>, ErrorCode>> {
        let stream = (|| -> FsResult<FileInput> {
            let mut c = ctx(self);
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
        output_stream(self, d, Some(offset))
    }

    fn append_via_stream(
        &mut self,
        d: Resource<Descriptor>,
    ) -> wasmtime::Result<Result<Resource<wasmtime_wasi::p2::DynOutputStream>, ErrorCode>> {
        output_stream(self, d, None)
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
            ctx(self).file(&d)?;
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
        ok!(Ok(ctx(self).desc(&d)?.flags))
    }

    fn get_type(
        &mut self,
        d: Resource<Descriptor>,
    ) -> wasmtime::Result<Result<DescriptorType, ErrorCode>> {
        ok!(Ok(match ctx(self).desc(&d)?.kind {
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
            let mut c = ctx(self);
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
            ctx(self).desc(&d)?;
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
            let mut c = ctx(self);
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
            let mut c = ctx(self);
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
            let mut c = ctx(self);
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
            let mut c = ctx(self);
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
            let mut c = ctx(self);
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
            let mut c = ctx(self);
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
            let mut c = ctx(self);
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
            let c = ctx(self);
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
        let opened = ctx(self).open_at(&d, &path, oflags, flags);
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
        Ok(ctx(self).remove_at(&d, &path, EntryKind::Dir))
    }

    fn rename_at(
        &mut self,
        d: Resource<Descriptor>,
        old_path: String,
        new_d: Resource<Descriptor>,
        new_path: String,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        Ok(ctx(self).rename_at(&d, &old_path, &new_d, &new_path))
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
        Ok(ctx(self).remove_at(&d, &path, EntryKind::File))
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
            let mut c = ctx(self);
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
            let mut c = ctx(self);
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

impl types::HostDirectoryEntryStream for FsView<'_> {
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

impl preopens::Host for FsView<'_> {
    fn get_directories(&mut self) -> wasmtime::Result<Vec<(Resource<Descriptor>, String)>> {
        let st = &mut *self.instance;
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

/// `write-via-stream` and `append-via-stream` (`offset: None`).
fn output_stream(
    view: &mut FsView<'_>,
    d: Resource<Descriptor>,
    offset: Option<u64>,
) -> wasmtime::Result<Result<Resource<wasmtime_wasi::p2::DynOutputStream>, ErrorCode>> {
    let stream = (|| -> FsResult<FileOutput> {
        let mut c = ctx(view);
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
            Ok(Ok(view.table.push(s)?))
        }
        Err(e) => Ok(Err(e)),
    }
}

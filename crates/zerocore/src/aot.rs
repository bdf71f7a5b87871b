//! Ahead-of-time compiled artifacts on disk.
//!
//! An artifact is stored as `aot/<content-hash>-<engine-tag>.cwasm`, where the engine tag is
//! derived from wasmtime's precompile compatibility hash (wasmtime version, target, and every
//! setting that changes generated code). The file is wasmtime's serialized component followed by
//! a trailer: the SHA-256 of the artifact and the magic `ZEROAOT1`. The trailer is checked before
//! wasmtime ever sees the bytes, so a truncated, corrupted or foreign file is detected and
//! recompiled instead of being loaded blindly.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use zero_component::ContentHash;

const MAGIC: &[u8; 8] = b"ZEROAOT1";
const TRAILER_LEN: usize = 32 + MAGIC.len();

/// A `std::hash::Hasher` feeding SHA-256, so that wasmtime's compatibility hash becomes a stable
/// tag for file names.
struct ShaHasher(Sha256);

impl std::hash::Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().unwrap_or([0; 8]))
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// A short hex tag identifying an engine's code-generation settings.
pub fn engine_tag(engine: &wasmtime::Engine) -> String {
    use std::hash::Hash;
    let mut h = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    hex::encode(&h.0.finalize()[..8])
}

/// Why an artifact on disk could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The file is shorter than the trailer or lacks the magic.
    #[error("artifact has no valid zerocore trailer (truncated or foreign file)")]
    NoTrailer,
    /// The checksum does not match the content.
    #[error("artifact checksum mismatch (corrupted file)")]
    Checksum,
    /// The file could not be read.
    #[error("reading the artifact failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The directory of compiled artifacts.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    dir: PathBuf,
    tag: String,
}

impl ArtifactStore {
    /// Opens (creating it if needed) the artifact directory for an engine.
    pub fn open(dir: &Path, engine: &wasmtime::Engine) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(ArtifactStore {
            dir: dir.to_path_buf(),
            tag: engine_tag(engine),
        })
    }

    /// Where the artifact for `hash` lives.
    pub fn path(&self, hash: &ContentHash) -> PathBuf {
        self.dir
            .join(format!("{}-{}.cwasm", hash.to_hex(), self.tag))
    }

    /// Reads and checks an artifact. `Ok(None)` when there is none.
    pub fn read(&self, hash: &ContentHash) -> Result<Option<Vec<u8>>, ArtifactError> {
        let path = self.path(hash);
        let mut bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if bytes.len() < TRAILER_LEN || &bytes[bytes.len() - MAGIC.len()..] != MAGIC {
            return Err(ArtifactError::NoTrailer);
        }
        let body_len = bytes.len() - TRAILER_LEN;
        let expected = &bytes[body_len..body_len + 32];
        let actual = Sha256::digest(&bytes[..body_len]);
        if actual.as_slice() != expected {
            return Err(ArtifactError::Checksum);
        }
        bytes.truncate(body_len);
        Ok(Some(bytes))
    }

    /// Writes an artifact atomically (temporary file, fsync, rename).
    pub fn write(&self, hash: &ContentHash, artifact: &[u8]) -> std::io::Result<()> {
        let path = self.path(hash);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut f = fs::File::create(&tmp)?;
        f.write_all(artifact)?;
        f.write_all(&Sha256::digest(artifact))?;
        f.write_all(MAGIC)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &path)?;
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Removes an unusable artifact.
    pub fn remove(&self, hash: &ContentHash) {
        let _ = fs::remove_file(self.path(hash));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption_detection() {
        let dir = tempfile::tempdir().unwrap();
        let engine = wasmtime::Engine::default();
        let store = ArtifactStore::open(dir.path(), &engine).unwrap();
        let h = ContentHash([7; 32]);
        assert!(store.read(&h).unwrap().is_none());
        store.write(&h, b"compiled code").unwrap();
        assert_eq!(store.read(&h).unwrap().unwrap(), b"compiled code");

        let mut raw = fs::read(store.path(&h)).unwrap();
        raw[3] ^= 0xff;
        fs::write(store.path(&h), &raw).unwrap();
        assert!(matches!(store.read(&h), Err(ArtifactError::Checksum)));

        fs::write(store.path(&h), b"foreign").unwrap();
        assert!(matches!(store.read(&h), Err(ArtifactError::NoTrailer)));
    }
}

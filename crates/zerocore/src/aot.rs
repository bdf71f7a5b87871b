//! Ahead-of-time compiled artifacts on disk.
//!
//! An artifact is stored as `aot/<content-hash>-<engine-tag>-<key-id>.cwasm`, where the engine
//! tag is derived from wasmtime's precompile compatibility hash (wasmtime version, target, and
//! every setting that changes generated code) and the key id names the artifact key. The file is
//! wasmtime's serialized component followed by a trailer: an HMAC-SHA256, under the node's secret
//! artifact key, of the content hash, the engine tag and the artifact, then the magic
//! `ZEROAOT2`. The trailer is checked before wasmtime ever sees the bytes, so a truncated,
//! corrupted or foreign file — and any file written by someone without the key, even into a
//! shared or writable artifact directory, or an artifact renamed to another component's name —
//! is detected and recompiled instead of being loaded as native code.
//!
//! Nodes that share an artifact directory share artifacts only when they share the key file
//! (`[engine] artifact_key`); nodes with different keys keep separate files side by side.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zero_component::ContentHash;

const MAGIC: &[u8; 8] = b"ZEROAOT2";
const TRAILER_LEN: usize = 32 + MAGIC.len();
const KEY_LEN: usize = 32;

/// The secret key that authenticates compiled artifacts: 32 random bytes in a file of mode 0600.
#[derive(Clone)]
pub struct ArtifactKey([u8; KEY_LEN]);

impl std::fmt::Debug for ArtifactKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ArtifactKey({})", self.id())
    }
}

impl ArtifactKey {
    /// Reads the key at `path`, creating it (random, mode 0600) if there is none. Several
    /// processes creating it at once agree on one key: the first file linked into place wins.
    pub fn load_or_create(path: &Path) -> std::io::Result<ArtifactKey> {
        match fs::read(path) {
            Ok(bytes) => return Self::from_file(path, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let mut key = [0u8; KEY_LEN];
        getrandom::getrandom(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        {
            let mut options = fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut f = options.open(&tmp)?;
            f.write_all(&key)?;
            f.sync_all()?;
        }
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(ArtifactKey(key)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Self::from_file(path, &fs::read(path)?)
            }
            Err(e) => Err(e),
        }
    }

    fn from_file(path: &Path, bytes: &[u8]) -> std::io::Result<ArtifactKey> {
        let key: [u8; KEY_LEN] = bytes.try_into().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the artifact key {} has {} bytes, not {KEY_LEN}; remove it to let the node create a new one (compiled artifacts are then compiled again)",
                    path.display(),
                    bytes.len()
                ),
            )
        })?;
        Ok(ArtifactKey(key))
    }

    /// A key from bytes (tests and embedders that manage keys themselves).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> ArtifactKey {
        ArtifactKey(bytes)
    }

    /// A short public name of the key (hex of the first bytes of its SHA-256), used in file
    /// names so that nodes with different keys never overwrite each other's artifacts.
    pub fn id(&self) -> String {
        hex::encode(&Sha256::digest(self.0)[..4])
    }

    fn mac(&self, hash: &ContentHash, tag: &str, artifact: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(&hash.0);
        mac.update(tag.as_bytes());
        mac.update(artifact);
        mac
    }
}

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
    /// The MAC does not match: the file was corrupted, or written without this node's key.
    #[error(
        "artifact authentication failed (corrupted, or not written with this node's artifact key)"
    )]
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
    key: ArtifactKey,
}

impl ArtifactStore {
    /// Opens (creating it if needed) the artifact directory for an engine, with the key that
    /// authenticates its artifacts.
    pub fn open(dir: &Path, engine: &wasmtime::Engine, key: ArtifactKey) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(ArtifactStore {
            dir: dir.to_path_buf(),
            tag: engine_tag(engine),
            key,
        })
    }

    /// Where the artifact for `hash` lives.
    pub fn path(&self, hash: &ContentHash) -> PathBuf {
        self.dir.join(format!(
            "{}-{}-{}.cwasm",
            hash.to_hex(),
            self.tag,
            self.key.id()
        ))
    }

    /// Reads and authenticates an artifact. `Ok(None)` when there is none.
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
        self.key
            .mac(hash, &self.tag, &bytes[..body_len])
            .verify_slice(expected)
            .map_err(|_| ArtifactError::Checksum)?;
        bytes.truncate(body_len);
        Ok(Some(bytes))
    }

    /// Writes an artifact atomically (temporary file, fsync, rename).
    pub fn write(&self, hash: &ContentHash, artifact: &[u8]) -> std::io::Result<()> {
        let path = self.path(hash);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut f = fs::File::create(&tmp)?;
        f.write_all(artifact)?;
        f.write_all(
            &self
                .key
                .mac(hash, &self.tag, artifact)
                .finalize()
                .into_bytes(),
        )?;
        f.write_all(MAGIC)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &path)?;
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Removes an artifact (unusable, or of a component no longer deployed); a missing one is
    /// not an error.
    pub fn remove(&self, hash: &ContentHash) {
        let _ = fs::remove_file(self.path(hash));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path, key: u8) -> ArtifactStore {
        let engine = wasmtime::Engine::default();
        ArtifactStore::open(dir, &engine, ArtifactKey::from_bytes([key; KEY_LEN])).unwrap()
    }

    #[test]
    fn round_trip_and_corruption_detection() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path(), 1);
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

    #[test]
    fn a_forged_artifact_is_refused_without_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let ours = store(dir.path(), 1);
        let h = ContentHash([7; 32]);
        // An attacker who can write the directory but lacks the key writes "native code" with
        // the old, unkeyed trailer (SHA-256 of the body) and with a MAC under another key.
        let body = b"attacker's native code".to_vec();
        let mut forged = body.clone();
        forged.extend_from_slice(&Sha256::digest(&body));
        forged.extend_from_slice(MAGIC);
        fs::write(ours.path(&h), &forged).unwrap();
        assert!(matches!(ours.read(&h), Err(ArtifactError::Checksum)));
        let theirs = ArtifactStore {
            key: ArtifactKey::from_bytes([2; KEY_LEN]),
            ..ours.clone()
        };
        theirs.write(&h, &body).unwrap();
        fs::copy(theirs.path(&h), ours.path(&h)).unwrap();
        assert!(matches!(ours.read(&h), Err(ArtifactError::Checksum)));
        // A valid artifact of one component renamed to another's name is refused too.
        let other = ContentHash([8; 32]);
        ours.write(&other, &body).unwrap();
        fs::copy(ours.path(&other), ours.path(&h)).unwrap();
        assert!(matches!(ours.read(&h), Err(ArtifactError::Checksum)));
        // Different keys use different file names, so they never overwrite each other.
        assert_ne!(ours.path(&h), theirs.path(&h));
    }

    #[test]
    fn the_key_file_is_created_once_private_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/artifact.key");
        let a = ArtifactKey::load_or_create(&path).unwrap();
        let b = ArtifactKey::load_or_create(&path).unwrap();
        assert_eq!(a.id(), b.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        fs::write(&path, b"short").unwrap();
        let err = ArtifactKey::load_or_create(&path).unwrap_err().to_string();
        assert!(
            err.contains("5 bytes") && err.contains("remove it"),
            "{err}"
        );
    }
}

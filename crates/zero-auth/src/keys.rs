//! Ed25519 key pairs and private key files.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::did::{Did, read_uvarint};
use crate::error::Error;

/// Multicodec code of an Ed25519 private key (`ed25519-priv`), used by the UCAN fixtures.
const ED25519_PRIV: u64 = 0x1300;

/// An Ed25519 signing key and its `did:key`.
///
/// The secret never appears in `Debug` output or in error messages, and the key material is
/// wiped from memory when the value is dropped.
///
/// Key files ([`Keypair::save`], [`Keypair::load`]) are small text files: comment lines starting
/// with `#`, then one line holding the standard base64 of the 32-byte seed. They are created
/// with mode `0600` through a temporary file renamed into place, and loading refuses a file
/// that group or others may access.
#[derive(Clone)]
pub struct Keypair {
    signing: SigningKey,
    did: Did,
}

impl Keypair {
    /// Generates a new key from the operating system's random generator.
    pub fn generate() -> Result<Self, Error> {
        let seed = Zeroizing::new(random_bytes::<32>()?);
        Ok(Keypair::from_seed(&seed))
    }

    /// The key pair for a 32-byte Ed25519 seed (the RFC 8032 private key).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(seed);
        let did = Did::from_public_key(&signing.verifying_key());
        Keypair { signing, did }
    }

    /// Parses the UCAN fixtures' private key format: standard base64 (padded) of the varint
    /// multicodec `0x1300` (`ed25519-priv`, bytes `0x80 0x26`) followed by the 32-byte seed.
    pub fn from_multicodec_base64(input: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::Malformed {
            token: None,
            reason: format!("not a multicodec Ed25519 private key: {reason}"),
        };
        let bytes = Zeroizing::new(
            STANDARD
                .decode(input.trim())
                .map_err(|_| bad("invalid base64"))?,
        );
        match read_uvarint(&bytes) {
            Some((ED25519_PRIV, used)) => {
                let seed: [u8; 32] = bytes
                    .get(used..)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| bad("the key is not 32 bytes long"))?;
                let seed = Zeroizing::new(seed);
                Ok(Keypair::from_seed(&seed))
            }
            Some((code, _)) => Err(bad(&format!(
                "multicodec 0x{code:x} is not ed25519-priv (0x1300)"
            ))),
            None => Err(bad("missing multicodec prefix")),
        }
    }

    /// The private key as PKCS#8 v1 DER (RFC 8410: a fixed prefix, then the 32-byte seed), for
    /// TLS libraries that sign with it (the node's peer certificate). Zeroed when dropped.
    pub fn pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        const PREFIX: [u8; 16] = [
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        let mut der = Zeroizing::new(Vec::with_capacity(48));
        der.extend_from_slice(&PREFIX);
        der.extend_from_slice(self.signing.as_bytes());
        der
    }

    /// This key's DID.
    pub fn did(&self) -> &Did {
        &self.did
    }

    /// The public key.
    pub fn public_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// Signs a message (Ed25519, RFC 8032).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// Writes the key to `path` with mode `0600`, atomically (a temporary file in the same
    /// directory, synced, then renamed over `path`).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        let path = path.as_ref();
        let contents = self.file_contents();
        write_private_atomically(path, contents.as_bytes()).map_err(|e| Error::KeyFile {
            path: path.to_path_buf(),
            reason: format!("cannot write the key file: {e}"),
        })
    }

    /// Reads a key written by [`Keypair::save`]. Refuses a file that group or others may read,
    /// write or execute (fix with `chmod 600 FILE`).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let fail = |reason: String| Error::KeyFile {
            path: path.to_path_buf(),
            reason,
        };
        let mut file = File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
        let meta = file
            .metadata()
            .map_err(|e| fail(format!("cannot stat: {e}")))?;
        if !meta.is_file() {
            return Err(fail("not a regular file".into()));
        }
        check_private_mode(&meta).map_err(fail)?;
        if meta.len() > 4096 {
            return Err(fail("too large to be a key file".into()));
        }
        let mut text = Zeroizing::new(String::new());
        file.read_to_string(&mut text)
            .map_err(|e| fail(format!("cannot read: {e}")))?;
        Self::parse_file_contents(&text).map_err(fail)
    }

    fn file_contents(&self) -> Zeroizing<String> {
        let seed = Zeroizing::new(self.signing.to_bytes());
        let encoded = Zeroizing::new(STANDARD.encode(seed.as_slice()));
        Zeroizing::new(format!(
            "# zerocore Ed25519 secret key for {}\n\
             # format: standard base64 of the 32-byte seed; keep this file private (mode 0600)\n\
             {}\n",
            self.did,
            encoded.as_str()
        ))
    }

    fn parse_file_contents(text: &str) -> Result<Self, String> {
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        let (Some(line), None) = (lines.next(), lines.next()) else {
            return Err(
                "expected exactly one non-comment line (base64 of the 32-byte seed)".into(),
            );
        };
        let seed = Zeroizing::new(
            STANDARD
                .decode(line)
                .map_err(|_| "the key line is not valid base64".to_string())?,
        );
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
            seed.as_slice()
                .try_into()
                .map_err(|_| format!("the seed is {} bytes long, expected 32", seed.len()))?,
        );
        Ok(Keypair::from_seed(&seed))
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair")
            .field("did", &self.did)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Fills an array from the operating system's random generator.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], Error> {
    let mut out = [0u8; N];
    getrandom::getrandom(&mut out).map_err(|e| Error::Malformed {
        token: None,
        reason: format!("the operating system's random generator failed: {e}"),
    })?;
    Ok(out)
}

#[cfg(unix)]
fn check_private_mode(meta: &fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "the key file is accessible by group or others (mode {mode:04o}); \
             restrict it with `chmod 600` on this file"
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private_mode(_meta: &fs::Metadata) -> Result<(), String> {
    Err("private key files are only supported on Unix systems".into())
}

#[cfg(unix)]
fn write_private_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;

    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let suffix = random_bytes::<8>()
        .map(u64::from_le_bytes)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{suffix:016x}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        // Make the rename durable; failing to sync a directory is not fatal.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(not(unix))]
fn write_private_atomically(_path: &Path, _contents: &[u8]) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "private key files are only supported on Unix systems",
    ))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn save_load_round_trip_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.key");
        let key = Keypair::generate().unwrap();
        key.save(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = Keypair::load(&path).unwrap();
        assert_eq!(loaded.did(), key.did());
        assert_eq!(loaded.sign(b"x"), key.sign(b"x"));
        // Overwriting keeps the mode and replaces the content.
        let other = Keypair::generate().unwrap();
        other.save(&path).unwrap();
        assert_eq!(Keypair::load(&path).unwrap().did(), other.did());
        // No temporary file left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn load_refuses_group_readable_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        Keypair::generate().unwrap().save(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let err = Keypair::load(&path).unwrap_err();
        assert_eq!(err.name(), "KeyFile");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn load_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        fs::write(&path, "# comment\nnot base64!\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Keypair::load(&path).unwrap_err().name(), "KeyFile");
        fs::write(&path, "AAAA\nAAAA\n").unwrap();
        assert_eq!(Keypair::load(&path).unwrap_err().name(), "KeyFile");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = Keypair::from_seed(&[0x42; 32]);
        let debug = format!("{key:?}");
        assert!(debug.contains("redacted"));
        let secret = STANDARD.encode([0x42u8; 32]);
        assert!(!debug.contains(&secret));
        assert!(!debug.contains("66, 66"));
    }

    #[test]
    fn multicodec_private_key() {
        let key = Keypair::from_seed(&[9; 32]);
        let mut bytes = vec![0x80, 0x26];
        bytes.extend_from_slice(&[9; 32]);
        let parsed = Keypair::from_multicodec_base64(&STANDARD.encode(&bytes)).unwrap();
        assert_eq!(parsed.did(), key.did());
        bytes[0] = 0x81;
        assert!(Keypair::from_multicodec_base64(&STANDARD.encode(&bytes)).is_err());
        assert!(Keypair::from_multicodec_base64("%%%").is_err());
    }
}

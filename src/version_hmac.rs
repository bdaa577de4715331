//! Object versions for content that has no backend version id: HMAC-SHA256 under a provider key, never a
//! plain hash (a hash of a low-entropy secret can be guessed offline).
//!
//! The key comes from `--hmac-key-file` (a missing file is created with a fresh random key, mode 0600) or
//! `--hmac-key-secret` (a Kubernetes Secret every node reads, created once by the first provider that finds
//! it missing; see [`crate::kubernetes::Kubernetes::version_key_secret`]), so versions stay stable across
//! restarts and nodes. Without either a random key lives for the process, so versions change on restart
//! (harmless: the driver only rewrites files whose contents changed).

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Shortest accepted key.
pub const MIN_KEY_BYTES: usize = 32;

/// The provider's key for object versions, held as the HMAC state keyed once at start.
pub struct VersionKey(Hmac<Sha256>);

/// Why the key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum VersionKeyError {
    #[error("cannot read the HMAC key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot create the HMAC key file {path}: {source}")]
    Create {
        path: String,
        source: std::io::Error,
    },
    #[error("the HMAC key file {path} holds {len} bytes; it needs at least {MIN_KEY_BYTES}")]
    TooShort { path: String, len: usize },
    #[error("no random source: {0}")]
    Random(String),
    #[error("the HMAC key is unusable")]
    Key,
    #[error("the HMAC key Secret {secret}: {message}")]
    Secret { secret: String, message: String },
}

impl VersionKey {
    /// A random key for this process only.
    pub fn random() -> Result<Self, VersionKeyError> {
        Self::from_bytes(Self::random_bytes()?)
    }

    /// A fresh random key's bytes (for a new key file or Secret).
    pub fn random_bytes() -> Result<Zeroizing<Vec<u8>>, VersionKeyError> {
        let mut key = Zeroizing::new(vec![0u8; MIN_KEY_BYTES]);
        getrandom::fill(&mut key).map_err(|e| VersionKeyError::Random(e.to_string()))?;
        Ok(key)
    }

    /// A key from its bytes (at least [`MIN_KEY_BYTES`]).
    pub fn from_bytes(key: Zeroizing<Vec<u8>>) -> Result<Self, VersionKeyError> {
        if key.len() < MIN_KEY_BYTES {
            return Err(VersionKeyError::Key);
        }
        Hmac::<Sha256>::new_from_slice(&key)
            .map(Self)
            .map_err(|_| VersionKeyError::Key)
    }

    /// Reads the key file, or creates it with a random key when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, VersionKeyError> {
        let shown = path.display().to_string();
        match fs::read(path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                if bytes.len() < MIN_KEY_BYTES {
                    return Err(VersionKeyError::TooShort {
                        path: shown,
                        len: bytes.len(),
                    });
                }
                Self::from_bytes(bytes)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::random_bytes()?;
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|source| VersionKeyError::Create {
                        path: shown.clone(),
                        source,
                    })?;
                file.write_all(&key)
                    .map_err(|source| VersionKeyError::Create {
                        path: shown,
                        source,
                    })?;
                Self::from_bytes(key)
            }
            Err(source) => Err(VersionKeyError::Read {
                path: shown,
                source,
            }),
        }
    }

    /// The version of an object: HMAC over its length-prefixed parts (configuration and content),
    /// base64url without padding.
    pub fn version(&self, parts: &[&[u8]]) -> String {
        let mut mac = self.0.clone();
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_stable_and_content_sensitive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let first = VersionKey::load_or_create(&path).unwrap();
        let again = VersionKey::load_or_create(&path).unwrap();
        let other = VersionKey::random().unwrap();
        let parts: [&[u8]; 2] = [b"cfg", b"value"];
        assert_eq!(first.version(&parts), again.version(&parts));
        assert_ne!(first.version(&parts), other.version(&parts));
        assert_ne!(first.version(&parts), first.version(&[b"cfg", b"value2"]));
        // Length prefixes keep part boundaries: ("ab","c") differs from ("a","bc").
        assert_ne!(first.version(&[b"ab", b"c"]), first.version(&[b"a", b"bc"]));
        let mode = std::fs::metadata(&path).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
    }

    #[test]
    fn short_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(
            VersionKey::load_or_create(&path),
            Err(VersionKeyError::TooShort { len: 5, .. })
        ));
    }
}

//! The provider's Unix socket: one owner per path, stale files removed, owner-only permissions, removed
//! again on exit.
//!
//! A lock file beside the socket (`<socket>.lock`) makes a second instance on the same path refuse to
//! start instead of unlinking the first instance's live socket. A socket file that still accepts
//! connections is never removed either.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("another provider instance already serves {0} (its lock file is held)")]
    InUse(PathBuf),
    #[error("{0} accepts connections: another process serves it; refusing to replace it")]
    Live(PathBuf),
    #[error("{0} exists and is not a socket; refusing to remove it")]
    NotASocket(PathBuf),
    #[error("cannot set up the socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// The ownership of a bound provider socket path. Dropping it removes the socket file.
pub struct ProviderSocket {
    path: PathBuf,
    _lock: File,
}

impl ProviderSocket {
    /// Takes the path's lock, removes a stale socket file, binds, and restricts the socket to its owner.
    /// Must run inside a Tokio runtime.
    pub fn bind(path: &Path) -> Result<(Self, UnixListener), SocketError> {
        let io_error = |source| SocketError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(io_error)?;
        }
        let lock = take_lock(path)?;
        remove_stale(path)?;
        let listener = UnixListener::bind(path).map_err(io_error)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io_error)?;
        let socket = Self {
            path: path.to_path_buf(),
            _lock: lock,
        };
        Ok((socket, listener))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ProviderSocket {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

fn take_lock(path: &Path) -> Result<File, SocketError> {
    let lock_path = lock_path(path);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| SocketError::Io {
            path: lock_path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(SocketError::InUse(path.to_path_buf())),
        Err(fs::TryLockError::Error(source)) => Err(SocketError::Io {
            path: lock_path,
            source,
        }),
    }
}

/// Removes a socket file nobody listens on; refuses a live socket or a file that is not a socket.
fn remove_stale(path: &Path) -> Result<(), SocketError> {
    let metadata = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(SocketError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if !metadata.file_type().is_socket() {
        return Err(SocketError::NotASocket(path.to_path_buf()));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(SocketError::Live(path.to_path_buf()));
    }
    fs::remove_file(path).map_err(|source| SocketError::Io {
        path: path.to_path_buf(),
        source,
    })
}

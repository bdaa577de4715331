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
    #[error("cannot tell whether {path} is served ({source}); refusing to replace it")]
    Unprobeable { path: PathBuf, source: io::Error },
    #[error("cannot set up the socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// The ownership of a bound provider socket path. Dropping it removes the socket file, if it is still
/// the one bound (another process may have replaced it since).
pub struct ProviderSocket {
    path: PathBuf,
    /// Device, inode and change time of the socket file bound (an inode number alone may be reused
    /// by a file made after ours was removed).
    bound: Option<(u64, u64, i64, i64)>,
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
            bound: file_id(path),
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
        if self.bound.is_some() && file_id(&self.path) == self.bound {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn file_id(path: &Path) -> Option<(u64, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
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
    // Only a refused connection says nobody listens: any other failure (no permission to connect to
    // another user's socket, say) leaves the file alone.
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => return Err(SocketError::Live(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
        Err(source) => {
            return Err(SocketError::Unprobeable {
                path: path.to_path_buf(),
                source,
            });
        }
    }
    fs::remove_file(path).map_err(|source| SocketError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_socket_another_process_put_in_its_place_is_not_removed_on_exit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.sock");
        let (socket, listener) = ProviderSocket::bind(&path).unwrap();
        drop(listener);
        // The official provider restarted: it removed our file and bound its own.
        fs::remove_file(&path).unwrap();
        // File times tick coarsely (a few ms): a file made in the same tick with a reused inode number
        // would look like ours.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let theirs = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(socket);
        assert!(path.exists(), "their socket is left alone");
        assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
        drop(theirs);
        // Ours, still ours at exit, is removed.
        let (socket, _listener) = ProviderSocket::bind(&path).unwrap();
        drop(socket);
        assert!(!path.exists());
    }
}

//! Opening files confined to the file backend's root directory.
//!
//! Where the kernel has `openat2` (Linux 5.6+), objects are opened relative to the root's directory
//! descriptor with `RESOLVE_BENEATH`, so no name — not `..`, not an absolute symlink, not a symlink swapped
//! in while the mount runs — can leave the root, and one system call does the whole walk. Older kernels
//! (or a seccomp profile without `openat2`) fall back to resolving the real path and checking its prefix.
//! Files are opened non-blocking so a FIFO cannot stall a mount, and only regular files are accepted.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Why an object could not be opened.
#[derive(Debug)]
pub enum OpenError {
    NotFound,
    /// The name resolves outside the root.
    Outside,
    NotRegularFile,
    Io(io::Error),
}

/// The root directory of the file backend.
pub struct FileRoot {
    path: PathBuf,
    dir: OwnedFd,
    use_openat2: AtomicBool,
}

impl FileRoot {
    /// Opens the root (which must be a directory).
    pub fn open(path: &Path) -> io::Result<Self> {
        let path = fs::canonicalize(path)?;
        let dir = rustix::fs::open(
            &path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            path,
            dir,
            use_openat2: AtomicBool::new(true),
        })
    }

    /// The root's real path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory `name` directly beneath this one, as a root of its own: names opened in it cannot
    /// leave it, not even into its parent (one namespace's directory never reaches another's).
    pub fn subdirectory(&self, name: &str) -> Result<Self, OpenError> {
        if name.is_empty() || name.contains(['/', '\0']) || name == "." || name == ".." {
            return Err(OpenError::Outside);
        }
        let path = fs::canonicalize(self.path.join(name)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => OpenError::NotFound,
            _ => OpenError::Io(e),
        })?;
        if !path.starts_with(&self.path) || path == self.path {
            return Err(OpenError::Outside);
        }
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let dir = if self.use_openat2.load(Ordering::Relaxed) {
            let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
            match rustix::fs::openat2(&self.dir, name, flags, Mode::empty(), resolve) {
                Ok(fd) => fd,
                Err(Errno::NOSYS) | Err(Errno::PERM) => {
                    self.use_openat2.store(false, Ordering::Relaxed);
                    rustix::fs::open(&path, flags, Mode::empty()).map_err(open_errno)?
                }
                Err(e) => return Err(open_errno(e)),
            }
        } else {
            rustix::fs::open(&path, flags, Mode::empty()).map_err(open_errno)?
        };
        Ok(Self {
            path,
            dir,
            use_openat2: AtomicBool::new(self.use_openat2.load(Ordering::Relaxed)),
        })
    }

    #[cfg(test)]
    fn without_openat2(self) -> Self {
        self.use_openat2.store(false, Ordering::Relaxed);
        self
    }

    /// Opens a regular file beneath the root: the file and its size.
    pub fn open_file(&self, name: &str) -> Result<(File, u64), OpenError> {
        let file = match self.open_beneath(name) {
            Some(result) => result?,
            None => self.open_checked_path(name)?,
        };
        let metadata = file.metadata().map_err(OpenError::Io)?;
        if !metadata.is_file() {
            return Err(OpenError::NotRegularFile);
        }
        Ok((file, metadata.len()))
    }

    /// `None` when the kernel has no usable `openat2`.
    fn open_beneath(&self, name: &str) -> Option<Result<File, OpenError>> {
        if !self.use_openat2.load(Ordering::Relaxed) {
            return None;
        }
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(&self.dir, name, flags, Mode::empty(), resolve) {
            Ok(fd) => Some(Ok(File::from(fd))),
            Err(Errno::NOSYS) | Err(Errno::PERM) => {
                self.use_openat2.store(false, Ordering::Relaxed);
                None
            }
            Err(e) => Some(Err(open_errno(e))),
        }
    }

    fn open_checked_path(&self, name: &str) -> Result<File, OpenError> {
        let real = fs::canonicalize(self.path.join(name)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => OpenError::NotFound,
            _ => OpenError::Io(e),
        })?;
        if !real.starts_with(&self.path) {
            return Err(OpenError::Outside);
        }
        OpenOptions::new()
            .read(true)
            .custom_flags(OFlags::NONBLOCK.bits() as i32)
            .open(real)
            .map_err(OpenError::Io)
    }
}

fn open_errno(error: Errno) -> OpenError {
    match error {
        Errno::NOENT | Errno::NOTDIR => OpenError::NotFound,
        Errno::XDEV => OpenError::Outside,
        e => OpenError::Io(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn roots(dir: &Path) -> [FileRoot; 2] {
        [
            FileRoot::open(dir).unwrap(),
            FileRoot::open(dir).unwrap().without_openat2(),
        ]
    }

    #[test]
    fn confines_names_to_the_root_on_both_paths() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(base.path().join("outside"), "no").unwrap();
        fs::write(root.join("sub/inside"), "yes").unwrap();
        std::os::unix::fs::symlink("sub/inside", root.join("rel-link")).unwrap();
        std::os::unix::fs::symlink(base.path().join("outside"), root.join("abs-link")).unwrap();
        std::os::unix::fs::symlink("../outside", root.join("up-link")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("fifo"),
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        for root in roots(&root) {
            let (mut file, size) = root.open_file("rel-link").unwrap();
            let mut text = String::new();
            file.read_to_string(&mut text).unwrap();
            assert_eq!((text.as_str(), size), ("yes", 3));
            assert!(matches!(
                root.open_file("abs-link"),
                Err(OpenError::Outside)
            ));
            assert!(matches!(root.open_file("up-link"), Err(OpenError::Outside)));
            assert!(matches!(
                root.open_file("missing"),
                Err(OpenError::NotFound)
            ));
            assert!(matches!(
                root.open_file("sub/inside/x"),
                Err(OpenError::NotFound)
            ));
            assert!(matches!(
                root.open_file("sub"),
                Err(OpenError::NotRegularFile)
            ));
            assert!(matches!(
                root.open_file("fifo"),
                Err(OpenError::NotRegularFile)
            ));
        }
    }

    #[test]
    fn a_subdirectory_never_reaches_its_siblings() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path();
        for ns in ["team-a", "team-b"] {
            fs::create_dir(root.join(ns)).unwrap();
            fs::write(root.join(ns).join("key"), ns).unwrap();
        }
        std::os::unix::fs::symlink("../team-b/key", root.join("team-a/up-link")).unwrap();
        std::os::unix::fs::symlink(root.join("team-b/key"), root.join("team-a/abs-link")).unwrap();
        std::os::unix::fs::symlink(root.join("team-b"), root.join("team-a/dir-link")).unwrap();
        std::os::unix::fs::symlink("team-b", root.join("alias")).unwrap();
        for root in roots(root) {
            let team = root.subdirectory("team-a").unwrap();
            let (mut file, _) = team.open_file("key").unwrap();
            let mut text = String::new();
            file.read_to_string(&mut text).unwrap();
            assert_eq!(text, "team-a");
            for name in ["up-link", "abs-link", "dir-link/key", "../team-b/key"] {
                assert!(
                    matches!(team.open_file(name), Err(OpenError::Outside)),
                    "{name}"
                );
            }
            assert!(matches!(
                root.subdirectory("missing"),
                Err(OpenError::NotFound)
            ));
            for name in ["..", ".", "", "a/b"] {
                assert!(
                    matches!(root.subdirectory(name), Err(OpenError::Outside)),
                    "{name}"
                );
            }
            // An admin's alias inside the root is followed; the result is still confined to itself.
            let alias = root.subdirectory("alias").unwrap();
            assert!(alias.open_file("key").is_ok());
        }
    }
}

//! TLS material (CA bundles, client certificates and keys) read from files, for every backend.
//!
//! Who names a file decides how it is read. A path from the provider's own flags or environment is the
//! admin's and is read as given. A path from a SecretProviderClass parameter is the pod author's: it is
//! honoured only beneath the directory the admin names with `--tls-files-dir`, resolved without leaving it
//! (no `..`, no symlink out), and refused with the same answer whether or not the file exists outside it.
//! Either way a file is opened non-blocking, must be a regular file, and is read only up to
//! [`MAX_TLS_FILE_BYTES`], so no path (`/dev/zero`, a FIFO, a directory) can stall or exhaust the node.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::OFlags;
use zeroize::Zeroizing;

use crate::backend::file_root::{FileRoot, OpenError};
use crate::error::{ErrorKind, MountError, MountResult, Reason};

/// Largest TLS file read.
pub const MAX_TLS_FILE_BYTES: u64 = 1024 * 1024;
/// Most files read from one CA directory.
pub const MAX_CA_DIRECTORY_FILES: usize = 256;
/// The flag that names the directory pods' TLS paths must stay in.
pub const TLS_FILES_DIR_FLAG: &str = "--tls-files-dir";

/// A TLS file as a setting names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsFile {
    pub path: String,
    /// The parameter (pod) or flag (admin) that named it, for messages.
    pub named_by: String,
    /// Whether a SecretProviderClass parameter named it (then it is confined to `--tls-files-dir`).
    pub from_pod: bool,
}

/// The directory pods' TLS paths must resolve beneath, as the admin named it and opened.
pub struct TlsFilesDir {
    named: PathBuf,
    root: FileRoot,
}

impl std::fmt::Debug for TlsFilesDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TlsFilesDir").field(&self.named).finish()
    }
}

impl TlsFilesDir {
    /// Opens the admin's directory (at start).
    pub fn open(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            named: path.to_path_buf(),
            root: FileRoot::open(path)?,
        })
    }

    /// The part of a pod's absolute `path` below this directory, or `None` when it is not below it.
    fn relative<'a>(&self, path: &'a str) -> Option<&'a Path> {
        let path = Path::new(path);
        if !path.is_absolute()
            || path
                .components()
                .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        {
            return None;
        }
        [&self.named, self.root.path()]
            .into_iter()
            .find_map(|dir| path.strip_prefix(dir).ok())
            .filter(|rest| rest.components().next().is_some())
    }
}

fn not_allowed(file: &TlsFile, dir: Option<&TlsFilesDir>) -> MountError {
    let why = match dir {
        None => format!(
            "the provider takes no TLS file paths from SecretProviderClasses: its admin can allow a \
             directory with {TLS_FILES_DIR_FLAG}, or set the provider's own TLS flags"
        ),
        Some(dir) => format!(
            "TLS file paths from SecretProviderClasses must be absolute and lie beneath the provider's \
             {TLS_FILES_DIR_FLAG} {}",
            dir.named.display()
        ),
    };
    MountError::new(
        ErrorKind::PermissionDenied,
        Reason::TlsFileNotAllowed,
        format!("{} {:?}: {why}", file.named_by, file.path),
    )
}

/// Checks, without touching the file system, that a pod may name `file` (an admin's file always may).
/// The answer is the same whether or not the file exists.
pub fn check_allowed(file: &TlsFile, dir: Option<&TlsFilesDir>) -> MountResult<()> {
    if !file.from_pod {
        return Ok(());
    }
    match dir {
        Some(d) if d.relative(&file.path).is_some() => Ok(()),
        _ => Err(not_allowed(file, dir)),
    }
}

fn unusable(file: &TlsFile, why: impl std::fmt::Display) -> MountError {
    MountError::new(
        ErrorKind::FailedPrecondition,
        Reason::TlsFileUnusable,
        format!("{} {:?} {why}", file.named_by, file.path),
    )
}

fn open_error(file: &TlsFile, error: OpenError) -> MountError {
    match error {
        OpenError::NotFound => unusable(file, "does not exist"),
        OpenError::Outside => unusable(
            file,
            format!("resolves outside {TLS_FILES_DIR_FLAG} (through a symlink)"),
        ),
        OpenError::NotRegularFile => unusable(file, "is not a regular file"),
        OpenError::Io(e) => unusable(file, format!("cannot be opened: {}", e.kind())),
    }
}

/// Opens an admin's path: non-blocking (a FIFO cannot stall), regular files only.
fn open_unconfined(path: &Path) -> Result<(File, u64), OpenError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags((OFlags::NONBLOCK | OFlags::NOCTTY).bits() as i32)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => OpenError::NotFound,
            _ => OpenError::Io(e),
        })?;
    let metadata = file.metadata().map_err(OpenError::Io)?;
    if !metadata.is_file() {
        return Err(OpenError::NotRegularFile);
    }
    Ok((file, metadata.len()))
}

fn open(file: &TlsFile, dir: Option<&TlsFilesDir>) -> MountResult<(File, u64)> {
    check_allowed(file, dir)?;
    let opened = match dir.filter(|_| file.from_pod) {
        Some(dir) => {
            let relative = dir
                .relative(&file.path)
                .ok_or_else(|| not_allowed(file, Some(dir)))?;
            dir.root.open_file(&relative.to_string_lossy())
        }
        None => open_unconfined(Path::new(&file.path)),
    };
    opened.map_err(|e| open_error(file, e))
}

/// Reads one TLS file (blocking: call from a blocking context).
pub fn read(file: &TlsFile, dir: Option<&TlsFilesDir>) -> MountResult<Zeroizing<Vec<u8>>> {
    let (handle, size) = open(file, dir)?;
    if size > MAX_TLS_FILE_BYTES {
        return Err(unusable(
            file,
            format!("is larger than {MAX_TLS_FILE_BYTES} bytes"),
        ));
    }
    let mut contents = Zeroizing::new(Vec::with_capacity(size as usize));
    handle
        .take(MAX_TLS_FILE_BYTES)
        .read_to_end(&mut contents)
        .map_err(|e| unusable(file, format!("cannot be read: {}", e.kind())))?;
    Ok(contents)
}

/// Reads every regular file of a CA directory (at most [`MAX_CA_DIRECTORY_FILES`]); entries that are not
/// regular files are skipped. Blocking.
pub fn read_directory(
    directory: &TlsFile,
    dir: Option<&TlsFilesDir>,
) -> MountResult<Vec<Zeroizing<Vec<u8>>>> {
    check_allowed(directory, dir)?;
    let listed = match dir.filter(|_| directory.from_pod) {
        Some(dir) => {
            let relative = dir
                .relative(&directory.path)
                .ok_or_else(|| not_allowed(directory, Some(dir)))?;
            let real = fs::canonicalize(dir.root.path().join(relative))
                .map_err(|e| unusable(directory, format!("cannot be opened: {}", e.kind())))?;
            if !real.starts_with(dir.root.path()) {
                return Err(open_error(directory, OpenError::Outside));
            }
            real
        }
        None => PathBuf::from(&directory.path),
    };
    let entries = fs::read_dir(&listed).map_err(|e| {
        unusable(
            directory,
            format!("is not a readable directory: {}", e.kind()),
        )
    })?;
    let mut contents = Vec::new();
    for entry in entries.flatten().take(MAX_CA_DIRECTORY_FILES) {
        let file = TlsFile {
            path: Path::new(&directory.path)
                .join(entry.file_name())
                .to_string_lossy()
                .into_owned(),
            named_by: directory.named_by.clone(),
            from_pod: directory.from_pod,
        };
        match read(&file, dir) {
            Ok(pem) => contents.push(pem),
            Err(error) if error.kind == ErrorKind::FailedPrecondition => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(path: &str) -> TlsFile {
        TlsFile {
            path: path.into(),
            named_by: "vaultCACertPath".into(),
            from_pod: true,
        }
    }

    #[test]
    fn pod_paths_stay_in_the_admins_directory() {
        let base = tempfile::tempdir().unwrap();
        let allowed = base.path().join("tls");
        fs::create_dir(&allowed).unwrap();
        fs::write(allowed.join("ca.crt"), b"pem").unwrap();
        fs::write(base.path().join("secret"), b"no").unwrap();
        std::os::unix::fs::symlink(base.path().join("secret"), allowed.join("out")).unwrap();
        fs::write(
            allowed.join("big"),
            vec![b'x'; MAX_TLS_FILE_BYTES as usize + 1],
        )
        .unwrap();
        let dir = TlsFilesDir::open(&allowed).unwrap();
        let inside = |name: &str| pod(&allowed.join(name).to_string_lossy());
        assert_eq!(
            read(&inside("ca.crt"), Some(&dir)).unwrap().as_slice(),
            b"pem"
        );
        let outside = [
            "/etc/passwd".to_string(),
            "/dev/zero".to_string(),
            base.path().join("secret").to_string_lossy().into_owned(),
            format!("{}/../secret", allowed.display()),
            "relative/ca.crt".to_string(),
            allowed.to_string_lossy().into_owned(),
        ];
        for path in &outside {
            let error = read(&pod(path), Some(&dir)).unwrap_err();
            assert_eq!(error.kind, ErrorKind::PermissionDenied, "{path}");
            assert!(error.message.contains(TLS_FILES_DIR_FLAG), "{error}");
        }
        let missing_outside = read(&pod("/nonexistent/ca"), Some(&dir)).unwrap_err();
        let present_outside = read(&pod("/etc/passwd"), Some(&dir)).unwrap_err();
        assert_eq!(
            missing_outside.message.replace("/nonexistent/ca", "P"),
            present_outside.message.replace("/etc/passwd", "P"),
            "existence outside the directory is not revealed"
        );
        for name in ["out", "big", "missing"] {
            let error = read(&inside(name), Some(&dir)).unwrap_err();
            assert_eq!(error.kind, ErrorKind::FailedPrecondition, "{name}: {error}");
        }
        let error = read(&pod("/etc/hostname"), None).unwrap_err();
        assert_eq!(error.kind, ErrorKind::PermissionDenied);
    }

    #[test]
    fn admin_paths_are_bounded_and_never_block() {
        let admin = |path: &str| TlsFile {
            path: path.into(),
            named_by: "--vault-ca-cert".into(),
            from_pod: false,
        };
        let base = tempfile::tempdir().unwrap();
        let fifo = base.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        for path in ["/dev/zero", &fifo.to_string_lossy(), "/tmp", "/nonexistent"] {
            let error = read(&admin(path), None).unwrap_err();
            assert_eq!(error.kind, ErrorKind::FailedPrecondition, "{path}");
        }
    }
}

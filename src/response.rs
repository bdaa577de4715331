//! The Mount response: files and object versions, validated exactly as the driver validates them before
//! anything is returned, and bounded in size.
//!
//! [`validate_file_path`] is the driver's path rule; the `mount` emulator uses it too.

use std::collections::BTreeSet;

use prost::Message;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{MountError, MountResult, Reason};
use crate::proto;

/// The driver's limit on a whole path.
pub const MAX_PATH_BYTES: usize = 4096;
/// The driver's limit on one path component.
pub const MAX_COMPONENT_BYTES: usize = 255;
/// The driver's default `--max-call-recv-msg-size`.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// One file for the driver to write into the volume.
pub struct MountedFile {
    /// Relative, clean path inside the mount.
    pub path: String,
    /// Permission bits, 0..=0o777.
    pub mode: u32,
    pub contents: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for MountedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountedFile")
            .field("path", &self.path)
            .field("mode", &format_args!("{:04o}", self.mode))
            .field("bytes", &self.contents.len())
            .finish()
    }
}

/// The version of one mounted object: a backend version id or a keyed HMAC, never a plain hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    pub id: String,
    pub version: String,
}

/// What a backend fetched for one mount.
#[derive(Debug, Default)]
pub struct MountResponse {
    pub files: Vec<MountedFile>,
    pub versions: Vec<ObjectVersion>,
    /// The files of required objects the backend does not have (only for requests with
    /// `report_missing`, which skip them instead of failing; never sent to the driver). Absent optional
    /// objects are skipped without a trace.
    pub missing: Vec<String>,
    /// The files of optional objects the backend does not have (never sent to the driver).
    pub skipped: Vec<String>,
    /// The backend said every object is at the caller's previous version: no files were read (only
    /// for requests with `probe`; never sent to the driver).
    pub unchanged: bool,
}

impl MountResponse {
    /// Checks every rule the driver applies and the size limit, then builds the wire message.
    pub fn into_proto(self, max_bytes: usize) -> MountResult<proto::MountResponse> {
        self.validate()?;
        let mut message = proto::MountResponse {
            object_version: self
                .versions
                .into_iter()
                .map(|v| proto::ObjectVersion {
                    id: v.id,
                    version: v.version,
                })
                .collect(),
            error: None,
            files: self
                .files
                .into_iter()
                .map(|mut f| proto::File {
                    path: f.path,
                    mode: f.mode as i32,
                    contents: std::mem::take(&mut *f.contents),
                })
                .collect(),
        };
        let encoded = message.encoded_len();
        if encoded > max_bytes {
            let sizes = message
                .files
                .iter()
                .map(|f| (f.path.as_str(), f.contents.len() as u64))
                .collect();
            let error = too_large(encoded as u64, max_bytes, sizes);
            message.files.iter_mut().for_each(|f| f.contents.zeroize());
            return Err(error);
        }
        Ok(message)
    }

    /// The driver's rules: clean relative paths, no duplicates, modes in range, at least one version.
    pub fn validate(&self) -> MountResult<()> {
        for file in &self.files {
            check_output_path("file path", &file.path)?;
            if file.mode > 0o777 {
                return Err(MountError::invalid(
                    Reason::InvalidFileMode,
                    format!("file {:?} has mode {:o}, over 0777", file.path, file.mode),
                ));
            }
        }
        check_distinct_files(self.files.iter().map(|f| f.path.as_str()))?;
        validate_versions(&self.versions)
    }
}

/// No two files with one path, and no file where another needs a directory.
pub fn check_distinct_files<'a>(paths: impl IntoIterator<Item = &'a str>) -> MountResult<()> {
    let mut seen = BTreeSet::new();
    for path in paths {
        if !seen.insert(path) {
            return Err(MountError::invalid(
                Reason::DuplicateFilePath,
                format!("two objects write the file {path:?}: give each a distinct path"),
            ));
        }
    }
    reject_file_directory_clash(&seen)
}

/// `a` and `a/b` cannot both be written: `a` would have to be a file and a directory.
fn reject_file_directory_clash(paths: &BTreeSet<&str>) -> MountResult<()> {
    for path in paths {
        let mut prefix_end = 0;
        while let Some(slash) = path[prefix_end..].find('/') {
            prefix_end += slash;
            let parent = &path[..prefix_end];
            if paths.contains(parent) {
                return Err(MountError::invalid(
                    Reason::DuplicateFilePath,
                    format!("{parent:?} is a file, so {path:?} cannot be written below it"),
                ));
            }
            prefix_end += 1;
        }
    }
    Ok(())
}

fn validate_versions(versions: &[ObjectVersion]) -> MountResult<()> {
    if versions.is_empty() {
        return Err(MountError::internal(
            Reason::MissingObjectVersions,
            "the backend returned no object versions (the driver refuses such a response)",
        ));
    }
    let mut ids = BTreeSet::new();
    for version in versions {
        if version.id.is_empty() || !ids.insert(version.id.as_str()) {
            return Err(MountError::internal(
                Reason::InvalidObjectVersions,
                format!("object version id {:?} is empty or repeated", version.id),
            ));
        }
    }
    Ok(())
}

/// The error for a response over the limit, naming its three largest objects.
pub fn too_large(total: u64, max_bytes: usize, mut sizes: Vec<(&str, u64)>) -> MountError {
    sizes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let largest: Vec<String> = sizes
        .iter()
        .take(3)
        .map(|(name, size)| format!("{name} ({size} bytes)"))
        .collect();
    MountError::exhausted(
        Reason::ResponseTooLarge,
        format!(
            "the mount response would be {total} bytes, over the limit of {max_bytes} bytes \
             (--max-response-bytes; the driver's --max-call-recv-msg-size must be at least as large); \
             largest objects: {}",
            largest.join(", ")
        ),
    )
}

/// [`validate_file_path`] as a Mount error naming where the path came from (`objects[2].path`, …).
pub fn check_output_path(field: &str, path: &str) -> MountResult<()> {
    validate_file_path(path).map_err(|why| {
        MountError::invalid(Reason::InvalidFilePath, format!("{field} {path:?} {why}"))
    })
}

/// The driver's rule for a file path (secrets-store-csi-driver `validateFilePath`), plus no NUL byte.
/// Returns why the path is refused.
pub fn validate_file_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("is empty");
    }
    if path.starts_with('/') {
        return Err("is absolute: it must be relative to the mount");
    }
    if path.len() > MAX_PATH_BYTES {
        return Err("is longer than 4096 bytes");
    }
    if path.contains('\0') {
        return Err("contains a NUL byte");
    }
    let components: Vec<&str> = path.split('/').collect();
    if components[0].starts_with("..") {
        return Err("starts with '..', which the driver reserves for its own entries");
    }
    for component in &components {
        match *component {
            "" => return Err("is not clean: it has an empty component ('a//b' or a trailing '/')"),
            "." => return Err("is not clean: it has a '.' component"),
            ".." => return Err("has a '..' component"),
            c if c.len() > MAX_COMPONENT_BYTES => {
                return Err("has a component longer than 255 bytes");
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, mode: u32, contents: &[u8]) -> MountedFile {
        MountedFile {
            path: path.into(),
            mode,
            contents: Zeroizing::new(contents.to_vec()),
        }
    }

    fn version(id: &str) -> ObjectVersion {
        ObjectVersion {
            id: id.into(),
            version: "v".into(),
        }
    }

    #[test]
    fn driver_path_rules() {
        for good in ["foo", "foo/bar", "a.b", "dir/..x", ".hidden", "x/y/z"] {
            assert_eq!(validate_file_path(good), Ok(()), "{good}");
        }
        let long_component = "a".repeat(256);
        let long_path = "a/".repeat(2049);
        for bad in [
            "",
            "/dev/null",
            "..sneaky.txt",
            "foo/../etc/password",
            "foo////bar",
            "./foo",
            "foo/",
            "a/./b",
            "..",
            long_component.as_str(),
            long_path.as_str(),
            "a\0b",
        ] {
            assert!(validate_file_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rejects_duplicates_clashes_modes_and_missing_versions() {
        let dup = MountResponse {
            missing: Vec::new(),
            skipped: Vec::new(),
            unchanged: false,
            files: vec![file("a", 0o644, b"1"), file("a", 0o644, b"2")],
            versions: vec![version("x")],
        };
        assert_eq!(
            dup.validate().unwrap_err().reason,
            Reason::DuplicateFilePath
        );
        let clash = MountResponse {
            missing: Vec::new(),
            skipped: Vec::new(),
            unchanged: false,
            files: vec![file("a", 0o644, b"1"), file("a/b", 0o644, b"2")],
            versions: vec![version("x")],
        };
        assert_eq!(
            clash.validate().unwrap_err().reason,
            Reason::DuplicateFilePath
        );
        let mode = MountResponse {
            missing: Vec::new(),
            skipped: Vec::new(),
            unchanged: false,
            files: vec![file("a", 0o1000, b"1")],
            versions: vec![version("x")],
        };
        assert_eq!(mode.validate().unwrap_err().reason, Reason::InvalidFileMode);
        let none = MountResponse {
            missing: Vec::new(),
            skipped: Vec::new(),
            unchanged: false,
            files: vec![file("a", 0o644, b"1")],
            versions: vec![],
        };
        assert_eq!(
            none.validate().unwrap_err().reason,
            Reason::MissingObjectVersions
        );
    }

    #[test]
    fn size_limit_names_the_largest_objects() {
        let response = MountResponse {
            missing: Vec::new(),
            skipped: Vec::new(),
            unchanged: false,
            files: vec![
                file("small", 0o644, &[0; 10]),
                file("big", 0o644, &[0; 3000]),
                file("medium", 0o644, &[0; 500]),
            ],
            versions: vec![version("x")],
        };
        let error = response.into_proto(1024).unwrap_err();
        assert_eq!(error.reason, Reason::ResponseTooLarge);
        let big = error.message.find("big (3000 bytes)").unwrap();
        let medium = error.message.find("medium (500 bytes)").unwrap();
        assert!(big < medium, "{}", error.message);
    }

    #[test]
    fn converts_to_the_wire_message() {
        let response = MountResponse {
            missing: Vec::new(),
            skipped: Vec::new(),
            unchanged: false,
            files: vec![file("dir/key", 0o440, b"value")],
            versions: vec![version("file/dir/key")],
        };
        let message = response.into_proto(DEFAULT_MAX_RESPONSE_BYTES).unwrap();
        assert_eq!(message.files[0].mode, 0o440);
        assert_eq!(message.files[0].contents, b"value");
        assert_eq!(message.object_version[0].id, "file/dir/key");
    }
}

//! The `file` backend: objects are files under the admin's `--file-root`, never outside it.
//!
//! Layout ([`FileLayout`]): by default a pod reads only `<file-root>/<its namespace>/`, the namespace as
//! kubelet reports it, and nothing — not `..`, not a symlink — leads out of that directory into another
//! namespace's. `--file-layout shared` serves the whole root to every pod (single-tenant clusters only).
//!
//! Parameters: `objects`, a YAML list of `objectName` (path relative to that directory), optional `path`
//! (output file name, nested allowed, default `objectName`), optional `filePermission` (see
//! [`crate::file_mode`]) and optional `optional: true` (a missing file is skipped). Names with `..`,
//! absolute names and names that resolve through a symlink out of the root are refused. Versions are a
//! keyed HMAC of each object's configuration and content.

use std::fs;
use std::io::Read;
use std::path::{Component, Path};
use std::sync::Arc;

use serde::Deserialize;
use zeroize::Zeroizing;

use super::fetch::{ResponseBuilder, Versions};
use super::file_root::{FileRoot, OpenError};
use super::objects::ObjectListCache;
use super::{Backend, BoxFuture, BuildError, COMMON_PARAMETERS, SharedParts};
use crate::error::{ErrorKind, MountError, MountResult, Reason};
use crate::file_mode::FileMode;
use crate::request::{MountRequest, is_namespace_name};
use crate::response::{MountResponse, check_distinct_files, check_output_path, too_large};
use crate::version_hmac::VersionKey;

/// How the file root is divided between pods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FileLayout {
    /// `<file-root>/<pod namespace>/<objectName>`: a pod reads only its own namespace's directory.
    #[default]
    PerNamespace,
    /// `<file-root>/<objectName>`: every pod reads the whole root (single-tenant clusters only).
    Shared,
}

/// The file backend's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct FileFlags {
    /// Root directory of the file backend; without it the file backend refuses mounts.
    #[arg(long, env = "OPENCLAW_FILE_ROOT")]
    pub file_root: Option<std::path::PathBuf>,
    /// `per-namespace`: a pod reads only <file-root>/<its namespace>/. `shared`: every pod reads the
    /// whole root (single-tenant clusters only).
    #[arg(
        long,
        env = "OPENCLAW_FILE_LAYOUT",
        value_enum,
        default_value = "per-namespace"
    )]
    pub file_layout: FileLayout,
}

/// One entry of `objects`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileObject {
    object_name: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    file_permission: Option<FileMode>,
    #[serde(default)]
    optional: bool,
}

/// An object checked and resolved, ready to read.
struct PlannedObject {
    object_name: String,
    output_path: String,
    mode: u32,
    optional: bool,
    /// Listed in the response's `missing` when absent (a required object, with `report_missing`).
    reported: bool,
}

/// Reads objects from a directory the provider's admin chose.
pub struct FileBackend {
    /// The root, or `None` when the provider was started without `--file-root`.
    root: Option<Arc<FileRoot>>,
    layout: FileLayout,
    versions: Versions,
    objects: ObjectListCache<FileObject>,
    max_response_bytes: usize,
}

impl FileBackend {
    pub fn new(
        root: Option<FileRoot>,
        layout: FileLayout,
        versions: Arc<VersionKey>,
        max_objects: usize,
        max_response_bytes: usize,
    ) -> Self {
        Self {
            root: root.map(Arc::new),
            layout,
            versions: Versions::new(versions, "file"),
            objects: ObjectListCache::new(max_objects),
            max_response_bytes,
        }
    }

    /// The backend as the flags configure it.
    pub fn from_flags(flags: &FileFlags, shared: &SharedParts) -> Result<Self, BuildError> {
        let root = match &flags.file_root {
            Some(path) => Some(super::open_directory("--file-root", path, FileRoot::open)?),
            None => None,
        };
        Ok(Self::new(
            root,
            flags.file_layout,
            shared.versions.clone(),
            shared.max_objects,
            shared.max_response_bytes,
        ))
    }

    fn plan(&self, request: &MountRequest) -> MountResult<Vec<PlannedObject>> {
        let objects = self.objects.parse(request)?;
        objects
            .iter()
            .enumerate()
            .map(|(index, object)| {
                check_object_name(index, &object.object_name)?;
                let output_path = object
                    .path
                    .clone()
                    .unwrap_or_else(|| object.object_name.clone());
                check_output_path(&format!("objects[{index}].path"), &output_path)?;
                Ok(PlannedObject {
                    output_path,
                    mode: FileMode::or_default(object.file_permission, request.default_mode),
                    object_name: object.object_name.clone(),
                    optional: object.optional || request.fetch.report_missing,
                    reported: !object.optional && request.fetch.report_missing,
                })
            })
            .collect()
    }
}

impl Backend for FileBackend {
    fn name(&self) -> &'static str {
        "file"
    }

    fn mount<'a>(&'a self, request: &'a MountRequest) -> BoxFuture<'a, MountResult<MountResponse>> {
        Box::pin(async move {
            let root = self.root()?;
            let plan = self.plan(request)?;
            let namespace = match self.layout {
                FileLayout::Shared => None,
                FileLayout::PerNamespace => Some(pod_namespace(request)?.to_string()),
            };
            let max_bytes = self.max_response_bytes;
            let contents = tokio::task::spawn_blocking(move || {
                let root = match namespace {
                    None => Some(root),
                    Some(namespace) => namespace_root(&root, &namespace)?.map(Arc::new),
                };
                read_objects(root.as_deref(), &plan, max_bytes).map(|c| (plan, c))
            })
            .await
            .map_err(|_| {
                MountError::internal(Reason::ReadFailed, "the file reader task failed")
            })??;
            Ok(self.respond(contents.0, contents.1))
        })
    }

    fn parameter_names(&self) -> Vec<String> {
        COMMON_PARAMETERS.iter().map(|k| k.to_string()).collect()
    }

    fn check(&self, request: &MountRequest) -> MountResult<()> {
        self.root()?;
        let plan = self.plan(request)?;
        check_distinct_files(plan.iter().map(|object| object.output_path.as_str()))
    }
}

impl FileBackend {
    /// The root, or why there is none.
    fn root(&self) -> MountResult<Arc<FileRoot>> {
        self.root.clone().ok_or_else(|| {
            MountError::new(
                ErrorKind::FailedPrecondition,
                Reason::FileBackendDisabled,
                "the file backend is off on this node: the provider was started without --file-root",
            )
        })
    }

    fn respond(
        &self,
        plan: Vec<PlannedObject>,
        contents: Vec<Option<Zeroizing<Vec<u8>>>>,
    ) -> MountResponse {
        let mut response = ResponseBuilder::new(self.versions.clone(), plan.len());
        for (object, content) in plan.into_iter().zip(contents) {
            let Some(content) = content else {
                response.missing(object.output_path, object.reported);
                continue;
            };
            let mode = object.mode.to_string();
            let version = response.versions().keyed(
                &[
                    object.object_name.as_bytes(),
                    object.output_path.as_bytes(),
                    mode.as_bytes(),
                ],
                &content,
            );
            let id = format!("file/{}", object.output_path);
            response.push(id, version, object.output_path, object.mode, content);
        }
        response.finish()
    }
}

/// The pod's namespace as kubelet reported it; a mount without one has no directory to read.
fn pod_namespace(request: &MountRequest) -> MountResult<&str> {
    let namespace = request.pod.namespace.as_str();
    if namespace.is_empty() {
        return Err(MountError::new(
            ErrorKind::FailedPrecondition,
            Reason::MissingPodInfo,
            "the driver sent no pod namespace, and the file backend serves each namespace its own \
             directory: the CSIDriver secrets-store.csi.k8s.io needs podInfoOnMount: true",
        ));
    }
    if !is_namespace_name(namespace) {
        let shown: String = namespace.chars().take(64).collect();
        return Err(MountError::invalid(
            Reason::InvalidPodInfo,
            format!("pod namespace {shown:?} is not a Kubernetes namespace name"),
        ));
    }
    Ok(namespace)
}

/// `<root>/<namespace>`, confined to itself; `None` when the admin made no directory for the namespace.
fn namespace_root(root: &FileRoot, namespace: &str) -> MountResult<Option<FileRoot>> {
    match root.subdirectory(namespace) {
        Ok(dir) => Ok(Some(dir)),
        Err(OpenError::NotFound) => Ok(None),
        Err(OpenError::Outside) => Err(MountError::invalid(
            Reason::InvalidPodInfo,
            format!(
                "the directory of namespace {namespace:?} resolves outside the provider's file root"
            ),
        )),
        Err(OpenError::NotRegularFile) => Ok(None),
        Err(OpenError::Io(e)) => Err(io_error(namespace, &e)),
    }
}

/// `objectName` must name a path inside the root: relative, no `..`, no `.`-only or empty names.
fn check_object_name(index: usize, name: &str) -> MountResult<()> {
    let refuse = |why: &str| {
        MountError::invalid(
            Reason::InvalidObjectName,
            format!("objects[{index}].objectName {name:?} {why}"),
        )
    };
    if name.trim().is_empty() {
        return Err(refuse("is empty"));
    }
    if name.contains('\0') {
        return Err(refuse("contains a NUL byte"));
    }
    let path = Path::new(name);
    if path.is_absolute() {
        return Err(refuse(
            "is absolute: name a file relative to the provider's --file-root",
        ));
    }
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(refuse(
            "contains '..': objects must stay inside the provider's --file-root",
        ));
    }
    if !path.components().any(|c| matches!(c, Component::Normal(_))) {
        return Err(refuse("names no file"));
    }
    Ok(())
}

/// Opens every object first (so size limits are checked before anything is read), then reads them.
fn read_objects(
    root: Option<&FileRoot>,
    plan: &[PlannedObject],
    max_bytes: usize,
) -> MountResult<Vec<Option<Zeroizing<Vec<u8>>>>> {
    let mut opened = Vec::with_capacity(plan.len());
    let mut total: u64 = 0;
    for object in plan {
        let found = open_object(root, object)?;
        if let Some((_, size)) = &found {
            total = total.saturating_add(*size);
        }
        opened.push(found);
    }
    if total > max_bytes as u64 {
        return Err(objects_too_large(plan, &opened, total, max_bytes));
    }
    plan.iter()
        .zip(opened)
        .map(|(object, found)| match found {
            None => Ok(None),
            Some((file, size)) => read_bounded(file, size, object).map(Some),
        })
        .collect()
}

/// The open file and its size, `None` for a missing optional object.
fn open_object(
    root: Option<&FileRoot>,
    object: &PlannedObject,
) -> MountResult<Option<(fs::File, u64)>> {
    let name = &object.object_name;
    let opened = root.map_or(Err(OpenError::NotFound), |root| root.open_file(name));
    match opened {
        Ok(found) => Ok(Some(found)),
        Err(OpenError::NotFound) if object.optional => Ok(None),
        Err(OpenError::NotFound) => Err(MountError::not_found(
            Reason::ObjectNotFound,
            format!(
                "object {name:?} does not exist in the directory this pod reads (the provider's --file-root, \
                 then the pod's namespace unless --file-layout is shared); mark it optional: true to skip it"
            ),
        )),
        Err(OpenError::Outside) => Err(MountError::invalid(
            Reason::InvalidObjectName,
            format!(
                "object {name:?} resolves outside the directory this pod reads (through a symlink)"
            ),
        )),
        Err(OpenError::NotRegularFile) => Err(MountError::invalid(
            Reason::InvalidObjectName,
            format!("object {name:?} is not a regular file"),
        )),
        Err(OpenError::Io(e)) => Err(io_error(name, &e)),
    }
}

fn read_bounded(
    file: fs::File,
    size: u64,
    object: &PlannedObject,
) -> MountResult<Zeroizing<Vec<u8>>> {
    let mut contents = Zeroizing::new(Vec::with_capacity(size as usize));
    // The file may grow between stat and read: never read past what was sized.
    file.take(size)
        .read_to_end(&mut contents)
        .map_err(|e| io_error(&object.object_name, &e))?;
    Ok(contents)
}

fn io_error(name: &str, error: &std::io::Error) -> MountError {
    let kind = match error.kind() {
        std::io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        _ => ErrorKind::Internal,
    };
    MountError::new(
        kind,
        Reason::ReadFailed,
        format!(
            "cannot read object {name:?} from the provider's file root: {}",
            error.kind()
        ),
    )
}

fn objects_too_large(
    plan: &[PlannedObject],
    opened: &[Option<(fs::File, u64)>],
    total: u64,
    max_bytes: usize,
) -> MountError {
    let sizes = plan
        .iter()
        .zip(opened)
        .filter_map(|(object, found)| {
            found
                .as_ref()
                .map(|(_, size)| (object.object_name.as_str(), *size))
        })
        .collect();
    too_large(total, max_bytes, sizes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn backend(root: &Path) -> FileBackend {
        FileBackend::new(
            Some(FileRoot::open(root).unwrap()),
            FileLayout::Shared,
            Arc::new(VersionKey::random().unwrap()),
            10,
            1024,
        )
    }

    fn request(objects: &str) -> MountRequest {
        MountRequest {
            parameters: BTreeMap::from([("objects".to_string(), objects.to_string())]),
            default_mode: 0o644,
            ..Default::default()
        }
    }

    async fn mount(backend: &FileBackend, objects: &str) -> MountResult<MountResponse> {
        backend.mount(&request(objects)).await
    }

    #[tokio::test]
    async fn reads_files_with_paths_modes_and_keyed_versions() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("keys")).unwrap();
        fs::write(dir.path().join("keys/a"), b"alpha").unwrap();
        let backend = backend(dir.path());
        let response = mount(
            &backend,
            "- objectName: keys/a\n  path: out/A\n  filePermission: 0440\n- objectName: keys/a\n",
        )
        .await
        .unwrap();
        assert_eq!(response.files[0].path, "out/A");
        assert_eq!(response.files[0].mode, 0o440);
        assert_eq!(response.files[0].contents.as_slice(), b"alpha");
        assert_eq!(response.files[1].path, "keys/a");
        assert_eq!(response.files[1].mode, 0o644);
        assert_eq!(response.versions[0].id, "file/out/A");
        // Same content, different configuration: different versions.
        assert_ne!(response.versions[0].version, response.versions[1].version);
        let first = response.versions[1].version.clone();
        fs::write(dir.path().join("keys/a"), b"beta").unwrap();
        let rotated = mount(&backend, "- objectName: keys/a\n").await.unwrap();
        assert_ne!(rotated.versions[0].version, first);
    }

    #[tokio::test]
    async fn refuses_names_outside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        fs::write(dir.path().join("outside"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), root.join("link")).unwrap();
        let backend = backend(&root);
        for name in [
            "../outside",
            "/etc/passwd",
            "a/../../outside",
            "link",
            "",
            ".",
        ] {
            let error = mount(&backend, &format!("- objectName: {name:?}\n"))
                .await
                .unwrap_err();
            assert_eq!(error.kind, ErrorKind::InvalidArgument, "{name}: {error}");
        }
    }

    #[tokio::test]
    async fn each_namespace_reads_only_its_own_directory() {
        let dir = tempfile::tempdir().unwrap();
        for ns in ["team-a", "team-b"] {
            fs::create_dir(dir.path().join(ns)).unwrap();
            fs::write(dir.path().join(ns).join("key"), ns).unwrap();
        }
        fs::write(dir.path().join("top"), b"x").unwrap();
        std::os::unix::fs::symlink("../team-b/key", dir.path().join("team-a/link")).unwrap();
        let backend = FileBackend::new(
            Some(FileRoot::open(dir.path()).unwrap()),
            FileLayout::PerNamespace,
            Arc::new(VersionKey::random().unwrap()),
            10,
            1024,
        );
        let as_pod = |namespace: &str, objects: &str| {
            let mut request = request(objects);
            request.pod.namespace = namespace.into();
            request
        };
        let mine = backend
            .mount(&as_pod("team-a", "- objectName: key\n"))
            .await
            .unwrap();
        assert_eq!(mine.files[0].contents.as_slice(), b"team-a");
        for objects in ["- objectName: link\n", "- objectName: ../team-b/key\n"] {
            let error = backend.mount(&as_pod("team-a", objects)).await.unwrap_err();
            assert_eq!(error.reason, Reason::InvalidObjectName, "{objects}");
        }
        let error = backend
            .mount(&as_pod("team-c", "- objectName: key\n"))
            .await
            .unwrap_err();
        assert_eq!(error.reason, Reason::ObjectNotFound);
        let error = backend
            .mount(&as_pod("", "- objectName: top\n"))
            .await
            .unwrap_err();
        assert_eq!(error.reason, Reason::MissingPodInfo);
        for namespace in ["..", "team-a/..", "Team-A", "."] {
            let error = backend
                .mount(&as_pod(namespace, "- objectName: top\n"))
                .await
                .unwrap_err();
            assert_eq!(error.reason, Reason::InvalidPodInfo, "{namespace}");
        }
    }

    #[tokio::test]
    async fn optional_missing_and_required_missing() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("present"), b"x").unwrap();
        let backend = backend(dir.path());
        let response = mount(
            &backend,
            "- objectName: present\n- objectName: absent\n  optional: true\n",
        )
        .await
        .unwrap();
        assert_eq!(response.files.len(), 1);
        let error = mount(&backend, "- objectName: absent\n").await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::NotFound);
        let none = mount(&backend, "- objectName: absent\n  optional: true\n")
            .await
            .unwrap();
        assert!(none.files.is_empty());
        assert_eq!(none.versions.len(), 1);
        // An in-process caller asking for the absent ones: required objects are listed, optional ones
        // only skipped.
        let mut reporting = request(
            "- objectName: present\n- objectName: gone\n- objectName: absent\n  optional: true\n",
        );
        reporting.fetch.report_missing = true;
        let reported = backend.mount(&reporting).await.unwrap();
        assert_eq!(reported.files.len(), 1);
        assert_eq!(reported.missing, ["gone"]);
    }

    #[tokio::test]
    async fn size_and_count_limits() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("big"), vec![b'x'; 2000]).unwrap();
        let backend = backend(dir.path());
        let error = mount(&backend, "- objectName: big\n").await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::ResourceExhausted);
        assert!(error.message.contains("big (2000 bytes)"), "{error}");
        let many: String = (0..11).map(|i| format!("- objectName: f{i}\n")).collect();
        let error = mount(&backend, &many).await.unwrap_err();
        assert_eq!(error.reason, Reason::TooManyObjects);
    }

    #[tokio::test]
    async fn disabled_without_root_and_unknown_fields() {
        let off = FileBackend::new(
            None,
            FileLayout::Shared,
            Arc::new(VersionKey::random().unwrap()),
            10,
            1024,
        );
        let error = off.mount(&request("- objectName: a\n")).await.unwrap_err();
        assert!(error.message.contains("--file-root"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let error = mount(&backend(dir.path()), "- objectName: a\n  colour: red\n")
            .await
            .unwrap_err();
        assert_eq!(error.reason, Reason::InvalidObjects);
        assert!(error.message.contains("colour"), "{error}");
    }
}

//! Step 1 of a sync: fetch a SecretSync's objects in-process, through the same backends and pipeline as
//! `serve`. The mount request is built from the SecretProviderClass (same namespace, `provider:
//! openclaw`) and the service account the SecretSync names; the backend gets that account's token from a
//! TokenRequest for its own audience ([`crate::pod_token::TokenSource::unbound`]). Every object is asked
//! for as optional, so objects the backend no longer has are listed (for the deletion policy) instead of
//! failing the rest. The mounted files then become the Secret's keys.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use zeroize::Zeroizing;

use super::crd::{SecretSync, SyncedObjectVersion};
use super::reconcile::{Context, Failure};
use crate::error::{ErrorKind, MountError, Reason};
use crate::request::{FetchOptions, KUBELET_PREFIX, MountRequest, PodIdentity, PreviousVersion};

/// The `provider` a SecretProviderClass must name for the controller to use it.
pub const PROVIDER: &str = "openclaw";

/// Where a SecretSync's reads go, and for whom: the backend, its endpoint
/// ([`crate::backend::Backend::endpoint`]) and the namespace. A throttling endpoint holds only the
/// SecretSyncs of that namespace that read from it (a tenant using up its own quota holds no other).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub backend: &'static str,
    pub address: String,
    pub namespace: String,
}

/// What the backend holds for one SecretSync, as Secret keys.
pub struct Fetched {
    pub data: BTreeMap<String, Zeroizing<Vec<u8>>>,
    /// Keys whose objects the backend says are gone.
    pub gone: Vec<String>,
    pub versions: Vec<SyncedObjectVersion>,
    /// Where the reads went.
    pub backend: Endpoint,
    /// The backend's versions were the previous ones: nothing was read (`data` is empty).
    pub unchanged: bool,
    /// The SecretProviderClass read (`<uid>/<generation>`).
    pub provider_class_version: String,
}

/// What the last sync read, when a poll may settle for versions: its object versions and the
/// SecretProviderClass version they came from.
pub struct Synced<'a> {
    pub versions: &'a [SyncedObjectVersion],
    pub provider_class_version: Option<&'a str>,
}

/// Fetches the SecretSync's objects (`fresh`: past the value cache). With what the last sync read
/// (`synced`), and the SecretProviderClass unchanged since, a backend that can tell versions without
/// values is asked for those first, and nothing is read when all are the same
/// ([`Fetched::unchanged`]).
pub async fn fetch(
    ctx: &Context,
    sync: &SecretSync,
    fresh: bool,
    synced: Option<Synced<'_>>,
) -> Result<Fetched, Failure> {
    let namespace = sync.metadata.namespace.as_deref().unwrap_or_default();
    let (parameters, class_version) =
        provider_class_parameters(ctx, namespace, &sync.spec.secret_provider_class_name).await?;
    let previous = match synced {
        Some(synced) if synced.provider_class_version == Some(class_version.as_str()) => {
            synced.versions
        }
        _ => &[],
    };
    let request = MountRequest {
        parameters,
        pod: PodIdentity {
            namespace: namespace.to_string(),
            service_account: sync.spec.service_account_name.clone(),
            ..Default::default()
        },
        default_mode: 0o644,
        deadline: Some(tokio::time::Instant::now() + ctx.settings.mount_timeout),
        fetch: FetchOptions {
            fresh,
            report_missing: true,
            probe: !previous.is_empty(),
        },
        previous_versions: previous
            .iter()
            .map(|v| PreviousVersion {
                id: v.id.clone(),
                version: v.version.clone(),
            })
            .collect(),
        ..Default::default()
    };
    let backend = ctx.backends.select(&request).map_err(Failure::from_mount)?;
    let name = Endpoint {
        backend: backend.name(),
        address: backend.endpoint(&request),
        namespace: namespace.to_string(),
    };
    let response = mount(backend, &request, ctx.settings.mount_timeout)
        .await
        .and_then(|response| response.validate().map(|()| response))
        .map_err(|error| Failure::from_backend(&name, error))?;
    if response.unchanged {
        return Ok(Fetched {
            data: BTreeMap::new(),
            gone: Vec::new(),
            versions: Vec::new(),
            backend: name,
            unchanged: true,
            provider_class_version: class_version,
        });
    }
    let mut fetched = keys_of(sync, response, name)?;
    fetched.provider_class_version = class_version;
    Ok(fetched)
}

async fn mount(
    backend: &dyn crate::backend::Backend,
    request: &MountRequest,
    timeout: Duration,
) -> Result<crate::response::MountResponse, MountError> {
    tokio::time::timeout(timeout, backend.mount(request))
        .await
        .map_err(|_| {
            MountError::new(
                ErrorKind::DeadlineExceeded,
                Reason::MountTimeout,
                format!(
                    "the {} backend did not answer within {timeout:?} (--mount-timeout)",
                    backend.name()
                ),
            )
        })?
}

/// The SecretProviderClass's `parameters`, after checking it is this provider's, and its version
/// (`<uid>/<generation>`: any edit of its parameters moves it).
async fn provider_class_parameters(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<(BTreeMap<String, String>, String), Failure> {
    let gvk = GroupVersionKind::gvk("secrets-store.csi.x-k8s.io", "v1", "SecretProviderClass");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "secretproviderclasses");
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, &resource);
    ctx.throttle().await;
    let class = match api.get_opt(name).await {
        Ok(Some(class)) => class,
        Ok(None) => {
            return Err(Failure::spec(
                "SecretProviderClassNotFound",
                format!("SecretProviderClass {namespace}/{name} does not exist"),
            ));
        }
        Err(e) => return Err(Failure::api("reading the SecretProviderClass", &e)),
    };
    let spec = &class.data["spec"];
    let provider = spec["provider"].as_str().unwrap_or_default();
    if provider != PROVIDER {
        let shown: String = provider.chars().take(64).collect();
        return Err(Failure::spec(
            "InvalidSpec",
            format!(
                "SecretProviderClass {namespace}/{name} is for provider {shown:?}, not {PROVIDER:?}"
            ),
        ));
    }
    let mut parameters = BTreeMap::new();
    if let Some(given) = spec["parameters"].as_object() {
        for (key, value) in given {
            let Some(value) = value.as_str() else {
                return Err(Failure::spec(
                    "InvalidSpec",
                    format!(
                        "SecretProviderClass {namespace}/{name}: parameter {key:?} is not a string"
                    ),
                ));
            };
            // Keys kubelet sets are never parameters (a pod's identity comes from the SecretSync).
            if !key.starts_with(KUBELET_PREFIX) {
                parameters.insert(key.clone(), value.to_string());
            }
        }
    }
    let version = format!(
        "{}/{}",
        class.metadata.uid.as_deref().unwrap_or_default(),
        class.metadata.generation.unwrap_or_default()
    );
    Ok((parameters, version))
}

/// The mounted files as Secret keys: `spec.data`'s mapping, or every file under its own name.
fn keys_of(
    sync: &SecretSync,
    response: crate::response::MountResponse,
    backend: Endpoint,
) -> Result<Fetched, Failure> {
    let versions = response
        .versions
        .iter()
        .map(|v| SyncedObjectVersion {
            id: v.id.clone(),
            version: v.version.clone(),
        })
        .collect();
    let missing: BTreeSet<&str> = response.missing.iter().map(String::as_str).collect();
    let skipped: BTreeSet<&str> = response.skipped.iter().map(String::as_str).collect();
    let mut files: BTreeMap<&str, &Zeroizing<Vec<u8>>> = response
        .files
        .iter()
        .map(|f| (f.path.as_str(), &f.contents))
        .collect();
    let mut data = BTreeMap::new();
    let mut gone = Vec::new();
    if sync.spec.data.is_empty() {
        for (path, contents) in std::mem::take(&mut files) {
            if !is_secret_key(path) {
                return Err(Failure::spec(
                    "InvalidSpec",
                    format!(
                        "the file {path:?} is not a valid Secret key (letters, digits, '-', '_', '.'): \
                         map it to a key with spec.data"
                    ),
                ));
            }
            data.insert(path.to_string(), contents.clone());
        }
        gone.extend(
            missing
                .iter()
                .filter(|p| is_secret_key(p))
                .map(|p| p.to_string()),
        );
    } else {
        for (index, entry) in sync.spec.data.iter().enumerate() {
            if !is_secret_key(&entry.key) || data.contains_key(&entry.key) {
                return Err(Failure::spec(
                    "InvalidSpec",
                    format!(
                        "spec.data[{index}].key {:?} is not a valid Secret key or is listed twice",
                        entry.key
                    ),
                ));
            }
            match files.get(entry.object_name.as_str()) {
                Some(contents) => {
                    data.insert(entry.key.clone(), (*contents).clone());
                }
                None if missing.contains(entry.object_name.as_str()) => {
                    gone.push(entry.key.clone());
                }
                // An optional object the backend does not have: no key, and nothing is gone.
                None if skipped.contains(entry.object_name.as_str()) => {}
                None => {
                    let shown: String = entry.object_name.chars().take(256).collect();
                    let mounted: Vec<&str> = files.keys().copied().take(20).collect();
                    return Err(Failure::spec(
                        "InvalidSpec",
                        format!(
                            "spec.data[{index}].objectName {shown:?} is not a file the \
                             SecretProviderClass mounts (it mounts: {})",
                            mounted.join(", ")
                        ),
                    ));
                }
            }
        }
    }
    Ok(Fetched {
        data,
        gone,
        versions,
        backend,
        unchanged: false,
        provider_class_version: String::new(),
    })
}

/// A valid Secret data key: `[-._a-zA-Z0-9]+`, at most 253 bytes, not `.` or `..`.
pub fn is_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::{MountResponse, MountedFile, ObjectVersion};

    fn sync(data: &str) -> SecretSync {
        serde_saphyr::from_str(&format!(
            "apiVersion: openclaw.io/v1alpha1\nkind: SecretSync\nmetadata: {{name: s, namespace: n}}\n\
             spec:\n  secretProviderClassName: spc\n  serviceAccountName: sa\n{data}"
        ))
        .unwrap()
    }

    fn file_endpoint() -> Endpoint {
        Endpoint {
            backend: "file",
            address: String::new(),
            namespace: "n".into(),
        }
    }

    fn response(files: &[&str], missing: &[&str]) -> MountResponse {
        MountResponse {
            files: files
                .iter()
                .map(|p| MountedFile {
                    path: p.to_string(),
                    mode: 0o644,
                    contents: Zeroizing::new(p.as_bytes().to_vec()),
                })
                .collect(),
            versions: files
                .iter()
                .map(|p| ObjectVersion {
                    id: p.to_string(),
                    version: "1".into(),
                })
                .collect(),
            missing: missing.iter().map(|p| p.to_string()).collect(),
            skipped: Vec::new(),
            unchanged: false,
        }
    }

    #[test]
    fn every_file_becomes_a_key_unless_data_maps_them() {
        let all = keys_of(&sync(""), response(&["A", "B"], &["C"]), file_endpoint()).unwrap();
        assert_eq!(all.data.keys().collect::<Vec<_>>(), ["A", "B"]);
        assert_eq!(all.gone, ["C"]);
        let mapped = keys_of(
            &sync("  data: [{objectName: A, key: KEY_A}, {objectName: C, key: KEY_C}]\n"),
            response(&["A", "B"], &["C"]),
            file_endpoint(),
        )
        .unwrap();
        assert_eq!(mapped.data.keys().collect::<Vec<_>>(), ["KEY_A"]);
        assert_eq!(&mapped.data["KEY_A"][..], b"A");
        assert_eq!(mapped.gone, ["KEY_C"]);
    }

    #[test]
    fn unusable_keys_and_unknown_objects_are_spec_errors() {
        let nested = keys_of(&sync(""), response(&["dir/A"], &[]), file_endpoint())
            .err()
            .expect("an error");
        assert_eq!(nested.reason, "InvalidSpec");
        assert!(nested.message.contains("dir/A"), "{}", nested.message);
        let unknown = keys_of(
            &sync("  data: [{objectName: NOPE, key: K}]\n"),
            response(&["A"], &[]),
            file_endpoint(),
        )
        .err()
        .expect("an error");
        assert!(unknown.message.contains("NOPE"), "{}", unknown.message);
        let twice = keys_of(
            &sync("  data: [{objectName: A, key: K}, {objectName: A, key: K}]\n"),
            response(&["A"], &[]),
            file_endpoint(),
        )
        .err()
        .expect("an error");
        assert!(twice.message.contains("twice"), "{}", twice.message);
        for bad in ["", ".", "..", "a/b", "a b", "é"] {
            assert!(!is_secret_key(bad), "{bad}");
        }
        assert!(is_secret_key("OPENCLAW_GATEWAY_TOKEN"));
    }
}

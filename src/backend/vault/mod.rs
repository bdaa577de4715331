//! The `vault` backend: HashiCorp Vault and OpenBao, read as the pod's own identity.
//!
//! Parameters ([`params`]) accept the official Vault and OpenBao providers' names. One mount: check the
//! parameters and objects, log in as the pod ([`auth`], one login per identity), make each distinct
//! (path, method, arguments) request once, concurrently (bounded), through the shared value cache
//! ([`crate::cache`]; reads only, never leased secrets), then cut each object's value out of its answer
//! ([`crate::transform`]). Versions: KV v2's version number where the answer has one, otherwise the keyed
//! HMAC of the object's configuration and content.

pub mod auth;
pub mod client;
pub mod params;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use zeroize::Zeroizing;

use self::auth::{Identity, TokenCache};
use self::client::VaultHttp;
use self::params::{SecretRequest, VaultDefaults, VaultObject, VaultParams};
use super::objects::ObjectListCache;
use super::{Backend, BoxFuture};
use crate::cache::{Loaded, ValueCache};
use crate::error::{ErrorKind, MountError, MountResult};
use crate::request::MountRequest;
use crate::response::{MountResponse, MountedFile, ObjectVersion, check_output_path};
use crate::telemetry::metrics::Metrics;
use crate::transform;
use crate::version_hmac::VersionKey;

/// The value of `backend` that picks this backend (also its metric label).
pub const BACKEND_NAME: &str = "vault";

/// Most bytes of Vault answers the value cache holds (each counted as three times its raw size, for the
/// parsed copy beside it).
const VALUE_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// Settings of the Vault backend (from the provider's flags).
#[derive(Debug, Clone)]
pub struct VaultSettings {
    pub defaults: VaultDefaults,
    /// Bound on one HTTP attempt.
    pub request_timeout: Duration,
    /// Retries of connection errors, timeouts and 5xx answers.
    pub retries: u32,
    /// Requests of one mount in flight at once.
    pub concurrency: usize,
    /// Value cache TTL (0 = off).
    pub cache_ttl: Duration,
    /// Identities whose Vault token is kept.
    pub token_cache_size: u64,
    pub max_objects: usize,
}

/// An answer to a read, parsed.
pub struct VaultData {
    raw: Zeroizing<Vec<u8>>,
    json: Value,
}

/// The value cache key: who read what.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ReadKey {
    identity: Identity,
    request: SecretRequest,
}

/// Reads secrets from Vault or OpenBao.
pub struct VaultBackend {
    settings: VaultSettings,
    metrics: Arc<Metrics>,
    http: VaultHttp,
    tokens: TokenCache,
    values: ValueCache<ReadKey, VaultData>,
    objects: ObjectListCache<VaultObject>,
    versions: Arc<VersionKey>,
}

/// One object, checked.
struct PlannedObject {
    object: VaultObject,
    request: SecretRequest,
    mode: u32,
}

impl VaultBackend {
    pub fn new(settings: VaultSettings, versions: Arc<VersionKey>, metrics: Arc<Metrics>) -> Self {
        Self {
            http: VaultHttp::new(settings.request_timeout, settings.retries, metrics.clone()),
            metrics,
            tokens: TokenCache::new(settings.token_cache_size),
            values: ValueCache::new(settings.cache_ttl, VALUE_CACHE_BYTES, |data| {
                data.raw.len() * 3
            }),
            objects: ObjectListCache::new(settings.max_objects),
            versions,
            settings,
        }
    }

    fn plan(&self, request: &MountRequest) -> MountResult<Vec<PlannedObject>> {
        let objects = self.objects.parse(request)?;
        let mut names = BTreeSet::new();
        objects
            .iter()
            .enumerate()
            .map(|(index, object)| {
                check_output_path(&format!("objects[{index}].objectName"), &object.object_name)?;
                if !names.insert(object.object_name.as_str()) {
                    return Err(MountError::invalid(
                        "DuplicateObjectName",
                        format!(
                            "objects[{index}].objectName {:?} is listed twice",
                            object.object_name
                        ),
                    ));
                }
                Ok(PlannedObject {
                    request: SecretRequest::of(index, object)?,
                    mode: object.file_permission.map_or(request.default_mode, |m| m.0),
                    object: object.clone(),
                })
            })
            .collect()
    }

    async fn mount_objects(&self, request: &MountRequest) -> MountResult<MountResponse> {
        let params = VaultParams::parse(request, &self.settings.defaults)?;
        let plan = self.plan(request)?;
        require_pod_identity(request)?;
        let identity = Identity::of(&params, &request.pod);
        let distinct: Vec<SecretRequest> = plan
            .iter()
            .map(|p| p.request.clone())
            .collect::<std::collections::HashSet<_>>()
            .into_iter()
            .collect();
        let answers: Vec<(SecretRequest, MountResult<Arc<Loaded<VaultData>>>)> =
            futures_util::stream::iter(distinct)
                .map(|secret| {
                    let (params, identity) = (&params, &identity);
                    async move {
                        let answer = self.fetch(params, identity, request, &secret).await;
                        (secret, answer)
                    }
                })
                .buffer_unordered(self.settings.concurrency.max(1))
                .collect()
                .await;
        let mut by_request = HashMap::new();
        for (secret, answer) in answers {
            by_request.insert(secret, answer?);
        }
        let mut response = MountResponse::default();
        for planned in plan {
            let Some(data) = by_request.get(&planned.request) else {
                return Err(MountError::internal(
                    "VaultBadAnswer",
                    "a request of this mount got no answer",
                ));
            };
            let (contents, version) = self.object_contents(&planned, &data.value)?;
            response.versions.push(ObjectVersion {
                id: planned.object.object_name.clone(),
                version,
            });
            response.files.push(MountedFile {
                path: planned.object.object_name,
                mode: planned.mode,
                contents,
            });
        }
        Ok(response)
    }

    /// One distinct request: reads through the value cache, writes straight to Vault.
    async fn fetch(
        &self,
        params: &VaultParams,
        identity: &Identity,
        request: &MountRequest,
        secret: &SecretRequest,
    ) -> MountResult<Arc<Loaded<VaultData>>> {
        let load = self.request_with_login(params, identity, request, secret);
        if !secret.is_read() {
            return load.await.map(Arc::new);
        }
        let key = ReadKey {
            identity: identity.clone(),
            request: secret.clone(),
        };
        let (loaded, missed) = self.values.get_or_load(key, load).await?;
        if self.values.is_on() {
            self.metrics.record_cache_lookup(BACKEND_NAME, !missed);
        }
        Ok(loaded)
    }

    /// Sends the request with the identity's token; on 403 logs in once more and retries once.
    async fn request_with_login(
        &self,
        params: &VaultParams,
        identity: &Identity,
        request: &MountRequest,
        secret: &SecretRequest,
    ) -> MountResult<Loaded<VaultData>> {
        let path = match &secret.query {
            Some(query) => format!("{}?{query}", secret.path),
            None => secret.path.clone(),
        };
        let mut retried = false;
        loop {
            let token = self
                .tokens
                .token(&self.http, params, identity, request)
                .await?;
            let reply = self
                .http
                .send(
                    params,
                    secret.method,
                    &path,
                    Some(&token.token),
                    secret.body.as_deref(),
                )
                .await?;
            if reply.status.as_u16() == 403 && !retried {
                self.tokens.invalidate(identity, &token).await;
                retried = true;
                continue;
            }
            if !reply.status.is_success() {
                return Err(status_error(
                    params,
                    secret,
                    reply.status.as_u16(),
                    &reply.errors(),
                ));
            }
            let json: Value = serde_json::from_slice(&reply.body).map_err(|_| {
                MountError::internal(
                    "VaultBadAnswer",
                    format!("Vault's answer for {} is not JSON", secret.path),
                )
            })?;
            let leased = json
                .get("lease_id")
                .and_then(Value::as_str)
                .is_some_and(|id| !id.is_empty());
            return Ok(Loaded {
                cacheable: secret.is_read() && !leased,
                value: VaultData {
                    raw: reply.body,
                    json,
                },
            });
        }
    }

    /// The file contents and version of one object from its request's answer.
    fn object_contents(
        &self,
        planned: &PlannedObject,
        data: &VaultData,
    ) -> MountResult<(Zeroizing<Vec<u8>>, String)> {
        let object = &planned.object;
        let kv2 = kv2_data(&data.json);
        let contents = match &object.secret_key {
            None => Zeroizing::new(data.raw.to_vec()),
            Some(key) => {
                let container =
                    kv2.map_or_else(|| data.json.get("data").unwrap_or(&Value::Null), |(d, _)| d);
                let what = format!("the secret at {:?}", object.secret_path);
                let raw = transform::value_of_key(container, key, &what)?;
                transform::decode(object.encoding, raw, &format!("key {key:?} of {what}"))?
            }
        };
        let version = match kv2.and_then(|(_, version)| version) {
            Some(version) => version.to_string(),
            None => {
                let mode = planned.mode.to_string();
                let encoding = format!("{:?}", object.encoding);
                self.versions.version(&[
                    b"vault",
                    object.object_name.as_bytes(),
                    object.secret_path.as_bytes(),
                    object.secret_key.as_deref().unwrap_or("").as_bytes(),
                    encoding.as_bytes(),
                    mode.as_bytes(),
                    &contents,
                ])
            }
        };
        Ok((contents, version))
    }
}

/// Tokens and values are cached per pod namespace and service account, as kubelet reports them; without
/// them pods could share each other's Vault tokens, so the mount is refused.
fn require_pod_identity(request: &MountRequest) -> MountResult<()> {
    if request.pod.namespace.is_empty() || request.pod.service_account.is_empty() {
        return Err(MountError::new(
            ErrorKind::FailedPrecondition,
            "MissingPodInfo",
            "the driver sent no pod namespace or service account: the CSIDriver secrets-store.csi.k8s.io \
             needs podInfoOnMount: true",
        ));
    }
    Ok(())
}

/// A KV v2 answer's `data.data` and `data.metadata.version`.
fn kv2_data(json: &Value) -> Option<(&Value, Option<u64>)> {
    let data = json.get("data")?;
    let inner = data.get("data").filter(|d| d.is_object())?;
    let metadata = data.get("metadata").filter(|m| m.is_object())?;
    Some((inner, metadata.get("version").and_then(Value::as_u64)))
}

fn status_error(
    params: &VaultParams,
    secret: &SecretRequest,
    status: u16,
    errors: &str,
) -> MountError {
    let path = &secret.path;
    let detail = if errors.is_empty() {
        String::new()
    } else {
        format!(": {errors}")
    };
    match status {
        403 => MountError::new(
            ErrorKind::PermissionDenied,
            "VaultPermissionDenied",
            format!(
                "Vault denied role {:?} access to {path:?} (403){detail}",
                params.role
            ),
        ),
        404 => MountError::not_found(
            "SecretNotFound",
            format!("Vault has no secret at {path:?} (404){detail}"),
        ),
        400 | 405 => MountError::invalid(
            "VaultBadRequest",
            format!("Vault refused the request for {path:?} ({status}){detail}"),
        ),
        s if s >= 500 => MountError::new(
            ErrorKind::Unavailable,
            "VaultUnavailable",
            format!("Vault answered {status} for {path:?} after retries{detail}"),
        ),
        _ => MountError::internal(
            "VaultUnexpectedStatus",
            format!("Vault answered {status} for {path:?}{detail}"),
        ),
    }
}

impl Backend for VaultBackend {
    fn name(&self) -> &'static str {
        BACKEND_NAME
    }

    fn mount<'a>(&'a self, request: &'a MountRequest) -> BoxFuture<'a, MountResult<MountResponse>> {
        Box::pin(self.mount_objects(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::vault::params::{HttpMethod, TlsParams};

    #[test]
    fn kv2_answers_are_recognised_by_shape() {
        let kv2 = serde_json::json!({"data": {"data": {"k": "v"}, "metadata": {"version": 7}}});
        let (data, version) = kv2_data(&kv2).unwrap();
        assert_eq!((data["k"].as_str(), version), (Some("v"), Some(7)));
        // KV v1 with a key named "data" is not KV v2.
        let kv1 = serde_json::json!({"data": {"data": {"k": "v"}}});
        assert!(kv2_data(&kv1).is_none());
        assert!(kv2_data(&serde_json::json!({"data": {"k": "v"}})).is_none());
    }

    #[test]
    fn statuses_map_to_codes_naming_role_and_path() {
        let params = VaultParams {
            role: "app".into(),
            address: "http://v".into(),
            namespace: None,
            auth_mount: "kubernetes".into(),
            audience: "vault".into(),
            tls: TlsParams::default(),
        };
        let secret = SecretRequest {
            path: "secret/data/x".into(),
            query: None,
            method: HttpMethod::Get,
            body: None,
        };
        let cases = [
            (403, ErrorKind::PermissionDenied, "VaultPermissionDenied"),
            (404, ErrorKind::NotFound, "SecretNotFound"),
            (400, ErrorKind::InvalidArgument, "VaultBadRequest"),
            (503, ErrorKind::Unavailable, "VaultUnavailable"),
            (418, ErrorKind::Internal, "VaultUnexpectedStatus"),
        ];
        for (status, kind, reason) in cases {
            let error = status_error(&params, &secret, status, "permission denied");
            assert_eq!((error.kind, error.reason), (kind, reason));
            assert!(error.message.contains("secret/data/x"));
        }
        assert!(
            status_error(&params, &secret, 403, "")
                .message
                .contains("\"app\"")
        );
    }
}

//! The `vault` backend: HashiCorp Vault and OpenBao, read as the pod's own identity.
//!
//! Parameters ([`params`]) accept the official Vault and OpenBao providers' names. One mount: check the
//! parameters and objects, take the pod's own token ([`crate::pod_token`]: the driver's, checked, or minted with
//! the TokenRequest fallback), log in as
//! the pod ([`auth`], one login per identity), then hand the objects to the shared fetch pipeline
//! ([`super::fetch`]): each distinct (path, method, arguments) request once, concurrently, through the
//! identity-keyed value cache (reads only), each object's key cut out of its answer. Versions: KV v2's
//! version number where the answer has one, otherwise the keyed HMAC of the object's configuration and
//! content.
//!
//! An answer carrying a lease (a dynamic secret) is marked not shareable: it belongs to the one mount
//! that asked for it.

pub mod auth;
pub mod client;
pub mod params;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use zeroize::Zeroizing;

use self::auth::{Identity, TokenCache};
use self::client::{HttpLimits, VaultCall, VaultHttp};
use self::params::{
    AllowedAddresses, HttpMethod, SecretRequest, TlsParams, VaultDefaults, VaultObject, VaultParams,
};
use super::fetch::{
    Answer, FetchPipeline, PipelineSettings, PlannedObject, RunOptions, Source, check_plan,
};
use super::objects::ObjectListCache;
use super::{Backend, BoxFuture, BuildError, FetchFlags, SharedParts};
use crate::cache::Loaded;
use crate::error::{ErrorKind, MountError, MountResult, Reason};
use crate::file_mode::FileMode;
use crate::pod_token::{Caller, LoginScope, TokenSource};
use crate::request::MountRequest;
use crate::response::MountResponse;
use crate::telemetry::metrics::Metrics;
use crate::tls_files::{TlsFile, TlsFilesDir};
use crate::transform;
use crate::version_hmac::VersionKey;

/// The value of `backend` that picks this backend (also its metric label).
pub const BACKEND_NAME: &str = "vault";

/// Most bytes of Vault answers the value cache holds (each counted as its raw size plus the estimate of
/// its parsed copy, see [`transform::parse_json_answer`]).
const VALUE_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// The Vault backend's flags (with the names and environment variables of Vault's own CLI where it has
/// them).
#[derive(Debug, Clone, clap::Args)]
pub struct VaultFlags {
    /// Vault address used when a SecretProviderClass sets none: http://, https:// or unix:///path (a
    /// Vault or OpenBao Agent listener on the node).
    #[arg(long, env = "VAULT_ADDR")]
    pub vault_addr: Option<String>,
    /// Vault namespace used when a SecretProviderClass sets none.
    #[arg(long, env = "VAULT_NAMESPACE")]
    pub vault_namespace: Option<String>,
    /// Comma-separated addresses SecretProviderClasses may name besides --vault-addr; `*` allows any
    /// http(s) address. Empty: only --vault-addr. Scheme, host and port must match exactly.
    #[arg(long, env = "OPENCLAW_VAULT_ALLOWED_ADDRESSES", value_delimiter = ',')]
    pub vault_allowed_addresses: Vec<String>,
    /// Vault auth mount used when a SecretProviderClass sets none.
    #[arg(long, env = "OPENCLAW_VAULT_MOUNT", default_value = "kubernetes")]
    pub vault_mount: String,
    /// PEM CA bundle trusted for Vault when a SecretProviderClass names none.
    #[arg(long, env = "VAULT_CACERT")]
    pub vault_ca_cert: Option<String>,
    /// Directory of PEM CA certificates trusted for Vault when a SecretProviderClass names none.
    #[arg(long, env = "VAULT_CAPATH")]
    pub vault_ca_path: Option<String>,
    /// PEM client certificate for Vault (with --vault-client-key).
    #[arg(long, env = "VAULT_CLIENT_CERT")]
    pub vault_client_cert: Option<String>,
    /// PEM client key for Vault (with --vault-client-cert).
    #[arg(long, env = "VAULT_CLIENT_KEY")]
    pub vault_client_key: Option<String>,
    /// Server name Vault's certificate is checked against.
    #[arg(long, env = "VAULT_TLS_SERVER_NAME")]
    pub vault_tls_server_name: Option<String>,
    /// Do not verify Vault's certificate (the admin's choice; pods need --allow-insecure-tls).
    #[arg(
        long,
        env = "VAULT_SKIP_VERIFY",
        num_args = 0..=1,
        default_missing_value = "true",
        default_value = "false",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub vault_skip_verify: bool,
}

/// Settings of the Vault backend (from the provider's flags).
#[derive(Debug, Clone)]
pub struct VaultSettings {
    pub defaults: VaultDefaults,
    pub limits: HttpLimits,
    /// Requests of one mount in flight at once.
    pub concurrency: usize,
    /// Value cache TTL (0 = off).
    pub cache_ttl: Duration,
    /// Identities whose Vault token is kept.
    pub token_cache_size: u64,
    pub max_objects: usize,
    pub login_scope: LoginScope,
}

impl VaultSettings {
    /// The settings the flags give; a malformed address or a half client certificate is refused.
    pub fn from_flags(
        flags: &VaultFlags,
        fetch: &FetchFlags,
        tls_files_dir: Option<Arc<TlsFilesDir>>,
        shared: &SharedParts,
    ) -> Result<Self, BuildError> {
        let flag_error =
            |flag: &'static str| move |message: String| BuildError::Flag { flag, message };
        let non_empty = |value: &Option<String>| value.clone().filter(|v| !v.trim().is_empty());
        let address = non_empty(&flags.vault_addr)
            .map(|a| params::canonical_address(&a))
            .transpose()
            .map_err(flag_error("--vault-addr"))?;
        let listed: Vec<&str> = flags
            .vault_allowed_addresses
            .iter()
            .map(|a| a.trim())
            .filter(|a| !a.is_empty())
            .collect();
        let allowed = if listed.contains(&"*") {
            AllowedAddresses::AnyHttp
        } else {
            AllowedAddresses::Listed
        };
        let allowed_addresses = listed
            .iter()
            .filter(|a| **a != "*")
            .map(|a| params::canonical_address(a))
            .collect::<Result<Vec<_>, _>>()
            .map_err(flag_error("--vault-allowed-addresses"))?;
        let admin_file = |value: &Option<String>, flag: &str| {
            non_empty(value).map(|path| TlsFile {
                path,
                named_by: flag.to_string(),
                from_pod: false,
            })
        };
        let tls = TlsParams {
            ca_cert: admin_file(&flags.vault_ca_cert, "--vault-ca-cert"),
            ca_directory: admin_file(&flags.vault_ca_path, "--vault-ca-path"),
            server_name: non_empty(&flags.vault_tls_server_name),
            client_cert: admin_file(&flags.vault_client_cert, "--vault-client-cert"),
            client_key: admin_file(&flags.vault_client_key, "--vault-client-key"),
            skip_verify: flags.vault_skip_verify,
        };
        if tls.client_cert.is_some() != tls.client_key.is_some() {
            return Err(BuildError::Flag {
                flag: "--vault-client-cert",
                message: "set both --vault-client-cert and --vault-client-key, or neither".into(),
            });
        }
        Ok(Self {
            defaults: VaultDefaults {
                address,
                namespace: non_empty(&flags.vault_namespace),
                auth_mount: flags.vault_mount.trim().trim_matches('/').to_string(),
                allowed,
                allowed_addresses,
                tls,
                tls_files_dir,
                allow_insecure_tls: fetch.allow_insecure_tls,
            },
            limits: HttpLimits {
                timeout: fetch.backend_timeout(),
                retries: 2,
                max_body: shared.max_response_bytes,
            },
            concurrency: fetch.backend_concurrency,
            cache_ttl: fetch.cache_ttl(),
            token_cache_size: fetch.token_cache_size,
            max_objects: shared.max_objects,
            login_scope: fetch.login_scope,
        })
    }
}

/// An answer to a read, parsed.
pub struct VaultData {
    raw: Zeroizing<Vec<u8>>,
    json: Value,
    /// What the raw answer and its parsed copy take in memory.
    bytes: usize,
}

impl Answer for VaultData {
    fn whole(&self) -> &[u8] {
        &self.raw
    }

    /// KV v2's `data.data`, otherwise `data`.
    fn keyed(&self) -> Option<&Value> {
        kv2_data(&self.json)
            .map(|(data, _)| data)
            .or_else(|| self.json.get("data"))
    }

    /// KV v2's `data.metadata.version`.
    fn version(&self) -> Option<String> {
        kv2_data(&self.json).and_then(|(_, version)| version.map(|v| v.to_string()))
    }

    /// The raw answer and its parsed copy beside it.
    fn size(&self) -> usize {
        self.bytes
    }
}

/// What every request of one mount shares: where, and as whom.
pub struct VaultMount {
    params: VaultParams,
    identity: Identity,
    /// The pod's token, checked to be the identity's own.
    jwt: Zeroizing<String>,
}

/// Vault as the fetch pipeline calls it: HTTP and the logins of each identity.
pub struct VaultSource {
    http: VaultHttp,
    tokens: TokenCache,
    /// Most bytes one answer may take parsed.
    max_parsed_answer: usize,
    /// KV v2 metadata paths an identity may not read (versions are then told by reading values).
    metadata_denied: moka::future::Cache<(Identity, String), ()>,
}

/// How long a refused metadata read is remembered.
const METADATA_DENIED_TTL: Duration = Duration::from_secs(600);

/// How much larger than `--max-response-bytes` an answer may grow when parsed: enough for any secret's
/// JSON, not for a body built to multiply (see [`transform::parse_json_answer`]).
const PARSED_ANSWER_PER_ANSWER_BYTE: usize = 4;

/// Reads secrets from Vault or OpenBao.
pub struct VaultBackend {
    settings: VaultSettings,
    source: VaultSource,
    pipeline: FetchPipeline<VaultSource>,
    objects: ObjectListCache<VaultObject>,
    tokens: TokenSource,
}

impl VaultBackend {
    /// The backend as the flags configure it.
    pub fn from_flags(
        flags: &VaultFlags,
        fetch: &FetchFlags,
        tls_files_dir: Option<Arc<TlsFilesDir>>,
        shared: &SharedParts,
    ) -> Result<Self, BuildError> {
        let settings = VaultSettings::from_flags(flags, fetch, tls_files_dir, shared)?;
        Ok(Self::new(
            settings,
            shared.versions.clone(),
            shared.metrics.clone(),
            shared.tokens.clone(),
        ))
    }

    pub fn new(
        settings: VaultSettings,
        versions: Arc<VersionKey>,
        metrics: Arc<Metrics>,
        tokens: TokenSource,
    ) -> Self {
        let pipeline = FetchPipeline::new(
            PipelineSettings {
                concurrency: settings.concurrency,
                cache_ttl: settings.cache_ttl,
                cache_bytes: VALUE_CACHE_BYTES,
                max_response_bytes: settings.limits.max_body,
            },
            versions,
            metrics.clone(),
        );
        Self {
            source: VaultSource {
                http: VaultHttp::new(
                    settings.limits,
                    settings.defaults.tls_files_dir.clone(),
                    metrics,
                ),
                tokens: TokenCache::new(settings.token_cache_size),
                max_parsed_answer: settings
                    .limits
                    .max_body
                    .saturating_mul(PARSED_ANSWER_PER_ANSWER_BYTE),
                metadata_denied: moka::future::Cache::builder()
                    .time_to_live(METADATA_DENIED_TTL)
                    .max_capacity(10_000)
                    .build(),
            },
            pipeline,
            objects: ObjectListCache::new(settings.max_objects),
            tokens,
            settings,
        }
    }

    fn plan(&self, request: &MountRequest) -> MountResult<Vec<PlannedObject<SecretRequest>>> {
        let objects = self.objects.parse(request)?;
        objects
            .iter()
            .enumerate()
            .map(|(index, object)| {
                Ok(PlannedObject {
                    id: object.object_name.clone(),
                    path: object.object_name.clone(),
                    path_field: format!("objects[{index}].objectName"),
                    mode: FileMode::or_default(object.file_permission, request.default_mode),
                    optional: object.optional,
                    key: object.secret_key.clone(),
                    // Vault decodes a key's value; a whole answer is written as Vault sent it.
                    encoding: if object.secret_key.is_some() {
                        object.encoding
                    } else {
                        transform::Encoding::Utf8
                    },
                    location: object.secret_path.clone(),
                    request: SecretRequest::of(index, object)?,
                })
            })
            .collect()
    }

    async fn mount_objects(&self, request: &MountRequest) -> MountResult<MountResponse> {
        let params = VaultParams::parse(request, &self.settings.defaults)?;
        let plan = self.plan(request)?;
        let caller = Caller::of(request, self.settings.login_scope)?;
        // Checked on every mount, cache or no cache (see crate::pod_token).
        let jwt = self
            .tokens
            .token(request, &caller, &params.audience)
            .await?;
        let call = VaultMount {
            identity: Identity::of(&params, &caller),
            jwt,
            params,
        };
        self.pipeline
            .run(&self.source, &call, plan, RunOptions::of(request))
            .await
    }
}

impl Source for VaultSource {
    type Request = SecretRequest;
    type Identity = Identity;
    type Call = VaultMount;
    type Answer = VaultData;
    const NAME: &'static str = BACKEND_NAME;

    fn identity(call: &VaultMount) -> &Identity {
        &call.identity
    }

    fn is_read(request: &SecretRequest) -> bool {
        request.is_read()
    }

    fn fetch<'a>(
        &'a self,
        call: &'a VaultMount,
        request: &'a SecretRequest,
        deadline: Instant,
    ) -> BoxFuture<'a, MountResult<Loaded<VaultData>>> {
        Box::pin(self.request_with_login(call, request, deadline))
    }

    const PROBES: bool = true;

    fn probe<'a>(
        &'a self,
        call: &'a VaultMount,
        request: &'a SecretRequest,
        previous: &'a str,
        deadline: Instant,
    ) -> BoxFuture<'a, Option<String>> {
        Box::pin(self.kv2_current_version(call, request, previous, deadline))
    }
}

impl VaultSource {
    /// KV v2's current version of a read, from its metadata (`<mount>/metadata/<key>`: versions, no
    /// value), when the previous version was a KV v2 version number and the path names one `data/`
    /// segment; a deleted or destroyed current version reads as changed. `None` (read the value) for
    /// anything else, or when the role may not read metadata (remembered for a while, so a role
    /// without it costs no extra request per poll).
    async fn kv2_current_version(
        &self,
        call: &VaultMount,
        secret: &SecretRequest,
        previous: &str,
        deadline: Instant,
    ) -> Option<String> {
        let is_number = !previous.is_empty() && previous.bytes().all(|b| b.is_ascii_digit());
        if !is_number || secret.method != HttpMethod::Get || secret.query.is_some() {
            return None;
        }
        let path = kv2_metadata_path(&secret.path)?;
        let denied = (call.identity.clone(), path.clone());
        if self.metadata_denied.contains_key(&denied) {
            return None;
        }
        let params = &call.params;
        let mut retried = false;
        loop {
            let token = self
                .tokens
                .token(&self.http, params, &call.identity, &call.jwt, deadline)
                .await
                .ok()?;
            let reply = self
                .http
                .send(
                    params,
                    VaultCall {
                        method: HttpMethod::Get,
                        path: &path,
                        token: Some(&token.token),
                        body: None,
                        deadline,
                    },
                )
                .await
                .ok()?;
            // A 403 may be a token Vault no longer honours: log in once more, as reads do; refused
            // again, the role may not read metadata.
            if reply.status.as_u16() == 403 && !retried {
                self.tokens.invalidate(&call.identity, &token).await;
                retried = true;
                continue;
            }
            if !reply.status.is_success() {
                if reply.status.as_u16() == 403 {
                    self.metadata_denied.insert(denied, ()).await;
                }
                return None;
            }
            let answer = transform::parse_json_answer(&reply.body, self.max_parsed_answer).ok()?;
            return kv2_current(&answer.json);
        }
    }

    /// Sends the request with the identity's token; on 403 logs in once more and retries once.
    async fn request_with_login(
        &self,
        call: &VaultMount,
        secret: &SecretRequest,
        deadline: Instant,
    ) -> MountResult<Loaded<VaultData>> {
        let params = &call.params;
        let path = match &secret.query {
            Some(query) => format!("{}?{query}", secret.path),
            None => secret.path.clone(),
        };
        let mut retried = false;
        loop {
            let token = self
                .tokens
                .token(&self.http, params, &call.identity, &call.jwt, deadline)
                .await?;
            let reply = self
                .http
                .send(
                    params,
                    VaultCall {
                        method: secret.method,
                        path: &path,
                        token: Some(&token.token),
                        body: secret.body.as_deref(),
                        deadline,
                    },
                )
                .await?;
            if reply.status.as_u16() == 403 && !retried {
                self.tokens.invalidate(&call.identity, &token).await;
                retried = true;
                continue;
            }
            if reply.is_throttled() {
                return Err(reply.throttled_error(&params.address, &secret.path));
            }
            if !reply.status.is_success() {
                return Err(status_error(
                    params,
                    secret,
                    reply.status.as_u16(),
                    &reply.errors(),
                ));
            }
            let answer = transform::parse_json_answer(&reply.body, self.max_parsed_answer)
                .map_err(|error| answer_error(error, params, secret, self.max_parsed_answer))?;
            let json = answer.json;
            // A lease (a dynamic secret), a response-wrapping token or a token of its own are each
            // for one mount only.
            let leased = json
                .get("lease_id")
                .and_then(Value::as_str)
                .is_some_and(|id| !id.is_empty())
                || ["wrap_info", "auth"]
                    .iter()
                    .any(|field| json.get(field).is_some_and(|v| !v.is_null()));
            return Ok(Loaded {
                cacheable: secret.is_read() && !leased,
                value: VaultData {
                    raw: reply.body,
                    json,
                    bytes: answer.bytes,
                },
            });
        }
    }
}

/// `<mount>/metadata/<key>` for a KV v2 read `<mount>/data/<key>`; `None` unless the path holds
/// exactly one `data` segment (otherwise the mount is not known from the path).
fn kv2_metadata_path(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split('/').collect();
    let data: Vec<usize> = (0..segments.len())
        .filter(|&i| segments[i] == "data")
        .collect();
    match data.as_slice() {
        [at] if *at > 0 && *at + 1 < segments.len() => {
            let mut metadata = segments.clone();
            metadata[*at] = "metadata";
            Some(metadata.join("/"))
        }
        _ => None,
    }
}

/// The current version of a KV v2 metadata answer, marked when that version is deleted or destroyed.
fn kv2_current(json: &Value) -> Option<String> {
    let data = json.get("data")?;
    let current = data.get("current_version")?.as_u64()?;
    let version = data.get("versions")?.get(current.to_string())?;
    let deleted = version
        .get("deletion_time")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty());
    let destroyed = version.get("destroyed").and_then(Value::as_bool) == Some(true);
    Some(if deleted || destroyed {
        format!("{current}-deleted")
    } else {
        current.to_string()
    })
}

/// The error for an answer that was not parsed.
fn answer_error(
    error: transform::JsonAnswerError,
    params: &VaultParams,
    secret: &SecretRequest,
    max_parsed: usize,
) -> MountError {
    let (address, path) = (&params.address, &secret.path);
    match error {
        transform::JsonAnswerError::TooLarge => MountError::exhausted(
            Reason::VaultAnswerTooLarge,
            format!(
                "the answer of Vault at {address} for {path:?} would take more than {max_parsed} bytes \
                 once parsed ({PARSED_ANSWER_PER_ANSWER_BYTE} × the provider's --max-response-bytes)"
            ),
        ),
        transform::JsonAnswerError::NotJson => MountError::new(
            ErrorKind::Unavailable,
            Reason::VaultBadAnswer,
            format!("the answer of Vault at {address} for {path:?} is not JSON"),
        ),
    }
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
            Reason::VaultPermissionDenied,
            format!(
                "Vault denied role {:?} access to {path:?} (403){detail}",
                params.role
            ),
        ),
        404 => MountError::not_found(
            Reason::SecretNotFound,
            format!("Vault has no secret at {path:?} (404){detail}"),
        ),
        300..=399 => MountError::new(
            ErrorKind::FailedPrecondition,
            Reason::VaultRedirect,
            format!(
                "Vault at {} answered {path:?} with a redirect ({status}); the provider follows no \
                 redirects: point the address at the active node or a load balancer",
                params.address
            ),
        ),
        400 | 405 => MountError::invalid(
            Reason::VaultBadRequest,
            format!("Vault refused the request for {path:?} ({status}){detail}"),
        ),
        s if s >= 500 => MountError::new(
            ErrorKind::Unavailable,
            Reason::VaultUnavailable,
            format!("Vault answered {status} for {path:?} after retries{detail}"),
        ),
        _ => MountError::internal(
            Reason::VaultUnexpectedStatus,
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

    fn parameter_names(&self) -> Vec<String> {
        params::known_keys()
    }

    fn check(&self, request: &MountRequest) -> MountResult<()> {
        VaultParams::parse(request, &self.settings.defaults)?;
        check_plan(&self.plan(request)?)
    }

    fn endpoint(&self, request: &MountRequest) -> String {
        VaultParams::parse(request, &self.settings.defaults)
            .map(|params| params.address)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::vault::params::TlsParams;

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
            (
                403,
                ErrorKind::PermissionDenied,
                Reason::VaultPermissionDenied,
            ),
            (404, ErrorKind::NotFound, Reason::SecretNotFound),
            (400, ErrorKind::InvalidArgument, Reason::VaultBadRequest),
            (503, ErrorKind::Unavailable, Reason::VaultUnavailable),
            (418, ErrorKind::Internal, Reason::VaultUnexpectedStatus),
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

    #[test]
    fn kv2_versions_are_told_from_metadata() {
        assert_eq!(
            kv2_metadata_path("secret/data/openclaw").as_deref(),
            Some("secret/metadata/openclaw")
        );
        assert_eq!(
            kv2_metadata_path("team/kv/data/a/b").as_deref(),
            Some("team/kv/metadata/a/b")
        );
        for unknown in [
            "secret/data",
            "data/x",
            "kv/data/a/data/b",
            "database/creds/x",
        ] {
            assert_eq!(kv2_metadata_path(unknown), None, "{unknown}");
        }
        let metadata = |deletion: &str, destroyed: bool| {
            serde_json::json!({"data": {"current_version": 3, "versions": {
                "2": {"deletion_time": "", "destroyed": false},
                "3": {"deletion_time": deletion, "destroyed": destroyed}}}})
        };
        assert_eq!(kv2_current(&metadata("", false)).as_deref(), Some("3"));
        assert_eq!(
            kv2_current(&metadata("2026-12-01T00:00:00Z", false)).as_deref(),
            Some("3-deleted")
        );
        assert_eq!(
            kv2_current(&metadata("", true)).as_deref(),
            Some("3-deleted")
        );
        // A KV v1 secret at a path that looks like metadata is no metadata answer.
        assert_eq!(
            kv2_current(&serde_json::json!({"data": {"current_version": 3}})),
            None
        );
        assert_eq!(kv2_current(&serde_json::json!({"data": {"k": "v"}})), None);
    }
}

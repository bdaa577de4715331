//! The `gcp` backend: Secret Manager versions (global and regional) and Parameter Manager versions
//! (rendered), read as the pod (Workload Identity, workload identity federation, impersonation), a
//! drop-in for the GCP provider's parameters.
//!
//! One mount: parse `secrets` ([`params`]) and plan every file before any call; take the pod's
//! Kubernetes token for the pool's audience (checked to be its own, or minted with the TokenRequest
//! fallback); get its access token ([`auth`], kept per principal); then the shared fetch pipeline
//! ([`super::fetch`]) reads each distinct resource once ([`client`]) through the identity-keyed value
//! cache. `extractJSONKey` / `extractYAMLKey` cut their file out of the payload. Versions are GCP's
//! own (the resolved version name, so `latest` rotating is seen), ids `gcp/<path>`.
//!
//! The sync controller's polls ask Secret Manager for the version's name alone (`versions.get`, no
//! payload) and read nothing while it is the synced one; Parameter Manager versions are always read
//! (their rendering may change).
//!
//! Pinned Secret Manager versions (a number) never change, so when the driver says the pod holds that
//! very version (`current_object_version`, drivers before v1.6.0), its payload is served from what
//! this identity read before, kept for [`PINNED_KEPT`], instead of read again.

pub mod auth;
pub mod client;
pub mod params;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;
use zeroize::Zeroizing;

use self::auth::{AccessToken, Pool, Principal, Tokens};
use self::client::{Endpoints, Http, ReadValue};
use self::params::{Auth, Extract, GcpParams, GcpSecret, Resource, SECRETS_PARAMETER, Service};
use super::fetch::{
    Answer, FetchPipeline, PipelineSettings, PlannedObject, RunOptions, Source, check_plan,
};
use super::objects::ObjectListCache;
use super::{Backend, BoxFuture, BuildError, FetchFlags, SharedParts};
use crate::cache::Loaded;
use crate::error::{ErrorKind, MountError, MountResult, Reason};
use crate::file_mode::FileMode;
use crate::kubernetes::Kubernetes;
use crate::pod_token::{Caller, LoginScope, TokenSource};
use crate::request::MountRequest;
use crate::response::MountResponse;
use crate::telemetry::metrics::Metrics;
use crate::transform;

/// The value of `backend` that picks this backend (also its metric label).
pub const BACKEND_NAME: &str = "gcp";
/// Most bytes of answers the value cache holds.
const VALUE_CACHE_BYTES: u64 = 32 * 1024 * 1024;
/// How long a pinned version's payload is kept for a pod that holds that version.
pub const PINNED_KEPT: Duration = Duration::from_secs(3600);
/// How much larger than `--max-response-bytes` a YAML payload may grow when parsed (its estimate counts
/// every line; JSON's, a quarter of this, counts only separators).
const PARSED_PER_PAYLOAD_BYTE: usize = 16;
const YAML_PER_JSON_BOUND: usize = 4;
/// How long a principal refused `versions.get` reads values at every poll before asking again.
const VERSIONS_DENIED_TTL: Duration = Duration::from_secs(600);
/// Largest credentials file read.
const MAX_CREDENTIALS_FILE: u64 = 64 * 1024;

/// The GCP backend's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct GcpFlags {
    /// GKE: the cluster's project, whose workload identity pool is `<project>.svc.id.goog` (without
    /// it and without --gcp-credentials-file: the metadata server's).
    #[arg(long, env = "OPENCLAW_GCP_PROJECT")]
    pub gcp_project: Option<String>,
    /// GKE: the cluster's location (default: the metadata server's `cluster-location`).
    #[arg(long, env = "OPENCLAW_GCP_CLUSTER_LOCATION")]
    pub gcp_cluster_location: Option<String>,
    /// GKE: the cluster's name (default: the metadata server's `cluster-name`).
    #[arg(long, env = "OPENCLAW_GCP_CLUSTER_NAME")]
    pub gcp_cluster_name: Option<String>,
    /// Outside GKE: an `external_account` credentials file (workload identity federation or a
    /// fleet): its audience and token_url (its impersonation URL is ignored).
    #[arg(long, env = "GOOGLE_APPLICATION_CREDENTIALS")]
    pub gcp_credentials_file: Option<PathBuf>,
    /// The full URL of the token exchange (default: the credentials file's token_url, else GKE's
    /// securetoken endpoint).
    #[arg(long, env = "OPENCLAW_GCP_STS_ENDPOINT")]
    pub gcp_sts_endpoint: Option<String>,
    /// IAM Credentials base URL (scheme://host[:port]).
    #[arg(long, env = "OPENCLAW_GCP_IAM_CREDENTIALS_ENDPOINT")]
    pub gcp_iam_credentials_endpoint: Option<String>,
    /// Secret Manager base URL; with it, regional secrets are read there too.
    #[arg(long, env = "OPENCLAW_GCP_SECRETMANAGER_ENDPOINT")]
    pub gcp_secretmanager_endpoint: Option<String>,
    /// Parameter Manager base URL; with it, regional parameters are read there too.
    #[arg(long, env = "OPENCLAW_GCP_PARAMETERMANAGER_ENDPOINT")]
    pub gcp_parametermanager_endpoint: Option<String>,
    /// The metadata server's base URL.
    #[arg(long, env = "OPENCLAW_GCP_METADATA_ENDPOINT", default_value = auth::METADATA_ENDPOINT)]
    pub gcp_metadata_endpoint: String,
    /// Let SecretProviderClasses say `auth: provider-adc`: every such pod then reads with the
    /// provider's own credentials.
    #[arg(long, env = "OPENCLAW_GCP_ALLOW_PROVIDER_ADC")]
    pub gcp_allow_provider_adc: bool,
}

/// Settings of the GCP backend (from the provider's flags).
#[derive(Debug, Clone)]
pub struct GcpSettings {
    /// The pool, when the flags or the credentials file give it whole.
    pub pool: Option<Pool>,
    /// Why the credentials file could not be read, if it could not.
    pub credentials_problem: Option<String>,
    pub project: Option<String>,
    pub cluster_location: Option<String>,
    pub cluster_name: Option<String>,
    pub sts_endpoint: Option<String>,
    pub iam_endpoint: String,
    pub metadata_endpoint: String,
    pub endpoints: Endpoints,
    pub allow_provider_adc: bool,
    pub attempt_timeout: Duration,
    pub concurrency: usize,
    pub cache_ttl: Duration,
    pub token_cache_size: u64,
    pub max_objects: usize,
    pub max_response_bytes: usize,
    pub login_scope: LoginScope,
}

impl GcpSettings {
    pub fn from_flags(
        flags: &GcpFlags,
        fetch: &FetchFlags,
        shared: &SharedParts,
    ) -> Result<Self, BuildError> {
        let set = |v: &Option<String>| v.clone().filter(|v| !v.trim().is_empty());
        let base = |flag: &'static str, v: &Option<String>| -> Result<Option<String>, BuildError> {
            set(v).map(|url| base_url(flag, &url)).transpose()
        };
        let sts_endpoint = base("--gcp-sts-endpoint", &flags.gcp_sts_endpoint)?;
        let project = set(&flags.gcp_project);
        if let Some(location) = set(&flags.gcp_cluster_location) {
            params::check_location("--gcp-cluster-location", &location).map_err(|e| {
                BuildError::Flag {
                    flag: "--gcp-cluster-location",
                    message: e.message,
                }
            })?;
        }
        // A credentials file of another type (a service-account key set for other tools) names no
        // pool: the flags or the metadata server do. One that cannot be read fails GCP mounts only.
        let mut credentials_problem = None;
        let from_file = flags.gcp_credentials_file.as_ref().and_then(|file| {
            match read_credentials_file(file, sts_endpoint.as_deref()) {
                Ok(pool) => pool,
                Err(problem) => {
                    tracing::warn!(file = %file.display(), problem = %problem, "GCP credentials file unusable");
                    credentials_problem = Some(format!("{}: {problem}", file.display()));
                    None
                }
            }
        });
        let pool = match (from_file, &project) {
            (Some(pool), _) => Some(pool),
            (None, Some(project)) => match (
                set(&flags.gcp_cluster_location),
                set(&flags.gcp_cluster_name),
            ) {
                (Some(location), Some(name)) => Some(Pool::gke(
                    project,
                    &location,
                    &name,
                    sts_endpoint.as_deref(),
                )),
                _ => None,
            },
            (None, None) => None,
        };
        Ok(Self {
            pool,
            credentials_problem,
            project,
            cluster_location: set(&flags.gcp_cluster_location),
            cluster_name: set(&flags.gcp_cluster_name),
            sts_endpoint,
            iam_endpoint: base(
                "--gcp-iam-credentials-endpoint",
                &flags.gcp_iam_credentials_endpoint,
            )?
            .unwrap_or_else(|| auth::IAM_CREDENTIALS_ENDPOINT.to_string()),
            metadata_endpoint: base_url("--gcp-metadata-endpoint", &flags.gcp_metadata_endpoint)?,
            endpoints: Endpoints {
                secret_manager: base(
                    "--gcp-secretmanager-endpoint",
                    &flags.gcp_secretmanager_endpoint,
                )?,
                parameter_manager: base(
                    "--gcp-parametermanager-endpoint",
                    &flags.gcp_parametermanager_endpoint,
                )?,
            },
            allow_provider_adc: flags.gcp_allow_provider_adc,
            attempt_timeout: fetch.backend_timeout(),
            concurrency: fetch.backend_concurrency,
            cache_ttl: fetch.cache_ttl(),
            token_cache_size: fetch.token_cache_size,
            max_objects: shared.max_objects,
            max_response_bytes: shared.max_response_bytes,
            login_scope: fetch.login_scope,
        })
    }
}

/// An admin's URL: `http(s)://host[:port]` (a path only for the token exchange), without a trailing
/// `/`.
fn base_url(flag: &'static str, url: &str) -> Result<String, BuildError> {
    let url = url.trim().trim_end_matches('/');
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && reqwest::Url::parse(url).is_ok_and(|u| u.host_str().is_some());
    if !ok {
        return Err(BuildError::Flag {
            flag,
            message: "must be an http:// or https:// URL".into(),
        });
    }
    Ok(url.to_string())
}

/// The pool of an `external_account` file; `None` for a file of another type.
fn read_credentials_file(
    path: &std::path::Path,
    sts: Option<&str>,
) -> Result<Option<Pool>, String> {
    use std::io::Read;
    let mut text = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_CREDENTIALS_FILE).read_to_end(&mut text))
        .map_err(|e| e.to_string())?;
    #[derive(serde::Deserialize)]
    struct Kind {
        #[serde(rename = "type")]
        kind: String,
    }
    let kind: Kind = serde_json::from_slice(&text).map_err(|_| "not a JSON credentials file")?;
    if kind.kind != "external_account" {
        return Ok(None);
    }
    Pool::from_external_account(&text, sts).map(Some)
}

/// One distinct read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GcpRequest(pub Resource);

/// What every read of one mount shares.
pub struct GcpCall {
    principal: Principal,
    token: Arc<AccessToken>,
    /// The version the pod holds of each pinned resource (from `current_object_version`).
    held: HashMap<Resource, String>,
    /// Whether pinned payloads read are kept for the pod's next call (a driver that tells versions).
    keep_pinned: bool,
}

/// One payload as GCP sent it, parsed (once, when an object extracts from it) as JSON or YAML.
pub struct GcpAnswer {
    raw: Zeroizing<Vec<u8>>,
    version: String,
    /// The most bytes a parse of it may take.
    max_parsed: usize,
    json: OnceLock<Option<serde_json::Value>>,
    yaml: OnceLock<Option<serde_json::Value>>,
}

impl GcpAnswer {
    fn new(raw: Zeroizing<Vec<u8>>, version: String, max_parsed: usize) -> Self {
        Self {
            raw,
            version,
            max_parsed,
            json: OnceLock::new(),
            yaml: OnceLock::new(),
        }
    }

    /// The payload parsed as JSON or YAML; `None` when it is not, or could take more than the bound.
    fn parsed(&self, extract: &Extract) -> Option<&serde_json::Value> {
        match extract {
            Extract::Json(_) => self.json.get_or_init(|| {
                transform::parse_json_answer(&self.raw, self.max_parsed / YAML_PER_JSON_BOUND)
                    .ok()
                    .map(|p| p.json)
            }),
            Extract::Yaml(_) => self.yaml.get_or_init(|| {
                transform::parse_yaml_answer(&self.raw, self.max_parsed)
                    .ok()
                    .map(|p| p.json)
            }),
        }
        .as_ref()
    }
}

impl Answer for GcpAnswer {
    fn whole(&self) -> &[u8] {
        &self.raw
    }

    fn keyed(&self) -> Option<&serde_json::Value> {
        None
    }

    fn version(&self) -> Option<String> {
        (!self.version.is_empty()).then(|| self.version.clone())
    }

    fn size(&self) -> usize {
        self.raw.len() + self.version.len()
    }
}

/// GCP as the fetch pipeline calls it.
pub struct GcpSource {
    http: Http,
    /// The most bytes parsing one payload may take.
    max_parsed: usize,
    endpoints: Endpoints,
    /// Pinned versions' payloads by who read them.
    pinned: moka::future::Cache<(Principal, Resource), Arc<GcpAnswer>>,
    /// Principals refused `versions.get`.
    versions_denied: moka::future::Cache<Principal, ()>,
    metrics: Arc<Metrics>,
}

/// Reads Secret Manager and Parameter Manager versions.
pub struct GcpBackend {
    settings: GcpSettings,
    source: GcpSource,
    pipeline: FetchPipeline<GcpSource>,
    objects: ObjectListCache<GcpSecret>,
    tokens: Tokens,
    /// For the metadata server: no proxy.
    metadata_http: Http,
    /// The pool, once known (from the flags, or the metadata server at the first mount).
    pool: OnceCell<Pool>,
    kubernetes: Arc<Kubernetes>,
    pod_tokens: TokenSource,
    metrics: Arc<Metrics>,
}

impl GcpBackend {
    pub fn from_flags(
        flags: &GcpFlags,
        fetch: &FetchFlags,
        shared: &SharedParts,
    ) -> Result<Self, BuildError> {
        Self::new(GcpSettings::from_flags(flags, fetch, shared)?, shared)
    }

    pub fn new(settings: GcpSettings, shared: &SharedParts) -> Result<Self, BuildError> {
        let http_error = |message| BuildError::Flag {
            flag: "--backend-timeout",
            message,
        };
        let http = Http::new(settings.attempt_timeout, settings.max_response_bytes, true)
            .map_err(http_error)?;
        let metadata_http =
            Http::new(settings.attempt_timeout, 64 * 1024, false).map_err(http_error)?;
        let pipeline = FetchPipeline::new(
            PipelineSettings {
                concurrency: settings.concurrency,
                cache_ttl: settings.cache_ttl,
                cache_bytes: VALUE_CACHE_BYTES,
                max_response_bytes: settings.max_response_bytes,
            },
            shared.versions.clone(),
            shared.metrics.clone(),
        );
        let pool = OnceCell::new_with(settings.pool.clone());
        Ok(Self {
            source: GcpSource {
                http,
                max_parsed: settings
                    .max_response_bytes
                    .saturating_mul(PARSED_PER_PAYLOAD_BYTE),
                endpoints: settings.endpoints.clone(),
                pinned: moka::future::Cache::builder()
                    .time_to_live(PINNED_KEPT)
                    .weigher(|_, answer: &Arc<GcpAnswer>| {
                        u32::try_from(answer.size()).unwrap_or(u32::MAX)
                    })
                    .max_capacity(VALUE_CACHE_BYTES)
                    .build(),
                versions_denied: moka::future::Cache::builder()
                    .time_to_live(VERSIONS_DENIED_TTL)
                    .max_capacity(10_000)
                    .build(),
                metrics: shared.metrics.clone(),
            },
            pipeline,
            objects: ObjectListCache::of_parameter(SECRETS_PARAMETER, settings.max_objects),
            tokens: Tokens::new(settings.token_cache_size),
            metadata_http,
            pool,
            kubernetes: shared.kubernetes.clone(),
            pod_tokens: shared.tokens.clone(),
            metrics: shared.metrics.clone(),
            settings,
        })
    }

    /// Every entry as a planned file, checked.
    fn plan(&self, request: &MountRequest) -> MountResult<Vec<PlannedObject<GcpRequest>>> {
        let secrets = self.objects.parse(request)?;
        let mut plan = Vec::with_capacity(secrets.len());
        for (index, secret) in secrets.iter().enumerate() {
            let checked = secret.check(index)?;
            plan.push(PlannedObject {
                id: format!("gcp/{}", checked.path),
                location: checked.resource.path(),
                path: checked.path,
                path_field: checked.path_field,
                mode: FileMode::or_default(secret.mode, request.default_mode),
                optional: false,
                key: checked.extract.as_ref().map(Extract::key),
                encoding: secret.encoding,
                request: GcpRequest(checked.resource),
            });
        }
        check_plan(&plan)?;
        Ok(plan)
    }

    async fn mount_objects(&self, request: &MountRequest) -> MountResult<MountResponse> {
        let deadline = request.deadline();
        let params = GcpParams::parse(request)?;
        let plan = self.plan(request)?;
        let (principal, token) = match params.auth {
            Auth::ProviderAdc => self.provider_token(deadline).await?,
            Auth::PodAdc => self.pod_token(request, deadline).await?,
        };
        // Only a driver's calls (which tell the versions the pod holds) use the pinned payloads; the
        // sync controller's polls and forced refreshes read.
        let driver = !request.fetch.probe && !request.fetch.fresh;
        let call = GcpCall {
            held: if driver {
                held_versions(request, &plan)
            } else {
                HashMap::new()
            },
            keep_pinned: driver && !request.previous_versions.is_empty(),
            principal,
            token,
        };
        let result = self
            .pipeline
            .run(&self.source, &call, plan.clone(), RunOptions::of(request))
            .await;
        match result {
            // GCP no longer takes the kept token (revoked early): forget it and ask once more.
            Err(error) if error.kind == ErrorKind::Unauthenticated => {
                self.tokens.forget(&call.principal).await;
                let (principal, token) = match params.auth {
                    Auth::ProviderAdc => self.provider_token(deadline).await?,
                    Auth::PodAdc => self.pod_token(request, deadline).await?,
                };
                let call = GcpCall {
                    principal,
                    token,
                    ..call
                };
                self.pipeline
                    .run(&self.source, &call, plan, RunOptions::of(request))
                    .await
            }
            other => other,
        }
    }

    async fn provider_token(
        &self,
        deadline: Instant,
    ) -> MountResult<(Principal, Arc<AccessToken>)> {
        if !self.settings.allow_provider_adc {
            return Err(MountError::new(
                ErrorKind::PermissionDenied,
                Reason::ProviderAdcNotAllowed,
                "auth: provider-adc reads with the provider's own credentials, which this provider \
                 allows only with --gcp-allow-provider-adc: use auth: pod-adc (the pod's identity)",
            ));
        }
        let principal = Principal::Provider;
        let token = self
            .tokens
            .get(&principal, async {
                let token = auth::provider_token(
                    &self.metadata_http,
                    &self.settings.metadata_endpoint,
                    deadline,
                )
                .await;
                self.record("login", &token);
                token
            })
            .await?;
        Ok((principal, token))
    }

    /// The pod's access token: kept for its principal, or exchanged (and impersonated) now.
    async fn pod_token(
        &self,
        request: &MountRequest,
        deadline: Instant,
    ) -> MountResult<(Principal, Arc<AccessToken>)> {
        let caller = Caller::of(request, self.settings.login_scope)?;
        let pool = self.pool(deadline).await?;
        let pod_token = self
            .pod_tokens
            .token_for_fixed_audience(request, &caller, &pool.token_audience)
            .await?;
        let annotations = self
            .kubernetes
            .service_account_annotations(&caller.namespace, &caller.service_account, deadline)
            .await?;
        let account = format!("{}/{}", caller.namespace, caller.service_account);
        let impersonate = auth::impersonation_of(&annotations, &account)?;
        let principal = Principal::Pod {
            sts_audience: pool.sts_audience.clone(),
            namespace: caller.namespace.clone(),
            service_account: caller.service_account.clone(),
            pod_uid: caller.pod_uid.clone(),
            impersonate: impersonate.clone(),
        };
        let token = self
            .tokens
            .get(&principal, async {
                let federated = auth::exchange(&self.source.http, pool, &pod_token, deadline).await;
                self.record("login", &federated);
                let Some((email, delegates)) = &impersonate else {
                    return federated;
                };
                let impersonated = auth::impersonate(
                    &self.source.http,
                    &self.settings.iam_endpoint,
                    &federated?.token,
                    email,
                    delegates,
                    deadline,
                )
                .await;
                self.record("login", &impersonated);
                impersonated
            })
            .await?;
        Ok((principal, token))
    }

    /// The pool: from the flags, or completed from the metadata server (GKE) at the first mount.
    async fn pool(&self, deadline: Instant) -> MountResult<&Pool> {
        self.pool
            .get_or_try_init(|| async {
                let s = &self.settings;
                if let Some(problem) = &s.credentials_problem {
                    return Err(MountError::new(
                        ErrorKind::FailedPrecondition,
                        Reason::GcpNotConfigured,
                        format!("the GCP credentials file cannot be used: {problem}"),
                    ));
                }
                let ask = |path: &'static str| {
                    auth::metadata_value(&self.metadata_http, &s.metadata_endpoint, path, deadline)
                };
                let project = match &s.project {
                    Some(project) => project.clone(),
                    None => ask("project/project-id").await?,
                };
                let location = match &s.cluster_location {
                    Some(location) => location.clone(),
                    None => ask("instance/attributes/cluster-location").await?,
                };
                let name = match &s.cluster_name {
                    Some(name) => name.clone(),
                    None => ask("instance/attributes/cluster-name").await?,
                };
                params::check_location("the metadata server's cluster-location", &location)?;
                Ok(Pool::gke(
                    &project,
                    &location,
                    &name,
                    s.sts_endpoint.as_deref(),
                ))
            })
            .await
    }

    fn record<T>(&self, operation: &'static str, result: &MountResult<T>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(error) => error.reason.as_str(),
        };
        self.metrics
            .record_backend_request(BACKEND_NAME, operation, outcome);
    }
}

/// The version the pod holds of each pinned resource, from the driver's `current_object_version`.
fn held_versions(
    request: &MountRequest,
    plan: &[PlannedObject<GcpRequest>],
) -> HashMap<Resource, String> {
    if request.previous_versions.is_empty() {
        return HashMap::new();
    }
    let by_id: HashMap<&str, &str> = request
        .previous_versions
        .iter()
        .map(|v| (v.id.as_str(), v.version.as_str()))
        .collect();
    plan.iter()
        .filter(|object| object.request.0.is_pinned())
        .filter_map(|object| {
            let version = by_id.get(object.id.as_str())?;
            Some((object.request.0.clone(), version.to_string()))
        })
        .collect()
}

impl Source for GcpSource {
    type Request = GcpRequest;
    type Identity = Principal;
    type Call = GcpCall;
    type Answer = GcpAnswer;
    const NAME: &'static str = BACKEND_NAME;

    fn identity(call: &GcpCall) -> &Principal {
        &call.principal
    }

    fn is_read(_: &GcpRequest) -> bool {
        true
    }

    fn fetch<'a>(
        &'a self,
        call: &'a GcpCall,
        request: &'a GcpRequest,
        deadline: Instant,
    ) -> BoxFuture<'a, MountResult<Loaded<GcpAnswer>>> {
        Box::pin(async move {
            let resource = &request.0;
            let key = (call.principal.clone(), resource.clone());
            if let Some(held) = call.held.get(resource)
                && let Some(kept) = self.pinned.get(&key).await
                && kept.version == *held
            {
                return Ok(Loaded {
                    value: GcpAnswer::new(kept.raw.clone(), kept.version.clone(), self.max_parsed),
                    cacheable: true,
                });
            }
            let read = client::read(
                &self.http,
                &self.endpoints,
                resource,
                &call.token.token,
                deadline,
            )
            .await;
            self.metrics
                .record_backend_request(BACKEND_NAME, "read", outcome_of(&read));
            let ReadValue { bytes, version } =
                read.map_err(|f| f.into_read_error(resource, &call.principal.describe()))?;
            if call.keep_pinned && resource.is_pinned() {
                let kept = GcpAnswer::new(bytes.clone(), version.clone(), self.max_parsed);
                self.pinned.insert(key, Arc::new(kept)).await;
            }
            Ok(Loaded {
                value: GcpAnswer::new(bytes, version, self.max_parsed),
                cacheable: true,
            })
        })
    }

    const PROBES: bool = true;

    fn probe<'a>(
        &'a self,
        call: &'a GcpCall,
        request: &'a GcpRequest,
        previous: &'a str,
        deadline: Instant,
    ) -> BoxFuture<'a, Option<String>> {
        Box::pin(self.current_version(call, &request.0, previous, deadline))
    }

    /// `extractJSONKey` / `extractYAMLKey`: the value at the path (see [`transform::value_at_path`]).
    fn cut(
        object: &PlannedObject<GcpRequest>,
        key: &str,
        answer: &GcpAnswer,
    ) -> MountResult<Zeroizing<Vec<u8>>> {
        let Some(extract) = Extract::from_key(key) else {
            return Err(MountError::internal(
                Reason::BackendBadAnswer,
                "an extraction of an unknown kind",
            ));
        };
        let (path, format) = match &extract {
            Extract::Json(path) => (path, "JSON"),
            Extract::Yaml(path) => (path, "YAML (without aliases)"),
        };
        let what = format!("the payload of {}", object.location);
        let Some(root) = answer.parsed(&extract) else {
            return Err(MountError::new(
                ErrorKind::FailedPrecondition,
                Reason::ExtractKeyNotFound,
                format!(
                    "{what} is not {format}, or too large to parse, so {path:?} cannot be extracted"
                ),
            ));
        };
        transform::value_at_path(root, path, &what)
    }
}

impl GcpSource {
    /// A Secret Manager version's current name, when it is enabled and the previous version was a
    /// version name; `None` (read the value) otherwise, or when the principal may not call
    /// `versions.get` (remembered for a while, so it costs no request per poll).
    async fn current_version(
        &self,
        call: &GcpCall,
        resource: &Resource,
        previous: &str,
        deadline: Instant,
    ) -> Option<String> {
        let is_name = previous.starts_with("projects/") && previous.contains("/versions/");
        if resource.service != Service::SecretManager
            || !is_name
            || self.versions_denied.contains_key(&call.principal)
        {
            return None;
        }
        let answer = client::version_of(
            &self.http,
            &self.endpoints,
            resource,
            &call.token.token,
            deadline,
        )
        .await;
        self.metrics
            .record_backend_request(BACKEND_NAME, "read", outcome_of(&answer));
        match answer {
            Ok((name, state)) => (state == "ENABLED" && !name.is_empty()).then_some(name),
            Err(failure) if failure.http == 403 => {
                self.versions_denied
                    .insert(call.principal.clone(), ())
                    .await;
                None
            }
            Err(_) => None,
        }
    }
}

fn outcome_of<T>(result: &Result<T, client::CallFailure>) -> &'static str {
    result
        .as_ref()
        .map_or_else(|failure| failure.class.outcome(), |_| "ok")
}

impl Backend for GcpBackend {
    fn name(&self) -> &'static str {
        BACKEND_NAME
    }

    fn mount<'a>(&'a self, request: &'a MountRequest) -> BoxFuture<'a, MountResult<MountResponse>> {
        Box::pin(self.mount_objects(request))
    }

    fn parameter_names(&self) -> Vec<String> {
        ["backend", "secretProviderClass"]
            .iter()
            .chain(&params::PARAMETER_NAMES)
            .map(|s| s.to_string())
            .collect()
    }

    fn check(&self, request: &MountRequest) -> MountResult<()> {
        let params = GcpParams::parse(request)?;
        if params.auth == Auth::ProviderAdc && !self.settings.allow_provider_adc {
            return Err(MountError::new(
                ErrorKind::PermissionDenied,
                Reason::ProviderAdcNotAllowed,
                "auth: provider-adc needs the provider flag --gcp-allow-provider-adc",
            ));
        }
        self.plan(request).map(|_| ())
    }
}

//! The `aws` backend: Secrets Manager secrets and SSM parameters, read as the pod (IRSA or EKS Pod
//! Identity), a drop-in for the AWS provider's parameters.
//!
//! One mount: parse the parameters and objects ([`params`]); resolve the region (parameter, then
//! `--aws-region`, then the node's `topology.kubernetes.io/region` label); check every object and its
//! files before any AWS call; take the pod's token for the audience its auth needs (checked to be its
//! own, or minted with the TokenRequest fallback); get the pod's credentials ([`credentials`], kept per
//! principal); then the shared fetch pipeline ([`super::fetch`]) reads the distinct objects in batches
//! ([`client`]) through the identity-keyed value cache. `jmesPath` entries are cut from their object's
//! answer. Versions are AWS's own (`VersionId`, SSM `Version`), ids the file names.

pub mod client;
pub mod credentials;
pub mod params;

use std::sync::Arc;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_secretsmanager::config::{Region, SharedCredentialsProvider};
use tokio::sync::OnceCell;
use tokio::time::Instant;
use zeroize::Zeroizing;

use self::client::{CallFailure, PARAMETERS_PER_BATCH, ReadValue, SECRETS_PER_BATCH};
use self::credentials::{Principal, Session, Sessions};
use self::params::{AwsObject, AwsParams, CheckedObject, ObjectType, Target};
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
pub const BACKEND_NAME: &str = "aws";
/// The node label holding its region.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// Most bytes of answers the value cache holds.
const VALUE_CACHE_BYTES: u64 = 32 * 1024 * 1024;
/// How much larger than `--max-response-bytes` a JSON answer may grow when parsed.
const PARSED_ANSWER_PER_ANSWER_BYTE: usize = 4;
/// How long a role refused `BatchGetSecretValue` reads one secret per call before trying again.
const BATCH_DENIED_TTL: Duration = Duration::from_secs(600);

/// The AWS backend's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct AwsFlags {
    /// AWS region used when a SecretProviderClass sets none (without it: the node's
    /// topology.kubernetes.io/region label).
    #[arg(long, env = "AWS_REGION")]
    pub aws_region: Option<String>,
    /// Full URL of the EKS Pod Identity Agent's credentials endpoint (overrides preferredAddressType).
    #[arg(long, env = "OPENCLAW_AWS_POD_IDENTITY_ENDPOINT")]
    pub aws_pod_identity_endpoint: Option<String>,
    /// The name of the node the provider runs on (from the downward API), whose region label is the
    /// default region.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
}

/// Settings of the AWS backend (from the provider's flags).
#[derive(Debug, Clone)]
pub struct AwsSettings {
    pub default_region: Option<String>,
    pub pod_identity_endpoint: Option<String>,
    pub node_name: Option<String>,
    pub attempt_timeout: Duration,
    pub concurrency: usize,
    pub cache_ttl: Duration,
    pub session_cache_size: u64,
    pub max_objects: usize,
    pub max_response_bytes: usize,
    pub login_scope: LoginScope,
}

impl AwsSettings {
    pub fn from_flags(
        flags: &AwsFlags,
        fetch: &FetchFlags,
        shared: &SharedParts,
    ) -> Result<Self, BuildError> {
        let non_empty = |v: &Option<String>| v.clone().filter(|v| !v.trim().is_empty());
        let default_region = non_empty(&flags.aws_region)
            .map(|r| {
                params::check_region("--aws-region", r.trim()).map_err(|e| BuildError::Flag {
                    flag: "--aws-region",
                    message: e.message,
                })
            })
            .transpose()?;
        let pod_identity_endpoint = non_empty(&flags.aws_pod_identity_endpoint);
        if let Some(endpoint) = &pod_identity_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(BuildError::Flag {
                flag: "--aws-pod-identity-endpoint",
                message: "must be an http:// or https:// URL".into(),
            });
        }
        Ok(Self {
            default_region,
            pod_identity_endpoint,
            node_name: non_empty(&flags.node_name),
            attempt_timeout: fetch.backend_timeout(),
            concurrency: fetch.backend_concurrency,
            cache_ttl: fetch.cache_ttl(),
            session_cache_size: fetch.token_cache_size,
            max_objects: shared.max_objects,
            max_response_bytes: shared.max_response_bytes,
            login_scope: fetch.login_scope,
        })
    }
}

/// One distinct read: an object in its primary region and, when the mount has one, the failover region.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AwsRequest {
    pub object_type: ObjectType,
    pub primary: Target,
    pub failover: Option<Target>,
}

impl AwsRequest {
    fn is_pinned(&self) -> bool {
        let pinned = |t: &Target| t.version.is_some() || t.label.is_some();
        pinned(&self.primary) || self.failover.as_ref().is_some_and(pinned)
    }

    fn describe(&self) -> String {
        let kind = match self.object_type {
            ObjectType::SecretsManager => "secret",
            ObjectType::SsmParameter => "SSM parameter",
        };
        format!("{kind} {:?}", self.primary.name)
    }
}

/// Who reads, and where: the value cache's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AwsIdentity {
    pub principal: Principal,
    pub region: String,
    pub failover_region: Option<String>,
}

/// The clients of one region, with the pod's credentials.
pub struct Regional {
    pub region: String,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub parameters: aws_sdk_ssm::Client,
}

/// What every read of one mount shares.
pub struct AwsMount {
    identity: AwsIdentity,
    primary: Arc<Regional>,
    failover: Option<Arc<Regional>>,
}

/// One object's value as AWS sent it, parsed when it is JSON (for `jmesPath`).
pub struct AwsAnswer {
    raw: Zeroizing<Vec<u8>>,
    version: String,
    parsed: Option<jmespath::Rcvar>,
    bytes: usize,
}

impl Answer for AwsAnswer {
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
        self.bytes
    }
}

/// AWS as the fetch pipeline calls it.
pub struct AwsSource {
    max_parsed_answer: usize,
    /// Principals whose role may not call `BatchGetSecretValue`.
    batch_denied: moka::future::Cache<Principal, ()>,
    metrics: Arc<Metrics>,
}

/// Reads secrets from AWS Secrets Manager and SSM Parameter Store.
pub struct AwsBackend {
    settings: AwsSettings,
    source: AwsSource,
    pipeline: FetchPipeline<AwsSource>,
    objects: ObjectListCache<AwsObject>,
    sessions: Sessions,
    /// SDK clients by principal and region, with the session they were made for.
    clients: moka::future::Cache<(Principal, String), (Arc<Session>, Arc<Regional>)>,
    kubernetes: Arc<Kubernetes>,
    tokens: TokenSource,
    /// The SDK's shared configuration (endpoints from the standard environment, the HTTP client),
    /// made at the first mount.
    base: OnceCell<aws_config::SdkConfig>,
    agent_http: reqwest::Client,
}

impl AwsBackend {
    pub fn from_flags(
        flags: &AwsFlags,
        fetch: &FetchFlags,
        shared: &SharedParts,
    ) -> Result<Self, BuildError> {
        let settings = AwsSettings::from_flags(flags, fetch, shared)?;
        Self::new(settings, shared)
    }

    pub fn new(settings: AwsSettings, shared: &SharedParts) -> Result<Self, BuildError> {
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
        let agent_http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.attempt_timeout)
            .no_proxy()
            .build()
            .map_err(|e| BuildError::Flag {
                flag: "--aws-pod-identity-endpoint",
                message: format!("the HTTP client failed: {e}"),
            })?;
        Ok(Self {
            source: AwsSource {
                max_parsed_answer: settings
                    .max_response_bytes
                    .saturating_mul(PARSED_ANSWER_PER_ANSWER_BYTE),
                batch_denied: moka::future::Cache::builder()
                    .time_to_live(BATCH_DENIED_TTL)
                    .max_capacity(10_000)
                    .build(),
                metrics: shared.metrics.clone(),
            },
            pipeline,
            objects: ObjectListCache::new(settings.max_objects),
            sessions: Sessions::new(settings.session_cache_size),
            clients: moka::future::Cache::builder()
                .max_capacity(settings.session_cache_size.max(1))
                .time_to_live(Duration::from_secs(12 * 3600))
                .build(),
            kubernetes: shared.kubernetes.clone(),
            tokens: shared.tokens.clone(),
            base: OnceCell::new(),
            agent_http,
            settings,
        })
    }

    /// Every object and `jmesPath` entry as planned files, checked against the regions (`None`: not
    /// known yet, ARN regions unchecked).
    fn plan(
        &self,
        request: &MountRequest,
        params: &AwsParams,
        region: Option<&str>,
    ) -> MountResult<Vec<PlannedObject<AwsRequest>>> {
        let objects = self.objects.parse(request)?;
        let mut plan = Vec::with_capacity(objects.len());
        for (index, object) in objects.iter().enumerate() {
            let checked = match region {
                Some(region) => params::check_object(
                    index,
                    object,
                    region,
                    params.failover_region.as_deref(),
                    params,
                )?,
                None => {
                    // The region is read later (from the node): check all else now.
                    let arn_region = params::Arn::parse("", object.object_name.trim())
                        .ok()
                        .flatten()
                        .map(|arn| arn.region)
                        .unwrap_or_else(|| "unknown".into());
                    params::check_object(
                        index,
                        object,
                        &arn_region,
                        params.failover_region.as_deref(),
                        params,
                    )?
                }
            };
            plan_object(
                &mut plan,
                index,
                object,
                checked,
                params,
                request.default_mode,
            )?;
            if plan.len() > self.settings.max_objects {
                return Err(MountError::invalid(
                    Reason::TooManyObjects,
                    format!(
                        "\"objects\" and their jmesPath entries make more than {} files; one mount \
                         may hold at most that many (provider flag --max-objects)",
                        self.settings.max_objects
                    ),
                ));
            }
        }
        Ok(plan)
    }

    async fn region(&self, params: &AwsParams, deadline: Instant) -> MountResult<String> {
        if let Some(region) = params
            .region
            .as_ref()
            .or(self.settings.default_region.as_ref())
        {
            return Ok(region.clone());
        }
        let Some(node) = &self.settings.node_name else {
            return Err(no_region(
                "the provider does not know its node (set NODE_NAME)",
            ));
        };
        let labels = self.kubernetes.node_labels(node, deadline).await?;
        let label = labels
            .get(REGION_LABEL)
            .ok_or_else(|| no_region(&format!("node {node} has no {REGION_LABEL} label")))?;
        params::check_region(&format!("the {REGION_LABEL} label of node {node}"), label)
    }

    async fn mount_objects(&self, request: &MountRequest) -> MountResult<MountResponse> {
        let deadline = request.deadline();
        let params = AwsParams::parse(request)?;
        let known = params
            .region
            .as_ref()
            .or(self.settings.default_region.as_ref());
        if known.is_none() {
            // Everything that needs no region is checked before the node is asked.
            check_plan(&self.plan(request, &params, None)?)?;
        }
        let region = self.region(&params, deadline).await?;
        if params.failover_region.as_deref() == Some(region.as_str()) {
            return Err(MountError::invalid(
                Reason::InvalidParameter,
                format!("failoverRegion {region:?} is the mount's region: name another region"),
            ));
        }
        let plan = self.plan(request, &params, Some(&region))?;
        check_plan(&plan)?;
        let caller = Caller::of(request, self.settings.login_scope)?;
        let audience = if params.use_pod_identity {
            credentials::POD_IDENTITY_AUDIENCE
        } else {
            credentials::IRSA_AUDIENCE
        };
        let token = self
            .tokens
            .token_for_fixed_audience(request, &caller, audience)
            .await?;
        let base = self.base().await;
        let (principal, session) = self
            .session(&caller, &params, &region, &base, &token, deadline)
            .await?;
        let call = AwsMount {
            primary: self.regional(&base, &principal, &region, &session).await,
            failover: match params.failover_region.as_deref() {
                Some(r) => Some(self.regional(&base, &principal, r, &session).await),
                None => None,
            },
            identity: AwsIdentity {
                principal,
                region,
                failover_region: params.failover_region.clone(),
            },
        };
        self.pipeline
            .run(&self.source, &call, plan, RunOptions::of(request))
            .await
    }

    /// The pod's credentials: kept for its principal, or fetched now.
    async fn session(
        &self,
        caller: &Caller,
        params: &AwsParams,
        region: &str,
        base: &aws_config::SdkConfig,
        token: &str,
        deadline: Instant,
    ) -> MountResult<(Principal, Arc<Session>)> {
        let pod = caller;
        if params.use_pod_identity {
            let endpoints = credentials::agent_endpoints(
                self.settings.pod_identity_endpoint.as_deref(),
                params.preferred_address,
            );
            let principal = Principal::PodIdentity {
                namespace: pod.namespace.clone(),
                service_account: pod.service_account.clone(),
                pod_uid: caller.pod_uid.clone(),
                endpoint: endpoints.join(" "),
            };
            let session = self
                .sessions
                .get(&principal, async {
                    let mut last = None;
                    for endpoint in &endpoints {
                        match credentials::pod_identity(&self.agent_http, endpoint, token, deadline)
                            .await
                        {
                            Ok(session) => return Ok(session),
                            Err(e) if e.reason == Reason::AwsUnreachable => last = Some(e),
                            Err(e) => return Err(e),
                        }
                    }
                    Err(last.unwrap_or_else(|| no_region("no Pod Identity Agent address")))
                })
                .await?;
            return Ok((principal, session));
        }
        let annotations = self
            .kubernetes
            .service_account_annotations(&pod.namespace, &pod.service_account, deadline)
            .await?;
        let role_arn = annotations
            .get(credentials::ROLE_ANNOTATION)
            .map(|r| r.trim())
            .filter(|r| !r.is_empty())
            .ok_or_else(|| {
                MountError::new(
                    ErrorKind::FailedPrecondition,
                    Reason::AwsRoleMissing,
                    format!(
                        "service account {}/{} has no {} annotation: annotate it with the IAM role \
                         the pod reads as (IRSA), or set usePodIdentity: \"true\" for EKS Pod Identity",
                        pod.namespace,
                        pod.service_account,
                        credentials::ROLE_ANNOTATION
                    ),
                )
            })?;
        let principal = Principal::Role {
            role_arn: role_arn.to_string(),
            namespace: pod.namespace.clone(),
            service_account: pod.service_account.clone(),
            pod_uid: caller.pod_uid.clone(),
            region: region.to_string(),
        };
        let session = self
            .sessions
            .get(&principal, async {
                let sts = |region: &str| {
                    aws_sdk_sts::Client::from_conf(
                        aws_sdk_sts::config::Builder::from(base)
                            .region(Region::new(region.to_string()))
                            .build(),
                    )
                };
                let name = credentials::session_name(&pod.namespace, &pod.service_account);
                let Some(failover) = params.failover_region.as_deref() else {
                    return credentials::assume_role(
                        &sts(region),
                        role_arn,
                        &name,
                        token,
                        deadline,
                    )
                    .await;
                };
                // The primary region's STS gets half the time; unreachable, the failover region's.
                let half = Instant::now() + deadline.saturating_duration_since(Instant::now()) / 2;
                match credentials::assume_role(&sts(region), role_arn, &name, token, half).await {
                    Err(error) if error.kind == ErrorKind::Unavailable => {
                        credentials::assume_role(&sts(failover), role_arn, &name, token, deadline)
                            .await
                    }
                    other => other,
                }
            })
            .await?;
        Ok((principal, session))
    }

    /// The clients of `region` with the session's credentials: made once per session and region, not
    /// per mount.
    async fn regional(
        &self,
        base: &aws_config::SdkConfig,
        principal: &Principal,
        region: &str,
        session: &Arc<Session>,
    ) -> Arc<Regional> {
        let key = (principal.clone(), region.to_string());
        if let Some((made_for, clients)) = self.clients.get(&key).await
            && Arc::ptr_eq(&made_for, session)
        {
            return clients;
        }
        let clients = Arc::new(regional(base, region, session));
        self.clients
            .insert(key, (session.clone(), clients.clone()))
            .await;
        clients
    }

    async fn base(&self) -> aws_config::SdkConfig {
        self.base
            .get_or_init(|| async {
                let http = aws_smithy_http_client::Builder::new()
                    .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                        aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https();
                aws_config::defaults(BehaviorVersion::latest())
                    .no_credentials()
                    // A placeholder: every client names its region (this keeps the SDK from asking
                    // the instance metadata service for one).
                    .region(Region::from_static("us-east-1"))
                    .http_client(http)
                    .retry_config(aws_config::retry::RetryConfig::disabled())
                    .timeout_config(
                        aws_config::timeout::TimeoutConfig::builder()
                            .operation_attempt_timeout(self.settings.attempt_timeout)
                            .connect_timeout(
                                self.settings.attempt_timeout.min(Duration::from_secs(5)),
                            )
                            .build(),
                    )
                    .app_name(aws_config::AppName::new("openclaw-csi-provider").expect("valid"))
                    .load()
                    .await
            })
            .await
            .clone()
    }
}

fn no_region(why: &str) -> MountError {
    MountError::new(
        ErrorKind::FailedPrecondition,
        Reason::AwsRegionUnknown,
        format!(
            "no AWS region: set the parameter region, or the provider's --aws-region (AWS_REGION); \
             {why}"
        ),
    )
}

/// The clients of `region` with the session's credentials.
fn regional(base: &aws_config::SdkConfig, region: &str, session: &Session) -> Regional {
    let credentials = SharedCredentialsProvider::new(session.credentials.clone());
    Regional {
        region: region.to_string(),
        secrets: aws_sdk_secretsmanager::Client::from_conf(
            aws_sdk_secretsmanager::config::Builder::from(base)
                .region(Region::new(region.to_string()))
                .credentials_provider(credentials.clone())
                .build(),
        ),
        parameters: aws_sdk_ssm::Client::from_conf(
            aws_sdk_ssm::config::Builder::from(base)
                .region(Region::new(region.to_string()))
                .credentials_provider(credentials)
                .build(),
        ),
    }
}

/// An object's file and its `jmesPath` files.
fn plan_object(
    plan: &mut Vec<PlannedObject<AwsRequest>>,
    index: usize,
    object: &AwsObject,
    checked: CheckedObject,
    params: &AwsParams,
    default_mode: u32,
) -> MountResult<()> {
    let request = AwsRequest {
        object_type: checked.object_type,
        primary: checked.primary,
        failover: checked.failover,
    };
    let mode = FileMode::or_default(object.file_permission, default_mode);
    let field = if object.object_alias.is_some() {
        format!("objects[{index}].objectAlias")
    } else {
        format!("objects[{index}].objectName")
    };
    for (entry_index, entry) in object.jmes_path.iter().enumerate() {
        let entry_field = format!("objects[{index}].jmesPath[{entry_index}]");
        let expression = params::check_jmes_path(&entry_field, entry)?;
        let file = params.file_name(entry.object_alias.trim());
        plan.push(PlannedObject {
            id: file.clone(),
            path: file,
            path_field: format!("{entry_field}.objectAlias"),
            mode: FileMode::or_default(entry.file_permission, mode),
            optional: false,
            key: Some(expression),
            encoding: entry.encoding,
            location: request.primary.name.clone(),
            request: request.clone(),
        });
    }
    plan.push(PlannedObject {
        id: checked.file.clone(),
        path: checked.file,
        path_field: field,
        mode,
        optional: false,
        key: None,
        encoding: object.encoding,
        location: request.primary.name.clone(),
        request,
    });
    Ok(())
}

impl Source for AwsSource {
    type Request = AwsRequest;
    type Identity = AwsIdentity;
    type Call = AwsMount;
    type Answer = AwsAnswer;
    const NAME: &'static str = BACKEND_NAME;
    const BATCHES: bool = true;

    fn identity(call: &AwsMount) -> &AwsIdentity {
        &call.identity
    }

    fn is_read(_: &AwsRequest) -> bool {
        true
    }

    fn fetch<'a>(
        &'a self,
        call: &'a AwsMount,
        request: &'a AwsRequest,
        deadline: Instant,
    ) -> BoxFuture<'a, MountResult<Loaded<AwsAnswer>>> {
        Box::pin(async move {
            self.read(call, std::slice::from_ref(request), deadline)
                .await
                .pop()
                .unwrap_or_else(|| Err(no_answer()))
        })
    }

    /// Unpinned secrets in twenties, parameters in tens (one name per batch, the names with the most
    /// pins placed first), pinned secrets alone. Deterministic for the same requests.
    fn batches(mut requests: Vec<AwsRequest>) -> Vec<Vec<AwsRequest>> {
        requests.sort_by(|a, b| {
            let key = |r: &AwsRequest| {
                (
                    r.object_type.as_str(),
                    r.primary.name.clone(),
                    r.primary.version.clone(),
                    r.primary.label.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        let mut pins: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for request in &requests {
            *pins.entry(batch_name(&request.primary.name)).or_default() += 1;
        }
        requests.sort_by_key(|r| std::cmp::Reverse(pins[&batch_name(&r.primary.name)]));
        let mut secrets: Vec<Vec<AwsRequest>> = Vec::new();
        let mut parameters: Vec<Vec<AwsRequest>> = Vec::new();
        let mut alone = Vec::new();
        for request in requests {
            match request.object_type {
                ObjectType::SecretsManager if request.is_pinned() => alone.push(vec![request]),
                ObjectType::SecretsManager => {
                    add_to_batch(&mut secrets, request, SECRETS_PER_BATCH)
                }
                ObjectType::SsmParameter => {
                    add_to_batch(&mut parameters, request, PARAMETERS_PER_BATCH)
                }
            }
        }
        secrets.into_iter().chain(parameters).chain(alone).collect()
    }

    fn fetch_batch<'a>(
        &'a self,
        call: &'a AwsMount,
        requests: &'a [AwsRequest],
        deadline: Instant,
    ) -> BoxFuture<'a, Vec<MountResult<Loaded<AwsAnswer>>>> {
        Box::pin(self.read(call, requests, deadline))
    }

    /// A `jmesPath` entry's value: strings as they are, anything else as compact JSON.
    fn cut(
        object: &PlannedObject<AwsRequest>,
        expression: &str,
        answer: &AwsAnswer,
    ) -> MountResult<Zeroizing<Vec<u8>>> {
        let what = format!("jmesPath {expression:?} of {}", object.request.describe());
        let Some(parsed) = &answer.parsed else {
            return Err(MountError::new(
                ErrorKind::FailedPrecondition,
                Reason::JmesPathNoMatch,
                format!("{what}: the object's value is not JSON (or too large to parse)"),
            ));
        };
        let compiled = jmespath::compile(expression).map_err(|e| {
            MountError::invalid(
                Reason::InvalidJmesPath,
                format!("{what}: {}", client::short(&e.to_string())),
            )
        })?;
        let found = compiled.search(parsed).map_err(|e| {
            MountError::invalid(
                Reason::InvalidJmesPath,
                format!("{what}: {}", client::short(&e.to_string())),
            )
        })?;
        if found.is_null() {
            return Err(MountError::not_found(
                Reason::JmesPathNoMatch,
                format!("{what} matched nothing"),
            ));
        }
        if let Some(text) = found.as_string() {
            return Ok(Zeroizing::new(text.as_bytes().to_vec()));
        }
        serde_json::to_vec(&*found)
            .map(Zeroizing::new)
            .map_err(|_| {
                MountError::internal(Reason::BackendBadAnswer, format!("{what}: not JSON"))
            })
    }
}

/// Adds a request to the first batch with room and without its names (SSM reads one pin of a name per
/// call; answers are matched by name).
fn add_to_batch(batches: &mut Vec<Vec<AwsRequest>>, request: AwsRequest, most: usize) {
    let names = |r: &AwsRequest| {
        let mut names = vec![batch_name(&r.primary.name)];
        names.extend(r.failover.as_ref().map(|t| batch_name(&t.name)));
        names
    };
    let mine = names(&request);
    let clashes = |batch: &Vec<AwsRequest>| {
        batch.len() >= most
            || batch
                .iter()
                .any(|other| names(other).iter().any(|n| mine.contains(n)))
    };
    match batches.iter_mut().find(|batch| !clashes(batch)) {
        Some(batch) => batch.push(request),
        None => batches.push(vec![request]),
    }
}

/// The name an object is known by in a batch: an ARN's resource name (`parameter/a/b` → `a/b`,
/// `secret:db-AbCdEf` → `db`), without a leading `/`, so a name and an ARN of one object never share a
/// call.
fn batch_name(name: &str) -> String {
    let Some(resource) = name
        .strip_prefix("arn:")
        .and_then(|_| name.splitn(6, ':').nth(5))
    else {
        return name.trim_start_matches('/').to_string();
    };
    if let Some(parameter) = resource.strip_prefix("parameter") {
        return parameter.trim_start_matches('/').to_string();
    }
    let secret = resource.strip_prefix("secret:").unwrap_or(resource);
    secret
        .rsplit_once('-')
        .filter(|(_, suffix)| suffix.len() == 6)
        .map_or(secret, |(name, _)| name)
        .to_string()
}

fn no_answer() -> MountError {
    MountError::internal(
        Reason::BackendBadAnswer,
        "AWS returned no answer for a read",
    )
}

type RegionResult = Result<Vec<Result<ReadValue, CallFailure>>, CallFailure>;

impl AwsSource {
    /// Reads requests of one kind, in one batch where they form one, in the primary region, then what
    /// failed over in the failover region.
    async fn read(
        &self,
        call: &AwsMount,
        requests: &[AwsRequest],
        deadline: Instant,
    ) -> Vec<MountResult<Loaded<AwsAnswer>>> {
        let primary: Vec<&Target> = requests.iter().map(|r| &r.primary).collect();
        // With a failover region the primary's retries get half the time left, so the failover
        // region is still asked within the mount's deadline.
        let primary_deadline = match call.failover {
            Some(_) => Instant::now() + deadline.saturating_duration_since(Instant::now()) / 2,
            None => deadline,
        };
        let mut results = self
            .read_in(
                &call.primary,
                &call.identity.principal,
                requests,
                &primary,
                primary_deadline,
            )
            .await;
        let mut regions = vec![call.primary.region.as_str(); requests.len()];
        if let Some(failover) = &call.failover {
            let retry: Vec<usize> = results
                .iter()
                .enumerate()
                .filter(|(_, r)| matches!(r, Err(f) if f.fails_over()))
                .map(|(i, _)| i)
                .collect();
            if !retry.is_empty() {
                let again: Vec<AwsRequest> = retry.iter().map(|i| requests[*i].clone()).collect();
                let targets: Vec<&Target> = again
                    .iter()
                    .map(|r| r.failover.as_ref().unwrap_or(&r.primary))
                    .collect();
                let answers = self
                    .read_in(
                        failover,
                        &call.identity.principal,
                        &again,
                        &targets,
                        deadline,
                    )
                    .await;
                for (i, answer) in retry.into_iter().zip(answers) {
                    results[i] = answer;
                    regions[i] = failover.region.as_str();
                }
            }
        }
        results
            .into_iter()
            .zip(requests)
            .zip(regions)
            .map(|((result, request), region)| {
                result.map(|value| self.answer(value)).map_err(|failure| {
                    failure.into_mount_error(
                        &request.describe(),
                        &call.identity.principal.describe(),
                        region,
                    )
                })
            })
            .collect()
    }

    /// One region's reads: a failure of the whole call is every request's.
    async fn read_in(
        &self,
        regional: &Regional,
        principal: &Principal,
        requests: &[AwsRequest],
        targets: &[&Target],
        deadline: Instant,
    ) -> Vec<Result<ReadValue, CallFailure>> {
        let result: RegionResult = match requests[0].object_type {
            ObjectType::SsmParameter => {
                let read = client::get_parameters(&regional.parameters, targets, deadline).await;
                self.record(&read);
                read
            }
            ObjectType::SecretsManager if requests.len() == 1 => {
                let read = client::get_secret(&regional.secrets, targets[0], deadline).await;
                self.record(&read);
                read.map(|value| vec![Ok(value)])
            }
            ObjectType::SecretsManager => {
                self.read_secrets(regional, principal, targets, deadline)
                    .await
            }
        };
        match result {
            Ok(values) if values.len() == requests.len() => values,
            Ok(_) => requests
                .iter()
                .map(|_| {
                    Err(CallFailure {
                        class: client::FailureClass::Server,
                        code: String::new(),
                        message: "the answer does not match the request".into(),
                    })
                })
                .collect(),
            Err(failure) => requests.iter().map(|_| Err(failure.clone())).collect(),
        }
    }

    /// Unpinned secrets: one `BatchGetSecretValue`, or one `GetSecretValue` each where the role may not
    /// batch.
    async fn read_secrets(
        &self,
        regional: &Regional,
        principal: &Principal,
        targets: &[&Target],
        deadline: Instant,
    ) -> RegionResult {
        if !self.batch_denied.contains_key(principal) {
            let read = client::batch_get_secrets(&regional.secrets, targets, deadline).await;
            self.record(&read);
            match read {
                Err(failure) if is_denied(&failure) => {
                    self.batch_denied.insert(principal.clone(), ()).await;
                }
                other => return other,
            }
        }
        let each = targets
            .iter()
            .map(|target| client::get_secret(&regional.secrets, target, deadline));
        let reads = futures_util::future::join_all(each).await;
        reads.iter().for_each(|read| self.record(read));
        Ok(reads)
    }

    /// Counts one read call (after its retries) in `openclaw_provider_backend_requests`.
    fn record<T>(&self, result: &Result<T, CallFailure>) {
        let outcome = result
            .as_ref()
            .map_or_else(|failure| failure.class.outcome(), |_| "ok");
        self.metrics
            .record_backend_request(BACKEND_NAME, "read", outcome);
    }

    fn answer(&self, value: ReadValue) -> Loaded<AwsAnswer> {
        let looks_like_json = value
            .bytes
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'{' || *b == b'[');
        let parsed = looks_like_json
            .then(|| transform::parse_json_answer(&value.bytes, self.max_parsed_answer).ok())
            .flatten();
        let bytes = value
            .bytes
            .len()
            .saturating_add(parsed.as_ref().map_or(0, |p| p.bytes));
        let parsed = parsed.and_then(|p| jmespath::Variable::try_from(p.json).ok().map(Arc::new));
        Loaded {
            value: AwsAnswer {
                raw: value.bytes,
                version: value.version,
                parsed,
                bytes,
            },
            cacheable: true,
        }
    }
}

fn is_denied(failure: &CallFailure) -> bool {
    matches!(
        failure.code.as_str(),
        "AccessDeniedException" | "AccessDenied"
    )
}

impl Backend for AwsBackend {
    fn name(&self) -> &'static str {
        BACKEND_NAME
    }

    fn mount<'a>(&'a self, request: &'a MountRequest) -> BoxFuture<'a, MountResult<MountResponse>> {
        Box::pin(self.mount_objects(request))
    }

    fn parameter_names(&self) -> Vec<String> {
        super::COMMON_PARAMETERS
            .iter()
            .chain(&params::PARAMETER_NAMES)
            .map(|s| s.to_string())
            .collect()
    }

    fn check(&self, request: &MountRequest) -> MountResult<()> {
        let params = AwsParams::parse(request)?;
        let region = params
            .region
            .as_ref()
            .or(self.settings.default_region.as_ref());
        check_plan(&self.plan(request, &params, region.map(String::as_str))?)
    }

    fn endpoint(&self, request: &MountRequest) -> String {
        AwsParams::parse(request)
            .ok()
            .and_then(|params| params.region)
            .or_else(|| self.settings.default_region.clone())
            .unwrap_or_default()
    }
}

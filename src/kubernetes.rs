//! The provider's Kubernetes API client: what mounts need to read from the cluster (a service account's
//! annotations, the node's labels) and the TokenRequest fallback that mints a pod's token when the
//! driver sent none.
//!
//! The client is made at its first use (so a provider whose mounts never need the API runs without one),
//! from `--kubeconfig` or, without it, the standard inference (`$KUBECONFIG`, then the in-cluster service
//! account). Requests pass a client-side rate limit (`--kube-api-qps`, `--kube-api-burst`) that waits
//! only as long as the mount's deadline allows, then fails with a message saying so (the AWS provider's
//! users met "rate: Wait(n=1) would exceed context deadline" instead). Service-account annotations are
//! kept for [`ANNOTATION_TTL`], node labels for the provider's life (the node is the provider's own).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Node, Secret, ServiceAccount};
use kube::api::{Api, PostParams};
use tokio::sync::OnceCell;
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::error::{ErrorKind, MountError, MountResult, Reason, first_line};

/// How long a service account's annotations are kept (a changed role reaches mounts this much later).
pub const ANNOTATION_TTL: Duration = Duration::from_secs(30);
/// Lifetime asked for a minted token (the API server's minimum is 10 minutes).
pub const MINTED_TOKEN_SECONDS: i64 = 600;
/// How long a minted token is reused for its pod and audience (its last 2 minutes are never handed out).
pub const MINTED_TOKEN_REUSE: Duration = Duration::from_secs(480);

/// The Kubernetes client's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct KubernetesFlags {
    /// Kubeconfig file for the Kubernetes API (default: $KUBECONFIG, then the in-cluster service account).
    #[arg(long, env = "OPENCLAW_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubernetes API requests per second, on average (client-side limit).
    #[arg(long, env = "OPENCLAW_KUBE_API_QPS", default_value_t = 20.0)]
    pub kube_api_qps: f64,
    /// Kubernetes API requests allowed at once above the average.
    #[arg(long, env = "OPENCLAW_KUBE_API_BURST", default_value_t = 40)]
    pub kube_api_burst: u32,
    /// When the driver sent no token for an audience a backend needs, mint one for the pod's service
    /// account (TokenRequest bound to the pod). Needs RBAC `serviceaccounts/token: create`, which lets a
    /// compromised node mint any service account's token: prefer the CSIDriver's `tokenRequests`.
    #[arg(
        long,
        env = "OPENCLAW_TOKEN_REQUEST_FALLBACK",
        num_args = 0..=1,
        default_missing_value = "true",
        default_value = "false",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub token_request_fallback: bool,
}

/// A token bucket: `qps` per second, up to `burst` at once.
struct RateLimit {
    qps: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimit {
    fn new(qps: f64, burst: u32) -> Self {
        // Bounded so every wait is a representable duration.
        let qps = if qps.is_finite() && qps > 0.0 {
            qps.clamp(0.01, 1e6)
        } else {
            1.0
        };
        let burst = f64::from(burst.max(1));
        Self {
            qps,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes one request's turn, waiting for it; `None` when the wait would pass `deadline`.
    async fn acquire(&self, deadline: Instant) -> Option<()> {
        let wait = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let elapsed = now.saturating_duration_since(state.1).as_secs_f64();
            state.0 = (state.0 + elapsed * self.qps).min(self.burst);
            state.1 = now;
            let wait = if state.0 >= 1.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64((1.0 - state.0) / self.qps)
            };
            if now + wait > deadline {
                return None;
            }
            state.0 -= 1.0;
            wait
        };
        tokio::time::sleep(wait).await;
        Some(())
    }
}

/// The provider's Kubernetes API client.
pub struct Kubernetes {
    kubeconfig: Option<PathBuf>,
    client: OnceCell<kube::Client>,
    limit: RateLimit,
    annotations:
        moka::future::Cache<(String, String), Arc<std::collections::BTreeMap<String, String>>>,
    node_labels: moka::future::Cache<String, Arc<std::collections::BTreeMap<String, String>>>,
    /// Minted tokens by (namespace, service account, pod name, pod uid, audience).
    minted: moka::future::Cache<[String; 5], Arc<Zeroizing<String>>>,
    pub token_request_fallback: bool,
}

fn unavailable(message: impl std::fmt::Display) -> MountError {
    MountError::new(
        ErrorKind::Unavailable,
        Reason::KubernetesUnavailable,
        message,
    )
}

impl Kubernetes {
    pub fn new(flags: &KubernetesFlags) -> Self {
        Self {
            kubeconfig: flags.kubeconfig.clone(),
            client: OnceCell::new(),
            limit: RateLimit::new(flags.kube_api_qps, flags.kube_api_burst),
            annotations: moka::future::Cache::builder()
                .time_to_live(ANNOTATION_TTL)
                .max_capacity(10_000)
                .build(),
            node_labels: moka::future::Cache::builder().max_capacity(16).build(),
            minted: moka::future::Cache::builder()
                .time_to_live(MINTED_TOKEN_REUSE)
                .max_capacity(10_000)
                .build(),
            token_request_fallback: flags.token_request_fallback,
        }
    }

    /// The API client, made on first use.
    pub async fn client(&self) -> MountResult<kube::Client> {
        self.client
            .get_or_try_init(|| async {
                let config = match &self.kubeconfig {
                    Some(path) => {
                        let file = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                            unavailable(format!(
                                "the provider's --kubeconfig {} is unusable: {e}",
                                path.display()
                            ))
                        })?;
                        kube::Config::from_custom_kubeconfig(file, &Default::default())
                            .await
                            .map_err(|e| {
                                unavailable(format!(
                                    "the provider's --kubeconfig {} is unusable: {e}",
                                    path.display()
                                ))
                            })?
                    }
                    None => kube::Config::infer().await.map_err(|e| {
                        unavailable(format!(
                            "the provider has no Kubernetes API configuration (in-cluster or \
                             --kubeconfig): {e}"
                        ))
                    })?,
                };
                // Every caller bounds its calls and backs off by itself (mounts by their deadline, the
                // sync controller per object and per watch); kube's own retry of 429/503/504 would wait
                // minutes out of their sight (15 tries, up to 1000 s apart) and hide an outage.
                let mut config = config;
                config.default_retry = false;
                kube::Client::try_from(config)
                    .map_err(|e| unavailable(format!("the Kubernetes API client failed: {e}")))
            })
            .await
            .cloned()
    }

    /// Waits for the rate limit (`--kube-api-qps`, `--kube-api-burst`) to allow one request, at most
    /// until `deadline`.
    pub async fn turn(&self, deadline: Instant) -> MountResult<()> {
        self.limit.acquire(deadline).await.ok_or_else(|| {
            MountError::new(
                ErrorKind::DeadlineExceeded,
                Reason::KubernetesUnavailable,
                "the provider's Kubernetes API rate limit (--kube-api-qps, --kube-api-burst) \
                 would delay this mount past its deadline: raise the limits",
            )
        })
    }

    /// The annotations of service account `namespace/name`.
    pub async fn service_account_annotations(
        &self,
        namespace: &str,
        name: &str,
        deadline: Instant,
    ) -> MountResult<Arc<std::collections::BTreeMap<String, String>>> {
        let key = (namespace.to_string(), name.to_string());
        self.annotations
            .try_get_with(key, async {
                self.turn(deadline).await?;
                let api: Api<ServiceAccount> = Api::namespaced(self.client().await?, namespace);
                let what = format!("service account {namespace}/{name}");
                let account = bounded(deadline, &what, api.get(name)).await?;
                Ok(Arc::new(account.metadata.annotations.unwrap_or_default()))
            })
            .await
            .map_err(|e: Arc<MountError>| (*e).clone())
    }

    /// The labels of node `name`.
    pub async fn node_labels(
        &self,
        name: &str,
        deadline: Instant,
    ) -> MountResult<Arc<std::collections::BTreeMap<String, String>>> {
        self.node_labels
            .try_get_with(name.to_string(), async {
                self.turn(deadline).await?;
                let api: Api<Node> = Api::all(self.client().await?);
                let node = bounded(deadline, &format!("node {name}"), api.get(name)).await?;
                Ok(Arc::new(node.metadata.labels.unwrap_or_default()))
            })
            .await
            .map_err(|e: Arc<MountError>| (*e).clone())
    }

    /// A token of the pod's service account for `audience`, bound to the pod (by name and uid, so it dies
    /// with the pod) and short-lived: minted, or the one minted for the same pod and audience within
    /// [`MINTED_TOKEN_REUSE`].
    pub async fn mint_token(
        &self,
        pod: &MintFor<'_>,
        audience: &str,
        deadline: Instant,
    ) -> MountResult<Zeroizing<String>> {
        let (pod_name, pod_uid) = pod.pod.unwrap_or_default();
        let key = [
            pod.namespace,
            pod.service_account,
            pod_name,
            pod_uid,
            audience,
        ]
        .map(String::from);
        self.minted
            .try_get_with(key, async {
                self.request_token(pod, audience, deadline)
                    .await
                    .map(Arc::new)
            })
            .await
            .map(|token| Zeroizing::new(token.as_str().to_string()))
            .map_err(|e: Arc<MountError>| (*e).clone())
    }

    async fn request_token(
        &self,
        pod: &MintFor<'_>,
        audience: &str,
        deadline: Instant,
    ) -> MountResult<Zeroizing<String>> {
        self.turn(deadline).await?;
        let api: Api<ServiceAccount> = Api::namespaced(self.client().await?, pod.namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![audience.to_string()],
                expiration_seconds: Some(MINTED_TOKEN_SECONDS),
                bound_object_ref: pod.pod.map(|(name, uid)| BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(name.to_string()),
                    uid: Some(uid.to_string()),
                }),
            },
            ..Default::default()
        };
        let what = format!(
            "a token of service account {}/{} (TokenRequest)",
            pod.namespace, pod.service_account
        );
        let minted = bounded(
            deadline,
            &what,
            api.create_token_request(pod.service_account, &PostParams::default(), &request),
        )
        .await?;
        let token = minted
            .status
            .map(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                unavailable(format!("the Kubernetes API returned no token for {what}"))
            })?;
        Ok(Zeroizing::new(token))
    }
}

/// The data key of the HMAC key Secret.
pub const VERSION_KEY_FIELD: &str = "key";

impl Kubernetes {
    /// The object-version key kept in Secret `namespace/name`: read, or created with `fresh` when it does
    /// not exist (a provider on another node that created it first wins: its key is read back).
    pub async fn version_key_secret(
        &self,
        namespace: &str,
        name: &str,
        fresh: Zeroizing<Vec<u8>>,
        deadline: Instant,
    ) -> MountResult<Zeroizing<Vec<u8>>> {
        let api: Api<Secret> = Api::namespaced(self.client().await?, namespace);
        let what = format!("the HMAC key Secret {namespace}/{name}");
        for _ in 0..3 {
            self.turn(deadline).await?;
            if let Some(secret) = bounded(deadline, &what, api.get_opt(name)).await? {
                return key_of(&what, secret);
            }
            let secret = Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.to_string()),
                    namespace: Some(namespace.to_string()),
                    labels: Some(
                        [(
                            "app.kubernetes.io/managed-by".to_string(),
                            crate::RUNTIME_NAME.to_string(),
                        )]
                        .into(),
                    ),
                    ..Default::default()
                },
                type_: Some("Opaque".into()),
                data: Some([(VERSION_KEY_FIELD.to_string(), ByteString(fresh.to_vec()))].into()),
                ..Default::default()
            };
            self.turn(deadline).await?;
            match tokio::time::timeout_at(deadline, api.create(&PostParams::default(), &secret))
                .await
            {
                Err(_) => break,
                Ok(Ok(_)) => return Ok(fresh),
                // Another node created it between our read and our create: read it again.
                Ok(Err(kube::Error::Api(status))) if status.code == 409 => continue,
                Ok(Err(error)) => return Err(api_error(&what, error)),
            }
        }
        Err(unavailable(format!(
            "{what} could not be read or created in time"
        )))
    }
}

fn key_of(what: &str, secret: Secret) -> MountResult<Zeroizing<Vec<u8>>> {
    let key = secret
        .data
        .and_then(|mut data| data.remove(VERSION_KEY_FIELD))
        .map(|bytes| Zeroizing::new(bytes.0))
        .ok_or_else(|| unavailable(format!("{what} has no data key {VERSION_KEY_FIELD:?}")))?;
    if key.len() < crate::version_hmac::MIN_KEY_BYTES {
        return Err(unavailable(format!(
            "{what} holds a key of {} bytes; it needs at least {}",
            key.len(),
            crate::version_hmac::MIN_KEY_BYTES
        )));
    }
    Ok(key)
}

/// Whose token is minted: a service account, bound to a pod (name, uid) or, for the sync controller, to
/// none.
pub struct MintFor<'a> {
    pub namespace: &'a str,
    pub service_account: &'a str,
    pub pod: Option<(&'a str, &'a str)>,
}

/// One API call, within the mount's deadline, its failure as a mount error.
async fn bounded<T>(
    deadline: Instant,
    what: &str,
    call: impl Future<Output = kube::Result<T>>,
) -> MountResult<T> {
    match tokio::time::timeout_at(deadline, call).await {
        Err(_) => Err(MountError::new(
            ErrorKind::DeadlineExceeded,
            Reason::KubernetesUnavailable,
            format!("the Kubernetes API did not answer in time reading {what}"),
        )),
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(api_error(what, error)),
    }
}

fn api_error(what: &str, error: kube::Error) -> MountError {
    match error {
        kube::Error::Api(status) if status.code == 404 => MountError::new(
            ErrorKind::FailedPrecondition,
            Reason::KubernetesObjectNotFound,
            format!("{what} does not exist"),
        ),
        kube::Error::Api(status) if status.code == 401 || status.code == 403 => MountError::new(
            ErrorKind::PermissionDenied,
            Reason::KubernetesUnavailable,
            format!(
                "the Kubernetes API refused the provider reading {what} ({}): check the provider's \
                 RBAC",
                status.code
            ),
        ),
        kube::Error::Api(status) => unavailable(format!(
            "the Kubernetes API answered {} reading {what}",
            status.code
        )),
        other => unavailable(format!(
            "the Kubernetes API could not be reached reading {what}: {}",
            first_line(&other.to_string())
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_waits_within_the_deadline_and_refuses_past_it() {
        let limit = RateLimit::new(10.0, 2);
        let far = Instant::now() + Duration::from_secs(10);
        let start = Instant::now();
        for _ in 0..4 {
            limit.acquire(far).await.unwrap();
        }
        // Two at once, then one every 100 ms.
        assert_eq!(Instant::now() - start, Duration::from_millis(200));
        let near = Instant::now() + Duration::from_millis(10);
        assert!(limit.acquire(near).await.is_none());
        assert!(limit.acquire(far).await.is_some());
    }
}

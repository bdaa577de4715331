//! Logging in to Vault as the pod, once per identity.
//!
//! The login is `POST /v1/auth/<mount>/login {role, jwt}` with the pod's service-account token for the
//! configured audience (works for Vault's `kubernetes` and `jwt` auth methods). The Vault token is kept per
//! [`Identity`] — address, namespace, auth mount, role, the pod's namespace and service account, audience,
//! TLS settings — until two thirds of its TTL; concurrent logins of one identity are coalesced; the cache is
//! bounded. A caller that gets a 403 invalidates the identity and logs in once more.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::client::VaultHttp;
use super::params::{HttpMethod, TlsParams, VaultParams};
use crate::error::{ErrorKind, MountError, MountResult};
use crate::request::{MountRequest, PodIdentity};

/// How long a token without a TTL (a non-expiring token) is reused before logging in again.
const NO_TTL_REUSE: Duration = Duration::from_secs(3600);

/// Who a Vault token was issued to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub address: String,
    pub namespace: Option<String>,
    pub auth_mount: String,
    pub role: String,
    pub pod_namespace: String,
    pub service_account: String,
    pub audience: String,
    pub tls: TlsParams,
}

impl Identity {
    pub fn of(params: &VaultParams, pod: &PodIdentity) -> Self {
        Self {
            address: params.address.clone(),
            namespace: params.namespace.clone(),
            auth_mount: params.auth_mount.clone(),
            role: params.role.clone(),
            pod_namespace: pod.namespace.clone(),
            service_account: pod.service_account.clone(),
            audience: params.audience.clone(),
            tls: params.tls.clone(),
        }
    }
}

/// A Vault token and how long it may be reused.
pub struct VaultToken {
    pub token: Zeroizing<String>,
    reuse_for: Duration,
}

struct ReuseFor;

impl Expiry<Identity, Arc<VaultToken>> for ReuseFor {
    fn expire_after_create(
        &self,
        _: &Identity,
        token: &Arc<VaultToken>,
        _: Instant,
    ) -> Option<Duration> {
        Some(token.reuse_for)
    }
}

#[derive(Deserialize)]
struct LoginReply {
    auth: LoginAuth,
}

#[derive(Deserialize)]
struct LoginAuth {
    client_token: Zeroizing<String>,
    #[serde(default)]
    lease_duration: u64,
}

/// Vault tokens by identity.
pub struct TokenCache {
    tokens: Cache<Identity, Arc<VaultToken>>,
}

impl TokenCache {
    pub fn new(capacity: u64) -> Self {
        Self {
            tokens: Cache::builder()
                .max_capacity(capacity)
                .expire_after(ReuseFor)
                .build(),
        }
    }

    /// The identity's Vault token, logging in (once, for all concurrent callers) when there is none.
    pub async fn token(
        &self,
        http: &VaultHttp,
        params: &VaultParams,
        identity: &Identity,
        request: &MountRequest,
    ) -> MountResult<Arc<VaultToken>> {
        self.tokens
            .try_get_with(identity.clone(), self.login(http, params, request))
            .await
            .map_err(|e| (*e).clone())
    }

    /// Forgets the identity's token after Vault refused `refused`, unless a newer one already replaced it
    /// (many mounts can see the same 403 at once; only the first should cause a new login).
    pub async fn invalidate(&self, identity: &Identity, refused: &Arc<VaultToken>) {
        if self
            .tokens
            .get(identity)
            .await
            .is_some_and(|current| Arc::ptr_eq(&current, refused))
        {
            self.tokens.invalidate(identity).await;
        }
    }

    async fn login(
        &self,
        http: &VaultHttp,
        params: &VaultParams,
        request: &MountRequest,
    ) -> MountResult<Arc<VaultToken>> {
        let jwt = pod_token(params, request)?;
        let body = Zeroizing::new(serde_json::json!({"role": params.role, "jwt": jwt}).to_string());
        let path = format!("auth/{}/login", params.auth_mount);
        let reply = http
            .send(params, HttpMethod::Post, &path, None, Some(&body))
            .await?;
        if !reply.status.is_success() {
            let kind = if reply.status.is_server_error() {
                ErrorKind::Unavailable
            } else {
                ErrorKind::PermissionDenied
            };
            return Err(MountError::new(
                kind,
                "VaultLoginFailed",
                format!(
                    "Vault login at {path} as role {:?} for service account {}/{} failed ({}): {}",
                    params.role,
                    request.pod.namespace,
                    request.pod.service_account,
                    reply.status.as_u16(),
                    reply.errors()
                ),
            ));
        }
        let parsed: LoginReply = serde_json::from_slice(&reply.body).map_err(|_| {
            MountError::internal(
                "VaultLoginFailed",
                format!("Vault's answer to {path} has no auth.client_token"),
            )
        })?;
        let reuse_for = match parsed.auth.lease_duration {
            0 => NO_TTL_REUSE,
            seconds => Duration::from_secs(seconds * 2 / 3).max(Duration::from_secs(1)),
        };
        Ok(Arc::new(VaultToken {
            token: parsed.auth.client_token,
            reuse_for,
        }))
    }
}

/// The pod's token for the configured audience, or an error naming the `tokenRequests` audience to add.
fn pod_token<'a>(params: &VaultParams, request: &'a MountRequest) -> MountResult<&'a str> {
    if let Some(token) = request.tokens.for_audience(&params.audience) {
        return Ok(token.token.as_str());
    }
    let present: Vec<&str> = request.tokens.audiences().collect();
    Err(MountError::new(
        ErrorKind::FailedPrecondition,
        "MissingServiceAccountToken",
        format!(
            "the driver sent no service-account token for audience {:?}: add `tokenRequests: [{{audience: {}}}]` \
             to the CSIDriver secrets-store.csi.k8s.io (tokens were sent for: {})",
            params.audience,
            params.audience,
            if present.is_empty() {
                "none".to_string()
            } else {
                present.join(", ")
            }
        ),
    ))
}

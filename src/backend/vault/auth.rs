//! Logging in to Vault as the pod, once per identity.
//!
//! The login is `POST /v1/auth/<mount>/login {role, jwt}` with the pod's service-account token for the
//! configured audience (works for Vault's `kubernetes` and `jwt` auth methods). The Vault token is kept per
//! [`Identity`] — address, namespace, auth mount, role, the pod's namespace and service account (and uid
//! with `--login-scope pod`), audience, TLS settings — until two thirds of its TTL (clamped: a server's
//! TTL is not trusted); concurrent logins of one identity are coalesced; the cache is bounded. A caller that
//! gets a 403 invalidates the identity and logs in once more. Callers check the pod's token
//! ([`crate::pod_token`]) before asking for a cached login, so a warm cache answers no one a cold one
//! would refuse.

use std::sync::Arc;
use std::time::Duration;

use moka::Expiry;
use moka::future::Cache;
use serde::Deserialize;
use zeroize::Zeroizing;

use tokio::time::Instant;

use super::client::{VaultCall, VaultHttp};
use super::params::{HttpMethod, TlsParams, VaultParams};
use crate::error::{ErrorKind, MountError, MountResult, Reason};
use crate::pod_token::Caller;

/// How long a token without a TTL (a non-expiring token) is reused before logging in again.
const NO_TTL_REUSE: Duration = Duration::from_secs(3600);
/// The longest a token is reused, whatever TTL the server claims.
const MAX_REUSE: Duration = Duration::from_secs(24 * 3600);

/// Who a Vault token was issued to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub address: String,
    pub namespace: Option<String>,
    pub auth_mount: String,
    pub role: String,
    pub caller: Caller,
    pub audience: String,
    pub tls: TlsParams,
}

impl Identity {
    pub fn of(params: &VaultParams, caller: &Caller) -> Self {
        Self {
            address: params.address.clone(),
            namespace: params.namespace.clone(),
            auth_mount: params.auth_mount.clone(),
            role: params.role.clone(),
            caller: caller.clone(),
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
        _: std::time::Instant,
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
    /// Any JSON number (a hostile server may send a negative, fractional or huge one).
    #[serde(default)]
    lease_duration: Option<serde_json::Number>,
}

/// How long a token whose lease the server gave as `lease` is reused: two thirds of it, at least a
/// second, at most [`MAX_REUSE`]; no lease, zero or a negative one: [`NO_TTL_REUSE`].
fn reuse_for(lease: Option<&serde_json::Number>) -> Duration {
    let seconds = lease
        .and_then(|n| {
            n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| *f >= 1.0)
                    .map(|f| f.min(u64::MAX as f64) as u64)
            })
        })
        .unwrap_or(0);
    if seconds == 0 {
        return NO_TTL_REUSE;
    }
    let capped = seconds.min(MAX_REUSE.as_secs());
    Duration::from_secs(capped * 2 / 3).max(Duration::from_secs(1))
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
    /// `jwt` is the pod's token, already checked to be the identity's own.
    pub async fn token(
        &self,
        http: &VaultHttp,
        params: &VaultParams,
        identity: &Identity,
        jwt: &str,
        deadline: Instant,
    ) -> MountResult<Arc<VaultToken>> {
        self.tokens
            .try_get_with(
                identity.clone(),
                self.login(http, params, identity, jwt, deadline),
            )
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
        identity: &Identity,
        jwt: &str,
        deadline: Instant,
    ) -> MountResult<Arc<VaultToken>> {
        let body = Zeroizing::new(serde_json::json!({"role": params.role, "jwt": jwt}).to_string());
        let path = format!("auth/{}/login", params.auth_mount);
        let call = VaultCall {
            method: HttpMethod::Post,
            path: &path,
            token: None,
            body: Some(&body),
            deadline,
        };
        let reply = http.send(params, call).await?;
        if reply.is_throttled() {
            return Err(reply.throttled_error(&params.address, &path));
        }
        if !reply.status.is_success() {
            let kind = if reply.status.is_server_error() {
                ErrorKind::Unavailable
            } else {
                ErrorKind::PermissionDenied
            };
            return Err(MountError::new(
                kind,
                Reason::VaultLoginFailed,
                format!(
                    "Vault login at {path} as role {:?} for service account {}/{} failed ({}): {}",
                    params.role,
                    identity.caller.namespace,
                    identity.caller.service_account,
                    reply.status.as_u16(),
                    reply.errors()
                ),
            ));
        }
        let parsed: LoginReply = serde_json::from_slice(&reply.body).map_err(|_| {
            MountError::new(
                ErrorKind::Unavailable,
                Reason::VaultBadAnswer,
                format!("Vault's answer to {path} has no auth.client_token"),
            )
        })?;
        Ok(Arc::new(VaultToken {
            token: parsed.auth.client_token,
            reuse_for: reuse_for(parsed.auth.lease_duration.as_ref()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lease_numbers_are_clamped() {
        let number = |text: &str| serde_json::from_str::<serde_json::Number>(text).unwrap();
        assert_eq!(reuse_for(None), NO_TTL_REUSE);
        assert_eq!(reuse_for(Some(&number("0"))), NO_TTL_REUSE);
        assert_eq!(reuse_for(Some(&number("-5"))), NO_TTL_REUSE);
        assert_eq!(reuse_for(Some(&number("3600"))), Duration::from_secs(2400));
        assert_eq!(reuse_for(Some(&number("1"))), Duration::from_secs(1));
        let most = MAX_REUSE.as_secs() * 2 / 3;
        for huge in ["18446744073709551615", "1e300", "9223372036854775807"] {
            assert_eq!(
                reuse_for(Some(&number(huge))),
                Duration::from_secs(most),
                "{huge}"
            );
        }
        assert_eq!(reuse_for(Some(&number("0.5"))), NO_TTL_REUSE);
    }
}

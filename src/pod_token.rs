//! The pod's service-account token for a backend's audience, shared by every backend that logs in as
//! the pod.
//!
//! Kubelet mints the tokens (`csi.storage.k8s.io/serviceAccount.tokens`, one per `tokenRequests`
//! audience of the CSIDriver). Every mount must present one, even when a login or a value for its identity
//! is already cached: the token's `sub` claim (read here without verifying the signature — the backend
//! verifies it on login) must name the service account kubelet reported for the pod,
//! `system:serviceaccount:<namespace>:<name>`. So a pod that sends no token, or another identity's
//! token, gets the same answer whether the cache is warm or cold.

use std::sync::Arc;

use base64::Engine;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::error::{ErrorKind, MountError, MountResult, Reason};
use crate::kubernetes::{Kubernetes, MintFor};
use crate::request::{MountRequest, is_namespace_name};

/// Whose login a backend token is: the pod's service account (shared by its pods) or the pod itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum LoginScope {
    /// One login per service account (and backend role, address, audience …), shared by its pods.
    #[default]
    ServiceAccount,
    /// One login per pod (adds the pod's uid): for backend roles bound to pod-level claims.
    Pod,
}

/// Who a mount fetches as, from kubelet's attributes, checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller {
    pub namespace: String,
    pub service_account: String,
    /// The pod's uid with [`LoginScope::Pod`], empty otherwise.
    pub pod_uid: String,
}

impl Caller {
    /// The identity of the request's pod. Caches are keyed by it, so it must come from kubelet, never be
    /// empty.
    pub fn of(request: &MountRequest, scope: LoginScope) -> MountResult<Self> {
        let pod = &request.pod;
        if pod.namespace.is_empty() || pod.service_account.is_empty() {
            return Err(missing_pod_info("no pod namespace or service account"));
        }
        if scope == LoginScope::Pod && pod.uid.is_empty() {
            return Err(missing_pod_info(
                "no pod uid (the provider runs with --login-scope pod)",
            ));
        }
        if !is_namespace_name(&pod.namespace) {
            return Err(MountError::invalid(
                Reason::InvalidPodInfo,
                "the pod namespace the driver sent is not a Kubernetes namespace name",
            ));
        }
        Ok(Self {
            namespace: pod.namespace.clone(),
            service_account: pod.service_account.clone(),
            pod_uid: match scope {
                LoginScope::Pod => pod.uid.clone(),
                LoginScope::ServiceAccount => String::new(),
            },
        })
    }

    /// The `sub` claim of this service account's tokens.
    pub fn subject(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.service_account
        )
    }
}

fn missing_pod_info(what: &str) -> MountError {
    MountError::new(
        ErrorKind::FailedPrecondition,
        Reason::MissingPodInfo,
        format!(
            "the driver sent {what}: the CSIDriver secrets-store.csi.k8s.io needs podInfoOnMount: true"
        ),
    )
}

/// The pod's token for `audience`, after checking that it is the pod's own (see the module doc).
pub fn for_audience<'a>(
    request: &'a MountRequest,
    caller: &Caller,
    audience: &str,
) -> MountResult<&'a str> {
    let Some(token) = request.tokens.for_audience(audience) else {
        return Err(missing_token(request, audience));
    };
    let token = token.token.as_str();
    if subject_of(token).as_deref() != Some(caller.subject().as_str()) {
        return Err(MountError::new(
            ErrorKind::PermissionDenied,
            Reason::ServiceAccountTokenMismatch,
            format!(
                "the service-account token for audience {audience:?} is not a token of service account \
                 {}/{} (its subject claim differs or it is not a JWT)",
                caller.namespace, caller.service_account
            ),
        ));
    }
    Ok(token)
}

/// Where a backend gets the pod's token: the driver's, or (with `--token-request-fallback`) one minted
/// for the pod's service account through the Kubernetes API when the driver sent none for the audience.
/// A minted token is the service account kubelet reported, bound to the pod, so it needs no subject
/// check.
#[derive(Clone, Default)]
pub struct TokenSource {
    kubernetes: Option<Arc<Kubernetes>>,
    /// Mint tokens bound to no pod (the sync controller, whose requests name only a service account).
    unbound: bool,
    /// The audiences unbound tokens may be minted for (the SecretProviderClass names the audience, and
    /// its authors are not trusted with tokens for any audience, the API server's among them).
    allowed_audiences: Arc<[String]>,
}

impl TokenSource {
    /// Mints tokens through `kubernetes` when its fallback is on.
    pub fn new(kubernetes: Option<Arc<Kubernetes>>) -> Self {
        Self {
            kubernetes: kubernetes.filter(|k| k.token_request_fallback),
            unbound: false,
            allowed_audiences: Arc::new([]),
        }
    }

    /// Always mints through `kubernetes`, tokens bound to no pod, for `allowed_audiences` only: for the
    /// sync controller, which fetches as the service account a SecretSync names (in its own namespace)
    /// and has no driver tokens.
    pub fn unbound(kubernetes: Arc<Kubernetes>, allowed_audiences: Vec<String>) -> Self {
        Self {
            kubernetes: Some(kubernetes),
            unbound: true,
            allowed_audiences: allowed_audiences.into(),
        }
    }

    /// The pod's token for `audience`, an audience the SecretProviderClass chose (see [`for_audience`]
    /// for the driver's; a minted one must be in the sync controller's allowed audiences).
    pub async fn token(
        &self,
        request: &MountRequest,
        caller: &Caller,
        audience: &str,
    ) -> MountResult<Zeroizing<String>> {
        self.token_checked(request, caller, audience, true).await
    }

    /// The pod's token for an audience the backend's own code or the admin fixes (AWS STS, EKS Pod
    /// Identity, the GCP workload identity pool), which no SecretProviderClass can change.
    pub async fn token_for_fixed_audience(
        &self,
        request: &MountRequest,
        caller: &Caller,
        audience: &str,
    ) -> MountResult<Zeroizing<String>> {
        self.token_checked(request, caller, audience, false).await
    }

    async fn token_checked(
        &self,
        request: &MountRequest,
        caller: &Caller,
        audience: &str,
        chosen: bool,
    ) -> MountResult<Zeroizing<String>> {
        if request.tokens.for_audience(audience).is_some() {
            return for_audience(request, caller, audience).map(|t| Zeroizing::new(t.to_string()));
        }
        let Some(kubernetes) = &self.kubernetes else {
            return Err(missing_token(request, audience));
        };
        let pod = &request.pod;
        if self.unbound && chosen && !self.allowed_audiences.iter().any(|a| a == audience) {
            let shown: String = audience.chars().take(128).collect();
            return Err(MountError::new(
                ErrorKind::PermissionDenied,
                Reason::TokenAudienceNotAllowed,
                format!(
                    "the sync controller mints tokens only for the audiences of \
                     --sync-allowed-audiences ({}), not {shown:?}",
                    self.allowed_audiences.join(", ")
                ),
            ));
        }
        if !self.unbound && (pod.name.is_empty() || pod.uid.is_empty()) {
            return Err(missing_pod_info(
                "no pod name or uid, which a minted token is bound to",
            ));
        }
        let mint = MintFor {
            namespace: &caller.namespace,
            service_account: &caller.service_account,
            pod: (!self.unbound).then_some((pod.name.as_str(), pod.uid.as_str())),
        };
        kubernetes
            .mint_token(&mint, audience, request.deadline())
            .await
    }
}

fn missing_token(request: &MountRequest, audience: &str) -> MountError {
    let present: Vec<&str> = request.tokens.audiences().collect();
    MountError::new(
        ErrorKind::FailedPrecondition,
        Reason::MissingServiceAccountToken,
        format!(
            "the driver sent no service-account token for audience {audience:?}: add \
             `tokenRequests: [{{audience: {audience}}}]` to the CSIDriver secrets-store.csi.k8s.io, \
             or start the provider with --token-request-fallback (tokens were sent for: {})",
            if present.is_empty() {
                "none".to_string()
            } else {
                present.join(", ")
            }
        ),
    )
}

/// The `sub` claim of a JWT, read without verifying it; `None` when the token is not a JWT with one.
fn subject_of(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Claims {
        sub: String,
    }
    let payload = token.split('.').nth(1)?;
    if payload.len() > 64 * 1024 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<Claims>(&bytes).ok().map(|c| c.sub)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{ServiceAccountToken, ServiceAccountTokens};
    use std::collections::BTreeMap;
    use zeroize::Zeroizing;

    fn jwt(claims: &str) -> String {
        let encode = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", encode(r#"{"alg":"RS256"}"#), encode(claims))
    }

    fn request(token: Option<String>) -> MountRequest {
        let mut request = MountRequest::default();
        request.pod.namespace = "apps".into();
        request.pod.service_account = "web".into();
        request.pod.uid = "u-1".into();
        if let Some(token) = token {
            request.tokens = ServiceAccountTokens(BTreeMap::from([(
                "vault".to_string(),
                ServiceAccountToken {
                    token: Zeroizing::new(token),
                    expiration_timestamp: String::new(),
                },
            )]));
        }
        request
    }

    #[test]
    fn only_the_pods_own_token_passes() {
        let own = request(Some(jwt(r#"{"sub":"system:serviceaccount:apps:web"}"#)));
        let identity = Caller::of(&own, LoginScope::ServiceAccount).unwrap();
        assert!(for_audience(&own, &identity, "vault").is_ok());
        assert_eq!(
            for_audience(&own, &identity, "aws").unwrap_err().reason,
            Reason::MissingServiceAccountToken
        );
        for token in [
            jwt(r#"{"sub":"system:serviceaccount:apps:admin"}"#),
            jwt(r#"{"sub":"system:serviceaccount:other:web"}"#),
            jwt(r#"{"iss":"x"}"#),
            "not-a-jwt".to_string(),
            "a.%%%.c".to_string(),
        ] {
            let other = request(Some(token.clone()));
            let error = for_audience(&other, &identity, "vault").unwrap_err();
            assert_eq!(error.kind, ErrorKind::PermissionDenied, "{token}");
            assert!(!error.message.contains(&token));
        }
        let error = for_audience(&request(None), &identity, "vault").unwrap_err();
        assert_eq!(error.kind, ErrorKind::FailedPrecondition);
    }

    #[test]
    fn identities_come_from_kubelet() {
        let pod = request(None);
        assert_eq!(Caller::of(&pod, LoginScope::Pod).unwrap().pod_uid, "u-1");
        assert_eq!(
            Caller::of(&pod, LoginScope::ServiceAccount)
                .unwrap()
                .pod_uid,
            ""
        );
        let mut anonymous = pod.clone();
        anonymous.pod.service_account.clear();
        assert_eq!(
            Caller::of(&anonymous, LoginScope::ServiceAccount)
                .unwrap_err()
                .reason,
            Reason::MissingPodInfo
        );
        let mut no_uid = pod;
        no_uid.pod.uid.clear();
        assert!(Caller::of(&no_uid, LoginScope::Pod).is_err());
    }
}

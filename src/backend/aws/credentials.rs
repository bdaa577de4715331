//! AWS credentials as the pod, never the node's role or static keys: IRSA (the pod's token for
//! `sts.amazonaws.com` → `AssumeRoleWithWebIdentity` for the role in its service account's
//! `eks.amazonaws.com/role-arn` annotation) or EKS Pod Identity (the pod's token for
//! `pods.eks.amazonaws.com` → the Pod Identity Agent's container-credentials answer).
//!
//! Credentials are kept per [`Principal`] until [`REFRESH_BEFORE`] their expiry. The backend checks the
//! pod's token before every lookup ([`crate::pod_token`]), so a kept session is only ever handed to a pod
//! that presented its service account's own token.

use std::time::{Duration, SystemTime};

use aws_sdk_secretsmanager::config::Credentials;
use aws_sdk_sts::primitives::{DateTime, DateTimeFormat};
use serde::Deserialize;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::client::{CallFailure, FailureClass, with_retries};
use super::params::AddressType;
use crate::backend::kept::{Expiring, Kept};
use crate::error::{ErrorKind, MountError, MountResult, Reason};

/// The audience of IRSA tokens.
pub const IRSA_AUDIENCE: &str = "sts.amazonaws.com";
/// The audience of EKS Pod Identity tokens.
pub const POD_IDENTITY_AUDIENCE: &str = "pods.eks.amazonaws.com";
/// The service-account annotation naming the IRSA role.
pub const ROLE_ANNOTATION: &str = "eks.amazonaws.com/role-arn";
/// The Pod Identity Agent's addresses.
pub const POD_IDENTITY_IPV4: &str = "http://169.254.170.23/v1/credentials";
pub const POD_IDENTITY_IPV6: &str = "http://[fd00:ec2::23]/v1/credentials";

/// Credentials closer than this to their expiry are fetched anew.
pub const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);
/// Largest Pod Identity Agent answer read.
const MAX_AGENT_ANSWER: usize = 64 * 1024;

/// Whose credentials: everything that changes what AWS lets the pod read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    Role {
        role_arn: String,
        namespace: String,
        service_account: String,
        /// The pod's uid with `--login-scope pod`, empty otherwise.
        pod_uid: String,
        /// The region whose STS was asked.
        region: String,
    },
    PodIdentity {
        namespace: String,
        service_account: String,
        /// The pod's uid with `--login-scope pod`, empty otherwise.
        pod_uid: String,
        /// The agent asked (an admin flag or the address type the SecretProviderClass prefers).
        endpoint: String,
    },
}

impl Principal {
    /// How errors name it.
    pub fn describe(&self) -> String {
        match self {
            Self::Role { role_arn, .. } => format!("role {role_arn}"),
            Self::PodIdentity {
                namespace,
                service_account,
                ..
            } => format!("the EKS Pod Identity association of {namespace}/{service_account}"),
        }
    }
}

/// Credentials for one principal.
#[derive(Debug, Clone)]
pub struct Session {
    pub credentials: Credentials,
    pub expires: SystemTime,
}

impl Expiring for Session {
    fn is_fresh(&self) -> bool {
        self.expires
            .duration_since(SystemTime::now())
            .is_ok_and(|left| left > REFRESH_BEFORE)
    }
}

/// Kept sessions, by principal.
pub type Sessions = Kept<Principal, Session>;

/// `AssumeRoleWithWebIdentity` as the pod.
pub async fn assume_role(
    sts: &aws_sdk_sts::Client,
    role_arn: &str,
    session_name: &str,
    token: &str,
    deadline: Instant,
) -> MountResult<Session> {
    // Throttling, 5xx and no answer are retried within the deadline, as for reads.
    let answer = with_retries(deadline, || async {
        sts.assume_role_with_web_identity()
            .role_arn(role_arn)
            .role_session_name(session_name)
            .web_identity_token(token)
            .send()
            .await
            .map_err(CallFailure::of)
    })
    .await
    .map_err(|failure| match failure.class {
        FailureClass::Client => MountError::new(
            ErrorKind::PermissionDenied,
            Reason::AwsLoginFailed,
            format!(
                "STS refused AssumeRoleWithWebIdentity for {role_arn} with the pod's token ({}: {}): \
                 check the role's trust policy names this cluster's OIDC provider and the service \
                 account",
                if failure.code.is_empty() { "error" } else { &failure.code },
                failure.message
            ),
        ),
        FailureClass::Throttled => MountError::exhausted(
            Reason::BackendThrottled,
            format!("STS throttled AssumeRoleWithWebIdentity for {role_arn}, still after retries"),
        ),
        FailureClass::Server | FailureClass::Unreachable => {
            unreachable_sts(role_arn, &failure.message)
        }
    })?;
    let Some(credentials) = answer.credentials() else {
        return Err(bad_answer("STS answered without credentials"));
    };
    let expires = SystemTime::try_from(*credentials.expiration())
        .map_err(|_| bad_answer("STS answered credentials with an unreadable expiry"))?;
    Ok(Session {
        credentials: Credentials::new(
            credentials.access_key_id(),
            credentials.secret_access_key(),
            Some(credentials.session_token().to_string()),
            Some(expires),
            "openclaw-irsa",
        ),
        expires,
    })
}

fn unreachable_sts(role_arn: &str, why: &str) -> MountError {
    MountError::new(
        ErrorKind::Unavailable,
        Reason::AwsUnreachable,
        format!("STS could not be asked for {role_arn}'s credentials: {why}"),
    )
}

fn bad_answer(message: &str) -> MountError {
    MountError::new(ErrorKind::Unavailable, Reason::BackendBadAnswer, message)
}

/// The session name of a role session: `openclaw-<namespace>-<service account>` (the session is shared
/// by the account's pods, so CloudTrail names the account, not one pod), within AWS's 64 characters of
/// `[\w+=,.@-]`.
pub fn session_name(namespace: &str, service_account: &str) -> String {
    let name: String = format!("openclaw-{namespace}-{service_account}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    name
}

/// The Pod Identity Agent addresses to try, in order.
pub fn agent_endpoints(admin_endpoint: Option<&str>, preferred: AddressType) -> Vec<String> {
    if let Some(endpoint) = admin_endpoint {
        return vec![endpoint.to_string()];
    }
    match preferred {
        AddressType::Ipv4 => vec![POD_IDENTITY_IPV4.into()],
        AddressType::Ipv6 => vec![POD_IDENTITY_IPV6.into()],
        AddressType::Auto => vec![POD_IDENTITY_IPV4.into(), POD_IDENTITY_IPV6.into()],
    }
}

/// The container-credentials answer of the Pod Identity Agent.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AgentCredentials {
    access_key_id: String,
    secret_access_key: Zeroizing<String>,
    token: Zeroizing<String>,
    expiration: String,
}

/// Asks the Pod Identity Agent at `endpoint` for the pod's credentials with its token.
pub async fn pod_identity(
    http: &reqwest::Client,
    endpoint: &str,
    token: &str,
    deadline: Instant,
) -> MountResult<Session> {
    let unreachable = |why: String| {
        MountError::new(
            ErrorKind::Unavailable,
            Reason::AwsUnreachable,
            format!("the EKS Pod Identity Agent at {endpoint} could not be asked: {why}"),
        )
    };
    let call = async {
        let mut response = http
            .get(endpoint)
            .header(http::header::AUTHORIZATION, token)
            .send()
            .await
            .map_err(|e| unreachable(super::client::short(&e.without_url().to_string())))?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| unreachable(super::client::short(&e.without_url().to_string())))?
        {
            if body.len() + chunk.len() > MAX_AGENT_ANSWER {
                return Err(bad_answer("the Pod Identity Agent's answer is too large"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, Zeroizing::new(body)))
    };
    let (status, body) = tokio::time::timeout_at(deadline, call)
        .await
        .map_err(|_| unreachable("it did not answer in time".into()))??;
    if status.is_server_error() {
        return Err(unreachable(format!("it answered {}", status.as_u16())));
    }
    if !status.is_success() {
        return Err(MountError::new(
            ErrorKind::PermissionDenied,
            Reason::AwsLoginFailed,
            format!(
                "the EKS Pod Identity Agent refused the pod's token ({}): check the cluster has a \
                 Pod Identity association for this service account",
                status.as_u16()
            ),
        ));
    }
    let answer: AgentCredentials = serde_json::from_slice(&body)
        .map_err(|_| bad_answer("the Pod Identity Agent's answer is not container credentials"))?;
    let expires = DateTime::from_str(&answer.expiration, DateTimeFormat::DateTime)
        .ok()
        .and_then(|t| SystemTime::try_from(t).ok())
        .ok_or_else(|| {
            bad_answer("the Pod Identity Agent's credentials have an unreadable expiry")
        })?;
    Ok(Session {
        credentials: Credentials::new(
            answer.access_key_id,
            answer.secret_access_key.to_string(),
            Some(answer.token.to_string()),
            Some(expires),
            "openclaw-pod-identity",
        ),
        expires,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_fit_aws_limits() {
        assert_eq!(
            session_name("openclaw", "gateway-7d9"),
            "openclaw-openclaw-gateway-7d9"
        );
        let long = session_name(&"n".repeat(63), &"p".repeat(253));
        assert_eq!(long.len(), 64);
    }

    #[test]
    fn agent_endpoints_follow_the_admin_then_the_preference() {
        assert_eq!(
            agent_endpoints(None, AddressType::Auto),
            [POD_IDENTITY_IPV4, POD_IDENTITY_IPV6]
        );
        assert_eq!(
            agent_endpoints(None, AddressType::Ipv6),
            [POD_IDENTITY_IPV6]
        );
        assert_eq!(
            agent_endpoints(Some("http://127.0.0.1:1/c"), AddressType::Ipv6),
            ["http://127.0.0.1:1/c"]
        );
    }
}

//! GCP access tokens as the pod (PROVIDERS.md §3.4): the pod's Kubernetes token for the workload
//! identity pool → STS token exchange → if its service account is annotated
//! `iam.gke.io/gcp-service-account`, IAM Credentials `generateAccessToken` for that Google service
//! account (through the `…-delegates` chain when annotated); otherwise the federated token itself.
//!
//! The pool comes from the admin: on GKE the project (and the cluster's location and name, from flags
//! or the metadata server), elsewhere an `external_account` credentials file, whose `audience` is sent
//! to STS verbatim and whose `service_account_impersonation_url` is ignored (only the pod's own service
//! account decides impersonation, else every pod would get that account's access).
//!
//! Tokens are kept per [`Principal`] until shortly before they expire (the official provider exchanges
//! on every mount); the backend checks the pod's Kubernetes token on every mount before a kept one is
//! used ([`crate::pod_token`]).

use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::client::{CallFailure, FailureClass, Http};
use crate::backend::kept::{Expiring, Kept};
use crate::error::{ErrorKind, MountError, MountResult, Reason};

/// The scope every token is asked for.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// The service-account annotation naming the Google service account to impersonate.
pub const GSA_ANNOTATION: &str = "iam.gke.io/gcp-service-account";
/// The annotation holding the delegation chain (a JSON list of service-account emails).
pub const DELEGATES_ANNOTATION: &str = "iam.gke.io/gcp-service-account-delegates";
/// GKE's token exchange, as the official provider calls it.
pub const GKE_STS_ENDPOINT: &str = "https://securetoken.googleapis.com/v1/identitybindingtoken";
/// The standard STS endpoint (an `external_account` file's usual `token_url`).
pub const STS_ENDPOINT: &str = "https://sts.googleapis.com/v1/token";
pub const IAM_CREDENTIALS_ENDPOINT: &str = "https://iamcredentials.googleapis.com";
pub const METADATA_ENDPOINT: &str = "http://metadata.google.internal";

/// Tokens closer than this to their expiry are fetched anew (or half their lifetime, if shorter).
const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);
/// The lifetime asked of impersonated tokens.
const IMPERSONATED_LIFETIME_SECS: u64 = 3600;
/// Longest service-account email accepted.
const MAX_EMAIL_LEN: usize = 254;
/// Most delegates accepted.
const MAX_DELEGATES: usize = 10;

/// Where pods' tokens are exchanged, and for what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// The audience of the pod's Kubernetes token.
    pub token_audience: String,
    /// The STS `audience`.
    pub sts_audience: String,
    /// The full URL of the token exchange.
    pub sts_endpoint: String,
}

impl Pool {
    /// GKE Workload Identity: pool `<project>.svc.id.goog`, provider the cluster.
    pub fn gke(project: &str, location: &str, cluster: &str, sts: Option<&str>) -> Self {
        let pool = format!("{project}.svc.id.goog");
        Self {
            sts_audience: format!(
                "identitynamespace:{pool}:https://container.googleapis.com/v1/projects/{project}/\
                 locations/{location}/clusters/{cluster}"
            ),
            token_audience: pool,
            sts_endpoint: sts.unwrap_or(GKE_STS_ENDPOINT).to_string(),
        }
    }

    /// Workload identity federation (or a fleet) from an `external_account` credentials file.
    pub fn from_external_account(json: &[u8], sts: Option<&str>) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct ExternalAccount {
            #[serde(rename = "type")]
            kind: String,
            audience: String,
            #[serde(default)]
            token_url: Option<String>,
        }
        let file: ExternalAccount = serde_json::from_slice(json)
            .map_err(|e| format!("not an external_account credentials file: {e}"))?;
        if file.kind != "external_account" {
            return Err(format!(
                "its type is {:?}; only \"external_account\" names a pool",
                file.kind
            ));
        }
        if file.audience.trim().is_empty() {
            return Err("it has no audience".into());
        }
        // The fleet form `identitynamespace:POOL:PROVIDER`: the pod's token is for POOL.
        let token_audience = match file.audience.strip_prefix("identitynamespace:") {
            Some(rest) => rest
                .split_once(':')
                .map_or(rest, |(pool, _)| pool)
                .to_string(),
            None => file.audience.clone(),
        };
        Ok(Self {
            token_audience,
            sts_audience: file.audience,
            sts_endpoint: sts
                .map(str::to_string)
                .or(file.token_url)
                .unwrap_or_else(|| STS_ENDPOINT.to_string()),
        })
    }
}

/// Whose token: everything that changes what GCP lets the holder read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    Pod {
        sts_audience: String,
        namespace: String,
        service_account: String,
        /// The pod's uid with `--login-scope pod`, empty otherwise.
        pod_uid: String,
        /// The Google service account impersonated, and its delegation chain.
        impersonate: Option<(String, Vec<String>)>,
    },
    /// The provider's own credentials (`auth: provider-adc`).
    Provider,
}

impl Principal {
    /// How errors name it.
    pub fn describe(&self) -> String {
        match self {
            Self::Pod {
                impersonate: Some((email, _)),
                ..
            } => format!("Google service account {email}"),
            Self::Pod {
                namespace,
                service_account,
                ..
            } => format!("Kubernetes service account {namespace}/{service_account}"),
            Self::Provider => "the provider's own credentials".into(),
        }
    }
}

/// An access token and when it is no longer used.
pub struct AccessToken {
    pub token: Zeroizing<String>,
    refresh_at: Instant,
}

impl AccessToken {
    fn new(token: String, lifetime: Duration) -> Self {
        let margin = REFRESH_BEFORE.min(lifetime / 2);
        Self {
            token: Zeroizing::new(token),
            refresh_at: Instant::now() + lifetime.saturating_sub(margin),
        }
    }
}

impl Expiring for AccessToken {
    fn is_fresh(&self) -> bool {
        Instant::now() < self.refresh_at
    }
}

/// Kept tokens, by principal.
pub type Tokens = Kept<Principal, AccessToken>;

/// The Google service account (and delegates) a Kubernetes service account's annotations name, checked.
pub fn impersonation_of(
    annotations: &std::collections::BTreeMap<String, String>,
    account: &str,
) -> MountResult<Option<(String, Vec<String>)>> {
    let Some(email) = annotations
        .get(GSA_ANNOTATION)
        .map(|e| e.trim())
        .filter(|e| !e.is_empty())
    else {
        return Ok(None);
    };
    let bad = |why: &str| {
        MountError::new(
            ErrorKind::FailedPrecondition,
            Reason::GcpLoginFailed,
            format!("service account {account}: {why}"),
        )
    };
    check_email(email).map_err(|_| {
        bad(&format!(
            "its {GSA_ANNOTATION} annotation is not a service-account email"
        ))
    })?;
    let delegates: Vec<String> = match annotations.get(DELEGATES_ANNOTATION).map(|d| d.trim()) {
        None | Some("") => Vec::new(),
        Some(text) => serde_json::from_str(text).map_err(|_| {
            bad(&format!(
                "its {DELEGATES_ANNOTATION} annotation is not a JSON list of emails"
            ))
        })?,
    };
    if delegates.len() > MAX_DELEGATES || delegates.iter().any(|d| check_email(d).is_err()) {
        return Err(bad(&format!(
            "its {DELEGATES_ANNOTATION} annotation must list at most {MAX_DELEGATES} \
             service-account emails"
        )));
    }
    Ok(Some((email.to_string(), delegates)))
}

/// A service-account email: it becomes part of a URL path.
fn check_email(email: &str) -> Result<(), ()> {
    let (user, domain) = email.split_once('@').ok_or(())?;
    let part = |text: &str, extra: &[u8]| {
        !text.is_empty()
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || extra.contains(&b))
    };
    (email.len() <= MAX_EMAIL_LEN && part(user, b"._") && part(domain, b"."))
        .then_some(())
        .ok_or(())
}

/// The token exchange: the pod's Kubernetes token for a federated access token.
pub async fn exchange(
    http: &Http,
    pool: &Pool,
    pod_token: &str,
    deadline: Instant,
) -> MountResult<AccessToken> {
    #[derive(Deserialize)]
    struct Answer {
        access_token: String,
        #[serde(default)]
        expires_in: Option<u64>,
    }
    let fields = [
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        ("audience", pool.sts_audience.as_str()),
        ("scope", CLOUD_PLATFORM_SCOPE),
        (
            "requested_token_type",
            "urn:ietf:params:oauth:token-type:access_token",
        ),
        ("subject_token", pod_token),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
    ];
    // GKE's identitybindingtoken takes JSON (as the official provider sends it); STS v1 the RFC 8693
    // form, as Google's auth libraries send it.
    let json = pool.sts_endpoint.ends_with("/identitybindingtoken");
    let body: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    let answer = http
        .send(deadline, |client| {
            let post = client.post(&pool.sts_endpoint);
            if json {
                post.json(&body)
            } else {
                post.form(&fields)
            }
        })
        .await
        .map_err(|failure| login_error("the token exchange (STS)", &pool.sts_endpoint, failure))?;
    let answer: Answer = serde_json::from_slice(&answer).map_err(|_| {
        bad_login_answer("the token exchange (STS)", "no access_token in its answer")
    })?;
    Ok(AccessToken::new(
        answer.access_token,
        Duration::from_secs(answer.expires_in.unwrap_or(3600).clamp(60, 12 * 3600)),
    ))
}

/// IAM Credentials `generateAccessToken` for `email`, as the holder of `federated`.
pub async fn impersonate(
    http: &Http,
    iam_endpoint: &str,
    federated: &str,
    email: &str,
    delegates: &[String],
    deadline: Instant,
) -> MountResult<AccessToken> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Answer {
        access_token: String,
        #[serde(default)]
        expire_time: Option<String>,
    }
    let url = format!("{iam_endpoint}/v1/projects/-/serviceAccounts/{email}:generateAccessToken");
    let body = serde_json::json!({
        "scope": [CLOUD_PLATFORM_SCOPE],
        "delegates": delegates
            .iter()
            .map(|d| format!("projects/-/serviceAccounts/{d}"))
            .collect::<Vec<_>>(),
        "lifetime": format!("{IMPERSONATED_LIFETIME_SECS}s"),
    });
    let step = format!("impersonating {email} (IAM Credentials generateAccessToken)");
    let answer = http
        .send(deadline, |client| {
            client.post(&url).bearer_auth(federated).json(&body)
        })
        .await
        .map_err(|failure| login_error(&step, iam_endpoint, failure))?;
    let answer: Answer = serde_json::from_slice(&answer)
        .map_err(|_| bad_login_answer(&step, "no accessToken in its answer"))?;
    let lifetime = answer
        .expire_time
        .as_deref()
        .and_then(seconds_until)
        .unwrap_or(IMPERSONATED_LIFETIME_SECS)
        .clamp(60, IMPERSONATED_LIFETIME_SECS);
    Ok(AccessToken::new(
        answer.access_token,
        Duration::from_secs(lifetime),
    ))
}

/// The provider's own token from the metadata server (`auth: provider-adc`).
pub async fn provider_token(
    http: &Http,
    metadata_endpoint: &str,
    deadline: Instant,
) -> MountResult<AccessToken> {
    #[derive(Deserialize)]
    struct Answer {
        access_token: String,
        #[serde(default)]
        expires_in: Option<u64>,
    }
    let url =
        format!("{metadata_endpoint}/computeMetadata/v1/instance/service-accounts/default/token");
    let step = "the provider's own credentials (metadata server)";
    let answer = http
        .send(deadline, |client| {
            client.get(&url).header("Metadata-Flavor", "Google")
        })
        .await
        .map_err(|failure| login_error(step, metadata_endpoint, failure))?;
    let answer: Answer = serde_json::from_slice(&answer)
        .map_err(|_| bad_login_answer(step, "no access_token in its answer"))?;
    Ok(AccessToken::new(
        answer.access_token,
        Duration::from_secs(answer.expires_in.unwrap_or(3600).clamp(60, 12 * 3600)),
    ))
}

/// One value of the metadata server (`project/project-id`, `instance/attributes/cluster-name` …).
pub async fn metadata_value(
    http: &Http,
    metadata_endpoint: &str,
    path: &str,
    deadline: Instant,
) -> MountResult<String> {
    let url = format!("{metadata_endpoint}/computeMetadata/v1/{path}");
    let value = http
        .send(deadline, |client| {
            client.get(&url).header("Metadata-Flavor", "Google")
        })
        .await
        .map_err(|failure| {
            MountError::new(
                ErrorKind::FailedPrecondition,
                Reason::GcpNotConfigured,
                format!(
                    "the GCP workload identity pool is not configured (--gcp-project with \
                     --gcp-cluster-location and --gcp-cluster-name, or GOOGLE_APPLICATION_CREDENTIALS \
                     naming an external_account file), and the metadata server did not tell {path}: \
                     {}",
                    failure.said()
                ),
            )
        })?;
    Ok(String::from_utf8_lossy(&value).trim().to_string())
}

/// Seconds until an RFC 3339 time (0 when it is past).
fn seconds_until(rfc3339: &str) -> Option<u64> {
    let at: k8s_openapi::jiff::Timestamp = rfc3339.trim().parse().ok()?;
    let now = k8s_openapi::jiff::Timestamp::now();
    Some(u64::try_from(at.as_second() - now.as_second()).unwrap_or(0))
}

/// A refused or failed login step, naming the step and why.
fn login_error(step: &str, endpoint: &str, failure: CallFailure) -> MountError {
    let said = failure.said();
    match failure.class {
        FailureClass::Unreachable | FailureClass::Server => MountError::new(
            ErrorKind::Unavailable,
            Reason::GcpUnavailable,
            format!("{step} at {endpoint} failed: {said}"),
        ),
        FailureClass::Throttled => MountError::exhausted(
            Reason::BackendThrottled,
            format!("{step} at {endpoint} throttled, still after retries: {said}"),
        ),
        FailureClass::Client => MountError::new(
            ErrorKind::PermissionDenied,
            Reason::GcpLoginFailed,
            format!("{step} refused the pod: {said}"),
        ),
    }
}

fn bad_login_answer(step: &str, why: &str) -> MountError {
    MountError::new(
        ErrorKind::Unavailable,
        Reason::GcpUnavailable,
        format!("{step}: {why}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn pools_from_gke_and_from_credentials_files() {
        let gke = Pool::gke("acme", "us-central1", "c1", None);
        assert_eq!(gke.token_audience, "acme.svc.id.goog");
        assert_eq!(
            gke.sts_audience,
            "identitynamespace:acme.svc.id.goog:https://container.googleapis.com/v1/projects/acme/\
             locations/us-central1/clusters/c1"
        );
        assert_eq!(gke.sts_endpoint, GKE_STS_ENDPOINT);
        let federation = Pool::from_external_account(
            br#"{"type":"external_account","audience":"//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k","token_url":"https://sts.example/v1/token","service_account_impersonation_url":"https://ignored"}"#,
            None,
        )
        .unwrap();
        assert_eq!(federation.token_audience, federation.sts_audience);
        assert_eq!(federation.sts_endpoint, "https://sts.example/v1/token");
        let fleet = Pool::from_external_account(
            br#"{"type":"external_account","audience":"identitynamespace:fleet.svc.id.goog:https://gkehub.googleapis.com/projects/1/locations/global/memberships/m"}"#,
            Some("http://127.0.0.1:1/v1/token"),
        )
        .unwrap();
        assert_eq!(fleet.token_audience, "fleet.svc.id.goog");
        assert_eq!(fleet.sts_endpoint, "http://127.0.0.1:1/v1/token");
        assert!(Pool::from_external_account(br#"{"type":"service_account"}"#, None).is_err());
    }

    #[test]
    fn impersonation_comes_only_from_checked_annotations() {
        let of = |pairs: &[(&str, &str)]| {
            let map: BTreeMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            impersonation_of(&map, "ns/sa")
        };
        assert_eq!(of(&[]).unwrap(), None);
        assert_eq!(
            of(&[(GSA_ANNOTATION, "app@acme.iam.gserviceaccount.com")]).unwrap(),
            Some(("app@acme.iam.gserviceaccount.com".into(), vec![]))
        );
        let chained = of(&[
            (GSA_ANNOTATION, "app@acme.iam.gserviceaccount.com"),
            (
                DELEGATES_ANNOTATION,
                r#"["hop@acme.iam.gserviceaccount.com"]"#,
            ),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(chained.1, ["hop@acme.iam.gserviceaccount.com"]);
        for hostile in [
            "app@acme/../../x",
            "app@acme?x=1",
            "no-at-sign",
            "app@acme.com:generateIdToken#",
        ] {
            assert_eq!(
                of(&[(GSA_ANNOTATION, hostile)]).unwrap_err().reason,
                Reason::GcpLoginFailed,
                "{hostile}"
            );
        }
        assert!(
            of(&[
                (GSA_ANNOTATION, "app@acme.iam.gserviceaccount.com"),
                (DELEGATES_ANNOTATION, r#"["../x"]"#)
            ])
            .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_kept_until_shortly_before_they_expire() {
        let tokens = Tokens::new(10);
        let principal = Principal::Provider;
        let loads = std::sync::atomic::AtomicUsize::new(0);
        let load = || async {
            loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(AccessToken::new("t".into(), Duration::from_secs(3600)))
        };
        tokens.get(&principal, load()).await.unwrap();
        tokens.get(&principal, load()).await.unwrap();
        assert_eq!(loads.load(std::sync::atomic::Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(3600 - 299)).await;
        tokens.get(&principal, load()).await.unwrap();
        assert_eq!(loads.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}

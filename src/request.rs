//! The Mount request as the driver sends it, parsed into one typed [`MountRequest`] that backends receive.
//!
//! Everything here is untrusted input: pod authors can set any attribute through `volumeAttributes`.
//! Parse errors never echo attribute values (they may hold service-account tokens), only positions and keys.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{MountError, MountResult, Reason};
use crate::proto;

/// Attribute keys kubelet sets for the pod (`podInfoOnMount`) and for its tokens (`tokenRequests`).
pub const POD_NAME: &str = "csi.storage.k8s.io/pod.name";
pub const POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
pub const POD_UID: &str = "csi.storage.k8s.io/pod.uid";
pub const SERVICE_ACCOUNT_NAME: &str = "csi.storage.k8s.io/serviceAccount.name";
pub const SERVICE_ACCOUNT_TOKENS: &str = "csi.storage.k8s.io/serviceAccount.tokens";
/// Prefix of every attribute kubelet sets itself; such keys are never backend parameters.
pub const KUBELET_PREFIX: &str = "csi.storage.k8s.io/";
/// The parameter that picks the backend.
pub const BACKEND_PARAMETER: &str = "backend";

/// The pod a mount is for, as kubelet reports it. Fields are empty when the driver did not send them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodIdentity {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub service_account: String,
}

/// One service-account token kubelet minted for an audience of the CSIDriver's `tokenRequests`.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountToken {
    pub token: Zeroizing<String>,
    #[serde(default)]
    pub expiration_timestamp: String,
}

impl fmt::Debug for ServiceAccountToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountToken")
            .field("token", &"<redacted>")
            .field("expiration_timestamp", &self.expiration_timestamp)
            .finish()
    }
}

/// The pod's service-account tokens by audience (`""` is the API server's own audience).
#[derive(Debug, Clone, Default)]
pub struct ServiceAccountTokens(pub BTreeMap<String, ServiceAccountToken>);

impl ServiceAccountTokens {
    pub fn for_audience(&self, audience: &str) -> Option<&ServiceAccountToken> {
        self.0.get(audience)
    }

    pub fn audiences(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

/// The data of the pod's `nodePublishSecretRef` Secret, when it has one. Values are never printed.
#[derive(Clone, Default)]
pub struct NodePublishSecrets(pub Option<BTreeMap<String, Zeroizing<String>>>);

impl fmt::Debug for NodePublishSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("NodePublishSecrets(None)"),
            Some(map) => f.debug_set().entries(map.keys()).finish(),
        }
    }
}

/// A previous object version sent by drivers before v1.6.0 on rotation calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousVersion {
    pub id: String,
    pub version: String,
}

/// One Mount call, parsed and checked.
#[derive(Debug, Clone, Default)]
pub struct MountRequest {
    /// SecretProviderClass parameters and pod `volumeAttributes` (every attribute kubelet did not set).
    pub parameters: BTreeMap<String, String>,
    pub pod: PodIdentity,
    pub tokens: ServiceAccountTokens,
    pub secrets: NodePublishSecrets,
    /// Host path of the volume (informational: the driver writes the files).
    pub target_path: String,
    /// The default file mode from `permission` (0o644 from every driver version).
    pub default_mode: u32,
    pub previous_versions: Vec<PreviousVersion>,
    /// When the mount must be answered by; the service sets it from `--mount-timeout` so backends can
    /// budget their retries.
    pub deadline: Option<tokio::time::Instant>,
    /// How an in-process caller (the sync controller) wants the objects fetched; never set from the
    /// driver's attributes.
    pub fetch: FetchOptions,
}

/// Fetch options only in-process callers set (the driver's requests always get the defaults).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchOptions {
    /// Read past the value cache (a forced refresh); the fresh answers replace the kept ones.
    pub fresh: bool,
    /// Skip absent required objects too, listing them in the response's `missing`, instead of failing
    /// the mount on the first one (absent optional objects are skipped as always, unlisted).
    pub report_missing: bool,
    /// Ask the backend for versions first, where it can tell them without values, and read no value
    /// when every object is at its previous version (`previous_versions`).
    pub probe: bool,
}

/// The deadline of a request that was given none.
const DEFAULT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

impl MountRequest {
    /// When the mount must be answered by.
    pub fn deadline(&self) -> tokio::time::Instant {
        self.deadline
            .unwrap_or_else(|| tokio::time::Instant::now() + DEFAULT_DEADLINE)
    }

    /// Parses the driver's request. The raw JSON strings are wiped once parsed: they can hold tokens.
    pub fn from_proto(mut raw: proto::MountRequest) -> MountResult<Self> {
        let parsed = Self::parse(&raw);
        raw.attributes.zeroize();
        raw.secrets.zeroize();
        parsed
    }

    fn parse(raw: &proto::MountRequest) -> MountResult<Self> {
        let mut attributes = parse_attributes(&raw.attributes)?;
        let secrets = parse_secrets(&raw.secrets)?;
        let token_json = attributes
            .remove(SERVICE_ACCOUNT_TOKENS)
            .map(Zeroizing::new)
            .or_else(|| token_json_from_secrets(&secrets));
        let tokens = match token_json {
            Some(json) => parse_tokens(&json)?,
            None => ServiceAccountTokens::default(),
        };
        let pod = PodIdentity {
            name: attributes.get(POD_NAME).cloned().unwrap_or_default(),
            namespace: attributes.get(POD_NAMESPACE).cloned().unwrap_or_default(),
            uid: attributes.get(POD_UID).cloned().unwrap_or_default(),
            service_account: attributes
                .get(SERVICE_ACCOUNT_NAME)
                .cloned()
                .unwrap_or_default(),
        };
        attributes.retain(|key, _| !key.starts_with(KUBELET_PREFIX));
        Ok(Self {
            parameters: attributes,
            pod,
            tokens,
            secrets,
            target_path: raw.target_path.clone(),
            default_mode: parse_permission(&raw.permission)?,
            previous_versions: raw
                .current_object_version
                .iter()
                .map(|v| PreviousVersion {
                    id: v.id.clone(),
                    version: v.version.clone(),
                })
                .collect(),
            deadline: None,
            fetch: FetchOptions::default(),
        })
    }

    /// A parameter's value, if set.
    pub fn parameter(&self, key: &str) -> Option<&str> {
        self.parameters.get(key).map(String::as_str)
    }

    /// The backend the SecretProviderClass picks with `backend`, trimmed; `None` when unset or empty.
    pub fn backend_name(&self) -> Option<&str> {
        self.parameter(BACKEND_PARAMETER)
            .map(str::trim)
            .filter(|name| !name.is_empty())
    }
}

/// A Kubernetes namespace name (an RFC 1123 label: lower-case letters, digits and `-`, at most 63).
pub fn is_namespace_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// A JSON error's position, never its text: serde_json quotes offending values, which may be tokens.
fn json_position(error: &serde_json::Error) -> String {
    format!("line {} column {}", error.line(), error.column())
}

fn parse_attributes(json: &str) -> MountResult<BTreeMap<String, String>> {
    serde_json::from_str(json).map_err(|e| {
        MountError::invalid(
            Reason::InvalidAttributes,
            format!(
                "attributes must be a JSON object whose values are all strings (error at {})",
                json_position(&e)
            ),
        )
    })
}

fn parse_secrets(json: &str) -> MountResult<NodePublishSecrets> {
    let trimmed = json.trim();
    if trimmed.is_empty() || trimmed == "null" {
        return Ok(NodePublishSecrets(None));
    }
    let map: BTreeMap<String, Zeroizing<String>> = serde_json::from_str(trimmed).map_err(|e| {
        MountError::invalid(
            Reason::InvalidSecrets,
            format!(
                "secrets must be null or a JSON object whose values are all strings (error at {})",
                json_position(&e)
            ),
        )
    })?;
    Ok(NodePublishSecrets(Some(map)))
}

/// Drivers from v1.6.0 with `serviceAccountTokenInSecrets` also put the tokens in `secrets`.
fn token_json_from_secrets(secrets: &NodePublishSecrets) -> Option<Zeroizing<String>> {
    secrets.0.as_ref()?.get(SERVICE_ACCOUNT_TOKENS).cloned()
}

fn parse_tokens(json: &str) -> MountResult<ServiceAccountTokens> {
    if json.trim().is_empty() {
        return Ok(ServiceAccountTokens::default());
    }
    serde_json::from_str(json)
        .map(ServiceAccountTokens)
        .map_err(|e| {
            MountError::invalid(
                Reason::InvalidServiceAccountTokens,
                format!(
                    "{SERVICE_ACCOUNT_TOKENS} must be a JSON object \
                     {{\"<audience>\":{{\"token\":\"…\",\"expirationTimestamp\":\"…\"}}}} (error at {})",
                    json_position(&e)
                ),
            )
        })
}

/// `permission` is the default file mode as a decimal JSON number, `"420"` (0644) from every driver.
pub fn parse_permission(text: &str) -> MountResult<u32> {
    let trimmed = text.trim();
    let shown: String = trimmed.chars().take(32).collect();
    let mode: u32 = trimmed.parse().map_err(|_| {
        MountError::invalid(
            Reason::InvalidPermission,
            format!("permission {shown:?} is not a decimal file mode such as \"420\" (0644)"),
        )
    })?;
    if mode > 0o777 {
        return Err(MountError::invalid(
            Reason::InvalidPermission,
            format!("permission {mode} is over 511 (0777)"),
        ));
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(attributes: &str) -> proto::MountRequest {
        proto::MountRequest {
            attributes: attributes.to_string(),
            secrets: "null".into(),
            target_path: "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/v/mount".into(),
            permission: "420".into(),
            current_object_version: vec![],
        }
    }

    #[test]
    fn parses_pod_identity_tokens_and_parameters() {
        let attributes = serde_json::json!({
            "backend": "file",
            "objects": "- objectName: a",
            POD_NAME: "web-1",
            POD_NAMESPACE: "apps",
            POD_UID: "uid-1",
            SERVICE_ACCOUNT_NAME: "web",
            SERVICE_ACCOUNT_TOKENS: r#"{"vault":{"token":"eyJ.x.y","expirationTimestamp":"2026-01-01T00:00:00Z"}}"#,
        });
        let request = MountRequest::from_proto(raw(&attributes.to_string())).unwrap();
        assert_eq!(request.pod.name, "web-1");
        assert_eq!(request.pod.namespace, "apps");
        assert_eq!(request.pod.uid, "uid-1");
        assert_eq!(request.pod.service_account, "web");
        assert_eq!(request.backend_name(), Some("file"));
        assert_eq!(request.default_mode, 0o644);
        assert_eq!(
            request.tokens.for_audience("vault").unwrap().token.as_str(),
            "eyJ.x.y"
        );
        assert!(
            request
                .parameters
                .keys()
                .all(|k| !k.starts_with(KUBELET_PREFIX))
        );
        assert!(!format!("{request:?}").contains("eyJ.x.y"));
    }

    #[test]
    fn tokens_may_arrive_in_secrets() {
        let mut request = raw(r#"{"backend":"file"}"#);
        request.secrets = serde_json::json!({
            SERVICE_ACCOUNT_TOKENS: r#"{"aud":{"token":"t1","expirationTimestamp":"x"}}"#,
        })
        .to_string();
        let parsed = MountRequest::from_proto(request).unwrap();
        assert_eq!(
            parsed.tokens.for_audience("aud").unwrap().token.as_str(),
            "t1"
        );
    }

    #[test]
    fn attribute_errors_never_echo_values() {
        let error = MountRequest::from_proto(raw(r#"{"a":{"token":"s3cr3t"}}"#)).unwrap_err();
        assert_eq!(error.reason, Reason::InvalidAttributes);
        assert!(!error.message.contains("s3cr3t"));
        let bad_tokens = serde_json::json!({SERVICE_ACCOUNT_TOKENS: r#"{"aud":"s3cr3t"}"#});
        let error = MountRequest::from_proto(raw(&bad_tokens.to_string())).unwrap_err();
        assert_eq!(error.reason, Reason::InvalidServiceAccountTokens);
        assert!(!error.message.contains("s3cr3t"));
    }

    #[test]
    fn permission_must_be_a_decimal_mode() {
        assert_eq!(parse_permission("420").unwrap(), 0o644);
        assert_eq!(parse_permission("0").unwrap(), 0);
        assert!(parse_permission("rw-r--r--").is_err());
        assert!(parse_permission("512").is_err());
        assert!(parse_permission("-1").is_err());
        assert!(parse_permission("").is_err());
    }
}

//! The error every Mount step returns: a kind (mapped to a gRPC status code by the service), a short
//! CamelCase reason (for metrics and `Error.code`-style reporting) and a message a user can act on.
//!
//! Messages are written by this crate only; they name parameters, paths and keys, never values or tokens.

use std::fmt;

/// What went wrong, in the terms of the gRPC status codes the driver shows to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    DeadlineExceeded,
    ResourceExhausted,
    FailedPrecondition,
    /// The backend's answer failed its own checksum.
    DataLoss,
    Internal,
}

/// Why a Mount step failed: the short CamelCase word every error message starts with, the
/// `x-openclaw-error-code` metadata, and the `code` label of the mount metrics — this enum is that label
/// set (plus `OK` for success), so the metrics' cardinality is fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The driver's attributes are not a JSON object of strings.
    InvalidAttributes,
    /// The node-publish secrets are not a JSON object of strings.
    InvalidSecrets,
    /// The service-account tokens attribute is not the driver's JSON form.
    InvalidServiceAccountTokens,
    /// The driver's default file permission is not a mode.
    InvalidPermission,
    /// The provider's own response has an empty or repeated object version id (an internal error).
    InvalidObjectVersions,
    /// Kubelet's pod namespace (or its directory) is unusable.
    InvalidPodInfo,
    /// Kubelet sent no pod namespace / service account / uid (podInfoOnMount).
    MissingPodInfo,
    /// The SecretProviderClass has no `backend` parameter.
    MissingBackend,
    /// `backend` names no backend of this build.
    UnknownBackend,
    /// `objects` is missing or empty.
    MissingObjects,
    /// `objects` is not a YAML list of the backend's entries.
    InvalidObjects,
    /// More objects than `--max-objects`.
    TooManyObjects,
    /// A file backend `objectName` leaves its directory or is malformed.
    InvalidObjectName,
    /// A backend parameter has a bad value or two spellings.
    InvalidParameter,
    /// A value does not decode with the object's `encoding`.
    InvalidEncoding,
    /// Two objects write one file.
    DuplicateObjectName,
    /// Two files of the response have one path (or a file is another's directory).
    DuplicateFilePath,
    /// An output path the driver would refuse.
    InvalidFilePath,
    /// A file mode outside 0..=0o777.
    InvalidFileMode,
    /// A response without object versions.
    MissingObjectVersions,
    /// The response is over `--max-response-bytes`.
    ResponseTooLarge,
    /// The file backend is off (no `--file-root`).
    FileBackendDisabled,
    /// A file backend object does not exist.
    ObjectNotFound,
    /// Reading a file backend object failed.
    ReadFailed,
    /// The backend has no secret at the path.
    SecretNotFound,
    /// The secret has no such key.
    SecretKeyNotFound,
    /// No pod token for the backend's audience (CSIDriver tokenRequests).
    MissingServiceAccountToken,
    /// The pod token is not the pod's own service account's.
    ServiceAccountTokenMismatch,
    /// The sync controller may not mint a token for this audience (`--sync-allowed-audiences`).
    TokenAudienceNotAllowed,
    /// A pod-named TLS file outside `--tls-files-dir` (or without it).
    TlsFileNotAllowed,
    /// A TLS file inside `--tls-files-dir` that is not a small regular file.
    TlsFileUnusable,
    /// `vaultSkipTLSVerify: true` without `--allow-insecure-tls`.
    InsecureTlsNotAllowed,
    /// `vaultAddress` outside `--vault-allowed-addresses`.
    VaultAddressNotAllowed,
    /// Vault TLS material is unreadable or malformed.
    VaultTlsConfig,
    /// Vault's certificate did not verify.
    VaultTlsFailed,
    /// No connection to Vault (nothing was sent).
    VaultUnreachable,
    /// The connection to Vault failed mid-request.
    VaultConnectionFailed,
    /// Vault did not answer within `--backend-timeout`.
    VaultTimeout,
    /// Vault refused the pod's login.
    VaultLoginFailed,
    /// Vault's policy refused the read (403).
    VaultPermissionDenied,
    /// Vault refused the request as malformed (400/405).
    VaultBadRequest,
    /// Vault answered with a redirect (never followed).
    VaultRedirect,
    /// Vault answered 5xx through the retries.
    VaultUnavailable,
    /// Vault answered a status the provider does not expect.
    VaultUnexpectedStatus,
    /// A Vault answer over `--max-response-bytes`.
    VaultAnswerTooLarge,
    /// A Vault answer that is not the JSON expected.
    VaultBadAnswer,
    /// The answers of one mount hold more than the provider allows together.
    AnswersTooLarge,
    /// The backend kept throttling (429, 503 with Retry-After) through the retries.
    BackendThrottled,
    /// A request of the mount got no answer (an internal inconsistency).
    BackendBadAnswer,
    /// A `jmesPath` expression does not parse.
    InvalidJmesPath,
    /// A `jmesPath` expression matched nothing in its secret.
    JmesPathNoMatch,
    /// No AWS region: not in the parameters, the provider's flags or the node's label.
    AwsRegionUnknown,
    /// The pod's service account has no `eks.amazonaws.com/role-arn` annotation.
    AwsRoleMissing,
    /// STS or the Pod Identity Agent refused the pod's token.
    AwsLoginFailed,
    /// AWS refused the pod's role access to an object.
    AwsPermissionDenied,
    /// AWS refused a request as malformed.
    AwsBadRequest,
    /// AWS answered with a server error.
    AwsUnavailable,
    /// AWS (or the Pod Identity Agent) could not be reached in time.
    AwsUnreachable,
    /// No GCP identity pool: neither `--gcp-project` nor an `external_account` credentials file.
    GcpNotConfigured,
    /// `auth: provider-adc` without `--gcp-allow-provider-adc`.
    ProviderAdcNotAllowed,
    /// GCP's token exchange (STS) or impersonation (IAM Credentials) refused the pod.
    GcpLoginFailed,
    /// GCP refused the pod's identity access to a resource.
    GcpPermissionDenied,
    /// GCP refused a request as malformed.
    GcpBadRequest,
    /// GCP could not be reached, or answered with a server error, through the retries.
    GcpUnavailable,
    /// A payload whose checksum (`dataCrc32c`) does not match its data.
    ChecksumMismatch,
    /// `extractJSONKey` / `extractYAMLKey` found nothing, or the payload is not JSON / YAML.
    ExtractKeyNotFound,
    /// The Kubernetes API could not be reached or refused the provider.
    KubernetesUnavailable,
    /// A Kubernetes object the mount needs (service account, node) does not exist.
    KubernetesObjectNotFound,
    /// The mount took longer than `--mount-timeout`.
    MountTimeout,
    /// The provider is shutting down (the driver retries).
    ProviderStopping,
}

impl Reason {
    /// Every reason, for documentation and tests of the label set.
    pub const ALL: [Reason; 70] = [
        Reason::InvalidAttributes,
        Reason::InvalidSecrets,
        Reason::InvalidServiceAccountTokens,
        Reason::InvalidPermission,
        Reason::InvalidObjectVersions,
        Reason::InvalidPodInfo,
        Reason::MissingPodInfo,
        Reason::MissingBackend,
        Reason::UnknownBackend,
        Reason::MissingObjects,
        Reason::InvalidObjects,
        Reason::TooManyObjects,
        Reason::InvalidObjectName,
        Reason::InvalidParameter,
        Reason::InvalidEncoding,
        Reason::DuplicateObjectName,
        Reason::DuplicateFilePath,
        Reason::InvalidFilePath,
        Reason::InvalidFileMode,
        Reason::MissingObjectVersions,
        Reason::ResponseTooLarge,
        Reason::FileBackendDisabled,
        Reason::ObjectNotFound,
        Reason::ReadFailed,
        Reason::SecretNotFound,
        Reason::SecretKeyNotFound,
        Reason::MissingServiceAccountToken,
        Reason::ServiceAccountTokenMismatch,
        Reason::TokenAudienceNotAllowed,
        Reason::TlsFileNotAllowed,
        Reason::TlsFileUnusable,
        Reason::InsecureTlsNotAllowed,
        Reason::VaultAddressNotAllowed,
        Reason::VaultTlsConfig,
        Reason::VaultTlsFailed,
        Reason::VaultUnreachable,
        Reason::VaultConnectionFailed,
        Reason::VaultTimeout,
        Reason::VaultLoginFailed,
        Reason::VaultPermissionDenied,
        Reason::VaultBadRequest,
        Reason::VaultRedirect,
        Reason::VaultUnavailable,
        Reason::VaultUnexpectedStatus,
        Reason::VaultAnswerTooLarge,
        Reason::VaultBadAnswer,
        Reason::AnswersTooLarge,
        Reason::BackendThrottled,
        Reason::BackendBadAnswer,
        Reason::InvalidJmesPath,
        Reason::JmesPathNoMatch,
        Reason::AwsRegionUnknown,
        Reason::AwsRoleMissing,
        Reason::AwsLoginFailed,
        Reason::AwsPermissionDenied,
        Reason::AwsBadRequest,
        Reason::AwsUnavailable,
        Reason::AwsUnreachable,
        Reason::GcpNotConfigured,
        Reason::ProviderAdcNotAllowed,
        Reason::GcpLoginFailed,
        Reason::GcpPermissionDenied,
        Reason::GcpBadRequest,
        Reason::GcpUnavailable,
        Reason::ChecksumMismatch,
        Reason::ExtractKeyNotFound,
        Reason::KubernetesUnavailable,
        Reason::KubernetesObjectNotFound,
        Reason::MountTimeout,
        Reason::ProviderStopping,
    ];

    /// The reason as written in messages, metadata and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidAttributes => "InvalidAttributes",
            Self::InvalidSecrets => "InvalidSecrets",
            Self::InvalidServiceAccountTokens => "InvalidServiceAccountTokens",
            Self::InvalidPermission => "InvalidPermission",
            Self::InvalidObjectVersions => "InvalidObjectVersions",
            Self::InvalidPodInfo => "InvalidPodInfo",
            Self::MissingPodInfo => "MissingPodInfo",
            Self::MissingBackend => "MissingBackend",
            Self::UnknownBackend => "UnknownBackend",
            Self::MissingObjects => "MissingObjects",
            Self::InvalidObjects => "InvalidObjects",
            Self::TooManyObjects => "TooManyObjects",
            Self::InvalidObjectName => "InvalidObjectName",
            Self::InvalidParameter => "InvalidParameter",
            Self::InvalidEncoding => "InvalidEncoding",
            Self::DuplicateObjectName => "DuplicateObjectName",
            Self::DuplicateFilePath => "DuplicateFilePath",
            Self::InvalidFilePath => "InvalidFilePath",
            Self::InvalidFileMode => "InvalidFileMode",
            Self::MissingObjectVersions => "MissingObjectVersions",
            Self::ResponseTooLarge => "ResponseTooLarge",
            Self::FileBackendDisabled => "FileBackendDisabled",
            Self::ObjectNotFound => "ObjectNotFound",
            Self::ReadFailed => "ReadFailed",
            Self::SecretNotFound => "SecretNotFound",
            Self::SecretKeyNotFound => "SecretKeyNotFound",
            Self::MissingServiceAccountToken => "MissingServiceAccountToken",
            Self::ServiceAccountTokenMismatch => "ServiceAccountTokenMismatch",
            Self::TokenAudienceNotAllowed => "TokenAudienceNotAllowed",
            Self::TlsFileNotAllowed => "TlsFileNotAllowed",
            Self::TlsFileUnusable => "TlsFileUnusable",
            Self::InsecureTlsNotAllowed => "InsecureTlsNotAllowed",
            Self::VaultAddressNotAllowed => "VaultAddressNotAllowed",
            Self::VaultTlsConfig => "VaultTlsConfig",
            Self::VaultTlsFailed => "VaultTlsFailed",
            Self::VaultUnreachable => "VaultUnreachable",
            Self::VaultConnectionFailed => "VaultConnectionFailed",
            Self::VaultTimeout => "VaultTimeout",
            Self::VaultLoginFailed => "VaultLoginFailed",
            Self::VaultPermissionDenied => "VaultPermissionDenied",
            Self::VaultBadRequest => "VaultBadRequest",
            Self::VaultRedirect => "VaultRedirect",
            Self::VaultUnavailable => "VaultUnavailable",
            Self::VaultUnexpectedStatus => "VaultUnexpectedStatus",
            Self::VaultAnswerTooLarge => "VaultAnswerTooLarge",
            Self::VaultBadAnswer => "VaultBadAnswer",
            Self::AnswersTooLarge => "AnswersTooLarge",
            Self::BackendThrottled => "BackendThrottled",
            Self::BackendBadAnswer => "BackendBadAnswer",
            Self::InvalidJmesPath => "InvalidJmesPath",
            Self::JmesPathNoMatch => "JmesPathNoMatch",
            Self::AwsRegionUnknown => "AwsRegionUnknown",
            Self::AwsRoleMissing => "AwsRoleMissing",
            Self::AwsLoginFailed => "AwsLoginFailed",
            Self::AwsPermissionDenied => "AwsPermissionDenied",
            Self::AwsBadRequest => "AwsBadRequest",
            Self::AwsUnavailable => "AwsUnavailable",
            Self::AwsUnreachable => "AwsUnreachable",
            Self::GcpNotConfigured => "GcpNotConfigured",
            Self::ProviderAdcNotAllowed => "ProviderAdcNotAllowed",
            Self::GcpLoginFailed => "GcpLoginFailed",
            Self::GcpPermissionDenied => "GcpPermissionDenied",
            Self::GcpBadRequest => "GcpBadRequest",
            Self::GcpUnavailable => "GcpUnavailable",
            Self::ChecksumMismatch => "ChecksumMismatch",
            Self::ExtractKeyNotFound => "ExtractKeyNotFound",
            Self::KubernetesUnavailable => "KubernetesUnavailable",
            Self::KubernetesObjectNotFound => "KubernetesObjectNotFound",
            Self::MountTimeout => "MountTimeout",
            Self::ProviderStopping => "ProviderStopping",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text from a server or a client library for a message: its first line, at most 200 characters (such
/// texts name resources and causes, never values).
pub fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect()
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A failed Mount step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct MountError {
    pub kind: ErrorKind,
    /// Short CamelCase reason, e.g. `InvalidParameter`; low cardinality, safe as a metric label.
    pub reason: Reason,
    pub message: String,
}

impl MountError {
    pub fn new(kind: ErrorKind, reason: Reason, message: impl fmt::Display) -> Self {
        Self {
            kind,
            reason,
            message: message.to_string(),
        }
    }

    pub fn invalid(reason: Reason, message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::InvalidArgument, reason, message)
    }

    pub fn not_found(reason: Reason, message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::NotFound, reason, message)
    }

    pub fn exhausted(reason: Reason, message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::ResourceExhausted, reason, message)
    }

    pub fn internal(reason: Reason, message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Internal, reason, message)
    }
}

/// Shorthand for results of Mount steps.
pub type MountResult<T> = Result<T, MountError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_distinct_camel_case_words_named_as_their_variants() {
        let names: std::collections::BTreeSet<&str> =
            Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Reason::ALL.len());
        for reason in Reason::ALL {
            assert_eq!(reason.as_str(), format!("{reason:?}"));
            assert!(
                reason
                    .as_str()
                    .starts_with(|c: char| c.is_ascii_uppercase())
            );
            assert!(reason.as_str().chars().all(|c| c.is_ascii_alphanumeric()));
        }
    }

    #[test]
    fn every_reason_is_documented_for_operators() {
        let docs = include_str!("../docs/operations.md");
        let missing: Vec<&str> = Reason::ALL
            .iter()
            .map(|r| r.as_str())
            .filter(|name| !docs.contains(&format!("| `{name}` |")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/operations.md has no error-table row for {missing:?}"
        );
    }
}

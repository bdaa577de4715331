//! Reading Secrets Manager secrets and SSM parameters: batched calls, retries, failover and errors.
//!
//! Secrets Manager: `BatchGetSecretValue` (up to [`SECRETS_PER_BATCH`] ids) for objects without a pinned
//! version or label, its answers matched to the ids as written (name, full ARN, or ARN without the random
//! suffix); when the pod's role may not call it (older IAM policies grant only `GetSecretValue`), one
//! `GetSecretValue` per object, and the role is remembered for a while. Pinned objects use
//! `GetSecretValue` with `VersionId` / `VersionStage`. SSM: `GetParameters` with decryption in batches of
//! [`PARAMETERS_PER_BATCH`], `name:version` / `name:label` pins, one name per batch.
//!
//! Each call is retried with jittered backoff on throttling, server errors and unreachable endpoints, as
//! long as the mount's deadline allows; a call that still fails with a server error or no answer is made
//! in the failover region (when the mount has one); anything else fails the mount (as the AWS provider
//! does: a 4xx in the primary region is an answer).

use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::client::result::SdkError;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::params::Target;
pub use crate::backend::retry::FailureClass;
use crate::backend::retry::Retried;
pub use crate::backend::retry::with_retries;
use crate::error::{ErrorKind, MountError, Reason};

/// Most ids one `BatchGetSecretValue` call takes.
pub const SECRETS_PER_BATCH: usize = 20;
/// Most names one `GetParameters` call takes.
pub const PARAMETERS_PER_BATCH: usize = 10;

pub use crate::error::first_line as short;

/// A failed call, before it is named for an object.
#[derive(Debug, Clone)]
pub struct CallFailure {
    pub class: FailureClass,
    /// AWS's error code, when it sent one.
    pub code: String,
    pub message: String,
}

impl Retried for CallFailure {
    fn is_retried(&self) -> bool {
        self.class != FailureClass::Client
    }

    fn no_answer_in_time() -> Self {
        CallFailure {
            class: FailureClass::Unreachable,
            code: String::new(),
            message: "no answer within the mount's deadline".into(),
        }
    }
}

impl CallFailure {
    /// Whether the failover region is asked after this failure.
    pub fn fails_over(&self) -> bool {
        matches!(self.class, FailureClass::Server | FailureClass::Unreachable)
    }

    /// From an SDK error.
    pub fn of<E, R>(error: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + HasStatus,
    {
        let status = error.raw_response().map(HasStatus::status);
        let code = error.code().unwrap_or("").to_string();
        let message = short(error.message().unwrap_or(""));
        let class = match (&error, status) {
            (SdkError::TimeoutError(_) | SdkError::DispatchFailure(_), _) => {
                FailureClass::Unreachable
            }
            _ if is_throttling(&code) || status == Some(429) => FailureClass::Throttled,
            (_, Some(status)) if status >= 500 => FailureClass::Server,
            (_, Some(_)) => FailureClass::Client,
            // A construction failure or an unreadable answer.
            _ => FailureClass::Server,
        };
        let message = if message.is_empty() {
            short(&format!(
                "{}",
                aws_smithy_types::error::display::DisplayErrorContext(&error)
            ))
        } else {
            message
        };
        Self {
            class,
            code,
            message,
        }
    }

    /// The mount error this failure is, for `what` (an object, or the objects of a batch) read as
    /// `principal` in `region`.
    pub fn into_mount_error(self, what: &str, principal: &str, region: &str) -> MountError {
        let aws = if self.code.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.code, self.message)
        };
        match self.class {
            FailureClass::Throttled => MountError::exhausted(
                Reason::BackendThrottled,
                format!(
                    "AWS throttled reading {what} in {region} ({aws}), still after retries within \
                     the mount's deadline: the kubelet retries the mount"
                ),
            ),
            FailureClass::Server => MountError::new(
                ErrorKind::Unavailable,
                Reason::AwsUnavailable,
                format!("AWS failed reading {what} in {region} ({aws})"),
            ),
            FailureClass::Unreachable => MountError::new(
                ErrorKind::Unavailable,
                Reason::AwsUnreachable,
                format!("AWS could not be reached reading {what} in {region} ({aws})"),
            ),
            FailureClass::Client => client_error(&self.code, &aws, what, principal, region),
        }
    }
}

fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "ThrottlingException"
            | "Throttling"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "ThrottledException"
    )
}

fn client_error(code: &str, aws: &str, what: &str, principal: &str, region: &str) -> MountError {
    match code {
        "ResourceNotFoundException"
        | "ParameterNotFound"
        | "ParameterVersionNotFound"
        | "ParameterVersionLabelNotFound"
        | "InvalidParameterException"
        | "InvalidParameters"
        | "ValidationException" => MountError::not_found(
            Reason::SecretNotFound,
            format!("{what} was not found in {region} ({aws})"),
        ),
        "AccessDeniedException"
        | "AccessDenied"
        | "UnrecognizedClientException"
        | "ExpiredTokenException"
        | "InvalidSignatureException"
        | "DecryptionFailure"
        | "InvalidKeyId"
        | "KMSAccessDeniedException" => MountError::new(
            ErrorKind::PermissionDenied,
            Reason::AwsPermissionDenied,
            format!(
                "AWS refused {principal} reading {what} in {region} ({aws}): grant it \
                 secretsmanager:GetSecretValue (and BatchGetSecretValue) or ssm:GetParameters, and \
                 kms:Decrypt for the key"
            ),
        ),
        _ => MountError::new(
            ErrorKind::FailedPrecondition,
            Reason::AwsBadRequest,
            format!("AWS refused reading {what} in {region} ({aws})"),
        ),
    }
}

/// The HTTP status of a raw answer.
pub trait HasStatus {
    fn status(&self) -> u16;
}

impl HasStatus for aws_smithy_runtime_api::http::Response {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

/// One read value, as AWS sent it.
pub struct ReadValue {
    pub bytes: Zeroizing<Vec<u8>>,
    pub version: String,
}

/// Whether a `BatchGetSecretValue` answer is the one for `id` (a name, a full ARN, or an ARN without
/// the six-character random suffix AWS adds).
pub fn answers_id(id: &str, arn: Option<&str>, name: Option<&str>) -> bool {
    if name == Some(id) || arn == Some(id) {
        return true;
    }
    id.starts_with("arn:")
        && arn
            .and_then(|arn| arn.strip_prefix(id))
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|suffix| {
                suffix.len() == 6 && suffix.bytes().all(|b| b.is_ascii_alphanumeric())
            })
}

/// The SSM name of a target: `name`, `name:version` or `name:label`.
pub fn parameter_name(target: &Target) -> String {
    match (&target.version, &target.label) {
        (Some(version), _) => format!("{}:{version}", target.name),
        (None, Some(label)) => format!("{}:{label}", target.name),
        (None, None) => target.name.clone(),
    }
}

/// `BatchGetSecretValue` for unpinned targets: a value or failure for each, in order.
pub async fn batch_get_secrets(
    client: &aws_sdk_secretsmanager::Client,
    targets: &[&Target],
    deadline: Instant,
) -> Result<Vec<Result<ReadValue, CallFailure>>, CallFailure> {
    let ids: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    let answer = with_retries(deadline, || async {
        client
            .batch_get_secret_value()
            .set_secret_id_list(Some(ids.clone()))
            .send()
            .await
            .map_err(CallFailure::of)
    })
    .await?;
    Ok(targets
        .iter()
        .map(|target| {
            // An exact name or ARN first: a partial ARN could also fit another secret's name.
            let values = answer.secret_values();
            let exact = values.iter().find(|e| {
                e.name() == Some(target.name.as_str()) || e.arn() == Some(target.name.as_str())
            });
            if let Some(entry) = exact.or_else(|| {
                values
                    .iter()
                    .find(|e| answers_id(&target.name, e.arn(), e.name()))
            }) {
                return secret_value(
                    entry.secret_string(),
                    entry.secret_binary(),
                    entry.version_id(),
                );
            }
            let error = answer
                .errors()
                .iter()
                .find(|e| e.secret_id() == Some(target.name.as_str()));
            Err(match error {
                Some(error) => {
                    let code = error.error_code().unwrap_or("").to_string();
                    CallFailure {
                        class: if code == "InternalServiceError" {
                            FailureClass::Server
                        } else if is_throttling(&code) {
                            FailureClass::Throttled
                        } else {
                            FailureClass::Client
                        },
                        code,
                        message: short(error.message().unwrap_or("")),
                    }
                }
                None => CallFailure {
                    class: FailureClass::Client,
                    code: "ResourceNotFoundException".into(),
                    message: "BatchGetSecretValue answered nothing for it".into(),
                },
            })
        })
        .collect())
}

/// `GetSecretValue` for one target (pinned by version or label, or not).
pub async fn get_secret(
    client: &aws_sdk_secretsmanager::Client,
    target: &Target,
    deadline: Instant,
) -> Result<ReadValue, CallFailure> {
    let answer = with_retries(deadline, || async {
        client
            .get_secret_value()
            .secret_id(&target.name)
            .set_version_id(target.version.clone())
            .set_version_stage(target.label.clone())
            .send()
            .await
            .map_err(CallFailure::of)
    })
    .await?;
    secret_value(
        answer.secret_string(),
        answer.secret_binary(),
        answer.version_id(),
    )
}

fn secret_value(
    string: Option<&str>,
    binary: Option<&aws_smithy_types::Blob>,
    version: Option<&str>,
) -> Result<ReadValue, CallFailure> {
    let bytes = match (string, binary) {
        (Some(text), _) => text.as_bytes().to_vec(),
        (None, Some(blob)) => blob.as_ref().to_vec(),
        (None, None) => {
            return Err(CallFailure {
                class: FailureClass::Server,
                code: String::new(),
                message: "the answer holds neither SecretString nor SecretBinary".into(),
            });
        }
    };
    Ok(ReadValue {
        bytes: Zeroizing::new(bytes),
        version: version.unwrap_or("").to_string(),
    })
}

/// `GetParameters` with decryption: a value or failure for each target, in order (their names are
/// distinct within one call).
pub async fn get_parameters(
    client: &aws_sdk_ssm::Client,
    targets: &[&Target],
    deadline: Instant,
) -> Result<Vec<Result<ReadValue, CallFailure>>, CallFailure> {
    let names: Vec<String> = targets.iter().map(|t| parameter_name(t)).collect();
    let answer = with_retries(deadline, || async {
        client
            .get_parameters()
            .set_names(Some(names.clone()))
            .with_decryption(true)
            .send()
            .await
            .map_err(CallFailure::of)
    })
    .await?;
    Ok(targets
        .iter()
        .zip(&names)
        .map(|(target, asked)| {
            let selector = match (&target.version, &target.label) {
                (Some(version), _) => Some(format!(":{version}")),
                (None, Some(label)) => Some(format!(":{label}")),
                (None, None) => None,
            };
            let found = answer.parameters().iter().find(|p| {
                (p.name() == Some(target.name.as_str()) || p.arn() == Some(target.name.as_str()))
                    && match p.selector().filter(|s| !s.is_empty()) {
                        Some(answered) => Some(answered) == selector.as_deref(),
                        // An answer without a selector (moto sends none): a version pin must match.
                        None => target
                            .version
                            .as_ref()
                            .is_none_or(|v| *v == p.version().to_string()),
                    }
            });
            match found {
                Some(parameter) if !answer.invalid_parameters().contains(asked) => Ok(ReadValue {
                    bytes: Zeroizing::new(parameter.value().unwrap_or("").as_bytes().to_vec()),
                    version: parameter.version().to_string(),
                }),
                _ => Err(CallFailure {
                    class: FailureClass::Client,
                    code: "ParameterNotFound".into(),
                    message: "GetParameters listed it as an invalid parameter".into(),
                }),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_answers_match_names_full_arns_and_partial_arns() {
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:openclaw/production-AbC123";
        let name = Some("openclaw/production");
        assert!(answers_id("openclaw/production", Some(arn), name));
        assert!(answers_id(arn, Some(arn), name));
        assert!(answers_id(
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:openclaw/production",
            Some(arn),
            name
        ));
        assert!(!answers_id(
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:openclaw/prod",
            Some(arn),
            name
        ));
        assert!(!answers_id("openclaw", Some(arn), name));
    }

    #[test]
    fn parameter_pins_are_appended() {
        let target = |version: Option<&str>, label: Option<&str>| Target {
            name: "/app/key".into(),
            version: version.map(String::from),
            label: label.map(String::from),
        };
        assert_eq!(parameter_name(&target(None, None)), "/app/key");
        assert_eq!(parameter_name(&target(Some("3"), None)), "/app/key:3");
        assert_eq!(parameter_name(&target(None, Some("live"))), "/app/key:live");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_the_deadline_and_on_client_errors() {
        use crate::backend::retry::ATTEMPTS;
        use std::time::Duration;
        let failure = |class| CallFailure {
            class,
            code: String::new(),
            message: String::new(),
        };
        let mut calls = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        let result: Result<(), _> = with_retries(deadline, || {
            calls += 1;
            async { Err(failure(FailureClass::Throttled)) }
        })
        .await;
        assert_eq!(result.unwrap_err().class, FailureClass::Throttled);
        assert_eq!(calls, ATTEMPTS);
        let mut calls = 0;
        let _ = with_retries(deadline, || {
            calls += 1;
            async { Err::<(), _>(failure(FailureClass::Client)) }
        })
        .await;
        assert_eq!(calls, 1, "a 4xx is an answer");
        let mut calls = 0;
        let soon = Instant::now() + Duration::from_millis(5);
        let _ = with_retries(soon, || {
            calls += 1;
            async { Err::<(), _>(failure(FailureClass::Server)) }
        })
        .await;
        assert!(calls <= 2, "no retry past the deadline ({calls})");
    }
}

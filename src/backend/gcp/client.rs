//! GCP's REST APIs as the backend calls them: Secret Manager `versions:access` (global and regional),
//! Parameter Manager `versions:render`, with the pod's access token, answers bounded, payload checksums
//! checked, and Google's error envelope (`{"error": {"code", "message", "status"}}`) turned into one
//! failure class.
//!
//! Calls are retried with jittered backoff within the mount's deadline on throttling (429
//! `RESOURCE_EXHAUSTED`), server errors and unreachable endpoints ([`crate::backend::retry`]); every
//! other answer is final. The official Rust client was not used: it takes one token per client (ours
//! change per pod) and brings a second HTTP stack (see docs/gcp.md).

use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::params::{Resource, Service};
pub use crate::backend::retry::FailureClass;
use crate::backend::retry::{Retried, with_retries};
use crate::error::{ErrorKind, MountError, Reason, first_line};

/// The least wait after a throttled call.
const THROTTLED_WAIT: Duration = Duration::from_secs(1);
/// The status this client gives an answer over its size bound.
const TOO_LARGE: &str = "ANSWER_TOO_LARGE";

/// A failed call, before it is named for an object.
#[derive(Debug, Clone)]
pub struct CallFailure {
    pub class: FailureClass,
    /// The HTTP status, 0 without an answer.
    pub http: u16,
    /// Google's status (`NOT_FOUND`, `PERMISSION_DENIED` …), or an OAuth error (`invalid_grant`).
    pub status: String,
    pub message: String,
    retry_after: Option<Duration>,
}

impl Retried for CallFailure {
    fn is_retried(&self) -> bool {
        self.class != FailureClass::Client
    }

    fn no_answer_in_time() -> Self {
        Self::unreachable("no answer within the mount's deadline".into())
    }

    /// What GCP asked for, and at least a second after throttling (quotas are per minute).
    fn wait_asked(&self) -> Option<Duration> {
        match self.class {
            FailureClass::Throttled => Some(self.retry_after.unwrap_or(THROTTLED_WAIT)),
            _ => self.retry_after,
        }
    }
}

impl CallFailure {
    fn unreachable(message: String) -> Self {
        Self {
            class: FailureClass::Unreachable,
            http: 0,
            status: String::new(),
            message,
            retry_after: None,
        }
    }

    fn bad_answer(message: &str) -> Self {
        Self {
            class: FailureClass::Server,
            http: 200,
            status: String::new(),
            message: message.into(),
            retry_after: None,
        }
    }

    /// What GCP said, for messages: `STATUS: message`.
    pub fn said(&self) -> String {
        match (self.status.is_empty(), self.message.is_empty()) {
            (true, _) => self.message.clone(),
            (false, true) => self.status.clone(),
            (false, false) => format!("{}: {}", self.status, self.message),
        }
    }

    /// The mount error of a failed read of `resource` as `principal`.
    pub fn into_read_error(self, resource: &Resource, principal: &str) -> MountError {
        let name = resource.path();
        if is_checksum_failure(&self) {
            return MountError::new(ErrorKind::DataLoss, Reason::ChecksumMismatch, self.message);
        }
        if self.status == TOO_LARGE {
            return MountError::exhausted(
                Reason::ResponseTooLarge,
                format!("GCP's answer for {name}: {}", self.message),
            );
        }
        let said = self.said();
        match (self.class, self.status.as_str(), self.http) {
            (FailureClass::Throttled, _, _) => MountError::exhausted(
                Reason::BackendThrottled,
                format!(
                    "GCP throttled reading {name} ({said}), still after retries within the mount's \
                     deadline: the kubelet retries the mount"
                ),
            ),
            (FailureClass::Unreachable, _, _) | (FailureClass::Server, _, _) => MountError::new(
                ErrorKind::Unavailable,
                Reason::GcpUnavailable,
                format!("GCP did not serve {name}: {said}"),
            ),
            (_, "NOT_FOUND", _) | (_, _, 404) => MountError::not_found(
                Reason::SecretNotFound,
                format!("{name} does not exist ({said})"),
            ),
            // A disabled or destroyed version (`… is in DISABLED state.`).
            (_, "FAILED_PRECONDITION", _) => MountError::not_found(
                Reason::SecretNotFound,
                format!("{name} cannot be read: {said}"),
            ),
            (_, "PERMISSION_DENIED", _) | (_, _, 403) => MountError::new(
                ErrorKind::PermissionDenied,
                Reason::GcpPermissionDenied,
                format!(
                    "{principal} may not read {name} ({said}): grant it \
                     roles/secretmanager.secretAccessor (Parameter Manager: \
                     roles/parametermanager.parameterAccessor) on the resource"
                ),
            ),
            (_, "UNAUTHENTICATED", _) | (_, _, 401) => MountError::new(
                ErrorKind::Unauthenticated,
                Reason::GcpPermissionDenied,
                format!("GCP did not accept the access token of {principal} for {name}: {said}"),
            ),
            _ => MountError::invalid(
                Reason::GcpBadRequest,
                format!("GCP refused the request for {name}: {said}"),
            ),
        }
    }
}

/// One value read, as GCP sent it.
pub struct ReadValue {
    pub bytes: Zeroizing<Vec<u8>>,
    /// The version's full name (the number `latest` resolved to).
    pub version: String,
}

/// An HTTP client for the GCP APIs: no redirects, bounded answers.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    max_body: usize,
}

impl Http {
    /// A client for answers holding payloads of at most `max_payload` bytes (an answer holds one
    /// base64-encoded, a render answer two). With `proxy`, `HTTPS_PROXY` / `NO_PROXY` are honoured
    /// (reqwest's defaults); without, none is used (the metadata server is the node's own).
    pub fn new(attempt_timeout: Duration, max_payload: usize, proxy: bool) -> Result<Self, String> {
        let max_body = max_payload.saturating_mul(3).saturating_add(64 * 1024);
        let builder = reqwest::Client::builder();
        let builder = if proxy { builder } else { builder.no_proxy() };
        let client = builder
            .redirect(reqwest::redirect::Policy::none())
            .timeout(attempt_timeout)
            .connect_timeout(attempt_timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("openclaw-csi-provider/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("the HTTP client failed: {e}"))?;
        Ok(Self { client, max_body })
    }

    /// Sends a request (retried as the module doc says) and returns its answer's body.
    pub async fn send(
        &self,
        deadline: Instant,
        request: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Zeroizing<Vec<u8>>, CallFailure> {
        with_retries(deadline, || async {
            self.attempt(request(&self.client)).await
        })
        .await
    }

    async fn attempt(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<Zeroizing<Vec<u8>>, CallFailure> {
        let mut response = request
            .send()
            .await
            .map_err(|e| CallFailure::unreachable(first_line(&error_chain(&e))))?;
        let status = response.status();
        let retry_after = retry_after(&response);
        if response
            .content_length()
            .is_some_and(|length| length > self.max_body as u64)
        {
            return Err(self.too_large());
        }
        let mut body = Zeroizing::new(Vec::new());
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| CallFailure::unreachable(first_line(&error_chain(&e))))?
        {
            if body.len() + chunk.len() > self.max_body {
                return Err(self.too_large());
            }
            body.extend_from_slice(&chunk);
        }
        if status.is_success() {
            return Ok(body);
        }
        let (google_status, message) = error_of(&body);
        let class = match status.as_u16() {
            429 => FailureClass::Throttled,
            _ if google_status == "RESOURCE_EXHAUSTED" => FailureClass::Throttled,
            500.. => FailureClass::Server,
            _ => FailureClass::Client,
        };
        Err(CallFailure {
            class,
            http: status.as_u16(),
            status: google_status,
            message,
            retry_after,
        })
    }

    fn too_large(&self) -> CallFailure {
        CallFailure {
            class: FailureClass::Client,
            http: 200,
            status: TOO_LARGE.into(),
            message: format!(
                "the answer is larger than {} bytes (a payload over the provider's \
                 --max-response-bytes, base64-encoded)",
                self.max_body
            ),
            retry_after: None,
        }
    }
}

/// The status and message of Google's error envelope, or of an OAuth error (`error`,
/// `error_description`), never more than their first lines.
fn error_of(body: &[u8]) -> (String, String) {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Envelope {
        Google {
            error: GoogleError,
        },
        OAuth {
            error: String,
            #[serde(default)]
            error_description: String,
        },
    }
    #[derive(Deserialize)]
    struct GoogleError {
        #[serde(default)]
        status: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(Envelope::Google { error }) => (first_line(&error.status), first_line(&error.message)),
        Ok(Envelope::OAuth {
            error,
            error_description,
        }) => (first_line(&error), first_line(&error_description)),
        Err(_) => (String::new(), String::new()),
    }
}

/// `Retry-After` in seconds, at most a minute.
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?;
    let seconds: u64 = value.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds.min(60)))
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Where the APIs are: Google's hosts, or the admin's overrides (every region then goes to the one
/// override).
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    pub secret_manager: Option<String>,
    pub parameter_manager: Option<String>,
}

impl Endpoints {
    /// The base URL (`scheme://host[:port]`) serving `resource`.
    pub fn base(&self, resource: &Resource) -> String {
        let (custom, api) = match resource.service {
            Service::SecretManager => (&self.secret_manager, "secretmanager"),
            Service::ParameterManager => (&self.parameter_manager, "parametermanager"),
        };
        if let Some(custom) = custom {
            return custom.clone();
        }
        match resource.location.as_deref() {
            None | Some("global") => format!("https://{api}.googleapis.com"),
            // Checked by `params::check_location`: letters, digits and `-`.
            Some(location) => format!("https://{api}.{location}.rep.googleapis.com"),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    #[serde(default)]
    data: String,
    data_crc32c: Option<String>,
}

#[derive(Deserialize)]
struct AccessAnswer {
    #[serde(default)]
    name: String,
    payload: Payload,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RenderAnswer {
    #[serde(default)]
    parameter_version: String,
    rendered_payload: Option<String>,
}

/// Reads `resource` with `token` (`versions:access` or `versions:render`).
pub async fn read(
    http: &Http,
    endpoints: &Endpoints,
    resource: &Resource,
    token: &str,
    deadline: Instant,
) -> Result<ReadValue, CallFailure> {
    let verb = match resource.service {
        Service::SecretManager => "access",
        Service::ParameterManager => "render",
    };
    let url = format!("{}/v1/{}:{verb}", endpoints.base(resource), resource.path());
    let body = http
        .send(deadline, |client| client.get(&url).bearer_auth(token))
        .await?;
    match resource.service {
        Service::SecretManager => access_answer(&body, resource),
        Service::ParameterManager => render_answer(&body, resource),
    }
}

/// A Secret Manager version's name and state, without its payload (`versions.get`: needs
/// `secretmanager.versions.get`, which `roles/secretmanager.secretAccessor` does not grant).
pub async fn version_of(
    http: &Http,
    endpoints: &Endpoints,
    resource: &Resource,
    token: &str,
    deadline: Instant,
) -> Result<(String, String), CallFailure> {
    #[derive(Deserialize)]
    struct SecretVersion {
        #[serde(default)]
        name: String,
        #[serde(default)]
        state: String,
    }
    let url = format!("{}/v1/{}", endpoints.base(resource), resource.path());
    let body = http
        .send(deadline, |client| client.get(&url).bearer_auth(token))
        .await?;
    let version: SecretVersion = serde_json::from_slice(&body)
        .map_err(|_| CallFailure::bad_answer("the version answer is not the JSON documented"))?;
    Ok((version.name, version.state))
}

fn access_answer(body: &[u8], resource: &Resource) -> Result<ReadValue, CallFailure> {
    let answer: AccessAnswer = serde_json::from_slice(body)
        .map_err(|_| CallFailure::bad_answer("the access answer is not the JSON documented"))?;
    let bytes = decode(&answer.payload.data)?;
    if let Some(expected) = &answer.payload.data_crc32c {
        let expected: u64 = expected
            .trim()
            .parse()
            .map_err(|_| CallFailure::bad_answer("dataCrc32c is not a number"))?;
        let actual = u64::from(crc32c::crc32c(&bytes));
        if actual != expected {
            return Err(CallFailure {
                class: FailureClass::Client,
                http: 200,
                status: "DATA_LOSS".into(),
                message: format!(
                    "the payload of {} does not match its checksum (dataCrc32c)",
                    resource.path()
                ),
                retry_after: None,
            });
        }
    }
    Ok(ReadValue {
        bytes,
        version: answer.name,
    })
}

fn render_answer(body: &[u8], resource: &Resource) -> Result<ReadValue, CallFailure> {
    let answer: RenderAnswer = serde_json::from_slice(body)
        .map_err(|_| CallFailure::bad_answer("the render answer is not the JSON documented"))?;
    let bytes = decode(answer.rendered_payload.as_deref().unwrap_or(""))?;
    let version = if answer.parameter_version.is_empty() {
        resource.path()
    } else {
        answer.parameter_version
    };
    Ok(ReadValue { bytes, version })
}

fn decode(data: &str) -> Result<Zeroizing<Vec<u8>>, CallFailure> {
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map(Zeroizing::new)
        .map_err(|_| CallFailure::bad_answer("the payload is not base64"))
}

/// Whether a failure is the checksum check's.
pub fn is_checksum_failure(failure: &CallFailure) -> bool {
    failure.status == "DATA_LOSS" && failure.http == 200
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(text: &str) -> Resource {
        Resource::parse("f", text).unwrap()
    }

    #[test]
    fn each_resource_goes_to_its_host_or_the_override() {
        let google = Endpoints::default();
        assert_eq!(
            google.base(&resource("projects/p/secrets/s/versions/1")),
            "https://secretmanager.googleapis.com"
        );
        assert_eq!(
            google.base(&resource(
                "projects/p/locations/europe-west4/secrets/s/versions/1"
            )),
            "https://secretmanager.europe-west4.rep.googleapis.com"
        );
        assert_eq!(
            google.base(&resource(
                "projects/p/locations/global/parameters/x/versions/v"
            )),
            "https://parametermanager.googleapis.com"
        );
        assert_eq!(
            google.base(&resource(
                "projects/p/locations/us-east1/parameters/x/versions/v"
            )),
            "https://parametermanager.us-east1.rep.googleapis.com"
        );
        let local = Endpoints {
            secret_manager: Some("http://127.0.0.1:1".into()),
            parameter_manager: None,
        };
        assert_eq!(
            local.base(&resource(
                "projects/p/locations/europe-west4/secrets/s/versions/1"
            )),
            "http://127.0.0.1:1"
        );
    }

    #[test]
    fn answers_are_checked_against_their_checksum() {
        let data = b"sk-VALUE";
        let encoded = base64::engine::general_purpose::STANDARD.encode(data);
        let good = format!(
            r#"{{"name":"projects/1/secrets/s/versions/3","payload":{{"data":"{encoded}","dataCrc32c":"{}"}}}}"#,
            crc32c::crc32c(data)
        );
        let r = resource("projects/p/secrets/s/versions/latest");
        let value = access_answer(good.as_bytes(), &r).unwrap();
        assert_eq!(&value.bytes[..], data);
        assert_eq!(value.version, "projects/1/secrets/s/versions/3");
        let bad = good.replace(&crc32c::crc32c(data).to_string(), "1");
        let failure = access_answer(bad.as_bytes(), &r).err().unwrap();
        assert!(is_checksum_failure(&failure));
        assert!(!failure.message.contains("VALUE"));
    }

    #[test]
    fn error_envelopes_are_read() {
        assert_eq!(
            error_of(
                br#"{"error":{"code":404,"message":"Secret [x] not found.","status":"NOT_FOUND"}}"#
            ),
            ("NOT_FOUND".into(), "Secret [x] not found.".into())
        );
        assert_eq!(
            error_of(br#"{"error":"invalid_grant","error_description":"bad token"}"#),
            ("invalid_grant".into(), "bad token".into())
        );
        assert_eq!(error_of(b"<html>"), (String::new(), String::new()));
    }
}

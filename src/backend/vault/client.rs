//! HTTP to Vault/OpenBao: one client per address and TLS configuration (kept, bounded), every attempt
//! bounded in time and by the mount's deadline, and transport failures turned into errors that say what
//! failed (address, TLS) — never a token or a value.
//!
//! The server may be one a pod pointed the provider at, so its answers are not trusted: no redirect is
//! followed (a redirect could carry the token to an internal endpoint), every answer body is read only up
//! to `--max-response-bytes`, and numbers in answers are checked before use (see [`super::auth`]).
//!
//! Retries, with backoff and jitter, only where repeating cannot do something twice: a refused connection
//! (nothing was sent) and throttling (429, or 503 with `Retry-After`: Vault did nothing) for every
//! request; timeouts, lost connections and 5xx/412 answers only for reads and logins. A write (`PUT`/`POST`
//! of an object) is never repeated once any byte of it may have been sent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Certificate, Client, Identity as ClientIdentity, Method, StatusCode};
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::params::{HttpMethod, TlsParams, VaultParams};
use crate::error::{ErrorKind, MountError, MountResult, Reason};
use crate::telemetry::metrics::Metrics;
use crate::tls_files::{self, TlsFilesDir};

/// Most HTTP clients kept (one per distinct TLS configuration).
const MAX_CLIENTS: usize = 64;
/// Longest `Retry-After` honoured; longer ones end the retries.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
/// Time kept back from the mount's deadline for answering the driver.
const DEADLINE_RESERVE: Duration = Duration::from_millis(500);

/// An answer from Vault.
pub struct VaultReply {
    pub status: StatusCode,
    pub body: Zeroizing<Vec<u8>>,
    /// The `Retry-After` of a 429 or 503, in seconds (HTTP dates are not honoured).
    pub retry_after: Option<Duration>,
}

impl VaultReply {
    /// Vault's `errors` list, joined and bounded (Vault never echoes tokens in it).
    pub fn errors(&self) -> String {
        #[derive(serde::Deserialize)]
        struct Errors {
            errors: Vec<String>,
        }
        let text = serde_json::from_slice::<Errors>(&self.body)
            .map(|e| e.errors.join("; "))
            .unwrap_or_default();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        text.chars().take(300).collect()
    }

    /// Vault refused to do anything now: 429, or 503 with `Retry-After`.
    pub fn is_throttled(&self) -> bool {
        self.status == StatusCode::TOO_MANY_REQUESTS
            || (self.status == StatusCode::SERVICE_UNAVAILABLE && self.retry_after.is_some())
    }

    /// The error for a throttled answer that retries did not get past.
    pub fn throttled_error(&self, address: &str, path: &str) -> MountError {
        MountError::exhausted(
            Reason::BackendThrottled,
            format!(
                "Vault at {address} kept refusing {path:?} with {} (throttled) through the provider's retries; \
                 the driver tries the mount again later",
                self.status.as_u16()
            ),
        )
    }
}

/// A client serves one Vault address with one TLS configuration.
type ClientKey = (String, TlsParams);

/// HTTP access to Vault with retries.
pub struct VaultHttp {
    clients: Mutex<HashMap<ClientKey, Client>>,
    limits: HttpLimits,
    tls_files_dir: Option<Arc<TlsFilesDir>>,
    metrics: Arc<Metrics>,
}

/// Bounds on the requests to Vault.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// One attempt.
    pub timeout: Duration,
    /// Repeats of an attempt that may be repeated.
    pub retries: u32,
    /// Largest answer body read.
    pub max_body: usize,
}

/// One request to Vault.
pub struct VaultCall<'a> {
    pub method: HttpMethod,
    /// Path and query, without `/v1/`.
    pub path: &'a str,
    pub token: Option<&'a str>,
    pub body: Option<&'a str>,
    /// When the mount must have its answer; retries stop short of it.
    pub deadline: Instant,
}

impl VaultCall<'_> {
    fn is_login(&self) -> bool {
        self.path.starts_with("auth/") && self.path.ends_with("/login")
    }

    /// Reads and logins do nothing twice when repeated; writes might (a PKI issue, a dynamic secret).
    fn repeatable(&self) -> bool {
        self.method == HttpMethod::Get || self.is_login()
    }
}

impl VaultHttp {
    pub fn new(
        limits: HttpLimits,
        tls_files_dir: Option<Arc<TlsFilesDir>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            clients: Mutex::new(HashMap::new()),
            limits,
            tls_files_dir,
            metrics,
        }
    }

    /// Sends one request, retrying what may be retried (see the module doc) while the deadline allows.
    pub async fn send(&self, params: &VaultParams, call: VaultCall<'_>) -> MountResult<VaultReply> {
        let client = self.client(params).await?;
        let url = format!("{}/v1/{}", request_base(params), call.path);
        let mut attempt = 0;
        loop {
            let result = self.attempt(&client, params, &call, &url).await;
            let wait = retry_wait(&call, &result, attempt + 1);
            let in_time =
                wait.is_some_and(|wait| Instant::now() + wait + DEADLINE_RESERVE < call.deadline);
            if !in_time || attempt >= self.limits.retries {
                self.record(&call, &result);
                return result;
            }
            attempt += 1;
            tokio::time::sleep(wait.unwrap_or_default()).await;
        }
    }

    fn record(&self, call: &VaultCall<'_>, result: &MountResult<VaultReply>) {
        let operation = if call.is_login() {
            "login"
        } else if call.method == HttpMethod::Get {
            "read"
        } else {
            "write"
        };
        let outcome = match result {
            Ok(reply) if reply.status.is_success() => "2xx",
            Ok(reply) if reply.status.is_client_error() => "4xx",
            Ok(reply) if reply.status.is_server_error() => "5xx",
            Ok(_) => "other",
            Err(error) => error.reason.as_str(),
        };
        self.metrics
            .record_backend_request(super::BACKEND_NAME, operation, outcome);
    }

    async fn attempt(
        &self,
        client: &Client,
        params: &VaultParams,
        call: &VaultCall<'_>,
        url: &str,
    ) -> MountResult<VaultReply> {
        let left = call.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timeout_error(&params.address, self.limits.timeout));
        }
        let method = match call.method {
            HttpMethod::Get => Method::GET,
            HttpMethod::Put => Method::PUT,
            HttpMethod::Post => Method::POST,
        };
        let mut request = client
            .request(method, url)
            .timeout(self.limits.timeout.min(left))
            .header("X-Vault-Request", "true");
        if let Some(token) = call.token {
            request = request.header("X-Vault-Token", token);
        }
        if let Some(namespace) = &params.namespace {
            request = request.header("X-Vault-Namespace", namespace);
        }
        if let Some(body) = call.body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(&params.address, &e, self.limits.timeout))?;
        let status = response.status();
        let retry_after = retry_after(&response);
        let body = self.read_body(response, &params.address, call.path).await?;
        Ok(VaultReply {
            status,
            body,
            retry_after,
        })
    }

    /// The answer body, refused past the size limit before more than the limit is held.
    async fn read_body(
        &self,
        mut response: reqwest::Response,
        address: &str,
        path: &str,
    ) -> MountResult<Zeroizing<Vec<u8>>> {
        let limit = self.limits.max_body;
        let too_large = || {
            MountError::exhausted(
                Reason::VaultAnswerTooLarge,
                format!(
                    "Vault at {address} answered {path:?} with more than {limit} bytes \
                     (the provider's --max-response-bytes)"
                ),
            )
        };
        if response
            .content_length()
            .is_some_and(|length| length > limit as u64)
        {
            return Err(too_large());
        }
        let mut body = Zeroizing::new(Vec::new());
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transport_error(address, &e, self.limits.timeout))?
        {
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    async fn client(&self, params: &VaultParams) -> MountResult<Client> {
        let key = (params.address.clone(), params.tls.clone());
        if let Some(client) = self.lock().get(&key) {
            return Ok(client.clone());
        }
        let client = build_client(params, self.tls_files_dir.clone()).await?;
        let mut clients = self.lock();
        if clients.len() >= MAX_CLIENTS
            && let Some(old) = clients.keys().next().cloned()
        {
            clients.remove(&old);
        }
        clients.insert(key, client.clone());
        Ok(client)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClientKey, Client>> {
        self.clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// How long to wait before repeating `call` after `result`, or `None` when it must not be repeated.
fn retry_wait(
    call: &VaultCall<'_>,
    result: &MountResult<VaultReply>,
    attempt: u32,
) -> Option<Duration> {
    match result {
        Ok(reply) if reply.is_throttled() => {
            let asked = reply.retry_after.unwrap_or_default();
            (asked <= MAX_RETRY_AFTER).then(|| asked.max(backoff(attempt)))
        }
        Ok(reply) => ((reply.status.is_server_error()
            || reply.status == StatusCode::PRECONDITION_FAILED)
            && call.repeatable())
        .then(|| backoff(attempt)),
        // Nothing was sent: any request may go again.
        Err(error) if error.reason == Reason::VaultUnreachable => Some(backoff(attempt)),
        // A timeout or a lost connection: the request may have been done.
        Err(error)
            if matches!(
                error.kind,
                ErrorKind::Unavailable | ErrorKind::DeadlineExceeded
            ) =>
        {
            call.repeatable().then(|| backoff(attempt))
        }
        Err(_) => None,
    }
}

/// `Retry-After` in seconds (the form Vault and proxies send); dates and nonsense are ignored.
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let status = response.status();
    if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?;
    let seconds: u64 = value.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds.min(3600)))
}

/// 100 ms, 200 ms, 400 ms … plus up to 100 ms of jitter.
fn backoff(attempt: u32) -> Duration {
    let mut random = [0u8; 1];
    let _ = getrandom::fill(&mut random);
    let base = 100u64 << attempt.saturating_sub(1).min(5);
    Duration::from_millis(base + u64::from(random[0]) * 100 / 255)
}

fn tls_error(message: String) -> MountError {
    MountError::new(
        ErrorKind::FailedPrecondition,
        Reason::VaultTlsConfig,
        message,
    )
}

/// The URL requests go to: the address, with its host replaced by `vaultTLSServerName` when set (the
/// client then resolves that name to the address's own host, so the certificate is checked against it).
/// A unix socket address is reached as `http://localhost` through the socket.
fn request_base(params: &VaultParams) -> String {
    if params.address.starts_with("unix://") {
        return "http://localhost".into();
    }
    let Some(name) = &params.tls.server_name else {
        return params.address.clone();
    };
    let Ok(mut url) = reqwest::Url::parse(&params.address) else {
        return params.address.clone();
    };
    match url.set_host(Some(name)) {
        Ok(()) => url.as_str().trim_end_matches('/').to_string(),
        Err(_) => params.address.clone(),
    }
}

/// The TLS files a configuration names, read (confined and bounded: [`crate::tls_files`]).
struct TlsMaterial {
    roots: Vec<(String, Zeroizing<Vec<u8>>)>,
    identity: Option<Zeroizing<Vec<u8>>>,
}

fn read_tls_material(tls: &TlsParams, dir: Option<&TlsFilesDir>) -> MountResult<TlsMaterial> {
    let mut roots = Vec::new();
    if let Some(file) = &tls.ca_cert {
        roots.push((file.path.clone(), tls_files::read(file, dir)?));
    }
    if let Some(directory) = &tls.ca_directory {
        for pem in tls_files::read_directory(directory, dir)? {
            roots.push((directory.path.clone(), pem));
        }
    }
    let identity = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let mut pem = tls_files::read(cert, dir)?;
            pem.extend_from_slice(&tls_files::read(key, dir)?);
            Some(pem)
        }
        _ => None,
    };
    Ok(TlsMaterial { roots, identity })
}

async fn build_client(params: &VaultParams, dir: Option<Arc<TlsFilesDir>>) -> MountResult<Client> {
    let builder = Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60));
    if let Some(path) = params.address.strip_prefix("unix://") {
        return builder.unix_socket(path).build().map_err(|e| {
            tls_error(format!(
                "cannot set up the HTTP client: {}",
                error_chain(&e)
            ))
        });
    }
    let tls = params.tls.clone();
    let material = tokio::task::spawn_blocking(move || read_tls_material(&tls, dir.as_deref()))
        .await
        .map_err(|_| {
            MountError::internal(Reason::VaultTlsConfig, "the TLS file reader task failed")
        })??;
    let mut builder = builder;
    for (path, pem) in &material.roots {
        match parse_certificates(pem, path) {
            Ok(certs) => {
                for cert in certs {
                    builder = builder.add_root_certificate(cert);
                }
            }
            // A CA directory may hold other files; a named CA file must hold certificates.
            Err(error) if params.tls.ca_cert.as_ref().is_some_and(|f| &f.path == path) => {
                return Err(error);
            }
            Err(_) => {}
        }
    }
    if let Some(pem) = &material.identity {
        let (cert, key) = (&params.tls.client_cert, &params.tls.client_key);
        let named = |f: &Option<crate::tls_files::TlsFile>| {
            f.as_ref().map(|f| f.path.clone()).unwrap_or_default()
        };
        let identity = ClientIdentity::from_pem(pem).map_err(|_| {
            tls_error(format!(
                "the client certificate {:?} and key {:?} are not a PEM certificate and key",
                named(cert),
                named(key)
            ))
        })?;
        builder = builder.identity(identity);
    }
    if params.tls.skip_verify {
        builder = builder.danger_accept_invalid_certs(true);
    }
    if let Some(name) = &params.tls.server_name {
        // The name is pinned to the address's own IPs; a proxy would connect to the name instead
        // (and its NO_PROXY rules see only the name), so none is used for such a client.
        builder = builder
            .no_proxy()
            .resolve_to_addrs(name, &address_of(&params.address).await?);
    }
    builder.build().map_err(|e| {
        tls_error(format!(
            "cannot set up the HTTP client: {}",
            error_chain(&e)
        ))
    })
}

/// Where the Vault address points, for connecting under another TLS server name.
async fn address_of(address: &str) -> MountResult<Vec<std::net::SocketAddr>> {
    let url =
        reqwest::Url::parse(address).map_err(|_| tls_error(format!("{address:?} is not a URL")))?;
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_string();
    let port = url.port_or_known_default().unwrap_or(8200);
    let addrs: Vec<_> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| {
            MountError::new(
                ErrorKind::Unavailable,
                Reason::VaultUnreachable,
                format!("cannot resolve {host}: {}", e.kind()),
            )
        })?
        .collect();
    Ok(addrs)
}

fn parse_certificates(pem: &[u8], path: &str) -> MountResult<Vec<Certificate>> {
    let certs = Certificate::from_pem_bundle(pem)
        .map_err(|_| tls_error(format!("{path:?} holds no PEM certificates")))?;
    if certs.is_empty() {
        return Err(tls_error(format!("{path:?} holds no PEM certificates")));
    }
    Ok(certs)
}

/// The causes of an error, outermost first, without the URL (which can carry a query).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut current = error.source();
    while let Some(cause) = current {
        parts.push(cause.to_string());
        current = cause.source();
    }
    if parts.is_empty() {
        parts.push(error.to_string());
    }
    parts.join(": ").chars().take(300).collect()
}

fn timeout_error(address: &str, timeout: Duration) -> MountError {
    MountError::new(
        ErrorKind::DeadlineExceeded,
        Reason::VaultTimeout,
        format!(
            "Vault at {address} did not answer within {timeout:?} (--backend-timeout) or before the \
             mount's deadline (--mount-timeout)"
        ),
    )
}

fn transport_error(address: &str, error: &reqwest::Error, timeout: Duration) -> MountError {
    let causes = error_chain(error);
    if error.is_timeout() {
        return timeout_error(address, timeout);
    }
    let lower = causes.to_ascii_lowercase();
    if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
        // Configuration (a CA, a server name): retrying the mount cannot help.
        return MountError::new(
            ErrorKind::FailedPrecondition,
            Reason::VaultTlsFailed,
            format!("TLS with Vault at {address} failed: {causes}"),
        );
    }
    if error.is_connect() {
        // Nothing was sent.
        return MountError::new(
            ErrorKind::Unavailable,
            Reason::VaultUnreachable,
            format!("cannot reach Vault at {address}: {causes}"),
        );
    }
    MountError::new(
        ErrorKind::Unavailable,
        Reason::VaultConnectionFailed,
        format!("the connection to Vault at {address} failed: {causes}"),
    )
}

//! HTTP to Vault/OpenBao: one client per address and TLS configuration (kept, bounded), every attempt
//! bounded in time, connection errors and 5xx/412 answers (and timeouts of reads) retried with backoff and
//! jitter, and transport failures turned into errors that say what failed (address, TLS) — never a token or
//! a value.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Certificate, Client, Identity as ClientIdentity, Method, StatusCode};
use zeroize::Zeroizing;

use super::params::{HttpMethod, TlsParams, VaultParams};
use crate::error::{ErrorKind, MountError, MountResult};
use crate::telemetry::metrics::Metrics;

/// Most HTTP clients kept (one per distinct TLS configuration).
const MAX_CLIENTS: usize = 64;

/// An answer from Vault.
pub struct VaultReply {
    pub status: StatusCode,
    pub body: Zeroizing<Vec<u8>>,
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
}

/// A client serves one Vault address with one TLS configuration.
type ClientKey = (String, TlsParams);

/// HTTP access to Vault with retries.
pub struct VaultHttp {
    clients: Mutex<HashMap<ClientKey, Client>>,
    timeout: Duration,
    retries: u32,
    metrics: Arc<Metrics>,
}

impl VaultHttp {
    pub fn new(timeout: Duration, retries: u32, metrics: Arc<Metrics>) -> Self {
        Self {
            clients: Mutex::new(HashMap::new()),
            timeout,
            retries,
            metrics,
        }
    }

    /// Sends one request (`path` without `/v1/`), retrying what is worth retrying.
    pub async fn send(
        &self,
        params: &VaultParams,
        method: HttpMethod,
        path_and_query: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> MountResult<VaultReply> {
        let client = self.client(params).await?;
        let url = format!("{}/v1/{path_and_query}", request_base(params));
        let mut attempt = 0;
        loop {
            let result = self
                .attempt(&client, params, method, &url, token, body)
                .await;
            let retry = match &result {
                Ok(reply) => {
                    reply.status.is_server_error()
                        || reply.status == StatusCode::PRECONDITION_FAILED
                }
                // A write that timed out may have been done: only reads are retried after a timeout.
                Err(error) => {
                    error.kind == ErrorKind::Unavailable
                        || (error.kind == ErrorKind::DeadlineExceeded && method == HttpMethod::Get)
                }
            };
            if !retry || attempt >= self.retries {
                self.record(method, path_and_query, &result);
                return result;
            }
            attempt += 1;
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    fn record(&self, method: HttpMethod, path: &str, result: &MountResult<VaultReply>) {
        let operation = if path.starts_with("auth/") && path.ends_with("/login") {
            "login"
        } else if method == HttpMethod::Get {
            "read"
        } else {
            "write"
        };
        let outcome = match result {
            Ok(reply) if reply.status.is_success() => "2xx",
            Ok(reply) if reply.status.is_client_error() => "4xx",
            Ok(reply) if reply.status.is_server_error() => "5xx",
            Ok(_) => "other",
            Err(error) => error.reason,
        };
        self.metrics
            .record_backend_request(super::BACKEND_NAME, operation, outcome);
    }

    async fn attempt(
        &self,
        client: &Client,
        params: &VaultParams,
        method: HttpMethod,
        url: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> MountResult<VaultReply> {
        let method = match method {
            HttpMethod::Get => Method::GET,
            HttpMethod::Put => Method::PUT,
            HttpMethod::Post => Method::POST,
        };
        let mut request = client
            .request(method, url)
            .timeout(self.timeout)
            .header("X-Vault-Request", "true");
        if let Some(token) = token {
            request = request.header("X-Vault-Token", token);
        }
        if let Some(namespace) = &params.namespace {
            request = request.header("X-Vault-Namespace", namespace);
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(&params.address, &e, self.timeout))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_error(&params.address, &e, self.timeout))?;
        Ok(VaultReply {
            status,
            body: Zeroizing::new(body.to_vec()),
        })
    }

    async fn client(&self, params: &VaultParams) -> MountResult<Client> {
        let key = (params.address.clone(), params.tls.clone());
        if let Some(client) = self.lock().get(&key) {
            return Ok(client.clone());
        }
        let client = build_client(&params.address, &params.tls).await?;
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

/// 100 ms, 200 ms, 400 ms … plus up to 100 ms of jitter.
fn backoff(attempt: u32) -> Duration {
    let mut random = [0u8; 1];
    let _ = getrandom::fill(&mut random);
    let base = 100u64 << attempt.saturating_sub(1).min(5);
    Duration::from_millis(base + u64::from(random[0]) * 100 / 255)
}

fn tls_error(message: String) -> MountError {
    MountError::invalid("VaultTlsConfig", message)
}

async fn read_file(path: &str, what: &str) -> MountResult<Vec<u8>> {
    tokio::fs::read(path).await.map_err(|e| {
        tls_error(format!(
            "cannot read {what} {path:?} in the provider pod: {}",
            e.kind()
        ))
    })
}

/// The URL requests go to: the address, with its host replaced by `vaultTLSServerName` when set (the
/// client then resolves that name to the address's own host, so the certificate is checked against it).
fn request_base(params: &VaultParams) -> String {
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

async fn build_client(address: &str, tls: &TlsParams) -> MountResult<Client> {
    let mut builder = Client::builder()
        .use_rustls_tls()
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60));
    if let Some(path) = &tls.ca_cert_path {
        for cert in parse_certificates(&read_file(path, "vaultCACertPath").await?, path)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let Some(dir) = &tls.ca_directory {
        let mut entries = tokio::fs::read_dir(dir).await.map_err(|e| {
            tls_error(format!(
                "cannot read vaultCADirectory {dir:?}: {}",
                e.kind()
            ))
        })?;
        while let Ok(Some(entry)) = entries.next_entry().await {
            let path = entry.path().display().to_string();
            if let Ok(pem) = tokio::fs::read(entry.path()).await {
                for cert in parse_certificates(&pem, &path).unwrap_or_default() {
                    builder = builder.add_root_certificate(cert);
                }
            }
        }
    }
    match (&tls.client_cert_path, &tls.client_key_path) {
        (Some(cert), Some(key)) => {
            let mut pem = read_file(cert, "vaultTLSClientCertPath").await?;
            pem.extend(Zeroizing::new(read_file(key, "vaultTLSClientKeyPath").await?).iter());
            let pem = Zeroizing::new(pem);
            let identity = ClientIdentity::from_pem(&pem)
                .map_err(|_| tls_error(format!("the client certificate {cert:?} and key {key:?} are not a PEM certificate and key")))?;
            builder = builder.identity(identity);
        }
        (None, None) => {}
        _ => {
            return Err(tls_error(
                "set both vaultTLSClientCertPath and vaultTLSClientKeyPath, or neither".into(),
            ));
        }
    }
    if tls.skip_verify {
        builder = builder.danger_accept_invalid_certs(true);
    }
    if let Some(name) = &tls.server_name {
        builder = builder.resolve_to_addrs(name, &address_of(address).await?);
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
                "VaultUnreachable",
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

fn transport_error(address: &str, error: &reqwest::Error, timeout: Duration) -> MountError {
    let causes = error_chain(error);
    if error.is_timeout() {
        return MountError::new(
            ErrorKind::DeadlineExceeded,
            "VaultTimeout",
            format!("Vault at {address} did not answer within {timeout:?} (--backend-timeout)"),
        );
    }
    let lower = causes.to_ascii_lowercase();
    if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
        return MountError::new(
            ErrorKind::Unavailable,
            "VaultTlsFailed",
            format!("TLS with Vault at {address} failed: {causes}"),
        );
    }
    MountError::new(
        ErrorKind::Unavailable,
        "VaultUnreachable",
        format!("cannot reach Vault at {address}: {causes}"),
    )
}

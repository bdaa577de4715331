//! Backends fetch a mount's objects as the pod. Each one parses its own parameters from the typed
//! [`MountRequest`] and returns a [`MountResponse`]; none knows about gRPC.
//!
//! The parameter `backend` picks one; [`Backends::select`] refuses a missing or unknown name with the
//! list of valid ones. [`build`] makes every backend this binary was built with from the provider's flags
//! ([`BackendFlags`]: one group per backend, behind its cargo feature, plus [`FetchFlags`] they share);
//! `serve` calls it, and so will every other mode that fetches.

#[cfg(feature = "aws")]
pub mod aws;
pub mod fetch;
pub mod file;
pub mod file_root;
#[cfg(feature = "gcp")]
pub mod gcp;
#[cfg(any(feature = "aws", feature = "gcp"))]
pub mod kept;
pub mod objects;
#[cfg(any(feature = "aws", feature = "gcp"))]
pub mod retry;
#[cfg(feature = "vault")]
pub mod vault;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{MountError, MountResult, Reason};
use crate::kubernetes::{Kubernetes, KubernetesFlags};
use crate::pod_token::{LoginScope, TokenSource};
use crate::request::{BACKEND_PARAMETER, MountRequest};
use crate::response::MountResponse;
use crate::telemetry::metrics::Metrics;
use crate::tls_files::TlsFilesDir;
use crate::version_hmac::VersionKey;

/// Flags of every backend (flattened into `serve`).
#[derive(Debug, Clone, clap::Args)]
pub struct BackendFlags {
    /// The backends mounts may use, of those built in (default: all); a SecretProviderClass naming
    /// another is refused (`UnknownBackend`).
    #[arg(long = "backends", env = "OPENCLAW_BACKENDS", value_delimiter = ',')]
    pub enabled: Vec<String>,
    #[command(flatten)]
    pub fetch: FetchFlags,
    #[command(flatten)]
    pub file: file::FileFlags,
    #[cfg(feature = "vault")]
    #[command(flatten)]
    pub vault: vault::VaultFlags,
    #[cfg(feature = "aws")]
    #[command(flatten)]
    pub aws: aws::AwsFlags,
    #[cfg(feature = "gcp")]
    #[command(flatten)]
    pub gcp: gcp::GcpFlags,
    #[command(flatten)]
    pub kubernetes: KubernetesFlags,
}

/// Flags every remote backend shares: caching, timeouts, identity, and what pods may ask of TLS.
#[derive(Debug, Clone, clap::Args)]
pub struct FetchFlags {
    /// Seconds a read value is kept for identical reads of the same identity (0 = no cache, no
    /// coalescing). A rotated secret reaches pods up to this much later.
    #[arg(long, env = "OPENCLAW_CACHE_TTL", default_value_t = 5)]
    pub cache_ttl: u64,
    /// Seconds one backend HTTP attempt may take (retries and logins add to it; --mount-timeout bounds all).
    #[arg(long, env = "OPENCLAW_BACKEND_TIMEOUT", default_value_t = 10)]
    pub backend_timeout: u64,
    /// Backend requests of one mount in flight at once.
    #[arg(long, env = "OPENCLAW_BACKEND_CONCURRENCY", default_value_t = 8)]
    pub backend_concurrency: usize,
    /// Identities whose backend login (token) is kept.
    #[arg(long, env = "OPENCLAW_TOKEN_CACHE_SIZE", default_value_t = 10_000)]
    pub token_cache_size: u64,
    /// Whose login a backend token is: `service-account` (shared by the account's pods) or `pod` (adds
    /// the pod's uid, for backend roles bound to pod-level claims).
    #[arg(
        long,
        env = "OPENCLAW_LOGIN_SCOPE",
        value_enum,
        default_value = "service-account"
    )]
    pub login_scope: LoginScope,
    /// Directory beneath which SecretProviderClasses may name TLS files (CA bundles, client
    /// certificates); without it such parameters are refused.
    #[arg(long, env = "OPENCLAW_TLS_FILES_DIR")]
    pub tls_files_dir: Option<PathBuf>,
    /// Let SecretProviderClasses turn TLS verification off (vaultSkipTLSVerify: true).
    #[arg(long, env = "OPENCLAW_ALLOW_INSECURE_TLS")]
    pub allow_insecure_tls: bool,
}

impl FetchFlags {
    pub fn cache_ttl(&self) -> Duration {
        Duration::from_secs(self.cache_ttl)
    }

    pub fn backend_timeout(&self) -> Duration {
        Duration::from_secs(self.backend_timeout)
    }
}

/// What every backend gets from the provider besides its flags.
#[derive(Clone)]
pub struct SharedParts {
    pub versions: Arc<VersionKey>,
    pub metrics: Arc<Metrics>,
    pub max_objects: usize,
    pub max_response_bytes: usize,
    /// The Kubernetes API client (made at its first use).
    pub kubernetes: Arc<Kubernetes>,
    /// Where backends get the pod's tokens (the driver's, or minted with the TokenRequest fallback).
    pub tokens: TokenSource,
}

/// Why the backends could not be built from the flags.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{flag} {path}: {source}")]
    Directory {
        flag: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{flag}: {message}")]
    Flag { flag: &'static str, message: String },
}

/// Opens a directory an admin's flag names.
pub fn open_directory<T>(
    flag: &'static str,
    path: &std::path::Path,
    open: impl FnOnce(&std::path::Path) -> std::io::Result<T>,
) -> Result<T, BuildError> {
    open(path).map_err(|source| BuildError::Directory {
        flag,
        path: path.display().to_string(),
        source,
    })
}

/// Every backend this binary was built with, configured from the flags.
// Without backend features the shared parts have only the file backend to go to.
#[cfg_attr(not(feature = "vault"), allow(unused_variables))]
pub fn build(flags: &BackendFlags, shared: &SharedParts) -> Result<Backends, BuildError> {
    let tls_files_dir = match &flags.fetch.tls_files_dir {
        Some(dir) => Some(Arc::new(open_directory(
            "--tls-files-dir",
            dir,
            TlsFilesDir::open,
        )?)),
        None => None,
    };
    let all = Backends::new(vec![
        Arc::new(file::FileBackend::from_flags(&flags.file, shared)?),
        #[cfg(feature = "vault")]
        Arc::new(vault::VaultBackend::from_flags(
            &flags.vault,
            &flags.fetch,
            tls_files_dir,
            shared,
        )?),
        #[cfg(feature = "aws")]
        Arc::new(aws::AwsBackend::from_flags(
            &flags.aws,
            &flags.fetch,
            shared,
        )?),
        #[cfg(feature = "gcp")]
        Arc::new(gcp::GcpBackend::from_flags(
            &flags.gcp,
            &flags.fetch,
            shared,
        )?),
    ]);
    all.only(&flags.enabled)
}

/// A boxed future, so backends can live behind `dyn Backend`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A source of secrets.
pub trait Backend: Send + Sync {
    /// The value of the `backend` parameter that picks this backend.
    fn name(&self) -> &'static str;

    /// Fetches every object the request names, all or nothing (objects marked optional may be skipped).
    fn mount<'a>(&'a self, request: &'a MountRequest) -> BoxFuture<'a, MountResult<MountResponse>>;

    /// Every parameter key the backend reads (the `check` command reports any other).
    fn parameter_names(&self) -> Vec<String>;

    /// Checks a request as a mount would before it fetches anything — parameters, objects, output paths
    /// and what the provider's flags refuse — without the pod's identity or any I/O (the `check` command).
    fn check(&self, request: &MountRequest) -> MountResult<()>;

    /// Where the request's reads go (a Vault address, an AWS region), as far as the parameters and
    /// flags tell without I/O: the sync controller holds the SecretSyncs of one throttling endpoint.
    /// Empty when the backend has one endpoint only.
    fn endpoint(&self, _request: &MountRequest) -> String {
        String::new()
    }
}

/// Keys every backend shares or the driver adds.
pub const COMMON_PARAMETERS: [&str; 3] = ["backend", "objects", "secretProviderClass"];

/// The backends this provider was built and started with.
#[derive(Clone, Default)]
pub struct Backends(Vec<Arc<dyn Backend>>);

impl Backends {
    pub fn new(backends: Vec<Arc<dyn Backend>>) -> Self {
        Self(backends)
    }

    /// Only the backends named (all when none are); a name that is not built in is an error.
    pub fn only(self, names: &[String]) -> Result<Self, BuildError> {
        let names: Vec<&str> = names
            .iter()
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            return Ok(self);
        }
        if let Some(unknown) = names.iter().find(|n| !self.names().contains(n)) {
            return Err(BuildError::Flag {
                flag: "--backends",
                message: format!(
                    "{unknown:?} is not a backend of this build: {}",
                    self.names().join(", ")
                ),
            });
        }
        Ok(Self(
            self.0
                .into_iter()
                .filter(|b| names.contains(&b.name()))
                .collect(),
        ))
    }

    /// The names `backend` may take.
    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|b| b.name()).collect()
    }

    /// A metric- and log-safe label for a request's backend: a known name, `unknown` or `none`.
    pub fn label(&self, request: Option<&MountRequest>) -> &'static str {
        match request.and_then(MountRequest::backend_name) {
            None => "none",
            Some(name) => self
                .0
                .iter()
                .map(|b| b.name())
                .find(|known| *known == name)
                .unwrap_or("unknown"),
        }
    }

    /// The backend the request picks.
    pub fn select(&self, request: &MountRequest) -> MountResult<&dyn Backend> {
        // Built only on the error paths: selection runs on every mount.
        let valid = || self.names().join(", ");
        let Some(name) = request.backend_name() else {
            return Err(MountError::invalid(
                Reason::MissingBackend,
                format!(
                    "the SecretProviderClass has no parameter {BACKEND_PARAMETER:?}: set it to one of: {}",
                    valid()
                ),
            ));
        };
        self.0
            .iter()
            .find(|b| b.name() == name)
            .map(|b| b.as_ref())
            .ok_or_else(|| {
                let shown: String = name.chars().take(64).collect();
                MountError::invalid(
                    Reason::UnknownBackend,
                    format!("unknown backend {shown:?}: valid backends are: {}", valid()),
                )
            })
    }
}

//! `serve`: builds the backends, binds the socket and the health server, serves gRPC until shutdown,
//! lets in-flight mounts finish within a bounded grace period, and removes the socket.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;

use crate::backend::objects::DEFAULT_MAX_OBJECTS;
use crate::backend::{self, BackendFlags, Backends, BuildError, SharedParts};
use crate::kubernetes::Kubernetes;
use crate::pod_token::TokenSource;
use crate::proto::csi_driver_provider_server::CsiDriverProviderServer;
use crate::response::DEFAULT_MAX_RESPONSE_BYTES;
use crate::service::{MountLimits, ProviderService, until_set};
use crate::telemetry::{health, metrics::Metrics};
use crate::transport::AuthorityRewrite;
use crate::transport::socket::{ProviderSocket, SocketError};
use crate::version_hmac::{VersionKey, VersionKeyError};

/// How long aborted mounts get to send their `Unavailable` answer after the grace period.
const ABORT_REPLY_TIME: Duration = Duration::from_secs(1);

/// The provider's settings (flags with environment-variable equivalents).
#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    /// Unix socket the driver calls; its base name must be the SecretProviderClass `provider`.
    #[arg(
        long,
        env = "OPENCLAW_SOCKET",
        default_value = "/var/run/secrets-store-csi-providers/openclaw.sock"
    )]
    pub socket: PathBuf,
    /// Also listen on the official providers' sockets beside --socket (`vault.sock`, `aws.sock`,
    /// `gcp.sock`): a mount there that names no `backend` is served by that backend, so their
    /// SecretProviderClasses (`provider: vault` …) work unchanged once their DaemonSet is replaced.
    /// A stale socket file is replaced; a live one (the official provider still running) stops the
    /// start.
    #[arg(long, env = "OPENCLAW_COMPAT", value_delimiter = ',')]
    pub compat: Vec<String>,
    /// The backend of mounts on --socket that name none (default: such mounts are refused).
    #[arg(long, env = "OPENCLAW_DEFAULT_BACKEND")]
    pub default_backend: Option<String>,
    /// Address of the /healthz, /readyz and /metrics server; empty turns it off.
    #[arg(long, env = "OPENCLAW_HEALTH_ADDR", default_value = "0.0.0.0:8080")]
    pub health_addr: String,
    /// File holding the key for object-version HMACs (created with a random key if missing); without
    /// it a random key is used and versions change when the provider restarts.
    #[arg(
        long,
        env = "OPENCLAW_HMAC_KEY_FILE",
        conflicts_with = "hmac_key_secret"
    )]
    pub hmac_key_file: Option<PathBuf>,
    /// Kubernetes Secret NAMESPACE/NAME holding the key for object-version HMACs (created with a random
    /// key if missing, read by every node), so versions agree across nodes; needs RBAC `get` on it (and
    /// `create` on secrets for the first start).
    #[arg(long, env = "OPENCLAW_HMAC_KEY_SECRET")]
    pub hmac_key_secret: Option<String>,
    /// Largest Mount response in bytes; keep it at most the driver's --max-call-recv-msg-size.
    #[arg(long, env = "OPENCLAW_MAX_RESPONSE_BYTES", default_value_t = DEFAULT_MAX_RESPONSE_BYTES)]
    pub max_response_bytes: usize,
    /// Most objects one mount may list.
    #[arg(long, env = "OPENCLAW_MAX_OBJECTS", default_value_t = DEFAULT_MAX_OBJECTS)]
    pub max_objects: usize,
    /// Longest one Mount may take, in seconds (kubelet gives up after 120).
    #[arg(long, env = "OPENCLAW_MOUNT_TIMEOUT", default_value_t = 60)]
    pub mount_timeout: u64,
    /// Seconds in-flight mounts get to finish after SIGTERM/SIGINT.
    #[arg(long, env = "OPENCLAW_GRACE_PERIOD", default_value_t = 10)]
    pub grace_period: u64,
    #[command(flatten)]
    pub backends: BackendFlags,
}

impl ServeConfig {
    /// Every setting at its default (flags unset; environment variables still apply).
    pub fn from_defaults() -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            config: ServeConfig,
        }
        <Defaults as clap::Parser>::parse_from(["serve"]).config
    }
}

/// Why the provider could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[error(transparent)]
    VersionKey(#[from] VersionKeyError),
    #[error(transparent)]
    Backend(#[from] BuildError),
    #[error("cannot listen on --health-addr {addr}: {source}")]
    Health {
        addr: String,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("{flag}: {message}")]
    Flag { flag: &'static str, message: String },
}

/// The official providers whose sockets `--compat` may serve.
pub const COMPAT_BACKENDS: [&str; 3] = ["vault", "aws", "gcp"];

/// Each socket to serve and the backend of its mounts that name none: the compat ones, then --socket last
/// (bound in this order, so our own socket answers only once every socket is bound).
fn sockets(
    config: &ServeConfig,
    backends: &Backends,
) -> Result<Vec<(PathBuf, Option<String>)>, ServeError> {
    let built = backends.names();
    let check = |flag: &'static str, name: &str, allowed: &[&str]| {
        if allowed.contains(&name) && built.contains(&name) {
            return Ok(name.to_string());
        }
        let valid: Vec<&str> = allowed
            .iter()
            .copied()
            .filter(|n| built.contains(n))
            .collect();
        Err(ServeError::Flag {
            flag,
            message: format!("{name:?} is not one of: {}", valid.join(", ")),
        })
    };
    let default = config
        .default_backend
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|name| check("--default-backend", name, &built))
        .transpose()?;
    let mut sockets = vec![(config.socket.clone(), default)];
    let dir = config.socket.parent().unwrap_or(std::path::Path::new(""));
    for name in config
        .compat
        .iter()
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
    {
        let name = check("--compat", name, &COMPAT_BACKENDS)?;
        let path = dir.join(format!("{name}.sock"));
        if sockets.iter().any(|(p, _)| *p == path) {
            return Err(ServeError::Flag {
                flag: "--compat",
                message: format!("{} is named twice (or is --socket)", path.display()),
            });
        }
        sockets.push((path, Some(name)));
    }
    sockets.rotate_left(1);
    Ok(sockets)
}

/// The HMAC key from `--hmac-key-secret` or `--hmac-key-file`, else a random one for this process.
pub async fn version_key(
    file: Option<&std::path::Path>,
    secret: Option<&str>,
    kubernetes: &Kubernetes,
) -> Result<VersionKey, VersionKeyError> {
    if let Some(secret) = secret {
        return version_key_from_secret(secret, kubernetes).await;
    }
    match file {
        Some(path) => Ok(VersionKey::load_or_create(path)?),
        None => {
            tracing::warn!(
                "no --hmac-key-file or --hmac-key-secret: object versions use a key that changes when \
                 the provider restarts"
            );
            Ok(VersionKey::random()?)
        }
    }
}

/// How long reading (or creating) the key Secret may take at start.
const KEY_SECRET_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

async fn version_key_from_secret(
    secret: &str,
    kubernetes: &Kubernetes,
) -> Result<VersionKey, VersionKeyError> {
    let failed = |message: String| VersionKeyError::Secret {
        secret: secret.to_string(),
        message,
    };
    let (namespace, name) = secret
        .split_once('/')
        .filter(|(ns, name)| crate::request::is_namespace_name(ns) && !name.is_empty())
        .ok_or_else(|| failed("--hmac-key-secret must be NAMESPACE/NAME".into()))?;
    let deadline = tokio::time::Instant::now() + KEY_SECRET_TIMEOUT;
    let key = kubernetes
        .version_key_secret(namespace, name, VersionKey::random_bytes()?, deadline)
        .await
        .map_err(|e| failed(e.message))?;
    VersionKey::from_bytes(key)
}

/// The backends the configuration builds (versions keyed as `serve` keys them).
async fn backends(config: &ServeConfig, metrics: &Arc<Metrics>) -> Result<Backends, ServeError> {
    let kubernetes = Arc::new(Kubernetes::new(&config.backends.kubernetes));
    let versions = version_key(
        config.hmac_key_file.as_deref(),
        config.hmac_key_secret.as_deref(),
        &kubernetes,
    )
    .await?;
    let versions = Arc::new(versions);
    build_backends_with(config, versions, metrics, kubernetes)
}

/// The backends the configuration builds, with the given version key.
pub fn build_backends(
    config: &ServeConfig,
    versions: Arc<VersionKey>,
    metrics: &Arc<Metrics>,
) -> Result<Backends, ServeError> {
    let kubernetes = Arc::new(Kubernetes::new(&config.backends.kubernetes));
    build_backends_with(config, versions, metrics, kubernetes)
}

fn build_backends_with(
    config: &ServeConfig,
    versions: Arc<VersionKey>,
    metrics: &Arc<Metrics>,
    kubernetes: Arc<Kubernetes>,
) -> Result<Backends, ServeError> {
    let shared = SharedParts {
        versions,
        metrics: metrics.clone(),
        max_objects: config.max_objects,
        max_response_bytes: config.max_response_bytes,
        tokens: TokenSource::new(Some(kubernetes.clone())),
        kubernetes,
    };
    Ok(backend::build(&config.backends, &shared)?)
}

/// Serves until `shutdown` completes, then drains for at most the grace period.
pub async fn run(
    config: ServeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let metrics = Arc::new(Metrics::default());
    let backends = backends(&config, &metrics).await?;
    run_with_backends(config, backends, metrics, shutdown).await
}

/// [`run`] with the given backends instead of those the configuration builds.
pub async fn run_with_backends(
    config: ServeConfig,
    backends: Backends,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let mut bound = Vec::new();
    for (path, default) in sockets(&config, &backends)? {
        let (socket, listener) = ProviderSocket::bind(&path)?;
        bound.push((socket, listener, default));
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let (abort_tx, abort_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let socket_paths = bound
        .iter()
        .map(|(socket, _, _)| socket.path().to_path_buf())
        .collect();
    let health_addr = start_health(&config, socket_paths, &metrics, stop_rx.clone()).await?;
    let paths: Vec<String> = bound
        .iter()
        .map(|(socket, _, _)| socket.path().display().to_string())
        .collect();
    tracing::info!(
        sockets = ?paths,
        health = health_addr.as_deref().unwrap_or("off"),
        backends = ?backends.names(),
        version = env!("CARGO_PKG_VERSION"),
        "serving"
    );
    let limits = MountLimits {
        max_response_bytes: config.max_response_bytes,
        timeout: Duration::from_secs(config.mount_timeout),
    };
    let mut sockets = Vec::new();
    let mut servers = Vec::new();
    for (socket, listener, default) in bound {
        let service = ProviderService::new(backends.clone(), limits, metrics.clone())
            .abort_on(abort_rx.clone())
            .default_backend(default);
        let incoming =
            UnixListenerStream::new(listener).map(|conn| conn.map(AuthorityRewrite::new));
        servers.push(
            tonic::transport::Server::builder()
                .add_service(CsiDriverProviderServer::new(service))
                .serve_with_incoming_shutdown(incoming, until_set(stop_rx.clone())),
        );
        sockets.push(socket);
    }
    let server = futures_util::future::try_join_all(servers);
    let mut server = std::pin::pin!(server);
    let grace = Duration::from_secs(config.grace_period);
    tokio::select! {
        result = &mut server => { result?; }
        () = async { until_set(stop_rx).await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_seconds = config.grace_period, "grace period over: failing the mounts still running");
            let _ = abort_tx.send(true);
            // Let the aborted mounts send their answer; idle driver connections may stay open.
            let _ = tokio::time::timeout(ABORT_REPLY_TIME, &mut server).await;
        }
    }
    tracing::info!(sockets = ?paths, "stopped; removing the sockets");
    drop(sockets);
    Ok(())
}

async fn start_health(
    config: &ServeConfig,
    sockets: Vec<PathBuf>,
    metrics: &Arc<Metrics>,
    stop: watch::Receiver<bool>,
) -> Result<Option<String>, ServeError> {
    if config.health_addr.trim().is_empty() {
        return Ok(None);
    }
    let listener =
        health::bind(&config.health_addr)
            .await
            .map_err(|source| ServeError::Health {
                addr: config.health_addr.clone(),
                source,
            })?;
    let bound = health::local_addr(&listener).map(|a| a.to_string());
    let metrics = metrics.clone();
    tokio::spawn(async move {
        let readiness = health::Readiness::Sockets(sockets);
        if let Err(e) = health::serve(listener, readiness, metrics, until_set(stop)).await {
            tracing::error!(error = %e, "health server stopped");
        }
    });
    Ok(bound)
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
}

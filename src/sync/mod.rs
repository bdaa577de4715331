//! The optional sync controller (`sync` mode, cargo feature `sync`): `SecretSync` resources kept in step
//! with Kubernetes Secrets through the same backends and fetch pipeline as `serve`, and the workloads
//! that use them restarted when they change.
//!
//! The flow, one module per step: [`leader`] (one replica works, through a Lease) → [`watch`] (the
//! SecretSyncs, and the metadata of the Secrets the controller labelled) → [`controller`] (what is due
//! when) → [`reconcile`] (one SecretSync: [`source`] fetches, [`target`] writes the Secret, [`rollout`]
//! restarts workloads, [`report`] writes status and events). [`crd`] holds the resource's types.

pub mod controller;
pub mod crd;
pub mod leader;
pub mod reconcile;
pub mod report;
pub mod rollout;
pub mod source;
pub mod target;
pub mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use tokio::sync::{mpsc, watch as flag};

use crate::backend::objects::DEFAULT_MAX_OBJECTS;
use crate::backend::{self, BackendFlags, BuildError, SharedParts};
use crate::error::MountError;
use crate::kubernetes::Kubernetes;
use crate::pod_token::{LoginScope, TokenSource};
use crate::response::DEFAULT_MAX_RESPONSE_BYTES;
use crate::service::until_set;
use crate::telemetry::health;
use crate::telemetry::metrics::Metrics;
use crate::version_hmac::VersionKeyError;

/// The sync controller's settings (flags with environment-variable equivalents).
#[derive(Debug, Clone, clap::Args)]
pub struct SyncConfig {
    /// Name of the coordination.k8s.io Lease the replicas elect their leader with (one per install).
    #[arg(
        long,
        env = "OPENCLAW_LEADER_ELECTION_ID",
        default_value = "openclaw-sync"
    )]
    pub leader_election_id: String,
    /// Namespace of that Lease; default `$POD_NAMESPACE`.
    #[arg(long, env = "OPENCLAW_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Seconds the leader's Lease lasts unrenewed (it renews every third; a standby takes over after
    /// this long without a renewal).
    #[arg(
        long,
        env = "OPENCLAW_LEADER_ELECTION_LEASE_DURATION",
        default_value_t = 15
    )]
    pub leader_election_lease_duration: u64,
    /// Watch SecretSyncs in this namespace only; default: every namespace.
    #[arg(long, env = "OPENCLAW_SYNC_NAMESPACE")]
    pub namespace: Option<String>,
    /// Address of the /healthz, /readyz and /metrics server; empty turns it off.
    #[arg(long, env = "OPENCLAW_HEALTH_ADDR", default_value = "0.0.0.0:8080")]
    pub health_addr: String,
    /// File holding the key for the data hashes and object versions (created if missing); replicas
    /// must share it. Default: the Secret `<Lease namespace>/<leader-election-id>-hmac-key`.
    #[arg(
        long,
        env = "OPENCLAW_HMAC_KEY_FILE",
        conflicts_with = "hmac_key_secret"
    )]
    pub hmac_key_file: Option<PathBuf>,
    /// Kubernetes Secret NAMESPACE/NAME holding that key (created with a random key if missing);
    /// default `<Lease namespace>/<leader-election-id>-hmac-key` unless --hmac-key-file is given.
    #[arg(long, env = "OPENCLAW_HMAC_KEY_SECRET")]
    pub hmac_key_secret: Option<String>,
    /// SecretSyncs reconciled at once.
    #[arg(long, env = "OPENCLAW_SYNC_CONCURRENCY", default_value_t = 8)]
    pub sync_concurrency: usize,
    /// Seconds after a Secret's data changed before its workloads are restarted, so keys rotating
    /// together cause one rollout.
    #[arg(long, env = "OPENCLAW_ROLLOUT_DEBOUNCE", default_value_t = 15)]
    pub rollout_debounce: u64,
    /// Shortest refreshInterval honoured, in seconds (shorter ones are raised to it).
    #[arg(long, env = "OPENCLAW_MIN_REFRESH_INTERVAL", default_value_t = 60)]
    pub min_refresh_interval: u64,
    /// Longest one SecretSync's fetch may take, in seconds.
    #[arg(long, env = "OPENCLAW_MOUNT_TIMEOUT", default_value_t = 60)]
    pub mount_timeout: u64,
    /// Audiences a SecretProviderClass may have the controller mint service-account tokens for (its
    /// `audience` parameter): the Vault backend's defaults, plus any your SecretProviderClasses set.
    /// The AWS backend's audiences are fixed by the provider and need no entry.
    #[arg(
        long,
        env = "OPENCLAW_SYNC_ALLOWED_AUDIENCES",
        value_delimiter = ',',
        default_value = "vault,openbao"
    )]
    pub sync_allowed_audiences: Vec<String>,
    /// Most objects one SecretProviderClass may list.
    #[arg(long, env = "OPENCLAW_MAX_OBJECTS", default_value_t = DEFAULT_MAX_OBJECTS)]
    pub max_objects: usize,
    /// Most bytes one SecretSync's files may hold.
    #[arg(long, env = "OPENCLAW_MAX_RESPONSE_BYTES", default_value_t = DEFAULT_MAX_RESPONSE_BYTES)]
    pub max_response_bytes: usize,
    #[command(flatten)]
    pub backends: BackendFlags,
}

/// Why the controller could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{}", .0.message)]
    Kubernetes(MountError),
    #[error(transparent)]
    VersionKey(#[from] VersionKeyError),
    #[error(transparent)]
    Backend(#[from] BuildError),
    #[error(
        "no Lease namespace: pass --leader-election-namespace or set POD_NAMESPACE (the Downward API)"
    )]
    NoLeaseNamespace,
    #[error("cannot listen on --health-addr {addr}: {source}")]
    Health {
        addr: String,
        source: std::io::Error,
    },
    #[error(
        "--login-scope pod cannot be used by the sync controller: it fetches as service accounts, not pods"
    )]
    LoginScopePod,
    #[error("stopped leading: {0}")]
    LeaseLost(#[from] leader::LeaseLost),
}

/// Runs the controller until `shutdown` completes (or the Lease is lost).
pub async fn run(
    config: SyncConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), SyncError> {
    let lease_namespace = config
        .leader_election_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .filter(|n| !n.is_empty())
        .ok_or(SyncError::NoLeaseNamespace)?;
    if config.backends.fetch.login_scope == LoginScope::Pod {
        return Err(SyncError::LoginScopePod);
    }
    let metrics = Arc::new(Metrics::for_sync());
    let kubernetes = Arc::new(Kubernetes::new(&config.backends.kubernetes));
    let client = kubernetes.client().await.map_err(SyncError::Kubernetes)?;
    let key_secret = key_secret(&config, &lease_namespace);
    let versions = Arc::new(
        crate::server::version_key(
            config.hmac_key_file.as_deref(),
            key_secret.as_deref(),
            &kubernetes,
        )
        .await?,
    );
    let shared = SharedParts {
        versions: versions.clone(),
        metrics: metrics.clone(),
        max_objects: config.max_objects,
        max_response_bytes: config.max_response_bytes,
        kubernetes: kubernetes.clone(),
        tokens: TokenSource::unbound(kubernetes.clone(), allowed_audiences(&config)),
    };
    let backends = backend::build(&config.backends, &shared)?;
    let (stop_tx, stop) = flag::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    // A standby is ready (it can take over); a leader while its watches work (after their first list).
    let (ready_tx, ready_rx) = flag::channel(true);
    start_health(&config, ready_rx, &metrics, stop.clone()).await?;
    let elector = leader::Elector::new(
        client.clone(),
        &lease_namespace,
        &config.leader_election_id,
        &leader::holder_identity(),
        Duration::from_secs(config.leader_election_lease_duration),
    );
    tracing::info!(
        lease = %format!("{lease_namespace}/{}", config.leader_election_id),
        holder = elector.holder(),
        backends = ?backends.names(),
        version = env!("CARGO_PKG_VERSION"),
        "sync controller started; waiting to lead"
    );
    tokio::select! {
        () = elector.acquire() => {}
        () = until_set(stop.clone()) => return Ok(()),
    }
    if let Some(sync) = &metrics.sync {
        sync.set_leader(true);
    }
    let _ = ready_tx.send(false);
    let ctx = Arc::new(reconcile::Context {
        client: client.clone(),
        kubernetes,
        backends,
        versions,
        metrics,
        settings: reconcile::Settings {
            mount_timeout: Duration::from_secs(config.mount_timeout),
            debounce: Duration::from_secs(config.rollout_debounce),
            min_interval: Duration::from_secs(config.min_refresh_interval),
            instance: elector.holder().to_string(),
            key_secret: key_secret
                .as_deref()
                .and_then(|s| s.split_once('/'))
                .map(|(ns, name)| (ns.to_string(), name.to_string())),
        },
    });
    let feeds = start_watches(&client, config.namespace.as_deref());
    let controller = controller::Controller::new(ctx, config.sync_concurrency).run(
        feeds,
        ready_tx,
        stop.clone(),
    );
    let result = tokio::select! {
        () = controller => Ok(()),
        lost = elector.keep() => Err(SyncError::LeaseLost(lost)),
    };
    if result.is_ok() {
        elector.release().await;
    }
    result
}

fn allowed_audiences(config: &SyncConfig) -> Vec<String> {
    config
        .sync_allowed_audiences
        .iter()
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect()
}

/// The Secret holding the key: `--hmac-key-secret`; without it and `--hmac-key-file`, one the
/// controller owns beside its Lease, so every replica (and every restart) hashes alike.
fn key_secret(config: &SyncConfig, lease_namespace: &str) -> Option<String> {
    match (&config.hmac_key_secret, &config.hmac_key_file) {
        (Some(secret), _) => Some(secret.clone()),
        (None, Some(_)) => None,
        (None, None) => Some(format!(
            "{lease_namespace}/{}-hmac-key",
            config.leader_election_id
        )),
    }
}

/// The two watches feeding the controller.
fn start_watches(client: &kube::Client, namespace: Option<&str>) -> controller::Feeds {
    let (syncs_tx, syncs) = mpsc::channel(1024);
    let (secrets_tx, secrets) = mpsc::channel(1024);
    let (sync_api, secret_api): (Api<crd::SecretSync>, Api<Secret>) = match namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    tokio::spawn(watch::run(
        "secretsyncs",
        watch::Objects {
            api: sync_api,
            labels: None,
            prune: controller::prune,
        },
        syncs_tx,
    ));
    tokio::spawn(watch::run(
        "secrets",
        watch::SecretMetadata {
            api: secret_api,
            labels: format!("{}=true", target::MANAGED_LABEL),
        },
        secrets_tx,
    ));
    controller::Feeds { syncs, secrets }
}

async fn start_health(
    config: &SyncConfig,
    ready: flag::Receiver<bool>,
    metrics: &Arc<Metrics>,
    stop: flag::Receiver<bool>,
) -> Result<(), SyncError> {
    if config.health_addr.trim().is_empty() {
        return Ok(());
    }
    let listener = health::bind(&config.health_addr)
        .await
        .map_err(|source| SyncError::Health {
            addr: config.health_addr.clone(),
            source,
        })?;
    let metrics = metrics.clone();
    let readiness = health::Readiness::Flag(ready, "the leader's watches are not up yet\n");
    tokio::spawn(async move {
        if let Err(e) = health::serve(listener, readiness, metrics, until_set(stop)).await {
            tracing::error!(error = %e, "health server stopped");
        }
    });
    Ok(())
}

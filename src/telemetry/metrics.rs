//! Prometheus metrics of the provider: mounts by backend and result code, mount duration, errors by code;
//! and, in `sync` mode, the controller's ([`SyncMetrics`], prefix `openclaw_sync`).
//!
//! Label values are bounded: backend names come from the provider's own list (`unknown`/`none`
//! otherwise), codes from the fixed set of [`crate::error::Reason`] (plus `OK`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MountLabels {
    backend: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendRequestLabels {
    backend: &'static str,
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    backend: &'static str,
    result: &'static str,
}

/// The result code of a successful mount.
pub const OK: &str = "Ok";

/// The provider's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    /// The sync controller's metrics (only in `sync` mode).
    pub sync: Option<SyncMetrics>,
    mounts: Family<MountLabels, Counter>,
    errors: Family<CodeLabel, Counter>,
    duration: Family<BackendLabel, Histogram>,
    backend_requests: Family<BackendRequestLabels, Counter>,
    cache_lookups: Family<CacheLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("openclaw_provider");
        let mounts = Family::<MountLabels, Counter>::default();
        let errors = Family::<CodeLabel, Counter>::default();
        let duration = Family::<BackendLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ])
        });
        registry.register(
            "mounts",
            "Mount calls by backend and result code",
            mounts.clone(),
        );
        registry.register(
            "mount_errors",
            "Failed Mount calls by error code",
            errors.clone(),
        );
        registry.register(
            "mount_duration_seconds",
            "Time to answer a Mount call, by backend",
            duration.clone(),
        );
        let backend_requests = Family::<BackendRequestLabels, Counter>::default();
        let cache_lookups = Family::<CacheLabels, Counter>::default();
        registry.register(
            "backend_requests",
            "Requests to secret backends by operation (login, read, write) and outcome (HTTP status class or error code)",
            backend_requests.clone(),
        );
        registry.register(
            "value_cache_lookups",
            "Value cache lookups: hit (kept, or joined an identical read in flight) or miss (read from the backend)",
            cache_lookups.clone(),
        );
        Self {
            registry: root,
            sync: None,
            mounts,
            errors,
            duration,
            backend_requests,
            cache_lookups,
        }
    }
}

impl Metrics {
    /// The provider's metrics plus the sync controller's.
    pub fn for_sync() -> Self {
        let mut metrics = Self::default();
        let sync = SyncMetrics::default();
        sync.register(metrics.registry.sub_registry_with_prefix("openclaw_sync"));
        metrics.sync = Some(sync);
        metrics
    }

    /// Records one Mount call.
    pub fn record_mount(&self, backend: &'static str, code: &'static str, seconds: f64) {
        self.mounts
            .get_or_create(&MountLabels { backend, code })
            .inc();
        if code != OK {
            self.errors.get_or_create(&CodeLabel { code }).inc();
        }
        self.duration
            .get_or_create(&BackendLabel { backend })
            .observe(seconds);
    }

    /// Records one request to a backend (after its retries).
    pub fn record_backend_request(
        &self,
        backend: &'static str,
        operation: &'static str,
        outcome: &'static str,
    ) {
        self.backend_requests
            .get_or_create(&BackendRequestLabels {
                backend,
                operation,
                outcome,
            })
            .inc();
    }

    /// Records one value cache lookup.
    pub fn record_cache_lookup(&self, backend: &'static str, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.cache_lookups
            .get_or_create(&CacheLabels { backend, result })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadyLabel {
    ready: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// The sync controller's metrics. Labels are fixed sets, never a SecretSync's name or key.
pub struct SyncMetrics {
    reconciles: Family<ResultLabel, Counter>,
    duration: Histogram,
    objects: Family<ReadyLabel, Gauge>,
    rollouts: Counter,
    writes: Family<KindLabel, Counter>,
    throttled: Family<BackendLabel, Counter>,
    leader: Gauge,
}

impl Default for SyncMetrics {
    fn default() -> Self {
        Self {
            reconciles: Family::default(),
            duration: Histogram::new([
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            objects: Family::default(),
            rollouts: Counter::default(),
            writes: Family::default(),
            throttled: Family::default(),
            leader: Gauge::default(),
        }
    }
}

impl SyncMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "reconcile",
            "SecretSync reconciles by result (synced: the Secret was written; unchanged; failed)",
            self.reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one SecretSync reconcile took (fetch, compare, write)",
            self.duration.clone(),
        );
        registry.register(
            "objects",
            "SecretSync objects by Ready condition (true, false, unknown)",
            self.objects.clone(),
        );
        registry.register(
            "rollouts",
            "Workload restarts the controller triggered",
            self.rollouts.clone(),
        );
        registry.register(
            "api_writes",
            "Writes to the Kubernetes API by kind (secret, status, rollout, event, delete)",
            self.writes.clone(),
        );
        registry.register(
            "backend_throttled",
            "Throttle windows opened because a backend answered \"slow down\" (its SecretSyncs wait)",
            self.throttled.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            self.leader.clone(),
        );
    }

    /// Records one reconcile's result and duration.
    pub fn record_reconcile(&self, result: &'static str, seconds: f64) {
        self.reconciles.get_or_create(&ResultLabel { result }).inc();
        self.duration.observe(seconds);
    }

    /// Sets how many SecretSyncs are in each Ready state.
    pub fn set_objects(&self, ready: usize, not_ready: usize, unknown: usize) {
        for (label, count) in [("true", ready), ("false", not_ready), ("unknown", unknown)] {
            self.objects
                .get_or_create(&ReadyLabel { ready: label })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    pub fn record_rollout(&self) {
        self.rollouts.inc();
    }

    /// Records one write to the Kubernetes API.
    pub fn record_write(&self, kind: &'static str) {
        self.writes.get_or_create(&KindLabel { kind }).inc();
    }

    /// Records a throttle window opened for a backend.
    pub fn record_throttled(&self, backend: &'static str) {
        self.throttled
            .get_or_create(&BackendLabel { backend })
            .inc();
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }
}

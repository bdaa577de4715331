//! Prometheus metrics of the provider: mounts by backend and result code, mount duration, errors by code.
//!
//! Label values are bounded: backend names come from the provider's own list (`unknown`/`none`
//! otherwise), codes from the fixed set of [`crate::error::Reason`] (plus `OK`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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
    mounts: Family<MountLabels, Counter>,
    errors: Family<CodeLabel, Counter>,
    duration: Family<BackendLabel, Histogram>,
    backend_requests: Family<BackendRequestLabels, Counter>,
    cache_lookups: Family<CacheLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("openclaw_provider");
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
            registry,
            mounts,
            errors,
            duration,
            backend_requests,
            cache_lookups,
        }
    }
}

impl Metrics {
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

//! The gRPC service the driver calls: `Version`, and `Mount` = request → backend → response.
//!
//! Every failure becomes a gRPC status whose message starts with the CamelCase reason
//! (`InvalidObjectName: objects[0].objectName ...`), the same reason is sent in the `x-openclaw-error-code`
//! metadata and counted in metrics. One log line per mount, never with a value or token.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tonic::{Code, Request, Response, Status};

use crate::backend::Backends;
use crate::error::{ErrorKind, MountError, Reason};
use crate::proto;
use crate::proto::csi_driver_provider_server::CsiDriverProvider;
use crate::request::{BACKEND_PARAMETER, MountRequest};
use crate::telemetry::metrics::{Metrics, OK};

/// The metadata key that carries the error reason.
pub const ERROR_CODE_METADATA: &str = "x-openclaw-error-code";

/// The provider's implementation of `v1alpha1.CSIDriverProvider`.
pub struct ProviderService {
    backends: Backends,
    limits: MountLimits,
    metrics: Arc<Metrics>,
    /// Set when the shutdown grace period is over: mounts still running answer `Unavailable`.
    abort: Option<watch::Receiver<bool>>,
    /// The backend of mounts that name none (a compat socket's, or --default-backend).
    default_backend: Option<String>,
}

/// Bounds on one Mount call.
#[derive(Debug, Clone, Copy)]
pub struct MountLimits {
    /// Largest encoded response (the driver's `--max-call-recv-msg-size`).
    pub max_response_bytes: usize,
    /// Longest a Mount may take, well inside kubelet's 2-minute CSI deadline.
    pub timeout: Duration,
}

impl ProviderService {
    pub fn new(backends: Backends, limits: MountLimits, metrics: Arc<Metrics>) -> Self {
        Self {
            backends,
            limits,
            metrics,
            abort: None,
            default_backend: None,
        }
    }

    /// Mounts that name no `backend` are served by `backend`.
    pub fn default_backend(mut self, backend: Option<String>) -> Self {
        self.default_backend = backend;
        self
    }

    /// Mounts still running when `abort` becomes true fail with `Unavailable` (the driver retries those).
    pub fn abort_on(mut self, abort: watch::Receiver<bool>) -> Self {
        self.abort = Some(abort);
        self
    }

    async fn answer(&self, request: &MountRequest) -> Result<proto::MountResponse, MountError> {
        let backend = self.backends.select(request)?;
        let fetch = tokio::time::timeout(self.limits.timeout, backend.mount(request));
        let aborted = async {
            match self.abort.clone() {
                Some(abort) => until_set(abort).await,
                None => std::future::pending().await,
            }
        };
        let response = tokio::select! {
            fetched = fetch => fetched.map_err(|_| {
                MountError::new(
                    ErrorKind::DeadlineExceeded,
                    Reason::MountTimeout,
                    format!(
                        "the {} backend did not answer within {:?} (--mount-timeout)",
                        backend.name(),
                        self.limits.timeout
                    ),
                )
            })??,
            () = aborted => {
                return Err(MountError::new(
                    ErrorKind::Unavailable,
                    Reason::ProviderStopping,
                    "the provider stopped before this mount finished; the driver retries it",
                ));
            }
        };
        response.into_proto(self.limits.max_response_bytes)
    }
}

/// Completes once the flag is set (or its sender is gone).
pub async fn until_set(mut flag: watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}

#[tonic::async_trait]
impl CsiDriverProvider for ProviderService {
    async fn version(
        &self,
        _request: Request<proto::VersionRequest>,
    ) -> Result<Response<proto::VersionResponse>, Status> {
        Ok(Response::new(proto::VersionResponse {
            version: crate::PROTOCOL_VERSION.into(),
            runtime_name: crate::RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
        }))
    }

    async fn mount(
        &self,
        request: Request<proto::MountRequest>,
    ) -> Result<Response<proto::MountResponse>, Status> {
        let started = Instant::now();
        let parsed = MountRequest::from_proto(request.into_inner()).map(|mut request| {
            request.deadline = Some(tokio::time::Instant::now() + self.limits.timeout);
            if let Some(default) = &self.default_backend
                && request.backend_name().is_none()
            {
                request
                    .parameters
                    .insert(BACKEND_PARAMETER.to_string(), default.clone());
            }
            request
        });
        let result = match &parsed {
            Ok(request) => self.answer(request).await,
            Err(error) => Err(error.clone()),
        };
        let elapsed = started.elapsed();
        let backend = self.backends.label(parsed.as_ref().ok());
        let code = result.as_ref().map_or_else(|e| e.reason.as_str(), |_| OK);
        self.metrics
            .record_mount(backend, code, elapsed.as_secs_f64());
        log_mount(
            parsed.as_ref().ok(),
            backend,
            &result,
            elapsed.as_secs_f64(),
        );
        result.map(Response::new).map_err(to_status)
    }
}

fn log_mount(
    request: Option<&MountRequest>,
    backend: &str,
    result: &Result<proto::MountResponse, MountError>,
    seconds: f64,
) {
    let (namespace, pod) = request.map_or(("", ""), |r| {
        (r.pod.namespace.as_str(), r.pod.name.as_str())
    });
    let duration_ms = seconds * 1000.0;
    match result {
        Ok(response) => tracing::info!(
            namespace,
            pod,
            backend,
            objects = response.object_version.len(),
            files = response.files.len(),
            duration_ms,
            result = OK,
            "mount"
        ),
        Err(error) => tracing::warn!(
            namespace,
            pod,
            backend,
            objects = 0,
            duration_ms,
            result = error.reason.as_str(),
            error = %error.message,
            "mount failed"
        ),
    }
}

/// The gRPC status for a failed step.
pub fn to_status(error: MountError) -> Status {
    let code = match error.kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::DataLoss => Code::DataLoss,
        ErrorKind::Internal => Code::Internal,
    };
    let mut status = Status::new(code, format!("{}: {}", error.reason, error.message));
    if let Ok(value) = error.reason.as_str().parse() {
        status.metadata_mut().insert(ERROR_CODE_METADATA, value);
    }
    status
}

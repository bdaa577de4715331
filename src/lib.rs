//! openclaw-csi-provider: a Secrets Store CSI driver provider.
//!
//! The flow of one Mount, one module per step:
//! [`transport`] (Unix socket, HTTP/2 `:authority` compatibility, lifecycle) →
//! [`service`] (the gRPC service) → [`request`] (typed, validated Mount request) →
//! [`backend`] (fetch the objects as the pod) → [`response`] (validated files and versions).
//! [`telemetry`] holds logs, metrics and the health server; [`cli`] the driver emulator and the demo.

pub mod backend;
pub mod cache;
pub mod cli;
pub mod error;
pub mod file_mode;
pub mod kubernetes;
pub mod pod_token;
pub mod request;
pub mod response;
pub mod server;
pub mod service;
#[cfg(feature = "sync")]
pub mod sync;
pub mod telemetry;
pub mod tls_files;
pub mod transform;
pub mod transport;
pub mod version_hmac;

/// The provider protocol, generated from `proto/v1alpha1/service.proto`.
pub mod proto {
    tonic::include_proto!("v1alpha1");
}

/// The name the provider reports in `Version` and in logs.
pub const RUNTIME_NAME: &str = "openclaw-csi-provider";

/// Installs the process's one rustls crypto provider (ring). Every TLS client here (reqwest, and the
/// Kubernetes client) takes the process default, and a process with two providers enabled and none
/// installed panics on its first TLS connection. Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The only provider protocol version that exists.
pub const PROTOCOL_VERSION: &str = "v1alpha1";

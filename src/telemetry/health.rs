//! The HTTP server on `--health-addr`: `/healthz` (the process is alive), `/readyz` (the provider socket
//! accepts connections) and `/metrics` (Prometheus text).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::{TcpListener, UnixStream};

use super::metrics::Metrics;

#[derive(Clone)]
struct HealthState {
    socket: PathBuf,
    metrics: Arc<Metrics>,
}

/// Binds the health address; the returned listener is served by [`serve`].
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves health and metrics until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    socket: PathBuf,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics_text))
        .with_state(HealthState { socket, metrics });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn ready(State(state): State<HealthState>) -> impl IntoResponse {
    match UnixStream::connect(&state.socket).await {
        Ok(_) => (StatusCode::OK, "ready\n"),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "provider socket does not accept connections\n",
        ),
    }
}

async fn metrics_text(State(state): State<HealthState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// The address a listener is bound to, for logs.
pub fn local_addr(listener: &TcpListener) -> Option<SocketAddr> {
    listener.local_addr().ok()
}

//! The HTTP server on `--health-addr`: `/healthz` (the process is alive), `/readyz` (`serve`: the provider
//! socket accepts connections; `sync`: see [`Readiness::Flag`]) and `/metrics` (Prometheus text).

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

/// What `/readyz` checks.
#[derive(Clone)]
pub enum Readiness {
    /// Every provider socket (`--socket` and the compat ones) accepts connections.
    Sockets(Vec<PathBuf>),
    /// A flag the process keeps (the sync controller: a standby, or a leader whose watches are up).
    Flag(tokio::sync::watch::Receiver<bool>, &'static str),
}

#[derive(Clone)]
struct HealthState {
    readiness: Readiness,
    metrics: Arc<Metrics>,
}

/// Binds the health address; the returned listener is served by [`serve`].
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves health and metrics until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    readiness: Readiness,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics_text))
        .with_state(HealthState { readiness, metrics });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn ready(State(state): State<HealthState>) -> impl IntoResponse {
    let (ready, why_not) = match &state.readiness {
        Readiness::Sockets(sockets) => {
            let mut all = true;
            for socket in sockets {
                all &= UnixStream::connect(socket).await.is_ok();
            }
            (all, "a provider socket does not accept connections\n")
        }
        Readiness::Flag(flag, why_not) => (*flag.borrow(), *why_not),
    };
    if ready {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, why_not)
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

//! Shutdown drains in-flight mounts within the grace period, and no longer than it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openclaw_csi_provider::backend::{Backend, Backends, BoxFuture};
use openclaw_csi_provider::cli::client;
use openclaw_csi_provider::error::MountResult;
use openclaw_csi_provider::proto;
use openclaw_csi_provider::request::MountRequest;
use openclaw_csi_provider::response::{MountResponse, MountedFile, ObjectVersion};
use openclaw_csi_provider::server::{self, ServeConfig};
use openclaw_csi_provider::telemetry::metrics::Metrics;

/// A backend that takes a fixed time to answer, like a slow secret store.
struct SlowBackend(Duration);

impl Backend for SlowBackend {
    fn name(&self) -> &'static str {
        "slow"
    }

    fn parameter_names(&self) -> Vec<String> {
        vec!["backend".into()]
    }

    fn check(&self, _request: &MountRequest) -> MountResult<()> {
        Ok(())
    }

    fn mount<'a>(
        &'a self,
        _request: &'a MountRequest,
    ) -> BoxFuture<'a, MountResult<MountResponse>> {
        Box::pin(async move {
            tokio::time::sleep(self.0).await;
            Ok(MountResponse {
                files: vec![MountedFile {
                    path: "key".into(),
                    mode: 0o644,
                    contents: b"value".to_vec().into(),
                }],
                versions: vec![ObjectVersion {
                    id: "slow/key".into(),
                    version: "1".into(),
                }],
                ..Default::default()
            })
        })
    }
}

fn config(socket: &std::path::Path, grace: u64) -> ServeConfig {
    ServeConfig {
        socket: socket.to_path_buf(),
        health_addr: String::new(),
        grace_period: grace,
        ..ServeConfig::from_defaults()
    }
}

fn request() -> proto::MountRequest {
    proto::MountRequest {
        attributes: r#"{"backend":"slow"}"#.into(),
        secrets: "null".into(),
        target_path: "/t".into(),
        permission: "420".into(),
        current_object_version: vec![],
    }
}

/// Starts the provider with a slow backend, starts a mount, then asks the provider to stop.
async fn mount_during_shutdown(
    delay: Duration,
    grace: u64,
) -> (
    Result<tonic::Response<proto::MountResponse>, tonic::Status>,
    Duration,
    bool,
) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("p.sock");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let backends = Backends::new(vec![Arc::new(SlowBackend(delay))]);
    let provider = tokio::spawn(server::run_with_backends(
        config(&socket, grace),
        backends,
        Arc::new(Metrics::default()),
        async {
            let _ = stop_rx.await;
        },
    ));
    for _ in 0..200 {
        if socket.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut client = client::connect(socket.clone()).await.unwrap();
    let mount = tokio::spawn(async move { client.mount(request()).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = Instant::now();
    stop_tx.send(()).unwrap();
    let result = mount.await.unwrap();
    provider.await.unwrap().unwrap();
    (result, stopping.elapsed(), socket.exists())
}

#[tokio::test]
async fn an_in_flight_mount_finishes_within_the_grace_period() {
    let (result, took, socket_left) = mount_during_shutdown(Duration::from_millis(1500), 10).await;
    let response = result.expect("the in-flight mount completes").into_inner();
    assert_eq!(response.files[0].contents, b"value");
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert!(!socket_left);
}

#[tokio::test]
async fn a_mount_longer_than_the_grace_period_is_cut_off() {
    let (result, took, socket_left) = mount_during_shutdown(Duration::from_secs(20), 1).await;
    let status = result.expect_err("the mount cannot outlive the provider");
    assert_eq!(
        status.code(),
        tonic::Code::Unavailable,
        "the driver retries Unavailable"
    );
    assert!(
        status.message().starts_with("ProviderStopping: "),
        "{}",
        status.message()
    );
    assert!(
        took < Duration::from_secs(6),
        "bounded by the 1 s grace period: {took:?}"
    );
    assert!(!socket_left);
}

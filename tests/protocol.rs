//! The provider protocol through the real socket: Version, Mount, every driver's `:authority` (a raw
//! HTTP/2 client and grpcurl send the socket path as older drivers do), health and metrics.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use loona_hpack::{Decoder, Encoder};
use openclaw_csi_provider::backend::Backends;
use openclaw_csi_provider::proto;
use openclaw_csi_provider::proto::csi_driver_provider_server::CsiDriverProviderServer;
use openclaw_csi_provider::service::{MountLimits, ProviderService};
use openclaw_csi_provider::telemetry::metrics::Metrics;
use prost::Message;
use support::{OPENCLAW_KEYS, OPENCLAW_OBJECTS, Provider, mount_request};

const SOCKET_PATH_AUTHORITY: &str = "/var/run/secrets-store-csi-providers/openclaw.sock";

#[tokio::test]
async fn version_reports_protocol_name_and_crate_version() {
    let provider = Provider::start(&[]);
    let mut client = provider.client().await;
    let version = client
        .version(proto::VersionRequest {
            version: "v1alpha1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(version.version, "v1alpha1");
    assert_eq!(version.runtime_name, "openclaw-csi-provider");
    assert_eq!(version.runtime_version, env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn mount_returns_files_modes_and_stable_versions() {
    let provider = Provider::start(&[]);
    provider.write_openclaw_keys();
    let mut client = provider.client().await;
    let request = mount_request(&[("backend", "file"), ("objects", OPENCLAW_OBJECTS)]);
    let first = client.mount(request.clone()).await.unwrap().into_inner();
    let files: HashMap<_, _> = first.files.iter().map(|f| (f.path.as_str(), f)).collect();
    for (name, value) in OPENCLAW_KEYS {
        assert_eq!(files[name].contents, value.as_bytes());
    }
    assert_eq!(files["OPENCLAW_GATEWAY_TOKEN"].mode, 0o440);
    assert_eq!(files["ANTHROPIC_API_KEY"].mode, 0o644);
    let ids: Vec<_> = first.object_version.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "file/OPENCLAW_GATEWAY_TOKEN",
            "file/ANTHROPIC_API_KEY",
            "file/OPENAI_API_KEY"
        ]
    );
    assert!(first.error.is_none());

    let again = client.mount(request.clone()).await.unwrap().into_inner();
    assert_eq!(again.object_version, first.object_version);
    provider.write_object("OPENAI_API_KEY", b"sk-rotated");
    let rotated = client.mount(request).await.unwrap().into_inner();
    assert_eq!(rotated.object_version[0], first.object_version[0]);
    assert_ne!(
        rotated.object_version[2].version,
        first.object_version[2].version
    );
}

#[tokio::test]
async fn hmac_key_file_keeps_versions_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("hmac.key");
    let key_flag = key.to_str().unwrap();
    let mut versions = vec![];
    for _ in 0..2 {
        let provider = Provider::start(&["--hmac-key-file", key_flag]);
        provider.write_openclaw_keys();
        let mut client = provider.client().await;
        let request = mount_request(&[("backend", "file"), ("objects", OPENCLAW_OBJECTS)]);
        versions.push(
            client
                .mount(request)
                .await
                .unwrap()
                .into_inner()
                .object_version,
        );
    }
    assert_eq!(versions[0], versions[1]);
    let other = Provider::start(&[]);
    other.write_openclaw_keys();
    let request = mount_request(&[("backend", "file"), ("objects", OPENCLAW_OBJECTS)]);
    let unkeyed = other
        .client()
        .await
        .mount(request)
        .await
        .unwrap()
        .into_inner();
    assert_ne!(
        unkeyed.object_version, versions[0],
        "versions are keyed, not a plain hash"
    );
}

#[tokio::test]
async fn volume_attributes_override_parameters_but_not_the_root() {
    let provider = Provider::start(&[]);
    provider.write_object("a", b"x");
    // A pod author can set any attribute; the file root is the provider's flag, never a parameter.
    let mut client = provider.client().await;
    let request = mount_request(&[
        ("backend", "file"),
        ("objects", "- objectName: a"),
        ("fileRoot", "/etc"),
    ]);
    let response = client.mount(request).await.unwrap().into_inner();
    assert_eq!(response.files[0].contents, b"x");
}

// ---- :authority: a raw HTTP/2 client ----

type HeaderList = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Default, Debug)]
struct StreamResult {
    header_blocks: Vec<HeaderList>,
    data: Vec<u8>,
    reset: Option<u32>,
    ended: bool,
}

impl StreamResult {
    fn header(&self, name: &str) -> Option<String> {
        self.header_blocks
            .iter()
            .flatten()
            .find(|(n, _)| n == name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// The first gRPC message of the response body.
    fn message(&self) -> &[u8] {
        assert!(self.data.len() >= 5, "no gRPC message in {self:?}");
        let len =
            u32::from_be_bytes([self.data[1], self.data[2], self.data[3], self.data[4]]) as usize;
        &self.data[5..5 + len]
    }
}

fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.push(kind);
    out.push(flags);
    out.extend(stream_id.to_be_bytes());
    out.extend(payload);
    out
}

fn grpc_body(message: &impl Message) -> Vec<u8> {
    let bytes = message.encode_to_vec();
    let mut body = vec![0];
    body.extend((bytes.len() as u32).to_be_bytes());
    body.extend(bytes);
    body
}

/// An HTTP/2 client that writes its own frames, so it can send any `:authority`, as grpc-go in drivers
/// before v1.6.0 does. Its HPACK encoder indexes headers, so later requests refer to earlier ones.
struct RawClient {
    stream: UnixStream,
    encoder: Encoder<'static>,
    decoder: Decoder<'static>,
}

impl RawClient {
    fn connect(socket: &Path) -> Self {
        let mut stream = UnixStream::connect(socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .unwrap();
        stream.write_all(&frame(0x4, 0, 0, &[])).unwrap();
        Self {
            stream,
            encoder: Encoder::new(),
            decoder: Decoder::new(),
        }
    }

    fn send(&mut self, stream_id: u32, method: &str, authority: &str, body: &[u8]) {
        let path = format!("/v1alpha1.CSIDriverProvider/{method}");
        let headers: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path.as_bytes()),
            (b":authority", authority.as_bytes()),
            (b"content-type", b"application/grpc"),
            (b"user-agent", b"grpc-go/1.56.3"),
            (b"te", b"trailers"),
        ];
        let block = self.encoder.encode(headers);
        self.stream
            .write_all(&frame(0x1, 0x4, stream_id, &block))
            .unwrap();
        self.stream
            .write_all(&frame(0x0, 0x1, stream_id, body))
            .unwrap();
    }

    fn read_frame(&mut self) -> Option<(u8, u8, u32, Vec<u8>)> {
        let mut header = [0u8; 9];
        self.stream.read_exact(&mut header).ok()?;
        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let stream_id =
            u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).ok()?;
        Some((header[3], header[4], stream_id, payload))
    }

    /// Reads until every stream ended or was reset, the server went away, or 5 s passed.
    fn collect(&mut self, streams: &[u32]) -> HashMap<u32, StreamResult> {
        let mut results: HashMap<u32, StreamResult> = streams
            .iter()
            .map(|s| (*s, StreamResult::default()))
            .collect();
        while results.values().any(|r| !r.ended) {
            let Some((kind, flags, stream_id, payload)) = self.read_frame() else {
                break;
            };
            match kind {
                0x4 if flags & 0x1 == 0 => self.stream.write_all(&frame(0x4, 0x1, 0, &[])).unwrap(),
                0x7 => break, // GOAWAY
                0x0 | 0x1 | 0x3 => {
                    let Some(result) = results.get_mut(&stream_id) else {
                        continue;
                    };
                    match kind {
                        0x0 => result.data.extend(&payload),
                        0x1 => result
                            .header_blocks
                            .push(self.decoder.decode(&payload).unwrap()),
                        _ => {
                            result.reset = Some(u32::from_be_bytes([
                                payload[0], payload[1], payload[2], payload[3],
                            ]));
                            result.ended = true;
                        }
                    }
                    if flags & 0x1 != 0 {
                        result.ended = true;
                    }
                }
                _ => {}
            }
        }
        results
    }
}

/// Version on stream 1 and Mount on stream 3 of one connection, both with the given authority.
fn version_and_mount(socket: &Path, authority: &str) -> HashMap<u32, StreamResult> {
    let mut client = RawClient::connect(socket);
    client.send(
        1,
        "Version",
        authority,
        &grpc_body(&proto::VersionRequest {
            version: "v1alpha1".into(),
        }),
    );
    let mount = mount_request(&[("backend", "file"), ("objects", OPENCLAW_OBJECTS)]);
    client.send(3, "Mount", authority, &grpc_body(&mount));
    client.collect(&[1, 3])
}

fn assert_served(results: &HashMap<u32, StreamResult>) {
    for (stream, result) in results {
        assert_eq!(result.reset, None, "stream {stream} was reset: {result:?}");
        assert_eq!(
            result.header(":status").as_deref(),
            Some("200"),
            "stream {stream}"
        );
        assert_eq!(
            result.header("grpc-status").as_deref(),
            Some("0"),
            "stream {stream}: {result:?}"
        );
    }
    let version = proto::VersionResponse::decode(results[&1].message()).unwrap();
    assert_eq!(version.runtime_name, "openclaw-csi-provider");
    let mount = proto::MountResponse::decode(results[&3].message()).unwrap();
    assert_eq!(mount.files.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_drivers_before_1_6_that_send_the_socket_path_as_authority() {
    let provider = Provider::start(&[]);
    provider.write_openclaw_keys();
    let socket = provider.socket.clone();
    let results =
        tokio::task::spawn_blocking(move || version_and_mount(&socket, SOCKET_PATH_AUTHORITY))
            .await
            .unwrap();
    assert_served(&results);
    assert!(
        provider.logs().contains(SOCKET_PATH_AUTHORITY),
        "the rewrite is logged at debug"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_drivers_from_1_6_that_send_localhost() {
    let provider = Provider::start(&[]);
    provider.write_openclaw_keys();
    let socket = provider.socket.clone();
    let results = tokio::task::spawn_blocking(move || version_and_mount(&socket, "localhost"))
        .await
        .unwrap();
    assert_served(&results);
    assert!(!provider.logs().contains("replacing an :authority"));
}

/// The same raw client against a stock tonic server (no rewrite layer): h2 resets the stream. This is
/// the failure the provider's transport exists to prevent, and shows the client above really sends it.
#[tokio::test(flavor = "multi_thread")]
async fn a_stock_tonic_server_resets_the_socket_path_authority() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("stock.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let service = ProviderService::new(
        Backends::default(),
        MountLimits {
            max_response_bytes: 1 << 22,
            timeout: Duration::from_secs(5),
        },
        Arc::new(Metrics::default()),
    );
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(CsiDriverProviderServer::new(service))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    let path = socket.clone();
    let results = tokio::task::spawn_blocking(move || {
        let mut client = RawClient::connect(&path);
        client.send(
            1,
            "Version",
            SOCKET_PATH_AUTHORITY,
            &grpc_body(&proto::VersionRequest::default()),
        );
        client.collect(&[1])
    })
    .await
    .unwrap();
    assert_eq!(
        results[&1].reset,
        Some(0x1),
        "PROTOCOL_ERROR expected: {:?}",
        results[&1]
    );
    server.abort();
}

// ---- :authority: grpcurl, an independent grpc-go client ----

fn grpcurl(socket: &Path, method: &str, body: &str) -> std::process::Output {
    let proto_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    Command::new(support::test_tool("grpcurl"))
        .args(["-plaintext", "-unix", "-max-time", "10", "-import-path"])
        .arg(&proto_dir)
        .args(["-proto", "v1alpha1/service.proto", "-d", body])
        .arg(socket)
        .arg(format!("v1alpha1.CSIDriverProvider/{method}"))
        .output()
        .expect("run grpcurl")
}

#[tokio::test]
async fn grpcurl_with_unix_and_no_authority_flag() {
    let provider = Provider::start(&[]);
    provider.write_openclaw_keys();
    let out = grpcurl(&provider.socket, "Version", r#"{"version":"v1alpha1"}"#);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "grpcurl failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(version["runtimeName"], "openclaw-csi-provider");
    assert_eq!(version["runtimeVersion"], env!("CARGO_PKG_VERSION"));

    let request = mount_request(&[("backend", "file"), ("objects", OPENCLAW_OBJECTS)]);
    let body = serde_json::json!({
        "attributes": request.attributes,
        "secrets": request.secrets,
        "targetPath": request.target_path,
        "permission": request.permission,
    });
    let out = grpcurl(&provider.socket, "Mount", &body.to_string());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "grpcurl Mount failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mount: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(mount["files"].as_array().map(Vec::len), Some(3));
    // grpcurl dialled with the socket path as :authority, and the provider rewrote it.
    let socket = provider.socket.display().to_string();
    assert!(
        provider.logs().contains(&socket),
        "grpcurl sent the socket path as :authority"
    );

    let out = grpcurl(
        &provider.socket,
        "Mount",
        r#"{"attributes":"[]","permission":"420"}"#,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("InvalidArgument"));
}

// ---- health and metrics ----

#[tokio::test]
async fn health_readiness_and_metrics() {
    let provider = Provider::start(&[]);
    provider.write_openclaw_keys();
    assert_eq!(provider.http_get("/healthz").0, 200);
    assert_eq!(provider.http_get("/readyz").0, 200);
    let mut client = provider.client().await;
    for _ in 0..3 {
        let request = mount_request(&[("backend", "file"), ("objects", OPENCLAW_OBJECTS)]);
        client.mount(request).await.unwrap();
    }
    let bad = mount_request(&[("backend", "file"), ("objects", "- objectName: /abs")]);
    client.mount(bad).await.unwrap_err();
    let unknown = mount_request(&[
        ("backend", "a-pod-authors-random-name"),
        ("objects", "- objectName: a"),
    ]);
    client.mount(unknown).await.unwrap_err();

    let (status, metrics) = provider.http_get("/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"openclaw_provider_mounts_total{backend="file",code="Ok"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"openclaw_provider_mounts_total{backend="file",code="InvalidObjectName"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"openclaw_provider_mount_errors_total{code="UnknownBackend"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"openclaw_provider_mount_duration_seconds_count{backend="file"} 4"#),
        "{metrics}"
    );
    // A pod author's backend name never becomes a label value.
    assert!(!metrics.contains("a-pod-authors-random-name"));
    assert!(metrics.contains(r#"backend="unknown""#));

    // Readiness follows the socket.
    std::fs::remove_file(&provider.socket).unwrap();
    assert_eq!(provider.http_get("/readyz").0, 503);
    assert_eq!(provider.http_get("/healthz").0, 200);
}

/// The compatibility sockets (`--compat`) take both `:authority` forms as the main socket does: the
/// socket path an older driver sends for them, and `localhost`.
#[tokio::test(flavor = "multi_thread")]
async fn compat_sockets_serve_both_authority_forms() {
    let provider = Provider::start(&["--compat", "vault,aws,gcp"]);
    provider.write_openclaw_keys();
    let dir = provider.socket.parent().unwrap().to_path_buf();
    for name in ["vault", "aws", "gcp"] {
        let socket = dir.join(format!("{name}.sock"));
        for authority in [
            format!("/var/run/secrets-store-csi-providers/{name}.sock"),
            "localhost".to_string(),
        ] {
            let socket = socket.clone();
            let results =
                tokio::task::spawn_blocking(move || version_and_mount(&socket, &authority))
                    .await
                    .unwrap();
            assert_served(&results);
        }
    }
}

//! The socket's life: owner-only, stale files replaced, a second instance refused without harming the
//! first, SIGTERM/SIGINT drain within the grace period and remove the socket.

mod support;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::{Duration, Instant};

use support::{OPENCLAW_OBJECTS, Provider, mount_request, spawn_serve, wait_bounded};

#[tokio::test]
async fn socket_is_owner_only_and_removed_on_sigterm() {
    let mut provider = Provider::start(&[]);
    let metadata = std::fs::symlink_metadata(&provider.socket).unwrap();
    assert!(metadata.file_type().is_socket());
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
    let status = provider.terminate(Duration::from_secs(15));
    assert!(status.success(), "{status:?}\n{}", provider.logs());
    assert!(!provider.socket.exists(), "socket removed on exit");
}

#[tokio::test]
async fn sigint_also_stops_cleanly() {
    let mut provider = Provider::start(&[]);
    support::signal(provider.pid(), "INT");
    for _ in 0..500 {
        if !provider.running() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!provider.running());
    assert!(!provider.socket.exists());
}

#[tokio::test]
async fn a_stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("openclaw.sock");
    // A socket file nobody listens on, as a crashed provider leaves it.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let mut child = spawn_serve(&socket, &root, "", &dir.path().join("log"), &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(dir.path().join("log")).unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn a_second_instance_does_not_break_the_first() {
    let provider = Provider::start(&[]);
    provider.write_openclaw_keys();
    let log = provider.dir.path().join("second.log");
    let mut second = spawn_serve(&provider.socket, &provider.root, "", &log, &[]);
    let status = wait_bounded(&mut second, Duration::from_secs(10));
    assert!(!status.success());
    let message = std::fs::read_to_string(&log).unwrap();
    assert!(message.contains("already serves"), "{message}");
    // The first instance still serves on its socket.
    let mut client = provider.client().await;
    let response = client
        .mount(mount_request(&[
            ("backend", "file"),
            ("objects", OPENCLAW_OBJECTS),
        ]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.files.len(), 3);
}

#[tokio::test]
async fn a_path_that_is_not_a_socket_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openclaw.sock");
    std::fs::write(&path, "precious").unwrap();
    let log = dir.path().join("log");
    let mut child = spawn_serve(&path, dir.path(), "", &log, &[]);
    let status = wait_bounded(&mut child, Duration::from_secs(10));
    assert!(!status.success());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("not a socket")
    );
}

#[tokio::test]
async fn an_idle_driver_connection_cannot_hold_shutdown_past_the_grace_period() {
    let mut provider = Provider::start(&["--grace-period", "2"]);
    provider.write_openclaw_keys();
    // The driver keeps its connection open for its whole life.
    let mut client = provider.client().await;
    client
        .mount(mount_request(&[
            ("backend", "file"),
            ("objects", OPENCLAW_OBJECTS),
        ]))
        .await
        .unwrap();
    let started = Instant::now();
    let status = provider.terminate(Duration::from_secs(15));
    assert!(status.success());
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "bounded by the grace period"
    );
    assert!(!provider.socket.exists());
}

#[tokio::test]
async fn health_address_in_use_is_a_clear_start_error() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut child = spawn_serve(&dir.path().join("s.sock"), dir.path(), &addr, &log, &[]);
    let status = wait_bounded(&mut child, Duration::from_secs(10));
    assert!(!status.success());
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("--health-addr")
    );
    assert!(!dir.path().join("s.sock").exists(), "no socket left behind");
}

//! `serve --compat`: the official providers' sockets beside ours, each serving mounts that name no
//! backend with its own backend; stale socket files replaced, live ones (the official provider still
//! running) left alone and the start refused; `--default-backend` for our own socket.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{BINARY, OPENCLAW_KEYS, Provider, mount_request};

/// `serve` on `dir/openclaw.sock` with `extra` flags: the exit status and stderr when it stops within
/// 10 s, `None` while it still runs (it is killed).
fn serve_briefly(dir: &Path, extra: &[&str]) -> Option<(i32, String)> {
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let mut child = Command::new(BINARY)
        .arg("serve")
        .arg("--socket")
        .arg(dir.join("openclaw.sock"))
        .arg("--file-root")
        .arg(&root)
        .args(["--health-addr", ""])
        .args(extra)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            return Some((status.code().unwrap_or(-1), stderr));
        }
        if UnixStream::connect(dir.join("openclaw.sock")).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn a_live_official_socket_is_left_alone_and_a_stale_one_replaced() {
    let dir = tempfile::tempdir().unwrap();
    // A stale vault.sock (its process is gone) and a live aws.sock (the official provider runs).
    drop(UnixListener::bind(dir.path().join("vault.sock")).unwrap());
    let official = UnixListener::bind(dir.path().join("aws.sock")).unwrap();
    let (code, stderr) =
        serve_briefly(dir.path(), &["--compat", "vault,aws"]).expect("refused to start");
    assert_ne!(code, 0);
    assert!(stderr.contains("aws.sock"), "{stderr}");
    assert!(
        UnixStream::connect(dir.path().join("aws.sock")).is_ok(),
        "still live"
    );
    assert!(
        !dir.path().join("openclaw.sock").exists(),
        "our own socket is removed again"
    );
    drop(official);
    // The official provider gone: both stale files are replaced.
    assert_eq!(serve_briefly(dir.path(), &["--compat", "vault,aws"]), None);
    for (flags, says) in [
        (&["--compat", "vault,azure"][..], "azure"),
        (&["--compat", "vault,vault"][..], "twice"),
        (&["--default-backend", "nope"][..], "nope"),
    ] {
        let (code, stderr) = serve_briefly(dir.path(), flags).expect("refused");
        assert_ne!(code, 0);
        assert!(stderr.contains(says), "{says}: {stderr}");
    }
}

#[tokio::test]
async fn each_socket_serves_mounts_without_a_backend_with_its_own() {
    let provider = Provider::start(&["--compat", "vault,aws,gcp", "--default-backend", "file"]);
    provider.write_openclaw_keys();
    let dir = provider.socket.parent().unwrap().to_path_buf();
    for name in ["vault", "aws", "gcp"] {
        let mode = std::fs::metadata(dir.join(format!("{name}.sock")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}.sock");
    }
    let objects = "- objectName: OPENCLAW_GATEWAY_TOKEN\n";
    // Our socket: the default backend (file).
    let mounted = provider
        .mount(mount_request(&[("objects", objects)]))
        .await
        .unwrap();
    assert_eq!(mounted.files[0].contents, OPENCLAW_KEYS[0].1.as_bytes());
    // Each compat socket: its own backend, which refuses this file-backend class (the mount metric
    // names the backend that answered).
    for name in ["vault", "aws", "gcp"] {
        let mut client =
            openclaw_csi_provider::cli::client::connect(dir.join(format!("{name}.sock")))
                .await
                .unwrap();
        let label = format!("openclaw_provider_mounts_total{{backend=\"{name}\"");
        assert!(!provider.http_get("/metrics").1.contains(&label));
        client
            .mount(mount_request(&[("objects", objects)]))
            .await
            .unwrap_err();
        let metrics = provider.http_get("/metrics").1;
        assert!(metrics.contains(&label), "{name}: {metrics}");
        // A backend the class names is still honoured.
        let named = client
            .mount(mount_request(&[("backend", "file"), ("objects", objects)]))
            .await
            .unwrap();
        assert_eq!(named.into_inner().files.len(), 1, "{name}");
    }
    // Readiness covers every socket: one gone (say, taken by another process and removed) is unready.
    assert_eq!(provider.http_get("/readyz").0, 200);
    std::fs::remove_file(dir.join("gcp.sock")).unwrap();
    assert_eq!(provider.http_get("/readyz").0, 503);
}

/// `--backends` turns the others off: a class naming one is refused as unknown, and neither a compat
/// socket nor the default may name one.
#[tokio::test]
async fn backends_left_out_are_refused() {
    let provider = Provider::start(&["--backends", "file,vault"]);
    provider.write_openclaw_keys();
    let objects = "- objectName: OPENCLAW_GATEWAY_TOKEN\n";
    let refused = provider
        .mount(mount_request(&[("backend", "aws"), ("objects", objects)]))
        .await
        .unwrap_err();
    assert!(
        refused.message().starts_with("UnknownBackend")
            && refused.message().contains("file, vault"),
        "{}",
        refused.message()
    );
    provider
        .mount(mount_request(&[("backend", "file"), ("objects", objects)]))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (flags, says) in [
        (&["--backends", "file,azure"][..], "azure"),
        (&["--backends", "file", "--compat", "aws"][..], "aws"),
        (
            &["--backends", "file", "--default-backend", "vault"][..],
            "vault",
        ),
    ] {
        let (code, stderr) = serve_briefly(dir.path(), flags).expect("refused");
        assert_ne!(code, 0);
        assert!(stderr.contains(says), "{says}: {stderr}");
    }
}

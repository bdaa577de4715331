//! Test support: starts the real `openclaw-csi-provider serve` binary on a temporary socket and file root,
//! builds Mount requests the way the driver does, and finds the test tools the test command installs.
#![allow(dead_code)]

#[cfg(feature = "gcp")]
pub mod fake_gcp;
pub mod fake_kube;
pub mod fake_store;
#[cfg(feature = "vault")]
pub mod hostile_vault;
pub mod identity;
#[cfg(feature = "aws")]
pub mod moto;
#[cfg(feature = "vault")]
pub mod openbao;
#[cfg(feature = "sync")]
pub mod sync_process;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use openclaw_csi_provider::cli::client;
use openclaw_csi_provider::proto;
use openclaw_csi_provider::proto::csi_driver_provider_client::CsiDriverProviderClient;
use tempfile::TempDir;
use tonic::transport::Channel;

pub const BINARY: &str = env!("CARGO_BIN_EXE_openclaw-csi-provider");

/// The three OpenClaw keys with fake values, as the tests write them.
pub const OPENCLAW_KEYS: [(&str, &str); 3] = [
    (
        "OPENCLAW_GATEWAY_TOKEN",
        "test-gateway-token-VALUE-MUST-NOT-LEAK",
    ),
    ("ANTHROPIC_API_KEY", "sk-ant-test-VALUE-MUST-NOT-LEAK"),
    ("OPENAI_API_KEY", "sk-test-VALUE-MUST-NOT-LEAK"),
];

/// The namespace of the test pod ([`attributes`]).
pub const NAMESPACE: &str = "openclaw";

/// Serves `app` on a free loopback port from a thread of its own (so a test that blocks its own runtime
/// still gets answers); returns its `http://` URL.
pub fn serve_on_thread(app: axum::Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let _ = axum::serve(listener, app).await;
        });
    });
    url
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A running provider process.
pub struct Provider {
    child: Option<Child>,
    pub dir: TempDir,
    pub socket: PathBuf,
    pub root: PathBuf,
    pub health: String,
    log: PathBuf,
}

impl Provider {
    /// Starts `serve` with a file root, a health port and any extra flags, and waits until it is ready.
    /// A health port another test took between [`free_port`] and the bind is replaced by a new one.
    pub fn start(extra: &[&str]) -> Self {
        Self::start_with_env(extra, &[])
    }

    /// [`Provider::start`] with extra environment variables.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("sock").join("openclaw.sock");
        let root = dir.path().join("root");
        fs::create_dir_all(&root).expect("root");
        let log = dir.path().join("provider.log");
        let mut provider = Self {
            child: None,
            dir,
            socket,
            root,
            health: String::new(),
            log,
        };
        for attempt in 1..=5 {
            provider.health = format!("127.0.0.1:{}", free_port());
            provider.child = Some(spawn_serve_with_env(
                &provider.socket,
                &provider.root,
                &provider.health,
                &provider.log,
                extra,
                env,
            ));
            if provider.wait_ready() {
                return provider;
            }
            if attempt == 5 || !provider.lost_health_port() {
                break;
            }
            if let Some(mut child) = provider.child.take() {
                let _ = child.wait();
            }
        }
        panic!(
            "provider did not listen on {} within 10 s; log:\n{}",
            provider.socket.display(),
            provider.logs()
        );
    }

    /// Waits (10 s at most) until the socket answers or the process exits; true when it answers.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return true;
            }
            if !self.running() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Whether the process exited because its health port was taken.
    fn lost_health_port(&mut self) -> bool {
        !self.running() && self.logs().contains("Address already in use")
    }

    /// The test pod's directory under the file root (`<file-root>/<namespace>`).
    pub fn namespace_dir(&self) -> PathBuf {
        self.root.join(NAMESPACE)
    }

    /// Writes an object into the test pod's namespace directory under the file root.
    pub fn write_object(&self, name: &str, contents: &[u8]) {
        let path = self.namespace_dir().join(name);
        fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
        fs::write(path, contents).expect("object");
    }

    /// Writes the three OpenClaw keys into the test pod's namespace directory.
    pub fn write_openclaw_keys(&self) {
        for (name, value) in OPENCLAW_KEYS {
            self.write_object(name, value.as_bytes());
        }
    }

    pub async fn client(&self) -> CsiDriverProviderClient<Channel> {
        client::connect(self.socket.clone())
            .await
            .expect("connect to provider")
    }

    /// One Mount over a new connection: the response, or the status the provider answered.
    pub async fn mount(
        &self,
        request: proto::MountRequest,
    ) -> Result<proto::MountResponse, tonic::Status> {
        self.client()
            .await
            .mount(request)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Everything the provider logged so far.
    pub fn logs(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        let Some(mut child) = self.child.take() else {
            panic!("already stopped")
        };
        signal(child.id(), "TERM");
        wait_bounded(&mut child, within)
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The provider's peak resident memory so far, in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .expect("VmHWM in /proc/<pid>/status")
    }

    /// An HTTP GET on the health server: (status code, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(&self.health, path)
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `serve` without waiting for it.
pub fn spawn_serve(socket: &Path, root: &Path, health: &str, log: &Path, extra: &[&str]) -> Child {
    spawn_serve_with_env(socket, root, health, log, extra, &[])
}

/// [`spawn_serve`] with extra environment variables.
pub fn spawn_serve_with_env(
    socket: &Path,
    root: &Path,
    health: &str,
    log: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Child {
    let log_file = fs::File::create(log).expect("log file");
    Command::new(BINARY)
        .envs(env.iter().copied())
        .arg("serve")
        .arg("--socket")
        .arg(socket)
        .arg("--file-root")
        .arg(root)
        .args(["--health-addr", health, "--log-format", "json"])
        .args(if extra.contains(&"--log-level") {
            &[][..]
        } else {
            &["--log-level", "debug"][..]
        })
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("spawn provider")
}

pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name} {pid}");
}

pub fn wait_bounded(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process {} did not exit within {within:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A minimal HTTP/1.1 GET over loopback: (status code, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).expect("connect health");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The attributes the driver sends for a pod, plus the given SecretProviderClass parameters.
pub fn attributes(parameters: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut attributes: BTreeMap<String, String> = parameters
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (key, value) in [
        ("secretProviderClass", "openclaw"),
        ("csi.storage.k8s.io/pod.name", "gateway-0"),
        ("csi.storage.k8s.io/pod.namespace", "openclaw"),
        (
            "csi.storage.k8s.io/pod.uid",
            "4e1c2a4e-0000-4000-8000-000000000001",
        ),
        ("csi.storage.k8s.io/serviceAccount.name", "openclaw"),
        ("csi.storage.k8s.io/ephemeral", "true"),
    ] {
        attributes.entry(key.into()).or_insert_with(|| value.into());
    }
    attributes
}

/// The `spec.parameters` of a SecretProviderClass written as YAML (every value a string).
pub fn class_parameters(yaml: &str) -> BTreeMap<String, String> {
    let class: serde_json::Value = serde_saphyr::from_str(yaml).expect("a SecretProviderClass");
    class["spec"]["parameters"]
        .as_object()
        .expect("spec.parameters")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("a string").to_string()))
        .collect()
}

/// A Mount request as the driver builds it.
pub fn mount_request(parameters: &[(&str, &str)]) -> proto::MountRequest {
    raw_request(&serde_json::to_string(&attributes(parameters)).expect("json"))
}

/// A Mount request with the given raw attributes string.
pub fn raw_request(attributes: &str) -> proto::MountRequest {
    proto::MountRequest {
        attributes: attributes.into(),
        secrets: "null".into(),
        target_path: "/var/lib/kubelet/pods/4e1c2a4e/volumes/kubernetes.io~csi/secrets/mount"
            .into(),
        permission: "420".into(),
        current_object_version: vec![],
    }
}

/// `objects` for the three OpenClaw keys.
pub const OPENCLAW_OBJECTS: &str = "- objectName: OPENCLAW_GATEWAY_TOKEN\n  filePermission: 0440\n- objectName: ANTHROPIC_API_KEY\n- objectName: OPENAI_API_KEY\n";

/// A tool the README's test command installs under `target/test-tools`, or from PATH.
pub fn test_tool(name: &str) -> PathBuf {
    let installed = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-tools/venv/bin")
        .join(name);
    if installed.exists() {
        return installed;
    }
    if let Some(found) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.exists())
    {
        return found;
    }
    panic!(
        "{name} is not installed: run the README's test command (scripts/test.sh), which installs it"
    );
}

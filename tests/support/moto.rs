//! AWS for the tests: moto's server (PyPI `moto[server]`, installed by the README's test command), a
//! real HTTP emulator of Secrets Manager, SSM and STS, behind a small recording and fault-injecting
//! proxy ([`AwsProxy`]) so tests count the calls a mount makes and make AWS throttle or fail.
//!
//! Seeding uses the services' own JSON protocol (`X-Amz-Target`), with the region in the request's
//! credential scope, as an SDK sends it; moto does not check signatures.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{free_port, test_tool};

/// A running moto server.
pub struct Moto {
    child: Child,
    pub url: String,
    http: reqwest::Client,
}

impl Moto {
    /// Starts `moto_server` on a free loopback port and waits (20 s at most) until it answers.
    pub async fn start() -> Self {
        let port = free_port();
        let child = Command::new(test_tool("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(answer) = moto
                .http
                .get(format!("{}/moto-api/", moto.url))
                .send()
                .await
                && answer.status().is_success()
            {
                return moto;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("moto_server did not answer on {} within 20 s", moto.url);
    }

    /// One call of a JSON-protocol service (`secretsmanager` or `ssm`) in `region`.
    pub async fn call(&self, service: &str, region: &str, operation: &str, body: Value) -> Value {
        let target = match service {
            "secretsmanager" => format!("secretsmanager.{operation}"),
            "ssm" => format!("AmazonSSM.{operation}"),
            other => panic!("no JSON target prefix for {other}"),
        };
        let answer = self
            .http
            .post(&self.url)
            .header("x-amz-target", target)
            .header("content-type", "application/x-amz-json-1.1")
            .header("authorization", authorization(region, service))
            .body(body.to_string())
            .send()
            .await
            .expect("moto answers");
        let status = answer.status();
        let text = answer.text().await.expect("moto body");
        assert!(status.is_success(), "{operation} failed: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Creates a Secrets Manager secret with a string value; returns its ARN.
    pub async fn create_secret(&self, region: &str, name: &str, value: &str) -> String {
        let answer = self
            .call(
                "secretsmanager",
                region,
                "CreateSecret",
                json!({"Name": name, "SecretString": value}),
            )
            .await;
        answer["ARN"].as_str().expect("ARN").to_string()
    }

    /// Creates a secret holding bytes (`SecretBinary`).
    pub async fn create_binary_secret(&self, region: &str, name: &str, value: &[u8]) -> String {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(value);
        let answer = self
            .call(
                "secretsmanager",
                region,
                "CreateSecret",
                json!({"Name": name, "SecretBinary": encoded}),
            )
            .await;
        answer["ARN"].as_str().expect("ARN").to_string()
    }

    /// A new version of a secret, optionally with a staging label; returns its VersionId.
    pub async fn put_secret_value(
        &self,
        region: &str,
        name: &str,
        value: &str,
        stages: &[&str],
    ) -> String {
        let mut body = json!({"SecretId": name, "SecretString": value});
        if !stages.is_empty() {
            body["VersionStages"] = json!(stages);
        }
        let answer = self
            .call("secretsmanager", region, "PutSecretValue", body)
            .await;
        answer["VersionId"].as_str().expect("VersionId").to_string()
    }

    /// Creates or overwrites an SSM parameter; returns its version.
    pub async fn put_parameter(&self, region: &str, name: &str, value: &str, kind: &str) -> u64 {
        let answer = self
            .call(
                "ssm",
                region,
                "PutParameter",
                json!({"Name": name, "Value": value, "Type": kind, "Overwrite": true}),
            )
            .await;
        answer["Version"].as_u64().expect("Version")
    }

    pub async fn label_parameter(&self, region: &str, name: &str, version: u64, label: &str) {
        self.call(
            "ssm",
            region,
            "LabelParameterVersion",
            json!({"Name": name, "ParameterVersion": version, "Labels": [label]}),
        )
        .await;
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An `Authorization` header naming `region` and `service` in its credential scope.
pub fn authorization(region: &str, service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/{region}/{service}/aws4_request, \
         SignedHeaders=host, Signature=0"
    )
}

/// A call the proxy saw.
#[derive(Debug, Clone)]
pub struct SeenCall {
    /// `X-Amz-Target` (`secretsmanager.BatchGetSecretValue`) or the query `Action` (STS).
    pub operation: String,
    pub region: String,
    pub body: String,
}

/// An answer the proxy gives instead of forwarding.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Calls whose operation ends with this (`BatchGetSecretValue`), or every call when empty.
    pub operation: String,
    /// Only calls to this region, or every region when empty.
    pub region: String,
    /// How many matching calls get the fault (then they pass).
    pub times: usize,
    pub status: u16,
    /// The JSON error type (`ThrottlingException`).
    pub error_type: String,
}

#[derive(Default)]
pub struct ProxyState {
    pub calls: Vec<SeenCall>,
    pub faults: Vec<Fault>,
}

/// A recording, fault-injecting HTTP proxy in front of moto: the provider's AWS endpoint.
pub struct AwsProxy {
    pub url: String,
    pub state: Arc<Mutex<ProxyState>>,
}

struct Forward {
    state: Arc<Mutex<ProxyState>>,
    upstream: String,
    http: reqwest::Client,
}

impl AwsProxy {
    /// Starts the proxy on a loopback port, on a thread of its own, forwarding to `upstream`.
    pub fn start(upstream: &str) -> Self {
        let state: Arc<Mutex<ProxyState>> = Arc::default();
        let forward = Arc::new(Forward {
            state: state.clone(),
            upstream: upstream.to_string(),
            http: reqwest::Client::new(),
        });
        let app = axum::Router::new().fallback(proxy).with_state(forward);
        let url = super::serve_on_thread(app);
        Self { url, state }
    }

    pub fn add_fault(&self, fault: Fault) {
        self.state.lock().unwrap().faults.push(fault);
    }

    pub fn clear(&self) {
        let mut state = self.state.lock().unwrap();
        state.calls.clear();
        state.faults.clear();
    }

    pub fn calls(&self) -> Vec<SeenCall> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Calls whose operation ends with `operation`.
    pub fn count(&self, operation: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.operation.ends_with(operation))
            .count()
    }
}

fn operation_of(headers: &HeaderMap, body: &[u8]) -> String {
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        return target.to_string();
    }
    String::from_utf8_lossy(body)
        .split('&')
        .find_map(|pair| pair.strip_prefix("Action="))
        .unwrap_or("")
        .to_string()
}

fn region_of(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').nth(2))
        .unwrap_or("")
        .to_string()
}

async fn proxy(
    State(forward): State<Arc<Forward>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = SeenCall {
        operation: operation_of(&headers, &body),
        region: region_of(&headers),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let fault = {
        let mut state = forward.state.lock().unwrap();
        state.calls.push(call.clone());
        let matching = state.faults.iter_mut().find(|f| {
            f.times > 0
                && (f.operation.is_empty() || call.operation.ends_with(&f.operation))
                && (f.region.is_empty() || f.region == call.region)
        });
        matching.map(|f| {
            f.times -= 1;
            f.clone()
        })
    };
    if let Some(fault) = fault {
        let body = json!({"__type": fault.error_type, "message": "injected by the test proxy"});
        return (
            StatusCode::from_u16(fault.status).expect("status"),
            [("content-type", "application/x-amz-json-1.1")],
            body.to_string(),
        )
            .into_response();
    }
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut request = forward
        .http
        .request(method, format!("{}{path}", forward.upstream))
        .body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(answer) => {
            let status = answer.status();
            let mut out = HeaderMap::new();
            for (name, value) in answer.headers() {
                if name != "content-length" && name != "transfer-encoding" && name != "connection" {
                    out.insert(name.clone(), value.clone());
                }
            }
            let bytes = answer.bytes().await.unwrap_or_default();
            (status, out, bytes).into_response()
        }
        Err(_) => (StatusCode::BAD_GATEWAY, "moto did not answer").into_response(),
    }
}

//! A hostile "Vault" for the tenancy tests: the server a pod author would point the provider at, if the
//! provider let it. It speaks just enough of Vault's HTTP API (a JWT login, KV-shaped reads) and then
//! misbehaves per path:
//!
//! | path (after `/v1/`) | answer |
//! |---|---|
//! | `auth/<mount>/login` | a token with the configured `lease_duration` (any JSON number) |
//! | `secret/redirect` | `307` to the marker server (an "internal endpoint" holding a marker) |
//! | `secret/huge` | 200, a JSON-looking body of [`HUGE_BYTES`], streamed without a length |
//! | `secret/huge-declared` | 200 with `Content-Length` [`HUGE_BYTES`] (the body is never sent in full) |
//! | `secret/not-json` | 200 with an HTML page |
//! | `secret/throttled-once` | `429` on the first request, then a KV v1 answer |
//! | `secret/throttled` | always `429` with `Retry-After: 1` |
//! | `database/creds/app` | a new dynamic secret each time (`lease_id`, `username` `user-<n>`), after 300 ms |
//! | `secret/unavailable-once` | `503` with `Retry-After: 0` on the first request, then a KV v1 answer |
//! | `secret/missing` | `404` |
//! | `secret/dense` | a KV v1 answer of [`BIG_BYTES`] whose `k` is an array of zeros (JSON that multiplies when parsed) |
//! | `secret/big/<anything>` | a KV v1 answer of [`BIG_BYTES`] (`k` holds `x`s) |
//! | `pki/issue/throttled-once` | `429` on the first request, then a certificate `cert-<n>` (any method) |
//! | `pki/issue/fails` | always `500` |
//! | anything else | a KV v1 answer `{"data":{"k":"hostile-value"}}` |
//!
//! Every request is counted by path, and the marker server counts what reaches it (and whether a
//! Vault token came along).
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The size of the huge answers.
pub const HUGE_BYTES: usize = 256 * 1024 * 1024;
/// The size of the `secret/big/…` answers.
pub const BIG_BYTES: usize = 700 * 1024;
/// The marker the "internal endpoint" holds.
pub const MARKER: &str = "INTERNAL-ENDPOINT-MARKER";

#[derive(Default)]
struct Seen {
    requests: HashMap<String, usize>,
    marker_hits: usize,
    marker_tokens: usize,
}

#[derive(Clone)]
struct HostileState {
    seen: Arc<Mutex<Seen>>,
    marker_url: String,
    lease_duration: Arc<str>,
}

/// The hostile server and its marker server, both on loopback.
pub struct HostileVault {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    seen: Arc<Mutex<Seen>>,
    state: HostileState,
}

impl HostileVault {
    /// Starts both servers; logins answer with `lease_duration` written verbatim as a JSON number.
    pub async fn start(lease_duration: &str) -> Self {
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let marker_url = serve(
            axum::Router::new()
                .fallback(marker)
                .with_state(seen.clone()),
        )
        .await;
        let state = HostileState {
            seen: seen.clone(),
            marker_url,
            lease_duration: lease_duration.into(),
        };
        let address = serve(
            axum::Router::new()
                .fallback(answer)
                .with_state(state.clone()),
        )
        .await;
        Self {
            address,
            seen,
            state,
        }
    }

    /// Serves the same answers on a Unix socket too (a Vault Agent listener on the node); returns the
    /// `unix://` address.
    pub fn listen_unix(&self, path: &std::path::Path) -> String {
        let listener = tokio::net::UnixListener::bind(path).expect("bind the unix socket");
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(self.state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("unix://{}", path.display())
    }

    /// Requests that reached this path (after `/v1/`).
    pub fn requests(&self, path: &str) -> usize {
        let seen = self.seen.lock().unwrap();
        seen.requests.get(path).copied().unwrap_or(0)
    }

    /// Requests of any path.
    pub fn total_requests(&self) -> usize {
        self.seen.lock().unwrap().requests.values().sum()
    }

    /// Requests that reached the marker server, and how many carried `X-Vault-Token`.
    pub fn marker_hits(&self) -> (usize, usize) {
        let seen = self.seen.lock().unwrap();
        (seen.marker_hits, seen.marker_tokens)
    }
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    address
}

async fn marker(State(seen): State<Arc<Mutex<Seen>>>, headers: HeaderMap) -> Response {
    let mut seen = seen.lock().unwrap();
    seen.marker_hits += 1;
    if headers.contains_key("x-vault-token") {
        seen.marker_tokens += 1;
    }
    axum::Json(json!({"data": {"k": MARKER}})).into_response()
}

fn json_answer(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn answer(State(state): State<HostileState>, uri: Uri) -> Response {
    let path = uri.path().trim_start_matches("/v1/").to_string();
    let count = {
        let mut seen = state.seen.lock().unwrap();
        let count = seen.requests.entry(path.clone()).or_default();
        *count += 1;
        *count
    };
    match path.as_str() {
        p if p.starts_with("auth/") && p.ends_with("/login") => json_answer(
            StatusCode::OK,
            format!(
                r#"{{"auth":{{"client_token":"hostile-client-token","lease_duration":{}}}}}"#,
                state.lease_duration
            ),
        ),
        "secret/redirect" => (
            StatusCode::TEMPORARY_REDIRECT,
            [(
                header::LOCATION,
                format!("{}/latest/meta-data", state.marker_url),
            )],
        )
            .into_response(),
        "secret/huge" => {
            let chunk = bytes::Bytes::from(vec![b'x'; 1024 * 1024]);
            let chunks =
                (0..HUGE_BYTES / chunk.len()).map(move |_| Ok::<_, std::io::Error>(chunk.clone()));
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from_stream(futures_util::stream::iter(chunks)))
                .expect("response")
        }
        "secret/huge-declared" => {
            let chunk = bytes::Bytes::from(vec![b'x'; 1024 * 1024]);
            let chunks =
                (0..HUGE_BYTES / chunk.len()).map(move |_| Ok::<_, std::io::Error>(chunk.clone()));
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_LENGTH, HUGE_BYTES.to_string())
                .body(Body::from_stream(futures_util::stream::iter(chunks)))
                .expect("response")
        }
        "secret/not-json" => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body>a login page</body></html>",
        )
            .into_response(),
        "secret/throttled-once" if count == 1 => json_answer(
            StatusCode::TOO_MANY_REQUESTS,
            r#"{"errors":["slow down"]}"#.into(),
        ),
        "secret/unavailable-once" if count == 1 => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "0")],
            r#"{"errors":["standby"]}"#,
        )
            .into_response(),
        p if p.starts_with("secret/big/") => json_answer(
            StatusCode::OK,
            format!(r#"{{"data":{{"k":"{}"}}}}"#, "x".repeat(BIG_BYTES - 16)),
        ),
        "secret/dense" => json_answer(
            StatusCode::OK,
            format!(
                r#"{{"data":{{"k":[{}0]}}}}"#,
                "0,".repeat(BIG_BYTES / 2 - 16)
            ),
        ),
        "secret/missing" => json_answer(StatusCode::NOT_FOUND, r#"{"errors":[]}"#.into()),
        "pki/issue/throttled-once" if count == 1 => json_answer(
            StatusCode::TOO_MANY_REQUESTS,
            r#"{"errors":["slow down"]}"#.into(),
        ),
        "pki/issue/throttled-once" => json_answer(
            StatusCode::OK,
            json!({"data": {"certificate": format!("cert-{count}")}}).to_string(),
        ),
        "pki/issue/fails" => json_answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"errors":["internal error"]}"#.into(),
        ),
        "secret/throttled" => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            r#"{"errors":["rate limit quota exceeded"]}"#,
        )
            .into_response(),
        "database/creds/app" => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            json_answer(
                StatusCode::OK,
                json!({
                    "lease_id": format!("database/creds/app/lease-{count}"),
                    "lease_duration": 3600,
                    "renewable": true,
                    "data": {"username": format!("user-{count}"), "password": format!("password-{count}")},
                })
                .to_string(),
            )
        }
        _ => json_answer(StatusCode::OK, r#"{"data":{"k":"hostile-value"}}"#.into()),
    }
}

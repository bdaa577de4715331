//! An in-repo fake of the Kubernetes API for what the provider and the sync controller use (no
//! kube-apiserver can be installed here), written from the Kubernetes API reference: core/v1
//! ServiceAccounts (get), their `token` subresource (TokenRequest, authentication.k8s.io/v1: audiences
//! required, `expirationSeconds` at least 600, a `boundObjectRef` to a Pod must name it), Nodes (get), and
//! the object store of [`super::fake_store`] (Secrets, Events, Leases, workloads, SecretProviderClasses,
//! SecretSyncs: every verb, watches, server-side apply). Failures are `Status` objects with the documented
//! `reason` and `code`. Requests need the bearer token of the kubeconfig the fake writes (401 otherwise).
//! Every request is logged, for counting.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::fake_store::{self, KINDS, SharedStore};
use super::identity::JwtIssuer;

/// The bearer token the fake's kubeconfig carries.
pub const PROVIDER_TOKEN: &str = "fake-provider-token";

#[derive(Default)]
pub struct KubeState {
    pub service_accounts: HashMap<(String, String), Value>,
    pub nodes: HashMap<String, Value>,
    /// `METHOD path` of every request.
    pub requests: Vec<String>,
    /// The TokenRequest bodies the fake answered.
    pub minted: Vec<Value>,
    /// Signs minted tokens (so a backend can verify them); without it they carry a fake signature.
    pub signer: Option<Arc<JwtIssuer>>,
    resource_version: u64,
}

impl KubeState {
    fn next_version(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }
}

/// A running fake API server.
pub struct FakeKube {
    pub url: String,
    pub state: Arc<Mutex<KubeState>>,
    pub store: SharedStore,
    pub kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

type Shared = Arc<Mutex<KubeState>>;

impl FakeKube {
    /// Starts the fake on a loopback port, on a thread of its own, and writes its kubeconfig.
    pub fn start() -> Self {
        let state: Shared = Arc::default();
        let store: SharedStore = Arc::default();
        let served = store.clone();
        let app = axum::Router::new()
            .route(
                "/api/v1/namespaces/{ns}/serviceaccounts/{name}",
                get(get_service_account),
            )
            .route(
                "/api/v1/namespaces/{ns}/serviceaccounts/{name}/token",
                post(create_token),
            )
            .route("/api/v1/nodes/{name}", get(get_node))
            .fallback(
                move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                    let store = served.clone();
                    async move {
                        match fake_store::handle(&store, &method, &uri, &headers, &body).await {
                            Some(response) => response,
                            None => unknown(method, uri).await,
                        }
                    }
                },
            )
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                authenticate,
            ))
            .with_state(state.clone());
        let url = super::serve_on_thread(app);
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n\
                 users:\n- name: provider\n  user:\n    token: {PROVIDER_TOKEN}\ncontexts:\n- name: fake\n  \
                 context:\n    cluster: fake\n    user: provider\n    namespace: default\n\
                 current-context: fake\n"
            ),
        )
        .expect("kubeconfig");
        Self {
            url,
            state,
            store,
            kubeconfig,
            _dir: dir,
        }
    }

    /// Adds (or replaces) a service account with annotations.
    pub fn add_service_account(&self, namespace: &str, name: &str, annotations: &[(&str, &str)]) {
        let mut state = self.state.lock().unwrap();
        let version = state.next_version();
        let annotations: serde_json::Map<String, Value> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        state.service_accounts.insert(
            (namespace.into(), name.into()),
            json!({
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}"),
                             "resourceVersion": version, "annotations": annotations}
            }),
        );
    }

    pub fn add_node(&self, name: &str, labels: &[(&str, &str)]) {
        let mut state = self.state.lock().unwrap();
        let version = state.next_version();
        let labels: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        state.nodes.insert(
            name.into(),
            json!({"apiVersion": "v1", "kind": "Node",
                   "metadata": {"name": name, "resourceVersion": version, "labels": labels}}),
        );
    }

    /// Creates or replaces an object as a test's setup (not logged as a request): `group_path` is
    /// `api/v1` or `apis/GROUP/VERSION`.
    pub fn put(&self, group_path: &str, plural: &str, namespace: &str, object: Value) {
        let kind = KINDS
            .iter()
            .copied()
            .find(|k| k.group_path == group_path && k.plural == plural)
            .unwrap_or_else(|| panic!("the fake serves no {group_path}/{plural}"));
        let name = object["metadata"]["name"]
            .as_str()
            .expect("a name")
            .to_string();
        let mut store = self.store.lock().unwrap();
        let exists = store.get(group_path, plural, namespace, &name).is_some();
        let written = if exists {
            let mut object = object;
            object["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("resourceVersion");
            store.replace(kind, namespace, &name, object, None, "test")
        } else {
            store.create(kind, namespace, object, "test")
        };
        if let Err(refusal) = written {
            panic!("put {plural}/{name}: {}", refusal.2);
        }
    }

    /// An object by plural (`events` are core/v1's).
    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let kind = Self::kind(plural);
        self.store
            .lock()
            .unwrap()
            .get(kind.group_path, plural, namespace, name)
    }

    pub fn list(&self, plural: &str, namespace: &str) -> Vec<Value> {
        let kind = Self::kind(plural);
        self.store
            .lock()
            .unwrap()
            .list(kind.group_path, plural, Some(namespace))
    }

    /// Deletes an object as a test's action (with garbage collection of what it owns).
    pub fn delete(&self, plural: &str, namespace: &str, name: &str) {
        let kind = Self::kind(plural);
        let _ = self.store.lock().unwrap().delete(kind, namespace, name);
    }

    /// The namespace's core/v1 Events.
    pub fn events(&self, namespace: &str) -> Vec<Value> {
        self.list("events", namespace)
    }

    /// Drops the watch history: a watch from an older version then gets `410 Gone`.
    pub fn compact(&self) {
        let mut store = self.store.lock().unwrap();
        store.compacted = store.version;
        store.history.clear();
    }

    /// Makes watch requests fail with `503` (or serves them again).
    pub fn fail_watches(&self, fail: bool) {
        self.store.lock().unwrap().watches_fail = fail;
    }

    /// Makes new watch requests wait until [`FakeKube::resume_watches`].
    pub fn pause_watches(&self) {
        self.store.lock().unwrap().paused.send_replace(true);
    }

    pub fn resume_watches(&self) {
        self.store.lock().unwrap().paused.send_replace(false);
    }

    /// Ends every open watch (as an API server restart would).
    pub fn close_watches(&self) {
        fake_store::close_watches(&self.store);
    }

    /// Requests that write stored objects (everything but reads, Lease renewals and TokenRequests).
    pub fn writes(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| !r.starts_with("GET "))
            .filter(|r| !r.contains("/leases") && !r.ends_with("/token"))
            .count()
    }

    /// `METHOD path` of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    fn kind(plural: &str) -> fake_store::Kind {
        KINDS
            .iter()
            .copied()
            .find(|k| k.plural == plural)
            .unwrap_or_else(|| panic!("the fake serves no {plural}"))
    }

    /// How many requests matched `METHOD path-prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        let state = self.state.lock().unwrap();
        state
            .requests
            .iter()
            .filter(|r| r.starts_with(prefix))
            .count()
    }
}

async fn authenticate(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    state
        .lock()
        .unwrap()
        .requests
        .push(format!("{method} {}", uri.path()));
    let expected = format!("Bearer {PROVIDER_TOKEN}");
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized",
            None,
        );
    }
    next.run(request).await
}

/// A `Status` failure as the API server writes it.
pub fn status(code: StatusCode, reason: &str, message: &str, details: Option<Value>) -> Response {
    let mut body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()
    });
    if let Some(details) = details {
        body["details"] = details;
    }
    (code, Json(body)).into_response()
}

fn not_found(kind: &str, name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{kind} \"{name}\" not found"),
        Some(json!({"name": name, "kind": kind})),
    )
}

async fn unknown(method: Method, uri: Uri) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!(
            "the server could not find the requested resource ({method} {})",
            uri.path()
        ),
        None,
    )
}

async fn get_service_account(
    State(state): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    match state
        .lock()
        .unwrap()
        .service_accounts
        .get(&(ns, name.clone()))
    {
        Some(account) => Json(account.clone()).into_response(),
        None => not_found("serviceaccounts", &name),
    }
}

async fn get_node(State(state): State<Shared>, Path(name): Path<String>) -> Response {
    match state.lock().unwrap().nodes.get(&name) {
        Some(node) => Json(node.clone()).into_response(),
        None => not_found("nodes", &name),
    }
}

fn invalid(kind: &str, name: &str, message: &str) -> Response {
    status(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        &format!("{kind} \"{name}\" is invalid: {message}"),
        Some(json!({"name": name, "kind": kind})),
    )
}

async fn create_token(
    State(state): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body is not JSON",
            None,
        );
    };
    let mut state = state.lock().unwrap();
    if !state
        .service_accounts
        .contains_key(&(ns.clone(), name.clone()))
    {
        return not_found("serviceaccounts", &name);
    }
    let spec = &request["spec"];
    let audiences: Vec<String> = spec["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let expiry = spec["expirationSeconds"].as_i64().unwrap_or(3600);
    if expiry < 600 {
        return invalid(
            "TokenRequest",
            &name,
            "spec.expirationSeconds: Invalid value: may not specify a duration less than 10 minutes",
        );
    }
    let bound = &spec["boundObjectRef"];
    if !bound.is_null()
        && (bound["kind"] != "Pod" || bound["name"].as_str().unwrap_or("").is_empty())
    {
        return invalid(
            "TokenRequest",
            &name,
            "spec.boundObjectRef: must name a Pod",
        );
    }
    let claims = json!({
        "aud": audiences,
        "sub": format!("system:serviceaccount:{ns}:{name}"),
        "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": name},
                          "pod": {"name": bound["name"], "uid": bound["uid"]}},
    });
    let audience_refs: Vec<&str> = audiences.iter().map(String::as_str).collect();
    let token = match &state.signer {
        Some(signer) => signer.token(
            &format!("system:serviceaccount:{ns}:{name}"),
            &audience_refs,
        ),
        None => format!(
            "{}.{}.fake-signature",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        ),
    };
    state.minted.push(request.clone());
    let mut answer = request;
    answer["status"] = json!({"token": token, "expirationTimestamp": "2099-01-01T00:00:00Z"});
    (StatusCode::CREATED, Json(answer)).into_response()
}

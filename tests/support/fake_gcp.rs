//! A fake of the four Google APIs the GCP backend calls, on one loopback server (the provider's
//! endpoint overrides point every API at it). No Google emulator exists, so it is written from Google's
//! REST reference, not from our client: STS `v1/token` (RFC 8693 token exchange), IAM Credentials
//! `projects.serviceAccounts.generateAccessToken`, Secret Manager `projects[.locations].secrets.versions
//! .access`, Parameter Manager `projects.locations.parameters.versions.render`, and Google's error
//! envelope `{"error": {"code": N, "message", "status"}}` (STS answers OAuth's `{"error",
//! "error_description"}` instead).
//!
//! | request | answer |
//! |---|---|
//! | `POST /v1/token`, `/v1/identitybindingtoken` (form, or JSON keyed snake_case or camelCase) | `{"access_token": "fed-<n>-<hex>", "issued_token_type", "token_type": "Bearer", "expires_in"}` |
//! | … `grant_type` other than token exchange | 400 `unsupported_grant_type` |
//! | … a token type wrong, no `scope`, an `audience` that names no provider | 400 `invalid_request` |
//! | … a well-formed `audience` other than the configured one | 400 `invalid_target` |
//! | … subject token unreadable, badly signed, expired, of another `aud`, not a service account's; [`FakeGcp::deny_sts`] | 400 `invalid_grant` |
//! | `POST /v1/projects/-/serviceAccounts/<email>:generateAccessToken` | `{"accessToken": "gsa-<n>-<hex>", "expireTime": "<RFC 3339>"}` |
//! | … bearer not a live token of this fake | 401 `UNAUTHENTICATED` |
//! | … a hop caller → delegates… → `<email>` not allowed | 403 `PERMISSION_DENIED` |
//! | … no `scope`, `lifetime` over `3600s`, a project instead of `-`, a malformed delegate | 400 `INVALID_ARGUMENT` |
//! | `GET /v1/projects/<p>[/locations/<l>]/secrets/<s>/versions/<v>:access` | `{"name": "projects/<number>[/locations/<l>]/secrets/<s>/versions/<n>", "payload": {"data", "dataCrc32c"}}` |
//! | `GET /v1/projects/<p>[/locations/<l>]/secrets/<s>/versions/<v>` (`versions.get`, after [`FakeGcp::grant_secret_viewer`]) | `{"name", "state", "createTime"}`, no payload; a disabled version too |
//! | `GET /v1/projects/<p>/locations/<l>/parameters/<x>/versions/<v>:render` | `{"parameterVersion", "payload": {"data"}, "renderedPayload"}` |
//! | … (both) while [`FakeGcp::throttle_next`] has requests left | 429 `RESOURCE_EXHAUSTED` |
//! | … (both) bearer missing, unknown or expired | 401 `UNAUTHENTICATED` |
//! | … (both) caller not granted (checked before existence, as Google does) | 403 `PERMISSION_DENIED` |
//! | … (both) no such secret, parameter or version | 404 `NOT_FOUND` |
//! | … a `DISABLED`/`DESTROYED` secret version (`latest` too), a disabled parameter version | 400 `FAILED_PRECONDITION` |
//! | `GET /computeMetadata/v1/project/project-id`, `…/instance/attributes/cluster-{location,name}` (after [`FakeGcp::serve_metadata`]) | the value as text; 403 without `Metadata-Flavor: Google` |
//! | `GET /computeMetadata/v1/instance/service-accounts/default/token` | `{"access_token": "node-<n>-<hex>", "expires_in", "token_type"}`, a token of the node's service account |
//! | anything else | 404 with an HTML page, as Google's front end answers unknown URLs |
//!
//! Followed from the docs: `latest` is "an alias to the most recently created SecretVersion", so a
//! disabled newest version makes `latest` fail (no fallback); versions are numbered from 1;
//! `dataCrc32c` is an int64 as a decimal string, always sent (Google computes it when the writer gave
//! none); access answers name the project by number even when asked by id
//! ([`FakeGcpConfig::project_numbers`], default [`DEFAULT_PROJECT_NUMBER`]) while `parameterVersion`
//! keeps the project as asked (as Parameter Manager's documented example does); parameter versions are
//! named by their writer, with no `latest`; generateAccessToken's `lifetime` defaults to, and is at
//! most, an hour. Not from the docs: render's `__REF__` substitution is not implemented
//! (`renderedPayload` = `payload.data`); a disabled parameter version "fails with an error" whose code
//! and text the docs do not give (FAILED_PRECONDITION and the message are this fake's); error texts
//! copy answers Google was seen to give where known, and are this fake's otherwise.
//!
//! Subject tokens are decoded without a JWT library (the claims are the base64url middle segment);
//! with [`FakeGcpConfig::verify_key_pem`] set to the issuer's Ed25519 key (`JwtIssuer::public_pem` of
//! `identity.rs`) the EdDSA signature is checked with `ring` too, without it only the claims are.
//! Counters count attempts (every request that reached the method); every request is logged with its
//! method, path, `Host` and the kind of bearer it carried.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
/// The number of any project [`FakeGcpConfig::project_numbers`] does not name.
pub const DEFAULT_PROJECT_NUMBER: &str = "123456789012";
const SA_PREFIX: &str = "projects/-/serviceAccounts/";
const UNAUTHENTICATED: &str = "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.";
const BAD_AUDIENCE: &str = "Invalid value for \"audience\". This value should be the full resource name of the Identity Provider. See https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token for the list of possible formats.";
const UNKNOWN_AUDIENCE: &str = "The target service indicated by the \"audience\" parameters is invalid. This might either be because the pool or provider is disabled or deleted or because it doesn't exist.";
const NO_TOKEN_CREATOR: &str =
    "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).";

/// A principal: a pod's federated identity, or a Google service account (by email).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Who {
    Pod {
        namespace: String,
        service_account: String,
    },
    ServiceAccount(String),
}

impl Who {
    pub fn pod(namespace: &str, service_account: &str) -> Self {
        let (namespace, service_account) = (namespace.into(), service_account.into());
        Who::Pod {
            namespace,
            service_account,
        }
    }

    pub fn service_account(email: &str) -> Self {
        Who::ServiceAccount(email.into())
    }
}

#[derive(Clone, Debug)]
pub struct FakeGcpConfig {
    /// The STS `audience` accepted: `identitynamespace:<pool>:<cluster>` or `//iam.googleapis.com/…`.
    pub sts_audience: String,
    /// A value the subject token's `aud` claim must contain.
    pub expected_token_audience: String,
    /// Project id → project number.
    pub project_numbers: HashMap<String, String>,
    /// Federated tokens' `expires_in`, and the longest an impersonated token lives.
    pub token_lifetime_secs: u64,
    /// The Ed25519 public key (PEM SubjectPublicKeyInfo) signing subject tokens; `None`: claims only.
    pub verify_key_pem: Option<String>,
}

impl FakeGcpConfig {
    pub fn new(sts_audience: &str, expected_token_audience: &str) -> Self {
        Self {
            sts_audience: sts_audience.into(),
            expected_token_audience: expected_token_audience.into(),
            project_numbers: HashMap::new(),
            token_lifetime_secs: 3600,
            verify_key_pem: None,
        }
    }

    pub fn project_number(mut self, project: &str, number: &str) -> Self {
        self.project_numbers.insert(project.into(), number.into());
        self
    }

    pub fn verify_with(mut self, public_pem: &str) -> Self {
        self.verify_key_pem = Some(public_pem.into());
        self
    }

    /// The project as the store keys it (a configured number maps back to its id).
    fn canonical(&self, project: &str) -> String {
        let mut numbers = self.project_numbers.iter();
        let id = numbers
            .find(|(_, number)| *number == project)
            .map(|(id, _)| id);
        id.map_or(project, String::as_str).to_string()
    }

    /// The number answers give `project` (an id or a number).
    pub fn number_of(&self, project: &str) -> String {
        let canonical = self.canonical(project);
        match self.project_numbers.get(&canonical) {
            Some(number) => number.clone(),
            None if canonical.bytes().all(|b| b.is_ascii_digit()) => canonical,
            None => DEFAULT_PROJECT_NUMBER.into(),
        }
    }
}

struct Issued {
    who: Who,
    kind: &'static str,
    expires: SystemTime,
}

/// What the metadata server tells (GKE).
#[derive(Clone, Debug)]
pub struct Metadata {
    pub project: String,
    pub cluster_location: String,
    pub cluster_name: String,
    /// The email of the node's (the provider's) service account: its token's principal.
    pub service_account: String,
}

/// A parameter: its format, and version id → (data, disabled).
type Parameter = (String, HashMap<String, (Vec<u8>, bool)>);

#[derive(Default)]
struct Store {
    /// Secret resource (`projects/<id>[/locations/<l>]/secrets/<s>`) → versions 1, 2, … (data, state).
    secrets: HashMap<String, Vec<(Vec<u8>, String)>>,
    parameters: HashMap<String, Parameter>,
    /// (secret or parameter resource, principal granted it).
    grants: HashSet<(String, Who)>,
    /// (principal, service account it may mint tokens for).
    impersonation: HashSet<(Who, String)>,
    corrupt: HashSet<(String, String)>,
    tokens: HashMap<String, Issued>,
    minted: usize,
    throttle: usize,
    deny_sts: bool,
    exchanges: usize,
    impersonations: usize,
    delegates: Vec<Vec<String>>,
    /// Added before every answer (a network's round trip, for the benchmark).
    latency: Duration,
    /// The metadata server's project, cluster location and name, and the node's service account.
    metadata: Option<Metadata>,
    /// (path, `METHOD PATH bearer=<kind> host=<host>`).
    seen: Vec<(String, String)>,
}

#[derive(Clone)]
struct Shared {
    config: Arc<FakeGcpConfig>,
    store: Arc<Mutex<Store>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap()
    }
}

/// The running fake.
pub struct FakeGcp {
    /// `http://127.0.0.1:<port>`, the base URL of all four APIs.
    pub url: String,
    shared: Shared,
}

impl FakeGcp {
    pub async fn start(config: FakeGcpConfig) -> Self {
        let shared = Shared {
            config: Arc::new(config),
            store: Arc::default(),
        };
        let app = axum::Router::new()
            .fallback(dispatch)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, shared }
    }

    /// Adds an ENABLED version holding `data`; returns its number (1, 2, …).
    pub fn put_secret_version(
        &self,
        project: &str,
        location: Option<&str>,
        secret: &str,
        data: &[u8],
    ) -> u64 {
        let key = self.secret_key(project, location, secret);
        let mut store = self.shared.lock();
        let versions = store.secrets.entry(key).or_default();
        versions.push((data.to_vec(), "ENABLED".into()));
        versions.len() as u64
    }

    /// Sets a version's state: `ENABLED`, `DISABLED` or `DESTROYED` (which drops its data for good).
    pub fn set_version_state(
        &self,
        project: &str,
        location: Option<&str>,
        secret: &str,
        version: u64,
        state: &str,
    ) {
        assert!(["ENABLED", "DISABLED", "DESTROYED"].contains(&state));
        let key = self.secret_key(project, location, secret);
        let mut store = self.shared.lock();
        let versions = store.secrets.get_mut(&key);
        let slot = versions.and_then(|v| v.get_mut(version.wrapping_sub(1) as usize));
        let slot = slot.expect("no such secret version");
        assert!(slot.1 != "DESTROYED", "a destroyed version stays destroyed");
        if state == "DESTROYED" {
            slot.0.clear();
        }
        slot.1 = state.into();
    }

    /// Stores parameter version `version`; `format` (`UNFORMATTED`, `YAML`, `JSON`) is per parameter.
    pub fn put_parameter_version(
        &self,
        project: &str,
        location: &str,
        parameter: &str,
        version: &str,
        data: &[u8],
        format: &str,
    ) {
        assert!(["UNFORMATTED", "YAML", "JSON"].contains(&format));
        let key = self.parameter_key(project, location, parameter);
        let mut store = self.shared.lock();
        let entry = store
            .parameters
            .entry(key)
            .or_insert_with(|| (format.into(), HashMap::new()));
        assert_eq!(entry.0, format, "a parameter's format is immutable");
        entry.1.insert(version.into(), (data.to_vec(), false));
    }

    pub fn set_parameter_disabled(
        &self,
        project: &str,
        location: &str,
        parameter: &str,
        version: &str,
        disabled: bool,
    ) {
        let key = self.parameter_key(project, location, parameter);
        let mut store = self.shared.lock();
        let slot = store
            .parameters
            .get_mut(&key)
            .and_then(|p| p.1.get_mut(version));
        slot.expect("no such parameter version").1 = disabled;
    }

    /// Grants `secretmanager.versions.access` on one secret.
    pub fn grant_secret(&self, project: &str, location: Option<&str>, secret: &str, who: Who) {
        let key = self.secret_key(project, location, secret);
        self.shared.lock().grants.insert((key, who));
    }

    /// Grants `secretmanager.versions.get` (roles/secretmanager.viewer) on one secret: versions'
    /// names and states, no payload.
    pub fn grant_secret_viewer(
        &self,
        project: &str,
        location: Option<&str>,
        secret: &str,
        who: Who,
    ) {
        let key = viewer_key(&self.secret_key(project, location, secret));
        self.shared.lock().grants.insert((key, who));
    }

    /// Grants `parametermanager.parameterVersions.render` on one parameter.
    pub fn grant_parameter(&self, project: &str, location: &str, parameter: &str, who: Who) {
        let key = self.parameter_key(project, location, parameter);
        self.shared.lock().grants.insert((key, who));
    }

    /// Lets pod `namespace/service_account` mint tokens for `gsa` (Workload Identity User on it).
    pub fn allow_impersonation(&self, namespace: &str, service_account: &str, gsa: &str) {
        let who = Who::pod(namespace, service_account);
        self.shared.lock().impersonation.insert((who, gsa.into()));
    }

    /// Lets service account `from` mint tokens for `to` (a delegation hop: Token Creator on `to`).
    pub fn allow_delegation(&self, from: &str, to: &str) {
        let who = Who::service_account(from);
        self.shared.lock().impersonation.insert((who, to.into()));
    }

    /// Answers `secret`'s versions (global and regional) with a wrong `dataCrc32c`.
    pub fn corrupt_checksum(&self, project: &str, secret: &str, on: bool) {
        let entry = (self.shared.config.canonical(project), secret.to_string());
        let corrupt = &mut self.shared.lock().corrupt;
        if on {
            corrupt.insert(entry)
        } else {
            corrupt.remove(&entry)
        };
    }

    /// The next `n` access or render requests answer 429 RESOURCE_EXHAUSTED.
    /// Delays every answer by `latency`.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    /// Serves the GCE metadata server (`/computeMetadata/v1/…`, with `Metadata-Flavor: Google`).
    pub fn serve_metadata(&self, metadata: Metadata) {
        self.shared.lock().metadata = Some(metadata);
    }

    pub fn throttle_next(&self, n: usize) {
        self.shared.lock().throttle = n;
    }

    pub fn deny_sts(&self, on: bool) {
        self.shared.lock().deny_sts = on;
    }

    /// Makes every token issued so far expired.
    pub fn expire_tokens(&self) {
        for issued in self.shared.lock().tokens.values_mut() {
            issued.expires = UNIX_EPOCH;
        }
    }

    pub fn exchanges(&self) -> usize {
        self.shared.lock().exchanges
    }

    pub fn impersonations(&self) -> usize {
        self.shared.lock().impersonations
    }

    /// The `delegates` of each generateAccessToken request, in order (empty when none were sent).
    pub fn delegates_seen(&self) -> Vec<Vec<String>> {
        self.shared.lock().delegates.clone()
    }

    /// Requests whose path starts with `prefix`, e.g. `/v1/projects/p/secrets/`.
    pub fn count(&self, prefix: &str) -> usize {
        let store = self.shared.lock();
        store
            .seen
            .iter()
            .filter(|(path, _)| path.starts_with(prefix))
            .count()
    }

    /// Every request as `METHOD PATH bearer=<none|federated|impersonated|expired|unknown> host=<Host>`.
    pub fn requests(&self) -> Vec<String> {
        self.shared
            .lock()
            .seen
            .iter()
            .map(|(_, line)| line.clone())
            .collect()
    }

    fn secret_key(&self, project: &str, location: Option<&str>, secret: &str) -> String {
        secret_key(&self.shared.config.canonical(project), location, secret)
    }

    fn parameter_key(&self, project: &str, location: &str, parameter: &str) -> String {
        parameter_key(&self.shared.config.canonical(project), location, parameter)
    }
}

fn secret_key(project: &str, location: Option<&str>, secret: &str) -> String {
    match location {
        Some(l) => format!("projects/{project}/locations/{l}/secrets/{secret}"),
        None => format!("projects/{project}/secrets/{secret}"),
    }
}

fn parameter_key(project: &str, location: &str, parameter: &str) -> String {
    format!("projects/{project}/locations/{location}/parameters/{parameter}")
}

async fn dispatch(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let bearer = bearer.and_then(|v| v.strip_prefix("Bearer "));
    log(&shared, &method, path, &headers, bearer);
    let latency = shared.lock().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(item) = path.strip_prefix("/computeMetadata/v1/") {
        return metadata(&shared, &headers, item);
    }
    let rest = path.strip_prefix("/v1/").unwrap_or_default();
    match method {
        Method::POST if rest == "token" || rest == "identitybindingtoken" => {
            sts(&shared, &headers, &body)
        }
        Method::POST if rest.ends_with(":generateAccessToken") => {
            generate_access_token(&shared, rest, bearer, &body)
        }
        Method::GET if rest.ends_with(":access") => access(&shared, rest, bearer),
        Method::GET if rest.contains("/secrets/") && !rest.contains(':') => {
            secret_version(&shared, rest, bearer, false)
        }
        Method::GET if rest.ends_with(":render") => render(&shared, rest, bearer),
        _ => not_found_page(),
    }
}

/// The metadata server: plain-text values, and the node's token as JSON; 403 without
/// `Metadata-Flavor: Google`, 404 for what it does not know.
fn metadata(shared: &Shared, headers: &HeaderMap, item: &str) -> Response {
    let flavored = headers
        .get("metadata-flavor")
        .is_some_and(|v| v.as_bytes() == b"Google");
    let mut store = shared.lock();
    let Some(known) = store.metadata.clone().filter(|_| flavored) else {
        return (
            StatusCode::FORBIDDEN,
            "Missing Metadata-Flavor:Google header.",
        )
            .into_response();
    };
    let value = match item {
        "project/project-id" => known.project,
        "instance/attributes/cluster-location" => known.cluster_location,
        "instance/attributes/cluster-name" => known.cluster_name,
        "instance/service-accounts/default/token" => {
            let who = Who::service_account(&known.service_account);
            let secs = shared.config.token_lifetime_secs;
            let token = mint(&mut store, "node", who, "node", secs);
            return axum::Json(json!({"access_token": token, "expires_in": secs,
                                     "token_type": "Bearer"}))
            .into_response();
        }
        _ => return (StatusCode::NOT_FOUND, "Not Found").into_response(),
    };
    value.into_response()
}

fn log(shared: &Shared, method: &Method, path: &str, headers: &HeaderMap, bearer: Option<&str>) {
    let mut store = shared.lock();
    let kind = match bearer.map(|b| store.tokens.get(b)) {
        None => "none",
        Some(None) => "unknown",
        Some(Some(t)) if t.expires <= SystemTime::now() => "expired",
        Some(Some(t)) => t.kind,
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let line = format!("{method} {path} bearer={kind} host={host}");
    store.seen.push((path.into(), line));
}

/// The principal behind a live bearer token.
fn caller(store: &Store, bearer: Option<&str>) -> Option<Who> {
    let issued = store.tokens.get(bearer?)?;
    (issued.expires > SystemTime::now()).then(|| issued.who.clone())
}

fn mint(store: &mut Store, prefix: &str, who: Who, kind: &'static str, secs: u64) -> String {
    store.minted += 1;
    let mut random = [0u8; 12];
    getrandom::fill(&mut random).expect("random");
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let token = format!("{prefix}-{}-{hex}", store.minted);
    let expires = SystemTime::now() + Duration::from_secs(secs);
    store
        .tokens
        .insert(token.clone(), Issued { who, kind, expires });
    token
}

// --- STS ---

fn sts(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    let deny = {
        let mut store = shared.lock();
        store.exchanges += 1;
        store.deny_sts
    };
    let fields = sts_fields(headers, body).unwrap_or_default();
    let who = match exchange(&shared.config, &fields) {
        Ok(_) if deny => Err(("invalid_grant", "Token exchange refused (deny_sts).".into())),
        checked => checked,
    };
    let who = match who {
        Ok(who) => who,
        Err((error, description)) => {
            let body = json!({"error": error, "error_description": description});
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
    };
    let secs = shared.config.token_lifetime_secs;
    let token = mint(&mut shared.lock(), "fed", who, "federated", secs);
    let issued = ACCESS_TOKEN_TYPE;
    let answer = json!({
        "access_token": token, "issued_token_type": issued, "token_type": "Bearer", "expires_in": secs,
    });
    axum::Json(answer).into_response()
}

/// The pod an exchange request proves, or its OAuth error (code, description).
fn exchange(
    config: &FakeGcpConfig,
    fields: &HashMap<String, String>,
) -> Result<Who, (&'static str, String)> {
    let field = |name: &str| fields.get(name).map_or("", String::as_str);
    let invalid = |what: &str| Err(("invalid_request", format!("Invalid value for \"{what}\".")));
    let audience = field("audience");
    if field("grant_type") != TOKEN_EXCHANGE {
        return Err(("unsupported_grant_type", "Unsupported grant_type.".into()));
    } else if field("requested_token_type") != ACCESS_TOKEN_TYPE {
        return invalid("requested_token_type");
    } else if ![JWT_TOKEN_TYPE, ID_TOKEN_TYPE].contains(&field("subject_token_type")) {
        return invalid("subject_token_type");
    } else if field("scope").trim().is_empty() {
        return invalid("scope");
    } else if !["//iam.googleapis.com/", "identitynamespace:"]
        .iter()
        .any(|p| audience.starts_with(p))
    {
        return Err(("invalid_request", BAD_AUDIENCE.into()));
    } else if audience != config.sts_audience {
        return Err(("invalid_target", UNKNOWN_AUDIENCE.into()));
    }
    pod_identity(config, field("subject_token"))
        .map_err(|description| ("invalid_grant", description))
}

/// The request's fields, from a form or a JSON body, keyed snake_case.
fn sts_fields(headers: &HeaderMap, body: &[u8]) -> Option<HashMap<String, String>> {
    let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    if content_type.starts_with("application/json") {
        let Value::Object(map) = serde_json::from_slice(body).ok()? else {
            return None;
        };
        let string = |(k, v): (String, Value)| Some((snake_case(&k), v.as_str()?.to_string()));
        return Some(map.into_iter().filter_map(string).collect());
    }
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return None;
    }
    let pair = |p: &str| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        Some((form_decode(k)?, form_decode(v)?))
    };
    let pairs = std::str::from_utf8(body)
        .ok()?
        .split('&')
        .filter(|p| !p.is_empty());
    pairs.map(pair).collect()
}

fn snake_case(key: &str) -> String {
    let lower = |c: char| c.to_ascii_lowercase().to_string();
    key.chars()
        .map(|c| {
            if c.is_ascii_uppercase() {
                format!("_{}", lower(c))
            } else {
                lower(c)
            }
        })
        .collect()
}

/// `application/x-www-form-urlencoded` (and path) decoding: `+` is a space, `%XX` a byte.
fn form_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::new();
    let mut input = text.bytes();
    while let Some(b) = input.next() {
        bytes.push(match b {
            b'+' => b' ',
            b'%' => u8::from_str_radix(
                std::str::from_utf8(&[input.next()?, input.next()?]).ok()?,
                16,
            )
            .ok()?,
            b => b,
        });
    }
    String::from_utf8(bytes).ok()
}

/// The pod (namespace, service account) a Kubernetes service-account JWT asserts.
fn pod_identity(config: &FakeGcpConfig, token: &str) -> Result<Who, String> {
    let parts: Vec<&str> = token.split('.').collect();
    let [head, body, signature] = parts[..] else {
        return Err("The subject token is not a JWT.".into());
    };
    if let Some(pem) = &config.verify_key_pem {
        verify_ed25519(pem, &format!("{head}.{body}"), signature)?;
    }
    let claims = URL_SAFE_NO_PAD.decode(body).ok();
    let claims: Value = claims
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if claims["exp"].as_u64().is_none_or(|exp| exp <= now) {
        return Err("The subject token has expired, or has no readable exp.".into());
    }
    let expected = config.expected_token_audience.as_str();
    let audience_ok = match &claims["aud"] {
        Value::String(aud) => aud == expected,
        Value::Array(auds) => auds.iter().any(|a| a.as_str() == Some(expected)),
        _ => false,
    };
    if !audience_ok {
        return Err(format!(
            "The subject token's audience does not include {expected}."
        ));
    }
    let sub = claims["sub"].as_str().unwrap_or_default();
    let pod = sub
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'));
    let (namespace, account) = pod.ok_or(format!("The subject {sub:?} is no service account."))?;
    Ok(Who::pod(namespace, account))
}

fn verify_ed25519(public_pem: &str, signed: &str, signature: &str) -> Result<(), String> {
    let base64: String = public_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = STANDARD
        .decode(base64.trim())
        .expect("the configured key is PEM");
    let key = &der[der.len().saturating_sub(32)..];
    let signature = URL_SAFE_NO_PAD.decode(signature).unwrap_or_default();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| "The subject token's signature is invalid.".to_string())
}

// --- IAM Credentials ---

fn generate_access_token(
    shared: &Shared,
    rest: &str,
    bearer: Option<&str>,
    body: &[u8],
) -> Response {
    let mut store = shared.lock();
    store.impersonations += 1;
    let Some(mut hop) = caller(&store, bearer) else {
        return google_error(401, "UNAUTHENTICATED", UNAUTHENTICATED);
    };
    let name = rest.trim_end_matches(":generateAccessToken");
    let Some(email) = name.strip_prefix(SA_PREFIX).and_then(form_decode) else {
        return invalid_argument("The name must be projects/-/serviceAccounts/<email or id>.");
    };
    let request: Value = serde_json::from_slice(body).unwrap_or_default();
    let strings = |v: &Value| -> Option<Vec<String>> {
        v.as_array()?
            .iter()
            .map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    if strings(&request["scope"]).is_none_or(|scope| scope.is_empty()) {
        return invalid_argument("At least one scope is required.");
    }
    let delegates = match &request["delegates"] {
        Value::Null => vec![],
        listed => strings(listed).unwrap_or_else(|| vec![String::new()]),
    };
    store.delegates.push(delegates.clone());
    let Some(chain) = delegates
        .iter()
        .map(|d| d.strip_prefix(SA_PREFIX))
        .collect::<Option<Vec<_>>>()
    else {
        return invalid_argument("Each delegate must be projects/-/serviceAccounts/<email or id>.");
    };
    let Some(lifetime) = lifetime_secs(&request["lifetime"]).filter(|s| (1..=3600).contains(s))
    else {
        return invalid_argument("The lifetime must be a duration of at most 3600s.");
    };
    for target in chain.into_iter().chain([email.as_str()]) {
        if !store.impersonation.contains(&(hop, target.to_string())) {
            return google_error(403, "PERMISSION_DENIED", NO_TOKEN_CREATOR);
        }
        hop = Who::service_account(target);
    }
    let secs = lifetime.min(shared.config.token_lifetime_secs);
    let token = mint(&mut store, "gsa", hop, "impersonated", secs);
    let expire = rfc3339(SystemTime::now() + Duration::from_secs(secs));
    axum::Json(json!({"accessToken": token, "expireTime": expire})).into_response()
}

/// A proto3 JSON Duration (`"3600s"`; fractions dropped); absent, the documented default of an hour.
fn lifetime_secs(value: &Value) -> Option<u64> {
    let Some(text) = value.as_str() else {
        return value.is_null().then_some(3600);
    };
    text.strip_suffix('s')?.split('.').next()?.parse().ok()
}

/// RFC 3339 in UTC ("Z"), to the second.
fn rfc3339(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // The civil date of a day count since 1970-01-01 (proleptic Gregorian, eras of 400 years).
    let z = days + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

// --- Secret Manager and Parameter Manager ---

fn access(shared: &Shared, rest: &str, bearer: Option<&str>) -> Response {
    secret_version(shared, rest.trim_end_matches(":access"), bearer, true)
}

/// `versions.get` (`GET …/versions/<v>`, no payload), or `versions:access` with `payload`.
fn secret_version(shared: &Shared, name: &str, bearer: Option<&str>, payload: bool) -> Response {
    let segments: Vec<&str> = name.split('/').collect();
    let (project, location, secret, version) = match segments[..] {
        ["projects", p, "secrets", s, "versions", v] => (p, None, s, v),
        ["projects", p, "locations", l, "secrets", s, "versions", v] => (p, Some(l), s, v),
        _ => return not_found_page(),
    };
    let (config, mut store) = (&shared.config, shared.lock());
    let (canonical, number) = (config.canonical(project), config.number_of(project));
    let key = secret_key(&canonical, location, secret);
    let (service, granted) = if payload {
        (
            ("secretmanager", "secretmanager.versions.access"),
            key.clone(),
        )
    } else {
        (
            ("secretmanager", "secretmanager.versions.get"),
            viewer_key(&key),
        )
    };
    if let Some(refused) = admit(&mut store, bearer, service, &number, &granted, name) {
        return refused;
    }
    let shown_secret = secret_key(&number, location, secret);
    let Some(versions) = store.secrets.get(&key).filter(|v| !v.is_empty()) else {
        let message = format!("Secret [{shown_secret}] not found or has no versions.");
        return google_error(404, "NOT_FOUND", &message);
    };
    let index = if version == "latest" {
        versions.len()
    } else {
        version.parse().unwrap_or(0)
    };
    let Some((data, state)) = index.checked_sub(1).and_then(|i| versions.get(i)) else {
        let message = format!("Secret Version [{shown_secret}/versions/{version}] not found.");
        return google_error(404, "NOT_FOUND", &message);
    };
    let shown = format!("{shown_secret}/versions/{index}");
    if !payload {
        return axum::Json(json!({"name": shown, "state": state,
                                 "createTime": "2026-01-01T00:00:00Z"}))
        .into_response();
    }
    if state != "ENABLED" {
        let message = format!("Secret Version [{shown}] is in {state} state.");
        return google_error(400, "FAILED_PRECONDITION", &message);
    }
    let corrupt = store.corrupt.contains(&(canonical, secret.to_string()));
    let crc = u64::from(crc32c::crc32c(data)) ^ u64::from(corrupt);
    let payload = json!({"data": STANDARD.encode(data), "dataCrc32c": crc.to_string()});
    axum::Json(json!({"name": shown, "payload": payload})).into_response()
}

/// The grant of `secretmanager.versions.get` (roles/secretmanager.viewer) on a secret, which
/// roles/secretmanager.secretAccessor does not include.
fn viewer_key(secret: &str) -> String {
    format!("{secret}#viewer")
}

fn render(shared: &Shared, rest: &str, bearer: Option<&str>) -> Response {
    let name = rest.trim_end_matches(":render");
    let segments: Vec<&str> = name.split('/').collect();
    let [
        "projects",
        project,
        "locations",
        location,
        "parameters",
        parameter,
        "versions",
        version,
    ] = segments[..]
    else {
        return not_found_page();
    };
    let (config, mut store) = (&shared.config, shared.lock());
    let key = parameter_key(&config.canonical(project), location, parameter);
    let service = (
        "parametermanager",
        "parametermanager.parameterVersions.render",
    );
    if let Some(refused) = admit(
        &mut store,
        bearer,
        service,
        &config.number_of(project),
        &key,
        name,
    ) {
        return refused;
    }
    let Some((_, versions)) = store.parameters.get(&key) else {
        let shown = parameter_key(project, location, parameter);
        return google_error(404, "NOT_FOUND", &format!("Parameter [{shown}] not found."));
    };
    let Some((data, disabled)) = versions.get(version) else {
        return google_error(
            404,
            "NOT_FOUND",
            &format!("Parameter Version [{name}] not found."),
        );
    };
    if *disabled {
        let message = format!("Parameter Version [{name}] is disabled.");
        return google_error(400, "FAILED_PRECONDITION", &message);
    }
    let data = STANDARD.encode(data);
    let answer =
        json!({"parameterVersion": name, "payload": {"data": data}, "renderedPayload": data});
    axum::Json(answer).into_response()
}

/// The checks before a read, in order: throttling, the bearer, the grant on `resource`; the refusal.
fn admit(
    store: &mut Store,
    bearer: Option<&str>,
    (service, permission): (&str, &str),
    number: &str,
    resource: &str,
    name: &str,
) -> Option<Response> {
    if store.throttle > 0 {
        store.throttle -= 1;
        let message = format!(
            "Quota exceeded for quota metric 'Access requests' and limit 'Access requests per minute per project' of service '{service}.googleapis.com' for consumer 'project_number:{number}'."
        );
        return Some(google_error(429, "RESOURCE_EXHAUSTED", &message));
    }
    let Some(who) = caller(store, bearer) else {
        return Some(google_error(401, "UNAUTHENTICATED", UNAUTHENTICATED));
    };
    if store.grants.contains(&(resource.to_string(), who)) {
        return None;
    }
    let message =
        format!("Permission '{permission}' denied for resource '{name}' (or it may not exist).");
    Some(google_error(403, "PERMISSION_DENIED", &message))
}

// --- answers ---

fn google_error(code: u16, status: &str, message: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message, "status": status}});
    (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
}

fn invalid_argument(message: &str) -> Response {
    google_error(400, "INVALID_ARGUMENT", message)
}

fn not_found_page() -> Response {
    let page = "<!DOCTYPE html><html lang=en><title>Error 404 (Not Found)!!1</title><p>404.</html>";
    let html = [(header::CONTENT_TYPE, "text/html; charset=UTF-8")];
    (StatusCode::NOT_FOUND, html, page).into_response()
}

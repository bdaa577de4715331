//! The GCP fake checked against Google's documented shapes: STS token exchange (form and JSON, and the
//! GKE `identitybindingtoken` path), IAM Credentials impersonation with delegates, Secret Manager access
//! (global and regional, checksum, the error envelopes, throttling) and Parameter Manager render.
#![cfg(feature = "gcp")]

#[path = "support/fake_gcp.rs"]
mod fake_gcp;
#[path = "support/identity.rs"]
mod identity;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use fake_gcp::{ACCESS_TOKEN_TYPE, FakeGcp, FakeGcpConfig, JWT_TOKEN_TYPE, TOKEN_EXCHANGE, Who};
use identity::JwtIssuer;
use serde_json::{Value, json};

const POOL: &str = "proj.svc.id.goog";
const STS_AUDIENCE: &str = "identitynamespace:proj.svc.id.goog:https://container.googleapis.com/v1/projects/proj/locations/us-central1/clusters/c1";
const NUMBER: &str = "987654321098";
const GSA: &str = "reader@proj.iam.gserviceaccount.com";
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const POD: &str = "system:serviceaccount:openclaw:gateway";

struct World {
    fake: FakeGcp,
    issuer: JwtIssuer,
    http: reqwest::Client,
}

impl World {
    async fn start() -> Self {
        let issuer = JwtIssuer::generate();
        let config = FakeGcpConfig::new(STS_AUDIENCE, POOL)
            .project_number("proj", NUMBER)
            .verify_with(&issuer.public_pem());
        let fake = FakeGcp::start(config).await;
        let http = reqwest::Client::new();
        Self { fake, issuer, http }
    }

    fn pod_token(&self) -> String {
        self.issuer.token(POD, &[POOL])
    }

    fn exchange_fields<'a>(&self, subject_token: &'a str) -> Vec<(&'static str, &'a str)> {
        vec![
            ("grant_type", TOKEN_EXCHANGE),
            ("audience", STS_AUDIENCE),
            ("scope", SCOPE),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
            ("subject_token", subject_token),
            ("subject_token_type", JWT_TOKEN_TYPE),
        ]
    }

    /// A form-encoded exchange at `/v1/token`: (status, body).
    async fn exchange_form(&self, fields: &[(&str, &str)]) -> (u16, Value) {
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        let request = self
            .http
            .post(format!("{}/v1/token", self.fake.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.join("&"));
        answer(request).await
    }

    /// A federated token for the test pod.
    async fn federated(&self) -> String {
        let token = self.pod_token();
        let (status, body) = self.exchange_form(&self.exchange_fields(&token)).await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_string()
    }

    async fn post_json(&self, path: &str, bearer: Option<&str>, body: Value) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.fake.url))
            .json(&body);
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        answer(request).await
    }

    async fn get(&self, path: &str, bearer: &str) -> (u16, Value) {
        let request = self.http.get(format!("{}{path}", self.fake.url));
        answer(request.bearer_auth(bearer)).await
    }
}

async fn answer(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("the fake answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Asserts Google's error envelope: HTTP status = `error.code`, the canonical `status`, a message.
fn assert_envelope(answer: &(u16, Value), code: u16, status: &str, message: &str) {
    let (http, body) = answer;
    assert_eq!(*http, code, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["error"]["status"], status, "{body}");
    assert_eq!(body["error"]["message"], message, "{body}");
}

/// A form exchange that must fail with OAuth error `error` (400, with a description).
async fn refused(world: &World, fields: Vec<(&'static str, String)>, error: &str) {
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, body) = world.exchange_form(&fields).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], error, "{body}");
    assert!(body["error_description"].is_string(), "{body}");
}

fn decode(data: &Value) -> Vec<u8> {
    STANDARD
        .decode(data.as_str().expect("base64 string"))
        .expect("base64")
}

#[tokio::test]
async fn sts_exchanges_form_and_json_and_refuses_per_oauth() {
    let world = World::start().await;
    let token = world.pod_token();

    let (status, body) = world.exchange_form(&world.exchange_fields(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["access_token"].as_str().unwrap().starts_with("fed-1-"));
    assert_eq!(body["issued_token_type"], ACCESS_TOKEN_TYPE);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);

    // The GKE path with snake_case JSON, and `/v1/token` with the REST reference's camelCase JSON.
    let snake: serde_json::Map<String, Value> = world
        .exchange_fields(&token)
        .into_iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let (status, body) = world
        .post_json("/v1/identitybindingtoken", None, Value::Object(snake))
        .await;
    assert_eq!(status, 200, "{body}");
    let camel = json!({
        "grantType": TOKEN_EXCHANGE, "audience": STS_AUDIENCE, "scope": SCOPE,
        "requestedTokenType": ACCESS_TOKEN_TYPE, "subjectToken": token, "subjectTokenType": JWT_TOKEN_TYPE,
    });
    let (status, body) = world.post_json("/v1/token", None, camel).await;
    assert_eq!(status, 200, "{body}");

    let with = |key: &'static str, value: &str| {
        let mut fields: Vec<(&'static str, String)> = world
            .exchange_fields(&token)
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect();
        fields.iter_mut().find(|(k, _)| *k == key).unwrap().1 = value.to_string();
        fields
    };
    let other_issuer = JwtIssuer::generate().token(POD, &[POOL]);
    refused(
        &world,
        with("subject_token", &other_issuer),
        "invalid_grant",
    )
    .await;
    let wrong_aud = world.issuer.token(POD, &["vault"]);
    refused(&world, with("subject_token", &wrong_aud), "invalid_grant").await;
    let not_a_pod = world.issuer.token("alice", &[POOL]);
    refused(&world, with("subject_token", &not_a_pod), "invalid_grant").await;
    refused(&world, with("subject_token", "not-a-jwt"), "invalid_grant").await;
    let other_pool =
        "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q";
    refused(&world, with("audience", other_pool), "invalid_target").await;
    refused(&world, with("audience", "proj"), "invalid_request").await;
    refused(
        &world,
        with("grant_type", "client_credentials"),
        "unsupported_grant_type",
    )
    .await;
    refused(
        &world,
        with("subject_token_type", ACCESS_TOKEN_TYPE),
        "invalid_request",
    )
    .await;
    world.fake.deny_sts(true);
    refused(&world, with("subject_token", &token), "invalid_grant").await;
    world.fake.deny_sts(false);
    assert_eq!(world.fake.exchanges(), 12);
    assert_eq!(world.fake.count("/v1/identitybindingtoken"), 1);
}

#[tokio::test]
async fn impersonation_checks_the_bearer_each_hop_and_the_lifetime() {
    let world = World::start().await;
    let federated = world.federated().await;
    let path = format!("/v1/projects/-/serviceAccounts/{GSA}:generateAccessToken");
    let body = json!({"scope": [SCOPE], "lifetime": "3600s"});

    let denied = world.post_json(&path, Some(&federated), body.clone()).await;
    let message =
        "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).";
    assert_envelope(&denied, 403, "PERMISSION_DENIED", message);

    world.fake.allow_impersonation("openclaw", "gateway", GSA);
    let (status, answer) = world.post_json(&path, Some(&federated), body.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["accessToken"].as_str().unwrap().starts_with("gsa-"));
    let expire = answer["expireTime"].as_str().unwrap();
    assert!(
        expire.len() == 20 && expire.ends_with('Z') && expire.as_bytes()[10] == b'T',
        "{expire}"
    );

    let unauthenticated = world
        .post_json(&path, Some("fed-0-forged"), body.clone())
        .await;
    assert_eq!(unauthenticated.0, 401);
    assert_eq!(unauthenticated.1["error"]["status"], "UNAUTHENTICATED");
    let too_long = json!({"scope": [SCOPE], "lifetime": "7200s"});
    let invalid = world.post_json(&path, Some(&federated), too_long).await;
    assert_eq!(
        (invalid.0, &invalid.1["error"]["status"]),
        (400, &json!("INVALID_ARGUMENT"))
    );
    let no_scope = world.post_json(&path, Some(&federated), json!({})).await;
    assert_eq!(no_scope.0, 400);
    let by_project =
        "/v1/projects/proj/serviceAccounts/x@proj.iam.gserviceaccount.com:generateAccessToken";
    assert_eq!(
        world.post_json(by_project, Some(&federated), body).await.0,
        400
    );

    // A delegation chain: pod → hop → target, each hop allowed separately.
    let hop = "hop@proj.iam.gserviceaccount.com";
    let target = "target@proj.iam.gserviceaccount.com";
    let chained = format!("/v1/projects/-/serviceAccounts/{target}:generateAccessToken");
    let delegates =
        json!({"scope": [SCOPE], "delegates": [format!("projects/-/serviceAccounts/{hop}")]});
    world.fake.allow_impersonation("openclaw", "gateway", hop);
    let first = world
        .post_json(&chained, Some(&federated), delegates.clone())
        .await;
    assert_eq!(first.0, 403, "{}", first.1);
    world.fake.allow_delegation(hop, target);
    let second = world.post_json(&chained, Some(&federated), delegates).await;
    assert_eq!(second.0, 200, "{}", second.1);
    let seen = world.fake.delegates_seen();
    assert_eq!(
        seen.last().unwrap(),
        &vec![format!("projects/-/serviceAccounts/{hop}")]
    );
    assert_eq!(world.fake.impersonations(), 8);
}

#[tokio::test]
async fn secret_access_answers_googles_shapes() {
    let world = World::start().await;
    let fake = &world.fake;
    let federated = world.federated().await;
    assert_eq!(fake.put_secret_version("proj", None, "api", b"one"), 1);
    assert_eq!(
        fake.put_secret_version("proj", None, "api", b"two\0\xff"),
        2
    );
    fake.put_secret_version("proj", Some("europe-west1"), "api", b"regional");
    fake.grant_secret("proj", None, "api", Who::pod("openclaw", "gateway"));
    fake.grant_secret(
        "proj",
        Some("europe-west1"),
        "api",
        Who::pod("openclaw", "gateway"),
    );
    fake.grant_secret("proj", None, "missing", Who::pod("openclaw", "gateway"));

    let (status, body) = world
        .get(
            "/v1/projects/proj/secrets/api/versions/latest:access",
            &federated,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["name"],
        format!("projects/{NUMBER}/secrets/api/versions/2")
    );
    assert_eq!(decode(&body["payload"]["data"]), b"two\0\xff");
    let crc = crc32c::crc32c(b"two\0\xff").to_string();
    assert_eq!(body["payload"]["dataCrc32c"], crc.as_str());

    // Asked by number, a pinned version; and the regional path.
    let by_number = format!("/v1/projects/{NUMBER}/secrets/api/versions/1:access");
    let (status, body) = world.get(&by_number, &federated).await;
    assert_eq!(
        (status, decode(&body["payload"]["data"])),
        (200, b"one".to_vec())
    );
    let regional = "/v1/projects/proj/locations/europe-west1/secrets/api/versions/latest:access";
    let (status, body) = world.get(regional, &federated).await;
    assert_eq!(status, 200, "{body}");
    let name = format!("projects/{NUMBER}/locations/europe-west1/secrets/api/versions/1");
    assert_eq!(body["name"], name);
    assert_eq!(
        fake.count("/v1/projects/proj/locations/europe-west1/secrets/"),
        1
    );

    let denied = world
        .get(
            "/v1/projects/proj/secrets/other/versions/latest:access",
            &federated,
        )
        .await;
    let message = "Permission 'secretmanager.versions.access' denied for resource 'projects/proj/secrets/other/versions/latest' (or it may not exist).";
    assert_envelope(&denied, 403, "PERMISSION_DENIED", message);
    let missing = world
        .get(
            "/v1/projects/proj/secrets/missing/versions/latest:access",
            &federated,
        )
        .await;
    let message =
        format!("Secret [projects/{NUMBER}/secrets/missing] not found or has no versions.");
    assert_envelope(&missing, 404, "NOT_FOUND", &message);
    let no_version = world
        .get(
            "/v1/projects/proj/secrets/api/versions/9:access",
            &federated,
        )
        .await;
    let message = format!("Secret Version [projects/{NUMBER}/secrets/api/versions/9] not found.");
    assert_envelope(&no_version, 404, "NOT_FOUND", &message);

    // `latest` is the newest version even when it is disabled.
    fake.set_version_state("proj", None, "api", 2, "DISABLED");
    let disabled = world
        .get(
            "/v1/projects/proj/secrets/api/versions/latest:access",
            &federated,
        )
        .await;
    let message =
        format!("Secret Version [projects/{NUMBER}/secrets/api/versions/2] is in DISABLED state.");
    assert_envelope(&disabled, 400, "FAILED_PRECONDITION", &message);
    fake.set_version_state("proj", None, "api", 1, "DESTROYED");
    let destroyed = world
        .get(
            "/v1/projects/proj/secrets/api/versions/1:access",
            &federated,
        )
        .await;
    let message =
        format!("Secret Version [projects/{NUMBER}/secrets/api/versions/1] is in DESTROYED state.");
    assert_envelope(&destroyed, 400, "FAILED_PRECONDITION", &message);
    fake.set_version_state("proj", None, "api", 2, "ENABLED");

    fake.corrupt_checksum("proj", "api", true);
    let (_, body) = world
        .get(
            "/v1/projects/proj/secrets/api/versions/2:access",
            &federated,
        )
        .await;
    assert_ne!(body["payload"]["dataCrc32c"], crc.as_str());
    fake.corrupt_checksum("proj", "api", false);

    fake.throttle_next(2);
    for _ in 0..2 {
        let throttled = world
            .get(
                "/v1/projects/proj/secrets/api/versions/2:access",
                &federated,
            )
            .await;
        assert_eq!(
            (throttled.0, &throttled.1["error"]["status"]),
            (429, &json!("RESOURCE_EXHAUSTED"))
        );
        assert_eq!(throttled.1["error"]["code"], 429);
    }
    assert_eq!(
        world
            .get(
                "/v1/projects/proj/secrets/api/versions/2:access",
                &federated
            )
            .await
            .0,
        200
    );

    // A service account's token works where the service account is granted.
    fake.allow_impersonation("openclaw", "gateway", GSA);
    let path = format!("/v1/projects/-/serviceAccounts/{GSA}:generateAccessToken");
    let (_, minted) = world
        .post_json(&path, Some(&federated), json!({"scope": [SCOPE]}))
        .await;
    let gsa = minted["accessToken"].as_str().unwrap().to_string();
    fake.put_secret_version("proj", None, "shared", b"s");
    fake.grant_secret("proj", None, "shared", Who::service_account(GSA));
    let (status, _) = world
        .get("/v1/projects/proj/secrets/shared/versions/1:access", &gsa)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        world
            .get("/v1/projects/proj/secrets/api/versions/2:access", &gsa)
            .await
            .0,
        403
    );

    fake.expire_tokens();
    let expired = world
        .get(
            "/v1/projects/proj/secrets/api/versions/2:access",
            &federated,
        )
        .await;
    assert_eq!(
        (expired.0, &expired.1["error"]["status"]),
        (401, &json!("UNAUTHENTICATED"))
    );
    let last = fake.requests().pop().unwrap();
    assert!(
        last.starts_with(
            "GET /v1/projects/proj/secrets/api/versions/2:access bearer=expired host=127.0.0.1:"
        ),
        "{last}"
    );
    let unknown = world
        .http
        .get(format!("{}/v1/projects/proj/secrets/api", fake.url))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
}

#[tokio::test]
async fn parameter_render_answers_googles_shapes() {
    let world = World::start().await;
    let fake = &world.fake;
    let federated = world.federated().await;
    fake.put_parameter_version("proj", "global", "app", "v1", b"{\"a\": 1}", "JSON");
    fake.put_parameter_version("proj", "global", "app", "v2", b"{\"a\": 2}", "JSON");
    fake.grant_parameter("proj", "global", "app", Who::pod("openclaw", "gateway"));

    let path = "/v1/projects/proj/locations/global/parameters/app/versions/v2:render";
    let (status, body) = world.get(path, &federated).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["parameterVersion"],
        "projects/proj/locations/global/parameters/app/versions/v2"
    );
    assert_eq!(decode(&body["payload"]["data"]), b"{\"a\": 2}");
    assert_eq!(decode(&body["renderedPayload"]), b"{\"a\": 2}");

    let latest = world
        .get(
            "/v1/projects/proj/locations/global/parameters/app/versions/latest:render",
            &federated,
        )
        .await;
    let message = "Parameter Version [projects/proj/locations/global/parameters/app/versions/latest] not found.";
    assert_envelope(&latest, 404, "NOT_FOUND", message);
    fake.set_parameter_disabled("proj", "global", "app", "v1", true);
    let disabled = world
        .get(
            "/v1/projects/proj/locations/global/parameters/app/versions/v1:render",
            &federated,
        )
        .await;
    assert_eq!(
        (disabled.0, &disabled.1["error"]["status"]),
        (400, &json!("FAILED_PRECONDITION"))
    );
    let denied = world
        .get(
            "/v1/projects/proj/locations/global/parameters/other/versions/v1:render",
            &federated,
        )
        .await;
    let message = "Permission 'parametermanager.parameterVersions.render' denied for resource 'projects/proj/locations/global/parameters/other/versions/v1' (or it may not exist).";
    assert_envelope(&denied, 403, "PERMISSION_DENIED", message);
    fake.throttle_next(1);
    assert_eq!(world.get(path, &federated).await.0, 429);
    assert_eq!(world.get(path, "gsa-0-forged").await.0, 401);
    assert_eq!(
        fake.count("/v1/projects/proj/locations/global/parameters/"),
        6
    );
}

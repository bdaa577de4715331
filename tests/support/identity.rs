//! Pod identities for the tests: service-account JWTs signed with a key pair the test generates (for
//! Vault's JWT auth), and an in-repo fake of the Kubernetes TokenReview endpoint (for Vault's Kubernetes
//! auth), written from the `authentication.k8s.io/v1` TokenReview API: it authenticates the tokens it
//! issued and reports their service account and audiences.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};

/// An Ed25519 key pair that signs service-account JWTs.
pub struct JwtIssuer {
    key: Ed25519KeyPair,
}

impl JwtIssuer {
    pub fn generate() -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("key");
        Self {
            key: Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key"),
        }
    }

    /// The public key as a PEM SubjectPublicKeyInfo (RFC 8410).
    pub fn public_pem(&self) -> String {
        let mut der = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        der.extend_from_slice(self.key.public_key().as_ref());
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            STANDARD.encode(der)
        )
    }

    /// A service-account token for `subject` with the given audiences, valid for an hour.
    pub fn token(&self, subject: &str, audiences: &[&str]) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = json!({"alg": "EdDSA", "typ": "JWT"});
        let claims = json!({
            "iss": "https://kubernetes.default.svc.cluster.local", "sub": subject, "aud": audiences,
            "iat": now, "nbf": now, "exp": now + 3600,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.key.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )
    }
}

/// The `csi.storage.k8s.io/serviceAccount.tokens` attribute for one audience.
pub fn tokens_attribute(audience: &str, token: &str) -> String {
    json!({audience: {"token": token, "expirationTimestamp": "2030-01-01T00:00:00Z"}}).to_string()
}

/// The UID of every service account the fake knows.
const SERVICE_ACCOUNT_UID: &str = "9f0c0c0c-0000-4000-8000-000000000001";

/// A fake Kubernetes API serving `POST /apis/authentication.k8s.io/v1/tokenreviews`.
pub struct FakeTokenReview {
    pub url: String,
    known: Arc<Mutex<HashMap<String, (String, String)>>>,
    pub reviews: Arc<Mutex<usize>>,
}

type ReviewState = (
    Arc<Mutex<HashMap<String, (String, String)>>>,
    Arc<Mutex<usize>>,
);

impl FakeTokenReview {
    pub async fn start() -> Self {
        let known: Arc<Mutex<HashMap<String, (String, String)>>> = Arc::default();
        let reviews: Arc<Mutex<usize>> = Arc::default();
        let app = axum::Router::new()
            .route("/apis/authentication.k8s.io/v1/tokenreviews", post(review))
            .with_state((known.clone(), reviews.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            known,
            reviews,
        }
    }

    /// Issues an opaque-signature JWT the fake will authenticate as `namespace/service_account`.
    pub fn issue(&self, namespace: &str, service_account: &str) -> String {
        let claims = json!({
            "iss": "kubernetes/serviceaccount",
            "kubernetes.io/serviceaccount/namespace": namespace,
            "kubernetes.io/serviceaccount/service-account.name": service_account,
            "kubernetes.io/serviceaccount/service-account.uid": SERVICE_ACCOUNT_UID,
            "sub": format!("system:serviceaccount:{namespace}:{service_account}"),
        });
        let mut random = [0u8; 16];
        getrandom::fill(&mut random).expect("random");
        let token = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "typ": "JWT"}).to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            URL_SAFE_NO_PAD.encode(random)
        );
        self.known
            .lock()
            .unwrap()
            .insert(token.clone(), (namespace.into(), service_account.into()));
        token
    }
}

async fn review(
    State((known, reviews)): State<ReviewState>,
    Json(body): Json<Value>,
) -> Json<Value> {
    *reviews.lock().unwrap() += 1;
    let token = body["spec"]["token"].as_str().unwrap_or_default();
    let audiences = body["spec"]["audiences"].clone();
    let status = match known.lock().unwrap().get(token) {
        Some((namespace, service_account)) => json!({
            "authenticated": true,
            "user": {
                "username": format!("system:serviceaccount:{namespace}:{service_account}"),
                // For a service account, TokenReview reports the service account's UID.
                "uid": SERVICE_ACCOUNT_UID,
                "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{namespace}")],
            },
            "audiences": if audiences.is_array() { audiences } else { json!([]) },
        }),
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    Json(json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
        "spec": body["spec"], "status": status,
    }))
}

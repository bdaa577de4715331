//! The sync controller with the `gcp` backend: the fake of Google's APIs, the SecretSync's service
//! account exchanging its own token (minted by the controller, for the pool's audience); settled polls
//! ask Secret Manager for the version's name alone (`versions.get`) and read no payload; a new version
//! reaches the Secret and rolls the Deployment once.
#![cfg(all(feature = "sync", feature = "gcp"))]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::json;
use support::fake_gcp::{FakeGcp, FakeGcpConfig, Who};
use support::fake_kube::FakeKube;
use support::identity::JwtIssuer;
use support::sync_process::{SyncProcess, base_flags};

const NS: &str = "openclaw";
const PROJECT: &str = "acme-prod";
const POOL: &str = "acme-prod.svc.id.goog";
const AUDIENCE: &str = "identitynamespace:acme-prod.svc.id.goog:https://container.googleapis.com/v1/projects/acme-prod/locations/us-central1/clusters/c1";
const KEYS: [(&str, &str); 3] = [
    ("OPENCLAW_GATEWAY_TOKEN", "gw-VALUE-MUST-NOT-LEAK"),
    ("ANTHROPIC_API_KEY", "sk-ant-VALUE-MUST-NOT-LEAK"),
    ("OPENAI_API_KEY", "sk-VALUE-MUST-NOT-LEAK"),
];

fn data(kube: &FakeKube, name: &str) -> Option<Vec<(String, String)>> {
    let secret = kube.get("secrets", NS, name)?;
    Some(
        secret["data"]
            .as_object()?
            .iter()
            .map(|(k, v)| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(v.as_str().unwrap())
                    .unwrap();
                (k.clone(), String::from_utf8(bytes).unwrap())
            })
            .collect(),
    )
}

fn expected(anthropic: &str) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = KEYS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all[1].1 = anthropic.to_string();
    all.sort();
    all
}

async fn wait_for(what: &str, controller: &SyncProcess, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}:\n{}", controller.logs());
}

#[tokio::test]
async fn a_gcp_secret_is_synced_polled_by_version_and_rolled_once() {
    let issuer = Arc::new(JwtIssuer::generate());
    let google =
        FakeGcp::start(FakeGcpConfig::new(AUDIENCE, POOL).verify_with(&issuer.public_pem())).await;
    for (name, value) in KEYS {
        google.put_secret_version(PROJECT, None, name, value.as_bytes());
        google.grant_secret(PROJECT, None, name, Who::pod(NS, "openclaw"));
        google.grant_secret_viewer(PROJECT, None, name, Who::pod(NS, "openclaw"));
    }
    let kube = FakeKube::start();
    kube.state.lock().unwrap().signer = Some(issuer.clone());
    kube.add_service_account(NS, "openclaw", &[]);
    let secrets: String = KEYS
        .iter()
        .map(|(name, _)| {
            format!("- resourceName: projects/{PROJECT}/secrets/{name}/versions/latest\n  path: {name}\n")
        })
        .collect();
    kube.put(
        "apis/secrets-store.csi.x-k8s.io/v1",
        "secretproviderclasses",
        NS,
        json!({"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
               "metadata": {"name": "openclaw-gcp", "namespace": NS},
               "spec": {"provider": "openclaw",
                        "parameters": {"backend": "gcp", "secrets": secrets}}}),
    );
    kube.put(
        "apis/apps/v1",
        "deployments",
        NS,
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "gateway", "namespace": NS},
               "spec": {"selector": {"matchLabels": {"app": "g"}}, "template": {
                   "metadata": {"labels": {"app": "g"}},
                   "spec": {"containers": [{"name": "g", "image": "openclaw",
                            "envFrom": [{"secretRef": {"name": "openclaw-secrets"}}]}]}}}}),
    );
    kube.put(
        "apis/openclaw.io/v1alpha1",
        "secretsyncs",
        NS,
        json!({"apiVersion": "openclaw.io/v1alpha1", "kind": "SecretSync",
               "metadata": {"name": "openclaw-secrets", "namespace": NS},
               "spec": {"secretProviderClassName": "openclaw-gcp", "serviceAccountName": "openclaw",
                        "refreshInterval": "1s",
                        "rollout": {"targets": [{"kind": "Deployment", "name": "gateway"}]}}}),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut flags = base_flags(&kube.kubeconfig, &dir.path().join("key"));
    let sts = format!("{}/v1/identitybindingtoken", google.url);
    for (flag, value) in [
        ("--cache-ttl", "0"),
        ("--gcp-project", PROJECT),
        ("--gcp-cluster-location", "us-central1"),
        ("--gcp-cluster-name", "c1"),
        ("--gcp-sts-endpoint", &sts),
        ("--gcp-iam-credentials-endpoint", &google.url),
        ("--gcp-secretmanager-endpoint", &google.url),
    ] {
        flags.extend([flag.to_string(), value.to_string()]);
    }
    let controller =
        SyncProcess::start_with_env(dir.path(), "sync-gcp", &flags, &[("NO_PROXY", "127.0.0.1")]);
    wait_for("the first sync", &controller, || {
        data(&kube, "openclaw-secrets") == Some(expected("sk-ant-VALUE-MUST-NOT-LEAK"))
    })
    .await;
    let minted = kube.state.lock().unwrap().minted.clone();
    assert_eq!(minted[0]["spec"]["audiences"], json!([POOL]));
    // Settled: polls ask for versions (no payload), tokens are kept.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let access = |name: &str| {
        google.count(&format!(
            "/v1/projects/{PROJECT}/secrets/{name}/versions/latest:access"
        ))
    };
    let (reads, gets) = (
        access("ANTHROPIC_API_KEY"),
        google.count(&format!(
            "/v1/projects/{PROJECT}/secrets/ANTHROPIC_API_KEY/versions/latest"
        )) - access("ANTHROPIC_API_KEY"),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        access("ANTHROPIC_API_KEY"),
        reads,
        "no payload read while the version holds"
    );
    let gets_now = google.count(&format!(
        "/v1/projects/{PROJECT}/secrets/ANTHROPIC_API_KEY/versions/latest"
    )) - access("ANTHROPIC_API_KEY");
    assert!(
        gets_now > gets,
        "polls asked for the version ({gets} → {gets_now})"
    );
    assert_eq!(google.exchanges(), 1, "the service account's token is kept");
    let generation = kube.get("deployments", NS, "gateway").unwrap()["metadata"]["generation"]
        .as_i64()
        .unwrap();
    google.put_secret_version(PROJECT, None, "ANTHROPIC_API_KEY", b"sk-ant-ROTATED");
    wait_for("the new version and the rollout", &controller, || {
        data(&kube, "openclaw-secrets") == Some(expected("sk-ant-ROTATED"))
            && kube.get("deployments", NS, "gateway").unwrap()["spec"]["template"]["metadata"]
                ["annotations"]["openclaw.io/secret-version"]
                .is_string()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let deployment = kube.get("deployments", NS, "gateway").unwrap();
    assert_eq!(deployment["metadata"]["generation"], generation + 1);
    assert!(!controller.logs().contains("VALUE-MUST-NOT-LEAK"));
    assert!(!controller.logs().contains("sk-ant-ROTATED"));
}

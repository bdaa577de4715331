//! The sync controller with the `aws` backend: moto's Secrets Manager and STS, the SecretSync's service
//! account annotated with its IRSA role, keys cut from one JSON secret with jmesPath and mapped with
//! `spec.data`; a new secret version reaches the Secret and rolls the Deployment once.
#![cfg(all(feature = "sync", feature = "aws"))]

mod support;

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::json;
use support::fake_kube::FakeKube;
use support::moto::Moto;
use support::sync_process::{SyncProcess, base_flags};

const NS: &str = "openclaw";
const REGION: &str = "eu-west-1";
const ROLE: &str = "arn:aws:iam::123456789012:role/openclaw-reader";
const OBJECTS: &str = r#"
- objectName: openclaw/production
  objectType: secretsmanager
  jmesPath:
    - {path: gateway_token, objectAlias: OPENCLAW_GATEWAY_TOKEN}
    - {path: anthropic_api_key, objectAlias: ANTHROPIC_API_KEY}
    - {path: openai-api-key, objectAlias: OPENAI_API_KEY}
"#;

fn seed(anthropic: &str) -> String {
    json!({"gateway_token": "gw-VALUE-MUST-NOT-LEAK", "anthropic_api_key": anthropic,
           "openai-api-key": "sk-VALUE-MUST-NOT-LEAK"})
    .to_string()
}

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
    vec![
        ("ANTHROPIC".into(), anthropic.into()),
        ("GATEWAY".into(), "gw-VALUE-MUST-NOT-LEAK".into()),
        ("OPENAI".into(), "sk-VALUE-MUST-NOT-LEAK".into()),
    ]
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
async fn an_aws_secret_is_synced_rotated_and_rolled_once() {
    let moto = Moto::start().await;
    moto.create_secret(
        REGION,
        "openclaw/production",
        &seed("sk-ant-VALUE-MUST-NOT-LEAK"),
    )
    .await;
    let kube = FakeKube::start();
    kube.add_service_account(NS, "openclaw", &[("eks.amazonaws.com/role-arn", ROLE)]);
    kube.put(
        "apis/secrets-store.csi.x-k8s.io/v1",
        "secretproviderclasses",
        NS,
        json!({"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
               "metadata": {"name": "openclaw-aws", "namespace": NS},
               "spec": {"provider": "openclaw",
                        "parameters": {"backend": "aws", "region": REGION, "objects": OBJECTS}}}),
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
               "spec": {"secretProviderClassName": "openclaw-aws", "serviceAccountName": "openclaw",
                        "refreshInterval": "1s",
                        "data": [{"objectName": "OPENCLAW_GATEWAY_TOKEN", "key": "GATEWAY"},
                                 {"objectName": "ANTHROPIC_API_KEY", "key": "ANTHROPIC"},
                                 {"objectName": "OPENAI_API_KEY", "key": "OPENAI"}],
                        "rollout": {"targets": [{"kind": "Deployment", "name": "gateway"}]}}}),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut flags = base_flags(&kube.kubeconfig, &dir.path().join("key"));
    flags.extend(["--cache-ttl".to_string(), "0".to_string()]);
    let controller = SyncProcess::start_with_env(
        dir.path(),
        "sync-aws",
        &flags,
        &[
            ("AWS_ENDPOINT_URL", moto.url.as_str()),
            ("AWS_CONFIG_FILE", "/nonexistent"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
        ],
    );
    wait_for("the first sync", &controller, || {
        data(&kube, "openclaw-secrets") == Some(expected("sk-ant-VALUE-MUST-NOT-LEAK"))
            && kube.get("secretsyncs", NS, "openclaw-secrets").unwrap()["status"]["objectVersions"]
                .is_array()
    })
    .await;
    let minted = kube.state.lock().unwrap().minted.clone();
    assert_eq!(minted[0]["spec"]["audiences"], json!(["sts.amazonaws.com"]));
    assert!(
        minted[0]["spec"]["boundObjectRef"].is_null(),
        "bound to no pod"
    );
    let status = kube.get("secretsyncs", NS, "openclaw-secrets").unwrap()["status"].clone();
    let versions = status["objectVersions"].as_array().unwrap();
    assert!(
        versions
            .iter()
            .all(|v| v["version"].as_str().is_some_and(|s| !s.is_empty()))
    );
    let generation = kube.get("deployments", NS, "gateway").unwrap()["metadata"]["generation"]
        .as_i64()
        .unwrap();
    moto.put_secret_value(REGION, "openclaw/production", &seed("sk-ant-ROTATED"), &[])
        .await;
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

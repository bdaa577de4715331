//! What the provider reads from and writes to the Kubernetes API besides backend identities: the
//! object-version key Secret (`--hmac-key-secret`) every node shares, against the fake API server.

mod support;

use std::time::Duration;

use serde_json::json;
use support::fake_kube::FakeKube;
use support::{OPENCLAW_OBJECTS, Provider, mount_request, spawn_serve, wait_bounded};

async fn versions(provider: &Provider) -> Vec<(String, String)> {
    let response = provider
        .mount(mount_request(&[
            ("backend", "file"),
            ("objects", OPENCLAW_OBJECTS),
        ]))
        .await
        .expect("mount");
    response
        .object_version
        .into_iter()
        .map(|v| (v.id, v.version))
        .collect()
}

#[tokio::test]
async fn nodes_sharing_the_key_secret_agree_on_versions_and_create_it_once() {
    let kube = FakeKube::start();
    let kubeconfig = kube.kubeconfig.display().to_string();
    let flags = [
        "--kubeconfig",
        kubeconfig.as_str(),
        "--hmac-key-secret",
        "openclaw-system/openclaw-hmac-key",
    ];
    let first = Provider::start(&flags);
    first.write_openclaw_keys();
    let second = Provider::start(&flags);
    second.write_openclaw_keys();
    assert_eq!(
        kube.count("POST /api/v1/namespaces/openclaw-system/secrets"),
        1
    );
    assert_eq!(
        kube.count("GET /api/v1/namespaces/openclaw-system/secrets/openclaw-hmac-key"),
        2
    );
    let secret = kube
        .get("secrets", "openclaw-system", "openclaw-hmac-key")
        .expect("the key Secret");
    let key = secret["data"]["key"].as_str().expect("base64 key");
    assert_eq!(key.len(), 44, "32 random bytes, base64");
    assert_eq!(secret["type"], "Opaque");
    let (a, b) = (versions(&first).await, versions(&second).await);
    assert_eq!(a, b, "one key, one version per content on every node");
    // A provider with its own random key disagrees (the check can fail).
    let alone = Provider::start(&[]);
    alone.write_openclaw_keys();
    assert_ne!(versions(&alone).await, a);
    assert!(
        !first.logs().contains(key),
        "the key never reaches the logs"
    );
}

#[tokio::test]
async fn an_unusable_key_secret_stops_the_provider_at_start() {
    let kube = FakeKube::start();
    kube.put(
        "api/v1",
        "secrets",
        "openclaw-system",
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "short", "namespace": "openclaw-system"},
               "data": {"key": "c2hvcnQ="}}),
    );
    let kubeconfig = kube.kubeconfig.display().to_string();
    let dir = tempfile::tempdir().unwrap();
    for (secret, expected) in [
        ("openclaw-system/short", "5 bytes"),
        ("no-slash", "NAMESPACE/NAME"),
        ("Bad_Namespace/x", "NAMESPACE/NAME"),
    ] {
        let log = dir.path().join("log");
        let mut child = spawn_serve(
            &dir.path().join("openclaw.sock"),
            dir.path(),
            "",
            &log,
            &["--kubeconfig", &kubeconfig, "--hmac-key-secret", secret],
        );
        let status = wait_bounded(&mut child, Duration::from_secs(20));
        assert!(!status.success(), "{secret}");
        let message = std::fs::read_to_string(&log).unwrap();
        assert!(message.contains(expected), "{secret}: {message}");
    }
}

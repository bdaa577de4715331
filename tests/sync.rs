//! The sync controller end to end: the real `sync` binary against the fake API server and a real
//! OpenBao. The seed flow (the OpenClaw Secret created, rotated, its Deployment rolled once, nothing
//! written when nothing changed, force-sync), the creation and deletion policies, Secrets it must never
//! touch, leader failover with `kill -9`, and the backend going away and coming back.
#![cfg(all(feature = "sync", feature = "vault"))]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use support::fake_kube::FakeKube;
use support::identity::{FakeTokenReview, JwtIssuer};
use support::openbao::{self, OpenBao};
use support::sync_process::{SyncProcess, base_flags};

const NS: &str = openbao::POD_NAMESPACE;
const SA: &str = openbao::SERVICE_ACCOUNT;

const VAULT_OBJECTS: &str = r#"
- objectName: OPENCLAW_GATEWAY_TOKEN
  secretPath: secret/data/openclaw
  secretKey: OPENCLAW_GATEWAY_TOKEN
- objectName: ANTHROPIC_API_KEY
  secretPath: secret/data/openclaw
  secretKey: ANTHROPIC_API_KEY
- objectName: OPENAI_API_KEY
  secretPath: secret/data/openclaw
  secretKey: OPENAI_API_KEY
"#;

const ROTATED_KEY: &str = "sk-ant-bao-ROTATED-VALUE-MUST-NOT-LEAK";

/// OpenBao (JWT auth trusting the fake API server's token signer), the fake API server with the service
/// account and a SecretProviderClass, and a directory for controller logs and the shared key.
struct World {
    /// `None` once a test stopped it.
    bao: Option<OpenBao>,
    issuer: Arc<JwtIssuer>,
    review: FakeTokenReview,
    kube: FakeKube,
    dir: tempfile::TempDir,
}

impl World {
    async fn start() -> Self {
        let bao = OpenBao::start().await;
        let issuer = Arc::new(JwtIssuer::generate());
        let review = FakeTokenReview::start().await;
        bao.configure(&issuer.public_pem(), &review.url).await;
        let kube = FakeKube::start();
        kube.state.lock().unwrap().signer = Some(issuer.clone());
        kube.add_service_account(NS, SA, &[]);
        let world = Self {
            bao: Some(bao),
            issuer,
            review,
            kube,
            dir: tempfile::tempdir().expect("temp dir"),
        };
        world.add_class("openclaw-vault", VAULT_OBJECTS);
        world
    }

    fn bao(&self) -> &OpenBao {
        self.bao.as_ref().expect("OpenBao runs")
    }

    fn flags(&self, extra: &[&str]) -> Vec<String> {
        let mut flags = base_flags(&self.kube.kubeconfig, &self.dir.path().join("hmac-key"));
        flags.extend(["--vault-addr".to_string(), self.bao().address.clone()]);
        flags.extend(extra.iter().map(|s| s.to_string()));
        flags
    }

    fn controller(&self, name: &str, extra: &[&str]) -> SyncProcess {
        SyncProcess::start(self.dir.path(), name, &self.flags(extra))
    }

    /// A controller with its own hash key file (not the one the others share).
    fn controller_with_key(&self, name: &str, key_file: &str) -> SyncProcess {
        let mut flags = base_flags(&self.kube.kubeconfig, &self.dir.path().join(key_file));
        flags.extend(["--vault-addr".to_string(), self.bao().address.clone()]);
        SyncProcess::start(self.dir.path(), name, &flags)
    }

    fn add_class(&self, name: &str, objects: &str) {
        self.put_class(name, "openclaw", json!({"objects": objects}));
    }

    /// A SecretProviderClass of `provider` with the Vault JWT login parameters and `parameters`.
    fn put_class(&self, name: &str, provider: &str, parameters: Value) {
        let mut all =
            json!({"backend": "vault", "roleName": "openclaw", "vaultAuthMountPath": "jwt"});
        all.as_object_mut()
            .unwrap()
            .extend(parameters.as_object().unwrap().clone());
        self.kube.put(
            "apis/secrets-store.csi.x-k8s.io/v1",
            "secretproviderclasses",
            NS,
            json!({
                "apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"provider": provider, "parameters": all}
            }),
        );
    }

    fn add_sync(&self, name: &str, spec: Value) {
        let mut full = json!({"secretProviderClassName": "openclaw-vault", "serviceAccountName": SA,
                              "refreshInterval": "1s"});
        full.as_object_mut()
            .unwrap()
            .extend(spec.as_object().unwrap().clone());
        self.kube.put(
            "apis/openclaw.io/v1alpha1",
            "secretsyncs",
            NS,
            json!({"apiVersion": "openclaw.io/v1alpha1", "kind": "SecretSync",
                   "metadata": {"name": name, "namespace": NS}, "spec": full}),
        );
    }

    fn add_deployment(&self, name: &str, annotations: Value, secret: &str) {
        self.kube.put(
            "apis/apps/v1",
            "deployments",
            NS,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": NS, "annotations": annotations},
                "spec": {
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": "gateway", "image": "openclaw:latest",
                                 "envFrom": [{"secretRef": {"name": secret}}]}]}}}
            }),
        );
    }

    fn secret(&self, name: &str) -> Option<Value> {
        self.kube.get("secrets", NS, name)
    }

    /// The Secret's data, decoded.
    fn data(&self, name: &str) -> Option<std::collections::BTreeMap<String, String>> {
        let secret = self.secret(name)?;
        let data = secret["data"].as_object().cloned().unwrap_or_default();
        Some(
            data.into_iter()
                .map(|(k, v)| {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(v.as_str().unwrap_or_default())
                        .expect("base64 data");
                    (k, String::from_utf8(bytes).expect("utf-8"))
                })
                .collect(),
        )
    }

    fn status(&self, name: &str) -> Value {
        self.kube
            .get("secretsyncs", NS, name)
            .map(|s| s["status"].clone())
            .unwrap_or(Value::Null)
    }

    /// The SecretSync's Ready condition as (status, reason).
    fn ready(&self, name: &str) -> (String, String) {
        let status = self.status(name);
        let ready = status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready")
            .cloned()
            .unwrap_or(Value::Null);
        (
            ready["status"].as_str().unwrap_or("").to_string(),
            ready["reason"].as_str().unwrap_or("").to_string(),
        )
    }

    fn rollout_annotation(&self, deployment: &str) -> Option<String> {
        let d = self.kube.get("deployments", NS, deployment)?;
        d["spec"]["template"]["metadata"]["annotations"]["openclaw.io/secret-version"]
            .as_str()
            .map(String::from)
    }

    fn generation(&self, deployment: &str) -> i64 {
        self.kube
            .get("deployments", NS, deployment)
            .expect("deployment")["metadata"]["generation"]
            .as_i64()
            .unwrap_or(0)
    }

    /// Events with this reason on SecretSync `name`.
    fn events(&self, name: &str, reason: &str) -> Vec<Value> {
        self.kube
            .events(NS)
            .into_iter()
            .filter(|e| e["involvedObject"]["name"] == name && e["reason"] == reason)
            .collect()
    }

    async fn rotate_anthropic_key(&self, value: &str) {
        self.bao()
            .post(
                "secret/data/openclaw",
                json!({"data": {"OPENCLAW_GATEWAY_TOKEN": openbao::GATEWAY_TOKEN,
                   "ANTHROPIC_API_KEY": value, "OPENAI_API_KEY": openbao::OPENAI_KEY}}),
            )
            .await;
    }

    /// Every value, token and key the tests hold, for leak checks.
    fn assert_no_value_in(&self, what: &str, text: &str) {
        for value in [
            openbao::GATEWAY_TOKEN,
            openbao::ANTHROPIC_KEY,
            openbao::OPENAI_KEY,
            ROTATED_KEY,
        ] {
            assert!(!text.contains(value), "{what} holds a secret value");
            let encoded = base64::engine::general_purpose::STANDARD.encode(value);
            assert!(
                !text.contains(&encoded),
                "{what} holds a base64 secret value"
            );
        }
    }
}

/// Waits (bounded) until `done` holds; panics with `what` and the controller's log otherwise.
async fn wait_for(what: &str, within: Duration, logs: &[&SyncProcess], done: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs: Vec<String> = logs.iter().map(|p| p.logs()).collect();
    panic!(
        "timed out waiting for {what}; logs:\n{}",
        logs.join("\n----\n")
    );
}

fn expected_keys(anthropic: &str) -> std::collections::BTreeMap<String, String> {
    [
        ("OPENCLAW_GATEWAY_TOKEN", openbao::GATEWAY_TOKEN),
        ("ANTHROPIC_API_KEY", anthropic),
        ("OPENAI_API_KEY", openbao::OPENAI_KEY),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The seed flow: the Secret is created with the three keys and Ready/SecretSynced; polls that find
/// nothing new write nothing; a rotated key appears after the next poll and the Deployment (and a
/// Reloader-annotated one) is rolled exactly once; nothing anywhere holds a value.
#[tokio::test]
async fn the_seed_flow_creates_rotates_and_rolls_once() {
    let world = World::start().await;
    world.add_deployment("openclaw-gateway", json!({}), "openclaw-secrets");
    world.add_deployment(
        "reloaded",
        json!({"reloader.stakater.com/auto": "true"}),
        "openclaw-secrets",
    );
    world.add_deployment(
        "bystander",
        json!({"reloader.stakater.com/auto": "true"}),
        "other-secret",
    );
    world.add_sync(
        "openclaw-secrets",
        json!({"rollout": {"targets": [{"kind": "Deployment", "name": "openclaw-gateway"}]}}),
    );
    let controller = world.controller("sync-a", &[]);
    wait_for(
        "the Secret and Ready",
        Duration::from_secs(30),
        &[&controller],
        || {
            world.data("openclaw-secrets") == Some(expected_keys(openbao::ANTHROPIC_KEY))
                && world.ready("openclaw-secrets") == ("True".into(), "SecretSynced".into())
        },
    )
    .await;
    let secret = world.secret("openclaw-secrets").unwrap();
    let sync = world
        .kube
        .get("secretsyncs", NS, "openclaw-secrets")
        .unwrap();
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(secret["metadata"]["labels"]["openclaw.io/managed"], "true");
    assert_eq!(
        secret["metadata"]["labels"]["openclaw.io/sync"],
        "openclaw-secrets"
    );
    let owner = &secret["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "SecretSync");
    assert_eq!(owner["uid"], sync["metadata"]["uid"]);
    assert_eq!(owner["controller"], true);
    let managers: Vec<&str> = secret["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert_eq!(managers, ["openclaw-sync"]);
    let status = world.status("openclaw-secrets");
    let hash = status["syncedHash"].as_str().unwrap().to_string();
    assert!(hash.starts_with("v1:"), "{hash}");
    assert_eq!(status["objectVersions"].as_array().unwrap().len(), 3);
    assert_eq!(status["observedGeneration"], sync["metadata"]["generation"]);
    assert!(status["lastSyncTime"].is_string());
    assert_eq!(world.events("openclaw-secrets", "Synced").len(), 1);
    // A first creation restarts nothing.
    for deployment in ["openclaw-gateway", "reloaded", "bystander"] {
        assert_eq!(world.rollout_annotation(deployment), None, "{deployment}");
    }

    // Polls every second that find nothing new write nothing at all.
    let writes = world.kube.writes();
    let unchanged = controller.metric("openclaw_sync_reconcile_total{result=\"unchanged\"}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        world.kube.writes(),
        writes,
        "writes while nothing changed: {:?}",
        world.kube.requests()
    );
    assert!(
        controller.metric("openclaw_sync_reconcile_total{result=\"unchanged\"}") >= unchanged + 2.0
    );
    // The policy grants no metadata read: refused (once more after a new login), remembered, values
    // read instead.
    assert!(world.bao().count("read", "secret/metadata/openclaw") <= 2);

    // A rotated key reaches the Secret after a poll; the workloads are rolled once, after the debounce.
    let generations = (
        world.generation("openclaw-gateway"),
        world.generation("reloaded"),
        world.generation("bystander"),
    );
    world.rotate_anthropic_key(ROTATED_KEY).await;
    wait_for(
        "the rotated key and the rollouts",
        Duration::from_secs(30),
        &[&controller],
        || {
            // The status comes after every rollout patch and event of that reconcile.
            let status = world.status("openclaw-secrets");
            world.data("openclaw-secrets") == Some(expected_keys(ROTATED_KEY))
                && world.rollout_annotation("openclaw-gateway").is_some()
                && world.rollout_annotation("reloaded").is_some()
                && status["syncedHash"].as_str() != Some(hash.as_str())
                && status["rolledOutHash"] == status["syncedHash"]
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let new_hash = world.status("openclaw-secrets")["syncedHash"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new_hash, hash);
    assert_eq!(world.status("openclaw-secrets")["rolledOutHash"], new_hash);
    for deployment in ["openclaw-gateway", "reloaded"] {
        assert_eq!(
            world.rollout_annotation(deployment).as_deref(),
            Some(new_hash.as_str())
        );
    }
    assert_eq!(world.generation("openclaw-gateway"), generations.0 + 1);
    assert_eq!(world.generation("reloaded"), generations.1 + 1);
    assert_eq!(world.generation("bystander"), generations.2);
    assert_eq!(world.rollout_annotation("bystander"), None);
    assert_eq!(world.events("openclaw-secrets", "Updated").len(), 1);
    assert_eq!(
        world.events("openclaw-secrets", "RolloutTriggered").len(),
        2
    );
    assert!(controller.metric("openclaw_sync_rollouts_total") >= 2.0);

    // No value in status, events, annotations, metrics or logs.
    let everything = format!(
        "{}\n{}\n{}\n{}",
        serde_json::to_string(&world.kube.get("secretsyncs", NS, "openclaw-secrets")).unwrap(),
        serde_json::to_string(&world.kube.events(NS)).unwrap(),
        serde_json::to_string(&world.kube.list("deployments", NS)).unwrap(),
        controller.http_get("/metrics").1,
    );
    world.assert_no_value_in("status, events, workloads or metrics", &everything);
    world.assert_no_value_in("the controller's log", &controller.logs());
}

/// A controller with another hash key (a key Secret or file replaced) rewrites the status under the new
/// key but restarts nothing, since the backend's versions say the data did not change. An optional
/// object the backend does not have is not "gone" (Retain stays Ready). A spec edit alone (Owner to
/// Orphan) is applied: the ownerReference goes, and the Secret outlives its SecretSync.
#[tokio::test]
async fn a_new_hash_key_restarts_nothing_and_spec_edits_apply() {
    let world = World::start().await;
    world.add_class(
        "with-optional",
        &format!(
            "{VAULT_OBJECTS}- objectName: EXTRA_KEY\n  secretPath: secret/data/openclaw\n  \
             secretKey: EXTRA_KEY\n  optional: true\n"
        ),
    );
    world.add_deployment("openclaw-gateway", json!({}), "keys");
    world.add_sync(
        "keys",
        json!({"secretProviderClassName": "with-optional",
               "rollout": {"targets": [{"kind": "Deployment", "name": "openclaw-gateway"}]}}),
    );
    let mut first = world.controller_with_key("sync-a", "key-a");
    let keys = expected_keys(openbao::ANTHROPIC_KEY);
    wait_for("the first sync", Duration::from_secs(30), &[&first], || {
        world.data("keys") == Some(keys.clone())
            && world.ready("keys") == ("True".into(), "SecretSynced".into())
    })
    .await;
    let hash = world.status("keys")["syncedHash"]
        .as_str()
        .unwrap()
        .to_string();
    let generation = world.generation("openclaw-gateway");
    first.terminate();
    let second = world.controller_with_key("sync-b", "key-b");
    wait_for(
        "the status under the new key",
        Duration::from_secs(30),
        &[&second],
        || world.status("keys")["syncedHash"].as_str() != Some(hash.as_str()),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(world.generation("openclaw-gateway"), generation);
    assert_eq!(world.rollout_annotation("openclaw-gateway"), None);
    assert!(world.events("keys", "RolloutTriggered").is_empty());
    let new_hash = world.status("keys")["syncedHash"].clone();
    assert_eq!(world.status("keys")["rolledOutHash"], new_hash);
    assert_eq!(world.data("keys"), Some(keys.clone()));

    // Owner to Orphan, with the same data: the ownerReference goes at once.
    let mut sync = world.kube.get("secretsyncs", NS, "keys").unwrap();
    sync["spec"]["target"] = json!({"creationPolicy": "Orphan"});
    world
        .kube
        .put("apis/openclaw.io/v1alpha1", "secretsyncs", NS, sync);
    wait_for(
        "the ownerReference removed",
        Duration::from_secs(30),
        &[&second],
        || world.secret("keys").unwrap()["metadata"]["ownerReferences"].is_null(),
    )
    .await;
    world.kube.delete("secretsyncs", NS, "keys");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(world.data("keys"), Some(keys));
}

/// Cheap polls: with read access to KV v2 metadata, a poll asks for the current version and reads no
/// value while it is the synced one; a new version is read and written at once. Without that access
/// (the seed flow's policy), the one refused metadata read is remembered and values are read instead.
#[tokio::test]
async fn polls_compare_versions_before_reading_values() {
    let world = World::start().await;
    world
        .bao()
        .post(
            "sys/policies/acl/openclaw",
            json!({"policy": r#"
                path "secret/data/openclaw" { capabilities = ["read"] }
                path "secret/metadata/openclaw" { capabilities = ["read"] }
            "#}),
        )
        .await;
    world.add_sync("keys", json!({}));
    let controller = world.controller("sync-a", &[]);
    wait_for(
        "the first sync",
        Duration::from_secs(30),
        &[&controller],
        || {
            world.data("keys") == Some(expected_keys(openbao::ANTHROPIC_KEY))
                && world.ready("keys") == ("True".into(), "SecretSynced".into())
        },
    )
    .await;
    let bao = world.bao();
    let (data_reads, metadata_reads) = (
        bao.count("read", "secret/data/openclaw"),
        bao.count("read", "secret/metadata/openclaw"),
    );
    let writes = world.kube.writes();
    let unchanged = controller.metric("openclaw_sync_reconcile_total{result=\"unchanged\"}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Polls within the value cache's TTL (5 s) share one metadata read.
    assert!(
        bao.count("read", "secret/metadata/openclaw") > metadata_reads,
        "polls asked for versions"
    );
    assert!(
        controller.metric("openclaw_sync_reconcile_total{result=\"unchanged\"}") >= unchanged + 2.0
    );
    assert_eq!(
        bao.count("read", "secret/data/openclaw"),
        data_reads,
        "no value was read while the version held"
    );
    assert_eq!(world.kube.writes(), writes);
    let old_hash = world.status("keys")["syncedHash"].clone();
    world.rotate_anthropic_key(ROTATED_KEY).await;
    wait_for(
        "the new version",
        Duration::from_secs(15),
        &[&controller],
        || world.data("keys") == Some(expected_keys(ROTATED_KEY)),
    )
    .await;
    // An edit of the SecretProviderClass (another key of the same secret, at the same version) is
    // read at the next poll, not hidden by the unchanged version (once the sync has settled again).
    // The Secret is written before the status: the new hash must be there, rolled out.
    wait_for("settled", Duration::from_secs(15), &[&controller], || {
        let status = world.status("keys");
        status["syncedHash"] != old_hash && status["rolledOutHash"] == status["syncedHash"]
    })
    .await;
    let data_reads = bao.count("read", "secret/data/openclaw");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(bao.count("read", "secret/data/openclaw"), data_reads);
    world.add_class(
        "openclaw-vault",
        &VAULT_OBJECTS.replace("secretKey: ANTHROPIC_API_KEY", "secretKey: OPENAI_API_KEY"),
    );
    let mut remapped = expected_keys(ROTATED_KEY);
    remapped.insert("ANTHROPIC_API_KEY".into(), openbao::OPENAI_KEY.into());
    wait_for(
        "the edited SecretProviderClass",
        Duration::from_secs(15),
        &[&controller],
        || world.data("keys") == Some(remapped.clone()),
    )
    .await;
}

/// The target is checked again right before the write, and the write is conditional on it: a Secret
/// someone else creates while a (slow) fetch runs is not taken over.
#[tokio::test]
async fn a_secret_created_during_a_fetch_is_not_taken_over() {
    let world = World::start().await;
    let hostile = support::hostile_vault::HostileVault::start("3600").await;
    world.put_class(
        "slow",
        "openclaw",
        json!({"vaultAddress": hostile.address,
               "objects": "- {objectName: USER, secretPath: database/creds/app, secretKey: username}\n"}),
    );
    world.add_sync("late", json!({"secretProviderClassName": "slow"}));
    let controller = world.controller("sync-a", &["--vault-allowed-addresses", &hostile.address]);
    wait_for(
        "the slow read",
        Duration::from_secs(30),
        &[&controller],
        || hostile.requests("database/creds/app") > 0,
    )
    .await;
    let theirs = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "late", "namespace": NS, "labels": {"app": "theirs"}},
        "data": {"USER": "dGhlaXJz"}});
    world.kube.put("api/v1", "secrets", NS, theirs);
    let before = world.secret("late").unwrap();
    wait_for(
        "the refusal",
        Duration::from_secs(30),
        &[&controller],
        || world.ready("late") == ("False".into(), "TargetOwnedElsewhere".into()),
    )
    .await;
    assert_eq!(world.secret("late").unwrap(), before);
    assert_eq!(
        world
            .kube
            .count("PATCH /api/v1/namespaces/openclaw/secrets/late"),
        0
    );
}

/// A throttling endpoint holds its own SecretSyncs only: once it answers "slow down", none of its
/// SecretSyncs asks it again before the throttle window ends (one reconcile per window, with one
/// reconcile at a time), while a SecretSync on another Vault keeps syncing, rotation included.
#[tokio::test]
async fn a_throttling_backend_slows_only_its_own_secret_syncs() {
    let world = World::start().await;
    let hostile = support::hostile_vault::HostileVault::start("3600").await;
    world.put_class(
        "throttling",
        "openclaw",
        json!({"vaultAddress": hostile.address,
               "objects": "- {objectName: k, secretPath: secret/throttled, secretKey: k}\n"}),
    );
    for name in ["slow-a", "slow-b", "slow-c"] {
        world.add_sync(name, json!({"secretProviderClassName": "throttling"}));
    }
    world.add_sync("keys", json!({}));
    let controller = world.controller(
        "sync-a",
        &[
            "--vault-allowed-addresses",
            &hostile.address,
            "--sync-concurrency",
            "1",
        ],
    );
    wait_for(
        "the throttled and the synced",
        Duration::from_secs(30),
        &[&controller],
        || {
            world.data("keys") == Some(expected_keys(openbao::ANTHROPIC_KEY))
                && ["slow-a", "slow-b", "slow-c"]
                    .iter()
                    .all(|n| world.ready(n) == ("False".into(), "BackendThrottled".into()))
        },
    )
    .await;
    world.rotate_anthropic_key(ROTATED_KEY).await;
    wait_for(
        "the rotation on the other Vault",
        Duration::from_secs(15),
        &[&controller],
        || world.data("keys") == Some(expected_keys(ROTATED_KEY)),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let logs = controller.logs();
    let throttled_reconciles = logs
        .lines()
        .filter(|l| l.contains("\"sync failed\"") && l.contains("BackendThrottled"))
        .count();
    let windows = logs
        .lines()
        .filter(|l| l.contains("the backend throttles"))
        .count();
    assert!(windows >= 2, "windows: {windows}");
    assert!(
        throttled_reconciles <= windows + 1,
        "{throttled_reconciles} throttled reconciles in {windows} windows"
    );
    assert!(controller.metric("openclaw_sync_backend_throttled_total{backend=\"vault\"}") >= 2.0);
    assert_eq!(world.ready("keys"), ("True".into(), "SecretSynced".into()));
}

/// Namespaces take turns: one namespace with many slow SecretSyncs due at once does not hold up
/// another's (two reconciles at a time; each of the 30 slow ones takes 300 ms).
#[tokio::test]
async fn a_busy_namespace_does_not_hold_up_another() {
    let world = World::start().await;
    let hostile = support::hostile_vault::HostileVault::start("3600").await;
    let noisy = "noisy";
    world.kube.add_service_account(noisy, SA, &[]);
    world.kube.put(
        "apis/secrets-store.csi.x-k8s.io/v1",
        "secretproviderclasses",
        noisy,
        json!({"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
               "metadata": {"name": "slow", "namespace": noisy},
               "spec": {"provider": "openclaw", "parameters": {
                   "backend": "vault", "roleName": "openclaw", "vaultAuthMountPath": "jwt",
                   "vaultAddress": hostile.address,
                   "objects": "- {objectName: USER, secretPath: database/creds/app, secretKey: username}\n"}}}),
    );
    let names: Vec<String> = (0..30).map(|i| format!("slow-{i:02}")).collect();
    for name in &names {
        world.kube.put(
            "apis/openclaw.io/v1alpha1",
            "secretsyncs",
            noisy,
            json!({"apiVersion": "openclaw.io/v1alpha1", "kind": "SecretSync",
                   "metadata": {"name": name, "namespace": noisy},
                   "spec": {"secretProviderClassName": "slow", "serviceAccountName": SA,
                            "refreshInterval": "1h"}}),
        );
    }
    world.add_sync("keys", json!({"refreshInterval": "1h"}));
    let controller = world.controller(
        "sync-a",
        &[
            "--vault-allowed-addresses",
            &hostile.address,
            "--sync-concurrency",
            "2",
        ],
    );
    let keys = expected_keys(openbao::ANTHROPIC_KEY);
    wait_for(
        "the other namespace's sync",
        Duration::from_secs(30),
        &[&controller],
        || world.data("keys") == Some(keys.clone()),
    )
    .await;
    let slow_done = names
        .iter()
        .filter(|n| world.kube.get("secrets", noisy, n).is_some())
        .count();
    assert!(
        slow_done < 10,
        "{slow_done} of the busy namespace's 30 went first"
    );
    wait_for(
        "the busy namespace",
        Duration::from_secs(60),
        &[&controller],
        || {
            names
                .iter()
                .all(|n| world.kube.get("secrets", noisy, n).is_some())
        },
    )
    .await;
}

/// `force-sync` (ESO's annotation) refreshes at once and reads past the value cache, even with a long
/// interval and a long cache TTL.
#[tokio::test]
async fn force_sync_refreshes_now_past_the_value_cache() {
    let world = World::start().await;
    world.add_sync("keys", json!({"refreshInterval": "1h"}));
    let controller = world.controller("sync-a", &["--cache-ttl", "3600"]);
    wait_for(
        "the first sync",
        Duration::from_secs(30),
        &[&controller],
        || world.data("keys") == Some(expected_keys(openbao::ANTHROPIC_KEY)),
    )
    .await;
    world.rotate_anthropic_key(ROTATED_KEY).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        world.data("keys"),
        Some(expected_keys(openbao::ANTHROPIC_KEY)),
        "no poll is due for an hour"
    );
    let mut sync = world.kube.get("secretsyncs", NS, "keys").unwrap();
    sync["metadata"]["annotations"] = json!({"force-sync": "1764633600"});
    world
        .kube
        .put("apis/openclaw.io/v1alpha1", "secretsyncs", NS, sync);
    wait_for(
        "the forced refresh",
        Duration::from_secs(15),
        &[&controller],
        || world.data("keys") == Some(expected_keys(ROTATED_KEY)),
    )
    .await;
}

/// Owner: owned through an ownerReference, gone with the SecretSync. Orphan: no owner, kept. Merge:
/// only its keys go into an existing Secret its owner labelled, the other writer's keys stay. None:
/// status only. A Secret without the label, or another SecretSync's, is never touched.
#[tokio::test]
async fn creation_policies_and_secrets_it_must_not_touch() {
    let world = World::start().await;
    world.kube.put(
        "api/v1",
        "secrets",
        NS,
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "shared", "namespace": NS, "labels": {"openclaw.io/managed": "true"}},
               "data": {"OTHER": "b3RoZXI="}}),
    );
    world.kube.put(
        "api/v1",
        "secrets",
        NS,
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "helm-owned", "namespace": NS, "labels": {"app": "x"}},
               "data": {"OPENAI_API_KEY": "aGVsbQ=="}}),
    );
    world.add_sync("owned", json!({"target": {"creationPolicy": "Owner"}}));
    world.add_sync("orphan", json!({"target": {"creationPolicy": "Orphan"}}));
    world.add_sync(
        "merged",
        json!({"target": {"name": "shared", "creationPolicy": "Merge"}}),
    );
    world.add_sync("status-only", json!({"target": {"creationPolicy": "None"}}));
    world.add_sync(
        "intruder",
        json!({"target": {"name": "helm-owned", "creationPolicy": "Owner"}}),
    );
    world.add_sync(
        "merge-missing",
        json!({"target": {"name": "absent", "creationPolicy": "Merge"}}),
    );
    let helm_before = world.secret("helm-owned").unwrap();
    let controller = world.controller("sync-a", &[]);
    let keys = expected_keys(openbao::ANTHROPIC_KEY);
    let mut merged = keys.clone();
    merged.insert("OTHER".into(), "other".into());
    wait_for(
        "every policy applied",
        Duration::from_secs(30),
        &[&controller],
        || {
            world.data("owned") == Some(keys.clone())
                && world.data("orphan") == Some(keys.clone())
                && world.data("shared") == Some(merged.clone())
                && world.ready("status-only") == ("True".into(), "SecretSynced".into())
                && world.ready("intruder") == ("False".into(), "TargetOwnedElsewhere".into())
                && world.ready("merge-missing") == ("False".into(), "TargetNotFound".into())
        },
    )
    .await;
    // A second SecretSync naming a Secret another one writes is refused, and changes nothing.
    let owned_before = world.secret("owned").unwrap();
    world.add_sync(
        "second-writer",
        json!({"target": {"name": "owned", "creationPolicy": "Orphan"}}),
    );
    wait_for(
        "the second writer refused",
        Duration::from_secs(10),
        &[&controller],
        || world.ready("second-writer") == ("False".into(), "TargetOwnedElsewhere".into()),
    )
    .await;
    assert_eq!(
        world.secret("owned").unwrap()["metadata"]["resourceVersion"],
        owned_before["metadata"]["resourceVersion"]
    );
    assert!(world.secret("status-only").is_none());
    assert!(world.secret("absent").is_none());
    assert!(world.status("status-only")["syncedHash"].is_string());
    assert!(world.secret("orphan").unwrap()["metadata"]["ownerReferences"].is_null());
    assert_eq!(world.secret("helm-owned").unwrap(), helm_before);
    // The refusal is reported once, not on every poll.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(world.events("intruder", "SyncFailed").len(), 1);
    assert_eq!(world.secret("helm-owned").unwrap(), helm_before);

    // The Owner Secret goes with its SecretSync; the Orphan one stays; the merged keys stay too.
    world.kube.delete("secretsyncs", NS, "owned");
    world.kube.delete("secretsyncs", NS, "orphan");
    wait_for(
        "garbage collection",
        Duration::from_secs(10),
        &[&controller],
        || world.secret("owned").is_none(),
    )
    .await;
    assert_eq!(world.data("orphan"), Some(keys));
    // A user edit of a key the controller owns is repaired (drift, seen through the metadata watch).
    let mut shared = world.secret("shared").unwrap();
    shared["data"]["ANTHROPIC_API_KEY"] = json!("dGFtcGVyZWQ=");
    world.kube.put("api/v1", "secrets", NS, shared);
    wait_for(
        "the drift repaired",
        Duration::from_secs(10),
        &[&controller],
        || world.data("shared") == Some(merged.clone()),
    )
    .await;
}

/// When an object is gone from the backend: Retain keeps the last data and says so, Delete removes the
/// Secret, Merge removes only the gone key.
#[tokio::test]
async fn deletion_policies_when_an_object_is_gone() {
    let world = World::start().await;
    world
        .bao()
        .post(
            "sys/policies/acl/openclaw",
            json!({"policy": r#"path "secret/data/*" { capabilities = ["read"] }"#}),
        )
        .await;
    world
        .bao()
        .post(
            "secret/data/rotating",
            json!({"data": {"A": "a-VALUE", "B": "b-VALUE"}}),
        )
        .await;
    world.add_class(
        "two-keys",
        "- {objectName: A, secretPath: secret/data/rotating, secretKey: A}\n\
         - {objectName: B, secretPath: secret/data/rotating, secretKey: B}\n",
    );
    for (name, policy) in [
        ("retain", "Retain"),
        ("delete", "Delete"),
        ("merge", "Merge"),
    ] {
        world.add_sync(
            name,
            json!({"secretProviderClassName": "two-keys",
                   "target": {"creationPolicy": "Owner", "deletionPolicy": policy}}),
        );
    }
    let controller = world.controller("sync-a", &["--cache-ttl", "0"]);
    let both: std::collections::BTreeMap<String, String> = [
        ("A".into(), "a-VALUE".into()),
        ("B".into(), "b-VALUE".into()),
    ]
    .into();
    wait_for(
        "the first syncs",
        Duration::from_secs(30),
        &[&controller],
        || {
            ["retain", "delete", "merge"]
                .iter()
                .all(|n| world.data(n) == Some(both.clone()))
        },
    )
    .await;
    world
        .bao()
        .post("secret/data/rotating", json!({"data": {"A": "a-VALUE"}}))
        .await;
    let only_a: std::collections::BTreeMap<String, String> =
        [("A".into(), "a-VALUE".into())].into();
    wait_for(
        "the policies applied to one gone key",
        Duration::from_secs(30),
        &[&controller],
        || {
            // The status follows the Secret write, so both are waited for.
            world.ready("retain") == ("False".into(), "SourceNotFound".into())
                && ["delete", "merge"].iter().all(|name| {
                    world.data(name) == Some(only_a.clone())
                        && world.ready(name) == ("True".into(), "SecretSynced".into())
                        && world.status(name)["conditions"][0]["message"]
                            .as_str()
                            .is_some_and(|message| message.contains("removed B"))
                })
        },
    )
    .await;
    assert_eq!(world.data("retain"), Some(both.clone()));
    // Every object gone: Delete removes the Secret, Merge keeps it without its keys, Retain keeps all.
    world
        .bao()
        .api_in(
            None,
            reqwest::Method::DELETE,
            "secret/metadata/rotating",
            json!({}),
        )
        .await;
    wait_for(
        "the policies applied to every key gone",
        Duration::from_secs(30),
        &[&controller],
        || {
            world.secret("delete").is_none()
                && world.ready("delete") == ("False".into(), "SecretDeleted".into())
                && world.data("merge") == Some(Default::default())
                && world.status("retain")["conditions"][0]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("keys A, B"))
        },
    )
    .await;
    assert_eq!(world.data("retain"), Some(both));
    assert_eq!(world.ready("retain").1, "SourceNotFound");
    assert_eq!(world.events("delete", "Deleted").len(), 1);
}

/// Two replicas, one Lease: the leader is killed (`kill -9`) right after a rotation; the standby takes
/// over, and every Secret converges and every Deployment is rolled exactly once.
#[tokio::test]
async fn a_killed_leader_is_replaced_and_nothing_is_lost_or_doubled() {
    let world = World::start().await;
    let names: Vec<String> = (0..10).map(|i| format!("app-{i}")).collect();
    for name in &names {
        world.add_deployment(name, json!({}), name);
        world.add_sync(
            name,
            json!({"rollout": {"targets": [{"kind": "Deployment", "name": name}]}}),
        );
    }
    let mut first = world.controller("sync-a", &[]);
    wait_for("sync-a to lead", Duration::from_secs(10), &[&first], || {
        first.leads()
    })
    .await;
    let second = world.controller("sync-b", &[]);
    let keys = expected_keys(openbao::ANTHROPIC_KEY);
    wait_for(
        "the first syncs",
        Duration::from_secs(30),
        &[&first],
        || names.iter().all(|n| world.data(n) == Some(keys.clone())),
    )
    .await;
    assert!(!second.leads(), "one leader");
    let (status, body) = second.http_get("/readyz");
    assert_eq!(status, 200, "a standby is ready: {body}");
    let generations: Vec<i64> = names.iter().map(|n| world.generation(n)).collect();
    world.rotate_anthropic_key(ROTATED_KEY).await;
    // Let the leader get part of the way.
    wait_for("some rotation", Duration::from_secs(30), &[&first], || {
        names
            .iter()
            .any(|n| world.data(n) == Some(expected_keys(ROTATED_KEY)))
    })
    .await;
    first.kill();
    let rotated = expected_keys(ROTATED_KEY);
    wait_for(
        "the standby to take over and converge",
        Duration::from_secs(60),
        &[&second],
        || {
            second.leads()
                && names.iter().all(|n| {
                    world.data(n) == Some(rotated.clone())
                        && world.rollout_annotation(n).as_deref()
                            == world.status(n)["syncedHash"].as_str()
                })
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (name, before) in names.iter().zip(generations) {
        assert_eq!(world.generation(name), before + 1, "{name} rolled once");
        assert!(world.events(name, "RolloutTriggered").len() <= 1, "{name}");
        assert_eq!(world.data(name), Some(rotated.clone()), "{name}");
    }
    let lease = world
        .kube
        .get("leases", "openclaw-system", "openclaw-sync")
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "sync-b");
}

/// OpenBao goes away: Ready=False says so, the Secret keeps its data; it comes back: the controller
/// recovers without a restart.
#[tokio::test]
async fn the_backend_going_away_keeps_the_last_data_and_recovers() {
    let world = World::start().await;
    world.add_sync("keys", json!({}));
    let controller = world.controller("sync-a", &["--cache-ttl", "0"]);
    let keys = expected_keys(openbao::ANTHROPIC_KEY);
    wait_for(
        "the first sync",
        Duration::from_secs(30),
        &[&controller],
        || world.data("keys") == Some(keys.clone()),
    )
    .await;
    let mut world = world;
    let (bao_dir, port) = world.bao.take().expect("OpenBao").stop();
    wait_for(
        "Ready=False",
        Duration::from_secs(30),
        &[&controller],
        || world.ready("keys") == ("False".into(), "BackendUnavailable".into()),
    )
    .await;
    assert_eq!(world.data("keys"), Some(keys.clone()));
    let back = OpenBao::start_in(bao_dir, port).await;
    back.configure(&world.issuer.public_pem(), &world.review.url)
        .await;
    wait_for("recovery", Duration::from_secs(60), &[&controller], || {
        world.ready("keys") == ("True".into(), "SecretSynced".into())
    })
    .await;
    assert_eq!(world.data("keys"), Some(keys));
}

/// A watch whose version the API server no longer keeps (`410 Gone`) makes the controller list again:
/// a SecretSync created while its watch was down is still synced, and nothing already synced is
/// rewritten. Watches the API server cannot serve make `/readyz` fail until they are back.
#[tokio::test]
async fn an_expired_watch_lists_again_and_misses_nothing() {
    let world = World::start().await;
    world.add_sync("before", json!({"refreshInterval": "1h"}));
    let controller = world.controller("sync-a", &[]);
    let keys = expected_keys(openbao::ANTHROPIC_KEY);
    wait_for(
        "the first sync",
        Duration::from_secs(30),
        &[&controller],
        || world.data("before") == Some(keys.clone()),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let secret_writes = world
        .kube
        .count("PATCH /api/v1/namespaces/openclaw/secrets/before");
    // The watches go down; a SecretSync is made while none is open; the history is compacted.
    world.kube.pause_watches();
    world.kube.close_watches();
    world.add_sync("after", json!({"refreshInterval": "1h"}));
    world.kube.compact();
    world.kube.resume_watches();
    wait_for(
        "the SecretSync made during the gap",
        Duration::from_secs(30),
        &[&controller],
        || world.data("after") == Some(keys.clone()),
    )
    .await;
    // The Secrets' watch may have resumed at a newer version than the compaction (no 410 for it); the
    // SecretSyncs' watch cannot have, since "after" came after its last event.
    assert!(
        controller
            .logs()
            .lines()
            .any(|l| l.contains("listing again") && l.contains("secretsyncs")),
        "the controller saw the 410: {}",
        controller.logs()
    );
    // A wrong rerun of "before" would run beside "after"'s first sync: give it time to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        world
            .kube
            .count("PATCH /api/v1/namespaces/openclaw/secrets/before"),
        secret_writes
    );
    // Watches that cannot be served make the leader unready until they are back.
    assert_eq!(controller.http_get("/readyz").0, 200);
    world.kube.fail_watches(true);
    world.kube.close_watches();
    wait_for("unready", Duration::from_secs(10), &[&controller], || {
        controller.http_get("/readyz").0 == 503
    })
    .await;
    world.kube.fail_watches(false);
    wait_for(
        "ready again",
        Duration::from_secs(30),
        &[&controller],
        || controller.http_get("/readyz").0 == 200,
    )
    .await;
}

/// SecretSyncs as a hostile namespace user writes them (the fake API server checks no schema, as an
/// out-of-date CRD would not): names that would change API paths, a SecretProviderClass of another
/// provider, one that smuggles kubelet's token attribute, or one asking for a token of the API server's
/// audience. Each is refused with InvalidSpec (or
/// fetches as the named account only), and nothing is minted or written for the refused ones.
#[tokio::test]
async fn hostile_secret_syncs_are_refused_without_side_effects() {
    let world = World::start().await;
    world.put_class("official-vault", "vault", json!({"objects": VAULT_OBJECTS}));
    let forged = world
        .issuer
        .token("system:serviceaccount:openclaw:admin", &["vault"]);
    world.put_class(
        "smuggler",
        "openclaw",
        json!({"objects": VAULT_OBJECTS,
               "csi.storage.k8s.io/serviceAccount.tokens":
                   support::identity::tokens_attribute("vault", &forged),
               "csi.storage.k8s.io/serviceAccount.name": "admin"}),
    );
    let hostile = [
        (
            "path-sa",
            json!({"serviceAccountName": "x/../../secrets/y"}),
        ),
        ("path-class", json!({"secretProviderClassName": "../x"})),
        ("path-target", json!({"target": {"name": "a/../b"}})),
        (
            "path-rollout",
            json!({"rollout": {"targets": [{"kind": "Deployment", "name": "../../x"}]}}),
        ),
        (
            "other-provider",
            json!({"secretProviderClassName": "official-vault"}),
        ),
        ("bad-interval", json!({"refreshInterval": "soon"})),
        (
            "delete-orphan",
            json!({"target": {"creationPolicy": "Orphan", "deletionPolicy": "Delete"}}),
        ),
    ];
    for (name, spec) in &hostile {
        world.add_sync(name, spec.clone());
    }
    world.add_sync(
        "smuggled",
        json!({"secretProviderClassName": "smuggler", "serviceAccountName": "nobody"}),
    );
    // A token for the API server's audience would be the account's API credential.
    world.put_class(
        "api-audience",
        "openclaw",
        json!({"audience": "https://kubernetes.default.svc.cluster.local", "objects": VAULT_OBJECTS}),
    );
    world.add_sync(
        "api-token",
        json!({"secretProviderClassName": "api-audience"}),
    );
    let controller = world.controller("sync-a", &[]);
    wait_for(
        "every refusal",
        Duration::from_secs(30),
        &[&controller],
        || {
            hostile
                .iter()
                .all(|(name, _)| world.ready(name) == ("False".into(), "InvalidSpec".into()))
                && world.ready("smuggled").0 == "False"
                && world.ready("api-token") == ("False".into(), "AudienceNotAllowed".into())
        },
    )
    .await;
    // The smuggled token and account name were dropped: the fetch was as `nobody`, which does not
    // exist, so nothing could be minted or read.
    assert!(
        world.status("smuggled")["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nobody"),
        "{}",
        world.status("smuggled")
    );
    let minted = world.kube.state.lock().unwrap().minted.clone();
    assert!(minted.is_empty(), "{minted:?}");
    assert!(world.kube.list("secrets", NS).is_empty());
    assert_eq!(world.kube.count("PATCH /api/v1"), 0);
    assert!(
        world.kube.requests().iter().all(|r| !r.contains("..")),
        "no request path was built from a hostile name"
    );
    world.assert_no_value_in("the controller's log", &controller.logs());
    assert!(
        !controller.logs().contains(&forged),
        "the forged token is not logged"
    );
}

/// The shipped seed example (deploy/examples/openclaw-sync.yaml) works as its comments say: its
/// ServiceAccount, SecretProviderClass, SecretSync and Deployment, with the example Vault policy, give
/// `openclaw-secrets` the three keys; a rotation reaches it at `force-sync` and restarts the gateway
/// once. One change: the class logs in at the test's `jwt` auth mount, since OpenBao's `kubernetes` mount
/// here cannot review tokens the fake API server mints.
#[tokio::test]
async fn the_seed_example_syncs_and_restarts_the_gateway() {
    let world = World::start().await;
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples");
    let policy = std::fs::read_to_string(examples.join("openclaw-vault-policy.hcl")).unwrap();
    world
        .bao()
        .post("sys/policies/acl/openclaw", json!({"policy": policy}))
        .await;
    let text = std::fs::read_to_string(examples.join("openclaw-sync.yaml")).unwrap();
    let objects: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    for mut object in objects {
        let (group, plural) = match object["kind"].as_str().unwrap() {
            "ServiceAccount" => continue, // World has it
            "SecretProviderClass" => {
                object["spec"]["parameters"]["vaultAuthMountPath"] = json!("jwt");
                (
                    "apis/secrets-store.csi.x-k8s.io/v1",
                    "secretproviderclasses",
                )
            }
            "SecretSync" => ("apis/openclaw.io/v1alpha1", "secretsyncs"),
            "Deployment" => ("apis/apps/v1", "deployments"),
            other => panic!("the example has a {other}"),
        };
        assert_eq!(object["metadata"]["namespace"], NS);
        world.kube.put(group, plural, NS, object);
    }
    let controller = world.controller("sync-a", &[]);
    wait_for(
        "the seed sync",
        Duration::from_secs(30),
        &[&controller],
        || {
            world.data("openclaw-secrets") == Some(expected_keys(openbao::ANTHROPIC_KEY))
                && world.ready("openclaw-secrets") == ("True".into(), "SecretSynced".into())
        },
    )
    .await;
    assert_eq!(world.rollout_annotation("openclaw-gateway"), None);
    let generation = world.generation("openclaw-gateway");
    world.rotate_anthropic_key(ROTATED_KEY).await;
    let mut sync = world
        .kube
        .get("secretsyncs", NS, "openclaw-secrets")
        .unwrap();
    sync["metadata"]["annotations"] = json!({"force-sync": "1764806400"});
    world
        .kube
        .put("apis/openclaw.io/v1alpha1", "secretsyncs", NS, sync);
    wait_for(
        "the rotation and the restart",
        Duration::from_secs(30),
        &[&controller],
        || {
            let status = world.status("openclaw-secrets");
            world.data("openclaw-secrets") == Some(expected_keys(ROTATED_KEY))
                && status["rolledOutHash"] == status["syncedHash"]
                && world.rollout_annotation("openclaw-gateway").as_ref()
                    == status["syncedHash"].as_str().map(String::from).as_ref()
        },
    )
    .await;
    assert_eq!(world.generation("openclaw-gateway"), generation + 1);
}

//! The `gcp` backend end to end: the real provider binary through its socket, the in-repo fake of
//! Google's STS, IAM Credentials, Secret Manager and Parameter Manager APIs (no emulator exists), and the
//! fake Kubernetes API for the pods' service accounts.
#![cfg(feature = "gcp")]

mod support;

use std::collections::BTreeMap;

use support::fake_gcp::{FakeGcp, FakeGcpConfig, Metadata, Who};
use support::fake_kube::FakeKube;
use support::identity::{JwtIssuer, tokens_attribute};
use support::{NAMESPACE, OPENCLAW_KEYS, Provider, attributes, raw_request};

const PROJECT: &str = "acme-prod";
const NUMBER: &str = "424242424242";
const POOL: &str = "acme-prod.svc.id.goog";
const CLUSTER_AUDIENCE: &str = "identitynamespace:acme-prod.svc.id.goog:https://container.googleapis.com/v1/projects/acme-prod/locations/us-central1/clusters/c1";
const GSA: &str = "openclaw@acme-prod.iam.gserviceaccount.com";

/// The fake Google APIs, the fake Kubernetes API (service account `openclaw`, and `impersonating`
/// annotated with a Google service account) and a provider pointed at both, on GKE settings.
struct Gcp {
    google: FakeGcp,
    kube: FakeKube,
    provider: Provider,
    issuer: JwtIssuer,
    /// The audience of the pods' tokens.
    pool: String,
}

impl Gcp {
    /// GKE settings: the pool from the provider's flags.
    async fn start(flags: &[&str]) -> Self {
        Self::start_with(CLUSTER_AUDIENCE, POOL, flags, |google| {
            vec![
                "--gcp-project".into(),
                PROJECT.into(),
                "--gcp-cluster-location".into(),
                "us-central1".into(),
                "--gcp-cluster-name".into(),
                "c1".into(),
                "--gcp-sts-endpoint".into(),
                format!("{}/v1/identitybindingtoken", google.url),
            ]
        })
        .await
    }

    /// The fake accepting `sts_audience` with pod tokens for `pool`, and a provider started with
    /// `identity(&fake)`'s flags for the pool, then `flags`.
    async fn start_with(
        sts_audience: &str,
        pool: &str,
        flags: &[&str],
        identity: impl FnOnce(&FakeGcp) -> Vec<String>,
    ) -> Self {
        let issuer = JwtIssuer::generate();
        let google = FakeGcp::start(
            FakeGcpConfig::new(sts_audience, pool)
                .project_number(PROJECT, NUMBER)
                .verify_with(&issuer.public_pem()),
        )
        .await;
        let kube = FakeKube::start();
        kube.add_service_account(NAMESPACE, "openclaw", &[]);
        kube.add_service_account(
            NAMESPACE,
            "impersonating",
            &[("iam.gke.io/gcp-service-account", GSA)],
        );
        let mut all: Vec<String> = vec![
            "--kubeconfig".into(),
            kube.kubeconfig.display().to_string(),
            "--gcp-iam-credentials-endpoint".into(),
            google.url.clone(),
            "--gcp-secretmanager-endpoint".into(),
            google.url.clone(),
            "--gcp-parametermanager-endpoint".into(),
            google.url.clone(),
            "--gcp-metadata-endpoint".into(),
            google.url.clone(),
        ];
        all.extend(identity(&google));
        if !flags.contains(&"--cache-ttl") {
            all.extend(["--cache-ttl".into(), "0".into()]);
        }
        all.extend(flags.iter().map(|f| f.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let provider = Provider::start_with_env(&all, &[("NO_PROXY", "127.0.0.1")]);
        Self {
            google,
            kube,
            provider,
            issuer,
            pool: pool.to_string(),
        }
    }

    /// The three OpenClaw keys, one secret each, readable by service account `openclaw`.
    fn seed_openclaw_keys(&self) {
        for (name, value) in OPENCLAW_KEYS {
            self.google
                .put_secret_version(PROJECT, None, name, value.as_bytes());
            self.google
                .grant_secret(PROJECT, None, name, Who::pod(NAMESPACE, "openclaw"));
        }
    }

    /// A mount of `secrets` by a pod of `account`, with its own token for the pool.
    async fn mount(
        &self,
        account: &str,
        secrets: &str,
        extra: &[(&str, &str)],
    ) -> Result<Mounted, tonic::Status> {
        self.mount_with(account, account, secrets, extra, &[]).await
    }

    /// A mount by a pod of `account` presenting `token_of`'s token, telling the versions it holds.
    async fn mount_with(
        &self,
        account: &str,
        token_of: &str,
        secrets: &str,
        extra: &[(&str, &str)],
        held: &[(&str, &str)],
    ) -> Result<Mounted, tonic::Status> {
        let token = self.issuer.token(
            &format!("system:serviceaccount:{NAMESPACE}:{token_of}"),
            &[&self.pool],
        );
        let tokens = tokens_attribute(&self.pool, &token);
        let mut parameters = vec![
            ("backend", "gcp"),
            ("secrets", secrets),
            ("csi.storage.k8s.io/serviceAccount.name", account),
            ("csi.storage.k8s.io/serviceAccount.tokens", tokens.as_str()),
        ];
        parameters.extend_from_slice(extra);
        let mut request = raw_request(&serde_json::to_string(&attributes(&parameters)).unwrap());
        request.current_object_version = held
            .iter()
            .map(
                |(id, version)| openclaw_csi_provider::proto::ObjectVersion {
                    id: id.to_string(),
                    version: version.to_string(),
                },
            )
            .collect();
        self.provider.mount(request).await.map(Mounted)
    }
}

struct Mounted(openclaw_csi_provider::proto::MountResponse);

/// Paths only: a test that fails never prints a value.
impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let paths: Vec<&str> = self.0.files.iter().map(|f| f.path.as_str()).collect();
        write!(f, "Mounted {paths:?}")
    }
}

impl Mounted {
    fn file(&self, path: &str) -> String {
        let file = self
            .0
            .files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("no file {path}"));
        String::from_utf8(file.contents.clone()).unwrap()
    }

    fn mode(&self, path: &str) -> i32 {
        self.0.files.iter().find(|f| f.path == path).unwrap().mode
    }

    fn versions(&self) -> BTreeMap<String, String> {
        self.0
            .object_version
            .iter()
            .map(|v| (v.id.clone(), v.version.clone()))
            .collect()
    }
}

fn openclaw_secrets() -> String {
    OPENCLAW_KEYS
        .iter()
        .map(|(name, _)| {
            format!("- resourceName: projects/{PROJECT}/secrets/{name}/versions/latest\n  path: {name}\n")
        })
        .collect()
}

fn reason(status: &tonic::Status) -> &str {
    status.message().split(':').next().unwrap_or_default()
}

#[tokio::test]
async fn the_openclaw_keys_from_three_secrets_with_one_token_exchange() {
    let gcp = Gcp::start(&[]).await;
    gcp.seed_openclaw_keys();
    let mounted = gcp
        .mount("openclaw", &openclaw_secrets(), &[])
        .await
        .unwrap();
    for (name, value) in OPENCLAW_KEYS {
        assert_eq!(mounted.file(name), value);
        assert_eq!(
            mounted.versions()[&format!("gcp/{name}")],
            format!("projects/{NUMBER}/secrets/{name}/versions/1"),
            "the resolved version, by number"
        );
    }
    assert_eq!(gcp.google.exchanges(), 1);
    assert_eq!(
        gcp.google.impersonations(),
        0,
        "no annotation: the federated token"
    );
    // More mounts of the same identity: reads only, no exchange.
    for _ in 0..3 {
        gcp.mount("openclaw", &openclaw_secrets(), &[])
            .await
            .unwrap();
    }
    assert_eq!(gcp.google.exchanges(), 1);
    assert_eq!(
        gcp.google
            .count(&format!("/v1/projects/{PROJECT}/secrets/")),
        12
    );
    // A pod that presents another account's token gets nothing, kept token or not.
    let stolen = gcp
        .mount_with("openclaw", "intruder", &openclaw_secrets(), &[], &[])
        .await
        .unwrap_err();
    assert_eq!(reason(&stolen), "ServiceAccountTokenMismatch");
    let logs = gcp.provider.logs();
    for (_, value) in OPENCLAW_KEYS {
        assert!(!logs.contains(value), "a value in the logs");
    }
    assert!(!logs.contains("fed-"), "an access token in the logs");
}

#[tokio::test]
async fn latest_rotating_is_seen_and_a_pinned_version_held_is_not_read_again() {
    let gcp = Gcp::start(&[]).await;
    gcp.seed_openclaw_keys();
    let key = "ANTHROPIC_API_KEY";
    let latest =
        format!("- resourceName: projects/{PROJECT}/secrets/{key}/versions/latest\n  path: key\n");
    let first = gcp.mount("openclaw", &latest, &[]).await.unwrap();
    gcp.google
        .put_secret_version(PROJECT, None, key, b"sk-ant-ROTATED");
    let second = gcp.mount("openclaw", &latest, &[]).await.unwrap();
    assert_eq!(second.file("key"), "sk-ant-ROTATED");
    assert_ne!(first.versions(), second.versions());
    assert!(second.versions()["gcp/key"].ends_with("/versions/2"));
    // Pinned to version 1: an older driver's rotation calls tell the version the pod holds; the
    // first such call reads (and keeps the payload), later ones are served without a read; a pod
    // that holds another version is read.
    let pinned =
        format!("- resourceName: projects/{PROJECT}/secrets/{key}/versions/1\n  path: key\n");
    let read = gcp.mount("openclaw", &pinned, &[]).await.unwrap();
    let held = read.versions()["gcp/key"].clone();
    let before = gcp.google.count("/v1/projects/");
    gcp.mount_with("openclaw", "openclaw", &pinned, &[], &[("gcp/key", &held)])
        .await
        .unwrap();
    let reads = gcp.google.count("/v1/projects/");
    assert_eq!(reads, before + 1, "the first rotation call reads");
    let again = gcp
        .mount_with("openclaw", "openclaw", &pinned, &[], &[("gcp/key", &held)])
        .await
        .unwrap();
    assert_eq!(again.file("key"), OPENCLAW_KEYS[1].1);
    assert_eq!(
        gcp.google.count("/v1/projects/"),
        reads,
        "no read for the held version"
    );
    gcp.mount_with(
        "openclaw",
        "openclaw",
        &pinned,
        &[],
        &[("gcp/key", "projects/x/secrets/y/versions/9")],
    )
    .await
    .unwrap();
    assert_eq!(gcp.google.count("/v1/projects/"), reads + 1);
}

#[tokio::test]
async fn regional_secrets_parameters_and_extraction() {
    let gcp = Gcp::start(&[]).await;
    let pod = || Who::pod(NAMESPACE, "openclaw");
    gcp.google.put_secret_version(
        PROJECT,
        Some("europe-west4"),
        "gateway",
        br#"{"auth": {"token": "gw-REGIONAL"}, "limits": {"rpm": 60}}"#,
    );
    gcp.google
        .grant_secret(PROJECT, Some("europe-west4"), "gateway", pod());
    gcp.google.put_parameter_version(
        PROJECT,
        "global",
        "openclaw-config",
        "v1",
        b"server:\n  port: 8080\n  host: gw.internal\nmodels: [claude, gpt]\n",
        "YAML",
    );
    gcp.google
        .grant_parameter(PROJECT, "global", "openclaw-config", pod());
    let secrets = format!(
        "- resourceName: projects/{PROJECT}/locations/europe-west4/secrets/gateway/versions/latest\n\
         \x20 path: token\n  extractJSONKey: auth.token\n  mode: 0400\n\
         - resourceName: projects/{PROJECT}/locations/europe-west4/secrets/gateway/versions/latest\n\
         \x20 path: limits.json\n  extractJSONKey: limits\n\
         - resourceName: projects/{PROJECT}/locations/global/parameters/openclaw-config/versions/v1\n\
         \x20 path: config/port\n  extractYAMLKey: server.port\n\
         - resourceName: projects/{PROJECT}/locations/global/parameters/openclaw-config/versions/v1\n\
         \x20 fileName: config/models\n  extractYAMLKey: models\n"
    );
    let mounted = gcp.mount("openclaw", &secrets, &[]).await.unwrap();
    assert_eq!(mounted.file("token"), "gw-REGIONAL");
    assert_eq!(mounted.mode("token"), 0o400);
    assert_eq!(mounted.file("limits.json"), r#"{"rpm":60}"#);
    assert_eq!(mounted.file("config/port"), "8080");
    assert_eq!(mounted.file("config/models"), r#"["claude","gpt"]"#);
    // One read per distinct resource, at its regional path.
    assert_eq!(
        gcp.google.count(&format!(
            "/v1/projects/{PROJECT}/locations/europe-west4/secrets/gateway/"
        )),
        1
    );
    assert_eq!(
        gcp.google.count(&format!(
            "/v1/projects/{PROJECT}/locations/global/parameters/openclaw-config/"
        )),
        1
    );
    let missing = gcp
        .mount(
            "openclaw",
            &format!(
                "- resourceName: projects/{PROJECT}/locations/global/parameters/openclaw-config/versions/v1\n\
                 \x20 path: x\n  extractYAMLKey: server.nope\n"
            ),
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert_eq!(reason(&missing), "ExtractKeyNotFound");
}

#[tokio::test]
async fn impersonation_follows_the_service_account_annotation() {
    let gcp = Gcp::start(&[]).await;
    gcp.google
        .put_secret_version(PROJECT, None, "db", b"db-VALUE-MUST-NOT-LEAK");
    gcp.google
        .grant_secret(PROJECT, None, "db", Who::service_account(GSA));
    gcp.google
        .allow_impersonation(NAMESPACE, "impersonating", GSA);
    let secrets =
        format!("- resourceName: projects/{PROJECT}/secrets/db/versions/latest\n  path: db\n");
    let mounted = gcp.mount("impersonating", &secrets, &[]).await.unwrap();
    assert_eq!(mounted.file("db"), "db-VALUE-MUST-NOT-LEAK");
    gcp.mount("impersonating", &secrets, &[]).await.unwrap();
    assert_eq!(
        (gcp.google.exchanges(), gcp.google.impersonations()),
        (1, 1)
    );
    // The account without the annotation reads as itself, and is refused: the grant is the GSA's.
    let denied = gcp.mount("openclaw", &secrets, &[]).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert_eq!(reason(&denied), "GcpPermissionDenied");
    assert!(
        denied.message().contains("openclaw/openclaw")
            && denied
                .message()
                .contains("projects/acme-prod/secrets/db/versions/latest"),
        "{}",
        denied.message()
    );
    // Through a delegation chain: the pod may mint for the hop, the hop for the target.
    let hop = "hop@acme-prod.iam.gserviceaccount.com";
    gcp.kube.add_service_account(
        NAMESPACE,
        "delegating",
        &[
            ("iam.gke.io/gcp-service-account", GSA),
            (
                "iam.gke.io/gcp-service-account-delegates",
                &format!(r#"["{hop}"]"#),
            ),
        ],
    );
    gcp.google.allow_impersonation(NAMESPACE, "delegating", hop);
    gcp.google.allow_delegation(hop, GSA);
    let delegated = gcp.mount("delegating", &secrets, &[]).await.unwrap();
    assert_eq!(delegated.file("db"), "db-VALUE-MUST-NOT-LEAK");
    assert_eq!(
        gcp.google.delegates_seen().last().unwrap(),
        &vec![format!("projects/-/serviceAccounts/{hop}")]
    );
    // An annotation naming an account the pod may not impersonate: the step that failed is named.
    gcp.kube.add_service_account(
        NAMESPACE,
        "overreaching",
        &[(
            "iam.gke.io/gcp-service-account",
            "admin@acme-prod.iam.gserviceaccount.com",
        )],
    );
    let refused = gcp.mount("overreaching", &secrets, &[]).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert_eq!(reason(&refused), "GcpLoginFailed");
    assert!(
        refused.message().contains("generateAccessToken"),
        "{}",
        refused.message()
    );
}

#[tokio::test]
async fn failures_name_the_resource_and_the_cause() {
    let gcp = Gcp::start(&[]).await;
    gcp.seed_openclaw_keys();
    let one = |name: &str, version: &str| {
        format!("- resourceName: projects/{PROJECT}/secrets/{name}/versions/{version}\n  path: f\n")
    };
    // A payload that does not match its checksum.
    gcp.google.corrupt_checksum(PROJECT, "OPENAI_API_KEY", true);
    let corrupt = gcp
        .mount("openclaw", &one("OPENAI_API_KEY", "latest"), &[])
        .await
        .unwrap_err();
    assert_eq!(corrupt.code(), tonic::Code::DataLoss);
    assert_eq!(reason(&corrupt), "ChecksumMismatch");
    // A disabled version, asked by number and as latest (no fallback to an older one).
    gcp.google
        .put_secret_version(PROJECT, None, "ANTHROPIC_API_KEY", b"v2");
    gcp.google
        .set_version_state(PROJECT, None, "ANTHROPIC_API_KEY", 2, "DISABLED");
    for version in ["2", "latest"] {
        let disabled = gcp
            .mount("openclaw", &one("ANTHROPIC_API_KEY", version), &[])
            .await
            .unwrap_err();
        assert_eq!(disabled.code(), tonic::Code::NotFound, "{version}");
        assert!(
            disabled.message().contains("DISABLED"),
            "{}",
            disabled.message()
        );
    }
    let missing = gcp
        .mount("openclaw", &one("OPENCLAW_GATEWAY_TOKEN", "7"), &[])
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert!(missing.message().contains(&format!(
        "projects/{PROJECT}/secrets/OPENCLAW_GATEWAY_TOKEN/versions/7"
    )));
    // Throttling inside the deadline is retried; throttling that lasts ends in ResourceExhausted.
    gcp.google.throttle_next(2);
    let after = gcp
        .mount("openclaw", &one("OPENCLAW_GATEWAY_TOKEN", "latest"), &[])
        .await
        .unwrap();
    assert_eq!(after.file("f"), OPENCLAW_KEYS[0].1);
    gcp.google.throttle_next(1000);
    let throttled = gcp
        .mount("openclaw", &one("OPENCLAW_GATEWAY_TOKEN", "latest"), &[])
        .await
        .unwrap_err();
    assert_eq!(throttled.code(), tonic::Code::ResourceExhausted);
    assert_eq!(reason(&throttled), "BackendThrottled");
    gcp.google.throttle_next(0);
    // provider-adc is the admin's choice, not the pod's.
    let adc = gcp
        .mount(
            "openclaw",
            &one("OPENCLAW_GATEWAY_TOKEN", "latest"),
            &[("auth", "provider-adc")],
        )
        .await
        .unwrap_err();
    assert_eq!(adc.code(), tonic::Code::PermissionDenied);
    assert!(adc.message().contains("--gcp-allow-provider-adc"));
    // STS refusing a pod whose token is not kept yet.
    gcp.kube.add_service_account(NAMESPACE, "fresh", &[]);
    gcp.google.deny_sts(true);
    let sts = gcp
        .mount("fresh", &one("OPENCLAW_GATEWAY_TOKEN", "latest"), &[])
        .await
        .unwrap_err();
    assert_eq!(reason(&sts), "GcpLoginFailed");
    assert!(
        sts.message().contains("token exchange"),
        "{}",
        sts.message()
    );
    let logs = gcp.provider.logs();
    assert!(!logs.contains("VALUE-MUST-NOT-LEAK"));
}

/// Everything in `secrets` is checked before any call: hostile resource names never reach a URL or a
/// host name.
#[tokio::test]
async fn hostile_resource_names_are_refused_before_any_request() {
    let gcp = Gcp::start(&[]).await;
    for hostile in [
        "projects/p/locations/evil.example.com/secrets/s/versions/1",
        "projects/p/secrets/../../v1/projects/other/secrets/s/versions/1",
        "projects/p/secrets/s/versions/1?alt=media",
        "projects/p/secrets/s/versions/1:access#",
        "//evil.example.com/projects/p/secrets/s/versions/1",
    ] {
        let secrets = format!("- resourceName: {hostile}\n  path: f\n");
        let refused = gcp.mount("openclaw", &secrets, &[]).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{hostile}");
    }
    for (secrets, says) in [
        (
            "- resourceName: projects/p/secrets/s/versions/1\n  path: ../../etc/passwd\n",
            "path",
        ),
        (
            "- resourceName: projects/p/secrets/s/versions/1\n  path: f\n  extractJSONKey: a\n  extractYAMLKey: b\n",
            "choose one",
        ),
        (
            "- resourceName: projects/p/secrets/s/versions/1\n  path: f\n  unknownField: x\n",
            "unknown",
        ),
        ("not a list", "secrets"),
    ] {
        let refused = gcp.mount("openclaw", secrets, &[]).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{secrets}");
        assert!(refused.message().contains(says), "{}", refused.message());
    }
    assert_eq!(
        gcp.google.requests().len(),
        0,
        "{:?}",
        gcp.google.requests()
    );
}

/// Outside GKE: workload identity federation from an `external_account` credentials file (its
/// audience sent verbatim, its token_url used, its impersonation URL ignored).
#[tokio::test]
async fn federation_from_an_external_account_file() {
    let audience = "//iam.googleapis.com/projects/424242424242/locations/global/workloadIdentityPools/onprem/providers/k8s";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("credentials.json");
    let gcp = Gcp::start_with(audience, audience, &[], |google| {
        let credentials = serde_json::json!({
            "type": "external_account",
            "audience": audience,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": format!("{}/v1/token", google.url),
            "service_account_impersonation_url": format!(
                "{}/v1/projects/-/serviceAccounts/{GSA}:generateAccessToken", google.url),
            "credential_source": {"file": "/var/run/service-account/token"},
        });
        std::fs::write(&file, credentials.to_string()).unwrap();
        vec!["--gcp-credentials-file".into(), file.display().to_string()]
    })
    .await;
    gcp.seed_openclaw_keys();
    let mounted = gcp
        .mount("openclaw", &openclaw_secrets(), &[])
        .await
        .unwrap();
    assert_eq!(mounted.file("OPENAI_API_KEY"), OPENCLAW_KEYS[2].1);
    assert_eq!(gcp.google.count("/v1/token"), 1);
    assert_eq!(
        gcp.google.impersonations(),
        0,
        "the file's impersonation URL is not the pod's"
    );
}

/// On GKE without the cluster flags, the metadata server names the project and cluster; with
/// --gcp-allow-provider-adc, `auth: provider-adc` reads with the node's token from it.
#[tokio::test]
async fn the_metadata_server_completes_the_pool_and_serves_provider_adc() {
    let gcp = Gcp::start_with(
        CLUSTER_AUDIENCE,
        POOL,
        &["--gcp-allow-provider-adc"],
        |google| {
            google.serve_metadata(Metadata {
                project: PROJECT.into(),
                cluster_location: "us-central1".into(),
                cluster_name: "c1".into(),
                service_account: "node@acme-prod.iam.gserviceaccount.com".into(),
            });
            vec![
                "--gcp-sts-endpoint".into(),
                format!("{}/v1/identitybindingtoken", google.url),
            ]
        },
    )
    .await;
    gcp.seed_openclaw_keys();
    let mounted = gcp
        .mount("openclaw", &openclaw_secrets(), &[])
        .await
        .unwrap();
    assert_eq!(mounted.file("OPENCLAW_GATEWAY_TOKEN"), OPENCLAW_KEYS[0].1);
    assert_eq!(
        gcp.google.count("/computeMetadata/v1/instance/attributes/"),
        2
    );
    gcp.mount("openclaw", &openclaw_secrets(), &[])
        .await
        .unwrap();
    assert_eq!(
        gcp.google.count("/computeMetadata/v1/"),
        3,
        "the pool is asked for once"
    );
    // provider-adc: the node's grant, not the pod's.
    gcp.google
        .put_secret_version(PROJECT, None, "node-only", b"node-VALUE");
    gcp.google.grant_secret(
        PROJECT,
        None,
        "node-only",
        Who::service_account("node@acme-prod.iam.gserviceaccount.com"),
    );
    let secrets = format!(
        "- resourceName: projects/{PROJECT}/secrets/node-only/versions/latest\n  path: f\n"
    );
    assert_eq!(
        gcp.mount("openclaw", &secrets, &[("auth", "provider-adc")])
            .await
            .unwrap()
            .file("f"),
        "node-VALUE"
    );
    let as_pod = gcp.mount("openclaw", &secrets, &[]).await.unwrap_err();
    assert_eq!(as_pod.code(), tonic::Code::PermissionDenied);
}

/// With the caches on: a pod of another service account never gets what one read (not even claiming
/// to hold the same pinned version); a token GCP stops taking is exchanged again; an answer over the
/// size bound is refused as too large.
#[tokio::test]
async fn caches_never_cross_identities_and_refused_tokens_are_replaced() {
    let gcp = Gcp::start(&["--cache-ttl", "60", "--max-response-bytes", "4096"]).await;
    gcp.seed_openclaw_keys();
    gcp.kube.add_service_account(NAMESPACE, "other", &[]);
    let key = "OPENAI_API_KEY";
    let pinned =
        format!("- resourceName: projects/{PROJECT}/secrets/{key}/versions/1\n  path: k\n");
    let read = gcp.mount("openclaw", &pinned, &[]).await.unwrap();
    let held = read.versions()["gcp/k"].clone();
    gcp.mount_with("openclaw", "openclaw", &pinned, &[], &[("gcp/k", &held)])
        .await
        .unwrap();
    let other = gcp
        .mount_with("other", "other", &pinned, &[], &[("gcp/k", &held)])
        .await
        .unwrap_err();
    assert_eq!(other.code(), tonic::Code::PermissionDenied);
    let latest = openclaw_secrets();
    let other = gcp.mount("other", &latest, &[]).await.unwrap_err();
    assert_eq!(other.code(), tonic::Code::PermissionDenied);
    // Every token issued so far stops working: the kept one is dropped and exchanged again.
    gcp.mount("openclaw", &latest, &[]).await.unwrap();
    let exchanges = gcp.google.exchanges();
    gcp.google.expire_tokens();
    gcp.google.put_secret_version(PROJECT, None, key, b"sk-NEW");
    let fresh = gcp
        .mount(
            "openclaw",
            &format!("- resourceName: projects/{PROJECT}/secrets/{key}/versions/2\n  path: k\n"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(fresh.file("k"), "sk-NEW");
    assert_eq!(gcp.google.exchanges(), exchanges + 1);
    // A payload over --max-response-bytes.
    gcp.google
        .put_secret_version(PROJECT, None, "big", &vec![b'x'; 100_000]);
    gcp.google
        .grant_secret(PROJECT, None, "big", Who::pod(NAMESPACE, "openclaw"));
    let big = gcp
        .mount(
            "openclaw",
            &format!("- resourceName: projects/{PROJECT}/secrets/big/versions/latest\n  path: b\n"),
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(big.code(), tonic::Code::ResourceExhausted);
    assert_eq!(reason(&big), "ResponseTooLarge", "{}", big.message());
}

/// A plain HTTP forward proxy (absolute-form requests), recording what passed through it.
struct ForwardProxy {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ForwardProxy {
    fn start() -> Self {
        let seen: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let recorded = seen.clone();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let app = axum::Router::new().fallback(
            move |method: axum::http::Method,
                  uri: axum::http::Uri,
                  headers: axum::http::HeaderMap,
                  body: axum::body::Bytes| {
                let (client, recorded) = (client.clone(), recorded.clone());
                async move {
                    recorded.lock().unwrap().push(uri.to_string());
                    let mut forwarded = client.request(method, uri.to_string()).body(body);
                    for (name, value) in &headers {
                        if name != axum::http::header::HOST {
                            forwarded = forwarded.header(name, value);
                        }
                    }
                    let answer = forwarded.send().await.unwrap();
                    let status = answer.status();
                    let content_type = answer.headers().get("content-type").cloned();
                    let bytes = answer.bytes().await.unwrap();
                    let mut response = axum::response::Response::new(axum::body::Body::from(bytes));
                    *response.status_mut() = status;
                    if let Some(content_type) = content_type {
                        response.headers_mut().insert("content-type", content_type);
                    }
                    response
                }
            },
        );
        Self {
            url: support::serve_on_thread(app),
            seen,
        }
    }
}

/// HTTP(S)_PROXY is honoured for Google's APIs, never for the metadata server (the node's own).
#[tokio::test]
async fn the_proxy_carries_google_requests_but_not_the_metadata_servers() {
    let proxy = ForwardProxy::start();
    let issuer = JwtIssuer::generate();
    let google = FakeGcp::start(
        FakeGcpConfig::new(CLUSTER_AUDIENCE, POOL).verify_with(&issuer.public_pem()),
    )
    .await;
    google.serve_metadata(Metadata {
        project: PROJECT.into(),
        cluster_location: "us-central1".into(),
        cluster_name: "c1".into(),
        service_account: "node@acme-prod.iam.gserviceaccount.com".into(),
    });
    google.put_secret_version(PROJECT, None, "k", b"proxied-VALUE");
    google.grant_secret(PROJECT, None, "k", Who::pod(NAMESPACE, "openclaw"));
    let kube = FakeKube::start();
    kube.add_service_account(NAMESPACE, "openclaw", &[]);
    let kubeconfig = kube.kubeconfig.display().to_string();
    let sts = format!("{}/v1/identitybindingtoken", google.url);
    let provider = Provider::start_with_env(
        &[
            "--kubeconfig",
            &kubeconfig,
            "--gcp-sts-endpoint",
            &sts,
            "--gcp-secretmanager-endpoint",
            &google.url,
            "--gcp-metadata-endpoint",
            &google.url,
        ],
        &[("HTTP_PROXY", &proxy.url), ("NO_PROXY", "")],
    );
    let gcp = Gcp {
        google,
        kube,
        provider,
        issuer,
        pool: POOL.into(),
    };
    let secrets =
        format!("- resourceName: projects/{PROJECT}/secrets/k/versions/latest\n  path: k\n");
    let mounted = gcp.mount("openclaw", &secrets, &[]).await.unwrap();
    assert_eq!(mounted.file("k"), "proxied-VALUE");
    let seen = proxy.seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|u| u.ends_with("/v1/identitybindingtoken")),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|u| u.ends_with("/versions/latest:access")),
        "{seen:?}"
    );
    assert!(
        !seen.iter().any(|u| u.contains("computeMetadata")),
        "{seen:?}"
    );
    assert_eq!(
        gcp.google.count("/computeMetadata/v1/"),
        3,
        "asked directly"
    );
}

/// Migrating without edits: the official GCP provider's documented example class (PROVIDERS.md §3.3,
/// `provider: gcp`, no `backend`), mounted through `gcp.sock` (`--compat gcp`).
#[tokio::test]
async fn the_official_example_class_mounts_unchanged_through_the_compat_socket() {
    const OFFICIAL: &str = r#"
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata: {name: search-gcp, namespace: search}
spec:
  provider: gcp
  parameters:
    auth: pod-adc
    secrets: |
      - resourceName: projects/acme-prod/secrets/search-db/versions/latest
        path: db/password
        extractJSONKey: password
        mode: 0400
      - resourceName: projects/acme-prod/locations/europe-west4/secrets/search-tls/versions/7
        path: tls/cert.pem
      - resourceName: projects/acme-prod/locations/global/parameters/search-cfg/versions/v12
        path: config/port
        extractYAMLKey: server_port
"#;
    let gcp = Gcp::start(&["--compat", "gcp"]).await;
    let pod = || Who::pod(NAMESPACE, "openclaw");
    gcp.google.put_secret_version(
        PROJECT,
        None,
        "search-db",
        br#"{"user": "search", "password": "db-VALUE"}"#,
    );
    gcp.google.grant_secret(PROJECT, None, "search-db", pod());
    for i in 1..=7 {
        gcp.google.put_secret_version(
            PROJECT,
            Some("europe-west4"),
            "search-tls",
            format!("cert-{i}").as_bytes(),
        );
    }
    gcp.google
        .grant_secret(PROJECT, Some("europe-west4"), "search-tls", pod());
    gcp.google.put_parameter_version(
        PROJECT,
        "global",
        "search-cfg",
        "v12",
        b"server_port: 9200\n",
        "YAML",
    );
    gcp.google
        .grant_parameter(PROJECT, "global", "search-cfg", pod());
    let parameters = support::class_parameters(OFFICIAL);
    let token = gcp.issuer.token(
        &format!("system:serviceaccount:{NAMESPACE}:openclaw"),
        &[POOL],
    );
    let tokens = tokens_attribute(POOL, &token);
    let mut all: Vec<(&str, &str)> = parameters
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    all.push(("csi.storage.k8s.io/serviceAccount.tokens", &tokens));
    let request = raw_request(&serde_json::to_string(&attributes(&all)).unwrap());
    let socket = gcp.provider.socket.parent().unwrap().join("gcp.sock");
    let mut client = openclaw_csi_provider::cli::client::connect(socket)
        .await
        .unwrap();
    let mounted = Mounted(client.mount(request).await.unwrap().into_inner());
    assert_eq!(mounted.file("db/password"), "db-VALUE");
    assert_eq!(mounted.mode("db/password"), 0o400);
    assert_eq!(mounted.file("tls/cert.pem"), "cert-7");
    assert_eq!(mounted.file("config/port"), "9200");
}

//! The `aws` backend end to end: the real provider binary, moto's server for Secrets Manager, SSM and
//! STS (behind a recording, fault-injecting proxy), and the fake Kubernetes API for service accounts,
//! nodes and TokenRequest.
#![cfg(feature = "aws")]

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use serde_json::json;
use support::fake_kube::FakeKube;
use support::identity::{JwtIssuer, tokens_attribute};
use support::moto::{AwsProxy, Fault, Moto};
use support::{NAMESPACE, Provider, attributes, raw_request};

const REGION: &str = "eu-west-1";
const FAILOVER: &str = "eu-central-1";
const ROLE: &str = "arn:aws:iam::123456789012:role/openclaw-reader";
const SEED: &str = r#"{"gateway_token": "gw-VALUE-MUST-NOT-LEAK", "anthropic_api_key": "sk-ant-VALUE-MUST-NOT-LEAK", "openai-api-key": "sk-VALUE-MUST-NOT-LEAK", "port": 8080}"#;

/// moto, the proxy in front of it, the fake Kubernetes API (the pod's service account annotated with
/// its role) and a provider using them.
struct Aws {
    moto: Moto,
    proxy: AwsProxy,
    kube: FakeKube,
    provider: Provider,
    issuer: JwtIssuer,
}

impl Aws {
    async fn start(flags: &[&str]) -> Self {
        Self::start_with_env(flags, &[]).await
    }

    async fn start_with_env(flags: &[&str], env: &[(&str, &str)]) -> Self {
        let moto = Moto::start().await;
        let proxy = AwsProxy::start(&moto.url);
        let kube = FakeKube::start();
        kube.add_service_account(
            NAMESPACE,
            "openclaw",
            &[("eks.amazonaws.com/role-arn", ROLE)],
        );
        let kubeconfig = kube.kubeconfig.display().to_string();
        let mut all_flags = vec!["--kubeconfig", kubeconfig.as_str()];
        if !flags.contains(&"--cache-ttl") {
            all_flags.extend(["--cache-ttl", "0"]);
        }
        all_flags.extend_from_slice(flags);
        let mut all_env = vec![
            ("AWS_ENDPOINT_URL", proxy.url.as_str()),
            ("AWS_CONFIG_FILE", "/nonexistent"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
        ];
        all_env.extend_from_slice(env);
        let provider = Provider::start_with_env(&all_flags, &all_env);
        Self {
            moto,
            proxy,
            kube,
            provider,
            issuer: JwtIssuer::generate(),
        }
    }

    /// The pod's token for `audience`, as kubelet sends it.
    fn tokens(&self, audience: &str) -> String {
        let token = self.issuer.token(
            &format!("system:serviceaccount:{NAMESPACE}:openclaw"),
            &[audience],
        );
        tokens_attribute(audience, &token)
    }

    /// A Mount of `parameters` by the test pod with its IRSA token.
    async fn mount(&self, parameters: &[(&str, &str)]) -> Result<Mounted, tonic::Status> {
        let tokens = self.tokens("sts.amazonaws.com");
        let mut all = vec![
            ("backend", "aws"),
            ("csi.storage.k8s.io/serviceAccount.tokens", tokens.as_str()),
        ];
        all.extend_from_slice(parameters);
        self.mount_attributes(attributes(&all)).await
    }

    /// A Mount by a pod of service account `account` presenting `token_of`'s IRSA token (the same
    /// account for an honest pod).
    async fn mount_as(
        &self,
        account: &str,
        token_of: &str,
        parameters: &[(&str, &str)],
    ) -> Result<Mounted, tonic::Status> {
        let token = self.issuer.token(
            &format!("system:serviceaccount:{NAMESPACE}:{token_of}"),
            &["sts.amazonaws.com"],
        );
        let tokens = tokens_attribute("sts.amazonaws.com", &token);
        let mut all = vec![
            ("backend", "aws"),
            ("csi.storage.k8s.io/serviceAccount.name", account),
            ("csi.storage.k8s.io/serviceAccount.tokens", tokens.as_str()),
        ];
        all.extend_from_slice(parameters);
        self.mount_attributes(attributes(&all)).await
    }

    async fn mount_attributes(
        &self,
        attributes: BTreeMap<String, String>,
    ) -> Result<Mounted, tonic::Status> {
        let request = raw_request(&serde_json::to_string(&attributes).unwrap());
        self.provider.mount(request).await.map(Mounted)
    }
}

struct Mounted(openclaw_csi_provider::proto::MountResponse);

impl Mounted {
    fn file(&self, path: &str) -> String {
        let file = self
            .0
            .files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("no file {path}: {:?}", self.paths()));
        String::from_utf8(file.contents.clone()).unwrap()
    }

    fn bytes(&self, path: &str) -> Vec<u8> {
        self.0
            .files
            .iter()
            .find(|f| f.path == path)
            .unwrap()
            .contents
            .clone()
    }

    fn mode(&self, path: &str) -> i32 {
        self.0.files.iter().find(|f| f.path == path).unwrap().mode
    }

    fn paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = self.0.files.iter().map(|f| f.path.clone()).collect();
        paths.sort();
        paths
    }

    fn version(&self, id: &str) -> String {
        self.0
            .object_version
            .iter()
            .find(|v| v.id == id)
            .unwrap_or_else(|| panic!("no version {id}"))
            .version
            .clone()
    }
}

const SEED_OBJECTS: &str = r#"
- objectName: openclaw/production
  objectType: secretsmanager
  jmesPath:
    - {path: gateway_token, objectAlias: OPENCLAW_GATEWAY_TOKEN, filePermission: "0400"}
    - {path: anthropic_api_key, objectAlias: ANTHROPIC_API_KEY}
    - {path: openai-api-key, objectAlias: OPENAI_API_KEY}
"#;

#[tokio::test]
async fn the_seed_case_is_three_files_from_one_json_secret_in_one_call() {
    let aws = Aws::start(&[]).await;
    let arn = aws
        .moto
        .create_secret(REGION, "openclaw/production", SEED)
        .await;
    let params = [("region", REGION), ("objects", SEED_OBJECTS)];
    let mounted = aws.mount(&params).await.expect("mount");
    assert_eq!(
        mounted.paths(),
        [
            "ANTHROPIC_API_KEY",
            "OPENAI_API_KEY",
            "OPENCLAW_GATEWAY_TOKEN",
            "openclaw_production"
        ]
    );
    assert_eq!(
        mounted.file("OPENCLAW_GATEWAY_TOKEN"),
        "gw-VALUE-MUST-NOT-LEAK"
    );
    assert_eq!(
        mounted.file("ANTHROPIC_API_KEY"),
        "sk-ant-VALUE-MUST-NOT-LEAK"
    );
    assert_eq!(
        mounted.file("OPENAI_API_KEY"),
        "sk-VALUE-MUST-NOT-LEAK",
        "a hyphenated key, unquoted"
    );
    assert_eq!(mounted.file("openclaw_production"), SEED);
    assert_eq!(mounted.mode("OPENCLAW_GATEWAY_TOKEN"), 0o400);
    assert_eq!(mounted.mode("ANTHROPIC_API_KEY"), 0o644);
    // Versions: the secret's VersionId, for its file and each jmesPath file.
    let version = mounted.version("openclaw_production");
    assert_eq!(version.len(), 36, "a VersionId: {version}");
    assert_eq!(mounted.version("OPENAI_API_KEY"), version);
    let calls = aws.proxy.calls();
    let operations: Vec<&str> = calls.iter().map(|c| c.operation.as_str()).collect();
    assert_eq!(
        operations,
        ["AssumeRoleWithWebIdentity", "secretsmanager.GetSecretValue"],
        "one STS call, then one Secrets Manager call (one secret: GetSecretValue)"
    );
    assert!(calls[1].body.contains("openclaw/production"));
    // Credentials are kept: the next mount is one Secrets Manager call (the value cache is off).
    aws.proxy.clear();
    let again = aws.mount(&params).await.expect("mount");
    assert_eq!(
        again.file("OPENCLAW_GATEWAY_TOKEN"),
        "gw-VALUE-MUST-NOT-LEAK"
    );
    let operations: Vec<String> = aws.proxy.calls().into_iter().map(|c| c.operation).collect();
    assert_eq!(operations, ["secretsmanager.GetSecretValue"]);
    assert_eq!(
        aws.kube
            .count("GET /api/v1/namespaces/openclaw/serviceaccounts/openclaw"),
        1
    );
    // The ARN names the same secret; no value reached the logs.
    let by_arn = format!("- objectName: {arn}\n  objectAlias: by-arn\n");
    let mounted = aws
        .mount(&[("region", REGION), ("objects", &by_arn)])
        .await
        .expect("mount by ARN");
    assert_eq!(mounted.file("by-arn"), SEED);
    let logs = aws.provider.logs();
    assert!(
        !logs.contains("VALUE-MUST-NOT-LEAK"),
        "a value leaked into the logs"
    );
}

#[tokio::test]
async fn twenty_five_secrets_are_two_batch_calls() {
    let aws = Aws::start(&[]).await;
    let mut objects = String::new();
    for i in 0..25 {
        aws.moto
            .create_secret(REGION, &format!("app/key-{i}"), &format!("value-{i}"))
            .await;
        objects.push_str(&format!(
            "- {{objectName: app/key-{i}, objectType: secretsmanager}}\n"
        ));
    }
    let mounted = aws
        .mount(&[("region", REGION), ("objects", &objects)])
        .await
        .expect("mount");
    assert_eq!(mounted.0.files.len(), 25);
    assert_eq!(mounted.file("app_key-24"), "value-24");
    assert_eq!(aws.proxy.count("BatchGetSecretValue"), 2);
    assert_eq!(
        aws.proxy.count("GetSecretValue") - aws.proxy.count("BatchGetSecretValue"),
        0
    );
}

#[tokio::test]
async fn ssm_parameters_are_batched_in_tens_with_versions_and_labels_pinned() {
    let aws = Aws::start(&[]).await;
    let mut objects = String::new();
    for i in 0..12 {
        aws.moto
            .put_parameter(REGION, &format!("/app/p{i}"), &format!("p{i}"), "String")
            .await;
        objects.push_str(&format!(
            "- {{objectName: /app/p{i}, objectType: ssmparameter}}\n"
        ));
    }
    aws.moto
        .put_parameter(REGION, "/app/pinned", "old", "SecureString")
        .await;
    aws.moto
        .put_parameter(REGION, "/app/pinned", "new", "SecureString")
        .await;
    aws.moto
        .label_parameter(REGION, "/app/pinned", 1, "live")
        .await;
    objects.push_str(
        "- {objectName: /app/pinned, objectType: ssmparameter, objectAlias: latest}\n\
         - {objectName: /app/pinned, objectType: ssmparameter, objectAlias: v1, objectVersion: '1'}\n\
         - {objectName: /app/pinned, objectType: ssmparameter, objectAlias: live, objectVersionLabel: live}\n\
         - {objectName: 'arn:aws:ssm:eu-west-1:123456789012:parameter/app/pinned', objectAlias: arn-v1, objectVersion: '1'}\n",
    );
    let mounted = aws
        .mount(&[("region", REGION), ("objects", &objects)])
        .await
        .expect("mount");
    assert_eq!(
        mounted.file("_app_p11"),
        "p11",
        "a leading / is translated too"
    );
    assert_eq!(mounted.file("latest"), "new", "SecureString, decrypted");
    assert_eq!(mounted.file("v1"), "old");
    assert_eq!(mounted.file("live"), "old");
    assert_eq!(
        (mounted.version("latest"), mounted.version("v1")),
        ("2".into(), "1".into())
    );
    assert_eq!(
        mounted.file("arn-v1"),
        "old",
        "the ARN's pin, not the name's latest"
    );
    // 16 reads, one pin of a name per call: ⌈12/10⌉ would be 2, and the four pins of /app/pinned (its
    // ARN included) need four.
    assert_eq!(aws.proxy.count("AmazonSSM.GetParameters"), 4);
    // Translation off: inner / become directories, the leading one is dropped.
    let off = "- {objectName: /app/p1, objectType: ssmparameter}\n";
    let mounted = aws
        .mount(&[
            ("region", REGION),
            ("pathTranslation", "FALSE"),
            ("objects", off),
        ])
        .await
        .expect("mount");
    assert_eq!(mounted.paths(), ["app/p1"]);
}

#[tokio::test]
async fn binary_secrets_pinned_versions_labels_and_arns() {
    let aws = Aws::start(&[]).await;
    let binary: Vec<u8> = (0u8..=255).collect();
    aws.moto
        .create_binary_secret(REGION, "keystore", &binary)
        .await;
    let arn = aws.moto.create_secret(REGION, "db", "first").await;
    let first = aws.moto.put_secret_value(REGION, "db", "second", &[]).await;
    // `db` now holds "second" as AWSCURRENT and "first" as AWSPREVIOUS.
    let _ = first;
    let partial = arn.rsplit_once('-').unwrap().0.to_string();
    let objects = format!(
        "- {{objectName: keystore, objectType: secretsmanager}}\n\
         - {{objectName: db, objectType: secretsmanager, objectAlias: previous, objectVersionLabel: AWSPREVIOUS}}\n\
         - {{objectName: '{partial}', objectAlias: partial-arn}}\n\
         - {{ObjectName: db, ObjectType: SecretsManager, ObjectAlias: CaseBlind}}\n"
    );
    let mounted = aws
        .mount(&[("region", REGION), ("objects", &objects)])
        .await
        .expect("mount");
    assert_eq!(mounted.bytes("keystore"), binary);
    assert_eq!(mounted.file("previous"), "first");
    assert_eq!(
        mounted.file("partial-arn"),
        "second",
        "an ARN without the random suffix"
    );
    assert_eq!(mounted.file("CaseBlind"), "second");
    let version = mounted.version("CaseBlind");
    let pinned =
        format!("- {{objectName: db, objectType: secretsmanager, objectVersion: '{version}'}}\n");
    let mounted = aws
        .mount(&[("region", REGION), ("objects", &pinned)])
        .await
        .expect("mount");
    assert_eq!(mounted.file("db"), "second");
    // An ARN in another region than the mount's is refused before any call.
    aws.proxy.clear();
    let elsewhere = format!("- {{objectName: '{}'}}\n", arn.replace(REGION, "us-east-1"));
    let error = aws
        .mount(&[("region", REGION), ("objects", &elsewhere)])
        .await
        .err()
        .unwrap();
    assert_eq!(
        error.code(),
        tonic::Code::InvalidArgument,
        "{}",
        error.message()
    );
    assert!(
        error.message().contains("objects[0].objectName"),
        "{}",
        error.message()
    );
    assert!(aws.proxy.calls().is_empty());
}

#[tokio::test]
async fn failover_reads_the_second_region_only_when_the_first_fails() {
    let aws = Aws::start(&[]).await;
    aws.moto
        .create_secret(REGION, "app/db", "primary-value")
        .await;
    aws.moto
        .create_secret(FAILOVER, "app/db", "failover-value")
        .await;
    let objects = "- {objectName: app/db, objectType: secretsmanager, objectAlias: db}\n";
    let params = [
        ("region", REGION),
        ("failoverRegion", FAILOVER),
        ("objects", objects),
    ];
    let mounted = aws.mount(&params).await.expect("mount");
    assert_eq!(mounted.file("db"), "primary-value");
    let secrets_calls = || {
        aws.proxy
            .calls()
            .into_iter()
            .filter(|c| c.operation.starts_with("secretsmanager."))
            .map(|c| c.region)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        secrets_calls(),
        [REGION],
        "the primary answered: no second call"
    );
    // The primary region fails with server errors (every retry): the failover region answers.
    aws.proxy.clear();
    aws.proxy.add_fault(Fault {
        operation: String::new(),
        region: REGION.into(),
        times: 100,
        status: 500,
        error_type: "InternalServiceError".into(),
    });
    let mounted = aws.mount(&params).await.expect("failover mount");
    assert_eq!(mounted.file("db"), "failover-value");
    assert_eq!(secrets_calls().last().map(String::as_str), Some(FAILOVER));
    // A 4xx in the primary region is an answer: no failover.
    aws.proxy.clear();
    aws.moto
        .create_secret(FAILOVER, "only/in-failover", "x")
        .await;
    let missing = "- {objectName: only/in-failover, objectType: secretsmanager, objectAlias: f}\n";
    let error = aws
        .mount(&[
            ("region", REGION),
            ("failoverRegion", FAILOVER),
            ("objects", missing),
        ])
        .await
        .err()
        .unwrap();
    assert_eq!(error.code(), tonic::Code::NotFound, "{}", error.message());
    assert!(
        error.message().contains("only/in-failover"),
        "{}",
        error.message()
    );
    assert_eq!(secrets_calls(), [REGION]);
}

#[tokio::test]
async fn throttling_is_retried_then_reported_and_a_denied_batch_reads_one_by_one() {
    let aws = Aws::start(&[]).await;
    aws.moto
        .create_secret(REGION, "openclaw/production", SEED)
        .await;
    let params = [("region", REGION), ("objects", SEED_OBJECTS)];
    let throttle = |times| Fault {
        operation: "secretsmanager.GetSecretValue".into(),
        region: String::new(),
        times,
        status: 400,
        error_type: "ThrottlingException".into(),
    };
    aws.proxy.add_fault(throttle(2));
    let mounted = aws
        .mount(&params)
        .await
        .expect("mount after two throttled calls");
    assert_eq!(
        mounted.file("ANTHROPIC_API_KEY"),
        "sk-ant-VALUE-MUST-NOT-LEAK"
    );
    assert_eq!(aws.proxy.count("secretsmanager.GetSecretValue"), 3);
    aws.proxy.clear();
    aws.proxy.add_fault(throttle(1000));
    let error = aws.mount(&params).await.err().unwrap();
    assert_eq!(
        error.code(),
        tonic::Code::ResourceExhausted,
        "{}",
        error.message()
    );
    assert!(
        error.message().starts_with("BackendThrottled"),
        "{}",
        error.message()
    );
    // STS failing twice (credentials not kept yet for a new service account) is retried too.
    aws.proxy.clear();
    aws.kube.add_service_account(
        NAMESPACE,
        "retried",
        &[("eks.amazonaws.com/role-arn", ROLE)],
    );
    aws.proxy.add_fault(Fault {
        operation: "AssumeRoleWithWebIdentity".into(),
        region: String::new(),
        times: 2,
        status: 500,
        error_type: "InternalFailure".into(),
    });
    let mounted = aws
        .mount_as(
            "retried",
            "retried",
            &[("region", REGION), ("objects", SEED_OBJECTS)],
        )
        .await
        .expect("mount after two STS failures");
    assert_eq!(mounted.file("OPENAI_API_KEY"), "sk-VALUE-MUST-NOT-LEAK");
    assert_eq!(aws.proxy.count("AssumeRoleWithWebIdentity"), 3);
    // A role without secretsmanager:BatchGetSecretValue reads each secret with GetSecretValue.
    aws.proxy.clear();
    aws.moto
        .create_secret(REGION, "openclaw/extra", "extra-value")
        .await;
    let two =
        format!("{SEED_OBJECTS}- {{objectName: openclaw/extra, objectType: secretsmanager}}\n");
    let params = [("region", REGION), ("objects", two.as_str())];
    aws.proxy.add_fault(Fault {
        operation: "BatchGetSecretValue".into(),
        region: String::new(),
        times: 1000,
        status: 400,
        error_type: "AccessDeniedException".into(),
    });
    let mounted = aws.mount(&params).await.expect("mount with GetSecretValue");
    assert_eq!(
        mounted.file("OPENCLAW_GATEWAY_TOKEN"),
        "gw-VALUE-MUST-NOT-LEAK"
    );
    assert_eq!(mounted.file("openclaw_extra"), "extra-value");
    assert_eq!(aws.proxy.count("secretsmanager.BatchGetSecretValue"), 1);
    assert_eq!(aws.proxy.count("secretsmanager.GetSecretValue"), 2);
    // The role is remembered: the next mount does not try the batch call again.
    aws.mount(&params).await.expect("mount");
    assert_eq!(aws.proxy.count("secretsmanager.BatchGetSecretValue"), 1);
    assert_eq!(aws.proxy.count("secretsmanager.GetSecretValue"), 4);
}

#[tokio::test]
async fn errors_name_the_object_the_role_and_what_to_fix() {
    let aws = Aws::start(&[]).await;
    let missing = "- {objectName: no/such/secret, objectType: secretsmanager}\n";
    let error = aws
        .mount(&[("region", REGION), ("objects", missing)])
        .await
        .err()
        .unwrap();
    assert_eq!(error.code(), tonic::Code::NotFound, "{}", error.message());
    assert!(
        error.message().contains("no/such/secret"),
        "{}",
        error.message()
    );
    let missing = "- {objectName: /no/param, objectType: ssmparameter}\n";
    let error = aws
        .mount(&[("region", REGION), ("objects", missing)])
        .await
        .err()
        .unwrap();
    assert_eq!(error.code(), tonic::Code::NotFound, "{}", error.message());
    // AWS refusing the role: PermissionDenied naming the role and the object.
    aws.proxy.add_fault(Fault {
        operation: "secretsmanager.GetSecretValue".into(),
        region: String::new(),
        times: 1,
        status: 400,
        error_type: "AccessDeniedException".into(),
    });
    let guarded = "- {objectName: team-b/secret, objectType: secretsmanager}\n";
    let error = aws
        .mount(&[("region", REGION), ("objects", guarded)])
        .await
        .err()
        .unwrap();
    assert_eq!(
        error.code(),
        tonic::Code::PermissionDenied,
        "{}",
        error.message()
    );
    assert!(error.message().contains(ROLE), "{}", error.message());
    assert!(
        error.message().contains("team-b/secret"),
        "{}",
        error.message()
    );
    // A service account without the role annotation.
    aws.kube.add_service_account(NAMESPACE, "no-role", &[]);
    let error = aws
        .mount_as(
            "no-role",
            "no-role",
            &[("region", REGION), ("objects", missing)],
        )
        .await
        .err()
        .unwrap();
    assert_eq!(
        error.code(),
        tonic::Code::FailedPrecondition,
        "{}",
        error.message()
    );
    assert!(
        error.message().contains("eks.amazonaws.com/role-arn"),
        "{}",
        error.message()
    );
    // No token for the audience: what to add to the CSIDriver.
    let error = aws
        .mount_attributes(attributes(&[
            ("backend", "aws"),
            ("region", REGION),
            ("objects", missing),
        ]))
        .await
        .err()
        .unwrap();
    assert_eq!(
        error.code(),
        tonic::Code::FailedPrecondition,
        "{}",
        error.message()
    );
    assert!(
        error.message().contains("sts.amazonaws.com"),
        "{}",
        error.message()
    );
    assert!(
        error.message().contains("tokenRequests"),
        "{}",
        error.message()
    );
    // Another service account's token, even with credentials cached for this one.
    let error = aws
        .mount_as(
            "openclaw",
            "other",
            &[("region", REGION), ("objects", missing)],
        )
        .await
        .err()
        .unwrap();
    assert_eq!(
        error.code(),
        tonic::Code::PermissionDenied,
        "{}",
        error.message()
    );
}

#[tokio::test]
async fn the_region_defaults_to_the_nodes_label() {
    let aws = Aws::start_with_env(&[], &[("NODE_NAME", "node-1")]).await;
    aws.kube
        .add_node("node-1", &[("topology.kubernetes.io/region", REGION)]);
    aws.moto.create_secret(REGION, "app/key", "regional").await;
    let objects = "- {objectName: app/key, objectType: secretsmanager}\n";
    for _ in 0..2 {
        let mounted = aws.mount(&[("objects", objects)]).await.expect("mount");
        assert_eq!(mounted.file("app_key"), "regional");
    }
    assert_eq!(
        aws.kube.count("GET /api/v1/nodes/node-1"),
        1,
        "the node's region is kept"
    );
    let secrets_calls: Vec<_> = aws
        .proxy
        .calls()
        .into_iter()
        .filter(|c| c.operation.starts_with("secretsmanager."))
        .collect();
    assert_eq!(secrets_calls.len(), 2);
    assert!(
        secrets_calls.iter().all(|c| c.region == REGION),
        "{secrets_calls:?}"
    );
}

#[tokio::test]
async fn the_token_request_fallback_mints_the_pods_token_only_when_enabled() {
    let aws = Aws::start(&["--token-request-fallback"]).await;
    aws.moto.create_secret(REGION, "app/key", "minted").await;
    let objects = "- {objectName: app/key, objectType: secretsmanager}\n";
    // No serviceAccount.tokens attribute at all.
    let mounted = aws
        .mount_attributes(attributes(&[
            ("backend", "aws"),
            ("region", REGION),
            ("objects", objects),
        ]))
        .await
        .expect("mount with a minted token");
    assert_eq!(mounted.file("app_key"), "minted");
    let minted = aws.kube.state.lock().unwrap().minted.clone();
    assert_eq!(minted.len(), 1);
    let spec = &minted[0]["spec"];
    assert_eq!(spec["audiences"], json!(["sts.amazonaws.com"]));
    assert_eq!(spec["boundObjectRef"]["kind"], "Pod");
    assert_eq!(spec["boundObjectRef"]["name"], "gateway-0");
    assert_eq!(
        spec["boundObjectRef"]["uid"],
        "4e1c2a4e-0000-4000-8000-000000000001"
    );
    assert_eq!(spec["expirationSeconds"], 600);
    assert_eq!(
        aws.kube
            .count("POST /api/v1/namespaces/openclaw/serviceaccounts/openclaw/token"),
        1
    );
    // The same pod's next mount reuses the minted token; another pod (uid) gets its own.
    aws.mount_attributes(attributes(&[
        ("backend", "aws"),
        ("region", REGION),
        ("objects", objects),
    ]))
    .await
    .expect("second mount");
    assert_eq!(
        aws.kube.state.lock().unwrap().minted.len(),
        1,
        "reused for the pod"
    );
    aws.mount_attributes(attributes(&[
        ("backend", "aws"),
        ("region", REGION),
        ("objects", objects),
        (
            "csi.storage.k8s.io/pod.uid",
            "4e1c2a4e-0000-4000-8000-000000000002",
        ),
    ]))
    .await
    .expect("another pod's mount");
    assert_eq!(
        aws.kube.state.lock().unwrap().minted.len(),
        2,
        "one per pod"
    );
}

/// A fake EKS Pod Identity Agent: the documented container-credentials answer, for requests whose
/// `Authorization` header is the expected token.
fn start_agent(expected: String, seen: Arc<Mutex<Vec<String>>>) -> String {
    let app = axum::Router::new().route(
        "/v1/credentials",
        axum::routing::get(move |headers: HeaderMap| {
            let expected = expected.clone();
            let seen = seen.clone();
            async move {
                let token = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                seen.lock().unwrap().push(token.clone());
                if token != expected {
                    return (axum::http::StatusCode::FORBIDDEN, "{}".to_string());
                }
                (
                    axum::http::StatusCode::OK,
                    json!({
                        "AccessKeyId": "ASIAPODIDENTITYTEST1",
                        "SecretAccessKey": "pod-identity-secret-key",
                        "Token": "pod-identity-session-token",
                        "AccountId": "123456789012",
                        "Expiration": "2099-01-01T00:00:00Z"
                    })
                    .to_string(),
                )
            }
        }),
    );
    format!("{}/v1/credentials", support::serve_on_thread(app))
}

#[tokio::test]
async fn eks_pod_identity_sends_the_pods_token_to_the_agent() {
    let issuer = JwtIssuer::generate();
    let token = issuer.token(
        &format!("system:serviceaccount:{NAMESPACE}:openclaw"),
        &["pods.eks.amazonaws.com"],
    );
    let seen = Arc::new(Mutex::new(Vec::new()));
    let agent = start_agent(token.clone(), seen.clone());
    let aws = Aws::start(&["--aws-pod-identity-endpoint", &agent]).await;
    aws.moto
        .create_secret(REGION, "app/key", "via-pod-identity")
        .await;
    let tokens = tokens_attribute("pods.eks.amazonaws.com", &token);
    let objects = "- {objectName: app/key, objectType: secretsmanager}\n";
    let request = attributes(&[
        ("backend", "aws"),
        ("region", REGION),
        ("usePodIdentity", "true"),
        ("objects", objects),
        ("csi.storage.k8s.io/serviceAccount.tokens", &tokens),
    ]);
    for _ in 0..2 {
        let mounted = aws.mount_attributes(request.clone()).await.expect("mount");
        assert_eq!(mounted.file("app_key"), "via-pod-identity");
    }
    assert_eq!(
        *seen.lock().unwrap(),
        [token],
        "one agent call, with the pod's token"
    );
    assert_eq!(aws.proxy.count("AssumeRoleWithWebIdentity"), 0);
    assert_eq!(
        aws.kube.count("GET"),
        0,
        "Pod Identity needs no service-account lookup"
    );
}

#[tokio::test]
async fn jmes_path_non_strings_encodings_and_clashing_files() {
    let aws = Aws::start(&[]).await;
    aws.moto
        .create_secret(
            REGION,
            "app/config",
            r#"{"port": 8080, "tls": {"on": true}, "key_b64": "c2VjcmV0LWtleQ=="}"#,
        )
        .await;
    aws.moto.create_secret(REGION, "app/hex", "6869").await;
    let objects = r#"
- objectName: app/config
  objectType: secretsmanager
  jmesPath:
    - {path: port, objectAlias: port}
    - {path: tls, objectAlias: tls}
    - {path: key_b64, objectAlias: key, encoding: base64}
    - {path: missing, objectAlias: nothing-here}
"#;
    let error = aws
        .mount(&[("region", REGION), ("objects", objects)])
        .await
        .err()
        .unwrap();
    assert_eq!(error.code(), tonic::Code::NotFound, "{}", error.message());
    assert!(
        error.message().contains("\"missing\""),
        "names the expression: {}",
        error.message()
    );
    assert!(
        error.message().contains("app/config"),
        "and the object: {}",
        error.message()
    );
    assert!(
        !error.message().contains("permission"),
        "{}",
        error.message()
    );
    let objects = objects.replace("    - {path: missing, objectAlias: nothing-here}\n", "");
    let hex =
        format!("{objects}- {{objectName: app/hex, objectType: secretsmanager, encoding: hex}}\n");
    let mounted = aws
        .mount(&[("region", REGION), ("objects", &hex)])
        .await
        .expect("mount");
    assert_eq!(mounted.file("port"), "8080");
    assert_eq!(mounted.file("tls"), r#"{"on":true}"#);
    assert_eq!(mounted.file("key"), "secret-key");
    assert_eq!(mounted.file("app_hex"), "hi");
    // The same objectName twice with different labels and no alias: one file, refused.
    aws.proxy.clear();
    let clash = "- {objectName: app/hex, objectType: secretsmanager}\n\
                 - {objectName: app/hex, objectType: secretsmanager, objectVersionLabel: AWSPREVIOUS}\n";
    let error = aws
        .mount(&[("region", REGION), ("objects", clash)])
        .await
        .err()
        .unwrap();
    assert_eq!(
        error.code(),
        tonic::Code::InvalidArgument,
        "{}",
        error.message()
    );
    assert!(
        error.message().contains("objects[1].objectName"),
        "{}",
        error.message()
    );
    assert!(aws.proxy.calls().is_empty(), "refused before any AWS call");
}

/// The shipped example (ServiceAccount and SecretProviderClass) works as documented, through the driver
/// emulator, with the seed secret in Secrets Manager and the role from the service account's annotation.
#[tokio::test]
async fn the_openclaw_example_mounts_through_the_emulator() {
    let aws = Aws::start(&[]).await;
    let seed = r#"{"gateway_token": "gw-example", "anthropic_api_key": "sk-ant-example", "openai_api_key": "sk-example"}"#;
    aws.moto
        .create_secret(REGION, "openclaw/production", seed)
        .await;
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/openclaw-aws.yaml");
    let token_file = aws.provider.dir.path().join("token");
    std::fs::write(
        &token_file,
        aws.issuer.token(
            &format!("system:serviceaccount:{NAMESPACE}:openclaw"),
            &["sts.amazonaws.com"],
        ),
    )
    .unwrap();
    let target = aws.provider.dir.path().join("mount");
    let mut command = std::process::Command::new(support::BINARY);
    command
        .arg("mount")
        .arg("--socket")
        .arg(&aws.provider.socket)
        .arg("--spc")
        .arg(&example)
        .arg("--target")
        .arg(&target)
        .args(["--namespace", NAMESPACE, "--service-account", "openclaw"])
        .arg("--token")
        .arg(format!("sts.amazonaws.com={}", token_file.display()));
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |name: &str| std::fs::read_to_string(target.join(name)).unwrap();
    assert_eq!(read("OPENCLAW_GATEWAY_TOKEN"), "gw-example");
    assert_eq!(read("ANTHROPIC_API_KEY"), "sk-ant-example");
    assert_eq!(read("OPENAI_API_KEY"), "sk-example");
    assert_eq!(read("openclaw.json"), seed);
}

#[tokio::test]
async fn the_value_cache_is_per_identity_and_still_needs_the_pods_own_token() {
    let aws = Aws::start(&["--cache-ttl", "60"]).await;
    aws.kube.add_service_account(
        NAMESPACE,
        "billing",
        &[(
            "eks.amazonaws.com/role-arn",
            "arn:aws:iam::123456789012:role/billing",
        )],
    );
    aws.moto
        .create_secret(REGION, "openclaw/production", SEED)
        .await;
    let params = [("region", REGION), ("objects", SEED_OBJECTS)];
    aws.mount(&params).await.expect("mount");
    aws.mount(&params).await.expect("mount from the cache");
    assert_eq!(
        aws.proxy.count("secretsmanager.GetSecretValue"),
        1,
        "kept for the identity"
    );
    // Another service account (another role) reads for itself.
    aws.mount_as("billing", "billing", &params)
        .await
        .expect("billing's mount");
    assert_eq!(aws.proxy.count("secretsmanager.GetSecretValue"), 2);
    assert_eq!(aws.proxy.count("AssumeRoleWithWebIdentity"), 2);
    // A warm cache does not let a pod of openclaw in with billing's token.
    let error = aws
        .mount_as("openclaw", "billing", &params)
        .await
        .err()
        .unwrap();
    assert_eq!(
        error.code(),
        tonic::Code::PermissionDenied,
        "{}",
        error.message()
    );
    assert_eq!(aws.proxy.count("secretsmanager.GetSecretValue"), 2);
}

#[tokio::test]
async fn hostile_jmes_paths_are_refused_before_any_call() {
    let aws = Aws::start(&[]).await;
    for hostile in [
        "a | join('', [@, @]) | join('', [@, @])",
        "[@, @][1::2147483647]",
        "items[1::2147483647]",
    ] {
        let objects = format!(
            "- objectName: openclaw/production\n  objectType: secretsmanager\n  jmesPath:\n    \
             - {{path: \"{hostile}\", objectAlias: x}}\n"
        );
        let error = aws
            .mount(&[("region", REGION), ("objects", &objects)])
            .await
            .err()
            .unwrap();
        assert_eq!(
            error.code(),
            tonic::Code::InvalidArgument,
            "{hostile}: {}",
            error.message()
        );
        assert!(
            error.message().starts_with("InvalidJmesPath"),
            "{}",
            error.message()
        );
    }
    assert!(aws.proxy.calls().is_empty());
}

/// Migrating without edits: the official AWS provider's documented example class (PROVIDERS.md §2.3,
/// `provider: aws`, no `backend`: Pod Identity, a failover region, pathTranslation, jmesPath, an SSM
/// label), mounted through `aws.sock` (`--compat aws`).
#[tokio::test]
async fn the_official_example_class_mounts_unchanged_through_the_compat_socket() {
    const OFFICIAL: &str = r#"
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata: {name: orders-aws, namespace: orders}
spec:
  provider: aws
  parameters:
    region: eu-west-1
    failoverRegion: eu-central-1
    usePodIdentity: "true"
    pathTranslation: "-"
    objects: |
      - objectName: prod/orders/db
        objectType: secretsmanager
        objectAlias: db.json
        filePermission: "0400"
        jmesPath:
          - {path: username, objectAlias: db-user}
          - {path: '"db-password"', objectAlias: db-pass}
        failoverObject:
          objectName: arn:aws:secretsmanager:eu-central-1:111122223333:secret:prod/orders/db-AbCdEf
      - objectName: /orders/feature-flags
        objectType: ssmparameter
        objectVersionLabel: live
"#;
    let issuer = JwtIssuer::generate();
    let token = issuer.token(
        &format!("system:serviceaccount:{NAMESPACE}:openclaw"),
        &["pods.eks.amazonaws.com"],
    );
    let agent = start_agent(token.clone(), Arc::new(Mutex::new(Vec::new())));
    let aws = Aws::start(&["--aws-pod-identity-endpoint", &agent, "--compat", "aws"]).await;
    let db = r#"{"username": "orders", "db-password": "db-VALUE"}"#;
    aws.moto.create_secret(REGION, "prod/orders/db", db).await;
    let version = aws
        .moto
        .put_parameter(REGION, "/orders/feature-flags", "checkout=on", "String")
        .await;
    aws.moto
        .label_parameter(REGION, "/orders/feature-flags", version, "live")
        .await;
    let mut parameters = support::class_parameters(OFFICIAL);
    parameters.insert(
        "csi.storage.k8s.io/serviceAccount.tokens".into(),
        tokens_attribute("pods.eks.amazonaws.com", &token),
    );
    let all: Vec<(&str, &str)> = parameters
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let request = raw_request(&serde_json::to_string(&attributes(&all)).unwrap());
    let socket = aws.provider.socket.parent().unwrap().join("aws.sock");
    let mut client = openclaw_csi_provider::cli::client::connect(socket)
        .await
        .unwrap();
    let mounted = Mounted(client.mount(request).await.unwrap().into_inner());
    assert_eq!(mounted.file("db.json"), db);
    assert_eq!(mounted.file("db-user"), "orders");
    assert_eq!(mounted.file("db-pass"), "db-VALUE");
    assert_eq!(mounted.file("-orders-feature-flags"), "checkout=on");
}

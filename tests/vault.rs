//! The vault backend against a real OpenBao server: KV v1/v2, pinned versions, encodings and modes, JWT
//! and Kubernetes auth as the pod, PKI writes, one login per identity, the value cache, errors, and
//! OpenBao going away and coming back.
#![cfg(feature = "vault")]

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use openclaw_csi_provider::proto;
use support::identity::{FakeTokenReview, JwtIssuer, tokens_attribute};
use support::openbao::{self, OpenBao};
use support::{Provider, mount_request};
use tonic::Code;

const TOKENS: &str = "csi.storage.k8s.io/serviceAccount.tokens";

const OPENCLAW_OBJECTS: &str = r#"
- objectName: OPENCLAW_GATEWAY_TOKEN
  secretPath: secret/data/openclaw
  secretKey: OPENCLAW_GATEWAY_TOKEN
  filePermission: 0400
- objectName: ANTHROPIC_API_KEY
  secretPath: secret/data/openclaw
  secretKey: ANTHROPIC_API_KEY
- objectName: OPENAI_API_KEY
  secretPath: secret/data/openclaw
  secretKey: OPENAI_API_KEY
"#;

/// OpenBao configured, a JWT issuer it trusts, a fake TokenReview, and a provider pointed at OpenBao.
struct World {
    bao: OpenBao,
    issuer: JwtIssuer,
    kube: FakeTokenReview,
    provider: Provider,
}

impl World {
    async fn start(provider_flags: &[&str]) -> Self {
        let bao = OpenBao::start().await;
        let issuer = JwtIssuer::generate();
        let kube = FakeTokenReview::start().await;
        bao.configure(&issuer.public_pem(), &kube.url).await;
        let mut flags = vec!["--vault-addr", bao.address.as_str()];
        flags.extend_from_slice(provider_flags);
        let provider = Provider::start(&flags);
        Self {
            bao,
            issuer,
            kube,
            provider,
        }
    }

    /// A JWT-auth mount of `objects` as the test pod.
    fn jwt_request(&self, objects: &str) -> proto::MountRequest {
        jwt_request(&self.issuer, objects, &[])
    }

    async fn mount(
        &self,
        request: proto::MountRequest,
    ) -> Result<proto::MountResponse, tonic::Status> {
        let mut client = self.provider.client().await;
        client.mount(request).await.map(tonic::Response::into_inner)
    }
}

/// A JWT-auth mount of `objects` as the test pod, with extra parameters.
fn jwt_request(issuer: &JwtIssuer, objects: &str, extra: &[(&str, &str)]) -> proto::MountRequest {
    let token = issuer.token(openbao::SUBJECT, &["vault"]);
    let tokens = tokens_attribute("vault", &token);
    let mut parameters = vec![
        ("backend", "vault"),
        ("roleName", "openclaw"),
        ("vaultAuthMountPath", "jwt"),
        ("objects", objects),
        (TOKENS, tokens.as_str()),
    ];
    parameters.extend_from_slice(extra);
    mount_request(&parameters)
}

/// The mount was refused with `code` and a message naming `named`.
fn assert_refused(status: &tonic::Status, code: Code, named: &str) {
    assert_eq!(status.code(), code, "{}", status.message());
    assert!(status.message().contains(named), "{}", status.message());
}

fn files(response: &proto::MountResponse) -> HashMap<&str, &proto::File> {
    response
        .files
        .iter()
        .map(|f| (f.path.as_str(), f))
        .collect()
}

fn versions(response: &proto::MountResponse) -> HashMap<&str, &str> {
    response
        .object_version
        .iter()
        .map(|v| (v.id.as_str(), v.version.as_str()))
        .collect()
}

#[tokio::test]
async fn kv_v2_and_v1_versions_encodings_and_modes_with_jwt_auth() {
    let world = World::start(&[]).await;
    let objects = format!(
        "{OPENCLAW_OBJECTS}
- objectName: ANTHROPIC_API_KEY.v1
  secretPath: secret/data/openclaw?version=1
  secretKey: ANTHROPIC_API_KEY
- objectName: keystore.bin
  secretPath: secret/data/openclaw
  secretKey: keystore_b64
  encoding: base64
- objectName: limits.json
  secretPath: secret/data/openclaw
  secretKey: limits
- objectName: kv1-password
  secretPath: kv1/app
  secretKey: password
- objectName: whole.json
  secretPath: /v1/kv1/app
"
    );
    let response = world
        .mount(world.jwt_request(&objects))
        .await
        .expect("mount");
    let files = files(&response);
    assert_eq!(
        files["OPENCLAW_GATEWAY_TOKEN"].contents,
        openbao::GATEWAY_TOKEN.as_bytes()
    );
    assert_eq!(files["OPENCLAW_GATEWAY_TOKEN"].mode, 0o400);
    assert_eq!(
        files["ANTHROPIC_API_KEY"].contents,
        openbao::ANTHROPIC_KEY.as_bytes()
    );
    assert_eq!(files["ANTHROPIC_API_KEY"].mode, 0o644);
    assert_eq!(
        files["OPENAI_API_KEY"].contents,
        openbao::OPENAI_KEY.as_bytes()
    );
    assert_eq!(
        files["ANTHROPIC_API_KEY.v1"].contents,
        openbao::OLD_ANTHROPIC_KEY.as_bytes()
    );
    assert_eq!(files["keystore.bin"].contents, [0u8, 1, 2, 255]);
    assert_eq!(files["limits.json"].contents, br#"{"rpm":60}"#);
    assert_eq!(files["kv1-password"].contents, b"kv1-password-VALUE");
    let whole: serde_json::Value = serde_json::from_slice(&files["whole.json"].contents).unwrap();
    assert_eq!(whole["data"]["password"], "kv1-password-VALUE");

    let versions = versions(&response);
    assert_eq!(
        versions["ANTHROPIC_API_KEY"], "2",
        "KV v2's own version number"
    );
    assert_eq!(versions["ANTHROPIC_API_KEY.v1"], "1");
    assert_eq!(
        versions["kv1-password"].len(),
        43,
        "KV v1 has no version: keyed HMAC"
    );
    let logs = world.provider.logs();
    for secret in [
        openbao::GATEWAY_TOKEN,
        openbao::ANTHROPIC_KEY,
        "kv1-password-VALUE",
    ] {
        assert!(!logs.contains(secret));
    }
}

#[tokio::test]
async fn kubernetes_auth_through_token_review() {
    let world = World::start(&[]).await;
    let token = world
        .kube
        .issue(openbao::POD_NAMESPACE, openbao::SERVICE_ACCOUNT);
    let request = mount_request(&[
        ("backend", "vault"),
        ("roleName", "openclaw"),
        ("objects", OPENCLAW_OBJECTS),
        (TOKENS, &tokens_attribute("vault", &token)),
    ]);
    let response = match world.mount(request).await {
        Ok(response) => response,
        Err(status) => panic!(
            "mount with kubernetes auth: {status:?}\nreviews: {}\n{}",
            world.kube.reviews.lock().unwrap(),
            world.bao.log()
        ),
    };
    assert_eq!(
        files(&response)["OPENAI_API_KEY"].contents,
        openbao::OPENAI_KEY.as_bytes()
    );
    assert!(
        *world.kube.reviews.lock().unwrap() >= 1,
        "OpenBao reviewed the pod's token"
    );
    assert_eq!(world.bao.count("update", "auth/kubernetes/login"), 1);

    // A token the cluster does not know is refused.
    let request = mount_request(&[
        ("backend", "vault"),
        ("roleName", "openclaw"),
        ("objects", OPENCLAW_OBJECTS),
        (
            TOKENS,
            &tokens_attribute("vault", &world.issuer.token(openbao::SUBJECT, &["vault"])),
        ),
        ("csi.storage.k8s.io/serviceAccount.name", "other"),
    ]);
    let status = world.mount(request).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused_and_a_missing_one_is_named() {
    let world = World::start(&[]).await;
    let wrong = world.issuer.token(openbao::SUBJECT, &["not-vault"]);
    let request = mount_request(&[
        ("backend", "vault"),
        ("roleName", "openclaw"),
        ("vaultAuthMountPath", "jwt"),
        ("objects", OPENCLAW_OBJECTS),
        (TOKENS, &tokens_attribute("vault", &wrong)),
    ]);
    let status = world.mount(request).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().starts_with("VaultLoginFailed: "),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("\"openclaw\""),
        "names the role: {}",
        status.message()
    );
    assert!(!status.message().contains(&wrong));

    let request = mount_request(&[
        ("backend", "vault"),
        ("roleName", "openclaw"),
        ("vaultAuthMountPath", "jwt"),
        ("objects", OPENCLAW_OBJECTS),
    ]);
    let status = world.mount(request).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("tokenRequests") && status.message().contains("audience: vault"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn pki_issue_through_method_and_secret_args() {
    let world = World::start(&[]).await;
    let objects = r#"
- objectName: tls.crt
  secretPath: pki/issue/openclaw
  method: PUT
  secretArgs:
    common_name: gateway.openclaw.test
    ttl: 10m
  secretKey: certificate
- objectName: tls.key
  secretPath: pki/issue/openclaw
  method: PUT
  secretArgs:
    common_name: gateway.openclaw.test
    ttl: 10m
  secretKey: private_key
"#;
    let response = world
        .mount(world.jwt_request(objects))
        .await
        .expect("pki issue");
    let files = files(&response);
    assert!(
        files["tls.crt"]
            .contents
            .starts_with(b"-----BEGIN CERTIFICATE-----")
    );
    assert!(String::from_utf8_lossy(&files["tls.key"].contents).contains("PRIVATE KEY"));
    // One write serves both objects: the key matches the certificate of the same issue call.
    assert_eq!(world.bao.count("update", "pki/issue/openclaw"), 1);
    let second = world.mount(world.jwt_request(objects)).await.unwrap();
    assert_ne!(
        second.files[0].contents, response.files[0].contents,
        "writes are never cached"
    );
    assert_eq!(world.bao.count("update", "pki/issue/openclaw"), 2);
}

#[tokio::test]
async fn errors_name_role_path_and_key_never_values() {
    let world = World::start(&[]).await;
    let cases = [
        (
            "- objectName: f\n  secretPath: secret/data/forbidden\n  secretKey: x\n",
            Code::PermissionDenied,
            "VaultPermissionDenied",
            "secret/data/forbidden",
        ),
        (
            "- objectName: m\n  secretPath: secret/data/missing\n  secretKey: x\n",
            Code::NotFound,
            "SecretNotFound",
            "secret/data/missing",
        ),
        (
            "- objectName: k\n  secretPath: secret/data/openclaw\n  secretKey: NOPE\n",
            Code::NotFound,
            "SecretKeyNotFound",
            "NOPE",
        ),
        (
            "- objectName: e\n  secretPath: secret/data/openclaw\n  secretKey: OPENAI_API_KEY\n  encoding: hex\n",
            Code::InvalidArgument,
            "InvalidEncoding",
            "OPENAI_API_KEY",
        ),
        (
            "- objectName: a\n  secretPath: secret/data/openclaw\n  colour: red\n",
            Code::InvalidArgument,
            "InvalidObjects",
            "colour",
        ),
    ];
    for (objects, code, reason, named) in cases {
        let status = world.mount(world.jwt_request(objects)).await.unwrap_err();
        assert_eq!(status.code(), code, "{}", status.message());
        assert!(
            status.message().starts_with(&format!("{reason}: ")),
            "{}",
            status.message()
        );
        assert!(status.message().contains(named), "{}", status.message());
        for secret in ["forbidden-VALUE", openbao::OPENAI_KEY] {
            assert!(!status.message().contains(secret));
        }
    }
    let forbidden = world
        .mount(world.jwt_request(cases[0].0))
        .await
        .unwrap_err();
    assert!(
        forbidden.message().contains("\"openclaw\""),
        "names the role: {}",
        forbidden.message()
    );
    // Unknown parameters are ignored (as the official provider does), named in a debug line, never
    // with their value.
    let unknown = jwt_request(
        &world.issuer,
        OPENCLAW_OBJECTS,
        &[("vaultAdress", "UNKNOWN-PARAMETER-VALUE")],
    );
    world
        .mount(unknown)
        .await
        .expect("an unknown parameter is ignored");
    let logs = world.provider.logs();
    assert!(logs.contains("vaultAdress"), "the key is logged");
    assert!(!logs.contains("UNKNOWN-PARAMETER-VALUE"), "never the value");
    // Without kubelet's pod info the identity is unknown: refused, never a shared token.
    let token = world.issuer.token(openbao::SUBJECT, &["vault"]);
    let attributes = serde_json::json!({
        "backend": "vault", "roleName": "openclaw", "vaultAuthMountPath": "jwt", "objects": OPENCLAW_OBJECTS,
        TOKENS: tokens_attribute("vault", &token),
    });
    let status = world
        .mount(support::raw_request(&attributes.to_string()))
        .await
        .unwrap_err();
    assert_refused(&status, Code::FailedPrecondition, "podInfoOnMount");
}

#[tokio::test]
async fn one_login_per_identity_across_repeated_mounts() {
    let world = World::start(&["--cache-ttl", "0"]).await;
    for _ in 0..10 {
        world
            .mount(world.jwt_request(OPENCLAW_OBJECTS))
            .await
            .expect("mount");
    }
    assert_eq!(
        world.bao.count("update", "auth/jwt/login"),
        1,
        "one login for one identity"
    );
    assert_eq!(
        world.bao.count("read", "secret/data/openclaw"),
        10,
        "cache off: one read per mount (3 objects, 1 path)"
    );
}

#[tokio::test]
async fn the_value_cache_coalesces_concurrent_identical_mounts() {
    let world = World::start(&["--cache-ttl", "30"]).await;
    let objects = format!(
        "{OPENCLAW_OBJECTS}- objectName: kv1\n  secretPath: kv1/app\n  secretKey: password\n"
    );
    let mounts = (0..100).map(|_| world.mount(world.jwt_request(&objects)));
    let results = futures_util::future::join_all(mounts).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(world.bao.count("update", "auth/jwt/login"), 1);
    assert_eq!(
        world.bao.count("read", "secret/data/openclaw"),
        1,
        "one read per distinct path"
    );
    assert_eq!(world.bao.count("read", "kv1/app"), 1);
    let (_, metrics) = world.provider.http_get("/metrics");
    assert!(
        metrics.contains(r#"openclaw_provider_backend_requests_total{backend="vault",operation="login",outcome="2xx"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"openclaw_provider_backend_requests_total{backend="vault",operation="read",outcome="2xx"} 2"#));
    assert!(metrics.contains(
        r#"openclaw_provider_value_cache_lookups_total{backend="vault",result="miss"} 2"#
    ));
    assert!(metrics.contains(
        r#"openclaw_provider_value_cache_lookups_total{backend="vault",result="hit"} 198"#
    ));
}

#[tokio::test]
async fn openbao_stopping_gives_bounded_unavailable_and_the_provider_recovers() {
    let world = World::start(&["--cache-ttl", "0", "--backend-timeout", "2"]).await;
    world
        .mount(world.jwt_request(OPENCLAW_OBJECTS))
        .await
        .expect("first mount");
    let World {
        bao,
        issuer,
        kube,
        provider,
    } = world;
    let mount = |request: proto::MountRequest| {
        let provider = &provider;
        async move { provider.mount(request).await }
    };
    let request = || jwt_request(&issuer, OPENCLAW_OBJECTS, &[]);
    let (dir, port) = bao.stop();

    // OpenBao is gone: the mount fails clearly and within bounds, and the provider keeps serving.
    let started = Instant::now();
    let status = mount(request()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    assert!(
        status.message().contains(&format!("127.0.0.1:{port}")),
        "{}",
        status.message()
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "bounded: {:?}",
        started.elapsed()
    );

    // OpenBao comes back on the same address (fresh storage, same configuration). The provider's cached
    // Vault token means nothing there: the read gets 403, the provider logs in again and retries once.
    let back = OpenBao::start_in(dir, port).await;
    back.configure(&issuer.public_pem(), &kube.url).await;
    let response = mount(request())
        .await
        .expect("mount after OpenBao returned, without a provider restart");
    assert_eq!(
        files(&response)["ANTHROPIC_API_KEY"].contents,
        openbao::ANTHROPIC_KEY.as_bytes()
    );
    assert_eq!(back.count("update", "auth/jwt/login"), 1);
    assert_eq!(
        back.count("read", "secret/data/openclaw"),
        2,
        "the refused read and the retry"
    );
}

/// A CA and a server certificate for `vault.openclaw.test` only (not for 127.0.0.1).
fn test_pki() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "openclaw test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["vault.openclaw.test".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    (ca.pem(), server.pem(), server_key.serialize_pem())
}

/// A TLS OpenBao with a test CA, a provider allowed to reach it, and the CA in the provider's
/// `--tls-files-dir`.
struct TlsWorld {
    _bao: OpenBao,
    issuer: JwtIssuer,
    _kube: FakeTokenReview,
    tls_dir: tempfile::TempDir,
    ca_path: String,
    address: String,
}

impl TlsWorld {
    async fn start() -> Self {
        let (ca_pem, cert_pem, key_pem) = test_pki();
        let (bao, tls_port) = OpenBao::start_with_tls(&cert_pem, &key_pem).await;
        let issuer = JwtIssuer::generate();
        let kube = FakeTokenReview::start().await;
        bao.configure(&issuer.public_pem(), &kube.url).await;
        let tls_dir = tempfile::tempdir().unwrap();
        let ca_path = tls_dir.path().join("vault-ca.pem");
        std::fs::write(&ca_path, &ca_pem).unwrap();
        Self {
            _bao: bao,
            issuer,
            _kube: kube,
            ca_path: ca_path.display().to_string(),
            tls_dir,
            address: format!("https://127.0.0.1:{tls_port}"),
        }
    }

    fn provider(&self, extra: &[&str]) -> Provider {
        let tls_dir = self.tls_dir.path().display().to_string();
        let mut flags = vec![
            "--cache-ttl",
            "0",
            "--vault-allowed-addresses",
            &self.address,
            "--tls-files-dir",
            &tls_dir,
        ];
        flags.extend_from_slice(extra);
        Provider::start(&flags)
    }

    async fn mount(
        &self,
        provider: &Provider,
        extra: &[(&str, &str)],
    ) -> Result<proto::MountResponse, tonic::Status> {
        let mut parameters = vec![("vaultAddress", self.address.as_str())];
        parameters.extend_from_slice(extra);
        let request = jwt_request(&self.issuer, OPENCLAW_OBJECTS, &parameters);
        provider.mount(request).await
    }
}

#[tokio::test]
async fn tls_with_a_test_ca_server_name_and_clear_failures() {
    let world = TlsWorld::start().await;
    let provider = world.provider(&[]);
    let name = ("vaultTLSServerName", "vault.openclaw.test");
    let ca = ("vaultCACertPath", world.ca_path.as_str());
    let response = world
        .mount(&provider, &[ca, name])
        .await
        .expect("TLS with the test CA and server name");
    assert_eq!(
        files(&response)["OPENAI_API_KEY"].contents,
        openbao::OPENAI_KEY.as_bytes()
    );

    let unknown_ca = world.mount(&provider, &[name]).await.unwrap_err();
    assert_refused(&unknown_ca, Code::FailedPrecondition, "VaultTlsFailed: ");
    assert!(
        unknown_ca.message().to_lowercase().contains("certificate"),
        "{}",
        unknown_ca.message()
    );
    let wrong_name = world.mount(&provider, &[ca]).await.unwrap_err();
    assert_refused(&wrong_name, Code::FailedPrecondition, "VaultTlsFailed: ");

    // Turning verification off is the admin's decision.
    let skip = ("vaultSkipTLSVerify", "true");
    let refused = world.mount(&provider, &[skip]).await.unwrap_err();
    assert_refused(&refused, Code::PermissionDenied, "--allow-insecure-tls");
    let insecure = world.provider(&["--allow-insecure-tls"]);
    world
        .mount(&insecure, &[skip])
        .await
        .expect("vaultSkipTLSVerify with --allow-insecure-tls");

    // CA paths: outside --tls-files-dir refused alike whether the file exists or not; inside, a missing
    // file is a configuration error naming the parameter.
    let outside = world
        .mount(&provider, &[("vaultCACertPath", "/nonexistent/ca.pem")])
        .await
        .unwrap_err();
    assert_refused(&outside, Code::PermissionDenied, "--tls-files-dir");
    let missing_inside = format!("{}/missing.pem", world.tls_dir.path().display());
    let missing = world
        .mount(&provider, &[("vaultCACertPath", &missing_inside)])
        .await
        .unwrap_err();
    assert_refused(&missing, Code::FailedPrecondition, "vaultCACertPath");
}

#[tokio::test]
async fn the_admins_tls_flags_are_the_default_trust() {
    let world = TlsWorld::start().await;
    let provider = world.provider(&[
        "--vault-ca-cert",
        &world.ca_path,
        "--vault-tls-server-name",
        "vault.openclaw.test",
    ]);
    let response = world
        .mount(&provider, &[])
        .await
        .expect("trust from --vault-ca-cert and --vault-tls-server-name");
    assert_eq!(
        files(&response)["ANTHROPIC_API_KEY"].contents,
        openbao::ANTHROPIC_KEY.as_bytes()
    );
    // The same flags through Vault's own environment variables.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("openclaw.sock");
    let log = dir.path().join("provider.log");
    let mut child = std::process::Command::new(support::BINARY)
        .args(["serve", "--health-addr", "", "--socket"])
        .arg(&socket)
        .args(["--vault-allowed-addresses", &world.address])
        .env("VAULT_CACERT", &world.ca_path)
        .env("VAULT_TLS_SERVER_NAME", "vault.openclaw.test")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let request = jwt_request(
        &world.issuer,
        OPENCLAW_OBJECTS,
        &[("vaultAddress", &world.address)],
    );
    let mut client = openclaw_csi_provider::cli::client::connect(socket.clone())
        .await
        .unwrap();
    let result = client.mount(request).await;
    let _ = child.kill();
    let _ = child.wait();
    result.expect("trust from VAULT_CACERT and VAULT_TLS_SERVER_NAME");
}

#[tokio::test]
async fn vault_namespace_reads_inside_the_namespace() {
    let world = World::start(&["--cache-ttl", "0"]).await;
    world
        .bao
        .configure_namespace("team-a", &world.issuer.public_pem(), "sk-team-a-VALUE")
        .await;
    let objects = "- objectName: OPENAI_API_KEY\n  secretPath: secret/data/openclaw\n  secretKey: OPENAI_API_KEY\n";
    let request = jwt_request(&world.issuer, objects, &[("vaultNamespace", "team-a")]);
    let response = world.mount(request).await.expect("mount in namespace");
    assert_eq!(response.files[0].contents, b"sk-team-a-VALUE");
    // The same SecretProviderClass without the namespace reads the root namespace's secret.
    let root = world.mount(world.jwt_request(objects)).await.unwrap();
    assert_eq!(root.files[0].contents, openbao::OPENAI_KEY.as_bytes());
}

/// A TCP proxy that holds every connection's first bytes for `delay` before passing them on.
async fn delaying_proxy(target: String, delay: Duration) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    address
}

#[tokio::test]
async fn a_slow_backend_ends_in_a_bounded_error_and_the_provider_keeps_serving() {
    let world = World::start(&[
        "--cache-ttl",
        "0",
        "--backend-timeout",
        "1",
        "--vault-allowed-addresses",
        "*",
    ])
    .await;
    let slow = delaying_proxy(
        format!("127.0.0.1:{}", world.bao.port),
        Duration::from_secs(30),
    )
    .await;
    let request = jwt_request(&world.issuer, OPENCLAW_OBJECTS, &[("vaultAddress", &slow)]);
    let started = Instant::now();
    let status = world.mount(request).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(
        status.code(),
        Code::DeadlineExceeded,
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("--backend-timeout"),
        "{}",
        status.message()
    );
    assert!(
        took < Duration::from_secs(10),
        "three 1 s attempts plus backoff, not 30 s: {took:?}"
    );
    world
        .mount(world.jwt_request(OPENCLAW_OBJECTS))
        .await
        .expect("other mounts still work");
}

/// The shipped example (SecretProviderClass and policy) works as documented, through the driver emulator
/// with Kubernetes auth, the provider's --vault-addr, and the pod's token for audience `vault`.
#[tokio::test]
async fn the_openclaw_example_mounts_through_the_emulator() {
    let world = World::start(&[]).await;
    let example = std::fs::read_to_string(examples().join("openclaw-vault.yaml")).unwrap();
    mount_example_with_emulator(&world, &example, &world.provider.socket).await;
}

/// Migrating without edits: the same class as the official Vault provider's users write it
/// (`provider: vault`, no `backend`), mounted through `vault.sock` (`--compat vault`).
#[tokio::test]
async fn an_official_provider_class_mounts_unchanged_through_the_compat_socket() {
    let world = World::start(&["--compat", "vault"]).await;
    let example = std::fs::read_to_string(examples().join("openclaw-vault.yaml")).unwrap();
    let official: String = example
        .replace("provider: openclaw", "provider: vault")
        .lines()
        .filter(|line| !line.trim_start().starts_with("backend:"))
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(!official.contains("backend:") && official.contains("provider: vault"));
    let socket = world.provider.socket.parent().unwrap().join("vault.sock");
    mount_example_with_emulator(&world, &official, &socket).await;
}

fn examples() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples")
}

/// Mounts the class `spc` (the example's objects) through the emulator on `socket`, with the example
/// policy, and checks the files.
async fn mount_example_with_emulator(world: &World, spc: &str, socket: &std::path::Path) {
    let policy = std::fs::read_to_string(examples().join("openclaw-vault-policy.hcl")).unwrap();
    world
        .bao
        .post(
            "sys/policies/acl/openclaw",
            serde_json::json!({"policy": policy}),
        )
        .await;
    let token_file = world.provider.dir.path().join("token");
    std::fs::write(
        &token_file,
        world
            .kube
            .issue(openbao::POD_NAMESPACE, openbao::SERVICE_ACCOUNT),
    )
    .unwrap();
    let spc_file = world.provider.dir.path().join("spc.yaml");
    std::fs::write(&spc_file, spc).unwrap();
    let target = world.provider.dir.path().join("mount");
    let mut command = std::process::Command::new(support::BINARY);
    command
        .arg("mount")
        .arg("--socket")
        .arg(socket)
        .arg("--spc")
        .arg(&spc_file)
        .arg("--target")
        .arg(&target)
        .args([
            "--namespace",
            openbao::POD_NAMESPACE,
            "--service-account",
            openbao::SERVICE_ACCOUNT,
        ])
        .arg("--token")
        .arg(format!("vault={}", token_file.display()));
    // The fake Kubernetes API runs on this test's runtime: wait for the emulator off it.
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(target.join("ANTHROPIC_API_KEY")).unwrap(),
        openbao::ANTHROPIC_KEY
    );
    assert_eq!(
        std::fs::read_to_string(target.join("OPENCLAW_GATEWAY_TOKEN")).unwrap(),
        openbao::GATEWAY_TOKEN
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("0440") && !stdout.contains(openbao::OPENAI_KEY),
        "{stdout}"
    );
}

#[tokio::test]
async fn allowed_addresses_keep_pods_on_the_admins_vault() {
    let world = World::start(&[
        "--vault-allowed-addresses",
        "https://vault.example:8200,https://backup.example:8200",
    ])
    .await;
    world
        .mount(world.jwt_request(OPENCLAW_OBJECTS))
        .await
        .expect("the provider's own --vault-addr is allowed");
    let request = jwt_request(
        &world.issuer,
        OPENCLAW_OBJECTS,
        &[("vaultAddress", "http://127.0.0.1:9")],
    );
    let status = world.mount(request).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().starts_with("VaultAddressNotAllowed: "),
        "{}",
        status.message()
    );
}

/// The TokenRequest fallback: a driver whose CSIDriver has no `tokenRequests` entry for Vault's audience
/// sends no token; with `--token-request-fallback` the provider mints the pod's own (bound to the pod),
/// which Vault's JWT auth accepts. Without the flag the mount says which audience to add.
#[tokio::test]
async fn the_token_request_fallback_serves_vaults_audience_without_a_csidriver_change() {
    let bao = OpenBao::start().await;
    let issuer = std::sync::Arc::new(JwtIssuer::generate());
    let review = FakeTokenReview::start().await;
    bao.configure(&issuer.public_pem(), &review.url).await;
    let kube = support::fake_kube::FakeKube::start();
    kube.state.lock().unwrap().signer = Some(issuer.clone());
    kube.add_service_account(openbao::POD_NAMESPACE, openbao::SERVICE_ACCOUNT, &[]);
    let kubeconfig = kube.kubeconfig.display().to_string();
    let request = || {
        mount_request(&[
            ("backend", "vault"),
            ("roleName", "openclaw"),
            ("vaultAuthMountPath", "jwt"),
            ("objects", OPENCLAW_OBJECTS),
        ])
    };
    let without = Provider::start(&["--vault-addr", &bao.address, "--kubeconfig", &kubeconfig]);
    let error = without.mount(request()).await.unwrap_err();
    assert_refused(&error, Code::FailedPrecondition, "--token-request-fallback");
    assert_eq!(kube.count("POST"), 0, "nothing minted without the flag");
    let with = Provider::start(&[
        "--vault-addr",
        &bao.address,
        "--kubeconfig",
        &kubeconfig,
        "--token-request-fallback",
    ]);
    let response = with
        .mount(request())
        .await
        .expect("mount with a minted token");
    assert_eq!(
        files(&response)["ANTHROPIC_API_KEY"].contents,
        openbao::ANTHROPIC_KEY.as_bytes()
    );
    let minted = kube.state.lock().unwrap().minted.clone();
    assert_eq!(minted.len(), 1);
    assert_eq!(minted[0]["spec"]["audiences"], serde_json::json!(["vault"]));
    assert_eq!(minted[0]["spec"]["boundObjectRef"]["name"], "gateway-0");
}

//! A hostile pod author against the provider, through the socket as a pod's mounts reach it: every
//! SecretProviderClass parameter is theirs to set (volumeAttributes), the provider runs as root on the
//! node. Each test tries one way to harm the node or another tenant and checks for a clear error (or the
//! right answer), bounded time and memory, and a provider that still serves afterwards.
#![cfg(feature = "vault")]

mod support;

use std::time::{Duration, Instant};

use support::hostile_vault::{HUGE_BYTES, HostileVault, MARKER};
use support::identity::{JwtIssuer, tokens_attribute};
use support::openbao::{self, OpenBao};
use support::{Provider, mount_request};
use tonic::Code;

const TOKENS: &str = "csi.storage.k8s.io/serviceAccount.tokens";
const SERVICE_ACCOUNT: &str = "csi.storage.k8s.io/serviceAccount.name";
const POD_NAME: &str = "csi.storage.k8s.io/pod.name";

/// Values a refusal must never carry.
const FILE_VALUE: &str = "team-b-VALUE-MUST-NOT-LEAK";

/// Mounts as the driver would; the request is built at once, so the parameters need not outlive it.
fn mount<'a>(
    provider: &'a Provider,
    parameters: &[(&str, &str)],
) -> impl Future<Output = Result<openclaw_csi_provider::proto::MountResponse, tonic::Status>> + 'a {
    let request = mount_request(parameters);
    async move { provider.mount(request).await }
}

fn assert_refused(status: &tonic::Status, code: Code, reason: &str) {
    assert_eq!(status.code(), code, "{}", status.message());
    assert!(
        status.message().starts_with(&format!("{reason}: ")),
        "{}",
        status.message()
    );
}

/// A vault mount as service account `openclaw/<service_account>` (pod `pod`), with its own JWT.
fn vault_parameters<'a>(
    tokens: &'a str,
    service_account: &'a str,
    pod: &'a str,
    objects: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut parameters = vec![
        ("backend", "vault"),
        ("roleName", "openclaw"),
        ("vaultAuthMountPath", "jwt"),
        ("objects", objects),
        (TOKENS, tokens),
        (SERVICE_ACCOUNT, service_account),
        (POD_NAME, pod),
    ];
    parameters.extend_from_slice(extra);
    parameters
}

fn tokens_for(issuer: &JwtIssuer, service_account: &str) -> String {
    let subject = format!("system:serviceaccount:openclaw:{service_account}");
    tokens_attribute("vault", &issuer.token(&subject, &["vault"]))
}

fn object(path: &str, key: &str) -> String {
    format!("- objectName: out\n  secretPath: {path}\n  secretKey: {key}\n")
}

/// The test pod (service account `openclaw/openclaw`, pod `p`) with its own token.
struct Pod {
    tokens: String,
}

impl Pod {
    fn new() -> Self {
        Self {
            tokens: tokens_for(&JwtIssuer::generate(), "openclaw"),
        }
    }

    /// Mounts `objects` through `provider` with the pod's vault parameters and `extra` ones.
    async fn mount(
        &self,
        provider: &Provider,
        objects: &str,
        extra: &[(&str, &str)],
    ) -> Result<openclaw_csi_provider::proto::MountResponse, tonic::Status> {
        let parameters = vault_parameters(&self.tokens, "openclaw", "p", objects, extra);
        mount(provider, &parameters).await
    }
}

/// A hostile Vault whose logins answer `lease_duration`, and a provider pointed at it with `flags`.
async fn hostile_provider(lease_duration: &str, flags: &[&str]) -> (HostileVault, Provider) {
    let hostile = HostileVault::start(lease_duration).await;
    let mut all = vec!["--vault-addr", hostile.address.as_str()];
    all.extend_from_slice(flags);
    let provider = Provider::start(&all);
    (hostile, provider)
}

// ---- file backend ------------------------------------------------------------------------------

#[tokio::test]
async fn a_pod_reads_only_its_own_namespaces_directory() {
    let provider = Provider::start(&[]);
    let other = provider.root.join("team-b");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("API_KEY"), FILE_VALUE).unwrap();
    provider.write_object("OWN_KEY", b"own-value");
    let own = provider.namespace_dir();
    std::os::unix::fs::symlink("../team-b/API_KEY", own.join("relative-link")).unwrap();
    std::os::unix::fs::symlink(other.join("API_KEY"), own.join("absolute-link")).unwrap();
    std::os::unix::fs::symlink(&other, own.join("directory-link")).unwrap();
    for name in [
        "../team-b/API_KEY",
        "relative-link",
        "absolute-link",
        "directory-link/API_KEY",
        "/etc/passwd",
    ] {
        let objects = format!("- objectName: {name:?}\n");
        let status = mount(&provider, &[("backend", "file"), ("objects", &objects)])
            .await
            .unwrap_err();
        assert_refused(&status, Code::InvalidArgument, "InvalidObjectName");
        assert!(!status.message().contains(FILE_VALUE));
    }
    let own = mount(
        &provider,
        &[("backend", "file"), ("objects", "- objectName: OWN_KEY\n")],
    )
    .await
    .expect("the pod's own file");
    assert_eq!(own.files[0].contents, b"own-value");

    // Without kubelet's namespace there is no directory to read.
    let anonymous = support::raw_request(r#"{"backend":"file","objects":"- objectName: OWN_KEY"}"#);
    let status = provider.client().await.mount(anonymous).await.unwrap_err();
    assert_refused(&status, Code::FailedPrecondition, "MissingPodInfo");

    // The shared layout is the admin's explicit choice.
    let shared = Provider::start(&["--file-layout", "shared"]);
    std::fs::create_dir_all(shared.root.join("team-b")).unwrap();
    std::fs::write(shared.root.join("team-b/API_KEY"), FILE_VALUE).unwrap();
    let response = mount(
        &shared,
        &[
            ("backend", "file"),
            ("objects", "- objectName: team-b/API_KEY\n"),
        ],
    )
    .await
    .expect("shared layout");
    assert_eq!(response.files[0].contents, FILE_VALUE.as_bytes());
}

// ---- TLS files ---------------------------------------------------------------------------------

fn mkfifo(path: &std::path::Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn tls_paths_from_pods_are_confined_never_block_and_never_exhaust_memory() {
    let hostile = HostileVault::start("3600").await;
    let outside = tempfile::tempdir().unwrap();
    let allowed = tempfile::tempdir().unwrap();
    for dir in [outside.path(), allowed.path()] {
        mkfifo(&dir.join("fifo"));
        std::fs::create_dir(dir.join("directory")).unwrap();
        std::fs::write(dir.join("two-mib.pem"), vec![b'A'; 2 * 1024 * 1024]).unwrap();
    }
    std::os::unix::fs::symlink("/dev/zero", allowed.path().join("zero")).unwrap();
    let allowed_dir = allowed.path().display().to_string();
    let provider = Provider::start(&[
        "--vault-addr",
        &hostile.address,
        "--tls-files-dir",
        &allowed_dir,
        "--cache-ttl",
        "0",
    ]);
    let pod = Pod::new();
    let objects = object("secret/app", "k");
    let path = |dir: &std::path::Path, name: &str| dir.join(name).display().to_string();
    let outside_paths = [
        "/dev/zero".to_string(),
        "/nonexistent/ca.pem".to_string(),
        path(outside.path(), "fifo"),
        path(outside.path(), "directory"),
        path(outside.path(), "two-mib.pem"),
        format!(
            "{allowed_dir}/../{}/two-mib.pem",
            outside.path().file_name().unwrap().to_string_lossy()
        ),
    ];
    let mut messages = Vec::new();
    for (key, file) in outside_paths
        .iter()
        .flat_map(|p| [("vaultCACertPath", p), ("vaultCADirectory", p)])
    {
        let started = Instant::now();
        let status = pod
            .mount(&provider, &objects, &[(key, file)])
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "{key} {file}");
        assert_refused(&status, Code::PermissionDenied, "TlsFileNotAllowed");
        assert!(status.message().contains("--tls-files-dir"));
        messages.push(status.message().replace(file.as_str(), "PATH"));
    }
    // Paths [0] (/dev/zero, exists) and [1] (missing): whether a path exists outside is not revealed.
    assert_eq!(messages[0], messages[2], "vaultCACertPath");
    assert_eq!(messages[1], messages[3], "vaultCADirectory");
    for name in ["fifo", "directory", "two-mib.pem", "zero", "missing.pem"] {
        let file = path(allowed.path(), name);
        let started = Instant::now();
        let status = pod
            .mount(&provider, &objects, &[("vaultCACertPath", &file)])
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "{name}");
        assert_refused(&status, Code::FailedPrecondition, "TlsFileUnusable");
        assert!(status.message().contains("vaultCACertPath"), "{name}");
    }
    // Without --tls-files-dir no pod path is taken at all.
    let strict = Provider::start(&["--vault-addr", &hostile.address]);
    let file = path(allowed.path(), "two-mib.pem");
    let status = pod
        .mount(&strict, &objects, &[("vaultCACertPath", &file)])
        .await
        .unwrap_err();
    assert_refused(&status, Code::PermissionDenied, "TlsFileNotAllowed");

    // Still serving, and memory never grew with what the paths hold.
    let response = pod
        .mount(&provider, &objects, &[])
        .await
        .expect("a good mount afterwards");
    assert_eq!(response.files[0].contents, b"hostile-value");
    assert!(
        provider.peak_rss_kib() < 64 * 1024,
        "peak RSS {} KiB",
        provider.peak_rss_kib()
    );
}

// ---- egress ------------------------------------------------------------------------------------

#[tokio::test]
async fn addresses_outside_the_allow_list_are_never_contacted() {
    let hostile = HostileVault::start("3600").await;
    let pod = Pod::new();
    let objects = object("secret/app", "k");
    let provider = Provider::start(&["--vault-addr", "http://127.0.0.1:1"]);
    let status = pod
        .mount(&provider, &objects, &[("vaultAddress", &hostile.address)])
        .await
        .unwrap_err();
    assert_refused(&status, Code::PermissionDenied, "VaultAddressNotAllowed");
    assert!(status.message().contains("--vault-allowed-addresses"));
    let with_path = format!("{}/v1/secret", hostile.address);
    let status = pod
        .mount(&provider, &objects, &[("vaultAddress", &with_path)])
        .await
        .unwrap_err();
    assert_refused(&status, Code::InvalidArgument, "InvalidParameter");
    assert_eq!(
        hostile.total_requests(),
        0,
        "nothing reached the pod's server"
    );

    let listed = Provider::start(&[
        "--vault-addr",
        "http://127.0.0.1:1",
        "--vault-allowed-addresses",
        &hostile.address,
    ]);
    pod.mount(&listed, &objects, &[("vaultAddress", &hostile.address)])
        .await
        .expect("an allowed address");
    assert_eq!(hostile.total_requests(), 2, "one login, one read");
}

// ---- a hostile backend -------------------------------------------------------------------------

#[tokio::test]
async fn a_hostile_vault_cannot_redirect_flood_or_crash_the_provider() {
    let hostile = HostileVault::start("18446744073709551615").await;
    let issuer = JwtIssuer::generate();
    let tokens = tokens_for(&issuer, "openclaw");
    let provider = Provider::start(&[
        "--vault-addr",
        &hostile.address,
        "--cache-ttl",
        "0",
        "--mount-timeout",
        "10",
    ]);
    let attempt = |path: &str| {
        let objects = format!("- objectName: out\n  secretPath: {path}\n");
        let tokens = tokens.clone();
        let provider = &provider;
        async move {
            let parameters = vault_parameters(&tokens, "openclaw", "p", &objects, &[]);
            mount(provider, &parameters).await
        }
    };
    let redirected = attempt("secret/redirect").await.unwrap_err();
    assert_refused(&redirected, Code::FailedPrecondition, "VaultRedirect");
    assert!(!redirected.message().contains(MARKER));
    assert_eq!(
        hostile.marker_hits(),
        (0, 0),
        "the redirect was not followed"
    );

    for path in ["secret/huge", "secret/huge-declared"] {
        let status = attempt(path).await.unwrap_err();
        assert_refused(&status, Code::ResourceExhausted, "VaultAnswerTooLarge");
        assert!(status.message().contains(path), "{}", status.message());
    }
    let peak = provider.peak_rss_kib();
    assert!(
        peak < 64 * 1024,
        "peak RSS {peak} KiB after answers of {HUGE_BYTES} bytes"
    );

    let not_json = attempt("secret/not-json").await.unwrap_err();
    assert_refused(&not_json, Code::Unavailable, "VaultBadAnswer");

    let once = attempt("secret/throttled-once")
        .await
        .expect("a 429 is retried");
    assert_eq!(hostile.requests("secret/throttled-once"), 2);
    assert!(String::from_utf8_lossy(&once.files[0].contents).contains("hostile-value"));

    let started = Instant::now();
    let throttled = attempt("secret/throttled").await.unwrap_err();
    assert_refused(&throttled, Code::ResourceExhausted, "BackendThrottled");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered before --mount-timeout, took {:?}",
        started.elapsed()
    );
    assert!(hostile.requests("secret/throttled") >= 2, "retried");

    // The login's absurd lease was clamped, not wrapped: one login served every mount above.
    assert_eq!(hostile.requests("auth/jwt/login"), 1);
    let good = attempt("secret/app").await.expect("still serving");
    assert!(String::from_utf8_lossy(&good.files[0].contents).contains("hostile-value"));
}

#[tokio::test]
async fn absurd_lease_numbers_never_crash_a_login() {
    let pod = Pod::new();
    let objects = object("secret/app", "k");
    for lease in [
        "-1",
        "0",
        "1e300",
        "9223372036854775808",
        "-9223372036854775809",
        "0.5",
    ] {
        let hostile = HostileVault::start(lease).await;
        let provider = Provider::start(&["--vault-addr", &hostile.address]);
        let response = pod
            .mount(&provider, &objects, &[])
            .await
            .unwrap_or_else(|e| panic!("lease {lease}: {e:?}"));
        assert_eq!(
            response.files[0].contents, b"hostile-value",
            "lease {lease}"
        );
    }
}

// ---- dynamic secrets ---------------------------------------------------------------------------

#[tokio::test]
async fn leased_answers_are_never_shared_between_pods() {
    let hostile = HostileVault::start("3600").await;
    let issuer = JwtIssuer::generate();
    let tokens = tokens_for(&issuer, "openclaw");
    let provider = Provider::start(&["--vault-addr", &hostile.address, "--cache-ttl", "60"]);
    let objects = "- objectName: username\n  secretPath: database/creds/app\n  secretKey: username\n\
                   - objectName: password\n  secretPath: database/creds/app\n  secretKey: password\n";
    let pod = |name: &'static str| {
        let parameters = vault_parameters(&tokens, "openclaw", name, objects, &[]);
        let request = mount_request(&parameters);
        let provider = &provider;
        async move {
            let response = provider
                .client()
                .await
                .mount(request)
                .await
                .expect("mount")
                .into_inner();
            let file = |path: &str| {
                let file = response.files.iter().find(|f| f.path == path).unwrap();
                String::from_utf8(file.contents.clone()).unwrap()
            };
            (file("username"), file("password"))
        }
    };
    let (first, second) = tokio::join!(pod("gateway-0"), pod("gateway-1"));
    assert_ne!(first.0, second.0, "concurrent pods got one lease");
    // The objects of one mount share one answer.
    assert_eq!(first.0.replace("user", "password"), first.1);
    let third = pod("gateway-2").await;
    assert!(
        third.0 != first.0 && third.0 != second.0,
        "a leased answer was kept"
    );
    assert_eq!(hostile.requests("database/creds/app"), 3);
}

// ---- cache identity (real OpenBao) -------------------------------------------------------------

/// OpenBao with a second service account `other` whose role and policy read only `secret/data/forbidden`.
async fn two_identities() -> (OpenBao, JwtIssuer) {
    let bao = OpenBao::start().await;
    let issuer = JwtIssuer::generate();
    bao.configure(&issuer.public_pem(), "http://127.0.0.1:1")
        .await;
    bao.post(
        "sys/policies/acl/other",
        serde_json::json!({"policy": r#"path "secret/data/forbidden" { capabilities = ["read"] }"#}),
    )
    .await;
    bao.post(
        "auth/jwt/role/other",
        serde_json::json!({
            "role_type": "jwt", "bound_audiences": ["vault"], "user_claim": "sub",
            "bound_subject": "system:serviceaccount:openclaw:other",
            "token_policies": ["other"], "token_ttl": "1h"}),
    )
    .await;
    (bao, issuer)
}

const OPENCLAW_KEY: &str =
    "- objectName: key\n  secretPath: secret/data/openclaw\n  secretKey: OPENAI_API_KEY\n";
const FORBIDDEN_KEY: &str =
    "- objectName: key\n  secretPath: secret/data/forbidden\n  secretKey: x\n";

#[tokio::test]
async fn each_identity_gets_what_its_own_policy_allows_with_the_cache_on() {
    let (bao, issuer) = two_identities().await;
    let provider = Provider::start(&["--vault-addr", &bao.address, "--cache-ttl", "60"]);
    let openclaw = tokens_for(&issuer, "openclaw");
    let other = tokens_for(&issuer, "other");
    let as_openclaw =
        |objects: &'static str| vault_parameters(&openclaw, "openclaw", "p1", objects, &[]);
    let as_other = |objects: &'static str, role: &'static str| {
        vault_parameters(&other, "other", "p2", objects, &[("roleName", role)])
    };
    for round in ["concurrently", "in turn, cache warm"] {
        let (a, b, c) = tokio::join!(
            mount(&provider, &as_openclaw(OPENCLAW_KEY)),
            mount(&provider, &as_other(OPENCLAW_KEY, "other")),
            mount(&provider, &as_other(OPENCLAW_KEY, "openclaw")),
        );
        assert_eq!(
            a.expect(round).files[0].contents,
            openbao::OPENAI_KEY.as_bytes(),
            "{round}"
        );
        assert_eq!(b.unwrap_err().code(), Code::PermissionDenied, "{round}");
        assert_eq!(c.unwrap_err().code(), Code::PermissionDenied, "{round}");
        let (d, e) = tokio::join!(
            mount(&provider, &as_other(FORBIDDEN_KEY, "other")),
            mount(&provider, &as_openclaw(FORBIDDEN_KEY)),
        );
        assert_eq!(
            d.expect(round).files[0].contents,
            b"forbidden-VALUE",
            "{round}"
        );
        assert_eq!(e.unwrap_err().code(), Code::PermissionDenied, "{round}");
    }
}

#[tokio::test]
async fn a_warm_cache_answers_no_one_a_cold_one_would_refuse() {
    let (bao, issuer) = two_identities().await;
    let flags = ["--vault-addr", bao.address.as_str(), "--cache-ttl", "60"];
    let warm = Provider::start(&flags);
    let cold = Provider::start(&flags);
    let own = tokens_for(&issuer, "openclaw");
    mount(
        &warm,
        &vault_parameters(&own, "openclaw", "p", OPENCLAW_KEY, &[]),
    )
    .await
    .expect("warms the login and the value");
    let reads_before = bao.count("read", "secret/data/openclaw");
    let someone_elses = tokens_for(&issuer, "other");
    let forged = format!("{{\"vault\":{{\"token\":\"a.{}.c\"}}}}", "e30");
    let cases: [(&str, Vec<(&str, &str)>); 3] = [
        (
            "no token",
            vec![
                ("backend", "vault"),
                ("roleName", "openclaw"),
                ("vaultAuthMountPath", "jwt"),
                ("objects", OPENCLAW_KEY),
            ],
        ),
        (
            "another service account's token",
            vault_parameters(&someone_elses, "openclaw", "p", OPENCLAW_KEY, &[]),
        ),
        (
            "a token without a subject",
            vault_parameters(&forged, "openclaw", "p", OPENCLAW_KEY, &[]),
        ),
    ];
    for (what, parameters) in cases {
        let on_warm = mount(&warm, &parameters).await.unwrap_err();
        let on_cold = mount(&cold, &parameters).await.unwrap_err();
        assert_eq!(
            on_warm.code(),
            on_cold.code(),
            "{what}: {}",
            on_warm.message()
        );
        assert!(
            matches!(
                on_warm.code(),
                Code::FailedPrecondition | Code::PermissionDenied
            ),
            "{what}: {}",
            on_warm.message()
        );
        assert!(!on_warm.message().contains(openbao::OPENAI_KEY));
    }
    assert_eq!(
        bao.count("read", "secret/data/openclaw"),
        reads_before,
        "no refused mount reached OpenBao"
    );
}

// ---- retries, optional objects, login scope, agents on the node ----------------------------------

/// The first file of a response, as text.
fn first_file(response: &openclaw_csi_provider::proto::MountResponse) -> String {
    String::from_utf8_lossy(&response.files[0].contents).into_owned()
}

#[tokio::test]
async fn throttling_is_retried_even_for_writes_and_failed_writes_are_never_repeated() {
    let (hostile, provider) = hostile_provider("3600", &["--cache-ttl", "0"]).await;
    let pod = Pod::new();
    let write = |path: &str| {
        format!(
            "- objectName: cert\n  secretPath: {path}\n  method: PUT\n  secretArgs:\n    \
             common_name: app.example\n  secretKey: certificate\n"
        )
    };
    let objects = write("pki/issue/throttled-once");
    let response = pod
        .mount(&provider, &objects, &[])
        .await
        .expect("a throttled write is sent again: Vault did nothing");
    assert_eq!(first_file(&response), "cert-2");
    assert_eq!(hostile.requests("pki/issue/throttled-once"), 2);

    let objects = write("pki/issue/fails");
    let status = pod.mount(&provider, &objects, &[]).await.unwrap_err();
    assert_refused(&status, Code::Unavailable, "VaultUnavailable");
    assert_eq!(
        hostile.requests("pki/issue/fails"),
        1,
        "a write that may have been done is never repeated"
    );

    let objects = object("secret/unavailable-once", "k");
    let response = pod
        .mount(&provider, &objects, &[])
        .await
        .expect("a 503 with Retry-After is retried");
    assert_eq!(first_file(&response), "hostile-value");
    assert_eq!(hostile.requests("secret/unavailable-once"), 2);
}

#[tokio::test]
async fn optional_objects_skip_only_what_vault_does_not_have() {
    let (_hostile, provider) = hostile_provider("3600", &[]).await;
    let pod = Pod::new();
    let objects = "- objectName: present\n  secretPath: secret/app\n  secretKey: k\n\
                   - objectName: no-secret\n  secretPath: secret/missing\n  secretKey: k\n  optional: true\n\
                   - objectName: no-key\n  secretPath: secret/app\n  secretKey: nope\n  optional: true\n";
    let response = pod
        .mount(&provider, objects, &[])
        .await
        .expect("optional objects that are absent are skipped");
    let paths: Vec<&str> = response.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["present"]);

    let nothing = "- objectName: no-secret\n  secretPath: secret/missing\n  optional: true\n";
    let response = pod
        .mount(&provider, nothing, &[])
        .await
        .expect("a mount of absent optional objects");
    assert!(response.files.is_empty());
    assert_eq!(response.object_version[0].id, "vault/no-objects-present");

    let required = "- objectName: no-secret\n  secretPath: secret/missing\n";
    let status = pod.mount(&provider, required, &[]).await.unwrap_err();
    assert_refused(&status, Code::NotFound, "SecretNotFound");
    // Optional is about absence only: a refused read still fails the mount.
    let throttled = "- objectName: t\n  secretPath: secret/throttled\n  optional: true\n";
    let status = pod.mount(&provider, throttled, &[]).await.unwrap_err();
    assert_refused(&status, Code::ResourceExhausted, "BackendThrottled");
}

#[tokio::test]
async fn login_scope_pod_gives_each_pod_its_own_login() {
    let pod = Pod::new();
    let objects = object("secret/app", "k");
    for (scope, logins) in [("service-account", 1), ("pod", 2)] {
        let hostile = HostileVault::start("3600").await;
        let provider = Provider::start(&["--vault-addr", &hostile.address, "--login-scope", scope]);
        for uid in ["uid-1", "uid-2", "uid-1"] {
            pod.mount(&provider, &objects, &[("csi.storage.k8s.io/pod.uid", uid)])
                .await
                .expect(scope);
        }
        assert_eq!(hostile.requests("auth/jwt/login"), logins, "{scope}");
    }
}

#[tokio::test]
async fn a_vault_agent_on_a_unix_socket_is_used_only_when_the_admin_names_it() {
    let hostile = HostileVault::start("3600").await;
    let dir = tempfile::tempdir().unwrap();
    let agent = hostile.listen_unix(&dir.path().join("agent.sock"));
    let pod = Pod::new();
    let objects = object("secret/app", "k");
    let provider = Provider::start(&["--vault-addr", &agent]);
    let response = pod
        .mount(&provider, &objects, &[])
        .await
        .expect("the admin's agent socket");
    assert_eq!(first_file(&response), "hostile-value");
    assert_eq!(hostile.requests("secret/app"), 1);

    // `*` allows any http(s) address, never a socket on the node.
    let any = Provider::start(&[
        "--vault-addr",
        &hostile.address,
        "--vault-allowed-addresses",
        "*",
    ]);
    let status = pod
        .mount(&any, &objects, &[("vaultAddress", &agent)])
        .await
        .unwrap_err();
    assert_refused(&status, Code::PermissionDenied, "VaultAddressNotAllowed");
    assert_eq!(hostile.requests("secret/app"), 1, "the socket was not used");
}

#[tokio::test]
async fn one_mounts_answers_together_are_bounded_by_the_response_limit() {
    let flags = ["--max-response-bytes", "1048576", "--cache-ttl", "0"];
    let (_hostile, provider) = hostile_provider("3600", &flags).await;
    let pod = Pod::new();
    // Each answer is under the limit; eight of them hold about 5.5 MiB.
    let objects: String = (0..8)
        .map(|i| format!("- objectName: o{i}\n  secretPath: secret/big/{i}\n  secretKey: k\n"))
        .collect();
    let status = pod.mount(&provider, &objects, &[]).await.unwrap_err();
    assert_refused(&status, Code::ResourceExhausted, "AnswersTooLarge");
    assert!(status.message().contains("--max-response-bytes"));
    // One answer cut into many files: the files are counted before they are copied.
    let copies: String = (0..200)
        .map(|i| format!("- objectName: copy{i}\n  secretPath: secret/big/0\n"))
        .collect();
    let status = pod.mount(&provider, &copies, &[]).await.unwrap_err();
    assert_refused(&status, Code::ResourceExhausted, "ResponseTooLarge");
    // JSON built to multiply when parsed is measured first.
    let dense = object("secret/dense", "k");
    let status = pod.mount(&provider, &dense, &[]).await.unwrap_err();
    assert_refused(&status, Code::ResourceExhausted, "VaultAnswerTooLarge");
    assert!(status.message().contains("parsed"), "{}", status.message());
    let one = object("secret/big/0", "k");
    let response = pod
        .mount(&provider, &one, &[])
        .await
        .expect("one answer under the limit");
    assert_eq!(
        response.files[0].contents.len(),
        support::hostile_vault::BIG_BYTES - 16
    );
    let peak = provider.peak_rss_kib();
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
}

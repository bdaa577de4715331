//! Every bad input gets a clear gRPC status with a reason, through the real socket, and the provider keeps
//! serving afterwards.

mod support;

use support::{OPENCLAW_OBJECTS, Provider, mount_request, raw_request};
use tonic::Code;

/// Sends the request, expects `code` and a message starting with `reason`, then checks the provider
/// still answers a good mount. Returns the message.
async fn expect_error(
    provider: &Provider,
    request: openclaw_csi_provider::proto::MountRequest,
    code: Code,
    reason: &str,
) -> String {
    let mut client = provider.client().await;
    let status = client
        .mount(request)
        .await
        .expect_err("the mount must fail");
    assert_eq!(status.code(), code, "{}", status.message());
    assert!(
        status.message().starts_with(&format!("{reason}: ")),
        "expected reason {reason}, got: {}",
        status.message()
    );
    assert_eq!(
        status
            .metadata()
            .get("x-openclaw-error-code")
            .and_then(|v| v.to_str().ok()),
        Some(reason)
    );
    still_serving(provider).await;
    status.message().to_string()
}

async fn still_serving(provider: &Provider) {
    provider.write_openclaw_keys();
    let mut client = provider.client().await;
    let good = mount_request(&[("backend", "file"), ("objects", OPENCLAW_OBJECTS)]);
    let response = client
        .mount(good)
        .await
        .expect("a good mount after a bad one")
        .into_inner();
    assert_eq!(response.files.len(), 3);
}

async fn expect_invalid_objects(objects: &str, reason: &str) -> String {
    let provider = Provider::start(&[]);
    provider.write_object("a", b"x");
    expect_error(
        &provider,
        mount_request(&[("backend", "file"), ("objects", objects)]),
        Code::InvalidArgument,
        reason,
    )
    .await
}

#[tokio::test]
async fn attributes_that_are_not_a_json_object_of_strings() {
    let provider = Provider::start(&[]);
    for attributes in [
        "not json",
        "[]",
        r#"{"backend":1}"#,
        r#"{"backend":"file","x":{"y":"z"}}"#,
        "",
    ] {
        expect_error(
            &provider,
            raw_request(attributes),
            Code::InvalidArgument,
            "InvalidAttributes",
        )
        .await;
    }
}

#[tokio::test]
async fn secrets_that_are_not_null_or_an_object() {
    let provider = Provider::start(&[]);
    let mut request = mount_request(&[("backend", "file"), ("objects", "- objectName: a")]);
    request.secrets = "[1,2]".into();
    expect_error(&provider, request, Code::InvalidArgument, "InvalidSecrets").await;
}

#[tokio::test]
async fn missing_and_unknown_backend_list_the_valid_names() {
    let provider = Provider::start(&[]);
    let message = expect_error(
        &provider,
        mount_request(&[("objects", "- objectName: a")]),
        Code::InvalidArgument,
        "MissingBackend",
    )
    .await;
    assert!(message.contains("file"), "{message}");
    let message = expect_error(
        &provider,
        mount_request(&[("backend", "consul"), ("objects", "- objectName: a")]),
        Code::InvalidArgument,
        "UnknownBackend",
    )
    .await;
    assert!(
        message.contains("\"consul\"") && message.contains("file"),
        "{message}"
    );
}

#[tokio::test]
async fn objects_that_are_not_yaml() {
    let message = expect_invalid_objects("- objectName: [unclosed", "InvalidObjects").await;
    assert!(message.contains("objects"), "{message}");
    expect_invalid_objects("objectName: a", "InvalidObjects").await;
}

#[tokio::test]
async fn objects_empty() {
    expect_invalid_objects("", "MissingObjects").await;
    expect_invalid_objects("[]", "MissingObjects").await;
    let provider = Provider::start(&[]);
    expect_error(
        &provider,
        mount_request(&[("backend", "file")]),
        Code::InvalidArgument,
        "MissingObjects",
    )
    .await;
}

#[tokio::test]
async fn object_name_with_dot_dot() {
    let message = expect_invalid_objects("- objectName: ../etc/passwd", "InvalidObjectName").await;
    assert!(
        message.contains("objects[0].objectName") && message.contains(".."),
        "{message}"
    );
    expect_invalid_objects("- objectName: a/../../b", "InvalidObjectName").await;
}

#[tokio::test]
async fn object_name_absolute() {
    let message = expect_invalid_objects("- objectName: /etc/passwd", "InvalidObjectName").await;
    assert!(message.contains("absolute"), "{message}");
}

#[tokio::test]
async fn object_name_through_a_symlink_out_of_the_root() {
    let provider = Provider::start(&[]);
    let outside = provider.dir.path().join("outside-secret");
    std::fs::write(&outside, "outside-VALUE").unwrap();
    std::fs::create_dir_all(provider.namespace_dir()).unwrap();
    std::os::unix::fs::symlink(&outside, provider.namespace_dir().join("escape")).unwrap();
    std::os::unix::fs::symlink(
        provider.dir.path(),
        provider.namespace_dir().join("escape-dir"),
    )
    .unwrap();
    for name in ["escape", "escape-dir/outside-secret"] {
        let message = expect_error(
            &provider,
            mount_request(&[
                ("backend", "file"),
                ("objects", &format!("- objectName: {name}")),
            ]),
            Code::InvalidArgument,
            "InvalidObjectName",
        )
        .await;
        assert!(message.contains("outside"), "{message}");
        assert!(!message.contains("outside-VALUE"));
    }
}

async fn expect_invalid_path(path: &str) -> String {
    let objects = format!(
        "- objectName: a\n  path: {}\n",
        serde_json::to_string(path).unwrap()
    );
    expect_invalid_objects(&objects, "InvalidFilePath").await
}

#[tokio::test]
async fn output_path_absolute() {
    let message = expect_invalid_path("/etc/passwd").await;
    assert!(message.contains("absolute"), "{message}");
}

#[tokio::test]
async fn output_path_with_dot_dot() {
    expect_invalid_path("foo/../etc/passwd").await;
    expect_invalid_path("..").await;
}

#[tokio::test]
async fn output_path_leading_dot_dot() {
    let message = expect_invalid_path("..sneaky.txt").await;
    assert!(message.contains("reserves"), "{message}");
    expect_invalid_path("..data").await;
}

#[tokio::test]
async fn output_path_not_clean() {
    for path in ["a//b", "./a", "a/", "a/./b"] {
        let message = expect_invalid_path(path).await;
        assert!(message.contains("clean"), "{path}: {message}");
    }
}

#[tokio::test]
async fn output_path_too_long() {
    let long_path = "d/".repeat(2048) + "f";
    let message = expect_invalid_path(&long_path).await;
    assert!(
        message.contains("4096"),
        "{}",
        &message[..200.min(message.len())]
    );
}

#[tokio::test]
async fn output_path_component_too_long() {
    let message = expect_invalid_path(&format!("dir/{}", "c".repeat(256))).await;
    assert!(message.contains("255"), "{message}");
}

#[tokio::test]
async fn two_objects_with_one_output_path() {
    let message = expect_invalid_objects(
        "- objectName: a\n  path: same\n- objectName: a\n  path: same\n",
        "DuplicateFilePath",
    )
    .await;
    assert!(message.contains("\"same\""), "{message}");
    expect_invalid_objects(
        "- objectName: a\n  path: x\n- objectName: a\n  path: x/y\n",
        "DuplicateFilePath",
    )
    .await;
}

#[tokio::test]
async fn file_permission_that_is_not_a_mode() {
    for mode in ["0800", "rw-r--r--", "1000", "-1", "0x1ff"] {
        let message = expect_invalid_objects(
            &format!("- objectName: a\n  filePermission: {mode}\n"),
            "InvalidObjects",
        )
        .await;
        assert!(
            message.to_lowercase().contains("mode") || message.contains("0777"),
            "{mode}: {message}"
        );
    }
}

#[tokio::test]
async fn permission_that_is_not_a_number() {
    let provider = Provider::start(&[]);
    for permission in ["rw", "", "0x1a4", "4200"] {
        let mut request = mount_request(&[("backend", "file"), ("objects", "- objectName: a")]);
        request.permission = permission.into();
        expect_error(
            &provider,
            request,
            Code::InvalidArgument,
            "InvalidPermission",
        )
        .await;
    }
}

#[tokio::test]
async fn malformed_service_account_tokens() {
    let provider = Provider::start(&[]);
    for tokens in [
        "not json",
        r#"{"vault":"eyJ-TOKEN-VALUE"}"#,
        r#"{"vault":{"expirationTimestamp":"2026-01-01T00:00:00Z"}}"#,
        r#"["eyJ-TOKEN-VALUE"]"#,
    ] {
        let request = mount_request(&[
            ("backend", "file"),
            ("objects", "- objectName: a"),
            ("csi.storage.k8s.io/serviceAccount.tokens", tokens),
        ]);
        let message = expect_error(
            &provider,
            request,
            Code::InvalidArgument,
            "InvalidServiceAccountTokens",
        )
        .await;
        assert!(!message.contains("eyJ-TOKEN-VALUE"), "{message}");
    }
}

#[tokio::test]
async fn ten_thousand_objects_hit_a_clear_limit() {
    let objects: String = (0..10_000)
        .map(|i| format!("- objectName: f{i}\n"))
        .collect();
    let started = std::time::Instant::now();
    let message = expect_invalid_objects(&objects, "TooManyObjects").await;
    assert!(
        message.contains("10000") && message.contains("1000"),
        "{message}"
    );
    // Not a hang: the provider answered (the bound here is generous; the benchmark measures speed).
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}

#[tokio::test]
async fn a_file_larger_than_the_response_limit() {
    let provider = Provider::start(&["--max-response-bytes", "65536"]);
    provider.write_object("big.bin", &vec![b'x'; 100_000]);
    provider.write_object("small", b"x");
    let message = expect_error(
        &provider,
        mount_request(&[
            ("backend", "file"),
            ("objects", "- objectName: small\n- objectName: big.bin\n"),
        ]),
        Code::ResourceExhausted,
        "ResponseTooLarge",
    )
    .await;
    assert!(message.contains("big.bin (100000 bytes)"), "{message}");
    assert!(message.contains("65536"), "{message}");
}

#[tokio::test]
async fn a_missing_object_is_not_found() {
    let provider = Provider::start(&[]);
    let message = expect_error(
        &provider,
        mount_request(&[("backend", "file"), ("objects", "- objectName: absent")]),
        Code::NotFound,
        "ObjectNotFound",
    )
    .await;
    assert!(message.contains("\"absent\""), "{message}");
}

#[tokio::test]
async fn file_backend_without_root_refuses_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("p.sock");
    let log = dir.path().join("log");
    let mut child = std::process::Command::new(support::BINARY)
        .args(["serve", "--health-addr", ""])
        .arg("--socket")
        .arg(&socket)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(std::time::Instant::now() < deadline, "no socket");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut client = openclaw_csi_provider::cli::client::connect(socket.clone())
        .await
        .unwrap();
    let status = client
        .mount(mount_request(&[
            ("backend", "file"),
            ("objects", "- objectName: a"),
        ]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("--file-root"),
        "{}",
        status.message()
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn no_value_or_token_reaches_logs_or_errors() {
    let provider = Provider::start(&[]);
    provider.write_openclaw_keys();
    let tokens =
        r#"{"vault":{"token":"eyJ-SECRET-TOKEN","expirationTimestamp":"2026-01-01T00:00:00Z"}}"#;
    let mut client = provider.client().await;
    let good = mount_request(&[
        ("backend", "file"),
        ("objects", OPENCLAW_OBJECTS),
        ("csi.storage.k8s.io/serviceAccount.tokens", tokens),
    ]);
    let response = client.mount(good).await.unwrap().into_inner();
    assert_eq!(response.files.len(), 3);
    let bad = mount_request(&[
        ("backend", "file"),
        ("objects", "- objectName: ANTHROPIC_API_KEY\n  path: /abs\n"),
        ("csi.storage.k8s.io/serviceAccount.tokens", tokens),
    ]);
    let status = client.mount(bad).await.unwrap_err();
    let (_, metrics) = provider.http_get("/metrics");
    let logs = provider.logs();
    assert!(
        logs.contains("\"message\":\"mount\""),
        "one log line per mount:\n{logs}"
    );
    for secret in support::OPENCLAW_KEYS
        .iter()
        .map(|(_, v)| *v)
        .chain(["eyJ-SECRET-TOKEN"])
    {
        assert!(!logs.contains(secret), "log leaks {secret}");
        assert!(!metrics.contains(secret), "metrics leak {secret}");
        assert!(!status.message().contains(secret), "error leaks {secret}");
        for version in &response.object_version {
            assert!(!version.version.contains(secret));
        }
    }
}

//! The `mount` driver emulator and the `demo`, run as a user runs them.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use support::{BINARY, OPENCLAW_KEYS, Provider};

const EXAMPLE_SPC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/examples/openclaw-file.yaml"
);

fn mount(provider: &Provider, target: &Path, extra: &[&str]) -> Output {
    Command::new(BINARY)
        .arg("mount")
        .arg("--socket")
        .arg(&provider.socket)
        .args(["--spc", EXAMPLE_SPC])
        .arg("--target")
        .arg(target)
        .args(extra)
        .output()
        .expect("run mount")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn mount_writes_the_driver_layout_and_never_prints_values() {
    let provider = Provider::start(&[]);
    provider.write_openclaw_keys();
    let target = provider.dir.path().join("mount");
    let out = mount(
        &provider,
        &target,
        &["--token", &format!("vault={}", write_token(&provider))],
    );
    assert!(
        out.status.success(),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    for (name, value) in OPENCLAW_KEYS {
        assert!(text.contains(name), "{text}");
        assert!(
            !text.contains(value),
            "values are never printed without --show-values"
        );
        assert_eq!(fs::read_to_string(target.join(name)).unwrap(), value);
        assert_eq!(
            fs::read_link(target.join(name)).unwrap(),
            Path::new("..data").join(name),
            "top-level entries are symlinks into ..data"
        );
    }
    assert!(
        text.contains("0440") && text.contains("file/OPENCLAW_GATEWAY_TOKEN"),
        "{text}"
    );
    let mode = fs::metadata(target.join("OPENCLAW_GATEWAY_TOKEN"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o440);
    let data_dir = fs::read_link(target.join("..data")).unwrap();
    assert!(
        data_dir.to_string_lossy().starts_with("..20"),
        "{data_dir:?}"
    );

    // Nothing changed: nothing rewritten.
    let out = mount(&provider, &target, &[]);
    assert!(stdout(&out).contains("unchanged"), "{}", stdout(&out));
    assert_eq!(fs::read_link(target.join("..data")).unwrap(), data_dir);

    // Rotation: a new data directory, the old one removed.
    provider.write_object("ANTHROPIC_API_KEY", b"sk-ant-rotated");
    let out = mount(&provider, &target, &["--show-values", "--output", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["written"]
            .as_str()
            .unwrap()
            .starts_with("written to ..20")
    );
    let values: Vec<_> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["value"].clone())
        .collect();
    assert!(values.contains(&serde_json::json!("sk-ant-rotated")));
    assert_ne!(fs::read_link(target.join("..data")).unwrap(), data_dir);
    assert!(!target.join(&data_dir).exists());
    // The token reached the provider in the attributes the driver would send, and was not logged.
    assert!(!provider.logs().contains("eyJ-emulated-token"));
}

fn write_token(provider: &Provider) -> String {
    let path = provider.dir.path().join("token.jwt");
    fs::write(&path, "eyJ-emulated-token\n").unwrap();
    path.display().to_string()
}

#[test]
fn mount_reports_provider_errors_and_exits_non_zero() {
    let provider = Provider::start(&[]);
    let target = provider.dir.path().join("mount");
    let out = mount(&provider, &target, &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("NotFound") && stderr.contains("ObjectNotFound"),
        "{stderr}"
    );
    let out = mount(&provider, &target, &["--attribute", "backend=nope"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("UnknownBackend"));
}

#[test]
fn benchmark_reports_latency_and_rate_as_json() {
    let provider = Provider::start(&[]);
    provider.write_openclaw_keys();
    let out = Command::new(BINARY)
        .arg("mount")
        .arg("--socket")
        .arg(&provider.socket)
        .args([
            "--spc",
            EXAMPLE_SPC,
            "--repeat",
            "200",
            "--concurrency",
            "8",
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["count"], 200);
    assert_eq!(report["errors"], 0);
    assert_eq!(report["concurrency"], 8);
    for key in ["p50_ms", "p90_ms", "p99_ms", "mounts_per_second"] {
        assert!(report[key].as_f64().unwrap() > 0.0, "{key}: {report}");
    }
    assert!(report["p50_ms"].as_f64() <= report["p99_ms"].as_f64());
    let (_, metrics) = provider.http_get("/metrics");
    assert!(metrics.contains(r#"openclaw_provider_mounts_total{backend="file",code="Ok"} 200"#));
}

#[test]
fn demo_runs_end_to_end() {
    let out = Command::new(BINARY).arg("demo").output().unwrap();
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("OPENCLAW_GATEWAY_TOKEN -> ..data/OPENCLAW_GATEWAY_TOKEN"),
        "{text}"
    );
    assert!(
        text.contains("rotated: file/ANTHROPIC_API_KEY version"),
        "{text}"
    );
    assert!(
        !text.contains("rotated: file/OPENAI_API_KEY"),
        "only the changed key rotates"
    );
    assert!(text.contains("nothing rewritten"), "{text}");
    assert!(
        !text.contains("NOT-A-REAL"),
        "the demo shows versions, not values"
    );
}

/// Runs `check` on a SecretProviderClass with these parameters and flags: (exit code, stdout).
fn check(dir: &Path, parameters: &str, flags: &[&str]) -> (i32, String) {
    let spc = dir.join("spc.yaml");
    let text = format!(
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata:\n  name: app\n  \
         namespace: openclaw\nspec:\n  provider: openclaw\n  parameters:\n{parameters}"
    );
    fs::write(&spc, text).unwrap();
    let out = Command::new(BINARY)
        .arg("check")
        .arg("--spc")
        .arg(&spc)
        .args(flags)
        .env_remove("VAULT_ADDR")
        .output()
        .expect("run check");
    (out.status.code().unwrap_or(-1), stdout(&out))
}

#[test]
fn check_lints_a_secret_provider_class_as_the_flags_would_take_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().display().to_string();
    let file_flags = ["--file-root", root.as_str()];
    let good = "    backend: file\n    objects: |\n      - objectName: OPENAI_API_KEY\n";
    let (code, out) = check(dir.path(), good, &file_flags);
    assert_eq!((code, out.starts_with("ok: ")), (0, true), "{out}");

    // The same class on a provider without --file-root.
    let (code, out) = check(dir.path(), good, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FileBackendDisabled"), "{out}");

    let duplicate = "    backend: file\n    objecs: x\n    objects: |\n      - objectName: A\n        \
                     path: key\n      - objectName: B\n        path: key\n";
    let (code, out) = check(dir.path(), duplicate, &file_flags);
    assert_eq!(code, 1);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "one line per finding: {out}");
    assert!(
        lines[0].contains("\"objecs\"") && lines[0].contains("did you mean \"objects\""),
        "{out}"
    );
    assert!(lines[1].contains("DuplicateFilePath"), "{out}");

    let (code, out) = check(dir.path(), "    backend: valt\n", &file_flags);
    assert_eq!(code, 1);
    assert!(out.contains("UnknownBackend"), "{out}");
}

#[cfg(feature = "vault")]
#[test]
fn check_reports_what_the_providers_flags_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let vault = "    backend: vault\n    roleName: app\n    vaultAdress: https://vault.example:8200\n    \
                 vaultSkipTLSVerify: \"true\"\n    objects: |\n      - objectName: k\n        \
                 secretPath: secret/data/app\n        secretKey: k\n";
    let (code, out) = check(
        dir.path(),
        vault,
        &["--vault-addr", "https://vault.example:8200"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("did you mean \"vaultAddress\""), "{out}");
    assert!(
        out.contains("InsecureTlsNotAllowed") && out.contains("--allow-insecure-tls"),
        "{out}"
    );
    let allowed = [
        "--vault-addr",
        "https://vault.example:8200",
        "--allow-insecure-tls",
    ];
    let fixed = vault.replace("vaultAdress", "vaultAddress");
    let (code, out) = check(dir.path(), &fixed, &allowed);
    assert_eq!((code, out.starts_with("ok: ")), (0, true), "{out}");
    let elsewhere = fixed.replace("vault.example", "other.example");
    let (code, out) = check(dir.path(), &elsewhere, &allowed);
    assert_eq!(code, 1);
    assert!(out.contains("VaultAddressNotAllowed"), "{out}");
}

#[cfg(feature = "aws")]
#[test]
fn check_takes_the_aws_example_and_finds_what_a_mount_would_refuse() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/openclaw-aws.yaml");
    let out = Command::new(BINARY)
        .arg("check")
        .arg("--spc")
        .arg(&example)
        .env_remove("AWS_REGION")
        .output()
        .expect("run check");
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let dir = tempfile::tempdir().unwrap();
    let aws = "    backend: aws\n    region: eu-west-1\n    pathTranslaton: \"-\"\n    objects: |\n      \
               - objectName: arn:aws:secretsmanager:us-east-1:111122223333:secret:app-AbCdEf\n";
    let (code, out) = check(dir.path(), aws, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("did you mean \"pathTranslation\""), "{out}");
    assert!(
        out.contains("objects[0].objectName") && out.contains("us-east-1"),
        "{out}"
    );
}

#[cfg(feature = "gcp")]
#[test]
fn check_takes_the_gcp_example_and_finds_what_a_mount_would_refuse() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/openclaw-gcp.yaml");
    let out = Command::new(BINARY)
        .arg("check")
        .arg("--spc")
        .arg(&example)
        .output()
        .expect("run check");
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let dir = tempfile::tempdir().unwrap();
    for (parameters, says) in [
        (
            "    backend: gcp\n    secrets: |\n      - resourceName: projects/p/locations/evil.example/secrets/s/versions/1\n        path: f\n",
            "secrets[0].resourceName",
        ),
        (
            "    backend: gcp\n    auth: provider-adc\n    secrets: |\n      - resourceName: projects/p/secrets/s/versions/1\n        path: f\n",
            "--gcp-allow-provider-adc",
        ),
        (
            "    backend: gcp\n    secret: |\n      - resourceName: projects/p/secrets/s/versions/1\n",
            "secrets",
        ),
    ] {
        let (code, out) = check(dir.path(), parameters, &[]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains(says), "{says}: {out}");
    }
}

/// `check` takes a class as the socket its provider names would: an unchanged `provider: vault` class
/// with `--compat vault` is checked by the vault backend; `--default-backend` serves ours.
#[cfg(feature = "vault")]
#[test]
fn check_takes_official_classes_as_the_compat_sockets_would() {
    let dir = tempfile::tempdir().unwrap();
    let spc = dir.path().join("spc.yaml");
    let class = |provider: &str| {
        format!(
            "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata:\n  \
             name: app\n  namespace: openclaw\nspec:\n  provider: {provider}\n  parameters:\n    \
             roleName: app\n    vaultAddress: https://vault.example:8200\n    objects: |\n      \
             - {{objectName: k, secretPath: secret/data/app, secretKey: k}}\n"
        )
    };
    let run = |flags: &[&str]| {
        let out = Command::new(BINARY)
            .arg("check")
            .arg("--spc")
            .arg(&spc)
            .args(["--vault-allowed-addresses", "*"])
            .args(flags)
            .output()
            .expect("run check");
        (out.status.code().unwrap_or(-1), stdout(&out))
    };
    fs::write(&spc, class("vault")).unwrap();
    let (code, out) = run(&[]);
    assert_eq!(code, 1);
    assert!(
        out.contains("UnknownProvider") && out.contains("vault"),
        "without --compat vault the driver sends it elsewhere: {out}"
    );
    let (code, out) = run(&["--compat", "vault"]);
    assert_eq!(code, 0, "{out}");
    fs::write(&spc, class("openclaw")).unwrap();
    let (code, out) = run(&["--compat", "vault"]);
    assert!(code == 1 && out.contains("MissingBackend"), "{out}");
    let (code, out) = run(&["--default-backend", "vault"]);
    assert_eq!(code, 0, "{out}");
    // --default-backend is our socket's: a class for another provider's socket never reaches it.
    fs::write(&spc, class("azure")).unwrap();
    let (code, out) = run(&["--default-backend", "vault"]);
    assert!(code == 1 && out.contains("UnknownProvider"), "{out}");
}

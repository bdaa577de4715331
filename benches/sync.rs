//! Benchmark of the sync controller (`cargo bench --bench sync`, after the README's test command has
//! installed OpenBao): 10,000 SecretSyncs over one service account and 100 KV paths (100 SecretSyncs per
//! SecretProviderClass), against the fake API server and a real OpenBao. Prints a markdown table: time
//! until every Secret is written, the controller's resident memory, OpenBao reads during the first sync
//! and (values and KV v2 metadata apart) during one later poll cycle, and API writes during a poll cycle
//! in which nothing changed.
//!
//! Settings: `OPENCLAW_BENCH_SYNCS` (default 10000), `OPENCLAW_BENCH_PATHS` (100),
//! `OPENCLAW_BENCH_INTERVAL` seconds (30).

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::fake_kube::FakeKube;
use support::identity::{FakeTokenReview, JwtIssuer};
use support::openbao::{self, OpenBao};
use support::sync_process::{SyncProcess, base_flags};

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// OpenBao reads of the benchmark's values and of their metadata (versions only) so far (from its
/// audit log).
fn reads(bao: &OpenBao) -> (usize, usize) {
    let audited = bao.audited_requests();
    let count = |prefix: &str| {
        audited
            .iter()
            .filter(|(op, path)| op == "read" && path.starts_with(prefix))
            .count()
    };
    (count("secret/data/bench/"), count("secret/metadata/bench/"))
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    openclaw_csi_provider::install_crypto_provider();
    let syncs = setting("OPENCLAW_BENCH_SYNCS", 10_000);
    let paths = setting("OPENCLAW_BENCH_PATHS", 100).max(1);
    let interval = setting("OPENCLAW_BENCH_INTERVAL", 30);
    let bao = OpenBao::start().await;
    let issuer = Arc::new(JwtIssuer::generate());
    let review = FakeTokenReview::start().await;
    bao.configure(&issuer.public_pem(), &review.url).await;
    bao.post(
        "sys/policies/acl/openclaw",
        json!({"policy": r#"
            path "secret/data/*" { capabilities = ["read"] }
            path "secret/metadata/*" { capabilities = ["read"] }
        "#}),
    )
    .await;
    let kube = FakeKube::start();
    kube.state.lock().unwrap().signer = Some(issuer.clone());
    kube.add_service_account(openbao::POD_NAMESPACE, openbao::SERVICE_ACCOUNT, &[]);
    for path in 0..paths {
        bao.post(
            &format!("secret/data/bench/p{path}"),
            json!({"data": {"API_KEY": format!("bench-value-{path}")}}),
        )
        .await;
        kube.put(
            "apis/secrets-store.csi.x-k8s.io/v1",
            "secretproviderclasses",
            openbao::POD_NAMESPACE,
            json!({
                "apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
                "metadata": {"name": format!("p{path}"), "namespace": openbao::POD_NAMESPACE},
                "spec": {"provider": "openclaw", "parameters": {
                    "backend": "vault", "roleName": "openclaw", "vaultAuthMountPath": "jwt",
                    "objects": format!("- {{objectName: API_KEY, secretPath: secret/data/bench/p{path}, secretKey: API_KEY}}\n")}}
            }),
        );
    }
    for index in 0..syncs {
        kube.put(
            "apis/openclaw.io/v1alpha1",
            "secretsyncs",
            openbao::POD_NAMESPACE,
            json!({"apiVersion": "openclaw.io/v1alpha1", "kind": "SecretSync",
                   "metadata": {"name": format!("s{index}"), "namespace": openbao::POD_NAMESPACE},
                   "spec": {"secretProviderClassName": format!("p{}", index % paths),
                            "serviceAccountName": openbao::SERVICE_ACCOUNT,
                            "refreshInterval": format!("{interval}s")}}),
        );
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut flags = base_flags(&kube.kubeconfig, &dir.path().join("hmac-key"));
    // The benchmark's own API rate limits replace the tests' (a flag may be given once).
    for limit in ["--kube-api-qps", "--kube-api-burst"] {
        if let Some(at) = flags.iter().position(|f| f == limit) {
            flags.drain(at..at + 2);
        }
    }
    flags.extend(
        [
            "--vault-addr",
            &bao.address,
            "--kube-api-qps",
            "100000",
            "--kube-api-burst",
            "100000",
            "--sync-concurrency",
            "16",
            "--log-level",
            "warn",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let reads_before = reads(&bao);
    let started = Instant::now();
    let mut controller = SyncProcess::start(dir.path(), "bench", &flags);
    let pid = controller.pid();
    let deadline = started + Duration::from_secs(1800);
    loop {
        let written = kube.list("secrets", openbao::POD_NAMESPACE).len();
        if written >= syncs {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {written} of {syncs} Secrets after 30 min:\n{}",
            controller.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let first_sync = started.elapsed();
    let first_reads = reads(&bao).0 - reads_before.0;
    // Let the status writes of the first sync land, then watch one whole poll cycle (interval + 10 %).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (writes_before, reads_cycle_before) = (kube.writes(), reads(&bao));
    let cycle = Duration::from_secs_f64(interval as f64 * 1.1 + 5.0);
    tokio::time::sleep(cycle).await;
    let cycle_writes = kube.writes() - writes_before;
    let reads_after = reads(&bao);
    let cycle_reads = reads_after.0 - reads_cycle_before.0;
    let cycle_versions = reads_after.1 - reads_cycle_before.1;
    let unchanged = controller.metric("openclaw_sync_reconcile_total{result=\"unchanged\"}");
    let peak = rss_kib(pid, "VmHWM:");
    let now = rss_kib(pid, "VmRSS:");
    // A clean stop (a profiler run under OPENCLAW_SYNC_WRAPPER writes its report at exit).
    controller.terminate();
    println!("| measure | value |\n|---|---|");
    println!(
        "| SecretSyncs / SecretProviderClasses (KV paths) / identities | {syncs} / {paths} / 1 |"
    );
    println!(
        "| time until every Secret was written | {:.1} s |",
        first_sync.as_secs_f64()
    );
    println!("| OpenBao reads during the first sync | {first_reads} |");
    println!(
        "| OpenBao value reads during one poll cycle ({:.0} s, nothing changed) | {cycle_reads} |",
        cycle.as_secs_f64()
    );
    println!("| OpenBao metadata (version) reads during that cycle | {cycle_versions} |");
    println!("| Kubernetes API writes during that cycle | {cycle_writes} |");
    println!("| reconciles that found nothing changed (whole run) | {unchanged} |");
    println!(
        "| controller resident memory: peak / at the end | {:.1} MiB / {:.1} MiB |",
        peak as f64 / 1024.0,
        now as f64 / 1024.0
    );
}

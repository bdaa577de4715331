//! Benchmark of the vault backend against a local OpenBao (`cargo bench --bench vault`, after the README's
//! test command has installed OpenBao). Prints markdown tables:
//! (a) mount latency against the same login and reads made as plain sequential HTTP requests;
//! (b) OpenBao requests (logins and reads, from its audit log) for repeated and concurrent mounts.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use openclaw_csi_provider::proto;
use serde_json::json;
use support::identity::{JwtIssuer, tokens_attribute};
use support::openbao::OpenBao;
use support::{Provider, mount_request};

const ITERATIONS: usize = 30;
const PATHS: usize = 10;
const KEYS_PER_PATH: usize = 5;

fn openclaw_objects() -> String {
    [
        "OPENCLAW_GATEWAY_TOKEN",
        "ANTHROPIC_API_KEY",
        "OPENAI_API_KEY",
    ]
    .iter()
    .map(|k| format!("- objectName: {k}\n  secretPath: secret/data/openclaw\n  secretKey: {k}\n"))
    .collect()
}

fn fifty_objects() -> String {
    (0..PATHS)
        .flat_map(|p| (0..KEYS_PER_PATH).map(move |k| (p, k)))
        .map(|(p, k)| {
            format!(
                "- objectName: p{p}-k{k}\n  secretPath: secret/data/bench/p{p}\n  secretKey: k{k}\n"
            )
        })
        .collect()
}

struct Bench {
    bao: OpenBao,
    issuer: JwtIssuer,
    http: reqwest::Client,
}

impl Bench {
    fn subject(identity: usize) -> String {
        format!("system:serviceaccount:openclaw:bench-{identity}")
    }

    fn request(&self, identity: usize, objects: &str) -> proto::MountRequest {
        let token = self.issuer.token(&Self::subject(identity), &["vault"]);
        let account = format!("bench-{identity}");
        mount_request(&[
            ("backend", "vault"),
            ("roleName", "bench"),
            ("vaultAuthMountPath", "jwt"),
            ("objects", objects),
            ("csi.storage.k8s.io/serviceAccount.name", &account),
            (
                "csi.storage.k8s.io/serviceAccount.tokens",
                &tokens_attribute("vault", &token),
            ),
        ])
    }

    async fn login(&self, identity: usize) -> String {
        let jwt = self.issuer.token(&Self::subject(identity), &["vault"]);
        let login: serde_json::Value = self
            .http
            .post(format!("{}/v1/auth/jwt/login", self.bao.address))
            .json(&json!({"role": "bench", "jwt": jwt}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        login["auth"]["client_token"].as_str().unwrap().to_string()
    }

    /// The same work as a mount, as plain sequential HTTP: one login, then each path once.
    async fn baseline(&self, identity: usize, paths: &[String]) -> Duration {
        let started = Instant::now();
        let token = self.login(identity).await;
        self.read_all(&token, paths).await;
        started.elapsed()
    }

    /// The reads alone, with a token already in hand.
    async fn baseline_reads(&self, token: &str, paths: &[String]) -> Duration {
        let started = Instant::now();
        self.read_all(token, paths).await;
        started.elapsed()
    }

    async fn read_all(&self, token: &str, paths: &[String]) {
        for path in paths {
            let reply = self
                .http
                .get(format!("{}/v1/{path}", self.bao.address))
                .header("X-Vault-Token", token)
                .send()
                .await
                .unwrap();
            assert!(reply.status().is_success());
            let _ = reply.bytes().await.unwrap();
        }
    }
}

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1000.0
}

type Client = openclaw_csi_provider::proto::csi_driver_provider_client::CsiDriverProviderClient<
    tonic::transport::Channel,
>;

/// One Mount over an existing connection (the driver keeps one per provider).
async fn mount(client: &Client, request: proto::MountRequest) {
    let response = client.clone().mount(request).await.expect("mount");
    assert!(!response.into_inner().files.is_empty());
}

async fn setup() -> Bench {
    let bao = OpenBao::start().await;
    let issuer = JwtIssuer::generate();
    bao.configure(&issuer.public_pem(), "http://127.0.0.1:9")
        .await;
    for p in 0..PATHS {
        let data: serde_json::Map<_, _> = (0..KEYS_PER_PATH)
            .map(|k| (format!("k{k}"), json!(format!("value-{p}-{k}"))))
            .collect();
        bao.post(&format!("secret/data/bench/p{p}"), json!({"data": data}))
            .await;
    }
    let policy = r#"path "secret/data/openclaw" { capabilities = ["read"] }
path "secret/data/bench/*" { capabilities = ["read"] }"#;
    bao.post("sys/policies/acl/bench", json!({"policy": policy}))
        .await;
    bao.post(
        "auth/jwt/role/bench",
        json!({
        "role_type": "jwt", "bound_audiences": ["vault"], "user_claim": "sub",
        "token_policies": ["bench"], "token_ttl": "1h"}),
    )
    .await;
    Bench {
        bao,
        issuer,
        http: reqwest::Client::new(),
    }
}

/// (a): median latency of mounts, cold (a new identity: login + reads) and warm (login cached), against the
/// plain sequential baseline, with the value cache off so every mount really reads.
async fn latency(bench: &Bench) {
    let provider = start_provider(bench, "0");
    let client = provider.client().await;
    let cases = [
        (
            "3 OpenClaw keys, 1 path",
            openclaw_objects(),
            vec!["secret/data/openclaw".to_string()],
        ),
        (
            "50 objects, 10 paths",
            fifty_objects(),
            (0..PATHS)
                .map(|p| format!("secret/data/bench/p{p}"))
                .collect(),
        ),
    ];
    println!(
        "| mount | provider, cold (login + reads) | sequential HTTP (login + reads) | cold ÷ sequential | provider, warm (token cached) | sequential HTTP (reads only) | warm ÷ sequential reads |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut identity = 1000;
    for (name, objects, paths) in cases {
        let (mut cold, mut warm, mut base, mut base_reads) = (vec![], vec![], vec![], vec![]);
        let token = bench.login(1).await;
        mount(&client, bench.request(1, &objects)).await; // warm-up: connections, token for identity 1
        for _ in 0..ITERATIONS {
            identity += 1;
            let request = bench.request(identity, &objects);
            let started = Instant::now();
            mount(&client, request).await;
            cold.push(started.elapsed());
            let request = bench.request(1, &objects);
            let started = Instant::now();
            mount(&client, request).await;
            warm.push(started.elapsed());
            identity += 1;
            base.push(bench.baseline(identity, &paths).await);
            base_reads.push(bench.baseline_reads(&token, &paths).await);
        }
        let (cold, warm, base, reads) =
            (median(cold), median(warm), median(base), median(base_reads));
        println!(
            "| {name} | {cold:.2} ms | {base:.2} ms | {:.2} | {warm:.2} ms | {reads:.2} ms | {:.2} |",
            cold / base,
            warm / reads
        );
    }
}

/// For profiling (`OPENCLAW_BENCH_WARM_LOOP=N`): N warm mounts of the three OpenClaw keys (value cache
/// off), then the client's median against the provider's own mean time per mount (its histogram).
async fn warm_loop(bench: &Bench, count: usize) {
    if let Ok(workers) = std::env::var("OPENCLAW_BENCH_PROVIDER_WORKERS") {
        // SAFETY: set before the provider process is spawned; nothing else reads the environment now.
        unsafe { std::env::set_var("TOKIO_WORKER_THREADS", workers) };
    }
    let provider = start_provider(bench, "0");
    let client = provider.client().await;
    let objects = openclaw_objects();
    let request = bench.request(1, &objects);
    mount(&client, request.clone()).await;
    let provider_seconds = || {
        let (_, metrics) = provider.http_get("/metrics");
        let value = |name: &str| {
            metrics
                .lines()
                .find(|l| l.starts_with(name) && l.contains("backend=\"vault\""))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (
            value("openclaw_provider_mount_duration_seconds_sum"),
            value("openclaw_provider_mount_duration_seconds_count"),
        )
    };
    let (sum_before, count_before) = provider_seconds();
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        mount(&client, request.clone()).await;
        samples.push(started.elapsed());
    }
    let (sum, mounts) = provider_seconds();
    let token = bench.login(1).await;
    let path = ["secret/data/openclaw".to_string()];
    let mut reads = Vec::with_capacity(count);
    for _ in 0..count {
        reads.push(bench.baseline_reads(&token, &path).await);
    }
    println!(
        "warm mounts: client median {:.3} ms, provider mean {:.3} ms over {} mounts; raw read median {:.3} ms",
        median(samples),
        (sum - sum_before) * 1000.0 / (mounts - count_before).max(1.0),
        mounts - count_before,
        median(reads)
    );
}

/// (b): OpenBao requests for repeated and concurrent mounts by one identity.
async fn requests(bench: &Bench) {
    println!("| scenario | value cache | mounts | logins | reads of secret/data/openclaw |");
    println!("|---|---|---|---|---|");
    let objects = openclaw_objects();
    for (cache, ttl) in [("off", "0"), ("on (5 s)", "5")] {
        for count in [1usize, 10, 100] {
            let provider = start_provider(bench, ttl);
            let client = provider.client().await;
            let (logins, reads) = counts(&bench.bao);
            let identity = 2000 + count + if ttl == "0" { 0 } else { 500 };
            for _ in 0..count {
                mount(&client, bench.request(identity, &objects)).await;
            }
            let (l, r) = counts(&bench.bao);
            println!(
                "| {count} sequential mounts, one identity | {cache} | {count} | {} | {} |",
                l - logins,
                r - reads
            );
        }
        let provider = start_provider(bench, ttl);
        let client = provider.client().await;
        let (logins, reads) = counts(&bench.bao);
        let identity = if ttl == "0" { 3000 } else { 3001 };
        let all = (0..100).map(|_| mount(&client, bench.request(identity, &objects)));
        futures_util::future::join_all(all).await;
        let (l, r) = counts(&bench.bao);
        println!(
            "| 100 concurrent mounts, one identity | {cache} | 100 | {} | {} |",
            l - logins,
            r - reads
        );
    }
}

fn start_provider(bench: &Bench, cache_ttl: &str) -> Provider {
    Provider::start(&[
        "--vault-addr",
        &bench.bao.address,
        "--cache-ttl",
        cache_ttl,
        "--log-level",
        "warn",
    ])
}

fn counts(bao: &OpenBao) -> (usize, usize) {
    (
        bao.count("update", "auth/jwt/login"),
        bao.count("read", "secret/data/openclaw"),
    )
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let bench = setup().await;
        println!(
            "machine: {} cores; OpenBao on loopback; {ITERATIONS} iterations, medians\n",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
        );
        if let Some(count) = std::env::var("OPENCLAW_BENCH_WARM_LOOP")
            .ok()
            .and_then(|n| n.parse().ok())
        {
            warm_loop(&bench, count).await;
            return;
        }
        latency(&bench).await;
        println!();
        requests(&bench).await;
    });
}

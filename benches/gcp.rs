//! Benchmark of the gcp backend (`cargo bench --bench gcp`) against the tests' fake of Google's APIs,
//! which answers every request after `OPENCLAW_BENCH_LATENCY_MS` (default 10 ms, a network round trip
//! to Google; the fake itself answers in microseconds). Prints a markdown table for a 3-secret and a
//! 20-secret mount, with impersonation: requests per mount (token exchange, impersonation, reads, as the
//! fake counts them) and median latency, cold (an identity's first mount: a new service account each
//! time) and warm (its tokens kept), against the requests the official provider makes for every mount
//! (exchange, impersonation, then one read per secret), made one after another by a plain HTTP client.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use openclaw_csi_provider::proto;
use support::fake_gcp::{FakeGcp, FakeGcpConfig, Who};
use support::fake_kube::FakeKube;
use support::identity::{JwtIssuer, tokens_attribute};
use support::{NAMESPACE, Provider, mount_request};

const ITERATIONS: usize = 30;
const PROJECT: &str = "acme-prod";
const POOL: &str = "acme-prod.svc.id.goog";
const AUDIENCE: &str = "identitynamespace:acme-prod.svc.id.goog:https://container.googleapis.com/v1/projects/acme-prod/locations/us-central1/clusters/c1";
const GSA: &str = "openclaw@acme-prod.iam.gserviceaccount.com";

type Client = proto::csi_driver_provider_client::CsiDriverProviderClient<tonic::transport::Channel>;

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1000.0
}

fn token(issuer: &JwtIssuer, account: &str) -> String {
    issuer.token(
        &format!("system:serviceaccount:{NAMESPACE}:{account}"),
        &[POOL],
    )
}

fn request(issuer: &JwtIssuer, account: &str, secrets: &str) -> proto::MountRequest {
    mount_request(&[
        ("backend", "gcp"),
        ("secrets", secrets),
        ("csi.storage.k8s.io/serviceAccount.name", account),
        (
            "csi.storage.k8s.io/serviceAccount.tokens",
            &tokens_attribute(POOL, &token(issuer, account)),
        ),
    ])
}

/// The official provider's requests for one mount, one after another: exchange, impersonation, reads.
async fn plain_mount(
    http: &reqwest::Client,
    url: &str,
    pod_token: &str,
    names: &[String],
) -> Duration {
    let started = Instant::now();
    let federated: serde_json::Value = http
        .post(format!("{url}/v1/identitybindingtoken"))
        .json(&serde_json::json!({
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "audience": AUDIENCE,
            "scope": "https://www.googleapis.com/auth/cloud-platform",
            "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "subject_token": pod_token,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let impersonated: serde_json::Value = http
        .post(format!(
            "{url}/v1/projects/-/serviceAccounts/{GSA}:generateAccessToken"
        ))
        .bearer_auth(federated["access_token"].as_str().expect("federated token"))
        .json(&serde_json::json!({"scope": ["https://www.googleapis.com/auth/cloud-platform"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = impersonated["accessToken"].as_str().expect("access token");
    for name in names {
        let answer = http
            .get(format!(
                "{url}/v1/projects/{PROJECT}/secrets/{name}/versions/latest:access"
            ))
            .bearer_auth(access)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success());
        answer.bytes().await.unwrap();
    }
    started.elapsed()
}

fn secrets_text(names: &[String]) -> String {
    names
        .iter()
        .map(|n| {
            format!("- resourceName: projects/{PROJECT}/secrets/{n}/versions/latest\n  path: {n}\n")
        })
        .collect()
}

fn main() {
    openclaw_csi_provider::install_crypto_provider();
    let latency_ms: u64 = std::env::var("OPENCLAW_BENCH_LATENCY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let issuer = JwtIssuer::generate();
        let google = FakeGcp::start(FakeGcpConfig::new(AUDIENCE, POOL).verify_with(&issuer.public_pem())).await;
        let kube = FakeKube::start();
        let accounts: Vec<String> = (0..=2 * ITERATIONS + 2).map(|i| format!("bench-{i}")).collect();
        for account in &accounts {
            kube.add_service_account(NAMESPACE, account, &[("iam.gke.io/gcp-service-account", GSA)]);
            google.allow_impersonation(NAMESPACE, account, GSA);
        }
        google.allow_impersonation(NAMESPACE, "bench-plain", GSA);
        let three: Vec<String> = ["OPENCLAW_GATEWAY_TOKEN", "ANTHROPIC_API_KEY", "OPENAI_API_KEY"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let twenty: Vec<String> = (0..20).map(|i| format!("bench-secret-{i}")).collect();
        for name in three.iter().chain(&twenty) {
            google.put_secret_version(PROJECT, None, name, format!("value-of-{name}").as_bytes());
            google.grant_secret(PROJECT, None, name, Who::service_account(GSA));
        }
        let kubeconfig = kube.kubeconfig.display().to_string();
        let sts = format!("{}/v1/identitybindingtoken", google.url);
        let provider = Provider::start_with_env(
            &[
                "--kubeconfig", &kubeconfig, "--cache-ttl", "0", "--log-level", "warn",
                "--gcp-project", PROJECT, "--gcp-cluster-location", "us-central1",
                "--gcp-cluster-name", "c1", "--gcp-sts-endpoint", &sts,
                "--gcp-iam-credentials-endpoint", &google.url,
                "--gcp-secretmanager-endpoint", &google.url,
            ],
            &[("NO_PROXY", "127.0.0.1")],
        );
        let client: Client = provider.client().await;
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        google.set_latency(Duration::from_millis(latency_ms));
        println!(
            "machine: {} cores; the fake answers after {latency_ms} ms; {ITERATIONS} iterations, \
             medians; --cache-ttl 0; impersonation on\n",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
        );
        println!("| mount | provider: requests per mount, cold / warm | provider mount, cold / warm | sequential plain client (official provider's requests) | its requests | warm ÷ sequential |");
        println!("|---|---|---|---|---|---|");
        let mut fresh = accounts.iter();
        for (name, names) in [("3 secrets", &three), ("20 secrets", &twenty)] {
            let text = secrets_text(names);
            let warm_account = fresh.next().unwrap().clone();
            client.clone().mount(request(&issuer, &warm_account, &text)).await.expect("warm-up");
            plain_mount(&http, &google.url, &token(&issuer, "bench-plain"), names).await;
            let measure = |account: String| {
                let mut client = client.clone();
                let request = request(&issuer, &account, &text);
                async move {
                    let started = Instant::now();
                    let response = client.mount(request).await.expect("mount");
                    assert_eq!(response.into_inner().files.len(), names.len());
                    started.elapsed()
                }
            };
            let before = google.requests().len();
            let mut cold = Vec::with_capacity(ITERATIONS);
            for _ in 0..ITERATIONS {
                cold.push(measure(fresh.next().unwrap().clone()).await);
            }
            let cold_requests = (google.requests().len() - before) as f64 / ITERATIONS as f64;
            let before = google.requests().len();
            let mut warm = Vec::with_capacity(ITERATIONS);
            for _ in 0..ITERATIONS {
                warm.push(measure(warm_account.clone()).await);
            }
            let warm_requests = (google.requests().len() - before) as f64 / ITERATIONS as f64;
            let before = google.requests().len();
            let mut plain = Vec::with_capacity(ITERATIONS);
            for _ in 0..ITERATIONS {
                let pod_token = token(&issuer, "bench-plain");
                plain.push(plain_mount(&http, &google.url, &pod_token, names).await);
            }
            let plain_requests = (google.requests().len() - before) as f64 / ITERATIONS as f64;
            let (cold, warm, plain) = (median(cold), median(warm), median(plain));
            println!(
                "| {name} | {cold_requests:.1} / {warm_requests:.1} | {cold:.1} / {warm:.1} ms | {plain:.1} ms | {plain_requests:.1} | {:.2}× |",
                warm / plain
            );
        }
    });
}

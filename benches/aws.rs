//! Benchmark of the aws backend against moto's server (`cargo bench --bench aws`, after the README's test
//! command has installed moto). Prints a markdown table: AWS calls per mount (counted by the recording
//! proxy in front of moto) and median mount latency, with the value cache off and credentials cached,
//! for 3 keys in one JSON secret, 20 separate secrets and 10 SSM parameters, against the calls the
//! official provider makes for the same objects (one `GetSecretValue` per secret, `GetParameters` per
//! ten parameters) made sequentially by a plain SDK client on the same moto, through the same proxy.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::config::{Credentials, Region};
use openclaw_csi_provider::proto;
use support::fake_kube::FakeKube;
use support::identity::{JwtIssuer, tokens_attribute};
use support::moto::{AwsProxy, Moto};
use support::{NAMESPACE, Provider, mount_request};

const ITERATIONS: usize = 30;
const REGION: &str = "eu-west-1";
const SEED: &str = r#"{"gateway_token": "gw-bench", "anthropic_api_key": "sk-ant-bench", "openai_api_key": "sk-bench"}"#;

type Client = openclaw_csi_provider::proto::csi_driver_provider_client::CsiDriverProviderClient<
    tonic::transport::Channel,
>;

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1000.0
}

/// The plain client: static test credentials, the proxy as endpoint, the SDK's default retries.
struct Plain {
    secrets: aws_sdk_secretsmanager::Client,
    parameters: aws_sdk_ssm::Client,
}

impl Plain {
    fn new(endpoint: &str) -> Self {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let credentials = Credentials::new("AKIAIOSFODNN7EXAMPLE", "bench", None, None, "bench");
        Self {
            secrets: aws_sdk_secretsmanager::Client::from_conf(
                aws_sdk_secretsmanager::Config::builder()
                    .behavior_version_latest()
                    .region(Region::new(REGION))
                    .endpoint_url(endpoint)
                    .credentials_provider(credentials.clone())
                    .http_client(http.clone())
                    .build(),
            ),
            parameters: aws_sdk_ssm::Client::from_conf(
                aws_sdk_ssm::Config::builder()
                    .behavior_version_latest()
                    .region(Region::new(REGION))
                    .endpoint_url(endpoint)
                    .credentials_provider(credentials)
                    .http_client(http)
                    .build(),
            ),
        }
    }

    /// The official provider's calls for `secrets` and `parameters`, one after another.
    async fn read(&self, secrets: &[String], parameters: &[String]) -> Duration {
        let started = Instant::now();
        for secret in secrets {
            self.secrets
                .get_secret_value()
                .secret_id(secret)
                .send()
                .await
                .expect("GetSecretValue");
        }
        for chunk in parameters.chunks(10) {
            self.parameters
                .get_parameters()
                .set_names(Some(chunk.to_vec()))
                .with_decryption(true)
                .send()
                .await
                .expect("GetParameters");
        }
        started.elapsed()
    }
}

struct Case {
    name: &'static str,
    objects: String,
    secrets: Vec<String>,
    parameters: Vec<String>,
}

async fn cases(moto: &Moto) -> Vec<Case> {
    moto.create_secret(REGION, "openclaw/production", SEED)
        .await;
    let seed = "- objectName: openclaw/production\n  objectType: secretsmanager\n  jmesPath:\n    \
                - {path: gateway_token, objectAlias: OPENCLAW_GATEWAY_TOKEN}\n    \
                - {path: anthropic_api_key, objectAlias: ANTHROPIC_API_KEY}\n    \
                - {path: openai_api_key, objectAlias: OPENAI_API_KEY}\n";
    let mut twenty = String::new();
    let mut secrets = Vec::new();
    for i in 0..20 {
        let name = format!("bench/secret-{i}");
        moto.create_secret(REGION, &name, &format!("value-{i}"))
            .await;
        twenty.push_str(&format!(
            "- {{objectName: {name}, objectType: secretsmanager}}\n"
        ));
        secrets.push(name);
    }
    let mut ten = String::new();
    let mut parameters = Vec::new();
    for i in 0..10 {
        let name = format!("/bench/param-{i}");
        moto.put_parameter(REGION, &name, &format!("value-{i}"), "SecureString")
            .await;
        ten.push_str(&format!(
            "- {{objectName: {name}, objectType: ssmparameter}}\n"
        ));
        parameters.push(name);
    }
    vec![
        Case {
            name: "3 keys in one JSON secret",
            objects: seed.to_string(),
            secrets: vec!["openclaw/production".into()],
            parameters: vec![],
        },
        Case {
            name: "20 separate secrets",
            objects: twenty,
            secrets,
            parameters: vec![],
        },
        Case {
            name: "10 SSM parameters",
            objects: ten,
            secrets: vec![],
            parameters,
        },
    ]
}

fn request(issuer: &JwtIssuer, objects: &str) -> proto::MountRequest {
    let token = issuer.token(
        &format!("system:serviceaccount:{NAMESPACE}:openclaw"),
        &["sts.amazonaws.com"],
    );
    mount_request(&[
        ("backend", "aws"),
        ("region", REGION),
        ("objects", objects),
        (
            "csi.storage.k8s.io/serviceAccount.tokens",
            &tokens_attribute("sts.amazonaws.com", &token),
        ),
    ])
}

fn main() {
    openclaw_csi_provider::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let moto = Moto::start().await;
        let proxy = AwsProxy::start(&moto.url);
        let kube = FakeKube::start();
        kube.add_service_account(
            NAMESPACE,
            "openclaw",
            &[("eks.amazonaws.com/role-arn", "arn:aws:iam::123456789012:role/bench")],
        );
        let kubeconfig = kube.kubeconfig.display().to_string();
        let provider = Provider::start_with_env(
            &["--kubeconfig", &kubeconfig, "--cache-ttl", "0", "--log-level", "warn"],
            &[
                ("AWS_ENDPOINT_URL", proxy.url.as_str()),
                ("AWS_CONFIG_FILE", "/nonexistent"),
                ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
            ],
        );
        let client: Client = provider.client().await;
        let issuer = JwtIssuer::generate();
        let plain = Plain::new(&proxy.url);
        let cases = cases(&moto).await;
        println!(
            "machine: {} cores; moto_server on loopback behind the recording proxy; {ITERATIONS} \
             iterations, medians; --cache-ttl 0, credentials cached\n",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
        );
        println!(
            "| mount | AWS calls per mount | provider mount | sequential plain client (official provider's calls) | its calls | provider ÷ sequential |"
        );
        println!("|---|---|---|---|---|---|");
        for case in cases {
            // Warm-up: credentials, connections.
            client.clone().mount(request(&issuer, &case.objects)).await.expect("mount");
            plain.read(&case.secrets, &case.parameters).await;
            proxy.clear();
            let mut provider_times = Vec::with_capacity(ITERATIONS);
            for _ in 0..ITERATIONS {
                let started = Instant::now();
                let response = client
                    .clone()
                    .mount(request(&issuer, &case.objects))
                    .await
                    .expect("mount");
                provider_times.push(started.elapsed());
                assert!(!response.into_inner().files.is_empty());
            }
            let provider_calls = proxy.calls().len() as f64 / ITERATIONS as f64;
            proxy.clear();
            let mut plain_times = Vec::with_capacity(ITERATIONS);
            for _ in 0..ITERATIONS {
                plain_times.push(plain.read(&case.secrets, &case.parameters).await);
            }
            let plain_calls = proxy.calls().len() as f64 / ITERATIONS as f64;
            let (ours, theirs) = (median(provider_times), median(plain_times));
            println!(
                "| {} | {provider_calls:.1} | {ours:.2} ms | {theirs:.2} ms | {plain_calls:.1} | {:.2}× |",
                case.name,
                ours / theirs
            );
        }
    });
}

//! `mount`: a driver emulator. It reads a SecretProviderClass, builds the Mount request exactly as the
//! driver does (parameters, volume attributes, pod info, tokens, `secrets` = `null`, `permission` = `"420"`),
//! checks the response as the driver does and writes the files with the driver's atomic layout. It prints
//! paths, modes, sizes and versions, never contents unless `--show-values`.
//!
//! With `--repeat N --concurrency C` it is the benchmark: N mounts over one connection (as the driver
//! keeps one per provider), C at a time; files are checked but not written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use tonic::transport::Channel;

use super::atomic_writer::{self, WriteOutcome};
use super::client;
use crate::proto;
use crate::proto::csi_driver_provider_client::CsiDriverProviderClient;
use crate::request::{
    POD_NAME, POD_NAMESPACE, POD_UID, SERVICE_ACCOUNT_NAME, SERVICE_ACCOUNT_TOKENS,
};
use crate::response::validate_file_path;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// Flags of `mount`.
#[derive(Debug, Clone, clap::Args)]
pub struct MountArgs {
    /// The provider's socket.
    #[arg(
        long,
        default_value = "/var/run/secrets-store-csi-providers/openclaw.sock"
    )]
    pub socket: PathBuf,
    /// SecretProviderClass YAML file (its spec.parameters are sent).
    #[arg(long)]
    pub spc: PathBuf,
    /// Directory to write the files into (required unless benchmarking with --repeat).
    #[arg(long)]
    pub target: Option<PathBuf>,
    #[arg(long, default_value = "openclaw-demo")]
    pub pod_name: String,
    /// The pod's namespace (default: the SecretProviderClass's metadata.namespace, else `default`).
    #[arg(long)]
    pub namespace: Option<String>,
    #[arg(long, default_value = "default")]
    pub service_account: String,
    #[arg(long, default_value = "00000000-0000-4000-8000-000000000001")]
    pub pod_uid: String,
    /// A service-account token to pass, as AUDIENCE=FILE (repeatable).
    #[arg(long = "token", value_name = "AUDIENCE=FILE")]
    pub tokens: Vec<String>,
    /// A volume attribute, as KEY=VALUE (repeatable; overrides SecretProviderClass parameters).
    #[arg(long = "attribute", value_name = "KEY=VALUE")]
    pub attributes: Vec<String>,
    /// Also print file contents.
    #[arg(long)]
    pub show_values: bool,
    /// Benchmark: number of mounts.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Benchmark: mounts in flight at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// Seconds to wait for one Mount (kubelet's CSI deadline is 120).
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

/// Why an emulated mount failed.
#[derive(Debug, thiserror::Error)]
pub enum MountCliError {
    #[error("{0}")]
    Input(String),
    #[error("cannot connect to the provider: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("Mount failed: code = {code:?}, message = {message}")]
    Rpc { code: tonic::Code, message: String },
    #[error("{0}")]
    Driver(String),
    #[error("cannot write the files: {0}")]
    Write(#[from] std::io::Error),
}

/// The parts of a SecretProviderClass the driver sends.
#[derive(Deserialize)]
struct SecretProviderClass {
    #[serde(default)]
    metadata: Metadata,
    spec: SpcSpec,
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Deserialize)]
struct SpcSpec {
    #[serde(default)]
    provider: String,
    #[serde(default)]
    parameters: BTreeMap<String, String>,
}

/// The outcome of one emulated mount.
pub struct MountReport {
    pub response: proto::MountResponse,
    pub outcome: Option<WriteOutcome>,
}

/// Runs `mount` as the command line asks and prints the result.
pub async fn run(args: MountArgs) -> Result<(), MountCliError> {
    let request = build_request(&args)?;
    let client = client::connect(args.socket.clone()).await?;
    if args.repeat > 1 || args.concurrency > 1 {
        let report = benchmark(client, request, &args).await;
        print_benchmark(&report, args.output);
        return if report.errors == 0 {
            Ok(())
        } else {
            Err(MountCliError::Driver(format!(
                "{} of {} mounts failed; first error: {}",
                report.errors,
                report.count,
                report.first_error.as_deref().unwrap_or("")
            )))
        };
    }
    let Some(target) = &args.target else {
        return Err(MountCliError::Input("--target DIR is required".into()));
    };
    let report = mount_once(client, request, target, Duration::from_secs(args.timeout)).await?;
    print_report(&report, args.output, args.show_values);
    Ok(())
}

/// Calls Mount, checks the response as the driver does and writes it into `target`.
pub async fn mount_once(
    mut client: CsiDriverProviderClient<Channel>,
    request: proto::MountRequest,
    target: &Path,
    timeout: Duration,
) -> Result<MountReport, MountCliError> {
    let response = call(&mut client, request, timeout).await?;
    check_response(&response)?;
    let outcome = if response.files.is_empty() {
        None
    } else {
        Some(atomic_writer::write(target, &response.files)?)
    };
    Ok(MountReport { response, outcome })
}

async fn call(
    client: &mut CsiDriverProviderClient<Channel>,
    request: proto::MountRequest,
    timeout: Duration,
) -> Result<proto::MountResponse, MountCliError> {
    let mut request = tonic::Request::new(request);
    request.set_timeout(timeout);
    client
        .mount(request)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| MountCliError::Rpc {
            code: status.code(),
            message: status.message().to_string(),
        })
}

/// The driver's checks of a response, in its order.
pub fn check_response(response: &proto::MountResponse) -> Result<(), MountCliError> {
    if let Some(error) = &response.error
        && !error.code.is_empty()
    {
        return Err(MountCliError::Driver(format!(
            "mount request failed with provider error code {}",
            error.code
        )));
    }
    if response.object_version.is_empty() {
        return Err(MountCliError::Driver("missing object versions".into()));
    }
    for file in &response.files {
        validate_file_path(&file.path)
            .map_err(|why| MountCliError::Driver(format!("file path {:?} {why}", file.path)))?;
    }
    Ok(())
}

fn split_pair<'a>(text: &'a str, flag: &str) -> Result<(&'a str, &'a str), MountCliError> {
    text.split_once('=')
        .ok_or_else(|| MountCliError::Input(format!("{flag} {text:?} must be KEY=VALUE")))
}

/// Reads a SecretProviderClass file; one without parameters is refused.
fn read_spc(path: &std::path::Path) -> Result<SecretProviderClass, MountCliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| MountCliError::Input(format!("cannot read {}: {e}", path.display())))?;
    // A file may hold more documents (a ServiceAccount beside the class, as the examples do).
    let documents: Vec<&str> = text.split("\n---").collect();
    let document = documents
        .iter()
        .find(|d| {
            d.lines()
                .any(|l| l.trim_end() == "kind: SecretProviderClass")
        })
        .copied()
        .unwrap_or(&text);
    let spc: SecretProviderClass = serde_saphyr::from_str(document).map_err(|e| {
        MountCliError::Input(format!(
            "{} is not a SecretProviderClass: {}",
            path.display(),
            e.to_string().lines().next().unwrap_or("")
        ))
    })?;
    if spc.spec.parameters.is_empty() {
        return Err(MountCliError::Input(format!(
            "parameters not set in {}",
            path.display()
        )));
    }
    Ok(spc)
}

/// A SecretProviderClass's parameters as the driver sends them (with `secretProviderClass`), and the
/// namespace of the pods that mount it: `namespace`, else the class's own, else `default`.
pub(crate) fn spc_attributes(
    path: &std::path::Path,
    namespace: Option<&str>,
) -> Result<(BTreeMap<String, String>, String), MountCliError> {
    let spc = read_spc(path)?;
    // A pod mounts SecretProviderClasses of its own namespace.
    let namespace = namespace
        .map(str::to_string)
        .or(spc.metadata.namespace)
        .unwrap_or_else(|| "default".into());
    let mut attributes = spc.spec.parameters;
    attributes.insert("secretProviderClass".into(), spc.metadata.name);
    Ok((attributes, namespace))
}

/// The class's `spec.provider` (which socket the driver calls).
pub(crate) fn spc_provider(path: &std::path::Path) -> Result<String, MountCliError> {
    Ok(read_spc(path)?.spec.provider)
}

/// Builds the request the driver would send for this SecretProviderClass and pod.
pub fn build_request(args: &MountArgs) -> Result<proto::MountRequest, MountCliError> {
    let (mut attributes, namespace) = spc_attributes(&args.spc, args.namespace.as_deref())?;
    for pair in &args.attributes {
        let (key, value) = split_pair(pair, "--attribute")?;
        attributes.insert(key.into(), value.into());
    }
    attributes.insert(POD_NAME.into(), args.pod_name.clone());
    attributes.insert(POD_NAMESPACE.into(), namespace);
    attributes.insert(POD_UID.into(), args.pod_uid.clone());
    attributes.insert(SERVICE_ACCOUNT_NAME.into(), args.service_account.clone());
    attributes.insert("csi.storage.k8s.io/ephemeral".into(), "true".into());
    if !args.tokens.is_empty() {
        attributes.insert(SERVICE_ACCOUNT_TOKENS.into(), tokens_json(&args.tokens)?);
    }
    let target_path = match &args.target {
        Some(target) => std::path::absolute(target)
            .map_err(|e| MountCliError::Input(format!("--target: {e}")))?
            .display()
            .to_string(),
        None => format!(
            "/var/lib/kubelet/pods/{}/volumes/kubernetes.io~csi/secrets-store/mount",
            args.pod_uid
        ),
    };
    Ok(proto::MountRequest {
        attributes: serde_json::to_string(&attributes)
            .map_err(|e| MountCliError::Input(e.to_string()))?,
        secrets: "null".into(),
        target_path,
        permission: "420".into(),
        current_object_version: vec![],
    })
}

fn tokens_json(pairs: &[String]) -> Result<String, MountCliError> {
    let expires = SystemTime::now() + Duration::from_secs(3600);
    let secs = expires
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let rfc3339 = atomic_writer::rfc3339(secs);
    let mut tokens = serde_json::Map::new();
    for pair in pairs {
        let (audience, file) = split_pair(pair, "--token")?;
        let token = std::fs::read_to_string(file).map_err(|e| {
            MountCliError::Input(format!("--token {audience}: cannot read {file}: {e}"))
        })?;
        tokens.insert(
            audience.into(),
            serde_json::json!({"token": token.trim(), "expirationTimestamp": rfc3339}),
        );
    }
    Ok(serde_json::Value::Object(tokens).to_string())
}

fn print_report(report: &MountReport, output: OutputFormat, show_values: bool) {
    let response = &report.response;
    let written = match &report.outcome {
        None => "nothing (no files)".to_string(),
        Some(WriteOutcome::Unchanged) => {
            "unchanged (contents identical; nothing rewritten)".to_string()
        }
        Some(WriteOutcome::Written { data_dir }) => format!("written to {data_dir}"),
    };
    if output == OutputFormat::Json {
        let files: Vec<_> = response
            .files
            .iter()
            .map(|f| {
                let mut entry = serde_json::json!({
                    "path": f.path, "mode": format!("{:04o}", f.mode), "size": f.contents.len()
                });
                if show_values {
                    entry["value"] = String::from_utf8_lossy(&f.contents).into_owned().into();
                }
                entry
            })
            .collect();
        let versions: Vec<_> = response
            .object_version
            .iter()
            .map(|v| serde_json::json!({"id": v.id, "version": v.version}))
            .collect();
        let report = serde_json::json!({"files": files, "versions": versions, "written": written});
        println!("{report}");
        return;
    }
    println!("files ({}): {written}", response.files.len());
    for file in &response.files {
        println!(
            "  {:04o}  {:>8} bytes  {}",
            file.mode,
            file.contents.len(),
            file.path
        );
        if show_values {
            println!("        {}", String::from_utf8_lossy(&file.contents));
        }
    }
    println!("versions ({}):", response.object_version.len());
    for version in &response.object_version {
        println!("  {}  {}", version.id, version.version);
    }
}

/// Results of a benchmark run.
#[derive(Debug, Default)]
pub struct BenchmarkReport {
    pub count: usize,
    pub errors: usize,
    pub concurrency: usize,
    pub seconds: f64,
    pub latencies: Vec<Duration>,
    pub first_error: Option<String>,
}

impl BenchmarkReport {
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let index =
            ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len()) - 1;
        self.latencies[index].as_secs_f64() * 1000.0
    }

    fn per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.count as f64 / self.seconds
        } else {
            0.0
        }
    }
}

async fn benchmark(
    client: CsiDriverProviderClient<Channel>,
    request: proto::MountRequest,
    args: &MountArgs,
) -> BenchmarkReport {
    let concurrency = args.concurrency.max(1);
    let total = args.repeat.max(1);
    let next = Arc::new(AtomicUsize::new(0));
    let request = Arc::new(request);
    let timeout = Duration::from_secs(args.timeout);
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (mut client, next, request) = (client.clone(), next.clone(), request.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let begun = Instant::now();
                    let result = call(&mut client, (*request).clone(), timeout).await;
                    latencies.push(begun.elapsed());
                    if let Err(e) = result.and_then(|r| check_response(&r)) {
                        errors.push(e.to_string());
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut report = BenchmarkReport {
        concurrency,
        ..Default::default()
    };
    for worker in workers {
        let (latencies, errors) = worker.await.unwrap_or_default();
        report.latencies.extend(latencies);
        report.errors += errors.len();
        if report.first_error.is_none() {
            report.first_error = errors.into_iter().next();
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.count = report.latencies.len();
    report.latencies.sort();
    report
}

fn print_benchmark(report: &BenchmarkReport, output: OutputFormat) {
    let summary = serde_json::json!({
        "count": report.count,
        "errors": report.errors,
        "concurrency": report.concurrency,
        "seconds": report.seconds,
        "mounts_per_second": report.per_second(),
        "p50_ms": report.percentile_ms(0.50),
        "p90_ms": report.percentile_ms(0.90),
        "p99_ms": report.percentile_ms(0.99),
        "max_ms": report.latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
    });
    if output == OutputFormat::Json {
        println!("{summary}");
        return;
    }
    println!(
        "mounts: {}  errors: {}  concurrency: {}  time: {:.3}s",
        report.count, report.errors, report.concurrency, report.seconds
    );
    println!(
        "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}",
        report.percentile_ms(0.50),
        report.percentile_ms(0.90),
        report.percentile_ms(0.99),
        summary["max_ms"].as_f64().unwrap_or(0.0)
    );
    println!("mounts per second: {:.0}", report.per_second());
    if let Some(error) = &report.first_error {
        println!("first error: {error}");
    }
}

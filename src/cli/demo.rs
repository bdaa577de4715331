//! `demo`: the quick start. No root, no cluster: it writes example OpenClaw keys (fake values) into a
//! temporary file root, starts `serve` on a temporary socket, mounts `deploy/examples/openclaw-file.yaml`
//! with the driver emulator, changes one key, mounts again and shows the version change.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::atomic_writer::WriteOutcome;
use super::mount::{self, MountArgs, MountReport, OutputFormat};
use crate::server::{self, ServeConfig};

/// The example SecretProviderClass the demo mounts (shipped in the repository).
pub const EXAMPLE_SPC: &str = include_str!("../../deploy/examples/openclaw-file.yaml");
const EXAMPLE_SPC_PATH: &str = "deploy/examples/openclaw-file.yaml";

/// Example keys; the values are obviously not real.
const EXAMPLE_KEYS: [(&str, &str); 3] = [
    (
        "OPENCLAW_GATEWAY_TOKEN",
        "demo-gateway-token-NOT-A-REAL-SECRET",
    ),
    ("ANTHROPIC_API_KEY", "sk-ant-demo-NOT-A-REAL-KEY"),
    ("OPENAI_API_KEY", "sk-demo-NOT-A-REAL-KEY"),
];

/// Flags of `demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Keep the temporary directory (keys, socket, mounted files) and print where it is.
    #[arg(long)]
    pub keep: bool,
}

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo set-up: {0}")]
    Setup(#[from] std::io::Error),
    #[error("the provider did not start: {0}")]
    Serve(String),
    #[error(transparent)]
    Mount(#[from] mount::MountCliError),
}

/// Runs the demo from start to finish.
pub async fn run(demo: DemoArgs) -> Result<(), DemoError> {
    let workdir = tempfile::Builder::new()
        .prefix("openclaw-demo-")
        .tempdir()?;
    let base = workdir.path().to_path_buf();
    let root = base.join("file-root");
    fs::create_dir_all(root.join("openclaw"))?;
    for (name, value) in EXAMPLE_KEYS {
        fs::write(root.join("openclaw").join(name), value)?;
    }
    let spc = base.join("openclaw-file.yaml");
    fs::write(&spc, EXAMPLE_SPC)?;
    let socket = base.join("openclaw.sock");
    let config = serve_config(&socket, &root, &base);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let provider = tokio::spawn(server::run(config, async {
        let _ = stop_rx.await;
    }));
    step(&format!(
        "1. provider serving on {} with --file-root {} (each namespace reads its own directory: openclaw/)",
        socket.display(),
        root.display()
    ));
    wait_for_socket(&socket).await?;

    let target = base.join("mount");
    let args = mount_args(&socket, &spc, &target);
    step(&format!(
        "2. mount {EXAMPLE_SPC_PATH} into {}",
        target.display()
    ));
    let first = mount_example(&args).await?;
    show_tree(&target)?;

    step("3. rotate: write a new ANTHROPIC_API_KEY, mount again");
    fs::write(
        root.join("openclaw/ANTHROPIC_API_KEY"),
        "sk-ant-demo-ROTATED-NOT-A-REAL-KEY",
    )?;
    let second = mount_example(&args).await?;
    show_changes(&first, &second);

    step("4. mount again with nothing changed");
    let third = mount_example(&args).await?;
    if third.outcome == Some(WriteOutcome::Unchanged) {
        println!("   contents identical: nothing rewritten, ..data unchanged");
    }

    let _ = stop_tx.send(());
    match provider.await {
        Ok(Ok(())) => step("5. provider stopped; socket removed"),
        Ok(Err(e)) => return Err(DemoError::Serve(e.to_string())),
        Err(e) => return Err(DemoError::Serve(e.to_string())),
    }
    if demo.keep {
        let kept = workdir.keep();
        println!("   kept {}", kept.display());
    }
    Ok(())
}

fn step(text: &str) {
    println!("\n== {text}");
}

fn serve_config(socket: &Path, root: &Path, base: &Path) -> ServeConfig {
    let mut defaults = ServeConfig::from_defaults();
    defaults.backends.file.file_root = Some(root.to_path_buf());
    ServeConfig {
        socket: socket.to_path_buf(),
        health_addr: "127.0.0.1:0".into(),
        hmac_key_file: Some(base.join("hmac.key")),
        mount_timeout: 10,
        grace_period: 2,
        ..defaults
    }
}

fn mount_args(socket: &Path, spc: &Path, target: &Path) -> MountArgs {
    MountArgs {
        socket: socket.to_path_buf(),
        spc: spc.to_path_buf(),
        target: Some(target.to_path_buf()),
        pod_name: "openclaw-gateway-0".into(),
        namespace: Some("openclaw".into()),
        service_account: "openclaw".into(),
        pod_uid: "00000000-0000-4000-8000-00000000demo".into(),
        tokens: vec![],
        attributes: vec![],
        show_values: false,
        repeat: 1,
        concurrency: 1,
        output: OutputFormat::Text,
        timeout: 10,
    }
}

/// Waits (bounded) until the provider accepts connections.
async fn wait_for_socket(socket: &Path) -> Result<(), DemoError> {
    for _ in 0..100 {
        if tokio::net::UnixStream::connect(socket).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(DemoError::Serve(format!(
        "{} did not accept connections within 5 s",
        socket.display()
    )))
}

async fn mount_example(args: &MountArgs) -> Result<MountReport, DemoError> {
    let request = mount::build_request(args)?;
    let client = super::client::connect(args.socket.clone())
        .await
        .map_err(mount::MountCliError::from)?;
    let target = args.target.clone().unwrap_or_default();
    let report =
        mount::mount_once(client, request, &target, Duration::from_secs(args.timeout)).await?;
    println!("   versions:");
    for version in &report.response.object_version {
        println!("     {:<32} {}", version.id, version.version);
    }
    Ok(report)
}

/// Lists the mount as `ls -la` would show it, hidden driver entries included; never contents.
fn show_tree(target: &Path) -> std::io::Result<()> {
    println!("   mounted tree of {}:", target.display());
    let mut entries: Vec<PathBuf> = fs::read_dir(target)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let meta = fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            let to = fs::read_link(&path)?;
            let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let mode = fs::metadata(&path)
                .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
                .unwrap_or(0);
            println!(
                "     {name} -> {}  ({mode:04o}, {size} bytes)",
                to.display()
            );
        } else {
            println!("     {name}/");
        }
    }
    Ok(())
}

fn show_changes(before: &MountReport, after: &MountReport) {
    let old: BTreeMap<&str, &str> = before
        .response
        .object_version
        .iter()
        .map(|v| (v.id.as_str(), v.version.as_str()))
        .collect();
    for version in &after.response.object_version {
        let previous = old.get(version.id.as_str()).copied().unwrap_or("(new)");
        if previous != version.version {
            println!(
                "   rotated: {} version {} -> {}",
                version.id, previous, version.version
            );
        }
    }
}

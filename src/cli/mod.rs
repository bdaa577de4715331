//! The command line: `serve` (the provider), `sync` (the sync controller), `mount` (a driver emulator and
//! benchmark), `demo` and `check` (a SecretProviderClass linter).

pub mod atomic_writer;
pub mod check;
pub mod client;
pub mod demo;
pub mod mount;

use clap::{Parser, Subcommand};

use crate::server::ServeConfig;
use crate::telemetry::logging::LogFormat;

/// A Secrets Store CSI driver provider for Vault/OpenBao, AWS, GCP and local files.
#[derive(Debug, Parser)]
#[command(name = "openclaw-csi-provider", version, about)]
pub struct Cli {
    /// Log line format.
    #[arg(
        long,
        global = true,
        env = "OPENCLAW_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub log_format: LogFormat,
    /// Log filter, e.g. `info` or `openclaw_csi_provider=debug`.
    #[arg(
        long,
        global = true,
        env = "OPENCLAW_LOG_LEVEL",
        default_value = "info"
    )]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the provider protocol on a Unix socket (what the DaemonSet runs).
    Serve(Box<ServeConfig>),
    /// Call Mount on a provider socket the way the driver does and write the files the way it does.
    Mount(Box<mount::MountArgs>),
    /// Run the provider with the file backend and mount example OpenClaw keys, all locally.
    Demo(demo::DemoArgs),
    /// Check a SecretProviderClass offline against this provider and its flags (exit 1 on findings).
    Check(Box<check::CheckArgs>),
    /// Keep Kubernetes Secrets in step with the backends (SecretSync resources); runs as a Deployment.
    #[cfg(feature = "sync")]
    Sync(Box<crate::sync::SyncConfig>),
}

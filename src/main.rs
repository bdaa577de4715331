//! The `openclaw-csi-provider` command: parses arguments and calls into the library.

use clap::Parser;
use openclaw_csi_provider::cli::{Cli, Command, check, demo, mount};
use openclaw_csi_provider::server;
use openclaw_csi_provider::telemetry::logging::{self, LogFormat};
#[cfg(feature = "sync")]
use openclaw_csi_provider::telemetry::memory;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    #[cfg(feature = "sync")]
    if matches!(cli.command, Command::Sync(_)) {
        // Before any thread allocates: thousands of SecretSyncs kept for days (docs/benchmarks.md).
        memory::limit_arenas();
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    openclaw_csi_provider::install_crypto_provider();
    match cli.command {
        Command::Serve(config) => {
            logging::init(cli.log_format, &cli.log_level).map_err(anyhow::Error::msg)?;
            server::run(*config, server::shutdown_signal()).await?;
        }
        #[cfg(feature = "sync")]
        Command::Sync(config) => {
            logging::init(cli.log_format, &cli.log_level).map_err(anyhow::Error::msg)?;
            openclaw_csi_provider::sync::run(*config, server::shutdown_signal()).await?;
        }
        Command::Mount(args) => {
            logging::init(LogFormat::Text, "warn").map_err(anyhow::Error::msg)?;
            mount::run(*args).await?;
        }
        Command::Demo(args) => {
            // The demo's own output is the story; provider logs only for warnings.
            logging::init(LogFormat::Text, "warn").map_err(anyhow::Error::msg)?;
            demo::run(args).await?;
        }
        Command::Check(args) => {
            // Findings are the output; provider logs only for warnings.
            logging::init(LogFormat::Text, "warn").map_err(anyhow::Error::msg)?;
            if !check::run(&args)? {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}

//! Logging setup shared by every subcommand.

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

/// Log format.
#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// Logging flags, common to all subcommands.
#[derive(Clone, Debug, Args)]
pub struct LogArgs {
    /// Log filter (tracing-subscriber syntax), e.g. `info` or `posture_k8s=debug`.
    #[arg(
        long,
        global = true,
        env = "RUST_LOG",
        default_value = "info,rumqttd=off"
    )]
    pub log_level: String,
    /// Log format.
    #[arg(long, global = true, env = "LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: LogFormat,
}

/// Installs the global tracing subscriber (to stderr).
pub fn init(args: &LogArgs) {
    let filter = EnvFilter::try_new(&args.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

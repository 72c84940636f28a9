//! `posture-farm`: one binary, one subcommand per component. This file only
//! wires: parse flags (clap derive, env fallbacks), start logging, run.

mod admin;
mod args;
mod cmd;
mod telemetry;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cmd::Cli::parse();
    telemetry::init(&cli.log);
    // One TLS stack in the whole binary: rustls with ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cmd::run(cli.command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "posture-farm failed");
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

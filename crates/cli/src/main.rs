//! `posture-farm`: one binary, one subcommand per component. This file only
//! wires: parse flags (clap derive, env fallbacks), start logging, run.
//!
//! ```text
//!  main ─► cmd::Cli (clap) ─► cmd/<subcommand>.rs ─► library crates (posture-k8s, -gpu, -analyzer, …)
//!                                  │
//!                                  └─ imports only args/ (shared flag groups), admin (metrics/health,
//!                                     Shutdown) and telemetry — never another subcommand
//! ```

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

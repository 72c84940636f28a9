//! `posture-farm results export`: the seeds' layout (`<camera>_results.csv`
//! and `analyzed_images/analyzed_images_from_<camera>/*.jpg`) rebuilt from
//! the database, one set per camera however many analyzers recorded it.
//! The work is `posture_analyzer::export`.

use std::path::PathBuf;

use anyhow::Context as _;
use posture_analyzer::Database;
use posture_analyzer::export::{ExportFormat, ExportOptions, export};

use crate::args::DbArgs;

/// `posture-farm results …`.
#[derive(Debug, clap::Subcommand)]
pub enum ResultsCommand {
    /// Write rows and annotated images from the database as files.
    Export(ExportArgs),
}

/// Flags of `results export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Output folder.
    #[arg(long = "out", default_value = "results")]
    pub out: PathBuf,
    /// Only this camera (repeatable; default: every camera).
    #[arg(long = "camera")]
    pub cameras: Vec<String>,
    /// Only frames received at or after this time (RFC 3339, e.g. 2026-11-23T08:00:00Z).
    #[arg(long)]
    pub since: Option<jiff::Timestamp>,
    /// Only frames received before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<jiff::Timestamp>,
    /// csv (the analyzer's columns) or jsonl (one JSON object per row).
    #[arg(long, default_value = "csv")]
    pub format: ExportFormat,
    /// Rows only, no images.
    #[arg(long)]
    pub no_images: bool,
    #[command(flatten)]
    pub db: DbArgs,
}

/// Runs the subcommand.
pub async fn run(command: ResultsCommand) -> anyhow::Result<()> {
    match command {
        ResultsCommand::Export(args) => run_export(args).await,
    }
}

async fn run_export(args: ExportArgs) -> anyhow::Result<()> {
    let target = args.db.target()?;
    let mut db = Database::open(&target)
        .await
        .with_context(|| format!("opening the database {}", target.describe()))?;
    let opts = ExportOptions {
        out: args.out.clone(),
        cameras: args.cameras,
        since: args.since,
        until: args.until,
        format: args.format,
        images: !args.no_images,
    };
    let summary = export(&mut db, &opts)
        .await
        .with_context(|| format!("exporting from {}", target.describe()))?;
    db.close().await;
    println!(
        "exported {} row(s) and {} image(s) of {} camera(s) from {} into {}",
        summary.rows,
        summary.images,
        summary.cameras.len(),
        target.describe(),
        args.out.display()
    );
    for camera in &summary.cameras {
        println!("  {camera}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cmd::{Cli, Command};

    #[test]
    fn export_flags() {
        let cli = Cli::try_parse_from([
            "posture-farm",
            "results",
            "export",
            "--camera",
            "pi1",
            "--camera",
            "pi2",
            "--since",
            "2026-11-23T08:00:00Z",
            "--format",
            "jsonl",
            "--out",
            "/tmp/r",
            "--sqlite-path",
            "/data/p.db",
        ])
        .unwrap();
        let Command::Results(super::ResultsCommand::Export(a)) = cli.command else {
            panic!("results export expected");
        };
        assert_eq!(a.cameras, ["pi1", "pi2"]);
        assert_eq!(a.format, posture_analyzer::export::ExportFormat::Jsonl);
        assert!(a.since.is_some() && a.until.is_none() && !a.no_images);
        assert_eq!(a.db.target().unwrap().describe(), "sqlite:/data/p.db");
        assert!(
            Cli::try_parse_from(["posture-farm", "results", "export", "--format", "xml"]).is_err()
        );
    }
}

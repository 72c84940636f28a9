//! `posture-farm report --out report.html`: the dashboard's plots and
//! per-camera totals for one time range, in one self-contained HTML file
//! (inline SVG and CSS, no script, no external URL) that opens offline.

use std::path::PathBuf;

use anyhow::Context as _;
use jiff::Timestamp;
use posture_dashboard::ReadOnlyDb;
use posture_dashboard::model::parse_when;
use posture_dashboard::report::{ReportOptions, build};

use crate::args::{DbArgs, ViewArgs};

/// Flags of `posture-farm report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The HTML file to write.
    #[arg(long, short = 'o', env = "REPORT_OUT", default_value = "report.html")]
    pub out: PathBuf,
    /// Start: a duration before now (90m, 24h, 7d, 2w), an RFC 3339 time, a
    /// date and time (2026-11-23T10:00) or a date, in --time-zone.
    #[arg(long, env = "REPORT_SINCE", default_value = "24h")]
    pub since: String,
    /// End, in the same forms (default: now).
    #[arg(long, env = "REPORT_UNTIL")]
    pub until: Option<String>,
    /// Only these cameras (repeatable or comma-separated; default: all).
    #[arg(long = "camera", env = "REPORT_CAMERAS", value_delimiter = ',')]
    pub cameras: Vec<String>,
    /// Leave out the annotated images (a smaller file).
    #[arg(long = "no-images", env = "REPORT_NO_IMAGES")]
    pub no_images: bool,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub view: ViewArgs,
}

/// Runs the subcommand.
pub async fn run(args: ReportArgs) -> anyhow::Result<()> {
    let clock = args.view.clock()?;
    let now = Timestamp::now();
    let when = |what: &str, text: &str| {
        parse_when(text, now, &clock).with_context(|| {
            format!("--{what} {text:?}: use a duration (24h, 7d), a date (2026-11-23) or a date and time (2026-11-23T10:00)")
        })
    };
    let from = when("since", &args.since)?;
    let to = match &args.until {
        Some(u) => when("until", u)?,
        None => now,
    };
    anyhow::ensure!(from < to, "--since must be before --until");
    let target = args.db.target()?;
    let db = ReadOnlyDb::open(&target);
    let opts = ReportOptions {
        from,
        to,
        cameras: args.cameras.clone(),
        thresholds: args.view.thresholds()?,
        clock,
        images: !args.no_images,
    };
    let html = build(&db, &opts)
        .await
        .with_context(|| format!("reading {}", db.describe()))?;
    db.close().await;
    // Written beside the target and renamed: never a half-written report.
    let tmp = args.out.with_extension("html.tmp");
    std::fs::write(&tmp, &html).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &args.out)
        .with_context(|| format!("renaming {} to {}", tmp.display(), args.out.display()))?;
    println!(
        "wrote {} ({} KiB): {} – {}",
        args.out.display(),
        html.len().div_ceil(1024),
        opts.clock.datetime(from),
        opts.clock.datetime(to)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser as _;

    use crate::cmd::{Cli, Command};

    #[test]
    fn dashboard_and_report_flags_parse() {
        let argv = [
            "posture-farm",
            "dashboard",
            "--listen",
            "0.0.0.0:9000",
            "--no-gpu",
            "--no-kubernetes",
            "--database-url",
            "sqlite:/tmp/x.db",
            "--neck-threshold",
            "35",
            "--time-zone",
            "UTC",
            "--silent-after",
            "5m",
        ];
        let Command::Dashboard(d) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not the dashboard");
        };
        assert_eq!(d.listen.to_string(), "0.0.0.0:9000");
        assert!(d.no_gpu && d.no_kubernetes);
        assert_eq!(d.silent_after, Duration::from_secs(300));
        assert_eq!(d.db.target().unwrap().describe(), "sqlite:/tmp/x.db");
        assert_eq!(d.view.thresholds().unwrap().neck_deg, 35.0);
        assert_eq!(d.view.clock().unwrap().zone_name(), "UTC");
        let argv = [
            "posture-farm",
            "report",
            "-o",
            "r.html",
            "--since",
            "7d",
            "--camera",
            "pi1,pi2",
            "--no-images",
        ];
        let Command::Report(r) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not the report");
        };
        assert_eq!(r.cameras, ["pi1", "pi2"]);
        assert_eq!((r.since.as_str(), r.no_images), ("7d", true));
        let bad = ["posture-farm", "dashboard", "--time-zone", "Mars/Olympus"];
        let Command::Dashboard(d) = Cli::try_parse_from(bad).unwrap().command else {
            panic!("not the dashboard");
        };
        assert!(d.view.clock().is_err());
    }
}

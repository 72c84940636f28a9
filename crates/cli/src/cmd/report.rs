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

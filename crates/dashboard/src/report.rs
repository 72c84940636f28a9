//! `posture-farm report`: the camera pages' plots and totals for one time
//! range, in one self-contained HTML file — inline CSS, inline SVG, the
//! newest annotated image of each camera as a `data:` URI, no script and no
//! external URL — for people who prefer a file to a server.

use std::fmt::Write as _;

use base64::Engine as _;
use jiff::Timestamp;
use posture_core::posture::Thresholds;

use crate::camera::{Range, figure, plot_data, totals_html};
use crate::db::{DbError, ReadOnlyDb};
use crate::html::{STYLE, degrees, esc, percent, url_part};
use crate::model::{Clock, human_duration};

/// What goes into a report.
#[derive(Clone, Debug)]
pub struct ReportOptions {
    /// Start of the range.
    pub from: Timestamp,
    /// End of the range.
    pub to: Timestamp,
    /// Only these cameras (all when empty).
    pub cameras: Vec<String>,
    /// Threshold lines.
    pub thresholds: Thresholds,
    /// Time zone of the report.
    pub clock: Clock,
    /// Embed each camera's newest annotated image of the range.
    pub images: bool,
}

/// Frames recent enough to look for a kept image among.
const IMAGE_CANDIDATES: i64 = 50;

async fn newest_image(
    db: &ReadOnlyDb,
    camera: &str,
    to: Timestamp,
    from: Timestamp,
) -> Result<Option<(String, Vec<u8>)>, DbError> {
    let recent = db.recent_frames(camera, Some(to), IMAGE_CANDIDATES).await?;
    let ids: Vec<String> = recent
        .iter()
        .filter(|f| f.received >= from)
        .map(|f| f.frame_id.clone())
        .collect();
    let kept = db.images_present(&ids).await?;
    for f in recent.iter().filter(|f| kept.contains(&f.frame_id)) {
        if let Some(jpeg) = db.image(&f.frame_id).await? {
            return Ok(Some((f.frame_id.clone(), jpeg)));
        }
    }
    Ok(None)
}

/// One camera's summary-table row and section, or `None` without frames.
async fn camera_section(
    db: &ReadOnlyDb,
    opts: &ReportOptions,
    i: usize,
    cam: &str,
) -> Result<Option<(String, String)>, DbError> {
    let range = Range {
        name: "custom",
        from: opts.from,
        to: opts.to,
    };
    let data = plot_data(db, cam, opts.from, opts.to, &opts.clock).await?;
    if data.totals.frames == 0 {
        return Ok(None);
    }
    let anchor = format!("cam-{}", url_part(cam));
    let t = &data.totals;
    let row = format!(
        r##"<tr><th scope="row"><a href="#{anchor}">{}</a></th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"##,
        esc(cam),
        t.frames,
        percent(t.good_percent()),
        t.good,
        t.bad,
        degrees(t.neck_mean),
        degrees(t.torso_mean)
    );
    let mut section = format!(
        r#"<section class="report-camera" id="{anchor}" aria-labelledby="{anchor}-h"><h2 id="{anchor}-h">Camera {}</h2>{}{}"#,
        esc(cam),
        totals_html(t),
        figure(
            &format!("plot-{i}"),
            cam,
            &range,
            &data,
            opts.thresholds,
            &opts.clock
        )
    );
    if opts.images
        && let Some((frame_id, jpeg)) = newest_image(db, cam, opts.to, opts.from).await?
    {
        let _ = write!(
            section,
            r#"<figure class="report-shot"><img src="data:image/jpeg;base64,{}" alt="Newest annotated frame of {} in this range"><figcaption>Newest annotated frame in the range (frame {}).</figcaption></figure>"#,
            base64::engine::general_purpose::STANDARD.encode(&jpeg),
            esc(cam),
            esc(&frame_id)
        );
    }
    section.push_str("</section>");
    Ok(Some((row, section)))
}

/// Builds the report.
pub async fn build(db: &ReadOnlyDb, opts: &ReportOptions) -> Result<String, DbError> {
    let clock = &opts.clock;
    let mut cameras = db.cameras().await?;
    if !opts.cameras.is_empty() {
        cameras.retain(|c| opts.cameras.contains(c));
    }
    let mut summary = String::new();
    let mut sections = String::new();
    let mut quiet = Vec::new();
    for (i, cam) in cameras.iter().enumerate() {
        match camera_section(db, opts, i, cam).await? {
            Some((row, section)) => {
                summary.push_str(&row);
                sections.push_str(&section);
            }
            None => quiet.push(cam.clone()),
        }
    }
    let mut out = String::with_capacity(sections.len() + 8192);
    let _ = write!(
        out,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Posture report {from} – {to}</title><style>{STYLE}</style></head>
<body class="report"><main id="main"><h1>Posture report</h1>
<p class="sub">{from} – {to} ({tz}, {span}) · generated {now} · {db}</p>"#,
        from = clock.datetime(opts.from),
        to = clock.datetime(opts.to),
        tz = esc(&clock.zone_name()),
        span = human_duration(opts.to.as_second() - opts.from.as_second()),
        now = clock.datetime(Timestamp::now()),
        db = esc(db.describe()),
    );
    if summary.is_empty() {
        out.push_str(r#"<p class="empty-state">No frames in this range.</p>"#);
    } else {
        let _ = write!(
            out,
            r#"<section aria-labelledby="summary-h"><h2 id="summary-h">Summary</h2><div class="table-wrap"><table class="summary"><thead><tr><th scope="col">Camera</th><th scope="col">Frames</th><th scope="col">Good</th><th scope="col">Good frames</th><th scope="col">Bad frames</th><th scope="col">Mean neck</th><th scope="col">Mean torso</th></tr></thead><tbody>{summary}</tbody></table></div><p class="muted">Good % counts frames with a verdict; thresholds: neck {}°, torso {}°.</p></section>"#,
            opts.thresholds.neck_deg, opts.thresholds.torso_deg
        );
    }
    if !quiet.is_empty() {
        let _ = write!(
            out,
            r#"<p class="muted">No frames in this range from: {}.</p>"#,
            esc(&quiet.join(", "))
        );
    }
    out.push_str(&sections);
    out.push_str("</main></body></html>\n");
    Ok(out)
}

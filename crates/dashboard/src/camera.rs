//! A camera's page: its time plot over 1 h / 24 h / 7 d / a custom range,
//! the range's totals, a table of recent frames linking to their annotated
//! images, and the CSV download. The plot data loader is shared with the
//! report.

use std::collections::HashSet;
use std::fmt::Write as _;

use jiff::Timestamp;
use posture_core::posture::Thresholds;
use serde::Deserialize;

use crate::db::{DbError, ReadOnlyDb};
use crate::html::{LiveRegion, Nav, PageMeta, db_banner, degrees, esc, page, percent, url_part};
use crate::live::DbHealth;
use crate::model::{Clock, Frame, human_duration};
use crate::plot::{Plot, PlotPoint, svg};
use crate::stats::CameraSummary;

/// Most frames plotted one by one; longer ranges are plotted as buckets.
pub const MAX_PLOT_POINTS: i64 = 2000;
/// Rows in the recent-frames table.
pub const RECENT_ROWS: i64 = 50;
/// The longest custom range.
pub const MAX_RANGE_SECS: i64 = 31 * 86_400;

/// The range query of a camera page, fragment or CSV link.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RangeQuery {
    /// `1h`, `24h` or `7d`.
    pub range: Option<String>,
    /// Custom start (`datetime-local` value or RFC 3339).
    pub from: Option<String>,
    /// Custom end (default: now).
    pub to: Option<String>,
}

/// A resolved time range.
#[derive(Clone, Debug, PartialEq)]
pub struct Range {
    /// `1h`, `24h`, `7d` or `custom`.
    pub name: &'static str,
    /// Start.
    pub from: Timestamp,
    /// End.
    pub to: Timestamp,
}

impl Range {
    /// The query string that selects this range again.
    pub fn query(&self) -> String {
        if self.name == "custom" {
            format!(
                "from={}&to={}",
                url_part(&self.from.to_string()),
                url_part(&self.to.to_string())
            )
        } else {
            format!("range={}", self.name)
        }
    }

    /// Whether the range ends now (new frames belong in it).
    pub fn follows(&self, now: Timestamp) -> bool {
        self.name != "custom" || self.to.as_second() >= now.as_second() - 60
    }
}

/// Resolves `q` at `now`: a named range, or `from`/`to` in `clock`'s zone
/// (to defaults to now). Errors are messages for the page.
pub fn resolve_range(q: &RangeQuery, now: Timestamp, clock: &Clock) -> Result<Range, String> {
    let from_name = |name: &'static str, secs: i64| Range {
        name,
        from: Timestamp::from_second(now.as_second() - secs).unwrap_or(now),
        to: now,
    };
    let custom = q.from.as_deref().is_some_and(|f| !f.trim().is_empty());
    if !custom {
        return match q.range.as_deref().unwrap_or("1h") {
            "1h" => Ok(from_name("1h", 3600)),
            "24h" => Ok(from_name("24h", 86_400)),
            "7d" => Ok(from_name("7d", 7 * 86_400)),
            other => Err(format!(
                "unknown range {other:?}: use 1h, 24h, 7d or from/to"
            )),
        };
    }
    let parse = |what: &str, v: &str| {
        clock
            .parse_input(v)
            .ok_or_else(|| format!("{what} {v:?} is not a date and time (e.g. 2026-11-23T10:00)"))
    };
    let from = parse("from", q.from.as_deref().unwrap_or_default())?;
    let to = match q.to.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => parse("to", t)?,
        None => now,
    };
    if from >= to {
        return Err("the range must start before it ends".into());
    }
    if to.as_second() - from.as_second() > MAX_RANGE_SECS {
        return Err(format!(
            "ranges are limited to {}",
            human_duration(MAX_RANGE_SECS)
        ));
    }
    Ok(Range {
        name: "custom",
        from,
        to,
    })
}

/// Totals of a range.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    /// Frames.
    pub frames: u64,
    /// Good frames.
    pub good: u64,
    /// Bad frames.
    pub bad: u64,
    /// Mean neck angle.
    pub neck_mean: Option<f64>,
    /// Mean torso angle.
    pub torso_mean: Option<f64>,
}

impl Totals {
    /// Share of Good among judged frames, percent.
    pub fn good_percent(&self) -> Option<f64> {
        let judged = self.good + self.bad;
        (judged > 0).then(|| 100.0 * self.good as f64 / judged as f64)
    }
}

/// A plot's points and the range's totals.
#[derive(Clone, Debug, Default)]
pub struct PlotData {
    /// Points, oldest first.
    pub points: Vec<PlotPoint>,
    /// Bucket width when points are buckets.
    pub bucket_secs: Option<i64>,
    /// Totals over the range.
    pub totals: Totals,
}

/// A bucket width giving about 600 buckets over `span` seconds.
pub fn bucket_width(span: i64) -> i64 {
    const WIDTHS: [i64; 12] = [
        10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14_400, 86_400,
    ];
    WIDTHS
        .iter()
        .copied()
        .find(|w| span / w <= 600)
        .unwrap_or(86_400)
}

/// Reads the plot of `camera` over `[from, to)`: frames one by one when
/// there are at most [`MAX_PLOT_POINTS`], else buckets.
pub async fn plot_data(
    db: &ReadOnlyDb,
    camera: &str,
    from: Timestamp,
    to: Timestamp,
    clock: &Clock,
) -> Result<PlotData, DbError> {
    let frames = db
        .frames_in_range(camera, from, to, MAX_PLOT_POINTS + 1)
        .await?;
    if (frames.len() as i64) <= MAX_PLOT_POINTS {
        let mut t = Totals::default();
        let (mut ns, mut nn, mut ts, mut tn) = (0.0, 0u64, 0.0, 0u64);
        for f in &frames {
            t.frames += 1;
            match f.verdict() {
                crate::model::Verdict::Good => t.good += 1,
                crate::model::Verdict::Bad => t.bad += 1,
                _ => {}
            }
            if let Some(v) = f.neck {
                ns += v;
                nn += 1;
            }
            if let Some(v) = f.torso {
                ts += v;
                tn += 1;
            }
        }
        t.neck_mean = (nn > 0).then(|| ns / nn as f64);
        t.torso_mean = (tn > 0).then(|| ts / tn as f64);
        return Ok(PlotData {
            points: frames
                .iter()
                .map(|f| PlotPoint::from_frame(f, clock))
                .collect(),
            bucket_secs: None,
            totals: t,
        });
    }
    let width = bucket_width(to.as_second() - from.as_second());
    let buckets = db.buckets(camera, from, to, width).await?;
    let mut t = Totals::default();
    let (mut ns, mut nn, mut ts, mut tn) = (0.0, 0u64, 0.0, 0u64);
    for b in &buckets {
        t.frames += u64::from(b.frames);
        t.good += u64::from(b.good);
        t.bad += u64::from(b.bad);
        if let Some(v) = b.neck {
            ns += v * f64::from(b.neck_frames);
            nn += u64::from(b.neck_frames);
        }
        if let Some(v) = b.torso {
            ts += v * f64::from(b.torso_frames);
            tn += u64::from(b.torso_frames);
        }
    }
    t.neck_mean = (nn > 0).then(|| ns / nn as f64);
    t.torso_mean = (tn > 0).then(|| ts / tn as f64);
    Ok(PlotData {
        points: buckets
            .iter()
            .map(|b| PlotPoint::from_bucket(b, width, clock))
            .collect(),
        bucket_secs: Some(width),
        totals: t,
    })
}

/// The plot as a `<figure>`.
pub fn figure(
    id: &str,
    camera: &str,
    range: &Range,
    data: &PlotData,
    thresholds: Thresholds,
    clock: &Clock,
) -> String {
    let plot = Plot {
        id,
        camera,
        from: range.from,
        to: range.to,
        points: &data.points,
        thresholds,
        clock,
        bucket_secs: data.bucket_secs,
    };
    let caption = match data.bucket_secs {
        Some(w) => format!(
            "{} frames shown as {} means (too many to plot one by one). Shading: green where most frames were Good, red where most were Bad.",
            data.totals.frames,
            human_duration(w)
        ),
        None => format!(
            "{} frames, one point each. Shading: green where posture was Good, red where it was Bad; dashed lines are the thresholds.",
            data.totals.frames
        ),
    };
    format!(
        r#"<figure class="plot-figure">{}<figcaption>{caption}</figcaption></figure>"#,
        svg(&plot)
    )
}

/// Totals as a definition list.
pub fn totals_html(t: &Totals) -> String {
    format!(
        r#"<dl class="totals"><div><dt>Frames</dt><dd class="t-frames">{}</dd></div><div><dt>Good</dt><dd class="t-good">{} <small>({} Good, {} Bad)</small></dd></div><div><dt>Mean neck</dt><dd>{}</dd></div><div><dt>Mean torso</dt><dd>{}</dd></div></dl>"#,
        t.frames,
        percent(t.good_percent()),
        t.good,
        t.bad,
        degrees(t.neck_mean),
        degrees(t.torso_mean),
    )
}

/// Everything a camera page shows.
pub struct CameraView<'a> {
    /// Camera id.
    pub camera: &'a str,
    /// Its live summary, if it has frames.
    pub summary: Option<&'a CameraSummary>,
    /// The range shown.
    pub range: &'a Range,
    /// Plot and totals.
    pub plot: &'a PlotData,
    /// Recent frames of the range, newest first.
    pub recent: &'a [Frame],
    /// Which of them still have an image.
    pub kept: &'a HashSet<String>,
    /// Threshold lines.
    pub thresholds: Thresholds,
    /// Time zone.
    pub clock: &'a Clock,
    /// Database state.
    pub health: &'a DbHealth,
    /// When.
    pub now: Timestamp,
}

fn recent_table(out: &mut String, v: &CameraView) {
    let _ = write!(
        out,
        r#"<h2 id="recent">Recent frames</h2><div class="table-wrap"><table class="frames" aria-labelledby="recent"><thead><tr><th scope="col">Received ({})</th><th scope="col">Verdict</th><th scope="col">Neck</th><th scope="col">Torso</th><th scope="col">Analysed by</th><th scope="col">Annotated image</th></tr></thead><tbody>"#,
        esc(&v.clock.zone_name())
    );
    if v.recent.is_empty() {
        out.push_str(r#"<tr><td colspan="6">No frames in this range.</td></tr>"#);
    }
    for f in v.recent {
        let verdict = f.verdict();
        let image = if v.kept.contains(&f.frame_id) {
            format!(
                r#"<a href="/image/{}">view<span class="visually-hidden"> the frame of {}</span></a>"#,
                url_part(&f.frame_id),
                v.clock.datetime(f.received)
            )
        } else {
            r#"<span class="muted">not kept</span>"#.to_string()
        };
        let _ = write!(
            out,
            r#"<tr data-frame="{}"><td><time datetime="{}">{}</time></td><td><span class="badge {}">{}</span></td><td>{}</td><td>{}</td><td>{}</td><td>{image}</td></tr>"#,
            esc(&f.frame_id),
            f.received,
            v.clock.datetime(f.received),
            verdict.css(),
            verdict.label(),
            degrees(f.neck),
            degrees(f.torso),
            esc(&f.processed_by),
        );
    }
    out.push_str("</tbody></table></div>");
}

/// The live region: banner, latest verdict, plot, totals, recent frames.
pub fn fragment(v: &CameraView) -> String {
    let mut out = db_banner(v.health, true, v.clock, v.now);
    if let Some(s) = v.summary {
        let latest = s.latest.as_ref();
        let verdict = latest.map(|f| f.verdict());
        let _ = write!(
            out,
            r#"<p class="now">Latest: {} <span>neck <b>{}</b>, torso <b>{}</b></span> <span class="muted">{}</span>{}</p>"#,
            verdict.map_or(String::new(), |v| format!(
                r#"<span class="badge {}">{}</span>"#,
                v.css(),
                v.label()
            )),
            degrees(latest.and_then(|f| f.neck)),
            degrees(latest.and_then(|f| f.torso)),
            s.age_secs.map_or("never seen".to_string(), |a| format!(
                "{} ago",
                human_duration(a)
            )),
            if s.silent {
                r#" <span class="badge silent">Silent</span>"#
            } else {
                ""
            }
        );
    }
    out.push_str(&figure(
        "plot",
        v.camera,
        v.range,
        v.plot,
        v.thresholds,
        v.clock,
    ));
    out.push_str(&totals_html(&v.plot.totals));
    recent_table(&mut out, v);
    out
}

fn range_nav(out: &mut String, camera: &str, range: &Range, clock: &Clock) {
    let base = format!("/camera/{}", url_part(camera));
    out.push_str(r#"<div class="toolbar"><nav class="ranges" aria-label="Time range">"#);
    for (name, label) in [("1h", "1 h"), ("24h", "24 h"), ("7d", "7 d")] {
        let current = if range.name == name {
            r#" aria-current="page""#
        } else {
            ""
        };
        let _ = write!(out, r#"<a href="{base}?range={name}"{current}>{label}</a>"#);
    }
    let _ = write!(
        out,
        r#"</nav><form class="custom" method="get" action="{base}"><fieldset><legend>Custom range ({tz})</legend><label for="from">From</label><input id="from" name="from" type="datetime-local" required value="{f}"><label for="to">To</label><input id="to" name="to" type="datetime-local" value="{t}"><button type="submit">Show</button></fieldset></form><a class="button" href="{base}/frames.csv?{q}" download>Download CSV</a></div>"#,
        tz = esc(&clock.zone_name()),
        f = clock.input_value(range.from),
        t = clock.input_value(range.to),
        q = esc(&range.query()),
    );
}

/// The whole page.
pub fn page_html(v: &CameraView, database: &str) -> String {
    let mut body = format!(
        r#"<nav class="crumbs" aria-label="Breadcrumb"><a href="/">Cameras</a> <span aria-hidden="true">›</span> <span aria-current="page">{cam}</span></nav><h1>Camera {cam}</h1>"#,
        cam = esc(v.camera)
    );
    range_nav(&mut body, v.camera, v.range, v.clock);
    let _ = write!(
        body,
        r#"<div id="live" aria-live="off">{}</div>"#,
        fragment(v)
    );
    page(
        &PageMeta {
            title: &format!("Camera {}", v.camera),
            nav: Nav::Camera,
            live: Some(LiveRegion {
                kind: "camera",
                src: format!(
                    "/fragment/camera/{}?{}",
                    url_part(v.camera),
                    v.range.query()
                ),
                camera: Some(v.camera.to_string()),
                follow: v.range.follows(v.now),
            }),
            clock: v.clock,
            database,
        },
        &body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_named_and_custom() {
        let clock = Clock::default();
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let r = resolve_range(&RangeQuery::default(), now, &clock).unwrap();
        assert_eq!(
            (r.name, r.to.as_second() - r.from.as_second()),
            ("1h", 3600)
        );
        let q = RangeQuery {
            range: Some("7d".into()),
            ..Default::default()
        };
        assert_eq!(resolve_range(&q, now, &clock).unwrap().name, "7d");
        let q = RangeQuery {
            from: Some("2027-01-14T06:00".into()),
            to: Some("2027-01-14T08:00".into()),
            range: None,
        };
        let r = resolve_range(&q, now, &clock).unwrap();
        assert_eq!(r.to.as_second() - r.from.as_second(), 7200);
        assert!(r.query().starts_with("from=2027-01-14T06%3A00%3A00Z"));
        assert!(!r.follows(now));
        let bad = RangeQuery {
            from: Some("2027-01-15T08:00".into()),
            to: Some("2027-01-15T06:00".into()),
            range: None,
        };
        assert!(resolve_range(&bad, now, &clock).is_err());
        let q = RangeQuery {
            range: Some("2w".into()),
            ..Default::default()
        };
        assert!(
            resolve_range(&q, now, &clock)
                .unwrap_err()
                .contains("unknown range")
        );
        assert_eq!(bucket_width(3600), 10);
        assert_eq!(bucket_width(7 * 86_400), 1800);
    }
}

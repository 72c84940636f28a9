//! The time plot, rendered on the server as inline SVG (pure): neck and
//! torso angles over time, their threshold lines, and the background shaded
//! green where posture was Good and red where it was Bad. One renderer for
//! the dashboard's camera page and the one-file report; no script needed.
//!
//! Points are single frames, or — for ranges with too many frames —
//! time buckets (mean angles, shade by the Good share).

use std::fmt::Write as _;

use jiff::Timestamp;
use posture_core::posture::Thresholds;

use crate::db::Bucket;
use crate::html::esc;
use crate::model::{Clock, Frame, Verdict, epoch, human_duration};

const W: f64 = 960.0;
const H: f64 = 340.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 48.0;

/// Neck series colour (blue; 7.1:1 on white).
pub const NECK_COLOR: &str = "#0b5cad";
/// Torso series colour (dark orange; 5.3:1 on white).
pub const TORSO_COLOR: &str = "#b34d00";
const GOOD_FILL: &str = "#1a7f37";
/// The narrowest shading band, in plot units (about a pixel per unit).
const MIN_SHADE_PX: f64 = 4.0;
const BAD_FILL: &str = "#cf222e";

/// How a point's stretch of time is shaded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Shade {
    /// Good (share of Good among judged frames, 0.5–1).
    Good(f64),
    /// Bad (share of Bad, 0.5–1).
    Bad(f64),
    /// No verdict (nobody in view).
    None,
}

/// One plotted point: a frame, or a bucket of frames.
#[derive(Clone, Debug, PartialEq)]
pub struct PlotPoint {
    /// Where on the time axis.
    pub t: Timestamp,
    /// Half the time this point stands for, seconds (0 for a frame).
    pub half_width: f64,
    /// Neck angle (mean for a bucket).
    pub neck: Option<f64>,
    /// Torso angle (mean for a bucket).
    pub torso: Option<f64>,
    /// Background shade.
    pub shade: Shade,
    /// Tooltip text.
    pub label: String,
}

impl PlotPoint {
    /// A point for one frame.
    pub fn from_frame(f: &Frame, clock: &Clock) -> Self {
        let v = f.verdict();
        let shade = match v {
            Verdict::Good => Shade::Good(1.0),
            Verdict::Bad => Shade::Bad(1.0),
            _ => Shade::None,
        };
        let angle = |a: Option<f64>| a.map_or("–".to_string(), |a| format!("{a:.1}°"));
        PlotPoint {
            t: f.received,
            half_width: 0.0,
            neck: f.neck,
            torso: f.torso,
            shade,
            label: format!(
                "{} · {} · neck {} · torso {}",
                clock.datetime(f.received),
                v.label(),
                angle(f.neck),
                angle(f.torso)
            ),
        }
    }

    /// A point for a bucket `width_secs` wide.
    pub fn from_bucket(b: &Bucket, width_secs: i64, clock: &Clock) -> Self {
        let judged = b.good + b.bad;
        let shade = if judged == 0 {
            Shade::None
        } else if b.good >= b.bad {
            Shade::Good(f64::from(b.good) / f64::from(judged))
        } else {
            Shade::Bad(f64::from(b.bad) / f64::from(judged))
        };
        let half = width_secs as f64 / 2.0;
        let mid = b
            .start
            .checked_add(jiff::SignedDuration::from_secs(width_secs / 2))
            .unwrap_or(b.start);
        let good = if judged == 0 {
            "no verdict".to_string()
        } else {
            format!("{:.0}% Good", 100.0 * f64::from(b.good) / f64::from(judged))
        };
        let angle = |a: Option<f64>| a.map_or("–".to_string(), |a| format!("{a:.1}°"));
        PlotPoint {
            t: mid,
            half_width: half,
            neck: b.neck,
            torso: b.torso,
            shade,
            label: format!(
                "{} + {} · {} frames · {good} · mean neck {} · torso {}",
                clock.datetime(b.start),
                human_duration(width_secs),
                b.frames,
                angle(b.neck),
                angle(b.torso)
            ),
        }
    }
}

/// A plot to draw.
#[derive(Clone, Debug)]
pub struct Plot<'a> {
    /// Unique within the page (element ids).
    pub id: &'a str,
    /// Camera id, for the accessible title.
    pub camera: &'a str,
    /// Start of the time axis.
    pub from: Timestamp,
    /// End of the time axis.
    pub to: Timestamp,
    /// Points, oldest first.
    pub points: &'a [PlotPoint],
    /// Threshold lines.
    pub thresholds: Thresholds,
    /// Time zone of the axis labels.
    pub clock: &'a Clock,
    /// Width of the buckets when points are buckets.
    pub bucket_secs: Option<i64>,
}

struct Scale {
    t0: f64,
    t1: f64,
    ymax: f64,
}

impl Scale {
    fn x(&self, t: f64) -> f64 {
        let span = (self.t1 - self.t0).max(1.0);
        LEFT + (t - self.t0).clamp(0.0, span) / span * (W - LEFT - RIGHT)
    }

    fn y(&self, deg: f64) -> f64 {
        H - BOTTOM - deg.clamp(0.0, self.ymax) / self.ymax * (H - TOP - BOTTOM)
    }
}

/// The y-axis top: room for the data and both thresholds, a multiple of 15°.
fn y_max(plot: &Plot) -> f64 {
    let data = plot
        .points
        .iter()
        .flat_map(|p| [p.neck, p.torso])
        .flatten()
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let need = data
        .max(f64::from(plot.thresholds.neck_deg) + 10.0)
        .max(f64::from(plot.thresholds.torso_deg) + 10.0)
        .max(60.0);
    ((need / 15.0).ceil() * 15.0).min(180.0)
}

/// Typical spacing of the points, seconds (median; 1 when unknown).
fn typical_gap(points: &[PlotPoint]) -> f64 {
    let mut gaps: Vec<f64> = points
        .windows(2)
        .map(|w| epoch(w[1].t) - epoch(w[0].t))
        .filter(|g| *g > 0.0)
        .collect();
    if gaps.is_empty() {
        return 1.0;
    }
    gaps.sort_by(f64::total_cmp);
    gaps[gaps.len() / 2]
}

/// Renders `plot` as an `<svg>` element.
pub fn svg(plot: &Plot) -> String {
    let scale = Scale {
        t0: epoch(plot.from),
        t1: epoch(plot.to),
        ymax: y_max(plot),
    };
    let mut out = String::with_capacity(4096 + plot.points.len() * 160);
    let title_id = format!("{}-title", plot.id);
    let desc_id = format!("{}-desc", plot.id);
    let _ = write!(
        out,
        r#"<svg class="plot" id="{id}" viewBox="0 0 {W} {H}" role="img" aria-labelledby="{title_id} {desc_id}" xmlns="http://www.w3.org/2000/svg" font-family="system-ui, sans-serif" font-size="12">"#,
        id = esc(plot.id),
    );
    let _ = write!(
        out,
        "<title id=\"{title_id}\">Neck and torso angles of {} from {} to {} ({})</title><desc id=\"{desc_id}\">{}</desc>",
        esc(plot.camera),
        plot.clock.datetime(plot.from),
        plot.clock.datetime(plot.to),
        esc(&plot.clock.zone_name()),
        esc(&describe(plot)),
    );
    out.push_str(r##"<rect x="0" y="0" width="100%" height="100%" fill="#ffffff"/>"##);
    shading(&mut out, plot, &scale);
    axes(&mut out, plot, &scale);
    thresholds(&mut out, plot, &scale);
    series(&mut out, plot, &scale);
    legend(&mut out, plot);
    if plot.points.is_empty() {
        let _ = write!(
            out,
            r##"<text class="empty" x="{}" y="{}" text-anchor="middle" fill="#57606a" font-size="15">No frames in this time range</text>"##,
            (LEFT + W - RIGHT) / 2.0,
            (TOP + H - BOTTOM) / 2.0
        );
    }
    out.push_str("</svg>");
    out
}

/// A sentence for screen readers.
fn describe(plot: &Plot) -> String {
    let (mut good, mut bad) = (0usize, 0usize);
    for p in plot.points {
        match p.shade {
            Shade::Good(_) => good += 1,
            Shade::Bad(_) => bad += 1,
            Shade::None => {}
        }
    }
    let unit = if plot.bucket_secs.is_some() {
        "time buckets"
    } else {
        "frames"
    };
    format!(
        "{} {unit} plotted; {good} mostly Good, {bad} mostly Bad. Thresholds: neck {}°, torso {}°.",
        plot.points.len(),
        plot.thresholds.neck_deg,
        plot.thresholds.torso_deg
    )
}

fn shading(out: &mut String, plot: &Plot, s: &Scale) {
    let gap = typical_gap(plot.points);
    // A point's stretch reaches halfway to its neighbours, but no further
    // than 1.5 typical gaps (or its bucket): a pause stays unshaded.
    let cap = (gap * 1.5).max(plot.bucket_secs.map_or(0.0, |b| b as f64 / 2.0));
    out.push_str(r#"<g class="shade">"#);
    let n = plot.points.len();
    for (i, p) in plot.points.iter().enumerate() {
        let (fill, share, class) = match p.shade {
            Shade::Good(v) => (GOOD_FILL, v, "good"),
            Shade::Bad(v) => (BAD_FILL, v, "bad"),
            Shade::None => continue,
        };
        let t = epoch(p.t);
        let prev = (i > 0).then(|| (t - epoch(plot.points[i - 1].t)) / 2.0);
        let next = (i + 1 < n).then(|| (epoch(plot.points[i + 1].t) - t) / 2.0);
        // The first and last points reach half a typical gap outwards.
        let left = p.half_width.max(prev.unwrap_or(gap / 2.0).min(cap));
        let right = p.half_width.max(next.unwrap_or(gap / 2.0).min(cap));
        let (mut x0, mut x1) = (s.x(t - left), s.x(t + right));
        // Frames close together still show their verdict.
        if x1 - x0 < MIN_SHADE_PX {
            let mid = (x0 + x1) / 2.0;
            (x0, x1) = (mid - MIN_SHADE_PX / 2.0, mid + MIN_SHADE_PX / 2.0);
        }
        let _ = write!(
            out,
            r#"<rect class="{class}" x="{x0:.1}" y="{TOP}" width="{:.1}" height="{}" fill="{fill}" fill-opacity="{:.3}"/>"#,
            x1 - x0,
            H - TOP - BOTTOM,
            0.08 + 0.12 * share,
        );
    }
    out.push_str("</g>");
}

/// Tick spacing for a span: at most about eight ticks.
fn tick_step(span: f64) -> i64 {
    const STEPS: [i64; 14] = [
        60, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400, 172_800, 604_800,
        2_592_000,
    ];
    STEPS
        .iter()
        .copied()
        .find(|s| span / *s as f64 <= 8.0)
        .unwrap_or(2_592_000)
}

fn axes(out: &mut String, plot: &Plot, s: &Scale) {
    let (x0, x1, y0, y1) = (LEFT, W - RIGHT, H - BOTTOM, TOP);
    out.push_str(r##"<g class="axes" stroke="#d0d7de" stroke-width="1">"##);
    let ystep = if s.ymax <= 60.0 { 10.0 } else { 15.0 };
    let mut deg = 0.0;
    while deg <= s.ymax + 0.01 {
        let y = s.y(deg);
        let _ = write!(
            out,
            r##"<line x1="{x0}" x2="{x1}" y1="{y:.1}" y2="{y:.1}"/><text x="{}" y="{:.1}" text-anchor="end" fill="#57606a" stroke="none">{deg}°</text>"##,
            x0 - 6.0,
            y + 4.0
        );
        deg += ystep;
    }
    let step = tick_step(s.t1 - s.t0);
    let offset = plot.clock.tz.to_offset(plot.from).seconds().into();
    let offset: i64 = offset;
    let start = s.t0 as i64;
    let mut tick = (start + offset).div_euclid(step) * step - offset;
    if tick < start {
        tick += step;
    }
    let mut first = true;
    while (tick as f64) <= s.t1 {
        let Ok(t) = Timestamp::from_second(tick) else {
            break;
        };
        let x = s.x(tick as f64);
        let zoned = t.to_zoned(plot.clock.tz.clone());
        let midnight = zoned.hour() == 0 && zoned.minute() == 0;
        let label = if step >= 86_400 {
            zoned.strftime("%a %d %b").to_string()
        } else {
            zoned.strftime("%H:%M").to_string()
        };
        let _ = write!(
            out,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{y1}" y2="{y0}"/><text x="{x:.1}" y="{}" text-anchor="middle" fill="#57606a" stroke="none">{label}</text>"##,
            y0 + 16.0
        );
        if step < 86_400 && (first || midnight) {
            let _ = write!(
                out,
                r##"<text x="{x:.1}" y="{}" text-anchor="middle" fill="#57606a" stroke="none">{}</text>"##,
                y0 + 31.0,
                zoned.strftime("%d %b")
            );
        }
        first = false;
        tick += step;
    }
    let _ = write!(
        out,
        r##"<line x1="{x0}" x2="{x1}" y1="{y0}" y2="{y0}" stroke="#57606a"/><line x1="{x0}" x2="{x0}" y1="{y1}" y2="{y0}" stroke="#57606a"/></g>"##
    );
}

fn thresholds(out: &mut String, plot: &Plot, s: &Scale) {
    for (deg, color, name, class) in [
        (
            plot.thresholds.neck_deg,
            NECK_COLOR,
            "neck limit",
            "limit-neck",
        ),
        (
            plot.thresholds.torso_deg,
            TORSO_COLOR,
            "torso limit",
            "limit-torso",
        ),
    ] {
        let y = s.y(f64::from(deg));
        let _ = write!(
            out,
            r##"<g class="{class}"><line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="{color}" stroke-width="1.5" stroke-dasharray="6 4"/><text x="{}" y="{:.1}" fill="{color}" font-weight="600" stroke="#ffffff" stroke-width="3" paint-order="stroke">{name} {deg}°</text></g>"##,
            W - RIGHT,
            LEFT + 6.0,
            y - 5.0
        );
    }
}

fn series(out: &mut String, plot: &Plot, s: &Scale) {
    let gap = typical_gap(plot.points);
    // Lines break where frames pause for more than five typical gaps.
    let brk = (gap * 5.0).max(plot.bucket_secs.map_or(0.0, |b| b as f64 * 1.5));
    type Pick = fn(&PlotPoint) -> Option<f64>;
    let picks: [(Pick, &str, &str, &str); 2] = [
        (|p| p.neck, NECK_COLOR, "neck", ""),
        (
            |p| p.torso,
            TORSO_COLOR,
            "torso",
            r#" stroke-dasharray="5 3""#,
        ),
    ];
    for (pick, color, name, dash) in picks {
        let mut d = String::new();
        let mut last: Option<f64> = None;
        for p in plot.points {
            let Some(v) = pick(p).filter(|v| v.is_finite()) else {
                last = None;
                continue;
            };
            let t = epoch(p.t);
            let cmd = match last {
                Some(l) if t - l <= brk => 'L',
                _ => 'M',
            };
            let _ = write!(d, "{cmd}{:.1} {:.1}", s.x(t), s.y(v));
            last = Some(t);
        }
        if !d.is_empty() {
            let _ = write!(
                out,
                r#"<path class="line-{name}" d="{d}" fill="none" stroke="{color}" stroke-width="1.6"{dash}/>"#
            );
        }
        let _ = write!(out, r#"<g class="pts-{name}" fill="{color}">"#);
        for p in plot.points {
            let Some(v) = pick(p).filter(|v| v.is_finite()) else {
                continue;
            };
            let (x, y) = (s.x(epoch(p.t)), s.y(v));
            let tip = esc(&p.label);
            if name == "neck" {
                let _ = write!(
                    out,
                    r#"<circle cx="{x:.1}" cy="{y:.1}" r="3.2"><title>{tip}</title></circle>"#
                );
            } else {
                let _ = write!(
                    out,
                    r#"<rect x="{:.1}" y="{:.1}" width="6" height="6"><title>{tip}</title></rect>"#,
                    x - 3.0,
                    y - 3.0
                );
            }
        }
        out.push_str("</g>");
    }
}

fn legend(out: &mut String, plot: &Plot) {
    let y = 18.0;
    let mut x = LEFT;
    out.push_str(r##"<g class="legend" fill="#24292f">"##);
    let _ = write!(
        out,
        r#"<line x1="{x}" x2="{}" y1="{y}" y2="{y}" stroke="{NECK_COLOR}" stroke-width="2"/><circle cx="{}" cy="{y}" r="3.5" fill="{NECK_COLOR}"/><text x="{}" y="{}">neck angle</text>"#,
        x + 24.0,
        x + 12.0,
        x + 30.0,
        y + 4.0
    );
    x += 120.0;
    let _ = write!(
        out,
        r#"<line x1="{x}" x2="{}" y1="{y}" y2="{y}" stroke="{TORSO_COLOR}" stroke-width="2" stroke-dasharray="5 3"/><rect x="{}" y="{}" width="7" height="7" fill="{TORSO_COLOR}"/><text x="{}" y="{}">torso angle</text>"#,
        x + 24.0,
        x + 8.5,
        y - 3.5,
        x + 30.0,
        y + 4.0
    );
    x += 120.0;
    for (fill, name) in [(GOOD_FILL, "Good"), (BAD_FILL, "Bad")] {
        let _ = write!(
            out,
            r#"<rect x="{x}" y="{}" width="18" height="12" fill="{fill}" fill-opacity="0.2" stroke="{fill}"/><text x="{}" y="{}">{name}</text>"#,
            y - 6.0,
            x + 24.0,
            y + 4.0
        );
        x += 80.0;
    }
    if let Some(b) = plot.bucket_secs {
        let _ = write!(
            out,
            r##"<text x="{}" y="{}" text-anchor="end" fill="#57606a">means per {}</text>"##,
            W - RIGHT,
            y + 4.0,
            human_duration(b)
        );
    }
    out.push_str("</g>");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(i: i64, t: i64, neck: f64, status: &str) -> Frame {
        Frame {
            id: i,
            camera: "pi1".into(),
            filename: String::new(),
            received: Timestamp::from_second(t).unwrap(),
            neck: Some(neck),
            torso: Some(neck / 4.0),
            status: status.into(),
            processed_by: String::new(),
            frame_id: String::new(),
        }
    }

    #[test]
    fn one_point_per_frame_shading_and_threshold_lines() {
        let clock = Clock::default();
        let t0 = 1_800_000_000;
        let frames = [
            frame(1, t0 + 60, 12.0, "Good"),
            frame(2, t0 + 120, 55.0, "Bad"),
            frame(3, t0 + 180, 14.0, "Good"),
        ];
        let points: Vec<_> = frames
            .iter()
            .map(|f| PlotPoint::from_frame(f, &clock))
            .collect();
        let plot = Plot {
            id: "p1",
            camera: "pi1 <lab>",
            from: Timestamp::from_second(t0).unwrap(),
            to: Timestamp::from_second(t0 + 3600).unwrap(),
            points: &points,
            thresholds: Thresholds::default(),
            clock: &clock,
            bucket_secs: None,
        };
        let svg = svg(&plot);
        assert_eq!(svg.matches(r#"r="3.2""#).count(), 3, "{svg}");
        assert_eq!(svg.matches("<rect class=\"good\"").count(), 2);
        assert_eq!(svg.matches("<rect class=\"bad\"").count(), 1);
        assert!(svg.contains("neck limit 40°") && svg.contains("torso limit 10°"));
        assert!(svg.contains("pi1 &lt;lab&gt;"), "escaped title");
        assert!(svg.contains("Bad · neck 55.0°"));
        assert!(!svg.contains("No frames"));
        // 1 hour: ticks every 10 minutes, labelled in the clock's zone.
        assert!(svg.contains(">08:10<") && svg.contains(">15 Jan<"), "{svg}");
    }

    #[test]
    fn empty_range_says_so_and_buckets_are_labelled() {
        let clock = Clock::default();
        let from = Timestamp::from_second(1_800_000_000).unwrap();
        let to = Timestamp::from_second(1_800_000_000 + 7 * 86_400).unwrap();
        let plot = Plot {
            id: "p",
            camera: "c",
            from,
            to,
            points: &[],
            thresholds: Thresholds::default(),
            clock: &clock,
            bucket_secs: None,
        };
        assert!(svg(&plot).contains("No frames in this time range"));
        let b = Bucket {
            start: from,
            frames: 10,
            neck: Some(20.0),
            torso: None,
            neck_frames: 10,
            torso_frames: 0,
            good: 3,
            bad: 7,
        };
        let p = PlotPoint::from_bucket(&b, 600, &clock);
        assert_eq!(p.shade, Shade::Bad(0.7));
        assert!(p.label.contains("10 frames · 30% Good"), "{}", p.label);
        assert_eq!(tick_step(7.0 * 86_400.0), 86_400);
        assert_eq!(tick_step(3600.0), 600);
    }
}

//! Drawing the verdict onto the frame: skeleton, the three landmarks used,
//! both angles and the verdict in green (Good) or red (Bad), so a person can
//! check at a glance what the analyzer judged.

use std::path::{Path, PathBuf};

use ab_glyph::{Font as _, FontVec, PxScale, ScaleFont as _};
use image::{Rgb, RgbImage};
use imageproc::drawing::{
    draw_filled_circle_mut, draw_filled_rect_mut, draw_line_segment_mut, draw_text_mut,
};
use imageproc::rect::Rect;
use posture_core::posture::{Assessment, POSE_CONNECTIONS, Pose, Verdict};

/// Where the annotation font is looked for when `--font` is not given.
pub const DEFAULT_FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Loads the font from `path`, or the first DejaVu Sans found. `None` (and a
/// warning) when there is none: geometry is still drawn, text is not.
pub fn load_font(path: Option<&Path>) -> Option<FontVec> {
    let candidates: Vec<PathBuf> = match path {
        Some(p) => vec![p.to_path_buf()],
        None => DEFAULT_FONT_PATHS.iter().map(PathBuf::from).collect(),
    };
    for candidate in &candidates {
        match std::fs::read(candidate) {
            Ok(bytes) => match FontVec::try_from_vec(bytes) {
                Ok(font) => return Some(font),
                Err(err) => {
                    tracing::warn!(path = %candidate.display(), %err, "not a usable font")
                }
            },
            Err(err) if path.is_some() => {
                tracing::warn!(path = %candidate.display(), %err, "cannot read the font")
            }
            Err(_) => {}
        }
    }
    tracing::warn!(
        tried = ?candidates,
        "no font found: annotated images get the skeleton and landmarks but no text (install fonts-dejavu-core or pass --font)"
    );
    None
}

const GOOD: Rgb<u8> = Rgb([0, 200, 0]);
const BAD: Rgb<u8> = Rgb([230, 0, 0]);
const NEUTRAL: Rgb<u8> = Rgb([255, 190, 0]);
const SKELETON: Rgb<u8> = Rgb([235, 235, 235]);
const POINT: Rgb<u8> = Rgb([255, 255, 0]);

/// Landmarks less visible than this are not drawn in the skeleton.
const MIN_DRAW_VISIBILITY: f32 = 0.5;

/// Draws the pose and verdict onto `img` in place.
pub fn annotate(
    img: &mut RgbImage,
    pose: Option<&Pose>,
    assessment: &Assessment,
    font: Option<&FontVec>,
) {
    let (w, h) = img.dimensions();
    let unit = (w.min(h) as f32 / 200.0).max(1.0);
    let color = match assessment {
        Assessment::Measured {
            verdict: Verdict::Good,
            ..
        } => GOOD,
        Assessment::Measured {
            verdict: Verdict::Bad,
            ..
        } => BAD,
        _ => NEUTRAL,
    };
    if let Some(pose) = pose {
        for &(a, b) in POSE_CONNECTIONS {
            let (Some(pa), Some(pb)) = (pose.landmarks.get(a), pose.landmarks.get(b)) else {
                continue;
            };
            if pa.visibility < MIN_DRAW_VISIBILITY || pb.visibility < MIN_DRAW_VISIBILITY {
                continue;
            }
            thick_line(img, (pa.x, pa.y), (pb.x, pb.y), SKELETON, unit);
        }
    }
    if let Some(m) = assessment.measurement() {
        let pts = [
            (m.ear.x, m.ear.y),
            (m.shoulder.x, m.shoulder.y),
            (m.hip.x, m.hip.y),
        ];
        // Vertical references through the shoulder and the hip.
        let reference = (60.0 * unit).max(20.0);
        thick_line(
            img,
            pts[1],
            (pts[1].0, pts[1].1 - reference),
            NEUTRAL,
            unit * 0.5,
        );
        thick_line(
            img,
            pts[2],
            (pts[2].0, pts[2].1 - reference),
            NEUTRAL,
            unit * 0.5,
        );
        thick_line(img, pts[1], pts[0], color, unit * 1.5);
        thick_line(img, pts[2], pts[1], color, unit * 1.5);
        for p in pts {
            draw_filled_circle_mut(img, (p.0 as i32, p.1 as i32), (4.0 * unit) as i32, POINT);
        }
    }
    let Some(font) = font else {
        // No font: a coloured band at the top still carries the verdict.
        draw_filled_rect_mut(
            img,
            Rect::at(0, 0).of_size(w, ((6.0 * unit) as u32).max(3)),
            color,
        );
        return;
    };
    let (lines, optional) = text_lines(assessment);
    for row in layout_text(font, w, h, &lines, optional) {
        draw_filled_rect_mut(img, row.background, Rgb([0, 0, 0]));
        draw_text_mut(img, color, row.x, row.y, row.scale, font, &row.text);
    }
}

/// The text of an assessment: lines of groups (see [`layout_text`]) and the
/// index of the first optional line. Measured: the angles, then the verdict,
/// then the side (a hint, dropped first when the frame is too small).
pub fn text_lines(assessment: &Assessment) -> (Vec<Vec<String>>, usize) {
    match assessment {
        Assessment::Measured {
            measurement,
            verdict,
        } => (
            vec![
                vec![
                    format!("Neck: {:.1}°", measurement.neck_deg),
                    format!("Torso: {:.1}°", measurement.torso_deg),
                ],
                vec![format!("Posture: {}", verdict.as_str())],
                vec![format!("({} side)", measurement.side.as_str())],
            ],
            2,
        ),
        other => (vec![vec![other.status().to_string()]], 1),
    }
}

/// Smallest font size tried before giving up on optional text (pixels).
const MIN_LEGIBLE_PX: f32 = 7.0;

/// One row of text placed on the frame, as [`draw_text_mut`] takes it.
#[derive(Clone, Debug, PartialEq)]
pub struct TextRow {
    /// The text of the row.
    pub text: String,
    /// Left edge passed to the drawing call.
    pub x: i32,
    /// Top edge passed to the drawing call.
    pub y: i32,
    /// Font size.
    pub scale: PxScale,
    /// The black box behind the row (inside the frame).
    pub background: Rect,
}

/// Where the glyphs of `text` put ink relative to the drawing origin, in
/// pixels: `(min_x, min_y, max_x, max_y)`, max exclusive. Follows the glyph
/// placement of imageproc's `draw_text_mut` (each glyph on the ascent line,
/// advancing by its advance plus kerning) and ab_glyph's pixel bounds.
pub fn ink_bounds(font: &FontVec, scale: PxScale, text: &str) -> Option<(i32, i32, i32, i32)> {
    let scaled = font.as_scaled(scale);
    let mut pen = 0.0f32;
    let mut prev = None;
    let mut bounds: Option<(i32, i32, i32, i32)> = None;
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        let glyph = id.with_scale_and_position(scale, ab_glyph::point(pen, scaled.ascent()));
        pen += scaled.h_advance(id);
        if let Some(outlined) = scaled.outline_glyph(glyph) {
            if let Some(p) = prev {
                pen += scaled.kern(id, p);
            }
            prev = Some(id);
            let bb = outlined.px_bounds();
            let (x0, y0) = (bb.min.x.round() as i32, bb.min.y.round() as i32);
            let (x1, y1) = (x0 + bb.width() as i32, y0 + bb.height() as i32);
            bounds = Some(match bounds {
                None => (x0, y0, x1, y1),
                Some((a, b, c, d)) => (a.min(x0), b.min(y0), c.max(x1), d.max(y1)),
            });
        }
    }
    bounds
}

/// Lays out text lines on a `w`×`h` frame. Each line is a list of groups
/// joined by two spaces; a line too wide for the frame wraps between groups,
/// and a group too wide on its own wraps between words. The font is the
/// largest, up to a size proportional to the frame, at which every row fits
/// inside the frame with a margin; the lines from `optional_from` on are
/// dropped first when nothing fits, so what comes before them is always
/// whole and inside the frame (unless the frame is a few pixels wide).
pub fn layout_text(
    font: &FontVec,
    w: u32,
    h: u32,
    lines: &[Vec<String>],
    optional_from: usize,
) -> Vec<TextRow> {
    let preferred = (w.min(h) as f32 * 0.06).max(12.0);
    let essential = &lines[..optional_from.min(lines.len())];
    let attempts: [(&[Vec<String>], f32); 3] = [
        (lines, MIN_LEGIBLE_PX),
        (essential, MIN_LEGIBLE_PX),
        (essential, 1.0),
    ];
    for (content, floor) in attempts {
        let mut px = preferred;
        while px >= floor {
            if let Some(rows) = try_layout(font, w, h, content, PxScale::from(px)) {
                return rows;
            }
            px = (px * 0.9).min(px - 0.5);
        }
    }
    // A frame a few pixels wide: the essential rows at 1 px, clipped.
    try_layout(font, u32::MAX, u32::MAX, essential, PxScale::from(1.0)).unwrap_or_default()
}

/// The rows of `lines` at `scale`, or `None` if they do not fit.
fn try_layout(
    font: &FontVec,
    w: u32,
    h: u32,
    lines: &[Vec<String>],
    scale: PxScale,
) -> Option<Vec<TextRow>> {
    let pad = (scale.y * 0.25).max(1.0).round() as i32;
    let clamp = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    let (w, h) = (clamp(w), clamp(h));
    let avail = w - 2 * pad;
    let fits =
        |text: &str| ink_bounds(font, scale, text).is_none_or(|(x0, _, x1, _)| x1 - x0 <= avail);
    let mut rows = Vec::new();
    let mut y = pad;
    for line in lines {
        for text in wrap(line, &fits)? {
            let Some((x0, y0, x1, y1)) = ink_bounds(font, scale, &text) else {
                continue;
            };
            let line_h = (scale.y.ceil() as i32).max(y1 - y0);
            // Ink starts `pad` from the left edge and at the row's top.
            let (x, top) = (pad - x0, y);
            if top + line_h + pad > h {
                return None;
            }
            // The box overhangs the ink by less than the margin: it never
            // reaches the frame's last column or row.
            let half = pad / 2;
            let bx = (pad - half).max(0);
            let by = (top - half).max(0);
            let bw = (x1 - x0 + 2 * half).min(w - bx).max(1) as u32;
            let bh = (line_h + 2 * half).min(h - by).max(1) as u32;
            rows.push(TextRow {
                text,
                x,
                y: top - y0,
                scale,
                background: Rect::at(bx, by).of_size(bw, bh),
            });
            y = top + line_h + pad;
        }
    }
    Some(rows)
}

/// Greedy wrap of one line's groups into rows that `fits`; `None` when a
/// single word does not fit.
fn wrap(groups: &[String], fits: &impl Fn(&str) -> bool) -> Option<Vec<String>> {
    let mut rows: Vec<String> = Vec::new();
    let mut current = String::new();
    let push = |piece: &str, sep: &str, current: &mut String, rows: &mut Vec<String>| {
        if current.is_empty() {
            current.push_str(piece);
        } else {
            let joined = format!("{current}{sep}{piece}");
            if fits(&joined) {
                *current = joined;
            } else {
                rows.push(std::mem::replace(current, piece.to_string()));
            }
        }
    };
    for group in groups {
        let candidate = if current.is_empty() {
            group.clone()
        } else {
            format!("{current}  {group}")
        };
        if fits(&candidate) {
            current = candidate;
            continue;
        }
        if fits(group) {
            rows.push(std::mem::replace(&mut current, group.clone()));
            continue;
        }
        // The group alone is too wide: its words, on rows of their own.
        if !current.is_empty() {
            rows.push(std::mem::take(&mut current));
        }
        for word in group.split(' ').filter(|w| !w.is_empty()) {
            if !fits(word) {
                return None;
            }
            push(word, " ", &mut current, &mut rows);
        }
    }
    if !current.is_empty() {
        rows.push(current);
    }
    Some(rows)
}

fn thick_line(img: &mut RgbImage, a: (f32, f32), b: (f32, f32), color: Rgb<u8>, width: f32) {
    let half = (width / 2.0).round() as i32;
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len = dx.hypot(dy);
    if !len.is_finite() {
        return;
    }
    // Offset copies perpendicular to the segment.
    let (nx, ny) = if len > 0.0 {
        (-dy / len, dx / len)
    } else {
        (0.0, 0.0)
    };
    for k in -half..=half {
        let o = k as f32;
        draw_line_segment_mut(
            img,
            (a.0 + nx * o, a.1 + ny * o),
            (b.0 + nx * o, b.1 + ny * o),
            color,
        );
    }
}

#[cfg(test)]
mod tests;

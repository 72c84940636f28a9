//! Drawing the verdict onto the frame: skeleton, the three landmarks used,
//! both angles and the verdict in green (Good) or red (Bad), so a person can
//! check at a glance what the analyzer judged.

use std::path::{Path, PathBuf};

use ab_glyph::{FontVec, PxScale};
use image::{Rgb, RgbImage};
use imageproc::drawing::{
    draw_filled_circle_mut, draw_filled_rect_mut, draw_line_segment_mut, draw_text_mut, text_size,
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
    let lines: Vec<String> = match assessment {
        Assessment::Measured {
            measurement,
            verdict,
        } => vec![
            format!(
                "Neck: {:.1}°  Torso: {:.1}°  ({} side)",
                measurement.neck_deg,
                measurement.torso_deg,
                measurement.side.as_str()
            ),
            format!("Posture: {}", verdict.as_str()),
        ],
        other => vec![other.status().to_string()],
    };
    let scale = PxScale::from((12.0 * unit).max(12.0));
    let pad = (4.0 * unit) as i32;
    let mut y = pad;
    for line in &lines {
        let (tw, th) = text_size(scale, font, line);
        draw_filled_rect_mut(
            img,
            Rect::at(pad / 2, y - pad / 2).of_size(tw + pad as u32, th + pad as u32),
            Rgb([0, 0, 0]),
        );
        draw_text_mut(img, color, pad, y, scale, font, line);
        y += th as i32 + pad * 2;
    }
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
mod tests {
    use super::*;
    use posture_core::posture::{Landmark, Thresholds, assess, landmark};

    fn pose() -> Pose {
        let mut landmarks = vec![Landmark::default(); landmark::COUNT];
        for (i, (x, y)) in [
            (landmark::LEFT_EAR, (100.0, 40.0)),
            (landmark::LEFT_SHOULDER, (100.0, 100.0)),
            (landmark::LEFT_HIP, (100.0, 180.0)),
        ] {
            landmarks[i] = Landmark {
                x,
                y,
                z: 0.0,
                visibility: 0.99,
                presence: 1.0,
            };
        }
        Pose {
            landmarks,
            score: 0.9,
        }
    }

    #[test]
    fn draws_the_good_verdict_in_green_with_and_without_font() {
        let p = pose();
        let a = assess(Some(&p), &Thresholds::default());
        let font = load_font(None);
        for f in [font.as_ref(), None] {
            let mut img = RgbImage::new(200, 200);
            annotate(&mut img, Some(&p), &a, f);
            // The neck line (shoulder→ear) is drawn in the verdict colour.
            assert_eq!(img.get_pixel(100, 70), &GOOD);
            // The shoulder landmark is marked.
            assert_eq!(img.get_pixel(100, 100), &POINT);
            let green = img.pixels().filter(|p| **p == GOOD).count();
            assert!(green > 100, "{green}");
        }
    }

    #[test]
    fn no_person_draws_only_the_status() {
        let a = assess(None, &Thresholds::default());
        let mut img = RgbImage::new(300, 120);
        annotate(&mut img, None, &a, None);
        assert_eq!(img.get_pixel(10, 0), &NEUTRAL);
        assert_eq!(img.get_pixel(150, 60), &Rgb([0, 0, 0]));
    }
}

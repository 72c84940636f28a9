use super::*;
use posture_core::posture::{Landmark, Thresholds, Verdict, assess, landmark};

/// A pose with only the given landmarks, all clearly visible.
fn pose_of(points: [(usize, (f32, f32)); 3]) -> Pose {
    let mut landmarks = vec![Landmark::default(); landmark::COUNT];
    for (i, (x, y)) in points {
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

fn pose() -> Pose {
    pose_of([
        (landmark::LEFT_EAR, (100.0, 40.0)),
        (landmark::LEFT_SHOULDER, (100.0, 100.0)),
        (landmark::LEFT_HIP, (100.0, 180.0)),
    ])
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

/// DejaVu Sans, or a skip (a panic under CI, where fonts are installed).
fn font_or_skip() -> Option<FontVec> {
    let font = load_font(None);
    if font.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "DejaVu Sans is required under CI (scripts/ci-services.sh installs it)"
        );
        eprintln!("SKIP: no DejaVu Sans font installed");
    }
    font
}

/// A person seen from the right, head forward (Bad), scaled to a w×h frame.
fn bad_pose_from_the_right(w: u32, h: u32) -> Pose {
    let (w, h) = (w as f32, h as f32);
    let s = w.min(h);
    let (sx, sy) = (0.45 * w, 0.45 * h);
    // Neck atan(0.3 / 0.2) ≈ 56° (Bad), torso atan(0.05 / 0.4) ≈ 7°.
    pose_of([
        (landmark::RIGHT_EAR, (sx + 0.3 * s, sy - 0.2 * s)),
        (landmark::RIGHT_SHOULDER, (sx, sy)),
        (landmark::RIGHT_HIP, (sx - 0.05 * s, sy + 0.4 * s)),
    ])
}

/// The case: on a 176×253 frame the first text line ran off the
/// right edge ("(right si…"), its black box cut by the frame. Only through
/// `annotate`: no text box may reach the last column or row of the frame.
#[test]
fn text_on_a_176x253_frame_is_not_cut_off() {
    let Some(font) = font_or_skip() else {
        return;
    };
    let (w, h) = (176, 253);
    let p = bad_pose_from_the_right(w, h);
    let a = assess(Some(&p), &Thresholds::default());
    assert!(matches!(
        a,
        Assessment::Measured {
            verdict: Verdict::Bad,
            ..
        }
    ));
    let mut img = RgbImage::from_pixel(w, h, Rgb([128, 128, 128]));
    annotate(&mut img, Some(&p), &a, Some(&font));
    let black = Rgb([0, 0, 0]);
    let right_edge = (0..h)
        .filter(|&y| *img.get_pixel(w - 1, y) == black)
        .count();
    let bottom_edge = (0..w)
        .filter(|&x| *img.get_pixel(x, h - 1) == black)
        .count();
    assert_eq!(right_edge, 0, "a text box runs off the right edge");
    assert_eq!(bottom_edge, 0, "a text box runs off the bottom edge");
    let red = img.pixels().filter(|px| **px == BAD).count();
    assert!(red > 50, "verdict text and lines drawn: {red}");
}

/// For frames from tiny to large: the verdict and both angles are all in
/// the laid-out rows; every glyph's ink (ab_glyph pixel bounds, measured
/// here from scratch) lies inside the frame; drawn on a larger canvas with
/// the frame in its middle, no text pixel falls outside the frame.
#[test]
fn verdict_and_angles_are_whole_and_inside_on_any_frame() {
    let Some(font) = font_or_skip() else {
        return;
    };
    for (w, h) in [
        (176, 253),
        (253, 176),
        (120, 90),
        (64, 64),
        (48, 160),
        (160, 48),
        (640, 480),
        (1920, 1080),
    ] {
        check_text_inside(&font, w, h);
    }
}

fn check_text_inside(font: &FontVec, w: u32, h: u32) {
    let p = bad_pose_from_the_right(w, h);
    let a = assess(Some(&p), &Thresholds::default());
    let m = a.measurement().unwrap();
    let (lines, optional) = text_lines(&a);
    let rows = layout_text(font, w, h, &lines, optional);
    let all: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
    let words: Vec<&str> = all.iter().flat_map(|r| r.split_whitespace()).collect();
    for needle in [
        "Posture:".to_string(),
        "Bad".to_string(),
        "Neck:".to_string(),
        format!("{:.1}°", m.neck_deg),
        "Torso:".to_string(),
        format!("{:.1}°", m.torso_deg),
    ] {
        assert!(
            words.contains(&needle.as_str()),
            "{w}×{h}: {needle} missing from {all:?}"
        );
    }
    // Glyph extents from ab_glyph, placed as imageproc's draw_text_mut places them.
    for row in &rows {
        let scaled = font.as_scaled(row.scale);
        let mut pen = 0.0;
        for c in row.text.chars() {
            let id = scaled.glyph_id(c);
            let g = id.with_scale_and_position(row.scale, ab_glyph::point(pen, scaled.ascent()));
            pen += scaled.h_advance(id);
            if let Some(o) = scaled.outline_glyph(g) {
                let bb = o.px_bounds();
                let x0 = row.x + bb.min.x.round() as i32;
                let y0 = row.y + bb.min.y.round() as i32;
                let (x1, y1) = (x0 + bb.width() as i32, y0 + bb.height() as i32);
                assert!(
                    x0 >= 0 && y0 >= 0 && x1 <= w as i32 && y1 <= h as i32,
                    "{w}×{h}: '{c}' of {:?} at {x0},{y0}..{x1},{y1}",
                    row.text
                );
            }
        }
    }
    // The same rows drawn on a canvas with a 200 px border: ink only inside the frame.
    let border = 200;
    let mut canvas = image::GrayImage::new(w + 2 * border, h + 2 * border);
    for row in &rows {
        draw_text_mut(
            &mut canvas,
            image::Luma([255]),
            row.x + border as i32,
            row.y + border as i32,
            row.scale,
            font,
            &row.text,
        );
    }
    let (mut inside, mut outside) = (0, 0);
    for (x, y, px) in canvas.enumerate_pixels() {
        if px.0[0] == 0 {
            continue;
        }
        let within = (border..border + w).contains(&x) && (border..border + h).contains(&y);
        if within { inside += 1 } else { outside += 1 }
    }
    assert_eq!(
        outside, 0,
        "{w}×{h}: {outside} text pixels outside the frame"
    );
    assert!(inside > 0, "{w}×{h}: no text drawn");
}

#[test]
fn small_frames_wrap_and_large_frames_get_larger_text() {
    let Some(font) = font_or_skip() else {
        return;
    };
    let a = assess(
        Some(&bad_pose_from_the_right(100, 253)),
        &Thresholds::default(),
    );
    let (lines, optional) = text_lines(&a);
    let small = layout_text(&font, 100, 253, &lines, optional);
    // The angles line wraps at the group boundary on a narrow frame.
    assert!(
        small
            .iter()
            .any(|r| r.text.starts_with("Neck:") && !r.text.contains("Torso")),
        "{small:?}"
    );
    let large = layout_text(&font, 1920, 1080, &lines, optional);
    assert!(large[0].scale.y > 2.0 * small[0].scale.y);
    // On a large frame the angles share one row, and the side hint is shown.
    assert!(
        large
            .iter()
            .any(|r| r.text.contains("Neck:") && r.text.contains("Torso:"))
    );
    assert!(large.iter().any(|r| r.text == "(right side)"));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
    #[test]
    fn text_fits_every_frame_size(w in 40u32..900, h in 40u32..900) {
        if let Some(font) = load_font(None) {
            check_text_inside(&font, w, h);
        }
    }
}

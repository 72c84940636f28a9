//! The landmark stage's geometry and post-processing, as MediaPipe's
//! `pose_landmark_cpu` graph configures it: the rotated ROI from the
//! detector's alignment keypoints, decoding the 39 landmarks, heatmap
//! refinement, and projection from the ROI back into the image. Pure.

use crate::detect::{Detection, sigmoid};
use crate::geometry::{RotatedRect, normalize_radians};
use posture_core::posture::Landmark;

/// Landmarks the model outputs (33 body + 6 auxiliary for the ROI).
pub const MODEL_LANDMARKS: usize = 39;
/// Values per landmark: x, y, z, visibility, presence.
pub const VALUES_PER_LANDMARK: usize = 5;
/// Heatmap refinement kernel. MediaPipe 0.10.21 behaves as kernel 9 (its
/// configs that say 7 move landmarks by 2–16 px against its real output).
pub const REFINE_KERNEL: usize = 9;
/// A heatmap window must peak at least this high to refine (MediaPipe default).
pub const MIN_CONFIDENCE_TO_REFINE: f32 = 0.5;

/// The rotated square the landmark model looks at, from a detection whose
/// keypoints are already in image pixels: centred on the hip centre
/// (keypoint 0), side = 2 × distance to keypoint 1 × 1.25, rotated so the
/// hips→shoulders direction points up (MediaPipe's
/// `AlignmentPointsRectsCalculator` with target angle 90° followed by
/// `RectTransformationCalculator` scale 1.25, `square_long`).
pub fn roi_from_keypoints(hip: [f32; 2], full_body: [f32; 2]) -> RotatedRect {
    let (dx, dy) = (full_body[0] - hip[0], full_body[1] - hip[1]);
    let size = 2.0 * (dx * dx + dy * dy).sqrt();
    let rotation = normalize_radians(std::f32::consts::FRAC_PI_2 - (-dy).atan2(dx));
    RotatedRect {
        cx: hip[0],
        cy: hip[1],
        width: size * 1.25,
        height: size * 1.25,
        rotation,
    }
}

/// Maps a detection from letterboxed-tensor coordinates ([0, 1] of the
/// detector input covering `letterbox`) to image pixels.
pub fn detection_to_image(d: &Detection, letterbox: &RotatedRect) -> Detection {
    let (x0, y0) = (
        letterbox.cx - letterbox.width / 2.0,
        letterbox.cy - letterbox.height / 2.0,
    );
    let mut out = d.clone();
    out.bbox = [
        x0 + d.bbox[0] * letterbox.width,
        y0 + d.bbox[1] * letterbox.height,
        d.bbox[2] * letterbox.width,
        d.bbox[3] * letterbox.height,
    ];
    for (o, k) in out.keypoints.iter_mut().zip(&d.keypoints) {
        *o = [x0 + k[0] * letterbox.width, y0 + k[1] * letterbox.height];
    }
    out
}

/// One landmark in [0, 1] coordinates of the landmark model's input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RoiLandmark {
    /// x, fraction of the ROI width.
    pub x: f32,
    /// y, fraction of the ROI height.
    pub y: f32,
    /// Depth, in the same units as x.
    pub z: f32,
    /// Sigmoid of the visibility logit.
    pub visibility: f32,
    /// Sigmoid of the presence logit.
    pub presence: f32,
}

/// Decodes the landmark tensor (`[39 × 5]`, pixels of a `size`×`size`
/// input) into normalized ROI landmarks (MediaPipe's
/// `TensorsToLandmarksCalculator` with sigmoid visibility/presence).
pub fn decode_landmarks(raw: &[f32], size: f32) -> Vec<RoiLandmark> {
    raw.chunks_exact(VALUES_PER_LANDMARK)
        .map(|v| RoiLandmark {
            x: v[0] / size,
            y: v[1] / size,
            z: v[2] / size,
            visibility: sigmoid(v[3]),
            presence: sigmoid(v[4]),
        })
        .collect()
}

/// Refines landmark positions with the heatmap (`hm_h`×`hm_w`×`channels`,
/// raw logits, HWC) as MediaPipe's `RefineLandmarksFromHeatmapCalculator`:
/// the sigmoid-weighted centroid of a `kernel`×`kernel` window around each
/// landmark, when the window's peak reaches `MIN_CONFIDENCE_TO_REFINE`.
pub fn refine_with_heatmap(
    lms: &mut [RoiLandmark],
    heatmap: &[f32],
    hm_h: usize,
    hm_w: usize,
    channels: usize,
    kernel: usize,
) {
    let offset = (kernel as i64 - 1) / 2;
    for (i, lm) in lms.iter_mut().enumerate().take(channels) {
        // MediaPipe truncates towards zero (float -> int).
        let center_col = (lm.x * hm_w as f32) as i64;
        let center_row = (lm.y * hm_h as f32) as i64;
        if center_col < 0
            || center_col >= hm_w as i64
            || center_row < 0
            || center_row >= hm_h as i64
        {
            continue;
        }
        let (c0, c1) = (
            (center_col - offset).max(0),
            (center_col + offset + 1).min(hm_w as i64),
        );
        let (r0, r1) = (
            (center_row - offset).max(0),
            (center_row + offset + 1).min(hm_h as i64),
        );
        let (mut sum, mut wc, mut wr, mut max) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
        for r in r0..r1 {
            for c in c0..c1 {
                let conf = sigmoid(heatmap[(r as usize * hm_w + c as usize) * channels + i]);
                sum += conf;
                max = max.max(conf);
                wc += c as f32 * conf;
                wr += r as f32 * conf;
            }
        }
        if max >= MIN_CONFIDENCE_TO_REFINE && sum > 0.0 {
            lm.x = wc / hm_w as f32 / sum;
            lm.y = wr / hm_h as f32 / sum;
        }
    }
}

/// Projects an ROI landmark into image pixels (MediaPipe's
/// `LandmarkProjectionCalculator`): rotate about the ROI centre, scale by the
/// ROI size; z is scaled by the ROI width.
pub fn project(lm: &RoiLandmark, roi: &RotatedRect) -> Landmark {
    let (x, y) = (lm.x - 0.5, lm.y - 0.5);
    let (s, c) = roi.rotation.sin_cos();
    Landmark {
        x: (c * x - s * y) * roi.width + roi.cx,
        y: (s * x + c * y) * roi.height + roi.cy,
        z: lm.z * roi.width,
        visibility: lm.visibility,
        presence: lm.presence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::f32::consts::{FRAC_PI_2, PI};

    fn lm(x: f32, y: f32) -> RoiLandmark {
        RoiLandmark {
            x,
            y,
            z: 0.0,
            visibility: 1.0,
            presence: 1.0,
        }
    }

    #[test]
    fn upright_person_gives_an_unrotated_roi() {
        // Full-body point straight above the hips: no rotation.
        let r = roi_from_keypoints([100.0, 200.0], [100.0, 120.0]);
        assert!(r.rotation.abs() < 1e-6, "{}", r.rotation);
        assert_eq!((r.cx, r.cy), (100.0, 200.0));
        assert!((r.width - 200.0).abs() < 1e-4 && r.width == r.height);
    }

    #[test]
    fn lying_person_gives_a_quarter_turn() {
        // Full-body point to the right of the hips: body axis horizontal.
        let r = roi_from_keypoints([100.0, 100.0], [150.0, 100.0]);
        assert!((r.rotation - FRAC_PI_2).abs() < 1e-6, "{}", r.rotation);
        let r = roi_from_keypoints([100.0, 100.0], [50.0, 100.0]);
        assert!((r.rotation + FRAC_PI_2).abs() < 1e-6, "{}", r.rotation);
        // Upside down.
        let r = roi_from_keypoints([100.0, 100.0], [100.0, 150.0]);
        assert!((r.rotation.abs() - PI).abs() < 1e-5, "{}", r.rotation);
    }

    #[test]
    fn detection_projection_undoes_the_letterbox() {
        let (lb, _) = RotatedRect::full_image(600, 400).letterbox(224, 224);
        let d = Detection {
            score: 0.9,
            bbox: [0.5, 0.5, 0.1, 0.1],
            keypoints: [[0.0, 1.0 / 6.0], [1.0, 5.0 / 6.0], [0.5, 0.5], [0.5, 0.5]],
        };
        let p = detection_to_image(&d, &lb);
        assert_eq!(p.keypoints[0], [0.0, 0.0]);
        assert!(
            (p.keypoints[1][0] - 600.0).abs() < 1e-3 && (p.keypoints[1][1] - 400.0).abs() < 1e-3
        );
        assert_eq!(p.bbox, [300.0, 200.0, 60.0, 60.0]);
    }

    #[test]
    fn decode_scales_and_squashes() {
        let raw: Vec<f32> = (0..MODEL_LANDMARKS)
            .flat_map(|i| [128.0, 64.0 + i as f32, 25.6, 0.0, 100.0])
            .collect();
        let l = decode_landmarks(&raw, 256.0);
        assert_eq!(l.len(), MODEL_LANDMARKS);
        assert_eq!((l[0].x, l[0].y, l[0].z), (0.5, 0.25, 0.1));
        assert_eq!(l[0].visibility, 0.5);
        assert!(l[0].presence > 0.999);
    }

    #[test]
    fn heatmap_centroid_moves_landmark_to_the_peak() {
        let (h, w, ch) = (64, 64, 2);
        let mut hm = vec![-20.0f32; h * w * ch];
        // Channel 0: a symmetric blob centred on (col 30, row 20).
        for (dr, dc) in [(0i32, 0i32), (-1, 0), (1, 0), (0, -1), (0, 1)] {
            hm[(((20 + dr) as usize) * w + (30 + dc) as usize) * ch] = 10.0;
        }
        let mut lms = vec![lm(31.5 / 64.0, 22.2 / 64.0), lm(0.5, 0.5)];
        refine_with_heatmap(&mut lms, &hm, h, w, ch, REFINE_KERNEL);
        assert!((lms[0].x - 30.0 / 64.0).abs() < 1e-3, "{}", lms[0].x * 64.0);
        assert!((lms[0].y - 20.0 / 64.0).abs() < 1e-3, "{}", lms[0].y * 64.0);
        // Channel 1 has no confident cell: unchanged.
        assert_eq!((lms[1].x, lms[1].y), (0.5, 0.5));
    }

    #[test]
    fn heatmap_ignores_landmarks_outside_the_map() {
        let hm = vec![10.0f32; 4 * 4];
        let mut lms = vec![lm(-0.3, 0.5), lm(0.5, 1.2)];
        refine_with_heatmap(&mut lms, &hm, 4, 4, 1, REFINE_KERNEL);
        assert_eq!((lms[0].x, lms[0].y), (-0.3, 0.5));
        assert_eq!((lms[1].x, lms[1].y), (0.5, 1.2));
    }

    #[test]
    fn projection_rotates_about_the_roi_centre() {
        let roi = RotatedRect {
            cx: 100.0,
            cy: 50.0,
            width: 40.0,
            height: 40.0,
            rotation: FRAC_PI_2,
        };
        let p = project(&lm(1.0, 0.5), &roi);
        // The ROI's right edge is 20 px below the centre after a clockwise quarter turn.
        assert!(
            (p.x - 100.0).abs() < 1e-4 && (p.y - 70.0).abs() < 1e-4,
            "{p:?}"
        );
    }

    proptest! {
        #[test]
        fn projection_agrees_with_the_crop_map(
            cx in 0.0f32..1000.0, cy in 0.0f32..1000.0, side in 10.0f32..800.0, rot in -3.1f32..3.1,
            u in 0.0f32..1.0, v in 0.0f32..1.0,
        ) {
            // A landmark at (u, v) of the crop must project to where the crop sampled it from.
            let roi = RotatedRect { cx, cy, width: side, height: side, rotation: rot };
            let p = project(&lm(u, v), &roi);
            let (x, y) = roi.tensor_to_image(256, 256).apply(u as f64 * 256.0, v as f64 * 256.0);
            prop_assert!((p.x as f64 - x).abs() < 0.05 + side as f64 * 1e-4 && (p.y as f64 - y).abs() < 0.05 + side as f64 * 1e-4,
                "{p:?} vs {x},{y}");
        }
    }
}

//! The detector's post-processing, as MediaPipe's `pose_detection_cpu`
//! graph configures it: SSD anchors, box/keypoint decoding with sigmoid
//! scores, and weighted non-maximum suppression (IoU 0.3). Pure functions of
//! the raw tensors.

/// One SSD anchor: centre in [0, 1] tensor coordinates. BlazePose uses
/// `fixed_anchor_size`, so every anchor is 1×1 and only the centre matters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Anchor {
    /// Centre x, fraction of the tensor width.
    pub x: f32,
    /// Centre y, fraction of the tensor height.
    pub y: f32,
}

/// Options of MediaPipe's `SsdAnchorsCalculator` that BlazePose sets.
#[derive(Clone, Debug)]
pub struct AnchorOptions {
    /// Input tensor size (square).
    pub input_size: u32,
    /// Feature-map stride of each layer.
    pub strides: Vec<u32>,
    /// Anchors per location in a layer: one per aspect ratio plus the
    /// interpolated-scale anchor (MediaPipe's default 1.0 adds one).
    pub aspect_ratios: usize,
    /// Whether `interpolated_scale_aspect_ratio` is > 0 (adds one anchor).
    pub interpolated_scale: bool,
    /// Offset of the anchor centre within a cell.
    pub offset: f32,
}

impl AnchorOptions {
    /// BlazePose detector (pose_detection.tflite) anchors: 224×224 input,
    /// strides 8, 16, 32, 32, 32, one aspect ratio plus the interpolated one.
    pub fn blazepose() -> Self {
        Self {
            input_size: 224,
            strides: vec![8, 16, 32, 32, 32],
            aspect_ratios: 1,
            interpolated_scale: true,
            offset: 0.5,
        }
    }
}

/// Generates anchors in the order the model emits boxes (MediaPipe's
/// `SsdAnchorsCalculator` with `fixed_anchor_size: true`): layers sharing a
/// stride are merged; within a layer, row-major cells, then anchors.
pub fn generate_anchors(o: &AnchorOptions) -> Vec<Anchor> {
    let mut anchors = Vec::new();
    let mut layer = 0;
    while layer < o.strides.len() {
        let mut per_cell = 0;
        let mut last = layer;
        while last < o.strides.len() && o.strides[last] == o.strides[layer] {
            per_cell += o.aspect_ratios + usize::from(o.interpolated_scale);
            last += 1;
        }
        let fm = o.input_size.div_ceil(o.strides[layer]);
        for y in 0..fm {
            for x in 0..fm {
                for _ in 0..per_cell {
                    anchors.push(Anchor {
                        x: (x as f32 + o.offset) / fm as f32,
                        y: (y as f32 + o.offset) / fm as f32,
                    });
                }
            }
        }
        layer = last;
    }
    anchors
}

/// Number of keypoints the detector emits per box.
pub const NUM_KEYPOINTS: usize = 4;
/// Values per box in the regression tensor: box (4) + keypoints (2 each).
pub const NUM_COORDS: usize = 4 + 2 * NUM_KEYPOINTS;

/// A decoded detection, in [0, 1] coordinates of the detector's input tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    /// Sigmoid score.
    pub score: f32,
    /// Box: xmin, ymin, width, height.
    pub bbox: [f32; 4],
    /// Keypoints: 0 hip centre, 1 a point on the full-body circle, 2 shoulder
    /// centre, 3 a point on the upper-body circle.
    pub keypoints: [[f32; 2]; NUM_KEYPOINTS],
}

/// Decodes the raw regression (`[n, 12]`) and score (`[n]`) tensors into
/// detections scoring at least `min_score` (MediaPipe's
/// `TensorsToDetectionsCalculator`: x/y/w/h order, scale = input size,
/// scores clipped to ±100 then sigmoid).
pub fn decode(
    raw_boxes: &[f32],
    raw_scores: &[f32],
    anchors: &[Anchor],
    scale: f32,
    min_score: f32,
) -> Vec<Detection> {
    let mut out = Vec::new();
    for (i, a) in anchors.iter().enumerate() {
        let (Some(&s), Some(r)) = (
            raw_scores.get(i),
            raw_boxes.get(i * NUM_COORDS..(i + 1) * NUM_COORDS),
        ) else {
            break;
        };
        let score = sigmoid(s.clamp(-100.0, 100.0));
        if score < min_score {
            continue;
        }
        let xc = r[0] / scale + a.x;
        let yc = r[1] / scale + a.y;
        let (w, h) = (r[2] / scale, r[3] / scale);
        let mut keypoints = [[0.0; 2]; NUM_KEYPOINTS];
        for (k, kp) in keypoints.iter_mut().enumerate() {
            *kp = [r[4 + 2 * k] / scale + a.x, r[5 + 2 * k] / scale + a.y];
        }
        out.push(Detection {
            score,
            bbox: [xc - w / 2.0, yc - h / 2.0, w, h],
            keypoints,
        });
    }
    out
}

/// Intersection over union of two `[xmin, ymin, w, h]` boxes (0 when disjoint).
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let (ax1, ay1, bx1, by1) = (a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]);
    let iw = ax1.min(bx1) - a[0].max(b[0]);
    let ih = ay1.min(by1) - a[1].max(b[1]);
    if iw <= 0.0 || ih <= 0.0 {
        return 0.0;
    }
    let inter = iw * ih;
    let union = a[2] * a[3] + b[2] * b[3] - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// MediaPipe's weighted NMS: take the best remaining detection, average it
/// with every remaining detection overlapping it by more than `threshold`
/// (weights = scores; the best one's score is kept), drop those, repeat.
/// Output is ordered by score, best first.
pub fn weighted_nms(mut dets: Vec<Detection>, threshold: f32) -> Vec<Detection> {
    // Stable sort: equal scores keep the anchor order, as MediaPipe's.
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut out = Vec::new();
    while let Some(best) = dets.first().cloned() {
        let (candidates, rest): (Vec<Detection>, Vec<Detection>) = dets
            .into_iter()
            .partition(|d| iou(&best.bbox, &d.bbox) > threshold);
        let mut merged = best.clone();
        let total: f32 = candidates.iter().map(|d| d.score).sum();
        if total > 0.0 {
            let mut bbox = [0.0f32; 4];
            let mut kps = [[0.0f32; 2]; NUM_KEYPOINTS];
            for d in &candidates {
                let (x0, y0, x1, y1) = (
                    d.bbox[0],
                    d.bbox[1],
                    d.bbox[0] + d.bbox[2],
                    d.bbox[1] + d.bbox[3],
                );
                bbox[0] += x0 * d.score;
                bbox[1] += y0 * d.score;
                bbox[2] += x1 * d.score;
                bbox[3] += y1 * d.score;
                for (k, kp) in kps.iter_mut().enumerate() {
                    kp[0] += d.keypoints[k][0] * d.score;
                    kp[1] += d.keypoints[k][1] * d.score;
                }
            }
            let (x0, y0, x1, y1) = (
                bbox[0] / total,
                bbox[1] / total,
                bbox[2] / total,
                bbox[3] / total,
            );
            merged.bbox = [x0, y0, x1 - x0, y1 - y0];
            for (k, kp) in kps.iter().enumerate() {
                merged.keypoints[k] = [kp[0] / total, kp[1] / total];
            }
        }
        out.push(merged);
        dets = rest;
    }
    out
}

/// Logistic function.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn det(score: f32, x: f32, y: f32, s: f32) -> Detection {
        Detection {
            score,
            bbox: [x, y, s, s],
            keypoints: [[x, y]; NUM_KEYPOINTS],
        }
    }

    #[test]
    fn blazepose_has_2254_anchors_in_model_order() {
        let a = generate_anchors(&AnchorOptions::blazepose());
        // 28×28×2 (stride 8) + 14×14×2 (stride 16) + 7×7×6 (three stride-32 layers).
        assert_eq!(a.len(), 2254);
        assert_eq!(
            a[0],
            Anchor {
                x: 0.5 / 28.0,
                y: 0.5 / 28.0
            }
        );
        assert_eq!(a[1], a[0]);
        assert_eq!(
            a[2],
            Anchor {
                x: 1.5 / 28.0,
                y: 0.5 / 28.0
            }
        );
        assert_eq!(
            a[1568],
            Anchor {
                x: 0.5 / 14.0,
                y: 0.5 / 14.0
            }
        );
        assert_eq!(
            a[1960],
            Anchor {
                x: 0.5 / 7.0,
                y: 0.5 / 7.0
            }
        );
        assert_eq!(a[1965], a[1960]);
        assert_eq!(
            a[1966],
            Anchor {
                x: 1.5 / 7.0,
                y: 0.5 / 7.0
            }
        );
        assert_eq!(
            *a.last().unwrap(),
            Anchor {
                x: 6.5 / 7.0,
                y: 6.5 / 7.0
            }
        );
    }

    #[test]
    fn decode_applies_anchor_offsets_scale_and_threshold() {
        let anchors = [Anchor { x: 0.5, y: 0.25 }, Anchor { x: 0.1, y: 0.1 }];
        let mut raw = vec![0.0; 2 * NUM_COORDS];
        raw[..NUM_COORDS].copy_from_slice(&[
            22.4, -22.4, 44.8, 112.0, 0.0, 0.0, 22.4, 22.4, 0.0, 0.0, 0.0, 0.0,
        ]);
        let d = decode(&raw, &[2.0, -3.0], &anchors, 224.0, 0.5);
        assert_eq!(d.len(), 1, "the second anchor scores sigmoid(-3) < 0.5");
        let d = &d[0];
        assert!((d.score - sigmoid(2.0)).abs() < 1e-6);
        let want = [0.6 - 0.1, 0.15 - 0.25, 0.2, 0.5];
        for (g, w) in d.bbox.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{:?}", d.bbox);
        }
        assert_eq!(d.keypoints[0], [0.5, 0.25]);
        assert!((d.keypoints[1][0] - 0.6).abs() < 1e-6 && (d.keypoints[1][1] - 0.35).abs() < 1e-6);
    }

    #[test]
    fn iou_of_known_boxes() {
        assert_eq!(iou(&[0.0, 0.0, 1.0, 1.0], &[0.0, 0.0, 1.0, 1.0]), 1.0);
        assert_eq!(iou(&[0.0, 0.0, 1.0, 1.0], &[2.0, 2.0, 1.0, 1.0]), 0.0);
        assert!((iou(&[0.0, 0.0, 2.0, 1.0], &[1.0, 0.0, 2.0, 1.0]) - 1.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn weighted_nms_merges_overlaps_and_keeps_separate_people() {
        let dets = vec![
            det(0.6, 0.1, 0.1, 0.2),
            det(0.9, 0.12, 0.1, 0.2),
            det(0.8, 0.6, 0.6, 0.2),
        ];
        let out = weighted_nms(dets, 0.3);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].score, 0.9);
        // Weighted xmin: (0.12*0.9 + 0.1*0.6) / 1.5 = 0.112
        assert!((out[0].bbox[0] - 0.112).abs() < 1e-6, "{:?}", out[0].bbox);
        assert!((out[0].keypoints[0][0] - 0.112).abs() < 1e-6);
        assert_eq!(out[1].score, 0.8);
        for (g, w) in out[1].bbox.iter().zip([0.6, 0.6, 0.2, 0.2]) {
            assert!((g - w).abs() < 1e-6, "{:?}", out[1].bbox);
        }
    }

    proptest! {
        #[test]
        fn nms_output_is_sorted_and_mutually_separated(
            boxes in proptest::collection::vec((0.01f32..1.0, 0.0f32..1.0, 0.0f32..1.0, 0.05f32..0.5), 0..40)
        ) {
            let dets: Vec<_> = boxes.iter().map(|&(s, x, y, w)| det(s, x, y, w)).collect();
            let n = dets.len();
            let out = weighted_nms(dets, 0.3);
            prop_assert!(out.len() <= n);
            prop_assert_eq!(out.is_empty(), n == 0);
            for w in out.windows(2) {
                prop_assert!(w[0].score >= w[1].score);
            }
            // Every output score is an input score.
            for d in &out {
                prop_assert!(boxes.iter().any(|b| b.0 == d.score));
            }
        }
    }
}

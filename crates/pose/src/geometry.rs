//! Rectangles and the affine maps between an image and a model's input
//! tensor, computed the way MediaPipe's `ImageToTensorCalculator` does
//! (OpenCV `boxPoints` of a rotated rect mapped onto the tensor's corners),
//! so that crops, and therefore landmarks, land on the same sub-pixel grid.

/// A rotated rectangle in image pixels (MediaPipe's `Rect`/`NormalizedRect`
/// expressed in pixels). `rotation` is in radians, clockwise on screen
/// (image y grows downwards), as in MediaPipe.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RotatedRect {
    /// Centre x, pixels.
    pub cx: f32,
    /// Centre y, pixels.
    pub cy: f32,
    /// Width, pixels.
    pub width: f32,
    /// Height, pixels.
    pub height: f32,
    /// Rotation, radians.
    pub rotation: f32,
}

impl RotatedRect {
    /// The whole image as an unrotated rect.
    pub fn full_image(w: u32, h: u32) -> Self {
        Self {
            cx: w as f32 / 2.0,
            cy: h as f32 / 2.0,
            width: w as f32,
            height: h as f32,
            rotation: 0.0,
        }
    }

    /// Grows the rect to the aspect ratio of a `tw`×`th` tensor (letterbox),
    /// as MediaPipe's `PadRoi` with `keep_aspect_ratio: true`. Returns the
    /// padded rect and the (horizontal, vertical) padding as fractions of the
    /// tensor size.
    pub fn letterbox(self, tw: u32, th: u32) -> (Self, [f32; 2]) {
        let tensor_ar = th as f32 / tw as f32;
        let roi_ar = self.height / self.width;
        let (mut out, mut pad) = (self, [0.0f32; 2]);
        if tensor_ar > roi_ar {
            out.height = self.width * tensor_ar;
            pad[1] = (1.0 - roi_ar / tensor_ar) / 2.0;
        } else {
            out.width = self.height / tensor_ar;
            pad[0] = (1.0 - tensor_ar / roi_ar) / 2.0;
        }
        (out, pad)
    }

    /// Corners as OpenCV's `cv::boxPoints` returns them (single precision):
    /// bottom-left, top-left, top-right, bottom-right of the unrotated rect.
    pub fn box_points(&self) -> [[f32; 2]; 4] {
        // MediaPipe hands OpenCV the angle in degrees; boxPoints converts back.
        let degrees = (self.rotation as f64 * 180.0 / std::f64::consts::PI) as f32;
        let angle = degrees as f64 * std::f64::consts::PI / 180.0;
        let b = angle.cos() as f32 * 0.5;
        let a = angle.sin() as f32 * 0.5;
        let (cx, cy, w, h) = (self.cx, self.cy, self.width, self.height);
        let p0 = [cx - a * h - b * w, cy + b * h - a * w];
        let p1 = [cx + a * h - b * w, cy - b * h - a * w];
        let p2 = [2.0 * cx - p0[0], 2.0 * cy - p0[1]];
        let p3 = [2.0 * cx - p1[0], 2.0 * cy - p1[1]];
        [p0, p1, p2, p3]
    }

    /// The map from tensor pixel coordinates (`tw`×`th`, pixel index as
    /// coordinate, as OpenCV's warp samples) to image coordinates: the rect's
    /// top-left corner goes to (0, 0) and its bottom-right to (tw, th).
    pub fn tensor_to_image(&self, tw: u32, th: u32) -> Affine {
        let [p0, p1, p2, _] = self.box_points();
        let (p0, p1, p2) = (p0.map(f64::from), p1.map(f64::from), p2.map(f64::from));
        let (tw, th) = (tw as f64, th as f64);
        Affine([
            (p2[0] - p1[0]) / tw,
            (p0[0] - p1[0]) / th,
            p1[0],
            (p2[1] - p1[1]) / tw,
            (p0[1] - p1[1]) / th,
            p1[1],
        ])
    }
}

/// A 2×3 affine map `[a, b, c, d, e, f]`: `x' = a·x + b·y + c`, `y' = d·x + e·y + f`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Affine(pub [f64; 6]);

impl Affine {
    /// Applies the map to a point.
    pub fn apply(&self, x: f64, y: f64) -> (f64, f64) {
        let m = &self.0;
        (m[0] * x + m[1] * y + m[2], m[3] * x + m[4] * y + m[5])
    }
}

/// Angle in radians wrapped into [-π, π), as MediaPipe's `NormalizeRadians`.
pub fn normalize_radians(angle: f32) -> f32 {
    use std::f32::consts::PI;
    angle - 2.0 * PI * ((angle + PI) / (2.0 * PI)).floor()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn letterbox_pads_the_short_side_to_a_square() {
        let (r, pad) = RotatedRect::full_image(600, 400).letterbox(224, 224);
        assert_eq!((r.width, r.height), (600.0, 600.0));
        assert_eq!((r.cx, r.cy), (300.0, 200.0));
        assert_eq!(pad[0], 0.0);
        assert!((pad[1] - (1.0 - 400.0 / 600.0) / 2.0).abs() < 1e-6);
        let (r, pad) = RotatedRect::full_image(300, 500).letterbox(224, 224);
        assert_eq!((r.width, r.height), (500.0, 500.0));
        assert!((pad[0] - 0.2).abs() < 1e-6 && pad[1] == 0.0);
    }

    #[test]
    fn letterbox_tensor_map_puts_the_image_in_the_middle() {
        // A 600×400 image in a 224×224 tensor: 600 px across 224 columns,
        // the image rows start at (600-400)/2 = 100 px above the image top.
        let (r, _) = RotatedRect::full_image(600, 400).letterbox(224, 224);
        let m = r.tensor_to_image(224, 224);
        let (x, y) = m.apply(0.0, 0.0);
        assert!(
            (x - 0.0).abs() < 1e-9 && (y + 100.0).abs() < 1e-9,
            "{x} {y}"
        );
        let (x, y) = m.apply(224.0, 224.0);
        assert!(
            (x - 600.0).abs() < 1e-9 && (y - 500.0).abs() < 1e-9,
            "{x} {y}"
        );
    }

    #[test]
    fn box_points_follow_opencv_order() {
        let r = RotatedRect {
            cx: 10.0,
            cy: 20.0,
            width: 4.0,
            height: 2.0,
            rotation: 0.0,
        };
        assert_eq!(
            r.box_points(),
            [[8.0, 21.0], [8.0, 19.0], [12.0, 19.0], [12.0, 21.0]]
        );
    }

    #[test]
    fn quarter_turn_maps_tensor_x_onto_image_y() {
        // Rotated by +90° (clockwise on screen) the tensor's x axis runs down the image.
        let r = RotatedRect {
            cx: 50.0,
            cy: 50.0,
            width: 20.0,
            height: 20.0,
            rotation: std::f32::consts::FRAC_PI_2,
        };
        let m = r.tensor_to_image(10, 10);
        let (x0, y0) = m.apply(0.0, 5.0);
        let (x1, y1) = m.apply(10.0, 5.0);
        assert!(
            (x1 - x0).abs() < 1e-4 && (y1 - y0 - 20.0).abs() < 1e-4,
            "{x0},{y0} -> {x1},{y1}"
        );
    }

    proptest! {
        #[test]
        fn tensor_map_preserves_centre_and_scale(
            cx in -100.0f32..1000.0, cy in -100.0f32..1000.0, side in 1.0f32..800.0,
            rot in -3.1f32..3.1, t in 16u32..300,
        ) {
            let r = RotatedRect { cx, cy, width: side, height: side, rotation: rot };
            let m = r.tensor_to_image(t, t);
            let (x, y) = m.apply(t as f64 / 2.0, t as f64 / 2.0);
            prop_assert!((x - cx as f64).abs() < 1e-2 && (y - cy as f64).abs() < 1e-2);
            // A unit step in the tensor is side/t pixels in any direction.
            let (x1, y1) = m.apply(t as f64 / 2.0 + 1.0, t as f64 / 2.0);
            let step = ((x1 - x).powi(2) + (y1 - y).powi(2)).sqrt();
            prop_assert!((step - side as f64 / t as f64).abs() < 1e-3 * (1.0 + side as f64 / t as f64));
        }

        #[test]
        fn normalized_radians_stay_in_range(a in -100.0f32..100.0) {
            let n = normalize_radians(a);
            prop_assert!((-std::f32::consts::PI - 1e-5..std::f32::consts::PI + 1e-5).contains(&n));
            prop_assert!(((n - a) / (2.0 * std::f32::consts::PI)).fract().abs() < 1e-3
                || (1.0 - ((n - a) / (2.0 * std::f32::consts::PI)).fract().abs()) < 1e-3);
        }
    }
}

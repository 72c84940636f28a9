//! Bilinear resampling of an RGB image through an affine map, bit-exact with
//! OpenCV's 8-bit `warpAffine`/`warpPerspective` + `INTER_LINEAR`, which is
//! what MediaPipe uses to cut the model inputs out of a frame.
//!
//! OpenCV does not interpolate in floating point: each source coordinate is
//! rounded to 1/32 pixel (`INTER_BITS` = 5), the four weights are products of
//! those 5-bit fractions, and the weighted sum is rounded back to `u8`.
//! Interpolating in f32 instead moves BlazePose's landmarks by 1–6 px, so the
//! fixed-point arithmetic is reproduced here.

use crate::geometry::Affine;
use image::RgbImage;

/// Sub-pixel resolution of source coordinates: 2^5 = 32 steps per pixel.
const INTER_BITS: u32 = 5;
const INTER_TAB_SIZE: i32 = 1 << INTER_BITS;

/// What the resampler reads outside the source image (OpenCV border modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Border {
    /// Zeros (`BORDER_CONSTANT` with value 0): the detector's letterbox.
    Zero,
    /// The nearest edge pixel (`BORDER_REPLICATE`): the landmark crop.
    Replicate,
}

/// Fills `out` (`w`×`h`×3, row-major RGB) with `src` sampled at
/// `map(x, y)` for every destination pixel (x, y).
pub fn warp_bilinear(
    src: &RgbImage,
    map: &Affine,
    w: u32,
    h: u32,
    border: Border,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.resize((w as usize) * (h as usize) * 3, 0);
    let (sw, sh) = (src.width() as i32, src.height() as i32);
    let data = src.as_raw();
    let stride = sw as usize * 3;
    let m = &map.0;
    let scale = INTER_TAB_SIZE as f64;
    for y in 0..h {
        let row = &mut out[(y as usize) * (w as usize) * 3..][..(w as usize) * 3];
        let (bx, by) = (m[1] * y as f64 + m[2], m[4] * y as f64 + m[5]);
        for x in 0..w {
            // cvRound: round half to even, saturated to i32.
            let fx = ((m[0] * x as f64 + bx) * scale).round_ties_even();
            let fy = ((m[3] * x as f64 + by) * scale).round_ties_even();
            let ix = fx.clamp(i32::MIN as f64, i32::MAX as f64) as i32;
            let iy = fy.clamp(i32::MIN as f64, i32::MAX as f64) as i32;
            let (sx, sy) = (ix >> INTER_BITS, iy >> INTER_BITS);
            let (ax, ay) = (ix & (INTER_TAB_SIZE - 1), iy & (INTER_TAB_SIZE - 1));
            let wts = [
                (INTER_TAB_SIZE - ax) * (INTER_TAB_SIZE - ay),
                ax * (INTER_TAB_SIZE - ay),
                (INTER_TAB_SIZE - ax) * ay,
                ax * ay,
            ];
            let px = &mut row[(x as usize) * 3..][..3];
            if sx >= 0 && sy >= 0 && sx < sw - 1 && sy < sh - 1 {
                let o = sy as usize * stride + sx as usize * 3;
                for c in 0..3 {
                    let v = wts[0] * data[o + c] as i32
                        + wts[1] * data[o + 3 + c] as i32
                        + wts[2] * data[o + stride + c] as i32
                        + wts[3] * data[o + stride + 3 + c] as i32;
                    px[c] = round_sum(v);
                }
                continue;
            }
            if border == Border::Zero && (sx >= sw || sx + 1 < 0 || sy >= sh || sy + 1 < 0) {
                px.fill(0);
                continue;
            }
            let taps = [(sx, sy), (sx + 1, sy), (sx, sy + 1), (sx + 1, sy + 1)];
            for c in 0..3 {
                let mut v = 0;
                for (k, &(tx, ty)) in taps.iter().enumerate() {
                    let sample = match border {
                        Border::Replicate => {
                            let (cx, cy) = (tx.clamp(0, sw - 1), ty.clamp(0, sh - 1));
                            data[cy as usize * stride + cx as usize * 3 + c] as i32
                        }
                        Border::Zero if tx < 0 || ty < 0 || tx >= sw || ty >= sh => 0,
                        Border::Zero => data[ty as usize * stride + tx as usize * 3 + c] as i32,
                    };
                    v += wts[k] * sample;
                }
                px[c] = round_sum(v);
            }
        }
    }
}

/// OpenCV scales the weights to 2^15 (each product ×32) and rounds with
/// `(v + 2^14) >> 15`; with weights summing to 1024 that is `(v + 512) >> 10`.
#[inline]
fn round_sum(v: i32) -> u8 {
    // Weights are non-negative and sum to 1024, so the result is 0..=255.
    ((v + 512) >> 10) as u8
}

/// Converts interleaved `u8` RGB to `f32` as `v * scale + offset` into `out`
/// (MediaPipe's output_tensor_float_range).
pub fn to_tensor(rgb: &[u8], scale: f32, offset: f32, out: &mut Vec<f32>) {
    out.clear();
    out.extend(rgb.iter().map(|&v| v as f32 * scale + offset));
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;
    use proptest::prelude::*;

    fn translate(dx: f64, dy: f64) -> Affine {
        Affine([1.0, 0.0, dx, 0.0, 1.0, dy])
    }

    #[test]
    fn identity_map_copies_pixels() {
        let img = RgbImage::from_fn(7, 5, |x, y| Rgb([x as u8 * 10, y as u8 * 20, 3]));
        let mut out = Vec::new();
        warp_bilinear(&img, &translate(0.0, 0.0), 7, 5, Border::Zero, &mut out);
        assert_eq!(out, img.as_raw().clone());
    }

    #[test]
    fn half_pixel_shift_rounds_like_opencv() {
        // Between 0 and 255 at x+0.5: (16*0 + 16*255)*32 / 32768 = 127.5 -> 128 (round half up).
        let img = RgbImage::from_fn(2, 2, |x, _| {
            if x == 0 {
                Rgb([0, 0, 0])
            } else {
                Rgb([255, 255, 255])
            }
        });
        let mut out = Vec::new();
        warp_bilinear(
            &img,
            &translate(0.5, 0.0),
            1,
            1,
            Border::Replicate,
            &mut out,
        );
        assert_eq!(out, vec![128, 128, 128]);
        // 1/3 of a pixel is quantised to 11/32: 255*11/32 = 87.66 -> 88.
        warp_bilinear(
            &img,
            &translate(1.0 / 3.0, 0.0),
            1,
            1,
            Border::Replicate,
            &mut out,
        );
        assert_eq!(out, vec![88, 88, 88]);
    }

    #[test]
    fn zero_border_blends_with_black_and_replicate_with_the_edge() {
        let img = RgbImage::from_pixel(3, 3, Rgb([200, 100, 50]));
        let mut out = Vec::new();
        // Half a pixel left of the image: half black.
        warp_bilinear(&img, &translate(-0.5, 0.0), 1, 1, Border::Zero, &mut out);
        assert_eq!(out, vec![100, 50, 25]);
        warp_bilinear(
            &img,
            &translate(-0.5, 0.0),
            1,
            1,
            Border::Replicate,
            &mut out,
        );
        assert_eq!(out, vec![200, 100, 50]);
        // Far outside.
        warp_bilinear(&img, &translate(-10.0, -10.0), 1, 1, Border::Zero, &mut out);
        assert_eq!(out, vec![0, 0, 0]);
        warp_bilinear(
            &img,
            &translate(-10.0, -10.0),
            1,
            1,
            Border::Replicate,
            &mut out,
        );
        assert_eq!(out, vec![200, 100, 50]);
    }

    #[test]
    fn tensor_ranges() {
        let mut out = Vec::new();
        to_tensor(&[0, 255, 51], 2.0 / 255.0, -1.0, &mut out);
        assert_eq!(out[0], -1.0);
        assert!((out[1] - 1.0).abs() < 1e-6);
        assert!((out[2] + 0.6).abs() < 1e-6);
    }

    proptest! {
        #[test]
        fn output_stays_within_the_neighbourhood(
            px in proptest::collection::vec(any::<u8>(), 4 * 4 * 3),
            dx in -1.0f64..3.0, dy in -1.0f64..3.0,
        ) {
            let img = RgbImage::from_raw(4, 4, px.clone()).unwrap();
            let mut out = Vec::new();
            warp_bilinear(&img, &translate(dx, dy), 1, 1, Border::Replicate, &mut out);
            let (lo, hi) = px.iter().fold((255u8, 0u8), |(l, h), &v| (l.min(v), h.max(v)));
            for &v in &out {
                prop_assert!(v >= lo && v <= hi);
            }
        }

        #[test]
        fn uniform_images_stay_uniform(v in any::<u8>(), a in -2.0f64..2.0, b in -2.0f64..2.0, c in 0.0f64..5.0) {
            let img = RgbImage::from_pixel(6, 6, Rgb([v, v, v]));
            let mut out = Vec::new();
            warp_bilinear(&img, &Affine([0.5, a * 0.1, c, b * 0.1, 0.5, c]), 4, 4, Border::Replicate, &mut out);
            prop_assert!(out.iter().all(|&o| o == v));
        }
    }
}

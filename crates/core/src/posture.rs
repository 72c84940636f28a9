//! Posture geometry: pose landmarks as plain data, and (pure) the neck and
//! torso inclination angles and the Good/Bad verdict computed from them.

/// One pose landmark, in pixels of the analysed (EXIF-oriented) image.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Landmark {
    /// Horizontal position in pixels.
    pub x: f32,
    /// Vertical position in pixels (down is positive).
    pub y: f32,
    /// Depth relative to the hips, in roughly the same scale as `x` (MediaPipe convention).
    pub z: f32,
    /// Probability the landmark is visible (not occluded), 0–1.
    pub visibility: f32,
    /// Probability the landmark is inside the image, 0–1.
    pub presence: f32,
}

/// The 33 BlazePose landmarks of one person.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pose {
    /// Indexed by the constants in [`landmark`]; always 33 entries.
    pub landmarks: Vec<Landmark>,
    /// Detector confidence of the person, 0–1.
    pub score: f32,
}

/// BlazePose landmark indices (same numbering as MediaPipe).
pub mod landmark {
    /// Nose.
    pub const NOSE: usize = 0;
    /// Left ear.
    pub const LEFT_EAR: usize = 7;
    /// Right ear.
    pub const RIGHT_EAR: usize = 8;
    /// Left shoulder.
    pub const LEFT_SHOULDER: usize = 11;
    /// Right shoulder.
    pub const RIGHT_SHOULDER: usize = 12;
    /// Left hip.
    pub const LEFT_HIP: usize = 23;
    /// Right hip.
    pub const RIGHT_HIP: usize = 24;
    /// Number of landmarks.
    pub const COUNT: usize = 33;
}

/// Skeleton edges to draw (MediaPipe's POSE_CONNECTIONS).
pub const POSE_CONNECTIONS: &[(usize, usize)] = &[
    (0, 1),
    (1, 2),
    (2, 3),
    (3, 7),
    (0, 4),
    (4, 5),
    (5, 6),
    (6, 8),
    (9, 10),
    (11, 12),
    (11, 13),
    (13, 15),
    (15, 17),
    (15, 19),
    (15, 21),
    (17, 19),
    (12, 14),
    (14, 16),
    (16, 18),
    (16, 20),
    (16, 22),
    (18, 20),
    (11, 23),
    (12, 24),
    (23, 24),
    (23, 25),
    (24, 26),
    (25, 27),
    (26, 28),
    (27, 29),
    (28, 30),
    (29, 31),
    (30, 32),
    (27, 31),
    (28, 32),
];

/// Which side of the body faces the camera. Posture is measured on that side
/// because its ear, shoulder and hip are the ones the model actually sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The person's left side (MediaPipe's LEFT_* landmarks).
    Left,
    /// The person's right side (MediaPipe's RIGHT_* landmarks).
    Right,
}

impl Side {
    /// Landmark indices of this side's (ear, shoulder, hip).
    pub fn indices(self) -> (usize, usize, usize) {
        match self {
            Side::Left => (
                landmark::LEFT_EAR,
                landmark::LEFT_SHOULDER,
                landmark::LEFT_HIP,
            ),
            Side::Right => (
                landmark::RIGHT_EAR,
                landmark::RIGHT_SHOULDER,
                landmark::RIGHT_HIP,
            ),
        }
    }

    /// Lower-case name, as written to logs and CSVs.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Left => "left",
            Side::Right => "right",
        }
    }
}

/// Thresholds of the Good/Bad verdict, in degrees. The defaults (40° neck,
/// 10° torso) come from a widely copied MediaPipe posture tutorial; they are
/// conventions, not a standard, hence configurable.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    /// Neck inclination at or above this is Bad.
    pub neck_deg: f32,
    /// Torso inclination at or above this is Bad.
    pub torso_deg: f32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            neck_deg: 40.0,
            torso_deg: 10.0,
        }
    }
}

/// The posture verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Both inclinations are under their thresholds.
    Good,
    /// At least one inclination reaches its threshold.
    Bad,
}

impl Verdict {
    /// The word stored in `posture_status` and shown on the image.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Good => "Good",
            Verdict::Bad => "Bad",
        }
    }
}

/// The measured geometry of one frame: which side, the three points used and
/// both angles. Kept together so the annotation draws exactly what was judged.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measurement {
    /// The side facing the camera.
    pub side: Side,
    /// Ear of that side.
    pub ear: Landmark,
    /// Shoulder of that side.
    pub shoulder: Landmark,
    /// Hip of that side.
    pub hip: Landmark,
    /// Ear–shoulder line vs vertical, degrees in `[0, 180]`.
    pub neck_deg: f32,
    /// Shoulder–hip line vs vertical, degrees in `[0, 180]`.
    pub torso_deg: f32,
}

/// What one frame says about posture.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Assessment {
    /// The model found nobody: not an error, `landmarks_detected = false`.
    NoPerson,
    /// A person was found but the geometry cannot be measured (the ear,
    /// shoulder and hip coincide or are not finite). No verdict is invented.
    Unmeasurable,
    /// Angles measured and judged.
    Measured {
        /// The geometry.
        measurement: Measurement,
        /// Good or Bad against the thresholds.
        verdict: Verdict,
    },
}

impl Assessment {
    /// Whether a person's landmarks were found.
    pub fn landmarks_detected(&self) -> bool {
        !matches!(self, Assessment::NoPerson)
    }

    /// The text stored in `posture_status`.
    pub fn status(&self) -> &'static str {
        match self {
            Assessment::NoPerson => "No person detected",
            Assessment::Unmeasurable => "Unmeasurable",
            Assessment::Measured { verdict, .. } => verdict.as_str(),
        }
    }

    /// The measurement, when there is one.
    pub fn measurement(&self) -> Option<&Measurement> {
        match self {
            Assessment::Measured { measurement, .. } => Some(measurement),
            _ => None,
        }
    }
}

/// Segments shorter than this (pixels) have no direction.
const MIN_SEGMENT_PX: f32 = 1e-3;

/// Inclination of the line from `lower` to `upper` against the upward
/// vertical, in degrees: 0 when `upper` is straight above `lower`, 90 when
/// level, 180 when straight below. Image coordinates (y grows downwards).
/// `None` when the points coincide or are not finite.
pub fn inclination_deg(lower: (f32, f32), upper: (f32, f32)) -> Option<f32> {
    let dx = upper.0 - lower.0;
    let dy = upper.1 - lower.1;
    if !dx.is_finite() || !dy.is_finite() || dx.hypot(dy) < MIN_SEGMENT_PX {
        return None;
    }
    // Angle between (dx, dy) and the upward unit vector (0, -1).
    Some(dx.abs().atan2(-dy).to_degrees())
}

/// The side whose ear, shoulder and hip are more visible (summed visibility);
/// ties go to the left. `None` when the pose lacks those landmarks.
pub fn facing_side(pose: &Pose) -> Option<Side> {
    let score = |side: Side| -> Option<f32> {
        let (e, s, h) = side.indices();
        let lm = &pose.landmarks;
        Some(lm.get(e)?.visibility + lm.get(s)?.visibility + lm.get(h)?.visibility)
    };
    let (left, right) = (score(Side::Left)?, score(Side::Right)?);
    // NaN visibilities compare false: fall back to the left side.
    Some(if right > left {
        Side::Right
    } else {
        Side::Left
    })
}

/// Judges one frame: `None` (no person) or a pose, against `thresholds`.
pub fn assess(pose: Option<&Pose>, thresholds: &Thresholds) -> Assessment {
    let Some(pose) = pose else {
        return Assessment::NoPerson;
    };
    let Some(side) = facing_side(pose) else {
        return Assessment::Unmeasurable;
    };
    let (e, s, h) = side.indices();
    let (ear, shoulder, hip) = (pose.landmarks[e], pose.landmarks[s], pose.landmarks[h]);
    let neck = inclination_deg((shoulder.x, shoulder.y), (ear.x, ear.y));
    let torso = inclination_deg((hip.x, hip.y), (shoulder.x, shoulder.y));
    let (Some(neck_deg), Some(torso_deg)) = (neck, torso) else {
        return Assessment::Unmeasurable;
    };
    let verdict = if neck_deg < thresholds.neck_deg && torso_deg < thresholds.torso_deg {
        Verdict::Good
    } else {
        Verdict::Bad
    };
    Assessment::Measured {
        measurement: Measurement {
            side,
            ear,
            shoulder,
            hip,
            neck_deg,
            torso_deg,
        },
        verdict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lm(x: f32, y: f32, visibility: f32) -> Landmark {
        Landmark {
            x,
            y,
            z: 0.0,
            visibility,
            presence: 1.0,
        }
    }

    /// A pose with only the given side's ear/shoulder/hip placed (visibility
    /// 0.9) and the other side at the same places with `other_vis`.
    fn side_pose(
        side: Side,
        ear: (f32, f32),
        shoulder: (f32, f32),
        hip: (f32, f32),
        other_vis: f32,
    ) -> Pose {
        let mut landmarks = vec![lm(0.0, 0.0, 0.0); landmark::COUNT];
        let (e, s, h) = side.indices();
        landmarks[e] = lm(ear.0, ear.1, 0.9);
        landmarks[s] = lm(shoulder.0, shoulder.1, 0.9);
        landmarks[h] = lm(hip.0, hip.1, 0.9);
        let other = match side {
            Side::Left => Side::Right,
            Side::Right => Side::Left,
        };
        let (oe, os, oh) = other.indices();
        landmarks[oe] = lm(ear.0 + 50.0, ear.1 + 80.0, other_vis);
        landmarks[os] = lm(shoulder.0 + 50.0, shoulder.1, other_vis);
        landmarks[oh] = lm(hip.0 - 70.0, hip.1, other_vis);
        Pose {
            landmarks,
            score: 0.99,
        }
    }

    #[test]
    fn vertical_is_zero_horizontal_is_ninety_below_is_180() {
        assert_eq!(inclination_deg((10.0, 100.0), (10.0, 20.0)), Some(0.0));
        let h = inclination_deg((10.0, 100.0), (90.0, 100.0)).unwrap();
        assert!((h - 90.0).abs() < 1e-4, "{h}");
        let h = inclination_deg((10.0, 100.0), (-70.0, 100.0)).unwrap();
        assert!((h - 90.0).abs() < 1e-4, "{h}");
        assert_eq!(inclination_deg((10.0, 100.0), (10.0, 150.0)), Some(180.0));
        let d = inclination_deg((0.0, 0.0), (10.0, -10.0)).unwrap();
        assert!((d - 45.0).abs() < 1e-4, "{d}");
    }

    #[test]
    fn degenerate_segments_have_no_angle() {
        assert_eq!(inclination_deg((5.0, 5.0), (5.0, 5.0)), None);
        assert_eq!(inclination_deg((f32::NAN, 5.0), (5.0, 1.0)), None);
        assert_eq!(inclination_deg((5.0, 5.0), (f32::INFINITY, 1.0)), None);
    }

    #[test]
    fn upright_side_view_is_good_and_slouch_is_bad() {
        let th = Thresholds::default();
        let upright = side_pose(
            Side::Left,
            (102.0, 50.0),
            (100.0, 120.0),
            (101.0, 300.0),
            0.1,
        );
        match assess(Some(&upright), &th) {
            Assessment::Measured {
                measurement,
                verdict,
            } => {
                assert_eq!(measurement.side, Side::Left);
                assert!(measurement.neck_deg < 5.0);
                assert!(measurement.torso_deg < 1.0);
                assert_eq!(verdict, Verdict::Good);
            }
            other => panic!("{other:?}"),
        }
        // Head 60 px forward of the shoulder, 60 px up: 45° neck.
        let forward_head = side_pose(
            Side::Left,
            (160.0, 60.0),
            (100.0, 120.0),
            (100.0, 300.0),
            0.1,
        );
        let a = assess(Some(&forward_head), &th);
        assert_eq!(a.status(), "Bad");
        assert!((a.measurement().unwrap().neck_deg - 45.0).abs() < 1e-3);
        // Leaning torso: shoulder 40 px ahead over 180 px (≈12.5°).
        let lean = side_pose(
            Side::Left,
            (142.0, 50.0),
            (140.0, 120.0),
            (100.0, 300.0),
            0.1,
        );
        assert_eq!(assess(Some(&lean), &th).status(), "Bad");
        // The same lean passes with a looser torso threshold.
        let loose = Thresholds {
            neck_deg: 40.0,
            torso_deg: 15.0,
        };
        assert_eq!(assess(Some(&lean), &loose).status(), "Good");
    }

    #[test]
    fn the_more_visible_side_is_measured() {
        let th = Thresholds::default();
        let right = side_pose(
            Side::Right,
            (100.0, 50.0),
            (100.0, 120.0),
            (100.0, 300.0),
            0.2,
        );
        let m = *assess(Some(&right), &th).measurement().unwrap();
        assert_eq!(m.side, Side::Right);
        assert_eq!(m.neck_deg, 0.0);
        // Make the left side more visible: its (displaced) points are used.
        let left_more = side_pose(
            Side::Right,
            (100.0, 50.0),
            (100.0, 120.0),
            (100.0, 300.0),
            0.95,
        );
        let m = *assess(Some(&left_more), &th).measurement().unwrap();
        assert_eq!(m.side, Side::Left);
        assert!(m.neck_deg > 30.0);
    }

    #[test]
    fn no_person_and_degenerate_poses() {
        let th = Thresholds::default();
        let none = assess(None, &th);
        assert_eq!(none, Assessment::NoPerson);
        assert!(!none.landmarks_detected());
        assert_eq!(none.status(), "No person detected");
        let collapsed = side_pose(
            Side::Left,
            (100.0, 100.0),
            (100.0, 100.0),
            (100.0, 100.0),
            0.1,
        );
        let a = assess(Some(&collapsed), &th);
        assert_eq!(a, Assessment::Unmeasurable);
        assert!(a.landmarks_detected());
        let short = Pose {
            landmarks: vec![lm(1.0, 1.0, 1.0); 5],
            score: 0.5,
        };
        assert_eq!(assess(Some(&short), &th), Assessment::Unmeasurable);
    }

    proptest! {
        #[test]
        fn inclination_is_bounded_mirror_symmetric_and_scale_free(
            x0 in -1e3f32..1e3, y0 in -1e3f32..1e3,
            dx in -1e3f32..1e3, dy in -1e3f32..1e3,
            k in 0.1f32..10.0,
        ) {
            prop_assume!(dx.hypot(dy) > 1.0);
            let a = inclination_deg((x0, y0), (x0 + dx, y0 + dy)).unwrap();
            prop_assert!((0.0..=180.0).contains(&a));
            let mirrored = inclination_deg((-x0, y0), (-x0 - dx, y0 + dy)).unwrap();
            prop_assert!((a - mirrored).abs() < 1e-3);
            let scaled = inclination_deg((0.0, 0.0), (k * dx, k * dy)).unwrap();
            prop_assert!((a - scaled).abs() < 1e-2);
        }

        #[test]
        fn verdict_is_good_exactly_when_both_under_thresholds(
            neck_off in -300f32..300.0, lean in -200f32..200.0,
            neck_th in 1f32..90.0, torso_th in 1f32..45.0,
        ) {
            let pose = side_pose(Side::Left, (100.0 + lean + neck_off, 50.0), (100.0 + lean, 120.0), (100.0, 300.0), 0.0);
            let th = Thresholds { neck_deg: neck_th, torso_deg: torso_th };
            let a = assess(Some(&pose), &th);
            let m = a.measurement().unwrap();
            let good = m.neck_deg < neck_th && m.torso_deg < torso_th;
            prop_assert_eq!(a.status() == "Good", good);
        }
    }
}

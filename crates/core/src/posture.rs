//! Posture geometry: pose landmarks as plain data, and (pure) the neck and
//! torso inclination angles and the Good/Bad verdict computed from them.

/// One pose landmark, in pixels of the analysed (EXIF-oriented) image.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Landmark {
    pub x: f32,
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
    pub const NOSE: usize = 0;
    pub const LEFT_EAR: usize = 7;
    pub const RIGHT_EAR: usize = 8;
    pub const LEFT_SHOULDER: usize = 11;
    pub const RIGHT_SHOULDER: usize = 12;
    pub const LEFT_HIP: usize = 23;
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

//! Tracking mode, for camera streams: while the person stays where the
//! detector last found them, the next frames of the same stream skip the
//! detector and the landmark model looks at the region the detector gave.
//! Pure state and decisions; the estimator runs the models.
//!
//! ```text
//!  frame of stream s ─► track for s? ─no──► detector ─► ROI ─► landmarks ─► remember (ROI, anchor = ROI')
//!                         │yes
//!                         └► landmarks on the remembered ROI ─► person present and
//!                            ROI' within the drift bounds of anchor? ─yes─► done (no detector)
//!                                                                └no──► forget s, detector as above
//! ```
//!
//! ROI' is the region the landmark model's two auxiliary points (hip centre,
//! full-body point) describe, computed as the detector's keypoints give the
//! first ROI. Unlike MediaPipe's tracking mode, which crops the next frame
//! at ROI' itself, the crop stays the detector's: a still scene then gives
//! exactly the static answer (ROI' and the detector's ROI differ by up to
//! 8% of the side on the test photos, enough to move a frontal pose's
//! angles by degrees), and ROI' only measures how far the person drifted
//! ([`follows`]); past the bounds the detector runs again.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use crate::geometry::{RotatedRect, normalize_radians};

/// Environment variable choosing the mode (`--pose-mode`).
pub const MODE_ENV: &str = "POSE_MODE";
/// Streams (cameras) remembered at once. One analyzer serves a handful of
/// cameras; the bound keeps a stream of ever-new ids from growing the map.
pub const MAX_STREAMS: usize = 256;
/// Largest drift of the person's region (centre) since the detection, as a
/// fraction of its side, still answered from the detector's crop.
pub const MAX_CENTRE_SHIFT: f32 = 0.05;
/// Largest change of the region's side since the detection (ratio).
pub const MAX_SIZE_RATIO: f32 = 1.05;
/// Largest turn of the region since the detection, radians (about 3°).
pub const MAX_TURN: f32 = 0.05;

/// How consecutive images of one stream relate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Every image on its own: detector, then landmarks (MediaPipe's
    /// `static_image_mode=True`, what the earlier Python analyzer used).
    #[default]
    Static,
    /// Camera streams: skip the detector while the person stays where it
    /// last found them in the same stream.
    Tracking,
}

impl Mode {
    /// The name used on the command line and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Static => "static",
            Mode::Tracking => "tracking",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `--pose-mode` value that is neither static nor tracking.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown pose mode {0:?}: expected static or tracking")]
pub struct ParseModeError(pub String);

impl FromStr for Mode {
    type Err = ParseModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "static" => Ok(Mode::Static),
            "tracking" => Ok(Mode::Tracking),
            _ => Err(ParseModeError(s.to_string())),
        }
    }
}

/// What is remembered of a stream between frames.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Track {
    /// Where to look in the next frame: the detector's ROI (image pixels).
    pub roi: RotatedRect,
    /// The region the landmarks described on the detection's frame, which
    /// later frames' regions are compared with.
    pub anchor: RotatedRect,
    /// Score of the detection that started the track (the pose's score).
    pub score: f32,
}

/// The tracks of every stream, at most [`MAX_STREAMS`].
#[derive(Clone, Debug, Default)]
pub struct Tracks {
    by_stream: HashMap<String, Track>,
}

impl Tracks {
    /// The stream's track, if it has one.
    pub fn get(&self, stream: &str) -> Option<Track> {
        self.by_stream.get(stream).copied()
    }

    /// Remembers `track` for `stream`. A new stream arriving when
    /// [`MAX_STREAMS`] are remembered forgets them all first: each just runs
    /// its detector once more.
    pub fn set(&mut self, stream: &str, track: Track) {
        if let Some(t) = self.by_stream.get_mut(stream) {
            *t = track;
            return;
        }
        if self.by_stream.len() >= MAX_STREAMS {
            self.by_stream.clear();
        }
        self.by_stream.insert(stream.to_string(), track);
    }

    /// Forgets the stream's track (its next frame runs the detector).
    pub fn forget(&mut self, stream: &str) {
        self.by_stream.remove(stream);
    }

    /// Number of streams remembered.
    pub fn len(&self) -> usize {
        self.by_stream.len()
    }

    /// Whether no stream is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_stream.is_empty()
    }
}

/// Whether the person's region on a tracked frame (`now`) is still within
/// the drift bounds of their region on the detection's frame (`anchor`):
/// centre within [`MAX_CENTRE_SHIFT`] of the side, side within
/// [`MAX_SIZE_RATIO`], rotation within [`MAX_TURN`].
pub fn follows(anchor: &RotatedRect, now: &RotatedRect) -> bool {
    let side = anchor.width.max(anchor.height);
    let now_side = now.width.max(now.height);
    if !(side > 0.0 && now_side > 0.0) {
        return false;
    }
    let shift = (now.cx - anchor.cx).hypot(now.cy - anchor.cy);
    let ratio = (now_side / side).max(side / now_side);
    let turn = normalize_radians(now.rotation - anchor.rotation).abs();
    shift <= MAX_CENTRE_SHIFT * side && ratio <= MAX_SIZE_RATIO && turn <= MAX_TURN
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rect(cx: f32, cy: f32, side: f32) -> RotatedRect {
        RotatedRect {
            cx,
            cy,
            width: side,
            height: side,
            rotation: 0.0,
        }
    }

    fn track(x: f32) -> Track {
        Track {
            roi: rect(x, 0.0, 10.0),
            anchor: rect(x + 1.0, 0.0, 11.0),
            score: 0.9,
        }
    }

    #[test]
    fn mode_names() {
        assert_eq!("static".parse::<Mode>(), Ok(Mode::Static));
        assert_eq!(" Tracking".parse::<Mode>(), Ok(Mode::Tracking));
        assert!("video".parse::<Mode>().is_err());
        assert_eq!(Mode::default(), Mode::Static);
        assert_eq!(Mode::Tracking.to_string(), "tracking");
    }

    #[test]
    fn small_drift_follows_large_drift_does_not() {
        let anchor = rect(100.0, 100.0, 200.0);
        assert!(follows(&anchor, &anchor));
        assert!(follows(&anchor, &rect(106.0, 106.0, 205.0)));
        assert!(
            !follows(&anchor, &rect(112.0, 100.0, 200.0)),
            "moved 6% of the side"
        );
        assert!(
            !follows(&anchor, &rect(100.0, 100.0, 185.0)),
            "shrank by 1.08"
        );
        let mut turned = anchor;
        turned.rotation = 0.08;
        assert!(!follows(&anchor, &turned), "turned 4.6°");
        turned.rotation = 2.0 * std::f32::consts::PI + 0.01;
        assert!(follows(&anchor, &turned), "a full turn is no turn");
        assert!(!follows(&anchor, &rect(100.0, 100.0, 0.0)));
        assert!(!follows(&anchor, &rect(f32::NAN, 100.0, 200.0)));
    }

    #[test]
    fn tracks_are_per_stream_and_forgotten() {
        let mut t = Tracks::default();
        t.set("pi1", track(1.0));
        t.set("pi2", track(2.0));
        t.set("pi1", track(3.0));
        assert_eq!(t.get("pi1"), Some(track(3.0)));
        assert_eq!(t.get("pi2"), Some(track(2.0)));
        t.forget("pi2");
        assert_eq!((t.get("pi2"), t.len()), (None, 1));
    }

    proptest! {
        #[test]
        fn never_more_than_the_bound(ids in proptest::collection::vec(0u32..1000, 0..2000)) {
            let mut t = Tracks::default();
            for id in &ids {
                t.set(&id.to_string(), track(*id as f32));
                prop_assert!(t.len() <= MAX_STREAMS);
                // The stream just set is always remembered.
                prop_assert_eq!(t.get(&id.to_string()), Some(track(*id as f32)));
            }
        }

        #[test]
        fn follows_is_symmetric_in_size(cx in -500.0f32..500.0, s in 1.0f32..500.0, k in 0.5f32..2.0) {
            let a = rect(cx, 0.0, s);
            let b = rect(cx, 0.0, s * k);
            prop_assert_eq!(follows(&a, &b), follows(&b, &a));
        }
    }
}

//! Per-camera statistics kept in memory (pure): frame counts in 10-second
//! buckets over the last day, from which the overview's Good % over the
//! last hour and day and frames per minute are summed without touching the
//! database. Fed by a refresh (a day of rows per camera) and the live tail.

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::model::{Frame, Verdict};

/// Width of a statistics bucket, seconds.
pub const BUCKET_SECS: i64 = 10;
/// How far back statistics are kept (a day, plus a minute of slack).
pub const KEEP_SECS: i64 = 86_400 + 60;
/// Window of the frames-per-minute figure.
pub const RATE_WINDOW_SECS: i64 = 300;

/// Frame counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Every frame.
    pub frames: u32,
    /// Frames judged Good.
    pub good: u32,
    /// Frames judged Bad.
    pub bad: u32,
}

impl Counts {
    /// Adds one frame.
    pub fn add(&mut self, verdict: Verdict) {
        self.frames += 1;
        match verdict {
            Verdict::Good => self.good += 1,
            Verdict::Bad => self.bad += 1,
            Verdict::NoPerson | Verdict::Other => {}
        }
    }

    fn merge(&mut self, other: &Counts) {
        self.frames += other.frames;
        self.good += other.good;
        self.bad += other.bad;
    }

    /// Share of Good among the frames with a verdict (Good or Bad), in
    /// percent; `None` when no frame had one.
    pub fn good_percent(&self) -> Option<f64> {
        let judged = self.good + self.bad;
        (judged > 0).then(|| 100.0 * f64::from(self.good) / f64::from(judged))
    }

    /// Frames without a Good/Bad verdict (no person, unmeasurable).
    pub fn unjudged(&self) -> u32 {
        self.frames.saturating_sub(self.good + self.bad)
    }
}

/// One camera's recent history.
#[derive(Clone, Debug, Default)]
pub struct CameraStats {
    buckets: BTreeMap<i64, Counts>,
    latest: Option<Frame>,
}

impl CameraStats {
    /// Counts one frame received at `t`.
    pub fn count(&mut self, t: Timestamp, verdict: Verdict) {
        let key = t.as_second().div_euclid(BUCKET_SECS);
        self.buckets.entry(key).or_default().add(verdict);
    }

    /// Counts `frame` and keeps it if it is the newest seen.
    pub fn observe(&mut self, frame: Frame) {
        self.count(frame.received, frame.verdict());
        self.set_latest(frame);
    }

    /// Keeps `frame` as the newest if it is newer than the one kept.
    pub fn set_latest(&mut self, frame: Frame) {
        let newer = self
            .latest
            .as_ref()
            .is_none_or(|l| (frame.received, frame.id) >= (l.received, l.id));
        if newer {
            self.latest = Some(frame);
        }
    }

    /// The newest frame seen.
    pub fn latest(&self) -> Option<&Frame> {
        self.latest.as_ref()
    }

    /// Frames received in the `span_secs` up to `now` (bucket precision:
    /// the window starts at the bucket holding `now - span`).
    pub fn window(&self, now: Timestamp, span_secs: i64) -> Counts {
        let end = now.as_second().div_euclid(BUCKET_SECS);
        let start = (now.as_second() - span_secs).div_euclid(BUCKET_SECS);
        let mut total = Counts::default();
        for c in self.buckets.range(start..=end).map(|(_, c)| c) {
            total.merge(c);
        }
        total
    }

    /// Forgets buckets older than a day before `now`.
    pub fn prune(&mut self, now: Timestamp) {
        let oldest = (now.as_second() - KEEP_SECS).div_euclid(BUCKET_SECS);
        self.buckets = self.buckets.split_off(&oldest);
    }
}

/// What a camera's card shows.
#[derive(Clone, Debug, PartialEq)]
pub struct CameraSummary {
    /// Camera id.
    pub camera: String,
    /// Newest frame.
    pub latest: Option<Frame>,
    /// Frames in the last hour.
    pub hour: Counts,
    /// Frames in the last day.
    pub day: Counts,
    /// Frames per minute over the last [`RATE_WINDOW_SECS`].
    pub per_minute: f64,
    /// Seconds since the newest frame.
    pub age_secs: Option<i64>,
    /// Whether the camera has been silent for longer than allowed.
    pub silent: bool,
}

/// Summarises `stats` at `now`; a camera whose newest frame is older than
/// `silent_after_secs` (or that has none) is silent.
pub fn summarize(
    camera: &str,
    stats: &CameraStats,
    now: Timestamp,
    silent_after_secs: i64,
) -> CameraSummary {
    let latest = stats.latest().cloned();
    let age_secs = latest
        .as_ref()
        .map(|f| (now.as_second() - f.received.as_second()).max(0));
    let rate = stats.window(now, RATE_WINDOW_SECS);
    CameraSummary {
        camera: camera.to_string(),
        latest,
        hour: stats.window(now, 3600),
        day: stats.window(now, 86_400),
        per_minute: f64::from(rate.frames) * 60.0 / RATE_WINDOW_SECS as f64,
        age_secs,
        silent: age_secs.is_none_or(|a| a > silent_after_secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(id: i64, t: i64, status: &str) -> Frame {
        Frame {
            id,
            camera: "pi1".into(),
            filename: String::new(),
            received: Timestamp::from_second(t).unwrap(),
            neck: Some(10.0),
            torso: Some(2.0),
            status: status.into(),
            processed_by: "n".into(),
            frame_id: format!("f{id}"),
        }
    }

    #[test]
    fn windows_count_hour_day_and_rate() {
        let now = 1_800_000_000;
        let mut s = CameraStats::default();
        // Two hours ago: Bad. Last hour: 3 Good, 1 Bad, 1 nobody.
        s.observe(frame(1, now - 7200, "Bad"));
        for (i, st) in ["Good", "Good", "Bad", "No person detected", "Good"]
            .iter()
            .enumerate()
        {
            s.observe(frame(2 + i as i64, now - 100 + i as i64 * 20, st));
        }
        let sum = summarize("pi1", &s, Timestamp::from_second(now).unwrap(), 120);
        assert_eq!(
            sum.hour,
            Counts {
                frames: 5,
                good: 3,
                bad: 1
            }
        );
        assert_eq!(
            sum.day,
            Counts {
                frames: 6,
                good: 3,
                bad: 2
            }
        );
        assert_eq!(sum.hour.good_percent(), Some(75.0));
        assert_eq!(sum.day.unjudged(), 1);
        assert!((sum.per_minute - 1.0).abs() < 1e-9);
        assert_eq!(sum.latest.as_ref().map(|f| f.id), Some(6));
        assert_eq!(sum.age_secs, Some(20));
        assert!(!sum.silent);
        let later = summarize("pi1", &s, Timestamp::from_second(now + 600).unwrap(), 120);
        assert!(later.silent);
        assert_eq!(later.per_minute, 0.0);
    }

    #[test]
    fn prune_forgets_what_is_older_than_a_day_and_latest_stays_newest() {
        let now = 1_800_000_000;
        let mut s = CameraStats::default();
        s.observe(frame(2, now - 10, "Good"));
        // An older row arriving late (spool replay) does not replace the newest.
        s.observe(frame(3, now - 90_000, "Bad"));
        assert_eq!(s.latest().map(|f| f.id), Some(2));
        s.prune(Timestamp::from_second(now).unwrap());
        let all = s.window(Timestamp::from_second(now).unwrap(), 200_000);
        assert_eq!(
            all,
            Counts {
                frames: 1,
                good: 1,
                bad: 0
            }
        );
        assert_eq!(Counts::default().good_percent(), None);
        assert!(
            summarize(
                "x",
                &CameraStats::default(),
                Timestamp::from_second(now).unwrap(),
                60
            )
            .silent
        );
    }
}

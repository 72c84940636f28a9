//! Frames whose outputs failed on a transient error (disk full, too many
//! open files, an I/O error) wait here, unacknowledged, per camera, and are
//! retried with backoff while the other cameras' frames go on. A camera's
//! later frames queue behind its waiting one, so its rows stay in order.
//!
//! Bounded: at most `capacity` frames wait; when full, the MQTT loop stops
//! taking frames and the backlog stays at the broker (where it survives
//! restarts) rather than in memory.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use posture_core::backoff::Backoff;
use tokio::time::Instant;

use crate::pipeline::Frame;

/// Frames held back from one camera.
struct Held<T> {
    frames: VecDeque<(T, Frame)>,
    /// Consecutive failures of the first frame.
    failures: u32,
    /// When the first frame may be retried.
    due: Instant,
}

/// The waiting frames of every camera; `T` is what acknowledges a frame
/// (the MQTT publish).
pub struct Parking<T> {
    cameras: BTreeMap<String, Held<T>>,
    total: usize,
    capacity: usize,
    backoff: Backoff,
}

impl<T> Parking<T> {
    /// Room for `capacity` waiting frames; retries back off from 0.5 s to 30 s.
    pub fn new(capacity: usize) -> Self {
        Self {
            cameras: BTreeMap::new(),
            total: 0,
            capacity: capacity.max(1),
            backoff: Backoff {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(30),
                jitter: 0.0,
            },
        }
    }

    /// Whether `camera` has frames waiting (its new frames must queue behind).
    pub fn holds(&self, camera: &str) -> bool {
        self.cameras.contains_key(camera)
    }

    /// Whether no more frames may be taken in.
    pub fn is_full(&self) -> bool {
        self.total >= self.capacity
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// A frame that just failed: first in its camera's line, retried after
    /// a backoff that grows with each consecutive failure. Returns the delay.
    pub fn failed(&mut self, token: T, frame: Frame, now: Instant) -> Duration {
        let held = self
            .cameras
            .entry(frame.camera.clone())
            .or_insert_with(|| Held {
                frames: VecDeque::new(),
                failures: 0,
                due: now,
            });
        held.failures += 1;
        let delay = self.backoff.base_delay(held.failures);
        held.due = now + delay;
        held.frames.push_front((token, frame));
        self.total += 1;
        delay
    }

    /// A frame of a camera that has frames waiting: queued behind them.
    pub fn queue(&mut self, token: T, frame: Frame) {
        if let Some(held) = self.cameras.get_mut(&frame.camera) {
            held.frames.push_back((token, frame));
            self.total += 1;
        }
    }

    /// When the next retry is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.cameras
            .values()
            .filter(|h| !h.frames.is_empty())
            .map(|h| h.due)
            .min()
    }

    /// The first frame of a camera whose retry is due (its camera keeps its
    /// place until [`Parking::succeeded`] or [`Parking::failed`]).
    pub fn take_due(&mut self, now: Instant) -> Option<(T, Frame)> {
        let held = self
            .cameras
            .values_mut()
            .filter(|h| !h.frames.is_empty() && h.due <= now)
            .min_by_key(|h| h.due)?;
        let taken = held.frames.pop_front()?;
        self.total -= 1;
        Some(taken)
    }

    /// `camera`'s frame was recorded: its next frame (if any) is due now.
    pub fn succeeded(&mut self, camera: &str, now: Instant) {
        if let Some(held) = self.cameras.get_mut(camera) {
            if held.frames.is_empty() {
                self.cameras.remove(camera);
            } else {
                held.failures = 0;
                held.due = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(camera: &str) -> Frame {
        Frame {
            camera: camera.into(),
            source: camera.into(),
            name_hint: None,
            payload: Vec::new(),
            received: jiff::Timestamp::UNIX_EPOCH,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_camera_waits_in_order_while_others_go_on() {
        let mut p = Parking::new(3);
        let t0 = Instant::now();
        assert_eq!(p.failed(1, frame("a"), t0), Duration::from_millis(500));
        assert!(p.holds("a") && !p.holds("b"));
        p.queue(2, frame("a"));
        // Camera b is not held: the loop processes its frames directly.
        p.queue(9, frame("b"));
        assert_eq!(p.len(), 2);
        assert!(p.take_due(t0).is_none());
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(p.next_due(), Some(t1));
        let (tok, f) = p.take_due(t1).unwrap();
        assert_eq!((tok, f.camera.as_str()), (1, "a"));
        // Fails again: back first in line, twice the delay.
        assert_eq!(p.failed(tok, f, t1), Duration::from_secs(1));
        let t2 = t1 + Duration::from_secs(1);
        let (tok, _) = p.take_due(t2).unwrap();
        assert_eq!(tok, 1);
        p.succeeded("a", t2);
        // The queued frame is next, at once, then the camera is released.
        let (tok, _) = p.take_due(t2).unwrap();
        assert_eq!(tok, 2);
        p.succeeded("a", t2);
        assert!(p.is_empty() && !p.holds("a"));
    }

    #[test]
    fn bounded() {
        let mut p = Parking::new(2);
        let now = Instant::now();
        p.failed((), frame("a"), now);
        assert!(!p.is_full());
        p.failed((), frame("b"), now);
        assert!(p.is_full());
    }
}

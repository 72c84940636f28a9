//! The live side: one task keeps per-camera statistics current and tells
//! every open page what changed.
//!
//! A *refresh* (at start, then every `refresh_interval`) rebuilds the
//! statistics from the database: the camera list, a day of rows per camera
//! (indexed range) and each camera's newest frame, all up to a row id read
//! first. Between refreshes a *tail* reads rows with a higher id (primary
//! key range, bounded) every `poll_interval`, counts them and broadcasts a
//! [`LiveEvent::Frame`] per camera that got new frames. The tail re-reads a
//! short stretch below its cursor ([`LOOKBACK`] ids), skipping ids it has
//! counted: a PostgreSQL row whose transaction commits after a higher id
//! became visible is still counted. A failing database is reported on the
//! pages and retried; nothing stops the loop.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::db::{DbError, ReadOnlyDb};
use crate::model::{Frame, Verdict};
use crate::stats::{CameraStats, CameraSummary, KEEP_SECS, summarize};

/// Ids below the tail's cursor that are read again (late commits).
pub const LOOKBACK: i64 = 256;
/// Most rows one tail step reads; a full batch is followed by another at once.
pub const TAIL_BATCH: i64 = 2000;
/// Events buffered per subscriber. A page that falls further behind gets a
/// `resync` and re-reads its fragment, so nothing is lost by the bound.
pub const EVENT_BUFFER: usize = 256;

/// Something a page may want to redraw for.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveEvent {
    /// New frames of one camera (the newest one described).
    Frame {
        /// Camera id.
        camera: String,
        /// The newest new frame's id.
        frame_id: String,
        /// Its received time (RFC 3339).
        received: String,
        /// Its verdict column.
        status: String,
        /// Its neck angle.
        neck: Option<f64>,
        /// Its torso angle.
        torso: Option<f64>,
        /// How many new frames this event stands for.
        new_frames: u32,
    },
    /// The farm changed: placements, pending pods, events or GPU readings.
    Farm,
    /// Statistics were rebuilt: redraw everything.
    Resync,
}

impl LiveEvent {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            LiveEvent::Frame { .. } => "frame",
            LiveEvent::Farm => "farm",
            LiveEvent::Resync => "resync",
        }
    }
}

/// How the database answered lately.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DbHealth {
    /// The last error, while it lasts.
    pub error: Option<String>,
    /// When the current outage started.
    pub failing_since: Option<Timestamp>,
    /// When the database last answered.
    pub last_ok: Option<Timestamp>,
}

#[derive(Default)]
struct State {
    cameras: BTreeMap<String, CameraStats>,
    cursor: i64,
    seen: BTreeSet<i64>,
    loaded: bool,
    health: DbHealth,
}

struct Inner {
    db: ReadOnlyDb,
    state: RwLock<State>,
    events: broadcast::Sender<LiveEvent>,
}

/// Shared handle on the live statistics (cheap to clone).
#[derive(Clone)]
pub struct Live {
    inner: Arc<Inner>,
}

/// Timing of the live loop.
#[derive(Clone, Copy, Debug)]
pub struct LiveConfig {
    /// How often new rows are looked for.
    pub poll_interval: Duration,
    /// How often statistics are rebuilt from the database.
    pub refresh_interval: Duration,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            refresh_interval: Duration::from_secs(600),
        }
    }
}

impl Live {
    /// Live statistics over `db` (empty until the first refresh).
    pub fn new(db: ReadOnlyDb) -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Self {
            inner: Arc::new(Inner {
                db,
                state: RwLock::new(State::default()),
                events,
            }),
        }
    }

    /// The database.
    pub fn db(&self) -> &ReadOnlyDb {
        &self.inner.db
    }

    /// Receives every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.inner.events.subscribe()
    }

    /// Sends `event` to every open page (none listening is fine).
    pub fn publish(&self, event: LiveEvent) {
        let _ = self.inner.events.send(event);
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        // A panic while holding the lock leaves plain data: keep using it.
        let guard = self.inner.state.read().unwrap_or_else(|p| p.into_inner());
        f(&guard)
    }

    fn write<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut guard = self.inner.state.write().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Whether statistics have been built once.
    pub fn loaded(&self) -> bool {
        self.read(|s| s.loaded)
    }

    /// How the database answered lately.
    pub fn health(&self) -> DbHealth {
        self.read(|s| s.health.clone())
    }

    /// One summary per camera, sorted by camera id.
    pub fn summaries(&self, now: Timestamp, silent_after_secs: i64) -> Vec<CameraSummary> {
        self.read(|s| {
            s.cameras
                .iter()
                .map(|(cam, st)| summarize(cam, st, now, silent_after_secs))
                .collect()
        })
    }

    /// The summary of one camera, if known.
    pub fn summary(
        &self,
        camera: &str,
        now: Timestamp,
        silent_after_secs: i64,
    ) -> Option<CameraSummary> {
        self.read(|s| {
            s.cameras
                .get(camera)
                .map(|st| summarize(camera, st, now, silent_after_secs))
        })
    }

    /// Rebuilds the statistics from the database.
    pub async fn refresh(&self) -> Result<(), DbError> {
        let db = &self.inner.db;
        let cursor = db.max_id().await?;
        let cameras = db.cameras().await?;
        let now = Timestamp::now();
        let since = Timestamp::from_second(now.as_second() - KEEP_SECS).unwrap_or(now);
        let mut built = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for cam in cameras {
            let mut stats = CameraStats::default();
            for (id, t, status) in db.stats_rows(&cam, since, cursor).await? {
                stats.count(t, Verdict::parse(&status));
                if id > cursor - LOOKBACK {
                    seen.insert(id);
                }
            }
            if let Some(latest) = db.latest_frame(&cam).await? {
                if latest.id > cursor - LOOKBACK && latest.id <= cursor {
                    seen.insert(latest.id);
                }
                stats.set_latest(latest);
            }
            built.insert(cam, stats);
        }
        self.write(|s| {
            s.cameras = built;
            s.cursor = cursor;
            s.seen = seen;
            s.loaded = true;
        });
        Ok(())
    }

    /// Reads and counts new rows; `true` when a full batch came (more may wait).
    pub async fn tail(&self) -> Result<bool, DbError> {
        let cursor = self.read(|s| s.cursor);
        let rows = self
            .inner
            .db
            .frames_after((cursor - LOOKBACK).max(0), TAIL_BATCH)
            .await?;
        let full = rows.len() as i64 >= TAIL_BATCH;
        let news = self.write(|s| absorb(s, rows));
        for (_, (frame, n)) in news {
            self.publish(LiveEvent::Frame {
                camera: frame.camera.clone(),
                frame_id: frame.frame_id.clone(),
                received: frame.received.to_string(),
                status: frame.status.clone(),
                neck: frame.neck,
                torso: frame.torso,
                new_frames: n,
            });
        }
        Ok(full)
    }

    fn record(&self, result: Result<(), &DbError>) {
        let now = Timestamp::now();
        self.write(|s| match result {
            Ok(()) => {
                if s.health.error.is_some() {
                    tracing::info!(
                        database = self.inner.db.describe(),
                        "database answers again"
                    );
                }
                s.health = DbHealth {
                    error: None,
                    failing_since: None,
                    last_ok: Some(now),
                };
            }
            Err(e) => {
                let message = posture_analyzer::error_chain(e);
                if s.health.error.is_none() {
                    tracing::warn!(error = %message, "database unreachable; retrying");
                }
                s.health.failing_since.get_or_insert(now);
                s.health.error = Some(message);
            }
        });
    }

    /// Keeps the statistics current until `shutdown` resolves.
    pub async fn run(self, config: LiveConfig, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut next_refresh = tokio::time::Instant::now();
        loop {
            let mut again = false;
            if tokio::time::Instant::now() >= next_refresh {
                match self.refresh().await {
                    Ok(()) => {
                        self.record(Ok(()));
                        next_refresh = tokio::time::Instant::now() + config.refresh_interval;
                        self.publish(LiveEvent::Resync);
                    }
                    Err(e) => self.record(Err(&e)),
                }
            } else {
                match self.tail().await {
                    Ok(full) => {
                        self.record(Ok(()));
                        again = full;
                    }
                    Err(e) => self.record(Err(&e)),
                }
            }
            if again {
                continue;
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(config.poll_interval) => {}
            }
        }
    }
}

/// Counts `rows` not counted yet into `s`; returns per camera the newest
/// new frame and how many came.
fn absorb(s: &mut State, rows: Vec<Frame>) -> BTreeMap<String, (Frame, u32)> {
    let mut news: BTreeMap<String, (Frame, u32)> = BTreeMap::new();
    for f in rows {
        if !s.seen.insert(f.id) {
            continue;
        }
        s.cursor = s.cursor.max(f.id);
        s.cameras
            .entry(f.camera.clone())
            .or_default()
            .observe(f.clone());
        let e = news
            .entry(f.camera.clone())
            .or_insert_with(|| (f.clone(), 0));
        e.1 += 1;
        if (f.received, f.id) >= (e.0.received, e.0.id) {
            e.0 = f;
        }
    }
    let floor = s.cursor - LOOKBACK;
    s.seen = s.seen.split_off(&floor);
    news
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(id: i64, cam: &str, t: i64) -> Frame {
        Frame {
            id,
            camera: cam.into(),
            filename: String::new(),
            received: Timestamp::from_second(t).unwrap(),
            neck: None,
            torso: None,
            status: "Good".into(),
            processed_by: String::new(),
            frame_id: format!("f{id}"),
        }
    }

    #[test]
    fn absorb_counts_each_id_once_and_takes_late_commits() {
        let mut s = State::default();
        let t = 1_800_000_000;
        let news = absorb(
            &mut s,
            vec![frame(1, "a", t), frame(3, "a", t + 1), frame(4, "b", t)],
        );
        assert_eq!(news.len(), 2);
        assert_eq!(news["a"].1, 2);
        assert_eq!(news["a"].0.id, 3);
        assert_eq!(s.cursor, 4);
        // The next read starts below the cursor: 1, 3, 4 again and id 2,
        // whose transaction committed late.
        let news = absorb(
            &mut s,
            vec![
                frame(1, "a", t),
                frame(2, "a", t + 2),
                frame(3, "a", t + 1),
                frame(4, "b", t),
                frame(5, "b", t + 3),
            ],
        );
        assert_eq!(news["a"].1, 1);
        assert_eq!(news["a"].0.id, 2);
        assert_eq!(news["b"].1, 1);
        let now = Timestamp::from_second(t + 10).unwrap();
        let a = s.cameras["a"].window(now, 3600);
        assert_eq!(a.frames, 3);
        assert_eq!(s.cameras["a"].latest().map(|f| f.id), Some(2));
    }
}

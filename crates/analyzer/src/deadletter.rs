//! The dead-letter folder: what can never be processed is kept for
//! inspection instead of being dropped, each with a small JSON sidecar that
//! says why, from where and when. The folder is bounded: at most
//! [`DeadLetterLimits::max_letters`] letters and
//! [`DeadLetterLimits::max_bytes`] bytes; the oldest letters are removed to
//! make room (counted in `dead_letters_removed_total`). A payload too large
//! to analyse is never kept whole: its caller hands over only its first
//! [`OVERSIZED_PREFIX_BYTES`], and the sidecar records the full length.
//!
//! Layout: `<out>/dead_letter/<camera>/<time>_<hash>.payload` and `.json`.
//!
//! ```text
//!  Letter ─► keep() ─► <camera>/<base>.payload + <base>.json ─► index (oldest first)
//!                                                              └► over a bound: remove the oldest, count it
//! ```
//!
//! Usage (one `DeadLetters` per output directory and process; it indexes
//! what is already on disk when opened):
//!
//! ```no_run
//! # use posture_analyzer::deadletter::*;
//! let mut dead = DeadLetters::open(
//!     std::path::Path::new("out"),
//!     DeadLetterLimits::default(),
//!     DeadLetterMetrics::default(),
//! );
//! let kept = dead.keep(&Letter {
//!     camera: "pi1",
//!     source: "images/pi1",
//!     received: jiff::Timestamp::now(),
//!     reason: "bad_base64",
//!     detail: "Invalid symbol 37, offset 4.",
//!     payload: b"%%%%",
//!     payload_bytes: 4,
//! })?;
//! # Ok::<(), DeadLetterError>(())
//! ```

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;

/// How much of a too-large payload is kept: enough to see what it was
/// (headers, the start of the base64), never the whole thing.
pub const OVERSIZED_PREFIX_BYTES: usize = 64 * 1024;

/// An error writing to the dead-letter folder.
#[derive(Debug, thiserror::Error)]
#[error("dead-letter folder {path}")]
pub struct DeadLetterError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// Bounds of the dead-letter folder (all cameras together).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeadLetterLimits {
    /// Most letters (payload and sidecar) kept; at least 1.
    pub max_letters: usize,
    /// Most bytes (payloads and sidecars) kept. A single letter larger than
    /// this keeps only as much of its payload as fits.
    pub max_bytes: u64,
}

impl Default for DeadLetterLimits {
    fn default() -> Self {
        Self {
            max_letters: 1000,
            max_bytes: 256 * 1024 * 1024,
        }
    }
}

/// What the folder reports on `/metrics`; cheap to clone (shared handles).
#[derive(Clone, Debug, Default)]
pub struct DeadLetterMetrics {
    /// Letters removed (oldest first) to stay within the bounds.
    pub removed: Counter,
    /// Letters in the folder.
    pub letters: Gauge,
    /// Bytes in the folder (payloads and sidecars).
    pub bytes: Gauge,
}

/// One thing to keep.
#[derive(Clone, Copy, Debug)]
pub struct Letter<'a> {
    /// Camera id (the folder it goes to).
    pub camera: &'a str,
    /// MQTT topic, file path or other origin.
    pub source: &'a str,
    /// When it arrived.
    pub received: jiff::Timestamp,
    /// Reason label (as in the `frames_failed` metric).
    pub reason: &'a str,
    /// Human-readable detail.
    pub detail: &'a str,
    /// The bytes to keep: the whole payload, or only its first bytes.
    pub payload: &'a [u8],
    /// The payload's full length (at least `payload.len()`).
    pub payload_bytes: usize,
}

/// The sidecar written next to each kept payload.
#[derive(Debug, Serialize)]
pub struct Sidecar<'a> {
    /// Reason label (as in the `frames_failed` metric).
    pub reason: &'a str,
    /// Human-readable detail.
    pub detail: &'a str,
    /// Camera id.
    pub camera: &'a str,
    /// MQTT topic, or the file path when analysing files.
    pub source: &'a str,
    /// When the payload arrived (RFC 3339).
    pub received_time: &'a str,
    /// Full payload size in bytes.
    pub bytes: usize,
    /// Bytes kept in the `.payload` file (less than `bytes` when truncated).
    pub kept_bytes: usize,
    /// Whether only the start of the payload was kept.
    pub truncated: bool,
}

/// One letter on disk: its two files and their size.
#[derive(Clone, Debug)]
struct Entry {
    /// Path without extension (`<dir>/<base>`).
    base: PathBuf,
    bytes: u64,
}

/// The dead-letter folder under an output directory.
#[derive(Debug)]
pub struct DeadLetters {
    root: PathBuf,
    limits: DeadLetterLimits,
    metrics: DeadLetterMetrics,
    /// Oldest first.
    index: VecDeque<Entry>,
    bytes: u64,
}

impl DeadLetters {
    /// The folder `<out>/dead_letter`, indexing the letters already there
    /// (oldest first by modification time), and enforcing `limits` at once.
    pub fn open(out: &Path, limits: DeadLetterLimits, metrics: DeadLetterMetrics) -> Self {
        let root = out.join("dead_letter");
        let index = scan(&root);
        let bytes = index.iter().map(|e| e.bytes).sum();
        let mut dl = Self {
            root,
            limits: DeadLetterLimits {
                max_letters: limits.max_letters.max(1),
                ..limits
            },
            metrics,
            index: index.into(),
            bytes,
        };
        dl.enforce();
        dl
    }

    /// Where the letters live.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Letters and bytes in the folder now.
    pub fn usage(&self) -> (usize, u64) {
        (self.index.len(), self.bytes)
    }

    /// Keeps `letter` with its sidecar, removing the oldest letters if the
    /// folder would exceed its bounds; returns the payload's path.
    pub fn keep(&mut self, letter: &Letter<'_>) -> Result<PathBuf, DeadLetterError> {
        let dir = self.root.join(sanitize(letter.camera));
        let err = |source| DeadLetterError {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(err)?;
        let stamp = letter.received.strftime("%Y%m%dT%H%M%S%.6fZ").to_string();
        let hash = crate::record::frame_id(letter.camera, letter.payload);
        let mut base = dir.join(format!("{stamp}_{}", &hash[..12]));
        for n in 1.. {
            if !with_ext(&base, "payload").exists() && !with_ext(&base, "json").exists() {
                break;
            }
            base = dir.join(format!("{stamp}_{}_{n}", &hash[..12]));
        }
        // Room for the sidecar (a few hundred bytes plus the detail) within max_bytes.
        let sidecar_room = 1024 + letter.detail.len() + letter.source.len() + letter.camera.len();
        let budget = usize::try_from(self.limits.max_bytes)
            .unwrap_or(usize::MAX)
            .saturating_sub(sidecar_room);
        let kept = &letter.payload[..letter.payload.len().min(budget)];
        let payload_bytes = letter.payload_bytes.max(letter.payload.len());
        let sidecar = Sidecar {
            reason: letter.reason,
            detail: letter.detail,
            camera: letter.camera,
            source: letter.source,
            received_time: &letter.received.to_string(),
            bytes: payload_bytes,
            kept_bytes: kept.len(),
            truncated: kept.len() < payload_bytes,
        };
        let json =
            serde_json::to_vec_pretty(&sidecar).map_err(|e| err(std::io::Error::other(e)))?;
        let payload_path = with_ext(&base, "payload");
        std::fs::write(&payload_path, kept).map_err(err)?;
        std::fs::write(with_ext(&base, "json"), &json).map_err(err)?;
        let bytes = (kept.len() + json.len()) as u64;
        self.index.push_back(Entry { base, bytes });
        self.bytes += bytes;
        self.enforce();
        Ok(payload_path)
    }

    /// Removes the oldest letters while a bound is exceeded (never the
    /// newest), and updates the gauges.
    fn enforce(&mut self) {
        while self.index.len() > 1
            && (self.index.len() > self.limits.max_letters || self.bytes > self.limits.max_bytes)
        {
            let Some(old) = self.index.pop_front() else {
                break;
            };
            self.bytes = self.bytes.saturating_sub(old.bytes);
            for ext in ["payload", "json"] {
                let path = with_ext(&old.base, ext);
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "could not remove an old dead letter")
                    }
                }
            }
            self.metrics.removed.inc();
            tracing::debug!(letter = %old.base.display(), "oldest dead letter removed to stay within the folder's bounds");
        }
        self.metrics
            .letters
            .set(i64::try_from(self.index.len()).unwrap_or(i64::MAX));
        self.metrics
            .bytes
            .set(i64::try_from(self.bytes).unwrap_or(i64::MAX));
    }
}

/// `base` + `.` + `ext` (the base holds a dot of its own, in the time stamp).
fn with_ext(base: &Path, ext: &str) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// The letters under `root`, oldest first (modification time, then name).
/// A `.payload` or `.json` without its partner is a letter too (a crash
/// between the two writes), so it is removed in its turn.
fn scan(root: &Path) -> Vec<Entry> {
    use std::collections::BTreeMap;
    let mut found: BTreeMap<PathBuf, (u64, std::time::SystemTime)> = BTreeMap::new();
    let Ok(cameras) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    for camera in cameras.flatten() {
        let Ok(files) = std::fs::read_dir(camera.path()) else {
            continue;
        };
        for file in files.flatten() {
            let path = file.path();
            let ext = path.extension().and_then(|e| e.to_str());
            if !matches!(ext, Some("payload" | "json")) {
                continue;
            }
            let Ok(meta) = file.metadata() else {
                continue;
            };
            let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            let entry = found
                .entry(path.with_extension(""))
                .or_insert((0, modified));
            entry.0 += meta.len();
            entry.1 = entry.1.min(modified);
        }
    }
    let mut entries: Vec<(std::time::SystemTime, Entry)> = found
        .into_iter()
        .map(|(base, (bytes, modified))| (modified, Entry { base, bytes }))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.base.cmp(&b.1.base)));
    entries.into_iter().map(|(_, e)| e).collect()
}

/// Longest result of [`sanitize`]: file names built from it (with a
/// prefix and a frame-id suffix) stay far below the 255-byte limit.
const MAX_COMPONENT: usize = 96;

/// Keeps camera ids usable as one path component: other characters become
/// `_`, and a name longer than [`MAX_COMPONENT`] is cut and given a hash of
/// the whole name (so long names stay distinct).
pub fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.len() > MAX_COMPONENT {
        let hash = crate::record::frame_id("", name.as_bytes());
        return format!("{}~{}", &s[..MAX_COMPONENT - 13], &hash[..12]);
    }
    match s.as_str() {
        "" | "." | ".." => "_".to_string(),
        _ => s,
    }
}

#[cfg(test)]
mod tests;

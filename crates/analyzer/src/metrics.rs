//! What an operator watches on `/metrics`: frames in, verdicts out, failures
//! by reason, how long analysis takes and how many rows wait in the spool.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::deadletter::DeadLetterMetrics;
use crate::payload::RejectReason;

/// Label set naming a camera.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CameraLabels {
    /// Camera id.
    pub camera: String,
}

/// Label set of an analysed frame.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    /// Camera id.
    pub camera: String,
    /// `good`, `bad`, `no_person` or `unmeasurable`.
    pub verdict: String,
}

/// Label set of a failed frame.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// A [`RejectReason`] label.
    pub reason: String,
}

/// Label set of database errors.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `transient` (retried, the frame spooled) or `permanent` (the row refused for good).
    pub kind: String,
}

/// Label set of the pose model's device.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceLabels {
    /// `cpu`, `cuda` or `tensorrt` (what `--device auto` settled on).
    pub device: String,
}

/// The analyzer's metrics; cheap to clone (shared handles).
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Frames received (before any check).
    pub received: Family<CameraLabels, Counter>,
    /// Frames analysed, by verdict.
    pub analyzed: Family<VerdictLabels, Counter>,
    /// Frames rejected, by reason.
    pub failed: Family<ReasonLabels, Counter>,
    /// Redelivered frames whose row already existed.
    pub duplicates: Counter,
    /// Seconds from decode start to rows written.
    pub latency: Histogram,
    /// Rows waiting in the spool for the database.
    pub spool_depth: Gauge,
    /// Database errors by kind.
    pub db_errors: Family<KindLabels, Counter>,
    /// Frames whose outputs failed transiently (disk full, too many open
    /// files) and that wait, unacknowledged, for a retry.
    pub retried: Family<CameraLabels, Counter>,
    /// Annotated images removed from the database by retention.
    pub images_pruned: Counter,
    /// The dead-letter folder's size and removals.
    pub dead_letter: DeadLetterMetrics,
    /// 1 for the device the pose model runs on (an info metric).
    pub pose_device: Family<DeviceLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            received: Family::default(),
            analyzed: Family::default(),
            failed: Family::default(),
            duplicates: Counter::default(),
            // 5 ms … ~10 s: pose inference is ~20 ms per image on one core.
            latency: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.005, 2.0, 12,
            )),
            spool_depth: Gauge::default(),
            db_errors: Family::default(),
            retried: Family::default(),
            images_pruned: Counter::default(),
            dead_letter: DeadLetterMetrics::default(),
            pose_device: Family::default(),
        }
    }
}

impl Metrics {
    /// New metrics registered into `registry` (the caller picks the prefix,
    /// e.g. `registry.sub_registry_with_prefix("analyzer")`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "frames_received",
            "Frames received from cameras or files",
            m.received.clone(),
        );
        registry.register(
            "frames_analyzed",
            "Frames analysed, by posture verdict",
            m.analyzed.clone(),
        );
        registry.register(
            "frames_failed",
            "Frames that can never be analysed, by reason (kept in the dead-letter folder)",
            m.failed.clone(),
        );
        registry.register(
            "frames_duplicate",
            "Redelivered frames whose row already existed",
            m.duplicates.clone(),
        );
        registry.register(
            "analysis_duration_seconds",
            "Time to analyse one frame and write its outputs",
            m.latency.clone(),
        );
        registry.register(
            "spool_depth",
            "Rows waiting in the local spool for the database",
            m.spool_depth.clone(),
        );
        registry.register(
            "database_errors",
            "Database errors: transient (frame spooled, database retried with backoff) or permanent (row dead-lettered)",
            m.db_errors.clone(),
        );
        registry.register(
            "frames_retried",
            "Frames not recorded on a transient output error (disk full, too many open files), retried with backoff",
            m.retried.clone(),
        );
        registry.register(
            "images_pruned",
            "Annotated images removed from the database by retention (rows are kept)",
            m.images_pruned.clone(),
        );
        registry.register(
            "dead_letters_removed",
            "Dead letters removed, oldest first, to keep the folder within its bounds",
            m.dead_letter.removed.clone(),
        );
        registry.register(
            "dead_letters",
            "Letters in the dead-letter folder",
            m.dead_letter.letters.clone(),
        );
        registry.register(
            "dead_letter_bytes",
            "Bytes in the dead-letter folder (payloads and sidecars)",
            m.dead_letter.bytes.clone(),
        );
        registry.register(
            "pose_device_info",
            "The device the pose model runs on (cpu, cuda, tensorrt): 1 for the one in use",
            m.pose_device.clone(),
        );
        // Every reason shows up as 0 before it first happens.
        for r in RejectReason::ALL {
            let _ = m.failed.get_or_create(&ReasonLabels {
                reason: r.as_str().to_string(),
            });
        }
        m
    }

    /// Records the device the pose model runs on.
    pub fn set_pose_device(&self, device: &str) {
        self.pose_device
            .get_or_create(&DeviceLabels {
                device: device.to_string(),
            })
            .set(1);
    }

    /// Count of rejected frames for `reason` (tests, summaries).
    pub fn failed_count(&self, reason: RejectReason) -> u64 {
        self.failed
            .get_or_create(&ReasonLabels {
                reason: reason.as_str().to_string(),
            })
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_names_and_labels() {
        let mut registry = Registry::default();
        let m = Metrics::register(registry.sub_registry_with_prefix("posture_analyzer"));
        m.received
            .get_or_create(&CameraLabels {
                camera: "pi1".into(),
            })
            .inc();
        m.analyzed
            .get_or_create(&VerdictLabels {
                camera: "pi1".into(),
                verdict: "good".into(),
            })
            .inc();
        m.latency.observe(0.02);
        m.spool_depth.set(3);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for needle in [
            "posture_analyzer_frames_received_total{camera=\"pi1\"} 1",
            "posture_analyzer_frames_analyzed_total{camera=\"pi1\",verdict=\"good\"} 1",
            "posture_analyzer_frames_failed_total{reason=\"bad_base64\"} 0",
            "posture_analyzer_frames_failed_total{reason=\"too_many_pixels\"} 0",
            "posture_analyzer_analysis_duration_seconds_count 1",
            "posture_analyzer_spool_depth 3",
            "posture_analyzer_dead_letters_removed_total 0",
            "posture_analyzer_dead_letters 0",
            "posture_analyzer_dead_letter_bytes 0",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}

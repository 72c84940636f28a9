//! The KEDA External Scaler's decisions: whether a ScaledJob should be active,
//! how much spare GPU capacity there is, and what a trigger's
//! `scalerMetadata` asks for.
//!
//! ```text
//!  scalerMetadata (from the ScaledJob trigger) ─► ScalerConfig::from_metadata ─► threshold, metric name
//!  GpuSnapshot ─► any_below_threshold ─► Activity::observe(now) (debounce) ─► IsActive
//!  GpuSnapshot ─► spare_capacity ─────────────────────────────────────────────► GetMetrics
//! ```
//!
//! Pure: the gRPC server in `posture-scaler` hands in the snapshot and `now`.

use std::collections::HashMap;

use crate::gpu::GpuSnapshot;
use crate::model::Millis;

/// Default metric name advertised by `GetMetricSpec` (the name the earlier
/// system's ScaledJobs use).
pub const DEFAULT_METRIC_NAME: &str = "gpu_trigger";

/// Metadata keys KEDA itself puts in every external trigger's metadata (it
/// forwards the whole trigger metadata to the scaler); accepted and ignored.
pub const KEDA_KEYS: &[&str] = &["scalerAddress", "enableTLS", "unsafeSsl"];

/// Metadata key overriding the overload threshold (percent, 0–100).
pub const KEY_THRESHOLD: &str = "threshold";
/// Metadata key overriding the metric name.
pub const KEY_METRIC_NAME: &str = "metricName";

/// What one ScaledJob's trigger asks of the scaler, after defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct ScalerConfig {
    /// A node strictly below this usage (percent) counts as having room.
    pub threshold: f64,
    /// Name of the single metric in `GetMetricSpec` / `GetMetrics`.
    pub metric_name: String,
}

impl Default for ScalerConfig {
    fn default() -> Self {
        Self {
            threshold: crate::balance::DEFAULT_THRESHOLD,
            metric_name: DEFAULT_METRIC_NAME.to_owned(),
        }
    }
}

/// Why a trigger's `scalerMetadata` was refused. The gRPC layer turns it into
/// `InvalidArgument` with this message, so the operator sees it in KEDA's
/// ScaledJob status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetadataError {
    /// A key this scaler does not know (a typo would otherwise be ignored).
    #[error(
        "unknown scalerMetadata key {key:?}; known keys: threshold, metricName (and KEDA's scalerAddress, enableTLS, unsafeSsl)"
    )]
    UnknownKey {
        /// The key as received.
        key: String,
    },
    /// `threshold` is not a number.
    #[error("scalerMetadata threshold {value:?} is not a number")]
    MalformedThreshold {
        /// The value as received.
        value: String,
        /// Why it did not parse.
        #[source]
        source: std::num::ParseFloatError,
    },
    /// `threshold` is a number outside 0–100.
    #[error("scalerMetadata threshold {value} is outside 0..=100 (percent GPU usage)")]
    ThresholdOutOfRange {
        /// The parsed value.
        value: f64,
    },
    /// `metricName` is empty or not a valid metric name.
    #[error(
        "scalerMetadata metricName {value:?} is invalid: use 1-63 characters [A-Za-z0-9_-], starting with a letter"
    )]
    BadMetricName {
        /// The value as received.
        value: String,
    },
}

impl ScalerConfig {
    /// Applies a trigger's `scalerMetadata` over `defaults`.
    ///
    /// Keys ending in `FromEnv` (KEDA resolves them from the workload's
    /// environment and forwards the value under the same key) are read like
    /// the key without the suffix.
    pub fn from_metadata(
        defaults: &ScalerConfig,
        metadata: &HashMap<String, String>,
    ) -> Result<Self, MetadataError> {
        let mut config = defaults.clone();
        // Sorted so that the first error reported does not depend on hash order.
        let mut keys: Vec<&String> = metadata.keys().collect();
        keys.sort();
        for key in keys {
            let value = metadata[key].trim();
            let base = key.strip_suffix("FromEnv").unwrap_or(key);
            match base {
                KEY_THRESHOLD => {
                    let t: f64 =
                        value
                            .parse()
                            .map_err(|source| MetadataError::MalformedThreshold {
                                value: value.to_owned(),
                                source,
                            })?;
                    if !(0.0..=100.0).contains(&t) {
                        return Err(MetadataError::ThresholdOutOfRange { value: t });
                    }
                    config.threshold = t;
                }
                KEY_METRIC_NAME => {
                    if !valid_metric_name(value) {
                        return Err(MetadataError::BadMetricName {
                            value: value.to_owned(),
                        });
                    }
                    config.metric_name = value.to_owned();
                }
                k if KEDA_KEYS.contains(&k) => {}
                _ => return Err(MetadataError::UnknownKey { key: key.clone() }),
            }
        }
        Ok(config)
    }
}

/// KEDA turns the name into an external metric name (`s<idx>-<name>`), so keep
/// to characters valid there.
fn valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && s.len() <= 63
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Raw activity: true if any node with a fresh reading is strictly below the
/// threshold (there is room for another analyzer).
pub fn any_below_threshold(snapshot: &GpuSnapshot, threshold: f64) -> bool {
    snapshot.fresh().any(|(_, u)| u < threshold)
}

/// Spare GPU capacity: Σ max(0, 100 − usage) over nodes with fresh readings,
/// in percentage points. `GetMetrics` reports it against a target of 1.
pub fn spare_capacity(snapshot: &GpuSnapshot) -> f64 {
    snapshot.fresh().map(|(_, u)| (100.0 - u).max(0.0)).sum()
}

/// Debounced activity for one ScaledJob.
///
/// Once it has reported active it keeps reporting active for `window`
/// milliseconds after the last time the raw signal was active, so KEDA does
/// not tear Jobs down while the balancer is still moving them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Activity {
    window: Millis,
    last_active: Option<Millis>,
}

impl Activity {
    /// Debounce with a stabilisation window of `window` ms (0 disables it).
    pub fn new(window: Millis) -> Self {
        Self {
            window: window.max(0),
            last_active: None,
        }
    }

    /// Feeds the raw signal at `now` and returns the debounced answer.
    pub fn observe(&mut self, raw_active: bool, now: Millis) -> bool {
        if raw_active {
            self.last_active = Some(now);
            return true;
        }
        self.is_held(now)
    }

    /// The debounced answer at `now` without a new observation (still active
    /// only because of the stabilisation window).
    pub fn is_held(&self, now: Millis) -> bool {
        self.last_active
            .is_some_and(|at| now.saturating_sub(at) < self.window)
    }

    /// When the held-active state ends, if it is being held (for timers).
    pub fn hold_ends_at(&self) -> Option<Millis> {
        self.last_active.map(|at| at.saturating_add(self.window))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{GpuSample, NodeUsage, UsageState};
    use proptest::prelude::*;

    fn snap(pairs: &[(&str, f64, UsageState)]) -> GpuSnapshot {
        GpuSnapshot {
            taken_at: 0,
            nodes: pairs
                .iter()
                .map(|(n, u, s)| {
                    (
                        (*n).to_owned(),
                        NodeUsage {
                            sample: Some(GpuSample {
                                usage_percent: *u,
                                sampled_at: 0,
                            }),
                            state: *s,
                            error: None,
                        },
                    )
                })
                .collect(),
        }
    }

    fn md(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn spare_capacity_sums_headroom_of_fresh_nodes() {
        let s = snap(&[
            ("a", 80.0, UsageState::Ok),
            ("b", 20.0, UsageState::Ok),
            ("c", 130.0, UsageState::Ok),
            ("d", 0.0, UsageState::Stale),
        ]);
        assert_eq!(spare_capacity(&s), 20.0 + 80.0);
        assert!(any_below_threshold(&s, 50.0));
        assert!(!any_below_threshold(&s, 20.0), "strictly below");
        assert_eq!(spare_capacity(&GpuSnapshot::default()), 0.0);
        assert!(!any_below_threshold(&GpuSnapshot::default(), 50.0));
    }

    #[test]
    fn metadata_overrides_and_keda_keys() {
        let d = ScalerConfig::default();
        let c = ScalerConfig::from_metadata(
            &d,
            &md(&[
                (
                    "scalerAddress",
                    "posture-scaler.posture.svc.cluster.local:50051",
                ),
                ("threshold", " 65.5 "),
                ("metricName", "gpu_room"),
            ]),
        )
        .unwrap();
        assert_eq!(c.threshold, 65.5);
        assert_eq!(c.metric_name, "gpu_room");
        let c = ScalerConfig::from_metadata(&d, &md(&[("thresholdFromEnv", "40")])).unwrap();
        assert_eq!(c.threshold, 40.0);
        assert_eq!(ScalerConfig::from_metadata(&d, &HashMap::new()).unwrap(), d);
    }

    #[test]
    fn bad_metadata_is_a_typed_error_with_a_clear_message() {
        let d = ScalerConfig::default();
        let e = ScalerConfig::from_metadata(&d, &md(&[("treshold", "50")])).unwrap_err();
        assert!(matches!(e, MetadataError::UnknownKey { .. }));
        assert!(e.to_string().contains("\"treshold\""), "{e}");
        let e = ScalerConfig::from_metadata(&d, &md(&[("threshold", "fifty")])).unwrap_err();
        assert!(matches!(e, MetadataError::MalformedThreshold { .. }));
        assert!(std::error::Error::source(&e).is_some());
        let e = ScalerConfig::from_metadata(&d, &md(&[("threshold", "150")])).unwrap_err();
        assert_eq!(e, MetadataError::ThresholdOutOfRange { value: 150.0 });
        let e = ScalerConfig::from_metadata(&d, &md(&[("threshold", "NaN")])).unwrap_err();
        assert!(matches!(e, MetadataError::ThresholdOutOfRange { .. }));
        let e = ScalerConfig::from_metadata(&d, &md(&[("metricName", "")])).unwrap_err();
        assert!(matches!(e, MetadataError::BadMetricName { .. }));
        let e = ScalerConfig::from_metadata(&d, &md(&[("metricName", "9gpu")])).unwrap_err();
        assert!(matches!(e, MetadataError::BadMetricName { .. }));
    }

    #[test]
    fn activity_holds_for_the_window_after_the_last_active_signal() {
        let mut a = Activity::new(60_000);
        assert!(!a.observe(false, 0), "never active: inactive");
        assert!(a.observe(true, 1_000));
        assert!(a.observe(false, 30_000), "held");
        assert!(a.observe(false, 60_999), "held until window ends");
        assert!(!a.observe(false, 61_000), "released");
        assert_eq!(a.hold_ends_at(), Some(61_000));
        let mut none = Activity::new(0);
        assert!(none.observe(true, 5));
        assert!(!none.observe(false, 5), "window 0: no debounce");
    }

    proptest! {
        /// The debounced signal is never inactive within the window after a
        /// raw active, and always equals the raw signal when the raw signal
        /// is active.
        #[test]
        fn debounce_never_drops_within_window(
            signals in proptest::collection::vec((any::<bool>(), 0i64..20_000), 1..50),
            window in 0i64..60_000,
        ) {
            let mut a = Activity::new(window);
            let mut now = 0;
            let mut last_raw: Option<i64> = None;
            for (raw, dt) in signals {
                now += dt;
                let out = a.observe(raw, now);
                if raw { last_raw = Some(now); prop_assert!(out); }
                let expect = last_raw.is_some_and(|t| now - t < window) || raw;
                prop_assert_eq!(out, expect);
            }
        }
    }
}

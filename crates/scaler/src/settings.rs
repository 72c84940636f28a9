//! Live settings from a file: the scaler re-reads it while running and
//! applies what changed ([`Scaler::update_settings`]), so an operator can
//! change the metric target (or a default threshold) by editing a ConfigMap;
//! `StreamMetricSpec` carries the new target to KEDA and the HPA at once.
//!
//! ```text
//!  settings file (YAML, e.g. a mounted ConfigMap) ─► poll every interval ─► parse ─► Scaler::update_settings ─► open streams
//! ```
//!
//! Format (every key optional; a missing key keeps the value from the
//! command line):
//!
//! ```yaml
//! target: 15              # spare GPU %-points per analyzer Job (targetSizeFloat)
//! threshold: 50           # default for triggers without `threshold`
//! metricName: gpu_trigger # default for triggers without `metricName`
//! ```
//!
//! A file that does not parse or holds invalid values is reported (log) and
//! ignored: the settings in force stay. Polling (not inotify) because a
//! ConfigMap volume is updated by swapping a symlink, which polling sees.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::service::{Scaler, Settings, SettingsError};
use crate::source::UsageSource;

/// The file's content; every key optional.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SettingsFile {
    /// Metric target.
    pub target: Option<f64>,
    /// Default threshold (percent).
    pub threshold: Option<f64>,
    /// Default metric name.
    pub metric_name: Option<String>,
}

/// Why a settings file was not applied.
#[derive(Debug, thiserror::Error)]
pub enum SettingsFileError {
    /// It could not be read.
    #[error("reading the scaler settings file {path}")]
    Read {
        /// Which file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It is not valid YAML of the expected shape.
    #[error("parsing the scaler settings file {path}: {message}")]
    Parse {
        /// Which file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// Its values were refused.
    #[error("invalid scaler settings in {path}")]
    Invalid {
        /// Which file.
        path: PathBuf,
        /// Why.
        #[source]
        source: SettingsError,
    },
}

impl SettingsFile {
    /// Parses YAML (or JSON); an empty file sets nothing.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
    }

    /// `base` with this file's values applied.
    pub fn apply(&self, base: &Settings) -> Settings {
        let mut s = base.clone();
        if let Some(t) = self.target {
            s.target = t;
        }
        if let Some(t) = self.threshold {
            s.defaults.threshold = t;
        }
        if let Some(n) = &self.metric_name {
            s.defaults.metric_name.clone_from(n);
        }
        s
    }
}

/// Reads `path` and applies it over `base` (the command line's settings):
/// `Ok(true)` if the scaler's settings changed.
pub fn apply_file<S: UsageSource>(
    scaler: &Scaler<S>,
    path: &Path,
    base: &Settings,
) -> Result<bool, SettingsFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file = SettingsFile::parse(&text).map_err(|message| SettingsFileError::Parse {
        path: path.to_path_buf(),
        message,
    })?;
    let next = file.apply(base);
    scaler
        .update_settings(|s| *s = next)
        .map_err(|source| SettingsFileError::Invalid {
            path: path.to_path_buf(),
            source,
        })
}

/// Applies `path` every `interval` until `shutdown` resolves. Only a change
/// of the file's content is applied (and logged); errors are logged once
/// per distinct message and the settings in force stay.
pub async fn watch_file<S: UsageSource>(
    scaler: Scaler<S>,
    path: PathBuf,
    base: Settings,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut seen: Option<Result<String, String>> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        let content = std::fs::read_to_string(&path).map_err(|e| e.to_string());
        if seen.as_ref() == Some(&content) {
            continue;
        }
        seen = Some(content);
        match apply_file(&scaler, &path, &base) {
            Ok(true) => {
                let s = scaler.settings();
                tracing::info!(path = %path.display(), target = s.target, threshold = s.defaults.threshold, metric = %s.defaults.metric_name, "scaler settings file applied");
            }
            Ok(false) => {}
            Err(e) => {
                let cause = std::error::Error::source(&e).map(ToString::to_string);
                tracing::warn!(error = %e, ?cause, "scaler settings file ignored; the settings in force stay");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use posture_core::scaler::ScalerConfig;

    fn base() -> Settings {
        Settings {
            defaults: ScalerConfig::default(),
            target: 1.0,
        }
    }

    #[test]
    fn parses_yaml_json_and_empty() {
        let f = SettingsFile::parse("target: 15\nthreshold: 40\nmetricName: gpu_room\n").unwrap();
        assert_eq!(f.target, Some(15.0));
        let s = f.apply(&base());
        assert_eq!(
            (
                s.target,
                s.defaults.threshold,
                s.defaults.metric_name.as_str()
            ),
            (15.0, 40.0, "gpu_room")
        );
        let f = SettingsFile::parse(r#"{"target": 2.5}"#).unwrap();
        assert_eq!(f.apply(&base()).defaults, ScalerConfig::default());
        assert_eq!(SettingsFile::parse(" \n").unwrap(), SettingsFile::default());
        assert!(
            SettingsFile::parse("taget: 3").is_err(),
            "typos are refused"
        );
        assert!(SettingsFile::parse("target: many").is_err());
    }
}

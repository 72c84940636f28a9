//! `analyze --files`: the same pipeline fed from image files instead of MQTT.
//! A path that is missing or unreadable is reported like any other bad
//! input (counted, named) and the rest are still analysed.

use std::path::PathBuf;

use crate::deadletter::OVERSIZED_PREFIX_BYTES;
use crate::mqtt::RunStats;
use crate::payload::read_file_bounded;
use crate::pipeline::{AnalyzeError, Analyzer, Frame, Outcome};
use crate::publish::image_files;

/// A files-mode failure that stops the run (outputs could not be written).
#[derive(Debug, thiserror::Error)]
#[error("analysing {path}")]
pub struct FilesError {
    /// Which file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: AnalyzeError,
}

/// What a files run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilesReport {
    /// Frames analysed and rejected (bad image data, dead-lettered).
    pub stats: RunStats,
    /// Paths that could not be listed or read, with why.
    pub unreadable: Vec<(PathBuf, String)>,
}

impl FilesReport {
    /// Whether any input failed (unreadable path or rejected image).
    pub fn any_failed(&self) -> bool {
        self.stats.rejected > 0 || !self.unreadable.is_empty()
    }
}

/// Analyses each file (directories: their .jpg/.jpeg/.png files, sorted) as
/// a frame of `camera`. `on_outcome` sees every analysed or rejected file;
/// `on_unreadable` every path that could not be listed or read.
pub async fn analyze_files(
    analyzer: &mut Analyzer,
    paths: &[PathBuf],
    camera: &str,
    mut on_outcome: impl FnMut(&PathBuf, &Outcome),
    mut on_unreadable: impl FnMut(&PathBuf, &str),
) -> Result<FilesReport, FilesError> {
    let mut report = FilesReport::default();
    for given in paths {
        let files = match image_files(std::slice::from_ref(given)) {
            Ok(f) => f,
            Err(e) => {
                let why = crate::error_chain(&e);
                on_unreadable(given, &why);
                report.unreadable.push((given.clone(), why));
                continue;
            }
        };
        for path in files {
            // The length is checked before reading: a file over the limit is
            // never read whole (only its first bytes, for the dead letter).
            let limit = analyzer.config().limits.max_payload_bytes;
            let (payload, total) = match read_file_bounded(&path, limit, OVERSIZED_PREFIX_BYTES) {
                Ok(p) => p,
                Err(e) => {
                    let why = e.to_string();
                    on_unreadable(&path, &why);
                    report.unreadable.push((path, why));
                    continue;
                }
            };
            let frame = Frame {
                camera: camera.to_string(),
                source: path.display().to_string(),
                name_hint: path.file_stem().map(|s| s.to_string_lossy().into_owned()),
                payload,
                received: jiff::Timestamp::now(),
            };
            let outcome = if total > limit {
                analyzer.reject_oversized(&frame, total)
            } else {
                analyzer.process(&frame).await
            };
            let outcome = outcome.map_err(|source| FilesError {
                path: path.clone(),
                source,
            })?;
            match &outcome {
                Outcome::Analyzed { .. } => report.stats.analyzed += 1,
                Outcome::Rejected { .. } => report.stats.rejected += 1,
            }
            on_outcome(&path, &outcome);
        }
    }
    analyzer.flush_spool().await;
    Ok(report)
}

//! `analyze --files`: the same pipeline fed from image files instead of MQTT.

use std::path::PathBuf;

use crate::deadletter::OVERSIZED_PREFIX_BYTES;
use crate::mqtt::RunStats;
use crate::payload::read_file_bounded;
use crate::pipeline::{AnalyzeError, Analyzer, Frame, Outcome};
use crate::publish::{PublishError, image_files};

/// A files-mode failure.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// A path could not be listed or read.
    #[error(transparent)]
    Path(#[from] PublishError),
    /// A file could not be read.
    #[error("reading {path}")]
    Read {
        /// Which file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Outputs could not be written.
    #[error("analysing {path}")]
    Analyze {
        /// Which file.
        path: PathBuf,
        /// Why.
        #[source]
        source: AnalyzeError,
    },
}

/// Analyses each file (directories: their .jpg/.jpeg/.png files, sorted) as
/// a frame of `camera`.
pub async fn analyze_files(
    analyzer: &mut Analyzer,
    paths: &[PathBuf],
    camera: &str,
    mut on_outcome: impl FnMut(&PathBuf, &Outcome),
) -> Result<RunStats, FilesError> {
    let files = image_files(paths)?;
    let mut stats = RunStats::default();
    for path in files {
        // The length is checked before reading: a file over the limit is
        // never read whole (only its first bytes, for the dead letter).
        let limit = analyzer.config().limits.max_payload_bytes;
        let (payload, total) =
            read_file_bounded(&path, limit, OVERSIZED_PREFIX_BYTES).map_err(|source| {
                FilesError::Read {
                    path: path.clone(),
                    source,
                }
            })?;
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
        let outcome = outcome.map_err(|source| FilesError::Analyze {
            path: path.clone(),
            source,
        })?;
        match &outcome {
            Outcome::Analyzed { .. } => stats.analyzed += 1,
            Outcome::Rejected { .. } => stats.rejected += 1,
        }
        on_outcome(&path, &outcome);
    }
    analyzer.flush_spool().await;
    Ok(stats)
}

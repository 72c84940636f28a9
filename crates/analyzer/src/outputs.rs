//! Where a frame's annotated image goes (`--outputs db,files`), the local
//! files (`analyzed_images/analyzed_images_from_<camera>/*.jpg` and
//! `<camera>_results.csv`, the seeds' layout), and how a failure to write
//! them is classified.
//!
//! File outputs are written on the blocking pool (they fsync). At most
//! [`MAX_OPEN_CSV`] CSV files stay open, least recently used closed first, so
//! an analyzer of many cameras never runs out of file descriptors; a CSV
//! handle that failed is dropped and reopened on the next try (the file may
//! have been replaced).

use std::fmt;
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::csvlog::{Appended, CsvError, CsvLog};
use crate::deadletter::sanitize;
use crate::record::PostureRow;

/// Which outputs a frame gets besides its `posture_log` row (always written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outputs {
    /// The annotated JPEG in `posture_image`, in the row's transaction.
    pub db: bool,
    /// The seeds' local files: annotated JPEG and CSV line.
    pub files: bool,
}

impl Outputs {
    /// Local files only (the default).
    pub const FILES: Outputs = Outputs {
        db: false,
        files: true,
    };
    /// Images in the database only (the cluster).
    pub const DB: Outputs = Outputs {
        db: true,
        files: false,
    };
    /// Both: the database (what the dashboard and `results export` read) and
    /// the seeds' local files (`local`, `analyze --files`).
    pub const BOTH: Outputs = Outputs {
        db: true,
        files: true,
    };
}

impl Default for Outputs {
    fn default() -> Self {
        Self::FILES
    }
}

impl FromStr for Outputs {
    type Err = String;

    /// `db`, `files` or both, comma-separated.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut o = Outputs {
            db: false,
            files: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.to_ascii_lowercase().as_str() {
                "db" | "database" => o.db = true,
                "files" | "file" => o.files = true,
                other => return Err(format!("unknown output {other:?} (db, files)")),
            }
        }
        if !o.db && !o.files {
            return Err("name at least one output: db, files or db,files".into());
        }
        Ok(o)
    }
}

impl fmt::Display for Outputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.db, self.files) {
            (true, true) => f.write_str("db,files"),
            (true, false) => f.write_str("db"),
            _ => f.write_str("files"),
        }
    }
}

/// Whether retrying an I/O error can help: disk full, too many open files,
/// I/O errors, permissions clear up (transient); a name the file system
/// refuses or a directory where a file should be do not (permanent).
pub fn is_permanent(e: &io::Error) -> bool {
    const ELOOP: i32 = 40;
    matches!(
        e.kind(),
        ErrorKind::InvalidFilename
            | ErrorKind::IsADirectory
            | ErrorKind::NotADirectory
            | ErrorKind::FileTooLarge
            | ErrorKind::InvalidInput
            | ErrorKind::InvalidData
    ) || e.raw_os_error() == Some(ELOOP)
}

/// Writing a local output failed.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The annotated image.
    #[error("writing annotated image {path}")]
    Image {
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The CSV line.
    #[error(transparent)]
    Csv(#[from] CsvError),
}

impl OutputError {
    /// Whether retrying can never help (see [`is_permanent`]).
    pub fn is_permanent(&self) -> bool {
        is_permanent(match self {
            OutputError::Image { source, .. } => source,
            OutputError::Csv(e) => e.io(),
        })
    }
}

/// CSV files kept open at once (one per camera, least recently used closed).
pub const MAX_OPEN_CSV: usize = 32;

/// The local files of every camera under one output folder.
pub struct FileOutputs {
    out: PathBuf,
    /// Open CSV logs with the tick of their last use.
    csv: Vec<(String, CsvLog, u64)>,
    tick: u64,
    max_open: usize,
}

impl FileOutputs {
    /// Files under `out`, at most `max_open` CSV files open.
    pub fn new(out: PathBuf, max_open: usize) -> Self {
        Self {
            out,
            csv: Vec::new(),
            tick: 0,
            max_open: max_open.max(1),
        }
    }

    /// Folder of a camera's annotated images.
    pub fn images_dir(out: &Path, camera: &str) -> PathBuf {
        out.join("analyzed_images")
            .join(format!("analyzed_images_from_{}", sanitize(camera)))
    }

    /// A camera's CSV file.
    pub fn csv_path(out: &Path, camera: &str) -> PathBuf {
        out.join(format!("{}_results.csv", sanitize(camera)))
    }

    /// CSV files open now.
    pub fn open_csv_files(&self) -> usize {
        self.csv.len()
    }

    /// Writes the annotated image (atomically, fsynced) and appends the CSV
    /// line (fsynced, once per frame id); returns the image's path.
    pub fn write(
        &mut self,
        row: &PostureRow,
        jpeg: &[u8],
    ) -> Result<(PathBuf, Appended), OutputError> {
        let dir = Self::images_dir(&self.out, &row.pi_id);
        let path = dir.join(&row.filename);
        write_atomically(&dir, &path, jpeg).map_err(|source| OutputError::Image {
            path: path.clone(),
            source,
        })?;
        let appended = self.append_csv(row)?;
        Ok((path, appended))
    }

    fn append_csv(&mut self, row: &PostureRow) -> Result<Appended, OutputError> {
        self.tick += 1;
        let i = match self.csv.iter().position(|(c, _, _)| *c == row.pi_id) {
            Some(i) => i,
            None => {
                if self.csv.len() >= self.max_open
                    && let Some(lru) = (0..self.csv.len()).min_by_key(|&i| self.csv[i].2)
                {
                    self.csv.swap_remove(lru);
                }
                let log = CsvLog::open(&Self::csv_path(&self.out, &row.pi_id))?;
                self.csv.push((row.pi_id.clone(), log, self.tick));
                self.csv.len() - 1
            }
        };
        self.csv[i].2 = self.tick;
        match self.csv[i].1.append(row) {
            Ok(a) => Ok(a),
            Err(e) => {
                // Reopen on the next try: the file may have been replaced.
                self.csv.swap_remove(i);
                Err(e.into())
            }
        }
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// reader never sees half an image; the file and then its directory are
/// fsynced, so the rename itself survives a power loss.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("jpg.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_parse_and_print() {
        assert_eq!("db".parse::<Outputs>().unwrap(), Outputs::DB);
        assert_eq!("files".parse::<Outputs>().unwrap(), Outputs::FILES);
        let both: Outputs = " files , db ".parse().unwrap();
        assert!(both.db && both.files);
        assert_eq!(both.to_string(), "db,files");
        assert!("".parse::<Outputs>().is_err());
        assert!("s3".parse::<Outputs>().is_err());
    }

    #[test]
    fn errors_that_never_clear_are_permanent() {
        let os = io::Error::from_raw_os_error;
        for (code, permanent) in [
            (36, true),
            (21, true),
            (20, true),
            (40, true),
            (28, false),
            (24, false),
            (23, false),
            (5, false),
            (13, false),
        ] {
            assert_eq!(is_permanent(&os(code)), permanent, "errno {code}");
        }
    }
}

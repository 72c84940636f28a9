//! The spool: an append-only, fsynced JSON-lines file of frames (row, and
//! the annotated image when images go to the database) waiting for the
//! database while it is unreachable. Replayed in order by [`crate::Store`],
//! incrementally from a remembered offset.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::record::PostureRow;

/// A problem with the local spool file (disk full, permissions).
#[derive(Debug, thiserror::Error)]
#[error("spool file {path}")]
pub struct SpoolError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

impl SpoolError {
    /// The I/O error behind it.
    pub fn io(&self) -> &std::io::Error {
        &self.source
    }
}

/// One spooled frame. Lines written before images were spooled are plain
/// rows, which read as entries without an image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpoolEntry {
    /// The row.
    #[serde(flatten)]
    pub row: PostureRow,
    /// The annotated JPEG, base64, when it goes to the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jpeg_base64: Option<String>,
}

impl SpoolEntry {
    /// The annotated JPEG, if spooled (`None` too if its base64 is damaged).
    pub fn jpeg(&self) -> Option<Vec<u8>> {
        self.jpeg_base64
            .as_deref()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
    }
}

/// A spooled entry read back, with the raw line and where the next one starts.
#[derive(Clone, Debug)]
pub struct Spooled {
    /// The entry.
    pub entry: SpoolEntry,
    /// The line as stored (kept in the dead-letter folder if the database
    /// rejects the row for good).
    pub line: String,
    /// Byte offset just after this line.
    pub end: u64,
}

/// Append-only, fsynced JSON-lines file of frames waiting for the database.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    file: File,
    depth: usize,
    /// A failed append could not be cut back: cut before the next one.
    torn: bool,
}

impl Spool {
    /// Opens (creating) the spool at `path`, counting rows left by a previous run.
    pub fn open(path: &Path) -> Result<Self, SpoolError> {
        let err = |source| SpoolError {
            path: path.to_path_buf(),
            source,
        };
        let file = crate::fsutil::open_append(path).map_err(err)?;
        // One analyzer per spool: another one replaying and clearing it
        // would drop rows this one appended. The lock lasts as long as `file`.
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(err(std::io::Error::new(
                    std::io::ErrorKind::ResourceBusy,
                    "in use by another analyzer (give each analyzer its own --spool-path)",
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(err(e)),
        }
        // A torn last line was never acknowledged (its fsync never returned).
        let cut = crate::fsutil::cut_torn_tail(&file).map_err(err)?;
        if cut > 0 {
            tracing::warn!(path = %path.display(), bytes = cut, "cut a torn last spool line (a write that never completed)");
        }
        let mut spool = Self {
            path: path.to_path_buf(),
            file,
            depth: 0,
            torn: false,
        };
        spool.depth = spool.read_from(0, usize::MAX)?.len();
        Ok(spool)
    }

    /// Entries in the file (replayed ones included until [`Spool::clear`]).
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The spool file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `row` (and its image) and fsyncs: after this returns the
    /// frame survives a crash.
    pub fn push(&mut self, row: &PostureRow, jpeg: Option<&[u8]>) -> Result<(), SpoolError> {
        let err = |source| SpoolError {
            path: self.path.clone(),
            source,
        };
        let entry = SpoolEntry {
            row: row.clone(),
            jpeg_base64: jpeg.map(|j| base64::engine::general_purpose::STANDARD.encode(j)),
        };
        let mut line = serde_json::to_string(&entry).map_err(|e| err(std::io::Error::other(e)))?;
        line.push('\n');
        if self.torn {
            crate::fsutil::cut_torn_tail(&self.file).map_err(err)?;
            self.torn = false;
        }
        if let Err(e) = crate::fsutil::append_synced(&mut self.file, line.as_bytes()) {
            self.torn = true;
            return Err(err(e));
        }
        self.depth += 1;
        Ok(())
    }

    /// Up to `max` entries starting at byte `offset`, in order. An
    /// unreadable line (only possible if the file was edited by hand: torn
    /// lines are cut on open) is skipped with a warning.
    pub fn read_from(&self, offset: u64, max: usize) -> Result<Vec<Spooled>, SpoolError> {
        let err = |source| SpoolError {
            path: self.path.clone(),
            source,
        };
        let mut f = File::open(&self.path).map_err(err)?;
        f.seek(SeekFrom::Start(offset)).map_err(err)?;
        let mut reader = BufReader::new(f);
        let mut out = Vec::new();
        let mut end = offset;
        let mut line = String::new();
        while out.len() < max {
            line.clear();
            let n = reader.read_line(&mut line).map_err(err)?;
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            end += n as u64;
            let text = line.trim_end();
            if text.is_empty() {
                continue;
            }
            match serde_json::from_str::<SpoolEntry>(text) {
                Ok(entry) => out.push(Spooled {
                    entry,
                    line: text.to_string(),
                    end,
                }),
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), offset = end - n as u64, error = %e, "skipping an unreadable spool line")
                }
            }
        }
        Ok(out)
    }

    /// Every spooled row, in order.
    pub fn read_all(&self) -> Result<Vec<PostureRow>, SpoolError> {
        Ok(self
            .read_from(0, usize::MAX)?
            .into_iter()
            .map(|s| s.entry.row)
            .collect())
    }

    /// Empties the spool (after every entry reached the database).
    pub fn clear(&mut self) -> Result<(), SpoolError> {
        let err = |source| SpoolError {
            path: self.path.clone(),
            source,
        };
        self.file.set_len(0).map_err(err)?;
        self.file.sync_all().map_err(err)?;
        self.depth = 0;
        Ok(())
    }
}

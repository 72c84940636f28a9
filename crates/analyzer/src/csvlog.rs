//! `<camera>_results.csv`: header once, one line per frame, safe across
//! restarts and across processes writing the same file.
//!
//! Every append happens under an exclusive advisory lock (`flock`), after
//! catching up with lines other writers appended since we last looked, so
//! the header is written exactly once and a frame id already present is not
//! written again. The lines of a group of frames go out in a single `write`
//! on an `O_APPEND` file and one fsync, before any of them is acknowledged.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::record::{CSV_HEADER, PostureRow};

/// An error writing the CSV file.
#[derive(Debug, thiserror::Error)]
#[error("CSV file {path}")]
pub struct CsvError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

impl Clone for CsvError {
    fn clone(&self) -> Self {
        Self {
            path: self.path.clone(),
            source: crate::fsutil::copy_io_error(&self.source),
        }
    }
}

impl CsvError {
    /// The I/O error behind it.
    pub fn io(&self) -> &std::io::Error {
        &self.source
    }
}

/// One camera's results file.
#[derive(Debug)]
pub struct CsvLog {
    path: PathBuf,
    file: File,
    /// Frame ids already in the file.
    seen: HashSet<String>,
    /// Bytes of the file already scanned into `seen`.
    scanned: u64,
}

/// Whether [`CsvLog::append`] wrote the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    /// A new line.
    Written,
    /// The frame id was already in the file.
    Duplicate,
}

impl CsvLog {
    /// Opens (creating if needed) the file at `path`.
    pub fn open(path: &Path) -> Result<Self, CsvError> {
        let err = |source| CsvError {
            path: path.to_path_buf(),
            source,
        };
        let file = crate::fsutil::open_append(path).map_err(err)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            seen: HashSet::new(),
            scanned: 0,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `row` unless its frame id is already in the file.
    pub fn append(&mut self, row: &PostureRow) -> Result<Appended, CsvError> {
        let appended = self.append_many(&[row])?;
        Ok(appended.first().copied().unwrap_or(Appended::Duplicate))
    }

    /// Appends the lines of `rows`, in order, whose frame ids are not in the
    /// file yet (nor earlier in `rows`), in one write and one fsync: a group
    /// of frames costs one flush. Either every new line is durable when this
    /// returns, or (on an error) none was written.
    pub fn append_many(&mut self, rows: &[&PostureRow]) -> Result<Vec<Appended>, CsvError> {
        let err = |source| CsvError {
            path: self.path.clone(),
            source,
        };
        self.file.lock().map_err(err)?;
        let result = self.append_locked(rows);
        // Unlock errors are harmless: closing the file releases the lock too.
        let _ = self.file.unlock();
        result.map_err(|source| CsvError {
            path: self.path.clone(),
            source,
        })
    }

    fn append_locked(&mut self, rows: &[&PostureRow]) -> std::io::Result<Vec<Appended>> {
        let len = self.catch_up()?;
        let mut out = String::new();
        if len == 0 {
            out.push_str(CSV_HEADER);
            out.push('\n');
        }
        let mut new_ids = Vec::new();
        let appended = rows
            .iter()
            .map(|row| {
                let id = row.frame_id.as_str();
                if self.seen.contains(id) || new_ids.contains(&id) {
                    return Appended::Duplicate;
                }
                new_ids.push(id);
                out.push_str(&row.csv_line());
                Appended::Written
            })
            .collect();
        if new_ids.is_empty() {
            return Ok(appended);
        }
        crate::fsutil::append_synced(&mut self.file, out.as_bytes())?;
        self.scanned = len + out.len() as u64;
        self.seen.extend(new_ids.into_iter().map(str::to_string));
        Ok(appended)
    }

    /// Reads the lines other writers appended since we last looked (their
    /// frame ids into `seen`) and cuts a torn last line; the file's length.
    fn catch_up(&mut self) -> std::io::Result<u64> {
        let mut len = self.file.metadata()?.len();
        if len < self.scanned {
            // Someone truncated or replaced the file: rescan from scratch.
            self.seen.clear();
            self.scanned = 0;
        }
        if len > self.scanned {
            let mut tail = Vec::new();
            self.file.seek(SeekFrom::Start(self.scanned))?;
            (&self.file)
                .take(len - self.scanned)
                .read_to_end(&mut tail)?;
            // Only complete lines count. Under the lock nobody is mid-write,
            // so bytes after the last newline are a torn line left by a
            // writer that failed or died: never acknowledged, cut off so the
            // line we append starts on a line of its own.
            let complete = tail
                .iter()
                .rposition(|&b| b == b'\n')
                .map(|i| i + 1)
                .unwrap_or(0);
            if complete < tail.len() {
                let cut = self.scanned + complete as u64;
                tracing::warn!(path = %self.path.display(), bytes = len - cut, "cutting a torn last line (a write that never completed)");
                self.file.set_len(cut)?;
                self.file.sync_data()?;
                len = cut;
            }
            let text = String::from_utf8_lossy(&tail[..complete]);
            for line in text.lines().skip(usize::from(self.scanned == 0)) {
                if let Some(id) = line.rsplit(',').next() {
                    self.seen.insert(id.trim_matches('"').to_string());
                }
            }
            self.scanned += complete as u64;
        }
        Ok(len)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    fn row(id: &str) -> PostureRow {
        camera_row("pi1", id)
    }

    /// A Good row of `camera` with frame id `id` (also the outputs' tests).
    pub(crate) fn camera_row(camera: &str, id: &str) -> PostureRow {
        PostureRow {
            pi_id: camera.into(),
            filename: format!("{camera}_{id}.jpg"),
            received_time: "2026-01-01T00:00:00.000000Z".into(),
            analyzed_time: "2026-01-01T00:00:01.000000Z".into(),
            neck_angle: Some(10.0),
            body_angle: Some(3.0),
            posture_status: "Good".into(),
            landmarks_detected: true,
            processed_by: "n1".into(),
            frame_id: id.into(),
        }
    }

    #[test]
    fn header_once_no_duplicates_across_reopen_and_writers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/pi1_results.csv");
        let mut a = CsvLog::open(&path).unwrap();
        assert_eq!(a.append(&row("f1")).unwrap(), Appended::Written);
        assert_eq!(a.append(&row("f1")).unwrap(), Appended::Duplicate);
        // A second writer on the same file sees f1 and adds f2.
        let mut b = CsvLog::open(&path).unwrap();
        assert_eq!(b.append(&row("f1")).unwrap(), Appended::Duplicate);
        assert_eq!(b.append(&row("f2")).unwrap(), Appended::Written);
        // The first writer catches up with f2.
        assert_eq!(a.append(&row("f2")).unwrap(), Appended::Duplicate);
        assert_eq!(a.append(&row("f3")).unwrap(), Appended::Written);
        drop((a, b));
        // After a restart.
        let mut c = CsvLog::open(&path).unwrap();
        assert_eq!(c.append(&row("f3")).unwrap(), Appended::Duplicate);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(lines[0], CSV_HEADER);
        assert!(
            lines[1].ends_with(",f1") && lines[2].ends_with(",f2") && lines[3].ends_with(",f3")
        );
    }

    #[test]
    fn a_group_of_lines_goes_out_once_each_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pi1_results.csv");
        let mut log = CsvLog::open(&path).unwrap();
        log.append(&row("f1")).unwrap();
        let (f1, f2, f3) = (row("f1"), row("f2"), row("f3"));
        let got = log.append_many(&[&f2, &f1, &f3, &f2]).unwrap();
        use Appended::{Duplicate, Written};
        assert_eq!(got, [Written, Duplicate, Written, Duplicate]);
        // Nothing new: nothing written.
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(
            log.append_many(&[&f3, &f1]).unwrap(),
            [Duplicate, Duplicate]
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
        let text = std::fs::read_to_string(&path).unwrap();
        let ids: Vec<&str> = text
            .lines()
            .skip(1)
            .map(|l| l.rsplit(',').next().unwrap())
            .collect();
        assert_eq!(ids, ["f1", "f2", "f3"]);
    }

    #[test]
    fn a_line_appended_after_a_torn_line_stays_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pi1_results.csv");
        let mut a = CsvLog::open(&path).unwrap();
        a.append(&row("f1")).unwrap();
        drop(a);
        // A writer died mid-line (disk full, power loss), in the middle of a
        // multi-byte character even.
        let mut torn = row("f2").csv_line().into_bytes();
        torn.truncate(12);
        torn.extend_from_slice("é".as_bytes().split_at(1).0);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&torn)
            .unwrap();
        let mut b = CsvLog::open(&path).unwrap();
        assert_eq!(b.append(&row("f3")).unwrap(), Appended::Written);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(format!("{}\n", lines[2]), row("f3").csv_line());
    }

    #[test]
    fn concurrent_threads_write_whole_lines_and_one_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pi1_results.csv");
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let mut log = CsvLog::open(&path).unwrap();
                    for i in 0..25 {
                        // Every thread also tries the shared ids.
                        log.append(&row(&format!("t{t}-{i}"))).unwrap();
                        log.append(&row(&format!("shared-{i}"))).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.iter().filter(|l| **l == CSV_HEADER).count(), 1);
        assert_eq!(lines.len(), 1 + 4 * 25 + 25);
        assert!(lines[1..].iter().all(|l| l.split(',').count() == 10));
    }
}

//! Small file helpers shared by the append-only outputs (CSV log, spool):
//! opening, appending a whole line durably, and cutting a torn last line.
//!
//! A line file is only ever read up to its last newline. Whatever follows
//! it is a fragment of a write that never completed (disk full, power loss)
//! and was therefore never acknowledged; appending after it would glue the
//! next, acknowledged line onto the fragment and make both unreadable. So a
//! fragment is cut off when the file is opened, and a failed append cuts the
//! file back to where it started.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Opens `path` for reading and appending, creating it and its parent
/// directories when missing.
pub(crate) fn open_append(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
}

/// What [`append_synced`] needs from a file. A trait so tests can make a
/// real file fail half-way through a write.
pub(crate) trait AppendTarget {
    /// Current length in bytes.
    fn current_len(&self) -> io::Result<u64>;
    /// Appends all of `buf` (an `O_APPEND` file).
    fn append_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// `fdatasync`.
    fn sync(&self) -> io::Result<()>;
    /// Truncates to `len` bytes.
    fn truncate(&self, len: u64) -> io::Result<()>;
}

impl AppendTarget for File {
    fn current_len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn append_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write_all(buf)
    }

    fn sync(&self) -> io::Result<()> {
        self.sync_data()
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.set_len(len)
    }
}

/// Appends `bytes` (whole lines) and fsyncs. When the write or the fsync
/// fails, the file is cut back to its length before the call, so no
/// fragment stays behind for the next append to continue. If even that
/// fails, the caller must [`cut_torn_tail`] before its next append.
pub(crate) fn append_synced(f: &mut impl AppendTarget, bytes: &[u8]) -> io::Result<()> {
    let before = f.current_len()?;
    let result = f.append_all(bytes).and_then(|()| f.sync());
    if let Err(e) = result {
        if let Err(cut) = f.truncate(before).and_then(|()| f.sync()) {
            tracing::warn!(error = %cut, "could not cut a failed append back; the torn line is cut before the next one");
        }
        return Err(e);
    }
    Ok(())
}

/// Cuts whatever follows the last newline of `file` (a torn last line) and
/// fsyncs; returns the number of bytes removed (0 when the file is whole).
pub(crate) fn cut_torn_tail(file: &File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    let whole = whole_lines_len(file, len)?;
    if whole < len {
        file.set_len(whole)?;
        file.sync_data()?;
    }
    Ok(len - whole)
}

/// Length of `file`'s first `len` bytes up to and including the last newline.
fn whole_lines_len(file: &File, len: u64) -> io::Result<u64> {
    let mut end = len;
    let mut buf = vec![0u8; 8192];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real file whose next append stops after `budget` bytes with ENOSPC.
    struct DiskFull {
        file: File,
        budget: usize,
    }

    impl AppendTarget for DiskFull {
        fn current_len(&self) -> io::Result<u64> {
            self.file.current_len()
        }
        fn append_all(&mut self, buf: &[u8]) -> io::Result<()> {
            let n = buf.len().min(self.budget);
            self.file.write_all(&buf[..n])?;
            self.budget -= n;
            if n < buf.len() {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            Ok(())
        }
        fn sync(&self) -> io::Result<()> {
            self.file.sync()
        }
        fn truncate(&self, len: u64) -> io::Result<()> {
            self.file.truncate(len)
        }
    }

    #[test]
    fn a_failed_append_leaves_no_fragment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lines");
        let mut f = DiskFull {
            file: open_append(&path).unwrap(),
            budget: 10,
        };
        append_synced(&mut f, b"one\n").unwrap();
        let err = append_synced(&mut f, b"two two two\n").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(28));
        // Space again: the next line starts on a line of its own.
        f.budget = usize::MAX;
        append_synced(&mut f, b"three\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one\nthree\n");
    }

    #[test]
    fn cut_torn_tail_keeps_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lines");
        let f = open_append(&path).unwrap();
        assert_eq!(cut_torn_tail(&f).unwrap(), 0);
        std::fs::write(&path, b"fragment only").unwrap();
        assert_eq!(cut_torn_tail(&f).unwrap(), 13);
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        // A last line longer than the read chunk.
        let mut text = b"a\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', 20_000));
        std::fs::write(&path, &text).unwrap();
        assert_eq!(cut_torn_tail(&f).unwrap(), 20_000);
        assert_eq!(std::fs::read(&path).unwrap(), b"a\n");
        std::fs::write(&path, b"a\nb\n").unwrap();
        assert_eq!(cut_torn_tail(&f).unwrap(), 0);
    }
}

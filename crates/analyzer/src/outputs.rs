//! Where a frame's annotated image goes (`--outputs db,files`), the local
//! files (`analyzed_images/analyzed_images_from_<camera>/*.jpg` and
//! `<camera>_results.csv`, the seeds' layout), and how a failure to write
//! them is classified.
//!
//! File outputs are written on the blocking pool (they fsync), a group of
//! frames at a time ([`FileOutputs::write_group`]): every image file is
//! written, then each is fsynced, renamed into place, and each touched
//! folder fsynced once; then each camera's CSV lines go out in one append
//! and one fsync. A frame's files are durable before the database commit
//! that records its row, and that commit comes before its acknowledgement.
//! At most
//! [`MAX_OPEN_CSV`] CSV files stay open, least recently used closed first, so
//! an analyzer of many cameras never runs out of file descriptors; a CSV
//! handle that failed is dropped and reopened on the next try (the file may
//! have been replaced).

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::csvlog::{Appended, CsvError, CsvLog};
use crate::deadletter::sanitize;
use crate::fsutil::copy_io_error;
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

impl Clone for OutputError {
    fn clone(&self) -> Self {
        match self {
            OutputError::Image { path, source } => OutputError::Image {
                path: path.clone(),
                source: copy_io_error(source),
            },
            OutputError::Csv(e) => OutputError::Csv(e.clone()),
        }
    }
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

    /// Writes the local files of a group of frames (`(row, annotated JPEG)`,
    /// in arrival order) with one fsync per image, one per touched folder
    /// and one per camera's CSV file; for each frame, its image's path and
    /// whether its CSV line was new, or why it has no files.
    ///
    /// `staged[i]`, when given, says frame `i`'s image is already in its
    /// temporary file ([`FileOutputs::stage_image`]) and fsynced (`Ok`), or
    /// why that failed; those images are only renamed into place here.
    ///
    /// Images go through a temporary file and a rename, so a reader never
    /// sees half an image, and the folder is fsynced after the renames, so
    /// they survive a power loss. A camera's frames stay in order: once one
    /// fails on an error that may clear, its later frames in the group are
    /// [`NotWritten::Held`] (the caller retries them after it). A frame
    /// whose error can never clear does not hold the others back.
    pub fn write_group(
        &mut self,
        items: &[(&PostureRow, &[u8])],
        staged: &mut [Option<io::Result<()>>],
    ) -> Vec<Result<Written, NotWritten>> {
        let mut group = Group::new(items);
        let images = group.write_images(&self.out, staged);
        let images = group.sync_images(images);
        group.sync_dirs(images);
        for camera in group.cameras() {
            let rows = group.live_rows(&camera);
            if rows.is_empty() {
                continue;
            }
            let lines: Vec<&PostureRow> = rows.iter().map(|&i| items[i].0).collect();
            match self.append_csv(&camera, &lines) {
                Ok(appended) => {
                    for (i, a) in rows.into_iter().zip(appended) {
                        group.done(i, a);
                    }
                }
                Err(e) => {
                    for i in rows {
                        group.fail(i, e.clone().into());
                    }
                }
            }
        }
        group.finish(&self.out)
    }

    /// Where `row`'s annotated image goes.
    pub fn image_path(&self, row: &PostureRow) -> PathBuf {
        Self::images_dir(&self.out, &row.pi_id).join(&row.filename)
    }

    /// Writes `row`'s image to its temporary file ahead of its group's
    /// commit and returns the file, not yet fsynced: the caller fsyncs it
    /// (in the background, while the next frames of the group are
    /// analysed) and hands the outcome to [`FileOutputs::write_group`].
    pub fn stage_image(&self, row: &PostureRow, jpeg: &[u8]) -> io::Result<File> {
        let path = self.image_path(row);
        let dir = path.parent().unwrap_or(&self.out);
        write_unsynced(dir, &tmp_path(&path), jpeg)
    }

    /// Appends `rows` (all of `camera`) to its CSV file in one write and one fsync.
    fn append_csv(
        &mut self,
        camera: &str,
        rows: &[&PostureRow],
    ) -> Result<Vec<Appended>, CsvError> {
        self.tick += 1;
        let i = match self.csv.iter().position(|(c, _, _)| c == camera) {
            Some(i) => i,
            None => {
                if self.csv.len() >= self.max_open
                    && let Some(lru) = (0..self.csv.len()).min_by_key(|&i| self.csv[i].2)
                {
                    self.csv.swap_remove(lru);
                }
                let log = CsvLog::open(&Self::csv_path(&self.out, camera))?;
                self.csv.push((camera.to_string(), log, self.tick));
                self.csv.len() - 1
            }
        };
        self.csv[i].2 = self.tick;
        match self.csv[i].1.append_many(rows) {
            Ok(a) => Ok(a),
            Err(e) => {
                // Reopen on the next try: the file may have been replaced.
                self.csv.swap_remove(i);
                Err(e)
            }
        }
    }
}

/// One frame's local files: the annotated image's path and whether its CSV
/// line was new.
pub type Written = (PathBuf, Appended);

/// Why a frame of a group got no local files.
#[derive(Debug)]
pub enum NotWritten {
    /// Writing them failed.
    Failed(OutputError),
    /// Not tried to the end: an earlier frame of the same camera in the
    /// group failed on an error that may clear, and a camera's frames are
    /// recorded in order.
    Held,
}

/// An image in its temporary file: still to fsync (`file`), or fsynced.
struct Pending {
    item: usize,
    tmp: PathBuf,
    path: PathBuf,
    file: Option<File>,
}

/// The state of one [`FileOutputs::write_group`] call.
struct Group<'a> {
    items: &'a [(&'a PostureRow, &'a [u8])],
    /// Each frame's result once known.
    results: Vec<Option<Result<Written, NotWritten>>>,
    /// Each frame's image path (set when its image is written).
    paths: Vec<Option<PathBuf>>,
    /// The same frame earlier in the group (a redelivery arriving at once):
    /// its image is that frame's.
    same_as: Vec<Option<usize>>,
    /// Per camera, its first frame that failed on an error that may clear.
    stopped: HashMap<&'a str, usize>,
}

impl<'a> Group<'a> {
    fn new(items: &'a [(&'a PostureRow, &'a [u8])]) -> Self {
        Self {
            items,
            results: items.iter().map(|_| None).collect(),
            paths: vec![None; items.len()],
            same_as: vec![None; items.len()],
            stopped: HashMap::new(),
        }
    }

    fn camera(&self, i: usize) -> &'a str {
        &self.items[i].0.pi_id
    }

    /// Whether frame `i` still goes on: no result yet, and no earlier
    /// frame of its camera stopped on an error that may clear.
    fn live(&mut self, i: usize) -> bool {
        if self.results[i].is_some() {
            return false;
        }
        if self.stopped.get(self.camera(i)).is_some_and(|&k| k < i) {
            self.results[i] = Some(Err(NotWritten::Held));
            return false;
        }
        true
    }

    fn fail(&mut self, i: usize, e: OutputError) {
        if !self.live(i) {
            return;
        }
        if !e.is_permanent() {
            let k = self.stopped.entry(self.camera(i)).or_insert(i);
            *k = (*k).min(i);
        }
        self.results[i] = Some(Err(NotWritten::Failed(e)));
    }

    fn fail_image(&mut self, i: usize, path: &Path, source: io::Error) {
        let path = path.to_path_buf();
        self.fail(i, OutputError::Image { path, source });
    }

    fn done(&mut self, i: usize, appended: Appended) {
        let origin = self.same_as[i].unwrap_or(i);
        match self.paths[origin].clone() {
            Some(path) if self.live(i) => self.results[i] = Some(Ok((path, appended))),
            _ => {}
        }
    }

    /// Step 1: every image in its temporary file: staged ones as they are,
    /// the others written now (not yet fsynced).
    fn write_images(&mut self, out: &Path, staged: &mut [Option<io::Result<()>>]) -> Vec<Pending> {
        let mut pending = Vec::with_capacity(self.items.len());
        let mut first_of: HashMap<PathBuf, usize> = HashMap::new();
        for i in 0..self.items.len() {
            let (row, jpeg) = self.items[i];
            let dir = FileOutputs::images_dir(out, &row.pi_id);
            let path = dir.join(&row.filename);
            let tmp = tmp_path(&path);
            let staged = staged.get_mut(i).and_then(Option::take);
            if !self.live(i) {
                if staged.is_some() {
                    let _ = std::fs::remove_file(&tmp);
                }
                continue;
            }
            if let Some(&j) = first_of.get(&path) {
                // The same frame twice in one group: one image file.
                self.same_as[i] = Some(j);
                continue;
            }
            let file = match staged {
                Some(Ok(())) => Ok(None),
                Some(Err(e)) => Err(e),
                None => write_unsynced(&dir, &tmp, jpeg).map(Some),
            };
            match file {
                Ok(file) => {
                    first_of.insert(path.clone(), i);
                    pending.push(Pending {
                        item: i,
                        tmp,
                        path,
                        file,
                    });
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    self.fail_image(i, &path, e);
                }
            }
        }
        pending
    }

    /// Step 2: each image fsynced (unless it was staged and fsynced
    /// already), then renamed into place.
    fn sync_images(&mut self, pending: Vec<Pending>) -> Vec<Pending> {
        let mut renamed = Vec::with_capacity(pending.len());
        for p in pending {
            if !self.live(p.item) {
                let _ = std::fs::remove_file(&p.tmp);
                continue;
            }
            let synced = p.file.as_ref().map_or(Ok(()), File::sync_data);
            match synced.and_then(|()| std::fs::rename(&p.tmp, &p.path)) {
                Ok(()) => renamed.push(p),
                Err(e) => {
                    let _ = std::fs::remove_file(&p.tmp);
                    self.fail_image(p.item, &p.path, e);
                }
            }
        }
        renamed
    }

    /// Step 3: each folder that got images fsynced once, so the renames
    /// are durable; the images' paths recorded.
    fn sync_dirs(&mut self, renamed: Vec<Pending>) {
        let mut dirs: Vec<(PathBuf, Vec<Pending>)> = Vec::new();
        for p in renamed {
            let dir = p.path.parent().map(Path::to_path_buf).unwrap_or_default();
            match dirs.iter_mut().find(|(d, _)| *d == dir) {
                Some((_, ps)) => ps.push(p),
                None => dirs.push((dir, vec![p])),
            }
        }
        for (dir, ps) in dirs {
            match File::open(&dir).and_then(|d| d.sync_all()) {
                Ok(()) => {
                    for p in ps {
                        self.paths[p.item] = Some(p.path);
                    }
                }
                Err(e) => {
                    for p in ps {
                        self.fail_image(p.item, &dir, copy_io_error(&e));
                    }
                }
            }
        }
    }

    /// Cameras with frames in the group, in order of their first frame.
    fn cameras(&self) -> Vec<String> {
        let mut cameras: Vec<String> = Vec::new();
        for (row, _) in self.items {
            if !cameras.contains(&row.pi_id) {
                cameras.push(row.pi_id.clone());
            }
        }
        cameras
    }

    /// Frames of `camera` whose images are in place, in order.
    fn live_rows(&mut self, camera: &str) -> Vec<usize> {
        let mut rows = Vec::new();
        for i in 0..self.items.len() {
            if self.camera(i) != camera || !self.live(i) {
                continue;
            }
            let origin = self.same_as[i].unwrap_or(i);
            if self.paths[origin].is_some() {
                rows.push(i);
            } else if let Some(Some(Err(NotWritten::Failed(e)))) = self.results.get(origin) {
                // The same frame earlier in the group failed: so does this one.
                let e = e.clone();
                self.fail(i, e);
            } else {
                self.results[i] = Some(Err(NotWritten::Held));
            }
        }
        rows
    }

    fn finish(self, out: &Path) -> Vec<Result<Written, NotWritten>> {
        self.results
            .into_iter()
            .zip(self.items)
            .map(|(r, (row, _))| {
                r.unwrap_or_else(|| {
                    // Every frame gets a result above; this only guards the invariant.
                    let path = FileOutputs::images_dir(out, &row.pi_id).join(&row.filename);
                    let source = io::Error::other("no result for this frame");
                    Err(NotWritten::Failed(OutputError::Image { path, source }))
                })
            })
            .collect()
    }
}

/// The temporary file an image is written to before its rename.
fn tmp_path(path: &Path) -> PathBuf {
    path.with_extension("jpg.tmp")
}

/// Creates `dir` if needed and writes `bytes` to `tmp`, not yet fsynced.
fn write_unsynced(dir: &Path, tmp: &Path, bytes: &[u8]) -> io::Result<File> {
    std::fs::create_dir_all(dir)?;
    let mut f = File::create(tmp)?;
    f.write_all(bytes)?;
    Ok(f)
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

    fn row(camera: &str, id: &str) -> PostureRow {
        crate::csvlog::tests::camera_row(camera, id)
    }

    fn csv_ids(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .map(|l| l.rsplit(',').next().unwrap().to_string())
            .collect()
    }

    #[test]
    fn a_group_writes_every_image_and_each_cameras_lines_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = FileOutputs::new(dir.path().to_path_buf(), 4);
        let rows = [
            row("pa", "a1"),
            row("pb", "b1"),
            row("pa", "a2"),
            // The same frame twice in one group (a redelivery right behind it).
            row("pa", "a1"),
        ];
        let items: Vec<(&PostureRow, &[u8])> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                (
                    r,
                    [b"jpeg-a1".as_slice(), b"jpeg-b1", b"jpeg-a2", b"jpeg-a1"][i],
                )
            })
            .collect();
        let written = files.write_group(&items, &mut []);
        let ok: Vec<_> = written.into_iter().map(|r| r.unwrap()).collect();
        let appended: Vec<_> = ok.iter().map(|(_, a)| *a).collect();
        assert_eq!(
            appended,
            [
                Appended::Written,
                Appended::Written,
                Appended::Written,
                Appended::Duplicate
            ]
        );
        assert_eq!(ok[0].0, ok[3].0);
        for ((path, _), want) in ok.iter().zip([&b"jpeg-a1"[..], b"jpeg-b1", b"jpeg-a2"]) {
            assert_eq!(std::fs::read(path).unwrap(), want);
        }
        let out = dir.path();
        assert_eq!(csv_ids(&FileOutputs::csv_path(out, "pa")), ["a1", "a2"]);
        assert_eq!(csv_ids(&FileOutputs::csv_path(out, "pb")), ["b1"]);
        // No temporary file stays behind.
        let leftovers: Vec<_> = std::fs::read_dir(FileOutputs::images_dir(out, "pa"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        // Written again (a redelivered group): nothing new in the CSV files.
        let again = files.write_group(&items, &mut []);
        assert!(
            again
                .iter()
                .all(|r| matches!(r, Ok((_, Appended::Duplicate))))
        );
        assert_eq!(csv_ids(&FileOutputs::csv_path(out, "pa")), ["a1", "a2"]);
    }

    #[test]
    fn a_failure_that_may_clear_holds_back_only_its_cameras_later_frames() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        // Camera pa's CSV is full (ENOSPC): its frames wait, pb's go on.
        std::os::unix::fs::symlink("/dev/full", FileOutputs::csv_path(out, "pa")).unwrap();
        let mut files = FileOutputs::new(out.to_path_buf(), 4);
        let rows = [row("pa", "a1"), row("pb", "b1"), row("pa", "a2")];
        let items: Vec<(&PostureRow, &[u8])> = rows.iter().map(|r| (r, &b"jpeg"[..])).collect();
        let written = files.write_group(&items, &mut []);
        match &written[0] {
            Err(NotWritten::Failed(e)) => assert!(!e.is_permanent(), "{e:?}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(written[1], Ok((_, Appended::Written))));
        assert!(matches!(written[2], Err(NotWritten::Held)));
        assert_eq!(csv_ids(&FileOutputs::csv_path(out, "pb")), ["b1"]);
        // Space again: the held frames go through, once, in order.
        std::fs::remove_file(FileOutputs::csv_path(out, "pa")).unwrap();
        let retry = [(&rows[0], &b"jpeg"[..]), (&rows[2], &b"jpeg"[..])];
        assert!(files.write_group(&retry, &mut []).iter().all(Result::is_ok));
        assert_eq!(csv_ids(&FileOutputs::csv_path(out, "pa")), ["a1", "a2"]);
    }

    #[test]
    fn a_failure_that_never_clears_fails_each_frame_and_holds_none_back() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        // A directory where camera pc's CSV file should be: EISDIR, forever.
        std::fs::create_dir_all(FileOutputs::csv_path(out, "pc")).unwrap();
        let mut files = FileOutputs::new(out.to_path_buf(), 4);
        let rows = [row("pc", "c1"), row("pc", "c2"), row("pd", "d1")];
        let items: Vec<(&PostureRow, &[u8])> = rows.iter().map(|r| (r, &b"jpeg"[..])).collect();
        let written = files.write_group(&items, &mut []);
        for r in &written[..2] {
            assert!(
                matches!(r, Err(NotWritten::Failed(e)) if e.is_permanent()),
                "{r:?}"
            );
        }
        assert!(written[2].is_ok());
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

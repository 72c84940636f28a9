//! `posture-farm results export`: the seeds' layout rebuilt from the
//! database, one set per camera however many analyzers (pods, nodes)
//! recorded it:
//!
//! ```text
//!  <out>/<camera>_results.csv                                   (or .jsonl)
//!  <out>/analyzed_images/analyzed_images_from_<camera>/<filename>.jpg
//! ```
//!
//! Rows come in camera, then arrival-time order (the `(pi_id,
//! received_time)` index), streamed one at a time with the image joined in,
//! so memory stays constant however many rows there are. The CSV has the
//! analyzer's header and lines byte for byte; images are the stored JPEGs.
//! A library API so `down` can collect results with it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use futures_core::Stream;
use serde::Serialize;
use sqlx::Row as _;

use crate::db::{Database, DbError, Pool, StoredRow, stored_row};
use crate::deadletter::sanitize;
use crate::outputs::FileOutputs;
use crate::record::{CSV_HEADER, PostureRow, row_time};

/// The results file format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExportFormat {
    /// `<camera>_results.csv`, as the analyzer writes it.
    #[default]
    Csv,
    /// `<camera>_results.jsonl`: one JSON object per row.
    Jsonl,
}

impl FromStr for ExportFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "csv" => Ok(Self::Csv),
            "jsonl" | "json-lines" | "ndjson" => Ok(Self::Jsonl),
            other => Err(format!("unknown format {other:?} (csv, jsonl)")),
        }
    }
}

/// What to export, and where.
#[derive(Clone, Debug, Default)]
pub struct ExportOptions {
    /// Output folder (created).
    pub out: PathBuf,
    /// Only these cameras (all when empty).
    pub cameras: Vec<String>,
    /// Only frames received at or after this.
    pub since: Option<jiff::Timestamp>,
    /// Only frames received before this.
    pub until: Option<jiff::Timestamp>,
    /// CSV or JSON lines.
    pub format: ExportFormat,
    /// Write the annotated images too.
    pub images: bool,
}

/// What an export wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// Cameras, in the order written.
    pub cameras: Vec<String>,
    /// Rows written.
    pub rows: u64,
    /// Images written (rows whose image was pruned or never stored have none).
    pub images: u64,
}

/// An export failure.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the database.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Writing a file.
    #[error("writing {path}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A JSON-lines record.
#[derive(Serialize)]
struct JsonRow<'a> {
    id: i64,
    #[serde(flatten)]
    row: &'a PostureRow,
    /// The exported image, relative to the output folder.
    image: Option<String>,
}

/// Writes one camera's results file and images.
struct CameraSet {
    camera: String,
    path: PathBuf,
    file: BufWriter<File>,
    images: PathBuf,
}

impl CameraSet {
    fn create(out: &Path, camera: &str, format: ExportFormat) -> Result<Self, ExportError> {
        let path = match format {
            ExportFormat::Csv => FileOutputs::csv_path(out, camera),
            ExportFormat::Jsonl => out.join(format!("{}_results.jsonl", sanitize(camera))),
        };
        let io = |source| ExportError::Io {
            path: path.clone(),
            source,
        };
        let mut file = BufWriter::new(File::create(&path).map_err(io)?);
        if format == ExportFormat::Csv {
            writeln!(file, "{CSV_HEADER}").map_err(io)?;
        }
        Ok(Self {
            camera: camera.to_string(),
            images: FileOutputs::images_dir(out, camera),
            path,
            file,
        })
    }

    fn finish(mut self) -> Result<(), ExportError> {
        let io = |source| ExportError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.flush().map_err(io)?;
        self.file.get_ref().sync_all().map_err(io)
    }
}

/// Exports the rows (and images) `opts` selects; see the module docs.
pub async fn export(db: &mut Database, opts: &ExportOptions) -> Result<ExportSummary, ExportError> {
    let layout = db.ensure_schema().await?;
    std::fs::create_dir_all(&opts.out).map_err(|source| ExportError::Io {
        path: opts.out.clone(),
        source,
    })?;
    let pool = db.pool().clone();
    let mut conditions = Vec::new();
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    if !opts.cameras.is_empty() {
        let list: Vec<String> = opts
            .cameras
            .iter()
            .map(|_| placeholder(&pool, next()))
            .collect();
        conditions.push(format!("l.pi_id IN ({})", list.join(", ")));
    }
    if opts.since.is_some() {
        let p = crate::schema::time_param(&pool, layout, next());
        conditions.push(format!("l.received_time >= {p}"));
    }
    if opts.until.is_some() {
        let p = crate::schema::time_param(&pool, layout, next());
        conditions.push(format!("l.received_time < {p}"));
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let tail = format!("{filter} ORDER BY l.pi_id, l.received_time, l.id");
    let sql = crate::schema::select_rows(&pool, layout, &tail, opts.images);
    let binds: Vec<String> = opts
        .cameras
        .iter()
        .cloned()
        .chain(opts.since.map(row_time))
        .chain(opts.until.map(row_time))
        .collect();
    let target = db.target().to_string();
    let err = |source| {
        ExportError::Db(DbError::Query {
            target: target.clone(),
            source,
        })
    };
    let mut writer = Writer {
        opts,
        current: None,
        summary: ExportSummary::default(),
    };
    // The same streaming loop on either pool (their row types differ).
    macro_rules! stream_rows {
        ($p:expr) => {{
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
            for b in &binds {
                q = q.bind(b);
            }
            let mut rows = q.fetch($p);
            while let Some(r) = next_row(&mut rows).await {
                let r = r.map_err(err)?;
                let stored = stored_row!(&r).map_err(err)?;
                let jpeg: Option<Vec<u8>> = if opts.images {
                    r.try_get("jpeg").map_err(err)?
                } else {
                    None
                };
                writer.write(&stored, jpeg.as_deref())?;
            }
        }};
    }
    match &pool {
        Pool::Sqlite(p) => stream_rows!(p),
        Pool::Postgres(p) => stream_rows!(p),
    }
    if let Some(set) = writer.current.take() {
        set.finish()?;
    }
    Ok(writer.summary)
}

fn placeholder(pool: &Pool, n: usize) -> String {
    match pool {
        Pool::Sqlite(_) => format!("?{n}"),
        Pool::Postgres(_) => format!("${n}"),
    }
}

/// The next item of a row stream.
async fn next_row<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *stream).poll_next(cx)).await
}

struct Writer<'a> {
    opts: &'a ExportOptions,
    current: Option<CameraSet>,
    summary: ExportSummary,
}

impl Writer<'_> {
    fn write(&mut self, stored: &StoredRow, jpeg: Option<&[u8]>) -> Result<(), ExportError> {
        let row = &stored.row;
        if self.current.as_ref().is_none_or(|c| c.camera != row.pi_id) {
            if let Some(done) = self.current.take() {
                done.finish()?;
            }
            self.current = Some(CameraSet::create(
                &self.opts.out,
                &row.pi_id,
                self.opts.format,
            )?);
            self.summary.cameras.push(row.pi_id.clone());
        }
        let Some(set) = self.current.as_mut() else {
            return Ok(());
        };
        let mut image = None;
        if let Some(jpeg) = jpeg {
            let path = set.images.join(sanitize(&row.filename));
            let io = |source| ExportError::Io {
                path: path.clone(),
                source,
            };
            std::fs::create_dir_all(&set.images).map_err(io)?;
            std::fs::write(&path, jpeg).map_err(io)?;
            image = path
                .strip_prefix(&self.opts.out)
                .ok()
                .map(|p| p.display().to_string());
            self.summary.images += 1;
        }
        let io = |source| ExportError::Io {
            path: set.path.clone(),
            source,
        };
        match self.opts.format {
            ExportFormat::Csv => set.file.write_all(row.csv_line().as_bytes()).map_err(io)?,
            ExportFormat::Jsonl => {
                let line = serde_json::to_string(&JsonRow {
                    id: stored.id,
                    row,
                    image,
                })
                .map_err(|e| io(std::io::Error::other(e)))?;
                writeln!(set.file, "{line}").map_err(io)?;
            }
        }
        self.summary.rows += 1;
        Ok(())
    }
}

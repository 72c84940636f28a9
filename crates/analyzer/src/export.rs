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
//! A library API so `down` can collect results with it; the selection
//! itself ([`RowFilter`] → [`Rows`]: the SQL, its binds, the time text and
//! the decoding) is public too, so the dashboard's CSV download reads the
//! very same rows and bytes.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use futures_core::Stream;
use futures_core::stream::BoxStream;
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

/// Which rows to read: the one selection `results export` and the
/// dashboard's CSV download share, so the two give the same bytes.
#[derive(Clone, Debug, Default)]
pub struct RowFilter {
    /// Only these cameras (all when empty).
    pub cameras: Vec<String>,
    /// Only frames received at or after this.
    pub since: Option<jiff::Timestamp>,
    /// Only frames received before this.
    pub until: Option<jiff::Timestamp>,
    /// At most this many rows (all when `None`).
    pub limit: Option<u64>,
}

/// One row read by [`Rows`], with its annotated image when asked for (and
/// still kept).
#[derive(Clone, Debug, PartialEq)]
pub struct ExportRow {
    /// The row; times as RFC 3339 UTC text with microseconds, whatever the
    /// column types (legacy TIMESTAMP, INTEGER angles and NULLs included).
    pub stored: StoredRow,
    /// The JPEG from `posture_image`.
    pub jpeg: Option<Vec<u8>>,
}

enum RowStream<'a> {
    Sqlite(BoxStream<'a, Result<sqlx::sqlite::SqliteRow, sqlx::Error>>),
    Postgres(BoxStream<'a, Result<sqlx::postgres::PgRow, sqlx::Error>>),
}

/// The rows a [`RowFilter`] selects, in camera, then arrival-time, then id
/// order (the `(pi_id, received_time)` index), streamed one at a time: the
/// query text, its binds and the decoding of `results export`. Read-only:
/// it runs on a pool whose sessions refuse writes.
pub struct Rows<'a> {
    stream: RowStream<'a>,
    images: bool,
}

impl<'a> Rows<'a> {
    /// Starts reading through `pool`; with `images`, each row carries its
    /// JPEG. The table is not migrated (see [`Database::ensure_schema`]).
    pub async fn open(
        pool: &'a Pool,
        filter: &RowFilter,
        images: bool,
    ) -> Result<Self, sqlx::Error> {
        let layout = crate::schema::layout(pool).await?;
        let mut conditions = Vec::new();
        let mut n = 0;
        let mut next = || {
            n += 1;
            n
        };
        if !filter.cameras.is_empty() {
            let list: Vec<String> = filter
                .cameras
                .iter()
                .map(|_| placeholder(pool, next()))
                .collect();
            conditions.push(format!("l.pi_id IN ({})", list.join(", ")));
        }
        if filter.since.is_some() {
            let p = crate::schema::time_param(pool, layout, next());
            conditions.push(format!("l.received_time >= {p}"));
        }
        if filter.until.is_some() {
            let p = crate::schema::time_param(pool, layout, next());
            conditions.push(format!("l.received_time < {p}"));
        }
        let mut tail = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        tail.push_str(" ORDER BY l.pi_id, l.received_time, l.id");
        if let Some(limit) = filter.limit {
            tail.push_str(&format!(" LIMIT {limit}"));
        }
        let sql = crate::schema::select_rows(pool, layout, &tail, images);
        let binds: Vec<String> = filter
            .cameras
            .iter()
            .cloned()
            .chain(filter.since.map(row_time))
            .chain(filter.until.map(row_time))
            .collect();
        macro_rules! fetch {
            ($p:expr) => {{
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for b in binds {
                    q = q.bind(b);
                }
                q.fetch($p)
            }};
        }
        let stream = match pool {
            Pool::Sqlite(p) => RowStream::Sqlite(fetch!(p)),
            Pool::Postgres(p) => RowStream::Postgres(fetch!(p)),
        };
        Ok(Self { stream, images })
    }

    /// The next row; `None` after the last.
    pub async fn next(&mut self) -> Option<Result<ExportRow, sqlx::Error>> {
        let images = self.images;
        macro_rules! decode {
            ($rows:expr) => {{
                let r = match next_row($rows).await? {
                    Ok(r) => r,
                    Err(e) => return Some(Err(e)),
                };
                let decoded = stored_row!(&r).and_then(|stored| {
                    let jpeg = if images { r.try_get("jpeg")? } else { None };
                    Ok(ExportRow { stored, jpeg })
                });
                Some(decoded)
            }};
        }
        match &mut self.stream {
            RowStream::Sqlite(rows) => decode!(rows),
            RowStream::Postgres(rows) => decode!(rows),
        }
    }
}

/// Exports the rows (and images) `opts` selects; see the module docs.
pub async fn export(db: &mut Database, opts: &ExportOptions) -> Result<ExportSummary, ExportError> {
    db.ensure_schema().await?;
    std::fs::create_dir_all(&opts.out).map_err(|source| ExportError::Io {
        path: opts.out.clone(),
        source,
    })?;
    let target = db.target().to_string();
    let err = |source| {
        ExportError::Db(DbError::Query {
            target: target.clone(),
            source,
        })
    };
    let filter = RowFilter {
        cameras: opts.cameras.clone(),
        since: opts.since,
        until: opts.until,
        limit: None,
    };
    let mut rows = Rows::open(db.pool(), &filter, opts.images)
        .await
        .map_err(err)?;
    let mut writer = Writer {
        opts,
        current: None,
        summary: ExportSummary::default(),
    };
    while let Some(r) = rows.next().await {
        let r = r.map_err(err)?;
        writer.write(&r.stored, r.jpeg.as_deref())?;
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

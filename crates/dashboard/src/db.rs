//! Read-only access to `posture_log` and `posture_image`, SQLite or
//! PostgreSQL. Every query is bounded (a `LIMIT`, and a time range where
//! rows are scanned) and served by an index of the schema contract: the
//! primary key, `posture_log (pi_id, received_time)`, `posture_image
//! (frame_id)` and `posture_image (pi_id, analyzed_time)`.
//!
//! Read-only twice over: SQLite files are opened read-only (`mode=ro`), and
//! PostgreSQL sessions start with `default_transaction_read_only = on` (a
//! read-only role is the recommended second lock, see the README). A
//! missing `posture_image` table (older databases, or retention that has not
//! run yet) reads as "no image", a missing `posture_log` as "no camera".

use std::collections::HashSet;
use std::time::Duration;

use futures::TryStreamExt as _;
use jiff::Timestamp;
use posture_analyzer::record::{CSV_HEADER, PostureRow};
use posture_analyzer::store::DbTarget;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Row as _};
use tokio::sync::mpsc;

use crate::model::{Frame, epoch, from_epoch, parse_db_time, sqlite_key, sqlite_key_ceil};

/// Most cameras listed (the overview shows one card each).
pub const MAX_CAMERAS: i64 = 1000;
/// Most rows read for one camera's 24-hour statistics at a refresh
/// (10 frames/s for a day).
pub const MAX_FILL_ROWS: i64 = 1_000_000;
/// Most groups of an aggregated plot.
pub const MAX_BUCKETS: i64 = 10_000;
/// Most rows one CSV export streams.
pub const MAX_EXPORT_ROWS: i64 = 10_000_000;

/// A database problem, with where it happened.
#[derive(Debug, thiserror::Error)]
#[error("{what} on {target}")]
pub struct DbError {
    what: &'static str,
    target: String,
    #[source]
    source: sqlx::Error,
}

impl DbError {
    /// What failed, for people (the query's purpose and the database).
    pub fn what(&self) -> &'static str {
        self.what
    }
}

#[derive(Clone, Debug)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Read-only connections to the results database.
#[derive(Clone, Debug)]
pub struct ReadOnlyDb {
    pool: Pool,
    target: String,
}

/// Time-bucketed plot data: one group of frames.
#[derive(Clone, Debug, PartialEq)]
pub struct Bucket {
    /// Start of the bucket.
    pub start: Timestamp,
    /// Frames in it.
    pub frames: u32,
    /// Mean neck angle of the frames that have one.
    pub neck: Option<f64>,
    /// Mean torso angle of the frames that have one.
    pub torso: Option<f64>,
    /// Frames with a neck angle.
    pub neck_frames: u32,
    /// Frames with a torso angle.
    pub torso_frames: u32,
    /// Good frames.
    pub good: u32,
    /// Bad frames.
    pub bad: u32,
}

/// The newest stored image of a camera.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageRef {
    /// Its frame id (`posture_image.frame_id`).
    pub frame_id: String,
    /// When it was analysed.
    pub analyzed: Option<Timestamp>,
}

// Column lists, per backend. PostgreSQL times become epoch seconds (works
// for TIMESTAMPTZ and for the TIMESTAMP of legacy tables, read as UTC);
// angles are cast to double (legacy tables have INTEGER angles).
const LITE_COLS: &str = "id, pi_id, filename, received_time, CAST(neck_angle AS REAL) AS neck_angle, \
    CAST(body_angle AS REAL) AS body_angle, posture_status, processed_by, COALESCE(frame_id, '') AS frame_id";
const PG_COLS: &str = "id::int8 AS id, pi_id, filename, extract(epoch FROM received_time)::float8 AS received_time, \
    neck_angle::float8 AS neck_angle, body_angle::float8 AS body_angle, posture_status, processed_by, \
    COALESCE(frame_id, '') AS frame_id";

/// Decodes a frame row; `$time` turns the `received_time` column into a
/// timestamp for the backend.
macro_rules! frame_from {
    ($row:expr, $time:expr) => {{
        let r = $row;
        Frame {
            id: r.try_get("id")?,
            camera: r.try_get("pi_id")?,
            filename: r.try_get("filename")?,
            received: $time(&r)?,
            neck: r.try_get("neck_angle")?,
            torso: r.try_get("body_angle")?,
            status: r.try_get("posture_status")?,
            processed_by: r.try_get("processed_by")?,
            frame_id: r.try_get("frame_id")?,
        }
    }};
}

fn lite_time(r: &sqlx::sqlite::SqliteRow) -> Result<Timestamp, sqlx::Error> {
    let text: String = r.try_get("received_time")?;
    parse_db_time(&text).ok_or_else(|| bad_time(&text))
}

fn pg_time(r: &sqlx::postgres::PgRow) -> Result<Timestamp, sqlx::Error> {
    let secs: f64 = r.try_get("received_time")?;
    from_epoch(secs).ok_or_else(|| bad_time(&secs.to_string()))
}

fn bad_time(text: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("unreadable received_time {text:?}").into())
}

/// True for "no such table" (SQLite) and `undefined_table` (PostgreSQL).
fn is_missing_table(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            d.code().as_deref() == Some("42P01") || d.message().contains("no such table")
        }
        _ => false,
    }
}

impl ReadOnlyDb {
    /// Read-only connections to `target`. Connections are made lazily, so a
    /// dashboard starts (and says so on its pages) while the database is
    /// down or its SQLite file does not exist yet.
    pub fn open(target: &DbTarget) -> Self {
        let described = target.describe();
        let pool = match target {
            DbTarget::Sqlite(path) => {
                let opts = SqliteConnectOptions::new()
                    .filename(path)
                    .read_only(true)
                    .create_if_missing(false)
                    // The analyzer holds the write lock briefly per row.
                    .busy_timeout(Duration::from_secs(5));
                // A few readers: pages, the live tail and exports at once.
                Pool::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(4)
                        .acquire_timeout(Duration::from_secs(5))
                        .connect_lazy_with(opts),
                )
            }
            DbTarget::Postgres(opts) => {
                let opts = (**opts)
                    .clone()
                    .application_name("posture-dashboard")
                    .options([
                        ("default_transaction_read_only", "on"),
                        ("TimeZone", "UTC"),
                        ("statement_timeout", "30s"),
                    ]);
                Pool::Postgres(
                    PgPoolOptions::new()
                        .max_connections(4)
                        .acquire_timeout(Duration::from_secs(5))
                        .connect_lazy_with(opts),
                )
            }
        };
        Self {
            pool,
            target: described,
        }
    }

    /// The database, without credentials.
    pub fn describe(&self) -> &str {
        &self.target
    }

    fn err(&self, what: &'static str) -> impl Fn(sqlx::Error) -> DbError + '_ {
        move |source| DbError {
            what,
            target: self.target.clone(),
            source,
        }
    }

    /// The highest row id (0 for an empty or missing table).
    pub async fn max_id(&self) -> Result<i64, DbError> {
        let r = match &self.pool {
            Pool::Sqlite(p) => {
                sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(id), 0) FROM posture_log")
                    .fetch_one(p)
                    .await
            }
            Pool::Postgres(p) => {
                sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(id), 0)::int8 FROM posture_log")
                    .fetch_one(p)
                    .await
            }
        };
        match r {
            Err(e) if is_missing_table(&e) => Ok(0),
            r => r.map_err(self.err("reading the newest row id")),
        }
    }

    /// Camera ids, sorted: a loose index scan of `(pi_id, received_time)`,
    /// one index seek per camera instead of a scan of every row.
    pub async fn cameras(&self) -> Result<Vec<String>, DbError> {
        const SQL: &str = "WITH RECURSIVE cams(p) AS (
              SELECT (SELECT MIN(pi_id) FROM posture_log)
              UNION ALL
              SELECT (SELECT MIN(pi_id) FROM posture_log WHERE pi_id > cams.p) FROM cams WHERE cams.p IS NOT NULL)
            SELECT p FROM cams WHERE p IS NOT NULL LIMIT ";
        let sql = format!("{SQL}{MAX_CAMERAS}");
        let r = match &self.pool {
            Pool::Sqlite(p) => {
                sqlx::query_scalar::<_, String>(AssertSqlSafe(sql))
                    .fetch_all(p)
                    .await
            }
            Pool::Postgres(p) => {
                sqlx::query_scalar::<_, String>(AssertSqlSafe(sql))
                    .fetch_all(p)
                    .await
            }
        };
        match r {
            Err(e) if is_missing_table(&e) => Ok(Vec::new()),
            r => r.map_err(self.err("listing cameras")),
        }
    }

    /// The newest frame of `camera`.
    pub async fn latest_frame(&self, camera: &str) -> Result<Option<Frame>, DbError> {
        Ok(self
            .recent(camera, None, 1)
            .await
            .map_err(self.err("reading a camera's newest frame"))?
            .into_iter()
            .next())
    }

    /// Up to `limit` frames of `camera` received before `before` (all when
    /// `None`), newest first.
    pub async fn recent_frames(
        &self,
        camera: &str,
        before: Option<Timestamp>,
        limit: i64,
    ) -> Result<Vec<Frame>, DbError> {
        self.recent(camera, before, limit)
            .await
            .map_err(self.err("reading recent frames"))
    }

    async fn recent(
        &self,
        camera: &str,
        before: Option<Timestamp>,
        limit: i64,
    ) -> Result<Vec<Frame>, sqlx::Error> {
        // No upper bound: the far future (a camera with a fast clock still shows).
        let before = before.unwrap_or(Timestamp::MAX);
        let r = match &self.pool {
            Pool::Sqlite(p) => {
                let sql = format!(
                    "SELECT {LITE_COLS} FROM posture_log WHERE pi_id = ?1 AND received_time < ?2 \
                     ORDER BY received_time DESC, id DESC LIMIT ?3"
                );
                let rows = sqlx::query(AssertSqlSafe(sql))
                    .bind(camera)
                    .bind(sqlite_key_ceil(before))
                    .bind(limit)
                    .fetch_all(p)
                    .await;
                rows.and_then(|rows| rows.iter().map(|r| Ok(frame_from!(r, lite_time))).collect())
            }
            Pool::Postgres(p) => {
                let sql = format!(
                    "SELECT {PG_COLS} FROM posture_log WHERE pi_id = $1 AND received_time < to_timestamp($2) \
                     ORDER BY received_time DESC, id DESC LIMIT $3"
                );
                let rows = sqlx::query(AssertSqlSafe(sql))
                    .bind(camera)
                    .bind(epoch(before).min(9.0e12))
                    .bind(limit)
                    .fetch_all(p)
                    .await;
                rows.and_then(|rows| rows.iter().map(|r| Ok(frame_from!(r, pg_time))).collect())
            }
        };
        match r {
            Err(e) if is_missing_table(&e) => Ok(Vec::new()),
            r => r,
        }
    }

    /// Frames with an id above `after`, oldest id first, at most `limit`:
    /// the live tail (primary key range).
    pub async fn frames_after(&self, after: i64, limit: i64) -> Result<Vec<Frame>, DbError> {
        let r: Result<Vec<Frame>, sqlx::Error> = match &self.pool {
            Pool::Sqlite(p) => {
                let sql = format!(
                    "SELECT {LITE_COLS} FROM posture_log WHERE id > ?1 ORDER BY id LIMIT ?2"
                );
                let rows = sqlx::query(AssertSqlSafe(sql))
                    .bind(after)
                    .bind(limit)
                    .fetch_all(p)
                    .await;
                rows.and_then(|rows| rows.iter().map(|r| Ok(frame_from!(r, lite_time))).collect())
            }
            Pool::Postgres(p) => {
                let sql =
                    format!("SELECT {PG_COLS} FROM posture_log WHERE id > $1 ORDER BY id LIMIT $2");
                let rows = sqlx::query(AssertSqlSafe(sql))
                    .bind(after)
                    .bind(limit)
                    .fetch_all(p)
                    .await;
                rows.and_then(|rows| rows.iter().map(|r| Ok(frame_from!(r, pg_time))).collect())
            }
        };
        match r {
            Err(e) if is_missing_table(&e) => Ok(Vec::new()),
            r => r.map_err(self.err("reading new frames")),
        }
    }

    /// Frames of `camera` received in `[from, to)`, oldest first, at most `limit`.
    pub async fn frames_in_range(
        &self,
        camera: &str,
        from: Timestamp,
        to: Timestamp,
        limit: i64,
    ) -> Result<Vec<Frame>, DbError> {
        let r: Result<Vec<Frame>, sqlx::Error> = match &self.pool {
            Pool::Sqlite(p) => {
                let sql = format!(
                    "SELECT {LITE_COLS} FROM posture_log WHERE pi_id = ?1 AND received_time >= ?2 \
                     AND received_time < ?3 ORDER BY received_time, id LIMIT ?4"
                );
                let rows = sqlx::query(AssertSqlSafe(sql))
                    .bind(camera)
                    .bind(sqlite_key(from))
                    .bind(sqlite_key_ceil(to))
                    .bind(limit)
                    .fetch_all(p)
                    .await;
                rows.and_then(|rows| rows.iter().map(|r| Ok(frame_from!(r, lite_time))).collect())
            }
            Pool::Postgres(p) => {
                let sql = format!(
                    "SELECT {PG_COLS} FROM posture_log WHERE pi_id = $1 AND received_time >= to_timestamp($2) \
                     AND received_time < to_timestamp($3) ORDER BY received_time, id LIMIT $4"
                );
                let rows = sqlx::query(AssertSqlSafe(sql))
                    .bind(camera)
                    .bind(epoch(from))
                    .bind(epoch(to))
                    .bind(limit)
                    .fetch_all(p)
                    .await;
                rows.and_then(|rows| rows.iter().map(|r| Ok(frame_from!(r, pg_time))).collect())
            }
        };
        match r {
            Err(e) if is_missing_table(&e) => Ok(Vec::new()),
            r => r.map_err(self.err("reading frames for the plot")),
        }
    }

    /// Frames of `camera` in `[from, to)` grouped into `width`-second
    /// buckets (at most [`MAX_BUCKETS`]), for ranges with too many frames to
    /// plot one by one.
    pub async fn buckets(
        &self,
        camera: &str,
        from: Timestamp,
        to: Timestamp,
        width_secs: i64,
    ) -> Result<Vec<Bucket>, DbError> {
        let width = width_secs.max(1);
        type Row = (i64, i64, Option<f64>, Option<f64>, i64, i64, i64, i64);
        let r: Result<Vec<Row>, sqlx::Error> = match &self.pool {
            Pool::Sqlite(p) => {
                let sql = format!(
                    "SELECT CAST(strftime('%s', received_time) AS INTEGER) / ?4 AS b, COUNT(*) AS n, \
                         AVG(neck_angle) AS neck, AVG(body_angle) AS torso, \
                         COUNT(neck_angle) AS nn, COUNT(body_angle) AS nt, \
                         SUM(posture_status = 'Good') AS good, SUM(posture_status = 'Bad') AS bad \
                         FROM posture_log WHERE pi_id = ?1 AND received_time >= ?2 AND received_time < ?3 \
                         GROUP BY b ORDER BY b LIMIT {MAX_BUCKETS}"
                );
                sqlx::query_as(AssertSqlSafe(sql))
                    .bind(camera)
                    .bind(sqlite_key(from))
                    .bind(sqlite_key_ceil(to))
                    .bind(width)
                    .fetch_all(p)
                    .await
            }
            Pool::Postgres(p) => {
                let sql = format!(
                    "SELECT floor(extract(epoch FROM received_time) / $4)::int8 AS b, COUNT(*)::int8 AS n, \
                         AVG(neck_angle)::float8 AS neck, AVG(body_angle)::float8 AS torso, \
                         COUNT(neck_angle)::int8 AS nn, COUNT(body_angle)::int8 AS nt, \
                         (COUNT(*) FILTER (WHERE posture_status = 'Good'))::int8 AS good, \
                         (COUNT(*) FILTER (WHERE posture_status = 'Bad'))::int8 AS bad \
                         FROM posture_log WHERE pi_id = $1 AND received_time >= to_timestamp($2) \
                         AND received_time < to_timestamp($3) GROUP BY 1 ORDER BY 1 LIMIT {MAX_BUCKETS}"
                );
                sqlx::query_as(AssertSqlSafe(sql))
                    .bind(camera)
                    .bind(epoch(from))
                    .bind(epoch(to))
                    .bind(width as f64)
                    .fetch_all(p)
                    .await
            }
        };
        let rows = match r {
            Err(e) if is_missing_table(&e) => Vec::new(),
            r => r.map_err(self.err("grouping frames for the plot"))?,
        };
        Ok(rows
            .into_iter()
            .filter_map(|(b, n, neck, torso, nn, nt, good, bad)| {
                Some(Bucket {
                    start: Timestamp::from_second(b.checked_mul(width)?).ok()?,
                    frames: u32::try_from(n).unwrap_or(u32::MAX),
                    neck,
                    torso,
                    neck_frames: u32::try_from(nn).unwrap_or(0),
                    torso_frames: u32::try_from(nt).unwrap_or(0),
                    good: u32::try_from(good).unwrap_or(0),
                    bad: u32::try_from(bad).unwrap_or(0),
                })
            })
            .collect())
    }

    /// `(id, received, status)` of `camera`'s rows received since `since`
    /// with an id at most `max_id`: the raw material of the in-memory
    /// statistics (at most [`MAX_FILL_ROWS`]).
    pub async fn stats_rows(
        &self,
        camera: &str,
        since: Timestamp,
        max_id: i64,
    ) -> Result<Vec<(i64, Timestamp, String)>, DbError> {
        let r: Result<Vec<(i64, Timestamp, String)>, sqlx::Error> = match &self.pool {
            Pool::Sqlite(p) => {
                let rows: Result<Vec<(i64, String, String)>, _> = sqlx::query_as(
                    "SELECT id, received_time, posture_status FROM posture_log \
                     WHERE pi_id = ?1 AND received_time >= ?2 AND id <= ?3 LIMIT ?4",
                )
                .bind(camera)
                .bind(sqlite_key(since))
                .bind(max_id)
                .bind(MAX_FILL_ROWS)
                .fetch_all(p)
                .await;
                rows.map(|rows| {
                    rows.into_iter()
                        .filter_map(|(id, t, s)| Some((id, parse_db_time(&t)?, s)))
                        .collect()
                })
            }
            Pool::Postgres(p) => {
                let rows: Result<Vec<(i64, f64, String)>, _> = sqlx::query_as(
                    "SELECT id::int8, extract(epoch FROM received_time)::float8, posture_status FROM posture_log \
                     WHERE pi_id = $1 AND received_time >= to_timestamp($2) AND id <= $3 LIMIT $4",
                )
                .bind(camera)
                .bind(epoch(since))
                .bind(max_id)
                .bind(MAX_FILL_ROWS)
                .fetch_all(p)
                .await;
                rows.map(|rows| {
                    rows.into_iter()
                        .filter_map(|(id, t, s)| Some((id, from_epoch(t)?, s)))
                        .collect()
                })
            }
        };
        match r {
            Err(e) if is_missing_table(&e) => Ok(Vec::new()),
            r => r.map_err(self.err("reading a day of frames")),
        }
    }

    /// The newest image stored for `camera` (none when retention removed
    /// them all, or the table does not exist).
    pub async fn latest_image(&self, camera: &str) -> Result<Option<ImageRef>, DbError> {
        let r = match &self.pool {
            Pool::Sqlite(p) => sqlx::query_as::<_, (String, String)>(
                "SELECT frame_id, analyzed_time FROM posture_image WHERE pi_id = ?1 \
                 ORDER BY analyzed_time DESC LIMIT 1",
            )
            .bind(camera)
            .fetch_optional(p)
            .await
            .map(|o| {
                o.map(|(frame_id, t)| ImageRef {
                    frame_id,
                    analyzed: parse_db_time(&t),
                })
            }),
            Pool::Postgres(p) => sqlx::query_as::<_, (String, f64)>(
                "SELECT frame_id, extract(epoch FROM analyzed_time)::float8 FROM posture_image \
                 WHERE pi_id = $1 ORDER BY analyzed_time DESC LIMIT 1",
            )
            .bind(camera)
            .fetch_optional(p)
            .await
            .map(|o| {
                o.map(|(frame_id, t)| ImageRef {
                    frame_id,
                    analyzed: from_epoch(t),
                })
            }),
        };
        match r {
            Err(e) if is_missing_table(&e) => Ok(None),
            r => r.map_err(self.err("finding a camera's newest image")),
        }
    }

    /// The annotated JPEG of `frame_id`, if still kept.
    pub async fn image(&self, frame_id: &str) -> Result<Option<Vec<u8>>, DbError> {
        let r = match &self.pool {
            Pool::Sqlite(p) => {
                sqlx::query_scalar::<_, Vec<u8>>(
                    "SELECT jpeg FROM posture_image WHERE frame_id = ?1",
                )
                .bind(frame_id)
                .fetch_optional(p)
                .await
            }
            Pool::Postgres(p) => {
                sqlx::query_scalar::<_, Vec<u8>>(
                    "SELECT jpeg FROM posture_image WHERE frame_id = $1",
                )
                .bind(frame_id)
                .fetch_optional(p)
                .await
            }
        };
        match r {
            Err(e) if is_missing_table(&e) => Ok(None),
            r => r.map_err(self.err("reading an image")),
        }
    }

    /// Which of `frame_ids` still have an image (primary-key lookups).
    pub async fn images_present(&self, frame_ids: &[String]) -> Result<HashSet<String>, DbError> {
        let ids: Vec<&String> = frame_ids.iter().filter(|f| !f.is_empty()).collect();
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let marks = |pg: bool| {
            (1..=ids.len())
                .map(|i| if pg { format!("${i}") } else { format!("?{i}") })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let r = match &self.pool {
            Pool::Sqlite(p) => {
                let sql = format!(
                    "SELECT frame_id FROM posture_image WHERE frame_id IN ({})",
                    marks(false)
                );
                let mut q = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql));
                for id in &ids {
                    q = q.bind(id.as_str());
                }
                q.fetch_all(p).await
            }
            Pool::Postgres(p) => {
                let sql = format!(
                    "SELECT frame_id FROM posture_image WHERE frame_id IN ({})",
                    marks(true)
                );
                let mut q = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql));
                for id in &ids {
                    q = q.bind(id.as_str());
                }
                q.fetch_all(p).await
            }
        };
        match r {
            Err(e) if is_missing_table(&e) => Ok(HashSet::new()),
            r => Ok(r
                .map_err(self.err("checking which images are kept"))?
                .into_iter()
                .collect()),
        }
    }

    /// Streams `camera`'s rows received in `[from, to)` as CSV (the
    /// header, then one line per row, oldest first, in chunks of about
    /// 64 KiB) into `tx`, whose bound paces the query to the client. Stops
    /// early when the receiver is gone. Returns the rows sent.
    pub async fn export_csv(
        &self,
        camera: &str,
        from: Timestamp,
        to: Timestamp,
        tx: &mpsc::Sender<String>,
    ) -> Result<u64, DbError> {
        const CHUNK: usize = 64 * 1024;
        let err = self.err("exporting rows");
        let mut sent = 0u64;
        let mut buf = String::with_capacity(CHUNK + 512);
        buf.push_str(CSV_HEADER);
        buf.push('\n');
        macro_rules! drain {
            ($stream:expr) => {{
                let mut stream = $stream;
                while let Some(r) = stream.try_next().await.map_err(&err)? {
                    let row = (|| -> Result<PostureRow, sqlx::Error> {
                        Ok(PostureRow {
                            pi_id: r.try_get("pi_id")?,
                            filename: r.try_get("filename")?,
                            received_time: r.try_get("received_time")?,
                            analyzed_time: r.try_get("analyzed_time")?,
                            neck_angle: r.try_get("neck_angle")?,
                            body_angle: r.try_get("body_angle")?,
                            posture_status: r.try_get("posture_status")?,
                            landmarks_detected: r.try_get("landmarks_detected")?,
                            processed_by: r.try_get("processed_by")?,
                            frame_id: r.try_get("frame_id")?,
                        })
                    })()
                    .map_err(&err)?;
                    buf.push_str(&row.csv_line());
                    sent += 1;
                    if buf.len() >= CHUNK && tx.send(std::mem::take(&mut buf)).await.is_err() {
                        return Ok(sent);
                    }
                }
            }};
        }
        match &self.pool {
            Pool::Sqlite(p) => {
                let sql = format!(
                    "SELECT pi_id, filename, received_time, analyzed_time, CAST(neck_angle AS REAL) AS neck_angle, \
                     CAST(body_angle AS REAL) AS body_angle, posture_status, landmarks_detected, processed_by, \
                     COALESCE(frame_id, '') AS frame_id FROM posture_log \
                     WHERE pi_id = ?1 AND received_time >= ?2 AND received_time < ?3 \
                     ORDER BY received_time, id LIMIT {MAX_EXPORT_ROWS}"
                );
                let q = sqlx::query(AssertSqlSafe(sql))
                    .bind(camera)
                    .bind(sqlite_key(from))
                    .bind(sqlite_key_ceil(to));
                drain!(q.fetch(p))
            }
            Pool::Postgres(p) => {
                let time = |c: &str| {
                    format!(
                        "to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS {c}"
                    )
                };
                let sql = format!(
                    "SELECT pi_id, filename, {}, {}, neck_angle::float8 AS neck_angle, \
                     body_angle::float8 AS body_angle, posture_status, landmarks_detected, processed_by, \
                     COALESCE(frame_id, '') AS frame_id FROM posture_log \
                     WHERE pi_id = $1 AND received_time >= to_timestamp($2) AND received_time < to_timestamp($3) \
                     ORDER BY received_time, id LIMIT {MAX_EXPORT_ROWS}",
                    time("received_time"),
                    time("analyzed_time"),
                );
                let q = sqlx::query(AssertSqlSafe(sql))
                    .bind(camera)
                    .bind(epoch(from))
                    .bind(epoch(to));
                drain!(q.fetch(p))
            }
        }
        if !buf.is_empty() {
            let _ = tx.send(buf).await;
        }
        Ok(sent)
    }

    /// Tries to create a table: `true` when the database refuses, as it
    /// must for these connections. For tests and for checking a deployment.
    #[doc(hidden)]
    pub async fn write_is_refused(&self) -> bool {
        const SQL: &str = "CREATE TABLE posture_dashboard_write_probe (x INTEGER)";
        match &self.pool {
            Pool::Sqlite(p) => sqlx::query(SQL).execute(p).await.is_err(),
            Pool::Postgres(p) => sqlx::query(SQL).execute(p).await.is_err(),
        }
    }

    /// Closes the connections.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }
}

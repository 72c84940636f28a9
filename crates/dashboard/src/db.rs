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

use jiff::Timestamp;
use posture_analyzer::db::Pool as AnalyzerPool;
use posture_analyzer::export::{RowFilter, Rows};
use posture_analyzer::record::CSV_HEADER;
use posture_analyzer::store::DbTarget;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Row as _};
use tokio::sync::mpsc;

use crate::model::{Frame, parse_db_time};
use posture_analyzer::record::row_time;

/// Most cameras listed (the overview shows one card each).
pub const MAX_CAMERAS: i64 = 1000;
/// Most rows read for one camera's 24-hour statistics at a refresh
/// (10 frames/s for a day).
pub const MAX_FILL_ROWS: i64 = 1_000_000;
/// Most groups of an aggregated plot.
pub const MAX_BUCKETS: i64 = 10_000;
/// Most rows one CSV export streams.
pub const MAX_EXPORT_ROWS: u64 = 10_000_000;

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

/// Runs `$body` with `$p` bound to whichever pool this is: one source for
/// both backends (the SQL text and binds are the same Rust types).
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            Pool::Sqlite($p) => $body,
            Pool::Postgres($p) => $body,
        }
    };
}

/// Decodes a frame row (its `received_time` as text).
macro_rules! frame_from {
    ($r:expr) => {{
        let r = $r;
        let text: String = r.try_get("received_time")?;
        Frame {
            id: r.try_get("id")?,
            camera: r.try_get("pi_id")?,
            filename: r.try_get("filename")?,
            received: parse_db_time(&text).ok_or_else(|| bad_time(&text))?,
            neck: r.try_get("neck_angle")?,
            torso: r.try_get("body_angle")?,
            status: r.try_get("posture_status")?,
            processed_by: r.try_get("processed_by")?,
            frame_id: r.try_get("frame_id")?,
        }
    }};
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

/// A missing table reads as "nothing there".
fn or_empty<T: Default>(r: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
    match r {
        Err(e) if is_missing_table(&e) => Ok(T::default()),
        r => r,
    }
}

impl Pool {
    fn is_pg(&self) -> bool {
        matches!(self, Pool::Postgres(_))
    }

    /// `sql` written with PostgreSQL's `$n` placeholders and these markers:
    /// `{T}` casts a bound time (text), `{time:col}`-style columns are
    /// spelled out by the callers through [`Pool::time_col`].
    fn sql(&self, sql: &str) -> AssertSqlSafe<String> {
        let cast = if self.is_pg() { "::timestamptz" } else { "" };
        let mut s = sql.replace("{T}", cast);
        if !self.is_pg() {
            s = s.replace('$', "?");
        }
        AssertSqlSafe(s)
    }

    /// A time column as RFC 3339 UTC text, named after itself. SQLite
    /// already stores that; PostgreSQL formats TIMESTAMPTZ (and the
    /// TIMESTAMP of legacy tables, read as UTC).
    fn time_col(&self, col: &str) -> String {
        if self.is_pg() {
            format!(
                "to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS {col}"
            )
        } else {
            col.to_string()
        }
    }

    /// The frame columns (angles as doubles: legacy tables have INTEGER
    /// ones; their text columns may be NULL, read as empty like `results
    /// export` writes them).
    fn frame_cols(&self) -> String {
        format!(
            "CAST(id AS BIGINT) AS id, pi_id, COALESCE(filename, '') AS filename, {}, \
             CAST(neck_angle AS DOUBLE PRECISION) AS neck_angle, \
             CAST(body_angle AS DOUBLE PRECISION) AS body_angle, \
             COALESCE(posture_status, '') AS posture_status, \
             COALESCE(processed_by, '') AS processed_by, COALESCE(frame_id, '') AS frame_id",
            self.time_col("received_time")
        )
    }

    /// A lower time bound as bound text: PostgreSQL casts it exactly;
    /// SQLite compares text, in the analyzer's fixed-width row time
    /// (microseconds), so bounds fall exactly where `results export`'s do.
    fn lower(&self, t: Timestamp) -> String {
        if self.is_pg() {
            t.to_string()
        } else {
            row_time(t)
        }
    }

    /// An exclusive upper time bound as bound text (as [`Self::lower`]).
    fn upper(&self, t: Timestamp) -> String {
        self.lower(t)
    }

    /// The bucket number of `received_time` for `$4`-second buckets.
    fn bucket_expr(&self) -> &'static str {
        if self.is_pg() {
            "CAST(floor(extract(epoch FROM received_time) / $4) AS BIGINT)"
        } else {
            "CAST(strftime('%s', received_time) AS INTEGER) / $4"
        }
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
        let sql = self
            .pool
            .sql("SELECT CAST(COALESCE(MAX(id), 0) AS BIGINT) FROM posture_log");
        or_empty(on_pool!(&self.pool, p => sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await))
            .map_err(self.err("reading the newest row id"))
    }

    /// Camera ids, sorted: a loose index scan of `(pi_id, received_time)`,
    /// one index seek per camera instead of a scan of every row.
    pub async fn cameras(&self) -> Result<Vec<String>, DbError> {
        let sql = self.pool.sql(&format!(
            "WITH RECURSIVE cams(p) AS (
              SELECT (SELECT MIN(pi_id) FROM posture_log)
              UNION ALL
              SELECT (SELECT MIN(pi_id) FROM posture_log WHERE pi_id > cams.p) FROM cams WHERE cams.p IS NOT NULL)
            SELECT p FROM cams WHERE p IS NOT NULL LIMIT {MAX_CAMERAS}"
        ));
        or_empty(on_pool!(&self.pool, p => sqlx::query_scalar::<_, String>(sql).fetch_all(p).await))
            .map_err(self.err("listing cameras"))
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
        let pool = &self.pool;
        // No bound: the far future (a camera with a fast clock still shows).
        let upper = pool.upper(before.unwrap_or(Timestamp::MAX));
        // Ordering names the table's column: PostgreSQL would otherwise
        // sort by the text column of the same name in the select list.
        let sql = pool.sql(&format!(
            "SELECT {} FROM posture_log WHERE pi_id = $1 AND received_time < $2{{T}} \
             ORDER BY posture_log.received_time DESC, id DESC LIMIT $3",
            pool.frame_cols()
        ));
        or_empty(on_pool!(pool, p => {
            let rows = sqlx::query(sql).bind(camera).bind(upper).bind(limit).fetch_all(p).await?;
            rows.iter().map(|r| Ok(frame_from!(r))).collect::<Result<Vec<_>, sqlx::Error>>()
        }))
    }

    /// Frames with an id above `after`, oldest id first, at most `limit`:
    /// the live tail (primary key range).
    pub async fn frames_after(&self, after: i64, limit: i64) -> Result<Vec<Frame>, DbError> {
        let pool = &self.pool;
        let sql = pool.sql(&format!(
            "SELECT {} FROM posture_log WHERE id > $1 ORDER BY id LIMIT $2",
            pool.frame_cols()
        ));
        or_empty(on_pool!(pool, p => async {
            let rows = sqlx::query(sql).bind(after).bind(limit).fetch_all(p).await?;
            rows.iter().map(|r| Ok(frame_from!(r))).collect::<Result<Vec<_>, sqlx::Error>>()
        }.await))
        .map_err(self.err("reading new frames"))
    }

    /// Frames of `camera` received in `[from, to)`, oldest first, at most `limit`.
    pub async fn frames_in_range(
        &self,
        camera: &str,
        from: Timestamp,
        to: Timestamp,
        limit: i64,
    ) -> Result<Vec<Frame>, DbError> {
        let pool = &self.pool;
        let sql = pool.sql(&format!(
            "SELECT {} FROM posture_log WHERE pi_id = $1 AND received_time >= $2{{T}} \
             AND received_time < $3{{T}} ORDER BY posture_log.received_time, id LIMIT $4",
            pool.frame_cols()
        ));
        or_empty(on_pool!(pool, p => async {
            let rows = sqlx::query(sql)
                .bind(camera)
                .bind(pool.lower(from))
                .bind(pool.upper(to))
                .bind(limit)
                .fetch_all(p)
                .await?;
            rows.iter().map(|r| Ok(frame_from!(r))).collect::<Result<Vec<_>, sqlx::Error>>()
        }.await))
        .map_err(self.err("reading frames for the plot"))
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
        let pool = &self.pool;
        let sql = pool.sql(&format!(
            "SELECT {} AS b, COUNT(*) AS n, \
             CAST(AVG(neck_angle) AS DOUBLE PRECISION) AS neck, CAST(AVG(body_angle) AS DOUBLE PRECISION) AS torso, \
             COUNT(neck_angle) AS nn, COUNT(body_angle) AS nt, \
             SUM(CASE WHEN posture_status = 'Good' THEN 1 ELSE 0 END) AS good, \
             SUM(CASE WHEN posture_status = 'Bad' THEN 1 ELSE 0 END) AS bad \
             FROM posture_log WHERE pi_id = $1 AND received_time >= $2{{T}} AND received_time < $3{{T}} \
             GROUP BY 1 ORDER BY 1 LIMIT {MAX_BUCKETS}",
            pool.bucket_expr()
        ));
        type Row = (i64, i64, Option<f64>, Option<f64>, i64, i64, i64, i64);
        let rows: Vec<Row> = or_empty(on_pool!(pool, p => {
            sqlx::query_as(sql)
                .bind(camera)
                .bind(pool.lower(from))
                .bind(pool.upper(to))
                .bind(width)
                .fetch_all(p)
                .await
        }))
        .map_err(self.err("grouping frames for the plot"))?;
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
        let pool = &self.pool;
        let sql = pool.sql(&format!(
            "SELECT CAST(id AS BIGINT), {}, posture_status FROM posture_log \
             WHERE pi_id = $1 AND received_time >= $2{{T}} AND id <= $3 LIMIT $4",
            pool.time_col("received_time")
        ));
        let rows: Vec<(i64, String, String)> = or_empty(on_pool!(pool, p => {
            sqlx::query_as(sql)
                .bind(camera)
                .bind(pool.lower(since))
                .bind(max_id)
                .bind(MAX_FILL_ROWS)
                .fetch_all(p)
                .await
        }))
        .map_err(self.err("reading a day of frames"))?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, t, s)| Some((id, parse_db_time(&t)?, s)))
            .collect())
    }

    /// The newest image stored for `camera` (none when retention removed
    /// them all, or the table does not exist).
    pub async fn latest_image(&self, camera: &str) -> Result<Option<ImageRef>, DbError> {
        let pool = &self.pool;
        let sql = pool.sql(&format!(
            "SELECT frame_id, {} FROM posture_image WHERE pi_id = $1 ORDER BY posture_image.analyzed_time DESC LIMIT 1",
            pool.time_col("analyzed_time")
        ));
        let row: Option<(String, String)> = or_empty(on_pool!(pool, p => {
            sqlx::query_as(sql).bind(camera).fetch_optional(p).await
        }))
        .map_err(self.err("finding a camera's newest image"))?;
        Ok(row.map(|(frame_id, t)| ImageRef {
            frame_id,
            analyzed: parse_db_time(&t),
        }))
    }

    /// The annotated JPEG of `frame_id`, if still kept.
    pub async fn image(&self, frame_id: &str) -> Result<Option<Vec<u8>>, DbError> {
        let sql = self
            .pool
            .sql("SELECT jpeg FROM posture_image WHERE frame_id = $1");
        or_empty(on_pool!(&self.pool, p => {
            sqlx::query_scalar::<_, Vec<u8>>(sql).bind(frame_id).fetch_optional(p).await
        }))
        .map_err(self.err("reading an image"))
    }

    /// Which of `frame_ids` still have an image (primary-key lookups).
    pub async fn images_present(&self, frame_ids: &[String]) -> Result<HashSet<String>, DbError> {
        let ids: Vec<&String> = frame_ids.iter().filter(|f| !f.is_empty()).collect();
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let marks: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = self.pool.sql(&format!(
            "SELECT frame_id FROM posture_image WHERE frame_id IN ({})",
            marks.join(", ")
        ));
        let found: Vec<String> = or_empty(on_pool!(&self.pool, p => {
            let mut q = sqlx::query_scalar::<_, String>(sql);
            for id in &ids {
                q = q.bind(id.as_str());
            }
            q.fetch_all(p).await
        }))
        .map_err(self.err("checking which images are kept"))?;
        Ok(found.into_iter().collect())
    }

    /// Streams `camera`'s rows received in `[from, to)` as CSV (the
    /// header, then one line per row, oldest first, in chunks of about
    /// 64 KiB) into `tx`, whose bound paces the query to the client. Stops
    /// early when the receiver is gone. Returns the rows sent. The rows and
    /// their text are `results export`'s ([`posture_analyzer::export::Rows`]),
    /// so the download and the export of the same range are the same bytes.
    pub async fn export_csv(
        &self,
        camera: &str,
        from: Timestamp,
        to: Timestamp,
        tx: &mpsc::Sender<String>,
    ) -> Result<u64, DbError> {
        const CHUNK: usize = 64 * 1024;
        let err = self.err("exporting rows");
        let pool = match &self.pool {
            Pool::Sqlite(p) => AnalyzerPool::Sqlite(p.clone()),
            Pool::Postgres(p) => AnalyzerPool::Postgres(p.clone()),
        };
        let filter = RowFilter {
            cameras: vec![camera.to_string()],
            since: Some(from),
            until: Some(to),
            limit: Some(MAX_EXPORT_ROWS),
        };
        let mut rows = Rows::open(&pool, &filter, false).await.map_err(&err)?;
        let mut sent = 0u64;
        let mut buf = String::with_capacity(CHUNK + 512);
        buf.push_str(CSV_HEADER);
        buf.push('\n');
        while let Some(r) = rows.next().await {
            buf.push_str(&r.map_err(&err)?.stored.row.csv_line());
            sent += 1;
            if buf.len() >= CHUNK && tx.send(std::mem::take(&mut buf)).await.is_err() {
                return Ok(sent);
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
        on_pool!(&self.pool, p => sqlx::query(SQL).execute(p).await.is_err())
    }

    /// Closes the connections.
    pub async fn close(&self) {
        on_pool!(&self.pool, p => p.close().await)
    }
}

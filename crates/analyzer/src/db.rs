//! The database: where rows (`posture_log`) and annotated images
//! (`posture_image`) are kept, SQLite by default, PostgreSQL when configured.
//!
//! A frame's row and image are written in one transaction, each with
//! `ON CONFLICT (frame_id) DO NOTHING`, so a redelivered frame or a replayed
//! spool entry is a no-op, and the frame is durable (one commit, one WAL
//! flush) when [`Database::record`] returns. The schema is migrated by
//! [`crate::schema`]; users' legacy PostgreSQL tables (INTEGER angles,
//! TIMESTAMP columns) are written with explicit casts.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::Row as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::record::PostureRow;
use crate::schema::Layout;

/// A [`StoredRow`] from a query made by [`crate::schema::select_rows`]
/// (works on SQLite and PostgreSQL rows alike).
macro_rules! stored_row {
    ($r:expr) => {{
        let r = $r;
        let text = |name: &str| -> Result<String, sqlx::Error> {
            Ok(r.try_get::<Option<String>, _>(name)?.unwrap_or_default())
        };
        (|| -> Result<crate::db::StoredRow, sqlx::Error> {
            Ok(crate::db::StoredRow {
                id: r.try_get("id")?,
                row: crate::record::PostureRow {
                    pi_id: text("pi_id")?,
                    filename: text("filename")?,
                    received_time: text("received_time")?,
                    analyzed_time: text("analyzed_time")?,
                    neck_angle: r.try_get("neck_angle")?,
                    body_angle: r.try_get("body_angle")?,
                    posture_status: text("posture_status")?,
                    landmarks_detected: r
                        .try_get::<Option<bool>, _>("landmarks_detected")?
                        .unwrap_or(false),
                    processed_by: text("processed_by")?,
                    frame_id: text("frame_id")?,
                },
            })
        })()
    }};
}
pub(crate) use stored_row;

/// A database problem.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The connection string could not be parsed.
    #[error("invalid database URL")]
    BadUrl(#[source] sqlx::Error),
    /// Creating or migrating the schema failed.
    #[error("migrating the posture_log schema on {target}")]
    Schema {
        /// Where.
        target: String,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// A query failed (often: the database is unreachable).
    #[error("query on {target}")]
    Query {
        /// Where.
        target: String,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
}

impl DbError {
    /// Whether the database refused this particular row for good (bad data,
    /// a constraint of a user's table): retrying it can never succeed, while
    /// other rows can. Everything else (connection lost, timeouts, disk full,
    /// locks, a missing table) is transient: the row is kept and retried.
    pub fn is_permanent(&self) -> bool {
        let source = match self {
            DbError::BadUrl(_) => return false,
            DbError::Schema { source, .. } | DbError::Query { source, .. } => source,
        };
        let sqlx::Error::Database(e) = source else {
            return false;
        };
        let Some(code) = e.code() else {
            return false;
        };
        if e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .is_some()
        {
            // SQLSTATE classes 22 (data exception), 23 (integrity constraint violation).
            return code.starts_with("22") || code.starts_with("23");
        }
        // SQLite extended result codes: primary TOOBIG (18), CONSTRAINT (19), MISMATCH (20).
        code.parse::<i32>()
            .map(|c| matches!(c & 0xff, 18..=20))
            .unwrap_or(false)
    }
}

/// Which database rows go to.
#[derive(Clone, Debug)]
pub enum DbTarget {
    /// A SQLite file (created if missing).
    Sqlite(PathBuf),
    /// A PostgreSQL server.
    Postgres(Box<PgConnectOptions>),
}

/// The database variables of the earlier Python analyzer (`DB_ENABLED`,
/// `DB_HOST`, …), still honoured so existing deployments keep working.
#[derive(Clone, Debug, Default)]
pub struct LegacyDbVars {
    /// `DB_ENABLED`: `true`/`1`/`yes` turns PostgreSQL on.
    pub enabled: Option<String>,
    /// `DB_HOST`.
    pub host: Option<String>,
    /// `DB_PORT` (default 5432).
    pub port: Option<u16>,
    /// `DB_NAME` (default `postgres`).
    pub name: Option<String>,
    /// `DB_USER` (default `postgres`).
    pub user: Option<String>,
    /// `DB_PASSWORD`.
    pub password: Option<String>,
    /// `DB_SSLMODE`: `disable`, `allow`, `prefer` (the default), `require`,
    /// `verify-ca` or `verify-full` (libpq's meanings).
    pub sslmode: Option<String>,
    /// `DB_SSLROOTCERT`: PEM file of the CAs trusted for the server's
    /// certificate (`verify-ca`/`verify-full`; default: the system roots).
    pub sslrootcert: Option<PathBuf>,
}

impl DbTarget {
    /// Picks the database: `DATABASE_URL` (a `postgres://` URL or a `sqlite:`
    /// path) wins; else `DB_ENABLED=true` with `DB_HOST` means PostgreSQL
    /// from the legacy variables; else the SQLite file `sqlite_path`.
    pub fn resolve(
        database_url: Option<&str>,
        legacy: &LegacyDbVars,
        sqlite_path: &Path,
    ) -> Result<Self, DbError> {
        if let Some(url) = database_url.map(str::trim).filter(|u| !u.is_empty()) {
            if let Some(path) = url
                .strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
            {
                return Ok(DbTarget::Sqlite(PathBuf::from(path)));
            }
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(DbError::BadUrl(sqlx::Error::Configuration(
                    format!(
                        "unsupported DATABASE_URL scheme in {:?} (postgres:// or sqlite:)",
                        url.split("://").next().unwrap_or(url)
                    )
                    .into(),
                )));
            }
            let opts = PgConnectOptions::from_str(url).map_err(DbError::BadUrl)?;
            return Ok(DbTarget::Postgres(Box::new(opts)));
        }
        let enabled = legacy
            .enabled
            .as_deref()
            .map(|v| {
                matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "1" | "true" | "yes" | "on"
                )
            })
            .unwrap_or(false);
        if let (true, Some(host)) = (enabled, legacy.host.as_deref()) {
            let mut opts = PgConnectOptions::new_without_pgpass()
                .host(host)
                .port(legacy.port.unwrap_or(5432))
                .database(legacy.name.as_deref().unwrap_or("postgres"))
                .username(legacy.user.as_deref().unwrap_or("postgres"));
            if let Some(pw) = &legacy.password {
                opts = opts.password(pw);
            }
            if let Some(mode) = legacy.sslmode.as_deref().map(str::trim) {
                let mode = PgSslMode::from_str(mode).map_err(|_| {
                    DbError::BadUrl(sqlx::Error::Configuration(
                        format!("DB_SSLMODE {mode:?} is not one of disable, allow, prefer, require, verify-ca, verify-full").into(),
                    ))
                })?;
                opts = opts.ssl_mode(mode);
            }
            if let Some(ca) = &legacy.sslrootcert {
                opts = opts.ssl_root_cert(ca);
            }
            return Ok(DbTarget::Postgres(Box::new(opts)));
        }
        Ok(DbTarget::Sqlite(sqlite_path.to_path_buf()))
    }

    /// Where rows go, without credentials (for logs).
    pub fn describe(&self) -> String {
        match self {
            DbTarget::Sqlite(p) => format!("sqlite:{}", p.display()),
            DbTarget::Postgres(o) => format!(
                "postgres://{}:{}/{}",
                o.get_host(),
                o.get_port(),
                o.get_database().unwrap_or("")
            ),
        }
    }
}

/// A connection pool to either database: the analyzer's own, or a
/// reader's (the dashboard's read-only pools read rows through
/// [`crate::export::Rows`] with it).
#[derive(Clone, Debug)]
pub enum Pool {
    /// SQLite.
    Sqlite(SqlitePool),
    /// PostgreSQL.
    Postgres(PgPool),
}

/// The `posture_log` and `posture_image` tables. Cheap to clone (a pool
/// handle): the retention task prunes through a clone.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    target: String,
    /// Set once the schema is migrated (per clone).
    layout: Option<Layout>,
}

/// A row as read back, with its database id.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredRow {
    /// The `id` column.
    pub id: i64,
    /// The other columns (times as RFC 3339 UTC, angles as numbers).
    pub row: PostureRow,
}

/// One frame to write: its row and, when images go to the database, its
/// annotated JPEG.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    /// The row.
    pub row: &'a PostureRow,
    /// The annotated image, if it goes to `posture_image`.
    pub jpeg: Option<&'a [u8]>,
}

impl Database {
    /// Opens the database. PostgreSQL connects lazily, so an analyzer starts
    /// (and spools) even while the database is down.
    pub async fn open(target: &DbTarget) -> Result<Self, DbError> {
        Self::open_with(target, Duration::from_secs(3)).await
    }

    /// [`Database::open`] with how long a query may wait for a PostgreSQL
    /// connection before the row goes to the spool instead.
    pub async fn open_with(target: &DbTarget, acquire_timeout: Duration) -> Result<Self, DbError> {
        let described = target.describe();
        let pool = match target {
            DbTarget::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| DbError::Query {
                        target: described.clone(),
                        source: sqlx::Error::Io(e),
                    })?;
                }
                let opts = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // FULL: a commit is on disk before it returns (we ack after it).
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(10));
                // One connection: SQLite serialises writers anyway, and a second
                // connection could prepare against a schema cached before our
                // CREATE INDEX (SQLite then rejects the ON CONFLICT target).
                let pool = connect_sqlite(opts)
                    .await
                    .map_err(|source| DbError::Query {
                        target: described.clone(),
                        source,
                    })?;
                Pool::Sqlite(pool)
            }
            DbTarget::Postgres(opts) => Pool::Postgres(
                PgPoolOptions::new()
                    // The writer and the retention task; an export streams on one.
                    .max_connections(2)
                    .acquire_timeout(acquire_timeout)
                    .connect_lazy_with((**opts).clone()),
            ),
        };
        Ok(Self {
            pool,
            target: described,
            layout: None,
        })
    }

    /// Migrates the schema if needed (once per handle; safe from several
    /// analyzers starting at once, see [`crate::schema`]).
    pub async fn ensure_schema(&mut self) -> Result<Layout, DbError> {
        if let Some(layout) = self.layout {
            return Ok(layout);
        }
        let layout =
            crate::schema::migrate(&self.pool)
                .await
                .map_err(|source| DbError::Schema {
                    target: self.target.clone(),
                    source,
                })?;
        self.layout = Some(layout);
        Ok(layout)
    }

    /// Inserts `row` alone; `false` when a row with its frame id already exists.
    pub async fn insert(&mut self, row: &PostureRow) -> Result<bool, DbError> {
        let inserted = self.record(&[Entry { row, jpeg: None }]).await?;
        Ok(inserted.first().copied().unwrap_or(false))
    }

    /// Writes `entries` (rows and their images) in one transaction; for each,
    /// whether its row was new (`false`: the frame was already recorded).
    pub async fn record(&mut self, entries: &[Entry<'_>]) -> Result<Vec<bool>, DbError> {
        self.ensure_schema().await?;
        let err = |source| DbError::Query {
            target: self.target.clone(),
            source,
        };
        match &self.pool {
            Pool::Sqlite(p) => record_sqlite(p, entries).await.map_err(err),
            Pool::Postgres(p) => record_pg(p, entries).await.map_err(err),
        }
    }

    /// Every row, oldest first (for `local`'s summary and for tests).
    pub async fn rows(&mut self) -> Result<Vec<StoredRow>, DbError> {
        let layout = self.ensure_schema().await?;
        let sql = crate::schema::select_rows(&self.pool, layout, "ORDER BY l.id", false);
        let err = |source| DbError::Query {
            target: self.target.clone(),
            source,
        };
        match &self.pool {
            Pool::Sqlite(p) => {
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                    .fetch_all(p)
                    .await
                    .map_err(err)?;
                rows.iter()
                    .map(|r| stored_row!(r))
                    .collect::<Result<_, _>>()
                    .map_err(err)
            }
            Pool::Postgres(p) => {
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                    .fetch_all(p)
                    .await
                    .map_err(err)?;
                rows.iter()
                    .map(|r| stored_row!(r))
                    .collect::<Result<_, _>>()
                    .map_err(err)
            }
        }
    }

    /// The annotated image of a frame, if the database has it.
    pub async fn image(&mut self, frame_id: &str) -> Result<Option<Vec<u8>>, DbError> {
        self.ensure_schema().await?;
        let err = |source| DbError::Query {
            target: self.target.clone(),
            source,
        };
        match &self.pool {
            Pool::Sqlite(p) => {
                sqlx::query_scalar("SELECT jpeg FROM posture_image WHERE frame_id = ?1")
                    .bind(frame_id)
                    .fetch_optional(p)
                    .await
                    .map_err(err)
            }
            Pool::Postgres(p) => {
                sqlx::query_scalar("SELECT jpeg FROM posture_image WHERE frame_id = $1")
                    .bind(frame_id)
                    .fetch_optional(p)
                    .await
                    .map_err(err)
            }
        }
    }

    /// Where rows go (no credentials).
    pub fn target(&self) -> &str {
        &self.target
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }
}

const SQLITE_INSERT_ROW: &str = "INSERT INTO posture_log
    (pi_id, filename, received_time, analyzed_time, neck_angle, body_angle, posture_status, landmarks_detected, processed_by, frame_id)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
    ON CONFLICT (frame_id) DO NOTHING";

const SQLITE_INSERT_IMAGE: &str =
    "INSERT INTO posture_image (frame_id, pi_id, filename, analyzed_time, jpeg)
    VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (frame_id) DO NOTHING";

/// Plain parameters: PostgreSQL's assignment casts fit them to users'
/// legacy tables (INTEGER angles, TIMESTAMP times; the session is in UTC).
const PG_INSERT_ROW: &str = "INSERT INTO posture_log
    (pi_id, filename, received_time, analyzed_time, neck_angle, body_angle, posture_status, landmarks_detected, processed_by, frame_id)
    VALUES ($1, $2, $3::timestamptz, $4::timestamptz, $5::float8, $6::float8, $7, $8, $9, $10)
    ON CONFLICT (frame_id) DO NOTHING";

const PG_INSERT_IMAGE: &str =
    "INSERT INTO posture_image (frame_id, pi_id, filename, analyzed_time, jpeg)
    VALUES ($1, $2, $3, $4::timestamptz, $5) ON CONFLICT (frame_id) DO NOTHING";

/// Writes `entries` in one transaction on either pool (the body is the
/// same; the pool and statement types differ).
macro_rules! record_on {
    ($pool:expr, $insert_row:expr, $insert_image:expr, $entries:expr) => {{
        let mut tx = $pool.begin().await?;
        let mut inserted = Vec::with_capacity($entries.len());
        for e in $entries {
            let r = e.row;
            let n = sqlx::query($insert_row)
                .bind(&r.pi_id)
                .bind(&r.filename)
                .bind(&r.received_time)
                .bind(&r.analyzed_time)
                .bind(r.neck_angle)
                .bind(r.body_angle)
                .bind(&r.posture_status)
                .bind(r.landmarks_detected)
                .bind(&r.processed_by)
                .bind(&r.frame_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            inserted.push(n > 0);
            if let Some(jpeg) = e.jpeg {
                sqlx::query($insert_image)
                    .bind(&r.frame_id)
                    .bind(&r.pi_id)
                    .bind(&r.filename)
                    .bind(&r.analyzed_time)
                    .bind(jpeg)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(inserted)
    }};
}

async fn record_sqlite(pool: &SqlitePool, entries: &[Entry<'_>]) -> Result<Vec<bool>, sqlx::Error> {
    record_on!(pool, SQLITE_INSERT_ROW, SQLITE_INSERT_IMAGE, entries)
}

async fn record_pg(pool: &PgPool, entries: &[Entry<'_>]) -> Result<Vec<bool>, sqlx::Error> {
    record_on!(pool, PG_INSERT_ROW, PG_INSERT_IMAGE, entries)
}

/// How long a first open keeps retrying a busy SQLite file (the same as
/// the connection's busy timeout).
const SQLITE_OPEN_PATIENCE: Duration = Duration::from_secs(10);

/// Opens the one-connection SQLite pool. Switching a new file to WAL takes
/// an exclusive lock, and SQLite answers a connection that races another's
/// switch with `SQLITE_BUSY` at once (the busy handler is not consulted
/// there): several analyzers starting together on one file retry briefly
/// instead of failing.
async fn connect_sqlite(opts: SqliteConnectOptions) -> Result<SqlitePool, sqlx::Error> {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        match SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts.clone())
            .await
        {
            Err(sqlx::Error::Database(e))
                if e.code().as_deref() == Some("5") && started.elapsed() < SQLITE_OPEN_PATIENCE =>
            {
                tracing::debug!(error = %e, "SQLite file busy at open, retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

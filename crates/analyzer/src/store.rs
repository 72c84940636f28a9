//! Durable rows: the `posture_log` table (SQLite by default, PostgreSQL when
//! configured) and a local spool that stands in for it while the database is
//! unreachable.
//!
//! A frame counts as recorded once its row is either committed to the
//! database or appended and fsynced to the spool. Rows in the spool are
//! replayed in order, before any newer row, when the database answers again;
//! the unique `frame_id` index makes a replay after a crash (or a redelivered
//! frame) a no-op instead of a second row.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use sqlx::Row as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::record::PostureRow;

/// A database problem.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The connection string could not be parsed.
    #[error("invalid database URL")]
    BadUrl(#[source] sqlx::Error),
    /// Creating the schema failed.
    #[error("creating the posture_log schema on {target}")]
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

/// A problem with the local spool file (disk full, permissions).
#[derive(Debug, thiserror::Error)]
#[error("spool file {path}")]
pub struct SpoolError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
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

enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The `posture_log` table.
pub struct Database {
    pool: Pool,
    target: String,
    schema_ready: bool,
}

const SQLITE_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS posture_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        pi_id TEXT NOT NULL,
        filename TEXT NOT NULL,
        received_time TEXT NOT NULL,
        analyzed_time TEXT NOT NULL,
        neck_angle REAL,
        body_angle REAL,
        posture_status TEXT NOT NULL,
        landmarks_detected BOOLEAN NOT NULL,
        processed_by TEXT NOT NULL,
        frame_id TEXT)",
    "CREATE UNIQUE INDEX IF NOT EXISTS posture_log_frame_id ON posture_log (frame_id)",
];

const PG_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS posture_log (
        id BIGSERIAL PRIMARY KEY,
        pi_id TEXT NOT NULL,
        filename TEXT NOT NULL,
        received_time TIMESTAMPTZ NOT NULL,
        analyzed_time TIMESTAMPTZ NOT NULL,
        neck_angle DOUBLE PRECISION,
        body_angle DOUBLE PRECISION,
        posture_status TEXT NOT NULL,
        landmarks_detected BOOLEAN NOT NULL,
        processed_by TEXT NOT NULL,
        frame_id TEXT)",
    // Tables made by the earlier analyzer lack the de-duplication column.
    "ALTER TABLE posture_log ADD COLUMN IF NOT EXISTS frame_id TEXT",
    "CREATE UNIQUE INDEX IF NOT EXISTS posture_log_frame_id ON posture_log (frame_id)",
];

const SQLITE_INSERT: &str = "INSERT INTO posture_log
    (pi_id, filename, received_time, analyzed_time, neck_angle, body_angle, posture_status, landmarks_detected, processed_by, frame_id)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
    ON CONFLICT (frame_id) DO NOTHING";

const PG_INSERT: &str = "INSERT INTO posture_log
    (pi_id, filename, received_time, analyzed_time, neck_angle, body_angle, posture_status, landmarks_detected, processed_by, frame_id)
    VALUES ($1, $2, $3::timestamptz, $4::timestamptz, $5, $6, $7, $8, $9, $10)
    ON CONFLICT (frame_id) DO NOTHING";

/// A row as read back, with its database id.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredRow {
    /// The `id` column.
    pub id: i64,
    /// The other columns (times as the database prints them).
    pub row: PostureRow,
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
                    // FULL: a commit is on disk before insert returns (we ack after it).
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(10));
                // One connection: SQLite serialises writers anyway, and a second
                // connection could prepare against a schema cached before our
                // CREATE INDEX (SQLite then rejects the ON CONFLICT target).
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(opts)
                    .await
                    .map_err(|source| DbError::Query {
                        target: described.clone(),
                        source,
                    })?;
                Pool::Sqlite(pool)
            }
            DbTarget::Postgres(opts) => Pool::Postgres(
                PgPoolOptions::new()
                    // One analyzer writes one row at a time.
                    .max_connections(2)
                    .acquire_timeout(acquire_timeout)
                    .connect_lazy_with((**opts).clone()),
            ),
        };
        Ok(Self {
            pool,
            target: described,
            schema_ready: false,
        })
    }

    /// Creates the table and the de-duplication index if missing (once per process).
    pub async fn ensure_schema(&mut self) -> Result<(), DbError> {
        if self.schema_ready {
            return Ok(());
        }
        let err = |source| DbError::Schema {
            target: self.target.clone(),
            source,
        };
        match &self.pool {
            Pool::Sqlite(p) => {
                for &stmt in SQLITE_SCHEMA {
                    sqlx::query(stmt).execute(p).await.map_err(err)?;
                }
            }
            Pool::Postgres(p) => {
                for &stmt in PG_SCHEMA {
                    sqlx::query(stmt).execute(p).await.map_err(err)?;
                }
            }
        }
        self.schema_ready = true;
        Ok(())
    }

    /// Inserts `row`; `false` when a row with its frame id already exists.
    pub async fn insert(&mut self, row: &PostureRow) -> Result<bool, DbError> {
        self.ensure_schema().await?;
        let result = match &self.pool {
            Pool::Sqlite(p) => bind_row(sqlx::query(SQLITE_INSERT), row)
                .execute(p)
                .await
                .map(|r| r.rows_affected()),
            Pool::Postgres(p) => bind_row_pg(sqlx::query(PG_INSERT), row)
                .execute(p)
                .await
                .map(|r| r.rows_affected()),
        };
        result.map(|n| n > 0).map_err(|source| DbError::Query {
            target: self.target.clone(),
            source,
        })
    }

    /// Every row, oldest first (for `local`'s summary and for tests).
    pub async fn rows(&mut self) -> Result<Vec<StoredRow>, DbError> {
        self.ensure_schema().await?;
        let sql_pg = "SELECT id, pi_id, filename, received_time::text AS received_time, analyzed_time::text AS analyzed_time,
            neck_angle, body_angle, posture_status, landmarks_detected, processed_by, COALESCE(frame_id, '') AS frame_id
            FROM posture_log ORDER BY id";
        let sql_lite = "SELECT id, pi_id, filename, received_time, analyzed_time,
            neck_angle, body_angle, posture_status, landmarks_detected, processed_by, COALESCE(frame_id, '') AS frame_id
            FROM posture_log ORDER BY id";
        let err = |source| DbError::Query {
            target: self.target.clone(),
            source,
        };
        macro_rules! read {
            ($rows:expr) => {
                $rows
                    .iter()
                    .map(|r| {
                        Ok(StoredRow {
                            id: r.try_get("id")?,
                            row: PostureRow {
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
                            },
                        })
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
            };
        }
        match &self.pool {
            Pool::Sqlite(p) => {
                let rows = sqlx::query(sql_lite).fetch_all(p).await.map_err(err)?;
                read!(rows).map_err(err)
            }
            Pool::Postgres(p) => {
                let rows = sqlx::query(sql_pg).fetch_all(p).await.map_err(err)?;
                read!(rows).map_err(err)
            }
        }
    }

    /// Where rows go (no credentials).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }
}

fn bind_row<'q>(
    q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    row: &'q PostureRow,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    q.bind(&row.pi_id)
        .bind(&row.filename)
        .bind(&row.received_time)
        .bind(&row.analyzed_time)
        .bind(row.neck_angle)
        .bind(row.body_angle)
        .bind(&row.posture_status)
        .bind(row.landmarks_detected)
        .bind(&row.processed_by)
        .bind(&row.frame_id)
}

fn bind_row_pg<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    row: &'q PostureRow,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    q.bind(&row.pi_id)
        .bind(&row.filename)
        .bind(&row.received_time)
        .bind(&row.analyzed_time)
        .bind(row.neck_angle)
        .bind(row.body_angle)
        .bind(&row.posture_status)
        .bind(row.landmarks_detected)
        .bind(&row.processed_by)
        .bind(&row.frame_id)
}

/// Append-only, fsynced JSON-lines file of rows waiting for the database.
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
        spool.depth = spool.read_all()?.len();
        Ok(spool)
    }

    /// Rows waiting.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The spool file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `row` and fsyncs: after this returns the row survives a crash.
    pub fn push(&mut self, row: &PostureRow) -> Result<(), SpoolError> {
        let err = |source| SpoolError {
            path: self.path.clone(),
            source,
        };
        let mut line = serde_json::to_string(row).map_err(|e| err(std::io::Error::other(e)))?;
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

    /// The rows in order. An unreadable line (only possible if the file was
    /// edited by hand: torn lines are cut on open) is skipped with a warning.
    pub fn read_all(&self) -> Result<Vec<PostureRow>, SpoolError> {
        let f = File::open(&self.path).map_err(|source| SpoolError {
            path: self.path.clone(),
            source,
        })?;
        let mut rows = Vec::new();
        for (n, line) in BufReader::new(f).lines().enumerate() {
            let line = line.map_err(|source| SpoolError {
                path: self.path.clone(),
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(&line) {
                Ok(row) => rows.push(row),
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), line = n + 1, error = %e, "skipping an unreadable spool line")
                }
            }
        }
        Ok(rows)
    }

    /// Empties the spool (after every row reached the database).
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

/// How a row was made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// Committed to the database.
    Inserted,
    /// The database already had this frame (redelivery).
    Duplicate,
    /// Database unreachable: kept in the spool for replay.
    Spooled,
}

/// The row sink the pipeline writes to: database, with the spool behind it.
pub struct Store {
    db: Database,
    spool: Spool,
    depth_gauge: Gauge,
    /// Logged once per outage, not once per row.
    outage_logged: bool,
}

impl Store {
    /// A store over `db` with its spool at `spool_path`; `depth_gauge` tracks
    /// the spool depth for `/metrics`.
    pub fn new(db: Database, spool_path: &Path, depth_gauge: Gauge) -> Result<Self, SpoolError> {
        let spool = Spool::open(spool_path)?;
        depth_gauge.set(spool.depth() as i64);
        if spool.depth() > 0 {
            tracing::info!(rows = spool.depth(), path = %spool_path.display(), "spooled rows from an earlier run will be replayed");
        }
        Ok(Self {
            db,
            spool,
            depth_gauge,
            outage_logged: false,
        })
    }

    /// Makes `row` durable: in the database when it answers, else in the
    /// spool. Only a spool (disk) failure is an error.
    pub async fn record(&mut self, row: &PostureRow) -> Result<Recorded, SpoolError> {
        if self.spool.depth() == 0 || self.flush().await.is_ok() {
            match self.db.insert(row).await {
                Ok(true) => {
                    self.outage_ended();
                    return Ok(Recorded::Inserted);
                }
                Ok(false) => {
                    self.outage_ended();
                    return Ok(Recorded::Duplicate);
                }
                Err(e) => self.outage(&e),
            }
        }
        self.spool.push(row)?;
        self.depth_gauge.set(self.spool.depth() as i64);
        Ok(Recorded::Spooled)
    }

    /// Replays the spool into the database, in order; returns the rows replayed.
    pub async fn flush(&mut self) -> Result<usize, DbError> {
        if self.spool.depth() == 0 {
            return Ok(0);
        }
        let rows = self.spool.read_all().map_err(|e| DbError::Query {
            target: self.db.target().to_string(),
            source: sqlx::Error::Io(std::io::Error::other(e)),
        })?;
        for row in &rows {
            if let Err(e) = self.db.insert(row).await {
                self.outage(&e);
                return Err(e);
            }
        }
        if let Err(e) = self.spool.clear() {
            // Rows are in the database; leaving them in the spool only means
            // a harmless (de-duplicated) replay later.
            tracing::warn!(error = %crate::error_chain(&e), "could not clear the spool after replay");
        } else {
            self.depth_gauge.set(0);
        }
        tracing::info!(
            rows = rows.len(),
            target = self.db.target(),
            "replayed spooled rows into the database"
        );
        self.outage_ended();
        Ok(rows.len())
    }

    /// Rows waiting in the spool.
    pub fn spool_depth(&self) -> usize {
        self.spool.depth()
    }

    /// The database behind the store.
    pub fn database(&mut self) -> &mut Database {
        &mut self.db
    }

    fn outage(&mut self, e: &DbError) {
        if !self.outage_logged {
            tracing::warn!(error = %crate::error_chain(e), spool = %self.spool.path().display(), "database unreachable: spooling rows locally until it returns");
            self.outage_logged = true;
        } else {
            tracing::debug!(error = %crate::error_chain(e), "database still unreachable");
        }
    }

    fn outage_ended(&mut self) {
        if self.outage_logged {
            tracing::info!(target = self.db.target(), "database reachable again");
            self.outage_logged = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    pub(crate) fn row(id: &str) -> PostureRow {
        PostureRow {
            pi_id: "pi1".into(),
            filename: format!("pi1_{id}.jpg"),
            received_time: "2026-11-23T10:00:00Z".into(),
            analyzed_time: "2026-11-23T10:00:01Z".into(),
            neck_angle: Some(12.5),
            body_angle: None,
            posture_status: "Good".into(),
            landmarks_detected: true,
            processed_by: "node-a".into(),
            frame_id: id.into(),
        }
    }

    #[test]
    fn resolve_prefers_url_then_legacy_vars_then_sqlite() {
        let fallback = Path::new("./posture.db");
        let none = LegacyDbVars::default();
        assert!(
            matches!(DbTarget::resolve(None, &none, fallback).unwrap(), DbTarget::Sqlite(p) if p == fallback)
        );
        let t = DbTarget::resolve(Some("postgres://u:p@db.example:6543/farm"), &none, fallback)
            .unwrap();
        assert_eq!(t.describe(), "postgres://db.example:6543/farm");
        let t = DbTarget::resolve(Some("sqlite:/tmp/x.db"), &none, fallback).unwrap();
        assert_eq!(t.describe(), "sqlite:/tmp/x.db");
        let legacy = LegacyDbVars {
            enabled: Some("True".into()),
            host: Some("10.0.0.5".into()),
            port: None,
            name: Some("posture".into()),
            user: Some("analyzer".into()),
            password: Some("p@ss:word/".into()),
            ..LegacyDbVars::default()
        };
        let t = DbTarget::resolve(None, &legacy, fallback).unwrap();
        assert_eq!(t.describe(), "postgres://10.0.0.5:5432/posture");
        let off = LegacyDbVars {
            enabled: Some("false".into()),
            ..legacy
        };
        assert!(matches!(
            DbTarget::resolve(None, &off, fallback).unwrap(),
            DbTarget::Sqlite(_)
        ));
        assert!(DbTarget::resolve(Some("mysql://nope"), &none, fallback).is_err());
    }

    #[test]
    fn legacy_vars_set_the_tls_mode() {
        let vars = |mode: &str| LegacyDbVars {
            enabled: Some("true".into()),
            host: Some("db".into()),
            sslmode: Some(mode.into()),
            sslrootcert: Some("/etc/ca.pem".into()),
            ..LegacyDbVars::default()
        };
        let mode = |v: &LegacyDbVars| match DbTarget::resolve(None, v, Path::new("x")).unwrap() {
            DbTarget::Postgres(o) => o.get_ssl_mode(),
            DbTarget::Sqlite(_) => panic!("postgres expected"),
        };
        assert!(matches!(mode(&vars("verify-full")), PgSslMode::VerifyFull));
        assert!(matches!(mode(&vars("require")), PgSslMode::Require));
        assert!(DbTarget::resolve(None, &vars("verify_full"), Path::new("x")).is_err());
    }

    #[tokio::test]
    async fn sqlite_insert_is_idempotent_per_frame() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Database::open(&DbTarget::Sqlite(dir.path().join("p.db")))
            .await
            .unwrap();
        assert!(db.insert(&row("a")).await.unwrap());
        assert!(!db.insert(&row("a")).await.unwrap());
        assert!(db.insert(&row("b")).await.unwrap());
        let rows = db.rows().await.unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].row, row("a"));
        assert!(rows[1].id > rows[0].id);
    }

    #[test]
    fn spool_survives_reopen_and_skips_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool/rows.jsonl");
        let mut s = Spool::open(&path).unwrap();
        s.push(&row("a")).unwrap();
        s.push(&row("b")).unwrap();
        drop(s);
        // A crash mid-append leaves half a line.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"pi_id\":\"pi1\",\"filen")
            .unwrap();
        let mut s = Spool::open(&path).unwrap();
        assert_eq!(s.depth(), 2);
        let ids: Vec<_> = s
            .read_all()
            .unwrap()
            .into_iter()
            .map(|r| r.frame_id)
            .collect();
        assert_eq!(ids, ["a", "b"]);
        s.clear().unwrap();
        drop(s);
        assert_eq!(Spool::open(&path).unwrap().depth(), 0);
    }

    #[test]
    fn a_row_appended_after_a_torn_line_is_not_swallowed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.jsonl");
        let mut s = Spool::open(&path).unwrap();
        s.push(&row("a")).unwrap();
        drop(s);
        // Power loss mid-append: half a line, never acknowledged.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"pi_id\":\"pi1\",\"filen")
            .unwrap();
        let mut s = Spool::open(&path).unwrap();
        // This row is fsynced and acknowledged: it must survive replay.
        s.push(&row("b")).unwrap();
        let ids: Vec<_> = s
            .read_all()
            .unwrap()
            .into_iter()
            .map(|r| r.frame_id)
            .collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(s.depth(), 2);
    }

    #[tokio::test]
    async fn unreachable_postgres_spools_and_replays_in_order() {
        let dir = tempfile::tempdir().unwrap();
        // Nothing listens on port 1: every query fails fast.
        let target = DbTarget::resolve(
            Some("postgres://u:p@127.0.0.1:1/db"),
            &LegacyDbVars::default(),
            dir.path(),
        )
        .unwrap();
        let db = Database::open_with(&target, Duration::from_millis(300))
            .await
            .unwrap();
        let gauge = Gauge::default();
        let spool_path = dir.path().join("spool.jsonl");
        let mut store = Store::new(db, &spool_path, gauge.clone()).unwrap();
        assert_eq!(store.record(&row("a")).await.unwrap(), Recorded::Spooled);
        assert_eq!(store.record(&row("b")).await.unwrap(), Recorded::Spooled);
        assert_eq!(gauge.get(), 2);
        assert!(store.flush().await.is_err());
        // A second analyzer cannot take the same spool while this one runs.
        assert!(Spool::open(&spool_path).is_err());
        drop(store);
        // The "database comes back": swap in a reachable SQLite database and
        // keep the same spool; rows replay in order before the new one.
        let sqlite = Database::open(&DbTarget::Sqlite(dir.path().join("p.db")))
            .await
            .unwrap();
        let mut store = Store::new(sqlite, &spool_path, gauge.clone()).unwrap();
        assert_eq!(store.spool_depth(), 2);
        assert_eq!(store.record(&row("c")).await.unwrap(), Recorded::Inserted);
        assert_eq!(gauge.get(), 0);
        assert_eq!(store.record(&row("a")).await.unwrap(), Recorded::Duplicate);
        let ids: Vec<_> = store
            .database()
            .rows()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.row.frame_id)
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }
}

//! Schema migrations of `posture_log` and `posture_image`, safe when several
//! analyzers start at once against a fresh database.
//!
//! Versions applied are recorded in `posture_farm_schema`. On PostgreSQL the
//! migration runs in one transaction holding a transaction-scoped advisory
//! lock, so concurrent first starts queue on the lock and the later ones
//! find the work done (plain `CREATE TABLE IF NOT EXISTS` races: two
//! sessions can both decide to create and one fails on `pg_type`). On SQLite
//! it runs under `BEGIN IMMEDIATE` (the database's write lock).
//!
//! Users' tables from the earlier Python analyzer (`id SERIAL`, TIMESTAMP
//! times, INTEGER angles, no `frame_id`) are migrated in place: the
//! de-duplication column and indexes are added, nothing is rewritten. Rows
//! are written with PostgreSQL's assignment casts (angles rounded into
//! INTEGER columns, times converted to UTC for TIMESTAMP columns, the
//! session time zone being UTC) and read back through explicit casts.

use sqlx::Row as _;

use crate::db::Pool;

/// The schema version this build migrates to.
pub const SCHEMA_VERSION: i64 = 2;

/// Key of the PostgreSQL advisory lock taken while migrating ("posture" in ASCII).
const LOCK_KEY: i64 = 0x0070_6f73_7475_7265;

/// How the existing `posture_log` table is typed (PostgreSQL legacy tables).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// `received_time`/`analyzed_time` are `TIMESTAMP` (without time zone,
    /// holding UTC) rather than `TIMESTAMPTZ`.
    pub naive_times: bool,
}

struct Step {
    version: i64,
    description: &'static str,
    sqlite: &'static [&'static str],
    pg: &'static [&'static str],
}

const STEPS: &[Step] = &[
    Step {
        version: 1,
        description: "posture_log with a unique frame_id",
        sqlite: &[
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
            // (a frame_id column is added to older tables before this)
            "CREATE UNIQUE INDEX IF NOT EXISTS posture_log_frame_id ON posture_log (frame_id)",
        ],
        pg: &[
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
            "ALTER TABLE posture_log ADD COLUMN IF NOT EXISTS frame_id TEXT",
            "CREATE UNIQUE INDEX IF NOT EXISTS posture_log_frame_id ON posture_log (frame_id)",
        ],
    },
    Step {
        version: 2,
        description: "posture_image; posture_log and posture_image indexed by camera and time",
        sqlite: &[
            "CREATE TABLE IF NOT EXISTS posture_image (
                frame_id TEXT PRIMARY KEY,
                pi_id TEXT NOT NULL,
                filename TEXT NOT NULL,
                analyzed_time TEXT NOT NULL,
                jpeg BLOB NOT NULL)",
            "CREATE INDEX IF NOT EXISTS posture_log_pi_id_received_time ON posture_log (pi_id, received_time)",
            "CREATE INDEX IF NOT EXISTS posture_image_pi_id_analyzed_time ON posture_image (pi_id, analyzed_time)",
        ],
        pg: &[
            "CREATE TABLE IF NOT EXISTS posture_image (
                frame_id TEXT PRIMARY KEY,
                pi_id TEXT NOT NULL,
                filename TEXT NOT NULL,
                analyzed_time TIMESTAMPTZ NOT NULL,
                jpeg BYTEA NOT NULL)",
            "CREATE INDEX IF NOT EXISTS posture_log_pi_id_received_time ON posture_log (pi_id, received_time)",
            "CREATE INDEX IF NOT EXISTS posture_image_pi_id_analyzed_time ON posture_image (pi_id, analyzed_time)",
        ],
    },
];

/// Brings the schema to [`SCHEMA_VERSION`] and reports the table's layout.
pub(crate) async fn migrate(pool: &Pool) -> Result<Layout, sqlx::Error> {
    match pool {
        Pool::Sqlite(p) => {
            migrate_sqlite(p).await?;
            Ok(Layout::default())
        }
        Pool::Postgres(p) => {
            migrate_pg(p).await?;
            layout(pool).await
        }
    }
}

/// How the existing `posture_log` is typed, without changing anything (a
/// read-only session may ask).
pub async fn layout(pool: &Pool) -> Result<Layout, sqlx::Error> {
    let Pool::Postgres(p) = pool else {
        return Ok(Layout::default());
    };
    let naive: Option<String> = sqlx::query_scalar(
        "SELECT data_type::text FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = 'posture_log'
           AND column_name = 'received_time'",
    )
    .fetch_optional(p)
    .await?;
    Ok(Layout {
        naive_times: naive.as_deref() == Some("timestamp without time zone"),
    })
}

async fn migrate_pg(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS posture_farm_schema (
            version INTEGER PRIMARY KEY,
            description TEXT NOT NULL,
            applied_time TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .execute(&mut *tx)
    .await?;
    let current: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0)::int8 FROM posture_farm_schema")
            .fetch_one(&mut *tx)
            .await?;
    for step in STEPS.iter().filter(|s| s.version > current) {
        for &stmt in step.pg {
            sqlx::query(stmt).execute(&mut *tx).await?;
        }
        sqlx::query("INSERT INTO posture_farm_schema (version, description) VALUES ($1, $2)")
            .bind(step.version as i32)
            .bind(step.description)
            .execute(&mut *tx)
            .await?;
        tracing::info!(
            version = step.version,
            what = step.description,
            "database schema migrated"
        );
    }
    tx.commit().await
}

async fn migrate_sqlite(pool: &sqlx::SqlitePool) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    // The write lock now, not at the first write: two processes cannot both
    // read "version 0" and then both migrate.
    let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS posture_farm_schema (
            version INTEGER PRIMARY KEY,
            description TEXT NOT NULL,
            applied_time TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))",
    )
    .execute(&mut *tx)
    .await?;
    let current: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM posture_farm_schema")
            .fetch_one(&mut *tx)
            .await?;
    for step in STEPS.iter().filter(|s| s.version > current) {
        if step.version == 1 {
            // Tables of earlier versions lack frame_id (SQLite has no ADD COLUMN IF NOT EXISTS).
            sqlx::query(step.sqlite[0]).execute(&mut *tx).await?;
            let has: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pragma_table_info('posture_log') WHERE name = 'frame_id'",
            )
            .fetch_one(&mut *tx)
            .await?;
            if has == 0 {
                sqlx::query("ALTER TABLE posture_log ADD COLUMN frame_id TEXT")
                    .execute(&mut *tx)
                    .await?;
            }
        }
        for &stmt in step.sqlite {
            sqlx::query(stmt).execute(&mut *tx).await?;
        }
        sqlx::query("INSERT INTO posture_farm_schema (version, description) VALUES (?1, ?2)")
            .bind(step.version)
            .bind(step.description)
            .execute(&mut *tx)
            .await?;
        tracing::info!(
            version = step.version,
            what = step.description,
            "database schema migrated"
        );
    }
    tx.commit().await
}

/// The versions recorded in `posture_farm_schema`, with how many times each
/// was applied (tests: concurrent first starts migrate once).
pub async fn applied_versions(db: &crate::Database) -> Result<Vec<(i64, i64)>, sqlx::Error> {
    let sql = "SELECT version::int8 AS version, COUNT(*)::int8 AS n FROM posture_farm_schema GROUP BY version ORDER BY version";
    let rows = match db.pool() {
        Pool::Sqlite(p) => sqlx::query(sqlx::AssertSqlSafe(sql.replace("::int8", "")))
            .fetch_all(p)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("version")?, r.try_get("n")?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?,
        Pool::Postgres(p) => sqlx::query(sql)
            .fetch_all(p)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("version")?, r.try_get("n")?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?,
    };
    Ok(rows)
}

/// RFC 3339 UTC with microseconds, as rows are written ([`crate::record::row_time`]).
const PG_TIME_FORMAT: &str = "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'";

/// A time column as the text rows carry.
fn time_column(pool: &Pool, layout: Layout, column: &str) -> String {
    match (pool, layout.naive_times) {
        (Pool::Sqlite(_), _) => format!("l.{column}"),
        (Pool::Postgres(_), true) => format!("to_char(l.{column}, {PG_TIME_FORMAT})"),
        (Pool::Postgres(_), false) => {
            format!("to_char(l.{column} AT TIME ZONE 'UTC', {PG_TIME_FORMAT})")
        }
    }
}

/// A bind parameter compared with a time column (`$n`/`?n`, RFC 3339 text).
pub(crate) fn time_param(pool: &Pool, layout: Layout, n: usize) -> String {
    match (pool, layout.naive_times) {
        (Pool::Sqlite(_), _) => format!("?{n}"),
        (Pool::Postgres(_), true) => format!("(${n}::timestamptz AT TIME ZONE 'UTC')"),
        (Pool::Postgres(_), false) => format!("${n}::timestamptz"),
    }
}

/// `SELECT` of `posture_log` rows (alias `l`) in the shape
/// [`crate::db::stored_row`] reads, plus the image as `jpeg` (NULL when
/// absent) if `with_images`; `tail` is appended (`WHERE …`, `ORDER BY …`).
pub(crate) fn select_rows(pool: &Pool, layout: Layout, tail: &str, with_images: bool) -> String {
    let (id, angle) = match pool {
        Pool::Sqlite(_) => ("l.id", "CAST(l.{} AS REAL)"),
        Pool::Postgres(_) => ("l.id::int8", "l.{}::float8"),
    };
    let (image, join) = if with_images {
        (
            ", i.jpeg AS jpeg",
            " LEFT JOIN posture_image i ON i.frame_id = l.frame_id",
        )
    } else {
        ("", "")
    };
    format!(
        "SELECT {id} AS id, l.pi_id, l.filename, {} AS received_time, {} AS analyzed_time,
            {} AS neck_angle, {} AS body_angle, l.posture_status, l.landmarks_detected,
            l.processed_by, l.frame_id{image}
         FROM posture_log l{join} {tail}",
        time_column(pool, layout, "received_time"),
        time_column(pool, layout, "analyzed_time"),
        angle.replace("{}", "neck_angle"),
        angle.replace("{}", "body_angle"),
    )
}

//! Writing results the way the analyzers do, in bulk: for the browser
//! tests, the benchmark and demos. Creates the schema of the contract
//! (`posture_log` through the analyzer's own schema code, `posture_image`
//! and both time indexes here, all `IF NOT EXISTS`) and inserts frames in
//! batches inside one transaction each. Not used by the dashboard itself,
//! which never writes.

use jiff::Timestamp;
use posture_analyzer::record::row_time;
use posture_analyzer::store::DbTarget;
use sqlx::QueryBuilder;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

/// Rows per INSERT statement (10 bound values each: under SQLite's and
/// PostgreSQL's parameter limits).
const BATCH: usize = 1000;

/// A seeding problem.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The analyzer's schema code failed.
    #[error("creating posture_log")]
    Schema(#[source] posture_analyzer::store::DbError),
    /// A statement failed.
    #[error("seeding the database")]
    Sql(#[from] sqlx::Error),
}

/// One frame to write.
#[derive(Clone, Debug)]
pub struct SeedFrame {
    /// Camera id.
    pub camera: String,
    /// Received time (analysed one second later).
    pub received: Timestamp,
    /// Neck angle.
    pub neck: Option<f64>,
    /// Torso angle.
    pub torso: Option<f64>,
    /// `Good`, `Bad` or `No person detected`.
    pub status: String,
    /// The frame id (unique).
    pub frame_id: String,
    /// An annotated image to store with it.
    pub jpeg: Option<Vec<u8>>,
}

enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A writable connection for seeding.
pub struct Seeder {
    pool: Pool,
}

const LITE_EXTRA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS posture_image (frame_id TEXT PRIMARY KEY, pi_id TEXT NOT NULL, \
     filename TEXT NOT NULL, analyzed_time TEXT NOT NULL, jpeg BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS posture_log_pi_id_received_time ON posture_log (pi_id, received_time)",
    "CREATE INDEX IF NOT EXISTS posture_image_pi_id_analyzed_time ON posture_image (pi_id, analyzed_time)",
];

const PG_EXTRA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS posture_image (frame_id TEXT PRIMARY KEY, pi_id TEXT NOT NULL, \
     filename TEXT NOT NULL, analyzed_time TIMESTAMPTZ NOT NULL, jpeg BYTEA NOT NULL)",
    "CREATE INDEX IF NOT EXISTS posture_log_pi_id_received_time ON posture_log (pi_id, received_time)",
    "CREATE INDEX IF NOT EXISTS posture_image_pi_id_analyzed_time ON posture_image (pi_id, analyzed_time)",
];

impl Seeder {
    /// Opens `target` for writing and creates the schema.
    pub async fn open(target: &DbTarget) -> Result<Self, SeedError> {
        let mut db = posture_analyzer::Database::open(target)
            .await
            .map_err(SeedError::Schema)?;
        db.ensure_schema().await.map_err(SeedError::Schema)?;
        db.close().await;
        let pool = match target {
            DbTarget::Sqlite(path) => {
                let opts = SqliteConnectOptions::new()
                    .filename(path)
                    .busy_timeout(std::time::Duration::from_secs(10));
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(opts)
                    .await?;
                for &s in LITE_EXTRA {
                    sqlx::query(s).execute(&pool).await?;
                }
                Pool::Sqlite(pool)
            }
            DbTarget::Postgres(opts) => {
                let pool = PgPoolOptions::new()
                    .max_connections(1)
                    .connect_with((**opts).clone())
                    .await?;
                for &s in PG_EXTRA {
                    sqlx::query(s).execute(&pool).await?;
                }
                Pool::Postgres(pool)
            }
        };
        Ok(Self { pool })
    }

    /// Inserts `frames` (and their images), one transaction per batch.
    pub async fn insert(&self, frames: &[SeedFrame]) -> Result<(), SeedError> {
        // One body for both backends; PostgreSQL casts the time text.
        macro_rules! batch {
            ($pool:expr, $cast:expr, $chunk:expr) => {{
                let mut tx = $pool.begin().await?;
                let mut q = QueryBuilder::new(LOG_INSERT);
                q.push_values($chunk, |mut b, f| {
                    b.push_bind(&f.camera)
                        .push_bind(format!("{}_{}.jpg", f.camera, f.frame_id))
                        .push_bind(row_time(f.received))
                        .push_unseparated($cast)
                        .push_bind(row_time(analyzed(f)))
                        .push_unseparated($cast)
                        .push_bind(f.neck)
                        .push_bind(f.torso)
                        .push_bind(&f.status)
                        .push_bind(f.neck.is_some())
                        .push_bind("seed")
                        .push_bind(&f.frame_id);
                });
                q.build().execute(&mut *tx).await?;
                let imgs: Vec<&SeedFrame> = $chunk.iter().filter(|f| f.jpeg.is_some()).collect();
                if !imgs.is_empty() {
                    let mut q = QueryBuilder::new(IMAGE_INSERT);
                    q.push_values(imgs, |mut b, f| {
                        b.push_bind(&f.frame_id)
                            .push_bind(&f.camera)
                            .push_bind(format!("{}_{}.jpg", f.camera, f.frame_id))
                            .push_bind(row_time(analyzed(f)))
                            .push_unseparated($cast)
                            .push_bind(f.jpeg.clone().unwrap_or_default());
                    });
                    q.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }};
        }
        for chunk in frames.chunks(BATCH) {
            match &self.pool {
                Pool::Sqlite(p) => batch!(p, "", chunk),
                Pool::Postgres(p) => batch!(p, "::timestamptz", chunk),
            }
        }
        Ok(())
    }

    /// Deletes the stored image of `frame_id` (what retention does).
    pub async fn delete_image(&self, frame_id: &str) -> Result<(), SeedError> {
        match &self.pool {
            Pool::Sqlite(p) => {
                sqlx::query("DELETE FROM posture_image WHERE frame_id = ?1")
                    .bind(frame_id)
                    .execute(p)
                    .await?;
            }
            Pool::Postgres(p) => {
                sqlx::query("DELETE FROM posture_image WHERE frame_id = $1")
                    .bind(frame_id)
                    .execute(p)
                    .await?;
            }
        }
        Ok(())
    }

    /// Closes the connection.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }
}

const LOG_INSERT: &str = "INSERT INTO posture_log (pi_id, filename, received_time, analyzed_time, \
    neck_angle, body_angle, posture_status, landmarks_detected, processed_by, frame_id) ";
const IMAGE_INSERT: &str =
    "INSERT INTO posture_image (frame_id, pi_id, filename, analyzed_time, jpeg) ";

fn analyzed(f: &SeedFrame) -> Timestamp {
    f.received
        .checked_add(jiff::SignedDuration::from_secs(1))
        .unwrap_or(f.received)
}

/// A frame judged by the default thresholds (40° neck, 10° torso);
/// `None` angles mean nobody was in view.
pub fn judged(
    camera: &str,
    received: Timestamp,
    angles: Option<(f64, f64)>,
    frame_id: String,
) -> SeedFrame {
    let status = match angles {
        Some((n, t)) if n < 40.0 && t < 10.0 => "Good",
        Some(_) => "Bad",
        None => "No person detected",
    };
    SeedFrame {
        camera: camera.to_string(),
        received,
        neck: angles.map(|a| a.0),
        torso: angles.map(|a| a.1),
        status: status.into(),
        frame_id,
        jpeg: None,
    }
}

/// `rows` synthetic frames from `cameras` cameras (`cam01`, `cam02`, …),
/// spread evenly over the `span_secs` before `end`, round-robin over the
/// cameras; angles drift slowly with some noise, every 25th frame has
/// nobody in view.
pub fn synthetic(cameras: usize, rows: usize, end: Timestamp, span_secs: i64) -> Vec<SeedFrame> {
    let cameras = cameras.max(1);
    let step = span_secs as f64 / rows.max(1) as f64;
    (0..rows)
        .map(|i| {
            let cam = format!("cam{:02}", i % cameras + 1);
            let back = (rows - i) as f64 * step;
            let received = end
                .checked_sub(jiff::SignedDuration::from_secs_f64(back))
                .unwrap_or(end);
            let x = i as f64;
            // Cheap deterministic noise.
            let noise = ((i.wrapping_mul(2_654_435_761) % 1000) as f64 / 1000.0 - 0.5) * 8.0;
            let angles = (i % 25 != 0).then(|| {
                (
                    (28.0 + 18.0 * (x / 900.0).sin() + noise).max(0.0),
                    (7.0 + 5.0 * (x / 1300.0).cos() + noise / 3.0).max(0.0),
                )
            });
            judged(&cam, received, angles, format!("seed{i:08}"))
        })
        .collect()
}

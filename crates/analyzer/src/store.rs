//! The durable write path for a frame's row and image: the database (see
//! [`crate::db`]) with a local spool (see [`crate::spool`]) standing in for
//! it while it is unreachable.
//!
//! A frame counts as recorded once its row (and image, when images go to
//! the database) is either committed or appended and fsynced to the spool.
//! Frames that arrive together are recorded together
//! ([`Store::record_group`]): one transaction, or one spool append and
//! fsync, for the group.
//! Spooled frames are replayed in order, before any newer one, when the
//! database answers again: incrementally, in batches of one transaction,
//! from the offset reached so far (an outage of n frames costs O(n), not
//! O(n²)). While the database is down it is retried with backoff, not once
//! per frame. A row the database refuses for good (a constraint of a user's
//! table, bad data) is kept in the dead-letter folder instead of blocking
//! every row after it.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use posture_core::backoff::Backoff;
use tokio::time::Instant;

use crate::deadletter::{DeadLetterLimits, DeadLetters};
use crate::metrics::{KindLabels, Metrics, ReasonLabels};
use crate::payload::{RejectReason, Rejected};
use crate::record::PostureRow;

pub use crate::db::{Database, DbError, DbTarget, Entry, LegacyDbVars, StoredRow};
pub use crate::spool::{Spool, SpoolEntry, SpoolError, Spooled};

/// How a frame was made durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// Committed to the database.
    Inserted,
    /// The database already had this frame (redelivery).
    Duplicate,
    /// Database unreachable: kept in the spool for replay.
    Spooled,
    /// The database refused this row for good (the reason, one line); the
    /// caller keeps the frame in the dead-letter folder.
    Rejected(String),
}

impl Recorded {
    /// A committed row: new, or already there (`inserted == false`).
    fn new(inserted: bool) -> Self {
        if inserted {
            Recorded::Inserted
        } else {
            Recorded::Duplicate
        }
    }
}

/// Spooled entries replayed per transaction.
const REPLAY_BATCH: usize = 64;

/// The row sink the pipeline writes to: database, with the spool behind it.
pub struct Store {
    db: Database,
    spool: Spool,
    /// Bytes at the start of the spool already in the database.
    replayed: u64,
    /// Entries in those bytes.
    replayed_entries: usize,
    metrics: Metrics,
    dead: Arc<Mutex<DeadLetters>>,
    backoff: Backoff,
    /// Consecutive failed attempts to reach the database.
    failures: u32,
    /// No database attempt before this (reconnects are rate-limited).
    retry_at: Option<Instant>,
}

impl Store {
    /// A store over `db` with its spool at `spool_path`; the spool depth,
    /// database errors and rejected rows are reported through `metrics`.
    /// Rows the database refuses go to `dead_letter/` beside the spool's
    /// folder until [`Store::set_dead_letters`] says otherwise.
    pub fn new(db: Database, spool_path: &Path, metrics: &Metrics) -> Result<Self, SpoolError> {
        let spool = Spool::open(spool_path)?;
        metrics.spool_depth.set(spool.depth() as i64);
        if spool.depth() > 0 {
            tracing::info!(rows = spool.depth(), path = %spool_path.display(), "spooled rows from an earlier run will be replayed");
        }
        let base = spool_path
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("."));
        Ok(Self {
            db,
            spool,
            replayed: 0,
            replayed_entries: 0,
            metrics: metrics.clone(),
            dead: Arc::new(Mutex::new(DeadLetters::open(
                base,
                DeadLetterLimits::default(),
                metrics.dead_letter.clone(),
            ))),
            backoff: Backoff {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(30),
                jitter: 0.0,
            },
            failures: 0,
            retry_at: None,
        })
    }

    /// Where rows the database refuses are kept.
    pub fn set_dead_letters(&mut self, dead: Arc<Mutex<DeadLetters>>) {
        self.dead = dead;
    }

    /// Makes a frame durable: in the database when it answers, else in the
    /// spool. Only a spool (disk) failure is an error.
    pub async fn record(
        &mut self,
        row: &PostureRow,
        jpeg: Option<&[u8]>,
    ) -> Result<Recorded, SpoolError> {
        let mut recorded = self.record_group(&[Entry { row, jpeg }]).await?;
        // record_group answers once per entry.
        Ok(recorded
            .pop()
            .unwrap_or_else(|| Recorded::Rejected("no result for the frame".into())))
    }

    /// Makes a group of frames durable together (a group commit): one
    /// database transaction for all of them when the database answers, else
    /// one append and one fsync of the spool. Returns how each frame was
    /// recorded, in order. A row the database refuses for good is found by
    /// recording the group's frames one by one, and only it is
    /// [`Recorded::Rejected`]. Only a spool (disk) failure is an error, and
    /// then no frame of the group is recorded.
    pub async fn record_group(
        &mut self,
        entries: &[Entry<'_>],
    ) -> Result<Vec<Recorded>, SpoolError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        if self.may_try_db() && (self.pending() == 0 || self.flush().await.is_ok()) {
            match self.db.record(entries).await {
                Ok(inserted) => {
                    self.db_ok();
                    return Ok(inserted.into_iter().map(Recorded::new).collect());
                }
                Err(e) if e.is_permanent() && entries.len() > 1 => {
                    self.db_ok();
                    return self.record_one_by_one(entries).await;
                }
                Err(e) if e.is_permanent() => {
                    self.db_ok();
                    self.count_error("permanent");
                    return Ok(vec![Recorded::Rejected(crate::error_chain(&e))]);
                }
                Err(e) => self.db_failed(&e),
            }
        }
        self.spool_group(entries)
    }

    /// A group the database refused: each frame in its own transaction, so
    /// only the row(s) refused for good are rejected. If the database stops
    /// answering meanwhile, the rest of the group goes to the spool.
    async fn record_one_by_one(
        &mut self,
        entries: &[Entry<'_>],
    ) -> Result<Vec<Recorded>, SpoolError> {
        let mut recorded = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            match self.db.record(std::slice::from_ref(entry)).await {
                Ok(inserted) => {
                    recorded.push(Recorded::new(inserted.first().copied().unwrap_or(false)))
                }
                Err(e) if e.is_permanent() => {
                    self.count_error("permanent");
                    recorded.push(Recorded::Rejected(crate::error_chain(&e)));
                }
                Err(e) => {
                    self.db_failed(&e);
                    recorded.extend(self.spool_group(&entries[i..])?);
                    break;
                }
            }
        }
        Ok(recorded)
    }

    fn spool_group(&mut self, entries: &[Entry<'_>]) -> Result<Vec<Recorded>, SpoolError> {
        self.spool.push_many(entries)?;
        self.metrics.spool_depth.set(self.pending() as i64);
        Ok(vec![Recorded::Spooled; entries.len()])
    }

    /// Replays the spool into the database, in order, from where the last
    /// replay stopped; returns the entries replayed. While reconnects are
    /// backed off this does nothing and fails.
    pub async fn flush(&mut self) -> Result<usize, DbError> {
        if self.pending() == 0 {
            return Ok(0);
        }
        if !self.may_try_db() {
            return Err(DbError::Query {
                target: self.db.target().to_string(),
                source: sqlx::Error::PoolTimedOut,
            });
        }
        let mut replayed = 0;
        loop {
            let batch = self
                .spool
                .read_from(self.replayed, REPLAY_BATCH)
                .map_err(|e| DbError::Query {
                    target: self.db.target().to_string(),
                    source: sqlx::Error::Io(std::io::Error::other(e)),
                })?;
            let Some(last) = batch.last() else { break };
            let end = last.end;
            let images: Vec<Option<Vec<u8>>> = batch.iter().map(|s| s.entry.jpeg()).collect();
            let entries: Vec<Entry<'_>> = batch
                .iter()
                .zip(&images)
                .map(|(s, j)| Entry {
                    row: &s.entry.row,
                    jpeg: j.as_deref(),
                })
                .collect();
            match self.db.record(&entries).await {
                Ok(_) => self.advance(end, batch.len()),
                Err(e) if e.is_permanent() => self.replay_one_by_one(&batch, &images).await?,
                Err(e) => {
                    self.db_failed(&e);
                    return Err(e);
                }
            }
            replayed += batch.len();
            self.metrics.spool_depth.set(self.pending() as i64);
        }
        if let Err(e) = self.spool.clear() {
            // Every entry is in the database; leaving them in the spool only
            // means a harmless (de-duplicated) replay after a restart.
            tracing::warn!(error = %crate::error_chain(&e), "could not clear the spool after replay");
        } else {
            self.replayed = 0;
            self.replayed_entries = 0;
        }
        self.metrics.spool_depth.set(self.pending() as i64);
        tracing::info!(
            rows = replayed,
            target = self.db.target(),
            "replayed spooled rows into the database"
        );
        self.db_ok();
        Ok(replayed)
    }

    /// A batch the database refused: find the row(s) it refuses for good,
    /// dead-letter them, replay the others.
    async fn replay_one_by_one(
        &mut self,
        batch: &[Spooled],
        images: &[Option<Vec<u8>>],
    ) -> Result<(), DbError> {
        for (s, jpeg) in batch.iter().zip(images) {
            let entry = Entry {
                row: &s.entry.row,
                jpeg: jpeg.as_deref(),
            };
            match self.db.record(&[entry]).await {
                Ok(_) => {}
                Err(e) if e.is_permanent() => {
                    self.count_error("permanent");
                    self.dead_letter_spooled(s, &e);
                }
                Err(e) => {
                    self.db_failed(&e);
                    return Err(e);
                }
            }
            self.advance(s.end, 1);
        }
        Ok(())
    }

    fn dead_letter_spooled(&mut self, s: &Spooled, e: &DbError) {
        let row = &s.entry.row;
        let received = row
            .received_time
            .parse()
            .unwrap_or_else(|_| jiff::Timestamp::now());
        let rejected = Rejected {
            reason: RejectReason::DbRejected,
            detail: crate::error_chain(e),
        };
        self.metrics
            .failed
            .get_or_create(&ReasonLabels {
                reason: RejectReason::DbRejected.as_str().to_string(),
            })
            .inc();
        let frame = crate::pipeline::Frame {
            camera: row.pi_id.clone(),
            source: "spool".into(),
            name_hint: None,
            payload: s.line.clone().into_bytes(),
            received,
        };
        match crate::pipeline::keep_letter(&self.dead, &frame, &rejected, frame.payload.len()) {
            Ok(kept) => {
                tracing::warn!(camera = %row.pi_id, frame_id = %row.frame_id, kept = %kept.display(), error = %rejected.detail, "the database refuses a spooled row for good; kept in the dead-letter folder")
            }
            Err(dl) => {
                // The spool line stays in place until the spool is cleared;
                // the row is logged so it is not silently gone.
                tracing::error!(row = %s.line, error = %rejected.detail, dead_letter_error = %crate::error_chain(&dl), "the database refuses a spooled row for good and the dead-letter folder cannot take it")
            }
        }
    }

    fn advance(&mut self, end: u64, entries: usize) {
        self.replayed = end;
        self.replayed_entries += entries;
    }

    /// Frames waiting in the spool.
    pub fn spool_depth(&self) -> usize {
        self.pending()
    }

    fn pending(&self) -> usize {
        self.spool.depth().saturating_sub(self.replayed_entries)
    }

    /// The database behind the store.
    pub fn database(&mut self) -> &mut Database {
        &mut self.db
    }

    fn may_try_db(&self) -> bool {
        self.retry_at.is_none_or(|t| Instant::now() >= t)
    }

    fn count_error(&self, kind: &str) {
        self.metrics
            .db_errors
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    fn db_failed(&mut self, e: &DbError) {
        self.count_error("transient");
        self.failures += 1;
        let delay = self.backoff.base_delay(self.failures);
        self.retry_at = Some(Instant::now() + delay);
        if self.failures == 1 {
            tracing::warn!(error = %crate::error_chain(e), spool = %self.spool.path().display(), retry_in = ?delay, "database unreachable: spooling rows locally until it returns");
        } else {
            tracing::debug!(error = %crate::error_chain(e), retry_in = ?delay, "database still unreachable");
        }
    }

    fn db_ok(&mut self) {
        if self.failures > 0 {
            tracing::info!(target = self.db.target(), "database reachable again");
        }
        self.failures = 0;
        self.retry_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::postgres::PgSslMode;
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

    /// Appends half a row, as a crash or power loss mid-append leaves it.
    fn tear(path: &Path) {
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .unwrap()
            .write_all(b"{\"pi_id\":\"pi1\",\"filen")
            .unwrap();
    }

    #[test]
    fn spool_survives_reopen_and_skips_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool/rows.jsonl");
        let mut s = Spool::open(&path).unwrap();
        s.push(&row("a"), None).unwrap();
        s.push(&row("b"), None).unwrap();
        drop(s);
        // A crash mid-append leaves half a line.
        tear(&path);
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
        s.push(&row("a"), None).unwrap();
        drop(s);
        // Power loss mid-append: half a line, never acknowledged.
        tear(&path);
        let mut s = Spool::open(&path).unwrap();
        // This row is fsynced and acknowledged: it must survive replay.
        s.push(&row("b"), None).unwrap();
        let ids: Vec<_> = s
            .read_all()
            .unwrap()
            .into_iter()
            .map(|r| r.frame_id)
            .collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(s.depth(), 2);
    }

    async fn down_postgres() -> Database {
        // Nothing listens on port 1: every query fails fast.
        let target = DbTarget::resolve(
            Some("postgres://u:p@127.0.0.1:1/db"),
            &LegacyDbVars::default(),
            Path::new("x"),
        )
        .unwrap();
        Database::open_with(&target, Duration::from_millis(300))
            .await
            .unwrap()
    }

    fn ids(rows: Vec<StoredRow>) -> Vec<String> {
        rows.into_iter().map(|r| r.row.frame_id).collect()
    }

    #[tokio::test]
    async fn unreachable_postgres_spools_and_replays_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::default();
        let spool_path = dir.path().join("spool.jsonl");
        let mut store = Store::new(down_postgres().await, &spool_path, &metrics).unwrap();
        assert_eq!(
            store.record(&row("a"), None).await.unwrap(),
            Recorded::Spooled
        );
        assert_eq!(
            store.record(&row("b"), Some(b"jpeg")).await.unwrap(),
            Recorded::Spooled
        );
        assert_eq!(metrics.spool_depth.get(), 2);
        assert!(store.flush().await.is_err());
        // A second analyzer cannot take the same spool while this one runs.
        assert!(Spool::open(&spool_path).is_err());
        drop(store);
        // The "database comes back": swap in a reachable SQLite database and
        // keep the same spool; rows replay in order before the new one.
        let sqlite = Database::open(&DbTarget::Sqlite(dir.path().join("p.db")))
            .await
            .unwrap();
        let mut store = Store::new(sqlite, &spool_path, &metrics).unwrap();
        assert_eq!(store.spool_depth(), 2);
        assert_eq!(
            store.record(&row("c"), None).await.unwrap(),
            Recorded::Inserted
        );
        assert_eq!(metrics.spool_depth.get(), 0);
        assert_eq!(
            store.record(&row("a"), None).await.unwrap(),
            Recorded::Duplicate
        );
        let db = store.database();
        assert_eq!(ids(db.rows().await.unwrap()), ["a", "b", "c"]);
        // The spooled image came along with its row.
        assert_eq!(db.image("b").await.unwrap().as_deref(), Some(&b"jpeg"[..]));
        assert_eq!(db.image("a").await.unwrap(), None);
    }

    /// SQLite refusing rows of camera `poison` for good, as a user's table
    /// constraint would.
    async fn sqlite_refusing_poison(path: &Path) -> Database {
        let mut db = Database::open(&DbTarget::Sqlite(path.to_path_buf()))
            .await
            .unwrap();
        db.ensure_schema().await.unwrap();
        let crate::db::Pool::Sqlite(p) = db.pool() else {
            unreachable!()
        };
        sqlx::query(
            "CREATE TRIGGER no_poison BEFORE INSERT ON posture_log WHEN NEW.pi_id = 'poison'
             BEGIN SELECT RAISE(ABORT, 'poison rows are refused'); END",
        )
        .execute(p)
        .await
        .unwrap();
        db
    }

    fn poison(id: &str) -> PostureRow {
        PostureRow {
            pi_id: "poison".into(),
            ..row(id)
        }
    }

    #[tokio::test]
    async fn a_row_the_database_refuses_is_dead_lettered_and_blocks_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::default();
        let spool_path = dir.path().join("spool/rows.jsonl");
        // Spooled during an outage: a, the poison row, b.
        let mut store = Store::new(down_postgres().await, &spool_path, &metrics).unwrap();
        for r in [row("a"), poison("p"), row("b")] {
            assert_eq!(store.record(&r, None).await.unwrap(), Recorded::Spooled);
        }
        drop(store);
        let db = sqlite_refusing_poison(&dir.path().join("p.db")).await;
        let mut store = Store::new(db, &spool_path, &metrics).unwrap();
        // The database is back: the replay gets past the poison row.
        assert_eq!(
            store.record(&row("c"), None).await.unwrap(),
            Recorded::Inserted
        );
        assert_eq!(store.spool_depth(), 0);
        // A poison row arriving live is refused, not spooled or retried.
        let refused = store.record(&poison("q"), None).await.unwrap();
        assert!(
            matches!(refused, Recorded::Rejected(ref why) if why.contains("poison rows are refused")),
            "{refused:?}"
        );
        assert_eq!(
            store.record(&row("d"), None).await.unwrap(),
            Recorded::Inserted
        );
        assert_eq!(
            ids(store.database().rows().await.unwrap()),
            ["a", "b", "c", "d"]
        );
        // The spooled poison row is kept with its reason.
        let kept: Vec<_> = std::fs::read_dir(dir.path().join("dead_letter/poison"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert_eq!(metrics.failed_count(RejectReason::DbRejected), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_retries_the_database_with_backoff_not_per_frame() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::default();
        let mut store = Store::new(
            down_postgres().await,
            &dir.path().join("spool.jsonl"),
            &metrics,
        )
        .unwrap();
        let attempts = || {
            metrics
                .db_errors
                .get_or_create(&KindLabels {
                    kind: "transient".into(),
                })
                .get()
        };
        for i in 0..50 {
            assert_eq!(
                store.record(&row(&format!("r{i}")), None).await.unwrap(),
                Recorded::Spooled
            );
        }
        // One attempt, then the frames go straight to the spool.
        assert_eq!(attempts(), 1);
        tokio::time::advance(Duration::from_millis(600)).await;
        store.record(&row("late"), None).await.unwrap();
        assert_eq!(attempts(), 2);
        // The next delay doubled.
        tokio::time::advance(Duration::from_millis(600)).await;
        store.record(&row("later"), None).await.unwrap();
        assert_eq!(attempts(), 2);
        assert_eq!(store.spool_depth(), 52);
    }
}

//! The database as the system of record (issue 12), on real PostgreSQL and
//! SQLite: `results export` rebuilds every row and annotated image byte for
//! byte after every local file is gone; a camera analysed by two analyzers
//! in turn exports as one CSV in time order; retention removes only old
//! images and keeps rows; the seeds' legacy table accepts rows; concurrent
//! first starts migrate once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic the test

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use posture_analyzer::export::{ExportFormat, ExportOptions, export};
use posture_analyzer::outputs::Outputs;
use posture_analyzer::retention::{Retention, prune};
use posture_analyzer::store::{DbTarget, Entry, LegacyDbVars};
use posture_analyzer::{AnalyzerConfig, Database, Frame, Limits, Outcome, PostureRow};
use posture_testkit::Postgres;
use support::*;

fn pg_target(pg: &Postgres) -> DbTarget {
    DbTarget::resolve(Some(&pg.url()), &LegacyDbVars::default(), Path::new("x")).unwrap()
}

fn frame(camera: &str, color: [u8; 3], seq: u32) -> Frame {
    Frame {
        camera: camera.into(),
        source: format!("images/{camera}"),
        name_hint: None,
        payload: frame_jpeg(color, seq),
        received: jiff::Timestamp::now(),
    }
}

/// Every file under `dir`, by path relative to it, with its bytes.
fn files_under(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The seeds' layout only: CSVs and annotated images.
fn results_layout(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    files_under(dir)
        .into_iter()
        .filter(|(p, _)| {
            p.starts_with("analyzed_images") || p.to_string_lossy().ends_with("_results.csv")
        })
        .collect()
}

async fn analyse_then_export_reproduces_everything(target: DbTarget) {
    let work = tempfile::tempdir().unwrap();
    let mut cfg = AnalyzerConfig::new(work.path().to_path_buf(), "node-a".into());
    cfg.outputs = "db,files".parse().unwrap();
    let mut a = analyzer_from(cfg, Box::new(ColorModel), work.path(), &target).await;
    let frames = [
        frame("pi1", RED, 1),
        frame("pi2", BLUE, 2),
        frame("pi1", GRAY, 3),
        frame("pi1", BLUE, 4),
        frame("=pi3", RED, 5),
    ];
    for f in &frames {
        assert!(matches!(
            a.process(f).await.unwrap(),
            Outcome::Analyzed { .. }
        ));
    }
    a.store().database().close().await;
    drop(a);
    let local = results_layout(work.path());
    assert_eq!(local.len(), 5 + 3, "{:?}", local.keys());
    // Every local file and the analyzer's work folder (spool included) go.
    drop(work);

    let out = tempfile::tempdir().unwrap();
    let mut db = Database::open(&target).await.unwrap();
    let summary = export(
        &mut db,
        &ExportOptions {
            out: out.path().to_path_buf(),
            images: true,
            ..ExportOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!((summary.rows, summary.images), (5, 5));
    assert_eq!(summary.cameras, ["=pi3", "pi1", "pi2"]);
    let exported = files_under(out.path());
    assert_eq!(
        exported.keys().collect::<Vec<_>>(),
        local.keys().collect::<Vec<_>>()
    );
    for (path, bytes) in &local {
        assert!(exported[path] == *bytes, "{} differs", path.display());
    }

    // Filters and JSON lines.
    let only = tempfile::tempdir().unwrap();
    let s = export(
        &mut db,
        &ExportOptions {
            out: only.path().to_path_buf(),
            cameras: vec!["pi2".into()],
            format: ExportFormat::Jsonl,
            images: false,
            ..ExportOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!((s.rows, s.images), (1, 0));
    let line = std::fs::read_to_string(only.path().join("pi2_results.jsonl")).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(v["posture_status"], "Bad");
    assert_eq!(v["processed_by"], "node-a");
    let none = export(
        &mut db,
        &ExportOptions {
            out: only.path().join("none"),
            since: Some(jiff::Timestamp::now()),
            ..ExportOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(none.rows, 0);
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_reproduces_rows_and_images_byte_for_byte_sqlite() {
    let db_dir = tempfile::tempdir().unwrap();
    analyse_then_export_reproduces_everything(DbTarget::Sqlite(db_dir.path().join("p.db"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_reproduces_rows_and_images_byte_for_byte_postgres() {
    let Some(pg) = Postgres::start() else { return };
    analyse_then_export_reproduces_everything(pg_target(&pg)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_moved_between_analyzers_exports_as_one_csv_in_time_order() {
    let Some(pg) = Postgres::start() else { return };
    let target = pg_target(&pg);
    let mut csv_parts = Vec::new();
    for (node, seqs) in [("node-a", [1, 2, 3]), ("node-b", [4, 5, 6])] {
        let work = tempfile::tempdir().unwrap();
        let mut cfg = AnalyzerConfig::new(work.path().to_path_buf(), node.into());
        cfg.outputs = "db,files".parse().unwrap();
        let mut a = analyzer_from(cfg, Box::new(ColorModel), work.path(), &target).await;
        for s in seqs {
            a.process(&frame("pi7", RED, s)).await.unwrap();
        }
        a.store().database().close().await;
        csv_parts.push(csv_lines(&work.path().join("pi7_results.csv")));
    }
    let out = tempfile::tempdir().unwrap();
    let mut db = Database::open(&target).await.unwrap();
    export(
        &mut db,
        &ExportOptions {
            out: out.path().to_path_buf(),
            images: true,
            ..ExportOptions::default()
        },
    )
    .await
    .unwrap();
    let merged = csv_lines(&out.path().join("pi7_results.csv"));
    let mut want = csv_parts[0].clone();
    want.extend(csv_parts[1][1..].iter().cloned());
    assert_eq!(merged, want);
    assert!(merged[1].contains(",node-a,") && merged[6].contains(",node-b,"));
    let images = std::fs::read_dir(out.path().join("analyzed_images/analyzed_images_from_pi7"))
        .unwrap()
        .count();
    assert_eq!(images, 6);
}

fn stamped(camera: &str, id: &str, analyzed: &str) -> PostureRow {
    PostureRow {
        pi_id: camera.into(),
        filename: format!("{camera}_{id}.jpg"),
        received_time: analyzed.into(),
        analyzed_time: analyzed.into(),
        neck_angle: Some(10.0),
        body_angle: Some(2.0),
        posture_status: "Good".into(),
        landmarks_detected: true,
        processed_by: "n".into(),
        frame_id: id.into(),
    }
}

async fn retention_removes_only_old_images(target: DbTarget) {
    let mut db = Database::open(&target).await.unwrap();
    let rows = [
        stamped("pi1", "old1", "2026-01-01T00:00:00.000000Z"),
        stamped("pi1", "old2", "2026-01-05T00:00:00.000000Z"),
        stamped("pi1", "new1", "2026-02-09T00:00:00.000000Z"),
        stamped("pi1", "new2", "2026-02-09T12:00:00.000000Z"),
        stamped("pi2", "new3", "2026-02-09T13:00:00.000000Z"),
    ];
    let entries: Vec<Entry> = rows
        .iter()
        .map(|r| Entry {
            row: r,
            jpeg: Some(b"\xff\xd8jpeg\xff\xd9"),
        })
        .collect();
    db.record(&entries).await.unwrap();
    let now: jiff::Timestamp = "2026-02-10T00:00:00Z".parse().unwrap();
    let by_age = Retention {
        max_age: Some(std::time::Duration::from_secs(7 * 86_400)),
        keep_per_camera: None,
    };
    assert_eq!(prune(&mut db, &by_age, now).await.unwrap(), 2);
    let mut kept = Vec::new();
    for r in &rows {
        kept.push(db.image(&r.frame_id).await.unwrap().is_some());
    }
    assert_eq!(kept, [false, false, true, true, true]);
    // Newest one per camera.
    let newest = Retention {
        max_age: None,
        keep_per_camera: Some(1),
    };
    assert_eq!(prune(&mut db, &newest, now).await.unwrap(), 1);
    assert!(db.image("new1").await.unwrap().is_none());
    assert!(db.image("new2").await.unwrap().is_some());
    assert!(db.image("new3").await.unwrap().is_some());
    // Rows are kept.
    assert_eq!(db.rows().await.unwrap().len(), 5);
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_only_old_images_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    retention_removes_only_old_images(DbTarget::Sqlite(dir.path().join("p.db"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_only_old_images_postgres() {
    let Some(pg) = Postgres::start() else { return };
    retention_removes_only_old_images(pg_target(&pg)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_legacy_table_accepts_rows() {
    let Some(pg) = Postgres::start() else { return };
    // The table the earlier Python analyzer's users have (Supabase), with a row.
    pg.create_seeds_table(&[
        "('pi1', 'old.jpg', '2025-06-01 10:00:00', '2025-06-01 10:00:01', 12, 3, 'Good', true, 'jetson1')",
    ]);
    let target = pg_target(&pg);
    let work = tempfile::tempdir().unwrap();
    let mut cfg = AnalyzerConfig::new(work.path().to_path_buf(), "node-a".into());
    cfg.outputs = Outputs::DB;
    let mut a = analyzer_from(cfg, Box::new(ColorModel), work.path(), &target).await;
    let o = a.process(&frame("pi1", BLUE, 1)).await.unwrap();
    let Outcome::Analyzed { row, recorded, .. } = o else {
        panic!("{o:?}")
    };
    assert_eq!(recorded, posture_analyzer::Recorded::Inserted);
    // Redelivered: still one row.
    a.process(&frame("pi1", BLUE, 1)).await.unwrap();
    let rows = a.store().database().rows().await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].row.filename, "old.jpg");
    assert_eq!(rows[0].row.received_time, "2025-06-01T10:00:00.000000Z");
    assert_eq!(rows[0].row.neck_angle, Some(12.0));
    // Angles rounded into the INTEGER columns; times stored as UTC.
    assert_eq!(
        rows[1].row.neck_angle,
        Some(row.neck_angle.unwrap().round())
    );
    assert_eq!(rows[1].row.received_time, row.received_time);
    assert_eq!(rows[1].row.frame_id, row.frame_id);
    let types = pg.psql(
        "SELECT data_type FROM information_schema.columns WHERE table_name = 'posture_log' AND column_name IN ('neck_angle', 'received_time') ORDER BY column_name",
    );
    assert_eq!(types.trim(), "integer\ntimestamp without time zone");
    a.store().database().close().await;
}

async fn concurrent_first_starts_migrate_once(target: DbTarget) {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut db = Database::open(&target).await.unwrap();
            let r = db.ensure_schema().await.map(|_| ());
            db.close().await;
            r.map_err(|e| posture_analyzer::error_chain(&e))
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let db = Database::open(&target).await.unwrap();
    let versions = posture_analyzer::schema::applied_versions(&db)
        .await
        .unwrap();
    assert_eq!(versions, [(1, 1), (2, 1)]);
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_starts_migrate_once_postgres() {
    let Some(pg) = Postgres::start() else { return };
    concurrent_first_starts_migrate_once(pg_target(&pg)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_starts_migrate_once_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    concurrent_first_starts_migrate_once(DbTarget::Sqlite(dir.path().join("p.db"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_mode_reports_a_missing_path_and_analyses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = write_frames(&dir.path().join("in"), &[(RED, 1), (BLUE, 2)]);
    let target = DbTarget::Sqlite(dir.path().join("p.db"));
    let mut a = analyzer(&dir.path().join("out"), &target, Limits::default()).await;
    let missing = dir.path().join("missing.jpg");
    let paths = vec![inputs[0].clone(), missing.clone(), inputs[1].clone()];
    let mut seen = Vec::new();
    let report = posture_analyzer::files::analyze_files(
        &mut a,
        &paths,
        "desk",
        |p, _| seen.push(p.clone()),
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(seen, inputs);
    assert_eq!(report.stats.analyzed, 2);
    assert_eq!(report.unreadable.len(), 1);
    assert_eq!(report.unreadable[0].0, missing);
    assert!(report.any_failed());
}

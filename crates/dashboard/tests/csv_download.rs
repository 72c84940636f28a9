//! The camera page's "download as CSV" is `results export` (issue 14): rows
//! written through the analyzer's own `Database`, then the same camera and
//! time range fetched over HTTP from the dashboard and exported by
//! `posture_analyzer::export`, must be the same bytes. On SQLite and a real
//! PostgreSQL, each with a table the analyzer found from an earlier version
//! (SQLite without `frame_id`; the seeds' PostgreSQL table with TIMESTAMP
//! times, INTEGER angles and nullable columns).
//!
//! The rows sit on the range's edges (exactly at `from`, within its first
//! second, just before `to`, exactly at `to`), share a received time, lack
//! angles, need CSV quoting, and belong to another camera.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic the test

mod support;

use jiff::Timestamp;
use posture_analyzer::Database;
use posture_analyzer::export::{ExportOptions, export};
use posture_analyzer::record::PostureRow;
use posture_analyzer::store::{DbTarget, Entry, LegacyDbVars};
use posture_dashboard::{Farm, KubeSource};
use posture_testkit::Postgres;
use support::{Served, get};

const FROM: &str = "2026-03-01T10:00:00Z";
const TO: &str = "2026-03-01T11:00:00Z";

fn row(camera: &str, id: &str, received: &str, angles: Option<(f64, f64)>) -> PostureRow {
    let status = match angles {
        Some((neck, _)) if neck > 40.0 => "Bad",
        Some(_) => "Good",
        None => "No person detected",
    };
    PostureRow {
        pi_id: camera.into(),
        filename: format!("{camera}_{id}.jpg"),
        received_time: received.into(),
        analyzed_time: received.into(),
        neck_angle: angles.map(|a| a.0),
        body_angle: angles.map(|a| a.1),
        posture_status: status.into(),
        landmarks_detected: angles.is_some(),
        processed_by: "node-a".into(),
        frame_id: format!("{camera}-{id}"),
    }
}

/// The rows the analyzer records: inside and outside the range, on its edges.
fn rows() -> Vec<PostureRow> {
    type Spec = (&'static str, &'static str, &'static str, Option<(f64, f64)>);
    #[rustfmt::skip]
    const SPECS: [Spec; 10] = [
        ("pi1", "before",       "2026-03-01T09:59:59.999999Z", Some((10.0, 2.0))),
        ("pi1", "at-from",      "2026-03-01T10:00:00.000000Z", Some((12.345, 3.0))),
        ("pi1", "first-second", "2026-03-01T10:00:00.250000Z", Some((44.5, 9.75))),
        ("pi1", "nobody",       "2026-03-01T10:20:00.000000Z", None),
        ("pi1", "same-time-1",  "2026-03-01T10:30:00.500000Z", Some((20.0, 5.0))),
        ("pi1", "same-time-2",  "2026-03-01T10:30:00.500000Z", Some((21.0, 5.5))),
        ("pi1", "last",         "2026-03-01T10:59:59.999999Z", Some((15.0, 4.0))),
        ("pi1", "at-to",        "2026-03-01T11:00:00.000000Z", Some((16.0, 4.0))),
        ("pi1", "after",        "2026-03-01T11:00:00.400000Z", Some((17.0, 4.0))),
        ("pi2", "other-camera", "2026-03-01T10:10:00.000000Z", Some((30.0, 6.0))),
    ];
    let mut rows: Vec<PostureRow> = SPECS
        .iter()
        .map(|&(camera, id, received, angles)| row(camera, id, received, angles))
        .collect();
    // Text a spreadsheet would run, and a comma: quoted the same way.
    rows[4].filename = "desk, left.jpg".into();
    rows[5].processed_by = "=node-b".into();
    rows
}

/// Records [`rows`] through the analyzer's `Database` (images for some).
async fn record(target: &DbTarget) {
    let mut db = Database::open(target).await.unwrap();
    let rows = rows();
    let entries: Vec<Entry> = rows
        .iter()
        .enumerate()
        .map(|(i, row)| Entry {
            row,
            jpeg: (i % 2 == 0).then_some(b"\xff\xd8jpeg\xff\xd9".as_slice()),
        })
        .collect();
    assert!(db.record(&entries).await.unwrap().iter().all(|new| *new));
    db.close().await;
}

/// `results export --camera <camera> --since FROM --until TO`: the CSV file.
async fn results_export(target: &DbTarget, camera: &str) -> Vec<u8> {
    let out = tempfile::tempdir().unwrap();
    let mut db = Database::open(target).await.unwrap();
    let summary = export(
        &mut db,
        &ExportOptions {
            out: out.path().to_path_buf(),
            cameras: vec![camera.into()],
            since: Some(FROM.parse().unwrap()),
            until: Some(TO.parse().unwrap()),
            ..ExportOptions::default()
        },
    )
    .await
    .unwrap();
    db.close().await;
    assert_eq!(summary.cameras, [camera]);
    std::fs::read(out.path().join(format!("{camera}_results.csv"))).unwrap()
}

/// The camera page's download for the same range, over HTTP.
async fn dashboard_download(target: &DbTarget, camera: &str) -> Vec<u8> {
    let served = Served::start(
        target,
        Farm::new(&KubeSource::Off, None, None),
        KubeSource::Off,
    )
    .await;
    let (status, body) = get(&format!(
        "{}/camera/{camera}/frames.csv?from={FROM}&to={TO}",
        served.url
    ))
    .await;
    served.stop().await;
    assert!(
        status.is_success(),
        "{status}: {}",
        String::from_utf8_lossy(&body)
    );
    body.to_vec()
}

/// Both CSVs for `camera`, compared byte for byte; returns the text.
async fn same_bytes(target: &DbTarget, camera: &str) -> String {
    let exported = results_export(target, camera).await;
    let downloaded = dashboard_download(target, camera).await;
    let (e, d) = (
        String::from_utf8(exported).unwrap(),
        String::from_utf8(downloaded).unwrap(),
    );
    assert!(
        e == d,
        "the dashboard's CSV differs from `results export`:\n--- results export\n{e}--- dashboard\n{d}"
    );
    e
}

/// The camera page's plot and table read the same range through their own
/// query: the same frames as the CSV, edges included.
async fn plot_matches_csv(target: &DbTarget, camera: &str, csv: &str) {
    let db = posture_dashboard::ReadOnlyDb::open(target);
    let frames = db
        .frames_in_range(camera, FROM.parse().unwrap(), TO.parse().unwrap(), 1000)
        .await
        .unwrap();
    db.close().await;
    let plotted: Vec<&str> = frames.iter().map(|f| f.frame_id.as_str()).collect();
    assert_eq!(plotted, ids(csv), "the plot's frames differ from the CSV's");
}

/// The frame ids (last column) of a CSV's lines.
fn ids(csv: &str) -> Vec<&str> {
    csv.lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap())
        .collect()
}

const IN_RANGE: [&str; 6] = [
    "pi1-at-from",
    "pi1-first-second",
    "pi1-nobody",
    "pi1-same-time-1",
    "pi1-same-time-2",
    "pi1-last",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_is_results_export_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("posture.db");
    // A table from before `frame_id`, with a row, as an older analyzer left it.
    {
        use sqlx::ConnectOptions as _;
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        sqlx::raw_sql(
            "CREATE TABLE posture_log (id INTEGER PRIMARY KEY AUTOINCREMENT, pi_id TEXT NOT NULL,
               filename TEXT NOT NULL, received_time TEXT NOT NULL, analyzed_time TEXT NOT NULL,
               neck_angle REAL, body_angle REAL, posture_status TEXT NOT NULL,
               landmarks_detected BOOLEAN NOT NULL, processed_by TEXT NOT NULL);
             INSERT INTO posture_log (pi_id, filename, received_time, analyzed_time, neck_angle,
               body_angle, posture_status, landmarks_detected, processed_by)
             VALUES ('pi1', 'old.jpg', '2026-03-01T10:05:00.000000Z', '2026-03-01T10:05:01.000000Z',
               11.5, 2.25, 'Good', 1, 'old-node');",
        )
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let target = DbTarget::Sqlite(path);
    record(&target).await;
    let csv = same_bytes(&target, "pi1").await;
    plot_matches_csv(&target, "pi1", &csv).await;
    let mut want = vec![""];
    want.extend(IN_RANGE);
    want.sort();
    let mut got = ids(&csv);
    got.sort();
    assert_eq!(got, want, "{csv}");
    assert!(
        csv.contains("pi1,old.jpg,2026-03-01T10:05:00.000000Z,"),
        "{csv}"
    );
    same_bytes(&target, "pi2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_is_results_export_postgres_legacy_table() {
    let Some(pg) = Postgres::start() else { return };
    // The seeds' table (Supabase): TIMESTAMP times, INTEGER angles, every
    // column nullable; a row the Python analyzer wrote, and one with gaps.
    pg.create_seeds_table(&[
        "('pi1', 'old.jpg', '2026-03-01 10:05:00.123456', '2026-03-01 10:05:01', 12, 3, 'Good', true, 'jetson1')",
        "('pi1', NULL, '2026-03-01 10:06:00', NULL, NULL, NULL, 'Good', NULL, NULL)",
    ]);
    let target =
        DbTarget::resolve(Some(&pg.url()), &LegacyDbVars::default(), "x".as_ref()).unwrap();
    record(&target).await;
    let csv = same_bytes(&target, "pi1").await;
    plot_matches_csv(&target, "pi1", &csv).await;
    assert_eq!(csv.lines().count(), 1 + 2 + IN_RANGE.len(), "{csv}");
    assert!(
        csv.contains("pi1,old.jpg,2026-03-01T10:05:00.123456Z,2026-03-01T10:05:01.000000Z,12.00,3.00,Good,true,jetson1,\n"),
        "{csv}"
    );
    // NULLs read as empty fields (and `false`), the download goes on.
    assert!(
        csv.contains("\npi1,,2026-03-01T10:06:00.000000Z,,,,Good,false,,\n"),
        "{csv}"
    );
    // Angles were rounded into the INTEGER columns on the way in.
    assert!(
        csv.contains(",12.00,3.00,Good,true,node-a,pi1-at-from\n"),
        "{csv}"
    );
    same_bytes(&target, "pi2").await;
}

#[test]
fn the_range_edges_are_what_the_rows_test() {
    let from: Timestamp = FROM.parse().unwrap();
    let to: Timestamp = TO.parse().unwrap();
    for r in rows() {
        let t: Timestamp = r.received_time.parse().unwrap();
        let inside = r.pi_id == "pi1" && from <= t && t < to;
        assert_eq!(inside, IN_RANGE.contains(&r.frame_id.as_str()), "{r:?}");
    }
}

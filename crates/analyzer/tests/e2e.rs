//! End to end against a real mosquitto and a real PostgreSQL (spawned on free
//! ports): frames in, rows and files out; broker restart and analyzer
//! restart lose nothing; database down then up loses and duplicates
//! nothing; every bad-input kind ends in the dead-letter folder.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic the test

mod support;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use posture_analyzer::mqtt::{MqttConfig, RunStats};
use posture_analyzer::publish::{Encoding, PublishPlan, publish_files};
use posture_analyzer::store::{DbTarget, LegacyDbVars, Recorded};
use posture_analyzer::{Database, Limits, Outcome, RejectReason};
use posture_testkit::{Mosquitto, Postgres, free_port};
use support::*;

fn plan(topic: &str) -> PublishPlan {
    PublishPlan {
        topic: topic.into(),
        encoding: Encoding::Base64Jpeg,
        interval: Duration::ZERO,
        repeat: 1,
        timeout: Duration::from_secs(20),
    }
}

async fn publish(port: u16, topic: &str, files: &[std::path::PathBuf]) {
    let cfg = MqttConfig::new("127.0.0.1", port, format!("test-camera-{}", free_port()));
    assert_eq!(
        publish_files(&cfg, &plan(topic), files).await.unwrap(),
        files.len()
    );
}

fn pg_target(pg: &Postgres) -> DbTarget {
    DbTarget::resolve(
        Some(&pg.url()),
        &LegacyDbVars::default(),
        Path::new("unused.db"),
    )
    .unwrap()
}

async fn db_rows(target: &DbTarget) -> Vec<posture_analyzer::store::StoredRow> {
    let mut db = Database::open(target).await.unwrap();
    let rows = db.rows().await.unwrap();
    db.close().await;
    rows
}

fn row_of(o: &Outcome) -> &posture_analyzer::PostureRow {
    match o {
        Outcome::Analyzed { row, .. } => row,
        Outcome::Rejected { reason, .. } => panic!("unexpected rejection {reason}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_in_rows_and_files_out_with_postgres() {
    let (Some(broker), Some(pg)) = (Mosquitto::start(), Postgres::start()) else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let target = pg_target(&pg);
    let a = analyzer(out.path(), &target, Limits::default()).await;
    let mut run = Running::start(a, broker.port, "images/pi1", "analyzer-e2e-1").await;

    let files = write_frames(
        &out.path().join("in"),
        &[(RED, 1), (BLUE, 2), (GRAY, 3), (RED, 4)],
    );
    publish(broker.port, "images/pi1", &files).await;
    let outcomes = run.take(4).await;
    let statuses: Vec<&str> = outcomes
        .iter()
        .map(|o| row_of(o).posture_status.as_str())
        .collect();
    assert_eq!(statuses, ["Good", "Bad", "No person detected", "Good"]);

    let rows = db_rows(&target).await;
    assert_eq!(rows.len(), 4);
    for (r, o) in rows.iter().zip(&outcomes) {
        let want = row_of(o);
        assert_eq!(r.row.frame_id, want.frame_id);
        assert_eq!(r.row.pi_id, "pi1");
        assert_eq!(r.row.processed_by, "test-node");
        assert_eq!(
            r.row.landmarks_detected,
            want.posture_status != "No person detected"
        );
    }
    assert!(rows[0].row.neck_angle.unwrap() < 5.0);
    assert!((rows[1].row.neck_angle.unwrap() - 45.0).abs() < 0.1);
    assert_eq!(rows[2].row.neck_angle, None);

    let csv = csv_lines(&out.path().join("pi1_results.csv"));
    assert_eq!(csv.len(), 5, "{csv:?}");
    assert!(csv[0].starts_with("pi_id,filename"));
    let images: Vec<_> =
        std::fs::read_dir(out.path().join("analyzed_images/analyzed_images_from_pi1"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
    assert_eq!(images.len(), 4);
    for o in &outcomes {
        if let Outcome::Analyzed { image, .. } = o {
            let img = image::open(image.as_ref().unwrap()).unwrap();
            assert_eq!((img.width(), img.height()), (160, 160));
        }
    }

    // The same capture delivered twice (a camera retry): one row, one CSV line.
    let same = base64::engine::general_purpose::STANDARD
        .encode(frame_jpeg(BLUE, 99))
        .into_bytes();
    publish_raw(broker.port, "images/pi1", vec![same.clone(), same]).await;
    let again = run.take(2).await;
    assert!(matches!(
        again[0],
        Outcome::Analyzed {
            recorded: Recorded::Inserted,
            ..
        }
    ));
    assert!(matches!(
        again[1],
        Outcome::Analyzed {
            recorded: Recorded::Duplicate,
            ..
        }
    ));
    let (a, stats) = run.stop().await;
    assert_eq!(
        stats,
        RunStats {
            analyzed: 6,
            rejected: 0
        }
    );
    assert_eq!(a.metrics().duplicates.get(), 1);
    assert_eq!(db_rows(&target).await.len(), 5);
    assert_eq!(csv_lines(&out.path().join("pi1_results.csv")).len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_and_analyzer_restarts_lose_nothing() {
    let Some(mut broker) = Mosquitto::start() else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let target = DbTarget::Sqlite(out.path().join("posture.db"));
    let a = analyzer(out.path(), &target, Limits::default()).await;
    let mut run = Running::start(a, broker.port, "images/pi2", "analyzer-e2e-2").await;
    let mut seen = HashSet::new();

    // Batch A, then the broker goes down while the analyzer works through it.
    let batch_a = write_frames(
        &out.path().join("a"),
        &(1..=6).map(|i| (RED, i)).collect::<Vec<_>>(),
    );
    publish(broker.port, "images/pi2", &batch_a).await;
    broker.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.restart();
    let batch_b = write_frames(
        &out.path().join("b"),
        &(7..=12).map(|i| (BLUE, i)).collect::<Vec<_>>(),
    );
    publish(broker.port, "images/pi2", &batch_b).await;
    while seen.len() < 12 {
        for o in run.take(1).await {
            seen.insert(row_of(&o).frame_id.clone());
        }
    }

    // The analyzer restarts; frames published meanwhile wait at the broker.
    let (a, _) = run.stop().await;
    drop(a);
    let batch_c = write_frames(
        &out.path().join("c"),
        &(13..=15).map(|i| (GRAY, i)).collect::<Vec<_>>(),
    );
    publish(broker.port, "images/pi2", &batch_c).await;
    let a = analyzer(out.path(), &target, Limits::default()).await;
    let mut run = Running::start(a, broker.port, "images/pi2", "analyzer-e2e-2").await;
    while seen.len() < 15 {
        for o in run.take(1).await {
            seen.insert(row_of(&o).frame_id.clone());
        }
    }
    // Anything redelivered late is still a duplicate, never a new row.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = run.stop().await;

    let rows = db_rows(&target).await;
    assert_eq!(rows.len(), 15);
    let ids: HashSet<_> = rows.iter().map(|r| r.row.frame_id.clone()).collect();
    assert_eq!(ids, seen);
    assert_eq!(csv_lines(&out.path().join("pi2_results.csv")).len(), 16);
    let counts = rows.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.row.posture_status.clone()).or_insert(0) += 1;
        m
    });
    assert_eq!(counts["Good"], 6);
    assert_eq!(counts["Bad"], 6);
    assert_eq!(counts["No person detected"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_then_up_loses_and_duplicates_nothing() {
    let (Some(broker), Some(mut pg)) = (Mosquitto::start(), Postgres::start()) else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let target = pg_target(&pg);
    let a = analyzer(out.path(), &target, Limits::default()).await;
    let spool_depth = a.metrics().spool_depth.clone();
    let mut run = Running::start(a, broker.port, "images/pi3", "analyzer-e2e-3").await;
    let mut order = Vec::new();

    let first = write_frames(&out.path().join("1"), &[(RED, 1), (RED, 2)]);
    publish(broker.port, "images/pi3", &first).await;
    for o in run.take(2).await {
        assert!(matches!(
            o,
            Outcome::Analyzed {
                recorded: Recorded::Inserted,
                ..
            }
        ));
        order.push(row_of(&o).frame_id.clone());
    }

    pg.stop();
    let during = write_frames(&out.path().join("2"), &[(BLUE, 3), (GRAY, 4), (RED, 5)]);
    publish(broker.port, "images/pi3", &during).await;
    for o in run.take(3).await {
        assert!(
            matches!(
                o,
                Outcome::Analyzed {
                    recorded: Recorded::Spooled,
                    ..
                }
            ),
            "{o:?}"
        );
        order.push(row_of(&o).frame_id.clone());
    }
    assert_eq!(spool_depth.get(), 3);

    pg.restart();
    // Reconnects are backed off, not tried per frame: the periodic replay
    // brings the spool in once the database answers again.
    for _ in 0..300 {
        if spool_depth.get() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(spool_depth.get(), 0, "the spool was not replayed");
    let after = write_frames(&out.path().join("3"), &[(BLUE, 6)]);
    publish(broker.port, "images/pi3", &after).await;
    for o in run.take(1).await {
        assert!(
            matches!(
                o,
                Outcome::Analyzed {
                    recorded: Recorded::Inserted,
                    ..
                }
            ),
            "{o:?}"
        );
        order.push(row_of(&o).frame_id.clone());
    }
    assert_eq!(spool_depth.get(), 0);
    let _ = run.stop().await;

    let rows = db_rows(&target).await;
    let ids: Vec<_> = rows.iter().map(|r| r.row.frame_id.clone()).collect();
    // Every frame once, in the order frames arrived (spooled rows replayed first).
    assert_eq!(ids, order);
    assert_eq!(csv_lines(&out.path().join("pi3_results.csv")).len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_kind_is_dead_lettered_and_counted() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let target = DbTarget::Sqlite(out.path().join("posture.db"));
    let limits = Limits {
        max_payload_bytes: 200_000,
        max_pixels: 100_000,
    };
    let a = analyzer(out.path(), &target, limits).await;
    let mut run = Running::start(a, broker.port, "images/pi9", "analyzer-e2e-4").await;

    let b64 = |b: &[u8]| {
        base64::engine::general_purpose::STANDARD
            .encode(b)
            .into_bytes()
    };
    let good = frame_jpeg(RED, 1);
    let big_image = {
        let img = image::RgbImage::from_pixel(400, 300, image::Rgb([9, 9, 9]));
        let mut v = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut v, 50)
            .encode_image(&img)
            .unwrap();
        v
    };
    let bad: Vec<(RejectReason, Vec<u8>)> = vec![
        (RejectReason::Empty, Vec::new()),
        (
            RejectReason::BadBase64,
            b"this is %% not base64 **".to_vec(),
        ),
        (
            RejectReason::NotImage,
            b64(b"just some text, no image here"),
        ),
        (RejectReason::Truncated, b64(&good[..good.len() / 2])),
        (RejectReason::TooLarge, vec![b'A'; 250_000]),
        (RejectReason::TooManyPixels, b64(&big_image)),
    ];
    let mut payloads: Vec<Vec<u8>> = bad.iter().map(|(_, p)| p.clone()).collect();
    payloads.push(b64(&good));
    publish_raw(broker.port, "images/pi9", payloads).await;
    let outcomes = run.take(7).await;
    for ((want, _), got) in bad.iter().zip(&outcomes) {
        match got {
            Outcome::Rejected { reason, kept } => {
                assert_eq!(reason, want);
                let side: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(kept.with_extension("json")).unwrap())
                        .unwrap();
                assert_eq!(side["reason"], want.as_str());
                assert_eq!(side["source"], "images/pi9");
            }
            other => panic!("{want}: {other:?}"),
        }
    }
    // The analyzer kept going: the good frame after the bad ones is analysed.
    assert_eq!(row_of(&outcomes[6]).posture_status, "Good");
    let (a, stats) = run.stop().await;
    assert_eq!(
        stats,
        RunStats {
            analyzed: 1,
            rejected: 6
        }
    );
    for (reason, _) in &bad {
        assert_eq!(a.metrics().failed_count(*reason), 1, "{reason}");
    }
    let kept: Vec<_> = std::fs::read_dir(out.path().join("dead_letter/pi9"))
        .unwrap()
        .collect();
    assert_eq!(kept.len(), 12, "six payloads and six sidecars");
    assert_eq!(db_rows(&target).await.len(), 1);
}

/// Sleeps on green frames so a test can crash the analyzer mid-frame.
struct SlowOnGreen(ColorModel);

impl posture_analyzer::PoseModel for SlowOnGreen {
    fn estimate(
        &mut self,
        img: &image::RgbImage,
    ) -> Result<Option<posture_core::posture::Pose>, posture_analyzer::ModelError> {
        let image::Rgb([r, g, b]) = *img.get_pixel(80, 80);
        if g > 150 && r < 100 && b < 100 {
            std::thread::sleep(Duration::from_secs(2));
        }
        self.0.estimate(img)
    }

    fn name(&self) -> &str {
        "slow-on-green"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_in_hand_at_a_crash_is_redelivered_not_lost() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let target = DbTarget::Sqlite(out.path().join("posture.db"));
    let slow = analyzer_with(
        Box::new(SlowOnGreen(ColorModel)),
        out.path(),
        &target,
        Limits::default(),
    )
    .await;
    let run = Running::start(slow, broker.port, "images/pi4", "analyzer-e2e-5").await;
    let files = write_frames(&out.path().join("in"), &[([20, 220, 20], 1)]);
    publish(broker.port, "images/pi4", &files).await;
    // Crash while the model works on the frame: no ack was sent.
    tokio::time::sleep(Duration::from_millis(700)).await;
    run.task.abort();
    let _ = run.task.await;
    assert_eq!(db_rows(&target).await.len(), 0);

    // The next analyzer with the same client id gets the frame again.
    let a = analyzer(out.path(), &target, Limits::default()).await;
    let mut run = Running::start(a, broker.port, "images/pi4", "analyzer-e2e-5").await;
    let got = run.take(1).await;
    assert_eq!(row_of(&got[0]).posture_status, "No person detected");
    let _ = run.stop().await;
    assert_eq!(db_rows(&target).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_finishes_and_acknowledges_the_frame_in_hand() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let target = DbTarget::Sqlite(out.path().join("posture.db"));
    let slow = analyzer_with(
        Box::new(SlowOnGreen(ColorModel)),
        out.path(),
        &target,
        Limits::default(),
    )
    .await;
    let run = Running::start(slow, broker.port, "images/pi5", "analyzer-e2e-6").await;
    let files = write_frames(&out.path().join("in"), &[([20, 220, 20], 1)]);
    publish(broker.port, "images/pi5", &files).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    // SIGTERM arrives mid-frame: the frame is finished, recorded and acked.
    let (_, stats) = run.stop().await;
    assert_eq!(
        stats,
        RunStats {
            analyzed: 1,
            rejected: 0
        }
    );
    assert_eq!(db_rows(&target).await.len(), 1);
    // Acknowledged: the next session gets nothing to redo.
    let a = analyzer(out.path(), &target, Limits::default()).await;
    let mut run = Running::start(a, broker.port, "images/pi5", "analyzer-e2e-6").await;
    assert!(
        tokio::time::timeout(Duration::from_secs(1), run.outcomes.recv())
            .await
            .is_err()
    );
    let (a, _) = run.stop().await;
    assert_eq!(a.metrics().duplicates.get(), 0);
}

/// The `local` setup: embedded rumqttd, no external broker, SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_carries_frames_end_to_end() {
    let port = free_port();
    posture_analyzer::broker::start_embedded_broker(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        32 << 20,
    )
    .await
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let target = DbTarget::Sqlite(out.path().join("posture.db"));
    let a = analyzer(out.path(), &target, Limits::default()).await;
    // rumqttd (the embedded broker) speaks MQTT 3.1.1 only.
    let mut cfg = MqttConfig::new("127.0.0.1", port, "analyzer-local");
    cfg.protocol = posture_analyzer::MqttProtocol::V311;
    let mut run = Running::start_with(a, cfg, "images/pi1").await;
    let files = write_frames(&out.path().join("in"), &[(RED, 1), (BLUE, 2), (GRAY, 3)]);
    publish(port, "images/pi1", &files).await;
    let got = run.take(3).await;
    let statuses: Vec<_> = got
        .iter()
        .map(|o| row_of(o).posture_status.clone())
        .collect();
    assert_eq!(statuses, ["Good", "Bad", "No person detected"]);
    let _ = run.stop().await;
    assert_eq!(db_rows(&target).await.len(), 3);
}

/// Panics on green frames, like a model hitting a bug.
struct PanicOnGreen(ColorModel);

impl posture_analyzer::PoseModel for PanicOnGreen {
    fn estimate(
        &mut self,
        img: &image::RgbImage,
    ) -> Result<Option<posture_core::posture::Pose>, posture_analyzer::ModelError> {
        let image::Rgb([r, g, b]) = *img.get_pixel(80, 80);
        assert!(
            !(g > 150 && r < 100 && b < 100),
            "model bug on green frames"
        );
        self.0.estimate(img)
    }

    fn name(&self) -> &str {
        "panic-on-green"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_panic_stops_the_analyzer_without_losing_the_frame() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let target = DbTarget::Sqlite(out.path().join("posture.db"));
    let bad = analyzer_with(
        Box::new(PanicOnGreen(ColorModel)),
        out.path(),
        &target,
        Limits::default(),
    )
    .await;
    let run = Running::start(bad, broker.port, "images/pi6", "analyzer-e2e-7").await;
    let files = write_frames(&out.path().join("in"), &[([20, 220, 20], 1)]);
    publish(broker.port, "images/pi6", &files).await;
    // The loop ends with an error (the process would exit non-zero and be restarted).
    let (_, result) = tokio::time::timeout(Duration::from_secs(20), run.task)
        .await
        .unwrap()
        .unwrap();
    assert!(result.unwrap_err().contains("analysis task failed"));
    assert_eq!(db_rows(&target).await.len(), 0);
    // The restarted analyzer gets the unacknowledged frame.
    let a = analyzer(out.path(), &target, Limits::default()).await;
    let mut run = Running::start(a, broker.port, "images/pi6", "analyzer-e2e-7").await;
    assert_eq!(run.take(1).await.len(), 1);
    let _ = run.stop().await;
    assert_eq!(db_rows(&target).await.len(), 1);
}

/// Issue 11 item 3: a camera whose outputs fail on an error that clears
/// (here a real ENOSPC: its CSV is a link to /dev/full) is retried with
/// backoff, unacknowledged, while another camera's frames go on; nothing is
/// lost or written twice once the disk "has space" again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_full_camera_is_retried_while_other_cameras_go_on() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let target = DbTarget::Sqlite(out.path().join("posture.db"));
    let full_csv = out.path().join("pa_results.csv");
    std::os::unix::fs::symlink("/dev/full", &full_csv).unwrap();
    let a = analyzer(out.path(), &target, Limits::default()).await;
    let retried = a.metrics().retried.clone();
    let mut run = Running::start_topics(
        a,
        broker.port,
        &["images/pa", "images/pb"],
        "analyzer-e2e-full",
    )
    .await;
    let stuck = write_frames(&out.path().join("a"), &[(RED, 1)]);
    publish(broker.port, "images/pa", &stuck).await;
    let others = write_frames(&out.path().join("b"), &[(BLUE, 2), (GRAY, 3)]);
    publish(broker.port, "images/pb", &others).await;
    // Camera pb is analysed while pa waits.
    let got = run.take(2).await;
    assert!(got.iter().all(|o| row_of(o).pi_id == "pb"), "{got:?}");
    let pa = posture_analyzer::metrics::CameraLabels {
        camera: "pa".into(),
    };
    assert!(retried.get_or_create(&pa).get() >= 1);
    // Space again: the waiting frame goes through, once.
    std::fs::remove_file(&full_csv).unwrap();
    let late = run.take(1).await;
    assert_eq!(row_of(&late[0]).pi_id, "pa");
    let _ = run.stop().await;
    assert_eq!(csv_lines(&full_csv).len(), 2);
    assert_eq!(db_rows(&target).await.len(), 3);
}

//! Issue 11 item 3, without a broker: output errors that never clear end in
//! the dead-letter folder instead of stalling the camera; a long camera id
//! (topic segment) does not make file names the file system refuses; the
//! number of open CSV files stays bounded however many cameras there are.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic the test

mod support;

use posture_analyzer::store::DbTarget;
use posture_analyzer::{Frame, Limits, Outcome, RejectReason};
use support::*;

fn frame(camera: &str, seq: u32) -> Frame {
    Frame {
        camera: camera.into(),
        source: format!("images/{camera}"),
        name_hint: None,
        payload: frame_jpeg(RED, seq),
        received: jiff::Timestamp::now(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_that_can_never_be_written_is_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let target = DbTarget::Sqlite(dir.path().join("p.db"));
    let mut a = analyzer(dir.path(), &target, Limits::default()).await;
    // A directory where the camera's CSV file should be: EISDIR, forever.
    std::fs::create_dir_all(dir.path().join("pc_results.csv")).unwrap();
    match a.process(&frame("pc", 1)).await.unwrap() {
        Outcome::Rejected { reason, kept } => {
            assert_eq!(reason, RejectReason::OutputError);
            assert!(kept.is_file());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(a.metrics().failed_count(RejectReason::OutputError), 1);
    // Other cameras are unaffected.
    assert!(matches!(
        a.process(&frame("pd", 2)).await.unwrap(),
        Outcome::Analyzed { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_very_long_camera_id_is_analysed() {
    let dir = tempfile::tempdir().unwrap();
    let target = DbTarget::Sqlite(dir.path().join("p.db"));
    let mut a = analyzer(dir.path(), &target, Limits::default()).await;
    let long = "c".repeat(300);
    let o = a.process(&frame(&long, 1)).await.unwrap();
    let Outcome::Analyzed { row, image, .. } = o else {
        panic!("{o:?}")
    };
    assert_eq!(row.pi_id, long);
    assert!(image.unwrap().is_file());
}

/// Open file descriptors of this process that point under `dir`.
fn open_fds_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|p| p.starts_with(dir))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_csv_files_stay_bounded_with_many_cameras() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().canonicalize().unwrap();
    let target = DbTarget::Sqlite(out.join("db/p.db"));
    let mut a = analyzer(&out, &target, Limits::default()).await;
    for i in 0..100 {
        a.process(&frame(&format!("cam{i}"), i)).await.unwrap();
    }
    assert!(a.open_csv_files() <= posture_analyzer::outputs::MAX_OPEN_CSV);
    let csv_fds = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|p| p.starts_with(&out) && p.to_string_lossy().ends_with("_results.csv"))
        .count();
    assert!(
        csv_fds <= posture_analyzer::outputs::MAX_OPEN_CSV,
        "{csv_fds}"
    );
    assert!(open_fds_under(&out) < 60);
    // A camera whose file was closed gets its line appended after reopening.
    a.process(&frame("cam0", 1000)).await.unwrap();
    assert_eq!(csv_lines(&out.join("cam0_results.csv")).len(), 3);
}

//! How long the overview takes to render with a million rows (issue 14:
//! under 200 ms), and the camera page's 24-hour plot, over SQLite — and over
//! PostgreSQL when `POSTURE_BENCH_PG_URL` names an empty database to fill.
//!
//! ```sh
//! cargo bench -p posture-dashboard --bench overview
//! POSTURE_BENCH_PG_URL=postgres://postgres@127.0.0.1:5432/bench cargo bench -p posture-dashboard --bench overview
//! ```
//!
//! The data: `BENCH_ROWS` (default 1,000,000) frames from 10 cameras, all in
//! the last 24 hours (the worst case for the overview's day statistics),
//! an image stored for every 500th frame. The statistics are built once
//! (the dashboard's start, timed and printed); each iteration is then one
//! `GET /` through the router, as a browser asks, including the per-camera
//! image lookups and the HTML.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic the test

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use jiff::Timestamp;
use posture_analyzer::store::{DbTarget, LegacyDbVars};
use posture_dashboard::seed::{Seeder, synthetic};
use posture_dashboard::{Dashboard, Farm, KubeSource, LiveConfig, ReadOnlyDb, Settings};
use tower::ServiceExt as _;

fn rows() -> usize {
    std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

async fn fill(target: &DbTarget, rows: usize) {
    let started = Instant::now();
    let seeder = Seeder::open(target)
        .await
        .expect("opening the bench database");
    let mut frames = synthetic(10, rows, Timestamp::now(), 86_000);
    for (i, f) in frames.iter_mut().enumerate() {
        if i % 500 == 0 || i + 10 >= rows {
            // A stand-in JPEG: the overview only links to it.
            f.jpeg = Some(vec![0xFF, 0xD8, 0xFF, 0xD9]);
        }
    }
    for chunk in frames.chunks(50_000) {
        seeder.insert(chunk).await.expect("seeding");
    }
    seeder.close().await;
    eprintln!(
        "{}: seeded {rows} rows in {:.1} s",
        target.describe(),
        started.elapsed().as_secs_f64()
    );
}

fn bench_target(c: &mut Criterion, name: &str, target: DbTarget) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    // Lazy pools are made inside the runtime.
    let _guard = rt.enter();
    let rows = rows();
    rt.block_on(fill(&target, rows));
    let dashboard = Dashboard::new(
        ReadOnlyDb::open(&target),
        Farm::new(&KubeSource::Off, None, None),
        Settings::default(),
        LiveConfig::default(),
    );
    let started = Instant::now();
    rt.block_on(dashboard.live().refresh())
        .expect("building the statistics");
    eprintln!(
        "{name}: statistics of {rows} rows built in {:.2} s (once, at start and every refresh)",
        started.elapsed().as_secs_f64()
    );
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let router = dashboard.router(rx);
    let get = |path: &'static str| {
        let router = router.clone();
        let rt = &rt;
        move || {
            rt.block_on(async {
                let resp = router
                    .clone()
                    .oneshot(
                        http::Request::get(path)
                            .body(axum::body::Body::empty())
                            .expect("a request"),
                    )
                    .await
                    .expect("a response");
                assert_eq!(resp.status(), 200);
                http_body_util::BodyExt::collect(resp.into_body())
                    .await
                    .expect("a body")
                    .to_bytes()
                    .len()
            })
        }
    };
    let overview = get("/");
    assert!(overview() > 10_000, "the overview shows ten cards");
    let mut group = c.benchmark_group(format!("dashboard_{name}_{rows}_rows"));
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("overview", |b| b.iter(&overview));
    let camera = get("/camera/cam01?range=24h");
    group.bench_function("camera_24h", |b| b.iter(&camera));
    let camera_hour = get("/camera/cam01?range=1h");
    group.bench_function("camera_1h", |b| b.iter(&camera_hour));
    group.finish();
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    bench_target(c, "sqlite", DbTarget::Sqlite(dir.path().join("bench.db")));
    if let Ok(url) = std::env::var("POSTURE_BENCH_PG_URL") {
        let target = DbTarget::resolve(Some(&url), &LegacyDbVars::default(), "unused".as_ref())
            .expect("POSTURE_BENCH_PG_URL is a postgres:// URL");
        bench_target(c, "postgres", target);
    }
}

criterion_group!(dashboard, benches);
criterion_main!(dashboard);

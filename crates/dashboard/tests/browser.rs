//! The dashboard in a real browser: Debian's headless Chromium driven over
//! WebDriver (chromedriver), against the dashboard served in-process over
//! seeded SQLite and PostgreSQL databases, with GPU usage from a real
//! Prometheus. Checks what a person sees — one card per camera with the
//! right verdict and counts, a plot with a point per seeded frame, a frame
//! inserted while the page is open appearing without a reload, the farm
//! page's nodes and GPU values — and keeps screenshots under
//! `target/screenshots/` (printed by the test).
//!
//! Without Chromium, chromedriver, PostgreSQL or Prometheus the tests fail
//! under `CI` and are skipped otherwise (scripts/ci-services.sh installs them).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic the test

mod support;

use jiff::Timestamp;
use posture_analyzer::record::CSV_HEADER;
use posture_analyzer::store::{DbTarget, LegacyDbVars};
use posture_dashboard::seed::Seeder;
use posture_dashboard::{Farm, KubeSource, ReadOnlyDb};
use posture_testkit::{GpuPrometheus, Postgres};
use serde_json::{Value, json};
use support::{Browser, Served, frame, gpu_source};

/// Cards as a person reads them.
const CARDS: &str = r#"return [...document.querySelectorAll('article.card')].map(c => ({
  camera: c.dataset.camera,
  verdict: c.dataset.verdict,
  title: c.querySelector('h2').innerText,
  badges: [...c.querySelectorAll('.badge')].map(b => b.innerText),
  neck: c.querySelector('b.neck').innerText,
  hour: c.querySelector('.good-hour').innerText,
  hourFrames: c.querySelector('.good-hour').dataset.frames,
  day: c.querySelector('.good-day').innerText,
  dayFrames: c.querySelector('.good-day').dataset.frames,
  image: c.querySelector('img') ? { loaded: c.querySelector('img').complete && c.querySelector('img').naturalWidth, alt: c.querySelector('img').alt } : null,
  placeholder: c.querySelector('.placeholder') ? c.querySelector('.placeholder').innerText : null,
  silent: c.classList.contains('silent'),
}));"#;

async fn seed(target: &DbTarget, now: Timestamp) -> Seeder {
    let s = Seeder::open(target).await.unwrap();
    let g = |n, t| Some((n, t));
    let frames = vec![
        // pi1: 4 Good, 2 Bad in the last half hour; the newest is Good.
        frame("pi1", now, 1500, g(12.0, 4.0), "pi1-a", true),
        frame("pi1", now, 1200, g(15.0, 5.0), "pi1-b", true),
        frame("pi1", now, 900, g(48.0, 6.0), "pi1-c", true),
        frame("pi1", now, 600, g(18.0, 3.0), "pi1-d", true),
        frame("pi1", now, 300, g(30.0, 14.0), "pi1-e", true),
        frame("pi1", now, 60, g(14.0, 4.0), "pi1-f", true),
        // pi2: Good, nobody, then Bad.
        frame("pi2", now, 20_000, g(20.0, 5.0), "pi2-a", true),
        frame("pi2", now, 5000, None, "pi2-b", false),
        frame("pi2", now, 30, g(52.0, 12.0), "pi2-c", true),
        // pi3: silent for two hours.
        frame("pi3", now, 10_800, g(22.0, 6.0), "pi3-a", true),
        frame("pi3", now, 7200, g(25.0, 7.0), "pi3-b", true),
    ];
    s.insert(&frames).await.unwrap();
    // Retention removed pi2's images, oldest first: none is left.
    s.delete_image("pi2-a").await.unwrap();
    s.delete_image("pi2-c").await.unwrap();
    s
}

fn card<'a>(cards: &'a Value, cam: &str) -> &'a Value {
    cards
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["camera"] == cam)
        .unwrap_or_else(|| panic!("no card for {cam}: {cards}"))
}

async fn exercise(kind: &str, target: DbTarget) {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let Some(prom) = GpuPrometheus::start(&[("agx", 35.0), ("orin", 72.0)]) else {
        return;
    };
    let now = Timestamp::now();
    let seeder = seed(&target, now).await;
    assert!(
        ReadOnlyDb::open(&target).write_is_refused().await,
        "the dashboard's connections must be read-only"
    );
    let farm = Farm::new(
        &KubeSource::Off,
        Some(gpu_source(&prom.url())),
        Some(prom.url()),
    );
    let served = Served::start(&target, farm, KubeSource::Off).await;

    // Overview: one card per camera with verdict, counts, image or placeholder.
    browser.goto(&served.url).await;
    browser
        .wait_for(
            "three cards with images loaded",
            "const i = document.querySelector('article[data-camera=\"pi1\"] img'); return document.querySelectorAll('article.card').length === 3 && i && i.complete && i.naturalWidth > 0",
            30,
        )
        .await;
    let cards = browser.js(CARDS, json!([])).await;
    let pi1 = card(&cards, "pi1");
    assert_eq!(pi1["verdict"], "Good", "{pi1}");
    assert_eq!(pi1["neck"], "14.0°");
    assert_eq!(pi1["hourFrames"], "6");
    assert!(pi1["hour"].as_str().unwrap().starts_with("67 %"), "{pi1}");
    assert!(
        pi1["hour"].as_str().unwrap().contains("of 6 judged"),
        "{pi1}"
    );
    assert_eq!(pi1["image"]["loaded"], 320);
    assert!(
        pi1["image"]["alt"]
            .as_str()
            .unwrap()
            .contains("Good, neck 14.0°"),
        "{pi1}"
    );
    let pi2 = card(&cards, "pi2");
    assert_eq!(pi2["verdict"], "Bad");
    assert_eq!(pi2["hourFrames"], "1");
    assert_eq!(pi2["dayFrames"], "3");
    assert!(pi2["day"].as_str().unwrap().starts_with("50 %"), "{pi2}");
    assert!(
        pi2["placeholder"]
            .as_str()
            .unwrap()
            .contains("No image kept"),
        "{pi2}"
    );
    let pi3 = card(&cards, "pi3");
    assert_eq!(pi3["silent"], true, "{pi3}");
    assert!(pi3["badges"].to_string().contains("Silent 2 h"), "{pi3}");
    assert_eq!(pi3["hourFrames"], "0");
    assert_eq!(pi3["dayFrames"], "2");
    assert_eq!(card(&cards, "pi1")["silent"], false);
    browser.screenshot(&format!("{kind}-overview.png")).await;

    // Live: a frame written now shows up without a reload.
    browser
        .js("window.__noReload = 42; return true;", json!([]))
        .await;
    seeder
        .insert(&[frame(
            "pi1",
            Timestamp::now(),
            0,
            Some((55.0, 12.0)),
            "pi1-live",
            true,
        )])
        .await
        .unwrap();
    browser
        .wait_for(
            "pi1's card to turn Bad live",
            "const c = document.querySelector('article[data-camera=\"pi1\"]'); return window.__noReload === 42 && c.dataset.verdict === 'Bad' && c.querySelector('.good-hour').dataset.frames === '7' && c.querySelector('img').complete && c.querySelector('img').naturalWidth > 0",
            30,
        )
        .await;
    let status = browser
        .js(
            "return document.getElementById('live-status').innerText",
            json!([]),
        )
        .await;
    assert!(status.as_str().unwrap().starts_with("live"), "{status}");
    browser
        .screenshot(&format!("{kind}-overview-live.png"))
        .await;

    // Camera page: a point per frame, threshold lines, recent frames with images.
    browser
        .goto(&format!("{}/camera/pi1?range=1h", served.url))
        .await;
    browser
        .wait_eq(
            "the plot's points",
            "return document.querySelectorAll('svg.plot .pts-neck circle').length",
            json!(7),
            20,
        )
        .await;
    let page = browser
        .js(
            r#"return {
              torso: document.querySelectorAll('svg.plot .pts-torso rect').length,
              good: document.querySelectorAll('svg.plot .shade rect.good').length,
              bad: document.querySelectorAll('svg.plot .shade rect.bad').length,
              limits: document.querySelectorAll('svg.plot .limit-neck, svg.plot .limit-torso').length,
              rows: document.querySelectorAll('table.frames tbody tr').length,
              images: document.querySelectorAll('table.frames a[href^="/image/"]').length,
              current: document.querySelector('.ranges [aria-current=page]').innerText,
              label: document.querySelector('svg.plot').getAttribute('aria-labelledby'),
              csv: document.querySelector('a[download]').getAttribute('href'),
            }"#,
            json!([]),
        )
        .await;
    assert_eq!(page["torso"], 7, "{page}");
    assert_eq!(
        (page["good"].as_u64(), page["bad"].as_u64()),
        (Some(4), Some(3)),
        "{page}"
    );
    assert_eq!(page["limits"], 2);
    assert_eq!(page["rows"], 7);
    assert_eq!(page["images"], 7);
    assert_eq!(page["current"], "1 h");
    browser
        .js("window.__noReload = 7; return true;", json!([]))
        .await;
    seeder
        .insert(&[frame(
            "pi1",
            Timestamp::now(),
            0,
            Some((16.0, 4.0)),
            "pi1-live2",
            true,
        )])
        .await
        .unwrap();
    browser
        .wait_for(
            "a new point live",
            "return window.__noReload === 7 && document.querySelectorAll('svg.plot .pts-neck circle').length === 8",
            30,
        )
        .await;
    browser.screenshot(&format!("{kind}-camera.png")).await;

    // The CSV download: the analyzer's CSV columns, one line per frame.
    let csv = browser
        .js(
            "return fetch(arguments[0]).then(r => r.text())",
            json!([page["csv"]]),
        )
        .await;
    let lines: Vec<&str> = csv.as_str().unwrap().lines().collect();
    assert_eq!(lines[0], CSV_HEADER);
    assert_eq!(lines.len(), 9, "{csv}");
    assert!(lines[1].starts_with("pi1,pi1_pi1-a.jpg,"), "{}", lines[1]);
    assert!(
        lines[8].ends_with(",Good,true,seed,pi1-live2"),
        "{}",
        lines[8]
    );

    // Farm page: nodes and GPU values from the real Prometheus, live.
    browser.goto(&format!("{}/farm", served.url)).await;
    let usage = |node: &str| {
        format!(
            "const c = document.querySelector('tr[data-node=\"{node}\"] .gpu-value'); return c && c.dataset.usage"
        )
    };
    let agx = browser
        .wait_for("agx's GPU reading", &usage("agx"), 30)
        .await;
    assert_eq!(agx, "35.0");
    assert_eq!(
        browser
            .wait_for("orin's GPU reading", &usage("orin"), 30)
            .await,
        "72.0"
    );
    let states = browser
        .js(
            "return [...document.querySelectorAll('tr[data-node] .badge')].map(b => b.innerText)",
            json!([]),
        )
        .await;
    assert_eq!(states, json!(["ok", "ok"]));
    let sources = browser
        .js(
            "return document.querySelector('ul.sources').innerText",
            json!([]),
        )
        .await;
    assert!(
        sources
            .as_str()
            .unwrap()
            .contains("turned off (--no-kubernetes)"),
        "{sources}"
    );
    prom.set(&[("agx", 35.0), ("orin", 20.0)]);
    browser
        .js("window.__noReload = 3; return true;", json!([]))
        .await;
    browser
        .wait_for(
            "orin's new reading live",
            "const c = document.querySelector('tr[data-node=\"orin\"] .gpu-value'); return window.__noReload === 3 && c && c.dataset.usage === '20.0'",
            40,
        )
        .await;
    browser.screenshot(&format!("{kind}-farm.png")).await;

    browser.quit().await;
    served.stop().await;
    seeder.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_pages_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    exercise("sqlite", DbTarget::Sqlite(dir.path().join("posture.db"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_pages_in_a_real_browser() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    let target =
        DbTarget::resolve(Some(&pg.url()), &LegacyDbVars::default(), "x".as_ref()).unwrap();
    exercise("postgres", target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_opens_offline_in_a_real_browser() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let target = DbTarget::Sqlite(dir.path().join("posture.db"));
    let now = Timestamp::now();
    let seeder = seed(&target, now).await;
    seeder.close().await;
    let opts = posture_dashboard::report::ReportOptions {
        from: Timestamp::from_second(now.as_second() - 86_400).unwrap(),
        to: Timestamp::from_second(now.as_second() + 1).unwrap(),
        cameras: Vec::new(),
        thresholds: Default::default(),
        clock: posture_dashboard::Clock::new(Some("UTC")).unwrap(),
        images: true,
    };
    let db = ReadOnlyDb::open(&target);
    let html = posture_dashboard::report::build(&db, &opts).await.unwrap();
    assert!(!html.contains("<script"), "the report needs no script");
    assert!(
        !html.contains("http://") || !html.contains("src=\"http"),
        "no external resource"
    );
    let path = support::screenshot_dir().join("report.html");
    std::fs::write(&path, &html).unwrap();
    // Nothing serves it: the browser reads the file alone.
    browser.goto(&format!("file://{}", path.display())).await;
    let seen = browser
        .js(
            r#"return {
              plots: document.querySelectorAll('svg.plot').length,
              pi1: document.querySelectorAll('#cam-pi1 svg.plot .pts-neck circle').length,
              pi2: document.querySelectorAll('#cam-pi2 svg.plot .pts-neck circle').length,
              rows: document.querySelectorAll('table.summary tbody tr').length,
              images: [...document.images].filter(i => i.complete && i.naturalWidth > 0).length,
              fetched: performance.getEntriesByType('resource').length,
              scripts: document.scripts.length,
            }"#,
            json!([]),
        )
        .await;
    assert_eq!(seen["plots"], 3, "{seen}");
    assert_eq!(seen["pi1"], 6, "{seen}");
    assert_eq!(seen["pi2"], 2, "pi2's no-person frame has no angle: {seen}");
    assert_eq!(seen["rows"], 3);
    assert_eq!(
        seen["images"], 2,
        "pi1's and pi3's newest images are embedded (pi2 has none left): {seen}"
    );
    assert_eq!(seen["fetched"], 0, "the report loads nothing: {seen}");
    assert_eq!(seen["scripts"], 0);
    browser.screenshot("report.png").await;
    browser.quit().await;
}

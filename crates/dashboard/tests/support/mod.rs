//! Test helpers: chromedriver with Debian's headless Chromium and a small
//! W3C WebDriver client, the dashboard served in-process on 127.0.0.1:0, a
//! GPU source over a Prometheus, and seed data. PostgreSQL and Prometheus
//! with fake GPU readings come from `posture-testkit`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jiff::Timestamp;
use posture_analyzer::store::DbTarget;
use posture_dashboard::seed::SeedFrame;
use posture_dashboard::{Clock, Dashboard, Farm, KubeSource, LiveConfig, ReadOnlyDb, Settings};
use serde_json::{Value, json};
use tokio::sync::watch;

use posture_testkit::{Proc, free_port, require};

/// Where screenshots go: `target/screenshots/` of the workspace (or
/// `$SCREENSHOT_DIR`).
pub fn screenshot_dir() -> PathBuf {
    let dir = std::env::var_os("SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
            target.join("screenshots")
        });
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// chromedriver driving Debian's headless Chromium, and one session.
pub struct Browser {
    _driver: Proc,
    _profile: tempfile::TempDir,
    http: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Browser {
    /// Starts chromedriver and a session, or `None` (skip) when Chromium is
    /// not installed outside CI.
    pub async fn start() -> Option<Self> {
        let chromium = require("/usr/bin/chromium", "Chromium (Debian package chromium)")?;
        let driver = require(
            "/usr/bin/chromedriver",
            "ChromeDriver (Debian package chromium-driver)",
        )?;
        let port = free_port();
        let mut proc = Proc::spawn(
            Command::new(driver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            "chromedriver",
        );
        proc.wait_port(port);
        let profile = tempfile::tempdir().unwrap();
        let http = Client::builder(TokioExecutor::new()).build_http();
        let mut b = Self {
            _driver: proc,
            _profile: profile,
            http,
            base: format!("http://127.0.0.1:{port}"),
        };
        // The flags Chromium needs here: headless, as root, no network of its own.
        let args = json!([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-dev-shm-usage",
            format!("--user-data-dir={}", b._profile.path().display()),
            "--window-size=1280,900"
        ]);
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args }
        }}});
        let v = b.call("POST", "/session", Some(caps)).await;
        let id = v["sessionId"].as_str().expect("a session id").to_string();
        b.base = format!("{}/session/{id}", b.base);
        Some(b)
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let uri = format!("{}{path}", self.base);
        let req = hyper::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .unwrap();
        let resp = self.http.request(req).await.expect("WebDriver request");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert!(
            status.is_success(),
            "WebDriver {method} {path}: {status} {v}"
        );
        v["value"].clone()
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url }))).await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns its value.
    pub async fn js(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Waits until `script` returns a truthy value; panics with `what` and
    /// the last value after `secs` seconds.
    pub async fn wait_for(&self, what: &str, script: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.js(script, json!([])).await;
            let truthy =
                !matches!(v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; last value {v}");
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Waits until `script` returns `expected`; panics with the last value.
    pub async fn wait_eq(&self, what: &str, script: &str, expected: Value, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.js(script, json!([])).await;
            if v == expected {
                return;
            }
            if Instant::now() > deadline {
                let _ = self.screenshot("failure.png").await;
                panic!("timed out waiting for {what}: expected {expected}, last value {v}");
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Saves a screenshot of the whole page as `name` in [`screenshot_dir`].
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let h = self
            .js(
                "return Math.ceil(document.documentElement.scrollHeight);",
                json!([]),
            )
            .await
            .as_u64()
            .unwrap_or(900)
            .clamp(600, 4000);
        self.call(
            "POST",
            "/window/rect",
            Some(json!({ "width": 1280, "height": h + 140 })),
        )
        .await;
        let v = self.call("GET", "/screenshot", None).await;
        use base64::Engine as _;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .expect("a base64 PNG");
        let path = screenshot_dir().join(name);
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
        self.call(
            "POST",
            "/window/rect",
            Some(json!({ "width": 1280, "height": 900 })),
        )
        .await;
        path
    }

    /// Ends the session.
    pub async fn quit(self) {
        let _ = self.call("DELETE", "", None).await;
    }
}

/// A GPU snapshot channel over the Prometheus at `url` (nodes discovered
/// by the `node` label, as the dashboard's `--prometheus-url` does).
pub fn gpu_source(url: &str) -> watch::Receiver<posture_core::gpu::GpuSnapshot> {
    use posture_gpu::config::{DEFAULT_QUERY_TEMPLATE, default_discover};
    let client = posture_gpu::PromClient::new(url, Duration::from_secs(2)).unwrap();
    let config = posture_gpu::GpuConfig::default()
        .resolve(DEFAULT_QUERY_TEMPLATE, default_discover(), &[])
        .unwrap();
    let source = posture_gpu::GpuSource::new(
        client,
        config,
        posture_gpu::SourceSettings {
            poll_interval: Duration::from_millis(500),
            stale_after: Duration::from_secs(30),
        },
    );
    source.spawn().0
}

/// GETs `url` over plain HTTP/1.1: the status and the whole body.
pub async fn get(url: &str) -> (hyper::StatusCode, Bytes) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let resp = client.get(url.parse().unwrap()).await.unwrap();
    let status = resp.status();
    match resp.into_body().collect().await {
        Ok(body) => (status, body.to_bytes()),
        Err(e) => panic!("GET {url}: {status}, then the body was cut off ({e})"),
    }
}

/// The dashboard served in-process on 127.0.0.1:0.
pub struct Served {
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Served {
    pub async fn start(target: &DbTarget, farm: Farm, kube: KubeSource) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let settings = Settings {
            clock: Clock::new(Some("UTC")).unwrap(),
            ..Settings::default()
        };
        let live = LiveConfig {
            poll_interval: Duration::from_millis(100),
            refresh_interval: Duration::from_secs(600),
        };
        let dashboard = Dashboard::new(ReadOnlyDb::open(target), farm, settings, live);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(dashboard.serve(listener, kube, async move {
            let _ = rx.await;
        }));
        Self {
            url,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops it and waits (open SSE streams must not keep it alive).
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("the dashboard stops within 10 s of shutdown")
                .unwrap()
                .unwrap();
        }
    }
}

/// A small JPEG: a coloured gradient standing in for an annotated frame.
pub fn jpeg(color: [u8; 3]) -> Vec<u8> {
    use posture_analyzer::image::{Rgb, RgbImage};
    let img = RgbImage::from_fn(320, 240, |x, y| {
        let f = 0.55 + 0.45 * (x as f32 / 320.0) * (1.0 - y as f32 / 480.0);
        Rgb([
            (color[0] as f32 * f) as u8,
            (color[1] as f32 * f) as u8,
            (color[2] as f32 * f) as u8,
        ])
    });
    let mut out = Vec::new();
    posture_analyzer::image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode_image(&img)
        .unwrap();
    out
}

/// A frame `secs_ago` seconds before `now`.
pub fn frame(
    camera: &str,
    now: Timestamp,
    secs_ago: i64,
    angles: Option<(f64, f64)>,
    id: &str,
    image: bool,
) -> SeedFrame {
    let t = Timestamp::from_second(now.as_second() - secs_ago).unwrap();
    let mut f = posture_dashboard::seed::judged(camera, t, angles, id.to_string());
    if image {
        f.jpeg = Some(jpeg(match f.status.as_str() {
            "Good" => [40, 160, 90],
            "Bad" => [200, 60, 50],
            _ => [110, 110, 120],
        }));
    }
    f
}

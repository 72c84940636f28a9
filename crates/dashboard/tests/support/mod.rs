//! Test helpers: the real servers the browser tests use (chromedriver with
//! Debian's headless Chromium, PostgreSQL, Prometheus with node-exporter's
//! textfile collector), a small W3C WebDriver client, the dashboard served
//! in-process on 127.0.0.1:0, and seed data.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary at `path`, or: a panic under CI, a skip notice otherwise.
pub fn require(path: &str, what: &str) -> Option<PathBuf> {
    let p = PathBuf::from(path);
    if p.exists() {
        return Some(p);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{what} is required under CI but {path} is missing (scripts/ci-services.sh installs it)"
        );
    }
    eprintln!("SKIP: {what} not installed ({path} missing)");
    None
}

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

fn wait_port(port: u16) {
    for _ in 0..400 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("nothing listens on 127.0.0.1:{port}");
}

/// A spawned process, killed on drop.
pub struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning chromedriver");
        let proc = Proc(child);
        wait_port(port);
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

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A throwaway PostgreSQL cluster.
pub struct Postgres {
    dir: tempfile::TempDir,
    pub port: u16,
    as_root: bool,
}

impl Postgres {
    pub fn start() -> Option<Self> {
        require(&format!("{PG_BIN}/initdb"), "PostgreSQL 15")?;
        let dir = tempfile::tempdir().unwrap();
        let as_root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        if as_root {
            assert!(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(dir.path())
                    .status()
                    .unwrap()
                    .success()
            );
        }
        let pg = Self {
            dir,
            port: free_port(),
            as_root,
        };
        let data = pg.dir.path().join("data");
        assert!(
            pg.cmd("initdb")
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                .arg(&data)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap()
                .success(),
            "initdb failed"
        );
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            pg.port,
            pg.dir.path().display()
        );
        let ok = pg
            .cmd("pg_ctl")
            .args(["start", "-w", "-t", "30", "-D"])
            .arg(&data)
            .arg("-l")
            .arg(pg.dir.path().join("log"))
            .arg("-o")
            .arg(opts)
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(
            ok,
            "pg_ctl start failed: {}",
            std::fs::read_to_string(pg.dir.path().join("log")).unwrap_or_default()
        );
        Some(pg)
    }

    fn cmd(&self, tool: &str) -> Command {
        let bin = format!("{PG_BIN}/{tool}");
        if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", &bin]);
            c
        } else {
            Command::new(bin)
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .cmd("pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A real Prometheus scraping a real node-exporter whose textfile collector
/// serves GPU readings this test writes.
pub struct Prometheus {
    _prom: Proc,
    _exporter: Proc,
    dir: tempfile::TempDir,
    pub url: String,
}

impl Prometheus {
    pub fn start(readings: &[(&str, f64)]) -> Option<Self> {
        let prom = require(
            "/usr/bin/prometheus",
            "Prometheus (Debian package prometheus)",
        )?;
        let exporter = require(
            "/usr/bin/prometheus-node-exporter",
            "prometheus-node-exporter",
        )?;
        let dir = tempfile::tempdir().unwrap();
        let textfiles = dir.path().join("textfiles");
        std::fs::create_dir_all(&textfiles).unwrap();
        Self::write(&textfiles, readings);
        let eport = free_port();
        let exporter = Proc(
            Command::new(exporter)
                .arg(format!("--web.listen-address=127.0.0.1:{eport}"))
                .arg("--collector.disable-defaults")
                .arg("--collector.textfile")
                .arg(format!(
                    "--collector.textfile.directory={}",
                    textfiles.display()
                ))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let pport = free_port();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:{eport}']\n"
        )).unwrap();
        let prom = Proc(
            Command::new(prom)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{pport}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_port(pport);
        Some(Self {
            _prom: prom,
            _exporter: exporter,
            dir,
            url: format!("http://127.0.0.1:{pport}"),
        })
    }

    fn write(dir: &Path, readings: &[(&str, f64)]) {
        let mut text = String::from("# TYPE jetson_gpu_usage_percent gauge\n");
        for (node, v) in readings {
            text.push_str(&format!(
                "jetson_gpu_usage_percent{{node=\"{node}\"}} {v}\n"
            ));
        }
        let tmp = dir.join("gpu.prom.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join("gpu.prom")).unwrap();
    }

    /// Changes the readings.
    pub fn set(&self, readings: &[(&str, f64)]) {
        Self::write(&self.dir.path().join("textfiles"), readings);
    }

    /// A GPU snapshot channel over this Prometheus (discovery by label).
    pub fn source(&self) -> watch::Receiver<posture_core::gpu::GpuSnapshot> {
        use posture_gpu::config::{DEFAULT_QUERY_TEMPLATE, default_discover};
        let client = posture_gpu::PromClient::new(&self.url, Duration::from_secs(2)).unwrap();
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

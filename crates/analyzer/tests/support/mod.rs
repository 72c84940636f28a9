//! Shared helpers for the end-to-end tests: real `mosquitto` and PostgreSQL
//! processes on free 127.0.0.1 ports (killed on drop), a deterministic pose
//! model double, and image/frame builders.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use image::{Rgb, RgbImage};
use posture_analyzer::Outcome;
use posture_analyzer::mqtt::{MqttConfig, RunStats, run_analyzer};
use posture_analyzer::store::DbTarget;
use posture_analyzer::{
    Analyzer, AnalyzerConfig, Database, Limits, Metrics, ModelError, PoseModel, Store,
};
use posture_core::posture::{Landmark, Pose, landmark};
use tokio::sync::{mpsc, oneshot};

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

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status();
}

/// A real mosquitto broker with on-disk persistence (sessions and queued
/// QoS 1 messages survive a restart).
pub struct Mosquitto {
    bin: PathBuf,
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Mosquitto {
    pub fn start() -> Option<Self> {
        Self::start_with(|_| String::new())
    }

    /// Like [`Mosquitto::start`] with extra listener settings (given the
    /// broker's directory), e.g. TLS files.
    pub fn start_with(extra: impl FnOnce(&Path) -> String) -> Option<Self> {
        let bin = require("/usr/sbin/mosquitto", "mosquitto")?;
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = format!(
            "per_listener_settings false\nlistener {port} 127.0.0.1\n{}allow_anonymous true\npersistence true\npersistence_location {}/\nuser root\nmax_queued_messages 10000\nlog_dest stderr\n",
            extra(dir.path()),
            dir.path().display()
        );
        std::fs::write(dir.path().join("mosquitto.conf"), conf).unwrap();
        let mut m = Self {
            bin,
            port,
            dir,
            child: None,
        };
        m.restart();
        Some(m)
    }

    /// The broker's working directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts the broker (again) on the same port and persistence directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_port(self.port);
    }

    /// Stops it cleanly (SIGTERM: it writes its persistence file).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(&c, "TERM");
            let _ = c.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_port(port: u16) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("nothing listens on 127.0.0.1:{port}");
}

/// Runs `openssl` in `dir`; panics when it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let ok = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl {args:?} failed");
}

/// A throwaway CA (`ca.pem`, `ca.key`) and a server certificate signed by it
/// (`server.pem`, `server.key`) whose subjectAltName is `san`
/// (e.g. `DNS:localhost,IP:127.0.0.1`).
pub fn make_certs(dir: &Path, san: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=posture-farm test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A throwaway PostgreSQL cluster in a temporary directory.
pub struct Postgres {
    dir: tempfile::TempDir,
    pub port: u16,
    running: bool,
    as_root: bool,
    /// Extra server options (`-c name=value …`).
    extra: String,
}

impl Postgres {
    pub fn start() -> Option<Self> {
        Self::start_with(|_| String::new())
    }

    /// PostgreSQL with TLS on (a throwaway CA in [`Postgres::dir`]`/tls/ca.pem`;
    /// the server certificate names only `DNS:localhost`).
    pub fn start_tls() -> Option<Self> {
        require("/usr/bin/openssl", "openssl")?;
        Self::start_with(|dir| {
            let tls = dir.join("tls");
            std::fs::create_dir_all(&tls).unwrap();
            make_certs(&tls, "DNS:localhost");
            // TLS only: a plain connection is refused.
            std::fs::write(
                tls.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
            )
            .unwrap();
            format!(
                "-c ssl=on -c ssl_cert_file={0}/server.pem -c ssl_key_file={0}/server.key -c hba_file={0}/pg_hba.conf",
                tls.display()
            )
        })
    }

    /// Like [`Postgres::start`]; `prepare` gets the cluster's directory
    /// before initdb and returns extra server options.
    pub fn start_with(prepare: impl FnOnce(&Path) -> String) -> Option<Self> {
        require(&format!("{PG_BIN}/initdb"), "PostgreSQL 15")?;
        let dir = tempfile::tempdir().unwrap();
        let extra = prepare(dir.path());
        let as_root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        if as_root {
            // initdb refuses to run as root: hand the directory to `postgres`.
            assert!(
                Command::new("chown")
                    .arg("-R")
                    .arg("postgres:postgres")
                    .arg(dir.path())
                    .status()
                    .unwrap()
                    .success()
            );
        }
        let key = dir.path().join("tls/server.key");
        if key.exists() {
            // PostgreSQL refuses a private key others can read.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let pg = Self {
            dir,
            port: free_port(),
            running: false,
            as_root,
            extra,
        };
        let data = pg.data();
        let ok = pg
            .cmd("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "initdb failed");
        let mut pg = pg;
        pg.restart();
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
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

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn restart(&mut self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off {}",
            self.port,
            self.dir.path().display(),
            self.extra
        );
        let ok = self
            .cmd("pg_ctl")
            .args(["start", "-w", "-t", "30", "-D"])
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .arg("-o")
            .arg(opts)
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(
            ok,
            "pg_ctl start failed: {}",
            std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
        );
        self.running = true;
    }

    pub fn stop(&mut self) {
        let _ = self
            .cmd("pg_ctl")
            .args(["stop", "-w", "-m", "fast", "-D"])
            .arg(self.data())
            .stdout(Stdio::null())
            .status();
        self.running = false;
    }

    /// Runs SQL through `psql`; its output, unaligned.
    pub fn psql(&self, sql: &str) -> String {
        let out = self
            .cmd("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(sql)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let _ = self
                .cmd("pg_ctl")
                .args(["stop", "-m", "immediate", "-D"])
                .arg(self.data())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A deterministic stand-in for the pose model: the colour of the image
/// centre says what it "sees". Red: a person sitting upright (Good); blue: a
/// person with the head 60 px forward (Bad); anything else: nobody.
pub struct ColorModel;

impl PoseModel for ColorModel {
    fn estimate(&mut self, img: &RgbImage) -> Result<Option<Pose>, ModelError> {
        let Rgb([r, g, b]) = *img.get_pixel(img.width() / 2, img.height() / 2);
        let (ear_dx, present) = if r > 150 && g < 100 && b < 100 {
            (2.0, true)
        } else if b > 150 && r < 100 && g < 100 {
            (60.0, true)
        } else {
            (0.0, false)
        };
        if !present {
            return Ok(None);
        }
        let mut landmarks = vec![Landmark::default(); landmark::COUNT];
        let mut put = |i: usize, x: f32, y: f32| {
            landmarks[i] = Landmark {
                x,
                y,
                z: 0.0,
                visibility: 0.95,
                presence: 0.99,
            };
        };
        put(landmark::LEFT_EAR, 40.0 + ear_dx, 20.0);
        put(landmark::LEFT_SHOULDER, 40.0, 80.0);
        put(landmark::LEFT_HIP, 41.0, 150.0);
        Ok(Some(Pose {
            landmarks,
            score: 0.9,
        }))
    }

    fn name(&self) -> &str {
        "color-test-double"
    }
}

/// A 160×160 JPEG of one colour; `seq` changes a corner so frames differ.
pub fn frame_jpeg(color: [u8; 3], seq: u32) -> Vec<u8> {
    let mut img = RgbImage::from_pixel(160, 160, Rgb(color));
    for i in 0..8u32 {
        img.put_pixel(
            i,
            0,
            Rgb([(seq >> (i % 4 * 8)) as u8, (seq * 37 + i) as u8, 0]),
        );
    }
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
        .encode_image(&img)
        .unwrap();
    out
}

pub const RED: [u8; 3] = [220, 20, 20];
pub const BLUE: [u8; 3] = [20, 20, 220];
pub const GRAY: [u8; 3] = [128, 128, 128];

/// Writes frames as JPEG files (for the real publisher) and returns their paths.
pub fn write_frames(dir: &Path, frames: &[([u8; 3], u32)]) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    frames
        .iter()
        .map(|(c, seq)| {
            let p = dir.join(format!("frame_{seq:04}.jpg"));
            std::fs::write(&p, frame_jpeg(*c, *seq)).unwrap();
            p
        })
        .collect()
}

/// An analyzer with the colour model writing under `out` and rows to `target`.
pub async fn analyzer(out: &Path, target: &DbTarget, limits: Limits) -> Analyzer {
    analyzer_with(Box::new(ColorModel), out, target, limits).await
}

/// An analyzer with `model` writing under `out` and rows to `target`.
pub async fn analyzer_with(
    model: Box<dyn PoseModel>,
    out: &Path,
    target: &DbTarget,
    limits: Limits,
) -> Analyzer {
    let mut cfg = AnalyzerConfig::new(out.to_path_buf(), "test-node".into());
    cfg.limits = limits;
    analyzer_from(cfg, model, out, target).await
}

/// An analyzer with settings `cfg` (its spool under `out`).
pub async fn analyzer_from(
    cfg: AnalyzerConfig,
    model: Box<dyn PoseModel>,
    out: &Path,
    target: &DbTarget,
) -> Analyzer {
    let metrics = Metrics::default();
    let db = Database::open(target).await.unwrap();
    let store = Store::new(db, &out.join("spool/posture_log.jsonl"), &metrics).unwrap();
    Analyzer::new(cfg, model, store, metrics)
}

/// Lines of a CSV file (header included).
pub fn csv_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// An analyzer running `run_analyzer` in a task, with its outcomes on a channel.
pub struct Running {
    /// Resolves the analyzer's shutdown future.
    pub stop: oneshot::Sender<()>,
    /// The task (abort it to simulate a crash).
    pub task: tokio::task::JoinHandle<(Analyzer, Result<RunStats, String>)>,
    /// Every acknowledged frame's outcome.
    pub outcomes: mpsc::UnboundedReceiver<Outcome>,
}

impl Running {
    /// Subscribes to `topic` on 127.0.0.1:`port` as `client_id` (MQTT 5).
    pub async fn start(analyzer: Analyzer, port: u16, topic: &str, client_id: &str) -> Self {
        Self::start_with(
            analyzer,
            MqttConfig::new("127.0.0.1", port, client_id),
            topic,
        )
        .await
    }

    /// Subscribes to `topic` with `cfg`; returns once the subscription is in place.
    pub async fn start_with(analyzer: Analyzer, cfg: MqttConfig, topic: &str) -> Self {
        Self::start_many(analyzer, cfg, vec![topic.to_string()]).await
    }

    /// Subscribes to several `topics` on 127.0.0.1:`port` as `client_id`.
    pub async fn start_topics(
        analyzer: Analyzer,
        port: u16,
        topics: &[&str],
        client_id: &str,
    ) -> Self {
        let cfg = MqttConfig::new("127.0.0.1", port, client_id);
        Self::start_many(
            analyzer,
            cfg,
            topics.iter().map(|t| t.to_string()).collect(),
        )
        .await
    }

    async fn start_many(mut analyzer: Analyzer, cfg: MqttConfig, topics: Vec<String>) -> Self {
        let (stop, stop_rx) = oneshot::channel::<()>();
        let (tx, outcomes) = mpsc::unbounded_channel();
        let ready = Arc::new(AtomicBool::new(false));
        let ready_flag = ready.clone();
        let task = tokio::spawn(async move {
            let stats = run_analyzer(
                &cfg,
                &topics,
                None,
                &mut analyzer,
                async {
                    let _ = stop_rx.await;
                },
                move |up| ready_flag.store(up, Ordering::SeqCst),
                move |o| {
                    let _ = tx.send(o.clone());
                },
            )
            .await
            .map_err(|e| posture_analyzer::error_chain(&e));
            (analyzer, stats)
        });
        for _ in 0..400 {
            if ready.load(Ordering::SeqCst) {
                return Self {
                    stop,
                    task,
                    outcomes,
                };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("analyzer did not subscribe");
    }

    /// Waits for `n` more outcomes.
    pub async fn take(&mut self, n: usize) -> Vec<Outcome> {
        let mut got = Vec::new();
        while got.len() < n {
            match tokio::time::timeout(Duration::from_secs(60), self.outcomes.recv()).await {
                Ok(Some(o)) => got.push(o),
                other => panic!("waited for {n} outcomes, got {} ({other:?})", got.len()),
            }
        }
        got
    }

    /// Nothing more arrives within `wait`.
    pub async fn quiet(&mut self, wait: Duration) {
        if let Ok(Some(o)) = tokio::time::timeout(wait, self.outcomes.recv()).await {
            panic!("unexpected outcome {o:?}");
        }
    }

    /// Stops it (the frame in hand is finished) and returns the analyzer.
    pub async fn stop(self) -> (Analyzer, RunStats) {
        let _ = self.stop.send(());
        let (a, stats) = self.task.await.unwrap();
        (a, stats.unwrap())
    }
}

/// Publishes raw payloads at QoS 1 as an MQTT 3.1.1 camera (no size limit
/// of its own, up to 256 MiB) and waits for every PUBACK.
pub async fn publish_raw(port: u16, topic: &str, payloads: Vec<Vec<u8>>) {
    let mut o = rumqttc::MqttOptions::new(format!("raw-{}", free_port()), "127.0.0.1", port);
    o.set_max_packet_size(1 << 28, 1 << 28);
    let (client, mut el) = rumqttc::AsyncClient::new(o, 64);
    let n = payloads.len();
    for p in payloads {
        client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, p)
            .await
            .unwrap();
    }
    let mut acked = 0;
    while acked < n {
        match tokio::time::timeout(Duration::from_secs(60), el.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            other => panic!("publishing: {other:?}"),
        }
    }
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_millis(500), el.poll()).await;
}

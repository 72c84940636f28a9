//! Shared helpers for the end-to-end tests: a deterministic pose model
//! double, image/frame builders, an analyzer running in a task, and a raw
//! MQTT publisher. The real servers (mosquitto, PostgreSQL, certificates)
//! come from `posture-testkit`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
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
use posture_testkit::free_port;
use tokio::sync::{mpsc, oneshot};

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

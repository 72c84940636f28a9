//! # posture-analyzer — camera frames to posture verdicts
//!
//! The workload the farm exists for. Each frame (a base64 JPEG from a
//! camera over MQTT, or an image file) is decoded within size and pixel
//! limits, run through a pose model, judged Good/Bad from the neck and torso
//! inclination of the side facing the camera (the pure functions in
//! [`posture_core::posture`]), and recorded: always a `posture_log` row, and
//! the annotated image in the database (`posture_image`, same transaction)
//! and/or as the seeds' local files (`outputs`). A frame is acknowledged
//! only once those are durable; bad input and outputs that can never be
//! written are counted, logged and dead-lettered, never fatal; errors that
//! clear are retried per camera.
//!
//! ```text
//!  MQTT (mqtt::run_analyzer, retry::Parking) ─┐
//!  files (files::analyze_files) ──────────────┴─► pipeline::Analyzer::process
//!     [blocking] payload ─ model ─ assess ─ annotate ─ encode ─ outputs::FileOutputs ─► analyzed_images/…, <camera>_results.csv (csvlog)
//!     [async]    store::Store ─► db::Database: posture_log + posture_image (schema: migrations) | spool (replayed)
//!     bad input / unwritable / refused row ─► deadletter (bounded)        metrics ─► /metrics
//!  retention: prune old images (rows kept)     export: database ─► seeds' files (results export, down)
//!  publish::publish_files: images ─► base64 JPEG ─► MQTT (QoS 1)      broker: embedded rumqttd for `local`
//! ```
//!
//! The MQTT side subscribes through [`subscriber`] (MQTT 5 by default, so
//! the broker discards messages over the payload limit; 3.1.1 on request)
//! and measures every payload before copying it.

pub mod annotate;
pub mod broker;
pub mod csvlog;
pub mod db;
pub mod deadletter;
pub mod export;
pub mod files;
mod fsutil;
pub mod metrics;
pub mod model;
pub mod mqtt;
pub mod outputs;
pub mod payload;
pub mod pipeline;
pub mod publish;
pub mod record;
pub mod retention;
pub mod retry;
pub mod schema;
pub mod spool;
pub mod store;
pub mod subscriber;

pub use metrics::Metrics;
pub use model::{ModelError, PoseModel, load_blazepose};
pub use mqtt::{MqttConfig, MqttTls, RunStats, camera_from_topic, run_analyzer};
pub use payload::{Limits, RejectReason};
pub use pipeline::{
    AnalyzeError, Analyzer, AnalyzerConfig, Frame, Outcome, StageTimings, node_name,
};
pub use posture_core::posture::Thresholds;
pub use record::PostureRow;
pub use store::{Database, DbTarget, LegacyDbVars, Recorded, Store};
pub use subscriber::MqttProtocol;
/// Re-exported so the CLI names the same `image` and `posture-pose` versions.
pub use {image, posture_pose};

/// An error and its causes on one line (`a: b: c`), for log fields (the
/// workspace's one copy, re-exported for the analyzer's callers).
pub use posture_core::error_chain;

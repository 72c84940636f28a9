//! `posture-farm publish`: send images to a topic the way a camera does
//! (base64 JPEG, QoS 1, waiting for the broker's acknowledgements).

use std::path::PathBuf;
use std::time::Duration;

use posture_analyzer::publish::{Encoding, PublishPlan, publish_files};

use crate::args::MqttArgs;

/// Flags of `posture-farm publish`.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// Topic to publish to, e.g. images/pi1 (the analyzer takes the camera id from its last segment).
    #[arg(long, env = "MQTT_TOPIC", default_value = "images/pi1")]
    pub topic: String,
    /// Image files or directories (.jpg/.jpeg/.png).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Pause between frames, in seconds.
    #[arg(long, default_value_t = 0.0)]
    pub interval: f64,
    /// Send the whole list this many times (each send is a new capture).
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
    /// Send file bytes unchanged instead of base64 JPEG (PNG stays PNG).
    #[arg(long)]
    pub raw: bool,
    /// Give up when the broker has not acknowledged every frame after this many seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    #[command(flatten)]
    pub mqtt: MqttArgs,
}

/// Runs the subcommand.
pub async fn run(args: PublishArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.interval.is_finite() && args.interval >= 0.0,
        "--interval must be a non-negative number of seconds"
    );
    let cfg = args
        .mqtt
        .config(format!("posture-camera-{}", std::process::id()));
    let plan = PublishPlan {
        topic: args.topic.clone(),
        encoding: if args.raw {
            Encoding::Raw
        } else {
            Encoding::Base64Jpeg
        },
        interval: Duration::from_secs_f64(args.interval),
        repeat: args.repeat,
        timeout: Duration::from_secs(args.timeout),
    };
    let sent = publish_files(&cfg, &plan, &args.files).await?;
    println!(
        "published {sent} frame(s) to {} on {}:{} (all acknowledged)",
        args.topic, cfg.host, cfg.port
    );
    Ok(())
}

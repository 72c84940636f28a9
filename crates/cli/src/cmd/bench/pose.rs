//! `posture-farm bench pose`: per-image latency (p50/p95, split into the
//! detector and landmark stages) and images/s of the in-process BlazePose
//! estimator on a fixed number of threads (one by default: the farm runs
//! one analyzer per core), on the CPU or a GPU, static or tracking. Also
//! the start-up cost (loading, first image: provider start-up on a GPU) and,
//! unless it is the reference itself, how the answers compare with static
//! images on the CPU (labels, angle differences). Compare with MediaPipe
//! Python on the same photos with `scripts/models/record_reference.py --bench`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use posture_core::posture::{Pose, Thresholds};
use posture_pose::agreement::{Agreement, MAX_ANGLE_DIFF_DEG};
use posture_pose::image::RgbImage;
use posture_pose::{Device, Mode, PoseConfig, PoseEstimator, PoseTimings};

/// Flags of this benchmark.
#[derive(Debug, clap::Args)]
pub struct BenchPoseArgs {
    /// Directory of .jpg/.jpeg/.png photos [default: <models-dir>/samples].
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Timed passes over all photos (after one untimed warm-up pass).
    #[arg(long, default_value_t = 20)]
    pub iterations: usize,
    /// ONNX Runtime intra-op threads.
    #[arg(long, env = "POSE_THREADS", default_value_t = 1)]
    pub threads: usize,
    /// Where the model runs: auto, cpu, cuda or tensorrt (as `analyze --device`).
    #[arg(long, env = "POSE_DEVICE", default_value = "auto")]
    pub device: Device,
    /// static, or tracking: each photo is a still camera of its own, so the
    /// timed passes show the frames after the first (detector skipped).
    #[arg(long, env = "POSE_MODE", default_value = "static")]
    pub mode: Mode,
    /// Directory with the models (from `posture-farm setup`). Default:
    /// ./models if it holds model files, else
    /// $XDG_DATA_HOME/posture-farm/models, else ~/.local/share/posture-farm/models.
    #[arg(long, env = "POSTURE_MODELS_DIR", default_value_os_t = posture_pose::models::default_dir())]
    pub models_dir: PathBuf,
}

/// Runs the benchmark.
pub async fn run(args: BenchPoseArgs) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || bench(&args))
        .await
        .context("benchmark panicked")?
}

/// Latency quantile `q` (0..=1) of sorted samples, nearest rank.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The photos of `dir`, decoded, sorted by name.
fn load_images(dir: &std::path::Path) -> anyhow::Result<Vec<(String, RgbImage)>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        bail!("no .jpg/.jpeg/.png images in {}", dir.display());
    }
    paths
        .iter()
        .map(|p| {
            Ok((
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                posture_pose::image::open(p)
                    .with_context(|| format!("decode {}", p.display()))?
                    .to_rgb8(),
            ))
        })
        .collect()
}

/// Timings of one photo over the timed passes, and its last answer.
#[derive(Default)]
struct PerImage {
    total: Vec<f64>,
    detect: Vec<f64>,
    landmarks: Vec<f64>,
    detector_runs: usize,
    last: Option<Pose>,
}

impl PerImage {
    fn push(&mut self, total: Duration, t: &PoseTimings, pose: Option<Pose>) {
        self.total.push(ms(total));
        if t.detector_ran {
            self.detect.push(ms(t.detect));
            self.detector_runs += 1;
        }
        if t.landmark_runs > 0 {
            self.landmarks.push(ms(t.landmarks));
        }
        self.last = pose;
    }
}

fn bench(args: &BenchPoseArgs) -> anyhow::Result<()> {
    let dir = args
        .images
        .clone()
        .unwrap_or_else(|| args.models_dir.join("samples"));
    let images = load_images(&dir)?;
    let cfg = PoseConfig {
        models_dir: args.models_dir.clone(),
        threads: args.threads,
        device: args.device,
        mode: args.mode,
        ..PoseConfig::default()
    };
    let started = Instant::now();
    let mut est = PoseEstimator::load(&cfg)
        .context("load the pose models (run `posture-farm setup` first)")?;
    let loaded = started.elapsed();
    // In tracking mode each photo is its own still camera.
    let stream = |name: &str| (args.mode == Mode::Tracking).then(|| name.to_string());
    let first = Instant::now();
    est.estimate_timed(stream(&images[0].0).as_deref(), &images[0].1)?;
    let first = first.elapsed();
    for (name, img) in &images {
        est.estimate_timed(stream(name).as_deref(), img)?;
    }
    let mut per_image: Vec<PerImage> = images.iter().map(|_| PerImage::default()).collect();
    let wall = Instant::now();
    for _ in 0..args.iterations {
        for (i, (name, img)) in images.iter().enumerate() {
            let t = Instant::now();
            let (pose, timings) = est.estimate_timed(stream(name).as_deref(), img)?;
            per_image[i].push(t.elapsed(), &timings, pose);
        }
    }
    let wall_s = wall.elapsed().as_secs_f64();
    println!(
        "pose estimator: BlazePose full (ONNX Runtime), device {} (requested {}), {} mode, {} thread(s), {} iterations",
        est.device(),
        args.device,
        args.mode,
        args.threads,
        args.iterations
    );
    println!(
        "start-up: load {:.1} ms, first image {:.1} ms (execution provider start-up included)",
        ms(loaded),
        ms(first)
    );
    if cfg!(debug_assertions) {
        println!(
            "note: debug build; image resampling is unoptimized there, build with --release for representative numbers"
        );
    }
    print_table(&images, &per_image, wall_s);
    if est.device() != Device::Cpu || args.mode != Mode::Static {
        compare_with_static_cpu(&cfg, &images, &per_image)?;
    }
    Ok(())
}

fn print_table(images: &[(String, RgbImage)], per_image: &[PerImage], wall_s: f64) {
    let p50 = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            "–".to_string()
        } else {
            format!("{:.2}", quantile(&v, 0.5))
        }
    };
    println!(
        "{:<24} {:>9} {:>6} {:>8} {:>8} {:>10} {:>10}",
        "image", "size", "person", "p50 ms", "p95 ms", "detect p50", "landm. p50"
    );
    for ((name, img), r) in images.iter().zip(per_image) {
        let mut l = r.total.clone();
        l.sort_by(f64::total_cmp);
        println!(
            "{:<24} {:>9} {:>6} {:>8.2} {:>8.2} {:>10} {:>10}",
            name,
            format!("{}x{}", img.width(), img.height()),
            if r.last.is_some() { "yes" } else { "no" },
            quantile(&l, 0.5),
            quantile(&l, 0.95),
            p50(&r.detect),
            p50(&r.landmarks),
        );
    }
    let mut all: Vec<f64> = per_image.iter().flat_map(|r| r.total.clone()).collect();
    all.sort_by(f64::total_cmp);
    let n = all.len();
    let detector_runs: usize = per_image.iter().map(|r| r.detector_runs).sum();
    println!(
        "{:<24} {:>9} {:>6} {:>8.2} {:>8.2}   mean {:.2} ms, {:.1} images/s, detector ran on {detector_runs} of {n} frames",
        "all",
        format!("n={n}"),
        "",
        quantile(&all, 0.5),
        quantile(&all, 0.95),
        all.iter().sum::<f64>() / n.max(1) as f64,
        n as f64 / wall_s.max(f64::EPSILON)
    );
}

/// Runs every photo once as a static image on the CPU and compares the
/// labels and angles with the benchmarked run's last answers.
fn compare_with_static_cpu(
    cfg: &PoseConfig,
    images: &[(String, RgbImage)],
    per_image: &[PerImage],
) -> anyhow::Result<()> {
    let mut reference = PoseEstimator::load(&PoseConfig {
        device: Device::Cpu,
        mode: Mode::Static,
        ..cfg.clone()
    })
    .context("load the CPU reference")?;
    let mut agreement = Agreement::default();
    for ((name, img), r) in images.iter().zip(per_image) {
        let want = reference.estimate(img)?;
        agreement.add(name, want.as_ref(), r.last.as_ref(), &Thresholds::default());
    }
    println!(
        "vs static images on the CPU: {} — {}",
        agreement.summary(),
        if agreement.within(MAX_ANGLE_DIFF_DEG) {
            format!("same results (angles within {MAX_ANGLE_DIFF_DEG}°)")
        } else {
            format!("DIFFERENT results (angles beyond {MAX_ANGLE_DIFF_DEG}° or labels)")
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&s, 0.5), 50.0);
        assert_eq!(quantile(&s, 0.95), 95.0);
        assert_eq!(quantile(&s, 1.0), 100.0);
        assert_eq!(quantile(&[7.0], 0.5), 7.0);
        assert!(quantile(&[], 0.5).is_nan());
    }
}

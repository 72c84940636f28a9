//! `posture-farm bench pose`: per-image latency (p50/p95) and images/s of
//! the in-process BlazePose estimator on a fixed number of threads (one by
//! default: the farm runs one analyzer per core). Compare with MediaPipe
//! Python on the same photos with `scripts/models/record_reference.py --bench`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use posture_pose::{PoseConfig, PoseEstimator};

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

fn bench(args: &BenchPoseArgs) -> anyhow::Result<()> {
    let dir = args
        .images
        .clone()
        .unwrap_or_else(|| args.models_dir.join("samples"));
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
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
    let images = paths
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
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cfg = PoseConfig {
        models_dir: args.models_dir.clone(),
        threads: args.threads,
        ..PoseConfig::default()
    };
    let mut est = PoseEstimator::load(&cfg)
        .context("load the pose models (run `posture-farm setup` first)")?;

    let mut found = Vec::with_capacity(images.len());
    for (_, img) in &images {
        found.push(est.estimate(img)?.is_some());
    }
    let mut per_image: Vec<Vec<f64>> = vec![Vec::with_capacity(args.iterations); images.len()];
    let wall = Instant::now();
    for _ in 0..args.iterations {
        for (i, (_, img)) in images.iter().enumerate() {
            let t = Instant::now();
            est.estimate(img)?;
            per_image[i].push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let wall_s = wall.elapsed().as_secs_f64();

    println!(
        "pose estimator: BlazePose full (ONNX Runtime), {} thread(s), {} iterations",
        args.threads, args.iterations
    );
    if cfg!(debug_assertions) {
        println!(
            "note: debug build; image resampling is unoptimized there, build with --release for representative numbers"
        );
    }
    println!(
        "{:<28} {:>10} {:>7} {:>9} {:>9}",
        "image", "size", "person", "p50 ms", "p95 ms"
    );
    for (i, (name, img)) in images.iter().enumerate() {
        let mut l = per_image[i].clone();
        l.sort_by(f64::total_cmp);
        println!(
            "{:<28} {:>10} {:>7} {:>9.2} {:>9.2}",
            name,
            format!("{}x{}", img.width(), img.height()),
            if found[i] { "yes" } else { "no" },
            quantile(&l, 0.5),
            quantile(&l, 0.95)
        );
    }
    let mut all: Vec<f64> = per_image.concat();
    all.sort_by(f64::total_cmp);
    let n = all.len();
    println!(
        "{:<28} {:>10} {:>7} {:>9.2} {:>9.2}   mean {:.2} ms, {:.1} images/s",
        "all",
        format!("n={n}"),
        "",
        quantile(&all, 0.5),
        quantile(&all, 0.95),
        all.iter().sum::<f64>() / n.max(1) as f64,
        n as f64 / wall_s.max(f64::EPSILON)
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

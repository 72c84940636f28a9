//! `posture-farm bench pipeline`: where a frame's time goes. Every photo is
//! sent through the real analyzer (`Analyzer::process_group`, the path MQTT
//! frames and `analyze --files` take) as the base64 JPEG a camera
//! publishes, `--group` frames at a time (one group commit), and each stage
//! is timed: decode, detect, landmarks, angles, annotate, encode, persist
//! (a group's shared fsyncs and commit split evenly over its frames). Prints
//! p50/p99/mean per stage and frames/s, for one worker and for N workers
//! (one analyzer each: own model, one inference thread), on SQLite or
//! PostgreSQL. Pin it to one core with `taskset -c 0` to compare with
//! `bench pose`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use posture_analyzer::publish::{image_files, jpeg_bytes, stamp_jpeg};
use posture_analyzer::store::{DbTarget, LegacyDbVars};
use posture_analyzer::{
    Analyzer, AnalyzerConfig, Database, Frame, Metrics, Outcome, StageTimings, Store,
};

/// Flags of this benchmark.
#[derive(Debug, clap::Args)]
pub struct BenchPipelineArgs {
    /// Directory of .jpg/.jpeg/.png photos [default: <models-dir>/samples].
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Timed passes over all photos per worker (after one untimed warm-up pass).
    #[arg(long, default_value_t = 20)]
    pub iterations: usize,
    /// Worker counts to measure, comma-separated (each worker is one analyzer
    /// with its own model on one inference thread, as in the farm).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub workers: Vec<usize>,
    /// Directory with the models (from `posture-farm setup`). Default:
    /// ./models if it holds model files, else
    /// $XDG_DATA_HOME/posture-farm/models, else ~/.local/share/posture-farm/models.
    #[arg(long, env = "POSTURE_MODELS_DIR", default_value_os_t = posture_pose::models::default_dir())]
    pub models_dir: PathBuf,
    /// Where the outputs go [default: a fresh directory under the system
    /// temporary directory, removed afterwards].
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Persist to this PostgreSQL database (postgres://…) instead of a SQLite
    /// file in the output directory.
    #[arg(
        long = "database-url",
        env = "BENCH_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Where annotated images go besides the row: db, files or db,files.
    #[arg(long, default_value = "db")]
    pub outputs: posture_analyzer::outputs::Outputs,
    /// Frames committed together (1 to 16): 16 is what `analyze --files`
    /// does, up to 4 what an MQTT 5 analyzer with a backlog does (the
    /// broker sends 4 unacknowledged frames ahead), 1 a camera slower than
    /// its analyzer (every frame committed alone).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub group: u16,
}

/// Runs the benchmark.
pub async fn run(args: BenchPipelineArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.iterations > 0, "--iterations must be at least 1");
    anyhow::ensure!(
        !args.workers.is_empty() && args.workers.iter().all(|&w| w > 0),
        "--workers takes positive counts"
    );
    let dir = args
        .images
        .clone()
        .unwrap_or_else(|| args.models_dir.join("samples"));
    let files = image_files(std::slice::from_ref(&dir))
        .with_context(|| format!("no photos in {}", dir.display()))?;
    if files.is_empty() {
        bail!("no .jpg/.jpeg/.png images in {}", dir.display());
    }
    let jpegs = files
        .iter()
        .map(|f| jpeg_bytes(f).with_context(|| format!("reading {}", f.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let names: Vec<String> = files
        .iter()
        .map(|f| {
            f.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let (out, temporary) = match &args.out_dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("posture-bench-pipeline-{}", std::process::id())),
            true,
        ),
    };
    let result = bench(&args, &out, &names, &jpegs).await;
    if temporary {
        let _ = std::fs::remove_dir_all(&out);
    }
    result
}

async fn bench(
    args: &BenchPipelineArgs,
    out: &Path,
    names: &[String],
    jpegs: &[Vec<u8>],
) -> anyhow::Result<()> {
    let target = match &args.database_url {
        Some(url) => DbTarget::resolve(Some(url), &LegacyDbVars::default(), Path::new(""))
            .context("--database-url")?,
        None => DbTarget::Sqlite(out.join("posture.db")),
    };
    println!(
        "pipeline: {} photo(s) × {} iteration(s) per worker, as base64 JPEG payloads, {} per group commit; outputs {}; database {}; work folder {}",
        jpegs.len(),
        args.iterations,
        args.group,
        args.outputs,
        target.describe(),
        out.display()
    );
    if cfg!(debug_assertions) {
        println!("note: debug build; build with --release for representative numbers");
    }
    for (run, &workers) in args.workers.iter().enumerate() {
        let run_dir = out.join(format!("run{run}-w{workers}"));
        let mut analyzers = Vec::with_capacity(workers);
        for w in 0..workers {
            analyzers.push(analyzer(args, &run_dir.join(format!("worker{w}")), &target).await?);
        }
        // Warm-up pass (model caches, first allocation), and the verdicts.
        let mut verdicts = Vec::new();
        for (i, jpeg) in jpegs.iter().enumerate() {
            let f = frame(&format!("warmup-{run}"), jpeg, i as u64);
            let o = analyzers[0].process(&f).await?;
            verdicts.push(verdict(&names[i], &o));
        }
        if run == 0 {
            for v in &verdicts {
                println!("  {v}");
            }
        }
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(workers);
        let group = usize::from(args.group);
        for (w, mut a) in analyzers.into_iter().enumerate() {
            let frames: Vec<Frame> = (0..args.iterations)
                .flat_map(|it| jpegs.iter().enumerate().map(move |(i, j)| (it, i, j)))
                .map(|(it, i, j)| frame(&format!("bench-w{w}"), j, (it * jpegs.len() + i) as u64))
                .collect();
            tasks.push(tokio::spawn(async move {
                let mut timings = Vec::with_capacity(frames.len());
                for chunk in frames.chunks(group) {
                    for result in a.process_group(chunk).await {
                        result?;
                    }
                    timings.extend_from_slice(a.group_timings());
                }
                a.store().database().close().await;
                Ok::<_, posture_analyzer::AnalyzeError>(timings)
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.context("a worker panicked")??);
        }
        let wall = started.elapsed();
        print_table(workers, &all, wall);
    }
    Ok(())
}

async fn analyzer(
    args: &BenchPipelineArgs,
    dir: &Path,
    target: &DbTarget,
) -> anyhow::Result<Analyzer> {
    // Static mode: every frame runs the detector (the bench sends different
    // photos in turn; tracking would measure the fallback).
    let model = crate::args::load_model(&posture_pose::PoseConfig {
        models_dir: args.models_dir.clone(),
        threads: 1,
        mode: posture_pose::Mode::Static,
        ..posture_pose::PoseConfig::default()
    })?;
    let db = Database::open(target)
        .await
        .with_context(|| format!("opening {}", target.describe()))?;
    let metrics = Metrics::default();
    let store = Store::new(db, &dir.join("spool.jsonl"), &metrics).context("opening the spool")?;
    let mut cfg = AnalyzerConfig::new(dir.to_path_buf(), "bench".into());
    cfg.outputs = args.outputs;
    Ok(Analyzer::new(cfg, model, store, metrics))
}

/// A frame as a camera sends it: a JPEG with a unique comment (so every
/// frame gets its own row), base64-encoded.
fn frame(camera: &str, jpeg: &[u8], seq: u64) -> Frame {
    let stamped = stamp_jpeg(jpeg, &format!("posture-farm bench {camera} #{seq}"));
    Frame {
        camera: camera.to_string(),
        source: "bench".into(),
        name_hint: None,
        payload: base64::engine::general_purpose::STANDARD
            .encode(stamped)
            .into_bytes(),
        received: jiff::Timestamp::now(),
    }
}

fn verdict(name: &str, o: &Outcome) -> String {
    match o {
        Outcome::Analyzed { row, .. } => format!(
            "{name:<24} {:<20} neck {:>6} torso {:>6}",
            row.posture_status,
            row.neck_angle
                .map(|a| format!("{a:.2}"))
                .unwrap_or_else(|| "-".into()),
            row.body_angle
                .map(|a| format!("{a:.2}"))
                .unwrap_or_else(|| "-".into()),
        ),
        Outcome::Rejected { reason, .. } => format!("{name:<24} rejected: {reason}"),
    }
}

/// p50, p99 and mean of `samples` in milliseconds (nearest rank).
fn summary(samples: &mut [f64]) -> (f64, f64, f64) {
    if samples.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    samples.sort_by(f64::total_cmp);
    let rank = |q: f64| {
        let r = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[r - 1]
    };
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    (rank(0.5), rank(0.99), mean)
}

fn print_table(workers: usize, all: &[StageTimings], wall: Duration) {
    type Stage = (&'static str, fn(&StageTimings) -> Duration);
    let stages: [Stage; 10] = [
        ("decode", |t| t.decode),
        ("detect", |t| t.detect),
        ("landmarks", |t| t.landmarks),
        ("angles", |t| t.angles),
        ("annotate", |t| t.annotate),
        ("encode", |t| t.encode),
        ("persist", |t| t.persist),
        ("pose (detect+landmarks)", StageTimings::pose),
        ("frame (all stages)", StageTimings::total),
        ("frame − pose", |t| t.total() - t.pose()),
    ];
    println!();
    println!(
        "{workers} worker(s), {} frames in {:.2} s: {:.1} frames/s",
        all.len(),
        wall.as_secs_f64(),
        all.len() as f64 / wall.as_secs_f64().max(f64::EPSILON)
    );
    println!(
        "{:<26} {:>9} {:>9} {:>9}",
        "stage", "p50 ms", "p99 ms", "mean ms"
    );
    let mut means = Vec::new();
    for (name, get) in stages {
        let mut ms: Vec<f64> = all.iter().map(|t| get(t).as_secs_f64() * 1e3).collect();
        let (p50, p99, mean) = summary(&mut ms);
        means.push(mean);
        println!("{name:<26} {p50:>9.2} {p99:>9.2} {mean:>9.2}");
    }
    if let (Some(pose), Some(frame)) = (means.get(7), means.get(8))
        && *pose > 0.0
    {
        println!("frame / pose (means): {:.2}×", frame / pose);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_summary() {
        let mut s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(summary(&mut s), (50.0, 99.0, 50.5));
        let mut one = [7.0];
        assert_eq!(summary(&mut one), (7.0, 7.0, 7.0));
        assert!(summary(&mut []).0.is_nan());
    }
}

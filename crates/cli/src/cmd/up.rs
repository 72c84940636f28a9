//! `posture-farm up`: deploy everything with one command, idempotently.
//!
//! Steps: (optionally) build and push the multi-arch image; render the
//! manifests embedded from `deploy/` for the chosen mode, namespace, image and
//! cameras (bad input stops here, before the cluster is touched); taint the
//! control-plane node and label GPU nodes; server-side apply in stage order
//! (namespace, RBAC, DB Secret, scheduler, scaler, workloads), printing
//! created/configured/unchanged for each object; wait for the Deployments and
//! the analyzer pods with progress bars; print where everything runs. A
//! second `up` with the same flags sends the same applies and reports every
//! object unchanged.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use posture_k8s::ops::apply::{ApplyAction, ApplyOutcome};
use posture_k8s::ops::manifests::{self, DbCredentials, Mode, RenderOptions};
use posture_k8s::ops::status;
use posture_k8s::ops::up::{DeployEvent, NodeOptions, PreparedNodes, deploy, prepare_nodes};
use posture_k8s::ops::wait::WaitConfig;
use rand::SeedableRng as _;

use crate::args::{GpuSourceArgs, seed_or_clock};

/// Placement mode on the command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// Jobs bound by the round-robin scheduler (`schedulerName: rr-scheduler`).
    #[default]
    RoundRobin,
    /// KEDA ScaledJobs pinned to GPU nodes by the even-spread planner.
    Keda,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::RoundRobin => Mode::RoundRobin,
            ModeArg::Keda => Mode::Keda,
        }
    }
}

/// Flags of `posture-farm up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Placement mode: round-robin Jobs, or KEDA ScaledJobs.
    #[arg(long, env = "POSTURE_MODE", value_enum, default_value_t)]
    pub mode: ModeArg,
    /// Namespace of the analyzers, created when it is not `default`.
    /// Default: as in deploy/ — `default` in round-robin mode, `posture` in KEDA mode.
    #[arg(long, env = "POSTURE_NAMESPACE")]
    pub namespace: Option<String>,
    /// Number of cameras (one analyzer each). Default: the ten documented in
    /// deploy/, or one per --topics entry.
    #[arg(long, env = "POSTURE_CAMERAS")]
    pub cameras: Option<usize>,
    /// MQTT topic per camera, comma-separated (default: the documented images/pi1, images/pi1-1, …).
    #[arg(long, env = "POSTURE_TOPICS", value_delimiter = ',')]
    pub topics: Vec<String>,
    /// Container image for every component (default: the one in deploy/, or
    /// REGISTRY/posture-farm:TAG with --build).
    #[arg(long, env = "POSTURE_IMAGE")]
    pub image: Option<String>,
    /// MQTT broker host the analyzers connect to (ConfigMap posture-analyzer).
    #[arg(long, env = "POSTURE_MQTT_BROKER")]
    pub mqtt_broker: Option<String>,
    /// Control-plane node to taint (default: nodes labelled node-role.kubernetes.io/control-plane or /master).
    #[arg(long, env = "POSTURE_MASTER")]
    pub master: Option<String>,
    /// Do not taint the control-plane node.
    #[arg(long, env = "POSTURE_NO_TAINT")]
    pub no_taint: bool,
    /// Build and push the multi-arch image with `docker buildx` first (needs --registry).
    #[arg(long, requires = "registry")]
    pub build: bool,
    /// Registry/repository prefix to push to, e.g. ghcr.io/me (image REGISTRY/posture-farm:TAG).
    #[arg(long, env = "POSTURE_REGISTRY")]
    pub registry: Option<String>,
    /// Image tag for --build.
    #[arg(long, env = "POSTURE_TAG", default_value = "latest")]
    pub tag: String,
    /// Build context holding the Dockerfile, for --build.
    #[arg(long, default_value = ".")]
    pub context: PathBuf,
    /// How long to wait for each readiness step (e.g. 300s, 5m).
    #[arg(long, env = "POSTURE_WAIT_TIMEOUT", default_value = "300s", value_parser = posture_gpu::config::parse_duration)]
    pub wait_timeout: Duration,
    /// Apply and return without waiting for readiness.
    #[arg(long)]
    pub no_wait: bool,
    /// Print the rendered manifests (YAML, Secret values redacted) and touch nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Seed for the even-spread tie-break in KEDA mode (default: from the clock).
    #[arg(long, env = "POSTURE_SEED")]
    pub seed: Option<u64>,
    /// GPU usage source, for KEDA placement (--gpu-nodes also lists the nodes to label gpu-node).
    #[command(flatten)]
    pub gpu: GpuSourceArgs,
}

/// Redraws one progress line per step on a terminal; prints a plain line on
/// each change otherwise (logs, CI).
pub(crate) struct Progress {
    tty: bool,
    last: Option<(String, usize, usize)>,
}

impl Progress {
    pub(crate) fn new() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            last: None,
        }
    }

    pub(crate) fn update(&mut self, what: &str, done: usize, total: usize) {
        let now = (what.to_string(), done, total);
        if self.last.as_ref() == Some(&now) {
            return;
        }
        if let Some((prev, _, _)) = &self.last
            && prev != what
        {
            self.finish();
        }
        if self.tty {
            const WIDTH: usize = 24;
            let filled = (done * WIDTH)
                .checked_div(total)
                .unwrap_or(WIDTH)
                .min(WIDTH);
            eprint!(
                "\r\x1b[2K{what} [{}{}] {done}/{total}",
                "#".repeat(filled),
                "-".repeat(WIDTH - filled)
            );
        } else {
            eprintln!("{what}: {done}/{total}");
        }
        self.last = Some(now);
    }

    pub(crate) fn finish(&mut self) {
        if self.tty && self.last.is_some() {
            eprintln!();
        }
        self.last = None;
    }
}

/// Runs `docker buildx build --push`. Building a multi-arch container image
/// has no Kubernetes API, and reimplementing BuildKit is out of the question:
/// this is the one place posture-farm calls an external tool.
fn build_and_push(context: &std::path::Path, image: &str) -> anyhow::Result<()> {
    use std::process::Command;
    if !context.join("Dockerfile").is_file() {
        bail!(
            "no Dockerfile in {} (run from the repository root or pass --context)",
            context.display()
        );
    }
    let version = Command::new("docker").args(["buildx", "version"]).output();
    match version {
        Ok(out) if out.status.success() => {}
        _ => bail!(
            "`docker buildx` is not available: install Docker with the buildx plugin \
             (Debian/Ubuntu: `apt-get install docker.io docker-buildx`, or Docker Desktop) \
             and, for arm64 images on an amd64 host, a builder: `docker buildx create --use`"
        ),
    }
    eprintln!("building and pushing {image} for linux/amd64,linux/arm64 …");
    let status = Command::new("docker")
        .args([
            "buildx",
            "build",
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            image,
            "--push",
        ])
        .arg(context)
        .status()
        .context("running docker buildx build")?;
    if !status.success() {
        bail!("docker buildx build failed ({status}); nothing was deployed");
    }
    Ok(())
}

/// Runs the subcommand.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let image = image_name(&args);
    let mut rendered = render_manifests(&args, image.clone())?;
    let scaled_jobs = rendered.plan.workload_names("ScaledJob");
    if args.mode == ModeArg::Keda && scaled_jobs.is_empty() {
        bail!("KEDA mode: deploy/keda/ holds no ScaledJob in this build; use --mode round-robin");
    }
    for w in &rendered.warnings {
        tracing::warn!("{w}");
    }
    if args.dry_run {
        return print_manifests(&rendered);
    }
    if args.build {
        let image = image.clone().context("--build needs --registry")?;
        let context = args.context.clone();
        tokio::task::spawn_blocking(move || build_and_push(&context, &image)).await??;
    }

    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (KUBECONFIG or in-cluster config)")?;
    let prepared = prepare(&client, &args).await?;
    if args.mode == ModeArg::Keda {
        let placement = keda_placement(
            &client,
            &args,
            &rendered.namespace,
            &scaled_jobs,
            &prepared.gpu_nodes,
        )
        .await?;
        manifests::assign_nodes(&mut rendered.plan, &placement);
    }

    let mut progress = Progress::new();
    let wait = (!args.no_wait).then(|| WaitConfig {
        timeout: args.wait_timeout,
        ..WaitConfig::default()
    });
    let outcomes = deploy(&client, &rendered.plan, &rendered.namespace, wait, |e| match e {
        DeployEvent::Applied { outcome, n, total } => {
            progress.update("applying", n, total);
            tracing::debug!(object = %outcome.object, action = outcome.action.as_str(), "applied");
        }
        DeployEvent::Waiting(p) => progress.update(&p.what, p.done, p.total),
    })
    .await?;
    progress.finish();
    print_outcomes(&outcomes);
    if !scaled_jobs.is_empty() {
        eprintln!(
            "ScaledJobs applied: KEDA starts their Jobs when the external scaler reports activity"
        );
    }
    let inputs = status::gather(&client).await?;
    print!(
        "\n{}",
        status::render(&status::summarise(&inputs, None), false)
    );
    Ok(())
}

/// `--image`, else `REGISTRY/posture-farm:TAG` with `--build`, else the
/// image documented in deploy/ (`None`).
fn image_name(args: &UpArgs) -> Option<String> {
    match (&args.image, &args.registry, args.build) {
        (Some(image), _, _) => Some(image.clone()),
        (None, Some(registry), true) => Some(format!(
            "{}/posture-farm:{}",
            registry.trim_end_matches('/'),
            args.tag
        )),
        _ => None,
    }
}

/// The deploy/ manifests rendered for these flags (bad input stops here,
/// before the cluster is touched).
fn render_manifests(args: &UpArgs, image: Option<String>) -> anyhow::Result<manifests::Rendered> {
    let db = DbCredentials::from_env(|k| std::env::var(k).ok())?;
    let opts = RenderOptions {
        namespace: args.namespace.clone(),
        image,
        mode: args.mode.into(),
        cameras: args.cameras,
        topics: args.topics.clone(),
        db,
        mqtt_broker: args.mqtt_broker.clone(),
    };
    manifests::render(&manifests::embedded(), &opts).context("rendering deploy/ manifests")
}

/// `--dry-run`: the rendered manifests as YAML, Secret values redacted.
fn print_manifests(rendered: &manifests::Rendered) -> anyhow::Result<()> {
    for object in &rendered.plan.objects {
        let mut value = object.object.clone();
        if let Some(data) = value
            .get_mut("data")
            .filter(|_| object.kind_name() == "Secret")
            && let Some(map) = data.as_object_mut()
        {
            map.values_mut()
                .for_each(|v| *v = serde_json::Value::String("<redacted>".into()));
        }
        println!(
            "---\n# stage: {}\n{}",
            object.stage.as_str(),
            serde_saphyr::to_string(&value)?
        );
    }
    Ok(())
}

/// Taints the control plane and labels GPU nodes, saying what changed.
async fn prepare(client: &kube::Client, args: &UpArgs) -> anyhow::Result<PreparedNodes> {
    let prepared = prepare_nodes(
        client,
        &NodeOptions {
            master: args.master.clone(),
            skip_taint: args.no_taint,
            gpu_nodes: args.gpu.gpu_nodes.clone(),
        },
    )
    .await?;
    if !args.no_taint && prepared.masters.is_empty() {
        eprintln!("no control-plane node found (no role label); pass --master NODE to taint one");
    }
    for c in &prepared.changes {
        eprintln!(
            "node {}: {} ({})",
            c.node,
            c.action,
            if c.changed { "changed" } else { "unchanged" }
        );
    }
    Ok(prepared)
}

/// One line per applied object, then the totals.
fn print_outcomes(outcomes: &[ApplyOutcome]) {
    for o in outcomes {
        println!(
            "{:<10} {:<11} {}",
            o.stage.as_str(),
            o.action.as_str(),
            o.object
        );
    }
    let count = |a: ApplyAction| outcomes.iter().filter(|o| o.action == a).count();
    println!(
        "{} created, {} configured, {} unchanged",
        count(ApplyAction::Created),
        count(ApplyAction::Configured),
        count(ApplyAction::Unchanged)
    );
}

/// Node per ScaledJob. ScaledJobs already pinned by an earlier `up` (or
/// moved since by the balancer) keep their node, so a re-run changes nothing;
/// the others come from the even-spread planner over the GPU nodes with a
/// fresh Prometheus reading — without any reading, an even spread over the GPU
/// nodes as if idle (said loudly).
async fn keda_placement(
    client: &kube::Client,
    args: &UpArgs,
    namespace: &str,
    scaled_jobs: &[String],
    gpu_nodes: &[String],
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let mut placement = status::pinned_scaled_jobs(client, namespace).await?;
    placement.retain(|name, _| scaled_jobs.contains(name));
    let scaled_jobs: Vec<String> = scaled_jobs
        .iter()
        .filter(|n| !placement.contains_key(*n))
        .cloned()
        .collect();
    if scaled_jobs.is_empty() {
        eprintln!("every ScaledJob keeps its current node");
        return Ok(placement);
    }
    let seed = seed_or_clock(args.seed);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let snapshot = args.gpu.snapshot_once().await;
    let allowed = |n: &str| gpu_nodes.iter().any(|g| g == n);
    let plan = match snapshot.as_ref().map(|s| {
        posture_core::spread::plan_from_snapshot(scaled_jobs.len(), s, Some(&allowed), &mut rng)
    }) {
        Some(Ok(plan)) => plan,
        other => {
            if let Some(Err(e)) = other {
                tracing::warn!(error = %e, "no usable GPU readings");
            }
            eprintln!(
                "no fresh GPU usage from Prometheus: spreading evenly over {} GPU node(s) as if idle",
                gpu_nodes.len()
            );
            let idle: Vec<(String, f64)> = gpu_nodes.iter().map(|n| (n.clone(), 0.0)).collect();
            posture_core::spread::plan_even_spread(scaled_jobs.len(), &idle, &mut rng)?
        }
    };
    eprintln!(
        "even spread of {} new ScaledJob(s) (seed {seed}): {plan}",
        scaled_jobs.len()
    );
    placement.extend(scaled_jobs.into_iter().zip(plan.assignments));
    Ok(placement)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        up: UpArgs,
    }

    #[test]
    fn flags_parse_and_build_requires_registry() {
        let cli = Cli::try_parse_from([
            "up",
            "--cameras",
            "3",
            "--topics",
            "a,b,c",
            "--namespace",
            "posture",
        ])
        .expect("parses");
        assert_eq!(cli.up.topics, ["a", "b", "c"]);
        assert_eq!(cli.up.mode, ModeArg::RoundRobin);
        assert!(
            Cli::try_parse_from(["up", "--build"]).is_err(),
            "--build needs --registry"
        );
        let cli =
            Cli::try_parse_from(["up", "--mode", "keda", "--wait-timeout", "5m"]).expect("parses");
        assert_eq!(cli.up.wait_timeout, Duration::from_secs(300));
    }

    #[test]
    fn build_reports_a_missing_dockerfile_before_calling_docker() {
        let tmp = tempfile::tempdir().expect("tmp");
        let err = build_and_push(tmp.path(), "x/posture-farm:latest").expect_err("no Dockerfile");
        assert!(err.to_string().contains("no Dockerfile"), "{err}");
    }
}

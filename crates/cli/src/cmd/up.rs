//! `posture-farm up`: deploy the farm with one command, idempotently.
//!
//! Steps: check the flags and render the mode's kustomization from the
//! manifests embedded from `deploy/` (bad input stops here, before the
//! cluster is touched); optionally build and push the multi-arch image;
//! read the database credentials an earlier `up` generated (or generate
//! them); taint the control-plane node and label GPU nodes; (KEDA) pin each
//! new ScaledJob with the even spread; prune what the plan no longer holds
//! (the previous mode's workloads); apply in stage order, waiting for the
//! broker and the database before the controllers and analyzers; wait for
//! the Deployments and the analyzer pods; print where everything runs. A
//! second `up` with the same flags sends the same applies and reports every
//! object unchanged.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use posture_k8s::ops::apply::{ApplyAction, ApplyOutcome};
use posture_k8s::ops::manifests::{
    self, BrokerAuth, BrokerSetup, DbCredentials, DbSetup, GpuInference, InClusterDb, Mode,
    PrometheusSetup, RenderOptions,
};
use posture_k8s::ops::status;
use posture_k8s::ops::up::{
    DeployEvent, NodeOptions, PreparedNodes, deploy, prepare_nodes, read_secret,
};
use posture_k8s::ops::wait::WaitConfig;
use rand::SeedableRng as _;

use crate::args::{GpuSourceArgs, farm_snapshot, seed_or_clock};

/// Placement mode on the command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// Jobs bound in turn to the Ready nodes by rr-scheduler.
    #[default]
    RoundRobin,
    /// Jobs bound to the least-loaded GPU node by gpu-scheduler (GPU usage from Prometheus).
    Gpu,
    /// KEDA ScaledJobs pinned to GPU nodes by the even spread, moved by the balancer.
    Keda,
    /// Jobs with PriorityClasses, bound (and preempted) by posture-priority.
    Priority,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::RoundRobin => Mode::RoundRobin,
            ModeArg::Gpu => Mode::Gpu,
            ModeArg::Keda => Mode::Keda,
            ModeArg::Priority => Mode::Priority,
        }
    }
}

/// Flags of `posture-farm up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Placement mode (deploy/modes/<mode>/). Switching mode removes the previous mode's workloads.
    #[arg(long, env = "POSTURE_MODE", value_enum, default_value_t)]
    pub mode: ModeArg,
    /// Namespace of the farm (everything but cluster-scoped RBAC and PriorityClasses).
    #[arg(long, env = "POSTURE_NAMESPACE", default_value = manifests::DOCUMENTED_NAMESPACE)]
    pub namespace: String,
    /// Number of cameras (one analyzer each). Default: the ten documented in
    /// deploy/, or one per --topics entry.
    #[arg(long, env = "POSTURE_CAMERAS")]
    pub cameras: Option<usize>,
    /// MQTT topic per camera, comma-separated (default: the documented images/pi1, images/pi1-1, …).
    #[arg(long, env = "POSTURE_TOPICS", value_delimiter = ',')]
    pub topics: Vec<String>,
    /// Container image for every posture-farm component (default: the release's,
    /// or REGISTRY/posture-farm:TAG with --build).
    #[arg(long, env = "POSTURE_IMAGE")]
    pub image: Option<String>,
    /// Use an existing MQTT broker, HOST or HOST:PORT, instead of deploying mosquitto.
    #[arg(long, env = "POSTURE_MQTT_BROKER")]
    pub mqtt_broker: Option<String>,
    /// MQTT user (Secret mqtt-broker-auth): the in-cluster broker then accepts only
    /// this user; with --mqtt-broker, the analyzers log in as it.
    #[arg(long, env = "POSTURE_MQTT_USERNAME", requires = "mqtt_password")]
    pub mqtt_username: Option<String>,
    /// Password of --mqtt-username (give it through the environment, not the command line).
    #[arg(
        long,
        env = "POSTURE_MQTT_PASSWORD",
        hide_env_values = true,
        requires = "mqtt_username"
    )]
    pub mqtt_password: Option<String>,
    /// Use an existing PostgreSQL at this URL instead of deploying one (also:
    /// all of DB_HOST DB_PORT DB_NAME DB_USER DB_PASSWORD in the environment).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Use an existing Secret with a DATABASE_URL key instead of deploying PostgreSQL.
    #[arg(long, env = "POSTURE_DATABASE_SECRET", conflicts_with = "database_url")]
    pub database_secret: Option<String>,
    /// Deploy the farm's own Prometheus (deploy/prometheus/), scraping the GPU exporter and every component.
    #[arg(
        long,
        env = "POSTURE_WITH_PROMETHEUS",
        conflicts_with = "prometheus_url"
    )]
    pub with_prometheus: bool,
    /// An existing Prometheus for the GPU-aware components (PROMETHEUS_URL in the cluster).
    #[arg(long, env = "POSTURE_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    /// Per-node GPU queries (YAML, as `posture-farm gpu --gpu-config`): put in
    /// ConfigMap posture-gpu-config, read by the GPU scheduler, scaler and balancer.
    #[arg(long, env = "GPU_CONFIG")]
    pub gpu_config: Option<PathBuf>,
    /// Nodes to label gpu-node=<name> (default: every node but the control plane).
    #[arg(long, env = "GPU_NODES", value_delimiter = ',')]
    pub gpu_nodes: Vec<String>,
    /// Schedulers watch pods in every namespace (their RBAC becomes cluster-wide).
    #[arg(long, env = "POSTURE_ALL_NAMESPACES")]
    pub all_namespaces: bool,
    /// Priority mode: CAMERA=CLASS (low, normal, high, or a PriorityClass name), comma-separated.
    #[arg(long = "camera-priority", env = "POSTURE_CAMERA_PRIORITIES", value_delimiter = ',', value_parser = parse_pair)]
    pub camera_priorities: Vec<(String, String)>,
    /// Analyzers run the pose model on the node's GPU: one nvidia.com/gpu each, the -gpu image.
    #[arg(long, env = "POSTURE_GPU_INFERENCE")]
    pub gpu_inference: bool,
    /// Image of the analyzers with --gpu-inference (default: the posture-farm image's tag + "-gpu").
    #[arg(long, env = "POSTURE_GPU_IMAGE")]
    pub gpu_image: Option<String>,
    /// runtimeClassName of GPU analyzers ("" for none, e.g. with K3s --default-runtime nvidia).
    #[arg(long, env = "POSTURE_GPU_RUNTIME_CLASS", default_value = "nvidia")]
    pub gpu_runtime_class: String,
    /// POSE_DEVICE of GPU analyzers.
    #[arg(long, env = "POSTURE_POSE_DEVICE", default_value = "cuda", value_parser = ["auto", "cuda", "tensorrt"])]
    pub pose_device: String,
    /// Do not deploy the dashboard.
    #[arg(long, env = "POSTURE_NO_DASHBOARD")]
    pub no_dashboard: bool,
    /// Service type of the dashboard: ClusterIP (in the cluster only), NodePort or
    /// LoadBalancer (K3s: every node's IP) to reach it from the LAN.
    #[arg(long, env = "POSTURE_DASHBOARD_SERVICE_TYPE", value_parser = ["ClusterIP", "NodePort", "LoadBalancer"])]
    pub dashboard_service_type: Option<String>,
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
    #[arg(long, env = "POSTURE_TAG", default_value = env!("CARGO_PKG_VERSION"))]
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
}

/// `CAMERA=CLASS`.
fn parse_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
            Ok((k.trim().to_string(), v.trim().to_string()))
        }
        _ => Err(format!("{text:?}: give CAMERA=CLASS")),
    }
}

/// Redraws one progress line per step on a terminal; prints a plain line on
/// each change otherwise (logs, CI).
struct Progress {
    tty: bool,
    last: Option<(String, usize, usize)>,
}

impl Progress {
    fn new() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            last: None,
        }
    }

    fn update(&mut self, what: &str, done: usize, total: usize) {
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

    fn finish(&mut self) {
        if self.tty && self.last.is_some() {
            eprintln!();
        }
        self.last = None;
    }
}

/// Runs `docker buildx build --push`. Building a multi-arch container image
/// has no Kubernetes API, and reimplementing BuildKit is out of the question:
/// this is the one place posture-farm calls an external tool.
fn build_and_push(
    context: &std::path::Path,
    image: &str,
    target: Option<&str>,
) -> anyhow::Result<()> {
    use std::process::Command;
    if !context.join("Dockerfile").is_file() {
        bail!(
            "no Dockerfile in {} (run from the repository root or pass --context)",
            context.display()
        );
    }
    // Multi-platform image builds are BuildKit's (buildx) work: the Docker
    // Engine API's /build endpoint builds one platform with the legacy
    // builder and cannot push a manifest list, so we drive the buildx CLI.
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
    let mut build = Command::new("docker");
    build.args([
        "buildx",
        "build",
        "--platform",
        "linux/amd64,linux/arm64",
        "-t",
        image,
        "--push",
    ]);
    if let Some(target) = target {
        build.args(["--target", target]);
    }
    let status = build
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
    let mut opts = render_options(&args)?;
    let rendered = manifests::render(&manifests::embedded(), &opts)
        .context("rendering the deploy/ manifests")?;
    for w in &rendered.warnings {
        tracing::warn!("{w}");
    }
    if args.dry_run {
        return print_manifests(&rendered);
    }
    if args.build {
        let image = image_name(&args).context("--build needs --registry")?;
        let gpu_image = opts.gpu_inference.as_ref().map(|g| g.image.clone());
        let context = args.context.clone();
        tokio::task::spawn_blocking(move || {
            build_and_push(&context, &image, None)?;
            // The analyzers' GPU variant (the Dockerfile's `gpu` target).
            match gpu_image {
                Some(gpu) => build_and_push(&context, &gpu, Some("gpu")),
                None => Ok(()),
            }
        })
        .await??;
    }

    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (KUBECONFIG or in-cluster config)")?;
    if let DbSetup::InCluster(_) = opts.database {
        opts.database = DbSetup::InCluster(Some(db_credentials(&client, &args.namespace).await?));
    }
    let mut rendered = manifests::render(&manifests::embedded(), &opts)?;
    let prepared = prepare(&client, &args).await?;
    if args.mode == ModeArg::Keda {
        let scaled_jobs = rendered.plan.workload_names("ScaledJob");
        let placement = keda_placement(&client, &args, &scaled_jobs, &prepared.gpu_nodes).await?;
        manifests::assign_nodes(&mut rendered.plan, &placement);
    }

    let mut progress = Progress::new();
    let wait = (!args.no_wait).then(|| WaitConfig {
        timeout: args.wait_timeout,
        ..WaitConfig::default()
    });
    let report = deploy(&client, &rendered.plan, &rendered.namespace, wait, |e| match e {
        DeployEvent::Pruned(d) => {
            progress.finish();
            println!("{:<11} {:<11} {d}", "previous", "deleted");
        }
        DeployEvent::Applied { outcome, n, total } => {
            progress.update("applying", n, total);
            tracing::debug!(object = %outcome.object, action = outcome.action.as_str(), "applied");
        }
        DeployEvent::Waiting(p) => progress.update(&p.what, p.done, p.total),
    })
    .await?;
    progress.finish();
    print_outcomes(&report.applied, report.pruned.len());
    if args.mode == ModeArg::Keda {
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

/// Everything the flags ask for, checked (files read, addresses parsed)
/// before the cluster is touched. The in-cluster database's credentials are
/// a placeholder until [`db_credentials`] reads or generates them.
fn render_options(args: &UpArgs) -> anyhow::Result<RenderOptions> {
    let broker = match &args.mqtt_broker {
        Some(address) => BrokerSetup::external(address)?,
        None => BrokerSetup::InCluster,
    };
    let broker_auth = match (&args.mqtt_username, &args.mqtt_password) {
        (Some(username), Some(password)) => Some(BrokerAuth {
            username: username.clone(),
            password: password.clone(),
        }),
        _ => None,
    };
    let database = match &args.database_secret {
        Some(secret) => DbSetup::Secret(secret.clone()),
        None => match DbCredentials::from_url_or_parts(args.database_url.as_deref(), |k| {
            std::env::var(k).ok()
        })? {
            Some(credentials) => DbSetup::Url(credentials),
            None => DbSetup::InCluster(None),
        },
    };
    let gpu_config = match &args.gpu_config {
        Some(path) => Some(read_gpu_config(path)?),
        None => None,
    };
    let image = image_name(args);
    let gpu_inference = args.gpu_inference.then(|| GpuInference {
        image: args.gpu_image.clone().unwrap_or_else(|| {
            let base = image
                .clone()
                .unwrap_or_else(|| manifests::DOCUMENTED_IMAGE.to_string());
            format!("{base}-gpu")
        }),
        runtime_class: Some(args.gpu_runtime_class.clone()).filter(|c| !c.is_empty()),
        device: args.pose_device.clone(),
    });
    Ok(RenderOptions {
        mode: args.mode.into(),
        namespace: Some(args.namespace.clone()),
        image,
        cameras: args.cameras,
        topics: args.topics.clone(),
        broker,
        broker_auth,
        database,
        prometheus: PrometheusSetup {
            deploy: args.with_prometheus,
            url: args.prometheus_url.clone(),
        },
        gpu_config,
        all_namespaces: args.all_namespaces,
        camera_priorities: args
            .camera_priorities
            .iter()
            .map(|(camera, class)| (camera.clone(), manifests::priority_class(class)))
            .collect::<BTreeMap<_, _>>(),
        gpu_inference,
        no_dashboard: args.no_dashboard,
        dashboard_service_type: args.dashboard_service_type.clone(),
    })
}

/// The GPU config file's text, refused here if `posture-farm gpu` would refuse it.
fn read_gpu_config(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --gpu-config {}", path.display()))?;
    let config = posture_gpu::GpuConfig::parse(&text, &path.display().to_string())?;
    config
        .resolve(
            posture_gpu::config::DEFAULT_QUERY_TEMPLATE,
            posture_gpu::config::default_discover(),
            &[],
        )
        .with_context(|| format!("checking --gpu-config {}", path.display()))?;
    Ok(text)
}

/// The in-cluster database's credentials: those an earlier `up` stored in
/// Secret posture-db (the data volume was initialised with them), else new ones.
async fn db_credentials(client: &kube::Client, namespace: &str) -> anyhow::Result<InClusterDb> {
    let existing = read_secret(client, namespace, manifests::generate::DB_SECRET).await?;
    if let Some(db) = existing.as_ref().and_then(InClusterDb::from_secret) {
        return Ok(db);
    }
    eprintln!("generating the database password (kept in Secret {namespace}/posture-db)");
    Ok(InClusterDb::new(generate_password()?))
}

/// 32 characters from the operating system's random source.
fn generate_password() -> anyhow::Result<String> {
    use rand::TryRngCore as _;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(32);
    let mut buf = [0u8; 64];
    while out.len() < 32 {
        rand::rngs::OsRng
            .try_fill_bytes(&mut buf)
            .context("reading the system's random source")?;
        // Rejection sampling: bytes of 248 and more would favour some characters.
        for b in buf.iter().filter(|b| usize::from(**b) < CHARS.len() * 4) {
            if out.len() < 32 {
                out.push(char::from(CHARS[usize::from(*b) % CHARS.len()]));
            }
        }
    }
    Ok(out)
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

/// `--dry-run`: the rendered manifests as YAML, Secret values redacted.
fn print_manifests(rendered: &manifests::Rendered) -> anyhow::Result<()> {
    for w in &rendered.warnings {
        println!("# warning: {w}");
    }
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
            gpu_nodes: args.gpu_nodes.clone(),
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
fn print_outcomes(outcomes: &[ApplyOutcome], pruned: usize) {
    for o in outcomes {
        println!(
            "{:<11} {:<11} {}",
            o.stage.as_str(),
            o.action.as_str(),
            o.object
        );
    }
    let count = |a: ApplyAction| outcomes.iter().filter(|o| o.action == a).count();
    println!(
        "{} created, {} configured, {} replaced, {} unchanged, {pruned} of an earlier mode deleted",
        count(ApplyAction::Created),
        count(ApplyAction::Configured),
        count(ApplyAction::Replaced),
        count(ApplyAction::Unchanged)
    );
}

/// Node per ScaledJob. ScaledJobs already pinned by an earlier `up` (or
/// moved since by the balancer) keep their node, so a re-run changes nothing;
/// the others come from the even-spread planner over the GPU nodes with a
/// fresh reading (the farm's Prometheus through a port-forward, or
/// `--prometheus-url`) — without any reading, an even spread over the GPU
/// nodes as if idle (said loudly).
async fn keda_placement(
    client: &kube::Client,
    args: &UpArgs,
    scaled_jobs: &[String],
    gpu_nodes: &[String],
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut placement = status::pinned_scaled_jobs(client, &args.namespace).await?;
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
    let snapshot = farm_snapshot(&reading_args(args)?, client, &args.namespace).await;
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

/// How `up` itself reads GPU usage for the placement: the GPU flags'
/// defaults (and their environment variables), with `up`'s --gpu-config,
/// --gpu-nodes and --prometheus-url.
fn reading_args(args: &UpArgs) -> anyhow::Result<GpuSourceArgs> {
    #[derive(clap::Parser)]
    struct Defaults {
        #[command(flatten)]
        gpu: GpuSourceArgs,
    }
    use clap::Parser as _;
    let mut gpu = Defaults::try_parse_from(["up"])
        .context("GPU_* environment variables")?
        .gpu;
    gpu.gpu_config = args.gpu_config.clone();
    gpu.gpu_nodes = args.gpu_nodes.clone();
    if let Some(url) = &args.prometheus_url {
        gpu.prometheus_url = url.clone();
    }
    Ok(gpu)
}

#[cfg(test)]
mod tests;

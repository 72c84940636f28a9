//! `posture-farm dashboard`: the web dashboard (overview, camera pages,
//! farm page, live updates) over the results database, read-only, with GPU
//! usage from Prometheus and placements from Kubernetes when reachable.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use posture_dashboard::k8s::DEFAULT_SELECTOR;
use posture_dashboard::{
    Dashboard, Farm, KubeSettings, KubeSource, LiveConfig, ReadOnlyDb, Settings,
};
use posture_gpu::config::parse_duration;
use prometheus_client::registry::Registry;

use crate::admin::Shutdown;
use crate::args::{DbArgs, GpuSourceArgs, ViewArgs, display_addr};

/// Flags of `posture-farm dashboard`.
#[derive(Debug, clap::Args)]
pub struct DashboardArgs {
    /// Address to serve on (0.0.0.0:8080 in the cluster).
    #[arg(long, env = "DASHBOARD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub view: ViewArgs,
    /// A camera without a frame for this long is flagged silent.
    #[arg(long = "silent-after", env = "DASHBOARD_SILENT_AFTER", default_value = "2m", value_parser = parse_duration)]
    pub silent_after: Duration,
    /// How often the database is asked for new frames.
    #[arg(long = "poll-interval", env = "DASHBOARD_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// How often the day's statistics are rebuilt from the database.
    #[arg(long = "refresh-interval", env = "DASHBOARD_REFRESH_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub refresh_interval: Duration,
    /// Do not read GPU usage from Prometheus.
    #[arg(long = "no-gpu", env = "DASHBOARD_NO_GPU")]
    pub no_gpu: bool,
    #[command(flatten)]
    pub gpu: GpuSourceArgs,
    /// Do not read the Kubernetes API (otherwise: in-cluster config or
    /// KUBECONFIG, and the farm page says when neither is there).
    #[arg(long = "no-kubernetes", env = "DASHBOARD_NO_KUBERNETES")]
    pub no_kubernetes: bool,
    /// Only this namespace's pods and Events (default: every namespace).
    #[arg(long = "namespace", env = "POSTURE_NAMESPACE")]
    pub namespace: Option<String>,
    /// Label selector of posture-farm's pods.
    #[arg(long = "k8s-selector", env = "DASHBOARD_K8S_SELECTOR", default_value = DEFAULT_SELECTOR)]
    pub k8s_selector: String,
    /// How often pods, nodes and Events are read.
    #[arg(long = "k8s-poll-interval", env = "DASHBOARD_K8S_POLL_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub k8s_poll_interval: Duration,
}

/// Runs the subcommand.
pub async fn run(args: DashboardArgs) -> anyhow::Result<()> {
    let target = args.db.target()?;
    let settings = Settings {
        thresholds: args.view.thresholds()?,
        clock: args.view.clock()?,
        silent_after: args.silent_after,
    };
    anyhow::ensure!(
        !args.poll_interval.is_zero() && !args.k8s_poll_interval.is_zero(),
        "poll intervals must be positive"
    );
    let gpu = if args.no_gpu {
        None
    } else {
        // Metrics of the source are not served: the dashboard has no /metrics.
        let mut registry = Registry::default();
        Some(args.gpu.spawn(&mut registry)?)
    };
    let kube = if args.no_kubernetes {
        KubeSource::Off
    } else {
        match kube::Client::try_default().await {
            Ok(c) => KubeSource::Client(
                c,
                KubeSettings {
                    namespace: args.namespace.clone(),
                    selector: args.k8s_selector.clone(),
                    poll_interval: args.k8s_poll_interval,
                },
            ),
            Err(e) => {
                tracing::warn!(error = %e, "no Kubernetes configuration; the farm page shows GPU usage only");
                KubeSource::Unavailable(format!("no kubeconfig or in-cluster configuration ({e})"))
            }
        }
    };
    let farm = Farm::new(
        &kube,
        gpu,
        (!args.no_gpu).then(|| args.gpu.prometheus_url.clone()),
    );
    let live = LiveConfig {
        poll_interval: args.poll_interval,
        refresh_interval: args.refresh_interval,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding the dashboard on {}", args.listen))?;
    let db = ReadOnlyDb::open(&target);
    println!(
        "dashboard: http://{} (database {}, read-only)",
        display_addr(args.listen),
        db.describe()
    );
    tracing::info!(listen = %args.listen, database = db.describe(), "dashboard serving");
    let shutdown = Shutdown::on_signals();
    Dashboard::new(db, farm, settings, live)
        .serve(listener, kube, shutdown.wait())
        .await
        .context("serving the dashboard")
}

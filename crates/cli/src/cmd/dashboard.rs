//! `posture-farm dashboard`: the web dashboard (overview, camera pages,
//! farm page, live updates) over the results database, read-only, with GPU
//! usage from Prometheus and placements from Kubernetes when reachable.
//! Also home of the database and view flags `report` shares, and of the
//! small helper `local` uses to start a dashboard beside its pipeline.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use posture_analyzer::store::{DbTarget, LegacyDbVars};
use posture_core::posture::Thresholds;
use posture_dashboard::k8s::DEFAULT_SELECTOR;
use posture_dashboard::{
    Clock, Dashboard, Farm, KubeSettings, KubeSource, LiveConfig, ReadOnlyDb, Settings,
};
use posture_gpu::config::parse_duration;
use prometheus_client::registry::Registry;

use super::gpu::GpuSourceArgs;
use crate::admin::tokio_util_shutdown::Shutdown;

/// The results database, as the analyzer names it (same flags and
/// variables, so one Secret serves both; give the dashboard a read-only
/// user where you can).
#[derive(Clone, Debug, clap::Args)]
pub struct DbArgs {
    /// Database URL: postgres://user:pass@host:5432/db or sqlite:path. Wins over DB_*.
    #[arg(long = "database-url", env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// SQLite file used when no PostgreSQL is configured.
    #[arg(
        long = "sqlite-path",
        env = "SQLITE_PATH",
        default_value = "posture.db"
    )]
    pub sqlite_path: PathBuf,
    /// Legacy: `true` turns PostgreSQL on with the DB_* settings below.
    #[arg(long = "db-enabled", env = "DB_ENABLED")]
    pub db_enabled: Option<String>,
    /// Legacy: PostgreSQL host.
    #[arg(long = "db-host", env = "DB_HOST")]
    pub db_host: Option<String>,
    /// Legacy: PostgreSQL port (default 5432).
    #[arg(long = "db-port", env = "DB_PORT")]
    pub db_port: Option<u16>,
    /// Legacy: PostgreSQL database (default postgres).
    #[arg(long = "db-name", env = "DB_NAME")]
    pub db_name: Option<String>,
    /// Legacy: PostgreSQL user (default postgres).
    #[arg(long = "db-user", env = "DB_USER")]
    pub db_user: Option<String>,
    /// Legacy: PostgreSQL password.
    #[arg(long = "db-password", env = "DB_PASSWORD", hide_env_values = true)]
    pub db_password: Option<String>,
}

impl DbArgs {
    /// The database these flags name.
    pub fn target(&self) -> anyhow::Result<DbTarget> {
        let legacy = LegacyDbVars {
            enabled: self.db_enabled.clone(),
            host: self.db_host.clone(),
            port: self.db_port,
            name: self.db_name.clone(),
            user: self.db_user.clone(),
            password: self.db_password.clone(),
        };
        DbTarget::resolve(self.database_url.as_deref(), &legacy, &self.sqlite_path)
            .context("choosing the database")
    }
}

/// How results are shown (shared with `report`).
#[derive(Clone, Debug, clap::Args)]
pub struct ViewArgs {
    /// Neck threshold line on plots, degrees (the analyzers' NECK_THRESHOLD).
    #[arg(
        long = "neck-threshold",
        env = "NECK_THRESHOLD",
        default_value_t = 40.0
    )]
    pub neck_threshold: f32,
    /// Torso threshold line on plots, degrees (the analyzers' TORSO_THRESHOLD).
    #[arg(
        long = "torso-threshold",
        env = "TORSO_THRESHOLD",
        default_value_t = 10.0
    )]
    pub torso_threshold: f32,
    /// Time zone of every time shown (IANA name such as Europe/Paris, or
    /// UTC); default: this machine's.
    #[arg(long = "time-zone", env = "DASHBOARD_TIME_ZONE")]
    pub time_zone: Option<String>,
}

impl ViewArgs {
    /// The thresholds.
    pub fn thresholds(&self) -> anyhow::Result<Thresholds> {
        anyhow::ensure!(
            self.neck_threshold > 0.0 && self.torso_threshold > 0.0,
            "thresholds must be positive degrees"
        );
        Ok(Thresholds {
            neck_deg: self.neck_threshold,
            torso_deg: self.torso_threshold,
        })
    }

    /// The clock.
    pub fn clock(&self) -> anyhow::Result<Clock> {
        Clock::new(self.time_zone.as_deref())
            .with_context(|| format!("unknown time zone {:?}", self.time_zone))
    }
}

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

/// `0.0.0.0:8080` is printed as `localhost:8080`: a URL one can open.
fn display_addr(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// Starts a dashboard for `posture-farm local`: on `listen` (a free port on
/// the same address if taken), over `target`, without GPU or Kubernetes,
/// until `shutdown`. Returns its URL.
pub async fn start_local(
    listen: SocketAddr,
    target: &DbTarget,
    thresholds: Thresholds,
    shutdown: Shutdown,
) -> anyhow::Result<String> {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(%listen, error = %e, "dashboard port taken; using a free one");
            tokio::net::TcpListener::bind(SocketAddr::new(listen.ip(), 0))
                .await
                .context("binding the dashboard")?
        }
    };
    let url = format!("http://{}", display_addr(listener.local_addr()?));
    let settings = Settings {
        thresholds,
        clock: Clock::new(None).unwrap_or_default(),
        ..Settings::default()
    };
    let dashboard = Dashboard::new(
        ReadOnlyDb::open(target),
        Farm::new(&KubeSource::Off, None, None),
        settings,
        LiveConfig::default(),
    );
    tokio::spawn(async move {
        if let Err(e) = dashboard
            .serve(listener, KubeSource::Off, shutdown.wait())
            .await
        {
            tracing::warn!(error = %e, "the dashboard stopped");
        }
    });
    Ok(url)
}

//! Flag groups of the dashboard and the report: the results database (the
//! same flags as the analyzer's, which flattens [`DbArgs`] too) and how
//! results are shown; and the dashboard `local` starts beside its pipeline.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use posture_analyzer::store::{DbTarget, LegacyDbVars};
use posture_core::posture::Thresholds;
use posture_dashboard::{Clock, Dashboard, Farm, KubeSource, LiveConfig, ReadOnlyDb, Settings};

use super::ThresholdArgs;
use crate::admin::Shutdown;

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
    /// Legacy: PostgreSQL TLS mode (disable, allow, prefer, require, verify-ca,
    /// verify-full). With DATABASE_URL put `?sslmode=…` in the URL instead.
    #[arg(long = "db-sslmode", env = "DB_SSLMODE")]
    pub db_sslmode: Option<String>,
    /// Legacy: PEM file of CAs trusted for the PostgreSQL server's certificate
    /// (verify-ca/verify-full; default: the system roots). With DATABASE_URL
    /// use `?sslrootcert=…`.
    #[arg(long = "db-sslrootcert", env = "DB_SSLROOTCERT")]
    pub db_sslrootcert: Option<PathBuf>,
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
            sslmode: self.db_sslmode.clone(),
            sslrootcert: self.db_sslrootcert.clone(),
        };
        DbTarget::resolve(self.database_url.as_deref(), &legacy, &self.sqlite_path)
            .context("choosing the database")
    }
}

/// How results are shown (shared with `report`).
#[derive(Clone, Debug, clap::Args)]
pub struct ViewArgs {
    /// Threshold lines on plots (the analyzers' NECK_THRESHOLD and TORSO_THRESHOLD).
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
    /// Time zone of every time shown (IANA name such as Europe/Paris, or
    /// UTC); default: this machine's.
    #[arg(long = "time-zone", env = "DASHBOARD_TIME_ZONE")]
    pub time_zone: Option<String>,
}

impl ViewArgs {
    /// The thresholds.
    pub fn thresholds(&self) -> anyhow::Result<Thresholds> {
        self.thresholds.thresholds()
    }

    /// The clock.
    pub fn clock(&self) -> anyhow::Result<Clock> {
        Clock::new(self.time_zone.as_deref())
            .with_context(|| format!("unknown time zone {:?}", self.time_zone))
    }
}

/// A URL one can open for `addr`: `0.0.0.0:8080` is printed as `localhost:8080`.
pub fn display_addr(addr: SocketAddr) -> String {
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

//! `posture-farm scaler`: KEDA External Scaler (gRPC, `posture-scaler`) fed
//! by the Prometheus GPU usage source; with `--with-balancer` the GPU
//! balancer runs in the same process on the same usage stream.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use posture_core::scaler::{DEFAULT_METRIC_NAME, ScalerConfig};
use posture_gpu::config::parse_duration;
use posture_k8s::balancer::BalanceMetrics;
use posture_scaler::{Scaler, ScalerMetrics, ScalerOptions, TlsPem};
use prometheus_client::registry::Registry;

use crate::admin::{self, Readiness, Shutdown};
use crate::args::{BalancerArgs, GpuSourceArgs, LeaderElectionArgs};

/// Flags of `posture-farm scaler`.
#[derive(Debug, clap::Args)]
pub struct ScalerArgs {
    /// gRPC listen address (KEDA's `scalerAddress` points here).
    #[arg(long, env = "SCALER_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,
    /// PEM certificate chain: serve gRPC over TLS (needs --tls-key).
    #[arg(long, env = "SCALER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "SCALER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Metric name advertised by GetMetricSpec (a trigger's `metricName`
    /// metadata overrides it).
    #[arg(long, env = "SCALER_METRIC_NAME", default_value = DEFAULT_METRIC_NAME)]
    pub metric_name: String,
    /// Metric target advertised to KEDA (targetSizeFloat): spare GPU capacity,
    /// in percentage points, that one analyzer Job stands for.
    #[arg(long, env = "SCALER_TARGET", default_value_t = posture_scaler::DEFAULT_TARGET)]
    pub target: f64,
    /// YAML file (e.g. a mounted ConfigMap) with `target`, `threshold`,
    /// `metricName`; re-read every 5 s while running, changes are pushed to
    /// KEDA through StreamMetricSpec. Keys it lacks keep the flags' values.
    #[arg(long, env = "SCALER_SETTINGS_FILE")]
    pub settings_file: Option<PathBuf>,
    /// Once a ScaledJob was reported active, keep reporting active this long
    /// after the last time a node had room, so KEDA does not tear Jobs down
    /// while the balancer moves them.
    #[arg(long, env = "SCALER_STABILIZATION_WINDOW", default_value = "60s", value_parser = parse_duration)]
    pub stabilization_window: Duration,
    /// Also run the GPU balancer in this process (same threshold and usage).
    #[arg(long, env = "SCALER_WITH_BALANCER")]
    pub with_balancer: bool,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "SCALER_ADMIN_ADDR", default_value = "0.0.0.0:9103")]
    pub admin_addr: SocketAddr,
    /// Threshold (`GPU_THRESHOLD`) and, with --with-balancer, the balancer's settings.
    #[command(flatten)]
    pub balancer: BalancerArgs,
    #[command(flatten)]
    pub source: GpuSourceArgs,
    /// With --with-balancer: only the replica holding the balancer's Lease moves workloads.
    #[command(flatten, next_help_heading = "Leader election (--with-balancer)")]
    pub leader: LeaderElectionArgs,
}

impl ScalerArgs {
    fn defaults(&self) -> anyhow::Result<ScalerConfig> {
        // Validate the flags the way a trigger's metadata is validated.
        let metadata = [
            ("threshold".to_owned(), self.balancer.threshold.to_string()),
            ("metricName".to_owned(), self.metric_name.clone()),
        ]
        .into_iter()
        .collect();
        ScalerConfig::from_metadata(&ScalerConfig::default(), &metadata)
            .context("invalid --threshold or --metric-name")
    }

    fn tls(&self) -> anyhow::Result<Option<TlsPem>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(TlsPem {
                cert: std::fs::read(cert)
                    .with_context(|| format!("reading --tls-cert {}", cert.display()))?,
                key: std::fs::read(key)
                    .with_context(|| format!("reading --tls-key {}", key.display()))?,
            })),
            (None, None) => Ok(None),
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        }
    }
}

/// Starts the in-process balancer (`--with-balancer`) and its leader
/// election: the gRPC service is served by every replica (it only reads);
/// only the replica holding the balancer's Lease moves workloads. The task
/// releases the Lease once the balancer stopped.
fn spawn_balancer(
    args: &ScalerArgs,
    client: kube::Client,
    usage: &tokio::sync::watch::Receiver<posture_core::gpu::GpuSnapshot>,
    metrics: BalanceMetrics,
    registry: &mut Registry,
    ready: &Readiness,
    shutdown: &Shutdown,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let election = args
        .balancer
        .election(&args.leader, &client, registry, shutdown.clone())?;
    ready.set_leadership(election.gate());
    let (usage, balancer, source, shutdown) = (
        usage.clone(),
        args.balancer.clone(),
        args.source.clone(),
        shutdown.clone(),
    );
    Ok(tokio::spawn(async move {
        // The balancer's own readiness is not the scaler's (KEDA only needs
        // gRPC); it carries the leadership the balancer acts on.
        let balancer_ready = Readiness::default();
        balancer_ready.set_leadership(election.gate());
        let result = balancer
            .run(client, &source, usage, metrics, balancer_ready, shutdown)
            .await;
        election.release().await;
        result
    }))
}

/// Runs the subcommand.
pub async fn run(args: ScalerArgs) -> anyhow::Result<()> {
    let defaults = args.defaults()?;
    let tls = args.tls()?;
    if args.with_balancer {
        args.balancer.validate()?;
    }
    let mut registry = Registry::default();
    let usage = args.source.spawn(&mut registry)?;
    let scaler_metrics = ScalerMetrics::default();
    scaler_metrics.register(registry.sub_registry_with_prefix("scaler"));
    let balance_metrics = args
        .with_balancer
        .then(|| BalanceMetrics::register(&mut registry));
    let client = if args.with_balancer {
        Some(
            kube::Client::try_default()
                .await
                .context("connecting to the Kubernetes API for --with-balancer")?,
        )
    } else {
        None
    };

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding the scaler's gRPC port {}", args.listen))?;
    let ready = Readiness::default();
    let shutdown = Shutdown::on_signals();
    let balancer = match (client, balance_metrics) {
        (Some(client), Some(metrics)) => Some(spawn_balancer(
            &args,
            client,
            &usage,
            metrics,
            &mut registry,
            &ready,
            &shutdown,
        )?),
        _ => None,
    };
    let admin = admin::serve(args.admin_addr, registry, ready.clone(), shutdown.clone()).await?;

    let scaler = Scaler::new(
        usage,
        ScalerOptions {
            defaults,
            stabilization: args.stabilization_window,
            target: args.target,
        },
        scaler_metrics,
    );
    let base = scaler.settings();
    base.validate().context("invalid --target")?;
    if let Some(path) = &args.settings_file {
        // Applied once before serving, so KEDA's first answers already use it.
        if let Err(e) = posture_scaler::settings::apply_file(&scaler, path, &base) {
            tracing::warn!(error = %e, cause = ?std::error::Error::source(&e).map(ToString::to_string), "scaler settings file not applied at start; using the flags");
        }
        tokio::spawn(posture_scaler::settings::watch_file(
            scaler.clone(),
            path.clone(),
            base,
            Duration::from_secs(5),
            shutdown.clone().wait(),
        ));
    }
    ready.set(true);
    let served = posture_scaler::serve(listener, scaler, tls, shutdown.clone().wait()).await;
    shutdown.trigger();
    if let Some(task) = balancer {
        match task.await {
            Ok(Err(err)) => tracing::error!(error = format!("{err:#}"), "balancer stopped"),
            Err(err) => tracing::error!(%err, "balancer task failed"),
            Ok(Ok(())) => {}
        }
    }
    let _ = admin.await;
    served.context("serving the KEDA external scaler")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: ScalerArgs,
    }

    #[test]
    fn defaults_and_validation() {
        let w = Wrap::try_parse_from(["x"]).unwrap();
        assert_eq!(w.args.listen.port(), 50051);
        assert_eq!(w.args.metric_name, "gpu_trigger");
        assert_eq!(w.args.stabilization_window, Duration::from_secs(60));
        assert_eq!(w.args.target, 1.0);
        assert!(w.args.settings_file.is_none());
        let w = Wrap::try_parse_from(["x", "--target", "15", "--settings-file", "/etc/s.yaml"])
            .unwrap();
        assert_eq!(w.args.target, 15.0);
        let d = w.args.defaults().unwrap();
        assert_eq!(d.threshold, 50.0);
        assert!(
            Wrap::try_parse_from(["x", "--tls-cert", "c.pem"]).is_err(),
            "key required"
        );
        let w = Wrap::try_parse_from(["x", "--metric-name", "9bad"]).unwrap();
        assert!(w.args.defaults().is_err());
        let w = Wrap::try_parse_from(["x", "--threshold=-3"]).unwrap();
        assert!(w.args.defaults().is_err());
    }
}

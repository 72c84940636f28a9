//! `posture-farm balance`: the GPU balancer. Observes per-node GPU usage over
//! a window, then moves at most one posture workload off each overloaded node
//! (pure decision in `posture_core::balance`, carried out by
//! `posture_k8s::balancer`). Also run in-process by `posture-farm scaler
//! --with-balancer`.

use std::net::SocketAddr;

use anyhow::Context as _;
use posture_k8s::balancer::BalanceMetrics;
use prometheus_client::registry::Registry;

use crate::admin::{self, Readiness, Shutdown};
use crate::args::{BalancerArgs, GpuSourceArgs, LeaderElectionArgs};

/// Flags of `posture-farm balance`.
#[derive(Debug, clap::Args)]
pub struct BalanceArgs {
    #[command(flatten)]
    pub balancer: BalancerArgs,
    #[command(flatten)]
    pub source: GpuSourceArgs,
    /// Address of /metrics, /healthz, /readyz and /leader.
    #[arg(long, env = "BALANCE_ADMIN_ADDR", default_value = "0.0.0.0:9102")]
    pub admin_addr: SocketAddr,
    #[command(flatten, next_help_heading = "Leader election")]
    pub leader: LeaderElectionArgs,
}

/// Runs the subcommand.
pub async fn run(args: BalanceArgs) -> anyhow::Result<()> {
    args.balancer.validate()?;
    let mut registry = Registry::default();
    let usage = args.source.spawn(&mut registry)?;
    let metrics = BalanceMetrics::register(&mut registry);
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let ready = Readiness::default();
    let shutdown = Shutdown::on_signals();
    let election =
        args.balancer
            .election(&args.leader, &client, &mut registry, shutdown.clone())?;
    ready.set_leadership(election.gate());
    let admin = admin::serve(args.admin_addr, registry, ready.clone(), shutdown.clone()).await?;
    let result = args
        .balancer
        .run(
            client,
            &args.source,
            usage,
            metrics,
            ready,
            shutdown.clone(),
        )
        .await;
    shutdown.trigger();
    election.release().await;
    let _ = admin.await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::time::Duration;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: BalanceArgs,
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let w = Wrap::try_parse_from(["x", "--gpu-nodes", "agx"]).unwrap();
        let b = w.args.balancer;
        assert_eq!(b.threshold, 50.0);
        assert_eq!(b.sample_interval, Duration::from_secs(5));
        assert_eq!(b.window, Duration::from_secs(30));
        assert_eq!(b.cooldown, Duration::from_secs(300));
        assert_eq!(b.affinity_label, "gpu-node");
        assert!(!b.dry_run);
        b.validate().unwrap();
    }

    #[test]
    fn bad_values_are_refused() {
        let w =
            Wrap::try_parse_from(["x", "--threshold", "150", "--seed", "7", "--dry-run"]).unwrap();
        assert!(w.args.balancer.validate().is_err());
        let w = Wrap::try_parse_from(["x", "--window", "1s", "--sample-interval", "5s"]).unwrap();
        assert!(w.args.balancer.validate().is_err());
        assert!(Wrap::try_parse_from(["x", "--cooldown", "soon"]).is_err());
    }
}

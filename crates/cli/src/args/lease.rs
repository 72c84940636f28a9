//! Leader election flags ([`LeaderElectionArgs`]), shared by `scheduler`,
//! `balance` and `scaler --with-balancer`, and the running [`Election`].

use std::time::Duration;

use anyhow::Context as _;
use posture_gpu::config::parse_duration;
use posture_k8s::lease::{
    KubeLease, LeaderElector, LeaderGate, LeaseConfig, LeaseMetrics, LeaseTimings,
};
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;

use crate::admin::Shutdown;

/// Default Lease of the balancer, shared by `balance` and `scaler
/// --with-balancer` so that two balancers never move workloads at once.
pub const BALANCER_LEASE: &str = "posture-farm-balancer";

/// Leader election: run two or more replicas, one acting.
#[derive(Clone, Debug, clap::Args)]
pub struct LeaderElectionArgs {
    /// Run as one of several replicas: only the holder of a
    /// coordination.k8s.io Lease acts; the others keep their caches warm and
    /// take over when it stops renewing (or at once when it shuts down).
    #[arg(long, env = "LEADER_ELECT")]
    pub leader_elect: bool,
    /// Name of the Lease (default: the scheduler's name for `scheduler`,
    /// `posture-farm-balancer` for `balance` and `scaler --with-balancer`,
    /// so those two never move workloads at the same time).
    #[arg(long, env = "LEASE_NAME")]
    pub lease_name: Option<String>,
    /// Namespace of the Lease (default: the client's namespace, i.e. the
    /// pod's own in a cluster).
    #[arg(long, env = "LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// How long candidates wait after the last renewal they saw before they
    /// take the lease over.
    #[arg(long, env = "LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// How long the leader keeps acting without a successful renewal; must be
    /// shorter than --lease-duration (the leader stops before anyone can take over).
    #[arg(long, env = "LEASE_RENEW_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    pub renew_deadline: Duration,
    /// How often the leader renews and candidates try to acquire.
    #[arg(long, env = "LEASE_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    pub retry_period: Duration,
}

impl LeaderElectionArgs {
    /// The timings, checked as client-go checks them.
    pub fn timings(&self) -> anyhow::Result<LeaseTimings> {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let timings = LeaseTimings {
            lease_duration: ms(self.lease_duration),
            renew_deadline: ms(self.renew_deadline),
            retry_period: ms(self.retry_period),
        };
        timings
            .validate()
            .context("invalid --lease-duration, --renew-deadline or --retry-period")?;
        Ok(timings)
    }

    /// Starts the election for `component` (or, without `--leader-elect`,
    /// returns a gate that always acts). The election task stops acting at
    /// `shutdown`; call [`Election::release`] once the component stopped.
    pub fn start(
        &self,
        client: &kube::Client,
        default_name: &str,
        component: &'static str,
        registry: &mut Registry,
        shutdown: Shutdown,
    ) -> anyhow::Result<Election> {
        if !self.leader_elect {
            return Ok(Election::unelected());
        }
        let timings = self.timings()?;
        let namespace = self
            .lease_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        let name = self.lease_name.as_deref().unwrap_or(default_name);
        let metrics = LeaseMetrics::register(registry);
        let (elector, gate) = LeaderElector::new(
            KubeLease::new(client.clone(), &namespace, name),
            LeaseConfig {
                identity: identity(),
                timings,
                component,
            },
            metrics,
        );
        let task = tokio::spawn(elector.run(shutdown.wait()));
        Ok(Election {
            gate,
            task: Some(task),
        })
    }
}

/// A running election (or none).
pub struct Election {
    gate: LeaderGate,
    task: Option<JoinHandle<LeaderElector<KubeLease>>>,
}

impl Election {
    /// No election: the component always acts.
    pub fn unelected() -> Self {
        Self {
            gate: LeaderGate::unelected(),
            task: None,
        }
    }

    /// The gate the component checks before acting.
    pub fn gate(&self) -> LeaderGate {
        self.gate.clone()
    }

    /// After shutdown and once the component stopped acting: gives the
    /// lease up so another replica takes over at once.
    pub async fn release(self) {
        let Some(task) = self.task else { return };
        match task.await {
            Ok(mut elector) => elector.release().await,
            Err(err) => tracing::warn!(%err, "the leader election task failed"),
        }
    }
}

/// This replica's identity: `POD_NAME` (downward API), else the host name
/// and process id (unique per process on a host).
pub fn identity() -> String {
    if let Some(pod) = std::env::var("POD_NAME").ok().filter(|p| !p.is_empty()) {
        return pod;
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "posture-farm".into());
    format!("{host}_{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: LeaderElectionArgs,
    }

    #[test]
    fn defaults_are_kube_schedulers_and_bad_timings_are_refused() {
        let w = Wrap::try_parse_from(["x"]).unwrap();
        assert!(!w.args.leader_elect);
        assert_eq!(w.args.timings().unwrap(), LeaseTimings::KUBE_SCHEDULER);
        let w = Wrap::try_parse_from(["x", "--leader-elect", "--renew-deadline", "15s"]).unwrap();
        let err = format!("{:#}", w.args.timings().unwrap_err());
        assert!(err.contains("renew deadline"), "{err}");
        let w = Wrap::try_parse_from([
            "x",
            "--lease-duration=30s",
            "--renew-deadline=20s",
            "--retry-period=4s",
            "--lease-name=mine",
            "--lease-namespace=ops",
        ])
        .unwrap();
        assert_eq!(w.args.timings().unwrap().lease_duration, 30_000);
        assert_eq!(w.args.lease_name.as_deref(), Some("mine"));
    }

    #[test]
    fn identity_is_unique_per_process() {
        let id = identity();
        assert!(!id.is_empty());
        if std::env::var("POD_NAME").is_err() {
            assert!(id.ends_with(&format!("_{}", std::process::id())), "{id}");
        }
    }
}

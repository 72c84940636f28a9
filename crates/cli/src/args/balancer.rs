//! The balancer's flag group ([`BalancerArgs`]), shared by `balance` and
//! `scaler --with-balancer`.

use std::collections::BTreeMap;
use std::time::Duration;

use posture_core::balance::{BalanceParams, IdleBaselines};
use posture_core::gpu::GpuSnapshot;
use posture_core::model::Millis;
use posture_gpu::config::parse_duration;
use posture_k8s::balancer::{BalanceMetrics, BalancerConfig, LoopTiming, Scope, run_balancer};
use posture_k8s::lease::LeaderGate;
use posture_k8s::workload::GPU_NODE_LABEL;
use tokio::sync::watch;

use super::lease::{BALANCER_LEASE, Election, LeaderElectionArgs};
use super::{GpuSourceArgs, seed_or_clock};
use crate::admin::{Readiness, Shutdown};

/// Default of `--idle-baseline-query`: the last idle baseline a balancer
/// exported per node within a week (the lowest when several did).
pub const DEFAULT_IDLE_BASELINE_QUERY: &str =
    "min by (node) (last_over_time(balance_node_idle_baseline_percent[7d]))";

/// `--idle-baseline`: one percentage for every node, and/or `node=percent`
/// pairs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IdleBaselineFlag {
    /// The bare number, for nodes not listed.
    pub default: Option<f64>,
    /// `node=percent` pairs.
    pub per_node: BTreeMap<String, f64>,
}

/// Parses `15`, `agx=12,orin=8` or `agx=12,15` (a bare number is the
/// default for nodes not listed). Every value within 0..=100.
pub fn parse_idle_baseline(text: &str) -> Result<IdleBaselineFlag, String> {
    let mut flag = IdleBaselineFlag::default();
    let percent = |v: &str| -> Result<f64, String> {
        let x: f64 = v
            .trim()
            .parse()
            .map_err(|_| format!("{v:?} is not a percentage"))?;
        if (0.0..=100.0).contains(&x) {
            Ok(x)
        } else {
            Err(format!("{x} is outside 0..=100"))
        }
    };
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some((node, v)) if !node.trim().is_empty() => {
                flag.per_node.insert(node.trim().to_owned(), percent(v)?);
            }
            Some(_) => return Err(format!("{part:?}: give node=percent")),
            None if flag.default.is_none() => flag.default = Some(percent(part)?),
            None => return Err("only one bare percentage (the default) is allowed".into()),
        }
    }
    if flag.default.is_none() && flag.per_node.is_empty() {
        return Err("give a percentage or node=percent pairs".into());
    }
    Ok(flag)
}

/// Idle baselines from the answer of `--idle-baseline-query`: one per
/// series with a `node` label and a value within 0..=100 (the lowest when
/// a node has several).
pub fn idle_from_series(series: &[posture_gpu::prom::Series]) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for s in series {
        let Some(node) = s.labels.get("node") else {
            continue;
        };
        if !(0.0..=100.0).contains(&s.value) {
            continue;
        }
        let e = out.entry(node.clone()).or_insert(s.value);
        *e = e.min(s.value);
    }
    out
}

/// Balancer settings, shared by `balance` and `scaler --with-balancer`.
#[derive(Clone, Debug, clap::Args)]
pub struct BalancerArgs {
    /// GPU usage threshold in percent: a node whose windowed average is above
    /// it is overloaded; a destination must stay at or under it. The scaler
    /// uses the same threshold for IsActive.
    #[arg(long, env = "GPU_THRESHOLD", default_value_t = posture_core::balance::DEFAULT_THRESHOLD)]
    pub threshold: f64,
    /// How often the current GPU usage is sampled into the window.
    #[arg(long, env = "BALANCE_SAMPLE_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub sample_interval: Duration,
    /// Observation window: per-node usage is averaged over it, and one
    /// balancing decision is made per window.
    #[arg(long, env = "BALANCE_WINDOW", default_value = "30s", value_parser = parse_duration)]
    pub window: Duration,
    /// A workload moved less than this long ago is not moved again (read back
    /// from the `posture-farm.io/moved-at` annotation after a restart).
    #[arg(long, env = "BALANCE_COOLDOWN", default_value = "5m", value_parser = parse_duration)]
    pub cooldown: Duration,
    /// Seed of the random tie-break between equally loaded destinations
    /// (default: drawn at start and logged, so a run can be replayed).
    #[arg(long, env = "BALANCE_SEED")]
    pub seed: Option<u64>,
    /// Print the moves that would be made; change nothing in the cluster.
    #[arg(long, env = "BALANCE_DRY_RUN")]
    pub dry_run: bool,
    /// Stop after the first decision (with --dry-run: a one-shot report).
    #[arg(long, env = "BALANCE_ONCE")]
    pub once: bool,
    /// Namespace of the posture workloads (ScaledJobs, Jobs, pods).
    #[arg(
        long = "namespace",
        env = "POSTURE_NAMESPACE",
        default_value = "default"
    )]
    pub namespace: String,
    /// Label selector of posture workloads; ScaledJobs, Jobs and their pods
    /// must all carry it.
    #[arg(
        long = "selector",
        env = "BALANCE_SELECTOR",
        default_value = "app=posture"
    )]
    pub selector: String,
    /// Node label the written node affinity matches (`<key>=<node name>`, as
    /// set by `posture-farm label-nodes`).
    #[arg(long, env = "BALANCE_AFFINITY_LABEL", default_value = GPU_NODE_LABEL)]
    pub affinity_label: String,
    /// GPU load (percentage points) one analyzer is assumed to add; default:
    /// the node's average above its idle baseline, split evenly over the
    /// analyzers on it (see --idle-baseline).
    #[arg(long, env = "BALANCE_WORKLOAD_LOAD")]
    pub workload_load: Option<f64>,
    /// GPU usage a node shows with no analyzer on it: `15` for every node,
    /// `agx=12,orin=8` per node, or both (`agx=12,15`). Default: learned
    /// from windows in which a node ran no posture workload (and restored
    /// by --idle-baseline-query); a node with none known is moved by the
    /// seed's rule (to the lowest-usage node at or under the threshold).
    #[arg(long, env = "BALANCE_IDLE_BASELINE", value_parser = parse_idle_baseline)]
    pub idle_baseline: Option<IdleBaselineFlag>,
    /// PromQL giving learned idle baselines back at start, one series per
    /// node labelled `node` (by default what a balancer exported); empty:
    /// do not restore.
    #[arg(long, env = "BALANCE_IDLE_BASELINE_QUERY", default_value = DEFAULT_IDLE_BASELINE_QUERY)]
    pub idle_baseline_query: String,
    /// A move counts on its destination (and its relief on its source)
    /// until its workload has run ready there for a whole window, or at
    /// most this long.
    #[arg(long, env = "BALANCE_SETTLE_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub settle_timeout: Duration,
}

impl BalancerArgs {
    /// Checks value ranges clap cannot express.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (0.0..=100.0).contains(&self.threshold),
            "--threshold must be within 0..=100, got {}",
            self.threshold
        );
        anyhow::ensure!(
            !self.sample_interval.is_zero(),
            "--sample-interval must be > 0"
        );
        anyhow::ensure!(
            self.window >= self.sample_interval,
            "--window ({:?}) must be at least --sample-interval ({:?})",
            self.window,
            self.sample_interval
        );
        if let Some(l) = self.workload_load {
            anyhow::ensure!(
                (0.0..=100.0).contains(&l),
                "--workload-load must be within 0..=100, got {l}"
            );
        }
        Ok(())
    }

    /// The library's balancer configuration, with `seed` drawn by the
    /// caller when `--seed` was not given (see [`seed_or_clock`]).
    pub fn config(&self, seed: u64) -> BalancerConfig {
        let ms = |d: Duration| Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX);
        let fixed = self.idle_baseline.clone().unwrap_or_default();
        BalancerConfig {
            params: BalanceParams {
                threshold: self.threshold,
                cooldown: ms(self.cooldown),
                window: ms(self.window),
                settle_timeout: ms(self.settle_timeout),
            },
            idle: IdleBaselines {
                fixed_default: fixed.default,
                fixed: fixed.per_node,
                learned: BTreeMap::new(),
            },
            seed,
            scope: Scope {
                namespace: self.namespace.clone(),
                selector: self.selector.clone(),
            },
            affinity_label: self.affinity_label.clone(),
            workload_load: self.workload_load,
            dry_run: self.dry_run,
            timing: LoopTiming {
                sample_interval: self.sample_interval,
                window: self.window,
                once: self.once,
            },
            instance: std::env::var("POD_NAME").ok(),
            leader: LeaderGate::unelected(),
        }
    }

    /// Starts leader election on the balancer's Lease (`--leader-elect`),
    /// except for `--dry-run` and `--once`, which change nothing or stop at
    /// once and so never compete with the acting balancer.
    pub fn election(
        &self,
        leader: &LeaderElectionArgs,
        client: &kube::Client,
        registry: &mut prometheus_client::registry::Registry,
        shutdown: Shutdown,
    ) -> anyhow::Result<Election> {
        if leader.leader_elect && (self.dry_run || self.once) {
            tracing::info!("--dry-run/--once: not taking part in leader election");
            return Ok(Election::unelected());
        }
        leader.start(client, BALANCER_LEASE, "balancer", registry, shutdown)
    }

    /// Learned idle baselines restored from Prometheus with
    /// `--idle-baseline-query` (empty when it is empty or fails: the
    /// balancer then learns them anew, and says so).
    pub async fn restore_idle(&self, source: &GpuSourceArgs) -> BTreeMap<String, f64> {
        let query = self.idle_baseline_query.trim();
        if query.is_empty() {
            return BTreeMap::new();
        }
        let answer =
            match posture_gpu::PromClient::new(&source.prometheus_url, source.gpu_query_timeout) {
                Ok(client) => client.query(query).await,
                Err(err) => Err(err),
            };
        match answer {
            Ok(series) => {
                let restored = idle_from_series(&series);
                tracing::info!(?restored, "idle baselines restored from Prometheus");
                restored
            }
            Err(err) => {
                tracing::warn!(
                    error = posture_core::error_chain(&err),
                    "could not restore idle baselines from Prometheus; learning them anew"
                );
                BTreeMap::new()
            }
        }
    }

    /// Runs the balancer until `shutdown` (or one decision with `--once`):
    /// validates the flags, draws a seed unless `--seed`, restores learned
    /// idle baselines from Prometheus (`source`), then runs
    /// [`posture_k8s::balancer::run_balancer`] on `usage`, deciding and
    /// moving only while the leadership `ready` reports says this replica
    /// leads (always, without leader election).
    pub async fn run(
        &self,
        client: kube::Client,
        source: &GpuSourceArgs,
        usage: watch::Receiver<GpuSnapshot>,
        metrics: BalanceMetrics,
        ready: Readiness,
        shutdown: Shutdown,
    ) -> anyhow::Result<()> {
        self.validate()?;
        let mut cfg = BalancerConfig {
            leader: ready.leadership(),
            ..self.config(seed_or_clock(self.seed))
        };
        cfg.idle.restore(&self.restore_idle(source).await);
        run_balancer(
            client,
            cfg,
            usage,
            metrics,
            posture_gpu::now_millis,
            move || ready.set(true),
            shutdown.wait(),
        )
        .await;
        Ok(())
    }
}

#[cfg(test)]
mod prometheus_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: BalancerArgs,
    }

    #[test]
    fn idle_baseline_flag_forms() {
        let f = parse_idle_baseline("15").unwrap();
        assert_eq!((f.default, f.per_node.len()), (Some(15.0), 0));
        let f = parse_idle_baseline("agx=12, orin=8.5,20").unwrap();
        assert_eq!(f.default, Some(20.0));
        assert_eq!(f.per_node["orin"], 8.5);
        for bad in ["", "x", "agx=120", "=5", "5,6", "agx=-1"] {
            assert!(parse_idle_baseline(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn flags_reach_the_config() {
        let w = Wrap::try_parse_from([
            "x",
            "--idle-baseline",
            "agx=12,10",
            "--settle-timeout",
            "2m",
            "--window",
            "20s",
        ])
        .unwrap();
        let cfg = w.args.config(1);
        assert_eq!(cfg.params.window, 20_000);
        assert_eq!(cfg.params.settle_timeout, 120_000);
        assert_eq!(cfg.idle.get("agx"), Some(12.0));
        assert_eq!(cfg.idle.get("orin"), Some(10.0));
        let w = Wrap::try_parse_from(["x"]).unwrap();
        assert_eq!(w.args.idle_baseline_query, DEFAULT_IDLE_BASELINE_QUERY);
        assert_eq!(w.args.config(1).idle, IdleBaselines::default());
    }

    #[test]
    fn restored_baselines_come_from_node_labelled_series() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"node":"agx"},"value":[1700000000,"18.5"]},
            {"metric":{"node":"agx"},"value":[1700000000,"17"]},
            {"metric":{"node":"orin"},"value":[1700000000,"NaN"]},
            {"metric":{"instance":"x"},"value":[1700000000,"3"]}]}}"#;
        let series = posture_gpu::prom::parse_response("q", "u", 200, body).unwrap();
        assert_eq!(
            idle_from_series(&series),
            BTreeMap::from([("agx".to_owned(), 17.0)])
        );
    }
}

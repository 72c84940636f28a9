//! `posture-farm gpu`: per-node GPU usage as the scheduler sees it (usage,
//! sample age, ok/stale/missing), once or `--watch`, as a table or JSON.
//!
//! Also home of [`GpuSourceArgs`], the Prometheus usage-source flags that the
//! scheduler, `balance`, `scaler` and `place` flatten, so every component reads
//! GPU usage the same way.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use posture_core::gpu::{GpuSnapshot, UsageState};
use posture_gpu::config::{
    DEFAULT_DISCOVER_QUERY, DEFAULT_NODE_LABEL, DEFAULT_QUERY_TEMPLATE, Discover, parse_duration,
};
use posture_gpu::{
    GpuConfig, GpuSource, PromClient, ResolvedConfig, SourceMetrics, SourceSettings,
};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

/// Where GPU usage comes from: Prometheus address, per-node queries, polling
/// and staleness. Flatten it into any subcommand that needs GPU usage.
#[derive(clap::Args, Clone, Debug)]
pub struct GpuSourceArgs {
    /// Prometheus base URL (a path prefix such as http://host/prometheus is kept).
    #[arg(long, env = "PROMETHEUS_URL", default_value = "http://localhost:9090")]
    pub prometheus_url: String,
    /// YAML file mapping nodes to PromQL (`query:`, or `instance:` + `metric:`),
    /// with `default_query` and `discover` keys; see the README.
    #[arg(long, env = "GPU_CONFIG")]
    pub gpu_config: Option<PathBuf>,
    /// PromQL template for nodes without their own query; `{node}` is replaced
    /// by the node name. The config file's `default_query` wins.
    #[arg(long, env = "GPU_QUERY_TEMPLATE", default_value = DEFAULT_QUERY_TEMPLATE)]
    pub gpu_query_template: String,
    /// Extra GPU nodes (comma-separated) read with the template.
    #[arg(long, env = "GPU_NODES", value_delimiter = ',')]
    pub gpu_nodes: Vec<String>,
    /// Query whose series name GPU nodes (by --gpu-node-label); empty turns
    /// discovery off. The config file's `discover` key wins.
    #[arg(long, env = "GPU_DISCOVER_QUERY", default_value = DEFAULT_DISCOVER_QUERY)]
    pub gpu_discover_query: String,
    /// Label of the discovery query's series that holds the node name.
    #[arg(long, env = "GPU_NODE_LABEL", default_value = DEFAULT_NODE_LABEL)]
    pub gpu_node_label: String,
    /// How often Prometheus is polled (e.g. 5s, 500ms).
    #[arg(long, env = "GPU_POLL_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub gpu_poll_interval: Duration,
    /// A sample older than this is stale: the node is not eligible for
    /// GPU-aware placement until a fresh one arrives.
    #[arg(long, env = "GPU_STALE_AFTER", default_value = "30s", value_parser = parse_duration)]
    pub gpu_stale_after: Duration,
    /// Timeout of one Prometheus query.
    #[arg(long, env = "GPU_QUERY_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub gpu_query_timeout: Duration,
}

impl GpuSourceArgs {
    /// The per-node queries these flags (and the config file) describe.
    pub fn resolve(&self) -> anyhow::Result<ResolvedConfig> {
        let file = match &self.gpu_config {
            Some(path) => GpuConfig::load(path)?,
            None => GpuConfig::default(),
        };
        let discover = (!self.gpu_discover_query.trim().is_empty()).then(|| Discover {
            query: self.gpu_discover_query.clone(),
            node_label: self.gpu_node_label.clone(),
        });
        let resolved = file.resolve(&self.gpu_query_template, discover, &self.gpu_nodes)?;
        if resolved.nodes.is_empty() && resolved.discover.is_none() {
            anyhow::bail!(
                "no GPU node to read: list nodes in --gpu-config or --gpu-nodes, or keep discovery on"
            );
        }
        Ok(resolved)
    }

    /// A source built from these flags, without metrics (one-shot use).
    pub fn build(&self) -> anyhow::Result<GpuSource> {
        let client = PromClient::new(&self.prometheus_url, self.gpu_query_timeout)
            .context("configuring the Prometheus client")?;
        Ok(GpuSource::new(
            client,
            self.resolve()?,
            SourceSettings {
                poll_interval: self.gpu_poll_interval,
                stale_after: self.gpu_stale_after,
            },
        ))
    }

    /// Starts polling in a background task (metrics `gpu_*` registered in
    /// `registry`) and returns the receiver of its snapshots. The first
    /// snapshot is empty until the first poll completes; wait with
    /// `rx.changed().await` if you need data. The task stops when every
    /// receiver is dropped. Must be called inside a Tokio runtime.
    pub fn spawn(&self, registry: &mut Registry) -> anyhow::Result<watch::Receiver<GpuSnapshot>> {
        let metrics = SourceMetrics::register(registry);
        let source = self.build()?.with_metrics(metrics);
        tracing::info!(
            prometheus = %self.prometheus_url,
            interval = ?self.gpu_poll_interval,
            stale_after = ?self.gpu_stale_after,
            "GPU usage source started"
        );
        let (rx, _task) = source.spawn();
        Ok(rx)
    }
}

/// Settings of the `gpu-least-loaded` scheduler profile, for the scheduler
/// subcommand to flatten next to [`GpuSourceArgs`].
// Flattened by the scheduler subcommand once it wires this profile.
#[derive(clap::Args, Clone, Debug)]
pub struct GpuProfileArgs {
    /// Nodes whose measured GPU usage is at or above this percentage are not eligible.
    #[arg(long, env = "GPU_THRESHOLD", default_value_t = 60.0)]
    pub gpu_threshold: f64,
    /// Estimated GPU load (percent) of a pod just placed, counted on its node
    /// until a sample taken after the bind arrives (in-flight compensation).
    #[arg(long, env = "GPU_INFLIGHT_LOAD", default_value_t = 15.0)]
    pub gpu_inflight_load: f64,
    /// The longest an in-flight estimate counts without a newer sample.
    #[arg(long, env = "GPU_INFLIGHT_WINDOW", default_value = "2m", value_parser = parse_duration)]
    pub gpu_inflight_window: Duration,
    /// Usages within this many percentage points of the best are ties (the
    /// node chosen last wins them, else a seeded random one).
    #[arg(long, env = "GPU_TIE_TOLERANCE", default_value_t = 0.5)]
    pub gpu_tie_tolerance: f64,
    /// ConfigMap remembering the node chosen last across restarts.
    #[arg(long, env = "GPU_STATE_CONFIGMAP", default_value = posture_k8s::gpu_state::DEFAULT_CONFIGMAP)]
    pub gpu_state_configmap: String,
    /// Namespace of that ConfigMap; default: the client's (in a pod, the
    /// scheduler's own namespace).
    #[arg(long, env = "GPU_STATE_NAMESPACE")]
    pub gpu_state_namespace: Option<String>,
}

impl GpuProfileArgs {
    /// The profile configuration these flags describe, with the scheduler's
    /// tie-break `seed`; checks ranges.
    pub fn config(
        &self,
        seed: u64,
    ) -> anyhow::Result<posture_core::policy::gpu_least_loaded::GpuLeastLoadedConfig> {
        for (flag, v) in [
            ("--gpu-threshold", self.gpu_threshold),
            ("--gpu-inflight-load", self.gpu_inflight_load),
            ("--gpu-tie-tolerance", self.gpu_tie_tolerance),
        ] {
            if !(0.0..=100.0).contains(&v) {
                anyhow::bail!("{flag} must be within 0-100, got {v}");
            }
        }
        Ok(
            posture_core::policy::gpu_least_loaded::GpuLeastLoadedConfig {
                threshold_percent: self.gpu_threshold,
                inflight_load_percent: self.gpu_inflight_load,
                inflight_window_ms: i64::try_from(self.gpu_inflight_window.as_millis())
                    .unwrap_or(i64::MAX),
                tie_tolerance_percent: self.gpu_tie_tolerance,
                seed,
            },
        )
    }
}

/// Output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns.
    #[default]
    Table,
    /// One JSON object per snapshot (one line each with --watch).
    Json,
}

/// Flags of `posture-farm gpu`. Without `--watch` the exit status is 1 when
/// no node has a fresh reading (Prometheus down, nothing reported).
#[derive(Debug, clap::Args)]
pub struct GpuArgs {
    #[command(flatten)]
    pub source: GpuSourceArgs,
    /// Keep polling and print every --gpu-poll-interval until interrupted.
    #[arg(long, env = "GPU_WATCH")]
    pub watch: bool,
    /// table or json.
    #[arg(long, value_enum, default_value_t, env = "GPU_OUTPUT")]
    pub output: Output,
}

/// Runs the subcommand.
pub async fn run(args: GpuArgs) -> anyhow::Result<()> {
    let mut source = args.source.build()?;
    let mut tick = tokio::time::interval(args.source.gpu_poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        let snapshot = source.poll(posture_gpu::now_millis()).await;
        let text = match args.output {
            Output::Table => render_table(snapshot, args.source.prometheus_url.as_str()),
            Output::Json => format!("{}\n", serde_json::to_string(&to_json(snapshot))?),
        };
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()?;
        if !args.watch {
            if snapshot.fresh().next().is_none() {
                anyhow::bail!("no node has a fresh GPU usage reading");
            }
            return Ok(());
        }
    }
}

/// A snapshot as JSON: `{"taken_at_ms", "nodes": [{node, usage_percent,
/// sampled_at_ms, age_seconds, state, error}]}`.
pub fn to_json(s: &GpuSnapshot) -> serde_json::Value {
    let nodes: Vec<serde_json::Value> = s
        .nodes
        .iter()
        .map(|(name, u)| {
            serde_json::json!({
                "node": name,
                "usage_percent": u.sample.map(|x| x.usage_percent),
                "sampled_at_ms": u.sample.map(|x| x.sampled_at),
                "age_seconds": u.sample.map(|x| (s.taken_at - x.sampled_at) as f64 / 1000.0),
                "state": u.state.as_str(),
                "error": u.error,
            })
        })
        .collect();
    serde_json::json!({ "taken_at_ms": s.taken_at, "nodes": nodes })
}

/// A snapshot as an aligned table: NODE, USAGE, AGE, STATE, ERROR.
pub fn render_table(s: &GpuSnapshot, prometheus: &str) -> String {
    if s.nodes.is_empty() {
        return format!(
            "no GPU nodes found in Prometheus at {prometheus} (check --gpu-config, --gpu-nodes, --gpu-discover-query)\n"
        );
    }
    let rows: Vec<[String; 5]> = s
        .nodes
        .iter()
        .map(|(name, u)| {
            [
                name.clone(),
                u.sample
                    .map(|x| format!("{:.1}%", x.usage_percent))
                    .unwrap_or_else(|| "-".into()),
                u.sample
                    .map(|x| format!("{:.1}s", (s.taken_at - x.sampled_at) as f64 / 1000.0))
                    .unwrap_or_else(|| "-".into()),
                u.state.as_str().to_string(),
                u.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let header = ["NODE", "USAGE", "AGE", "STATE", "ERROR"];
    let mut width = header.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == 4 {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        format!("{}\n", l.trim_end())
    };
    let mut out = line(header);
    for r in &rows {
        out.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
    }
    let ok = s
        .nodes
        .values()
        .filter(|u| u.state == UsageState::Ok)
        .count();
    out.push_str(&format!(
        "{ok}/{} node(s) eligible for GPU-aware placement (stale and missing nodes are skipped)\n",
        s.nodes.len()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use posture_core::gpu::{GpuSample, NodeUsage};

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: GpuArgs,
    }

    #[test]
    fn flags_and_defaults() {
        let t = T::parse_from([
            "t",
            "--gpu-nodes",
            "a,b",
            "--gpu-stale-after",
            "10s",
            "--output",
            "json",
        ]);
        assert_eq!(t.a.source.prometheus_url, "http://localhost:9090");
        assert_eq!(t.a.source.gpu_nodes, ["a", "b"]);
        assert_eq!(t.a.source.gpu_stale_after, Duration::from_secs(10));
        assert_eq!(t.a.output, Output::Json);
        let r = t.a.source.resolve().unwrap();
        assert_eq!(r.nodes.len(), 2);
        assert!(r.discover.is_some());
        let t = T::parse_from(["t", "--gpu-discover-query", ""]);
        assert!(t.a.source.resolve().is_err(), "nothing to read is an error");
    }

    #[test]
    fn profile_flags() {
        #[derive(Parser)]
        struct P {
            #[command(flatten)]
            p: GpuProfileArgs,
        }
        let p = P::parse_from(["t", "--gpu-inflight-window", "30s"]);
        let c = p.p.config(9).unwrap();
        assert_eq!(c.threshold_percent, 60.0);
        assert_eq!(c.inflight_load_percent, 15.0);
        assert_eq!(c.inflight_window_ms, 30_000);
        assert_eq!(c.seed, 9);
        assert_eq!(p.p.gpu_state_configmap, "posture-farm-gpu-state");
        let p = P::parse_from(["t", "--gpu-threshold", "120"]);
        assert!(p.p.config(0).is_err());
    }

    #[test]
    fn table_shows_usage_age_and_state() {
        let mut s = GpuSnapshot {
            taken_at: 10_000,
            ..Default::default()
        };
        s.nodes.insert(
            "agx".into(),
            NodeUsage {
                sample: Some(GpuSample {
                    usage_percent: 20.0,
                    sampled_at: 9_000,
                }),
                state: UsageState::Ok,
                error: None,
            },
        );
        s.nodes.insert(
            "orin".into(),
            NodeUsage {
                sample: None,
                state: UsageState::Missing,
                error: Some("no sample".into()),
            },
        );
        let t = render_table(&s, "http://p");
        assert_eq!(
            t,
            "NODE  USAGE  AGE   STATE    ERROR\n\
             agx   20.0%  1.0s  ok\n\
             orin  -      -     missing  no sample\n\
             1/2 node(s) eligible for GPU-aware placement (stale and missing nodes are skipped)\n"
        );
        let j = to_json(&s);
        assert_eq!(j["nodes"][0]["usage_percent"], 20.0);
        assert_eq!(j["nodes"][1]["state"], "missing");
    }
}

//! `posture-farm gpu`: per-node GPU usage as the scheduler sees it (usage,
//! sample age, ok/stale/missing), once or `--watch`, as a table or JSON.
//!

use std::io::Write as _;

use posture_gpu::display::{render_table, to_json};

use crate::args::GpuSourceArgs;

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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::time::Duration;

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
}

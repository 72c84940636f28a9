//! `posture-farm demo preemption`: shows the priority scheduler preempting
//! and placing a gang, narrated from its Events, on any cluster running the
//! priority mode (`posture-farm up --mode priority`). The Kubernetes I/O is
//! `posture_k8s::demo`; this module parses flags and wires Ctrl-C.

use std::time::Duration;

use anyhow::Context as _;
use posture_gpu::config::parse_duration;
use posture_k8s::demo::script::DemoConfig;
use posture_k8s::demo::{DemoError, plan_nodes, pod_events, run_preemption};

use crate::admin::Shutdown;

/// The demos.
#[derive(Debug, clap::Subcommand)]
pub enum DemoCommand {
    /// Low-priority analyzers fill the nodes, a high-priority one preempts
    /// one of them, a gang waits until it can be placed whole; narrated
    /// live from the scheduler's Events, then cleaned up (also on Ctrl-C).
    Preemption(PreemptionArgs),
}

/// Flags of `demo preemption`.
#[derive(Debug, clap::Args)]
pub struct PreemptionArgs {
    /// Namespace for the demo pods: the priority scheduler's (`posture` in
    /// the priority mode).
    #[arg(long, env = "DEMO_NAMESPACE", default_value = "posture")]
    pub namespace: String,
    /// `spec.schedulerName` of the priority scheduler.
    #[arg(long, env = "DEMO_SCHEDULER_NAME", default_value = "posture-priority")]
    pub scheduler_name: String,
    /// Image of the demo pods (they only need to start).
    #[arg(long, env = "DEMO_IMAGE", default_value = "registry.k8s.io/pause:3.10")]
    pub image: String,
    /// Number of nodes the demo may fill (default: the Ready, schedulable
    /// nodes without a NoSchedule/NoExecute taint that run no other pod of
    /// the scheduler).
    #[arg(long, env = "DEMO_NODES")]
    pub nodes: Option<usize>,
    /// How long one step may take before the demo gives up and cleans up.
    #[arg(long, env = "DEMO_STEP_TIMEOUT", default_value = "90s", value_parser = parse_duration)]
    pub step_timeout: Duration,
}

/// Runs a demo.
pub async fn run(command: DemoCommand) -> anyhow::Result<()> {
    let DemoCommand::Preemption(args) = command;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let nodes = match args.nodes {
        Some(n) => n,
        None => {
            let plan = plan_nodes(&client, &args.namespace, &args.scheduler_name).await?;
            println!("Free nodes: {}", plan.free.join(", "));
            for (node, pod) in &plan.held {
                println!("Held: {node} runs {pod} (never preempted by the demo)");
            }
            if !plan.competing.is_empty() {
                println!(
                    "Warning: {} pending pod(s) of {} may take the nodes the demo frees: {}",
                    plan.competing.len(),
                    args.scheduler_name,
                    plan.competing.join(", ")
                );
            }
            if plan.free.len() < 2 {
                return Err(DemoError::TooFewNodes {
                    free: plan.free,
                    held: plan.held,
                }
                .into());
            }
            plan.free.len()
        }
    };
    anyhow::ensure!(nodes >= 2, "--nodes must be at least 2");
    let cfg = DemoConfig {
        namespace: args.namespace.clone(),
        scheduler_name: args.scheduler_name,
        image: args.image,
        nodes,
        step_timeout: args.step_timeout,
    };
    let events = Box::pin(pod_events(client.clone(), &args.namespace));
    let shutdown = Shutdown::on_signals();
    run_preemption(
        client,
        cfg,
        events,
        |line| println!("{line}"),
        shutdown.wait(),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(subcommand)]
        demo: DemoCommand,
    }

    #[test]
    fn defaults() {
        let w = Wrap::try_parse_from(["x", "preemption"]).unwrap();
        let DemoCommand::Preemption(a) = w.demo;
        assert_eq!(a.namespace, "posture");
        assert_eq!(a.scheduler_name, "posture-priority");
        assert_eq!(a.step_timeout, Duration::from_secs(90));
        assert_eq!(a.nodes, None);
        let w = Wrap::try_parse_from(["x", "preemption", "--nodes", "3", "--step-timeout", "2m"])
            .unwrap();
        let DemoCommand::Preemption(a) = w.demo;
        assert_eq!(
            (a.nodes, a.step_timeout),
            (Some(3), Duration::from_secs(120))
        );
    }
}

//! `posture-farm status`: where the posture workloads run. Pods per node, the
//! placement mode, GPU usage per node from Prometheus (when reachable; the
//! same `--prometheus-url`/`--gpu-*` flags as `posture-farm gpu`), and every
//! pending pod with the reason from its latest FailedScheduling Event.

use std::fmt::Write as _;

use anyhow::Context as _;
use posture_core::gpu::GpuSnapshot;
use posture_k8s::ops::status::{StatusReport, gather, summarise};

use super::gpu::GpuSourceArgs;

/// Flags of `posture-farm status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Do not query Prometheus for GPU usage.
    #[arg(long, env = "STATUS_NO_GPU")]
    pub no_gpu: bool,
    #[command(flatten)]
    pub gpu: GpuSourceArgs,
}

/// Runs the subcommand.
pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (KUBECONFIG or in-cluster config)")?;
    let inputs = gather(&client).await.context("reading cluster state")?;
    let gpu = if args.no_gpu {
        None
    } else {
        gpu_snapshot(&args.gpu).await
    };
    let report = summarise(&inputs, gpu.as_ref());
    print!("{}", render(&report, gpu.is_some()));
    Ok(())
}

/// One GPU reading of every node, or `None` (with a warning) when Prometheus
/// is not configured or not reachable: `status` still shows placement.
pub(crate) async fn gpu_snapshot(args: &GpuSourceArgs) -> Option<GpuSnapshot> {
    let mut source = match args.build() {
        Ok(s) => s,
        Err(err) => {
            tracing::warn!(error = format!("{err:#}"), "GPU usage not shown");
            return None;
        }
    };
    let snapshot = source.poll(posture_gpu::now_millis()).await.clone();
    if snapshot.nodes.values().all(|u| u.sample.is_none()) {
        tracing::warn!(prometheus = %args.prometheus_url, "no GPU reading from Prometheus; GPU usage not shown");
        return None;
    }
    Some(snapshot)
}

/// Left-aligned columns separated by two spaces.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", parts.join("  ").trim_end());
    };
    line(header.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// The report as text: summary line, nodes, pods, pending reasons.
pub(crate) fn render(report: &StatusReport, with_gpu: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "mode: {}   jobs: {}   scaledjobs: {}   pods: {}   pending: {}\n",
        report.mode,
        report.jobs,
        report.scaled_jobs,
        report.pods.len(),
        report.pending().count()
    );
    let mut header = vec!["NODE", "PODS", "GPU-LABEL", "MASTER-TAINT"];
    if with_gpu {
        header.push("GPU");
    }
    let nodes: Vec<Vec<String>> = report
        .nodes
        .iter()
        .map(|n| {
            let mut row = vec![
                n.name.clone(),
                n.pods.to_string(),
                if n.gpu_labelled { "yes" } else { "-" }.to_string(),
                if n.tainted { "yes" } else { "-" }.to_string(),
            ];
            if with_gpu {
                row.push(match n.gpu_percent {
                    Some(p) => format!("{p:.1}%"),
                    None => n.gpu_state.unwrap_or("-").to_string(),
                });
            }
            row
        })
        .collect();
    out.push_str(&table(&header, &nodes));
    out.push('\n');
    if report.pods.is_empty() {
        out.push_str("no pods created by posture-farm\n");
        return out;
    }
    let pods: Vec<Vec<String>> = report
        .pods
        .iter()
        .map(|p| {
            vec![
                format!("{}/{}", p.namespace, p.name),
                p.role.to_string(),
                p.phase.clone(),
                p.node.clone().unwrap_or_else(|| "<none>".into()),
            ]
        })
        .collect();
    out.push_str(&table(&["POD", "ROLE", "PHASE", "NODE"], &pods));
    let pending: Vec<_> = report.pending().collect();
    if !pending.is_empty() {
        out.push_str("\npending pods:\n");
        for p in pending {
            let _ = writeln!(
                out,
                "  {}/{}: {}",
                p.namespace,
                p.name,
                p.pending_reason
                    .as_deref()
                    .unwrap_or("no FailedScheduling event yet (is the scheduler running?)")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use posture_k8s::ops::status::{NodeRow, PodRow};

    #[test]
    fn renders_nodes_pods_and_pending_reasons() {
        let report = StatusReport {
            mode: "round-robin",
            jobs: 2,
            scaled_jobs: 0,
            nodes: vec![NodeRow {
                name: "orin".into(),
                pods: 1,
                gpu_percent: Some(12.5),
                gpu_state: Some("ok"),
                tainted: false,
                gpu_labelled: true,
            }],
            pods: vec![
                PodRow {
                    namespace: "default".into(),
                    name: "posture-pi1-x".into(),
                    node: Some("orin".into()),
                    phase: "Running".into(),
                    role: "analyzer",
                    pending_reason: None,
                },
                PodRow {
                    namespace: "default".into(),
                    name: "posture-pi1-1-y".into(),
                    node: None,
                    phase: "Pending".into(),
                    role: "analyzer",
                    pending_reason: Some("0/1 nodes are available".into()),
                },
            ],
        };
        let text = render(&report, true);
        assert!(text.starts_with("mode: round-robin   jobs: 2"), "{text}");
        assert!(
            text.contains("orin  1     yes        -             12.5%"),
            "{text}"
        );
        assert!(
            text.contains("default/posture-pi1-x    analyzer  Running  orin"),
            "{text}"
        );
        assert!(
            text.contains("default/posture-pi1-1-y: 0/1 nodes are available"),
            "{text}"
        );
    }
}

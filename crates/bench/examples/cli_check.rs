//! Compile check of `cli/scheduler.rs` (the `posture-farm bench scheduler`
//! module, parked here until the CLI depends on `posture-bench`); it runs the
//! same benchmark: `cargo run --release -p posture-bench --example cli_check`.

#[path = "../cli/scheduler.rs"]
mod scheduler;
#[derive(clap::Parser)]
struct A {
    #[command(flatten)]
    a: scheduler::BenchSchedulerArgs,
}
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = <A as clap::Parser>::parse();
    scheduler::run(a.a).await
}

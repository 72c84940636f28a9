//! Shared flag groups: every `cmd/*` module depends on this module and the
//! library crates only, never on another subcommand.
//!
//! ```text
//!  gpu::GpuSourceArgs ──► gpu · scheduler · place · label-nodes · balance · scaler · up · status
//!  farm::farm_snapshot ─► up · status (the cluster's GPU config and Prometheus)
//!  gpu::GpuProfileArgs ─► scheduler (gpu-least-loaded)
//!  balancer::BalancerArgs ► balance · scaler --with-balancer
//!  lease::LeaderElectionArgs ► scheduler · balance · scaler --with-balancer (one replica acts)
//!  analyzer::MqttArgs ───► analyze · publish
//!  analyzer::PipelineArgs ► analyze · local (its database flags: dashboard::DbArgs)
//!  dashboard::DbArgs, ViewArgs ► dashboard · report; start_local ► local
//! ```

mod analyzer;
mod balancer;
mod dashboard;
mod farm;
mod gpu;
mod lease;

pub use analyzer::{
    MqttArgs, PipelineArgs, ThresholdArgs, load_model, print_locations, summary_line,
};
pub use balancer::BalancerArgs;
pub use dashboard::{DbArgs, ViewArgs, display_addr, start_local};
pub use farm::{LOCAL_PROMETHEUS, farm_snapshot};
pub use gpu::{GpuProfileArgs, GpuSourceArgs};
pub use lease::LeaderElectionArgs;

/// `seed`, or one drawn from the clock when none was given (`--seed`
/// unset): the edge may draw entropy, the policy may not. Callers log the
/// seed, so a run can be replayed with `--seed`.
pub fn seed_or_clock(seed: Option<u64>) -> u64 {
    seed.unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        // Truncation is fine: any 64 bits of the clock make a usable seed.
        (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
    })
}

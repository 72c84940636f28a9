//! Criterion benchmarks of scheduling decisions at the scale: a
//! 5,000-node snapshot with 10,000 pending pods of mixed priorities and
//! gangs. Run with `cargo bench -p posture-bench`.
//!
//! - `round_robin/decision/5000_nodes`: one round-robin decision.
//! - `priority/bind/5000_nodes`: one pod onto a free node (free-node index).
//! - `priority/preempt/5000_full_nodes`: every node taken by low-priority
//!   pods; a critical pod picks its victim (victim index).
//! - `priority/unschedulable/5000_full_nodes`: nothing fits, nothing may be
//!   evicted: the failure path with its kube-scheduler style message.
//! - `priority/gang8/5000_nodes`: a gang of eight placed all-or-nothing.
//! - `full_run/*`: every pending pod of the snapshot scheduled through the
//!   queue, as `posture-farm bench scheduler` does.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic the test

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use posture_bench::{BenchProfile, SyntheticSpec, run_scheduler_bench, synthetic_cluster};
use posture_core::policy::RoundRobin;
use posture_core::policy::priority::{CapacityMode, PriorityConfig, PriorityProfile};
use posture_core::{PodInfo, Profile, SchedulingContext};

fn ctx() -> SchedulingContext<'static> {
    SchedulingContext {
        now: posture_bench::BENCH_NOW,
        gpu: None,
    }
}

fn decisions(c: &mut Criterion) {
    let world = synthetic_cluster(&SyntheticSpec::default());
    let cluster = &world.cluster;
    let single: &PodInfo = world
        .pending
        .iter()
        .filter_map(|k| cluster.pod(k))
        .find(|p| p.group.is_none())
        .expect("the snapshot has single pods");
    let ctx = ctx();

    let mut rr = RoundRobin::new(vec![]);
    c.bench_function("round_robin/decision/5000_nodes", |b| {
        b.iter(|| black_box(rr.schedule(cluster, &[single], &ctx)))
    });

    let mut priority = PriorityProfile::new(PriorityConfig::default());
    c.bench_function("priority/bind/5000_nodes", |b| {
        b.iter(|| black_box(priority.schedule(cluster, &[single], &ctx)))
    });

    let gang: Vec<&PodInfo> = {
        let first = world
            .pending
            .iter()
            .filter_map(|k| cluster.pod(k))
            .find(|p| p.group.as_ref().and_then(|g| g.min_member) == Some(8))
            .expect("the snapshot has a gang of eight");
        let name = &first.group.as_ref().expect("group").name;
        cluster.pending_group_members(&first.key.namespace, name)
    };
    c.bench_function("priority/gang8/5000_nodes", |b| {
        b.iter(|| black_box(priority.schedule(cluster, &gang, &ctx)))
    });

    // Every node runs a low-priority pod: only preemption can place anything.
    let full = synthetic_cluster(&SyntheticSpec {
        occupied_fraction: 1.0,
        ..SyntheticSpec::default()
    });
    let pods: Vec<&PodInfo> = full
        .pending
        .iter()
        .filter_map(|k| full.cluster.pod(k))
        .filter(|p| p.group.is_none())
        .collect();
    let critical = pods
        .iter()
        .find(|p| p.priority == 1000)
        .expect("a critical pod");
    let lowest = pods
        .iter()
        .find(|p| p.priority == 0)
        .expect("a priority-0 pod");
    c.bench_function("priority/preempt/5000_full_nodes", |b| {
        b.iter(|| black_box(priority.schedule(&full.cluster, &[critical], &ctx)))
    });
    c.bench_function("priority/unschedulable/5000_full_nodes", |b| {
        b.iter(|| black_box(priority.schedule(&full.cluster, &[lowest], &ctx)))
    });
}

fn full_runs(c: &mut Criterion) {
    let world = synthetic_cluster(&SyntheticSpec::default());
    let mut group = c.benchmark_group("full_run");
    group.sample_size(10);
    for profile in [
        BenchProfile::Priority(CapacityMode::OnePerNode),
        BenchProfile::Priority(CapacityMode::ResourceFit),
        BenchProfile::RoundRobin,
    ] {
        let name = format!(
            "{}/5000_nodes_10000_pods",
            profile.label().replace([' ', '(', ')'], "")
        );
        group.bench_function(name, |b| {
            b.iter_batched(
                || world.clone(),
                |w| black_box(run_scheduler_bench(w, profile)),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, decisions, full_runs);
criterion_main!(benches);

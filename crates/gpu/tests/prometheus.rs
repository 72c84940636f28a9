//! The usage source against a real Prometheus (Debian `prometheus`) scraping
//! a real `prometheus-node-exporter` whose textfile collector serves the GPU
//! metric files this test writes.
//!
//! Checks: values appear (discovered by label and configured by
//! instance + metric), change, turn stale when their series goes away or is
//! NaN, Prometheus being stopped gives an error and a stale snapshot with the
//! last good values, and the source recovers when Prometheus is back.
//!
//! Both servers come from `posture-testkit`. Without the binaries the test
//! fails when `CI` is set and is skipped otherwise (install: `apt-get
//! install prometheus prometheus-node-exporter`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic the test

use std::time::{Duration, Instant};

use posture_core::gpu::{GpuSnapshot, UsageState};
use posture_gpu::config::{DEFAULT_QUERY_TEMPLATE, default_discover};
use posture_gpu::{GpuConfig, GpuSource, PromClient, SourceSettings};
use posture_testkit::{NodeExporter, Prometheus};
use tokio::sync::watch;

/// Waits until a published snapshot satisfies `ok`, or panics with the last one.
async fn wait_for(
    rx: &mut watch::Receiver<GpuSnapshot>,
    what: &str,
    ok: impl Fn(&GpuSnapshot) -> bool,
) -> GpuSnapshot {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        {
            let s = rx.borrow_and_update();
            if ok(&s) {
                return s.clone();
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
            panic!(
                "timed out waiting for {what}; last snapshot: {:#?}",
                *rx.borrow()
            );
        }
    }
}

/// Runs a burst of ten pods through the `gpu-least-loaded` profile over
/// three Ready nodes with the snapshot's readings.
fn burst_avoids_the_busy_node(s: &GpuSnapshot) {
    use posture_core::policy::gpu_least_loaded::{GpuLeastLoaded, GpuLeastLoadedConfig};
    use posture_core::{Cluster, Decision, NodeInfo, PodInfo, PodKey, Profile, SchedulingContext};

    let mut cluster = Cluster::new();
    for name in ["agx", "orin", "xavier"] {
        cluster.upsert_node(NodeInfo {
            name: name.into(),
            ready: true,
            allocatable: posture_core::model::Resources {
                cpu_millis: 8000,
                memory_bytes: 16 << 30,
                pods: 110,
                ..Default::default()
            },
            ..Default::default()
        });
    }
    let mut profile = GpuLeastLoaded::new(GpuLeastLoadedConfig {
        seed: 42,
        ..Default::default()
    });
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..10 {
        let pod = PodInfo {
            key: PodKey::new("posture", format!("analyzer-{i}")),
            ours: true,
            ..Default::default()
        };
        let ctx = SchedulingContext {
            now: s.taken_at + i,
            gpu: Some(s),
        };
        match profile.schedule(&cluster, &[&pod], &ctx) {
            Decision::Bind(b) => {
                profile.bound(&b[0], ctx.now);
                *counts.entry(b[0].node.clone()).or_default() += 1;
            }
            other => panic!("pod {i} not placed: {other:?}"),
        }
    }
    assert_eq!(
        counts.get("xavier"),
        None,
        "70 % is over the threshold: {counts:?}"
    );
    assert!(
        counts["agx"] >= 4 && counts["orin"] >= 4,
        "a burst spreads: {counts:?}"
    );
}

fn state(s: &GpuSnapshot, node: &str) -> Option<UsageState> {
    s.nodes.get(node).map(|u| u.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_a_real_prometheus_through_outages() {
    let Some(exporter) = NodeExporter::start() else {
        return;
    };
    let exporter_port = exporter.port;
    // agx and xavier are discovered from their `node` label; orin exports a
    // different metric without one and is configured by instance + metric.
    exporter.write(
        "jetson_gpu_usage_percent{node=\"agx\"} 20\n\
         jetson_gpu_usage_percent{node=\"xavier\"} 70\n\
         jetson_orin_gpu_load_percent 35\n",
    );
    let Some(mut prom) = Prometheus::start("node", &[exporter.target()]) else {
        return;
    };

    let config = GpuConfig::parse(
        &format!(
            "nodes:\n  orin: {{ instance: \"127.0.0.1:{exporter_port}\", metric: jetson_orin_gpu_load_percent }}\n"
        ),
        "test",
    )
    .unwrap()
    .resolve(DEFAULT_QUERY_TEMPLATE, default_discover(), &[])
    .unwrap();
    let client = PromClient::new(&prom.url(), Duration::from_secs(2)).unwrap();
    let source = GpuSource::new(
        client,
        config,
        SourceSettings {
            poll_interval: Duration::from_millis(300),
            stale_after: Duration::from_secs(10),
        },
    );
    let (mut rx, _task) = source.spawn();

    // Values appear, with the sample's own recent timestamp.
    let s = wait_for(&mut rx, "three fresh nodes", |s| {
        s.usage("agx") == Some(20.0)
            && s.usage("orin") == Some(35.0)
            && s.usage("xavier") == Some(70.0)
    })
    .await;
    let agx = s.nodes["agx"].sample.unwrap();
    assert!(
        s.taken_at - agx.sampled_at < 5_000,
        "sample time is the scrape's: {agx:?}"
    );

    // The "done" check, from real readings: gpu-least-loaded never
    // binds to the 70 % node and spreads a burst of ten pods.
    burst_avoids_the_busy_node(&s);

    // Values change.
    exporter.write(
        "jetson_gpu_usage_percent{node=\"agx\"} 45\n\
         jetson_gpu_usage_percent{node=\"xavier\"} 70\n\
         jetson_orin_gpu_load_percent 35\n",
    );
    wait_for(&mut rx, "agx at 45 %", |s| s.usage("agx") == Some(45.0)).await;

    // A series that goes away turns its node stale (last value kept); NaN
    // and out-of-range values are refused the same way.
    exporter.write(
        "jetson_gpu_usage_percent{node=\"agx\"} NaN\n\
         jetson_orin_gpu_load_percent 135\n",
    );
    let s = wait_for(&mut rx, "xavier stale, agx NaN, orin out of range", |s| {
        state(s, "xavier") == Some(UsageState::Stale)
            && state(s, "agx") == Some(UsageState::Stale)
            && state(s, "orin") == Some(UsageState::Stale)
    })
    .await;
    assert_eq!(s.nodes["xavier"].sample.unwrap().usage_percent, 70.0);
    assert_eq!(s.nodes["agx"].sample.unwrap().usage_percent, 45.0);
    assert_eq!(s.nodes["agx"].error.as_deref(), Some("usage is NaN"));
    assert!(
        s.nodes["orin"]
            .error
            .as_deref()
            .unwrap()
            .contains("outside"),
        "{s:#?}"
    );
    assert!(s.fresh().next().is_none());

    exporter.write(
        "jetson_gpu_usage_percent{node=\"agx\"} 30\n\
         jetson_orin_gpu_load_percent 40\n",
    );
    wait_for(&mut rx, "agx and orin fresh again", |s| {
        s.usage("agx") == Some(30.0) && s.usage("orin") == Some(40.0)
    })
    .await;

    // Prometheus stopped: an error per node, last good values kept, stale.
    prom.stop();
    let s = wait_for(&mut rx, "every node stale with Prometheus down", |s| {
        ["agx", "orin", "xavier"]
            .iter()
            .all(|n| state(s, n) == Some(UsageState::Stale))
            && s.nodes["agx"]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("unreachable"))
    })
    .await;
    assert_eq!(s.nodes["agx"].sample.unwrap().usage_percent, 30.0);
    assert!(
        s.nodes["orin"]
            .error
            .as_deref()
            .unwrap()
            .contains("unreachable")
    );

    // Prometheus back (same port and data): the source recovers by itself,
    // with samples scraped after the restart.
    let restarted_at = posture_gpu::now_millis();
    prom.restart();
    wait_for(&mut rx, "recovery after restart", |s| {
        s.usage("agx") == Some(30.0)
            && s.usage("orin") == Some(40.0)
            && s.nodes["agx"]
                .sample
                .is_some_and(|x| x.sampled_at >= restarted_at)
    })
    .await;
}

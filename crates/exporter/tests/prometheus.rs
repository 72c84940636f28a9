//! A real Prometheus scrapes the running exporter (served in-process on
//! 127.0.0.1, GPU load from a fake sysfs file) and the value is read back
//! through Prometheus's HTTP API, with its `node` label; a changed load
//! shows up, and a load that can no longer be read disappears (no made-up
//! value) while `posture_exporter_gpu_up` turns 0.
//!
//! Prometheus comes from `posture-testkit`: without the `prometheus` binary
//! the test fails when `CI` is set and is skipped otherwise (install:
//! `apt-get install prometheus`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic the test

use std::sync::Arc;
use std::time::{Duration, Instant};

use posture_exporter::{DetectOptions, Exporter, GpuSource};
use posture_testkit::Prometheus;

/// Waits until the query's result satisfies `ok`, or panics with the last one.
async fn wait_for(
    prometheus: &Arc<Prometheus>,
    promql: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut last = None;
    while Instant::now() < deadline {
        let (p, q) = (prometheus.clone(), promql.to_owned());
        let result = tokio::task::spawn_blocking(move || p.query(&q))
            .await
            .unwrap();
        if let Some(r) = &result
            && ok(r)
        {
            return r.clone();
        }
        last = result;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("{promql}: last result {last:?}");
}

fn single_value(r: &serde_json::Value) -> Option<(String, f64)> {
    let series = r.as_array()?;
    if series.len() != 1 {
        return None;
    }
    let node = series[0]["metric"]["node"].as_str()?.to_owned();
    let value = series[0]["value"][1].as_str()?.parse().ok()?;
    Some((node, value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_gpu_load_with_its_node_label() {
    let dir = tempfile::tempdir().unwrap();
    let load = dir.path().join("load");
    std::fs::write(&load, "375\n").unwrap();
    let source = GpuSource::detect(&DetectOptions {
        sysfs_root: dir.path().join("no-sys"),
        gpu_load_path: Some(load.clone()),
        nvml_library: None,
    });
    let exporter = Exporter::new(source, "agx-desktop", "jetson_gpu_usage_percent").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let exporter_addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(posture_exporter::serve(listener, exporter, async {
        let _ = stopped.await;
    }));
    let Some(prometheus) = Prometheus::start("posture-gpu-exporter", &[exporter_addr.to_string()])
    else {
        return;
    };
    let prom = Arc::new(prometheus);

    let r = wait_for(&prom, "jetson_gpu_usage_percent", |r| {
        single_value(r).is_some()
    })
    .await;
    assert_eq!(single_value(&r), Some(("agx-desktop".to_owned(), 37.5)));
    // The query the farm's components use by default.
    let r = wait_for(
        &prom,
        "jetson_gpu_usage_percent{node=\"agx-desktop\"}",
        |r| single_value(r).is_some(),
    )
    .await;
    assert_eq!(single_value(&r).map(|v| v.1), Some(37.5));
    wait_for(
        &prom,
        "posture_exporter_gpu_up{source=\"jetson-sysfs\"} == 1",
        |r| r.as_array().is_some_and(|a| a.len() == 1),
    )
    .await;

    // The load changes: the next scrape carries it.
    std::fs::write(&load, "812\n").unwrap();
    wait_for(&prom, "jetson_gpu_usage_percent", |r| {
        single_value(r).map(|v| v.1) == Some(81.2)
    })
    .await;

    // The load cannot be read any more: the series goes stale (no value),
    // and up is 0.
    std::fs::remove_file(&load).unwrap();
    wait_for(&prom, "posture_exporter_gpu_up == 0", |r| {
        r.as_array().is_some_and(|a| a.len() == 1)
    })
    .await;
    wait_for(&prom, "jetson_gpu_usage_percent", |r| {
        r.as_array().is_some_and(Vec::is_empty)
    })
    .await;

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

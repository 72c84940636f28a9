//! A real Prometheus scrapes the running exporter (served in-process on
//! 127.0.0.1, GPU load from a fake sysfs file) and the value is read back
//! through Prometheus's HTTP API, with its `node` label; a changed load
//! shows up, and a load that can no longer be read disappears (no made-up
//! value) while `posture_exporter_gpu_up` turns 0.
//!
//! Without the `prometheus` binary the test fails when `CI` is set and is
//! skipped otherwise (install: `apt-get install prometheus`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic the test

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use posture_exporter::{DetectOptions, Exporter, GpuSource};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn prometheus_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join("prometheus"))
        .find(|p| p.is_file());
    if found.is_none() {
        let msg = "prometheus is not installed (apt-get install prometheus)";
        assert!(std::env::var_os("CI").is_none(), "{msg}");
        eprintln!("SKIPPED: {msg}");
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start_prometheus(bin: &Path, port: u16, dir: &Path, target: &str) -> Proc {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: posture-gpu-exporter\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning prometheus");
    Proc(child)
}

/// An instant query through Prometheus's HTTP API (plain HTTP/1.1 GET).
fn query(port: u16, promql: &str) -> Option<serde_json::Value> {
    let encoded: String = promql
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET /api/v1/query?query={encoded} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let json: serde_json::Value = serde_json::from_str(body).ok()?;
    (json["status"] == "success").then(|| json["data"]["result"].clone())
}

/// Waits until the query's result satisfies `ok`, or panics with the last one.
async fn wait_for(
    port: u16,
    promql: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut last = None;
    while Instant::now() < deadline {
        let q = promql.to_owned();
        let result = tokio::task::spawn_blocking(move || query(port, &q))
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
    let Some(bin) = prometheus_binary() else {
        return;
    };
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
    let prom_port = free_port();
    let _prometheus = start_prometheus(&bin, prom_port, dir.path(), &exporter_addr.to_string());

    let r = wait_for(prom_port, "jetson_gpu_usage_percent", |r| {
        single_value(r).is_some()
    })
    .await;
    assert_eq!(single_value(&r), Some(("agx-desktop".to_owned(), 37.5)));
    // The query the farm's components use by default.
    let r = wait_for(
        prom_port,
        "jetson_gpu_usage_percent{node=\"agx-desktop\"}",
        |r| single_value(r).is_some(),
    )
    .await;
    assert_eq!(single_value(&r).map(|v| v.1), Some(37.5));
    wait_for(
        prom_port,
        "posture_exporter_gpu_up{source=\"jetson-sysfs\"} == 1",
        |r| r.as_array().is_some_and(|a| a.len() == 1),
    )
    .await;

    // The load changes: the next scrape carries it.
    std::fs::write(&load, "812\n").unwrap();
    wait_for(prom_port, "jetson_gpu_usage_percent", |r| {
        single_value(r).map(|v| v.1) == Some(81.2)
    })
    .await;

    // The load cannot be read any more: the series goes stale (no value),
    // and up is 0.
    std::fs::remove_file(&load).unwrap();
    wait_for(prom_port, "posture_exporter_gpu_up == 0", |r| {
        r.as_array().is_some_and(|a| a.len() == 1)
    })
    .await;
    wait_for(prom_port, "jetson_gpu_usage_percent", |r| {
        r.as_array().is_some_and(Vec::is_empty)
    })
    .await;

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

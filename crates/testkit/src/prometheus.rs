//! A real Prometheus, a real node-exporter serving textfile metrics, and
//! the two together reporting fake GPU usage.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{Proc, free_port, require};

/// A real Prometheus on 127.0.0.1 scraping `targets` every second (scrape
/// timeout 1 s) as one job; its data in a temporary directory. Killed on
/// drop.
#[derive(Debug)]
pub struct Prometheus {
    bin: PathBuf,
    dir: tempfile::TempDir,
    /// The HTTP port on 127.0.0.1.
    pub port: u16,
    proc: Option<Proc>,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port`, path `/metrics`)
    /// as job `job`; returns once it listens. `None` (skip) when Prometheus
    /// is not installed outside CI.
    pub fn start(job: &str, targets: &[String]) -> Option<Self> {
        let bin = require("prometheus", "Prometheus (Debian package prometheus)")?;
        let dir = tempfile::tempdir().unwrap();
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        std::fs::write(
            dir.path().join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: [{}]\n",
                list.join(", ")
            ),
        )
        .unwrap();
        let mut p = Self {
            bin,
            dir,
            port: free_port(),
            proc: None,
        };
        p.restart();
        Some(p)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills it (an outage: clients get connection errors); its data stays
    /// for [`Prometheus::restart`].
    pub fn stop(&mut self) {
        self.proc = None;
    }

    /// Starts it (again) on the same port and data; returns once it
    /// listens. Panics if it is running.
    pub fn restart(&mut self) {
        assert!(self.proc.is_none(), "Prometheus is already running");
        let dir = self.dir.path();
        let mut proc = Proc::spawn(
            Command::new(&self.bin)
                .arg(format!(
                    "--config.file={}",
                    dir.join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            "prometheus",
        );
        proc.wait_port(self.port);
        self.proc = Some(proc);
    }

    /// An instant query through the HTTP API (`/api/v1/query`): the
    /// `data.result` array, or `None` when Prometheus does not answer with
    /// success (not up yet, stopped, a bad query). Blocking (up to 5 s).
    pub fn query(&self, promql: &str) -> Option<serde_json::Value> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
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
}

/// A real `prometheus-node-exporter` on 127.0.0.1 with only its textfile
/// collector on: it serves whatever metrics the test writes (fake GPU
/// boards). Killed on drop.
#[derive(Debug)]
pub struct NodeExporter {
    _proc: Proc,
    dir: tempfile::TempDir,
    /// The metrics port on 127.0.0.1.
    pub port: u16,
}

impl NodeExporter {
    /// Starts it with no metrics file yet; returns once it listens. `None`
    /// (skip) when node-exporter is not installed outside CI.
    pub fn start() -> Option<Self> {
        let bin = require("prometheus-node-exporter", "prometheus-node-exporter")?;
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut proc = Proc::spawn(
            Command::new(bin)
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--collector.disable-defaults")
                .arg("--collector.textfile")
                .arg(format!(
                    "--collector.textfile.directory={}",
                    dir.path().display()
                ))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            "prometheus-node-exporter",
        );
        proc.wait_port(port);
        Some(Self {
            _proc: proc,
            dir,
            port,
        })
    }

    /// `127.0.0.1:<port>`, for a scrape configuration.
    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Replaces the served metrics with `text` (Prometheus text format),
    /// atomically: the collector may read at any moment.
    pub fn write(&self, text: &str) {
        write_atomically(self.dir.path(), text);
    }

    /// Serves `jetson_gpu_usage_percent{node="<node>"} <value>` for each
    /// reading, as the farm's GPU exporter does, and nothing else.
    pub fn set_gpu_usage(&self, readings: &[(&str, f64)]) {
        let mut text = String::from("# TYPE jetson_gpu_usage_percent gauge\n");
        for (node, v) in readings {
            text.push_str(&format!(
                "jetson_gpu_usage_percent{{node=\"{node}\"}} {v}\n"
            ));
        }
        self.write(&text);
    }
}

fn write_atomically(dir: &Path, text: &str) {
    let tmp = dir.join("gpu.prom.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join("gpu.prom")).unwrap();
}

/// Prometheus scraping a [`NodeExporter`] that reports fake
/// `jetson_gpu_usage_percent` readings: GPU boards for a test, with the
/// real HTTP API in front.
#[derive(Debug)]
pub struct GpuPrometheus {
    /// The Prometheus (job `node`).
    pub prometheus: Prometheus,
    /// The node-exporter it scrapes.
    pub exporter: NodeExporter,
}

impl GpuPrometheus {
    /// Starts both with `readings` (`(node, percent)`); `None` (skip) when
    /// either is not installed outside CI.
    pub fn start(readings: &[(&str, f64)]) -> Option<Self> {
        let exporter = NodeExporter::start()?;
        exporter.set_gpu_usage(readings);
        let prometheus = Prometheus::start("node", &[exporter.target()])?;
        Some(Self {
            prometheus,
            exporter,
        })
    }

    /// Changes the readings (Prometheus sees them at its next scrape).
    pub fn set(&self, readings: &[(&str, f64)]) {
        self.exporter.set_gpu_usage(readings);
    }

    /// The Prometheus URL.
    pub fn url(&self) -> String {
        self.prometheus.url()
    }
}

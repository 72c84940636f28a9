//! `--idle-baseline-query` against a real Prometheus (Debian `prometheus`)
//! scraping the balancer's own `/metrics` text: the baselines a balancer
//! learned come back to the next one. Without the binary the test fails
//! when `CI` is set and is skipped otherwise.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use posture_core::balance::{BalancePlan, Outcome};
use posture_k8s::balancer::BalanceMetrics;
use prometheus_client::registry::Registry;

use super::*;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a balancer that learned agx = 17.5 and orin = 9 serves on /metrics.
fn balancer_metrics_text() -> String {
    let mut registry = Registry::default();
    let m = BalanceMetrics::register(&mut registry);
    m.observe(
        &BalancePlan {
            outcome: Outcome::Stable,
            moves: Vec::new(),
            stuck: Vec::new(),
            overloaded: Vec::new(),
            pending: Vec::new(),
            projected: BTreeMap::new(),
        },
        &BTreeMap::new(),
    );
    m.idle_baselines(&BTreeMap::from([
        ("agx".to_owned(), 17.5),
        ("orin".to_owned(), 9.0),
    ]));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text
}

/// Serves `body` to every HTTP request (Prometheus' scrapes), in a thread.
fn serve_metrics(body: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[derive(Parser)]
struct Wrap {
    #[command(flatten)]
    balancer: BalancerArgs,
    #[command(flatten)]
    source: GpuSourceArgs,
}

#[tokio::test]
async fn learned_baselines_come_back_from_prometheus() {
    let Ok(bin) = which("prometheus") else {
        let msg = "prometheus is not installed (apt-get install prometheus)";
        assert!(std::env::var_os("CI").is_none(), "{msg}");
        eprintln!("SKIPPED: {msg}");
        return;
    };
    let target = serve_metrics(balancer_metrics_text());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: balancer\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
        ),
    )
    .unwrap();
    let port = posture_testkit::free_port();
    let _prom = Proc(
        Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let w = Wrap::try_parse_from(["x", "--prometheus-url", &format!("http://127.0.0.1:{port}")])
        .unwrap();
    let expected = BTreeMap::from([("agx".to_owned(), 17.5), ("orin".to_owned(), 9.0)]);
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let got = w.balancer.restore_idle(&w.source).await;
        if got == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restored {got:?}, want {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // An empty query turns restoring off.
    let off = Wrap::try_parse_from([
        "x",
        "--prometheus-url",
        &format!("http://127.0.0.1:{port}"),
        "--idle-baseline-query",
        "",
    ])
    .unwrap();
    assert!(off.balancer.restore_idle(&off.source).await.is_empty());
}

fn which(bin: &str) -> Result<std::path::PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path)
        .chain([std::path::PathBuf::from("/usr/bin")])
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
        .ok_or(())
}

//! The helpers against the real servers: each starts, answers, survives a
//! stop and restart with its data, and is gone after drop.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic the test

use std::net::TcpStream;
use std::time::{Duration, Instant};

use posture_testkit::{GpuPrometheus, Mosquitto, Postgres};

fn listens(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[test]
fn postgres_keeps_its_data_across_a_restart_and_stops_on_drop() {
    let Some(mut pg) = Postgres::start() else {
        return;
    };
    pg.psql("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (42);");
    pg.stop();
    assert!(!listens(pg.port));
    pg.restart();
    assert_eq!(pg.psql("SELECT x FROM t").trim(), "42");
    let port = pg.port;
    drop(pg);
    assert!(!listens(port));
}

#[test]
fn tls_only_postgres_refuses_plain_connections() {
    let Some(pg) = Postgres::start_tls() else {
        return;
    };
    assert!(pg.dir().join("tls/ca.pem").exists());
    // psql connects with sslmode=prefer: over TLS, so it gets through…
    assert_eq!(pg.psql("SHOW ssl").trim(), "on");
    // …and the server's hba refuses the same connection in plain text.
    let plain = std::process::Command::new(format!("{}/psql", posture_testkit::PG_BIN))
        .arg(format!("{}?sslmode=disable", pg.url()))
        .args(["-c", "SELECT 1"])
        .output()
        .unwrap();
    let why = String::from_utf8_lossy(&plain.stderr);
    assert!(
        !plain.status.success() && why.contains("no encryption"),
        "{why}"
    );
}

#[test]
fn mosquitto_restarts_on_its_port() {
    let Some(mut m) = Mosquitto::start() else {
        return;
    };
    assert!(listens(m.port));
    m.stop();
    assert!(!listens(m.port));
    m.restart();
    assert!(listens(m.port));
    // SIGTERM made it write its persistence file.
    m.stop();
    assert!(m.dir().join("mosquitto.db").exists());
}

#[test]
fn prometheus_reads_the_fake_gpu_readings_and_their_updates() {
    let Some(mut gpus) = GpuPrometheus::start(&[("agx", 35.0)]) else {
        return;
    };
    let value = |p: &GpuPrometheus| {
        let r = p
            .prometheus
            .query("jetson_gpu_usage_percent{node=\"agx\"}")?;
        r[0]["value"][1].as_str()?.parse::<f64>().ok()
    };
    let wait = |p: &GpuPrometheus, want: f64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while value(p) != Some(want) {
            assert!(Instant::now() < deadline, "agx never read {want}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait(&gpus, 35.0);
    gpus.set(&[("agx", 80.5)]);
    wait(&gpus, 80.5);
    gpus.prometheus.stop();
    assert_eq!(value(&gpus), None);
    gpus.prometheus.restart();
    wait(&gpus, 80.5);
}

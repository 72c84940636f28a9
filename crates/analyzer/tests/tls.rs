//! MQTT over TLS (rustls with ring) against a real mosquitto TLS listener,
//! with a throwaway CA made by the `openssl` command.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic the test

mod support;

use std::time::Duration;

use posture_analyzer::mqtt::{MqttConfig, MqttTls, run_analyzer};
use posture_analyzer::publish::{Encoding, PublishPlan, publish_files};
use posture_analyzer::store::DbTarget;
use posture_analyzer::{Limits, Outcome};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyzer_and_publisher_over_tls() {
    if require("/usr/bin/openssl", "openssl").is_none() {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(broker) = Mosquitto::start_with(|dir| {
        make_certs(dir, "DNS:localhost,IP:127.0.0.1");
        format!(
            "cafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\n",
            dir.display()
        )
    }) else {
        return;
    };
    let ca = broker.dir().join("ca.pem");
    let tls = |id: &str| {
        let mut c = MqttConfig::new("localhost", broker.port, id);
        c.tls = Some(MqttTls {
            ca_file: ca.clone(),
        });
        c
    };
    let out = tempfile::tempdir().unwrap();
    let target = DbTarget::Sqlite(out.path().join("posture.db"));
    let mut analyzer = analyzer(out.path(), &target, Limits::default()).await;
    let cfg = tls("analyzer-tls");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (ready_tx, mut ready_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        run_analyzer(
            &cfg,
            &["images/pi1".to_string()],
            None,
            &mut analyzer,
            async {
                let _ = stop_rx.await;
            },
            move |up| {
                let _ = ready_tx.send(up);
            },
            move |o| {
                let _ = tx.send(o.clone());
            },
        )
        .await
        .unwrap()
    });
    tokio::time::timeout(Duration::from_secs(10), ready_rx.wait_for(|r| *r))
        .await
        .expect("the analyzer did not connect over TLS")
        .unwrap();
    let files = write_frames(&out.path().join("in"), &[(RED, 1)]);
    let plan = PublishPlan {
        topic: "images/pi1".into(),
        encoding: Encoding::Base64Jpeg,
        interval: Duration::ZERO,
        repeat: 1,
        timeout: Duration::from_secs(10),
    };
    publish_files(&tls("camera-tls"), &plan, &files)
        .await
        .unwrap();
    let o = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(o, Outcome::Analyzed { .. }), "{o:?}");
    let _ = stop_tx.send(());
    assert_eq!(task.await.unwrap().analyzed, 1);

    // A client that does not trust the broker's CA never gets through.
    let mut untrusting = MqttConfig::new("localhost", broker.port, "camera-untrusting");
    let other = tempfile::tempdir().unwrap();
    openssl(
        other.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "k",
            "-out",
            "other.pem",
            "-days",
            "1",
            "-subj",
            "/CN=other",
        ],
    );
    untrusting.tls = Some(MqttTls {
        ca_file: other.path().join("other.pem"),
    });
    let short = PublishPlan {
        timeout: Duration::from_secs(2),
        ..plan
    };
    assert!(publish_files(&untrusting, &short, &files).await.is_err());
}

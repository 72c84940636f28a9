//! MQTT over TLS (rustls with ring) against a real mosquitto TLS listener,
//! with a throwaway CA made by the `openssl` command.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic the test

mod support;

use std::time::Duration;

use posture_analyzer::mqtt::{MqttConfig, MqttTls};
use posture_analyzer::publish::{Encoding, PublishPlan, publish_files};
use posture_analyzer::store::DbTarget;
use posture_analyzer::{Limits, Outcome};
use posture_testkit::{Mosquitto, make_ca, make_certs, require};
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
    let analyzer = analyzer(out.path(), &target, Limits::default()).await;
    // Returns once the analyzer is subscribed: it connected over TLS.
    let mut run = Running::start_with(analyzer, tls("analyzer-tls"), "images/pi1").await;
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
    let o = run.take(1).await;
    assert!(matches!(o[0], Outcome::Analyzed { .. }), "{o:?}");
    assert_eq!(run.stop().await.1.analyzed, 1);

    // A client that does not trust the broker's CA never gets through.
    let mut untrusting = MqttConfig::new("localhost", broker.port, "camera-untrusting");
    let other = tempfile::tempdir().unwrap();
    make_ca(other.path(), "other", "other");
    untrusting.tls = Some(MqttTls {
        ca_file: other.path().join("other.pem"),
    });
    let short = PublishPlan {
        timeout: Duration::from_secs(2),
        ..plan
    };
    assert!(publish_files(&untrusting, &short, &files).await.is_err());
}

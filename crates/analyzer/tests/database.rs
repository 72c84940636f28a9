//! The database side on real servers: PostgreSQL over TLS from the legacy
//! `DB_*` settings.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic the test

use std::path::{Path, PathBuf};
use std::time::Duration;

use posture_analyzer::store::{DbTarget, LegacyDbVars};
use posture_analyzer::{Database, PostureRow};
use posture_testkit::Postgres;

fn row(id: &str) -> PostureRow {
    PostureRow {
        pi_id: "pi1".into(),
        filename: format!("pi1_{id}.jpg"),
        received_time: "2026-11-23T10:00:00.000000Z".into(),
        analyzed_time: "2026-11-23T10:00:01.250000Z".into(),
        neck_angle: Some(12.5),
        body_angle: Some(3.25),
        posture_status: "Good".into(),
        landmarks_detected: true,
        processed_by: "node-a".into(),
        frame_id: id.into(),
    }
}

/// Connects with the legacy variables and inserts one row.
async fn insert_with(vars: &LegacyDbVars, id: &str) -> Result<(), String> {
    let target = DbTarget::resolve(None, vars, Path::new("unused.db"))
        .map_err(|e| posture_analyzer::error_chain(&e))?;
    let mut db = Database::open_with(&target, Duration::from_secs(5))
        .await
        .map_err(|e| posture_analyzer::error_chain(&e))?;
    let result = db
        .insert(&row(id))
        .await
        .map(|_| ())
        .map_err(|e| posture_analyzer::error_chain(&e));
    db.close().await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_db_vars_take_sslmode_and_verify_full_checks_the_host_name() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(pg) = Postgres::start_tls() else {
        return;
    };
    let ca = pg.dir().join("tls/ca.pem");
    let vars = |host: &str, mode: &str, ca: Option<&PathBuf>| LegacyDbVars {
        enabled: Some("true".into()),
        host: Some(host.into()),
        port: Some(pg.port),
        sslmode: Some(mode.into()),
        sslrootcert: ca.cloned(),
        ..LegacyDbVars::default()
    };
    // The server refuses plain connections, so these rows went over TLS.
    insert_with(&vars("localhost", "verify-full", Some(&ca)), "a")
        .await
        .unwrap();
    let plain = insert_with(&vars("localhost", "disable", None), "b").await;
    assert!(plain.is_err(), "{plain:?}");
    // The certificate names localhost, not 127.0.0.1: verify-full refuses…
    let wrong_name = insert_with(&vars("127.0.0.1", "verify-full", Some(&ca)), "c").await;
    assert!(wrong_name.is_err(), "{wrong_name:?}");
    // …verify-ca, which checks only the chain, accepts.
    insert_with(&vars("127.0.0.1", "verify-ca", Some(&ca)), "d")
        .await
        .unwrap();
    // A server whose CA we do not trust (only the system roots) is refused.
    let untrusted = insert_with(&vars("localhost", "verify-full", None), "e").await;
    assert!(untrusted.is_err(), "{untrusted:?}");
    // A misspelt mode is a configuration error, not a silent downgrade.
    let bad = DbTarget::resolve(
        None,
        &vars("localhost", "verify_full", None),
        Path::new("x"),
    );
    assert!(bad.is_err());
}

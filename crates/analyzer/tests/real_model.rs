//! The same MQTT → rows pipeline once with the real BlazePose model on the
//! sample photos `posture-farm setup` installs (skipped, with a notice, when
//! the models directory is absent).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic the test

mod support;

use std::path::PathBuf;
use std::time::Duration;

use posture_analyzer::mqtt::MqttConfig;
use posture_analyzer::publish::{Encoding, PublishPlan, image_files, publish_files};
use posture_analyzer::store::DbTarget;
use posture_analyzer::{Limits, Outcome, load_blazepose};
use posture_testkit::Mosquitto;
use support::*;

fn models_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("POSTURE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models")));
    if posture_analyzer::posture_pose::check_models_dir(&dir).is_ok()
        && dir.join("samples").is_dir()
    {
        Some(dir)
    } else {
        posture_testkit::skip_or_fail(&format!(
            "the pose models in {} (run `posture-farm setup`)",
            dir.display()
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_photos_over_mqtt_with_blazepose() {
    let Some(models) = models_dir() else { return };
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let target = DbTarget::Sqlite(out.path().join("posture.db"));
    let model = load_blazepose(&models, 1).unwrap();
    let analyzer = analyzer_with(Box::new(model), out.path(), &target, Limits::default()).await;

    let files = image_files(&[models.join("samples")]).unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let mut run = Running::start(analyzer, broker.port, "images/pi1", "analyzer-real-model").await;
    let plan = PublishPlan {
        topic: "images/pi1".into(),
        encoding: Encoding::Base64Jpeg,
        interval: Duration::ZERO,
        repeat: 1,
        timeout: Duration::from_secs(30),
    };
    let camera = MqttConfig::new("127.0.0.1", broker.port, "camera-real-model");
    assert_eq!(
        publish_files(&camera, &plan, &files).await.unwrap(),
        files.len()
    );
    let mut by_name = std::collections::HashMap::new();
    for (name, o) in names.iter().zip(run.take(names.len()).await) {
        let Outcome::Analyzed { row, image, .. } = o else {
            panic!("{name} rejected: {o:?}")
        };
        assert!(image.as_ref().is_some_and(|i| i.is_file()));
        by_name.insert(name.clone(), row);
    }
    let (_, stats) = run.stop().await;
    assert_eq!(stats.analyzed as usize, files.len());

    // A person facing the camera, upright: landmarks, small angles, Good.
    let astronaut = &by_name["astronaut"];
    assert!(astronaut.landmarks_detected);
    assert_eq!(astronaut.posture_status, "Good", "{astronaut:?}");
    // The cameraman bends over his camera: torso far from vertical, Bad.
    let camera = &by_name["camera"];
    assert_eq!(camera.posture_status, "Bad", "{camera:?}");
    assert!(camera.body_angle.unwrap() > 20.0);
    // A cup of coffee: nobody there, not an error.
    let coffee = &by_name["coffee"];
    assert!(!coffee.landmarks_detected);
    assert_eq!(coffee.posture_status, "No person detected");
    assert_eq!(coffee.neck_angle, None);
    if let Some(gh) = by_name.get("grace_hopper") {
        assert!(gh.landmarks_detected);
    }
    let csv = csv_lines(&out.path().join("pi1_results.csv"));
    assert_eq!(csv.len(), files.len() + 1);
}

//! Discovery and reading on fake sysfs trees laid out like each Jetson
//! board and L4T release (devfreq class links, of_node names, load files).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic the test

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use posture_exporter::jetson::{Found, discover, read_load_percent};
use posture_exporter::{DetectOptions, Exporter, GpuSource};

/// A GPU device at `devices/<device>` with a `load` file, and (when
/// `of_node` is given) a devfreq class entry linking to it the way the
/// kernel does: `class/devfreq/<name>` → `../../devices/<device>/devfreq/<name>`,
/// whose `device` → the GPU device, whose `of_node/name` is the DT name.
fn gpu(root: &Path, device: &str, of_node: Option<&str>, per_mille: &str) -> PathBuf {
    let dev = root.join("devices").join(device);
    std::fs::create_dir_all(&dev).unwrap();
    std::fs::write(dev.join("load"), format!("{per_mille}\n")).unwrap();
    if let Some(name) = of_node {
        std::fs::create_dir_all(dev.join("of_node")).unwrap();
        // Device-tree strings carry their NUL.
        std::fs::write(dev.join("of_node/name"), format!("{name}\0")).unwrap();
        let leaf = device.rsplit('/').next().unwrap();
        let freq = dev.join("devfreq").join(leaf);
        std::fs::create_dir_all(&freq).unwrap();
        // devices/<device>/devfreq/<leaf>/device → ../.. (the GPU device).
        symlink("../..", freq.join("device")).unwrap();
        let class = root.join("class/devfreq");
        std::fs::create_dir_all(&class).unwrap();
        symlink(
            PathBuf::from("../..")
                .join("devices")
                .join(device)
                .join("devfreq")
                .join(leaf),
            class.join(leaf),
        )
        .unwrap();
    }
    dev.join("load")
}

/// Other devfreq devices (memory controller, NVDLA) that are not the GPU.
fn distractors(root: &Path) {
    for (dev, name) in [
        (
            "2c60000.external-memory-controller",
            "external-memory-controller",
        ),
        ("15880000.nvdla0", "nvdla0"),
    ] {
        let d = root.join("devices/platform").join(dev);
        std::fs::create_dir_all(d.join("of_node")).unwrap();
        std::fs::write(d.join("of_node/name"), format!("{name}\0")).unwrap();
        std::fs::write(d.join("load"), "999\n").unwrap();
        let freq = d.join("devfreq").join(dev);
        std::fs::create_dir_all(&freq).unwrap();
        symlink("../..", freq.join("device")).unwrap();
        std::fs::create_dir_all(root.join("class/devfreq")).unwrap();
        symlink(
            PathBuf::from("../../devices/platform")
                .join(dev)
                .join("devfreq")
                .join(dev),
            root.join("class/devfreq").join(dev),
        )
        .unwrap();
    }
}

fn found(root: &Path) -> (PathBuf, Found, f64) {
    let (path, how) = discover(root).expect("a GPU load file");
    let v = read_load_percent(&path).unwrap();
    (path.canonicalize().unwrap(), how, v)
}

#[test]
fn nano_gpu_0() {
    let t = tempfile::tempdir().unwrap();
    distractors(t.path());
    let load = gpu(t.path(), "gpu.0", Some("gpu"), "375");
    assert_eq!(
        found(t.path()),
        (load.canonicalize().unwrap(), Found::Devfreq, 37.5)
    );
}

#[test]
fn tx2_gp10b() {
    let t = tempfile::tempdir().unwrap();
    distractors(t.path());
    let load = gpu(t.path(), "17000000.gp10b", Some("gp10b"), "0");
    assert_eq!(
        found(t.path()),
        (load.canonicalize().unwrap(), Found::Devfreq, 0.0)
    );
}

#[test]
fn xavier_gv11b() {
    let t = tempfile::tempdir().unwrap();
    distractors(t.path());
    let load = gpu(t.path(), "17000000.gv11b", Some("gv11b"), "1000");
    assert_eq!(
        found(t.path()),
        (load.canonicalize().unwrap(), Found::Devfreq, 100.0)
    );
}

#[test]
fn orin_l4t35_ga10b() {
    let t = tempfile::tempdir().unwrap();
    distractors(t.path());
    let load = gpu(t.path(), "17000000.ga10b", Some("ga10b"), "512");
    assert_eq!(
        found(t.path()),
        (load.canonicalize().unwrap(), Found::Devfreq, 51.2)
    );
}

#[test]
fn orin_l4t36_platform_gpu() {
    let t = tempfile::tempdir().unwrap();
    distractors(t.path());
    let load = gpu(t.path(), "platform/bus@0/17000000.gpu", Some("gpu"), "88");
    assert_eq!(
        found(t.path()),
        (load.canonicalize().unwrap(), Found::Devfreq, 8.8)
    );
}

#[test]
fn known_paths_without_devfreq() {
    for device in [
        "gpu.0",
        "17000000.gv11b",
        "platform/17000000.gpu",
        "17000000.ga10b",
    ] {
        let t = tempfile::tempdir().unwrap();
        let load = gpu(t.path(), device, None, "250");
        assert_eq!(
            found(t.path()),
            (load.canonicalize().unwrap(), Found::KnownPath, 25.0),
            "{device}"
        );
    }
}

#[test]
fn scan_finds_an_unlisted_layout() {
    let t = tempfile::tempdir().unwrap();
    distractors(t.path());
    // A future L4T moving the GPU deeper under another bus.
    let load = gpu(
        t.path(),
        "platform/bus@1/soc/27000000.gb10b.gpu",
        None,
        "640",
    );
    let (path, how, v) = found(t.path());
    assert_eq!(
        (path, how, v),
        (load.canonicalize().unwrap(), Found::Scan, 64.0)
    );
}

#[test]
fn no_gpu_no_source() {
    let t = tempfile::tempdir().unwrap();
    distractors(t.path());
    assert!(discover(t.path()).is_none());
    let source = GpuSource::detect(&DetectOptions {
        sysfs_root: t.path().to_path_buf(),
        gpu_load_path: None,
        nvml_library: Some("/nonexistent/libnvidia-ml.so.1".into()),
    });
    assert_eq!(source.kind(), "none");
    let err = source.read().unwrap_err().to_string();
    assert!(
        err.contains("no Jetson GPU load file") && err.contains("NVML"),
        "{err}"
    );
}

#[test]
fn bad_load_files_are_errors_not_values() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("load");
    for bad in ["", "abc", "-5", "1001", "37.5"] {
        std::fs::write(&p, bad).unwrap();
        assert!(read_load_percent(&p).is_err(), "{bad:?}");
    }
    assert!(read_load_percent(&t.path().join("missing")).is_err());
}

fn metrics_text(exporter: &Exporter) -> String {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(exporter.scrape())
        .unwrap()
}

#[test]
fn scrape_serves_the_value_only_while_it_can_be_read() {
    let t = tempfile::tempdir().unwrap();
    let load = gpu(t.path(), "17000000.gv11b", Some("gv11b"), "420");
    let source = GpuSource::detect(&DetectOptions {
        sysfs_root: t.path().to_path_buf(),
        gpu_load_path: None,
        nvml_library: None,
    });
    let exporter = Exporter::new(source, "xavier", "jetson_gpu_usage_percent").unwrap();
    let text = metrics_text(&exporter);
    assert!(
        text.contains("jetson_gpu_usage_percent{node=\"xavier\"} 42.0"),
        "{text}"
    );
    assert!(
        text.contains("posture_exporter_gpu_up{node=\"xavier\",source=\"jetson-sysfs\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("posture_exporter_gpu_source_info{node=\"xavier\",source=\"jetson-sysfs\""),
        "{text}"
    );
    // The file goes away (GPU driver unloaded): no value, up 0, an error counted.
    std::fs::remove_file(&load).unwrap();
    let text = metrics_text(&exporter);
    assert!(!text.contains("jetson_gpu_usage_percent{"), "{text}");
    assert!(
        text.contains("posture_exporter_gpu_up{node=\"xavier\",source=\"jetson-sysfs\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("posture_exporter_read_errors_total 1"),
        "{text}"
    );
    std::fs::write(&load, "7\n").unwrap();
    assert!(metrics_text(&exporter).contains("jetson_gpu_usage_percent{node=\"xavier\"} 0.7"));
}

#[test]
fn explicit_path_configurable_name_and_validation() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("my-load");
    std::fs::write(&p, "100").unwrap();
    let source = GpuSource::detect(&DetectOptions {
        sysfs_root: PathBuf::from("/nonexistent"),
        gpu_load_path: Some(p.clone()),
        nvml_library: None,
    });
    assert_eq!(source.load_path(), Some(p.as_path()));
    let exporter = Exporter::new(source, "orin", "jetson_orin_gpu_load_percent").unwrap();
    assert!(metrics_text(&exporter).contains("jetson_orin_gpu_load_percent{node=\"orin\"} 10.0"));
    let none = || GpuSource::None {
        tried: String::new(),
    };
    assert!(Exporter::new(none(), "n", "9bad").is_err());
    assert!(Exporter::new(none(), "n", "bad-name").is_err());
    assert!(Exporter::new(none(), " ", "ok_name").is_err());
    // No source: no value at all, up 0, the source named.
    let text = metrics_text(&Exporter::new(none(), "desk", "jetson_gpu_usage_percent").unwrap());
    assert!(!text.contains("jetson_gpu_usage_percent{"), "{text}");
    assert!(
        text.contains("posture_exporter_gpu_up{node=\"desk\",source=\"none\"} 0"),
        "{text}"
    );
}

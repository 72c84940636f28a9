use super::*;

fn letter<'a>(camera: &'a str, payload: &'a [u8], second: u32) -> Letter<'a> {
    Letter {
        camera,
        source: "images/x",
        received: format!("2026-11-23T10:00:{second:02}Z").parse().unwrap(),
        reason: "bad_base64",
        detail: "nope",
        payload,
        payload_bytes: payload.len(),
    }
}

fn sidecar(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path.with_extension("json")).unwrap()).unwrap()
}

#[test]
fn keeps_payload_and_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let mut dl = DeadLetters::open(dir.path(), DeadLetterLimits::default(), Default::default());
    let l = Letter {
        source: "images/pi/1",
        ..letter("pi/1", b"%%%", 0)
    };
    let p = dl.keep(&l).unwrap();
    assert!(p.starts_with(dir.path().join("dead_letter/pi_1")));
    assert_eq!(std::fs::read(&p).unwrap(), b"%%%");
    let side = sidecar(&p);
    assert_eq!(side["reason"], "bad_base64");
    assert_eq!(side["source"], "images/pi/1");
    assert_eq!(side["bytes"], 3);
    assert_eq!(side["kept_bytes"], 3);
    assert_eq!(side["truncated"], false);
    // The same payload at the same instant is a second letter, not an overwrite.
    let p2 = dl.keep(&l).unwrap();
    assert_ne!(p, p2);
    assert_eq!(dl.usage().0, 2);
}

#[test]
fn a_prefix_records_the_full_length() {
    let dir = tempfile::tempdir().unwrap();
    let mut dl = DeadLetters::open(dir.path(), DeadLetterLimits::default(), Default::default());
    let prefix = vec![b'A'; 100];
    let p = dl
        .keep(&Letter {
            reason: "too_large",
            payload_bytes: 150_000_000,
            ..letter("pi1", &prefix, 0)
        })
        .unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 100);
    let side = sidecar(&p);
    assert_eq!(side["bytes"], 150_000_000);
    assert_eq!(side["kept_bytes"], 100);
    assert_eq!(side["truncated"], true);
}

#[test]
fn oldest_letters_go_first_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = DeadLetterMetrics::default();
    let limits = DeadLetterLimits {
        max_letters: 3,
        max_bytes: u64::MAX,
    };
    let mut dl = DeadLetters::open(dir.path(), limits, metrics.clone());
    let paths: Vec<PathBuf> = (0..5u8)
        .map(|i| {
            dl.keep(&letter(
                ["a", "b"][usize::from(i % 2)],
                &[i; 10],
                u32::from(i),
            ))
            .unwrap()
        })
        .collect();
    assert_eq!(metrics.removed.get(), 2);
    assert_eq!(metrics.letters.get(), 3);
    for (i, p) in paths.iter().enumerate() {
        assert_eq!(p.exists(), i >= 2, "{i}: {}", p.display());
        assert_eq!(p.with_extension("json").exists(), i >= 2);
    }
    let on_disk: u64 = walk(dl.root()).iter().map(|f| f.1).sum();
    assert_eq!(dl.usage(), (3, on_disk));
    assert_eq!(metrics.bytes.get(), on_disk as i64);
}

#[test]
fn byte_bound_removes_the_oldest_and_truncates_a_letter_alone_too_big() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = DeadLetterMetrics::default();
    let limits = DeadLetterLimits {
        max_letters: 100,
        max_bytes: 10_000,
    };
    let mut dl = DeadLetters::open(dir.path(), limits, metrics.clone());
    let first = dl.keep(&letter("a", &[1; 4000], 1)).unwrap();
    let second = dl.keep(&letter("a", &[2; 4000], 2)).unwrap();
    assert_eq!(metrics.removed.get(), 0);
    let third = dl.keep(&letter("a", &[3; 4000], 3)).unwrap();
    assert!(!first.exists() && second.exists() && third.exists());
    assert_eq!(metrics.removed.get(), 1);
    // One letter bigger than the whole folder: kept, cut to fit, alone.
    let huge = vec![4u8; 50_000];
    let p = dl.keep(&letter("a", &huge, 4)).unwrap();
    assert!(!second.exists() && !third.exists());
    let side = sidecar(&p);
    assert_eq!(side["truncated"], true);
    assert_eq!(side["bytes"], 50_000);
    let (n, bytes) = dl.usage();
    assert_eq!(n, 1);
    assert!(bytes <= 10_000, "{bytes}");
}

#[test]
fn reopening_indexes_what_is_on_disk_and_applies_new_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let mut dl = DeadLetters::open(dir.path(), DeadLetterLimits::default(), Default::default());
    let kept: Vec<PathBuf> = (0..6u8)
        .map(|i| {
            let p = dl.keep(&letter("cam", &[i; 64], u32::from(i))).unwrap();
            // Distinct modification times, oldest first.
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000 + u64::from(i));
            for f in [p.clone(), p.with_extension("json")] {
                std::fs::File::options()
                    .write(true)
                    .open(&f)
                    .unwrap()
                    .set_modified(t)
                    .unwrap();
            }
            p
        })
        .collect();
    // A payload whose sidecar was never written (crash in between) is a letter too.
    std::fs::remove_file(kept[5].with_extension("json")).unwrap();
    let metrics = DeadLetterMetrics::default();
    let limits = DeadLetterLimits {
        max_letters: 2,
        max_bytes: u64::MAX,
    };
    let dl = DeadLetters::open(dir.path(), limits, metrics.clone());
    assert_eq!(dl.usage().0, 2);
    assert_eq!(metrics.removed.get(), 4);
    let left: Vec<bool> = kept.iter().map(|p| p.exists()).collect();
    assert_eq!(left, [false, false, false, false, true, true]);
}

fn walk(root: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(root).unwrap().flatten() {
        for f in std::fs::read_dir(d.path()).unwrap().flatten() {
            out.push((f.path(), f.metadata().unwrap().len()));
        }
    }
    out
}

#[test]
fn sanitize_blocks_traversal() {
    assert_eq!(sanitize(".."), "_");
    assert_eq!(sanitize("../etc"), ".._etc");
    assert_eq!(sanitize("pi-1_a"), "pi-1_a");
    // Long names (a long topic segment) stay usable and distinct.
    let s = sanitize(&"a".repeat(300));
    assert_eq!(s.len(), 96);
    assert_ne!(s, sanitize(&"a".repeat(301)));
}

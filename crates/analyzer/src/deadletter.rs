//! The dead-letter folder: payloads that can never be analysed are kept for
//! inspection instead of being dropped, each with a small JSON sidecar that
//! says why, from where and when.
//!
//! Layout: `<out>/dead_letter/<camera>/<time>_<hash>.payload` and `.json`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::payload::Rejected;

/// An error writing to the dead-letter folder.
#[derive(Debug, thiserror::Error)]
#[error("dead-letter folder {path}")]
pub struct DeadLetterError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// The sidecar written next to each kept payload.
#[derive(Debug, Serialize)]
pub struct Sidecar<'a> {
    /// Reason label (as in the `frames_failed` metric).
    pub reason: &'a str,
    /// Human-readable detail.
    pub detail: &'a str,
    /// Camera id.
    pub camera: &'a str,
    /// MQTT topic, or the file path when analysing files.
    pub source: &'a str,
    /// When the payload arrived (RFC 3339).
    pub received_time: &'a str,
    /// Payload size in bytes.
    pub bytes: usize,
}

/// The dead-letter folder under an output directory.
#[derive(Clone, Debug)]
pub struct DeadLetters {
    root: PathBuf,
}

impl DeadLetters {
    /// Dead letters under `<out>/dead_letter`.
    pub fn new(out: &Path) -> Self {
        Self {
            root: out.join("dead_letter"),
        }
    }

    /// Keeps `payload` with its sidecar; returns the payload's path.
    pub fn keep(
        &self,
        camera: &str,
        source: &str,
        received: jiff::Timestamp,
        payload: &[u8],
        rejected: &Rejected,
    ) -> Result<PathBuf, DeadLetterError> {
        let dir = self.root.join(sanitize(camera));
        let err = |source| DeadLetterError {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(err)?;
        let stamp = received.strftime("%Y%m%dT%H%M%S%.6fZ").to_string();
        let hash = crate::record::frame_id(camera, payload);
        let base = format!("{stamp}_{}", &hash[..12]);
        let payload_path = dir.join(format!("{base}.payload"));
        std::fs::write(&payload_path, payload).map_err(err)?;
        let sidecar = Sidecar {
            reason: rejected.reason.as_str(),
            detail: &rejected.detail,
            camera,
            source,
            received_time: &received.to_string(),
            bytes: payload.len(),
        };
        let json =
            serde_json::to_vec_pretty(&sidecar).map_err(|e| err(std::io::Error::other(e)))?;
        std::fs::write(dir.join(format!("{base}.json")), json).map_err(err)?;
        Ok(payload_path)
    }
}

/// Longest result of [`sanitize`]: file names built from it (with a
/// prefix and a frame-id suffix) stay far below the 255-byte limit.
const MAX_COMPONENT: usize = 96;

/// Keeps camera ids usable as one path component: other characters become
/// `_`, and a name longer than [`MAX_COMPONENT`] is cut and given a hash of
/// the whole name (so long names stay distinct).
pub fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.len() > MAX_COMPONENT {
        let hash = crate::record::frame_id("", name.as_bytes());
        return format!("{}~{}", &s[..MAX_COMPONENT - 13], &hash[..12]);
    }
    match s.as_str() {
        "" | "." | ".." => "_".to_string(),
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::RejectReason;

    #[test]
    fn keeps_payload_and_sidecar() {
        let dir = tempfile::tempdir().unwrap();
        let dl = DeadLetters::new(dir.path());
        let rej = Rejected {
            reason: RejectReason::BadBase64,
            detail: "nope".into(),
        };
        let t: jiff::Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        let p = dl.keep("pi/1", "images/pi/1", t, b"%%%", &rej).unwrap();
        assert!(p.starts_with(dir.path().join("dead_letter/pi_1")));
        assert_eq!(std::fs::read(&p).unwrap(), b"%%%");
        let side: serde_json::Value =
            serde_json::from_slice(&std::fs::read(p.with_extension("json")).unwrap()).unwrap();
        assert_eq!(side["reason"], "bad_base64");
        assert_eq!(side["source"], "images/pi/1");
        assert_eq!(side["bytes"], 3);
    }

    #[test]
    fn sanitize_blocks_traversal() {
        assert_eq!(sanitize(".."), "_");
        assert_eq!(sanitize("../etc"), ".._etc");
        assert_eq!(sanitize("pi-1_a"), "pi-1_a");
        let long = "a".repeat(300);
        let s = sanitize(&long);
        assert_eq!(s.len(), MAX_COMPONENT);
        assert_ne!(s, sanitize(&"a".repeat(301)));
    }
}

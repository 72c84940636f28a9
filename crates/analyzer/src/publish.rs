//! Publishing images the way a camera does: base64 JPEG at QoS 1, waiting
//! for the broker's PUBACK of every frame.
//!
//! Each published JPEG carries a JPEG comment (COM segment) with the publish
//! time and a sequence number, as a camera's capture timestamp would: two
//! captures of the same scene are two frames, while a redelivery of one
//! capture is recognised as the same frame by the analyzer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use rumqttc::{AsyncClient, Event, Outgoing, Packet, QoS};

use crate::mqtt::{MqttConfig, MqttError, retries};

/// How images are put on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Encoding {
    /// Base64 text of a JPEG (PNGs are re-encoded to JPEG first), like the cameras.
    #[default]
    Base64Jpeg,
    /// The file's bytes unchanged (JPEG or PNG), no base64.
    Raw,
}

/// What to publish.
#[derive(Clone, Debug)]
pub struct PublishPlan {
    /// Topic, e.g. `images/pi1`.
    pub topic: String,
    /// Wire encoding.
    pub encoding: Encoding,
    /// Pause between frames.
    pub interval: Duration,
    /// How many times the whole file list is sent.
    pub repeat: u32,
    /// Give up when the broker has not acknowledged everything by then.
    pub timeout: Duration,
}

/// A publishing failure.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A file could not be read or converted.
    #[error("{path}: {reason}")]
    File {
        /// Which file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No image files were found.
    #[error("no .jpg/.jpeg/.png files in the given paths")]
    NoFiles,
    /// MQTT setup problem.
    #[error(transparent)]
    Mqtt(#[from] MqttError),
    /// The broker did not acknowledge every frame in time.
    #[error("timed out after {waited:?}: {acked} of {sent} frames acknowledged by the broker")]
    Timeout {
        /// How long we waited.
        waited: Duration,
        /// Frames handed to the client.
        sent: usize,
        /// PUBACKs received.
        acked: usize,
    },
    /// The client stopped unexpectedly.
    #[error("MQTT client stopped: {0}")]
    Client(String),
}

/// Expands files and directories (one level, sorted) into image files.
pub fn image_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, PublishError> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| PublishError::File {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| PublishError::File {
                    path: p.clone(),
                    reason: e.to_string(),
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|e| e.is_file() && is_image_name(e))
                .collect();
            entries.sort();
            out.extend(entries);
        } else {
            out.push(p.clone());
        }
    }
    if out.is_empty() {
        return Err(PublishError::NoFiles);
    }
    Ok(out)
}

/// Whether the file name looks like a JPEG or PNG.
pub fn is_image_name(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        .unwrap_or(false)
}

/// The JPEG bytes of a file: JPEGs as they are, anything else decoded and
/// re-encoded (quality 92).
pub fn jpeg_bytes(path: &Path) -> Result<Vec<u8>, PublishError> {
    let err = |reason: String| PublishError::File {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Ok(bytes);
    }
    let img =
        image::load_from_memory(&bytes).map_err(|e| err(format!("not a readable image: {e}")))?;
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92)
        .encode_image(&img.into_rgb8())
        .map_err(|e| err(format!("re-encoding to JPEG: {e}")))?;
    Ok(out)
}

/// Inserts a COM segment with `text` right after the JPEG's SOI marker.
pub fn stamp_jpeg(jpeg: &[u8], text: &str) -> Vec<u8> {
    if !jpeg.starts_with(&[0xFF, 0xD8]) {
        return jpeg.to_vec();
    }
    let body = &text.as_bytes()[..text.len().min(60_000)];
    let mut out = Vec::with_capacity(jpeg.len() + body.len() + 4);
    out.extend_from_slice(&jpeg[..2]);
    out.extend_from_slice(&[0xFF, 0xFE]);
    // Length counts its own two bytes; body ≤ 60 000 keeps it within u16.
    out.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// Builds the payload of one frame.
pub fn frame_payload(path: &Path, encoding: Encoding, seq: u64) -> Result<Vec<u8>, PublishError> {
    match encoding {
        Encoding::Raw => std::fs::read(path).map_err(|e| PublishError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
        Encoding::Base64Jpeg => {
            let jpeg = jpeg_bytes(path)?;
            let stamped = stamp_jpeg(
                &jpeg,
                &format!("posture-farm publish {} #{seq}", jiff::Timestamp::now()),
            );
            Ok(base64::engine::general_purpose::STANDARD
                .encode(stamped)
                .into_bytes())
        }
    }
}

/// Publishes `files` per `plan` and returns once the broker acknowledged every
/// frame (QoS 1). Connection failures are retried until `plan.timeout`.
pub async fn publish_files(
    cfg: &MqttConfig,
    plan: &PublishPlan,
    files: &[PathBuf],
) -> Result<usize, PublishError> {
    let files = image_files(files)?;
    // Build every payload up front: a bad file fails before anything is sent.
    let mut payloads = Vec::new();
    let mut seq = 0u64;
    for _ in 0..plan.repeat.max(1) {
        for f in &files {
            seq += 1;
            payloads.push((f.clone(), frame_payload(f, plan.encoding, seq)?));
        }
    }
    let total = payloads.len();
    let options = cfg.options(true)?;
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let topic = plan.topic.clone();
    let interval = plan.interval;
    let sender = tokio::spawn(async move {
        for (i, (path, payload)) in payloads.into_iter().enumerate() {
            if i > 0 && !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            tracing::info!(file = %path.display(), %topic, bytes = payload.len(), "publishing");
            if let Err(e) = client
                .publish(topic.clone(), QoS::AtLeastOnce, false, payload)
                .await
            {
                return Err(e.to_string());
            }
        }
        Ok(client)
    });
    let started = tokio::time::Instant::now();
    let deadline = started + plan.timeout + interval * total as u32;
    let mut acked = 0usize;
    let mut sent = 0usize;
    let mut backoff = retries(
        Duration::from_millis(200),
        Duration::from_secs(5),
        &cfg.client_id,
    );
    let mut down_logged = false;
    while acked < total {
        let event = tokio::time::timeout_at(deadline, eventloop.poll()).await;
        match event {
            Err(_) => {
                return Err(PublishError::Timeout {
                    waited: started.elapsed(),
                    sent,
                    acked,
                });
            }
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(Event::Outgoing(Outgoing::Publish(_)))) => sent += 1,
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                backoff.reset();
                down_logged = false;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                if !down_logged {
                    tracing::warn!(error = %e, broker = %format!("{}:{}", cfg.host, cfg.port), "MQTT broker unreachable; retrying");
                    down_logged = true;
                }
                let delay = backoff.next_delay();
                if tokio::time::Instant::now() + delay > deadline {
                    return Err(PublishError::Timeout {
                        waited: started.elapsed(),
                        sent,
                        acked,
                    });
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
    let client = sender
        .await
        .map_err(|e| PublishError::Client(e.to_string()))?
        .map_err(PublishError::Client)?;
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_millis(500), eventloop.poll()).await;
    tracing::info!(frames = total, "every frame acknowledged by the broker");
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamped_jpegs_differ_but_decode_the_same() {
        let jpeg = crate::payload::tests::jpeg(32, 16);
        let a = stamp_jpeg(&jpeg, "one");
        let b = stamp_jpeg(&jpeg, "two");
        assert_ne!(a, b);
        let da = crate::payload::decode_payload(&a, &Default::default()).unwrap();
        let db = crate::payload::decode_payload(&jpeg, &Default::default()).unwrap();
        assert_eq!(da.image, db.image);
    }

    #[test]
    fn png_is_reencoded_and_base64_encoded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.png");
        std::fs::write(&p, crate::payload::tests::png(20, 10)).unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        let files = image_files(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(files, std::slice::from_ref(&p));
        let payload = frame_payload(&p, Encoding::Base64Jpeg, 1).unwrap();
        let d = crate::payload::decode_payload(&payload, &Default::default()).unwrap();
        assert_eq!(d.format, image::ImageFormat::Jpeg);
        assert_eq!(d.image.dimensions(), (20, 10));
        assert_eq!(
            frame_payload(&p, Encoding::Raw, 1).unwrap(),
            std::fs::read(&p).unwrap()
        );
        assert!(matches!(
            image_files(&[dir.path().join("nope")]),
            Err(PublishError::File { .. })
        ));
    }
}

//! Camera payload → oriented RGB image, with every kind of bad input named.
//!
//! Cameras send a base64 JPEG (sometimes wrapped in whitespace or a
//! `data:image/jpeg;base64,` prefix); raw JPEG or PNG bytes are accepted too.
//! Limits are checked before any pixel is decoded: the payload size first,
//! then the pixel count read from the image header, so a decompression bomb
//! costs a header parse and nothing more.

use std::io::Cursor;

use base64::Engine as _;
use image::{DynamicImage, ImageDecoder, ImageFormat, RgbImage};

/// Size and pixel-count limits for one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted payload, in bytes (as received, before base64 decoding).
    pub max_payload_bytes: usize,
    /// Largest accepted image, in pixels (width × height from the header).
    pub max_pixels: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // A 12 MP camera JPEG is ~5 MB, ~7 MB in base64.
            max_payload_bytes: 16 * 1024 * 1024,
            // 40 MP: above any camera the farm uses, far below a bomb.
            max_pixels: 40_000_000,
        }
    }
}

/// Why a payload can never be analysed. Each reason is a metric label and a
/// dead-letter sidecar field, so operators can tell the kinds apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// Nothing (or only whitespace) in the payload.
    Empty,
    /// Payload larger than [`Limits::max_payload_bytes`].
    TooLarge,
    /// Text (the base64 path) that does not decode as base64.
    BadBase64,
    /// Neither a JPEG/PNG image nor base64 text: binary data of another kind
    /// (another image format, random bytes), or base64 that decodes to
    /// something other than a JPEG/PNG.
    NotImage,
    /// The image header announces more pixels than [`Limits::max_pixels`].
    TooManyPixels,
    /// The image stops before its end (a JPEG without its end marker, a PNG cut short).
    Truncated,
    /// The image header or data is corrupt.
    Corrupt,
    /// The pose model failed on this image (it will fail again).
    ModelError,
    /// The outputs can never be written (e.g. a name the file system refuses).
    OutputError,
    /// The database refuses the row for good (a constraint, bad data).
    DbRejected,
}

impl RejectReason {
    /// Every reason, for pre-registering metric labels.
    pub const ALL: [RejectReason; 10] = [
        RejectReason::Empty,
        RejectReason::TooLarge,
        RejectReason::BadBase64,
        RejectReason::NotImage,
        RejectReason::TooManyPixels,
        RejectReason::Truncated,
        RejectReason::Corrupt,
        RejectReason::ModelError,
        RejectReason::OutputError,
        RejectReason::DbRejected,
    ];

    /// Snake-case label used in metrics, logs and sidecars.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Empty => "empty",
            RejectReason::TooLarge => "too_large",
            RejectReason::BadBase64 => "bad_base64",
            RejectReason::NotImage => "not_an_image",
            RejectReason::TooManyPixels => "too_many_pixels",
            RejectReason::Truncated => "truncated",
            RejectReason::Corrupt => "corrupt",
            RejectReason::ModelError => "model_error",
            RejectReason::OutputError => "output_error",
            RejectReason::DbRejected => "db_rejected",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A payload that cannot be analysed, with a human-readable detail.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Rejected {
    /// The kind of problem.
    pub reason: RejectReason,
    /// What exactly was wrong (sizes, decoder message).
    pub detail: String,
}

impl Rejected {
    fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// A decoded frame.
#[derive(Clone, Debug)]
pub struct DecodedImage {
    /// Pixels after EXIF orientation.
    pub image: RgbImage,
    /// The container format found.
    pub format: ImageFormat,
    /// The image bytes (base64 removed), from which the frame id is hashed.
    pub bytes: Vec<u8>,
}

const JPEG_MAGIC: &[u8] = &[0xFF, 0xD8, 0xFF];
const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Reads a file as a payload without ever holding more than the limit: its
/// length is checked first, and a file longer than `max_payload_bytes` (or
/// one that grew past it while being read) yields only its first
/// `prefix_bytes`. Returns the bytes read and the file's full length; the
/// caller rejects it as too large when that length is over the limit.
pub fn read_file_bounded(
    path: &std::path::Path,
    max_payload_bytes: usize,
    prefix_bytes: usize,
) -> std::io::Result<(Vec<u8>, usize)> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    let len = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
    let cap = if len > max_payload_bytes {
        prefix_bytes
    } else {
        max_payload_bytes.saturating_add(1)
    };
    let mut buf = Vec::with_capacity(len.min(cap));
    file.take(u64::try_from(cap).unwrap_or(u64::MAX))
        .read_to_end(&mut buf)?;
    if len > max_payload_bytes || buf.len() > max_payload_bytes {
        let total = len.max(buf.len());
        buf.truncate(prefix_bytes);
        return Ok((buf, total));
    }
    let total = buf.len();
    Ok((buf, total))
}

/// The rejection of a payload of `bytes` bytes, over [`Limits::max_payload_bytes`].
pub fn too_large(bytes: usize, limits: &Limits) -> Rejected {
    Rejected::new(
        RejectReason::TooLarge,
        format!(
            "payload is {bytes} bytes, the limit is {}",
            limits.max_payload_bytes
        ),
    )
}

/// Turns a payload into image bytes: raw JPEG/PNG as is, otherwise base64
/// (whitespace and a `data:` URL prefix tolerated, padding optional).
pub fn payload_bytes(payload: &[u8], limits: &Limits) -> Result<Vec<u8>, Rejected> {
    if payload.len() > limits.max_payload_bytes {
        return Err(too_large(payload.len(), limits));
    }
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Err(Rejected::new(RejectReason::Empty, "payload is empty"));
    }
    if payload.starts_with(JPEG_MAGIC) || payload.starts_with(PNG_MAGIC) {
        return Ok(payload.to_vec());
    }
    if !looks_like_text(payload) {
        return Err(Rejected::new(
            RejectReason::NotImage,
            format!(
                "binary data that is neither a JPEG/PNG image nor base64 text ({})",
                describe_binary(payload)
            ),
        ));
    }
    let mut text: &[u8] = payload.trim_ascii();
    if text.starts_with(b"data:") {
        match text.iter().position(|&b| b == b',') {
            Some(comma) if text[..comma].ends_with(b";base64") => text = &text[comma + 1..],
            _ => {
                return Err(Rejected::new(
                    RejectReason::BadBase64,
                    "a data: URL without ;base64 encoding",
                ));
            }
        }
    }
    let compact: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let bytes = engine.decode(&compact).map_err(|err| {
        Rejected::new(
            RejectReason::BadBase64,
            format!("neither raw JPEG/PNG nor base64: {err}"),
        )
    })?;
    if bytes.is_empty() {
        return Err(Rejected::new(
            RejectReason::Empty,
            "base64 decodes to nothing",
        ));
    }
    Ok(bytes)
}

/// Whether a payload is text (printable ASCII and whitespace, or UTF-8 text
/// without control characters): base64 is text, so anything else can only be
/// binary data.
fn looks_like_text(payload: &[u8]) -> bool {
    match std::str::from_utf8(payload) {
        Ok(text) => !text
            .chars()
            .any(|c| c.is_control() && !c.is_ascii_whitespace()),
        Err(_) => false,
    }
}

/// What a binary payload seems to be, for the dead-letter detail.
fn describe_binary(payload: &[u8]) -> String {
    const KNOWN: &[(&[u8], &str)] = &[
        (b"GIF87a", "a GIF image"),
        (b"GIF89a", "a GIF image"),
        (b"BM", "a BMP image"),
        (b"II*\0", "a TIFF image"),
        (b"MM\0*", "a TIFF image"),
        (b"\0\0\x01\0", "an ICO image"),
    ];
    let webp = payload.len() >= 12 && &payload[..4] == b"RIFF" && &payload[8..12] == b"WEBP";
    let heif = payload.len() >= 12 && &payload[4..8] == b"ftyp";
    let kind = if webp {
        Some("a WebP image")
    } else if heif {
        Some("an ISO media file (HEIC/AVIF/MP4)")
    } else {
        KNOWN
            .iter()
            .find(|(magic, _)| payload.starts_with(magic))
            .map(|(_, kind)| *kind)
    };
    let head: Vec<String> = payload.iter().take(8).map(|b| format!("{b:02x}")).collect();
    match kind {
        Some(kind) => format!("{kind}; only JPEG and PNG are accepted"),
        None => format!("first bytes {}", head.join(" ")),
    }
}

/// Decodes image bytes (JPEG or PNG) within `limits` and applies EXIF orientation.
pub fn decode_image(bytes: Vec<u8>, limits: &Limits) -> Result<DecodedImage, Rejected> {
    let format = if bytes.starts_with(JPEG_MAGIC) {
        ImageFormat::Jpeg
    } else if bytes.starts_with(PNG_MAGIC) {
        ImageFormat::Png
    } else {
        let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        return Err(Rejected::new(
            RejectReason::NotImage,
            format!("not a JPEG or PNG (first bytes {})", head.join(" ")),
        ));
    };
    let image = match format {
        ImageFormat::Jpeg => {
            if !jpeg_has_end_marker(&bytes) {
                return Err(Rejected::new(
                    RejectReason::Truncated,
                    "JPEG has no end-of-image marker (cut short)",
                ));
            }
            let decoder = image::codecs::jpeg::JpegDecoder::new(Cursor::new(&bytes))
                .map_err(|e| classify(e, "JPEG header"))?;
            decode_with(decoder, limits)?
        }
        _ => {
            let decoder = image::codecs::png::PngDecoder::new(Cursor::new(&bytes))
                .map_err(|e| classify(e, "PNG header"))?;
            decode_with(decoder, limits)?
        }
    };
    Ok(DecodedImage {
        image,
        format,
        bytes,
    })
}

/// [`payload_bytes`] then [`decode_image`].
pub fn decode_payload(payload: &[u8], limits: &Limits) -> Result<DecodedImage, Rejected> {
    decode_image(payload_bytes(payload, limits)?, limits)
}

fn decode_with(mut decoder: impl ImageDecoder, limits: &Limits) -> Result<RgbImage, Rejected> {
    let (w, h) = decoder.dimensions();
    let pixels = u64::from(w) * u64::from(h);
    if pixels > limits.max_pixels {
        return Err(Rejected::new(
            RejectReason::TooManyPixels,
            format!(
                "{w}×{h} = {pixels} pixels, the limit is {}",
                limits.max_pixels
            ),
        ));
    }
    if pixels == 0 {
        return Err(Rejected::new(
            RejectReason::Corrupt,
            format!("{w}×{h} image"),
        ));
    }
    let mut image_limits = image::Limits::default();
    // Decoded RGBA16 at most: 8 bytes per pixel, plus the decoder's own buffers.
    image_limits.max_alloc = Some(pixels.saturating_mul(8).saturating_add(64 << 20));
    decoder
        .set_limits(image_limits)
        .map_err(|e| classify(e, "limits"))?;
    // A broken EXIF block does not make the pixels wrong: fall back to no rotation.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| classify(e, "pixel data"))?;
    img.apply_orientation(orientation);
    Ok(img.into_rgb8())
}

fn classify(err: image::ImageError, stage: &str) -> Rejected {
    let text = err.to_string();
    let lower = text.to_ascii_lowercase();
    let reason = match &err {
        image::ImageError::Limits(_) => RejectReason::TooManyPixels,
        image::ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            RejectReason::Truncated
        }
        _ if lower.contains("eof") || lower.contains("end of") || lower.contains("no more") => {
            RejectReason::Truncated
        }
        _ => RejectReason::Corrupt,
    };
    Rejected::new(reason, format!("{stage}: {text}"))
}

/// Whether a JPEG ends with its EOI marker (FF D9), allowing trailing padding
/// some encoders add. The `image` crate decodes cut-short JPEGs leniently
/// (grey fill), so a missing marker is the reliable sign of truncation.
fn jpeg_has_end_marker(bytes: &[u8]) -> bool {
    let tail_start = bytes.len().saturating_sub(4096);
    bytes[tail_start..].windows(2).any(|w| w == [0xFF, 0xD9])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    /// A small JPEG (gradient) encoded in memory.
    pub(crate) fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, 128]));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&img)
            .unwrap();
        out
    }

    pub(crate) fn png(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, _| image::Rgb([x as u8, 0, 255]));
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn base64_jpeg_as_cameras_send_it() {
        let raw = jpeg(40, 30);
        let d = decode_payload(STANDARD.encode(&raw).as_bytes(), &Limits::default()).unwrap();
        assert_eq!(d.image.dimensions(), (40, 30));
        assert_eq!(d.format, ImageFormat::Jpeg);
        assert_eq!(d.bytes, raw);
    }

    #[test]
    fn whitespace_data_url_and_missing_padding_are_tolerated() {
        let raw = jpeg(17, 9);
        let b64 = STANDARD.encode(&raw);
        let wrapped: String = b64
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\r\n");
        let payload = format!("  data:image/jpeg;base64,{wrapped}\n");
        let d = decode_payload(payload.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(d.image.dimensions(), (17, 9));
        let unpadded = b64.trim_end_matches('=');
        assert!(decode_payload(unpadded.as_bytes(), &Limits::default()).is_ok());
    }

    #[test]
    fn raw_jpeg_and_png_bytes() {
        let d = decode_payload(&jpeg(8, 8), &Limits::default()).unwrap();
        assert_eq!(d.image.dimensions(), (8, 8));
        let d = decode_payload(&png(12, 5), &Limits::default()).unwrap();
        assert_eq!(
            (d.format, d.image.dimensions()),
            (ImageFormat::Png, (12, 5))
        );
        assert_eq!(d.image.get_pixel(3, 2), &image::Rgb([3, 0, 255]));
    }

    fn reason(payload: &[u8], limits: &Limits) -> RejectReason {
        decode_payload(payload, limits).unwrap_err().reason
    }

    #[test]
    fn each_bad_input_kind_has_its_reason() {
        let l = Limits::default();
        assert_eq!(reason(b"", &l), RejectReason::Empty);
        assert_eq!(reason(b" \n\t", &l), RejectReason::Empty);
        assert_eq!(reason(b"not base64 at all!", &l), RejectReason::BadBase64);
        assert_eq!(
            reason(b"data:text/plain,hello", &l),
            RejectReason::BadBase64
        );
        let text = STANDARD.encode(b"hello, this is plain text, not an image");
        assert_eq!(reason(text.as_bytes(), &l), RejectReason::NotImage);
        let raw = jpeg(64, 48);
        let cut = &raw[..raw.len() / 2];
        assert_eq!(reason(cut, &l), RejectReason::Truncated);
        assert_eq!(
            reason(STANDARD.encode(cut).as_bytes(), &l),
            RejectReason::Truncated
        );
        let p = png(64, 48);
        let r = decode_payload(&p[..p.len() - 30], &l).unwrap_err();
        assert!(
            matches!(r.reason, RejectReason::Truncated | RejectReason::Corrupt),
            "{r:?}"
        );
        let mut garbage = JPEG_MAGIC.to_vec();
        garbage.extend_from_slice(&[0x00; 64]);
        garbage.extend_from_slice(&[0xFF, 0xD9]);
        // Markers with nothing decodable between them: cut-short or corrupt.
        assert!(matches!(
            reason(&garbage, &l),
            RejectReason::Corrupt | RejectReason::Truncated
        ));
        // A PNG whose header chunk is damaged (checksums fail) is corrupt.
        let mut bad_png = png(8, 8);
        bad_png[20] ^= 0xFF;
        assert_eq!(reason(&bad_png, &l), RejectReason::Corrupt);
        let small = Limits {
            max_payload_bytes: 100,
            ..l
        };
        assert_eq!(reason(&[b'A'; 101], &small), RejectReason::TooLarge);
    }

    #[test]
    fn pixel_limit_is_checked_from_the_header() {
        let few = Limits {
            max_pixels: 64 * 48 - 1,
            ..Limits::default()
        };
        assert_eq!(reason(&jpeg(64, 48), &few), RejectReason::TooManyPixels);
        assert_eq!(reason(&png(64, 48), &few), RejectReason::TooManyPixels);
        // A "bomb": a PNG header claiming 100k × 100k with no data behind it
        // is refused on the header, before any allocation.
        let mut bomb = png(1, 1);
        // IHDR width/height live at bytes 16..24.
        bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let r = decode_payload(&bomb, &Limits::default()).unwrap_err();
        assert!(
            matches!(
                r.reason,
                RejectReason::TooManyPixels | RejectReason::Corrupt
            ),
            "{r:?}"
        );
    }

    #[test]
    fn exif_orientation_is_applied() {
        // A 40×20 JPEG with an APP1 EXIF block saying "rotate 90° CW" (6).
        let raw = jpeg(40, 20);
        let exif: Vec<u8> = {
            let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08".to_vec();
            tiff.extend_from_slice(&1u16.to_be_bytes()); // one IFD entry
            tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
            tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
            tiff.extend_from_slice(&1u32.to_be_bytes()); // count
            tiff.extend_from_slice(&6u16.to_be_bytes());
            tiff.extend_from_slice(&[0, 0]);
            tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
            let mut app1 = b"Exif\x00\x00".to_vec();
            app1.extend_from_slice(&tiff);
            let mut seg = vec![0xFF, 0xE1];
            seg.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
            seg.extend_from_slice(&app1);
            seg
        };
        let mut with_exif = raw[..2].to_vec();
        with_exif.extend_from_slice(&exif);
        with_exif.extend_from_slice(&raw[2..]);
        let d = decode_payload(&with_exif, &Limits::default()).unwrap();
        assert_eq!(d.image.dimensions(), (20, 40));
    }

    #[test]
    fn binary_that_is_no_image_is_not_an_image_and_text_that_fails_is_bad_base64() {
        let l = Limits::default();
        // Random binary data (a fixed xorshift stream): not text, so not base64 either.
        let mut x: u32 = 0x9E37_79B9;
        let random: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let r = decode_payload(&random, &l).unwrap_err();
        assert_eq!(r.reason, RejectReason::NotImage, "{r:?}");
        assert_eq!(r.reason.as_str(), "not_an_image");
        // Other image formats are binary too, and named.
        let gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff";
        let r = decode_payload(gif, &l).unwrap_err();
        assert_eq!(r.reason, RejectReason::NotImage);
        assert!(r.detail.contains("GIF"), "{}", r.detail);
        // A NUL or a control byte in otherwise base64-looking data: binary.
        assert_eq!(reason(b"QUJD\x00REVG", &l), RejectReason::NotImage);
        // Text that does not decode stays bad_base64, whatever its characters.
        assert_eq!(reason(b"not base64 at all!", &l), RejectReason::BadBase64);
        assert_eq!(reason("QUJD€€".as_bytes(), &l), RejectReason::BadBase64);
        assert_eq!(reason(b"QUJDRA=x", &l), RejectReason::BadBase64);
    }

    #[test]
    fn files_over_the_limit_yield_only_a_prefix_and_their_length() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small.jpg");
        std::fs::write(&small, jpeg(8, 8)).unwrap();
        let (bytes, total) = read_file_bounded(&small, 10_000, 100).unwrap();
        assert_eq!((bytes.len(), total), (jpeg(8, 8).len(), jpeg(8, 8).len()));
        // A sparse 3 GB file: only 100 bytes are read.
        let big = dir.path().join("big.jpg");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(3_000_000_000).unwrap();
        let (bytes, total) = read_file_bounded(&big, 10_000, 100).unwrap();
        assert_eq!((bytes.len(), total), (100, 3_000_000_000));
        // Exactly at the limit is fine; one byte over is not.
        std::fs::write(&small, [7u8; 10_001]).unwrap();
        let (bytes, total) = read_file_bounded(&small, 10_000, 100).unwrap();
        assert_eq!((bytes.len(), total), (100, 10_001));
        let (bytes, total) = read_file_bounded(&small, 10_001, 100).unwrap();
        assert_eq!((bytes.len(), total), (10_001, 10_001));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_payloads_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            let _ = decode_payload(&bytes, &Limits::default());
            let mut jpeg_like = JPEG_MAGIC.to_vec();
            jpeg_like.extend_from_slice(&bytes);
            let _ = decode_payload(&jpeg_like, &Limits::default());
        }

        #[test]
        fn whitespace_anywhere_in_base64_is_ignored(cuts in proptest::collection::vec(0usize..2000, 0..20)) {
            let raw = jpeg(24, 16);
            let mut text = STANDARD.encode(&raw).into_bytes();
            for c in cuts {
                let at = c % (text.len() + 1);
                text.insert(at, b"\n \t\r"[c % 4]);
            }
            let d = decode_payload(&text, &Limits::default()).unwrap();
            proptest::prop_assert_eq!(d.bytes, raw);
        }
    }
}

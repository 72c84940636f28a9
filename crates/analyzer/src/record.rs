//! One analysed frame as a row: the shape shared by the CSV file, the
//! `posture_log` table and the spool that stands in for the table while the
//! database is away.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A `posture_log` row (without the database-assigned `id`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PostureRow {
    /// Camera id (`pi1`), the `pi_id` column.
    pub pi_id: String,
    /// File name of the annotated image.
    pub filename: String,
    /// When the frame arrived (RFC 3339, UTC).
    pub received_time: String,
    /// When analysis finished (RFC 3339, UTC).
    pub analyzed_time: String,
    /// Neck inclination in degrees, when measured.
    pub neck_angle: Option<f64>,
    /// Torso inclination in degrees, when measured.
    pub body_angle: Option<f64>,
    /// `Good`, `Bad`, `No person detected` or `Unmeasurable`.
    pub posture_status: String,
    /// Whether a person's landmarks were found.
    pub landmarks_detected: bool,
    /// Node (or host) that analysed the frame.
    pub processed_by: String,
    /// Content hash of camera + image bytes: a redelivered frame has the same
    /// id, so the unique index on it turns a second insert into a no-op.
    pub frame_id: String,
}

/// A row's time: RFC 3339 in UTC with exactly six fractional digits. Fixed
/// width, so times sort as text (SQLite); microseconds, so PostgreSQL
/// stores them exactly and `results export` prints them back unchanged.
pub fn row_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The frame id: the first 128 bits of SHA-256 over the camera id and the
/// image bytes, in hex.
pub fn frame_id(camera: &str, bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(camera.as_bytes());
    h.update([0u8]);
    h.update(bytes);
    let digest = h.finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The CSV header, in column order of [`PostureRow::csv_line`].
pub const CSV_HEADER: &str = "pi_id,filename,received_time,analyzed_time,neck_angle,body_angle,posture_status,landmarks_detected,processed_by,frame_id";

impl PostureRow {
    /// One CSV line (RFC 4180 quoting, text fields neutralised against
    /// spreadsheet formulas), newline included. The frame id is last so
    /// de-duplication can read it without a CSV parser.
    pub fn csv_line(&self) -> String {
        let angle = |a: Option<f64>| a.map(|v| format!("{v:.2}")).unwrap_or_default();
        let fields = [
            csv_field(&self.pi_id),
            csv_field(&self.filename),
            csv_field(&self.received_time),
            csv_field(&self.analyzed_time),
            angle(self.neck_angle),
            angle(self.body_angle),
            csv_field(&self.posture_status),
            self.landmarks_detected.to_string(),
            csv_field(&self.processed_by),
            csv_field(&self.frame_id),
        ];
        let mut line = fields.join(",");
        line.push('\n');
        line
    }
}

/// A text field for the CSV: a leading `=`, `+`, `-`, `@`, tab or carriage
/// return would make a spreadsheet run the cell as a formula (OWASP "CSV
/// injection"), so such a field gets a `'` in front; then RFC 4180 quoting.
fn csv_field(s: &str) -> String {
    let neutral = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{s}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    };
    if neutral.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", neutral.replace('"', "\"\""))
    } else {
        neutral.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_times_are_fixed_width_utc_microseconds() {
        let t: jiff::Timestamp = "2026-11-23T10:00:00.123456789+02:00".parse().unwrap();
        assert_eq!(row_time(t), "2026-11-23T08:00:00.123456Z");
        let whole: jiff::Timestamp = "2026-11-23T08:00:00Z".parse().unwrap();
        assert_eq!(row_time(whole), "2026-11-23T08:00:00.000000Z");
        assert!(row_time(whole) < row_time(t));
    }

    #[test]
    fn frame_id_depends_on_camera_and_bytes() {
        let a = frame_id("pi1", b"abc");
        assert_eq!(a.len(), 32);
        assert_eq!(a, frame_id("pi1", b"abc"));
        assert_ne!(a, frame_id("pi2", b"abc"));
        assert_ne!(a, frame_id("pi1", b"abd"));
    }

    #[test]
    fn csv_line_quotes_and_keeps_frame_id_last() {
        let row = PostureRow {
            pi_id: "pi1".into(),
            filename: "a,b.jpg".into(),
            received_time: "t0".into(),
            analyzed_time: "t1".into(),
            neck_angle: Some(12.345),
            body_angle: None,
            posture_status: "Good".into(),
            landmarks_detected: true,
            processed_by: "node \"x\"".into(),
            frame_id: "ff00".into(),
        };
        assert_eq!(
            row.csv_line(),
            "pi1,\"a,b.jpg\",t0,t1,12.35,,Good,true,\"node \"\"x\"\"\",ff00\n"
        );
        assert_eq!(CSV_HEADER.split(',').count(), 10);
    }

    #[test]
    fn csv_text_fields_cannot_start_a_formula() {
        let row = PostureRow {
            pi_id: "=HYPERLINK(\"http://x\",\"y\")".into(),
            filename: "+1.jpg".into(),
            received_time: "t0".into(),
            analyzed_time: "t1".into(),
            neck_angle: Some(1.0),
            body_angle: Some(2.0),
            posture_status: "-2+3".into(),
            landmarks_detected: false,
            processed_by: "@SUM(A1)".into(),
            frame_id: "ff".into(),
        };
        assert_eq!(
            row.csv_line(),
            "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\",'+1.jpg,t0,t1,1.00,2.00,'-2+3,false,'@SUM(A1),ff\n"
        );
        let tab = PostureRow {
            pi_id: "\tcmd".into(),
            processed_by: "\rcmd".into(),
            ..row
        };
        let line = tab.csv_line();
        assert!(line.starts_with("'\tcmd,"), "{line:?}");
        assert!(line.contains(",\"'\rcmd\","), "{line:?}");
    }
}

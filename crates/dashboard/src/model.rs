//! What the pages show, independent of the database: one analysed frame,
//! its verdict, and time helpers (the dashboard's time zone, parsing the
//! times different `posture_log` tables hold).

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// A `posture_log` row as the dashboard reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// Database id (`posture_log.id`).
    pub id: i64,
    /// Camera id (`pi_id`).
    pub camera: String,
    /// Annotated image file name as the analyzer wrote it.
    pub filename: String,
    /// When the frame arrived at the analyzer.
    pub received: Timestamp,
    /// Neck inclination in degrees, when measured.
    pub neck: Option<f64>,
    /// Torso inclination in degrees, when measured.
    pub torso: Option<f64>,
    /// The verdict column as stored (`Good`, `Bad`, `No person detected`, …).
    pub status: String,
    /// Which node analysed it.
    pub processed_by: String,
    /// Content hash, the key of `posture_image` (empty in legacy rows).
    pub frame_id: String,
}

impl Frame {
    /// The verdict, parsed.
    pub fn verdict(&self) -> Verdict {
        Verdict::parse(&self.status)
    }
}

/// A frame's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Both angles under their thresholds.
    Good,
    /// At least one angle at or above its threshold.
    Bad,
    /// No person found in the frame.
    NoPerson,
    /// Anything else the analyzer wrote (e.g. `Unmeasurable`).
    Other,
}

impl Verdict {
    /// Parses the `posture_status` column.
    pub fn parse(status: &str) -> Self {
        match status.trim() {
            "Good" => Verdict::Good,
            "Bad" => Verdict::Bad,
            s if s.eq_ignore_ascii_case("No person detected") => Verdict::NoPerson,
            _ => Verdict::Other,
        }
    }

    /// Short label for badges.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Good => "Good",
            Verdict::Bad => "Bad",
            Verdict::NoPerson => "No person",
            Verdict::Other => "Unmeasured",
        }
    }

    /// CSS class of the badge.
    pub fn css(self) -> &'static str {
        match self {
            Verdict::Good => "good",
            Verdict::Bad => "bad",
            Verdict::NoPerson | Verdict::Other => "none",
        }
    }
}

/// Parses a time as `posture_log` holds it in SQLite: RFC 3339 (what the
/// analyzer writes), or `YYYY-MM-DD HH:MM:SS[.f]` without an offset, read as
/// UTC (what older writers stored).
pub fn parse_db_time(text: &str) -> Option<Timestamp> {
    let text = text.trim();
    if let Ok(t) = text.parse::<Timestamp>() {
        return Some(t);
    }
    let civil: jiff::civil::DateTime = text.replacen(' ', "T", 1).parse().ok()?;
    civil.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
}

/// A timestamp from seconds since the epoch (PostgreSQL's `extract(epoch …)`).
pub fn from_epoch(secs: f64) -> Option<Timestamp> {
    if !secs.is_finite() {
        return None;
    }
    let whole = secs.floor();
    let nanos = ((secs - whole) * 1e9).round().min(999_999_999.0) as i32;
    Timestamp::new(whole as i64, nanos).ok()
}

/// Seconds since the epoch, with fractions.
pub fn epoch(t: Timestamp) -> f64 {
    t.as_second() as f64 + f64::from(t.subsec_nanosecond()) / 1e9
}

/// How times are shown: in one time zone, named on every page.
#[derive(Clone, Debug)]
pub struct Clock {
    /// The zone times are shown in.
    pub tz: TimeZone,
}

impl Default for Clock {
    fn default() -> Self {
        Self { tz: TimeZone::UTC }
    }
}

impl Clock {
    /// A clock showing times in the zone named `name` (IANA, e.g.
    /// `Europe/Paris`, or `UTC`), or the system's zone for `None`.
    pub fn new(name: Option<&str>) -> Result<Self, jiff::Error> {
        let tz = match name {
            Some(n) if n.eq_ignore_ascii_case("utc") => TimeZone::UTC,
            Some(n) => TimeZone::get(n)?,
            None => TimeZone::try_system().unwrap_or(TimeZone::UTC),
        };
        Ok(Self { tz })
    }

    /// The zone's name (`UTC`, `Europe/Paris`, …).
    pub fn zone_name(&self) -> String {
        self.tz.iana_name().unwrap_or("UTC").to_string()
    }

    /// `2026-11-23 10:00:01`.
    pub fn datetime(&self, t: Timestamp) -> String {
        t.to_zoned(self.tz.clone())
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string()
    }

    /// `10:00:01`.
    pub fn time(&self, t: Timestamp) -> String {
        t.to_zoned(self.tz.clone()).strftime("%H:%M:%S").to_string()
    }

    /// `2026-11-23T10:00` (the value of a `datetime-local` input).
    pub fn input_value(&self, t: Timestamp) -> String {
        t.to_zoned(self.tz.clone())
            .strftime("%Y-%m-%dT%H:%M")
            .to_string()
    }

    /// Parses a `datetime-local` value (`2026-11-23T10:00`, seconds
    /// optional) or an RFC 3339 time; local values are in this clock's zone.
    pub fn parse_input(&self, text: &str) -> Option<Timestamp> {
        let text = text.trim();
        if let Ok(t) = text.parse::<Timestamp>() {
            return Some(t);
        }
        let civil: jiff::civil::DateTime = text.parse().ok()?;
        civil.to_zoned(self.tz.clone()).ok().map(|z| z.timestamp())
    }
}

/// A `--since`/`--until` value: a duration before `now` (`90m`, `24h`,
/// `7d`, `2w`), an RFC 3339 time, a date and time in `clock`'s zone
/// (`2026-11-23T10:00`, `2026-11-23 10:00`), or a date (its midnight there).
pub fn parse_when(text: &str, now: Timestamp, clock: &Clock) -> Option<Timestamp> {
    let t = text.trim();
    let units: [(char, i64); 5] = [
        ('s', 1),
        ('m', 60),
        ('h', 3600),
        ('d', 86_400),
        ('w', 604_800),
    ];
    for (unit, secs) in units {
        if let Some(n) = t
            .strip_suffix(unit)
            .and_then(|n| n.trim().parse::<i64>().ok())
        {
            return Timestamp::from_second(now.as_second().checked_sub(n.checked_mul(secs)?)?).ok();
        }
    }
    if let Some(ts) = clock.parse_input(&t.replacen(' ', "T", 1)) {
        return Some(ts);
    }
    let date: jiff::civil::Date = t.parse().ok()?;
    date.to_zoned(clock.tz.clone()).ok().map(|z| z.timestamp())
}

/// "12 s", "5 min", "3 h 20 min", "2 d 4 h": a duration for people.
pub fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86_400 => {
            let (h, m) = (secs / 3600, secs % 3600 / 60);
            if m == 0 {
                format!("{h} h")
            } else {
                format!("{h} h {m} min")
            }
        }
        _ => {
            let (d, h) = (secs / 86_400, secs % 86_400 / 3600);
            if h == 0 {
                format!("{d} d")
            } else {
                format!("{d} d {h} h")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_times_tables_hold() {
        let t = parse_db_time("2026-11-23T10:00:01.25Z").unwrap();
        assert_eq!(t.as_second(), 1_795_428_001);
        assert_eq!(t.subsec_millisecond(), 250);
        assert_eq!(
            parse_db_time("2026-11-23 10:00:01").unwrap().as_second(),
            1_795_428_001
        );
        assert_eq!(
            parse_db_time("2026-11-23T11:00:01+01:00")
                .unwrap()
                .as_second(),
            1_795_428_001
        );
        assert!(parse_db_time("yesterday").is_none());
        let e = from_epoch(1_795_428_001.25).unwrap();
        assert_eq!(e, t);
        assert!((epoch(e) - 1_795_428_001.25).abs() < 1e-6);
        // SQLite range bounds are the analyzer's fixed-width row times, so a
        // row stamped 10:00:01.1 sorts below a bound at 10:00:01.25.
        let bound = posture_analyzer::record::row_time(t);
        assert_eq!(bound, "2026-11-23T10:00:01.250000Z");
        assert!("2026-11-23T10:00:01.100000Z" < bound.as_str());
        assert!("2026-11-23T10:00:01.250000Z" >= bound.as_str());
    }

    #[test]
    fn verdicts_and_durations_read_well() {
        assert_eq!(Verdict::parse("Good"), Verdict::Good);
        assert_eq!(Verdict::parse("No person detected"), Verdict::NoPerson);
        assert_eq!(Verdict::parse("Unmeasurable"), Verdict::Other);
        assert_eq!(human_duration(42), "42 s");
        assert_eq!(human_duration(300), "5 min");
        assert_eq!(human_duration(3600 * 3 + 1200), "3 h 20 min");
        assert_eq!(human_duration(86_400 * 2 + 3600 * 4), "2 d 4 h");
    }

    #[test]
    fn clock_reads_and_writes_local_inputs() {
        let c = Clock::new(Some("UTC")).unwrap();
        let t = c.parse_input("2026-11-23T10:00").unwrap();
        assert_eq!(c.input_value(t), "2026-11-23T10:00");
        assert_eq!(c.datetime(t), "2026-11-23 10:00:00");
        let paris = Clock::new(Some("Europe/Paris")).unwrap();
        assert_eq!(paris.time(t), "11:00:00");
        let now = t;
        assert_eq!(
            parse_when("24h", now, &c).unwrap().as_second(),
            t.as_second() - 86_400
        );
        assert_eq!(
            parse_when("7d", now, &c).unwrap().as_second(),
            t.as_second() - 7 * 86_400
        );
        assert_eq!(parse_when("2026-11-23 10:00", now, &c), Some(t));
        assert_eq!(
            parse_when("2026-11-23T09:00:00Z", now, &c)
                .unwrap()
                .as_second(),
            t.as_second() - 3600
        );
        assert_eq!(
            parse_when("2026-11-23", now, &paris).unwrap().as_second(),
            t.as_second() - 11 * 3600
        );
        assert!(parse_when("soon", now, &c).is_none());
    }
}

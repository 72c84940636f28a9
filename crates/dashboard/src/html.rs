//! HTML building blocks shared by every page and the report: escaping,
//! URL encoding, the page frame (header, navigation, footer) and the
//! embedded assets. Pages are plain server-rendered HTML; the one script
//! only refreshes the live region when the server says something changed.

use std::fmt::Write as _;

use crate::live::DbHealth;
use crate::model::{Clock, human_duration};

/// The stylesheet (embedded; served at `/static/style.css`, inlined in the report).
pub const STYLE: &str = include_str!("../assets/style.css");
/// The live-update script (embedded; served at `/static/live.js`).
pub const LIVE_JS: &str = include_str!("../assets/live.js");

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes `s` for a URL path segment or query value.
pub fn url_part(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Which page is shown (the navigation marks it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nav {
    /// The overview.
    Overview,
    /// A camera page.
    Camera,
    /// The farm page.
    Farm,
}

/// The part of a page the live script refreshes.
#[derive(Clone, Debug)]
pub struct LiveRegion {
    /// `overview`, `camera` or `farm`: which events concern it.
    pub kind: &'static str,
    /// URL of the region's fragment.
    pub src: String,
    /// For a camera page: its camera.
    pub camera: Option<String>,
    /// Whether the region follows new frames (its range ends now).
    pub follow: bool,
}

/// Everything around a page's content.
pub struct PageMeta<'a> {
    /// `<title>` and `<h1>`.
    pub title: &'a str,
    /// Which navigation entry is current.
    pub nav: Nav,
    /// The live region, if the page has one.
    pub live: Option<LiveRegion>,
    /// Time zone the page shows times in.
    pub clock: &'a Clock,
    /// Database description for the footer.
    pub database: &'a str,
}

/// A whole page: head, header with navigation, `body`, footer, script.
pub fn page(meta: &PageMeta, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 2048);
    let live_attrs = meta.live.as_ref().map_or(String::new(), |l| {
        format!(
            r#" data-live="{}" data-src="{}" data-follow="{}"{}"#,
            l.kind,
            esc(&l.src),
            if l.follow { "1" } else { "0" },
            l.camera
                .as_ref()
                .map_or(String::new(), |c| format!(r#" data-camera="{}""#, esc(c)))
        )
    });
    let current = |n: Nav| {
        if n == meta.nav {
            r#" aria-current="page""#
        } else {
            ""
        }
    };
    let _ = write!(
        out,
        r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · posture-farm</title><link rel="stylesheet" href="/static/style.css"></head>
<body{live_attrs}><a class="skip" href="#main">Skip to content</a>
<header class="top"><div class="brand"><span class="logo" aria-hidden="true">◆</span> posture-farm</div>
<nav aria-label="Main"><a href="/"{o}>Overview</a><a href="/farm"{f}>Farm</a></nav>
<p class="live-status" role="status"><span class="dot" aria-hidden="true"></span><span id="live-status">{status}</span></p></header>
<main id="main">{body}</main>
<footer>Database: {db} · times in {tz} · read-only</footer>
<script src="/static/live.js" defer></script></body></html>"##,
        title = esc(meta.title),
        o = current(Nav::Overview),
        f = current(Nav::Farm),
        status = if meta.live.is_some() {
            "connecting…"
        } else {
            "static page"
        },
        db = esc(meta.database),
        tz = esc(&meta.clock.zone_name()),
    );
    out
}

/// A warning banner while the database does not answer, or before the
/// first statistics are in.
pub fn db_banner(health: &DbHealth, loaded: bool, clock: &Clock, now: jiff::Timestamp) -> String {
    match (&health.error, health.failing_since) {
        (Some(err), since) => {
            let since = since.map_or(String::new(), |s| {
                format!(
                    " since {} ({} ago)",
                    clock.datetime(s),
                    human_duration(now.as_second() - s.as_second())
                )
            });
            format!(
                r#"<div class="banner warn" role="alert"><strong>The database does not answer{since}.</strong> Showing what was read before; retrying every second. <span class="detail">{}</span></div>"#,
                esc(err)
            )
        }
        (None, _) if !loaded => {
            r#"<div class="banner info" role="status">Reading the last day of frames…</div>"#
                .to_string()
        }
        _ => String::new(),
    }
}

/// `75 %` or `–`.
pub fn percent(v: Option<f64>) -> String {
    v.map_or("–".to_string(), |v| format!("{v:.0} %"))
}

/// `12.3°` or `–`.
pub fn degrees(v: Option<f64>) -> String {
    v.map_or("–".to_string(), |v| format!("{v:.1}°"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_encodes() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(url_part("pi 1/ä"), "pi%201%2F%C3%A4");
        assert_eq!(percent(Some(74.6)), "75 %");
        assert_eq!(degrees(None), "–");
    }
}

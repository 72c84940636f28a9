//! The overview: one card per camera with its latest annotated image,
//! verdict and angles, Good % over the last hour and day, frames per
//! minute and when it was last seen (a silent camera is flagged).
//!
//! Statistics come from memory ([`crate::live`]); the only queries are one
//! indexed `LIMIT 1` per camera for its newest stored image.

use std::fmt::Write as _;

use jiff::Timestamp;

use crate::db::{DbError, ImageRef, ReadOnlyDb};
use crate::html::{LiveRegion, Nav, PageMeta, db_banner, degrees, esc, page, percent, url_part};
use crate::live::{DbHealth, Live};
use crate::model::{Clock, human_duration};
use crate::stats::{CameraSummary, Counts};

/// One card's data.
#[derive(Clone, Debug)]
pub struct Card {
    /// The camera's statistics.
    pub summary: CameraSummary,
    /// Its newest stored image.
    pub image: Option<ImageRef>,
}

/// What the overview shows.
#[derive(Clone, Debug)]
pub struct Overview {
    /// Cards, by camera id.
    pub cards: Vec<Card>,
    /// Database state.
    pub health: DbHealth,
    /// Whether statistics were built once.
    pub loaded: bool,
    /// When it was read.
    pub now: Timestamp,
}

/// Reads the overview: statistics from `live`, one image lookup per camera.
pub async fn load(live: &Live, db: &ReadOnlyDb, silent_after_secs: i64) -> Overview {
    let now = Timestamp::now();
    let summaries = live.summaries(now, silent_after_secs);
    let mut cards = Vec::with_capacity(summaries.len());
    let mut failure: Option<DbError> = None;
    for summary in summaries {
        let image = match db.latest_image(&summary.camera).await {
            Ok(i) => i,
            Err(e) => {
                failure.get_or_insert(e);
                None
            }
        };
        cards.push(Card { summary, image });
    }
    let mut health = live.health();
    if let (Some(e), None) = (failure, &health.error) {
        health.error = Some(posture_analyzer::error_chain(&e));
    }
    Overview {
        cards,
        health,
        loaded: live.loaded(),
        now,
    }
}

fn good_share(c: &Counts) -> String {
    match c.good_percent() {
        Some(p) => format!(
            "{} <small>of {} judged</small>",
            percent(Some(p)),
            c.good + c.bad
        ),
        None if c.frames > 0 => format!("– <small>{} frames, nobody in view</small>", c.frames),
        None => "– <small>no frames</small>".to_string(),
    }
}

fn card_image(out: &mut String, card: &Card, clock: &Clock, href: &str) {
    let s = &card.summary;
    let Some(img) = &card.image else {
        let _ = write!(
            out,
            r#"<a class="shot placeholder" href="{href}" role="img" aria-label="No annotated image kept for {cam}"><span>No image kept</span><small>none stored, or removed by retention</small></a>"#,
            cam = esc(&s.camera)
        );
        return;
    };
    let same = s.latest.as_ref().filter(|f| f.frame_id == img.frame_id);
    let alt = match same {
        Some(f) => format!(
            "Latest annotated frame from {}, {}: {}, neck {}, torso {}",
            s.camera,
            clock.datetime(f.received),
            f.verdict().label(),
            degrees(f.neck),
            degrees(f.torso)
        ),
        None => format!(
            "Newest kept annotated frame from {}{}",
            s.camera,
            img.analyzed
                .map_or(String::new(), |t| format!(", {}", clock.datetime(t)))
        ),
    };
    let _ = write!(
        out,
        r#"<a class="shot" href="{href}"><img src="/image/{}" alt="{}" width="320" height="240"></a>"#,
        url_part(&img.frame_id),
        esc(&alt)
    );
    if same.is_none() {
        let _ = write!(
            out,
            r#"<p class="shot-note">Image of an earlier frame{}</p>"#,
            img.analyzed
                .map_or(String::new(), |t| format!(" ({})", clock.time(t)))
        );
    }
}

fn card_stats(out: &mut String, s: &CameraSummary, clock: &Clock) {
    let latest = s.latest.as_ref();
    let _ = write!(
        out,
        r#"<p class="angles"><span>Neck <b class="neck">{}</b></span><span>Torso <b class="torso">{}</b></span></p>"#,
        degrees(latest.and_then(|f| f.neck)),
        degrees(latest.and_then(|f| f.torso))
    );
    let seen = match (latest, s.age_secs) {
        (Some(f), Some(age)) => format!(
            r#"{} ago <small><time datetime="{}">{}</time></small>"#,
            human_duration(age),
            f.received,
            if age < 86_400 {
                clock.time(f.received)
            } else {
                clock.datetime(f.received)
            }
        ),
        _ => "never".to_string(),
    };
    let _ = write!(
        out,
        r#"<dl class="stats"><div><dt>Good, last hour</dt><dd class="good-hour" data-frames="{hf}">{hour}</dd></div><div><dt>Good, last day</dt><dd class="good-day" data-frames="{df}">{day}</dd></div><div><dt>Frames per minute</dt><dd class="fpm">{fpm:.1}</dd></div><div><dt>Last seen</dt><dd class="last-seen">{seen}</dd></div></dl>"#,
        hf = s.hour.frames,
        df = s.day.frames,
        hour = good_share(&s.hour),
        day = good_share(&s.day),
        fpm = s.per_minute,
    );
}

fn card(out: &mut String, card: &Card, clock: &Clock) {
    let s = &card.summary;
    let cam = esc(&s.camera);
    let id = url_part(&s.camera);
    let href = format!("/camera/{id}");
    let verdict = s.latest.as_ref().map(|f| f.verdict());
    let _ = write!(
        out,
        r#"<article class="card{silent}" data-camera="{cam}" data-verdict="{v}" aria-labelledby="cam-{id}">"#,
        silent = if s.silent { " silent" } else { "" },
        v = verdict.map_or("", |v| v.label()),
    );
    card_image(out, card, clock, &href);
    let _ = write!(
        out,
        r#"<div class="card-body"><div class="card-head"><h2 id="cam-{id}"><a href="{href}">{cam}</a></h2>"#
    );
    if let Some(v) = verdict {
        let _ = write!(
            out,
            r#"<span class="badge {}">{}</span>"#,
            v.css(),
            v.label()
        );
    }
    if s.silent {
        let _ = write!(
            out,
            r#"<span class="badge silent">Silent{}</span>"#,
            s.age_secs
                .map_or(String::new(), |a| format!(" {}", human_duration(a)))
        );
    }
    out.push_str("</div>");
    card_stats(out, s, clock);
    out.push_str("</div></article>");
}

/// The live region: banner and cards.
pub fn fragment(o: &Overview, clock: &Clock) -> String {
    let mut out = db_banner(&o.health, o.loaded, clock, o.now);
    if o.cards.is_empty() && o.loaded {
        out.push_str(r#"<p class="empty-state">No camera has sent a frame yet. Frames appear here as soon as an analyzer writes them.</p>"#);
        return out;
    }
    let silent = o.cards.iter().filter(|c| c.summary.silent).count();
    let _ = write!(
        out,
        r#"<p class="sub">{} camera{}{}</p><div class="cards">"#,
        o.cards.len(),
        if o.cards.len() == 1 { "" } else { "s" },
        if silent > 0 {
            format!(" · <strong class=\"warn-text\">{silent} silent</strong>")
        } else {
            String::new()
        }
    );
    for c in &o.cards {
        card(&mut out, c, clock);
    }
    out.push_str("</div>");
    out
}

/// The whole page.
pub fn page_html(o: &Overview, clock: &Clock, database: &str) -> String {
    let body = format!(
        r#"<h1>Cameras</h1><div id="live" aria-live="off">{}</div>"#,
        fragment(o, clock)
    );
    page(
        &PageMeta {
            title: "Cameras",
            nav: Nav::Overview,
            live: Some(LiveRegion {
                kind: "overview",
                src: "/fragment/overview".into(),
                camera: None,
                follow: true,
            }),
            clock,
            database,
        },
        &body,
    )
}

//! The HTTP side: routes, handlers, Server-Sent Events, CSV download,
//! images and the embedded assets. Handlers read (the live statistics, the
//! farm's last reading, a few bounded queries) and hand plain data to the
//! page renderers.
//!
//! | route | what |
//! |---|---|
//! | `/` | overview |
//! | `/camera/{id}?range=1h\|24h\|7d` or `?from=…&to=…` | camera page |
//! | `/camera/{id}/frames.csv?…` | the range's rows as CSV |
//! | `/farm` | farm page |
//! | `/fragment/overview`, `/fragment/camera/{id}?…`, `/fragment/farm` | live regions |
//! | `/image/{frame_id}` | an annotated JPEG |
//! | `/events` | SSE: `frame`, `farm`, `resync` |
//! | `/static/style.css`, `/static/live.js` | assets |
//! | `/healthz`, `/readyz` | probes (ready once statistics are built) |

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures::{Stream, StreamExt as _};
use jiff::Timestamp;
use posture_core::posture::Thresholds;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::BroadcastStream;

use crate::camera::{self, CameraView, PlotData, RangeQuery, resolve_range};
use crate::html::{LIVE_JS, STYLE, esc};
use crate::k8s::Farm;
use crate::live::Live;
use crate::model::Clock;
use crate::{farm_page, overview};

/// Presentation settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Threshold lines on plots (the analyzers' thresholds).
    pub thresholds: Thresholds,
    /// Time zone of the pages.
    pub clock: Clock,
    /// A camera without a frame for longer than this is flagged silent.
    pub silent_after: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            thresholds: Thresholds::default(),
            clock: Clock::default(),
            silent_after: Duration::from_secs(120),
        }
    }
}

#[derive(Clone)]
struct AppState {
    live: Live,
    farm: Farm,
    settings: Arc<Settings>,
    shutdown: watch::Receiver<bool>,
}

impl AppState {
    fn silent_secs(&self) -> i64 {
        i64::try_from(self.settings.silent_after.as_secs()).unwrap_or(i64::MAX)
    }
}

/// The dashboard's routes. SSE streams end when `shutdown` turns true.
pub fn router(
    live: Live,
    farm: Farm,
    settings: Settings,
    shutdown: watch::Receiver<bool>,
) -> Router {
    let state = AppState {
        live,
        farm,
        settings: Arc::new(settings),
        shutdown,
    };
    Router::new()
        .route("/", get(overview_page))
        .route("/fragment/overview", get(overview_fragment))
        .route("/camera/{id}", get(camera_page))
        .route("/fragment/camera/{id}", get(camera_fragment))
        .route("/camera/{id}/frames.csv", get(camera_csv))
        .route("/farm", get(farm_page_handler))
        .route("/fragment/farm", get(farm_fragment))
        .route("/image/{frame_id}", get(image))
        .route("/events", get(events))
        .route(
            "/static/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/static/live.js",
            get(|| async { asset("text/javascript; charset=utf-8", LIVE_JS) }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

fn html(body: String) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Html(body)).into_response()
}

async fn readyz(State(st): State<AppState>) -> Response {
    if st.live.loaded() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "statistics not built yet").into_response()
    }
}

async fn overview_page(State(st): State<AppState>) -> Response {
    let o = overview::load(&st.live, st.live.db(), st.silent_secs()).await;
    html(overview::page_html(
        &o,
        &st.settings.clock,
        st.live.db().describe(),
    ))
}

async fn overview_fragment(State(st): State<AppState>) -> Response {
    let o = overview::load(&st.live, st.live.db(), st.silent_secs()).await;
    html(overview::fragment(&o, &st.settings.clock))
}

fn bad_request(message: &str, clock: &Clock, database: &str) -> Response {
    let body = format!(
        r#"<h1>Cannot show that</h1><p class="banner warn" role="alert">{}</p><p><a href="/">Back to the cameras</a></p>"#,
        esc(message)
    );
    let page = crate::html::page(
        &crate::html::PageMeta {
            title: "Bad request",
            nav: crate::html::Nav::Camera,
            live: None,
            clock,
            database,
        },
        &body,
    );
    (StatusCode::BAD_REQUEST, Html(page)).into_response()
}

/// Renders a camera page (`whole`) or its live region.
async fn camera_render(st: &AppState, id: &str, q: &RangeQuery, whole: bool) -> Response {
    let now = Timestamp::now();
    let clock = &st.settings.clock;
    let db = st.live.db();
    let range = match resolve_range(q, now, clock) {
        Ok(r) => r,
        Err(msg) => return bad_request(&msg, clock, db.describe()),
    };
    let mut health = st.live.health();
    let loaded = async {
        let plot = camera::plot_data(db, id, range.from, range.to, clock).await?;
        let recent = db
            .recent_frames(id, Some(range.to), camera::RECENT_ROWS)
            .await?;
        let ids: Vec<String> = recent.iter().map(|f| f.frame_id.clone()).collect();
        let kept = db.images_present(&ids).await?;
        Ok::<_, crate::db::DbError>((plot, recent, kept))
    }
    .await;
    let (plot, recent, kept) = match loaded {
        Ok(x) => x,
        Err(e) => {
            health.error = Some(posture_analyzer::error_chain(&e));
            health.failing_since.get_or_insert(now);
            (PlotData::default(), Vec::new(), Default::default())
        }
    };
    let summary = st.live.summary(id, now, st.silent_secs());
    let view = CameraView {
        camera: id,
        summary: summary.as_ref(),
        range: &range,
        plot: &plot,
        recent: &recent,
        kept: &kept,
        thresholds: st.settings.thresholds,
        clock,
        health: &health,
        now,
    };
    if whole {
        html(camera::page_html(&view, db.describe()))
    } else {
        html(camera::fragment(&view))
    }
}

async fn camera_page(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<RangeQuery>,
) -> Response {
    camera_render(&st, &id, &q, true).await
}

async fn camera_fragment(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<RangeQuery>,
) -> Response {
    camera_render(&st, &id, &q, false).await
}

/// A file-name-safe version of `s`.
fn file_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

async fn camera_csv(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<RangeQuery>,
) -> Response {
    let clock = &st.settings.clock;
    let range = match resolve_range(&q, Timestamp::now(), clock) {
        Ok(r) => r,
        Err(msg) => return (StatusCode::BAD_REQUEST, msg).into_response(),
    };
    // A few chunks in flight: the query runs at the client's pace.
    let (tx, rx) = mpsc::channel::<String>(4);
    let (fail_tx, mut fail_rx) = mpsc::channel::<std::io::Error>(1);
    let db = st.live.db().clone();
    let camera = id.clone();
    tokio::spawn(async move {
        if let Err(e) = db.export_csv(&camera, range.from, range.to, &tx).await {
            let msg = posture_analyzer::error_chain(&e);
            tracing::warn!(camera, error = %msg, "CSV export failed");
            // Abort the body: the client sees a failed download, not a short file.
            let _ = fail_tx.send(std::io::Error::other(msg)).await;
        }
    });
    let rows = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::io::Error>);
    let failure = futures::stream::once(async move { fail_rx.recv().await })
        .filter_map(|e| async move { e.map(Err) });
    let body = Body::from_stream(rows.chain(failure));
    let name = format!(
        "{}_{}_{}.csv",
        file_part(&id),
        file_part(&clock.input_value(range_start(&q, clock))),
        file_part(&clock.input_value(Timestamp::now()))
    );
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
        .unwrap_or(HeaderValue::from_static("attachment"));
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response()
}

fn range_start(q: &RangeQuery, clock: &Clock) -> Timestamp {
    resolve_range(q, Timestamp::now(), clock)
        .map(|r| r.from)
        .unwrap_or_else(|_| Timestamp::now())
}

async fn farm_page_handler(State(st): State<AppState>) -> Response {
    let now = Timestamp::now();
    let (view, sources) = st.farm.view(now);
    html(farm_page::page_html(
        &view,
        &sources,
        &st.settings.clock,
        now,
        st.live.db().describe(),
    ))
}

async fn farm_fragment(State(st): State<AppState>) -> Response {
    let now = Timestamp::now();
    let (view, sources) = st.farm.view(now);
    html(farm_page::fragment(
        &view,
        &sources,
        &st.settings.clock,
        now,
    ))
}

async fn image(State(st): State<AppState>, Path(frame_id): Path<String>) -> Response {
    match st.live.db().image(&frame_id).await {
        Ok(Some(jpeg)) => (
            [
                (header::CONTENT_TYPE, "image/jpeg"),
                // A frame id names one image forever.
                (
                    header::CACHE_CONTROL,
                    "private, max-age=31536000, immutable",
                ),
            ],
            jpeg,
        )
            .into_response(),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            "this annotated image is not kept (removed by retention, or never stored)",
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            posture_analyzer::error_chain(&e),
        )
            .into_response(),
    }
}

async fn events(State(st): State<AppState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = st.live.subscribe();
    let mut shutdown = st.shutdown.clone();
    let hello = futures::stream::once(async {
        Event::default()
            .event("hello")
            .retry(Duration::from_secs(2))
            .data("{}")
    });
    let live = BroadcastStream::new(rx).map(|r| match r {
        Ok(ev) => Event::default()
            .event(ev.name())
            .data(serde_json::to_string(&ev).unwrap_or_else(|_| "{}".into())),
        // This page fell behind: it re-reads its region instead.
        Err(_) => Event::default().event("resync").data("{}"),
    });
    let stream = hello
        .chain(live)
        .take_until(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .map(Ok);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

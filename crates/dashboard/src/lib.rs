//! # posture-dashboard — see the farm in a browser
//!
//! `posture-farm dashboard` serves three server-rendered pages from one
//! binary with every asset embedded (no external URL: an edge LAN has no
//! internet): an overview with a card per camera, a camera page with a time
//! plot (inline SVG drawn here) and the recent frames, and a farm page with
//! nodes, GPU usage, analyzers, pending pods and recent placements. Pages
//! update live over Server-Sent Events. `posture-farm report` writes the
//! same plots and totals into one self-contained HTML file.
//!
//! ```text
//!  posture_log / posture_image ─(read-only)─ db::ReadOnlyDb
//!        │ refresh (a day per camera) + tail (id > cursor)          ┌─► overview (cards)
//!        └─► live::Live ── stats (10 s buckets) ─────────────────────┼─► camera (plot::svg, table, CSV)
//!                 └── LiveEvent::Frame ──┐                           │
//!  kube API (poll) ─┐                    ├─► /events (SSE) ─► live.js refetches a fragment
//!  GpuSnapshot ─────┴─► k8s::Farm ───────┘   farm::summarise ────────┴─► farm page
//!  report::build ─► one HTML file (same plot renderer, inline CSS, data: images)
//! ```
//!
//! Pure parts (tested directly): [`stats`], [`plot`], [`farm`], the page
//! renderers. I/O: [`db`] (bounded, indexed queries), [`live`] (the tail
//! loop), [`k8s`] (the poller), [`server`] (axum).

pub mod camera;
pub mod db;
pub mod farm;
pub mod farm_page;
pub mod html;
pub mod k8s;
pub mod live;
pub mod model;
pub mod overview;
pub mod plot;
pub mod report;
pub mod seed;
pub mod server;
pub mod stats;

use std::future::Future;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use db::ReadOnlyDb;
pub use k8s::{Farm, KubeSettings, KubeSource};
pub use live::{Live, LiveConfig, LiveEvent};
pub use model::Clock;
pub use server::Settings;

/// A dashboard ready to serve.
pub struct Dashboard {
    live: Live,
    farm: Farm,
    settings: Settings,
    live_config: LiveConfig,
}

impl Dashboard {
    /// A dashboard over `db` showing `farm`.
    pub fn new(db: ReadOnlyDb, farm: Farm, settings: Settings, live_config: LiveConfig) -> Self {
        Self {
            live: Live::new(db),
            farm,
            settings,
            live_config,
        }
    }

    /// The live statistics (tests refresh them by hand).
    pub fn live(&self) -> &Live {
        &self.live
    }

    /// The routes without background tasks (benchmarks, tests).
    pub fn router(&self, shutdown: watch::Receiver<bool>) -> axum::Router {
        server::router(
            self.live.clone(),
            self.farm.clone(),
            self.settings.clone(),
            shutdown,
        )
    }

    /// Serves on `listener` until `shutdown` resolves, with the live loop
    /// and the farm poller (reading `kube`) running beside it.
    pub async fn serve(
        self,
        listener: TcpListener,
        kube: KubeSource,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let live_task = tokio::spawn(
            self.live
                .clone()
                .run(self.live_config, stopped(stop_rx.clone())),
        );
        let farm_task = tokio::spawn(self.farm.clone().run(
            kube,
            self.live.clone(),
            stopped(stop_rx.clone()),
        ));
        let app = self.router(stop_rx);
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                let _ = stop_tx.send(true);
            })
            .await;
        let _ = live_task.await;
        let _ = farm_task.await;
        self.live.db().close().await;
        served
    }
}

//! Where the scaler reads GPU usage from: a small trait so the service does
//! not care whether the snapshot comes from the Prometheus poller (a
//! `tokio::sync::watch` channel in production) or a value set by a test.

use std::future::Future;

use posture_core::gpu::GpuSnapshot;
use tokio::sync::watch;

/// "What is the GPU usage now", plus a way to wait for it to change (for
/// `StreamIsActive`).
pub trait UsageSource: Clone + Send + Sync + 'static {
    /// The latest snapshot.
    fn current(&self) -> GpuSnapshot;

    /// Resolves when the usage may have changed. Returns `false` when the
    /// source is gone for good (then callers stop waiting on it).
    fn changed(&mut self) -> impl Future<Output = bool> + Send;
}

/// Production source: the Prometheus poller publishes into a watch channel.
impl UsageSource for watch::Receiver<GpuSnapshot> {
    fn current(&self) -> GpuSnapshot {
        self.borrow().clone()
    }

    async fn changed(&mut self) -> bool {
        watch::Receiver::changed(self).await.is_ok()
    }
}

/// A fixed snapshot that never changes (one-shot tools, tests).
#[derive(Clone, Debug, Default)]
pub struct StaticUsage(pub GpuSnapshot);

impl UsageSource for StaticUsage {
    fn current(&self) -> GpuSnapshot {
        self.0.clone()
    }

    async fn changed(&mut self) -> bool {
        // Never changes; stay pending so a stream only reacts to timers.
        std::future::pending::<()>().await;
        false
    }
}

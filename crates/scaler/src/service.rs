//! The `externalscaler.ExternalScaler` service: turns KEDA's calls into the
//! pure decisions of [`posture_core::scaler`] over the current usage snapshot.
//!
//! Debounce state is kept per ScaledJob (namespace/name): once a ScaledJob
//! has been told "active" it stays active for the stabilisation window, both
//! for polling (`IsActive`) and for the push stream (`StreamIsActive`).
//!
//! The live [`Settings`] (defaults for triggers, metric target) may change
//! while the scaler runs ([`Scaler::update_settings`], e.g. from a settings
//! file): `StreamMetricSpec` pushes the new spec to every open stream at once
//! and `GetMetricSpec` answers the same values, so a new target reaches the
//! HPA without waiting for KEDA to poll; `StreamIsActive` re-evaluates too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use posture_core::model::Millis;
use posture_core::scaler::{Activity, ScalerConfig, any_below_threshold, spare_capacity};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};

use crate::metrics::ScalerMetrics;
use crate::pb;
use crate::source::UsageSource;

/// Settings of the service that do not come from a trigger's metadata.
#[derive(Clone, Debug)]
pub struct ScalerOptions {
    /// Threshold and metric name used when the trigger does not override
    /// them (initial value; live changes: [`Scaler::update_settings`]).
    pub defaults: ScalerConfig,
    /// How long a ScaledJob stays active after the last time a node had room.
    pub stabilization: Duration,
    /// The metric target (`targetSizeFloat`): spare GPU capacity, in
    /// percentage points, that one analyzer Job stands for. Initial value.
    pub target: f64,
}

impl Default for ScalerOptions {
    fn default() -> Self {
        Self {
            defaults: ScalerConfig::default(),
            stabilization: Duration::from_secs(60),
            target: DEFAULT_TARGET,
        }
    }
}

/// The default metric target: 1 (any spare capacity asks for a Job).
pub const DEFAULT_TARGET: f64 = 1.0;

/// What may change while the scaler runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Threshold and metric name for triggers that do not set them.
    pub defaults: ScalerConfig,
    /// Metric target (`targetSizeFloat`), finite and above 0.
    pub target: f64,
}

/// Why [`Scaler::update_settings`] refused new settings.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingsError {
    /// The target is not a finite number above 0.
    #[error("metric target {0} must be a finite number above 0")]
    Target(f64),
    /// The defaults would be refused as trigger metadata.
    #[error(transparent)]
    Defaults(#[from] posture_core::scaler::MetadataError),
}

impl Settings {
    /// Checks the target and the defaults (as a trigger's metadata would be).
    pub fn validate(&self) -> Result<(), SettingsError> {
        if !(self.target.is_finite() && self.target > 0.0) {
            return Err(SettingsError::Target(self.target));
        }
        let metadata = [
            (
                posture_core::scaler::KEY_THRESHOLD.to_owned(),
                self.defaults.threshold.to_string(),
            ),
            (
                posture_core::scaler::KEY_METRIC_NAME.to_owned(),
                self.defaults.metric_name.clone(),
            ),
        ]
        .into_iter()
        .collect();
        ScalerConfig::from_metadata(&ScalerConfig::default(), &metadata)?;
        Ok(())
    }
}

/// The External Scaler service, generic over where GPU usage comes from.
/// Cheap to clone (shared state behind an `Arc`).
pub struct Scaler<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for Scaler<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<S> {
    source: S,
    options: ScalerOptions,
    /// The live settings; streams subscribe to changes.
    settings: watch::Sender<Settings>,
    /// Origin of the millisecond clock handed to the pure debounce; a tokio
    /// `Instant` so tests can pause and advance time.
    start: Instant,
    /// Debounce per ScaledJob. A std mutex: held only for a few arithmetic
    /// operations, never across an `.await`.
    activity: Mutex<HashMap<(String, String), Activity>>,
    metrics: ScalerMetrics,
}

/// Bound of each stream's channel: a stream only carries changes, so a slow
/// reader never needs more than a couple of pending updates.
const STREAM_BUFFER: usize = 4;

impl<S: UsageSource> Scaler<S> {
    /// A service reading usage from `source`.
    pub fn new(source: S, options: ScalerOptions, metrics: ScalerMetrics) -> Self {
        let (settings, _) = watch::channel(Settings {
            defaults: options.defaults.clone(),
            target: options.target,
        });
        metrics.target.set(options.target);
        Self {
            inner: Arc::new(Inner {
                source,
                options,
                settings,
                start: Instant::now(),
                activity: Mutex::new(HashMap::new()),
                metrics,
            }),
        }
    }

    /// The live settings now.
    pub fn settings(&self) -> Settings {
        self.inner.settings.borrow().clone()
    }

    /// Changes the live settings; open `StreamMetricSpec` streams whose spec
    /// changes get it at once. Returns whether anything changed; invalid
    /// settings are refused and the current ones kept.
    pub fn update_settings(
        &self,
        change: impl FnOnce(&mut Settings),
    ) -> Result<bool, SettingsError> {
        let mut next = self.settings();
        change(&mut next);
        next.validate()?;
        let target = next.target;
        let changed = self.inner.settings.send_if_modified(|current| {
            if *current == next {
                return false;
            }
            *current = next;
            true
        });
        if changed {
            self.inner.metrics.target.set(target);
            tracing::info!(?target, "scaler settings changed; pushing new metric specs");
        }
        Ok(changed)
    }

    fn now_ms(&self) -> Millis {
        Millis::try_from(self.inner.start.elapsed().as_millis()).unwrap_or(Millis::MAX)
    }

    fn config(&self, r: Option<&pb::ScaledObjectRef>) -> Result<ScalerConfig, Status> {
        let defaults = self.inner.settings.borrow().defaults.clone();
        match r {
            None => Ok(defaults),
            Some(r) => ScalerConfig::from_metadata(&defaults, &r.scaler_metadata).map_err(|e| {
                tracing::warn!(namespace = %r.namespace, name = %r.name, error = %e, "rejected scalerMetadata");
                Status::invalid_argument(e.to_string())
            }),
        }
    }

    /// Evaluates the debounced activity of one ScaledJob now.
    fn evaluate(&self, r: &pb::ScaledObjectRef, config: &ScalerConfig) -> (bool, Option<Millis>) {
        let raw = any_below_threshold(&self.inner.source.current(), config.threshold);
        let now = self.now_ms();
        let window =
            Millis::try_from(self.inner.options.stabilization.as_millis()).unwrap_or(Millis::MAX);
        let (active, hold_end) = {
            // A poisoned lock only means another request panicked mid-update
            // of plain data; the map is still usable.
            let mut map = self
                .inner
                .activity
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let a = map
                .entry((r.namespace.clone(), r.name.clone()))
                .or_insert_with(|| Activity::new(window));
            let active = a.observe(raw, now);
            let hold_end = (active && !raw).then(|| a.hold_ends_at()).flatten();
            (active, hold_end)
        };
        self.inner.metrics.set_active(&r.namespace, &r.name, active);
        tracing::debug!(namespace = %r.namespace, name = %r.name, raw, active, threshold = config.threshold, "activity evaluated");
        (active, hold_end)
    }

    fn respond<T>(&self, method: &str, result: Result<T, Status>) -> Result<Response<T>, Status> {
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        self.inner.metrics.request(method, code);
        result.map(Response::new)
    }

    /// The spec of one trigger under the current settings: what both
    /// `GetMetricSpec` and `StreamMetricSpec` answer.
    fn metric_spec(&self, r: &pb::ScaledObjectRef) -> Result<pb::GetMetricSpecResponse, Status> {
        let config = self.config(Some(r))?;
        let target = self.inner.settings.borrow().target;
        Ok(pb::GetMetricSpecResponse {
            metric_specs: vec![pb::MetricSpec {
                metric_name: config.metric_name,
                // Deprecated integer field, for older KEDA: at least 1.
                target_size: (target.round() as i64).max(1),
                target_size_float: target,
            }],
        })
    }
}

#[tonic::async_trait]
impl<S: UsageSource> pb::external_scaler_server::ExternalScaler for Scaler<S> {
    async fn is_active(
        &self,
        request: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<pb::IsActiveResponse>, Status> {
        let r = request.into_inner();
        let result = self.config(Some(&r)).map(|c| pb::IsActiveResponse {
            result: self.evaluate(&r, &c).0,
        });
        self.respond("IsActive", result)
    }

    type StreamIsActiveStream = ReceiverStream<Result<pb::IsActiveResponse, Status>>;

    async fn stream_is_active(
        &self,
        request: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let r = request.into_inner();
        let config = match self.config(Some(&r)) {
            Ok(c) => c,
            Err(status) => return self.respond("StreamIsActive", Err(status)),
        };
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let this = self.clone();
        tokio::spawn(async move {
            let mut source = this.inner.source.clone();
            let mut settings = this.inner.settings.subscribe();
            let mut config = config;
            let mut last: Option<bool> = None;
            let mut source_open = true;
            loop {
                // New defaults (threshold) apply at once; the trigger's own
                // metadata was valid at open and stays so.
                if let Ok(c) = this.config(Some(&r)) {
                    config = c;
                }
                let (active, hold_end) = this.evaluate(&r, &config);
                if last != Some(active) {
                    if tx
                        .send(Ok(pb::IsActiveResponse { result: active }))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    last = Some(active);
                }
                // Wake on a usage change, when the debounce hold expires, or
                // stop when KEDA goes away.
                let hold_timer = async {
                    match hold_end {
                        Some(end) => {
                            let at = this.inner.start
                                + Duration::from_millis(u64::try_from(end).unwrap_or(u64::MAX));
                            tokio::time::sleep_until(at).await;
                        }
                        None => std::future::pending().await,
                    }
                };
                let changed = async {
                    if source_open {
                        source.changed().await
                    } else {
                        std::future::pending().await
                    }
                };
                tokio::select! {
                    open = changed => source_open = open,
                    () = hold_timer => {}
                    Ok(()) = settings.changed() => {}
                    () = tx.closed() => break,
                }
            }
            tracing::debug!(namespace = %r.namespace, name = %r.name, "StreamIsActive ended");
        });
        self.respond("StreamIsActive", Ok(ReceiverStream::new(rx)))
    }

    async fn get_metric_spec(
        &self,
        request: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<pb::GetMetricSpecResponse>, Status> {
        let r = request.into_inner();
        let result = self.metric_spec(&r);
        self.respond("GetMetricSpec", result)
    }

    async fn get_metrics(
        &self,
        request: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::GetMetricsResponse>, Status> {
        let req = request.into_inner();
        let result = self.config(req.scaled_object_ref.as_ref()).and_then(|c| {
            if req.metric_name != c.metric_name {
                return Err(Status::invalid_argument(format!(
                    "unknown metric {:?}: this scaler serves {:?}",
                    req.metric_name, c.metric_name
                )));
            }
            let spare = spare_capacity(&self.inner.source.current());
            self.inner.metrics.spare_capacity.set(spare);
            Ok(pb::GetMetricsResponse {
                metric_values: vec![pb::MetricValue {
                    metric_name: c.metric_name,
                    // Spare capacity is within 0..=100×nodes: the cast cannot overflow.
                    metric_value: spare.round() as i64,
                    metric_value_float: spare,
                }],
            })
        });
        self.respond("GetMetrics", result)
    }

    type StreamMetricSpecStream = ReceiverStream<Result<pb::GetMetricSpecResponse, Status>>;

    async fn stream_metric_spec(
        &self,
        request: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<Self::StreamMetricSpecStream>, Status> {
        let r = request.into_inner();
        let first = match self.metric_spec(&r) {
            Ok(spec) => spec,
            Err(status) => return self.respond("StreamMetricSpec", Err(status)),
        };
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let this = self.clone();
        tokio::spawn(async move {
            // Subscribed before the first send: no change can slip between.
            let mut settings = this.inner.settings.subscribe();
            settings.mark_unchanged();
            // KEDA's rule 1: the current specs at once, not only on change.
            if tx.send(Ok(first.clone())).await.is_err() {
                return;
            }
            let mut last = first;
            loop {
                tokio::select! {
                    changed = settings.changed() => {
                        if changed.is_err() {
                            // The scaler is gone: end the stream.
                            break;
                        }
                    }
                    () = tx.closed() => break,
                }
                // Rule 2: the same computation as GetMetricSpec, so the two
                // never diverge.
                let spec = match this.metric_spec(&r) {
                    Ok(spec) => spec,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                };
                if spec != last {
                    if tx.send(Ok(spec.clone())).await.is_err() {
                        break;
                    }
                    this.inner.metrics.spec_pushes.inc();
                    last = spec;
                }
            }
            tracing::debug!(namespace = %r.namespace, name = %r.name, "StreamMetricSpec ended");
        });
        self.respond("StreamMetricSpec", Ok(ReceiverStream::new(rx)))
    }
}

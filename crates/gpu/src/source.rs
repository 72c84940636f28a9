//! The polling usage source: queries Prometheus on an interval and publishes
//! a [`GpuSnapshot`] through a `tokio::sync::watch` channel.
//!
//! Each node's reading comes from its own query (listed nodes) or from the
//! discovery query's series labelled with the node name. The sample time is
//! the sample's own timestamp (`timestamp(<query>)`; for an aggregation
//! Prometheus can only give the evaluation time). A reading is:
//! - `ok` when its value is a number in 0–100 and it is no older than the
//!   staleness bound;
//! - `stale` when it is older, or when this poll failed for the node
//!   (Prometheus unreachable, query error, NaN, out of range, series gone):
//!   the last good sample is kept, with the error;
//! - `missing` when no good sample was ever read.
//!
//! A failed poll never ends the task: it logs once per new error, counts it
//! in `gpu_query_errors_total{reason}`, and the next poll retries, so the
//! source recovers by itself when Prometheus comes back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use posture_core::gpu::{GpuSample, GpuSnapshot, NodeUsage, UsageState};
use posture_core::model::Millis;
use tokio::sync::{Semaphore, watch};

use crate::config::ResolvedConfig;
use crate::metrics::SourceMetrics;
use crate::prom::{PromClient, PromError, Series};
use posture_core::error_chain;

/// Key of the discovery query's own failure among the readings (not a
/// valid node name, so it never collides with one).
const DISCOVERY_KEY: &str = " discovery";

/// At most this many queries in flight to Prometheus at once: enough to
/// poll a few dozen boards within one interval without flooding the server.
const MAX_CONCURRENT_QUERIES: usize = 8;

/// Why one node has no good reading in this poll.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ReadingError {
    /// The query failed (Prometheus down, bad PromQL, HTTP error, …).
    #[error("{message}")]
    Query {
        /// Metric label: unreachable, timeout, query, http, decode.
        reason: &'static str,
        /// The error and its causes.
        message: String,
    },
    /// The query returned no series (the exporter is gone or the series is stale).
    #[error("no sample: query {query:?} returned no series")]
    NoSample {
        /// The node's PromQL.
        query: String,
    },
    /// The query returned several series for one node.
    #[error(
        "query {query:?} returned {count} series for one node; make it return one (e.g. wrap it in max())"
    )]
    Ambiguous {
        /// The node's PromQL.
        query: String,
        /// How many series came back.
        count: usize,
    },
    /// The value is NaN.
    #[error("usage is NaN")]
    NotANumber,
    /// The value is outside 0–100 %.
    #[error("usage {0} is outside 0-100 %")]
    OutOfRange(f64),
}

impl ReadingError {
    /// Label for the error counter.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Query { reason, .. } => reason,
            Self::NoSample { .. } => "no_sample",
            Self::Ambiguous { .. } => "ambiguous",
            Self::NotANumber => "nan",
            Self::OutOfRange(_) => "out_of_range",
        }
    }

    fn from_prom(e: &PromError) -> Self {
        let reason = match e {
            PromError::Unreachable { .. } => "unreachable",
            PromError::Timeout { .. } => "timeout",
            PromError::Query { .. } => "query",
            PromError::Http { .. } => "http",
            _ => "decode",
        };
        Self::Query {
            reason,
            message: error_chain(e),
        }
    }
}

/// A raw reading before validation: value and sample time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RawReading {
    /// The value as Prometheus returned it (may be NaN or out of range).
    pub value: f64,
    /// The sample's own timestamp.
    pub sampled_at: Millis,
}

/// Builds the next snapshot from the previous one and this poll's readings.
///
/// Pure: `now` is handed in. Nodes in `previous` that this poll did not
/// mention are kept (a discovered node whose series vanished turns stale
/// rather than disappearing).
pub fn assemble(
    previous: &GpuSnapshot,
    readings: &BTreeMap<String, Result<RawReading, ReadingError>>,
    now: Millis,
    stale_after: Duration,
) -> GpuSnapshot {
    let stale_ms = i64::try_from(stale_after.as_millis()).unwrap_or(i64::MAX);
    let mut nodes = BTreeMap::new();
    let names: BTreeSet<&String> = previous.nodes.keys().chain(readings.keys()).collect();
    for name in names {
        let last_good = previous.nodes.get(name).and_then(|u| u.sample);
        let outcome = match readings.get(name) {
            Some(r) => r.clone().and_then(validate),
            None => Err(ReadingError::NoSample {
                query: "(node no longer reported)".into(),
            }),
        };
        let usage = match outcome {
            Ok(sample) => {
                let age = now.saturating_sub(sample.sampled_at);
                if age > stale_ms {
                    NodeUsage {
                        sample: Some(sample),
                        state: UsageState::Stale,
                        error: Some(format!(
                            "sample is {:.1}s old (bound {:.1}s)",
                            age as f64 / 1000.0,
                            stale_ms as f64 / 1000.0
                        )),
                    }
                } else {
                    NodeUsage {
                        sample: Some(sample),
                        state: UsageState::Ok,
                        error: None,
                    }
                }
            }
            Err(err) => NodeUsage {
                sample: last_good,
                state: if last_good.is_some() {
                    UsageState::Stale
                } else {
                    UsageState::Missing
                },
                error: Some(err.to_string()),
            },
        };
        nodes.insert(name.clone(), usage);
    }
    GpuSnapshot {
        taken_at: now,
        nodes,
    }
}

fn validate(r: RawReading) -> Result<GpuSample, ReadingError> {
    if r.value.is_nan() {
        return Err(ReadingError::NotANumber);
    }
    if !(0.0..=100.0).contains(&r.value) {
        return Err(ReadingError::OutOfRange(r.value));
    }
    Ok(GpuSample {
        usage_percent: r.value,
        sampled_at: r.sampled_at,
    })
}

/// Labels that identify a series for matching `q` with `timestamp(q)`
/// (which drops the metric name).
fn identity(s: &Series) -> BTreeMap<&str, &str> {
    s.labels
        .iter()
        .filter(|(k, _)| k.as_str() != "__name__")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// Runs `query` and `timestamp(query)` and pairs each value with its own
/// sample time. When the timestamp query fails (e.g. a scalar result), the
/// evaluation time stands in.
async fn query_with_times(
    client: &PromClient,
    query: &str,
) -> Result<Vec<(Series, Millis)>, PromError> {
    let ts_query = format!("timestamp({query})");
    let (values, times) = tokio::join!(client.query(query), client.query(&ts_query));
    let values = values?;
    let times = match times {
        Ok(t) => t,
        Err(PromError::Query { .. }) => Vec::new(),
        Err(e) => return Err(e),
    };
    Ok(values
        .into_iter()
        .map(|s| {
            let id = identity(&s);
            let sampled_at = times
                .iter()
                .find(|t| identity(t) == id)
                .filter(|t| t.value.is_finite())
                .map(|t| (t.value * 1000.0).round() as i64)
                .unwrap_or(s.timestamp_ms);
            (s, sampled_at)
        })
        .collect())
}

/// Source settings.
#[derive(Clone, Debug)]
pub struct SourceSettings {
    /// Time between polls.
    pub poll_interval: Duration,
    /// A sample older than this is stale.
    pub stale_after: Duration,
}

/// The poller. Owns the client, the resolved configuration and the last
/// snapshot; see the module docs for the states it reports.
pub struct GpuSource {
    client: PromClient,
    config: ResolvedConfig,
    settings: SourceSettings,
    metrics: Option<SourceMetrics>,
    last: GpuSnapshot,
    /// Last error logged per node, to log transitions instead of every poll.
    logged: BTreeMap<String, String>,
    limit: Arc<Semaphore>,
}

impl GpuSource {
    /// A source polling `client` with `config`.
    pub fn new(client: PromClient, config: ResolvedConfig, settings: SourceSettings) -> Self {
        Self {
            client,
            config,
            settings,
            metrics: None,
            last: GpuSnapshot::default(),
            logged: BTreeMap::new(),
            limit: Arc::new(Semaphore::new(MAX_CONCURRENT_QUERIES)),
        }
    }

    /// Reports into these metrics (see [`SourceMetrics::register`]).
    pub fn with_metrics(mut self, metrics: SourceMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The last snapshot assembled.
    pub fn last(&self) -> &GpuSnapshot {
        &self.last
    }

    /// Reads every node once. Never fails: failures are in the per-node
    /// `error` and state of the returned snapshot.
    pub async fn poll(&mut self, now: Millis) -> &GpuSnapshot {
        let mut readings = self.read_all().await;
        if let Some(Err(err)) = readings.remove(DISCOVERY_KEY) {
            self.report_discovery_failure(&err);
        } else {
            self.report_discovery_ok();
        }
        let next = assemble(&self.last, &readings, now, self.settings.stale_after);
        self.report(&readings, &next);
        self.last = next;
        &self.last
    }

    async fn read_all(&self) -> BTreeMap<String, Result<RawReading, ReadingError>> {
        let mut readings = BTreeMap::new();
        let listed: BTreeSet<&str> = self.config.nodes.iter().map(|n| n.node.as_str()).collect();
        let mut tasks = tokio::task::JoinSet::new();
        for nq in &self.config.nodes {
            let (client, limit, nq) = (self.client.clone(), self.limit.clone(), nq.clone());
            tasks.spawn(async move {
                // The semaphore is never closed, so acquire only fails if it were.
                let _permit = limit.acquire_owned().await;
                let result = match query_with_times(&client, &nq.query).await {
                    Err(e) => Err(ReadingError::from_prom(&e)),
                    Ok(series) => match series.as_slice() {
                        [] => Err(ReadingError::NoSample {
                            query: nq.query.clone(),
                        }),
                        [(s, at)] => Ok(RawReading {
                            value: s.value,
                            sampled_at: *at,
                        }),
                        many => Err(ReadingError::Ambiguous {
                            query: nq.query.clone(),
                            count: many.len(),
                        }),
                    },
                };
                (nq.node, result)
            });
        }
        if let Some(d) = &self.config.discover {
            match query_with_times(&self.client, &d.query).await {
                Ok(series) => {
                    let mut by_node: BTreeMap<&str, Vec<(&Series, Millis)>> = BTreeMap::new();
                    for (s, at) in &series {
                        if let Some(node) = s.labels.get(&d.node_label)
                            && !listed.contains(node.as_str())
                        {
                            by_node.entry(node).or_default().push((s, *at));
                        }
                    }
                    for (node, found) in by_node {
                        let r = match found.as_slice() {
                            [(s, at)] => Ok(RawReading {
                                value: s.value,
                                sampled_at: *at,
                            }),
                            many => Err(ReadingError::Ambiguous {
                                query: d.query.clone(),
                                count: many.len(),
                            }),
                        };
                        readings.insert(node.to_string(), r);
                    }
                }
                Err(e) => {
                    // Every node known only from discovery shares the failure.
                    let err = ReadingError::from_prom(&e);
                    for name in self.last.nodes.keys() {
                        if !listed.contains(name.as_str()) {
                            readings.insert(name.clone(), Err(err.clone()));
                        }
                    }
                    if !self.last.nodes.keys().any(|n| !listed.contains(n.as_str())) {
                        // No node carries the error: report it under the
                        // discovery pseudo-entry.
                        readings.insert(DISCOVERY_KEY.to_string(), Err(err));
                    }
                }
            }
        }
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok((node, r)) => {
                    readings.insert(node, r);
                }
                Err(e) => tracing::error!(error = %e, "GPU query task failed"),
            }
        }
        readings
    }

    fn report_discovery_failure(&mut self, err: &ReadingError) {
        if let Some(m) = &self.metrics {
            m.error(err.reason());
        }
        let text = err.to_string();
        if self.logged.get(DISCOVERY_KEY) != Some(&text) {
            tracing::warn!(error = %text, "GPU discovery query failed; no GPU node known yet");
            self.logged.insert(DISCOVERY_KEY.to_string(), text);
        }
    }

    fn report_discovery_ok(&mut self) {
        if self.logged.remove(DISCOVERY_KEY).is_some() {
            tracing::info!("GPU discovery query answers again");
        }
    }

    fn report(
        &mut self,
        readings: &BTreeMap<String, Result<RawReading, ReadingError>>,
        next: &GpuSnapshot,
    ) {
        let mut any_ok = false;
        for (node, usage) in &next.nodes {
            if let Some(m) = &self.metrics {
                m.node(node, usage, next.taken_at);
                match readings.get(node) {
                    Some(Err(e)) => m.error(e.reason()),
                    None => m.error("no_sample"),
                    Some(Ok(_)) if usage.state != UsageState::Ok => m.error("stale"),
                    Some(Ok(_)) => {}
                }
            }
            any_ok |= usage.state == UsageState::Ok;
            match (&usage.error, self.logged.get(node)) {
                (Some(err), prev) if prev != Some(err) => {
                    tracing::warn!(
                        node = %node,
                        state = usage.state.as_str(),
                        error = %err,
                        "GPU usage not usable; node is not eligible for GPU-aware placement"
                    );
                    self.logged.insert(node.clone(), err.clone());
                }
                (None, Some(_)) => {
                    tracing::info!(node = %node, usage = ?usage.sample.map(|s| s.usage_percent), "GPU usage readable again");
                    self.logged.remove(node);
                }
                _ => {}
            }
        }
        if let Some(m) = &self.metrics {
            m.polled(any_ok, next.taken_at);
        }
    }

    /// Polls now and then every `poll_interval` in a task, publishing each
    /// snapshot. The task ends when every receiver is dropped.
    pub fn spawn(mut self) -> (watch::Receiver<GpuSnapshot>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = watch::channel(GpuSnapshot::default());
        let handle = tokio::spawn(async move {
            let mut tick = tokio::time::interval(self.settings.poll_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tx.closed() => break,
                    _ = tick.tick() => {}
                }
                let snapshot = self.poll(now_millis()).await.clone();
                if tx.send(snapshot).is_err() {
                    break;
                }
            }
            tracing::debug!("GPU usage source stopped: no receivers left");
        });
        (rx, handle)
    }
}

/// The wall clock in milliseconds since the epoch (the edge reads the clock;
/// the core never does).
pub fn now_millis() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(value: f64, at: Millis) -> Result<RawReading, ReadingError> {
        Ok(RawReading {
            value,
            sampled_at: at,
        })
    }

    #[test]
    fn fresh_stale_missing_and_last_good_kept() {
        let stale = Duration::from_secs(30);
        let mut r = BTreeMap::new();
        r.insert("a".to_string(), ok(20.0, 100_000));
        r.insert("b".to_string(), ok(70.0, 60_000));
        r.insert(
            "c".to_string(),
            Err(ReadingError::NoSample { query: "q".into() }),
        );
        let s1 = assemble(&GpuSnapshot::default(), &r, 100_500, stale);
        assert_eq!(s1.nodes["a"].state, UsageState::Ok);
        assert_eq!(s1.usage("a"), Some(20.0));
        assert_eq!(s1.nodes["b"].state, UsageState::Stale, "40 s old");
        assert!(s1.nodes["b"].error.as_deref().unwrap().contains("old"));
        assert_eq!(s1.nodes["c"].state, UsageState::Missing);
        assert_eq!(s1.nodes["c"].sample, None);

        // Next poll: a goes NaN, b out of range, c unreachable; a and b keep
        // their last good sample but are stale.
        let mut r = BTreeMap::new();
        r.insert("a".to_string(), ok(f64::NAN, 101_000));
        r.insert("b".to_string(), ok(140.0, 101_000));
        let s2 = assemble(&s1, &r, 101_500, stale);
        assert_eq!(s2.nodes["a"].state, UsageState::Stale);
        assert_eq!(s2.nodes["a"].sample.unwrap().usage_percent, 20.0);
        assert_eq!(s2.nodes["a"].error.as_deref(), Some("usage is NaN"));
        assert_eq!(s2.nodes["b"].state, UsageState::Stale);
        assert_eq!(
            s2.nodes["b"].error.as_deref(),
            Some("usage 140 is outside 0-100 %")
        );
        assert_eq!(s2.nodes["c"].state, UsageState::Missing, "still known");
        assert_eq!(s2.usage("a"), None);
        assert_eq!(s2.fresh().count(), 0);

        // Recovery.
        let mut r = BTreeMap::new();
        r.insert("a".to_string(), ok(35.0, 102_000));
        let s3 = assemble(&s2, &r, 102_100, stale);
        assert_eq!(s3.usage("a"), Some(35.0));
        assert_eq!(s3.nodes["a"].error, None);
        assert_eq!(s3.taken_at, 102_100);
    }

    #[test]
    fn negative_and_boundary_values() {
        let mut r = BTreeMap::new();
        r.insert("lo".to_string(), ok(0.0, 0));
        r.insert("hi".to_string(), ok(100.0, 0));
        r.insert("neg".to_string(), ok(-1.0, 0));
        r.insert("inf".to_string(), ok(f64::INFINITY, 0));
        let s = assemble(&GpuSnapshot::default(), &r, 0, Duration::from_secs(1));
        assert_eq!(s.usage("lo"), Some(0.0));
        assert_eq!(s.usage("hi"), Some(100.0));
        assert_eq!(s.nodes["neg"].state, UsageState::Missing);
        assert_eq!(s.nodes["inf"].state, UsageState::Missing);
    }

    #[tokio::test]
    async fn unreachable_prometheus_is_reported_per_node_not_fatal() {
        // A port nothing listens on: bind then drop.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client =
            PromClient::new(&format!("http://127.0.0.1:{port}"), Duration::from_secs(2)).unwrap();
        let cfg = crate::config::GpuConfig::default()
            .resolve(crate::config::DEFAULT_QUERY_TEMPLATE, None, &["agx".into()])
            .unwrap();
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = SourceMetrics::register(&mut registry);
        let mut src = GpuSource::new(
            client,
            cfg,
            SourceSettings {
                poll_interval: Duration::from_secs(1),
                stale_after: Duration::from_secs(30),
            },
        )
        .with_metrics(metrics);
        let snap = src.poll(now_millis()).await.clone();
        let agx = &snap.nodes["agx"];
        assert_eq!(agx.state, UsageState::Missing);
        assert!(
            agx.error.as_deref().unwrap().contains("unreachable"),
            "{agx:?}"
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"gpu_reading_errors_total{reason="unreachable"}"#),
            "{text}"
        );
        assert!(
            text.contains(r#"gpu_node_state{node="agx",state="missing"} 1"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn discovery_failure_with_no_known_node_is_counted_not_a_node() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client =
            PromClient::new(&format!("http://127.0.0.1:{port}"), Duration::from_secs(2)).unwrap();
        let cfg = crate::config::GpuConfig::default()
            .resolve(
                crate::config::DEFAULT_QUERY_TEMPLATE,
                crate::config::default_discover(),
                &[],
            )
            .unwrap();
        let mut registry = prometheus_client::registry::Registry::default();
        let mut src = GpuSource::new(
            client,
            cfg,
            SourceSettings {
                poll_interval: Duration::from_secs(1),
                stale_after: Duration::from_secs(30),
            },
        )
        .with_metrics(SourceMetrics::register(&mut registry));
        for _ in 0..2 {
            assert!(src.poll(now_millis()).await.nodes.is_empty());
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"gpu_reading_errors_total{reason="unreachable"} 2"#),
            "{text}"
        );
        assert!(text.contains("gpu_polls_total 2"), "{text}");
    }
}

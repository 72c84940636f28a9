//! What an operator watches on the scaler: how often KEDA calls it and with
//! what result, the last activity answer per ScaledJob, and the spare GPU
//! capacity reported.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label set as (name, value) pairs; small and fixed per metric.
type Labels = Vec<(String, String)>;

/// Scaler metrics; cheap to clone (shared handles).
#[derive(Clone, Debug, Default)]
pub struct ScalerMetrics {
    /// gRPC calls by method and status code.
    pub requests: Family<Labels, Counter>,
    /// Last IsActive answer (1/0) per ScaledJob (`namespace`, `name`).
    pub active: Family<Labels, Gauge>,
    /// Last spare capacity reported by GetMetrics, percentage points.
    pub spare_capacity: Gauge<f64, AtomicU64>,
    /// The metric target now advertised (GetMetricSpec, StreamMetricSpec).
    pub target: Gauge<f64, AtomicU64>,
    /// Changed specs pushed on open StreamMetricSpec streams.
    pub spec_pushes: Counter,
}

impl ScalerMetrics {
    /// Registers the metrics in `registry` (the caller picks the prefix,
    /// e.g. a `scaler` sub-registry).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "requests",
            "gRPC calls from KEDA by method and status code",
            self.requests.clone(),
        );
        registry.register(
            "active",
            "Last IsActive answer per ScaledJob (1 active, 0 inactive), after debounce",
            self.active.clone(),
        );
        registry.register(
            "spare_capacity_percent",
            "Spare GPU capacity last reported to KEDA: sum over eligible nodes of max(0, 100 - usage)",
            self.spare_capacity.clone(),
        );
        registry.register(
            "metric_target",
            "Metric target advertised to KEDA (targetSizeFloat): spare capacity per analyzer Job",
            self.target.clone(),
        );
        registry.register(
            "metric_spec_pushes",
            "Changed metric specs pushed to KEDA on open StreamMetricSpec streams",
            self.spec_pushes.clone(),
        );
    }

    pub(crate) fn request(&self, method: &str, code: tonic::Code) {
        self.requests
            .get_or_create(&vec![
                ("method".to_owned(), method.to_owned()),
                ("code".to_owned(), format!("{code:?}")),
            ])
            .inc();
    }

    pub(crate) fn set_active(&self, namespace: &str, name: &str, active: bool) {
        self.active
            .get_or_create(&vec![
                ("namespace".to_owned(), namespace.to_owned()),
                ("name".to_owned(), name.to_owned()),
            ])
            .set(i64::from(active));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_exposed_under_the_callers_prefix() {
        let m = ScalerMetrics::default();
        let mut registry = Registry::default();
        m.register(registry.sub_registry_with_prefix("scaler"));
        m.request("IsActive", tonic::Code::Ok);
        m.request("IsActive", tonic::Code::InvalidArgument);
        m.set_active("posture", "posture-pi1", true);
        m.spare_capacity.set(170.0);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"scaler_requests_total{method="IsActive",code="InvalidArgument"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"scaler_active{namespace="posture",name="posture-pi1"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("scaler_spare_capacity_percent 170.0"),
            "{text}"
        );
    }
}

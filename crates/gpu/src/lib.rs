//! Per-node GPU usage from the Prometheus HTTP API, published as snapshots through a watch channel.

//! How a GPU snapshot is shown to people and scripts: an aligned table
//! ([`render_table`], for `gpu` and `place --dry-run`) and JSON
//! ([`to_json`], for `gpu --output json`).

use posture_core::gpu::{GpuSnapshot, UsageState};

/// A snapshot as JSON: `{"taken_at_ms", "nodes": [{node, usage_percent,
/// sampled_at_ms, age_seconds, state, error}]}`.
pub fn to_json(s: &GpuSnapshot) -> serde_json::Value {
    let nodes: Vec<serde_json::Value> = s
        .nodes
        .iter()
        .map(|(name, u)| {
            serde_json::json!({
                "node": name,
                "usage_percent": u.sample.map(|x| x.usage_percent),
                "sampled_at_ms": u.sample.map(|x| x.sampled_at),
                "age_seconds": u.sample.map(|x| (s.taken_at - x.sampled_at) as f64 / 1000.0),
                "state": u.state.as_str(),
                "error": u.error,
            })
        })
        .collect();
    serde_json::json!({ "taken_at_ms": s.taken_at, "nodes": nodes })
}

/// A snapshot as an aligned table: NODE, USAGE, AGE, STATE, ERROR.
pub fn render_table(s: &GpuSnapshot, prometheus: &str) -> String {
    if s.nodes.is_empty() {
        return format!(
            "no GPU nodes found in Prometheus at {prometheus} (check --gpu-config, --gpu-nodes, --gpu-discover-query)\n"
        );
    }
    let rows: Vec<[String; 5]> = s
        .nodes
        .iter()
        .map(|(name, u)| {
            [
                name.clone(),
                u.sample
                    .map(|x| format!("{:.1}%", x.usage_percent))
                    .unwrap_or_else(|| "-".into()),
                u.sample
                    .map(|x| format!("{:.1}s", (s.taken_at - x.sampled_at) as f64 / 1000.0))
                    .unwrap_or_else(|| "-".into()),
                u.state.as_str().to_string(),
                u.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let header = ["NODE", "USAGE", "AGE", "STATE", "ERROR"];
    let mut width = header.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == 4 {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        format!("{}\n", l.trim_end())
    };
    let mut out = line(header);
    for r in &rows {
        out.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
    }
    let ok = s
        .nodes
        .values()
        .filter(|u| u.state == UsageState::Ok)
        .count();
    out.push_str(&format!(
        "{ok}/{} node(s) eligible for GPU-aware placement (stale and missing nodes are skipped)\n",
        s.nodes.len()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use posture_core::gpu::{GpuSample, NodeUsage};

    #[test]
    fn table_shows_usage_age_and_state() {
        let mut s = GpuSnapshot {
            taken_at: 10_000,
            ..Default::default()
        };
        s.nodes.insert(
            "agx".into(),
            NodeUsage {
                sample: Some(GpuSample {
                    usage_percent: 20.0,
                    sampled_at: 9_000,
                }),
                state: UsageState::Ok,
                error: None,
            },
        );
        s.nodes.insert(
            "orin".into(),
            NodeUsage {
                sample: None,
                state: UsageState::Missing,
                error: Some("no sample".into()),
            },
        );
        let t = render_table(&s, "http://p");
        assert_eq!(
            t,
            "NODE  USAGE  AGE   STATE    ERROR\n\
             agx   20.0%  1.0s  ok\n\
             orin  -      -     missing  no sample\n\
             1/2 node(s) eligible for GPU-aware placement (stale and missing nodes are skipped)\n"
        );
        let j = to_json(&s);
        assert_eq!(j["nodes"][0]["usage_percent"], 20.0);
        assert_eq!(j["nodes"][1]["state"], "missing");
    }
}

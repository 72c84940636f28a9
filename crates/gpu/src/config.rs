//! Which PromQL query gives each node's GPU utilisation.
//!
//! Boards export different metrics (`jetson_gpu_usage_percent` on AGX,
//! `jetson_orin_gpu_load_percent` on Orin), so a YAML file maps each node to
//! its query: a full PromQL expression, or an `instance` + `metric` pair as
//! the earlier scripts had. Nodes named without either use the default
//! template, where `{node}` stands for the node name. Nodes can also be
//! discovered from one query's results, named by a label:
//!
//! ```yaml
//! default_query: 'jetson_gpu_usage_percent{node="{node}"}'
//! discover:                       # optional; `discover: null` turns it off
//!   query: jetson_gpu_usage_percent
//!   node_label: node
//! nodes:
//!   agx-1:  { instance: "192.168.1.135:9100", metric: jetson_gpu_usage_percent }
//!   orin-1: { query: 'max(jetson_orin_gpu_load_percent{instance="192.168.1.136:9100"})' }
//!   nano-1: {}                    # uses default_query
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// The default template for nodes without their own query.
pub const DEFAULT_QUERY_TEMPLATE: &str = r#"jetson_gpu_usage_percent{node="{node}"}"#;

/// The default discovery query and the label naming the node in its results.
pub const DEFAULT_DISCOVER_QUERY: &str = "jetson_gpu_usage_percent";
/// See [`DEFAULT_DISCOVER_QUERY`].
pub const DEFAULT_NODE_LABEL: &str = "node";

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading GPU config {path}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML for [`GpuConfig`].
    #[error("parsing GPU config {path}")]
    Parse {
        /// The file.
        path: String,
        /// The YAML error.
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    /// A node entry mixes or half-fills the query forms.
    #[error("GPU config: node {node:?}: {reason}")]
    InvalidNode {
        /// The node entry.
        node: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A query is empty.
    #[error("GPU config: {what} is empty")]
    EmptyQuery {
        /// Which query (`default_query`, a node's `query`, …).
        what: String,
    },
}

/// How one node's usage is read, as written in the file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// A full PromQL expression returning one series.
    #[serde(default)]
    pub query: Option<String>,
    /// Scrape target (`host:port`) of the node's exporter; with `metric`.
    #[serde(default)]
    pub instance: Option<String>,
    /// Metric name to read for `instance`.
    #[serde(default)]
    pub metric: Option<String>,
}

/// Discovery of nodes from one query's results.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Discover {
    /// Query whose series each name a node.
    pub query: String,
    /// Label carrying the node name.
    #[serde(default = "default_node_label")]
    pub node_label: String,
}

fn default_node_label() -> String {
    DEFAULT_NODE_LABEL.to_string()
}

/// The discovery used when neither the file nor a flag says otherwise.
pub fn default_discover() -> Option<Discover> {
    Some(Discover {
        query: DEFAULT_DISCOVER_QUERY.to_string(),
        node_label: DEFAULT_NODE_LABEL.to_string(),
    })
}

/// Tells "key present" (`Some(x)`, where `x` may be `None` for `null`) from
/// "key absent" (`None`, via `default`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// The file's contents. Every field is optional.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GpuConfig {
    /// Template for nodes without their own query; `{node}` is replaced.
    #[serde(default)]
    pub default_query: Option<String>,
    /// Discovery query: absent means the caller's default (flags), `null`
    /// turns discovery off.
    #[serde(default, deserialize_with = "present")]
    pub discover: Option<Option<Discover>>,
    /// Per-node entries.
    #[serde(default)]
    pub nodes: BTreeMap<String, NodeEntry>,
}

/// A node's resolved query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeQuery {
    /// Node name as Kubernetes knows it.
    pub node: String,
    /// PromQL returning that node's utilisation as one series.
    pub query: String,
}

/// A configuration ready to poll with: one query per listed node and an
/// optional discovery query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedConfig {
    /// Listed nodes with their queries, sorted by node name.
    pub nodes: Vec<NodeQuery>,
    /// Discovery query, if on; nodes listed above take precedence.
    pub discover: Option<Discover>,
}

impl GpuConfig {
    /// Reads and parses a YAML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses YAML text (`origin` names it in errors). An empty document is
    /// the default configuration.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_saphyr::from_str(text).map_err(|source| ConfigError::Parse {
            path: origin.to_string(),
            source: Box::new(source),
        })
    }

    /// Resolves every node's query. `fallback_template` is used when the
    /// file sets no `default_query`, `fallback_discover` when it has no
    /// `discover` key; `extra_nodes` (from a flag) are added with the
    /// default template unless the file lists them.
    pub fn resolve(
        &self,
        fallback_template: &str,
        fallback_discover: Option<Discover>,
        extra_nodes: &[String],
    ) -> Result<ResolvedConfig, ConfigError> {
        let discover = match &self.discover {
            Some(d) => d.clone(),
            None => fallback_discover,
        };
        let template = self.default_query.as_deref().unwrap_or(fallback_template);
        let mut nodes = BTreeMap::new();
        for (node, entry) in &self.nodes {
            let query = match (&entry.query, &entry.instance, &entry.metric) {
                (Some(q), None, None) => q.clone(),
                (None, Some(instance), Some(metric)) => {
                    if metric.trim().is_empty() || instance.trim().is_empty() {
                        return Err(invalid(node, "instance and metric must not be empty"));
                    }
                    format!(
                        "{}{{instance=\"{}\"}}",
                        metric.trim(),
                        escape_label_value(instance.trim())
                    )
                }
                (None, None, None) => expand(template, node),
                (Some(_), _, _) => {
                    return Err(invalid(
                        node,
                        "give either query or instance+metric, not both",
                    ));
                }
                _ => return Err(invalid(node, "instance and metric go together")),
            };
            if query.trim().is_empty() {
                return Err(ConfigError::EmptyQuery {
                    what: format!("the query of node {node:?}"),
                });
            }
            nodes.insert(node.clone(), query);
        }
        for node in extra_nodes
            .iter()
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
        {
            if !nodes.contains_key(node) {
                if template.trim().is_empty() {
                    return Err(ConfigError::EmptyQuery {
                        what: "the default query template".into(),
                    });
                }
                nodes.insert(node.to_string(), expand(template, node));
            }
        }
        if let Some(d) = &discover
            && (d.query.trim().is_empty() || d.node_label.trim().is_empty())
        {
            return Err(ConfigError::EmptyQuery {
                what: "discover.query or discover.node_label".into(),
            });
        }
        Ok(ResolvedConfig {
            nodes: nodes
                .into_iter()
                .map(|(node, query)| NodeQuery { node, query })
                .collect(),
            discover,
        })
    }
}

fn invalid(node: &str, reason: &str) -> ConfigError {
    ConfigError::InvalidNode {
        node: node.to_string(),
        reason: reason.to_string(),
    }
}

/// Replaces `{node}` with the node name, escaped for a PromQL string.
fn expand(template: &str, node: &str) -> String {
    template.replace("{node}", &escape_label_value(node))
}

/// Escapes `\` and `"` so the value is safe inside a PromQL double-quoted string.
fn escape_label_value(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Parses a duration flag: `500ms`, `5s`, `2m`, `1h`, or a bare number of
/// seconds (`1.5`).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 500ms, 5s, 2m)"))?;
    std::time::Duration::try_from_secs_f64(v * scale)
        .map_err(|_| format!("{text:?} is not a non-negative duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_every_form() {
        let cfg = GpuConfig::parse(
            r#"
default_query: 'gpu{n="{node}"}'
nodes:
  agx: { instance: "192.168.1.135:9100", metric: jetson_gpu_usage_percent }
  orin: { query: 'max(jetson_orin_gpu_load_percent)' }
  nano: {}
"#,
            "test",
        )
        .unwrap();
        let r = cfg
            .resolve(
                DEFAULT_QUERY_TEMPLATE,
                default_discover(),
                &["extra".into(), "nano".into()],
            )
            .unwrap();
        let got: Vec<(&str, &str)> = r
            .nodes
            .iter()
            .map(|q| (q.node.as_str(), q.query.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "agx",
                    r#"jetson_gpu_usage_percent{instance="192.168.1.135:9100"}"#
                ),
                ("extra", r#"gpu{n="extra"}"#),
                ("nano", r#"gpu{n="nano"}"#),
                ("orin", "max(jetson_orin_gpu_load_percent)"),
            ]
        );
        assert_eq!(
            r.discover,
            default_discover(),
            "the caller's default applies"
        );
    }

    #[test]
    fn fallback_template_and_discovery_off() {
        let cfg = GpuConfig::parse("discover: null\n", "t").unwrap();
        let r = cfg
            .resolve(DEFAULT_QUERY_TEMPLATE, default_discover(), &["a\"b".into()])
            .unwrap();
        assert_eq!(r.discover, None, "null in the file wins over the default");
        assert_eq!(r.nodes[0].query, r#"jetson_gpu_usage_percent{node="a\"b"}"#);
        assert_eq!(GpuConfig::parse("  \n", "t").unwrap(), GpuConfig::default());
    }

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn bad_entries_are_clear_errors() {
        for (yaml, needle) in [
            ("nodes: { a: { query: q, metric: m } }", "not both"),
            ("nodes: { a: { instance: i } }", "go together"),
            ("nodes: { a: { query: '' } }", "is empty"),
        ] {
            let err = GpuConfig::parse(yaml, "t")
                .unwrap()
                .resolve(DEFAULT_QUERY_TEMPLATE, None, &[])
                .unwrap_err();
            assert!(err.to_string().contains(needle), "{yaml}: {err}");
        }
        let err = GpuConfig::parse("nodes: { a: { qurey: x } }", "f.yaml").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        let err = GpuConfig::load(Path::new("/nonexistent/gpu.yaml")).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    }
}

//! A minimal client for the Prometheus HTTP API instant query endpoint
//! (`GET /api/v1/query?query=…`), on hyper 1 with rustls (ring).
//!
//! Only what the usage source needs: instant vectors and scalars, the
//! documented error envelope (`{"status":"error","errorType":…,"error":…}`)
//! and a per-request timeout.

use std::collections::BTreeMap;
use std::time::Duration;

use http::Uri;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

/// Responses larger than this are refused: a GPU query returns a handful of
/// series, so anything this big is a wrong query (e.g. `{__name__=~".+"}`).
const MAX_BODY_BYTES: usize = 8 << 20;

/// Why a query gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum PromError {
    /// The Prometheus URL is not an absolute http(s) URL.
    #[error("invalid Prometheus URL {url:?}: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// TLS setup failed (no usable crypto provider).
    #[error("setting up TLS for the Prometheus client")]
    Tls(#[source] rustls::Error),
    /// Connection refused, reset, DNS failure, …: Prometheus is unreachable.
    #[error("Prometheus at {url} is unreachable")]
    Unreachable {
        /// Prometheus' URL.
        url: String,
        /// The connection error.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// No complete answer within the timeout.
    #[error("Prometheus at {url} did not answer within {timeout:?}")]
    Timeout {
        /// Prometheus' URL.
        url: String,
        /// The limit that passed.
        timeout: Duration,
    },
    /// The body could not be read.
    #[error("reading the answer of Prometheus at {url}")]
    Body {
        /// Prometheus' URL.
        url: String,
        /// The read error.
        #[source]
        source: hyper::Error,
    },
    /// The body is larger than [`MAX_BODY_BYTES`].
    #[error("the answer of Prometheus at {url} exceeds {MAX_BODY_BYTES} bytes")]
    TooLarge {
        /// Prometheus' URL.
        url: String,
    },
    /// Prometheus answered with its error envelope (bad query, timeout, …).
    #[error("Prometheus rejected query {query:?} (HTTP {status}, {error_type}): {message}")]
    Query {
        /// The PromQL sent.
        query: String,
        /// HTTP status.
        status: u16,
        /// Prometheus' `errorType`.
        error_type: String,
        /// Prometheus' `error`.
        message: String,
    },
    /// A non-2xx status without a Prometheus error envelope (a proxy, a 404).
    #[error("Prometheus at {url} answered HTTP {status}: {snippet}")]
    Http {
        /// Prometheus' URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The start of the body.
        snippet: String,
    },
    /// The body is not the documented JSON.
    #[error("unexpected answer from Prometheus for query {query:?}")]
    Decode {
        /// The PromQL sent.
        query: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The result is neither an instant vector nor a scalar.
    #[error("query {query:?} returned a {result_type}, expected an instant vector or scalar")]
    ResultType {
        /// The PromQL sent.
        query: String,
        /// What came back (`matrix`, `string`).
        result_type: String,
    },
    /// A sample value is not a number.
    #[error("query {query:?} returned a non-numeric value {value:?}")]
    Value {
        /// The PromQL sent.
        query: String,
        /// The value as sent.
        value: String,
    },
}

/// One series of an instant query result.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Label set (`__name__` included when Prometheus keeps it).
    pub labels: BTreeMap<String, String>,
    /// The sample's timestamp in milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// The value as Prometheus sent it (may be NaN or ±Inf).
    pub value: f64,
}

/// The instant query client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PromClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
    /// Base URL without a trailing slash, e.g. `http://localhost:9090`.
    base: String,
    timeout: Duration,
}

impl PromClient {
    /// A client for the Prometheus at `url` (a path prefix such as
    /// `http://host/prometheus` is kept), each request bounded by `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, PromError> {
        let bad = |reason: &str| PromError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(bad("the scheme must be http or https")),
        }
        if uri.host().is_none() {
            return Err(bad("no host"));
        }
        if uri.query().is_some() {
            return Err(bad("must not have a query string"));
        }
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(PromError::Tls)?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            client,
            base: url.trim_end_matches('/').to_string(),
            timeout,
        })
    }

    /// The base URL, for logs and tables.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Runs an instant query at the server's current time.
    pub async fn query(&self, query: &str) -> Result<Vec<Series>, PromError> {
        let url = format!("{}/api/v1/query?query={}", self.base, form_encode(query));
        let uri: Uri = url.parse().map_err(|_| PromError::BadUrl {
            url: url.clone(),
            reason: "cannot build the query URL".into(),
        })?;
        let work = async {
            let response = self
                .client
                .get(uri)
                .await
                .map_err(|source| PromError::Unreachable {
                    url: self.base.clone(),
                    source,
                })?;
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|err| match err.downcast::<hyper::Error>() {
                    Ok(source) => PromError::Body {
                        url: self.base.clone(),
                        source: *source,
                    },
                    Err(_) => PromError::TooLarge {
                        url: self.base.clone(),
                    },
                })?
                .to_bytes();
            Ok::<_, PromError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| PromError::Timeout {
                url: self.base.clone(),
                timeout: self.timeout,
            })??;
        parse_response(query, &self.base, status.as_u16(), &body)
    }
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct VectorSample {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// Decodes an answer of `/api/v1/query` per the documented format.
pub fn parse_response(
    query: &str,
    url: &str,
    status: u16,
    body: &[u8],
) -> Result<Vec<Series>, PromError> {
    let envelope: Envelope = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(source) => {
            if !(200..300).contains(&status) {
                return Err(PromError::Http {
                    url: url.to_string(),
                    status,
                    snippet: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
                });
            }
            return Err(PromError::Decode {
                query: query.to_string(),
                source,
            });
        }
    };
    if envelope.status != "success" {
        return Err(PromError::Query {
            query: query.to_string(),
            status,
            error_type: envelope.error_type.unwrap_or_else(|| "unknown".into()),
            message: envelope.error.unwrap_or_default(),
        });
    }
    let Some(data) = envelope.data else {
        return Ok(Vec::new());
    };
    let decode = |source| PromError::Decode {
        query: query.to_string(),
        source,
    };
    let to_series = |labels, (ts, value): (f64, String)| -> Result<Series, PromError> {
        Ok(Series {
            labels,
            timestamp_ms: (ts * 1000.0).round() as i64,
            value: parse_value(&value).ok_or_else(|| PromError::Value {
                query: query.to_string(),
                value,
            })?,
        })
    };
    match data.result_type.as_str() {
        "vector" => {
            let samples: Vec<VectorSample> = serde_json::from_value(data.result).map_err(decode)?;
            samples
                .into_iter()
                .map(|s| to_series(s.metric, s.value))
                .collect()
        }
        "scalar" => {
            let v: (f64, String) = serde_json::from_value(data.result).map_err(decode)?;
            Ok(vec![to_series(BTreeMap::new(), v)?])
        }
        other => Err(PromError::ResultType {
            query: query.to_string(),
            result_type: other.to_string(),
        }),
    }
}

/// Prometheus writes special values as `NaN`, `+Inf` and `-Inf`.
fn parse_value(v: &str) -> Option<f64> {
    match v {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => v.parse().ok(),
    }
}

/// `application/x-www-form-urlencoded` encoding of a query parameter value.
pub fn form_encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len() * 3);
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_vector_scalar_and_errors() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"jetson_gpu_usage_percent","node":"agx"},"value":[1700000000.5,"20"]},
            {"metric":{"node":"orin"},"value":[1700000001,"NaN"]}]}}"#;
        let s = parse_response("q", "u", 200, body).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].labels["node"], "agx");
        assert_eq!(s[0].timestamp_ms, 1_700_000_000_500);
        assert_eq!(s[0].value, 20.0);
        assert!(s[1].value.is_nan());

        let body =
            br#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"+Inf"]}}"#;
        let s = parse_response("q", "u", 200, body).unwrap();
        assert_eq!(s[0].value, f64::INFINITY);

        let body = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#;
        let e = parse_response("up{", "u", 400, body).unwrap_err();
        assert!(
            matches!(&e, PromError::Query { status: 400, error_type, .. } if error_type == "bad_data"),
            "{e}"
        );

        let e = parse_response("q", "u", 502, b"<html>bad gateway</html>").unwrap_err();
        assert!(matches!(e, PromError::Http { status: 502, .. }), "{e}");
        let e = parse_response("q", "u", 200, b"{]").unwrap_err();
        assert!(matches!(e, PromError::Decode { .. }), "{e}");

        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        let e = parse_response("q[1m]", "u", 200, body).unwrap_err();
        assert!(matches!(e, PromError::ResultType { .. }), "{e}");

        let body = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"abc"]}]}}"#;
        let e = parse_response("q", "u", 200, body).unwrap_err();
        assert!(matches!(e, PromError::Value { .. }), "{e}");
    }

    #[test]
    fn encodes_promql() {
        assert_eq!(form_encode(r#"m{node="a b"}"#), "m%7Bnode%3D%22a%20b%22%7D");
    }

    #[test]
    fn rejects_bad_urls() {
        for url in ["localhost:9090", "ftp://x", "http://x/?a=b", "::"] {
            assert!(
                matches!(
                    PromClient::new(url, Duration::from_secs(1)),
                    Err(PromError::BadUrl { .. })
                ),
                "{url}"
            );
        }
        let c = PromClient::new("http://127.0.0.1:9090/prom/", Duration::from_secs(1)).unwrap();
        assert_eq!(c.base_url(), "http://127.0.0.1:9090/prom");
    }
}

//! End-to-end tests of the External Scaler: a client generated from the same
//! KEDA proto file talks to the server over 127.0.0.1, and the debounce is
//! checked with paused tokio time.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic the test

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use posture_core::gpu::{GpuSample, GpuSnapshot, NodeUsage, UsageState};
use posture_core::scaler::ScalerConfig;
use posture_scaler::pb::external_scaler_client::ExternalScalerClient;
use posture_scaler::pb::external_scaler_server::ExternalScaler as _;
use posture_scaler::pb::{GetMetricsRequest, ScaledObjectRef};
use posture_scaler::{Scaler, ScalerMetrics, ScalerOptions, StaticUsage};
use tokio::sync::{oneshot, watch};
use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

fn snapshot(pairs: &[(&str, f64)]) -> GpuSnapshot {
    GpuSnapshot {
        taken_at: 0,
        nodes: pairs
            .iter()
            .map(|(n, u)| {
                (
                    (*n).to_owned(),
                    NodeUsage {
                        sample: Some(GpuSample {
                            usage_percent: *u,
                            sampled_at: 0,
                        }),
                        state: UsageState::Ok,
                        error: None,
                    },
                )
            })
            .collect::<BTreeMap<_, _>>(),
    }
}

fn scaled_job(name: &str, metadata: &[(&str, &str)]) -> ScaledObjectRef {
    let mut scaler_metadata: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    // KEDA forwards the whole trigger metadata, scalerAddress included.
    scaler_metadata.insert(
        "scalerAddress".into(),
        "posture-scaler.posture.svc.cluster.local:50051".into(),
    );
    ScaledObjectRef {
        name: name.into(),
        namespace: "posture".into(),
        scaler_metadata,
    }
}

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn client(&self) -> ExternalScalerClient<Channel> {
        let channel = Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        ExternalScalerClient::new(channel)
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops on shutdown")
            .unwrap();
    }
}

async fn start(rx: watch::Receiver<GpuSnapshot>, options: ScalerOptions) -> Running {
    start_scaler(Scaler::new(rx, options, ScalerMetrics::default())).await
}

async fn start_scaler(scaler: Scaler<watch::Receiver<GpuSnapshot>>) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        posture_scaler::serve(listener, scaler, None, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Running {
        addr,
        stop: Some(stop),
        task,
    }
}

#[tokio::test]
async fn all_four_calls_round_trip_over_tcp() {
    let (tx, rx) = watch::channel(snapshot(&[("agx", 80.0), ("orin", 20.0), ("nano", 30.0)]));
    let server = start(rx, ScalerOptions::default()).await;
    let mut client = server.client().await;
    let sj = scaled_job("posture-pi1", &[]);

    // IsActive: a node is below 50 %.
    let r = client.is_active(sj.clone()).await.unwrap().into_inner();
    assert!(r.result);

    // GetMetricSpec: one metric, target 1 in both the deprecated and float fields.
    let spec = client
        .get_metric_spec(sj.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(spec.metric_specs.len(), 1);
    assert_eq!(spec.metric_specs[0].metric_name, "gpu_trigger");
    assert_eq!(spec.metric_specs[0].target_size, 1);
    assert_eq!(spec.metric_specs[0].target_size_float, 1.0);

    // GetMetrics: (100-80)+(100-20)+(100-30) = 170.
    let m = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(sj.clone()),
            metric_name: "gpu_trigger".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.metric_values.len(), 1);
    assert_eq!(m.metric_values[0].metric_name, "gpu_trigger");
    assert_eq!(m.metric_values[0].metric_value, 170);
    assert_eq!(m.metric_values[0].metric_value_float, 170.0);

    // StreamIsActive: the current state at once, then every change.
    let sj_stream = scaled_job("posture-pi1-1", &[("stabilizationWindowSeconds", "0")]);
    let err = client.stream_is_active(sj_stream).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "unknown key refused");

    let metadata = [("threshold", "25")];
    let mut stream = client
        .stream_is_active(scaled_job("posture-pi1-2", &metadata))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(first.result, "orin at 20 % is below 25 %");
    // Metadata can override the metric name; the spec follows.
    let spec = client
        .get_metric_spec(scaled_job("x", &[("metricName", "gpu_room")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(spec.metric_specs[0].metric_name, "gpu_room");

    // Usage rises everywhere; with the default 60 s stabilisation the stream
    // stays silent (still active), which the next test checks with paused
    // time. Here: GetMetrics follows the new snapshot at once.
    tx.send(snapshot(&[("agx", 100.0), ("orin", 95.0), ("nano", 90.0)]))
        .unwrap();
    let m = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(sj.clone()),
            metric_name: "gpu_trigger".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.metric_values[0].metric_value_float, 15.0);
    assert!(
        client.is_active(sj).await.unwrap().into_inner().result,
        "debounced: still active right after a drop"
    );
    drop(stream);
    server.stop().await;
}

#[tokio::test]
async fn stream_pushes_changes_without_stabilisation() {
    let (tx, rx) = watch::channel(snapshot(&[("agx", 90.0), ("orin", 95.0)]));
    let options = ScalerOptions {
        stabilization: Duration::ZERO,
        ..ScalerOptions::default()
    };
    let server = start(rx, options).await;
    let mut client = server.client().await;
    let mut stream = client
        .stream_is_active(scaled_job("posture-pi1", &[]))
        .await
        .unwrap()
        .into_inner();
    assert!(!stream.message().await.unwrap().unwrap().result);
    tx.send(snapshot(&[("agx", 90.0), ("orin", 10.0)])).unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a change is pushed")
        .unwrap()
        .unwrap();
    assert!(next.result);
    tx.send(snapshot(&[("agx", 90.0), ("orin", 60.0)])).unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a change is pushed")
        .unwrap()
        .unwrap();
    assert!(!next.result);
    // StreamMetricSpec sends the spec at once.
    let mut specs = client
        .stream_metric_spec(scaled_job("posture-pi1", &[]))
        .await
        .unwrap()
        .into_inner();
    let spec = specs.message().await.unwrap().unwrap();
    assert_eq!(spec.metric_specs[0].metric_name, "gpu_trigger");
    drop((stream, specs));
    server.stop().await;
}

#[tokio::test]
async fn bad_metadata_is_invalid_argument_with_a_clear_message() {
    let (_tx, rx) = watch::channel(snapshot(&[("agx", 10.0)]));
    let server = start(rx, ScalerOptions::default()).await;
    let mut client = server.client().await;

    let err = client
        .is_active(scaled_job("posture-pi1", &[("threshold", "fifty")]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("\"fifty\" is not a number"),
        "{}",
        err.message()
    );

    let err = client
        .get_metric_spec(scaled_job("posture-pi1", &[("treshold", "50")]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("unknown scalerMetadata key \"treshold\""),
        "{}",
        err.message()
    );

    let err = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(scaled_job("posture-pi1", &[("threshold", "250")])),
            metric_name: "gpu_trigger".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("outside 0..=100"),
        "{}",
        err.message()
    );

    let err = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(scaled_job("posture-pi1", &[])),
            metric_name: "cpu".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("unknown metric \"cpu\""),
        "{}",
        err.message()
    );
    server.stop().await;
}

/// The stabilisation window with paused time: once active, IsActive keeps
/// answering true for the window after the last time a node had room, and
/// the stream pushes `false` exactly when the window ends.
#[tokio::test(start_paused = true)]
async fn debounce_holds_active_for_the_stabilisation_window() {
    let (tx, rx) = watch::channel(snapshot(&[("agx", 80.0), ("orin", 20.0)]));
    let options = ScalerOptions {
        defaults: ScalerConfig::default(),
        stabilization: Duration::from_secs(60),
        ..ScalerOptions::default()
    };
    let scaler = Scaler::new(rx, options, ScalerMetrics::default());
    let sj = scaled_job("posture-pi1", &[]);
    let is_active = |s: &Scaler<watch::Receiver<GpuSnapshot>>, r: ScaledObjectRef| {
        let s = s.clone();
        async move {
            s.is_active(tonic::Request::new(r))
                .await
                .unwrap()
                .into_inner()
                .result
        }
    };

    assert!(is_active(&scaler, sj.clone()).await);
    let mut stream = scaler
        .stream_is_active(tonic::Request::new(sj.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.next().await.unwrap().unwrap().result);

    // Every node overloaded from now on.
    tx.send(snapshot(&[("agx", 90.0), ("orin", 85.0)])).unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(is_active(&scaler, sj.clone()).await, "held at 30 s");
    tokio::time::advance(Duration::from_millis(29_900)).await;
    assert!(is_active(&scaler, sj.clone()).await, "held at 59.9 s");

    // The stream is silent while held and pushes false when the hold ends.
    let pushed = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("false pushed when the window ends")
        .unwrap()
        .unwrap();
    assert!(!pushed.result);
    assert!(!is_active(&scaler, sj.clone()).await, "released after 60 s");

    // Room again: active at once.
    tx.send(snapshot(&[("agx", 90.0), ("orin", 10.0)])).unwrap();
    let pushed = tokio::time::timeout(Duration::from_secs(1), stream.next())
        .await
        .expect("true pushed on change")
        .unwrap()
        .unwrap();
    assert!(pushed.result);
    assert!(is_active(&scaler, sj).await);
}

/// A never-active ScaledJob is not held, and a static source works.
#[tokio::test(start_paused = true)]
async fn static_source_without_room_is_inactive() {
    let scaler = Scaler::new(
        StaticUsage(snapshot(&[("agx", 70.0)])),
        ScalerOptions::default(),
        ScalerMetrics::default(),
    );
    let r = scaler
        .is_active(tonic::Request::new(scaled_job("posture-pi1", &[])))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.result);
    let r = scaler
        .is_active(tonic::Request::new(scaled_job(
            "posture-pi1",
            &[("threshold", "80")],
        )))
        .await
        .unwrap()
        .into_inner();
    assert!(r.result, "threshold from metadata");
}

/// With `--tls-cert/--tls-key` the scaler serves gRPC over TLS; a client
/// trusting the CA (what KEDA's `caCert` does) gets answers.
#[tokio::test]
async fn serves_over_tls() {
    use tonic::transport::{Certificate, ClientTlsConfig};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls");
    let tls = posture_scaler::TlsPem {
        cert: std::fs::read(dir.join("server.pem")).unwrap(),
        key: std::fs::read(dir.join("server.key")).unwrap(),
    };
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();

    let (_tx, rx) = watch::channel(snapshot(&[("agx", 10.0)]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let scaler = Scaler::new(rx, ScalerOptions::default(), ScalerMetrics::default());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        posture_scaler::serve(listener, scaler, Some(tls), async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });

    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ExternalScalerClient::new(channel);
    let r = client
        .is_active(scaled_job("posture-pi1", &[]))
        .await
        .unwrap();
    assert!(r.into_inner().result);

    // A plaintext client is refused.
    let plain = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plain {
        let mut c = ExternalScalerClient::new(channel);
        assert!(c.is_active(scaled_job("posture-pi1", &[])).await.is_err());
    }
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
}

#[test]
fn bad_tls_material_is_a_clear_error() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scaler = Scaler::new(
            StaticUsage::default(),
            ScalerOptions::default(),
            ScalerMetrics::default(),
        );
        let tls = posture_scaler::TlsPem {
            cert: b"not a certificate".to_vec(),
            key: b"not a key".to_vec(),
        };
        let err = posture_scaler::serve(listener, scaler, Some(tls), async {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains("TLS"), "{err}");
    });
}

/// The next message of a spec stream, within 5 s (no poll involved).
async fn next(
    s: &mut tonic::Streaming<posture_scaler::pb::GetMetricSpecResponse>,
) -> posture_scaler::pb::GetMetricSpecResponse {
    tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .expect("a spec is pushed without polling")
        .unwrap()
        .expect("the stream stays open")
}

/// KEDA's rules for StreamMetricSpec: the current specs as soon as the stream
/// opens, a push on every change (a new target reaches KEDA, and the HPA,
/// without a poll), and GetMetricSpec equal to the latest streamed value.
#[tokio::test]
async fn stream_metric_spec_pushes_every_target_change_and_matches_get_metric_spec() {
    let (_tx, rx) = watch::channel(snapshot(&[("agx", 30.0)]));
    let metrics = ScalerMetrics::default();
    let scaler = Scaler::new(rx, ScalerOptions::default(), metrics.clone());
    let server = start_scaler(scaler.clone()).await;
    let mut client = server.client().await;
    let plain = scaled_job("posture-pi1", &[]);
    let named = scaled_job("posture-pi2", &[("metricName", "gpu_room")]);
    let spec_of = |r: &posture_scaler::pb::GetMetricSpecResponse| {
        (
            r.metric_specs[0].metric_name.clone(),
            r.metric_specs[0].target_size_float,
            r.metric_specs[0].target_size,
        )
    };
    let mut s1 = client
        .stream_metric_spec(plain.clone())
        .await
        .unwrap()
        .into_inner();
    let mut s2 = client
        .stream_metric_spec(named.clone())
        .await
        .unwrap()
        .into_inner();
    // Rule 1: the current spec at once.
    assert_eq!(
        spec_of(&next(&mut s1).await),
        ("gpu_trigger".into(), 1.0, 1)
    );
    assert_eq!(spec_of(&next(&mut s2).await), ("gpu_room".into(), 1.0, 1));

    // The operator raises the target: both streams get it at once.
    assert!(scaler.update_settings(|s| s.target = 15.0).unwrap());
    assert_eq!(
        spec_of(&next(&mut s1).await),
        ("gpu_trigger".into(), 15.0, 15)
    );
    assert_eq!(spec_of(&next(&mut s2).await), ("gpu_room".into(), 15.0, 15));
    // Rule 2: GetMetricSpec answers what was streamed last.
    let polled = client
        .get_metric_spec(plain.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(spec_of(&polled), ("gpu_trigger".into(), 15.0, 15));

    // A new default metric name changes only the trigger that uses the default.
    assert!(
        scaler
            .update_settings(|s| s.defaults.metric_name = "gpu_spare".into())
            .unwrap()
    );
    assert_eq!(
        spec_of(&next(&mut s1).await),
        ("gpu_spare".into(), 15.0, 15)
    );
    // Same settings again, and a refused target: no push, nothing changes.
    assert!(!scaler.update_settings(|s| s.target = 15.0).unwrap());
    assert!(scaler.update_settings(|s| s.target = 0.0).is_err());
    assert!(scaler.update_settings(|s| s.target = f64::NAN).is_err());
    assert!(
        scaler
            .update_settings(|s| s.defaults.threshold = 300.0)
            .is_err()
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), s2.message())
            .await
            .is_err(),
        "nothing pushed for an unchanged spec"
    );
    // A fractional target is kept exactly; the deprecated integer field rounds.
    scaler.update_settings(|s| s.target = 2.4).unwrap();
    assert_eq!(spec_of(&next(&mut s2).await), ("gpu_room".into(), 2.4, 2));
    assert_eq!(spec_of(&next(&mut s1).await), ("gpu_spare".into(), 2.4, 2));
    assert_eq!(metrics.spec_pushes.get(), 5);

    // A trigger whose metadata is invalid gets InvalidArgument, like GetMetricSpec.
    let err = client
        .stream_metric_spec(scaled_job("bad", &[("threshold", "x")]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    drop((s1, s2));
    server.stop().await;
}

/// The settings file: edited while running, applied, pushed; a bad edit is
/// ignored and the settings in force stay.
#[tokio::test]
async fn settings_file_changes_reach_open_streams() {
    let (_tx, rx) = watch::channel(snapshot(&[("agx", 30.0)]));
    let scaler = Scaler::new(rx, ScalerOptions::default(), ScalerMetrics::default());
    let base = scaler.settings();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scaler.yaml");
    std::fs::write(&path, "target: 5\n").unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let watcher = tokio::spawn(posture_scaler::settings::watch_file(
        scaler.clone(),
        path.clone(),
        base,
        Duration::from_millis(20),
        async {
            let _ = stopped.await;
        },
    ));
    let server = start_scaler(scaler.clone()).await;
    let mut client = server.client().await;
    let sj = scaled_job("posture-pi1", &[]);
    // Wait for the first read, then open the stream.
    for _ in 0..250 {
        if scaler.settings().target == 5.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut stream = client
        .stream_metric_spec(sj.clone())
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.metric_specs[0].target_size_float, 5.0);
    // A typo: ignored, target stays 5.
    std::fs::write(&path, "taget: 9\n").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(scaler.settings().target, 5.0);
    // A real edit is pushed.
    std::fs::write(&path, "target: 12\nthreshold: 40\n").unwrap();
    let pushed = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("pushed")
        .unwrap()
        .unwrap();
    assert_eq!(pushed.metric_specs[0].target_size_float, 12.0);
    assert_eq!(scaler.settings().defaults.threshold, 40.0);
    let _ = stop.send(());
    watcher.await.unwrap();
    drop(stream);
    server.stop().await;
}

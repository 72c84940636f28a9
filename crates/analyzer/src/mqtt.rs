//! The MQTT edge: subscribe to camera topics and feed frames to the
//! [`Analyzer`]; and the connection settings shared with the publisher.
//!
//! QoS 1 with a persistent session (no clean start, stable client id, in
//! MQTT 5 a session that never expires), so frames published while the
//! analyzer restarts wait at the broker. MQTT 5 by default, so the broker
//! itself discards a message too large for `--max-payload-bytes` instead of
//! stalling the camera's queue behind it (see [`crate::subscriber`]); a
//! payload that still arrives over the limit is measured before any copy
//! and only its first bytes are dead-lettered.
//! Acknowledgements are manual: a frame's PUBACK goes out only after its
//! outputs are durable ([`Analyzer::process`] returned `Ok`). A frame in hand
//! when the connection drops is not acknowledged; the broker redelivers it
//! and its frame id makes the second pass a no-op.
//!
//! ```text
//!  broker ─► subscriber::Connection (poll task) ─► bounded channel ─► worker: length check ─► Analyzer::process | reject_oversized ─► client.ack
//! ```

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use posture_core::backoff::{Backoff, Retries};
use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use tokio::sync::mpsc;

use crate::deadletter::OVERSIZED_PREFIX_BYTES;
use crate::pipeline::{Analyzer, Frame, Outcome};
use crate::retry::Parking;
use crate::subscriber::{self, AckToken, Client, Connection, Message, MqttProtocol, Polled};

/// Frames that may wait for a retry at once (see [`crate::retry`]); beyond
/// that the backlog stays at the broker.
const PARKED_FRAMES: usize = 32;

/// Largest MQTT packet (the protocol's limit): what the publisher, and an
/// analyzer speaking MQTT 3.1.1, accept. A 3.1.1 client that refused a large
/// packet would only drop the connection and get it redelivered forever, so
/// in 3.1.1 the broker's own limit must protect the analyzer.
pub const MQTT_MAX_PACKET: usize = 268_435_455 + 5;

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct MqttConfig {
    /// Broker host name or address.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client id; stable per camera/host so the broker keeps the session.
    pub client_id: String,
    /// Optional user name.
    pub username: Option<String>,
    /// Optional password.
    pub password: Option<String>,
    /// TLS settings, when the broker speaks TLS.
    pub tls: Option<MqttTls>,
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// Protocol of the analyzer's subscription (the publisher speaks 3.1.1).
    pub protocol: MqttProtocol,
}

/// TLS to the broker (rustls; the process installs its crypto provider).
#[derive(Clone, Debug)]
pub struct MqttTls {
    /// PEM bundle of trusted CAs.
    pub ca_file: PathBuf,
}

/// Why the analyzer loop stopped with an error (connection trouble is
/// retried, never an error).
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The CA file could not be read.
    #[error("reading the MQTT CA file {path}")]
    CaFile {
        /// Which file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The analyzer cannot continue (its model is gone); restart the process.
    #[error("the analyzer cannot go on")]
    Analyzer(#[source] crate::pipeline::AnalyzeError),
    /// No topic to subscribe to.
    #[error("no MQTT topic given (use --topic or MQTT_TOPIC)")]
    NoTopic,
}

impl MqttConfig {
    /// A plain-TCP config with defaults for everything else.
    pub fn new(host: impl Into<String>, port: u16, client_id: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port,
            client_id: client_id.into(),
            username: None,
            password: None,
            tls: None,
            keep_alive: Duration::from_secs(30),
            protocol: MqttProtocol::V5,
        }
    }

    /// rumqttc options for a publisher (clean session, automatic acks).
    pub fn options(&self, clean_session: bool) -> Result<MqttOptions, MqttError> {
        self.options_with(clean_session, false)
    }

    /// rumqttc MQTT 3.1.1 options for the analyzer: persistent session and
    /// manual acks (a PUBACK only when [`rumqttc::AsyncClient::ack`] is
    /// called). MQTT 5 options: [`crate::subscriber`].
    pub fn subscriber_options(&self) -> Result<MqttOptions, MqttError> {
        self.options_with(false, true)
    }

    fn options_with(
        &self,
        clean_session: bool,
        manual_acks: bool,
    ) -> Result<MqttOptions, MqttError> {
        let mut o = MqttOptions::new(self.client_id.clone(), self.host.clone(), self.port);
        o.set_manual_acks(manual_acks);
        o.set_keep_alive(self.keep_alive);
        o.set_max_packet_size(MQTT_MAX_PACKET, MQTT_MAX_PACKET);
        // A non-empty client id is required for a persistent session; ours never is.
        o.set_clean_session(clean_session || self.client_id.is_empty());
        if let Some(user) = &self.username {
            o.set_credentials(user.clone(), self.password.clone().unwrap_or_default());
        }
        if let Some(transport) = self.tls_transport()? {
            o.set_transport(transport);
        }
        Ok(o)
    }

    /// The TLS transport, when the broker speaks TLS.
    pub(crate) fn tls_transport(&self) -> Result<Option<Transport>, MqttError> {
        let Some(tls) = &self.tls else {
            return Ok(None);
        };
        let ca = std::fs::read(&tls.ca_file).map_err(|source| MqttError::CaFile {
            path: tls.ca_file.clone(),
            source,
        })?;
        Ok(Some(Transport::tls_with_config(TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth: None,
        })))
    }
}

/// The camera id of a topic: its last non-empty segment (`images/pi1` → `pi1`).
pub fn camera_from_topic(topic: &str) -> String {
    topic
        .rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or(topic)
        .to_string()
}

/// Retry delays doubling from `initial` up to `max`, with 10 % jitter drawn
/// from a generator seeded by `who` (the client id): analyzers that lost the
/// broker together do not all come back in the same instant.
pub fn retries(initial: Duration, max: Duration, who: &str) -> Retries {
    use std::hash::{Hash as _, Hasher as _};
    // DefaultHasher::new() has fixed keys: the same id gives the same seed.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    who.hash(&mut h);
    Retries::new(
        Backoff {
            initial,
            max,
            jitter: 0.1,
        },
        h.finish(),
    )
}

/// Counts of one analyzer run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Frames acknowledged after analysis.
    pub analyzed: u64,
    /// Frames acknowledged after rejection (dead-lettered).
    pub rejected: u64,
}

/// Subscribes to `topics` and analyses every frame until `shutdown`
/// resolves; then finishes the frame in hand, acknowledges it and
/// disconnects. `on_connection` is told when the subscription is in place
/// (true) and when the broker connection drops (false): readiness. `on_outcome` sees each acknowledged frame.
/// Broker outages are retried forever with backoff.
pub async fn run_analyzer(
    cfg: &MqttConfig,
    topics: &[String],
    camera_override: Option<&str>,
    analyzer: &mut Analyzer,
    shutdown: impl Future<Output = ()>,
    on_connection: impl Fn(bool) + Send + 'static,
    mut on_outcome: impl FnMut(&Outcome),
) -> Result<RunStats, MqttError> {
    if topics.is_empty() {
        return Err(MqttError::NoTopic);
    }
    let limit = analyzer.config().limits.max_payload_bytes;
    let (client, connection) = subscriber::connect(cfg, limit)?;
    tracing::info!(
        broker = %format!("{}:{}", cfg.host, cfg.port),
        client_id = %cfg.client_id,
        ?topics,
        protocol = %cfg.protocol,
        max_packet = subscriber::max_packet_size(limit),
        "analyzer connecting (QoS 1, persistent session, manual acks)"
    );
    // Messages between the network task and the worker. Small on purpose: the
    // backlog belongs at the broker (it survives our restarts), not in memory.
    let (tx, mut rx) = mpsc::channel::<(Message, jiff::Timestamp)>(4);
    // If this future is dropped (the task aborted), the network task goes
    // too: the connection closes without acks, like a crash, and the broker
    // redelivers the frames in hand to the next session.
    let mut poller = AbortOnDrop(Some(tokio::spawn(poll_loop(
        connection,
        client.clone(),
        topics.to_vec(),
        tx,
        on_connection,
        cfg.client_id.clone(),
        cfg.protocol,
    ))));
    tokio::pin!(shutdown);
    let mut stats = RunStats::default();
    let mut fatal = None;
    let mut flush_tick = tokio::time::interval(Duration::from_secs(5));
    flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Frames that failed on a transient output error wait here, per camera,
    // so the other cameras' frames go on (crate::retry).
    let mut parking: Parking<(AckToken, usize)> = Parking::new(PARKED_FRAMES);
    'frames: loop {
        let due = parking.next_due();
        let ((token, total), frame) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                match parking.take_due(tokio::time::Instant::now()) {
                    Some(p) => p,
                    None => continue,
                }
            }
            p = rx.recv(), if !parking.is_full() => match p {
                Some((message, received)) => {
                    let (held, frame) = frame_of(message, received, camera_override, limit);
                    if parking.holds(&frame.camera) {
                        // Behind the camera's waiting frame, to keep its order.
                        parking.queue(held, frame);
                        continue;
                    }
                    (held, frame)
                }
                None => break,
            },
            _ = flush_tick.tick() => {
                analyzer.flush_spool().await;
                continue;
            }
        };
        let result = if total > limit {
            analyzer.reject_oversized(&frame, total)
        } else {
            analyzer.process(&frame).await
        };
        let outcome = match result {
            Ok(o) => o,
            Err(e) if e.is_fatal() => {
                tracing::error!(error = %crate::error_chain(&e), camera = %frame.camera, "the analyzer cannot go on; the frame stays unacknowledged for the next run");
                fatal = Some(e);
                break 'frames;
            }
            Err(e) => {
                let camera = frame.camera.clone();
                let delay = parking.failed((token, total), frame, tokio::time::Instant::now());
                tracing::error!(error = %crate::error_chain(&e), %camera, retry_in = ?delay, waiting = parking.len(), "frame not recorded; it stays unacknowledged and is retried while other cameras go on");
                continue;
            }
        };
        parking.succeeded(&frame.camera, tokio::time::Instant::now());
        match &outcome {
            Outcome::Analyzed { .. } => stats.analyzed += 1,
            Outcome::Rejected { .. } => stats.rejected += 1,
        }
        if let Err(e) = client.ack(&token).await {
            // The event loop is gone (shutting down): the broker redelivers.
            tracing::warn!(error = %e, "could not acknowledge a frame");
        }
        on_outcome(&outcome);
    }
    if !parking.is_empty() {
        tracing::warn!(
            frames = parking.len(),
            "frames waiting for a retry stay unacknowledged; the broker redelivers them"
        );
    }
    tracing::info!(
        analyzed = stats.analyzed,
        rejected = stats.rejected,
        "analyzer stopping"
    );
    drop(rx);
    let _ = client.disconnect().await;
    // Let the network task send the acks and the DISCONNECT.
    if let Some(mut handle) = poller.0.take()
        && tokio::time::timeout(Duration::from_secs(3), &mut handle)
            .await
            .is_err()
    {
        handle.abort();
    }
    analyzer.flush_spool().await;
    match fatal {
        Some(e) => Err(MqttError::Analyzer(e)),
        None => Ok(stats),
    }
}

/// The frame of a received message (camera from the topic unless
/// overridden), with what acknowledges it and the payload's real length. The
/// length is checked before any copy: a payload over `limit` keeps only its
/// first bytes (for the dead letter).
fn frame_of(
    message: Message,
    received: jiff::Timestamp,
    camera_override: Option<&str>,
    limit: usize,
) -> ((AckToken, usize), Frame) {
    let Message {
        topic,
        payload,
        token,
    } = message;
    let total = payload.len();
    let frame = Frame {
        camera: camera_override
            .map(str::to_string)
            .unwrap_or_else(|| camera_from_topic(&topic)),
        source: topic,
        name_hint: None,
        payload: if total > limit {
            payload[..total.min(OVERSIZED_PREFIX_BYTES)].to_vec()
        } else {
            Vec::from(payload)
        },
        received,
    };
    ((token, total), frame)
}

struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

async fn poll_loop(
    mut connection: Connection,
    client: Client,
    topics: Vec<String>,
    tx: mpsc::Sender<(Message, jiff::Timestamp)>,
    on_connection: impl Fn(bool),
    client_id: String,
    protocol: MqttProtocol,
) {
    let mut backoff = retries(
        Duration::from_millis(200),
        Duration::from_secs(30),
        &client_id,
    );
    let mut down_logged = false;
    let mut ever_connected = false;
    loop {
        match connection.poll().await {
            Polled::Connected { session_present } => {
                tracing::info!(session_present, %protocol, "connected to the MQTT broker");
                ever_connected = true;
                backoff.reset();
                down_logged = false;
                // Subscribing again is harmless when the session kept the subscription.
                for topic in &topics {
                    if let Err(e) = client.try_subscribe(topic) {
                        tracing::error!(%topic, error = %e, "could not queue the subscription");
                    }
                }
            }
            Polled::Subscribed => {
                // Ready once the broker holds our subscription: from now on
                // frames queue for us even while we are away.
                tracing::debug!("subscribed");
                on_connection(true);
            }
            Polled::Message(m) => {
                if tx.send((*m, jiff::Timestamp::now())).await.is_err() {
                    // The worker stopped: keep polling so its acks and the
                    // disconnect go out, until the disconnect is sent.
                    continue;
                }
            }
            Polled::DisconnectSent => {
                // Flush the DISCONNECT itself.
                let _ = tokio::time::timeout(Duration::from_millis(500), connection.poll()).await;
                return;
            }
            Polled::Other => {}
            Polled::Failed(e) => {
                on_connection(false);
                if tx.is_closed() {
                    return;
                }
                let delay = backoff.next_delay();
                if !down_logged && !ever_connected && protocol == MqttProtocol::V5 {
                    tracing::warn!(error = %e, retry_in = ?delay, "cannot connect to the MQTT broker; retrying with backoff (a broker that speaks only MQTT 3.1.1, such as the embedded broker of `posture-farm local`, closes MQTT 5 connections: use --mqtt-protocol 3.1.1 there and set the broker's message size limit)");
                    down_logged = true;
                } else if !down_logged {
                    tracing::warn!(error = %e, retry_in = ?delay, "MQTT broker unreachable; reconnecting with backoff");
                    down_logged = true;
                } else {
                    tracing::debug!(error = %e, retry_in = ?delay, "MQTT broker still unreachable");
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camera_is_the_last_topic_segment() {
        assert_eq!(camera_from_topic("images/pi1"), "pi1");
        assert_eq!(camera_from_topic("farm/images/pi7/"), "pi7");
        assert_eq!(camera_from_topic("pi3"), "pi3");
    }

    #[test]
    fn retries_double_and_cap_with_at_most_ten_percent_jitter() {
        let mut b = retries(Duration::from_millis(100), Duration::from_millis(350), "a");
        for base in [100u64, 200, 350, 350] {
            let d = b.next_delay();
            let base = Duration::from_millis(base);
            assert!(d >= base && d <= base.mul_f64(1.1), "{d:?} vs {base:?}");
        }
        b.reset();
        assert!(b.next_delay() < Duration::from_millis(111));
        // Another client id draws other jitter.
        let seq = |id| {
            let mut r = retries(Duration::from_secs(1), Duration::from_secs(30), id);
            (0..6).map(|_| r.next_delay()).collect::<Vec<_>>()
        };
        assert_ne!(seq("posture-analyzer-pi1"), seq("posture-analyzer-pi2"));
    }

    #[test]
    fn options_are_persistent_and_accept_big_packets() {
        let o = MqttConfig::new("h", 1883, "analyzer-pi1")
            .options(false)
            .unwrap();
        assert!(!o.clean_session());
        assert_eq!(o.max_packet_size(), MQTT_MAX_PACKET);
        let mut cfg = MqttConfig::new("h", 8883, "x");
        cfg.tls = Some(MqttTls {
            ca_file: "/nonexistent/ca.pem".into(),
        });
        assert!(matches!(cfg.options(false), Err(MqttError::CaFile { .. })));
    }
}

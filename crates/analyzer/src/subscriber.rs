//! The analyzer's MQTT subscription in MQTT 5 (the default) or 3.1.1: one
//! small interface over rumqttc's two clients, so the run loop in
//! [`crate::mqtt`] does not care which protocol is spoken.
//!
//! Why MQTT 5 — what a too-large message does (the real semantics):
//! - **MQTT 3.1.1** has no way to tell the broker a size limit. A client
//!   that refuses a large packet can only drop the connection; the broker
//!   then redelivers the unacknowledged QoS 1 message on every reconnect,
//!   and the camera's queue stalls behind it forever. Accepting it instead
//!   puts the whole message in memory. Only the broker's own limit
//!   (mosquitto's `message_size_limit`) protects a 3.1.1 subscriber.
//! - **MQTT 5** carries the client's *Maximum Packet Size* in CONNECT; the
//!   broker "MUST NOT send packets exceeding Maximum Packet Size to the
//!   Client" and discards such a message "as if it had completed sending"
//!   it (MQTT 5.0 §3.1.2.11.4, [MQTT-3.1.2-24/25]). The message never
//!   reaches us, nothing stalls, and the queue behind it flows on.
//!
//! So the analyzer speaks MQTT 5 and advertises
//! [`max_packet_size`]`(--max-payload-bytes)`: the payload limit plus room
//! for the largest topic and the packet's headers. A payload a little over
//! the limit (within that room) still arrives; the run loop checks its
//! length before copying it and dead-letters only its first bytes.
//! *Receive Maximum* bounds how many unacknowledged messages the broker
//! sends ahead, so at most [`RECEIVE_MAXIMUM`] payloads are ever in memory.
//!
//! ```text
//!  connect(cfg, max payload) ─► (Client, Connection)
//!  Connection::poll ─► Polled::{Connected, Subscribed, Message, DisconnectSent, Other, Failed}
//!  Client::{subscribe, ack(AckToken), disconnect}
//! ```

use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Packet as Packet5, Publish as Publish5};
use rumqttc::v5::{
    AsyncClient as Client5, Event as Event5, EventLoop as EventLoop5, MqttOptions as MqttOptions5,
};
use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, Publish, QoS};

use crate::mqtt::{MqttConfig, MqttError};

/// The MQTT protocol version the analyzer subscribes with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MqttProtocol {
    /// MQTT 5: the broker discards what exceeds our Maximum Packet Size.
    #[default]
    V5,
    /// MQTT 3.1.1, for brokers without MQTT 5: set the broker's message size
    /// limit (mosquitto `message_size_limit`) to protect the analyzer.
    V311,
}

impl MqttProtocol {
    /// `5` or `3.1.1`, as on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            MqttProtocol::V5 => "5",
            MqttProtocol::V311 => "3.1.1",
        }
    }
}

impl std::fmt::Display for MqttProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for MqttProtocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "5" | "5.0" | "v5" => Ok(MqttProtocol::V5),
            "3.1.1" | "3" | "4" | "v3.1.1" => Ok(MqttProtocol::V311),
            other => Err(format!("unknown MQTT protocol {other:?} (use 5 or 3.1.1)")),
        }
    }
}

/// Bytes of a PUBLISH besides its payload, at most: a topic of up to 65,535
/// bytes and its length, the packet id, the property length and up to 1 KiB
/// of properties (user properties of an MQTT 5 camera, say).
pub const PUBLISH_OVERHEAD: usize = 2 + 65_535 + 2 + 4 + 1024;

/// Most unacknowledged messages the broker sends ahead (MQTT 5 Receive
/// Maximum): the analyzer handles one at a time, so a few in flight keep it
/// busy, and memory stays within this many payloads.
pub const RECEIVE_MAXIMUM: u16 = 4;

/// The largest MQTT packet the protocol allows.
const PROTOCOL_MAX_PACKET: usize = 268_435_455 + 5;

/// The Maximum Packet Size advertised for a payload limit: the limit plus
/// [`PUBLISH_OVERHEAD`], capped at the protocol's maximum.
pub fn max_packet_size(max_payload_bytes: usize) -> u32 {
    let size = max_payload_bytes
        .saturating_add(PUBLISH_OVERHEAD)
        .min(PROTOCOL_MAX_PACKET);
    u32::try_from(size).unwrap_or(u32::MAX)
}

/// One message received, not yet acknowledged.
#[derive(Debug)]
pub(crate) struct Message {
    /// Its topic.
    pub topic: String,
    /// Its payload, as read (not copied).
    pub payload: Bytes,
    /// What [`Client::ack`] needs (the packet without its payload).
    pub token: AckToken,
}

/// The packet to acknowledge, its payload taken out so it holds no memory.
#[derive(Debug)]
pub(crate) enum AckToken {
    V311(Publish),
    V5(Publish5),
}

/// A handle for subscribing, acknowledging and disconnecting.
#[derive(Clone, Debug)]
pub(crate) enum Client {
    V311(AsyncClient),
    V5(Client5),
}

impl Client {
    /// Queues a QoS 1 subscription (sent when the connection is up).
    pub fn try_subscribe(&self, topic: &str) -> Result<(), String> {
        match self {
            Client::V311(c) => c
                .try_subscribe(topic, QoS::AtLeastOnce)
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_subscribe(topic, rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
                .map_err(|e| e.to_string()),
        }
    }

    /// Acknowledges a message (its PUBACK goes out with the next poll).
    pub async fn ack(&self, token: &AckToken) -> Result<(), String> {
        match (self, token) {
            (Client::V311(c), AckToken::V311(p)) => c.ack(p).await.map_err(|e| e.to_string()),
            (Client::V5(c), AckToken::V5(p)) => c.ack(p).await.map_err(|e| e.to_string()),
            _ => Err("acknowledgement for another protocol's packet".into()),
        }
    }

    /// Queues a DISCONNECT.
    pub async fn disconnect(&self) -> Result<(), String> {
        match self {
            Client::V311(c) => c.disconnect().await.map_err(|e| e.to_string()),
            Client::V5(c) => c.disconnect().await.map_err(|e| e.to_string()),
        }
    }
}

/// The network side: poll it to make progress.
pub(crate) enum Connection {
    V311(Box<EventLoop>),
    V5(Box<EventLoop5>),
}

/// What one poll brought.
#[derive(Debug)]
pub(crate) enum Polled {
    /// CONNACK received.
    Connected {
        /// Whether the broker still had our session.
        session_present: bool,
    },
    /// SUBACK received: the subscription is in place.
    Subscribed,
    /// A message.
    Message(Box<Message>),
    /// Our DISCONNECT went out.
    DisconnectSent,
    /// Anything else (pings, acks going out).
    Other,
    /// The connection failed; poll again to reconnect.
    Failed(String),
}

impl Connection {
    /// Drives the connection until the next event.
    pub async fn poll(&mut self) -> Polled {
        match self {
            Connection::V311(el) => match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => Polled::Connected {
                    session_present: ack.session_present,
                },
                Ok(Event::Incoming(Packet::SubAck(_))) => Polled::Subscribed,
                Ok(Event::Incoming(Packet::Publish(mut p))) => {
                    let payload = std::mem::take(&mut p.payload);
                    Polled::Message(Box::new(Message {
                        topic: p.topic.clone(),
                        payload,
                        token: AckToken::V311(p),
                    }))
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => Polled::DisconnectSent,
                Ok(_) => Polled::Other,
                Err(e) => Polled::Failed(e.to_string()),
            },
            Connection::V5(el) => match el.poll().await {
                Ok(Event5::Incoming(Packet5::ConnAck(ack))) => Polled::Connected {
                    session_present: ack.session_present,
                },
                Ok(Event5::Incoming(Packet5::SubAck(_))) => Polled::Subscribed,
                Ok(Event5::Incoming(Packet5::Publish(mut p))) => {
                    let payload = std::mem::take(&mut p.payload);
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    Polled::Message(Box::new(Message {
                        topic,
                        payload,
                        token: AckToken::V5(p),
                    }))
                }
                Ok(Event5::Outgoing(Outgoing::Disconnect)) => Polled::DisconnectSent,
                Ok(_) => Polled::Other,
                Err(e) => Polled::Failed(e.to_string()),
            },
        }
    }
}

/// A subscriber session for `cfg`: persistent (no clean start, stable
/// client id), manual acknowledgements, and, in MQTT 5, the Maximum Packet
/// Size for `max_payload_bytes` and [`RECEIVE_MAXIMUM`].
pub(crate) fn connect(
    cfg: &MqttConfig,
    max_payload_bytes: usize,
) -> Result<(Client, Connection), MqttError> {
    // Requests (acks, subscribes) between the client and its event loop;
    // 64 is far above what one worker queues.
    const REQUESTS: usize = 64;
    match cfg.protocol {
        MqttProtocol::V311 => {
            let (c, el) = AsyncClient::new(cfg.subscriber_options()?, REQUESTS);
            Ok((Client::V311(c), Connection::V311(Box::new(el))))
        }
        MqttProtocol::V5 => {
            let (c, el) = Client5::new(v5_options(cfg, max_payload_bytes)?, REQUESTS);
            Ok((Client::V5(c), Connection::V5(Box::new(el))))
        }
    }
}

/// rumqttc MQTT 5 options of the analyzer's session.
pub(crate) fn v5_options(
    cfg: &MqttConfig,
    max_payload_bytes: usize,
) -> Result<MqttOptions5, MqttError> {
    let mut o = MqttOptions5::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
    o.set_manual_acks(true);
    // rumqttc refuses keep-alives under 5 s.
    o.set_keep_alive(cfg.keep_alive.max(Duration::from_secs(5)));
    // A persistent session needs a client id; ours never is empty.
    o.set_clean_start(cfg.client_id.is_empty());
    // In MQTT 5 a session ends Session Expiry Interval after the connection
    // closes, and 0 (the default) ends it at once: frames published while we
    // restart would be lost. u32::MAX means "never expires", like a 3.1.1
    // persistent session (the broker may cap it, e.g. mosquitto's
    // persistent_client_expiration).
    o.set_session_expiry_interval(Some(u32::MAX));
    // Also rumqttc's own check of incoming packets (remaining length).
    o.set_max_packet_size(Some(max_packet_size(max_payload_bytes)));
    o.set_receive_maximum(Some(RECEIVE_MAXIMUM));
    if let Some(user) = &cfg.username {
        o.set_credentials(user.clone(), cfg.password.clone().unwrap_or_default());
    }
    if let Some(transport) = cfg.tls_transport()? {
        o.set_transport(transport);
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_parses_and_prints() {
        assert_eq!("5".parse::<MqttProtocol>().unwrap(), MqttProtocol::V5);
        assert_eq!("3.1.1".parse::<MqttProtocol>().unwrap(), MqttProtocol::V311);
        assert!("6".parse::<MqttProtocol>().is_err());
        assert_eq!(MqttProtocol::V311.to_string(), "3.1.1");
        assert_eq!(MqttProtocol::default(), MqttProtocol::V5);
    }

    #[test]
    fn max_packet_leaves_room_for_topic_and_headers_only() {
        assert_eq!(
            max_packet_size(1 << 20) as usize,
            (1 << 20) + PUBLISH_OVERHEAD
        );
        const { assert!(PUBLISH_OVERHEAD < 70_000) };
        assert_eq!(max_packet_size(usize::MAX) as usize, PROTOCOL_MAX_PACKET);
    }

    #[test]
    fn v5_session_is_persistent_limited_and_manually_acked() {
        let cfg = MqttConfig::new("h", 1883, "posture-analyzer-pi1");
        let o = v5_options(&cfg, 1 << 20).unwrap();
        assert!(!o.clean_start());
        assert!(o.manual_acks());
        assert_eq!(o.session_expiry_interval(), Some(u32::MAX));
        assert_eq!(o.max_packet_size(), Some(max_packet_size(1 << 20)));
        assert_eq!(o.receive_maximum(), Some(RECEIVE_MAXIMUM));
    }
}

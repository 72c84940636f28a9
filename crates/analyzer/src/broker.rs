//! An embedded MQTT broker (rumqttd) for `posture-farm local`, so the whole
//! pipeline runs on a laptop with nothing installed. Plain TCP on the given
//! address (use 127.0.0.1); it lives until the process exits.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// The broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Its thread could not be spawned.
    #[error("starting the embedded MQTT broker thread")]
    Thread(#[source] std::io::Error),
    /// It did not start listening.
    #[error("the embedded MQTT broker is not listening on {0} (port taken?)")]
    NotListening(SocketAddr),
}

/// Starts rumqttd on `addr` in background threads. Clients connecting early
/// retry, so there is no need to wait for the listener.
pub async fn start_embedded_broker(
    addr: SocketAddr,
    max_payload: usize,
) -> Result<(), BrokerError> {
    let server = ServerSettings {
        name: "v4-local".to_string(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: max_payload,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 100,
            max_outgoing_packet_count: 200,
            max_segment_size: max_payload.max(16 << 20) * 2,
            max_segment_count: 10,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Config::default()
    };
    let thread = std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(BrokerError::Thread)?;
    // rumqttd binds in its own threads and only logs a failure; a broker that
    // is still running after a moment is listening. (No probe connection: the
    // broker logs every aborted connect as an error.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    if thread.is_finished() {
        return Err(BrokerError::NotListening(addr));
    }
    tracing::info!(%addr, "embedded MQTT broker started");
    Ok(())
}

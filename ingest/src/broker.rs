//! The embedded MQTT broker (rumqttd), for counties that do not run one.
//!
//! It runs on its own thread (rumqttd's `start` blocks) and lives as long as the process:
//! rumqttd has no stop call. It accepts MQTT 3.1.1 clients on one listener; gateways and
//! ingest's own subscriber connect to it over loopback like to any other broker, so the
//! embedded and the external broker take the same code path.

use std::net::SocketAddr;
use std::time::Duration;

/// The broker configuration shipped with ingest.
pub const CONFIG: &str = include_str!("../rumqttd.toml");

/// Why the broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The shipped configuration did not parse (a bug).
    #[error("embedded broker config: {0}")]
    Config(String),
    /// Nothing listened on the address in time.
    #[error("embedded broker did not start listening on {0}")]
    NotListening(SocketAddr),
}

/// Starts the broker on `listen` and waits until it accepts connections.
pub async fn start(listen: SocketAddr) -> Result<(), BrokerError> {
    let text = CONFIG.replace("LISTEN_V4", &listen.to_string());
    let config: rumqttd::Config = toml::from_str(&text).map_err(|e| BrokerError::Config(e.to_string()))?;
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(message = "Embedded broker stopped.", error = %e);
            }
        })
        .map_err(|e| BrokerError::Config(e.to_string()))?;
    for _ in 0..200 {
        if answers_mqtt(listen).await {
            tracing::info!(message = "Embedded broker listening.", %listen);
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(BrokerError::NotListening(listen))
}

/// MQTT 3.1.1 CONNECT (clean session, keep-alive 10 s, client id `ingest-probe`).
const PROBE_CONNECT: &[u8] = &[
    0x10, 24, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10, 0, 12, b'i', b'n', b'g', b'e', b's', b't', b'-', b'p',
    b'r', b'o', b'b', b'e',
];
/// MQTT DISCONNECT.
const PROBE_DISCONNECT: &[u8] = &[0xE0, 0];

/// Whether the broker completes an MQTT handshake on `addr`. A bare TCP connect that
/// hangs up would do to see the port open, but rumqttd logs every such hang-up as an
/// ERROR, and an operator's first log line should not be a false alarm.
async fn answers_mqtt(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let handshake = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(PROBE_CONNECT).await?;
        let mut connack = [0u8; 4];
        s.read_exact(&mut connack).await?;
        s.write_all(PROBE_DISCONNECT).await?;
        std::io::Result::Ok(connack[0] == 0x20 && connack[3] == 0)
    };
    matches!(tokio::time::timeout(Duration::from_secs(1), handshake).await, Ok(Ok(true)))
}

/// A free TCP port on loopback (for tests and demos that must not collide). rumqttd
/// cannot be told to bind port 0 and report it, so we find one and hand it over.
pub fn free_local_addr() -> std::io::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    l.local_addr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_readiness_probe_wants_an_mqtt_answer_not_just_an_open_port() {
        let listen = free_local_addr().unwrap();
        start(listen).await.unwrap();
        assert!(answers_mqtt(listen).await, "the embedded broker completes the handshake");

        // Something that accepts connections but does not speak MQTT is not a broker.
        let mute = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = mute.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = mute.accept().await {
                held.push(s);
            }
        });
        assert!(!answers_mqtt(addr).await);
    }
}

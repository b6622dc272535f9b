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
        if tokio::net::TcpStream::connect(listen).await.is_ok() {
            tracing::info!(message = "Embedded broker listening.", %listen);
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(BrokerError::NotListening(listen))
}

/// A free TCP port on loopback (for tests and demos that must not collide). rumqttd
/// cannot be told to bind port 0 and report it, so we find one and hand it over.
pub fn free_local_addr() -> std::io::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    l.local_addr()
}

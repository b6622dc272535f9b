//! The embedded MQTT broker (rumqttd), for counties that do not run one.
//!
//! It runs on its own thread (rumqttd's `start` blocks) and lives as long as the process:
//! rumqttd has no stop call. It accepts MQTT 3.1.1 clients on one listener; gateways and
//! ingest's own subscriber connect to it over loopback like to any other broker, so the
//! embedded and the external broker take the same code path.
//!
//! Closed to strangers (docs/SECURITY.md): every client logs in. A gateway's username is its
//! id and its password the one derived from its link key ([`protocol::auth::LinkKey::broker_password`]),
//! checked against the keyring, so a gateway not enrolled, or revoked, cannot connect; its
//! client id must be its username, so nobody takes a gateway's session. Ingest's own login
//! is made at start ([`ingest_login`]) and never leaves the process; the client id
//! `ingest` and every gateway id belong to their logins alone. The check keeps no state
//! per refused client.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::keyring::Keyring;
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

/// Ingest's own login on the embedded broker: `ingest` and a random password made now.
pub fn ingest_login() -> (String, String) {
    use rand_core::RngCore as _;
    let mut secret = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut secret);
    ("ingest".into(), secret.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether a client may connect: ingest's login (any client id that is not a gateway's),
/// or an enrolled gateway's id, password and client id all matching.
pub fn admit(keyring: &Keyring, ingest: &(String, String), client_id: &str, user: &str, pass: &str) -> bool {
    if user == ingest.0 {
        return ct_eq(pass.as_bytes(), ingest.1.as_bytes()) && keyring.keys_of(client_id).is_empty();
    }
    client_id == user && keyring.broker_passwords(user).iter().any(|p| ct_eq(p.as_bytes(), pass.as_bytes()))
}

/// Compares in time that depends only on the lengths.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Starts the broker on `listen` and waits until it accepts connections; logins are
/// checked with [`admit`].
pub async fn start(listen: SocketAddr, keyring: Arc<Keyring>, ingest: (String, String)) -> Result<(), BrokerError> {
    let text = CONFIG.replace("LISTEN_V4", &listen.to_string());
    let mut config: rumqttd::Config = toml::from_str(&text).map_err(|e| BrokerError::Config(e.to_string()))?;
    for server in config.v4.iter_mut().flat_map(|m| m.values_mut()) {
        let (keyring, ingest) = (keyring.clone(), ingest.clone());
        server.connections.set_auth_handler(move |client_id: String, user: String, pass: String| {
            let ok = admit(&keyring, &ingest, &client_id, &user, &pass);
            async move { ok }
        });
    }
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
        if answers_mqtt(listen, &ingest).await {
            tracing::info!(message = "Embedded broker listening.", %listen);
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(BrokerError::NotListening(listen))
}

/// MQTT 3.1.1 CONNECT (clean session, keep-alive 10 s, client id `ingest-probe`) with
/// ingest's login: the broker answers a client without a valid login with nothing at all.
fn probe_connect(login: &(String, String)) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0, 10];
    for field in ["ingest-probe", login.0.as_str(), login.1.as_str()] {
        body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        body.extend_from_slice(field.as_bytes());
    }
    let mut packet = vec![0x10];
    let mut len = body.len();
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        packet.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    packet
}
/// MQTT DISCONNECT.
const PROBE_DISCONNECT: &[u8] = &[0xE0, 0];

/// Whether the broker completes an MQTT handshake on `addr`. A bare TCP connect that
/// hangs up would do to see the port open, but rumqttd logs every such hang-up as an
/// ERROR, and an operator's first log line should not be a false alarm.
async fn answers_mqtt(addr: SocketAddr, login: &(String, String)) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let handshake = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(&probe_connect(login)).await?;
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
        let keyring = Arc::new(Keyring::new(ed25519_dalek::SigningKey::from_bytes(&[2u8; 32])));
        let login = ingest_login();
        start(listen, keyring, login.clone()).await.unwrap();
        assert!(answers_mqtt(listen, &login).await, "the embedded broker completes the handshake");
        let wrong = (login.0.clone(), "guess".to_string());
        assert!(!answers_mqtt(listen, &wrong).await, "a wrong login gets no session");

        // Something that accepts connections but does not speak MQTT is not a broker.
        let mute = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = mute.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = mute.accept().await {
                held.push(s);
            }
        });
        assert!(!answers_mqtt(addr, &login).await);
    }

    #[test]
    fn only_enrolled_gateways_and_ingest_log_in_and_nobody_takes_anothers_client_id() {
        let ingest_key = ed25519_dalek::SigningKey::from_bytes(&[2u8; 32]);
        let keyring = Keyring::new(ingest_key.clone());
        let gw = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
        keyring.set("county", "gw-a", &[gw.verifying_key()]).unwrap();
        let pass = protocol::auth::LinkKey::for_gateway(&gw, &ingest_key.verifying_key(), "county", "gw-a")
            .unwrap()
            .broker_password();
        let ingest = ingest_login();
        // Positive controls: the gateway with its derived password, ingest with its own.
        assert!(admit(&keyring, &ingest, "gw-a", "gw-a", &pass));
        assert!(admit(&keyring, &ingest, "ingest", "ingest", &ingest.1));
        // Anonymous, a wrong password, an unknown gateway, another gateway's client id,
        // and ingest's client id or a gateway's taken with ingest's login.
        assert!(!admit(&keyring, &ingest, "gw-a", "", ""));
        assert!(!admit(&keyring, &ingest, "gw-a", "gw-a", "guess"));
        assert!(!admit(&keyring, &ingest, "gw-zz", "gw-zz", &pass));
        assert!(!admit(&keyring, &ingest, "ingest", "gw-a", &pass));
        assert!(!admit(&keyring, &ingest, "ingest", "ingest", "guess"));
        assert!(!admit(&keyring, &ingest, "gw-a", "ingest", &ingest.1));
        keyring.revoke("gw-a");
        assert!(!admit(&keyring, &ingest, "gw-a", "gw-a", &pass), "revoked at once");
    }
}

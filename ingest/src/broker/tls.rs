//! The broker's TLS listener: terminates TLS (rustls, ring) and hands the plain MQTT
//! stream to rumqttd's loopback listener.
//!
//! Why not rumqttd's own TLS listener: rumqttd 0.20 awaits each TLS handshake inside its
//! accept loop, without a timeout (`server/broker.rs`, `Server::start`), so one client that
//! opens a TCP connection and sends nothing stops every later gateway from connecting, for
//! as long as it likes. Here each handshake runs in its own task with a deadline.
//!
//! Design constraints:
//! - A handshake that does not finish within [`HANDSHAKE_WITHIN`] is dropped; a client that
//!   does not trust the county CA, or speaks plain MQTT to this port, fails the handshake
//!   and never reaches the broker.
//! - At most [`MAX_CONNECTIONS`] connections at once (handshaking or open); one more is
//!   closed at accept. Each costs two copy buffers and rustls' state, about 40 KiB.
//! - The broker is reached only once the client's CONNECT passed the rules (within
//!   [`CONNECT_WITHIN`]): a stranger that completes a handshake, or names no enrolled
//!   gateway, costs the broker nothing.
//! - rumqttd sees every gateway as coming from loopback; the login (checked by the broker's
//!   auth handler) is what identifies it, as before.
//! - Every byte a client sends passes [`super::acl`] first: a gateway's publishes,
//!   retained messages and subscriptions are confined to its own subtree and bounded; a
//!   packet against the rules ends the connection before the broker has it whole.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::keyring::Keyring;

/// Longest a TLS handshake may take.
pub const HANDSHAKE_WITHIN: Duration = Duration::from_secs(10);
/// Longest from the handshake to a CONNECT the rules allow; only then is the broker
/// reached, so a client that never logs in (or is not an enrolled gateway) costs the
/// broker nothing, not even a log line.
pub const CONNECT_WITHIN: Duration = Duration::from_secs(10);
/// Most TLS connections at once (rumqttd's own limit is `router.max_connections`).
pub const MAX_CONNECTIONS: usize = 20_000;

/// A rustls server config with the ring provider (as the gateway uses), TLS 1.2 and 1.3,
/// for the given chain (DER, server certificate first) and PKCS#8 key.
pub fn server_config(chain: Vec<Vec<u8>>, key_pkcs8: Vec<u8>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = chain.into_iter().map(CertificateDer::from).collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8));
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}

/// What each connection is checked against: the keyring (who is an enrolled gateway, of
/// which tenant) and the username whose packets are not checked (ingest's own).
#[derive(Debug, Clone)]
pub struct Rules {
    /// The enrolled gateways.
    pub keyring: Arc<Keyring>,
    /// Ingest's username.
    pub trusted: String,
}

/// Serves TLS on `listener` until `stop`, each connection checked against `rules` and
/// piped to `upstream` (rumqttd's plain listener).
pub fn spawn(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    upstream: SocketAddr,
    rules: Rules,
    stop: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(error) => {
                        tracing::warn!(message = "TLS listener could not accept.", %error);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::debug!(message = "TLS connection refused: too many at once.", %peer);
                continue;
            };
            let (acceptor, stop, rules) = (acceptor.clone(), stop.clone(), rules.clone());
            tokio::spawn(async move {
                let _slot = slot;
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = pipe(acceptor, tcp, peer, upstream, rules) => {}
                }
            });
        }
    });
}

async fn pipe(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    upstream: SocketAddr,
    rules: Rules,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_WITHIN, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(error)) => {
            tracing::debug!(message = "TLS handshake failed.", %peer, %error);
            return;
        }
        Err(_) => {
            tracing::debug!(message = "TLS handshake timed out.", %peer);
            return;
        }
    };
    let (mut from_client, mut to_client) = tokio::io::split(tls);
    let keyring = rules.keyring.clone();
    let mut acl = super::acl::Acl::new(move |gw: &str| keyring.tenant_of(gw), &rules.trusted);
    let mut buf = vec![0u8; 16 * 1024];
    // Up to the CONNECT: read and check, keep what was read, reach the broker only then.
    let mut first = Vec::new();
    let login = async {
        while !acl.connected() {
            let n = match from_client.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            if let Err(reason) = acl.check(&buf[..n]) {
                tracing::debug!(message = "Connection ended: a packet against the gateway rules.", %peer, %reason);
                return false;
            }
            first.extend_from_slice(&buf[..n]);
        }
        true
    };
    if !matches!(tokio::time::timeout(CONNECT_WITHIN, login).await, Ok(true)) {
        return;
    }
    let plain = match TcpStream::connect(upstream).await {
        Ok(s) => s,
        Err(error) => {
            tracing::warn!(message = "Cannot reach the embedded broker behind the TLS listener.", %upstream, %error);
            return;
        }
    };
    let _ = plain.set_nodelay(true);
    let (mut from_broker, mut to_broker) = plain.into_split();
    if to_broker.write_all(&first).await.is_err() {
        return;
    }
    let up = async {
        loop {
            let n = match from_client.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if let Err(reason) = acl.check(&buf[..n]) {
                tracing::debug!(message = "Connection ended: a packet against the gateway rules.", %peer, %reason);
                return;
            }
            if to_broker.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let down = tokio::io::copy(&mut from_broker, &mut to_client);
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
    let _ = to_client.shutdown().await;
}

//! The embedded MQTT broker (rumqttd), for counties that do not run one.
//!
//! It runs on its own thread (rumqttd's `start` blocks) and lives as long as the process:
//! rumqttd has no stop call. It accepts MQTT 3.1.1 clients on one plain listener; gateways and
//! ingest's own subscriber connect to it like to any other broker, so the embedded and the
//! external broker take the same code path.
//!
//! Listeners (docs/SECURITY.md, "The broker"):
//! - `listen`: plain MQTT, for ingest's own client and local tools. On loopback only,
//!   unless the config says `insecure = true` ([`check_listen`]; ingest then warns at every
//!   start).
//! - `tls_listen`: MQTT over TLS for gateways ([`tls`]), with a server certificate issued at
//!   every start by the county's own CA ([`ca`], made in `data_dir/tls/` on first start),
//!   or with certificate files the county gives. The CA's SHA-256 fingerprint is logged at
//!   every start (and printed by `ingest ca`) for gateways to pin. What a gateway sends
//!   there is confined to its own subtree and bounded ([`acl`]): rumqttd has no ACL and no
//!   bound on retained messages or subscriptions.
//!
//! Closed to strangers: every client logs in. A gateway's username is its id and its
//! password the one derived from its link key ([`protocol::auth::LinkKey::broker_password`]),
//! checked against the keyring, so a gateway not enrolled, or revoked, cannot connect; its
//! client id must be its username, so nobody takes a gateway's session. Ingest's own login
//! is made at start ([`ingest_login`]) and never leaves the process; the client id
//! `ingest` and every gateway id belong to their logins alone. The check keeps no state
//! per refused client. A revoked gateway's open session is ended at once
//! ([`Handle::kick`]): a one-time login takes over its client id, which makes rumqttd drop
//! the old connection.

pub mod acl;
pub mod ca;
pub mod tls;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::keyring::Keyring;
use std::time::Duration;

/// How the embedded broker is exposed beyond its plain listener (`[broker]` of
/// ingest.toml, besides `listen`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exposure {
    /// MQTT over TLS for gateways (`tls_listen`); `None`: no TLS listener.
    pub tls_listen: Option<SocketAddr>,
    /// The server certificate chain (server first, its CA last) and key, PEM
    /// (`tls_cert_file`, `tls_key_file`); `None`: ingest's own CA in `data_dir/tls/`.
    pub cert_files: Option<(PathBuf, PathBuf)>,
    /// Names the certificate ingest issues is valid for, besides `localhost`, loopback,
    /// the machine's host name and `tls_listen`'s address (`tls_names`): what gateways
    /// write in `mqtt.url`.
    pub tls_names: Vec<String>,
    /// Plain MQTT on a `listen` address other than loopback is allowed (`insecure`).
    pub insecure: bool,
}

/// Why a plain listener is refused, if it is: not loopback and not marked `insecure`.
pub fn check_listen(listen: &SocketAddr, insecure: bool) -> Option<String> {
    (!listen.ip().is_loopback() && !insecure).then(|| {
        format!(
            "broker.listen {listen} is plain MQTT on a network address: anyone on the network could read the \
             logins; put gateways on tls_listen and keep listen on loopback (127.0.0.1), or set insecure = true"
        )
    })
}

/// The broker configuration shipped with ingest.
pub const CONFIG: &str = include_str!("../../rumqttd.toml");

/// Why the broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The shipped configuration did not parse (a bug).
    #[error("embedded broker config: {0}")]
    Config(String),
    /// Nothing listened on the address in time.
    #[error("embedded broker did not start listening on {0}")]
    NotListening(SocketAddr),
    /// A plain listener on a network address without `insecure`.
    #[error("{0}")]
    Insecure(String),
    /// The CA or the certificate files.
    #[error("broker TLS: {0}")]
    Ca(#[from] ca::CaError),
    /// rustls refused the certificate or key.
    #[error("broker TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The TLS listener could not bind.
    #[error("broker TLS listener on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Ingest's own login on the embedded broker: `ingest` and a random password made now.
pub fn ingest_login() -> (String, String) {
    ("ingest".into(), random_hex())
}

fn random_hex() -> String {
    use rand_core::RngCore as _;
    let mut secret = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut secret);
    secret.iter().map(|b| format!("{b:02x}")).collect()
}

/// The username of the one-time logins that end a revoked gateway's session.
const KICK_USER: &str = "ingest-kick";

/// Who may log in: the keyring's gateways, ingest's own login, and pending one-time kick
/// logins (at most one per client id, each used once).
#[derive(Debug)]
struct Admission {
    keyring: Arc<Keyring>,
    ingest: (String, String),
    kicks: Mutex<HashMap<String, String>>,
}

impl Admission {
    fn admit(&self, client_id: &str, user: &str, pass: &str) -> bool {
        if user == KICK_USER {
            let mut kicks = self.kicks.lock().unwrap_or_else(|e| e.into_inner());
            let ok = kicks.get(client_id).is_some_and(|p| ct_eq(p.as_bytes(), pass.as_bytes()));
            if ok {
                kicks.remove(client_id);
            }
            return ok;
        }
        admit(&self.keyring, &self.ingest, client_id, user, pass)
    }
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

/// The running embedded broker.
#[derive(Debug, Clone)]
pub struct Handle {
    /// The plain listener (loopback unless `insecure`).
    pub plain: SocketAddr,
    /// The TLS listener, if any.
    pub tls: Option<SocketAddr>,
    /// SHA-256 of the CA certificate gateways pin (`AB:CD:...`), with a TLS listener.
    pub ca_fingerprint: Option<String>,
    /// The CA certificate file gateways get as `mqtt.ca_file`, with ingest's own CA.
    pub ca_file: Option<PathBuf>,
    admission: Arc<Admission>,
}

impl Handle {
    /// Ends the session of `client_id` now (a revoked gateway): connects once under that
    /// client id with a one-time login, which makes rumqttd drop the old connection, and
    /// leaves with a clean session. True if the broker took the login.
    pub async fn kick(&self, client_id: &str) -> bool {
        let pass = random_hex();
        self.admission.kicks.lock().unwrap_or_else(|e| e.into_inner()).insert(client_id.to_string(), pass.clone());
        let ok = handshake(self.plain, client_id, &(KICK_USER.to_string(), pass)).await;
        self.admission.kicks.lock().unwrap_or_else(|e| e.into_inner()).remove(client_id);
        ok
    }
}

/// Where a plain client of this machine reaches `listen` (loopback for an unspecified address).
fn local(listen: SocketAddr) -> SocketAddr {
    if listen.ip().is_unspecified() {
        let ip: IpAddr = if listen.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() };
        SocketAddr::new(ip, listen.port())
    } else {
        listen
    }
}

/// Starts the broker on `listen` (and `exposure.tls_listen`, port 0 picks a free one) and
/// waits until it accepts connections; logins are checked with [`admit`]. A plain
/// `listen` off loopback without `insecure` is refused; with it, a warning is logged.
pub async fn start(
    listen: SocketAddr,
    exposure: &Exposure,
    data_dir: &Path,
    keyring: Arc<Keyring>,
    ingest: (String, String),
    stop: CancellationToken,
) -> Result<Handle, BrokerError> {
    if let Some(reason) = check_listen(&listen, exposure.insecure) {
        return Err(BrokerError::Insecure(reason));
    }
    if !listen.ip().is_loopback() {
        tracing::warn!(
            message = "Plain MQTT listener on a network address (insecure = true): logins and traffic cross the network unencrypted.",
            %listen
        );
    }
    let text = CONFIG.replace("LISTEN_V4", &listen.to_string());
    let mut config: rumqttd::Config = toml::from_str(&text).map_err(|e| BrokerError::Config(e.to_string()))?;
    let admission = Arc::new(Admission { keyring, ingest: ingest.clone(), kicks: Mutex::new(HashMap::new()) });
    for server in config.v4.iter_mut().flat_map(|m| m.values_mut()) {
        let admission = admission.clone();
        server.connections.set_auth_handler(move |client_id: String, user: String, pass: String| {
            let ok = admission.admit(&client_id, &user, &pass);
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
    let plain = local(listen);
    let mut up = false;
    for _ in 0..200 {
        if answers_mqtt(plain, &ingest).await {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    if !up {
        return Err(BrokerError::NotListening(listen));
    }
    tracing::info!(message = "Embedded broker listening.", %listen);
    let mut handle = Handle { plain, tls: None, ca_fingerprint: None, ca_file: None, admission: admission.clone() };
    if let Some(tls_listen) = exposure.tls_listen {
        let (chain, key, ca_file) = match &exposure.cert_files {
            Some((cert, key)) => {
                let chain = ca::read_certs(cert)?;
                let key_pem = std::fs::read(key).map_err(|source| ca::CaError::Io { path: key.clone(), source })?;
                let key_der = match rustls_pemfile::private_key(&mut &key_pem[..]) {
                    Ok(Some(rustls::pki_types::PrivateKeyDer::Pkcs8(k))) => k.secret_pkcs8_der().to_vec(),
                    _ => {
                        return Err(ca::CaError::Bad {
                            path: key.clone(),
                            reason: "no PKCS#8 private key in the file".into(),
                        }
                        .into());
                    }
                };
                (chain, key_der, None)
            }
            None => {
                let dir = data_dir.join(ca::DIR);
                let authority = ca::Authority::load_or_create(&dir)?;
                let server =
                    authority.issue_server(&server_names(tls_listen, &exposure.tls_names), daemon::now().0 / 1000);
                (server.chain, server.key_pkcs8, Some(dir.join(ca::CERT_FILE)))
            }
        };
        // The pin is the last certificate of the chain: the CA the gateways hold.
        let fingerprint = chain.last().map(|c| ca::fingerprint(c)).unwrap_or_default();
        let config = tls::server_config(chain, key)?;
        let listener = tokio::net::TcpListener::bind(tls_listen)
            .await
            .map_err(|source| BrokerError::Bind { addr: tls_listen, source })?;
        let bound = listener.local_addr().map_err(|source| BrokerError::Bind { addr: tls_listen, source })?;
        let rules = tls::Rules { keyring: admission.keyring.clone(), trusted: ingest.0.clone() };
        tls::spawn(listener, config, plain, rules, stop);
        tracing::info!(
            message = "Embedded broker listening with TLS; gateways pin the county CA by this fingerprint.",
            listen = %bound,
            ca_fingerprint_sha256 = %fingerprint,
            ca_file = %ca_file.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "(given)".into())
        );
        handle.tls = Some(bound);
        handle.ca_fingerprint = Some(fingerprint);
        handle.ca_file = ca_file;
    }
    Ok(handle)
}

/// What the server certificate is issued for: `localhost`, loopback, this machine's host
/// name, the TLS listener's address (when it is not unspecified) and the configured names.
fn server_names(tls_listen: SocketAddr, configured: &[String]) -> Vec<String> {
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        names.push(host.trim().to_string());
    }
    if !tls_listen.ip().is_unspecified() {
        names.push(tls_listen.ip().to_string());
    }
    names.extend(configured.iter().cloned());
    // A certificate holds DNS names and addresses only (no underscores, no wildcards here).
    let valid = |n: &String| {
        n.parse::<IpAddr>().is_ok()
            || (!n.is_empty()
                && n.len() <= 253
                && n.split('.').all(|l| {
                    !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                }))
    };
    names.retain(valid);
    names.sort();
    names.dedup();
    names
}

/// MQTT 3.1.1 CONNECT (clean session, keep-alive 10 s) as `client_id` with `login`: the
/// broker answers a client without a valid login with nothing at all.
fn connect_packet(client_id: &str, login: &(String, String)) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0, 10];
    for field in [client_id, login.0.as_str(), login.1.as_str()] {
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
    handshake(addr, "ingest-probe", login).await
}

/// Connects as `client_id` with `login`, takes the CONNACK and disconnects; true if the
/// broker accepted.
async fn handshake(addr: SocketAddr, client_id: &str, login: &(String, String)) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let handshake = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(&connect_packet(client_id, login)).await?;
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
        let dir = tempfile::tempdir().unwrap();
        let stop = CancellationToken::new();
        start(listen, &Exposure::default(), dir.path(), keyring, login.clone(), stop).await.unwrap();
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

    #[test]
    fn a_plain_listener_off_loopback_needs_insecure() {
        let lo: SocketAddr = "127.0.0.1:1883".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:1883".parse().unwrap();
        assert_eq!(check_listen(&lo, false), None, "loopback is fine");
        assert!(check_listen(&any, false).unwrap().contains("insecure = true"));
        assert_eq!(check_listen(&any, true), None, "allowed when the config says so");
    }

    #[test]
    fn the_server_certificate_names_loopback_the_listen_address_and_the_configured_names() {
        let names = server_names("10.1.2.3:8883".parse().unwrap(), &["broker.county.local".into()]);
        for n in ["localhost", "127.0.0.1", "10.1.2.3", "broker.county.local"] {
            assert!(names.iter().any(|x| x == n), "{n} in {names:?}");
        }
        assert!(!server_names("0.0.0.0:8883".parse().unwrap(), &[]).iter().any(|n| n == "0.0.0.0"));
    }

    #[tokio::test]
    async fn a_kick_takes_over_a_client_id_once_and_only_through_the_handle() {
        let listen = free_local_addr().unwrap();
        let ingest_key = ed25519_dalek::SigningKey::from_bytes(&[2u8; 32]);
        let keyring = Arc::new(Keyring::new(ingest_key));
        let login = ingest_login();
        let dir = tempfile::tempdir().unwrap();
        let handle =
            start(listen, &Exposure::default(), dir.path(), keyring, login, CancellationToken::new()).await.unwrap();
        assert!(handle.kick("gw-a").await, "the one-time login is taken");
        // Without a pending kick, the kick user is refused whatever its password.
        assert!(!handshake(handle.plain, "gw-a", &(KICK_USER.to_string(), String::new())).await);
        assert!(handle.admission.kicks.lock().unwrap().is_empty(), "nothing left pending");
    }
}

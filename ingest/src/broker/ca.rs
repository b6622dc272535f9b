//! The county's own certificate authority for the broker's TLS listener: made by ingest
//! on first start in `data_dir/tls/`, pinned by every gateway (docs/SECURITY.md).
//!
//! Ed25519 throughout: the CA key signs one server certificate per start (its key lives
//! only in memory), so only the CA is long-lived. The certificates are written here in DER
//! by hand (a few fixed structures, RFC 5280 and RFC 8410) rather than with a certificate
//! crate: the tree stays as it is, and what is in a certificate is on this page.
//!
//! Invariants:
//! - `ca.key` is written 0600 before `ca.pem` exists; a CA whose key and certificate do
//!   not belong together is refused, never silently replaced (gateways pin it).
//! - The fingerprint is SHA-256 over the CA certificate's DER, printed as
//!   `openssl x509 -noout -fingerprint -sha256` prints it, so an installer can compare
//!   the two.
//! - The server certificate is an end-entity certificate (no `cA`), valid for the names
//!   it is issued for (`subjectAltName`), for server authentication only.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// The CA's directory under ingest's data directory.
pub const DIR: &str = "tls";
/// The CA certificate (PEM): what gateways get as `mqtt.ca_file`.
pub const CERT_FILE: &str = "ca.pem";
/// The CA key (PKCS#8 PEM, 0600).
pub const KEY_FILE: &str = "ca.key";

/// How long the CA is valid from its making (20 years: longer than a gateway's life).
const CA_DAYS: i64 = 20 * 365;
/// How long a server certificate is valid (it is issued anew at every start).
const SERVER_DAYS: i64 = 2 * 365;

/// Why the CA could not be read, made or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A file is there but is not what it should be.
    #[error("{path}: {reason}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The county's CA: its key and self-signed certificate.
pub struct Authority {
    key: SigningKey,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// Its subject name, DER (the issuer of every certificate it signs).
    name: Vec<u8>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").field("fingerprint", &self.fingerprint()).finish_non_exhaustive()
    }
}

/// A server certificate and its key, ready for rustls.
pub struct ServerIdentity {
    /// The chain: the server certificate, then the CA (DER).
    pub chain: Vec<Vec<u8>>,
    /// The server key, PKCS#8 DER.
    pub key_pkcs8: Vec<u8>,
}

impl Authority {
    /// Reads the CA in `dir`, or makes one there if neither file exists.
    pub fn load_or_create(dir: &Path) -> Result<Authority, CaError> {
        let (cert_path, key_path) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => Authority::load(&cert_path, &key_path),
            (false, false) => {
                let ca = Authority::create(now_secs());
                std::fs::create_dir_all(dir).map_err(|source| CaError::Io { path: dir.into(), source })?;
                write_private(&key_path, pem("PRIVATE KEY", &pkcs8(&ca.key)).as_bytes())?;
                write_file(&cert_path, pem("CERTIFICATE", &ca.cert_der).as_bytes())?;
                tracing::info!(message = "County CA made for the broker's TLS listener.", path = %cert_path.display(), fingerprint = %ca.fingerprint());
                Ok(ca)
            }
            (true, false) => {
                Err(CaError::Bad { path: key_path, reason: "missing, but the CA certificate is there".into() })
            }
            (false, true) => Err(CaError::Bad { path: cert_path, reason: "missing, but the CA key is there".into() }),
        }
    }

    /// Reads a CA from its files; the key must be the certificate's.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Authority, CaError> {
        let bad = |path: &Path, reason: &str| CaError::Bad { path: path.into(), reason: reason.into() };
        let key_pem = std::fs::read(key_path).map_err(|source| CaError::Io { path: key_path.into(), source })?;
        let der = match rustls_pemfile::private_key(&mut &key_pem[..]) {
            Ok(Some(rustls::pki_types::PrivateKeyDer::Pkcs8(k))) => k.secret_pkcs8_der().to_vec(),
            _ => return Err(bad(key_path, "no PKCS#8 private key in the file")),
        };
        let seed: [u8; 32] = der
            .strip_prefix(PKCS8_ED25519_PREFIX)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| bad(key_path, "not an Ed25519 key in the form ingest writes"))?;
        let key = SigningKey::from_bytes(&seed);
        let cert_der = first_cert(cert_path)?;
        if !contains(&cert_der, &spki(&key.verifying_key())) {
            return Err(bad(cert_path, "the certificate does not belong to the key beside it"));
        }
        let name = name_of(&key.verifying_key());
        Ok(Authority { key, cert_der, name })
    }

    /// A new CA, valid from an hour before `now` (Unix seconds); its name is derived from
    /// its key, so a re-made CA never shares a name with an old one.
    pub fn create(now: i64) -> Authority {
        let key = random_key();
        let name = name_of(&key.verifying_key());
        let extensions = vec![
            extension(OID_BASIC_CONSTRAINTS, true, &seq(&[boolean(true), integer(&[0])])),
            extension(OID_KEY_USAGE, true, &[0x03, 0x02, 0x01, 0x06]),
        ];
        let cert_der = sign(&key, &name, &name, &key.verifying_key(), now, CA_DAYS, extensions);
        Authority { key, cert_der, name }
    }

    /// SHA-256 of the certificate, `AB:CD:...` (what gateways pin).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert_der)
    }

    /// The certificate as PEM.
    pub fn cert_pem(&self) -> String {
        pem("CERTIFICATE", &self.cert_der)
    }

    /// A new server key and a certificate for it, valid for `names` (DNS names or IP
    /// addresses), signed by this CA.
    pub fn issue_server(&self, names: &[String], now: i64) -> ServerIdentity {
        let key = random_key();
        let mut general = Vec::new();
        for n in names {
            match n.parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) => general.push(tlv(0x87, &ip.octets())),
                Ok(IpAddr::V6(ip)) => general.push(tlv(0x87, &ip.octets())),
                Err(_) => general.push(tlv(0x82, n.as_bytes())),
            }
        }
        let extensions = vec![
            extension(OID_KEY_USAGE, true, &[0x03, 0x02, 0x07, 0x80]),
            extension(OID_EXT_KEY_USAGE, false, &seq(&[tlv(0x06, OID_SERVER_AUTH)])),
            extension(OID_SUBJECT_ALT_NAME, false, &seq(&general)),
        ];
        let subject = rdn_name(b"village-telemetry broker");
        let cert = sign(&self.key, &self.name, &subject, &key.verifying_key(), now, SERVER_DAYS, extensions);
        ServerIdentity { chain: vec![cert, self.cert_der.clone()], key_pkcs8: pkcs8(&key) }
    }
}

/// The CA gateways pin for this configuration and its fingerprint: the last certificate
/// of the given chain, or ingest's own CA in `data_dir/tls/` (made now if missing).
pub fn pin(data_dir: &Path, exposure: &super::Exposure) -> Result<(PathBuf, String), CaError> {
    match &exposure.cert_files {
        Some((chain, _)) => {
            let certs = read_certs(chain)?;
            Ok((chain.clone(), certs.last().map(|c| fingerprint(c)).unwrap_or_default()))
        }
        None => {
            let dir = data_dir.join(DIR);
            let ca = Authority::load_or_create(&dir)?;
            Ok((dir.join(CERT_FILE), ca.fingerprint()))
        }
    }
}

/// SHA-256 of a certificate's DER, as `AB:CD:...`.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    digest.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// The certificates of a PEM file, DER, in order.
pub fn read_certs(path: &Path) -> Result<Vec<Vec<u8>>, CaError> {
    let pem = std::fs::read(path).map_err(|source| CaError::Io { path: path.into(), source })?;
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaError::Bad { path: path.into(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(CaError::Bad { path: path.into(), reason: "no certificate in the file".into() });
    }
    Ok(certs)
}

fn first_cert(path: &Path) -> Result<Vec<u8>, CaError> {
    read_certs(path).map(|mut c| c.swap_remove(0))
}

fn now_secs() -> i64 {
    daemon::now().0 / 1000
}

fn random_key() -> SigningKey {
    SigningKey::generate(&mut rand_core::OsRng)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), CaError> {
    std::fs::write(path, bytes).map_err(|source| CaError::Io { path: path.into(), source })
}

/// Writes a secret readable by its owner only, created so (never world-readable, not even
/// for a moment).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CaError> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let io = |source| CaError::Io { path: path.into(), source };
    let mut f = options.open(path).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

// ---- DER (X.690), only what the two certificates need ----

const OID_ED25519: &[u8] = &[0x2B, 0x65, 0x70];
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1D, 0x13];
const OID_KEY_USAGE: &[u8] = &[0x55, 0x1D, 0x0F];
const OID_EXT_KEY_USAGE: &[u8] = &[0x55, 0x1D, 0x25];
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1D, 0x11];
const OID_SERVER_AUTH: &[u8] = &[0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
/// RFC 8410 PKCS#8 v1 of an Ed25519 key, before its 32-byte seed.
const PKCS8_ED25519_PREFIX: &[u8] =
    &[0x30, 0x2E, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = body.len();
    if n < 0x80 {
        out.push(n as u8);
    } else if n < 0x100 {
        out.extend_from_slice(&[0x81, n as u8]);
    } else {
        out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
    }
    out.extend_from_slice(body);
    out
}

fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

fn boolean(v: bool) -> Vec<u8> {
    vec![0x01, 0x01, if v { 0xFF } else { 0x00 }]
}

/// A non-negative INTEGER from big-endian bytes (minimal: no needless leading zero).
fn integer(bytes: &[u8]) -> Vec<u8> {
    let mut b: Vec<u8> = bytes.iter().copied().skip_while(|&x| x == 0).collect();
    if b.first().is_none_or(|&x| x & 0x80 != 0) {
        b.insert(0, 0);
    }
    tlv(0x02, &b)
}

fn algorithm() -> Vec<u8> {
    seq(&[tlv(0x06, OID_ED25519)])
}

fn spki(key: &VerifyingKey) -> Vec<u8> {
    let mut bits = vec![0u8];
    bits.extend_from_slice(key.as_bytes());
    seq(&[algorithm(), tlv(0x03, &bits)])
}

fn rdn_name(common_name: &[u8]) -> Vec<u8> {
    seq(&[tlv(0x31, &seq(&[tlv(0x06, OID_COMMON_NAME), tlv(0x0C, common_name)]))])
}

/// The CA's name: fixed text and the start of its key's fingerprint, so a re-made CA never
/// has the name of an old one.
fn name_of(key: &VerifyingKey) -> Vec<u8> {
    let cn = format!("village-telemetry county CA {}", protocol::auth::fingerprint(key));
    rdn_name(cn.as_bytes())
}

fn extension(oid: &[u8], critical: bool, value: &[u8]) -> Vec<u8> {
    let mut parts = vec![tlv(0x06, oid)];
    if critical {
        parts.push(boolean(true));
    }
    parts.push(tlv(0x04, value));
    seq(&parts)
}

/// UTCTime up to 2049, GeneralizedTime from 2050 (RFC 5280 4.1.2.5).
fn time(unix: i64) -> Vec<u8> {
    let t = ::time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(::time::OffsetDateTime::UNIX_EPOCH);
    let (y, mo, d, h, mi, s) = (t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute(), t.second());
    if (1950..2050).contains(&y) {
        tlv(0x17, format!("{:02}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z", y % 100).as_bytes())
    } else {
        tlv(0x18, format!("{:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z", y.clamp(0, 9999)).as_bytes())
    }
}

/// A v3 certificate of `subject_key` named `subject`, issued by `issuer` with
/// `issuer_key`, valid from an hour before `now` for `days`.
fn sign(
    issuer_key: &SigningKey,
    issuer: &[u8],
    subject: &[u8],
    subject_key: &VerifyingKey,
    now: i64,
    days: i64,
    extensions: Vec<Vec<u8>>,
) -> Vec<u8> {
    use rand_core::RngCore as _;
    let mut serial = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut serial);
    serial[0] = (serial[0] & 0x7F) | 0x40;
    let tbs = seq(&[
        tlv(0xA0, &integer(&[2])),
        integer(&serial),
        algorithm(),
        issuer.to_vec(),
        seq(&[time(now - 3600), time(now + days * 86_400)]),
        subject.to_vec(),
        spki(subject_key),
        tlv(0xA3, &seq(&extensions)),
    ]);
    let signature = issuer_key.sign(&tbs).to_bytes();
    let mut bits = vec![0u8];
    bits.extend_from_slice(&signature);
    seq(&[tbs, algorithm(), tlv(0x03, &bits)])
}

fn pkcs8(key: &SigningKey) -> Vec<u8> {
    let mut der = PKCS8_ED25519_PREFIX.to_vec();
    der.extend_from_slice(&key.to_bytes());
    der
}

/// PEM armour (RFC 7468): base64 in lines of 64.
fn pem(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len() * 4 / 3 + 4);
    for chunk in der.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_made_once_kept_and_refused_when_its_files_do_not_match() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::load_or_create(dir.path()).unwrap();
        let again = Authority::load_or_create(dir.path()).unwrap();
        assert_eq!(ca.fingerprint(), again.fingerprint(), "made once, then read");
        assert_eq!(ca.fingerprint().len(), 32 * 3 - 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Another CA's certificate beside this key is refused, not replaced.
        let other = tempfile::tempdir().unwrap();
        let other_ca = Authority::load_or_create(other.path()).unwrap();
        std::fs::write(dir.path().join(CERT_FILE), other_ca.cert_pem()).unwrap();
        let e = Authority::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(e.contains("does not belong to the key"), "{e}");
        std::fs::remove_file(other.path().join(KEY_FILE)).unwrap();
        let e = Authority::load_or_create(other.path()).unwrap_err().to_string();
        assert!(e.contains("ca.key: missing"), "{e}");
    }

    #[test]
    fn a_server_certificate_verifies_against_the_ca_for_its_names_only() {
        use rustls::client::danger::ServerCertVerifier as _;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        let ca = Authority::create(now_secs());
        let server = ca.issue_server(&["broker.county.local".into(), "127.0.0.1".into()], now_secs());
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(ca.cert_der.clone())).unwrap();
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(std::sync::Arc::new(roots), provider.clone())
                .build()
                .unwrap();
        let leaf = CertificateDer::from(server.chain[0].clone());
        let now = UnixTime::now();
        for name in ["broker.county.local", "127.0.0.1"] {
            let name = ServerName::try_from(name).unwrap();
            assert!(verifier.verify_server_cert(&leaf, &[], &name, &[], now).is_ok(), "{name:?}");
        }
        let wrong = ServerName::try_from("elsewhere.example").unwrap();
        assert!(verifier.verify_server_cert(&leaf, &[], &wrong, &[], now).is_err());
        // Another CA does not vouch for it.
        let mut other_roots = rustls::RootCertStore::empty();
        other_roots.add(CertificateDer::from(Authority::create(now_secs()).cert_der)).unwrap();
        let other =
            rustls::client::WebPkiServerVerifier::builder_with_provider(std::sync::Arc::new(other_roots), provider)
                .build()
                .unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        assert!(other.verify_server_cert(&leaf, &[], &name, &[], now).is_err());
        // And rustls takes the key for a server.
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(server.key_pkcs8.clone().into());
        assert!(rustls::crypto::ring::sign::any_supported_type(&key).is_ok());
    }

    #[test]
    fn pem_round_trips_through_rustls_pemfile() {
        let der: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let text = pem("CERTIFICATE", &der);
        let back: Vec<_> = rustls_pemfile::certs(&mut text.as_bytes()).collect::<Result<_, _>>().unwrap();
        assert_eq!(back[0].as_ref(), &der[..]);
    }
}

//! What a gateway may send through the TLS listener: its own uplink topics, one retained
//! status, its own downlink subscriptions. The broker (rumqttd 0.20) has no ACL and no
//! bound on retained messages or subscriptions; the TLS terminator sees every packet a
//! network client sends, so it checks them there (docs/SECURITY.md, "The broker").
//!
//! Rules, for a client whose CONNECT names a gateway as username (every client on the TLS
//! listener but ingest's own login):
//! - PUBLISH only to `vt/{its tenant}/{itself}/up/{telemetry|status|ack}`, with the retain
//!   flag only on `up/status`: at most one retained message per enrolled gateway.
//! - The last will only on its own `up/status`.
//! - SUBSCRIBE only to `vt/{its tenant}/{itself}/down/#` or one of its three downlink
//!   topics, at most [`MAX_SUBSCRIPTIONS`] filters per connection: at most four filter logs
//!   per gateway in the broker, each bounded by rumqttd's segment settings.
//! - MQTT 3.1.1 only (the broker's listener speaks nothing else).
//!
//! A packet against the rules ends the connection before the broker sees it; the reason is
//! logged at debug level (no state is kept per refused client).
//!
//! The check is a streaming parser over the client-to-broker bytes: it needs a packet's
//! fixed header and its first fields only, and forwards the bytes unchanged.

use protocol::topic::{Channel, Topic};

/// Most subscription filters one connection may make.
pub const MAX_SUBSCRIPTIONS: usize = 8;
/// Largest packet accepted (the broker's `max_payload_size` and headers).
pub const MAX_PACKET: usize = 1024 * 1024 + 1024;
/// Largest packet other than PUBLISH (CONNECT with its last will, SUBSCRIBE): such a
/// packet is read whole before it is judged, so this is what one connection buffers.
pub const MAX_CONTROL_PACKET: usize = 16 * 1024;

/// Who the connection belongs to, once its CONNECT was read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Client {
    /// Nothing read yet.
    Connecting,
    /// A gateway (its id and tenant): the rules apply.
    Gateway { id: String, tenant: String },
    /// Ingest's own login: nothing is checked here (the broker checks its password).
    Trusted,
}

/// The rules for one connection, fed the bytes the client sends.
#[derive(Debug)]
pub struct Acl<F> {
    /// The tenant of an enrolled gateway (`None`: not enrolled).
    tenant_of: F,
    /// The username whose connections are not checked (ingest's).
    trusted: String,
    client: Client,
    subscriptions: usize,
    /// Bytes of the packet being read that are not judged yet (at most a control packet,
    /// or a PUBLISH up to its topic).
    pending: Vec<u8>,
    /// Bytes of an allowed PUBLISH's payload still to pass unread.
    skip: usize,
}

impl<F: Fn(&str) -> Option<String>> Acl<F> {
    /// Rules for a new connection.
    pub fn new(tenant_of: F, trusted: &str) -> Acl<F> {
        Acl {
            tenant_of,
            trusted: trusted.to_string(),
            client: Client::Connecting,
            subscriptions: 0,
            pending: Vec::new(),
            skip: 0,
        }
    }

    /// True once a CONNECT was read and allowed.
    pub fn connected(&self) -> bool {
        self.client != Client::Connecting
    }

    /// Takes the next bytes from the client; `Err(reason)` if a packet among them breaks
    /// the rules (the connection must end before these bytes are forwarded, so the broker
    /// never has the whole packet).
    pub fn check(&mut self, mut bytes: &[u8]) -> Result<(), String> {
        while !bytes.is_empty() {
            if self.client == Client::Trusted {
                return Ok(());
            }
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            // Take bytes one packet's judged part at a time (a few at most for the
            // headers), so nothing past a verdict is buffered.
            let want = self.wanted()?;
            let n = want.saturating_sub(self.pending.len()).max(1).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.pending.len() >= self.wanted()? {
                self.judge()?;
            }
        }
        Ok(())
    }

    /// How many bytes of the current packet must be read before it can be judged.
    fn wanted(&self) -> Result<usize, String> {
        let Some((header, len)) = fixed_header(&self.pending)? else {
            // The fixed header is not complete: one more byte.
            return Ok(self.pending.len() + 1);
        };
        if header + len > MAX_PACKET {
            return Err(format!("a packet of {} bytes", header + len));
        }
        if self.pending[0] >> 4 != 3 {
            if len > MAX_CONTROL_PACKET {
                return Err(format!("a control packet of {len} bytes"));
            }
            return Ok(header + len);
        }
        // PUBLISH: up to the end of its topic.
        match self.pending.get(header..header + 2) {
            Some(l) => Ok((header + 2 + usize::from(u16::from_be_bytes([l[0], l[1]]))).min(header + len)),
            None => Ok((header + 2).min(header + len)),
        }
    }

    /// Judges the packet whose judged part is in `pending`, then starts the next.
    fn judge(&mut self) -> Result<(), String> {
        let Some((header, len)) = fixed_header(&self.pending)? else { return Ok(()) };
        let first = self.pending[0];
        let body = std::mem::take(&mut self.pending).split_off(header);
        self.skip = len - body.len();
        self.packet(first, &body)
    }

    fn packet(&mut self, first: u8, body: &[u8]) -> Result<(), String> {
        let kind = first >> 4;
        if kind == 1 {
            return match self.client {
                Client::Connecting => self.connect(body),
                _ => Err("a second CONNECT".into()),
            };
        }
        let Client::Gateway { id, tenant } = &self.client else {
            return match self.client {
                Client::Connecting => Err("the first packet is not CONNECT".into()),
                _ => Ok(()),
            };
        };
        match kind {
            3 => publish_allowed(id, tenant, string(body, 0)?.0, first & 1 == 1),
            8 => {
                let (mut at, mut n) = (2, 0);
                while at < body.len() {
                    let (filter, next) = string(body, at)?;
                    if !subscription_allowed(id, tenant, filter) {
                        return Err(format!("a subscription to '{}'", clip(filter)));
                    }
                    n += 1;
                    if self.subscriptions + n > MAX_SUBSCRIPTIONS {
                        return Err(format!("more than {MAX_SUBSCRIPTIONS} subscriptions"));
                    }
                    at = next + 1;
                }
                self.subscriptions += n;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn connect(&mut self, body: &[u8]) -> Result<(), String> {
        let (name, at) = string(body, 0)?;
        let level = *body.get(at).ok_or("a short CONNECT")?;
        if name != "MQTT" || level != 4 {
            return Err("not MQTT 3.1.1".into());
        }
        let flags = *body.get(at + 1).ok_or("a short CONNECT")?;
        let mut at = field_end(body, at + 4)?; // the client id
        let will = if flags & 0x04 != 0 {
            let (topic, next) = string(body, at)?;
            at = field_end(body, next)?; // the will's payload
            Some((topic.to_string(), flags & 0x20 != 0))
        } else {
            None
        };
        let user = if flags & 0x80 != 0 { string(body, at)?.0 } else { "" };
        if user == self.trusted {
            self.client = Client::Trusted;
            return Ok(());
        }
        let tenant = (self.tenant_of)(user).ok_or("not an enrolled gateway")?;
        if let Some((topic, retain)) = will {
            publish_allowed(user, &tenant, &topic, retain)?;
        }
        self.client = Client::Gateway { id: user.to_string(), tenant };
        Ok(())
    }
}

/// A gateway's publish: its own uplink topics only, retained only its status.
fn publish_allowed(id: &str, tenant: &str, topic: &str, retain: bool) -> Result<(), String> {
    match Topic::parse(topic) {
        Ok(t) if t.gateway == id && t.tenant == tenant && t.channel.is_uplink() => {
            if retain && t.channel != Channel::Status {
                Err(format!("a retained message on '{}'", clip(topic)))
            } else {
                Ok(())
            }
        }
        _ => Err(format!("a publish on '{}'", clip(topic))),
    }
}

/// A gateway's subscription: its downlink, whole or one channel.
fn subscription_allowed(id: &str, tenant: &str, filter: &str) -> bool {
    filter == protocol::topic::downlink_filter(tenant, id)
        || [Channel::Command, Channel::Config, Channel::Delivery]
            .iter()
            .any(|c| filter == protocol::topic::topic(tenant, id, *c))
}

/// At most 64 characters of client text, for a log line.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The fixed header's length and the remaining length, once both are complete.
fn fixed_header(b: &[u8]) -> Result<Option<(usize, usize)>, String> {
    let mut len = 0usize;
    for i in 0..4 {
        let Some(&byte) = b.get(1 + i) else { return Ok(None) };
        len |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((2 + i, len)));
        }
    }
    Err("malformed remaining length".into())
}

/// Where the length-prefixed field at `at` ends.
fn field_end(b: &[u8], at: usize) -> Result<usize, String> {
    let len = b.get(at..at + 2).ok_or("a short packet")?;
    let end = at + 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
    if end > b.len() {
        return Err("a short packet".into());
    }
    Ok(end)
}

/// A length-prefixed UTF-8 string at `at`, and where the next field starts.
fn string(b: &[u8], at: usize) -> Result<(&str, usize), String> {
    let end = field_end(b, at)?;
    Ok((std::str::from_utf8(&b[at + 2..end]).map_err(|_| "a string that is not UTF-8")?, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(s: &str) -> Vec<u8> {
        let mut v = (s.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v
    }

    fn packet(first: u8, body: Vec<u8>) -> Vec<u8> {
        let mut p = vec![first];
        let mut len = body.len();
        loop {
            let byte = (len % 128) as u8;
            len /= 128;
            p.push(if len > 0 { byte | 0x80 } else { byte });
            if len == 0 {
                break;
            }
        }
        p.extend(body);
        p
    }

    fn connect(user: &str, will: Option<(&str, bool)>) -> Vec<u8> {
        let mut flags = 0xC2u8;
        if let Some((_, retain)) = will {
            flags |= 0x04 | if retain { 0x20 } else { 0 };
        }
        let mut body = field("MQTT");
        body.extend([4, flags, 0, 30]);
        body.extend(field(user));
        if let Some((topic, _)) = will {
            body.extend(field(topic));
            body.extend([0, 3, 0xA5, 0xFF, 0x00]); // a sealed envelope: not UTF-8
        }
        body.extend(field(user));
        body.extend(field("password"));
        packet(0x10, body)
    }

    fn publish(topic: &str, retain: bool) -> Vec<u8> {
        let mut body = field(topic);
        body.extend([0, 1]);
        body.extend(b"payload");
        packet(0x32 | u8::from(retain), body)
    }

    fn subscribe(filters: &[&str]) -> Vec<u8> {
        let mut body = vec![0, 7];
        for f in filters {
            body.extend(field(f));
            body.push(1);
        }
        packet(0x82, body)
    }

    fn acl() -> Acl<impl Fn(&str) -> Option<String>> {
        Acl::new(|gw: &str| (gw == "gw-a" || gw == "gw-b").then(|| "county".to_string()), "ingest")
    }

    #[test]
    fn a_gateway_publishes_and_subscribes_in_its_own_subtree_only() {
        let mut a = acl();
        a.check(&connect("gw-a", Some(("vt/county/gw-a/up/status", true)))).unwrap();
        // Positive controls: its uplink, its retained status, its downlink.
        a.check(&publish("vt/county/gw-a/up/telemetry", false)).unwrap();
        a.check(&publish("vt/county/gw-a/up/status", true)).unwrap();
        a.check(&subscribe(&["vt/county/gw-a/down/#", "vt/county/gw-a/down/cmd"])).unwrap();
        // Split anywhere: bytes arrive as the network cuts them.
        let p = publish("vt/county/gw-a/up/ack", false);
        for b in p.chunks(3) {
            a.check(b).unwrap();
        }
        for bad in [
            publish("vt/county/gw-b/up/telemetry", false),
            publish("vt/farm/gw-a/up/telemetry", false),
            publish("vt/county/gw-a/down/cmd", false),
            publish("junk/1", false),
            publish("vt/county/gw-a/up/telemetry", true),
            subscribe(&["vt/county/gw-b/down/#"]),
            subscribe(&["#"]),
            subscribe(&["vt/county/gw-a/down/elsewhere"]),
            connect("gw-a", None),
        ] {
            let mut a = acl();
            a.check(&connect("gw-a", None)).unwrap();
            assert!(a.check(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn strangers_wills_elsewhere_and_too_many_subscriptions_are_refused_and_ingest_is_not_checked() {
        assert!(acl().check(&connect("gw-zz", None)).is_err(), "not enrolled");
        assert!(acl().check(&publish("vt/county/gw-a/up/status", true)).is_err(), "no CONNECT first");
        assert!(acl().check(&connect("gw-a", Some(("vt/county/gw-b/up/status", true)))).is_err());
        assert!(acl().check(&connect("gw-a", Some(("vt/county/gw-a/up/telemetry", true)))).is_err());
        let mut a = acl();
        a.check(&connect("gw-a", None)).unwrap();
        for _ in 0..MAX_SUBSCRIPTIONS {
            a.check(&subscribe(&["vt/county/gw-a/down/#"])).unwrap();
        }
        assert!(a.check(&subscribe(&["vt/county/gw-a/down/#"])).is_err());
        let mut i = acl();
        i.check(&connect("ingest", None)).unwrap();
        i.check(&subscribe(&["#"])).unwrap();
        i.check(&publish("anything", true)).unwrap();
        let mut big = vec![0x30, 0xFF, 0xFF, 0xFF, 0x7F];
        big.extend([0; 8]);
        let mut a = acl();
        a.check(&connect("gw-a", None)).unwrap();
        assert!(a.check(&big).is_err(), "a packet past the broker's limit");
        // A big allowed publish passes without being buffered.
        let mut body = field("vt/county/gw-a/up/telemetry");
        body.extend([0, 1]);
        body.extend(vec![7u8; 200_000]);
        let mut a = acl();
        a.check(&connect("gw-a", None)).unwrap();
        for chunk in packet(0x32, body).chunks(16 * 1024) {
            a.check(chunk).unwrap();
            assert!(a.pending.len() < 64, "buffered {}", a.pending.len());
        }
        a.check(&publish("vt/county/gw-a/up/ack", false)).unwrap();
        assert!(a.check(&publish("vt/county/gw-b/up/ack", false)).is_err(), "judged after the big one");
    }
}
